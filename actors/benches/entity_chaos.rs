//! At most one activation per id while members come and go, at full size: the run of
//! `duologue_testkit::entity_chaos` (node processes are this binary again, in its child
//! mode), whose module documentation says what it checks. The test `entity_chaos` runs it
//! in CI, shorter.
//!
//! ```text
//! cargo bench --bench entity_chaos -- [--seconds 60] [--ids 10000] [--callers 32]
//!     [--calls-between 20000] [--seed N]
//! ```
//!
//! Figures in `benches/README.md` ("entity_chaos").

use duologue_testkit::args;
use duologue_testkit::entity_chaos::{self, CHILD_FLAG, Chaos};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == CHILD_FLAG) {
        return entity_chaos::child(&argv).await;
    }
    let chaos = Chaos {
        seconds: args::option(&argv, "--seconds", 60)?,
        ids: args::option(&argv, "--ids", 10_000)?,
        callers: args::option(&argv, "--callers", 32)?,
        calls_between: args::option(&argv, "--calls-between", 20_000)?,
        seed: args::option(&argv, "--seed", u64::from(std::process::id()))?,
    };
    let report = entity_chaos::run(&std::env::current_exe()?, &chaos).await?;
    println!("{report}");
    anyhow::ensure!(report.holds(), "entity_chaos: violations above");
    println!("entity_chaos: ok");
    Ok(())
}
