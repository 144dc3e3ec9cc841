//! `regent announce`: tells the neighbours on one link that addresses now
//! live at this host's link-layer address. IPv4 addresses get gratuitous ARP
//! requests (RFC 5227 announcements), IPv6 addresses unsolicited Neighbour
//! Advertisements with the Override flag (RFC 4861, 7.2.6). The shipped
//! `vip` hook calls it on promote and refresh, after it has added the
//! addresses.
//!
//! The packet builders are pure functions, tested byte by byte; [`announce`]
//! does the I/O: a raw `AF_PACKET` socket for ARP and a raw ICMPv6 socket
//! (the kernel fills in the ICMPv6 checksum) for neighbour advertisements.
//!
//! Architecture Invariant: this runs only as the `regent announce` command,
//! never inside the daemon: it sleeps between rounds and needs
//! `CAP_NET_RAW`. It reads no clock.
//!
//! Architecture Invariant: it announces only addresses the interface holds,
//! so a typo in a hook cannot steal another host's address.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use socket2::{Domain, Protocol, Socket, Type};

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// Length of a gratuitous ARP frame: Ethernet header (14) and ARP (28).
pub const ARP_FRAME_BYTES: usize = 42;

/// Length of a neighbour advertisement with one Target Link-Layer Address
/// option: ICMPv6 header (4), flags (4), target (16), option (8).
pub const NA_BYTES: usize = 32;

/// ICMPv6 type of a Neighbour Advertisement.
pub const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;

/// The Override flag: receivers replace a cached link-layer address.
pub const NA_FLAG_OVERRIDE: u8 = 0x20;

/// Neighbour discovery option type: Target Link-Layer Address.
pub const ND_OPT_TARGET_LLADDR: u8 = 2;

/// Receivers drop neighbour discovery packets with any other hop limit
/// (RFC 4861, 7.1.2), proof that they were not routed.
pub const ND_HOP_LIMIT: u32 = 255;

/// The all-nodes link-local multicast group, where unsolicited
/// advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An Ethernet (EUI-48) address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    /// Parses the `aa:bb:cc:dd:ee:ff` form that `/sys/class/net/*/address` uses.
    fn from_str(text: &str) -> Result<MacAddr, String> {
        let mut mac = [0u8; 6];
        let mut parts = text.trim().split(':');
        for byte in &mut mac {
            let part = parts.next().filter(|p| p.len() == 2);
            *byte = part
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{text:?} is not an Ethernet address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{text:?} is not an Ethernet address"));
        }
        Ok(MacAddr(mac))
    }
}

/// A whole Ethernet frame announcing that `addr` is at `mac`: a broadcast
/// ARP request whose sender and target protocol addresses are both `addr`,
/// the target hardware address zero (RFC 5227, 2.3). Every host on the link
/// that caches `addr` updates its entry.
pub fn gratuitous_arp(addr: Ipv4Addr, mac: MacAddr) -> [u8; ARP_FRAME_BYTES] {
    let mut frame = [0u8; ARP_FRAME_BYTES];
    // Ethernet: destination, source, EtherType.
    frame[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    frame[6..12].copy_from_slice(&mac.0);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // ARP: hardware Ethernet (1), protocol IPv4, lengths 6 and 4, request (1).
    frame[14..16].copy_from_slice(&1u16.to_be_bytes());
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes());
    // Sender hardware and protocol address; target hardware stays zero.
    frame[22..28].copy_from_slice(&mac.0);
    frame[28..32].copy_from_slice(&addr.octets());
    frame[38..42].copy_from_slice(&addr.octets());
    frame
}

/// The ICMPv6 message (no IPv6 header) of an unsolicited Neighbour
/// Advertisement for `target` at `mac`: Override set, Solicited and Router
/// clear, one Target Link-Layer Address option. The checksum is left zero:
/// the kernel computes it for raw ICMPv6 sockets.
pub fn neighbour_advertisement(target: Ipv6Addr, mac: MacAddr) -> [u8; NA_BYTES] {
    let mut message = [0u8; NA_BYTES];
    message[0] = ICMPV6_NEIGHBOUR_ADVERTISEMENT;
    // Code 0, checksum 0 (bytes 1..4); R, S, O are the top bits of byte 4.
    message[4] = NA_FLAG_OVERRIDE;
    message[8..24].copy_from_slice(&target.octets());
    // Option: type, length in units of 8 bytes, the address.
    message[24] = ND_OPT_TARGET_LLADDR;
    message[25] = 1;
    message[26..32].copy_from_slice(&mac.0);
    message
}

/// Why an announcement could not be made.
#[derive(Debug)]
pub enum AnnounceError {
    /// The interface does not exist, or its addresses cannot be listed.
    Link { dev: String, source: io::Error },
    /// The interface's link-layer address is unreadable or not Ethernet.
    Mac { dev: String, reason: String },
    /// The interface does not hold the address; nothing was sent for any.
    NotAssigned { addr: IpAddr, dev: String },
    /// A socket could not be opened or set up (usually: not root).
    Socket { what: String, source: io::Error },
    /// A packet could not be sent.
    Send {
        addr: IpAddr,
        dev: String,
        source: io::Error,
    },
}

