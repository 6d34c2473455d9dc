//! The auditor's commands: `verify` (a data directory, an export bundle, an evidence pack,
//! or a server), `export` (a bundle, or a contract's evidence pack), `prove`,
//! `verify-proof`, `key`.
//!
//! A kept checkpoint (`--trusted-checkpoint FILE`) makes verification cumulative: the new
//! checkpoint must extend the kept one (same root at the kept size), a shorter ledger is a
//! rollback, and after success the file holds the new checkpoint.

use crate::cli::{open_ledger, progress, BoundedLines};
use events::bundle::{BundleVerifier, Verified};
use events::checkpoint::{Note, NoteSigner, VerifierKey};
use events::cosignature::{WitnessKey, WitnessPolicy};
use events::evidence::EvidenceVerifier;
use events::{ContractId, Date, Digest};
use ledger::checkpoints::{load_or_create_signer, Issued};
use ledger::VerifyError;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub struct VerifyArgs {
    pub file: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub url: Option<String>,
    pub key: Option<String>,
    pub trusted: Option<PathBuf>,
    pub token: Option<String>,
    pub origin: Option<String>,
    /// `--witness VKEY`: witnesses whose cosignatures count.
    pub witnesses: Vec<String>,
    /// `--witness-quorum N` (default: every witness given).
    pub witness_quorum: Option<usize>,
    /// Without `--key`: trust the key the bundle names (with a warning).
    pub trust_bundle_key: bool,
}

/// The witness policy of `--witness VKEY... --witness-quorum N`, if any.
pub fn witness_policy(witnesses: &[String], quorum: Option<usize>) -> Result<Option<WitnessPolicy>, String> {
    if witnesses.is_empty() {
        return match quorum {
            Some(_) => Err("--witness-quorum needs --witness VKEY".into()),
            None => Ok(None),
        };
    }
    let keys = witnesses.iter().map(|w| WitnessKey::parse(&read_text(w, "--witness")?).map_err(|e| format!("--witness {w}: {e}"))).collect::<Result<Vec<_>, _>>()?;
    let quorum = quorum.unwrap_or(keys.len());
    WitnessPolicy::new(keys, quorum).map(Some).map_err(|e| format!("--witness-quorum: {e}"))
}

/// A key given as text, or as a file holding it.
fn read_text(value: &str, flag: &str) -> Result<String, String> {
    if Path::new(value).is_file() {
        return std::fs::read_to_string(value).map(|t| t.trim().to_string()).map_err(|e| format!("{flag} {value}: {e}"));
    }
    Ok(value.trim().to_string())
}

/// Prints the verdict: `message` starts with "at seq N: " or is a sentence of its own.
fn failed(message: impl std::fmt::Display) -> Result<ExitCode, String> {
    let message = message.to_string();
    if message.starts_with("at seq ") {
        println!("FAILED {message}");
    } else {
        println!("FAILED: {message}");
    }
    Ok(ExitCode::from(1))
}

/// `--key` is the vkey text, or a file holding it.
fn read_key(key: &str) -> Result<VerifierKey, String> {
    VerifierKey::parse(&read_text(key, "--key")?).map_err(|e| format!("--key: {e}"))
}

