//! The adaptive pipeline paradigm: a producer streams frames to a stage on another node;
//! the stage measures how far behind it runs and holds the producer back with the
//! session's own back-pressure signals, which the producer's runtime obeys.
//!
//! ```text
//!  producer (node B, aims at R/s)                  stage (node A, capacity N/s)
//!    | -- cast Frame{seq: 1, ..} ------------------> |  latency = frames waiting / N
//!    | -- cast Frame{seq: 2, ..} ------------------> |
//!    |    ... R > N: the backlog grows ...           |
//!    | <-------------------------- Throttle(0.5) --- |  latency >= high (once)
//!  its runtime paces casts at 0.5 x its rate         |
//!    | -- cast Frame{..} (R/2 < N) ----------------> |  the backlog drains
//!    | <-------------------------------- Resume ---- |  latency <= low (once)
//!  full rate again                                   |  ... and round again
//!    | -- call ReportRequest{} --------------------> |  after every frame before it
//!    | <---------- StageReport{processed, ..} ------ |
//! ```
//!
//! The stage sends one `Throttle` when its latency crosses the high threshold and one
//! `Resume` when it falls under the low one (hysteresis). While overloaded, a latency
//! twice the one it last throttled at throttles again (the runtime compounds throttles):
//! that covers a stage slower than half the producer's rate, and a `Throttle` lost with a
//! broken stream. A `Resume` lost with a broken stream is sent again when the session
//! resumes. Frames are numbered, so the stage's report says whether anything was lost.
//!
//! The [`Producer`] needs no actor of its own: its session is owned by an
//! [`InboxReceiver`] that holds the session's signals until [`Producer::next_event`] reads
//! them, and the windows its sending task measures wait in a bounded queue that
//! coalesces them when nobody reads. A producer whose events are never read keeps
//! sending at the stage's pace, in bounded memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duologue::FlowSignal;
use duologue::flow::Resumption;
use duologue::{
    CallError, CloseReason, ConnectError, InboxReceiver, Mailbox, Node, Protocol, RemoteRef, Reply,
    SendError, SessionRef, SessionSignal, mailbox::InboxEvent, wire::SessionId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::peer_lines::PeerLines;

/// The pipeline protocol's messages (`proto/duologue/pipeline/v1/pipeline.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/duologue.pipeline.v1.rs"));
}

use proto::{Frame, ProducerMessage, ReportRequest, StageMessage, StageReport};
use proto::{producer_message, stage_message};

/// A stage: works through frames at a fixed capacity and throttles the sessions that
/// feed it faster than that.
#[derive(Debug, Default)]
pub struct Stage;

impl Protocol for Stage {
    type Request = ProducerMessage;
    type Response = StageMessage;
}

duologue::oneof!(ProducerMessage, kind: producer_message::Kind {
    Frame(Frame),
    Report(ReportRequest),
});
duologue::oneof!(StageMessage, kind: stage_message::Kind { Report(StageReport) });

/// How a stage is set up.
#[derive(Clone, Debug)]
pub struct StageConfig {
    /// The stage's name (for logs).
    pub name: String,
    /// Frames processed per second at most.
    pub capacity: u32,
    /// Throttle the producers when the stage runs this far behind.
    pub high: Duration,
    /// Resume them once it is back under this.
    pub low: Duration,
    /// The throttle factor, in (0, 1].
    pub factor: f64,
}

impl Default for StageConfig {
    /// 2000 frames/s, throttling (by half) at 300 ms behind and resuming under 30 ms: a
    /// producer at 3000 frames/s is throttled after about half a second and resumed
    /// about a second later.
    fn default() -> Self {
        Self {
            name: "stage".into(),
            capacity: 2000,
            high: Duration::from_millis(300),
            low: Duration::from_millis(30),
            factor: 0.5,
        }
    }
}

/// One session feeding the stage.
#[derive(Debug)]
struct Feed {
    session: SessionRef,
    /// The stage's last word to it was a `Throttle`.
    throttled: bool,
    /// The stage has said something to it.
    signalled: bool,
}

