//! Session core micro-benchmarks: the sans-IO hot path, with no sockets and no runtime.
//!
//! ```bash
//! cargo bench -p duologue --features bench-internals --bench session_core
//! cargo bench -p duologue --features bench-internals --bench session_core -- encode/   # one group
//! ```
//!
//! Ids name the workload (`<messages>x<payload>`); throughput is in messages.
//!
//! - `encode/batch_*`: a domain `Batch` frame → `pb::Frame` → prost bytes in a reused
//!   buffer (what the driver and tonic's encoder do per frame written).
//! - `decode/batch_*`: prost bytes (a shared `Bytes`, as tonic hands it) → `pb::Frame` →
//!   `Frame::try_from` (what the driver does per frame read).
//! - `session/send_transmit_deliver_ack_1024x64B`: one full round between two established
//!   sessions: 1024 casts `send`, `poll_transmit` on the sender, `handle_frame` on the
//!   receiver, its owner's `confirm_delivered` + `consumed`, and the ack (and any grant)
//!   back through `handle_frame`. No encoding: frames move as domain values.
//! - `replay/resume_with_N_unacked`: N casts lost on the wire; `stream_broken` on both
//!   sides, `begin_resume` / `attach_stream`, the resume handshake (HMAC proofs), the
//!   replay, its delivery and ack. `N = 0` is the handshake alone.
//!
//! The sessions are the core's test harness (`duologue::session_testing::Harness`, not
//! API), on its hot path: frames move straight from one session to the other and nothing
//! is recorded. With the `CI` environment variable set, fewer samples and shorter
//! measurements.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput};
use duologue::session_testing::Harness;
use duologue::session_testing::frames::{batch_frame, decode_frame, encode_frame};

/// `(messages, payload bytes, label)` of the frames encoded and decoded.
const FRAMES: &[(usize, usize, &str)] = &[
    (1, 64, "batch_1x64B"),
    (256, 64, "batch_256x64B"),
    (256, 1024, "batch_256x1KiB"),
];

fn codec(c: &mut Criterion) {
    let mut encode = c.benchmark_group("encode");
    for &(messages, payload, label) in FRAMES {
        let frame = batch_frame(messages, payload);
        encode.throughput(Throughput::Elements(messages as u64));
        let mut buf = Vec::new();
        encode.bench_function(label, |b| {
            b.iter_batched(
                || frame.clone(),
                |frame| encode_frame(frame, black_box(&mut buf)),
                BatchSize::SmallInput,
            );
        });
    }
    encode.finish();

    let mut decode = c.benchmark_group("decode");
    for &(messages, payload, label) in FRAMES {
        let mut buf = Vec::new();
        encode_frame(batch_frame(messages, payload), &mut buf);
        let bytes = Bytes::from(buf);
        assert_eq!(decode_frame(bytes.clone()).envelopes(), messages);
        decode.throughput(Throughput::Elements(messages as u64));
        // The decoded frame is dropped inside the loop, as the session consumes it.
        decode.bench_function(label, |b| b.iter(|| decode_frame(bytes.clone())));
    }
    decode.finish();
}

fn session(c: &mut Criterion) {
    const MESSAGES: usize = 1024;
    let mut group = c.benchmark_group("session");
    let mut pair = Harness::established(64);
    let mut round = move || {
        pair.cast(MESSAGES);
        pair.transmit();
        let delivered = pair.take_delivered();
        pair.ack();
        (delivered, pair.unacked())
    };
    assert_eq!(
        round(),
        (MESSAGES as u64, 0),
        "a round delivers and acks all"
    );
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("send_transmit_deliver_ack_1024x64B", |b| {
        b.iter(|| black_box(round()));
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    for unacked in [0, 4096] {
        let setup = || {
            let mut pair = Harness::established(64);
            pair.cast_lost(unacked);
            pair
        };
        let mut check = setup();
        assert_eq!(check.cut_and_resume(), unacked as u64);
        assert_eq!(check.unacked(), 0, "the replay is acknowledged");
        if unacked > 0 {
            group.throughput(Throughput::Elements(unacked as u64));
        }
        group.bench_function(format!("resume_with_{unacked}_unacked"), |b| {
            b.iter_batched_ref(
                setup,
                |pair| black_box(pair.cut_and_resume()),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn config() -> Criterion {
    let criterion = Criterion::default();
    if std::env::var_os("CI").is_some() {
        criterion
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
    } else {
        criterion
    }
}

// By hand rather than `criterion_group!`, whose `pub fn` cannot carry a doc comment.
fn main() {
    let mut criterion = config().configure_from_args();
    codec(&mut criterion);
    session(&mut criterion);
    replay(&mut criterion);
    criterion.final_summary();
}
