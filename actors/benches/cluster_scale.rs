//! The cluster at a larger size than the lab: N nodes in this process on 127.0.0.1
//! (each with its own gossip socket, server and `$node` actor), seeded by the first
//! three. Measures the time until every node sees all N up, then the time until every
//! other node declares a dropped node dead, and the process's memory and CPU.
//!
//! ```text
//! cargo bench --bench cluster_scale -- [--nodes 100] [--interval-ms 1000]
//! ```
//!
//! One process on two cores: every node's gossip competes for the same CPU, so the
//! figures are an upper bound of what N machines would see. Figures in
//! `benches/README.md`, "cluster". On stderr: a bar per phase (at a terminal) and a
//! summary.

use duologue_testkit::args;

use std::time::{Duration, Instant};

use duologue::{Node, NodeConfig, Secret, cluster::MemberState, settings::ClusterConfig};
use duologue_testkit::progress::{self, Summary};
use duologue_testkit::{Memory, cpu_time};

fn cpu_seconds(pid: Option<u32>) -> f64 {
    cpu_time(pid).unwrap_or_default().as_secs_f64()
}

const WAIT: Duration = Duration::from_secs(300);

async fn node(name: String, seeds: &[String], interval: Duration) -> anyhow::Result<Node> {
    let mut cluster = ClusterConfig::new("127.0.0.1:0".parse()?);
    cluster.gossip_interval = interval;
    cluster.seeds = seeds.to_vec();
    Ok(Node::builder()
        .config(NodeConfig {
            name,
            listen: Some("127.0.0.1:0".parse()?),
            cluster: Some(cluster),
            ..NodeConfig::default()
        })
        .secret(Secret::new("cluster scale bench secret, 32 b")?)
        .start()
        .await?)
}

/// Waits until `wanted` holds of `node`'s members, on its change notification.
async fn until(node: &Node, wanted: impl Fn(&[duologue::cluster::Member]) -> bool) {
    loop {
        let changed = node.members_changed();
        if wanted(&node.members().unwrap_or_default()) {
            return;
        }
        changed.await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let n = usize::try_from(args::option(&argv, "--nodes", 100)?)?;
    let interval = Duration::from_millis(args::option(&argv, "--interval-ms", 1000)?);
    let mut nodes = Vec::with_capacity(n);
    let mut seeds = Vec::new();
    let started = Instant::now();
    let starting = progress::bar("cluster_scale", n as u64);
    starting.set_message("nodes started");
    for i in 0..n {
        let node = node(format!("node-{i:04}"), &seeds, interval).await?;
        if seeds.len() < 3 {
            seeds.push(node.gossip_addr().expect("clustered").to_string());
        }
        nodes.push(node);
        starting.inc(1);
    }
    starting.finish_and_clear();
    let all_started = started.elapsed();
    let converging = Instant::now();
    let up =
        |m: &[duologue::cluster::Member]| m.iter().filter(|m| m.state == MemberState::Up).count();
    let seeing = progress::bar("cluster_scale", n as u64);
    seeing.set_message(format!("nodes that see all {n} up"));
    let converge = nodes.iter().map(|node| async {
        until(node, |m| up(m) == n).await;
        seeing.inc(1);
    });
    tokio::time::timeout(WAIT, futures::future::join_all(converge)).await?;
    seeing.finish_and_clear();
    let converged = converging.elapsed();
    // Steady state: what N nodes gossiping cost this process for a few intervals.
    let cpu_before = cpu_seconds(None);
    let steady = Instant::now();
    let measuring = progress::spinner("cluster_scale");
    measuring.set_message(format!(
        "steady state: the cost of {n} nodes for {:?}",
        interval * 10
    ));
    tokio::time::sleep(interval * 10).await;
    measuring.finish_and_clear();
    let cpu_per_node_per_s =
        (cpu_seconds(None) - cpu_before) / steady.elapsed().as_secs_f64() / n as f64;
    let rss = Memory::of(None).map_or(0.0, |m| m.now as f64 / (1024.0 * 1024.0));
    // One node dies (every handle dropped: no farewell): every other declares it dead.
    let victim = nodes.pop().expect("nodes");
    let name = victim.identity().name.clone();
    let died = Instant::now();
    drop(victim);
    let dead = |m: &[duologue::cluster::Member]| {
        m.iter()
            .any(|m| m.identity.name == name && m.state == MemberState::Unreachable)
    };
    let declaring = progress::bar("cluster_scale", nodes.len() as u64);
    declaring.set_message(format!("nodes that declared {name} dead"));
    let detections = nodes.iter().map(|node| async {
        until(node, dead).await;
        declaring.inc(1);
        died.elapsed()
    });
    let mut times = tokio::time::timeout(WAIT, futures::future::join_all(detections)).await?;
    declaring.finish_and_clear();
    times.sort();
    println!(
        "cluster_scale nodes={n} gossip_interval={interval:?} started_in_s={:.1} converged_s={:.2} \
         dead_first_s={:.2} dead_median_s={:.2} dead_last_s={:.2} rss_mib={rss:.0} \
         rss_per_node_kib={:.0} cpu_ms_per_node_per_s={:.2}",
        all_started.as_secs_f64(),
        converged.as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() / 2].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        rss * 1024.0 / n as f64,
        cpu_per_node_per_s * 1e3,
    );
    let mut summary = Summary::new("cluster_scale");
    summary
        .figure(format_args!(
            "{n} nodes gossiping every {interval:?}: started in {:.1} s, all up everywhere \
             after {:.2} s",
            all_started.as_secs_f64(),
            converged.as_secs_f64()
        ))
        .figure(format_args!(
            "a dropped node declared dead by the others after {:.2} s (first) to {:.2} s (last)",
            times[0].as_secs_f64(),
            times[times.len() - 1].as_secs_f64()
        ))
        .figure(format_args!(
            "{rss:.0} MiB resident, {:.2} ms CPU a node a second",
            cpu_per_node_per_s * 1e3
        ));
    progress::eprintln(summary.ok());
    // The nodes end with the process (a polite shutdown lingers to say it leaves).
    drop(nodes);
    Ok(())
}
