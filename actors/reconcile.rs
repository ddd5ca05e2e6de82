//! The control-plane reconcile paradigm: a client declares the state it wants, and a
//! reconciler on another node streams back the evolving current state, one step at a
//! time, until it converges.
//!
//! ```text
//!  client (node B)                                      reconciler (node A)
//!    | -- cast Declare{gen 1, 4 x v1} ----------------------> |  desired := gen 1
//!    | <----------- StatusReport{seq 1, gen 1, PENDING, 0/4} - |
//!    |                                                        |  Step (every 20 ms):
//!    | <------- StatusReport{seq 2, gen 1, PROGRESSING, 1/4} - |    one replica started,
//!    | <------- StatusReport{seq 3, gen 1, PROGRESSING, 2/4} - |    stopped or updated
//!    | -- cast Declare{gen 2, 3 x v2} ----------------------> |  desired := gen 2, from
//!    | <----------- StatusReport{seq 4, gen 2, PENDING, 2/3} - |    where the world stands
//!    |     ~~ the stream breaks: the session resumes on a new one, and the reports
//!    |        sent meanwhile are replayed, each exactly once ~~
//!    | <------- StatusReport{seq 5, gen 2, PROGRESSING, ...} - |
//!    | <---- StatusReport{seq n, gen 2, CONVERGED, 3/3 v2} --- |  no more steps
//!    | -- finish -------------------------------------------> |  forgets the deployment
//!    | <------------------------------------------ finish --- |
//!   Closed(Finished)                                        Closed(Finished)
//! ```
//!
//! Each session is one deployment: its own desired state, its own simulated
//! [`World`], its own report numbering. Reports are numbered 1, 2, 3, ... on their
//! session, so a client checks ([`Trail`]) that it saw every one exactly once, across
//! broken streams too: duologue's resume replays what the client had not acknowledged.
//!
//! # Slow clients and stopped ones
//!
//! The reconciler sends each session's reports through a [`Fanout`] of its own (one
//! member: that session), under the fan-out's policy, "slow is not stuck" (see
//! [`duologue::flow::Fanout`]; the bounds are [`ReconcilerConfig::fanout`]): a report goes
//! straight into the session while the client grants credit, else waits in the session's
//! outbox, drained in order as the client reads.
//!
//! Here no session feeds the fan-out: reports are made by the reconciler itself, one per
//! step of its own timer (and one per declaration), not sent on behalf of anyone whose
//! session could be paused. Pausing the client's own session would only hold back its
//! next declaration, which is rare and not what fills its outbox, so the reconciler
//! takes it out of the feeders ([`Fanout::stop_feeding`]). What it holds back instead is
//! its own production: **while a deployment's fan-out is holding** ([`Fanout::holding`]:
//! its client keeps reading but has [`FanoutConfig::hold_lag`] reports waiting), **its
//! steps wait**, and the deployment goes on once the client has read down to half of
//! that. Each deployment has its own fan-out, so one slow client slows only its own
//! deployment, never another's. A simulated deployment exists for its one watcher, and
//! the protocol promises a report after every change, numbered without gaps: stepping on
//! regardless would leave a choice between an outbox without bound and reports skipped.
//! (A reconciler of a real world, which changes whether anyone watches, would rather
//! keep going and, while holding, send only its latest state once the client has read
//! the rest: the report numbers stay gapless, the intermediate states are coalesced.)
//!
//! What a client sees, through [`Watch::next_event`]:
//!
//! - **It reads slowly:** every report, in order ([`Trail`] finds no gap), at its own
//!   pace: its deployment converges as fast as it reads. It is never let go for it.
//! - **It stops reading:** its deployment waits for it for at most
//!   [`FanoutConfig::hold_at_most`], then steps on, and reports pile up in its outbox.
//!   Once it has had reports waiting and taken none for [`FanoutConfig::stuck_after`], it
//!   is let go: its session is ended with a `LimitExceeded` farewell saying it was stuck,
//!   and the reconciler forgets its deployment when the session closes. When it reads
//!   again it gets the reports its session had taken (its credit window), in order, then
//!   [`ReconcileEvent::Lost`] with `LostReason::PeerEnded` (reason `LimitExceeded`).
//! - **It reaches the hard bound first** ([`FanoutConfig::max_lag`] reports waiting, or
//!   [`FanoutConfig::max_lag_bytes`], or more than its peer's or the node's replay budgets
//!   can hold): the report that would exceed it is not sent, and neither is any after it.
//!   The client gets every report up to the last one sent, in order, then a
//!   [`ReconcileEvent::FellBehind`] notice saying which one that was (and the state the
//!   deployment had reached), then the reconciler finishes the session
//!   ([`ReconcileEvent::Closed`]) and forgets its deployment (see the notice in
//!   `reconcile.proto` for what a client does next). A client that does not read up to
//!   the notice within [`FanoutConfig::farewell_timeout`] has its session ended instead
//!   ([`ReconcileEvent::Lost`], `LimitExceeded`).
//! - **Its stream breaks:** the reconciler forwards the session's `Interrupted` and
//!   `Resumed` signals to the fan-out ([`Fanout::interrupted`], [`Fanout::resumed`]):
//!   while interrupted, the deployment steps on (nothing holds it), the client is not
//!   judged stuck and `max_lag` does not apply; the reports wait within the replay
//!   budgets, and arrive in order, each once, when the session resumes
//!   ([`ReconcileEvent::Interrupted`], then [`ReconcileEvent::Resumed`]).
//!
//! Nothing is skipped unannounced, and the reconciler's memory per client stays bounded.
//!
//! # The client
//!
//! [`watch`] opens a session owned by an [`InboxReceiver`]: no forwarding actor, and a
//! report stays unconsumed (withholding the reconciler's credit) until
//! [`Watch::next_event`] takes it. A client that reads slowly slows its deployment down
//! to its pace, as above; its memory never grows with the reconciler's output.

