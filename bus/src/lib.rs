//! NATS JetStream: the outbox publisher (leader) and the stream follower.
//!
//! Stream `LEDGER`, subjects `ledger.events.<contract_id>.<type>` (ledger-wide events use
//! the token `~ledger`, which no contract id can be), message body = canonical bytes,
//! headers per SPEC section 6. Stream sequence = ledger seq: every publish carries
//! `Nats-Expected-Last-Sequence: seq - 1`, so a re-sent event is refused by position and
//! can never be stored twice or out of order; `Nats-Msg-Id` (the event hash) also dedups
//! inside the stream's duplicate window.
//!
//! The publisher (a transactional outbox): events are durable in sled before it sees them
//! (it follows the durable head); it resumes from the stream's own last sequence after
//! checking that the stream agrees with the ledger there; it keeps many publishes in
//! flight and advances only on acks in order; on any error (NATS down, timeout, wrong
//! last sequence) it drops what is in flight, re-reads the stream's last sequence, checks
//! it, and resumes from there, so a timed-out publish that was in fact stored is not sent
//! again and one that was not is sent again with the same id. A stream that contradicts
//! the ledger stops it for good, loudly. Writers never wait for any of this.
//!
//! The follower copies the stream into its own ledger through [`Ledger::replicate`], which
//! checks every hash and link before storing.

pub mod replicated;

use ledger::{Ledger, VerifyFailure};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use events::{Digest, RecordedEvent, Stream as EventStream};
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const STREAM_NAME: &str = "LEDGER";
pub const SUBJECTS: &str = "ledger.events.>";
/// The JSON mirror (`serve --nats-json`): stream and subjects.
pub const JSON_STREAM_NAME: &str = "LEDGER_JSON";
pub const JSON_SUBJECTS: &str = "ledger.json.>";
pub const CHECKPOINT_SUBJECT: &str = "ledger.checkpoints";
/// Every kept checkpoint, signed and then cosigned, in the order kept.
pub const CHECKPOINT_STREAM_NAME: &str = "LEDGER_CHECKPOINTS";
/// Subject token of ledger-wide events (not a valid contract id, so no collision).
pub const LEDGER_WIDE_TOKEN: &str = "~ledger";

/// Messages in one atomic batch (the server's limit).
pub const ATOMIC_BATCH_MAX: usize = 1_000;
/// Publishes in flight at once.
const IN_FLIGHT_MAX: usize = 512;
/// Events read from sled at a time.
const READ_PAGE: usize = 256;
/// How often the outbox cursor is written and the head marker published.
const CURSOR_EVERY: Duration = Duration::from_millis(500);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A follower that receives nothing for this long checks the stream itself.
const FOLLOW_IDLE_CHECK: Duration = Duration::from_secs(1);
/// Events the follower hands to its ledger at once.
const FOLLOW_BATCH_MAX: usize = 1_000;

/// What a stream of events carries: the canonical bytes (the record), or their JSON form
/// for subscribers that cannot decode postcard. Both keep stream sequence = ledger seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `ledger.events.<contract>.<type>`, body = canonical bytes.
    Canonical,
    /// `ledger.json.<contract>.<type>`, body = the event's JSON (FORMAT.md section 8).
    Json,
}

