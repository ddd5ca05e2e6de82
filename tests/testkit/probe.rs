//! In-process session tests: a test protocol ([`PingPong`]), a [`Probe`] actor that
//! reports all it sees on a channel, a [`Recorder`] that notes when it heard each thing,
//! and nodes on 127.0.0.1 with the test secret. Every wait is bounded by [`WAIT`].

use duologue::SessionMsg;
use std::time::{Duration, Instant};

use duologue::{Node, Secret, SessionRef, SessionSignal, mailbox::ReplyPort, status::NodeEvent};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{broadcast, mpsc};

/// Upper bound of any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// The secret every node of these helpers shares.
pub const SECRET: &str = "integration-test secret, 32 bytes";

/// A test request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// What the probe answers with (and [`HOLD`], [`DROP`]).
    #[prost(uint64, tag = "1")]
    pub n: u64,
    /// Any payload, for size.
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
}

impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "duologue.test";
    fn type_url() -> String {
        "type.googleapis.com/duologue.test.Ping".into()
    }
}

/// A test reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    /// The `n` of the ping it answers.
    #[prost(uint64, tag = "1")]
    pub n: u64,
    /// Milliseconds left until the caller's deadline, as the callee saw it.
    #[prost(uint64, tag = "2")]
    pub deadline_left_ms: u64,
}

impl prost::Name for Pong {
    const NAME: &'static str = "Pong";
    const PACKAGE: &'static str = "duologue.test";
    fn type_url() -> String {
        "type.googleapis.com/duologue.test.Pong".into()
    }
}

/// The test protocol: Ping in, Pong out.
#[derive(Debug)]
pub struct PingPong;

impl duologue::Protocol for PingPong {
    type Request = Ping;
    type Response = Pong;
}

/// A ping with this `n` is a call the probe never answers (it keeps the port).
pub const HOLD: u64 = u64::MAX;
/// A ping with this `n` is a call the probe drops unanswered.
pub const DROP: u64 = u64::MAX - 1;

/// What a probe saw.
#[derive(Debug)]
pub enum Seen {
    /// A ping (a cast or a call), and the session it came on.
    Ping {
        /// Its `n`.
        n: u64,
        /// The session it came on.
        session: SessionRef,
    },
    /// A signal of one of its sessions.
    Signal(SessionSignal),
}

/// Reports every ping and signal; answers calls with a `Pong` carrying the same `n`.
#[derive(Debug)]
pub struct Probe;

/// A [`Probe`]'s state: where it reports, and the calls it holds ([`HOLD`]).
#[derive(Debug)]
pub struct ProbeState {
    seen: mpsc::UnboundedSender<Seen>,
    held: Vec<ReplyPort>,
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Probe {
    type Msg = SessionMsg;
    type State = ProbeState;
    type Arguments = mpsc::UnboundedSender<Seen>;

    async fn pre_start(
        &self,
        _: ActorRef<SessionMsg>,
        seen: Self::Arguments,
    ) -> Result<ProbeState, ActorProcessingErr> {
        Ok(ProbeState {
            seen,
            held: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Inbound(mut inbound) => {
                let ping: Ping = inbound.decode()?;
                let session = inbound.session().clone();
                if let Some(port) = inbound.take_reply() {
                    match ping.n {
                        HOLD => state.held.push(port),
                        DROP => drop(port),
                        n => {
                            let left = port.deadline().map_or(0, |d| {
                                d.saturating_duration_since(Instant::now()).as_millis() as u64
                            });
                            port.send(&Pong {
                                n,
                                deadline_left_ms: left,
                            })?;
                        }
                    }
                }
                let _ = state.seen.send(Seen::Ping { n: ping.n, session });
            }
            SessionMsg::Signal(signal) => {
                let _ = state.seen.send(Seen::Signal(signal));
            }
        }
        Ok(())
    }
}

/// Starts a probe actor; returns it with the receiving end of what it sees.
pub async fn probe() -> (ActorRef<SessionMsg>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(None, Probe, tx).await.expect("probe starts");
    (actor, rx)
}

/// A node listening on 127.0.0.1 with a free port.
pub async fn listening_node(name: &str, secret: &str) -> Node {
    Node::builder()
        .name(name)
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(secret).unwrap())
        .start()
        .await
        .expect("node starts")
}

/// A node that only dials out.
pub async fn dialling_node(name: &str, secret: &str) -> Node {
    Node::builder()
        .name(name)
        .secret(Secret::new(secret).unwrap())
        .start()
        .await
        .expect("node starts")
}

/// The address `node` listens on, as text.
pub fn addr(node: &Node) -> String {
    node.local_addr().expect("node listens").to_string()
}

/// The next item of `rx`, within [`WAIT`].
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an item within the wait bound")
        .expect("channel open")
}

/// The next node event matching `pick`, within [`WAIT`].
pub async fn node_event<T>(
    events: &mut broadcast::Receiver<NodeEvent>,
    mut pick: impl FnMut(NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("node events closed"),
            }
        }
    })
    .await
    .expect("the node event within the wait bound")
}

