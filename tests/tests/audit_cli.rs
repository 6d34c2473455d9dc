//! The auditor's command line, run as real processes: `cledger prove`, `key`, `export` and
//! `verify` against bundles and data directories, with kept checkpoints (issue 6).

use e2e::audit::{
    check_consistency_json, check_inclusion_json, cledger_verify, prove, cledger_verify_bundle, digest, digests, export, flip_char, hashes_of, import, key_of, mth,
    open_note, s, sample_invoice, sample_lines, set_latest_checkpoint, Histories,
};
use e2e::run;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect()
}

fn sample_ledger(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    import(&data, &sample_lines());
    data
}


#[test]
fn prove_output_verifies_against_the_event_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_ledger(dir.path());
    let d = s(&data);
    let hashes = hashes_of(&data);
    assert_eq!(hashes.len(), 9);
    // The signed checkpoint's root is the tree hash of FORMAT.md section 5, computed here.
    let checkpoint = open_note(&key_of(&data), &export(&data, None, None).note());
    assert_eq!((checkpoint.size, checkpoint.root), (9, mth(&hashes)));

    let mut pairs: Vec<(u64, u64)> = (1..=9).map(|seq| (seq, 9)).collect();
    pairs.extend([(1, 1), (1, 2), (2, 2), (3, 5), (5, 5), (6, 7), (4, 8), (8, 8)]);
    for (seq, size) in pairs {
        let v = prove(&["inclusion", "--data", d, "--seq", &seq.to_string(), "--tree-size", &size.to_string()]);
        check_inclusion_json(&v, seq, size, &hashes);
    }
    // Without --tree-size: the head's tree.
    let v = prove(&["inclusion", "--data", d, "--seq", "2"]);
    check_inclusion_json(&v, 2, 9, &hashes);
    assert_eq!(digest(&v["root"]), checkpoint.root);

    let mut pairs: Vec<(u64, u64)> = (0..=9).map(|from| (from, 9)).collect();
    pairs.extend([(0, 0), (1, 2), (2, 3), (3, 5), (4, 4), (2, 7), (5, 8)]);
    for (from, to) in pairs {
        let v = prove(&["consistency", "--data", d, "--from", &from.to_string(), "--to", &to.to_string()]);
        check_consistency_json(&v, from, to, &hashes);
    }
    let v = prove(&["consistency", "--data", d, "--from", "3"]);
    check_consistency_json(&v, 3, 9, &hashes);
    assert_eq!(digests(&v["hashes"]).len(), 5, "the proof from 3 to 9 has 5 hashes (RFC 9162 SUBPROOF): {v}");

    // Out of range: an error (exit 2), no proof printed.
    for args in [
        vec!["inclusion", "--data", d, "--seq", "10"],
        vec!["inclusion", "--data", d, "--seq", "0"],
        vec!["inclusion", "--data", d, "--seq", "3", "--tree-size", "2"],
        vec!["inclusion", "--data", d, "--seq", "1", "--tree-size", "10"],
        vec!["consistency", "--data", d, "--from", "10"],
        vec!["consistency", "--data", d, "--from", "5", "--to", "4"],
        vec!["consistency", "--data", d, "--from", "1", "--to", "10"],
    ] {
        let mut all = vec!["prove"];
        all.extend_from_slice(&args);
        let (code, stdout, stderr) = run(&all);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{args:?} printed {stdout}");
        assert!(!stderr.trim().is_empty(), "{args:?} says why");
    }
}

#[test]
fn the_signing_key_is_created_once_with_mode_0600_and_names_the_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_ledger(dir.path());
    let file = data.join("checkpoint-signing.key");
    assert!(!file.exists(), "import signs nothing, so creates no key");
    let key = key_of(&data);
    let meta = std::fs::metadata(&file).expect("cledger key created the signing key");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the seed is private");
    let seed = std::fs::read_to_string(&file).unwrap();
    assert_eq!(seed.trim().len(), 64, "{seed:?}");
    assert!(seed.trim().bytes().all(|b| b.is_ascii_hexdigit()), "{seed:?}");
    // The same key every time, from every command.
    assert_eq!(key_of(&data), key);
    let bundle = export(&data, None, None);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), seed, "export reuses the key");
    let header = bundle.header();
    assert_eq!(header["verifier_key"], key.as_str());
    let name = key.split('+').next().unwrap();
    assert!(name.starts_with("cledger-") && name.len() == "cledger-".len() + 8, "{key}");
    assert_eq!(header["origin"], name);
    let checkpoint = open_note(&key, &bundle.note());
    assert_eq!(checkpoint.origin, name);
    // Another data directory has another key (and origin).
    let other = dir.path().join("other");
    import(&other, &sample_lines()[..1]);
    let other_key = key_of(&other);
    assert_ne!(other_key, key);
    assert_ne!(other_key.split('+').next().unwrap(), name);
}

