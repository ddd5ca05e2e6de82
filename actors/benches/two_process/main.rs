//! Two-process benchmark of duologue on 127.0.0.1: cast throughput and call latency
//! between two nodes in two OS processes, the same workload and output shape as the
//! `ractor_cluster` baseline in `shared/baselines/ractor_cluster_bench`.
//!
//! Run it from the project's root:
//!
//! ```text
//! cargo bench --bench two_process
//! cargo bench --bench two_process -- --casts 1000000 --calls 2000 --payload 256
//! ```
//!
//! * `run` (the default): start node A as a child process of this executable
//!   (`server --secret PATH`), then act as node B in this process and print the figures.
//! * `server --secret PATH`: node A alone; prints `READY <addr>`, exits when stdin closes.
//! * `client --addr ADDR --secret PATH`: node B alone, against a node A started by hand.
//!
//! Options for `run` and `client`: `--casts N` (200000), `--calls N` (10000),
//! `--payload BYTES` (64), `--pings N` (1000000; 0 skips the ping-pong phase),
//! `--delivery batches|one-by-one|both` (both: the ping-pong phases run),
//! `--cast-delivery batches|one-by-one|both` (both: the cast phases run; the warm-ups
//! run whatever it says), `--sessions 1|8|both` (both: the ping-pong phases run, by
//! sessions). With the `CI` environment variable set the defaults shrink to 20000 casts,
//! 1000 calls and 20000 pings. The `--bench` flag cargo adds is ignored.
//!
//! The ping-pong phase (`two_process/pingpong.rs`) is Proto.Actor's remote benchmark
//! method, as the baseline's runs it: `pingpong_msgs_per_s` counts both directions, on one
//! session; `pingpong_8_sessions_msgs_per_s` spreads the pings over eight.
//!
//! Node A's sink and echoes, and node B's ping-pong counters, take a run of messages that
//! arrived together as one mailbox message (`Owner::batched`): the figures without a qualifier. The same phases against
//! actors that take every message alone print `cast_one_by_one_throughput_msgs_per_s`
//! and `pingpong_one_by_one_*`. Senders cast one message at a time in every phase, as the
//! baseline's do; only the echo answers a batch of pings with one `cast_all`.
//!
//! `--metrics on` gives both nodes an admin address, so they keep metrics as a node
//! started with `--metrics ADDR` does (figures under `duologue_metrics`): the A/B of
//! `benches/compare.sh`'s metrics step.
//!
//! `--runtime multi-thread` (the default, tokio's work-stealing runtime with one worker per
//! core, as the baseline runs) or `--runtime current-thread` (one thread per node, for its
//! actors and its network alike) picks the runtime of both nodes; the figures of the second
//! are labelled `duologue_current_thread`.

mod pingpong;

use pingpong::Delivery;

/// jemalloc, as the `duologue` binary's nodes run (actors/bin/main.rs).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use duologue::settings::RuntimeFlavor;
use duologue_testkit::IgnoringOwner;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use duologue::{
    Inbound, Node, NodeBuilder, Protocol, RemoteRef, SessionSignal,
    mailbox::{BatchedSessionMsg, ReplyPort},
};
use duologue_testkit::{ChildGuard, Memory, SecretDir};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// How long node A may take to report `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for any single call (the cast drain included).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long node A may take to exit once its stdin closed, before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Casts in the (unreported) warm-up.
const WARMUP_CASTS: u64 = 20_000;
/// Calls in the (unreported) warm-up.
const WARMUP_CALLS: usize = 1_000;
/// The name node A registers its sink under: it takes a run of messages that arrived
/// together as one mailbox message (`Owner::batched`).
const SINK: &str = "sink";
/// The name of node A's second sink, which takes every message alone.
const SINK_ONE_BY_ONE: &str = "sink-one-by-one";

/// `BenchRequest::kind`: a one-way payload the sink only counts.
const KIND_PAYLOAD: u32 = 0;
/// `BenchRequest::kind`: zero the sink's counter.
const KIND_RESET: u32 = 1;
/// `BenchRequest::kind`: a call answered once `n` payloads arrived since the last reset.
const KIND_WAIT_FOR: u32 = 2;
/// `BenchRequest::kind`: a call answered with the same payload.
const KIND_ECHO: u32 = 3;

