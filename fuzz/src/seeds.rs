//! Seed inputs of each target, made from the repository's examples/ and testdata/ (so the
//! corpora follow the formats as they change, and nothing generated is committed).

use crate::repository;
use crate::targets::{signer, SIGNER_NAME};
use events::bundle::{self, CheckpointLine, ConsistencyProof, Header, InclusionProof, Proofs};
use events::checkpoint::Checkpoint;
use events::merkle::{self, MemoryTree};
use events::{Proposal, RecordedEvent, Timestamp};
use projections::Book;
use serde_json::Value;

fn read(path: &str) -> String {
    let path = repository().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The NDJSON of each example and of each revenue test file (`>N` and `!` lines).
fn histories() -> Vec<String> {
    let mut out = vec![read("examples/colossus.ndjson"), read("examples/demo-portfolio.ndjson")];
    let dir = repository().join("testdata/revenue");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("testdata/revenue").map(|e| e.expect("entry").path()).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("revenue file");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with('>') || l.starts_with('!'))
            .filter_map(|l| l.find('{').map(|at| &l[at..]))
            .collect();
        out.push(lines.join("\n") + "\n");
    }
    out
}

/// The events of an NDJSON history that the rules admit, sealed.
fn recorded(history: &str) -> Vec<RecordedEvent> {
    let mut book = Book::new();
    let mut out = vec![];
    for (i, line) in history.lines().enumerate() {
        let Ok(proposal) = Proposal::parse_json(line.as_bytes()) else { continue };
        if let Ok(r) = book.propose(&proposal, "seeds", Timestamp(1_800_000_000_000_000 + i as i64)) {
            out.push(r);
        }
    }
    out
}

/// A bundle of `events` (which start at seq 1): the whole ledger, or seqs `range` with proofs.
fn bundle_text(events: &[RecordedEvent], range: Option<(u64, u64)>) -> String {
    let signer = signer();
    let mut tree = MemoryTree::new();
    for r in events {
        tree.push(&r.hash);
    }
    let size = tree.size();
    let (from, to) = range.unwrap_or((1, size));
    let header = Header {
        format: bundle::FORMAT.into(),
        version: bundle::VERSION,
        origin: SIGNER_NAME.into(),
        verifier_key: signer.verifier().to_string(),
        from,
        to,
    };
    let mut text = bundle::header_line(&header) + "\n";
    for r in events.iter().filter(|r| (from..=to).contains(&r.event.seq)) {
        text += &(bundle::event_line(r) + "\n");
    }
    let checkpoint = Checkpoint { origin: SIGNER_NAME.into(), size, root: tree.root() };
    let proofs = range.map(|(from, to)| Proofs {
        inclusion: (to >= from).then(|| InclusionProof {
            seq: to,
            tree_size: size,
            hashes: bundle::hexes(&merkle::inclusion_proof(&tree, to - 1, size).expect("in range")),
        }),
        consistency: (from > 1).then(|| ConsistencyProof {
            from: from - 1,
            to: size,
            from_root: merkle::root(&tree, from - 1).expect("in range").to_hex(),
            hashes: bundle::hexes(&merkle::consistency_proof(&tree, from - 1, size).expect("in range")),
        }),
    });
    text + &bundle::checkpoint_line(&CheckpointLine { checkpoint: signer.sign(&checkpoint), proofs }) + "\n"
}

/// The seeds of `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let histories = histories();
    let colossus = recorded(&histories[0]);
    let mut all: Vec<RecordedEvent> = vec![];
    for h in &histories {
        all.extend(recorded(h));
    }
    match target {
        "proposal" => {
            let mut out: Vec<Vec<u8>> = histories.iter().flat_map(|h| h.lines().map(|l| l.as_bytes().to_vec())).collect();
            for e in json("testdata/vectors/events.json")["events"].as_array().expect("events") {
                out.push(e["wire"].to_string().into_bytes());
            }
            out
        }
        "canonical" => {
            let mut out: Vec<Vec<u8>> = all.iter().map(|r| r.canonical.clone()).collect();
            for e in json("testdata/vectors/events.json")["events"].as_array().expect("events") {
                out.push(hex::decode(e["canonical_hex"].as_str().expect("canonical_hex")).expect("hex"));
            }
            out
        }
        "bundle" => {
            let whole = bundle_text(&colossus, None);
            let range = bundle_text(&colossus, Some((3, 6)));
            let mut out = vec![];
            for options in [0u8, 1, 2 | (3 << 2)] {
                for text in [&whole, &range] {
                    out.push([&[options], text.as_bytes()].concat());
                }
            }
            out
        }
        "merkle" => (0u8..8).map(|i| (0..200u16).map(|b| (b as u8).wrapping_mul(i + 1)).collect()).collect(),
        "checkpoint" => {
            let signer = signer();
            let mut out = vec![signer.verifier().to_string().into_bytes()];
            for size in [0u64, 1, 9, u64::MAX] {
                let checkpoint = Checkpoint { origin: SIGNER_NAME.into(), size, root: events::Digest([size as u8; 32]) };
                out.push(checkpoint.body().into_bytes());
                out.push(signer.sign(&checkpoint).into_bytes());
            }
            let vector = &json("testdata/vectors/merkle.json")["checkpoint"];
            for field in ["verifier_key", "text", "note"] {
                out.push(vector[field].as_str().expect("checkpoint vector").as_bytes().to_vec());
            }
            out
        }
        "query" => [
            (0u8, "after=3&limit=10"),
            (1, "as_of=2026-12-31&known_at=5"),
            (2, "as_of=2026-12-31&known_at=5&granularity=quarter"),
            (2, "granularity=month&as_of=2028-02-29"),
            (3, "seq=1&tree_size=9"),
            (4, "from=2&to=9"),
            (5, "after=18446744073709551615"),
            (0, "limit=1000&after=%31"),
        ]
        .iter()
        .map(|(route, q)| [&[*route], q.as_bytes()].concat())
        .collect(),
        "admission" => {
            let mut out: Vec<Vec<u8>> = histories.into_iter().map(String::into_bytes).collect();
            out.extend((0u8..8).map(|i| (0..512u16).map(|b| (b as u8).wrapping_mul(i * 2 + 1).wrapping_add(i)).collect()));
            out
        }
        other => panic!("no target {other}"),
    }
}
