//! Helpers for auditor tests (export bundles, verifiers in other languages).
//!
//! The Merkle tree hash and the event hash are computed here again, from docs/FORMAT.md,
//! with nothing but `blake3`: what the ledger says must match a second implementation, not
//! only itself.

use base64::Engine;
use events::checkpoint::{Checkpoint, VerifierKey};
use events::Digest;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------
// Hashes, roots and proofs, from FORMAT.md sections 1 and 5.

/// BLAKE3 derive-key `compute-ledger 2026-11 event v1` over canonical bytes.
pub fn event_hash(canonical: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key("compute-ledger 2026-11 event v1");
    hasher.update(canonical);
    Digest(*hasher.finalize().as_bytes())
}

fn h(parts: &[&[u8]]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    for p in parts {
        hasher.update(p);
    }
    Digest(*hasher.finalize().as_bytes())
}

/// MTH of FORMAT.md section 5 (RFC 9162 §2.1.1 with BLAKE3), written out independently of
/// `events::merkle`.
pub fn mth(hashes: &[Digest]) -> Digest {
    match hashes.len() {
        0 => h(&[b""]),
        1 => h(&[&[0u8], hashes[0].as_bytes()]),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            h(&[&[1u8], mth(&hashes[..k]).as_bytes(), mth(&hashes[k..]).as_bytes()])
        }
    }
}

/// `roots[n]` = MTH of the first n hashes, n = 0..=len.
pub fn all_roots(hashes: &[Digest]) -> Vec<Digest> {
    (0..=hashes.len()).map(|n| mth(&hashes[..n])).collect()
}

/// A hex digest from a JSON string.
pub fn digest(v: &Value) -> Digest {
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert_eq!(text, text.to_ascii_lowercase(), "hashes are lowercase hex");
    Digest::from_hex(text).unwrap_or_else(|| panic!("not 64 hex digits: {text}"))
}

/// A JSON array of hex digests.
pub fn digests(v: &Value) -> Vec<Digest> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(digest).collect()
}

/// Checks the JSON of an inclusion proof (`cledger prove inclusion`, `GET
/// /v1/proofs/inclusion`) against what the test knows: the event hashes of the ledger.
pub fn check_inclusion_json(v: &Value, seq: u64, tree_size: u64, hashes: &[Digest]) {
    assert_eq!(v["seq"], seq, "{v}");
    assert_eq!(v["leaf_index"], seq - 1, "{v}");
    assert_eq!(v["tree_size"], tree_size, "{v}");
    let hash = digest(&v["hash"]);
    assert_eq!(hash, hashes[seq as usize - 1], "the hash of event {seq}: {v}");
    let root = digest(&v["root"]);
    assert_eq!(root, mth(&hashes[..tree_size as usize]), "the root of the tree of {tree_size}: {v}");
    let proof = digests(&v["hashes"]);
    events::merkle::verify_inclusion(&hash, seq - 1, tree_size, &proof, &root)
        .unwrap_or_else(|e| panic!("inclusion of {seq} in {tree_size} does not verify: {e}; {v}"));
    // The proof pins the position: the same hash claimed at another leaf does not verify.
    if tree_size > 1 {
        let other = if seq == 1 { 1 } else { seq - 2 };
        assert!(events::merkle::verify_inclusion(&hash, other, tree_size, &proof, &root).is_err(), "the proof of {seq} also 'proves' leaf {other}");
    }
}

/// Checks the JSON of a consistency proof against the roots computed from the hashes.
pub fn check_consistency_json(v: &Value, from: u64, to: u64, hashes: &[Digest]) {
    assert_eq!(v["from"], from, "{v}");
    assert_eq!(v["to"], to, "{v}");
    let from_root = digest(&v["from_root"]);
    let to_root = digest(&v["to_root"]);
    assert_eq!(from_root, mth(&hashes[..from as usize]), "from_root: {v}");
    assert_eq!(to_root, mth(&hashes[..to as usize]), "to_root: {v}");
    let proof = digests(&v["hashes"]);
    if from == 0 || from == to {
        assert!(proof.is_empty(), "a proof from 0 or between equal sizes is empty: {v}");
    }
    events::merkle::verify_consistency(from, to, &from_root, &to_root, &proof)
        .unwrap_or_else(|e| panic!("consistency {from} -> {to} does not verify: {e}; {v}"));
    // And it proves nothing about another tree.
    if from > 0 && from < to {
        let wrong = mth(&hashes[..to as usize - 1]);
        assert!(events::merkle::verify_consistency(from, to, &from_root, &wrong, &proof).is_err(), "{from} -> {to} also 'proves' another root");
    }
}

