//! Watching a node's cluster from a test: a [`Listener`] of its cluster events, and waits
//! on its members that follow its change notification.

use std::time::Duration;

use duologue::{
    Node,
    cluster::{ClusterEvent, Member, MemberState},
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

/// An actor that forwards the cluster events it gets to a channel.
#[derive(Debug)]
pub struct Listener;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Listener {
    type Msg = ClusterEvent;
    type State = mpsc::UnboundedSender<ClusterEvent>;
    type Arguments = mpsc::UnboundedSender<ClusterEvent>;

    async fn pre_start(
        &self,
        _: ActorRef<ClusterEvent>,
        events: Self::State,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(events)
    }

    async fn handle(
        &self,
        _: ActorRef<ClusterEvent>,
        event: ClusterEvent,
        events: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = events.send(event);
        Ok(())
    }
}

/// Subscribes a new [`Listener`] to `node`'s cluster events.
pub async fn listen(node: &Node) -> mpsc::UnboundedReceiver<ClusterEvent> {
    let (tx, events) = mpsc::unbounded_channel();
    let (listener, _) = Actor::spawn(None, Listener, tx).await.unwrap();
    node.subscribe_cluster(&listener).unwrap();
    events
}

/// Waits up to `within` for the first event `pick` accepts (others are dropped).
///
/// # Panics
/// When none comes in time, or the listener is gone.
pub async fn next_event<T>(
    events: &mut mpsc::UnboundedReceiver<ClusterEvent>,
    within: Duration,
    mut pick: impl FnMut(&ClusterEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(within, async {
        loop {
            let event = events.recv().await.expect("listener gone");
            if let Some(picked) = pick(&event) {
                return picked;
            }
        }
    })
    .await
    .expect("the expected cluster event did not come")
}

/// Waits up to `within` until `node` sees `up` members up, on its change notification.
///
/// # Panics
/// When it does not in time.
pub async fn wait_members(node: &Node, up: usize, within: Duration) {
    tokio::time::timeout(within, async {
        loop {
            let changed = node.members_changed();
            if count_up(&node.members().unwrap()) == up {
                return;
            }
            changed.await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{up} members never up: {:?}", node.members()));
}

/// Waits up to `within` until the members the node at `addr` shows (asked over the wire
/// by `operator`, again at each change of its view) satisfy `wanted`.
///
/// # Panics
/// When they do not in time, with the last view; when the node does not answer.
pub async fn wait_members_at(
    operator: &Node,
    addr: &str,
    within: Duration,
    wanted: impl Fn(&[Member]) -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    let mut since = 0;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let now = operator
            .members_changed_at(addr, since, left)
            .await
            .unwrap_or_else(|error| panic!("{addr} does not answer for its members: {error}"));
        if wanted(&now.members) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr}'s members never looked as expected: {:#?}",
            now.members
        );
        since = now.version;
    }
}

/// How many of `members` are up.
pub fn count_up(members: &[Member]) -> usize {
    members
        .iter()
        .filter(|m| m.state == MemberState::Up)
        .count()
}
