//! `close()` is graceful: peers see a clean goodbye, not a timeout.

use macula_proto::wire::CloseCode;
use macula_proto::{DownReason, Event, LinkError};
use macula_tests::{config, node};

#[tokio::test]
async fn peers_see_a_clean_goodbye() -> anyhow::Result<()> {
    let a = node(config("io.c", None)).await?;
    let b = node(config("io.c", None)).await?;
    let c = node(config("io.c", None)).await?;
    a.connect(b.local_addr()).await?;
    c.connect(b.local_addr()).await?;
    let mut a_events = a.events();
    let mut c_events = c.events();
    b.close().await;
    for events in [&mut a_events, &mut c_events] {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await?;
        assert!(
            matches!(
                event,
                Some(Event::PeerDown {
                    reason: DownReason::Link(LinkError::ClosedByPeer(CloseCode::Goodbye)),
                    ..
                })
            ),
            "{event:?}"
        );
    }
    assert!(a.peers().await?.is_empty());
    assert!(
        b.peers().await.is_err(),
        "a closed mesh answers no more requests"
    );
    Ok(())
}
