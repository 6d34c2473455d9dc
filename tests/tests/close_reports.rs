//! The finance close reports against the real binary: over HTTP in JSON and CSV, through
//! `cledger report --url` and `--data` (the same bytes), their identities on the demo
//! portfolio, the period close list and preview, and every bad parameter a 400 naming it.

use e2e::run;
use e2e::server::{Options, Server};
use serde_json::{json, Value};

fn demo() -> Server {
    Server::with(Options { demo: true, ..Options::default() })
}

/// Minor units of a decimal string (any currency: the decimals are dropped as digits).
fn units(v: &Value) -> i128 {
    let s = v.as_str().unwrap_or_else(|| panic!("an amount: {v}"));
    s.replace('.', "").parse().unwrap_or_else(|_| panic!("an amount: {s}"))
}

fn cli(args: &[&str]) -> String {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
    stdout
}

#[test]
fn rollforward_ties_to_the_revenue_object_in_json_and_csv() {
    let server = demo();
    let r = server.get_json("/v1/contracts/aurora-eu/rollforward?from=2026-06-30&to=2026-12-31");
    let at = |d: &str| server.get_json(&format!("/v1/contracts/aurora-eu/revenue?as_of={d}"));
    let (a, b) = (at("2026-06-30"), at("2026-12-31"));
    for (balance, open, close) in [
        ("receivable", units(&a["receivable"]), units(&b["receivable"])),
        ("rpo", units(&a["rpo"]), units(&b["rpo"])),
        ("remaining_conditional", units(&a["remaining_conditional"]), units(&b["remaining_conditional"])),
        ("net_contract_position", units(&a["billed"]) - units(&a["recognized"]), units(&b["billed"]) - units(&b["recognized"])),
    ] {
        let w = &r[balance];
        assert_eq!((units(&w["opening"]), units(&w["closing"])), (open, close), "{balance}: {w}");
        let moved: i128 = w["movements"].as_object().unwrap().values().map(units).sum();
        assert_eq!(open + moved, close, "{balance} rolls forward: {w}");
    }
    // The quarter's capacity increase (2026-09-01) and SLA credit (2026-10-15) are named.
    assert_eq!(r["rpo"]["movements"]["capacity_increases"], "10000000.00");
    assert_eq!(r["rpo"]["movements"]["credits"], "-250000.00");
    assert_eq!(units(&r["rpo"]["movements"]["recognized"]), units(&a["recognized"]) - units(&b["recognized"]));
    // Revenue of the period = the sum of the revenue object's periods in it.
    let in_period: i128 = b["periods"].as_array().unwrap().iter().filter(|p| p["period"].as_str().unwrap() > "2026-06").map(|p| units(&p["recognized"])).sum();
    assert_eq!(-units(&r["net_contract_position"]["movements"]["recognized"]), in_period);

    // CSV: fixed columns, one line per balance and line, plain decimals.
    let csv = server.call("GET", "/v1/contracts/aurora-eu/rollforward?from=2026-06-30&to=2026-12-31", &[("Accept", "text/csv")], None);
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines[0], "contract_id,currency,from,to,known_at,balance,line,amount");
    assert!(lines.contains(&"aurora-eu,EUR,2026-06-30,2026-12-31,20,rpo,capacity_increases,10000000.00"), "{}", csv.text);
    assert!(lines.contains(&"aurora-eu,EUR,2026-06-30,2026-12-31,20,rpo,credits,-250000.00"), "{}", csv.text);
    // Header; net position and receivable 4 lines each; RPO 11; conditional 6; deferred
    // revenue and contract asset at each end.
    assert_eq!(lines.len(), 1 + 4 + 4 + 11 + 6 + 4);

    // The portfolio: totals per currency, never summed across them; totals in their own section.
    let p = server.get_json("/v1/portfolio/rollforward?from=2026-06-30&to=2026-12-31");
    let currencies: Vec<&str> = p["totals"].as_array().unwrap().iter().map(|t| t["currency"].as_str().unwrap()).collect();
    assert_eq!(currencies, ["EUR", "GBP", "JPY", "KWD", "USD"]);
    assert_eq!(p["contracts"].as_array().unwrap().len(), 5);
    let rows = server.get("/v1/portfolio/rollforward?from=2026-06-30&to=2026-12-31&format=csv").text;
    let totals = server.get("/v1/portfolio/rollforward?from=2026-06-30&to=2026-12-31&format=csv&section=totals").text;
    assert!(rows.starts_with("contract_id,") && totals.starts_with("currency,contracts,"), "{rows}\n{totals}");
    assert!(!rows.to_lowercase().contains("total"));
    assert!(totals.contains("\nJPY,1,2026-06-30,2026-12-31,20,rpo,opening,"), "{totals}");
}

