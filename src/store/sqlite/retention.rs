//! Retention and housekeeping: purging entries (with tombstones), bounding
//! tombstones and history, the file's size, vacuum, `PRAGMA optimize`.
//!
//! Each function here is one short transaction over at most `batch` rows,
//! so the single writer is never held for long: housekeeping calls them in
//! a loop and polls commit in between.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use crate::store::{DbSize, Purged};

use super::entries::tombstone_key;
use super::{bump_revision, limit, ts};

/// Tombstones every source of `entry_ids` and deletes the entries (their
/// sources, articles and search rows go with them: ON DELETE CASCADE and
/// the `entry_fts_delete` trigger).
fn bury_entries(
    tx: &Connection,
    entry_ids: &[i64],
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let mut purged = Purged::default();
    let mut sources =
        tx.prepare_cached("SELECT feed_id, entry_key FROM entry_source WHERE entry_id = ?1")?;
    let mut delete = tx.prepare_cached("DELETE FROM entry WHERE id = ?1")?;
    for id in entry_ids {
        let rows: Vec<(i64, String)> = sources
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (feed_id, key) in rows {
            purged.tombstones += add_tombstone(tx, feed_id, &key, now)?;
        }
        purged.entries += delete.execute([id])?;
    }
    if purged.entries > 0 {
        bump_revision(tx, now)?;
    }
    Ok(purged)
}

/// Returns 1 when the tombstone is new.
fn add_tombstone(
    tx: &Connection,
    feed_id: i64,
    key: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let hash = tombstone_key(key);
    let added = tx
        .prepare_cached(
            "INSERT INTO tombstone (feed_id, key_hash, seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (feed_id, key_hash) DO NOTHING",
        )?
        .execute(params![feed_id, hash, ts(now)])?;
    if added == 0 {
        tx.prepare_cached(
            "UPDATE tombstone SET seen_at = max(seen_at, ?3) WHERE feed_id = ?1 AND key_hash = ?2",
        )?
        .execute(params![feed_id, hash, ts(now)])?;
    }
    Ok(added)
}

fn purge_ids(conn: &mut Connection, ids: Vec<i64>, now: DateTime<Utc>) -> rusqlite::Result<Purged> {
    if ids.is_empty() {
        return Ok(Purged::default());
    }
    let tx = conn.transaction()?;
    let purged = bury_entries(&tx, &ids, now)?;
    tx.commit()?;
    Ok(purged)
}

/// Entries among the newest `:keep` of any feed that carries them: the
/// age and size limits never purge these, so a feed that was read stays
/// visible whatever the age of its posts. A CTE for the queries below.
const KEPT_NEWEST: &str = "kept(id) AS (
    SELECT entry_id FROM (
        SELECT s.entry_id, row_number() OVER (
            PARTITION BY s.feed_id ORDER BY e.sort_at DESC, e.id DESC) AS n
        FROM entry_source s JOIN entry e ON e.id = s.entry_id)
    WHERE n <= :keep)";

/// Purges up to `batch` of the oldest entries whose output time is before
/// `cutoff`, except each feed's newest `keep`.
pub(in crate::store) fn purge_older_than(
    conn: &mut Connection,
    cutoff: DateTime<Utc>,
    keep: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare_cached(&format!(
            "WITH {KEPT_NEWEST}
             SELECT id FROM entry WHERE sort_at < :cutoff AND id NOT IN kept
             ORDER BY sort_at, id LIMIT :batch"
        ))?;
        stmt.query_map(
            rusqlite::named_params! {
                ":cutoff": ts(cutoff), ":keep": limit(keep), ":batch": limit(batch)
            },
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?
    };
    purge_ids(conn, ids, now)
}

/// Purges up to `batch` of the oldest entries of all feeds (for the size
/// cap), except each feed's newest `keep`.
pub(in crate::store) fn purge_oldest(
    conn: &mut Connection,
    keep: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare_cached(&format!(
            "WITH {KEPT_NEWEST}
             SELECT id FROM entry WHERE id NOT IN kept ORDER BY sort_at, id LIMIT :batch"
        ))?;
        stmt.query_map(
            rusqlite::named_params! { ":keep": limit(keep), ":batch": limit(batch) },
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?
    };
    purge_ids(conn, ids, now)
}

/// Feeds carrying more than `max` entries.
pub(in crate::store) fn feeds_over(conn: &Connection, max: usize) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT feed_id FROM entry_source GROUP BY feed_id HAVING count(*) > ?1 ORDER BY feed_id",
    )?;
    stmt.query_map([limit(max)], |r| r.get(0))?.collect()
}

