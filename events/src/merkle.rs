//! The Merkle tree over event hashes, shaped as RFC 9162 §2.1 with BLAKE3:
//! `leaf = BLAKE3(0x00 || event_hash)`, `node = BLAKE3(0x01 || left || right)`, and the
//! root of the empty tree `BLAKE3("")`. Inclusion and consistency proofs are generated and
//! verified exactly as RFC 9162 §2.1.3 and §2.1.4 describe.
//!
//! Storage is abstracted by [`Nodes`]: the hash of every *perfect* subtree, `(level, index)`
//! covering leaves `[index << level, (index + 1) << level)`. Roots of any size and proofs
//! need O(log n) of them: a tree of size n splits into at most log n perfect subtrees, and
//! a proof path leaves the perfect part of the tree at most once.

use crate::Digest;

// Each hash is of one buffer on the stack, in one call: a hasher fed piece by piece cost as
// much again as the compression itself, and verification makes two of these per event.

pub fn leaf_hash(event_hash: &Digest) -> Digest {
    let mut input = [0u8; 33];
    input[1..].copy_from_slice(&event_hash.0);
    Digest(*blake3::hash(&input).as_bytes())
}

pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut input = [0u8; 65];
    input[0] = 0x01;
    input[1..33].copy_from_slice(&left.0);
    input[33..].copy_from_slice(&right.0);
    Digest(*blake3::hash(&input).as_bytes())
}

pub fn empty_root() -> Digest {
    Digest(*blake3::hash(b"").as_bytes())
}

/// Read access to the hashes of perfect subtrees.
pub trait Nodes {
    type Error;
    /// The hash of the perfect subtree at `level` (0 = leaves) and `index`.
    fn node(&self, level: u32, index: u64) -> Result<Digest, Self::Error>;
}

/// Why a proof cannot be made.
#[derive(Debug, PartialEq, Eq)]
pub enum ProofError<E> {
    /// The arguments name leaves or sizes the tree does not have.
    OutOfRange(String),
    Storage(E),
}

/// Why a proof does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProofFailure(pub String);

fn fail<T>(why: &str) -> Result<T, ProofFailure> {
    Err(ProofFailure(why.to_string()))
}

