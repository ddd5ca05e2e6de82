//! A hostile client that knows a live session's id (ids travel in clear) tries to resume
//! it: without the session's resume key it must not disturb the session, freeze its
//! traffic, learn whether the id exists, or take the session over, even when it holds
//! the cluster's secret and copies the initiator's identity. A genuine resume after a real
//! cut still works exactly once. The stranger speaks raw frames (hand-written prost
//! messages over a raw gRPC codec), as a client written against `docs/protocol.md` would.

mod support;

use std::time::{Duration, Instant};

use duologue::{
    RemoteRef, SessionRef, SessionSignal,
    wire::{NodeIdentity, PROTOCOL_VERSION},
};
use duologue_testkit::FaultProxy;
use duologue_testkit::raw_peer::*;
use support::*;

/// How long the live session may go without its messages moving while a stranger pokes
/// at it (the attack froze it for about 70 s).
const LIVELY: Duration = Duration::from_secs(3);

fn node_id(identity: &NodeIdentity) -> NodeId {
    NodeId {
        name: identity.name.clone(),
        incarnation: identity.incarnation.as_bytes().to_vec(),
    }
}

/// Someone who knows a session id (it travels in clear) and greets the node with a resume.
struct Stranger {
    from: NodeId,
    nonce: Vec<u8>,
    target: String,
}

impl Stranger {
    /// A stranger with an identity of its own.
    fn new() -> Self {
        Self::posing_as(&NodeIdentity {
            name: "mallory".into(),
            incarnation: uuid::Uuid::new_v4(),
        })
    }

    /// A stranger that copies another node's identity.
    fn posing_as(identity: &NodeIdentity) -> Self {
        Self {
            from: node_id(identity),
            nonce: rand::random::<[u8; 32]>().to_vec(),
            target: "probe".into(),
        }
    }

    fn resume_hello(&self, session: &[u8], acceptor: &NodeIdentity) -> Kind {
        Kind::Hello(Hello {
            session_id: session.to_vec(),
            from: Some(self.from.clone()),
            target: self.target.clone(),
            protocol_version: PROTOCOL_VERSION,
            nonce: self.nonce.clone(),
            max_message_bytes: 1 << 20,
            resume: Some(ResumeRequest {
                last_received: 0,
                acceptor_incarnation: acceptor.incarnation.as_bytes().to_vec(),
            }),
            credit_window: 0,
            credit_window_bytes: 0,
        })
    }

    /// The proof a first handshake takes: the secret is the key. (Before resumes were
    /// bound to the session, this resumed any session whose initiator it copied.)
    fn secret_proof(&self, session: &[u8], challenge: &Challenge) -> Vec<u8> {
        let acceptor = challenge.from.clone().unwrap_or_default();
        mac(
            SECRET.as_bytes(),
            &[
                b"duologue/v1 initiator proof",
                session,
                self.from.name.as_bytes(),
                &self.from.incarnation,
                acceptor.name.as_bytes(),
                &acceptor.incarnation,
                self.target.as_bytes(),
                &self.nonce,
                &challenge.nonce,
            ],
        )
    }

    /// A resume proof keyed with the secret alone (the stranger lacks the session key).
    fn resume_proof_keyed_by_secret(&self, session: &[u8], challenge: &Challenge) -> Vec<u8> {
        let acceptor = challenge.from.clone().unwrap_or_default();
        mac(
            SECRET.as_bytes(),
            &[
                b"duologue/v1 resume proof",
                session,
                self.from.name.as_bytes(),
                &self.from.incarnation,
                acceptor.name.as_bytes(),
                &acceptor.incarnation,
                self.target.as_bytes(),
                &self.nonce,
                &challenge.nonce,
                &0u64.to_be_bytes(),
            ],
        )
    }
}

/// What a stream said, in order, with each `Challenge` reduced to its shape (its nonce
/// and proof are fresh each time).
#[derive(Debug, PartialEq)]
enum Said {
    Challenge,
    Welcome,
    Refuse {
        reason: i32,
        detail: String,
    },
    Other,
    /// Nothing more, and the stream left open.
    Silent,
}

fn said(kind: &Kind) -> Said {
    match kind {
        Kind::Challenge(_) => Said::Challenge,
        Kind::Welcome(_) => Said::Welcome,
        Kind::Refuse(r) => Said::Refuse {
            reason: r.reason,
            detail: r.detail.clone(),
        },
        _ => Said::Other,
    }
}

/// Greets `addr` with a resume of `session`, answers a challenge with `prove`, and
/// returns everything the node said until it ended the stream.
async fn attempt(
    addr: &str,
    stranger: &Stranger,
    session: &[u8],
    acceptor: &NodeIdentity,
    prove: impl FnOnce(&Challenge) -> Vec<u8>,
) -> Vec<Said> {
    let mut stream = RawStream::open(addr, stranger.resume_hello(session, acceptor)).await;
    let mut heard = Vec::new();
    let mut prove = Some(prove);
    loop {
        let kind = match stream.next_within(WAIT / 2).await {
            Ok(Some(kind)) => kind,
            Ok(None) => break,
            Err(()) => {
                heard.push(Said::Silent);
                break;
            }
        };
        heard.push(said(&kind));
        if let (Kind::Challenge(challenge), Some(prove)) = (&kind, prove.take()) {
            stream.send(Kind::Proof(Proof {
                proof: prove(challenge),
            }));
        }
        if heard.len() > 4 {
            break;
        }
    }
    heard
}

