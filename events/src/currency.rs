//! ISO 4217 currencies and their minor-unit exponents.
//!
//! The table is ours, not a crate's, on purpose: a stored amount is an integer of minor units,
//! so the exponent of a currency decides what `"1.00"` means forever. A dependency update
//! must never be able to change it. Codes may be added; an exponent is never changed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Active ISO 4217 codes (list of 2025) with their exponent, sorted by code for binary search.
/// Precious metals, test and no-currency codes (XAU, XTS, XXX, …) have no minor unit and are
/// deliberately absent.
const TABLE: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2),
    ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2), ("BHD", 3),
    ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2),
    ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHE", 2),
    ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2), ("COU", 2),
    ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2), ("DOP", 2),
    ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2), ("FKP", 2),
    ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2),
    ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2),
    ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0),
    ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3),
    ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2),
    ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2), ("MNT", 2),
    ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2), ("MXV", 2),
    ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2), ("NPR", 2),
    ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2),
    ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2), ("RWF", 0),
    ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2),
    ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2),
    ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3), ("TOP", 2), ("TRY", 2),
    ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0), ("USD", 2), ("USN", 2),
    ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2), ("VND", 0),
    ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0), ("XPF", 0),
    ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// A three-letter code as an integer that orders as the code does.
const fn key(code: [u8; 3]) -> u32 {
    u32::from_be_bytes([0, code[0], code[1], code[2]])
}

/// [`TABLE`]'s codes as [`key`]s, in the same order.
const KEYS: [u32; TABLE.len()] = {
    let mut keys = [0u32; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        let b = TABLE[i].0.as_bytes();
        assert!(b.len() == 3, "currency codes have three letters");
        keys[i] = key([b[0], b[1], b[2]]);
        assert!(i == 0 || keys[i - 1] < keys[i], "the table is sorted by code, without repeats");
        i += 1;
    }
    keys
};

/// An ISO 4217 currency we know the exponent of.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO 4217 currency code with a minor unit")]
pub struct UnknownCurrency(pub String);

impl Currency {
    pub const USD: Currency = Currency { code: *b"USD", exponent: 2 };
    pub const EUR: Currency = Currency { code: *b"EUR", exponent: 2 };
    pub const JPY: Currency = Currency { code: *b"JPY", exponent: 0 };
    pub const KWD: Currency = Currency { code: *b"KWD", exponent: 3 };

    /// Looks up an upper-case three-letter code.
    pub fn from_code(code: &str) -> Result<Currency, UnknownCurrency> {
        // Every event that carries money decodes its currency here: the code is searched as
        // a three-byte integer among the table's, computed once (the table's order is theirs).
        let unknown = || UnknownCurrency(code.to_string());
        let bytes: [u8; 3] = code.as_bytes().try_into().map_err(|_| unknown())?;
        let i = KEYS.binary_search(&key(bytes)).map_err(|_| unknown())?;
        let (c, exponent) = TABLE[i];
        let b = c.as_bytes();
        Ok(Currency { code: [b[0], b[1], b[2]], exponent })
    }

    pub fn code(&self) -> &str {
        // The code came from TABLE, which is ASCII.
        std::str::from_utf8(&self.code).expect("currency codes are ASCII")
    }

    /// Number of decimal places of the minor unit (USD 2, JPY 0, KWD 3).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    pub fn all() -> impl Iterator<Item = Currency> {
        TABLE.iter().map(|(c, _)| Currency::from_code(c).expect("table entry"))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// In JSON a currency is its code; in canonical bytes it is the three ASCII bytes of the code.
impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(self.code()) } else { self.code.serialize(s) }
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let code = String::deserialize(d)?;
            return Currency::from_code(&code).map_err(serde::de::Error::custom);
        }
        // Every stored amount carries its currency: no allocation to read it.
        let bytes = <[u8; 3]>::deserialize(d)?;
        Currency::from_code(std::str::from_utf8(&bytes).map_err(serde::de::Error::custom)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        for pair in TABLE.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, exponent) in TABLE {
            assert_eq!(code.len(), 3);
            assert!(code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(*exponent <= 4);
        }
    }

    #[test]
    fn exponents_of_the_currencies_the_spec_names() {
        assert_eq!(Currency::from_code("USD").unwrap().exponent(), 2);
        assert_eq!(Currency::from_code("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::from_code("KWD").unwrap().exponent(), 3);
        assert_eq!(Currency::from_code("CLF").unwrap().exponent(), 4);
        assert_eq!(Currency::from_code("USD").unwrap(), Currency::USD);
        assert_eq!(Currency::from_code("KWD").unwrap(), Currency::KWD);
        assert!(Currency::from_code("usd").is_err());
        assert!(Currency::from_code("XAU").is_err());
        assert!(Currency::from_code("").is_err());
    }
}