use std::collections::HashMap;
use std::time::Duration;

use duologue::LostReason;
use duologue::flow::Refused;
use duologue::flow::Resumption;
use duologue::{
    CloseReason, ConnectError, InboxReceiver, Mailbox, Node, Protocol, RemoteRef, SendError,
    SessionRef, SessionSignal,
    flow::{Fanout, FanoutConfig},
    mailbox::InboxEvent,
    wire::SessionId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::peer_lines::PeerLines;

/// The reconcile protocol's messages (`proto/duologue/reconcile/v1/reconcile.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/duologue.reconcile.v1.rs"));
}

use proto::{
    Declare, FellBehind, Phase, ReconcileRequest, ReconcilerMessage, StatusReport,
    reconcile_request, reconciler_message,
};

/// How long the reconciler waits between two steps by default.
pub const STEP: Duration = Duration::from_millis(20);

/// A reconciler: drives each session's simulated deployment towards the state its
/// client declared, reporting after every step.
#[derive(Debug, Default)]
pub struct Reconciler;

impl Protocol for Reconciler {
    type Request = ReconcileRequest;
    type Response = ReconcilerMessage;
}

duologue::oneof!(ReconcileRequest, kind: reconcile_request::Kind { Declare(Declare) });
duologue::oneof!(ReconcilerMessage, kind: reconciler_message::Kind {
    Report(StatusReport),
    FellBehind(FellBehind),
});

/// The simulated world of one deployment: the image each running replica runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    replicas: Vec<String>,
}

/// What one step changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A replica running this image was stopped (scaling down).
    Stopped(String),
    /// A replica was moved from the first image to the second (a rolling update).
    Updated(String, String),
    /// A replica running this image was started (scaling up).
    Started(String),
}

impl World {
    /// The images of the running replicas, oldest replica first.
    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// Replicas running.
    pub fn ready(&self) -> u32 {
        count(self.replicas.len())
    }

    /// Replicas running `image`.
    pub fn updated(&self, image: &str) -> u32 {
        count(self.replicas.iter().filter(|i| *i == image).count())
    }

    /// The image every replica runs; empty while they differ or none runs.
    pub fn current_image(&self) -> String {
        match self.replicas.split_first() {
            Some((first, rest)) if rest.iter().all(|i| i == first) => first.clone(),
            _ => String::new(),
        }
    }

    /// How many steps are left to reach `desired`: each [`World::step`] takes exactly
    /// one off, and none is left once the world is the desired state.
    pub fn distance(&self, desired: &Declare) -> u32 {
        let running = self.ready();
        let stale = running - self.updated(&desired.image);
        let excess = running.saturating_sub(desired.replicas);
        // Scaling down stops stale replicas first, so they need no update.
        excess + stale.saturating_sub(excess) + desired.replicas.saturating_sub(running)
    }