#[test]
fn bundles_are_laid_out_as_format_md_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_ledger(dir.path());
    let key = key_of(&data);
    let hashes = hashes_of(&data);
    let whole = export(&data, None, None);
    assert_eq!(whole.lines.len(), 11);
    let header = whole.header();
    assert_eq!(keys(&header), ["format", "version", "origin", "verifier_key", "from", "to"]);
    assert_eq!((header["format"].as_str(), header["version"].as_u64(), header["from"].as_u64(), header["to"].as_u64()), (Some("compute-ledger-export"), Some(1), Some(1), Some(9)));
    let log = e2e::server::log_json(&data);
    for seq in 1..=9u64 {
        let line = whole.json(seq as usize);
        assert_eq!(keys(&line), ["seq", "hash", "prev_hash", "canonical", "event"]);
        assert_eq!(line["seq"], seq);
        assert_eq!(digest(&line["hash"]), hashes[seq as usize - 1]);
        let prev = if seq == 1 { events::Digest::ZERO } else { hashes[seq as usize - 2] };
        assert_eq!(digest(&line["prev_hash"]), prev);
        let logged = &log[seq as usize - 1];
        assert_eq!((&line["canonical"], &line["event"]), (&logged["canonical"], &logged["event"]), "the bundle holds the stored bytes");
    }
    let last = whole.last();
    assert_eq!(keys(&last), ["checkpoint"], "a whole bundle carries no proofs");
    let note = whole.note();
    let checkpoint = open_note(&key, &note);
    assert_eq!((checkpoint.size, checkpoint.root), (9, mth(&hashes)));
    let lines: Vec<&str> = note.split('\n').collect();
    assert_eq!(lines.len(), 6, "{note:?}");
    assert_eq!(&lines[..4], [checkpoint.origin.as_str(), "9", &base64_of(&checkpoint.root), ""]);
    assert!(lines[4].starts_with(&format!("\u{2014} {} ", checkpoint.origin)), "{note:?}");
    assert_eq!(lines[5], "");

    // A range: the proofs tie its last event and the tree before it to the checkpoint.
    let range = export(&data, Some(4), Some(6));
    assert_eq!(range.lines.len(), 5);
    assert_eq!((range.from(), range.to()), (4, 6));
    assert_eq!((2..5).map(|i| range.json(i - 1)["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 5, 6]);
    let last = range.last();
    assert_eq!(keys(&last), ["checkpoint", "proofs"]);
    let root = open_note(&key, &range.note()).root;
    assert_eq!(root, mth(&hashes));
    let inclusion = &last["proofs"]["inclusion"];
    assert_eq!((inclusion["seq"].as_u64(), inclusion["tree_size"].as_u64()), (Some(6), Some(9)));
    events::merkle::verify_inclusion(&hashes[5], 5, 9, &digests(&inclusion["hashes"]), &root).expect("the inclusion proof");
    let consistency = &last["proofs"]["consistency"];
    assert_eq!((consistency["from"].as_u64(), consistency["to"].as_u64()), (Some(3), Some(9)));
    assert_eq!(digest(&consistency["from_root"]), mth(&hashes[..3]));
    events::merkle::verify_consistency(3, 9, &mth(&hashes[..3]), &root, &digests(&consistency["hashes"])).expect("the consistency proof");
}

fn base64_of(d: &events::Digest) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d.0)
}

/// FORMAT.md section 7: "`inclusion` absent for an empty range, `consistency` absent when
/// A = 1" (absent, not null: a verifier written from the document may test for the key).
#[test]
fn range_bundles_leave_out_the_proofs_that_do_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_ledger(dir.path());
    let from_start = export(&data, Some(1), Some(5));
    let proofs = &from_start.last()["proofs"];
    assert!(proofs["inclusion"].is_object(), "{proofs}");
    let empty = export(&data, Some(10), None);
    assert_eq!((empty.from(), empty.to(), empty.lines.len()), (10, 9, 2));
    let empty_proofs = &empty.last()["proofs"];
    assert!(empty_proofs["consistency"].is_object(), "{empty_proofs}");
    assert_eq!(empty_proofs["consistency"]["hashes"], serde_json::json!([]), "a proof between equal sizes is empty");
    assert_eq!(keys(proofs), ["inclusion"], "a range from seq 1 has no consistency proof: {proofs}");
    assert_eq!(keys(empty_proofs), ["consistency"], "an empty range has no inclusion proof: {empty_proofs}");
}

