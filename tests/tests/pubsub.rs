//! Pub/sub end to end, over real QUIC on loopback, on both runtimes: five nodes, exact and
//! wildcard subscribers, QoS 1 across a restart of one subscriber, a queue group, and a
//! subscriber that stops reading (the publisher waits, nothing is lost, memory stays bounded).

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::StreamExt;
use macula_mesh::{Mesh, MeshConfig, Runtime, Subscription};
use macula_proto::pubsub::{Qos, Received, SubscribeOptions};
use macula_proto::{Identity, Overflow};
use macula_tests::{config, node, on_both_runtimes, sleep, timeout};

on_both_runtimes!(
    exact_and_wildcard_subscribers_and_qos1_across_a_restart,
    a_subscriber_that_stops_reading_holds_the_publisher_back,
);

/// How long a check may wait for something that must happen (a hang guard, not a measure).
const PATIENCE: Duration = Duration::from_secs(60);

const REALM: &str = "io.pubsub";

async fn joined<R: Runtime>(bootstrap: SocketAddr) -> anyhow::Result<Mesh<R>> {
    let mesh = node::<R>(config(REALM, None)).await?;
    mesh.connect(bootstrap).await?;
    Ok(mesh)
}

async fn next<R: Runtime>(sub: &mut Subscription) -> Received {
    timeout::<R, _>(PATIENCE, sub.next())
        .await
        .expect("a message in time")
        .expect("the node runs")
}

fn text(m: &Received) -> String {
    String::from_utf8(m.payload.clone()).unwrap()
}