/// The kept checkpoint, verified with `key`, if the file exists.
fn read_trusted(path: &Path, key: &VerifierKey) -> Result<Option<events::checkpoint::Checkpoint>, String> {
    match std::fs::read_to_string(path) {
        Ok(note) => key.verify(&note).map(Some).map_err(|e| format!("the kept checkpoint {} does not verify: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Checks the new checkpoint against the kept one; `root_at_kept` is the root of the tree
/// of the kept size as the verified data has it.
fn extends(kept: &events::checkpoint::Checkpoint, new_size: u64, root_at_kept: Option<Digest>) -> Result<(), String> {
    if kept.size > new_size {
        return Err(format!("rollback: you kept a checkpoint of {} events, the ledger now has {new_size}", kept.size));
    }
    match root_at_kept {
        Some(root) if root == kept.root => Ok(()),
        Some(root) => Err(format!("the ledger rewrote history: at size {} its root is {root}, your kept checkpoint says {}", kept.size, kept.root)),
        None => Err(format!("this bundle cannot be checked against your kept checkpoint (size {}): export from seq {} on", kept.size, kept.size + 1)),
    }
}

fn keep(path: Option<&Path>, note: &str) -> Result<(), String> {
    if let Some(path) = path {
        std::fs::write(path, note).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

pub fn verify(args: VerifyArgs) -> Result<ExitCode, String> {
    let sources = [args.file.is_some(), args.data.is_some(), args.url.is_some()].iter().filter(|x| **x).count();
    if sources != 1 {
        return Err("verify one thing: an export FILE, --data DIR, or --url URL".into());
    }
    let policy = witness_policy(&args.witnesses, args.witness_quorum)?;
    if let Some(data) = &args.data {
        return verify_data(data, &args, policy.as_ref());
    }
    let key = args.key.as_deref().map(read_key).transpose()?;
    match (&key, args.trust_bundle_key) {
        (Some(_), true) => return Err("--key or --trust-bundle-key, not both".into()),
        (Some(_), false) => {}
        (None, false) => {
            return Err("give the log's verifier key you got from its operator (--key VKEY or a file); --trust-bundle-key trusts the key the bundle names instead".into())
        }
        (None, true) => eprintln!(
            "warning: --trust-bundle-key: trusting the verifier key the bundle names itself; the signature then proves nothing about who signed unless you compare that key with one you got elsewhere"
        ),
    }
    let kept = match (&args.trusted, &key) {
        (Some(path), Some(k)) => read_trusted(path, k)?,
        (Some(_), None) => return Err("--trusted-checkpoint needs --key (the key that signed it)".into()),
        _ => None,
    };
    let reader: Box<dyn Read + Send> = match (&args.file, &args.url) {
        (Some(file), _) => Box::new(std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?),
        (_, Some(url)) => {
            let client = reqwest::blocking::Client::builder().timeout(None).build().map_err(|e| e.to_string())?;
            let mut request = client.get(format!("{}/v1/export", url.trim_end_matches('/')));
            if let Some(token) = &args.token {
                request = request.bearer_auth(token);
            }
            let response = request.send().map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url}/v1/export: {} {}", response.status(), response.text().unwrap_or_default()));
            }
            Box::new(response)
        }
        _ => unreachable!("one source, checked above"),
    };
    let mut lines = BoundedLines::new(reader, BUNDLE_LINE_BYTES_MAX);
    let first = match read_line(&mut lines) {
        Ok(first) => first.unwrap_or_default(),
        Err(message) => return failed(message),
    };
    if serde_json::from_str::<serde_json::Value>(&first).ok().and_then(|v| v["format"].as_str().map(str::to_string)).as_deref() == Some(events::evidence::FORMAT) {
        if kept.is_some() {
            return Err("an evidence pack is not checked against a kept checkpoint: verify the export for that".into());
        }
        return verify_evidence(&first, lines, key, policy);
    }
    let outcome = verify_lines(Some(first), lines, key, kept.as_ref().map(|k| k.size), policy);
    let verified = match outcome {
        Ok(v) => v,
        Err(message) => return failed(message),
    };
    if let Some(kept) = &kept {
        let root = verified.root_at_requested.or(verified.consistent_from.filter(|(s, _)| *s == kept.size).map(|(_, r)| r));
        if let Err(message) = extends(kept, verified.checkpoint.size, root) {
            return failed(message);
        }
    }
    keep(args.trusted.as_deref(), &verified.note)?;
    println!(
        "ok: events {} to {} verified; checkpoint {} size {} root {} signature valid{}{}",
        verified.from,
        verified.to,
        verified.checkpoint.origin,
        verified.checkpoint.size,
        verified.checkpoint.root,
        cosigned_by(&verified.cosignatures),
        if kept.is_some() { "; extends the kept checkpoint" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Longest line of an export bundle or evidence pack: one event is at most 64 KiB of
/// canonical bytes, so its line (base64 of them, its JSON, hashes, a proof) stays far below.
pub const BUNDLE_LINE_BYTES_MAX: usize = 1024 * 1024;

fn cosigned_by(cosignatures: &[events::cosignature::Cosignature]) -> String {
    if cosignatures.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = cosignatures.iter().map(|c| c.witness.as_str()).collect();
    format!("; cosigned by {} witness(es): {}", names.len(), names.join(", "))
}

/// One line of a bundle or pack, without its newline; `None` at the end. Lines are bounded
/// ([`BUNDLE_LINE_BYTES_MAX`]): an endless line is an error, not an endless allocation.
fn read_line<R: Read>(lines: &mut BoundedLines<R>) -> Result<Option<String>, String> {
    let line = match lines.next_line() {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("the file's {e} (no bundle line is that long)")),
    };
    let Some(line) = line.strip_suffix(b"\n") else {
        return Err("the file does not end with a newline (cut off?)".into());
    };
    String::from_utf8(line.to_vec()).map(Some).map_err(|_| "the file is not UTF-8".to_string())
}

/// Verifies a bundle from any reader: the messages name the first failing seq (or line).
pub fn verify_bundle(reader: impl Read + Send, key: Option<VerifierKey>, root_at: Option<u64>) -> Result<Verified, String> {
    verify_lines(None, BoundedLines::new(reader, BUNDLE_LINE_BYTES_MAX), key, root_at, None)
}

/// Event lines whose own checks (parse, decode, hash, JSON) run at once, on every core; the
/// links, the time order and the tree are then checked line by line in seq order, so the
/// first failure reported is the one at the lowest seq, as if read one by one.
const VERIFY_BATCH_LINES: usize = 4_096;
/// A batch of lines is closed once it holds this many bytes (so at most this plus one line
/// of [`BUNDLE_LINE_BYTES_MAX`]), whatever the lines' lengths.
const VERIFY_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches read ahead of verification: with the one being read and the one being checked,
/// a bound of four batches in memory.
const VERIFY_READ_AHEAD_BATCHES: usize = 2;

/// Lines of a bundle, without their newlines, back to back.
#[derive(Default)]
struct LineBatch {
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl LineBatch {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Line `i` of the batch, as text.
    fn line(&self, i: usize) -> Result<&str, String> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        std::str::from_utf8(&self.text[start..self.ends[i]]).map_err(|_| "the file is not UTF-8".to_string())
    }
}

/// Reads the lines of a bundle in batches (as [`read_line`] would, but UTF-8 is checked by
/// whoever uses a line), handing each to `tx`; a read error after the lines before it. Stops
/// at the end, at an error, or when nobody takes batches any more.
fn read_batches<R: Read>(mut lines: BoundedLines<R>, tx: std::sync::mpsc::SyncSender<Result<LineBatch, String>>) {
    loop {
        // Room for a batch of ordinary lines from the start: grown line by line, a batch
        // was copied a dozen times on its way to 4 MiB.
        let mut batch = LineBatch { text: Vec::with_capacity(VERIFY_BATCH_BYTES + 64 * 1024), ends: Vec::with_capacity(VERIFY_BATCH_LINES) };
        let mut error = None;
        let mut at_end = false;
        while batch.len() < VERIFY_BATCH_LINES && batch.text.len() < VERIFY_BATCH_BYTES {
            match lines.append_line(&mut batch.text) {
                Ok(Some(_)) => match batch.text.last() {
                    Some(b'\n') => {
                        batch.text.pop();
                        batch.ends.push(batch.text.len());
                    }
                    _ => {
                        error = Some("the file does not end with a newline (cut off?)".to_string());
                        break;
                    }
                },
                Ok(None) => {
                    at_end = true;
                    break;
                }
                Err(e) => {
                    error = Some(format!("the file's {e} (no bundle line is that long)"));
                    break;
                }
            }
        }
        if batch.len() > 0 && tx.send(Ok(batch)).is_err() {
            return;
        }
        if let Some(e) = error {
            let _ = tx.send(Err(e));
            return;
        }
        if at_end {
            return;
        }
    }
}

/// A line's own checks failed: it could not be read, or it is not a good event line.
enum LineFailure {
    Read(String),
    Bundle(events::bundle::BundleFailure),
}

fn verify_lines<R: Read + Send>(first: Option<String>, lines: BoundedLines<R>, key: Option<VerifierKey>, root_at: Option<u64>, policy: Option<WitnessPolicy>) -> Result<Verified, String> {
    use rayon::prelude::*;
    let mut verifier = BundleVerifier::new(key, root_at);
    if let Some(policy) = policy {
        verifier = verifier.with_witnesses(policy);
    }
    if let Some(first) = first {
        verifier.line(&first).map_err(|f| at_failure(&f))?;
    }
    // Reading runs on its own thread, ahead of the checks (a few batches at most).
    let (tx, rx) = std::sync::mpsc::sync_channel(VERIFY_READ_AHEAD_BATCHES);
    std::thread::scope(|scope| {
        scope.spawn(move || read_batches(lines, tx));
        let mut checked = Vec::with_capacity(VERIFY_BATCH_LINES);
        for batch in rx {
            let batch = batch?;
            let mut i = 0;
            while i < batch.len() {
                let Some((next_seq, due)) = verifier.events_due() else {
                    verifier.line(batch.line(i)?).map_err(|f| at_failure(&f))?;
                    i += 1;
                    continue;
                };
                let n = due.min((batch.len() - i) as u64) as usize;
                (i..i + n)
                    .into_par_iter()
                    .map(|k| {
                        let line = batch.line(k).map_err(LineFailure::Read)?;
                        BundleVerifier::check_event_line(next_seq + (k - i) as u64, line).map_err(LineFailure::Bundle)
                    })
                    .collect_into_vec(&mut checked);
                for line in checked.drain(..) {
                    let line = line.map_err(|f| match f {
                        LineFailure::Read(e) => e,
                        LineFailure::Bundle(f) => at_failure(&f),
                    })?;
                    verifier.accept_event(&line).map_err(|f| at_failure(&f))?;
                }
                i += n;
            }
        }
        Ok::<(), String>(())
    })?;
    verifier.finish().map_err(|f| at_failure(&f))
}

/// Verifies an evidence pack (its first line already read): every event's bytes, hash,
/// JSON, contract and version, its inclusion in the signed (and cosigned) checkpoint, and
/// the revenue report, recomputed from exactly those events.
fn verify_evidence<R: Read>(first: &str, mut lines: BoundedLines<R>, key: Option<VerifierKey>, policy: Option<WitnessPolicy>) -> Result<ExitCode, String> {
    let mut verifier = EvidenceVerifier::new(key, policy);
    let mut book = projections::Book::new();
    let mut step = |verifier: &mut EvidenceVerifier, line: &str| -> Result<(), String> {
        if let Some(recorded) = verifier.line(line).map_err(|f| at_failure(&f))? {
            book.apply(&recorded).map_err(|e| format!("at seq {}: the contract's events do not fold: {e}", recorded.seq()))?;
        }
        Ok(())
    };
    let outcome = (|| -> Result<(), String> {
        step(&mut verifier, first)?;
        while let Some(line) = read_line(&mut lines)? {
            step(&mut verifier, &line)?;
        }
        Ok(())
    })();
    if let Err(message) = outcome {
        return failed(message);
    }
    let verified = match verifier.finish() {
        Ok(v) => v,
        Err(f) => return failed(at_failure(&f)),
    };
    let Some(state) = book.contracts.get(&verified.contract_id) else { return failed("the pack holds no event of its contract") };
    let granularity = projections::Granularity::parse(&verified.granularity).ok_or("the pack's granularity is month or quarter")?;
    let at = projections::AsOf { date: verified.as_of, known_at: verified.known_at };
    let report = match projections::report::revenue_json(state, &at, granularity) {
        Ok(r) => r,
        Err(e) => return failed(format!("the report cannot be recomputed: {e}")),
    };
    if report != verified.report {
        let field = first_difference(&report, &verified.report);
        return failed(format!("the report differs from the one its events give, at {field}: the events give {}", pointer(&report, &field)));
    }
    println!(
        "ok: evidence pack of contract {}: {} events proven in checkpoint {} size {} root {} signature valid{}; revenue report as of {} known at {} recomputed from them and equal",
        verified.contract_id,
        verified.events,
        verified.checkpoint.origin,
        verified.checkpoint.size,
        verified.checkpoint.root,
        cosigned_by(&verified.cosignatures),
        verified.as_of,
        verified.known_at
    );
    Ok(ExitCode::SUCCESS)
}

/// The JSON pointer of the first place two values differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> String {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) if w == v => {}
                    Some(w) => return format!("/{k}{}", first_difference(v, w)),
                    None => return format!("/{k}"),
                }
            }
            y.keys().find(|k| !x.contains_key(*k)).map(|k| format!("/{k}")).unwrap_or_default()
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                if v != w {
                    return format!("/{i}{}", first_difference(v, w));
                }
            }
            format!("/{}", x.len().min(y.len()))
        }
        _ => String::new(),
    }
}

