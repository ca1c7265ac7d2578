//! Subscriptions: feed rows, their tags and settings; adding, removing,
//! and syncing them with the config; reading them back as [`Feed`]s.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{Feed, FeedOrigin, FeedSpec, FeedStatus, PageRule};
use crate::store::rows::{FEED_COLUMNS, FeedColumns};
use crate::store::{AddOutcome, SyncReport};

use super::{bump_revision, query_one, ts};

fn set_tags(tx: &Connection, feed_id: i64, tags: &[String]) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM feed_tag WHERE feed_id = ?1", [feed_id])?;
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO feed_tag (feed_id, tag) VALUES (?1, ?2)")?;
    for tag in tags {
        stmt.execute(params![feed_id, tag])?;
    }
    Ok(())
}

fn insert_feed(
    tx: &Connection,
    spec: &FeedSpec,
    origin: FeedOrigin,
    now: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO feed (url, title, interval_secs, origin, next_check_at, created_at,
                           full_text, request, rules, page)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9)",
        params![
            spec.url,
            spec.title,
            spec.interval.map(|d| d.as_secs() as i64),
            origin.as_str(),
            ts(now),
            spec.full_text,
            spec.request.to_json(),
            spec.rules.to_json(),
            spec.page.as_ref().map(PageRule::to_json),
        ],
    )?;
    let id = tx.last_insert_rowid();
    set_tags(tx, id, &spec.tags)?;
    Ok(id)
}

/// Removes a feed and every entry that no other feed carries.
fn delete_feed(tx: &Connection, feed_id: i64, now: DateTime<Utc>) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM entry WHERE id IN (
             SELECT s.entry_id FROM entry_source s WHERE s.feed_id = ?1
               AND NOT EXISTS (SELECT 1 FROM entry_source o
                               WHERE o.entry_id = s.entry_id AND o.feed_id <> ?1))",
        [feed_id],
    )?;
    tx.execute("DELETE FROM feed WHERE id = ?1", [feed_id])?;
    bump_revision(tx, now)
}

pub(in crate::store) fn add_feeds(
    conn: &mut Connection,
    specs: &[FeedSpec],
    origin: FeedOrigin,
    now: DateTime<Utc>,
    progress: &mut dyn FnMut(usize),
) -> rusqlite::Result<Vec<AddOutcome>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        progress(i);
        let existing: Option<i64> = query_one(
            &tx,
            "SELECT id FROM feed WHERE url = ?1",
            [&spec.url],
            |r| r.get(0),
        )
        .optional()?;
        out.push(match existing {
            Some(_) => AddOutcome::Exists,
            None => {
                insert_feed(&tx, spec, origin, now)?;
                AddOutcome::Added
            }
        });
    }
    tx.commit()?;
    Ok(out)
}

/// Makes the config-owned feeds match `specs`: new ones are added, changed
/// ones updated, ones no longer in the config removed. A feed added earlier
/// from the CLI or OPML that now appears in the config becomes config-owned.
pub(in crate::store) fn sync_config_feeds(
    conn: &mut Connection,
    specs: &[FeedSpec],
    now: DateTime<Utc>,
) -> rusqlite::Result<SyncReport> {
    let tx = conn.transaction()?;
    let mut report = SyncReport::default();
    let mut wanted: HashMap<&str, &FeedSpec> = specs.iter().map(|s| (s.url.as_str(), s)).collect();

    let existing: Vec<(i64, String, String)> = {
        let mut stmt = tx.prepare("SELECT id, url, origin FROM feed")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, url, origin) in existing {
        match wanted.remove(url.as_str()) {
            Some(spec) => {
                let changed = tx.execute(
                    "UPDATE feed SET title = ?2, interval_secs = ?3, full_text = ?4,
                         request = ?5, rules = ?6, page = ?7, origin = 'config'
                     WHERE id = ?1 AND (title IS NOT ?2 OR interval_secs IS NOT ?3
                                        OR full_text IS NOT ?4 OR request IS NOT ?5
                                        OR rules IS NOT ?6 OR page IS NOT ?7
                                        OR origin <> 'config')",
                    params![
                        id,
                        spec.title,
                        spec.interval.map(|d| d.as_secs() as i64),
                        spec.full_text,
                        spec.request.to_json(),
                        spec.rules.to_json(),
                        spec.page.as_ref().map(PageRule::to_json),
                    ],
                )?;
                let old_tags: Vec<String> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT tag FROM feed_tag WHERE feed_id = ?1 ORDER BY tag",
                    )?;
                    let rows = stmt.query_map([id], |r| r.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut new_tags = spec.tags.clone();
                new_tags.sort();
                new_tags.dedup();
                if old_tags != new_tags {
                    set_tags(&tx, id, &spec.tags)?;
                }
                if changed > 0 || old_tags != new_tags {
                    report.updated += 1;
                    // Titles and tags show in the output.
                    bump_revision(&tx, now)?;
                }
            }
            None if origin == FeedOrigin::Config.as_str() => {
                delete_feed(&tx, id, now)?;
                report.removed += 1;
            }
            None => {}
        }
    }
    // Insert in config order so ids follow the file.
    for spec in specs {
        if wanted.contains_key(spec.url.as_str()) {
            insert_feed(&tx, spec, FeedOrigin::Config, now)?;
            report.added += 1;
        }
    }
    tx.commit()?;
    Ok(report)
}

