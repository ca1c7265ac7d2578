//! The search index (FTS5): the queue of entries to index, indexing them
//! in batches, merging segments, and turning a reader's words into a
//! query.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use crate::pipeline::sanitize::search_words;

use super::{exec, limit, ts};

/// Queues an entry for the search indexer ([`index_pending`]). Every path
/// that adds an entry or changes what it is indexed under comes here
/// instead of indexing in its own transaction: tokenising and merging
/// terms was about a sixth of the daemon's CPU while polls arrived flat
/// out, and a queue lets that wait until the writer has time to spare.
/// `indexed` says whether the index may already hold the entry; a row
/// already queued keeps what it said, since the index still holds what it
/// held when that row was queued.
pub(super) fn queue_for_index(
    tx: &Connection,
    entry_id: i64,
    indexed: bool,
) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT OR IGNORE INTO search_pending (entry_id, reindex) VALUES (?1, ?2)",
        params![entry_id, indexed],
    )?;
    Ok(())
}

/// What one [`index_pending`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStep {
    /// Entries indexed (or reindexed).
    pub indexed: usize,
    /// Whether more entries wait.
    pub more: bool,
}

/// Indexes up to `max` queued entries, oldest first, in one transaction,
/// and takes them off the queue. An entry is indexed under its title and
/// the words ([`search_words`]) of what the outputs show as its content:
/// the article text when the article is used, else the feed's content.
/// Reading that here, rather than carrying words from the poll, means an
/// entry changed again while queued is indexed once, as it now is.
pub(in crate::store) fn index_pending(
    conn: &mut Connection,
    max: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<IndexStep> {
    let tx = conn.transaction()?;
    let mut indexed = 0;
    let mut last = None;
    {
        let mut pending = tx.prepare_cached(
            "SELECT p.entry_id, p.reindex, e.title, coalesce(a.html, e.content_html)
             FROM search_pending p
             JOIN entry e ON e.id = p.entry_id
             LEFT JOIN article a ON a.entry_id = p.entry_id AND a.used = 1
             ORDER BY p.entry_id
             LIMIT ?1",
        )?;
        let mut rows = pending.query([max as i64])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let reindex: bool = row.get(1)?;
            let title: Option<String> = row.get(2)?;
            let html: Option<String> = row.get(3)?;
            if reindex {
                exec(&tx, "DELETE FROM entry_fts WHERE rowid = ?1", [id])?;
            }
            exec(
                &tx,
                "INSERT INTO entry_fts (rowid, title, body) VALUES (?1, ?2, ?3)",
                params![
                    id,
                    title.unwrap_or_default(),
                    search_words(html.as_deref().unwrap_or_default())
                ],
            )?;
            indexed += 1;
            last = Some(id);
        }
    }
    if let Some(last) = last {
        // Every queued id up to `last` was read above, in this transaction.
        exec(
            &tx,
            "DELETE FROM search_pending WHERE entry_id <= ?1",
            [last],
        )?;
        // Searches now find more: their cached pages and validators expire.
        exec(
            &tx,
            "UPDATE meta SET value = value + 1 WHERE key = 'search_rev'",
            [],
        )?;
        exec(
            &tx,
            "UPDATE meta SET value = max(value, ?1) WHERE key = 'search_changed_at'",
            [ts(now)],
        )?;
    }
    let more: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM search_pending)", [], |r| {
        r.get(0)
    })?;
    tx.commit()?;
    Ok(IndexStep { indexed, more })
}

/// Entries waiting for the search indexer.
pub(in crate::store) fn search_backlog(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row("SELECT count(*) FROM search_pending", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Turns what a reader typed into an FTS5 query that cannot be a syntax
/// error: every word quoted, all required.
pub(super) fn fts_query(q: &str) -> Option<String> {
    let terms: Vec<String> = q
        .split_whitespace()
        .map(|w| w.replace('"', ""))
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// One bounded step of merging the search index, which drops the rows of
/// deleted entries from its segments. Returns whether there was work.
pub(in crate::store) fn merge_search_index(
    conn: &Connection,
    pages: usize,
) -> rusqlite::Result<bool> {
    let before = conn.total_changes();
    // A negative page count merges even a single segment, so deleted rows
    // are dropped however the index is laid out.
    conn.execute(
        "INSERT INTO entry_fts (entry_fts, rank) VALUES ('merge', ?1)",
        [-limit(pages)],
    )?;
    // FTS5 reports one change for the command itself; more means it wrote.
    Ok(conn.total_changes() - before > 1)
}
