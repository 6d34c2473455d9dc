//! [`EventFacts`]: a contract's per-event facts ([`EventFact`]), keyed by seq, in 24 bytes
//! an event.
//!
//! A contract's events arrive in seq order and are only ever undone from the end (a
//! rollback), so the facts are a vector sorted by seq: lookups are binary searches,
//! appends and removals at the end are O(1). An [`EventFact`] held as it is took 64 bytes
//! with its key (its origin repeats the seq, and its `reversed_by` takes 24 bytes that
//! all but a few events leave empty): a third of a state's memory on the bench's
//! histories. Here an entry is the seq, the version, the date and the kind; the few
//! reversed events have their reversal in a side map.
//!
//! It serializes as the `BTreeMap<u64, EventFact>` it replaced, byte for byte (postcard: a
//! length, then key and value pairs), so persisted views keep their format; a stored map
//! whose facts this layout cannot hold (a fact whose origin is not at its key) does not
//! decode, and the view is rebuilt.

use crate::state::{EventFact, Origin};
use events::{Date, EventKind};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFacts {
    /// Strictly increasing by seq.
    entries: Vec<Entry>,
    /// The reversal of each reversed event, by the event's seq (every key is in `entries`).
    reversed: BTreeMap<u64, Origin>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    seq: u64,
    version: u64,
    date: Date,
    kind: EventKind,
}

impl EventFacts {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, seq: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&seq, |e| e.seq)
    }

    fn fact(&self, entry: &Entry) -> EventFact {
        EventFact {
            kind: entry.kind,
            version: entry.version,
            origin: Origin { seq: entry.seq, date: entry.date },
            reversed_by: if self.reversed.is_empty() { None } else { self.reversed.get(&entry.seq).copied() },
        }
    }

    /// Inserts or replaces the fact of the event at `fact.origin.seq`. O(1) for a seq above
    /// every other (the fold's case).
    pub fn insert(&mut self, fact: EventFact) {
        let seq = fact.origin.seq;
        let entry = Entry { seq, version: fact.version, date: fact.origin.date, kind: fact.kind };
        match fact.reversed_by {
            Some(by) => self.reversed.insert(seq, by),
            None => self.reversed.remove(&seq),
        };
        if self.entries.last().is_none_or(|last| last.seq < seq) {
            self.entries.push(entry);
            return;
        }
        match self.position(seq) {
            Ok(i) => self.entries[i] = entry,
            Err(i) => self.entries.insert(i, entry),
        }
    }

    pub fn get(&self, seq: &u64) -> Option<EventFact> {
        self.position(*seq).ok().map(|i| self.fact(&self.entries[i]))
    }

    pub fn contains_key(&self, seq: &u64) -> bool {
        self.position(*seq).is_ok()
    }

    /// Records (or with `None`, forgets) the reversal of the event at `seq`; false, and
    /// nothing changed, if there is no such event.
    pub fn set_reversed_by(&mut self, seq: u64, by: Option<Origin>) -> bool {
        if !self.contains_key(&seq) {
            return false;
        }
        match by {
            Some(by) => self.reversed.insert(seq, by),
            None => self.reversed.remove(&seq),
        };
        true
    }

    /// Removes the fact at `seq`. O(1) for the last (a rollback's case).
    pub fn remove(&mut self, seq: &u64) -> Option<EventFact> {
        let i = match self.entries.last() {
            Some(last) if last.seq == *seq => self.entries.len() - 1,
            _ => self.position(*seq).ok()?,
        };
        let fact = self.fact(&self.entries[i]);
        self.entries.remove(i);
        self.reversed.remove(seq);
        Some(fact)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, EventFact)> + ExactSizeIterator + '_ {
        self.entries.iter().map(|e| (e.seq, self.fact(e)))
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = EventFact> + ExactSizeIterator + '_ {
        self.entries.iter().map(|e| self.fact(e))
    }

    /// The facts whose seq is in `range`, in seq order.
    pub fn range<R: RangeBounds<u64>>(&self, range: R) -> impl DoubleEndedIterator<Item = (u64, EventFact)> + '_ {
        let start = match range.start_bound() {
            Bound::Included(s) => self.entries.partition_point(|e| e.seq < *s),
            Bound::Excluded(s) => self.entries.partition_point(|e| e.seq <= *s),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => self.entries.partition_point(|x| x.seq <= *e),
            Bound::Excluded(e) => self.entries.partition_point(|x| x.seq < *e),
            Bound::Unbounded => self.entries.len(),
        };
        self.entries[start..end.max(start)].iter().map(|e| (e.seq, self.fact(e)))
    }
}

