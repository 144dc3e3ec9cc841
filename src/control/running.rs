//! What `regent check` says of a file beside the daemon that runs it: the
//! member list the daemon reports in its status, and what the file's list
//! would change, with each reason the daemon would refuse that change
//! (docs/PROTOCOL.md §3.19), so that the operator sees them before the
//! reload rather than after.
//!
//! Architecture Invariant: client side only. [`beside_the_daemon`] sends one
//! `status json` request to the file's control socket; the rest is a pure
//! function of the file's member list and the daemon's answer. It decides
//! nothing: at the reload, the daemon's core is the judge, and this reads
//! only the status it reports (a peer's generation, not its digest), so a
//! warning here is advice, and its absence no promise.

use std::path::Path;
use std::time::Duration;

use super::json::Json;
use crate::config::Config;
use crate::core::{members_changed, quorum, NodeId};

/// One member as the running daemon sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) id: NodeId,
    /// Linked both ways with the daemon (always, for the daemon itself).
    pub(crate) linked: bool,
    /// The generation it last said it runs; `None` until heard.
    pub(crate) generation: Option<u32>,
}

/// The member list a daemon runs, and how its members stand, from its
/// `status json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Running {
    pub(crate) cluster: String,
    pub(crate) node: NodeId,
    pub(crate) generation: u32,
    /// The change into its list is committed (docs/PROTOCOL.md §3.19).
    pub(crate) committed: bool,
    /// Its role: `follower`, `candidate` or `leader`.
    pub(crate) role: String,
    /// The leader it follows or is.
    pub(crate) leader: Option<NodeId>,
    /// Every member, itself included, by id.
    pub(crate) members: Vec<Seen>,
}

impl Running {
    /// Reads the fields it needs from the daemon's `status json`.
    pub(crate) fn from_status(text: &str) -> Result<Running, String> {
        let v = Json::parse(text.trim_end())?;
        let missing =
            |key: &str| format!("its status has no {key}: it probably runs an older regent");
        let num = |v: &Json, key: &str| -> Result<u64, String> {
            v.field(key)
                .and_then(Json::as_u64)
                .ok_or_else(|| missing(key))
        };
        let id = |n: u64| u32::try_from(n).map(NodeId).map_err(|e| e.to_string());
        let membership = v.field("membership").ok_or_else(|| missing("membership"))?;
        let mut members = Vec::new();
        for p in v
            .field("peers")
            .and_then(Json::items)
            .ok_or_else(|| missing("peers"))?
        {
            let flag = |key: &str| p.field(key).and_then(Json::as_bool).unwrap_or(false);
            members.push(Seen {
                id: id(num(p, "id")?)?,
                linked: flag("alive") && flag("hears_us"),
                generation: p
                    .field("generation")
                    .and_then(Json::as_u64)
                    .and_then(|g| u32::try_from(g).ok()),
            });
        }
        Ok(Running {
            cluster: v
                .field("cluster")
                .and_then(Json::as_str)
                .ok_or_else(|| missing("cluster"))?
                .to_string(),
            node: id(num(&v, "node")?)?,
            generation: u32::try_from(num(membership, "generation")?).map_err(|e| e.to_string())?,
            committed: membership
                .field("committed")
                .and_then(Json::as_bool)
                .ok_or_else(|| missing("membership.committed"))?,
            role: v
                .field("role")
                .and_then(Json::as_str)
                .unwrap_or("follower")
                .to_string(),
            leader: v
                .field("leader")
                .and_then(Json::as_u64)
                .map(id)
                .transpose()?,
            members,
        })
    }

    fn ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Members linked with the daemon that run its list or the next: those
    /// the change rule counts.
    fn linked_on_list(&self) -> impl Iterator<Item = &Seen> {
        let g = self.generation;
        self.members.iter().filter(move |m| {
            m.linked
                && (m.id == self.node
                    || matches!(m.generation, Some(x) if x == g || x == g.wrapping_add(1)))
        })
    }
}

/// The lines `regent check` adds for the daemon that runs `config`: what it
/// runs, what the file's member list would change, and a `warning:` line
/// for each reason it would refuse that change. One line when no daemon
/// answers.
pub fn beside_the_daemon(config: &Config, timeout: Duration) -> Vec<String> {
    let socket = &config.control.socket;
    match ask(socket, timeout) {
        Err(e) => vec![format!("running: {e}")],
        Ok(running) if running.cluster != config.cluster || running.node != config.node => {
            vec![format!(
                "running: the daemon at {} runs cluster {} as node {}, not this file's \
                 cluster {} node {}: nothing compared",
                socket.display(),
                running.cluster,
                running.node,
                config.cluster,
                config.node
            )]
        }
        Ok(running) => compare(config.generation, &config.member_ids(), &running),
    }
}

/// The daemon's status at `socket`, or why there is none.
fn ask(socket: &Path, timeout: Duration) -> Result<Running, String> {
    if !socket.exists() {
        return Err(format!(
            "no daemon runs for this file ({} does not exist)",
            socket.display()
        ));
    }
    let text = super::request(socket, "status json", timeout)?;
    Running::from_status(&text).map_err(|e| {
        format!(
            "cannot read the status of the daemon at {}: {e}",
            socket.display()
        )
    })
}

