//! Wall-clock time for journals and run ids: RFC 3339 in UTC, without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch.
pub fn rfc3339(millis: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(millis / 1000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        millis % 1000
    )
}

/// `YYYYMMDDTHHMMSSZ`, for names.
pub fn compact(millis: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(millis / 1000);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Milliseconds since the epoch of an RFC 3339 time: `2026-12-02T10:00:00Z`, with an optional
/// fraction of a second (milliseconds kept) and `Z` or an offset (`+02:00`); `t`, `z` and a
/// space between date and time are accepted as RFC 3339 allows. Times before 1970 are refused.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("{text:?} is not an RFC 3339 time ({why}): write e.g. 2026-12-02T18:00:00Z")
    };
    let t = text.trim();
    let number = |from: usize, len: usize| -> Result<i64, String> {
        let part = t.get(from..from + len).ok_or_else(|| bad("too short"))?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("a field is not a number"));
        }
        part.parse::<i64>()
            .map_err(|_| bad("a field is not a number"))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    let bytes = t.as_bytes();
    if bytes.len() < 19 {
        return Err(bad("too short"));
    }
    if separators.iter().any(|(at, c)| bytes[*at] != *c) || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (y, mo, d) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (h, mi, s) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad("no such month")),
    };
    if d < 1 || d > days_in_month || h > 23 || mi > 59 || s > 60 {
        return Err(bad("a field is out of range"));
    }
    let mut rest = &t[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("no digits after the decimal point"));
        }
        let kept: String = fraction[..digits.min(3)].to_string();
        millis = format!("{kept:0<3}")
            .parse::<i64>()
            .map_err(|_| bad("a bad fraction"))?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let field = |range: std::ops::Range<usize>| {
                rest.get(range)
                    .filter(|f| f.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|f| f.parse::<i64>().ok())
                    .ok_or_else(|| bad("a bad offset"))
            };
            let (hours, minutes) = (field(1..3)?, field(4..6)?);
            if hours > 23 || minutes > 59 {
                return Err(bad("a bad offset"));
            }
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (hours * 60 + minutes)
        }
        "" => {
            return Err(bad(
                "no time zone: end it with Z or an offset such as +02:00",
            ));
        }
        _ => return Err(bad("a bad time zone")),
    };
    let days = days_from_civil(y, mo, d);
    let seconds = days * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset_minutes * 60;
    if seconds < 0 {
        return Err(bad("before 1970"));
    }
    Ok((seconds * 1000 + millis) as u64)
}

/// Days since 1970-01-01 of a date (proleptic Gregorian; Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day, hour, minute, second of a Unix time (proleptic Gregorian, UTC).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_291_200_000), "2026-11-21T20:00:00.000Z");
        assert_eq!(compact(1_795_291_200_000), "20261121T200000Z");
    }

    #[test]
    fn rfc3339_is_read_back() {
        for millis in [0, 951_782_400_123, 1_795_291_200_000, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&rfc3339(millis)), Ok(millis));
        }
        assert_eq!(
            parse_rfc3339("2026-11-21T22:00:00+02:00"),
            Ok(1_795_291_200_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-21 19:30:00.5-00:30"),
            Ok(1_795_291_200_500)
        );
        assert_eq!(parse_rfc3339("2026-11-21t20:00:00z"), Ok(1_795_291_200_000));
    }

    #[test]
    fn a_bad_time_is_refused_saying_why() {
        for (text, why) in [
            ("2026-11-21", "too short"),
            ("2026-11-21T20:00:00", "no time zone"),
            ("2026-13-01T00:00:00Z", "no such month"),
            ("2026-02-29T00:00:00Z", "out of range"),
            ("2026-11-21T24:00:00Z", "out of range"),
            ("2026/11/21T20:00:00Z", "expected YYYY-MM-DD"),
            ("2026-11-21T20:00:00+2:00", "bad time zone"),
            ("1969-12-31T23:59:59Z", "before 1970"),
            ("tomorrow at noon please", "expected YYYY-MM-DD"),
            ("2026-11-21T20:00:00+ab:00", "bad offset"),
        ] {
            let err = parse_rfc3339(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
