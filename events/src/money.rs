//! Money: an integer number of minor units with its currency. No floats, checked arithmetic.

use crate::currency::Currency;
use crate::rejection::{Code, Rejection};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The largest magnitude of an amount, in minor units (10^30).
///
/// Far beyond any contract (10^28 dollars), and small enough that `amount * days` of a
/// ratable tranche fits in an i128 for any window that dates can express (< 4 * 10^6 days),
/// so revenue arithmetic cannot overflow on a stored amount.
pub const MAX_ABS_MINOR_UNITS: i128 = 1_000_000_000_000_000_000_000_000_000_000;

/// Longest decimal string accepted on the wire; longer input is refused before parsing.
const DECIMAL_LEN_MAX: usize = 64;

/// An amount of one currency, as a whole number of minor units (cents for USD).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    currency: Currency,
    minor_units: i128,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a decimal amount (digits, an optional '-' and '.')")]
    Syntax(String),
    #[error("`{text}` has more decimals than {currency} allows ({exponent})")]
    TooManyDecimals { text: String, currency: Currency, exponent: u8 },
    #[error("amount is beyond the largest supported magnitude (10^30 minor units)")]
    Overflow,
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
}

impl AmountError {
    /// The refusal for this error at JSON path `field`.
    pub fn rejection(&self, field: &str) -> Rejection {
        let code = match self {
            AmountError::Syntax(_) => Code::InvalidAmount,
            AmountError::TooManyDecimals { .. } => Code::TooManyDecimals,
            AmountError::Overflow => Code::AmountOverflow,
            AmountError::CurrencyMismatch(..) => Code::InvalidValue,
        };
        Rejection::new(code, Some(field.to_string()), self.to_string())
    }
}

impl Money {
    pub fn new(minor_units: i128, currency: Currency) -> Result<Money, AmountError> {
        if minor_units.unsigned_abs() > MAX_ABS_MINOR_UNITS as u128 {
            return Err(AmountError::Overflow);
        }
        Ok(Money { currency, minor_units })
    }

    pub fn zero(currency: Currency) -> Money {
        Money { currency, minor_units: 0 }
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn minor_units(&self) -> i128 {
        self.minor_units
    }

    pub fn is_positive(&self) -> bool {
        self.minor_units > 0
    }

    /// Parses a decimal string exactly: `"12.5"` in USD is 1250 minor units, `"12.345"` in
    /// USD is refused (too many decimals), `"1e3"` and `" 1"` are refused (syntax).
    pub fn parse(text: &str, currency: Currency) -> Result<Money, AmountError> {
        let syntax = || AmountError::Syntax(text.to_string());
        if text.len() > DECIMAL_LEN_MAX {
            return Err(syntax());
        }
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((w, f)) => (w, f),
            None => (unsigned, ""),
        };
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(whole) || (unsigned.contains('.') && !digits_only(fraction)) {
            return Err(syntax());
        }
        let exponent = currency.exponent();
        if fraction.len() > usize::from(exponent) {
            return Err(AmountError::TooManyDecimals {
                text: text.to_string(),
                currency,
                exponent,
            });
        }
        let mut magnitude: i128 = 0;
        let padding = usize::from(exponent) - fraction.len();
        for b in whole.bytes().chain(fraction.bytes()).chain(std::iter::repeat_n(b'0', padding)) {
            magnitude = magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or(AmountError::Overflow)?;
        }
        Money::new(if negative { -magnitude } else { magnitude }, currency)
    }

    /// The amount as a decimal string with exactly the currency's number of decimals.
    pub fn to_decimal_string(&self) -> String {
        format_minor_units(self.minor_units, self.currency)
    }

    pub fn checked_add(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        let sum = self.minor_units.checked_add(other.minor_units).ok_or(AmountError::Overflow)?;
        Money::new(sum, self.currency)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        let difference =
            self.minor_units.checked_sub(other.minor_units).ok_or(AmountError::Overflow)?;
        Money::new(difference, self.currency)
    }

    fn same_currency(&self, other: Money) -> Result<(), AmountError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(AmountError::CurrencyMismatch(self.currency, other.currency))
        }
    }
}

/// Any number of minor units (totals across contracts may exceed one amount's bound) as a
/// decimal string with exactly the currency's number of decimals.
pub fn format_minor_units(minor_units: i128, currency: Currency) -> String {
    DecimalText::of(minor_units, currency).as_str().to_string()
}