/// The stage's state.
#[derive(Debug)]
pub struct StageState {
    config: StageConfig,
    interval: Duration,
    next: tokio::time::Instant,
    feeds: HashMap<SessionId, Feed>,
    /// The latency it last throttled at, while overloaded.
    throttled_at: Option<Duration>,
    counts: StageReport,
    /// The log lines producers can cause, each kind a few per window and the rest counted.
    lines: PeerLines,
}

impl StageState {
    /// What the stage has done so far.
    pub fn report(&self) -> StageReport {
        self.counts
    }

    /// Waits until the stage's capacity allows the next frame. The timer ticks in
    /// milliseconds: sleep only once a millisecond ahead, and let up to 10 ms of
    /// oversleeping be caught up, so the average rate holds.
    async fn pace(&mut self) {
        let now = tokio::time::Instant::now();
        let floor = now.checked_sub(Duration::from_millis(10)).unwrap_or(now);
        self.next = self.next.max(floor) + self.interval;
        if self.next > now + Duration::from_millis(1) {
            tokio::time::sleep_until(self.next).await;
        }
    }

    /// What a producer sent, cast or called (`reply`: only a report request is answered;
    /// a call of a frame is answered `no_reply` as `reply` drops).
    async fn heard(
        &mut self,
        session: &SessionRef,
        kind: producer_message::Kind,
        reply: Option<Reply<StageMessage>>,
    ) {
        match kind {
            producer_message::Kind::Frame(frame) => {
                self.pace().await;
                self.frame(session, &frame);
            }
            producer_message::Kind::Report(ReportRequest {}) => {
                let sent = match reply {
                    Some(reply) => reply.send(self.report()).map_err(|error| error.to_string()),
                    None => Err("the report request was cast, not called: nobody to answer".into()),
                };
                if let Err(error) = sent {
                    self.lines.unsent.log(|suppressed| {
                        tracing::warn!(%error, stage = %self.config.name, not_logged_since_last_line = suppressed, "report not sent");
                    });
                }
            }
        }
    }

    fn feed(&mut self, session: &SessionRef) -> &mut Feed {
        self.feeds.entry(session.id()).or_insert_with(|| Feed {
            session: session.clone(),
            throttled: false,
            signalled: false,
        })
    }

    /// How far behind the stage runs: every frame waiting in its mailbox, over its
    /// capacity.
    fn latency(&self) -> Duration {
        let waiting: u64 = self
            .feeds
            .values()
            .map(|f| f.session.flow().inbound_waiting)
            .sum();
        Duration::from_secs_f64(waiting as f64 / f64::from(self.config.capacity))
    }

    fn frame(&mut self, session: &SessionRef, frame: &Frame) {
        self.feed(session);
        let counts = &mut self.counts;
        counts.processed += 1;
        if frame.seq != counts.last_seq + 1 {
            counts.out_of_sequence += 1;
        }
        counts.last_seq = counts.last_seq.max(frame.seq);
        let latency = self.latency();
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.counts.latency_micros = micros;
        self.counts.max_latency_micros = self.counts.max_latency_micros.max(micros);
        self.adapt(latency);
    }

    /// The hysteresis: throttle at `high`, again at twice the last throttle's latency,
    /// resume under `low`.
    fn adapt(&mut self, latency: Duration) {
        match self.throttled_at {
            None if latency >= self.config.high => {
                tracing::info!(stage = %self.config.name, ?latency, "overloaded: throttling");
                self.throttled_at = Some(latency);
                self.throttle(false);
            }
            Some(at) if latency >= 2 * at => {
                tracing::info!(stage = %self.config.name, ?latency, "still falling behind: throttling again");
                self.throttled_at = Some(latency);
                self.throttle(true);
            }
            Some(_) if latency <= self.config.low => {
                tracing::info!(stage = %self.config.name, ?latency, "recovered: resuming");
                self.throttled_at = None;
                for feed in self.feeds.values_mut().filter(|f| f.throttled) {
                    feed.session.signal(duologue::FlowSignal::Resume);
                    feed.throttled = false;
                    self.counts.resumes += 1;
                }
            }
            // A session that joined while overloaded is held back like the others.
            Some(_) => self.throttle(false),
            None => {}
        }
        self.counts.overloaded = self.throttled_at.is_some();
    }

