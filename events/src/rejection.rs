//! Why an event was refused: a stable machine code, the field it concerns, and a sentence.
//!
//! Every refusal anywhere in the product (parsing, single-event checks, checks against the
//! contract's state) is a [`Rejection`]. The HTTP layer maps [`Code::kind`] to a status code;
//! the CLI prints `field: code: message`. Codes are part of the public contract: never rename
//! one, only add.

use std::fmt;

/// How a refusal is classed; the HTTP status follows from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request is not well formed (400).
    Malformed,
    /// It names a contract or event that does not exist (404).
    NotFound,
    /// It conflicts with the ledger's position or an earlier request (409).
    Conflict,
    /// It is well formed but breaks a rule of the domain (422).
    Unprocessable,
}

macro_rules! codes {
    ($($variant:ident => ($text:literal, $kind:ident)),* $(,)?) => {
        /// A stable, machine-readable reason for a refusal.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code { $($variant),* }

        impl Code {
            /// Every code, for documentation and exhaustive tests.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The snake_case text that appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text),* }
            }

            pub fn kind(self) -> Kind {
                match self { $(Code::$variant => Kind::$kind),* }
            }
        }
    };
}

codes! {
    // Malformed input.
    InvalidJson => ("invalid_json", Malformed),
    UnknownField => ("unknown_field", Malformed),
    MissingField => ("missing_field", Malformed),
    UnknownType => ("unknown_type", Malformed),
    InvalidValue => ("invalid_value", Malformed),
    InvalidAmount => ("invalid_amount", Malformed),
    InvalidDate => ("invalid_date", Malformed),
    InvalidId => ("invalid_id", Malformed),
    InvalidText => ("invalid_text", Malformed),
    EmptyBatch => ("empty_batch", Malformed),
    BatchTooLarge => ("batch_too_large", Malformed),
    // Not found.
    UnknownContract => ("unknown_contract", NotFound),
    // Conflicts.
    VersionConflict => ("version_conflict", Conflict),
    IdempotencyKeyReused => ("idempotency_key_reused", Conflict),
    // Money.
    UnknownCurrency => ("unknown_currency", Unprocessable),
    TooManyDecimals => ("too_many_decimals", Unprocessable),
    AmountOverflow => ("amount_overflow", Unprocessable),
    NonPositiveAmount => ("non_positive_amount", Unprocessable),
    ZeroAmount => ("zero_amount", Unprocessable),
    // The grant.
    ContractExists => ("contract_exists", Unprocessable),
    InvalidTerm => ("invalid_term", Unprocessable),
    EmptyWindow => ("empty_window", Unprocessable),
    WindowOutsideTerm => ("window_outside_term", Unprocessable),
    TrancheSumMismatch => ("tranche_sum_mismatch", Unprocessable),
    DuplicateTranche => ("duplicate_tranche", Unprocessable),
    NoTranches => ("no_tranches", Unprocessable),
    InvalidGpuCount => ("invalid_gpu_count", Unprocessable),
    GpuCountTooLarge => ("gpu_count_too_large", Unprocessable),
    // Events of a contract.
    ContractIdRequired => ("contract_id_required", Unprocessable),
    ContractIdNotAllowed => ("contract_id_not_allowed", Unprocessable),
    BeforeGrant => ("before_grant", Unprocessable),
    ContractTerminated => ("contract_terminated", Unprocessable),
    TerminationBeforeEvent => ("termination_before_event", Unprocessable),
    CapacityOutsideTerm => ("capacity_outside_term", Unprocessable),
    CapacityDecreaseTooLarge => ("capacity_decrease_exceeds_unrecognized", Unprocessable),
    GpuCountNegative => ("gpu_count_negative", Unprocessable),
    UnknownMilestone => ("unknown_milestone", Unprocessable),
    MilestoneAlreadyResolved => ("milestone_already_resolved", Unprocessable),
    MilestoneResolvedBeforeReversal => ("milestone_resolved_before_reversal", Unprocessable),
    DuplicateInvoice => ("duplicate_invoice", Unprocessable),
    DuplicatePayment => ("duplicate_payment", Unprocessable),
    UnknownInvoice => ("unknown_invoice", Unprocessable),
    PaymentExceedsInvoice => ("payment_exceeds_invoice", Unprocessable),
    PaymentBeforeInvoice => ("payment_before_invoice", Unprocessable),
    FirmValueNegative => ("firm_value_negative", Unprocessable),
    // Periods.
    PeriodClosed => ("period_closed", Unprocessable),
    PeriodEndNotAdvancing => ("period_end_not_advancing", Unprocessable),
    PeriodCloseBeforeEnd => ("period_close_before_end", Unprocessable),
    PeriodNotEnded => ("period_not_ended", Unprocessable),
    // Reversals.
    UnknownReversalTarget => ("unknown_reversal_target", Unprocessable),
    ReversalOfOtherContract => ("reversal_of_other_contract", Unprocessable),
    ReversalOfGrant => ("reversal_of_grant", Unprocessable),
    ReversalOfReversal => ("reversal_of_reversal", Unprocessable),
    AlreadyReversed => ("already_reversed", Unprocessable),
    ReversalBeforeTarget => ("reversal_before_target", Unprocessable),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: nothing of the refused request is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{code}: {message}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct Rejection {
    pub code: Code,
    /// The JSON path of the offending field (`data.tranches[1].amount`), when there is one.
    pub field: Option<String>,
    pub message: String,
    /// For `version_conflict`: the stream's version now, so the writer can re-read and retry.
    pub current_version: Option<u64>,
}

impl Rejection {
    pub fn new(code: Code, field: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Rejection { code, field: field.into(), message: message.into(), current_version: None }
    }

    /// The same refusal, its field path placed under `prefix` (`data` + `amount` = `data.amount`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = Some(match self.field.take() {
            None => prefix.to_string(),
            Some(f) if f.starts_with('[') => format!("{prefix}{f}"),
            Some(f) => format!("{prefix}.{f}"),
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
        }
    }

    #[test]
    fn field_paths_nest() {
        let r = Rejection::new(Code::TooManyDecimals, Some("amount".into()), "x");
        assert_eq!(r.under("data").field.as_deref(), Some("data.amount"));
        let r = Rejection::new(Code::TooManyDecimals, Some("[1].amount".into()), "x");
        assert_eq!(r.clone().under("tranches").field.as_deref(), Some("tranches[1].amount"));
        assert_eq!(r.to_string(), "[1].amount: too_many_decimals: x");
    }
}
