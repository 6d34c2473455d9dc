//! The edge of the HTTP API, against the real server: request forms (objects only, JSON
//! content type, Host), headers on every response, the actor and who may close a period
//! (SPEC section 7), and the bounds on connections, streams and batch memory (issue 9,
//! items 7 to 10).

use e2e::server::{event, eventually, invoice, metric, proc_kb, reset_peak_rss, small_grant, Options, Server, SseClient, Tokens};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn post_raw(port: u16, path: &str, content_type: Option<&str>, host: &str, body: &str) -> SseClient {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = content_type {
        request.push_str(&format!("Content-Type: {t}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    SseClient::exchange(port, &request)
}

fn get_raw(port: u16, path: &str, host: Option<&str>) -> SseClient {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    SseClient::exchange(port, &format!("GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n"))
}

fn error_code(reply: &SseClient) -> (u16, String, Option<String>) {
    let v: Value = serde_json::from_str(&reply.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text));
    (reply.status, v["error"]["code"].as_str().unwrap_or("").to_string(), v["error"]["field"].as_str().map(str::to_string))
}

#[test]
fn an_event_is_a_json_object_at_every_level() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    // The same invoice, spelled as serde's derive would also read it: fields in order.
    let positional_event = json!(["c", "invoice_issued", "2026-02-01", null, null, null, {"invoice_id": "I", "amount": "1.00", "due_date": "2026-03-01"}]);
    server.append(&positional_event).expect_error(400, "invalid_json", None);
    let positional_data = event("c", "invoice_issued", "2026-02-01", json!(["I", "1.00", "2026-03-01"]));
    server.append(&positional_data).expect_error(400, "invalid_value", Some("data"));
    let mut grant = small_grant("d");
    grant["data"]["term"] = json!(["2026-01-01", "2027-01-01"]);
    server.append(&grant).expect_error(400, "invalid_value", Some("data.term"));
    let mut grant = small_grant("d");
    grant["data"]["tranches"][1] = json!(["cond", "650.00", {"start": "2026-07-01", "end": "2027-01-01"}, null, "m1"]);
    server.append(&grant).expect_error(400, "invalid_value", Some("data.tranches[1]"));
    // In a batch: the element, and the batch itself.
    let reply = server.batch(&[invoice("c", "A", "1.00"), positional_event.clone()]);
    let v = reply.expect_error(400, "invalid_json", Some("events[1]"));
    assert_eq!(v["error"]["index"], 1);
    let reply = server.call("POST", "/v1/events/batch", &[], Some(json!([[invoice("c", "B", "1.00")]]).to_string().into_bytes()));
    reply.expect_error(400, "invalid_json", None);
    assert_eq!(server.head_seq(), 1, "nothing of any refused request was written");
    // The object spelling still works.
    assert_eq!(server.append_ok(&invoice("c", "I", "1.00"))["seq"], 2);
}

#[test]
fn writes_need_a_json_content_type_and_an_open_server_its_own_host_name() {
    let server = Server::with(Options { args: vec!["--allowed-host".into(), "Ledger.Internal".into()], ..Options::default() });
    let port = server.port;
    let host = format!("127.0.0.1:{port}");
    let body = invoice("c", "I", "1.00").to_string();
    let grant = small_grant("c").to_string();
    // A cross-site form or `fetch` without preflight can send only these types.
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x"), None] {
        let reply = post_raw(port, "/v1/events", content_type, &host, &grant);
        assert_eq!(error_code(&reply), (415, "unsupported_media_type".into(), Some("Content-Type".into())), "{content_type:?}: {}", reply.text);
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    let reply = post_raw(port, "/v1/checkpoints", None, &host, "");
    assert_eq!(error_code(&reply).0, 415, "{}", reply.text);
    assert_eq!(server.head_seq(), 0, "nothing written");
    assert_eq!(post_raw(port, "/v1/events", Some("application/json; charset=utf-8"), &host, &grant).status, 201);
    // DNS rebinding: a page on evil.example resolves its name to 127.0.0.1 and posts here.
    for bad in ["evil.example", &format!("evil.example:{port}"), "127.0.0.2", "localhost.evil.example"] {
        let reply = post_raw(port, "/v1/events", Some("application/json"), bad, &body);
        assert_eq!(error_code(&reply), (400, "host_not_allowed".into(), Some("Host".into())), "Host {bad}: {}", reply.text);
        let reply = get_raw(port, "/v1/contracts", Some(bad));
        assert_eq!(reply.status, 400, "GET with Host {bad}");
    }
    let reply = get_raw(port, "/v1/chain/head", None);
    assert_eq!(error_code(&reply).1, "host_not_allowed", "a request without Host: {}", reply.text);
    assert_eq!(server.head_seq(), 1);
    for good in [host.clone(), format!("localhost:{port}"), "LOCALHOST".into(), "ledger.internal:443".into(), "ledger.internal".into()] {
        assert_eq!(get_raw(port, "/v1/chain/head", Some(&good)).status, 200, "Host {good}");
    }
    assert_eq!(post_raw(port, "/v1/events", Some("application/json"), "ledger.internal", &body).status, 201);
    assert!(metric(&server.metrics(), "http_host_refused_total").unwrap() >= 9.0);

    // With tokens the token is the defence: any Host is served.
    let tokens = Tokens::create();
    let guarded = Server::with(Options { tokens: Some(tokens.file.clone()), ..Options::default() });
    let reply = SseClient::exchange(
        guarded.port,
        &format!("GET /v1/chain/head HTTP/1.1\r\nHost: anything.example\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", tokens.auditor),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[test]
fn every_response_says_nosniff() {
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), token: Some(tokens.admin.clone()), ..Options::default() });
    server.append_ok(&small_grant("c"));
    let anonymous = server.as_token(None);
    let replies = [
        server.get("/v1/chain/head"),
        server.get("/v1/contracts/c/revenue?as_of=2026-12-31"),
        server.get("/v1/export"),
        server.get("/metrics"),
        server.get("/openapi.json"),
        server.get("/v1/nothing"),
        server.get("/v1/contracts/c?bogus=1"),
        server.call("DELETE", "/v1/events", &[], Some(b"{}".to_vec())),
        anonymous.get("/v1/chain/head"),
        server.append(&invoice("nobody", "I", "1.00")),
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 404, 400, 405, 401, 404]);
    for r in &replies {
        assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"), "{} {}", r.status, r.text);
    }
    let stream = SseClient::connect(server.port, "/v1/stream", &[("Authorization", &format!("Bearer {}", tokens.auditor))]);
    assert_eq!(stream.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn the_actor_is_the_token_and_only_an_admin_writes_for_someone_else_or_closes_a_period() {
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), token: Some(tokens.writer.clone()), ..Options::default() });
    let admin = server.as_token(Some(&tokens.admin));
    // Issue 9 item 7: a writer claiming to be the CFO.
    let mut grant = small_grant("c");
    grant["actor"] = json!("cfo@provider.example");
    let v = server.append(&grant).expect_error(403, "actor_mismatch", Some("actor"));
    assert!(v["error"]["message"].as_str().unwrap().contains("test-writer"), "{v}");
    let mut batch = vec![invoice("c", "A", "1.00"), invoice("c", "B", "1.00")];
    batch[1]["actor"] = json!("cfo@provider.example");
    let v = admin.batch(&[small_grant("c")]).expect(201);
    assert_eq!(v["receipts"][0]["seq"], 1);
    let v = server.batch(&batch).expect_error(403, "actor_mismatch", Some("events[1].actor"));
    assert_eq!(v["error"]["index"], 1);
    assert_eq!(admin.head_seq(), 1, "refused requests wrote nothing");
    // The writer's own name (or none) is stored as the writer; an admin may name anyone.
    let mut own = invoice("c", "OWN", "1.00");
    own["actor"] = json!("test-writer");
    let own = server.append_ok(&own)["seq"].as_u64().unwrap();
    let unnamed = server.append_ok(&invoice("c", "UNNAMED", "1.00"))["seq"].as_u64().unwrap();
    let mut on_behalf = invoice("c", "BEHALF", "1.00");
    on_behalf["actor"] = json!("cfo@provider.example");
    let on_behalf = admin.append_ok(&on_behalf)["seq"].as_u64().unwrap();
    let actor = |seq: u64| admin.get_json(&format!("/v1/events/{seq}"))["event"]["actor"].clone();
    assert_eq!([actor(1), actor(own), actor(unnamed), actor(on_behalf)], [json!("test-admin"), json!("test-writer"), json!("test-writer"), json!("cfo@provider.example")]);

    // Issue 9 item 10: only an admin closes a period.
    let close = json!({"type": "period_closed", "effective_date": "2026-01-31", "data": {"period_end": "2026-01-31"}});
    server.append(&close).expect_error(403, "period_close_requires_admin", Some("type"));
    let v = server.batch(&[invoice("c", "C", "1.00"), close.clone()]).expect_error(403, "period_close_requires_admin", Some("events[1].type"));
    assert_eq!(v["error"]["index"], 1);
    let head = admin.head_seq();
    let closed = admin.append_ok(&close);
    assert_eq!(closed["seq"], head + 1);
    assert_eq!(actor(head + 1), "test-admin");
}

