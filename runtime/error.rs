//! The typed errors of each boundary: authentication, protocol, sending, calling,
//! connecting, and the reasons a session closes.

use crate::wire::{Fault, FrameError, Goodbye, GoodbyeReason, Refusal, RefuseReason};

/// Authentication failed, or the secret could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer's proof does not match this node's secret.
    #[error("the peer's proof does not match our secret")]
    ProofMismatch,
    /// The peer rejected this node's proof: the two secrets differ.
    #[error("the peer rejected our proof: the shared secrets differ")]
    PeerRejectedProof,
    /// The secret is too short to be safe.
    #[error("the secret has {len} bytes; at least {min} are required")]
    SecretTooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The secret is too regular to be random (say sixteen zero bytes, or one letter).
    #[error("the secret is not random: {reason} (make one with `duologue secret new FILE`)")]
    WeakSecret {
        /// What gives it away.
        reason: String,
    },
    /// The secret file could not be read or written.
    #[error("secret file {path}: {reason}")]
    SecretFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The peer broke the session protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame did not parse.
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
    /// A frame arrived in a state that does not expect it.
    #[error("unexpected {frame} frame in state {state}")]
    UnexpectedFrame {
        /// The frame's kind.
        frame: &'static str,
        /// The session's state.
        state: &'static str,
    },
    /// The peer speaks another protocol version.
    #[error(
        "unsupported protocol version {0} (this node speaks {speaks})",
        speaks = crate::wire::PROTOCOL_VERSION
    )]
    UnsupportedVersion(u32),
    /// An envelope's sequence number is not the next expected one.
    #[error("expected sequence number {expected}, got {got}")]
    SequenceGap {
        /// The next expected sequence number.
        expected: u64,
        /// The one that arrived.
        got: u64,
    },
    /// The peer acknowledged a message it was never sent.
    #[error("ack {ack} beyond the last sequence number sent, {sent}")]
    AckBeyondSent {
        /// The ack.
        ack: u64,
        /// The last sequence number sent.
        sent: u64,
    },
    /// An envelope exceeds this node's message size limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A frame exceeded this node's frame size limit.
    #[error("frame too large: {0}")]
    FrameTooLarge(String),
    /// The peer sent past the credit this side granted.
    #[error("message {seq} sent past the credit granted, {granted}")]
    CreditExceeded {
        /// Its sequence number.
        seq: u64,
        /// The credit granted.
        granted: u64,
    },
    /// The peer sent past the byte credit this side granted.
    #[error("message {seq} sent past the byte credit granted, {granted} bytes")]
    ByteCreditExceeded {
        /// Its sequence number.
        seq: u64,
        /// The byte credit granted (cumulative).
        granted: u64,
    },
    /// Data arrived after the peer's goodbye.
    #[error("data after goodbye")]
    DataAfterGoodbye,
    /// The peer's goodbye names a last message other than the last one received.
    #[error("goodbye says the last message was {last_seq}, but {received} arrived")]
    GoodbyeMismatch {
        /// What the goodbye says.
        last_seq: u64,
        /// What arrived.
        received: u64,
    },
}

/// Why a session is over. `Finished` is the polite end; everything else says what broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// Both sides finished and every message was acknowledged.
    #[error("finished")]
    Finished,
    /// The session could not go on, and messages may be unconfirmed: see [`LostReason`].
    /// The owner got them back with [`crate::SessionSignal::Lost`].
    #[error("session lost: {0}")]
    Lost(LostReason),
    /// This side ended the session.
    #[error("ended locally: {reason:?} {detail}")]
    Ended {
        /// Why.
        reason: GoodbyeReason,
        /// Detail.
        detail: String,
    },
    /// The peer refused the session during the handshake.
    #[error("refused by the peer: {0}")]
    RefusedByPeer(Refusal),
    /// This side refused the session during the handshake.
    #[error("refused: {0}")]
    RefusedLocally(Refusal),
    /// Authentication failed on this side.
    #[error("authentication failed: {0}")]
    Auth(AuthError),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// The handshake did not complete in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The stream broke before the session was established (nothing to resume).
    #[error("transport error: {detail}")]
    Transport {
        /// Why, in a word.
        cause: InterruptCause,
        /// The transport's own text (hyper's, h2's, rustls'), for the logs.
        detail: String,
    },
}

