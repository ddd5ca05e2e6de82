//! Names and spawns at any count (issue 25, points 6 to 8): a name that would not fit
//! a gossip datagram, or would break a line of `duologue members` or of a log, is refused
//! with a typed error, and the node's later names and its leave still reach its peers;
//! spawns and names are bounded per node, each refusal typed; what a node has not yet
//! published is in its status; and `duologue members` reads a member with thousands of
//! names (more than one answer carries) without panicking.

use std::time::Duration;

use duologue::{
    Node, NodeConfig, NodeError, Secret,
    cluster::{ActorSpec, ClusterEvent, MemberState, SpawnError},
};
use duologue_actors_testkit::cluster_lab;
use duologue_testkit::{ChildGuard, IgnoringOwner, SecretDir, cluster};
use ractor::Actor;

const WAIT: Duration = Duration::from_secs(30);

const SECRET: &str = "cluster test secret, 32 bytes!!";

async fn node_with(name: &str, seeds: &[std::net::SocketAddr], bounds: (usize, usize)) -> Node {
    let secret = Secret::new(SECRET).unwrap();
    cluster_lab::seq_check_node(name, seeds, secret, |config| {
        (config.max_hosted, config.max_names) = bounds;
    })
    .await
}

async fn node(name: &str, seeds: &[std::net::SocketAddr]) -> Node {
    let defaults = NodeConfig::default();
    node_with(name, seeds, (defaults.max_hosted, defaults.max_names)).await
}

