//! Export bundles (docs/FORMAT.md, "Export bundle"): NDJSON with a header, one line per
//! event, and a final line with the signed checkpoint (and proofs, for a range). Writing
//! and verifying live here, pure, so the CLI, the HTTP API and tests share them.
//!
//! Verification never trusts the JSON: every hash is recomputed from the canonical bytes,
//! the bytes are decoded strictly, and the JSON shown for people must be exactly what the
//! bytes say, so that any change to any byte of a bundle is found.

use crate::checkpoint::{Checkpoint, Note, VerifierKey};
use crate::cosignature::{Cosignature, WitnessPolicy};
use crate::merkle::{self, Frontier};
use crate::{Digest, RecordedEvent};
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "compute-ledger-export";
pub const VERSION: u64 = 1;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u64,
    pub origin: String,
    pub verifier_key: String,
    /// First and last seq of the events in the bundle (`to` = 0 and `from` = 1: no events).
    pub from: u64,
    pub to: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    pub seq: u64,
    pub hash: String,
    pub prev_hash: String,
    pub canonical: String,
    pub event: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    pub seq: u64,
    pub tree_size: u64,
    pub hashes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub from_root: String,
    pub hashes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    /// The last event of the bundle is in the checkpoint's tree (absent for an empty range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion: Option<InclusionProof>,
    /// The tree before the bundle's first event is a prefix of the checkpoint's tree
    /// (absent when the bundle starts at seq 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyProof>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointLine {
    pub checkpoint: String,
    /// Present when the bundle is not the whole ledger up to the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proofs: Option<Proofs>,
}

pub fn hexes(hashes: &[Digest]) -> Vec<String> {
    hashes.iter().map(Digest::to_hex).collect()
}

/// The line of one event.
pub fn event_line(recorded: &RecordedEvent) -> String {
    let mut out = Vec::new();
    write_event_line(recorded, &mut out);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The line of one event (without its newline), appended to `out`: the text of an
/// [`EventLine`] whose `event` is [`RecordedEvent::wire_json`], written without building the
/// JSON value (a test holds the two equal byte for byte).
pub fn write_event_line(recorded: &RecordedEvent, out: &mut Vec<u8>) {
    // The fields before `event` are digits, hex and base64, which JSON writes as they are:
    // written here without serde_json's escaping scan (a fifth of bundle verification's time
    // went to that scan, which rewrites each line to compare it).
    let mut hex = [0u8; 64];
    out.extend_from_slice(b"{\"seq\":");
    serde_json::to_writer(&mut *out, &recorded.event.seq).expect("a number serializes");
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(recorded.hash.hex(&mut hex).as_bytes());
    out.extend_from_slice(b"\",\"prev_hash\":\"");
    out.extend_from_slice(recorded.event.prev_hash.hex(&mut hex).as_bytes());
    out.extend_from_slice(b"\",\"canonical\":\"");
    let start = out.len();
    // Canonical bytes are at most CANONICAL_LEN_MAX long: their base64 length cannot overflow.
    let len = base64::encoded_len(recorded.canonical.len(), true).expect("a bounded length");
    out.resize(start + len, 0);
    B64.encode_slice(&recorded.canonical, &mut out[start..]).expect("room for exactly the encoded length");
    out.extend_from_slice(b"\",\"event\":");
    recorded.write_wire_json(out);
    out.push(b'}');
}

pub fn header_line(header: &Header) -> String {
    serde_json::to_string(header).expect("lines serialize")
}

pub fn checkpoint_line(line: &CheckpointLine) -> String {
    serde_json::to_string(line).expect("lines serialize")
}

/// What a verified bundle proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub from: u64,
    pub to: u64,
    pub checkpoint: Checkpoint,
    /// The note, to keep as the next trusted checkpoint.
    pub note: String,
    /// The root of the tree of size `root_at` (asked for at construction), computed from
    /// the events of a bundle starting at seq 1.
    pub root_at_requested: Option<Digest>,
    /// For a range bundle: the size and root of the tree before its first event, proven
    /// consistent with the checkpoint.
    pub consistent_from: Option<(u64, Digest)>,
    /// The witnesses' cosignatures that made the quorum asked for (none if none was).
    pub cosignatures: Vec<Cosignature>,
}

/// Why a bundle does not verify: at an event (seq), or elsewhere (seq None).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", seq.map(|s| format!("seq {s}: ")).unwrap_or_default())]
pub struct BundleFailure {
    pub seq: Option<u64>,
    pub reason: String,
}

