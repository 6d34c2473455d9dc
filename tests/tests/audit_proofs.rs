//! `cledger verify-proof` (issue 13): an inclusion or consistency proof, as `cledger prove`
//! and the HTTP API give it, checked offline against a signed checkpoint and the log's key,
//! step by step with `--verbose`.

use e2e::audit::{import, key_of, prove, s, sample_lines};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn cli(args: &[&str]) -> (i32, String, String) {
    e2e::run(args)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}


fn verify_proof(proof: &Path, checkpoint: &Path, key: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["verify-proof", s(proof), "--checkpoint", s(checkpoint), "--key", key];
    args.extend_from_slice(extra);
    cli(&args)
}

#[test]
fn proofs_are_checked_against_a_signed_checkpoint_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sample = sample_lines();
    import(&data, &sample[..5]);
    let (code, early, stderr) = cli(&["export", "--data", s(&data)]);
    assert_eq!(code, 0, "{stderr}");
    let early_note = serde_json::from_str::<Value>(early.lines().last().unwrap()).unwrap()["checkpoint"].as_str().unwrap().to_string();
    import(&data, &sample[5..]);
    let key = key_of(&data);
    let (code, bundle, stderr) = cli(&["export", "--data", s(&data)]);
    assert_eq!(code, 0, "{stderr}");
    let note = serde_json::from_str::<Value>(bundle.lines().last().unwrap()).unwrap()["checkpoint"].as_str().unwrap().to_string();
    let checkpoint = write(dir.path(), "checkpoint.note", &note);
    let old = write(dir.path(), "old.note", &early_note);

    // Inclusion of event 5 in the tree of 9, printed step by step.
    let d = s(&data);
    let inclusion = prove(&["inclusion", "--data", d, "--seq", "5", "--tree-size", "9"]);
    let proof = write(dir.path(), "inclusion.json", &inclusion.to_string());
    let (code, stdout, stderr) = verify_proof(&proof, &checkpoint, &key, &["--verbose"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let steps = stdout.lines().filter(|l| l.trim_start().starts_with("step ")).count();
    assert_eq!(steps, inclusion["hashes"].as_array().unwrap().len(), "one step per proof hash:\n{stdout}");
    assert!(stdout.contains(&format!("leaf     = H(0x00 || {})", inclusion["hash"].as_str().unwrap())), "{stdout}");
    assert!(stdout.contains(&format!("= {}", inclusion["root"].as_str().unwrap())), "the last step gives the root:\n{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("ok: event 5 ("), "{stdout}");
    // Quiet without --verbose; standard input; the event itself.
    let (code, stdout, _) = verify_proof(&proof, &checkpoint, &key, &[]);
    assert_eq!((code, stdout.lines().count()), (0, 1), "{stdout}");
    let logged = e2e::server::log_json(&data);
    let event = write(dir.path(), "event.json", &logged[4].to_string());
    assert_eq!(verify_proof(&proof, &checkpoint, &key, &["--event", s(&event)]).0, 0);
    let other_event = write(dir.path(), "other.json", &logged[5].to_string());
    let (code, stdout, _) = verify_proof(&proof, &checkpoint, &key, &["--event", s(&other_event)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("FAILED: the event given is seq 6"), "{stdout}");
    let piped = std::process::Command::new(e2e::cledger_path())
        .args(["verify-proof", "-", "--checkpoint", s(&checkpoint), "--key", &key])
        .stdin(std::fs::File::open(&proof).unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stdout));

    // Refusals, each exit 1 with why.
    let mut changed = inclusion.clone();
    let h = changed["hashes"][1].as_str().unwrap().to_string();
    changed["hashes"][1] = e2e::audit::flip_char(&h, 3).into();
    let cases: Vec<(&str, Value, PathBuf, String, &str)> = vec![
        ("a proof hash changed", changed, checkpoint.clone(), key.clone(), "the inclusion proof fails"),
        ("another leaf", { let mut v = inclusion.clone(); v["seq"] = 4.into(); v["leaf_index"] = 3.into(); v }, checkpoint.clone(), key.clone(), "the inclusion proof fails"),
        ("a proof for another tree size", prove(&["inclusion", "--data", d, "--seq", "5", "--tree-size", "7"]), checkpoint.clone(), key.clone(), "ask for the proof with tree_size=9"),
        ("a checkpoint of another size", inclusion.clone(), old.clone(), key.clone(), "tree of 9 events, the checkpoint for 5"),
        ("leaf_index not seq - 1", { let mut v = inclusion.clone(); v["leaf_index"] = 7.into(); v }, checkpoint.clone(), key.clone(), "leaf_index"),
        ("not a proof", serde_json::json!({"hello": 1}), checkpoint.clone(), key.clone(), "not an inclusion proof"),
    ];
    for (what, proof_json, cp, k, says) in cases {
        let file = write(dir.path(), "case.json", &proof_json.to_string());
        let (code, stdout, stderr) = verify_proof(&file, &cp, &k, &[]);
        assert_eq!(code, 1, "{what}: {stdout}{stderr}");
        assert!(stdout.starts_with("FAILED") && stdout.contains(says), "{what}: {stdout}");
    }
    let other = dir.path().join("other");
    import(&other, &sample[..1]);
    let (code, stdout, _) = verify_proof(&proof, &checkpoint, &key_of(&other), &[]);
    assert_eq!(code, 1, "another key: {stdout}");
    let tampered = write(dir.path(), "tampered.note", &note.replacen("\n9\n", "\n8\n", 1));
    assert_eq!(verify_proof(&proof, &tampered, &key, &[]).0, 1, "a tampered checkpoint");

    // Consistency from 5 to 9, with the checkpoint of 5 kept earlier.
    let consistency = prove(&["consistency", "--data", d, "--from", "5", "--to", "9"]);
    let proof = write(dir.path(), "consistency.json", &consistency.to_string());
    let (code, stdout, stderr) = verify_proof(&proof, &checkpoint, &key, &["--old-checkpoint", s(&old), "--verbose"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("start    = "), "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("ok: the tree of 5 events"), "{stdout}");
    let (code, stdout, _) = verify_proof(&proof, &checkpoint, &key, &["--old-checkpoint", s(&checkpoint)]);
    assert_eq!(code, 1, "an old checkpoint of another size: {stdout}");
    let mut wrong_root = consistency.clone();
    wrong_root["from_root"] = e2e::audit::flip_char(consistency["from_root"].as_str().unwrap(), 0).into();
    let file = write(dir.path(), "wrong.json", &wrong_root.to_string());
    let (code, stdout, _) = verify_proof(&file, &checkpoint, &key, &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("the consistency proof fails"), "{stdout}");
    // Unusable input: exit 2.
    let garbage = write(dir.path(), "garbage.json", "{");
    assert_eq!(verify_proof(&garbage, &checkpoint, &key, &[]).0, 2);
}
