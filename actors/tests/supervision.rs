//! What a session's policy does with a broken stream: `Stop` gives up at once,
//! `Escalate` stops the owner (so its ractor supervisor decides) once it has seen the
//! loss, `Resume` carries sessions opened from either end across cuts, and `Restart`
//! finds a peer again after an outage past the resume deadline, or gives up with a typed
//! loss after its own deadline.

mod support;

use std::time::Duration;

use duologue::LostReason;
use duologue::SessionPolicy;
use duologue::mailbox::Lost;
use duologue::{
    ConnectError, Node, NodeConfig, RemoteRef, SessionSignal, settings::SessionConfig,
    status::NodeEvent,
};
use duologue_testkit::FaultProxy;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use support::*;
use tokio::sync::mpsc;

async fn node_named(name: &str, listen: bool, resume_timeout: Duration) -> Node {
    let config = NodeConfig {
        name: name.into(),
        listen: listen.then(|| "127.0.0.1:0".parse().unwrap()),
        session: SessionConfig {
            resume_timeout,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    };
    support::node_with(config).await
}

#[tokio::test]
async fn stop_policy_loses_the_session_at_the_first_break() {
    let server = served_probe(listening_node("server", SECRET).await).await;
    let proxy = FaultProxy::start(server.node.local_addr().unwrap())
        .await
        .unwrap();
    let client = dialling_node("client", SECRET).await;
    let (owner, mut heard) = recorder().await;
    let remote: RemoteRef<PingPong> = client
        .connect((&proxy.addr().to_string(), "probe"))
        .policy(SessionPolicy::Stop)
        .owner(&owner)
        .await
        .unwrap();
    remote.cast(Ping { n: 1, body: vec![] }).await.unwrap();

    proxy.cut_all();

    let (_, reason) = signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Lost(lost) => Some(lost.reason.clone()),
        _ => None,
    })
    .await;
    assert!(matches!(reason, LostReason::NotResumed(_)), "{reason:?}");
}

/// Waits for the owner to hear that its session was lost at the resume deadline.
async fn resume_deadline_passes(heard: &mut mpsc::UnboundedReceiver<(std::time::Instant, Heard)>) {
    let (_, reason) = signal_where(heard, WAIT, |s| match s {
        SessionSignal::Lost(lost) => Some(lost.reason.clone()),
        _ => None,
    })
    .await;
    assert!(
        matches!(reason, LostReason::ResumeDeadline { .. }),
        "{reason:?}"
    );
}

/// Forwards the stop reasons of the actors it supervises.
struct Supervisor;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Supervisor {
    type Msg = ();
    type State = mpsc::UnboundedSender<Option<String>>;
    type Arguments = mpsc::UnboundedSender<Option<String>>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(_, _, reason) = event {
            let _ = tx.send(reason);
        }
        Ok(())
    }
}

#[tokio::test]
async fn escalate_policy_stops_the_owner_after_it_saw_the_loss() {
    let server = served_probe(listening_node("server", SECRET).await).await;
    let proxy = FaultProxy::start(server.node.local_addr().unwrap())
        .await
        .unwrap();
    let client = node_named("client", false, Duration::from_millis(300)).await;
    let (stops_tx, mut stops) = mpsc::unbounded_channel();
    let (supervisor, _) = Actor::spawn(None, Supervisor, stops_tx).await.unwrap();
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let (owner, _) = Actor::spawn_linked(None, Recorder, heard_tx, supervisor.get_cell())
        .await
        .unwrap();
    let _remote: RemoteRef<PingPong> = client
        .connect((&proxy.addr().to_string(), "probe"))
        .policy(SessionPolicy::Escalate)
        .owner(&owner)
        .await
        .unwrap();

    // Resumes reach the proxy but never the server: the deadline passes.
    proxy.set_blackhole(true);
    proxy.cut_all();

    resume_deadline_passes(&mut heard).await;
    let stopped = next(&mut stops).await.expect("a stop reason");
    assert!(stopped.starts_with("session lost"), "{stopped}");
}

