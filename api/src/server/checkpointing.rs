//! Issuing checkpoints and having witnesses cosign them (C2SP tlog-witness, as a client).
//!
//! One task at a time issues: the timer (`every`) and `POST /v1/checkpoints` both go through
//! [`Checkpointing::checkpoint_now`], which signs the durable head, keeps the checkpoint,
//! asks every witness for its cosignature (in parallel, each bounded by a timeout), attaches
//! the valid ones to the kept note, and wakes the NATS checkpoint publisher. A witness that
//! is down or refuses only delays cosigning: appends never wait for any of this.

use events::checkpoint::{Note, NoteSigner, NoteSignature};
use events::cosignature::{self, Cosignature, WitnessKey, WitnessPolicy};
use events::witness::{self, AddCheckpoint};
use ledger::checkpoints::Issued;
use ledger::Ledger;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one witness may take to answer one request.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(5);
/// After a round without a quorum, try again this soon (at most `every`).
const RETRY_WITHOUT_QUORUM: Duration = Duration::from_secs(5);

/// `--witness URL=VKEY` and `--witness-quorum N`.
#[derive(Clone, Debug, Default)]
pub struct WitnessConfig {
    pub witnesses: Vec<(String, String)>,
    /// Default: every witness.
    pub quorum: Option<usize>,
}

/// One witness, as the ledger talks to it.
struct Witness {
    /// The submission prefix (`add-checkpoint` is appended).
    url: String,
    key: WitnessKey,
    /// The size this witness last cosigned for us, as far as we know (a 409 corrects it).
    known_size: Mutex<Option<u64>>,
    /// The last thing that went wrong with it, for /readyz.
    last_error: Mutex<Option<String>>,
}

/// The witnesses of a ledger and its policy.
pub struct Cosigning {
    witnesses: Vec<Witness>,
    policy: WitnessPolicy,
    http: reqwest::Client,
}

/// What one round of checkpointing achieved.
#[derive(Clone, Debug)]
pub struct Round {
    pub issued: Issued,
    /// Whether the witnesses' cosignatures on it make the quorum (always true without
    /// witnesses).
    pub quorum: bool,
}

impl Cosigning {
    pub fn new(config: &WitnessConfig) -> Result<Option<Cosigning>, String> {
        if config.witnesses.is_empty() {
            return match config.quorum {
                Some(_) => Err("--witness-quorum needs --witness URL=VKEY".into()),
                None => Ok(None),
            };
        }
        let mut witnesses = vec![];
        for (url, vkey) in &config.witnesses {
            let key = WitnessKey::parse(vkey).map_err(|e| format!("--witness {url}: {e}"))?;
            if !url.starts_with("http://") {
                return Err(format!("--witness {url}: only http:// witness URLs are supported (put a TLS-terminating proxy in front of an https one)"));
            }
            witnesses.push(Witness { url: url.trim_end_matches('/').to_string(), key, known_size: Mutex::new(None), last_error: Mutex::new(None) });
        }
        let quorum = config.quorum.unwrap_or(witnesses.len());
        let policy = WitnessPolicy::new(witnesses.iter().map(|w| w.key.clone()).collect(), quorum).map_err(|e| format!("--witness-quorum: {e}"))?;
        // No idle connections are kept: a witness is asked once per checkpoint round, so
        // reuse saves little, and a kept connection to a witness that restarted since is dead
        // (a POST on it is not retried, and that round loses the witness's cosignature).
        let http = reqwest::Client::builder().timeout(WITNESS_TIMEOUT).pool_max_idle_per_host(0).build().map_err(|e| e.to_string())?;
        Ok(Some(Cosigning { witnesses, policy, http }))
    }

    pub fn policy(&self) -> &WitnessPolicy {
        &self.policy
    }

    /// Asks every witness whose line is not on `note` yet to cosign `issued`; returns the
    /// valid cosignature lines. One whose valid line is there is not asked again: it would
    /// cosign with a newer timestamp, and the kept note keeps the line it has.
    async fn collect(&self, ledger: &Arc<Ledger>, issued: &Issued, note: &Note) -> Vec<NoteSignature> {
        let size = issued.checkpoint.size;
        let mut missing = vec![];
        for w in &self.witnesses {
            match w.key.check(note) {
                Ok(None) => missing.push(w),
                // It cosigned this size: what we know of it follows.
                Ok(Some(_)) => {
                    let mut known = w.known_size.lock().expect("witness lock");
                    *known = Some(known.map_or(size, |k| k.max(size)));
                }
                // A kept line of its key that does not verify stays (kept notes only gain
                // lines), so this checkpoint cannot count it: say so, loudly, every round.
                Err(e) => {
                    tracing::error!(witness = %w.key.name, size, "the kept checkpoint holds a line of this witness that does not verify: {e}");
                    *w.last_error.lock().expect("witness lock") = Some(format!("the kept checkpoint of size {size} holds a line of its key that does not verify: {e}"));
                }
            }
        }
        let requests = missing.into_iter().map(|w| async move {
            let outcome = w.cosign(&self.http, ledger, issued).await;
            let label = match &outcome {
                Ok(_) => "cosigned",
                Err(_) => "failed",
            };
            metrics::counter!("witness_requests_total", "witness" => w.key.name.clone(), "outcome" => label).increment(1);
            match outcome {
                Ok(line) => {
                    *w.last_error.lock().expect("witness lock") = None;
                    Some(line)
                }
                Err(why) => {
                    tracing::warn!(witness = %w.key.name, url = %w.url, size = issued.checkpoint.size, "no cosignature: {why}");
                    *w.last_error.lock().expect("witness lock") = Some(why);
                    None
                }
            }
        });
        futures::future::join_all(requests).await.into_iter().flatten().collect()
    }

