//! `cledger serve` over real HTTP: every endpoint's content, the error shape and status of
//! every kind of refusal, SPEC section 4's rules as 422s, paging, OpenAPI, metrics.

use base64::Engine;
use e2e::server::{colossus, event, invoice, metric, small_grant, Options, Server, Tokens};
use serde_json::{json, Value};

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect()
}

fn seqs(events: &Value) -> Vec<u64> {
    events.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

const EVENT_KEYS: [&str; 10] = ["seq", "contract_id", "version", "type", "effective_date", "recorded_at", "hash", "prev_hash", "canonical", "event"];

#[test]
fn every_endpoint_serves_the_sample_contract() {
    let server = Server::start();
    assert_eq!(server.get_json("/healthz"), json!({"status": "ok"}));
    let ready = server.get_json("/readyz");
    assert_eq!((ready["ready"].as_bool(), ready["head"].as_u64()), (Some(true), Some(0)), "{ready}");
    assert_eq!(server.head(), json!({"seq": 0, "hash": "0".repeat(64), "recorded_at": null}));

    // POST /v1/events/batch: the 9 events of SPEC section 4's example.
    let sample = colossus();
    let receipts = server.batch_ok(&sample);
    assert_eq!(receipts.len(), 9);
    let mut prev = "0".repeat(64);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(keys(r), ["seq", "contract_id", "version", "hash", "prev_hash", "recorded_at"]);
        assert_eq!(r["seq"], i as u64 + 1);
        assert_eq!(r["prev_hash"], prev.as_str(), "receipts chain");
        prev = r["hash"].as_str().unwrap().to_string();
        assert_eq!(prev.len(), 64);
    }
    // The ledger-wide period close has no contract; the contract's versions skip it.
    assert_eq!(receipts[3]["contract_id"], Value::Null);
    assert_eq!(receipts.iter().filter(|r| r["contract_id"] == "colossus-1").map(|r| r["version"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());

    // POST /v1/events: one more event, receipt fields.
    let one = server.append_ok(&event("colossus-1", "invoice_issued", "2026-07-01", json!({"invoice_id": "INV-002", "amount": "1.5", "due_date": "2026-08-01"})));
    assert_eq!((one["seq"].as_u64(), one["version"].as_u64(), one["contract_id"].as_str()), (Some(10), Some(9), Some("colossus-1")));
    assert_eq!(one["prev_hash"], receipts[8]["hash"]);
    let recorded_at = one["recorded_at"].as_str().unwrap();
    assert!(recorded_at.ends_with('Z') && recorded_at.len() == "2026-11-28T03:32:16.078146Z".len(), "{recorded_at}");

    // GET /v1/events: every event with its canonical bytes, hash and link.
    let page = server.get_json("/v1/events");
    assert_eq!(page["next_after"], Value::Null);
    let events = page["events"].as_array().unwrap();
    assert_eq!(seqs(&page["events"]), (1..=10).collect::<Vec<_>>());
    let mut prev = "0".repeat(64);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(keys(e), EVENT_KEYS);
        let canonical = base64::engine::general_purpose::STANDARD.decode(e["canonical"].as_str().unwrap()).unwrap();
        let mut hasher = blake3::Hasher::new_derive_key("compute-ledger 2026-11 event v1");
        hasher.update(&canonical);
        assert_eq!(e["hash"], hasher.finalize().to_hex().as_str(), "seq {}: hash of the canonical bytes", i + 1);
        assert_eq!(e["prev_hash"], prev.as_str());
        prev = e["hash"].as_str().unwrap().to_string();
        let receipt = if i < 9 { &receipts[i] } else { &one };
        assert_eq!(e["hash"], receipt["hash"]);
        assert_eq!(e["recorded_at"], receipt["recorded_at"]);
    }
    // The stored event is the one sent (the server added the actor where it was missing).
    assert_eq!(events[4]["event"]["data"], sample[4]["data"]);
    assert_eq!(events[0]["event"]["actor"], "deals@provider.example");
    assert_eq!(events[1]["event"]["actor"], "anonymous");
    assert_eq!(events[9]["event"]["data"]["amount"], "1.50", "output has exactly the currency's decimals");

    // Paging with after/limit and next_after.
    let p1 = server.get_json("/v1/events?limit=4");
    assert_eq!((seqs(&p1["events"]), p1["next_after"].clone()), (vec![1, 2, 3, 4], json!(4)));
    let p2 = server.get_json("/v1/events?after=4&limit=4");
    assert_eq!((seqs(&p2["events"]), p2["next_after"].clone()), (vec![5, 6, 7, 8], json!(8)));
    let p3 = server.get_json("/v1/events?after=8&limit=4");
    assert_eq!((seqs(&p3["events"]), p3["next_after"].clone()), (vec![9, 10], Value::Null));
    let p4 = server.get_json("/v1/events?after=10");
    assert_eq!((seqs(&p4["events"]), p4["next_after"].clone()), (vec![], Value::Null));

    // GET /v1/events/{seq} is the same object as in the list.
    assert_eq!(server.get_json("/v1/events/5"), events[4]);
    assert_eq!(server.get_json("/v1/events/4")["type"], "period_closed");

    // GET /v1/contracts.
    let contracts = server.get_json("/v1/contracts");
    assert_eq!(
        contracts,
        json!({"contracts": [{"contract_id": "colossus-1", "currency": "USD", "provider": "Neocloud Provider", "customer": "Frontier Lab", "grant_seq": 1, "version": 9}], "next_after": null})
    );

    // GET /v1/contracts/{id}: state and figures at a date.
    let c = server.get_json("/v1/contracts/colossus-1?as_of=2026-12-31");
    assert_eq!((c["contract_id"].as_str(), c["as_of"].as_str(), c["known_at"].as_u64(), c["version"].as_u64()), (Some("colossus-1"), Some("2026-12-31"), Some(10), Some(9)));
    assert_eq!(c["term"], json!({"start": "2026-06-01", "end": "2029-06-01"}));
    assert_eq!(c["cluster"], json!({"site": "memphis-1", "gpu_model": "H100", "gpus": 230000}));
    assert_eq!(c["tranches"][0]["status"], "counted");
    assert_eq!(c["tranches"][1]["status"], "pending");
    assert_eq!(c["figures"]["recognized"], "7907846715.32");
    assert_eq!(c["figures"]["billed"], "1125000001.50");
    assert_eq!(c["reversals"][0]["target_seq"], 5);
    // Later: the milestone was achieved, the contract terminated with a fee.
    let later = server.get_json("/v1/contracts/colossus-1?as_of=2028-06-30");
    assert_eq!(later["tranches"][1]["status"], "counted");
    assert_eq!(later["figures"]["fees"], "900000000.00");
    assert!(later["termination"].is_object(), "{}", later["termination"]);

    // GET /v1/contracts/{id}/events: the contract's events in version order, paged.
    let ce = server.get_json("/v1/contracts/colossus-1/events");
    assert_eq!(seqs(&ce["events"]), [1, 2, 3, 5, 6, 7, 8, 9, 10]);
    assert_eq!(ce["next_after"], Value::Null);
    let ce = server.get_json("/v1/contracts/colossus-1/events?after=3&limit=2");
    assert_eq!(ce["events"].as_array().unwrap().iter().map(|e| e["version"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(seqs(&ce["events"]), [5, 6]);
    assert_eq!(ce["next_after"], 5);

    // GET /v1/contracts/{id}/revenue: exactly SPEC section 4's object.
    let r = server.get_json("/v1/contracts/colossus-1/revenue?as_of=2026-12-31");
    assert_eq!(
        keys(&r),
        ["contract_id", "as_of", "known_at", "currency", "headline", "transaction_price", "recognized", "rpo", "remaining_conditional",
         "forfeited", "cancelled", "billed", "collected", "receivable", "deferred_revenue", "contract_asset", "periods"]
    );
    assert_eq!(r["currency"], "USD");
    assert_eq!(r["known_at"], 10);
    assert_eq!(r["headline"], "45000000000.00");
    assert_eq!(r["transaction_price"], "40500000000.00");
    // 40,500,000,000.00 over 1096 days, 214 of them by 2026-12-31.
    assert_eq!(r["recognized"], "7907846715.32");
    assert_eq!(r["rpo"], "32592153284.68");
    assert_eq!(r["remaining_conditional"], "4500000000.00");
    assert_eq!(r["billed"], "1125000001.50");
    assert_eq!(r["receivable"], "1.50");
    assert_eq!(r["contract_asset"], "6782846713.82");
    let periods = r["periods"].as_array().unwrap();
    assert_eq!(periods.iter().map(|p| p["period"].as_str().unwrap()).collect::<Vec<_>>(), ["2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10", "2026-11", "2026-12"]);
    let cents: i128 = periods.iter().map(|p| p["recognized"].as_str().unwrap().replace('.', "").parse::<i128>().unwrap()).sum();
    assert_eq!(cents, 790_784_671_532, "periods add up to the recognized total");
    let q = server.get_json("/v1/contracts/colossus-1/revenue?as_of=2026-12-31&granularity=quarter");
    assert_eq!(q["periods"].as_array().unwrap().iter().map(|p| p["period"].as_str().unwrap()).collect::<Vec<_>>(), ["2026-Q2", "2026-Q3", "2026-Q4"]);
    assert_eq!(q["recognized"], r["recognized"]);

    // GET /v1/portfolio: totals per currency.
    let p = server.get_json("/v1/portfolio?as_of=2026-12-31");
    assert_eq!((p["as_of"].as_str(), p["known_at"].as_u64()), (Some("2026-12-31"), Some(10)));
    assert_eq!(p["totals"].as_array().unwrap().len(), 1);
    assert_eq!(p["totals"][0]["currency"], "USD");
    assert_eq!(p["totals"][0]["contracts"], 1);
    assert_eq!(p["totals"][0]["recognized"], "7907846715.32");
    assert_eq!(p["totals"][0]["billed"], "1125000001.50");

    // GET /v1/chain/head: the last event.
    assert_eq!(server.head(), json!({"seq": 10, "hash": events[9]["hash"], "recorded_at": events[9]["recorded_at"]}));
    let ready = server.get_json("/readyz");
    assert_eq!((ready["ready"].as_bool(), ready["head"].as_u64()), (Some(true), Some(10)), "{ready}");

    // GET /v1/stream: from `after`, `id` = seq, the event JSON as data.
    let mut stream = e2e::server::SseClient::connect(server.port, "/v1/stream?after=8", &[]);
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").unwrap().starts_with("text/event-stream"));
    for expected in &events[8..] {
        let e = stream.expect_event();
        assert_eq!(e.event.as_deref(), Some("ledger_event"));
        assert_eq!(e.seq(), expected["seq"].as_u64().unwrap());
        assert_eq!(&e.json(), expected);
    }
}

#[test]
fn several_contracts_page_by_id_and_portfolio_totals_stay_per_currency() {
    let server = Server::start();
    let mut grants = vec![];
    for id in ["d-03", "a-01", "c-02", "b-04", "e-05"] {
        grants.push(small_grant(id));
    }
    let mut eur = small_grant("f-eur");
    eur["data"]["currency"] = json!("EUR");
    grants.push(eur);
    server.batch_ok(&grants);
    let page = server.get_json("/v1/contracts?limit=2");
    let ids = |v: &Value| v["contracts"].as_array().unwrap().iter().map(|c| c["contract_id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!((ids(&page), page["next_after"].clone()), (vec!["a-01".to_string(), "b-04".into()], json!("b-04")));
    let page = server.get_json("/v1/contracts?limit=2&after=b-04");
    assert_eq!((ids(&page), page["next_after"].clone()), (vec!["c-02".to_string(), "d-03".into()], json!("d-03")));
    let page = server.get_json("/v1/contracts?limit=2&after=d-03");
    assert_eq!((ids(&page), page["next_after"].clone()), (vec!["e-05".to_string(), "f-eur".into()], Value::Null));
    let all = server.all_pages("/v1/contracts", "contracts");
    assert_eq!(all.len(), 6);
    assert_eq!(all.iter().map(|c| c["grant_seq"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 4, 3, 1, 5, 6]);

    let p = server.get_json("/v1/portfolio?as_of=2026-12-31");
    let totals = p["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 2, "{p}");
    let by = |c: &str| totals.iter().find(|t| t["currency"] == c).unwrap_or_else(|| panic!("no {c} in {p}")).clone();
    // Each grant: 3,000.00 firm fully recognized by the end of 2026, 650.00 pending.
    assert_eq!((by("USD")["contracts"].as_u64(), by("USD")["recognized"].as_str()), (Some(5), Some("15000.00")));
    assert_eq!((by("EUR")["contracts"].as_u64(), by("EUR")["recognized"].as_str()), (Some(1), Some("3000.00")));
    assert_eq!(by("USD")["remaining_conditional"], "3250.00");
    // known_at: only the first grant.
    let mut p = server.get_json("/v1/portfolio?as_of=2026-12-31&known_at=1");
    // Revenue per month of the currency: the one grant's, adding up to its total.
    let periods = p["totals"][0].as_object_mut().unwrap().remove("periods").unwrap();
    let periods = periods.as_array().unwrap();
    assert_eq!((periods.len(), periods[0]["period"].as_str(), periods[11]["period"].as_str()), (12, Some("2026-01"), Some("2026-12")));
    let cents: i64 = periods.iter().map(|x| x["recognized"].as_str().unwrap().replace('.', "").parse::<i64>().unwrap()).sum();
    assert_eq!(cents, 300_000);
    assert_eq!(p["contracts"].as_array().unwrap().len(), 1);
    assert_eq!(p["totals"], json!([{"currency": "USD", "contracts": 1, "headline": "3650.00", "transaction_price": "3000.00", "recognized": "3000.00",
        "rpo": "0.00", "remaining_conditional": "650.00", "forfeited": "0.00", "cancelled": "0.00", "billed": "0.00", "collected": "0.00",
        "receivable": "0.00", "deferred_revenue": "0.00", "contract_asset": "3000.00"}]));
}

/// (method, path, body, status, code, field)
type ErrorCase = (&'static str, &'static str, Option<String>, u16, &'static str, Option<&'static str>);

#[test]
fn every_error_has_its_status_code_and_field() {
    let server = Server::start();
    server.batch_ok(&[small_grant("c"), invoice("c", "INV-1", "100.00")]);
    let ok_invoice = |id: &str| invoice("c", id, "1.00").to_string();
    let mut with_bogus = invoice("c", "INV-X", "1.00");
    with_bogus["bogus"] = json!(1);
    let mut missing = invoice("c", "INV-X", "1.00");
    missing["data"].as_object_mut().unwrap().remove("amount");
    let mut stale = invoice("c", "INV-X", "1.00");
    stale["expected_version"] = json!(1);
    let too_many = json!({"events": vec![invoice("c", "I", "1.00"); 1001]}).to_string();
    let cases: Vec<ErrorCase> = vec![
        // 400: malformed bodies.
        ("POST", "/v1/events", Some("{".into()), 400, "invalid_json", None),
        ("POST", "/v1/events", Some(with_bogus.to_string()), 400, "unknown_field", Some("bogus")),
        ("POST", "/v1/events", Some(missing.to_string()), 400, "missing_field", Some("data.amount")),
        ("POST", "/v1/events", Some(r#"{"contract_id":"c","type":"gift","effective_date":"2026-02-01","data":{}}"#.into()), 400, "unknown_type", Some("type")),
        ("POST", "/v1/events", Some(ok_invoice("X").replace("2026-02-01", "2026-02-30")), 400, "invalid_date", Some("effective_date")),
        ("POST", "/v1/events/batch", Some(r#"{"events": [], "extra": 1}"#.into()), 400, "invalid_json", None),
        ("POST", "/v1/events/batch", Some(r#"{"events": []}"#.into()), 400, "empty_batch", Some("events")),
        // 400: query parameters.
        ("GET", "/v1/events?limit=0", None, 400, "invalid_parameter", Some("limit")),
        ("GET", "/v1/events?limit=1001", None, 400, "invalid_parameter", Some("limit")),
        ("GET", "/v1/events?after=x", None, 400, "invalid_parameter", Some("after")),
        ("GET", "/v1/events?colour=blue", None, 400, "invalid_parameter", Some("colour")),
        ("GET", "/v1/events?limit=1&limit=2", None, 400, "invalid_parameter", Some("limit")),
        ("GET", "/v1/events/abc", None, 400, "invalid_parameter", Some("seq")),
        ("GET", "/v1/contracts?as_of=2026-01-01", None, 400, "invalid_parameter", Some("as_of")),
        // A malformed `after` is named as `after` (the parameter), like every other parameter.
        ("GET", "/v1/contracts?after=Bad%20Id", None, 400, "invalid_id", Some("after")),
        ("GET", "/v1/contracts/Bad%20Id", None, 400, "invalid_id", Some("id")),
        ("GET", "/v1/contracts/c?as_of=2026-13-01", None, 400, "invalid_parameter", Some("as_of")),
        ("GET", "/v1/contracts/c/revenue?as_of=2026-12-31&granularity=year", None, 400, "invalid_parameter", Some("granularity")),
        ("GET", "/v1/contracts/c/revenue?as_of=2026-12-31&known_at=3", None, 400, "invalid_parameter", Some("known_at")),
        ("GET", "/v1/contracts/c/revenue?as_of=2026-12-31&knownat=1", None, 400, "invalid_parameter", Some("knownat")),
        ("GET", "/v1/portfolio?known_at=99", None, 400, "invalid_parameter", Some("known_at")),
        ("GET", "/v1/portfolio?limit=5", None, 400, "invalid_parameter", Some("limit")),
        ("GET", "/v1/contracts/c/events?limit=5000", None, 400, "invalid_parameter", Some("limit")),
        ("GET", "/v1/stream?after=-1", None, 400, "invalid_parameter", Some("after")),
        ("GET", "/v1/stream?from=1", None, 400, "invalid_parameter", Some("from")),
        // 404.
        ("GET", "/v1/contracts/nobody", None, 404, "unknown_contract", None),
        ("GET", "/v1/contracts/nobody/revenue?as_of=2026-12-31", None, 404, "unknown_contract", None),
        ("GET", "/v1/contracts/nobody/events", None, 404, "unknown_contract", None),
        ("GET", "/v1/events/3", None, 404, "unknown_event", None),
        ("GET", "/v1/nothing-here", None, 404, "not_found", None),
        ("POST", "/v1/events", Some(invoice("nobody", "I", "1.00").to_string()), 404, "unknown_contract", Some("contract_id")),
        // 405.
        ("DELETE", "/v1/events", None, 405, "method_not_allowed", None),
        ("PUT", "/v1/events/batch", Some("{}".into()), 405, "method_not_allowed", None),
        ("POST", "/v1/chain/head", Some("{}".into()), 405, "method_not_allowed", None),
        ("POST", "/v1/events/1", Some("{}".into()), 405, "method_not_allowed", None),
        // 409.
        ("POST", "/v1/events", Some(stale.to_string()), 409, "version_conflict", Some("expected_version")),
        // 413.
        ("POST", "/v1/events/batch", Some(too_many), 413, "body_too_large", Some("events")),
        // 422.
        ("POST", "/v1/events", Some(invoice("c", "INV-1", "5.00").to_string()), 422, "duplicate_invoice", Some("data.invoice_id")),
        ("POST", "/v1/events", Some(invoice("c", "INV-2", "5.001").to_string()), 422, "too_many_decimals", Some("data.amount")),
    ];
    let head = server.head();
    let mut failures = vec![];
    for (method, path, body, status, code, field) in &cases {
        let reply = server.call(method, path, &[], body.clone().map(String::into_bytes));
        let v: Value = serde_json::from_str(&reply.text).unwrap_or(Value::Null);
        let got = (reply.status, v["error"]["code"].as_str(), v["error"]["field"].as_str());
        let has_message = v["error"]["message"].as_str().is_some_and(|m| !m.is_empty());
        if got != (*status, Some(*code), *field) || !has_message {
            failures.push(format!("{method} {path}: expected {status} {code} {field:?}, got {got:?}: {}", reply.text));
        }
    }
    assert_eq!(server.head(), head, "a refused request writes nothing");

    // 409 carries the current version; 400 from a batch names the event.
    let reply = server.append(&stale);
    assert_eq!(reply.json()["error"]["current_version"], 2);
    let reply = server.batch(&[invoice("c", "OK", "1.00"), with_bogus.clone()]);
    let v = reply.expect_error(400, "unknown_field", Some("events[1].bogus"));
    assert_eq!(v["error"]["index"], 1);
    // 405 says which methods the route takes.
    let reply = server.call("DELETE", "/v1/events", &[], None);
    assert_eq!(reply.header("allow").as_deref(), Some("POST,GET,HEAD"));
    assert_eq!(server.head(), head);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn bodies_over_the_limits_are_refused_with_413_and_write_nothing() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    // One event: at most 256 KiB.
    let mut e = invoice("c", "I", "1.00");
    e["data"]["pad"] = json!("x".repeat(300 * 1024));
    let (status, text) = e2e::server::raw_call(server.port, "POST", "/v1/events", &[], e.to_string().into_bytes());
    assert_eq!(status, 413, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"]["code"], "body_too_large", "{text}");
    // A batch: at most 16 MiB.
    // 17 MiB in well-formed JSON: padding inside one event.
    let mut e = invoice("c", "I", "1.00");
    e["data"]["pad"] = json!("x".repeat(17 * 1024 * 1024));
    let (status, text) = e2e::server::raw_call(server.port, "POST", "/v1/events/batch", &[], json!({"events": [e]}).to_string().into_bytes());
    assert_eq!(status, 413, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "body_too_large", "{text}");
    assert_eq!(server.head_seq(), 1);
    // 1000 events is the most a batch takes.
    let events: Vec<Value> = (0..1000).map(|i| invoice("c", &format!("INV-{i}"), "1.00")).collect();
    let receipts = server.batch_ok(&events);
    assert_eq!(receipts.len(), 1000);
    assert_eq!(receipts[999]["seq"], 1001);
    assert_eq!(server.head_seq(), 1001);
}

/// Builds the refused event of a rule case from the receipts of its setup.
type Refused = Box<dyn Fn(&[Value]) -> Value + Send + Sync>;

/// A rule case: events set up first (contract `c` of `small_grant`), then the refused one.
struct Rule {
    name: &'static str,
    setup: Vec<Value>,
    /// Builds the refused event from the setup's receipts.
    refused: Refused,
    status: u16,
    code: &'static str,
    field: &'static str,
}

fn rules() -> Vec<Rule> {
    let g = || small_grant("c");
    let e = |kind: &str, date: &str, data: Value| event("c", kind, date, data);
    let grant_with = |tranches: Value, headline: &str| {
        let mut g = small_grant("c");
        g["data"]["tranches"] = tranches;
        g["data"]["headline"] = json!(headline);
        g
    };
    let achieved = e("milestone_reached", "2026-08-01", json!({"milestone": "m1", "outcome": "achieved"}));
    let terminated = e("contract_terminated", "2026-09-01", json!({"fee": "10.00"}));
    let inv = invoice("c", "INV-1", "100.00");
    let close = json!({"type": "period_closed", "effective_date": "2026-03-31", "data": {"period_end": "2026-03-31"}});
    let seq = |r: &[Value], i: usize| r[i]["seq"].as_u64().unwrap();
    let fixed = |v: Value| -> Refused { Box::new(move |_| v.clone()) };
    vec![
        Rule { name: "tranche window outside the term", setup: vec![],
            refused: fixed(grant_with(json!([{"id": "a", "amount": "10", "window": {"start": "2025-12-01", "end": "2026-06-01"}, "firm": true}]), "10")),
            status: 422, code: "window_outside_term", field: "data.tranches[0].window" },
        Rule { name: "tranche amount not positive", setup: vec![],
            refused: fixed(grant_with(json!([{"id": "a", "amount": "10", "window": {"start": "2026-01-01", "end": "2026-06-01"}, "firm": true},
                                            {"id": "b", "amount": "0", "window": {"start": "2026-01-01", "end": "2026-06-01"}, "firm": true}]), "10")),
            status: 422, code: "non_positive_amount", field: "data.tranches[1].amount" },
        Rule { name: "tranches not summing to the headline", setup: vec![],
            refused: fixed(grant_with(json!([{"id": "a", "amount": "10", "window": {"start": "2026-01-01", "end": "2026-06-01"}, "firm": true}]), "10.01")),
            status: 422, code: "tranche_sum_mismatch", field: "data.tranches" },
        Rule { name: "unknown milestone", setup: vec![g()],
            refused: fixed(e("milestone_reached", "2026-08-01", json!({"milestone": "m2", "outcome": "achieved"}))),
            status: 422, code: "unknown_milestone", field: "data.milestone" },
        Rule { name: "milestone resolved twice", setup: vec![g(), achieved.clone()],
            refused: fixed(e("milestone_reached", "2026-09-01", json!({"milestone": "m1", "outcome": "failed"}))),
            status: 422, code: "milestone_already_resolved", field: "data.milestone" },
        Rule { name: "milestone resolved again before its earlier resolution's reversal", setup: vec![g(), achieved.clone()],
            refused: Box::new(move |_| e("milestone_reached", "2026-09-15", json!({"milestone": "m1", "outcome": "failed"}))),
            // Set up below: the reversal is appended by `extra`.
            status: 422, code: "milestone_resolved_before_reversal", field: "effective_date" },
        Rule { name: "event before the grant", setup: vec![g()],
            refused: fixed(e("invoice_issued", "2025-12-31", json!({"invoice_id": "I", "amount": "1.00", "due_date": "2026-01-31"}))),
            status: 422, code: "before_grant", field: "effective_date" },
        Rule { name: "event for an unknown contract", setup: vec![g()],
            refused: fixed(event("nobody", "invoice_issued", "2026-02-01", json!({"invoice_id": "I", "amount": "1.00", "due_date": "2026-03-01"}))),
            status: 404, code: "unknown_contract", field: "contract_id" },
        Rule { name: "event on a terminated contract", setup: vec![g(), terminated.clone()],
            refused: fixed(e("sla_credit_issued", "2026-09-02", json!({"amount": "1.00", "reason": "late"}))),
            status: 422, code: "contract_terminated", field: "type" },
        Rule { name: "termination before another event", setup: vec![g(), achieved.clone()],
            refused: fixed(e("contract_terminated", "2026-07-31", json!({"fee": "0"}))),
            status: 422, code: "termination_before_event", field: "effective_date" },
        Rule { name: "payment over what the invoice owes",
            setup: vec![g(), inv.clone(), e("payment_received", "2026-02-10", json!({"payment_id": "P1", "amount": "60.00", "invoice_id": "INV-1"}))],
            refused: fixed(e("payment_received", "2026-02-20", json!({"payment_id": "P2", "amount": "40.01", "invoice_id": "INV-1"}))),
            status: 422, code: "payment_exceeds_invoice", field: "data.amount" },
        Rule { name: "payment for an unknown invoice", setup: vec![g()],
            refused: fixed(e("payment_received", "2026-02-20", json!({"payment_id": "P2", "amount": "1.00", "invoice_id": "INV-9"}))),
            status: 422, code: "unknown_invoice", field: "data.invoice_id" },
        Rule { name: "invoice id used twice", setup: vec![g(), inv.clone()], refused: fixed(inv.clone()),
            status: 422, code: "duplicate_invoice", field: "data.invoice_id" },
        Rule { name: "amount with too many decimals", setup: vec![g()],
            refused: fixed(e("invoice_issued", "2026-02-01", json!({"invoice_id": "I", "amount": "1.001", "due_date": "2026-03-01"}))),
            status: 422, code: "too_many_decimals", field: "data.amount" },
        Rule { name: "amount overflow", setup: vec![g()],
            refused: fixed(e("invoice_issued", "2026-02-01", json!({"invoice_id": "I", "amount": "10000000000000000000000000000.01", "due_date": "2026-03-01"}))),
            status: 422, code: "amount_overflow", field: "data.amount" },
        Rule { name: "contract total overflow",
            setup: vec![g(), e("invoice_issued", "2026-02-01", json!({"invoice_id": "I", "amount": "6000000000000000000000000000.00", "due_date": "2026-03-01"}))],
            refused: fixed(e("invoice_issued", "2026-02-01", json!({"invoice_id": "J", "amount": "6000000000000000000000000000.00", "due_date": "2026-03-01"}))),
            status: 422, code: "amount_overflow", field: "data" },
        Rule { name: "event on or before a closed period", setup: vec![g(), close.clone()],
            refused: fixed(e("invoice_issued", "2026-03-31", json!({"invoice_id": "I", "amount": "1.00", "due_date": "2026-04-30"}))),
            status: 422, code: "period_closed", field: "effective_date" },
        Rule { name: "period end not advancing", setup: vec![close.clone()],
            refused: fixed(json!({"type": "period_closed", "effective_date": "2026-04-30", "data": {"period_end": "2026-03-31"}})),
            status: 422, code: "period_end_not_advancing", field: "data.period_end" },
        Rule { name: "reversal of a grant", setup: vec![g()],
            refused: Box::new(move |r| e("event_reversed", "2026-02-01", json!({"target_seq": seq(r, 0), "reason": "oops"}))),
            status: 422, code: "reversal_of_grant", field: "data.target_seq" },
        Rule { name: "reversal of a reversal", setup: vec![g(), inv.clone()],
            refused: Box::new(move |r| e("event_reversed", "2026-02-03", json!({"target_seq": seq(r, 2), "reason": "undo"}))),
            status: 422, code: "reversal_of_reversal", field: "data.target_seq" },
        Rule { name: "an event reversed twice", setup: vec![g(), inv.clone()],
            refused: Box::new(move |r| e("event_reversed", "2026-02-03", json!({"target_seq": seq(r, 1), "reason": "again"}))),
            status: 422, code: "already_reversed", field: "data.target_seq" },
        Rule { name: "reversal taking effect before its target", setup: vec![g(), inv.clone()],
            refused: Box::new(move |r| e("event_reversed", "2026-01-31", json!({"target_seq": seq(r, 1), "reason": "oops"}))),
            status: 422, code: "reversal_before_target", field: "effective_date" },
        Rule { name: "reversal of another contract's event", setup: vec![g(), small_grant("d")],
            refused: Box::new(move |r| e("event_reversed", "2026-02-01", json!({"target_seq": seq(r, 1), "reason": "oops"}))),
            status: 422, code: "reversal_of_other_contract", field: "data.target_seq" },
        Rule { name: "reversal of an event that does not exist", setup: vec![g()],
            refused: fixed(e("event_reversed", "2026-02-01", json!({"target_seq": 99, "reason": "oops"}))),
            status: 422, code: "unknown_reversal_target", field: "data.target_seq" },
        Rule { name: "capacity decrease beyond the unrecognized firm value", setup: vec![g()],
            refused: fixed(e("capacity_changed", "2026-12-31", json!({"gpus_delta": 0, "amount_delta": "-8.23"}))),
            status: 422, code: "capacity_decrease_exceeds_unrecognized", field: "data.amount_delta" },
        Rule { name: "a second grant for a contract", setup: vec![g()], refused: fixed(g()),
            status: 422, code: "contract_exists", field: "contract_id" },
    ]
}

#[test]
fn every_rule_is_a_422_with_its_code_and_writes_nothing() {
    // One server per case (the cases reuse contract ids and seqs), a few at a time.
    let cases = rules();
    let mut failures = vec![];
    std::thread::scope(|scope| {
        let chunks: Vec<&[Rule]> = cases.chunks(cases.len().div_ceil(3)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut failures = vec![];
                    for case in chunk {
                        let server = Server::start();
                        let mut receipts = vec![];
                        for e in &case.setup {
                            receipts.push(server.append_ok(e));
                        }
                        match case.name {
                            "reversal of a reversal" | "an event reversed twice" => {
                                let r = event("c", "event_reversed", "2026-02-02", json!({"target_seq": receipts[1]["seq"], "reason": "oops"}));
                                receipts.push(server.append_ok(&r));
                            }
                            "milestone resolved again before its earlier resolution's reversal" => {
                                let r = event("c", "event_reversed", "2026-10-01", json!({"target_seq": receipts[1]["seq"], "reason": "wrong"}));
                                receipts.push(server.append_ok(&r));
                            }
                            _ => {}
                        }
                        let head = server.head();
                        let contract_before = server.get("/v1/contracts/c?as_of=2026-12-31").text;
                        let refused = (case.refused)(&receipts);
                        let reply = server.append(&refused);
                        let v: Value = serde_json::from_str(&reply.text).unwrap_or(Value::Null);
                        let got = (reply.status, v["error"]["code"].as_str(), v["error"]["field"].as_str());
                        if got != (case.status, Some(case.code), Some(case.field)) {
                            failures.push(format!("{}: expected {} {} at {}, got {got:?}: {}", case.name, case.status, case.code, case.field, reply.text));
                        }
                        if server.head() != head {
                            failures.push(format!("{}: the head moved", case.name));
                        }
                        if server.get("/v1/contracts/c?as_of=2026-12-31").text != contract_before {
                            failures.push(format!("{}: the contract changed", case.name));
                        }
                        // The refusal left the writer healthy.
                        let healthy = server.append(&event("healthy", "lease_granted", "2026-12-01", small_grant("x")["data"].clone()));
                        if healthy.status != 201 {
                            failures.push(format!("{}: a valid event after the refusal got {}", case.name, healthy.text));
                        }
                    }
                    failures
                })
            })
            .collect();
        for h in handles {
            failures.extend(h.join().unwrap());
        }
    });
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Whether the server has a route for `method path`: not the `not_found` fallback, not 405.
fn served(server: &Server, method: &str, path: &str) -> bool {
    if path.starts_with("/v1/stream") {
        return e2e::server::SseClient::connect(server.port, path, &[]).status == 200;
    }
    let body = (method == "POST").then(|| b"{}".to_vec());
    let reply = server.call(method, path, &[], body);
    let code = serde_json::from_str::<Value>(&reply.text).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string));
    let fallback = reply.status == 404 && code.as_deref() == Some("not_found");
    !fallback && reply.status != 405
}

#[test]
fn openapi_lists_every_route_and_every_listed_route_exists() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    let doc = server.get_json("/openapi.json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let listed: Vec<String> = paths.iter().flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| format!("{} {p}", m.to_uppercase()))).collect();
    // This issue's routes are all listed.
    let required = [
        "POST /v1/events", "POST /v1/events/batch", "GET /v1/events", "GET /v1/events/{seq}", "GET /v1/contracts", "GET /v1/contracts/{id}",
        "GET /v1/contracts/{id}/events", "GET /v1/contracts/{id}/revenue", "GET /v1/portfolio", "GET /v1/chain/head", "GET /v1/stream",
        "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json", "GET /v1/cluster",
    ];
    let missing: Vec<&str> = required.iter().copied().filter(|r| !listed.iter().any(|l| l == r)).collect();
    assert!(missing.is_empty(), "not in /openapi.json: {missing:?}; listed: {listed:?}");
    // Every listed route is served.
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{seq}", "1").replace("{id}", "c");
        assert!(served(&server, method, &path), "{route} is listed but not served");
    }
    // Every route of SPEC section 6 that the server serves is listed (a route added without
    // going through the documented router would show here).
    let spec_routes = [
        "POST /v1/events", "POST /v1/events/batch", "GET /v1/events", "GET /v1/events/{seq}", "GET /v1/contracts", "GET /v1/contracts/{id}",
        "GET /v1/contracts/{id}/events", "GET /v1/contracts/{id}/revenue", "GET /v1/portfolio", "GET /v1/chain/head", "GET /v1/checkpoints/latest",
        "GET /v1/proofs/inclusion", "GET /v1/proofs/consistency", "GET /v1/export", "GET /v1/stream", "GET /healthz", "GET /readyz", "GET /metrics",
        "GET /openapi.json", "POST /v1/checkpoints",
    ];
    for route in spec_routes {
        let (method, path) = route.split_once(' ').unwrap();
        let concrete = path.replace("{seq}", "1").replace("{id}", "c");
        if served(&server, method, &concrete) {
            assert!(listed.iter().any(|l| l == route), "{route} is served but not in /openapi.json: {listed:?}");
        }
    }
    // A path that is not a route is not served, so the check above can fail.
    assert!(!served(&server, "GET", "/v1/no-such-route"));
    // Parameters are documented.
    let revenue = &paths["/v1/contracts/{id}/revenue"]["get"]["parameters"];
    let names: Vec<&str> = revenue.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["id", "as_of", "known_at", "granularity", "format", "section"]);
    // The finance close routes are listed too.
    for route in ["/v1/contracts/{id}/rollforward", "/v1/portfolio/rollforward", "/v1/contracts/{id}/rpo", "/v1/portfolio/rpo", "/v1/portfolio/waterfall", "/v1/corrections", "/v1/periods", "/v1/periods/preview", "/v1/contracts/{id}/chart.svg", "/"] {
        assert!(paths.contains_key(route), "{route} not in /openapi.json");
    }
}

#[test]
fn the_embedded_server_says_it_leads_alone() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    let cluster = server.get_json("/v1/cluster");
    assert_eq!((cluster["mode"].as_str(), cluster["role"].as_str(), cluster["head"].as_u64()), (Some("embedded"), Some("leader"), Some(1)));
    assert!(cluster["leader"].is_null());
}

#[test]
fn metrics_count_the_traffic() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    server.batch_ok(&[invoice("c", "I-1", "1.00"), invoice("c", "I-2", "1.00"), invoice("c", "I-3", "1.00")]);
    server.append_ok(&invoice("c", "I-4", "1.00"));
    assert_eq!(server.append(&invoice("c", "I-4", "1.00")).status, 422);
    server.get_json("/v1/events");
    // A stream client: connected, one event read, gone.
    {
        let mut stream = e2e::server::SseClient::connect(server.port, "/v1/stream", &[]);
        assert_eq!(stream.expect_event().seq(), 1);
        assert_eq!(metric(&server.metrics(), "sse_clients"), Some(1.0));
    }
    let text = e2e::server::eventually("the stream client to be gone from sse_clients", std::time::Duration::from_secs(20), || {
        let text = server.metrics();
        (metric(&text, "sse_clients") == Some(0.0)).then_some(text)
    });
    for name in [
        "http_appends_total", "http_append_seconds_bucket", "http_append_seconds_count", "http_append_request_events_bucket",
        "ledger_sync_seconds_bucket", "ledger_commit_events_bucket", "ledger_events_appended_total", "ledger_commits_total",
        "ledger_chain_length", "sse_clients",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "no {name} in /metrics:\n{text}");
    }
    for name in ["http_append_seconds", "http_append_request_events", "ledger_sync_seconds", "ledger_commit_events"] {
        assert!(text.contains(&format!("# TYPE {name} histogram")), "{name} is a histogram:\n{text}");
    }
    // Three appends were acknowledged (the refused one is not counted), 5 events in all.
    assert_eq!(metric(&text, "http_appends_total"), Some(3.0), "{text}");
    assert_eq!(metric(&text, "http_append_seconds_count"), Some(4.0), "every append request is timed:\n{text}");
    assert_eq!(metric(&text, "http_append_request_events_sum"), Some(6.0), "{text}");
    assert_eq!(metric(&text, "ledger_events_appended_total"), Some(5.0), "{text}");
    assert_eq!(metric(&text, "ledger_chain_length"), Some(5.0), "{text}");
    assert_eq!(metric(&text, "sse_clients"), Some(0.0), "{text}");
    // One commit per acknowledged request (they came one after another); none for the refusal.
    assert_eq!(metric(&text, "ledger_commits_total"), Some(3.0), "{text}");
    assert_eq!(metric(&text, "http_errors_total{code=\"duplicate_invoice\"}"), Some(1.0), "{text}");
}

#[test]
fn an_open_server_refuses_a_non_loopback_address_and_a_tokened_one_needs_tls_or_insecure_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, stdout, stderr) = e2e::run(&["serve", "--data", data.to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0") && stderr.contains("--tokens"), "{stderr}");

    let tokens = Tokens::create();
    // Issue 14: tokens and figures in clear on the network are refused by default.
    let (code, stdout, stderr) = e2e::run(&["serve", "--data", data.to_str().unwrap(), "--listen", "0.0.0.0:0", "--tokens", tokens.file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 over plain HTTP") && stderr.contains("--tls-cert") && stderr.contains("--insecure-http"), "{stderr}");
    // Behind a TLS-terminating proxy the operator says so, and every start says it again.
    let options = Options { tokens: Some(tokens.file.clone()), listen: Some("0.0.0.0:0".into()), token: Some(tokens.admin.clone()), args: vec!["--insecure-http".into()], ..Options::default() };
    let server = Server::with(options);
    assert!(server.stdout.lock().unwrap().contains("listening on http://0.0.0.0:"));
    assert!(server.stderr().contains("--insecure-http"), "{}", server.stderr());
    assert_eq!(server.get_json("/readyz")["ready"], true);
    assert_eq!(server.append_ok(&small_grant("c"))["seq"], 1);
    // The open server warns that it is open.
    let open = Server::start();
    assert!(open.stderr().contains("open"), "{}", open.stderr());
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let server = Server::start();
    server.append_ok(&small_grant("c"));
    let (code, stdout, stderr) = e2e::run(&["serve", "--data", server.data.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(stderr.contains("in use"), "{stderr}");
    // The first one is unaffected.
    assert_eq!(server.append_ok(&invoice("c", "I", "1.00"))["seq"], 2);
}
