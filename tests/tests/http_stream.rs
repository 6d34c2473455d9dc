//! `GET /v1/stream` (Server-Sent Events) on a raw socket: resuming with `Last-Event-ID`
//! across the catch-up/live seam, disconnecting a client that stopped reading, ending
//! streams on shutdown.

use e2e::server::{event, eventually, invoice, log_json, metric, small_grant, Options, Server, SseClient, SseEvent};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn a_client_resumes_with_last_event_id_and_gets_every_event_once_in_order() {
    let server = Server::start();
    server.append_ok(&small_grant("s"));
    server.batch_ok(&(1..50).map(|i| invoice("s", &format!("A{i}"), "1.00")).collect::<Vec<_>>());
    let mut received: Vec<SseEvent> = vec![];
    {
        // Reads 30 of the 50 stored events, then disconnects mid-stream.
        let mut first = SseClient::connect(server.port, "/v1/stream", &[]);
        assert_eq!(first.status, 200);
        assert!(first.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")));
        for _ in 0..30 {
            received.push(first.expect_event());
        }
    }
    // Writers go on while the client is away and while it catches up.
    let writer = {
        let api = (*server).clone();
        std::thread::spawn(move || (0..100).map(|i| api.append_ok(&invoice("s", &format!("B{i}"), "1.00"))).collect::<Vec<Value>>())
    };
    let last = received.last().unwrap().seq().to_string();
    // Last-Event-ID wins over `after`.
    let mut resumed = SseClient::connect(server.port, "/v1/stream?after=3", &[("Last-Event-ID", &last)]);
    assert_eq!(resumed.status, 200);
    while received.last().unwrap().seq() < 150 {
        received.push(resumed.expect_event());
    }
    let written = writer.join().unwrap();
    assert_eq!(written.last().unwrap()["seq"], 150);
    // Caught up: now each event arrives as it is appended.
    for i in 0..10 {
        let receipt = server.append_ok(&invoice("s", &format!("C{i}"), "1.00"));
        let e = resumed.expect_event();
        assert_eq!(e.seq(), receipt["seq"].as_u64().unwrap());
        assert_eq!(e.json()["hash"], receipt["hash"]);
        received.push(e);
    }
    // Every event exactly once, in order, as stored.
    assert_eq!(received.iter().map(SseEvent::seq).collect::<Vec<_>>(), (1..=160).collect::<Vec<_>>());
    let stored = server.all_events();
    assert_eq!(stored.len(), 160);
    for (e, s) in received.iter().zip(&stored) {
        assert_eq!(e.event.as_deref(), Some("ledger_event"));
        assert_eq!(&e.json(), s, "the stream's data is the stored event");
    }
    // `after` alone also resumes.
    let mut from_query = SseClient::connect(server.port, "/v1/stream?after=158", &[]);
    assert_eq!((from_query.expect_event().seq(), from_query.expect_event().seq()), (159, 160));
    // A Last-Event-ID that is not a seq is a 400.
    let bad = SseClient::connect(server.port, "/v1/stream", &[("Last-Event-ID", "abc")]);
    assert_eq!(bad.status, 400, "{}", bad.text);
    let v: Value = serde_json::from_str(&bad.text).unwrap();
    assert_eq!((v["error"]["code"].as_str(), v["error"]["field"].as_str()), (Some("invalid_parameter"), Some("Last-Event-ID")), "{v}");
}

/// Polls `check` for up to `limit`; whether it came true.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_client_that_stops_reading_is_disconnected_and_writers_go_on() {
    let server = Server::with(Options { sse_stall_ms: Some(300), ..Options::default() });
    server.append_ok(&small_grant("s"));
    // Sends its request, then reads nothing (with a small receive window).
    let slow = SseClient::connect_unread(server.port, "/v1/stream", &[], 4096);
    eventually("the slow client to be subscribed", Duration::from_secs(20), || (metric(&server.metrics(), "sse_clients") == Some(1.0)).then_some(()));
    // ~3 KB events, appended 500 at a time, until its socket and its 1,024-event buffer fill.
    let reason = "r".repeat(1000);
    let mut batches = 0;
    let stalled = |server: &Server| metric(&server.metrics(), "http_connections_write_stalled_total").unwrap_or(0.0);
    loop {
        let events: Vec<Value> = (0..500).map(|i| event("s", "sla_credit_issued", "2026-06-01", json!({"amount": "0.01", "reason": format!("{batches}-{i} {reason}")}))).collect();
        let receipts = server.batch_ok(&events);
        assert_eq!(receipts.len(), 500, "writers are not held up by the stalled client");
        batches += 1;
        if within(Duration::from_secs(2), || stalled(&server) >= 1.0) {
            break;
        }
        assert!(batches < 30, "the stalled client was not dropped after {} events", batches * 500);
    }
    assert_eq!(stalled(&server), 1.0);
    eprintln!("dropped after {batches} batches of 500");
    eventually("sse_clients back to 0", Duration::from_secs(20), || (metric(&server.metrics(), "sse_clients") == Some(0.0)).then_some(()));
    // Writers go on.
    let after = server.append_ok(&invoice("s", "AFTER", "1.00"));
    let head = after["seq"].as_u64().unwrap();
    assert_eq!(head, 1 + batches * 500 + 1);

    // The server closed the connection (its buffer freed at once). What the dropped client
    // reads now: the events its socket still held, in order from the start, then the end of
    // the connection, perhaps in the middle of an event.
    let mut client = SseClient::resume_reading(slow);
    assert_eq!(client.status, 200);
    let mut seqs = vec![];
    while let Ok(Some(e)) = client.try_next_event() {
        assert_eq!(e.event.as_deref(), Some("ledger_event"), "{e:?}");
        assert_eq!(e.json()["seq"].as_u64(), Some(e.seq()));
        seqs.push(e.seq());
    }
    let last = *seqs.last().expect("the socket held some events");
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "every event up to the last whole one, once, in order");
    assert!(last < head, "it was dropped before the head: {last} of {head}");
    // It resumes after the last whole event it got.
    let mut again = SseClient::connect(server.port, "/v1/stream", &[("Last-Event-ID", &last.to_string())]);
    assert_eq!(again.expect_event().seq(), last + 1);
}

