//! Golden vectors, round trips and hostile streams for the frame layer.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::dht::messages::{
    Ack, DhtMessage, DhtRefusal, FindNode, FindValue, Nodes, Records, Refused, Store, WireContact,
    WireRecord, Withdraw,
};
use crate::NodeId;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| alloc::format!("{b:02x}")).collect()
}

fn read<M: Message>(bytes: &[u8]) -> Result<M, MessageError> {
    let mut d = Decoder::new(1 << 20);
    d.push(bytes);
    let frame = d.next_frame().unwrap().expect("a whole frame");
    assert_eq!(frame.protocol, M::PROTOCOL);
    decode_message(frame)
}

fn record() -> WireRecord {
    WireRecord {
        publisher_key: [0x04; 32],
        addrs: vec![WireAddr::V6([0; 16], 9)],
        value: b"hi".to_vec(),
        ttl_secs: 300,
        seq: 7,
        signature: [[0x0a; 32], [0x0b; 32]],
        left_secs: 299,
    }
}

fn control_samples() -> Vec<Control> {
    vec![
        Control::Connect(Connect {
            versions: Versions { min: 2, max: 3 },
            node_id: NodeId([0xab; 32]),
            realm: "io.example".into(),
            auth: Some([0x11; 32]),
            listen_addrs: vec![WireAddr::V4([127, 0, 0, 1], 4433), WireAddr::V6([0; 16], 1)],
            roles: 1,
            protocols: vec![ProtocolOffer {
                id: ProtocolId::DHT,
                version: 1,
            }],
        }),
        Control::ConnectAck(ConnectAck {
            version: 3,
            node_id: NodeId([0x01; 32]),
            listen_addrs: vec![],
            roles: 0,
            protocols: vec![],
            auth: Some([0x5a; 32]),
        }),
        Control::ConnectError(ConnectError {
            reason: RefuseReason::Capacity,
            message: "full".into(),
        }),
        Control::Ping(Ping { id: 300 }),
        Control::Pong(Ping { id: u64::MAX }),
    ]
}

fn dht_samples() -> Vec<DhtMessage> {
    vec![
        DhtMessage::FindNode(FindNode {
            id: 1,
            target: [0x5a; 32],
        }),
        DhtMessage::FindValue(FindValue {
            id: 2,
            key: [0xa5; 32],
            after: Some(NodeId([3; 32])),
        }),
        DhtMessage::Nodes(Nodes {
            id: 1,
            nodes: vec![WireContact {
                id: NodeId([0x02; 32]),
                addr: WireAddr::V4([198, 18, 0, 2], 4433),
            }],
        }),
        DhtMessage::Records(Records {
            id: 2,
            records: vec![record()],
            nodes: vec![],
            more: true,
        }),
        DhtMessage::Store(Store {
            id: 3,
            key: [0x11; 32],
            record: record(),
        }),
        DhtMessage::Withdraw(Withdraw {
            id: 4,
            key: [0x22; 32],
        }),
        DhtMessage::Ack(Ack { id: 3 }),
        DhtMessage::Refused(Refused {
            id: 5,
            reason: DhtRefusal::NotPublisher,
        }),
    ]
}