    /// Throttles the feeds not throttled yet, or all of them `again`.
    fn throttle(&mut self, again: bool) {
        for feed in self.feeds.values_mut().filter(|f| again || !f.throttled) {
            if feed.session.is_closed() {
                continue;
            }
            feed.session
                .signal(duologue::FlowSignal::Throttle(self.config.factor));
            feed.throttled = true;
            feed.signalled = true;
            self.counts.throttles += 1;
        }
    }

    /// A resumed session may have lost the stage's last `Resume` with its old stream:
    /// say it again (a `Resume` to a producer not held back changes nothing).
    fn resumed(&mut self, session: &SessionRef) {
        let feed = self.feed(session);
        if feed.signalled && !feed.throttled {
            feed.session.signal(duologue::FlowSignal::Resume);
        }
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Stage {
    type Msg = Mailbox<Self>;
    type State = StageState;
    type Arguments = StageConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        config: StageConfig,
    ) -> Result<StageState, ActorProcessingErr> {
        if config.capacity == 0 || !(config.factor > 0.0 && config.factor <= 1.0) {
            return Err(
                format!("stage {}: capacity 0 or factor outside (0, 1]", config.name).into(),
            );
        }
        Ok(StageState {
            interval: Duration::from_secs(1) / config.capacity,
            next: tokio::time::Instant::now(),
            config,
            feeds: HashMap::new(),
            throttled_at: None,
            counts: StageReport::default(),
            lines: PeerLines::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut StageState,
    ) -> Result<(), ActorProcessingErr> {
        state.lines.report(&state.config.name);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut StageState,
    ) -> Result<(), ActorProcessingErr> {
        // A frame holds its producer's credit until this returns: it counts as waiting
        // (the stage's latency) while it is paced and worked through.
        match message {
            Mailbox::Call {
                session,
                request: ProducerMessage { kind: Some(kind) },
                reply,
                ..
            } => state.heard(&session, kind, Some(reply)).await,
            Mailbox::Cast {
                session,
                message: ProducerMessage { kind: Some(kind) },
                ..
            } => state.heard(&session, kind, None).await,
            // A producer can send these at will: a few lines per window, then a count. (A
            // call of them is answered: `no_reply` for an empty one, `decode` otherwise.)
            Mailbox::Call { session, .. } | Mailbox::Cast { session, .. } => {
                state.lines.unreadable.log(|suppressed| {
                    tracing::warn!(stage = %state.config.name, peer = %session.peer(), not_logged_since_last_line = suppressed, "empty producer message");
                });
            }
            Mailbox::Undecodable(undecodable) => state.lines.unreadable.log(|suppressed| {
                tracing::warn!(stage = %state.config.name, error = %undecodable.error(), type_url = undecodable.type_url(), peer = %undecodable.session().peer(), not_logged_since_last_line = suppressed, "undecodable producer message");
            }),
            Mailbox::Signal(SessionSignal::Opened(session)) => {
                state.feed(&session);
            }
            Mailbox::Signal(SessionSignal::Resumed(session, _)) => state.resumed(&session),
            Mailbox::Signal(SessionSignal::PeerFinished(session, _)) => session.finish(),
            Mailbox::Signal(SessionSignal::Closed { session, .. }) => {
                state.feeds.remove(&session.id());
            }
            Mailbox::Signal(SessionSignal::Lost(lost)) => {
                state.feeds.remove(&lost.session.id());
            }
            Mailbox::Signal(_) => {}
            Mailbox::Local(never) => match never {},
            // Not subscribed to the cluster.
            Mailbox::Cluster(_) => {}
        }
        Ok(())
    }
}

/// Starts a [`Stage`] with the default [`StageConfig`] on `node` and registers it as
/// `name`, for `duologue node --actor pipeline:NAME`.
///
/// # Errors
/// When the stage cannot start or the name is taken.
pub async fn host(node: &Node, name: &str) -> Result<ractor::ActorCell, String> {
    let config = StageConfig {
        name: name.to_owned(),
        ..StageConfig::default()
    };
    let (stage, _) = Actor::spawn(None, Stage, config)
        .await
        .map_err(|e| format!("cannot start stage {name}: {e}"))?;
    if let Err(error) = node.register(name, &stage) {
        stage.stop(None);
        return Err(error.to_string());
    }
    Ok(stage.get_cell())
}

/// How a producer sends.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// The rate to aim at, in frames per second; `None`: as fast as the session allows.
    pub rate: Option<u32>,
    /// The size of each frame's payload.
    pub frame_bytes: usize,
    /// The span of each [`RateWindow`].
    pub window: Duration,
}

impl Default for ProducerConfig {
    /// 3000 frames/s (one and a half times a default stage's capacity) of 64 bytes,
    /// measured every 100 ms.
    fn default() -> Self {
        Self {
            rate: Some(3000),
            frame_bytes: 64,
            window: Duration::from_millis(100),
        }
    }
}

/// What a producer sent in one window of time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateWindow {
    /// When the window started, since the producer started.
    pub start: Duration,
    /// When it ended.
    pub end: Duration,
    /// Frames sent in it.
    pub frames: u64,
    /// The rate, in frames per second, a throttle held the session to at its end.
    pub throttled_to: Option<f64>,
}

impl RateWindow {
    /// This window followed by `next` as one window: from this one's start to `next`'s
    /// end, with the frames of both and the throttle in effect at `next`'s end.
    pub fn merged(&self, next: &Self) -> Self {
        Self {
            start: self.start,
            end: next.end,
            frames: self.frames + next.frames,
            throttled_to: next.throttled_to,
        }
    }

