//! A bank that must balance, in the style of Jepsen's bank test: account entities that
//! keep their state in PostgreSQL under shard leases, on three node processes each in a
//! network namespace of its own (the lab), while clients deposit and withdraw by calls
//! and a nemesis cuts one node off, SIGKILLs one and SIGSTOPs one for longer than its
//! lease, healing each after.
//!
//! ```text
//!   lab host 0..2: node processes n0 n1 n2 (this binary again, child mode: [`child`])
//!   lab host 3:    PostgreSQL (duologue_testkit::postgres), the state and the leases
//!   lab host 4:    the clients (a node outside the cluster) and the checker
//! ```
//!
//! Each operation has an id; an account applies an operation once (it keeps the ids it
//! applied in its state), so a client that got no answer retries the same id through
//! another node. At the end the checker reads every account **from the store**, not from
//! the nodes, and counts ([`Report`]):
//!
//! - lost: an operation acknowledged as applied that its account does not hold;
//! - duplicated: an operation an account holds twice, or one it holds but refused;
//! - unbalanced: an account whose balance is not the sum of what it holds (or below 0);
//! - overlaps: two lease epochs of one shard whose times overlap, from the lease history
//!   the store keeps.
//!
//! The nemesis moves on from a fault once the store shows that other nodes took over
//! shards the faulty node held (it waits for that, bounded), not after a fixed time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duologue::state::{Durable, StateConfig, StateStore};
use duologue::wire::Fault;
use duologue::{Entity, Node, NodeConfig, Secret};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::{Rng, SeedableRng};

use crate::postgres::Postgres;
use crate::{ChildGuard, Lab, Signal};

const SECRET: &str = "bank test secret, thirty-two b!!!";
const KIND: &str = "account";
const WAIT: Duration = Duration::from_secs(30);
/// How long a client waits for one attempt of an operation.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one operation (each through a node picked at random) before it is
/// counted unknown.
const ATTEMPTS: usize = 3;
/// The lab's hosts.
const NODES: usize = 3;
const DATABASE_HOST: usize = 3;
const CLIENT_HOST: usize = 4;

/// The first argument of the calling binary's child mode: `--bank-child NAME --ip IP
/// --state URL --lease-ms MS [--seed ADDR]`.
pub const CHILD_FLAG: &str = "--bank-child";

/// An account's state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Account {
    /// The balance.
    #[prost(int64, tag = "1")]
    pub balance: i64,
    /// The operations applied, in order.
    #[prost(string, repeated, tag = "2")]
    pub applied: Vec<String>,
}

/// An operation: `amount` in (deposit) or out (withdrawal, negative); 0 reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    /// Unique per operation; a retry carries the same.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The amount.
    #[prost(int64, tag = "2")]
    pub amount: i64,
}

impl prost::Name for Operation {
    const NAME: &'static str = "Operation";
    const PACKAGE: &'static str = "duologue.bank";
    fn type_url() -> String {
        "type.googleapis.com/duologue.bank.Operation".into()
    }
}

/// What an account answers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Outcome {
    /// The balance after it.
    #[prost(int64, tag = "1")]
    pub balance: i64,
    /// Whether the operation is applied (now, or by an earlier attempt).
    #[prost(bool, tag = "2")]
    pub applied: bool,
}

impl prost::Name for Outcome {
    const NAME: &'static str = "Outcome";
    const PACKAGE: &'static str = "duologue.bank";
    fn type_url() -> String {
        "type.googleapis.com/duologue.bank.Outcome".into()
    }
}

/// The account protocol.
#[derive(Debug)]
pub struct Bank;

impl duologue::Protocol for Bank {
    type Request = Operation;
    type Response = Outcome;
}

