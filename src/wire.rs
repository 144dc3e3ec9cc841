//! Bytes on the wire: datagram framing, authentication, decoding and the
//! per-sender replay window.
//!
//! A datagram is `[version 1][payload][tag: 32 bytes]`, or, sent with a key
//! whose id is not 0, `[version 2][key id][payload][tag]`. The payload is the
//! bincode encoding of the cluster name followed by the [`Message`], in the
//! one frozen configuration returned by `config()`. The tag is HMAC-SHA256,
//! with the key the id names, over every byte before it. docs/PROTOCOL.md
//! ("Wire format") gives the layout byte by byte; a unit test pins it to
//! exact bytes.
//!
//! Architecture Invariant: this is the only module that knows how a message
//! looks as bytes; nothing else calls bincode. It does no I/O and reads no
//! clock: the driver passes received bytes in and sends the bytes it gets back.
//!
//! Architecture Invariant: a hostile datagram is a [`Drop`], never a panic, and
//! nothing past the version byte and the key id (which say which key checks
//! it) is read before its tag has been checked in constant time. The replay
//! window changes only for a message that passed every other check.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::core::{Message, NodeId, Time};

/// The largest datagram sent or accepted, in bytes. It stays below the
/// 1280-byte IPv6 minimum MTU minus headers, so datagrams are never fragmented.
pub const MAX_DATAGRAM: usize = 1200;

/// The longest cluster name, in bytes, that leaves room in every datagram
/// for a heartbeat listing 64 peers. The config loader enforces it.
pub const MAX_CLUSTER_NAME: usize = 64;

/// The first byte of a datagram authenticated with key id 0: no key id
/// follows. A host with a single key sends exactly these, so it still talks
/// with releases that know no other version.
pub const VERSION: u8 = 1;

/// The first byte of a datagram that names its key: the key id follows, in
/// one byte. Sent only with a key id other than 0.
pub const VERSION_KEYED: u8 = 2;

/// The length of the HMAC-SHA256 tag at the end of every datagram.
const TAG_LEN: usize = 32;

/// The domain separator hashed with the cluster name into the insecure-mode key.
const INSECURE_KEY_LABEL: &[u8] = b"regent insecure key v1\0";

/// The one bincode configuration of protocol versions 1 and 2. Frozen: changing any
/// part of it changes the bytes on the wire and needs a new [`VERSION`].
/// The limit bounds what a length prefix can make the decoder allocate. It
/// counts bytes read plus the in-memory size of what containers claim (a
/// `heard` entry is 16 bytes in memory, 12 on the wire), so it is twice the
/// largest datagram: a limit, not a size, it changes no byte on the wire.
const fn config() -> bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<DECODE_LIMIT>()
}

/// What decoding one datagram may claim; see [`config`].
const DECODE_LIMIT: usize = 2 * MAX_DATAGRAM;

/// The payload as it is decoded.
#[derive(bincode::Decode)]
struct Datagram {
    cluster: String,
    message: Message,
}

/// The payload as it is encoded: the same fields as [`Datagram`], borrowed, so
/// the two encode to the same bytes.
#[derive(bincode::Encode)]
struct DatagramRef<'a> {
    cluster: &'a str,
    message: &'a Message,
}

/// Which of the cluster's keys authenticates a datagram: `auth.key_id` and
/// the ids of `[[auth.accept]]`. One byte on the wire: a rotation needs two
/// ids live at once, and an id can be used again once its key is retired,
/// so 256 are plenty.
///
/// Id 0 is the key of a configuration with one key. Its datagrams carry no
/// id (version 1), and a version 2 datagram naming id 0 is malformed, so
/// that every message has one encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u8);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a received datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Shorter than a version byte and a tag.
    Truncated,
    /// Longer than [`MAX_DATAGRAM`].
    Oversized,
    /// The version byte is neither [`VERSION`] nor [`VERSION_KEYED`].
    BadVersion,
    /// The key id is none of this host's keys: a member sends with a key
    /// this host does not accept (yet, or any more).
    UnknownKey,
    /// The tag does not match: a wrong key, corruption, or another cluster with another key.
    BadMac,
    /// Authentic but does not decode, or has bytes after the message: a sender bug.
    Malformed,
    /// Authentic but for another cluster name: two clusters share a key.
    OtherCluster,
    /// The sender id is not in the member list.
    UnknownNode,
    /// Already seen, or older than the replay window.
    Replay,
    /// From an earlier incarnation of a member than one already heard: a
    /// replay of its old run, or a member that restarted with a lower
    /// incarnation (state file lost and a clock behind).
    OldIncarnation,
    /// The sender id is this node's own: our own multicast looped back, or a duplicate id.
    OwnId,
    /// A leader heartbeat that echoes no heartbeat this node's current run
    /// sent within `dead_after`, so it is not followed: decided by the core.
    NotFresh,
    /// From a host whose member list this node cannot work with: neither
    /// the same list nor the generation just before or after it (§3.19).
    /// Decided by the core.
    Membership,
}

impl Drop {
    /// Every reason, in a fixed order (the order of metrics output).
    pub const ALL: [Drop; 13] = [
        Drop::Truncated,
        Drop::Oversized,
        Drop::BadVersion,
        Drop::UnknownKey,
        Drop::BadMac,
        Drop::Malformed,
        Drop::OtherCluster,
        Drop::UnknownNode,
        Drop::Replay,
        Drop::OldIncarnation,
        Drop::OwnId,
        Drop::NotFresh,
        Drop::Membership,
    ];

