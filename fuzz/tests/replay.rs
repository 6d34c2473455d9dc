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

/// Inputs per target of the mutation pass below.
const MUTATIONS_PER_TARGET: usize = 400;

/// Numbers at the edges of what the formats hold, spliced over digits.
const INTERESTING: &[&str] = &[
    "0", "-1", "18446744073709551615", "18446744073709551616", "-9223372036854775808", "9223372036854775807",
    "1000000000000000000000000000000", "9999-12-31", "0001-01-01", "2028-02-29", "1e400", "0.000", "-0.01",
];

/// A bounded pass of mutated seeds, different on every run (the seed is printed, and
/// `CLEDGER_FUZZ_SEED` repeats a run): the fuzzer's cheapest kind of search, in CI time.
#[test]
fn mutated_seeds_pass() {
    let seed = std::env::var("CLEDGER_FUZZ_SEED").ok().map_or_else(
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        |s| s.parse().expect("CLEDGER_FUZZ_SEED is a number"),
    );
    eprintln!("mutation pass: CLEDGER_FUZZ_SEED={seed}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        for i in 0..MUTATIONS_PER_TARGET {
            let mut input = seeds[i % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                mutate(&mut input, &seeds, &mut next);
            }
            let result = std::panic::catch_unwind(|| target(&input));
            if result.is_err() {
                let path = std::env::temp_dir().join(format!("fuzz-{name}-{seed}-{i}"));
                std::fs::write(&path, &input).expect("keep the input");
                panic!("{name}: mutated input {i} of CLEDGER_FUZZ_SEED={seed} fails; kept in {}", path.display());
            }
        }
    }
}

fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], next: &mut impl FnMut() -> u64) {
    let at = |len: usize, r: u64| if len == 0 { 0 } else { r as usize % len };
    match next() % 6 {
        0 if !input.is_empty() => {
            let i = at(input.len(), next());
            input[i] ^= 1 << (next() % 8);
        }
        1 if !input.is_empty() => {
            let i = at(input.len(), next());
            input.remove(i);
        }
        2 => {
            let i = at(input.len() + 1, next());
            input.insert(i, next() as u8);
        }
        3 => {
            // Replace a run of digits (or insert at a random place) with an interesting number.
            let value = INTERESTING[next() as usize % INTERESTING.len()].as_bytes();
            let digits: Vec<usize> = input.iter().enumerate().filter(|(_, b)| b.is_ascii_digit()).map(|(i, _)| i).collect();
            let start = if digits.is_empty() { at(input.len() + 1, next()) } else { digits[next() as usize % digits.len()] };
            let mut end = start;
            while end < input.len() && input[end].is_ascii_digit() {
                end += 1;
            }
            input.splice(start..end, value.iter().copied());
        }
        4 => {
            // Splice: the head of this input, the tail of another seed.
            let other = &seeds[next() as usize % seeds.len()];
            let cut = at(input.len() + 1, next());
            let from = at(other.len() + 1, next());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        _ if !input.is_empty() => {
            let i = at(input.len(), next());
            let j = (i + 1 + next() as usize % 16).min(input.len());
            let chunk = input[i..j].to_vec();
            input.splice(i..i, chunk);
        }
        _ => input.push(next() as u8),
    }
}
