//! Signed checkpoints, their history, export bundles and evidence packs of a ledger.
//!
//! The Ed25519 key lives in the data directory (`checkpoint-signing.key`, the 32-byte seed
//! in hex, file mode 0600), created on first use unless a key file is given. The origin
//! (which is also the key's name in notes) defaults to `cledger-` and 8 hex digits of the
//! public key's BLAKE3 hash, so two ledgers never share an origin by accident.
//!
//! Every checkpoint issued is kept in its own sled tree, `checkpoints`: tree size (u64
//! big-endian) → the signed note (UTF-8). Witnesses' cosignatures are added to the note of
//! its size later ([`Ledger::attach_cosignatures`]); the checkpoint text never changes. A
//! store from before the history existed had only its latest note, under `Mcheckpoint` in
//! the ledger tree: it becomes the history's first entry the first time history is read.

use crate::io::Op;
use crate::{keys, store, Ledger, ProofError, ReadError};
use events::bundle::{self, CheckpointLine, ConsistencyProof, Header, InclusionProof, Proofs};
use events::checkpoint::{Checkpoint, Note, NoteSigner, VerifierKey};
use events::{evidence, ContractId, Date, Stream};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "checkpoint-signing.key";
/// Name of the sled tree of the checkpoint history.
pub const HISTORY_TREE: &str = "checkpoints";
/// Most history entries a backwards search looks at.
const HISTORY_SCAN_MAX: usize = 100_000;

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: expected 64 hex digits (an Ed25519 seed)")]
    Malformed(PathBuf),
    #[error("cannot read the key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot create the key {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("no randomness for a key: {0}")]
    Randomness(getrandom::Error),
    #[error("--origin: {0}")]
    Origin(String),
}

/// The 32-byte seed in `path` (64 hex digits). With `create`, a missing file is made with a
/// random seed (mode 0600, fsynced with its directory) first.
pub fn load_or_create_seed(path: &Path, create: bool) -> Result<[u8; 32], KeyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| KeyError::Malformed(path.into()))?;
            Ok(seed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => create_key(path),
        Err(source) => Err(KeyError::Read { path: path.into(), source }),
    }
}

/// Loads the signing key (`key_file`, or the data directory's, created if missing).
pub fn load_or_create_signer(data: &Path, key_file: Option<&Path>, origin: Option<&str>) -> Result<NoteSigner, KeyError> {
    let default_path = data.join(KEY_FILE);
    let seed = load_or_create_seed(key_file.unwrap_or(&default_path), key_file.is_none())?;
    let origin = match origin {
        Some(origin) => origin.to_string(),
        None => default_name("cledger", &seed)?,
    };
    NoteSigner::new(&origin, seed).map_err(|e| KeyError::Origin(e.to_string()))
}

/// `<prefix>-` and 8 hex digits of the BLAKE3 hash of the seed's Ed25519 public key: a
/// name that differs for every key.
pub fn default_name(prefix: &str, seed: &[u8; 32]) -> Result<String, KeyError> {
    let probe = NoteSigner::new("probe", *seed).map_err(|e| KeyError::Origin(e.to_string()))?;
    Ok(format!("{prefix}-{}", &hex::encode(blake3::hash(probe.verifier().public.as_bytes()).as_bytes())[..8]))
}

fn create_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyError::Randomness)?;
    let create = |source| KeyError::Create { path: path.into(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(create)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(create)?;
    file.write_all(format!("{}\n", hex::encode(seed)).as_bytes()).map_err(create)?;
    // The key must survive a crash as surely as what it signs.
    file.sync_all().map_err(create)?;
    crate::durable::sync_dir(dir).map_err(create)?;
    tracing::info!("created signing key {}", path.display());
    Ok(seed)
}

/// Why a checkpoint could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("storage: {0}")]
    Storage(#[from] ReadError),
    /// Other issuers kept replacing the latest checkpoint: none was stored.
    #[error("the latest checkpoint changed {0} times while this one was being stored; it was not stored")]
    Contended(usize),
    #[error("cannot sync the checkpoint to disk: {0}")]
    Sync(std::io::Error),
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("storage: {0}")]
    Storage(#[from] ReadError),
    #[error("event {0} is missing")]
    Missing(u64),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Why cosignatures cannot be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("no checkpoint of size {0} was issued")]
    NotIssued(u64),
    #[error("the cosigned note is not the issued checkpoint with more signatures: {0}")]
    NotTheSame(String),
    #[error("{0}")]
    Storage(ReadError),
    #[error("cannot sync the checkpoint to disk: {0}")]
    Sync(std::io::Error),
}

