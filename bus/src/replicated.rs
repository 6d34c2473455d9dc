//! Replicated mode (`serve --replicated`): the LEDGER stream is the ledger's replicated
//! commit log, and one node at a time writes to it, by lease.
//!
//! - **Publish, then commit.** [`StreamReplicator`] is the ledger's [`Replicator`]: the
//!   writer thread hands it each sealed group; it publishes the group as one ADR-50 atomic
//!   batch whose first message states `Nats-Expected-Last-Sequence` = the writer's head, and
//!   returns only once JetStream acknowledged the commit (stored by a quorum of the stream's
//!   replicas). Only then does the writer commit to sled and answer. Idempotency records
//!   travel in `Ledger-Key` headers, so every node stores the same ones.
//! - **Fencing by position.** A batch that does not continue the stream exactly is refused
//!   by JetStream (`wrong last sequence`): [`ReplicationError::Fenced`]; the writer rolls the
//!   group back, answers `not_leader`, and stops writing. Safety rests on this alone.
//! - **Liveness by lease.** Key `leader` of the KV bucket `LEDGER_LEASE` (R3, `max_age` = the
//!   lease's TTL) names the writer. The writer renews it (compare-and-set on its revision)
//!   every `renew_every`; others follow the stream into their sled. When the key lapses, a
//!   follower whose head equals the stream's last sequence creates it (compare-and-set on
//!   absence), reads the stream to its end, and starts taking writes. A writer that cannot
//!   renew before its lease runs out (by its own monotonic clock) refuses to publish, and a
//!   writer whose renewal is refused (someone else holds the key) follows again.
//!
//! The ledger crate knows none of this: it sees a [`Replicator`] and `set_leading`.

use super::{check_stream_at, ensure_stream, ledger_headers, run_follower, transient, BatchAck, NatsError, NatsStatus, StreamSettings, ATOMIC_BATCH_MAX};
use async_nats::jetstream::{self, kv, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use events::{Digest, RecordedEvent};
use ledger::{KeyRecord, Ledger, ReplicationError, ReplicationGroup, Replicator};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The KV bucket of the writer's lease and the members' heartbeats.
pub const LEASE_BUCKET: &str = "LEDGER_LEASE";
/// The lease's key in [`LEASE_BUCKET`].
pub const LEASE_KEY: &str = "leader";
/// Header of an idempotency record: `hex(key) fingerprint first_seq count`, on the message of
/// the record's last event (so a follower that stores that event stores the record with it).
pub const KEY_HEADER: &str = "Ledger-Key";

/// How long a publish may wait for JetStream's acknowledgement before the group's outcome
/// is reported unknown (the client retries only with its key; the node catches up first).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a follower looks at the lease.
const LEASE_POLL: Duration = Duration::from_millis(200);
/// A leader stops publishing this long before its lease runs out by its own clock, so clock
/// rate differences and the server's expiry timer never let two nodes believe they lead.
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// Timeout of one KV or stream API request.
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// Events read at a time when catching up to the stream's end before leading.
const CATCH_UP_PAGE: u64 = 500;

/// Timing of the lease.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// The lease lapses this long after its last renewal (the bucket's `max_age`).
    pub ttl: Duration,
    /// The leader renews this often.
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> LeaseTiming {
        LeaseTiming { ttl: Duration::from_secs(3), renew_every: Duration::from_millis(750) }
    }
}

impl LeaseTiming {
    /// A TTL in milliseconds (at least 1 s), renewed four times per TTL.
    pub fn from_ttl_ms(ttl_ms: u64) -> LeaseTiming {
        let ttl = Duration::from_millis(ttl_ms.max(1_000));
        LeaseTiming { ttl, renew_every: ttl / 4 }
    }
}

/// A node's role in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Copies the stream; another node leads (or none does, and this one is behind).
    Follower,
    /// No lease is held, and this node is caught up: it tries to take the lease.
    Candidate,
    /// Holds the lease and takes writes.
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            2 => Role::Leader,
            1 => Role::Candidate,
            _ => Role::Follower,
        }
    }
}

/// Another node as last seen in the bucket.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub url: String,
    pub role: String,
    pub head: u64,
}

/// What the lease key holds.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct LeaseValue {
    url: String,
    head: u64,
}

/// A node's view of the cluster, shared by the lease loop, the replicator and the HTTP
/// handlers (`GET /v1/cluster`, `/readyz`, refusals naming the leader).
pub struct Cluster {
    /// This node's URL, as clients reach it.
    pub advertise: String,
    pub timing: LeaseTiming,
    /// Following: last seq stored, the stream's last sequence; failure if the stream
    /// contradicts the ledger.
    pub status: Arc<NatsStatus>,
    role: AtomicU8,
    leader: Mutex<Option<String>>,
    /// Leader: the lease holds until this instant (by this node's monotonic clock).
    lease_until: Mutex<Option<Instant>>,
    members: Mutex<BTreeMap<String, (Member, Instant)>>,
    /// Times this node took the lease.
    pub terms: AtomicU64,
    /// Groups refused by position (another writer appended).
    pub fenced: AtomicU64,
    /// When JetStream last answered this node's cluster work (a lease read or renewal):
    /// a node cut off longer than [`OUT_OF_TOUCH_TTLS`] lease TTLs knows neither its role
    /// nor its lag. Starts at creation, so a node starting up is given that long.
    contact: Mutex<Instant>,
}

