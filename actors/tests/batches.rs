//! Batch delivery, asked for by the owner (`Owner::batched`): a run of messages that arrived together is one mailbox
//! message, in order, and calls inside it are answered one by one; `SessionRef::cast_all`
//! takes many messages at once. A typed actor takes runs too (`BatchedMailbox<P, L>`).

mod support;

use duologue::{
    CloseReason, Inbound, LostReason, Mailbox, Node, RemoteRef, SessionSignal,
    mailbox::{BatchedMailbox, BatchedSessionMsg, InboxEvent},
    wire::GoodbyeReason,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use support::*;
use tokio::sync::mpsc;

/// What a batching probe's mailbox took.
#[derive(Debug)]
enum Took {
    /// A message alone: its ping number.
    One(u64),
    /// A batch: its pings' numbers, in order.
    Batch(Vec<u64>),
    Signal,
}

/// Reports what its mailbox takes, and answers each call with a `Pong` of the same `n`.
struct BatchProbe;

/// Answers `inbound` if it is a call; its ping's number.
fn answer(inbound: Inbound) -> Result<u64, ActorProcessingErr> {
    let ping: Ping = inbound.decode()?;
    if inbound.is_call() {
        inbound.reply(&Pong {
            n: ping.n,
            deadline_left_ms: 0,
        })?;
    }
    Ok(ping.n)
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for BatchProbe {
    type Msg = BatchedSessionMsg;
    type State = mpsc::UnboundedSender<Took>;
    type Arguments = mpsc::UnboundedSender<Took>;

    async fn pre_start(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        took: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(took)
    }

    async fn handle(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        message: BatchedSessionMsg,
        took: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let report = match message {
            BatchedSessionMsg::Inbound(inbound) => Took::One(answer(inbound)?),
            BatchedSessionMsg::Batch(batch) => {
                assert!(batch.len() >= 2, "a batch holds two or more messages");
                let session = batch.session().id();
                assert!(batch.iter().all(|m| m.session().id() == session));
                Took::Batch(batch.into_iter().map(answer).collect::<Result<_, _>>()?)
            }
            BatchedSessionMsg::Signal(_) => Took::Signal,
        };
        let _ = took.send(report);
        Ok(())
    }
}

async fn batch_probe() -> (ActorRef<BatchedSessionMsg>, mpsc::UnboundedReceiver<Took>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(None, BatchProbe, tx)
        .await
        .expect("probe starts");
    (actor, rx)
}

/// A node serving a batching probe as "probe", and a session to it from another node.
struct Pair {
    server: Node,
    probe: ActorRef<BatchedSessionMsg>,
    took: mpsc::UnboundedReceiver<Took>,
    remote: RemoteRef<PingPong>,
    owner_seen: mpsc::UnboundedReceiver<Seen>,
    _client: Node,
}

async fn pair() -> Pair {
    let server = listening_node("server", SECRET).await;
    let (probe, took) = batch_probe().await;
    server
        .register("probe", duologue::Owner::batched(&probe))
        .unwrap();
    let Dialled {
        node,
        result,
        owner_seen,
    } = dial(
        dialling_node("client", SECRET).await,
        &addr(&server),
        "probe",
    )
    .await;
    Pair {
        server,
        probe,
        took,
        remote: result.unwrap(),
        owner_seen,
        _client: node,
    }
}

/// The ping numbers the probe took, until it has `n` of them; and how many batches.
async fn take_pings(took: &mut mpsc::UnboundedReceiver<Took>, n: usize) -> (Vec<u64>, usize) {
    let mut pings = Vec::new();
    let mut batches = 0;
    while pings.len() < n {
        match tokio::time::timeout(WAIT, took.recv()).await {
            Ok(Some(Took::One(ping))) => pings.push(ping),
            Ok(Some(Took::Batch(run))) => {
                batches += 1;
                pings.extend(run);
            }
            Ok(Some(Took::Signal)) => {}
            Ok(None) => panic!("the probe stopped"),
            Err(_) => panic!("only {} of {n} pings arrived", pings.len()),
        }
    }
    (pings, batches)
}

fn pings(range: std::ops::Range<u64>) -> Vec<Ping> {
    range.map(|n| Ping { n, body: vec![] }).collect()
}

#[tokio::test]
async fn a_run_that_arrived_together_is_one_mailbox_message_in_order() {
    let Pair {
        mut took,
        remote,
        server: _server,
        _client,
        ..
    } = pair().await;
    // `cast_all` takes each run into the session under one lock, so each leaves in
    // one frame and arrives as one run; single casts between them arrive alone or
    // join a run, in order either way.
    const RUNS: u64 = 50;
    const RUN: u64 = 400;
    for run in 0..RUNS {
        let start = run * (RUN + 1);
        remote
            .session()
            .cast_all(pings(start..start + RUN))
            .await
            .unwrap();
        remote
            .cast(Ping {
                n: start + RUN,
                body: vec![],
            })
            .await
            .unwrap();
    }
    let total = (RUNS * (RUN + 1)) as usize;
    let (got, batches) = take_pings(&mut took, total).await;
    assert_eq!(got, (0..total as u64).collect::<Vec<_>>());
    assert!(
        (1..total).contains(&batches),
        "{batches} batches for {total} messages"
    );
}

#[tokio::test]
async fn calls_in_a_batch_are_answered_one_by_one() {
    let Pair {
        mut took,
        remote,
        server: _server,
        _client,
        ..
    } = pair().await;
    let calls = (0..500).map(|n| remote.call(Ping { n, body: vec![] }, WAIT));
    let answers = futures::future::join_all(calls).await;
    for (n, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().n, n as u64);
    }
    let (mut got, _) = take_pings(&mut took, 500).await;
    got.sort_unstable();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_batch_for_a_stopped_owner_ends_the_session_unconfirmed() {
    let Pair {
        mut took,
        probe,
        remote,
        mut owner_seen,
        server: _server,
        _client,
    } = pair().await;
    remote.session().cast_all(pings(0..10)).await.unwrap();
    take_pings(&mut took, 10).await;
    probe
        .stop_and_wait(None, Some(WAIT))
        .await
        .expect("probe stops");
    // The next run finds the mailbox gone: none of it is confirmed.
    let _ = remote.session().cast_all(pings(10..20)).await;
    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert!(
        matches!(&reason, CloseReason::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::ActorStopped),
        "{reason:?}"
    );
    // The run the stopped owner never took comes back to the sender's owner, whole
    // (after the earlier run, if the session ended before that one's ack came).
    let lost = loop {
        match tokio::time::timeout(WAIT, owner_seen.recv()).await {
            Ok(Some(Seen::Signal(SessionSignal::Lost(lost)))) => break lost,
            Ok(Some(_)) => {}
            other => panic!("no Lost signal: {other:?}"),
        }
    };
    let unconfirmed: Vec<u64> = lost
        .unconfirmed
        .iter()
        .map(|m| m.decode::<Ping>().unwrap().n)
        .collect();
    assert!(
        unconfirmed.ends_with(&(10..20).collect::<Vec<_>>()),
        "{unconfirmed:?}"
    );
}

#[tokio::test]
async fn cast_all_gives_back_what_it_could_not_send() {
    let Pair {
        remote,
        server,
        _client,
        ..
    } = pair().await;
    server.shutdown().await;
    let reason = tokio::time::timeout(WAIT, remote.closed()).await.unwrap();
    assert!(!matches!(reason, CloseReason::Finished), "{reason:?}");
    let unsent = remote
        .session()
        .cast_all(pings(0..5))
        .await
        .unwrap_err()
        .into_message();
    assert_eq!(
        unsent.iter().map(|p| p.n).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

/// Runs of casts (`cast_all`, 1 to 300 at a time) into a batching owner while a proxy
/// resets the connection at random moments: every message arrives exactly once, in
/// order, and every interruption ends in a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_through_resets_arrive_exactly_once_in_order() {
    use rand::Rng;
    use std::time::Duration;

    // A small window: the sender waits for grants all the time, so a reset always finds
    // some of it in flight.
    let server = Node::builder()
        .name("server")
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(duologue::Secret::new(SECRET).unwrap())
        .session_config(duologue::settings::SessionConfig {
            credit_window: 256,
            ..duologue::settings::SessionConfig::default()
        })
        .start()
        .await
        .unwrap();
    let (probe, mut took) = batch_probe().await;
    server
        .register("probe", duologue::Owner::batched(&probe))
        .unwrap();
    let proxy = duologue_testkit::FaultProxy::start(server.local_addr().unwrap())
        .await
        .unwrap();
    let Dialled {
        node: _client,
        result,
        mut owner_seen,
    } = dial(
        dialling_node("client", SECRET).await,
        &proxy.addr().to_string(),
        "probe",
    )
    .await;
    let remote = result.unwrap();

    const RESETS: usize = 20;
    let mut next = 0;
    let mut resets = 0;
    let mut next_reset = tokio::time::Instant::now();
    while resets < RESETS {
        let run = rand::rng().random_range(1..=300);
        let sent =
            tokio::time::timeout(WAIT, remote.session().cast_all(pings(next..next + run))).await;
        match sent {
            Ok(Ok(())) => next += run,
            Ok(Err(error)) => panic!("run from {next} refused: {error}"),
            Err(_) => panic!("the run from {next} waited over {WAIT:?}: the sender stalled"),
        }
        if tokio::time::Instant::now() >= next_reset {
            resets += proxy.reset_all();
            next_reset += Duration::from_millis(rand::rng().random_range(50..=150));
        }
    }
    let (got, batches) = take_pings(&mut took, next as usize).await;
    assert_eq!(got.len(), next as usize);
    assert!(got.iter().copied().eq(0..next), "not exactly once in order");
    assert!(batches > 0, "no batch in {next} messages");
    // Nothing doubled after the last one either: a marker sent now comes next, alone.
    remote
        .cast(Ping {
            n: next,
            body: vec![],
        })
        .await
        .unwrap();
    assert_eq!(take_pings(&mut took, 1).await.0, [next]);
    let (mut interrupted, mut resumed) = (0, 0);
    while let Ok(Some(seen)) = tokio::time::timeout(
        if interrupted > 0 && resumed == interrupted {
            Duration::from_millis(100)
        } else {
            WAIT
        },
        owner_seen.recv(),
    )
    .await
    {
        match seen {
            Seen::Signal(SessionSignal::Interrupted(..)) => interrupted += 1,
            Seen::Signal(SessionSignal::Resumed(..)) => resumed += 1,
            _ => {}
        }
    }
    eprintln!(
        "{next} messages in {batches} batches through {resets} resets: {interrupted} interruptions, {resumed} resumes"
    );
    assert!(
        interrupted >= 1 && resumed == interrupted,
        "{interrupted} / {resumed}"
    );
}

/// The typed probe: the same reports, for an actor whose mailbox is typed.
struct TypedBatchProbe;

/// Answers a typed message if it is a call; its ping's number.
fn answer_typed(message: Mailbox<PingPong>) -> Result<Option<u64>, ActorProcessingErr> {
    Ok(match message {
        Mailbox::Cast { message, .. } => Some(message.n),
        Mailbox::Call { request, reply, .. } => {
            reply.send(Pong {
                n: request.n,
                deadline_left_ms: 0,
            })?;
            Some(request.n)
        }
        Mailbox::Undecodable(undecodable) => panic!("{undecodable:?}"),
        Mailbox::Signal(_) | Mailbox::Cluster(_) => None,
        Mailbox::Local(never) => match never {},
    })
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for TypedBatchProbe {
    type Msg = BatchedMailbox<PingPong>;
    type State = mpsc::UnboundedSender<Took>;
    type Arguments = mpsc::UnboundedSender<Took>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        took: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(took)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        took: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let report = match message {
            BatchedMailbox::One(message) => match answer_typed(message)? {
                Some(n) => Took::One(n),
                None => Took::Signal,
            },
            BatchedMailbox::Batch(messages) => {
                assert!(messages.len() >= 2, "a batch holds two or more messages");
                let mut pings = Vec::new();
                for message in messages {
                    pings.push(answer_typed(message)?.expect("a run holds messages only"));
                }
                Took::Batch(pings)
            }
        };
        let _ = took.send(report);
        Ok(())
    }
}

#[tokio::test]
async fn a_typed_actor_takes_runs_as_one_mailbox_message_decoded_in_order() {
    let server = listening_node("server", SECRET).await;
    let (tx, mut took) = mpsc::unbounded_channel();
    let (probe, _) = Actor::spawn(None, TypedBatchProbe, tx)
        .await
        .expect("probe starts");
    server
        .register("probe", duologue::Owner::batched(&probe))
        .unwrap();
    let Dialled { node, result, .. } = dial(
        dialling_node("client", SECRET).await,
        &addr(&server),
        "probe",
    )
    .await;
    let remote = result.unwrap();
    const RUNS: u64 = 50;
    const RUN: u64 = 400;
    for run in 0..RUNS {
        let start = run * RUN;
        remote
            .session()
            .cast_all(pings(start..start + RUN))
            .await
            .unwrap();
    }
    let total = (RUNS * RUN) as usize;
    let (got, batches) = take_pings(&mut took, total).await;
    assert_eq!(got, (0..total as u64).collect::<Vec<_>>());
    assert!(
        (1..total).contains(&batches),
        "{batches} batches for {total} messages"
    );
    // Calls in a run are answered one by one, each with its own reply.
    let calls = (0..500).map(|n| remote.call(Ping { n, body: vec![] }, WAIT));
    for (n, answer) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap().n, n as u64);
    }
    let (mut got, _) = take_pings(&mut took, 500).await;
    got.sort_unstable();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    probe.stop(None);
    drop((node, server));
}

/// Answers a cast `Ping { n }` with `n` pongs cast back at once (`cast_all`).
struct Pourer;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Pourer {
    type Msg = Mailbox<PingPong>;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let Mailbox::Cast {
            session, message, ..
        } = message
        {
            let pongs = (0..message.n).map(|n| Pong {
                n,
                deadline_left_ms: 0,
            });
            session.cast_all(pongs.collect::<Vec<_>>()).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_inbox_takes_runs_whole_and_hands_them_out_one_by_one_in_order() {
    let server = listening_node("server", SECRET).await;
    let (pourer, _) = Actor::spawn(None, Pourer, ()).await.expect("starts");
    server.register("pourer", &pourer).unwrap();
    let client = dialling_node("client", SECRET).await;
    let (remote, mut inbox) = client
        .connect::<PingPong>((&addr(&server), "pourer"))
        .inbox()
        .await
        .expect("connects");
    const RUN: u64 = 300;
    remote
        .cast(Ping {
            n: RUN,
            body: vec![],
        })
        .await
        .unwrap();
    let mut read = 0;
    while read < RUN {
        match tokio::time::timeout(WAIT, inbox.recv()).await {
            Ok(Some(InboxEvent::Message(pong))) => {
                assert_eq!(pong.n, read, "in order");
                read += 1;
                // What is left of the run still counts as waiting, message by message.
                if read == 1 {
                    assert!(!inbox.is_empty());
                }
            }
            Ok(Some(InboxEvent::Signal(_))) => {}
            Ok(other) => panic!("{other:?}"),
            Err(_) => panic!("only {read} of {RUN} pongs arrived"),
        }
    }
    assert_eq!(inbox.len(), 0);
    assert!(inbox.try_recv().is_none());
    pourer.stop(None);
    drop((client, server));
}

#[test]
fn a_batched_mailbox_gives_each_message_in_order_whether_alone_or_in_a_run() {
    use duologue::Mailbox;
    let locals = |batched: BatchedMailbox<PingPong, u32>| -> Vec<u32> {
        batched
            .into_iter()
            .map(|message| match message {
                Mailbox::Local(n) => n,
                _ => panic!("only local messages were put in"),
            })
            .collect()
    };
    assert_eq!(locals(BatchedMailbox::local(7)), [7]);
    let run = BatchedMailbox::Batch(vec![Mailbox::Local(1), Mailbox::Local(2)]);
    assert_eq!(locals(run), [1, 2]);
}
