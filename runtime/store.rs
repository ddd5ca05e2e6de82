//! Entity state in a database, and the shard claims that fence it: the one owner of the
//! connection pool to the store (SQLite as the embedded default, PostgreSQL for a
//! cluster on several hosts; [sqlx] speaks both).
//!
//! ```text
//! duologue_entity_state   (kind, id) -> revision, epoch, state bytes
//! duologue_shard_leases   (kind, shard) -> newest epoch, owner, expiry (or none)
//! duologue_lease_history  (kind, shard, epoch) -> owner, from, until
//! ```
//!
//! A node serves a shard of a kind that keeps state only under a **claim** of it
//! ([`StateStore::claim`]): a new epoch for the shard, with a lease (owner, expiry on the
//! database's clock) when leases are on. Every write of an entity's state carries its
//! shard's epoch; the store refuses it when the shard has a newer epoch (another node
//! claimed it since) or the lease expired, and when the entity's revision moved since it
//! was read ([`StateError::Fenced`], [`StateError::Conflict`]). So a stale activation (a
//! partitioned or paused old owner) can never overwrite what a newer one wrote.

mod sql;

use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use self::sql::Dialect;

/// The longest any one operation on the store may take before it fails
/// [`StateError::Unavailable`]: a store cut off by a partition answers no one, and a
/// caller must hear so.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections a node keeps to the store at most.
const MAX_CONNECTIONS: u32 = 16;

/// How long SQLite waits for another process's write lock before it says busy.
const SQLITE_BUSY_WAIT_MS: u64 = 5_000;

/// How long PostgreSQL lets a session of this store sit inside a transaction between
/// statements before it ends the session: far longer than the store's transactions take,
/// far shorter than a lease.
const IDLE_IN_TRANSACTION: Duration = Duration::from_millis(1_000);

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 1;

/// Where a node keeps the state of its entities, and whether it leases shards.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateConfig {
    /// `sqlite:PATH` (the file is created if missing) or `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub url: String,
    /// `Some(length)`: a node serves a shard only while it holds the shard's lease in the
    /// store, renewed every quarter of `length`; at most one activation of an id runs at
    /// any moment, and none starts while the store cannot be reached. `None` (the
    /// default): claims fence stale writes, but a shard is taken at once when the view
    /// says so.
    pub lease: Option<Duration>,
}

impl StateConfig {
    /// State in the store at `url`, without leases.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            lease: None,
        }
    }

    /// With leases of `length` (see [`StateConfig::lease`]).
    #[must_use]
    pub fn with_lease(mut self, length: Duration) -> Self {
        self.lease = Some(length);
        self
    }
}

/// Why the store did not do what was asked.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// The URL names no store this build speaks.
    #[error("state store {url:?}: {reason}")]
    Url {
        /// The URL, its password hidden.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store could not be reached, or failed, or took longer than [`STORE_TIMEOUT`]
    /// (a write: its transaction did; it may also have waited for the one before). A
    /// write may or may not have been committed: the revision loaded next tells.
    #[error("the state store is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The shard's epoch moved on: another node claimed it since this activation's node
    /// did (or its lease expired). The write was refused and the entity is stopped.
    #[error(
        "fenced: shard {shard} is at epoch {newest} (held by {owner}), this activation wrote with epoch {epoch}"
    )]
    Fenced {
        /// The shard.
        shard: u32,
        /// The epoch the write carried.
        epoch: u64,
        /// The newest epoch the store has for the shard (the same when only the lease
        /// expired).
        newest: u64,
        /// Who holds it.
        owner: String,
    },
    /// The entity's state was written by someone else since it was read: the write was
    /// refused (optimistic concurrency).
    #[error("conflict: the state is at revision {found}, the write expected {expected}")]
    Conflict {
        /// The revision the write was based on.
        expected: u64,
        /// The revision stored.
        found: u64,
    },
    /// The bytes stored do not decode as the kind's state.
    #[error("the stored state does not decode: {reason}")]
    Decode {
        /// Why.
        reason: String,
    },
}

