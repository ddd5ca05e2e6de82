//! The collaborative editing paradigm across processes: a `duologue node` process hosts
//! the document `notes`, editors live in this process, each on its own node. Concurrent
//! edits, a stream cut in the middle of them, and a late joiner: every replica and the
//! document end with the same text. With the document in this process and small fan-out
//! bounds: an editor that reads slowly slows the others' edits down and misses nothing;
//! one that stops reading holds them back only briefly, and is let go once stuck (its
//! session ended) or at the hard bound (told it fell behind). Every editor reports each
//! merged relay as an event when read, so the tests wait for exactly the relays they
//! expect, each wait bounded.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duologue::LostReason;
use duologue::{
    CloseReason, FlowSignal, Node, NodeConfig, flow::FanoutConfig, settings::SessionConfig,
    wire::GoodbyeReason,
};
use duologue_actors::edit::{self, DocumentConfig, EditEvent, Editor};
use duologue_testkit::{FaultProxy, NodeProcess, SecretDir};
use support::*;

const DOCUMENT: &str = "notes";

/// The document's node process, and the secret to reach it.
struct Docs {
    secrets: SecretDir,
    process: NodeProcess,
}

async fn docs() -> Docs {
    let secrets = SecretDir::create().unwrap();
    let process = NodeProcess::start(
        &duologue_exe(),
        "docs",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            format!("edit:{DOCUMENT}"),
        ],
        WAIT,
    )
    .await
    .expect("the document's node starts");
    Docs { secrets, process }
}

/// An editor on its own node in this process (dropped editor first, then its node).
struct Member {
    editor: Editor,
    _node: Node,
}

impl Docs {
    /// Opens the document as `name`, through `via` when given.
    async fn member(&self, name: &str, via: Option<&FaultProxy>) -> Member {
        let secret = std::fs::read_to_string(self.secrets.secret()).unwrap();
        let node = dialling_node(name, &secret).await;
        let addr = via.map_or(self.process.addr, FaultProxy::addr).to_string();
        let editor = Editor::open(&node, &addr, DOCUMENT, name, WAIT)
            .await
            .expect("the editor opens the document");
        Member {
            editor,
            _node: node,
        }
    }
}

/// Reads `editor`'s events until `done` holds for all read so far, within [`WAIT`].
async fn events_until(
    editor: &mut Editor,
    mut done: impl FnMut(&[EditEvent]) -> bool,
) -> Vec<EditEvent> {
    let mut seen = Vec::new();
    let name = editor.name().to_owned();
    let waited = tokio::time::timeout(WAIT, async {
        while !done(&seen) {
            seen.push(editor.next_event().await.expect("the editor runs"));
        }
    })
    .await;
    assert!(waited.is_ok(), "{name} is still waiting, saw {seen:#?}");
    seen
}

/// Who made each relay merged among `events`, in order.
fn applied(events: &[EditEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            EditEvent::Applied { from, .. } => Some(from.as_str()),
            _ => None,
        })
        .collect()
}

/// Waits until `editor` merged exactly `n` relays; returns all it saw.
async fn merged(editor: &mut Editor, n: usize) -> Vec<EditEvent> {
    let events = events_until(editor, |seen| applied(seen).len() >= n).await;
    assert_eq!(applied(&events).len(), n, "{events:#?}");
    events
}

/// How many times each line occurs in `text`.
fn lines(text: &str) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        *counts.entry(line).or_default() += 1;
    }
    counts
}

fn expected<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts.entry(line).or_default() += 1;
    }
    counts
}

/// Every replica holds `text`, the document answers `text` too, and no relay is left
/// unread (a doubled one would be).
async fn all_hold(members: &mut [&mut Member], text: &str) {
    for member in members.iter_mut() {
        let editor = &mut member.editor;
        assert_eq!(editor.text(), text, "{}'s replica", editor.name());
        let document = editor.sync().await.expect("sync");
        assert_eq!(document, text, "the document, as {} syncs", editor.name());
        assert_eq!(editor.text(), text, "{} after sync", editor.name());
        if let Some(extra) = editor.try_next_event().await {
            panic!("{} has an extra event: {extra:?}", editor.name());
        }
    }
}

