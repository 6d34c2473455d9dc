//! `cledger bench --suite scale --events N --contracts C`: the ledger as it grows in real
//! life, with events interleaved across many contracts (a grant each, then invoices and
//! payments spread over time), measured the way an operator meets it: every step is this
//! binary run as a child process (`import`, `verify`, `rebuild`, `export`, bundle
//! verification, `serve`), timed end to end, with the child's peak resident memory from
//! `wait4` (or `/proc` for the server, which is measured while it runs).
//!
//! Numbers are printed, never asserted. The workload file is written first and not timed.

use crate::bench::Latencies;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Revenue queries sent to the server, each for a contract picked at random.
const REVENUE_QUERIES: usize = 2_000;
/// Portfolio queries (every contract folded as of a date).
const PORTFOLIO_QUERIES: usize = 36;
/// How long the server may take to answer `/readyz` before the run gives up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(600);
/// Records hashed at a time when measuring the BLAKE3 ceiling (bounds the memory it takes).
const CEILING_CHUNK_RECORDS: usize = 65_536;

fn contract_id(c: usize) -> String {
    format!("c{c:06}")
}

/// How a workload orders its events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Every grant, then round after round over every contract: each contract's state is
    /// changed between any two saves of the views.
    Interleaved,
    /// The same events, each contract's together (grant first).
    ByContract,
}