impl StateError {
    fn unavailable(error: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            reason: error.to_string(),
        }
    }
}

/// An entity's state as stored: its revision (0: never written) and its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Bumped by every write; 0 before the first.
    pub revision: u64,
    /// The encoded state.
    pub bytes: Vec<u8>,
}

/// A shard claimed: its new epoch, and the lease's expiry on the store's clock
/// (milliseconds since the Unix epoch; `None` without a lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The shard's epoch, newer than any before.
    pub epoch: u64,
    /// Until when the lease holds.
    pub expires_at: Option<i64>,
}

/// One epoch of one shard, from the store's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The shard.
    pub shard: u32,
    /// Its epoch.
    pub epoch: u64,
    /// The node that claimed it (`NAME/INCARNATION`).
    pub owner: String,
    /// When it was claimed (ms since the Unix epoch, the store's clock).
    pub started_at: i64,
    /// Until when it was held: its last expiry or its release (`None`: claimed
    /// without a lease).
    pub ends_at: Option<i64>,
}

/// Writes committed in one transaction at most: past it, the next waits for the next.
const MOST_WRITES_PER_COMMIT: usize = 256;

/// Writes waiting for the writer at most: past it, a write waits for room.
const WRITES_WAITING: usize = 4_096;

/// A connection pool to the state store, and its writer, which commits the writes that
/// wait together in one transaction (group commit: one disk flush for many writes).
/// Cheap to clone; the writer ends with the last clone.
#[derive(Clone, Debug)]
pub struct StateStore {
    pool: AnyPool,
    dialect: Dialect,
    writes: tokio::sync::mpsc::Sender<Write>,
}

/// One entity's write, waiting for the writer.
#[derive(Debug)]
struct Write {
    kind: String,
    id: String,
    shard: u32,
    epoch: u64,
    read: u64,
    bytes: Vec<u8>,
    /// The new revision, or none when the store refused it.
    done: tokio::sync::oneshot::Sender<Result<Option<u64>, StateError>>,
}

/// Commits the writes that wait, as many at once as wait (up to
/// [`MOST_WRITES_PER_COMMIT`]), ordered by kind, shard and id: every transaction of the
/// store that locks several rows locks them in that order (a renewal's leases, two
/// nodes' batches), so none waits for another in a cycle. A batch that fails fails each
/// of its writes alike.
async fn writer(pool: AnyPool, dialect: Dialect, mut writes: tokio::sync::mpsc::Receiver<Write>) {
    let save = dialect.save();
    let mut batch = Vec::with_capacity(MOST_WRITES_PER_COMMIT);
    while writes.recv_many(&mut batch, MOST_WRITES_PER_COMMIT).await > 0 {
        batch.sort_by(|a: &Write, b: &Write| {
            (&a.kind, a.shard, &a.id).cmp(&(&b.kind, b.shard, &b.id))
        });
        let committed = bounded(async {
            let mut tx = pool.begin().await?;
            let mut revisions = Vec::with_capacity(batch.len());
            for write in &batch {
                let row = sqlx::query(&save)
                    .bind(write.kind.as_str())
                    .bind(write.id.as_str())
                    .bind(i64::from(write.shard))
                    .bind(to_i64(write.epoch))
                    .bind(to_i64(write.read))
                    .bind(write.bytes.as_slice())
                    .fetch_optional(&mut *tx)
                    .await?;
                revisions.push(row.map(|row| row.try_get::<i64, _>(0)).transpose()?);
            }
            tx.commit().await?;
            Ok(revisions)
        })
        .await;
        match committed {
            Ok(revisions) => {
                for (write, revision) in batch.drain(..).zip(revisions) {
                    let revision = revision.map(|r| u64::try_from(r).unwrap_or_default());
                    let _ = write.done.send(Ok(revision));
                }
            }
            Err(error) => {
                for write in batch.drain(..) {
                    let _ = write.done.send(Err(error.clone()));
                }
            }
        }
    }
}

