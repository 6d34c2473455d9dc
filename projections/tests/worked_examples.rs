//! Worked examples of SPEC section 4, as data: every `testdata/revenue/*.txt` file is replayed
//! through [`Book`] and each of its expectations checked. The expected numbers in those files
//! were computed by hand from the SPEC's rules (the arithmetic is in their comments), never
//! copied from this implementation's output.
//!
//! # File format (one scenario per file, read line by line)
//!
//! - blank lines and lines starting with `#` are comments;
//! - `> {wire json}`: an event that must be accepted (`>7 {json}`: and become seq 7);
//! - `! code {wire json}`: an event that must be refused with that code (and change nothing);
//! - `use ID`: later expectations are about contract ID (default: the first contract granted);
//! - `= DATE [@K] key=value ...`: figures of the contract as of DATE, known at K (default:
//!   everything); keys are the fields of `Figures`, values decimal strings with exactly the
//!   contract currency's decimals; only the listed keys are checked;
//! - `period month|quarter DATE [@K] label=value ...`: the whole list of periods, in order;
//! - `tranche DATE [@K] ID key=value ...`: one tranche of the contract view (status, amount,
//!   recognized, cancelled);
//! - `invoice DATE [@K] ID key=value ...`: one invoice of the contract view (amount, paid, owed);
//! - `portfolio DATE [@K] CUR contracts=N key=value ...`: portfolio totals of one currency;
//! - `json DATE [@K] month|quarter path=value ...`: fields of `report::revenue_json`
//!   (`periods.1.recognized` indexes into arrays); strings compared as written.
//!
//! On top of the listed keys, every `=` line also checks SPEC section 4's identity
//! `headline + fees - credits = transaction_price + remaining_conditional + forfeited + cancelled`,
//! `rpo = transaction_price - recognized`, `receivable = billed - collected`, and that the
//! month and the quarter periods add up to `recognized`.

/// Events are recorded on 2040-01-01 and after: later than every date the tests use, so
/// every period they close has ended (`period_not_ended` is tested in ledger/tests/rules.rs).
const RECORDED_FROM_MICROS: i64 = 2_208_988_800_000_000;

use events::{ContractId, Currency, Date, Proposal, Timestamp, format_minor_units};
use projections::{AsOf, Book, ContractState, Figures, Granularity, Portfolio, report};
use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/revenue")
}

fn figure(f: &Figures, key: &str) -> Option<i128> {
    Some(match key {
        "headline" => f.headline,
        "transaction_price" => f.transaction_price,
        "recognized" => f.recognized,
        "rpo" => f.rpo,
        "remaining_conditional" => f.remaining_conditional,
        "forfeited" => f.forfeited,
        "cancelled" => f.cancelled,
        "fees" => f.fees,
        "credits" => f.credits,
        "billed" => f.billed,
        "collected" => f.collected,
        "receivable" => f.receivable,
        "deferred_revenue" => f.deferred_revenue,
        "contract_asset" => f.contract_asset,
        _ => return None,
    })
}

struct Runner {
    file: String,
    book: Book,
    current: Option<ContractId>,
    failures: Vec<String>,
    /// Expectations checked (one per key, plus one per implied check).
    checks: usize,
    lineno: usize,
}

type LineResult = Result<(), String>;

/// `@K`, or `@all` for "everything known".
fn known(at: &AsOf) -> String {
    if at.known_at == u64::MAX {
        "@all".into()
    } else {
        format!("@{}", at.known_at)
    }
}

impl Runner {
    fn fail(&mut self, message: String) {
        self.failures
            .push(format!("{}:{}: {}", self.file, self.lineno, message));
    }

    fn check(&mut self, what: &str, expected: &str, actual: &str) {
        self.checks += 1;
        if expected != actual {
            self.fail(format!("{what}: expected {expected}, got {actual}"));
        }
    }

    fn state(&self) -> Result<&ContractState, String> {
        let id = self.current.as_ref().ok_or("no contract granted yet")?;
        self.book.contracts.get(id).ok_or_else(|| format!("no contract `{id}`"))
    }

