//! GSO batches and ECN marks through quinn-udp, on both runtimes (Linux has both on loopback;
//! elsewhere the sockets fall back to plain datagrams and these checks are skipped).

use std::time::Duration;

use macula_mesh::{Runtime, UdpSocket};
use macula_proto::Event;
use macula_tests::{config, node, on_both_runtimes, RawPeer};

on_both_runtimes!(pings_carry_ecn_marks, a_burst_is_sent_in_gso_batches);

async fn pings_carry_ecn_marks<R: Runtime>() -> anyhow::Result<()> {
    let a = node::<R>(config("io.ecn", None)).await?;
    let b = node::<R>(config("io.ecn", None)).await?;
    let peer = a.connect(b.local_addr()).await?;
    for _ in 0..20 {
        a.ping(peer).await?;
    }
    let (sa, sb) = (a.stats().await?.quic, b.stats().await?.quic);
    if cfg!(target_os = "linux") {
        // quinn marks packets ECT(0) once the path proves it carries ECN; both ends see marks.
        assert!(sa.ecn_received > 0 && sb.ecn_received > 0, "{sa:?} {sb:?}");
    }
    Ok(())
}

async fn a_burst_is_sent_in_gso_batches<R: Runtime>() -> anyhow::Result<()> {
    let target = node::<R>(config("io.gso", None)).await?;
    let mut raw = RawPeer::<R>::bind(config("io.gso", None), 5).await?;
    let gso = R::bind("127.0.0.1:0".parse()?)?.max_gso_segments();
    let now = raw.now();
    raw.endpoint.connect(target.local_addr(), None, now);
    let up = raw
        .drive_until(Duration::from_secs(10), |e| {
            e.iter().any(|e| matches!(e, Event::PeerUp { .. }))
        })
        .await?;
    assert!(up);
    let link = raw
        .events
        .iter()
        .find_map(|e| match e {
            Event::PeerUp { link, .. } => Some(*link),
            _ => None,
        })
        .expect("checked above");
    // 64 KiB in one write: more than a congestion window's worth of full-size packets at once.
    let now = raw.now();
    raw.endpoint.send_raw(
        link,
        macula_proto::Channel::CONTROL,
        &vec![0u8; 64 * 1024],
        now,
    );
    raw.drive_until(Duration::from_millis(500), |_| false)
        .await?;
    let stats = raw.endpoint.stats();
    if gso > 1 {
        assert!(stats.gso_batches > 0, "{stats:?}");
    } else {
        eprintln!("this socket has no GSO; only the plain-datagram fallback was exercised");
    }
    Ok(())
}
