//! A cluster that floats a VIP, watched by a client: the harness's
//! daemons with [`Opts::vip_hook`] (the shipped `conf/hooks/vip`), a
//! responder on every host that answers with its host number, and
//! regent-bench's prober in the client namespace, probing the VIP over UDP
//! every 2 ms. For tests of what a client sees of an operator's change:
//! rolling restarts, key rotations, member-list changes.
//!
//! It sets up and watches; the tests decide what must hold. Its few
//! assertions are what every such test needs before it begins: a first
//! leader that the client reaches and that the others follow.
//!
//! Include it from an integration test with
//! `#[path = "vip_rig/mod.rs"] mod vip_rig;`, beside the harnesses it
//! builds on: `#[path = "netns/mod.rs"] mod netns;` and
//! `#[path = "cluster/mod.rs"] mod cluster;`.

// Each test crate uses a different part of the rig.
#![allow(dead_code)]

use std::time::Duration;

use crate::cluster::{wait_until, Cluster, Opts};
use crate::netns::Lan;
use probe::{Prober, Responder, Span};

// The bench's client, shared rather than copied. Its own unit tests come
// along and run here too; they are pure and quick.
#[path = "../../src/bin/regent-bench/probe.rs"]
pub mod probe;

/// How long after a test's last step the client is still watched: past a
/// lease (274 ms at the default timing), so a lease the step broke would
/// show as a demote and lost probes.
pub const WATCH_AFTER: Duration = Duration::from_millis(600);

/// Probes younger than this may still wait for their answer.
const IN_FLIGHT: Duration = Duration::from_millis(50);

/// How long a host may take to follow, or a leader to be elected.
pub const SETTLE: Duration = Duration::from_secs(5);

/// Hosts on a LAN with a client; the prober and the responders run.
/// Fields drop in order: the client's threads first, the LAN last.
pub struct Rig {
    pub prober: Prober,
    _responder: Responder,
    pub c: Cluster,
}

impl Rig {
    /// `hosts` hosts and a client, configured by `opts` with the VIP hook
    /// ([`Opts::vip_hook`] is set whatever `opts` says); the daemons of
    /// `up` are started, the others never run until a test starts them.
    pub fn start(hosts: usize, opts: Opts, up: &[usize]) -> Rig {
        let opts = Opts {
            vip_hook: true,
            ..opts
        };
        let mut c = Cluster::new(Lan::with_client(hosts), opts);
        let responder = Responder::start(&c.lan).expect("responders");
        let prober = Prober::start(&c.lan).expect("prober");
        for &h in up {
            c.start(h);
        }
        Rig {
            prober,
            _responder: responder,
            c,
        }
    }

    /// Waits until the last 50 probes old enough to be answered were all
    /// answered by `host`.
    pub fn wait_served_by(&self, host: usize, limit: Duration) -> bool {
        let p = &self.prober;
        let in_flight = (IN_FLIGHT.as_millis() / probe::INTERVAL.as_millis()) as usize;
        wait_until(limit, || {
            let ripe = p.next_seq().saturating_sub(in_flight);
            let s = p.span(ripe.saturating_sub(50), ripe);
            s.sent == 50 && s.answered_by == [(host, 50)]
        })
    }

    /// What the client saw of probes `from..` up to now, once the newest of
    /// them had time for their answers.
    pub fn seen_since(&self, from: usize) -> Span {
        let to = self.prober.next_seq();
        std::thread::sleep(IN_FLIGHT);
        self.prober.span(from, to)
    }

    /// Waits for the first leader, for the client to reach it through the
    /// VIP, and for every daemon of `up` to follow it; returns (leader,
    /// epoch).
    pub fn settle(&self, up: &[usize]) -> (usize, u64) {
        let c = &self.c;
        let first = c
            .wait_promote(0, &[], SETTLE)
            .unwrap_or_else(|| panic!("no leader within 5 s\n{}", c.dump()));
        assert!(
            self.wait_served_by(first.node, SETTLE),
            "the client never reached leader {} through the VIP\n{}",
            first.node,
            c.dump()
        );
        all_follow(c, up, (first.node, first.epoch));
        // Past the promote hook's announcement (ARP_COUNT=1: a second).
        std::thread::sleep(Duration::from_millis(1200));
        (first.node, first.epoch)
    }
}

/// Asserts that `host` follows `leader` within [`SETTLE`]; returns how
/// long that took.
pub fn follows(c: &Cluster, host: usize, leader: (usize, u64)) -> Duration {
    c.wait_follows(host, leader, SETTLE).unwrap_or_else(|| {
        panic!(
            "host {host} does not follow leader {} at epoch {}\n{}\n{}",
            leader.0,
            leader.1,
            c.timeline(&[]),
            c.dump()
        )
    })
}

/// Asserts that every host of `hosts` but the leader follows `leader`
/// within [`SETTLE`].
pub fn all_follow(c: &Cluster, hosts: &[usize], leader: (usize, u64)) {
    for &h in hosts.iter().filter(|&&h| h != leader.0) {
        follows(c, h, leader);
    }
}

/// `d` in milliseconds, for the figures the tests print.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