#[test]
fn import_keeps_the_actors_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let mut grant = small_grant("c");
    grant["actor"] = json!("deals@provider.example");
    let mut inv = invoice("c", "I", "1.00");
    inv["actor"] = json!("billing@provider.example");
    std::fs::write(&file, format!("{grant}\n{inv}\n{}\n", invoice("c", "J", "1.00"))).unwrap();
    let data = dir.path().join("data");
    let (code, stdout, stderr) = e2e::run(&["import", "--data", data.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let actors: Vec<Value> = e2e::server::log_json(&data).iter().map(|e| e["event"]["actor"].clone()).collect();
    assert_eq!(actors, [json!("deals@provider.example"), json!("billing@provider.example"), json!("cledger-import")]);
}

#[test]
fn a_batch_of_millions_of_tiny_values_costs_a_small_multiple_of_its_body() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    // Issue 9 item 8: 16 MB of `0,` is 8M values.
    let mut body = String::with_capacity(16 * 1024 * 1024);
    body.push_str("{\"events\":[");
    while body.len() < 16 * 1024 * 1024 - 16 {
        body.push_str("0,");
    }
    body.push_str("0]}");
    let pid = server.pid();
    reset_peak_rss(pid);
    let before_kb = proc_kb(pid, "VmRSS");
    let (status, text) = e2e::server::raw_call(server.port, "POST", "/v1/events/batch", &[], body.into_bytes());
    let peak_kb = proc_kb(pid, "VmHWM");
    eprintln!("8M tiny values: RSS {before_kb} kB before, peak {peak_kb} kB (+{} MB) for a 16 MB body", (peak_kb - before_kb) / 1024);
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["error"]["code"].as_str(), v["error"]["field"].as_str()), (Some("invalid_json"), Some("events[0]")), "{v}");
    // The body itself (16 MB, collected) and its parse: a small multiple, not 50 times.
    assert!(peak_kb - before_kb < 64 * 1024, "the batch cost {} MB", (peak_kb - before_kb) / 1024);

    // The 1,001st event stops the parse.
    let many: Vec<Value> = (0..1_001).map(|i| invoice("c", &format!("I{i}"), "1.00")).collect();
    server.batch(&many).expect_error(413, "body_too_large", Some("events"));
    // One event larger than a single event may be.
    let mut huge = invoice("c", "H", "1.00");
    huge["data"]["invoice_id"] = json!("x".repeat(300 * 1024));
    let v = server.batch(&[invoice("c", "A", "1.00"), huge]).expect_error(413, "body_too_large", Some("events[1]"));
    assert_eq!(v["error"]["index"], 1);
    assert_eq!(server.head_seq(), 1);
    assert_eq!(server.batch_ok(&many[..1_000]).len(), 1_000);
}

