//! The data-directory commands: import, verify, log.
//!
//! Exit codes: 0 success; 1 the data was refused or does not verify (the message names the
//! line or seq); 2 the command could not run (bad arguments, unreadable file, locked store).

use events::{ContractId, Proposal, Stream};
use indicatif::{ProgressBar, ProgressStyle};
use ledger::{AppendError, AppendRequest, Ledger, Mode, Options};
use std::io::{BufRead, BufReader, Read, Write};

use std::path::Path;
use std::process::ExitCode;

/// Lines appended per request during an import: large enough that one fsync serves many
/// events, small enough that progress moves and memory stays flat.
const IMPORT_CHUNK_LINES: usize = 1_000;
/// Longest line accepted by import (a grant with the maximum number of tranches fits).
const IMPORT_LINE_BYTES_MAX: usize = 256 * 1024;

/// NDJSON read line by line with a bound on each line, so a file or a server cannot make a
/// reader hold more than one bounded line (a 1 GB line once cost 1 GB). Every NDJSON reader
/// of the program reads through this.
pub struct BoundedLines<R> {
    reader: BufReader<R>,
    max_bytes: usize,
    /// The number of the line last returned (1-based).
    pub number: usize,
    buffer: Vec<u8>,
}

/// A line over the bound, or a read error.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line {line} is longer than {max_bytes} bytes")]
    TooLong { line: usize, max_bytes: usize },
    #[error("reading line {line}: {source}")]
    Read { line: usize, source: std::io::Error },
}

/// Bytes read from the file per system call: a bundle of a million events is half a GB,
/// which 8 KiB reads (the default) took 60,000 calls to read.
const READ_BUFFER_BYTES: usize = 256 * 1024;

impl<R: Read> BoundedLines<R> {
    pub fn new(reader: R, max_bytes: usize) -> BoundedLines<R> {
        BoundedLines { reader: BufReader::with_capacity(READ_BUFFER_BYTES, reader), max_bytes, number: 0, buffer: Vec::new() }
    }

    /// The next line with its newline (the last one may lack it), or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let read = self.append_line(&mut buffer);
        self.buffer = buffer;
        Ok(read?.map(|_| &self.buffer[..]))
    }

    /// Appends the next line with its newline (the last one may lack it) to `out`, and
    /// returns its length, or `None` at the end: for a reader that keeps many lines in one
    /// buffer, without a copy through this one.
    pub fn append_line(&mut self, out: &mut Vec<u8>) -> Result<Option<usize>, LineError> {
        let line = self.number + 1;
        let read = (&mut self.reader)
            .take(self.max_bytes as u64 + 1)
            .read_until(b'\n', out)
            .map_err(|source| LineError::Read { line, source })?;
        if read == 0 {
            return Ok(None);
        }
        self.number = line;
        let text = &out[out.len() - read..];
        if read > self.max_bytes && !(read == self.max_bytes + 1 && text.ends_with(b"\n")) {
            return Err(LineError::TooLong { line, max_bytes: self.max_bytes });
        }
        Ok(Some(read))
    }
}

pub fn open_ledger(data: &Path) -> Result<Ledger, String> {
    Ledger::open(data, Options::default()).map_err(|e| e.to_string())
}

pub fn progress(len: u64, what: &str) -> ProgressBar {
    // indicatif hides the bar when stderr is not a terminal, so pipes and CI logs stay clean.
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} {{wide_bar}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"))
            .expect("valid template"),
    );
    bar
}

/// A chunk of an import handed to the writer, awaiting its answer.
struct InFlight {
    answer: ledger::AppendAnswer,
    /// The file's line number of each proposal, to name a refused line.
    lines: Vec<usize>,
}

/// What an import has stored so far.
#[derive(Default)]
struct Imported {
    appended: u64,
    replayed: u64,
    first_seq: Option<u64>,
    last_seq: u64,
}

impl Imported {
    /// Waits for a chunk's answer and counts it; `Some(message)` if the ledger refused a line.
    fn settle(&mut self, chunk: InFlight) -> Result<Option<String>, String> {
        let lines = chunk.lines;
        let outcome = chunk
            .answer
            .recv()
            .map_err(|_| "the ledger stopped before it answered".to_string())?
            .map_err(|e| match e {
                AppendError::Rejected { index, rejection } => format!("line {}: {rejection}", lines[index]),
                AppendError::RequestRefused(rejection) => rejection.to_string(),
                other => other.to_string(),
            })?;
        for r in &outcome.receipts {
            if r.replayed {
                self.replayed += 1;
            } else {
                self.appended += 1;
                self.first_seq.get_or_insert(r.seq);
                self.last_seq = r.seq;
            }
        }
        Ok(outcome.refused.map(|(index, rejection)| format!("line {}: {rejection}", lines[index])))
    }
}