    /// Frames per second.
    pub fn rate(&self) -> f64 {
        let span = (self.end - self.start).as_secs_f64();
        if span > 0.0 {
            self.frames as f64 / span
        } else {
            0.0
        }
    }
}

/// The mean rate of the windows lying wholly in `from..to`, if any.
pub fn mean_rate(windows: &[RateWindow], from: Duration, to: Duration) -> Option<f64> {
    let (frames, span) = windows
        .iter()
        .filter(|w| w.start >= from && w.end <= to)
        .fold((0, Duration::ZERO), |(f, s), w| {
            (f + w.frames, s + (w.end - w.start))
        });
    (span > Duration::ZERO).then(|| frames as f64 / span.as_secs_f64())
}

/// What a producer sees, in order; every `at` is since the producer started, and is
/// when [`Producer::next_event`] took the signal from the session (a reader that keeps
/// reading sees it within a moment of its arrival).
#[derive(Clone, Debug, PartialEq)]
pub enum ProducerEvent {
    /// A window of sending ended. Windows nobody read for a while are merged (see
    /// [`WINDOWS_KEPT`]): every frame sent is in one window, and their spans adjoin.
    Window(RateWindow),
    /// The stage sent a back-pressure signal; the runtime already obeys it.
    Flow {
        /// When it was read.
        at: Duration,
        /// The signal.
        signal: FlowSignal,
        /// The rate, in frames per second, the session is now held to.
        throttled_to: Option<f64>,
    },
    /// The stream to the stage broke; the session tries to resume.
    Interrupted {
        /// When it was read.
        at: Duration,
        /// Why.
        cause: duologue::InterruptCause,
    },
    /// The session continues on a new stream, nothing lost or doubled.
    Resumed {
        /// When it was read.
        at: Duration,
        /// How.
        resumption: Resumption,
    },
    /// The session is over (closed or lost).
    Ended {
        /// When it was read.
        at: Duration,
        /// Why.
        reason: String,
    },
}

/// A producer failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The session to the stage could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The session refused a frame.
    #[error("frame {seq} not sent: {error}")]
    Send {
        /// The frame's number.
        seq: u64,
        /// Why.
        error: SendError<ProducerMessage>,
    },
    /// The report call failed.
    #[error("report failed: {0}")]
    Report(#[from] CallError),
    /// The stage answered the report call with something else.
    #[error("the stage answered the report with {0:?}")]
    NoReport(StageMessage),
    /// The sending task panicked or was cancelled.
    #[error("producer task failed: {0}")]
    Task(String),
}

/// A producer streaming frames to a stage: sends at its configured rate (as far as the
/// stage's signals let it) until stopped; [`Producer::next_event`] says what it saw.
/// Dropping it stops sending and ends the session.
#[derive(Debug)]
pub struct Producer {
    stage: RemoteRef<Stage>,
    /// The session's owner: its signals wait here until read (the stage sends no
    /// messages, only replies to calls, which go to the caller).
    inbox: InboxReceiver<Stage>,
    /// The windows the sending task measured and nobody read yet.
    windows: Arc<Windows>,
    /// The session's end was read: only windows follow.
    ended: bool,
    started: Instant,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<u64, PipelineError>>>,
    sent: Option<u64>,
    /// The log lines the stage can cause, each kind a few per window.
    lines: PeerLines,
}

impl Producer {
    /// Opens a session from `node` to the stage `stage` at `addr` and starts sending.
    ///
    /// # Errors
    /// [`PipelineError::Connect`].
    pub async fn start(
        node: &Node,
        addr: &str,
        stage: &str,
        config: ProducerConfig,
    ) -> Result<Self, PipelineError> {
        let (stage, inbox) = node.connect::<Stage>((addr, stage)).inbox().await?;
        let started = Instant::now();
        let windows = Arc::new(Windows::default());
        let stop = CancellationToken::new();
        let sender = Sender {
            stage: stage.clone(),
            config,
            started,
            windows: Arc::clone(&windows),
        };
        let task = tokio::spawn(sender.run(stop.clone()));
        Ok(Self {
            stage,
            inbox,
            windows,
            ended: false,
            started,
            stop,
            task: Some(task),
            sent: None,
            lines: PeerLines::default(),
        })
    }

