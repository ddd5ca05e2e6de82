//! A chat transfer through resets, as a new user would run it: a room in a `duologue
//! node` process, a reader `duologue chat` connected directly, and a writer `duologue
//! chat` piping lines through a [`FaultProxy`] that resets (RST) every connection at
//! random moments. What the cross-process test and the `chat_resets` bench share.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::watch;

use crate::{ChildGuard, ClusterError, FaultProxy, Memory, NodeProcess, SecretDir, chat_member};

/// How the transfer runs.
#[derive(Clone, Debug)]
pub struct ChatTransfer {
    /// Lines the writer sends; `None`: as many as it can until `min_resets` resets
    /// happened.
    pub lines: Option<u64>,
    /// The writer's pace, lines per second; 0: as fast as its stdin takes them.
    pub rate: u64,
    /// Resets come every `reset_ms.0` to `reset_ms.1` milliseconds, at random.
    pub reset_ms: (u64, u64),
    /// With `lines: None`, the writer stops once this many resets happened.
    pub min_resets: u64,
    /// Both members run with `--rejoin`.
    pub rejoin: bool,
    /// Give up after this long without a line at the reader.
    pub stall: Duration,
}

impl Default for ChatTransfer {
    fn default() -> Self {
        Self {
            lines: Some(1_000_000),
            rate: 0,
            reset_ms: (100, 300),
            min_resets: 0,
            rejoin: false,
            stall: Duration::from_secs(60),
        }
    }
}

/// What a transfer did.
#[derive(Clone, Debug, Default)]
pub struct TransferReport {
    /// Lines the writer was given.
    pub sent: u64,
    /// Lines the reader printed from the writer (duplicates included).
    pub received: u64,
    /// Lines never received.
    pub lost: u64,
    /// Lines received more than once.
    pub duplicated: u64,
    /// Lines received out of order.
    pub reordered: u64,
    /// Connections the proxy reset.
    pub resets: u64,
    /// From the first line fed to the last one received.
    pub elapsed: Duration,
    /// The writer's exit code (`None`: it was killed or did not exit).
    pub writer_exit: Option<i32>,
    /// Times a member was let go, lost its session or joined again, by its own words.
    pub let_go: u64,
    /// The writer's stream interruptions and resumes, by its own words.
    pub interrupted: u64,
    /// See `interrupted`.
    pub resumed: u64,
    /// Peak resident memory of the room's, the writer's and the reader's processes, in
    /// bytes.
    pub peak_rss: [u64; 3],
    /// Whether the reader went silent for the stall bound.
    pub stalled: bool,
}

impl TransferReport {
    /// Every line arrived exactly once, in order, the writer exited 0 and nobody was let
    /// go.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.writer_exit == Some(0)
            && self.let_go == 0
            && !self.stalled
    }
}

/// What a member's stderr says that counts.
#[derive(Debug, Default)]
struct Said {
    let_go: AtomicU64,
    interrupted: AtomicU64,
    resumed: AtomicU64,
}

/// Words of a `duologue chat` on stderr that mean it left the room, or came back.
const LET_GO: [&str; 4] = ["let go", "session lost", "rejoined", "session closed"];

impl ChatTransfer {
    /// Runs it with the `duologue` command at `exe`; `progress` is told each line received
    /// (its number).
    ///
    /// # Errors
    /// A process that would not start or answer.
    pub async fn run(
        &self,
        exe: &Path,
        progress: impl Fn(u64),
    ) -> Result<TransferReport, ClusterError> {
        let secrets = SecretDir::create()?;
        let room = NodeProcess::chat_room(exe, &secrets, "general").await?;
        let proxy = Arc::new(FaultProxy::start(room.addr).await?);
        let mut reader = self
            .member(exe, &secrets, room.addr.to_string(), "reader")
            .await?;
        let mut writer = self
            .member(exe, &secrets, proxy.addr().to_string(), "writer")
            .await?;
        let (reader_said, writer_said) = (Arc::new(Said::default()), Arc::new(Said::default()));
        watch_stderr(&mut reader, reader_said.clone());
        watch_stderr(&mut writer, writer_said.clone());
        let pids = [room.child.pid(), writer.pid(), reader.pid()];
        let (stop, stopped) = watch::channel(false);
        let sampler = tokio::spawn(sample_peaks(pids, stopped.clone()));

        let resets = Arc::new(AtomicU64::new(0));
        let resetter = tokio::spawn(reset_randomly(
            proxy.clone(),
            self.reset_ms,
            resets.clone(),
            stopped,
        ));
        let started = Instant::now();
        let stdin = writer
            .stdin
            .take()
            .ok_or_else(|| ClusterError::Unexpected("writer stdin not piped".into()))?;
        let (sent_tx, mut sent_rx) = watch::channel(None::<u64>);
        let feed = tokio::spawn(feed(stdin, self.clone(), resets.clone(), sent_tx));

        let mut report = TransferReport::default();
        let (mut last, mut seen) = (0u64, 0u64);
        loop {
            if let Some(sent) = *sent_rx.borrow_and_update()
                && last >= sent
            {
                report.sent = sent;
                break;
            }
            let line = tokio::select! {
                line = reader.stdout_line(self.stall) => line,
                _ = sent_rx.changed() => continue,
            };
            let line = match line {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(_) => {
                    report.stalled = true;
                    break;
                }
            };
            let Some(n) = line
                .strip_prefix("writer: ")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            seen += 1;
            if n <= last {
                report.duplicated += 1;
            } else {
                if n != last + 1 {
                    report.reordered += 1;
                }
                last = n;
            }
            progress(last);
        }
        report.elapsed = started.elapsed();
        report.received = seen;
        if report.sent == 0 {
            report.sent = sent_rx.borrow().unwrap_or(last);
        }
        report.lost = report.sent.saturating_sub(seen - report.duplicated);
        let _ = stop.send(true);
        report.resets = resetter.await.unwrap_or(0);
        let _ = feed.await;
        report.writer_exit = writer.wait(Duration::from_secs(120)).await.ok().flatten();
        report.peak_rss = sampler.await.unwrap_or_default();
        for said in [&reader_said, &writer_said] {
            report.let_go += said.let_go.load(Ordering::Relaxed);
        }
        report.interrupted = writer_said.interrupted.load(Ordering::Relaxed);
        report.resumed = writer_said.resumed.load(Ordering::Relaxed);
        Ok(report)
    }