/// Lease TTLs after which a member not heard from is dropped from [`Cluster`]'s map.
const MEMBER_FORGET_TTLS: u32 = 20;

/// Lease TTLs without an answer from JetStream after which a node is out of touch (not
/// ready: its reads may be arbitrarily stale and it cannot know who leads).
pub const OUT_OF_TOUCH_TTLS: u32 = 3;

impl Cluster {
    pub fn new(advertise: String, timing: LeaseTiming) -> Cluster {
        Cluster {
            advertise,
            timing,
            status: Arc::new(NatsStatus::default()),
            role: AtomicU8::new(0),
            leader: Mutex::new(None),
            lease_until: Mutex::new(None),
            members: Mutex::new(BTreeMap::new()),
            terms: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
            contact: Mutex::new(Instant::now()),
        }
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::SeqCst))
    }

    fn set_role(&self, role: Role) {
        let old = Role::from_u8(self.role.swap(role as u8, Ordering::SeqCst));
        if old != role {
            tracing::info!(from = old.as_str(), to = role.as_str(), "cluster role changed");
            metrics::counter!("cluster_role_changes_total", "to" => role.as_str()).increment(1);
        }
        metrics::gauge!("cluster_leader").set(if role == Role::Leader { 1.0 } else { 0.0 });
    }

    /// The leader's URL as last seen in the lease (this node's own when it leads).
    pub fn leader(&self) -> Option<String> {
        lock(&self.leader).clone()
    }

    fn set_leader(&self, url: Option<String>) {
        *lock(&self.leader) = url;
    }

    /// The members seen in the last few lease periods (this node included), by URL.
    pub fn members(&self) -> Vec<Member> {
        let fresh = self.timing.ttl * 2;
        lock(&self.members).values().filter(|(_, seen)| seen.elapsed() <= fresh).map(|(m, _)| m.clone()).collect()
    }

    /// Whether this node's lease is still good by its own clock.
    pub fn lease_held(&self) -> bool {
        lock(&self.lease_until).is_some_and(|until| Instant::now() < until)
    }

    /// How long since JetStream last answered this node's cluster work.
    pub fn contact_age(&self) -> Duration {
        lock(&self.contact).elapsed()
    }

    /// How long this node has been cut off from JetStream, if longer than
    /// [`OUT_OF_TOUCH_TTLS`] lease TTLs.
    pub fn out_of_touch(&self) -> Option<Duration> {
        let age = self.contact_age();
        (age > self.timing.ttl * OUT_OF_TOUCH_TTLS).then_some(age)
    }

    fn heard_from_jetstream(&self) {
        *lock(&self.contact) = Instant::now();
    }

    fn set_lease_until(&self, until: Option<Instant>) {
        *lock(&self.lease_until) = until;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `Ledger-Key` header value of an idempotency record.
pub fn key_header(key: &str, record: &KeyRecord) -> String {
    format!("{} {} {} {}", hex::encode(key.as_bytes()), record.fingerprint.to_hex(), record.first_seq, record.count)
}

/// The idempotency records a message carries.
pub fn parse_keys(headers: Option<&HeaderMap>) -> Result<Vec<(String, KeyRecord)>, String> {
    let Some(headers) = headers else { return Ok(vec![]) };
    let mut out = vec![];
    for value in headers.get_all(KEY_HEADER) {
        let text = value.as_str();
        let parts: Vec<&str> = text.split(' ').collect();
        let [key, print, first, count] = parts.as_slice() else { return Err(format!("malformed {KEY_HEADER} header `{text}`")) };
        let key = hex::decode(key).ok().and_then(|k| String::from_utf8(k).ok());
        let print = Digest::from_hex(print);
        let (Some(key), Some(fingerprint), Ok(first_seq), Ok(count)) = (key, print, first.parse::<u64>(), count.parse::<u32>()) else {
            return Err(format!("malformed {KEY_HEADER} header `{text}`"));
        };
        out.push((key, KeyRecord { fingerprint, first_seq, count }));
    }
    Ok(out)
}

/// Publishes each group to the stream before the writer commits it.
pub struct StreamReplicator {
    cluster: Arc<Cluster>,
    client: async_nats::Client,
    runtime: tokio::runtime::Handle,
    batches: AtomicU64,
}

impl StreamReplicator {
    /// `runtime` drives the publish; the writer thread (not a runtime thread) blocks on it.
    pub fn new(cluster: Arc<Cluster>, client: async_nats::Client, runtime: tokio::runtime::Handle) -> StreamReplicator {
        StreamReplicator { cluster, client, runtime, batches: AtomicU64::new(0) }
    }
}

impl Replicator for StreamReplicator {
    fn replicate(&self, group: &ReplicationGroup<'_>) -> Result<(), ReplicationError> {
        // A writer paused past its lease (GC, SIGSTOP, partition) refuses before it tries:
        // another node may lead by now. (Were it to try, the position would fence it, or,
        // if no other node wrote yet, its batch would still continue the one history.)
        if !self.cluster.lease_held() {
            self.cluster.fenced.fetch_add(1, Ordering::Relaxed);
            return Err(ReplicationError::Fenced("this node's lease ran out before the group was published".into()));
        }
        let (Some(first), Some(_)) = (group.events.first(), group.events.last()) else { return Ok(()) };
        if first.event.seq != group.after + 1 || group.events.len() > ATOMIC_BATCH_MAX {
            return Err(ReplicationError::Unavailable(format!(
                "a group of {} events from seq {} cannot follow seq {} in one atomic batch",
                group.events.len(),
                first.event.seq,
                group.after
            )));
        }
        // Each record rides on the message of its last event.
        let mut keys: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (key, record) in &group.keys {
            let last = record.first_seq.saturating_add(u64::from(record.count)).saturating_sub(1);
            keys.entry(last).or_default().push(key_header(key, record));
        }
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        let id = format!("r{}-{}-{n}", first.event.seq, &first.hash.to_hex()[..16]);
        let started = Instant::now();
        let published = self.runtime.block_on(async {
            tokio::time::timeout(PUBLISH_TIMEOUT, publish_group(&self.client, &id, group.after, &group.events, &keys)).await
        });
        metrics::histogram!("replication_publish_seconds").record(started.elapsed().as_secs_f64());
        match published {
            Ok(Ok(())) => {
                let last = group.after + group.events.len() as u64;
                crash_point(last);
                self.cluster.status.confirmed.store(last, Ordering::Relaxed);
                self.cluster.status.stream_last.store(last, Ordering::Relaxed);
                self.cluster.status.published_total.fetch_add(group.events.len() as u64, Ordering::Relaxed);
                metrics::counter!("replicated_events_total").increment(group.events.len() as u64);
                Ok(())
            }
            Ok(Err(e)) => {
                match &e {
                    ReplicationError::Fenced(_) => {
                        self.cluster.fenced.fetch_add(1, Ordering::Relaxed);
                    }
                    ReplicationError::Unknown(_) => metrics::counter!("replication_outcome_unknown_total").increment(1),
                    ReplicationError::Unavailable(_) => {}
                }
                Err(e)
            }
            // The commit may have been stored: the client must not hear "nothing was written".
            Err(_) => {
                metrics::counter!("replication_outcome_unknown_total").increment(1);
                Err(ReplicationError::Unknown(format!("JetStream did not acknowledge within {PUBLISH_TIMEOUT:?}")))
            }
        }
    }

    fn group_events_max(&self) -> usize {
        ATOMIC_BATCH_MAX
    }
}

/// Fault injection for tests: with `CLEDGER_CRASH_AFTER_REPLICATED=N` in the environment,
/// the process aborts as soon as JetStream acknowledged a group reaching seq N, before the
/// writer commits it to sled and answers: the worst moment for a writer to die.
fn crash_point(last: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("CLEDGER_CRASH_AFTER_REPLICATED").ok().and_then(|v| v.parse().ok()));
    if at.is_some_and(|n| last >= n) {
        eprintln!("CLEDGER_CRASH_AFTER_REPLICATED: aborting after JetStream acknowledged seq {last}, before the local commit");
        std::process::abort();
    }
}

