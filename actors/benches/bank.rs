//! Issue 28's bank, longer than the test: `duologue_testkit::bank` (its module
//! documentation says how) with the run's length, accounts and clients from the command
//! line. Account entities keep their state in a real PostgreSQL server under shard
//! leases, three node processes (this binary again, in its child mode) in network
//! namespaces of their own, while rounds of faults cut one node off, SIGKILL one and
//! SIGSTOP one for longer than its lease. Read back from the store: operations, faults,
//! lost, duplicated, unbalanced, overlapping lease epochs.
//!
//! ```text
//! cargo bench -p duologue-actors --bench bank -- [--seconds 300] [--accounts 1000]
//!     [--clients 16] [--lease-ms 2000] [--seed 28]
//! ```
//!
//! Needs root, `ip`, `iptables` and PostgreSQL's server programs, as the test `bank`
//! does. Fails when the bank does not balance. Figures in `benches/README.md` ("bank").

use std::time::Duration;

use duologue_testkit::args;
use duologue_testkit::bank::{self, CHILD_FLAG, Run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == CHILD_FLAG) {
        return bank::child(&argv).await;
    }
    let run = Run {
        seconds: args::option(&argv, "--seconds", 300)?,
        accounts: args::option(&argv, "--accounts", 1_000)?.max(1),
        clients: args::option(&argv, "--clients", 16)?.max(1),
        lease: Duration::from_millis(args::option(&argv, "--lease-ms", 2_000)?),
        seed: args::option(&argv, "--seed", 28)?,
    };
    println!(
        "bank: {} s, {} accounts, {} clients, leases of {:?}, seed {}",
        run.seconds, run.accounts, run.clients, run.lease, run.seed
    );
    let exe = std::env::current_exe()?;
    let report = tokio::task::spawn_blocking(move || bank::run(&exe, &run)).await??;
    println!("{report}");
    anyhow::ensure!(report.holds(), "bank: the bank does not balance (above)");
    println!("bank: balanced");
    Ok(())
}