fn pointer(v: &serde_json::Value, at: &str) -> String {
    v.pointer(at).map_or("nothing".to_string(), |x| x.to_string())
}

fn at_failure(f: &events::bundle::BundleFailure) -> String {
    match f.seq {
        Some(seq) => format!("at seq {seq}: {}", f.reason),
        None => f.reason.clone(),
    }
}

/// Most kept checkpoints `verify --data` checks.
const HISTORY_MAX: usize = 1_000_000;

fn verify_data(data: &Path, args: &VerifyArgs, policy: Option<&WitnessPolicy>) -> Result<ExitCode, String> {
    let ledger = match ledger::Ledger::open(data, ledger::Options::default()) {
        Ok(l) => l,
        Err(ledger::OpenError::Corrupt(f)) => return failed(format!("at seq {}: {}", f.seq, f.reason)),
        Err(e) => return Err(e.to_string()),
    };
    let own = signer(data, args.origin.as_deref())?.verifier();
    let key = match &args.key {
        Some(k) => read_key(k)?,
        None => own.clone(),
    };

    // Every kept checkpoint must be signed by the key and have the root the events give.
    let history = ledger.checkpoints_from(0, HISTORY_MAX).map_err(|e| e.to_string())?;
    for issued in &history {
        if let Err(e) = key.verify(&issued.note) {
            let which = if Some(issued) == history.last() { "the latest checkpoint".to_string() } else { format!("the kept checkpoint of size {}", issued.checkpoint.size) };
            return failed(format!("{which} does not verify with {key}: {e}"));
        }
    }
    let cosigned = match policy {
        None => None,
        Some(p) => {
            let found = history.iter().rev().find_map(|i| Note::parse(&i.note).ok().and_then(|n| p.check(&n).ok()).map(|c| (i.checkpoint.size, c)));
            match found {
                Some(f) => Some(f),
                None => return failed(format!("no kept checkpoint has {} of the witnesses' cosignatures", p.quorum())),
            }
        }
    };
    let kept = args.trusted.as_deref().map(|p| read_trusted(p, &key)).transpose()?.flatten();
    if let Some(kept) = &kept {
        let head = ledger.head().seq;
        if kept.size > head {
            return failed(format!("rollback: you kept a checkpoint of {} events, the ledger now has {head}", kept.size));
        }
    }
    let sizes: Vec<u64> = history.iter().map(|i| i.checkpoint.size).chain(kept.iter().map(|c| c.size)).collect();
    let bar = progress(ledger.head().seq, "verifying");
    let started = std::time::Instant::now();
    let result = ledger.verify_with_roots(&sizes, |seq| {
        if seq % 1024 == 0 {
            bar.set_position(seq)
        }
    });
    bar.finish_and_clear();
    let (head, roots) = match result {
        Ok(r) => r,
        Err(VerifyError::Failed(f)) => return failed(format!("at seq {}: {}", f.seq, f.reason)),
        Err(VerifyError::Storage(e)) => return Err(format!("storage: {e}")),
    };
    for (issued, root) in history.iter().zip(&roots) {
        if *root != issued.checkpoint.root {
            let which = if Some(issued) == history.last() { "the latest checkpoint" } else { "a kept checkpoint" };
            return failed(format!("{which} (size {}) says root {}, the events give {root}", issued.checkpoint.size, issued.checkpoint.root));
        }
    }
    if let Some(kept) = &kept
        && let Err(message) = extends(kept, head.seq, roots.get(history.len()).copied())
    {
        return failed(message);
    }
    if args.trusted.is_some() {
        if key != own {
            // The directory signs with its own key: the checkpoint it would keep could not
            // be checked with the key the auditor trusts.
            return failed(format!("this data directory signs with {own}, not with the key given ({key})"));
        }
        let signer = signer(data, args.origin.as_deref())?;
        let issued = ledger.issue_checkpoint(&signer).map_err(|e| e.to_string())?;
        keep(args.trusted.as_deref(), &issued.note)?;
    }
    let latest = history.last().map(|i| i.checkpoint.size);
    println!(
        "ok: {} events verified, head seq {} hash {}, Merkle root {}{}{}{} ({:.2}s)",
        head.seq,
        head.seq,
        head.hash,
        ledger.merkle_root(head.seq).map_err(|e| e.to_string())?,
        latest.map(|size| format!(", latest checkpoint (size {size}) signed and matching")).unwrap_or_default(),
        if history.len() > 1 { format!(", all {} kept checkpoints matching", history.len()) } else { String::new() },
        cosigned.map(|(size, c)| format!(", checkpoint of size {size}{}", cosigned_by(&c))).unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn signer(data: &Path, origin: Option<&str>) -> Result<NoteSigner, String> {
    load_or_create_signer(data, None, origin).map_err(|e| e.to_string())
}

/// `cledger export`'s arguments.
pub struct ExportArgs {
    pub data: PathBuf,
    pub out: Option<PathBuf>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub origin: Option<String>,
    /// `fresh` (sign the head now) or `latest` (the latest kept checkpoint, with any
    /// cosignatures witnesses gave it).
    pub checkpoint: String,
    /// An evidence pack of this contract instead of a bundle.
    pub contract: Option<String>,
    pub as_of: Option<String>,
    pub known_at: Option<u64>,
    pub granularity: String,
}

/// Writes `write`'s output to the file (fsynced) or standard output.
fn write_out(out: Option<&Path>, write: impl FnOnce(&mut dyn Write) -> Result<(), String>) -> Result<(), String> {
    match out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            write(&mut writer)?;
            writer.flush().map_err(|e| e.to_string())?;
            writer.into_inner().map_err(|e| e.to_string())?.sync_all().map_err(|e| e.to_string())
        }
        None => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            write(&mut stdout)?;
            stdout.flush().map_err(|e| e.to_string())
        }
    }
}