async fn exact_and_wildcard_subscribers_and_qos1_across_a_restart<R: Runtime>() -> anyhow::Result<()>
{
    let boot = node::<R>(config(REALM, None)).await?;
    let at = boot.local_addr();
    let publisher = joined::<R>(at).await?;
    let exact = joined::<R>(at).await?;
    let identity = Identity::from_seed(4242);
    let restarting_config = || {
        let mut c = MeshConfig::new(config(REALM, None), "127.0.0.1:0".parse().unwrap());
        c.identity = Some(identity.clone());
        c
    };
    let restarting = Mesh::<R>::bind(restarting_config()).await?;
    restarting.connect(at).await?;
    let wide = joined::<R>(at).await?;
    sleep::<R>(Duration::from_millis(500)).await;

    let mut s_exact = exact.pubsub().subscribe("sensors.kitchen.temp").await?;
    let mut s_one = restarting.pubsub().subscribe("sensors.*.temp").await?;
    let mut s_wide = wide.pubsub().subscribe("sensors.**").await?;
    let mut s_other = wide.pubsub().subscribe("sensors.*.humidity").await?;
    sleep::<R>(Duration::from_millis(500)).await;

    let ps = publisher.pubsub();
    for k in 0..10 {
        let report = ps
            .publish("sensors.kitchen.temp", format!("t{k}"), Qos::AtLeastOnce)
            .await?;
        assert_eq!(report.subscribers, 3, "message {k}");
        assert_eq!(report.acked.len(), 3, "message {k}: {report:?}");
        assert!(report.missed.is_empty());
    }
    let expected: Vec<String> = (0..10).map(|k| format!("t{k}")).collect();
    for sub in [&mut s_exact, &mut s_one, &mut s_wide] {
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(next::<R>(sub).await);
        }
        assert_eq!(got.iter().map(text).collect::<Vec<_>>(), expected);
        assert!(got.iter().all(|m| m.publisher == publisher.node_id()));
    }
    // QoS 0 with nobody subscribed succeeds and says so.
    let nobody = ps.publish("nobody.here", "x", Qos::AtMostOnce).await?;
    assert_eq!(nobody.subscribers, 0);

    // One subscriber restarts (same identity, same address, a later start) and resubscribes.
    let addr = restarting.local_addr();
    drop(s_one);
    restarting.close().await;
    drop(restarting);
    let mut again = restarting_config();
    again.listen = addr;
    let restarted = Mesh::<R>::bind(again).await?;
    restarted.connect(at).await?;
    let mut s_back = restarted.pubsub().subscribe("sensors.*.temp").await?;
    // Publish until the restarted node acknowledges: it is seen again once the publisher's
    // cache refreshes (at most about five seconds).
    let mut k = 10;
    let seen_again = timeout::<R, _>(PATIENCE, async {
        loop {
            let report = ps
                .publish("sensors.kitchen.temp", format!("t{k}"), Qos::AtLeastOnce)
                .await
                .unwrap();
            k += 1;
            if report.acked.contains(&restarted.node_id()) {
                return k - 1;
            }
            sleep::<R>(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the restarted subscriber is found again");
    let first_back = next::<R>(&mut s_back).await;
    assert_eq!(text(&first_back), format!("t{seen_again}"));
    // The others got every message, once, in order.
    let expected: Vec<String> = (10..k).map(|k| format!("t{k}")).collect();
    for sub in [&mut s_exact, &mut s_wide] {
        let mut got = Vec::new();
        for _ in 10..k {
            got.push(text(&next::<R>(sub).await));
        }
        assert_eq!(got, expected);
        assert!(sub.is_empty());
    }
    // Nothing reached the pattern that does not match.
    sleep::<R>(Duration::from_millis(200)).await;
    assert!(timeout::<R, _>(Duration::from_millis(10), s_other.next())
        .await
        .is_none());
    assert_eq!(wide.pubsub().stats().await?.unmatched, 0);

    // A queue group: each message to one member.
    let mut g1 = exact.pubsub().subscribe_group("jobs.*", "workers").await?;
    let mut g2 = wide.pubsub().subscribe_group("jobs.*", "workers").await?;
    sleep::<R>(Duration::from_millis(500)).await;
    for k in 0..20 {
        ps.publish("jobs.render", format!("j{k}"), Qos::AtLeastOnce)
            .await?;
    }
    let (mut n1, mut n2) = (0, 0);
    let mut all = Vec::new();
    while n1 + n2 < 20 {
        let m = futures_lite::future::or(async { (1, next::<R>(&mut g1).await) }, async {
            (2, next::<R>(&mut g2).await)
        })
        .await;
        match m.0 {
            1 => n1 += 1,
            _ => n2 += 1,
        }
        all.push(text(&m.1));
    }
    all.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    assert_eq!(all, (0..20).map(|k| format!("j{k}")).collect::<Vec<_>>());
    assert!(n1 > 0 && n2 > 0, "both members took a share ({n1}, {n2})");

    for mesh in [publisher, exact, restarted, wide, boot] {
        mesh.close().await;
    }
    Ok(())
}

async fn a_subscriber_that_stops_reading_holds_the_publisher_back<R: Runtime>() -> anyhow::Result<()>
{
    let boot = node::<R>(config(REALM, None)).await?;
    let publisher = joined::<R>(boot.local_addr()).await?;
    let reader = joined::<R>(boot.local_addr()).await?;
    sleep::<R>(Duration::from_millis(500)).await;
    let options = SubscribeOptions::default().with_capacity(8);
    let mut sub = reader.pubsub().subscribe_with("feed", options).await?;
    let mut latest = reader
        .pubsub()
        .subscribe_with(
            "feed",
            SubscribeOptions::default()
                .with_capacity(8)
                .with_overflow(Overflow::DropOldest),
        )
        .await?;
    sleep::<R>(Duration::from_millis(500)).await;

    const TOTAL: u32 = 20_000;
    let payload = |k: u32| {
        let mut p = vec![0u8; 1024];
        p[..4].copy_from_slice(&k.to_le_bytes());
        p
    };
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    {
        let (publisher, sent) = (publisher.clone(), sent.clone());
        R::spawn(async move {
            for k in 0..TOTAL {
                if publisher
                    .pubsub()
                    .publish("feed", payload(k), Qos::AtMostOnce)
                    .await
                    .is_err()
                {
                    break;
                }
                sent.store(k + 1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    // The reader reads nothing: the publisher stalls well short of the end.
    let stalled = || sent.load(std::sync::atomic::Ordering::SeqCst);
    let mut last = 0;
    loop {
        sleep::<R>(Duration::from_millis(500)).await;
        let now = stalled();
        if now == last {
            break;
        }
        last = now;
    }
    assert!(last < TOTAL, "the publisher was held back ({last} sent)");
    let stats = publisher.stats().await?;
    assert!(
        stats.node.channels_blocked > 0,
        "held back by the channel: {stats:?}"
    );
    // Memory stays bounded: the reader holds one inbox's worth (its channel is paused), the
    // publisher its channel backlog and one outbox.
    let held = publisher.pubsub().stats().await?;
    assert!(held.sent <= u64::from(last) + 1, "{held:?}");
    // Reading again: everything arrives, once, in order (waiting for one message, then
    // taking what is there without waiting).
    let mut k = 0;
    while k < TOTAL {
        let m = next::<R>(&mut sub).await;
        assert_eq!(u32::from_le_bytes(m.payload[..4].try_into()?), k);
        k += 1;
        while let Some(m) = sub.try_recv() {
            assert_eq!(u32::from_le_bytes(m.payload[..4].try_into()?), k);
            k += 1;
        }
    }
    assert!(sub.try_recv().is_none(), "nothing more than was published");
    // The dropping subscription kept the latest and counted the rest.
    let mut kept = Vec::new();
    while let Some(Some(m)) = timeout::<R, _>(Duration::from_millis(100), latest.next()).await {
        kept.push(u32::from_le_bytes(m.payload[..4].try_into()?));
    }
    assert!(kept.contains(&(TOTAL - 1)), "the latest is kept: {kept:?}");
    assert!(reader.stats().await?.node.data_dropped > 0);
    for mesh in [publisher, reader, boot] {
        mesh.close().await;
    }
    Ok(())
}
