//! `cledger witness`: a C2SP tlog-witness for compute-ledger logs.
//!
//! It keeps, per log (origin), the latest checkpoint it cosigned, in a state file that is
//! replaced atomically (written beside, fsynced, renamed, directory fsynced) before any
//! answer, under one lock: tlog-witness's "check the old size and persist the new
//! checkpoint atomically". So a restart never forgets, and two requests never roll a log
//! back. The key (an Ed25519 seed in hex) is created on first start; the witness prints
//! its verifier key (vkey, signature type 0x04) at every start.
//!
//! State file (JSON): `{"format": "cledger-witness-state", "version": 1, "witness": <vkey>,
//! "logs": [{"origin", "note"}]}`: each note is the checkpoint the witness last cosigned,
//! with the log's signature and the witness's cosignature.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use events::checkpoint::{Checkpoint, Note, NoteSignature, VerifierKey};
use events::cosignature::{self, Cosigner};
use events::witness::{self, AddCheckpoint, Latest, Refusal};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

const STATE_FORMAT: &str = "cledger-witness-state";

pub struct WitnessArgs {
    pub listen: SocketAddr,
    pub key: PathBuf,
    pub state: Option<PathBuf>,
    pub name: Option<String>,
    pub logs: Vec<String>,
    pub log_json: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    version: u64,
    witness: String,
    logs: Vec<LogState>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogState {
    origin: String,
    note: String,
}

/// Why the state cannot be used or kept.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the state {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
    #[error("the state {path} belongs to witness {theirs}, not to this one ({ours}): give its key and name, or another --state")]
    OtherWitness { path: PathBuf, theirs: String, ours: String },
    #[error("cannot write the state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The logs' latest cosigned checkpoints, on disk and in memory.
struct WitnessState {
    path: PathBuf,
    vkey: String,
    /// origin → (checkpoint, the cosigned note)
    logs: BTreeMap<String, (Checkpoint, String)>,
}

impl WitnessState {
    fn open(path: &Path, vkey: &str) -> Result<WitnessState, StateError> {
        let damaged = |why: String| StateError::Damaged { path: path.into(), why };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(WitnessState { path: path.into(), vkey: vkey.into(), logs: BTreeMap::new() });
            }
            Err(source) => return Err(StateError::Read { path: path.into(), source }),
        };
        let file: StateFile = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        if file.format != STATE_FORMAT || file.version != 1 {
            return Err(damaged(format!("not a {STATE_FORMAT} version 1 file")));
        }
        if file.witness != vkey {
            return Err(StateError::OtherWitness { path: path.into(), theirs: file.witness, ours: vkey.into() });
        }
        let mut logs = BTreeMap::new();
        for log in file.logs {
            let note = Note::parse(&log.note).map_err(|e| damaged(format!("{}: {e}", log.origin)))?;
            let checkpoint = Checkpoint::parse(&note.text).map_err(|e| damaged(format!("{}: {e}", log.origin)))?;
            if checkpoint.origin != log.origin {
                return Err(damaged(format!("{}: the note is of {}", log.origin, checkpoint.origin)));
            }
            logs.insert(log.origin, (checkpoint, log.note));
        }
        Ok(WitnessState { path: path.into(), vkey: vkey.into(), logs })
    }

    /// Writes the state with `origin`'s entry replaced, durably, then takes it in memory.
    fn persist(&mut self, origin: &str, checkpoint: Checkpoint, note: String) -> Result<(), StateError> {
        let mut logs: Vec<LogState> = self.logs.iter().filter(|(o, _)| o.as_str() != origin).map(|(o, (_, n))| LogState { origin: o.clone(), note: n.clone() }).collect();
        logs.push(LogState { origin: origin.into(), note: note.clone() });
        logs.sort_by(|a, b| a.origin.cmp(&b.origin));
        let file = StateFile { format: STATE_FORMAT.into(), version: 1, witness: self.vkey.clone(), logs };
        let text = serde_json::to_string_pretty(&file).expect("the state serializes") + "\n";
        write_atomically(&self.path, text.as_bytes()).map_err(|source| StateError::Write { path: self.path.clone(), source })?;
        self.logs.insert(origin.into(), (checkpoint, note));
        Ok(())
    }
}

/// Replaces `path` with `bytes`: a sibling temporary file, fsynced, renamed over it, and
/// the directory fsynced, so a crash leaves the old state or the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

struct Witness {
    cosigner: Cosigner,
    logs: Vec<VerifierKey>,
    state: Mutex<WitnessState>,
}

