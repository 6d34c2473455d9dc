//! [`IdIndex`]: where each id sits in a contract's list of facts (its invoices, its
//! payments), holding positions only.
//!
//! The ids already live in the facts; a `BTreeMap<String, usize>` beside them held a second
//! copy of every id and a B-tree node share: about 60 of the 250 bytes a billing event
//! costs a state, and string comparisons on every lookup. A hash table of positions (8
//! bytes each, so no history is too long for them) finds an id by its hash and confirms
//! it against the fact at that position.
//! The hasher is std's keyed SipHash: ids are chosen by clients, and a table whose keys an
//! attacker could make collide would turn every lookup into a scan.
//!
//! It is stored as the map it replaced (the ids in order, each with its position), byte
//! for byte, so persisted views keep their format; a stored map that disagrees with the
//! facts does not decode (and the view is rebuilt).

use hashbrown::HashTable;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

#[derive(Clone, Default)]
pub struct IdIndex {
    table: HashTable<usize>,
    hasher: RandomState,
}

impl IdIndex {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The position of `id`, given `id_at`, the id of the fact at a position.
    pub fn get<'a>(&self, id: &str, id_at: impl Fn(usize) -> &'a str) -> Option<usize> {
        self.table.find(self.hasher.hash_one(id), |&p| id_at(p) == id).copied()
    }

    /// Records `id` at `position` unless it is already recorded (the first fact of an id
    /// keeps it, as `entry().or_insert` did); whether it was recorded now.
    pub fn insert_first<'a>(&mut self, id: &str, position: usize, id_at: impl Fn(usize) -> &'a str) -> bool {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(id);
        let new = self.table.find(hash, |&p| id_at(p) == id).is_none();
        if new {
            self.table.insert_unique(hash, position, |&p| hasher.hash_one(id_at(p)));
        }
        new
    }

    /// Forgets `id` if it is recorded at `position` (a rollback of the fact there, which
    /// may be gone from the list already: only positions are compared); whether it was.
    pub fn remove_at(&mut self, id: &str, position: usize) -> bool {
        match self.table.find_entry(self.hasher.hash_one(id), |&p| p == position) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// The index as the map it is stored as: each id and its position, in id order (built
    /// at each save of a state: O(n log n) in its facts, as the save already is O(n)).
    pub fn to_map<'a>(&self, id_at: impl Fn(usize) -> &'a str) -> BTreeMap<&'a str, usize> {
        self.table.iter().map(|&p| (id_at(p), p)).collect()
    }

    /// The index a stored map describes, if it is the one the facts make: each position
    /// holds a fact with that id, and every fact's id is there at its first position.
    pub fn from_map<'a>(map: BTreeMap<String, usize>, facts: usize, id_at: impl Fn(usize) -> &'a str) -> Result<IdIndex, &'static str> {
        let mut index = IdIndex::default();
        for (id, position) in map {
            if position >= facts || id_at(position) != id {
                return Err("an id index names a position that does not hold that id");
            }
            index.insert_first(&id, position, &id_at);
        }
        for position in 0..facts {
            if index.get(id_at(position), &id_at).is_none_or(|first| first > position) {
                return Err("an id index leaves out an id, or not at its first fact");
            }
        }
        Ok(index)
    }

    /// Positions in order: two indexes over the same facts are equal when these are.
    fn positions(&self) -> Vec<usize> {
        let mut positions: Vec<usize> = self.table.iter().copied().collect();
        positions.sort_unstable();
        positions
    }
}

impl PartialEq for IdIndex {
    fn eq(&self, other: &IdIndex) -> bool {
        self.len() == other.len() && self.positions() == other.positions()
    }
}

impl Eq for IdIndex {}

impl std::fmt::Debug for IdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdIndex").field("positions", &self.positions()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_position_of_each_id_and_forgets_by_position() {
        let ids = ["a", "b", "a", "c"];
        let id_at = |p: usize| ids[p];
        let mut index = IdIndex::default();
        let recorded: Vec<bool> = ids.iter().enumerate().map(|(p, id)| index.insert_first(id, p, id_at)).collect();
        assert_eq!(recorded, [true, true, false, true], "the second `a` is not new");
        assert_eq!((index.get("a", id_at), index.get("b", id_at), index.get("c", id_at), index.get("d", id_at)), (Some(0), Some(1), Some(3), None));
        assert_eq!(index.len(), 3, "the second `a` is not recorded");
        // Rolling back the second `a` (never recorded) changes nothing; the first does.
        assert!(!index.remove_at("a", 2));
        assert_eq!(index.get("a", id_at), Some(0));
        assert!(index.remove_at("a", 0));
        assert_eq!(index.get("a", id_at), None);
        // Stored as the map it replaced, and read back only when it agrees with the facts.
        let map = index.to_map(id_at);
        assert_eq!(map.into_iter().collect::<Vec<_>>(), [("b", 1), ("c", 3)]);
        let stored: BTreeMap<String, usize> = [("b".to_string(), 1), ("c".to_string(), 3)].into();
        assert!(IdIndex::from_map(stored, ids.len(), id_at).is_err(), "`a` is a fact the map leaves out");
        let one_id: BTreeMap<String, usize> = [("b".to_string(), 0)].into();
        assert_eq!(IdIndex::from_map(one_id, 2, |p| ["b", "b"][p]).unwrap().len(), 1, "a second `b` is not indexed");
        let wrong: BTreeMap<String, usize> = [("b".to_string(), 3)].into();
        assert!(IdIndex::from_map(wrong, ids.len(), id_at).is_err());
        let outside: BTreeMap<String, usize> = [("b".to_string(), 9)].into();
        assert!(IdIndex::from_map(outside, ids.len(), id_at).is_err());
        // The whole index of the facts, and only that: every id, at its first fact.
        let whole: BTreeMap<String, usize> = [("a".to_string(), 0), ("b".to_string(), 1), ("c".to_string(), 3)].into();
        assert_eq!(IdIndex::from_map(whole, ids.len(), id_at).unwrap().len(), 3);
        let missing: BTreeMap<String, usize> = [("a".to_string(), 0), ("c".to_string(), 3)].into();
        assert!(IdIndex::from_map(missing, ids.len(), id_at).is_err(), "b is left out");
        let later: BTreeMap<String, usize> = [("a".to_string(), 2), ("b".to_string(), 1), ("c".to_string(), 3)].into();
        assert!(IdIndex::from_map(later, ids.len(), id_at).is_err(), "a at its second fact");
    }

    #[test]
    fn many_ids_and_equality_by_positions() {
        let ids: Vec<String> = (0..5000).map(|i| format!("INV-{i:05}")).collect();
        let id_at = |p: usize| ids[p].as_str();
        let (mut forward, mut backward) = (IdIndex::default(), IdIndex::default());
        for (p, id) in ids.iter().enumerate() {
            forward.insert_first(id, p, id_at);
        }
        for p in (0..ids.len()).rev() {
            backward.insert_first(&ids[p], p, id_at);
        }
        assert!(ids.iter().enumerate().all(|(p, id)| forward.get(id, id_at) == Some(p)));
        assert_eq!(forward, backward, "the same positions, whatever the order they came in");
        backward.remove_at(&ids[7], 7);
        assert_ne!(forward, backward);
    }
}
