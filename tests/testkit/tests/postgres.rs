//! The tests' PostgreSQL server (`duologue_testkit::postgres::Postgres`): SQL over TCP with
//! a password on 127.0.0.1 and in a lab host, durable settings, and nothing left behind
//! when it drops or when the process that started it is killed. Needs PostgreSQL's server
//! programs; the lab's test needs root and `ip`.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duologue_testkit::postgres::{Postgres, PostgresError};
use duologue_testkit::{ChildGuard, Lab, Signal};
use sqlx::{Connection, PgConnection};

/// Bound of every wait that should succeed.
const WAIT: Duration = Duration::from_secs(10);

/// Whether process `pid` has ended: gone, or a zombie (this machine's init may not reap
/// the orphans a server's processes are).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
    })
}

/// Creates a table, writes two rows and reads them back, on `url`.
async fn round_trip(url: &str) -> Result<Vec<(i32, String)>, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS notes (id INT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO notes VALUES (1, 'one'), (2, 'two') ON CONFLICT DO NOTHING")
        .execute(&mut conn)
        .await?;
    let rows = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut conn)
        .await?;
    conn.close().await?;
    Ok(rows)
}

/// `SHOW name` on `conn`.
async fn show(conn: &mut PgConnection, name: &str) -> String {
    sqlx::query_scalar(&format!("SHOW {name}"))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("SHOW {name}: {e}"))
}

fn notes() -> Vec<(i32, String)> {
    vec![(1, "one".to_owned()), (2, "two".to_owned())]
}

#[tokio::test]
async fn serves_sql_on_loopback_and_leaves_nothing_behind() {
    let server = Postgres::start().expect("start");
    let url = server.url();
    assert_eq!(
        url,
        format!(
            "postgres://duologue:{}@127.0.0.1:{}/duologue",
            server.password(),
            server.port()
        )
    );
    assert_eq!(round_trip(&url).await.expect("round trip"), notes());

    let mut conn = PgConnection::connect(&url).await.expect("connect");
    assert_eq!(show(&mut conn, "fsync").await, "on");
    assert_eq!(show(&mut conn, "synchronous_commit").await, "on");
    assert_eq!(show(&mut conn, "max_connections").await, "200");
    assert_eq!(
        show(&mut conn, "password_encryption").await,
        "scram-sha-256"
    );
    conn.close().await.expect("close");

    let wrong = url.replace(server.password(), "not-the-password");
    let refused = PgConnection::connect(&wrong).await;
    assert!(
        matches!(&refused, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01")),
        "a wrong password: {refused:?}"
    );

    let (data, port, pid) = (server.data_dir(), server.port(), server.pid());
    let folder = data.parent().expect("the server's folder").to_path_buf();
    assert!(data.join("PG_VERSION").is_file());
    assert!(!ended(pid), "the postmaster runs");
    drop(server);
    assert!(!folder.exists(), "{} is left", folder.display());
    assert!(ended(pid), "postmaster {pid} outlived the drop");
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free again");
}

#[test]
fn serves_a_lab_host_from_its_namespace() {
    let lab = Lab::new(2).expect("lab (root, `ip`)");
    let server = Postgres::start_in_with(&lab, 0, &[("synchronous_commit", "off")])
        .expect("start in host 0");
    assert_eq!(server.addr().ip(), lab.ip(0));

    // The postmaster's network namespace is host 0's.
    let ns = std::fs::metadata(Path::new("/run/netns").join(lab.namespace(0))).expect("ns");
    let its = std::fs::metadata(format!("/proc/{}/ns/net", server.pid())).expect("its ns");
    assert_eq!((its.dev(), its.ino()), (ns.dev(), ns.ino()));

    // From another host of the lab, then from host 0 itself (an address of the lab's, not
    // 127.0.0.1, either way).
    for host in [1, 0] {
        let url = server.url();
        let (rows, synchronous_commit) = lab
            .run_in(host, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let rows = round_trip(&url).await.expect("round trip");
                    let mut conn = PgConnection::connect(&url).await.expect("connect");
                    (rows, show(&mut conn, "synchronous_commit").await)
                })
            })
            .unwrap_or_else(|e| panic!("in host {host}: {e}"));
        assert_eq!(rows, notes(), "from host {host}");
        assert_eq!(synchronous_commit, "off", "the test's setting wins");
    }

    let (folder, pid) = (server.data_dir(), server.pid());
    server.stop().expect("stop");
    assert!(!folder.exists(), "{} is left", folder.display());
    assert!(ended(pid), "postmaster {pid} outlived the stop");
}

#[tokio::test]
async fn a_start_ends_the_server_of_a_killed_process() {
    let mut orphan =
        ChildGuard::spawn("pg-orphan", Path::new(env!("CARGO_BIN_EXE_pg-orphan")), &[])
            .expect("spawn pg-orphan");
    let mut said = async |prefix: &str| {
        let line = orphan
            .stdout_line(Duration::from_secs(60))
            .await
            .expect("a line")
            .expect("pg-orphan exited");
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("pg-orphan said {line:?}"))
            .to_owned()
    };
    let data = PathBuf::from(said("data ").await);
    let pid: u32 = said("pid ").await.parse().expect("a pid");
    orphan.signal(Signal::SIGKILL).expect("kill pg-orphan");
    orphan.wait(WAIT).await.expect("pg-orphan ends");
    // Its server outlives it: pg_ctl detached it.
    assert!(!ended(pid), "the orphaned postmaster runs");
    assert!(data.is_dir());

    let server = Postgres::start().expect("start");
    assert!(ended(pid), "orphaned postmaster {pid} still runs");
    assert!(
        !data.parent().expect("folder").exists(),
        "{} is left",
        data.display()
    );
    drop(server);
}

#[test]
fn a_bad_setting_is_refused_before_anything_starts() {
    let refused = Postgres::start_with(&[("port = 1\nfsync", "off")]);
    assert!(
        matches!(refused, Err(PostgresError::Setting { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_server_that_cannot_start_says_why() {
    let refused = Postgres::start_with(&[("max_connections", "many")]);
    let Err(PostgresError::Failed { step, log, .. }) = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!(step, "pg_ctl start");
    assert!(
        log.contains(r#"invalid value for parameter "max_connections""#),
        "the server's own words: {log}"
    );
}