/// Why a session's stream went, in a word: what [`crate::SessionSignal::Interrupted`]
/// carries, what a lost session's [`LostReason::ResumeDeadline`] names, and what the
/// session's log lines say. The raw transport text behind it (hyper's and h2's) is logged
/// at `debug` in the session's span, never handed to the owner.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InterruptCause {
    /// The connection under the stream broke or closed: the peer's process died, a TCP
    /// reset, an HTTP/2 GOAWAY, a keep-alive ping unanswered.
    #[error("the connection was lost")]
    ConnectionLost,
    /// The stream alone was reset (HTTP/2 `RST_STREAM`), by the peer or a proxy.
    #[error("the stream was reset")]
    StreamReset,
    /// The peer's stream ended cleanly, but without a farewell.
    #[error("the stream ended without a goodbye")]
    EndedWithoutGoodbye,
    /// With messages unacknowledged, no word came from the peer for `after`.
    #[error("the peer was silent for {after:?} with messages unacknowledged")]
    PeerSilent {
        /// The silence timeout.
        after: std::time::Duration,
    },
    /// The peer held this side back and did not restate its flow state within `after` of
    /// being asked.
    #[error("the peer did not restate its flow state within {after:?}")]
    FlowUnanswered {
        /// How long it was given.
        after: std::time::Duration,
    },
    /// The peer opened a newer stream for the session.
    #[error("superseded by the peer's new stream")]
    Superseded,
    /// A resume handshake on a new stream did not complete in time.
    #[error("the resume handshake timed out")]
    ResumeHandshakeTimedOut,
    /// Initiator: a dial to the peer found nobody listening, or no route.
    #[error("the peer is unreachable")]
    Unreachable,
    /// Initiator: the peer's node is shutting down and takes no new streams.
    #[error("the peer is shutting down")]
    PeerShuttingDown,
    /// Initiator: the peer's server took the stream but sent no response headers within
    /// `after`.
    #[error("no answer to the greeting within {after:?}")]
    NoAnswer {
        /// The bound.
        after: std::time::Duration,
    },
    /// Initiator: the dial's TLS handshake failed.
    #[error("TLS failed: {0}")]
    Tls(TlsFailure),
    /// The cluster declared the peer's node unreachable (its failure detector): the
    /// stream was given up at once, and calls waiting for a reply failed
    /// ([`CallError::PeerUnreachable`]); the session resumes if the node comes back
    /// before the resume deadline.
    #[error("the cluster declared the peer unreachable")]
    PeerUnreachable,
    /// The stream ended with a gRPC status no other cause covers.
    #[error("the stream failed: {code} {message}")]
    Status {
        /// The status code's name (`Internal`, `Unknown`, ...).
        code: String,
        /// Its message, cut short.
        message: String,
    },
}

impl InterruptCause {
    /// A stable short name for labels (metrics, structured logs).
    pub fn label(&self) -> &'static str {
        match self {
            Self::ConnectionLost => "connection_lost",
            Self::StreamReset => "stream_reset",
            Self::EndedWithoutGoodbye => "ended_without_goodbye",
            Self::PeerSilent { .. } => "peer_silent",
            Self::FlowUnanswered { .. } => "flow_unanswered",
            Self::Superseded => "superseded",
            Self::ResumeHandshakeTimedOut => "resume_handshake_timed_out",
            Self::Unreachable => "unreachable",
            Self::PeerShuttingDown => "peer_shutting_down",
            Self::NoAnswer { .. } => "no_answer",
            Self::Tls(_) => "tls",
            Self::PeerUnreachable => "peer_unreachable",
            Self::Status { .. } => "status",
        }
    }
}