pub(crate) fn at(seq: u64, reason: impl Into<String>) -> BundleFailure {
    BundleFailure { seq: Some(seq), reason: reason.into() }
}

pub(crate) fn general(reason: impl Into<String>) -> BundleFailure {
    BundleFailure { seq: None, reason: reason.into() }
}

/// A hash as every format writes it: 64 lowercase hex digits.
pub fn parse_digest(text: &str) -> Result<Digest, BundleFailure> {
    digest(text, "the hash")
}

pub(crate) fn digest(text: &str, what: &str) -> Result<Digest, BundleFailure> {
    // Lowercase hex only, so each hash has one spelling.
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(general(format!("{what} is not lowercase hex")));
    }
    Digest::from_hex(text).ok_or_else(|| general(format!("{what} is not 64 hex digits")))
}

/// The fields of an event line as read for verification: `event` kept as its JSON text.
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
}

/// The fields of an event line (a bundle's, an evidence pack's), `event` as its JSON text.
pub(crate) struct EventFields<'a> {
    pub line_seq: u64,
    pub hash: &'a str,
    pub prev_hash: &'a str,
    pub canonical: &'a str,
    pub event: &'a str,
}

/// Checks the fields of an event line (a bundle's, an evidence pack's) against its
/// canonical bytes, which must be event `seq`: FORMAT.md section 7, step 2. The bytes are
/// decoded strictly and hashed; the line's hash, prev_hash and event JSON must be exactly
/// what they say. Returns the decoded event.
pub(crate) fn check_event_fields(seq: u64, fields: &EventFields<'_>) -> Result<RecordedEvent, BundleFailure> {
    let EventFields { line_seq, hash, prev_hash, canonical, event } = *fields;
    if line_seq != seq {
        return Err(at(seq, format!("the line says seq {line_seq}")));
    }
    let bytes = B64.decode(canonical).map_err(|_| at(seq, "canonical is not base64"))?;
    if B64.encode(&bytes) != canonical {
        return Err(at(seq, "canonical is not in canonical base64"));
    }
    let recorded = RecordedEvent::from_canonical(bytes).map_err(|e| at(seq, e.to_string()))?;
    if recorded.event.seq != seq {
        return Err(at(seq, format!("the canonical bytes are of seq {}", recorded.event.seq)));
    }
    if !same_digest(hash, "hash", &recorded.hash).map_err(|e| at(seq, e.reason))? {
        return Err(at(seq, format!("the bytes hash to {}, the line says {hash}", recorded.hash)));
    }
    if !same_digest(prev_hash, "prev_hash", &recorded.event.prev_hash).map_err(|e| at(seq, e.reason))? {
        return Err(at(seq, "prev_hash differs from the canonical bytes'"));
    }
    if !same_event_json(&recorded, event).map_err(|e| at(seq, format!("not an event line: {e}")))? {
        return Err(at(seq, "the event JSON is not what the canonical bytes say"));
    }
    Ok(recorded)
}

/// Lines in a row not spelled as exported, after which [`BundleVerifier::check_event_line`]
/// tries [`exported_line`] only on one line in [`EXPORTED_RETRY_EVERY`].
const EXPORTED_MISSES_MAX: u32 = 32;
const EXPORTED_RETRY_EVERY: u64 = 64;

/// The checks of [`BundleVerifier::check_event_line`] for the common case, a line exactly as
/// [`write_event_line`] writes it: the event its `canonical` field holds is decoded and its
/// line written again; if the two are the same bytes, every check holds (the seq, the hash
/// of those bytes, the link field, the one base64 spelling, the event's JSON), and nothing
/// is parsed as JSON. `None` for any other line, which is then checked field by field (the
/// same verdict, with the reason). Cheaper by the JSON parse of the line (about 6% of the
/// CPU time of verifying a million events); writing the line is what the field checks
/// did anyway, to compare the event's JSON.
fn exported_line(seq: u64, line: &str) -> Option<CheckedLine> {
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    const FIELD: &str = r#","canonical":""#;
    let start = line.find(FIELD)? + FIELD.len();
    let len = line[start..].find('"')?;
    let recorded = RecordedEvent::from_canonical(B64.decode(&line[start..start + len]).ok()?).ok()?;
    if recorded.event.seq != seq {
        return None;
    }
    LINE.with_borrow_mut(|written| {
        written.clear();
        write_event_line(&recorded, written);
        (written.as_slice() == line.as_bytes()).then(|| CheckedLine::of(&recorded))
    })
}