/// The reason of the next session this node rejected during its handshake.
pub async fn rejection(events: &mut broadcast::Receiver<NodeEvent>) -> duologue::CloseReason {
    node_event(events, |e| match e {
        NodeEvent::SessionRejected { reason, .. } => Some(reason),
        _ => None,
    })
    .await
}

/// The next ping a probe saw, skipping signals.
pub async fn next_ping(rx: &mut mpsc::UnboundedReceiver<Seen>) -> (u64, SessionRef) {
    loop {
        if let Seen::Ping { n, session } = next(rx).await {
            return (n, session);
        }
    }
}

/// The next signal a probe saw, skipping pings.
pub async fn next_signal(rx: &mut mpsc::UnboundedReceiver<Seen>) -> SessionSignal {
    loop {
        if let Seen::Signal(signal) = next(rx).await {
            return signal;
        }
    }
}

/// A listening node with a probe registered as `"probe"`.
#[derive(Debug)]
pub struct Served {
    /// The node.
    pub node: Node,
    /// The probe.
    pub target: ActorRef<SessionMsg>,
    /// What the probe sees.
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

/// Registers a new probe on `node` as `"probe"`.
pub async fn served_probe(node: Node) -> Served {
    let (target, seen) = probe().await;
    node.register("probe", &target).unwrap();
    Served { node, target, seen }
}

/// A fresh dialling node whose own probe owns a session to `actor` at `addr`.
#[derive(Debug)]
pub struct Dialled {
    /// The dialling node.
    pub node: Node,
    /// What the owning probe sees.
    pub owner_seen: mpsc::UnboundedReceiver<Seen>,
    /// The outcome of the connect.
    pub result: Result<duologue::RemoteRef<PingPong>, duologue::ConnectError>,
}

/// Has `node` connect to `actor` at `addr` on behalf of a new probe.
pub async fn dial(node: Node, addr: &str, actor: &str) -> Dialled {
    let (owner, owner_seen) = probe().await;
    let result = node.connect((addr, actor)).owner(&owner).await;
    Dialled {
        node,
        owner_seen,
        result,
    }
}

/// A loopback port that was free a moment ago and has no listener now.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a recorder heard, with when.
#[derive(Debug)]
pub enum Heard {
    /// A message, undecoded.
    Message {
        /// Its type URL.
        type_url: String,
        /// Its encoded bytes.
        payload: bytes::Bytes,
    },
    /// A signal of one of its sessions.
    Signal(SessionSignal),
}

/// Records every message and signal it gets, with the instant it got it.
#[derive(Debug)]
pub struct Recorder;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Recorder {
    type Msg = SessionMsg;
    type State = mpsc::UnboundedSender<(Instant, Heard)>;
    type Arguments = mpsc::UnboundedSender<(Instant, Heard)>;

    async fn pre_start(
        &self,
        _: ActorRef<SessionMsg>,
        heard: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(heard)
    }

    async fn handle(
        &self,
        _: ActorRef<SessionMsg>,
        message: SessionMsg,
        heard: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let item = match message {
            SessionMsg::Inbound(inbound) => Heard::Message {
                type_url: inbound.type_url().to_owned(),
                payload: inbound.payload().clone(),
            },
            SessionMsg::Signal(signal) => Heard::Signal(signal),
        };
        let _ = heard.send((Instant::now(), item));
        Ok(())
    }
}

/// Starts a recorder; returns it with what it hears.
pub async fn recorder() -> (
    ActorRef<SessionMsg>,
    mpsc::UnboundedReceiver<(Instant, Heard)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(None, Recorder, tx)
        .await
        .expect("recorder starts");
    (actor, rx)
}

/// The next signal a recorder heard that `pick` accepts (skipping messages and other
/// signals), with when, within `wait`.
pub async fn signal_where<T>(
    heard: &mut mpsc::UnboundedReceiver<(Instant, Heard)>,
    wait: Duration,
    mut pick: impl FnMut(SessionSignal) -> Option<T>,
) -> (Instant, T) {
    tokio::time::timeout(wait, async {
        loop {
            let (at, item) = heard.recv().await.expect("recorder alive");
            if let Heard::Signal(signal) = item
                && let Some(found) = pick(signal)
            {
                return (at, found);
            }
        }
    })
    .await
    .expect("the signal within the wait bound")
}

/// A probe served on one node, and a fresh node's session to it.
pub async fn probe_session() -> (Served, Dialled) {
    let server = served_probe(listening_node("server", SECRET).await).await;
    let client = dial(
        dialling_node("client", SECRET).await,
        &addr(&server.node),
        "probe",
    )
    .await;
    (server, client)
}

/// A node started from `config`, with the test secret.
pub async fn node_with(config: duologue::NodeConfig) -> Node {
    Node::builder()
        .config(config)
        .secret(Secret::new(SECRET).unwrap())
        .start()
        .await
        .expect("node starts")
}