// ---------------------------------------------------------------------------------------
// Keys and checkpoints.

pub fn vkey(text: &str) -> VerifierKey {
    VerifierKey::parse(text.trim()).unwrap_or_else(|e| panic!("verifier key {text:?}: {e}"))
}

/// Verifies a signed note with the key (text form), panicking if it does not.
pub fn open_note(key: &str, note: &str) -> Checkpoint {
    vkey(key).verify(note).unwrap_or_else(|e| panic!("the note does not verify with {key}: {e}\n{note}"))
}

/// `cledger key --data DIR`.
pub fn key_of(data: &Path) -> String {
    let (code, stdout, stderr) = crate::run(&["key", "--data", s(data)]);
    assert_eq!(code, 0, "cledger key: {stderr}");
    let key = stdout.trim().to_string();
    vkey(&key);
    key
}

/// Makes `note` the ledger's only kept checkpoint (the `checkpoints` tree, FORMAT.md
/// section 9), directly in sled (the ledger closed).
pub fn set_latest_checkpoint(data: &Path, note: &str) {
    let db = sled::open(data).expect("open sled");
    let history = db.open_tree("checkpoints").expect("checkpoints tree");
    history.clear().expect("clear");
    let text = note.split("\n\n").next().expect("a note");
    let size: u64 = text.split('\n').nth(1).and_then(|s| s.parse().ok()).expect("a checkpoint size");
    history.insert(size.to_be_bytes(), note.as_bytes()).expect("write");
    db.flush().expect("flush");
}

// ---------------------------------------------------------------------------------------
// Data directories.

pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The sample's lines (examples/colossus.ndjson).
pub fn sample_lines() -> Vec<String> {
    std::fs::read_to_string(crate::sample_file()).expect("sample").lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// `cledger import` of these NDJSON lines into `data`; asserts they were all appended.
pub fn import(data: &Path, lines: &[String]) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write events");
    let (code, stdout, stderr) = crate::run(&["import", "--data", s(data), s(file.path())]);
    assert_eq!(code, 0, "cledger import: {stdout}{stderr}");
    assert!(stdout.starts_with(&format!("imported {} events", lines.len())), "{stdout}");
}