    async fn member(
        &self,
        exe: &Path,
        secrets: &SecretDir,
        peer: String,
        user: &str,
    ) -> Result<ChildGuard, ClusterError> {
        let rejoin: &[&str] = if self.rejoin { &["--rejoin"] } else { &[] };
        let extra = [&["--timeout", "300s"], rejoin].concat();
        chat_member(exe, secrets, &peer, "general", user, &extra).await
    }
}

/// Feeds the writer's stdin `1`, `2`, ... at the transfer's pace; says how many once
/// done (and closes stdin, so the writer finishes).
async fn feed(
    stdin: tokio::process::ChildStdin,
    transfer: ChatTransfer,
    resets: Arc<AtomicU64>,
    sent: watch::Sender<Option<u64>>,
) -> std::io::Result<()> {
    const TICK: Duration = Duration::from_millis(10);
    let mut stdin = BufWriter::new(stdin);
    let per_tick = if transfer.rate == 0 {
        4096
    } else {
        (transfer.rate / 100).max(1)
    };
    let mut ticks = tokio::time::interval(TICK);
    let mut n = 0;
    loop {
        let done = match transfer.lines {
            Some(lines) => n >= lines,
            None => resets.load(Ordering::Relaxed) >= transfer.min_resets,
        };
        if done {
            break;
        }
        if transfer.rate > 0 {
            ticks.tick().await;
        }
        let batch = transfer.lines.map_or(per_tick, |l| per_tick.min(l - n));
        for _ in 0..batch {
            n += 1;
            stdin.write_all(format!("{n}\n").as_bytes()).await?;
        }
        stdin.flush().await?;
    }
    stdin.flush().await?;
    drop(stdin);
    let _ = sent.send(Some(n));
    Ok(())
}

/// Resets every connection through `proxy` at random moments until told to stop;
/// counts them in `resets` and returns how many.
async fn reset_randomly(
    proxy: Arc<FaultProxy>,
    (min_ms, max_ms): (u64, u64),
    resets: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    loop {
        let pause = Duration::from_millis(rand::rng().random_range(min_ms..=max_ms.max(min_ms)));
        tokio::select! {
            () = tokio::time::sleep(pause) => {
                resets.fetch_add(proxy.reset_all() as u64, Ordering::Relaxed);
            }
            _ = stop.wait_for(|stop| *stop) => return resets.load(Ordering::Relaxed),
        }
    }
}

/// Keeps the peak resident memory of each process in `pids` until told to stop.
async fn sample_peaks(pids: [Option<u32>; 3], mut stop: watch::Receiver<bool>) -> [u64; 3] {
    let mut peaks = [0; 3];
    // A sampling period, not a wait for an event: the peaks are read every 200 ms.
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return peaks,
        }
        for (peak, pid) in peaks.iter_mut().zip(pids) {
            if let Some(memory) = pid.and_then(|pid| Memory::of(Some(pid))) {
                *peak = (*peak).max(memory.peak);
            }
        }
    }
}

/// Counts what a member says on stderr that counts (and keeps its stderr drained, so it
/// never blocks on it).
fn watch_stderr(child: &mut ChildGuard, said: Arc<Said>) {
    let Some(mut lines) = child.stderr.take() else {
        return;
    };
    let name = child.name().to_owned();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("session interrupted") {
                said.interrupted.fetch_add(1, Ordering::Relaxed);
            } else if line.contains("session resumed") {
                said.resumed.fetch_add(1, Ordering::Relaxed);
            } else if LET_GO.iter().any(|words| line.contains(words)) {
                said.let_go.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(member = %name, %line, "a member left or came back");
            } else if !line.contains("(history)") {
                tracing::debug!(member = %name, %line);
            }
        }
    });
}