impl Serialize for EventFacts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for EventFacts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventFacts, D::Error> {
        struct FactsVisitor;
        impl<'de> Visitor<'de> for FactsVisitor {
            type Value = EventFacts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of seqs in increasing order to the facts of their events")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventFacts, A::Error> {
                // The length is the decoder's claim: bound the first allocation by it, but not
                // beyond what any real contract holds at once.
                let mut facts = EventFacts { entries: Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16)), reversed: BTreeMap::new() };
                while let Some((seq, fact)) = map.next_entry::<u64, EventFact>()? {
                    if facts.entries.last().is_some_and(|last| last.seq >= seq) {
                        return Err(serde::de::Error::custom("seqs out of order"));
                    }
                    if fact.origin.seq != seq {
                        return Err(serde::de::Error::custom(format!("the fact at seq {seq} is of seq {}", fact.origin.seq)));
                    }
                    facts.insert(fact);
                }
                Ok(facts)
            }
        }
        deserializer.deserialize_map(FactsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(seq: u64, version: u64, reversed_by: Option<u64>) -> EventFact {
        let date = Date::new(2026, 1, (seq % 28 + 1) as i8).unwrap();
        EventFact { kind: EventKind::InvoiceIssued, version, origin: Origin { seq, date }, reversed_by: reversed_by.map(|s| Origin { seq: s, date }) }
    }

    #[test]
    fn behaves_as_a_btreemap_of_facts_and_encodes_as_one() {
        let mut ours = EventFacts::default();
        let mut theirs: BTreeMap<u64, EventFact> = BTreeMap::new();
        // Appends, an out-of-order insert, a replacement, removals at the end and inside.
        for f in [fact(3, 1, None), fact(5, 2, Some(9)), fact(9, 3, None), fact(4, 7, Some(12)), fact(5, 2, None), fact(12, 4, None), fact(13, 5, Some(14))] {
            ours.insert(f);
            theirs.insert(f.origin.seq, f);
        }
        assert_eq!(ours.remove(&12), theirs.remove(&12));
        assert_eq!(ours.remove(&4), theirs.remove(&4));
        assert_eq!(ours.remove(&100), theirs.remove(&100));
        assert!(ours.set_reversed_by(9, Some(Origin { seq: 20, date: Date::new(2026, 3, 1).unwrap() })));
        theirs.get_mut(&9).unwrap().reversed_by = Some(Origin { seq: 20, date: Date::new(2026, 3, 1).unwrap() });
        assert!(!ours.set_reversed_by(6, None), "no event 6");
        for seq in 0..15 {
            assert_eq!(ours.get(&seq).as_ref(), theirs.get(&seq), "{seq}");
            assert_eq!(ours.contains_key(&seq), theirs.contains_key(&seq), "{seq}");
        }
        let collect = |m: &EventFacts| m.iter().collect::<Vec<_>>();
        assert_eq!(collect(&ours), theirs.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        assert_eq!(ours.values().collect::<Vec<_>>(), theirs.values().copied().collect::<Vec<_>>());
        for (a, b) in [(0, 20), (4, 9), (5, 5), (6, 4), (9, 100)] {
            let theirs_range = |r: std::ops::RangeInclusive<u64>| theirs.range(r).map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
            assert_eq!(ours.range(a..=b).collect::<Vec<_>>(), theirs_range(a..=b.max(a)), "{a}..={b}");
        }
        assert_eq!(ours.range(..=5).next_back(), theirs.range(..=5).next_back().map(|(k, v)| (*k, *v)));
        let bytes = postcard::to_stdvec(&ours).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&theirs).unwrap(), "the same bytes as the BTreeMap");
        assert_eq!(postcard::from_bytes::<EventFacts>(&bytes).unwrap(), ours);
        // Removing a reversed event forgets its reversal: equal to one never reversed.
        let mut again = ours.clone();
        again.remove(&13);
        again.insert(fact(13, 5, None));
        ours.set_reversed_by(13, None);
        assert_eq!(again, ours);
    }

    #[test]
    fn maps_it_cannot_hold_do_not_decode() {
        // Keys out of order (a sequence of pairs is a map's bytes in postcard).
        let out_of_order = postcard::to_stdvec(&vec![(5u64, fact(5, 1, None)), (3u64, fact(3, 2, None))]).unwrap();
        assert!(postcard::from_bytes::<EventFacts>(&out_of_order).is_err());
        // A fact whose origin is not at its key.
        let elsewhere = postcard::to_stdvec(&BTreeMap::from([(5u64, fact(6, 1, None))])).unwrap();
        assert!(postcard::from_bytes::<EventFacts>(&elsewhere).is_err());
    }
}