    /// Takes one step towards `desired`: stop one replica too many (a stale one first),
    /// else update one stale replica, else start one missing replica. `None` when the
    /// world already is the desired state.
    pub fn step(&mut self, desired: &Declare) -> Option<Change> {
        let stale = self.replicas.iter().rposition(|i| *i != desired.image);
        if self.ready() > desired.replicas {
            let at = stale.unwrap_or(self.replicas.len() - 1);
            Some(Change::Stopped(self.replicas.remove(at)))
        } else if let Some(at) = stale {
            let from = std::mem::replace(&mut self.replicas[at], desired.image.clone());
            Some(Change::Updated(from, desired.image.clone()))
        } else if self.ready() < desired.replicas {
            self.replicas.push(desired.image.clone());
            Some(Change::Started(desired.image.clone()))
        } else {
            None
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One session's deployment.
#[derive(Debug)]
struct Deployment {
    session: SessionRef,
    world: World,
    /// The latest declaration (`None` until the first).
    desired: Option<Declare>,
    /// Steps the world was from `desired` when it was declared.
    initial_distance: u32,
    phase: Phase,
    /// Reports sent on the session so far (the last one's number): a report the fan-out
    /// took, delivered or waiting in the session's outbox.
    report_seq: u64,
    /// A step timer is pending.
    stepping: bool,
}

impl Deployment {
    fn new(session: SessionRef) -> Self {
        Self {
            session,
            world: World::default(),
            desired: None,
            initial_distance: 0,
            phase: Phase::Unspecified,
            report_seq: 0,
            stepping: false,
        }
    }

    /// Records a new desired state; `false` when it is stale (not a higher generation).
    fn declare(&mut self, declare: Declare) -> bool {
        if self
            .desired
            .as_ref()
            .is_some_and(|d| declare.generation <= d.generation)
        {
            return false;
        }
        self.initial_distance = self.world.distance(&declare);
        self.phase = if self.initial_distance == 0 {
            Phase::Converged
        } else {
            Phase::Pending
        };
        self.desired = Some(declare);
        true
    }

    /// Takes one step; whether more remain.
    fn step(&mut self) -> bool {
        let Some(desired) = &self.desired else {
            return false;
        };
        if self.phase == Phase::Converged {
            return false;
        }
        if let Some(change) = self.world.step(desired) {
            tracing::debug!(session = %self.session.id(), ?change, "step");
        }
        let left = self.world.distance(desired);
        self.phase = if left == 0 {
            Phase::Converged
        } else {
            Phase::Progressing
        };
        left > 0
    }

    /// The current status, numbered `report_seq`; `None` before the first declaration.
    fn status(&self, report_seq: u64) -> Option<StatusReport> {
        let desired = self.desired.as_ref()?;
        let left = self.world.distance(desired);
        let progress_percent = if self.initial_distance == 0 || left == 0 {
            100
        } else {
            let done = u64::from(self.initial_distance.saturating_sub(left));
            u32::try_from(done * 100 / u64::from(self.initial_distance)).unwrap_or(100)
        };
        let mut report = StatusReport {
            report_seq,
            generation: desired.generation,
            phase: 0,
            ready_replicas: self.world.ready(),
            updated_replicas: self.world.updated(&desired.image),
            current_image: self.world.current_image(),
            progress_percent,
            desired_replicas: desired.replicas,
            desired_image: desired.image.clone(),
        };
        report.set_phase(self.phase);
        Some(report)
    }
}

/// The reconciler's own message, beside what its clients send (its mailbox is
/// `Mailbox<Reconciler, Step>`): time to take the next step on one session's deployment,
/// from its step timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step(SessionId);

/// How a reconciler is set up.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// Its name (for logs).
    pub name: String,
    /// The time between two steps of a deployment.
    pub step: Duration,
    /// Each session's fan-out: how many reports waiting for a client that keeps reading
    /// make its deployment's steps wait (`hold_lag`), for how long a client that stopped
    /// reading is waited for that way (`hold_at_most`) and at all (`stuck_after`), the
    /// hard bound at which it is let go with a [`FellBehind`] notice (`max_lag`), and how
    /// long it then gets to read its reports and the notice (`farewell_timeout`).
    pub fanout: FanoutConfig,
}

impl From<&str> for ReconcilerConfig {
    fn from(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            step: STEP,
            fanout: FanoutConfig::default(),
        }
    }
}

/// The reconciler's state: one deployment per session.
#[derive(Debug)]
pub struct ReconcilerState {
    config: ReconcilerConfig,
    deployments: HashMap<SessionId, Deployment>,
    /// Where each client session's reports go: a fan-out of its own (one member, no
    /// feeder), so that whether it holds says whether this client keeps up. Kept until
    /// the session is over, also after its client was let go (its farewell under way).
    outboxes: HashMap<SessionId, Fanout<SessionId, ReconcilerMessage>>,
    /// The log lines clients can cause, each kind a few per window and the rest counted.
    lines: PeerLines,
}

impl ReconcilerState {
    fn declare(
        &mut self,
        myself: &ActorRef<Mailbox<Reconciler, Step>>,
        session: &SessionRef,
        declare: Declare,
    ) {
        let id = session.id();
        let generation = declare.generation;
        let config = self.config.fanout;
        let outbox = self
            .outboxes
            .entry(id)
            .or_insert_with(|| Fanout::new(config));
        // A declaration still in flight from a client that fell behind starts nothing.
        if outbox.fell_behind_since(&id) {
            tracing::debug!(reconciler = %self.config.name, generation, "declaration after falling behind ignored");
            return;
        }
        if !outbox.contains(&id) {
            outbox.insert(id, session.clone());
            // Reports are the reconciler's own: the client's session feeds nothing (its
            // declarations are not what fills its outbox), so it is never paused. A slow
            // client holds back its deployment's steps instead (see `step`).
            outbox.stop_feeding(id);
        }
        let deployment = self
            .deployments
            .entry(id)
            .or_insert_with(|| Deployment::new(session.clone()));
        // A client can declare at will: a few lines per window, then a count.
        if !deployment.declare(declare) {
            self.lines.refused.log(|suppressed| {
                tracing::warn!(reconciler = %self.config.name, generation, not_logged_since_last_line = suppressed, "stale declaration ignored");
            });
        } else {
            self.lines.membership.log(|suppressed| {
                tracing::info!(reconciler = %self.config.name, generation, peer = %session.peer(), not_logged_since_last_line = suppressed, "declared");
            });
        }
        self.report(id);
        // The deployment is gone if its client fell behind with this report.
        if let Some(deployment) = self.deployments.get_mut(&id)
            && deployment.phase == Phase::Pending
            && !deployment.stepping
        {
            deployment.stepping = true;
            drop(myself.send_after(self.config.step, move || Mailbox::local(Step(id))));
        }
    }