    /// Each witness's state, for /readyz.
    pub fn status(&self) -> Value {
        Value::Array(
            self.witnesses
                .iter()
                .map(|w| {
                    json!({
                        "name": w.key.name,
                        "url": w.url,
                        "cosigned_size": *w.known_size.lock().expect("witness lock"),
                        "last_error": w.last_error.lock().expect("witness lock").clone(),
                    })
                })
                .collect(),
        )
    }
}

impl Witness {
    /// One witness's cosignature of `issued`: `add-checkpoint` with the old size we believe
    /// it has; on a 409, once more from the size it names.
    async fn cosign(&self, http: &reqwest::Client, ledger: &Arc<Ledger>, issued: &Issued) -> Result<NoteSignature, String> {
        let size = issued.checkpoint.size;
        let mut old = self.known_size.lock().expect("witness lock").unwrap_or(0).min(size);
        for attempt in 0..2 {
            let ledger2 = ledger.clone();
            let proof = tokio::task::spawn_blocking(move || ledger2.consistency_proof(old, size))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("no consistency proof from {old} to {size}: {e}"))?;
            let request = AddCheckpoint::new(old, proof, &issued.note).map_err(|e| e.to_string())?;
            let response = http
                .post(format!("{}/add-checkpoint", self.url))
                .body(request.body())
                .send()
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            let status = response.status().as_u16();
            let content_type = response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = response.text().await.map_err(|e| format!("reading the answer: {e}"))?;
            match status {
                200 => {
                    let line = witness::parse_response(&body)
                        .map_err(|e| format!("a malformed answer: {e}"))?
                        .into_iter()
                        .find(|l| self.key.signed(l))
                        .ok_or("the answer holds no cosignature by its key")?;
                    let text = Note::parse(&issued.note).map_err(|e| e.to_string())?.text;
                    self.key.verify_line(&text, &line).map_err(|e| format!("its cosignature does not verify: {e}"))?;
                    *self.known_size.lock().expect("witness lock") = Some(size);
                    return Ok(line);
                }
                409 => {
                    let theirs = (content_type.starts_with(witness::SIZE_CONTENT_TYPE)).then(|| witness::parse_size_body(&body)).flatten();
                    let Some(theirs) = theirs else { return Err(format!("409 without its size: {body:?}")) };
                    *self.known_size.lock().expect("witness lock") = Some(theirs);
                    if theirs > size {
                        return Err(format!("it has cosigned size {theirs} of this log, larger than this ledger's {size}: it saw another history (or this one was rolled back)"));
                    }
                    if attempt == 1 || theirs == old {
                        return Err(format!("refused (409): it cosigned size {theirs} with another root: it saw another history of this log"));
                    }
                    old = theirs;
                }
                422 => return Err(format!("refused the consistency proof from size {old} (422): it saw another history of this log: {}", body.trim())),
                other => return Err(format!("answered {other}: {}", body.trim())),
            }
        }
        Err("no cosignature after two requests".into())
    }
}