#[test]
fn a_checkpoint_signed_by_another_key_is_rejected() {
    let h = Histories::new();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    import(&other, &sample_lines()[..3]);
    let other_key = key_of(&other);
    let other_name = other_key.split('+').next().unwrap().to_string();
    let bundle = export(&h.main, None, None);
    cledger_verify_bundle(&bundle, Some(&h.key), None).assert_ok("the right key");
    // The bundle names its key: another one given is refused at once.
    cledger_verify_bundle(&bundle, Some(&other_key), None).assert_failed("another key", "another verifier key");
    // The header rewritten to name the other key: then it is the signature that fails.
    let forged = bundle.edit(0, |header| {
        header["origin"] = other_name.clone().into();
        header["verifier_key"] = other_key.clone().into();
    });
    cledger_verify_bundle(&forged, Some(&other_key), None).assert_failed("a header naming the other key", "checkpoint");
    cledger_verify_bundle(&forged, None, None).assert_failed("a header naming the other key, trusted on first use", "checkpoint");
    // Another ledger's (validly signed) checkpoint line in this bundle.
    let spliced = bundle.with_last_line_of(&export(&other, None, None));
    cledger_verify_bundle(&spliced, Some(&h.key), None).assert_failed("another ledger's checkpoint", "checkpoint");
    // A data directory with a signed checkpoint: verified with another key, refused.
    cledger_verify(&["--data", s(&h.main), "--key", &other_key]).assert_failed("data with another key", "does not verify");
    cledger_verify(&["--data", s(&h.main), "--key", &h.key]).assert_ok("data with its key");
    // --key also takes a file holding the key.
    let key_file = dir.path().join("ledger.vkey");
    std::fs::write(&key_file, format!("{other_key}\n")).unwrap();
    cledger_verify(&["--data", s(&h.main), "--key", s(&key_file)]).assert_failed("data with another key from a file", "does not verify");
    std::fs::write(&key_file, format!("{}\n", h.key)).unwrap();
    cledger_verify_bundle(&bundle, Some(s(&key_file)), None).assert_ok("the right key from a file");
}

/// `verify --data DIR --key K` must not pass a ledger whose signing key is not K. With no
/// checkpoint stored yet there is no signature to check, but with --trusted-checkpoint the
/// command signs one with the directory's own key and keeps it as if K had signed it.
#[test]
fn verify_data_does_not_keep_a_checkpoint_signed_by_a_key_other_than_the_one_given() {
    let h = Histories::new();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    import(&other, &sample_lines()[..3]);
    let other_key = key_of(&other);
    let kept = h.kept("kept.note");
    let verdict = cledger_verify(&["--data", s(&other), "--key", &h.key, "--trusted-checkpoint", s(&kept)]);
    let kept_text = std::fs::read_to_string(&kept).unwrap_or_default();
    let kept_verifies = events::checkpoint::VerifierKey::parse(&h.key).unwrap().verify(&kept_text).is_ok();
    assert!(
        verdict.code != 0 && (kept_text.is_empty() || kept_verifies),
        "verify --data of a ledger signed by {other_key} with --key {}: exit {} ({}), and kept a checkpoint the given key does not verify:\n{kept_text}",
        h.key,
        verdict.code,
        verdict.stdout.trim()
    );
}

