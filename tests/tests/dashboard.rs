//! The dashboard in a real browser (headless Chromium) against a real server: the numbers it
//! shows are the API's, an event appended through the API appears without a reload, a token
//! is asked for when the server has tokens and each role sees only what it may read. A
//! screenshot of each page is kept under `target/dashboard-screenshots/`.

use e2e::browser::{artifacts_dir, chromium, Browser};
use e2e::server::{colossus, event, eventually, Options, Server, Tokens};
use projections::report::group_thousands;
use serde_json::{json, Value};

const AS_OF: &str = "2026-12-31";

fn shown(amount: &Value, currency: &str) -> String {
    format!("{currency} {}", group_thousands(amount.as_str().unwrap_or_else(|| panic!("an amount: {amount}"))))
}

/// Waits until the page `page` has rendered (after a navigation or a change of date).
fn ready(browser: &mut Browser, page: &str, heading: &str) {
    browser.wait_for(
        &format!("the {page} page"),
        &format!(
            "(() => {{ const m = document.getElementById('main'); const h = m.querySelector('h2'); return m.dataset.page === {} && m.dataset.ready === 'true' && !!h && h.textContent.includes({}); }})()",
            json!(page),
            json!(heading)
        ),
    );
}

/// Signs in as `token` (kept in the session) and reloads the page at `hash`, waiting until
/// the new document is loaded: the old one still answers every check until it goes.
fn reload_as(browser: &mut Browser, token: &str, hash: &str) {
    browser.eval(&format!(
        "window.__cledgerOldDocument = true; sessionStorage.setItem('cledger-token', {}); location.hash = {}; location.reload()",
        json!(token),
        json!(hash)
    ));
    browser.wait_for("the reloaded page", "!window.__cledgerOldDocument && document.readyState === 'complete'");
}

fn go(browser: &mut Browser, hash: &str, page: &str, heading: &str) {
    browser.eval(&format!("location.hash = {}", json!(hash)));
    ready(browser, page, heading);
}

fn set_as_of(browser: &mut Browser, date: &str) {
    browser.eval(&format!(
        "(() => {{ const i = document.getElementById('as-of'); i.value = {}; i.dispatchEvent(new Event('change')); }})()",
        json!(date)
    ));
}