/// Why a TLS handshake with a peer failed, from what rustls reported (or, for a plaintext
/// dial, from a probe of the peer). The texts name the settings that fix the usual causes;
/// a command line adds its flags (`duologue::cli`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer requires a client certificate (mutual TLS) this node did not present.
    #[error(
        "the peer requires a client certificate (mutual TLS): give this node one \
         (ClientTls::identity_files)"
    )]
    ClientCertificateRequired,
    /// The peer's certificate is not from a CA this node trusts.
    #[error("the peer's certificate is not from a CA this node trusts (ClientTls::new)")]
    UntrustedPeer,
    /// The peer does not trust this node's client certificate.
    #[error("the peer does not trust this node's client certificate")]
    UntrustedByPeer,
    /// The peer's certificate does not name the host dialled.
    #[error("the peer's certificate does not name the host dialled (ClientTls::domain)")]
    WrongName,
    /// The peer answered with something that is not TLS.
    #[error("the peer does not seem to speak TLS")]
    NotTls,
    /// The peer serves TLS and this node dialled it in plaintext.
    #[error(
        "the peer serves TLS, and this node dials it in plaintext: trust its CA \
         (NodeBuilder::peer_tls)"
    )]
    PlaintextToTls,
    /// Another refusal, in rustls' words.
    #[error("{0}")]
    Other(String),
}

/// What an admin address off the loopback interface lacks ([`NodeError::AdminUnguarded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminGuard {
    /// A token: without one, anyone reaching it reads every session, member and metric.
    #[error(
        "give it a token (AdminAccess::token), or allow that (AdminAccess::insecure) if the \
         network is trusted"
    )]
    Token,
    /// TLS: the token would cross the network in plaintext.
    #[error(
        "the token would cross the network in plaintext: serve it over TLS \
         (AdminAccess::tls), or allow plaintext (NodeBuilder::insecure_plaintext) if the \
         network is trusted"
    )]
    Tls,
}

/// Why an established session was lost.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LostReason {
    /// The peer ended its side for a reason other than finishing: its actor stopped
    /// (`ActorStopped`, the detail is the actor's stop reason), its node shut down, it saw
    /// a protocol error. Delivered after the last messages the peer sent.
    #[error("the peer ended the session: {reason:?} {detail}", reason = .0.reason, detail = .0.detail)]
    PeerEnded(Goodbye),
    /// The stream broke and no resume succeeded before the deadline.
    #[error("not resumed within {after:?}: {cause}")]
    ResumeDeadline {
        /// The resume deadline.
        after: std::time::Duration,
        /// The last cause: why the stream broke, or why the last attempt failed.
        cause: InterruptCause,
    },
    /// The peer node restarted: a new incarnation cannot resume the old one's sessions.
    #[error("the peer restarted (incarnation {previous} is now {current})")]
    PeerRestarted {
        /// The incarnation the session was opened with.
        previous: uuid::Uuid,
        /// The peer's incarnation now.
        current: uuid::Uuid,
    },
    /// While interrupted, a send overflowed what may wait unacknowledged: the session's
    /// replay window, or the replay budget of its peer or of this node.
    #[error("{0} overflowed while interrupted")]
    ReplayFull(ReplayLimit),
    /// The peer refused to resume (it no longer has the session).
    #[error("the peer refused to resume: {0}")]
    ResumeRefused(Refusal),
    /// Authentication failed while resuming.
    #[error("authentication failed while resuming: {0}")]
    ResumeAuth(AuthError),
    /// The session's policy was not to resume.
    #[error("not resumed ({0})")]
    NotResumed(String),
    /// Under the `Restart` policy, the second and final word on a lost session: no new
    /// session could be opened within `NodeConfig::restart_timeout`, or the failure
    /// cannot heal (a wrong secret, this node shutting down, the owner stopped). Nothing
    /// more is tried; typed handles stay on the lost session.
    #[error("restart gave up after {attempts} attempts: {last_error}")]
    RestartGaveUp {
        /// How many sessions were tried.
        attempts: u32,
        /// Why the last one failed.
        last_error: Box<ConnectError>,
    },
}

impl CloseReason {
    /// The authentication error this close amounts to, on either side, if any.
    pub fn auth_error(&self) -> Option<AuthError> {
        match self {
            Self::Auth(e) => Some(e.clone()),
            Self::RefusedByPeer(r) if r.reason == RefuseReason::AuthFailed => {
                Some(AuthError::PeerRejectedProof)
            }
            _ => None,
        }
    }
}