/// Opens `n` connections that send nothing, or half a request head.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            if i % 2 == 1 {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0").expect("half a head");
            }
            s
        })
        .collect()
}

#[test]
fn more_idle_connections_than_the_cap_leave_healthz_answering() {
    // Issue 9 item 8: 20,000 half-open connections exhausted the file limit. Here the limit
    // is 256 files and the cap 100 connections; timeouts are long, so only the cap helps.
    let server = Server::with(Options {
        nofile: Some(256),
        args: ["--max-connections", "100", "--header-read-timeout-ms", "120000", "--idle-timeout-ms", "120000"].iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    });
    let idle = idle_connections(server.port, 400);
    let quick = e2e::server::Api::new(server.port, None);
    for _ in 0..5 {
        let started = Instant::now();
        let reply = quick.try_call("GET", "/healthz", &[], None).expect("healthz answers");
        let took = started.elapsed();
        assert_eq!(reply.status, 200);
        assert!(took < Duration::from_secs(1), "/healthz took {took:?} with 400 idle connections open");
    }
    let text = server.metrics();
    let open = metric(&text, "http_connections_open").unwrap();
    let evicted = metric(&text, "http_connections_evicted_total").unwrap_or(0.0);
    eprintln!("400 idle connections: {open} open, {evicted} evicted");
    assert!(open <= 101.0, "at most the cap (and this request) is open: {open}");
    assert!(evicted >= 290.0, "the idlest connections made room: {evicted}");
    // An evicted connection was closed by the server: reading it ends.
    let mut first = idle.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(first.read(&mut buf), Ok(0) | Err(_)), "the oldest idle connection was closed");
    // Writes still work.
    assert_eq!(server.append_ok(&small_grant("c"))["seq"], 1);
}