#[tokio::test]
async fn sessions_opened_from_either_end_resume_across_cuts() {
    let a = served_probe(listening_node("a", SECRET).await).await;
    let b = served_probe(listening_node("b", SECRET).await).await;
    let a_to_b_proxy = FaultProxy::start(b.node.local_addr().unwrap())
        .await
        .unwrap();
    let b_to_a_proxy = FaultProxy::start(a.node.local_addr().unwrap())
        .await
        .unwrap();
    let (owner_a, _) = probe().await;
    let (owner_b, _) = probe().await;
    let a_to_b: RemoteRef<PingPong> = a
        .node
        .connect((&a_to_b_proxy.addr().to_string(), "probe"))
        .owner(&owner_a)
        .await
        .unwrap();
    let b_to_a: RemoteRef<PingPong> = b
        .node
        .connect((&b_to_a_proxy.addr().to_string(), "probe"))
        .owner(&owner_b)
        .await
        .unwrap();
    let (mut at_a, mut at_b) = (a.seen, b.seen);

    for n in 1..=300 {
        a_to_b.cast(Ping { n, body: vec![] }).await.unwrap();
        b_to_a.cast(Ping { n, body: vec![] }).await.unwrap();
        if n % 100 == 0 {
            a_to_b_proxy.cut_all();
            b_to_a_proxy.cut_all();
        }
    }

    for n in 1..=300 {
        assert_eq!(next_ping(&mut at_b).await.0, n, "a's session to b");
        assert_eq!(next_ping(&mut at_a).await.0, n, "b's session to a");
    }
    // The calls need a live stream: they prove both sessions resumed.
    assert_eq!(
        a_to_b
            .call(Ping { n: 7, body: vec![] }, WAIT)
            .await
            .unwrap()
            .n,
        7
    );
    assert_eq!(
        b_to_a
            .call(Ping { n: 8, body: vec![] }, WAIT)
            .await
            .unwrap()
            .n,
        8
    );
}

/// A dialling node whose sessions restart: short resume and handshake deadlines, and
/// `restart_timeout` to find the peer again.
async fn restarting_node(restart_timeout: Duration) -> Node {
    let config = NodeConfig {
        name: "client".into(),
        policy: SessionPolicy::Restart,
        restart_timeout,
        session: SessionConfig {
            resume_timeout: Duration::from_millis(300),
            handshake_timeout: Duration::from_millis(300),
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    };
    support::node_with(config).await
}

/// A node listening on `port` of 127.0.0.1, serving a probe.
async fn probe_on(name: &str, port: u16) -> Served {
    let config = NodeConfig {
        name: name.into(),
        listen: Some(([127, 0, 0, 1], port).into()),
        ..NodeConfig::default()
    };
    served_probe(support::node_with(config).await).await
}

/// Waits for `count` failed handshakes of this node's own sessions.
async fn failed_attempts(
    events: &mut tokio::sync::broadcast::Receiver<duologue::status::NodeEvent>,
    count: usize,
) {
    for _ in 0..count {
        rejection(events).await;
    }
}

#[tokio::test]
async fn restart_policy_finds_the_peer_again_after_an_outage_past_the_resume_deadline() {
    let first = probe_on("server", 0).await;
    let port = first.node.local_addr().unwrap().port();
    let proxy = FaultProxy::start(first.node.local_addr().unwrap())
        .await
        .unwrap();
    let client = restarting_node(WAIT).await;
    let (owner, mut heard) = recorder().await;
    let remote: RemoteRef<PingPong> = client
        .connect((&proxy.addr().to_string(), "probe"))
        .owner(&owner)
        .await
        .unwrap();
    let before = remote.session();

    // The peer falls silent, then its node goes away altogether.
    proxy.set_blackhole(true);
    proxy.cut_all();
    resume_deadline_passes(&mut heard).await;
    first.node.shutdown().await;
    let mut events = client.events();
    // Restart attempts keep failing well past the resume deadline.
    failed_attempts(&mut events, 3).await;

    let second = probe_on("server-again", port).await;
    proxy.set_blackhole(false);

    signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Restarted { previous, session } => {
            assert_eq!(previous.id(), before.id());
            Some(session)
        }
        _ => None,
    })
    .await;
    assert_eq!(remote.session().peer(), second.node.identity());
    let pong = remote
        .call(
            Ping {
                n: 21,
                body: vec![],
            },
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(pong.n, 21);
    remote
        .cast(Ping {
            n: 22,
            body: vec![],
        })
        .await
        .unwrap();
    let mut seen = second.seen;
    assert_eq!(next_ping(&mut seen).await.0, 21);
    assert_eq!(next_ping(&mut seen).await.0, 22);
}