/// A message could not be sent; it comes back inside the error.
#[derive(Debug, thiserror::Error)]
pub enum SendError<T> {
    /// The session is closed or finishing and takes no more messages.
    #[error("{}", closed_text(.reason.as_deref()))]
    Closed {
        /// Why the session closed; `None` while it finishes (this side said it is done).
        /// Boxed: a send's error stays small on the path that succeeds.
        reason: Option<Box<CloseReason>>,
        /// The message.
        message: T,
    },
    /// The session's handshake has not completed.
    #[error("the session is not established yet")]
    NotReady(T),
    /// What this side sent and the peer has not acknowledged fills `limit`: the session's
    /// replay window, or the replay budget of the peer or of this node. Waiting for credit
    /// does not help; only acks do, so even `cast(..).await` returns this at once.
    #[error("{limit} is full: the peer has not acknowledged enough of what was sent")]
    Full {
        /// The bound that is full.
        limit: ReplayLimit,
        /// The message.
        message: T,
    },
    /// The peer holds this side back now: no credit left, paused, or a timed pause or
    /// throttle delay. `cast(..).await` and `call` wait for this to end; `try_cast`
    /// returns it.
    #[error("the peer holds the session back: {by}")]
    HeldBack {
        /// What holds it back.
        by: HeldBy,
        /// The message.
        message: T,
    },
    /// The cluster declared the peer's node unreachable and the session has not heard
    /// from it since: the message is refused at once rather than queued for a resume
    /// that may never come. The session still resumes (and sends are taken again) if the
    /// node is heard from before the resume deadline; it is lost if not, or if the node
    /// comes back as a new incarnation.
    #[error("the cluster declared the peer's node unreachable")]
    PeerUnreachable {
        /// The message.
        message: T,
    },
    /// The payload is larger than the session's limit (the smaller of both nodes').
    #[error("message of {size} bytes exceeds the session's limit of {limit}")]
    TooLarge {
        /// Its encoded size.
        size: u64,
        /// The limit.
        limit: u64,
        /// The message.
        message: T,
    },
}

/// What [`SendError::Closed`] says.
fn closed_text(reason: Option<&CloseReason>) -> String {
    match reason {
        Some(reason) => format!("the session is closed: {reason}"),
        None => "the session is finishing and takes no more messages".to_owned(),
    }
}

impl<T> SendError<T> {
    /// The message that was not sent.
    pub fn into_message(self) -> T {
        match self {
            Self::Closed { message: m, .. }
            | Self::NotReady(m)
            | Self::Full { message: m, .. }
            | Self::HeldBack { message: m, .. }
            | Self::PeerUnreachable { message: m }
            | Self::TooLarge { message: m, .. } => m,
        }
    }

    /// The same error around another value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> SendError<U> {
        match self {
            Self::Closed { reason, message } => SendError::Closed {
                reason,
                message: f(message),
            },
            Self::NotReady(m) => SendError::NotReady(f(m)),
            Self::Full { limit, message } => SendError::Full {
                limit,
                message: f(message),
            },
            Self::HeldBack { by, message } => SendError::HeldBack {
                by,
                message: f(message),
            },
            Self::PeerUnreachable { message } => SendError::PeerUnreachable {
                message: f(message),
            },
            Self::TooLarge {
                size,
                limit,
                message,
            } => SendError::TooLarge {
                size,
                limit,
                message: f(message),
            },
        }
    }
}

/// A bound on what a session may have sent and not yet had acknowledged, as
/// [`SendError::Full`] and [`LostReason::ReplayFull`] name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayLimit {
    /// The session's own replay window (`SessionConfig::replay_max_messages` /
    /// `replay_max_bytes`).
    #[error("the session's replay window ({messages} messages, {bytes} bytes)")]
    Session {
        /// The window's message bound.
        messages: usize,
        /// The window's byte bound.
        bytes: usize,
    },
    /// The replay budget of the peer node, shared by all its sessions
    /// ([`crate::settings::BudgetConfig::peer_replay_bytes`]).
    #[error("the peer's replay budget ({bytes} bytes over all its sessions)")]
    Peer {
        /// The budget.
        bytes: usize,
    },
    /// This node's replay budget, shared by all its sessions
    /// ([`crate::settings::BudgetConfig::node_replay_bytes`]).
    #[error("the node's replay budget ({bytes} bytes over all sessions)")]
    Node {
        /// The budget.
        bytes: usize,
    },
}

