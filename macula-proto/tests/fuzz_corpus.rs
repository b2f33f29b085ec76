//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/`) on stable Rust, so every
//! input a fuzzer ever found interesting keeps being checked by `cargo test`.

use std::path::PathBuf;

use macula_proto::fuzzing::replay_corpus as replay;

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", macula_proto::fuzzing::frame_decode);
}

#[test]
fn node_link_data_corpus() {
    replay("node_link_data", macula_proto::fuzzing::node_link_data);
}

#[test]
fn node_dht_corpus() {
    replay("node_dht", macula_proto::fuzzing::node_dht);
}

#[test]
fn node_pubsub_corpus() {
    replay("node_pubsub", macula_proto::fuzzing::node_pubsub);
}

#[test]
fn node_rpc_corpus() {
    replay("node_rpc", macula_proto::fuzzing::node_rpc);
}

#[test]
fn node_nat_corpus() {
    replay("node_nat", macula_proto::fuzzing::node_nat);
}

/// Writes the seed inputs of the `node_nat` corpus (run once with `--ignored` when the
/// protocol changes; the fuzzer grows the corpus from them).
#[test]
#[ignore]
fn write_node_nat_seeds() {
    use macula_proto::nat::messages::{NatMessage, Via};
    use macula_proto::nat::Probe;
    use macula_proto::wire::encode;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_nat");
    std::fs::create_dir_all(&dir).unwrap();
    // One input: a header byte (kind in the low two bits, length - 1 in the next six), then
    // that many bytes.
    let item = |kind: u8, bytes: &[u8]| {
        let mut out = vec![(((bytes.len() - 1) as u8) << 2) | kind];
        out.extend_from_slice(bytes);
        out
    };
    let seen = Probe::Seen {
        nonce: 1,
        observed: "127.0.0.1:9".parse().unwrap(),
    }
    .encode();
    let frames = [
        NatMessage::Observe { id: 1 },
        NatMessage::Observed {
            id: 1,
            seen: "127.0.0.1:9".parse().unwrap(),
            aux_port: Some(10),
            second: Some("127.0.0.2:9".parse().unwrap()),
        },
        NatMessage::AnswerFrom {
            nonce: 2,
            via: Via::Auxiliary,
        },
        NatMessage::AnswerFrom {
            nonce: 3,
            via: Via::Helper {
                exclude: vec!["127.0.0.3".parse().unwrap()],
            },
        },
        NatMessage::Help {
            nonce: 4,
            to: "127.0.0.2:9".parse().unwrap(),
        },
        NatMessage::Reserve { id: 1 },
        NatMessage::Open {
            circuit: 3,
            target: macula_proto::Identity::from_seed(2).node_id(),
        },
        NatMessage::Data {
            circuit: 3,
            packet: b"packet".to_vec(),
        },
        NatMessage::Incoming {
            circuit: 1 << 63,
            from: macula_proto::Identity::from_seed(3).node_id(),
        },
        NatMessage::Close {
            circuit: 3,
            reason: macula_proto::nat::RelayRefusal::Bytes,
        },
        NatMessage::Upgrade {
            id: 1,
            profile: macula_proto::nat::NatProfile::public("127.0.0.2:9".parse().unwrap()),
        },
        NatMessage::UpgradeReply {
            id: 1,
            profile: None,
        },
        NatMessage::Go {
            id: 1,
            punch: vec![
                "127.0.0.2:9".parse().unwrap(),
                "127.0.0.2:10".parse().unwrap(),
            ],
        },
    ]
    .map(|m| encode(&m));
    let mut seeds: Vec<Vec<u8>> = vec![
        item(3, &[0]),
        [item(3, &[0]), item(2, &frames[0])].concat(),
        item(0, &seen),
        item(1, &Probe::Punch { nonce: 5 }.encode()),
        item(0, &Probe::Probe { nonce: 6 }.encode()[..60]),
        item(7, b"a QUIC packet"),
    ];
    for f in &frames {
        seeds.push(item(2, f));
    }
    let all: Vec<u8> = seeds.concat();
    seeds.push(all.clone());
    seeds.push([item(3, &[9]), all].concat());
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}

/// Writes the seed inputs of the `node_rpc` corpus (run once with `--ignored` when the
/// protocol changes; the fuzzer grows the corpus from them).
#[test]
#[ignore]
fn write_node_rpc_seeds() {
    use macula_proto::rpc::messages::{Call, CallRef, Fail, Refusal, Reply, RpcMessage};
    use macula_proto::wire::encode;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_rpc");
    std::fs::create_dir_all(&dir).unwrap();
    let call = |epoch, id, settled_below, remaining_us, procedure: &str| {
        encode(&RpcMessage::Call(Call {
            call: CallRef { epoch, id },
            settled_below,
            remaining_us,
            procedure: procedure.into(),
            payload: b"argument".to_vec(),
        }))
    };
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for id in 1..4 {
        seeds.push(call(7, id, 0, 5_000_000, "svc.a"));
        seeds.push(call(7, id, id, 1_000_000, "svc.b"));
        seeds.push(call(8, id, 0, 0, "svc.a"));
    }
    seeds.push(call(7, 9, 0, 5_000_000, "not.served"));
    seeds.push(call(7, 10, 0, u64::MAX, "svc..bad"));
    seeds.push(encode(&RpcMessage::Cancel(CallRef { epoch: 7, id: 2 })));
    seeds.push(encode(&RpcMessage::Reply(Reply {
        call: CallRef { epoch: 0, id: 1 },
        payload: b"reply".to_vec(),
    })));
    for error in [
        Refusal::NotServed,
        Refusal::Overloaded,
        Refusal::TooLarge,
        Refusal::Abandoned,
        Refusal::Application("failed".into()),
    ] {
        seeds.push(encode(&RpcMessage::Fail(Fail {
            call: CallRef { epoch: 0, id: 1 },
            error,
        })));
    }
    let all: Vec<u8> = seeds.concat();
    seeds.push(all.clone());
    seeds.push(all.iter().rev().copied().collect());
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}

/// Writes the seed inputs of the `node_pubsub` corpus (run once with `--ignored` when the
/// protocol changes; the fuzzer grows the corpus from them).
#[test]
#[ignore]
fn write_node_pubsub_seeds() {
    use macula_proto::pubsub::{PubAck, Publish, PubsubMessage, Qos};
    use macula_proto::wire::encode;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_pubsub");
    std::fs::create_dir_all(&dir).unwrap();
    let publish = |qos, seq, base, topic: &str, groups: Vec<String>, plain| {
        encode(&PubsubMessage::Publish(Publish {
            epoch: 7,
            qos,
            seq,
            base,
            plain,
            groups,
            topic: topic.into(),
            headers: vec![("k".into(), b"v".to_vec())],
            payload: b"payload".to_vec(),
        }))
    };
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for seq in 1..4 {
        seeds.push(publish(Qos::AtMostOnce, seq, 0, "t", vec![], true));
        seeds.push(publish(Qos::AtLeastOnce, seq, 1, "t.x", vec![], true));
        seeds.push(publish(
            Qos::AtLeastOnce,
            seq + 5,
            seq,
            "a.b.x",
            vec!["g".into()],
            false,
        ));
    }
    seeds.push(publish(Qos::AtLeastOnce, 3, 1, "t..x", vec![], true));
    seeds.push(encode(&PubsubMessage::PubAck(PubAck { epoch: 1, upto: 3 })));
    let all: Vec<u8> = seeds.concat();
    seeds.push(all.clone());
    seeds.push(all.iter().rev().copied().collect());
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}
