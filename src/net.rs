//! Heartbeat sockets: one non-blocking UDP endpoint per daemon, either joined
//! to a multicast group on one named interface or sending to a fixed list of
//! unicast peers.
//!
//! Architecture Invariant: this module opens, configures and moves bytes
//! through sockets. It does not decode, authenticate or interpret datagrams,
//! it reads no clock, and it never panics on a network error: every failure
//! comes back as an `io::Error` whose text names the interface or address
//! involved.

use std::ffi::CString;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, MsgFlags, SockaddrStorage};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

pub use crate::config::Transport;

/// An open heartbeat socket and the destinations each datagram goes to.
pub struct Endpoint {
    /// The non-blocking socket, public so the driver can register it with mio.
    pub socket: UdpSocket,
    /// The multicast group, or every unicast peer; one datagram goes to each.
    targets: Vec<SocketAddr>,
    /// What this endpoint is, for error messages, e.g. `239.1.1.1:7475 on eth0`.
    label: String,
    /// With multicast, the socket for the members reached by unicast (a
    /// witness behind a router, say): bound to this host's own address, so
    /// it hears their datagrams and never the group's.
    unicast: Option<Box<Endpoint>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("label", &self.label)
            .field("local", &self.socket.local_addr().ok())
            .field("targets", &self.targets)
            .field("unicast", &self.unicast)
            .finish()
    }
}

impl Endpoint {
    /// Opens the socket for `transport`.
    ///
    /// Multicast: binds the group address and port with `SO_REUSEADDR` and
    /// `SO_REUSEPORT`, so several daemons on one host (other clusters, the
    /// demo) can share it; joins the group on the named interface only; sends
    /// from that interface with TTL / hop limit 1; turns multicast loop off
    /// unless `loopback`; and turns `IP_MULTICAST_ALL` / `IPV6_MULTICAST_ALL`
    /// off so the socket receives only its own group, never another group
    /// some other socket on the host joined. `peers` is ignored: each datagram
    /// goes to the group once, unless the transport names a `unicast`
    /// address: then a second socket bound there sends each datagram to
    /// every address in `peers` as well, and hears them.
    ///
    /// Unicast: binds `bind` (or the wildcard) and `port`, and sends each
    /// datagram to every address in `peers`. With no `bind` and an IPv6 peer
    /// the socket is dual-stack and IPv4 peers are reached through their
    /// IPv4-mapped addresses.
    pub fn open(transport: &Transport, peers: &[SocketAddr]) -> io::Result<Endpoint> {
        let endpoint = match transport {
            Transport::Multicast {
                group,
                interface,
                loopback,
                unicast,
            } => {
                let mut endpoint = open_multicast(*group, interface, *loopback)?;
                if let Some(local) = unicast {
                    let side = open_unicast(local.port(), Some(local.ip()), peers)?;
                    endpoint.unicast = Some(Box::new(side));
                }
                endpoint
            }
            Transport::Unicast { port, bind } => open_unicast(*port, *bind, peers)?,
        };
        log::debug!("opened heartbeat endpoint {endpoint:?}");
        Ok(endpoint)
    }

