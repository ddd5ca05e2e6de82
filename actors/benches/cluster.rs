//! The cluster's figures on a network lab, with medians: convergence, a DNS-seeded join,
//! lookup and call latency, remote spawn, partition and heal detection, and time to
//! declare a killed node dead. Each run builds five network namespaces (one link with
//! 20 ms latency and 1 % loss each way), four `duologue node` processes and an observer,
//! and plays the steps of `duologue_actors_testkit::cluster_lab`.
//!
//! ```text
//! cargo bench --bench cluster -- [--runs 5] [--interval-ms 1000]
//! ```
//!
//! Needs root, `ip` and `iptables`. Figures in `benches/README.md`, "cluster". On
//! stderr: a bar of the runs (at a terminal) and a summary.

use duologue_testkit::args;

use std::sync::Arc;
use std::time::Duration;

use duologue_actors_testkit::cluster_lab::{ClusterLab, Figures, OBSERVER};
use duologue_testkit::Lab;
use duologue_testkit::progress::{self, Summary};

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let runs = args::option(&argv, "--runs", 5)?;
    let interval = Duration::from_millis(args::option(&argv, "--interval-ms", 1000)?);
    let mut all = Vec::new();
    let bar = progress::bar("cluster", runs);
    bar.set_message("runs of the lab's scenario");
    for run in 1..=runs {
        let lab = Arc::new(Lab::new(5)?);
        let inside = lab.clone();
        let figures = lab.run_in(OBSERVER, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    let cluster = ClusterLab::start(
                        &inside,
                        env!("CARGO_BIN_EXE_duologue").as_ref(),
                        interval,
                    )
                    .await;
                    cluster.run_scenario(&inside).await
                })
        })?;
        progress::println(format_args!(
            "run {run}: {}",
            figures.to_string().replace('\n', " ")
        ));
        all.push(figures);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let median = |pick: fn(&Figures) -> Duration| {
        let mut values: Vec<Duration> = all.iter().map(pick).collect();
        values.sort();
        values[values.len() / 2]
    };
    let medians = Figures {
        converged: median(|f| f.converged),
        dns_joined: median(|f| f.dns_joined),
        lookup: median(|f| f.lookup),
        lookup_and_call: median(|f| f.lookup_and_call),
        spawn_answer: median(|f| f.spawn_answer),
        name_spread: median(|f| f.name_spread),
        partition_detected: median(|f| f.partition_detected),
        heal_detected: median(|f| f.heal_detected),
        death_detected: median(|f| f.death_detected),
    };
    println!(
        "cluster gossip_interval={interval:?} runs={runs} median: {}",
        medians.to_string().replace('\n', " ")
    );
    let mut summary = Summary::new("cluster");
    summary
        .figure(format_args!(
            "{runs} runs on five namespaces, gossip every {interval:?}; medians:"
        ))
        .figure(format_args!(
            "converged {:.1?}, lookup and call {:.1?}, partition seen {:.1?}, healed {:.1?}, \
             death declared {:.1?}",
            medians.converged,
            medians.lookup_and_call,
            medians.partition_detected,
            medians.heal_detected,
            medians.death_detected
        ));
    progress::eprintln(summary.ok());
    Ok(())
}
