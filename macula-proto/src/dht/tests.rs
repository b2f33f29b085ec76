//! Laws of the XOR metric and of the routing table.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use super::table::{Contact, Diversity, Insert, RoutingTable};
use crate::id::NodeId;
use crate::time::Instant;

fn arb_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId)
}

/// Ids sharing `shared` leading bits with `own`, then random.
fn near(own: &NodeId, mut bytes: [u8; 32], shared: usize) -> NodeId {
    for bit in 0..shared.min(256) {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        bytes[byte] = (bytes[byte] & !mask) | (own.0[byte] & mask);
    }
    NodeId(bytes)
}

/// 256-bit big-endian addition; `None` on overflow.
fn add(a: [u8; 32], b: [u8; 32]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    (carry == 0).then_some(out)
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        id: [u8; 32],
        shared: usize,
        net: u8,
        at: u64,
    },
    Seen {
        pick: usize,
        at: u64,
    },
    Remove {
        pick: usize,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<[u8; 32]>(), 0usize..24, 0u8..12, 0u64..1_000)
            .prop_map(|(id, shared, net, at)| Op::Insert { id, shared, net, at }),
        2 => (any::<usize>(), 0u64..1_000).prop_map(|(pick, at)| Op::Seen { pick, at }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
    ]
}

fn addr(net: u8, host: u8) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(198, 18, net, host).into(), 4433)
}

proptest! {
    #[test]
    fn xor_metric_laws(a in arb_id(), b in arb_id(), c in arb_id()) {
        prop_assert_eq!(a.distance(&a).0, [0u8; 32]);
        prop_assert_eq!(a.distance(&b), b.distance(&a));
        let (ab, bc, ac) = (a.distance(&b), b.distance(&c), a.distance(&c));
        // d(a,c) = d(a,b) xor d(b,c) ...
        let mut x = ab.0;
        for (x, y) in x.iter_mut().zip(bc.0) {
            *x ^= y;
        }
        prop_assert_eq!(x, ac.0);
        // ... so the triangle inequality holds,
        if let Some(sum) = add(ab.0, bc.0) {
            prop_assert!(ac.0 <= sum);
        }
        // and the metric is unidirectional: no other id is at the same distance from a.
        if b != c {
            prop_assert_ne!(ab, ac);
        }
    }

    #[test]
    fn any_history_leaves_a_well_formed_table(
        own in arb_id(),
        k in 1usize..6,
        ops in proptest::collection::vec(arb_op(), 1..300),
    ) {
        let mut table = RoutingTable::new(own, k, 3, Diversity::default());
        let mut known: Vec<NodeId> = Vec::new();
        for op in ops {
            match op {
                Op::Insert { id, shared, net, at } => {
                    let id = near(&own, id, shared);
                    let c = Contact { id, addr: addr(net, id.0[31]), last_seen: Instant::from_micros(at) };
                    let before = table.len();
                    match table.insert(c) {
                        Insert::Added => prop_assert_eq!(table.len(), before + 1),
                        Insert::Pending { oldest } => {
                            prop_assert!(table.get(&oldest).is_some());
                            prop_assert_eq!(table.len(), before);
                        }
                        Insert::Own => prop_assert_eq!(id, own),
                        Insert::Updated | Insert::Diversity => {}
                    }
                    known.push(id);
                }
                Op::Seen { pick, at } if !known.is_empty() => {
                    let id = known[pick % known.len()];
                    table.seen(&id, Instant::from_micros(at));
                }
                Op::Remove { pick } if !known.is_empty() => {
                    let id = known[pick % known.len()];
                    table.remove(&id);
                    prop_assert!(table.get(&id).is_none());
                }
                _ => {}
            }
            if let Err(e) = table.check() {
                return Err(TestCaseError::fail(e));
            }
        }
        // closest() is exactly the brute-force answer over the table's contacts.
        let target = known.first().copied().unwrap_or(own);
        let mut all: Vec<NodeId> = table.iter().map(|c| c.id).collect();
        all.sort_by_key(|x| x.distance(&target));
        all.truncate(k + 2);
        let got: Vec<NodeId> = table.closest(&target, k + 2).iter().map(|c| c.id).collect();
        prop_assert_eq!(got, all);
    }
}