    /// Sends `bytes` as one datagram to the group, or to each unicast peer,
    /// and returns how many destinations the kernel accepted it for.
    ///
    /// A send that fails for some peers but not all returns the count of
    /// those reached (less than [`Endpoint::targets`]'s length), so one dead
    /// peer never silences the others. If none is reached the first error is
    /// returned; a full send buffer everywhere is reported as `WouldBlock`.
    pub fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut reached = 0;
        let mut first_error: Option<io::Error> = None;
        let sides = std::iter::once(self).chain(self.unicast.as_deref());
        for (side, target) in sides.flat_map(|side| side.targets.iter().map(move |t| (side, t))) {
            match side.socket.send_to(bytes, *target) {
                Ok(_) => reached += 1,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::debug!("send to {target} via {}: {e}", side.label);
                    }
                    let replace = match &first_error {
                        None => true,
                        // A real error says more than a full buffer does.
                        Some(seen) => seen.kind() == io::ErrorKind::WouldBlock,
                    };
                    if replace {
                        // WouldBlock passes unchanged: it is routine, and
                        // formatting a message for it would allocate for nothing.
                        first_error = Some(if e.kind() == io::ErrorKind::WouldBlock {
                            e
                        } else {
                            annotate(e, format!("send to {target} via {}", side.label))
                        });
                    }
                }
            }
        }
        match first_error {
            Some(e) if reached == 0 => Err(e),
            _ => Ok(reached),
        }
    }

    /// Receives one datagram into `buf`: `Ok(Some((len, from)))`, or
    /// `Ok(None)` when nothing is waiting.
    ///
    /// A datagram longer than `buf` is dropped and reported as an
    /// `InvalidData` error (the socket stays usable), so the caller never
    /// mistakes a truncated datagram for a whole one. IPv4 senders reaching a
    /// dual-stack socket are reported with their plain IPv4 address.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        match self.recv_one(buf)? {
            None => match &self.unicast {
                Some(side) => side.recv(buf),
                None => Ok(None),
            },
            got => Ok(got),
        }
    }

    /// Registers every socket of this endpoint with `registry`, under `token`.
    pub fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        registry.register(&mut self.socket, token, mio::Interest::READABLE)?;
        if let Some(side) = self.unicast.as_mut() {
            side.register(registry, token)?;
        }
        Ok(())
    }

    /// Receives one datagram from this endpoint's own socket.
    fn recv_one(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        let fd = self.socket.as_raw_fd();
        let (len, from) = loop {
            let mut iov = [IoSliceMut::new(buf)];
            // MSG_TRUNC makes recvmsg return the datagram's real length.
            match recvmsg::<SockaddrStorage>(fd, &mut iov, None, MsgFlags::MSG_TRUNC) {
                Ok(got) => break (got.bytes, got.address.as_ref().and_then(socket_addr)),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    let e = io::Error::from(e);
                    return Err(annotate(e, format!("receive on {}", self.label)));
                }
            }
        };
        let from = from.map(canonical).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("receive on {}: datagram from a non-IP address", self.label),
            )
        })?;
        if len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "receive on {}: datagram of {len} bytes from {from} exceeds the {}-byte buffer; dropped",
                    self.label,
                    buf.len()
                ),
            ));
        }
        Ok(Some((len, from)))
    }

    /// With multicast: a second socket reaches members by unicast.
    pub fn has_unicast_side(&self) -> bool {
        self.unicast.is_some()
    }

    /// A new member list: datagrams go to these unicast peers from now on
    /// (in unicast mode, or beside the group). With multicast and no
    /// unicast socket the list must be empty: a socket for it needs a
    /// restart.
    pub fn set_peers(&mut self, peers: &[SocketAddr], multicast: bool) -> io::Result<()> {
        let side = match (multicast, self.unicast.as_deref_mut()) {
            (true, Some(side)) => side,
            (true, None) if peers.is_empty() => return Ok(()),
            (true, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "members reached by unicast beside the group need network.unicast_address \
                     set at start",
                ))
            }
            (false, _) => self,
        };
        let bind = side.socket.local_addr()?.ip();
        side.targets = unicast_targets(peers, bind, &side.label)?;
        Ok(())
    }

    /// Where each datagram goes: the group, or every unicast peer; then the
    /// members reached by unicast beside the group.
    pub fn targets(&self) -> Vec<SocketAddr> {
        let beside = self.unicast.iter().flat_map(|side| side.targets.iter());
        self.targets.iter().chain(beside).copied().collect()
    }
}

/// The index of the network interface `name`, as `if_nametoindex(3)` gives it.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let c_name = interface_c_name(name)?;
    nix::net::if_::if_nametoindex(c_name.as_c_str()).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?}: {e}"),
        )
    })
}

/// The first IPv4 address of interface `name`, `None` if it has none.
/// An interface that does not exist is a `NotFound` error.
pub fn interface_ipv4(name: &str) -> io::Result<Option<Ipv4Addr>> {
    Ok(interface_addresses(name)?
        .into_iter()
        .find_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }))
}

