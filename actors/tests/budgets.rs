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

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use duologue::{
    Inbound, NodeConfig, SendError, SessionRef, SessionSignal,
    flow::{HeldBy, ReplayLimit},
    settings::{BudgetConfig, SessionConfig},
    wire::{NONCE_LEN, NodeIdentity, PROTOCOL_VERSION},
};
use duologue_testkit::raw_peer::*;
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef};
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
            // All the credit in bytes it could want: what holds the node back is its
            // replay budgets.
            credit_window_bytes: 1 << 40,
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
/// Reports each ping as (sender's name, n), and keeps the most payload bytes it ever
/// held at once: a count of its own, not the runtime's.
struct Holder;

struct HolderState {
    seen: mpsc::UnboundedSender<(String, u64)>,
    held: Vec<Inbound>,
    held_bytes: usize,
    most: Arc<AtomicUsize>,
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Holder {
    type Msg = HolderMsg;
    type State = HolderState;
    type Arguments = (mpsc::UnboundedSender<(String, u64)>, Arc<AtomicUsize>);

    async fn pre_start(
        &self,
        _: ActorRef<HolderMsg>,
        (seen, most): Self::Arguments,
    ) -> Result<HolderState, ActorProcessingErr> {
        Ok(HolderState {
            seen,
            held: Vec::new(),
            held_bytes: 0,
            most,
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
                if from.starts_with("mallory") {
                    state.held_bytes += inbound.payload().len();
                    state.most.fetch_max(state.held_bytes, Ordering::SeqCst);
                    state.held.push(inbound);
                }
            }
            HolderMsg::Signal => {}
            HolderMsg::Release => {
                state.held.clear();
                state.held_bytes = 0;
            }
        }
        Ok(())
    }
}

/// A hub hosting a [`Holder`] as `holder`, with `budget`; what it saw, and the most it
/// held.
async fn holder_hub(
    budget: BudgetConfig,
) -> (
    duologue::Node,
    ActorRef<HolderMsg>,
    mpsc::UnboundedReceiver<(String, u64)>,
    Arc<AtomicUsize>,
) {
    let hub = node_with(NodeConfig {
        name: "hub".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        budget,
        session: SessionConfig {
            flow_high_watermark: None,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let most = Arc::new(AtomicUsize::new(0));
    let (holder, _) = Actor::spawn(None, Holder, (seen_tx, most.clone()))
        .await
        .unwrap();
    hub.register("holder", &holder).unwrap();
    (hub, holder, seen, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holding_the_node_inbound_budget_holds_back_anothers_large_message_until_handled() {
    let budget = MIB;
    let (hub, holder, mut seen, most) = holder_hub(BudgetConfig {
        node_inbound_bytes: budget,
        ..BudgetConfig::default()
    })
    .await;
    let addr = addr(&hub);

    // Mallory sends eight pings of 256 KiB into the holder, which keeps them: only what
    // the node's budget covers gets through, and the rest of mallory's casts wait.
    let mallory = dial(dialling_node("mallory", SECRET).await, &addr, "holder").await;
    let mallory = mallory.result.clone().expect("mallory connects");
    let flood = tokio::spawn(async move {
        for n in 1..=8 {
            sent(mallory.cast(ping(n)).await, "mallory sends");
        }
    });
    let per_ping = ping(1).encoded_len();
    let fits = budget / per_ping;
    for n in 1..=fits as u64 {
        assert_eq!(next(&mut seen).await, ("mallory".to_owned(), n));
    }

    // Alice's small pings still go through (each is handled at once, its bytes granted
    // again), but her large one waits, told it is held back by byte credit.
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
    for n in 1..=100 {
        let small = Ping {
            n,
            body: vec![1; 1000],
        };
        sent(remote.cast(small).await, "alice sends");
        assert_eq!(next(&mut seen).await, ("alice".to_owned(), n));
    }
    assert!(matches!(
        remote.try_cast(ping(101)),
        Err(SendError::HeldBack {
            by: HeldBy::NoByteCredit,
            ..
        })
    ));
    let waiting = tokio::spawn({
        let remote = remote.clone();
        async move { remote.cast(ping(101)).await }
    });
    let held = loop {
        if let SessionSignal::HeldBack(_, held) = next_signal(&mut alice.owner_seen).await {
            break held;
        }
    };
    assert!(
        held.credit_left > 0,
        "messages are not what is short: {held:?}"
    );
    assert!(!waiting.is_finished());
    assert!(seen.try_recv().is_err(), "nothing more reached the holder");
    assert!(
        most.load(Ordering::SeqCst) <= budget,
        "the holder held {} bytes at once, past the node's {budget}",
        most.load(Ordering::SeqCst)
    );

    // The holder handles mallory's messages: the budget has room, alice's waiting grant
    // goes out, and her large ping arrives, followed by the rest of mallory's.
    holder.cast(HolderMsg::Release).unwrap();
    let mut mallorys = fits as u64;
    loop {
        match next(&mut seen).await {
            (who, 101) if who == "alice" => break,
            (who, n) if who == "mallory" => mallorys = n,
            other => panic!("unexpected {other:?}"),
        }
    }
    tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the waiting cast returns")
        .unwrap()
        .expect("and was sent");
    // The rest of mallory's, as the holder handles what it holds.
    while mallorys < 8 {
        holder.cast(HolderMsg::Release).unwrap();
        let (who, n) = next(&mut seen).await;
        assert_eq!((who.as_str(), n), ("mallory", mallorys + 1));
        mallorys = n;
        assert!(most.load(Ordering::SeqCst) <= budget);
    }
    tokio::time::timeout(WAIT, flood)
        .await
        .expect("mallory's casts all return")
        .unwrap();
}

/// The next ping the holder saw, within the wait bound; past it, a panic that shows where
/// the hub's sessions stand (what each holds, and whether it withholds a grant).
async fn next_or_show(
    seen: &mut mpsc::UnboundedReceiver<(String, u64)>,
    hub: &duologue::Node,
) -> (String, u64) {
    if let Ok(Some(item)) = tokio::time::timeout(WAIT, seen.recv()).await {
        return item;
    }
    let sessions: Vec<String> = hub
        .status()
        .sessions
        .iter()
        .map(|s| format!("{} {}: {:?} {:?}", s.peer.name, s.id, s.state, s.flow))
        .collect();
    panic!(
        "nothing reached the holder within {WAIT:?}; the hub's sessions:\n{}",
        sessions.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_the_largest_messages_never_puts_more_than_the_peer_budget_in_flight() {
    const SESSIONS: usize = 6;
    let peer_budget = 10 * MIB;
    let (hub, holder, mut seen, most) = holder_hub(BudgetConfig {
        peer_inbound_bytes: peer_budget,
        ..BudgetConfig::default()
    })
    .await;
    let addr = addr(&hub);
    // One peer, six sessions, each casting 4 MiB messages as fast as credit lets it at an
    // actor that handles none of them: each session's window takes one, the peer's
    // budget two of them in all.
    let mallory = dialling_node("mallory", SECRET).await;
    let big = Ping {
        n: 0,
        body: vec![9; 4 * MIB - 64],
    };
    let (mut floods, mut owners) = (Vec::new(), Vec::new());
    for s in 0..SESSIONS {
        let dialled = dial(mallory.clone(), &addr, "holder").await;
        let remote = dialled.result.clone().expect("mallory connects");
        owners.push(dialled);
        let big = big.clone();
        floods.push(tokio::spawn(async move {
            for n in 0..4 {
                let ping = Ping {
                    n: (s * 10 + n) as u64,
                    ..big.clone()
                };
                if let Err(e) = remote.cast(ping).await {
                    let why = remote.session().closed().await;
                    panic!("mallory floods: {e}: {why}");
                }
            }
        }));
    }
    let fits = peer_budget / big.encoded_len();
    for _ in 0..fits {
        next_or_show(&mut seen, &hub).await;
    }
    // Nothing more arrives while the holder holds them (the senders wait, and ask).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.recv())
            .await
            .is_err(),
        "more arrived than the peer's budget covers"
    );
    let initial = SessionConfig::default().initial_credit_bytes as usize;
    assert!(
        most.load(Ordering::SeqCst) <= peer_budget + SESSIONS * initial,
        "{} bytes in the mailbox at once, past the peer's {peer_budget}",
        most.load(Ordering::SeqCst)
    );
    // Handled, the rest flows, in turns.
    for _ in 0..(SESSIONS * 4 - fits) {
        holder.cast(HolderMsg::Release).unwrap();
        next_or_show(&mut seen, &hub).await;
    }
    holder.cast(HolderMsg::Release).unwrap();
    for flood in floods {
        tokio::time::timeout(WAIT, flood)
            .await
            .expect("floods end")
            .unwrap();
    }
    drop(owners);
}