/// An amount written as [`format_minor_units`] writes it, in a buffer on the stack: for
/// reports that write hundreds of thousands of amounts.
pub struct DecimalText {
    /// Room for the 39 digits of 2^127, a point and a sign (exponents are at most 4).
    bytes: [u8; 48],
    start: usize,
}

impl DecimalText {
    pub fn of(minor_units: i128, currency: Currency) -> DecimalText {
        let exponent = usize::from(currency.exponent());
        debug_assert!(exponent <= 4, "the currency table's exponents are 0 to 4");
        let mut text = DecimalText { bytes: [0u8; 48], start: 48 };
        let magnitude = minor_units.unsigned_abs();
        // Nearly every amount fits in 64 bits: u128 division is slow, so those are written
        // with u64 arithmetic, two digits at a time.
        match u64::try_from(magnitude) {
            Ok(small) => text.write_small(small, exponent),
            Err(_) => text.write_large(magnitude, exponent),
        }
        if minor_units < 0 {
            text.push(b'-');
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.start -= 1;
        self.bytes[self.start] = byte;
    }

    /// The two digits of `pair` (below 100), the tens first in the text.
    fn push_pair(&mut self, pair: u64) {
        const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
        let at = pair as usize * 2;
        self.push(PAIRS[at + 1]);
        self.push(PAIRS[at]);
    }

    /// `exponent` fraction digits, the point, then the whole part (at least one digit).
    fn write_small(&mut self, mut rest: u64, exponent: usize) {
        for _ in 0..exponent / 2 {
            self.push_pair(rest % 100);
            rest /= 100;
        }
        if exponent % 2 == 1 {
            self.push(b'0' + (rest % 10) as u8);
            rest /= 10;
        }
        if exponent > 0 {
            self.push(b'.');
        }
        while rest >= 100 {
            self.push_pair(rest % 100);
            rest /= 100;
        }
        if rest >= 10 {
            self.push_pair(rest);
        } else {
            self.push(b'0' + rest as u8);
        }
    }

    /// The same for magnitudes past 64 bits, a digit at a time (u64 once the rest fits).
    fn write_large(&mut self, mut rest: u128, exponent: usize) {
        let mut written = 0;
        loop {
            if written == exponent && exponent > 0 {
                self.push(b'.');
            }
            let digit = match u64::try_from(rest) {
                Ok(small) => {
                    rest = u128::from(small / 10);
                    (small % 10) as u8
                }
                Err(_) => {
                    let digit = (rest % 10) as u8;
                    rest /= 10;
                    digit
                }
            };
            self.push(b'0' + digit);
            written += 1;
            if rest == 0 && written > exponent {
                break;
            }
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("digits, a point and a sign are ASCII")
    }

    /// The text's bytes (ASCII), for writers of bytes that need not check them again.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Canonical bytes: the currency's three ASCII bytes, then the minor units as a zigzag
/// LEB128 varint (postcard's i128). Money never appears in JSON through serde: the wire
/// carries decimal strings ([`Decimal`]) that need the contract's currency to be read.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.currency, self.minor_units).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (currency, minor_units) = <(Currency, i128)>::deserialize(d)?;
        Money::new(minor_units, currency).map_err(serde::de::Error::custom)
    }
}

/// An amount as the wire carries it: a decimal string whose syntax has been checked, not yet
/// tied to a currency. [`Decimal::to_money`] reads it in the contract's currency.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Decimal(String);

impl Decimal {
    pub fn parse(text: &str) -> Result<Decimal, AmountError> {
        // The syntax check is the parse in the currency with the most decimals, minus its
        // decimal-count and magnitude checks.
        match Money::parse(text, Currency::from_code("CLF").expect("CLF is in the table")) {
            Err(AmountError::Syntax(t)) => Err(AmountError::Syntax(t)),
            _ => Ok(Decimal(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_money(&self, currency: Currency) -> Result<Money, AmountError> {
        Money::parse(&self.0, currency)
    }
}

impl From<Money> for Decimal {
    fn from(m: Money) -> Decimal {
        Decimal(m.to_decimal_string())
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal amount as a string, like \"1250.00\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
                Decimal::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(text: &str) -> Result<i128, AmountError> {
        Money::parse(text, Currency::USD).map(|m| m.minor_units())
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(usd("45000000000.00"), Ok(4_500_000_000_000));
        assert_eq!(usd("12.5"), Ok(1250));
        assert_eq!(usd("12"), Ok(1200));
        assert_eq!(usd("-750000000.00"), Ok(-75_000_000_000));
        assert_eq!(usd("0"), Ok(0));
        assert_eq!(usd("-0.00"), Ok(0));
        assert_eq!(Money::parse("45000", Currency::JPY).unwrap().minor_units(), 45000);
        assert_eq!(Money::parse("1.234", Currency::KWD).unwrap().minor_units(), 1234);
        assert_eq!(Money::parse("1.2", Currency::KWD).unwrap().minor_units(), 1200);
    }

    #[test]
    fn refuses_garbage_with_the_right_error() {
        for bad in ["", "-", ".5", "5.", "1e3", " 1", "1 ", "+1", "1,000.00", "0x10", "1.2.3", "--1", "١"] {
            assert!(matches!(usd(bad), Err(AmountError::Syntax(_))), "{bad:?}");
        }
        assert!(matches!(usd("12.345"), Err(AmountError::TooManyDecimals { exponent: 2, .. })));
        assert!(matches!(
            Money::parse("1.0", Currency::JPY),
            Err(AmountError::TooManyDecimals { exponent: 0, .. })
        ));
        assert_eq!(usd("10000000000000000000000000000.00"), Ok(MAX_ABS_MINOR_UNITS));
        assert_eq!(usd("10000000000000000000000000000.01"), Err(AmountError::Overflow));
        assert_eq!(usd("99999999999999999999999999999999999999999999999"), Err(AmountError::Overflow));
        assert_eq!(usd("10000000000000000000000000000.01").unwrap_err().rejection("data.amount").code, Code::AmountOverflow);
    }

    #[test]
    fn decimals_match_the_plain_formula_at_the_edges() {
        let plain = |minor: i128, currency: Currency| {
            let exponent = u32::from(currency.exponent());
            let magnitude = minor.unsigned_abs();
            let sign = if minor < 0 { "-" } else { "" };
            if exponent == 0 {
                return format!("{sign}{magnitude}");
            }
            let scale = 10u128.pow(exponent);
            format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale, width = exponent as usize)
        };
        let mut values = vec![0, 1, -1, 9, 10, 99, 100, 101, 12345, -12345, i128::MAX, i128::MIN, i128::MIN + 1];
        for shift in 0..127 {
            let v = 1i128 << shift;
            values.extend([v, v - 1, -v, 1 - v, v + 1]);
        }
        values.extend([u64::MAX as i128, u64::MAX as i128 + 1, -(u64::MAX as i128), 10i128.pow(19), 10i128.pow(38)]);
        // Every one- to four-digit value, every power of ten and its neighbours: each digit
        // pair and each place of the point.
        values.extend(-10_000..=10_000);
        for power in 0..39 {
            let p = 10i128.pow(power);
            values.extend([p - 1, p, p + 1, -p]);
            values.extend(p.checked_mul(7).map(|q| q + 3));
        }
        for currency in Currency::all() {
            for v in &values {
                assert_eq!(DecimalText::of(*v, currency).as_str(), plain(*v, currency), "{v} {currency}");
            }
        }
    }

    #[test]
    fn formats_with_exactly_the_exponent() {
        let f = |minor, c| Money::new(minor, c).unwrap().to_decimal_string();
        assert_eq!(f(4_500_000_000_000, Currency::USD), "45000000000.00");
        assert_eq!(f(5, Currency::USD), "0.05");
        assert_eq!(f(-5, Currency::USD), "-0.05");
        assert_eq!(f(45000, Currency::JPY), "45000");
        assert_eq!(f(1, Currency::KWD), "0.001");
    }

    #[test]
    fn arithmetic_is_checked_and_single_currency() {
        let max = Money::new(MAX_ABS_MINOR_UNITS, Currency::USD).unwrap();
        assert_eq!(max.checked_add(Money::new(1, Currency::USD).unwrap()), Err(AmountError::Overflow));
        assert!(matches!(
            Money::zero(Currency::USD).checked_add(Money::zero(Currency::JPY)),
            Err(AmountError::CurrencyMismatch(..))
        ));
    }

    proptest! {
        #[test]
        fn decimal_strings_round_trip(minor in -MAX_ABS_MINOR_UNITS..=MAX_ABS_MINOR_UNITS,
                                      i in 0usize..4) {
            let currency = [Currency::USD, Currency::JPY, Currency::KWD, Currency::from_code("CLF").unwrap()][i];
            let m = Money::new(minor, currency).unwrap();
            prop_assert_eq!(Money::parse(&m.to_decimal_string(), currency).unwrap(), m);
        }
    }
}