    fn step(&mut self, myself: &ActorRef<Mailbox<Reconciler, Step>>, id: SessionId) {
        // The session may have ended since the timer was set.
        let Some(deployment) = self.deployments.get_mut(&id) else {
            return;
        };
        deployment.stepping = false;
        if deployment.phase == Phase::Converged {
            return;
        }
        // Its client keeps reading but is behind: the world waits for it, so it gets a
        // report after every change without its outbox growing. Look again one step later.
        if self.outboxes.get(&id).is_some_and(Fanout::holding) {
            deployment.stepping = true;
            drop(myself.send_after(self.config.step, move || Mailbox::local(Step(id))));
            return;
        }
        let more = deployment.step();
        self.report(id);
        if more && let Some(deployment) = self.deployments.get_mut(&id) {
            deployment.stepping = true;
            drop(myself.send_after(self.config.step, move || Mailbox::local(Step(id))));
        }
    }

    /// Sends deployment `id`'s current status as its next report, through the fan-out.
    /// A report is numbered only once the fan-out took it, so what the client receives
    /// has no gap. When its client fell behind, the client is told after what it was
    /// sent, and the deployment is forgotten.
    fn report(&mut self, id: SessionId) {
        let Some(deployment) = self.deployments.get_mut(&id) else {
            return;
        };
        let Some(report) = deployment.status(deployment.report_seq + 1) else {
            return;
        };
        let Some(outbox) = self.outboxes.get_mut(&id) else {
            return;
        };
        match outbox.send(&id, report.into()) {
            Ok(()) => deployment.report_seq += 1,
            Err(Refused::Behind(behind)) => {
                let notice = FellBehind {
                    last_report_seq: deployment.report_seq,
                    queued: u32::try_from(behind.queued()).unwrap_or(u32::MAX),
                    latest: deployment.status(0),
                };
                self.lines.membership.log(|suppressed| {
                    tracing::info!(
                        reconciler = %self.config.name,
                        session = %id,
                        last_report_seq = notice.last_report_seq,
                        queued = notice.queued,
                        cause = %behind.cause(),
                        not_logged_since_last_line = suppressed,
                        "client fell behind: told, and its deployment forgotten"
                    );
                });
                self.deployments.remove(&id);
                behind.farewell(notice.into());
            }
            // Its session closed: the signal saying so is on its way.
            Err(Refused::NotMember(_)) => {
                tracing::debug!(reconciler = %self.config.name, session = %id, "report not sent: session closed");
            }
        }
    }

