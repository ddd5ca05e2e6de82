//! A user's own actor typed at both ends: a key-value store whose `Msg` is
//! `Mailbox<Kv, KvLocal>` takes typed casts and calls, answers through a typed `Reply`,
//! takes local messages, reports a payload of another type as `Undecodable` (a call
//! gets a `decode` fault), and a client connecting with another protocol is refused in
//! the handshake with `ConnectError::ProtocolMismatch`, before any message.

mod support;

use std::collections::BTreeMap;

use duologue::{CallError, ConnectError, Mailbox, Protocol, SessionSignal, mailbox::NoMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use support::*;
use tokio::sync::mpsc;

/// What prost-build generates (with `enable_type_names()`) for `package duologue.test.kv;
/// message KvRequest { oneof kind { Get get = 1; Put put = 2; } }`, `Get`, `Put` and
/// `KvResponse`.
#[allow(missing_docs, unreachable_pub)]
mod kv {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvRequest {
        #[prost(oneof = "kv_request::Kind", tags = "1, 2")]
        pub kind: Option<kv_request::Kind>,
    }

    pub mod kv_request {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Kind {
            #[prost(message, tag = "1")]
            Get(super::Get),
            #[prost(message, tag = "2")]
            Put(super::Put),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Get {
        #[prost(string, tag = "1")]
        pub key: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Put {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvResponse {
        #[prost(string, optional, tag = "1")]
        pub value: Option<String>,
    }

    impl prost::Name for KvRequest {
        const NAME: &'static str = "KvRequest";
        const PACKAGE: &'static str = "duologue.test.kv";
    }

    impl prost::Name for KvResponse {
        const NAME: &'static str = "KvResponse";
        const PACKAGE: &'static str = "duologue.test.kv";
    }
}

use kv::{Get, KvRequest, KvResponse, Put, kv_request};

duologue::oneof!(KvRequest, kind: kv_request::Kind { Get(Get), Put(Put) });

/// The store's protocol.
struct Kv;

impl Protocol for Kv {
    type Request = KvRequest;
    type Response = KvResponse;
}

/// The store's own messages, sent locally.
enum KvLocal {
    /// How many keys it holds.
    Len(RpcReplyPort<usize>),
}

/// What the store tells the test, besides its replies.
#[derive(Debug, PartialEq)]
enum Observed {
    Opened,
    Undecodable {
        type_url: String,
        was_call: bool,
    },
    /// A cluster event, by the names of the members it carries.
    Cluster(Vec<String>),
}

struct KvStore;

struct KvState {
    entries: BTreeMap<String, String>,
    observed: mpsc::UnboundedSender<Observed>,
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for KvStore {
    type Msg = Mailbox<Kv, KvLocal>;
    type State = KvState;
    type Arguments = mpsc::UnboundedSender<Observed>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        observed: Self::Arguments,
    ) -> Result<KvState, ActorProcessingErr> {
        Ok(KvState {
            entries: BTreeMap::new(),
            observed,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut KvState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Mailbox::Cast { message, .. } => {
                if let Ok(Put { key, value }) = Put::try_from(message) {
                    state.entries.insert(key, value);
                }
            }
            Mailbox::Call { request, reply, .. } => {
                if let Ok(Get { key }) = Get::try_from(request) {
                    let value = state.entries.get(&key).cloned();
                    reply.send(KvResponse { value })?;
                }
            }
            Mailbox::Undecodable(undecodable) => {
                let _ = state.observed.send(Observed::Undecodable {
                    type_url: undecodable.type_url().to_owned(),
                    was_call: undecodable.was_call(),
                });
            }
            Mailbox::Signal(SessionSignal::Opened(_)) => {
                let _ = state.observed.send(Observed::Opened);
            }
            Mailbox::Signal(_) => {}
            Mailbox::Local(KvLocal::Len(reply)) => {
                let _ = reply.send(state.entries.len());
            }
            Mailbox::Cluster(duologue::cluster::ClusterEvent::Current(members)) => {
                let names = members.into_iter().map(|m| m.identity.name).collect();
                let _ = state.observed.send(Observed::Cluster(names));
            }
            Mailbox::Cluster(_) => {}
        }
        Ok(())
    }
}

/// A listening node with the store registered as "store", and what the store observes.
async fn served_store() -> (
    duologue::Node,
    ActorRef<Mailbox<Kv, KvLocal>>,
    mpsc::UnboundedReceiver<Observed>,
) {
    let node = listening_node("server", SECRET).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let (store, _) = Actor::spawn(None, KvStore, tx).await.expect("store starts");
    node.register("store", &store).expect("name free");
    (node, store, rx)
}

#[tokio::test]
async fn a_typed_actor_takes_typed_casts_calls_and_local_messages() {
    let (server, store, mut observed) = served_store().await;
    let client = dialling_node("client", SECRET).await;
    let (kv, _inbox) = client
        .connect::<Kv>((&addr(&server), "store"))
        .inbox()
        .await
        .expect("same protocol connects");
    assert_eq!(next(&mut observed).await, Observed::Opened);

    kv.cast(Put {
        key: "a".into(),
        value: "1".into(),
    })
    .await
    .expect("cast sent");
    let got = kv.call(Get { key: "a".into() }, WAIT).await.expect("reply");
    assert_eq!(got.value.as_deref(), Some("1"));
    let missing = kv.call(Get { key: "b".into() }, WAIT).await.expect("reply");
    assert_eq!(missing.value, None);

    let len = store
        .call(|reply| Mailbox::local(KvLocal::Len(reply)), Some(WAIT))
        .await
        .expect("store alive");
    assert!(matches!(len, ractor::rpc::CallResult::Success(1)));
}

#[tokio::test]
async fn a_payload_of_another_type_is_undecodable_and_a_call_of_it_gets_a_decode_fault() {
    let (server, _store, mut observed) = served_store().await;
    let client = dialling_node("client", SECRET).await;
    let (kv, _inbox) = client
        .connect::<Kv>((&addr(&server), "store"))
        .inbox()
        .await
        .expect("connects");
    assert_eq!(next(&mut observed).await, Observed::Opened);
    // The untyped session underneath sends anything.
    let session = kv.session();
    let ping_url = "type.googleapis.com/duologue.test.Ping".to_owned();

    session
        .cast(Ping { n: 1, body: vec![] })
        .await
        .expect("cast sent");
    assert_eq!(
        next(&mut observed).await,
        Observed::Undecodable {
            type_url: ping_url.clone(),
            was_call: false
        }
    );

    let call = Ping { n: 2, body: vec![] };
    match session.call::<Ping, Pong>(&call, WAIT).await {
        Err(CallError::Fault(fault)) => {
            assert_eq!(fault.code, "decode");
            assert!(
                fault.message.contains("duologue.test.kv.KvRequest"),
                "{fault:?}"
            );
        }
        other => panic!("expected a decode fault, got {other:?}"),
    }
    assert_eq!(
        next(&mut observed).await,
        Observed::Undecodable {
            type_url: ping_url,
            was_call: true
        }
    );
    // The session carries on: the undecodable messages were consumed, not fatal.
    let got = kv.call(Get { key: "a".into() }, WAIT).await.expect("reply");
    assert_eq!(got.value, None);
}

#[tokio::test]
async fn connecting_with_another_protocol_is_refused_in_the_handshake() {
    let (server, _store, mut observed) = served_store().await;
    let mut events = server.events();
    let client = dialling_node("client", SECRET).await;

    let refused = client
        .connect::<PingPong>((&addr(&server), "store"))
        .inbox()
        .await
        .map(drop);

    match refused {
        Err(ConnectError::ProtocolMismatch {
            addr: at,
            actor,
            ours,
            theirs,
        }) => {
            assert_eq!(at, addr(&server));
            assert_eq!(actor, "store");
            assert_eq!(ours, "duologue.test.Ping->duologue.test.Pong");
            assert_eq!(theirs, Kv::name());
            assert_eq!(
                theirs,
                "duologue.test.kv.KvRequest->duologue.test.kv.KvResponse"
            );
        }
        other => panic!("expected a protocol mismatch, got {other:?}"),
    }
    // The acceptor refused it during the handshake: the store never heard of it.
    let reason = rejection(&mut events).await;
    assert!(
        matches!(
            &reason,
            duologue::CloseReason::RefusedLocally(duologue::wire::Refusal {
                reason: duologue::wire::RefuseReason::ProtocolMismatch { .. },
                ..
            })
        ),
        "{reason:?}"
    );
    assert!(observed.try_recv().is_err(), "nothing reached the store");
}

/// A protocol that leaves its name unspecified, as old and untyped clients do.
struct Unnamed;

impl Protocol for Unnamed {
    type Request = KvRequest;
    type Response = KvResponse;

    fn name() -> String {
        String::new()
    }
}

#[tokio::test]
async fn an_unspecified_protocol_is_accepted_by_a_typed_actor() {
    let (server, _store, mut observed) = served_store().await;
    let client = dialling_node("client", SECRET).await;
    let (remote, _inbox) = client
        .connect::<Unnamed>((&addr(&server), "store"))
        .inbox()
        .await
        .expect("an unspecified protocol connects");
    assert_eq!(next(&mut observed).await, Observed::Opened);
    let got = remote
        .call(Get { key: "a".into() }, WAIT)
        .await
        .expect("reply");
    assert_eq!(got.value, None);
}

/// `InboxReceiver::next_message`: messages come back typed; what is not a message comes
/// back as a typed `NoMessage` (and a call is answered, not left waiting).
#[tokio::test]
async fn a_reader_of_messages_gets_each_message_or_a_typed_reason() {
    let server = listening_node("pusher", SECRET).await;
    let (probe, mut seen) = probe().await;
    server.register("pusher", &probe).expect("name free");
    let client = dialling_node("reader", SECRET).await;
    let (_kv, mut inbox) = client
        .connect::<Kv>((&addr(&server), "pusher"))
        .inbox()
        .await
        .expect("connects");
    let pushing = match next_signal(&mut seen).await {
        SessionSignal::Opened(session) => session,
        other => panic!("expected Opened, got {other:?}"),
    };

    pushing
        .cast(KvResponse {
            value: Some("v".into()),
        })
        .await
        .unwrap();
    let message = bounded(inbox.next_message()).await.expect("a message");
    assert_eq!(message.value.as_deref(), Some("v"));

    pushing.cast(Ping { n: 1, body: vec![] }).await.unwrap();
    match bounded(inbox.next_message()).await {
        Err(NoMessage::Undecodable { type_url, .. }) => {
            assert!(type_url.ends_with("duologue.test.Ping"))
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }

    let call = KvResponse { value: None };
    let (answer, read) = tokio::join!(
        pushing.call::<KvResponse, KvResponse>(&call, WAIT),
        bounded(inbox.next_message())
    );
    assert!(matches!(read, Err(NoMessage::Called { .. })), "{read:?}");
    match answer {
        Err(CallError::Fault(fault)) => assert_eq!(fault.code, "unexpected_call"),
        other => panic!("expected an unexpected_call fault, got {other:?}"),
    }

    pushing.finish();
    match bounded(inbox.next_message()).await {
        Err(NoMessage::PeerFinished(goodbye)) => {
            assert_eq!(goodbye.reason, duologue::wire::GoodbyeReason::Finished)
        }
        other => panic!("expected PeerFinished, got {other:?}"),
    }
}

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("in time")
}

/// An untyped actor registered as `Owner::actor(&a).serving::<P>()` refuses another protocol in
/// the handshake, and takes its own.
#[tokio::test]
async fn an_untyped_actor_registered_as_serving_a_protocol_refuses_another() {
    let server = listening_node("serving", SECRET).await;
    let (probe, mut seen) = probe().await;
    server
        .register(
            "probe",
            duologue::Owner::actor(&probe).serving::<PingPong>(),
        )
        .expect("name free");
    let client = dialling_node("client", SECRET).await;

    match client
        .connect::<Kv>((&addr(&server), "probe"))
        .inbox()
        .await
        .map(drop)
    {
        Err(ConnectError::ProtocolMismatch { ours, theirs, .. }) => {
            assert_eq!(ours, Kv::name());
            assert_eq!(theirs, PingPong::name());
        }
        other => panic!("expected a protocol mismatch, got {other:?}"),
    }
    assert!(seen.try_recv().is_err(), "nothing reached the probe");

    let (pinger, _inbox) = client
        .connect::<PingPong>((&addr(&server), "probe"))
        .inbox()
        .await
        .expect("its own protocol is taken");
    let pong = pinger
        .call(Ping { n: 7, body: vec![] }, WAIT)
        .await
        .expect("answered");
    assert_eq!(pong.n, 7);
}

/// A reply or push of one kind: even pongs only.
#[derive(Debug, PartialEq)]
struct Even(u64);

impl TryFrom<Pong> for Even {
    type Error = Pong;

    fn try_from(pong: Pong) -> Result<Self, Pong> {
        if pong.n.is_multiple_of(2) {
            Ok(Self(pong.n))
        } else {
            Err(pong)
        }
    }
}

/// `RemoteRef::call_as` and `InboxReceiver::next_as`: the kind asked for, or a typed error
/// naming it; the session goes on either way.
#[tokio::test]
async fn a_reply_or_push_of_another_kind_is_a_typed_error() {
    let server = listening_node("kinds", SECRET).await;
    let (probe, mut seen) = probe().await;
    server.register("probe", &probe).expect("name free");
    let client = dialling_node("client", SECRET).await;
    let (pinger, mut inbox) = client
        .connect::<PingPong>((&addr(&server), "probe"))
        .inbox()
        .await
        .expect("connects");
    let pushing = match next_signal(&mut seen).await {
        SessionSignal::Opened(session) => session,
        other => panic!("expected Opened, got {other:?}"),
    };

    let even: Even = pinger
        .call_as(Ping { n: 4, body: vec![] }, WAIT)
        .await
        .unwrap();
    assert_eq!(even, Even(4));
    match pinger
        .call_as::<Even>(Ping { n: 3, body: vec![] }, WAIT)
        .await
    {
        Err(CallError::UnexpectedReply { expected }) => assert!(expected.ends_with("Even")),
        other => panic!("expected UnexpectedReply, got {other:?}"),
    }

    for n in [5, 6] {
        pushing
            .cast(Pong {
                n,
                deadline_left_ms: 0,
            })
            .await
            .unwrap();
    }
    match bounded(inbox.next_as::<Even>()).await {
        Err(NoMessage::Unexpected { expected }) => assert!(expected.ends_with("Even")),
        other => panic!("expected Unexpected, got {other:?}"),
    }
    assert_eq!(bounded(inbox.next_as::<Even>()).await.unwrap(), Even(6));
}

/// Replies with a body of the size the ping asks for.
struct Echoer;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Echoer {
    type Msg = Mailbox<PingPong>;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        (): &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let Mailbox::Call { request, reply, .. } = message {
            let body = vec![7; request.n as usize];
            // Too large for the session: the send fails, and the caller hears why.
            let _ = reply.into_port().send(&Ping { n: request.n, body });
        }
        Ok(())
    }
}

/// A reply the session cannot take fails the call at once with a typed fault, instead of
/// leaving the caller to its timeout (issue 13, attack 4).
#[tokio::test]
async fn a_reply_too_large_to_send_fails_the_call_with_a_fault() {
    let mut config = duologue::NodeConfig {
        name: "small".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..duologue::NodeConfig::default()
    };
    config.session.max_message_bytes = 64 * 1024;
    let server = node_with(config).await;
    let (echoer, _) = Actor::spawn(None, Echoer, ()).await.unwrap();
    server.register("echo", &echoer).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (echo, _inbox) = client
        .connect::<PingPong>((&addr(&server), "echo"))
        .inbox()
        .await
        .expect("connects");

    let started = std::time::Instant::now();
    match echo
        .call(
            Ping {
                n: 1024 * 1024,
                body: vec![],
            },
            WAIT,
        )
        .await
    {
        Err(CallError::Fault(fault)) => {
            assert_eq!(fault.code, "reply_not_sent");
            assert!(fault.message.contains("exceeds"), "{fault:?}");
        }
        other => panic!("expected a reply_not_sent fault, got {other:?}"),
    }
    assert!(started.elapsed() < WAIT, "answered, not timed out");
    // The session goes on: a reply that fits still comes.
    // The session goes on: a reply that fits still comes (a `Ping`, read untyped).
    let small: Ping = echo
        .session()
        .call(
            &Ping {
                n: 16,
                body: vec![],
            },
            WAIT,
        )
        .await
        .expect("fits");
    assert_eq!(small.body.len(), 16);
}

#[tokio::test]
async fn a_typed_actor_hears_cluster_events_in_its_one_mailbox_beside_its_sessions() {
    let config = duologue::NodeConfig {
        name: "clustered".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        cluster: Some(duologue::settings::ClusterConfig::new(
            "127.0.0.1:0".parse().unwrap(),
        )),
        ..duologue::NodeConfig::default()
    };
    let node = duologue::Node::builder()
        .config(config)
        .secret(duologue::Secret::new(SECRET).unwrap())
        .start()
        .await
        .unwrap();
    let (tx, mut observed) = mpsc::unbounded_channel();
    let (store, _) = Actor::spawn(None, KvStore, tx).await.expect("store starts");
    node.register("store", &store).expect("name free");
    node.subscribe_cluster(&store).unwrap();
    assert_eq!(
        next(&mut observed).await,
        Observed::Cluster(vec!["clustered".into()])
    );
    // Its sessions still arrive in the same mailbox.
    let client = dialling_node("client", SECRET).await;
    let (_kv, _inbox) = client
        .connect::<Kv>((&addr(&node), "store"))
        .inbox()
        .await
        .expect("same protocol connects");
    assert_eq!(next(&mut observed).await, Observed::Opened);
}

/// A typed store that keeps every cast's `Credit` until told to let go, and says how
/// many it holds.
struct Hoarder;

/// The hoarder's own message: drop the credits it holds.
struct Release;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Hoarder {
    type Msg = Mailbox<Kv, Release>;
    type State = (Vec<duologue::flow::Credit>, mpsc::UnboundedSender<usize>);
    type Arguments = mpsc::UnboundedSender<usize>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        holding: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok((Vec::new(), holding))
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        (held, holding): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Mailbox::Cast { credit, .. } => {
                held.push(credit);
                let _ = holding.send(held.len());
            }
            Mailbox::Local(Release) => held.clear(),
            _ => {}
        }
        Ok(())
    }
}

/// A typed actor's messages are decoded before they reach its mailbox, yet the peer's
/// credit still follows consumption: an actor that handles each cast at once but keeps
/// its `Credit` holds the sender back within one window, and dropping the credits lets
/// it send again.
#[tokio::test]
async fn a_typed_actors_credit_is_granted_back_when_dropped_not_when_decoded() {
    const WINDOW: u64 = 50;
    let server = node_with(duologue::NodeConfig {
        name: "server".into(),
        listen: Some(([127, 0, 0, 1], 0).into()),
        session: duologue::settings::SessionConfig {
            credit_window: WINDOW,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (holding_tx, mut holding) = mpsc::unbounded_channel();
    let (hoarder, _) = Actor::spawn(None, Hoarder, holding_tx).await.unwrap();
    server.register("hoard", &hoarder).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (remote, _inbox) = client
        .connect::<Kv>((addr(&server), "hoard"))
        .inbox()
        .await
        .unwrap();
    let put = |n: u64| Put {
        key: n.to_string(),
        value: String::new(),
    };
    let mut sent = 0;
    let held_back = loop {
        match remote.try_cast(put(sent)) {
            Ok(()) => sent += 1,
            Err(duologue::SendError::HeldBack { .. }) => break true,
            Err(other) => panic!("{other}"),
        }
        if sent > 10 * WINDOW {
            break false;
        }
    };
    assert!(
        held_back,
        "{sent} casts and never held back: credit ran ahead of consumption"
    );
    assert!(
        (1..=WINDOW).contains(&sent),
        "{sent} casts within a window of {WINDOW}"
    );

    // Every cast sent is in the store, its credit held.
    while bounded(holding.recv()).await.unwrap() < sent as usize {}
    hoarder.cast(Mailbox::Local(Release)).unwrap();
    bounded(remote.cast(put(sent))).await.unwrap();
}

/// What waits in an inbox is at most one credit window: a peer pushing as fast as it can
/// to a reader that does not read is held back once the window is in the inbox, and the
/// reader then finds every message there.
#[tokio::test]
async fn an_inbox_that_is_not_read_holds_at_most_one_window() {
    const WINDOW: u64 = 16;
    let server = served_probe(listening_node("server", SECRET).await).await;
    let client = node_with(duologue::NodeConfig {
        name: "reader".into(),
        session: duologue::settings::SessionConfig {
            credit_window: WINDOW,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (_remote, mut inbox) = client
        .connect::<PingPong>((addr(&server.node), "probe"))
        .inbox()
        .await
        .unwrap();
    let mut seen = server.seen;
    let pusher = loop {
        if let SessionSignal::Opened(session) = next_signal(&mut seen).await {
            break session;
        }
    };
    let mut pushed = 0;
    let held_back = loop {
        let pong = Pong {
            n: pushed,
            deadline_left_ms: 0,
        };
        match pusher.try_cast(pong) {
            Ok(()) => pushed += 1,
            Err(duologue::SendError::HeldBack { .. }) => break true,
            Err(other) => panic!("{other}"),
        }
        if pushed > 10 * WINDOW {
            break false;
        }
    };
    assert!(held_back, "{pushed} pushed to a reader that reads nothing");
    assert!(
        (1..=WINDOW).contains(&pushed),
        "{pushed} past a window of {WINDOW}"
    );
    let mut read = 0;
    while read < pushed {
        match bounded(inbox.recv()).await {
            Some(duologue::mailbox::InboxEvent::Message(pong)) => {
                assert_eq!(pong.n, read);
                read += 1;
            }
            Some(_) => {}
            None => panic!("the inbox closed after {read}"),
        }
    }
    assert!(
        inbox.len() < WINDOW as usize,
        "{} more waiting",
        inbox.len()
    );
}
