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
                assert!(lookup.found().hops >= 1);
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

/// Whole DHTs talking through a perfect in-memory network: every send is delivered at once, a
/// first send between two nodes "connects" them (both learn the other, as a handshake would
/// tell them).
mod machines {
    use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
    use alloc::vec::Vec;
    use core::net::SocketAddr;

    use crate::dht::{record_key, Dht, DhtConfig, DhtError, DhtEvent, KeyKind, Send};
    use crate::id::NodeId;
    use crate::rng::Rng;
    use crate::time::Instant;
    use crate::wire::{DhtRefusal, FindNode, Frame, Refused, Store, WireRecord};

    struct Net {
        dhts: Vec<Dht>,
        ids: Vec<NodeId>,
        index: BTreeMap<NodeId, usize>,
        linked: BTreeSet<(usize, usize)>,
        events: Vec<Vec<DhtEvent>>,
        now: Instant,
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(core::net::Ipv4Addr::LOCALHOST.into(), 2000 + i as u16)
    }

    impl Net {
        fn new(n: usize, seed: u64, config: &DhtConfig) -> Self {
            let mut rng = Rng::from_seed(seed);
            let ids: Vec<NodeId> = (0..n)
                .map(|_| {
                    let mut b = [0u8; 32];
                    rng.fill(&mut b);
                    NodeId(b)
                })
                .collect();
            let dhts = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    Dht::new(
                        config.clone(),
                        *id,
                        alloc::vec![addr(i)],
                        seed + i as u64,
                        Instant::ZERO,
                    )
                })
                .collect();
            Net {
                index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
                dhts,
                ids,
                linked: BTreeSet::new(),
                events: (0..n).map(|_| Vec::new()).collect(),
                now: Instant::ZERO,
            }
        }

        fn link(&mut self, a: usize, b: usize) {
            if self.linked.insert((a.min(b), a.max(b))) {
                let now = self.now;
                self.dhts[a].peer_up(self.ids[b], addr(b), now);
                self.dhts[b].peer_up(self.ids[a], addr(a), now);
            }
        }

        fn pump(&mut self) {
            loop {
                let mut queue: VecDeque<(usize, Send)> = VecDeque::new();
                for (i, d) in self.dhts.iter_mut().enumerate() {
                    while let Some(s) = d.poll_send() {
                        queue.push_back((i, s));
                    }
                    while let Some(e) = d.poll_event() {
                        self.events[i].push(e);
                    }
                }
                if queue.is_empty() {
                    return;
                }
                while let Some((from, send)) = queue.pop_front() {
                    let to = self.index[&send.to];
                    self.link(from, to);
                    let now = self.now;
                    let from_id = self.ids[from];
                    assert!(self.dhts[to].handle_frame(&from_id, addr(from), send.frame, now));
                }
            }
        }
    }

    #[test]
    fn a_put_with_nobody_to_store_at_fails_with_no_peers() {
        let config = DhtConfig::default();
        let mut d = Dht::new(
            config,
            NodeId([1; 32]),
            alloc::vec![addr(0)],
            1,
            Instant::ZERO,
        );
        let put = d.put([9; 32], b"v".to_vec(), Instant::ZERO);
        let events: Vec<DhtEvent> = core::iter::from_fn(|| d.poll_event()).collect();
        assert_eq!(
            events,
            alloc::vec![DhtEvent::Failed {
                op: put,
                error: DhtError::NoPeers
            }]
        );
    }

    #[test]
    fn an_answer_of_the_wrong_kind_fails_that_query_at_once() {
        let config = DhtConfig::default();
        let peer = NodeId([2; 32]);
        let mut d = Dht::new(
            config,
            NodeId([1; 32]),
            alloc::vec![addr(0)],
            1,
            Instant::ZERO,
        );
        d.peer_up(peer, addr(1), Instant::ZERO);
        // Joining asked the peer; it answers the FindNode with an `Ack`.
        let join = d.poll_send().expect("the join's query");
        let Frame::FindNode(FindNode { id, .. }) = join.frame else {
            panic!("a FindNode, got {:?}", join.frame);
        };
        let find = d.find_node([3; 32], Instant::ZERO);
        let mut ids = alloc::vec![id];
        while let Some(s) = d.poll_send() {
            if let Frame::FindNode(f) = s.frame {
                ids.push(f.id);
            }
        }
        for id in ids {
            d.handle_frame(
                &peer,
                addr(1),
                Frame::Ack(crate::wire::Ack { id }),
                Instant::ZERO,
            );
        }
        // The lookup ends now, not at `lookup_timeout`, and the peer stays a contact.
        let events: Vec<DhtEvent> = core::iter::from_fn(|| d.poll_event()).collect();
        assert!(
            events.iter().any(
                |e| matches!(e, DhtEvent::Failed { op, error: DhtError::NoPeers } if *op == find)
            ),
            "{events:?}"
        );
        assert!(d.table().get(&peer).is_some());
    }

    #[test]
    fn nodes_join_through_one_seed_and_a_put_is_got_everywhere() {
        let config = DhtConfig::default();
        let mut net = Net::new(120, 5, &config);
        for i in 1..120 {
            net.link(i, 0);
            net.pump();
        }
        // Tables filled beyond the seed.
        let filled = net.dhts.iter().filter(|d| d.table().len() >= 20).count();
        assert!(
            filled >= 110,
            "{filled} of 120 tables hold 20 or more contacts"
        );
        let key = record_key("io.test", KeyKind::Value, b"greeting");
        let put = net.dhts[7].put(key, b"hello".to_vec(), net.now);
        net.pump();
        assert!(
            net.events[7]
                .iter()
                .any(|e| matches!(e, DhtEvent::Stored { op, acks } if *op == put && *acks >= 15)),
            "{:?}",
            net.events[7]
        );
        let holders = net.dhts.iter().filter(|d| d.store().len() == 1).count();
        assert!(
            (15..=20).contains(&holders),
            "{holders} nodes hold the record"
        );
        for i in (20..120).step_by(9) {
            let get = net.dhts[i].get(key, net.now);
            net.pump();
            let got = net.events[i].iter().find_map(|e| match e {
                DhtEvent::Got { op, records } if *op == get => Some(records.clone()),
                _ => None,
            });
            let records = got.expect("the get finished");
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].value, b"hello");
            assert_eq!(records[0].publisher, net.ids[7]);
        }
        for d in &net.dhts {
            assert_eq!(d.table().check(), Ok(()));
            assert_eq!(d.store().check(), Ok(()));
            assert_eq!(d.requests_in_flight(), 0);
            assert_eq!(d.operations(), 0);
        }
    }

    #[test]
    fn a_request_flood_from_one_peer_is_rate_limited_and_bounded() {
        let config = DhtConfig::default();
        let mut net = Net::new(2, 1, &config);
        net.link(0, 1);
        net.pump();
        let flooder = net.ids[1];
        let mut answered = 0;
        let mut refused = 0;
        for id in 0..1_000u64 {
            let frame = Frame::FindNode(FindNode {
                id,
                target: [id as u8; 32],
            });
            net.dhts[0].handle_frame(&flooder, addr(1), frame, net.now);
            while let Some(s) = net.dhts[0].poll_send() {
                match s.frame {
                    Frame::Nodes(_) => answered += 1,
                    Frame::Refused(_) => refused += 1,
                    _ => {}
                }
            }
        }
        // The burst, less what node 1's own bootstrap lookup already spent; no time passes, so
        // nothing refills.
        let burst = config.peer_request_burst as usize;
        assert!(
            (burst - 3..=burst).contains(&answered),
            "{answered} answered"
        );
        assert_eq!(refused, 1_000 - answered);
        assert_eq!(net.dhts[0].stats().rate_limited, refused as u64);
        assert_eq!(net.dhts[0].table().check(), Ok(()));
        assert_eq!(
            net.dhts[0].table().len(),
            1,
            "only the flooder is a contact"
        );
    }

    #[test]
    fn a_store_flood_is_rate_limited_and_the_store_stays_bounded() {
        let config = DhtConfig {
            max_records: 50,
            peer_request_rate: 1_000,
            peer_request_burst: 1_000,
            ..DhtConfig::default()
        };
        let mut net = Net::new(2, 1, &config);
        net.link(0, 1);
        net.pump();
        let flooder = net.ids[1];
        let (mut acks, mut full, mut limited) = (0, 0, 0);
        for id in 0..5_000u64 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&id.to_be_bytes());
            let record = WireRecord {
                publisher: flooder,
                addrs: alloc::vec![],
                value: alloc::vec![1; 64],
                ttl_secs: u32::MAX,
            };
            let frame = Frame::Store(Store { id, key, record });
            net.dhts[0].handle_frame(&flooder, addr(1), frame, net.now);
            while let Some(s) = net.dhts[0].poll_send() {
                match s.frame {
                    Frame::Ack(_) => acks += 1,
                    Frame::Refused(Refused {
                        reason: DhtRefusal::StoreFull,
                        ..
                    }) => full += 1,
                    Frame::Refused(Refused {
                        reason: DhtRefusal::RateLimited,
                        ..
                    }) => limited += 1,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }
        assert_eq!(acks, 50, "exactly max_records are kept");
        assert!(
            full > 0 && limited > 0,
            "{full} full, {limited} rate-limited"
        );
        assert_eq!(net.dhts[0].store().len(), 50);
        assert_eq!(net.dhts[0].store().check(), Ok(()));
        // A record from a node that did not publish it is refused.
        let forged = WireRecord {
            publisher: NodeId([9; 32]),
            addrs: alloc::vec![],
            value: alloc::vec![],
            ttl_secs: 1,
        };
        let mut d = Dht::new(config, net.ids[0], alloc::vec![addr(0)], 3, net.now);
        d.handle_frame(
            &flooder,
            addr(1),
            Frame::Store(Store {
                id: 1,
                key: [0; 32],
                record: forged,
            }),
            net.now,
        );
        assert!(matches!(
            d.poll_send().map(|s| s.frame),
            Some(Frame::Refused(Refused {
                reason: DhtRefusal::NotPublisher,
                ..
            }))
        ));
    }

    #[test]
    fn own_operations_are_bounded_and_errors_arrive_as_events() {
        let config = DhtConfig {
            max_operations: 2,
            max_published: 1,
            ..DhtConfig::default()
        };
        let mut net = Net::new(3, 2, &config);
        net.link(0, 1);
        net.pump();
        net.events[0].clear();
        let now = net.now;
        let d = &mut net.dhts[0];
        let too_big = d.put([1; 32], alloc::vec![0; config.max_value_size + 1], now);
        // Nothing is delivered until the net pumps, so operations stay under way.
        let a = d.find_node([2; 32], now);
        let b = d.find_node([3; 32], now);
        let busy = d.find_node([4; 32], now);
        assert_eq!(d.operations(), 2);
        let mut failed = alloc::collections::BTreeMap::new();
        while let Some(e) = d.poll_event() {
            if let DhtEvent::Failed { op, error } = e {
                failed.insert(op, error);
            }
        }
        assert_eq!(failed.get(&too_big), Some(&DhtError::ValueTooLarge));
        assert_eq!(failed.get(&busy), Some(&DhtError::Busy));
        assert!(!failed.contains_key(&a) && !failed.contains_key(&b));
        net.pump();
        let d = &mut net.dhts[0];
        d.put([5; 32], alloc::vec![1], now);
        let second = d.put([6; 32], alloc::vec![1], now);
        let refused = core::iter::from_fn(|| d.poll_event()).any(|e| {
            e == DhtEvent::Failed {
                op: second,
                error: DhtError::TooManyPublished,
            }
        });
        assert!(refused, "max_published holds");
    }
}
