//! `cledger`: the compute-ledger command line.

mod bench;
mod cli;

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
    /// Append the events of an NDJSON file (one wire event a line), in order. Stops at the
    /// first refused line: the lines before it are appended, nothing of it is.
    Import {
        /// Data directory of the ledger (created if missing).
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
        /// Actor recorded on events that do not name one.
        #[arg(long, default_value = "cledger-import")]
        actor: String,
        /// The NDJSON file; `-` reads standard input.
        file: PathBuf,
    },
    /// Verify every hash, link, seq and version of a data directory. Exit code 0 only if
    /// everything checks; otherwise the first bad seq and why.
    Verify {
        #[arg(long, env = "CLEDGER_DATA")]
        data: PathBuf,
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
    /// Measure durable appends, verification and raw hashing on this machine.
    Bench {
        /// Directory for the benchmark's scratch ledgers (default: a temporary directory
        /// under the current one, so the numbers are for this disk, not a RAM disk).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Events appended per measurement.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Import { data, actor, file } => cli::import(&data, &actor, &file),
        Command::Verify { data } => cli::verify(&data),
        Command::Log { data, contract, json, after, limit } => cli::log(&data, contract.as_deref(), json, after, limit),
        Command::Bench { dir, events } => bench::run(dir.as_deref(), events),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cledger: {message}");
            ExitCode::from(2)
        }
    }
}
