//! Canonical bytes: round trips, the fixed prefix, and refusal of every non-canonical form.

use events::*;
use proptest::prelude::*;

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(Currency::all().collect::<Vec<_>>())
}

fn date() -> impl Strategy<Value = Date> {
    (1i16..=9999, 1i8..=12, 1i8..=28).prop_map(|(y, m, d)| Date::new(y, m, d).unwrap())
}

fn window() -> impl Strategy<Value = Window> {
    (date(), date()).prop_map(|(a, b)| Window { start: a.min(b), end: a.max(b) })
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._%-]{1,40}|\\PC{1,8}"
}

fn money(c: Currency) -> impl Strategy<Value = Money> {
    (-MAX_ABS_MINOR_UNITS..=MAX_ABS_MINOR_UNITS).prop_map(move |m| Money::new(m, c).unwrap())
}

fn body(c: Currency) -> impl Strategy<Value = EventBody> {
    let tranche = (text(), money(c), window(), prop::option::of(text())).prop_map(|(id, amount, window, m)| Tranche {
        id,
        amount,
        window,
        condition: m.map_or(Condition::Firm, Condition::Milestone),
    });
    let grant = (text(), text(), window(), text(), text(), any::<u64>(), money(c), prop::collection::vec(tranche, 0..4))
        .prop_map(move |(provider, customer, term, site, gpu_model, gpus, headline, tranches)| {
            EventBody::LeaseGranted(LeaseGranted {
                provider,
                customer,
                currency: c,
                term,
                cluster: Cluster { site, gpu_model, gpus },
                headline,
                tranches,
            })
        });
    let outcome = prop::sample::select(vec![Outcome::Achieved, Outcome::Failed, Outcome::Waived]);
    prop_oneof![
        grant,
        (any::<i64>(), money(c)).prop_map(|(gpus_delta, amount_delta)| EventBody::CapacityChanged(CapacityChanged { gpus_delta, amount_delta })),
        (text(), outcome).prop_map(|(milestone, outcome)| EventBody::MilestoneReached(MilestoneReached { milestone, outcome })),
        (text(), money(c), date()).prop_map(|(invoice_id, amount, due_date)| EventBody::InvoiceIssued(InvoiceIssued { invoice_id, amount, due_date })),
        (text(), money(c), prop::option::of(text())).prop_map(|(payment_id, amount, invoice_id)| EventBody::PaymentReceived(PaymentReceived { payment_id, amount, invoice_id })),
        (money(c), text()).prop_map(|(amount, reason)| EventBody::SlaCreditIssued(SlaCreditIssued { amount, reason })),
        money(c).prop_map(|fee| EventBody::ContractTerminated(ContractTerminated { fee })),
        (any::<u64>(), text()).prop_map(|(target_seq, reason)| EventBody::EventReversed(EventReversed { target_seq, reason })),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let contract_event = (currency(), "[a-zA-Z0-9_-]{1,64}")
        .prop_flat_map(|(c, id)| (body(c), Just(Stream::Contract(ContractId::parse(&id).unwrap()))));
    let ledger_event = date().prop_map(|period_end| (EventBody::PeriodClosed(PeriodClosed { period_end }), Stream::Ledger));
    (
        prop_oneof![4 => contract_event, 1 => ledger_event],
        any::<[u8; 32]>(),
        1..=u64::MAX,
        1..=u64::MAX,
        date(),
        any::<i64>(),
        text(),
        prop::option::of("[!-~]{1,255}"),
    )
        .prop_map(|((body, stream), prev, seq, version, effective_date, micros, actor, idempotency_key)| Event {
            prev_hash: Digest(prev),
            seq,
            stream,
            version,
            effective_date,
            recorded_at: Timestamp(micros),
            actor,
            idempotency_key,
            body,
        })
}

fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_inverts_encode(e in event()) {
        let bytes = e.encode();
        prop_assert_eq!(Event::decode(&bytes), Ok(e.clone()));
        let recorded = RecordedEvent::from_canonical(bytes.clone()).unwrap();
        prop_assert_eq!(recorded.hash, Digest::of_event(&bytes));
        prop_assert_eq!(RecordedEvent::seal(e), recorded);
    }

    #[test]
    fn bytes_start_with_prev_hash_then_seq_then_format(e in event()) {
        let bytes = e.encode();
        prop_assert_eq!(&bytes[..32], &e.prev_hash.0[..]);
        let seq = leb128(e.seq);
        prop_assert_eq!(&bytes[32..32 + seq.len()], &seq[..]);
        prop_assert_eq!(bytes[32 + seq.len()], 1u8, "format 1 as a one-byte varint");
    }

    #[test]
    fn any_single_byte_change_is_refused_or_is_another_event(e in event(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut bytes = e.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        if let Ok(other) = Event::decode(&bytes) {
            prop_assert_ne!(other, e);
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused(e in event(), cut in any::<prop::sample::Index>(), extra in any::<u8>()) {
        let bytes = e.encode();
        let n = cut.index(bytes.len());
        prop_assert!(Event::decode(&bytes[..n]).is_err());
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(Event::decode(&longer), Err(DecodeError::TrailingBytes(1)));
    }
}

fn sample() -> Event {
    Event {
        prev_hash: Digest::ZERO,
        seq: 1,
        stream: Stream::Ledger,
        version: 1,
        effective_date: Date::parse("2026-06-30").unwrap(),
        recorded_at: Timestamp(0),
        actor: "a".into(),
        idempotency_key: None,
        body: EventBody::PeriodClosed(PeriodClosed { period_end: Date::parse("2026-06-30").unwrap() }),
    }
}

#[test]
fn overlong_varints_are_not_canonical() {
    let bytes = sample().encode();
    assert_eq!(bytes[32], 0x01, "seq 1");
    // seq 1 written in two bytes: 0x81 0x00 decodes to 1 in postcard, but is not canonical.
    let mut overlong = bytes[..32].to_vec();
    overlong.extend([0x81, 0x00]);
    overlong.extend(&bytes[33..]);
    assert_eq!(Event::decode(&overlong), Err(DecodeError::NotCanonical));
}

#[test]
fn unknown_formats_and_inconsistent_streams_are_refused() {
    let mut bytes = sample().encode();
    bytes[33] = 2;
    assert_eq!(Event::decode(&bytes), Err(DecodeError::UnknownFormat(2)));

    let mut e = sample();
    e.stream = Stream::Contract(ContractId::parse("c").unwrap());
    assert!(matches!(Event::decode(&e.encode()), Err(DecodeError::Inconsistent(_))));
    let mut e = sample();
    e.seq = 0;
    assert!(matches!(Event::decode(&e.encode()), Err(DecodeError::Inconsistent(_))));
}

#[test]
fn invalid_field_values_are_refused() {
    let bytes = sample().encode();
    // The effective date's month byte follows contract_id (None = 0x00) and version (0x01):
    // prefix 32 + seq 1 + format 1, then 0x00, 0x01, year (2 bytes), month, day.
    let month_at = 32 + 1 + 1 + 1 + 1 + 2;
    assert_eq!(bytes[month_at], 6);
    let mut bad = bytes.clone();
    bad[month_at] = 13;
    assert!(matches!(Event::decode(&bad), Err(DecodeError::Malformed(_))));
    let mut bad = bytes.clone();
    bad[32 + 1 + 1] = 2; // option tag 2
    assert!(matches!(Event::decode(&bad), Err(DecodeError::Malformed(_))));
}