impl fmt::Display for AnnounceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnnounceError::Link { dev, source } => write!(f, "interface {dev}: {source}"),
            AnnounceError::Mac { dev, reason } => {
                write!(
                    f,
                    "interface {dev} has no usable Ethernet address: {reason}"
                )
            }
            AnnounceError::NotAssigned { addr, dev } => write!(
                f,
                "{addr} is not assigned to {dev}; add it first (ip addr add), \
                 regent announces only addresses this host holds"
            ),
            AnnounceError::Socket { what, source } => write!(
                f,
                "cannot open {what}: {source} (raw sockets need root or CAP_NET_RAW)"
            ),
            AnnounceError::Send { addr, dev, source } => {
                write!(f, "cannot announce {addr} on {dev}: {source}")
            }
        }
    }
}

impl std::error::Error for AnnounceError {}

/// The interface announcements go out of.
#[derive(Debug)]
pub struct Link {
    /// Its name, e.g. `eth0`.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its Ethernet address, the one announced.
    pub mac: MacAddr,
}

impl Link {
    /// Looks up `name` in this network namespace; its MAC is read from
    /// `/sys/class/net/NAME/address`.
    pub fn open(name: &str) -> Result<Link, AnnounceError> {
        let index = crate::net::interface_index(name).map_err(|source| AnnounceError::Link {
            dev: name.to_owned(),
            source,
        })?;
        let path = Path::new("/sys/class/net").join(name).join("address");
        let text = std::fs::read_to_string(&path).map_err(|e| AnnounceError::Mac {
            dev: name.to_owned(),
            reason: format!("reading {}: {e}", path.display()),
        })?;
        let mac = text.parse().map_err(|reason| AnnounceError::Mac {
            dev: name.to_owned(),
            reason,
        })?;
        if mac == MacAddr([0; 6]) {
            return Err(AnnounceError::Mac {
                dev: name.to_owned(),
                reason: "it is 00:00:00:00:00:00 (loopback or a layer-3 device)".to_owned(),
            });
        }
        Ok(Link {
            name: name.to_owned(),
            index,
            mac,
        })
    }
}

/// Announces every address in `addrs` on `dev`, `count` times, `interval`
/// apart (nothing is waited for after the last round). Fails before sending
/// anything if the interface lacks any of the addresses.
pub fn announce(
    dev: &str,
    addrs: &[IpAddr],
    count: u32,
    interval: Duration,
) -> Result<Link, AnnounceError> {
    let link = Link::open(dev)?;
    let held = crate::net::interface_addresses(dev).map_err(|source| AnnounceError::Link {
        dev: dev.to_owned(),
        source,
    })?;
    if let Some(addr) = addrs.iter().find(|a| !held.contains(a)) {
        return Err(AnnounceError::NotAssigned {
            addr: *addr,
            dev: dev.to_owned(),
        });
    }
    let mut senders = Vec::with_capacity(addrs.len());
    let mut arp = None;
    for addr in addrs {
        let sender = match addr {
            IpAddr::V4(v4) => {
                if arp.is_none() {
                    arp = Some(packet_socket()?);
                }
                Sender::Arp(gratuitous_arp(*v4, link.mac))
            }
            IpAddr::V6(v6) => {
                let socket = icmpv6_socket(&link, *v6)?;
                Sender::Na(socket, neighbour_advertisement(*v6, link.mac))
            }
        };
        senders.push((*addr, sender));
    }
    for round in 0..count {
        if round > 0 {
            std::thread::sleep(interval);
        }
        for (addr, sender) in &senders {
            let sent = match sender {
                Sender::Arp(frame) => match &arp {
                    Some(fd) => send_frame(fd, link.index, frame),
                    None => Ok(()),
                },
                Sender::Na(socket, message) => {
                    let to = SocketAddrV6::new(ALL_NODES, 0, 0, link.index);
                    socket.send_to(message, &to.into()).map(drop)
                }
            };
            sent.map_err(|source| AnnounceError::Send {
                addr: *addr,
                dev: dev.to_owned(),
                source,
            })?;
        }
    }
    Ok(link)
}

/// What goes out for one address each round.
enum Sender {
    Arp([u8; ARP_FRAME_BYTES]),
    Na(Socket, [u8; NA_BYTES]),
}

/// A raw packet socket for sending whole Ethernet frames. Protocol 0: it
/// receives nothing, so nothing queues up in it.
fn packet_socket() -> Result<OwnedFd, AnnounceError> {
    socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| AnnounceError::Socket {
        what: "a packet socket for ARP".to_owned(),
        source: io::Error::from(e),
    })
}

