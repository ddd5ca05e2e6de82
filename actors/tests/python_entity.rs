//! Entities are not Rust-only either: a client written in Python on `grpcio`
//! (`tests/python/entity_client.py`, nothing of duologue's) opens one session to
//! `$entities/cart` on one node of a cluster of real `duologue node` processes and fills
//! and reads back shopping carts (`examples/carts`), each an `EntityEnvelope` with
//! `hops = 0` that the node routes to the member owning the cart's shard
//! (`docs/protocol.md`, "Entities"). The carts land on every member, each where the
//! placement rule of that page says; ids the node does not take, and a kind it does not
//! host, are refused, typed.
//!
//! Setup as `tests/python_client.rs`: a throwaway virtualenv with `grpcio`
//! (`duologue_testkit::python`), and Python stubs generated here from this tree's
//! `session.proto`, `entity.proto` and the carts' `carts.proto`, in the test's secret
//! directory, removed at the end. No Python, no venv or no PyPI is a failure with a message saying which, never
//! a silent skip. Every wait is bounded; every child is killed when its guard drops.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use duologue::cluster::MemberState;
use duologue::{Node, Secret};
use duologue_testkit::{ChildGuard, NodeProcess, SecretDir};
use sha2::{Digest, Sha256};
use support::python::{PythonEnv, python_env, script};
use support::*;
use tokio::io::AsyncWriteExt;

/// The carts filled: more than 100, all over one session.
const CARTS: usize = 120;
/// The members of the cluster.
const NODES: [&str; 3] = ["a", "b", "c"];
/// The entity kind `duologue node` hosts.
const KIND: &str = "cart";
/// The bound of a node's start, of the cluster settling, of each line of the client and
/// of its exit. Generous: the machine may be busy building.
const CLIENT_WAIT: Duration = Duration::from_secs(30);
/// The bound of generating the stubs.
const PROTOC_WAIT: Duration = Duration::from_secs(60);

