//! Fuzz targets of compute-ledger: every parser and verifier that meets untrusted bytes, and
//! admission (random event histories through the one seal and fold, then every figure).
//!
//! Each target is a plain `fn(&[u8])` that panics when a property fails: the AFL++ binary
//! (`src/bin/fuzz_target.rs`, feature `afl`) and the replay test (`tests/replay.rs`, a
//! normal `cargo test`) call the same functions, so a crash the fuzzer found and a
//! regression input kept under `regressions/` fail the same way.
//!
//! Properties, per target:
//! - `proposal`: wire JSON parses without panic; the single-event and batch parsers agree;
//!   a body that resolves in a currency seals, decodes to itself and, printed as wire JSON
//!   again, parses and resolves to the same body.
//! - `canonical`: decoding never panics; bytes that decode re-encode to themselves, and the
//!   event prints as wire JSON and as a bundle line.
//! - `bundle`: the streaming bundle verifier never panics on any lines.
//! - `merkle`: inclusion and consistency verification never panic on any proof and sizes;
//!   real proofs over arbitrary leaves verify, and a proof with one bit changed does not.
//! - `checkpoint`: checkpoint, verifier-key and signed-note parsing never panic; what parses
//!   prints back to the same text; signing what parses verifies.
//! - `query`: the HTTP query-string parser (`api/src/server/params.rs`, included by path)
//!   and the value parsers each route applies never panic.
//! - `admission`: random histories through `Book::propose`; then, for every contract at many
//!   dates and positions, every figure, view and report computes without overflow and SPEC
//!   section 4's identity holds; periods add up; folding the recorded events again gives the
//!   same book; a book of the first K events gives the figures known at K.

pub mod admission;
pub mod seeds;
pub mod targets;

/// Stand-in for the server's `api::server::error`: `params.rs` below needs only
/// `ApiError::bad_parameter` of it.
pub mod error {
    /// The parameter and the message of a refused query.
    #[derive(Debug)]
    pub struct ApiError {
        pub field: String,
        pub message: String,
    }

    impl ApiError {
        pub fn bad_parameter(name: &str, message: impl Into<String>) -> ApiError {
            ApiError { field: name.to_string(), message: message.into() }
        }
    }
}

/// `api/src/server/params.rs`, the server's query-string parser, compiled here as it is in
/// the server (its `super::error` is the stand-in above).
#[path = "../../api/src/server/params.rs"]
pub mod params;

/// A target: takes any bytes, panics when a property does not hold.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `regressions/` and of `scripts/fuzz.sh TARGET`).
pub const TARGETS: &[(&str, Target)] = &[
    ("proposal", targets::proposal),
    ("canonical", targets::canonical),
    ("bundle", targets::bundle),
    ("merkle", targets::merkle),
    ("checkpoint", targets::checkpoint),
    ("query", targets::query),
    ("admission", admission::admission),
];

pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The repository's root (examples/ and testdata/ seed the corpora).
pub fn repository() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/ is inside the repository").to_path_buf()
}
