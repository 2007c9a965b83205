//! Durations as people write them: `"250ms"`, `"10s"`, `"5m"`, `"2h"`, `"7d"`, `"1w"`.
//!
//! [`parse_duration`] reads one number with one unit (a decimal fraction such as `"1.5s"` is
//! fine; jiff does the arithmetic); [`format_duration`] writes the most compact exact form back. In configuration files a
//! plain integer means seconds: [`HumanDuration`] and [`deserialize_duration`] accept both.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MINUTE: u128 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MINUTE;
const NANOS_PER_DAY: u128 = 24 * NANOS_PER_HOUR;

/// The units roll reads and writes.
const UNITS: [&str; 6] = ["ms", "s", "m", "h", "d", "w"];

/// Parses a duration written as a number and a unit: `ms`, `s`, `m`, `h`, `d` or `w` (a day is
/// 24 hours). The arithmetic is jiff's (`SignedDuration`); this function keeps roll's one
/// grammar and its messages.
///
/// The number may have a decimal fraction (`"1.5s"`, `"0.5h"`). A number without a unit is
/// refused, because `"10"` could mean anything; in TOML write an integer (seconds) instead.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(roll::units::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(roll::units::parse_duration("1w"), Ok(Duration::from_secs(7 * 86_400)));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration: write e.g. \"10s\"".to_string());
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: expected a number followed by a unit, e.g. \"10s\""
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "duration {s:?} has no unit: add one of ms, s, m, h, d, w (e.g. \"{number}s\")"
        ));
    }
    if !UNITS.contains(&unit) {
        return Err(format!(
            "invalid duration {s:?}: unknown unit {unit:?}, expected one of ms, s, m, h, d, w"
        ));
    }
    let too_large =
        || format!("invalid duration {s:?}: {number:?} is not a number or is too large");
    if number.matches('.').count() > 1 || number == "." {
        return Err(too_large());
    }
    // `.5` and `1.` as jiff writes them; days and weeks counted in hours (24 and 168), which
    // takes a fraction of them too.
    let whole = format!(
        "{}{}",
        if number.starts_with('.') { "0" } else { "" },
        number.trim_end_matches('.')
    );
    let (unit, times) = match unit {
        "d" => ("h", 24),
        "w" => ("h", 168),
        other => (other, 1),
    };
    format!("{whole}{unit}")
        .parse::<jiff::SignedDuration>()
        .ok()
        .and_then(|d| d.checked_mul(times))
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(too_large)
}

/// Formats a duration compactly and exactly: `"7d"`, `"90m"`, `"10s"`, `"1.5s"`, `"250ms"`.
///
/// Whole days, hours, minutes or seconds use that unit; other durations of a second or more are
/// written in seconds with a fraction, shorter ones in milliseconds when exact. The result
/// always reads back with [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    for (unit, size) in [
        ("d", NANOS_PER_DAY),
        ("h", NANOS_PER_HOUR),
        ("m", NANOS_PER_MINUTE),
        ("s", NANOS_PER_SECOND),
    ] {
        if nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    if nanos < NANOS_PER_SECOND && nanos.is_multiple_of(NANOS_PER_MILLI) {
        return format!("{}ms", nanos / NANOS_PER_MILLI);
    }
    let fraction = format!("{:09}", nanos % NANOS_PER_SECOND);
    format!(
        "{}.{}s",
        nanos / NANOS_PER_SECOND,
        fraction.trim_end_matches('0')
    )
}

/// A [`Duration`] that reads from TOML as an integer number of seconds or a string with a unit
/// (see [`parse_duration`]) and writes as the string of [`format_duration`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl From<HumanDuration> for Duration {
    fn from(value: HumanDuration) -> Self {
        value.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(value: Duration) -> Self {
        HumanDuration(value)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(DurationVisitor)
            .map(HumanDuration)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_duration(&self.0, serializer)
    }
}

/// Serde helper (`#[serde(deserialize_with = "...")]`): a duration as integer seconds or a string
/// with a unit.
pub fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Serde helper (`#[serde(serialize_with = "...")]`): a duration as the string of
/// [`format_duration`].
pub fn serialize_duration<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*d))
}

/// Reads integer seconds or a string with a unit.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: integer seconds or a string such as \"10s\" or \"5m\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// For `#[serde(with = "crate::units::duration")]`: a duration written as a string, read
/// from a string or a number of seconds.
pub mod duration {
    pub use super::{deserialize_duration as deserialize, serialize_duration as serialize};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(secs(10)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("2h"), Ok(secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(secs(7 * 86_400)));
        assert_eq!(parse_duration("1w"), Ok(secs(7 * 86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(secs(0)));
    }

    #[test]
    fn parses_fractions() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.5h"), Ok(secs(1800)));
        assert_eq!(parse_duration(".25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.s"), Ok(secs(1)));
        assert_eq!(parse_duration("1.5d"), Ok(secs(36 * 3600)));
        assert_eq!(parse_duration("0.5w"), Ok(secs(84 * 3600)));
    }

    #[test]
    fn refuses_bad_durations() {
        for bad in [
            "", "10", "s", "10x", "1.2.3s", "-5s", "10 s", "5sec", "1e3s", ".s", "10S",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        let err = parse_duration("10").unwrap_err();
        assert!(err.contains("no unit"), "{err}");
        let err = parse_duration("10x").unwrap_err();
        assert!(err.contains("unknown unit \"x\""), "{err}");
        assert!(parse_duration("99999999999999999999999999w").is_err());
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(secs(0)), "0s");
        assert_eq!(format_duration(secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(secs(7200)), "2h");
        assert_eq!(format_duration(secs(5400)), "90m");
        assert_eq!(format_duration(secs(10)), "10s");
        assert_eq!(format_duration(secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_micros(1500)), "0.0015s");
        assert_eq!(format_duration(Duration::from_nanos(1)), "0.000000001s");
    }

    #[test]
    fn format_reads_back() {
        for d in [
            secs(1),
            secs(61),
            secs(86_401),
            Duration::from_millis(1),
            Duration::from_millis(10_001),
            Duration::from_nanos(123_456_789),
            Duration::from_nanos(3_000_000_007),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
    }

    #[derive(Deserialize, Serialize)]
    struct Config {
        timeout: HumanDuration,
        #[serde(
            deserialize_with = "deserialize_duration",
            serialize_with = "serialize_duration"
        )]
        plain: Duration,
    }

    #[test]
    fn serde_accepts_integer_seconds_and_strings() -> Result<(), toml::de::Error> {
        let config: Config = toml::from_str("timeout = 30\nplain = \"2m\"")?;
        assert_eq!(config.timeout, HumanDuration(secs(30)));
        assert_eq!(config.plain, secs(120));
        let json = serde_json::to_string(&config)
            .map_err(|e| <toml::de::Error as serde::de::Error>::custom(e.to_string()))?;
        assert_eq!(json, r#"{"timeout":"30s","plain":"2m"}"#);
        Ok(())
    }

    #[test]
    fn serde_refuses_negative_and_unitless_strings() {
        let err = toml::from_str::<Config>("timeout = -1\nplain = 1").err();
        assert!(err.is_some_and(|e| e.message().contains("must not be negative")));
        let err = toml::from_str::<Config>("timeout = \"30\"\nplain = 1").err();
        assert!(err.is_some_and(|e| e.message().contains("no unit")));
        let err = toml::from_str::<Config>("timeout = 1.5\nplain = 1").err();
        assert!(err.is_some_and(|e| e.message().contains("integer seconds")));
    }
}
