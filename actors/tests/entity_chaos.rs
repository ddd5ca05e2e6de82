//! Issue 27's verification, in CI: node processes (this binary again, in its child mode)
//! hosting an entity kind, random joins, polite leaves and SIGKILLs for a minute while a
//! client outside the cluster calls 10 000 ids; from an independent record of every
//! activation's start and stop and every call handled, it fails on an acknowledged call
//! not handled exactly once, and on two activations of an id at once (outside the window
//! between a kill and its verdict, when the killed process's activations are gone).
//! `duologue_testkit::entity_chaos` says how; the bench `entity_chaos` runs it longer.
//!
//! Not a libtest binary (`harness = false`): its child mode takes the node's arguments.
//! The seed is printed, and `ENTITY_CHAOS_SEED` replays its schedule of joins, leaves and
//! kills (not its timing).

use std::time::Duration;

use duologue_testkit::entity_chaos::{self, CHILD_FLAG, Chaos};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == CHILD_FLAG) {
        return entity_chaos::child(&argv).await;
    }
    // `cargo test NAME` passes its filter here too: run only when it names this test.
    if argv
        .iter()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"entity_chaos".contains(a.as_str()))
    {
        return Ok(());
    }
    let seed = match std::env::var("ENTITY_CHAOS_SEED") {
        Ok(seed) => seed.parse()?,
        Err(_) => rand_seed(),
    };
    let chaos = Chaos {
        seconds: 60,
        ids: 10_000,
        callers: 16,
        // About 3 s apart in a debug build on two cores (or sooner: 5 s at most).
        calls_between: 1_000,
        seed,
    };
    println!("entity_chaos: seed {seed} (ENTITY_CHAOS_SEED={seed} replays its schedule)");
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        entity_chaos::run(&std::env::current_exe()?, &chaos),
    )
    .await
    .map_err(|_| anyhow::anyhow!("entity_chaos did not end within 300 s"))??;
    println!("{report}");
    anyhow::ensure!(report.holds(), "entity_chaos: violations above");
    anyhow::ensure!(
        report.acknowledged > 1_000 && report.actions.len() >= 10,
        "entity_chaos: too little happened to prove anything"
    );
    println!("test entity_chaos ... ok");
    Ok(())
}

/// A seed from the clock: each CI run tries another schedule.
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