#[test]
fn a_signed_checkpoint_that_does_not_match_the_events_is_rejected() {
    let h = Histories::new();
    let early = export(&h.prefix, None, None);
    let full = export(&h.main, None, None);
    let forked = export(&h.fork, None, None);
    cledger_verify_bundle(&early, Some(&h.key), None).assert_ok("the 5-event ledger");
    cledger_verify_bundle(&full, Some(&h.key), None).assert_ok("the 9-event ledger");
    cledger_verify_bundle(&forked, Some(&h.key), None).assert_ok("the fork, on its own");
    let size_9 = open_note(&h.key, &full.note());
    let fork_9 = open_note(&h.key, &forked.note());
    assert_eq!((size_9.size, fork_9.size), (9, 9));
    assert_ne!(size_9.root, fork_9.root);

    // An earlier checkpoint of the same ledger (size 5) under 9 events.
    cledger_verify_bundle(&full.with_last_line_of(&early), Some(&h.key), None).assert_failed("a checkpoint of 5 under 9 events", "does not cover");
    // A later one (size 9) under the 5 events of the earlier export.
    cledger_verify_bundle(&early.with_last_line_of(&full), Some(&h.key), None).assert_failed("a checkpoint of 9 under 5 events", "proofs");
    // Same key, same size, another history's root.
    cledger_verify_bundle(&full.with_last_line_of(&forked), Some(&h.key), None).assert_failed("the fork's checkpoint", "Merkle root");
    // The note's text altered: the signature no longer covers it.
    let altered_root = full.edit_note(|note| {
        let mut lines: Vec<String> = note.split('\n').map(str::to_string).collect();
        lines[2] = flip_char(&lines[2], 5);
        lines.join("\n")
    });
    cledger_verify_bundle(&altered_root, Some(&h.key), None).assert_failed("the root altered", "signature");
    let altered_size = full.edit_note(|note| note.replacen("\n9\n", "\n8\n", 1));
    assert_ne!(altered_size, full);
    cledger_verify_bundle(&altered_size, Some(&h.key), None).assert_failed("the size altered", "signature");

    // A data directory whose stored checkpoint is the fork's: signed, of its size, wrong root.
    set_latest_checkpoint(&h.main, &forked.note());
    cledger_verify(&["--data", s(&h.main), "--key", &h.key]).assert_failed("data with the fork's checkpoint", "latest checkpoint (size 9)");
    // Its own earlier checkpoint (of the shared 5 events) matches.
    set_latest_checkpoint(&h.main, &early.note());
    let verdict = cledger_verify(&["--data", s(&h.main), "--key", &h.key]);
    verdict.assert_ok("data with its checkpoint of 5");
    assert!(verdict.stdout.contains("latest checkpoint (size 5) signed and matching"), "{}", verdict.stdout);
}

#[test]
fn a_rolled_back_ledger_is_refused_against_a_kept_checkpoint() {
    let h = Histories::new();
    let kept = h.kept("kept.note");
    let full = export(&h.main, None, None);
    cledger_verify_bundle(&full, Some(&h.key), Some(&kept)).assert_ok("first verification keeps the checkpoint");
    let note = std::fs::read_to_string(&kept).expect("the checkpoint was kept");
    assert_eq!(note, full.note());
    let checkpoint = open_note(&h.key, &note);
    assert_eq!((checkpoint.size, checkpoint.root), (9, mth(&hashes_of(&h.main))));

    // The copy with 5 events verifies on its own, and is a rollback against what was kept.
    let rolled_back = export(&h.prefix, None, None);
    cledger_verify_bundle(&rolled_back, Some(&h.key), None).assert_ok("the rolled-back copy, alone");
    cledger_verify_bundle(&rolled_back, Some(&h.key), Some(&kept)).assert_failed("a rolled-back bundle", "rollback");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), note, "a failed verification keeps the old checkpoint");
    // Its data directory too.
    let verdict = cledger_verify(&["--data", s(&h.prefix), "--key", &h.key, "--trusted-checkpoint", s(&kept)]);
    assert!(verdict.rejected(), "a rolled-back data directory: exit {} {}{}", verdict.code, verdict.stdout, verdict.stderr);
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), note);
    // A range of the rolled-back ledger does not escape it either.
    cledger_verify_bundle(&export(&h.prefix, Some(3), None), Some(&h.key), Some(&kept)).assert_failed("a range of the rolled-back copy", "rollback");
    // The real ledger still extends it.
    cledger_verify(&["--data", s(&h.main), "--key", &h.key, "--trusted-checkpoint", s(&kept)]).assert_ok("the ledger itself");
    assert_eq!(open_note(&h.key, &std::fs::read_to_string(&kept).unwrap()), checkpoint);
}

/// README "Auditing": `--trusted-checkpoint` "refuses a ledger shorter than the checkpoint
/// you kept (rollback)"; for a data directory the refusal should say so, not name a seq
/// that was never damaged.
#[test]
fn verify_data_names_a_rollback_as_such() {
    let h = Histories::new();
    let kept = h.kept("kept.note");
    cledger_verify(&["--data", s(&h.main), "--key", &h.key, "--trusted-checkpoint", s(&kept)]).assert_ok("keeps 9");
    cledger_verify(&["--data", s(&h.prefix), "--key", &h.key, "--trusted-checkpoint", s(&kept)]).assert_failed("a rolled-back data directory", "rollback");
}

