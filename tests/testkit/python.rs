//! A throwaway Python environment for the tests that drive a node from Python: a
//! virtualenv (`python3 -m venv`, or `$DUOLOGUE_PYTHON -m venv`) with `grpcio`,
//! `grpcio-tools`, `grpcio-health-checking` and `grpcio-reflection` from PyPI, and Python
//! stubs generated from the repository's `proto/` with `grpc_tools.protoc`, so a client
//! always speaks the protos of this tree. All in a directory under the system temp dir,
//! removed when the last test using it drops it.
//!
//! One environment per test binary: the tests of a binary that run at once share it
//! ([`python_env`]). No Python, no venv or no PyPI is a failure with a message saying
//! which, never a silent skip. Every step is bounded.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::process::Command;

/// Bound of creating the virtualenv.
const VENV_WAIT: Duration = Duration::from_secs(120);
/// Bound of `pip install`.
const PIP_WAIT: Duration = Duration::from_secs(300);
/// Bound of generating the stubs.
const PROTOC_WAIT: Duration = Duration::from_secs(60);

/// What `pip` installs: the gRPC runtime, the stub generator, and grpcio's own health
/// and reflection clients.
const PACKAGES: &[&str] = &[
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
];

/// The protos the stubs are generated from (relative to `proto/`).
const STUBS_OF: &[&str] = &[
    "proto/duologue/v1/session.proto",
    "proto/duologue/chat/v1/chat.proto",
];

/// The environment the running tests share, while any holds it.
static SHARED: tokio::sync::Mutex<Weak<PythonEnv>> = tokio::sync::Mutex::const_new(Weak::new());

/// The Python side: an interpreter with the packages, and the generated stubs.
#[derive(Debug)]
pub struct PythonEnv {
    /// The virtualenv's interpreter.
    pub python: PathBuf,
    /// The directory of the generated stubs (for `PYTHONPATH` or a `--stubs` option).
    pub stubs: PathBuf,
    /// Owns the venv and the stubs; last, so it goes after everything using them.
    _dir: TempDir,
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Self {
        let dir =
            std::env::temp_dir().join(format!("duologue-python-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test binary's Python environment: the one another running test holds, or a new
/// one.
///
/// # Panics
/// With a clear message when any step is impossible here.
pub async fn python_env() -> Arc<PythonEnv> {
    let mut shared = SHARED.lock().await;
    if let Some(env) = shared.upgrade() {
        return env;
    }
    let env = Arc::new(create().await);
    *shared = Arc::downgrade(&env);
    env
}

/// Creates the venv, installs [`PACKAGES`], generates the stubs.
async fn create() -> PythonEnv {
    let dir = TempDir::create();
    let interpreter = std::env::var_os("DUOLOGUE_PYTHON").unwrap_or_else(|| "python3".into());
    let venv = dir.0.join("venv");
    let started = Instant::now();
    run(
        "creating a virtualenv (python3 -m venv)",
        Command::new(&interpreter).arg("-m").arg("venv").arg(&venv),
        VENV_WAIT,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the Python tests need python3 with the venv module \
             (Debian: apt-get install python3-venv; or set DUOLOGUE_PYTHON): {e}"
        )
    });
    let python = venv.join("bin").join("python");
    let venv_took = started.elapsed();
    let started = Instant::now();
    let what = format!("pip install {}", PACKAGES.join(" "));
    run(
        &what,
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PACKAGES),
        PIP_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("the Python tests need these packages from PyPI: {e}"));
    eprintln!(
        "python: venv created in {venv_took:.1?}, pip install took {:.1?}",
        started.elapsed()
    );
    let stubs = dir.0.join("stubs");
    std::fs::create_dir_all(&stubs).expect("create the stubs dir");
    let mut out = std::ffi::OsString::from("--python_out=");
    out.push(&stubs);
    let mut grpc_out = std::ffi::OsString::from("--grpc_python_out=");
    grpc_out.push(&stubs);
    run(
        "generating the Python stubs (grpc_tools.protoc)",
        Command::new(&python)
            // The repository root, two levels above this crate.
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(["-m", "grpc_tools.protoc", "-I", "proto"])
            .arg(out)
            .arg(grpc_out)
            .args(STUBS_OF),
        PROTOC_WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    PythonEnv {
        python,
        stubs,
        _dir: dir,
    }
}

/// Runs a setup command to its end within `timeout`; its failure, with what it said.
async fn run(what: &str, command: &mut Command, timeout: Duration) -> Result<(), String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => return Err(format!("{what} did not finish within {timeout:?}")),
        Ok(Err(error)) => return Err(format!("{what} could not start: {error}")),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(());
    }
    let said = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        output.status,
        said(&output.stdout),
        said(&output.stderr)
    ))
}
