//! The auditor's commands: `verify` (a data directory, an export bundle, or a server),
//! `export`, `prove`, `key`.
//!
//! A kept checkpoint (`--trusted-checkpoint FILE`) makes verification cumulative: the new
//! checkpoint must extend the kept one (same root at the kept size), a shorter ledger is a
//! rollback, and after success the file holds the new checkpoint.

use crate::cli::{open_ledger, progress, BoundedLines};
use events::bundle::{BundleVerifier, Verified};
use events::checkpoint::{NoteSigner, VerifierKey};
use events::Digest;
use ledger::checkpoints::load_or_create_signer;
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
    let text = if Path::new(key).is_file() { std::fs::read_to_string(key).map_err(|e| format!("--key {key}: {e}"))? } else { key.to_string() };
    VerifierKey::parse(text.trim()).map_err(|e| format!("--key: {e}"))
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
    if let Some(data) = &args.data {
        return verify_data(data, &args);
    }
    let key = args.key.as_deref().map(read_key).transpose()?;
    if key.is_none() {
        eprintln!("warning: no --key: trusting the verifier key named in the bundle itself");
    }
    let kept = match (&args.trusted, &key) {
        (Some(path), Some(k)) => read_trusted(path, k)?,
        (Some(_), None) => return Err("--trusted-checkpoint needs --key (the key that signed it)".into()),
        _ => None,
    };
    let reader: Box<dyn Read> = match (&args.file, &args.url) {
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
    let outcome = verify_bundle(reader, key, kept.as_ref().map(|k| k.size));
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
        "ok: events {} to {} verified; checkpoint {} size {} root {} signature valid{}",
        verified.from,
        verified.to,
        verified.checkpoint.origin,
        verified.checkpoint.size,
        verified.checkpoint.root,
        if kept.is_some() { "; extends the kept checkpoint" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Longest line of an export bundle: one event is at most 64 KiB of canonical bytes, so its
/// line (base64 of them, its JSON, hashes) stays far below this.
pub const BUNDLE_LINE_BYTES_MAX: usize = 1024 * 1024;

/// Verifies a bundle from any reader: the messages name the first failing seq (or line).
pub fn verify_bundle(reader: impl Read, key: Option<VerifierKey>, root_at: Option<u64>) -> Result<Verified, String> {
    let mut verifier = BundleVerifier::new(key, root_at);
    let mut lines = BoundedLines::new(reader, BUNDLE_LINE_BYTES_MAX);
    loop {
        let buffer = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(format!("the bundle's {e} (no bundle line is that long)")),
        };
        let Some(line) = buffer.strip_suffix(b"\n") else {
            return Err("the bundle does not end with a newline (cut off?)".into());
        };
        let line = std::str::from_utf8(line).map_err(|_| "the bundle is not UTF-8".to_string())?;
        verifier.line(line).map_err(|f| at_failure(&f))?;
    }
    verifier.finish().map_err(|f| at_failure(&f))
}

fn at_failure(f: &events::bundle::BundleFailure) -> String {
    match f.seq {
        Some(seq) => format!("at seq {seq}: {}", f.reason),
        None => f.reason.clone(),
    }
}

fn verify_data(data: &Path, args: &VerifyArgs) -> Result<ExitCode, String> {
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

    let latest = ledger.latest_checkpoint().map_err(|e| e.to_string())?;
    let latest = match latest.map(|l| key.verify(&l.note)) {
        Some(Ok(cp)) => Some(cp),
        Some(Err(e)) => return failed(format!(": the latest checkpoint does not verify with {key}: {e}")),
        None => None,
    };
    let kept = args.trusted.as_deref().map(|p| read_trusted(p, &key)).transpose()?.flatten();
    if let Some(kept) = &kept {
        let head = ledger.head().seq;
        if kept.size > head {
            return failed(format!("rollback: you kept a checkpoint of {} events, the ledger now has {head}", kept.size));
        }
    }
    let sizes: Vec<u64> = latest.iter().map(|c| c.size).chain(kept.iter().map(|c| c.size)).collect();
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
    let mut roots = roots.into_iter();
    if let Some(cp) = &latest {
        let root = roots.next().expect("a root per size");
        if root != cp.root {
            return failed(format!("the latest checkpoint (size {}) says root {}, the events give {root}", cp.size, cp.root));
        }
    }
    if let Some(kept) = &kept
        && let Err(message) = extends(kept, head.seq, roots.next()) {
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
    println!(
        "ok: {} events verified, head seq {} hash {}, Merkle root {}{} ({:.2}s)",
        head.seq,
        head.seq,
        head.hash,
        ledger.merkle_root(head.seq).map_err(|e| e.to_string())?,
        latest.map(|c| format!(", latest checkpoint (size {}) signed and matching", c.size)).unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn signer(data: &Path, origin: Option<&str>) -> Result<NoteSigner, String> {
    load_or_create_signer(data, None, origin).map_err(|e| e.to_string())
}

pub fn export(data: &Path, out: Option<&Path>, from: Option<u64>, to: Option<u64>, origin: Option<&str>) -> Result<ExitCode, String> {
    let ledger = open_ledger(data)?;
    let signer = signer(data, origin)?;
    let plan = match out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            let plan = ledger.export(&signer, from, to, &mut writer).map_err(|e| e.to_string())?;
            writer.flush().map_err(|e| e.to_string())?;
            writer.into_inner().map_err(|e| e.to_string())?.sync_all().map_err(|e| e.to_string())?;
            plan
        }
        None => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let plan = ledger.export(&signer, from, to, &mut stdout).map_err(|e| e.to_string())?;
            stdout.flush().map_err(|e| e.to_string())?;
            plan
        }
    };
    eprintln!("exported events {} to {}; verifier key {}", plan.from, plan.to, signer.verifier());
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
