//! Times as people write them, to and from ns since the Unix epoch, on `jiff` (a
//! maintained date library: calendars and offsets are its business, not ours).
//!
//! Written: `2024-01-01T00:00:10.123456Z` (UTC, µs). Read: RFC 3339 with `Z` or an offset
//! (`2024-01-01T09:00:10+09:00`), a civil date-time taken as UTC (`2024-01-01T00:00:10`,
//! `2024-01-01 00:00:10.5`), a date (`2024-01-01`, its UTC midnight), or a Unix epoch
//! number with its unit (`1704067200s`, `1704067200000ms`, `…us`, `…ns`; `@1704067200`
//! is seconds, as GNU date writes it). Invalid dates (`2024-02-31`) and times are
//! refused, never rolled over; a bare number is refused (seconds or milliseconds?).

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// `2024-01-01T00:00:10.123456Z`: UTC, microseconds (the ns below them cut, rounding
/// towards the past, so a time prints in the second it is in).
pub fn utc_timestamp(ns: i64) -> String {
    let Ok(ts) = Timestamp::from_nanosecond(i128::from(ns)) else {
        // i64 ns (1677..2262) are always inside jiff's range
        return format!("{ns}ns");
    };
    let dt = TimeZone::UTC.to_datetime(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000
    )
}

/// Parses a time as the module doc says to ns since the Unix epoch; `None` for anything
/// else, an invalid date, or a time outside i64 ns (years 1677–2262).
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(ns) = parse_epoch(text) {
        return Some(ns);
    }
    let ts = if let Ok(ts) = text.parse::<Timestamp>() {
        ts
    } else if let Ok(dt) = text.parse::<DateTime>() {
        TimeZone::UTC.to_timestamp(dt).ok()?
    } else {
        let date = text.parse::<Date>().ok()?;
        TimeZone::UTC
            .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
            .ok()?
    };
    i64::try_from(ts.as_nanosecond()).ok()
}

/// An epoch number with its unit (`…s`, `…ms`, `…us`, `…ns`, or `@…` for seconds), in
/// ns; `None` if `text` is not one or does not fit i64 ns.
fn parse_epoch(text: &str) -> Option<i64> {
    let (digits, ns_per_unit) = if let Some(s) = text.strip_prefix('@') {
        (s, 1_000_000_000)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000_000)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000_000)
    } else {
        return None;
    };
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, digits),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    let ns = value.checked_mul(ns_per_unit)?;
    Some(if negative { -ns } else { ns })
}

/// Midnight UTC of the day `ns` falls in, in ns since the Unix epoch.
pub fn utc_midnight(ns: i64) -> i64 {
    ns - ns.rem_euclid(86_400_000_000_000)
}

/// `2024-01-01` (a date, nothing else) to its UTC midnight in ns.
pub fn parse_utc_date(text: &str) -> Option<i64> {
    let date = text.trim().parse::<Date>().ok()?;
    // "2024-01-01T00:00" parses as a Date too (its date part): only a bare date counts
    (text.trim().len() == 10).then_some(())?;
    let ts = TimeZone::UTC
        .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .ok()?;
    i64::try_from(ts.as_nanosecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_parse_back() {
        for ns in [
            0,
            1_682_244_927_999_000_123,
            951_782_400_000_000_000,
            1_767_225_600_500_000_000,
            -1_500,
        ] {
            let text = utc_timestamp(ns);
            // utc_timestamp keeps µs, cut towards the past
            assert_eq!(
                parse_utc(&text),
                Some(ns.div_euclid(1_000) * 1_000),
                "{text}"
            );
        }
        assert_eq!(parse_utc("2024-01-01"), Some(1_704_067_200_000_000_000));
        assert_eq!(
            parse_utc("2024-01-01T00:00:10"),
            Some(1_704_067_210_000_000_000)
        );
        assert_eq!(
            parse_utc("2024-01-01 00:00:10.5"),
            Some(1_704_067_210_500_000_000)
        );
        assert_eq!(
            parse_utc("2024-01-01T09:00:10+09:00"),
            Some(1_704_067_210_000_000_000)
        );
        assert_eq!(
            parse_utc("2024-01-01T00:00:10.000000001Z"),
            Some(1_704_067_210_000_000_001)
        );
    }

    #[test]
    fn epoch_numbers_with_their_unit() {
        let ns = 1_704_067_200_000_000_000;
        assert_eq!(parse_utc("1704067200s"), Some(ns));
        assert_eq!(parse_utc("@1704067200"), Some(ns));
        assert_eq!(parse_utc("1704067200000ms"), Some(ns));
        assert_eq!(parse_utc("1704067200000000us"), Some(ns));
        assert_eq!(parse_utc("1704067200000000123ns"), Some(ns + 123));
        assert_eq!(parse_utc("-1s"), Some(-1_000_000_000));
        for bad in [
            "1704067200",
            "12x s",
            "s",
            "@",
            "99999999999999999999s",
            "1e9s",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_times_are_refused_not_rolled_over() {
        for bad in [
            "yesterday",
            "2024-13-01",
            "2024-02-31",
            "2023-02-29",
            "2024-01-01T25:00:00",
            "2024-01-01T00:60:00",
            "2024-01-01T00:00:00.1234567890",
            "3000-01-01",
            "",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
        assert_eq!(parse_utc("2024-02-29"), Some(1_709_164_800_000_000_000));
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            utc_timestamp(1_682_244_927_999_000_123),
            "2023-04-23T10:15:27.999000Z"
        );
        assert_eq!(
            utc_timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn dates_are_bare_dates() {
        assert_eq!(
            parse_utc_date("2024-01-01"),
            Some(1_704_067_200_000_000_000)
        );
        assert_eq!(parse_utc_date("2024-01-01T00:00:00"), None);
        assert_eq!(parse_utc_date("2024-02-30"), None);
        let ns = 1_704_067_210_000_000_000;
        assert_eq!(utc_midnight(ns), 1_704_067_200_000_000_000);
        assert_eq!(utc_midnight(-1), -86_400_000_000_000);
    }
}
