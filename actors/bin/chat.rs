//! `duologue chat`: join a room as one member. Scriptable when stdin is not a terminal:
//! each stdin line is one TEXT, each relayed TEXT one stdout line `FROM: TEXT`; at the end
//! of stdin it half-closes, waits for the room's acks and exits 0.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use duologue::cli::{DialTlsArgs, duration};
use duologue::{AuthError, CloseReason, ConnectError, Node, Secret};
use duologue_actors::chat::proto::{Presence, Text, Welcome};
use duologue_actors::chat::{ChatEvent, JoinError, join, join_after};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Options of `duologue chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// The room's node, as HOST:PORT.
    #[arg(long)]
    peer: String,
    /// The room's name.
    #[arg(long)]
    room: String,
    /// Your name in the room.
    #[arg(long)]
    user: String,
    /// File holding the cluster's shared secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// TLS to the room's node.
    #[command(flatten)]
    tls: DialTlsArgs,
    /// How long to wait for the join, and for the room's last acks after stdin ends.
    #[arg(long, default_value = "10s", value_parser = duration)]
    timeout: Duration,
    /// How long to keep trying to reach the room's node when its connection is refused or
    /// reset before the session is established (exit 5 after that).
    #[arg(long, default_value = "5s", value_parser = duration)]
    connect_timeout: Duration,
    /// When the session is lost, or the room lets this member go, join the room again
    /// (for as long as `--resume-timeout` allows, taking over this member's place if the
    /// room still holds its earlier session) and send again the texts the room did not
    /// record, instead of exiting.
    #[arg(long)]
    rejoin: bool,
    /// `--peer` is any node of a cluster: the room is found by name in its member list,
    /// and found again after a loss (with --rejoin), wherever it was started again.
    #[arg(long)]
    find: bool,
    /// How long an interrupted session to the room may take to resume before it is lost.
    #[arg(long, default_value = "30s", value_parser = duration)]
    resume_timeout: Duration,
}

/// Exit codes, so scripts can tell failures apart.
mod exit {
    pub(super) const FAILURE: u8 = 1;
    pub(super) const AUTH: u8 = 3;
    pub(super) const UNKNOWN_ROOM: u8 = 4;
    pub(super) const UNREACHABLE: u8 = 5;
    pub(super) const TLS: u8 = 6;
}

pub(crate) async fn run(args: ChatArgs) -> ExitCode {
    match chat(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("duologue chat: {message}");
            ExitCode::from(code)
        }
    }
}

async fn chat(args: ChatArgs) -> Result<(), (u8, String)> {
    let fail = |m: String| (exit::FAILURE, m);
    let secret = Secret::from_file(&args.secret_file).map_err(|e| fail(e.to_string()))?;
    let session = duologue::settings::SessionConfig {
        resume_timeout: args.resume_timeout,
        ..duologue::settings::SessionConfig::default()
    };
    let mut builder = Node::builder()
        .name(format!("chat-{}", args.user))
        .secret(secret)
        .session_config(session)
        .connect_timeout(args.connect_timeout);
    if let Some(tls) = args.tls.load().map_err(|e| fail(e.to_string()))? {
        builder = builder.peer_tls(tls);
    }
    let node = builder.start().await.map_err(|e| fail(e.to_string()))?;
    let room_addr = room_addr(&node, &args).await?;
    let mut joined = join(&node, &room_addr, &args.room, &args.user, args.timeout)
        .await
        .map_err(join_failure)?;
    let mut roster = Roster::new(&joined.welcome);
    eprintln!("joined {} as {} ({roster})", joined.welcome.room, args.user);
    // What was said before we came: on stderr, so stdout stays the live conversation.
    for line in &joined.welcome.history {
        eprintln!("(history) {}: {}", line.from, line.text);
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("type a line and press enter to send it; ctrl-d leaves the room");
    }

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let (mut sent, mut acked) = (0u64, 0u64);
    // Texts the room has not acked yet, to send again if it lets this member go.
    let mut unacked = VecDeque::<Text>::new();
    // The room_seq of the last relay or ack seen: a rejoin catches up from there.
    let mut seen = joined.welcome.room_seq;
    let mut ack_deadline = None;
    loop {
        // What the room sent first: a member that reads stdin faster than its events
        // would let its acks pile up until the room lets it go.
        tokio::select! {
            biased;
            event = joined.events.recv() => match event {
                Some(ChatEvent::Relay(relay)) => {
                    seen = seen.max(relay.room_seq);
                    println!("{}: {}", relay.from, relay.text);
                }
                Some(ChatEvent::Acked(ack)) => {
                    seen = seen.max(ack.room_seq);
                    recorded(&mut unacked, &mut acked, ack.client_seq);
                }
                Some(ChatEvent::FellBehind(behind)) => {
                    eprintln!(
                        "let go by the room: relays from #{} on were not sent here ({} were queued)",
                        behind.missed_from, behind.queued
                    );
                    recorded(&mut unacked, &mut acked, behind.last_client_seq);
                    seen = seen.max(behind.missed_from.saturating_sub(1));
                    if !args.rejoin {
                        return Err(fail(format!(
                            "let go by the room at #{} (use --rejoin to join again); {}",
                            behind.missed_from,
                            undelivered(&unacked, sent)
                        )));
                    }
                    joined = rejoin(&node, &args, &mut unacked, &mut acked, sent, seen, stdin_open).await?;
                    roster = Roster::new(&joined.welcome);
                }
                Some(ChatEvent::Undecodable(what)) => eprintln!("undecodable from the room: {what}"),
                Some(ChatEvent::HeldBack(held)) => eprintln!(
                    "the room has held this member back for {:.0?}",
                    held.waited
                ),
                Some(ChatEvent::Rejected(reason)) => eprintln!("the room refused: {reason}"),
                Some(ChatEvent::Presence(p)) => {
                    roster.apply(&p);
                    eprintln!("* {} {} ({roster})", p.user, if p.joined { "joined" } else { "left" });
                }
                Some(ChatEvent::RoomFinished | ChatEvent::Restarted) => {}
                Some(ChatEvent::Interrupted(cause)) => eprintln!("session interrupted: {cause}"),
                Some(ChatEvent::Resumed(resumption)) => eprintln!(
                    "session resumed, {} replayed, after {:.0?}",
                    resumption.replayed, resumption.interrupted_for
                ),
                Some(ChatEvent::Lost { reason, .. }) => {
                    eprintln!("session lost: {reason}");
                    if !args.rejoin {
                        return Err(fail(format!(
                            "session lost: {reason}; {}",
                            undelivered(&unacked, sent)
                        )));
                    }
                    joined = rejoin(&node, &args, &mut unacked, &mut acked, sent, seen, stdin_open).await?;
                    roster = Roster::new(&joined.welcome);
                }
                Some(ChatEvent::Closed(CloseReason::Finished)) => break,
                Some(ChatEvent::Closed(reason)) => {
                    return Err(fail(format!(
                        "session closed: {reason}; {}",
                        undelivered(&unacked, sent)
                    )));
                }
                None => {
                    return Err(fail(format!(
                        "the session to the room is gone; {}",
                        undelivered(&unacked, sent)
                    )));
                }
            },
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(text)) => {
                    sent += 1;
                    let text = Text { client_seq: sent, text };
                    unacked.push_back(text.clone());
                    joined
                        .room
                        .cast(text)
                        .await
                        .map_err(|e| fail(format!("cannot send: {e}")))?;
                }
                Ok(None) => {
                    stdin_open = false;
                    joined.room.finish();
                    ack_deadline = Some(tokio::time::Instant::now() + args.timeout);
                }
                Err(e) => return Err(fail(format!("cannot read stdin: {e}"))),
            },
            () = sleep_until(ack_deadline) => {
                return Err(fail(format!(
                    "the room acked {acked} of {sent} messages within {:?}",
                    args.timeout
                )));
            }
        }
    }
    if acked != sent {
        return Err(fail(format!("the room acked {acked} of {sent} messages")));
    }
    eprintln!(
        "left {}: {sent} messages sent, {acked} acked",
        joined.welcome.room
    );
    node.shutdown().await;
    Ok(())
}

/// The room recorded this member's texts up to `client_seq`: they are delivered.
fn recorded(unacked: &mut VecDeque<Text>, acked: &mut u64, client_seq: u64) {
    *acked = (*acked).max(client_seq);
    while unacked.front().is_some_and(|t| t.client_seq <= client_seq) {
        unacked.pop_front();
    }
}

/// How many of the `sent` texts the room never recorded, for a member that stops.
fn undelivered(unacked: &VecDeque<Text>, sent: u64) -> String {
    format!(
        "{} of {sent} texts were not delivered (the room never acknowledged them)",
        unacked.len()
    )
}

/// Joins again after a loss (or being let go), retrying for as long as this member's own
/// resume deadline allows; sends again the texts the room did not record (its Welcome
/// says which it did, when it knows this member), and finishes at once when stdin has
/// already ended.
#[allow(clippy::too_many_arguments)]
async fn rejoin(
    node: &Node,
    args: &ChatArgs,
    unacked: &mut VecDeque<Text>,
    acked: &mut u64,
    sent: u64,
    seen: u64,
    stdin_open: bool,
) -> Result<duologue_actors::chat::Joined, (u8, String)> {
    let joined = join_again(node, args, seen)
        .await
        .map_err(|(code, why)| (code, format!("{why}; {}", undelivered(unacked, sent))))?;
    let welcome = &joined.welcome;
    if welcome.known {
        recorded(unacked, acked, welcome.last_client_seq);
    }
    if welcome.catch_up_from > seen + 1 {
        eprintln!(
            "missed relays #{} to #{}: the room no longer holds them",
            seen + 1,
            welcome.catch_up_from - 1
        );
    }
    if !unacked.is_empty() {
        eprintln!(
            "sending again the {} texts the room did not record",
            unacked.len()
        );
    }
    for text in unacked.iter() {
        joined
            .room
            .cast(text.clone())
            .await
            .map_err(|e| (exit::FAILURE, format!("cannot resend: {e}")))?;
    }
    if !stdin_open {
        joined.room.finish();
    }
    Ok(joined)
}

/// Joins again, retrying (with a backoff from 100 ms doubling to 2 s) for as long as this
/// member's resume deadline allows (and at least the join timeout): a room that still
/// holds this member's earlier session, or a node that is still coming back, may take a
/// while to let it in.
async fn join_again(
    node: &Node,
    args: &ChatArgs,
    seen: u64,
) -> Result<duologue_actors::chat::Joined, (u8, String)> {
    let patience = args.resume_timeout.max(args.timeout);
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = match room_addr(node, args).await {
            Ok(found) => join_after(node, &found, &args.room, &args.user, seen, args.timeout)
                .await
                .map_err(join_failure),
            Err(error) => Err(error),
        };
        match attempt {
            Ok(joined) => {
                eprintln!(
                    "rejoined {} as {}{} ({})",
                    joined.welcome.room,
                    args.user,
                    if joined.welcome.took_over {
                        ", taking over its earlier session"
                    } else {
                        ""
                    },
                    Roster::new(&joined.welcome)
                );
                return Ok(joined);
            }
            Err((code, why)) if tokio::time::Instant::now() + backoff >= deadline => {
                return Err((code, format!("gave up rejoining after {patience:?}: {why}")));
            }
            Err((_, why)) => {
                eprintln!("rejoin failed, retrying: {why}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Where the room is: `--peer`, or with `--find`, the node the cluster's member list
/// (as `--peer` sees it) says serves it, by the rule lookups follow (the longest running
/// node first).
async fn room_addr(node: &Node, args: &ChatArgs) -> Result<String, (u8, String)> {
    if !args.find {
        return Ok(args.peer.clone());
    }
    let members = node.members_at(&args.peer).await.map_err(|e| {
        (
            exit::UNREACHABLE,
            format!("cannot list members at {}: {e}", args.peer),
        )
    })?;
    duologue::cluster::name_holders(&members, &args.room)
        .first()
        .and_then(|m| m.addr.clone())
        .ok_or_else(|| {
            (
                exit::UNKNOWN_ROOM,
                format!(
                    "no member of {}'s cluster serves room {:?}",
                    args.peer, args.room
                ),
            )
        })
}

/// Who is in the room as this member knows it: its Welcome's list, then each presence
/// (the room does not send the list again).
struct Roster {
    names: Vec<String>,
    count: u32,
}

impl Roster {
    fn new(welcome: &Welcome) -> Self {
        Self {
            names: welcome.members.clone(),
            count: welcome.member_count,
        }
    }

    fn apply(&mut self, presence: &Presence) {
        if presence.joined {
            self.names.push(presence.user.clone());
        } else {
            self.names.retain(|name| *name != presence.user);
        }
        self.count = presence.member_count;
    }
}

/// `members: ann, ben` while this member knows them all (a Welcome from a large room lists
/// the most recent only), `1200 members` otherwise.
impl std::fmt::Display for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.names.len() == self.count as usize {
            write!(f, "members: {}", self.names.join(", "))
        } else {
            write!(f, "{} members", self.count)
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn join_failure(error: JoinError) -> (u8, String) {
    let code = match &error {
        JoinError::Connect(ConnectError::Auth { .. }) => exit::AUTH,
        JoinError::Connect(ConnectError::UnknownActor { .. }) => exit::UNKNOWN_ROOM,
        JoinError::Connect(ConnectError::Unreachable { .. }) => exit::UNREACHABLE,
        JoinError::Connect(ConnectError::Tls { .. }) => exit::TLS,
        _ => exit::FAILURE,
    };
    let message = match &error {
        JoinError::Connect(ConnectError::Auth {
            addr,
            error: AuthError::PeerRejectedProof | AuthError::ProofMismatch,
        }) => {
            format!("authentication with {addr} failed: the shared secrets differ")
        }
        JoinError::Connect(connect) => duologue::cli::explain(connect),
        _ => error.to_string(),
    };
    (code, message)
}