#[test]
fn the_pages_show_the_apis_numbers_and_follow_the_ledger_live() {
    let Some(chromium) = chromium() else { return };
    let server = Server::with(Options { demo: true, ..Options::default() });
    let url = format!("dashboard: http://127.0.0.1:{}/", server.port);
    eventually("the dashboard's address on stdout", std::time::Duration::from_secs(10), || server.stdout.lock().unwrap().contains(&url).then_some(()));
    let shots = artifacts_dir();
    let mut browser = Browser::launch(&chromium, 1400, 1000);
    browser.navigate(&format!("{}/#/", server.base));
    ready(&mut browser, "portfolio", "Portfolio");
    set_as_of(&mut browser, AS_OF);
    ready(&mut browser, "portfolio", &format!("Portfolio as of {AS_OF}"));

    // Portfolio: every total of every currency, every contract row, and revenue per quarter.
    let p = server.get_json(&format!("/v1/portfolio?as_of={AS_OF}&granularity=quarter"));
    let totals = p["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 5, "{p}");
    let mut compared = 0;
    for t in totals {
        let c = t["currency"].as_str().unwrap();
        for figure in ["headline", "transaction_price", "recognized", "rpo", "remaining_conditional", "forfeited", "cancelled", "billed", "collected", "receivable", "deferred_revenue", "contract_asset"] {
            assert_eq!(browser.field(&format!("total-{c}-{figure}")), shown(&t[figure], c), "{c} {figure}");
            compared += 1;
        }
        for q in t["periods"].as_array().unwrap() {
            assert_eq!(browser.field(&format!("period-{c}-{}", q["period"].as_str().unwrap())), shown(&q["recognized"], c));
            compared += 1;
        }
    }
    for row in p["contracts"].as_array().unwrap() {
        let (id, c) = (row["contract_id"].as_str().unwrap(), row["currency"].as_str().unwrap());
        for figure in ["headline", "recognized", "rpo", "remaining_conditional", "deferred_revenue", "contract_asset"] {
            assert_eq!(browser.field(&format!("contract-{id}-{figure}")), shown(&row[figure], c), "{id} {figure}");
            compared += 1;
        }
    }
    assert!(compared > 90, "{compared} numbers compared");
    assert_eq!(browser.field("total-USD-headline"), "USD 45,000,000,000.00");
    browser.screenshot(&shots, "portfolio");

    // A contract: figures, RPO split, periods, rollforward of the quarter, the chart.
    go(&mut browser, "#/contract/colossus-1", "contract", "colossus-1");
    let r = server.get_json(&format!("/v1/contracts/colossus-1/revenue?as_of={AS_OF}&granularity=quarter"));
    for figure in ["headline", "transaction_price", "recognized", "rpo", "remaining_conditional", "billed", "collected", "deferred_revenue", "contract_asset"] {
        assert_eq!(browser.field(&format!("figure-{figure}")), shown(&r[figure], "USD"), "{figure}");
    }
    for q in r["periods"].as_array().unwrap() {
        assert_eq!(browser.field(&format!("period-{}", q["period"].as_str().unwrap())), shown(&q["recognized"], "USD"));
    }
    let rpo = server.get_json(&format!("/v1/contracts/colossus-1/rpo?as_of={AS_OF}"));
    for key in ["rpo", "next_12_months", "thereafter"] {
        assert_eq!(browser.field(&format!("rpo-{key}")), shown(&rpo[key], "USD"), "{key}");
    }
    let rf = server.get_json(&format!("/v1/contracts/colossus-1/rollforward?from=2026-09-30&to={AS_OF}"));
    for balance in ["net_contract_position", "receivable", "rpo", "remaining_conditional"] {
        assert_eq!(browser.field(&format!("rf-{balance}-opening")), shown(&rf[balance]["opening"], "USD"));
        assert_eq!(browser.field(&format!("rf-{balance}-closing")), shown(&rf[balance]["closing"], "USD"));
        for (line, amount) in rf[balance]["movements"].as_object().unwrap() {
            assert_eq!(browser.field(&format!("rf-{balance}-{line}")), shown(amount, "USD"), "{balance} {line}");
        }
    }
    let series = browser.eval("[...document.querySelectorAll('svg[data-chart=\"colossus-1\"] polyline')].map(p => p.dataset.series)");
    assert_eq!(series, json!(["with-conditional", "scheduled-firm", "recognized"]));
    browser.screenshot(&shots, "contract");

    // The waterfall: every cell of every row and the totals.
    go(&mut browser, "#/waterfall", "waterfall", "Waterfall");
    let w = server.get_json(&format!("/v1/portfolio/waterfall?as_of={AS_OF}&granularity=quarter"));
    let columns: Vec<&str> = w["columns"].as_array().unwrap().iter().map(|c| c["period"].as_str().unwrap()).collect();
    for row in w["rows"].as_array().unwrap() {
        let (id, c) = (row["contract_id"].as_str().unwrap(), row["currency"].as_str().unwrap());
        for (period, amount) in columns.iter().zip(row["scheduled"].as_array().unwrap()) {
            assert_eq!(browser.field(&format!("wf-{id}-{period}")), shown(amount, c), "{id} {period}");
        }
        assert_eq!(browser.field(&format!("wf-{id}-rpo")), shown(&row["rpo"], c));
        assert_eq!(browser.field(&format!("wf-{id}-conditional")), shown(&row["remaining_conditional"], c));
    }
    for t in w["totals"].as_array().unwrap() {
        let c = t["currency"].as_str().unwrap();
        assert_eq!(browser.field(&format!("wf-total-{c}-rpo")), shown(&t["rpo"], c));
    }
    browser.screenshot(&shots, "waterfall");

    // The timeline: chain head, latest checkpoint, events; then a new event appears live.
    go(&mut browser, "#/timeline", "timeline", "Chain");
    browser.wait_for("the last demo event in the timeline", "!!document.querySelector('li[data-seq=\"20\"]')");
    assert_eq!(browser.field("head-seq"), "20");
    let checkpoint = server.get_json("/v1/checkpoints/latest");
    assert_eq!(browser.field("checkpoint-size"), checkpoint["tree_size"].to_string());
    // A marker that a reload would erase.
    browser.eval("window.__noReload = 'still here'");
    let milestone = event("colossus-1", "milestone_reached", "2027-07-15", json!({"milestone": "phase-2-delivery", "outcome": "achieved"}));
    assert_eq!(server.append_ok(&milestone)["seq"], 21);
    browser.wait_for("the appended event on the open page", "!!document.querySelector('li[data-seq=\"21\"]')");
    assert_eq!(browser.eval("window.__noReload"), json!("still here"), "the page was not reloaded");
    assert!(browser.field("head-seq").contains("21"));
    let text = browser.eval("document.querySelector('li[data-seq=\"21\"]').textContent");
    assert!(text.as_str().unwrap().contains("milestone_reached") && text.as_str().unwrap().contains("colossus-1"), "{text}");
    browser.screenshot(&shots, "timeline");

    // Figures follow the ledger too: the milestone moved 4.5B from conditional to the price.
    go(&mut browser, "#/", "portfolio", "Portfolio");
    set_as_of(&mut browser, "2027-12-31");
    ready(&mut browser, "portfolio", "Portfolio as of 2027-12-31");
    let p = server.get_json("/v1/portfolio?as_of=2027-12-31&granularity=quarter");
    let usd = p["totals"].as_array().unwrap().iter().find(|t| t["currency"] == "USD").unwrap();
    assert_eq!(browser.field("total-USD-transaction_price"), shown(&usd["transaction_price"], "USD"));
    assert_eq!(browser.field("total-USD-remaining_conditional"), "USD 0.00");
    assert!(browser.problems.is_empty(), "the page reported problems: {:?}", browser.problems);
}

#[test]
fn a_token_is_asked_for_and_each_role_sees_what_it_may_read() {
    let Some(chromium) = chromium() else { return };
    let tokens = Tokens::create();
    let server = Server::with(Options { tokens: Some(tokens.file.clone()), token: Some(tokens.admin.clone()), ..Options::default() });
    server.batch_ok(&colossus());
    // The page and its script are served with a restrictive policy.
    let page = server.as_token(None).get("/");
    assert_eq!(page.status, 200, "the page itself needs no token");
    let csp = page.header("content-security-policy").expect("a CSP");
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.header("x-content-type-options").as_deref(), Some("nosniff"));
    assert!(page.text.contains("<script src=\"/assets/app.js\""), "{}", page.text);
    assert!(!page.text.contains("<script>") && !page.text.contains("style="), "no inline script or style: {}", page.text);
    let script = server.as_token(None).get("/assets/app.js");
    assert_eq!((script.status, script.header("x-content-type-options").as_deref()), (200, Some("nosniff")));
    assert!(script.header("content-type").unwrap().starts_with("text/javascript"));

    let shots = artifacts_dir();
    let mut browser = Browser::launch(&chromium, 1200, 900);
    browser.navigate(&format!("{}/#/", server.base));
    browser.wait_for("the token prompt", "document.getElementById('main').dataset.page === 'token' && !document.getElementById('token-panel').hidden");
    browser.screenshot(&shots, "token");
    let sign_in = |browser: &mut Browser, token: &str| {
        browser.eval(&format!(
            "(() => {{ document.getElementById('token-input').value = {}; document.getElementById('token-form').requestSubmit(); }})()",
            json!(token)
        ));
    };
    sign_in(&mut browser, "not-a-token");
    browser.wait_for("the refusal", "document.getElementById('token-error').textContent.includes('refused')");

    // Finance: figures, no chain or timeline (those are the auditor's).
    sign_in(&mut browser, &tokens.finance);
    ready(&mut browser, "portfolio", "Portfolio");
    let hidden = |browser: &mut Browser, selector: &str| browser.eval(&format!("document.querySelector({}).hidden", json!(selector)));
    assert_eq!(hidden(&mut browser, "[data-page-link=timeline]"), json!(true));
    assert_eq!(hidden(&mut browser, "#chain-status"), json!(true));
    assert_eq!(hidden(&mut browser, "[data-page-link=waterfall]"), json!(false));

    // Auditor: reads figures and reports too (read-only), and the chain.
    reload_as(&mut browser, &tokens.auditor, "#/");
    ready(&mut browser, "portfolio", "Portfolio");
    assert_eq!(hidden(&mut browser, "[data-page-link=timeline]"), json!(false));
    go(&mut browser, "#/timeline", "timeline", "Chain");
    browser.wait_for("the events", "!!document.querySelector('li[data-seq=\"9\"]')");

    // Writer: nothing to read.
    reload_as(&mut browser, &tokens.writer, "#/");
    browser.wait_for("the refusal", "document.getElementById('main').dataset.page === 'forbidden'");
    assert_eq!(hidden(&mut browser, "[data-page-link=portfolio]"), json!(true));
    // The failed sign-in above logged its 401s; nothing else may have gone wrong.
    let unexpected: Vec<&String> = browser.problems.iter().filter(|p| !p.contains("401") && !p.contains("403")).collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
}