/// An account entity.
struct AccountActor;

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for AccountActor {
    type Msg = Entity<Bank>;
    type State = Durable<Account>;
    type Arguments = Durable<Account>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        account: Durable<Account>,
    ) -> Result<Durable<Account>, ActorProcessingErr> {
        Ok(account)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        account: &mut Durable<Account>,
    ) -> Result<(), ActorProcessingErr> {
        let Entity::Call { request, reply, .. } = message else {
            return Ok(());
        };
        let now = account.get();
        let outcome = |balance, applied| Outcome { balance, applied };
        if request.amount == 0 || now.applied.contains(&request.id) {
            let applied = request.amount != 0;
            let _ = reply.send(outcome(now.balance, applied));
        } else if now.balance + request.amount < 0 {
            let _ = reply.send(outcome(now.balance, false));
        } else {
            match account
                .update(|a| {
                    a.balance += request.amount;
                    a.applied.push(request.id.clone());
                    a.balance
                })
                .await
            {
                Ok(balance) => {
                    let _ = reply.send(outcome(balance, true));
                }
                Err(error) => {
                    let _ = reply.fail(Fault {
                        code: "state".into(),
                        message: error.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Child mode, from the arguments after the program's name: a node hosting accounts in
/// the store given, until SIGTERM. It prints `listening on ADDR` and `gossip on ADDR`.
///
/// # Errors
/// Missing arguments, or the node failing to start.
pub async fn child(argv: &[String]) -> anyhow::Result<()> {
    let value =
        |flag: &str| crate::flag_value(argv, flag).ok_or_else(|| anyhow::anyhow!("{flag} missing"));
    let name = value(CHILD_FLAG)?;
    let ip: std::net::IpAddr = value("--ip")?.parse()?;
    let lease = Duration::from_millis(value("--lease-ms")?.parse()?);
    let cluster = crate::quick_cluster((ip, 0).into(), value("--seed").ok());
    let node = Node::builder()
        .config(NodeConfig {
            name,
            listen: Some((ip, 0).into()),
            cluster: Some(cluster),
            insecure_plaintext: true,
            ..NodeConfig::default()
        })
        .secret(Secret::new(SECRET)?)
        .state(StateConfig::new(value("--state")?).with_lease(lease))
        .durable_entity(KIND, |_node: Node, _id: String, account| async move {
            let (account, _) = Actor::spawn(None, AccountActor, account)
                .await
                .map_err(|e| e.to_string())?;
            Ok(account)
        })
        .start()
        .await?;
    crate::announce_until_sigterm(node).await
}

/// How long and how hard a run is.
#[derive(Clone, Debug)]
pub struct Run {
    /// How long the clients go on at least (the faults come within it).
    pub seconds: u64,
    /// How many accounts.
    pub accounts: u64,
    /// How many clients call at once.
    pub clients: u64,
    /// The shard leases' length.
    pub lease: Duration,
    /// Draws accounts and amounts.
    pub seed: u64,
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Operations issued (reads not counted).
    pub operations: u64,
    /// Acknowledged as applied.
    pub applied: u64,
    /// Acknowledged as refused (not enough on the account).
    pub refused: u64,
    /// Not acknowledged after every attempt: applied or not, either is allowed.
    pub unknown: u64,
    /// Of those, how many the accounts hold.
    pub unknown_applied: u64,
    /// Attempts that failed (a timeout, a typed error) and were retried or given up.
    pub failed_attempts: u64,
    /// Faults injected, in order.
    pub faults: Vec<String>,
    /// Acknowledged operations the accounts do not hold.
    pub lost: u64,
    /// Operations held twice, or held although refused, or held by the wrong account.
    pub duplicated: u64,
    /// Accounts whose balance is not the sum of what they hold, or below zero.
    pub unbalanced: u64,
    /// Pairs of lease epochs of one shard that overlap in time (the store's history).
    pub overlaps: u64,
    /// Lease epochs in the history.
    pub epochs: u64,
    /// The first overlapping pairs, as the history has them.
    pub overlapping: Vec<String>,
    /// How long the run took.
    pub took: Duration,
}

impl Report {
    /// Whether the bank balanced: nothing lost, duplicated, unbalanced or overlapping.
    pub fn holds(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unbalanced == 0 && self.overlaps == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bank: {} operations in {:.1?}: {} applied, {} refused (funds), {} unknown ({} of them applied), {} failed attempts",
            self.operations,
            self.took,
            self.applied,
            self.refused,
            self.unknown,
            self.unknown_applied,
            self.failed_attempts
        )?;
        writeln!(f, "faults: {}", self.faults.join("; "))?;
        write!(
            f,
            "lost {}, duplicated {}, unbalanced {}, overlapping lease epochs {} (of {} epochs)",
            self.lost, self.duplicated, self.unbalanced, self.overlaps, self.epochs
        )?;
        for pair in &self.overlapping {
            write!(f, "\n  overlap: {pair}")?;
        }
        Ok(())
    }
}

/// One operation as the client saw it.
#[derive(Clone, Debug)]
struct Issued {
    account: u64,
    amount: i64,
    /// `Some(applied)` once acknowledged.
    answer: Option<bool>,
}

/// A node process of the run.
struct Member {
    child: ChildGuard,
    addr: String,
    gossip: String,
}

/// Runs the bank with node processes started as `exe` (a binary whose child mode is
/// [`child`]): builds the lab, starts PostgreSQL in it, and everything else from a thread
/// in the clients' host.
///
/// # Errors
/// The lab, the server or a node failing to start, or a step not happening in time.
pub fn run(exe: &Path, run: &Run) -> anyhow::Result<Report> {
    let lab = Arc::new(Lab::new(5)?);
    let database = Postgres::start_in(&lab, DATABASE_HOST)?;
    let (url, exe, run, inside) = (database.url(), exe.to_owned(), run.clone(), lab.clone());
    let report = lab.run_in(CLIENT_HOST, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(bank(&inside, &exe, &url, &run))
    })?;
    // The server goes before the lab that carries its link.
    drop(database);
    report
}

async fn start_member(
    lab: &Lab,
    exe: &Path,
    host: usize,
    url: &str,
    lease: Duration,
    seed: Option<&str>,
) -> anyhow::Result<Member> {
    let name = format!("n{host}");
    let mut args = vec![
        CHILD_FLAG.to_owned(),
        name.clone(),
        "--ip".into(),
        lab.ip(host).to_string(),
        "--state".into(),
        url.to_owned(),
        "--lease-ms".into(),
        lease.as_millis().to_string(),
    ];
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    let mut child = lab.spawn(host, &name, exe, &args)?;
    let (addr, gossip) = crate::announced(&mut child, WAIT).await?;
    Ok(Member {
        child,
        addr,
        gossip,
    })
}

/// The newest epoch of each shard, its owner and until when it is held (its lease's
/// expiry, last renewal included), from the store's history.
type Holders = HashMap<u32, (u64, String, Option<i64>)>;

async fn holders(store: &StateStore) -> anyhow::Result<Holders> {
    let mut newest: Holders = HashMap::new();
    for record in store.lease_history(KIND).await? {
        let entry = newest.entry(record.shard).or_insert((
            record.epoch,
            record.owner.clone(),
            record.ends_at,
        ));
        if record.epoch >= entry.0 {
            *entry = (record.epoch, record.owner, record.ends_at);
        }
    }
    Ok(newest)
}

/// Waits (bounded) until other nodes hold newer epochs of at least `enough` of the
/// shards `node` held under a live lease when the fault began (or of all of them, if
/// fewer), and `at_least` passed: the fault took effect in the store. Returns how many
/// moved. A lease is live if it ends within half a lease of `node`'s newest end: a node
/// renews all its leases every quarter lease; those it released or lost ended earlier.
async fn until_taken_over(
    store: &StateStore,
    node: &str,
    lease: Duration,
    before: &Holders,
    enough: usize,
    at_least: Duration,
) -> anyhow::Result<usize> {
    let half = i64::try_from(lease.as_millis() / 2).unwrap_or(i64::MAX);
    let since = Instant::now();
    let prefix = format!("{node}/");
    let newest_end = before
        .values()
        .filter(|(_, owner, _)| owner.starts_with(&prefix))
        .filter_map(|(_, _, ends)| *ends)
        .max()
        .unwrap_or_default();
    let held: Vec<(u32, u64)> = before
        .iter()
        .filter(|(_, (_, owner, ends))| {
            owner.starts_with(&prefix) && ends.is_some_and(|end| end + half >= newest_end)
        })
        .map(|(shard, (epoch, _, _))| (*shard, *epoch))
        .collect();
    let wanted = enough.min(held.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut watch = tokio::time::interval(Duration::from_millis(200));
    loop {
        watch.tick().await;
        let now = holders(store).await?;
        let moved = held
            .iter()
            .filter(|(shard, epoch)| {
                now.get(shard)
                    .is_some_and(|(e, owner, _)| e > epoch && !owner.starts_with(&prefix))
            })
            .count();
        if moved >= wanted && since.elapsed() >= at_least {
            return Ok(moved);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {moved} of the {} shards {node} held moved to other nodes within 60 s: {:?}",
            held.len(),
            held.iter()
                .map(|(shard, epoch)| (shard, epoch, now.get(shard)))
                .take(10)
                .collect::<Vec<_>>()
        );
    }
}

async fn bank(lab: &Lab, exe: &Path, url: &str, run: &Run) -> anyhow::Result<Report> {
    let began = Instant::now();
    let store = StateStore::open(url).await?;
    let mut members: Vec<Member> = Vec::new();
    for host in 0..NODES {
        let seed = members.first().map(|m| m.gossip.clone());
        members.push(start_member(lab, exe, host, url, run.lease, seed.as_deref()).await?);
    }
    let client = Node::builder()
        .name("bank-client")
        .secret(Secret::new(SECRET)?)
        .start()
        .await?;
    // Where the clients send: a node restarted listens on another port.
    let addrs: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(members.iter().map(|m| m.addr.clone()).collect()));
    crate::cluster::wait_members_at(&client, &members[0].addr, WAIT, |m| {
        crate::cluster::count_up(m) == NODES
    })
    .await;

    let issued: Arc<Mutex<BTreeMap<String, Issued>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..run.clients {
        let (client, addrs, issued, failed, acknowledged, stop) = (
            client.clone(),
            addrs.clone(),
            issued.clone(),
            failed.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        let (accounts, mut rng) = (
            run.accounts,
            rand::rngs::StdRng::seed_from_u64(run.seed.wrapping_add(c)),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("c{c}-{n}");
                let account = rng.random_range(0..accounts);
                let amount = match rng.random_range(0..10) {
                    0..7 => rng.random_range(1..=100),
                    _ => -rng.random_range(1..=100),
                };
                issued.lock().expect("issued").insert(
                    id.clone(),
                    Issued {
                        account,
                        amount,
                        answer: None,
                    },
                );
                for _ in 0..ATTEMPTS {
                    let addr = {
                        let addrs = addrs.lock().expect("addrs");
                        addrs[rng.random_range(0..addrs.len())].clone()
                    };
                    let Ok(handle) =
                        client.entity_via::<Bank>(&addr, KIND, &format!("acct-{account}"))
                    else {
                        break;
                    };
                    let operation = Operation {
                        id: id.clone(),
                        amount,
                    };
                    match handle.call(operation, CALL_TIMEOUT).await {
                        Ok(outcome) => {
                            if let Some(op) = issued.lock().expect("issued").get_mut(&id) {
                                op.answer = Some(outcome.applied);
                            }
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }

    // The nemesis, each fault paced by operations acknowledged since the last (at most
    // 10 s apart).
    let mut faults = Vec::new();
    let pace = async |acknowledged: &AtomicU64, ops: u64| {
        let from = acknowledged.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut watch = tokio::time::interval(Duration::from_millis(50));
        while acknowledged.load(Ordering::Relaxed) < from + ops && Instant::now() < deadline {
            watch.tick().await;
        }
    };
    let enough = 8;
    let seconds = Duration::from_secs(run.seconds);
    // Rounds of three faults, on a different node each, while a round fits.
    for round in 0.. {
        let (cut, killed, paused) = (round % NODES, (round + 1) % NODES, (round + 2) % NODES);
        pace(&acknowledged, 2_000).await;
        if began.elapsed() + Duration::from_secs(15) > seconds && round > 0 {
            break;
        }
        // Said as each fault begins (a run that fails shows where it was).
        let at = |faults: &[String]| {
            let when = format!(
                "{}. {:.1?} ({} acknowledged)",
                faults.len() + 1,
                began.elapsed(),
                acknowledged.load(Ordering::Relaxed)
            );
            eprintln!("bank: fault {when}");
            when
        };
        // Cut off from everything: the other nodes, the store, the clients.
        let (name, when) = (format!("n{cut}"), at(&faults));
        let before = holders(&store).await?;
        lab.cut(cut)?;
        let moved =
            until_taken_over(&store, &name, run.lease, &before, enough, Duration::ZERO).await;
        lab.heal(cut)?;
        faults.push(format!(
            "{when} {name} cut off until {} of its shards moved, healed",
            moved?
        ));
        pace(&acknowledged, 2_000).await;
        // SIGKILLed, restarted (on another port) once its shards moved.
        let (name, when) = (format!("n{killed}"), at(&faults));
        let before = holders(&store).await?;
        members[killed].child.signal(Signal::SIGKILL)?;
        let moved =
            until_taken_over(&store, &name, run.lease, &before, enough, Duration::ZERO).await?;
        let seed = members[(killed + 1) % NODES].gossip.clone();
        members[killed] = start_member(lab, exe, killed, url, run.lease, Some(&seed)).await?;
        addrs.lock().expect("addrs")[killed] = members[killed].addr.clone();
        faults.push(format!(
            "{when} {name} SIGKILLed, restarted once {moved} of its shards moved"
        ));
        pace(&acknowledged, 2_000).await;
        // Paused (SIGSTOP) until others took its shards: longer than its lease.
        let (name, when) = (format!("n{paused}"), at(&faults));
        let before = holders(&store).await?;
        let since = Instant::now();
        members[paused].child.signal(Signal::SIGSTOP)?;
        // Longer than its lease, whatever the store shows sooner.
        let longer = run.lease + run.lease / 2;
        let moved = until_taken_over(&store, &name, run.lease, &before, enough, longer).await;
        members[paused].child.signal(Signal::SIGCONT)?;
        faults.push(format!(
            "{when} {name} SIGSTOPped for {:.1?} (lease {:?}) until {} of its shards moved, SIGCONT",
            since.elapsed(),
            run.lease,
            moved?
        ));
    }
    // The rest of the run, then the clients stop.
    let mut watch = tokio::time::interval(Duration::from_millis(100));
    while began.elapsed() < Duration::from_secs(run.seconds) {
        watch.tick().await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(CALL_TIMEOUT * (ATTEMPTS as u32 + 1), client).await??;
    }

    let issued = issued.lock().expect("issued").clone();
    let mut report = check(&store, &issued, run.accounts).await?;
    report.failed_attempts = failed.load(Ordering::Relaxed);
    report.faults = faults;
    report.took = began.elapsed();
    for member in &mut members {
        let _ = member.child.signal(Signal::SIGKILL);
    }
    client.shutdown().await;
    store.close().await;
    Ok(report)
}

/// Reads every account from the store and checks it against what the clients saw.
async fn check(
    store: &StateStore,
    issued: &BTreeMap<String, Issued>,
    accounts: u64,
) -> anyhow::Result<Report> {
    let mut report = Report {
        operations: issued.len() as u64,
        ..Report::default()
    };
    let mut held: HashSet<String> = HashSet::new();
    for account in 0..accounts {
        let stored = store.load(KIND, &format!("acct-{account}")).await?;
        let state = if stored.revision == 0 {
            Account::default()
        } else {
            <Account as prost::Message>::decode(stored.bytes.as_slice())?
        };
        let mut sum = 0;
        let mut seen = HashSet::new();
        for id in &state.applied {
            let op = issued.get(id);
            let wrong = op.is_none_or(|op| op.account != account || op.answer == Some(false));
            if !seen.insert(id.clone()) || wrong {
                report.duplicated += 1;
            }
            sum += op.map_or(0, |op| op.amount);
            held.insert(id.clone());
        }
        if sum != state.balance || state.balance < 0 {
            report.unbalanced += 1;
        }
    }
    for (id, op) in issued {
        match op.answer {
            Some(true) => {
                report.applied += 1;
                if !held.contains(id) {
                    report.lost += 1;
                }
            }
            Some(false) => report.refused += 1,
            None => {
                report.unknown += 1;
                report.unknown_applied += u64::from(held.contains(id));
            }
        }
    }
    let history = store.lease_history(KIND).await?;
    report.epochs = history.len() as u64;
    for pair in history.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.shard == b.shard && a.ends_at.is_none_or(|end| end > b.started_at) {
            report.overlaps += 1;
            if report.overlapping.len() < 5 {
                report.overlapping.push(format!("{a:?} / {b:?}"));
            }
        }
    }
    Ok(report)
}