/// Why an evidence pack cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("no contract `{0}` known at seq {1}")]
    UnknownContract(ContractId, u64),
    #[error("known_at {known_at} is beyond the checkpoint (size {size})")]
    BeyondCheckpoint { known_at: u64, size: u64 },
    #[error("the contract's events do not fold: {0}")]
    Fold(String),
    #[error("the figures overflow: {0}")]
    Overflow(String),
    #[error("{0}")]
    Proof(#[from] ProofError),
    #[error("{0}")]
    Storage(#[from] ReadError),
}

/// The checkpoint and note of a stored `Mcheckpoint` value.
fn stored_checkpoint(bytes: &[u8]) -> Result<(Checkpoint, String), ReadError> {
    let note = String::from_utf8(bytes.to_vec()).map_err(|_| crate::corrupt(0, "stored checkpoint is not UTF-8"))?;
    let text = note.split("\n\n").next().unwrap_or_default();
    let checkpoint = Checkpoint::parse(&format!("{text}\n")).map_err(|e| crate::corrupt(0, &e.to_string()))?;
    Ok((checkpoint, note))
}

fn stored_size(bytes: &[u8]) -> Result<u64, ReadError> {
    stored_checkpoint(bytes).map(|(c, _)| c.size)
}

/// Attempts to store a checkpoint before giving up: each lost attempt means another issuer
/// stored one in between, and there are few issuers; the bound turns a livelock into an
/// error instead of an unstored "success".
const CHECKPOINT_ATTEMPTS_MAX: usize = 64;

/// How one attempt to store a checkpoint as the latest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    Stored,
    /// A checkpoint at least as large is already the latest: nothing to store.
    Superseded,
    /// Another issuer replaced the latest between the read and the swap.
    Lost,
}

/// Runs `attempt` until it stores or is superseded, at most `attempts_max` times.
fn store_forward(attempts_max: usize, mut attempt: impl FnMut() -> Result<Attempt, CheckpointError>) -> Result<(), CheckpointError> {
    for _ in 0..attempts_max {
        match attempt()? {
            Attempt::Stored | Attempt::Superseded => return Ok(()),
            Attempt::Lost => {}
        }
    }
    Err(CheckpointError::Contended(attempts_max))
}

/// A checkpoint the ledger signed (and witnesses may have cosigned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub checkpoint: Checkpoint,
    pub note: String,
}

impl Issued {
    /// A stored note (checked for shape, not for signatures).
    fn from_stored(size_key: Option<u64>, bytes: &[u8]) -> Result<Issued, ReadError> {
        let damaged = |why: String| crate::corrupt(0, &format!("stored checkpoint: {why}"));
        let note = String::from_utf8(bytes.to_vec()).map_err(|_| damaged("not UTF-8".into()))?;
        let parsed = Note::parse(&note).map_err(|e| damaged(e.to_string()))?;
        let checkpoint = Checkpoint::parse(&parsed.text).map_err(|e| damaged(e.to_string()))?;
        if size_key.is_some_and(|s| s != checkpoint.size) {
            return Err(damaged(format!("stored under size {}, of size {}", size_key.unwrap_or(0), checkpoint.size)));
        }
        Ok(Issued { checkpoint, note })
    }
}

/// The lines of an export that are not events, computed up front: the events between
/// them are streamed by the caller (`Ledger::events_after`, `bundle::event_line`).
#[derive(Clone, Debug)]
pub struct ExportPlan {
    pub header: String,
    pub from: u64,
    pub to: u64,
    pub last_line: String,
}

impl Ledger {
    /// The history tree, with an old store's `Mcheckpoint` moved in on first use.
    fn history(&self) -> Result<sled::Tree, ReadError> {
        let history = self.db.open_tree(HISTORY_TREE)?;
        if history.is_empty()
            && let Some(bytes) = self.shared.tree.get(keys::META_CHECKPOINT)?
        {
            let issued = Issued::from_stored(None, &bytes)?;
            // Racing openers insert the same bytes: either wins.
            let _ = history.compare_and_swap(issued.checkpoint.size.to_be_bytes(), None as Option<&[u8]>, Some(bytes))?;
        }
        Ok(history)
    }

    /// Signs a checkpoint of the durable head and remembers it as the latest. Returned only
    /// once the latest stored checkpoint is this one or a larger one, synced to disk.
    pub fn issue_checkpoint(&self, signer: &NoteSigner) -> Result<Issued, CheckpointError> {
        let size = self.head().seq;
        self.issue_checkpoint_at(signer, size)
    }