/// Waits until `node` sees `name` registered on some member.
async fn until_seen(node: &Node, name: &str) {
    tokio::time::timeout(WAIT, async {
        loop {
            let changed = node.members_changed();
            let members = node.members().unwrap();
            if members.iter().any(|m| m.actor(name).is_some()) {
                return;
            }
            changed.await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never reached the view"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_would_freeze_gossip_or_fool_a_reader_are_refused_and_gossip_goes_on() {
    let a = node("a", &[]).await;
    let b = node("b", &[a.gossip_addr().unwrap()]).await;
    cluster::wait_members(&a, 2, WAIT).await;
    let mut events = cluster::listen(&a).await;
    let (actor, _) = Actor::spawn(None, IgnoringOwner, ()).await.unwrap();

    // Registered in process: refused, typed, the reason said.
    let long = "n".repeat(70_000);
    for bad in [
        long.as_str(),
        "two\nlines",
        "nul\0",
        "evil\u{202E}txt.exe",
        " padded",
        "",
    ] {
        match b.register(bad, &actor) {
            Err(NodeError::InvalidName { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!(
                "{:?}: expected InvalidName, got {other:?}",
                &bad[..bad.len().min(20)]
            ),
        }
    }
    // Asked of `$node` over the wire, a megabyte of name: refused, typed.
    let client = Node::builder()
        .secret(Secret::new(SECRET).unwrap())
        .start()
        .await
        .unwrap();
    let b_addr = b.local_addr().unwrap().to_string();
    let huge = "m".repeat(1024 * 1024);
    match client
        .spawn_at(&b_addr, ActorSpec::new("seq-check", huge.as_str()))
        .await
    {
        Err(SpawnError::InvalidName { node, name, reason }) => {
            assert_eq!(node, "b");
            assert!(
                name.chars().count() <= 81,
                "the name is cut for the message"
            );
            assert!(reason.contains("255"), "{reason}");
        }
        other => panic!("expected InvalidName, got {other:?}"),
    }
    match client
        .spawn_at(&b_addr, ActorSpec::new("seq-check", "line\nbreak"))
        .await
    {
        Err(SpawnError::InvalidName { name, .. }) => assert_eq!(name, "line\\u{a}break"),
        other => panic!("expected InvalidName, got {other:?}"),
    }
    // A name of the longest length is taken, and travels.
    let longest = "x".repeat(duologue::cluster::MAX_NAME_BYTES);
    client
        .spawn_at(&b_addr, ActorSpec::new("seq-check", longest.as_str()))
        .await
        .unwrap();
    until_seen(&a, &longest).await;
    // b's gossip is not frozen: a later name reaches a, and so does its leave.
    b.register("after", &actor).unwrap();
    until_seen(&a, "after").await;
    client.shutdown().await;
    b.shutdown().await;
    // The events a saw since it started listening may hold an `Unreachable` for b that a
    // loaded machine caused earlier (a late heartbeat): its leave is told `Left` all the
    // same. An unseen leave leaves b unreachable and never `Left` (it is `Removed` only
    // after the dead grace, an hour): the wait runs out.
    let left = cluster::next_event(&mut events, WAIT, |event| match event {
        ClusterEvent::Left(member) | ClusterEvent::Removed(member)
            if member.identity.name == "b" =>
        {
            Some(event.clone())
        }
        _ => None,
    })
    .await;
    assert!(matches!(left, ClusterEvent::Left(_)), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_and_names_are_bounded_per_node_with_typed_refusals() {
    let a = node_with("a", &[], (20, 25)).await;
    let client = Node::builder()
        .secret(Secret::new(SECRET).unwrap())
        .start()
        .await
        .unwrap();
    let addr = a.local_addr().unwrap().to_string();
    // Twenty spawns side by side: all taken, and the next refused, however they race.
    let spawns =
        (0..20).map(|i| client.spawn_at(&addr, ActorSpec::new("seq-check", format!("s{i}"))));
    for spawned in futures::future::join_all(spawns).await {
        spawned.unwrap();
    }
    match client
        .spawn_at(&addr, ActorSpec::new("seq-check", "one-too-many"))
        .await
    {
        Err(SpawnError::LimitReached { node, detail }) => {
            assert_eq!(node, "a");
            assert!(detail.contains("max_hosted"), "{detail}");
        }
        other => panic!("expected LimitReached, got {other:?}"),
    }
    // Names: 20 hosted, `$node` and 4 more reach max_names (25); the next is refused.
    let (actor, _) = Actor::spawn(None, IgnoringOwner, ()).await.unwrap();
    for i in 0..4 {
        a.register(format!("extra-{i}"), &actor).unwrap();
    }
    match a.register("extra-4", &actor) {
        Err(NodeError::TooManyNames { limit }) => assert_eq!(limit, 25),
        other => panic!("expected TooManyNames, got {other:?}"),
    }
    // Places come back as actors stop.
    actor.stop(None);
    let status = tokio::time::timeout(WAIT, async {
        loop {
            let (fresh, _) = Actor::spawn(None, IgnoringOwner, ()).await.unwrap();
            if a.register("extra-4", &fresh).is_ok() {
                return a.status();
            }
            fresh.stop(None);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a stopped actor's names free their places");
    assert!(status.cluster.is_some(), "in a cluster");
    // What the node holds is published, and nothing waits: the 20 spawned and extra-4
    // (`$node` is not published; the stopped actor's names were withdrawn).
    tokio::time::timeout(WAIT, async {
        loop {
            let cluster = a.status().cluster.expect("in a cluster");
            if cluster.names_unpublished == 0 && cluster.names == 21 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every name is published");
    client.shutdown().await;
}

/// `duologue members` against `addr`, with `args`; exit code and stdout lines.
async fn members_command(addr: &str, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let secrets = SecretDir::create().unwrap();
    let file = secrets.write("cluster.secret", SECRET).unwrap();
    let mut all = vec![
        "members".to_owned(),
        "--peer".to_owned(),
        addr.to_owned(),
        "--secret-file".to_owned(),
        file.display().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_duologue"));
    let mut child = ChildGuard::spawn("members", exe, &all).unwrap();
    let mut out = Vec::new();
    while let Some(line) = child.stdout_line(WAIT).await.unwrap() {
        out.push(line);
    }
    (child.wait(WAIT).await.unwrap(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duologue_members_reads_a_member_with_thousands_of_names() {
    const NAMES: usize = 6000;
    let a = node_with("a", &[], (10, NAMES + 10)).await;
    // 6 000 names of 200 bytes: 1.2 MB of names, more than one member list carries.
    let (actor, _) = Actor::spawn(None, IgnoringOwner, ()).await.unwrap();
    let name = |i: usize| format!("{i:06}-{}", "c".repeat(193));
    for i in 0..NAMES {
        a.register(name(i), &actor).unwrap();
    }
    until_seen(&a, &name(NAMES - 1)).await;
    let addr = a.local_addr().unwrap().to_string();
    let (code, out) = members_command(&addr, &[]).await;
    assert_eq!(code, Some(0), "{out:?}");
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out[1].starts_with("a ") && out[1].ends_with(&format!("… and {} more", NAMES - 5)),
        "{}",
        out[1]
    );
    // Every name, one a line, though the list came in pages.
    let (code, out) = members_command(&addr, &["--actors"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(out.len(), 1 + NAMES, "the header and the names");
    assert!(out.iter().any(|l| l.contains(&name(NAMES - 1))));
    // The library's member list is complete too.
    let client = Node::builder()
        .secret(Secret::new(SECRET).unwrap())
        .start()
        .await
        .unwrap();
    let members = client.members_at(&addr).await.unwrap();
    assert_eq!(members[0].actors.len(), NAMES);
    assert_eq!(members[0].state, MemberState::Up);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_binary_refuses_spawns_past_max_hosted_in_a_few_lines() {
    const REFUSED: usize = 300;
    let secrets = SecretDir::create().unwrap();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_duologue"));
    let args = [
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
        "--max-hosted".to_owned(),
        "3".to_owned(),
    ];
    let mut target = duologue_testkit::NodeProcess::start(exe, "target", &args, WAIT)
        .await
        .unwrap();
    let client = Node::builder()
        .secret(Secret::from_file(secrets.secret()).unwrap())
        .start()
        .await
        .unwrap();
    let addr = target.addr.to_string();
    for i in 0..3 {
        client
            .spawn_at(&addr, ActorSpec::new("seq-check", format!("s{i}")))
            .await
            .unwrap();
    }
    for i in 0..REFUSED {
        let refused = client
            .spawn_at(&addr, ActorSpec::new("seq-check", format!("more-{i}")))
            .await;
        assert!(
            matches!(refused, Err(SpawnError::LimitReached { .. })),
            "{refused:?}"
        );
    }
    client.shutdown().await;
    target
        .child
        .signal(duologue_testkit::Signal::SIGTERM)
        .unwrap();
    let mut lines = 0;
    while let Some(line) = target.child.stderr_line(WAIT).await.unwrap() {
        if line.contains("refused a spawn") {
            lines += 1;
        }
    }
    assert_eq!(target.child.wait(WAIT).await.unwrap(), Some(0));
    assert!(
        (1..=15).contains(&lines),
        "{lines} lines for {REFUSED} refusals"
    );
}

/// A node started before its seed joins the cluster once the seed is up: it keeps
/// gossiping to the seed's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_seed_joins_once_the_seed_is_up() {
    let seed_addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let a = node("a", &[seed_addr]).await;
    let b = node_with_gossip("b", seed_addr).await;
    cluster::wait_members(&a, 2, WAIT).await;
    cluster::wait_members(&b, 2, WAIT).await;
}

/// A node gossiping on `gossip_listen`, with no seeds.
async fn node_with_gossip(name: &str, gossip_listen: std::net::SocketAddr) -> Node {
    let secret = Secret::new(SECRET).unwrap();
    cluster_lab::seq_check_node(name, &[], secret, |config| {
        if let Some(cluster) = &mut config.cluster {
            cluster.gossip_listen = gossip_listen;
        }
    })
    .await
}

/// Subscribers that subscribe while members join: each one's `Current` and the events
/// after it add up to the view, with no member joined twice (an overlap) and none
/// missing (a gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_and_the_events_after_it_neither_overlap_nor_leave_a_gap() {
    use std::collections::BTreeSet;
    let a = node("a", &[]).await;
    let seed = a.gossip_addr().unwrap();
    let joining = tokio::spawn(async move {
        let mut others = Vec::new();
        for name in ["b", "c", "d"] {
            others.push(node(name, &[seed]).await);
        }
        others
    });
    let mut subscribers = Vec::new();
    while !joining.is_finished() || subscribers.len() < 3 {
        subscribers.push(cluster::listen(&a).await);
        tokio::task::yield_now().await;
    }
    let _others = joining.await.unwrap();
    cluster::wait_members(&a, 4, WAIT).await;
    let wanted: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
    for (i, mut events) in subscribers.into_iter().enumerate() {
        let mut view: BTreeSet<String> = match events.recv().await {
            Some(ClusterEvent::Current(members)) => {
                members.into_iter().map(|m| m.identity.name).collect()
            }
            other => panic!("subscriber {i} first got {other:?}"),
        };
        tokio::time::timeout(WAIT, async {
            while view != wanted {
                match events.recv().await.expect("listener gone") {
                    ClusterEvent::Joined(member) => assert!(
                        view.insert(member.identity.name.clone()),
                        "subscriber {i}: {} joined twice",
                        member.identity.name
                    ),
                    ClusterEvent::Removed(member) => {
                        view.remove(&member.identity.name);
                    }
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("subscriber {i} misses members: {view:?}"));
    }
}

/// A node joins a cluster from code as it does from flags: `NodeBuilder::cluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_built_with_a_cluster_setting_joins_it() {
    let a = node("a", &[]).await;
    let mut cluster = duologue::settings::ClusterConfig::new("127.0.0.1:0".parse().unwrap());
    cluster.gossip_interval = Duration::from_millis(100);
    cluster.seeds = vec![a.gossip_addr().unwrap().to_string()];
    let b = Node::builder()
        .name("b")
        .listen("127.0.0.1:0".parse().unwrap())
        .secret(Secret::new(SECRET).unwrap())
        .cluster(cluster)
        .start()
        .await
        .unwrap();
    cluster::wait_members(&a, 2, WAIT).await;
    cluster::wait_members(&b, 2, WAIT).await;
}

/// Spawns on any node that offers the kind spread a burst over the nodes although the
/// view's figures lag a gossip round (the placing node counts its own placements), and a
/// name already held anywhere is refused `NameTaken`, whichever node would get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_on_any_node_spread_and_a_name_held_anywhere_is_refused() {
    use duologue::cluster::SpawnOn;
    let a = node("a", &[]).await;
    let b = node("b", &[a.gossip_addr().unwrap()]).await;
    cluster::wait_members(&a, 2, WAIT).await;
    cluster::wait_members(&b, 2, WAIT).await;

    let names: Vec<String> = (0..20).map(|i| format!("cart-{i}")).collect();
    let spawned = futures::future::join_all(
        names
            .iter()
            .map(|name| a.spawn(SpawnOn::AnyOffering, ActorSpec::new("seq-check", name))),
    )
    .await;
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for spawned in spawned {
        *per_node.entry(spawned.unwrap().node).or_default() += 1;
    }
    assert!(
        per_node.len() == 2 && per_node.values().all(|placed| *placed >= 8),
        "{per_node:?}"
    );

    // At once, before the view shows it, and from the other node once it does.
    match a
        .spawn(SpawnOn::AnyOffering, ActorSpec::new("seq-check", "cart-0"))
        .await
    {
        Err(SpawnError::NameTaken { name, .. }) => assert_eq!(name, "cart-0"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    until_seen(&b, "cart-0").await;
    match b
        .spawn(SpawnOn::AnyOffering, ActorSpec::new("seq-check", "cart-0"))
        .await
    {
        Err(SpawnError::NameTaken { name, .. }) => assert_eq!(name, "cart-0"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
}

/// A polite leave lasts until every peer has it, not only a fixed time: with no linger at
/// all, the leaving node still gossips until both peers have its leave, and both tell
/// `Left`, not a death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polite_leave_ends_once_every_peer_has_it() {
    let secret = || Secret::new(SECRET).unwrap();
    let a = cluster_lab::seq_check_node("a", &[], secret(), |_| {}).await;
    let seeds = [a.gossip_addr().unwrap()];
    let c = cluster_lab::seq_check_node("c", &seeds, secret(), |_| {}).await;
    let b = cluster_lab::seq_check_node("b", &seeds, secret(), |config| {
        if let Some(cluster) = &mut config.cluster {
            cluster.leave_linger = Duration::ZERO;
        }
    })
    .await;
    for node in [&a, &b, &c] {
        cluster::wait_members(node, 3, WAIT).await;
    }
    let mut events = [cluster::listen(&a).await, cluster::listen(&c).await];
    tokio::time::timeout(WAIT, b.shutdown())
        .await
        .expect("the leave ends within the drain");
    for events in &mut events {
        cluster::next_event(events, WAIT, |event| match event {
            ClusterEvent::Left(member) if member.identity.name == "b" => Some(()),
            _ => None,
        })
        .await;
    }
    a.shutdown().await;
    c.shutdown().await;
}

/// A session to a member the cluster declares unreachable says so at once: its stream is
/// given up with `InterruptCause::PeerUnreachable` (not at its silence deadline), a call
/// waiting for its reply fails with `CallError::PeerUnreachable` (not at its own timeout),
/// new casts and calls fail at once with the same verdict, and the session resumes (and
/// takes sends again) when the member comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_to_a_member_declared_unreachable_hears_it_at_once() {
    use duologue::{CallError, InterruptCause, SendError, SessionSignal};
    use duologue_actors::seq_check::proto::{ReportRequest, Tick};
    // Every part bound by name: each lives to the end of the test.
    let ToB {
        secrets: _secrets,
        a: _a,
        b,
        check,
        mut heard,
        _owner,
    } = session_to_b(|_| {}).await;

    b.child.signal(duologue_testkit::Signal::SIGSTOP).unwrap();
    stopped(b.child.pid().unwrap()).await;
    // Far longer than detection takes: only the verdict ends it in time.
    let call = tokio::spawn(async move {
        let called = check
            .call(ReportRequest {}, Duration::from_secs(3600))
            .await;
        (check, called)
    });
    duologue_testkit::probe::signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Interrupted(_, InterruptCause::PeerUnreachable) => Some(()),
        _ => None,
    })
    .await;
    let (check, called) = tokio::time::timeout(WAIT, call)
        .await
        .expect("the waiting call ends with the verdict")
        .unwrap();
    assert!(
        matches!(called, Err(CallError::PeerUnreachable)),
        "{called:?}"
    );
    // Under the verdict, nothing new waits for a resume that may never come.
    let tick = Tick {
        n: 1,
        filler: Default::default(),
    };
    match check.try_cast(tick.clone()) {
        Err(SendError::PeerUnreachable { .. }) => {}
        other => panic!("expected PeerUnreachable, got {other:?}"),
    }
    let called = tokio::time::timeout(
        WAIT,
        check.call(ReportRequest {}, Duration::from_secs(3600)),
    )
    .await
    .expect("a call under the verdict fails at once");
    assert!(
        matches!(called, Err(CallError::PeerUnreachable)),
        "{called:?}"
    );

    b.child.signal(duologue_testkit::Signal::SIGCONT).unwrap();
    duologue_testkit::probe::signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Resumed(..) => Some(()),
        _ => None,
    })
    .await;
    check.cast(tick).await.unwrap();
    check.call(ReportRequest {}, WAIT).await.unwrap();
}

/// A node SIGKILLed and started again under its name is a new incarnation: the sessions
/// to the old one are lost (`LostReason::PeerRestarted`) as soon as the cluster knows the
/// new one, long before their resume deadline, with what the old one never confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_under_its_name_loses_the_sessions_to_its_previous_process() {
    use duologue::{CloseReason, LostReason, SessionSignal};
    let ToB {
        secrets,
        a,
        b,
        check,
        mut heard,
        _owner,
    } = session_to_b(|config| {
        // Longer than the test's wait: only the cluster's word ends the session in time.
        config.session.resume_timeout = Duration::from_secs(600);
    })
    .await;
    check
        .call(duologue_actors::seq_check::proto::ReportRequest {}, WAIT)
        .await
        .unwrap();

    b.child.signal(duologue_testkit::Signal::SIGKILL).unwrap();
    let _b_again = check_process("b", &secrets, &a).await;
    let (_, reason) = duologue_testkit::probe::signal_where(&mut heard, WAIT, |s| match s {
        SessionSignal::Lost(lost) => Some(CloseReason::Lost(lost.reason.clone())),
        SessionSignal::Closed { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(
        matches!(reason, CloseReason::Lost(LostReason::PeerRestarted { .. })),
        "{reason:?}"
    );
}

/// Node `a` in this process and node `b` a process in its cluster hosting the actor
/// `check`, with a session from `a` to it whose signals are heard.
struct ToB {
    secrets: SecretDir,
    a: duologue::Node,
    b: duologue_testkit::NodeProcess,
    check: duologue::RemoteRef<duologue_actors::seq_check::SeqCheck>,
    heard:
        tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, duologue_testkit::probe::Heard)>,
    /// The session's owner, kept alive.
    _owner: ractor::ActorRef<duologue::SessionMsg>,
}

/// [`ToB`], with `a`'s settings tweaked.
async fn session_to_b(tweak: impl FnOnce(&mut NodeConfig)) -> ToB {
    let secrets = SecretDir::create().unwrap();
    let secret = Secret::from_file(secrets.secret()).unwrap();
    let a = cluster_lab::seq_check_node("a", &[], secret, tweak).await;
    let b = check_process("b", &secrets, &a).await;
    cluster::wait_members(&a, 2, WAIT).await;
    let (owner, heard) = duologue_testkit::probe::recorder().await;
    let check = a
        .connect((b.addr.to_string(), "check"))
        .owner(&owner)
        .await
        .unwrap();
    ToB {
        secrets,
        a,
        b,
        check,
        heard,
        _owner: owner,
    }
}

/// Starts a node process `name` hosting the `seq-check` actor `check`, in `a`'s cluster.
async fn check_process(
    name: &str,
    secrets: &SecretDir,
    a: &duologue::Node,
) -> duologue_testkit::NodeProcess {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_duologue"));
    let seed = a.gossip_addr().unwrap().to_string();
    let mut args = duologue_testkit::cluster_flags(secrets.secret(), "100ms", Some(&seed));
    args.extend(["--actor".to_owned(), "seq-check:check".to_owned()]);
    duologue_testkit::NodeProcess::start(exe, name, &args, WAIT)
        .await
        .unwrap()
}

/// Waits until the process `pid` is stopped (its state in `/proc` is `T`): a signal is
/// delivered when the process is next scheduled, not when `kill` returns.
async fn stopped(pid: u32) {
    tokio::time::timeout(WAIT, async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // `pid (comm) state ...`: the state follows the last ')'.
            let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
            if state == Some("T") {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the process stops within the wait bound");
}
