//! A slow consumer and what the sender sees: credit runs out, casts wait, `try_cast` hands
//! messages back, the receiver pauses and resumes the sender from its backlog's
//! watermarks, and memory stays bounded on both sides; nothing is lost.
//!
//! ```text
//! cargo run --release --example backpressure
//! ```

use duologue::SessionMsg;
use std::time::{Duration, Instant};

use duologue::FlowSignal;
use duologue::{
    Node, NodeConfig, RemoteRef, Secret, SendError, SessionSignal, settings::SessionConfig,
};
use duologue_actors::seq_check::proto::{ReportRequest, Tick, check_reply};
use duologue_actors::seq_check::{CheckConfig, SeqCheck};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const TICKS: u64 = 40_000;
const WINDOW: u64 = 2_000;
const CONSUMER_RATE: u32 = 10_000;

/// The sender's owner: prints the flow signals its session receives.
struct Owner;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Owner {
    type Msg = SessionMsg;
    type State = Instant;
    type Arguments = Instant;

    async fn pre_start(
        &self,
        _: ActorRef<SessionMsg>,
        start: Instant,
    ) -> Result<Instant, ActorProcessingErr> {
        Ok(start)
    }

    async fn handle(
        &self,
        _: ActorRef<SessionMsg>,
        message: SessionMsg,
        start: &mut Instant,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Signal(SessionSignal::Flow(session, signal)) => {
                let flow = session.flow();
                let what = match signal {
                    FlowSignal::Pause => "the receiver says Pause".to_owned(),
                    FlowSignal::Resume => "the receiver says Resume".to_owned(),
                    other => format!("the receiver says {other:?}"),
                };
                println!(
                    "  {:>7.1} ms  {what:<26} (credit left {}, unacked {})",
                    start.elapsed().as_secs_f64() * 1e3,
                    flow.credit,
                    session.unacked()
                );
            }
            SessionMsg::Signal(_) => {}
            SessionMsg::Inbound(inbound) => println!("unexpected {}", inbound.type_url()),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = Secret::new("example secret, at least 16 bytes")?;
    // The receiving node lets each peer run WINDOW messages ahead of its actors.
    let far = Node::builder()
        .config(NodeConfig {
            name: "far".into(),
            listen: Some("127.0.0.1:0".parse()?),
            session: SessionConfig {
                credit_window: WINDOW,
                ..SessionConfig::default()
            },
            ..NodeConfig::default()
        })
        .secret(secret.clone())
        .start()
        .await?;
    let slow = CheckConfig {
        name: "slow".into(),
        per_second: Some(CONSUMER_RATE),
    };
    let (checker, _) = Actor::spawn(None, SeqCheck, slow).await?;
    far.register("slow", &checker)?;

    let near = Node::builder().name("near").secret(secret).start().await?;
    let start = Instant::now();
    let (owner, _) = Actor::spawn(None, Owner, start).await?;
    let check: RemoteRef<SeqCheck> = near
        .connect((&far.local_addr().unwrap().to_string(), "slow"))
        .owner(&owner)
        .await?;
    println!(
        "sending {TICKS} ticks as fast as possible to a consumer taking {CONSUMER_RATE}/s, \
         credit window {WINDOW}\n"
    );

    let (mut handed_back, mut waited) = (0, Duration::ZERO);
    for n in 1..=TICKS {
        let tick = Tick {
            n,
            filler: bytes::Bytes::from_static(&[7; 64]),
        };
        if let Err(SendError::HeldBack { message: held, .. }) = check.try_cast(tick) {
            handed_back += 1;
            let before = Instant::now();
            check.cast(held).await?;
            waited += before.elapsed();
        }
    }
    let sent = start.elapsed();
    let reply = check
        .call(ReportRequest {}, Duration::from_secs(60))
        .await?;
    let Some(check_reply::Kind::Report(report)) = reply.kind else {
        anyhow::bail!("no report");
    };
    println!(
        "\nthe sender finished in {:.2} s (the consumer alone needs {:.2} s)",
        sent.as_secs_f64(),
        TICKS as f64 / f64::from(CONSUMER_RATE)
    );
    println!(
        "try_cast handed {handed_back} messages back; cast waited {:.2} s in all for credit",
        waited.as_secs_f64()
    );
    println!(
        "the receiver's backlog never passed {} (window {WINDOW})",
        report.max_backlog
    );
    println!(
        "received {} of {TICKS}, {} duplicates, {} gaps",
        report.received, report.duplicates, report.gaps
    );
    anyhow::ensure!(
        report.received == TICKS && report.duplicates == 0 && report.gaps == 0,
        "lost or doubled"
    );
    near.shutdown().await;
    far.shutdown().await;
    Ok(())
}
