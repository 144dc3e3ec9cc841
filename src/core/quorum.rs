//! Quorum arithmetic: majority size and the tally of a claim's votes.
//!
//! Pure functions over counts; tested from tables.

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
}