#[tokio::test]
async fn restart_policy_gives_up_with_a_typed_loss_after_its_deadline() {
    let server = probe_on("server", 0).await;
    let restart_timeout = Duration::from_millis(1500);
    let client = restarting_node(restart_timeout).await;
    let (owner, mut heard) = recorder().await;
    let _remote: RemoteRef<PingPong> = client
        .connect((&addr(&server.node), "probe"))
        .owner(&owner)
        .await
        .unwrap();

    server.node.shutdown().await;
    let (lost_at, _) = signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Lost(lost) => Some(lost.reason.clone()),
        _ => None,
    })
    .await;

    let (gave_up_at, (attempts, last_error)) = restart_gave_up(&mut heard).await;
    assert!(attempts >= 2, "retried: {attempts} attempts");
    assert!(
        matches!(*last_error, ConnectError::Unreachable { .. }),
        "{last_error:?}"
    );
    let took = gave_up_at - lost_at;
    assert!(
        took + client.config().reconnect_max >= restart_timeout,
        "early: {took:?}"
    );
    assert!(
        took <= restart_timeout + Duration::from_secs(1),
        "late: {took:?}"
    );
}

#[tokio::test]
async fn restart_policy_stops_trying_once_the_owner_stopped() {
    let Restarting {
        first,
        port,
        client,
        owner,
        mut heard,
        _remote,
    } = restarting_session(WAIT * 2).await;
    let mut events = client.events();
    first.node.shutdown().await;
    signal_where(&mut heard, WAIT, |s| {
        matches!(s, SessionSignal::Lost(_)).then_some(())
    })
    .await;
    failed_attempts(&mut events, 2).await;

    owner.stop_and_wait(None, Some(WAIT)).await.unwrap();
    let second = probe_on("server-again", port).await;

    // A restart still under way would reach the new node within one backoff (1 s at
    // most); none does within three.
    let mut opened = second.node.events();
    let reached = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(duologue::status::NodeEvent::SessionOpened { .. }) = opened.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(reached.is_err(), "a session was opened for a stopped owner");
}

#[tokio::test]
async fn restart_policy_stops_trying_when_its_node_shuts_down() {
    let server = probe_on("server", 0).await;
    let client = restarting_node(WAIT * 2).await;
    let (owner, mut heard) = recorder().await;
    let _remote: RemoteRef<PingPong> = client
        .connect((&addr(&server.node), "probe"))
        .owner(&owner)
        .await
        .unwrap();
    let mut events = client.events();
    server.node.shutdown().await;
    failed_attempts(&mut events, 2).await;

    assert!(client.shutdown().await, "the restart ends within the drain");

    let (_, last_error) = signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Lost(Lost {
            reason: LostReason::RestartGaveUp { last_error, .. },
            ..
        }) => Some(last_error),
        _ => None,
    })
    .await;
    assert_eq!(*last_error, ConnectError::ShuttingDown);
}

/// `Restart` retries what a returning peer may outgrow, but not a wrong secret: a peer
/// back on the address with another secret ends the restart at its first attempt.
#[tokio::test]
async fn restart_policy_gives_up_at_once_on_a_wrong_secret() {
    let Restarting {
        first,
        port,
        client,
        owner: _owner,
        mut heard,
        _remote,
    } = restarting_session(Duration::from_secs(3600)).await;
    let mut events = client.events();
    first.node.shutdown().await;
    let other = Node::builder()
        .config(NodeConfig {
            name: "server-other-secret".into(),
            listen: Some(([127, 0, 0, 1], port).into()),
            ..NodeConfig::default()
        })
        .secret(duologue::Secret::new("another secret of 32 bytes, not it").unwrap())
        .start()
        .await
        .unwrap();
    let _other = served_probe(other).await;

    let (_, (attempts, last_error)) = restart_gave_up(&mut heard).await;
    assert!(
        matches!(*last_error, ConnectError::Auth { .. }),
        "{last_error:?}"
    );
    // Attempts before it may have met the old connection going; the first that met the
    // wrong secret was the last.
    let mut auth_failures = 0;
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::SessionRejected { reason, .. } = event
            && reason.auth_error().is_some()
        {
            auth_failures += 1;
        }
    }
    assert_eq!(
        auth_failures, 1,
        "a wrong secret is not retried ({attempts} attempts)"
    );
}