fn listed(ids: &[NodeId]) -> String {
    ids.iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines for a file of member list `members` at `generation`, beside
/// the daemon `running`.
pub(crate) fn compare(generation: u32, members: &[NodeId], running: &Running) -> Vec<String> {
    let old = running.ids();
    let (from, q_old) = (running.generation, quorum(old.len()));
    let linked = running.members.iter().filter(|m| m.linked).count();
    let mut out = vec![format!(
        "running: generation {from}, members {} (quorum {q_old} of {}), {linked} linked",
        listed(&old),
        old.len()
    )];
    let refused = "the daemon would refuse this reload";
    let diff = members_changed(&old, members);
    if diff.is_empty() {
        if generation == from {
            out.push("after: no change of the member list".to_string());
        } else {
            out.push(format!(
                "warning: generation changes from {from} to {generation} but the member list \
                 does not: {refused}"
            ));
        }
        return out;
    }
    let q_new = quorum(members.len());
    let live = running
        .linked_on_list()
        .filter(|m| members.contains(&m.id))
        .count();
    out.push(format!(
        "after: quorum {q_new} of {}; {live} of the new list are linked now",
        members.len()
    ));
    let mut warn = |s: String| out.push(format!("warning: {s}"));
    let next = from.wrapping_add(1);
    if generation != next {
        warn(format!(
            "the member list changes (members {}), so generation must go from {from} to \
             {next}, not {generation}: {refused}",
            listed(&diff)
        ));
    }
    if diff.len() > 1 {
        warn(format!(
            "members {} change at once: add or remove one member per generation, reloading \
             every host between two changes",
            listed(&diff)
        ));
    }
    if !running.committed {
        warn(format!(
            "the change to generation {from} is not committed yet (a majority of its list and \
             of the list before must run it first): {refused}"
        ));
    }
    let on_old = running.linked_on_list().count();
    if on_old < q_old {
        warn(format!(
            "only {on_old} of the {} members of generation {from} are linked and run it or \
             later, {q_old} are needed before the list may change: {refused}",
            old.len()
        ));
    }
    if live < q_new {
        warn(format!(
            "the new list would leave no live quorum: {live} of its {} members are linked \
             now, {q_new} are needed: {refused}",
            members.len()
        ));
    }
    let leader = running
        .leader
        .filter(|&l| l != running.node && running.role == "follower")
        .and_then(|l| running.members.iter().find(|m| m.id == l));
    if let Some(l) = leader.filter(|l| l.generation == Some(from)) {
        if members.contains(&l.id) {
            warn(format!(
                "node {} leads on generation {from}: reload it first, then this host",
                l.id
            ));
        } else {
            warn(format!(
                "node {} leads and the new list removes it: hand over first (`regent \
                 step-down` on node {}), then reload the new leader first",
                l.id, l.id
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    /// Node 1 leads generation 1 of 1, 2, 3, all linked on it.
    fn three() -> Running {
        Running {
            cluster: "db".into(),
            node: NodeId(1),
            generation: 1,
            committed: true,
            role: "leader".into(),
            leader: Some(NodeId(1)),
            members: (1..=3)
                .map(|id| Seen {
                    id: NodeId(id),
                    linked: true,
                    generation: Some(1),
                })
                .collect(),
        }
    }

    fn warnings(lines: &[String]) -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("warning: "))
            .collect()
    }

    #[test]
    fn a_member_added_with_the_next_generation() {
        let got = compare(2, &ids(&[1, 2, 3, 4]), &three());
        assert_eq!(
            got,
            [
                "running: generation 1, members 1, 2, 3 (quorum 2 of 3), 3 linked",
                "after: quorum 3 of 4; 3 of the new list are linked now",
            ]
        );
    }

    #[test]
    fn the_same_list() {
        let got = compare(1, &ids(&[1, 2, 3]), &three());
        assert_eq!(got[1], "after: no change of the member list");
        assert_eq!(got.len(), 2);
        let got = compare(2, &ids(&[1, 2, 3]), &three());
        assert_eq!(
            warnings(&got),
            [
                "generation changes from 1 to 2 but the member list does not: the daemon would \
              refuse this reload"
            ]
        );
    }

    #[test]
    fn each_refusal_is_warned_of() {
        // The generation not raised, and two members at once.
        let got = compare(1, &ids(&[1, 2, 4]), &three());
        assert_eq!(
            warnings(&got),
            [
                "the member list changes (members 3, 4), so generation must go from 1 to 2, \
                 not 1: the daemon would refuse this reload",
                "members 3, 4 change at once: add or remove one member per generation, \
                 reloading every host between two changes",
            ]
        );
        // One member, but the new list has no live quorum: 2 and 3 are down,
        // so only 1 of 1, 2, 3, 4 is linked and 3 are needed. The list in
        // force has lost its quorum too.
        let mut r = three();
        r.members[1].linked = false;
        r.members[2].linked = false;
        let got = compare(2, &ids(&[1, 2, 3, 4]), &r);
        assert_eq!(
            got[0],
            "running: generation 1, members 1, 2, 3 (quorum 2 of 3), 1 linked"
        );
        assert_eq!(
            got[1],
            "after: quorum 3 of 4; 1 of the new list are linked now"
        );
        assert_eq!(
            warnings(&got),
            [
                "only 1 of the 3 members of generation 1 are linked and run it or later, 2 \
                 are needed before the list may change: the daemon would refuse this reload",
                "the new list would leave no live quorum: 1 of its 4 members are linked now, \
                 3 are needed: the daemon would refuse this reload",
            ]
        );
        // A one-member cluster cannot grow: the newcomer is not linked yet.
        let solo = Running {
            members: vec![Seen {
                id: NodeId(1),
                linked: true,
                generation: Some(1),
            }],
            ..three()
        };
        let got = compare(2, &ids(&[1, 2]), &solo);
        assert_eq!(
            got,
            [
                "running: generation 1, members 1 (quorum 1 of 1), 1 linked",
                "after: quorum 2 of 2; 1 of the new list are linked now",
                "warning: the new list would leave no live quorum: 1 of its 2 members are \
                 linked now, 2 are needed: the daemon would refuse this reload",
            ]
        );
        // Not committed.
        let r = Running {
            committed: false,
            ..three()
        };
        let got = compare(2, &ids(&[1, 2, 3, 4]), &r);
        assert_eq!(
            warnings(&got),
            [
                "the change to generation 1 is not committed yet (a majority of its list and of \
                 the list before must run it first): the daemon would refuse this reload"
            ]
        );
    }

    #[test]
    fn a_follower_waits_for_its_leader() {
        // Node 1 follows node 3, which still runs generation 1.
        let follower = Running {
            role: "follower".into(),
            leader: Some(NodeId(3)),
            ..three()
        };
        let got = compare(2, &ids(&[1, 2, 3, 4]), &follower);
        assert_eq!(
            warnings(&got),
            ["node 3 leads on generation 1: reload it first, then this host"]
        );
        let got = compare(2, &ids(&[1, 2]), &follower);
        assert_eq!(
            warnings(&got),
            [
                "node 3 leads and the new list removes it: hand over first (`regent step-down` \
              on node 3), then reload the new leader first"
            ]
        );
        // Once the leader took generation 2 (it is ahead), the follower may.
        let mut ahead = follower;
        ahead.members[2].generation = Some(2);
        let got = compare(2, &ids(&[1, 2, 3, 4]), &ahead);
        assert_eq!(warnings(&got), Vec::<&str>::new());
        assert_eq!(
            got[1],
            "after: quorum 3 of 4; 3 of the new list are linked now"
        );
    }

    /// A member on the list before, or never heard, is not counted: the
    /// change rule counts only members on the daemon's list or the next.
    #[test]
    fn members_behind_do_not_count_toward_the_change() {
        let mut r = three();
        r.generation = 2;
        r.members[0].generation = Some(2);
        r.members[1].generation = Some(1);
        r.members[2].generation = None;
        r.members[2].linked = false;
        let got = compare(3, &ids(&[1, 2, 3, 4]), &r);
        assert_eq!(
            got[0],
            "running: generation 2, members 1, 2, 3 (quorum 2 of 3), 2 linked"
        );
        assert_eq!(
            got[1],
            "after: quorum 3 of 4; 1 of the new list are linked now"
        );
        assert_eq!(warnings(&got).len(), 2, "{got:?}");
    }

    #[test]
    fn the_status_json_is_read() {
        let text = "{\"version\":1,\"cluster\":\"db\",\"node\":2,\"role\":\"follower\",\
            \"leader\":1,\"membership\":{\"generation\":3,\"digest\":\"0000abcd\",\
            \"committed\":true,\"confirmed\":true,\"previous\":null},\"peers\":[\
            {\"id\":1,\"alive\":true,\"hears_us\":true,\"generation\":4},\
            {\"id\":2,\"alive\":true,\"hears_us\":true,\"generation\":3},\
            {\"id\":3,\"alive\":true,\"hears_us\":false,\"generation\":null}],\"foreign\":[]}\n";
        let r = Running::from_status(text).expect("valid");
        assert_eq!(
            r,
            Running {
                cluster: "db".into(),
                node: NodeId(2),
                generation: 3,
                committed: true,
                role: "follower".into(),
                leader: Some(NodeId(1)),
                members: vec![
                    Seen {
                        id: NodeId(1),
                        linked: true,
                        generation: Some(4)
                    },
                    Seen {
                        id: NodeId(2),
                        linked: true,
                        generation: Some(3)
                    },
                    Seen {
                        id: NodeId(3),
                        linked: false,
                        generation: None
                    },
                ],
            }
        );
        // A daemon from before member lists changed says so.
        let old = "{\"cluster\":\"db\",\"node\":2,\"peers\":[]}";
        let e = Running::from_status(old).expect_err("no membership");
        assert!(e.contains("no membership"), "{e}");
        assert!(Running::from_status("not json").is_err());
    }
}