#[test]
fn the_own_bucket_splits_and_far_buckets_do_not() {
    let own = NodeId([0u8; 32]);
    let mut table = RoutingTable::new(
        own,
        2,
        1,
        Diversity {
            per_bucket: 99,
            per_table: 99,
        },
    );
    let c = |first: u8, last: u8| Contact {
        id: NodeId({
            let mut b = [0u8; 32];
            b[0] = first;
            b[31] = last;
            b
        }),
        addr: addr(0, last),
        last_seen: Instant::from_micros(u64::from(last)),
    };
    // Three far contacts (first bit set): one bucket's worth fits after a split.
    assert_eq!(table.insert(c(0x80, 1)), Insert::Added);
    assert_eq!(table.insert(c(0x80, 2)), Insert::Added);
    assert_eq!(table.bucket_count(), 1);
    // A near contact fills past k: the own bucket splits, far ones stay in bucket 0.
    assert_eq!(table.insert(c(0x01, 3)), Insert::Added);
    assert_eq!(table.bucket_count(), 2);
    assert_eq!(table.bucket_fill(), [2, 1]);
    // Bucket 0 is full and does not cover our id: the newcomer waits, the oldest is named.
    let far = c(0xc0, 4);
    assert_eq!(
        table.insert(far),
        Insert::Pending {
            oldest: c(0x80, 1).id
        }
    );
    // The oldest fails to answer: removing it promotes the replacement.
    table.remove(&c(0x80, 1).id);
    assert!(table.get(&far.id).is_some());
    assert_eq!(table.check(), Ok(()));
}

#[test]
fn diversity_limits_hold_and_loopback_is_exempt() {
    let own = NodeId([0u8; 32]);
    let mut table = RoutingTable::new(own, 20, 0, Diversity::default());
    let mut added = 0;
    for i in 0..40u8 {
        let mut b = [0xffu8; 32];
        b[31] = i;
        let c = Contact {
            id: NodeId(b),
            addr: addr(7, i),
            last_seen: Instant::ZERO,
        };
        if table.insert(c) == Insert::Added {
            added += 1;
        }
    }
    assert_eq!(added, 2, "two per /24 per bucket");
    let mut local = RoutingTable::new(own, 20, 0, Diversity::default());
    for i in 0..20u8 {
        let mut b = [0xffu8; 32];
        b[31] = i;
        let c = Contact {
            id: NodeId(b),
            addr: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 4000 + u16::from(i)),
            last_seen: Instant::ZERO,
        };
        assert_eq!(local.insert(c), Insert::Added);
    }
}

mod lookups {
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use core::net::SocketAddr;

    use crate::dht::lookup::Lookup;
    use crate::dht::table::{Contact, Diversity, RoutingTable};
    use crate::id::NodeId;
    use crate::rng::Rng;
    use crate::time::Instant;

    fn random_id(rng: &mut Rng) -> NodeId {
        let mut b = [0u8; 32];
        rng.fill(&mut b);
        NodeId(b)
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(core::net::Ipv4Addr::LOCALHOST.into(), 1000 + i as u16)
    }

    /// A static network where every node has offered every other node to its table (so each
    /// table is exactly what Kademlia's splitting keeps), and queries are answered at once.
    fn network(n: usize, k: usize, seed: u64) -> BTreeMap<NodeId, RoutingTable> {
        let mut rng = Rng::from_seed(seed);
        let ids: Vec<NodeId> = (0..n).map(|_| random_id(&mut rng)).collect();
        ids.iter()
            .map(|own| {
                let mut t = RoutingTable::new(*own, k, 0, Diversity::default());
                for (i, other) in ids.iter().enumerate() {
                    t.insert(Contact {
                        id: *other,
                        addr: addr(i),
                        last_seen: Instant::ZERO,
                    });
                }
                (*own, t)
            })
            .collect()
    }

