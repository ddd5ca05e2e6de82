//! The store's SQL, in the two dialects it speaks. Both take `$N` parameters (SQLite
//! reads `$N` as the N-th); they differ in the clock, the bytes type and row locks.
//!
//! Times are milliseconds since the Unix epoch on the **database's** clock, so that every
//! node reads leases against one clock, whatever its own says.

/// SQLite or PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database's time now, in milliseconds since the Unix epoch.
    fn now_ms(self) -> &'static str {
        match self {
            Self::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// What a read of a lease row that a write depends on adds: on PostgreSQL a share
    /// lock, so that a write and a lease taken by another node are ordered (the write
    /// waits for the taking to commit, then reads the new epoch). SQLite has one writer
    /// at a time already.
    fn lock_row(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => "FOR SHARE",
        }
    }

    /// The schema, version 1. Every statement is idempotent.
    pub(crate) fn schema(self) -> Vec<String> {
        let bytes = match self {
            Self::Sqlite => "BLOB",
            Self::Postgres => "BYTEA",
        };
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS duologue_entity_state (
                    kind TEXT NOT NULL,
                    id TEXT NOT NULL,
                    revision BIGINT NOT NULL,
                    epoch BIGINT NOT NULL,
                    state {bytes} NOT NULL,
                    PRIMARY KEY (kind, id))"
            ),
            // One row per shard that was ever claimed: its newest epoch, who holds it and
            // until when (NULL: claimed without a lease, for fencing only).
            "CREATE TABLE IF NOT EXISTS duologue_shard_leases (
                kind TEXT NOT NULL,
                shard BIGINT NOT NULL,
                epoch BIGINT NOT NULL,
                owner TEXT NOT NULL,
                expires_at BIGINT,
                PRIMARY KEY (kind, shard))"
                .to_owned(),
            // Every epoch of every shard: when it began and until when it was held.
            "CREATE TABLE IF NOT EXISTS duologue_lease_history (
                kind TEXT NOT NULL,
                shard BIGINT NOT NULL,
                epoch BIGINT NOT NULL,
                owner TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                ends_at BIGINT,
                PRIMARY KEY (kind, shard, epoch))"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS duologue_schema (version BIGINT NOT NULL)".to_owned(),
        ]
    }

    /// `$1` kind, `$2` id: the revision and the bytes.
    pub(crate) fn load(self) -> &'static str {
        "SELECT revision, state FROM duologue_entity_state WHERE kind = $1 AND id = $2"
    }

    /// `$1` kind, `$2` id, `$3` shard, `$4` epoch, `$5` the revision read, `$6` bytes:
    /// writes revision `$5 + 1` only if the row is still at `$5` (absent for 0) and the
    /// shard's lease row still has epoch `$4`, unexpired. Returns the new revision, or
    /// no row.
    pub(crate) fn save(self) -> String {
        format!(
            "WITH fence AS (
                SELECT 1 FROM duologue_shard_leases
                WHERE kind = $1 AND shard = $3 AND epoch = $4
                  AND (expires_at IS NULL OR expires_at > {now})
                {lock})
            INSERT INTO duologue_entity_state (kind, id, revision, epoch, state)
            SELECT $1, $2, $5 + 1, $4, $6 FROM fence WHERE true
            ON CONFLICT (kind, id) DO UPDATE
                SET revision = excluded.revision, epoch = excluded.epoch, state = excluded.state
                WHERE duologue_entity_state.revision = $5
            RETURNING revision",
            now = self.now_ms(),
            lock = self.lock_row(),
        )
    }

    /// `$1` kind, `$2` shard: the lease row's epoch, owner and whether it is unexpired,
    /// to say why a write was refused.
    pub(crate) fn lease_of(self) -> String {
        format!(
            "SELECT epoch, owner, CASE WHEN expires_at IS NULL OR expires_at > {now} THEN 1 ELSE 0 END
             FROM duologue_shard_leases WHERE kind = $1 AND shard = $2",
            now = self.now_ms()
        )
    }

    /// `$1` kind, `$2` id: the revision stored, to say why a write was refused.
    pub(crate) fn revision_of(self) -> &'static str {
        "SELECT revision FROM duologue_entity_state WHERE kind = $1 AND id = $2"
    }

    /// `$1` kind, `$2` shard, `$3` owner, `$4` the lease's length in ms (NULL: no lease,
    /// taken whoever held it), `$5` 1 to take it only when free (a lease) or 0. Returns
    /// the new epoch and the expiry, or no row when another holds an unexpired lease.
    pub(crate) fn claim(self) -> String {
        format!(
            "INSERT INTO duologue_shard_leases (kind, shard, epoch, owner, expires_at)
            VALUES ($1, $2, 1, $3, {now} + $4)
            ON CONFLICT (kind, shard) DO UPDATE
                SET epoch = duologue_shard_leases.epoch + 1,
                    owner = excluded.owner,
                    expires_at = excluded.expires_at
                WHERE $5 = 0
                   OR duologue_shard_leases.expires_at IS NULL
                   OR duologue_shard_leases.expires_at <= {now}
                   OR duologue_shard_leases.owner = excluded.owner
            RETURNING epoch, expires_at",
            now = self.now_ms()
        )
    }

    /// `$1` kind, `$2` shard, `$3` the epoch just claimed: the epochs before it end now
    /// if they had not (fenced by it; a lease its owner claims again before it expired).
    pub(crate) fn end_earlier(self) -> String {
        format!(
            "UPDATE duologue_lease_history SET ends_at = {now}
            WHERE kind = $1 AND shard = $2 AND epoch < $3 AND (ends_at IS NULL OR ends_at > {now})",
            now = self.now_ms()
        )
    }

    /// `$1` kind, `$2` shard, `$3` epoch, `$4` owner, `$5` expiry (NULL: none): the
    /// history row of an epoch just claimed.
    pub(crate) fn record_claim(self) -> String {
        format!(
            "INSERT INTO duologue_lease_history (kind, shard, epoch, owner, started_at, ends_at)
            VALUES ($1, $2, $3, $4, {now}, $5)",
            now = self.now_ms()
        )
    }

    /// `$1` kind, `$2` owner: on PostgreSQL, locks the leases a renewal extends in the
    /// order of their shards, the order in which the writer's batches take their share
    /// locks, so that the two never wait for each other in a cycle. (An UPDATE locks rows
    /// in the order it finds them.) SQLite has one writer at a time already.
    pub(crate) fn lock_for_renewal(self) -> Option<String> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(format!(
                "SELECT shard FROM duologue_shard_leases
                WHERE kind = $1 AND owner = $2 AND expires_at IS NOT NULL AND expires_at > {now}
                ORDER BY shard FOR UPDATE",
                now = self.now_ms()
            )),
        }
    }

    /// `$1` kind, `$2` owner, `$3` the lease's length in ms: extends every unexpired
    /// lease the owner holds. Returns each shard renewed, its epoch and new expiry.
    pub(crate) fn renew(self) -> String {
        format!(
            "UPDATE duologue_shard_leases SET expires_at = {now} + $3
            WHERE kind = $1 AND owner = $2 AND expires_at IS NOT NULL AND expires_at > {now}
            RETURNING shard, epoch, expires_at",
            now = self.now_ms()
        )
    }

    /// `$1` kind, `$2` owner: the history rows of the leases just renewed (the
    /// unexpired ones the owner holds) end when their leases do now.
    pub(crate) fn record_renewals(self) -> String {
        format!(
            "UPDATE duologue_lease_history SET ends_at = (
                SELECT l.expires_at FROM duologue_shard_leases l
                WHERE l.kind = duologue_lease_history.kind AND l.shard = duologue_lease_history.shard)
            WHERE (kind, shard, epoch) IN (
                SELECT kind, shard, epoch FROM duologue_shard_leases
                WHERE kind = $1 AND owner = $2 AND expires_at IS NOT NULL AND expires_at > {now})",
            now = self.now_ms()
        )
    }

    /// `$1` kind, `$2` shard, `$3` epoch, `$4` the end: the history row of an epoch
    /// released.
    pub(crate) fn record_end(self) -> &'static str {
        "UPDATE duologue_lease_history SET ends_at = $4
         WHERE kind = $1 AND shard = $2 AND epoch = $3"
    }

    /// `$1` kind, `$2` shard, `$3` epoch, `$4` owner: ends a lease now. Returns the end.
    pub(crate) fn release(self) -> String {
        format!(
            "UPDATE duologue_shard_leases SET expires_at = {now}
            WHERE kind = $1 AND shard = $2 AND epoch = $3 AND owner = $4
              AND expires_at IS NOT NULL AND expires_at > {now}
            RETURNING expires_at",
            now = self.now_ms()
        )
    }

    /// `$1` kind: every epoch of every shard, in order.
    pub(crate) fn history(self) -> &'static str {
        "SELECT shard, epoch, owner, started_at, ends_at FROM duologue_lease_history
         WHERE kind = $1 ORDER BY shard, epoch"
    }
}