    /// The snake_case label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::Oversized => "oversized",
            Drop::BadVersion => "bad_version",
            Drop::UnknownKey => "unknown_key",
            Drop::BadMac => "bad_mac",
            Drop::Malformed => "malformed",
            Drop::OtherCluster => "other_cluster",
            Drop::UnknownNode => "unknown_node",
            Drop::Replay => "replay",
            Drop::OldIncarnation => "old_incarnation",
            Drop::OwnId => "own_id",
            Drop::NotFresh => "not_fresh",
            Drop::Membership => "membership",
        }
    }

    /// What probably caused the drop, for a log line.
    pub fn explanation(self) -> &'static str {
        match self {
            Drop::Truncated => "datagram shorter than a header and a tag",
            Drop::Oversized => "datagram larger than the protocol allows",
            Drop::BadVersion => "unknown protocol version: a peer runs another regent release",
            Drop::UnknownKey => {
                "sent with a key id this host does not accept: a member switched to a new key \
                 before this host accepted it, or still sends with one this host removed"
            }
            Drop::BadMac => {
                "authentication failed: a wrong key file, corruption, or another cluster \
                 on the same group"
            }
            Drop::Malformed => "authentic datagram that does not decode: a sender bug",
            Drop::OtherCluster => "datagram of another cluster that uses the same key",
            Drop::UnknownNode => {
                "sender id is not in [[member]]: member lists differ between hosts"
            }
            Drop::Replay => "duplicate, delayed or replayed message",
            Drop::OldIncarnation => {
                "from an earlier run of this member than one already heard: a replay of \
                 its old datagrams, or the member restarted with a lower incarnation \
                 (its state file was lost and its clock is behind)"
            }
            Drop::OwnId => "sender id is our own: multicast loopback, or two hosts share a node id",
            Drop::NotFresh => {
                "leader heartbeat that echoes none of this run's recent heartbeats: a replay \
                 of recorded traffic, a link that works one way, or (a few, after a restart) \
                 a leader that has not heard this run yet"
            }
            Drop::Membership => {
                "sender runs another member list: a host that missed a change, or one \
                 changed more than one generation ahead; see `regent status`"
            }
        }
    }

    /// The position of this reason in [`Drop::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.explanation())
    }
}

impl std::error::Error for Drop {}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The datagram would be `len` bytes, more than [`MAX_DATAGRAM`].
    TooBig {
        /// The length the datagram would have had.
        len: usize,
    },
    /// The encoder refused the message; the current message types cannot cause this.
    Encoder(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooBig { len } => write!(
                f,
                "message not sent: its datagram would be {len} bytes, \
                 more than the {MAX_DATAGRAM} allowed"
            ),
            EncodeError::Encoder(e) => write!(f, "message not sent: encoding failed: {e}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Turns messages into authenticated datagrams of one cluster and back.
#[derive(Clone)]
pub struct Codec {
    /// The cluster name, carried in every datagram and checked on receipt.
    cluster: String,
    /// The id of the key datagrams are sent with, and that key.
    send: (KeyId, Hmac<Sha256>),
    /// Every key a received datagram may name, the sending key included,
    /// by increasing id, each id once: HMAC state already keyed, cloned for
    /// every datagram.
    keys: Vec<(KeyId, Hmac<Sha256>)>,
    /// No key was given: the key is derived from the cluster name.
    insecure: bool,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys stay out of logs and panics; their ids are no secret.
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| id.0).collect();
        f.debug_struct("Codec")
            .field("cluster", &self.cluster)
            .field("send", &self.send.0 .0)
            .field("key_ids", &ids)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec for `cluster` authenticating with `key` as key id 0: it sends
    /// version 1 datagrams and accepts only those.
    ///
    /// With `key = None` (insecure mode) the key is SHA-256 of a fixed label and
    /// the cluster name. That still catches corruption and keeps clusters with
    /// different names apart, but anyone who knows the cluster name can forge
    /// messages: it gives integrity, not authenticity. The caller rejects empty
    /// or short key files; this function takes any bytes.
    pub fn new(cluster: &str, key: Option<&[u8]>) -> Codec {
        let insecure = key.is_none();
        let derived;
        let key = match key {
            Some(key) => key,
            None => {
                let mut h = Sha256::new();
                h.update(INSECURE_KEY_LABEL);
                h.update(cluster.as_bytes());
                derived = h.finalize();
                derived.as_slice()
            }
        };
        let mac = keyed(key);
        Codec {
            cluster: cluster.to_owned(),
            send: (KeyId(0), mac.clone()),
            keys: vec![(KeyId(0), mac)],
            insecure,
        }
    }

    /// A codec for `cluster` that sends with the key `send` (its id, its
    /// bytes) and accepts datagrams under that id and those of `accept`.
    ///
    /// An id given twice keeps its first key, the sending key before all: a
    /// configuration that did so is refused before it gets here, and this
    /// way no accepted key can stand in for the one sent with.
    pub fn with_keys(cluster: &str, send: (KeyId, &[u8]), accept: &[(KeyId, &[u8])]) -> Codec {
        let mut keys: Vec<(KeyId, Hmac<Sha256>)> = Vec::with_capacity(1 + accept.len());
        for &(id, key) in std::iter::once(&send).chain(accept) {
            if keys.iter().all(|(known, _)| *known != id) {
                keys.push((id, keyed(key)));
            }
        }
        keys.sort_by_key(|(id, _)| *id);
        Codec {
            cluster: cluster.to_owned(),
            send: (send.0, keyed(send.1)),
            keys,
            insecure: false,
        }
    }

    /// The cluster name this codec writes and accepts.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The key was derived from the cluster name: no authenticity, see [`Codec::new`].
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The id of the key datagrams are sent with.
    pub fn send_key(&self) -> KeyId {
        self.send.0
    }

    /// Encodes and authenticates `msg` as one datagram of at most
    /// [`MAX_DATAGRAM`] bytes: version 1 with key id 0, else version 2 and
    /// the sending key's id.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let datagram = DatagramRef {
            cluster: &self.cluster,
            message: msg,
        };
        let mut bytes = Vec::with_capacity(256);
        match self.send.0 {
            KeyId(0) => bytes.push(VERSION),
            KeyId(id) => bytes.extend_from_slice(&[VERSION_KEYED, id]),
        }
        bincode::encode_into_std_write(&datagram, &mut bytes, config())
            .map_err(|e| EncodeError::Encoder(e.to_string()))?;
        let len = bytes.len() + TAG_LEN;
        if len > MAX_DATAGRAM {
            return Err(EncodeError::TooBig { len });
        }
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        Ok(bytes)
    }

    /// Checks and decodes one received datagram, in this order: size,
    /// version, key id (one this host accepts), tag with that key (constant
    /// time, before anything else is read), decoding with no bytes left
    /// over, cluster name. Who sent it and whether it is fresh is
    /// [`Filter::admit`]'s job.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, Drop> {
        if bytes.len() < 1 + TAG_LEN {
            return Err(Drop::Truncated);
        }
        if bytes.len() > MAX_DATAGRAM {
            return Err(Drop::Oversized);
        }
        let (key_id, header_len) = match bytes[0] {
            VERSION => (KeyId(0), 1),
            VERSION_KEYED if bytes.len() < 2 + TAG_LEN => return Err(Drop::Truncated),
            VERSION_KEYED => (KeyId(bytes[1]), 2),
            _ => return Err(Drop::BadVersion),
        };
        let mac = self.key(key_id).ok_or(Drop::UnknownKey)?;
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac = mac.clone();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| Drop::BadMac)?;

        if bytes[0] == VERSION_KEYED && key_id == KeyId(0) {
            // Key id 0 is always sent as version 1: one encoding per message.
            return Err(Drop::Malformed);
        }
        let payload = &signed[header_len..];
        let (datagram, read): (Datagram, usize) =
            bincode::decode_from_slice(payload, config()).map_err(|_| Drop::Malformed)?;
        if read != payload.len() {
            return Err(Drop::Malformed);
        }
        if datagram.cluster != self.cluster {
            return Err(Drop::OtherCluster);
        }
        Ok(datagram.message)
    }

    /// The keyed HMAC state of key `id`, if this codec has that key.
    fn key(&self, id: KeyId) -> Option<&Hmac<Sha256>> {
        let i = self.keys.binary_search_by_key(&id, |(k, _)| *k).ok()?;
        Some(&self.keys[i].1)
    }

    /// The tag, with the sending key, of the bytes before it in `signed`.
    fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.send.1.clone();
        mac.update(signed);
        mac.finalize().into_bytes().into()
    }
}