/// Whether `text` is the hash `expected` as [`digest`] reads it (an error if it reads as no
/// hash). The common case, the one spelling of `expected`, needs no decoding.
fn same_digest(text: &str, what: &str, expected: &Digest) -> Result<bool, BundleFailure> {
    let mut spelled = [0u8; 64];
    if text == expected.hex(&mut spelled) {
        return Ok(true);
    }
    Ok(digest(text, what)? == *expected)
}

/// Whether the JSON text `event` equals the wire JSON of `recorded` as a JSON value. The
/// common case, the very text the exporter writes, is found equal by comparing bytes; any
/// other text is parsed and compared as a value.
fn same_event_json(recorded: &RecordedEvent, event: &str) -> Result<bool, serde_json::Error> {
    thread_local! {
        static WIRE_TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let same_text = WIRE_TEXT.with_borrow_mut(|text| {
        text.clear();
        recorded.write_wire_json(text);
        text.as_slice() == event.as_bytes()
    });
    if same_text {
        return Ok(true);
    }
    let value: serde_json::Value = serde_json::from_str(event)?;
    Ok(recorded.wire_json() == value)
}

/// Verifies a checkpoint note: the log's signature with `key` and, with a policy, a quorum
/// of witness cosignatures. Returns the checkpoint and the cosignatures that count.
pub fn verify_checkpoint(key: &VerifierKey, witnesses: Option<&WitnessPolicy>, note: &str) -> Result<(Checkpoint, Vec<Cosignature>), BundleFailure> {
    let parsed = Note::parse(note).map_err(|e| general(format!("checkpoint: {e}")))?;
    let checkpoint = key.verify_note(&parsed).map_err(|e| general(format!("checkpoint: {e}")))?;
    let cosignatures = match witnesses {
        Some(policy) => policy.check(&parsed).map_err(|e| general(format!("checkpoint cosignatures: {e}")))?,
        None => vec![],
    };
    Ok((checkpoint, cosignatures))
}

/// What the in-order checks need of an event line checked on its own
/// ([`BundleVerifier::check_event_line`]): a few dozen bytes, with its Merkle leaf already
/// hashed, so that a caller checking lines on several threads hands the one thread that
/// links them little to read and nothing to free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedLine {
    pub seq: u64,
    pub hash: Digest,
    pub prev_hash: Digest,
    pub recorded_at: crate::Timestamp,
    /// [`merkle::leaf_hash`] of `hash`.
    pub leaf: Digest,
}

impl CheckedLine {
    fn of(recorded: &RecordedEvent) -> CheckedLine {
        let event = &recorded.event;
        CheckedLine { seq: event.seq, hash: recorded.hash, prev_hash: event.prev_hash, recorded_at: event.recorded_at, leaf: merkle::leaf_hash(&recorded.hash) }
    }
}

/// Verifies a bundle line by line, in O(log n) memory.
pub struct BundleVerifier {
    key: Option<VerifierKey>,
    root_at: Option<u64>,
    header: Option<Header>,
    frontier: Frontier,
    next_seq: u64,
    last_hash: Option<Digest>,
    root_at_requested: Option<Digest>,
    done: Option<Verified>,
    last_recorded_at: Option<crate::Timestamp>,
    witnesses: Option<WitnessPolicy>,
}

impl BundleVerifier {
    /// `key`: the verifier key the auditor trusts (None: the one in the header, trusted on
    /// first use). `root_at`: a tree size whose root the caller wants (to compare with a
    /// kept checkpoint), computed while streaming a bundle that starts at seq 1.
    pub fn new(key: Option<VerifierKey>, root_at: Option<u64>) -> BundleVerifier {
        BundleVerifier {
            key,
            root_at,
            header: None,
            frontier: Frontier::new(),
            next_seq: 1,
            last_hash: None,
            root_at_requested: None,
            done: None,
            last_recorded_at: None,
            witnesses: None,
        }
    }

    /// Also requires the checkpoint to carry a quorum of these witnesses' cosignatures.
    pub fn with_witnesses(mut self, policy: WitnessPolicy) -> BundleVerifier {
        self.witnesses = Some(policy);
        self
    }

