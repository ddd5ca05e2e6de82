//! What a flood of the largest messages can put in flight towards one mailbox, against the
//! inbound budgets (`duologue::settings::BudgetConfig`, default settings): peers open many sessions
//! to one actor that keeps every message it gets, and each session casts 4 MiB messages
//! as fast as its credit lets it. The actor counts the payload bytes it holds (its own
//! count, not the runtime's); the most it ever held is the figure.
//!
//! ```text
//! cargo bench --bench inbound_flood                               # 2 peers x 48 sessions
//! cargo bench --bench inbound_flood -- --peers 1 --sessions 64 --messages 4
//! ```
//!
//! The flood stops once nothing more arrived for two seconds (the senders wait on
//! credit), or once the actor holds `--cap-mib` (2 048 by default: a runtime whose budgets
//! do not bound the flood would otherwise take the machine's memory).
//!
//! Prints one line in the baseline's `label key=value` shape:
//! `duologue inbound_flood peers=... sessions_per_peer=... message_mib=4 held_peak_mib=...
//! peer_budget_mib=... node_budget_mib=... bound_mib=... within=yes|no`, where `bound_mib`
//! is what the budgets allow in all: the node's budget, or the peers' together if less,
//! plus each session's 8 KiB handshake grant. Exits non-zero when the peak passed it.

use duologue_testkit::args::option;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::bail;
use duologue::{
    Inbound, Node, RemoteRef, Secret, SessionSignal,
    settings::{BudgetConfig, SessionConfig},
};
use duologue_testkit::IgnoringOwner;
use duologue_testkit::progress::{self, Summary};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;
const SECRET: &str = "inbound flood bench secret, 32 b";

/// The flood's message: a 4 MiB body (less a little, to stay under the message limit).
#[derive(Clone, PartialEq, prost::Message)]
struct Block {
    #[prost(bytes = "vec", tag = "1")]
    body: Vec<u8>,
}

impl prost::Name for Block {
    const NAME: &'static str = "Block";
    const PACKAGE: &'static str = "duologue.bench";
}

/// The flood's protocol: blocks in, nothing back.
struct Flood;

impl duologue::Protocol for Flood {
    type Request = Block;
    type Response = Block;
}

enum HolderMsg {
    Inbound(Inbound),
    Signal,
}

#[cfg(feature = "ractor-cluster")]
impl ractor::Message for HolderMsg {}

impl From<Inbound> for HolderMsg {
    fn from(inbound: Inbound) -> Self {
        Self::Inbound(inbound)
    }
}

impl From<SessionSignal> for HolderMsg {
    fn from(_: SessionSignal) -> Self {
        Self::Signal
    }
}

/// Keeps every message; counts their payload bytes, and the most it held.
struct Holder;

struct Held {
    inbounds: Vec<Inbound>,
    bytes: usize,
    peak: Arc<AtomicUsize>,
    arrived: mpsc::UnboundedSender<usize>,
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Holder {
    type Msg = HolderMsg;
    type State = Held;
    type Arguments = (Arc<AtomicUsize>, mpsc::UnboundedSender<usize>);

    async fn pre_start(
        &self,
        _: ActorRef<HolderMsg>,
        (peak, arrived): Self::Arguments,
    ) -> Result<Held, ActorProcessingErr> {
        Ok(Held {
            inbounds: Vec::new(),
            bytes: 0,
            peak,
            arrived,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<HolderMsg>,
        message: HolderMsg,
        held: &mut Held,
    ) -> Result<(), ActorProcessingErr> {
        if let HolderMsg::Inbound(inbound) = message {
            held.bytes += inbound.payload().len();
            held.peak.fetch_max(held.bytes, Ordering::SeqCst);
            let _ = held.arrived.send(held.bytes);
            held.inbounds.push(inbound);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let peers = option(&args, "--peers", 2)?;
    let sessions = option(&args, "--sessions", 48)?;
    let messages = option(&args, "--messages", 4)?;
    let cap = option(&args, "--cap-mib", 2048)? as usize * MIB;
    let budget = BudgetConfig::default();

    let hub = Node::builder()
        .name("hub")
        .listen("127.0.0.1:0".parse()?)
        .secret(Secret::new(SECRET)?)
        .budget(budget.clone())
        .start()
        .await?;
    let peak = Arc::new(AtomicUsize::new(0));
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let (holder, _) = Actor::spawn(None, Holder, (peak.clone(), arrived_tx)).await?;
    hub.register("holder", &holder)?;
    let addr = hub.local_addr().expect("listening").to_string();

    let block = Block {
        body: vec![7; 4 * MIB - 64],
    };
    let mut floods = Vec::new();
    let mut nodes = Vec::new();
    for p in 0..peers {
        let node = Node::builder()
            .name(format!("mallory-{p}"))
            .secret(Secret::new(SECRET)?)
            .start()
            .await?;
        let (owner, _) = Actor::spawn(None, IgnoringOwner, ()).await?;
        for _ in 0..sessions {
            let session: RemoteRef<Flood> = node.connect((&addr, "holder")).owner(&owner).await?;
            let block = block.clone();
            floods.push(tokio::spawn(async move {
                for _ in 0..messages {
                    if session.cast(block.clone()).await.is_err() {
                        return;
                    }
                }
            }));
        }
        nodes.push((node, owner));
    }
    let bar = progress::bar("inbound_flood", (cap / MIB) as u64);
    bar.set_message("MiB held by the actor");
    while let Ok(Some(bytes)) = tokio::time::timeout(Duration::from_secs(2), arrived.recv()).await {
        bar.set_position((bytes / MIB) as u64);
        if bytes >= cap {
            break;
        }
    }
    bar.finish_and_clear();
    let held_peak = peak.load(Ordering::SeqCst);
    let total = peers as usize * sessions as usize;
    let initial = SessionConfig::default().initial_credit_bytes as usize;
    let bound = budget
        .node_inbound_bytes
        .min(budget.peer_inbound_bytes * peers as usize)
        + total * initial;
    let within = held_peak <= bound;
    let mib = |b: usize| b as f64 / MIB as f64;
    println!(
        "duologue inbound_flood peers={peers} sessions_per_peer={sessions} message_mib=4 \
         held_peak_mib={:.1} peer_budget_mib={:.0} node_budget_mib={:.0} bound_mib={:.1} within={}",
        mib(held_peak),
        mib(budget.peer_inbound_bytes),
        mib(budget.node_inbound_bytes),
        mib(bound),
        if within { "yes" } else { "no" },
    );
    let mut summary = Summary::new("inbound_flood");
    summary.figure(format_args!(
        "{peers} peer(s) x {sessions} sessions casting 4 MiB messages at an actor that keeps \
         them: at most {:.1} MiB held at once; the budgets allow {:.1} MiB",
        mib(held_peak),
        mib(bound)
    ));
    for flood in floods {
        flood.abort();
    }
    drop(nodes);
    if !within {
        let why = "more than the inbound budgets was in flight towards the actor";
        progress::eprintln(summary.failed(why));
        bail!(why);
    }
    progress::eprintln(summary.ok());
    Ok(())
}
