//! What a [`BillingState`] costs in memory, counted with the allocator: the bench's
//! contracts (an invoice and its payment, over and over) at about 30 bytes an invoice or
//! payment (30.5 when written), against about 130 for a [`ContractState`]. A bound, so that a
//! change that makes it grow (a second copy of each id, say) fails here.

use events::{Proposal, Timestamp};
use projections::{BillingState, Book};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_billing_state_is_a_fraction_of_its_state() {
    let mut book = Book::new();
    let mut seq = 0;
    let mut propose = |book: &mut Book, json: String| {
        seq += 1;
        book.propose(&Proposal::parse_json(json.as_bytes()).unwrap(), "bench", Timestamp(2_208_988_800_000_000 + seq * 1_000_000)).unwrap();
    };
    propose(&mut book, r#"{"contract_id":"c000001","type":"lease_granted","effective_date":"2026-05-01","data":{"provider":"Neocloud","customer":"Lab 1","currency":"USD","term":{"start":"2026-06-01","end":"2029-06-01"},"cluster":{"site":"s","gpu_model":"H100","gpus":1024},"headline":"45000000.00","tranches":[{"id":"base","amount":"45000000.00","window":{"start":"2026-06-01","end":"2029-06-01"},"firm":true}]}}"#.into());
    // The bench's ids: a global counter, so ids of 5 to 8 characters.
    let events = 2_000;
    for n in 0..events / 2 {
        let id = 1_000_000 + n * 7;
        propose(&mut book, format!(r#"{{"contract_id":"c000001","type":"invoice_issued","effective_date":"2026-06-01","data":{{"invoice_id":"I{id}","amount":"1000.00","due_date":"2026-06-28"}}}}"#));
        propose(&mut book, format!(r#"{{"contract_id":"c000001","type":"payment_received","effective_date":"2026-06-15","data":{{"payment_id":"P{id}","amount":"1000.00","invoice_id":"I{id}"}}}}"#));
    }
    let state = book.contracts.values().next().unwrap();
    let before = LIVE_BYTES.load(Ordering::SeqCst);
    let billing = BillingState::of(state).unwrap();
    let billing_bytes = LIVE_BYTES.load(Ordering::SeqCst) - before;
    let before = LIVE_BYTES.load(Ordering::SeqCst);
    let copy = state.clone();
    let state_bytes = LIVE_BYTES.load(Ordering::SeqCst) - before;
    // Tenths of a byte per event: integers, as everything near money in this crate.
    let tenths_per_event = |bytes: isize| bytes * 10 / events as isize;
    let (billing_tenths, state_tenths) = (tenths_per_event(billing_bytes), tenths_per_event(state_bytes));
    eprintln!(
        "per invoice or payment: billing state {}.{} bytes, state {}.{} bytes",
        billing_tenths / 10,
        billing_tenths % 10,
        state_tenths / 10,
        state_tenths % 10
    );
    assert_eq!(billing.len(), events as usize);
    assert!(billing_bytes <= 36 * events as isize, "a billing state takes {}.{} bytes an event", billing_tenths / 10, billing_tenths % 10);
    assert!(billing_bytes * 3 < state_bytes, "a billing state is a fraction of its state");
    drop(copy);
}