/// Publishes `events` (seqs `after + 1` on) as one atomic batch.
async fn publish_group(client: &async_nats::Client, id: &str, after: u64, events: &[&RecordedEvent], keys: &BTreeMap<u64, Vec<String>>) -> Result<(), ReplicationError> {
    let unavailable = |e: &dyn std::fmt::Display| ReplicationError::Unavailable(format!("publishing to JetStream: {e}"));
    let count = events.len();
    for (i, recorded) in events.iter().enumerate() {
        let mut h = ledger_headers(recorded);
        if i == 0 {
            h.insert("Nats-Expected-Last-Sequence", after.to_string().as_str());
        }
        for value in keys.get(&recorded.event.seq).into_iter().flatten() {
            h.append(KEY_HEADER, value.as_str());
        }
        h.insert("Nats-Batch-Id", id);
        h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        let subject = super::subject(&recorded.event);
        let payload = Bytes::from(recorded.canonical.clone());
        if i + 1 < count {
            client.publish_with_headers(subject, h, payload).await.map_err(|e| unavailable(&e))?;
            continue;
        }
        h.insert("Nats-Batch-Commit", "1");
        // From here on the commit may have reached the stream: a failure without an
        // answer leaves the outcome unknown (unless nobody was listening at all).
        let unknown = |e: &dyn std::fmt::Display| ReplicationError::Unknown(format!("committing batch {id} of seqs {} to {}: {e}", after + 1, after + count as u64));
        let reply = client.request_with_headers(subject, h, payload).await.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => unavailable(&e),
            _ => unknown(&e),
        })?;
        let ack: BatchAck = serde_json::from_slice(&reply.payload).map_err(|e| unknown(&format!("the acknowledgement does not parse: {e}")))?;
        if let Some(error) = ack.error {
            // 10071: JSStreamWrongLastSequenceErrF. The stream does not end at our head:
            // another writer appended.
            let code = error.get("err_code").and_then(|c| c.as_u64());
            let text = error.to_string();
            if code == Some(10071) || text.contains("wrong last sequence") {
                return Err(ReplicationError::Fenced(format!("the stream refused a batch after seq {after}: {text}")));
            }
            return Err(ReplicationError::Unavailable(format!("the stream refused the batch: {text}")));
        }
        let last = after + count as u64;
        if ack.seq != Some(last) || ack.count != Some(count as u64) || ack.batch.as_deref() != Some(id) {
            // Acknowledged without error, but not as sent: the stream holds something this
            // writer did not expect. Stop writing and catch up, as when fenced.
            return Err(ReplicationError::Fenced(format!(
                "batch {id} of seqs {} to {last} was acknowledged as {:?} messages ending at {:?}",
                after + 1,
                ack.count,
                ack.seq
            )));
        }
    }
    Ok(())
}