/// What holds a sender back ([`SendError::HeldBack`]): the peer's credit or its signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeldBy {
    /// The peer granted no more credit: its actor has not consumed enough of what it got.
    #[error("no credit left")]
    NoCredit,
    /// The peer granted too few bytes for this message: its actor has not consumed
    /// enough of what it got, or its node's inbound budgets are spent.
    #[error("no byte credit left for this message")]
    NoByteCredit,
    /// The peer sent `Pause`.
    #[error("paused")]
    Paused,
    /// The peer sent `PauseFor`, and the delay has not run out.
    #[error("asked to wait (a timed pause)")]
    PauseFor,
    /// The peer sent `Throttle`, and the pace allows no message yet.
    #[error("throttled")]
    Throttled,
}

/// A call produced no reply.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be sent.
    #[error("request not sent: {0}")]
    Send(SendError<()>),
    /// No reply arrived before the deadline.
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
    /// The session closed before the reply arrived.
    #[error("session closed before the reply: {0}")]
    SessionClosed(CloseReason),
    /// The cluster declared the peer's node unreachable while the call waited for its
    /// reply: the reply may never come, so the call ends at once.
    #[error("the cluster declared the peer unreachable before the reply")]
    PeerUnreachable,
    /// The callee answered with a fault instead of a reply.
    #[error("the callee failed: {0}")]
    Fault(Fault),
    /// The reply did not decode as the expected type.
    #[error("reply did not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The reply decoded, but is not the kind the caller asked for
    /// ([`crate::RemoteRef::call_as`]): another variant of the protocol's response.
    #[error("the reply is not a {expected}")]
    UnexpectedReply {
        /// The Rust type the caller asked for.
        expected: &'static str,
    },
}

/// An inbound payload is not of the expected type, or does not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The type URL names another message type.
    #[error("expected a {expected}, got a {got}")]
    WrongType {
        /// The expected type URL.
        expected: String,
        /// The type URL that arrived.
        got: String,
    },
    /// The bytes do not decode as the expected type.
    #[error("invalid {type_url}: {source}")]
    Invalid {
        /// The type URL.
        type_url: String,
        /// Prost's error.
        source: prost::DecodeError,
    },
}