    /// The next thing the producer saw, waiting for it: a window of sending, or a change
    /// of the session (a back-pressure signal, a broken stream, its end). Windows come
    /// first when both wait: they are measured as they end, signals when read. `None`
    /// once the session's end was read and the sending task stopped, with every window
    /// read.
    pub async fn next_event(&mut self) -> Option<ProducerEvent> {
        loop {
            let event = tokio::select! {
                biased;
                window = self.windows.next() => match window {
                    Some(window) => return Some(ProducerEvent::Window(window)),
                    None if self.ended => return None,
                    // Sending stopped; the session's end is still to come.
                    None => self.inbox.recv().await,
                },
                event = self.inbox.recv(), if !self.ended => event,
            };
            match event {
                Some(event) => {
                    if let Some(event) = self.heard(event) {
                        return Some(event);
                    }
                }
                // The node dropped the session: nothing more will come from it.
                None => self.ended = true,
            }
        }
    }

    fn heard(&mut self, event: InboxEvent<StageMessage>) -> Option<ProducerEvent> {
        let at = self.started.elapsed();
        let signal = match event {
            InboxEvent::Signal(signal) => signal,
            // A stage answers calls and sends nothing else; the call port, dropped,
            // answers `no_reply`.
            InboxEvent::Message(message)
            | InboxEvent::Call {
                request: message, ..
            } => {
                self.lines.unreadable.log(|suppressed| {
                    tracing::warn!(
                        ?message,
                        not_logged_since_last_line = suppressed,
                        "unexpected message from the stage"
                    );
                });
                return None;
            }
            InboxEvent::Undecodable { type_url, error } => {
                self.lines.unreadable.log(|suppressed| {
                    tracing::warn!(type_url, %error, not_logged_since_last_line = suppressed, "undecodable message from the stage");
                });
                return None;
            }
        };
        Some(match signal {
            SessionSignal::Flow(session, signal) => ProducerEvent::Flow {
                at,
                signal,
                throttled_to: session.flow().throttled_to,
            },
            SessionSignal::Interrupted(_, cause) => ProducerEvent::Interrupted { at, cause },
            SessionSignal::Resumed(_, resumption) => ProducerEvent::Resumed { at, resumption },
            SessionSignal::Lost(lost) => ProducerEvent::Ended {
                at,
                reason: format!("lost: {}", lost.reason),
            },
            SessionSignal::Closed { reason, .. } => {
                self.ended = true;
                ProducerEvent::Ended {
                    at,
                    reason: reason.to_string(),
                }
            }
            _ => return None,
        })
    }