/// Everything node B sends to the sink.
#[derive(Clone, PartialEq, prost::Message)]
struct BenchRequest {
    /// One of the `KIND_*` constants.
    #[prost(uint32, tag = "1")]
    kind: u32,
    /// The target count of a `KIND_WAIT_FOR`.
    #[prost(uint64, tag = "2")]
    n: u64,
    /// The payload of `KIND_PAYLOAD` and `KIND_ECHO` (shared, not copied, on decode).
    #[prost(bytes = "bytes", tag = "3")]
    payload: Bytes,
}

impl prost::Name for BenchRequest {
    const NAME: &'static str = "BenchRequest";
    const PACKAGE: &'static str = "duologue.bench";
    fn type_url() -> String {
        "type.googleapis.com/duologue.bench.BenchRequest".into()
    }
}

/// Everything the sink answers.
#[derive(Clone, PartialEq, prost::Message)]
struct BenchReply {
    /// For `KIND_WAIT_FOR`: receiver-side nanoseconds between the first and the n-th
    /// payload.
    #[prost(uint64, tag = "1")]
    rx_span_ns: u64,
    /// For `KIND_ECHO`: the request's payload.
    #[prost(bytes = "bytes", tag = "2")]
    payload: Bytes,
}

impl prost::Name for BenchReply {
    const NAME: &'static str = "BenchReply";
    const PACKAGE: &'static str = "duologue.bench";
    fn type_url() -> String {
        "type.googleapis.com/duologue.bench.BenchReply".into()
    }
}

/// The bench protocol: `BenchRequest` in, `BenchReply` out.
struct BenchProtocol;

impl Protocol for BenchProtocol {
    type Request = BenchRequest;
    type Response = BenchReply;
}

/// Node A's actor: counts payloads and answers `WaitFor` and `Echo`.
struct Sink;

/// The sink's counter and its pending `WaitFor`.
#[derive(Default)]
struct SinkState {
    /// Payloads since the last reset.
    count: u64,
    /// Arrival of the first of them.
    first: Option<Instant>,
    /// Arrival of the latest of them.
    last: Option<Instant>,
    /// A `WaitFor` not answered yet: its target and reply port.
    waiter: Option<(u64, ReplyPort)>,
}

impl SinkState {
    /// Answers a pending `WaitFor` once its target count is reached.
    fn release_waiter(&mut self) -> Result<(), ActorProcessingErr> {
        if matches!(&self.waiter, Some((target, _)) if self.count >= *target)
            && let Some((_, port)) = self.waiter.take()
        {
            let span = match (self.first, self.last) {
                (Some(first), Some(last)) => {
                    u64::try_from(last.duration_since(first).as_nanos()).unwrap_or(u64::MAX)
                }
                _ => 0,
            };
            port.send(&BenchReply {
                rx_span_ns: span,
                payload: Bytes::new(),
            })?;
        }
        Ok(())
    }
}

impl SinkState {
    /// Takes one request that arrived at `now`.
    fn take(&mut self, mut inbound: Inbound, now: Instant) -> Result<(), ActorProcessingErr> {
        let request: BenchRequest = inbound.decode()?;
        match request.kind {
            KIND_PAYLOAD => {
                self.first.get_or_insert(now);
                self.last = Some(now);
                self.count += 1;
                self.release_waiter()?;
            }
            KIND_RESET => {
                self.count = 0;
                self.first = None;
                self.last = None;
                // A pending waiter's port drops here: its caller gets a `no_reply` fault.
                self.waiter = None;
            }
            KIND_WAIT_FOR => {
                if let Some(port) = inbound.take_reply() {
                    self.waiter = Some((request.n, port));
                    self.release_waiter()?;
                }
            }
            KIND_ECHO => {
                if inbound.is_call() {
                    inbound.reply(&BenchReply {
                        rx_span_ns: 0,
                        payload: request.payload,
                    })?;
                }
            }
            other => return Err(format!("unknown request kind {other}").into()),
        }
        Ok(())
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Sink {
    type Msg = BatchedSessionMsg;
    type State = SinkState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        (): (),
    ) -> Result<SinkState, ActorProcessingErr> {
        Ok(SinkState::default())
    }

    async fn handle(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        message: BatchedSessionMsg,
        state: &mut SinkState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BatchedSessionMsg::Inbound(inbound) => state.take(inbound, Instant::now()),
            // One clock read for a batch: its messages arrived together.
            BatchedSessionMsg::Batch(batch) => {
                let now = Instant::now();
                batch
                    .into_iter()
                    .try_for_each(|inbound| state.take(inbound, now))
            }
            BatchedSessionMsg::Signal(SessionSignal::Closed {
                session, reason, ..
            }) => {
                eprintln!("sink: session {} closed: {reason}", session.id());
                Ok(())
            }
            BatchedSessionMsg::Signal(_) => Ok(()),
        }
    }
}