    /// The client finished: forget its deployment and finish in turn, after the reports
    /// still waiting for it.
    fn peer_finished(&mut self, session: &SessionRef) {
        let id = session.id();
        self.deployments.remove(&id);
        // A client that fell behind is finished by its farewell, after its notice.
        if !self
            .outboxes
            .get_mut(&id)
            .is_some_and(|outbox| outbox.finish(&id))
        {
            session.finish();
        }
    }

    /// The session is over: forget all about it.
    fn gone(&mut self, id: SessionId) {
        self.deployments.remove(&id);
        if let Some(mut outbox) = self.outboxes.remove(&id) {
            outbox.remove(&id);
        }
    }

    /// The client's stream broke (`true`) or its session resumed (`false`): while
    /// interrupted it holds nothing back and is not judged stuck (see the module doc).
    fn interrupted(&mut self, id: SessionId, interrupted: bool) {
        if let Some(outbox) = self.outboxes.get_mut(&id) {
            if interrupted {
                outbox.interrupted(&id);
            } else {
                outbox.resumed(&id);
            }
        }
    }
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Reconciler {
    type Msg = Mailbox<Self, Step>;
    type State = ReconcilerState;
    type Arguments = ReconcilerConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        config: ReconcilerConfig,
    ) -> Result<ReconcilerState, ActorProcessingErr> {
        // Each session gets a fan-out of its own later: one now checks the bounds (a bad
        // one panics), so that the reconciler fails to start rather than at a declaration.
        drop(Fanout::<SessionId, ReconcilerMessage>::new(config.fanout));
        Ok(ReconcilerState {
            outboxes: HashMap::new(),
            config,
            deployments: HashMap::new(),
            lines: PeerLines::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut ReconcilerState,
    ) -> Result<(), ActorProcessingErr> {
        state.lines.report(&state.config.name);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut ReconcilerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // A call of a declaration is answered `no_reply` once handled.
            Mailbox::Cast {
                session,
                message: ReconcileRequest { kind: Some(kind) },
                ..
            }
            | Mailbox::Call {
                session,
                request: ReconcileRequest { kind: Some(kind) },
                ..
            } => match kind {
                reconcile_request::Kind::Declare(declare) => {
                    state.declare(&myself, &session, declare);
                }
            },
            // A client can send these at will: a few lines per window, then a count. (A call
            // of them is answered: `no_reply` for an empty one, `decode` otherwise.)
            Mailbox::Cast { session, .. } | Mailbox::Call { session, .. } => {
                state.lines.unreadable.log(|suppressed| {
                    tracing::warn!(reconciler = %state.config.name, peer = %session.peer(), not_logged_since_last_line = suppressed, "empty reconcile request");
                });
            }
            Mailbox::Undecodable(undecodable) => state.lines.unreadable.log(|suppressed| {
                tracing::warn!(reconciler = %state.config.name, error = %undecodable.error(), type_url = undecodable.type_url(), peer = %undecodable.session().peer(), not_logged_since_last_line = suppressed, "undecodable reconcile request");
            }),
            Mailbox::Local(Step(id)) => state.step(&myself, id),
            // The client is done watching: forget its deployment and finish in turn.
            Mailbox::Signal(SessionSignal::PeerFinished(session, _)) => {
                state.peer_finished(&session);
            }
            Mailbox::Signal(SessionSignal::Closed { session, .. }) => {
                state.gone(session.id());
            }
            Mailbox::Signal(SessionSignal::Lost(lost)) => {
                state.lines.membership.log(|suppressed| {
                    tracing::info!(reconciler = %state.config.name, reason = %lost.reason, not_logged_since_last_line = suppressed, "client session lost");
                });
                state.gone(lost.session.id());
            }
            // The session replays the reports by itself; the fan-out does not count the
            // interruption against the client.
            Mailbox::Signal(SessionSignal::Interrupted(session, _)) => {
                state.interrupted(session.id(), true);
            }
            Mailbox::Signal(SessionSignal::Resumed(session, _)) => {
                state.interrupted(session.id(), false);
            }
            Mailbox::Signal(signal) => {
                tracing::debug!(reconciler = %state.config.name, ?signal, "session signal");
            }
            // Not subscribed to the cluster.
            Mailbox::Cluster(_) => {}
        }
        Ok(())
    }
}

/// Starts a [`Reconciler`] stepping every [`STEP`] and registers it on `node` as `name`,
/// for `duologue node --actor reconcile:NAME`.
///
/// # Errors
/// When the actor does not start or the name is taken.
pub async fn host(node: &Node, name: &str) -> Result<ractor::ActorCell, String> {
    let (actor, _) = Actor::spawn(None, Reconciler, ReconcilerConfig::from(name))
        .await
        .map_err(|e| format!("cannot start reconciler {name}: {e}"))?;
    if let Err(error) = node.register(name, &actor) {
        actor.stop(None);
        return Err(error.to_string());
    }
    Ok(actor.get_cell())
}

/// What a watching client hears from its reconciler.
#[derive(Clone, Debug, PartialEq)]
pub enum ReconcileEvent {
    /// The deployment's current state.
    Report(StatusReport),
    /// The client left so many reports unread that it reached the reconciler's hard
    /// bound ([`FanoutConfig::max_lag`], or the replay budgets): no report after
    /// `last_report_seq` comes, the reconciler forgot the deployment and finishes the
    /// session (the watch finishes in turn; [`ReconcileEvent::Closed`] follows). Watch
    /// again to go on. A client that reads slowly but keeps reading never gets this (its
    /// deployment slows down instead); one that stopped reading is more likely let go as
    /// stuck ([`ReconcileEvent::Lost`], `LimitExceeded`).
    FellBehind(FellBehind),
    /// The reconciler sent something that is not a reconciler message (another protocol,
    /// bad bytes, an empty message, or a call): consumed and reported, never skipped.
    Unexpected(String),
    /// The stream broke; the session is trying to resume.
    Interrupted(duologue::InterruptCause),
    /// The session resumed on a new stream: nothing lost or doubled.
    Resumed(Resumption),
    /// The session was lost.
    Lost(LostReason),
    /// The session is over.
    Closed(CloseReason),
}

/// Watching a reconciler could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The session could not be opened (unreachable, unknown name, wrong secret).
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// A session to a reconciler, and what it reports: read with [`Watch::next_event`].
///
/// What the reconciler sent stays in the session's inbox, unconsumed, until read: a
/// client that reads slowly slows its deployment down to its pace and misses no report;
/// one that stops reading holds at most one credit window of reports, and is let go (its
/// session ended as stuck, or [told it fell behind](ReconcileEvent::FellBehind)); see the
/// [module doc](self). Its memory does not grow. Dropping the watch ends the session.
#[derive(Debug)]
pub struct Watch {
    /// The typed handle to the reconciler.
    pub reconciler: RemoteRef<Reconciler>,
    inbox: InboxReceiver<Reconciler>,
    /// [`ReconcileEvent::Closed`] was read: nothing follows.
    closed: bool,
}

impl Watch {
    /// Declares a desired state: `replicas` replicas of `image`, as `generation`.
    ///
    /// # Errors
    /// The request comes back when the session does not take it.
    pub async fn declare(
        &self,
        generation: u64,
        replicas: u32,
        image: &str,
    ) -> Result<(), SendError<ReconcileRequest>> {
        self.reconciler
            .cast(Declare {
                generation,
                replicas,
                image: image.to_owned(),
            })
            .await
    }