impl Flavor {
    fn prefix(self) -> &'static str {
        match self {
            Flavor::Canonical => "ledger.events",
            Flavor::Json => "ledger.json",
        }
    }

    fn subjects(self) -> &'static str {
        match self {
            Flavor::Canonical => SUBJECTS,
            Flavor::Json => JSON_SUBJECTS,
        }
    }

    /// The subject of an event.
    pub fn subject(self, event: &events::Event) -> String {
        let contract = match &event.stream {
            EventStream::Ledger => LEDGER_WIDE_TOKEN,
            EventStream::Contract(id) => id.as_str(),
        };
        format!("{}.{contract}.{}", self.prefix(), event.body.kind().as_str())
    }

    /// The message body of an event.
    pub fn payload(self, recorded: &RecordedEvent) -> Bytes {
        match self {
            Flavor::Canonical => Bytes::from(recorded.canonical.clone()),
            Flavor::Json => Bytes::from(recorded.to_json().to_string()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub name: String,
    pub replicas: usize,
    pub duplicate_window: Duration,
    pub flavor: Flavor,
}

impl Default for StreamSettings {
    fn default() -> StreamSettings {
        StreamSettings { name: STREAM_NAME.into(), replicas: 1, duplicate_window: Duration::from_secs(120), flavor: Flavor::Canonical }
    }
}

impl StreamSettings {
    /// The JSON mirror's stream, with the canonical stream's replicas.
    pub fn json_mirror(&self) -> StreamSettings {
        StreamSettings { name: JSON_STREAM_NAME.into(), flavor: Flavor::Json, ..self.clone() }
    }
}

/// What the server shows about NATS on `/readyz` and `/metrics`.
#[derive(Default)]
pub struct NatsStatus {
    pub connected: AtomicBool,
    /// Leader: last seq acknowledged by JetStream. Follower: last seq stored.
    pub confirmed: AtomicU64,
    /// The stream's last sequence, as last seen.
    pub stream_last: AtomicU64,
    pub published_total: AtomicU64,
    /// Set when the stream contradicts the ledger (or breaks the chain): NATS work stopped.
    pub failure: Mutex<Option<String>>,
}

impl NatsStatus {
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("status lock").clone()
    }

    fn fail(&self, reason: String) {
        tracing::error!("NATS work stopped: {reason}");
        metrics::gauge!("nats_failed").set(1.0);
        *self.failure.lock().expect("status lock") = Some(reason);
    }
}

/// Why publishing or following cannot go on. `Contradiction` is final; the rest are retried.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("the stream contradicts the ledger: {0}")]
    Contradiction(String),
    #[error("NATS: {0}")]
    Transient(String),
}

fn transient(e: impl std::fmt::Display) -> NatsError {
    NatsError::Transient(e.to_string())
}

/// The subject of an event on the canonical stream.
pub fn subject(event: &events::Event) -> String {
    Flavor::Canonical.subject(event)
}

/// The headers of SPEC section 6, for a message published on its own.
pub fn headers(recorded: &RecordedEvent) -> HeaderMap {
    let mut h = ledger_headers(recorded);
    h.insert("Nats-Msg-Id", recorded.hash.to_hex().as_str());
    h.insert("Nats-Expected-Last-Sequence", (recorded.event.seq - 1).to_string().as_str());
    h
}

/// The `Ledger-*` headers, which every message carries, in a batch or not.
fn ledger_headers(recorded: &RecordedEvent) -> HeaderMap {
    let e = &recorded.event;
    let mut h = HeaderMap::new();
    let hash = recorded.hash.to_hex();
    h.insert("Ledger-Seq", e.seq.to_string().as_str());
    h.insert("Ledger-Hash", hash.as_str());
    h.insert("Ledger-Prev-Hash", e.prev_hash.to_hex().as_str());
    h.insert("Ledger-Contract", e.stream.contract_id().map_or(LEDGER_WIDE_TOKEN, |c| c.as_str()));
    h.insert("Ledger-Type", e.body.kind().as_str());
    h
}

/// Creates the stream, or checks that the existing one is ours.
pub async fn ensure_stream(js: &jetstream::Context, settings: &StreamSettings) -> Result<stream::Stream, NatsError> {
    let config = stream::Config {
        name: settings.name.clone(),
        subjects: vec![settings.flavor.subjects().into()],
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        // History is never edited: the stream refuses deletes and purges too.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        // Atomic batches commit up to 1,000 messages with one sync (server 2.12+).
        allow_atomic_publish: true,
        ..Default::default()
    };
    let mut stream = js.get_or_create_stream(config).await.map_err(transient)?;
    let info = stream.info().await.map_err(transient)?.clone();
    if !info.config.subjects.iter().any(|s| s == settings.flavor.subjects()) {
        return Err(NatsError::Contradiction(format!(
            "stream {} exists with subjects {:?}, not {}",
            settings.name,
            info.config.subjects,
            settings.flavor.subjects()
        )));
    }
    if !info.config.allow_atomic_publish {
        // A stream made before (or by someone else): turn atomic batches on if allowed;
        // if not, the publisher sends one message at a time.
        let mut config = info.config.clone();
        config.allow_atomic_publish = true;
        if let Err(e) = js.update_stream(config).await {
            tracing::info!("stream {} does not take atomic batches ({e}); publishing one event at a time", settings.name);
        }
        stream = js.get_stream(&settings.name).await.map_err(transient)?;
    }
    Ok(stream)
}