/// Releases up to `batch` of one feed's entries beyond its newest `keep`:
/// the feed's claim is tombstoned and dropped, and an entry no other feed
/// carries is deleted.
pub(in crate::store) fn purge_feed_excess(
    conn: &mut Connection,
    feed_id: i64,
    keep: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let tx = conn.transaction()?;
    let rows: Vec<(String, i64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT s.entry_key, s.entry_id FROM entry_source s JOIN entry e ON e.id = s.entry_id
             WHERE s.feed_id = ?1 ORDER BY e.sort_at DESC, e.id DESC LIMIT ?3 OFFSET ?2",
        )?;
        stmt.query_map(params![feed_id, limit(keep), limit(batch)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    let mut purged = Purged::default();
    for (key, entry_id) in &rows {
        purged.tombstones += add_tombstone(&tx, feed_id, key, now)?;
        tx.prepare_cached("DELETE FROM entry_source WHERE feed_id = ?1 AND entry_key = ?2")?
            .execute(params![feed_id, key])?;
        purged.entries += tx
            .prepare_cached(
                "DELETE FROM entry WHERE id = ?1
                   AND NOT EXISTS (SELECT 1 FROM entry_source WHERE entry_id = ?1)",
            )?
            .execute([entry_id])?;
    }
    if !rows.is_empty() {
        bump_revision(&tx, now)?;
    }
    tx.commit()?;
    Ok(purged)
}

/// Drops up to `batch` tombstones last seen before `cutoff`.
pub(in crate::store) fn expire_tombstones(
    conn: &Connection,
    cutoff: DateTime<Utc>,
    batch: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM tombstone WHERE (feed_id, key_hash) IN (
             SELECT feed_id, key_hash FROM tombstone WHERE seen_at < ?1
             ORDER BY seen_at LIMIT ?2)",
        params![ts(cutoff), limit(batch)],
    )
}

/// Drops up to `batch` of the longest-unseen tombstones beyond `max`.
pub(in crate::store) fn trim_tombstones(
    conn: &Connection,
    max: usize,
    batch: usize,
) -> rusqlite::Result<usize> {
    let count: i64 = conn.query_row("SELECT count(*) FROM tombstone", [], |r| r.get(0))?;
    let excess = (count - limit(max)).clamp(0, limit(batch));
    if excess == 0 {
        return Ok(0);
    }
    conn.execute(
        "DELETE FROM tombstone WHERE (feed_id, key_hash) IN (
             SELECT feed_id, key_hash FROM tombstone ORDER BY seen_at LIMIT ?1)",
        [excess],
    )
}

/// Forgets poll history before `day`.
pub(in crate::store) fn trim_history(conn: &Connection, day: i64) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM feed_day WHERE day < ?1", [day])
}

pub(in crate::store) fn entry_count(conn: &Connection) -> rusqlite::Result<u64> {
    Ok(conn
        .query_row("SELECT count(*) FROM entry", [], |r| r.get::<_, i64>(0))?
        .max(0) as u64)
}

pub(in crate::store) fn db_size(conn: &Connection) -> rusqlite::Result<DbSize> {
    let pragma = |name: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
    };
    let page_size = pragma("page_size")?.max(0) as u64;
    let pages = pragma("page_count")?.max(0) as u64;
    let free = pragma("freelist_count")?.max(0) as u64;
    Ok(DbSize {
        file_bytes: pages * page_size,
        used_bytes: pages.saturating_sub(free) * page_size,
        incremental_vacuum: pragma("auto_vacuum")? == 2,
    })
}

/// Hands up to `pages` free pages back to the file system (incremental
/// auto-vacuum only; a no-op otherwise).
pub(in crate::store) fn incremental_vacuum(
    conn: &Connection,
    pages: usize,
) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages});"))
}

/// `PRAGMA optimize` and a checkpoint that truncates the WAL file.
pub(in crate::store) fn optimize_and_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA optimize;")?;
    // Returns (busy, log pages, checkpointed pages); a busy checkpoint is
    // simply retried next time.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Rebuilds the whole file with incremental auto-vacuum on. Long, and
/// needs free disk space the size of the database: only on request.
pub(in crate::store) fn full_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
}

pub(in crate::store) fn set_housekept(
    conn: &Connection,
    at: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('housekeeping_at', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [ts(at)],
    )?;
    Ok(())
}
