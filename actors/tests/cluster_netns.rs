//! The cluster across real network stacks: five Linux network namespaces with their own
//! addresses around a router (`duologue_testkit::Lab`), four `duologue node` processes and
//! an observer node in this process, one link with 20 ms latency and 1 % loss each way.
//! Membership converges; a node that starts before its DNS seeds joins when they come; a
//! lookup finds an actor on any node; a remote spawn lands where asked; a partition heals
//! and names come back; a killed node is declared dead. The figures are printed
//! (`cargo test --test cluster_netns -- --nocapture`); `benches/cluster.rs` runs the same
//! steps several times for medians.
//!
//! Needs root, `ip` and `iptables` (`.ci/test` installs iptables). The kernel here has no
//! `sch_netem`, so the lab emulates it with NFQUEUE (see `tests/testkit/netns.rs`).

use std::sync::Arc;
use std::time::Duration;

use duologue_actors_testkit::cluster_lab::{ClusterLab, OBSERVER};
use duologue_testkit::Lab;

#[test]
fn a_cluster_on_five_network_stacks_converges_finds_spawns_heals_and_detects_death() {
    let lab = Arc::new(Lab::new(5).expect("cannot build the network lab (root, ip, iptables?)"));
    let inside = lab.clone();
    let figures = lab
        .run_in(OBSERVER, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let cluster = ClusterLab::start(
                        &inside,
                        env!("CARGO_BIN_EXE_duologue").as_ref(),
                        Duration::from_millis(250),
                    )
                    .await;
                    cluster.run_scenario(&inside).await
                })
        })
        .expect("the observer thread failed");
    eprintln!("{figures}");
}
