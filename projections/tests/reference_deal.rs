//! The reference deal of SPEC section 1, over its whole three-year term: every quarter end's
//! figures and the quarterly revenue, against numbers computed by hand from SPEC section 4.
//!
//! The deal (USD, amounts below in cents):
//! - granted 2026-05-01, term [2026-06-01, 2029-06-01), headline 45,000,000,000.00;
//! - tranche `base`: 40,500,000,000.00 = 4_050_000_000_000 firm over [2026-06-01, 2029-06-01),
//!   N = 365 + 365 + 366 (2028 is a leap year) = 1096 days;
//! - tranche `expansion`: 4,500,000,000.00 = 450_000_000_000 over [2027-06-01, 2029-06-01),
//!   N = 365 + 366 = 731 days, conditional on `phase-2-delivery`, achieved 2027-07-15 (after its
//!   window began: a catch-up of the 45 days 06-01 .. 07-15 on that day);
//! - a capacity increase of +750,000,000.00 = 75_000_000_000 (+20,000 GPUs) effective
//!   2027-01-01: a firm tranche over [2027-01-01, 2029-06-01), N = 365 + 366 + 151 = 882 days;
//! - twelve invoices of 3,750,000,000.00 = 375_000_000_000, one on the first day of each quarter
//!   of service (2026-06-01, 09-01, 12-01, 2027-03-01, ..., 2029-03-01), due 30 days later, and
//!   one of 750,000,000.00 for the capacity increase on 2027-01-01 (paid 2027-01-31);
//! - every invoice paid in full on its due date, except INV-05 (2027-06-01, due 07-01): half
//!   (187_500_000_000) on 2027-07-01 and half on 2027-10-15. Several due dates fall on a quarter
//!   end (2026-12-31, 2027-03-31, 2027-12-31, 2028-03-31...): D is inclusive, they count.
//! - no termination, no credit.
//!
//! Revenue of a counted tranche at D: floor(amount * E / N), E = days of its window <= D.

use events::{Currency, Date, Proposal, Timestamp, format_minor_units};
use projections::{AsOf, Book, ContractState, Figures, Granularity, report};

const CONTRACT: &str = "colossus-ref";

fn d(text: &str) -> Date {
    Date::parse(text).unwrap()
}

fn usd(cents: i128) -> String {
    format_minor_units(cents, Currency::from_code("USD").unwrap())
}