/// The event and idempotency records of a stored stream message, if its bytes decode, are
/// of its sequence and hash to its `Ledger-Hash`.
pub(crate) fn checked_message(seq: u64, payload: &[u8], headers: Option<&HeaderMap>) -> Result<(RecordedEvent, Vec<(String, KeyRecord)>), NatsError> {
    let broken = |reason: String| NatsError::Contradiction(format!("seq {seq}: {reason}"));
    let recorded = RecordedEvent::from_canonical(payload.to_vec()).map_err(|e| broken(format!("the message does not decode: {e}")))?;
    if recorded.event.seq != seq {
        return Err(broken(format!("the message holds event seq {}", recorded.event.seq)));
    }
    let claimed = headers.and_then(|h| h.get("Ledger-Hash")).map(|v| v.as_str().to_string());
    if claimed.as_deref() != Some(recorded.hash.to_hex().as_str()) {
        return Err(broken(format!("the bytes hash to {}, the Ledger-Hash header says {claimed:?}", recorded.hash)));
    }
    let keys = parse_keys(headers).map_err(broken)?;
    Ok((recorded, keys))
}

/// Creates the lease bucket, or opens the existing one.
async fn lease_bucket(js: &jetstream::Context, replicas: usize, timing: LeaseTiming) -> Result<kv::Store, NatsError> {
    if let Ok(store) = js.get_key_value(LEASE_BUCKET).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: LEASE_BUCKET.into(),
        description: "compute-ledger: the writer's lease and the members' heartbeats".into(),
        history: 1,
        max_age: timing.ttl,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(transient)
}

/// Opens (creating if absent) the LEDGER stream and the lease bucket and checks that they
/// can give what replicated mode promises: a stream with at least `settings.replicas`
/// replicas that takes atomic batches (without them, messages after a batch's first would
/// go in unchecked by position) and refuses deletes and purges; a bucket whose `max_age` is
/// the lease's TTL (else a lapsed lease lingers, or a held one vanishes) with as many
/// replicas. An unfit one is [`NatsError::Contradiction`] naming every problem: the node
/// must not start, or go on.
pub async fn open_setup(js: &jetstream::Context, settings: &StreamSettings, timing: LeaseTiming) -> Result<(stream::Stream, kv::Store), NatsError> {
    let mut stream = match tokio::time::timeout(API_TIMEOUT, ensure_stream(js, settings)).await {
        Ok(r) => r?,
        Err(_) => return Err(NatsError::Transient(format!("the LEDGER stream: no answer within {API_TIMEOUT:?}"))),
    };
    let config = within("the LEDGER stream's info", stream.info()).await?.config.clone();
    let kv = within("the lease bucket", async { lease_bucket(js, settings.replicas, timing).await.map_err(|e| e.to_string()) }).await?;
    let bucket = within("the lease bucket's info", kv.status()).await?.info.config;
    let mut problems = stream_unfit(&config, settings.replicas);
    problems.extend(bucket_unfit(&bucket, settings.replicas, timing));
    if problems.is_empty() {
        Ok((stream, kv))
    } else {
        Err(NatsError::Contradiction(format!("replicated mode cannot use this JetStream setup: {}", problems.join("; "))))
    }
}

/// What makes the LEDGER stream unfit for replicated mode (nothing: fit).
fn stream_unfit(config: &stream::Config, replicas: usize) -> Vec<String> {
    let name = &config.name;
    let mut problems = vec![];
    if config.num_replicas < replicas {
        problems.push(format!("stream {name} has {} replica(s), fewer than --stream-replicas {replicas}", config.num_replicas));
    }
    if !config.allow_atomic_publish {
        problems.push(format!("stream {name} does not allow atomic publish (nats-server 2.12+ is needed)"));
    }
    if !config.deny_delete {
        problems.push(format!("stream {name} allows deleting messages (deny_delete is off)"));
    }
    if !config.deny_purge {
        problems.push(format!("stream {name} allows purging (deny_purge is off)"));
    }
    problems
}