    /// Runs a lookup to completion, with `unreachable` nodes failing every query.
    fn run(
        net: &BTreeMap<NodeId, RoutingTable>,
        from: NodeId,
        target: NodeId,
        k: usize,
        unreachable: &[NodeId],
    ) -> Lookup {
        let seeds = net[&from]
            .closest(&target, k)
            .into_iter()
            .map(|c| (c.id, c.addr));
        let mut lookup = Lookup::new(from, target.0, k, 3, seeds);
        let mut rounds = 0;
        while !lookup.is_done() {
            let asked = lookup.next_queries();
            assert!(
                !asked.is_empty(),
                "a lookup that is not done has queries to send"
            );
            for (id, _) in asked {
                if unreachable.contains(&id) {
                    lookup.failed(&id);
                } else {
                    let answer = net[&id].closest(&target, k);
                    lookup.answered(&id, answer.into_iter().map(|c| (c.id, c.addr)));
                }
            }
            rounds += 1;
            assert!(rounds < 1_000, "lookups terminate");
        }
        lookup
    }

    fn truth(
        net: &BTreeMap<NodeId, RoutingTable>,
        from: NodeId,
        target: NodeId,
        k: usize,
        skip: &[NodeId],
    ) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = net
            .keys()
            .copied()
            .filter(|id| *id != from && !skip.contains(id))
            .collect();
        all.sort_by_key(|id| id.distance(&target));
        all.truncate(k);
        all
    }

    #[test]
    fn lookups_in_a_static_network_find_exactly_the_k_true_closest() {
        for (seed, n, k) in [(1u64, 400usize, 20usize), (2, 1_000, 20), (3, 300, 4)] {
            let net = network(n, k, seed);
            let ids: Vec<NodeId> = net.keys().copied().collect();
            let mut rng = Rng::from_seed(seed + 100);
            for _ in 0..30 {
                let from = ids[rng.below(ids.len() as u64) as usize];
                // Half the targets are random ids, half are existing nodes.
                let target = if rng.below(2) == 0 {
                    random_id(&mut rng)
                } else {
                    ids[rng.below(ids.len() as u64) as usize]
                };
                let lookup = run(&net, from, target, k, &[]);
                let found: Vec<NodeId> = lookup.found().closest.iter().map(|(id, _)| *id).collect();
                assert_eq!(
                    found,
                    truth(&net, from, target, k, &[]),
                    "seed {seed}, n {n}, k {k}"
                );
                // One hop when the closest node was in `from`'s own table, more otherwise.
                let closest = found[0];
                let own_table = net[&from].get(&closest).is_some();
                assert_eq!(lookup.found().hops == 1, own_table, "seed {seed}");
            }
        }
    }

    #[test]
    fn failed_nodes_are_routed_around() {
        let (n, k) = (500, 20);
        let net = network(n, k, 9);
        let ids: Vec<NodeId> = net.keys().copied().collect();
        let dead: Vec<NodeId> = ids.iter().step_by(5).copied().collect();
        let mut rng = Rng::from_seed(10);
        for _ in 0..20 {
            let from = ids[1 + 5 * rng.below((n / 5 - 1) as u64) as usize];
            let target = random_id(&mut rng);
            let lookup = run(&net, from, target, k, &dead);
            let found: Vec<NodeId> = lookup.found().closest.iter().map(|(id, _)| *id).collect();
            // Answers still list the dead (no table here ever evicts), so each answer holds
            // only about 16 live nodes of its 20: the live nodes ranked past that may stay
            // unknown. The closest ones are always found, and no dead node is returned.
            assert!(found.iter().all(|id| !dead.contains(id)));
            assert_eq!(found[..10], truth(&net, from, target, k, &dead)[..10]);
        }
    }
}