    /// The next thing the reconciler sent, or the session's next change, in order;
    /// waits for it. Reading a report is what lets the reconciler send another (and,
    /// when this client is behind, take its next step). `None` after
    /// [`ReconcileEvent::Closed`] (or once the node dropped the session).
    pub async fn next_event(&mut self) -> Option<ReconcileEvent> {
        while !self.closed {
            let event = self.inbox.recv().await?;
            if let Some(event) = self.heard(event) {
                return Some(event);
            }
        }
        None
    }

    /// The next event if one is waiting now.
    pub fn try_next_event(&mut self) -> Option<ReconcileEvent> {
        while !self.closed {
            let event = self.inbox.try_recv()?;
            if let Some(event) = self.heard(event) {
                return Some(event);
            }
        }
        None
    }

    /// Messages and signals waiting to be read.
    pub fn waiting(&self) -> usize {
        self.inbox.len()
    }

    fn heard(&mut self, event: InboxEvent<ReconcilerMessage>) -> Option<ReconcileEvent> {
        Some(match event {
            InboxEvent::Message(ReconcilerMessage { kind }) => match kind {
                Some(reconciler_message::Kind::Report(report)) => ReconcileEvent::Report(report),
                Some(reconciler_message::Kind::FellBehind(notice)) => {
                    ReconcileEvent::FellBehind(notice)
                }
                None => ReconcileEvent::Unexpected("an empty reconciler message".into()),
            },
            // A reconciler never calls; dropping the port answers `no_reply`.
            InboxEvent::Call { request, .. } => {
                ReconcileEvent::Unexpected(format!("a call from the reconciler: {request:?}"))
            }
            InboxEvent::Undecodable { type_url, error } => {
                ReconcileEvent::Unexpected(format!("undecodable {type_url}: {error}"))
            }
            InboxEvent::Signal(signal) => match signal {
                SessionSignal::Interrupted(_, cause) => ReconcileEvent::Interrupted(cause),
                SessionSignal::Resumed(_, resumption) => ReconcileEvent::Resumed(resumption),
                SessionSignal::Lost(lost) => ReconcileEvent::Lost(lost.reason),
                SessionSignal::Closed { reason, .. } => {
                    self.closed = true;
                    ReconcileEvent::Closed(reason)
                }
                // The reconciler has said all it will (it finished after a client's
                // finish, or after a `FellBehind`): finish in turn, so the session closes.
                SessionSignal::PeerFinished(session, _) => {
                    session.finish();
                    return None;
                }
                _ => return None,
            },
        })
    }
}

/// Opens a session from `node` to the reconciler `name` at `addr`, read through an inbox.
///
/// # Errors
/// [`WatchError`] says why it could not.
pub async fn watch(node: &Node, addr: &str, name: &str) -> Result<Watch, WatchError> {
    let (reconciler, inbox) = node.connect::<Reconciler>((addr, name)).inbox().await?;
    Ok(Watch {
        reconciler,
        inbox,
        closed: false,
    })
}

/// A report out of line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrailError {
    /// Reports were skipped.
    #[error("report {got} after report {last}: {} skipped", got - last - 1)]
    Gap {
        /// The last report number seen.
        last: u64,
        /// The number received.
        got: u64,
    },
    /// A report came again (or late).
    #[error("report {got} after report {last}: a repeat")]
    Repeat {
        /// The last report number seen.
        last: u64,
        /// The number received.
        got: u64,
    },
    /// A report works towards an older generation than one before it.
    #[error("generation {got} after generation {last}")]
    GenerationBack {
        /// The generation of the report before.
        last: u64,
        /// The generation received.
        got: u64,
    },
}

/// Checks reports as a client receives them: numbered 1, 2, 3, ... (no gap, no
/// repeat), generations never going back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trail {
    /// The last report number accepted (0: none yet).
    pub last_seq: u64,
    /// The generation of the last report accepted.
    pub generation: u64,
}

