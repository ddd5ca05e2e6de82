//! Secrets (issue 13, attack 7): `duologue secret new` writes a random, private secret; a
//! node refuses a regular or guessable one (unless told otherwise) and warns about a
//! secret file other users can read.

mod support;

use std::os::unix::fs::PermissionsExt;

use duologue_testkit::{ChildGuard, NodeProcess, SecretDir, Signal};
use support::*;

fn node_args(secret: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--secret-file".to_owned(), secret.display().to_string()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// Runs `duologue node` with `secret`, expecting it to refuse: its stderr line.
async fn refused(name: &str, secret: &std::path::Path, extra: &[&str]) -> String {
    let mut all = vec!["node".to_owned(), "--name".to_owned(), name.to_owned()];
    all.extend(node_args(secret, extra));
    let mut node = ChildGuard::spawn(name, &duologue_exe(), &all).unwrap();
    let line = node
        .stderr_line(WAIT)
        .await
        .unwrap()
        .expect("a reason on stderr");
    assert_eq!(node.wait(WAIT).await.unwrap(), Some(1), "{line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_secret_is_random_and_private_and_weak_ones_are_refused() {
    let dir = SecretDir::create().unwrap();
    let made = dir.secret().with_file_name("made");
    let mut new = ChildGuard::spawn(
        "secret-new",
        &duologue_exe(),
        &["secret".into(), "new".into(), made.display().to_string()],
    )
    .unwrap();
    assert_eq!(new.wait(WAIT).await.unwrap(), Some(0));
    let mode = std::fs::metadata(&made).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut node = NodeProcess::start(&duologue_exe(), "made", &node_args(&made, &[]), WAIT)
        .await
        .expect("a node starts with a new secret");
    node.child.signal(Signal::SIGTERM).unwrap();
    assert_eq!(node.child.wait(WAIT).await.unwrap(), Some(0));

    let guessable = dir.write("guessable", "password12345678").unwrap();
    let line = refused("guessable", &guessable, &[]).await;
    assert!(
        line.contains("guessable") && line.contains("duologue secret new"),
        "{line}"
    );
    let mut allowed = NodeProcess::start(
        &duologue_exe(),
        "allowed",
        &node_args(&guessable, &["--allow-weak-secret"]),
        WAIT,
    )
    .await
    .expect("--allow-weak-secret starts it");
    allowed.child.signal(Signal::SIGTERM).unwrap();
    assert_eq!(allowed.child.wait(WAIT).await.unwrap(), Some(0));

    let zeros = dir.write("zeros", &"\0".repeat(16)).unwrap();
    let line = refused("zeros", &zeros, &["--allow-weak-secret"]).await;
    assert!(line.contains("not random"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_others_can_read_is_warned_about() {
    let dir = SecretDir::create().unwrap();
    std::fs::set_permissions(dir.secret(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut all = vec![
        "node".to_owned(),
        "--name".to_owned(),
        "readable".to_owned(),
    ];
    all.extend(node_args(dir.secret(), &[]));
    let mut node = ChildGuard::spawn("readable", &duologue_exe(), &all).unwrap();
    let warning = node
        .stderr_until("chmod 600", WAIT)
        .await
        .expect("a warning");
    assert!(warning.contains("can be read by other users"), "{warning}");
    node.signal(Signal::SIGTERM).unwrap();
    assert_eq!(node.wait(WAIT).await.unwrap(), Some(0));
}