/// What `add-checkpoint` answers.
enum Answer {
    Cosigned(NoteSignature),
    Refused(Refusal),
    Failed(String),
}

impl Witness {
    /// Decides on a request and, if it cosigns, keeps the checkpoint before answering; one
    /// request at a time per witness.
    fn add(&self, request: AddCheckpoint) -> Answer {
        let mut state = self.state.lock().expect("witness state lock");
        let origin = request.checkpoint.origin.clone();
        let latest = state.logs.get(&origin).map(|(c, _)| Latest { size: c.size, root: c.root });
        let checkpoint = match witness::decide(&self.logs, latest, &request) {
            Ok(c) => c,
            Err(refusal) => return Answer::Refused(refusal),
        };
        let line = self.cosigner.cosign(&checkpoint, now_seconds());
        // Kept: the checkpoint with the log's valid signatures and this cosignature.
        let mut kept = request.note.clone();
        kept.signatures.retain(|s| self.logs.iter().any(|k| k.name == s.name && k.key_id() == s.key_id));
        let kept = cosignature::attach(&kept, std::slice::from_ref(&line)).to_string();
        match state.persist(&origin, checkpoint, kept) {
            Ok(()) => Answer::Cosigned(line),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

fn now_seconds() -> u64 {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    seconds.min(cosignature::TIMESTAMP_MAX)
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    let request = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(refusal) => return refused(refusal),
    };
    let (origin, size, old) = (request.checkpoint.origin.clone(), request.checkpoint.size, request.old_size);
    let w2 = w.clone();
    let answer = match tokio::task::spawn_blocking(move || w2.add(request)).await {
        Ok(answer) => answer,
        Err(e) => Answer::Failed(e.to_string()),
    };
    match answer {
        Answer::Cosigned(line) => {
            tracing::info!(%origin, size, old, "cosigned");
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], witness::response_body(&[line])).into_response()
        }
        Answer::Refused(refusal) => {
            // A conflict or a bad proof from a known, validly signed log may be evidence of
            // a split view: say so loudly.
            if matches!(refusal.status(), 409 | 422) {
                tracing::warn!(%origin, size, old, "refused: {refusal}");
            } else {
                tracing::info!(%origin, size, old, "refused: {refusal}");
            }
            refused(refusal)
        }
        Answer::Failed(why) => {
            tracing::error!(%origin, size, "cannot keep the checkpoint, not cosigned: {why}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response()
        }
    }
}

fn refused(refusal: Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    match refusal.latest_size() {
        Some(size) => (status, [(header::CONTENT_TYPE, witness::SIZE_CONTENT_TYPE)], format!("{size}\n")).into_response(),
        None => (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{refusal}\n")).into_response(),
    }
}

pub fn run(args: WitnessArgs) -> Result<ExitCode, String> {
    crate::server::init_logging(args.log_json);
    if args.logs.is_empty() {
        return Err("give the logs to witness: --log VKEY (one or more)".into());
    }
    let logs = args.logs.iter().map(|l| VerifierKey::parse(l).map_err(|e| format!("--log {l}: {e}"))).collect::<Result<Vec<_>, _>>()?;
    let seed = ledger::checkpoints::load_or_create_seed(&args.key, true).map_err(|e| e.to_string())?;
    let name = match args.name.clone() {
        Some(name) => name,
        None => ledger::checkpoints::default_name("cledger-witness", &seed).map_err(|e| e.to_string())?,
    };
    let cosigner = Cosigner::new(&name, seed).map_err(|e| format!("--name: {e}"))?;
    let vkey = cosigner.verifier().to_string();
    let state_path = args.state.clone().unwrap_or_else(|| args.key.with_extension("state"));
    let state = WitnessState::open(&state_path, &vkey).map_err(|e| e.to_string())?;
    println!("witness verifier key: {vkey}");
    for log in &logs {
        let cosigned = state.logs.get(&log.name).map_or("nothing yet".to_string(), |(c, _)| format!("size {}", c.size));
        println!("witnessing {log} (cosigned: {cosigned})");
    }
    let witness = Arc::new(Witness { cosigner, logs, state: Mutex::new(state) });
    let router = axum::Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(witness::REQUEST_BYTES_MAX))
        .with_state(witness);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(state = %state_path.display(), "witness listening on http://{address}");
        println!("listening on http://{address}");
        std::io::stdout().flush().ok();
        axum::serve(listener, router).with_graceful_shutdown(crate::server::wait_for_signal()).await.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}
