//! Identifiers and free text: what characters and lengths are accepted, and why.

use crate::rejection::{Code, Rejection};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Contract ids appear as one token of NATS subjects (`ledger.events.<contract_id>.<type>`),
/// so they are limited to characters that are safe there.
pub const CONTRACT_ID_LEN_MAX: usize = 64;
/// Tranche, milestone, invoice and payment ids.
pub const IDENTIFIER_LEN_MAX: usize = 128;
/// Names, reasons, the actor.
pub const TEXT_LEN_MAX: usize = 1024;
/// Idempotency keys (as Stripe: up to 255 characters).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// A contract id: 1 to 64 of `A-Z a-z 0-9 _ -`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContractId(String);

impl ContractId {
    pub fn parse(text: &str) -> Result<ContractId, Rejection> {
        let ok = !text.is_empty()
            && text.len() <= CONTRACT_ID_LEN_MAX
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(ContractId(text.to_string()))
        } else {
            Err(Rejection::new(
                Code::InvalidId,
                Some("contract_id".to_string()),
                format!("`{text}` is not a contract id: 1 to {CONTRACT_ID_LEN_MAX} of A-Z a-z 0-9 _ -"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for ContractId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ContractId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContractId::parse(&s).map_err(|r| serde::de::Error::custom(r.message))
    }
}

/// An id inside a contract (tranche, milestone, invoice, payment): 1 to 128 bytes, no
/// whitespace or control characters, so it prints and compares unambiguously.
pub fn check_identifier(field: &str, text: &str) -> Result<(), Rejection> {
    let ok = !text.is_empty()
        && text.len() <= IDENTIFIER_LEN_MAX
        && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Rejection::new(
            Code::InvalidId,
            Some(field.to_string()),
            format!("`{text}` is not an id: 1 to {IDENTIFIER_LEN_MAX} bytes without spaces or control characters"),
        ))
    }
}

/// Free text (names, reasons): 1 to 1024 bytes, not blank, no control characters.
pub fn check_text(field: &str, text: &str) -> Result<(), Rejection> {
    let ok = !text.trim().is_empty() && text.len() <= TEXT_LEN_MAX && !text.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Rejection::new(
            Code::InvalidText,
            Some(field.to_string()),
            format!("must be 1 to {TEXT_LEN_MAX} bytes of text, not blank, without control characters"),
        ))
    }
}

/// Idempotency keys: 1 to 255 printable ASCII characters.
pub fn check_idempotency_key(field: &str, key: &str) -> Result<(), Rejection> {
    let ok = !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LEN_MAX && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Rejection::new(
            Code::InvalidId,
            Some(field.to_string()),
            format!("an idempotency key is 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable ASCII characters"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_ids_are_subject_tokens() {
        assert!(ContractId::parse("colossus-1").is_ok());
        assert!(ContractId::parse("A_b-9").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "ä", &"x".repeat(65)] {
            let r = ContractId::parse(bad).unwrap_err();
            assert_eq!((r.code, r.field.as_deref()), (Code::InvalidId, Some("contract_id")), "{bad}");
        }
    }

    #[test]
    fn identifiers_and_text() {
        assert!(check_identifier("x", "INV-001").is_ok());
        assert!(check_identifier("x", "phase-2-delivery").is_ok());
        assert!(check_identifier("x", "has space").is_err());
        assert!(check_identifier("x", "").is_err());
        assert!(check_text("x", "availability 99.2% below 99.5%").is_ok());
        assert!(check_text("x", "   ").is_err());
        assert!(check_text("x", "bell\u{7}").is_err());
        assert!(check_idempotency_key("x", "abc-123").is_ok());
        assert!(check_idempotency_key("x", "a b").is_err());
    }
}
