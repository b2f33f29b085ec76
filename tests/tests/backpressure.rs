//! The data path end to end: a receiver that stops reading holds its sender back (the sender's
//! `send` waits) and nothing is lost; a receiver that opts into dropping counts what it drops
//! and says so; memory stays bounded either way. Over real QUIC on loopback, on both runtimes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use macula_mesh::{Mesh, Runtime};
use macula_proto::echo::EchoData;
use macula_proto::{Data, Event, Overflow};
use macula_tests::{config, node, on_both_runtimes, sleep, timeout};

on_both_runtimes!(
    a_reader_that_stops_holds_its_sender_back,
    a_reader_that_drops_counts_and_tells,
    held_sends_are_bounded_in_bytes
);

/// Bytes a chunk carries.
const CHUNK: usize = 64 * 1024;
/// Chunks sent: far more than every buffer on the way holds (the receiver's inbox and
/// channel, QUIC's stream window, the sender's channel backlog of 1 MiB).
const TOTAL: u64 = 200;
/// How long a check may wait for something that must happen (a hang guard, not a measure).
const PATIENCE: Duration = Duration::from_secs(60);

fn chunk(n: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0x5a; len];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes
}

fn number(data: Data) -> (u64, usize) {
    let Data::Echo(EchoData { payload, .. }) = data else {
        panic!("echo data")
    };
    (
        u64::from_le_bytes(payload[..8].try_into().unwrap()),
        payload.len(),
    )
}

async fn pair<R: Runtime>() -> anyhow::Result<(Mesh<R>, Mesh<R>)> {
    let mut c = config("io.flow", None);
    c.test_echo = true;
    let a = node::<R>(c.clone()).await?;
    let b = node::<R>(c).await?;
    a.connect(b.local_addr()).await?;
    Ok((a, b))
}

/// Waits until `check` holds, looking every 20 ms; fails after [`PATIENCE`].
async fn until<R: Runtime, F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let waited = timeout::<R, _>(PATIENCE, async {
        while !check().await {
            sleep::<R>(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_some(), "never happened: {what}");
}

async fn a_reader_that_stops_holds_its_sender_back<R: Runtime>() -> anyhow::Result<()> {
    let (a, b) = pair::<R>().await?;
    let mut inbox = b.echo().inbox(4, Overflow::Block).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = async_channel::bounded(1);
    {
        let (a, sent, to) = (a.clone(), sent.clone(), b.node_id());
        R::spawn(async move {
            let mut result = Ok(());
            for n in 0..TOTAL {
                if let Err(e) = a.echo().bulk(to, chunk(n, CHUNK)).await {
                    result = Err(e);
                    break;
                }
                sent.store(n + 1, Ordering::SeqCst);
            }
            let _ = done_tx.send(result).await;
        });
    }
    // Nobody reads: the receiver pauses the channel, QUIC's window fills, the sender's backlog
    // passes its bound, and its sends wait.
    until::<R, _>("the receiver pauses the channel", || {
        let b = b.clone();
        async move { b.stats().await.unwrap().node.channels_paused >= 1 }
    })
    .await;
    until::<R, _>("the sender is held back", || {
        let a = a.clone();
        async move { a.stats().await.unwrap().node.channels_blocked >= 1 }
    })
    .await;
    let held_at = sent.load(Ordering::SeqCst);
    assert!(held_at < TOTAL, "the sender was held back ({held_at} sent)");
    assert!(done_rx.is_empty(), "the sends have not all returned");
    // Bounded: the receiver's inbox holds its capacity (and one over, the frame that filled
    // it), its handle's channel as much; the link is alive.
    assert!(b.ping(a.node_id()).await.is_ok(), "keep-alives still flow");
    let stats = b.stats().await?;
    assert!(
        stats.node.data_delivered <= 4 + 1 + 4,
        "{}",
        stats.node.data_delivered
    );
    // Now the reader reads everything, in order; the sender finishes.
    for n in 0..TOTAL {
        let data = timeout::<R, _>(PATIENCE, inbox.recv()).await.flatten();
        let (got, len) = number(data.expect("every chunk arrives"));
        assert_eq!((got, len), (n, CHUNK), "in order, whole");
    }
    let finished = timeout::<R, _>(PATIENCE, done_rx.recv()).await;
    assert!(matches!(finished, Some(Ok(Ok(())))), "{finished:?}");
    let stats = b.stats().await?;
    assert_eq!(stats.node.data_delivered, TOTAL);
    assert_eq!(stats.node.data_dropped, 0, "nothing lost");
    a.close().await;
    b.close().await;
    Ok(())
}

async fn a_reader_that_drops_counts_and_tells<R: Runtime>() -> anyhow::Result<()> {
    let (a, b) = pair::<R>().await?;
    let mut events = b.events();
    let mut inbox = b.echo().inbox(4, Overflow::DropNewest).await?;
    let total = 100;
    for n in 0..total {
        // A dropping receiver never holds its sender back.
        a.echo().bulk(b.node_id(), chunk(n, 1024)).await?;
    }
    until::<R, _>("every chunk arrived or was dropped", || {
        let b = b.clone();
        async move {
            let s = b.stats().await.unwrap().node;
            s.data_delivered + s.data_dropped == total
        }
    })
    .await;
    let stats = b.stats().await?.node;
    assert!(stats.data_dropped > 0, "{stats:?}");
    assert!(stats.data_delivered <= 4 + 4, "{stats:?}");
    // What was kept came first, in order: the first chunk, then only ever later ones (which
    // were dropped in between depends on when the driver moved data on to the reader).
    let mut kept = Vec::new();
    for _ in 0..stats.data_delivered {
        let data = timeout::<R, _>(PATIENCE, inbox.recv()).await.flatten();
        let (n, size) = number(data.expect("kept data arrives"));
        assert_eq!(size, 1024);
        kept.push(n);
    }
    assert_eq!(kept.first(), Some(&0), "{kept:?}");
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
    let told = timeout::<R, _>(PATIENCE, async {
        loop {
            match events.recv().await {
                Some(Event::DataDropped { dropped, .. }) => break Some(dropped),
                Some(_) => continue,
                None => break None,
            }
        }
    })
    .await
    .flatten();
    assert_eq!(told, Some(1), "told when dropping started");
    a.close().await;
    b.close().await;
    Ok(())
}

async fn held_sends_are_bounded_in_bytes<R: Runtime>() -> anyhow::Result<()> {
    let (a, b) = pair::<R>().await?;
    let _inbox = b.echo().inbox(1, Overflow::Block).await?;
    // Nobody reads, and 300 callers each send 256 KiB at once: 75 MiB, more than the sends a
    // node holds back (64 MiB). Those past the bound are told so at once; the rest wait.
    let (tx, rx) = async_channel::unbounded();
    for n in 0..300 {
        let (a, tx, to) = (a.clone(), tx.clone(), b.node_id());
        R::spawn(async move {
            let _ = tx.send(a.echo().bulk(to, chunk(n, 256 * 1024)).await).await;
        });
    }
    let backlogged = timeout::<R, _>(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(Err(macula_mesh::MeshError::Backlogged)) => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        }
    })
    .await;
    assert_eq!(backlogged, Some(true), "a send past the bound is refused");
    a.close().await;
    b.close().await;
    Ok(())
}