/// Why a round of checkpointing failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("{0}")]
    Checkpoint(#[from] ledger::checkpoints::CheckpointError),
    #[error("the kept note does not parse: {0}")]
    Note(#[from] events::checkpoint::CheckpointError),
    #[error("the checkpoint task failed: {0}")]
    Task(String),
}

/// Issues checkpoints and gets them cosigned.
pub struct Checkpointing {
    pub signer: Arc<NoteSigner>,
    pub cosigning: Option<Cosigning>,
    /// Wakes the NATS checkpoint publisher when a note is kept or changes.
    pub changed: tokio::sync::watch::Sender<()>,
    /// One round at a time (the witnesses' known sizes stay coherent).
    round: tokio::sync::Mutex<()>,
}

impl Checkpointing {
    pub fn new(signer: Arc<NoteSigner>, cosigning: Option<Cosigning>) -> Checkpointing {
        let (changed, _) = tokio::sync::watch::channel(());
        Checkpointing { signer, cosigning, changed, round: tokio::sync::Mutex::new(()) }
    }

    /// The cosignatures on a note that count, and whether they make the quorum.
    pub fn cosignatures(&self, note: &str) -> (Vec<Cosignature>, bool) {
        let Some(c) = &self.cosigning else { return (vec![], true) };
        let found = Note::parse(note).ok().and_then(|n| c.policy.cosignatures(&n).ok()).unwrap_or_default();
        let quorum = found.len() >= c.policy.quorum();
        (found, quorum)
    }

    /// Signs the durable head (keeping the checkpoint) and, with witnesses, collects their
    /// cosignatures and attaches them.
    pub async fn checkpoint_now(&self, ledger: &Arc<Ledger>) -> Result<Round, RoundError> {
        let _round = self.round.lock().await;
        let (ledger2, signer) = (ledger.clone(), self.signer.clone());
        let issued = tokio::task::spawn_blocking(move || ledger2.issue_checkpoint(&signer)).await.map_err(|e| RoundError::Task(e.to_string()))??;
        self.changed.send_replace(());
        metrics::counter!("checkpoints_issued_total").increment(1);
        let Some(cosigning) = &self.cosigning else {
            return Ok(Round { issued, quorum: true });
        };
        let quorum = self.cosignatures(&issued.note).1;
        if quorum {
            return Ok(Round { issued, quorum });
        }
        let note = Note::parse(&issued.note)?;
        let lines = cosigning.collect(ledger, &issued, &note).await;
        if lines.is_empty() {
            return Ok(Round { issued, quorum: false });
        }
        let cosigned = cosignature::attach(&note, &lines).to_string();
        let ledger2 = ledger.clone();
        let issued = match tokio::task::spawn_blocking(move || ledger2.attach_cosignatures(&cosigned)).await {
            Ok(Ok(kept)) => {
                self.changed.send_replace(());
                kept
            }
            Ok(Err(e)) => {
                tracing::error!("cannot keep the cosignatures of checkpoint {}: {e}", issued.checkpoint.size);
                issued
            }
            Err(e) => {
                tracing::error!("checkpoint task: {e}");
                issued
            }
        };
        let (found, quorum) = self.cosignatures(&issued.note);
        metrics::gauge!("checkpoint_cosignatures").set(found.len() as f64);
        if !quorum {
            tracing::warn!(size = issued.checkpoint.size, cosignatures = found.len(), quorum = cosigning.policy.quorum(), "checkpoint not cosigned by a quorum yet; will ask again");
        }
        Ok(Round { issued, quorum })
    }

    /// The latest kept checkpoint that a quorum cosigned (any, without witnesses).
    pub fn latest_cosigned(&self, ledger: &Ledger) -> Result<Option<Issued>, ledger::ReadError> {
        ledger.latest_checkpoint_where(|i| self.cosignatures(&i.note).1)
    }

    /// The JSON of a kept checkpoint (HTTP): the note, its fields, the log's key, and the
    /// cosignatures that count.
    pub fn json(&self, issued: &Issued) -> Value {
        let (found, quorum) = self.cosignatures(&issued.note);
        let mut v = json!({
            "checkpoint": issued.note,
            "origin": issued.checkpoint.origin,
            "tree_size": issued.checkpoint.size,
            "root": issued.checkpoint.root.to_hex(),
            "verifier_key": self.signer.verifier().to_string(),
        });
        if let Some(c) = &self.cosigning {
            v["cosignatures"] = found.iter().map(|c| json!({"witness": c.witness, "timestamp": c.timestamp})).collect();
            v["witness_quorum"] = json!(c.policy.quorum());
            v["cosigned"] = json!(quorum);
        }
        v
    }
}

/// Whether this node may sign a checkpoint now. Replicated mode: only the leader, and only
/// while its lease is good by its own clock, so a leader paused past its lease (whose
/// `is_leading` is still true when it wakes) does not sign a smaller checkpoint after a new
/// leader signed a larger one. Elsewhere always.
pub fn may_sign(ledger: &Ledger, cluster: Option<&bus::replicated::Cluster>) -> bool {
    ledger.is_leading() && cluster.is_none_or(|c| c.lease_held())
}

/// Issues a checkpoint whenever the ledger grew since the last one (or the last one lacks
/// its quorum), every `every` (sooner while a quorum is missing).
pub async fn checkpoint_loop(
    ledger: Arc<Ledger>,
    checkpoints: Arc<Checkpointing>,
    cluster: Option<Arc<bus::replicated::Cluster>>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut done: Option<u64> = None;
    loop {
        let size = ledger.head().seq;
        let mut wait = every;
        if done != Some(size) && may_sign(&ledger, cluster.as_deref()) {
            match checkpoints.checkpoint_now(&ledger).await {
                Ok(round) if round.quorum => done = Some(round.issued.checkpoint.size),
                Ok(_) => wait = every.min(RETRY_WITHOUT_QUORUM),
                Err(e) => tracing::error!("cannot issue a checkpoint: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_believes_it_leads_without_a_lease_by_its_clock_does_not_sign() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), ledger::Options::default()).unwrap();
        // Embedded and outbox modes: always.
        assert!(ledger.is_leading());
        assert!(may_sign(&ledger, None));
        // Replicated: `is_leading` is still true (a leader paused past its lease wakes up
        // so), but the lease is not held by this node's clock: no signature.
        let cluster = bus::replicated::Cluster::new("http://127.0.0.1:1".into(), bus::replicated::LeaseTiming::default());
        assert!(!may_sign(&ledger, Some(&cluster)));
    }
}
