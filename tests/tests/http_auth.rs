//! Bearer tokens and roles: every endpoint × every role (and no token, and an unknown one).

use e2e::server::{invoice, small_grant, Api, Options, Server, SseClient, Tokens};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    Write,
    Finance,
    Audit,
    Open,
}

const ROUTES: [(&str, &str, Access); 20] = [
    ("POST", "/v1/events", Access::Write),
    ("POST", "/v1/events/batch", Access::Write),
    ("GET", "/v1/events", Access::Audit),
    ("GET", "/v1/events/1", Access::Audit),
    ("GET", "/v1/contracts", Access::Finance),
    ("GET", "/v1/contracts/c", Access::Finance),
    ("GET", "/v1/contracts/c/events", Access::Audit),
    ("GET", "/v1/contracts/c/revenue?as_of=2026-12-31", Access::Finance),
    ("GET", "/v1/portfolio?as_of=2026-12-31", Access::Finance),
    ("GET", "/v1/chain/head", Access::Audit),
    ("GET", "/v1/stream", Access::Audit),
    ("GET", "/v1/checkpoints/latest", Access::Audit),
    ("POST", "/v1/checkpoints", Access::Audit),
    ("GET", "/v1/proofs/inclusion?seq=1", Access::Audit),
    ("GET", "/v1/proofs/consistency?from=1", Access::Audit),
    ("GET", "/v1/export", Access::Audit),
    ("GET", "/healthz", Access::Open),
    ("GET", "/readyz", Access::Open),
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
