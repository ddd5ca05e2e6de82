//! Proto.Actor's remote benchmark method (protoactor-go `examples/remote-benchmark`), with
//! every guarantee on: node B sends `n` small pings to echo actors on node A without
//! waiting for answers, each echo answers every ping with one pong on the same session,
//! and the rate counts both directions (`2 n / elapsed`). Unlike Proto.Actor's, every
//! message here is sequenced, acknowledged, credited and kept for a resume.
//!
//! One session (`pingpong_msgs_per_s`, the figure beside the baseline's), and the same
//! pings spread over several sessions sending at once, one echo actor each
//! (`pingpong_<k>_sessions_msgs_per_s`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use duologue::{Inbound, Node, RemoteRef, mailbox::BatchedSessionMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Notify;

use super::{BenchProtocol, BenchReply, BenchRequest, CALL_TIMEOUT, cast_many};

/// `BenchRequest::kind`: a ping, answered by one pong cast back on its session.
pub(crate) const KIND_PING: u32 = 4;
/// How many echo actors node A registers (`echo-0` ...): the most sessions a run uses.
pub(crate) const ECHOES: usize = 8;
/// Pings in the (unreported) warm-up, as the baseline's.
const WARMUP_PINGS: u64 = 20_000;

/// How the ping-pong actors take their messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A run of messages that arrived together as one mailbox message
    /// (`Owner::batched`), answered with one `cast_all`.
    Batches,
    /// One mailbox message per message, answered with one `cast` each.
    OneByOne,
}

impl Delivery {
    /// The figure's name for `sessions` sessions.
    pub(crate) fn key(self, sessions: usize) -> String {
        let delivery = match self {
            Self::Batches => "",
            Self::OneByOne => "_one_by_one",
        };
        match sessions {
            1 => format!("pingpong{delivery}_msgs_per_s"),
            k => format!("pingpong{delivery}_{k}_sessions_msgs_per_s"),
        }
    }
}

/// The name of node A's `i`-th echo actor taking messages by `delivery`.
pub(crate) fn echo_name(i: usize, delivery: Delivery) -> String {
    match delivery {
        Delivery::Batches => format!("echo-batched-{i}"),
        Delivery::OneByOne => format!("echo-{i}"),
    }
}

/// Node A's echo: answers each ping with a pong on the ping's session, and a batch of
/// pings with one `cast_all` of their pongs. It waits for credit when the pongs' reader
/// falls behind, as any sender does.
pub(crate) struct Echo;