    fn issue_checkpoint_at(&self, signer: &NoteSigner, size: u64) -> Result<Issued, CheckpointError> {
        let root = self.merkle_root(size)?;
        let checkpoint = Checkpoint { origin: signer.name().to_string(), size, root };
        let note = signer.sign(&checkpoint);
        let storage = |e: sled::Error| CheckpointError::Storage(e.into());
        // Only ever move the latest forward: compare-and-swap, so two issuers racing keep
        // the larger.
        store_forward(CHECKPOINT_ATTEMPTS_MAX, || {
            let current = self.shared.tree.get(keys::META_CHECKPOINT).map_err(storage)?;
            if let Some(bytes) = &current
                && stored_size(bytes)? >= size {
                    return Ok(Attempt::Superseded);
                }
            let swapped = self
                .shared
                .io
                .run(Op::StoreCheckpoint, || self.shared.tree.compare_and_swap(keys::META_CHECKPOINT, current, Some(note.as_bytes())))
                .map_err(storage)?;
            Ok(if swapped.is_ok() { Attempt::Stored } else { Attempt::Lost })
        })?;
        // Every checkpoint is kept in the history: one of this size kept before (the same
        // text, the same signature, perhaps cosigned since) stays as it is.
        let history = self.history()?;
        let kept = self
            .shared
            .io
            .run(Op::StoreCheckpoint, || history.compare_and_swap(size.to_be_bytes(), None as Option<&[u8]>, Some(note.as_bytes())))
            .map_err(storage)?;
        let issued = match kept {
            Ok(()) => Issued { checkpoint, note },
            Err(existing) => {
                let existing = Issued::from_stored(Some(size), existing.current.as_deref().unwrap_or_default())?;
                if existing.checkpoint != checkpoint {
                    return Err(CheckpointError::Storage(crate::corrupt(size, "a kept checkpoint of this size has another root or origin")));
                }
                existing
            }
        };
        // A checkpoint is answered and published only once it (or a larger one) would
        // survive a crash.
        self.shared.io.run(Op::SyncCheckpoint, || self.sync_to_disk()).map_err(CheckpointError::Sync)?;
        Ok(issued)
    }

    /// Replaces the kept note of `cosigned`'s size by `cosigned`, which must be the same
    /// checkpoint text with every signature line of the kept note and more.
    pub fn attach_cosignatures(&self, cosigned: &str) -> Result<Issued, AttachError> {
        let parsed = Note::parse(cosigned).map_err(|e| AttachError::NotTheSame(e.to_string()))?;
        let checkpoint = Checkpoint::parse(&parsed.text).map_err(|e| AttachError::NotTheSame(e.to_string()))?;
        let history = self.history().map_err(AttachError::Storage)?;
        let key = checkpoint.size.to_be_bytes();
        let storage = |e: sled::Error| AttachError::Storage(e.into());
        let current = history.get(key).map_err(storage)?.ok_or(AttachError::NotIssued(checkpoint.size))?;
        let kept = Issued::from_stored(Some(checkpoint.size), &current).map_err(AttachError::Storage)?;
        let kept_note = Note::parse(&kept.note).map_err(|e| AttachError::NotTheSame(e.to_string()))?;
        if kept_note.text != parsed.text || !kept_note.signatures.iter().all(|s| parsed.signatures.contains(s)) {
            return Err(AttachError::NotTheSame("its text or one of the kept signatures differs".into()));
        }
        // Only this replaces notes, from one task at a time: a lost race is a caller's bug.
        self.shared
            .io
            .run(Op::StoreCheckpoint, || history.compare_and_swap(key, Some(current), Some(cosigned.as_bytes())))
            .map_err(storage)?
            .map_err(|_| AttachError::NotTheSame("the kept note changed meanwhile".into()))?;
        self.shared.io.run(Op::SyncCheckpoint, || self.sync_to_disk()).map_err(AttachError::Sync)?;
        Ok(Issued { checkpoint, note: cosigned.to_string() })
    }

    /// The latest checkpoint kept, if any (as stored; not re-verified).
    pub fn latest_checkpoint(&self) -> Result<Option<Issued>, ReadError> {
        self.latest_checkpoint_where(|_| true)
    }

    /// The latest kept checkpoint for which `accept` holds (looking at the latest 100,000).
    pub fn latest_checkpoint_where(&self, mut accept: impl FnMut(&Issued) -> bool) -> Result<Option<Issued>, ReadError> {
        for item in self.history()?.iter().rev().take(HISTORY_SCAN_MAX) {
            let (key, value) = item?;
            let issued = Issued::from_stored(keys::u64_value(&key), &value)?;
            if accept(&issued) {
                return Ok(Some(issued));
            }
        }
        Ok(None)
    }

