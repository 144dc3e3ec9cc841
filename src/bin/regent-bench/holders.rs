//! Who holds the VIP, host by host, over time: one rtnetlink socket per host
//! namespace, subscribed to IPv4 address events, so every add and delete of
//! the VIP is timed to within the monitor thread's wake-up, not to a sample
//! interval. A dump at start (and again after a lost event) gives the state.
//!
//! It only watches: it never changes an address.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use crate::netns::Lan;

/// The VIP appeared on or left one host.
#[derive(Clone, Copy, Debug)]
pub struct Change {
    pub at: Instant,
    pub host: usize,
    pub present: bool,
}

#[derive(Debug)]
struct State {
    present: Vec<bool>,
    changes: Vec<Change>,
}

#[derive(Debug)]
pub struct Holders {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Holders {
    /// Starts watching every host of `lan` for `vip`; returns once the
    /// first dump of every host is in.
    pub fn start(lan: &Lan, vip: Ipv4Addr) -> io::Result<Holders> {
        let mut sockets = Vec::new();
        for host in 1..=lan.hosts() {
            let fd = lan.in_ns(host, open_socket)?;
            sockets.push(Watched {
                host,
                fd,
                dumping: false,
                dump_saw: false,
            });
        }
        let state = Arc::new(Mutex::new(State {
            present: vec![false; lan.hosts() + 1],
            changes: Vec::new(),
        }));
        for w in &mut sockets {
            w.request_dump()?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (st, flag) = (state.clone(), stop.clone());
        let vip = vip.octets();
        let thread = std::thread::Builder::new()
            .name("holders".into())
            .spawn(move || watch(sockets, vip, &st, &flag))?;
        let holders = Holders {
            state,
            stop,
            thread: Some(thread),
        };
        // The dumps are answered within microseconds; give them a moment.
        std::thread::sleep(Duration::from_millis(50));
        Ok(holders)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hosts holding the VIP now.
    pub fn now(&self) -> Vec<usize> {
        let s = self.state();
        (1..s.present.len()).filter(|&h| s.present[h]).collect()
    }

    /// When the set of holders last changed.
    pub fn last_change(&self) -> Option<Instant> {
        self.state().changes.last().map(|c| c.at)
    }

    /// Every change in `[from, to]`.
    pub fn changes(&self, from: Instant, to: Instant) -> Vec<Change> {
        self.state()
            .changes
            .iter()
            .filter(|c| c.at >= from && c.at <= to)
            .copied()
            .collect()
    }

    /// How often the VIP was newly assigned to a host within `[from, to]`.
    pub fn acquisitions(&self, from: Instant, to: Instant) -> usize {
        self.changes(from, to).iter().filter(|c| c.present).count()
    }

    /// How long within `[from, to]` more than one host held the VIP.
    pub fn overlap(&self, from: Instant, to: Instant) -> Duration {
        self.overlap_without(from, to, None)
    }

    /// Like [`Holders::overlap`], not counting host `without` (a crashed
    /// host keeps its address, cut off from everyone, until it reboots).
    pub fn overlap_without(&self, from: Instant, to: Instant, without: Option<usize>) -> Duration {
        let s = self.state();
        let mut present = vec![false; s.present.len()];
        let mut total = Duration::ZERO;
        let mut since: Option<Instant> = None;
        for c in s
            .changes
            .iter()
            .filter(|c| c.at <= to && Some(c.host) != without)
        {
            present[c.host] = c.present;
            let many = present.iter().filter(|&&p| p).count() > 1;
            match (many, since) {
                (true, None) => since = Some(c.at.max(from)),
                (false, Some(start)) => {
                    total += c.at.max(from).saturating_duration_since(start);
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(start) = since {
            total += to.saturating_duration_since(start);
        }
        total
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct Watched {
    host: usize,
    fd: OwnedFd,
    /// A dump is under way: at its end, the VIP is absent unless it saw it.
    dumping: bool,
    dump_saw: bool,
}

impl Watched {
    fn request_dump(&mut self) -> io::Result<()> {
        // nlmsghdr (16 bytes) + ifaddrmsg (8 bytes).
        let mut req = [0u8; 24];
        req[0..4].copy_from_slice(&24u32.to_ne_bytes());
        req[4..6].copy_from_slice(&libc::RTM_GETADDR.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        req[6..8].copy_from_slice(&flags.to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        req[16] = libc::AF_INET as u8;
        send(self.fd.as_raw_fd(), &req, MsgFlags::empty())?;
        self.dumping = true;
        self.dump_saw = false;
        Ok(())
    }
}

fn open_socket() -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkRoute,
    )?;
    // Port id 0: the kernel assigns one.
    let addr = NetlinkAddr::new(0, libc::RTMGRP_IPV4_IFADDR as u32);
    bind(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

#[allow(clippy::disallowed_methods)] // the bench measures real time
fn watch(mut sockets: Vec<Watched>, vip: [u8; 4], state: &Mutex<State>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        // The poll set borrows the sockets, which are changed below: it is
        // made anew on each round.
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd> = sockets
                .iter()
                .map(|w| PollFd::new(w.fd.as_fd(), PollFlags::POLLIN))
                .collect();
            if !poll(&mut fds, 50u16).is_ok_and(|n| n > 0) {
                continue;
            }
            (0..fds.len())
                .filter(|&i| fds[i].revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        for i in ready {
            let w = &mut sockets[i];
            loop {
                let got = recv(w.fd.as_raw_fd(), &mut buf, MsgFlags::empty());
                let at = Instant::now();
                let len = match got {
                    Ok(len) => len,
                    Err(Errno::ENOBUFS) => {
                        // Events were lost: ask for the whole state again.
                        let _ = w.request_dump();
                        continue;
                    }
                    Err(_) => break,
                };
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                for (kind, present) in parse(&buf[..len], vip) {
                    match kind {
                        Kind::Address => {
                            w.dump_saw |= w.dumping && present;
                            set(&mut s, w.host, present, at);
                        }
                        // A dump lists what is present: absent from it is absent.
                        Kind::DumpDone => {
                            w.dumping = false;
                            set(&mut s, w.host, w.dump_saw, at);
                        }
                    }
                }
            }
        }
    }
}

fn set(s: &mut State, host: usize, present: bool, at: Instant) {
    if s.present[host] != present {
        s.present[host] = present;
        s.changes.push(Change { at, host, present });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An RTM_NEWADDR (present) or RTM_DELADDR (absent) of the VIP.
    Address,
    /// The end of a dump.
    DumpDone,
}

/// The VIP events in one netlink datagram, in order.
fn parse(mut buf: &[u8], vip: [u8; 4]) -> Vec<(Kind, bool)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        let body = &buf[16..len];
        if kind == libc::NLMSG_DONE as u16 {
            out.push((Kind::DumpDone, false));
        } else if (kind == libc::RTM_NEWADDR || kind == libc::RTM_DELADDR)
            && body.len() >= 8
            && body[0] == libc::AF_INET as u8
            && carries(&body[8..], vip)
        {
            out.push((Kind::Address, kind == libc::RTM_NEWADDR));
        }
        let advance = (len + 3) & !3;
        buf = &buf[advance.min(buf.len())..];
    }
    out
}

/// Whether the rtattrs of an ifaddrmsg name `vip` as the local address.
fn carries(mut attrs: &[u8], vip: [u8; 4]) -> bool {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return false;
        }
        if (kind == libc::IFA_LOCAL || kind == libc::IFA_ADDRESS) && attrs[4..len] == vip {
            return true;
        }
        let advance = (len + 3) & !3;
        attrs = &attrs[advance.min(attrs.len())..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTM_NEWADDR or RTM_DELADDR message for `addr`, as the kernel
    /// sends it: nlmsghdr, ifaddrmsg, then IFA_ADDRESS and IFA_LOCAL.
    fn message(kind: u16, addr: [u8; 4]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0; 8]); // seq, pid
        m.extend_from_slice(&[libc::AF_INET as u8, 24, 0, 0, 2, 0, 0, 0]);
        for attr in [libc::IFA_ADDRESS, libc::IFA_LOCAL] {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&attr.to_ne_bytes());
            m.extend_from_slice(&addr);
        }
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn new_and_deleted_vip_and_the_end_of_a_dump_are_seen_in_order() {
        let vip = [10, 1, 2, 250];
        let mut buf = message(libc::RTM_NEWADDR, [10, 1, 2, 1]);
        buf.extend(message(libc::RTM_NEWADDR, vip));
        buf.extend(message(libc::RTM_DELADDR, vip));
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        buf.extend(done);
        assert_eq!(
            parse(&buf, vip),
            vec![
                (Kind::Address, true),
                (Kind::Address, false),
                (Kind::DumpDone, false)
            ]
        );
    }

    #[test]
    fn truncated_messages_end_the_parse() {
        let vip = [10, 1, 2, 250];
        let m = message(libc::RTM_NEWADDR, vip);
        assert!(parse(&m[..m.len() - 1], vip).is_empty());
    }
}
