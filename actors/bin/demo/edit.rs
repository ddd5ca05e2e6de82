//! `duologue demo edit`: collaborative editing across processes on 127.0.0.1. A shared
//! document on one node process; editors on nodes of this process, each with its own
//! replica. Concurrent edits, a stream cut in the middle of edits (bob talks through a
//! fault-injecting proxy), a late joiner; after each step every replica's text is shown,
//! and at the end every replica and the document must hold the same text. Every child
//! is killed on every exit path.

use std::path::Path;
use std::time::Instant;

use duologue::Node;
use duologue_actors::edit::{EditEvent, Editor};
use duologue_testkit::Signal;
use duologue_testkit::progress::Summary;
use duologue_testkit::{ClusterError, FaultProxy, NodeProcess, SecretDir};

use super::STEP;

const DOCUMENT: &str = "list";

pub(crate) async fn run() -> Result<Summary, ClusterError> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let secrets = SecretDir::create()?;

    say!("duologue demo: edit");
    say!("  a shared document on one node process, editors on nodes of this one, 127.0.0.1");
    say!("  (the text is a yrs CRDT: replicas merge each other's updates in any order)\n");
    let mut docs = NodeProcess::start(
        &exe,
        "docs",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            format!("edit:{DOCUMENT}"),
        ],
        STEP,
    )
    .await?;
    say!(
        "  node docs  pid {:<7} listening on {}, hosting document {DOCUMENT:?}",
        docs.child.pid().unwrap_or(0),
        docs.addr
    );
    let proxy = FaultProxy::start(docs.addr).await?;
    let (_ann_node, mut ann) = open(secrets.secret(), &docs.addr.to_string(), "ann").await?;
    let (_bob_node, mut bob) = open(secrets.secret(), &proxy.addr().to_string(), "bob").await?;
    say!(
        "  ann opens it directly; bob through a proxy at {}\n",
        proxy.addr()
    );

    say!("  1. ann starts the list; then both type at the same time");
    edited(&ann, ann.append("Shopping list:").await)?;
    merged(&mut bob, 1).await?;
    let (a, b) = tokio::join!(ann.append(" bread,"), bob.append(" milk,"));
    edited(&ann, a)?;
    edited(&bob, b)?;
    merged(&mut ann, 1).await?;
    merged(&mut bob, 1).await?;
    show(&[&ann, &bob]);

    say!("  2. bob types three items; his connection is cut after the first;");
    say!("     meanwhile ann deletes \" bread,\"");
    let text = ann.text();
    let at = text
        .find(" bread,")
        .ok_or_else(|| ClusterError::Unexpected(format!("no bread in {text:?}")))?;
    let (cut, deleted) = tokio::join!(
        async {
            let mut cut = 0;
            for item in [" eggs,", " butter,", " jam."] {
                edited(&bob, bob.append(item).await)?;
                if cut == 0 {
                    cut = proxy.cut_all();
                }
            }
            Ok::<_, ClusterError>(cut)
        },
        ann.delete(u32::try_from(at).map_err(unexpected)?, 7),
    );
    let cut = cut?;
    edited(&ann, deleted)?;
    merged(&mut ann, 3).await?;
    let events = merged_and(&mut bob, 1, true).await?;
    let interrupted = events
        .iter()
        .any(|e| matches!(e, EditEvent::Interrupted(_)));
    let resumed = events.iter().find_map(|e| match e {
        EditEvent::Resumed(r) => Some(r),
        _ => None,
    });
    let (true, Some(resumed)) = (interrupted, resumed) else {
        return Err(ClusterError::Unexpected(format!(
            "bob's session did not break and resume: {events:?}"
        )));
    };
    say!(
        "     the proxy cut {cut} connection: bob's session was interrupted, resumed after {:.0?}",
        resumed.interrupted_for
    );
    say!(
        "     and sent {} update(s) again: nothing lost, nothing doubled",
        resumed.replayed
    );
    show(&[&ann, &bob]);

    say!("  3. cat opens the document late, and adds an item");
    let (_cat_node, cat) = open(secrets.secret(), &docs.addr.to_string(), "cat").await?;
    show(&[&cat]);
    let before_period = u32::try_from(cat.text().len().saturating_sub(1)).map_err(unexpected)?;
    edited(&cat, cat.insert(before_period, ", coffee").await)?;
    merged(&mut ann, 1).await?;
    merged(&mut bob, 1).await?;
    show(&[&ann, &bob, &cat]);

    let document = cat.sync().await.map_err(unexpected)?;
    let copies = [ann.text(), bob.text(), cat.text()];
    if copies.iter().any(|c| *c != document) {
        return Err(ClusterError::Unexpected(format!(
            "the copies differ: {copies:?}, the document holds {document:?}"
        )));
    }
    say!("  all 3 copies and the document hold the same text: {document:?}\n");

    for editor in [ann, bob, cat] {
        let name = editor.name().to_owned();
        let reason = editor.close(STEP).await;
        say!("  {name} closes: {reason}");
    }
    docs.child.signal(Signal::SIGTERM)?;
    let code = docs.child.wait(STEP).await?;
    if code != Some(0) {
        return Err(ClusterError::Unexpected(format!(
            "node docs exited with {code:?}"
        )));
    }
    say!("  node docs stopped on SIGTERM, exit 0\n");
    let mut summary = Summary::new("demo edit");
    summary.figure(format_args!(
        "1 node process, 3 editors, every copy converged; {:.2} s in all",
        started.elapsed().as_secs_f64()
    ));
    Ok(summary)
}

/// A node of this process, and an editor on it that opened the document at `addr`.
async fn open(secret: &Path, addr: &str, name: &str) -> Result<(Node, Editor), ClusterError> {
    let node = Node::builder()
        .name(name)
        .secret_file(secret)
        .start()
        .await
        .map_err(unexpected)?;
    let editor = Editor::open(&node, addr, DOCUMENT, name, STEP)
        .await
        .map_err(unexpected)?;
    Ok((node, editor))
}

/// An edit that failed fails the demo.
fn edited(editor: &Editor, result: Result<(), impl std::fmt::Display>) -> Result<(), ClusterError> {
    result.map_err(|e| ClusterError::Unexpected(format!("{} could not edit: {e}", editor.name())))
}

/// Waits (bounded) until `editor` merged `n` more relays; returns all it saw meanwhile.
async fn merged(editor: &mut Editor, n: usize) -> Result<Vec<EditEvent>, ClusterError> {
    merged_and(editor, n, false).await
}

/// As [`merged`], and (if `resume`) until its session resumed after a break.
async fn merged_and(
    editor: &mut Editor,
    n: usize,
    resume: bool,
) -> Result<Vec<EditEvent>, ClusterError> {
    let mut seen = Vec::new();
    let mut applied = 0;
    let resumed = |seen: &[EditEvent]| seen.iter().any(|e| matches!(e, EditEvent::Resumed(_)));
    while applied < n || (resume && !resumed(&seen)) {
        let event = tokio::time::timeout(STEP, editor.next_event())
            .await
            .map_err(|_| ClusterError::Timeout {
                what: format!("{} waiting for the other editors' changes", editor.name()),
                timeout: STEP,
            })?
            .ok_or_else(|| ClusterError::Unexpected(format!("{} stopped", editor.name())))?;
        if let EditEvent::Applied { .. } = event {
            applied += 1;
        }
        seen.push(event);
    }
    Ok(seen)
}

fn show(editors: &[&Editor]) {
    for editor in editors {
        say!("       {:<4} {:?}", editor.name(), editor.text());
    }
    say!();
}

fn unexpected(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unexpected(error.to_string())
}
