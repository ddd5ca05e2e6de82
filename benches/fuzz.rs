//! The fuzz of issue 13 at full size: the frame decoder and the session core fed a
//! million generated inputs, with no panic and every refusal typed. The generator and the
//! checks are `runtime/session/testing/fuzz.rs` (`duologue::session_testing::fuzz`, not
//! API); CI runs the same code on 20 000 inputs (`cargo test -p duologue --lib fuzz`).
//!
//! ```text
//! cargo bench -p duologue --features bench-internals --bench fuzz
//! cargo bench -p duologue --features bench-internals --bench fuzz -- --inputs 200000 --seed 7
//! cargo bench -p duologue --features bench-internals --bench fuzz -- --seed 7 --replay 1234
//! ```
//!
//! `--inputs N` (default 1 000 000) inputs of the run seeded `--seed S` (default: a random
//! seed, printed first). Input `i` of seed `S` is always the same bytes, so a failure is
//! reproduced with `--seed S --replay i`, which prints that input and runs it alone.
//! Release builds do not check arithmetic overflow; to have the library checked as tests
//! check it, add `--config 'profile.bench.package.duologue.overflow-checks=true'`.
//!
//! Prints progress to stderr (a bar at a terminal, else a line every 100 000 inputs), then
//! one line:
//! `fuzz inputs=... seed=... panics=... untyped=... ... refusals_by_reason={...} elapsed=...`
//! (`untyped`: inputs after which a check failed), and exits non-zero, with the failed
//! inputs, if any input panicked or broke a check. A summary on stderr ends the run.

use duologue_testkit::args::option;
use std::time::Instant;

use duologue::session_testing::fuzz::{describe, run};
use duologue_testkit::progress::{self, Summary};

/// Inputs per step of the bar.
const CHUNK: u64 = 10_000;
/// Inputs per progress line, printed instead of the bar when stderr is not a terminal.
const LINE_EVERY: u64 = 100_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let inputs = option(&args, "--inputs", 1_000_000)?;
    let seed = option(&args, "--seed", rand::random())?;
    let replay = args
        .iter()
        .any(|a| a == "--replay")
        .then(|| option(&args, "--replay", 0))
        .transpose()?;
    let range = match replay {
        Some(index) => {
            println!("input {index} of seed {seed}:\n{}", describe(seed, index));
            index..index + 1
        }
        None => 0..inputs,
    };
    eprintln!("fuzz: seed {seed}, inputs {}..{}", range.start, range.end);
    let started = Instant::now();
    let bar = progress::bar("fuzz", range.end - range.start);
    bar.set_message(format!("inputs of seed {seed}"));
    let mut summary = run(seed, range.start..range.start);
    for start in range.clone().step_by(CHUNK as usize) {
        let end = (start + CHUNK).min(range.end);
        summary.merge(run(seed, start..end));
        bar.set_position(summary.inputs());
        if summary.panics() + summary.violations() > 0 {
            bar.set_message(format!(
                "inputs of seed {seed}: {} panics, {} untyped",
                summary.panics(),
                summary.violations()
            ));
        }
        let line_due = summary.inputs().is_multiple_of(LINE_EVERY) || end == range.end;
        if bar.is_hidden() && replay.is_none() && line_due {
            eprintln!(
                "fuzz: {} inputs, {} panics, {} untyped, {:.1} s",
                summary.inputs(),
                summary.panics(),
                summary.violations(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    bar.finish_and_clear();
    println!("{summary} elapsed={:.1}s", started.elapsed().as_secs_f64());
    let mut ending = Summary::new("fuzz");
    ending.figure(format_args!(
        "{} inputs of seed {seed} in {:.1} s: {} panics, {} untyped",
        summary.inputs(),
        started.elapsed().as_secs_f64(),
        summary.panics(),
        summary.violations()
    ));
    if summary.is_clean() {
        progress::eprintln(ending.ok());
        return Ok(());
    }
    for failure in summary.failures() {
        eprintln!("{failure}\n");
    }
    for index in summary.failed_inputs() {
        eprintln!(
            "replay: cargo bench -p duologue --features bench-internals --bench fuzz \
             -- --seed {seed} --replay {index}   (with this run's `--config`s, if any)"
        );
    }
    progress::eprintln(ending.failed("inputs panicked or broke a check"));
    std::process::exit(1);
}
