//! A node configured the way operators do it, with the real `duologue` binary.
//!
//! The first test starts `duologue node` with every setting from the config file
//! `DUOLOGUE_CONFIG` names, from `DUOLOGUE_*` environment variables and from one flag: it
//! listens where the flag says (over the environment's address, over the file's), hosts
//! the actor the file lists, joins the cluster the file names through the seed the
//! environment gives, and serves its metrics where the environment says (over the
//! file's). The seed is a node of this process; every wait is bounded, and the child is
//! killed on every path. The others show that a key the file should not have, a value a
//! flag refuses in the file or in a variable, stop the node (exit 2) with the file and
//! line, or the variable, on stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use duologue::Secret;
use duologue_actors::chat::ChatRoom;
use duologue_actors_testkit::cluster_lab;
use duologue_testkit::{ChildGuard, SecretDir, cluster};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_configured_by_its_environment_and_a_file_runs_as_they_say() {
    let secrets = SecretDir::create().unwrap();
    let secret = Secret::from_file(secrets.secret()).unwrap();
    let seed = cluster_lab::seq_check_node("seed", &[], secret, |config| {
        config.cluster.as_mut().unwrap().cluster_id = "settings-test".into();
    })
    .await;
    let gossip = seed.gossip_addr().unwrap();
    let file = secrets
        .write(
            "node.toml",
            &format!(
                r#"# What every node of the set shares.
name = "configured"
secret-file = "{secret}"
listen = "127.0.0.2:0"
gossip-listen = "127.0.0.1:0"
gossip-interval = "100ms"
cluster-id = "settings-test"
actor = ["chat-room:general"]
metrics = "127.0.0.3:0"
"#,
                secret = secrets.secret().display()
            ),
        )
        .unwrap();

    // `env` sets the variables and becomes the node (exec): the guard kills the node.
    let exe = Path::new(env!("CARGO_BIN_EXE_duologue"));
    let args = [
        format!("DUOLOGUE_CONFIG={}", file.display()),
        format!("DUOLOGUE_SEED={gossip}"),
        "DUOLOGUE_METRICS=127.0.0.1:0".to_owned(),
        "DUOLOGUE_LISTEN=127.0.0.3:0".to_owned(),
        exe.display().to_string(),
        "node".to_owned(),
        "--listen=127.0.0.4:0".to_owned(),
    ];
    let mut node = ChildGuard::spawn("configured", Path::new("env"), &args).unwrap();
    let listening = next_line(&mut node).await;
    let addr = listening
        .strip_prefix("listening on 127.0.0.4:")
        .unwrap_or_else(|| panic!("not listening where the flag says: {listening:?}"));
    let gossip_line = next_line(&mut node).await;
    assert!(
        gossip_line.starts_with("gossip on 127.0.0.1:"),
        "{gossip_line:?}"
    );
    let metrics = next_line(&mut node).await;
    let metrics = metrics
        .strip_prefix("metrics on http://")
        .filter(|at| at.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("metrics not where the environment says: {metrics:?}"))
        .to_owned();

    // It joined through the seed of the environment, in the file's cluster, and its room
    // (the file's) is found by the file's name at the address the flag gave.
    cluster::wait_members(&seed, 2, WAIT).await;
    let room = seed.lookup::<ChatRoom>("general", WAIT).await.unwrap();
    assert_eq!(room.node.name, "configured");
    assert_eq!(room.addr, format!("127.0.0.4:{addr}"));

    let body = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(WAIT))
            .build()
            .into();
        agent
            .get(format!("http://{metrics}/metrics"))
            .call()
            .and_then(|response| response.into_body().read_to_string())
    })
    .await
    .unwrap()
    .unwrap();
    assert!(body.contains("# TYPE"), "not Prometheus text: {body:.200}");

    seed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_no_flag_has_in_the_file_stops_the_node_naming_the_file_and_line() {
    let secrets = SecretDir::create().unwrap();
    let file = config(&secrets, "max-conections = 10\n");
    let error = refused(&file, &[]).await;
    let at = format!("{}:4: unknown key `max-conections`", file.display());
    assert!(error.contains(&at), "{error}");

    // Written as in Rust, with `_`: the flag's name is suggested.
    let file = config(&secrets, "max_connections = 10\n");
    let error = refused(&file, &[]).await;
    assert!(error.contains(&format!("{}:4:", file.display())), "{error}");
    assert!(error.contains("did you mean `max-connections`"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_its_flag_refuses_in_the_file_stops_the_node_naming_the_file_and_line() {
    let secrets = SecretDir::create().unwrap();
    let cases = [
        (
            "max-connections = \"lots\"\n",
            "`max-connections`: \"lots\"",
        ),
        ("resume-timeout = \"soon\"\n", "`resume-timeout`: \"soon\""),
        (
            "insecure-plaintext = \"yes\"\n",
            "`insecure-plaintext`: a string",
        ),
        (
            "log-format = \"xml\"\n",
            "`log-format`: \"xml\" is not one of text, json",
        ),
    ];
    for (text, says) in cases {
        let file = config(&secrets, text);
        let error = refused(&file, &[]).await;
        let at = format!("{}:4: {says}", file.display());
        assert!(error.contains(&at), "{text}: {error}");
    }
    // Refused even where the environment overrides it: the file is wrong either way.
    let file = config(&secrets, "max-connections = \"lots\"\n");
    let error = refused(&file, &[("DUOLOGUE_MAX_CONNECTIONS", "5")]).await;
    assert!(error.contains(&format!("{}:4:", file.display())), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_its_flag_refuses_in_a_variable_stops_the_node_naming_the_variable() {
    let secrets = SecretDir::create().unwrap();
    let file = config(&secrets, "");
    let cases = [
        ("DUOLOGUE_MAX_HOSTED", "lots", "\"lots\""),
        ("DUOLOGUE_GOSSIP_INTERVAL", "often", "\"often\""),
        (
            "DUOLOGUE_LOG_FORMAT",
            "xml",
            "\"xml\" is not one of text, json",
        ),
    ];
    for (var, value, says) in cases {
        let error = refused(&file, &[(var, value)]).await;
        let at = format!("environment variable {var}: {says}");
        assert!(error.contains(&at), "{var}={value}: {error}");
    }
    // A config file that is not there, named by its variable.
    let missing = secrets.secret().with_file_name("absent.toml");
    let error = refused(&missing, &[]).await;
    let at = format!("cannot read the config file {}", missing.display());
    assert!(error.contains(&at), "{error}");
}

/// A config file in `secrets` whose fourth line is `line`, after three good ones.
fn config(secrets: &SecretDir, line: &str) -> PathBuf {
    let text = format!(
        "name = \"refused\"\nsecret-file = \"{}\"\nlisten = \"127.0.0.1:0\"\n{line}",
        secrets.secret().display()
    );
    secrets.write("node.toml", &text).unwrap()
}

/// Runs `duologue node` with the config file `file` (through `DUOLOGUE_CONFIG`) and the
/// variables `env`, and no other `DUOLOGUE_*` variable; asserts that it exits 2 within
/// [`WAIT`] without listening, and returns its stderr.
async fn refused(file: &Path, env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_duologue"));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("DUOLOGUE_") {
            command.env_remove(var);
        }
    }
    command
        .arg("node")
        .env("DUOLOGUE_CONFIG", file)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the node did not exit")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{env:?}: {stdout}{stderr}");
    assert!(stdout.is_empty(), "{env:?}: it started: {stdout}");
    stderr
}

/// The node's next stdout line, within [`WAIT`]; at its end, a failure saying why.
async fn next_line(node: &mut ChildGuard) -> String {
    if let Some(line) = node.stdout_line(WAIT).await.unwrap() {
        return line;
    }
    let why = node.stderr_line(WAIT).await.unwrap();
    panic!("the node ended its stdout: {why:?}");
}