pub fn export(args: ExportArgs) -> Result<ExitCode, String> {
    let ledger = open_ledger(&args.data)?;
    let signer = signer(&args.data, args.origin.as_deref())?;
    let issued: Issued = match args.checkpoint.as_str() {
        "fresh" => ledger.issue_checkpoint(&signer).map_err(|e| e.to_string())?,
        "latest" => ledger.latest_checkpoint().map_err(|e| e.to_string())?.ok_or("no checkpoint was kept yet: use --checkpoint fresh")?,
        other => return Err(format!("--checkpoint {other}: fresh or latest")),
    };
    let key = signer.verifier();
    if let Some(contract) = &args.contract {
        if args.from.is_some() || args.to.is_some() {
            return Err("--from and --to are for bundles, not evidence packs".into());
        }
        let contract = ContractId::parse(contract).map_err(|r| format!("--contract: {}", r.message))?;
        let as_of = args.as_of.as_deref().ok_or("an evidence pack needs --as-of DATE")?;
        let as_of = Date::parse(as_of).map_err(|e| format!("--as-of: {e}"))?;
        let granularity = projections::Granularity::parse(&args.granularity).ok_or("--granularity: month or quarter")?;
        let lines = ledger.evidence_pack(&issued, &key, &contract, as_of, args.known_at, granularity).map_err(|e| e.to_string())?;
        write_out(args.out.as_deref(), |out| lines.iter().try_for_each(|l| writeln!(out, "{l}")).map_err(|e| e.to_string()))?;
        eprintln!("evidence pack of {contract}: {} events proven in the checkpoint of size {}; verifier key {key}", lines.len() - 2, issued.checkpoint.size);
        return Ok(ExitCode::SUCCESS);
    }
    if args.as_of.is_some() || args.known_at.is_some() {
        return Err("--as-of and --known-at are for evidence packs: give --contract ID".into());
    }
    let plan = ledger.plan_export_with(&issued, &key, args.from, args.to).map_err(|e| e.to_string())?;
    write_out(args.out.as_deref(), |mut out| ledger.write_export(&plan, &mut out).map_err(|e| e.to_string()))?;
    eprintln!("exported events {} to {}; verifier key {key}", plan.from, plan.to);
    Ok(ExitCode::SUCCESS)
}

