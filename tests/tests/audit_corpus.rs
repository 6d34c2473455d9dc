//! A tamper corpus, generated here, run through both verifiers (issue 13): `cledger verify`
//! and docs/verify_bundle.py must agree on every case, accepting the untouched files and the
//! harmless rewrites, and refusing every change of meaning.
//!
//! The corpus: every leaf of the event JSON of a bundle of the demo portfolio changed in
//! value and in type, keys removed and added; every field of the lines; the canonical bytes
//! at several offsets (with and without a recomputed hash); lines swapped, dropped, doubled;
//! the header; the checkpoint note; a range's proofs; witness cosignatures against a quorum;
//! and an evidence pack's manifest, events, proofs and report.

use base64::Engine;
use e2e::audit::{import, key_of, python, s, Bundle};
use events::checkpoint::Note;
use events::cosignature::{self, Cosigner};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One tampered (or harmless) file and what both verifiers are expected to say.
struct Case {
    what: String,
    file: PathBuf,
}

/// Cases verified with the same arguments.
struct Group {
    args: Vec<String>,
    cases: Vec<Case>,
    dir: PathBuf,
}

impl Group {
    fn new(dir: &Path, name: &str, args: Vec<String>) -> Group {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Group { args, cases: vec![], dir }
    }

    fn add(&mut self, what: impl Into<String>, text: String) {
        let file = self.dir.join(format!("{:04}.ndjson", self.cases.len()));
        std::fs::write(&file, text).unwrap();
        self.cases.push(Case { what: what.into(), file });
    }

    fn add_lines(&mut self, what: impl Into<String>, lines: &[String]) {
        self.add(what, lines.iter().map(|l| format!("{l}\n")).collect());
    }

    /// Runs both verifiers: (what, cledger accepted, python accepted if it ran).
    fn run(&self) -> Vec<(String, bool, Option<bool>)> {
        let cledger: Vec<bool> = self
            .cases
            .iter()
            .map(|c| {
                let mut args = vec!["verify".to_string(), s(&c.file).to_string()];
                args.extend(self.args.iter().cloned());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (code, stdout, stderr) = e2e::run(&args);
                assert!(code == 0 || code == 1, "{}: cledger verify could not run (exit {code}): {stdout}{stderr}", c.what);
                code == 0
            })
            .collect();
        let python: Vec<Option<bool>> = match python() {
            None => vec![None; self.cases.len()],
            Some(py) => {
                let out = std::process::Command::new(py)
                    .arg(e2e::workspace().join("docs/verify_bundle.py"))
                    .args(self.cases.iter().map(|c| c.file.clone()))
                    .args(&self.args)
                    .output()
                    .expect("run verify_bundle.py");
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "verify_bundle.py: {stdout}{}", String::from_utf8_lossy(&out.stderr));
                let lines: Vec<&str> = stdout.lines().collect();
                assert_eq!(lines.len(), self.cases.len(), "one verdict per file: {stdout}");
                self.cases
                    .iter()
                    .zip(lines)
                    .map(|(c, line)| {
                        let verdict = line.strip_prefix(&format!("{}: ", s(&c.file))).unwrap_or_else(|| panic!("{line}"));
                        Some(verdict.starts_with("ok: "))
                    })
                    .collect()
            }
        };
        self.cases.iter().zip(cledger).zip(python).map(|((c, a), b)| (c.what.clone(), a, b)).collect()
    }
}

