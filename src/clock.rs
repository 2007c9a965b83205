//! Wall-clock time for journals and run ids: RFC 3339 in UTC (jiff underneath).

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

/// The instant of `millis` since the epoch (the epoch itself for one jiff cannot hold).
fn timestamp(millis: u64) -> jiff::Timestamp {
    i64::try_from(millis)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch.
pub fn rfc3339(millis: u64) -> String {
    timestamp(millis)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `YYYYMMDDTHHMMSSZ`, for names.
pub fn compact(millis: u64) -> String {
    timestamp(millis).strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Milliseconds since the epoch of an RFC 3339 time: `2026-12-02T10:00:00Z`, with an optional
/// fraction of a second (milliseconds kept) and `Z` or an offset (`+02:00`); `t`, `z` and a
/// space between date and time are accepted as RFC 3339 allows. Times before 1970 are refused.
/// jiff reads it.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("{text:?} is not an RFC 3339 time ({why}): write e.g. 2026-12-02T18:00:00Z")
    };
    let at = text
        .trim()
        .parse::<jiff::Timestamp>()
        .map_err(|e| bad(&e.to_string()))?;
    u64::try_from(at.as_millisecond()).map_err(|_| bad("before 1970"))
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
            ("2026-11-21", "time component"),
            ("2026-11-21T20:00:00", "offset"),
            ("2026-13-01T00:00:00Z", "month"),
            ("2026-02-29T00:00:00Z", "day"),
            ("2026-11-21T24:00:00Z", "hour"),
            ("2026/11/21T20:00:00Z", "2026-12-02T18:00:00Z"),
            ("2026-11-21T20:00:00+2:00", "offset"),
            ("1969-12-31T23:59:59Z", "before 1970"),
            ("tomorrow at noon please", "not an RFC 3339 time"),
            ("2026-11-21T20:00:00+ab:00", "offset"),
        ] {
            let err = parse_rfc3339(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(
                err.starts_with(&format!("{text:?} is not an RFC 3339 time (")),
                "{err}"
            );
        }
    }
}