    /// The typed handle to the stage.
    pub fn stage(&self) -> &RemoteRef<Stage> {
        &self.stage
    }

    /// When the producer started: the origin of every event's time.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops sending (a last, partial window is reported); returns how many frames were
    /// sent. Calling it again returns the same count.
    ///
    /// # Errors
    /// [`PipelineError::Send`] when the session refused a frame (it closed or was lost),
    /// [`PipelineError::Task`] when the sending task failed.
    pub async fn stop(&mut self) -> Result<u64, PipelineError> {
        if let Some(sent) = self.sent {
            return Ok(sent);
        }
        let task = self
            .task
            .take()
            .ok_or_else(|| PipelineError::Task("stopped after a failure".into()))?;
        self.stop.cancel();
        let sent = task
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))??;
        self.sent = Some(sent);
        Ok(sent)
    }

    /// Asks the stage for its counts; the answer comes after every frame sent before.
    ///
    /// # Errors
    /// [`PipelineError::Report`] or [`PipelineError::NoReport`].
    pub async fn report(&self, timeout: Duration) -> Result<StageReport, PipelineError> {
        let reply = self.stage.call(ReportRequest {}, timeout).await?;
        StageReport::try_from(reply).map_err(PipelineError::NoReport)
    }

    /// Stops sending, half-closes the session and waits up to `timeout` for the stage to
    /// finish too; says how the session ended.
    pub async fn close(mut self, timeout: Duration) -> CloseReason {
        let _ = self.stop().await;
        self.stage.session().close(timeout).await
    }
}

impl Drop for Producer {
    /// Stops the sending task; the inbox, dropped with the producer, ends the session.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Windows a producer keeps for its reader: 10 s of the default 100 ms windows. Beyond
/// that, the newest window absorbs the next one ([`RateWindow::merged`]).
pub const WINDOWS_KEPT: usize = 100;

/// The windows measured and not read yet: a queue of at most [`WINDOWS_KEPT`], shared by
/// the sending task (which pushes) and the producer (which reads).
///
/// Why a coalescing queue: the sending task must not wait for a reader (its rate is the
/// stage's business, not the reader's), and a queue without a bound would grow for as
/// long as nobody reads. Merging the newest two windows keeps every frame counted and
/// the spans adjoining; a reader that falls behind sees coarser windows, never a gap.
#[derive(Debug, Default)]
struct Windows {
    state: Mutex<WindowQueue>,
    /// Woken at each push and at the end (one reader: a stored permit covers the race
    /// between looking and waiting).
    ready: Notify,
}

#[derive(Debug, Default)]
struct WindowQueue {
    queue: VecDeque<RateWindow>,
    /// The sending task stopped: nothing more will be pushed.
    done: bool,
}

impl Windows {
    fn lock(&self) -> std::sync::MutexGuard<'_, WindowQueue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, window: RateWindow) {
        {
            let mut state = self.lock();
            if state.queue.len() >= WINDOWS_KEPT
                && let Some(newest) = state.queue.back_mut()
            {
                *newest = newest.merged(&window);
            } else {
                state.queue.push_back(window);
            }
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().done = true;
        self.ready.notify_one();
    }