/// HMAC-SHA256 state keyed with `key`.
fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of every length (longer ones are hashed first), so
    // `new_from_slice` cannot fail here.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

/// The number of sequence numbers below the highest one seen that the replay
/// window remembers; anything older is dropped.
pub const REPLAY_WINDOW: u64 = 64;

/// What has been accepted from one sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    /// The sender's newest incarnation seen.
    incarnation: u64,
    /// The highest sequence number accepted in that incarnation.
    top: u64,
    /// Bit `i` is set if `top - 1 - i` was accepted.
    below: u64,
}

impl Window {
    /// The window after accepting `(incarnation, seq)`, or `Replay`.
    fn accept(self, incarnation: u64, seq: u64) -> Result<Window, Drop> {
        if incarnation > self.incarnation {
            return Ok(Window {
                incarnation,
                top: seq,
                below: 0,
            });
        }
        if incarnation < self.incarnation {
            return Err(Drop::OldIncarnation);
        }
        if seq > self.top {
            let shift = seq - self.top;
            // The old top becomes bit `shift - 1`; bits shifted past 63 fall out.
            let below = if shift > REPLAY_WINDOW {
                0
            } else {
                self.below.checked_shl(shift as u32).unwrap_or(0) | 1 << (shift - 1)
            };
            return Ok(Window {
                incarnation,
                top: seq,
                below,
            });
        }
        let behind = self.top - seq;
        if behind == 0 || behind > REPLAY_WINDOW {
            return Err(Drop::Replay);
        }
        let bit = 1u64 << (behind - 1);
        if self.below & bit != 0 {
            return Err(Drop::Replay);
        }
        Ok(Window {
            below: self.below | bit,
            ..self
        })
    }
}

/// Admits decoded messages from members only, each at most once.
#[derive(Clone, Debug)]
pub struct Filter {
    /// This node, whose own messages are dropped.
    self_id: NodeId,
    /// Every other member and its window, `None` before its first message.
    windows: Vec<(NodeId, Option<Window>)>,
}

impl Filter {
    /// A filter for `self_id` in a cluster of `members` (which may list `self_id`).
    pub fn new(self_id: NodeId, members: &[NodeId]) -> Filter {
        let mut filter = Filter {
            self_id,
            windows: Vec::new(),
        };
        filter.set_members(members);
        filter
    }

    /// Replaces the member list, keeping the windows of members that stay.
    pub fn set_members(&mut self, members: &[NodeId]) {
        let mut windows: Vec<(NodeId, Option<Window>)> = members
            .iter()
            .filter(|&&id| id != self.self_id)
            .map(|&id| (id, self.window(id).flatten()))
            .collect();
        windows.sort_by_key(|&(id, _)| id);
        windows.dedup_by_key(|&mut (id, _)| id);
        self.windows = windows;
    }

    /// Accepts a decoded message or says why it is dropped: unknown sender id,
    /// own id (`OwnId`), replay. Only an accepted message moves the window.
    pub fn admit(&mut self, msg: &Message) -> Result<(), Drop> {
        if msg.from == self.self_id {
            return Err(Drop::OwnId);
        }
        let i = self
            .windows
            .binary_search_by_key(&msg.from, |&(id, _)| id)
            .map_err(|_| Drop::UnknownNode)?;
        let slot = &mut self.windows[i].1;
        *slot = Some(match *slot {
            None => Window {
                incarnation: msg.incarnation.0,
                top: msg.seq.0,
                below: 0,
            },
            Some(window) => window.accept(msg.incarnation.0, msg.seq.0)?,
        });
        Ok(())
    }

    /// The window of `id`: `None` if not a member, `Some(None)` if not heard yet.
    fn window(&self, id: NodeId) -> Option<Option<Window>> {
        let i = self.windows.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        Some(self.windows[i].1)
    }
}

/// How many datagrams were dropped, per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Indexed by `Drop::index`.
    counts: [u64; Drop::ALL.len()],
}

impl DropCounters {
    /// All zero.
    pub fn new() -> DropCounters {
        DropCounters::default()
    }

    /// Counts one drop.
    pub fn count(&mut self, d: Drop) {
        let c = &mut self.counts[d.index()];
        *c = c.saturating_add(1);
    }

    /// The drops counted for `d`.
    pub fn get(&self, d: Drop) -> u64 {
        self.counts[d.index()]
    }

    /// Every reason with its count, in the order of [`Drop::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (Drop, u64)> + '_ {
        Drop::ALL.into_iter().map(|d| (d, self.get(d)))
    }

    /// All drops of every reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |sum, &c| sum.saturating_add(c))
    }
}

/// Rate-limits drop logging to one line per reason per [`DropLog::INTERVAL`],
/// so a flood of bad datagrams cannot flood the log. The line that ends a
/// quiet spell says how many drops were left out before it; [`DropCounters`]
/// keeps the totals.
#[derive(Clone, Debug, Default)]
pub struct DropLog {
    /// When a line was last logged for each reason, by `Drop::index`.
    last_logged: [Option<Time>; Drop::ALL.len()],
    /// Drops not logged since that line, by `Drop::index`.
    suppressed: [u64; Drop::ALL.len()],
}

impl DropLog {
    /// The least time between two lines for the same reason.
    pub const INTERVAL: Duration = Duration::from_secs(10);

