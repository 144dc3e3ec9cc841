//! The scenarios: each builds a LAN, starts the agents, injects its fault
//! over and over, and returns what the client and the holder watch saw.
//!
//! A scenario never decides whether a figure is good; `report` does.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{sysconf, SysconfVar};

use crate::agent::{json_number, json_text, Agent, Group, Profile, Setup, Topology, Traffic};
use crate::holders::Holders;
use crate::probe::{Prober, Responder, Span};
use crate::{interrupted, pause, Rng};

/// How long the cluster may take to settle before a trial.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// How long after a split's watch the client may take to be answered
/// again. A client whose ARP entry points at a host that let go of the VIP
/// learns the holder's address only when the entry goes stale and is
/// probed: tens of seconds, when no holder announces itself.
const SERVED_AGAIN_LIMIT: Duration = Duration::from_secs(60);

/// A LAN with agents, the client's prober, the responders and the watch on
/// who holds the VIP. Fields drop in order: threads first, the LAN last.
#[derive(Debug)]
pub struct Env {
    pub prober: Prober,
    /// Held for its threads: it answers the probes.
    _responder: Responder,
    pub holders: Holders,
    pub group: Group,
    /// Hosts whose agent never runs (a member down for the whole run).
    parked: Vec<usize>,
    rng: Rng,
}

impl Env {
    pub fn new(
        agent: Agent,
        profile: Profile,
        topology: Topology,
        setup: &Setup,
    ) -> Result<Env, String> {
        Env::with_parked(agent, profile, topology, setup, &[])
    }

    /// Like [`Env::new`], with the agents of `parked` never started: they
    /// stay members, down for the whole run.
    pub fn with_parked(
        agent: Agent,
        profile: Profile,
        topology: Topology,
        setup: &Setup,
        parked: &[usize],
    ) -> Result<Env, String> {
        let mut group = Group::new(agent, profile, topology, setup)
            .map_err(|e| format!("cannot build the LAN ({topology:?}): {e}"))?;
        let hosts = group.hosts();
        let holders = Holders::start(&group.lan, group.lan.vip4())
            .map_err(|e| format!("cannot watch the VIP: {e}"))?;
        let responder =
            Responder::start(&group.lan).map_err(|e| format!("cannot start responders: {e}"))?;
        let prober =
            Prober::start(&group.lan).map_err(|e| format!("cannot start the prober: {e}"))?;
        for h in (1..=hosts).filter(|h| !parked.contains(h)) {
            group
                .start(h)
                .map_err(|e| format!("cannot start {} on host {h}: {e}", agent.name()))?;
        }
        Ok(Env {
            prober,
            _responder: responder,
            holders,
            group,
            parked: parked.to_vec(),
            rng: Rng::seeded(),
        })
    }

    fn agent(&self) -> Agent {
        self.group.agent
    }

    fn profile(&self) -> Profile {
        self.group.profile
    }

    /// How long the holders must have been unchanged before a trial.
    fn quiet(&self) -> Duration {
        match self.agent() {
            // The promote hook announces the VIP for a second (arping -c 2).
            Agent::Regent => Duration::from_millis(1200),
            // keepalived sends a second burst of gratuitous ARPs 5 s after
            // it becomes master (vrrp_garp_master_delay). A fault right
            // after that burst would find the client's ARP entry locked
            // (neigh locktime, 1 s) against the next master's first burst,
            // and the outage would last until its own second burst.
            Agent::Keepalived => Duration::from_millis(5500),
        }
    }