/// The repository's root, above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Generates the client's stubs into `dir`: the session's, the entities' and the carts'
/// protos of this tree (the shared environment's stubs have the session's and the chat's
/// only).
async fn entity_stubs(env: &PythonEnv, dir: &Path) -> PathBuf {
    let stubs = dir.join("stubs");
    std::fs::create_dir_all(&stubs).expect("create the stubs dir");
    let mut command = tokio::process::Command::new(&env.python);
    command
        .current_dir(root())
        .args([
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            "-I",
            "examples/carts/proto",
        ])
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .args([
            "proto/duologue/v1/session.proto",
            "proto/duologue/v1/entity.proto",
            "examples/carts/proto/carts/v1/carts.proto",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(PROTOC_WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("grpc_tools.protoc did not finish within {PROTOC_WAIT:?}"))
        .expect("grpc_tools.protoc starts");
    assert!(
        output.status.success(),
        "generating the entity stubs (grpc_tools.protoc) failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    stubs
}

/// The flags of a member: the secret, fast gossip on 127.0.0.1, the seed to join.
fn member_args(secrets: &SecretDir, seed: Option<&str>) -> Vec<String> {
    duologue_testkit::cluster_flags(secrets.secret(), "100ms", seed)
}

/// Three `duologue node` processes in one cluster, each hosting carts, once every one of
/// them sees all three up and hosting the kind.
async fn cluster(secrets: &SecretDir) -> Vec<NodeProcess> {
    let mut first = NodeProcess::start(
        &duologue_exe(),
        NODES[0],
        &member_args(secrets, None),
        CLIENT_WAIT,
    )
    .await
    .expect("the first node starts");
    let gossip = first
        .child
        .stdout_line(CLIENT_WAIT)
        .await
        .unwrap()
        .unwrap_or_default();
    let seed = gossip
        .strip_prefix("gossip on ")
        .unwrap_or_else(|| panic!("expected `gossip on ADDR`, got {gossip:?}"))
        .to_owned();
    let mut nodes = vec![first];
    for name in &NODES[1..] {
        let node = NodeProcess::start(
            &duologue_exe(),
            name,
            &member_args(secrets, Some(&seed)),
            CLIENT_WAIT,
        )
        .await
        .expect("a node starts");
        nodes.push(node);
    }
    let operator = Node::builder()
        .name("operator")
        .secret(Secret::from_file(secrets.secret()).unwrap())
        .start()
        .await
        .unwrap();
    for node in &nodes {
        full_view(&operator, &node.addr.to_string()).await;
    }
    operator.shutdown().await;
    nodes
}

/// Waits, within [`CLIENT_WAIT`], until the node at `addr` sees every member up and
/// hosting carts: once all three do, every node gives each cart the same owner, and the
/// cart starts there (its first messages may wait while the members settle on one
/// another, never on another member). Each question after the first is answered when
/// that node's view changes.
async fn full_view(operator: &Node, addr: &str) {
    duologue_testkit::cluster::wait_members_at(operator, addr, CLIENT_WAIT, |members| {
        members
            .iter()
            .filter(|m| m.state == MemberState::Up && m.hosts(KIND))
            .count()
            == NODES.len()
    })
    .await;
}

/// What one run of the client said and how it ended.
struct Run {
    /// Its stdout: one line per answer.
    answers: Vec<String>,
    /// Its stderr.
    said: Vec<String>,
    code: Option<i32>,
}

impl Run {
    /// The stderr line that starts with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        self.said
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line; the client said {:#?}", self.said))
    }
}

/// Runs `entity_client.py` against the node at `peer` with `extra` options, writes
/// `requests` on its stdin and closes it, then reads everything it says until it exits,
/// each line and the exit within [`CLIENT_WAIT`].
async fn client(
    env: &PythonEnv,
    stubs: &Path,
    peer: &str,
    secret: &Path,
    extra: &[&str],
    requests: &[String],
) -> Run {
    let mut args: Vec<String> = vec![
        "-u".into(),
        script("entity_client.py").display().to_string(),
        "--peer".into(),
        peer.into(),
        "--secret-file".into(),
        secret.display().to_string(),
        "--stubs".into(),
        stubs.display().to_string(),
        // A shard taken over may hold its messages for a while (`HANDOFF_WAIT`, 10 s):
        // the client's own bound is not what this test checks.
        "--timeout".into(),
        "30".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut child =
        ChildGuard::spawn("entity_client", &env.python, &args).expect("the Python client starts");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut text = requests.join("\n");
    text.push('\n');
    // A few KiB: within the pipe's buffer, so the write does not wait for the client.
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let mut answers = Vec::new();
    loop {
        match child.stdout_line(CLIENT_WAIT).await {
            Ok(Some(line)) => answers.push(line),
            Ok(None) => break,
            Err(e) => {
                let said = rest(&mut child).await;
                panic!("the client: {e}; it answered {answers:#?}; its stderr: {said:#?}");
            }
        }
    }
    let said = rest(&mut child).await;
    let code = child
        .wait(CLIENT_WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}; its stderr: {said:#?}"));
    Run {
        answers,
        said,
        code,
    }
}

/// Everything left on the client's stderr, each line within [`CLIENT_WAIT`].
async fn rest(child: &mut ChildGuard) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(Some(line)) = child.stderr_line(CLIENT_WAIT).await {
        lines.push(line);
    }
    lines
}

/// `ID: apple xN, pear x2 (on NODE)` -> (ID, `apple xN, pear x2`, NODE).
fn contents(answer: &str) -> (String, String, String) {
    let parse = || {
        let (id, rest) = answer.split_once(": ")?;
        let (lines, node) = rest.strip_suffix(')')?.rsplit_once(" (on ")?;
        Some((id.to_owned(), lines.to_owned(), node.to_owned()))
    };
    parse().unwrap_or_else(|| panic!("not a cart's contents: {answer:?}"))
}

/// The first 8 bytes of SHA-256 over `text`, big-endian.
fn hash64(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap())
}

/// The owner of the entity `id` of `kind` among `members`, by the rule of
/// `docs/protocol.md`, "Entities", computed here apart from the runtime's code: the shard
/// is the id's hash modulo 1 024; the owner the member of highest weight for
/// `KIND/SHARD/NAME`, the lowest name on a tie.
fn owner<'a>(kind: &str, id: &str, members: &[&'a str]) -> &'a str {
    let shard = hash64(id) % 1024;
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    let mut best = sorted[0];
    for member in &sorted[1..] {
        if hash64(&format!("{kind}/{shard}/{member}")) > hash64(&format!("{kind}/{shard}/{best}")) {
            best = member;
        }
    }
    best
}