/// Every IPv4 and IPv6 address of interface `name`, in the kernel's order.
/// An interface that does not exist is a `NotFound` error.
pub fn interface_addresses(name: &str) -> io::Result<Vec<IpAddr>> {
    // Checked for its length only: the list names interfaces as strings.
    interface_c_name(name)?;
    let list = nix::ifaddrs::getifaddrs().map_err(|e| {
        let e = io::Error::from(e);
        annotate(e, format!("list addresses of {name}"))
    })?;
    let mut seen = false;
    let mut found = Vec::new();
    for ifa in list {
        if ifa.interface_name != name {
            continue;
        }
        seen = true;
        if let Some(addr) = ifa.address.as_ref().and_then(socket_addr) {
            found.push(addr.ip());
        }
    }
    if !seen {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?}"),
        ));
    }
    Ok(found)
}

fn open_multicast(group: SocketAddr, interface: &str, loopback: bool) -> io::Result<Endpoint> {
    let label = format!("{group} on {interface}");
    if !group.ip().is_multicast() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("multicast group {group} is not a multicast address"),
        ));
    }
    let index = interface_index(interface)?;
    let (socket, target) = match group {
        SocketAddr::V4(group) => {
            let source = interface_ipv4(interface)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("interface {interface} has no IPv4 address to send {label} from"),
                )
            })?;
            let socket = new_socket(Domain::IPV4, &label)?;
            shared_port(&socket, &label)?;
            socket
                .bind(&SocketAddr::V4(group).into())
                .map_err(|e| annotate(e, format!("bind {group}")))?;
            socket
                .join_multicast_v4_n(group.ip(), &InterfaceIndexOrAddress::Index(index))
                .map_err(|e| annotate(e, format!("join {} on {interface}", group.ip())))?;
            set_multicast_if_v4(&socket, index, source)
                .map_err(|e| annotate(e, format!("send {} from {interface}", group.ip())))?;
            socket
                .set_multicast_ttl_v4(1)
                .map_err(|e| annotate(e, format!("multicast TTL 1 for {label}")))?;
            socket
                .set_multicast_loop_v4(loopback)
                .map_err(|e| annotate(e, format!("multicast loop {loopback} for {label}")))?;
            socket
                .set_multicast_all_v4(false)
                .map_err(|e| annotate(e, format!("IP_MULTICAST_ALL off for {label}")))?;
            (socket, SocketAddr::V4(group))
        }
        SocketAddr::V6(group) => {
            // The scope id picks the interface for link-local groups (ff02::),
            // both when binding and when sending; other scopes ignore it.
            let group = SocketAddrV6::new(*group.ip(), group.port(), 0, index);
            let socket = new_socket(Domain::IPV6, &label)?;
            socket
                .set_only_v6(true)
                .map_err(|e| annotate(e, format!("IPV6_V6ONLY for {label}")))?;
            shared_port(&socket, &label)?;
            socket
                .bind(&SocketAddr::V6(group).into())
                .map_err(|e| annotate(e, format!("bind {group}")))?;
            socket
                .join_multicast_v6(group.ip(), index)
                .map_err(|e| annotate(e, format!("join {} on {interface}", group.ip())))?;
            socket
                .set_multicast_if_v6(index)
                .map_err(|e| annotate(e, format!("send {} from {interface}", group.ip())))?;
            socket
                .set_multicast_hops_v6(1)
                .map_err(|e| annotate(e, format!("multicast hop limit 1 for {label}")))?;
            socket
                .set_multicast_loop_v6(loopback)
                .map_err(|e| annotate(e, format!("multicast loop {loopback} for {label}")))?;
            socket
                .set_multicast_all_v6(false)
                .map_err(|e| annotate(e, format!("IPV6_MULTICAST_ALL off for {label}")))?;
            (socket, SocketAddr::V6(group))
        }
    };
    Ok(Endpoint {
        socket: into_mio(socket, &label)?,
        targets: vec![target],
        label,
        unicast: None,
    })
}

