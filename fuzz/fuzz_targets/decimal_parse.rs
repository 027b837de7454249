//! Any text at any exponent: parsing never panics, and what parses formats back to a
//! string that parses to the same mantissa.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_protocol::decimal::{Decimal, parse_i128};

fuzz_target!(|input: (&str, i8)| {
    let (text, exponent) = input;
    if let Ok(mantissa) = parse_i128(text, exponent) {
        let formatted = Decimal::new(mantissa, exponent).to_string();
        assert_eq!(
            parse_i128(&formatted, exponent),
            Ok(mantissa),
            "{text:?} -> {formatted}"
        );
    }
});