/// One session to `$entities/cart` on the first node carries a cast and a call to each of
/// 120 carts; every answer is right and comes from the cart's owner (all three members
/// own some); a second session reads every cart back from where it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_reaches_carts_on_every_member_through_one_session() {
    let env = python_env().await;
    let secrets = SecretDir::create().unwrap();
    let stubs = entity_stubs(&env, secrets.secret().parent().unwrap()).await;
    let nodes = cluster(&secrets).await;
    let via = nodes[0].addr.to_string();

    // The cast first: messages from one sender to one entity keep their order, so the
    // call's answer shows the cast's pear.
    let fill: Vec<String> = (0..CARTS)
        .flat_map(|n| {
            [
                format!("cast cart-{n} add pear 2"),
                format!("call cart-{n} add apple {}", n + 1),
            ]
        })
        .collect();
    let filled = client(&env, &stubs, &via, secrets.secret(), &[], &fill).await;
    assert_eq!(filled.code, Some(0), "{:#?}", filled.said);
    assert_eq!(
        filled.line("closed:"),
        format!(
            "closed: {CARTS} calls ({CARTS} answered, 0 faults, 0 unanswered) and {CARTS} \
             casts, to {CARTS} ids of kind cart, over 1 session on 1 stream"
        )
    );
    assert_eq!(filled.answers.len(), CARTS, "{:#?}", filled.answers);
    let mut home = BTreeMap::new();
    for answer in &filled.answers {
        let (id, lines, node) = contents(answer);
        let n: usize = id
            .strip_prefix("cart-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(lines, format!("apple x{}, pear x2", n + 1), "{answer}");
        assert_eq!(node, owner(KIND, &id, &NODES), "{answer}: not its owner");
        assert!(home.insert(id, node).is_none(), "{answer}: answered twice");
    }
    for member in NODES {
        let owned = home.values().filter(|n| *n == member).count();
        assert!(owned > 0, "no cart on {member}: {home:?}");
    }

    // Another session, through the same node: every cart answers from where it lives.
    let gets: Vec<String> = (0..CARTS).map(|n| format!("call cart-{n} get")).collect();
    let read = client(&env, &stubs, &via, secrets.secret(), &[], &gets).await;
    assert_eq!(read.code, Some(0), "{:#?}", read.said);
    let again: BTreeMap<String, (String, String)> = read
        .answers
        .iter()
        .map(|answer| {
            let (id, lines, node) = contents(answer);
            (id, (lines, node))
        })
        .collect();
    assert_eq!(again.len(), CARTS, "{:#?}", read.answers);
    for (id, (lines, node)) in &again {
        let n: usize = id["cart-".len()..].parse().unwrap();
        assert_eq!(lines, &format!("apple x{}, pear x2", n + 1), "{id}");
        assert_eq!(Some(node), home.get(id), "{id} moved");
    }
}

/// A node alone: ids it does not take are answered with typed `invalid_id` faults while
/// the session goes on (a cart's own refusal is an answer, not a fault), and the client
/// exits 6; a kind the node does not host refuses the session (`UNKNOWN_ACTOR`), and the
/// client exits 4 saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_is_told_why_an_entity_cannot_be_reached() {
    let env = python_env().await;
    let secrets = SecretDir::create().unwrap();
    let stubs = entity_stubs(&env, secrets.secret().parent().unwrap()).await;
    let args = [
        "--secret-file".to_owned(),
        secrets.secret().display().to_string(),
    ];
    let node = NodeProcess::start(&duologue_exe(), "solo", &args, CLIENT_WAIT)
        .await
        .expect("the node starts");
    let peer = node.addr.to_string();

    let long = "x".repeat(256);
    let requests = [
        "call \"\" get".to_owned(),
        format!("call {long} get"),
        "call \" padded\" get".to_owned(),
        "call cart-1 add fig 3".to_owned(),
        "call cart-2 add fig 0".to_owned(),
    ];
    let run = client(&env, &stubs, &peer, secrets.secret(), &[], &requests).await;
    assert_eq!(run.code, Some(6), "some calls failed: {:#?}", run.said);
    let mut answers = run.answers.clone();
    answers.sort();
    let mut expected = vec![
        "'': fault invalid_id: a name is not empty".to_owned(),
        format!("{long}: fault invalid_id: a name is at most 255 bytes"),
        "' padded': fault invalid_id: a name does not start or end with whitespace".to_owned(),
        "cart-1: fig x3 (on solo)".to_owned(),
        "cart-2: refused: add an item with a name, at least one".to_owned(),
    ];
    expected.sort();
    assert_eq!(answers, expected);
    assert_eq!(
        run.line("closed:"),
        "closed: 5 calls (2 answered, 3 faults, 0 unanswered) and 0 casts, to 5 ids of kind \
         cart, over 1 session on 1 stream"
    );

    let get = ["call cart-1 get".to_owned()];
    let run = client(
        &env,
        &stubs,
        &peer,
        secrets.secret(),
        &["--kind", "toaster"],
        &get,
    )
    .await;
    assert_eq!(run.code, Some(4), "{:#?}", run.said);
    assert!(run.answers.is_empty(), "{:#?}", run.answers);
    let refused = run.line("entity_client.py:");
    assert!(
        refused.contains("hosts no entities of kind 'toaster'"),
        "{refused}"
    );
}