#[test]
fn rpo_waterfall_corrections_and_portfolio_periods() {
    let server = demo();
    let rpo = server.get_json("/v1/contracts/colossus-1/rpo?as_of=2028-02-29");
    let years = rpo["years"].as_array().unwrap();
    // 29 February a year later is 28 February.
    assert_eq!((years[0]["after"].as_str(), years[0]["through"].as_str()), (Some("2028-02-29"), Some("2029-02-28")));
    assert_eq!(years.iter().map(|y| units(&y["amount"])).sum::<i128>(), units(&rpo["rpo"]));
    assert_eq!(units(&rpo["next_12_months"]) + units(&rpo["thereafter"]), units(&rpo["rpo"]));
    assert_eq!(rpo["next_12_months"], years[0]["amount"]);

    let w = server.get_json("/v1/portfolio/waterfall?as_of=2026-12-31&granularity=quarter");
    assert_eq!(w["columns"][0]["period"], "2027-Q1");
    for row in w["rows"].as_array().unwrap() {
        let sum: i128 = row["scheduled"].as_array().unwrap().iter().map(units).sum();
        assert_eq!(sum, units(&row["rpo"]), "{row}");
    }
    let usd = w["rows"].as_array().unwrap().iter().find(|r| r["contract_id"] == "colossus-1").unwrap();
    assert_eq!(usd["remaining_conditional"], "4500000000.00", "conditional value shown apart");

    // Corrections: the demo's reversal of a duplicate credit (seq 15) changed nimbus-gb's
    // May revenue as known after seq 14, and the capacity change (seq 16) aurora-eu's.
    let c = server.get_json("/v1/corrections?as_of=2026-12-31&from_known_at=14&to_known_at=20");
    let rows = c["corrections"].as_array().unwrap();
    let nimbus: Vec<&Value> = rows.iter().filter(|r| r["contract_id"] == "nimbus-gb").collect();
    assert_eq!(nimbus.len(), 1, "{c}");
    assert_eq!((nimbus[0]["period"].as_str(), nimbus[0]["delta"].as_str()), (Some("2026-07"), Some("40000.00")), "{c}");
    assert_eq!(nimbus[0]["caused_by"][0]["seq"], 15);
    assert_eq!(nimbus[0]["caused_by"][0]["type"], "event_reversed");
    assert!(nimbus[0]["posted_in"].as_str().unwrap().len() == 7, "a month: {}", nimbus[0]);
    assert!(rows.iter().any(|r| r["contract_id"] == "aurora-eu" && r["caused_by"][0]["seq"] == 16), "{c}");
    let csv = server.get("/v1/corrections?as_of=2026-12-31&from_known_at=14&format=csv").text;
    assert!(csv.starts_with("contract_id,currency,as_of,from_known_at,to_known_at,period,period_end,posted_in,before,after,delta,seqs\n"), "{csv}");

    let p = server.get_json("/v1/portfolio?as_of=2026-12-31&granularity=quarter");
    for t in p["totals"].as_array().unwrap() {
        let sum: i128 = t["periods"].as_array().unwrap().iter().map(|q| units(&q["recognized"])).sum();
        assert_eq!(sum, units(&t["recognized"]), "{t}");
    }
}

#[test]
fn period_closes_are_listed_and_a_close_is_previewed() {
    let server = demo();
    let closes = server.get_json("/v1/periods");
    assert_eq!(closes["period_end"], "2026-06-30");
    let list = closes["closes"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["period_end"].as_str(), list[0]["seq"].as_u64(), list[0]["actor"].as_str()), (Some("2026-06-30"), Some(14), Some("demo")));
    assert!(list[0]["recorded_at"].as_str().unwrap().ends_with('Z'));

    let preview = server.get_json("/v1/periods/preview?period_end=2026-09-30");
    assert_eq!(preview["last_closed"], "2026-06-30");
    assert_eq!(preview["rollforward"]["from"], "2026-06-30");
    let months: Vec<&str> = preview["months"].as_array().unwrap().iter().map(|m| m["period"].as_str().unwrap()).collect();
    assert_eq!(months, ["2026-07", "2026-08", "2026-09"]);
    // The months chain: each closes where the next opens.
    let usd_rpo = |m: &Value, end: &str| {
        let t = m["totals"].as_array().unwrap().iter().find(|t| t["currency"] == "USD").unwrap().clone();
        units(&t["rpo"][end])
    };
    let ms = preview["months"].as_array().unwrap();
    assert_eq!(usd_rpo(&ms[0], "closing"), usd_rpo(&ms[1], "opening"));
    assert_eq!(usd_rpo(&ms[2], "closing"), {
        let t = preview["rollforward"]["totals"].as_array().unwrap().iter().find(|t| t["currency"] == "USD").unwrap().clone();
        units(&t["rpo"]["closing"])
    });
    let blocked = server.get_json("/v1/periods/preview?period_end=2026-05-31");
    assert_eq!(blocked["can_close"], false);
    assert_eq!(blocked["blockers"][0]["code"], "period_end_not_advancing");
    let future = server.get_json("/v1/periods/preview?period_end=9999-12-30");
    assert!(future["blockers"].as_array().unwrap().iter().any(|b| b["code"] == "period_not_ended"), "{future}");

    // A new close is listed, with the one who closed it.
    server.append_ok(&json!({"type": "period_closed", "effective_date": "2026-10-01", "data": {"period_end": "2026-09-30"}}));
    let closes = server.get_json("/v1/periods");
    assert_eq!(closes["period_end"], "2026-09-30");
    assert_eq!(closes["closes"].as_array().unwrap().len(), 2);
    let csv = server.get("/v1/periods?format=csv").text;
    assert!(csv.starts_with("period_end,seq,effective_date,actor,recorded_at\n2026-06-30,14,2026-06-30,demo,"), "{csv}");
}