/// What to measure.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// Number of one-way casts in the throughput phase.
    casts: u64,
    /// Number of sequential calls in the latency phase.
    calls: usize,
    /// Pings of the ping-pong phase (0 skips it).
    pings: u64,
    /// `--delivery batches|one-by-one|both`: the ping-pong phases run.
    delivery: Option<Delivery>,
    /// `--cast-delivery batches|one-by-one|both`: the cast phases run.
    cast_delivery: Option<Delivery>,
    /// `--sessions 1|8|both`: the ping-pong phases run, by their sessions.
    sessions: Option<usize>,
    /// Payload size in bytes, for both phases.
    payload: usize,
}

/// The label figures are printed under, for nodes on `flavor`, with metrics or not.
fn label(flavor: RuntimeFlavor, metrics: bool) -> &'static str {
    match (flavor, metrics) {
        (RuntimeFlavor::MultiThread, false) => "duologue",
        (RuntimeFlavor::CurrentThread, false) => "duologue_current_thread",
        (RuntimeFlavor::MultiThread, true) => "duologue_metrics",
        (RuntimeFlavor::CurrentThread, true) => "duologue_current_thread_metrics",
        (RuntimeFlavor::ThreadPerCore, false) => "duologue_thread_per_core",
        (RuntimeFlavor::ThreadPerCore, true) => "duologue_thread_per_core_metrics",
    }
}

/// With `--metrics on`, a node keeps metrics and serves them on a free loopback port.
fn with_metrics(builder: NodeBuilder, metrics: bool) -> NodeBuilder {
    if metrics {
        builder.admin(SocketAddr::from(([127, 0, 0, 1], 0)))
    } else {
        builder
    }
}

/// The command line after the subcommand.
#[derive(Debug)]
struct Options {
    /// The measurement sizes.
    cfg: Config,
    /// `--runtime multi-thread|current-thread`, for both nodes.
    flavor: RuntimeFlavor,
    /// `--secret PATH` (`server`, `client`).
    secret: Option<PathBuf>,
    /// `--addr ADDR` (`client`).
    addr: Option<String>,
    /// `--metrics on|off`: both nodes keep metrics (and serve them) or not.
    metrics: bool,
}

/// The value of `--delivery` or `--cast-delivery`: one of the two, or both (`None`).
fn delivery(flag: &str, value: &str) -> anyhow::Result<Option<Delivery>> {
    Ok(match value {
        "batches" => Some(Delivery::Batches),
        "one-by-one" => Some(Delivery::OneByOne),
        "both" => None,
        _ => bail!("{flag} takes batches, one-by-one or both"),
    })
}