    /// Feeds one line (without its newline).
    pub fn line(&mut self, line: &str) -> Result<(), BundleFailure> {
        if self.done.is_some() {
            return Err(general("text after the checkpoint line"));
        }
        let Some(header) = &self.header else {
            let header: Header = serde_json::from_str(line).map_err(|e| general(format!("header: {e}")))?;
            if header.format != FORMAT || header.version != VERSION {
                return Err(general(format!("not a {FORMAT} version {VERSION} bundle")));
            }
            // Any numbers may come in: no arithmetic that can overflow.
            if header.from == 0 || header.from > header.to.saturating_add(1) {
                return Err(general("the header's range is not a range"));
            }
            let in_header = VerifierKey::parse(&header.verifier_key).map_err(|e| general(format!("header: {e}")))?;
            match &self.key {
                Some(k) if *k != in_header => return Err(general("the bundle names another verifier key than the one given")),
                Some(_) => {}
                None => self.key = Some(in_header),
            }
            if header.origin != self.key.as_ref().expect("set above").name {
                return Err(general("the header's origin is not the key's name"));
            }
            self.next_seq = header.from;
            self.header = Some(header);
            return Ok(());
        };
        let header = header.clone();
        if self.next_seq <= header.to {
            return self.event(line, &header);
        }
        self.checkpoint(line, &header)
    }

    /// While event lines are due: the seq of the next one and how many are left.
    pub fn events_due(&self) -> Option<(u64, u64)> {
        let header = self.header.as_ref()?;
        (self.done.is_none() && self.next_seq <= header.to).then(|| (self.next_seq, header.to - self.next_seq + 1))
    }

