//! The fuzz of the frame decoder and the session core (issue 13), shared by
//! `benches/fuzz.rs` (a million inputs: [`run`], [`describe`]) and this module's test (a
//! smaller count, in CI). Built only for tests and with the feature `bench-internals`.
//!
//! Input `index` of the run seeded `seed` is a byte string drawn from them
//! ([`input_bytes`]); [`arbitrary`] makes it an [`Input`]: bytes straight into the
//! decoder, a corrupted encoding, a protobuf frame with any field values, or a
//! [`scenario`] (an initiator and an acceptor session, with the acceptor's resume gates,
//! the fuzzer on the wire between them, from the greeting, mid-conversation, interrupted,
//! resuming or finishing). Each input runs under [`std::panic::catch_unwind`]: a panic is
//! a failure, and so is a broken check ([`check`]): a refusal that is not given with its
//! typed reason, a session that could wait without end. Refusals are counted by reason.
//!
//! The session core stays as it is (pure); everything here calls it as the driver and the
//! node's service do.

use std::fmt;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};

use arbitrary::Unstructured;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

mod check;
mod decode;
mod input;
mod scenario;

use check::{Counts, Tally, Violation};
use input::{Context, Input, Start, mutate};

/// The longest input, in bytes.
const MAX_INPUT_BYTES: usize = 1536;
/// Failures kept in a summary, with their inputs.
const KEPT_FAILURES: usize = 8;

/// The bytes of input `index` of the run seeded `seed`.
pub(crate) fn input_bytes(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut bytes = vec![0; rng.random_range(0..=MAX_INPUT_BYTES)];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// The input `bytes` make.
pub(crate) fn input(bytes: &[u8]) -> Input {
    Unstructured::new(bytes)
        .arbitrary()
        .unwrap_or_else(|_| Input::Raw(bytes.to_vec()))
}

/// Runs one input; `Err` on a broken check.
pub(crate) fn run_input(input: &Input, tally: &mut Tally) -> Result<(), Violation> {
    tally.input(match input {
        Input::Raw(_) => "raw",
        Input::Corrupted { .. } => "corrupted",
        Input::Structured(_) => "structured",
        Input::Scenario(scenario) => match scenario.start {
            Start::Greeting => "scenario.greeting",
            Start::Established { .. } => "scenario.established",
            Start::Interrupted { .. } => "scenario.interrupted",
            Start::Resuming { .. } => "scenario.resuming",
            Start::Finishing { .. } => "scenario.finishing",
        },
    });
    match input {
        Input::Raw(bytes) => decode::bytes(bytes, tally),
        Input::Corrupted { frame, mutations } => {
            let context = Context::default();
            let mut bytes = frame.build(&context).encode_to_vec();
            mutate(&mut bytes, &mutations[..mutations.len().min(8)], &context);
            decode::bytes(&bytes, tally)
        }
        Input::Structured(frame) => decode::structured(frame.build(&Context::default()), tally),
        Input::Scenario(scenario) => scenario::run(scenario, tally),
    }
}

/// An input that failed: how to find it again and what went wrong.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) seed: u64,
    pub(crate) index: u64,
    /// It panicked (rather than broke a check).
    pub(crate) panicked: bool,
    pub(crate) message: String,
}

impl fmt::Display for Failure {
    /// What went wrong, then the input: its bytes, and what they make.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.panicked {
            "panicked"
        } else {
            "broke a check"
        };
        writeln!(
            f,
            "input {} of seed {} {what}: {}",
            self.index, self.seed, self.message
        )?;
        f.write_str(&describe(self.seed, self.index))
    }
}

/// Input `index` of the run seeded `seed`: its bytes (hex) and what they make.
pub fn describe(seed: u64, index: u64) -> String {
    let bytes = input_bytes(seed, index);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes: {hex}\ninput: {:#?}", input(&bytes))
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Summary {
    pub(crate) seed: u64,
    pub(crate) inputs: u64,
    pub(crate) panics: u64,
    /// Inputs after which a check failed.
    pub(crate) violations: u64,
    pub(crate) tally: Tally,
    /// The first few failures.
    pub(crate) failures: Vec<Failure>,
}

impl Summary {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            inputs: 0,
            panics: 0,
            violations: 0,
            tally: Tally::default(),
            failures: Vec::new(),
        }
    }

    /// Inputs run.
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// Inputs that panicked.
    pub fn panics(&self) -> u64 {
        self.panics
    }

    /// Inputs after which a check failed: a refusal not given with its typed reason, a
    /// session or gate that could wait without end.
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// The first few failures, each with its seed and index, what went wrong, and the
    /// input (its bytes and what they make).
    pub fn failures(&self) -> Vec<String> {
        self.failures.iter().map(ToString::to_string).collect()
    }

    /// The indices of the failures kept, to replay them.
    pub fn failed_inputs(&self) -> Vec<u64> {
        self.failures.iter().map(|f| f.index).collect()
    }

    /// Whether no input panicked or broke a check.
    pub fn is_clean(&self) -> bool {
        self.panics == 0 && self.violations == 0
    }

    /// Adds `other`'s inputs, counts and (the first few) failures.
    pub fn merge(&mut self, other: Self) {
        self.inputs += other.inputs;
        self.panics += other.panics;
        self.violations += other.violations;
        self.tally.merge(&other.tally);
        let room = KEPT_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(other.failures.into_iter().take(room));
    }
}