/// Parses `--flag value` pairs.
fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let ci = std::env::var_os("CI").is_some();
    let mut options = Options {
        cfg: Config {
            casts: if ci { 20_000 } else { 200_000 },
            calls: if ci { 1_000 } else { 10_000 },
            pings: if ci { 20_000 } else { 1_000_000 },
            delivery: None,
            cast_delivery: None,
            sessions: None,
            payload: 64,
        },
        flavor: RuntimeFlavor::MultiThread,
        secret: None,
        addr: None,
        metrics: false,
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--casts" => options.cfg.casts = value.parse().context("--casts")?,
            "--calls" => options.cfg.calls = value.parse().context("--calls")?,
            "--pings" => options.cfg.pings = value.parse().context("--pings")?,
            "--delivery" => options.cfg.delivery = delivery(flag, value)?,
            "--cast-delivery" => options.cfg.cast_delivery = delivery(flag, value)?,
            "--sessions" => {
                options.cfg.sessions = match value.as_str() {
                    "both" => None,
                    _ => match value.parse() {
                        Ok(k) if k == 1 || k == pingpong::ECHOES => Some(k),
                        _ => bail!("--sessions takes 1, {} or both", pingpong::ECHOES),
                    },
                }
            }
            "--payload" => options.cfg.payload = value.parse().context("--payload")?,
            "--runtime" => options.flavor = value.parse().map_err(|e: String| anyhow!(e))?,
            "--secret" => options.secret = Some(value.into()),
            "--addr" => options.addr = Some(value.clone()),
            "--metrics" => {
                options.metrics = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => bail!("--metrics takes on or off"),
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    if options.cfg.casts == 0 || options.cfg.calls == 0 {
        bail!("--casts and --calls must be positive");
    }
    Ok(options)
}

/// Node A: the sink, registered on a node listening on a free loopback port, until
/// standard input closes (the parent's exit or kill).
async fn server(secret: &Path, metrics: bool) -> anyhow::Result<()> {
    let builder = Node::builder()
        .name("bench_a")
        .listen("127.0.0.1:0".parse()?)
        .secret_file(secret);
    let node = with_metrics(builder, metrics).start().await?;
    let (sink, sink_handle) = Actor::spawn(None, Sink, ()).await?;
    node.register(SINK, duologue::Owner::batched(&sink))?;
    let (sink_one_by_one, sink_one_by_one_handle) = Actor::spawn(None, Sink, ()).await?;
    node.register(SINK_ONE_BY_ONE, &sink_one_by_one)?;
    let mut echoes = Vec::new();
    for i in 0..pingpong::ECHOES {
        let (echo, handle) = Actor::spawn(None, pingpong::Echo, ()).await?;
        node.register(pingpong::echo_name(i, Delivery::OneByOne), &echo)?;
        echoes.push((echo, handle));
        let (echo, handle) = Actor::spawn(None, pingpong::Echo, ()).await?;
        node.register(
            pingpong::echo_name(i, Delivery::Batches),
            duologue::Owner::batched(&echo),
        )?;
        echoes.push((echo, handle));
    }
    let addr = node.local_addr().context("node A does not listen")?;

    let mut stdout = std::io::stdout();
    writeln!(stdout, "READY {addr}")?;
    stdout.flush()?;

    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await?;

    node.shutdown().await;
    sink.stop(None);
    sink_handle.await?;
    sink_one_by_one.stop(None);
    sink_one_by_one_handle.await?;
    for (echo, handle) in echoes {
        echo.stop(None);
        handle.await?;
    }
    Ok(())
}

/// Timings of one cast phase.
struct CastTimings {
    /// From the first send until the sink confirmed all `n` arrivals.
    wall: Duration,
    /// How long the sending loop took (casts never block: queues are unbounded).
    enqueue: Duration,
    /// Receiver-side time between the first and the n-th arrival.
    rx_span: Duration,
}

/// A request of `kind` with no payload.
fn control(kind: u32, n: u64) -> BenchRequest {
    BenchRequest {
        kind,
        n,
        payload: Bytes::new(),
    }
}

/// Sends `n` casts, then waits until the sink has counted all of them.
async fn cast_phase(
    sink: &RemoteRef<BenchProtocol>,
    n: u64,
    payload: &Bytes,
) -> anyhow::Result<CastTimings> {
    sink.cast(control(KIND_RESET, 0))
        .await
        .map_err(|e| anyhow!("reset: {e}"))?;
    let start = Instant::now();
    cast_many(sink, n, KIND_PAYLOAD, payload).await?;
    let enqueue = start.elapsed();
    let reply = sink
        .call(control(KIND_WAIT_FOR, n), CALL_TIMEOUT)
        .await
        .context("WaitFor")?;
    Ok(CastTimings {
        wall: start.elapsed(),
        enqueue,
        rx_span: Duration::from_nanos(reply.rx_span_ns),
    })
}

/// Casts `n` requests of `kind` carrying `payload`, one after another, each waiting for
/// credit as any sender does.
async fn cast_many(
    to: &RemoteRef<BenchProtocol>,
    n: u64,
    kind: u32,
    payload: &Bytes,
) -> anyhow::Result<()> {
    for _ in 0..n {
        to.cast(BenchRequest {
            kind,
            n: 0,
            payload: payload.clone(),
        })
        .await
        .map_err(|e| anyhow!("cast of kind {kind}: {e}"))?;
    }
    Ok(())
}

/// Issues `n` sequential echo calls; returns each round trip.
async fn call_phase(
    sink: &RemoteRef<BenchProtocol>,
    n: usize,
    payload: &Bytes,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let reply = sink
            .call(
                BenchRequest {
                    kind: KIND_ECHO,
                    n: 0,
                    payload: payload.clone(),
                },
                CALL_TIMEOUT,
            )
            .await
            .context("Echo")?;
        samples.push(start.elapsed());
        if reply.payload.len() != payload.len() {
            bail!("echo returned a payload of the wrong size");
        }
    }
    Ok(samples)
}

