//! The store's contract, each clause on a SQLite file of its own and on a database of
//! its own in one real PostgreSQL server (started by the test, `duologue_testkit::postgres`).

use std::time::Duration;

use duologue_testkit::postgres::Postgres;

use super::*;

/// A store in a SQLite file of its own folder (kept while the folder lives).
async fn sqlite() -> (tempfile::TempDir, StateStore) {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let url = format!("sqlite:{}", folder.path().join("state.db").display());
    let store = StateStore::open(&url).await.expect("the store opens");
    (folder, store)
}

/// Runs each clause on SQLite (a test each), and all of them on PostgreSQL (one test,
/// one server, a database per clause).
macro_rules! contract {
    ($($clause:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $clause() {
                let (_folder, store) = sqlite().await;
                super::$clause(&store).await;
            }
        )*

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_clause_holds_on_postgresql() {
            let server = tokio::task::spawn_blocking(Postgres::start)
                .await
                .unwrap()
                .expect("PostgreSQL starts");
            let admin = StateStore::open(&server.url()).await.expect("the store opens");
            for clause in [$(stringify!($clause)),*] {
                sqlx::query(&format!("CREATE DATABASE {clause}"))
                    .execute(&admin.pool)
                    .await
                    .expect("a database per clause");
            }
            let base = server.url();
            let base = base.rsplit_once('/').unwrap().0;
            $(
                let store = StateStore::open(&format!("{base}/{}", stringify!($clause)))
                    .await
                    .expect("the store opens");
                super::$clause(&store).await;
                store.close().await;
            )*
            admin.close().await;
            drop(server);
        }
    };
}

mod on {
    use super::*;

    contract!(
        a_write_under_the_shards_epoch_is_read_back_with_its_revision,
        a_write_from_a_stale_revision_is_a_conflict_and_changes_nothing,
        once_another_node_claims_the_shard_the_old_epoch_is_fenced,
        a_lease_is_not_taken_while_held_and_is_once_released,
        a_lease_not_renewed_expires_and_its_holder_is_fenced,
        a_renewal_extends_every_unexpired_lease_of_its_owner_in_one_go,
        the_history_of_a_shard_has_no_two_epochs_overlapping,
        racing_claims_and_writes_never_let_a_stale_epoch_write_after_a_newer_claim,
        writes_that_wait_together_commit_together_and_a_refused_one_fails_alone,
        batches_of_writes_and_renewals_of_the_same_leases_never_deadlock,
    );
}

async fn a_write_under_the_shards_epoch_is_read_back_with_its_revision(store: &StateStore) {
    assert_eq!(store.load("cart", "c1").await.unwrap(), Stored::default());
    let claim = store.claim("cart", 3, "a/1", None).await.unwrap().unwrap();
    assert_eq!(claim.epoch, 1);
    assert_eq!(claim.expires_at, None);
    let revision = store
        .save("cart", "c1", 3, claim.epoch, 0, b"one")
        .await
        .unwrap();
    assert_eq!(revision, 1);
    let revision = store
        .save("cart", "c1", 3, claim.epoch, 1, b"two")
        .await
        .unwrap();
    assert_eq!(revision, 2);
    assert_eq!(
        store.load("cart", "c1").await.unwrap(),
        Stored {
            revision: 2,
            bytes: b"two".to_vec()
        }
    );
    // Another kind's entity of the same id is another row.
    assert_eq!(store.load("room", "c1").await.unwrap().revision, 0);
}

async fn a_write_from_a_stale_revision_is_a_conflict_and_changes_nothing(store: &StateStore) {
    let claim = store.claim("cart", 0, "a/1", None).await.unwrap().unwrap();
    store
        .save("cart", "c", 0, claim.epoch, 0, b"x")
        .await
        .unwrap();
    let stale = store.save("cart", "c", 0, claim.epoch, 0, b"y").await;
    assert_eq!(
        stale,
        Err(StateError::Conflict {
            expected: 0,
            found: 1
        })
    );
    assert_eq!(store.load("cart", "c").await.unwrap().bytes, b"x");
}

async fn once_another_node_claims_the_shard_the_old_epoch_is_fenced(store: &StateStore) {
    let old = store.claim("cart", 9, "a/1", None).await.unwrap().unwrap();
    store
        .save("cart", "c", 9, old.epoch, 0, b"a")
        .await
        .unwrap();
    // Without leases a claim is taken whoever held it.
    let new = store.claim("cart", 9, "b/1", None).await.unwrap().unwrap();
    assert_eq!(new.epoch, old.epoch + 1);
    let stale = store.save("cart", "c", 9, old.epoch, 1, b"stale").await;
    assert_eq!(
        stale,
        Err(StateError::Fenced {
            shard: 9,
            epoch: old.epoch,
            newest: new.epoch,
            owner: "b/1".into()
        })
    );
    // The new owner reads what the old one committed before, and writes on.
    let read = store.load("cart", "c").await.unwrap();
    assert_eq!(read.bytes, b"a");
    store
        .save("cart", "c", 9, new.epoch, read.revision, b"b")
        .await
        .unwrap();
    // Other shards are not touched.
    let other = store.claim("cart", 10, "a/1", None).await.unwrap().unwrap();
    assert_eq!(other.epoch, 1);
}