/// The pong answering `inbound`, if it is a ping.
fn pong(inbound: &Inbound) -> Result<Option<BenchReply>, ActorProcessingErr> {
    let ping: BenchRequest = inbound.decode()?;
    Ok((ping.kind == KIND_PING).then_some(BenchReply {
        rx_span_ns: 0,
        payload: ping.payload,
    }))
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Echo {
    type Msg = BatchedSessionMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        (): (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        message: BatchedSessionMsg,
        (): &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BatchedSessionMsg::Inbound(inbound) => {
                if let Some(pong) = pong(&inbound)? {
                    inbound
                        .session()
                        .cast(pong)
                        .await
                        .map_err(|e| format!("pong: {e}"))?;
                }
            }
            BatchedSessionMsg::Batch(batch) => {
                let pongs = batch
                    .iter()
                    .filter_map(|inbound| pong(inbound).transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                let session = batch.session().clone();
                // The pings are consumed (credit back to the pinger) before the pongs
                // wait for credit of their own.
                drop(batch);
                session
                    .cast_all(pongs)
                    .await
                    .map_err(|e| format!("pongs: {e}"))?;
            }
            BatchedSessionMsg::Signal(_) => {}
        }
        Ok(())
    }
}

/// Pongs counted on node B, and who waits for a count.
#[derive(Default)]
struct Count {
    pongs: AtomicU64,
    changed: Notify,
}

/// Node B's owner of a ping-pong session: counts its pongs.
struct Counter;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for Counter {
    type Msg = BatchedSessionMsg;
    type State = Arc<Count>;
    type Arguments = Arc<Count>;

    async fn pre_start(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        count: Arc<Count>,
    ) -> Result<Arc<Count>, ActorProcessingErr> {
        Ok(count)
    }

    async fn handle(
        &self,
        _: ActorRef<BatchedSessionMsg>,
        message: BatchedSessionMsg,
        count: &mut Arc<Count>,
    ) -> Result<(), ActorProcessingErr> {
        let pongs = match message {
            BatchedSessionMsg::Inbound(_) => 1,
            BatchedSessionMsg::Batch(batch) => batch.len() as u64,
            BatchedSessionMsg::Signal(_) => return Ok(()),
        };
        count.pongs.fetch_add(pongs, Ordering::Relaxed);
        count.changed.notify_one();
        Ok(())
    }
}

/// Ping-pong sessions from node B to node A's echoes, each owned by a counter.
pub(crate) struct Pairs {
    echoes: Vec<RemoteRef<BenchProtocol>>,
    counters: Vec<ActorRef<BatchedSessionMsg>>,
    count: Arc<Count>,
}

impl Pairs {
    /// Opens `k` sessions to the first `k` echoes taking messages by `delivery` at
    /// `addr`, owned by counters taking them the same way.
    pub(crate) async fn open(
        node: &Node,
        addr: &str,
        k: usize,
        delivery: Delivery,
    ) -> anyhow::Result<Self> {
        let count = Arc::new(Count::default());
        let mut echoes = Vec::with_capacity(k);
        let mut counters = Vec::with_capacity(k);
        for i in 0..k {
            let (counter, _) = Actor::spawn(None, Counter, count.clone()).await?;
            let echo = echo_name(i, delivery);
            echoes.push(match delivery {
                Delivery::Batches => {
                    node.connect((addr, &echo))
                        .policy(node.config().policy)
                        .owner(duologue::Owner::batched(&counter))
                        .await?
                }
                Delivery::OneByOne => node.connect((addr, &echo)).owner(&counter).await?,
            });
            counters.push(counter);
        }
        Ok(Self {
            echoes,
            counters,
            count,
        })
    }

    /// A warm-up, then `n` pings spread over the sessions; returns messages per second,
    /// both directions counted.
    pub(crate) async fn measure(&self, n: u64, payload: &Bytes) -> anyhow::Result<f64> {
        self.round(WARMUP_PINGS, payload).await?;
        let elapsed = self.round(n, payload).await?;
        Ok(2.0 * n as f64 / elapsed.as_secs_f64())
    }

    /// Sends `n` pings (each session its share, all at once) and waits for `n` pongs.
    async fn round(&self, n: u64, payload: &Bytes) -> anyhow::Result<Duration> {
        let before = self.count.pongs.load(Ordering::Relaxed);
        let k = self.echoes.len() as u64;
        let start = Instant::now();
        let senders = self.echoes.iter().enumerate().map(|(i, echo)| {
            let share = n / k + u64::from((i as u64) < n % k);
            cast_many(echo, share, KIND_PING, payload)
        });
        let wanted = before + n;
        let all_back = async {
            loop {
                let changed = self.count.changed.notified();
                if self.count.pongs.load(Ordering::Relaxed) >= wanted {
                    return;
                }
                changed.await;
            }
        };
        let (sent, ()) = tokio::time::timeout(
            CALL_TIMEOUT,
            futures::future::join(futures::future::try_join_all(senders), all_back),
        )
        .await
        .context("the pongs did not all come back in time")?;
        sent?;
        Ok(start.elapsed())
    }

    /// Ends the sessions and their counters.
    pub(crate) fn close(self) {
        for echo in &self.echoes {
            echo.finish();
        }
        for counter in self.counters {
            counter.stop(None);
        }
    }
}