/// Nearest-rank percentile of an ascending, non-empty slice.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in microseconds.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A duration in milliseconds.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Warms up, then measures cast throughput and call latency against `sink` (which takes
/// batches), and cast throughput again against `one_by_one` (which does not), printing
/// one `label key=value ...` line per figure.
async fn measure(
    label: &str,
    sink: &RemoteRef<BenchProtocol>,
    one_by_one: &RemoteRef<BenchProtocol>,
    cfg: Config,
) -> anyhow::Result<()> {
    let payload = Bytes::from(vec![0xA5u8; cfg.payload]);

    // Warm-up: establish steady state on both sides before measuring.
    cast_phase(sink, WARMUP_CASTS, &payload).await?;
    cast_phase(one_by_one, WARMUP_CASTS, &payload).await?;
    call_phase(sink, WARMUP_CALLS, &payload).await?;

    let runs = |delivery| cfg.cast_delivery.is_none_or(|only| only == delivery);
    let casts = if runs(Delivery::Batches) {
        Some(cast_phase(sink, cfg.casts, &payload).await?)
    } else {
        None
    };
    let casts_one_by_one = if runs(Delivery::OneByOne) {
        Some(cast_phase(one_by_one, cfg.casts, &payload).await?)
    } else {
        None
    };
    let mut rtts = call_phase(sink, cfg.calls, &payload).await?;
    rtts.sort_unstable();
    let mean = rtts.iter().sum::<Duration>() / u32::try_from(rtts.len())?;
    let max = *rtts.last().context("at least one call")?;

    if let Some(casts) = casts {
        println!(
            "{label} cast_throughput_msgs_per_s={:.0} n={} payload_bytes={} wall_ms={:.1} enqueue_ms={:.1}",
            cfg.casts as f64 / casts.wall.as_secs_f64(),
            cfg.casts,
            cfg.payload,
            millis(casts.wall),
            millis(casts.enqueue)
        );
        println!(
            "{label} cast_receiver_window_msgs_per_s={:.0} rx_span_ms={:.1}",
            cfg.casts as f64 / casts.rx_span.as_secs_f64().max(1e-9),
            millis(casts.rx_span)
        );
    }
    if let Some(casts_one_by_one) = casts_one_by_one {
        println!(
            "{label} cast_one_by_one_throughput_msgs_per_s={:.0} n={} wall_ms={:.1}",
            cfg.casts as f64 / casts_one_by_one.wall.as_secs_f64(),
            cfg.casts,
            millis(casts_one_by_one.wall)
        );
    }
    println!(
        "{label} call_latency_p50_us={:.1} n={} payload_bytes={}",
        micros(percentile(&rtts, 50.0)),
        cfg.calls,
        cfg.payload
    );
    println!(
        "{label} call_latency_p99_us={:.1}",
        micros(percentile(&rtts, 99.0))
    );
    println!(
        "{label} call_latency_mean_us={:.1} p999_us={:.1} max_us={:.1}",
        micros(mean),
        micros(percentile(&rtts, 99.9)),
        micros(max)
    );
    Ok(())
}

/// Peak and current resident memory of process `pid` (this one: `None`), readably.
fn memory(pid: Option<u32>) -> Option<String> {
    let memory = Memory::of(pid)?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    Some(format!(
        "peak {:.1} MiB now {:.1} MiB",
        mib(memory.peak),
        mib(memory.now)
    ))
}

/// The ping-pong phase (`pingpong`): one session, then one per echo actor at once.
async fn pingpong_figures(node: &Node, addr: &str, label: &str, cfg: Config) -> anyhow::Result<()> {
    // Empty pings and pongs, as Proto.Actor's and the baseline's (`--payload` is the cast
    // and call phases').
    let payload = Bytes::new();
    let phases = [
        (Delivery::Batches, 1),
        (Delivery::Batches, pingpong::ECHOES),
        (Delivery::OneByOne, 1),
        (Delivery::OneByOne, pingpong::ECHOES),
    ];
    for (delivery, sessions) in phases
        .into_iter()
        .filter(|(d, _)| cfg.delivery.is_none_or(|only| only == *d))
        .filter(|(_, k)| cfg.sessions.is_none_or(|only| only == *k))
    {
        let pairs = pingpong::Pairs::open(node, addr, sessions, delivery).await?;
        let started = Instant::now();
        let rate = pairs.measure(cfg.pings, &payload).await;
        pairs.close();
        let rate = rate?;
        let key = delivery.key(sessions);
        println!(
            "{label} {key}={rate:.0} pings={} sessions={sessions} both_directions=true payload_bytes=0 with_warmup_ms={:.1}",
            cfg.pings,
            millis(started.elapsed())
        );
    }
    Ok(())
}