/// An invoice line of the sample contract (for extending or forking a ledger).
pub fn sample_invoice(id: &str, amount: &str) -> String {
    format!(r#"{{"contract_id":"colossus-1","type":"invoice_issued","effective_date":"2026-10-01","data":{{"invoice_id":"{id}","amount":"{amount}","due_date":"2026-11-01"}}}}"#)
}

/// Copies a directory tree (a stopped ledger's data directory, with its signing key).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The event hashes of a stopped ledger, recomputed from the canonical bytes `cledger log`
/// shows (and checked against the hashes it shows).
pub fn hashes_of(data: &Path) -> Vec<Digest> {
    crate::server::log_json(data).iter().map(hash_of_event_json).collect()
}

/// The hash of an event object (`log --json`, `GET /v1/events`, a bundle line), recomputed
/// from its `canonical` and checked against its `hash`.
pub fn hash_of_event_json(line: &Value) -> Digest {
    let canonical = B64.decode(line["canonical"].as_str().expect("canonical")).expect("base64");
    let hash = event_hash(&canonical);
    assert_eq!(digest(&line["hash"]), hash, "{line}");
    hash
}

/// `cledger export --data DIR [--from A] [--to B]`, the bundle.
pub fn export(data: &Path, from: Option<u64>, to: Option<u64>) -> Bundle {
    let mut args = vec!["export".to_string(), "--data".into(), s(data).into()];
    if let Some(f) = from {
        args.extend(["--from".into(), f.to_string()]);
    }
    if let Some(t) = to {
        args.extend(["--to".into(), t.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = crate::run(&args);
    assert_eq!(code, 0, "cledger export: {stderr}");
    Bundle::parse(&stdout)
}

// ---------------------------------------------------------------------------------------
// Bundles.

/// An export bundle as its lines (without their newlines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    pub lines: Vec<String>,
}

impl Bundle {
    pub fn parse(text: &str) -> Bundle {
        let body = text.strip_suffix('\n').unwrap_or_else(|| panic!("a bundle ends with a newline: {text:?}"));
        Bundle { lines: body.split('\n').map(str::to_string).collect() }
    }

    pub fn read(path: &Path) -> Bundle {
        Bundle::parse(&std::fs::read_to_string(path).expect("read bundle"))
    }

    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.text()).expect("write bundle");
    }

    pub fn json(&self, index: usize) -> Value {
        serde_json::from_str(&self.lines[index]).unwrap_or_else(|e| panic!("line {index} is not JSON ({e}): {}", self.lines[index]))
    }

    pub fn header(&self) -> Value {
        self.json(0)
    }

    pub fn from(&self) -> u64 {
        self.header()["from"].as_u64().expect("from")
    }

    pub fn to(&self) -> u64 {
        self.header()["to"].as_u64().expect("to")
    }

    /// The last line: `{"checkpoint", "proofs"?}`.
    pub fn last(&self) -> Value {
        self.json(self.lines.len() - 1)
    }

    /// The signed note of the last line.
    pub fn note(&self) -> String {
        self.last()["checkpoint"].as_str().expect("checkpoint note").to_string()
    }

    /// The line index of event `seq`.
    pub fn index_of(&self, seq: u64) -> usize {
        let (from, to) = (self.from(), self.to());
        assert!((from..=to).contains(&seq), "seq {seq} is not in the bundle ({from} to {to})");
        (seq - from) as usize + 1
    }

    /// The event lines' hashes, recomputed from the canonical bytes.
    pub fn hashes(&self) -> Vec<Digest> {
        (1..self.lines.len() - 1).map(|i| hash_of_event_json(&self.json(i))).collect()
    }

    /// A copy with line `index` parsed, changed by `f` and written back (key order kept).
    pub fn edit(&self, index: usize, f: impl FnOnce(&mut Value)) -> Bundle {
        let mut v = self.json(index);
        f(&mut v);
        let mut copy = self.clone();
        copy.lines[index] = serde_json::to_string(&v).expect("serialize");
        copy
    }

    pub fn edit_event(&self, seq: u64, f: impl FnOnce(&mut Value)) -> Bundle {
        self.edit(self.index_of(seq), f)
    }

    pub fn edit_last(&self, f: impl FnOnce(&mut Value)) -> Bundle {
        self.edit(self.lines.len() - 1, f)
    }

    /// A copy whose checkpoint note is `f(note)`.
    pub fn edit_note(&self, f: impl FnOnce(&str) -> String) -> Bundle {
        let note = self.note();
        self.edit_last(|v| v["checkpoint"] = Value::String(f(&note)))
    }

    /// A copy with the last line of `other` (its checkpoint and proofs).
    pub fn with_last_line_of(&self, other: &Bundle) -> Bundle {
        let mut copy = self.clone();
        *copy.lines.last_mut().unwrap() = other.lines.last().unwrap().clone();
        copy
    }
}

/// A string with the character at `at` replaced by another one of the same class (hex digit
/// or base64 letter), so the text keeps its shape and only its value changes.
pub fn flip_char(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let c = chars[at];
    chars[at] = match c {
        '0'..='8' | 'a'..='e' | 'g'..='y' | 'A'..='Y' => char::from(c as u8 + 1),
        '9' => '0',
        'f' => 'a',
        'z' => 'g',
        'Z' => 'A',
        '+' => '/',
        '/' => '+',
        other => panic!("flip_char: unexpected {other:?}"),
    };
    chars.into_iter().collect()
}

// ---------------------------------------------------------------------------------------
// Verifiers.

/// What a verifier said: exit code and stdout (stderr appended for messages).
#[derive(Clone, Debug)]
pub struct Verdict {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        self.code == 0 && self.stdout.starts_with("ok: ")
    }

    pub fn rejected(&self) -> bool {
        self.code == 1 && self.stdout.starts_with("FAILED")
    }

    pub fn assert_ok(&self, what: &str) -> &Verdict {
        assert!(self.accepted(), "{what}: expected ok, got exit {} {}{}", self.code, self.stdout, self.stderr);
        self
    }

    pub fn assert_failed(&self, what: &str, contains: &str) -> &Verdict {
        assert!(self.rejected(), "{what}: expected FAILED (exit 1), got exit {} {}{}", self.code, self.stdout, self.stderr);
        assert!(self.stdout.contains(contains), "{what}: expected {contains:?} in {}", self.stdout);
        self
    }
}