    /// Up to `limit` kept checkpoints of size `from` and above, smallest first.
    pub fn checkpoints_from(&self, from: u64, limit: usize) -> Result<Vec<Issued>, ReadError> {
        let mut out = vec![];
        for item in self.history()?.range(from.to_be_bytes()..).take(limit) {
            let (key, value) = item?;
            out.push(Issued::from_stored(keys::u64_value(&key), &value)?);
        }
        Ok(out)
    }

    /// Plans an export of events `from..=to` (default: all) with a fresh checkpoint of the
    /// durable head and, unless the bundle is the whole ledger, the proofs that tie it to it.
    pub fn plan_export(&self, signer: &NoteSigner, from: Option<u64>, to: Option<u64>) -> Result<ExportPlan, CheckpointError> {
        let issued = self.issue_checkpoint(signer)?;
        self.plan_export_with(&issued, &signer.verifier(), from, to).map_err(CheckpointError::Proof)
    }

    /// Plans an export ending at a given kept checkpoint (`to` defaults to its size).
    pub fn plan_export_with(&self, issued: &Issued, key: &VerifierKey, from: Option<u64>, to: Option<u64>) -> Result<ExportPlan, ProofError> {
        let size = issued.checkpoint.size;
        let from = from.unwrap_or(1).max(1);
        let to = to.unwrap_or(size);
        if to > size || from > to + 1 {
            return Err(ProofError::OutOfRange(format!("cannot export {from} to {to} with a checkpoint of {size} events")));
        }
        let whole = from == 1 && to == size;
        let proofs = if whole {
            None
        } else {
            let inclusion = if to >= from {
                Some(InclusionProof { seq: to, tree_size: size, hashes: bundle::hexes(&self.inclusion_proof(to, size)?) })
            } else {
                None
            };
            let consistency = if from > 1 {
                Some(ConsistencyProof {
                    from: from - 1,
                    to: size,
                    from_root: self.merkle_root(from - 1)?.to_hex(),
                    hashes: bundle::hexes(&self.consistency_proof(from - 1, size)?),
                })
            } else {
                None
            };
            Some(Proofs { inclusion, consistency })
        };
        let header = Header {
            format: bundle::FORMAT.into(),
            version: bundle::VERSION,
            origin: key.name.clone(),
            verifier_key: key.to_string(),
            from,
            to,
        };
        Ok(ExportPlan {
            header: bundle::header_line(&header),
            from,
            to,
            last_line: bundle::checkpoint_line(&CheckpointLine { checkpoint: issued.note.clone(), proofs }),
        })
    }

    /// Plans and writes a whole export bundle.
    pub fn export(&self, signer: &NoteSigner, from: Option<u64>, to: Option<u64>, out: &mut impl Write) -> Result<ExportPlan, ExportError> {
        let plan = self.plan_export(signer, from, to)?;
        self.write_export(&plan, out)?;
        Ok(plan)
    }

