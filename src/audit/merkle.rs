//! The RFC 6962 Merkle tree over audit leaves: tree heads, incremental building and
//! consistency proofs (RFC 6962 §2.1.2, verification as in RFC 9162 §2.1.4.2).

use crate::crypto::sha256;

pub type Hash = [u8; 32];

/// SHA-256(0x00 ‖ data): the hash of one leaf.
pub fn leaf_hash(parts: &[&[u8]]) -> Hash {
    let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    all.push(&[0u8]);
    all.extend_from_slice(parts);
    sha256(&all)
}

/// SHA-256(0x01 ‖ left ‖ right): an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1u8], left, right])
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D\[n\]) computed directly (recursively) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Builds tree heads leaf by leaf in O(log n) memory: the roots of the perfect subtrees
/// that make up the tree so far, largest first.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    stack: Vec<(usize, Hash)>,
    size: u64,
}

impl Builder {
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (1usize, leaf);
        while let Some(&(size, left)) = self.stack.last() {
            if size != node.0 {
                break;
            }
            self.stack.pop();
            node = (size * 2, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree head of everything pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The consistency proof that the first `m` leaves are a prefix of all `leaves`.
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if m == 0 || m >= leaves.len() {
        return Vec::new();
    }
    let mut proof = Vec::new();
    subproof(m, leaves, true, &mut proof);
    proof
}

fn subproof(m: usize, d: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            proof.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, proof);
        proof.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, proof);
        proof.push(root(&d[..k]));
    }
}

/// Checks that a tree of size `m` with head `old` is a prefix of the tree of size `n`
/// with head `new`, given `proof`.
pub fn verify_consistency(m: u64, n: u64, old: &Hash, new: &Hash, proof: &[Hash]) -> bool {
    if m > n {
        return false;
    }
    if m == n {
        return old == new && proof.is_empty();
    }
    if m == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    // When m is a power of two the old root is itself the first node of the path.
    if m.is_power_of_two() {
        path.insert(0, *old);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *old && sr == *new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&[&(i as u64).to_be_bytes()]))
            .collect()
    }

    #[test]
    fn the_builder_agrees_with_the_recursive_definition() {
        let all = leaves(70);
        let mut b = Builder::default();
        assert_eq!(b.root(), empty_root());
        for (i, l) in all.iter().enumerate() {
            b.push(*l);
            assert_eq!(b.root(), root(&all[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn known_shape_of_small_trees() {
        let l = leaves(3);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), node_hash(&l[0], &l[1]));
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
    }

    #[test]
    fn consistency_proofs_verify_for_every_pair_of_sizes() {
        let all = leaves(40);
        for n in 1..=all.len() {
            let new = root(&all[..n]);
            for m in 1..=n {
                let old = root(&all[..m]);
                let proof = consistency_proof(m, &all[..n]);
                assert!(
                    verify_consistency(m as u64, n as u64, &old, &new, &proof),
                    "m={m} n={n}"
                );
                if m < n {
                    // A rewritten history fails.
                    let mut forged = all[..n].to_vec();
                    forged[m - 1] = leaf_hash(&[b"forged"]);
                    let forged_new = root(&forged);
                    let p = consistency_proof(m, &forged);
                    assert!(
                        !verify_consistency(m as u64, n as u64, &old, &forged_new, &p),
                        "forged m={m} n={n}"
                    );
                    // A wrong old root fails.
                    assert!(!verify_consistency(m as u64, n as u64, &new, &new, &proof) || m == n);
                }
            }
        }
    }
}