    /// The checks of one event line that need nothing but the line and its seq (parse,
    /// decode, hash, JSON against the bytes): independent of every other line, so a caller
    /// may run them for many lines at once, then hand each result to
    /// [`BundleVerifier::accept_event`] in seq order.
    ///
    /// A line is first tried as exported ([`exported_line`]), which costs a decode that the
    /// field-by-field check repeats when the line is spelled otherwise. After a run of
    /// [`EXPORTED_MISSES_MAX`] such lines on this thread (a bundle re-serialized by some
    /// other tool), only one line in [`EXPORTED_RETRY_EVERY`] is tried, so that such a
    /// bundle costs one decode a line, not two; a line found as exported ends the run. The
    /// verdict is the same either way.
    pub fn check_event_line(seq: u64, line: &str) -> Result<CheckedLine, BundleFailure> {
        thread_local! {
            static EXPORTED_MISSES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        let misses = EXPORTED_MISSES.get();
        if misses < EXPORTED_MISSES_MAX || seq % EXPORTED_RETRY_EVERY == 0 {
            match exported_line(seq, line) {
                Some(checked) => {
                    EXPORTED_MISSES.set(0);
                    return Ok(checked);
                }
                None => EXPORTED_MISSES.set(misses.saturating_add(1)),
            }
        }
        let parsed: EventLineIn<'_> = serde_json::from_str(line).map_err(|e| at(seq, format!("not an event line: {e}")))?;
        let fields = EventFields { line_seq: parsed.seq, hash: &parsed.hash, prev_hash: &parsed.prev_hash, canonical: &parsed.canonical, event: parsed.event.get() };
        check_event_fields(seq, &fields).map(|recorded| CheckedLine::of(&recorded))
    }

    /// The in-order checks of the next event (checked by [`BundleVerifier::check_event_line`]
    /// with the seq [`BundleVerifier::events_due`] gave): the link to the one before, time
    /// not going back, and the tree.
    pub fn accept_event(&mut self, checked: &CheckedLine) -> Result<(), BundleFailure> {
        let Some(from) = self.header.as_ref().map(|h| h.from) else { return Err(general("an event line before the header")) };
        if self.events_due().map(|(seq, _)| seq) != Some(checked.seq) {
            return Err(at(checked.seq, "an event out of its place in the bundle"));
        }
        self.link(checked, from)
    }

    fn event(&mut self, line: &str, header: &Header) -> Result<(), BundleFailure> {
        let checked = Self::check_event_line(self.next_seq, line)?;
        self.link(&checked, header.from)
    }

    /// `from`: the header's first seq.
    fn link(&mut self, checked: &CheckedLine, from: u64) -> Result<(), BundleFailure> {
        let seq = self.next_seq;
        let expected_prev = match (self.last_hash, from) {
            (Some(h), _) => Some(h),
            (None, 1) => Some(Digest::ZERO),
            (None, _) => None, // A range: the link to seq from-1 is proven by the proofs.
        };
        if expected_prev.is_some_and(|p| p != checked.prev_hash) {
            return Err(at(seq, "prev_hash does not link to the previous event"));
        }
        if self.last_recorded_at.is_some_and(|t| checked.recorded_at < t) {
            return Err(at(seq, "recorded_at goes back in time"));
        }
        if from == 1 {
            self.frontier.push_leaf(checked.leaf, |_, _, _| {});
            if Some(seq) == self.root_at {
                self.root_at_requested = Some(self.frontier.root());
            }
        }
        self.last_hash = Some(checked.hash);
        self.last_recorded_at = Some(checked.recorded_at);
        self.next_seq += 1;
        Ok(())
    }

    fn checkpoint(&mut self, line: &str, header: &Header) -> Result<(), BundleFailure> {
        let parsed: CheckpointLine = serde_json::from_str(line).map_err(|e| general(format!("checkpoint line: {e}")))?;
        let key = self.key.as_ref().expect("the header set the key");
        let (checkpoint, cosignatures) = verify_checkpoint(key, self.witnesses.as_ref(), &parsed.checkpoint)?;
        if checkpoint.size < header.to {
            return Err(general(format!("the checkpoint (size {}) does not cover the bundle (to {})", checkpoint.size, header.to)));
        }
        if self.root_at == Some(0) {
            self.root_at_requested = Some(merkle::empty_root());
        }
        let whole = header.from == 1 && header.to == checkpoint.size;
        let mut consistent_from = None;
        match (&parsed.proofs, whole) {
            (None, true) => {
                let root = self.frontier.root();
                if root != checkpoint.root {
                    return Err(general(format!("the events' Merkle root is {root}, the checkpoint says {}", checkpoint.root)));
                }
            }
            (Some(_), true) => return Err(general("a whole-ledger bundle carries no proofs")),
            (None, false) => return Err(general("a partial bundle needs proofs")),
            (Some(proofs), false) => consistent_from = self.check_proofs(proofs, header, &checkpoint)?,
        }
        self.done = Some(Verified {
            from: header.from,
            to: header.to,
            checkpoint,
            note: parsed.checkpoint,
            root_at_requested: self.root_at_requested,
            consistent_from,
            cosignatures,
        });
        Ok(())
    }

    fn check_proofs(&self, proofs: &Proofs, header: &Header, checkpoint: &Checkpoint) -> Result<Option<(u64, Digest)>, BundleFailure> {
        let hashes = |list: &[String]| list.iter().map(|h| digest(h, "a proof hash")).collect::<Result<Vec<_>, _>>();
        match (&proofs.inclusion, self.last_hash) {
            (Some(p), Some(last)) => {
                if p.seq != header.to || p.tree_size != checkpoint.size {
                    return Err(general("the inclusion proof is not of the last event in the checkpoint's tree"));
                }
                merkle::verify_inclusion(&last, p.seq - 1, p.tree_size, &hashes(&p.hashes)?, &checkpoint.root)
                    .map_err(|e| at(header.to, format!("not in the checkpoint's tree: {e}")))?;
            }
            (None, None) => {}
            _ => return Err(general("an inclusion proof goes with a non-empty range")),
        }
        match &proofs.consistency {
            Some(p) => {
                if p.from.checked_add(1) != Some(header.from) || p.to != checkpoint.size {
                    return Err(general("the consistency proof is not from the tree before the bundle to the checkpoint's"));
                }
                let from_root = digest(&p.from_root, "from_root")?;
                merkle::verify_consistency(p.from, p.to, &from_root, &checkpoint.root, &hashes(&p.hashes)?)
                    .map_err(|e| general(format!("the consistency proof fails: {e}")))?;
                Ok(Some((p.from, from_root)))
            }
            None if header.from > 1 => Err(general("a bundle not starting at seq 1 needs a consistency proof")),
            None => Ok(None),
        }
    }

    /// Ends the bundle: it must have had its checkpoint line.
    pub fn finish(self) -> Result<Verified, BundleFailure> {
        if let Some(header) = &self.header
            && self.next_seq <= header.to {
                return Err(at(self.next_seq, "missing: the bundle ends before it"));
            }
        self.done.ok_or_else(|| general("no checkpoint line"))
    }
}
