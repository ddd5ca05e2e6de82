//! Shared by the integration tests: what needs the `duologue` binary under test or this
//! folder's files. The probe, the test protocol and the node helpers come from
//! `duologue_testkit::probe`, re-exported here.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub use duologue_testkit::probe::*;

/// The `duologue` binary under test.
pub fn duologue_exe() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_duologue").into()
}

/// Development certificates made by `duologue certs DIR --node NAME...` in `dir`: `ca.pem`
/// and, for each of `nodes`, `NAME.pem` and `NAME.key`. Returns the path of a file there.
pub async fn make_certs(dir: &std::path::Path, nodes: &[&str]) -> impl Fn(&str) -> String + use<> {
    let mut args = vec!["certs".to_owned(), dir.display().to_string()];
    for node in nodes {
        args.extend(["--node".to_owned(), (*node).to_owned()]);
    }
    let mut made = duologue_testkit::ChildGuard::spawn("certs", &duologue_exe(), &args).unwrap();
    assert_eq!(made.wait(WAIT).await.unwrap(), Some(0), "duologue certs");
    let dir = dir.to_owned();
    move |name: &str| dir.join(name).display().to_string()
}

/// The Python clients' environment (`duologue_testkit::python`) and scripts.
pub mod python {
    use std::path::{Path, PathBuf};

    // Not every test that declares `mod support` runs Python.
    #[allow(unused_imports)]
    pub use duologue_testkit::python::{PythonEnv, python_env};

    /// A file under `actors/tests/python/`.
    pub fn script(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/python")
            .join(name)
    }
}