/// The lines of `text` that start with `prefix`, in the order they appear.
fn order_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_converge_on_every_replica_and_the_document() {
    let docs = docs().await;
    let mut ann = docs.member("ann", None).await;
    let mut bob = docs.member("bob", None).await;
    let mut cat = docs.member("cat", None).await;

    // Round 1: five edits each at once, appends and inserts at the start racing.
    async fn round_one(editor: &Editor) {
        let name = editor.name();
        for i in 1..=4 {
            editor.append(&format!("{name} line {i}\n")).await.unwrap();
            if i == 2 {
                editor
                    .insert(0, &format!("{name} says hi\n"))
                    .await
                    .unwrap();
            }
        }
    }
    tokio::join!(
        round_one(&ann.editor),
        round_one(&bob.editor),
        round_one(&cat.editor)
    );
    for member in [&mut ann, &mut bob, &mut cat] {
        let events = merged(&mut member.editor, 10).await;
        let name = member.editor.name();
        let from = applied(&events);
        assert!(!from.contains(&name), "{name} got its own edits back");
        for other in ["ann", "bob", "cat"].into_iter().filter(|o| *o != name) {
            assert_eq!(from.iter().filter(|f| **f == other).count(), 5, "{from:?}");
        }
    }
    let first = ann.editor.text();
    let all: Vec<String> = ["ann", "bob", "cat"]
        .iter()
        .flat_map(|n| {
            (1..=4)
                .map(move |i| format!("{n} line {i}"))
                .chain([format!("{n} says hi")])
        })
        .collect();
    assert_eq!(lines(&first), expected(all.iter().map(String::as_str)));
    all_hold(&mut [&mut ann, &mut bob, &mut cat], &first).await;
    for name in ["ann", "bob", "cat"] {
        let own = order_of(&first, &format!("{name} line"));
        let want: Vec<String> = (1..=4).map(|i| format!("{name} line {i}")).collect();
        assert_eq!(own, want, "each editor's lines in its own order");
    }

    // Round 2: ann deletes a line while bob and cat append, all at once.
    let gone = "ann line 2\n";
    let at = u32::try_from(first.find(gone).expect("the line is there")).unwrap();
    tokio::join!(
        async {
            ann.editor
                .delete(at, gone.len() as u32)
                .await
                .expect("delete")
        },
        async { bob.editor.append("bob line 5\n").await.unwrap() },
        async { cat.editor.append("cat line 5\n").await.unwrap() },
    );
    for member in [&mut ann, &mut bob, &mut cat] {
        merged(&mut member.editor, 2).await;
    }
    let last = ann.editor.text();
    let kept = first.replace(gone, "");
    assert!(last.starts_with(&kept), "{last:?}");
    let tail = &last[kept.len()..];
    assert!(
        tail == "bob line 5\ncat line 5\n" || tail == "cat line 5\nbob line 5\n",
        "{tail:?}"
    );
    all_hold(&mut [&mut ann, &mut bob, &mut cat], &last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_cut_in_the_middle_of_edits_loses_and_doubles_nothing() {
    let docs = docs().await;
    let proxy = FaultProxy::start(docs.process.addr).await.unwrap();
    let mut ann = docs.member("ann", None).await;
    let mut bob = docs.member("bob", Some(&proxy)).await;

    let (cut, ()) = tokio::join!(
        async {
            let mut cut = 0;
            for i in 1..=10 {
                bob.editor.append(&format!("bob {i}\n")).await.unwrap();
                if i == 5 {
                    cut = proxy.cut_all();
                }
            }
            cut
        },
        async {
            for i in 1..=10 {
                ann.editor.append(&format!("ann {i}\n")).await.unwrap();
            }
        },
    );
    assert!(cut >= 1, "the cut found bob's connection");

    let seen = events_until(&mut bob.editor, |seen| {
        applied(seen).len() >= 10 && seen.iter().any(|e| matches!(e, EditEvent::Resumed(_)))
    })
    .await;
    assert_eq!(applied(&seen).len(), 10, "{seen:#?}");
    let interrupted = seen
        .iter()
        .position(|e| matches!(e, EditEvent::Interrupted(_)));
    let resumed = seen.iter().position(|e| matches!(e, EditEvent::Resumed(_)));
    assert!(
        matches!((interrupted, resumed), (Some(i), Some(r)) if i < r),
        "bob's session broke, then resumed: {seen:#?}"
    );
    let ann_seen = merged(&mut ann.editor, 10).await;
    assert!(applied(&ann_seen).iter().all(|f| *f == "bob"));

    let text = ann.editor.text();
    let want: Vec<String> = ["ann", "bob"]
        .iter()
        .flat_map(|n| (1..=10).map(move |i| format!("{n} {i}")))
        .collect();
    assert_eq!(lines(&text), expected(want.iter().map(String::as_str)));
    for name in ["ann", "bob"] {
        let own = order_of(&text, &format!("{name} "));
        let want: Vec<String> = (1..=10).map(|i| format!("{name} {i}")).collect();
        assert_eq!(own, want);
    }
    all_hold(&mut [&mut ann, &mut bob], &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_gets_the_whole_text_and_joins_in() {
    let docs = docs().await;
    let mut ann = docs.member("ann", None).await;
    let mut bob = docs.member("bob", None).await;

    tokio::join!(
        async {
            for i in 1..=3 {
                ann.editor.append(&format!("ann {i}\n")).await.unwrap();
            }
        },
        async {
            for i in 1..=3 {
                bob.editor.append(&format!("bob {i}\n")).await.unwrap();
            }
        },
    );
    merged(&mut ann.editor, 3).await;
    merged(&mut bob.editor, 3).await;
    let text = ann.editor.text();
    let at = u32::try_from(text.find("ann 2\n").unwrap()).unwrap();
    ann.editor.delete(at, 6).await.unwrap();
    merged(&mut bob.editor, 1).await;
    bob.editor.insert(0, "# notes\n").await.unwrap();
    merged(&mut ann.editor, 1).await;
    let before = ann.editor.text();
    assert_eq!(bob.editor.text(), before);
    assert!(before.starts_with("# notes\n") && !before.contains("ann 2"));

    // ann leaves: what she wrote stays in the document.
    let Member { editor, _node } = ann;
    assert_eq!(editor.close(WAIT).await, CloseReason::Finished);

    let mut cat = docs.member("cat", None).await;
    assert_eq!(cat.editor.text(), before, "the snapshot holds everything");
    assert!(
        cat.editor.try_next_event().await.is_none(),
        "nothing was replayed to cat"
    );

    cat.editor.append("cat was late\n").await.unwrap();
    let events = merged(&mut bob.editor, 1).await;
    assert_eq!(applied(&events), ["cat"]);
    let after = format!("{before}cat was late\n");
    all_hold(&mut [&mut bob, &mut cat], &after).await;
}

/// An editor on `node`, which opened the document at `addr`.
async fn member_on(node: Node, addr: &str, name: &str) -> Member {
    let editor = Editor::open(&node, addr, DOCUMENT, name, WAIT)
        .await
        .expect("the editor opens the document");
    Member {
        editor,
        _node: node,
    }
}

/// Whether `text`'s lines from `name` are exactly `name 1` to `name n`, in order.
fn holds_first(text: &str, name: &str, n: usize) -> bool {
    let want: Vec<String> = (1..=n).map(|i| format!("{name} {i}")).collect();
    order_of(text, &format!("{name} ")) == want
}

/// A node of this process hosting the document with `fanout`; with its address.
async fn document_here(fanout: FanoutConfig) -> (Node, String) {
    let server = listening_node("docs", SECRET).await;
    edit::host_with(
        &server,
        DocumentConfig {
            name: DOCUMENT.into(),
            fanout,
        },
    )
    .await
    .expect("the document starts");
    let at = addr(&server);
    (server, at)
}

/// ann, whose session takes only `window` relays before she reads any.
async fn slow_reader(addr: &str, window: u64) -> Member {
    let node = node_with(NodeConfig {
        name: "ann".into(),
        session: SessionConfig {
            credit_window: window,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    member_on(node, addr, "ann").await
}

/// Checks that `relays` are relays of `name`'s appends `name 1`, `name 2`, ... each
/// merged in order, none skipped.
fn in_order(relays: &[EditEvent], names: &[&str]) {
    let mut counts = vec![0; names.len()];
    for event in relays {
        let EditEvent::Applied { from, text } = event else {
            panic!("only relays here: {relays:#?}");
        };
        let Some(at) = names.iter().position(|n| n == from) else {
            panic!("a relay from {from}");
        };
        counts[at] += 1;
        for (name, n) in names.iter().zip(&counts) {
            assert!(
                holds_first(text, name, *n),
                "each relay in order, none skipped: {text:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_editor_that_stops_reading_holds_the_others_briefly_then_is_told_at_the_hard_bound() {
    /// Relays the document holds for one editor beyond what its session takes.
    const MAX_LAG: usize = 4;
    /// Relays ann's session takes before she reads any.
    const WINDOW: u64 = 4;
    /// Edits each of bob and cat makes while ann does not read.
    const EDITS: usize = 20;

    let (_server, at) = document_here(FanoutConfig {
        hold_lag: 2,
        // ann reads nothing: bob and cat wait this long for her, then go on.
        hold_at_most: Duration::from_millis(200),
        // Never stuck within the test: the hard bound is what lets her go.
        stuck_after: 3 * WAIT,
        max_lag: MAX_LAG,
        // Long enough for ann to read everything once she starts.
        farewell_timeout: 3 * WAIT,
        ..FanoutConfig::default()
    })
    .await;
    let mut ann = slow_reader(&at, WINDOW).await;
    let mut bob = member_on(dialling_node("bob", SECRET).await, &at, "bob").await;
    let mut cat = member_on(dialling_node("cat", SECRET).await, &at, "cat").await;

    // ann reads nothing while bob and cat exchange many edits: 2 * EDITS relays to her,
    // far beyond what her session takes plus the document's bound. She holds them back
    // for `hold_at_most`, then no longer.
    tokio::join!(
        async {
            for i in 1..=EDITS {
                bob.editor.append(&format!("bob {i}\n")).await.unwrap();
            }
        },
        async {
            for i in 1..=EDITS {
                cat.editor.append(&format!("cat {i}\n")).await.unwrap();
            }
        },
    );
    let from_cat = merged(&mut bob.editor, EDITS).await;
    assert!(applied(&from_cat).iter().all(|f| *f == "cat"));
    let from_bob = merged(&mut cat.editor, EDITS).await;
    assert!(applied(&from_bob).iter().all(|f| *f == "bob"));
    let round_one = bob.editor.text();
    assert!(holds_first(&round_one, "bob", EDITS) && holds_first(&round_one, "cat", EDITS));
    all_hold(&mut [&mut bob, &mut cat], &round_one).await;

    // And they keep going.
    tokio::join!(
        async { bob.editor.insert(0, "# bob's list\n").await.unwrap() },
        async { cat.editor.append("cat is done\n").await.unwrap() },
    );
    merged(&mut bob.editor, 1).await;
    merged(&mut cat.editor, 1).await;
    let document = bob.editor.text();
    all_hold(&mut [&mut bob, &mut cat], &document).await;
    assert_eq!(ann.editor.text(), "", "ann merged nothing she did not read");

    // ann reads at last: the relays the document had taken for her, in order and none
    // skipped, then the notice, on which she reopened and resynced.
    let seen = events_until(&mut ann.editor, |seen| {
        matches!(seen.last(), Some(EditEvent::FellBehind { .. }))
    })
    .await;
    let (told, relays) = seen.split_last().expect("events");
    assert_eq!(
        told,
        &EditEvent::FellBehind {
            text: document.clone()
        }
    );
    assert!(
        !relays.is_empty() && relays.len() <= WINDOW as usize + MAX_LAG,
        "at most what her session took and the document held for her: {seen:#?}"
    );
    in_order(relays, &["bob", "cat"]);
    assert_eq!(ann.editor.text(), document);

    // Back in step, ann edits and everyone hears it.
    ann.editor.append("ann is back\n").await.unwrap();
    for member in [&mut bob, &mut cat] {
        let events = merged(&mut member.editor, 1).await;
        assert_eq!(applied(&events), ["ann"]);
    }
    let last = format!("{document}ann is back\n");
    all_hold(&mut [&mut ann, &mut bob, &mut cat], &last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_editor_that_does_not_read_its_notice_in_time_is_cut_off_and_reopens() {
    const MAX_LAG: usize = 2;
    const WINDOW: u64 = 2;
    const EDITS: usize = 10;
    let (_server, at) = document_here(FanoutConfig {
        hold_lag: 1,
        hold_at_most: Duration::from_millis(100),
        stuck_after: 3 * WAIT,
        max_lag: MAX_LAG,
        farewell_timeout: Duration::from_millis(100),
        ..FanoutConfig::default()
    })
    .await;
    let mut ann = slow_reader(&at, WINDOW).await;
    let mut bob = member_on(dialling_node("bob", SECRET).await, &at, "bob").await;
    for i in 1..=EDITS {
        bob.editor.append(&format!("bob {i}\n")).await.unwrap();
    }
    // The document merged (and relayed) every edit once it answers with all of them.
    let document = bob.editor.sync().await.unwrap();
    assert!(holds_first(&document, "bob", EDITS));

    // ann does not read: the document ends her session once the farewell timeout passed.
    let reason = tokio::time::timeout(WAIT, ann.editor.session().closed())
        .await
        .expect("ann's session ends within the wait bound");
    let CloseReason::Lost(LostReason::PeerEnded(goodbye)) = &reason else {
        panic!("the document ended ann's session: {reason:?}");
    };
    assert_eq!(goodbye.reason, GoodbyeReason::LimitExceeded, "{goodbye:?}");

    // When she reads: the relays her session had taken, in order, then the loss.
    let seen = events_until(&mut ann.editor, |seen| {
        matches!(seen.last(), Some(EditEvent::Lost(_)))
    })
    .await;
    let (lost, relays) = seen.split_last().expect("events");
    assert!(
        matches!(lost, EditEvent::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::LimitExceeded),
        "{lost:?}"
    );
    assert!(relays.len() <= WINDOW as usize, "{seen:#?}");
    in_order(relays, &["bob"]);

    // Reopening brings her in step.
    assert_eq!(ann.editor.reopen().await.expect("reopen"), document);
    assert_eq!(ann.editor.text(), document);
    ann.editor.append("ann is back\n").await.unwrap();
    assert_eq!(applied(&merged(&mut bob.editor, 1).await), ["ann"]);
    all_hold(
        &mut [&mut ann, &mut bob],
        &format!("{document}ann is back\n"),
    )
    .await;
}

/// A node of this process hosting the document with `fanout`, whose sessions grant
/// editors `window` messages of credit and never pause them of their own accord: what
/// pauses an editor there is the fan-out's hold. With its address.
async fn document_with_window(fanout: FanoutConfig, window: u64) -> (Node, String) {
    let server = node_with(NodeConfig {
        name: "docs".into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        session: SessionConfig {
            credit_window: window,
            flow_high_watermark: None,
            ..SessionConfig::default()
        },
        ..NodeConfig::default()
    })
    .await;
    edit::host_with(
        &server,
        DocumentConfig {
            name: DOCUMENT.into(),
            fanout,
        },
    )
    .await
    .expect("the document starts");
    let at = addr(&server);
    (server, at)
}

/// Whether the document pauses `editor`'s session now.
fn paused(editor: &Editor) -> bool {
    editor.session().flow().peer_signal == Some(FlowSignal::Pause)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_editor_that_reads_slowly_slows_the_writers_and_misses_nothing() {
    /// Relays waiting for ann that hold the writers back.
    const HOLD_LAG: usize = 4;
    /// The hard bound: far below the edits, so ann would be let go if bob were not held.
    const MAX_LAG: usize = 32;
    /// Relays ann's session takes before she reads any.
    const WINDOW: u64 = 2;
    /// Edits the document takes from an editor before it consumed them.
    const SERVER_WINDOW: u64 = 4;
    /// Edits bob makes as fast as he may.
    const EDITS: usize = 120;
    /// How many relays can be ahead of ann's reading while the hold works: her window,
    /// her outbox up to the soft bound, bob's edits in flight when the pause went out;
    /// twice that, to spare.
    const AHEAD: usize = 2 * (WINDOW as usize + HOLD_LAG + 1 + 2 * SERVER_WINDOW as usize);

    let (_server, at) = document_with_window(
        FanoutConfig {
            hold_lag: HOLD_LAG,
            max_lag: MAX_LAG,
            // ann never stops reading for this long: she holds bob back throughout.
            hold_at_most: WAIT,
            stuck_after: 2 * WAIT,
            farewell_timeout: WAIT,
            ..FanoutConfig::default()
        },
        SERVER_WINDOW,
    )
    .await;
    let mut ann = slow_reader(&at, WINDOW).await;
    let bob = member_on(dialling_node("bob", SECRET).await, &at, "bob").await;
    let mut cat = member_on(dialling_node("cat", SECRET).await, &at, "cat").await;

    let read_by_ann = AtomicUsize::new(0);
    let (ann_seen, cat_seen, read_when_bob_done) = tokio::join!(
        async {
            // ann reads nothing until her backlog has bob paused...
            let held = tokio::time::timeout(WAIT, async {
                while !paused(&bob.editor) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await;
            assert!(held.is_ok(), "bob is paused while ann is behind");
            // ...then reads one event every few milliseconds: slower than bob edits.
            let name = ann.editor.name().to_owned();
            let mut seen = Vec::new();
            let read = tokio::time::timeout(2 * WAIT, async {
                while applied(&seen).len() < EDITS {
                    let event = ann.editor.next_event().await.expect("ann's editor runs");
                    let merged = matches!(event, EditEvent::Applied { .. });
                    seen.push(event);
                    if merged {
                        read_by_ann.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(
                read.is_ok(),
                "{name} is still reading, saw {} events",
                seen.len()
            );
            seen
        },
        // cat reads as fast as she can.
        merged(&mut cat.editor, EDITS),
        async {
            for i in 1..=EDITS {
                bob.editor.append(&format!("bob {i}\n")).await.unwrap();
            }
            read_by_ann.load(Ordering::SeqCst)
        },
    );

    // Every relay reached ann, in order, and nothing else: she was never let go.
    assert_eq!(ann_seen.len(), EDITS, "only relays: {ann_seen:#?}");
    in_order(&ann_seen, &["bob"]);
    in_order(&cat_seen, &["bob"]);
    // bob could not run ahead of her reading by more than the hold lets through.
    assert!(
        read_when_bob_done + AHEAD >= EDITS,
        "bob finished when ann had read {read_when_bob_done} of {EDITS} relays"
    );
    let text = ann.editor.text();
    assert!(holds_first(&text, "bob", EDITS), "{text:?}");
    let released = tokio::time::timeout(WAIT, async {
        while paused(&bob.editor) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(released.is_ok(), "the hold ends once ann caught up");

    // ann is still an editor of the document: she edits, and everyone hears it.
    ann.editor.append("ann read it all\n").await.unwrap();
    let mut bob = bob;
    for member in [&mut bob, &mut cat] {
        assert_eq!(applied(&merged(&mut member.editor, 1).await), ["ann"]);
    }
    let last = format!("{text}ann read it all\n");
    all_hold(&mut [&mut ann, &mut bob, &mut cat], &last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_editor_that_stops_reading_is_let_go_once_stuck_while_the_others_go_on() {
    const WINDOW: u64 = 2;
    const EDITS: usize = 20;
    const HOLD_AT_MOST: Duration = Duration::from_millis(200);
    const STUCK_AFTER: Duration = Duration::from_millis(1500);
    /// How late after `STUCK_AFTER` the end may come on a loaded machine.
    const LATE: Duration = Duration::from_secs(5);

    let (_server, at) = document_here(FanoutConfig {
        hold_lag: 2,
        hold_at_most: HOLD_AT_MOST,
        stuck_after: STUCK_AFTER,
        // Far beyond what piles up within the test: being stuck is what lets her go.
        max_lag: 10_000,
        farewell_timeout: WAIT,
        ..FanoutConfig::default()
    })
    .await;
    let mut ann = slow_reader(&at, WINDOW).await;
    let mut bob = member_on(dialling_node("bob", SECRET).await, &at, "bob").await;
    let mut cat = member_on(dialling_node("cat", SECRET).await, &at, "cat").await;

    // ann reads nothing from here on. bob edits; cat hears all of it, held back by ann
    // for at most `hold_at_most`.
    let started = Instant::now();
    let ((), from_bob) = tokio::join!(
        async {
            for i in 1..=EDITS {
                bob.editor.append(&format!("bob {i}\n")).await.unwrap();
            }
        },
        merged(&mut cat.editor, EDITS),
    );
    in_order(&from_bob, &["bob"]);

    // ann's session is ended once she took nothing for `stuck_after` with relays waiting
    // (her first relay waited after `started`), not long after.
    let reason = tokio::time::timeout(STUCK_AFTER + LATE, ann.editor.session().closed())
        .await
        .expect("ann's session ends soon after stuck_after");
    let elapsed = started.elapsed();
    // (Timer granularity aside.)
    assert!(
        elapsed + Duration::from_millis(20) >= STUCK_AFTER,
        "ended after {elapsed:?}, before stuck_after"
    );
    let CloseReason::Lost(LostReason::PeerEnded(goodbye)) = &reason else {
        panic!("the document ended ann's session: {reason:?}");
    };
    assert_eq!(goodbye.reason, GoodbyeReason::LimitExceeded, "{goodbye:?}");
    assert!(goodbye.detail.contains("stuck"), "{goodbye:?}");

    // The others went on meanwhile, and still do.
    bob.editor.append("bob, again\n").await.unwrap();
    assert_eq!(applied(&merged(&mut cat.editor, 1).await), ["bob"]);
    let document = bob.editor.sync().await.unwrap();
    assert!(holds_first(&document, "bob", EDITS) && document.ends_with("bob, again\n"));
    all_hold(&mut [&mut bob, &mut cat], &document).await;

    // When ann reads: the relays her session had taken, in order, then the loss.
    let seen = events_until(&mut ann.editor, |seen| {
        matches!(seen.last(), Some(EditEvent::Lost(_)))
    })
    .await;
    let (lost, relays) = seen.split_last().expect("events");
    assert!(
        matches!(lost, EditEvent::Lost(LostReason::PeerEnded(g)) if g.reason == GoodbyeReason::LimitExceeded),
        "{lost:?}"
    );
    assert!(
        !relays.is_empty() && relays.len() <= WINDOW as usize,
        "{seen:#?}"
    );
    in_order(relays, &["bob"]);

    // Reopening brings her in step.
    assert_eq!(ann.editor.reopen().await.expect("reopen"), document);
    ann.editor.append("ann is back\n").await.unwrap();
    for member in [&mut bob, &mut cat] {
        assert_eq!(applied(&merged(&mut member.editor, 1).await), ["ann"]);
    }
    all_hold(
        &mut [&mut ann, &mut bob, &mut cat],
        &format!("{document}ann is back\n"),
    )
    .await;
}

/// Waits, within [`WAIT`], until `node` holds session `id` in `state`.
async fn until_state(
    node: &Node,
    id: duologue::wire::SessionId,
    state: duologue::status::SessionState,
) {
    let reached = tokio::time::timeout(WAIT, async {
        while !node
            .status()
            .sessions
            .iter()
            .any(|s| s.id == id && s.state == state)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "session {id} never {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_editor_holds_no_one_back_and_gets_every_relay_once_resumed() {
    const WINDOW: u64 = 2;
    const MAX_LAG: usize = 4;
    /// Far more than ann's window and the hard bound together.
    const EDITS: usize = 20;

    // bob's edits reach the document one at a time: were ann taken for a slow reader,
    // the pause would stop bob before her outbox reached the hard bound.
    let (server, at) = document_with_window(
        FanoutConfig {
            hold_lag: 2,
            max_lag: MAX_LAG,
            // Were ann held to be slow, bob would wait this long: longer than the test
            // allows.
            hold_at_most: 3 * WAIT,
            stuck_after: 3 * WAIT,
            farewell_timeout: WAIT,
            ..FanoutConfig::default()
        },
        1,
    )
    .await;
    let proxy = FaultProxy::start(at.parse().unwrap()).await.unwrap();
    let mut ann = slow_reader(&proxy.addr().to_string(), WINDOW).await;
    let mut bob = member_on(dialling_node("bob", SECRET).await, &at, "bob").await;

    // ann's stream breaks, and no new one gets through: the document sees her session
    // interrupted.
    proxy.set_blackhole(true);
    assert!(proxy.cut_all() >= 1, "the cut found ann's connection");
    let session = ann.editor.session().id();
    until_state(
        &server,
        session,
        duologue::status::SessionState::Interrupted,
    )
    .await;

    // bob edits far past ann's window and the hard bound: ann holds him back for none of
    // it, and is not let go (what she is owed waits for her, within the replay budgets).
    let edited = tokio::time::timeout(WAIT, async {
        for i in 1..=EDITS {
            bob.editor.append(&format!("bob {i}\n")).await.unwrap();
        }
    })
    .await;
    assert!(edited.is_ok(), "bob was held back by an interrupted editor");
    assert!(!paused(&bob.editor));
    let document = bob.editor.sync().await.unwrap();
    assert!(holds_first(&document, "bob", EDITS));

    // ann's stream comes back: her session resumes, and she reads every relay, in order,
    // between the interruption and the resume or after it, never told she fell behind.
    proxy.set_blackhole(false);
    let seen = events_until(&mut ann.editor, |seen| applied(seen).len() >= EDITS).await;
    let relays: Vec<EditEvent> = seen
        .iter()
        .filter(|e| matches!(e, EditEvent::Applied { .. }))
        .cloned()
        .collect();
    assert_eq!(relays.len(), EDITS, "{seen:#?}");
    in_order(&relays, &["bob"]);
    let others: Vec<&EditEvent> = seen
        .iter()
        .filter(|e| !matches!(e, EditEvent::Applied { .. }))
        .collect();
    assert!(
        others
            .iter()
            .all(|e| matches!(e, EditEvent::Interrupted(_) | EditEvent::Resumed(_))),
        "only the interruption and the resume besides the relays: {seen:#?}"
    );
    assert!(
        others.iter().any(|e| matches!(e, EditEvent::Resumed(_))),
        "{seen:#?}"
    );
    assert_eq!(ann.editor.text(), document);
    all_hold(&mut [&mut ann, &mut bob], &document).await;
}