/// `cledger verify` with these arguments.
pub fn cledger_verify(args: &[&str]) -> Verdict {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = crate::run(&all);
    Verdict { code, stdout, stderr }
}

/// `cledger verify FILE [--key KEY | --trust-bundle-key] [--trusted-checkpoint KEPT]` of a
/// bundle written to a temporary file.
pub fn cledger_verify_bundle(bundle: &Bundle, key: Option<&str>, kept: Option<&Path>) -> Verdict {
    let mut extra = vec![];
    if let Some(p) = kept {
        extra.extend(["--trusted-checkpoint", s(p)]);
    }
    cledger_verify_file(bundle, key, &extra)
}

/// `cledger verify FILE --key KEY EXTRA...` (witness options, say).
pub fn cledger_verify_bundle_with(bundle: &Bundle, key: &str, extra: &[&str]) -> Verdict {
    cledger_verify_file(bundle, Some(key), extra)
}

fn cledger_verify_file(bundle: &Bundle, key: Option<&str>, extra: &[&str]) -> Verdict {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    bundle.write(file.path());
    let mut args = vec![s(file.path())];
    match key {
        Some(k) => args.extend(["--key", k]),
        None => args.push("--trust-bundle-key"),
    }
    args.extend_from_slice(extra);
    cledger_verify(&args)
}

/// The Python with `blake3` and `cryptography` for docs/verify_bundle.py:
/// `$CLEDGER_TEST_PYTHON` (which must have them: scripts/test.sh installs them), else
/// `python3` if it has them, else None (the caller skips, with a message).
pub fn python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let probe = |python: &Path| {
                Command::new(python).args(["-c", "import blake3, cryptography.hazmat.primitives.asymmetric.ed25519"]).output()
            };
            match std::env::var_os("CLEDGER_TEST_PYTHON") {
                Some(p) => {
                    let python = PathBuf::from(p);
                    let out = probe(&python).unwrap_or_else(|e| panic!("CLEDGER_TEST_PYTHON={}: {e}", python.display()));
                    assert!(
                        out.status.success(),
                        "CLEDGER_TEST_PYTHON={} cannot import blake3 and cryptography:\n{}",
                        python.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    Some(python)
                }
                None => {
                    let python = PathBuf::from("python3");
                    match probe(&python) {
                        Ok(out) if out.status.success() => Some(python),
                        Ok(out) => {
                            eprintln!(
                                "SKIPPING the Python verifier checks: python3 lacks blake3/cryptography (run scripts/test.sh, or set CLEDGER_TEST_PYTHON):\n{}",
                                String::from_utf8_lossy(&out.stderr)
                            );
                            None
                        }
                        Err(e) => {
                            eprintln!("SKIPPING the Python verifier checks: no python3 ({e})");
                            None
                        }
                    }
                }
            }
        })
        .as_deref()
}

/// docs/verify_bundle.py on a bundle (`--trust-bundle-key` without a key), or None when no
/// suitable Python is installed.
pub fn python_verify(bundle: &Bundle, key: Option<&str>) -> Option<Verdict> {
    python_verify_with(bundle, key, &[])
}