pub fn key(data: &Path, origin: Option<&str>) -> Result<ExitCode, String> {
    println!("{}", signer(data, origin)?.verifier());
    Ok(ExitCode::SUCCESS)
}

pub fn prove_inclusion(data: &Path, seq: u64, size: Option<u64>) -> Result<ExitCode, String> {
    let ledger = open_ledger(data)?;
    let size = size.unwrap_or(ledger.head().seq);
    let proof = ledger.inclusion_proof(seq, size).map_err(|e| e.to_string())?;
    let root = ledger.merkle_root(size).map_err(|e| e.to_string())?;
    let hash = ledger.event(seq).map_err(|e| e.to_string())?.map(|e| e.hash).ok_or("no such event")?;
    println!("{}", crate::server::inclusion_json(seq, size, &hash, &proof, &root));
    Ok(ExitCode::SUCCESS)
}

pub fn prove_consistency(data: &Path, from: u64, to: Option<u64>) -> Result<ExitCode, String> {
    let ledger = open_ledger(data)?;
    let to = to.unwrap_or(ledger.head().seq);
    let proof = ledger.consistency_proof(from, to).map_err(|e| e.to_string())?;
    let from_root = ledger.merkle_root(from).map_err(|e| e.to_string())?;
    let to_root = ledger.merkle_root(to).map_err(|e| e.to_string())?;
    println!("{}", crate::server::consistency_json(from, to, &proof, &from_root, &to_root));
    Ok(ExitCode::SUCCESS)
}

