//! `duologue demo chat`: a real cluster of separate processes on 127.0.0.1. A room on
//! one node, three members each in its own process; a short conversation, each line
//! checked to arrive at every other member; then polite half-closes and a node
//! shutdown. Every child is killed on every exit path (errors, Ctrl-C, panics).

use std::path::Path;
use std::time::Instant;

use duologue_testkit::Signal;
use duologue_testkit::progress::Summary;
use duologue_testkit::{ChildGuard, ClusterError, NodeProcess, SecretDir};
use tokio::io::AsyncWriteExt;

use super::STEP;

const ROOM: &str = "general";
const MEMBERS: [&str; 3] = ["alice", "bob", "carol"];
const SCRIPT: [(usize, &str); 5] = [
    (0, "hello everyone, this line crossed two processes"),
    (1, "hi alice! one HTTP/2 stream per session here"),
    (2, "and all of our sessions feed the room's one mailbox"),
    (
        0,
        "every line is acked by the room with its sequence number",
    ),
    (1, "see you. half-closing now"),
];

pub(crate) async fn run() -> Result<Summary, ClusterError> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let secrets = SecretDir::create()?;
    let secret = secrets.secret().display().to_string();

    say!("duologue demo: chat");
    say!("  a chat room on one node process, three members in three more, all on 127.0.0.1\n");
    let mut hub = NodeProcess::start(
        &exe,
        "hub",
        &[
            "--secret-file".into(),
            secret.clone(),
            "--actor".into(),
            format!("chat-room:{ROOM}"),
        ],
        STEP,
    )
    .await?;
    say!(
        "  node hub     pid {:<7} listening on {}, hosting room {ROOM:?}",
        hub.child.pid().unwrap_or(0),
        hub.addr
    );

    let mut members = Vec::new();
    for user in MEMBERS {
        let mut member = join(&exe, user, &hub.addr.to_string(), &secret)?;
        let joined = member.stderr_until("joined", STEP).await?;
        say!(
            "  member {user:<6} pid {:<7} {joined}",
            member.pid().unwrap_or(0)
        );
        members.push(member);
    }
    say!();

    for (speaker, text) in SCRIPT {
        let name = MEMBERS[speaker];
        say!("  {name:>6} > {text}");
        let stdin = members[speaker]
            .stdin
            .as_mut()
            .ok_or_else(|| ClusterError::Unexpected("stdin closed".into()))?;
        stdin.write_all(format!("{text}\n").as_bytes()).await?;
        stdin.flush().await?;
        let expected = format!("{name}: {text}");
        let mut heard = Vec::new();
        for (i, member) in members.iter_mut().enumerate() {
            if i == speaker {
                continue;
            }
            let line = member
                .stdout_line(STEP)
                .await?
                .ok_or_else(|| ClusterError::Unexpected(format!("{} exited", MEMBERS[i])))?;
            if line != expected {
                return Err(ClusterError::Unexpected(format!(
                    "{} heard {line:?}, expected {expected:?}",
                    MEMBERS[i]
                )));
            }
            heard.push(MEMBERS[i]);
        }
        say!("           heard by {}", heard.join(" and "));
    }

    say!("\n  every member half-closes (end of stdin) and waits for the room's last acks:");
    for member in &mut members {
        member.close_stdin();
    }
    for member in &mut members {
        let left = member.stderr_until("messages sent", STEP).await?;
        let code = member.wait(STEP).await?;
        if code != Some(0) {
            return Err(ClusterError::Unexpected(format!(
                "{} exited with {code:?}",
                member.name()
            )));
        }
        say!("  {:>6}: {left}, exit 0", member.name());
    }

    hub.child.signal(Signal::SIGTERM)?;
    let code = hub.child.wait(STEP).await?;
    if code != Some(0) {
        return Err(ClusterError::Unexpected(format!(
            "node hub exited with {code:?}"
        )));
    }
    say!("  node hub stopped on SIGTERM, exit 0\n");
    let mut summary = Summary::new("demo chat");
    summary.figure(format_args!(
        "4 processes, 5 lines, {} deliveries checked in {:.2} s",
        SCRIPT.len() * (MEMBERS.len() - 1),
        started.elapsed().as_secs_f64()
    ));
    Ok(summary)
}

fn join(exe: &Path, user: &str, peer: &str, secret: &str) -> Result<ChildGuard, ClusterError> {
    ChildGuard::spawn(
        user,
        exe,
        &[
            "chat".into(),
            "--peer".into(),
            peer.into(),
            "--room".into(),
            ROOM.into(),
            "--user".into(),
            user.into(),
            "--secret-file".into(),
            secret.into(),
        ],
    )
}
