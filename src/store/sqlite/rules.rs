//! A feed's stored entries as its keep/block rules read them, and dropping
//! the feed's claim on entries its rules now leave out.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::store::RuleSubject;

use super::{bump_revision, query_one};

/// A feed's stored entries as its keep/block rules read them: id, the
/// feed's key, title, content as given, authors, categories.
pub(in crate::store) fn feed_entries_for_rules(
    conn: &Connection,
    feed_id: i64,
) -> rusqlite::Result<Vec<RuleSubject>> {
    let mut stmt = conn.prepare(
        "SELECT e.id, s.entry_key, e.title, e.content_html, e.authors, e.categories
         FROM entry_source s JOIN entry e ON e.id = s.entry_id WHERE s.feed_id = ?1",
    )?;
    let rows = stmt.query_map([feed_id], |r| {
        let list = |json: Option<String>| -> Vec<String> {
            json.and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default()
        };
        Ok(RuleSubject {
            entry_id: r.get(0)?,
            key: r.get(1)?,
            title: r.get(2)?,
            content: r.get(3)?,
            authors: list(r.get(4)?),
            categories: list(r.get(5)?),
        })
    })?;
    rows.collect()
}

/// Drops `feed_id`'s claim on the entries with these keys, and each entry
/// no other feed carries. No tombstone: the feed's rules keep them out,
/// and relaxing the rules lets them back in.
pub(in crate::store) fn release_entries(
    conn: &mut Connection,
    feed_id: i64,
    keys: &[String],
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut removed = 0;
    for key in keys {
        let entry_id: Option<i64> = query_one(
            &tx,
            "SELECT entry_id FROM entry_source WHERE feed_id = ?1 AND entry_key = ?2",
            params![feed_id, key],
            |r| r.get(0),
        )
        .optional()?;
        let Some(entry_id) = entry_id else { continue };
        tx.prepare_cached("DELETE FROM entry_source WHERE feed_id = ?1 AND entry_key = ?2")?
            .execute(params![feed_id, key])?;
        tx.prepare_cached(
            "DELETE FROM entry WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM entry_source WHERE entry_id = ?1)",
        )?
        .execute([entry_id])?;
        removed += 1;
    }
    if removed > 0 {
        bump_revision(&tx, now)?;
    }
    tx.commit()?;
    Ok(removed)
}