/// The deal's events, in effective-date order (the grant first).
fn events() -> Vec<(Date, String)> {
    let e = |kind: &str, date: &str, data: String| {
        (
            d(date),
            format!(r#"{{"contract_id": "{CONTRACT}", "type": "{kind}", "effective_date": "{date}", "data": {data}}}"#),
        )
    };
    let mut out = vec![e(
        "lease_granted",
        "2026-05-01",
        r#"{"provider": "Neocloud Provider", "customer": "Frontier Lab", "currency": "USD",
            "term": {"start": "2026-06-01", "end": "2029-06-01"},
            "cluster": {"site": "memphis-1", "gpu_model": "H100", "gpus": 230000},
            "headline": "45000000000.00",
            "tranches": [
              {"id": "base", "amount": "40500000000.00", "window": {"start": "2026-06-01", "end": "2029-06-01"}, "firm": true},
              {"id": "expansion", "amount": "4500000000.00", "window": {"start": "2027-06-01", "end": "2029-06-01"}, "milestone": "phase-2-delivery"}]}"#
            .to_string(),
    )];
    let issues = [
        "2026-06-01",
        "2026-09-01",
        "2026-12-01",
        "2027-03-01",
        "2027-06-01",
        "2027-09-01",
        "2027-12-01",
        "2028-03-01",
        "2028-06-01",
        "2028-09-01",
        "2028-12-01",
        "2029-03-01",
    ];
    for (i, issued) in issues.iter().enumerate() {
        let n = i + 1;
        let due = d(issued).add_days(30).unwrap().to_string();
        out.push(e(
            "invoice_issued",
            issued,
            format!(r#"{{"invoice_id": "INV-{n:02}", "amount": "3750000000.00", "due_date": "{due}"}}"#),
        ));
        if n == 5 {
            out.push(e(
                "payment_received",
                &due,
                r#"{"payment_id": "PAY-05a", "amount": "1875000000.00", "invoice_id": "INV-05"}"#.to_string(),
            ));
            // Fewer decimals than the currency's are fine on input.
            out.push(e(
                "payment_received",
                "2027-10-15",
                r#"{"payment_id": "PAY-05b", "amount": "1875000000", "invoice_id": "INV-05"}"#.to_string(),
            ));
        } else {
            out.push(e(
                "payment_received",
                &due,
                format!(r#"{{"payment_id": "PAY-{n:02}", "amount": "3750000000.00", "invoice_id": "INV-{n:02}"}}"#),
            ));
        }
    }
    out.push(e(
        "capacity_changed",
        "2027-01-01",
        r#"{"gpus_delta": 20000, "amount_delta": "750000000.00"}"#.to_string(),
    ));
    out.push(e(
        "invoice_issued",
        "2027-01-01",
        r#"{"invoice_id": "INV-CAP", "amount": "750000000.00", "due_date": "2027-01-31"}"#.to_string(),
    ));
    out.push(e(
        "payment_received",
        "2027-01-31",
        r#"{"payment_id": "PAY-CAP", "amount": "750000000.00", "invoice_id": "INV-CAP"}"#.to_string(),
    ));
    out.push(e(
        "milestone_reached",
        "2027-07-15",
        r#"{"milestone": "phase-2-delivery", "outcome": "achieved"}"#.to_string(),
    ));
    // Stable: the grant (earliest) stays first; same-day events keep the order above.
    out.sort_by_key(|(date, _)| *date);
    out
}

/// The book of the deal, and the seq of the milestone's resolution.
fn deal() -> (Book, u64) {
    let mut book = Book::new();
    let mut milestone_seq = 0;
    for (i, (_, json)) in events().iter().enumerate() {
        let proposal = Proposal::parse_json(json.as_bytes()).unwrap_or_else(|r| panic!("{json}: {r}"));
        let recorded = book
            .propose(
                &proposal,
                "finance@provider.example",
                Timestamp(2_208_988_800_000_000 + i as i64),
            )
            .unwrap_or_else(|r| panic!("refused: {json}: {r}"));
        if json.contains("milestone_reached") {
            milestone_seq = recorded.event.seq;
        }
    }
    (book, milestone_seq)
}

fn state(book: &Book) -> &ContractState {
    book.contracts.values().next().expect("the deal's contract")
}

struct Row {
    date: &'static str,
    headline: i128,
    transaction_price: i128,
    recognized: i128,
    rpo: i128,
    remaining_conditional: i128,
    billed: i128,
    collected: i128,
    deferred_revenue: i128,
    contract_asset: i128,
}

/// Every quarter end from 2026-06-30 to 2029-06-30, computed by hand (cents).
/// Before 2027-01-01 the capacity change does not count: headline 4_500_000_000_000, price
/// 4_050_000_000_000 (base only; expansion pending: remaining_conditional 450_000_000_000).
/// From 2027-01-01: headline 4_575_000_000_000, price 4_125_000_000_000. From 2027-07-15: price
/// 4_575_000_000_000, nothing conditional. deferred = max(0, billed - recognized),
/// contract asset = max(0, recognized - billed).
#[rustfmt::skip]
const QUARTER_ENDS: [Row; 13] = [
    // 2026-06-30:
    //   base: E=30 N=1096 amount*E=121_500_000_000_000 floor=110_857_664_233
    //   capacity: not effective yet (2027-01-01)
    //   expansion: pending (achieved 2027-07-15)
    //   recognized = 110_857_664_233; price = 4_050_000_000_000; rpo = 3_939_142_335_767; invoices issued: 1
    //   billed = 375_000_000_000; collected = 0
    Row { date: "2026-06-30", headline: 4_500_000_000_000, transaction_price: 4_050_000_000_000, recognized: 110_857_664_233, rpo: 3_939_142_335_767, remaining_conditional: 450_000_000_000, billed: 375_000_000_000, collected: 0, deferred_revenue: 264_142_335_767, contract_asset: 0 },
    // 2026-09-30:
    //   base: E=122 N=1096 amount*E=494_100_000_000_000 floor=450_821_167_883
    //   capacity: not effective yet (2027-01-01)
    //   expansion: pending (achieved 2027-07-15)
    //   recognized = 450_821_167_883; price = 4_050_000_000_000; rpo = 3_599_178_832_117; invoices issued: 2
    //   billed = 750_000_000_000; collected = 375_000_000_000
    Row { date: "2026-09-30", headline: 4_500_000_000_000, transaction_price: 4_050_000_000_000, recognized: 450_821_167_883, rpo: 3_599_178_832_117, remaining_conditional: 450_000_000_000, billed: 750_000_000_000, collected: 375_000_000_000, deferred_revenue: 299_178_832_117, contract_asset: 0 },
    // 2026-12-31:
    //   base: E=214 N=1096 amount*E=866_700_000_000_000 floor=790_784_671_532
    //   capacity: not effective yet (2027-01-01)
    //   expansion: pending (achieved 2027-07-15)
    //   recognized = 790_784_671_532; price = 4_050_000_000_000; rpo = 3_259_215_328_468; invoices issued: 3
    //   billed = 1_125_000_000_000; collected = 1_125_000_000_000
    Row { date: "2026-12-31", headline: 4_500_000_000_000, transaction_price: 4_050_000_000_000, recognized: 790_784_671_532, rpo: 3_259_215_328_468, remaining_conditional: 450_000_000_000, billed: 1_125_000_000_000, collected: 1_125_000_000_000, deferred_revenue: 334_215_328_468, contract_asset: 0 },
    // 2027-03-31:
    //   base: E=304 N=1096 amount*E=1_231_200_000_000_000 floor=1_123_357_664_233
    //   capacity: E=90 N=882 amount*E=6_750_000_000_000 floor=7_653_061_224
    //   expansion: pending (achieved 2027-07-15)
    //   recognized = 1_131_010_725_457; price = 4_125_000_000_000; rpo = 2_993_989_274_543; invoices issued: 4
    //   billed = 1_575_000_000_000; collected = 1_575_000_000_000
    Row { date: "2027-03-31", headline: 4_575_000_000_000, transaction_price: 4_125_000_000_000, recognized: 1_131_010_725_457, rpo: 2_993_989_274_543, remaining_conditional: 450_000_000_000, billed: 1_575_000_000_000, collected: 1_575_000_000_000, deferred_revenue: 443_989_274_543, contract_asset: 0 },
    // 2027-06-30:
    //   base: E=395 N=1096 amount*E=1_599_750_000_000_000 floor=1_459_625_912_408
    //   capacity: E=181 N=882 amount*E=13_575_000_000_000 floor=15_391_156_462
    //   expansion: pending (achieved 2027-07-15)
    //   recognized = 1_475_017_068_870; price = 4_125_000_000_000; rpo = 2_649_982_931_130; invoices issued: 5
    //   billed = 1_950_000_000_000; collected = 1_575_000_000_000
    Row { date: "2027-06-30", headline: 4_575_000_000_000, transaction_price: 4_125_000_000_000, recognized: 1_475_017_068_870, rpo: 2_649_982_931_130, remaining_conditional: 450_000_000_000, billed: 1_950_000_000_000, collected: 1_575_000_000_000, deferred_revenue: 474_982_931_130, contract_asset: 0 },
    // 2027-09-30:
    //   base: E=487 N=1096 amount*E=1_972_350_000_000_000 floor=1_799_589_416_058
    //   capacity: E=273 N=882 amount*E=20_475_000_000_000 floor=23_214_285_714
    //   expansion: E=122 N=731 amount*E=54_900_000_000_000 floor=75_102_599_179
    //   recognized = 1_897_906_300_951; price = 4_575_000_000_000; rpo = 2_677_093_699_049; invoices issued: 6
    //   billed = 2_325_000_000_000; collected = 1_762_500_000_000
    Row { date: "2027-09-30", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 1_897_906_300_951, rpo: 2_677_093_699_049, remaining_conditional: 0, billed: 2_325_000_000_000, collected: 1_762_500_000_000, deferred_revenue: 427_093_699_049, contract_asset: 0 },
    // 2027-12-31:
    //   base: E=579 N=1096 amount*E=2_344_950_000_000_000 floor=2_139_552_919_708
    //   capacity: E=365 N=882 amount*E=27_375_000_000_000 floor=31_037_414_965
    //   expansion: E=214 N=731 amount*E=96_300_000_000_000 floor=131_737_346_101
    //   recognized = 2_302_327_680_774; price = 4_575_000_000_000; rpo = 2_272_672_319_226; invoices issued: 7
    //   billed = 2_700_000_000_000; collected = 2_700_000_000_000
    Row { date: "2027-12-31", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 2_302_327_680_774, rpo: 2_272_672_319_226, remaining_conditional: 0, billed: 2_700_000_000_000, collected: 2_700_000_000_000, deferred_revenue: 397_672_319_226, contract_asset: 0 },
    // 2028-03-31:
    //   base: E=670 N=1096 amount*E=2_713_500_000_000_000 floor=2_475_821_167_883
    //   capacity: E=456 N=882 amount*E=34_200_000_000_000 floor=38_775_510_204
    //   expansion: E=305 N=731 amount*E=137_250_000_000_000 floor=187_756_497_948
    //   recognized = 2_702_353_176_035; price = 4_575_000_000_000; rpo = 1_872_646_823_965; invoices issued: 8
    //   billed = 3_075_000_000_000; collected = 3_075_000_000_000
    Row { date: "2028-03-31", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 2_702_353_176_035, rpo: 1_872_646_823_965, remaining_conditional: 0, billed: 3_075_000_000_000, collected: 3_075_000_000_000, deferred_revenue: 372_646_823_965, contract_asset: 0 },
    // 2028-06-30:
    //   base: E=761 N=1096 amount*E=3_082_050_000_000_000 floor=2_812_089_416_058
    //   capacity: E=547 N=882 amount*E=41_025_000_000_000 floor=46_513_605_442
    //   expansion: E=396 N=731 amount*E=178_200_000_000_000 floor=243_775_649_794
    //   recognized = 3_102_378_671_294; price = 4_575_000_000_000; rpo = 1_472_621_328_706; invoices issued: 9
    //   billed = 3_450_000_000_000; collected = 3_075_000_000_000
    Row { date: "2028-06-30", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 3_102_378_671_294, rpo: 1_472_621_328_706, remaining_conditional: 0, billed: 3_450_000_000_000, collected: 3_075_000_000_000, deferred_revenue: 347_621_328_706, contract_asset: 0 },
    // 2028-09-30:
    //   base: E=853 N=1096 amount*E=3_454_650_000_000_000 floor=3_152_052_919_708
    //   capacity: E=639 N=882 amount*E=47_925_000_000_000 floor=54_336_734_693
    //   expansion: E=488 N=731 amount*E=219_600_000_000_000 floor=300_410_396_716
    //   recognized = 3_506_800_051_117; price = 4_575_000_000_000; rpo = 1_068_199_948_883; invoices issued: 10
    //   billed = 3_825_000_000_000; collected = 3_450_000_000_000
    Row { date: "2028-09-30", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 3_506_800_051_117, rpo: 1_068_199_948_883, remaining_conditional: 0, billed: 3_825_000_000_000, collected: 3_450_000_000_000, deferred_revenue: 318_199_948_883, contract_asset: 0 },
    // 2028-12-31:
    //   base: E=945 N=1096 amount*E=3_827_250_000_000_000 floor=3_492_016_423_357
    //   capacity: E=731 N=882 amount*E=54_825_000_000_000 floor=62_159_863_945
    //   expansion: E=580 N=731 amount*E=261_000_000_000_000 floor=357_045_143_638
    //   recognized = 3_911_221_430_940; price = 4_575_000_000_000; rpo = 663_778_569_060; invoices issued: 11
    //   billed = 4_200_000_000_000; collected = 4_200_000_000_000
    Row { date: "2028-12-31", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 3_911_221_430_940, rpo: 663_778_569_060, remaining_conditional: 0, billed: 4_200_000_000_000, collected: 4_200_000_000_000, deferred_revenue: 288_778_569_060, contract_asset: 0 },
    // 2029-03-31:
    //   base: E=1035 N=1096 amount*E=4_191_750_000_000_000 floor=3_824_589_416_058
    //   capacity: E=821 N=882 amount*E=61_575_000_000_000 floor=69_812_925_170
    //   expansion: E=670 N=731 amount*E=301_500_000_000_000 floor=412_448_700_410
    //   recognized = 4_306_851_041_638; price = 4_575_000_000_000; rpo = 268_148_958_362; invoices issued: 12
    //   billed = 4_575_000_000_000; collected = 4_575_000_000_000
    Row { date: "2029-03-31", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 4_306_851_041_638, rpo: 268_148_958_362, remaining_conditional: 0, billed: 4_575_000_000_000, collected: 4_575_000_000_000, deferred_revenue: 268_148_958_362, contract_asset: 0 },
    // 2029-06-30:
    //   base: E=1096 N=1096 amount*E=4_438_800_000_000_000 floor=4_050_000_000_000
    //   capacity: E=882 N=882 amount*E=66_150_000_000_000 floor=75_000_000_000
    //   expansion: E=731 N=731 amount*E=328_950_000_000_000 floor=450_000_000_000
    //   recognized = 4_575_000_000_000; price = 4_575_000_000_000; rpo = 0; invoices issued: 12
    //   billed = 4_575_000_000_000; collected = 4_575_000_000_000
    Row { date: "2029-06-30", headline: 4_575_000_000_000, transaction_price: 4_575_000_000_000, recognized: 4_575_000_000_000, rpo: 0, remaining_conditional: 0, billed: 4_575_000_000_000, collected: 4_575_000_000_000, deferred_revenue: 0, contract_asset: 0 },
];

/// Quarterly revenue = recognized(quarter end) - recognized(previous quarter end), from 2026-Q2
/// (the quarter of the grant, 2026-05-01): the differences of the `recognized` column above.
/// They add up to 4_575_000_000_000 (the whole transaction price) at 2029-06-30.
#[rustfmt::skip]
const QUARTERS: [(&str, i128); 13] = [
    ("2026-Q2", 110_857_664_233),
    ("2026-Q3", 339_963_503_650),
    ("2026-Q4", 339_963_503_649),
    ("2027-Q1", 340_226_053_925),
    ("2027-Q2", 344_006_343_413),
    ("2027-Q3", 422_889_232_081),
    ("2027-Q4", 404_421_379_823),
    ("2028-Q1", 400_025_495_261),
    ("2028-Q2", 400_025_495_259),
    ("2028-Q3", 404_421_379_823),
    ("2028-Q4", 404_421_379_823),
    ("2029-Q1", 395_629_610_698),
    ("2029-Q2", 268_148_958_362),
];

fn figures_row(f: &Figures) -> [(&'static str, i128); 9] {
    [
        ("headline", f.headline),
        ("transaction_price", f.transaction_price),
        ("recognized", f.recognized),
        ("rpo", f.rpo),
        ("remaining_conditional", f.remaining_conditional),
        ("billed", f.billed),
        ("collected", f.collected),
        ("deferred_revenue", f.deferred_revenue),
        ("contract_asset", f.contract_asset),
    ]
}

#[test]
fn every_quarter_end_matches_the_hand_computation() {
    let (book, _) = deal();
    let state = state(&book);
    let mut mismatches = vec![];
    for row in &QUARTER_ENDS {
        let f = state.figures(&AsOf::date(d(row.date))).unwrap();
        let expected = [
            ("headline", row.headline),
            ("transaction_price", row.transaction_price),
            ("recognized", row.recognized),
            ("rpo", row.rpo),
            ("remaining_conditional", row.remaining_conditional),
            ("billed", row.billed),
            ("collected", row.collected),
            ("deferred_revenue", row.deferred_revenue),
            ("contract_asset", row.contract_asset),
        ];
        for ((name, want), (_, got)) in expected.iter().zip(figures_row(&f)) {
            if *want != got {
                mismatches.push(format!(
                    "{} {name}: expected {}, got {}",
                    row.date,
                    usd(*want),
                    usd(got)
                ));
            }
        }
        // Nothing is forfeited, cancelled, credited or charged as a fee in this deal.
        assert_eq!(
            (f.forfeited, f.cancelled, f.credits, f.fees),
            (0, 0, 0, 0),
            "{}",
            row.date
        );
        assert_eq!(f.receivable, row.billed - row.collected, "{}", row.date);
        assert_eq!(
            f.headline + f.fees - f.credits,
            f.transaction_price + f.remaining_conditional + f.forfeited + f.cancelled,
            "identity at {}",
            row.date
        );
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn quarterly_revenue_matches_the_hand_computation() {
    let (book, _) = deal();
    let state = state(&book);
    let at = AsOf::date(d("2029-06-30"));
    let periods = state.periods(&at, Granularity::Quarter).unwrap();
    let got: Vec<(String, String)> = periods.iter().map(|p| (p.period.to_string(), usd(p.recognized))).collect();
    let want: Vec<(String, String)> = QUARTERS.iter().map(|(q, v)| (q.to_string(), usd(*v))).collect();
    assert_eq!(got, want);
    assert_eq!(QUARTERS.iter().map(|(_, v)| v).sum::<i128>(), 4_575_000_000_000);
    // Cut at each quarter end, the periods are the prefix of the same list.
    for (i, row) in QUARTER_ENDS.iter().enumerate() {
        let periods = state.periods(&AsOf::date(d(row.date)), Granularity::Quarter).unwrap();
        let got: Vec<(String, String)> = periods.iter().map(|p| (p.period.to_string(), usd(p.recognized))).collect();
        assert_eq!(got, want[..=i].to_vec(), "quarters cut at {}", row.date);
    }
    // Months from 2026-05 to 2029-06 (38 of them) add up to the same total.
    let months = state.periods(&at, Granularity::Month).unwrap();
    assert_eq!(months.len(), 38);
    assert_eq!((months[0].period.to_string().as_str(), months[0].recognized), ("2026-05", 0));
    assert_eq!(months.iter().map(|p| p.recognized).sum::<i128>(), 4_575_000_000_000);
    // June 2026 alone: base E = 30 -> 110_857_664_233, the whole of 2026-Q2.
    assert_eq!(
        (months[1].period.to_string().as_str(), months[1].recognized),
        ("2026-06", 110_857_664_233)
    );
}

#[test]
fn the_milestone_catches_up_on_the_day_it_is_achieved() {
    let (book, milestone_seq) = deal();
    let state = state(&book);
    let rec = |date: &str| state.figures(&AsOf::date(d(date))).unwrap().recognized;
    // 2027-07-14: base E = 409: 4_050_000_000_000 * 409 = 1_656_450_000_000_000 / 1096 -> 1_511_359_489_051;
    //   capacity E = 195: 75_000_000_000 * 195 = 14_625_000_000_000 / 882 -> 16_581_632_653.
    assert_eq!(rec("2027-07-14"), 1_511_359_489_051 + 16_581_632_653);
    // 2027-07-15: base E = 410 -> 1_515_054_744_525 (+3_695_255_474); capacity E = 196 ->
    //   16_666_666_666 (+85_034_013); expansion E = 45: 450_000_000_000 * 45 = 20_250_000_000_000
    //   / 731 -> 27_701_778_385, all on that day: 31_482_067_872 in one day.
    assert_eq!(rec("2027-07-15"), 1_515_054_744_525 + 16_666_666_666 + 27_701_778_385);
    assert_eq!(rec("2027-07-15") - rec("2027-07-14"), 31_482_067_872);
    // 2027-09-30 known before the milestone's seq: expansion pending; recognized
    //   1_897_906_300_951 - 75_102_599_179 = 1_822_803_701_772; price 4_125_000_000_000.
    let before = state
        .figures(&AsOf {
            date: d("2027-09-30"),
            known_at: milestone_seq - 1,
        })
        .unwrap();
    assert_eq!(before.recognized, 1_822_803_701_772);
    assert_eq!(before.transaction_price, 4_125_000_000_000);
    assert_eq!(before.remaining_conditional, 450_000_000_000);
    assert_eq!(before.rpo, 2_302_196_298_228);
}

#[test]
fn the_report_prints_the_last_quarter_end() {
    let (book, _) = deal();
    let state = state(&book);
    let json = report::revenue_json(state, &AsOf::date(d("2029-06-30")), Granularity::Quarter).unwrap();
    // Exactly the object of SPEC section 4's revenue example, in its order.
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "contract_id",
            "as_of",
            "known_at",
            "currency",
            "headline",
            "transaction_price",
            "recognized",
            "rpo",
            "remaining_conditional",
            "forfeited",
            "cancelled",
            "billed",
            "collected",
            "receivable",
            "deferred_revenue",
            "contract_asset",
            "periods"
        ]
    );
    assert_eq!(json["contract_id"], CONTRACT);
    assert_eq!(json["as_of"], "2029-06-30");
    assert_eq!(json["currency"], "USD");
    assert_eq!(json["headline"], "45750000000.00");
    assert_eq!(json["transaction_price"], "45750000000.00");
    assert_eq!(json["recognized"], "45750000000.00");
    assert_eq!(json["rpo"], "0.00");
    assert_eq!(json["remaining_conditional"], "0.00");
    assert_eq!(json["billed"], "45750000000.00");
    assert_eq!(json["receivable"], "0.00");
    assert_eq!(json["periods"][0]["period"], "2026-Q2");
    assert_eq!(json["periods"][0]["recognized"], "1108576642.33");
    assert_eq!(json["periods"][12]["period"], "2029-Q2");
    assert_eq!(json["periods"][12]["recognized"], "2681489583.62");
    let june_2026 = report::revenue_json(state, &AsOf::date(d("2026-06-30")), Granularity::Month).unwrap();
    assert_eq!(june_2026["recognized"], "1108576642.33");
    assert_eq!(june_2026["deferred_revenue"], "2641423357.67");
    assert_eq!(june_2026["remaining_conditional"], "4500000000.00");
}