    /// The oldest window not read yet, waiting for one; `None` once sending stopped and
    /// every window was read. Cancel-safe.
    async fn next(&self) -> Option<RateWindow> {
        loop {
            {
                let mut state = self.lock();
                if let Some(window) = state.queue.pop_front() {
                    return Some(window);
                }
                if state.done {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// The sending half of a producer: one task.
struct Sender {
    stage: RemoteRef<Stage>,
    config: ProducerConfig,
    started: Instant,
    windows: Arc<Windows>,
}

impl Sender {
    async fn run(self, stop: CancellationToken) -> Result<u64, PipelineError> {
        let sent = self.send_until(stop).await;
        self.windows.close();
        sent
    }

    async fn send_until(&self, stop: CancellationToken) -> Result<u64, PipelineError> {
        let data = Bytes::from(vec![0x5a; self.config.frame_bytes]);
        let interval = self
            .config
            .rate
            .filter(|&r| r > 0)
            .map(|r| Duration::from_secs(1) / r);
        let window = self.config.window.max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut seq, mut in_window) = (0, 0);
        let mut window_start = self.started.elapsed();
        let mut due = tokio::time::Instant::now();
        loop {
            // Each turn waits for one of three things; a frame not yet sent when another
            // comes first is simply built again (casting is cancel-safe).
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = ticker.tick() => {
                    window_start = self.window_ended(window_start, in_window);
                    in_window = 0;
                }
                sent = self.send(seq + 1, &data, interval.map(|_| due)) => {
                    sent?;
                    seq += 1;
                    in_window += 1;
                    if let Some(interval) = interval {
                        // Catch up at most 10 ms after falling behind (a throttle, a slow
                        // turn): no burst after a `Resume`.
                        let now = tokio::time::Instant::now();
                        let floor = now.checked_sub(Duration::from_millis(10)).unwrap_or(now);
                        due = due.max(floor) + interval;
                    }
                }
            }
        }
        self.window_ended(window_start, in_window);
        Ok(seq)
    }

    /// Sends frame `seq`, not before `due`.
    async fn send(
        &self,
        seq: u64,
        data: &Bytes,
        due: Option<tokio::time::Instant>,
    ) -> Result<(), PipelineError> {
        // The timer ticks in milliseconds: wait only when a millisecond ahead, so the
        // average rate holds.
        if let Some(due) = due
            && due > tokio::time::Instant::now() + Duration::from_millis(1)
        {
            tokio::time::sleep_until(due).await;
        }
        let frame = Frame {
            seq,
            sent_at_micros: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            data: data.clone(),
        };
        self.stage
            .cast(frame)
            .await
            .map_err(|error| PipelineError::Send { seq, error })
    }

    /// Reports the window from `start` to now; returns now.
    fn window_ended(&self, start: Duration, frames: u64) -> Duration {
        let end = self.started.elapsed();
        let window = RateWindow {
            start,
            end,
            frames,
            throttled_to: self.stage.session().flow().throttled_to,
        };
        self.windows.push(window);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::{RateWindow, WINDOWS_KEPT, Windows, mean_rate};
    use std::time::Duration;

    fn window(start_ms: u64, frames: u64) -> RateWindow {
        RateWindow {
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(start_ms + 100),
            frames,
            throttled_to: None,
        }
    }

    #[test]
    fn mean_rate_takes_the_windows_wholly_inside() {
        let windows = [window(0, 300), window(100, 300), window(200, 150)];
        let ms = Duration::from_millis;
        assert_eq!(mean_rate(&windows, ms(0), ms(200)), Some(3000.0));
        assert_eq!(mean_rate(&windows, ms(50), ms(300)), Some(2250.0));
        assert_eq!(mean_rate(&windows, ms(250), ms(300)), None);
        assert_eq!(windows[2].rate(), 1500.0);
    }

    #[test]
    fn unread_windows_beyond_the_bound_are_merged_and_no_frame_is_lost() {
        let windows = Windows::default();
        let pushed = WINDOWS_KEPT as u64 + 50;
        for i in 0..pushed {
            windows.push(window(i * 100, 10));
        }
        let state = windows.lock();
        assert_eq!(state.queue.len(), WINDOWS_KEPT);
        let frames: u64 = state.queue.iter().map(|w| w.frames).sum();
        assert_eq!(frames, pushed * 10, "every frame counted");
        let adjoin = state
            .queue
            .iter()
            .zip(state.queue.iter().skip(1))
            .all(|(a, b)| a.end == b.start);
        assert!(adjoin, "no gap between windows");
        let last = state.queue.back().unwrap();
        assert_eq!(
            (last.start, last.end, last.frames),
            (
                Duration::from_millis((WINDOWS_KEPT as u64 - 1) * 100),
                Duration::from_millis(pushed * 100),
                51 * 10
            )
        );
    }
}
