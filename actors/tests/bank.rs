//! Issue 28's bank, in CI: 1 000 account entities keeping their state in a real
//! PostgreSQL server under shard leases, three node processes in network namespaces of
//! their own (this binary again, in its child mode), clients depositing and withdrawing
//! by calls for a minute while one node is cut off, one SIGKILLed and one SIGSTOPped for
//! longer than its lease, each healed after. Read back from the store, not from the nodes:
//! every acknowledged operation is held exactly once, every balance is the sum of what
//! its account holds, and no two lease epochs of a shard overlap in time.
//! `duologue_testkit::bank` says how; the bench `bank` runs it longer.
//!
//! Not a libtest binary (`harness = false`): its child mode takes the node's arguments.
//! Needs root, `ip`, `iptables` and PostgreSQL's server programs (`.ci/test` installs them).

use std::time::Duration;

use duologue_testkit::bank::{self, CHILD_FLAG, Run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == CHILD_FLAG) {
        return bank::child(&argv).await;
    }
    // `cargo test NAME` passes its filter here too: run only when it names this test.
    if argv
        .iter()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"bank".contains(a.as_str()))
    {
        return Ok(());
    }
    let run = Run {
        seconds: 60,
        accounts: 1_000,
        clients: 16,
        lease: Duration::from_secs(2),
        seed: 28,
    };
    let exe = std::env::current_exe()?;
    let report = tokio::task::spawn_blocking(move || bank::run(&exe, &run)).await??;
    println!("{report}");
    anyhow::ensure!(report.holds(), "bank: the bank does not balance (above)");
    anyhow::ensure!(
        report.applied > 1_000 && report.faults.len() >= 3,
        "bank: too little happened to prove anything"
    );
    println!("test bank ... ok");
    Ok(())
}
