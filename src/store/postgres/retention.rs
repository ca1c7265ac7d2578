//! Retention and housekeeping on PostgreSQL: purging entries (with
//! tombstones, so they do not come back), bounding tombstones and history,
//! the size the cap measures, and what stands in for SQLite's vacuum.
//!
//! As on SQLite each purge is one short transaction over at most `batch`
//! entries. Several nodes may run housekeeping on one database at once:
//! the entries a purge takes are locked (`FOR UPDATE SKIP LOCKED`) before
//! their sources are read, so two nodes never purge the same entry; a poll
//! adding a source to an entry being purged waits for the purge, then
//! fails on the foreign key and is rolled back whole, and the feed's next
//! poll finds the key's tombstone.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::store::{DbSize, Purged, StoreError};

use super::entries::tombstone_key;
use super::{PgStore, bump_revision, ts};

/// A count or limit as PostgreSQL's BIGINT.
fn big(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Entries among the newest `$keep` of any feed that carries them: the
/// age and size limits never purge these, so a feed that was read stays
/// visible whatever the age of its posts. A CTE for the queries below.
const KEPT_NEWEST: &str = "kept AS (
    SELECT entry_id FROM (
        SELECT s.entry_id, row_number() OVER (
            PARTITION BY s.feed_id ORDER BY e.sort_at DESC, e.id DESC) AS n
        FROM entry_source s JOIN entry e ON e.id = s.entry_id) k
    WHERE n <= $1)";

/// The tables whose live rows [`PgStore::db_size`] adds up: every table
/// of the schema (the migrations' own bookkeeping aside).
const TABLES: &[&str] = &[
    "feed",
    "feed_tag",
    "entry",
    "entry_source",
    "meta",
    "host_block",
    "article",
    "entry_url",
    "entry_print",
    "entry_lsh",
    "entry_search",
    "search_pending",
    "push_target",
    "tombstone",
    "feed_day",
];

/// What a heap row costs beyond its data: the tuple header (23 bytes,
/// aligned to 24) and its line pointer (4).
const ROW_OVERHEAD: i64 = 28;

/// Writes (or refreshes) tombstones for `(feed_id, key)` pairs; returns
/// how many are new.
async fn add_tombstones(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &[(i64, String)],
    now: DateTime<Utc>,
) -> Result<usize, tokio_postgres::Error> {
    // One statement may not touch a row twice: distinct (feed, hash) only.
    let mut seen = HashSet::new();
    let (mut feeds, mut hashes) = (Vec::new(), Vec::new());
    for (feed_id, key) in keys {
        let hash = tombstone_key(key);
        if seen.insert((*feed_id, hash.clone())) {
            feeds.push(*feed_id);
            hashes.push(hash);
        }
    }
    if feeds.is_empty() {
        return Ok(0);
    }
    // `xmax = 0` on the returned row: it was inserted, not updated.
    let rows = tx
        .query(
            "INSERT INTO tombstone (feed_id, key_hash, seen_at)
             SELECT f, h, $3 FROM unnest($1::BIGINT[], $2::BYTEA[]) AS t (f, h)
             ON CONFLICT (feed_id, key_hash)
             DO UPDATE SET seen_at = greatest(tombstone.seen_at, excluded.seen_at)
             RETURNING (xmax = 0)",
            &[&feeds, &hashes, &ts(now)],
        )
        .await?;
    let mut added = 0;
    for r in rows {
        if r.try_get::<_, bool>(0)? {
            added += 1;
        }
    }
    Ok(added)
}

/// Tombstones every source of `ids` (already locked by the caller's
/// transaction) and deletes the entries; their sources, articles, dedup
/// evidence and search rows go with them (ON DELETE CASCADE).
async fn bury_entries(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<Purged, tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(Purged::default());
    }
    let mut keys = Vec::new();
    for r in tx
        .query(
            "SELECT feed_id, entry_key FROM entry_source WHERE entry_id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        keys.push((r.try_get(0)?, r.try_get(1)?));
    }
    let tombstones = add_tombstones(tx, &keys, now).await?;
    let entries = tx
        .execute("DELETE FROM entry WHERE id = ANY($1)", &[&ids])
        .await? as usize;
    if entries > 0 {
        bump_revision(tx, now).await?;
    }
    Ok(Purged {
        entries,
        tombstones,
    })
}