    /// Waits until exactly one host holds the VIP, has held it for a while,
    /// answers the client, and the agents are settled; returns that host.
    pub fn wait_ready(&mut self) -> Result<usize, String> {
        let deadline = now() + READY_LIMIT;
        let quiet = self.quiet();
        loop {
            interrupted()?;
            let holders = self.holders.now();
            if let [holder] = holders[..] {
                let calm = self
                    .holders
                    .last_change()
                    .map_or(true, |t| t.elapsed() >= quiet);
                let answers = self.prober.last_answer().is_some_and(|(_, a)| {
                    a.host == holder && a.at.elapsed() < Duration::from_millis(100)
                });
                let idle = self.agent() == Agent::Keepalived || !self.group.busy(holder);
                if calm && answers && idle && self.group.settled() {
                    return Ok(holder);
                }
            }
            if now() > deadline {
                self.group.keep_files();
                return Err(format!(
                    "{} did not settle within {READY_LIMIT:?} (VIP holders {holders:?})\n{}",
                    self.agent().name(),
                    self.group.log_tail(15)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Says on stderr what is done to which host, on the bench's clock.
    fn fault(&self, what: &str, host: usize) {
        eprintln!("   {:>10.1} {what} host {host}", crate::stamp());
    }

    /// Sleeps a random part of a heartbeat, so faults fall at every phase
    /// of the heartbeat cycle.
    fn jitter(&mut self) -> Result<(), String> {
        let hb = self.profile().heartbeat_ms;
        pause(Duration::from_micros(self.rng.below(hb * 1000)))
    }

    /// Waits for the first probe from `from` on answered by a host that
    /// `accept` takes; returns its sequence number and arrival.
    fn wait_answer(
        &self,
        from: usize,
        accept: impl Fn(usize) -> bool + Copy,
        limit: Duration,
    ) -> Result<(usize, Instant), String> {
        let deadline = now() + limit;
        loop {
            interrupted()?;
            if let Some((seq, a)) = self.prober.first_answer(from, accept) {
                return Ok((seq, a.at));
            }
            if now() > deadline {
                return Err(format!(
                    "no answer from a new VIP holder within {limit:?} (holders now {:?})",
                    self.holders.now()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn failover_limit(&self) -> Duration {
        Duration::from_millis(5000 + 10 * self.profile().dead_after_ms)
    }

    /// The outage once the answer to probe `seq` is in, after a moment for
    /// late answers to land.
    fn outage_ms(&self, seq: usize) -> Result<f64, String> {
        pause(Duration::from_millis(50))?;
        Ok(ms(self.prober.outage_before(seq)))
    }

    /// The outage and the time with two VIP holders (`without` aside) since
    /// `fault`, once probe `seq` is answered.
    fn sample(&self, fault: Instant, seq: usize, without: Option<usize>) -> Result<Trial, String> {
        let downtime_ms = self.outage_ms(seq)?;
        Ok(Trial {
            downtime_ms,
            overlap_ms: ms(self.holders.overlap_without(fault, now(), without)),
        })
    }

    /// Undoes whatever a failed trial left: partition, loss, stopped agents
    /// (parked ones aside).
    pub fn recover(&mut self) -> Result<(), String> {
        self.group.lan.heal_partition();
        for h in 1..=self.group.hosts() {
            self.group.lan.clear_loss(h);
            if !self.group.running(h) && !self.parked.contains(&h) {
                self.group
                    .reboot(h)
                    .map_err(|e| format!("cannot restart host {h}: {e}"))?;
            }
        }
        Ok(())
    }

    /// SIGKILL and a pulled cable for the VIP holder; the VIP downtime.
    pub fn crash_trial(&mut self) -> Result<Trial, String> {
        let old = self.wait_ready()?;
        self.jitter()?;
        let from = self.prober.next_seq();
        self.fault("cut + SIGKILL", old);
        let at = now();
        self.group.crash(old);
        let (seq, _) = self.wait_answer(from, |h| h != old, self.failover_limit())?;
        let outage = self.sample(at, seq, Some(old))?;
        self.group
            .reboot(old)
            .map_err(|e| format!("cannot restart host {old}: {e}"))?;
        Ok(outage)
    }

    /// SIGTERM to the VIP holder's agent; the VIP downtime.
    pub fn graceful_trial(&mut self) -> Result<Trial, String> {
        let old = self.wait_ready()?;
        self.jitter()?;
        let from = self.prober.next_seq();
        self.fault("SIGTERM", old);
        let at = now();
        self.group.signal(old, Signal::SIGTERM);
        let (seq, _) = self.wait_answer(from, |h| h != old, self.failover_limit())?;
        let outage = self.sample(at, seq, None)?;
        self.group.wait_exit(old, Duration::from_secs(10))?;
        self.group
            .start(old)
            .map_err(|e| format!("cannot restart host {old}: {e}"))?;
        Ok(outage)
    }

    /// `regent step-down` on the VIP holder; the VIP downtime.
    pub fn step_down_trial(&mut self) -> Result<Trial, String> {
        let old = self.wait_ready()?;
        self.jitter()?;
        let from = self.prober.next_seq();
        self.fault("step-down", old);
        let at = now();
        self.group
            .step_down(old)
            .map_err(|e| format!("step-down on host {old}: {e}"))?;
        let (seq, _) = self.wait_answer(from, |h| h != old, self.failover_limit())?;
        self.sample(at, seq, None)
    }

    /// A rolling restart: every follower's agent restarted in turn (SIGTERM,
    /// exit, start), then the leader's. Each restart waits for a settled
    /// cluster first, as every trial does.
    pub fn rolling_trial(&mut self) -> Result<RollingSample, String> {
        let leader = self.wait_ready()?;
        let followers: Vec<usize> = (1..=self.group.hosts())
            .filter(|&h| h != leader && self.group.running(h))
            .collect();
        let mut steps = Vec::new();
        for f in followers {
            let holder = self.wait_ready()?;
            if holder != leader {
                return Err(format!(
                    "leadership moved from host {leader} to host {holder} during the rolling restart"
                ));
            }
            steps.push(self.restart_follower(f, leader)?);
        }
        let holder = self.wait_ready()?;
        let leader_step = self.restart_leader(holder)?;
        Ok(RollingSample {
            followers: steps,
            leader: leader_step,
        })
    }

    /// Restarts the agent of follower `host` and watches until it follows
    /// `leader` again and a lease longer.
    fn restart_follower(&mut self, host: usize, leader: usize) -> Result<Restart, String> {
        self.jitter()?;
        let from = self.prober.next_seq();
        self.fault("SIGTERM, restart (follower)", host);
        let at = now();
        self.bounce(host)?;
        let started = now();
        let deadline = started + self.failover_limit();
        loop {
            interrupted()?;
            if self.group.status(host).is_ok_and(|json| {
                json_text(&json, "role") == Some("follower")
                    && json_number(&json, "leader") == Some(leader as u64)
            }) {
                break;
            }
            if now() > deadline {
                return Err(format!(
                    "host {host} did not follow host {leader} again within {:?}\n{}",
                    self.failover_limit(),
                    self.group.log_tail(15)
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let follows_ms = ms(started.elapsed());
        // A lease the restart broke would lapse within a lease of the last
        // ack: watch past that.
        pause(Duration::from_millis(
            2 * self.profile().dead_after_ms + 100,
        ))?;
        Ok(self.restart_seen(host, at, from, Some(follows_ms)))
    }

    /// Restarts the leader's agent `host` and waits until the cluster has
    /// settled with a VIP holder again (at exact quorum, only the returning
    /// agent can make one).
    fn restart_leader(&mut self, host: usize) -> Result<Restart, String> {
        self.jitter()?;
        let from = self.prober.next_seq();
        self.fault("SIGTERM, restart (leader)", host);
        let at = now();
        self.bounce(host)?;
        self.wait_ready()?;
        Ok(self.restart_seen(host, at, from, None))
    }

    /// SIGTERM to `host`'s agent, then, once it has exited, a new one.
    fn bounce(&mut self, host: usize) -> Result<(), String> {
        self.group.signal(host, Signal::SIGTERM);
        self.group.wait_exit(host, Duration::from_secs(10))?;
        self.group
            .start(host)
            .map_err(|e| format!("cannot restart host {host}: {e}"))
    }

    /// What the client and the holder watch saw since the restart of
    /// `host` at `at`, whose first probe was `from`.
    fn restart_seen(
        &self,
        host: usize,
        at: Instant,
        from: usize,
        follows_ms: Option<f64>,
    ) -> Restart {
        let to = self.prober.next_seq();
        // Late answers land meanwhile; a pause cut short by Ctrl-C only
        // makes the last probes count as lost, and the run ends anyway.
        let _ = pause(Duration::from_millis(50));
        let end = now();
        let changes = self.holders.changes(at, end);
        let gained = changes.iter().filter(|c| c.present).count();
        let lost = changes.len() - gained;
        Restart {
            host,
            changes: gained.max(lost),
            seen: self.prober.span(from, to),
            follows_ms,
            overlap_ms: ms(self.holders.overlap(at, end)),
        }
    }

    /// Cuts the VIP holder and one other host off from the rest for `hold`,
    /// heals, and watches for `after` more.
    pub fn partition_trial(
        &mut self,
        hold: Duration,
        after: Duration,
    ) -> Result<PartitionSample, String> {
        let old = self.wait_ready()?;
        self.jitter()?;
        let n = self.group.hosts();
        let other = (1..=n).find(|&h| h != old).unwrap_or(old);
        let majority: Vec<usize> = (1..=n).filter(|&h| h != old && h != other).collect();
        let from = self.prober.next_seq();
        self.fault("partition", old);
        let cut_at = now();
        self.group.lan.partition(&[&[old, other], &majority]);
        let in_majority = |h: usize| h != old && h != other;
        let served = self.wait_answer(from, in_majority, hold);
        pause((cut_at + hold).saturating_duration_since(now()))?;
        let split_end = now();
        let overlap_split = self.holders.overlap(cut_at, split_end);
        let released = self
            .holders
            .changes(cut_at, split_end)
            .iter()
            .find(|c| c.host == old && !c.present)
            .map(|c| ms(c.at - cut_at));
        self.group.lan.heal_partition();
        let healed_at = now();
        pause(after)?;
        let overlap_heal = self.holders.overlap(healed_at, now());
        let (majority_ms, outage_ms) = match served {
            Ok((seq, at)) => (Some(ms(at - cut_at)), Some(self.outage_ms(seq)?)),
            Err(_) => (None, None),
        };
        Ok(PartitionSample {
            overlap_ms: ms(overlap_split + overlap_heal),
            majority_ms,
            outage_ms,
            released_ms: released,
        })
    }

    /// Cuts the one link between the VIP holder and the other host that can
    /// lead for `hold`, while the client (and a witness) still reach both;
    /// heals, watches for `after` more, and then until the client is
    /// answered again, so an outage that outlasts the watch is counted whole.
    pub fn split_trial(&mut self, hold: Duration, after: Duration) -> Result<SplitSample, String> {
        let old = self.wait_ready()?;
        self.jitter()?;
        let other = self
            .group
            .leaders()
            .into_iter()
            .find(|&h| h != old)
            .ok_or("no second host that can lead")?;
        let from = self.prober.next_seq();
        self.fault(&format!("split from host {other}:"), old);
        let cut_at = now();
        self.group.lan.partition(&[&[old], &[other]]);
        let held = pause(hold);
        self.group.lan.heal_partition();
        held?;
        pause(after)?;
        let watched = self.prober.next_seq();
        let (answered, _) = self
            .wait_answer(watched, |_| true, SERVED_AGAIN_LIMIT)
            .map_err(|_| {
                format!(
                    "the client got no answer within {SERVED_AGAIN_LIMIT:?} of the watch's end \
                     (holders now {:?})",
                    self.holders.now()
                )
            })?;
        let end = now();
        // Late answers land meanwhile.
        pause(Duration::from_millis(50))?;
        let seen = self.prober.span(from, answered + 1);
        Ok(SplitSample {
            overlap_ms: ms(self.holders.overlap(cut_at, end)),
            outage_ms: ms(seen.outage),
            lost: seen.lost,
            moves: self.holders.acquisitions(cut_at, end),
        })
    }

    /// `percent` loss on every host for `span`; counts VIP acquisitions.
    pub fn loss_run(&mut self, percent: u32, span: Duration) -> Result<LossSample, String> {
        self.wait_ready()?;
        let start = now();
        for h in 1..=self.group.hosts() {
            self.group.lan.loss(h, percent);
        }
        let result = pause(span);
        for h in 1..=self.group.hosts() {
            self.group.lan.clear_loss(h);
        }
        result?;
        pause(Duration::from_millis(500))?;
        let end = now();
        Ok(LossSample {
            changes: self.holders.acquisitions(start, end),
            overlap_ms: ms(self.holders.overlap(start, end)),
        })
    }

    /// Each agent's resident memory and CPU share over `span` while idle.
    pub fn idle_run(&mut self, span: Duration) -> Result<Vec<Usage>, String> {
        self.wait_ready()?;
        self.prober.pause(true);
        let n = self.group.hosts();
        let pids: Vec<Vec<u32>> = (1..=n).map(|h| self.group.pids(h)).collect();
        let ticks0: Vec<u64> = pids.iter().map(|p| cpu_ticks(p)).collect();
        let ns0: Vec<u64> = pids.iter().map(|p| cpu_ns(p)).collect();
        let start = now();
        let result = pause(span);
        let secs = start.elapsed().as_secs_f64();
        self.prober.pause(false);
        result?;
        let hz = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(0)
            .max(1) as f64;
        Ok(pids
            .iter()
            .enumerate()
            .map(|(i, p)| Usage {
                rss_kib: p.iter().map(|&pid| rss_kib(pid)).sum(),
                cpu_percent: cpu_ns(p).saturating_sub(ns0[i]) as f64 / 1e9 / secs * 100.0,
                cpu_percent_ticks: cpu_ticks(p).saturating_sub(ticks0[i]) as f64 / hz / secs
                    * 100.0,
            })
            .collect())
    }

    /// Each host's packet and byte rates over `span`, with the prober
    /// paused: the agent's own figures and the wire's.
    pub fn traffic_run(&mut self, span: Duration) -> Result<TrafficSample, String> {
        self.wait_ready()?;
        self.prober.pause(true);
        pause(Duration::from_millis(100))?;
        let n = self.group.hosts();
        let own0: Vec<Traffic> = (1..=n).map(|h| self.group.traffic(h)).collect();
        let wire0: Vec<Traffic> = (1..=n).map(|h| self.group.wire_traffic(h)).collect();
        let start = now();
        let result = pause(span);
        let own1: Vec<Traffic> = (1..=n).map(|h| self.group.traffic(h)).collect();
        let wire1: Vec<Traffic> = (1..=n).map(|h| self.group.wire_traffic(h)).collect();
        let secs = start.elapsed().as_secs_f64();
        self.prober.pause(false);
        result?;
        Ok(TrafficSample {
            own: rates(&own0, &own1, secs),
            wire: rates(&wire0, &wire1, secs),
            changes: self.holders.acquisitions(start, now()),
        })
    }
}

/// One crash, SIGTERM or step-down trial.
#[derive(Clone, Copy, Debug)]
pub struct Trial {
    /// The client's outage.
    pub downtime_ms: f64,
    /// Time with more than one VIP holder from the fault to the new
    /// holder's first answer (a crashed host not counted).
    pub overlap_ms: f64,
}

/// One agent's restart within a rolling restart.
#[derive(Clone, Debug)]
pub struct Restart {
    pub host: usize,
    /// Leadership changes the VIP showed from the SIGTERM to the end of
    /// the watch: the larger of its acquisitions and its releases, so a
    /// handover counts once and a lapsed lease too, whether or not the
    /// same host took the VIP back.
    pub changes: usize,
    /// The client's probes from the SIGTERM to the end of the watch.
    pub seen: Span,
    /// From the start of a restarted follower's agent until it said it
    /// follows the leader again; `None` for the leader's restart.
    pub follows_ms: Option<f64>,
    /// Time with more than one VIP holder meanwhile.
    pub overlap_ms: f64,
}

/// One rolling restart: each follower, then the leader.
#[derive(Clone, Debug)]
pub struct RollingSample {
    pub followers: Vec<Restart>,
    pub leader: Restart,
}

#[derive(Clone, Copy, Debug)]
pub struct PartitionSample {
    /// Time with more than one VIP holder, during the split and after it.
    pub overlap_ms: f64,
    /// From the cut until the client got an answer from the majority side.
    pub majority_ms: Option<f64>,
    /// The client's outage before the majority served.
    pub outage_ms: Option<f64>,
    /// From the cut until the minority's holder let go of the VIP.
    pub released_ms: Option<f64>,
}

/// One split of two hosts that can lead, beside a witness or not.
#[derive(Clone, Copy, Debug)]
pub struct SplitSample {
    /// Time with more than one VIP holder, during the split and after it.
    pub overlap_ms: f64,
    /// The client's longest run of unanswered probes, from the cut until it
    /// was answered again after the watch.
    pub outage_ms: f64,
    /// Probes that got no answer meanwhile.
    pub lost: usize,
    /// VIP acquisitions meanwhile: 0 when the holder kept it throughout.
    pub moves: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct LossSample {
    /// VIP acquisitions during the lossy span: leadership changes.
    pub changes: usize,
    pub overlap_ms: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub rss_kib: u64,
    /// From the scheduler's nanosecond run time of every thread.
    pub cpu_percent: f64,
    /// From utime + stime in /proc/PID/stat: clock ticks, 10 ms each.
    pub cpu_percent_ticks: f64,
}

/// Mean per-host rates: packets and bytes per second, sent and received.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rates {
    pub tx_pps: f64,
    pub tx_bps: f64,
    pub rx_pps: f64,
    pub rx_bps: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct TrafficSample {
    /// From the agent's own counters (regent's metrics; for keepalived the
    /// wire's, as it counts nothing itself).
    pub own: Rates,
    /// From `eth0`'s counters: frames with their headers.
    pub wire: Rates,
    /// VIP acquisitions meanwhile, with no fault injected: should be 0.
    pub changes: usize,
}

fn rates(before: &[Traffic], after: &[Traffic], secs: f64) -> Rates {
    let n = before.len().max(1) as f64;
    let mut r = Rates::default();
    for (b, a) in before.iter().zip(after) {
        r.tx_pps += a.tx_packets.saturating_sub(b.tx_packets) as f64;
        r.tx_bps += a.tx_bytes.saturating_sub(b.tx_bytes) as f64;
        r.rx_pps += a.rx_packets.saturating_sub(b.rx_packets) as f64;
        r.rx_bps += a.rx_bytes.saturating_sub(b.rx_bytes) as f64;
    }
    let per = n * secs.max(1e-9);
    Rates {
        tx_pps: r.tx_pps / per,
        tx_bps: r.tx_bps / per,
        rx_pps: r.rx_pps / per,
        rx_bps: r.rx_bps / per,
    }
}

/// utime + stime of the processes, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name, which may hold spaces: the
            // state is field 3, utime 14 and stime 15.
            let rest = stat.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Time on a CPU of every thread of the processes, in nanoseconds
/// (/proc/PID/task/TID/schedstat, first field).
fn cpu_ns(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            total += std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// VmRSS of a process in KiB (/proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::disallowed_methods)] // the bench measures real time
pub fn now() -> Instant {
    Instant::now()
}
