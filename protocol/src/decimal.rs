//! Exact fixed-point decimals: an integer mantissa and a per-instrument base-10 exponent.
//!
//! `value = mantissa × 10^exponent`. Venues send decimal strings (`"27123.45000000"`);
//! mdi stores mantissas at the instrument's exponent (for Binance usually the tick size's,
//! e.g. `-2` for prices and `-8` for quantities). Parsing is exact: a string that has
//! non-zero digits finer than the exponent, or a value that does not fit the mantissa
//! type, is an error — never rounded. Formatting prints exactly `-exponent` decimals, so
//! `parse → format` reproduces Binance's 8-decimal strings byte for byte.

use std::fmt;

/// The smallest exponent mdi accepts (`10^-18`).
pub const MIN_EXPONENT: i8 = -18;
/// The largest exponent mdi accepts (`10^18`).
pub const MAX_EXPONENT: i8 = 18;

/// Why a decimal string could not become a mantissa.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// The text is empty or has only a sign.
    #[error("empty decimal")]
    Empty,
    /// A character other than an optional leading sign, digits and one '.'.
    #[error("invalid character {found:?} at byte {at} in decimal")]
    InvalidCharacter {
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// The value has non-zero digits below the exponent's resolution.
    #[error("decimal has more precision than 10^{exponent} allows; refusing to round")]
    TooPrecise {
        /// The exponent the value was parsed at.
        exponent: i8,
    },
    /// The mantissa does not fit the target integer type.
    #[error("decimal does not fit a {bits}-bit mantissa at exponent {exponent}")]
    Overflow {
        /// The exponent the value was parsed at.
        exponent: i8,
        /// Width of the mantissa type.
        bits: u32,
    },
    /// The exponent is outside `MIN_EXPONENT..=MAX_EXPONENT`.
    #[error("exponent {0} is outside -18..=18")]
    BadExponent(i8),
}

/// Parses a decimal string (`-?[0-9]*(\.[0-9]*)?`, at least one digit) to an `i64`
/// mantissa at `exponent`. Exact: see [`DecimalError`].
///
/// ```
/// use mdi_protocol::decimal::parse_i64;
/// assert_eq!(parse_i64("27123.45000000", -2), Ok(2_712_345));
/// assert_eq!(parse_i64("0.00100000", -8), Ok(100_000));
/// assert!(parse_i64("0.001", -2).is_err()); // would have to round
/// ```
pub fn parse_i64(text: &str, exponent: i8) -> Result<i64, DecimalError> {
    if let Some(value) = parse_i64_fast(text.as_bytes(), exponent) {
        return Ok(value);
    }
    let wide = parse_i128(text, exponent)?;
    i64::try_from(wide).map_err(|_| DecimalError::Overflow { exponent, bits: 64 })
}

