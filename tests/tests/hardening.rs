//! Issue 9 against the real server: a writer that fails says so (503 with its own code,
//! `/readyz`, `/metrics`) while reads go on; values already in a chain never break a read;
//! a period is closed only once it ended.

use e2e::server::{event, metric, Options, Server};
use events::{EventBody, Proposal, RecordedEvent, Stream, Timestamp};
use serde_json::{json, Value};

fn grant(contract: &str) -> Value {
    event(contract, "lease_granted", "2026-01-01", json!({
        "provider": "P", "customer": "C", "currency": "USD",
        "term": {"start": "2026-01-01", "end": "2027-01-01"},
        "cluster": {"site": "s", "gpu_model": "H100", "gpus": 8},
        "headline": "1000.00",
        "tranches": [{"id": "t", "amount": "1000.00", "window": {"start": "2026-01-01", "end": "2027-01-01"}, "firm": true}]
    }))
}

/// A server whose `N`th durable-path operation fails as planned. Checkpoints only on
/// demand, so the operations are: 1 saving a new store's views, 2-4 the first commit's
/// batch, flush and fsync, 5-7 the second's.
fn with_fault(plan: &str) -> Server {
    Server::with(Options {
        env: vec![("CLEDGER_FAULT".into(), plan.into())],
        args: vec!["--checkpoint-interval-s".into(), "0".into()],
        ..Options::default()
    })
}

/// After the writer stops, writes get 503 with `code`, `/readyz` is 503 naming the reason,
/// `ledger_writer_failed` is 1, and every read still answers.
fn assert_stopped_loudly(server: &Server, code: &str, kind: &str) {
    let refused = server.append(&grant("after"));
    let body = refused.expect_error(503, code, None);
    assert!(body["error"]["message"].as_str().unwrap().contains("injected fault"), "{body}");

    let ready = server.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text);
    let ready = ready.json();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["writer_failure"]["kind"], kind, "{ready}");
    assert!(ready["reason"].as_str().unwrap().contains("the ledger writer stopped"), "{ready}");
    assert_eq!(metric(&server.metrics(), "ledger_writer_failed"), Some(1.0));
    assert!(server.stderr().contains("the ledger writer stopped"), "the failure is logged");

    // Reads go on at the durable head.
    assert_eq!(server.head_seq(), 1);
    server.get("/v1/contracts/before").expect(200);
    server.get("/healthz").expect(200);
}

#[test]
fn a_failed_commit_stops_the_writer_loudly_and_reads_go_on() {
    // The second commit's fsync fails.
    let server = with_fault("7:error");
    server.append_ok(&grant("before"));
    let failed = server.append(&grant("lost"));
    // The fsync failed: 503 `writer_stopped` (before: "stored data is damaged"), never 201.
    failed.expect_error(503, "writer_stopped", None);
    assert_stopped_loudly(&server, "writer_stopped", "commit");
}

#[test]
fn a_panicking_writer_stops_loudly_and_reads_go_on() {
    // Before the fix the thread died silently: 503 "closed", /readyz 200, failure() empty.
    let server = with_fault("5:panic");
    server.append_ok(&grant("before"));
    server.append(&grant("lost")).expect_error(503, "writer_stopped", None);
    assert_stopped_loudly(&server, "writer_stopped", "panic");
    assert!(metric(&server.metrics(), "panics_total").unwrap_or(0.0) >= 1.0);
}

/// A chain written before GPU counts were bounded: a grant of 2^64 - 1 GPUs, then changes
/// of +1 and of i64::MIN. Stored through the follower path (which checks hashes and links,
/// not today's admission rules), as an old leader's stream would be.
fn old_chain_with_huge_gpu_counts(dir: &std::path::Path) {
    let ledger = ledger::Ledger::open(dir, ledger::Options::default()).unwrap();
    let resolve = |json: Value, currency| {
        let proposal = Proposal::parse_json(json.to_string().as_bytes()).unwrap();
        (proposal.stream.clone(), proposal.effective_date, proposal.resolve(currency).unwrap())
    };
    let mut bodies = vec![resolve(grant("huge"), None)];
    if let EventBody::LeaseGranted(g) = &mut bodies[0].2 {
        g.cluster.gpus = u64::MAX;
    }
    for (delta, date) in [(1, "2026-03-01"), (i64::MIN, "2026-04-01")] {
        let mut change = resolve(event("huge", "capacity_changed", date, json!({"gpus_delta": 5, "amount_delta": "1.00"})), Some(events::Currency::from_code("USD").unwrap()));
        if let EventBody::CapacityChanged(c) = &mut change.2 {
            c.gpus_delta = delta;
        }
        bodies.push(change);
    }
    let mut prev = events::Digest::ZERO;
    let mut chain = vec![];
    for (i, (stream, effective_date, body)) in bodies.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let recorded = RecordedEvent::seal(events::Event {
            prev_hash: prev,
            seq,
            stream: stream.clone(),
            version: seq,
            effective_date,
            recorded_at: Timestamp(1_780_000_000_000_000 + i as i64),
            actor: "old-build".into(),
            idempotency_key: None,
            body,
        });
        assert!(matches!(stream, Stream::Contract(_)));
        prev = recorded.hash;
        chain.push(recorded);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stored = runtime.block_on(ledger.replicate(chain)).unwrap();
    assert_eq!((stored.stored, stored.refused), (3, None));
}

#[test]
fn reads_are_total_over_gpu_counts_already_in_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    old_chain_with_huge_gpu_counts(dir.path());
    let server = Server::on(dir.path(), Options::default());
    // Before the fix: an empty reply, forever (`json!` panicked on an i128 past 64 bits).
    let contract = server.get("/v1/contracts/huge?as_of=2026-12-31").expect(200);
    // 2^64 - 1, then 2^64 (past 64 bits: a decimal string), then 2^63 (a number again).
    let over = i128::from(u64::MAX) + 1;
    assert_eq!(contract["gpus_over_time"][0]["gpus"], json!(over.to_string()), "{contract}");
    assert_eq!(contract["gpus_over_time"][1]["gpus"], json!(1u64 << 63), "{contract}");
    assert_eq!(contract["cluster"]["gpus"], json!(1u64 << 63), "{contract}");
    let in_march = server.get("/v1/contracts/huge?as_of=2026-03-15").expect(200);
    assert_eq!(in_march["cluster"]["gpus"], json!(over.to_string()), "{in_march}");
    server.get("/v1/contracts/huge/revenue?as_of=2026-12-31").expect(200);
    server.get("/v1/portfolio?as_of=2026-12-31").expect(200);
    server.get("/v1/contracts/huge/events").expect(200);
    // New events with such counts are refused at admission.
    server.append(&event("huge", "capacity_changed", "2026-04-01", json!({"gpus_delta": 1, "amount_delta": "1.00"})))
        .expect_error(422, "gpu_count_too_large", Some("data.gpus_delta"));
}

#[test]
fn a_period_is_closed_only_after_it_ended() {
    let server = Server::start();
    let today = ledger::system_clock().date().unwrap();
    let close = |end: events::Date| json!({"type": "period_closed", "effective_date": end.to_string(), "data": {"period_end": end.to_string()}});
    // Before the fix, a close of a period ending today or later was accepted, for good.
    for end in [today, today.add_days(31).unwrap()] {
        server.append(&close(end)).expect_error(422, "period_not_ended", Some("data.period_end"));
    }
    server.append_ok(&close(today.add_days(-1).unwrap()));
}
