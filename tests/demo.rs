//! `duologue demo chat`, the README's first command, runs a real cluster and exits 0.

mod support;

use std::time::Duration;

use duologue_testkit::ChildGuard;
use support::duologue_exe;

#[tokio::test]
async fn demo_chat_plays_the_conversation_and_exits_zero() {
    let mut demo =
        ChildGuard::spawn("demo", &duologue_exe(), &["demo".into(), "chat".into()]).unwrap();
    let mut out = Vec::new();
    while let Some(line) = demo.stdout_line(Duration::from_secs(60)).await.unwrap() {
        out.push(line);
    }
    assert_eq!(
        demo.wait(Duration::from_secs(10)).await.unwrap(),
        Some(0),
        "{out:#?}"
    );
    assert_eq!(out.last().map(String::as_str), Some("demo chat: ok"));
    assert_eq!(
        out.iter().filter(|l| l.contains("heard by")).count(),
        5,
        "{out:#?}"
    );
}

#[tokio::test]
async fn demo_all_plays_every_paradigm_and_exits_zero() {
    let mut demo =
        ChildGuard::spawn("demo", &duologue_exe(), &["demo".into(), "all".into()]).unwrap();
    let mut out = Vec::new();
    while let Some(line) = demo.stdout_line(Duration::from_secs(120)).await.unwrap() {
        out.push(line);
    }
    assert_eq!(
        demo.wait(Duration::from_secs(10)).await.unwrap(),
        Some(0),
        "{out:#?}"
    );
    for paradigm in ["chat", "edit", "reconcile", "pipeline"] {
        let done = format!("demo {paradigm}: ok");
        assert!(out.contains(&done), "no {done:?} in {out:#?}");
    }
}