// ---- a live session, and checking that it stays undisturbed ---------------------------

/// A probe served on one node and a session to it from another, with its id.
struct Live {
    server: Served,
    client: Dialled,
    remote: RemoteRef<PingPong>,
    /// The acceptor's end of the session.
    session: SessionRef,
    /// Pings sent so far, each way.
    sent: u64,
}

impl Live {
    async fn start() -> Self {
        let (server, client) = probe_session().await;
        Self::from(server, client).await
    }

    async fn from(mut server: Served, client: Dialled) -> Self {
        let remote = client.result.clone().expect("the session opens");
        remote.cast(Ping { n: 0, body: vec![] }).await.unwrap();
        let (n, session) = next_ping(&mut server.seen).await;
        assert_eq!(n, 0);
        Self {
            server,
            client,
            remote,
            session,
            sent: 0,
        }
    }

    /// A live session whose initiator reaches the node through a fault proxy.
    async fn through_proxy() -> (Self, FaultProxy) {
        let server = served_probe(listening_node("server", SECRET).await).await;
        let proxy = FaultProxy::start(server.node.local_addr().unwrap())
            .await
            .unwrap();
        let client = dial(
            dialling_node("client", SECRET).await,
            &proxy.addr().to_string(),
            "probe",
        )
        .await;
        (Self::from(server, client).await, proxy)
    }

    fn id(&self) -> Vec<u8> {
        self.session.id().0.as_bytes().to_vec()
    }

    fn addr(&self) -> String {
        addr(&self.server.node)
    }

    fn acceptor(&self) -> NodeIdentity {
        self.server.node.identity().clone()
    }

    /// Sends `count` more pings each way and checks each side gets exactly the next
    /// numbers, in order, each within [`LIVELY`]; returns the signals either owner saw.
    async fn exchange(&mut self, count: u64) -> Vec<SessionSignal> {
        let numbers = self.sent + 1..=self.sent + count;
        for n in numbers.clone() {
            self.remote.cast(Ping { n, body: vec![] }).await.unwrap();
            self.session.cast(Ping { n, body: vec![] }).await.unwrap();
        }
        self.sent += count;
        let mut signals = Vec::new();
        for rx in [&mut self.server.seen, &mut self.client.owner_seen] {
            let mut got = Vec::new();
            while got.len() < count as usize {
                match tokio::time::timeout(LIVELY, rx.recv()).await {
                    Ok(Some(Seen::Ping { n, .. })) => got.push(n),
                    Ok(Some(Seen::Signal(signal))) => signals.push(signal),
                    Ok(None) => panic!("the probe stopped"),
                    Err(_) => panic!(
                        "traffic froze: {} of pings {numbers:?} arrived within {LIVELY:?} \
                         (signals: {signals:?})",
                        got.len()
                    ),
                }
            }
            assert_eq!(
                got,
                numbers.clone().collect::<Vec<_>>(),
                "exactly once, in order"
            );
        }
        signals
    }

    /// Cuts every connection through `proxy`, then exchanges: the session resumes, with
    /// every message exactly once and no traffic held up longer than [`LIVELY`].
    async fn resumes_after_a_cut(&mut self, proxy: &FaultProxy) {
        assert!(proxy.cut_all() > 0);
        let signals = self.exchange(20).await;
        assert!(
            signals
                .iter()
                .any(|s| matches!(s, SessionSignal::Resumed(..))),
            "{signals:?}"
        );
        assert!(
            !signals
                .iter()
                .any(|s| matches!(s, SessionSignal::Lost(..) | SessionSignal::Closed { .. })),
            "{signals:?}"
        );
    }

    /// Like [`Live::exchange`], and the session was never interrupted meanwhile.
    async fn exchange_undisturbed(&mut self, count: u64) {
        let signals = self.exchange(count).await;
        let disturbed: Vec<_> = signals
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    SessionSignal::Interrupted(..)
                        | SessionSignal::Resumed(..)
                        | SessionSignal::Lost(..)
                        | SessionSignal::Closed { .. }
                )
            })
            .collect();
        assert!(
            disturbed.is_empty(),
            "the live session was disturbed: {disturbed:?}"
        );
        assert!(!self.session.is_closed() && !self.remote.session().is_closed());
    }
}

// ---- the tests ------------------------------------------------------------------------

