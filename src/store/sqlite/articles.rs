//! The article queue: pages due for a fetch, their leases, and recording
//! an attempt (the article, its evidence, and the stories it joins).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{ArticleJob, ArticleOutcome, ArticleRecord};
use crate::store::ArticleState;

use super::entries::add_url_keys;
use super::search::queue_for_index;
use super::stories::{store_print, unite};
use super::{bump_revision, opt_ts, parse_list, query_one, ts};

/// Articles due for an attempt, oldest first, from feeds still polled.
fn due_articles(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> rusqlite::Result<Vec<ArticleJob>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT a.entry_id, a.feed_id, a.url, e.title, e.authors, e.content_html, a.attempts,
                e.published_at
         FROM article a
         JOIN entry e ON e.id = a.entry_id
         JOIN feed f ON f.id = a.feed_id AND f.status = 'active'
         WHERE a.status = 'pending' AND a.next_attempt_at <= ?1
         ORDER BY a.next_attempt_at, a.entry_id
         LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![ts(now), limit], |r| {
        Ok(ArticleJob {
            entry_id: r.get(0)?,
            feed_id: r.get(1)?,
            url: r.get(2)?,
            title: r.get(3)?,
            authors: parse_list(&r.get::<_, String>(4)?),
            feed_html: r.get(5)?,
            attempts: r.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
            published: r.get(7)?,
        })
    })?;
    rows.collect()
}

pub(in crate::store) fn next_article_at(
    conn: &Connection,
) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let v: Option<i64> = conn.query_row(
        "SELECT min(next_attempt_at) FROM article WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )?;
    Ok(opt_ts(v))
}

/// Claims up to `limit` articles due at `now` and leases them until
/// `until`, in one transaction (one writer: nothing can come between).
pub(in crate::store) fn claim_articles(
    conn: &mut Connection,
    now: DateTime<Utc>,
    limit: usize,
    until: DateTime<Utc>,
) -> rusqlite::Result<Vec<ArticleJob>> {
    let tx = conn.transaction()?;
    let jobs = due_articles(&tx, now, limit)?;
    lease_in(&tx, jobs.iter().map(|j| j.entry_id), until)?;
    tx.commit()?;
    Ok(jobs)
}

fn lease_in(
    tx: &rusqlite::Transaction<'_>,
    ids: impl Iterator<Item = i64>,
    until: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("UPDATE article SET next_attempt_at = ?2 WHERE entry_id = ?1")?;
    for id in ids {
        stmt.execute(params![id, ts(until)])?;
    }
    Ok(())
}

/// Holds dispatched articles back while they are fetched.
pub(in crate::store) fn lease_articles(
    conn: &mut Connection,
    ids: &[i64],
    until: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    lease_in(&tx, ids.iter().copied(), until)?;
    tx.commit()
}

/// Records an article attempt; returns whether the entry was merged into
/// an earlier story.
pub(in crate::store) fn record_article(
    conn: &mut Connection,
    rec: &ArticleRecord,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    // The entry may have joined an earlier story while its page was
    // fetched (another copy's evidence linked them): its article went
    // with it, or the story had one already. Nothing left to record.
    let exists: bool = query_one(
        &tx,
        "SELECT EXISTS (SELECT 1 FROM article WHERE entry_id = ?1)",
        [rec.entry_id],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(false);
    }
    let mut merged = false;
    let at = ts(rec.at);
    let retry = rec.retry_at.map(ts);
    match &rec.outcome {
        ArticleOutcome::Extracted {
            final_url,
            canonical_url,
            html,
            text,
            word_count,
            use_for_output,
            url_keys,
            print,
        } => {
            tx.execute(
                "UPDATE article SET status = 'done', attempts = attempts + 1, last_error = NULL,
                     final_url = ?2, canonical_url = ?3, html = ?4, text = ?5, word_count = ?6,
                     used = ?7, fetched_at = ?8
                 WHERE entry_id = ?1",
                params![
                    rec.entry_id,
                    final_url,
                    canonical_url,
                    html,
                    text,
                    *word_count as i64,
                    *use_for_output,
                    at
                ],
            )?;
            if *use_for_output {
                queue_for_index(&tx, rec.entry_id, true)?;
                bump_revision(&tx, rec.at)?;
            }
            // One story, one entry: the same page (final or canonical URL)
            // or the same text, in this feed or another, joins this entry
            // with every story it links, under the earliest one's id.
            add_url_keys(&tx, rec.entry_id, url_keys)?;
            if let Some(p) = print {
                store_print(&tx, rec.entry_id, p, final_url)?;
            }
            let (story, changed) = unite(&tx, rec.entry_id)?;
            if changed > 0 {
                bump_revision(&tx, rec.at)?;
            }
            merged = story != rec.entry_id;
        }
        ArticleOutcome::Failed { error } => {
            tx.execute(
                "UPDATE article SET attempts = attempts + 1, last_error = ?2,
                     status = CASE WHEN ?3 IS NULL THEN 'failed' ELSE 'pending' END,
                     next_attempt_at = coalesce(?3, next_attempt_at)
                 WHERE entry_id = ?1",
                params![rec.entry_id, error, retry],
            )?;
        }
        ArticleOutcome::Deferred => {
            tx.execute(
                "UPDATE article SET next_attempt_at = coalesce(?2, next_attempt_at)
                 WHERE entry_id = ?1",
                params![rec.entry_id, retry],
            )?;
        }
    }
    tx.commit()?;
    Ok(merged)
}

/// Article states for one entry, for tests and status views.
pub(in crate::store) fn article_state(
    conn: &Connection,
    entry_uid: &str,
) -> rusqlite::Result<Option<ArticleState>> {
    conn.query_row(
        "SELECT a.status, a.attempts, a.last_error, a.word_count, a.used
         FROM article a JOIN entry e ON e.id = a.entry_id WHERE e.uid = ?1",
        [entry_uid],
        |r| {
            Ok(ArticleState {
                status: r.get(0)?,
                attempts: r.get::<_, i64>(1)?.max(0) as u32,
                last_error: r.get(2)?,
                word_count: r.get::<_, Option<i64>>(3)?.map(|n| n.max(0) as usize),
                used: r.get(4)?,
            })
        },
    )
    .optional()
}
