//! `duologue demo cluster`: four node processes on 127.0.0.1 find each other through one
//! seed; a chat room on one of them is found by name from members that only know the
//! seed; the room's node is killed; the cluster declares it dead; the room is spawned
//! again by kind on a surviving node, and the members find it there and rejoin. Every
//! child is killed on every exit path.

use std::path::Path;
use std::time::Instant;

use duologue::{Node, Secret, cluster::MemberState};
use duologue_testkit::progress::{self, ProgressBar, Summary};
use duologue_testkit::{ChildGuard, ClusterError, NodeProcess, SecretDir, Signal};
use tokio::io::AsyncWriteExt;

use super::STEP;

const ROOM: &str = "general";
/// Fast gossip for a demo on one machine (the default is 1s).
const GOSSIP_INTERVAL: &str = "200ms";

/// The steps the demo's bar counts: four nodes started, the seed's view converged, two
/// members joined, a line heard, n2 killed and declared dead, the room spawned again, two
/// members back, a line heard again, two members gone and three nodes stopped.
const STEPS: u64 = 4 + 1 + 2 + 1 + 1 + 1 + 2 + 1 + 2 + 3;

pub(crate) async fn run() -> Result<Summary, ClusterError> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let secrets = SecretDir::create()?;
    let secret = secrets.secret().display().to_string();
    let steps = progress::bar("demo cluster", STEPS);

    say!("duologue demo: cluster");
    say!("  four node processes gossiping on 127.0.0.1; the others know only the first\n");
    steps.set_message("starting node n1, the seed");
    let mut seed = NodeProcess::start(&exe, "n1", &node_args(&secret, None, None), STEP).await?;
    let gossip = gossip_line(&mut seed.child).await?;
    print_node(&seed, &format!("the seed, gossiping on {gossip}"));
    steps.inc(1);
    let mut nodes = vec![seed];
    for (name, actor) in [
        ("n2", Some(format!("chat-room:{ROOM}"))),
        ("n3", None),
        ("n4", None),
    ] {
        steps.set_message(format!("starting node {name}"));
        let node = NodeProcess::start(
            &exe,
            name,
            &node_args(&secret, Some(&gossip), actor.as_deref()),
            STEP,
        )
        .await?;
        let what = match &actor {
            Some(_) => format!("hosting room {ROOM:?}"),
            None => "hosting nothing yet".into(),
        };
        print_node(&node, &what);
        nodes.push(node);
        steps.inc(1);
    }
    let seed_addr = nodes[0].addr.to_string();

    let operator = operator(&secret).await?;
    let converging = Instant::now();
    let members = wait_members(&operator, &seed_addr, &steps, "all four up", |m| {
        m.iter().filter(|m| m.state == MemberState::Up).count() == 4
    })
    .await?;
    let converged = converging.elapsed();
    say!("\n  the seed sees all four members up after {converged:.1?}:");
    print_table(&members);
    steps.inc(1);

    say!("\n  two members join room {ROOM:?}, knowing only the seed's address:");
    let mut chats = Vec::new();
    for user in ["alice", "bob"] {
        steps.set_message(format!("{user} looks room {ROOM:?} up and joins"));
        let mut chat = join(&exe, user, &seed_addr, &secret)?;
        let joined = chat.stderr_until("joined", STEP).await?;
        say!("    {user:<6} {joined}");
        chats.push(chat);
        steps.inc(1);
    }
    steps.set_message("bob waits for alice's line");
    say(&mut chats, 0, "hello bob, I found this room by its name").await?;
    let heard = chats[1].stdout_line(STEP).await?.unwrap_or_default();
    say!("    bob heard  {heard:?}");
    steps.inc(1);

    let room_node = nodes.remove(1);
    let killed = Instant::now();
    room_node.child.signal(Signal::SIGKILL)?;
    say!(
        "\n  killed n2 (pid {}), the room's node, without a farewell",
        room_node.child.pid().unwrap_or(0)
    );
    wait_members(&operator, &seed_addr, &steps, "n2 declared dead", |m| {
        m.iter()
            .any(|m| m.identity.name == "n2" && m.state == MemberState::Unreachable)
    })
    .await?;
    let declared_dead = killed.elapsed();
    say!("  the cluster declared n2 dead after {declared_dead:.1?}");
    drop(room_node);
    steps.inc(1);

    steps.set_message(format!("spawning room {ROOM:?} on a surviving node"));
    let spawn = spawn_room(&exe, &seed_addr, &secret).await?;
    say!("  `duologue spawn --any chat-room:{ROOM}`: {spawn}");
    steps.inc(1);
    for (i, user) in ["alice", "bob"].into_iter().enumerate() {
        steps.set_message(format!("{user} finds the room again and rejoins"));
        let rejoined = chats[i].stderr_until("rejoined", STEP).await?;
        say!("    {user:<6} {rejoined}");
        steps.inc(1);
    }
    let back = killed.elapsed();
    say!("  the room was back and both members in it {back:.1?} after n2 was killed");
    steps.set_message("bob waits for alice's line");
    say(&mut chats, 0, "we are back, on another node").await?;
    let heard = chats[1].stdout_line(STEP).await?.unwrap_or_default();
    say!("    bob heard  {heard:?}");
    print_table(&operator.members_at(&seed_addr).await.map_err(unexpected)?);
    steps.inc(1);

    for chat in &mut chats {
        chat.close_stdin();
    }
    for mut chat in chats {
        let name = chat.name().to_owned();
        steps.set_message(format!("{name} leaves (end of stdin)"));
        match chat.wait(STEP).await? {
            Some(0) => {}
            code => return Err(ClusterError::Unexpected(format!("{name} exited {code:?}"))),
        }
        steps.inc(1);
    }
    stop_nodes(nodes, &steps).await?;
    steps.finish_and_clear();
    say!();
    let mut summary = Summary::new("demo cluster");
    summary
        .figure(format_args!(
            "4 nodes up in the seed's view {converged:.1?} after the last started"
        ))
        .figure(format_args!(
            "n2 killed: found dead after {declared_dead:.1?}, room {ROOM:?} back with both \
             members after {back:.1?}"
        ))
        .figure(format_args!("{:.1?} in all", started.elapsed()));
    Ok(summary)
}

