//! `cledger demo`: the sample portfolio, loaded once into an empty data directory.

use e2e::server::{event, verify_ok, Options, Server};
use serde_json::{json, Value};

fn demo() -> Options {
    Options { demo: true, ..Options::default() }
}

#[test]
fn demo_loads_the_portfolio_into_an_empty_directory_and_nothing_into_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let mut server = Server::on(&data, demo());
    let out = server.stdout.lock().unwrap().clone();
    assert!(out.contains("loaded the sample portfolio: 20 events"), "{out}");

    let contracts = server.all_pages("/v1/contracts", "contracts");
    let ids: Vec<(&str, &str)> = contracts.iter().map(|c| (c["contract_id"].as_str().unwrap(), c["currency"].as_str().unwrap())).collect();
    assert_eq!(ids, [("aurora-eu", "EUR"), ("colossus-1", "USD"), ("falcon-kw", "KWD"), ("nimbus-gb", "GBP"), ("sakura-jp", "JPY")]);
    assert_eq!(server.head_seq(), 20);
    let events = server.all_events();
    assert_eq!(events.len(), 20);
    assert_eq!(events[13]["type"], "period_closed");
    assert_eq!(events[13]["contract_id"], Value::Null);

    // Amounts in each currency's own decimals; totals per currency.
    let portfolio = server.get_json("/v1/portfolio?as_of=2027-06-30");
    let mut currencies: Vec<&str> = portfolio["totals"].as_array().unwrap().iter().map(|t| t["currency"].as_str().unwrap()).collect();
    currencies.sort();
    assert_eq!(currencies, ["EUR", "GBP", "JPY", "KWD", "USD"]);
    for t in portfolio["totals"].as_array().unwrap() {
        assert_eq!(t["contracts"], 1, "{t}");
        let decimals = t["headline"].as_str().unwrap().split('.').nth(1).map_or(0, str::len);
        let expected = match t["currency"].as_str().unwrap() {
            "JPY" => 0,
            "KWD" => 3,
            _ => 2,
        };
        assert_eq!(decimals, expected, "{t}");
    }
    // The failed option forfeits sakura-jp's second year; falcon-kw was terminated.
    let sakura = server.get_json("/v1/contracts/sakura-jp/revenue?as_of=2027-12-31");
    assert_eq!((sakura["headline"].as_str(), sakura["forfeited"].as_str(), sakura["recognized"].as_str()), (Some("3500000000"), Some("500000000"), Some("3000000000")));
    let falcon = server.get_json("/v1/contracts/falcon-kw?as_of=2027-06-30");
    assert!(falcon["termination"].is_object(), "{falcon}");
    // The reversed duplicate credit of nimbus-gb no longer counts from its reversal on.
    let nimbus = server.get_json("/v1/contracts/nimbus-gb?as_of=2026-12-31");
    assert_eq!(nimbus["figures"]["credits"], "40000.00", "{}", nimbus["figures"]);

    // It serves writes: the command the demo suggests.
    let milestone = event("colossus-1", "milestone_reached", "2027-07-15", json!({"milestone": "phase-2-delivery", "outcome": "achieved"}));
    let receipt = server.append_keyed(&milestone, "demo-1");
    assert_eq!(receipt.status, 201, "{}", receipt.text);
    assert_eq!(receipt.json()["seq"], 21);
    let head = server.head();

    // Started again on the same directory: nothing loaded, the data intact.
    server.restart();
    let out = server.stdout.lock().unwrap().clone();
    assert!(out.contains("using the existing data (21 events); nothing loaded"), "{out}");
    assert!(!out.contains("loaded the sample portfolio"), "{out}");
    assert_eq!(server.head(), head);
    assert_eq!(server.all_pages("/v1/contracts", "contracts"), contracts.iter().map(|c| {
        let mut c = c.clone();
        if c["contract_id"] == "colossus-1" {
            c["version"] = json!(4);
        }
        c
    }).collect::<Vec<_>>());
    assert_eq!(server.all_events()[..20], events[..]);
    server.stop_ok();
    let out = verify_ok(&data);
    assert!(out.starts_with("ok: 21 events verified"), "{out}");
}