/// Each peer's address as a socket bound to `bind` reaches it: IPv4 peers
/// of a dual-stack socket through their IPv4-mapped addresses.
fn unicast_targets(peers: &[SocketAddr], bind: IpAddr, label: &str) -> io::Result<Vec<SocketAddr>> {
    let dual_stack = bind == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    peers
        .iter()
        .map(|peer| match (peer, bind) {
            (SocketAddr::V4(_), IpAddr::V4(_)) | (SocketAddr::V6(_), IpAddr::V6(_)) => Ok(*peer),
            (SocketAddr::V4(v4), IpAddr::V6(_)) if dual_stack => Ok(SocketAddr::V6(
                SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("peer {peer} cannot be reached from {label}: address families differ"),
            )),
        })
        .collect()
}

fn open_unicast(port: u16, bind: Option<IpAddr>, peers: &[SocketAddr]) -> io::Result<Endpoint> {
    let any_v6_peer = peers.iter().any(SocketAddr::is_ipv6);
    let bind = bind.unwrap_or(if any_v6_peer {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let local = SocketAddr::new(bind, port);
    let label = format!("unicast {local}");
    let targets = unicast_targets(peers, bind, &label)?;
    let socket = new_socket(Domain::for_address(local), &label)?;
    let dual_stack = bind == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    if bind.is_ipv6() {
        socket
            .set_only_v6(!dual_stack)
            .map_err(|e| annotate(e, format!("IPV6_V6ONLY {} for {label}", !dual_stack)))?;
    }
    socket
        .bind(&local.into())
        .map_err(|e| annotate(e, format!("bind {local}")))?;
    Ok(Endpoint {
        socket: into_mio(socket, &label)?,
        targets,
        label,
        unicast: None,
    })
}

/// The receive buffer asked for. Datagrams that arrive while the event loop
/// waits for a CPU wait here: a burst of garbage, or the heartbeats of a
/// large group, must not push real heartbeats out of a full buffer.
pub const RECEIVE_BUFFER_BYTES: usize = 4 << 20;

fn new_socket(domain: Domain, label: &str) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))
        .map_err(|e| annotate(e, format!("create UDP socket for {label}")))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| annotate(e, format!("make {label} non-blocking")))?;
    grow_receive_buffer(&socket, label);
    Ok(socket)
}

/// `SO_RCVBUFFORCE` (root, or `CAP_NET_ADMIN`) sets the buffer past the
/// `net.core.rmem_max` cap; without the privilege `SO_RCVBUF` gets as much
/// as the cap allows. Neither failing stops the daemon.
fn grow_receive_buffer(socket: &Socket, label: &str) {
    let forced = setsockopt(socket, sockopt::RcvBufForce, &RECEIVE_BUFFER_BYTES).is_ok();
    if !forced {
        if let Err(e) = socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES) {
            log::warn!("receive buffer of {label} left at its default: {e}");
        }
    }
    if let Ok(got) = socket.recv_buffer_size() {
        log::debug!("receive buffer of {label}: {got} bytes");
    }
}

/// Lets several sockets on one host bind the same group and port; each of
/// them receives every datagram to the group.
fn shared_port(socket: &Socket, label: &str) -> io::Result<()> {
    socket
        .set_reuse_address(true)
        .map_err(|e| annotate(e, format!("SO_REUSEADDR for {label}")))?;
    socket
        .set_reuse_port(true)
        .map_err(|e| annotate(e, format!("SO_REUSEPORT for {label}")))
}

/// `IP_MULTICAST_IF` with an `ip_mreqn`, which names the interface by index
/// (socket2 only takes an address, and addresses can move between
/// interfaces; the index cannot).
fn set_multicast_if_v4(socket: &Socket, index: u32, source: Ipv4Addr) -> io::Result<()> {
    let index = libc::c_int::try_from(index).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface index {index} out of range"),
        )
    })?;
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        imr_ifindex: index,
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::ip_mreqn>())
        .map_err(|_| io::Error::other("ip_mreqn size out of range"))?;
    // nix has no IP_MULTICAST_IF option, so this stays a raw setsockopt(2).
    // SAFETY: the pointer and length describe `mreqn`, which lives across the
    // call, and the descriptor is borrowed from `socket`, open for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&mreqn as *const libc::ip_mreqn).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn into_mio(socket: Socket, label: &str) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::from(socket);
    // The socket is already non-blocking, as mio requires.
    let socket = UdpSocket::from_std(socket);
    socket
        .local_addr()
        .map_err(|e| annotate(e, format!("local address of {label}")))?;
    Ok(socket)
}