/// The flags of a demo's `duologue node`: the secret, fast gossip on 127.0.0.1, the seed
/// to join through, the actor to host.
pub(super) fn node_args(secret: &str, seed: Option<&str>, actor: Option<&str>) -> Vec<String> {
    let mut args =
        duologue_testkit::cluster_flags(std::path::Path::new(secret), GOSSIP_INTERVAL, seed);
    if let Some(actor) = actor {
        args.extend(["--actor".to_owned(), actor.to_owned()]);
    }
    args
}

/// Stops `nodes` politely (SIGTERM), each within [`STEP`], one step of `steps` each.
pub(super) async fn stop_nodes(
    nodes: Vec<NodeProcess>,
    steps: &ProgressBar,
) -> Result<(), ClusterError> {
    for mut node in nodes {
        steps.set_message(format!("stopping node {} (SIGTERM)", node.child.name()));
        node.child.signal(Signal::SIGTERM)?;
        node.child.wait(STEP).await?;
        steps.inc(1);
    }
    Ok(())
}

/// The node's second stdout line, `gossip on ADDR`.
pub(super) async fn gossip_line(node: &mut ChildGuard) -> Result<String, ClusterError> {
    let line = node.stdout_line(STEP).await?.unwrap_or_default();
    line.strip_prefix("gossip on ")
        .map(str::to_owned)
        .ok_or_else(|| ClusterError::Unexpected(format!("expected `gossip on ADDR`, got {line:?}")))
}

pub(super) fn print_node(node: &NodeProcess, what: &str) {
    say!(
        "  node {:<3} pid {:<7} listening on {}, {what}",
        node.child.name(),
        node.child.pid().unwrap_or(0),
        node.addr
    );
}

