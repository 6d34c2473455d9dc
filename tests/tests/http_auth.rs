//! Bearer tokens and roles: every endpoint × every role (and no token, and an unknown one).

use e2e::server::{eventually, invoice, make_token, small_grant, Api, Options, Server, SseClient, Tokens};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    Write,
    Finance,
    Audit,
    Open,
}

const ROUTES: [(&str, &str, Access); 29] = [
    ("POST", "/v1/events", Access::Write),
    ("POST", "/v1/events/batch", Access::Write),
    ("GET", "/v1/events", Access::Audit),
    ("GET", "/v1/events/1", Access::Audit),
    ("GET", "/v1/contracts", Access::Finance),
    ("GET", "/v1/contracts/c", Access::Finance),
    ("GET", "/v1/contracts/c/events", Access::Audit),
    ("GET", "/v1/contracts/c/revenue?as_of=2026-12-31", Access::Finance),
    ("GET", "/v1/portfolio?as_of=2026-12-31", Access::Finance),
    ("GET", "/v1/contracts/c/rollforward?from=2026-01-01&to=2026-03-31", Access::Finance),
    ("GET", "/v1/portfolio/rollforward?from=2026-01-01&to=2026-03-31", Access::Finance),
    ("GET", "/v1/contracts/c/rpo?as_of=2026-12-31", Access::Finance),
    ("GET", "/v1/portfolio/rpo?as_of=2026-12-31", Access::Finance),
    ("GET", "/v1/portfolio/waterfall?as_of=2026-12-31", Access::Finance),
    ("GET", "/v1/corrections?from_known_at=0", Access::Finance),
    ("GET", "/v1/periods", Access::Finance),
    ("GET", "/v1/periods/preview?period_end=2026-03-31", Access::Finance),
    ("GET", "/v1/chain/head", Access::Audit),
    ("GET", "/v1/stream", Access::Audit),
    ("GET", "/v1/checkpoints/latest", Access::Audit),
    ("POST", "/v1/checkpoints", Access::Audit),
    ("GET", "/v1/proofs/inclusion?seq=1", Access::Audit),
    ("GET", "/v1/proofs/consistency?from=1", Access::Audit),
    ("GET", "/v1/export", Access::Audit),
    ("GET", "/healthz", Access::Open),
    ("GET", "/readyz", Access::Open),
    ("GET", "/v1/cluster", Access::Open),
    ("GET", "/metrics", Access::Open),
    ("GET", "/openapi.json", Access::Open),
];

/// The status a caller with `role` (None: no token; "stranger": a token not in the file)
/// must get.
fn expected(access: Access, role: Option<&str>, method: &str) -> (u16, Option<&'static str>) {
    let success = if method == "POST" { 201 } else { 200 };
    match (access, role) {
        (Access::Open, _) => (200, None),
        (_, None | Some("stranger")) => (401, Some("unauthorized")),
        (_, Some("admin")) | (Access::Write, Some("writer")) | (Access::Finance, Some("finance")) | (Access::Audit, Some("auditor")) => (success, None),
        // Auditors test the figures: they read every finance route (and write nothing).
        (Access::Finance, Some("auditor")) => (success, None),
        _ => (403, Some("forbidden")),
    }
}