#[tokio::test]
async fn junk_or_a_wrong_proof_after_a_resume_hello_leaves_the_live_session_alone() {
    let (mut live, proxy) = Live::through_proxy().await;
    live.exchange_undisturbed(20).await;
    let (id, acceptor) = (live.id(), live.acceptor());
    // Strangers without the secret, one with an identity of its own and one copying the
    // initiator's (which the node used to take for the real peer).
    for stranger in [
        Stranger::new(),
        Stranger::posing_as(live.client.node.identity()),
    ] {
        // Hello{resume} naming the live session, then junk.
        let junk = RawStream::open(&live.addr(), stranger.resume_hello(&id, &acceptor)).await;
        junk.send_raw(&[0xff, 0xff, 0xff, 0xff]);
        // Hello{resume}, then a well-formed but wrong proof, the stream left open.
        let mut wrong = RawStream::open(&live.addr(), stranger.resume_hello(&id, &acceptor)).await;
        if let Ok(Some(Kind::Challenge(_))) = wrong.next_within(WAIT).await {
            wrong.send(Kind::Proof(Proof {
                proof: rand::random::<[u8; 32]>().to_vec(),
            }));
        }
        live.exchange_undisturbed(20).await;
        // Neither may stand in the way of the genuine resume after a real cut.
        live.resumes_after_a_cut(&proxy).await;
        live.exchange_undisturbed(20).await;
    }
}

#[tokio::test]
async fn a_parked_resume_hello_does_not_freeze_the_live_session() {
    let (mut live, proxy) = Live::through_proxy().await;
    live.exchange_undisturbed(10).await;
    // Greets the node itself (not through the proxy) as the initiator would, then says
    // nothing more, holding the stream open.
    let stranger = Stranger::posing_as(live.client.node.identity());
    let hello = stranger.resume_hello(&live.id(), &live.acceptor());
    let mut parked = RawStream::open(&live.addr(), hello).await;
    let started = Instant::now();
    for _ in 0..5 {
        live.exchange_undisturbed(10).await;
    }
    assert!(started.elapsed() < LIVELY, "took {:?}", started.elapsed());
    // A real cut: the genuine resume must not wait behind the parked stream.
    live.resumes_after_a_cut(&proxy).await;
    live.exchange_undisturbed(10).await;
    // The parked stream got the challenge any resume gets, and nothing of the session.
    assert!(matches!(
        parked.next_within(WAIT).await,
        Ok(Some(Kind::Challenge(_)))
    ));
}

#[tokio::test]
async fn a_known_session_id_is_refused_exactly_as_an_unknown_one() {
    let live = Live::start().await;
    let unknown = uuid::Uuid::new_v4().as_bytes().to_vec();
    let acceptor = live.acceptor();
    let without_secret = |_: &Challenge| rand::random::<[u8; 32]>().to_vec();

    let stranger = Stranger::new();
    let known = attempt(
        &live.addr(),
        &stranger,
        &live.id(),
        &acceptor,
        without_secret,
    )
    .await;
    let other = attempt(&live.addr(), &stranger, &unknown, &acceptor, without_secret).await;
    assert_eq!(
        known, other,
        "a stranger without the secret tells ids apart"
    );
    assert_eq!(known.first(), Some(&Said::Challenge), "{known:?}");
    assert!(
        matches!(known.last(), Some(Said::Refuse { .. })),
        "{known:?}"
    );

    // A holder of the secret, with the first handshake's proof.
    let id = live.id();
    let known = attempt(&live.addr(), &stranger, &id, &acceptor, |c| {
        stranger.secret_proof(&id, c)
    })
    .await;
    let other = attempt(&live.addr(), &stranger, &unknown, &acceptor, |c| {
        stranger.secret_proof(&unknown, c)
    })
    .await;
    assert_eq!(known, other, "a holder of the secret tells ids apart");
}

#[tokio::test]
async fn a_secret_holder_copying_the_initiator_cannot_take_its_session_over() {
    let mut live = Live::start().await;
    live.exchange_undisturbed(10).await;
    let copycat = Stranger::posing_as(live.client.node.identity());
    let (id, acceptor) = (live.id(), live.acceptor());

    let said = attempt(&live.addr(), &copycat, &id, &acceptor, |c| {
        copycat.secret_proof(&id, c)
    })
    .await;
    assert!(!said.contains(&Said::Welcome), "taken over: {said:?}");
    assert!(matches!(said.last(), Some(Said::Refuse { .. })), "{said:?}");
    live.exchange_undisturbed(10).await;

    let said = attempt(&live.addr(), &copycat, &id, &acceptor, |c| {
        copycat.resume_proof_keyed_by_secret(&id, c)
    })
    .await;
    assert!(!said.contains(&Said::Welcome), "taken over: {said:?}");
    live.exchange_undisturbed(10).await;
}

#[tokio::test]
async fn a_genuine_resume_after_a_cut_still_delivers_exactly_once() {
    let (mut live, proxy) = Live::through_proxy().await;
    live.exchange_undisturbed(20).await;
    // A stranger's failed attempt first: the session key still works afterwards.
    let stranger = Stranger::new();
    attempt(
        &live.addr(),
        &stranger,
        &live.id(),
        &live.acceptor(),
        |_| vec![0; 32],
    )
    .await;

    live.resumes_after_a_cut(&proxy).await;
    live.resumes_after_a_cut(&proxy).await;
    live.exchange(20).await;
}