/// `cledger verify-proof`'s arguments.
pub struct VerifyProofArgs {
    /// The proof JSON (`cledger prove`, `GET /v1/proofs/...`); `-` reads standard input.
    pub proof: PathBuf,
    /// The signed checkpoint note the proof must lead to.
    pub checkpoint: PathBuf,
    pub key: String,
    /// Consistency: a checkpoint you kept of the older tree.
    pub old_checkpoint: Option<PathBuf>,
    /// Inclusion: the event (JSON with `seq` and `canonical`, as `GET /v1/events/{seq}`).
    pub event: Option<PathBuf>,
    pub witnesses: Vec<String>,
    pub witness_quorum: Option<usize>,
    pub verbose: bool,
}

fn read_file(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading standard input: {e}"))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A required hex digest of a proof's JSON.
fn hex_field(v: &serde_json::Value, name: &str) -> Result<Digest, String> {
    let text = v[name].as_str().ok_or(format!("the proof has no `{name}`"))?;
    events::bundle::parse_digest(text).map_err(|e| format!("`{name}`: {e}"))
}

fn u64_field(v: &serde_json::Value, name: &str) -> Result<u64, String> {
    v[name].as_u64().ok_or(format!("the proof has no `{name}` (a non-negative integer)"))
}

fn hashes_field(v: &serde_json::Value) -> Result<Vec<Digest>, String> {
    let list = v["hashes"].as_array().ok_or("the proof has no `hashes` array")?;
    if list.len() > 64 {
        return Err("the proof has more hashes than any tree is deep".into());
    }
    list.iter().enumerate().map(|(i, h)| h.as_str().ok_or(format!("hashes[{i}] is not a string")).and_then(|t| events::bundle::parse_digest(t).map_err(|e| format!("hashes[{i}]: {e}")))).collect()
}

/// Prints one step of a proof's check (`--verbose`).
fn print_step(step: events::merkle::Step) {
    use events::merkle::Step;
    match step {
        Step::Leaf { event_hash, leaf } => println!("  leaf     = H(0x00 || {event_hash})\n           = {leaf}"),
        Step::Inclusion { index, sibling, on_left, result } => {
            let (l, r) = if on_left { (sibling.to_hex(), "running".to_string()) } else { ("running".to_string(), sibling.to_hex()) };
            println!("  step {:>2}: proof hash {index} on the {}: H(0x01 || {l} || {r})\n           = {result}", index + 1, if on_left { "left" } else { "right" });
        }
        Step::ConsistencyStart { hash, is_first_root } => {
            println!("  start    = {hash} ({})", if is_first_root { "the first tree's root: its size is a power of two" } else { "proof hash 0" });
        }
        Step::Consistency { index, hash, both, first, second } => {
            if both {
                println!("  proof hash {index} {hash} on the left of both\n           first tree  = {first}\n           second tree = {second}");
            } else {
                println!("  proof hash {index} {hash} on the right, second tree only\n           second tree = {second}");
            }
        }
    }
}

pub fn verify_proof(args: VerifyProofArgs) -> Result<ExitCode, String> {
    let key = read_key(&args.key)?;
    let policy = witness_policy(&args.witnesses, args.witness_quorum)?;
    let proof: serde_json::Value = serde_json::from_str(&read_file(&args.proof)?).map_err(|e| format!("the proof is not JSON: {e}"))?;
    let note = read_file(&args.checkpoint)?;
    let (checkpoint, cosignatures) = match events::bundle::verify_checkpoint(&key, policy.as_ref(), &note) {
        Ok(c) => c,
        Err(f) => return failed(at_failure(&f)),
    };
    if args.verbose {
        println!("checkpoint {} size {} root {}: signed by {key}{}", checkpoint.origin, checkpoint.size, checkpoint.root, cosigned_by(&cosignatures));
    }
    let mut trace = |step| {
        if args.verbose {
            print_step(step)
        }
    };
    let outcome = if proof.get("leaf_index").is_some() || proof.get("seq").is_some() {
        if args.old_checkpoint.is_some() {
            return Err("--old-checkpoint is for consistency proofs".into());
        }
        verify_inclusion_json(&proof, &checkpoint, args.event.as_deref(), &mut trace)
    } else if proof.get("from").is_some() {
        if args.event.is_some() {
            return Err("--event is for inclusion proofs".into());
        }
        let old = args.old_checkpoint.as_deref().map(read_file).transpose()?;
        verify_consistency_json(&proof, &checkpoint, old.as_deref(), &key, &mut trace)
    } else {
        Err("not an inclusion proof (seq, leaf_index, tree_size, hash, hashes) nor a consistency proof (from, to, from_root, hashes)".into())
    };
    match outcome {
        Ok(verdict) => {
            println!("ok: {verdict}; checkpoint {} signed by {}{}", checkpoint.origin, key, cosigned_by(&cosignatures));
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => failed(message),
    }
}

fn verify_inclusion_json(proof: &serde_json::Value, checkpoint: &events::checkpoint::Checkpoint, event: Option<&Path>, trace: &mut dyn FnMut(events::merkle::Step)) -> Result<String, String> {
    let seq = u64_field(proof, "seq")?;
    if seq == 0 {
        return Err("seq 0: sequence numbers start at 1".into());
    }
    if proof.get("leaf_index").is_some() && u64_field(proof, "leaf_index")? != seq - 1 {
        return Err(format!("leaf_index is not seq - 1 ({})", seq - 1));
    }
    let size = u64_field(proof, "tree_size")?;
    if size != checkpoint.size {
        return Err(format!("the proof is for a tree of {size} events, the checkpoint for {}: ask for the proof with tree_size={}", checkpoint.size, checkpoint.size));
    }
    if proof.get("root").is_some() && hex_field(proof, "root")? != checkpoint.root {
        return Err(format!("the proof's root is not the checkpoint's ({})", checkpoint.root));
    }
    let hash = hex_field(proof, "hash")?;
    if let Some(path) = event {
        let event: serde_json::Value = serde_json::from_str(&read_file(path)?).map_err(|e| format!("--event: not JSON: {e}"))?;
        let canonical = event["canonical"].as_str().ok_or("--event: no `canonical`")?;
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, canonical).map_err(|_| "--event: canonical is not base64")?;
        let recorded = events::RecordedEvent::from_canonical(bytes).map_err(|e| format!("--event: {e}"))?;
        if recorded.seq() != seq || recorded.hash != hash {
            return Err(format!("the event given is seq {} with hash {}, the proof is of seq {seq} with hash {hash}", recorded.seq(), recorded.hash));
        }
    }
    let hashes = hashes_field(proof)?;
    events::merkle::verify_inclusion_traced(&hash, seq - 1, size, &hashes, &checkpoint.root, trace).map_err(|e| format!("the inclusion proof fails: {e}"))?;
    Ok(format!("event {seq} (hash {hash}) is leaf {} of the tree of {size} events, root {}", seq - 1, checkpoint.root))
}

fn verify_consistency_json(
    proof: &serde_json::Value,
    checkpoint: &events::checkpoint::Checkpoint,
    old_note: Option<&str>,
    key: &VerifierKey,
    trace: &mut dyn FnMut(events::merkle::Step),
) -> Result<String, String> {
    let (from, to) = (u64_field(proof, "from")?, u64_field(proof, "to")?);
    if to != checkpoint.size {
        return Err(format!("the proof is to a tree of {to} events, the checkpoint is of {}: ask for the proof with to={}", checkpoint.size, checkpoint.size));
    }
    if proof.get("to_root").is_some() && hex_field(proof, "to_root")? != checkpoint.root {
        return Err(format!("the proof's to_root is not the checkpoint's ({})", checkpoint.root));
    }
    let from_root = hex_field(proof, "from_root")?;
    if let Some(note) = old_note {
        let old = key.verify(note).map_err(|e| format!("the old checkpoint does not verify: {e}"))?;
        if old.size != from || old.root != from_root {
            return Err(format!("the old checkpoint is of size {} root {}, the proof from size {from} root {from_root}", old.size, old.root));
        }
    }
    let hashes = hashes_field(proof)?;
    events::merkle::verify_consistency_traced(from, to, &from_root, &checkpoint.root, &hashes, trace).map_err(|e| format!("the consistency proof fails: {e}"))?;
    Ok(format!("the tree of {from} events (root {from_root}) is a prefix of the tree of {to} events (root {})", checkpoint.root))
}
