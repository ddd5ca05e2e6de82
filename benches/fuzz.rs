//! The fuzz of issue 13 at full size: the frame decoder and the session core fed a
//! million generated inputs, with no panic and every refusal typed. The generator and the
//! checks are `runtime/fuzz.rs` (through `duologue::bench_api`); CI runs the same code on
//! 20 000 inputs (`cargo test -p duologue --lib fuzz`).
//!
//! ```text
//! cargo bench -p duologue-actors --features bench-internals --bench fuzz
//! cargo bench -p duologue-actors --features bench-internals --bench fuzz -- --inputs 200000 --seed 7
//! cargo bench -p duologue-actors --features bench-internals --bench fuzz -- --seed 7 --replay 1234
//! ```
//!
//! `--inputs N` (default 1 000 000) inputs of the run seeded `--seed S` (default: a random
//! seed, printed first). Input `i` of seed `S` is always the same bytes, so a failure is
//! reproduced with `--seed S --replay i`, which prints that input and runs it alone.
//! Release builds do not check arithmetic overflow; to have the library checked as tests
//! check it, add `--config 'profile.bench.package.duologue.overflow-checks=true'`.
//!
//! Prints progress to stderr, then one line:
//! `fuzz inputs=... seed=... panics=... untyped=... ... refusals_by_reason={...} elapsed=...`
//! (`untyped`: inputs after which a check failed), and exits non-zero, with the failed
//! inputs, if any input panicked or broke a check.

#[path = "args.rs"]
mod args;
use args::option;
use std::time::Instant;

use duologue::bench_api::{fuzz, fuzz_input};

/// Inputs per progress line.
const CHUNK: u64 = 100_000;

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
            println!("input {index} of seed {seed}:\n{}", fuzz_input(seed, index));
            index..index + 1
        }
        None => 0..inputs,
    };
    eprintln!("fuzz: seed {seed}, inputs {}..{}", range.start, range.end);
    let started = Instant::now();
    let end = range.end;
    let mut chunks = range
        .clone()
        .step_by(CHUNK as usize)
        .map(|start| start..(start + CHUNK).min(end));
    let mut summary = fuzz(seed, chunks.next().unwrap_or(range));
    loop {
        if replay.is_none() {
            eprintln!(
                "fuzz: {} inputs, {} panics, {} untyped, {:.1} s",
                summary.inputs(),
                summary.panics(),
                summary.violations(),
                started.elapsed().as_secs_f64()
            );
        }
        let Some(chunk) = chunks.next() else { break };
        summary.merge(fuzz(seed, chunk));
    }
    println!("{summary} elapsed={:.1}s", started.elapsed().as_secs_f64());
    if summary.is_clean() {
        return Ok(());
    }
    for failure in summary.failures() {
        eprintln!("{failure}\n");
    }
    for index in summary.failed_inputs() {
        eprintln!(
            "replay: cargo bench -p duologue-actors --features bench-internals --bench fuzz \
             -- --seed {seed} --replay {index}   (with this run's `--config`s, if any)"
        );
    }
    std::process::exit(1);
}