#[test]
fn every_endpoint_by_every_role() {
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), token: Some(tokens.admin.clone()), ..Options::default() });
    server.append_ok(&small_grant("c"));
    let stranger = "f".repeat(64);
    let mut failures = vec![];
    let mut appended = vec![];
    let mut n = 0;
    for (method, path, access) in ROUTES {
        for role in [None, Some("writer"), Some("finance"), Some("auditor"), Some("admin"), Some("stranger")] {
            let secret = role.map(|r| if r == "stranger" { stranger.as_str() } else { tokens.of(r) });
            let api = server.as_token(secret);
            let (want_status, want_code) = expected(access, role, method);
            let (status, body) = if path == "/v1/stream" {
                let mut headers = vec![];
                let bearer = secret.map(|s| format!("Bearer {s}"));
                if let Some(b) = &bearer {
                    headers.push(("Authorization", b.as_str()));
                }
                let mut client = SseClient::connect(server.port, path, &headers);
                if client.status == 200 {
                    // A subscriber gets the events.
                    let first = client.expect_event();
                    (200, first.json())
                } else {
                    (client.status, serde_json::from_str(&client.text).unwrap_or(Value::Null))
                }
            } else {
                n += 1;
                let body = match path {
                    "/v1/events" => Some(invoice("c", &format!("INV-{n}"), "1.00")),
                    "/v1/events/batch" => Some(json!({"events": [invoice("c", &format!("INV-{n}"), "1.00")]})),
                    _ => None,
                };
                let reply = api.call(method, path, &[], body.map(|b| b.to_string().into_bytes()));
                // /metrics is text, a granted export NDJSON.
                let text = path == "/metrics" || (path == "/v1/export" && reply.status == 200);
                let v = if text { Value::String(reply.text.clone()) } else { serde_json::from_str(&reply.text).unwrap_or(Value::Null) };
                (reply.status, v)
            };
            let code = body["error"]["code"].as_str();
            if (status, code) != (want_status, want_code) {
                failures.push(format!("{method} {path} as {role:?}: expected {want_status} {want_code:?}, got {status} {body}"));
                continue;
            }
            // Allowed requests did their job.
            match (status, path) {
                (201, "/v1/events") => appended.push((body["seq"].as_u64().unwrap(), role.unwrap())),
                (201, "/v1/events/batch") => appended.push((body["receipts"][0]["seq"].as_u64().unwrap(), role.unwrap())),
                (200, "/v1/events/1") => assert_eq!(body["type"], "lease_granted"),
                (200, "/v1/contracts/c") => assert_eq!(body["contract_id"], "c"),
                (200, "/v1/contracts/c/revenue?as_of=2026-12-31") => assert_eq!(body["recognized"], "3000.00"),
                (200, "/v1/stream") => assert_eq!(body["seq"], 1),
                (200, "/metrics") => assert!(body.as_str().unwrap().contains("ledger_chain_length")),
                (200, "/openapi.json") => assert!(body["paths"].is_object()),
                (200, "/healthz") => assert_eq!(body["status"], "ok"),
                (200, "/v1/checkpoints/latest") | (201, "/v1/checkpoints") => {
                    let key = events::checkpoint::VerifierKey::parse(body["verifier_key"].as_str().unwrap()).unwrap();
                    let checkpoint = key.verify(body["checkpoint"].as_str().unwrap()).expect("a signed checkpoint");
                    assert_eq!(body["tree_size"], checkpoint.size, "{body}");
                    if status == 201 {
                        assert!(checkpoint.size >= 1, "a checkpoint of the head, after the grant: {body}");
                    }
                }
                (200, "/v1/proofs/inclusion?seq=1") => assert_eq!((&body["seq"], &body["leaf_index"]), (&json!(1), &json!(0)), "{body}"),
                (200, "/v1/proofs/consistency?from=1") => assert_eq!(body["from"], 1, "{body}"),
                (200, "/v1/export") => {
                    let text = body.as_str().unwrap();
                    assert!(text.starts_with("{\"format\":\"compute-ledger-export\""), "{text}");
                    assert!(text.lines().last().unwrap().starts_with("{\"checkpoint\":"), "{text}");
                }
                _ => {}
            }
            if status == 401 {
                assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Only the writer's and the admin's appends were written (2 routes × 2 roles), after the grant.
    let head = server.head_seq();
    assert_eq!(head, 5, "refused writes wrote nothing");
    assert_eq!(appended.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3, 4, 5]);
    // The token's name is the actor of events that do not name one.
    for (seq, role) in appended {
        let e = server.get_json(&format!("/v1/events/{seq}"));
        assert_eq!(e["event"]["actor"], format!("test-{role}"), "{e}");
    }
}

#[test]
fn malformed_or_unknown_credentials_are_401_and_authorization_comes_before_lookups() {
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), ..Options::default() });
    let admin = server.as_token(Some(&tokens.admin));
    admin.append_ok(&small_grant("c"));
    let call = |headers: &[(&str, &str)], path: &str| {
        let api = Api::new(server.port, None);
        api.call("GET", path, headers, None)
    };
    for header in [format!("Basic {}", tokens.admin), tokens.admin.clone(), "Bearer ".to_string(), format!("Bearer {}x", tokens.admin)] {
        let reply = call(&[("Authorization", &header)], "/v1/chain/head");
        reply.expect_error(401, "unauthorized", None);
    }
    // A valid token still works with the same client.
    assert_eq!(call(&[("Authorization", &format!("Bearer {}", tokens.auditor))], "/v1/chain/head").expect(200)["seq"], 1);
    // No token: 401 before anything else is looked at (no 404, no 400 that would leak).
    call(&[], "/v1/contracts/nobody").expect_error(401, "unauthorized", None);
    call(&[], "/v1/events?bogus=1").expect_error(401, "unauthorized", None);
    // A wrong role: 403, not 404.
    server.as_token(Some(&tokens.writer)).get("/v1/contracts/nobody").expect_error(403, "forbidden", None);
    let reply = server.as_token(Some(&tokens.finance)).append(&invoice("nobody", "I", "1.00"));
    reply.expect_error(403, "forbidden", None);
    let reply = Api::new(server.port, None).append(&invoice("c", "I", "1.00"));
    reply.expect_error(401, "unauthorized", None);
    assert_eq!(admin.head_seq(), 1, "refused writes wrote nothing");
    // Unknown routes are 404 for anyone.
    call(&[], "/v1/nothing").expect_error(404, "not_found", None);
    // A tokens file with no tokens, or a bad one, stops the server from starting.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "tokens = []\n").unwrap();
    let data = dir.path().join("data");
    let (code, _, stderr) = e2e::run(&["serve", "--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0", "--tokens", empty.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no tokens"), "{stderr}");
}

#[test]
fn expired_tokens_get_401_token_expired_and_cledger_token_writes_the_expiry() {
    // `cledger token --expires 90d` writes an RFC 3339 instant about 90 days ahead.
    let out = e2e::cledger().args(["token", "--name", "ci", "--role", "writer", "--expires", "90d"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entry = String::from_utf8(out.stdout).unwrap();
    let expires = entry.lines().find_map(|l| l.strip_prefix("expires = \"")).and_then(|l| l.strip_suffix('"')).unwrap_or_else(|| panic!("{entry}"));
    let year: i32 = expires[..4].parse().unwrap();
    assert!(expires.ends_with('Z') && year >= 2026, "{expires}");
    let (code, _, stderr) = e2e::run(&["token", "--name", "x", "--role", "writer", "--expires", "2001-01-01T00:00:00Z"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("past"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let (live, live_secret) = make_token("live", "admin");
    let (stale, stale_secret) = make_token("stale", "admin");
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, format!("{live}{entry}{stale}expires = \"2025-01-01T00:00:00Z\"\n")).unwrap();
    let server = Server::with(Options { tokens: Some(file), ..Options::default() });
    assert_eq!(server.as_token(Some(&live_secret)).get("/v1/chain/head").status, 200);
    let v = server.as_token(Some(&stale_secret)).get("/v1/chain/head").expect_error(401, "token_expired", None);
    assert!(v["error"]["message"].as_str().unwrap().contains("stale"), "{v}");
    let metrics = server.metrics();
    assert_eq!(e2e::server::metric(&metrics, "http_auth_refused_total{reason=\"expired\"}"), Some(1.0), "{metrics}");
    let log = server.stderr();
    assert!(log.contains("refused authentication") && log.contains("stale"), "{log}");
    assert!(!log.contains(&stale_secret) && !log.contains(&live_secret), "no secret in the log");
}

#[test]
fn removing_a_line_and_sighup_revokes_a_token_and_every_refusal_is_counted_without_the_secret() {
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), token: Some(tokens.admin.clone()), ..Options::default() });
    let writer = server.as_token(Some(&tokens.writer));
    assert_eq!(writer.append_ok(&small_grant("c"))["seq"], 1);
    // Revoke the writer: remove its entry, then SIGHUP.
    let text = std::fs::read_to_string(&tokens.file).unwrap();
    let kept: Vec<&str> = text.split("[[tokens]]\n").filter(|e| !e.is_empty() && !e.contains("test-writer")).collect();
    std::fs::write(&tokens.file, kept.iter().map(|e| format!("[[tokens]]\n{e}")).collect::<String>()).unwrap();
    server.sighup();
    // The probe writes nothing either way: an unknown contract is 404 while the token works.
    eventually("the writer's token refused", std::time::Duration::from_secs(20), || (writer.append(&invoice("nobody", "I", "1.00")).status == 401).then_some(()));
    assert_eq!(server.get("/v1/chain/head").expect(200)["seq"], 1, "the others still work; nothing was written by the revoked token");
    // A tokens file that does not load on SIGHUP changes nothing.
    std::fs::write(&tokens.file, "this is not toml [").unwrap();
    server.sighup();
    eventually("the failed reload counted", std::time::Duration::from_secs(20), || (e2e::server::metric(&server.metrics(), "tokens_reload_failures_total") == Some(1.0)).then_some(()));
    assert_eq!(server.get("/v1/chain/head").status, 200, "the tokens in force stay");
    // Refusals of every kind are counted.
    let anonymous = server.as_token(None);
    anonymous.get("/v1/chain/head");
    anonymous.call("GET", "/v1/chain/head", &[("Authorization", "Basic abc")], None);
    server.as_token(Some(&"f".repeat(64))).get("/v1/chain/head");
    server.as_token(Some(&tokens.finance)).get("/v1/chain/head");
    let metrics = server.metrics();
    for (reason, n) in [("missing", 1.0), ("malformed", 1.0), ("unknown", 2.0), ("forbidden", 1.0)] {
        let got = e2e::server::metric(&metrics, &format!("http_auth_refused_total{{reason=\"{reason}\"}}"));
        assert!(got.is_some_and(|g| g >= n), "{reason}: {got:?}\n{metrics}");
    }
    let log = server.stderr();
    for secret in [&tokens.writer, &tokens.finance, &tokens.admin] {
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
    assert!(log.contains("reason=\"unknown\"") || log.contains("reason=unknown"), "{log}");
}