    /// A log that has logged nothing yet.
    pub fn new() -> DropLog {
        DropLog::default()
    }

    /// Notes a drop at `now`. Returns `Some(suppressed)` if a line is due now,
    /// with the number of drops of this reason left out since the last line,
    /// or `None` if this one should be left out.
    pub fn note(&mut self, d: Drop, now: Time) -> Option<u64> {
        let i = d.index();
        match self.last_logged[i] {
            Some(last) if now.since(last) < Self::INTERVAL => {
                self.suppressed[i] = self.suppressed[i].saturating_add(1);
                None
            }
            _ => {
                self.last_logged[i] = Some(now);
                Some(std::mem::take(&mut self.suppressed[i]))
            }
        }
    }

    /// Notes a drop of a datagram from `source` and logs a line if one is due:
    /// at debug level for `OwnId` (expected with multicast loopback), info for
    /// `Replay` (duplicates happen), warn for the rest (a misconfiguration or
    /// an attack).
    pub fn log(&mut self, d: Drop, now: Time, source: &dyn fmt::Display) {
        let Some(suppressed) = self.note(d, now) else {
            return;
        };
        let level = match d {
            Drop::OwnId => log::Level::Debug,
            Drop::Replay => log::Level::Info,
            _ => log::Level::Warn,
        };
        if suppressed == 0 {
            log::log!(level, "dropped datagram from {source}: {d}");
        } else {
            log::log!(
                level,
                "dropped datagram from {source}: {d}; {suppressed} more {} drops not logged",
                d.as_str()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Body, Epoch, Heartbeat, Incarnation, Membership, NackReason, Role, Seq};

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    /// The next key of a rotation, sent as key id 1 in these tests.
    const NEW_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn msg(from: u32, incarnation: u64, seq: u64, body: Body) -> Message {
        Message {
            from: NodeId(from),
            incarnation: Incarnation(incarnation),
            seq: Seq(seq),
            priority: 100,
            known_epoch: Epoch(7),
            membership: Default::default(),
            body,
        }
    }

    fn heartbeat(heard: usize) -> Body {
        Body::Heartbeat(Heartbeat {
            role: Role::Leader,
            leader: Some((NodeId(u32::MAX), Epoch(u64::MAX))),
            can_lead: true,
            dead_after_ms: u32::MAX,
            committed: false,
            heard: (0..heard)
                .map(|i| (NodeId(i as u32), Seq(u64::MAX - i as u64)))
                .collect(),
        })
    }

    /// One of every body, with the variants of the enums inside.
    fn every_body() -> Vec<Body> {
        let mut bodies = vec![
            heartbeat(0),
            heartbeat(3),
            Body::Heartbeat(Heartbeat {
                role: Role::Follower,
                leader: None,
                can_lead: false,
                dead_after_ms: 300,
                committed: false,
                heard: vec![],
            }),
            Body::Heartbeat(Heartbeat {
                role: Role::Candidate,
                leader: None,
                can_lead: true,
                dead_after_ms: 0,
                committed: false,
                heard: vec![(NodeId(2), Seq(0))],
            }),
            Body::Election,
            Body::Answer { to: NodeId(2) },
            Body::Claim { epoch: Epoch(8) },
            Body::Ack {
                to: NodeId(3),
                epoch: Epoch(8),
                dead_after_ms: 300,
            },
            Body::Resign {
                epoch: Epoch(8),
                successor: Some(NodeId(1)),
                leaving: false,
            },
            Body::Resign {
                epoch: Epoch(8),
                successor: None,
                leaving: true,
            },
        ];
        for reason in [
            NackReason::StaleEpoch,
            NackReason::LiveLeader,
            NackReason::HigherRank,
            NackReason::Starting,
        ] {
            bodies.push(Body::Nack {
                to: NodeId(3),
                epoch: Epoch(8),
                promised: Epoch(9),
                reason,
            });
        }
        bodies
    }

    /// A datagram with any version byte and payload, correctly tagged.
    fn seal(codec: &Codec, version: u8, payload: &[u8]) -> Vec<u8> {
        seal_after(codec, &[version], payload)
    }

    /// A datagram with any header bytes (version, key id) and payload,
    /// tagged with the codec's sending key.
    fn seal_after(codec: &Codec, header: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(payload);
        let tag = codec.tag(&bytes);
        bytes.extend_from_slice(&tag);
        bytes
    }

    /// A host in the middle of a rotation from `KEY` (id 0) to `NEW_KEY`
    /// (id 1): it sends with `send`'s key and accepts both.
    fn rotating(send: u8) -> Codec {
        let (old, new) = ((KeyId(0), KEY), (KeyId(1), NEW_KEY));
        match send {
            0 => Codec::with_keys("db-vip", old, &[new]),
            _ => Codec::with_keys("db-vip", new, &[old]),
        }
    }

    /// The payload of a datagram from `encode`.
    fn payload(bytes: &[u8]) -> &[u8] {
        &bytes[1..bytes.len() - TAG_LEN]
    }

    #[test]
    fn every_body_round_trips() {
        for codec in [Codec::new("db-vip", Some(KEY)), Codec::new("db-vip", None)] {
            for body in every_body() {
                let m = msg(1, 2, 3, body);
                let bytes = codec.encode(&m).expect("small messages fit");
                assert!(bytes.len() <= MAX_DATAGRAM);
                assert_eq!(bytes[0], VERSION);
                assert_eq!(codec.decode(&bytes), Ok(m));
            }
        }
    }

    #[test]
    fn layout_is_frozen() {
        // Fixed-width big-endian integers: a change here is a protocol change.
        let codec = Codec::new("c", Some(KEY));
        let m = Message {
            from: NodeId(0x0102_0304),
            incarnation: Incarnation(5),
            seq: Seq(6),
            priority: 7,
            known_epoch: Epoch(8),
            membership: Membership {
                generation: 10,
                digest: 0x0b0c_0d0e,
                previous: 0x0f10_1112,
            },
            body: Body::Claim { epoch: Epoch(9) },
        };
        let bytes = codec.encode(&m).expect("fits");
        let expected: Vec<u8> = [
            &[0, 0, 0, 0, 0, 0, 0, 1, b'c'][..], // cluster: u64 length, bytes
            &[1, 2, 3, 4],                       // from
            &[0, 0, 0, 0, 0, 0, 0, 5],           // incarnation
            &[0, 0, 0, 0, 0, 0, 0, 6],           // seq
            &[0, 0, 0, 7],                       // priority
            &[0, 0, 0, 0, 0, 0, 0, 8],           // known_epoch
            &[0, 0, 0, 10],                      // membership: generation
            &[11, 12, 13, 14],                   // digest
            &[15, 16, 17, 18],                   // previous
            &[0, 0, 0, 3],                       // body: variant Claim
            &[0, 0, 0, 0, 0, 0, 0, 9],           // epoch
        ]
        .concat();
        assert_eq!(payload(&bytes), &expected[..]);
    }

    #[test]
    fn heartbeat_with_64_peers_fits() {
        let cluster = "c".repeat(MAX_CLUSTER_NAME);
        let codec = Codec::new(&cluster, Some(KEY));
        let m = msg(u32::MAX, u64::MAX, u64::MAX, heartbeat(64));
        let bytes = codec.encode(&m).expect("a 64-peer heartbeat fits");
        // The figures docs/PROTOCOL.md ("Wire format") works out.
        assert_eq!(bytes.len(), 952);
        assert!(bytes.len() <= MAX_DATAGRAM, "{} bytes", bytes.len());
        assert_eq!(codec.decode(&bytes), Ok(m.clone()));
        let keyed = Codec::with_keys(&cluster, (KeyId(255), KEY), &[]);
        let bytes = keyed.encode(&m).expect("with a key id too");
        assert_eq!(bytes.len(), 953);
        assert_eq!(keyed.decode(&bytes), Ok(m));
    }

    #[test]
    fn too_big_message_is_an_error() {
        let codec = Codec::new("db-vip", Some(KEY));
        let m = msg(1, 1, 1, heartbeat(200));
        match codec.encode(&m) {
            Err(EncodeError::TooBig { len }) => assert!(len > MAX_DATAGRAM),
            other => panic!("expected TooBig, got {other:?}"),
        }
    }

    #[test]
    fn crafted_datagrams_give_every_codec_drop() {
        let codec = Codec::new("db-vip", Some(KEY));
        let good = codec.encode(&msg(1, 1, 1, Body::Election)).expect("fits");
        let good_payload = payload(&good).to_vec();
        let with_trailing = [&good_payload[..], &[0]].concat();
        // A heartbeat whose `heard` length prefix says `len` and that holds
        // one entry: with len = 1 it is valid, with 2^40 the limit refuses to
        // allocate for it.
        let heartbeat_claiming = |len: u64| -> Vec<u8> {
            let header = &good_payload[..good_payload.len() - 4]; // up to the Body tag
            let role_leader_canlead_ms_committed: &[u8] = &[0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1];
            let entry: &[u8] = &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
            [
                header,
                &[0, 0, 0, 0],
                role_leader_canlead_ms_committed,
                &len.to_be_bytes(),
                entry,
            ]
            .concat()
        };
        let one_heard = codec.decode(&seal(&codec, VERSION, &heartbeat_claiming(1)));
        let heard = match &one_heard {
            Ok(Message {
                body: Body::Heartbeat(h),
                ..
            }) => Some(&h.heard[..]),
            _ => None,
        };
        assert_eq!(
            heard,
            Some(&[(NodeId(2), Seq(9))][..]),
            "control case: {one_heard:?}"
        );
        let huge_vec = heartbeat_claiming(1 << 40);
        let other_cluster = Codec::new("other", Some(KEY));
        let other_key = Codec::new("db-vip", Some(b"another key"));
        let insecure = Codec::new("db-vip", None);
        let mut flipped_tag = good.clone();
        *flipped_tag.last_mut().expect("not empty") ^= 1;

        let cases: Vec<(&str, Vec<u8>, Drop)> = vec![
            ("empty", vec![], Drop::Truncated),
            ("version only", vec![VERSION], Drop::Truncated),
            (
                "one short of a tag",
                good[..TAG_LEN].to_vec(),
                Drop::Truncated,
            ),
            (
                "oversized",
                vec![VERSION; MAX_DATAGRAM + 1],
                Drop::Oversized,
            ),
            (
                "version 0",
                seal(&codec, 0, &good_payload),
                Drop::BadVersion,
            ),
            (
                "version 3",
                seal(&codec, 3, &good_payload),
                Drop::BadVersion,
            ),
            (
                "version 2 without room for its key id",
                [&[VERSION_KEYED][..], &good[1..=TAG_LEN]].concat(),
                Drop::Truncated,
            ),
            (
                "version 2, a key id this host lacks",
                seal_after(&codec, &[VERSION_KEYED, 1], &good_payload),
                Drop::UnknownKey,
            ),
            (
                "version 2 naming key id 0, authentic",
                seal_after(&codec, &[VERSION_KEYED, 0], &good_payload),
                Drop::Malformed,
            ),
            ("flipped tag", flipped_tag, Drop::BadMac),
            (
                "other key",
                other_key
                    .encode(&msg(1, 1, 1, Body::Election))
                    .expect("fits"),
                Drop::BadMac,
            ),
            (
                "insecure peer",
                insecure
                    .encode(&msg(1, 1, 1, Body::Election))
                    .expect("fits"),
                Drop::BadMac,
            ),
            ("empty payload", seal(&codec, VERSION, &[]), Drop::Malformed),
            (
                "garbage payload",
                seal(&codec, VERSION, &[0xff; 40]),
                Drop::Malformed,
            ),
            (
                "trailing byte",
                seal(&codec, VERSION, &with_trailing),
                Drop::Malformed,
            ),
            (
                "cut payload",
                seal(&codec, VERSION, &good_payload[..good_payload.len() - 1]),
                Drop::Malformed,
            ),
            (
                "huge length prefix",
                seal(&codec, VERSION, &huge_vec),
                Drop::Malformed,
            ),
            (
                "other cluster",
                other_cluster
                    .encode(&msg(1, 1, 1, Body::Election))
                    .expect("fits"),
                Drop::OtherCluster,
            ),
        ];
        for (name, bytes, drop) in cases {
            assert_eq!(codec.decode(&bytes), Err(drop), "{name}");
        }
        assert_eq!(
            codec.decode(&seal(&codec, VERSION, &good_payload)),
            Ok(msg(1, 1, 1, Body::Election))
        );
    }

    #[test]
    fn filter_gives_every_filter_drop() {
        let mut filter = Filter::new(NodeId(1), &[NodeId(1), NodeId(2)]);
        assert_eq!(
            filter.admit(&msg(1, 1, 1, Body::Election)),
            Err(Drop::OwnId)
        );
        assert_eq!(
            filter.admit(&msg(9, 1, 1, Body::Election)),
            Err(Drop::UnknownNode)
        );
        assert_eq!(filter.admit(&msg(2, 1, 1, Body::Election)), Ok(()));
        assert_eq!(
            filter.admit(&msg(2, 1, 1, Body::Election)),
            Err(Drop::Replay)
        );
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let codec = Codec::new("db-vip", Some(KEY));
        for body in every_body() {
            let good = codec.encode(&msg(1, 2, 3, body)).expect("fits");
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let expected = if bit < 8 {
                    Drop::BadVersion
                } else {
                    Drop::BadMac
                };
                assert_eq!(codec.decode(&bad), Err(expected), "bit {bit}");
            }
        }
    }

    #[test]
    fn replay_window_table() {
        use Step::*;
        #[derive(Debug)]
        enum Step {
            Accept(u64, u64),
            Reject(u64, u64),
        }
        let cases: &[(&str, &[Step])] = &[
            (
                "in order",
                &[Accept(1, 0), Accept(1, 1), Accept(1, 2), Accept(1, 3)],
            ),
            (
                "first seq may be anything",
                &[Accept(5, 1000), Accept(5, 1001)],
            ),
            (
                "gap then fill",
                &[
                    Accept(1, 10),
                    Accept(1, 15),
                    Accept(1, 12),
                    Accept(1, 11),
                    Accept(1, 14),
                ],
            ),
            ("duplicate top", &[Accept(1, 10), Reject(1, 10)]),
            (
                "duplicate inside window",
                &[
                    Accept(1, 10),
                    Accept(1, 20),
                    Reject(1, 10),
                    Accept(1, 11),
                    Reject(1, 11),
                ],
            ),
            (
                "oldest slot of window",
                &[Accept(1, 100), Accept(1, 36), Reject(1, 35), Reject(1, 36)],
            ),
            ("too old", &[Accept(1, 100), Reject(1, 35), Reject(1, 0)]),
            (
                "jump by exactly 64 keeps old top",
                &[Accept(1, 0), Accept(1, 64), Reject(1, 0), Accept(1, 1)],
            ),
            (
                "jump by 65 forgets old top",
                &[Accept(1, 0), Accept(1, 65), Reject(1, 0), Accept(1, 1)],
            ),
            (
                "jump far",
                &[
                    Accept(1, 3),
                    Accept(1, u64::MAX),
                    Reject(1, 3),
                    Accept(1, u64::MAX - 1),
                ],
            ),
            (
                "new incarnation resets",
                &[Accept(1, 500), Accept(2, 0), Accept(2, 1), Reject(2, 0)],
            ),
            (
                "new incarnation, lower seq",
                &[Accept(1, 500), Accept(2, 400), Accept(2, 401)],
            ),
            (
                "old incarnation is refused under its own reason",
                &[Accept(2, 5), Reject(1, 6), Reject(1, 1000), Accept(2, 6)],
            ),
            (
                "rejection moves nothing",
                &[Accept(1, 10), Reject(0, 11), Accept(1, 11), Reject(1, 11)],
            ),
        ];
        for (name, steps) in cases {
            let mut filter = Filter::new(NodeId(1), &[NodeId(1), NodeId(2), NodeId(3)]);
            for (i, step) in steps.iter().enumerate() {
                let (incarnation, seq, ok) = match *step {
                    Accept(inc, seq) => (inc, seq, true),
                    Reject(inc, seq) => (inc, seq, false),
                };
                let current = filter
                    .window(NodeId(2))
                    .flatten()
                    .map_or(0, |w| w.incarnation);
                let got = filter.admit(&msg(2, incarnation, seq, Body::Election));
                let want = match (ok, incarnation < current) {
                    (true, _) => Ok(()),
                    (false, true) => Err(Drop::OldIncarnation),
                    (false, false) => Err(Drop::Replay),
                };
                assert_eq!(got, want, "{name}: step {i} {step:?}");
                // Another sender's window is untouched.
                assert_eq!(filter.window(NodeId(3)), Some(None), "{name}");
            }
        }
    }

    #[test]
    fn window_bits_match_a_set_of_seen_seqs() {
        // Every accept/reject against a plain set of seen sequence numbers.
        let mut seen = std::collections::BTreeSet::new();
        let mut filter = Filter::new(NodeId(1), &[NodeId(2)]);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15; // fixed seed, xorshift
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let top = seen.last().copied().unwrap_or(0);
            let seq = (top + x % 80).saturating_sub(70);
            let fresh = !seen.contains(&seq) && (seen.is_empty() || seq + REPLAY_WINDOW >= top);
            let got = filter.admit(&msg(2, 1, seq, Body::Election));
            assert_eq!(
                got.is_ok(),
                fresh,
                "seed 0x9e3779b97f4a7c15: seq {seq} top {top}"
            );
            if fresh {
                seen.insert(seq);
            }
        }
    }