/// Writes the workload: `contracts` grants, and for each contract, round after round, an
/// invoice (even rounds) or the payment of the previous invoice (odd rounds), until `events`
/// lines; interleaved, the rounds go over every contract in turn. Both orders hold the same
/// events. Returns the bytes written.
fn write_workload(path: &Path, events: usize, contracts: usize, order: Order) -> Result<u64, String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let grants = contracts.min(events);
    let grant = |out: &mut BufWriter<std::fs::File>, c: usize| {
        let id = contract_id(c);
        writeln!(
            out,
            r#"{{"contract_id":"{id}","type":"lease_granted","effective_date":"2026-05-01","data":{{"provider":"Neocloud","customer":"Lab {c}","currency":"USD","term":{{"start":"2026-06-01","end":"2029-06-01"}},"cluster":{{"site":"s","gpu_model":"H100","gpus":1024}},"headline":"45000000.00","tranches":[{{"id":"base","amount":"40500000.00","window":{{"start":"2026-06-01","end":"2029-06-01"}},"firm":true}},{{"id":"expansion","amount":"4500000.00","window":{{"start":"2027-06-01","end":"2029-06-01"}},"milestone":"phase-2"}}]}}}}"#
        )
    };
    let billing = |out: &mut BufWriter<std::fs::File>, c: usize, round: usize| {
        let id = contract_id(c);
        // Dates move forward with the rounds, a month every 24 rounds, within the term.
        let month = (round / 24) % 36;
        let (year, mon) = (2026 + (5 + month) / 12, (5 + month) % 12 + 1);
        let n = round / 2;
        if round.is_multiple_of(2) {
            writeln!(out, r#"{{"contract_id":"{id}","type":"invoice_issued","effective_date":"{year}-{mon:02}-01","data":{{"invoice_id":"I{n}","amount":"1000.00","due_date":"{year}-{mon:02}-28"}}}}"#)
        } else {
            writeln!(out, r#"{{"contract_id":"{id}","type":"payment_received","effective_date":"{year}-{mon:02}-15","data":{{"payment_id":"P{n}","amount":"1000.00","invoice_id":"I{n}"}}}}"#)
        }
    };
    // Billing lines: whole rounds over every contract, and the first `partial` contracts in
    // one more round.
    let billing_lines = events - grants;
    let (rounds, partial) = (billing_lines.checked_div(contracts).unwrap_or(0), billing_lines.checked_rem(contracts).unwrap_or(0));
    match order {
        Order::Interleaved => {
            for c in 0..grants {
                grant(&mut out, c).map_err(io)?;
            }
            for round in 0..=rounds {
                let width = if round == rounds { partial } else { contracts };
                for c in 0..width {
                    billing(&mut out, c, round).map_err(io)?;
                }
            }
        }
        Order::ByContract => {
            for c in 0..grants {
                grant(&mut out, c).map_err(io)?;
                for round in 0..rounds + usize::from(c < partial) {
                    billing(&mut out, c, round).map_err(io)?;
                }
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(std::fs::metadata(path).map_err(|e| e.to_string())?.len())
}

/// What a finished child cost.
struct Run {
    seconds: f64,
    peak_rss_bytes: u64,
    stdout: String,
}

/// Runs this binary with `args` to completion; fails on a non-zero exit.
fn run_child(args: &[&str]) -> Result<Run, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = Command::new(exe).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let Child { stdout, stderr, .. } = child;
    let out = std::thread::spawn(move || std::io::read_to_string(stdout.expect("piped")).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr.expect("piped")).unwrap_or_default());
    let (status, peak_rss_bytes) = wait4(pid)?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status != 0 {
        return Err(format!("cledger {} exited with status {status}: {stdout}{stderr}", args.join(" ")));
    }
    Ok(Run { seconds, peak_rss_bytes, stdout })
}

/// Waits for `pid`; returns its exit status and peak resident set size in bytes.
fn wait4(pid: libc::pid_t) -> Result<(i32, u64), String> {
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value of the plain C struct wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the types wait4 expects.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {e}"));
        }
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    // Linux reports ru_maxrss in KiB.
    Ok((code, usage.ru_maxrss as u64 * 1024))
}

/// Bytes the directory takes on disk (allocated blocks, so sparse files count as stored).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix(" kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A `cledger serve` child, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server and waits for `/readyz`; returns it and the seconds to ready.
fn start_server(data: &Path) -> Result<(Server, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    break url.trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                return Err("the server exited before it listened".into());
            }
        }
    };
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    let server = Server { child, base };
    let client = reqwest::blocking::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send() {
            if r.status().is_success() {
                break;
            }
        }
        if started.elapsed() > OPEN_TIMEOUT {
            return Err("the server did not become ready".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((server, started.elapsed().as_secs_f64()))
}

fn timed_get(client: &reqwest::blocking::Client, url: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let response = client.get(url).send().map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    response.bytes().map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// Raw BLAKE3 over the stored canonical bytes, read in bounded chunks; only the hashing is
/// timed. Returns events per second.
fn blake3_ceiling(data: &Path) -> Result<f64, String> {
    let ledger = ledger::Ledger::open(data, ledger::Options::default()).map_err(|e| e.to_string())?;
    let (mut events, mut hashing) = (0usize, Duration::ZERO);
    let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(CEILING_CHUNK_RECORDS);
    let mut hash_chunk = |chunk: &mut Vec<Vec<u8>>| {
        hashing += crate::bench::hash_events(chunk);
        events += chunk.len();
        chunk.clear();
    };
    for record in ledger.records_after(0) {
        chunk.push(record.map_err(|e| e.to_string())?.canonical);
        if chunk.len() == CEILING_CHUNK_RECORDS {
            hash_chunk(&mut chunk);
        }
    }
    hash_chunk(&mut chunk);
    Ok(events as f64 / hashing.as_secs_f64().max(1e-9))
}

fn row(what: &str, events: usize, run: &Run, note: &str) {
    println!(
        "  {what:<26} {:>9.2} s {:>12.0} events/s  peak RSS {:>7.1} MiB  {note}",
        run.seconds,
        events as f64 / run.seconds.max(1e-9),
        mib(run.peak_rss_bytes)
    );
}

pub fn run(scratch: &tempfile::TempDir, events: usize, contracts: usize) -> Result<(), String> {
    let contracts = contracts.clamp(1, events.max(1));
    let root = scratch.path();
    let workload: PathBuf = root.join("workload.ndjson");
    let data = root.join("ledger");
    let bundle = root.join("bundle.json");
    let data_arg = data.to_str().ok_or("the scratch path is not UTF-8")?;
    println!("cledger bench --suite scale: {events} events interleaved over {contracts} contracts, in {}", root.display());
    let workload_bytes = write_workload(&workload, events, contracts, Order::Interleaved)?;
    println!("  workload: {:.1} MiB of NDJSON ({} bytes per event)", mib(workload_bytes), workload_bytes / events.max(1) as u64);

    let import = run_child(&["import", "--data", data_arg, "--actor", "bench", workload.to_str().ok_or("path")?])?;
    let stored = disk_bytes(&data);
    row("import", events, &import, &format!("store {:.1} MiB on disk = {} bytes per event", mib(stored), stored / events.max(1) as u64));
    // Imported: the workload is not read again (the second one takes its place on disk).
    let _ = std::fs::remove_file(&workload);
    // The same events with each contract's together: the states an import changes between
    // two saves of the views are then few, where interleaved they are all of them.
    {
        let sorted = root.join("workload-by-contract.ndjson");
        let sorted_data = root.join("ledger-by-contract");
        write_workload(&sorted, events, contracts, Order::ByContract)?;
        let run = run_child(&["import", "--data", sorted_data.to_str().ok_or("path")?, "--actor", "bench", sorted.to_str().ok_or("path")?])?;
        let stored = disk_bytes(&sorted_data);
        row("import by contract", events, &run, &format!("the same events, each contract's together; {} bytes per event on disk", stored / events.max(1) as u64));
        let _ = std::fs::remove_file(&sorted);
        let _ = std::fs::remove_dir_all(&sorted_data);
    }

    let verify = run_child(&["verify", "--data", data_arg])?;
    row("verify --data", events, &verify, "every hash, link, version and the Merkle root");

    let rebuild = run_child(&["rebuild", "--data", data_arg])?;
    row("rebuild (views)", events, &rebuild, "verify + fold + persist every contract");

    let export = run_child(&["export", "--data", data_arg, "--out", bundle.to_str().ok_or("path")?])?;
    let bundle_bytes = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0);
    row("export", events, &export, &format!("bundle {:.1} MiB", mib(bundle_bytes)));

    let bundle_verify = run_child(&["verify", bundle.to_str().ok_or("path")?, "--trust-bundle-key"])?;
    row("verify bundle", events, &bundle_verify, "");
    let _ = std::fs::remove_file(&bundle);
    std::hint::black_box(&import.stdout);

    let (server, open_seconds) = start_server(&data)?;
    let pid = server.child.id();
    let rss_open = proc_status_bytes(pid, "VmRSS");
    println!("  serve: ready (/readyz 200) {open_seconds:.2} s after start; resident {:.1} MiB after open", mib(rss_open));
    let client = reqwest::blocking::Client::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let revenue = (0..REVENUE_QUERIES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = contract_id((x % contracts as u64) as usize);
            timed_get(&client, &format!("{}/v1/contracts/{id}/revenue?as_of=2028-12-31", server.base))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let revenue = Latencies::of(revenue);
    println!(
        "  revenue query over HTTP, random contract: p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms ({} queries, first touch of each view included)",
        revenue.p50_ms, revenue.p99_ms, revenue.max_ms, revenue.count
    );
    // A different month end each time (nothing a query computes is kept for the next), the
    // first query after open included.
    let portfolio = (0..PORTFOLIO_QUERIES)
        .map(|i| {
            let (year, month) = (2026 + (5 + i) / 12, (5 + i) % 12 + 1);
            let last = events::Date::new(year as i16, month as i8, 1).map_err(|e| e.to_string())?.last_of_month();
            timed_get(&client, &format!("{}/v1/portfolio?as_of={last}", server.base))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let portfolio = Latencies::of(portfolio);
    println!(
        "  portfolio query over HTTP at the head, {contracts} contracts (from their summaries): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} queries, a month end each)",
        portfolio.p50_ms, portfolio.p99_ms, portfolio.max_ms, portfolio.count
    );
    // The close reports at the head read the summaries too: once each.
    let mut close = vec![];
    for (what, path) in [
        ("RPO", "portfolio/rpo?as_of=2027-12-31"),
        ("waterfall", "portfolio/waterfall?as_of=2027-12-31"),
        ("rollforward", "portfolio/rollforward?from=2027-01-01&to=2027-12-31"),
        ("close preview", "periods/preview?period_end=2026-06-30"),
    ] {
        let took = timed_get(&client, &format!("{}/v1/{path}", server.base))?;
        close.push(format!("{what} {:.0} ms", took.as_secs_f64() * 1000.0));
    }
    println!("  close reports over HTTP at the head (from their summaries): {}", close.join(", "));
    // A point of view before the last events reads every contract's whole state.
    let past = timed_get(&client, &format!("{}/v1/portfolio?as_of=2028-12-31&known_at={}", server.base, events / 2))?;
    println!("  portfolio query over HTTP known at seq {} (from the states): {:.0} ms", events / 2, past.as_secs_f64() * 1000.0);
    println!(
        "  serve: resident {:.1} MiB after the queries, peak {:.1} MiB (VmHWM)",
        mib(proc_status_bytes(pid, "VmRSS")),
        mib(proc_status_bytes(pid, "VmHWM"))
    );
    drop(server);

    let ceiling = blake3_ceiling(&data)?;
    println!("  raw BLAKE3 over the stored canonical bytes, one core (ceiling): {ceiling:.0} events/s");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(events: usize, contracts: usize, order: Order) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.ndjson");
        let bytes = write_workload(&path, events, contracts, order).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(bytes as usize, text.len());
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn both_orders_hold_the_same_events_each_contract_in_its_own_order() {
        for (events, contracts) in [(25, 4), (3, 5), (40, 4), (1, 1)] {
            let interleaved = lines(events, contracts, Order::Interleaved);
            let by_contract = lines(events, contracts, Order::ByContract);
            assert_eq!(interleaved.len(), events);
            let of = |all: &[String], c: usize| -> Vec<String> { all.iter().filter(|l| l.contains(&format!("\"{}\"", contract_id(c)))).cloned().collect() };
            for c in 0..contracts {
                assert_eq!(of(&interleaved, c), of(&by_contract, c), "contract {c} of {events} events");
            }
            let (mut a, mut b) = (interleaved.clone(), by_contract);
            a.sort();
            b.sort();
            assert_eq!(a, b);
        }
        // Interleaved: every grant, then rounds over the contracts; 25 events over 4
        // contracts end in a sixth round that reaches contract c000000 only.
        let w = lines(25, 4, Order::Interleaved);
        assert!(w[..4].iter().all(|l| l.contains("lease_granted")));
        assert!(w[4].contains(r#""c000000","type":"invoice_issued""#) && w[4].contains(r#""invoice_id":"I0""#));
        assert!(w[8].contains(r#""c000000","type":"payment_received""#) && w[8].contains(r#""payment_id":"P0""#));
        assert!(w[24].contains(r#""c000000","type":"payment_received""#) && w[24].contains(r#""payment_id":"P2""#));
        let b = lines(25, 4, Order::ByContract);
        assert!(b[0].contains("lease_granted") && b[1].contains(r#""c000000","type":"invoice_issued""#));
        assert!(b[6].contains(r#""c000000","type":"payment_received""#) && b[6].contains(r#""payment_id":"P2""#));
        assert!(b[7].contains(r#""c000001","type":"lease_granted""#));
    }
}
