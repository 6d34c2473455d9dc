//! Merkle proofs: every proof verifies, and a proof with any hash altered, reordered,
//! truncated or extended, or presented with the wrong index, size or root, is rejected
//! (the verifier is tested adversarially: immudb shipped a forged-proof bug, GO-2022-1117).

use events::merkle::*;
use events::Digest;
use proptest::prelude::*;

fn leaf(i: u64) -> Digest {
    Digest(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn tree(n: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push(&leaf(i));
    }
    t
}

/// Every way we know to spoil a proof.
fn spoiled(proof: &[Digest]) -> Vec<(String, Vec<Digest>)> {
    let mut out = vec![];
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i].0[i % 32] ^= 0x01;
        out.push((format!("hash {i} altered"), p));
        let mut p = proof.to_vec();
        p.remove(i);
        out.push((format!("hash {i} dropped"), p));
        if i + 1 < proof.len() && proof[i] != proof[i + 1] {
            let mut p = proof.to_vec();
            p.swap(i, i + 1);
            out.push((format!("hashes {i} and {} swapped", i + 1), p));
        }
    }
    let mut longer = proof.to_vec();
    longer.push(leaf(999_999));
    out.push(("extended".into(), longer));
    let mut duplicated = proof.to_vec();
    if let Some(last) = proof.last() {
        duplicated.push(*last);
        out.push(("last hash repeated".into(), duplicated));
    }
    out
}

#[test]
fn every_inclusion_proof_up_to_200_leaves_verifies_and_resists_tampering() {
    let big = tree(200);
    for size in 1..=200u64 {
        let tree_root = root(&big, size).unwrap();
        let root = tree_root;
        for index in 0..size {
            let proof = inclusion_proof(&big, index, size).unwrap();
            verify_inclusion(&leaf(index), index, size, &proof, &root).unwrap_or_else(|e| panic!("{index}/{size}: {e}"));
            if index % 7 == 0 || size < 20 {
                for (how, bad) in spoiled(&proof) {
                    assert!(verify_inclusion(&leaf(index), index, size, &bad, &root).is_err(), "{index}/{size}: {how}");
                }
                assert!(verify_inclusion(&leaf(index + 1), index, size, &proof, &root).is_err(), "other leaf");
                if index + 1 < size {
                    assert!(verify_inclusion(&leaf(index), index + 1, size, &proof, &root).is_err(), "other index");
                }
                // Against the real root of another size, the proof made for this size fails,
                // unless that size's proof is the very same list of hashes.
                if size < 200 {
                    let other = inclusion_proof(&big, index, size + 1).unwrap();
                    let other_root = events::merkle::root(&big, size + 1).unwrap();
                    assert_eq!(verify_inclusion(&leaf(index), index, size + 1, &proof, &other_root).is_ok(), other == proof, "other size");
                }
                assert!(verify_inclusion(&leaf(index), size, size, &proof, &root).is_err(), "index = size");
                let mut other_root = root;
                other_root.0[0] ^= 1;
                assert!(verify_inclusion(&leaf(index), index, size, &proof, &other_root).is_err(), "other root");
            }
        }
    }
}

#[test]
fn every_consistency_proof_up_to_200_leaves_verifies_and_resists_tampering() {
    let big = tree(200);
    for second in 1..=200u64 {
        let second_root = root(&big, second).unwrap();
        for first in 0..=second {
            let first_root = root(&big, first).unwrap();
            let proof = consistency_proof(&big, first, second).unwrap();
            verify_consistency(first, second, &first_root, &second_root, &proof).unwrap_or_else(|e| panic!("{first}->{second}: {e}"));
            if first == 0 || first == second {
                assert!(proof.is_empty());
            }
            if (first % 5 == 0 || second < 24) && first > 0 && first < second {
                for (how, bad) in spoiled(&proof) {
                    assert!(verify_consistency(first, second, &first_root, &second_root, &bad).is_err(), "{first}->{second}: {how}");
                }
                assert!(verify_consistency(first, second, &second_root, &second_root, &proof).is_err(), "first root replaced");
                assert!(verify_consistency(first, second, &first_root, &first_root, &proof).is_err(), "second root replaced");
                assert!(verify_consistency(first + 1, second, &first_root, &second_root, &proof).is_err(), "first size changed");
                if first < second - 1 {
                    let other = consistency_proof(&big, first, second - 1).unwrap();
                    let other_root = root(&big, second - 1).unwrap();
                    assert_eq!(verify_consistency(first, second - 1, &first_root, &other_root, &proof).is_ok(), other == proof, "second size changed");
                }
                assert!(verify_consistency(first, second, &first_root, &second_root, &[]).is_err(), "empty proof");
                // A rolled-back "second" tree: the second tree is not an extension.
                assert!(verify_consistency(second, first, &second_root, &first_root, &proof).is_err(), "sizes swapped");
            }
        }
    }
}

#[test]
fn trees_that_differ_in_one_leaf_are_not_consistent() {
    let honest = tree(50);
    let mut forked = MemoryTree::new();
    for i in 0..50 {
        forked.push(&if i == 17 { leaf(1_000 + i) } else { leaf(i) });
    }
    let first_root = root(&honest, 30).unwrap();
    let second_root = root(&forked, 50).unwrap();
    let proof = consistency_proof(&forked, 30, 50).unwrap();
    assert!(verify_consistency(30, 50, &first_root, &second_root, &proof).is_err());
    let proof = consistency_proof(&honest, 30, 50).unwrap();
    assert!(verify_consistency(30, 50, &first_root, &second_root, &proof).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_proofs_on_a_large_tree(index in 0u64..5_000, extra in 0u64..3_000, first_part in 0u64..5_000) {
        // One tree of 8,000 leaves, built once per case is fine at this size.
        static TREE: std::sync::OnceLock<MemoryTree> = std::sync::OnceLock::new();
        let t = TREE.get_or_init(|| tree(8_000));
        let size = (index + 1 + extra).min(8_000);
        let r = root(t, size).unwrap();
        let proof = inclusion_proof(t, index, size).unwrap();
        prop_assert!(proof.len() <= 64 - (size - 1).leading_zeros() as usize);
        prop_assert!(verify_inclusion(&leaf(index), index, size, &proof, &r).is_ok());
        let first = first_part.min(size);
        let first_root = root(t, first).unwrap();
        let proof = consistency_proof(t, first, size).unwrap();
        prop_assert!(verify_consistency(first, size, &first_root, &r, &proof).is_ok());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = (index as usize) % bad.len();
            bad[i].0[3] ^= 0x80;
            prop_assert!(verify_consistency(first, size, &first_root, &r, &bad).is_err());
        }
    }
}