fn lines_of(text: &str) -> Vec<String> {
    Bundle::parse(text).lines
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// Every JSON pointer in `v` (objects' keys, arrays' items), the root excepted.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

/// Changes of one value: in meaning, and in type.
fn variants(v: &Value) -> Vec<(&'static str, Value)> {
    match v {
        Value::String(t) => {
            let mut out = vec![("appended", json!(format!("{t}x"))), ("emptied", json!("")), ("a number", json!(7))];
            if let Some(last) = t.chars().last().filter(char::is_ascii_digit) {
                let bumped = char::from(b'0' + (last as u8 - b'0' + 1) % 10);
                out.push(("last digit changed", json!(format!("{}{bumped}", &t[..t.len() - 1]))));
            }
            if t.contains('.') {
                out.push(("one more decimal", json!(format!("{t}0"))));
            }
            out
        }
        Value::Number(n) => {
            let i = n.as_i64().unwrap_or(0);
            vec![("plus one", json!(i + 1)), ("as a float", json!(i as f64)), ("as a string", json!(i.to_string()))]
        }
        Value::Bool(b) => vec![("flipped", json!(!b)), ("as 1", json!(1))],
        Value::Null => vec![("null to 0", json!(0))],
        Value::Array(a) => {
            let mut out = vec![("emptied", json!([]))];
            if let Some(first) = a.first() {
                let mut doubled = a.clone();
                doubled.push(first.clone());
                out.push(("an item doubled", Value::Array(doubled)));
            }
            out
        }
        Value::Object(m) => {
            let mut extra = m.clone();
            extra.insert("extra".into(), json!(1));
            vec![("a key added", Value::Object(extra))]
        }
    }
}

/// A copy of `v` with the value at `pointer` replaced, or removed (`None`).
fn edited(v: &Value, pointer: &str, new: Option<Value>) -> Value {
    let mut copy = v.clone();
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let holder = copy.pointer_mut(parent).unwrap();
    let key = last.replace("~1", "/").replace("~0", "~");
    match (holder, new) {
        (Value::Object(m), Some(x)) => {
            m.insert(key, x);
        }
        (Value::Object(m), None) => {
            m.shift_remove(&key);
        }
        (Value::Array(a), Some(x)) => a[key.parse::<usize>().unwrap()] = x,
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        _ => unreachable!(),
    }
    copy
}

/// Every change of every value under `root` (a pointer) of line `index`, and every removal.
fn mutate_values(group: &mut Group, lines: &[String], index: usize, root: &str, label: &str) {
    let line = json_line(&lines[index]);
    let mut paths = vec![];
    pointers(line.pointer(root).unwrap(), root.to_string(), &mut paths);
    for p in paths {
        let value = line.pointer(&p).unwrap();
        for (how, new) in variants(value) {
            let mut copy = lines.to_vec();
            copy[index] = edited(&line, &p, Some(new)).to_string();
            group.add_lines(format!("{label}: {p} {how}"), &copy);
        }
        let mut copy = lines.to_vec();
        copy[index] = edited(&line, &p, None).to_string();
        group.add_lines(format!("{label}: {p} removed"), &copy);
    }
}

/// The canonical bytes of line `index` with byte `at` changed, the hash recomputed or not.
fn flip_canonical(lines: &[String], index: usize, at: usize, rehash: bool) -> Vec<String> {
    let mut v = json_line(&lines[index]);
    let mut bytes = B64.decode(v["canonical"].as_str().unwrap()).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    v["canonical"] = B64.encode(&bytes).into();
    if rehash {
        v["hash"] = e2e::audit::event_hash(&bytes).to_hex().into();
    }
    let mut copy = lines.to_vec();
    copy[index] = v.to_string();
    copy
}

fn with_line(lines: &[String], index: usize, line: String) -> Vec<String> {
    let mut copy = lines.to_vec();
    copy[index] = line;
    copy
}

/// The corpus of a whole bundle: events, lines, structure, header, note.
fn bundle_cases(group: &mut Group, lines: &[String]) {
    let n = lines.len();
    group.add_lines("the untouched bundle", lines);
    // Harmless rewrites both must accept: keys reordered, spaces, CRLF line ends.
    let reordered: Value = {
        let v = json_line(&lines[3]);
        let mut m = serde_json::Map::new();
        for (k, x) in v.as_object().unwrap().iter().rev() {
            m.insert(k.clone(), x.clone());
        }
        Value::Object(m)
    };
    group.add_lines("harmless: an event line's keys reordered", &with_line(lines, 3, reordered.to_string()));
    group.add_lines("harmless: an event line pretty-printed on one line", &with_line(lines, 4, serde_json::to_string_pretty(&json_line(&lines[4])).unwrap().replace('\n', " ")));
    group.add("harmless: CRLF line ends", lines.iter().map(|l| format!("{l}\r\n")).collect());
    group.add_lines(
        "harmless: the same `type` twice inside the event JSON (the last counts)",
        &with_line(lines, 2, lines[2].replacen("\"event\":{", &format!("\"event\":{{\"type\":\"{}\",", json_line(&lines[2])["event"]["type"].as_str().unwrap()), 1)),
    );
    group.add_lines(
        "a wrong `type` first inside the event JSON (the last counts)",
        &with_line(lines, 2, lines[2].replacen("\"event\":{", "\"event\":{\"type\":\"period_closed\",", 1)),
    );
    group.add_lines("a key twice in an event line", &with_line(lines, 2, lines[2].replacen('{', "{\"seq\":2,", 1)));

    // Every value of the JSON of events of every type.
    let mut seen_types = std::collections::BTreeSet::new();
    for i in 1..n - 1 {
        let kind = json_line(&lines[i])["event"]["type"].as_str().unwrap().to_string();
        if seen_types.insert(kind.clone()) {
            mutate_values(group, lines, i, "/event", &format!("event line {i} ({kind})"));
        }
    }
    // The other fields of an event line.
    mutate_values(group, lines, 5, "", "line 5");
    for at in [0, 31, 32, 33, 40, 60, 10_000] {
        for rehash in [false, true] {
            group.add_lines(format!("event 7's canonical byte {at} changed, rehashed {rehash}"), &flip_canonical(lines, 7, at, rehash));
        }
    }
    group.add_lines("uppercase hex hash", &with_line(lines, 6, {
        let mut v = json_line(&lines[6]);
        v["hash"] = v["hash"].as_str().unwrap().to_uppercase().into();
        v.to_string()
    }));
    // Structure.
    let mut swapped = lines.to_vec();
    swapped.swap(3, 4);
    group.add_lines("two event lines swapped", &swapped);
    let mut dropped = lines.to_vec();
    dropped.remove(5);
    group.add_lines("an event line dropped", &dropped);
    let mut doubled = lines.to_vec();
    doubled.insert(5, lines[5].clone());
    group.add_lines("an event line doubled", &doubled);
    group.add_lines("the checkpoint line dropped", &lines[..n - 1]);
    let mut trailing = lines.to_vec();
    trailing.push(lines[1].clone());
    group.add_lines("a line after the checkpoint", &trailing);
    let mut blank = lines.to_vec();
    blank.insert(3, String::new());
    group.add_lines("an empty line", &blank);
    group.add("no final newline", lines.join("\n"));
    group.add("an empty file", String::new());
    // The header and the checkpoint line.
    mutate_values(group, lines, 0, "", "header");
    mutate_values(group, lines, n - 1, "", "checkpoint line");
    let note = json_line(&lines[n - 1])["checkpoint"].as_str().unwrap().to_string();
    let edit_note = |f: &dyn Fn(&str) -> String| with_line(lines, n - 1, json!({"checkpoint": f(&note)}).to_string());
    let note_lines: Vec<&str> = note.split('\n').collect();
    for i in 0..note_lines.len() {
        group.add_lines(format!("note line {i} removed"), &edit_note(&|n| {
            let mut l: Vec<&str> = n.split('\n').collect();
            l.remove(i);
            l.join("\n")
        }));
    }
    group.add_lines("harmless: the note's signature line twice", &edit_note(&|n| format!("{n}{}", n.split("\n\n").nth(1).unwrap())));
    group.add_lines("harmless: an unknown key's signature line added", &edit_note(&|n| format!("{n}\u{2014} someone.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n")));
    group.add_lines("a signature line with bad base64", &edit_note(&|n| format!("{n}\u{2014} someone.example AAA*\n")));
    group.add_lines("a tab in the note", &edit_note(&|n| n.replacen('\n', "\t\n", 1)));
    group.add_lines("a blank line inside the note's text", &edit_note(&|n| n.replacen('\n', "\n\n", 1)));
    for at in [1usize, 10, 20, 40, 60] {
        group.add_lines(format!("the signature's base64 character {at} changed"), &edit_note(&|n| {
            let (text, sig) = n.split_once("\n\n").unwrap();
            let (name, blob) = sig.trim_end().rsplit_once(' ').unwrap();
            format!("{text}\n\n{name} {}\n", e2e::audit::flip_char(blob, at))
        }));
    }
}

/// A range bundle's proofs.
fn range_cases(group: &mut Group, lines: &[String]) {
    group.add_lines("the untouched range", lines);
    let n = lines.len();
    mutate_values(group, lines, n - 1, "/proofs", "range proofs");
    group.add_lines("a range without proofs", &with_line(lines, n - 1, json!({"checkpoint": json_line(&lines[n - 1])["checkpoint"]}).to_string()));
    group.add_lines("a range with null proofs", &with_line(lines, n - 1, json!({"checkpoint": json_line(&lines[n - 1])["checkpoint"], "proofs": null}).to_string()));
    mutate_values(group, lines, 0, "", "range header");
}

/// Cosignatures against `--witness a --witness b --witness c --witness-quorum 2`.
fn cosigned_cases(group: &mut Group, lines: &[String], witnesses: &[Cosigner]) {
    let n = lines.len();
    let note = Note::parse(json_line(&lines[n - 1])["checkpoint"].as_str().unwrap()).unwrap();
    let checkpoint = events::checkpoint::Checkpoint::parse(&note.text).unwrap();
    let sign = |who: &[&Cosigner], t: u64| cosignature::attach(&note, &who.iter().map(|w| w.cosign(&checkpoint, t)).collect::<Vec<_>>());
    let with_note = |note: &Note| with_line(lines, n - 1, json!({"checkpoint": note.to_string()}).to_string());
    let [a, b, c] = [&witnesses[0], &witnesses[1], &witnesses[2]];
    group.add_lines("three cosignatures", &with_note(&sign(&[a, b, c], 1_800_000_000)));
    group.add_lines("two cosignatures", &with_note(&sign(&[a, c], 1_800_000_000)));
    group.add_lines("one cosignature", &with_note(&sign(&[b], 1_800_000_000)));
    group.add_lines("none", lines);
    let outsider = Cosigner::new("outsider.example/w", [0x33; 32]).unwrap();
    group.add_lines("one cosignature and an outsider's", &with_note(&sign(&[a, &outsider], 1_800_000_000)));
    let mut twice = sign(&[a, b], 1_800_000_000);
    twice.signatures.push(a.cosign(&checkpoint, 1_800_000_001));
    group.add_lines("harmless: a witness's cosignature twice (one witness still)", &with_note(&twice));
    let good = sign(&[a, b], 1_800_000_000);
    let last = good.signatures.len() - 1;
    for byte in [0, 3, 4, 8, 11, 12, 40, 75] {
        let mut bad = good.clone();
        if byte < bad.signatures[last].signature.len() + 4 {
            if byte < 4 {
                bad.signatures[last].key_id[byte] ^= 0x01;
            } else {
                bad.signatures[last].signature[byte - 4] ^= 0x01;
            }
            group.add_lines(format!("a cosignature's byte {byte} changed"), &with_note(&bad));
        }
    }
    let mut short = good.clone();
    short.signatures[last].signature.truncate(40);
    group.add_lines("a cosignature cut short", &with_note(&short));
    let mut far = good.clone();
    far.signatures[last].signature[0] = 0x80;
    group.add_lines("a cosignature's timestamp beyond 2^63 - 1", &with_note(&far));
    let mut moved = good.clone();
    moved.text = events::checkpoint::Checkpoint { size: checkpoint.size + 1, ..checkpoint.clone() }.body();
    group.add_lines("cosignatures of another size", &with_note(&moved));
}

/// An evidence pack.
fn pack_cases(group: &mut Group, lines: &[String]) {
    let n = lines.len();
    group.add_lines("the untouched pack", lines);
    mutate_values(group, lines, 0, "", "manifest");
    mutate_values(group, lines, 2, "/event", "pack event 2");
    mutate_values(group, lines, 3, "/inclusion", "pack event 3's proof");
    for rehash in [false, true] {
        group.add_lines(format!("pack event 1's bytes changed, rehashed {rehash}"), &flip_canonical(lines, 1, 50, rehash));
    }
    let mut dropped = lines.to_vec();
    dropped.remove(3);
    group.add_lines("a pack's event dropped", &dropped);
    let mut swapped = lines.to_vec();
    swapped.swap(2, 3);
    group.add_lines("a pack's events swapped", &swapped);
    group.add_lines("the report line dropped", &lines[..n - 1]);
    for field in ["contract_id", "as_of", "known_at", "currency"] {
        let mut v = json_line(&lines[n - 1]);
        v["report"][field] = json!("2001-01-01");
        group.add_lines(format!("the report's {field} changed"), &with_line(lines, n - 1, v.to_string()));
    }
}

/// The report's figures changed: `cledger verify` recomputes them, the Python verifier
/// does not (FORMAT.md section 10 says which checks need the revenue rules).
fn report_figure_cases(group: &mut Group, lines: &[String]) {
    let n = lines.len();
    for field in ["recognized", "rpo", "headline", "deferred_revenue"] {
        let mut v = json_line(&lines[n - 1]);
        let text = v["report"][field].as_str().unwrap().to_string();
        let digit = if text.ends_with('1') { '2' } else { '1' };
        v["report"][field] = json!(format!("{}{digit}", &text[..text.len() - 1]));
        group.add_lines(format!("the report's {field} changed"), &with_line(lines, n - 1, v.to_string()));
    }
    let mut v = json_line(&lines[n - 1]);
    v["report"]["periods"].as_array_mut().unwrap().pop();
    group.add_lines("the report's last period dropped", &with_line(lines, n - 1, v.to_string()));
}

fn cli(args: &[&str]) -> String {
    let (code, stdout, stderr) = e2e::run(args);
    assert_eq!(code, 0, "cledger {args:?}: {stderr}");
    stdout
}

#[test]
fn both_verifiers_agree_on_every_case_of_a_tamper_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo: Vec<String> = std::fs::read_to_string(e2e::workspace().join("examples/demo-portfolio.ndjson")).unwrap().lines().map(str::to_string).collect();
    import(&data, &demo);
    let key = key_of(&data);
    let whole = lines_of(&cli(&["export", "--data", s(&data)]));
    let range = lines_of(&cli(&["export", "--data", s(&data), "--from", "5", "--to", "9"]));
    let pack = lines_of(&cli(&["export", "--data", s(&data), "--contract", "colossus-1", "--as-of", "2027-12-31", "--known-at", "18"]));
    // TEST witness keys.
    let witnesses: Vec<Cosigner> = (1..=3u8).map(|i| Cosigner::new(&format!("witness.test/w{i}"), [0x70 + i; 32]).unwrap()).collect();

    let key_args = vec!["--key".to_string(), key.clone()];
    let mut plain = Group::new(dir.path(), "bundles", key_args.clone());
    bundle_cases(&mut plain, &whole);
    range_cases(&mut plain, &range);
    pack_cases(&mut plain, &pack);
    let mut quorum_args = key_args.clone();
    for w in &witnesses {
        quorum_args.extend(["--witness".to_string(), w.verifier().to_string()]);
    }
    quorum_args.extend(["--witness-quorum".to_string(), "2".into()]);
    let mut cosigned = Group::new(dir.path(), "cosigned", quorum_args);
    cosigned_cases(&mut cosigned, &whole, &witnesses);
    let mut figures = Group::new(dir.path(), "figures", key_args);
    report_figure_cases(&mut figures, &pack);

    let mut disagreements = vec![];
    let mut counts = (0, 0);
    for group in [&plain, &cosigned] {
        for (what, cledger, py) in group.run() {
            if cledger { counts.0 += 1 } else { counts.1 += 1 }
            if py.is_some_and(|p| p != cledger) {
                disagreements.push(format!("{what}: cledger {}, python {}", verdict(cledger), verdict(!cledger)));
            }
            let meant_to_pass = what.starts_with("harmless") || what.starts_with("the untouched") || what == "three cosignatures" || what == "two cosignatures";
            if meant_to_pass {
                assert!(cledger, "{what}: should be accepted");
            }
        }
    }
    assert!(disagreements.is_empty(), "{} of {} cases disagree:\n{}", disagreements.len(), counts.0 + counts.1, disagreements.join("\n"));
    eprintln!("tamper corpus: {} cases, {} accepted, {} refused, both verifiers agreeing on each", counts.0 + counts.1, counts.0, counts.1);
    assert!(counts.0 + counts.1 >= 400, "a corpus of {} cases", counts.0 + counts.1);
    assert!(counts.1 >= 350, "most cases change meaning: {} refused", counts.1);
    // The one documented difference: only cledger recomputes a pack's report.
    for (what, cledger, py) in figures.run() {
        assert!(!cledger, "{what}: cledger verify recomputes the report and refuses it");
        if let Some(p) = py {
            assert!(p, "{what}: the Python verifier does not recompute figures (FORMAT.md section 10)");
        }
    }
}

fn verdict(accepted: bool) -> &'static str {
    if accepted { "accepts" } else { "refuses" }
}
