//! Strangers cannot exhaust a node before they authenticate (issue 13, attacks 2 and 3).
//! A `duologue node` process with a chat room meets raw HTTP/2 and TCP clients that never
//! prove the secret: oversized first messages, silent streams, silent connections, and a
//! flood of connections past the node's file descriptors. Each time the node stays within
//! its limits (memory, descriptors, CPU) and a legitimate member joins and talks.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duologue_actors_testkit::member::*;
use duologue_testkit::hostile::*;
use duologue_testkit::{ChildGuard, Memory, SecretDir, Signal};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_first_messages_are_refused_at_their_length_and_memory_stays_bounded() {
    let secrets = SecretDir::create().unwrap();
    let node = room_node(&duologue_exe(), &secrets, &[]).await;
    let before = Memory::of(node.child.pid()).unwrap();
    // 8 connections x 32 streams, each sending a 4 MiB first message: 1 GiB before
    // anyone proved anything (one buffer, shared by every stream).
    let mut message = vec![0u8];
    message.extend_from_slice(&(4u32 << 20).to_be_bytes());
    message.resize(5 + (4 << 20), 0xAB);
    let message = Bytes::from(message);
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut connection = h2_connection(node.addr).await;
        for _ in 0..32 {
            let (response, mut body) = open_stream(&mut connection, node.addr).await;
            // The node may refuse before it all went out; that is the point.
            let _ = body.send_data(message.clone(), false);
            streams.push((response, body));
        }
    }
    // Each stream ends promptly: refused at its length prefix (the session's handshake
    // fails with a protocol error, FrameTooLarge, told to the peer in its Goodbye).
    for (response, _body) in streams {
        grpc_status(response).await;
    }
    let after = Memory::of(node.child.pid()).unwrap();
    let grown = after.peak.saturating_sub(before.now);
    // Before the limits the node buffered each message whole (about 1 GiB); now it
    // refuses each at its length prefix, and at most 8 connections' windows (8 MiB
    // each) of data are in flight (benches/README.md, `hostile`: about 62 MiB).
    assert!(grown < 256 << 20, "the node grew by {} MiB", grown >> 20);
    legitimate_member_talks(node.addr, secrets.secret()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_streams_are_capped_per_connection() {
    let secrets = SecretDir::create().unwrap();
    let node = room_node(
        &duologue_exe(),
        &secrets,
        &[
            "--max-unauthenticated-streams",
            "48",
            "--max-unauthenticated-streams-per-connection",
            "16",
            "--handshake-timeout",
            "5s",
        ],
    )
    .await;
    // One connection opens 20 silent streams: 16 are held (answered only at their
    // handshake deadline, without a status yet), 4 refused at once with UNAVAILABLE.
    let mut first = h2_connection(node.addr).await;
    let mut responses = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let (response, body) = open_stream(&mut first, node.addr).await;
        responses.push(response);
        bodies.push(body);
    }
    // A legitimate member on its own connection is not held back by them.
    legitimate_member_talks(node.addr, secrets.secret()).await;
    let answers = tokio::time::timeout(WAIT, futures::future::join_all(responses))
        .await
        .expect("every stream answered by its deadline");
    let refused = answers
        .iter()
        .filter(|a| {
            let answer = a.as_ref().expect("answered");
            answer.headers().get("grpc-status").map(|s| s.as_bytes()) == Some(&b"14"[..])
        })
        .count();
    assert_eq!(refused, 4);
    drop((bodies, answers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_streams_are_capped_per_node_and_a_dialling_node_retries() {
    let secrets = SecretDir::create().unwrap();
    let node = room_node(
        &duologue_exe(),
        &secrets,
        &[
            "--max-unauthenticated-streams",
            "48",
            "--max-unauthenticated-streams-per-connection",
            "16",
            // Not the cap under test here (see the next test).
            "--max-unauthenticated-connections",
            "8",
            "--handshake-timeout",
            "5s",
        ],
    )
    .await;
    // Four connections open 13 streams each: 52 against the node's 48, so 4 are
    // refused (which ones depends on the order they reach the node).
    let mut responses = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let mut connection = h2_connection(node.addr).await;
        for _ in 0..13 {
            let (response, body) = open_stream(&mut connection, node.addr).await;
            responses.push(response);
            bodies.push(body);
        }
    }
    // Meanwhile a legitimate member is refused with UNAVAILABLE, which its node retries
    // with backoff until the held streams meet their handshake deadline (5 s).
    let member = legitimate_member_talks(node.addr, secrets.secret());
    let statuses = futures::future::join_all(responses.into_iter().map(grpc_status));
    let ((), statuses) = tokio::join!(member, statuses);
    let refused = statuses.iter().filter(|s| **s == Some(UNAVAILABLE)).count();
    // The member's first attempt may reach the node before the last of them and take
    // one of the 48 places.
    assert!((4..=5).contains(&refused), "{statuses:?}");
    drop(bodies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_with_unauthenticated_streams_are_capped() {
    let secrets = SecretDir::create().unwrap();
    let node = room_node(
        &duologue_exe(),
        &secrets,
        &[
            "--max-unauthenticated-connections",
            "2",
            "--handshake-timeout",
            "5s",
        ],
    )
    .await;
    // Three connections open two silent streams each. Whichever connection reaches the
    // node last finds both places taken: both its streams are refused, and none of
    // the others' (a second stream on a connection that has one needs no new place).
    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut connection = h2_connection(node.addr).await;
        let streams = vec![
            open_stream(&mut connection, node.addr).await,
            open_stream(&mut connection, node.addr).await,
        ];
        connections.push(streams);
    }
    let mut refused_per_connection = Vec::new();
    for streams in connections {
        let statuses = futures::future::join_all(
            streams
                .into_iter()
                .map(|(response, _)| grpc_status(response)),
        )
        .await;
        refused_per_connection.push(statuses.iter().filter(|s| **s == Some(UNAVAILABLE)).count());
    }
    refused_per_connection.sort_unstable();
    assert_eq!(refused_per_connection, [0, 0, 2]);
    legitimate_member_talks(node.addr, secrets.secret()).await;
}

/// Reads `socket` to its end (the node speaks first: its HTTP/2 settings), within
/// [`WAIT`]; whether the node closed it.
async fn closed_by_node(socket: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_make_room_for_a_peer_that_talks() {
    let secrets = SecretDir::create().unwrap();
    let node = room_node(
        &duologue_exe(),
        &secrets,
        &[
            "--max-connections",
            "40",
            "--connection-idle-timeout",
            "60s",
        ],
    )
    .await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(TcpStream::connect(node.addr).await.unwrap());
    }
    // Past the limit each new connection took the place of the oldest silent one: the
    // first 60 are closed long before their idle timeout.
    for socket in &mut sockets[..60] {
        assert!(
            closed_by_node(socket).await,
            "a silent connection kept open"
        );
    }
    // A legitimate member gets in while the last 40 are still open, by the same rule.
    legitimate_member_talks(node.addr, secrets.secret()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_idle_timeout() {
    let secrets = SecretDir::create().unwrap();
    let node = room_node(
        &duologue_exe(),
        &secrets,
        &["--connection-idle-timeout", "1s"],
    )
    .await;
    let opened = Instant::now();
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(TcpStream::connect(node.addr).await.unwrap());
    }
    for socket in &mut sockets {
        assert!(
            closed_by_node(socket).await,
            "a silent connection stayed open"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(1),
        "closed before the idle timeout"
    );
    legitimate_member_talks(node.addr, secrets.secret()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_descriptor_limit_the_node_makes_room_instead_of_spinning() {
    let secrets = SecretDir::create().unwrap();
    // The node may hold 64 descriptors: a few dozen connections would exhaust them.
    let args: Vec<String> = [
        "--nofile=64:64",
        &duologue_exe().display().to_string(),
        "node",
        "--name",
        "target",
        "--secret-file",
        &secrets.secret().display().to_string(),
        "--actor",
        "chat-room:lobby",
        "--connection-idle-timeout",
        "2s",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut child = ChildGuard::spawn("target", Path::new("prlimit"), &args).unwrap();
    let line = child.stdout_line(WAIT).await.unwrap().expect("listening");
    let addr: SocketAddr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.trim().parse().ok())
        .expect("listening on ADDR");
    let pid = child.pid().unwrap();
    let mut sockets = Vec::new();
    for _ in 0..150 {
        sockets.push(TcpStream::connect(addr).await.unwrap());
    }
    // While the backlog waits for room, the node must not spin.
    let (cpu_before, wall) = (
        duologue_testkit::cpu_time(Some(pid)).unwrap(),
        Instant::now(),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..15 {
        tick.tick().await;
    }
    let busy = duologue_testkit::cpu_time(Some(pid)).unwrap() - cpu_before;
    assert!(
        busy < wall.elapsed() / 3,
        "the node used {busy:?} of CPU in {:?}",
        wall.elapsed()
    );
    drop(sockets);
    // With the silent connections gone (closed by the idle timeout or by us), the node
    // accepts again.
    legitimate_member_talks(addr, secrets.secret()).await;
    child.signal(Signal::SIGTERM).unwrap();
    let (mut failed, mut evicted) = (0, 0);
    while let Some(line) = child.stderr_line(WAIT).await.unwrap() {
        if line.contains("accept failed; pausing") {
            failed += 1;
        }
        if line.contains("closing the connection idle for longest") {
            evicted += 1;
        }
    }
    // Its connections fit what it may open (a quarter of 64 kept for itself): `accept`
    // never ran out of descriptors, and the idlest connections made room instead, in a
    // few lines.
    assert_eq!(failed, 0, "{failed} accept failures");
    assert!((1..=10).contains(&evicted), "{evicted} eviction lines");
    assert_eq!(child.wait(WAIT).await.unwrap(), Some(0));
}
