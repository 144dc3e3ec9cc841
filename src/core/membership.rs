//! Membership identity: which member list a node runs, and how two lists
//! relate.
//!
//! Every message carries its sender's [`Membership`]: the generation of its
//! member list (raised by one with each change), a digest of the list's ids,
//! and the digest of the list it came from. Two nodes work together only when
//! their lists are the same or one is the other's next generation
//! ([`Relation`]); docs/PROTOCOL.md §3.19 says why that keeps one leader
//! while hosts apply a change at different moments.
//!
//! Architecture Invariant: pure values and functions; no clock, no I/O.

use super::types::NodeId;

/// A member list as it travels: its generation, its digest and the digest
/// of the list it replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub struct Membership {
    /// Raised by exactly one with each change of the member list.
    pub generation: u32,
    /// [`digest`] of the list's ids.
    pub digest: u32,
    /// The digest of the generation before, or 0 when this node does not
    /// know it (it started on this generation and has not yet learnt it).
    pub previous: u32,
}

/// How a peer's membership stands to this node's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The same list.
    Same,
    /// The peer runs the next generation, made from this node's list. This
    /// node follows and acks it; it does not count it toward its own quorum
    /// (the peer would not ack this node's claims).
    Ahead,
    /// The peer runs the generation before, the list this node's was made
    /// from. Its acks count toward this node's quorum; this node neither acks
    /// nor follows it.
    Behind,
    /// Anything else: neither works with the other.
    Foreign,
}

impl Membership {
    /// The membership of generation `generation` over `members`, with the
    /// previous digest unknown.
    pub fn of(generation: u32, members: &[NodeId]) -> Membership {
        Membership {
            generation,
            digest: digest(members),
            previous: 0,
        }
    }

    /// The same list, noting that it was made from `previous`.
    pub fn after(self, previous: Membership) -> Membership {
        Membership {
            previous: previous.digest,
            ..self
        }
    }

    /// How `peer` stands to `self`.
    pub fn relation(&self, peer: &Membership) -> Relation {
        if peer.generation == self.generation && peer.digest == self.digest {
            Relation::Same
        } else if peer.generation == self.generation.wrapping_add(1) && peer.previous == self.digest
        {
            Relation::Ahead
        } else if self.generation == peer.generation.wrapping_add(1)
            && self.previous != 0
            && self.previous == peer.digest
        {
            Relation::Behind
        } else {
            Relation::Foreign
        }
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "generation {} (list {:08x})",
            self.generation, self.digest
        )
    }
}

/// FNV-1a over the sorted, deduplicated ids, little-endian; never 0, which
/// stands for "unknown".
pub fn digest(members: &[NodeId]) -> u32 {
    let mut ids: Vec<u32> = members.iter().map(|m| m.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h: u32 = 0x811c_9dc5;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h.max(1)
}

/// Members in `a` or `b` but not in both: what a change adds and removes.
pub fn changed(a: &[NodeId], b: &[NodeId]) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = a
        .iter()
        .filter(|id| !b.contains(id))
        .chain(b.iter().filter(|id| !a.contains(id)))
        .copied()
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn the_digest_ignores_order_and_tells_lists_apart() {
        assert_eq!(digest(&ids(&[3, 1, 2])), digest(&ids(&[1, 2, 3])));
        assert_ne!(digest(&ids(&[1, 2, 3])), digest(&ids(&[1, 2, 4])));
        assert_ne!(digest(&ids(&[1, 2, 3])), digest(&ids(&[1, 2, 3, 4])));
        assert_ne!(digest(&[]), 0);
    }

    #[test]
    fn relations_table() {
        let g1 = Membership::of(1, &ids(&[1, 2, 3]));
        let g2 = Membership::of(2, &ids(&[1, 2, 3, 4])).after(g1);
        let other2 = Membership::of(2, &ids(&[1, 2, 3, 5])).after(g1);
        let g3 = Membership::of(3, &ids(&[1, 2, 3, 4, 5])).after(g2);
        let fresh2 = Membership::of(2, &ids(&[1, 2, 3, 4]));
        let cases = [
            (g1, g1, Relation::Same),
            (g1, g2, Relation::Ahead),
            (g2, g1, Relation::Behind),
            (g1, g3, Relation::Foreign),
            (g3, g1, Relation::Foreign),
            (g2, other2, Relation::Foreign),
            (g1, other2, Relation::Ahead),
            (fresh2, g1, Relation::Foreign),
            (g1, fresh2, Relation::Foreign),
            (fresh2, g2, Relation::Same),
        ];
        for (me, peer, want) in cases {
            assert_eq!(me.relation(&peer), want, "{me:?} vs {peer:?}");
        }
    }

    #[test]
    fn changed_lists_what_a_change_adds_and_removes() {
        assert_eq!(changed(&ids(&[1, 2, 3]), &ids(&[3, 2, 1])), ids(&[]));
        assert_eq!(changed(&ids(&[1, 2, 3]), &ids(&[1, 2, 3, 4])), ids(&[4]));
        assert_eq!(changed(&ids(&[1, 2, 3]), &ids(&[1, 2, 4])), ids(&[3, 4]));
    }
}