    #[test]
    fn set_members_keeps_windows_of_staying_members() {
        let mut filter = Filter::new(NodeId(1), &[NodeId(1), NodeId(2), NodeId(3)]);
        filter.admit(&msg(2, 1, 5, Body::Election)).expect("fresh");
        filter.admit(&msg(3, 1, 5, Body::Election)).expect("fresh");
        filter.set_members(&[NodeId(4), NodeId(2), NodeId(1), NodeId(2)]);
        assert_eq!(
            filter.admit(&msg(2, 1, 5, Body::Election)),
            Err(Drop::Replay)
        );
        assert_eq!(
            filter.admit(&msg(3, 1, 6, Body::Election)),
            Err(Drop::UnknownNode)
        );
        assert_eq!(filter.admit(&msg(4, 1, 0, Body::Election)), Ok(()));
        // A member that left and came back starts afresh.
        filter.set_members(&[NodeId(2), NodeId(3)]);
        assert_eq!(filter.admit(&msg(3, 1, 5, Body::Election)), Ok(()));
    }

    #[test]
    fn drop_labels_are_distinct_snake_case() {
        let labels: std::collections::HashSet<_> = Drop::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(labels.len(), Drop::ALL.len());
        for (i, d) in Drop::ALL.into_iter().enumerate() {
            assert_eq!(d.index(), i);
            assert!(d
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn drop_counters_count_per_reason() {
        let mut counters = DropCounters::new();
        counters.count(Drop::BadMac);
        counters.count(Drop::BadMac);
        counters.count(Drop::Replay);
        assert_eq!(counters.get(Drop::BadMac), 2);
        assert_eq!(counters.get(Drop::Replay), 1);
        assert_eq!(counters.get(Drop::Truncated), 0);
        assert_eq!(counters.total(), 3);
        let all: Vec<_> = counters.iter().collect();
        assert_eq!(all.len(), Drop::ALL.len());
        assert_eq!(all[4], (Drop::BadMac, 2));
    }

    #[test]
    fn drop_log_logs_once_per_interval_per_reason() {
        let s = |secs: u64| Time::from_duration(Duration::from_secs(secs));
        let mut log = DropLog::new();
        assert_eq!(log.note(Drop::BadMac, Time::ZERO), Some(0));
        assert_eq!(log.note(Drop::BadMac, s(1)), None);
        assert_eq!(log.note(Drop::BadMac, s(9)), None);
        assert_eq!(
            log.note(Drop::Replay, s(9)),
            Some(0),
            "reasons are limited apart"
        );
        assert_eq!(log.note(Drop::BadMac, s(10)), Some(2));
        assert_eq!(log.note(Drop::BadMac, s(11)), None);
        assert_eq!(log.note(Drop::BadMac, s(100)), Some(1));
        assert_eq!(log.note(Drop::BadMac, s(200)), Some(0));
        log.log(Drop::OwnId, s(300), &"10.0.0.1:7475");
    }

    #[test]
    fn codec_debug_hides_the_key() {
        let codec = Codec::new("db-vip", Some(KEY));
        let shown = format!("{codec:?}");
        assert!(
            shown.contains("db-vip") && !shown.contains("0123"),
            "{shown}"
        );
        assert!(!codec.is_insecure());
        assert!(Codec::new("db-vip", None).is_insecure());
        let shown = format!("{:?}", rotating(1));
        assert!(
            shown.contains("send: 1") && shown.contains("key_ids: [0, 1]"),
            "{shown}"
        );
        assert!(
            !shown.contains("0123") && !shown.contains("fedc"),
            "{shown}"
        );
    }

    #[test]
    fn a_single_key_sends_version_1_and_a_new_key_id_version_2() {
        let m = msg(1, 2, 3, Body::Election);
        let single = Codec::new("db-vip", Some(KEY)).encode(&m).expect("fits");
        // Accepting a second key changes nothing on the wire.
        let accepting = rotating(0).encode(&m).expect("fits");
        assert_eq!(single, accepting);
        assert_eq!(single[0], VERSION);
        let keyed = rotating(1).encode(&m).expect("fits");
        assert_eq!(&keyed[..2], &[VERSION_KEYED, 1]);
        // The same payload, one byte further on.
        assert_eq!(&keyed[2..keyed.len() - TAG_LEN], payload(&single));
        assert_eq!(rotating(1).send_key(), KeyId(1));
    }

    #[test]
    fn version_1_still_decodes_where_other_keys_are_accepted() {
        let m = msg(1, 2, 3, Body::Claim { epoch: Epoch(8) });
        let from_old_release = Codec::new("db-vip", Some(KEY)).encode(&m).expect("fits");
        for receiver in [rotating(0), rotating(1)] {
            assert_eq!(receiver.decode(&from_old_release), Ok(m.clone()));
        }
        // Once the old key is removed, its datagrams are another key's.
        let after = Codec::with_keys("db-vip", (KeyId(1), NEW_KEY), &[]);
        assert_eq!(after.decode(&from_old_release), Err(Drop::UnknownKey));
    }

    #[test]
    fn version_2_with_an_accepted_key_id_verifies() {
        for body in every_body() {
            let m = msg(1, 2, 3, body);
            let bytes = rotating(1).encode(&m).expect("fits");
            assert_eq!(bytes[..2], [VERSION_KEYED, 1]);
            // Accepted, or sent with: either way the id finds the key.
            assert_eq!(rotating(0).decode(&bytes), Ok(m.clone()));
            assert_eq!(rotating(1).decode(&bytes), Ok(m.clone()));
            let switched = Codec::with_keys("db-vip", (KeyId(1), NEW_KEY), &[]);
            assert_eq!(switched.decode(&bytes), Ok(m));
        }
    }

    #[test]
    fn a_key_id_this_host_lacks_is_dropped_as_unknown_key() {
        let m = msg(1, 2, 3, Body::Election);
        let bytes = rotating(1).encode(&m).expect("fits");
        // A host not yet given the new key.
        let before = Codec::new("db-vip", Some(KEY));
        assert_eq!(before.decode(&bytes), Err(Drop::UnknownKey));
        // Another id, with the very key that signed it: the id decides.
        let renumbered = Codec::with_keys("db-vip", (KeyId(0), KEY), &[(KeyId(2), NEW_KEY)]);
        assert_eq!(renumbered.decode(&bytes), Err(Drop::UnknownKey));
    }

    #[test]
    fn a_known_key_id_with_another_key_behind_it_is_bad_mac() {
        let m = msg(1, 2, 3, Body::Election);
        let bytes = rotating(1).encode(&m).expect("fits");
        // Key id 1 names another secret on this host: a wrong key file.
        let wrong = Codec::with_keys("db-vip", (KeyId(0), KEY), &[(KeyId(1), b"not the new key")]);
        assert_eq!(wrong.decode(&bytes), Err(Drop::BadMac));
        // The right key under id 0 does not help either: the tag covers the id.
        let mut as_id_0 = bytes.clone();
        as_id_0[1] = 0;
        let id_0 = Codec::with_keys("db-vip", (KeyId(0), NEW_KEY), &[]);
        assert_eq!(id_0.decode(&as_id_0), Err(Drop::BadMac));
    }

    #[test]
    fn an_id_given_twice_keeps_the_sending_key() {
        let m = msg(1, 2, 3, Body::Election);
        let codec = Codec::with_keys("db-vip", (KeyId(1), NEW_KEY), &[(KeyId(1), KEY)]);
        let bytes = codec.encode(&m).expect("fits");
        assert_eq!(codec.decode(&bytes), Ok(m.clone()));
        assert_eq!(rotating(0).decode(&bytes), Ok(m));
    }

    #[test]
    fn every_single_bit_flip_of_a_version_2_datagram_fails() {
        let codec = rotating(1);
        for body in every_body() {
            let good = codec.encode(&msg(1, 2, 3, body)).expect("fits");
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let expected = match bit {
                    0..=7 => Drop::BadVersion,
                    // Id 0 is the other key this host has.
                    8 => Drop::BadMac,
                    9..=15 => Drop::UnknownKey,
                    _ => Drop::BadMac,
                };
                assert_eq!(codec.decode(&bad), Err(expected), "bit {bit}");
            }
        }
    }

    /// Lowercase hex of `bytes`, for comparing against the layout written
    /// field by field.
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The exact bytes of four datagrams, written field by field as
    /// docs/PROTOCOL.md ("Wire format") describes them: if bincode, its
    /// configuration or a message type changes the bytes, this fails and the
    /// document (and [`VERSION`]) must change with it. The tags were computed
    /// apart from this crate (HMAC-SHA256 with `KEY`, or `NEW_KEY` for key
    /// id 1, over everything before the tag).
    #[test]
    fn datagrams_encode_to_the_documented_bytes() {
        let codec = Codec::new("db", Some(KEY));
        // Version, then the cluster name: u64 length, UTF-8 bytes.
        let head = ["01", "0000000000000002", "6462"].concat();
        let cases = [
            (
                Message {
                    from: NodeId(2),
                    incarnation: Incarnation(5),
                    seq: Seq(9),
                    priority: 100,
                    known_epoch: Epoch(7),
                    membership: Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)]),
                    body: Body::Heartbeat(Heartbeat {
                        role: Role::Leader,
                        leader: Some((NodeId(2), Epoch(7))),
                        can_lead: true,
                        dead_after_ms: 300,
                        committed: true,
                        heard: vec![(NodeId(1), Seq(41)), (NodeId(3), Seq(40))],
                    }),
                },
                [
                    "00000002",         // from: u32
                    "0000000000000005", // incarnation: u64
                    "0000000000000009", // seq: u64
                    "00000064",         // priority: u32
                    "0000000000000007", // known_epoch: u64
                    "00000001",         // membership: generation 1
                    "794671b5",         //   digest of ids 1, 2, 3
                    "00000000",         //   previous: unknown
                    "00000000",         // body: variant 0, Heartbeat
                    "00000002",         // role: variant 2, Leader
                    "01",               // leader: Some
                    "00000002",         //   node
                    "0000000000000007", //   epoch
                    "01",               // can_lead: true
                    "0000012c",         // dead_after_ms: 300
                    "01",               // committed: true
                    "0000000000000002", // heard: 2 entries
                    "00000001",         //   node 1
                    "0000000000000029", //   seq 41
                    "00000003",         //   node 3
                    "0000000000000028", //   seq 40
                    "d8ae6a8d87866065e79b6a5b3164f6c928c402a6edb731b192e3af085ff539e7",
                ]
                .concat(),
            ),
            (
                Message {
                    from: NodeId(2),
                    incarnation: Incarnation(5),
                    seq: Seq(10),
                    priority: 100,
                    known_epoch: Epoch(7),
                    membership: Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)]),
                    body: Body::Resign {
                        epoch: Epoch(7),
                        successor: Some(NodeId(3)),
                        leaving: true,
                    },
                },
                [
                    "00000002",
                    "0000000000000005",
                    "000000000000000a",
                    "00000064",
                    "0000000000000007",
                    "00000001",
                    "794671b5",
                    "00000000",
                    "00000006",         // body: variant 6, Resign
                    "0000000000000007", // epoch
                    "01",               // successor: Some
                    "00000003",         //   node 3
                    "01",               // leaving: true
                    "ebe4eb81e26e97885916fdf210fbd0933ddd750440d1ddad3123e3ef8fbd64a4",
                ]
                .concat(),
            ),
            (
                Message {
                    from: NodeId(1),
                    incarnation: Incarnation(5),
                    seq: Seq(11),
                    priority: 100,
                    known_epoch: Epoch(8),
                    membership: Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)]),
                    body: Body::Nack {
                        to: NodeId(2),
                        epoch: Epoch(8),
                        promised: Epoch(8),
                        reason: NackReason::LiveLeader,
                    },
                },
                [
                    "00000001",
                    "0000000000000005",
                    "000000000000000b",
                    "00000064",
                    "0000000000000008",
                    "00000001",
                    "794671b5",
                    "00000000",
                    "00000005",         // body: variant 5, Nack
                    "00000002",         // to
                    "0000000000000008", // epoch
                    "0000000000000008", // promised
                    "00000001",         // reason: variant 1, LiveLeader
                    "233e5974c4052ec950c243613a3b0ffeb8547066523755532fb9097db6e95097",
                ]
                .concat(),
            ),
        ];
        for (msg, fields) in cases {
            let bytes = codec.encode(&msg).expect("encode");
            assert_eq!(hex(&bytes), format!("{head}{fields}"), "{msg:?}");
            assert_eq!(codec.decode(&bytes), Ok(msg));
        }

        // The first heartbeat again, sent with key id 1 (`NEW_KEY`): version
        // 2, the id, then the same payload; the tag is over all of it.
        let keyed = Codec::with_keys("db", (KeyId(1), NEW_KEY), &[(KeyId(0), KEY)]);
        let msg = Message {
            from: NodeId(2),
            incarnation: Incarnation(5),
            seq: Seq(9),
            priority: 100,
            known_epoch: Epoch(7),
            membership: Membership::of(1, &[NodeId(1), NodeId(2), NodeId(3)]),
            body: Body::Heartbeat(Heartbeat {
                role: Role::Leader,
                leader: Some((NodeId(2), Epoch(7))),
                can_lead: true,
                dead_after_ms: 300,
                committed: true,
                heard: vec![(NodeId(1), Seq(41)), (NodeId(3), Seq(40))],
            }),
        };
        let expected = [
            "02",               // version 2
            "01",               // key id 1
            "0000000000000002", // cluster: length 2
            "6462",             //   "db"
            "00000002",
            "0000000000000005",
            "0000000000000009",
            "00000064",
            "0000000000000007",
            "00000001",
            "794671b5",
            "00000000",
            "00000000",
            "00000002",
            "01",
            "00000002",
            "0000000000000007",
            "01",
            "0000012c",
            "01",
            "0000000000000002",
            "00000001",
            "0000000000000029",
            "00000003",
            "0000000000000028",
            "5ffc1227b6542368c676a7a6d98f70656954a425fbad92a7935550c2e02b1d96",
        ]
        .concat();
        let bytes = keyed.encode(&msg).expect("encode");
        assert_eq!(bytes.len(), 147);
        assert_eq!(hex(&bytes), expected);
        assert_eq!(keyed.decode(&bytes), Ok(msg));
    }
}
