//! Replicated mode, end to end, with real processes: 3 clustered nats-servers (JetStream,
//! `sync_interval: always`) and 3 `cledger serve --replicated` nodes on loopback. Clients
//! append without pause (single events and batches, each with an idempotency key), follow
//! 421 to the leader and retry 503s and dropped connections with the same key. A nemesis
//! SIGKILLs the leader, SIGSTOPs it past its lease and wakes it (it must be fenced), and
//! SIGKILLs a nats-server and restarts it. At the end every node is read: every acknowledged
//! (seq, hash) is on every node, the chains are identical and verify, and no request
//! produced two events, and every node's views equal a rebuild. Failover times (leader gone → first acknowledged append on another
//! node) are printed.
//!
//! `CLEDGER_NEMESIS_ROUNDS=N` runs N rounds (default 3: one of each fault; CI). A long run:
//! `CLEDGER_NEMESIS_ROUNDS=21 cargo test -p tests --test replicated -- --nocapture`.

use e2e::nats::{self, NatsNode, StreamReader};
use e2e::server::{invoice, small_grant, Options, Server};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LEASE_TTL_MS: u64 = 3_000;
const CLIENTS: usize = 3;
/// Bounds against hangs, not performance assertions.
const WAIT: Duration = Duration::from_secs(30);

/// One acknowledged request: its key, the (seq, hash) of each event, who answered and when.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    events: Vec<(u64, String)>,
    node: String,
    at: Instant,
}