pub(in crate::store) fn remove_feed(
    conn: &mut Connection,
    url: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Feed>> {
    let Some(feed) = feed_by_url(conn, url)? else {
        return Ok(None);
    };
    let tx = conn.transaction()?;
    delete_feed(&tx, feed.id, now)?;
    tx.commit()?;
    Ok(Some(feed))
}

fn feed_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Feed> {
    Ok(FeedColumns {
        id: r.get(0)?,
        url: r.get(1)?,
        title: r.get(2)?,
        interval_secs: r.get(3)?,
        origin: r.get(4)?,
        site_title: r.get(5)?,
        site_url: r.get(6)?,
        etag: r.get(7)?,
        last_modified: r.get(8)?,
        next_check_at: r.get(9)?,
        last_checked_at: r.get(10)?,
        last_success_at: r.get(11)?,
        last_status: r.get(12)?,
        last_error: r.get(13)?,
        error_count: r.get(14)?,
        entry_count: r.get(15)?,
        status: r.get(16)?,
        fetch_url: r.get(17)?,
        redirect_url: r.get(18)?,
        redirect_count: r.get::<_, Option<i64>>(19).ok().flatten(),
        current_interval_secs: r.get(20)?,
        schedule_reason: r.get(21)?,
        learned_interval_secs: r.get(22)?,
        hints: r.get(23)?,
        full_text: r.get(24)?,
        request: r.get(25)?,
        rules: r.get(26)?,
        page: r.get(27)?,
    }
    .into_feed())
}

fn attach_tags(conn: &Connection, feeds: &mut [Feed]) -> rusqlite::Result<()> {
    if feeds.is_empty() {
        return Ok(());
    }
    let mut by_id: HashMap<i64, Vec<String>> = HashMap::new();
    if feeds.len() == 1 {
        let mut stmt =
            conn.prepare_cached("SELECT feed_id, tag FROM feed_tag WHERE feed_id = ?1")?;
        let rows = stmt.query_map([feeds[0].id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (id, tag): (i64, String) = row?;
            by_id.entry(id).or_default().push(tag);
        }
    } else {
        let mut stmt = conn.prepare_cached("SELECT feed_id, tag FROM feed_tag")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (id, tag): (i64, String) = row?;
            by_id.entry(id).or_default().push(tag);
        }
    }
    for f in feeds {
        if let Some(mut tags) = by_id.remove(&f.id) {
            tags.sort();
            f.spec.tags = tags;
        }
    }
    Ok(())
}

pub(super) fn query_feeds(
    conn: &Connection,
    where_sql: &str,
    p: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<Feed>> {
    let sql = format!("SELECT {FEED_COLUMNS} FROM feed f {where_sql}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(p, feed_from_row)?;
    let mut feeds: Vec<Feed> = rows.collect::<rusqlite::Result<_>>()?;
    attach_tags(conn, &mut feeds)?;
    Ok(feeds)
}

pub(in crate::store) fn feeds(conn: &Connection) -> rusqlite::Result<Vec<Feed>> {
    query_feeds(conn, "ORDER BY f.id", &[])
}

pub(in crate::store) fn feed_by_url(
    conn: &Connection,
    url: &str,
) -> rusqlite::Result<Option<Feed>> {
    Ok(query_feeds(conn, "WHERE f.url = ?1", &[&url])?
        .into_iter()
        .next())
}

pub(in crate::store) fn feed_by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<Feed>> {
    Ok(query_feeds(conn, "WHERE f.id = ?1", &[&id])?
        .into_iter()
        .next())
}

/// Pauses, resumes (also a gone feed) or otherwise sets a feed's status;
/// a resumed feed is due now.
pub(in crate::store) fn set_status(
    conn: &Connection,
    feed_id: i64,
    status: FeedStatus,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE feed SET status = ?2,
             next_check_at = CASE WHEN ?2 = 'active' THEN ?3 ELSE next_check_at END,
             schedule_reason = CASE WHEN ?2 = 'active' THEN 'resumed' ELSE ?2 END
         WHERE id = ?1",
        params![feed_id, status.as_str(), ts(now)],
    )?;
    Ok(())
}
