//! Seeing inside a node: its metrics on the admin address, `Node::status`, typed
//! interruption causes, `duologue status`, and JSON log lines carrying the session's
//! span. Nodes listen on 127.0.0.1 with ports chosen at run time; every wait is bounded.

mod support;

use duologue::{InterruptCause, Node, SessionSignal, status::SessionState};
use duologue_testkit::{ChildGuard, FaultProxy, SecretDir};
use support::*;

/// The body of `GET http://{addr}{path}`.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .into_body()
            .read_to_string()
            .expect("a text body")
    })
    .await
    .expect("the request ran")
}

/// The value of the sample `series` (name and labels, exactly as rendered).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

async fn node_with_metrics(name: &str) -> Node {
    Node::builder()
        .name(name)
        .listen("127.0.0.1:0".parse().unwrap())
        .admin("127.0.0.1:0".parse().unwrap())
        .secret(duologue::Secret::new(SECRET).unwrap())
        .start()
        .await
        .expect("node starts")
}

#[tokio::test]
async fn metrics_and_status_count_what_sessions_carry() {
    let served = served_probe(node_with_metrics("observed").await).await;
    let mut seen = served.seen;
    let admin = served.node.admin_addr().expect("an admin address");
    let dialled = dial(
        dialling_node("client", SECRET).await,
        &addr(&served.node),
        "probe",
    )
    .await;
    let remote = dialled.result.expect("connects");
    const CASTS: u64 = 1000;
    for n in 0..CASTS {
        remote
            .cast(Ping {
                n,
                ..Ping::default()
            })
            .await
            .expect("cast");
    }
    for _ in 0..CASTS {
        next_ping(&mut seen).await;
    }
    let pong: Pong = remote
        .call(
            Ping {
                n: 7,
                ..Ping::default()
            },
            WAIT,
        )
        .await
        .expect("the call is answered");
    assert_eq!(pong.n, 7);

    let status = served.node.status();
    assert_eq!(status.sessions.len(), 1, "{status:?}");
    let session = &status.sessions[0];
    assert_eq!(session.state, SessionState::Active);
    assert_eq!(session.peer.name, "client");
    assert_eq!(session.actor, "probe");
    assert_eq!(session.counters.messages_in, CASTS + 1);
    assert_eq!(session.counters.messages_out, 1, "the reply");
    assert_eq!(status.totals.messages_in, CASTS + 1);

    let metrics = get(admin, "/metrics").await;
    let in_total = sample(&metrics, r#"duologue_messages_total{direction="in"}"#);
    assert_eq!(in_total, Some((CASTS + 1) as f64), "{metrics}");
    assert_eq!(
        sample(&metrics, r#"duologue_sessions{state="active"}"#),
        Some(1.0)
    );
    let backlog = format!(
        r#"duologue_session_backlog{{session="{}",peer="client",actor="probe"}}"#,
        session.id
    );
    assert!(sample(&metrics, &backlog).is_some(), "{metrics}");
    assert!(metrics.contains("# TYPE duologue_call_duration_seconds histogram"));

    let json = get(admin, "/status.json").await;
    assert!(json.contains(r#""actor":"probe""#), "{json}");
    assert!(get(admin, "/").await.contains("<canvas id=\"chart\""));

    // A stranger with the wrong secret is a handshake failure, counted by reason.
    let mut events = served.node.events();
    let stranger = dialling_node("stranger", "another secret, also 32 bytes long").await;
    let refused = dial(stranger, &addr(&served.node), "probe").await;
    assert!(refused.result.is_err());
    rejection(&mut events).await;
    let metrics = get(admin, "/metrics").await;
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("duologue_handshake_failures_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 1.0, "{metrics}");
}

#[tokio::test]
async fn a_cut_connection_is_a_typed_cause_then_a_counted_resume() {
    let served = served_probe(node_with_metrics("observed").await).await;
    let admin = served.node.admin_addr().expect("an admin address");
    let proxy = FaultProxy::start(served.node.local_addr().unwrap())
        .await
        .expect("proxy starts");
    let mut dialled = dial(
        dialling_node("client", SECRET).await,
        &proxy.addr().to_string(),
        "probe",
    )
    .await;
    let _remote = dialled.result.expect("connects");
    proxy.reset_all();
    let cause = match next_signal(&mut dialled.owner_seen).await {
        SessionSignal::Interrupted(_, cause) => cause,
        other => panic!("expected Interrupted, got {other:?}"),
    };
    assert!(
        matches!(
            cause,
            InterruptCause::ConnectionLost | InterruptCause::StreamReset
        ),
        "a reset connection is lost, not {cause:?}"
    );
    let said = cause.to_string();
    assert!(
        !said.contains("h2") && !said.contains("hyper") && said.len() < 60,
        "short and typed: {said}"
    );
    match next_signal(&mut dialled.owner_seen).await {
        SessionSignal::Resumed(..) => {}
        other => panic!("expected Resumed, got {other:?}"),
    }
    // The acceptor counted the resume once it re-attached the stream.
    let metrics = get(admin, "/metrics").await;
    assert_eq!(
        sample(&metrics, "duologue_resumes_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "duologue_interruptions_total"), Some(1.0));
}

/// A `duologue chat` member of `room` at `addr`, in its own process.
fn chat_member(addr: &str, user: &str, secret: &std::path::Path) -> ChildGuard {
    let args: Vec<String> = [
        "chat",
        "--peer",
        addr,
        "--room",
        "general",
        "--user",
        user,
        "--secret-file",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([secret.display().to_string()])
    .collect();
    ChildGuard::spawn(user, &duologue_exe(), &args).expect("chat starts")
}

#[tokio::test]
async fn status_tables_and_json_logs_name_the_session() {
    let secrets = SecretDir::create().unwrap();
    // The node logs as JSON at info (RUST_LOG, set through env(1) for this child only):
    // each line an object, with the session's span.
    let args: Vec<String> = ["RUST_LOG=duologue=info".to_owned()]
        .into_iter()
        .chain([duologue_exe().display().to_string()])
        .chain(
            [
                "--log-format",
                "json",
                "node",
                "--name",
                "hub",
                "--actor",
                "chat-room:general",
                "--secret-file",
            ]
            .map(str::to_owned),
        )
        .chain([secrets.secret().display().to_string()])
        .collect();
    let mut node =
        ChildGuard::spawn("hub", std::path::Path::new("/usr/bin/env"), &args).expect("node starts");
    let listening = node.stdout_line(WAIT).await.unwrap().expect("a first line");
    let addr = listening
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the node said {listening:?}"))
        .to_owned();
    let mut alice = chat_member(&addr, "alice", secrets.secret());
    alice
        .stderr_until("joined general", WAIT)
        .await
        .expect("alice joins");

    let status = tokio::process::Command::new(duologue_exe())
        .args(["status", "--peer", &addr, "--secret-file"])
        .arg(secrets.secret())
        .kill_on_drop(true)
        .output();
    let status = tokio::time::timeout(WAIT, status)
        .await
        .expect("status answers in time")
        .expect("status runs");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table} {:?}", status.stderr);
    assert!(table.starts_with("node hub at "), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("chat-alice "))
        .unwrap_or_else(|| panic!("a row for alice's session: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["general", "in", "active"], "{row}");

    // Alice's process dies: the node's session is interrupted, and says so in one JSON
    // line naming the session, with a short typed cause.
    alice
        .signal(duologue_testkit::Signal::SIGKILL)
        .expect("kill alice");
    // Alice's line, not another session's (none should be interrupted, but the test
    // names the one it means).
    let line = loop {
        let line = node
            .stderr_until("session interrupted", WAIT)
            .await
            .expect("the node logs the interruption");
        if line.contains(r#""peer":"chat-alice"#) {
            break line;
        }
    };
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["level"], "INFO", "{line}");
    let span = &entry["span"];
    assert_eq!(span["name"], "session", "{line}");
    assert_eq!(
        span["peer"].as_str().map(|p| p.starts_with("chat-alice")),
        Some(true),
        "{line}"
    );
    assert_eq!(span["actor"], "general", "{line}");
    assert_eq!(span["role"], "Acceptor", "{line}");
    assert!(
        span["id"].as_str().is_some_and(|id| id.len() == 36),
        "{line}"
    );
    let cause = entry["fields"]["cause"].as_str().expect("a cause field");
    assert!(
        cause == "the connection was lost" || cause == "the stream was reset",
        "{line}"
    );
}