impl fmt::Display for Summary {
    /// `fuzz inputs=N seed=S panics=N untyped=N ... refusals_by_reason={...}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tally = &self.tally;
        write!(
            f,
            "fuzz inputs={} seed={} panics={} untyped={} inputs_by_kind={} parsed_frames={} \
             established={} resumed={} refusals={} refusals_by_reason={}",
            self.inputs,
            self.seed,
            self.panics,
            self.violations,
            Counts(&tally.inputs),
            tally.parsed,
            tally.established,
            tally.resumed,
            tally.total(),
            Counts(&tally.refusals),
        )
    }
}

/// Runs inputs `range` (by index) of the run seeded `seed`: each through the frame
/// decoder or a pair of sessions with the fuzzer on the wire, panics caught.
pub fn run(seed: u64, range: Range<u64>) -> Summary {
    run_with(seed, range, run_input)
}

/// Runs inputs `range` of the run seeded `seed` through `target`, catching panics.
fn run_with(
    seed: u64,
    range: Range<u64>,
    target: impl Fn(&Input, &mut Tally) -> Result<(), Violation>,
) -> Summary {
    let mut summary = Summary::new(seed);
    for index in range {
        let input = input(&input_bytes(seed, index));
        let tally = &mut summary.tally;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| target(&input, tally)));
        summary.inputs += 1;
        let (panicked, message) = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(violation)) => {
                summary.violations += 1;
                (false, violation)
            }
            Err(payload) => {
                summary.panics += 1;
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                (true, message)
            }
        };
        if summary.failures.len() < KEPT_FAILURES {
            summary.failures.push(Failure {
                seed,
                index,
                panicked,
                message,
            });
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::check::{Cause, Watched};
    use super::input::Owners;
    use super::*;
    use crate::auth::Secret;
    use crate::session::{Session, SessionConfig};
    use crate::wire::{FrameError, NodeIdentity};

    /// CI's count: the same generator and checks as the bench's million, in a debug
    /// build within seconds.
    const CI_INPUTS: u64 = 20_000;

    /// Refusals the CI count must reach, or the generator has stopped going deep.
    const EXPECTED: &[&str] = &[
        "frame.undecodable",
        "frame.empty",
        "frame.bad_length",
        "frame.bad_enum",
        "frame.missing_field",
        "frame.bad_envelope",
        "close.protocol.malformed",
        "close.protocol.unexpected_frame",
        "close.protocol.sequence_gap",
        "close.protocol.ack_beyond_sent",
        "close.protocol.credit_exceeded",
        "close.auth",
        "close.handshake_timeout",
        "close.refused_by_peer",
        "close.lost.resume_deadline",
        "close.lost.peer_ended",
        "gate.not_resumable.known",
        "gate.protocol",
        "gate.timed_out",
        "send.not_ready",
    ];

    #[test]
    fn generated_inputs_panic_nowhere_and_every_refusal_is_typed() {
        let seed = std::env::var("DUOLOGUE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED);
        let summary = run(seed, 0..CI_INPUTS);
        println!("{summary}");
        let failures: Vec<String> = summary.failures.iter().map(Failure::to_string).collect();
        assert!(summary.is_clean(), "{summary}\n{}", failures.join("\n"));
        let missing: Vec<&&str> = EXPECTED
            .iter()
            .filter(|reason| !summary.tally.refusals.contains_key(**reason))
            .collect();
        assert!(
            missing.is_empty(),
            "never refused for {missing:?}: {summary}"
        );
        assert!(summary.tally.established > 0 && summary.tally.resumed > 0);
    }

    #[test]
    fn a_panic_is_caught_counted_and_reported_with_its_seed_and_input() {
        let summary = run_with(9, 0..20, |input, _| match input {
            Input::Raw(_) => panic!("raw bytes refused loudly"),
            _ => Ok(()),
        });
        assert!(summary.panics > 0, "{summary}");
        assert_eq!(summary.violations, 0);
        let failure = &summary.failures[0];
        assert!(failure.panicked);
        assert!(matches!(
            input(&input_bytes(9, failure.index)),
            Input::Raw(_)
        ));
        let report = failure.to_string();
        assert!(
            report.contains("of seed 9 panicked: raw bytes refused loudly"),
            "{report}"
        );
        assert!(report.contains("input: Raw("), "{report}");
    }

    #[test]
    fn a_malformed_frame_that_leaves_a_session_open_breaks_a_check() {
        let now = Instant::now();
        let session = Session::acceptor(
            SessionConfig::default(),
            Secret::new("a test secret of enough bytes").unwrap(),
            NodeIdentity {
                name: "b".into(),
                incarnation: uuid::Uuid::from_u128(2),
            },
            [2; crate::wire::NONCE_LEN],
            now,
        );
        let owners = Owners {
            accept: true,
            confirm: true,
            consume: true,
        };
        let mut watched = Watched::new("acceptor", session, owners);
        let error = FrameError::Empty;
        let mut tally = Tally::default();
        // The session is not told: the check sees it still waiting for its greeting.
        let told_nothing = watched.call(now, &mut tally, Cause::Malformed(&error), |_| {});
        assert!(told_nothing.unwrap_err().contains("not closed"));
        let told = watched.call(now, &mut tally, Cause::Malformed(&error), |s| {
            s.handle_malformed(error.clone())
        });
        assert!(told.is_ok(), "{told:?}");
        assert_eq!(tally.refusals["close.protocol.malformed"], 1);
    }

    #[test]
    fn a_seed_and_an_index_name_one_input() {
        assert_eq!(input_bytes(1, 5), input_bytes(1, 5));
        assert_ne!(input_bytes(1, 5), input_bytes(1, 6));
        assert_ne!(input_bytes(1, 5), input_bytes(2, 5));
        // A run split in two counts what it counts in one.
        let mut halves = run(1, 0..100);
        halves.merge(run(1, 100..200));
        assert_eq!(halves.to_string(), run(1, 0..200).to_string());
    }
}
