//! `cledger bench --suite http`: appends per second and latency over real HTTP from 1, 16
//! and 64 concurrent clients, and revenue-query latency while 16 writers append.
//!
//! Server and clients run in this one process on loopback (the server on its own tokio
//! runtime), so on a 2-core machine they share the CPU: the numbers are a floor.

use crate::bench::Latencies;
use crate::server::{auth::Auth, App};
use ledger::{Ledger, Options};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEASURE_FOR: Duration = Duration::from_secs(5);

fn grant(contract: &str) -> String {
    format!(
        r#"{{"contract_id":"{contract}","type":"lease_granted","effective_date":"2026-05-01","data":{{"provider":"P","customer":"C","currency":"USD","term":{{"start":"2026-06-01","end":"2029-06-01"}},"cluster":{{"site":"s","gpu_model":"H100","gpus":1024}},"headline":"45000000.00","tranches":[{{"id":"base","amount":"40500000.00","window":{{"start":"2026-06-01","end":"2029-06-01"}},"firm":true}},{{"id":"x","amount":"4500000.00","window":{{"start":"2027-06-01","end":"2029-06-01"}},"milestone":"m"}}]}}}}"#
    )
}

fn invoice(contract: &str, n: u64) -> String {
    format!(r#"{{"contract_id":"{contract}","type":"invoice_issued","effective_date":"2026-06-01","data":{{"invoice_id":"I{n}","amount":"1.00","due_date":"2026-07-01"}}}}"#)
}

/// One row of the appends table (clients, appends/s, p50, p99, max), the same for the local
/// and the replicated suites.
fn appends_row(clients: usize, events: usize, latencies: Vec<Duration>) -> String {
    let l = Latencies::of(latencies);
    format!("  {clients:>8} {:>12.0} {:>10.2} {:>10.2} {:>10.2}", events as f64 / MEASURE_FOR.as_secs_f64(), l.p50_ms, l.p99_ms, l.max_ms)
}

async fn post(client: &reqwest::Client, base: &str, body: String) -> Result<Duration, String> {
    let started = Instant::now();
    let response = client.post(format!("{base}/v1/events")).header("content-type", "application/json").body(body).send().await.map_err(|e| e.to_string())?;
    if response.status() != reqwest::StatusCode::CREATED {
        return Err(format!("{}: {}", response.status(), response.text().await.unwrap_or_default()));
    }
    Ok(started.elapsed())
}

/// `clients` writers append single events for `MEASURE_FOR`; returns (events, latencies).
async fn writers(client: &reqwest::Client, base: &str, clients: usize, tag: &str) -> Result<(usize, Vec<Duration>), String> {
    for c in 0..clients {
        post(client, base, grant(&format!("{tag}-{c}"))).await?;
    }
    let deadline = Instant::now() + MEASURE_FOR;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            let base = base.to_string();
            let contract = format!("{tag}-{c}");
            tokio::spawn(async move {
                let mut latencies = vec![];
                let mut n = 0;
                while Instant::now() < deadline {
                    latencies.push(post(&client, &base, invoice(&contract, n)).await?);
                    n += 1;
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    all.sort();
    Ok((all.len(), all))
}

pub fn run(scratch: &tempfile::TempDir) -> Result<(), String> {
    let ledger = Arc::new(Ledger::open(scratch.path(), Options::default()).map_err(|e| e.to_string())?);
    let server_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    let (_shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        ledger: ledger.clone(),
        checkpoints: None,
        nats: None,
        auth: Auth::open(),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle(),
        shutdown: shutdown.clone(),
        sse_stall: Duration::from_secs(30),
        streams: Arc::new(tokio::sync::Semaphore::new(crate::server::MAX_STREAMS_DEFAULT)),
        max_streams: crate::server::MAX_STREAMS_DEFAULT,
        allowed_hosts: None,
    });
    let listener = server_runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    // The same connection handling as `cledger serve`, so the numbers include its bounds.
    server_runtime.spawn(crate::server::serve_app(listener, app, None, crate::server::Limits::DEFAULT, shutdown));
    println!("cledger bench --suite http: server on {base}, {}s per measurement, single-event POSTs", MEASURE_FOR.as_secs());

    let client_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    client_runtime.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().map_err(|e| e.to_string())?;
        println!("  {:>8} {:>12} {:>10} {:>10} {:>10}", "clients", "appends/s", "p50 ms", "p99 ms", "max ms");
        for clients in [1usize, 16, 64] {
            let commits_before = ledger.counters().commits.load(std::sync::atomic::Ordering::Relaxed);
            let (events, latencies) = writers(&client, &base, clients, &format!("w{clients}")).await?;
            let commits = ledger.counters().commits.load(std::sync::atomic::Ordering::Relaxed) - commits_before;
            println!("{}   ({:.1} events per fsync)", appends_row(clients, events, latencies), events as f64 / commits.max(1) as f64);
        }
        // Revenue queries while 16 writers append.
        let load = {
            let client = client.clone();
            let base = base.clone();
            tokio::spawn(async move { writers(&client, &base, 16, "load").await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut latencies = vec![];
        let deadline = Instant::now() + MEASURE_FOR - Duration::from_millis(400);
        while Instant::now() < deadline {
            let started = Instant::now();
            let response = client
                .get(format!("{base}/v1/contracts/w1-0/revenue?as_of=2028-12-31&granularity=month"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("revenue query: {}", response.status()));
            }
            response.bytes().await.map_err(|e| e.to_string())?;
            latencies.push(started.elapsed());
        }
        let (events, _) = load.await.map_err(|e| e.to_string())??;
        let latencies = Latencies::of(latencies);
        println!(
            "  revenue query under load (16 writers, {:.0} appends/s meanwhile): {} queries, p50 {:.2} ms, p99 {:.2} ms",
            events as f64 / MEASURE_FOR.as_secs_f64(),
            latencies.count,
            latencies.p50_ms,
            latencies.p99_ms
        );
        Ok::<(), String>(())
    })?;
    drop(server_runtime);
    ledger.close();
    Ok(())
}

/// `cledger bench --suite replicated --url URL`: the same appends over HTTP from 1, 16 and 64
/// clients, sent to the leader of a running replicated cluster (found through `URL`'s
/// `GET /v1/cluster`; `scripts/cluster.sh up` makes one). Each append is acknowledged only
/// once JetStream stored it on a quorum; compare with `--suite http` (local-only) on the
/// same machine.
pub fn run_replicated(url: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(128).build().map_err(|e| e.to_string())?;
        let view: serde_json::Value = client.get(format!("{}/v1/cluster", url.trim_end_matches('/'))).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
        let leader = view["leader"].as_str().ok_or_else(|| format!("{url} names no leader (yet): {view}"))?.to_string();
        println!("cledger bench --suite replicated: leader {leader}, {}s per measurement, single-event POSTs", MEASURE_FOR.as_secs());
        println!("  {:>8} {:>12} {:>10} {:>10} {:>10}", "clients", "appends/s", "p50 ms", "p99 ms", "max ms");
        // Contracts of this run only: a cluster keeps what earlier runs appended.
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for clients in [1usize, 16, 64] {
            let (events, latencies) = writers(&client, &leader, clients, &format!("r{run}-w{clients}")).await?;
            println!("{}", appends_row(clients, events, latencies));
        }
        Ok::<(), String>(())
    })
}