/// What makes the lease bucket's stream unfit for the lease (nothing: fit).
fn bucket_unfit(config: &stream::Config, replicas: usize, timing: LeaseTiming) -> Vec<String> {
    let mut problems = vec![];
    if config.max_age != timing.ttl {
        problems.push(format!("bucket {LEASE_BUCKET} has max_age {} ms, not the lease TTL --lease-ttl-ms {}", config.max_age.as_millis(), timing.ttl.as_millis()));
    }
    if config.num_replicas < replicas {
        problems.push(format!("bucket {LEASE_BUCKET} has {} replica(s), fewer than --stream-replicas {replicas}", config.num_replicas));
    }
    problems
}

async fn within<T, E: std::fmt::Display>(what: &str, f: impl std::future::Future<Output = Result<T, E>>) -> Result<T, NatsError> {
    match tokio::time::timeout(API_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| NatsError::Transient(format!("{what}: {e}"))),
        Err(_) => Err(NatsError::Transient(format!("{what}: no answer within {API_TIMEOUT:?}"))),
    }
}

/// Runs this node's part of the cluster until `shutdown`: follow, take the lease when it
/// lapses and this node is caught up, lead while the lease is renewed, follow again.
pub async fn run_cluster(
    ledger: Arc<Ledger>,
    client: async_nats::Client,
    settings: StreamSettings,
    cluster: Arc<Cluster>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let js = jetstream::ContextBuilder::new().timeout(API_TIMEOUT).build(client.clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            break;
        }
        match cluster_until_error(&ledger, &client, &js, &settings, &cluster, shutdown.clone()).await {
            Ok(()) => break,
            Err(NatsError::Contradiction(reason)) => {
                ledger.set_leading(false);
                cluster.set_role(Role::Follower);
                cluster.status.fail(reason);
                break;
            }
            Err(NatsError::Transient(reason)) => {
                tracing::warn!("cluster work paused, retrying in {backoff:?}: {reason}");
                let mut sd = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = sd.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    ledger.set_leading(false);
    cluster.set_lease_until(None);
}

async fn cluster_until_error(
    ledger: &Arc<Ledger>,
    client: &async_nats::Client,
    js: &jetstream::Context,
    settings: &StreamSettings,
    cluster: &Arc<Cluster>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), NatsError> {
    let (stream, kv) = open_setup(js, settings, cluster.timing).await?;
    cluster.status.connected.store(true, Ordering::Relaxed);
    let members = tokio::spawn(watch_members(kv.clone(), cluster.clone(), ledger.clone(), shutdown.clone()));
    let result = async {
        loop {
            let Some((revision, sent)) = follow_until_lease(ledger, client, &stream, &kv, settings, cluster, &mut shutdown).await? else { return Ok(()) };
            lead(ledger, &stream, &kv, cluster, revision, sent, &mut shutdown).await?;
            if *shutdown.borrow() {
                return Ok(());
            }
        }
    }
    .await;
    members.abort();
    result
}

/// Follows the stream until this node takes the lease (its revision, and when the request
/// that took it was sent) or `shutdown` (None).
async fn follow_until_lease(
    ledger: &Arc<Ledger>,
    client: &async_nats::Client,
    stream: &stream::Stream,
    kv: &kv::Store,
    settings: &StreamSettings,
    cluster: &Arc<Cluster>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<(u64, Instant)>, NatsError> {
    ledger.set_leading(false);
    cluster.set_lease_until(None);
    cluster.set_role(Role::Follower);
    // A barrier through the writer's queue: a group it was publishing when this node stopped
    // leading (a paused writer whose batch JetStream took) is committed before the follower
    // reads the head to start from. Appends queued after `set_leading(false)` are refused.
    // (A stopped writer answers nothing: the loop below gives the lease up instead.)
    if ledger.failure().is_none() {
        ledger.replicate(vec![]).await.map_err(transient)?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(run_follower(ledger.clone(), client.clone(), settings.name.clone(), cluster.status.clone(), stopped));
    let outcome = async {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LEASE_POLL) => {}
                _ = shutdown.changed() => return Ok(None),
            }
            if let Some(reason) = cluster.status.failure() {
                return Err(NatsError::Contradiction(reason));
            }
            let entry = match within("reading the lease", kv.entry(LEASE_KEY)).await {
                Ok(entry) => {
                    cluster.heard_from_jetstream();
                    entry
                }
                Err(e) => {
                    tracing::debug!("{e:?}");
                    continue;
                }
            };
            let held = entry.as_ref().filter(|e| e.operation == kv::Operation::Put);
            let lease = held.map(|e| (e.revision, serde_json::from_slice::<LeaseValue>(&e.value).ok()));
            let renew = match follow_step(ledger.failure().is_some(), lease, &cluster.advertise) {
                FollowStep::FollowOther(leader) => {
                    cluster.set_leader(leader);
                    cluster.set_role(Role::Follower);
                    continue;
                }
                FollowStep::GiveUp { release } => {
                    if let Some(revision) = release {
                        let _ = within("releasing the lease", kv.delete_expect_revision(LEASE_KEY, Some(revision))).await;
                    }
                    return Err(writer_stopped(ledger));
                }
                FollowStep::TryTake { renew } => renew,
            };
            // No lease, or one this node held before it restarted: take it if caught up.
            let Ok(info) = within("the stream's info", stream.get_info()).await else { continue };
            let last = info.state.last_sequence;
            cluster.status.stream_last.store(last, Ordering::Relaxed);
            let head = ledger.head().seq;
            if head != last {
                cluster.set_leader(None);
                cluster.set_role(Role::Follower);
                continue;
            }
            cluster.set_role(Role::Candidate);
            let value = lease_value(cluster, head);
            // The lease runs from when the request was sent, not when its answer came.
            let sent = Instant::now();
            let taken = match renew {
                Some(revision) => within("renewing this node's old lease", kv.update(LEASE_KEY, value, revision)).await,
                None => within("creating the lease", kv.create(LEASE_KEY, value)).await,
            };
            match taken {
                Ok(revision) => return Ok(Some((revision, sent))),
                Err(e) => tracing::debug!("lease not taken: {e:?}"),
            }
        }
    }
    .await;
    let _ = stop.send(true);
    let _ = follower.await;
    outcome
}

/// What a following node does about the lease it just read.
#[derive(Debug, PartialEq, Eq)]
enum FollowStep {
    /// Another node holds it (its URL, if the value parses: one that does not is never
    /// taken for this node's own).
    FollowOther(Option<String>),
    /// This node's writer has stopped: it can never write again, so it never takes the
    /// lease, and releases one it held (its revision) so another node takes over at once.
    GiveUp { release: Option<u64> },
    /// No lease, or this node's own from before it restarted (its revision): take it if
    /// caught up.
    TryTake { renew: Option<u64> },
}

/// `lease`: the lease key's revision and value, if it is held.
fn follow_step(writer_stopped: bool, lease: Option<(u64, Option<LeaseValue>)>, advertise: &str) -> FollowStep {
    let mine = match lease {
        Some((_, Some(holder))) if holder.url != advertise => return FollowStep::FollowOther(Some(holder.url)),
        Some((_, None)) => return FollowStep::FollowOther(None),
        Some((revision, Some(_))) => Some(revision),
        None => None,
    };
    if writer_stopped {
        FollowStep::GiveUp { release: mine }
    } else {
        FollowStep::TryTake { renew: mine }
    }
}

/// The end of this node's part in the cluster once its writer has stopped.
fn writer_stopped(ledger: &Ledger) -> NatsError {
    let reason = ledger.failure().map_or_else(|| "unknown".to_string(), |f| f.reason);
    NatsError::Contradiction(format!("this node's writer stopped ({reason}): it gave up the lease and never leads again"))
}

fn lease_value(cluster: &Cluster, head: u64) -> Bytes {
    Bytes::from(serde_json::to_vec(&LeaseValue { url: cluster.advertise.clone(), head }).unwrap_or_default())
}

/// Copies the stream into the ledger up to its last sequence (the follower has stopped).
async fn catch_up(ledger: &Ledger, stream: &stream::Stream) -> Result<u64, NatsError> {
    let last = within("the stream's info", stream.get_info()).await?.state.last_sequence;
    let head = ledger.head().seq;
    if head > last {
        return Err(NatsError::Contradiction(format!("this node holds seq {head}, the stream ends at {last}")));
    }
    if head > 0 {
        check_stream_at(stream, ledger, head, super::Flavor::Canonical).await?;
    }
    while ledger.head().seq < last {
        let from = ledger.head().seq + 1;
        let to = last.min(from + CATCH_UP_PAGE - 1);
        let mut events = vec![];
        let mut keys = vec![];
        for seq in from..=to {
            let message = within("reading the stream", stream.get_raw_message(seq)).await?;
            let (recorded, k) = checked_message(seq, &message.payload, Some(&message.headers))?;
            events.push(recorded);
            keys.extend(k);
        }
        let replicated = ledger.replicate_with_keys(events, keys).await.map_err(transient)?;
        if let Some(failure) = replicated.refused {
            return Err(NatsError::Contradiction(format!("seq {}: {}", failure.seq, failure.reason)));
        }
    }
    Ok(last)
}

/// Leads while the lease is renewed. Returns when the lease is lost (the caller follows
/// again) or at shutdown (the lease is released so another node takes over at once).
async fn lead(
    ledger: &Arc<Ledger>,
    stream: &stream::Stream,
    kv: &kv::Store,
    cluster: &Arc<Cluster>,
    mut revision: u64,
    taken_at: Instant,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), NatsError> {
    cluster.set_lease_until(Some(taken_at + cluster.timing.ttl.saturating_sub(LEASE_MARGIN)));
    // The stream may have grown since this node's head was checked (a writer paused past
    // its lease appended): read it to its end before taking writes.
    let caught_up = catch_up(ledger, stream).await;
    let last = match caught_up {
        Ok(last) => last,
        Err(e) => {
            cluster.set_lease_until(None);
            let _ = within("releasing the lease", kv.delete_expect_revision(LEASE_KEY, Some(revision))).await;
            return Err(e);
        }
    };
    // Catching up may have outlasted the lease: take writes only while it is still held.
    if !cluster.lease_held() {
        match renew_lease(kv, cluster, ledger.head().seq, revision).await {
            Renewal::Renewed(r) => revision = r,
            Renewal::Lost(reason) | Renewal::Failed(reason) => {
                tracing::warn!("the lease ran out while catching up ({reason}): following");
                cluster.set_lease_until(None);
                return Ok(());
            }
        }
    }
    cluster.status.confirmed.store(last, Ordering::Relaxed);
    cluster.set_leader(Some(cluster.advertise.clone()));
    cluster.terms.fetch_add(1, Ordering::Relaxed);
    ledger.set_leading(true);
    cluster.set_role(Role::Leader);
    tracing::info!(head = last, revision, "took the lease: this node leads");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cluster.timing.renew_every) => {}
            _ = shutdown.changed() => {
                give_up_lease(ledger, cluster, kv, revision).await;
                tracing::info!("released the lease at shutdown");
                return Ok(());
            }
        }
        if ledger.failure().is_some() {
            // A leader whose writer stopped would renew forever and no other node could
            // take over: release the lease now.
            give_up_lease(ledger, cluster, kv, revision).await;
            tracing::error!("the writer stopped: released the lease");
            return Err(writer_stopped(ledger));
        }
        let fenced = !ledger.is_leading();
        if fenced {
            // The writer was refused by position (or its lease ran out): this node may still
            // hold the lease. Read the stream to its end, then lead again if the renewal
            // below shows the lease is still this node's.
            tracing::warn!("the writer was fenced; catching up with the stream");
            catch_up(ledger, stream).await?;
        }
        match renew_lease(kv, cluster, ledger.head().seq, revision).await {
            Renewal::Renewed(r) => {
                revision = r;
                if fenced {
                    ledger.set_leading(true);
                    tracing::info!(head = ledger.head().seq, "still holding the lease after catching up: leading again");
                }
            }
            // The key has a newer revision (10071, wrong last sequence): another node
            // holds the lease. Or the renewal failed and the lease ran out by this clock.
            Renewal::Lost(reason) => {
                stop_leading(ledger, cluster, &reason);
                return Ok(());
            }
            Renewal::Failed(reason) if !cluster.lease_held() => {
                stop_leading(ledger, cluster, &reason);
                return Ok(());
            }
            Renewal::Failed(reason) => tracing::warn!("could not renew the lease yet: {reason}"),
        }
    }
}

