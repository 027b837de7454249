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
        // u64 arithmetic when the mantissa fits: an i128 division is a library call
        if let Ok(mut small) = i64::try_from(self.mantissa) {
            while self.exponent < exponent && small % 10 == 0 {
                small /= 10;
                self.exponent += 1;
            }
            self.mantissa = i128::from(small);
            return self;
        }
        while self.exponent < exponent && self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.exponent += 1;
        }
        self
    }

    /// The exact text, without allocating: what `Display` prints, as bytes on the stack.
    ///
    /// ```
    /// use mdi_protocol::decimal::Decimal;
    /// assert_eq!(Decimal::new(-5i64, -3).text().as_str(), "-0.005");
    /// ```
    pub fn text(&self) -> DecimalText {
        let mut out = DecimalText {
            buf: [0; DecimalText::CAPACITY],
            len: 0,
        };
        let magnitude = self.mantissa.unsigned_abs();
        let mut digits = [0u8; 40];
        let start = write_digits(magnitude, &mut digits);
        let digits = &digits[start..];
        if self.mantissa < 0 {
            out.push(b"-");
        }
        if self.exponent >= 0 {
            out.push(digits);
            if magnitude != 0 {
                for _ in 0..self.exponent {
                    out.push(b"0");
                }
            }
            return out;
        }
        let decimals = usize::from(self.exponent.unsigned_abs());
        if digits.len() > decimals {
            let (int, frac) = digits.split_at(digits.len() - decimals);
            out.push(int);
            out.push(b".");
            out.push(frac);
        } else {
            out.push(b"0.");
            for _ in digits.len()..decimals {
                out.push(b"0");
            }
            out.push(digits);
        }
        out
    }

    /// The nearest `f64` (for analytics; the decimal itself is exact).
    ///
    /// ```
    /// use mdi_protocol::decimal::Decimal;
    /// assert_eq!(Decimal::new(2_712_345i64, -2).to_f64(), 27123.45);
    /// ```
    pub fn to_f64(&self) -> f64 {
        // one rounding of the mantissa, one of the scaling: a power of ten up to 10^22 is
        // exact in f64, so dividing by it rounds once
        #[allow(clippy::cast_precision_loss)]
        let m = self.mantissa as f64;
        let scale = 10f64.powi(i32::from(self.exponent.unsigned_abs()));
        if self.exponent < 0 {
            m / scale
        } else {
            m * scale
        }
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
        f.write_str(self.text().as_str())
    }
}

/// A formatted [`Decimal`] on the stack (see [`Decimal::text`]).
#[derive(Clone, Copy)]
pub struct DecimalText {
    buf: [u8; Self::CAPACITY],
    len: usize,
}

impl DecimalText {
    /// Any exponent an `i8` holds (records from elsewhere are not trusted to keep to
    /// ±18): sign, 39 digits of an `i128` and 127 zeros after them; or sign, `0.` and 128
    /// decimals.
    const CAPACITY: usize = 1 + 39 + 127;

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, '-' and '.' are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Debug for DecimalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Writes `value`'s decimal digits at the end of `buf`; returns where they start. Uses
/// u64 arithmetic for the part that fits (an i128 division is a library call).
fn write_digits(value: u128, buf: &mut [u8; 40]) -> usize {
    const TEN_19: u128 = 10_000_000_000_000_000_000;
    let mut start = buf.len();
    // the low 19 digits (zero-padded) while more follow; u64 arithmetic within a chunk
    let mut rest = value;
    while rest >= TEN_19 {
        // rest % 10^19 < 2^64
        #[allow(clippy::cast_possible_truncation)]
        push_u64(buf, &mut start, (rest % TEN_19) as u64, 19);
        rest /= TEN_19;
    }
    // rest < 10^19 < 2^64
    #[allow(clippy::cast_possible_truncation)]
    push_u64(buf, &mut start, rest as u64, 1);
    start
}

/// Writes `v`'s digits (at least `min_digits`, zero-padded) before `start`.
fn push_u64(buf: &mut [u8; 40], start: &mut usize, mut v: u64, min_digits: usize) {
    let mut written = 0;
    loop {
        *start -= 1;
        // v % 10 < 10 always fits a u8.
        #[allow(clippy::cast_possible_truncation)]
        {
            buf[*start] = b'0' + (v % 10) as u8;
        }
        v /= 10;
        written += 1;
        if v == 0 && written >= min_digits {
            break;
        }
    }
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
        fn text_matches_a_reference_format(mantissa: i128, exponent: i8) {
            let text = Decimal::new(mantissa, exponent).to_string();
            let digits = mantissa.unsigned_abs().to_string();
            let sign = if mantissa < 0 { "-" } else { "" };
            let reference = if exponent >= 0 {
                let zeros = if mantissa == 0 { 0 } else { exponent as usize };
                format!("{sign}{digits}{}", "0".repeat(zeros))
            } else {
                let decimals = usize::from(exponent.unsigned_abs());
                let padded = format!("{digits:0>width$}", width = decimals + 1);
                let (int, frac) = padded.split_at(padded.len() - decimals);
                format!("{sign}{int}.{frac}")
            };
            prop_assert_eq!(text, reference);
        }

        #[test]
        fn trimming_keeps_the_value(mantissa: i128, exponent in -18i8..=0, to in -18i8..=0) {
            let trimmed = Decimal::new(mantissa, exponent).trimmed_to(to);
            prop_assert!(trimmed.exponent >= exponent);
            let scale = 10i128.pow(u32::from((trimmed.exponent - exponent).unsigned_abs()));
            prop_assert_eq!(trimmed.mantissa.checked_mul(scale), Some(mantissa));
            prop_assert!(trimmed.exponent <= to.max(exponent));
            if trimmed.exponent < to {
                prop_assert!(trimmed.mantissa % 10 != 0);
            }
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