/// The largest power of two strictly less than `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]) for a range whose start is aligned to the largest power of two below
/// its length (true of every range RFC 9162's recursions visit from offset 0).
fn range_hash<N: Nodes>(nodes: &N, start: u64, end: u64) -> Result<Digest, N::Error> {
    let len = end - start;
    if len == 0 {
        return Ok(empty_root());
    }
    if len.is_power_of_two() && start.is_multiple_of(len) {
        return nodes.node(len.trailing_zeros(), start >> len.trailing_zeros());
    }
    let k = split(len);
    // [start, start + k) is perfect and aligned; only the right part recurses.
    let left = nodes.node(k.trailing_zeros(), start >> k.trailing_zeros())?;
    let right = range_hash(nodes, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves.
pub fn root<N: Nodes>(nodes: &N, size: u64) -> Result<Digest, N::Error> {
    range_hash(nodes, 0, size)
}

/// RFC 9162 §2.1.3.1: the audit path of leaf `index` in the tree of `size` leaves, from the
/// leaf's sibling up to the root's child.
pub fn inclusion_proof<N: Nodes>(nodes: &N, index: u64, size: u64) -> Result<Vec<Digest>, ProofError<N::Error>> {
    if index >= size {
        return Err(ProofError::OutOfRange(format!("leaf {index} is not in a tree of {size}")));
    }
    // Walk down from the root, remembering siblings; the proof lists them bottom-up.
    let mut siblings = vec![];
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            siblings.push(range_hash(nodes, start + k, end).map_err(ProofError::Storage)?);
            end = start + k;
        } else {
            siblings.push(range_hash(nodes, start, start + k).map_err(ProofError::Storage)?);
            start += k;
            m -= k;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// RFC 9162 §2.1.4.1: the proof that the tree of `first` leaves is a prefix of the tree of
/// `second` leaves. Empty when `first` is 0 or equals `second`.
pub fn consistency_proof<N: Nodes>(nodes: &N, first: u64, second: u64) -> Result<Vec<Digest>, ProofError<N::Error>> {
    if first > second {
        return Err(ProofError::OutOfRange(format!("tree size {first} is larger than {second}")));
    }
    if first == 0 || first == second {
        return Ok(vec![]);
    }
    // SUBPROOF(m, D[start:end], b), iteratively; entries collected top-down, reversed at the end.
    let mut proof = vec![];
    let (mut start, mut end, mut m, mut whole) = (0u64, second, first, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                proof.push(range_hash(nodes, start, end).map_err(ProofError::Storage)?);
            }
            break;
        }
        let k = split(n);
        if m <= k {
            proof.push(range_hash(nodes, start + k, end).map_err(ProofError::Storage)?);
            end = start + k;
        } else {
            proof.push(range_hash(nodes, start, start + k).map_err(ProofError::Storage)?);
            start += k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// One step of checking a proof, as `cledger verify-proof --verbose` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The leaf hash of the event hash: `H(0x00 || event_hash)`.
    Leaf { event_hash: Digest, leaf: Digest },
    /// Inclusion: proof hash `index` combined with the running hash (`on_left`: the proof
    /// hash is the left child), giving `result`.
    Inclusion { index: usize, sibling: Digest, on_left: bool, result: Digest },
    /// Consistency: where both running hashes start (the first tree's root when its size is
    /// a power of two, else the first proof hash).
    ConsistencyStart { hash: Digest, is_first_root: bool },
    /// Consistency: proof hash `index` on the left of both running hashes (`both`), or on
    /// the right of the second tree's only; the running hashes after it.
    Consistency { index: usize, hash: Digest, both: bool, first: Digest, second: Digest },
}

/// RFC 9162 §2.1.3.2: does `proof` show that the leaf with `event_hash` is at `index` in
/// the tree of `size` leaves with root `root`?
pub fn verify_inclusion(event_hash: &Digest, index: u64, size: u64, proof: &[Digest], root: &Digest) -> Result<(), ProofFailure> {
    verify_inclusion_traced(event_hash, index, size, proof, root, &mut |_| {})
}

/// [`verify_inclusion`], reporting every step to `trace`.
pub fn verify_inclusion_traced(
    event_hash: &Digest,
    index: u64,
    size: u64,
    proof: &[Digest],
    root: &Digest,
    trace: &mut dyn FnMut(Step),
) -> Result<(), ProofFailure> {
    if index >= size {
        return fail("the leaf index is not below the tree size");
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(event_hash);
    trace(Step::Leaf { event_hash: *event_hash, leaf: r });
    for (i, p) in proof.iter().enumerate() {
        if s == 0 {
            return fail("the proof is longer than the tree is deep");
        }
        let on_left = f & 1 == 1 || f == s;
        if on_left {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        trace(Step::Inclusion { index: i, sibling: *p, on_left, result: r });
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return fail("the proof is shorter than the tree is deep");
    }
    if r != *root {
        return fail("the proof leads to another root");
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `first` leaves with root
/// `first_root` is a prefix of the tree of `second` leaves with root `second_root`?
pub fn verify_consistency(first: u64, second: u64, first_root: &Digest, second_root: &Digest, proof: &[Digest]) -> Result<(), ProofFailure> {
    verify_consistency_traced(first, second, first_root, second_root, proof, &mut |_| {})
}

/// [`verify_consistency`], reporting every step to `trace`.
pub fn verify_consistency_traced(
    first: u64,
    second: u64,
    first_root: &Digest,
    second_root: &Digest,
    proof: &[Digest],
    trace: &mut dyn FnMut(Step),
) -> Result<(), ProofFailure> {
    if first > second {
        return fail("the first tree is larger than the second");
    }
    if first == second {
        if !proof.is_empty() {
            return fail("a proof between equal sizes must be empty");
        }
        return if first_root == second_root { Ok(()) } else { fail("equal sizes, different roots") };
    }
    if first == 0 {
        // Every tree extends the empty tree; the empty tree's root is fixed.
        if !proof.is_empty() {
            return fail("a proof from the empty tree must be empty");
        }
        return if *first_root == empty_root() { Ok(()) } else { fail("the empty tree has another root") };
    }
    if proof.is_empty() {
        return fail("the proof is empty");
    }
    let mut path: Vec<Digest> = Vec::with_capacity(proof.len() + 1);
    let power_of_two = first.is_power_of_two();
    if power_of_two {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    trace(Step::ConsistencyStart { hash: path[0], is_first_root: power_of_two });
    for (i, c) in path[1..].iter().enumerate() {
        if s == 0 {
            return fail("the proof is longer than the trees are deep");
        }
        let both = f & 1 == 1 || f == s;
        if both {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        // Proof hash numbers count the proof as given (the first root is not one of them).
        trace(Step::Consistency { index: i + usize::from(!power_of_two), hash: *c, both, first: fr, second: sr });
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return fail("the proof is shorter than the trees are deep");
    }
    if fr != *first_root {
        return fail("the proof does not lead to the first root");
    }
    if sr != *second_root {
        return fail("the proof does not lead to the second root");
    }
    Ok(())
}

/// The right edge of a growing tree: for each level, the perfect subtree waiting for a
/// right sibling. Appending a leaf completes at most log n nodes; the root of the current
/// size folds the edge. O(log n) memory: verifiers stream millions of leaves through it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `pending[level]`: hash of the perfect subtree at that level whose index is even and
    /// whose sibling has not arrived (present exactly when bit `level` of `size` is set).
    pending: Vec<Option<Digest>>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The frontier of a tree of `size` leaves, from its stored nodes.
    pub fn load<N: Nodes>(nodes: &N, size: u64) -> Result<Frontier, N::Error> {
        let mut pending = vec![];
        for level in 0..64 {
            if size >> level == 0 {
                break;
            }
            pending.push(if (size >> level) & 1 == 1 { Some(nodes.node(level, (size >> level) - 1)?) } else { None });
        }
        Ok(Frontier { size, pending })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf and hands `completed` every perfect node it completes, `(level,
    /// index, hash)`, the leaf itself first. Allocates nothing: verification pushes every
    /// event of the chain on the one thread that checks links in order.
    pub fn push(&mut self, event_hash: &Digest, completed: impl FnMut(u32, u64, Digest)) {
        self.push_leaf(leaf_hash(event_hash), completed);
    }

    /// [`Frontier::push`] of a leaf whose hash ([`leaf_hash`]) was computed already, on
    /// another thread perhaps.
    pub fn push_leaf(&mut self, leaf: Digest, mut completed: impl FnMut(u32, u64, Digest)) {
        let mut index = self.size;
        let mut level = 0u32;
        let mut hash = leaf;
        completed(0, index, hash);
        // At most 64 steps: one per trailing one bit of a u64 index.
        while index & 1 == 1 {
            let left = self.pending[level as usize].take().expect("an odd index has a pending left sibling");
            hash = node_hash(&left, &hash);
            index >>= 1;
            level += 1;
            completed(level, index, hash);
        }
        if self.pending.len() <= level as usize {
            self.pending.resize(level as usize + 1, None);
        }
        self.pending[level as usize] = Some(hash);
        self.size += 1;
    }

    /// Adds the next leaf, for a caller that needs only roots.
    pub fn append(&mut self, event_hash: &Digest) {
        self.push(event_hash, |_, _, _| {});
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Digest {
        let mut root: Option<Digest> = None;
        for hash in self.pending.iter().flatten() {
            root = Some(match root {
                None => *hash,
                Some(right) => node_hash(hash, &right),
            });
        }
        root.unwrap_or_else(empty_root)
    }
}

/// Every perfect node of a tree, in memory: for tests, offline verifiers and small trees.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    frontier: Frontier,
    nodes: std::collections::HashMap<(u32, u64), Digest>,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    pub fn push(&mut self, event_hash: &Digest) {
        self.frontier.push(event_hash, |level, index, hash| {
            self.nodes.insert((level, index), hash);
        });
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> Digest {
        self.frontier.root()
    }
}

impl Nodes for MemoryTree {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Digest, Self::Error> {
        Ok(*self.nodes.get(&(level, index)).expect("asked only for perfect subtrees of the tree's size"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Digest {
        Digest(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    /// MTH straight from RFC 9162's recursive definition, for comparison.
    fn reference_root(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_match_the_recursive_definition_at_every_size() {
        let leaves: Vec<Digest> = (0..300).map(leaf).collect();
        let mut tree = MemoryTree::new();
        assert_eq!(tree.root(), empty_root());
        for n in 1..=leaves.len() {
            tree.push(&leaves[n - 1]);
            let expected = reference_root(&leaves[..n]);
            assert_eq!(tree.root(), expected, "frontier root at {n}");
            for size in [1, n / 2, n] {
                if size > 0 {
                    assert_eq!(root(&tree, size as u64).unwrap(), reference_root(&leaves[..size]), "stored root {size} of {n}");
                }
            }
        }
        let frontier = Frontier::load(&tree, 300).unwrap();
        assert_eq!(frontier.root(), tree.root());
    }
}
