//! A node's memory budgets (issue 13, "bounded authenticated memory"), with real nodes on
//! loopback:
//!
//! - a hostile peer that holds the secret opens sessions and never acknowledges what the
//!   node sends it: together its sessions stop at the per-peer replay budget with a typed
//!   refusal, another hostile identity at what the node budget leaves, and a legitimate
//!   peer alongside keeps sending and receiving;
//! - a node whose actor holds one peer's messages past the node's inbound budget grants
//!   another peer no more credit (its sender is held back, and told so), until the actor
//!   handles what it holds.
//!
//! The hostile peer speaks raw frames (hand-written prost messages over a raw gRPC codec)
//! as a client written against `docs/protocol.md` would, and after its handshake it sends
//! nothing at all.

mod raw_peer;
mod support;

use std::time::Duration;

use duologue::{
    BudgetConfig, HeldBy, Inbound, NONCE_LEN, NodeConfig, NodeIdentity, PROTOCOL_VERSION,
    ReplayLimit, SendError, SessionConfig, SessionRef, SessionSignal,
};
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use raw_peer::*;
use support::*;
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;
/// Every ping's filler.
const FILLER: usize = 256 * 1024;

/// Opens a session to `probe` at `addr` as `identity`, proving the secret, and then
/// never says another word (no ack, no credit, nothing): the stream stays open as long
/// as the returned value lives.
async fn hostile_session(addr: &str, identity: &NodeIdentity) -> RawStream {
    let from = NodeId {
        name: identity.name.clone(),
        incarnation: identity.incarnation.as_bytes().to_vec(),
    };
    let session_id = uuid::Uuid::new_v4().as_bytes().to_vec();
    let nonce = rand::random::<[u8; NONCE_LEN]>().to_vec();
    let target = "probe";
    let mut stream = RawStream::open(
        addr,
        Kind::Hello(Hello {
            session_id: session_id.clone(),
            from: Some(from.clone()),
            target: target.into(),
            protocol_version: PROTOCOL_VERSION,
            nonce: nonce.clone(),
            max_message_bytes: 4 * MIB as u64,
            credit_window: 1 << 20,
            resume: None,
        }),
    )
    .await;
    let Kind::Challenge(challenge) = stream.next().await else {
        panic!("expected a challenge");
    };
    let acceptor = challenge.from.clone().unwrap_or_default();
    let proof = mac(
        SECRET.as_bytes(),
        &[
            b"duologue/v1 initiator proof",
            &session_id,
            from.name.as_bytes(),
            &from.incarnation,
            acceptor.name.as_bytes(),
            &acceptor.incarnation,
            target.as_bytes(),
            &nonce,
            &challenge.nonce,
        ],
    );
    stream.send(Kind::Proof(Proof { proof }));
    assert!(
        matches!(stream.next().await, Kind::Welcome(_)),
        "the node admits the session"
    );
    stream
}

fn identity(name: &str) -> NodeIdentity {
    NodeIdentity {
        name: name.into(),
        incarnation: uuid::Uuid::new_v4(),
    }
}

fn ping(n: u64) -> Ping {
    Ping {
        n,
        body: vec![7; FILLER],
    }
}

/// Panics with what `result` says (not with the message it hands back, which is large).
fn sent<T>(result: Result<(), SendError<T>>, what: &str) {
    if let Err(error) = result {
        panic!("{what}: {error}");
    }
}

/// The acceptor's end of the next session opened to the probe, within [`WAIT`].
async fn opened(seen: &mut mpsc::UnboundedReceiver<Seen>) -> SessionRef {
    loop {
        if let SessionSignal::Opened(session) = next_signal(seen).await {
            return session;
        }
    }
}

