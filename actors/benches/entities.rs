//! Entities across two processes: a node process (this binary again, in its child mode)
//! hosting an entity kind `echo` and, for comparison, a named actor `echo` of the same
//! protocol; this process, outside any cluster, reaches both through the node
//! (`Node::entity_via`, `Node::connect`). `--concurrency` tasks call in parallel.
//! Measures:
//!
//! - activations: one call to each of `--entities` new ids (the call starts the
//!   entity): activations per second, first-message latency p50 and p99;
//! - the node's resident memory per active entity (its RSS after the activations, less
//!   before, over their number; an echo entity holds 8 bytes of state);
//! - later messages: `--calls` calls to started entities against the same calls to the
//!   named actor: calls per second (the ratio), latency p50 and p99;
//! - the sessions between the two processes.
//!
//! ```text
//! cargo bench --bench entities -- [--entities 1000000] [--calls 200000] [--concurrency 64]
//! ```
//!
//! Figures in `benches/README.md` ("entities"). The child is killed on every way out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duologue::settings::EntityConfig;
use duologue::{Entity, Mailbox, Node, NodeConfig, RemoteRef, Secret};
use duologue_testkit::probe::{Ping, PingPong, Pong};
use duologue_testkit::{ChildGuard, Memory, args};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const SECRET: &str = "entities bench secret, 32 bytes!";
const WAIT: Duration = Duration::from_secs(60);
const KIND: &str = "echo";

/// An entity that answers a call with its request's `n` and counts what it got.
struct EchoEntity;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for EchoEntity {
    type Msg = Entity<PingPong>;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        got: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *got += 1;
        if let Entity::Call { request, reply, .. } = message {
            let _ = reply.send(Pong {
                n: request.n,
                deadline_left_ms: 0,
            });
        }
        Ok(())
    }
}

/// The named actor of the same protocol.
struct EchoNamed;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for EchoNamed {
    type Msg = Mailbox<PingPong>;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        got: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *got += 1;
        if let Mailbox::Call { request, reply, .. } = message {
            let _ = reply.send(Pong {
                n: request.n,
                deadline_left_ms: 0,
            });
        }
        Ok(())
    }
}

/// Child mode: a node hosting `echo` entities and the named `echo`; says where it
/// listens, then its resident memory on each line read from stdin, until stdin closes.
async fn child(entities: usize) -> anyhow::Result<()> {
    let mut config = EntityConfig::default();
    config.max_active = entities + 1;
    let node = Node::builder()
        .config(NodeConfig {
            name: "host".into(),
            listen: Some("127.0.0.1:0".parse()?),
            ..NodeConfig::default()
        })
        .secret(Secret::new(SECRET)?)
        .entities(config)
        .entity(KIND, |_node: Node, _id: String| async move {
            let (echo, _) = Actor::spawn(None, EchoEntity, ())
                .await
                .map_err(|e| e.to_string())?;
            Ok(echo)
        })
        .start()
        .await?;
    let (named, _) = Actor::spawn(None, EchoNamed, ()).await?;
    node.register(KIND, &named)?;
    println!("listening on {}", node.local_addr().expect("listens"));
    loop {
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|n| (n, line))
        })
        .await??;
        if line.0 == 0 {
            break;
        }
        let rss = Memory::of(None).map_or(0, |m| m.now);
        println!("rss {rss}");
    }
    node.shutdown().await;
    Ok(())
}

/// p50 and p99 of `latencies`, in microseconds.
fn percentiles(latencies: &mut [u32]) -> (u32, u32) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}

/// Runs `total` calls from `concurrency` tasks, call `i` made by `call(i)`; the
/// calls per second and every call's latency in microseconds.
async fn calls<F, Fut>(total: u64, concurrency: u64, call: F) -> anyhow::Result<(f64, Vec<u32>)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (call.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(latencies);
                }
                let sent = Instant::now();
                call(i).await?;
                latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
        }));
    }
    let mut all = Vec::with_capacity(total as usize);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), all))
}

async fn rss(child: &mut ChildGuard) -> anyhow::Result<u64> {
    use tokio::io::AsyncWriteExt;
    let stdin = child.stdin.as_mut().expect("piped");
    stdin.write_all(b"rss\n").await?;
    stdin.flush().await?;
    let line = child.stdout_line(WAIT).await?.unwrap_or_default();
    Ok(line.strip_prefix("rss ").unwrap_or("0").parse()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let entities = args::option(&argv, "--entities", 1_000_000)?;
    if argv.iter().any(|a| a == "--child") {
        return child(usize::try_from(entities)?).await;
    }
    let total_calls = args::option(&argv, "--calls", 200_000)?;
    let concurrency = args::option(&argv, "--concurrency", 64)?;
    let exe = std::env::current_exe()?;
    let child_args = vec![
        "--child".to_owned(),
        "--entities".into(),
        entities.to_string(),
    ];
    let mut host = ChildGuard::spawn("host", &exe, &child_args)?;
    let line = host.stdout_line(WAIT).await?.unwrap_or_default();
    let addr = line
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("the host said {line:?}"))?
        .to_owned();
    let client = Node::builder()
        .name("client")
        .secret(Secret::new(SECRET)?)
        .start()
        .await?;
    let timeout = Duration::from_secs(30);

    let before = rss(&mut host).await?;
    let (client_a, addr_a) = (client.clone(), addr.clone());
    let (activations, mut first) = calls(entities, concurrency, move |i| {
        let entity = client_a.entity_via::<PingPong>(&addr_a, KIND, &format!("e{i}"));
        async move {
            let pong = entity?.call(Ping { n: i, body: vec![] }, timeout).await?;
            anyhow::ensure!(pong.n == i, "e{i} answered {}", pong.n);
            Ok(())
        }
    })
    .await?;
    let after = rss(&mut host).await?;
    let per_entity = after.saturating_sub(before) as f64 / entities as f64;
    let (first_p50, first_p99) = percentiles(&mut first);

    let (client_b, addr_b) = (client.clone(), addr.clone());
    let started_ids = entities.min(10_000);
    let (entity_rate, mut later) = calls(total_calls, concurrency, move |i| {
        let entity =
            client_b.entity_via::<PingPong>(&addr_b, KIND, &format!("e{}", i % started_ids));
        async move {
            entity?.call(Ping { n: i, body: vec![] }, timeout).await?;
            Ok(())
        }
    })
    .await?;
    let (later_p50, later_p99) = percentiles(&mut later);

    // The inbox kept: dropping it would end the session.
    let (named, _inbox): (RemoteRef<PingPong>, _) = client
        .connect::<PingPong>((addr.as_str(), KIND))
        .inbox()
        .await?;
    let (named_rate, mut named_latencies) = calls(total_calls, concurrency, move |i| {
        let named = named.clone();
        async move {
            named.call(Ping { n: i, body: vec![] }, timeout).await?;
            Ok(())
        }
    })
    .await?;
    let (named_p50, named_p99) = percentiles(&mut named_latencies);
    let sessions = client.status().sessions.len();

    println!(
        "entities: {entities} activations at {activations:.0}/s (first message p50 {first_p50} us, \
         p99 {first_p99} us); host RSS {:.1} -> {:.1} MiB: {per_entity:.0} B per active entity",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!(
        "entities: {total_calls} calls to {started_ids} started entities at {entity_rate:.0}/s \
         (p50 {later_p50} us, p99 {later_p99} us); to one named actor {named_rate:.0}/s (p50 \
         {named_p50} us, p99 {named_p99} us): ratio {:.2}",
        entity_rate / named_rate
    );
    println!("entities: sessions between the two processes: {sessions}");
    drop(host);
    Ok(())
}