/// Imports an NDJSON file in chunks of [`IMPORT_CHUNK_LINES`], each one request in `Prefix`
/// mode. The next chunk is parsed while the writer stores the one before (one chunk in
/// flight at most), and is only sent once that one is answered in full, so a refused line
/// still means nothing of it or after it was written.
pub fn import(data: &Path, actor: &str, file: &Path, views_resident_events: u64) -> Result<ExitCode, String> {
    let (reader, len): (Box<dyn Read>, u64) = if file == Path::new("-") {
        (Box::new(std::io::stdin()), 0)
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(f), len)
    };
    let ledger = Ledger::open(data, Options { views_resident_events, ..Options::default() }).map_err(|e| e.to_string())?;
    let bar = progress(len, "importing");
    bar.set_style(ProgressStyle::with_template("importing {wide_bar} {bytes}/{total_bytes} eta {eta}").expect("valid template"));
    let mut lines = BoundedLines::new(reader, IMPORT_LINE_BYTES_MAX);
    let mut chunk: Vec<Proposal> = Vec::with_capacity(IMPORT_CHUNK_LINES);
    let mut chunk_lines: Vec<usize> = Vec::with_capacity(IMPORT_CHUNK_LINES);
    let mut imported = Imported::default();
    let mut in_flight: Option<InFlight> = None;
    let mut refusal: Option<String> = None;
    loop {
        let next = match lines.next_line() {
            Ok(line) => line,
            Err(LineError::TooLong { line, max_bytes }) => {
                refusal = Some(format!("line {line}: the line is longer than {max_bytes} bytes"));
                None
            }
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let at_end = next.is_none() && refusal.is_none();
        if let Some(buffer) = next {
            bar.inc(buffer.len() as u64);
            if !buffer.iter().all(u8::is_ascii_whitespace) {
                match Proposal::parse_json(buffer) {
                    Ok(p) => {
                        chunk.push(p);
                        chunk_lines.push(lines.number);
                    }
                    Err(r) => refusal = Some(format!("line {}: {r}", lines.number)),
                }
            }
        }
        if chunk.len() >= IMPORT_CHUNK_LINES || at_end || refusal.is_some() {
            // The chunk before this one is answered first: a line it refused ends the import
            // here, before anything of this chunk is sent (and before this chunk's own refusal,
            // which comes later in the file).
            if let Some(previous) = in_flight.take()
                && let Some(refused) = imported.settle(previous)? {
                    refusal = Some(refused);
                    break;
                }
            if !chunk.is_empty() {
                let request = AppendRequest {
                    events: std::mem::replace(&mut chunk, Vec::with_capacity(IMPORT_CHUNK_LINES)),
                    mode: Mode::Prefix,
                    idempotency_key: None,
                    actor: actor.to_string(),
                };
                let answer = ledger.submit(request).map_err(|e| e.to_string())?;
                in_flight = Some(InFlight { answer, lines: std::mem::replace(&mut chunk_lines, Vec::with_capacity(IMPORT_CHUNK_LINES)) });
            }
            if refusal.is_some() || at_end {
                break;
            }
        }
    }
    if let Some(last) = in_flight.take()
        && let Some(refused) = imported.settle(last)? {
            // A refusal in the ledger comes before any later parse error.
            refusal = Some(refused);
        }
    bar.finish_and_clear();
    let Imported { appended, replayed, first_seq, last_seq } = imported;
    let range = first_seq.map_or(String::new(), |f| format!(" (seq {f} to {last_seq})"));
    println!("imported {appended} events{range}; {replayed} already present (idempotency key matched)");
    match refusal {
        None => Ok(ExitCode::SUCCESS),
        Some(message) => {
            eprintln!("refused: {message}");
            eprintln!("nothing of that line or after it was written");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn log(data: &Path, contract: Option<&str>, json: bool, after: u64, limit: Option<usize>) -> Result<ExitCode, String> {
    let ledger = open_ledger(data)?;
    let stream = contract
        .map(|c| ContractId::parse(c).map(Stream::Contract).map_err(|r| r.message))
        .transpose()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut remaining = limit.unwrap_or(usize::MAX);
    let mut cursor = after;
    if !json {
        writeln!(out, "{:>8}  {:<20} {:>6}  {:<20} {:<10}  {:<27}  hash", "seq", "contract", "ver", "type", "effective", "recorded_at").ok();
    }
    const PAGE: usize = 1_000;
    while remaining > 0 {
        let page = match &stream {
            Some(s) => ledger.stream_events(s, cursor, PAGE.min(remaining)),
            None => ledger.events_after(cursor, PAGE.min(remaining)),
        }
        .map_err(|e| e.to_string())?;
        if page.is_empty() {
            break;
        }
        for r in &page {
            let e = &r.event;
            let written = if json {
                writeln!(out, "{}", r.to_json())
            } else {
                writeln!(
                    out,
                    "{:>8}  {:<20} {:>6}  {:<20} {:<10}  {:<27}  {}…",
                    e.seq,
                    e.stream.contract_id().map_or("(ledger)", ContractId::as_str),
                    e.version,
                    e.body.kind().as_str(),
                    e.effective_date.to_string(),
                    e.recorded_at.to_rfc3339(),
                    &r.hash.to_hex()[..16],
                )
            };
            if written.is_err() {
                // The reader went away (`cledger log | head`): stop quietly.
                return Ok(ExitCode::SUCCESS);
            }
        }
        remaining -= page.len();
        let last = page.last().expect("page is not empty");
        cursor = if stream.is_some() { last.event.version } else { last.seq() };
    }
    out.flush().ok();
    Ok(ExitCode::SUCCESS)
}
