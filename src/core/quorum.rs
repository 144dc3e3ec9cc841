//! Quorum arithmetic: majority size, the tally of a claim's votes, and the
//! electorate whose majorities a claim and a lease need.
//!
//! Pure functions over counts and id lists; tested from tables.

use std::collections::BTreeMap;

use super::lease::lease_end;
use super::types::{NodeId, Time};

/// The number of members that make a quorum: a strict majority, floor(n/2) + 1.
pub fn quorum(members: usize) -> usize {
    members / 2 + 1
}

/// Where a claim stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither won nor lost yet.
    Pending,
    /// A quorum acked (the claimant's own promise included).
    Won,
    /// So many refused that a quorum can no longer be reached.
    Lost,
}

/// Tallies a claim among `members` nodes: `acks` includes the claimant itself.
pub fn tally(members: usize, acks: usize, nacks: usize) -> VoteResult {
    let q = quorum(members);
    if acks >= q {
        VoteResult::Won
    } else if members.saturating_sub(nacks) < q {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// Whose majorities a claim must win and a lease must rest on: the member
/// list in force, and while the change into it is not yet committed, the
/// list before it too (joint majorities, docs/PROTOCOL.md §3.19).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Electorate {
    current: Vec<NodeId>,
    previous: Option<Vec<NodeId>>,
}

impl Electorate {
    /// A majority of `members` alone.
    pub fn single(members: &[NodeId]) -> Electorate {
        Electorate {
            current: members.to_vec(),
            previous: None,
        }
    }

    /// A majority of `current` and a majority of `previous`.
    pub fn joint(current: &[NodeId], previous: &[NodeId]) -> Electorate {
        Electorate {
            current: current.to_vec(),
            previous: Some(previous.to_vec()),
        }
    }

    /// The list before, while its majority is needed too.
    pub fn previous(&self) -> Option<&[NodeId]> {
        self.previous.as_deref()
    }

    fn lists(&self) -> impl Iterator<Item = &[NodeId]> + '_ {
        std::iter::once(&self.current[..]).chain(self.previous.as_deref())
    }

    /// Where a claim by `me` stands with `acks` (besides its own) and `nacks`.
    pub fn tally<'a>(
        &self,
        me: NodeId,
        acks: impl Iterator<Item = &'a NodeId> + Clone,
        nacks: impl Iterator<Item = &'a NodeId> + Clone,
    ) -> VoteResult {
        let mut all_won = true;
        for list in self.lists() {
            let count = |it: &mut dyn Iterator<Item = &'a NodeId>| {
                it.filter(|id| **id != me && list.contains(id)).count()
            };
            let own = usize::from(list.contains(&me));
            let result = tally(
                list.len(),
                own + count(&mut acks.clone()),
                count(&mut nacks.clone()),
            );
            match result {
                VoteResult::Lost => return VoteResult::Lost,
                VoteResult::Pending => all_won = false,
                VoteResult::Won => {}
            }
        }
        if all_won {
            VoteResult::Won
        } else {
            VoteResult::Pending
        }
    }

    /// Whether `present` (this node `me` counted if it is a member) holds a
    /// majority of every list.
    pub fn reached(&self, me: NodeId, present: impl Fn(NodeId) -> bool) -> bool {
        self.lists().all(|list| {
            let n = list.iter().filter(|&&id| id == me || present(id)).count();
            n >= quorum(list.len())
        })
    }

    /// The lease a majority of every list backs: for each list, the
    /// quorum-th latest promise end of its members (`own` for `me`), and the
    /// earliest of those. `None` if some list lacks a majority of promises.
    pub fn lease_end(
        &self,
        me: NodeId,
        own: Time,
        promises: &BTreeMap<NodeId, Time>,
    ) -> Option<Time> {
        let mut end: Option<Time> = None;
        for list in self.lists() {
            let mut ends: Vec<Time> = list
                .iter()
                .filter_map(|id| {
                    if *id == me {
                        Some(own)
                    } else {
                        promises.get(id).copied()
                    }
                })
                .collect();
            let e = lease_end(&mut ends, quorum(list.len()))?;
            end = Some(end.map_or(e, |x: Time| x.min(e)));
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_strict_majority() {
        let table = [
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (5, 3),
            (6, 4),
            (7, 4),
            (9, 5),
            (33, 17),
        ];
        for (n, q) in table {
            assert_eq!(quorum(n), q, "n = {n}");
            // Any two quorums share a member.
            assert!(2 * q > n, "n = {n}");
        }
    }

    #[test]
    fn tally_table() {
        use VoteResult::*;
        let table = [
            // members, acks (self included), nacks, result
            (1, 1, 0, Won),
            (3, 1, 0, Pending),
            (3, 2, 0, Won),
            (3, 1, 1, Pending),
            (3, 1, 2, Lost),
            (5, 2, 2, Pending),
            (5, 2, 3, Lost),
            (5, 3, 2, Won),
            (4, 2, 1, Pending),
            (4, 2, 2, Lost),
            (4, 3, 1, Won),
        ];
        for (n, a, r, want) in table {
            assert_eq!(tally(n, a, r), want, "n={n} acks={a} nacks={r}");
        }
    }

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn a_joint_electorate_needs_both_majorities() {
        use VoteResult::*;
        // {1,2,3} becoming {1,2,3,4}: 2 of 3 and 3 of 4.
        let e = Electorate::joint(&ids(&[1, 2, 3, 4]), &ids(&[1, 2, 3]));
        let me = NodeId(1);
        let table: [(&[u32], &[u32], VoteResult); 5] = [
            (&[2], &[], Pending),
            (&[2, 4], &[], Won),
            (&[4], &[2, 3], Lost),
            (&[2, 3], &[], Won),
            (&[4], &[], Pending),
        ];
        for (acks, nacks, want) in table {
            let (a, n) = (ids(acks), ids(nacks));
            assert_eq!(
                e.tally(me, a.iter(), n.iter()),
                want,
                "acks {acks:?} nacks {nacks:?}"
            );
        }
        // A new member's own vote counts in the new list only.
        let e = Electorate::joint(&ids(&[1, 2, 4]), &ids(&[1, 2]));
        let (a, n) = (ids(&[1]), ids(&[]));
        assert_eq!(
            e.tally(NodeId(4), a.iter(), n.iter()),
            Pending,
            "1 of 2 of the old list"
        );
        let a = ids(&[1, 2]);
        assert_eq!(e.tally(NodeId(4), a.iter(), n.iter()), Won);
        assert!(e.reached(NodeId(4), |id| id == NodeId(1) || id == NodeId(2)));
        assert!(!e.reached(NodeId(4), |id| id == NodeId(1)));
    }

    #[test]
    fn a_joint_lease_is_the_earlier_of_the_two_majorities() {
        let t = |ms: u64| Time(ms * 1_000_000);
        let e = Electorate::joint(&ids(&[1, 2, 3, 4]), &ids(&[1, 2, 3]));
        let promises: BTreeMap<NodeId, Time> =
            [(NodeId(2), t(50)), (NodeId(3), t(80)), (NodeId(4), t(200))].into();
        // New list: own 100, 200, 80, 50 -> third latest 80. Old list: 100,
        // 80, 50 -> second latest 80. Drop node 3's promise: new 50, old 50.
        assert_eq!(e.lease_end(NodeId(1), t(100), &promises), Some(t(80)));
        let mut fewer = promises.clone();
        fewer.remove(&NodeId(3));
        assert_eq!(e.lease_end(NodeId(1), t(100), &fewer), Some(t(50)));
        fewer.remove(&NodeId(2));
        assert_eq!(
            e.lease_end(NodeId(1), t(100), &fewer),
            None,
            "no old majority"
        );
        assert_eq!(
            Electorate::single(&ids(&[1, 2, 3, 4])).lease_end(NodeId(1), t(100), &fewer),
            None
        );
    }
}
