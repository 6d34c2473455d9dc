//! Writes over HTTP: idempotency (across a restart), atomic batches, racing writers with
//! optimistic concurrency, reproducible reports (`known_at`), graceful shutdown.

use e2e::server::{colossus, event, eventually, invoice, log_json, small_grant, verify_ok, Api, Server};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

fn keyed(api: &Api, path: &str, body: &Value, key: &str) -> e2e::server::Reply {
    api.call("POST", path, &[("Idempotency-Key", key)], Some(body.to_string().into_bytes()))
}

#[test]
fn idempotent_replays_and_conflicting_reuse_survive_a_restart() {
    let mut server = Server::start();
    server.append_ok(&small_grant("c"));
    let inv1 = invoice("c", "INV-1", "100.00");
    let first = keyed(&server, "/v1/events", &inv1, "key-1");
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None, "a first request is not a replay");
    assert_eq!(first.json()["seq"], 2);
    let again = keyed(&server, "/v1/events", &inv1, "key-1");
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.text, first.text, "a replay returns the identical body");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(server.head_seq(), 2, "a replay writes nothing");

    // The same key for a different request: 409, nothing written.
    let other = keyed(&server, "/v1/events", &invoice("c", "INV-2", "100.00"), "key-1");
    other.expect_error(409, "idempotency_key_reused", Some("idempotency_key"));
    // ... also when only the amount differs.
    let other = keyed(&server, "/v1/events", &invoice("c", "INV-1", "100.01"), "key-1");
    other.expect_error(409, "idempotency_key_reused", Some("idempotency_key"));
    assert_eq!(server.head_seq(), 2);

    // A batch is replayed as a whole.
    let batch = json!({"events": [invoice("c", "INV-3", "1.00"), invoice("c", "INV-4", "2.00")]});
    let b1 = keyed(&server, "/v1/events/batch", &batch, "batch-1");
    assert_eq!(b1.status, 201, "{}", b1.text);
    assert_eq!(b1.json()["receipts"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 4]);
    let b2 = keyed(&server, "/v1/events/batch", &batch, "batch-1");
    assert_eq!((b2.status, b2.text.as_str(), b2.header("idempotent-replayed").as_deref()), (201, b1.text.as_str(), Some("true")));
    let b3 = keyed(&server, "/v1/events/batch", &json!({"events": [invoice("c", "INV-5", "1.00")]}), "batch-1");
    assert_eq!((b3.status, b3.code()), (409, "idempotency_key_reused".to_string()), "{}", b3.text);
    // A key used by a batch cannot be reused by a single event either.
    let b4 = keyed(&server, "/v1/events", &invoice("c", "INV-3", "1.00"), "batch-1");
    assert_eq!((b4.status, b4.code()), (409, "idempotency_key_reused".to_string()), "{}", b4.text);
    // Header and body keys must agree; an invalid key is a 400.
    let mut with_body_key = invoice("c", "INV-6", "1.00");
    with_body_key["idempotency_key"] = json!("body-key");
    keyed(&server, "/v1/events", &with_body_key, "other-key").expect_error(400, "invalid_value", Some("idempotency_key"));
    keyed(&server, "/v1/events", &inv1, &"k".repeat(256)).expect_error(400, "invalid_id", Some("Idempotency-Key"));
    keyed(&server, "/v1/events", &inv1, "with space").expect_error(400, "invalid_id", Some("Idempotency-Key"));
    assert_eq!(server.head_seq(), 4);
    let head = server.head();

    // After a restart, the same answers.
    server.restart();
    assert_eq!(server.head(), head);
    let replay = keyed(&server, "/v1/events", &inv1, "key-1");
    assert_eq!((replay.status, replay.text.as_str(), replay.header("idempotent-replayed").as_deref()), (201, first.text.as_str(), Some("true")));
    let replay = keyed(&server, "/v1/events/batch", &batch, "batch-1");
    assert_eq!((replay.status, replay.text.as_str(), replay.header("idempotent-replayed").as_deref()), (201, b1.text.as_str(), Some("true")));
    keyed(&server, "/v1/events", &invoice("c", "INV-2", "100.00"), "key-1").expect_error(409, "idempotency_key_reused", Some("idempotency_key"));
    assert_eq!(server.head(), head, "replays and conflicts after the restart wrote nothing");
    // A new key appends.
    let fresh = keyed(&server, "/v1/events", &invoice("c", "INV-2", "100.00"), "key-2");
    assert_eq!((fresh.status, fresh.json()["seq"].as_u64()), (201, Some(5)), "{}", fresh.text);
    // The body key works like the header.
    let body_keyed = server.append(&with_body_key);
    assert_eq!(body_keyed.status, 201, "{}", body_keyed.text);
    let replayed = server.append(&with_body_key);
    assert_eq!((replayed.text.as_str(), replayed.header("idempotent-replayed").as_deref()), (body_keyed.text.as_str(), Some("true")));
    assert_eq!(server.head_seq(), 6);
}