#[test]
fn a_forked_history_is_refused_against_a_kept_checkpoint() {
    let h = Histories::new();
    // A checkpoint of the shared 5 events: both histories extend it.
    let kept_5 = h.kept("kept-5.note");
    cledger_verify(&["--data", s(&h.prefix), "--key", &h.key, "--trusted-checkpoint", s(&kept_5)]).assert_ok("keeps 5");
    assert_eq!(open_note(&h.key, &std::fs::read_to_string(&kept_5).unwrap()).size, 5);
    let kept_5_copy = h.kept("kept-5-copy.note");
    std::fs::copy(&kept_5, &kept_5_copy).unwrap();
    let main = export(&h.main, None, None);
    let fork = export(&h.fork, None, None);
    let verdict = cledger_verify_bundle(&fork, Some(&h.key), Some(&kept_5_copy));
    verdict.assert_ok("the fork extends 5");
    assert!(verdict.stdout.contains("extends the kept checkpoint"), "{}", verdict.stdout);
    cledger_verify_bundle(&main, Some(&h.key), Some(&kept_5)).assert_ok("main extends 5");
    let kept = kept_5; // now main's checkpoint of 9
    let note = std::fs::read_to_string(&kept).unwrap();
    assert_eq!(open_note(&h.key, &note).size, 9);

    // Same size, another event at seq 6: refused as a bundle, as a range after the kept
    // size, and as a data directory.
    cledger_verify_bundle(&fork, Some(&h.key), Some(&kept)).assert_failed("the fork's bundle", "rewrote history");
    cledger_verify_bundle(&export(&h.fork, Some(10), None), Some(&h.key), Some(&kept)).assert_failed("the fork's range after 9", "rewrote history");
    cledger_verify(&["--data", s(&h.fork), "--key", &h.key, "--trusted-checkpoint", s(&kept)]).assert_failed("the fork's data", "rewrote history");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), note, "failures keep the old checkpoint");
    // The fork grown past the kept size: still refused.
    import(&h.fork, &[sample_invoice("INV-FORK-2", "2.00")]);
    cledger_verify_bundle(&export(&h.fork, None, None), Some(&h.key), Some(&kept)).assert_failed("the longer fork", "rewrote history");
    cledger_verify_bundle(&export(&h.fork, Some(10), None), Some(&h.key), Some(&kept)).assert_failed("the longer fork's range after 9", "rewrote history");
    // The real history: an empty range after the kept size extends it.
    cledger_verify_bundle(&export(&h.main, Some(10), None), Some(&h.key), Some(&kept)).assert_ok("main's empty range after 9");
}

#[test]
fn a_range_bundle_extends_a_kept_checkpoint_and_the_file_moves_on() {
    let h = Histories::new();
    let kept = h.kept("kept.note");
    cledger_verify_bundle(&export(&h.main, None, None), Some(&h.key), Some(&kept)).assert_ok("keeps 9");
    import(&h.main, &[sample_invoice("INV-010", "10.00"), sample_invoice("INV-011", "11.00"), sample_invoice("INV-012", "12.00")]);
    let hashes = hashes_of(&h.main);
    assert_eq!(hashes.len(), 12);
    let range = export(&h.main, Some(10), None);
    assert_eq!((range.from(), range.to()), (10, 12));
    let verdict = cledger_verify_bundle(&range, Some(&h.key), Some(&kept));
    verdict.assert_ok("events 10 to 12 after the kept 9");
    assert!(verdict.stdout.contains("events 10 to 12 verified") && verdict.stdout.contains("extends the kept checkpoint"), "{}", verdict.stdout);
    let moved = open_note(&h.key, &std::fs::read_to_string(&kept).unwrap());
    assert_eq!((moved.size, moved.root), (12, mth(&hashes)));
    // A range that starts elsewhere cannot be tied to the kept size: refused, file untouched.
    cledger_verify_bundle(&export(&h.main, Some(4), Some(6)), Some(&h.key), Some(&kept)).assert_failed("a range from 4", "cannot be checked");
    assert_eq!(open_note(&h.key, &std::fs::read_to_string(&kept).unwrap()), moved);
    // Without --key a kept checkpoint cannot be trusted: the command refuses to run.
    let verdict = cledger_verify_bundle(&range, None, Some(&kept));
    assert_eq!(verdict.code, 2, "{}{}", verdict.stdout, verdict.stderr);
    // A kept checkpoint signed by another key: not usable either.
    let other = h.dir.path().join("other");
    import(&other, &sample_lines()[..1]);
    let verdict = cledger_verify_bundle(&range, Some(&key_of(&other)), Some(&kept));
    assert_eq!(verdict.code, 2, "{}{}", verdict.stdout, verdict.stderr);
    assert!(verdict.stderr.contains("does not verify"), "{}", verdict.stderr);
}
