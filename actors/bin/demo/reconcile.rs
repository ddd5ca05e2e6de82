//! `duologue demo reconcile`: a reconciler on one node process, a client in this one,
//! talking through a fault-injecting proxy. The client declares 4 replicas of v1, changes
//! course mid-way to 6 replicas of v2, the connection is cut once, and the status reports
//! carry on, each exactly once, until the deployment converges on the last declaration.

use std::fmt::Display;
use std::time::Instant;

use duologue::Node;
use duologue_actors::reconcile::proto::{Phase, StatusReport};
use duologue_actors::reconcile::{self, ReconcileEvent, Trail};
use duologue_testkit::Signal;
use duologue_testkit::progress::Summary;
use duologue_testkit::{ClusterError, FaultProxy, NodeProcess, SecretDir};

use super::STEP;

/// The reconciler's name on its node.
const NAME: &str = "deploy";

pub(crate) async fn run() -> Result<Summary, ClusterError> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let secrets = SecretDir::create()?;

    say!("duologue demo: reconcile");
    say!("  a reconciler on one node process, a client declaring desired state in this one\n");
    let mut control = NodeProcess::start(
        &exe,
        "control",
        &[
            "--secret-file".into(),
            secrets.secret().display().to_string(),
            "--actor".into(),
            format!("reconcile:{NAME}"),
        ],
        STEP,
    )
    .await?;
    let proxy = FaultProxy::start(control.addr).await?;
    let node = Node::builder()
        .name("client")
        .secret_file(secrets.secret())
        .start()
        .await
        .map_err(unexpected)?;
    let mut watch = reconcile::watch(&node, &proxy.addr().to_string(), NAME)
        .await
        .map_err(unexpected)?;
    say!(
        "  node control pid {:<7} listening on {}, hosting reconciler {NAME:?}",
        control.child.pid().unwrap_or(0),
        control.addr
    );
    say!(
        "  client connected through a fault proxy at {}\n",
        proxy.addr()
    );

    say!("  declare generation 1: 4 replicas of v1");
    watch.declare(1, 4, "v1").await.map_err(unexpected)?;
    let mut trail = Trail::default();
    let mut cut = false;
    let last = loop {
        let event = tokio::time::timeout(STEP, watch.next_event())
            .await
            .map_err(|_| ClusterError::Timeout {
                what: "no status report".into(),
                timeout: STEP,
            })?
            .ok_or_else(|| unexpected("the session was dropped"))?;
        let report = match event {
            ReconcileEvent::Report(report) => report,
            ReconcileEvent::Interrupted(_) => {
                say!("  !! the stream broke; the session resumes on its own");
                continue;
            }
            ReconcileEvent::Resumed(resumed) => {
                let after = resumed.interrupted_for;
                say!("  .. resumed on a new stream after {after:.0?}; the reports carry on");
                continue;
            }
            ReconcileEvent::FellBehind(notice) => {
                return Err(unexpected(format!(
                    "fell behind after report {}",
                    notice.last_report_seq
                )));
            }
            ReconcileEvent::Unexpected(what) => return Err(unexpected(what)),
            ReconcileEvent::Lost(reason) => return Err(unexpected(reason)),
            ReconcileEvent::Closed(reason) => return Err(unexpected(reason)),
        };
        trail.check(&report).map_err(unexpected)?;
        say!("  {}", line(&report));
        if report.generation == 1 && report.ready_replicas == 3 {
            say!("  declare generation 2: 6 replicas of v2 (change of course)");
            watch.declare(2, 6, "v2").await.map_err(unexpected)?;
        }
        if report.generation == 2 && report.updated_replicas == 2 && !cut {
            cut = true;
            say!("  -- cut {} connection(s) at the proxy --", proxy.cut_all());
        }
        if report.generation == 2 && report.phase() == Phase::Converged {
            break report;
        }
    };
    let want = (6, 6, "v2");
    let got = (
        last.ready_replicas,
        last.updated_replicas,
        last.current_image.as_str(),
    );
    if got != want || !cut {
        return Err(unexpected(format!(
            "converged on {got:?} (cut: {cut}), expected {want:?} after a cut"
        )));
    }

    watch.reconciler.finish();
    let closed = tokio::time::timeout(STEP, watch.reconciler.closed())
        .await
        .map_err(|_| unexpected("the session did not close"))?;
    node.shutdown().await;
    control.child.signal(Signal::SIGTERM)?;
    let code = control.child.wait(STEP).await?;
    if code != Some(0) {
        return Err(unexpected(format!("node control exited with {code:?}")));
    }
    say!("\n  session closed: {closed}; node control stopped on SIGTERM, exit 0");
    let mut summary = Summary::new("demo reconcile");
    summary.figure(format_args!(
        "{} reports, numbered 1..={} with no gap and no repeat, converged on generation 2 in {:.2} s",
        trail.last_seq,
        trail.last_seq,
        started.elapsed().as_secs_f64()
    ));
    Ok(summary)
}

/// `#7  gen 2 [#####.....]  50% progressing  6/6 ready  3/6 on v2  image mixed`
fn line(report: &StatusReport) -> String {
    let filled = (report.progress_percent.min(100) / 10) as usize;
    let bar = format!("{}{}", "#".repeat(filled), ".".repeat(10 - filled));
    let phase = match report.phase() {
        Phase::Pending => "pending",
        Phase::Progressing => "progressing",
        Phase::Converged => "CONVERGED",
        Phase::Unspecified => "?",
    };
    let image = match report.current_image.as_str() {
        "" if report.ready_replicas > 0 => "mixed",
        "" => "none",
        image => image,
    };
    format!(
        "#{:<3} gen {} [{bar}] {:>3}% {phase:<11}  {}/{} ready  {}/{} on {}  image {image}",
        report.report_seq,
        report.generation,
        report.progress_percent,
        report.ready_replicas,
        report.desired_replicas,
        report.updated_replicas,
        report.desired_replicas,
        report.desired_image,
    )
}

fn unexpected(error: impl Display) -> ClusterError {
    ClusterError::Unexpected(error.to_string())
}