async fn a_lease_is_not_taken_while_held_and_is_once_released(store: &StateStore) {
    let lease = Some(Duration::from_secs(600));
    let a = store.claim("acct", 1, "a/1", lease).await.unwrap().unwrap();
    assert!(a.expires_at.is_some());
    assert_eq!(store.claim("acct", 1, "b/1", lease).await.unwrap(), None);
    // A claim without a lease (fencing only) does not wait either way: it is a
    // configuration of the whole cluster, and takes what it is asked.
    store.release("acct", "a/1", &[(1, a.epoch)]).await.unwrap();
    let b = store.claim("acct", 1, "b/1", lease).await.unwrap().unwrap();
    assert_eq!(b.epoch, a.epoch + 1);
    // Releasing someone else's lease, or an old epoch, does nothing.
    store.release("acct", "a/1", &[(1, b.epoch)]).await.unwrap();
    store.release("acct", "b/1", &[(1, a.epoch)]).await.unwrap();
    assert_eq!(store.claim("acct", 1, "c/1", lease).await.unwrap(), None);
}

async fn a_lease_not_renewed_expires_and_its_holder_is_fenced(store: &StateStore) {
    let short = Some(Duration::from_millis(1));
    let a = store.claim("acct", 2, "a/1", short).await.unwrap().unwrap();
    // The store's clock passes the expiry; wait for it without guessing how long.
    let b = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(b) = store
                .claim("acct", 2, "b/1", Some(Duration::from_secs(600)))
                .await
                .unwrap()
            {
                break b;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the lease expires");
    assert_eq!(b.epoch, a.epoch + 1);
    assert!(matches!(
        store.save("acct", "x", 2, a.epoch, 0, b"late").await,
        Err(StateError::Fenced { newest, .. }) if newest == b.epoch
    ));
    // The old holder cannot renew what it lost.
    assert!(
        store
            .renew("acct", "a/1", Duration::from_secs(600))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_renewal_extends_every_unexpired_lease_of_its_owner_in_one_go(store: &StateStore) {
    let lease = Some(Duration::from_secs(600));
    for shard in 0..1024 {
        let owner = if shard % 2 == 0 { "a/1" } else { "b/1" };
        store.claim("acct", shard, owner, lease).await.unwrap();
    }
    let renewed = store
        .renew("acct", "a/1", Duration::from_secs(900))
        .await
        .unwrap();
    assert_eq!(renewed.len(), 512);
    assert!(renewed.iter().all(|(shard, _)| shard % 2 == 0));
    let history = store.lease_history("acct").await.unwrap();
    assert_eq!(history.len(), 1024);
    for (record, (shard, claim)) in history.iter().filter(|r| r.shard % 2 == 0).zip(
        renewed
            .iter()
            .copied()
            .collect::<std::collections::BTreeMap<_, _>>(),
    ) {
        assert_eq!(record.shard, shard);
        assert_eq!(
            record.ends_at, claim.expires_at,
            "the history follows renewals"
        );
    }
}

async fn the_history_of_a_shard_has_no_two_epochs_overlapping(store: &StateStore) {
    let lease = Some(Duration::from_secs(600));
    let mut epochs = Vec::new();
    for owner in ["a/1", "b/1", "c/1", "a/2"] {
        let claim = store.claim("acct", 5, owner, lease).await.unwrap().unwrap();
        store
            .release("acct", owner, &[(5, claim.epoch)])
            .await
            .unwrap();
        epochs.push(claim.epoch);
    }
    assert_eq!(epochs, vec![1, 2, 3, 4]);
    let history = store.lease_history("acct").await.unwrap();
    assert_eq!(history.len(), 4);
    for pair in history.windows(2) {
        let ended = pair[0].ends_at.expect("a lease ends");
        assert!(ended <= pair[1].started_at, "{pair:?}");
    }
}

/// Claims and writes of two nodes racing on one shard. Once a node's claim has
/// committed and it has read the state, no write under an older epoch commits: its own
/// write from what it read succeeds, or is fenced by a newer claim, and is never a
/// conflict (on PostgreSQL this takes the write's row lock on the lease).
async fn racing_claims_and_writes_never_let_a_stale_epoch_write_after_a_newer_claim(
    store: &StateStore,
) {
    let store = store.clone();
    let first = store.claim("race", 0, "a/1", None).await.unwrap().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // a writes as fast as it can, claiming the shard back each time it is fenced.
    let a = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut epoch, mut read, mut written) = (first.epoch, 0, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match store.save("race", "x", 0, epoch, read, b"a").await {
                    Ok(revision) => {
                        read = revision;
                        written += 1;
                    }
                    Err(StateError::Fenced { newest, .. }) => {
                        epoch = store
                            .claim("race", 0, "a/1", None)
                            .await
                            .unwrap()
                            .unwrap()
                            .epoch;
                        assert!(epoch > newest);
                        read = store.load("race", "x").await.unwrap().revision;
                    }
                    Err(StateError::Conflict { found, .. }) => read = found,
                    Err(other) => panic!("{other}"),
                }
            }
            written
        })
    };
    let (mut ok, mut fenced) = (0, 0);
    for _ in 0..100 {
        let claim = store.claim("race", 0, "b/1", None).await.unwrap().unwrap();
        let read = store.load("race", "x").await.unwrap();
        match store
            .save("race", "x", 0, claim.epoch, read.revision, b"b")
            .await
        {
            Ok(_) => ok += 1,
            Err(StateError::Fenced { .. }) => fenced += 1,
            Err(other) => panic!("a write under an older epoch landed after b's claim: {other}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = a.await.unwrap();
    assert!(ok + fenced == 100 && written > 0, "{ok} {fenced} {written}");
}

/// Many writes at once (the writer commits those waiting in one transaction): each
/// gets its own answer, and one refused among them does not fail the others.
async fn writes_that_wait_together_commit_together_and_a_refused_one_fails_alone(
    store: &StateStore,
) {
    let old = store.claim("many", 1, "a/1", None).await.unwrap().unwrap();
    let new = store.claim("many", 1, "b/1", None).await.unwrap().unwrap();
    let writes = (0..300).map(|i| {
        let store = store.clone();
        async move {
            // Every tenth write carries the old epoch: fenced; the others commit.
            let epoch = if i % 10 == 0 { old.epoch } else { new.epoch };
            let id = format!("e{i}");
            (i, store.save("many", &id, 1, epoch, 0, id.as_bytes()).await)
        }
    });
    for (i, written) in futures::future::join_all(writes).await {
        if i % 10 == 0 {
            assert!(
                matches!(written, Err(StateError::Fenced { .. })),
                "{i}: {written:?}"
            );
        } else {
            assert_eq!(written, Ok(1), "{i}");
        }
    }
    for i in [1, 155, 299] {
        let stored = store.load("many", &format!("e{i}")).await.unwrap();
        assert_eq!(stored.bytes, format!("e{i}").as_bytes());
    }
    assert_eq!(store.load("many", "e10").await.unwrap().revision, 0);
}

/// Batches of writes over many shards while the same leases are renewed again and
/// again: both lock the lease rows (in one order), and every write commits.
async fn batches_of_writes_and_renewals_of_the_same_leases_never_deadlock(store: &StateStore) {
    let lease = Some(Duration::from_secs(600));
    let mut epochs = Vec::new();
    for shard in 0..64 {
        epochs.push(
            store
                .claim("busy", shard, "a/1", lease)
                .await
                .unwrap()
                .unwrap()
                .epoch,
        );
    }
    let renewals = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let renewed = store
                    .renew("busy", "a/1", Duration::from_secs(600))
                    .await
                    .expect("a renewal");
                assert_eq!(renewed.len(), 64);
            }
        })
    };
    let writes = (0..3_000u32).map(|i| {
        let store = store.clone();
        // Shards in the reverse order of their ids, so that id order is not shard order.
        let shard = 63 - (i % 64);
        let epoch = epochs[shard as usize];
        async move {
            store
                .save("busy", &format!("e{i:05}"), shard, epoch, 0, b"x")
                .await
        }
    });
    for written in futures::future::join_all(writes).await {
        assert_eq!(written, Ok(1));
    }
    renewals.await.unwrap();
}

#[tokio::test]
async fn two_stores_on_one_file_see_each_others_claims() {
    let (folder, a) = sqlite().await;
    let url = format!("sqlite:{}", folder.path().join("state.db").display());
    let b = StateStore::open(&url).await.unwrap();
    let lease = Some(Duration::from_secs(600));
    a.claim("acct", 7, "a/1", lease).await.unwrap().unwrap();
    assert_eq!(b.claim("acct", 7, "b/1", lease).await.unwrap(), None);
}

#[tokio::test]
async fn a_url_of_no_store_is_refused_typed_and_its_password_not_shown() {
    for url in ["mysql://u:secret@h/db", "sqlite:", "nonsense"] {
        match StateStore::open(url).await {
            Err(StateError::Url { url: shown, .. }) => assert!(!shown.contains("secret")),
            other => panic!("{url}: {other:?}"),
        }
    }
    assert_eq!(
        hide_password("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_within_the_bound() {
    // A port nothing listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://u:p@127.0.0.1:{port}/db");
    let opened = tokio::time::timeout(STORE_TIMEOUT * 2, StateStore::open(&url))
        .await
        .expect("bounded");
    assert!(
        matches!(opened, Err(StateError::Unavailable { .. })),
        "{opened:?}"
    );
}