#[test]
fn shutdown_ends_streams_with_an_end_event_and_exits_zero() {
    let mut server = Server::start();
    server.append_ok(&small_grant("s"));
    server.append_ok(&invoice("s", "I-1", "1.00"));
    let mut client = SseClient::connect(server.port, "/v1/stream", &[]);
    assert_eq!((client.expect_event().seq(), client.expect_event().seq()), (1, 2));
    // Caught up and waiting for more; now the server is asked to stop.
    server.sigterm();
    let end = client.expect_event();
    assert_eq!(end.event.as_deref(), Some("end"), "{end:?}");
    assert_eq!(end.json(), json!({"reason": "shutdown", "resume_after": 2}));
    assert_eq!(client.next_event(), None);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}

#[test]
fn sigterm_is_not_held_up_by_a_client_that_stopped_reading() {
    let mut server = Server::start();
    server.append_ok(&small_grant("s"));
    let slow = SseClient::connect_unread(server.port, "/v1/stream", &[], 4096);
    eventually("the slow client to be subscribed", Duration::from_secs(20), || (metric(&server.metrics(), "sse_clients") == Some(1.0)).then_some(()));
    // More than its socket holds (about 2,000 of these events in practice, see above).
    let reason = "r".repeat(1000);
    for b in 0..6 {
        let events: Vec<Value> = (0..500).map(|i| event("s", "sla_credit_issued", "2026-06-01", json!({"amount": "0.01", "reason": format!("{b}-{i} {reason}")}))).collect();
        server.batch_ok(&events);
    }
    let head = server.head_seq();
    // The operator stops the server; the stalled client is still connected and not reading.
    server.sigterm();
    let status = server.wait_exit();
    drop(slow);
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    // Nothing acknowledged was lost.
    assert_eq!(log_json(&server.data).len() as u64, head);
}