/// The outcome of one renewal of this node's lease.
enum Renewal {
    /// Renewed: its new revision; the lease runs from when the request was sent.
    Renewed(u64),
    /// Refused by revision (JetStream's 10071, wrong last sequence): the key changed since
    /// this node's revision, so another node holds it (or it lapsed).
    Lost(String),
    /// No answer, or another error: the outcome is unknown.
    Failed(String),
}

async fn renew_lease(kv: &kv::Store, cluster: &Cluster, head: u64, revision: u64) -> Renewal {
    let sent = Instant::now();
    match tokio::time::timeout(API_TIMEOUT, kv.update(LEASE_KEY, lease_value(cluster, head), revision)).await {
        Ok(Ok(r)) => {
            cluster.heard_from_jetstream();
            cluster.set_lease_until(Some(sent + cluster.timing.ttl.saturating_sub(LEASE_MARGIN)));
            Renewal::Renewed(r)
        }
        // async-nats maps JetStream's error code 10071 to this kind (not its text).
        Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            cluster.heard_from_jetstream();
            Renewal::Lost(e.to_string())
        }
        Ok(Err(e)) => Renewal::Failed(e.to_string()),
        Err(_) => Renewal::Failed(format!("no answer within {API_TIMEOUT:?}")),
    }
}

fn stop_leading(ledger: &Ledger, cluster: &Cluster, reason: &str) {
    tracing::warn!("lost the lease ({reason}): following");
    step_down(ledger, cluster);
}