/// An inbox under `Restart` keeps reading from each new session: after its peer's node
/// went away and came back, what the new peer pushes reaches the same inbox.
#[tokio::test]
async fn an_inbox_under_restart_reads_from_the_new_session() {
    let first = probe_on("server", 0).await;
    let port = first.node.local_addr().unwrap().port();
    let client = restarting_node(WAIT).await;
    let (_remote, mut inbox) = client
        .connect::<PingPong>((addr(&first.node), "probe"))
        .inbox()
        .await
        .unwrap();
    first.node.shutdown().await;
    let second = probe_on("server-again", port).await;
    let mut seen = second.seen;
    let pusher = loop {
        if let SessionSignal::Opened(session) = next_signal(&mut seen).await {
            break session;
        }
    };
    pusher
        .cast(Pong {
            n: 7,
            deadline_left_ms: 0,
        })
        .await
        .unwrap();
    let (mut restarted, mut pong) = (false, None);
    while pong.is_none() {
        match tokio::time::timeout(WAIT, inbox.recv())
            .await
            .expect("the inbox hears within the wait bound")
        {
            Some(duologue::mailbox::InboxEvent::Message(message)) => pong = Some(message.n),
            Some(duologue::mailbox::InboxEvent::Signal(SessionSignal::Restarted { .. })) => {
                restarted = true
            }
            Some(_) => {}
            None => panic!("the inbox closed"),
        }
    }
    assert!(restarted, "the inbox was told of the new session first");
    assert_eq!(pong, Some(7));
}

/// An inbox under `Escalate` acts as under `Resume`: there is no actor to stop, and its
/// reader is told the session was lost.
#[tokio::test]
async fn an_inbox_under_escalate_is_told_of_the_loss() {
    let server = probe_on("server", 0).await;
    let client = node_named("client", false, Duration::from_millis(300)).await;
    let (_remote, mut inbox) = client
        .connect::<PingPong>((addr(&server.node), "probe"))
        .policy(SessionPolicy::Escalate)
        .inbox()
        .await
        .unwrap();
    server.node.shutdown().await;
    loop {
        match tokio::time::timeout(WAIT, inbox.recv())
            .await
            .expect("the inbox hears within the wait bound")
        {
            Some(duologue::mailbox::InboxEvent::Signal(SessionSignal::Lost(_))) => break,
            Some(_) => {}
            None => panic!("the inbox closed before it was told"),
        }
    }
}

/// `Restart` needs to dial, so an acceptor under it behaves as under `Resume`: its owner
/// loses the session at the resume deadline, and the node dials nobody.
#[tokio::test]
async fn an_acceptor_under_restart_loses_the_session_as_under_resume() {
    let server = support::node_with(NodeConfig {
        name: "server".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        policy: SessionPolicy::Restart,
        session: SessionConfig {
            resume_timeout: Duration::from_millis(300),
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let (owner, mut heard) = recorder().await;
    server.register("owner", &owner).unwrap();
    let proxy = FaultProxy::start(server.local_addr().unwrap())
        .await
        .unwrap();
    let client = node_named("client", false, WAIT).await;
    let (client_owner, _client_heard) = recorder().await;
    let _remote: RemoteRef<PingPong> = client
        .connect((&proxy.addr().to_string(), "owner"))
        .owner(&client_owner)
        .await
        .unwrap();
    proxy.set_blackhole(true);
    proxy.cut_all();
    resume_deadline_passes(&mut heard).await;
    assert_eq!(server.bookkeeping().links, 0, "the acceptor dialled");
}

/// When the owner heard the final loss of a restart that gave up, its attempts and the
/// last attempt's error.
async fn restart_gave_up(
    heard: &mut mpsc::UnboundedReceiver<(std::time::Instant, Heard)>,
) -> (std::time::Instant, (u32, Box<ConnectError>)) {
    signal_where(heard, WAIT, |s| match s {
        SessionSignal::Lost(Lost {
            reason:
                LostReason::RestartGaveUp {
                    attempts,
                    last_error,
                },
            ..
        }) => Some((attempts, last_error)),
        _ => None,
    })
    .await
}

/// A session from a `Restart` node (`restart_timeout` to find its peer again) to a probe
/// on a node of its own, owned by a recorder.
struct Restarting {
    first: Served,
    /// The port the probe's node listens on, for a node that takes its place.
    port: u16,
    client: Node,
    owner: ActorRef<duologue::SessionMsg>,
    heard: mpsc::UnboundedReceiver<(std::time::Instant, Heard)>,
    _remote: RemoteRef<PingPong>,
}

async fn restarting_session(restart_timeout: Duration) -> Restarting {
    let first = probe_on("server", 0).await;
    let port = first.node.local_addr().unwrap().port();
    let client = restarting_node(restart_timeout).await;
    let (owner, heard) = recorder().await;
    let _remote = client
        .connect((&addr(&first.node), "probe"))
        .owner(&owner)
        .await
        .unwrap();
    Restarting {
        first,
        port,
        client,
        owner,
        heard,
        _remote,
    }
}
