//! K-line intervals as Binance names them (`1s` … `1w`), with UTC-aligned buckets.

/// A K-line interval, named as Binance names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval {
    ms: u64,
}

/// Binance's interval names and lengths (months are not fixed-length and not offered).
const NAMED: [(&str, u64); 14] = [
    ("1s", 1_000),
    ("1m", 60_000),
    ("3m", 180_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("30m", 1_800_000),
    ("1h", 3_600_000),
    ("2h", 7_200_000),
    ("4h", 14_400_000),
    ("6h", 21_600_000),
    ("8h", 28_800_000),
    ("12h", 43_200_000),
    ("1d", 86_400_000),
    ("1w", 604_800_000),
];

/// An interval name that is not one of Binance's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown K-line interval {0:?} (expected one of 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 1w)"
)]
pub struct UnknownInterval(pub String);

impl Interval {
    /// mdi's default set: 1s, 1m, 5m, 15m, 1h, 1d.
    pub const DEFAULTS: [Interval; 6] = [
        Interval { ms: 1_000 },
        Interval { ms: 60_000 },
        Interval { ms: 300_000 },
        Interval { ms: 900_000 },
        Interval { ms: 3_600_000 },
        Interval { ms: 86_400_000 },
    ];

    /// The interval called `name` (`1s`, `1m`, … `1d`, `1w`).
    pub fn parse(name: &str) -> Result<Self, UnknownInterval> {
        NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, ms)| Self { ms })
            .ok_or_else(|| UnknownInterval(name.to_owned()))
    }

    /// The interval of `ms` milliseconds, if Binance has one that long.
    pub fn from_ms(ms: u64) -> Option<Self> {
        NAMED.iter().any(|&(_, m)| m == ms).then_some(Self { ms })
    }

    /// Length in milliseconds.
    pub fn ms(self) -> u64 {
        self.ms
    }

    /// Binance's name for it.
    pub fn name(self) -> &'static str {
        NAMED
            .iter()
            .find(|&&(_, m)| m == self.ms)
            .map_or("?", |&(n, _)| n)
    }

    /// Open time of the bucket holding `time_ms`. Weekly candles open on Mondays, as
    /// Binance's do (the Unix epoch was a Thursday).
    pub fn bucket(self, time_ms: i64) -> i64 {
        let len = self.ms as i64;
        let offset = if self.ms == 604_800_000 {
            // 1970-01-05 (a Monday) is 4 days after the epoch
            4 * 86_400_000
        } else {
            0
        };
        (time_ms - offset).div_euclid(len) * len + offset
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_have_binance_names_and_utc_buckets() {
        for name in ["1s", "1m", "5m", "15m", "1h", "1d", "1w"] {
            assert_eq!(Interval::parse(name).unwrap().name(), name);
        }
        assert!(Interval::parse("7m").is_err());
        let m = Interval::parse("1m").unwrap();
        assert_eq!(m.bucket(1_682_244_927_999), 1_682_244_900_000);
        assert_eq!(m.bucket(-1), -60_000);
        // 2023-04-24 was a Monday
        let w = Interval::parse("1w").unwrap();
        assert_eq!(
            w.bucket(1_682_380_800_000 + 3 * 86_400_000),
            1_682_294_400_000
        );
    }
}
