//! `fuzz-replay TARGET FILE...`: runs TARGET on each file, outside the fuzzer, so a finding
//! shows its panic message and backtrace.

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: fuzz-replay TARGET FILE...");
    let target = ledger_fuzz::target(&name).unwrap_or_else(|| panic!("no target `{name}`"));
    for file in args {
        eprintln!("{name}: {file}");
        target(&std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}")));
    }
    eprintln!("no panic");
}