/// Golden vectors: these bytes are the protocol. A change here breaks interoperability and
/// needs a new link or protocol version, not a new vector. `docs/wire.md` lists them too.
#[test]
fn golden_vectors_pin_the_encoding() {
    let ping = encode(&Control::Ping(Ping { id: 300 }));
    assert_eq!(hex(&ping), "040003ac02");
    let pong = encode(&Control::Pong(Ping { id: u64::MAX }));
    assert_eq!(hex(&pong), "0c0004ffffffffffffffffff01");
    let err = encode(&Control::ConnectError(ConnectError {
        reason: RefuseReason::Capacity,
        message: "full".into(),
    }));
    assert_eq!(hex(&err), "080002030466756c6c");
    let ack = encode(&Control::ConnectAck(ConnectAck {
        version: 3,
        node_id: NodeId([0x01; 32]),
        listen_addrs: vec![WireAddr::V4([127, 0, 0, 1], 4433)],
        roles: 2,
        protocols: vec![ProtocolOffer {
            id: ProtocolId::DHT,
            version: 1,
        }],
        auth: None,
    }));
    assert_eq!(
        hex(&ack),
        alloc::format!("30000103{}01007f000001d122020101 01 00", "01".repeat(32)).replace(' ', "")
    );
    let connect = encode(&Control::Connect(Connect {
        versions: Versions { min: 3, max: 3 },
        node_id: NodeId([0xab; 32]),
        realm: "io.x".into(),
        auth: None,
        listen_addrs: vec![WireAddr::V6([0; 16], 1)],
        roles: 0,
        protocols: vec![],
    }));
    assert_eq!(
        hex(&connect),
        alloc::format!(
            "3f00000303{}04696f2e78000101{}010000",
            "ab".repeat(32),
            "00".repeat(16)
        )
    );
    let find = encode(&DhtMessage::FindNode(FindNode {
        id: 7,
        target: [0x5a; 32],
    }));
    assert_eq!(hex(&find), alloc::format!("23010007{}", "5a".repeat(32)));
    let refused = encode(&DhtMessage::Refused(Refused {
        id: 9,
        reason: DhtRefusal::RateLimited,
    }));
    assert_eq!(hex(&refused), "0401070900");
    let store = encode(&DhtMessage::Store(Store {
        id: 8,
        key: [0x11; 32],
        record: WireRecord {
            publisher_key: [0x04; 32],
            addrs: vec![],
            value: b"hi".to_vec(),
            ttl_secs: 300,
            seq: 1,
            signature: [[0x0a; 32], [0x0b; 32]],
            left_secs: 300,
        },
    }));
    assert_eq!(
        hex(&store),
        alloc::format!(
            "8c01010408{}{}00026869ac0201{}{}ac02",
            "11".repeat(32),
            "04".repeat(32),
            "0a".repeat(32),
            "0b".repeat(32)
        )
    );
}

#[test]
fn every_sample_round_trips() {
    for m in control_samples() {
        assert_eq!(read::<Control>(&encode(&m)), Ok(m));
    }
    for m in dht_samples() {
        assert_eq!(read::<DhtMessage>(&encode(&m)), Ok(m));
    }
}

#[test]
fn unknown_kinds_and_malformed_fields_are_told_apart() {
    // Control kind 9 does not exist; kind 3 (ping) with a stray byte is malformed.
    assert_eq!(
        read::<Control>(&[0x02, 0x00, 0x09]),
        Err(MessageError::UnknownKind(9))
    );
    assert_eq!(
        read::<Control>(&[0x04, 0x00, 0x03, 0x01, 0x00]),
        Err(MessageError::Malformed)
    );
    // A refusal reason from a newer peer is read, not refused.
    let newer = read::<DhtMessage>(&[0x04, 0x01, 0x07, 0x09, 0x63]);
    assert_eq!(
        newer,
        Ok(DhtMessage::Refused(Refused {
            id: 9,
            reason: DhtRefusal::Other(99)
        }))
    );
}

#[test]
fn frames_of_any_protocol_are_split_off_the_stream() {
    // Protocol 0x1234 is unknown here: the decoder still finds where it ends.
    let mut stream = vec![0x05, 0xb4, 0x24, 0x00, 0xaa, 0xbb];
    stream.extend(encode(&Control::Ping(Ping { id: 1 })));
    let mut d = Decoder::new(1024);
    d.push(&stream);
    let first = d.next_frame().unwrap().unwrap();
    assert_eq!(first.protocol, ProtocolId(0x1234));
    assert_eq!(first.kind(), 0);
    let second = d.next_frame().unwrap().unwrap();
    assert_eq!(
        decode_message::<Control>(second),
        Ok(Control::Ping(Ping { id: 1 }))
    );
    assert_eq!(d.next_frame(), Ok(None));
}

#[test]
fn a_large_frame_in_pieces_leaves_no_large_buffer_behind() {
    let frame = encode(&Control::Ping(Ping { id: 1 }));
    // A frame of 200 KiB arrives in 1 KiB pieces.
    let payload = EchoLike::Bytes(vec![9; 200 * 1024]);
    let mut whole = Vec::new();
    encode_into(&payload, &mut whole);
    let mut d = Decoder::new(1 << 20);
    let mut frames = 0;
    for (i, piece) in whole.chunks(1024).enumerate() {
        if i == whole.len() / 1024 {
            assert!(d.capacity() > 100 * 1024, "the frame was buffered");
        }
        let mut input = piece;
        while let Some(f) = d.next_frame_from(&mut input).unwrap() {
            assert_eq!(f.protocol, ProtocolId(0x7d));
            frames += 1;
        }
    }
    assert_eq!(frames, 1);
    assert!(
        d.capacity() <= 4096,
        "and then given back: {}",
        d.capacity()
    );
    // Small frames in pieces keep their small buffer.
    for piece in frame.chunks(2).chain(frame.chunks(3)) {
        d.push(piece);
        while d.next_frame().unwrap().is_some() {}
    }
    assert_eq!(d.buffered(), 0);
}