#[test]
fn the_command_line_prints_the_servers_json_and_csv_and_the_same_from_the_data() {
    let mut server = demo();
    let url = server.base.clone();
    let reports: [&[&str]; 6] = [
        &["rollforward", "--from", "2026-09-30", "--to", "2026-12-31"],
        &["rollforward", "--contract", "colossus-1", "--from", "2026-09-30", "--to", "2026-12-31"],
        &["rpo", "--as-of", "2026-12-31"],
        &["waterfall", "--as-of", "2026-12-31", "--granularity", "quarter"],
        &["corrections", "--as-of", "2026-12-31", "--from-known-at", "10"],
        &["revenue", "--as-of", "2026-12-31", "--granularity", "quarter"],
    ];
    let mut over_http = vec![];
    for args in reports {
        for format in [&["--format", "json"][..], &["--format", "csv"], &["--format", "csv", "--section", "totals"], &["--format", "table"]] {
            if args[0] == "rollforward" && args.contains(&"--contract") && format.contains(&"totals") {
                continue;
            }
            let mut a = vec!["report"];
            a.extend(args);
            a.extend(format);
            a.extend(["--url", &url]);
            over_http.push((a.clone(), cli(&a)));
        }
    }
    // The JSON is the route's, the CSV byte for byte.
    let route = server.get_json("/v1/portfolio/rollforward?from=2026-09-30&to=2026-12-31");
    assert_eq!(serde_json::from_str::<Value>(&over_http[0].1).unwrap(), route);
    assert_eq!(over_http[1].1, server.get("/v1/portfolio/rollforward?from=2026-09-30&to=2026-12-31&format=csv").text);
    let table = &over_http[3].1;
    assert!(table.contains("45,000,000,000.00") || table.contains("32,592,153,284.68"), "thousands grouped for people: {table}");
    // Refused flags are named as flags.
    let (code, _, stderr) = run(&["report", "rollforward", "--url", &url, "--from", "2026-12-31", "--to", "2026-09-30"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--to"), "{stderr}");
    let (code, _, stderr) = run(&["report", "waterfall", "--url", &url, "--from", "2026-01-01"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--from") && stderr.contains("--as-of"), "{stderr}");

    // With the server stopped, --data prints the same bytes.
    server.stop_ok();
    let data = server.data.to_str().unwrap().to_string();
    for (args, expected) in &over_http {
        let mut a: Vec<&str> = args[..args.len() - 2].to_vec();
        a.extend(["--data", &data]);
        assert_eq!(&cli(&a), expected, "{a:?}");
    }
}

#[test]
fn every_bad_parameter_is_a_400_naming_it() {
    let server = demo();
    let cases: [(&str, u16, &str, Option<&str>); 16] = [
        ("/v1/portfolio/rollforward?to=2026-12-31", 400, "invalid_parameter", Some("from")),
        ("/v1/portfolio/rollforward?from=2026-12-31", 400, "invalid_parameter", Some("to")),
        ("/v1/portfolio/rollforward?from=2026-12-31&to=2026-12-31", 400, "invalid_parameter", Some("to")),
        ("/v1/portfolio/rollforward?from=2026-02-30&to=2026-12-31", 400, "invalid_parameter", Some("from")),
        ("/v1/portfolio/rollforward?from=2026-01-01&to=2026-12-31&known_at=99", 400, "invalid_parameter", Some("known_at")),
        ("/v1/contracts/colossus-1/rpo?as_of=tomorrow", 400, "invalid_parameter", Some("as_of")),
        ("/v1/contracts/colossus-1/rpo?as_of=2026-12-31&granularity=month", 400, "invalid_parameter", Some("granularity")),
        ("/v1/contracts/nobody/rpo", 404, "unknown_contract", None),
        ("/v1/portfolio/waterfall?granularity=week", 400, "invalid_parameter", Some("granularity")),
        ("/v1/portfolio/waterfall?format=xml", 400, "invalid_parameter", Some("format")),
        ("/v1/portfolio/waterfall?format=csv&section=nope", 400, "invalid_parameter", Some("section")),
        ("/v1/portfolio/waterfall?section=totals", 400, "invalid_parameter", Some("section")),
        ("/v1/corrections?as_of=2026-12-31", 400, "invalid_parameter", Some("from_known_at")),
        ("/v1/corrections?from_known_at=20&to_known_at=20", 400, "invalid_parameter", Some("from_known_at")),
        ("/v1/periods/preview", 400, "invalid_parameter", Some("period_end")),
        ("/v1/periods?as_of=2026-12-31", 400, "invalid_parameter", Some("as_of")),
    ];
    for (path, status, code, field) in cases {
        server.get(path).expect_error(status, code, field);
    }
    // Nothing was written by any of them.
    assert_eq!(server.head_seq(), 20);
}
