//! The search index (FTS5): the queue of entries to index, indexing them
//! in batches, merging segments, and turning a reader's words into a
//! query.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{IndexStep, SearchDoc, SearchSource};

use super::{exec, limit, query_one, ts};

/// Queues an entry for the search indexer ([`write_index`]). Every path
/// that adds an entry or changes what it is indexed under comes here
/// instead of indexing in its own transaction: tokenising and merging
/// terms was about a sixth of the daemon's CPU while polls arrived flat
/// out, and a queue lets that wait until the writer has time to spare.
/// `indexed` says whether the index may already hold the entry; a row
/// already queued keeps what it said, since the index still holds what it
/// held when that row was queued, and counts one more change (`gen`), so
/// words read before it are not taken for the entry as it now reads.
pub(super) fn queue_for_index(
    tx: &Connection,
    entry_id: i64,
    indexed: bool,
) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT INTO search_pending (entry_id, reindex) VALUES (?1, ?2)
         ON CONFLICT (entry_id) DO UPDATE SET gen = gen + 1",
        params![entry_id, indexed],
    )?;
    Ok(())
}

/// Up to `max` queued entries, oldest first, as the outputs show them now:
/// the title, and the article's HTML when the article is used, else the
/// feed's content. A read: the words are made from it away from the
/// writer, and [`write_index`] indexes them.
pub(in crate::store) fn pending_for_index(
    conn: &Connection,
    max: usize,
) -> rusqlite::Result<Vec<SearchSource>> {
    let mut pending = conn.prepare_cached(
        "SELECT p.entry_id, p.gen, e.title, coalesce(a.html, e.content_html)
         FROM search_pending p
         JOIN entry e ON e.id = p.entry_id
         LEFT JOIN article a ON a.entry_id = p.entry_id AND a.used = 1
         ORDER BY p.entry_id
         LIMIT ?1",
    )?;
    let rows = pending.query_map([limit(max)], |r| {
        Ok(SearchSource {
            entry_id: r.get(0)?,
            generation: r.get(1)?,
            title: r.get(2)?,
            html: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Indexes `docs` in one transaction and takes them off the queue. A doc
/// whose entry was queued again since it was read (changed meanwhile) or
/// is gone is skipped: its queue row stays, and the next batch reads the
/// entry as it then is. So an entry changed again while queued is indexed
/// once, as it now reads.
pub(in crate::store) fn write_index(
    conn: &mut Connection,
    docs: &[SearchDoc],
    now: DateTime<Utc>,
) -> rusqlite::Result<IndexStep> {
    let tx = conn.transaction()?;
    let mut indexed = 0;
    for doc in docs {
        let reindex: Option<bool> = query_one(
            &tx,
            "DELETE FROM search_pending WHERE entry_id = ?1 AND gen = ?2 RETURNING reindex",
            params![doc.entry_id, doc.generation],
            |r| r.get(0),
        )
        .optional()?;
        let Some(reindex) = reindex else { continue };
        if reindex {
            exec(
                &tx,
                "DELETE FROM entry_fts WHERE rowid = ?1",
                [doc.entry_id],
            )?;
        }
        add_to_index(&tx, doc.entry_id, &doc.title, &doc.words)?;
        indexed += 1;
    }
    if indexed > 0 {
        search_changed(&tx, now)?;
    }
    let more: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM search_pending)", [], |r| {
        r.get(0)
    })?;
    tx.commit()?;
    Ok(IndexStep { indexed, more })
}

/// Adds an entry the index does not hold to the search index, under its
/// title and `words` (its content's `sanitize::search_words`). The one
/// statement that adds to the index: [`write_index`] runs it for queued
/// entries, and a poll whose parse stage prepared the words runs it for
/// the entries it adds (`ParsedEntry::search_words`).
pub(super) fn add_to_index(
    tx: &Connection,
    entry_id: i64,
    title: &str,
    words: &str,
) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT INTO entry_fts (rowid, title, body) VALUES (?1, ?2, ?3)",
        params![entry_id, title, words],
    )?;
    Ok(())
}

/// Searches now find more: their cached pages and validators expire.
pub(super) fn search_changed(tx: &Connection, now: DateTime<Utc>) -> rusqlite::Result<()> {
    exec(
        tx,
        "UPDATE meta SET value = value + 1 WHERE key = 'search_rev'",
        [],
    )?;
    exec(
        tx,
        "UPDATE meta SET value = max(value, ?1) WHERE key = 'search_changed_at'",
        [ts(now)],
    )?;
    Ok(())
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
