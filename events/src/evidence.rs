//! Evidence packs (docs/FORMAT.md, "Evidence pack"): one contract's events, each with an
//! inclusion proof to one signed (and perhaps cosigned) checkpoint, and its revenue report
//! as of a date, as known at a ledger position. NDJSON:
//!
//! 1. the manifest: what the pack holds, the checkpoint note, and the seqs of the events;
//! 2. one line per event, in seq order: the bundle's event fields and `inclusion`, the
//!    audit path of the event's leaf (seq - 1) in the checkpoint's tree;
//! 3. `{"report": …}`: the revenue object of SPEC section 4 for `as_of` and `known_at`.
//!
//! [`EvidenceVerifier`] checks everything but the report's figures, which need the revenue
//! rules (`projections`): it hands each verified event to the caller, who folds them and
//! compares the report it computes with the pack's.

use crate::bundle::{at, check_event_fields, general, EventFields, verify_checkpoint, BundleFailure};
use crate::checkpoint::{Checkpoint, VerifierKey};
use crate::cosignature::{Cosignature, WitnessPolicy};
use crate::{merkle, ContractId, Date, Digest, RecordedEvent, Stream};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "compute-ledger-evidence";
pub const VERSION: u64 = 1;
/// Most events one pack may list (a bound for verifiers reading untrusted files).
pub const EVENTS_MAX: usize = 1_000_000;
/// Most hashes in an inclusion proof (a tree of at most 2^64 leaves).
const PROOF_HASHES_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u64,
    pub origin: String,
    pub verifier_key: String,
    pub contract_id: String,
    /// The report's date D, `YYYY-MM-DD`.
    pub as_of: String,
    /// The report's ledger position K: the pack holds the contract's events with seq <= K.
    pub known_at: u64,
    /// `month` or `quarter`: the report's periods.
    pub granularity: String,
    /// The signed checkpoint note every inclusion proof leads to (its size >= K).
    pub checkpoint: String,
    /// The seqs of the event lines, in order.
    pub seqs: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    pub canonical: String,
    pub event: serde_json::Value,
    /// Audit path of leaf seq - 1 in the checkpoint's tree, hex, bottom-up.
    pub inclusion: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportLine {
    pub report: serde_json::Value,
}

/// The fields of an evidence event line as read for verification: `event` kept as its JSON
/// text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLineIn<'a> {
    seq: u64,
    #[serde(borrow)]
    hash: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    prev_hash: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    canonical: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
    inclusion: Vec<String>,
}

pub fn manifest_line(manifest: &Manifest) -> String {
    serde_json::to_string(manifest).expect("lines serialize")
}

pub fn event_line(recorded: &RecordedEvent, inclusion: &[Digest]) -> String {
    let line = EventLine {
        seq: recorded.event.seq,
        hash: recorded.hash.to_hex(),
        prev_hash: recorded.event.prev_hash.to_hex(),
        canonical: base64::Engine::encode(&crate::checkpoint::B64, &recorded.canonical),
        event: recorded.wire_json(),
        inclusion: crate::bundle::hexes(inclusion),
    };
    serde_json::to_string(&line).expect("lines serialize")
}

pub fn report_line(report: &serde_json::Value) -> String {
    serde_json::to_string(&ReportLine { report: report.clone() }).expect("lines serialize")
}

/// What a verified pack says (its report still to be recomputed by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub contract_id: ContractId,
    pub as_of: Date,
    pub known_at: u64,
    pub granularity: String,
    pub checkpoint: Checkpoint,
    pub cosignatures: Vec<Cosignature>,
    pub events: usize,
    pub report: serde_json::Value,
}

struct Opened {
    manifest: Manifest,
    contract_id: ContractId,
    as_of: Date,
    checkpoint: Checkpoint,
    cosignatures: Vec<Cosignature>,
}

/// Verifies a pack line by line.
pub struct EvidenceVerifier {
    key: Option<VerifierKey>,
    witnesses: Option<WitnessPolicy>,
    opened: Option<Opened>,
    next: usize,
    last_recorded_at: Option<crate::Timestamp>,
    report: Option<serde_json::Value>,
}

impl EvidenceVerifier {
    /// `key`: the log's verifier key the auditor trusts (None: the manifest's, trusted on
    /// first use); `witnesses`: a cosignature quorum to require.
    pub fn new(key: Option<VerifierKey>, witnesses: Option<WitnessPolicy>) -> EvidenceVerifier {
        EvidenceVerifier { key, witnesses, opened: None, next: 0, last_recorded_at: None, report: None }
    }