/// The hash a stream message claims and the hash of its bytes; they must agree with each
/// other and with the ledger's event at that seq.
async fn check_stream_at(stream: &stream::Stream, ledger: &Ledger, seq: u64, flavor: Flavor) -> Result<(), NatsError> {
    let message = stream.get_raw_message(seq).await.map_err(transient)?;
    let ours = ledger
        .event(seq)
        .map_err(transient)?
        .ok_or_else(|| NatsError::Contradiction(format!("the stream has seq {seq}, the ledger does not")))?;
    let body_hash = match flavor {
        Flavor::Canonical => Digest::of_event(&message.payload),
        // The mirror's body is the event's JSON: it must be exactly the ledger's.
        Flavor::Json if message.payload == flavor.payload(&ours) => ours.hash,
        Flavor::Json => Digest::ZERO,
    };
    let claimed = message.headers.get("Ledger-Hash").map(|v| v.as_str().to_string());
    if body_hash != ours.hash || claimed.as_deref() != Some(ours.hash.to_hex().as_str()) {
        return Err(NatsError::Contradiction(format!(
            "at seq {seq} the stream holds hash {body_hash} (header {:?}), the ledger {}",
            claimed, ours.hash
        )));
    }
    Ok(())
}

/// The stream's last sequence, after checking the stream agrees with the ledger there.
pub async fn resume_point(stream: &mut stream::Stream, ledger: &Ledger, flavor: Flavor) -> Result<u64, NatsError> {
    let info = stream.get_info().await.map_err(transient)?;
    let last = info.state.last_sequence;
    let head = ledger.head().seq;
    if last > head {
        return Err(NatsError::Contradiction(format!("the stream ends at seq {last}, the ledger at {head}")));
    }
    if last > 0 {
        check_stream_at(stream, ledger, last, flavor).await?;
    }
    if flavor == Flavor::Canonical {
        let recorded = ledger.published().map_err(transient)?;
        if recorded > 0 && recorded <= last && recorded != last {
            check_stream_at(stream, ledger, recorded, flavor).await?;
        }
    }
    Ok(last)
}