    /// Reads `DATE [@K]` from the front of `words`.
    fn point_of_view<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<(AsOf, Option<&'a str>), String> {
        let date_text = words.next().ok_or("missing date")?;
        let date = Date::parse(date_text).map_err(|e| e.to_string())?;
        let mut at = AsOf::date(date);
        let next = words.next();
        match next {
            Some(w) if w.starts_with('@') => {
                at.known_at = w[1..].parse().map_err(|_| format!("bad known_at `{w}`"))?;
                Ok((at, words.next()))
            }
            other => Ok((at, other)),
        }
    }

    fn key_values<'a>(
        first: Option<&'a str>,
        rest: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<(&'a str, &'a str)>, String> {
        first
            .into_iter()
            .chain(rest)
            .map(|kv| {
                kv.split_once('=')
                    .ok_or_else(|| format!("expected key=value, got `{kv}`"))
            })
            .collect()
    }

    fn line(&mut self, line: &str) -> LineResult {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix('>') {
            let (seq, json) = match rest.find('{') {
                Some(i) => (rest[..i].trim(), &rest[i..]),
                None => return Err("`>` needs a JSON event".into()),
            };
            return self.accept(seq, json);
        }
        if let Some(rest) = line.strip_prefix('!') {
            let rest = rest.trim_start();
            let i = rest.find('{').ok_or("`!` needs a code and a JSON event")?;
            return self.refuse(rest[..i].trim(), &rest[i..]);
        }
        let mut words = line.split_whitespace();
        let head = words.next().unwrap_or_default();
        match head {
            "use" => {
                let id = words.next().ok_or("use needs a contract id")?;
                self.current = Some(ContractId::parse(id).map_err(|e| e.to_string())?);
                Ok(())
            }
            "=" => self.expect_figures(words),
            "period" => self.expect_periods(words),
            "tranche" => self.expect_tranche(words),
            "invoice" => self.expect_invoice(words),
            "portfolio" => self.expect_portfolio(words),
            "json" => self.expect_json(words),
            other => Err(format!("unknown line kind `{other}`")),
        }
    }

    fn accept(&mut self, seq: &str, json: &str) -> LineResult {
        let proposal = Proposal::parse_json(json.as_bytes()).map_err(|r| format!("does not parse: {r}"))?;
        let now = Timestamp(RECORDED_FROM_MICROS + self.book.head_seq as i64);
        match self.book.propose(&proposal, "worked-examples", now) {
            Ok(recorded) => {
                self.checks += 1;
                if !seq.is_empty() {
                    self.check("seq", seq, &recorded.event.seq.to_string());
                }
                if matches!(recorded.event.body, events::EventBody::LeaseGranted(_)) && self.current.is_none() {
                    self.current = recorded.event.stream.contract_id().cloned();
                }
                Ok(())
            }
            Err(r) => {
                self.fail(format!(
                    "expected the event to be accepted, it was refused: {} ({})",
                    r.code.as_str(),
                    r.message
                ));
                Ok(())
            }
        }
    }

    fn refuse(&mut self, code: &str, json: &str) -> LineResult {
        let before = self.book.clone();
        let outcome = Proposal::parse_json(json.as_bytes()).and_then(|p| {
            self.book
                .propose(&p, "worked-examples", Timestamp(RECORDED_FROM_MICROS + 1_000_000_000))
        });
        match outcome {
            Ok(recorded) => {
                self.fail(format!(
                    "expected refusal `{code}`, the event was accepted as seq {}",
                    recorded.event.seq
                ));
                // Keep replaying the book as the file means it.
                self.book = before;
            }
            Err(r) => {
                self.check("refusal code", code, r.code.as_str());
                self.checks += 1;
                if self.book != before {
                    self.fail("a refused event changed the book".into());
                }
            }
        }
        Ok(())
    }