#[test]
fn a_reused_batch_key_is_not_blamed_on_the_first_event() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    let first = keyed(&server, "/v1/events/batch", &json!({"events": [invoice("c", "A", "1.00"), invoice("c", "B", "1.00")]}), "batch-key");
    assert_eq!(first.status, 201, "{}", first.text);
    let reused = keyed(&server, "/v1/events/batch", &json!({"events": [invoice("c", "C", "1.00")]}), "batch-key");
    let v = reused.expect(409);
    assert_eq!(v["error"]["code"], "idempotency_key_reused");
    // The key is the request's (its Idempotency-Key header), not a field of event 0, and no
    // event was refused: no `index`, no `events[0].` path.
    assert_eq!(v["error"].get("index"), None, "{v}");
    assert!(!v["error"]["field"].as_str().unwrap_or("").starts_with("events["), "{v}");
    assert_eq!(server.head_seq(), 3);
}

#[test]
fn a_refused_keyed_request_does_not_use_up_its_key() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    let refused = keyed(&server, "/v1/events", &invoice("c", "INV-1", "1.001"), "retry-key");
    refused.expect_error(422, "too_many_decimals", Some("data.amount"));
    assert_eq!(server.head_seq(), 1);
    // The corrected request with the same key is appended, then replayed.
    let fixed = keyed(&server, "/v1/events", &invoice("c", "INV-1", "1.00"), "retry-key");
    assert_eq!((fixed.status, fixed.json()["seq"].as_u64()), (201, Some(2)), "{}", fixed.text);
    assert_eq!(fixed.header("idempotent-replayed"), None);
    let replay = keyed(&server, "/v1/events", &invoice("c", "INV-1", "1.00"), "retry-key");
    assert_eq!((replay.text.as_str(), replay.header("idempotent-replayed").as_deref()), (fixed.text.as_str(), Some("true")));
    assert_eq!(server.head_seq(), 2);
}

#[test]
fn concurrent_identical_keyed_requests_write_once() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    let e = invoice("c", "INV-ONCE", "5.00");
    let barrier = Barrier::new(16);
    let replies: Vec<e2e::server::Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let api: Api = (*server).clone();
                let (e, barrier) = (&e, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    keyed(&api, "/v1/events", e, "same-key")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.text, replies[0].text, "every caller gets the same receipt");
    }
    let originals = replies.iter().filter(|r| r.header("idempotent-replayed").is_none()).count();
    assert_eq!(originals, 1, "exactly one request appended, the others were replays");
    assert_eq!(server.head_seq(), 2);
    let contract = server.get_json("/v1/contracts/c?as_of=2026-12-31");
    assert_eq!(contract["invoices"].as_array().unwrap().len(), 1);
}

#[test]
fn a_refused_batch_writes_nothing_and_names_the_event() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    let head = server.head();
    let contract = server.get("/v1/contracts/c?as_of=2026-12-31").text;
    let pay = |contract: &str, invoice: &str, amount: &str| event(contract, "payment_received", "2026-02-10", json!({"payment_id": "P", "amount": amount, "invoice_id": invoice}));
    let versioned = |v: u64, id: &str| {
        let mut e = invoice("c", id, "1.00");
        e["expected_version"] = json!(v);
        e
    };
    let mut bogus = invoice("c", "B", "1.00");
    bogus["bogus"] = json!(true);
    // (events, status, code, index, field)
    let cases: Vec<(Vec<Value>, u16, &str, u64, &str)> = vec![
        // The payment exceeds an invoice issued earlier in the same batch.
        (vec![small_grant("d"), invoice("d", "D-1", "10.00"), pay("d", "D-1", "10.01")], 422, "payment_exceeds_invoice", 2, "events[2].data.amount"),
        (vec![invoice("c", "X", "1.00"), invoice("c", "X", "1.00")], 422, "duplicate_invoice", 1, "events[1].data.invoice_id"),
        (vec![invoice("c", "Y", "1.00"), invoice("nobody", "Y", "1.00")], 404, "unknown_contract", 1, "events[1].contract_id"),
        (vec![versioned(1, "V1"), versioned(1, "V2")], 409, "version_conflict", 1, "events[1].expected_version"),
        (vec![invoice("c", "Z", "1.00"), invoice("c", "Z2", "1.00"), bogus], 400, "unknown_field", 2, "events[2].bogus"),
        (vec![invoice("c", "Q", "1.001")], 422, "too_many_decimals", 0, "events[0].data.amount"),
    ];
    for (events, status, code, index, field) in &cases {
        let reply = server.batch(events);
        let v = reply.expect_error(*status, code, Some(field));
        assert_eq!(v["error"]["index"], *index, "{}", reply.text);
        assert_eq!(server.head(), head, "a refused batch wrote nothing: {}", reply.text);
    }
    assert_eq!(server.get("/v1/contracts/d").status, 404, "the grant of a refused batch was not written");
    assert_eq!(server.get("/v1/contracts/c?as_of=2026-12-31").text, contract, "the contract is unchanged");
    assert_eq!(server.get_json("/v1/events")["events"].as_array().unwrap().len(), 1);

    // The corrected batch is written whole, in order.
    let receipts = server.batch_ok(&[small_grant("d"), invoice("d", "D-1", "10.00"), pay("d", "D-1", "10.00")]);
    assert_eq!(receipts.iter().map(|r| (r["seq"].as_u64().unwrap(), r["version"].as_u64().unwrap())).collect::<Vec<_>>(), [(2, 1), (3, 2), (4, 3)]);
    let d = server.get_json("/v1/contracts/d?as_of=2026-12-31");
    assert_eq!(d["figures"]["collected"], "10.00");
    assert_eq!(d["invoices"][0]["owed"], "0.00");
}