fn interface_c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "interface name {name:?} must be 1 to {} bytes long",
                libc::IFNAMSIZ - 1
            ),
        ));
    }
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} contains a NUL byte"),
        )
    })
}

/// An IPv4 peer reaching a dual-stack socket shows up as `::ffff:a.b.c.d`;
/// report it as the plain IPv4 address the configuration names.
fn canonical(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => from,
        },
        SocketAddr::V4(_) => from,
    }
}

/// An IPv4 or IPv6 socket address as std's type; `None` for other families.
fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(sin) = addr.as_sockaddr_in() {
        Some(SocketAddr::V4(SocketAddrV4::from(*sin)))
    } else {
        addr.as_sockaddr_in6()
            .map(|sin6| SocketAddr::V6(SocketAddrV6::from(*sin6)))
    }
}

/// Prefixes an error with what was being done, keeping its kind.
fn annotate(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    const LOCAL4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const LOCAL6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn unicast(bind: IpAddr, peers: &[SocketAddr]) -> Endpoint {
        let transport = Transport::Unicast {
            port: 0,
            bind: Some(bind),
        };
        Endpoint::open(&transport, peers).expect("open a unicast endpoint on loopback")
    }

    fn local(endpoint: &Endpoint) -> SocketAddr {
        endpoint
            .socket
            .local_addr()
            .expect("a bound socket has a local address")
    }

    /// Polls `endpoint` until a datagram arrives; loopback delivery is
    /// immediate, so a short bounded wait is plenty.
    fn recv_soon(endpoint: &Endpoint, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        for _ in 0..200 {
            if let Some(got) = endpoint.recv(buf)? {
                return Ok(got);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no datagram within a second",
        ))
    }

    #[test]
    fn unicast_round_trip_on_loopback() {
        let receiver = unicast(LOCAL4, &[]);
        let sender = unicast(LOCAL4, &[local(&receiver)]);
        assert_ne!(local(&receiver).port(), local(&sender).port());
        assert_eq!(sender.send(b"heartbeat").expect("send"), 1);
        let mut buf = [0u8; 64];
        let (len, from) = recv_soon(&receiver, &mut buf).expect("receive");
        assert_eq!(&buf[..len], b"heartbeat");
        assert_eq!(from, local(&sender));
    }

    #[test]
    fn unicast_sends_one_datagram_to_each_peer() {
        let first = unicast(LOCAL4, &[]);
        let second = unicast(LOCAL4, &[]);
        let sender = unicast(LOCAL4, &[local(&first), local(&second)]);
        assert_eq!(sender.targets(), [local(&first), local(&second)]);
        assert_eq!(sender.send(b"hb").expect("send"), 2);
        let mut buf = [0u8; 16];
        for receiver in [&first, &second] {
            let (len, _) = recv_soon(receiver, &mut buf).expect("receive");
            assert_eq!(&buf[..len], b"hb");
            assert_eq!(
                receiver.recv(&mut buf).expect("recv"),
                None,
                "exactly one datagram"
            );
        }
    }

    #[test]
    fn the_receive_buffer_holds_a_burst() {
        let endpoint = unicast(LOCAL4, &[]);
        let got = SockRef::from(&endpoint.socket)
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        // The kernel reports twice what was set (its bookkeeping share).
        // Without privilege the rmem_max cap applies.
        let wanted = if nix::unistd::geteuid().is_root() {
            RECEIVE_BUFFER_BYTES
        } else {
            std::fs::read_to_string("/proc/sys/net/core/rmem_max")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
                .min(RECEIVE_BUFFER_BYTES)
        };
        assert!(got >= wanted, "receive buffer {got} bytes, wanted {wanted}");
    }

    #[test]
    fn recv_with_nothing_waiting_is_none() {
        let endpoint = unicast(LOCAL4, &[]);
        let mut buf = [0u8; 16];
        assert_eq!(endpoint.recv(&mut buf).expect("recv"), None);
    }

    #[test]
    fn oversized_datagram_is_an_error_and_the_socket_stays_usable() {
        let receiver = unicast(LOCAL4, &[]);
        let sender = unicast(LOCAL4, &[local(&receiver)]);
        sender.send(&[7u8; 100]).expect("send");
        let mut small = [0u8; 10];
        let e = recv_soon(&receiver, &mut small).expect_err("a 100-byte datagram cannot fit");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("100 bytes"), "{e}");
        sender.send(b"ok").expect("send");
        let (len, _) = recv_soon(&receiver, &mut small).expect("receive");
        assert_eq!(&small[..len], b"ok");
    }

    #[test]
    fn ipv6_unicast_on_loopback() {
        let receiver = unicast(LOCAL6, &[]);
        let sender = unicast(LOCAL6, &[local(&receiver)]);
        assert_eq!(sender.send(b"v6").expect("send"), 1);
        let mut buf = [0u8; 16];
        let (len, from) = recv_soon(&receiver, &mut buf).expect("receive");
        assert_eq!(&buf[..len], b"v6");
        assert_eq!(from, local(&sender));
    }

    #[test]
    fn dual_stack_reaches_ipv4_peers_and_reports_plain_ipv4_senders() {
        let v4 = unicast(LOCAL4, &[]);
        let v6 = unicast(LOCAL6, &[]);
        let transport = Transport::Unicast {
            port: 0,
            bind: None,
        };
        let dual = Endpoint::open(&transport, &[local(&v4), local(&v6)]).expect("open dual-stack");
        assert!(local(&dual).is_ipv6());
        assert_eq!(dual.send(b"both").expect("send"), 2);
        let mut buf = [0u8; 16];
        let (_, from) = recv_soon(&v4, &mut buf).expect("v4 peer receives");
        assert_eq!(from.ip(), LOCAL4);
        recv_soon(&v6, &mut buf).expect("v6 peer receives");

        let to_dual = SocketAddr::new(LOCAL4, local(&dual).port());
        let sender = unicast(LOCAL4, &[to_dual]);
        sender.send(b"in").expect("send");
        let (_, from) = recv_soon(&dual, &mut buf).expect("dual-stack receives from v4");
        assert_eq!(from, local(&sender), "mapped address is reported as IPv4");
    }

    #[test]
    fn mismatched_families_are_rejected_with_the_peer_named() {
        let transport = Transport::Unicast {
            port: 0,
            bind: Some(LOCAL4),
        };
        let peer: SocketAddr = "[::1]:7475".parse().expect("literal");
        let e = Endpoint::open(&transport, &[peer]).expect_err("v6 peer from a v4 socket");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("[::1]:7475"), "{e}");
    }

    #[test]
    fn multicast_on_a_missing_interface_names_it() {
        let transport = Transport::Multicast {
            group: "239.255.42.1:7475".parse().expect("literal"),
            interface: "nosuch0".into(),
            loopback: false,
            unicast: None,
        };
        let e = Endpoint::open(&transport, &[]).expect_err("no such interface");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("nosuch0"), "{e}");
    }

    #[test]
    fn multicast_needs_a_multicast_group() {
        let transport = Transport::Multicast {
            group: "10.0.0.1:7475".parse().expect("literal"),
            interface: "lo".into(),
            loopback: false,
            unicast: None,
        };
        let e = Endpoint::open(&transport, &[]).expect_err("unicast address as group");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("10.0.0.1:7475"), "{e}");
    }

    #[test]
    fn loopback_interface_lookups() {
        assert!(interface_index("lo").expect("lo exists") > 0);
        assert_eq!(
            interface_ipv4("lo").expect("lo exists"),
            Some(Ipv4Addr::LOCALHOST)
        );
        let e = interface_ipv4("nosuch0").expect_err("no such interface");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = interface_index("a-name-far-too-long").expect_err("longer than IFNAMSIZ");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
