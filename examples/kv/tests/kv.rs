//! The key-value store across three processes: a node hosting the store, and clients that
//! put, get and watch. Every wait is bounded; every child is killed when its guard drops.

use std::path::Path;
use std::time::Duration;

use duologue_testkit::{ChildGuard, NodeProcess, SecretDir, Signal};

const WAIT: Duration = Duration::from_secs(20);

/// Runs `kv` with `args` against the store on `node`.
fn client(name: &str, node: &NodeProcess, secrets: &SecretDir, args: &[&str]) -> ChildGuard {
    let mut all = vec![node.addr.to_string(), secrets.secret().display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    ChildGuard::spawn(name, Path::new(env!("CARGO_BIN_EXE_kv")), &all).expect("start kv")
}

/// The lines `child` prints before it exits with success.
async fn output(mut child: ChildGuard) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = child.stdout_line(WAIT).await.expect("kv output") {
        lines.push(line);
    }
    assert_eq!(child.wait(WAIT).await.expect("kv exits"), Some(0), "{}", child.name());
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_and_watch_across_processes() {
    let secrets = SecretDir::create().unwrap();
    let args = [
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
        "--actor".to_owned(),
        "kv-store:store".to_owned(),
    ];
    let exe = Path::new(env!("CARGO_BIN_EXE_kv-node"));
    let mut node = NodeProcess::start_binary(exe, "kv-a", &args, WAIT).await.unwrap();

    let got = output(client("get-empty", &node, &secrets, &["get", "colour"])).await;
    assert_eq!(got, ["colour = (none)"]);
    let put = output(client("put", &node, &secrets, &["put", "colour", "red"])).await;
    assert_eq!(put, ["colour = (none)"], "a put replies with the value it replaced");

    // The watcher prints the value now; only then does the next put happen.
    let mut watcher = client("watch", &node, &secrets, &["watch", "colour", "2"]);
    let now = watcher.stdout_line(WAIT).await.unwrap();
    assert_eq!(now.as_deref(), Some("colour = red"));
    for value in ["green", "blue"] {
        output(client("put", &node, &secrets, &["put", "colour", value])).await;
    }
    assert_eq!(output(watcher).await, ["colour -> green", "colour -> blue"]);
    assert_eq!(output(client("get", &node, &secrets, &["get", "colour"])).await, ["colour = blue"]);

    // The node drains and exits 0 on SIGTERM, as `duologue node` does.
    node.child.signal(Signal::SIGTERM).unwrap();
    assert_eq!(node.child.wait(WAIT).await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_is_refused_by_name() {
    let secrets = SecretDir::create().unwrap();
    let args = [
        "--name".to_owned(),
        "kv-b".to_owned(),
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
        "--actor".to_owned(),
        "cache:c".to_owned(),
    ];
    let mut node =
        ChildGuard::spawn("kv-b", Path::new(env!("CARGO_BIN_EXE_kv-node")), &args).unwrap();
    let error = node.stderr_line(WAIT).await.unwrap().unwrap();
    assert!(error.contains("unknown kind \"cache\" (known: kv-store)"), "{error}");
    assert_eq!(node.wait(WAIT).await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_settings_come_from_kv_node_variables_and_its_config_file() {
    let secrets = SecretDir::create().unwrap();
    let file = secrets
        .write(
            "kv.toml",
            &format!(
                "secret-file = \"{}\"\nactor = [\"kv-store:store\"]\nlisten = \"127.0.0.2:0\"\n",
                secrets.secret().display()
            ),
        )
        .unwrap();
    let exe = env!("CARGO_BIN_EXE_kv-node").to_owned();
    let config = format!("KV_NODE_CONFIG={}", file.display());
    // `env` sets the variables and becomes kv-node: the guard kills the node. Its
    // variables are named after it; `duologue node`'s are not its own.
    let args = [
        config.clone(),
        "KV_NODE_NAME=kv-env".to_owned(),
        "KV_NODE_LISTEN=127.0.0.3:0".to_owned(),
        "DUOLOGUE_LISTEN=127.0.0.4:0".to_owned(),
        exe.clone(),
    ];
    let mut node = ChildGuard::spawn("kv-env", Path::new("env"), &args).unwrap();
    let listening = node.stdout_line(WAIT).await.unwrap();
    assert!(
        listening.as_deref().is_some_and(|l| l.starts_with("listening on 127.0.0.3:")),
        "not where KV_NODE_LISTEN says, over the file: {listening:?}"
    );
    node.signal(Signal::SIGTERM).unwrap();
    assert_eq!(node.wait(WAIT).await.unwrap(), Some(0));

    // A value its flag refuses, named by the variable.
    let args = [config, "KV_NODE_MAX_HOSTED=lots".to_owned(), exe];
    let mut node = ChildGuard::spawn("kv-bad", Path::new("env"), &args).unwrap();
    let error = node.stderr_line(WAIT).await.unwrap().unwrap_or_default();
    assert!(error.contains("environment variable KV_NODE_MAX_HOSTED: \"lots\""), "{error}");
    assert_eq!(node.wait(WAIT).await.unwrap(), Some(2));
}