/// Runs `attempt` until it ends cleanly (shutdown) or finds a contradiction, retrying after
/// transient errors with a backoff from 100 ms to 2 s (reset after a long healthy run).
async fn supervise<F, Fut>(what: &str, status: &NatsStatus, shutdown: tokio::sync::watch::Receiver<bool>, mut attempt: F)
where
    F: FnMut(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), NatsError>>,
{
    let mut shutdown = shutdown;
    let mut backoff = RETRY_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        match attempt(shutdown.clone()).await {
            Ok(()) => return,
            Err(NatsError::Contradiction(reason)) => {
                status.fail(reason);
                return;
            }
            Err(NatsError::Transient(reason)) => {
                if started.elapsed() > RETRY_MAX * 5 {
                    backoff = RETRY_MIN;
                }
                tracing::warn!("{what} paused, retrying in {backoff:?}: {reason}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Publishes every durable event after the stream's last one, forever (until `shutdown`).
pub async fn run_publisher(
    ledger: Arc<Ledger>,
    client: async_nats::Client,
    settings: StreamSettings,
    status: Arc<NatsStatus>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(5)).max_ack_inflight(IN_FLIGHT_MAX * 2).build(client);
    let (ledger, js, settings, s) = (&ledger, &js, &settings, &status);
    supervise("publishing", &status, shutdown, move |sd| publish_until_error(ledger, js, settings, s, sd)).await;
}

async fn publish_until_error(
    ledger: &Arc<Ledger>,
    js: &jetstream::Context,
    settings: &StreamSettings,
    status: &NatsStatus,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), NatsError> {
    let mut stream = ensure_stream(js, settings).await?;
    let flavor = settings.flavor;
    let mut confirmed = resume_point(&mut stream, ledger, flavor).await?;
    status.connected.store(true, Ordering::Relaxed);
    status.confirmed.store(confirmed, Ordering::Relaxed);
    status.stream_last.store(confirmed, Ordering::Relaxed);
    tracing::info!(resume_after = confirmed, "publishing to JetStream stream {}", settings.name);
    let atomic = stream.get_info().await.map_err(transient)?.config.allow_atomic_publish;
    let mut head = ledger.watch_head();
    let mut in_flight: VecDeque<(u64, jetstream::context::PublishAckFuture)> = VecDeque::new();
    let mut next = confirmed + 1;
    let mut last_cursor_write = tokio::time::Instant::now();
    loop {
        // A backlog goes in atomic batches: one sync per batch instead of per message.
        if atomic && in_flight.is_empty() && ledger.head().seq > confirmed + 1 {
            let ledger2 = ledger.clone();
            let want = ATOMIC_BATCH_MAX.min((ledger.head().seq - confirmed) as usize);
            let from = confirmed;
            let batch = tokio::task::spawn_blocking(move || ledger2.events_after(from, want)).await.map_err(transient)?.map_err(transient)?;
            confirmed = publish_atomic_batch(&js.client(), &batch, confirmed, flavor).await?;
            crash_point(confirmed);
            next = confirmed + 1;
            status.confirmed.store(confirmed, Ordering::Relaxed);
            status.stream_last.store(confirmed, Ordering::Relaxed);
            status.published_total.fetch_add(batch.len() as u64, Ordering::Relaxed);
            metrics::counter!("outbox_published_total").increment(batch.len() as u64);
        }
        // Fill the window from the durable head.
        while in_flight.len() < IN_FLIGHT_MAX && next <= ledger.head().seq && !(atomic && ledger.head().seq > confirmed + 1) {
            let ledger2 = ledger.clone();
            let want = READ_PAGE.min(IN_FLIGHT_MAX - in_flight.len());
            let from = next - 1;
            let page = tokio::task::spawn_blocking(move || ledger2.events_after(from, want)).await.map_err(transient)?.map_err(transient)?;
            for recorded in page {
                let message = jetstream::message::PublishMessage::build().payload(flavor.payload(&recorded)).headers(headers(&recorded));
                let ack = js.send_publish(flavor.subject(&recorded.event), message).await.map_err(transient)?;
                in_flight.push_back((recorded.seq(), ack));
                next = recorded.seq() + 1;
            }
        }
        if let Some((seq, ack)) = in_flight.pop_front() {
            let ack = ack.await.map_err(transient)?;
            if ack.sequence != seq {
                // A duplicate ack points at where the message already is; anything but its
                // own seq means the stream is not the ledger's.
                return Err(NatsError::Contradiction(format!("event {seq} was stored at stream sequence {}", ack.sequence)));
            }
            confirmed = seq;
            crash_point(confirmed);
            status.confirmed.store(seq, Ordering::Relaxed);
            status.stream_last.store(seq, Ordering::Relaxed);
            status.published_total.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("outbox_published_total").increment(1);
        }
        let now = tokio::time::Instant::now();
        if now - last_cursor_write >= CURSOR_EVERY || (in_flight.is_empty() && next > ledger.head().seq) {
            // The outbox cursor is the canonical stream's; the mirror has none of its own.
            if flavor == Flavor::Canonical && ledger.published().map_err(transient)? != confirmed {
                ledger.record_published(confirmed).map_err(transient)?;
            }
            last_cursor_write = now;
        }
        if in_flight.is_empty() && next > ledger.head().seq {
            head.mark_unchanged();
            if ledger.head().seq >= next {
                continue;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return Ok(()) },
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

/// Fault injection for crash tests: with `CLEDGER_CRASH_AFTER_PUBLISHED=N` in the
/// environment, the process aborts as soon as JetStream has acknowledged event N, before
/// the outbox cursor records it: the worst moment to die, made deterministic.
fn crash_point(confirmed: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("CLEDGER_CRASH_AFTER_PUBLISHED").ok().and_then(|v| v.parse().ok()));
    if at.is_some_and(|n| confirmed >= n) {
        eprintln!("CLEDGER_CRASH_AFTER_PUBLISHED: aborting after event {confirmed} was acknowledged");
        std::process::abort();
    }
}

#[derive(serde::Deserialize)]
struct BatchAck {
    seq: Option<u64>,
    count: Option<u64>,
    batch: Option<String>,
    error: Option<serde_json::Value>,
}

/// Publishes `batch` (the events after `confirmed`, in order) as one ADR-50 atomic batch and
/// returns the new last confirmed seq. The first message states the expected last stream
/// sequence, so the whole batch is refused unless it continues the stream exactly; atomic
/// batches refuse `Nats-Msg-Id`, so the position check alone carries exactly-once.
async fn publish_atomic_batch(client: &async_nats::Client, batch: &[RecordedEvent], confirmed: u64, flavor: Flavor) -> Result<u64, NatsError> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(confirmed) };
    assert_eq!(first.seq(), confirmed + 1, "a batch continues the stream");
    let kind = if flavor == Flavor::Json { "json" } else { "events" };
    let id = format!("cledger-{kind}-{}-{}", first.seq(), &first.hash.to_hex()[..16]);
    for (i, recorded) in batch.iter().enumerate() {
        let mut h = ledger_headers(recorded);
        if i == 0 {
            h.insert("Nats-Expected-Last-Sequence", confirmed.to_string().as_str());
        }
        h.insert("Nats-Batch-Id", id.as_str());
        h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        let payload = flavor.payload(recorded);
        let subject = flavor.subject(&recorded.event);
        if i + 1 < batch.len() {
            client.publish_with_headers(subject, h, payload).await.map_err(transient)?;
        } else {
            h.insert("Nats-Batch-Commit", "1");
            let reply = tokio::time::timeout(Duration::from_secs(10), client.request_with_headers(subject, h, payload))
                .await
                .map_err(|_| transient("no answer to the batch commit"))?
                .map_err(transient)?;
            let ack: BatchAck = serde_json::from_slice(&reply.payload).map_err(transient)?;
            if let Some(error) = ack.error {
                return Err(transient(format!("batch refused: {error}")));
            }
            if ack.seq != Some(last.seq()) || ack.count != Some(batch.len() as u64) || ack.batch.as_deref() != Some(id.as_str()) {
                return Err(NatsError::Contradiction(format!(
                    "batch {id} of seqs {} to {} was acknowledged as {:?} messages ending at stream sequence {:?}",
                    first.seq(),
                    last.seq(),
                    ack.count,
                    ack.seq
                )));
            }
        }
    }
    Ok(last.seq())
}

/// Creates the checkpoint stream, or checks that the existing one is ours.
async fn ensure_checkpoint_stream(js: &jetstream::Context, replicas: usize) -> Result<stream::Stream, NatsError> {
    let config = stream::Config {
        name: CHECKPOINT_STREAM_NAME.into(),
        subjects: vec![CHECKPOINT_SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        // Kept checkpoints are history too: no deletes, no purges.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    };
    let mut stream = js.get_or_create_stream(config).await.map_err(transient)?;
    let info = stream.info().await.map_err(transient)?;
    if info.config.subjects != [CHECKPOINT_SUBJECT] {
        return Err(NatsError::Contradiction(format!("stream {CHECKPOINT_STREAM_NAME} exists with subjects {:?}", info.config.subjects)));
    }
    Ok(stream)
}

/// Publishes every kept checkpoint to the stream `LEDGER_CHECKPOINTS` (subject
/// `ledger.checkpoints`) in the order it was kept: each new size, and a size again when its
/// note gained cosignatures. Each publish states the stream's expected last sequence, so
/// nothing is stored twice; after any error it resumes from the stream's last message.
/// `changed` wakes it when a checkpoint is kept; it also looks every few seconds.
pub async fn run_checkpoint_publisher(
    ledger: Arc<Ledger>,
    client: async_nats::Client,
    replicas: usize,
    status: Arc<NatsStatus>,
    changed: tokio::sync::watch::Receiver<()>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(5)).build(client);
    let (ledger, js) = (&ledger, &js);
    supervise("publishing checkpoints", &status, shutdown, move |sd| publish_checkpoints_until_error(ledger, js, replicas, changed.clone(), sd)).await;
}

async fn publish_checkpoints_until_error(
    ledger: &Arc<Ledger>,
    js: &jetstream::Context,
    replicas: usize,
    mut changed: tokio::sync::watch::Receiver<()>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), NatsError> {
    const PAGE: usize = 100;
    let mut stream = ensure_checkpoint_stream(js, replicas).await?;
    let mut stream_last = stream.info().await.map_err(transient)?.state.last_sequence;
    // What the stream holds last: (size, note). Nothing yet: publish from size 0.
    let mut last: Option<(u64, String)> = None;
    if stream_last > 0 {
        let message = stream.get_raw_message(stream_last).await.map_err(transient)?;
        let note = String::from_utf8(message.payload.to_vec()).map_err(|_| NatsError::Contradiction("the last published checkpoint is not UTF-8".into()))?;
        let text = events::checkpoint::Note::parse(&note).map_err(|e| NatsError::Contradiction(format!("the last published checkpoint: {e}")))?.text;
        let size = events::checkpoint::Checkpoint::parse(&text).map_err(|e| NatsError::Contradiction(format!("the last published checkpoint: {e}")))?.size;
        last = Some((size, note));
    }
    tracing::info!(stream_last, "publishing checkpoints to JetStream stream {CHECKPOINT_STREAM_NAME}");
    loop {
        // Seen before reading: a checkpoint kept while this round publishes wakes the next.
        changed.borrow_and_update();
        let from = last.as_ref().map_or(0, |(size, _)| *size);
        let ledger2 = ledger.clone();
        let page = tokio::task::spawn_blocking(move || ledger2.checkpoints_from(from, PAGE)).await.map_err(transient)?.map_err(transient)?;
        if let (Some((size, note)), Some(first)) = (&last, page.first())
            && first.checkpoint.size == *size
            && !same_text(&first.note, note)
        {
            return Err(NatsError::Contradiction(format!("the stream's checkpoint of size {size} is not the one this ledger kept")));
        }
        let mut published = 0;
        for issued in &page {
            if last.as_ref().is_some_and(|(size, note)| issued.checkpoint.size == *size && issued.note == *note) {
                continue;
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Expected-Last-Sequence", stream_last.to_string().as_str());
            headers.insert("Nats-Msg-Id", blake3::hash(issued.note.as_bytes()).to_hex().as_str());
            headers.insert("Ledger-Checkpoint-Size", issued.checkpoint.size.to_string().as_str());
            let ack = js
                .publish_with_headers(CHECKPOINT_SUBJECT, headers, Bytes::from(issued.note.clone()))
                .await
                .map_err(transient)?
                .await
                .map_err(transient)?;
            stream_last = ack.sequence;
            last = Some((issued.checkpoint.size, issued.note.clone()));
            published += 1;
            metrics::counter!("checkpoints_published_total").increment(1);
        }
        if published > 0 && page.len() == PAGE {
            continue;
        }
        tokio::select! {
            c = changed.changed() => if c.is_err() { return Ok(()) },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Do two notes carry the same checkpoint text (whatever their signatures)?
fn same_text(a: &str, b: &str) -> bool {
    let text = |n: &str| events::checkpoint::Note::parse(n).map(|n| n.text).ok();
    text(a).is_some() && text(a) == text(b)
}

/// Copies the stream into `ledger` from its head on, checking every event, forever.
pub async fn run_follower(
    ledger: Arc<Ledger>,
    client: async_nats::Client,
    stream_name: String,
    status: Arc<NatsStatus>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Short API timeouts: after a reconnect, a request may wait on a connection that is
    // gone; failing fast lets the loop make a fresh consumer sooner.
    let js = jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(client);
    let (ledger, js, name, s) = (&ledger, &js, &stream_name, &status);
    supervise("following", &status, shutdown, move |sd| follow_until_error(ledger, js, name, s, sd)).await;
}

/// The event a stream message carries, if its bytes decode, are of its stream sequence,
/// and hash to what its `Ledger-Hash` header says; with the idempotency records it carries
/// (replicated mode's `Ledger-Key` headers; none in outbox mode).
fn checked_event(message: &jetstream::Message) -> Result<(RecordedEvent, Vec<(String, ledger::KeyRecord)>), NatsError> {
    let info = message.info().map_err(transient)?;
    replicated::checked_message(info.stream_sequence, &message.payload, message.headers.as_ref())
}

fn broken(failure: VerifyFailure) -> NatsError {
    NatsError::Contradiction(format!("seq {}: {}", failure.seq, failure.reason))
}

async fn follow_until_error(
    ledger: &Arc<Ledger>,
    js: &jetstream::Context,
    stream_name: &str,
    status: &NatsStatus,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), NatsError> {
    let stream = js.get_stream(stream_name).await.map_err(transient)?;
    let head = ledger.head();
    let info = stream.get_info().await.map_err(transient)?;
    status.stream_last.store(info.state.last_sequence, Ordering::Relaxed);
    if head.seq > 0 {
        if info.state.last_sequence < head.seq {
            return Err(NatsError::Contradiction(format!(
                "the follower holds seq {}, the stream ends at {}",
                head.seq, info.state.last_sequence
            )));
        }
        check_stream_at(&stream, ledger, head.seq, Flavor::Canonical).await?;
    }
    status.connected.store(true, Ordering::Relaxed);
    status.confirmed.store(head.seq, Ordering::Relaxed);
    tracing::info!(from = head.seq + 1, "following JetStream stream {stream_name}");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: head.seq + 1 },
            ..Default::default()
        })
        .await
        .map_err(transient)?;
    let mut messages = consumer.messages().await.map_err(transient)?;
    let mut stream_info_at = tokio::time::Instant::now();
    loop {
        let first = tokio::select! {
            m = tokio::time::timeout(FOLLOW_IDLE_CHECK, messages.next()) => m,
            _ = shutdown.changed() => return Ok(()),
        };
        let first = match first {
            Ok(m) => m,
            Err(_) => {
                // Nothing arrived for a while. If the stream has moved on, the consumer is
                // stuck (the server restarted and forgot it): make a new one.
                let info = stream.get_info().await.map_err(transient)?;
                status.stream_last.store(info.state.last_sequence, Ordering::Relaxed);
                if info.state.last_sequence > ledger.head().seq {
                    return Err(transient("the consumer stopped delivering while the stream grew"));
                }
                continue;
            }
        };
        let Some(first) = first else { return Err(transient("the consumer ended")) };
        let mut batch = vec![first.map_err(transient)?];
        // Take whatever else has arrived, so one sync stores many events.
        while batch.len() < FOLLOW_BATCH_MAX {
            match futures::FutureExt::now_or_never(messages.next()) {
                Some(Some(m)) => batch.push(m.map_err(transient)?),
                _ => break,
            }
        }
        // Check each message; the good ones before a bad one are still stored, so the
        // follower stops exactly at the first event it cannot accept.
        let mut events = Vec::with_capacity(batch.len());
        let mut keys = vec![];
        let mut bad = None;
        let head = ledger.head().seq;
        for message in &batch {
            match checked_event(message) {
                // Already stored (committed by this node's own writer before it started
                // following): it must be the very same event.
                Ok((recorded, _)) if recorded.event.seq <= head => {
                    let ours = ledger.event(recorded.event.seq).map_err(transient)?;
                    if ours.as_ref().map(|e| e.hash) != Some(recorded.hash) {
                        bad = Some(broken(VerifyFailure { seq: recorded.event.seq, reason: format!("the stream holds {}, this node {:?}", recorded.hash, ours.map(|e| e.hash)) }));
                        break;
                    }
                }
                Ok((recorded, k)) => {
                    events.push(recorded);
                    keys.extend(k);
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        let replicated = ledger.replicate_with_keys(events, keys).await.map_err(transient)?;
        status.confirmed.store(replicated.head.seq, Ordering::Relaxed);
        metrics::counter!("follower_events_total").increment(replicated.stored as u64);
        if let Some(failure) = replicated.refused {
            return Err(broken(failure));
        }
        if let Some(e) = bad {
            return Err(e);
        }
        if stream_info_at.elapsed() >= Duration::from_secs(1) {
            if let Ok(info) = stream.get_info().await {
                status.stream_last.store(info.state.last_sequence, Ordering::Relaxed);
            }
            stream_info_at = tokio::time::Instant::now();
        }
        let last = status.stream_last.load(Ordering::Relaxed).max(replicated.head.seq);
        status.stream_last.store(last, Ordering::Relaxed);
    }
}
