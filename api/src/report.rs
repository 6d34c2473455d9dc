//! `cledger report` and `cledger rebuild`.
//!
//! `report` runs every finance report against a data directory (`--data`, the ledger must
//! not be served meanwhile: sled locks it) or a running server (`--url`). Its flags become
//! the query parameters of the report's HTTP route, so both ways go through
//! [`crate::reports::render`] and print the same JSON and CSV.

use crate::cli::{open_ledger, progress};
use crate::reports::{self, Kind, Output, Rendered};
use crate::server::params::Params;
use crate::server::ApiError;
use events::ContractId;
use projections::report::Table;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned tables for people, thousands grouped.
    Table,
    /// One CSV section (`--section`, default the first): fixed columns, plain decimals.
    Csv,
    /// The report's JSON, as the HTTP API returns it.
    Json,
}

/// Where the report is computed.
pub enum Source {
    Data(PathBuf),
    Url { url: String, token_file: Option<PathBuf> },
}

pub struct ReportArgs {
    pub kind: Kind,
    pub source: Source,
    pub contract: Option<String>,
    /// (query parameter, value) for every flag given.
    pub params: Vec<(&'static str, String)>,
    pub format: Format,
    pub section: Option<String>,
}

/// A refusal in the words of the command line: `--as-of: ...` rather than `as_of: ...`.
fn flag_error(e: ApiError) -> String {
    match &e.field {
        Some(field) if field != "contract" && field != "id" => {
            let flag = format!("--{}", field.replace('_', "-"));
            let message = e.message.replace(&format!("`{field}`"), &format!("`{flag}`"));
            format!("{flag}: {message}")
        }
        Some(_) => format!("--contract: {}", e.message),
        None => e.message,
    }
}

fn query(params: &[(&'static str, String)], extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        q.append_pair(name, value);
    }
    for (name, value) in extra {
        q.append_pair(name, value);
    }
    q.finish()
}

fn print(text: &str) -> Result<ExitCode, String> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // The reader may go away (`| head`): nothing more to say then.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(ExitCode::SUCCESS)
}

/// JSON for people and scripts alike: indented, the keys in the report's order.
fn pretty(json: &[u8], what: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("{what}: not JSON: {e}"))?;
    Ok(format!("{}\n", serde_json::to_string_pretty(&v).expect("JSON values serialize")))
}

fn tables_text(kind: Kind, contract: Option<&ContractId>, tables: &[Table]) -> String {
    let mut s = match contract {
        Some(id) => format!("{} report of {id}\n", kind.name()),
        None => format!("{} report\n", kind.name()),
    };
    for t in tables {
        s.push('\n');
        s.push_str(&t.to_text());
    }
    s
}

pub fn report(args: ReportArgs) -> Result<ExitCode, String> {
    let contract = args.contract.as_deref().map(|c| ContractId::parse(c).map_err(|r| format!("--contract: {}", r.message))).transpose()?;
    let path = args.kind.path(contract.as_ref()).map_err(|m| format!("--contract: {m}"))?;
    let sections = args.kind.sections(contract.is_some());
    if let Some(s) = &args.section
        && (args.format != Format::Csv || !sections.contains(&s.as_str())) {
            return Err(format!("--section: `{s}` needs --format csv and one of {}", sections.join(", ")));
        }
    // Checked here for both sources, so a mistake is named by its flag.
    let params = Params::parse(Some(&query(&args.params, &[])), args.kind.params()).map_err(|e| {
        let this_takes: Vec<String> = args.kind.params().iter().map(|p| format!("--{}", p.replace('_', "-"))).collect();
        match &e.field {
            Some(f) if !args.kind.params().contains(&f.as_str()) => {
                format!("--{}: the {} report does not take it; it takes: {}", f.replace('_', "-"), args.kind.name(), this_takes.join(", "))
            }
            _ => flag_error(e),
        }
    })?;
    match args.source {
        Source::Data(data) => {
            let output = match args.format {
                Format::Json => Output::Json,
                Format::Csv => Output::Csv(args.section.clone().unwrap_or_else(|| sections[0].to_string())),
                Format::Table => Output::Tables,
            };
            let ledger = open_ledger(&data)?;
            match reports::render(&ledger, args.kind, contract.as_ref(), &params, output).map_err(flag_error)? {
                Rendered::Json(bytes) => print(&pretty(&bytes, "the report")?),
                Rendered::Csv(text) => print(&text),
                Rendered::Tables(tables) => print(&tables_text(args.kind, contract.as_ref(), &tables)),
            }
        }
        Source::Url { url, token_file } => {
            let client = Client::new(&url, token_file.as_deref())?;
            match args.format {
                Format::Json => {
                    let text = client.get(&path, &query(&args.params, &[("format", "json")]))?;
                    print(&pretty(text.as_bytes(), &format!("{url}{path}"))?)
                }
                Format::Csv => {
                    let section = args.section.clone().unwrap_or_else(|| sections[0].to_string());
                    print(&client.get(&path, &query(&args.params, &[("format", "csv"), ("section", &section)]))?)
                }
                Format::Table => {
                    let mut tables = vec![];
                    for section in sections {
                        let text = client.get(&path, &query(&args.params, &[("format", "csv"), ("section", section)]))?;
                        tables.push(Table::from_csv(section, &text).map_err(|e| format!("{url}{path} section {section}: {e}"))?);
                    }
                    print(&tables_text(args.kind, contract.as_ref(), &tables))
                }
            }
        }
    }
}

