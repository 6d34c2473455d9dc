//! The AFL++ entry point: `fuzz-target TARGET`, run by `afl-fuzz` (see scripts/fuzz.sh).
//! Persistent mode: one process runs many inputs.

fn main() {
    let name = std::env::args().nth(1).expect("usage: fuzz-target TARGET");
    let target = ledger_fuzz::target(&name).unwrap_or_else(|| {
        let names: Vec<&str> = ledger_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        panic!("no target `{name}`; targets: {}", names.join(", "))
    });
    afl::fuzz!(|data: &[u8]| target(data));
}
