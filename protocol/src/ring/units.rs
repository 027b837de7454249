//! The ring's two numbers, as types: where a record is ([`Position`]) and which it is
//! ([`Seq`]). Both are `u64` that never wrap and never go back for the life of a ring
//! file (also across writer restarts); a position is a byte offset into the stream (it
//! lives at data offset `position mod capacity`), a sequence number counts records, one
//! each, dense. Types keep the two from being swapped at an API boundary.

use std::fmt;

/// A byte position in a ring's stream (8-byte aligned at record boundaries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

/// A record's sequence number in its stream: the first record is 0, each next one + 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl Position {
    /// The byte offset.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl Seq {
    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The sequence number after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// How many sequence numbers from `self` up to (not including) `end`; 0 if `end` is
    /// not after `self`.
    pub const fn count_to(self, end: Self) -> u64 {
        end.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Seq {
    fn from(n: u64) -> Self {
        Self(n)
    }
}

impl From<u64> for Position {
    fn from(n: u64) -> Self {
        Self(n)
    }
}

/// `n` records later.
impl std::ops::Add<u64> for Seq {
    type Output = Self;
    fn add(self, n: u64) -> Self {
        Self(self.0 + n)
    }
}

/// How many records from `earlier` to `self` (`self` must not be before it).
impl std::ops::Sub for Seq {
    type Output = u64;
    fn sub(self, earlier: Self) -> u64 {
        self.0 - earlier.0
    }
}

/// `n` bytes further.
impl std::ops::Add<u64> for Position {
    type Output = Self;
    fn add(self, n: u64) -> Self {
        Self(self.0 + n)
    }
}

/// Bytes from `earlier` to `self` (`self` must not be before it).
impl std::ops::Sub for Position {
    type Output = u64;
    fn sub(self, earlier: Self) -> u64 {
        self.0 - earlier.0
    }
}

macro_rules! compare_with_u64 {
    ($t:ty) => {
        impl PartialEq<u64> for $t {
            fn eq(&self, n: &u64) -> bool {
                self.0 == *n
            }
        }
        impl PartialOrd<u64> for $t {
            fn partial_cmp(&self, n: &u64) -> Option<std::cmp::Ordering> {
                Some(self.0.cmp(n))
            }
        }
        impl std::str::FromStr for $t {
            type Err = std::num::ParseIntError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map(Self)
            }
        }
    };
}
compare_with_u64!(Seq);
compare_with_u64!(Position);
