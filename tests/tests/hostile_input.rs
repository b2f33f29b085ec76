//! Garbage datagrams, garbage bytes on the control stream after a valid handshake, and a 4 GiB
//! length prefix are each rejected without a panic and without allocating the claimed size; the
//! node keeps serving other peers, and each rejection is counted.

use std::time::Duration;

use macula_mesh::Runtime;
use macula_proto::wire::CloseCode;
use macula_proto::{DownReason, Event, LinkError};
use macula_tests::{config, node, on_both_runtimes, sleep, RawPeer};

on_both_runtimes!(
    garbage_datagrams_are_dropped_and_counted,
    garbage_on_the_control_stream_closes_that_link_only,
    a_four_gib_length_prefix_is_refused_before_buffering,
);

const LIMIT: Duration = Duration::from_secs(10);

fn peer_up(events: &[Event]) -> Option<macula_proto::LinkId> {
    events.iter().find_map(|e| match e {
        Event::PeerUp { link, .. } => Some(*link),
        _ => None,
    })
}

fn closed_with(events: &[Event], code: CloseCode) -> bool {
    events.iter().any(|e| {
        matches!(e,
        Event::PeerDown { reason: DownReason::Link(LinkError::ClosedByPeer(c)), .. } if *c == code)
    })
}

async fn garbage_datagrams_are_dropped_and_counted<R: Runtime>() -> anyhow::Result<()> {
    let target = node::<R>(config("io.h", None)).await?;
    let raw = RawPeer::<R>::bind(config("io.h", None), 1).await?;
    for i in 0..500u32 {
        let len = (i as usize * 37) % 1400 + 1;
        let junk: Vec<u8> = (0..len)
            .map(|k| (k as u32 ^ i.wrapping_mul(2654435761)) as u8)
            .collect();
        raw.send_datagram(target.local_addr(), &junk).await?;
        if i % 25 == 0 {
            // Let the target read: a full socket buffer would drop datagrams before it sees them.
            target.stats().await?;
        }
    }
    // Wait until the target has read everything that reached its socket.
    let mut seen = target.stats().await?;
    for _ in 0..100 {
        sleep::<R>(Duration::from_millis(20)).await;
        let now = target.stats().await?;
        if now.quic.datagrams_received == seen.quic.datagrams_received {
            break;
        }
        seen = now;
    }
    let q = seen.quic;
    assert!(
        q.datagrams_received >= 100,
        "most garbage reaches the node: {q:?}"
    );
    // Garbage never becomes a connection; quinn discards it (a few long-header datagrams may get
    // a version-negotiation answer instead, which is not a drop).
    assert_eq!(q.connections, 0, "{q:?}");
    assert!(
        q.datagrams_dropped * 10 >= q.datagrams_received * 9,
        "{q:?}"
    );
    assert_eq!(seen.node.pending_handshakes, 0);
    // A real peer still gets in.
    let friend = node::<R>(config("io.h", None)).await?;
    friend.connect(target.local_addr()).await?;
    assert_eq!(target.stats().await?.node.peers, 1);
    Ok(())
}

async fn hostile_bytes_close_only_that_link<R: Runtime>(
    bytes: &[u8],
    code: CloseCode,
) -> anyhow::Result<()> {
    let target = node::<R>(config("io.h", None)).await?;
    let friend = node::<R>(config("io.h", None)).await?;
    friend.connect(target.local_addr()).await?;

    let mut raw = RawPeer::<R>::bind(config("io.h", None), 2).await?;
    let now = raw.now();
    raw.endpoint.connect(target.local_addr(), None, now);
    assert!(
        raw.drive_until(LIMIT, |e| peer_up(e).is_some()).await?,
        "{:?}",
        raw.events
    );
    let link = peer_up(&raw.events).expect("checked above");
    let now = raw.now();
    raw.endpoint
        .send_raw(link, macula_proto::Channel::CONTROL, bytes, now);
    assert!(
        raw.drive_until(LIMIT, |e| closed_with(e, code)).await?,
        "the target closes the hostile link with {code}: {:?}",
        raw.events
    );
    let stats = target.stats().await?;
    assert_eq!(stats.node.peers, 1, "the friend is still connected");
    friend.ping(target.node_id()).await?;
    Ok(())
}

async fn garbage_on_the_control_stream_closes_that_link_only<R: Runtime>() -> anyhow::Result<()> {
    hostile_bytes_close_only_that_link::<R>(
        // A 16-byte frame whose protocol id does not end within three bytes.
        b"\x10\xff\xff\xff\xffnot a frame!",
        CloseCode::MalformedFrame,
    )
    .await
}

async fn a_four_gib_length_prefix_is_refused_before_buffering<R: Runtime>() -> anyhow::Result<()> {
    // 0xffffffff as LEB128: the frame would be 4 GiB - 1; nothing of it follows.
    hostile_bytes_close_only_that_link::<R>(
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        CloseCode::FrameTooLarge,
    )
    .await
}