/// The common case of [`parse_i64`] without 128-bit arithmetic: unsigned, exponent ≤ 0,
/// at most 18 digits in the mantissa (so no overflow check is needed). `None` sends
/// everything else — signs, errors, big numbers — to the general parser, which then
/// decides (and explains) exactly.
#[inline]
fn parse_i64_fast(bytes: &[u8], exponent: i8) -> Option<i64> {
    if !(MIN_EXPONENT..=0).contains(&exponent) {
        return None;
    }
    let keep = u32::from(exponent.unsigned_abs());
    let mut acc: u64 = 0;
    let mut digits = 0u32;
    let mut fraction: Option<u32> = None;
    for &byte in bytes {
        match byte {
            b'0'..=b'9' => {
                if let Some(kept) = fraction {
                    if kept == keep {
                        if byte != b'0' {
                            return None;
                        }
                        continue;
                    }
                    fraction = Some(kept + 1);
                }
                acc = acc * 10 + u64::from(byte - b'0');
                digits += 1;
                if digits > 18 {
                    return None;
                }
            }
            b'.' if fraction.is_none() => fraction = Some(0),
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    for _ in fraction.unwrap_or(0)..keep {
        acc *= 10;
        digits += 1;
        if digits > 18 {
            return None;
        }
    }
    i64::try_from(acc).ok()
}

/// Parses a decimal string to an `i128` mantissa at `exponent` (see [`parse_i64`]).
pub fn parse_i128(text: &str, exponent: i8) -> Result<i128, DecimalError> {
    if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
        return Err(DecimalError::BadExponent(exponent));
    }
    let bytes = text.as_bytes();
    let (negative, digits_start) = match bytes.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let overflow = DecimalError::Overflow {
        exponent,
        bits: 128,
    };
    // Accumulate as a negative number so that i128::MIN parses too.
    let mut acc: i128 = 0;
    let mut seen_digit = false;
    let mut seen_point = false;
    // Decimal digits kept after the point; digits beyond `keep` must be zero.
    let keep = (-i32::from(exponent)).max(0);
    let mut kept_fraction = 0i32;
    // With a positive exponent the lowest `exponent` integer digits must be zero.
    let drop_integer = i32::from(exponent).max(0);
    let mut integer_digits: Vec<u8> = Vec::new();
    for (at, &byte) in bytes.iter().enumerate().skip(digits_start) {
        match byte {
            b'0'..=b'9' => {
                seen_digit = true;
                let digit = i128::from(byte - b'0');
                if seen_point {
                    if kept_fraction < keep {
                        acc = acc
                            .checked_mul(10)
                            .and_then(|v| v.checked_sub(digit))
                            .ok_or(overflow.clone())?;
                        kept_fraction += 1;
                    } else if digit != 0 {
                        return Err(DecimalError::TooPrecise { exponent });
                    }
                } else if drop_integer > 0 {
                    integer_digits.push(byte - b'0');
                } else {
                    acc = acc
                        .checked_mul(10)
                        .and_then(|v| v.checked_sub(digit))
                        .ok_or(overflow.clone())?;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => {
                return Err(DecimalError::InvalidCharacter {
                    found: text[at..].chars().next().unwrap_or('?'),
                    at,
                });
            }
        }
    }
    if !seen_digit {
        return Err(DecimalError::Empty);
    }
    if drop_integer > 0 {
        let drop = usize::try_from(drop_integer).unwrap_or(usize::MAX);
        let split = integer_digits.len().saturating_sub(drop);
        if integer_digits[split..].iter().any(|&d| d != 0) {
            return Err(DecimalError::TooPrecise { exponent });
        }
        for &digit in &integer_digits[..split] {
            acc = acc
                .checked_mul(10)
                .and_then(|v| v.checked_sub(i128::from(digit)))
                .ok_or(overflow.clone())?;
        }
    } else {
        // Pad the fraction out to the exponent: "1.5" at -8 is 150000000.
        for _ in kept_fraction..keep {
            acc = acc.checked_mul(10).ok_or(overflow.clone())?;
        }
    }
    if negative {
        Ok(acc)
    } else {
        acc.checked_neg().ok_or(overflow)
    }
}

/// Formats a mantissa at `exponent` exactly, with `max(0, -exponent)` decimals.
///
/// ```
/// use mdi_protocol::decimal::Decimal;
/// assert_eq!(Decimal::new(100_000, -8).to_string(), "0.00100000");
/// assert_eq!(Decimal::new(-2_712_345, -2).to_string(), "-27123.45");
/// assert_eq!(Decimal::new(12, 3).to_string(), "12000");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// The integer mantissa.
    pub mantissa: i128,
    /// The base-10 exponent.
    pub exponent: i8,
}

impl Decimal {
    /// A decimal `mantissa × 10^exponent`.
    pub fn new(mantissa: impl Into<i128>, exponent: i8) -> Self {
        Self {
            mantissa: mantissa.into(),
            exponent,
        }
    }

    /// The same value with trailing zero decimals dropped while the exponent is below
    /// `exponent`: exact, never rounds. A quote volume (exponent price + qty) reads as
    /// the venue writes it: `Decimal::new(63_661_825_100_000_000_000i128, -16)
    /// .trimmed_to(-8)` is `6366.18251000`, and no digit that is not zero is dropped.
    ///
    /// ```
    /// use mdi_protocol::decimal::Decimal;
    /// assert_eq!(Decimal::new(63_661_825_100_000_000_000i128, -16).trimmed_to(-8).to_string(), "6366.18251000");
    /// assert_eq!(Decimal::new(123_456_789i128, -16).trimmed_to(-8).to_string(), "0.0000000123456789");
    /// assert_eq!(Decimal::new(0, -16).trimmed_to(-8).to_string(), "0.00000000");
    /// ```
    #[must_use]
    pub fn trimmed_to(mut self, exponent: i8) -> Self {
        while self.exponent < exponent && self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.exponent += 1;
        }
        self
    }

    /// Joins the `hi`/`lo` halves in which the records carry 128-bit sums.
    pub fn from_parts(hi: i64, lo: u64, exponent: i8) -> Self {
        Self::new(join_i128(hi, lo), exponent)
    }
}

/// Splits an `i128` into the (signed high, unsigned low) halves records store.
pub fn split_i128(value: i128) -> (i64, u64) {
    // Truncation is the point: the halves are reassembled by `join_i128`.
    #[allow(clippy::cast_possible_truncation)]
    ((value >> 64) as i64, value as u64)
}

/// Reassembles an `i128` from its (signed high, unsigned low) halves.
pub fn join_i128(hi: i64, lo: u64) -> i128 {
    (i128::from(hi) << 64) | i128::from(lo)
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = itoa_u128(self.mantissa.unsigned_abs());
        if self.mantissa < 0 {
            f.write_str("-")?;
        }
        if self.exponent >= 0 {
            f.write_str(digits.as_str())?;
            if self.mantissa != 0 {
                for _ in 0..self.exponent {
                    f.write_str("0")?;
                }
            }
            return Ok(());
        }
        let decimals = usize::from(self.exponent.unsigned_abs());
        let text = digits.as_str();
        if text.len() > decimals {
            let (int, frac) = text.split_at(text.len() - decimals);
            f.write_str(int)?;
            f.write_str(".")?;
            f.write_str(frac)
        } else {
            f.write_str("0.")?;
            for _ in text.len()..decimals {
                f.write_str("0")?;
            }
            digits.write_to(f)
        }
    }
}