/// An SQL expression for the bytes of the live rows of every table
/// ([`PgStore::db_size`]'s `used_bytes`).
pub(super) fn live_bytes_sql() -> String {
    TABLES
        .iter()
        .map(|t| {
            format!("(SELECT coalesce(sum(pg_column_size(t.*) + {ROW_OVERHEAD}), 0) FROM {t} t)")
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

impl PgStore {
    /// Locks the entries `select` picks (its parameters: `$1` keep,
    /// `$2` batch, then `extra`) and purges them, in one transaction.
    async fn purge_selected(
        &self,
        select: &str,
        keep: usize,
        batch: usize,
        extra: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (keep, batch) = (big(keep), big(batch));
        let rows = match &extra {
            Some(x) => tx.query(select, &[&keep, &batch, x]).await?,
            None => tx.query(select, &[&keep, &batch]).await?,
        };
        let ids = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<i64>, _>>()?;
        let purged = bury_entries(&tx, &ids, now).await?;
        tx.commit().await?;
        Ok(purged)
    }

    /// Purges up to `batch` of the oldest entries whose output time is
    /// before `cutoff`, except each feed's newest `keep`.
    pub(in crate::store) async fn purge_older_than(
        &self,
        cutoff: DateTime<Utc>,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        let select = format!(
            "WITH {KEPT_NEWEST}
             SELECT id FROM entry
             WHERE sort_at < $3 AND id NOT IN (SELECT entry_id FROM kept)
             ORDER BY sort_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        self.purge_selected(&select, keep, batch, Some(ts(cutoff)), now)
            .await
    }

    /// Purges up to `batch` of the oldest entries of all feeds (for the
    /// size cap), except each feed's newest `keep`.
    pub(in crate::store) async fn purge_oldest(
        &self,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        let select = format!(
            "WITH {KEPT_NEWEST}
             SELECT id FROM entry WHERE id NOT IN (SELECT entry_id FROM kept)
             ORDER BY sort_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        self.purge_selected(&select, keep, batch, None, now).await
    }

    /// Feeds carrying more than `max` entries.
    pub(in crate::store) async fn feeds_over(&self, max: usize) -> Result<Vec<i64>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT feed_id FROM entry_source GROUP BY feed_id HAVING count(*) > $1
                 ORDER BY feed_id",
                &[&big(max)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    /// Releases up to `batch` of one feed's entries beyond its newest
    /// `keep`: the feed's claim is tombstoned and dropped, and an entry no
    /// other feed carries is deleted.
    pub(in crate::store) async fn purge_feed_excess(
        &self,
        feed_id: i64,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut claims: Vec<(String, i64)> = Vec::new();
        for r in tx
            .query(
                "SELECT s.entry_key, s.entry_id FROM entry_source s
                   JOIN entry e ON e.id = s.entry_id
                 WHERE s.feed_id = $1 ORDER BY e.sort_at DESC, e.id DESC
                 LIMIT $3 OFFSET $2 FOR UPDATE OF s SKIP LOCKED",
                &[&feed_id, &big(keep), &big(batch)],
            )
            .await?
        {
            claims.push((r.try_get(0)?, r.try_get(1)?));
        }
        if claims.is_empty() {
            return Ok(Purged::default());
        }
        let keys: Vec<(i64, String)> = claims.iter().map(|(k, _)| (feed_id, k.clone())).collect();
        let tombstones = add_tombstones(&tx, &keys, now).await?;
        let (names, ids): (Vec<String>, Vec<i64>) = claims.into_iter().unzip();
        tx.execute(
            "DELETE FROM entry_source WHERE feed_id = $1 AND entry_key = ANY($2)",
            &[&feed_id, &names],
        )
        .await?;
        let entries = tx
            .execute(
                "DELETE FROM entry e WHERE e.id = ANY($1)
                   AND NOT EXISTS (SELECT 1 FROM entry_source s WHERE s.entry_id = e.id)",
                &[&ids],
            )
            .await? as usize;
        bump_revision(&tx, now).await?;
        tx.commit().await?;
        Ok(Purged {
            entries,
            tombstones,
        })
    }

    /// Drops up to `batch` tombstones last seen before `cutoff`.
    pub(in crate::store) async fn expire_tombstones(
        &self,
        cutoff: DateTime<Utc>,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM tombstone WHERE (feed_id, key_hash) IN (
                     SELECT feed_id, key_hash FROM tombstone WHERE seen_at < $1
                     ORDER BY seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&ts(cutoff), &big(batch)],
            )
            .await?;
        Ok(n as usize)
    }

    /// Drops up to `batch` of the longest-unseen tombstones beyond `max`.
    pub(in crate::store) async fn trim_tombstones(
        &self,
        max: usize,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let count: i64 = tx
            .query_one("SELECT count(*) FROM tombstone", &[])
            .await?
            .try_get(0)?;
        let excess = (count - big(max)).clamp(0, big(batch));
        if excess == 0 {
            return Ok(0);
        }
        let n = tx
            .execute(
                "DELETE FROM tombstone WHERE (feed_id, key_hash) IN (
                     SELECT feed_id, key_hash FROM tombstone
                     ORDER BY seen_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
                &[&excess],
            )
            .await?;
        tx.commit().await?;
        Ok(n as usize)
    }

    /// Forgets the poll history of days before `now`'s day minus `days`.
    pub(in crate::store) async fn trim_history(
        &self,
        days: i64,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let before = ts(now).div_euclid(86_400) - days;
        let n = self
            .client()
            .await?
            .execute("DELETE FROM feed_day WHERE day < $1", &[&before])
            .await?;
        Ok(n as usize)
    }

    /// The database's size. `file_bytes` is what it takes on disk
    /// (`pg_database_size`); `used_bytes`, what `max_database_size` caps,
    /// is the bytes of the live rows of every table (as stored, compressed
    /// values compressed, plus each row's header). PostgreSQL keeps the
    /// space of deleted rows for reuse instead of handing it back, so no
    /// on-disk figure shrinks when entries are purged and a cap on one
    /// would purge everything; this one shrinks at once, in the purging
    /// transaction's commit. Indexes are not counted: they grow and shrink
    /// with the rows. Costs one scan of each table, as SQLite's size cap
    /// costs a page count.
    pub(in crate::store) async fn db_size(&self) -> Result<DbSize, StoreError> {
        let live = live_bytes_sql();
        let row = self
            .client()
            .await?
            .query_one(
                &format!("SELECT pg_database_size(current_database()), ({live})::BIGINT"),
                &[],
            )
            .await?;
        let file: i64 = row.try_get(0)?;
        let used: i64 = row.try_get(1)?;
        Ok(DbSize {
            file_bytes: file.max(0) as u64,
            used_bytes: used.max(0) as u64,
            // Freed space is reused in place by PostgreSQL (autovacuum
            // marks it free); there is nothing to hand back in steps.
            incremental_vacuum: false,
        })
    }

    /// A no-op: PostgreSQL's autovacuum marks the space of deleted rows
    /// free for reuse, which is what SQLite's incremental vacuum does by
    /// hand ([`DbSize::incremental_vacuum`] is false, so housekeeping
    /// does not call this).
    pub(in crate::store) async fn incremental_vacuum(
        &self,
        _pages: usize,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nothing to merge: the search index is a GIN index whose pending
    /// list PostgreSQL folds in itself (at autovacuum or when it fills),
    /// and deleted rows leave it with their `entry_search` rows.
    pub(in crate::store) async fn merge_search_index(
        &self,
        _pages: usize,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Refreshes the planner's statistics of the tables retention churns
    /// (`ANALYZE` samples a bounded number of rows, so it is cheap), which
    /// is what SQLite's `PRAGMA optimize` does; there is no WAL file to
    /// truncate (PostgreSQL's checkpoints are the server's business).
    /// The revision rows of ended sessions are folded into the base rows
    /// here too (see `bump_revision`).
    pub(in crate::store) async fn optimize_and_checkpoint(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        client
            .batch_execute("ANALYZE entry, entry_source, article, tombstone, feed_day")
            .await?;
        let tx = client.transaction().await?;
        super::fold_revision_shards(&tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `tributary purge --vacuum`: rewrites every table (`VACUUM FULL`),
    /// handing the space of deleted rows back to the file system. Locks
    /// each table while it is rewritten and needs free space its size:
    /// like SQLite's `VACUUM`, only on request with the daemons stopped.
    pub(in crate::store) async fn full_vacuum(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        for t in TABLES {
            // VACUUM cannot run inside a transaction: one table at a time.
            client
                .batch_execute(&format!("VACUUM (FULL, ANALYZE) {t}"))
                .await?;
        }
        Ok(())
    }

    /// Notes when housekeeping finished, for `status`.
    pub(in crate::store) async fn set_housekept(
        &self,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO meta (key, value) VALUES ('housekeeping_at', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&ts(at)],
            )
            .await?;
        Ok(())
    }
}
