//! `cledger report` and `cledger rebuild` on a real data directory.

use e2e::{run, sample_file};

fn ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
    stdout
}

fn sample(dir: &std::path::Path) -> String {
    let data = dir.join("data").to_str().unwrap().to_string();
    ok(&["import", "--data", &data, sample_file().to_str().unwrap()]);
    data
}

#[test]
fn the_contract_report_is_the_spec_object() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path());
    let out = ok(&["report", "--data", &data, "--contract", "colossus-1", "--as-of", "2026-12-31", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["contract_id", "as_of", "known_at", "currency", "headline", "transaction_price", "recognized", "rpo", "remaining_conditional",
         "forfeited", "cancelled", "billed", "collected", "receivable", "deferred_revenue", "contract_asset", "periods"]
    );
    assert_eq!(v["known_at"], 9);
    assert_eq!(v["currency"], "USD");
    assert_eq!(v["headline"], "45000000000.00");
    assert_eq!(v["transaction_price"], "40500000000.00");
    assert_eq!(v["remaining_conditional"], "4500000000.00");
    // 40,500,000,000.00 over 1096 days; 214 days earned by 2026-12-31:
    // floor(4_050_000_000_000 * 214 / 1096) = 790_784_671_532 cents. The SLA credit of
    // 2026-09-30 was reversed on 2026-10-02, so it no longer counts.
    assert_eq!(v["recognized"], "7907846715.32");
    assert_eq!(v["rpo"], "32592153284.68");
    assert_eq!(v["billed"], "1125000000.00");
    assert_eq!(v["contract_asset"], "6782846715.32");
    let periods = v["periods"].as_array().unwrap();
    assert_eq!(periods.first().unwrap()["period"], "2026-05");
    assert_eq!(periods.last().unwrap()["period"], "2026-12");
    let sum: i128 = periods.iter().map(|p| p["recognized"].as_str().unwrap().replace('.', "").parse::<i128>().unwrap()).sum();
    assert_eq!(sum, 790_784_671_532);
}

#[test]
fn known_at_reproduces_a_past_report_after_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").to_str().unwrap().to_string();
    let sample = std::fs::read_to_string(sample_file()).unwrap();
    let first_five: String = sample.lines().take(5).map(|l| format!("{l}\n")).collect();
    let file = dir.path().join("first.ndjson");
    std::fs::write(&file, first_five).unwrap();
    ok(&["import", "--data", &data, file.to_str().unwrap()]);
    let args = ["report", "--data", &data, "--contract", "colossus-1", "--as-of", "2026-12-31", "--format", "json"];
    let at_close = ok(&args);
    // Later corrections: the credit is reversed, capacity added, and so on.
    let rest: String = sample.lines().skip(5).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, rest).unwrap();
    ok(&["import", "--data", &data, file.to_str().unwrap()]);
    assert_ne!(ok(&args), at_close, "the corrections change today's report");
    let mut reproduced_args = args.to_vec();
    reproduced_args.extend(["--known-at", "5"]);
    let reproduced = ok(&reproduced_args);
    let strip = |s: &str| s.replace("\"known_at\": 5", "K").replace("\"known_at\": 9", "K");
    assert!(at_close.contains("\"known_at\": 5"));
    assert_eq!(reproduced, at_close, "known_at 5 reproduces the report issued at seq 5");
    assert_eq!(strip(&reproduced), strip(&at_close));
    let (code, _, stderr) = run(&["report", "--data", &data, "--as-of", "2026-12-31", "--known-at", "99"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("beyond the ledger's head"), "{stderr}");
}

#[test]
fn tables_csv_portfolio_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path());
    let table = ok(&["report", "--data", &data, "--contract", "colossus-1", "--as-of", "2027-06-30", "--granularity", "quarter"]);
    assert!(table.contains("2027-Q2"), "{table}");
    // Amounts for people: thousands grouped.
    assert!(table.lines().any(|l| l.trim_start().starts_with("recognized") && l.contains(",")), "{table}");
    let csv = ok(&["report", "--data", &data, "--contract", "colossus-1", "--as-of", "2026-12-31", "--format", "csv"]);
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "contract_id,currency,as_of,known_at,period,period_end,recognized");
    assert_eq!(lines.next().unwrap(), "colossus-1,USD,2026-12-31,9,2026-05,2026-05-31,0.00");
    let portfolio = ok(&["report", "--data", &data, "--as-of", "2026-12-31", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&portfolio).unwrap();
    assert_eq!(v["totals"][0]["currency"], "USD");
    assert_eq!(v["totals"][0]["contracts"], 1);
    assert_eq!(v["totals"][0]["recognized"], "7907846715.32");
    assert_eq!(v["contracts"][0]["contract_id"], "colossus-1");
    let portfolio_csv = ok(&["report", "--data", &data, "--as-of", "2026-12-31", "--format", "csv"]);
    assert!(portfolio_csv.starts_with("contract_id,currency,as_of,known_at,headline,transaction_price,recognized,rpo,"), "{portfolio_csv}");
    // Totals are a section of their own, never rows among the contracts.
    assert!(!portfolio_csv.contains("TOTAL"), "{portfolio_csv}");
    let totals_csv = ok(&["report", "--data", &data, "--as-of", "2026-12-31", "--format", "csv", "--section", "totals"]);
    assert_eq!(totals_csv.lines().next().unwrap(), "currency,contracts,as_of,known_at,headline,transaction_price,recognized,rpo,remaining_conditional,forfeited,cancelled,billed,collected,receivable,deferred_revenue,contract_asset");
    assert!(totals_csv.lines().nth(1).unwrap().starts_with("USD,1,2026-12-31,9,45000000000.00,"), "{totals_csv}");
    let rebuilt = ok(&["rebuild", "--data", &data]);
    assert!(rebuilt.starts_with("rebuilt the views of 1 contracts from 9 events, every hash verified"), "{rebuilt}");
    assert_eq!(ok(&["report", "--data", &data, "--as-of", "2026-12-31", "--format", "json"]), portfolio);
}