pub(super) fn print_table(members: &[duologue::cluster::Member]) {
    for line in crate::members::table(members).lines() {
        say!("    {line}");
    }
}

/// A node of this process that asks the cluster's nodes about their cluster.
pub(super) async fn operator(secret: &str) -> Result<Node, ClusterError> {
    let secret = Secret::from_file(secret).map_err(unexpected)?;
    Node::builder()
        .name("demo")
        .secret(secret)
        .start()
        .await
        .map_err(unexpected)
}

/// Asks `addr` for its members until `wanted` holds of them, for up to [`STEP`]: each
/// question after the first is answered when that node's view changes. `steps` shows the
/// `goal` and each view on the way.
pub(super) async fn wait_members(
    operator: &Node,
    addr: &str,
    steps: &ProgressBar,
    goal: &str,
    wanted: impl Fn(&[duologue::cluster::Member]) -> bool,
) -> Result<Vec<duologue::cluster::Member>, ClusterError> {
    let deadline = Instant::now() + STEP;
    let mut since = 0;
    loop {
        // At once the first time, then each time the node's view changes.
        let left = deadline.saturating_duration_since(Instant::now());
        let now = operator
            .members_changed_at(addr, since, left)
            .await
            .map_err(unexpected)?;
        let view: Vec<String> = now
            .members
            .iter()
            .map(|m| format!("{} {}", m.identity.name, m.state))
            .collect();
        steps.set_message(format!(
            "waiting for {goal}; the seed sees {}",
            view.join(", ")
        ));
        if wanted(&now.members) {
            return Ok(now.members);
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout {
                what: format!("the members never looked as expected: {:?}", now.members),
                timeout: STEP,
            });
        }
        since = now.version;
    }
}

fn join(exe: &Path, user: &str, seed: &str, secret: &str) -> Result<ChildGuard, ClusterError> {
    let args: Vec<String> = [
        "chat",
        "--peer",
        seed,
        "--find",
        "--rejoin",
        "--resume-timeout",
        "1s",
        "--timeout",
        "15s",
        "--connect-timeout",
        "1s",
        "--room",
        ROOM,
        "--user",
        user,
        "--secret-file",
        secret,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    ChildGuard::spawn(user, exe, &args)
}

async fn say(chats: &mut [ChildGuard], who: usize, line: &str) -> Result<(), ClusterError> {
    let stdin = chats[who]
        .stdin
        .as_mut()
        .ok_or_else(|| ClusterError::Unexpected("stdin closed".into()))?;
    stdin.write_all(format!("{line}\n").as_bytes()).await?;
    stdin.flush().await?;
    say!("    {:<6} says  {line:?}", chats[who].name());
    Ok(())
}

async fn spawn_room(exe: &Path, seed: &str, secret: &str) -> Result<String, ClusterError> {
    let room = format!("chat-room:{ROOM}");
    let lines = command(
        exe,
        &[
            "spawn",
            "--peer",
            seed,
            "--secret-file",
            secret,
            "--any",
            &room,
        ],
    )
    .await?;
    Ok(lines.into_iter().next().unwrap_or_default())
}

/// Runs `duologue ARGS` to its end (each line within [`STEP`]); what it printed, once it
/// exited 0.
pub(super) async fn command(exe: &Path, args: &[&str]) -> Result<Vec<String>, ClusterError> {
    let argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let name = args.first().copied().unwrap_or("duologue");
    let mut child = ChildGuard::spawn(name, exe, &argv)?;
    let mut lines = Vec::new();
    while let Some(line) = child.stdout_line(STEP).await? {
        lines.push(line);
    }
    match child.wait(STEP).await? {
        Some(0) => Ok(lines),
        code => {
            let why = child.stderr_line(STEP).await?.unwrap_or_default();
            Err(ClusterError::Unexpected(format!(
                "duologue {name} exited {code:?}: {why}"
            )))
        }
    }
}

pub(super) fn unexpected(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unexpected(error.to_string())
}