/// A server's reports over HTTP.
struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Client {
    fn new(url: &str, token_file: Option<&Path>) -> Result<Client, String> {
        let token = token_file
            .map(|f| std::fs::read_to_string(f).map(|t| t.trim().to_string()).map_err(|e| format!("--token-file {}: {e}", f.display())))
            .transpose()?;
        let http = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(300)).build().map_err(|e| e.to_string())?;
        Ok(Client { base: url.trim_end_matches('/').to_string(), token, http })
    }

    /// GET, the body of a 200; otherwise the server's error, in its words.
    fn get(&self, path: &str, query: &str) -> Result<String, String> {
        let url = format!("{}{path}?{query}", self.base);
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().map_err(|e| format!("{}: {e}", self.base))?;
        let status = response.status();
        let text = response.text().map_err(|e| format!("{url}: {e}"))?;
        if status.is_success() {
            return Ok(text);
        }
        let error = serde_json::from_str::<serde_json::Value>(&text).ok().map(|v| v["error"].clone());
        Err(match error {
            Some(e) if e["code"].is_string() => {
                let field = e["field"].as_str().map(|f| format!(" (--{})", f.replace('_', "-"))).unwrap_or_default();
                format!("the server refused ({status}): {}{field}: {}", e["code"].as_str().unwrap_or_default(), e["message"].as_str().unwrap_or_default())
            }
            _ => format!("the server answered {status}: {text}"),
        })
    }
}

/// `cledger migrate`: format 1 to format 2, every event verified on the way.
pub fn migrate(data: &Path) -> Result<ExitCode, String> {
    let bar = progress(0, "migrating");
    let started = std::time::Instant::now();
    let result = ledger::migrate::migrate(data, |seq| {
        if seq % 1024 == 0 {
            bar.set_position(seq);
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            println!(
                "migrated {} events into {} blocks ({} index and meta entries carried), every hash verified, in {:.2}s; the old store is kept in {} until you remove it",
                report.events,
                report.blocks,
                report.keys_carried,
                started.elapsed().as_secs_f64(),
                report.backup.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ledger::migrate::MigrateError::Verify(f)) => {
            println!("FAILED at seq {}: {}", f.seq, f.reason);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.to_string()),
    }
}

pub fn rebuild(data: &Path) -> Result<ExitCode, String> {
    let bar = progress(0, "rebuilding");
    let started = std::time::Instant::now();
    let result = ledger::Ledger::rebuild_views(data, |seq, head| {
        if seq % 1024 == 0 || seq == head {
            bar.set_length(head);
            bar.set_position(seq);
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "rebuilt the views of {} contracts from {} events, every hash verified, in {seconds:.2}s ({:.0} events/s)",
                report.contracts,
                report.events,
                report.events as f64 / seconds.max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ledger::OpenError::Corrupt(f)) => {
            println!("FAILED at seq {}: {}", f.seq, f.reason);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.to_string()),
    }
}