/// docs/verify_bundle.py on a bundle with more arguments (witness options, say).
pub fn python_verify_with(bundle: &Bundle, key: Option<&str>, extra: &[&str]) -> Option<Verdict> {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    bundle.write(file.path());
    let mut args = vec![s(file.path()).to_string()];
    match key {
        Some(k) => args.extend(["--key".to_string(), k.to_string()]),
        None => args.push("--trust-bundle-key".into()),
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    python_verify_args(&args)
}

/// docs/verify_bundle.py with these arguments, or None when no suitable Python is installed.
pub fn python_verify_args(args: &[String]) -> Option<Verdict> {
    let python = python()?;
    let out = Command::new(python).arg(crate::workspace().join("docs/verify_bundle.py")).args(args).output().expect("run docs/verify_bundle.py");
    Some(Verdict {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Both verifiers on one bundle: (cledger, Python if available).
pub fn both_verify(bundle: &Bundle, key: Option<&str>) -> (Verdict, Option<Verdict>) {
    (cledger_verify_bundle(bundle, key, None), python_verify(bundle, key))
}

// ---------------------------------------------------------------------------------------
// Histories that share a signing key.

/// Three stopped ledgers signed by one key: `main` (the sample's 9 events); `prefix`, a copy
/// of `main` taken when it had 5 events (what a rollback of `main` looks like); `fork`,
/// another copy taken then, which went on differently (an invoice instead of the sample's
/// reversal, then the sample's last three events: also 9 events).
pub struct Histories {
    pub main: PathBuf,
    pub prefix: PathBuf,
    pub fork: PathBuf,
    /// The verifier key of all three.
    pub key: String,
    pub dir: tempfile::TempDir,
}

impl Histories {
    pub fn new() -> Histories {
        let dir = tempfile::tempdir().expect("tempdir");
        let (main, prefix, fork) = (dir.path().join("main"), dir.path().join("prefix"), dir.path().join("fork"));
        let sample = sample_lines();
        assert_eq!(sample.len(), 9);
        import(&main, &sample[..5]);
        // The key is created before the copies, so all three share it.
        let key = key_of(&main);
        copy_dir(&main, &prefix);
        copy_dir(&main, &fork);
        import(&main, &sample[5..]);
        let mut other = vec![sample_invoice("INV-FORK", "1.00")];
        other.extend_from_slice(&sample[6..]);
        import(&fork, &other);
        assert_eq!(key_of(&prefix), key);
        assert_eq!(key_of(&fork), key);
        Histories { main, prefix, fork, key, dir }
    }

    /// A path for a kept checkpoint (not created).
    pub fn kept(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for Histories {
    fn default() -> Self {
        Histories::new()
    }
}

// ---------------------------------------------------------------------------------------
// Signing as a ledger would, and its tree (to speak to witnesses by hand).

/// The checkpoint signer of a stopped ledger: its key file and its origin.
pub fn signer_of(data: &Path) -> events::checkpoint::NoteSigner {
    let key = key_of(data);
    let seed_hex = std::fs::read_to_string(data.join("checkpoint-signing.key")).expect("the signing key");
    let mut seed = [0u8; 32];
    hex::decode_to_slice(seed_hex.trim(), &mut seed).expect("64 hex digits");
    let name = key.split('+').next().expect("a key name");
    let signer = events::checkpoint::NoteSigner::new(name, seed).expect("a signer");
    assert_eq!(signer.verifier().to_string(), key);
    signer
}

/// The Merkle tree of a stopped ledger's events.
pub fn tree_of(data: &Path) -> events::merkle::MemoryTree {
    let mut tree = events::merkle::MemoryTree::new();
    for h in hashes_of(data) {
        tree.push(&h);
    }
    tree
}

/// An add-checkpoint request body for a checkpoint of `size` of `tree` signed by `signer`,
/// with the proof from `old`.
pub fn add_checkpoint_body(signer: &events::checkpoint::NoteSigner, tree: &events::merkle::MemoryTree, old: u64, size: u64) -> String {
    let checkpoint = Checkpoint { origin: signer.name().into(), size, root: events::merkle::root(tree, size).unwrap() };
    let proof = events::merkle::consistency_proof(tree, old, size).unwrap();
    events::witness::AddCheckpoint::new(old, proof, &signer.sign(&checkpoint)).unwrap().body()
}

/// `cledger prove ARGS...`: the proof's JSON (asserting exit 0).
pub fn prove(args: &[&str]) -> Value {
    let mut all = vec!["prove"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = crate::run(&all);
    assert_eq!(code, 0, "cledger prove {args:?}: {stdout}{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("cledger prove {args:?} printed no JSON ({e}): {stdout}"))
}
