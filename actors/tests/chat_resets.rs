//! The chat room with real processes, where the network is at its worst:
//!
//! - a `duologue chat` writer piping lines as fast as it can through a proxy that resets
//!   every connection every 100-300 ms (at least 20 resets), a reader on loopback: every
//!   line reaches the reader exactly once, in order, the writer exits 0, nobody is let
//!   go;
//! - the room's node frozen (SIGSTOP) past the members' resume deadline under two
//!   `duologue chat --rejoin` members: both lose their sessions, take their places back
//!   once the node runs again (its own sessions still held as interrupted), send again
//!   what the room did not record, and every text reaches the listener.

use std::time::Duration;

use duologue_testkit::{ChatTransfer, ChildGuard, NodeProcess, SecretDir, Signal, chat_member};

fn exe() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_duologue").as_ref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_speed_writer_through_resets_reaches_the_reader_exactly_once_and_nobody_is_let_go() {
    let transfer = ChatTransfer {
        lines: None,
        rate: 0,
        reset_ms: (100, 300),
        min_resets: 20,
        rejoin: false,
        stall: Duration::from_secs(30),
    };
    let report = transfer
        .run(exe(), |_| {})
        .await
        .expect("the transfer runs");
    eprintln!("{report:?}");
    assert!(report.resets >= 20, "{report:?}");
    assert!(report.sent > 0 && report.interrupted > 0, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.duplicated, 0, "{report:?}");
    assert_eq!(report.reordered, 0, "{report:?}");
    assert_eq!(report.let_go, 0, "nobody was let go: {report:?}");
    assert_eq!(report.writer_exit, Some(0), "{report:?}");
}

/// A `duologue chat --rejoin` member of room `general` at `addr`, its session resuming
/// within `resume`.
async fn member(secrets: &SecretDir, addr: &str, user: &str, resume: &str) -> ChildGuard {
    let extra = ["--rejoin", "--resume-timeout", resume, "--timeout", "60s"];
    chat_member(exe(), secrets, addr, "general", user, &extra)
        .await
        .expect("the member joins")
}

/// The next `n` lines the listener prints.
async fn heard(listener: &mut ChildGuard, n: u64, heard: &mut Vec<String>) {
    for _ in 0..n {
        let line = listener
            .stdout_line(Duration::from_secs(30))
            .await
            .unwrap()
            .expect("the listener prints the texts");
        heard.push(line);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_room_frozen_past_their_deadline_take_their_places_back_and_nothing_is_lost() {
    const TEXTS: u64 = 200;
    let secrets = SecretDir::create().unwrap();
    let room = NodeProcess::chat_room(exe(), &secrets, "general")
        .await
        .unwrap();
    let addr = room.addr.to_string();
    // Their deadline is 3 s; the room keeps its own 30 s.
    let mut listener = member(&secrets, &addr, "ben", "3s").await;
    let mut talker = member(&secrets, &addr, "ann", "3s").await;
    let mut stdin = talker.stdin.take().unwrap();

    use tokio::io::AsyncWriteExt;
    // Half the texts before the freeze, heard by the listener.
    for n in 1..=TEXTS / 2 {
        stdin.write_all(format!("{n}\n").as_bytes()).await.unwrap();
    }
    stdin.flush().await.unwrap();
    let mut lines = Vec::new();
    heard(&mut listener, TEXTS / 2, &mut lines).await;

    // The room's node is frozen: both sessions are lost at their 3 s deadline, and the
    // other half of the texts is written meanwhile (the talker waits, then rejoins).
    room.child.signal(Signal::SIGSTOP).unwrap();
    for n in TEXTS / 2 + 1..=TEXTS {
        stdin.write_all(format!("{n}\n").as_bytes()).await.unwrap();
    }
    stdin.flush().await.unwrap();
    talker
        .stderr_until("session lost", Duration::from_secs(30))
        .await
        .expect("the talker's session is lost past its deadline");
    listener
        .stderr_until("session lost", Duration::from_secs(30))
        .await
        .expect("the listener's session is lost past its deadline");
    tokio::time::sleep(Duration::from_secs(2)).await;
    room.child.signal(Signal::SIGCONT).unwrap();

    // Both come back in their own places (the room still held their sessions).
    let back = talker
        .stderr_until("rejoined", Duration::from_secs(60))
        .await
        .expect("the talker rejoins");
    assert!(back.contains("taking over"), "{back}");
    let back = listener
        .stderr_until("rejoined", Duration::from_secs(60))
        .await
        .expect("the listener rejoins");
    assert!(back.contains("taking over"), "{back}");
    drop(stdin);
    heard(&mut listener, TEXTS - TEXTS / 2, &mut lines).await;
    let expected: Vec<String> = (1..=TEXTS).map(|n| format!("ann: {n}")).collect();
    assert_eq!(lines, expected, "every text once, in order");
    assert_eq!(
        talker.wait(Duration::from_secs(60)).await.unwrap(),
        Some(0),
        "the talker finishes: every text acknowledged"
    );
}
