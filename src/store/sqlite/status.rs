//! What `status` shows, read in one transaction.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use crate::store::{DedupPass, FeedDay, StatusSnapshot};

use super::feeds::query_feeds;
use super::from_ts;
use super::retention::db_size;
use super::search::search_backlog;
use super::stories::dedup_pass_done_at;

/// Everything `status` shows, read in one transaction so the numbers agree.
pub(in crate::store) fn status(
    conn: &mut Connection,
    since_day: i64,
) -> rusqlite::Result<StatusSnapshot> {
    let tx = conn.transaction()?;
    let feeds = query_feeds(&tx, "ORDER BY f.id", &[])?;
    let count = |sql: &str| -> rusqlite::Result<u64> {
        Ok(tx.query_row(sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64)
    };
    let entries = count("SELECT count(*) FROM entry")?;
    let tombstones = count("SELECT count(*) FROM tombstone")?;
    let articles_pending = count("SELECT count(*) FROM article WHERE status = 'pending'")?;
    let articles_failed = count("SELECT count(*) FROM article WHERE status = 'failed'")?;
    let housekept_at = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'housekeeping_at'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(from_ts);
    let dedup_pass = match dedup_pass_done_at(&tx)? {
        Some(at) => DedupPass::Done(at),
        None => DedupPass::Pending,
    };
    let mut history: HashMap<i64, Vec<FeedDay>> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT feed_id, day, polls, not_modified, errors, new_entries FROM feed_day
             WHERE day >= ?1 ORDER BY feed_id, day",
        )?;
        let rows = stmt.query_map([since_day], |r| {
            let n = |i| {
                r.get::<_, i64>(i)
                    .map(|v| v.clamp(0, u32::MAX as i64) as u32)
            };
            Ok((
                r.get::<_, i64>(0)?,
                FeedDay {
                    day: r.get(1)?,
                    polls: n(2)?,
                    not_modified: n(3)?,
                    errors: n(4)?,
                    new_entries: n(5)?,
                },
            ))
        })?;
        for row in rows {
            let (feed_id, day) = row?;
            history.entry(feed_id).or_default().push(day);
        }
    }
    let size = db_size(&tx)?;
    let search_backlog = search_backlog(&tx)?;
    tx.commit()?;
    Ok(StatusSnapshot {
        feeds,
        entries,
        tombstones,
        articles_pending,
        articles_failed,
        search_backlog,
        size,
        housekept_at,
        dedup_pass,
        history,
    })
}
