//! The store's watchers under the fan-out's policy, all in this process, with small
//! bounds: a watcher that reads slowly slows the key's writers down and misses no change,
//! and never pauses another watcher's session; one that stops reading holds the writers
//! back only briefly and is let go once stuck, its session ended with the reason, while
//! the others go on. Every wait is bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duologue::{
    CloseReason, FlowSignal, InboxReceiver, LostReason, Node, NodeConfig, RemoteRef, Secret,
    SessionRef, flow::FanoutConfig, mailbox::NoMessage, settings::SessionConfig,
    wire::GoodbyeReason,
};
use kv::proto::{Changed, Get, Put, Value, Watch};
use kv::{Kv, Store};
use ractor::Actor;

/// Upper bound of any single wait.
const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "the kv watchers' test secret, 32+ bytes";
const KEY: &str = "colour";

/// A node of this process from `config`.
async fn node(config: NodeConfig) -> Node {
    Node::builder()
        .config(config)
        .secret(Secret::new(SECRET).unwrap())
        .start()
        .await
        .expect("the node starts")
}

/// A node whose sessions grant their peers `window` messages of credit (the default when
/// `None`) and never pause them of their own accord.
async fn node_with_window(name: &str, listen: bool, window: Option<u64>) -> Node {
    let defaults = SessionConfig::default();
    node(NodeConfig {
        name: name.into(),
        listen: listen.then(|| "127.0.0.1:0".parse().unwrap()),
        session: SessionConfig {
            credit_window: window.unwrap_or(defaults.credit_window),
            flow_high_watermark: None,
            ..defaults
        },
        ..NodeConfig::default()
    })
    .await
}

/// The store `store` on a node of its own, with `watchers` as its fan-outs' bounds.
async fn store(watchers: FanoutConfig, window: Option<u64>) -> (Node, String) {
    let server = node_with_window("kv", true, window).await;
    let (store, _) = Actor::spawn(None, Store { watchers }, ()).await.unwrap();
    server.register("store", &store).unwrap();
    let addr = server.local_addr().unwrap().to_string();
    (server, addr)
}

/// A client of the store on a node of its own (dropped after its session).
struct Client {
    store: RemoteRef<Kv>,
    pushed: InboxReceiver<Kv>,
    _node: Node,
}

impl Client {
    async fn new(name: &str, addr: &str, window: Option<u64>) -> Self {
        let node = node_with_window(name, false, window).await;
        let (store, pushed) = node.connect::<Kv>((addr, "store")).inbox().await.unwrap();
        Self { store, pushed, _node: node }
    }

    /// Watches `KEY`; returns its value now.
    async fn watch(&self) -> Value {
        self.store.call_as(Watch { key: KEY.into() }, WAIT).await.expect("watching")
    }

    /// The next change pushed, within [`WAIT`].
    async fn change(&mut self) -> Result<Changed, NoMessage> {
        change(&mut self.pushed).await
    }

    fn session(&self) -> SessionRef {
        self.store.session()
    }
}

/// The next change pushed, within [`WAIT`].
async fn change(pushed: &mut InboxReceiver<Kv>) -> Result<Changed, NoMessage> {
    tokio::time::timeout(WAIT, pushed.next_as()).await.expect("a change in time")
}

/// Reads `n` changes, one every `pace`; checks they are `1`, `2`, ... in order, and counts
/// each in `read`.
async fn read_in_order(
    pushed: &mut InboxReceiver<Kv>,
    n: usize,
    pace: Duration,
    read: &AtomicUsize,
) {
    for i in 1..=n {
        let change = change(pushed).await.unwrap_or_else(|e| panic!("change {i}: {e}"));
        assert_eq!((change.key.as_str(), change.value), (KEY, i.to_string().into_bytes()));
        read.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(pace).await;
    }
}

fn put(i: usize) -> Put {
    Put { key: KEY.into(), value: i.to_string().into_bytes() }
}

/// Whether the store pauses `session` now.
fn paused(session: &SessionRef) -> bool {
    session.flow().peer_signal == Some(FlowSignal::Pause)
}