impl Trail {
    /// Checks `report` against the ones before it and, when it is in line, accepts it.
    ///
    /// # Errors
    /// [`TrailError`] says how it is out of line; it is then not accepted.
    pub fn check(&mut self, report: &StatusReport) -> Result<(), TrailError> {
        let (last, got) = (self.last_seq, report.report_seq);
        if got <= last {
            return Err(TrailError::Repeat { last, got });
        }
        if got > last + 1 {
            return Err(TrailError::Gap { last, got });
        }
        if report.generation < self.generation {
            return Err(TrailError::GenerationBack {
                last: self.generation,
                got: report.generation,
            });
        }
        self.last_seq = got;
        self.generation = report.generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::proto::{Declare, StatusReport};
    use super::{Change, Trail, TrailError, World};

    fn desired(replicas: u32, image: &str) -> Declare {
        Declare {
            generation: 1,
            replicas,
            image: image.into(),
        }
    }

    /// Steps until converged; every step takes exactly one off the distance.
    fn converge(world: &mut World, desired: &Declare) -> Vec<Change> {
        let mut changes = Vec::new();
        loop {
            let before = world.distance(desired);
            match world.step(desired) {
                Some(change) => {
                    assert_eq!(world.distance(desired), before - 1, "{change:?}");
                    changes.push(change);
                }
                None => {
                    assert_eq!(before, 0);
                    return changes;
                }
            }
        }
    }

    #[test]
    fn scaling_up_starts_one_replica_per_step() {
        let mut world = World::default();
        let want = desired(3, "v1");
        assert_eq!(world.distance(&want), 3);
        let changes = converge(&mut world, &want);
        assert_eq!(changes, vec![Change::Started("v1".into()); 3]);
        assert_eq!((world.ready(), world.updated("v1")), (3, 3));
        assert_eq!(world.current_image(), "v1");
    }

    #[test]
    fn a_rollout_updates_in_place_and_mixes_images_on_the_way() {
        let mut world = World::default();
        converge(&mut world, &desired(3, "v1"));
        let want = desired(3, "v2");
        assert_eq!(world.distance(&want), 3);
        assert!(world.step(&want).is_some());
        assert_eq!((world.ready(), world.updated("v2")), (3, 1));
        assert_eq!(world.current_image(), "", "mixed images");
        converge(&mut world, &want);
        assert_eq!(world.current_image(), "v2");
    }

    #[test]
    fn scaling_down_and_rolling_out_at_once_costs_one_step_per_replica() {
        let mut world = World::default();
        converge(&mut world, &desired(2, "v1"));
        converge(&mut world, &desired(4, "v2"));
        // Stale replicas are updated before new ones start: four of v2 now.
        assert_eq!(world.replicas(), ["v2"; 4]);
        let mut half = world.clone();
        assert_eq!(half.distance(&desired(1, "v2")), 3);
        let changes = converge(&mut half, &desired(1, "v2"));
        assert_eq!(changes.len(), 3);
        assert_eq!(half.replicas(), ["v2"]);
        let changes = converge(&mut world, &desired(2, "v3"));
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert_eq!(world.replicas(), ["v3", "v3"]);
    }

    #[test]
    fn mixed_world_scaled_down_needs_no_update_of_stopped_replicas() {
        let mut world = World::default();
        converge(&mut world, &desired(4, "v1"));
        let mut want = desired(4, "v2");
        world.step(&want);
        world.step(&want);
        // Two v1 and two v2 running; want one v2: stop the two v1, then one v2.
        want.replicas = 1;
        assert_eq!(world.distance(&want), 3);
        let changes = converge(&mut world, &want);
        assert_eq!(
            changes,
            vec![
                Change::Stopped("v1".into()),
                Change::Stopped("v1".into()),
                Change::Stopped("v2".into())
            ]
        );
        assert_eq!(world.replicas(), ["v2"]);
    }

    fn report(report_seq: u64, generation: u64) -> StatusReport {
        StatusReport {
            report_seq,
            generation,
            ..StatusReport::default()
        }
    }

    #[test]
    fn a_trail_takes_consecutive_reports_and_refuses_gaps_repeats_and_going_back() {
        let mut trail = Trail::default();
        assert_eq!(trail.check(&report(1, 1)), Ok(()));
        assert_eq!(trail.check(&report(2, 2)), Ok(()));
        assert_eq!(
            trail.check(&report(2, 2)),
            Err(TrailError::Repeat { last: 2, got: 2 })
        );
        assert_eq!(
            trail.check(&report(4, 2)),
            Err(TrailError::Gap { last: 2, got: 4 })
        );
        assert_eq!(
            trail.check(&report(3, 1)),
            Err(TrailError::GenerationBack { last: 2, got: 1 })
        );
        assert_eq!(trail.check(&report(3, 2)), Ok(()));
        assert_eq!(trail.last_seq, 3);
    }
}