/// A stand-in message with one large field.
#[derive(serde::Serialize, serde::Deserialize)]
enum EchoLike {
    Bytes(Vec<u8>),
}

impl Message for EchoLike {
    const PROTOCOL: ProtocolId = ProtocolId(0x7d);
    const KINDS: u32 = 1;
}

#[test]
fn a_huge_prefix_is_refused_before_buffering() {
    let mut d = Decoder::new(1 << 20);
    // 4 GiB - 1 announced; only the five prefix bytes ever arrive.
    d.push(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert_eq!(
        d.next_frame(),
        Err(DecodeError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: 1 << 20
        })
    );
    d.push(&[0u8; 64]);
    assert_eq!(d.buffered(), 0, "a failed decoder drops what it is fed");
    assert!(d.next_frame().is_err());
}

#[test]
fn malformed_prefixes_and_envelopes_are_errors() {
    for bad in [
        &[0x80, 0x00][..],
        &[0xff, 0xff, 0xff, 0xff, 0x7f],
        &[0x80; 6],
    ] {
        let mut d = Decoder::new(u32::MAX);
        d.push(bad);
        assert_eq!(d.next_frame(), Err(DecodeError::BadPrefix), "{bad:?}");
    }
    for bad in [
        &[0x00][..],                  // an empty body: no protocol
        &[0x01, 0x00],                // a protocol but no kind
        &[0x04, 0xff, 0xff, 0x7f, 0], // a protocol id over u16
        &[0x03, 0x80, 0x00, 0x00],    // a protocol id not canonical
    ] {
        let mut d = Decoder::new(1024);
        d.push(bad);
        assert_eq!(d.next_frame(), Err(DecodeError::BadFrame), "{bad:?}");
    }
}

fn arb_control() -> impl Strategy<Value = Control> {
    prop_oneof![
        any::<u64>().prop_map(|id| Control::Ping(Ping { id })),
        any::<u64>().prop_map(|id| Control::Pong(Ping { id })),
        (
            any::<[u8; 32]>(),
            "[a-z.]{0,40}",
            any::<Option<[u8; 32]>>(),
            any::<u8>(),
            proptest::collection::vec((any::<u16>(), any::<u16>()), 0..4),
        )
            .prop_map(
                |(id, realm, auth, roles, protocols)| Control::Connect(Connect {
                    versions: Versions::OURS,
                    node_id: NodeId(id),
                    realm,
                    auth,
                    listen_addrs: vec![WireAddr::V4([10, 0, 0, 1], 9)],
                    roles,
                    protocols: protocols
                        .into_iter()
                        .map(|(id, version)| ProtocolOffer {
                            id: ProtocolId(id),
                            version,
                        })
                        .collect(),
                })
            ),
        (0usize..5, ".{0,300}").prop_map(|(r, message)| Control::ConnectError(ConnectError {
            reason: RefuseReason::ALL[r],
            message,
        })),
    ]
}

proptest! {
    #[test]
    fn any_chunking_decodes_to_the_same_frames(
        messages in proptest::collection::vec(arb_control(), 1..20),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
    ) {
        let mut stream = Vec::new();
        for m in &messages {
            encode_into(m, &mut stream);
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        for w in points.windows(2) {
            d.push(&stream[w[0]..w[1]]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(decode_message::<Control>(f).unwrap());
            }
        }
        prop_assert_eq!(&out, &messages);
        prop_assert_eq!(d.buffered(), 0);
        // Reading straight from the chunks gives the same messages.
        let mut d = Decoder::new(1 << 20);
        let mut direct = Vec::new();
        for w in points.windows(2) {
            let mut input = &stream[w[0]..w[1]];
            while let Some(f) = d.next_frame_from(&mut input).unwrap() {
                direct.push(decode_message::<Control>(f).unwrap());
            }
            prop_assert!(input.is_empty());
        }
        prop_assert_eq!(direct, messages);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut d = Decoder::new(1024);
        for chunk in bytes.chunks(7) {
            d.push(chunk);
            while let Ok(Some(f)) = d.next_frame() {
                let _ = decode_message::<Control>(RawFrame { protocol: ProtocolId::CONTROL, ..f });
                let _ = decode_message::<DhtMessage>(RawFrame { protocol: ProtocolId::DHT, ..f });
            }
            prop_assert!(d.buffered() <= 1024 + MAX_PREFIX_LEN + 7);
        }
    }
}