/// Opening a session failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The peer's address does not parse.
    #[error("invalid peer address {addr}: {reason}")]
    InvalidAddress {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer could not be reached within the connect deadline
    /// ([`crate::NodeConfig::connect_timeout`]), or did not complete the handshake in time.
    #[error("cannot reach {addr}: {reason} (attempts: {attempts})")]
    Unreachable {
        /// The address.
        addr: String,
        /// Why the last attempt failed.
        reason: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The peer has no actor of that name.
    #[error("no actor named {actor:?} on {addr}")]
    UnknownActor {
        /// The address.
        addr: String,
        /// The actor name.
        actor: String,
    },
    /// The actor serves another protocol than the one connected with; refused in the
    /// handshake, before any message.
    #[error("actor {actor:?} on {addr} serves {theirs}, not {ours}")]
    ProtocolMismatch {
        /// The address.
        addr: String,
        /// The actor name.
        actor: String,
        /// The protocol this side connected with ([`crate::Protocol::name`]).
        ours: String,
        /// The protocol the actor serves.
        theirs: String,
    },
    /// Authentication failed (the secrets differ).
    #[error("authentication with {addr} failed: {error}")]
    Auth {
        /// The address.
        addr: String,
        /// What failed.
        error: AuthError,
    },
    /// The session closed during its handshake for another reason.
    #[error("session to {addr} failed: {reason}")]
    Closed {
        /// The address.
        addr: String,
        /// Why.
        reason: CloseReason,
    },
    /// The TLS handshake with the peer failed: its certificate is not trusted (another
    /// CA, another name), it requires a client certificate this node did not present or
    /// it does not trust, or it does not speak TLS. Not retried: it does not heal.
    #[error("TLS with {addr} failed: {failure} ({detail})")]
    Tls {
        /// The address.
        addr: String,
        /// Why, typed.
        failure: TlsFailure,
        /// What the transport said.
        detail: String,
    },
    /// This node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The actor that was to own the session stopped before it opened.
    #[error("the owner of the session stopped")]
    OwnerStopped,
    /// The name the session was to go to was not found ([`crate::Target::Named`]).
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

/// Starting a node or registering an actor failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The secret is missing or unusable.
    #[error(transparent)]
    Secret(#[from] AuthError),
    /// No secret was configured.
    #[error("no secret configured: every node needs the cluster's shared secret")]
    NoSecret,
    /// The node's actor watcher could not start.
    #[error("cannot start the node's watcher: {0}")]
    Watcher(String),
    /// An actor of that name is already registered.
    #[error("an actor named {0:?} is already registered")]
    NameTaken(String),
    /// A name (or the protocol an actor serves) a node does not take
    /// ([`crate::cluster::MAX_NAME_BYTES`]; no control, bidi or invisible characters).
    #[error("refusing the name {name:?}: {reason}")]
    InvalidName {
        /// The name, printable and cut short ([`crate::cluster::printable`]).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The node holds as many named actors as it takes
    /// ([`crate::NodeConfig::max_names`]).
    #[error("the node holds {limit} named actors, as many as it takes")]
    TooManyNames {
        /// The bound.
        limit: usize,
    },
    /// A certificate, key or CA file cannot be read or used.
    #[error("TLS: {path}: {reason}")]
    Tls {
        /// The file (or which PEM, when given in memory).
        path: String,
        /// Why.
        reason: String,
    },
    /// A listen address off the loopback interface without TLS: anyone on the network
    /// could read the sessions and, with the secret, join them.
    #[error(
        "refusing to accept plaintext sessions on {addr}, which is not a loopback address: \
         give the node a certificate (NodeBuilder::tls), or allow plaintext \
         (NodeBuilder::insecure_plaintext) if the network is trusted"
    )]
    PlaintextListen {
        /// The listen address.
        addr: std::net::SocketAddr,
    },
    /// The node was asked about its cluster, but was started without one
    /// ([`crate::NodeConfig::cluster`]).
    #[error("the node is not in a cluster (start it with one: NodeConfig::cluster)")]
    NotClustered,
    /// An admin address off the loopback interface that anyone who reaches it could read.
    #[error("refusing to serve the admin address {addr} off the loopback interface: {guard}")]
    AdminUnguarded {
        /// The admin address.
        addr: std::net::SocketAddr,
        /// What it lacks.
        guard: AdminGuard,
    },
    /// The cluster's gossip address is unspecified (`0.0.0.0`, `::`): other nodes could
    /// not reach it.
    #[error(
        "gossip address {addr} is unspecified: say which address other nodes reach this one \
         at (ClusterConfig::gossip_advertise)"
    )]
    GossipUnspecified {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// The node's cluster membership could not start.
    #[error("cluster: {0}")]
    Cluster(String),
    /// An entity kind keeps state, and the node has no store
    /// ([`crate::NodeBuilder::state`], `--state`).
    #[error(
        "entity kind {kind:?} keeps state: give the node a store (--state sqlite:PATH or --state postgres://...)"
    )]
    NoStateStore {
        /// The kind.
        kind: String,
    },
    /// The node's state store could not be opened.
    #[error("state store: {0}")]
    State(#[from] crate::store::StateError),
}

/// A named actor could not be found, or not reached ([`crate::Node::lookup`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The node is not in a cluster.
    #[error("the node is not in a cluster: nothing to look names up in")]
    NotClustered,
    /// No member up serves the name.
    #[error("no member serves {name:?} (waited {waited:?})")]
    NotFound {
        /// The name.
        name: String,
        /// How long the lookup waited for it to appear.
        waited: std::time::Duration,
    },
    /// The member the name resolves to serves another protocol.
    #[error("{name:?} on node {node} serves {serves}, not {wanted}")]
    ProtocolMismatch {
        /// The name.
        name: String,
        /// The node it resolved to.
        node: String,
        /// The protocol the actor serves.
        serves: String,
        /// The protocol it was looked up with.
        wanted: String,
    },
    /// This node's gossip engine failed, so its view of the cluster is stale
    /// ([`crate::cluster::ClusterEvent::GossipStopped`]).
    #[error("cluster membership stopped ({reason}): restart the node")]
    GossipStopped {
        /// What the engine said.
        reason: String,
    },
}