/// Node B: connects to the sink at `addr` and measures.
async fn client(
    addr: &str,
    secret: &Path,
    options: &Options,
    node_a_pid: Option<u32>,
) -> anyhow::Result<()> {
    let builder = Node::builder().name("bench_b").secret_file(secret);
    let node = with_metrics(builder, options.metrics).start().await?;
    let (owner, owner_handle) = Actor::spawn(None, IgnoringOwner, ()).await?;

    let connecting = Instant::now();
    let result = async {
        let sink: RemoteRef<BenchProtocol> = node.connect((addr, SINK)).owner(&owner).await?;
        let one_by_one: RemoteRef<BenchProtocol> =
            node.connect((addr, SINK_ONE_BY_ONE)).owner(&owner).await?;
        eprintln!(
            "connected and authenticated to the sink in {:.1} ms",
            millis(connecting.elapsed())
        );
        let label = label(options.flavor, options.metrics);
        measure(label, &sink, &one_by_one, options.cfg).await?;
        if options.cfg.pings > 0 {
            pingpong_figures(&node, addr, label, options.cfg).await?;
        }
        if let Some(mem) = memory(node_a_pid) {
            eprintln!("node A resident memory: {mem}");
        }
        if let Some(own) = memory(None) {
            eprintln!("node B resident memory: {own}");
        }
        anyhow::Ok(())
    }
    .await;

    node.shutdown().await;
    owner.stop(None);
    owner_handle.await?;
    result
}

/// Starts node A as a child of this executable; returns it with its address.
async fn spawn_server(
    secret: &Path,
    flavor: RuntimeFlavor,
    metrics: bool,
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let args = [
        "server".to_owned(),
        "--secret".to_owned(),
        secret.display().to_string(),
        "--runtime".to_owned(),
        flavor.as_str().to_owned(),
        "--metrics".to_owned(),
        if metrics { "on" } else { "off" }.to_owned(),
    ];
    let mut child = ChildGuard::spawn("node A", &exe, &args)?;
    // Relay node A's stderr, so a full pipe never blocks it.
    if let Some(mut lines) = child.stderr.take() {
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("node A: {line}");
            }
        });
    }
    let line = child
        .stdout_line(READY_TIMEOUT)
        .await?
        .context("node A exited before reporting READY")?;
    let addr = line
        .strip_prefix("READY ")
        .ok_or_else(|| anyhow!("unexpected line from node A: {line}"))?
        .trim()
        .parse()?;
    Ok((child, addr))
}

/// Node A in a child process, node B here; node A is killed on every exit path (its
/// guard's drop).
async fn run(options: &Options) -> anyhow::Result<()> {
    let secret = SecretDir::create()?;
    let (mut child, addr) = spawn_server(secret.secret(), options.flavor, options.metrics).await?;
    let result = client(&addr.to_string(), secret.secret(), options, child.pid()).await;
    // Closing stdin asks node A to stop; the guard kills it if it lingers.
    child.close_stdin();
    if let Err(error) = child.wait(EXIT_TIMEOUT).await {
        eprintln!("{error}; killing node A");
    }
    result
}

fn main() -> anyhow::Result<()> {
    // cargo adds `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let (command, rest) = match args.split_first() {
        Some((cmd, rest)) if !cmd.starts_with("--") => (cmd.as_str(), rest),
        _ => ("run", &args[..]),
    };
    let options = parse_options(rest)?;
    // As every duologue binary does first (`duologue::cli`). Without a subscriber, every
    // span h2 opens would also go through `log` (sqlx turns on tracing's `log` feature),
    // about 11 500 instructions a call (benches/README.md, instructions.sh).
    duologue::cli::log_to_stderr(duologue::cli::LogFormat::Text);
    options.flavor.build()?.block_on(async {
        match command {
            "run" => run(&options).await,
            "server" => {
                server(
                    options
                        .secret
                        .as_deref()
                        .context("server needs --secret PATH")?,
                    options.metrics,
                )
                .await
            }
            "client" => {
                let addr = options
                    .addr
                    .as_deref()
                    .context("client needs --addr ADDR")?;
                let secret = options
                    .secret
                    .as_deref()
                    .context("client needs --secret PATH")?;
                client(addr, secret, &options, None).await
            }
            other => bail!("unknown command {other}; use run, server or client"),
        }
    })
}