/// This node stops taking writes and no longer names itself (or anyone) the leader.
fn step_down(ledger: &Ledger, cluster: &Cluster) {
    ledger.set_leading(false);
    cluster.set_lease_until(None);
    cluster.set_leader(None);
    cluster.set_role(Role::Follower);
}

/// Steps down and deletes the lease this node holds at `revision`, so another node can take
/// it at once instead of waiting for it to expire.
async fn give_up_lease(ledger: &Ledger, cluster: &Cluster, kv: &kv::Store, revision: u64) {
    step_down(ledger, cluster);
    let _ = within("releasing the lease", kv.delete_expect_revision(LEASE_KEY, Some(revision))).await;
}

/// Publishes this node's heartbeat and watches the others'.
async fn watch_members(kv: kv::Store, cluster: Arc<Cluster>, ledger: Arc<Ledger>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use futures::StreamExt;
    let id = format!("member.{}", &blake3::hash(cluster.advertise.as_bytes()).to_hex()[..16]);
    let mut watch = None;
    let mut beat = tokio::time::interval(cluster.timing.renew_every);
    loop {
        if watch.is_none() {
            watch = kv.watch("member.>").await.ok();
        }
        tokio::select! {
            _ = beat.tick() => {
                let me = Member { url: cluster.advertise.clone(), role: cluster.role().as_str().into(), head: ledger.head().seq };
                if let Ok(value) = serde_json::to_vec(&me) {
                    let _ = tokio::time::timeout(API_TIMEOUT, kv.put(id.as_str(), Bytes::from(value))).await;
                }
                let mut members = lock(&cluster.members);
                members.insert(me.url.clone(), (me, Instant::now()));
                // A member not heard from in a while is forgotten (members() shows only
                // those seen in the last two TTLs), so the map does not grow with every
                // address a node ever had.
                let forget = cluster.timing.ttl * MEMBER_FORGET_TTLS;
                members.retain(|_, (_, seen)| seen.elapsed() <= forget);
            }
            entry = async { match watch.as_mut() { Some(w) => w.next().await, None => std::future::pending().await } } => {
                match entry {
                    Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                        if let Ok(member) = serde_json::from_slice::<Member>(&entry.value) {
                            lock(&cluster.members).insert(member.url.clone(), (member, Instant::now()));
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => watch = None,
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_records_survive_the_trip_through_headers() {
        let records = [
            ("k-1", KeyRecord { fingerprint: Digest([7; 32]), first_seq: 41, count: 3 }),
            ("a key with spaces and ünïcode", KeyRecord { fingerprint: Digest([0; 32]), first_seq: u64::MAX - 1, count: u32::MAX }),
        ];
        let mut headers = HeaderMap::new();
        for (key, record) in &records {
            headers.append(KEY_HEADER, key_header(key, record).as_str());
        }
        let parsed = parse_keys(Some(&headers)).unwrap();
        assert_eq!(parsed, records.iter().map(|(k, r)| (k.to_string(), *r)).collect::<Vec<_>>());
        assert_eq!(parse_keys(None).unwrap(), vec![]);
    }

    #[test]
    fn a_node_whose_writer_stopped_never_holds_the_lease() {
        let me = "http://a";
        let value = |url: &str| Some(LeaseValue { url: url.into(), head: 7 });
        // Its own lease (from before a restart, or while leading) is released; none is taken.
        assert_eq!(follow_step(true, Some((9, value(me))), me), FollowStep::GiveUp { release: Some(9) });
        assert_eq!(follow_step(true, None, me), FollowStep::GiveUp { release: None });
        // Another node's lease is never touched.
        assert_eq!(follow_step(true, Some((9, value("http://b"))), me), FollowStep::FollowOther(Some("http://b".into())));
        // A healthy node takes a free lease or renews its own.
        assert_eq!(follow_step(false, None, me), FollowStep::TryTake { renew: None });
        assert_eq!(follow_step(false, Some((9, value(me))), me), FollowStep::TryTake { renew: Some(9) });
        // A value that does not parse is someone else's, never this node's to renew.
        assert_eq!(follow_step(false, Some((9, None)), me), FollowStep::FollowOther(None));
    }

    #[test]
    fn a_stream_or_bucket_that_cannot_give_what_replicated_mode_promises_is_named() {
        let fit = stream::Config { name: "LEDGER".into(), num_replicas: 3, allow_atomic_publish: true, deny_delete: true, deny_purge: true, ..Default::default() };
        assert_eq!(stream_unfit(&fit, 3), Vec::<String>::new());
        assert_eq!(stream_unfit(&fit, 1), Vec::<String>::new(), "more replicas than asked for is fine");
        let outbox = stream::Config { num_replicas: 1, allow_atomic_publish: false, deny_delete: false, deny_purge: false, ..fit.clone() };
        let problems = stream_unfit(&outbox, 3).join("; ");
        for named in ["1 replica(s), fewer than --stream-replicas 3", "atomic publish", "deny_delete", "deny_purge"] {
            assert!(problems.contains(named), "{named} not named in: {problems}");
        }
        let timing = LeaseTiming::from_ttl_ms(3_000);
        let bucket = stream::Config { max_age: Duration::from_secs(3), num_replicas: 3, ..Default::default() };
        assert_eq!(bucket_unfit(&bucket, 3, timing), Vec::<String>::new());
        let other_ttl = bucket_unfit(&bucket, 3, LeaseTiming::from_ttl_ms(2_000)).join("; ");
        assert!(other_ttl.contains("max_age 3000 ms, not the lease TTL --lease-ttl-ms 2000"), "{other_ttl}");
        assert_eq!(bucket_unfit(&stream::Config { num_replicas: 1, ..bucket }, 3, timing).len(), 1);
    }

    #[test]
    fn a_malformed_record_is_refused_not_guessed() {
        for bad in ["", "6b", "6b 00 1 1", "zz 0707070707070707070707070707070707070707070707070707070707070707 1 1", "6b 0707070707070707070707070707070707070707070707070707070707070707 x 1", "6b 0707070707070707070707070707070707070707070707070707070707070707 1 1 extra"] {
            let mut headers = HeaderMap::new();
            headers.insert(KEY_HEADER, bad);
            assert!(parse_keys(Some(&headers)).is_err(), "`{bad}` was accepted");
        }
    }
}