    /// Feeds one line (without its newline); an event line gives back its verified event.
    pub fn line(&mut self, line: &str) -> Result<Option<RecordedEvent>, BundleFailure> {
        if self.report.is_some() {
            return Err(general("text after the report line"));
        }
        let Some(opened) = &self.opened else {
            self.opened = Some(self.manifest(line)?);
            return Ok(None);
        };
        if self.next == opened.manifest.seqs.len() {
            let parsed: ReportLine = serde_json::from_str(line).map_err(|e| general(format!("report line: {e}")))?;
            if !parsed.report.is_object() {
                return Err(general("the report is not a JSON object"));
            }
            self.report = Some(parsed.report);
            return Ok(None);
        }
        let seq = opened.manifest.seqs[self.next];
        let parsed: EventLineIn<'_> = serde_json::from_str(line).map_err(|e| at(seq, format!("not an evidence event line: {e}")))?;
        let fields = EventFields { line_seq: parsed.seq, hash: &parsed.hash, prev_hash: &parsed.prev_hash, canonical: &parsed.canonical, event: parsed.event.get() };
        let recorded = check_event_fields(seq, &fields)?;
        let event = &recorded.event;
        if event.stream != Stream::Contract(opened.contract_id.clone()) {
            return Err(at(seq, format!("the event is of {}, not of contract {}", event.stream, opened.contract_id)));
        }
        let version = self.next as u64 + 1;
        if event.version != version {
            return Err(at(seq, format!("the contract's events are not complete: version {} where {version} is due", event.version)));
        }
        if self.last_recorded_at.is_some_and(|t| event.recorded_at < t) {
            return Err(at(seq, "recorded_at goes back in time"));
        }
        if parsed.inclusion.len() > PROOF_HASHES_MAX {
            return Err(at(seq, "the inclusion proof is longer than any tree is deep"));
        }
        let proof = parsed.inclusion.iter().map(|h| crate::bundle::digest(h, "an inclusion proof hash")).collect::<Result<Vec<_>, _>>().map_err(|e| at(seq, e.reason))?;
        let cp = &opened.checkpoint;
        merkle::verify_inclusion(&recorded.hash, seq - 1, cp.size, &proof, &cp.root)
            .map_err(|e| at(seq, format!("not in the checkpoint's tree (size {}): {e}", cp.size)))?;
        self.last_recorded_at = Some(event.recorded_at);
        self.next += 1;
        Ok(Some(recorded))
    }

    fn manifest(&mut self, line: &str) -> Result<Opened, BundleFailure> {
        let manifest: Manifest = serde_json::from_str(line).map_err(|e| general(format!("manifest: {e}")))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(general(format!("not a {FORMAT} version {VERSION} pack")));
        }
        let in_manifest = VerifierKey::parse(&manifest.verifier_key).map_err(|e| general(format!("manifest: {e}")))?;
        let key = match &self.key {
            Some(k) if *k != in_manifest => return Err(general("the pack names another verifier key than the one given")),
            Some(k) => k.clone(),
            None => in_manifest,
        };
        if manifest.origin != key.name {
            return Err(general("the manifest's origin is not the key's name"));
        }
        let contract_id = ContractId::parse(&manifest.contract_id).map_err(|r| general(format!("manifest: contract_id: {}", r.message)))?;
        let as_of = Date::parse(&manifest.as_of).map_err(|e| general(format!("manifest: as_of: {e}")))?;
        if !matches!(manifest.granularity.as_str(), "month" | "quarter") {
            return Err(general("manifest: granularity is month or quarter"));
        }
        let (checkpoint, cosignatures) = verify_checkpoint(&key, self.witnesses.as_ref(), &manifest.checkpoint)?;
        if manifest.known_at > checkpoint.size {
            return Err(general(format!("known_at {} is beyond the checkpoint (size {})", manifest.known_at, checkpoint.size)));
        }
        if manifest.seqs.is_empty() || manifest.seqs.len() > EVENTS_MAX {
            return Err(general(format!("a pack lists 1 to {EVENTS_MAX} events")));
        }
        if manifest.seqs[0] == 0 || manifest.seqs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(general("the manifest's seqs are not increasing from 1"));
        }
        if manifest.seqs.last().is_some_and(|s| *s > manifest.known_at) {
            return Err(general("the manifest lists an event after known_at"));
        }
        self.key = Some(key);
        Ok(Opened { manifest, contract_id, as_of, checkpoint, cosignatures })
    }

    /// Ends the pack: every listed event and the report must have come.
    pub fn finish(self) -> Result<Verified, BundleFailure> {
        let opened = self.opened.ok_or_else(|| general("an empty file"))?;
        if let Some(seq) = opened.manifest.seqs.get(self.next) {
            return Err(at(*seq, "missing: the pack ends before it"));
        }
        let report = self.report.ok_or_else(|| general("no report line"))?;
        Ok(Verified {
            contract_id: opened.contract_id,
            as_of: opened.as_of,
            known_at: opened.manifest.known_at,
            granularity: opened.manifest.granularity,
            checkpoint: opened.checkpoint,
            cosignatures: opened.cosignatures,
            events: self.next,
            report,
        })
    }
}