/// Waits, within [`WAIT`], until `paused(session)` is `want`.
async fn until_paused(session: &SessionRef, want: bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while paused(session) != want {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the session is still {}paused", if want { "not " } else { "" });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reads_slowly_slows_the_writers_and_misses_nothing() {
    /// Changes waiting for a watcher that hold the writers back.
    const HOLD_LAG: usize = 4;
    /// The hard bound: far below the puts, so the slow watcher would be let go if the
    /// writer were not held back.
    const MAX_LAG: usize = 32;
    /// Changes the slow watcher's session takes before it reads any.
    const WINDOW: u64 = 2;
    /// Puts the store takes from the writer before it consumed them.
    const SERVER_WINDOW: u64 = 4;
    /// Puts the writer makes as fast as it may.
    const PUTS: usize = 120;
    /// How many changes can be ahead of the slow watcher's reading while the hold works:
    /// its window, its outbox up to the soft bound, the puts in flight when the pause went
    /// out; twice that, to spare.
    const AHEAD: usize = 2 * (WINDOW as usize + HOLD_LAG + 1 + 2 * SERVER_WINDOW as usize);

    let (_server, addr) = store(
        FanoutConfig {
            hold_lag: HOLD_LAG,
            max_lag: MAX_LAG,
            // The slow watcher never stops reading for this long.
            hold_at_most: WAIT,
            stuck_after: 2 * WAIT,
            farewell_timeout: WAIT,
            ..FanoutConfig::default()
        },
        Some(SERVER_WINDOW),
    )
    .await;
    let mut slow = Client::new("slow", &addr, Some(WINDOW)).await;
    let mut fast = Client::new("fast", &addr, None).await;
    let writer = Client::new("writer", &addr, None).await;
    assert_eq!(slow.watch().await.value, None);
    assert_eq!(fast.watch().await.value, None);

    let (read_by_slow, read_by_fast) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (fast_store, fast_pushed) = (&fast.store, &mut fast.pushed);
    let ((), (), read_when_done) = tokio::join!(
        async {
            // The slow watcher reads nothing until its backlog has the writer paused...
            until_paused(&writer.session(), true).await;
            // ...which pauses no watcher: the fast one's session still serves its calls.
            let started = Instant::now();
            let now: Value = fast_store.call_as(Get { key: KEY.into() }, WAIT).await.unwrap();
            assert!(now.value.is_some(), "{now:?}");
            assert!(!paused(&fast_store.session()), "a watcher's session is not held back");
            assert!(paused(&writer.session()), "the writer still is");
            assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
            // ...then reads one change every few milliseconds: slower than the writer puts.
            read_in_order(&mut slow.pushed, PUTS, Duration::from_millis(5), &read_by_slow).await;
        },
        read_in_order(fast_pushed, PUTS, Duration::ZERO, &read_by_fast),
        async {
            for i in 1..=PUTS {
                writer.store.cast(put(i)).await.expect("the put is sent");
            }
            read_by_slow.load(Ordering::SeqCst)
        },
    );

    // Every change reached both watchers, in order (checked as read), and the writer could
    // not run ahead of the slow one's reading by more than the hold lets through.
    assert_eq!(read_by_fast.load(Ordering::SeqCst), PUTS);
    assert!(
        read_when_done + AHEAD >= PUTS,
        "the writer was done when the slow watcher had read {read_when_done} of {PUTS} changes"
    );
    until_paused(&writer.session(), false).await;

    // The slow watcher is still one, and nothing else waits for it.
    let last: Value = writer.store.call_as(put(PUTS + 1), WAIT).await.unwrap();
    assert_eq!(last.value, Some(PUTS.to_string().into_bytes()), "{last:?}");
    let change = slow.change().await.expect("still watching");
    assert_eq!(change.value, (PUTS + 1).to_string().into_bytes());
    assert!(slow.pushed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_let_go_once_stuck_while_the_others_go_on() {
    const WINDOW: u64 = 2;
    const PUTS: usize = 20;
    const STUCK_AFTER: Duration = Duration::from_millis(1500);
    /// How late after `STUCK_AFTER` the end may come on a loaded machine.
    const LATE: Duration = Duration::from_secs(5);

    let (_server, addr) = store(
        FanoutConfig {
            hold_lag: 2,
            hold_at_most: Duration::from_millis(200),
            stuck_after: STUCK_AFTER,
            // Far beyond what piles up within the test: being stuck is what lets it go.
            max_lag: 100_000,
            farewell_timeout: WAIT,
            ..FanoutConfig::default()
        },
        None,
    )
    .await;
    let mut stopped = Client::new("stopped", &addr, Some(WINDOW)).await;
    let mut fast = Client::new("fast", &addr, None).await;
    let writer = Client::new("writer", &addr, None).await;
    stopped.watch().await;
    fast.watch().await;

    // The stopped watcher reads nothing from here on. The writer's puts (calls: each
    // waits for its answer) go on after at most `hold_at_most` held back; the fast watcher
    // gets every change.
    let started = Instant::now();
    let read_by_fast = AtomicUsize::new(0);
    let ((), ()) = tokio::join!(
        async {
            for i in 1..=PUTS {
                let _: Value = writer.store.call_as(put(i), WAIT).await.expect("the put");
            }
        },
        read_in_order(&mut fast.pushed, PUTS, Duration::ZERO, &read_by_fast),
    );

    // The stopped watcher's session is ended once it took nothing for `stuck_after` with
    // changes waiting (the first waited after `started`), not long after.
    let reason = tokio::time::timeout(STUCK_AFTER + LATE, stopped.session().closed())
        .await
        .expect("the stopped watcher's session ends soon after stuck_after");
    let elapsed = started.elapsed();
    // (Timer granularity aside.)
    assert!(elapsed + Duration::from_millis(20) >= STUCK_AFTER, "ended after {elapsed:?}");
    let CloseReason::Lost(LostReason::PeerEnded(goodbye)) = &reason else {
        panic!("the store ended the session: {reason:?}");
    };
    assert_eq!(goodbye.reason, GoodbyeReason::LimitExceeded, "{goodbye:?}");
    assert!(goodbye.detail.contains("stuck"), "{goodbye:?}");

    // The others go on.
    let _: Value = writer.store.call_as(put(PUTS + 1), WAIT).await.expect("the put");
    let change = fast.change().await.expect("still watching");
    assert_eq!(change.value, (PUTS + 1).to_string().into_bytes());

    // When the stopped watcher reads: the changes its session had taken, in order, then
    // the loss, saying why.
    for i in 1..=WINDOW as usize {
        let change = stopped.change().await.unwrap_or_else(|e| panic!("change {i}: {e}"));
        assert_eq!(change.value, i.to_string().into_bytes());
    }
    match stopped.change().await {
        Err(NoMessage::Lost(lost)) => assert!(
            matches!(&lost.reason, LostReason::PeerEnded(g) if g.reason == GoodbyeReason::LimitExceeded),
            "{:?}",
            lost.reason
        ),
        other => panic!("expected the loss, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_watcher_holds_no_one_back_and_gets_every_change_once_resumed() {
    const WINDOW: u64 = 2;
    const MAX_LAG: usize = 4;
    /// Far more than the watcher's window and the hard bound together.
    const PUTS: usize = 20;

    // The writer's puts reach the store one at a time: were the watcher taken for a slow
    // reader, the pause would stop the writer before its outbox reached the hard bound.
    let (server, addr) = store(
        FanoutConfig {
            hold_lag: 2,
            max_lag: MAX_LAG,
            // Were the watcher held to be slow, the writer would wait this long: longer
            // than the test allows.
            hold_at_most: 3 * WAIT,
            stuck_after: 3 * WAIT,
            farewell_timeout: WAIT,
            ..FanoutConfig::default()
        },
        Some(1),
    )
    .await;
    let proxy = duologue_testkit::FaultProxy::start(addr.parse().unwrap()).await.unwrap();
    let mut watcher = Client::new("watcher", &proxy.addr().to_string(), Some(WINDOW)).await;
    let writer = Client::new("writer", &addr, None).await;
    watcher.watch().await;

    // The watcher's stream breaks, and no new one gets through: the store sees its session
    // interrupted.
    proxy.set_blackhole(true);
    assert!(proxy.cut_all() >= 1, "the cut found the watcher's connection");
    let id = watcher.session().id();
    let interrupted = tokio::time::timeout(WAIT, async {
        while !server
            .status()
            .sessions
            .iter()
            .any(|s| s.id == id && s.state == duologue::status::SessionState::Interrupted)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(interrupted.is_ok(), "the store sees the watcher's session interrupted");

    // The writer puts far past the watcher's window and the hard bound: it is not held
    // back, and the watcher is not let go.
    let put_all = tokio::time::timeout(WAIT, async {
        for i in 1..=PUTS {
            writer.store.cast(put(i)).await.expect("the put is sent");
        }
        let _: Value = writer.store.call_as(Get { key: KEY.into() }, WAIT).await.unwrap();
    })
    .await;
    assert!(put_all.is_ok(), "the writer was held back by an interrupted watcher");
    assert!(!paused(&writer.session()));

    // Its stream comes back: the session resumes, and it reads every change, in order.
    proxy.set_blackhole(false);
    let read = AtomicUsize::new(0);
    read_in_order(&mut watcher.pushed, PUTS, Duration::ZERO, &read).await;
    assert!(watcher.pushed.is_empty());
}
