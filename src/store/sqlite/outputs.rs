//! Entries for the outputs: filters, paging, search, and the feeds each
//! entry came from.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::model::{Cursor, OutputEntry, SourceInfo};
use crate::store::EntryQuery;

use super::search::fts_query;
use super::{from_ts, opt_ts, parse_list};

pub(in crate::store) fn entries(
    conn: &Connection,
    q: &EntryQuery,
) -> rusqlite::Result<Vec<OutputEntry>> {
    // With a search, SQLite's own plan walks every FTS match, looks each
    // entry up and sorts them all: 130 ms for a word in most of 100,000
    // entries (benches/outputs.rs). Walking the output order instead and
    // stopping at the page's end costs at most one pass over the match
    // list (about 30 ms for that word, under 1 ms for a rarer one).
    let index = if q.search.is_some() {
        " INDEXED BY entry_sort"
    } else {
        ""
    };
    let mut sql = format!(
        "SELECT e.id, e.sort_at, e.uid, e.title, e.link,
                CASE WHEN a.used = 1 THEN a.html ELSE e.content_html END AS content,
                e.authors, e.categories, e.enclosures, e.published_at, e.updated_at,
                CASE WHEN a.used = 1 THEN NULL ELSE e.content_base END,
                coalesce(a.used, 0) = 1
         FROM entry e{index}
         LEFT JOIN article a ON a.entry_id = e.id
         WHERE 1"
    );
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(c) = q.after {
        sql.push_str(" AND (e.sort_at, e.id) < (?, ?)");
        args.push(Box::new(c.sort_at));
        args.push(Box::new(c.id));
    }
    if let Some(id) = q.since_id {
        sql.push_str(" AND e.id > ?");
        args.push(Box::new(id));
    }
    if !q.tags.is_empty() {
        sql.push_str(&format!(
            " AND e.id IN (SELECT s.entry_id FROM entry_source s
                           JOIN feed_tag t ON t.feed_id = s.feed_id WHERE t.tag IN ({}))",
            placeholders(q.tags.len())
        ));
        args.extend(
            q.tags
                .iter()
                .map(|t| Box::new(t.clone()) as Box<dyn rusqlite::ToSql>),
        );
    }
    if !q.feeds.is_empty() {
        sql.push_str(&format!(
            " AND e.id IN (SELECT s.entry_id FROM entry_source s
                           JOIN feed f ON f.id = s.feed_id WHERE f.url IN ({}))",
            placeholders(q.feeds.len())
        ));
        args.extend(
            q.feeds
                .iter()
                .map(|t| Box::new(t.clone()) as Box<dyn rusqlite::ToSql>),
        );
    }
    if let Some(fts) = q.search.as_deref().and_then(fts_query) {
        sql.push_str(" AND e.id IN (SELECT rowid FROM entry_fts WHERE entry_fts MATCH ?)");
        args.push(Box::new(fts));
    }
    if let Some(re) = &q.include {
        sql.push_str(
            " AND (regexp(?1000, coalesce(e.title, '')) OR regexp(?1000, coalesce(content, '')))",
        );
        args.push(Box::new(re.clone()));
    }
    if let Some(re) = &q.exclude {
        sql.push_str(" AND NOT (regexp(?1001, coalesce(e.title, '')) OR regexp(?1001, coalesce(content, '')))");
        args.push(Box::new(re.clone()));
    }
    sql.push_str(if q.since_id.is_some() {
        // Storage order, oldest first: what a push delivers next.
        " ORDER BY e.id LIMIT ?"
    } else {
        " ORDER BY e.sort_at DESC, e.id DESC LIMIT ?"
    });
    args.push(Box::new(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    let sql = number_placeholders(&sql);

    let mut stmt = conn.prepare_cached(&sql)?;
    let params: Vec<&dyn rusqlite::ToSql> = args.iter().map(|b| b.as_ref()).collect();
    let rows = stmt.query_map(params.as_slice(), |r| {
        Ok(OutputEntry {
            cursor: Cursor {
                sort_at: r.get(1)?,
                id: r.get(0)?,
            },
            uid: r.get(2)?,
            title: r.get(3)?,
            link: r.get(4)?,
            content_html: r.get(5)?,
            content_base: r.get(11)?,
            content_is_article: r.get(12)?,
            authors: parse_list(&r.get::<_, String>(6)?),
            categories: parse_list(&r.get::<_, String>(7)?),
            enclosures: parse_list(&r.get::<_, String>(8)?),
            published: opt_ts(r.get(9)?),
            updated: from_ts(r.get(10)?),
            sources: Vec::new(),
        })
    })?;
    let mut entries: Vec<OutputEntry> = rows.collect::<rusqlite::Result<_>>()?;
    attach_sources(conn, &mut entries)?;
    Ok(entries)
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Numbers the plain `?` placeholders in order, leaving the include and
/// exclude patterns (`?1000`, `?1001`, each used twice) to be renumbered
/// to the positions their values were pushed at.
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    let mut pending: Vec<(String, usize)> = Vec::new();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if digits.is_empty() {
            n += 1;
            out.push_str(&format!("?{n}"));
        } else {
            // A named slot: the first use claims the next number.
            let slot = match pending.iter().find(|(d, _)| *d == digits) {
                Some((_, k)) => *k,
                None => {
                    n += 1;
                    pending.push((digits, n));
                    n
                }
            };
            out.push_str(&format!("?{slot}"));
        }
    }
    out
}

/// Every feed that carried each entry, first-seen first.
fn attach_sources(conn: &Connection, entries: &mut [OutputEntry]) -> rusqlite::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT s.entry_id, f.url, coalesce(f.title, f.site_title, f.url), f.site_url, s.link
         FROM entry_source s JOIN feed f ON f.id = s.feed_id
         WHERE s.entry_id IN ({})
         ORDER BY s.entry_id, s.first_seen_at, s.rowid",
        placeholders(entries.len())
    );
    let ids: Vec<i64> = entries.iter().map(|e| e.cursor.id).collect();
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(ids.iter()), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            SourceInfo {
                feed_url: r.get(1)?,
                title: r.get(2)?,
                site_url: r.get(3)?,
                link: r.get(4)?,
            },
        ))
    })?;
    let mut by_id: HashMap<i64, Vec<SourceInfo>> = HashMap::new();
    for row in rows {
        let (id, src) = row?;
        by_id.entry(id).or_default().push(src);
    }
    for e in entries {
        e.sources = by_id.remove(&e.cursor.id).unwrap_or_default();
    }
    Ok(())
}