/// Casts pings on `sessions` in turn, without waiting, until each refuses; returns the
/// payload bytes taken and every refusal's bound.
fn fill(sessions: &[SessionRef], first: u64) -> (usize, Vec<ReplayLimit>) {
    let (mut taken, mut limits) = (0, Vec::new());
    let mut open: Vec<&SessionRef> = sessions.iter().collect();
    let mut n = first;
    while !open.is_empty() {
        open.retain(|session| {
            n += 1;
            match session.try_cast(ping(n)) {
                Ok(()) => {
                    taken += ping(n).encoded_len();
                    true
                }
                Err(SendError::Full { limit, .. }) => {
                    limits.push(limit);
                    false
                }
                Err(other) => panic!("expected a typed refusal, got {other}"),
            }
        });
        assert!(
            taken <= 64 * MIB,
            "{taken} bytes taken and still no refusal"
        );
    }
    (taken, limits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_acks_stops_at_its_budget_and_another_keeps_working() {
    let budget = BudgetConfig {
        peer_replay_bytes: 4 * MIB,
        node_replay_bytes: 10 * MIB,
        ..BudgetConfig::default()
    };
    let hub = node_with(NodeConfig {
        name: "hub".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        budget: budget.clone(),
        session: SessionConfig {
            // Silence would interrupt the hostile sessions: this is about what is held
            // while they look alive.
            silence_timeout: Duration::from_secs(600),
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let mut hub = served_probe(hub).await;
    let addr = addr(&hub.node);

    // Mallory proves the secret three times over and never acknowledges anything.
    let mallory = identity("mallory");
    let mut streams = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        streams.push(hostile_session(&addr, &mallory).await);
        held.push(opened(&mut hub.seen).await);
    }
    let (taken, limits) = fill(&held, 0);
    // Past the budget by less than one ping: no room for another.
    let longest = ping(1 << 20).encoded_len();
    assert!(
        taken <= budget.peer_replay_bytes && taken + longest > budget.peer_replay_bytes,
        "mallory's sessions hold {taken} bytes together"
    );
    let peer = ReplayLimit::Peer {
        bytes: budget.peer_replay_bytes,
    };
    assert_eq!(
        limits,
        vec![peer; 3],
        "each refusal names the peer's budget"
    );

    // Trudy, another identity, gets a budget of her own.
    let trudy = identity("trudy");
    streams.push(hostile_session(&addr, &trudy).await);
    let trudys = opened(&mut hub.seen).await;
    let (trudy_taken, limits) = fill(std::slice::from_ref(&trudys), 1000);
    assert_eq!(limits, vec![peer]);

    // Alice, a peer that acknowledges (each message at once), still talks both ways, and
    // the hub sends her more than any peer's budget, one ping after another.
    let alice_node = node_with(NodeConfig {
        name: "alice".into(),
        session: SessionConfig {
            ack_every: 1,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let mut alice = dial(alice_node, &addr, "probe").await;
    let remote = alice.result.clone().expect("alice connects");
    let alices = opened(&mut hub.seen).await;
    assert_eq!(alices.peer().name, "alice");
    // Calls, not casts: each reply carries (or closely follows) alice's ack, so what the
    // hub holds for her stays within the node budget's remainder however slowly acks
    // travel on a loaded machine (casts raced their acks: a rare `Full`).
    for n in 1..=24 {
        let pong: Pong = alices
            .call(&ping(n), WAIT)
            .await
            .unwrap_or_else(|e| panic!("the hub calls alice ({n}): {e}"));
        assert_eq!(pong.n, n);
        assert_eq!(next_ping(&mut alice.owner_seen).await.0, n);
    }
    sent(remote.cast(ping(1)).await, "alice sends");
    assert_eq!(next_ping(&mut hub.seen).await.0, 1);
    let pong = remote.call(ping(2), WAIT).await.expect("alice calls");
    assert_eq!(pong.n, 2);

    // Mallory's sessions are still full: nothing they hold was given back.
    assert!(matches!(
        held[0].try_cast(ping(0)),
        Err(SendError::Full { limit, .. }) if limit == peer
    ));

    // Eve, a third identity, gets only what the node's budget has left.
    streams.push(hostile_session(&addr, &identity("eve")).await);
    let eves = opened(&mut hub.seen).await;
    let (eve_taken, limits) = fill(std::slice::from_ref(&eves), 2000);
    assert_eq!(
        limits,
        vec![ReplayLimit::Node {
            bytes: budget.node_replay_bytes
        }]
    );
    assert!(
        taken + trudy_taken + eve_taken <= budget.node_replay_bytes,
        "the hostile peers hold {} bytes together",
        taken + trudy_taken + eve_taken
    );
    drop(streams);
}

// ---- inbound: an actor that holds one peer's messages --------------------------------

enum HolderMsg {
    Inbound(Inbound),
    /// A session signal, which the holder does not need.
    Signal,
    /// Handle (drop) every message held.
    Release,
}

#[cfg(feature = "ractor-cluster")]
impl ractor::Message for HolderMsg {}

impl From<Inbound> for HolderMsg {
    fn from(inbound: Inbound) -> Self {
        Self::Inbound(inbound)
    }
}

impl From<SessionSignal> for HolderMsg {
    fn from(_: SessionSignal) -> Self {
        Self::Signal
    }
}

/// Keeps what mallory sends unhandled until told; handles everything else at once.
/// Reports each ping as (sender's name, n).
struct Holder;

struct HolderState {
    seen: mpsc::UnboundedSender<(String, u64)>,
    held: Vec<Inbound>,
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Holder {
    type Msg = HolderMsg;
    type State = HolderState;
    type Arguments = mpsc::UnboundedSender<(String, u64)>;

    async fn pre_start(
        &self,
        _: ActorRef<HolderMsg>,
        seen: Self::Arguments,
    ) -> Result<HolderState, ActorProcessingErr> {
        Ok(HolderState {
            seen,
            held: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<HolderMsg>,
        message: HolderMsg,
        state: &mut HolderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HolderMsg::Inbound(inbound) => {
                let ping: Ping = inbound.decode()?;
                let from = inbound.session().peer().name.clone();
                let _ = state.seen.send((from.clone(), ping.n));
                if from == "mallory" {
                    state.held.push(inbound);
                }
            }
            HolderMsg::Signal => {}
            HolderMsg::Release => state.held.clear(),
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_waits_while_the_node_inbound_budget_is_past_until_the_actor_handles_it() {
    const WINDOW: u64 = 8;
    let hub = node_with(NodeConfig {
        name: "hub".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        budget: BudgetConfig {
            node_inbound_bytes: MIB,
            ..BudgetConfig::default()
        },
        session: SessionConfig {
            credit_window: WINDOW,
            flow_high_watermark: None,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (holder, _) = Actor::spawn(None, Holder, seen_tx).await.unwrap();
    hub.register("holder", &holder).unwrap();
    let addr = addr(&hub);

    // Mallory's whole window (2 MiB) waits in the holder, past the node's 1 MiB.
    let mallory = dial(dialling_node("mallory", SECRET).await, &addr, "holder").await;
    let mallory = mallory.result.clone().expect("mallory connects");
    for n in 1..=WINDOW {
        sent(mallory.cast(ping(n)).await, "mallory sends");
    }
    for n in 1..=WINDOW {
        assert_eq!(next(&mut seen).await, ("mallory".to_owned(), n));
    }

    // Alice's messages are handled at once, but the node grants her no more credit: past
    // her window, her sender waits and is told it is held back (a silence timeout to
    // ask, another to be sure).
    let alice_node = node_with(NodeConfig {
        name: "alice".into(),
        session: SessionConfig {
            silence_timeout: Duration::from_millis(300),
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let mut alice = dial(alice_node, &addr, "holder").await;
    let remote = alice.result.clone().expect("alice connects");
    for n in 1..=WINDOW {
        sent(remote.cast(Ping { n, body: vec![] }).await, "alice sends");
    }
    for n in 1..=WINDOW {
        assert_eq!(next(&mut seen).await, ("alice".to_owned(), n));
    }
    assert!(matches!(
        remote.try_cast(Ping { n: 0, body: vec![] }),
        Err(SendError::HeldBack {
            by: HeldBy::NoCredit,
            ..
        })
    ));
    let waiting = tokio::spawn({
        let remote = remote.clone();
        async move {
            remote
                .cast(Ping {
                    n: WINDOW + 1,
                    body: vec![],
                })
                .await
        }
    });
    let held = loop {
        if let SessionSignal::HeldBack(_, held) = next_signal(&mut alice.owner_seen).await {
            break held;
        }
    };
    assert_eq!(held.credit_left, 0, "{held:?}");
    assert!(!waiting.is_finished());
    assert!(seen.try_recv().is_err(), "nothing more reached the holder");

    // The holder handles mallory's messages: the node's budget frees up, alice's session
    // grants the credit it withheld, and her waiting message arrives.
    holder.cast(HolderMsg::Release).unwrap();
    assert_eq!(next(&mut seen).await, ("alice".to_owned(), WINDOW + 1));
    tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the waiting cast returns")
        .unwrap()
        .expect("and was sent");
}