#[test]
fn racing_writers_get_one_winner_per_version_and_the_chain_verifies() {
    const THREADS: usize = 32;
    const WINS: usize = 4;
    let mut server = Server::start();
    server.append_ok(&small_grant("race"));
    let barrier = Barrier::new(THREADS);
    let conflicts = AtomicUsize::new(0);
    let wins: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let api: Api = (*server).clone();
                let (barrier, conflicts) = (&barrier, &conflicts);
                s.spawn(move || {
                    let mut expected = 1u64;
                    let mut won = vec![];
                    barrier.wait();
                    while won.len() < WINS {
                        let mut e = invoice("race", &format!("T{t}-{}", won.len()), "1.00");
                        e["expected_version"] = json!(expected);
                        let reply = api.append(&e);
                        let v = reply.json();
                        match reply.status {
                            201 => {
                                let version = v["version"].as_u64().unwrap();
                                assert_eq!(version, expected + 1, "a winner gets the version after the one it expected: {v}");
                                won.push((version, v["seq"].as_u64().unwrap()));
                                expected = version;
                            }
                            409 => {
                                assert_eq!(v["error"]["code"], "version_conflict", "{v}");
                                let current = v["error"]["current_version"].as_u64().unwrap_or_else(|| panic!("no current_version: {v}"));
                                assert!(current > expected, "expected {expected}, current {current}");
                                conflicts.fetch_add(1, Ordering::Relaxed);
                                expected = current;
                            }
                            other => panic!("thread {t}: unexpected {other}: {v}"),
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let total = (THREADS * WINS) as u64;
    let versions: BTreeMap<u64, u64> = wins.iter().copied().collect();
    assert_eq!(versions.len() as u64, total, "exactly one winner per version");
    assert_eq!(versions.keys().copied().collect::<Vec<_>>(), (2..=total + 1).collect::<Vec<_>>(), "versions gapless");
    let mut seqs: Vec<u64> = wins.iter().map(|w| w.1).collect();
    seqs.sort();
    assert_eq!(seqs, (2..=total + 1).collect::<Vec<_>>(), "seqs gapless");
    // All started from version 1: at least every thread but one lost the first round.
    assert!(conflicts.load(Ordering::Relaxed) >= THREADS - 1, "{} conflicts", conflicts.load(Ordering::Relaxed));

    // The stored stream agrees, and every invoice is there once.
    let events = server.all_pages("/v1/contracts/race/events", "events");
    assert_eq!(events.iter().map(|e| e["version"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=total + 1).collect::<Vec<_>>());
    for e in &events[1..] {
        assert_eq!(versions[&e["version"].as_u64().unwrap()], e["seq"].as_u64().unwrap());
    }
    let contract = server.get_json("/v1/contracts/race?as_of=2026-12-31");
    assert_eq!(contract["invoices"].as_array().unwrap().len() as u64, total);
    assert_eq!(contract["figures"]["billed"], format!("{total}.00"));

    server.stop_ok();
    let out = verify_ok(&server.data);
    assert!(out.starts_with(&format!("ok: {} events verified", total + 1)), "{out}");
}

#[test]
fn known_at_reproduces_a_past_revenue_report_after_corrections() {
    let mut server = Server::start();
    let sample = colossus();
    server.batch_ok(&sample[..5]);
    let paths = [
        "/v1/contracts/colossus-1/revenue?as_of=2026-12-31",
        "/v1/contracts/colossus-1/revenue?as_of=2026-12-31&granularity=quarter",
        "/v1/contracts/colossus-1/revenue?as_of=2028-06-30",
        "/v1/contracts/colossus-1?as_of=2026-12-31",
        "/v1/contracts/colossus-1?as_of=2028-06-30",
        "/v1/portfolio?as_of=2027-12-31",
    ];
    let at_seq_5: Vec<Value> = paths.iter().map(|p| server.get_json(p)).collect();
    assert_eq!(at_seq_5[0]["known_at"], 5);
    // The SLA credit of 2026-09-30 still counts: 7,907,846,715.32 less 2,500,000.00.
    assert_eq!(at_seq_5[0]["recognized"], "7905346715.32");

    // Corrections and later events: the credit reversed, capacity added, the milestone
    // achieved, the contract terminated.
    for e in &sample[5..] {
        server.append_ok(e);
    }
    for (path, before) in paths.iter().zip(&at_seq_5) {
        let now = server.get_json(path);
        assert_ne!(&now, before, "{path}: the corrections change today's view");
        let sep = if path.contains('?') { '&' } else { '?' };
        let reproduced = server.get_json(&format!("{path}{sep}known_at=5"));
        assert_eq!(&reproduced, before, "{path}: known_at=5 reproduces the report issued at seq 5");
    }
    let now = server.get_json(paths[0]);
    assert_eq!((now["known_at"].as_u64(), now["recognized"].as_str()), (Some(9), Some("7907846715.32")));
    server.get(&format!("{}&known_at=10", paths[0])).expect_error(400, "invalid_parameter", Some("known_at"));
    // The HTTP report is the CLI's report, byte for byte in meaning.
    server.stop_ok();
    let (code, stdout, stderr) = e2e::run(&["report", "--data", server.data.to_str().unwrap(), "--contract", "colossus-1", "--as-of", "2026-12-31", "--known-at", "5", "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), at_seq_5[0]);
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn sigterm_with_appends_in_flight_loses_no_acknowledged_event() {
    const WRITERS: usize = 8;
    let mut server = Server::start();
    server.append_ok(&small_grant("g"));
    let acked: Mutex<Vec<(u64, String)>> = Mutex::new(vec![]);
    let other_statuses: Mutex<Vec<String>> = Mutex::new(vec![]);
    let stop = AtomicBool::new(false);
    let after_signal = AtomicUsize::new(0);
    let signalled = AtomicBool::new(false);
    let status = std::thread::scope(|s| {
        for t in 0..WRITERS {
            let api: Api = (*server).clone();
            let (acked, other_statuses, stop, after_signal, signalled) = (&acked, &other_statuses, &stop, &after_signal, &signalled);
            s.spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let e = invoice("g", &format!("W{t}-{i}"), "1.00");
                    match api.try_call("POST", "/v1/events", &[], Some(e.to_string().into_bytes())) {
                        Ok(reply) if reply.status == 201 => {
                            let v = reply.json();
                            acked.lock().unwrap().push((v["seq"].as_u64().unwrap(), v["hash"].as_str().unwrap().to_string()));
                            if signalled.load(Ordering::SeqCst) {
                                after_signal.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(reply) => other_statuses.lock().unwrap().push(format!("{} {}", reply.status, reply.text)),
                        // The server closed: the listener is gone.
                        Err(_) => break,
                    }
                }
            });
        }
        // The writers stop whatever happens here, so a failure cannot hang the scope.
        let _stop = StopOnDrop(&stop);
        eventually("100 acknowledged appends", Duration::from_secs(60), || (acked.lock().unwrap().len() >= 100).then_some(()));
        signalled.store(true, Ordering::SeqCst);
        server.sigterm();
        server.wait_exit()
    });
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0: {status:?}\n{}", server.stderr());
    let others = other_statuses.into_inner().unwrap();
    assert!(others.is_empty(), "requests in flight at shutdown must finish, not fail: {others:?}");
    let acked = acked.into_inner().unwrap();
    eprintln!("{} appends acknowledged, {} of them after SIGTERM", acked.len(), after_signal.load(Ordering::SeqCst));

    // Every acknowledged event is stored, with the hash it was acknowledged with.
    let stored: BTreeMap<u64, String> = log_json(&server.data).iter().map(|l| (l["seq"].as_u64().unwrap(), l["hash"].as_str().unwrap().to_string())).collect();
    for (seq, hash) in &acked {
        assert_eq!(stored.get(seq), Some(hash), "acknowledged seq {seq} is missing or differs after shutdown");
    }
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), (1..=stored.len() as u64).collect::<Vec<_>>());
    verify_ok(&server.data);
    // And the restarted server serves them.
    let server = Server::on(&server.data.clone(), Default::default());
    assert_eq!(server.head_seq(), stored.len() as u64);
    let (seq, hash) = acked.last().unwrap();
    assert_eq!(server.get_json(&format!("/v1/events/{seq}"))["hash"], hash.as_str());
}
