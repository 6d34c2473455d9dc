//! The `cledger` command line, run as a real process: import, verify, log.

use base64::Engine;
use e2e::{cledger, run, sample_file, tamper_record};
use std::io::Write;
use std::process::Stdio;

fn imported(dir: &std::path::Path) -> String {
    let data = dir.join("data");
    let (code, stdout, stderr) = run(&["import", "--data", data.to_str().unwrap(), sample_file().to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "imported 9 events (seq 1 to 9); 0 already present (idempotency key matched)");
    data.to_str().unwrap().to_string()
}

fn log_json(data: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["log", "--data", data, "--json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn import_verify_and_log_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let (code, stdout, _) = run(&["verify", "--data", &data]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("ok: 9 events verified, head seq 9 hash "), "{stdout}");

    let lines = log_json(&data, &[]);
    assert_eq!(lines.len(), 9);
    let mut prev = "0".repeat(64);
    for (i, line) in lines.iter().enumerate() {
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["seq", "contract_id", "version", "type", "effective_date", "recorded_at", "hash", "prev_hash", "canonical", "event"]);
        assert_eq!(line["seq"], i as u64 + 1);
        assert_eq!(line["prev_hash"], prev.as_str());
        // The hash is BLAKE3 derive-key over exactly the canonical bytes shown.
        let canonical = base64::engine::general_purpose::STANDARD.decode(line["canonical"].as_str().unwrap()).unwrap();
        let mut hasher = blake3::Hasher::new_derive_key("compute-ledger 2026-11 event v1");
        hasher.update(&canonical);
        assert_eq!(line["hash"], hasher.finalize().to_hex().as_str());
        assert_eq!(line["event"]["type"], line["type"]);
        prev = line["hash"].as_str().unwrap().to_string();
    }
    assert_eq!(lines[3]["contract_id"], serde_json::Value::Null);
    assert_eq!(lines[3]["type"], "period_closed");
    assert_eq!(lines[4]["event"]["data"]["amount"], "2500000.00");
    assert!(lines[0]["recorded_at"].as_str().unwrap().ends_with('Z'));

    let contract = log_json(&data, &["--contract", "colossus-1"]);
    assert_eq!(contract.iter().map(|l| l["version"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    let page = log_json(&data, &["--after", "3", "--limit", "2"]);
    assert_eq!(page.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 5]);

    let (code, table, _) = run(&["log", "--data", &data]);
    assert_eq!(code, 0);
    assert_eq!(table.lines().count(), 10);
    assert!(table.lines().nth(4).unwrap().contains("period_closed"));
}

#[test]
fn logged_events_reimport_into_an_identical_chain_of_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    let lines = log_json(&data, &[]);
    let events: String = lines.iter().map(|l| format!("{}\n", l["event"])).collect();
    let copy = dir.path().join("copy");
    let mut child = cledger().args(["import", "--data", copy.to_str().unwrap(), "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(events.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let again = log_json(copy.to_str().unwrap(), &[]);
    for (a, b) in lines.iter().zip(&again) {
        assert_eq!(a["event"], b["event"]);
    }
}

#[test]
fn import_stops_at_the_first_refused_line_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(sample_file()).unwrap();
    let mut lines: Vec<String> = sample.lines().take(3).map(str::to_string).collect();
    lines.push(r#"{"contract_id": "colossus-1", "type": "sla_credit_issued", "effective_date": "2026-09-30", "data": {"amount": "2500000.001", "reason": "x"}}"#.into());
    lines.push(sample.lines().nth(4).unwrap().to_string());
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let data = dir.path().join("data");
    let (code, stdout, stderr) = run(&["import", "--data", data.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("imported 3 events (seq 1 to 3)"), "{stdout}");
    assert!(stderr.contains("line 4: data.amount: too_many_decimals"), "{stderr}");
    assert_eq!(log_json(data.to_str().unwrap(), &[]).len(), 3);
    assert_eq!(run(&["verify", "--data", data.to_str().unwrap()]).0, 0);
}

#[test]
fn import_names_malformed_json_and_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(sample_file()).unwrap();
    let grant = sample.lines().next().unwrap();
    for (bad, expected) in [
        ("{\"contract_id\": \"colossus-1\", ", "line 3: invalid_json"),
        (r#"{"contract_id":"colossus-1","type":"invoice_issued","effective_date":"2026-06-01","data":{"invoice_id":"I","amount":"1","due_date":"2026-07-01","memo":"x"}}"#, "line 3: data.memo: unknown_field"),
        (r#"{"contract_id":"colossus-1","type":"invoice_voided","effective_date":"2026-06-01","data":{}}"#, "line 3: type: unknown_type"),
    ] {
        let file = dir.path().join("bad.ndjson");
        // A blank line 2 is skipped but counted.
        std::fs::write(&file, format!("{grant}\n\n{bad}\n")).unwrap();
        let data = dir.path().join(format!("data-{}", expected.len()));
        let (code, _, stderr) = run(&["import", "--data", data.to_str().unwrap(), file.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
        assert_eq!(log_json(data.to_str().unwrap(), &[]).len(), 1);
    }
}

#[test]
fn verify_names_the_first_damaged_seq() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    tamper_record(std::path::Path::new(&data), 5, 60, 0x04);
    let (code, stdout, _) = run(&["verify", "--data", &data]);
    assert_eq!(code, 1);
    assert!(stdout.starts_with("FAILED at seq 5: "), "{stdout}");
}

#[test]
fn verify_refuses_a_damaged_head_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    tamper_record(std::path::Path::new(&data), 9, 3, 0x10);
    let (code, stdout, _) = run(&["verify", "--data", &data]);
    assert_eq!(code, 1);
    assert!(stdout.starts_with("FAILED at seq 9: "), "{stdout}");
}

#[test]
fn operational_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["import", "--data", dir.path().join("d").to_str().unwrap(), "/nonexistent/file.ndjson"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read /nonexistent/file.ndjson"), "{stderr}");
    let (code, _, _) = run(&["log", "--data", dir.path().join("d").to_str().unwrap(), "--contract", "bad.id"]);
    assert_eq!(code, 2);
}

/// Issue 9 item 8: `verify FILE` and `verify --url` read a line of any length (a 1 GB line
/// cost 1 GB). Every NDJSON reader now stops at a bound and names the line.
#[test]
fn verify_refuses_an_overlong_bundle_line_from_a_file_or_a_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let bundle = dir.path().join("bundle.ndjson");
    assert_eq!(e2e::run(&["import", "--data", data.to_str().unwrap(), e2e::sample_file().to_str().unwrap()]).0, 0);
    assert_eq!(e2e::run(&["export", "--data", data.to_str().unwrap(), "--out", bundle.to_str().unwrap()]).0, 0);
    let exported = std::fs::read_to_string(&bundle).unwrap();
    let header = exported.lines().next().unwrap().to_string();
    let header = header.as_str();
    let long = format!("{{\"seq\":1,\"pad\":\"{}\"}}", "x".repeat(4 * 1024 * 1024));
    std::fs::write(&bundle, format!("{header}\n{long}\n")).unwrap();
    let (code, stdout, stderr) = e2e::run(&["verify", bundle.to_str().unwrap(), "--trust-bundle-key"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("line 2 is longer than 1048576 bytes"), "{stdout}");

    // The same from a "server" that answers /v1/export with an endless line.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let header_line = header.to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let header = header_line;
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request);
        let _ = socket.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n{header}\n").as_bytes());
        // 64 MB of one line, unless the client hangs up first.
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..64 {
            if socket.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (code, stdout, stderr) = e2e::run(&["verify", "--url", &format!("http://127.0.0.1:{port}"), "--trust-bundle-key"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("line 2 is longer than 1048576 bytes"), "{stdout}");
    server.join().unwrap();

    // And import, with its own bound.
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, format!("{}\n{}\n", serde_json::json!({"x": 1}), "y".repeat(300 * 1024))).unwrap();
    let (code, _, stderr) = e2e::run(&["import", "--data", dir.path().join("data").to_str().unwrap(), events.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("line 1:"), "the first line is refused first: {stderr}");
}

/// A command whose reader goes away (`cledger log | head -1`) ends quietly, as Unix tools
/// do: no panic from a write to a closed pipe.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let data = imported(dir.path());
    for args in [vec!["log", "--data", &data], vec!["export", "--data", &data], vec!["verify", "--data", &data]] {
        let mut child = cledger().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader is gone before the first line
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?} ends by SIGPIPE: {:?} {stderr}", out.status);
    }
}
