//! A cluster holding many names, idle: what it costs each node to know them. Starts
//! `--nodes` node processes on 127.0.0.1 (this bench binary again, in its child mode),
//! each registering `--names` actors under names of their own, and joins them itself as
//! a member with no names (a client that only looks names up). Measures:
//!
//! - how long until every name is in this member's view (the publication lag, from the
//!   first registration to the last name seen);
//! - then, with nothing happening, each process's CPU (user + system, from
//!   `/proc/PID/stat`) over `--idle-secs`, as a share of one core; and its memory.
//!
//! ```text
//! cargo bench --bench cluster_names -- [--nodes 4] [--names 25000] [--idle-secs 20]
//! ```
//!
//! Figures in `benches/README.md` ("names in a cluster"). Every child is killed on every
//! way out (`ChildGuard`).

use duologue_testkit::args;

use std::time::{Duration, Instant};

use duologue::{Node, NodeConfig, Secret, settings::ClusterConfig};
use duologue_testkit::{ChildGuard, IgnoringOwner, Memory, cpu_time};
use ractor::Actor;

const SECRET: &str = "cluster names bench secret, 32 b";
/// The longest the bench waits for the cluster to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(600);

fn config(name: &str, seeds: Vec<String>, names: usize) -> anyhow::Result<NodeConfig> {
    let cluster = ClusterConfig {
        seeds,
        ..ClusterConfig::new("127.0.0.1:0".parse()?)
    };
    Ok(NodeConfig {
        name: name.into(),
        listen: Some("127.0.0.1:0".parse()?),
        cluster: Some(cluster),
        max_names: names + 1,
        max_hosted: names + 1,
        ..NodeConfig::default()
    })
}

/// Child mode: one node holding `names` names, until stdin closes.
async fn child(name: &str, seed: &str, names: usize) -> anyhow::Result<()> {
    let node = Node::builder()
        .config(config(name, vec![seed.to_owned()], names)?)
        .secret(Secret::new(SECRET)?)
        .start()
        .await?;
    for i in 0..names {
        let (actor, _) = Actor::spawn(None, IgnoringOwner, ()).await?;
        node.register(format!("{name}-cart-{i:06}"), &actor)?;
    }
    println!("registered {names}");
    // Until the parent closes stdin (or dies).
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    node.shutdown().await;
    Ok(())
}

fn mib(memory: Memory) -> f64 {
    memory.now as f64 / (1024.0 * 1024.0)
}

/// user + system CPU time of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    cpu_time(Some(pid)).unwrap_or_default().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(at) = argv.iter().position(|a| a == "--child") {
        let name = argv.get(at + 1).cloned().unwrap_or_default();
        let seed = argv.get(at + 2).cloned().unwrap_or_default();
        let names = usize::try_from(args::option(&argv, "--names", 25_000)?)?;
        return child(&name, &seed, names).await;
    }
    let nodes = usize::try_from(args::option(&argv, "--nodes", 4)?)?;
    let names = usize::try_from(args::option(&argv, "--names", 25_000)?)?;
    let idle = Duration::from_secs(args::option(&argv, "--idle-secs", 20)?);
    let total = nodes * names;

    // This process is the first member (the seed) and the observer.
    let observer = Node::builder()
        .config(config("observer", Vec::new(), 1)?)
        .secret(Secret::new(SECRET)?)
        .start()
        .await?;
    let seed = observer.gossip_addr().expect("clustered").to_string();
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut children = Vec::new();
    for i in 0..nodes {
        let name = format!("node-{i}");
        let args = vec![
            "--child".into(),
            name.clone(),
            seed.clone(),
            "--names".into(),
            names.to_string(),
        ];
        children.push(ChildGuard::spawn(&name, &exe, &args)?);
    }
    for child in &mut children {
        let line = child.stdout_line(CONVERGE_WITHIN).await?;
        anyhow::ensure!(
            line.as_deref() == Some(&format!("registered {names}")),
            "{} said {line:?}",
            child.name()
        );
    }
    let registered = started.elapsed();
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    loop {
        let changed = observer.members_changed();
        let members = observer.members()?;
        let seen: usize = members.iter().map(|m| m.actors.len()).sum();
        if members.len() == nodes + 1 && seen == total {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            anyhow::bail!("after {CONVERGE_WITHIN:?} the observer sees {seen} of {total} names");
        }
    }
    let converged = started.elapsed();
    eprintln!(
        "cluster_names: {nodes} nodes x {names} names: all registered after {:.1} s, all \
         {total} seen by the observer after {:.1} s",
        registered.as_secs_f64(),
        converged.as_secs_f64()
    );

    let pids: Vec<u32> = children.iter().filter_map(ChildGuard::pid).collect();
    let own = std::process::id();
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let own_before = cpu_seconds(own);
    tokio::time::sleep(idle).await;
    let secs = idle.as_secs_f64();
    let mut shares = Vec::new();
    for (pid, before) in pids.iter().zip(&before) {
        let share = (cpu_seconds(*pid) - before) / secs * 100.0;
        let rss = Memory::of(Some(*pid)).map_or(0.0, mib);
        eprintln!("  node pid {pid}: {share:.2} % of a core idle, RSS {rss:.1} MiB");
        shares.push(share);
    }
    let observer_share = (cpu_seconds(own) - own_before) / secs * 100.0;
    let observer_rss = Memory::of(Some(own)).map_or(0.0, mib);
    shares.sort_by(f64::total_cmp);
    eprintln!(
        "cluster_names: idle over {secs:.0} s with {total} names: nodes {:.2} / {:.2} / {:.2} \
         % of a core (min / median / max); the observer (no names) {observer_share:.2} %, \
         RSS {observer_rss:.1} MiB",
        shares.first().copied().unwrap_or_default(),
        shares.get(shares.len() / 2).copied().unwrap_or_default(),
        shares.last().copied().unwrap_or_default(),
    );
    for child in &mut children {
        child.close_stdin();
    }
    for child in &mut children {
        let _ = child.wait(Duration::from_secs(10)).await;
    }
    observer.shutdown().await;
    Ok(())
}
