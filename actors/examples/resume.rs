//! A broken stream is a state, not an error: two nodes, a transfer through a
//! fault-injecting proxy, a cut in the middle, then a peer that goes silent. The owner's
//! signals print as they arrive, with the measured detection and resume times, and the
//! sequence checker on the far side proves nothing was lost or doubled.
//!
//! ```text
//! cargo run --release --example resume
//! ```

use duologue::SessionMsg;
use std::time::{Duration, Instant};

use duologue::{Node, RemoteRef, Secret, SessionSignal};
use duologue_actors::seq_check::SeqCheck;
use duologue_actors::seq_check::proto::{ReportRequest, Tick, check_reply};
use duologue_testkit::FaultProxy;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

const TICKS: u64 = 300_000;

/// The owner of the sending side: forwards its session's signals to `main`.
struct Owner;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Owner {
    type Msg = SessionMsg;
    type State = mpsc::UnboundedSender<(Instant, SessionSignal)>;
    type Arguments = mpsc::UnboundedSender<(Instant, SessionSignal)>;

    async fn pre_start(
        &self,
        _: ActorRef<SessionMsg>,
        signals: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(signals)
    }

    async fn handle(
        &self,
        _: ActorRef<SessionMsg>,
        message: SessionMsg,
        signals: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Signal(signal) => {
                let _ = signals.send((Instant::now(), signal));
            }
            SessionMsg::Inbound(inbound) => println!("unexpected {}", inbound.type_url()),
        }
        Ok(())
    }
}

/// Waits for the next `Interrupted` and the `Resumed` after it, printing both relative
/// to `since`; returns (detected after, resumed after).
async fn watch(
    signals: &mut mpsc::UnboundedReceiver<(Instant, SessionSignal)>,
    since: Instant,
) -> anyhow::Result<(Duration, Duration)> {
    let mut detected = None;
    loop {
        let (at, signal) = tokio::time::timeout(Duration::from_secs(30), signals.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("owner gone"))?;
        let t = at - since;
        match signal {
            SessionSignal::Interrupted(_, cause) => {
                println!("  +{:>6.1} ms  Interrupted: {cause}", ms(t));
                detected = Some(t);
            }
            SessionSignal::Resumed(_, resumption) => {
                println!(
                    "  +{:>6.1} ms  Resumed: {} messages replayed, interrupted for {:.1} ms",
                    ms(t),
                    resumption.replayed,
                    ms(resumption.interrupted_for)
                );
                let detected =
                    detected.ok_or_else(|| anyhow::anyhow!("resumed before interrupted"))?;
                return Ok((detected, t));
            }
            other => anyhow::bail!("unexpected signal {other:?}"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = Secret::new("example secret, at least 16 bytes")?;
    let far = Node::builder()
        .name("far")
        .listen("127.0.0.1:0".parse()?)
        .secret(secret.clone())
        .start()
        .await?;
    let (checker, _) = Actor::spawn(None, SeqCheck, "check".into()).await?;
    far.register("check", &checker)?;
    let proxy = FaultProxy::start(far.local_addr().expect("far listens")).await?;

    let near = Node::builder().name("near").secret(secret).start().await?;
    let (signals_tx, mut signals) = mpsc::unbounded_channel();
    let (owner, _) = Actor::spawn(None, Owner, signals_tx).await?;
    let check: RemoteRef<SeqCheck> = near
        .connect((&proxy.addr().to_string(), "check"))
        .owner(&owner)
        .await?;
    println!(
        "near -> proxy {} -> far {}: sending {TICKS} ticks",
        proxy.addr(),
        far.local_addr().unwrap()
    );

    let tick = |n| Tick {
        n,
        filler: bytes::Bytes::from_static(&[0x5a; 32]),
    };
    for n in 1..=TICKS / 2 {
        check.cast(tick(n)).await?;
    }
    println!("\n1. cut every connection mid-transfer (the peers see a reset)");
    let cut = Instant::now();
    proxy.cut_all();
    let (cut_detected, cut_resumed) = watch(&mut signals, cut).await?;

    println!("\n2. the peer goes silent (no FIN, no RST: the proxy forwards nothing)");
    for n in TICKS / 2 + 1..=TICKS * 3 / 4 {
        check.cast(tick(n)).await?;
    }
    let silent = Instant::now();
    proxy.set_blackhole(true);
    let silence = tokio::spawn(async move {
        // Keep the peer silent a little past detection, then let it speak again.
        tokio::time::sleep(Duration::from_secs(4)).await;
        proxy.set_blackhole(false);
        proxy
    });
    let (silent_detected, silent_resumed) = watch(&mut signals, silent).await?;
    let _proxy = silence.await?;
    for n in TICKS * 3 / 4 + 1..=TICKS {
        check.cast(tick(n)).await?;
    }

    let reply = check
        .call(ReportRequest {}, Duration::from_secs(60))
        .await?;
    let Some(check_reply::Kind::Report(report)) = reply.kind else {
        anyhow::bail!("no report: {reply:?}");
    };
    println!(
        "\nthe checker received {} of {TICKS} ticks, last {}, {} duplicates, {} gaps",
        report.received, report.last, report.duplicates, report.gaps
    );
    println!(
        "cut:    detected in {:.1} ms, resumed {:.1} ms after the cut",
        ms(cut_detected),
        ms(cut_resumed)
    );
    println!(
        "silent: detected in {:.0} ms (defaults: 1 s keepalive + 1 s timeout), resumed {:.0} ms after it fell silent",
        ms(silent_detected),
        ms(silent_resumed)
    );
    anyhow::ensure!(
        (report.received, report.last, report.duplicates, report.gaps) == (TICKS, TICKS, 0, 0),
        "something was lost or doubled"
    );
    println!("nothing lost, nothing doubled");
    near.shutdown().await;
    far.shutdown().await;
    Ok(())
}