    fn expect_figures<'a>(&mut self, mut words: impl Iterator<Item = &'a str>) -> LineResult {
        let (at, first) = Self::point_of_view(&mut words)?;
        let state = self.state()?.clone();
        let currency = state.currency();
        let f = state.figures(&at).map_err(|e| e.to_string())?;
        for (key, expected) in Self::key_values(first, words)? {
            let actual = figure(&f, key).ok_or_else(|| format!("unknown figure `{key}`"))?;
            self.check(
                &format!("{key} at {} {}", at.date, known(&at)),
                expected,
                &format_minor_units(actual, currency),
            );
        }
        self.implied_checks(&state, &at, &f, currency);
        Ok(())
    }

    /// SPEC section 4's identities and period sums, checked at every `=` point of view.
    fn implied_checks(&mut self, state: &ContractState, at: &AsOf, f: &Figures, currency: Currency) {
        let m = |v: i128| format_minor_units(v, currency);
        let pov = format!("at {} {}", at.date, known(at));
        self.check(
            &format!("identity headline + fees - credits {pov}"),
            &m(f.transaction_price + f.remaining_conditional + f.forfeited + f.cancelled),
            &m(f.headline + f.fees - f.credits),
        );
        self.check(
            &format!("rpo = transaction_price - recognized {pov}"),
            &m(f.transaction_price - f.recognized),
            &m(f.rpo),
        );
        self.check(
            &format!("receivable = billed - collected {pov}"),
            &m(f.billed - f.collected),
            &m(f.receivable),
        );
        self.check(
            &format!("deferred_revenue = max(0, billed - recognized) {pov}"),
            &m((f.billed - f.recognized).max(0)),
            &m(f.deferred_revenue),
        );
        self.check(
            &format!("contract_asset = max(0, recognized - billed) {pov}"),
            &m((f.recognized - f.billed).max(0)),
            &m(f.contract_asset),
        );
        match state.recognized(at) {
            Ok(r) => self.check(&format!("ContractState::recognized {pov}"), &m(f.recognized), &m(r)),
            Err(e) => self.fail(format!("recognized {pov}: {e}")),
        }
        for granularity in [Granularity::Month, Granularity::Quarter] {
            match state.periods(at, granularity) {
                Ok(periods) => {
                    let sum: i128 = periods.iter().map(|p| p.recognized).sum();
                    self.check(
                        &format!("{granularity:?} periods sum to recognized {pov}"),
                        &m(f.recognized),
                        &m(sum),
                    );
                    if let Some(last) = periods.last() {
                        self.check(
                            &format!("last {granularity:?} period ends at D {pov}"),
                            &at.date.to_string(),
                            &last.end.to_string(),
                        );
                    }
                }
                Err(e) => self.fail(format!("periods {pov}: {e}")),
            }
        }
    }

    fn expect_periods<'a>(&mut self, mut words: impl Iterator<Item = &'a str>) -> LineResult {
        let granularity =
            Granularity::parse(words.next().ok_or("period needs month|quarter")?).ok_or("month|quarter")?;
        let (at, first) = Self::point_of_view(&mut words)?;
        let state = self.state()?.clone();
        let currency = state.currency();
        let expected = Self::key_values(first, words)?
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let periods = state.periods(&at, granularity).map_err(|e| e.to_string())?;
        let actual = periods
            .iter()
            .map(|p| format!("{}={}", p.period, format_minor_units(p.recognized, currency)))
            .collect::<Vec<_>>()
            .join(" ");
        self.check(
            &format!("{granularity:?} periods at {} {}", at.date, known(&at)),
            &expected,
            &actual,
        );
        Ok(())
    }

    fn expect_tranche<'a>(&mut self, mut words: impl Iterator<Item = &'a str>) -> LineResult {
        let (at, id) = Self::point_of_view(&mut words)?;
        let id = id.ok_or("tranche needs an id")?;
        let state = self.state()?.clone();
        let currency = state.currency();
        let view = state.view(&at).map_err(|e| e.to_string())?;
        let Some(t) = view.tranches.iter().find(|t| t.id == id) else {
            self.fail(format!("no tranche `{id}` at {} {}", at.date, known(&at)));
            return Ok(());
        };
        for (key, expected) in Self::key_values(None, words)? {
            let actual = match key {
                "status" => t.status.as_str().to_string(),
                "amount" => format_minor_units(t.amount, currency),
                "recognized" => format_minor_units(t.recognized, currency),
                "cancelled" => format_minor_units(t.cancelled, currency),
                "window" => format!("{}..{}", t.window.start, t.window.end),
                other => return Err(format!("unknown tranche key `{other}`")),
            };
            self.check(
                &format!("tranche {id} {key} at {} {}", at.date, known(&at)),
                expected,
                &actual,
            );
        }
        Ok(())
    }

    fn expect_invoice<'a>(&mut self, mut words: impl Iterator<Item = &'a str>) -> LineResult {
        let (at, id) = Self::point_of_view(&mut words)?;
        let id = id.ok_or("invoice needs an id")?;
        let state = self.state()?.clone();
        let currency = state.currency();
        let view = state.view(&at).map_err(|e| e.to_string())?;
        let Some(i) = view.invoices.iter().find(|i| i.invoice_id == id) else {
            self.fail(format!("no invoice `{id}` at {} {}", at.date, known(&at)));
            return Ok(());
        };
        for (key, expected) in Self::key_values(None, words)? {
            let actual = match key {
                "amount" => i.amount,
                "paid" => i.paid,
                "owed" => i.owed,
                other => return Err(format!("unknown invoice key `{other}`")),
            };
            self.check(
                &format!("invoice {id} {key} at {} {}", at.date, known(&at)),
                expected,
                &format_minor_units(actual, currency),
            );
        }
        Ok(())
    }

    fn expect_portfolio<'a>(&mut self, mut words: impl Iterator<Item = &'a str>) -> LineResult {
        let (at, code) = Self::point_of_view(&mut words)?;
        let currency = Currency::from_code(code.ok_or("portfolio needs a currency")?).map_err(|e| e.to_string())?;
        let mut portfolio = Portfolio::default();
        for state in self.book.contracts.values() {
            portfolio.add(state, &at).map_err(|e| e.to_string())?;
        }
        let totals = portfolio.totals.get(&currency).cloned().unwrap_or_default();
        for (key, expected) in Self::key_values(None, words)? {
            let actual = if key == "contracts" {
                totals.contracts.to_string()
            } else {
                format_minor_units(
                    figure(&totals.figures, key).ok_or_else(|| format!("unknown figure `{key}`"))?,
                    currency,
                )
            };
            self.check(
                &format!("portfolio {} {key} at {} {}", currency.code(), at.date, known(&at)),
                expected,
                &actual,
            );
        }
        Ok(())
    }

    fn expect_json<'a>(&mut self, mut words: impl Iterator<Item = &'a str>) -> LineResult {
        let (at, granularity) = Self::point_of_view(&mut words)?;
        let granularity = Granularity::parse(granularity.ok_or("json needs month|quarter")?).ok_or("month|quarter")?;
        let state = self.state()?.clone();
        let value = report::revenue_json(&state, &at, granularity).map_err(|e| e.to_string())?;
        for (path, expected) in Self::key_values(None, words)? {
            let mut v = &value;
            for segment in path.split('.') {
                v = match segment.parse::<usize>() {
                    Ok(i) => &v[i],
                    Err(_) => &v[segment],
                };
            }
            let actual = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            self.check(
                &format!("revenue_json {path} at {} {}", at.date, known(&at)),
                expected,
                &actual,
            );
        }
        Ok(())
    }
}

#[test]
fn worked_examples() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("testdata/revenue exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut failures = vec![];
    let mut total_checks = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable example");
        let mut runner = Runner {
            file: format!("testdata/revenue/{}", path.file_name().unwrap().to_string_lossy()),
            book: Book::new(),
            current: None,
            failures: vec![],
            checks: 0,
            lineno: 0,
        };
        for (i, line) in text.lines().enumerate() {
            runner.lineno = i + 1;
            if let Err(e) = runner.line(line) {
                runner.fail(format!("bad line: {e}"));
            }
        }
        assert!(runner.checks > 0, "{} checks nothing", runner.file);
        eprintln!(
            "{}: {} checks, {} failures",
            runner.file,
            runner.checks,
            runner.failures.len()
        );
        total_checks += runner.checks;
        failures.extend(runner.failures);
    }
    eprintln!("{} files, {total_checks} checks", files.len());
    assert!(
        files.len() >= 10,
        "expected the worked examples in {}",
        examples_dir().display()
    );
    assert!(
        failures.is_empty(),
        "{} failed expectations:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