impl StateStore {
    /// Connects to the store at `url` (`sqlite:PATH`, `postgres://...`) and creates or
    /// migrates its schema.
    ///
    /// # Errors
    /// [`StateError::Url`] for a URL of no store this build speaks,
    /// [`StateError::Unavailable`] when it cannot be reached or refuses.
    pub async fn open(url: &str) -> Result<Self, StateError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let shown = hide_password(url);
        let (dialect, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            if path.trim_start_matches("//").is_empty() {
                return Err(StateError::Url {
                    url: shown,
                    reason: "no file named (sqlite:PATH)".into(),
                });
            }
            let create = if url.contains('?') { "" } else { "?mode=rwc" };
            (Dialect::Sqlite, format!("{url}{create}"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_owned())
        } else {
            return Err(StateError::Url {
                url: shown,
                reason: "a state store is sqlite:PATH or postgres://...".into(),
            });
        };
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(STORE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL: readers do not wait for the writer, and several processes
                        // on one host share the file. FULL: a commit is on disk when it
                        // returns, as PostgreSQL's is.
                        for pragma in [
                            "PRAGMA journal_mode = WAL".to_owned(),
                            "PRAGMA synchronous = FULL".to_owned(),
                            format!("PRAGMA busy_timeout = {SQLITE_BUSY_WAIT_MS}"),
                        ] {
                            sqlx::query(&pragma).execute(&mut *conn).await?;
                        }
                    } else {
                        // A node paused (SIGSTOP) or cut off in the middle of a
                        // transaction would hold its row locks, and block the node that
                        // takes its shards over, for as long as it stays so: the server
                        // ends such a session instead (its transaction rolls back).
                        sqlx::query(&format!(
                            "SET idle_in_transaction_session_timeout = {}",
                            IDLE_IN_TRANSACTION.as_millis()
                        ))
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(&url)
            .map_err(|e| StateError::Url {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        let (writes, waiting) = tokio::sync::mpsc::channel(WRITES_WAITING);
        let store = Self {
            pool: pool.clone(),
            dialect,
            writes,
        };
        store.migrate().await?;
        tokio::spawn(writer(pool, dialect, waiting));
        Ok(store)
    }

    /// Whether this is a SQLite store.
    pub fn is_sqlite(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }

    /// Creates the schema where missing, once for all nodes that start together.
    async fn migrate(&self) -> Result<(), StateError> {
        bounded(async {
            let mut tx = self.pool.begin().await?;
            if self.dialect == Dialect::Postgres {
                // Nodes starting at once would race on CREATE TABLE IF NOT EXISTS.
                sqlx::query("SELECT pg_advisory_xact_lock(7461636)")
                    .execute(&mut *tx)
                    .await?;
            }
            for statement in self.dialect.schema() {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
            let version: Option<i64> = sqlx::query("SELECT MAX(version) FROM duologue_schema")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            match version {
                None => {
                    sqlx::query("INSERT INTO duologue_schema (version) VALUES ($1)")
                        .bind(SCHEMA_VERSION)
                        .execute(&mut *tx)
                        .await?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Ok(Err(StateError::Url {
                        url: String::new(),
                        reason: format!(
                            "the store's schema is version {v}, newer than this build's {SCHEMA_VERSION}"
                        ),
                    }));
                }
                Some(_) => {}
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
        .await?
    }

    /// The state of `kind`'s entity `id` (revision 0, no bytes, when never written).
    ///
    /// # Errors
    /// [`StateError::Unavailable`].
    pub async fn load(&self, kind: &str, id: &str) -> Result<Stored, StateError> {
        let row = bounded(
            sqlx::query(self.dialect.load())
                .bind(kind)
                .bind(id)
                .fetch_optional(&self.pool),
        )
        .await?;
        match row {
            None => Ok(Stored::default()),
            Some(row) => Ok(Stored {
                revision: get_u64(&row, 0)?,
                bytes: row.try_get(1).map_err(StateError::unavailable)?,
            }),
        }
    }

    /// Writes `bytes` as the state of `kind`'s entity `id`, from the revision `read`,
    /// under `epoch` of `shard`. Returns the new revision once committed (with the other
    /// writes waiting then, in one transaction).
    ///
    /// # Errors
    /// [`StateError::Fenced`] when the shard has a newer epoch or its lease expired,
    /// [`StateError::Conflict`] when the revision moved, [`StateError::Unavailable`].
    pub async fn save(
        &self,
        kind: &str,
        id: &str,
        shard: u32,
        epoch: u64,
        read: u64,
        bytes: &[u8],
    ) -> Result<u64, StateError> {
        let (done, written) = tokio::sync::oneshot::channel();
        let write = Write {
            kind: kind.to_owned(),
            id: id.to_owned(),
            shard,
            epoch,
            read,
            bytes: bytes.to_vec(),
            done,
        };
        let gone = || StateError::Unavailable {
            reason: "the store's writer stopped".into(),
        };
        let queued = tokio::time::timeout(STORE_TIMEOUT, self.writes.send(write)).await;
        match queued {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(gone()),
            Err(_) => {
                return Err(StateError::Unavailable {
                    reason: format!(
                        "{WRITES_WAITING} writes waited for the store for {STORE_TIMEOUT:?}"
                    ),
                });
            }
        }
        if let Some(revision) = written.await.map_err(|_| gone())?? {
            return Ok(revision);
        }
        // Refused: say why.
        let lease = bounded(
            sqlx::query(&self.dialect.lease_of())
                .bind(kind)
                .bind(i64::from(shard))
                .fetch_optional(&self.pool),
        )
        .await?;
        let (newest, owner, valid) = match lease {
            Some(row) => (
                get_u64(&row, 0)?,
                row.try_get::<String, _>(1)
                    .map_err(StateError::unavailable)?,
                row.try_get::<i64, _>(2).map_err(StateError::unavailable)? == 1,
            ),
            None => (0, "nobody".to_owned(), false),
        };
        if newest != epoch || !valid {
            return Err(StateError::Fenced {
                shard,
                epoch,
                newest,
                owner,
            });
        }
        let found = bounded(
            sqlx::query(self.dialect.revision_of())
                .bind(kind)
                .bind(id)
                .fetch_optional(&self.pool),
        )
        .await?
        .map(|row| get_u64(&row, 0))
        .transpose()?
        .unwrap_or(0);
        Err(StateError::Conflict {
            expected: read,
            found,
        })
    }

    /// Claims `shard` of `kind` for `owner`: a new epoch, newer than every earlier one.
    /// With `lease`, only when no other owner holds an unexpired lease of it (`None`
    /// then), and until the lease's length passed on the store's clock; without, at once
    /// whoever held it.
    ///
    /// # Errors
    /// [`StateError::Unavailable`].
    pub async fn claim(
        &self,
        kind: &str,
        shard: u32,
        owner: &str,
        lease: Option<Duration>,
    ) -> Result<Option<Claim>, StateError> {
        bounded(async {
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query(&self.dialect.claim())
                .bind(kind)
                .bind(i64::from(shard))
                .bind(owner)
                .bind(lease.map(millis))
                .bind(i64::from(lease.is_some()))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let epoch: i64 = row.try_get(0)?;
            let expires_at: Option<i64> = row.try_get(1)?;
            sqlx::query(&self.dialect.end_earlier())
                .bind(kind)
                .bind(i64::from(shard))
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&self.dialect.record_claim())
                .bind(kind)
                .bind(i64::from(shard))
                .bind(epoch)
                .bind(owner)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(Claim {
                epoch: u64::try_from(epoch).unwrap_or_default(),
                expires_at,
            }))
        })
        .await
    }

    /// Extends every unexpired lease of `kind` that `owner` holds by `lease`, in one
    /// transaction of two statements (the leases, then their history), whatever their
    /// number. Returns the shards renewed with their epochs: a lease not among them
    /// is lost.
    ///
    /// # Errors
    /// [`StateError::Unavailable`].
    pub async fn renew(
        &self,
        kind: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<(u32, Claim)>, StateError> {
        bounded(async {
            let mut tx = self.pool.begin().await?;
            if let Some(lock) = self.dialect.lock_for_renewal() {
                sqlx::query(&lock)
                    .bind(kind)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
            }
            let rows = sqlx::query(&self.dialect.renew())
                .bind(kind)
                .bind(owner)
                .bind(millis(lease))
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query(&self.dialect.record_renewals())
                .bind(kind)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            let mut renewed = Vec::with_capacity(rows.len());
            for row in rows {
                let shard: i64 = row.try_get(0)?;
                let epoch: i64 = row.try_get(1)?;
                let expires_at: Option<i64> = row.try_get(2)?;
                renewed.push((
                    u32::try_from(shard).unwrap_or(u32::MAX),
                    Claim {
                        epoch: u64::try_from(epoch).unwrap_or_default(),
                        expires_at,
                    },
                ));
            }
            tx.commit().await?;
            Ok(renewed)
        })
        .await
    }

    /// Ends `owner`'s leases of `kind` on the given shards at their epochs, now, so that
    /// the next owner need not wait for them to expire.
    ///
    /// # Errors
    /// [`StateError::Unavailable`].
    pub async fn release(
        &self,
        kind: &str,
        owner: &str,
        shards: &[(u32, u64)],
    ) -> Result<(), StateError> {
        let mut shards = shards.to_vec();
        shards.sort_unstable();
        bounded(async {
            let mut tx = self.pool.begin().await?;
            for &(shard, epoch) in &shards {
                let ended = sqlx::query(&self.dialect.release())
                    .bind(kind)
                    .bind(i64::from(shard))
                    .bind(to_i64(epoch))
                    .bind(owner)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = ended {
                    let end: i64 = row.try_get(0)?;
                    sqlx::query(self.dialect.record_end())
                        .bind(kind)
                        .bind(i64::from(shard))
                        .bind(to_i64(epoch))
                        .bind(end)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Every epoch of every shard of `kind` the store recorded, by shard and epoch.
    ///
    /// # Errors
    /// [`StateError::Unavailable`].
    pub async fn lease_history(&self, kind: &str) -> Result<Vec<LeaseRecord>, StateError> {
        let rows = bounded(
            sqlx::query(self.dialect.history())
                .bind(kind)
                .fetch_all(&self.pool),
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LeaseRecord {
                    shard: u32::try_from(
                        row.try_get::<i64, _>(0).map_err(StateError::unavailable)?,
                    )
                    .unwrap_or(u32::MAX),
                    epoch: get_u64(row, 1)?,
                    owner: row.try_get(2).map_err(StateError::unavailable)?,
                    started_at: row.try_get(3).map_err(StateError::unavailable)?,
                    ends_at: row.try_get(4).map_err(StateError::unavailable)?,
                })
            })
            .collect()
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Runs one operation on the store within [`STORE_TIMEOUT`].
async fn bounded<T>(
    operation: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(STORE_TIMEOUT, operation).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StateError::unavailable(error)),
        Err(_) => Err(StateError::Unavailable {
            reason: format!("no answer within {STORE_TIMEOUT:?}"),
        }),
    }
}

fn get_u64(row: &AnyRow, column: usize) -> Result<u64, StateError> {
    let value: i64 = row.try_get(column).map_err(StateError::unavailable)?;
    u64::try_from(value).map_err(StateError::unavailable)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `url` with its password replaced by `***`, for errors and logs.
pub(crate) fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