#[test]
fn a_connection_that_does_not_send_its_request_head_in_time_is_closed() {
    let server = Server::with(Options { args: vec!["--header-read-timeout-ms".into(), "300".into()], ..Options::default() });
    let mut conns = idle_connections(server.port, 4);
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let started = Instant::now();
        let mut rest = vec![];
        let _ = c.read_to_end(&mut rest);
        assert!(started.elapsed() < Duration::from_secs(15), "connection {i} was not closed");
    }
    // A keep-alive connection idle between requests is closed the same way.
    let mut c = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    c.write_all(format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", server.port).as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut all = vec![];
    let _ = c.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn stream_clients_past_the_cap_get_503() {
    let server = Server::with(Options { args: vec!["--max-streams".into(), "2".into()], ..Options::default() });
    server.append_ok(&small_grant("s"));
    let mut a = SseClient::connect(server.port, "/v1/stream", &[]);
    let b = SseClient::connect(server.port, "/v1/stream", &[]);
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.expect_event().seq(), 1);
    let c = SseClient::connect(server.port, "/v1/stream", &[]);
    assert_eq!(error_code(&c), (503, "too_many_streams".into(), None), "{}", c.text);
    assert_eq!(metric(&server.metrics(), "sse_clients_refused_total"), Some(1.0));
    drop(b);
    eventually("a slot to free up", Duration::from_secs(20), || (SseClient::connect(server.port, "/v1/stream", &[]).status == 200).then_some(()));
}

#[test]
fn clients_that_stop_reading_are_disconnected_and_their_buffers_freed_within_the_drop_timeout() {
    const CLIENTS: usize = 40;
    let server = Server::with(Options { sse_stall_ms: Some(500), ..Options::default() });
    server.append_ok(&small_grant("s"));
    // ~3 KB events: 9 MB of them, far more than a 4 KB window and a 1,024-event buffer hold.
    let reason = "r".repeat(1000);
    for b in 0..6 {
        let events: Vec<Value> = (0..500).map(|i| event("s", "sla_credit_issued", "2026-06-01", json!({"amount": "0.01", "reason": format!("{b}-{i} {reason}")}))).collect();
        server.batch_ok(&events);
    }
    // What the server holds without any client (the ledger, its caches) is the baseline.
    for _ in 0..2 {
        let mut reader = SseClient::connect(server.port, "/v1/stream?after=2990", &[]);
        assert_eq!(reader.expect_event().seq(), 2991);
    }
    let pid = server.pid();
    std::thread::sleep(Duration::from_millis(1500));
    let baseline_kb = proc_kb(pid, "VmRSS");
    // Two rounds of clients that subscribe from the start and read nothing: each fills its
    // buffer. What the first round held is freed when its connections close, so the second
    // round reuses it instead of growing the process (the allocator, mimalloc, keeps freed
    // pages for reuse rather than returning them, so the resident size is not the measure).
    let mut peaks = vec![];
    for round in 0..2 {
        let started = Instant::now();
        let stalled: Vec<TcpStream> = (0..CLIENTS).map(|_| SseClient::connect_unread(server.port, "/v1/stream", &[], 4096)).collect();
        eventually("every stalled client dropped", Duration::from_secs(60), || {
            let text = server.metrics();
            (metric(&text, "http_connections_write_stalled_total") == Some((CLIENTS * (round + 1)) as f64) && metric(&text, "sse_clients") == Some(0.0)).then_some(())
        });
        let dropped_after = started.elapsed();
        // Each connection was closed by the server: a client that reads again gets what its
        // socket held, then the end of the connection (not a wait for more).
        for (i, s) in stalled.into_iter().enumerate() {
            let mut s = s;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut all = vec![];
            let ended = match s.read_to_end(&mut all) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            assert!(ended, "round {round}, client {i}: the connection is still open after {} bytes", all.len());
        }
        let peak_kb = proc_kb(pid, "VmHWM");
        eprintln!("round {round}: {CLIENTS} non-reading clients all dropped {dropped_after:?} after connecting (drop timeout 0.5 s); RSS {baseline_kb} kB before, peak {peak_kb} kB (+{} kB)", peak_kb - baseline_kb);
        peaks.push(peak_kb - baseline_kb);
    }
    assert!(peaks[0] > 20 * 1024, "the clients' buffers were measured: +{} kB", peaks[0]);
    assert!(peaks[1] < peaks[0] + peaks[0] / 2, "the second round grew the process from +{} kB to +{} kB: the first round's buffers were not freed", peaks[0], peaks[1]);
    // The server goes on.
    let mut reader = SseClient::connect(server.port, "/v1/stream?after=3000", &[]);
    assert_eq!(reader.expect_event().seq(), 3001);
}
