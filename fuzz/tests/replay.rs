//! Replays every target's seeds and every kept regression input (`regressions/TARGET/*`)
//! through the same functions the fuzzer runs: what once crashed stays fixed, and the seeds
//! (the examples and test data) pass every property. A plain `cargo test`: no fuzzer needed.

use ledger_fuzz::{repository, seeds::seeds, TARGETS};

#[test]
fn every_target_passes_its_seeds() {
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        for (i, seed) in seeds.iter().enumerate() {
            eprintln!("{name} seed {i}");
            target(seed);
        }
    }
}

#[test]
fn every_regression_input_passes() {
    let root = repository().join("fuzz/regressions");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.expect("entry").path()).collect();
        paths.sort();
        for path in paths {
            eprintln!("{name}: {}", path.display());
            target(&std::fs::read(&path).expect("read a regression input"));
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}

#[test]
fn regression_directories_name_targets() {
    let Ok(entries) = std::fs::read_dir(repository().join("fuzz/regressions")) else { return };
    for entry in entries {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(TARGETS.iter().any(|(n, _)| *n == name), "regressions/{name} is not a target");
    }
}
