//! Properties of the wire codec over arbitrary inputs: decoding never panics,
//! every message round-trips, and no single-bit error gets through.
//!
//! proptest prints the minimal failing input and records its seed in
//! `proptest-regressions/`, where later runs replay it first.

use proptest::prelude::*;
use regentd::core::{Body, Epoch, Heartbeat, Incarnation, Message, NackReason, NodeId, Role, Seq};
use regentd::wire::{Codec, Drop, MAX_DATAGRAM};

fn node() -> impl Strategy<Value = NodeId> {
    any::<u32>().prop_map(NodeId)
}

fn epoch() -> impl Strategy<Value = Epoch> {
    any::<u64>().prop_map(Epoch)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Follower),
        Just(Role::Candidate),
        Just(Role::Leader)
    ]
}

fn nack_reason() -> impl Strategy<Value = NackReason> {
    prop_oneof![
        Just(NackReason::StaleEpoch),
        Just(NackReason::LiveLeader),
        Just(NackReason::HigherRank),
        Just(NackReason::Starting),
    ]
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        role(),
        proptest::option::of((node(), epoch())),
        any::<bool>(),
        any::<u32>(),
        any::<bool>(),
        proptest::collection::vec((node(), any::<u64>()), 0..=64),
    )
        .prop_map(
            |(role, leader, can_lead, dead_after_ms, committed, heard)| Heartbeat {
                role,
                leader,
                can_lead,
                dead_after_ms,
                committed,
                heard: heard.into_iter().map(|(n, s)| (n, Seq(s))).collect(),
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        heartbeat().prop_map(Body::Heartbeat),
        Just(Body::Election),
        node().prop_map(|to| Body::Answer { to }),
        epoch().prop_map(|epoch| Body::Claim { epoch }),
        (node(), epoch(), any::<u32>()).prop_map(|(to, epoch, dead_after_ms)| Body::Ack {
            to,
            epoch,
            dead_after_ms
        }),
        (node(), epoch(), epoch(), nack_reason()).prop_map(|(to, epoch, promised, reason)| {
            Body::Nack {
                to,
                epoch,
                promised,
                reason,
            }
        }),
        (epoch(), proptest::option::of(node()), any::<bool>()).prop_map(
            |(epoch, successor, leaving)| Body::Resign {
                epoch,
                successor,
                leaving
            }
        ),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        node(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        epoch(),
        any::<(u32, u32, u32)>(),
        body(),
    )
        .prop_map(
            |(
                from,
                incarnation,
                seq,
                priority,
                known_epoch,
                (generation, digest, previous),
                body,
            )| Message {
                from,
                incarnation: Incarnation(incarnation),
                seq: Seq(seq),
                priority,
                known_epoch,
                membership: regentd::core::Membership {
                    generation,
                    digest,
                    previous,
                },
                body,
            },
        )
}

const KEY: &[u8] = b"a shared secret of reasonable length";

fn codec() -> Codec {
    Codec::new("db-vip", Some(KEY))
}

/// A version-1 datagram carrying `payload` with a valid tag, built from the
/// format's description rather than from the codec: it lets the decoder itself
/// meet arbitrary bytes.
fn seal(payload: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut bytes = vec![1];
    bytes.extend_from_slice(payload);
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(KEY).expect("any key length");
    mac.update(&bytes);
    bytes.extend_from_slice(&mac.finalize().into_bytes());
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..=MAX_DATAGRAM + 8),
    ) {
        let codec = codec();
        // Random bytes essentially never carry a valid tag; the point is no panic.
        let _ = codec.decode(&bytes);
    }

    #[test]
    fn decoding_arbitrary_authentic_payloads_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_DATAGRAM),
    ) {
        let codec = codec();
        match codec.decode(&seal(&payload)) {
            Ok(_) | Err(Drop::Malformed) | Err(Drop::OtherCluster) | Err(Drop::Oversized) => {}
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn authentic_mutated_payloads_decode_only_canonically(
        m in message(),
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
    ) {
        // Change one byte of a real payload and re-tag it: the decoder either
        // refuses it or returns a message that encodes back to the same bytes.
        let codec = codec();
        let good = codec.encode(&m).expect("fits");
        let mut payload = good[1..good.len() - 32].to_vec();
        let i = at.index(payload.len());
        payload[i] = byte;
        let bytes = seal(&payload);
        match codec.decode(&bytes) {
            Ok(decoded) => prop_assert_eq!(codec.encode(&decoded).expect("fits"), bytes),
            Err(d) => prop_assert!(matches!(d, Drop::Malformed | Drop::OtherCluster), "{:?}", d),
        }
    }

    #[test]
    fn encoded_messages_decode_to_themselves(m in message()) {
        let codec = codec();
        let bytes = codec.encode(&m).expect("a message with at most 64 heard entries fits");
        prop_assert!(bytes.len() <= MAX_DATAGRAM);
        prop_assert_eq!(codec.decode(&bytes), Ok(m));
    }

    #[test]
    fn any_single_bit_flip_is_dropped(m in message(), bit in any::<proptest::sample::Index>()) {
        let codec = codec();
        let mut bytes = codec.encode(&m).expect("fits");
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let got = codec.decode(&bytes);
        let dropped = matches!(got, Err(Drop::BadVersion) | Err(Drop::BadMac));
        prop_assert!(dropped, "bit {}: {:?}", bit, got);
    }
}
