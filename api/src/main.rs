//! `cledger`: the compute-ledger command line and HTTP server.

// Handler errors are whole HTTP error responses, made at most once per request: their size
// does not matter, and boxing them would only add noise.
#![allow(clippy::result_large_err)]

/// mimalloc instead of the system allocator: the ledger's fold and JSON paths allocate many
/// small strings, and glibc's malloc and free were a third of the writer's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod bench_audit;
mod bench_http;
mod bench_nats;
mod bench_projections;
mod bench_reports;
mod bench_scale;
mod audit;
mod cli;
mod dashboard;
mod demo;
mod report;
mod reports;
mod server;
mod witness;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cledger", version, about = "An event-sourced, hash-chained ledger for compute-lease contracts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on a data directory.
    Serve {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        /// Address to listen on (port 0 picks a free port; the chosen one is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Bearer tokens and their roles (TOML; see `cledger token`). Without it the server
        /// is open to anyone who can reach it, so it listens on loopback only.
        #[arg(long, env = "CLEDGER_TOKENS")]
        tokens: Option<PathBuf>,
        /// Drop a stream (SSE) client that reads nothing for this many milliseconds; any
        /// connection whose response the client takes nothing of for as long is closed.
        #[arg(long, default_value_t = server::Limits::DEFAULT.write_stall.as_millis() as u64)]
        sse_stall_ms: u64,
        /// Most Server-Sent Events clients at once; more get 503 `too_many_streams`.
        #[arg(long, default_value_t = server::MAX_STREAMS_DEFAULT)]
        max_streams: usize,
        /// Contract states kept in memory, counted in events (roughly 350-500 bytes each):
        /// past it, a state a query loaded is dropped after the query, and the writer drops
        /// saved states after each save; what is needed again is loaded again (large
        /// portfolio queries then reload states each time).
        #[arg(long, default_value_t = ledger::views::RESIDENT_EVENTS_DEFAULT)]
        views_resident_events: u64,
        /// Most connections at once (lowered to fit the open-file limit). At the cap the
        /// idlest connection is closed for a new one; if none is idle the new one is.
        #[arg(long, default_value_t = server::Limits::DEFAULT.max_connections)]
        max_connections: usize,
        /// Time a connection has to send a request head, and to wait between requests.
        #[arg(long, default_value_t = server::Limits::DEFAULT.header_read_timeout.as_millis() as u64)]
        header_read_timeout_ms: u64,
        /// A connection on which no byte moves either way for this long is closed (keep it
        /// above 15 s, the interval of a quiet stream's keep-alive comments).
        #[arg(long, default_value_t = server::Limits::DEFAULT.idle_timeout.as_millis() as u64)]
        idle_timeout_ms: u64,
        /// Serve HTTPS with this certificate chain (PEM), with --tls-key. Reloaded on SIGHUP
        /// and when the files change.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this CA (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Allow plain HTTP on a non-loopback address (for a TLS-terminating proxy in front).
        #[arg(long)]
        insecure_http: bool,
        /// A host name requests may carry in `Host` besides the listen address (repeat the
        /// flag for more). Checked on a server without tokens, and whenever given.
        #[arg(long = "allowed-host")]
        allowed_hosts: Vec<String>,
        /// Log JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        /// NATS server URL: publish every event to JetStream (or, with --follow, copy the
        /// stream). Without it the ledger runs embedded on sled alone.
        #[arg(long, env = "NATS_URL")]
        nats: Option<String>,
        /// NATS credentials file (JWT and NKey seed).
        #[arg(long, requires = "nats")]
        nats_creds: Option<PathBuf>,
        /// NATS user name, with --nats-password-file.
        #[arg(long, requires = "nats", requires = "nats_password_file")]
        nats_user: Option<String>,
        /// A file holding the NATS user's password.
        #[arg(long, requires = "nats_user")]
        nats_password_file: Option<PathBuf>,
        /// A file holding an NKEY seed (`SU…`) to authenticate to NATS with.
        #[arg(long, requires = "nats")]
        nats_nkey: Option<PathBuf>,
        /// CA certificate (PEM) to verify the NATS server; turns TLS on.
        #[arg(long, requires = "nats")]
        nats_tls_ca: Option<PathBuf>,
        /// Client certificate (PEM) for mutual TLS, with --nats-tls-key.
        #[arg(long, requires = "nats")]
        nats_tls_cert: Option<PathBuf>,
        #[arg(long, requires = "nats")]
        nats_tls_key: Option<PathBuf>,
        /// Replicas of the LEDGER stream when this server creates it (default 1). With
        /// --replicated (default 3): also of the lease bucket, and a node refuses to start on
        /// a stream or bucket with fewer.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=5))]
        stream_replicas: Option<u16>,
        /// Follow the LEDGER stream into this data directory and serve reads; writes are
        /// refused with the leader's address.
        #[arg(long, requires = "nats")]
        follow: bool,
        /// The leader's URL, named in a follower's refusals of writes.
        #[arg(long, requires = "follow")]
        leader_url: Option<String>,
        /// Checkpoint signing key file (64 hex digits; default: created in the data directory).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Checkpoint origin (default: `cledger-` and 8 hex digits of the key).
        #[arg(long)]
        origin: Option<String>,
        /// Sign a checkpoint this often (seconds) when the ledger grew; 0: only on request.
        #[arg(long, default_value_t = 60)]
        checkpoint_interval_s: u64,
        /// A witness that cosigns the checkpoints: its submission URL and its verifier key
        /// (`http://host:port=name+keyid+base64`). Repeat for several.
        #[arg(long = "witness", value_name = "URL=VKEY", value_parser = parse_witness)]
        witnesses: Vec<(String, String)>,
        /// How many witnesses must cosign a checkpoint before it counts as cosigned
        /// (default: all of them).
        #[arg(long)]
        witness_quorum: Option<usize>,
        /// Also publish every event's JSON (seq, hash, prev_hash, event) on
        /// `ledger.json.<contract>.<type>` (stream LEDGER_JSON).
        #[arg(long, requires = "nats", conflicts_with = "follow")]
        nats_json: bool,
        /// Replicated mode: the LEDGER stream (R3 on a 3-node cluster) is the commit log.
        /// Run the same command on every node; one leads (by a lease in NATS KV), the others
        /// follow and take over when it fails. Needs --advertise.
        #[arg(long, requires = "nats", requires = "advertise", conflicts_with_all = ["follow", "nats_json"])]
        replicated: bool,
        /// Replicated mode: this node's URL as clients reach it (`http://HOST:PORT`), named to
        /// clients that write to another node.
        #[arg(long, requires = "replicated")]
        advertise: Option<String>,
        /// Replicated mode: the writer's lease lapses this long after its last renewal
        /// (renewed four times as often); failover takes about this long.
        #[arg(long, default_value_t = 3000, requires = "replicated")]
        lease_ttl_ms: u64,
    },
    /// Run a C2SP tlog-witness: cosign the checkpoints of the logs given, each only if it
    /// extends the last one cosigned (kept durably, across restarts).
    Witness {
        /// Address to listen on (port 0 picks a free port; the chosen one is printed).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// The witness's Ed25519 key (64 hex digits), created on first start.
        #[arg(long)]
        key: PathBuf,
        /// The state file (default: the key file with the extension `.state`).
        #[arg(long)]
        state: Option<PathBuf>,
        /// The witness's name in its cosignatures (default: `cledger-witness-` and 8 hex
        /// digits of its key; a schema-less URL such as `witness.example.com/w1` is usual).
        #[arg(long)]
        name: Option<String>,
        /// A log's verifier key (`cledger key`); its name is the log's origin. Repeat.
        #[arg(long = "log", value_name = "VKEY", required = true)]
        logs: Vec<String>,
        #[arg(long)]
        log_json: bool,
    },
    /// Serve a sample portfolio: the reference deal and smaller contracts in several
    /// currencies, loaded once into a data directory this command creates.
    Demo {
        #[arg(long, default_value = "cledger-demo-data")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Make a new bearer token: prints the secret (give it to the client) and the entry to
    /// append to the tokens file (only the token's hash is stored).
    Token {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: server::auth::Role,
        /// The token is refused after this: `90d`, `12h`, `30m` from now, or an RFC 3339
        /// instant. Without it the token lasts until its line is removed.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Append the events of an NDJSON file (one wire event a line), in order. Stops at the
    /// first refused line: the lines before it are appended, nothing of it is.
    Import {
        /// Data directory of the ledger (created if missing).
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        /// Actor recorded on events that do not name one.
        #[arg(long, default_value = "cledger-import")]
        actor: String,
        /// Contract states kept in memory between saves, counted in events; past it, saved
        /// states are dropped after each save and loaded again when next needed. Lower than
        /// `serve`'s: the states an import changed since the last save stay whatever the
        /// budget; the others are needed again only when their contract comes back. Raise it
        /// for a file that returns to many contracts, each less often than every 100,000
        /// events.
        #[arg(long, default_value_t = ledger::views::IMPORT_RESIDENT_EVENTS_DEFAULT)]
        views_resident_events: u64,
        /// The NDJSON file; `-` reads standard input.
        file: PathBuf,
    },
    /// Verify a data directory (--data), an export bundle (FILE) or a server (--url): every
    /// hash from the canonical bytes, the links, the Merkle root against the signed
    /// checkpoint, the signature against --key, and, with --trusted-checkpoint, that the
    /// ledger extends the checkpoint you kept. Exit code 0 only if everything checks;
    /// otherwise the first failing seq and why.
    Verify {
        /// An export bundle.
        file: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// A server: its /v1/export is downloaded and verified.
        #[arg(long)]
        url: Option<String>,
        /// The verifier key you trust (`name+keyid+base64`, or a file holding it).
        #[arg(long)]
        key: Option<String>,
        /// A checkpoint you kept: the ledger must extend it. Updated after success.
        #[arg(long)]
        trusted_checkpoint: Option<PathBuf>,
        /// Bearer token for --url.
        #[arg(long, env = "CLEDGER_TOKEN")]
        token: Option<String>,
        /// Checkpoint origin of a data directory (if it was served with --origin).
        #[arg(long)]
        origin: Option<String>,
        /// A witness's verifier key (or a file holding it) whose cosignatures count. Repeat.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// Refuse a checkpoint without this many valid cosignatures of those witnesses
        /// (default: all of them).
        #[arg(long)]
        witness_quorum: Option<usize>,
        /// Without --key, trust the verifier key the bundle names (printing a warning): a
        /// bundle that names its own key proves nothing about who signed it.
        #[arg(long)]
        trust_bundle_key: bool,
    },
    /// Write an export bundle (header, every event or --from/--to, signed checkpoint, and
    /// for a range the proofs tying it to the checkpoint), or with --contract an evidence
    /// pack: the contract's events, an inclusion proof of each, its revenue report as of
    /// --as-of known at --known-at, and a manifest.
    Export {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long)]
        origin: Option<String>,
        /// `fresh`: sign a checkpoint of the head now; `latest`: the latest kept one (with
        /// the cosignatures witnesses gave it).
        #[arg(long, default_value = "fresh", value_parser = ["fresh", "latest"])]
        checkpoint: String,
        /// An evidence pack of this contract.
        #[arg(long, requires = "as_of")]
        contract: Option<String>,
        /// The evidence pack's report date (YYYY-MM-DD).
        #[arg(long, requires = "contract")]
        as_of: Option<String>,
        /// The evidence pack's ledger position: its events with seq <= K, its report as
        /// known then (default: the checkpoint's size).
        #[arg(long, requires = "contract")]
        known_at: Option<u64>,
        #[arg(long, default_value = "month", value_parser = ["month", "quarter"])]
        granularity: String,
    },
    /// Check an inclusion or consistency proof (the JSON of `cledger prove` or
    /// `GET /v1/proofs/...`) against a signed checkpoint and the log's key, offline.
    VerifyProof {
        /// The proof JSON file (`-`: standard input).
        proof: PathBuf,
        /// The signed checkpoint note (the `checkpoint` of `GET /v1/checkpoints/latest`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The log's verifier key, or a file holding it.
        #[arg(long)]
        key: String,
        /// Consistency: a checkpoint you kept of the older tree; its root must be the
        /// proof's `from_root`.
        #[arg(long)]
        old_checkpoint: Option<PathBuf>,
        /// Inclusion: the event (JSON with `seq` and `canonical`, as `GET /v1/events/{seq}`)
        /// whose bytes must hash to the proof's `hash`.
        #[arg(long)]
        event: Option<PathBuf>,
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        #[arg(long)]
        witness_quorum: Option<usize>,
        /// Print every step: the leaf hash, each proof hash and what it makes.
        #[arg(long)]
        verbose: bool,
    },
    /// Merkle proofs from a data directory.
    Prove {
        #[command(subcommand)]
        proof: ProveCommand,
    },
    /// Print the verifier key of a data directory's checkpoint signing key.
    Key {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        #[arg(long)]
        origin: Option<String>,
    },
    /// Print events, oldest first.
    Log {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        /// Only this contract's events.
        #[arg(long)]
        contract: Option<String>,
        /// One JSON object a line: seq, contract_id, version, type, effective_date,
        /// recorded_at, hash, prev_hash, canonical (base64) and event (wire JSON).
        #[arg(long)]
        json: bool,
        /// Start after this seq (or, with --contract, after this version).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Print at most this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// A finance report (revenue, rollforward, rpo, waterfall, corrections, closes,
    /// close-preview) of one contract or the portfolio, from a data directory or a running
    /// server, as a table, CSV or JSON (the same JSON and CSV as the HTTP API).
    Report {
        #[arg(value_enum, default_value = "revenue")]
        kind: reports::Kind,
        /// Data directory (the ledger must not be served meanwhile; use --url then).
        #[arg(long, env = "CLEDGER_DATA", required_unless_present = "url")]
        data: Option<PathBuf>,
        /// A running server, e.g. http://127.0.0.1:8080 (wins over --data).
        #[arg(long)]
        url: Option<String>,
        /// File holding the bearer token for --url (finance, auditor or admin role).
        #[arg(long, requires = "url")]
        token_file: Option<PathBuf>,
        /// One contract; without it, the portfolio (per currency, never summed across them).
        #[arg(long)]
        contract: Option<String>,
        /// Business date D (end of day, inclusive), YYYY-MM-DD; default today (UTC).
        #[arg(long)]
        as_of: Option<String>,
        /// Rollforward: the period (FROM, TO].
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// Ledger position K: only events with seq <= K count (default: the head).
        #[arg(long)]
        known_at: Option<u64>,
        /// Corrections: compare what was known at FROM_KNOWN_AT with TO_KNOWN_AT (default: the head).
        #[arg(long)]
        from_known_at: Option<u64>,
        #[arg(long)]
        to_known_at: Option<u64>,
        /// Close preview: the period end to close.
        #[arg(long)]
        period_end: Option<String>,
        /// month (default) or quarter.
        #[arg(long)]
        granularity: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: report::Format,
        /// CSV section (rows, totals, ...; default the first).
        #[arg(long)]
        section: Option<String>,
    },
    /// Drop the materialized views and rebuild them from the chain, verifying every hash.
    Rebuild {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
    },
    /// Convert a store of the previous format (1) to this build's (2), verifying every
    /// event on the way; the old store is kept beside it as DIR.format-1.
    Migrate {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
    },
    /// Measure durable appends, verification and raw hashing on this machine.
    Bench {
        /// Directory for the benchmark's scratch ledgers (default: a temporary directory
        /// under the current one, so the numbers are for this disk, not a RAM disk).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Events per append measurement; with `--suite projections`, events in the large
        /// ledger (at least 1,000,000 is the bar).
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Contracts in the projections suite's ledger (the portfolio query covers them all).
        #[arg(long, default_value_t = 10_000)]
        contracts: usize,
        #[arg(long, value_enum, default_value = "append")]
        suite: bench::Suite,
        /// NATS server for `--suite nats`.
        #[arg(long)]
        nats: Option<String>,
        /// A node of a replicated cluster for `--suite replicated`.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProveCommand {
    /// Inclusion of event SEQ in the tree of --tree-size events (default: the head).
    Inclusion {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        #[arg(long)]
        seq: u64,
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// Consistency of the tree of --from events with the tree of --to (default: the head).
    Consistency {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
}

/// `--witness URL=VKEY`: split at the first `=` (a vkey's base64 may end in `=`).
fn parse_witness(text: &str) -> Result<(String, String), String> {
    let (url, vkey) = text.split_once('=').ok_or("expected URL=VKEY")?;
    if url.is_empty() || vkey.is_empty() {
        return Err("expected URL=VKEY".into());
    }
    Ok((url.to_string(), vkey.to_string()))
}

/// A command whose output is piped ends quietly when the reader goes away (`cledger export |
/// head`), as Unix tools do, instead of panicking in `println!`. Servers keep Rust's default
/// (SIGPIPE ignored): a client that goes away is an error to handle, not the end of the
/// process.
fn end_quietly_when_stdout_closes() {
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// No transparent huge pages for this process. mimalloc returns freed memory to the kernel
/// in 64 KiB pieces; with huge pages each piece taken back costs the kernel zeroing a whole
/// 2 MiB page. Measured on 1M events (same sitting, 3 runs each): `verify --data` 1.06 s →
/// 0.84 s wall with system time 0.5 s → 0.16 s, `rebuild` 3.3 s → 2.3–2.8 s, and resident
/// memory 25% lower. The flag holds for every mapping of the process, mimalloc's included.
/// Returns why it could not, if it could not (an old kernel): the default is still correct,
/// only slower, so that is logged, not fatal.
fn no_transparent_huge_pages() -> Option<std::io::Error> {
    #[cfg(target_os = "linux")]
    {
        let off: libc::c_ulong = 1;
        let zero: libc::c_ulong = 0;
        // SAFETY: prctl(PR_SET_THP_DISABLE) reads four unsigned longs (the kernel refuses
        // anything but zeros after the first) and changes only a flag of this process.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, off, zero, zero, zero) } != 0 {
            return Some(std::io::Error::last_os_error());
        }
    }
    None
}

fn main() -> ExitCode {
    let huge_pages = no_transparent_huge_pages();
    let cli = Cli::parse();
    if let Some(e) = huge_pages {
        eprintln!("cledger: warning: cannot turn transparent huge pages off ({e}); bulk commands may be slower");
    }
    // The pool's threads would otherwise take the name of whichever thread first used it
    // (a server's showed as `summaries-ahead` in `top` while serving portfolio reports).
    if let Err(e) = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("rayon-{i}")).build_global() {
        eprintln!("cledger: warning: the worker pool was already started ({e})");
    }
    if !matches!(cli.command, Command::Serve { .. } | Command::Demo { .. } | Command::Witness { .. }) {
        end_quietly_when_stdout_closes();
    }
    let result = match cli.command {
        Command::Serve {
            data,
            listen,
            tokens,
            sse_stall_ms,
            max_streams,
            views_resident_events,
            max_connections,
            header_read_timeout_ms,
            idle_timeout_ms,
            tls_cert,
            tls_key,
            tls_client_ca,
            insecure_http,
            allowed_hosts,
            log_json,
            nats,
            nats_creds,
            nats_user,
            nats_password_file,
            nats_nkey,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            stream_replicas,
            follow,
            leader_url,
            signing_key,
            origin,
            checkpoint_interval_s,
            witnesses,
            witness_quorum,
            nats_json,
            replicated,
            advertise,
            lease_ttl_ms,
        } => server::serve(
            server::ServeConfig {
                signing_key,
                origin,
                checkpoint_every: std::time::Duration::from_secs(checkpoint_interval_s),
                witnesses: server::checkpointing::WitnessConfig { witnesses, quorum: witness_quorum },
                nats: nats.map(|url| server::NatsConfig {
                    url,
                    creds: nats_creds,
                    user: nats_user,
                    password_file: nats_password_file,
                    nkey: nats_nkey,
                    tls_ca: nats_tls_ca,
                    tls_cert: nats_tls_cert,
                    tls_key: nats_tls_key,
                    replicas: usize::from(stream_replicas.unwrap_or(if replicated { 3 } else { 1 })),
                    follow,
                    leader_url,
                    json: nats_json,
                    replicated,
                    advertise,
                    lease_ttl_ms,
                }),
                data,
                listen,
                tokens,
                sse_stall: std::time::Duration::from_millis(sse_stall_ms),
                log_json,
                tls: tls_cert.zip(tls_key).map(|(cert, key)| server::TlsFiles { cert, key, client_ca: tls_client_ca }),
                insecure_http,
                allowed_hosts,
                max_connections,
                header_read_timeout: std::time::Duration::from_millis(header_read_timeout_ms),
                idle_timeout: std::time::Duration::from_millis(idle_timeout_ms),
                max_streams,
                views_resident_events,
            },
            |_| Ok(()),
        ),
        Command::Demo { data, listen } => demo::run(data, listen),
        Command::Token { name, role, expires } => expires
            .as_deref()
            .map(server::auth::expiry)
            .transpose()
            .and_then(|expires| server::auth::new_token(&name, role, expires))
            .map(|(secret, entry)| {
                eprintln!("token for {name} ({}): give it to the client; it is not stored anywhere:\n  {secret}", role.as_str());
                print!("{entry}");
                ExitCode::SUCCESS
            }),
        Command::Import { data, actor, file, views_resident_events } => cli::import(&data, &actor, &file, views_resident_events),
        Command::Witness { listen, key, state, name, logs, log_json } => witness::run(witness::WitnessArgs { listen, key, state, name, logs, log_json }),
        Command::Verify { file, data, url, key, trusted_checkpoint, token, origin, witnesses, witness_quorum, trust_bundle_key } => {
            audit::verify(audit::VerifyArgs { file, data, url, key, trusted: trusted_checkpoint, token, origin, witnesses, witness_quorum, trust_bundle_key })
        }
        Command::Export { data, out, from, to, origin, checkpoint, contract, as_of, known_at, granularity } => {
            audit::export(audit::ExportArgs { data, out, from, to, origin, checkpoint, contract, as_of, known_at, granularity })
        }
        Command::VerifyProof { proof, checkpoint, key, old_checkpoint, event, witnesses, witness_quorum, verbose } => {
            audit::verify_proof(audit::VerifyProofArgs { proof, checkpoint, key, old_checkpoint, event, witnesses, witness_quorum, verbose })
        }
        Command::Prove { proof: ProveCommand::Inclusion { data, seq, tree_size } } => audit::prove_inclusion(&data, seq, tree_size),
        Command::Prove { proof: ProveCommand::Consistency { data, from, to } } => audit::prove_consistency(&data, from, to),
        Command::Key { data, origin } => audit::key(&data, origin.as_deref()),
        Command::Log { data, contract, json, after, limit } => cli::log(&data, contract.as_deref(), json, after, limit),
        Command::Report {
            kind,
            data,
            url,
            token_file,
            contract,
            as_of,
            from,
            to,
            known_at,
            from_known_at,
            to_known_at,
            period_end,
            granularity,
            format,
            section,
        } => {
            let source = match (url, data) {
                (Some(url), _) => Some(report::Source::Url { url, token_file }),
                (None, Some(data)) => Some(report::Source::Data(data)),
                (None, None) => None,
            };
            let params: Vec<(&'static str, String)> = [
                ("as_of", as_of),
                ("from", from),
                ("to", to),
                ("known_at", known_at.map(|k| k.to_string())),
                ("from_known_at", from_known_at.map(|k| k.to_string())),
                ("to_known_at", to_known_at.map(|k| k.to_string())),
                ("period_end", period_end),
                ("granularity", granularity),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v)))
            .collect();
            match source {
                Some(source) => report::report(report::ReportArgs { kind, source, contract, params, format, section }),
                None => Err("give --data DIR or --url URL".to_string()),
            }
        }
        Command::Rebuild { data } => report::rebuild(&data),
        Command::Migrate { data } => report::migrate(&data),
        Command::Bench { dir, events, contracts, suite, nats, url } => bench::run(dir.as_deref(), events, contracts, suite, nats.as_deref(), url.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cledger: {message}");
            ExitCode::from(2)
        }
    }
}