    /// Writes the bundle of a plan: its header, its events a page at a time, its last line.
    /// The events are read and checked ahead ([`store::decode_in_order`]) and each page's
    /// lines rendered on every core by a thread of their own, while this one writes the pages
    /// before, in order (at most [`EXPORT_PAGES_AHEAD`] waiting). A missing event is an
    /// error, never a silently shorter bundle.
    pub fn write_export(&self, plan: &ExportPlan, out: &mut impl Write) -> Result<(), ExportError> {
        writeln!(out, "{}", plan.header)?;
        // Never past the durable head: nothing is visible before it is acknowledged.
        let head = self.head().seq;
        if plan.from <= plan.to && plan.to > head {
            return Err(ExportError::Missing(head + 1));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Vec<u8>>, ReadError>>(EXPORT_PAGES_AHEAD);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut page = Vec::with_capacity(EXPORT_PAGE_EVENTS);
                let mut stopped = false;
                let read = store::decode_in_order(&self.shared.tree, plan.from, plan.to, |recorded| {
                    page.push(recorded);
                    if page.len() == EXPORT_PAGE_EVENTS {
                        stopped = tx.send(Ok(render_lines(&page))).is_err();
                        page.clear();
                        if stopped {
                            return Err(ReadError::Corrupt(crate::VerifyFailure { seq: 0, reason: "the export's writer stopped".into() }));
                        }
                    }
                    Ok(())
                });
                let last = read.map(|()| render_lines(&page));
                if !stopped {
                    let _ = tx.send(last);
                }
            });
            for runs in rx {
                for text in runs? {
                    out.write_all(&text)?;
                }
            }
            Ok::<(), ExportError>(())
        })?;
        writeln!(out, "{}", plan.last_line)?;
        out.flush()?;
        Ok(())
    }

    /// The lines of an evidence pack (FORMAT.md, "Evidence pack") of `contract` as of
    /// `as_of` known at `known_at` (default: the checkpoint's size), every event proven
    /// against `issued`. The report is computed by folding exactly the pack's events, as a
    /// verifier will.
    pub fn evidence_pack(
        &self,
        issued: &Issued,
        key: &VerifierKey,
        contract: &ContractId,
        as_of: Date,
        known_at: Option<u64>,
        granularity: projections::Granularity,
    ) -> Result<Vec<String>, EvidenceError> {
        let size = issued.checkpoint.size;
        let known_at = known_at.unwrap_or(size);
        if known_at > size {
            return Err(EvidenceError::BeyondCheckpoint { known_at, size });
        }
        let stream = Stream::Contract(contract.clone());
        let mut events = vec![];
        let mut after = 0;
        loop {
            let page = self.stream_events(&stream, after, 1_000)?;
            let Some(last) = page.last() else { break };
            after = last.event.version;
            let done = page.len() < 1_000 || last.seq() > known_at;
            events.extend(page.into_iter().filter(|e| e.seq() <= known_at));
            if done {
                break;
            }
        }
        if events.is_empty() {
            return Err(EvidenceError::UnknownContract(contract.clone(), known_at));
        }
        let mut book = projections::Book::new();
        for e in &events {
            book.apply(e).map_err(|f| EvidenceError::Fold(f.to_string()))?;
        }
        let state = book.contracts.get(contract).ok_or_else(|| EvidenceError::UnknownContract(contract.clone(), known_at))?;
        let at = projections::AsOf { date: as_of, known_at };
        let report = projections::report::revenue_json(state, &at, granularity).map_err(|o| EvidenceError::Overflow(o.to_string()))?;
        let manifest = evidence::Manifest {
            format: evidence::FORMAT.into(),
            version: evidence::VERSION,
            origin: key.name.clone(),
            verifier_key: key.to_string(),
            contract_id: contract.to_string(),
            as_of: as_of.to_string(),
            known_at,
            granularity: granularity.as_str().to_string(),
            checkpoint: issued.note.clone(),
            seqs: events.iter().map(|e| e.seq()).collect(),
        };
        let mut lines = Vec::with_capacity(events.len() + 2);
        lines.push(evidence::manifest_line(&manifest));
        for e in &events {
            lines.push(evidence::event_line(e, &self.inclusion_proof(e.seq(), size)?));
        }
        lines.push(evidence::report_line(&report));
        Ok(lines)
    }
}

/// Events of an export rendered at once, and pages of their lines that may wait for the
/// writer: a bound of about 3 × 4,096 lines (of at most a few hundred KiB each) in memory.
const EXPORT_PAGE_EVENTS: usize = 4_096;
const EXPORT_PAGES_AHEAD: usize = 2;

/// The bundle lines of `events`, each with its newline, rendered on every core into one
/// buffer per run of events (no string per line), in order.
fn render_lines(events: &[events::RecordedEvent]) -> Vec<Vec<u8>> {
    use rayon::prelude::*;
    const RENDER_RUN_EVENTS: usize = 256;
    events
        .par_chunks(RENDER_RUN_EVENTS)
        .map(|run| {
            let mut text = Vec::with_capacity(run.len() * 1024);
            for recorded in run {
                bundle::write_event_line(recorded, &mut text);
                text.push(b'\n');
            }
            text
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_races_end_in_an_error_not_an_unstored_success() {
        let mut attempts = 0;
        let result = store_forward(CHECKPOINT_ATTEMPTS_MAX, || {
            attempts += 1;
            Ok(Attempt::Lost)
        });
        assert!(matches!(result, Err(CheckpointError::Contended(CHECKPOINT_ATTEMPTS_MAX))), "{result:?}");
        assert_eq!(attempts, CHECKPOINT_ATTEMPTS_MAX);
    }

    #[test]
    fn a_won_or_superseded_attempt_ends_the_loop() {
        for outcome in [Attempt::Stored, Attempt::Superseded] {
            let mut attempts = 0;
            let result = store_forward(CHECKPOINT_ATTEMPTS_MAX, || {
                attempts += 1;
                Ok(if attempts < 3 { Attempt::Lost } else { outcome })
            });
            assert!(result.is_ok());
            assert_eq!(attempts, 3);
        }
    }
}