/// An actor could not be started on request ([`crate::Node::spawn`],
/// [`crate::Node::host`]).
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The node has no such kind.
    #[error("node {node} has no actor kind {kind:?} (it has: {})", known.join(", "))]
    UnknownKind {
        /// The node asked.
        node: String,
        /// The kind asked for.
        kind: String,
        /// The kinds it has.
        known: Vec<String>,
    },
    /// A live actor holds the name on that node.
    #[error("an actor named {name:?} is already registered on node {node}")]
    NameTaken {
        /// The node asked.
        node: String,
        /// The name.
        name: String,
    },
    /// The name (or the protocol) is not one a node takes ([`crate::cluster::MAX_NAME_BYTES`]).
    #[error("node {node} refuses the name {name:?}: {reason}")]
    InvalidName {
        /// The node asked.
        node: String,
        /// The name, printable and cut short.
        name: String,
        /// Why.
        reason: String,
    },
    /// The node hosts as many actors, or holds as many names, as it takes
    /// ([`crate::NodeConfig::max_hosted`], [`crate::NodeConfig::max_names`]).
    #[error("node {node} is full: {detail}")]
    LimitReached {
        /// The node asked.
        node: String,
        /// Which bound, and its value.
        detail: String,
    },
    /// The kind's constructor failed.
    #[error("node {node} could not start the actor: {reason}")]
    Failed {
        /// The node asked.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node is shutting down.
    #[error("node {node} is shutting down")]
    ShuttingDown {
        /// The node asked.
        node: String,
    },
    /// No member of that name is up.
    #[error("no member named {node:?} is up")]
    NoSuchNode {
        /// The name asked for.
        node: String,
    },
    /// No member up offers the kind.
    #[error("no member up offers actor kind {kind:?}")]
    NoNodeOffers {
        /// The kind.
        kind: String,
    },
    /// The node (this one, or the one asked) is not in a cluster.
    #[error("not in a cluster")]
    NotClustered,
    /// This node's gossip engine failed, so it cannot choose a member
    /// ([`crate::cluster::ClusterEvent::GossipStopped`]).
    #[error("cluster membership stopped ({reason}): restart the node")]
    GossipStopped {
        /// What the engine said.
        reason: String,
    },
    /// The node could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request was not answered.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// An error with the chain of its sources, each after a `: `. An `io::Error` hides the
/// error it wraps from `source()`; the chain shows it.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for (i, error) in sources(error).enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        text.push_str(&error.to_string());
    }
    text
}

/// `error` and every error under it, an `io::Error`'s wrapped error included.
pub(crate) fn sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| {
        match error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        }
    })
}

/// A message to an entity could not be delivered, or a call to one got no reply.
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    /// The id is not one a node takes (empty, past 255 bytes, control or invisible
    /// characters).
    #[error("entity id {id:?}: {reason}")]
    InvalidId {
        /// The id, cut to 80 characters.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// No member hosts the kind now (or, without a cluster, this node does not).
    #[error("no node hosts entities of kind {kind:?}")]
    NoHost {
        /// The kind.
        kind: String,
    },
    /// This node hosts the kind with another protocol than the one asked for.
    #[error("entities of kind {kind:?} speak {registered}, not {asked}")]
    ProtocolMismatch {
        /// The kind.
        kind: String,
        /// The protocol the kind was registered with.
        registered: String,
        /// The protocol asked for.
        asked: String,
    },
    /// The session to the node that owns the entity's shard could not be opened.
    #[error("cannot reach {node}, the owner of the entity: {source}")]
    Connect {
        /// The owner.
        node: String,
        /// Why.
        source: Box<ConnectError>,
    },
    /// The message was not sent: the carrier session did not take it (closed, full,
    /// too large); it was not delivered.
    #[error("not sent to the entity: {0}")]
    Send(SendError<()>),
    /// A call got no reply (timeout, the owner declared unreachable, a fault: `no_reply`
    /// when the entity dropped the call, `entity_start` when it could not start,
    /// `unplaced` when the nodes' views disagreed on its owner).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The node is shutting down: its entities no longer take messages.
    #[error("the node is shutting down")]
    ShuttingDown,
}
