//! The compute-ledger event catalogue.
//!
//! Everything here is pure: no I/O, no clocks, no async. It defines
//! - [`Money`] and [`Currency`]: integer minor units, exact decimal strings;
//! - [`Date`] and [`Timestamp`];
//! - the event bodies ([`EventBody`]) and the envelope ([`Event`]) with its canonical bytes
//!   and hash ([`RecordedEvent`], [`Digest`]);
//! - the JSON wire form ([`Proposal`], [`WireEventOut`]) and the checks one event can pass
//!   on its own;
//! - [`Rejection`]: every refusal's code, field and message.

mod body;
pub mod bundle;
pub mod checkpoint;
pub mod cosignature;
mod currency;
mod event;
pub mod evidence;
pub mod merkle;
mod money;
mod rejection;
mod text;
mod time;
mod wire;
pub mod witness;

pub use body::*;
pub use currency::{Currency, UnknownCurrency};
pub use event::{DecodeError, Digest, Event, RecordedEvent, CANONICAL_LEN_MAX, EVENT_HASH_CONTEXT, FORMAT_VERSION};
pub use money::{format_minor_units, AmountError, Decimal, DecimalText, Money, MAX_ABS_MINOR_UNITS};
pub use rejection::{Code, Kind, Rejection};
pub use text::{check_identifier, check_idempotency_key, check_text, ContractId};
pub use time::{Date, InvalidDate, Timestamp};
pub use wire::*;