#[derive(Default)]
struct Record {
    acks: Mutex<Vec<Ack>>,
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Record {
    fn violation(&self, v: String) {
        eprintln!("VIOLATION: {v}");
        self.violations.lock().unwrap().push(v);
    }

    /// The first acknowledgement after `t0` by a node other than `not`.
    fn first_ack_after(&self, t0: Instant, not: &str) -> Option<Instant> {
        self.acks.lock().unwrap().iter().filter(|a| a.at > t0 && a.node != not).map(|a| a.at).min()
    }
}

fn http(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(timeout).build().expect("client")
}

/// A client appending to its own contract until told to stop: a grant, then single
/// invoices and batches of three, each request with its key, retried until acknowledged.
fn client(id: usize, urls: Vec<String>, record: Arc<Record>) {
    // Longer than a publish takes through a nats-server failure; a paused node costs this.
    let http = http(Duration::from_secs(2));
    let contract = format!("rc{id}");
    let mut target = id % urls.len();
    let mut leader: Option<String> = None;
    // A node that just timed out (paused or dead): the others may name it as leader until
    // its lease lapses, so try the others meanwhile.
    let mut avoid: Option<(usize, Instant)> = None;
    let next = |target: usize, avoid: &Option<(usize, Instant)>| {
        let skip = avoid.filter(|(_, at)| at.elapsed() < Duration::from_secs(5)).map(|(i, _)| i);
        (1..=urls.len()).map(|k| (target + k) % urls.len()).find(|i| Some(*i) != skip).unwrap_or(target)
    };
    let mut n = 0usize;
    while !record.stop.load(Ordering::Relaxed) {
        let (path, body, key) = if n == 0 {
            ("/v1/events", small_grant(&contract), format!("{contract}-grant"))
        } else if n % 2 == 1 {
            ("/v1/events", invoice(&contract, &format!("I{n}"), "1.00"), format!("{contract}-i{n}"))
        } else {
            let events: Vec<Value> = (0..3).map(|j| invoice(&contract, &format!("B{n}-{j}"), "2.00")).collect();
            ("/v1/events/batch", serde_json::json!({ "events": events }), format!("{contract}-b{n}"))
        };
        n += 1;
        let body = body.to_string();
        // Retry this request, with its key, until it is acknowledged (or the test ends).
        while !record.stop.load(Ordering::Relaxed) {
            let base = leader.clone().unwrap_or_else(|| urls[target].clone());
            let sent = http
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .header("idempotency-key", &key)
                .body(body.clone())
                .send();
            let Ok(response) = sent else {
                // Connection refused or timed out: that node is down or paused.
                if let Some(i) = urls.iter().position(|u| *u == base) {
                    avoid = Some((i, Instant::now()));
                    target = i;
                }
                leader = None;
                target = next(target, &avoid);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let status = response.status().as_u16();
            let json: Value = response.json().unwrap_or(Value::Null);
            match status {
                201 => {
                    let receipts = if path.ends_with("batch") { json["receipts"].as_array().cloned().unwrap_or_default() } else { vec![json.clone()] };
                    let events: Vec<(u64, String)> =
                        receipts.iter().map(|r| (r["seq"].as_u64().unwrap_or(0), r["hash"].as_str().unwrap_or("").to_string())).collect();
                    if events.is_empty() || events.iter().any(|(s, h)| *s == 0 || h.is_empty()) {
                        record.violation(format!("{key}: a 201 without receipts: {json}"));
                    }
                    record.acks.lock().unwrap().push(Ack { key: key.clone(), events, node: base.clone(), at: Instant::now() });
                    break;
                }
                421 => {
                    leader = json["error"]["leader"].as_str().map(str::to_string);
                    let avoided = avoid.filter(|(_, at)| at.elapsed() < Duration::from_secs(5)).map(|(i, _)| urls[i].clone());
                    if leader.is_none() || leader == avoided {
                        leader = None;
                        target = next(target, &avoid);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                503 => {
                    if json["error"]["code"] == "no_leader" {
                        leader = None;
                        target = next(target, &avoid);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    record.violation(format!("{key}: {status} from {base}: {json}"));
                    break;
                }
            }
        }
    }
}

struct Cluster {
    nats: Vec<NatsNode>,
    nodes: Vec<Server>,
    urls: Vec<String>,
    alive: Vec<bool>,
    nats_urls: String,
    _keys: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// The cluster, its nodes started with `env`.
    fn start_with(env: &[(&str, &str)]) -> Cluster {
        let nats = nats::cluster(3);
        let nats_urls = nats.iter().map(NatsNode::url).collect::<Vec<_>>().join(",");
        let keys = tempfile::tempdir().expect("tempdir");
        let key = keys.path().join("signing.key");
        std::fs::write(&key, format!("{}\n", "7e".repeat(32))).expect("key file");
        let mut nodes = vec![];
        let mut urls = vec![];
        for _ in 0..3 {
            let port = nats::free_port();
            let url = format!("http://127.0.0.1:{port}");
            let args = [
                "--nats",
                &nats_urls,
                "--replicated",
                "--advertise",
                &url,
                "--signing-key",
                &key.display().to_string(),
                "--lease-ttl-ms",
                &LEASE_TTL_MS.to_string(),
                "--checkpoint-interval-s",
                "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            nodes.push(Server::with(Options { listen: Some(format!("127.0.0.1:{port}")), args, env, ..Options::default() }));
            urls.push(url);
        }
        Cluster { nats, nodes, urls, alive: vec![true; 3], nats_urls, _keys: keys }
    }

    /// `GET /v1/cluster` of node `i`, if it answers within a second.
    fn view(&self, i: usize) -> Option<Value> {
        if !self.alive[i] {
            return None;
        }
        http(Duration::from_secs(1)).get(format!("{}/v1/cluster", self.urls[i])).send().ok()?.json().ok()
    }

    /// The node that leads (by its own word), waiting for one.
    fn leader(&self, except: Option<usize>) -> usize {
        let mut found = None;
        nats::eventually(WAIT, "a leader", || {
            found = (0..3).filter(|i| Some(*i) != except).find(|i| self.view(*i).is_some_and(|v| v["role"] == "leader"));
            found.is_some()
        });
        found.expect("found")
    }

    fn dump(&self) -> String {
        (0..3).map(|i| format!("--- node {} ({}):\n{}", i, self.urls[i], tail(&self.nodes[i].stderr(), 40))).collect::<Vec<_>>().join("\n")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

fn wait_ack_after(record: &Record, t0: Instant, not: &str, what: &str, cluster: &Cluster) -> Duration {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(at) = record.first_ack_after(t0, not) {
            return at - t0;
        }
        if Instant::now() > deadline {
            panic!("no acknowledged append within {WAIT:?} after {what}\n{}", cluster.dump());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

#[test]
fn acknowledged_appends_survive_leader_kills_pauses_and_nats_failures_on_every_node() {
    if !nats::available() {
        return;
    }
    let started = Instant::now();
    let rounds: usize = std::env::var("CLEDGER_NEMESIS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut cluster = Cluster::start();
    let first = cluster.leader(None);
    eprintln!("leader: node {first} ({}) after {:?}", cluster.urls[first], started.elapsed());
    // Every other node names it.
    nats::eventually(WAIT, "the followers name the leader", || {
        (0..3).filter(|i| *i != first).all(|i| cluster.view(i).is_some_and(|v| v["role"] == "follower" && v["leader"] == cluster.urls[first].as_str()))
    });
    // A write to a follower is refused with the leader's address.
    let follower = (first + 1) % 3;
    let refused = http(Duration::from_secs(5))
        .post(format!("{}/v1/events", cluster.urls[follower]))
        .header("content-type", "application/json")
        .body(small_grant("refused").to_string())
        .send()
        .expect("send");
    assert_eq!(refused.status().as_u16(), 421);
    let body: Value = refused.json().expect("json");
    assert_eq!((body["error"]["code"].as_str(), body["error"]["leader"].as_str()), (Some("not_leader"), Some(cluster.urls[first].as_str())));

    let record = Arc::new(Record::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (urls, record) = (cluster.urls.clone(), record.clone());
            std::thread::spawn(move || client(id, urls, record))
        })
        .collect();
    nats::eventually(WAIT, "appends acknowledged", || record.acks.lock().unwrap().len() >= 20);

    // An auditor keeps the first leader's checkpoint; later leaders' must extend it.
    let verifier = cluster.nodes[0]
        .stderr()
        .lines()
        .find_map(|l| l.split("verifier_key=").nth(1).map(|k| k.split_whitespace().next().unwrap_or("").to_string()))
        .expect("the node logs its verifier key");
    let kept = cluster._keys.path().join("kept-checkpoint");
    let audit = |url: &str| e2e::run(&["verify", "--url", url, "--key", &verifier, "--trusted-checkpoint", &kept.display().to_string()]);
    nats::eventually(WAIT, "the first leader's checkpoint verifies", || audit(&cluster.urls[first]).0 == 0);
    let kept_first = std::fs::read_to_string(&kept).expect("a kept checkpoint");

    let mut failovers: Vec<(String, Duration)> = vec![];
    for round in 0..rounds {
        match round % 3 {
            0 => {
                let leader = cluster.leader(None);
                let url = cluster.urls[leader].clone();
                let t0 = Instant::now();
                cluster.nodes[leader].kill();
                cluster.alive[leader] = false;
                let took = wait_ack_after(&record, t0, &url, "SIGKILL of the leader", &cluster);
                eprintln!("round {round}: SIGKILL leader node {leader}: first append acknowledged by another node after {took:?}");
                failovers.push(("kill".into(), took));
                cluster.nodes[leader].start_again();
                cluster.alive[leader] = true;
            }
            1 => {
                let leader = cluster.leader(None);
                let url = cluster.urls[leader].clone();
                let pid = cluster.nodes[leader].pid();
                let t0 = Instant::now();
                signal(pid, libc::SIGSTOP);
                cluster.alive[leader] = false;
                // A request sent to the paused writer waits in its socket until it wakes.
                let zombie_url = url.clone();
                let zombie = std::thread::spawn(move || {
                    http(Duration::from_secs(30))
                        .post(format!("{zombie_url}/v1/events"))
                        .header("content-type", "application/json")
                        .header("idempotency-key", "zombie")
                        .body(small_grant("zombie").to_string())
                        .send()
                        .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
                });
                let took = wait_ack_after(&record, t0, &url, "SIGSTOP of the leader", &cluster);
                eprintln!("round {round}: SIGSTOP leader node {leader}: first append acknowledged by another node after {took:?}");
                failovers.push(("pause".into(), took));
                // Past its lease by then (another node took it): wake it up.
                std::thread::sleep(Duration::from_millis(500));
                signal(pid, libc::SIGCONT);
                cluster.alive[leader] = true;
                let (status, text) = zombie.join().expect("zombie thread").expect("the woken node answers");
                assert!(status == 421 || status == 503, "the paused writer acknowledged a write after waking: {status} {text}");
                let new_leader = cluster.leader(Some(leader));
                let deadline = Instant::now() + WAIT;
                loop {
                    let view = cluster.view(leader);
                    if view.as_ref().is_some_and(|v| v["role"] != "leader" && v["leader"] == cluster.urls[new_leader].as_str()) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the woken node does not follow node {new_leader}: {view:?}\n{}", cluster.dump());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            _ => {
                let victim = (round / 3) % 3;
                let t0 = Instant::now();
                cluster.nats[victim].kill();
                std::thread::sleep(Duration::from_secs(2));
                cluster.nats[victim].restart();
                let took = wait_ack_after(&record, t0 + Duration::from_secs(2), "", "a nats-server restart", &cluster);
                eprintln!("round {round}: SIGKILL nats-server n{}: appends acknowledged {took:?} after its restart", victim + 1);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    record.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let violations = record.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "violations: {violations:#?}\n{}", cluster.dump());

    // Every node converges on the stream.
    let reader = StreamReader::connect(&cluster.nats_urls);
    let last = reader.state("LEDGER").expect("stream").2;
    nats::eventually(WAIT, "every node caught up with the stream", || (0..3).all(|i| cluster.nodes[i].head_seq() == last));
    let chains: Vec<Vec<(u64, String)>> = (0..3)
        .map(|i| cluster.nodes[i].all_events().iter().map(|e| (e["seq"].as_u64().expect("seq"), e["hash"].as_str().expect("hash").to_string())).collect())
        .collect();
    assert_eq!(chains[0].len() as u64, last, "node 0 holds the whole stream");
    assert!(chains[0].iter().enumerate().all(|(i, (seq, _))| *seq == i as u64 + 1), "seqs 1..=N in order");
    assert_eq!(chains[0], chains[1], "nodes 0 and 1 hold the same chain");
    assert_eq!(chains[0], chains[2], "nodes 0 and 2 hold the same chain");
    let stored: BTreeMap<u64, String> = chains[0].iter().cloned().collect();
    let acks = record.acks.lock().unwrap().clone();
    // Every acknowledged event is there, at its seq, with its hash; a key acknowledged twice
    // (a retry) names the same events.
    let mut by_key: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for ack in &acks {
        for (seq, hash) in &ack.events {
            assert_eq!(stored.get(seq), Some(hash), "acknowledged event {seq} ({hash}, key {}, from {}) is not on the nodes", ack.key, ack.node);
        }
        if let Some(before) = by_key.insert(ack.key.clone(), ack.events.clone()) {
            assert_eq!(before, ack.events, "key {} acknowledged with two different outcomes", ack.key);
        }
    }
    // No request produced two events: every invoice id (one per request's event) appears
    // once, and each contract was granted once.
    let events = cluster.nodes[0].all_events();
    let mut seen = HashSet::new();
    for e in &events {
        let event = &e["event"];
        let id = format!("{} {} {}", event["contract_id"], event["type"], event["data"]["invoice_id"]);
        assert!(seen.insert(id.clone()), "two events for one request: {id}");
    }
    assert!(!events.iter().any(|e| e["event"]["contract_id"] == "zombie"), "the paused writer's write is not in the chain");
    assert!(events.iter().all(|e| e["event"]["contract_id"].is_string()), "events carry their contract");
    let n_events = events.len();

    // The last leader's checkpoints extend the one kept from the first leader.
    let last_leader = cluster.leader(None);
    let (code, out, err) = audit(&cluster.urls[last_leader]);
    assert_eq!(code, 0, "the last leader's export does not extend the first leader's checkpoint: {out}\n{err}");
    assert_ne!(std::fs::read_to_string(&kept).expect("kept"), kept_first, "the kept checkpoint moved forward");
    // The chains verify, on every node, from their stores; each node's latest checkpoint
    // (signed by whichever node led when it was made) verifies with the one cluster key.
    let dirs: Vec<_> = cluster.nodes.iter().map(|n| n.data.clone()).collect();
    for node in &mut cluster.nodes {
        node.stop_ok();
    }
    for dir in &dirs {
        let (code, out, err) = e2e::run(&["verify", "--data", &dir.display().to_string(), "--key", &verifier]);
        assert_eq!(code, 0, "verify {}: {out}\n{err}", dir.display());
        // Views kept by leading and by following equal views rebuilt from the chain.
        e2e::soak::check_views(dir);
    }

    let mut times: Vec<Duration> = failovers.iter().map(|(_, d)| *d).collect();
    times.sort();
    eprintln!(
        "replicated: {rounds} nemesis rounds, {} requests acknowledged, {n_events} events; failover (leader gone -> first ack on another node, lease TTL {LEASE_TTL_MS} ms): {:?}; p50 {:?}, p99 {:?}, max {:?}; test took {:?}",
        acks.len(),
        failovers,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or_default(),
        started.elapsed()
    );
}

/// One keyed POST of `body` to `url` (no retries): status, body, replayed header.
fn post_keyed(url: &str, key: &str, body: &Value) -> Result<(u16, Value, bool), reqwest::Error> {
    let response = http(Duration::from_secs(10))
        .post(format!("{url}/v1/events"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()?;
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    Ok((response.status().as_u16(), response.json().unwrap_or(Value::Null), replayed))
}

#[test]
fn a_writer_that_dies_after_the_stream_took_its_group_loses_nothing_and_a_retry_replays() {
    if !nats::available() {
        return;
    }
    // Every node would abort once JetStream acknowledged seq 3, before its own commit.
    let mut cluster = Cluster::start_with(&[("CLEDGER_CRASH_AFTER_REPLICATED", "3")]);
    let first = cluster.leader(None);
    let url = cluster.urls[first].clone();
    assert_eq!(post_keyed(&url, "g", &small_grant("crash")).expect("grant").0, 201);
    assert_eq!(post_keyed(&url, "i1", &invoice("crash", "I1", "1.00")).expect("i1").0, 201);
    // The group of seq 3 reaches the stream's quorum; the writer dies before answering.
    let lost = post_keyed(&url, "i2", &invoice("crash", "I2", "1.00"));
    assert!(lost.is_err(), "the dying writer answered: {lost:?}");
    let status = cluster.nodes[first].wait_crash(WAIT);
    assert!(!status.success(), "the writer aborted: {status:?}");
    cluster.alive[first] = false;
    let reader = StreamReader::connect(&cluster.nats_urls);
    assert_eq!(reader.state("LEDGER").expect("stream").2, 3, "the stream holds the group the writer never acknowledged");
    // The client retries with its key on the new leader: the original event, not a copy.
    let next = cluster.leader(Some(first));
    let (code, body, replayed) = post_keyed(&cluster.urls[next], "i2", &invoice("crash", "I2", "1.00")).expect("retry");
    assert_eq!((code, body["seq"].as_u64(), replayed), (201, Some(3), true), "{body}");
    let hash = reader.message("LEDGER", 3).headers["Ledger-Hash"].clone();
    assert_eq!(body["hash"].as_str(), Some(hash.as_str()));
    // The dead node comes back (without the fault) and copies seq 3 from the stream.
    let mut options = cluster.nodes[first].options();
    options.env.clear();
    cluster.nodes[first].set_options(options);
    cluster.nodes[first].start_again();
    cluster.alive[first] = true;
    nats::eventually(WAIT, "the restarted node holds seq 3", || cluster.nodes[first].head_seq() >= 3);
    let event = cluster.nodes[first].get_json("/v1/events/3");
    assert_eq!(event["hash"].as_str(), Some(hash.as_str()));
    let heads: Vec<u64> = (0..3).map(|i| cluster.nodes[i].head_seq()).collect();
    assert!(heads.iter().all(|h| *h == 3), "every node holds exactly the 3 events: {heads:?}");
}

#[test]
fn a_replicated_node_refuses_to_start_on_a_stream_that_cannot_give_what_the_mode_promises() {
    if !nats::available() {
        return;
    }
    let nats = nats::cluster(3);
    let nats_urls = nats.iter().map(NatsNode::url).collect::<Vec<_>>().join(",");
    // A LEDGER stream as outbox mode with one server (or someone by hand) would make it:
    // one replica, deletes and purges allowed.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let servers: Vec<async_nats::ServerAddr> = nats_urls.split(',').map(|u| u.parse().expect("a NATS URL")).collect();
        let js = async_nats::jetstream::new(async_nats::connect(servers).await.expect("connect to NATS"));
        let config = async_nats::jetstream::stream::Config {
            name: "LEDGER".into(),
            subjects: vec!["ledger.events.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        // The cluster elects its JetStream meta leader after the servers answer.
        let deadline = Instant::now() + WAIT;
        while let Err(e) = js.create_stream(config.clone()).await {
            assert!(Instant::now() < deadline, "an R1 stream: {e}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    // The cluster has three servers; the replica count comes from --stream-replicas
    // (default 3 with --replicated), never from the URLs given.
    let first_url = nats[0].url();
    for urls in [nats_urls.as_str(), first_url.as_str()] {
        let args = ["--nats", urls, "--replicated", "--advertise", "http://127.0.0.1:1", "--lease-ttl-ms", &LEASE_TTL_MS.to_string()];
        let (code, stderr) = run_to_exit(&data, &args);
        assert_eq!(code, Some(2), "it must refuse to start; stderr:\n{stderr}");
        for named in ["stream LEDGER has 1 replica(s), fewer than --stream-replicas 3", "deny_delete", "deny_purge"] {
            assert!(stderr.contains(named), "`{named}` not named; stderr:\n{stderr}");
        }
    }
    // It wrote nothing to the stream, and took no lease.
    let reader = StreamReader::connect(&nats_urls);
    assert_eq!(reader.state("LEDGER").expect("stream").0, 0);
}

#[test]
fn a_node_cut_off_from_jetstream_says_it_is_not_ready_and_recovers() {
    if !nats::available() {
        return;
    }
    let mut server = NatsNode::start();
    let port = nats::free_port();
    let url = format!("http://127.0.0.1:{port}");
    // One nats-server: one replica, asked for explicitly. A 1 s lease: out of touch after 3 s.
    let args = ["--nats", &server.url(), "--replicated", "--advertise", &url, "--stream-replicas", "1", "--lease-ttl-ms", "1000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let node = Server::with(Options { listen: Some(format!("127.0.0.1:{port}")), args, ..Options::default() });
    nats::eventually(WAIT, "the node leads", || node.get_json("/v1/cluster")["role"] == "leader");
    assert_eq!(node.get("/readyz").status, 200);
    server.kill();
    let cut_off = Instant::now();
    let mut last = Value::Null;
    nats::eventually(WAIT, "/readyz says the node is cut off from JetStream", || {
        let reply = node.get("/readyz");
        last = reply.json();
        reply.status == 503 && last["reason"].as_str().is_some_and(|r| r.contains("has not heard from JetStream"))
    });
    // Not before three lease TTLs since the last contact: a short outage is not a failure.
    // The last contact came before the kill, by a renewal interval (250 ms) or, on a loaded
    // machine, more (a full run once saw 670 ms): so from the kill, at least two TTLs; the
    // exact rule is the contact age.
    assert!(cut_off.elapsed() >= Duration::from_millis(2_000), "not ready after only {:?}: {last}", cut_off.elapsed());
    assert!(last["cluster"]["jetstream_contact_age_ms"].as_u64().unwrap_or(0) > 3_000, "{last}");
    let age = e2e::server::metric(&node.metrics(), "cluster_jetstream_contact_age_seconds").expect("the metric");
    assert!(age > 3.0, "cluster_jetstream_contact_age_seconds = {age}");
    // JetStream comes back: so does readiness, and the node leads again.
    server.restart();
    nats::eventually(WAIT, "the node is ready again", || node.get("/readyz").status == 200);
    nats::eventually(WAIT, "the node leads again", || node.get_json("/v1/cluster")["role"] == "leader");
}

/// Runs `cledger serve --data DATA ARGS` until it exits (its exit code and stderr), or kills
/// it after [`WAIT`] (code None): a node that starts anyway would run until killed.
fn run_to_exit(data: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let work = tempfile::tempdir().expect("tempdir");
    let stderr_path = work.path().join("stderr.log");
    let mut child = e2e::cledger()
        .args(["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("NATS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("run cledger");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(&stderr_path).unwrap_or_default())
}

#[test]
fn a_replicated_node_refuses_a_lease_bucket_made_for_another_lease_ttl() {
    if !nats::available() {
        return;
    }
    let server = NatsNode::start();
    let url = server.url();
    let port = nats::free_port();
    let advertise = format!("http://127.0.0.1:{port}");
    // A node with a 2 s lease makes the stream and the bucket (one server: one replica).
    let args: Vec<String> = ["--nats", &url, "--replicated", "--advertise", &advertise, "--stream-replicas", "1", "--lease-ttl-ms", "2000"].iter().map(|s| s.to_string()).collect();
    let node = Server::with(Options { listen: Some(format!("127.0.0.1:{port}")), args, ..Options::default() });
    nats::eventually(WAIT, "the node leads", || node.get_json("/v1/cluster")["role"] == "leader");
    drop(node);
    // Another node, started with a 3 s lease on the same bucket, would believe in leases
    // the server expires sooner: it refuses to start.
    let data = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = run_to_exit(&data.path().join("data"), &["--nats", &url, "--replicated", "--advertise", "http://127.0.0.1:1", "--stream-replicas", "1", "--lease-ttl-ms", "3000"]);
    assert_eq!(code, Some(2), "it must refuse to start; stderr:\n{stderr}");
    assert!(stderr.contains("bucket LEDGER_LEASE has max_age 2000 ms, not the lease TTL --lease-ttl-ms 3000"), "{stderr}");
}

/// `POST /v1/events` with a key: (status, body, `Retry-After`).
fn post_with_retry_after(url: &str, key: &str, body: &Value) -> (u16, Value, Option<String>) {
    let response = http(Duration::from_secs(10))
        .post(format!("{url}/v1/events"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .expect("the node answers");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (response.status().as_u16(), response.json().unwrap_or(Value::Null), retry_after)
}

/// A leader tells its role and lag in `/v1/cluster` and `/readyz`. When its writer stops (a
/// commit fails after JetStream took the group), it gives the lease up at once instead of
/// holding it with a dead writer: with no other node, writes are then refused with 503
/// `no_leader` and `Retry-After: 1`, the cluster names no leader, and `/readyz` is 503 with
/// the writer's failure.
#[test]
fn a_leader_whose_writer_stops_gives_up_the_lease_and_says_so() {
    if !nats::available() {
        return;
    }
    let _nats = NatsNode::start();
    let port = nats::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let args = ["--nats", &_nats.url(), "--replicated", "--advertise", &url, "--stream-replicas", "1", "--lease-ttl-ms", "1000", "--checkpoint-interval-s", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Durable-path operation 5 is the commit batch of the second group (1: the new store's
    // views; 2-4: the first group's batch, flush and fsync).
    let env = vec![("CLEDGER_FAULT".to_string(), "5:error".to_string())];
    let node = Server::with(Options { listen: Some(format!("127.0.0.1:{port}")), args, env, ..Options::default() });
    nats::eventually(WAIT, "the node leads", || node.get_json("/v1/cluster")["role"] == "leader");
    let view = node.get_json("/v1/cluster");
    assert_eq!((view["leader"].as_str(), view["self"].as_str(), view["lag_events"].as_u64()), (Some(url.as_str()), Some(url.as_str()), Some(0)), "{view}");
    let ready = node.get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["cluster"]["role"], "leader", "/readyz carries the role");

    let (code, body, _) = post_with_retry_after(&url, "g", &small_grant("stops"));
    assert_eq!((code, body["seq"].as_u64()), (201, Some(1)), "{body}");
    let (code, body, _) = post_with_retry_after(&url, "i1", &invoice("stops", "I1", "1.00"));
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("writer_stopped")), "{body}");

    let mut view = Value::Null;
    nats::eventually(WAIT, "the node gives the lease up", || {
        view = node.get_json("/v1/cluster");
        view["leader"].is_null() && view["role"] != "leader"
    });
    let (code, body, retry_after) = post_with_retry_after(&url, "i1", &invoice("stops", "I1", "1.00"));
    assert_eq!((code, body["error"]["code"].as_str(), retry_after.as_deref()), (503, Some("no_leader"), Some("1")), "{body} {view}");
    let ready = node.get("/readyz");
    assert_eq!(ready.status, 503);
    let ready = ready.json();
    assert!(ready["writer_failure"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{ready}");
}