/// Digits of a u128 without allocation.
struct Digits {
    buf: [u8; 40],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        // Only ASCII digits are ever written into `buf[start..]`.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("")
    }

    fn write_to(&mut self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn itoa_u128(mut value: u128) -> Digits {
    let mut buf = [0u8; 40];
    let mut start = buf.len();
    loop {
        start -= 1;
        // value % 10 < 10 always fits a u8.
        #[allow(clippy::cast_possible_truncation)]
        {
            buf[start] = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 {
            break;
        }
    }
    Digits { buf, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_binance_strings() {
        assert_eq!(parse_i64("27123.45000000", -2), Ok(2_712_345));
        assert_eq!(parse_i64("0.00010000", -8), Ok(10_000));
        assert_eq!(parse_i64("-1.5", -1), Ok(-15));
        assert_eq!(parse_i64("1.5", -8), Ok(150_000_000));
        assert_eq!(parse_i64("7", 0), Ok(7));
        assert_eq!(parse_i64(".5", -1), Ok(5));
        assert_eq!(parse_i64("5.", 0), Ok(5));
        assert_eq!(parse_i64("1200", 2), Ok(12));
    }

    #[test]
    fn refuses_to_round_or_overflow() {
        assert_eq!(
            parse_i64("0.001", -2),
            Err(DecimalError::TooPrecise { exponent: -2 })
        );
        assert_eq!(
            parse_i64("1250", 2),
            Err(DecimalError::TooPrecise { exponent: 2 })
        );
        assert_eq!(
            parse_i64("92233720368.54775808", -8),
            Err(DecimalError::Overflow {
                exponent: -8,
                bits: 64
            })
        );
        assert_eq!(parse_i64("92233720368.54775807", -8), Ok(i64::MAX));
        assert_eq!(parse_i64("-92233720368.54775808", -8), Ok(i64::MIN));
        assert!(matches!(
            parse_i64("1e5", 0),
            Err(DecimalError::InvalidCharacter { found: 'e', at: 1 })
        ));
        assert_eq!(parse_i64("", -2), Err(DecimalError::Empty));
        assert_eq!(parse_i64("-", -2), Err(DecimalError::Empty));
        assert_eq!(parse_i64(".", -2), Err(DecimalError::Empty));
        assert!(parse_i64("1.2.3", -2).is_err());
        assert_eq!(parse_i64("1", 19), Err(DecimalError::BadExponent(19)));
        assert!(parse_i128("1".repeat(40).as_str(), 0).is_err());
    }

    #[test]
    fn formats_exactly() {
        assert_eq!(Decimal::new(10_000i64, -8).to_string(), "0.00010000");
        assert_eq!(Decimal::new(0i64, -2).to_string(), "0.00");
        assert_eq!(Decimal::new(-5i64, -3).to_string(), "-0.005");
        assert_eq!(Decimal::new(0i64, 2).to_string(), "0");
        assert_eq!(
            Decimal::new(i128::MIN, -2).to_string(),
            "-1701411834604692317316873037158841057.28"
        );
        assert_eq!(
            Decimal::from_parts(1, 0, 0).to_string(),
            "18446744073709551616"
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_roundtrips(mantissa: i64, exponent in -18i8..=18) {
            let text = Decimal::new(mantissa, exponent).to_string();
            prop_assert_eq!(parse_i64(&text, exponent), Ok(mantissa));
        }

        #[test]
        fn i128_roundtrips(mantissa: i128, exponent in -18i8..=0) {
            let text = Decimal::new(mantissa, exponent).to_string();
            prop_assert_eq!(parse_i128(&text, exponent), Ok(mantissa));
            let (hi, lo) = split_i128(mantissa);
            prop_assert_eq!(join_i128(hi, lo), mantissa);
        }

        #[test]
        fn trailing_zeros_do_not_change_the_value(mantissa: i32, extra in 0usize..12) {
            let text = format!("{}{}", Decimal::new(mantissa, -4), "0".repeat(extra));
            prop_assert_eq!(parse_i64(&text, -4), Ok(i64::from(mantissa)));
        }

        #[test]
        fn finer_digits_are_refused(mantissa: i64, exponent in -17i8..=-1, digit in 1u8..=9) {
            // One more non-zero decimal than the exponent resolves.
            let text = format!("{}{digit}", Decimal::new(mantissa, exponent));
            prop_assert_eq!(parse_i64(&text, exponent), Err(DecimalError::TooPrecise { exponent }));
        }

        #[test]
        fn the_fast_path_agrees_with_the_general_parser(
            text in "[0-9]{0,12}(\\.[0-9]{0,14})?|[-+.0-9]{0,24}",
            exponent in -18i8..=2,
        ) {
            let general = parse_i128(&text, exponent).and_then(|v| {
                i64::try_from(v).map_err(|_| DecimalError::Overflow { exponent, bits: 64 })
            });
            prop_assert_eq!(parse_i64(&text, exponent), general);
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,40}", exponent: i8) {
            let _ = parse_i128(&text, exponent);
        }
    }
}
