//! Stories: the evidence each keeps (URL keys, listings, prints), finding
//! the stories an entry is one with, merging them, and the one-time
//! re-examination of stories stored by an older version.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::TextPrint;
use crate::store::stories::{
    self, ArticleFacts, ArticleMerge, Evidence, LSH_KEYS_PER_PRINT, PRINT_VERSION, PrintRow,
    StoryRows, TEXT_WINDOW_SECS,
};

use super::search::queue_for_index;
use super::{bump_revision, exec, numbered, opt_ts, query_one, ts};

/// How many copies (feed items) a story has.
pub(super) fn story_copies(tx: &Connection, story: i64) -> rusqlite::Result<i64> {
    query_one(
        tx,
        "SELECT count(*) FROM entry_source WHERE entry_id = ?1",
        [story],
        |r| r.get(0),
    )
}

/// What a stored story says of itself for the dedup rule, as rows: every
/// URL key of its copies, every copy's listing (a copy stored before
/// copies kept their own is listed as the story), and every member's print
/// of the current analysis version.
fn evidence_of(tx: &Connection, story: i64) -> rusqlite::Result<Evidence> {
    let mut rows = StoryRows::default();
    let mut stmt = tx.prepare_cached("SELECT url_key FROM entry_url WHERE entry_id = ?1")?;
    rows.url_keys = stmt
        .query_map([story], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = tx.prepare_cached(
        "SELECT coalesce(s.title, e.title), coalesce(s.published_at, e.published_at)
         FROM entry_source s JOIN entry e ON e.id = s.entry_id WHERE s.entry_id = ?1",
    )?;
    rows.listings = stmt
        .query_map([story], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // A print stored before prints kept their site is its entry's page.
    let mut stmt = tx.prepare_cached(
        "SELECT p.words, p.simhash, p.minhash, p.published, p.site,
                (SELECT coalesce(a.final_url, o.link) FROM entry o
                 LEFT JOIN article a ON a.entry_id = o.id WHERE o.id = p.origin)
         FROM entry_print p WHERE p.entry_id = ?1 AND p.version = ?2",
    )?;
    rows.prints = stmt
        .query_map(params![story, PRINT_VERSION], |r| {
            Ok(PrintRow {
                words: r.get(0)?,
                simhash: r.get(1)?,
                minhash: r.get(2)?,
                published: r.get(3)?,
                site: r.get(4)?,
                page: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Evidence::of_rows(rows))
}

/// The stories other than `me` that are one story with `evidence`
/// ([`stories::same_story`]), with their first-seen times, earliest first.
/// Candidates are stories sharing a URL key, and stories first seen within
/// [`TEXT_WINDOW_SECS`] of `around` sharing a locality-sensitive key with
/// one of its prints; the SQL only finds candidates, the rule decides.
pub(super) fn linked_stories(
    tx: &Connection,
    evidence: &Evidence,
    me: Option<i64>,
    around: i64,
) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut candidates: Vec<i64> = Vec::new();
    let url_keys = evidence.url_keys();
    if !url_keys.is_empty() {
        let sql = format!(
            "SELECT DISTINCT entry_id FROM entry_url WHERE url_key IN ({}) AND entry_id IS NOT ?1",
            numbered(2, url_keys.len())
        );
        let args = std::iter::once(&me as &dyn rusqlite::ToSql)
            .chain(url_keys.iter().map(|k| k as &dyn rusqlite::ToSql));
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?;
        for row in rows {
            candidates.push(row?);
        }
    }
    let lsh = evidence.lsh_keys();
    for chunk in lsh.chunks(LSH_KEYS_PER_PRINT) {
        let sql = format!(
            "SELECT DISTINCT l.entry_id FROM entry_lsh l JOIN entry x ON x.id = l.entry_id
             WHERE l.lsh_key IN ({}) AND l.entry_id IS NOT ?1
               AND x.first_seen_at BETWEEN ?2 - ?3 AND ?2 + ?3",
            numbered(4, chunk.len())
        );
        let head: [&dyn rusqlite::ToSql; 3] = [&me, &around, &TEXT_WINDOW_SECS];
        let args = head
            .into_iter()
            .chain(chunk.iter().map(|k| k as &dyn rusqlite::ToSql));
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?;
        for row in rows {
            candidates.push(row?);
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    let mut linked = Vec::new();
    for id in candidates {
        let other = evidence_of(tx, id)?;
        if stories::same_story(evidence, &other) {
            linked.push((id, first_seen(tx, id)?));
        }
    }
    stories::earliest_first(&mut linked);
    Ok(linked)
}

fn first_seen(tx: &Connection, story: i64) -> rusqlite::Result<i64> {
    query_one(
        tx,
        "SELECT first_seen_at FROM entry WHERE id = ?1",
        [story],
        |r| r.get(0),
    )
}

/// Merges `story` with every story the evidence links it to, transitively,
/// into the earliest first seen of them ([`stories::merge_order`]), which
/// keeps its id. Returns the story `story` is now part of (itself when
/// nothing merged or it was the earliest) and how many stories merged
/// away. Whatever order copies and articles arrive in, the stories end as
/// the groups `dedup::group` makes of the same entries.
pub(super) fn unite(tx: &Connection, story: i64) -> rusqlite::Result<(i64, usize)> {
    let mut me = story;
    let mut merged = 0;
    // Each round merges at least one story away; the bound is a guard.
    for _ in 0..64 {
        let evidence = evidence_of(tx, me)?;
        let seen = first_seen(tx, me)?;
        let linked = linked_stories(tx, &evidence, Some(me), seen)?;
        if linked.is_empty() {
            break;
        }
        let (target, from) = stories::merge_order((me, seen), &linked);
        for &id in &from {
            merge_stories(tx, id, target)?;
        }
        me = target;
        merged += from.len();
    }
    Ok((me, merged))
}

/// The earlier `into` absorbs `from`: its copies, URL keys, prints and
/// candidate keys move over; the articles as [`stories::article_merge`]
/// says; `from` is deleted. The story keeps its id.
pub(super) fn merge_stories(tx: &Connection, from: i64, into: i64) -> rusqlite::Result<()> {
    exec(
        tx,
        "UPDATE entry_source SET entry_id = ?2 WHERE entry_id = ?1",
        params![from, into],
    )?;
    exec(
        tx,
        "INSERT OR IGNORE INTO entry_url (url_key, entry_id)
         SELECT url_key, ?2 FROM entry_url WHERE entry_id = ?1",
        params![from, into],
    )?;
    exec(
        tx,
        "UPDATE entry_print SET entry_id = ?2 WHERE entry_id = ?1",
        params![from, into],
    )?;
    exec(
        tx,
        "INSERT OR IGNORE INTO entry_lsh (lsh_key, entry_id)
         SELECT lsh_key, ?2 FROM entry_lsh WHERE entry_id = ?1",
        params![from, into],
    )?;
    let article = |id: i64| -> rusqlite::Result<Option<ArticleFacts>> {
        query_one(
            tx,
            "SELECT status, used, coalesce(word_count, 0) FROM article WHERE entry_id = ?1",
            [id],
            |r| {
                Ok(ArticleFacts {
                    status: r.get(0)?,
                    used: r.get(1)?,
                    words: r.get(2)?,
                })
            },
        )
        .optional()
    };
    match stories::article_merge(article(from)?.as_ref(), article(into)?.as_ref()) {
        ArticleMerge::Move => {
            exec(
                tx,
                "UPDATE article SET entry_id = ?2 WHERE entry_id = ?1",
                params![from, into],
            )?;
            if article(into)?.is_some_and(|a| a.used) {
                queue_for_index(tx, into, true)?;
            }
        }
        ArticleMerge::Replace => {
            exec(
                tx,
                "INSERT OR REPLACE INTO article (entry_id, feed_id, url, status, attempts,
                     next_attempt_at, final_url, canonical_url, html, text, word_count, used,
                     fetched_at)
                 SELECT ?2, feed_id, url, 'done', attempts, next_attempt_at, final_url,
                        canonical_url, html, text, word_count, used, fetched_at
                 FROM article WHERE entry_id = ?1",
                params![from, into],
            )?;
            queue_for_index(tx, into, true)?;
        }
        ArticleMerge::Keep => {}
    }
    exec(tx, "DELETE FROM entry WHERE id = ?1", [from])?;
    Ok(())
}

/// Stores the analysis of `entry_id`'s own article (replacing an earlier
/// one of the same article, keeping its members' prints) and its
/// candidate keys.
pub(super) fn store_print(
    tx: &Connection,
    entry_id: i64,
    print: &TextPrint,
    page_url: &str,
) -> rusqlite::Result<()> {
    exec(
        tx,
        "DELETE FROM entry_print WHERE entry_id = ?1 AND origin = ?1",
        [entry_id],
    )?;
    exec(
        tx,
        "INSERT INTO entry_print (entry_id, origin, site, version, words, simhash, minhash,
             published)
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            entry_id,
            stories::site_of(page_url),
            i64::from(print.version),
            i64::from(print.words),
            print.simhash as i64,
            print.minhash,
            print.published
        ],
    )?;
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO entry_lsh (lsh_key, entry_id) VALUES (?1, ?2)")?;
    for k in &print.lsh_keys {
        stmt.execute(params![*k as i64, entry_id])?;
    }
    Ok(())
}

/// Entries the one-time re-examination looks at per transaction.
pub(in crate::store) const DEDUP_PASS_BATCH: usize = 50;

/// One step of the one-time re-examination of stories stored before
/// copies in one feed, groups and every member's print were considered:
/// up to `batch` entries, in one transaction, each merged with whatever
/// its stored evidence links it to ([`unite`]). Returns `None` once the
/// pass has run (and records when), else how many stories merged away.
pub(in crate::store) fn dedup_pass_step(
    conn: &mut Connection,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<usize>> {
    let tx = conn.transaction()?;
    let next: Option<i64> = query_one(
        &tx,
        "SELECT value FROM meta WHERE key = 'dedup_pass_next'",
        [],
        |r| r.get(0),
    )
    .optional()?;
    let Some(next) = next else {
        return Ok(None);
    };
    let ids: Vec<i64> = {
        let mut stmt =
            tx.prepare_cached("SELECT id FROM entry WHERE id >= ?1 ORDER BY id LIMIT ?2")?;
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        stmt.query_map(params![next, limit], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut merged = 0;
    for &id in &ids {
        let exists: bool = query_one(
            &tx,
            "SELECT EXISTS (SELECT 1 FROM entry WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        if exists {
            merged += unite(&tx, id)?.1;
        }
    }
    if merged > 0 {
        bump_revision(&tx, now)?;
    }
    match ids.last() {
        Some(last) if ids.len() == batch => {
            exec(
                &tx,
                "UPDATE meta SET value = ?1 WHERE key = 'dedup_pass_next'",
                [last + 1],
            )?;
        }
        _ => {
            exec(&tx, "DELETE FROM meta WHERE key = 'dedup_pass_next'", [])?;
            exec(
                &tx,
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('dedup_pass_done_at', ?1)",
                [ts(now)],
            )?;
        }
    }
    tx.commit()?;
    Ok(Some(merged))
}

/// When the one-time re-examination finished (`None` while it has not).
pub(in crate::store) fn dedup_pass_done_at(
    conn: &Connection,
) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let at: Option<i64> = query_one(
        conn,
        "SELECT value FROM meta WHERE key = 'dedup_pass_done_at'",
        [],
        |r| r.get(0),
    )
    .optional()?;
    Ok(opt_ts(at))
}