/// Sends one whole frame out of interface `index`.
fn send_frame(fd: &OwnedFd, index: u32, frame: &[u8]) -> io::Result<()> {
    let mut to = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: ETHERTYPE_ARP.to_be(),
        sll_ifindex: libc::c_int::try_from(index).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0; 8],
    };
    to.sll_addr[..6].copy_from_slice(&MacAddr::BROADCAST.0);
    // nix sends to a LinkAddr but has no safe way to build one, so this
    // stays a raw sendto(2).
    // SAFETY: `frame` is valid for its length, `to` is a sockaddr_ll of the
    // size passed, and the descriptor is open for the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match usize::try_from(sent) {
        Ok(n) if n == frame.len() => Ok(()),
        Ok(n) => Err(io::Error::other(format!(
            "sent {n} of {} bytes",
            frame.len()
        ))),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

/// A raw ICMPv6 socket sending from `source` out of `link` with hop limit 255.
fn icmpv6_socket(link: &Link, source: Ipv6Addr) -> Result<Socket, AnnounceError> {
    let what = |step: &str| format!("a raw ICMPv6 socket ({step}) for {source}");
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(|e| {
        AnnounceError::Socket {
            what: what("socket"),
            source: e,
        }
    })?;
    socket
        .set_multicast_hops_v6(ND_HOP_LIMIT)
        .map_err(|e| AnnounceError::Socket {
            what: what("IPV6_MULTICAST_HOPS"),
            source: e,
        })?;
    socket
        .set_multicast_if_v6(link.index)
        .map_err(|e| AnnounceError::Socket {
            what: what("IPV6_MULTICAST_IF"),
            source: e,
        })?;
    // A link-local source needs its interface as scope; other scopes ignore it.
    let scope = if source.segments()[0] & 0xffc0 == 0xfe80 {
        link.index
    } else {
        0
    };
    socket
        .bind(&SocketAddrV6::new(source, 0, 0, scope).into())
        .map_err(|e| AnnounceError::Socket {
            what: what("bind"),
            source: e,
        })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x07]);

    #[test]
    fn mac_parses_and_prints_the_sysfs_form() {
        let mac: MacAddr = "02:42:ac:11:00:07\n".parse().expect("parses");
        assert_eq!(mac, MAC);
        assert_eq!(mac.to_string(), "02:42:ac:11:00:07");
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:07:08",
            "2:42:ac:11:00:07",
            "zz:42:ac:11:00:07",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn gratuitous_arp_is_a_broadcast_request_for_the_address_itself() {
        let frame = gratuitous_arp(Ipv4Addr::new(10, 0, 0, 100), MAC);
        #[rustfmt::skip]
        let expected: [u8; ARP_FRAME_BYTES] = [
            // Ethernet: broadcast destination, our source, ARP.
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x42, 0xac, 0x11, 0x00, 0x07,
            0x08, 0x06,
            // Ethernet/IPv4, lengths 6/4, request.
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // Sender: our MAC, the VIP.
            0x02, 0x42, 0xac, 0x11, 0x00, 0x07, 10, 0, 0, 100,
            // Target: zero MAC, the VIP again.
            0, 0, 0, 0, 0, 0, 10, 0, 0, 100,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn neighbour_advertisement_overrides_and_carries_our_mac() {
        let target: Ipv6Addr = "fd00::100".parse().expect("address");
        let message = neighbour_advertisement(target, MAC);
        #[rustfmt::skip]
        let expected: [u8; NA_BYTES] = [
            // Type 136, code 0, checksum left to the kernel.
            136, 0, 0, 0,
            // R=0 S=0 O=1, reserved.
            0x20, 0, 0, 0,
            // Target address.
            0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
            // Target Link-Layer Address option, 1 x 8 bytes.
            2, 1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x07,
        ];
        assert_eq!(message, expected);
    }

    #[test]
    fn missing_interface_is_a_clear_error() {
        let e = announce(
            "rgt-no-such0",
            &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
            1,
            Duration::ZERO,
        )
        .expect_err("no such interface");
        let text = e.to_string();
        assert!(text.contains("rgt-no-such0"), "{text}");
    }

    #[test]
    fn an_address_the_interface_lacks_is_refused_before_anything_is_sent() {
        // Loopback has no Ethernet address, so use any interface with one,
        // if this machine has such an interface at all.
        let Some(dev) = std::fs::read_dir("/sys/class/net").ok().and_then(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|name| Link::open(name).is_ok())
        }) else {
            return;
        };
        // TEST-NET-2, never assigned to a real interface.
        let addr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77));
        match announce(&dev, &[addr], 1, Duration::ZERO) {
            Err(AnnounceError::NotAssigned { addr: a, dev: d }) => {
                assert_eq!((a, d.as_str()), (addr, dev.as_str()));
            }
            other => panic!("expected NotAssigned, got {other:?}"),
        }
    }
}