/// The DHT driven through whole nodes on the in-crate harness.
mod machines {
    use alloc::vec::Vec;

    use crate::config::{Config, Realm};
    use crate::dht::messages::{DhtMessage, DhtRefusal, Refused, Store};
    use crate::dht::{DhtConfig, DhtError, DhtEvent, KeyKind, Record};
    use crate::node::Event;
    use crate::testnet::{addr, handshake_from, Net};
    use crate::time::Duration;
    use crate::wire::{encode, ProtocolId};
    use crate::Identity;

    fn listening(n: usize, dht: DhtConfig) -> Vec<Config> {
        (0..n)
            .map(|i| {
                let mut c = Config::new(Realm::new("io.test").unwrap());
                c.listen_addrs = alloc::vec![addr(i)];
                c.dht = dht.clone();
                // These tests count the records and operations of the DHT's own users.
                c.publish_pins = false;
                c
            })
            .collect()
    }

    fn outcomes(events: &[Event]) -> Vec<DhtEvent> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Dht(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    fn outcome(net: &Net, node: usize, op: crate::dht::OpId) -> Option<DhtEvent> {
        outcomes(&net.events[node])
            .into_iter()
            .find(|e| e.op() == op)
    }

    #[test]
    fn alone_a_put_fails_with_no_peers_and_a_get_finds_the_own_record() {
        let mut net = Net::new(listening(1, DhtConfig::default()));
        let put = net.command(0, |n, now| n.dht_put(b"k", b"v".to_vec(), now));
        assert_eq!(
            outcome(&net, 0, put),
            Some(DhtEvent::Failed {
                op: put,
                error: DhtError::NoPeers
            })
        );
        let get = net.command(0, |n, now| n.dht_get(b"k", now));
        let Some(DhtEvent::Got { records, .. }) = outcome(&net, 0, get) else {
            panic!("{:?}", net.events[0]);
        };
        assert_eq!(records.len(), 1, "the publisher keeps its own record");
        assert_eq!(records[0].value, b"v");
    }

    #[test]
    fn nodes_join_through_one_seed_and_a_put_is_got_everywhere() {
        let n = 120;
        let mut net = Net::new(listening(n, DhtConfig::default()));
        for i in 1..n {
            // One after another: the seed takes at most 64 handshakes at once.
            net.connect(i, 0);
            net.run_for(Duration::from_millis(100));
        }
        net.run_for(Duration::from_secs(30));
        let filled = net
            .nodes
            .iter()
            .filter(|d| d.dht().table().len() >= 20)
            .count();
        assert!(
            filled >= 110,
            "{filled} of {n} tables hold 20 or more contacts"
        );
        let put = net.command(7, |node, now| {
            node.dht_put(b"greeting", b"hello".to_vec(), now)
        });
        net.run_for(Duration::from_secs(10));
        assert!(
            matches!(outcome(&net, 7, put), Some(DhtEvent::Stored { acks, .. }) if acks >= 15),
            "{:?}",
            outcome(&net, 7, put)
        );
        let holders = net
            .nodes
            .iter()
            .filter(|d| d.dht().store().len() == 1)
            .count();
        assert!(
            (15..=20).contains(&holders),
            "{holders} nodes hold the record"
        );
        for i in (20..n).step_by(9) {
            let get = net.command(i, |node, now| node.dht_get(b"greeting", now));
            net.run_for(Duration::from_secs(10));
            let Some(DhtEvent::Got { records, .. }) = outcome(&net, i, get) else {
                panic!("node {i}'s get: {:?}", outcome(&net, i, get));
            };
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].value, b"hello");
            assert_eq!(records[0].publisher, net.id(7));
        }
        for d in &net.nodes {
            assert_eq!(d.dht().table().check(), Ok(()));
            assert_eq!(d.dht().store().check(), Ok(()));
            assert_eq!(d.dht().operations(), 0);
        }
    }

    #[test]
    fn a_key_with_a_thousand_providers_is_stored_paged_and_found_whole() {
        let mut configs = listening(4, DhtConfig::default());
        configs[0].max_peers = 2_000;
        // The thousand providers all handshake from the test's one address at once.
        configs[0].handshake_limit = crate::Limit::per_second(1_000, 2_000);
        let mut net = Net::new(configs);
        for i in 1..4 {
            net.connect(i, 0);
        }
        net.run_for(Duration::from_secs(5));
        // A thousand publishers, each over its own link, store a provider record at node 0.
        let key = net.nodes[0].dht_key(KeyKind::Provider, b"service");
        let now = net.now;
        for p in 0..1_000u64 {
            let who = Identity::from_seed(10_000 + p);
            let link = handshake_from(&mut net.nodes[0], &who, addr(20 + p as usize), now);
            let ttl = Duration::from_secs(300);
            let record = Record::sign(&who, &key, &[addr(9)], alloc::vec![1; 64], ttl, 1, now);
            let store = DhtMessage::Store(Store {
                id: 1,
                key,
                record: record.to_wire(now),
            });
            let channel = ProtocolId::DHT.channel();
            net.nodes[0].handle_link_data(link, channel, &encode(&store), now);
            net.nodes[0].close_link(link, crate::CloseCode::Goodbye, now);
            while net.nodes[0].poll_transmit().is_some() {}
        }
        assert_eq!(net.nodes[0].dht().store().len(), 1_000);
        let get = net.command(2, |node, now| node.dht_find_providers(b"service", now));
        net.run_for(Duration::from_secs(10));
        let Some(DhtEvent::Got { records, .. }) = outcome(&net, 2, get) else {
            panic!("{:?}", outcome(&net, 2, get));
        };
        assert_eq!(records.len(), 1_000, "every provider, over several pages");
        let pages = net
            .log
            .iter()
            .filter(|(i, t)| *i == 2 && matches!(t, crate::Transmit::Send { channel, .. } if *channel == ProtocolId::DHT.channel()))
            .count();
        assert!(pages > 1);
    }

    #[test]
    fn forged_and_foreign_records_are_refused_on_store() {
        let mut net = Net::new(listening(2, DhtConfig::default()));
        let link = net.connect(1, 0);
        net.run_for(Duration::from_secs(1));
        let key = [5u8; 32];
        let now = net.now;
        let ttl = Duration::from_secs(60);
        let own = net.nodes[1].identity().clone();
        let other = Identity::from_seed(77);
        let foreign = Record::sign(&other, &key, &[], alloc::vec![1], ttl, 1, now).to_wire(now);
        let mut forged = Record::sign(&own, &key, &[], alloc::vec![1], ttl, 1, now).to_wire(now);
        forged.value = alloc::vec![2];
        let &(_, remote) = net.wires.get(&(1, link)).unwrap();
        for (id, record) in [(1, foreign), (2, forged)] {
            let bytes = encode(&DhtMessage::Store(Store { id, key, record }));
            net.nodes[0].handle_link_data(remote, ProtocolId::DHT.channel(), &bytes, now);
        }
        let answers: Vec<DhtMessage> = core::iter::from_fn(|| net.nodes[0].poll_transmit())
            .filter_map(|t| match t {
                crate::Transmit::Send { bytes, .. } => Some(bytes),
                _ => None,
            })
            .flat_map(|bytes| {
                let mut d = crate::wire::Decoder::new(1 << 20);
                d.push(&bytes);
                let mut out = Vec::new();
                while let Ok(Some(f)) = d.next_frame() {
                    if f.protocol == ProtocolId::DHT {
                        out.push(crate::wire::decode_message::<DhtMessage>(f).unwrap());
                    }
                }
                out
            })
            .collect();
        let reasons: Vec<(u64, DhtRefusal)> = answers
            .iter()
            .filter_map(|m| match m {
                DhtMessage::Refused(Refused { id, reason }) => Some((*id, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            [(1, DhtRefusal::NotPublisher), (2, DhtRefusal::BadSignature)]
        );
        assert!(net.nodes[0].dht().store().is_empty());
    }

    #[test]
    fn own_operations_are_bounded_and_refusals_change_nothing() {
        let config = DhtConfig {
            max_operations: 2,
            max_published: 1,
            join: false,
            ..DhtConfig::default()
        };
        let mut net = Net::new(listening(2, config.clone()));
        net.connect(0, 1);
        net.run_for(Duration::from_secs(1));
        net.events[0].clear();
        let too_big = net.command(0, |n, now| {
            n.dht_put(b"big", alloc::vec![0; config.max_value_size + 1], now)
        });
        let a = net.command(0, |n, now| n.dht_find_node(&crate::NodeId([2; 32]), now));
        let b = net.command(0, |n, now| n.dht_find_node(&crate::NodeId([3; 32]), now));
        let busy = net.command(0, |n, now| n.dht_put(b"busy", alloc::vec![1], now));
        assert_eq!(net.nodes[0].dht().operations(), 2);
        let failed = |net: &Net, op| match outcome(net, 0, op) {
            Some(DhtEvent::Failed { error, .. }) => Some(error),
            _ => None,
        };
        assert_eq!(failed(&net, too_big), Some(DhtError::ValueTooLarge));
        assert_eq!(failed(&net, busy), Some(DhtError::Busy));
        assert!(failed(&net, a).is_none() && failed(&net, b).is_none());
        net.run_for(Duration::from_secs(1));
        // The refused put published nothing: a get finds no record of it, here or anywhere.
        let get = net.command(0, |n, now| n.dht_get(b"busy", now));
        net.run_for(Duration::from_secs(1));
        assert!(
            matches!(outcome(&net, 0, get), Some(DhtEvent::Got { records, .. }) if records.is_empty()),
            "{:?}",
            outcome(&net, 0, get)
        );
        net.command(0, |n, now| n.dht_put(b"one", alloc::vec![1], now));
        let second = net.command(0, |n, now| n.dht_put(b"two", alloc::vec![1], now));
        assert_eq!(failed(&net, second), Some(DhtError::TooManyPublished));
    }

    #[test]
    fn republishing_tells_the_application_nothing_and_timeouts_count_as_failed_lookups() {
        let mut net = Net::new(listening(3, DhtConfig::default()));
        net.connect(1, 0);
        net.connect(2, 0);
        net.run_for(Duration::from_secs(5));
        let put = net.command(1, |n, now| n.dht_put(b"k", b"v".to_vec(), now));
        net.run_for(Duration::from_secs(700));
        let ops: Vec<_> = outcomes(&net.events[1]).iter().map(DhtEvent::op).collect();
        assert_eq!(ops, [put], "republishes are the node's own business");
        // Node 2 stops answering (its link to 0 is cut one way); a lookup that asks only
        // it times out and counts as a failed lookup.
        let before = net.nodes[0].dht().stats().clone();
        let link = net.nodes[2].peer(&net.id(0)).unwrap().link;
        net.wires.remove(&(2, link));
        net.nodes[1].close(net.now);
        net.drain(1);
        net.run_for(Duration::from_secs(1));
        let target = net.id(2);
        net.command(0, |n, now| n.dht_find_node(&target, now));
        net.run_for(Duration::from_secs(40));
        let after = net.nodes[0].dht().stats();
        assert!(after.lookups > before.lookups);
        assert!(after.lookups - before.lookups > after.lookups_ok - before.lookups_ok);
    }
}
