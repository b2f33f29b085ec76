//! Channels: a mebibyte crossing a bottleneck on one channel does not hold back pings on
//! another, in QUIC mode (real quinn over a 1 Mbit/s uplink with a 64 KiB drop-tail buffer) and
//! in frames mode alike. Virtual time only: the figures are the same on every machine.

use macula_proto::{Duration, Event, Instant, NodeId};
use macula_sim::{LinkModel, Mode, Sim, SimBuilder};

/// 1 Mbit/s, in bytes per second.
const RATE: u64 = 125_000;
/// The bottleneck's buffer.
const BUFFER: u64 = 64 * 1024;
/// What crosses: four bulk frames of 256 KiB.
const CHUNK: usize = 256 * 1024;
const CHUNKS: usize = 4;

/// Pings node 0 from node 1 every 100 ms until `done` holds or `limit` passes; the round trips.
fn ping_until(sim: &mut Sim, limit: Instant, done: impl Fn(&Sim) -> bool) -> Vec<Duration> {
    let target: NodeId = sim.node_id(0);
    let mut rtts = Vec::new();
    while sim.now() < limit && !done(sim) {
        sim.ping(1, target)
            .expect("node 1 is up")
            .expect("a ping slot");
        let until = sim.now() + Duration::from_millis(100);
        sim.run_until(until, |_| false);
        for (node, event) in sim.take_events() {
            if let (1, Event::PingResult { result, .. }) = (node, event) {
                rtts.push(result.expect("every ping is answered"));
            }
        }
    }
    rtts
}

fn received(sim: &Sim) -> u64 {
    sim.node(0).map_or(0, |n| n.echo_state().bulk_received)
}

/// The idle round trips, then those while the mebibyte crosses.
fn pings_beside_a_mebibyte(mode: Mode) -> (Vec<Duration>, Vec<Duration>) {
    let link = LinkModel {
        bandwidth: Some(RATE),
        buffer: Some(BUFFER),
        jitter: Duration::ZERO,
        ..LinkModel::default()
    };
    let mut sim = SimBuilder::new()
        .seed(5)
        .nodes(2)
        .mode(mode)
        .link_model(link)
        .record_events(true)
        .configure(|_, c| c.test_echo = true)
        .build();
    sim.connect(1, 0);
    let t = |s| Instant::ZERO + Duration::from_secs(s);
    assert!(sim.run_until(t(10), |s| s.node(1).is_some_and(|n| n.peer_count() == 1)));
    sim.run_until(t(11), |_| false);
    sim.take_events();
    let idle = ping_until(&mut sim, t(13), |_| false);
    let target = sim.node_id(0);
    for _ in 0..CHUNKS {
        sim.command(1, |n, now| n.echo_bulk(target, vec![7; CHUNK], now))
            .expect("node 1 runs")
            .expect("the channel takes it");
    }
    let busy = ping_until(&mut sim, t(60), |s| received(s) == (CHUNK * CHUNKS) as u64);
    assert_eq!(
        received(&sim),
        (CHUNK * CHUNKS) as u64,
        "the mebibyte arrived"
    );
    (idle, busy)
}

fn check(mode: Mode) {
    let (idle, busy) = pings_beside_a_mebibyte(mode);
    let idle_rtt = *idle.iter().max().expect("idle pings");
    // A ping may wait behind a full buffer, and behind the one packet on the wire.
    let drain = Duration::from_micros((BUFFER + 1500) * 1_000_000 / RATE);
    let worst = *busy.iter().max().expect("pings during the transfer");
    // 1 MiB at 1 Mbit/s takes 8.4 s: the transfer really filled the bottleneck meanwhile.
    assert!(busy.len() >= 60, "{} pings during the transfer", busy.len());
    assert!(
        worst <= idle_rtt + drain,
        "{mode:?}: worst {worst:?}, idle {idle_rtt:?} + drain {drain:?}; all: {busy:?}"
    );
}

#[test]
fn in_quic_mode_pings_beside_a_mebibyte_wait_at_most_the_buffer() {
    check(Mode::Quic);
}

#[test]
fn in_frames_mode_pings_beside_a_mebibyte_wait_at_most_the_buffer() {
    check(Mode::Frames);
}
