//! `fuzz-seeds TARGET DIR`: writes the seed inputs of TARGET into DIR, one file each, for
//! afl-fuzz's `-i`.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: fuzz-seeds TARGET DIR");
        std::process::exit(2);
    };
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).expect("create the seed directory");
    let seeds = ledger_fuzz::seeds::seeds(&target);
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), seed).expect("write a seed");
    }
    // Inputs kept from earlier crashes are seeds too: the fuzzer starts from what broke.
    let regressions = ledger_fuzz::repository().join("fuzz/regressions").join(&target);
    let mut kept = 0;
    if let Ok(entries) = std::fs::read_dir(&regressions) {
        for entry in entries.flatten() {
            std::fs::copy(entry.path(), dir.join(format!("regression-{}", entry.file_name().to_string_lossy()))).expect("copy a regression");
            kept += 1;
        }
    }
    println!("{} seeds and {kept} regression inputs in {}", seeds.len(), dir.display());
}
