//! The client's point of view: a UDP responder on every host that answers
//! with its host number, and a prober in the client namespace that sends a
//! numbered datagram to the VIP every [`INTERVAL`] and records who answered.
//!
//! It measures nothing by itself: it keeps the send time and the answer of
//! every probe, and the scenarios ask it about spans of probes afterwards.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};

use crate::netns::{Lan, CLIENT};

/// The UDP port the responders listen on.
pub const PORT: u16 = 7600;
/// Time between two probes.
pub const INTERVAL: Duration = Duration::from_millis(2);

/// One answer to a probe: which host answered and when it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub host: usize,
    pub at: Instant,
}

/// Answers probes on every host of a Lan, from one thread polling one
/// socket per host namespace.
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    pub fn start(lan: &Lan) -> io::Result<Responder> {
        let mut sockets = Vec::new();
        for host in 1..=lan.hosts() {
            let socket = lan.in_ns(host, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)))?;
            socket.set_nonblocking(true)?;
            sockets.push((host, socket));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("responder".into())
            .spawn(move || respond(&sockets, &flag))?;
        Ok(Responder {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(sockets: &[(usize, UdpSocket)], stop: &AtomicBool) {
    let mut fds: Vec<PollFd> = sockets
        .iter()
        .map(|(_, s)| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if !poll(&mut fds, 50u16).is_ok_and(|n| n > 0) {
            continue;
        }
        for (i, fd) in fds.iter().enumerate() {
            if !fd.revents().is_some_and(|r| !r.is_empty()) {
                continue;
            }
            let (host, socket) = &sockets[i];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                if len < 4 {
                    continue;
                }
                let mut reply = [0u8; 5];
                reply[..4].copy_from_slice(&buf[..4]);
                // Host numbers stay below 256 (netns::MAX_HOSTS).
                reply[4] = *host as u8;
                let _ = socket.send_to(&reply, from);
            }
        }
    }
}

/// What the prober has seen: send times and answers, indexed by sequence.
#[derive(Debug, Default)]
struct Record {
    sent: Vec<Instant>,
    answers: Vec<Option<Answer>>,
}

#[derive(Debug)]
struct Shared {
    record: Mutex<Record>,
    stop: AtomicBool,
    paused: AtomicBool,
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        // A poisoned lock only means a prober thread panicked mid-update of
        // plain vectors; the data stays usable.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Probes the VIP from the client namespace every [`INTERVAL`].
#[derive(Debug)]
pub struct Prober {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Prober {
    pub fn start(lan: &Lan) -> io::Result<Prober> {
        let socket = lan.in_ns(CLIENT, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let target = SocketAddr::from((lan.vip4(), PORT));
        let shared = Arc::new(Shared {
            record: Mutex::new(Record::default()),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        });
        let rx = socket.try_clone()?;
        let (s1, s2) = (shared.clone(), shared.clone());
        let sender = std::thread::Builder::new()
            .name("probe-send".into())
            .spawn(move || send_loop(&socket, target, &s1))?;
        let receiver = std::thread::Builder::new()
            .name("probe-recv".into())
            .spawn(move || receive_loop(&rx, &s2))?;
        Ok(Prober {
            shared,
            threads: vec![sender, receiver],
        })
    }

    /// Stops sending (e.g. while counting the agents' own packets).
    pub fn pause(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Relaxed);
    }

    /// The sequence number the next probe will carry.
    pub fn next_seq(&self) -> usize {
        self.shared.record().sent.len()
    }

    /// The first probe at or after `from` answered by a host for which
    /// `accept` is true, if any yet.
    pub fn first_answer(
        &self,
        from: usize,
        accept: impl Fn(usize) -> bool,
    ) -> Option<(usize, Answer)> {
        let r = self.shared.record();
        r.answers
            .iter()
            .enumerate()
            .skip(from)
            .find_map(|(seq, a)| a.filter(|a| accept(a.host)).map(|a| (seq, a)))
    }

    /// The newest answer, if any.
    pub fn last_answer(&self) -> Option<(usize, Answer)> {
        let r = self.shared.record();
        r.answers
            .iter()
            .enumerate()
            .rev()
            .find_map(|(seq, a)| a.map(|a| (seq, a)))
    }

    /// What the client saw of probes `from..to`: how many were sent and
    /// lost, the longest run of lost probes, and who answered.
    pub fn span(&self, from: usize, to: usize) -> Span {
        let r = self.shared.record();
        span(&r.sent, &r.answers, from, to)
    }

    /// The outage the client saw before probe `answered` got its answer:
    /// from the send time of the first unanswered probe after the last
    /// answered one before `answered`, to the send time of `answered`.
    /// Zero when the probe just before `answered` was answered too. Its
    /// resolution is [`INTERVAL`].
    pub fn outage_before(&self, answered: usize) -> Duration {
        let r = self.shared.record();
        outage(&r.sent, &r.answers, answered)
    }
}

/// What the client saw of a run of probes: see [`Prober::span`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Probes sent.
    pub sent: usize,
    /// Probes sent that got no answer.
    pub lost: usize,
    /// The longest run of lost probes: from the send of its first probe to
    /// the send of the next answered one (or of the last probe of the span,
    /// when none was). Zero when none was lost; its resolution is
    /// [`INTERVAL`].
    pub outage: Duration,
    /// Answers per host number, in host order.
    pub answered_by: Vec<(usize, usize)>,
}

/// See [`Prober::span`].
fn span(sent: &[Instant], answers: &[Option<Answer>], from: usize, to: usize) -> Span {
    let to = to.min(sent.len()).min(answers.len());
    let from = from.min(to);
    let mut out = Span {
        sent: to - from,
        ..Span::default()
    };
    let mut lost_since: Option<usize> = None;
    for seq in from..to {
        match answers[seq] {
            Some(a) => {
                if let Some(first) = lost_since.take() {
                    out.outage = out
                        .outage
                        .max(sent[seq].saturating_duration_since(sent[first]));
                }
                match out.answered_by.iter_mut().find(|(h, _)| *h == a.host) {
                    Some((_, n)) => *n += 1,
                    None => out.answered_by.push((a.host, 1)),
                }
            }
            None => {
                out.lost += 1;
                lost_since.get_or_insert(seq);
            }
        }
    }
    if let Some(first) = lost_since {
        // Lost to the end: at least one probe interval.
        let last = sent[to - 1].saturating_duration_since(sent[first]);
        out.outage = out.outage.max(last + INTERVAL);
    }
    out.answered_by.sort_unstable();
    out
}

/// See [`Prober::outage_before`].
fn outage(sent: &[Instant], answers: &[Option<Answer>], answered: usize) -> Duration {
    let last = answers[..answered.min(answers.len())]
        .iter()
        .rposition(Option::is_some);
    let first_lost = last.map_or(0, |l| l + 1);
    if first_lost >= answered {
        return Duration::ZERO;
    }
    match (sent.get(first_lost), sent.get(answered)) {
        (Some(a), Some(b)) => b.saturating_duration_since(*a),
        _ => Duration::ZERO,
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[allow(clippy::disallowed_methods)] // the bench measures real time
fn send_loop(socket: &UdpSocket, target: SocketAddr, shared: &Shared) {
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > INTERVAL * 5 {
            // Stalled (a loaded machine): resume the schedule from now
            // rather than sending a burst.
            next = now;
        }
        next += INTERVAL;
        if shared.paused.load(Ordering::Relaxed) {
            continue;
        }
        let seq = {
            let mut r = shared.record();
            r.sent.push(Instant::now());
            r.answers.push(None);
            r.sent.len() - 1
        };
        // A send that fails (no ARP answer yet) is an unanswered probe.
        let _ = socket.send_to(&(seq as u32).to_be_bytes(), target);
    }
}

#[allow(clippy::disallowed_methods)] // the bench measures real time
fn receive_loop(socket: &UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 64];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        if len != 5 {
            continue;
        }
        let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let host = usize::from(buf[4]);
        let mut r = shared.record();
        if let Some(slot) = r.answers.get_mut(seq) {
            if slot.is_none() {
                *slot = Some(Answer { host, at });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // a base for synthetic send times
    fn probes(answered: &[bool]) -> (Vec<Instant>, Vec<Option<Answer>>) {
        let t0 = Instant::now();
        let sent: Vec<Instant> = (0..answered.len())
            .map(|i| t0 + INTERVAL * i as u32)
            .collect();
        let answers = answered
            .iter()
            .zip(&sent)
            .map(|(&a, &at)| a.then_some(Answer { host: 1, at }))
            .collect();
        (sent, answers)
    }

    #[test]
    fn outage_runs_from_the_first_unanswered_probe_to_the_answered_one() {
        let (sent, answers) = probes(&[true, true, false, false, false, true]);
        assert_eq!(outage(&sent, &answers, 5), INTERVAL * 3);
    }

    #[test]
    fn no_outage_when_the_previous_probe_was_answered() {
        let (sent, answers) = probes(&[true, true, true]);
        assert_eq!(outage(&sent, &answers, 2), Duration::ZERO);
    }

    #[test]
    fn a_span_counts_lost_probes_and_its_longest_outage() {
        let (sent, answers) = probes(&[true, false, true, false, false, true, false]);
        let s = span(&sent, &answers, 0, 7);
        assert_eq!((s.sent, s.lost), (7, 4));
        assert_eq!(
            s.outage,
            INTERVAL * 2,
            "probes 3 and 4, up to the send of 5"
        );
        assert_eq!(s.answered_by, vec![(1, 3)]);
        let s = span(&sent, &answers, 2, 3);
        assert_eq!((s.sent, s.lost, s.outage), (1, 0, Duration::ZERO));
        assert_eq!(span(&sent, &answers, 6, 99).outage, INTERVAL);
        assert_eq!(span(&sent, &answers, 9, 4).sent, 0);
    }

    #[test]
    fn outage_from_the_first_probe_when_none_was_answered_before() {
        let (sent, answers) = probes(&[false, false, true]);
        assert_eq!(outage(&sent, &answers, 2), INTERVAL * 2);
    }
}
