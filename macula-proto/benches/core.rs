//! Benchmarks of the core: frame encode + decode, and handshakes between two endpoints driven in
//! process (real QUIC and TLS, no sockets).
//!
//! Run with `cargo bench -p macula-proto --bench core`.

use divan::Bencher;
use macula_proto::quic::testing::{addr, MemoryNet};
use macula_proto::wire::{
    decode_message, encode_into, ConnectError, Control, Decoder, Ping, RefuseReason,
};
use macula_proto::{Config, Duration, Event};

fn main() {
    divan::main();
}

/// A frame carrying `size` bytes of payload (`ConnectError`'s message is the control
/// protocol's one variable-size field).
fn frame_with_payload(size: usize) -> Control {
    Control::ConnectError(ConnectError {
        reason: RefuseReason::Capacity,
        message: "x".repeat(size),
    })
}

#[divan::bench(args = [64, 1024], sample_size = 1000)]
fn frame_encode_decode(bencher: Bencher, size: usize) {
    encode_decode(bencher, frame_with_payload(size));
}

#[divan::bench(sample_size = 1000)]
fn ping_encode_decode(bencher: Bencher) {
    encode_decode(bencher, Control::Ping(Ping { id: 0x1234_5678 }));
}

/// Encodes `frame`, splits it off a decoder and reads it back, over and over.
fn encode_decode(bencher: Bencher, frame: Control) {
    let mut buf = Vec::with_capacity(2048);
    let mut decoder = Decoder::new(1 << 20);
    bencher.bench_local(|| {
        buf.clear();
        encode_into(divan::black_box(&frame), &mut buf);
        decoder.push(&buf);
        let decoded = decoder
            .next_frame()
            .ok()
            .flatten()
            .map(decode_message::<Control>);
        divan::black_box(decoded);
    });
}

/// One full cycle: QUIC + TLS 1.3 handshake, realm handshake (`Connect`/`ConnectAck`), then a
/// clean close and drain, so every iteration starts from the same state.
#[divan::bench(sample_count = 50, sample_size = 10)]
fn quic_handshake(bencher: Bencher) {
    let mut net = MemoryNet::with_os_randomness(vec![Config::default(), Config::default()]);
    let target = net.eps[1].node_id();
    bencher.bench_local(|| {
        let before = net.eps[0].node().stats().handshakes_completed;
        net.eps[0].connect(addr(1), Some(target), net.now);
        net.drain(0);
        let deadline = net.now + Duration::from_secs(5);
        let up = net.run_until(deadline, |n| {
            n.eps[0].node().stats().handshakes_completed > before
                && n.eps[1].node().stats().peers == 1
        });
        assert!(up, "the handshake completes");
        net.eps[0].disconnect(&target, net.now);
        net.drain(0);
        let deadline = net.now + Duration::from_secs(5);
        let idle = net.run_until(deadline, |n| n.eps.iter().all(|e| e.is_idle()));
        assert!(idle, "both sides drain");
        for events in &mut net.events {
            events.retain(|e| !matches!(e, Event::PeerUp { .. } | Event::PeerDown { .. }));
        }
    });
}

#[divan::bench(args = [64], sample_size = 1000)]
fn frame_encode_only(bencher: Bencher, size: usize) {
    let frame = frame_with_payload(size);
    let mut buf = Vec::with_capacity(size + 16);
    bencher.bench_local(|| {
        buf.clear();
        encode_into(divan::black_box(&frame), &mut buf);
        divan::black_box(&buf);
    });
}

#[divan::bench(args = [64], sample_size = 1000)]
fn frame_decode_only(bencher: Bencher, size: usize) {
    let mut buf = Vec::new();
    encode_into(&frame_with_payload(size), &mut buf);
    let mut decoder = Decoder::new(1 << 20);
    bencher.bench_local(|| {
        decoder.push(divan::black_box(&buf));
        divan::black_box(decoder.next_frame()).ok();
    });
}

/// Handshakes only: 50 dialers (made before timing) each complete QUIC + TLS 1.3 + realm
/// handshakes with one listener, concurrently; the time per iteration is for all 50.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn quic_handshakes_50_dialers(bencher: Bencher) {
    const DIALERS: usize = 50;
    bencher
        .with_inputs(|| {
            let mut configs = vec![Config::default(); DIALERS + 1];
            configs[0].max_pending_handshakes = DIALERS;
            MemoryNet::with_os_randomness(configs)
        })
        .bench_local_values(|mut net| {
            let target = net.eps[0].node_id();
            for i in 1..=DIALERS {
                net.eps[i].connect(addr(0), Some(target), net.now);
                net.drain(i);
            }
            let deadline = net.now + Duration::from_secs(5);
            let up = net.run_until(deadline, |n| n.eps[0].node().stats().peers == DIALERS);
            assert!(up, "every handshake completes");
            net
        });
}
