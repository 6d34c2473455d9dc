//! [`SeqMap`]: values keyed by seq in a sorted `Vec`, for a contract's per-event facts.
//!
//! A contract's events arrive in seq order and are only ever undone from the end (a
//! rollback), so a sorted vector does what a `BTreeMap` did here at about a third of the
//! memory (no node overhead, no per-node slack): lookups are binary searches, appends and
//! removals at the end are O(1). It serializes as a map, byte for byte as the `BTreeMap`
//! it replaced (postcard: a length, then key and value pairs), so persisted views keep
//! their format.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::{Bound, RangeBounds};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqMap<V> {
    /// Strictly increasing by seq.
    entries: Vec<(u64, V)>,
}

impl<V> Default for SeqMap<V> {
    fn default() -> SeqMap<V> {
        SeqMap { entries: Vec::new() }
    }
}

impl<V> SeqMap<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, seq: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&seq, |(s, _)| *s)
    }

    /// Inserts or replaces the value at `seq`; returns the one replaced. O(1) for a seq
    /// above every other (the fold's case).
    pub fn insert(&mut self, seq: u64, value: V) -> Option<V> {
        if self.entries.last().is_none_or(|(last, _)| *last < seq) {
            self.entries.push((seq, value));
            return None;
        }
        match self.position(seq) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (seq, value));
                None
            }
        }
    }

    pub fn get(&self, seq: &u64) -> Option<&V> {
        self.position(*seq).ok().map(|i| &self.entries[i].1)
    }

    pub fn contains_key(&self, seq: &u64) -> bool {
        self.position(*seq).is_ok()
    }

    pub fn get_mut(&mut self, seq: &u64) -> Option<&mut V> {
        self.position(*seq).ok().map(|i| &mut self.entries[i].1)
    }

    /// Removes the value at `seq`. O(1) for the last (a rollback's case).
    pub fn remove(&mut self, seq: &u64) -> Option<V> {
        if self.entries.last().is_some_and(|(last, _)| last == seq) {
            return self.entries.pop().map(|(_, v)| v);
        }
        self.position(*seq).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &V)> + ExactSizeIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The entries whose seq is in `range`, in seq order.
    pub fn range<R: RangeBounds<u64>>(&self, range: R) -> impl DoubleEndedIterator<Item = (&u64, &V)> {
        let start = match range.start_bound() {
            Bound::Included(s) => self.entries.partition_point(|(k, _)| k < s),
            Bound::Excluded(s) => self.entries.partition_point(|(k, _)| k <= s),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => self.entries.partition_point(|(k, _)| k <= e),
            Bound::Excluded(e) => self.entries.partition_point(|(k, _)| k < e),
            Bound::Unbounded => self.entries.len(),
        };
        self.entries[start..end.max(start)].iter().map(|(k, v)| (k, v))
    }
}

impl<V: Serialize> Serialize for SeqMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SeqMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SeqMap<V>, D::Error> {
        struct SeqMapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for SeqMapVisitor<V> {
            type Value = SeqMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of seqs in increasing order")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SeqMap<V>, A::Error> {
                // The length is the decoder's claim: bound the first allocation by it, but not
                // beyond what any real contract holds at once.
                let mut entries: Vec<(u64, V)> = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
                while let Some((seq, value)) = map.next_entry::<u64, V>()? {
                    if entries.last().is_some_and(|(last, _)| *last >= seq) {
                        return Err(serde::de::Error::custom("seqs out of order"));
                    }
                    entries.push((seq, value));
                }
                Ok(SeqMap { entries })
            }
        }
        deserializer.deserialize_map(SeqMapVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_as_a_btreemap_and_encodes_as_one() {
        let mut ours: SeqMap<u32> = SeqMap::default();
        let mut theirs: BTreeMap<u64, u32> = BTreeMap::new();
        // Appends, an out-of-order insert, a replacement, removals at the end and inside.
        for (seq, v) in [(3, 30), (5, 50), (9, 90), (4, 40), (5, 55), (12, 120)] {
            assert_eq!(ours.insert(seq, v), theirs.insert(seq, v));
        }
        assert_eq!(ours.remove(&12), theirs.remove(&12));
        assert_eq!(ours.remove(&4), theirs.remove(&4));
        assert_eq!(ours.remove(&100), theirs.remove(&100));
        assert_eq!(ours.get(&5), theirs.get(&5));
        assert_eq!(ours.get(&6), theirs.get(&6));
        *ours.get_mut(&9).unwrap() += 1;
        *theirs.get_mut(&9).unwrap() += 1;
        let collect = |m: &SeqMap<u32>| m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
        assert_eq!(collect(&ours), theirs.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        for (a, b) in [(0, 20), (4, 9), (5, 5), (6, 4), (9, 100)] {
            assert_eq!(ours.range(a..=b).collect::<Vec<_>>(), theirs.range(a..=b.max(a)).collect::<Vec<_>>(), "{a}..={b}");
            assert_eq!(ours.range(a..b.max(a)).collect::<Vec<_>>(), theirs.range(a..b.max(a)).collect::<Vec<_>>(), "{a}..{b}");
        }
        assert_eq!(ours.range(..=5).next_back(), theirs.range(..=5).next_back());
        assert_eq!(ours.range(6..).rev().collect::<Vec<_>>(), theirs.range(6..).rev().collect::<Vec<_>>());
        let bytes = postcard::to_stdvec(&ours).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&theirs).unwrap(), "the same bytes as the BTreeMap");
        assert_eq!(postcard::from_bytes::<SeqMap<u32>>(&bytes).unwrap(), ours);
        // Keys out of order do not decode (a sequence of pairs is a map's bytes in postcard).
        let bad = postcard::to_stdvec(&vec![(5u64, 1u32), (3u64, 2u32)]).unwrap();
        assert!(postcard::from_bytes::<SeqMap<u32>>(&bad).is_err());
    }
}
