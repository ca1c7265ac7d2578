//! The schedule and one poll's writes: which feeds are due, their leases
//! and deferrals, host blocks, and recording a poll (feed state,
//! validators, redirects, entries, the day's history) in one transaction,
//! polls grouped into one commit.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use std::time::Duration;

use crate::model::{Feed, PollOutcome, PollRecord, PollReport};

use super::entries::{KnownKeys, PollProbes, StoredRows, Tombstones, Upsert, upsert_entry};
use super::feeds::query_feeds;
use super::search::search_changed;
use super::{bump_revision, exec, from_ts, opt_ts, query_one, ts};

pub(in crate::store) fn due_feeds(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> rusqlite::Result<Vec<Feed>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    query_feeds(
        conn,
        // Ties (timestamps are whole seconds) go to the feed checked
        // longest ago, never-checked first: by id, a host with more due
        // feeds than slots would starve its higher ids forever.
        "WHERE f.status = 'active' AND f.next_check_at <= ?1
         ORDER BY f.next_check_at, f.last_checked_at, f.id LIMIT ?2",
        &[&ts(now), &limit],
    )
}

/// Due feeds, as [`due_feeds`], leased until `lease_until` in the same
/// transaction: the scheduler's one writer round trip per round.
pub(in crate::store) fn lease_due(
    conn: &mut Connection,
    now: DateTime<Utc>,
    limit: usize,
    lease_until: DateTime<Utc>,
) -> rusqlite::Result<Vec<Feed>> {
    let tx = conn.transaction()?;
    let due = due_feeds(&tx, now, limit)?;
    {
        // Marked as leased, so a lease a killed process leaves behind is
        // released at the next start instead of holding the feed back.
        let mut stmt = tx.prepare_cached(
            "UPDATE feed SET next_check_at = ?2, schedule_reason = ?3 WHERE id = ?1",
        )?;
        for feed in &due {
            stmt.execute(params![feed.id, ts(lease_until), LEASED])?;
        }
    }
    tx.commit()?;
    Ok(due)
}

pub(in crate::store) fn next_due_at(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let v: Option<i64> = conn.query_row(
        "SELECT min(next_check_at) FROM feed WHERE status = 'active'",
        [],
        |r| r.get(0),
    )?;
    Ok(opt_ts(v))
}

/// Spreads feeds that became due while the daemon was down over
/// `[now, now + window(feed))`, so a restart does not burst every host at
/// once. Feeds never polled yet keep their place: a new subscription should
/// show entries soon.
pub(in crate::store) fn spread_overdue(
    conn: &mut Connection,
    now: DateTime<Utc>,
    window: &dyn Fn(&Feed) -> Duration,
) -> rusqlite::Result<usize> {
    let overdue = query_feeds(
        conn,
        "WHERE f.status = 'active' AND f.next_check_at <= ?1 AND f.last_checked_at IS NOT NULL",
        &[&ts(now)],
    )?;
    let tx = conn.transaction()?;
    for feed in &overdue {
        let w = window(feed).as_secs().max(1);
        let at = ts(now) + fastrand::u64(0..w) as i64;
        tx.execute(
            "UPDATE feed SET next_check_at = ?2 WHERE id = ?1",
            params![feed.id, at],
        )?;
    }
    tx.commit()?;
    Ok(overdue.len())
}

/// Moves one feed's next check, e.g. to lease it while a poll is in flight.
pub(in crate::store) fn reschedule(
    conn: &Connection,
    feed_id: i64,
    at: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE feed SET next_check_at = ?2 WHERE id = ?1",
        params![feed_id, ts(at)],
    )?;
    Ok(())
}

/// Moves feeds that were leased but not polled this round (their host was
/// busy or blocked) to when they should be looked at again.
pub(in crate::store) fn defer(
    conn: &mut Connection,
    defers: &[(i64, DateTime<Utc>)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached("UPDATE feed SET next_check_at = ?2 WHERE id = ?1")?;
        for (id, at) in defers {
            stmt.execute(params![id, ts(*at)])?;
        }
    }
    tx.commit()
}

/// `schedule_reason` of a feed whose poll is in flight. The poll's own
/// record replaces it; one still there at start-up is a lease the previous
/// process never finished (killed, or its poll abandoned at shutdown).
const LEASED: &str = "polling";

/// Makes feeds whose poll a previous process left unfinished due now, so a
/// crash does not hold them back for the length of the lease. Returns how
/// many. Run at daemon start-up, before anything is dispatched.
pub(in crate::store) fn release_leases(
    conn: &Connection,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE feed SET next_check_at = min(next_check_at, ?1), schedule_reason = 'restarted'
         WHERE schedule_reason = ?2",
        params![ts(now), LEASED],
    )
}

/// Host blocks (429 Retry-After) still in force at `now`.
pub(in crate::store) fn host_blocks(
    conn: &Connection,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<(String, DateTime<Utc>)>> {
    let mut stmt = conn.prepare_cached("SELECT host, until FROM host_block WHERE until > ?1")?;
    let rows = stmt.query_map([ts(now)], |r| Ok((r.get(0)?, from_ts(r.get(1)?))))?;
    rows.collect()
}

/// Polls in a row that must show the same permanent redirect before the
/// feed's fetch URL follows it, so a one-off misconfiguration on the server
/// does not move a subscription.
pub const REDIRECT_CONFIRMATIONS: i64 = 3;

/// The schedule columns every poll sets, as `?2`..`?5` of the outcome's
/// own `UPDATE feed` (one statement per poll rather than three): the
/// current interval, why, the learned interval when there is one, and
/// whether a pending redirect is forgotten (the feed answered at its own
/// address).
/// A macro, not a `const`, so each statement stays one literal (`concat!`).
macro_rules! schedule_set {
    () => {
        "interval_secs_current = ?2, schedule_reason = ?3,
         learned_interval_secs = coalesce(?4, learned_interval_secs),
         redirect_url = CASE WHEN ?5 THEN NULL ELSE redirect_url END,
         redirect_count = CASE WHEN ?5 THEN 0 ELSE redirect_count END"
    };
}

/// Runs one outcome's `UPDATE feed`: `?1` is the feed, `?2`..`?5` the
/// schedule columns ([`schedule_set!`]), and `extra` binds `?6` on.
fn update_feed(
    tx: &Connection,
    sql: &str,
    rec: &PollRecord,
    extra: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<()> {
    let interval = rec.schedule.interval.as_secs() as i64;
    let learned = rec.learned_interval.map(|d| d.as_secs() as i64);
    let forget_redirect = rec.permanent_redirect.is_none()
        && matches!(
            rec.outcome,
            PollOutcome::Fetched { .. } | PollOutcome::NotModified { .. }
        );
    let head: [&dyn rusqlite::ToSql; 5] = [
        &rec.feed_id,
        &interval,
        &rec.schedule.reason,
        &learned,
        &forget_redirect,
    ];
    exec(
        tx,
        sql,
        rusqlite::params_from_iter(head.iter().chain(extra.iter())),
    )?;
    Ok(())
}

/// A permanent redirect seen, and a host's request to wait: the rest of a
/// poll's bookkeeping besides its `UPDATE feed`.
fn record_redirect_and_host(tx: &Connection, rec: &PollRecord) -> rusqlite::Result<()> {
    if let Some(target) = &rec.permanent_redirect {
        exec(
            tx,
            "UPDATE feed SET
                 redirect_count = CASE WHEN redirect_url IS ?2 THEN redirect_count + 1 ELSE 1 END,
                 redirect_url = ?2
             WHERE id = ?1",
            params![rec.feed_id, target],
        )?;
        // Confirmed: fetch from the new address from now on. Entries
        // stay attached to the same feed row, so they keep their ids.
        exec(
            tx,
            "UPDATE feed SET fetch_url = redirect_url, redirect_url = NULL, redirect_count = 0
             WHERE id = ?1 AND redirect_count >= ?2",
            params![rec.feed_id, REDIRECT_CONFIRMATIONS],
        )?;
    }
    if let Some((host, until)) = &rec.host_block {
        exec(
            tx,
            "INSERT INTO host_block (host, until) VALUES (?1, ?2)
             ON CONFLICT (host) DO UPDATE SET until = max(until, excluded.until)",
            params![host, ts(*until)],
        )?;
    }
    Ok(())
}

/// Records several polls in one transaction (group commit): a poll that
/// fails rolls back alone and gets its error, the others commit. `Err` only
/// when the transaction itself fails, and then none of them is recorded.
///
/// One commit per batch instead of per poll: the pages polls share (the
/// feed table, the right edge of the entry table and its indexes, `meta`)
/// are written to the WAL once per batch, not once per poll.
///
/// A poll's writes almost never fail on their own, so the batch is first
/// tried without a savepoint per poll: a savepoint costs little itself, but
/// releasing one makes FTS5 flush its pending terms as a tiny segment that
/// it must merge again later, which cost a fifth of the writer's time. Only
/// when a poll fails is the batch rolled back and replayed with savepoints.
pub(in crate::store) fn record_polls(
    conn: &mut Connection,
    recs: &[PollRecord],
) -> rusqlite::Result<Vec<rusqlite::Result<PollReport>>> {
    {
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(recs.len());
        let mut changes = Changes::default();
        let mut failed = false;
        for rec in recs {
            match write_poll(&tx, rec) {
                Ok((report, changed)) => {
                    changes.add(changed);
                    out.push(Ok(report));
                }
                // SQLite rolls the whole transaction back on some errors (a
                // full disk among them): then nothing of the batch stands,
                // and the batch fails with that error, whose kind callers use.
                Err(e) if tx.is_autocommit() => return Err(e),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            changes.record(&tx)?;
            tx.commit()?;
            return Ok(out);
        }
        // Dropping `tx` rolls the whole batch back.
    }
    record_polls_one_by_one(conn, recs)
}

/// [`record_polls`] with a savepoint per poll, for a batch in which some
/// poll fails: dropping its savepoint rolls back that poll only.
fn record_polls_one_by_one(
    conn: &mut Connection,
    recs: &[PollRecord],
) -> rusqlite::Result<Vec<rusqlite::Result<PollReport>>> {
    let mut tx = conn.transaction()?;
    let mut out = Vec::with_capacity(recs.len());
    let mut changes = Changes::default();
    for rec in recs {
        let sp = tx.savepoint()?;
        match write_poll(&sp, rec) {
            Ok((report, changed)) => {
                sp.commit()?;
                changes.add(changed);
                out.push(Ok(report));
            }
            Err(e) if sp.is_autocommit() => return Err(e),
            Err(e) => out.push(Err(e)),
        }
    }
    changes.record(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// What the polls of one transaction changed that readers cache by: the
/// output revision and the search revision move once per transaction,
/// not once per poll (a batch of a hundred polls ran four hundred
/// `UPDATE meta` statements for the same two rows).
#[derive(Default, Clone, Copy)]
struct Changes {
    /// Something an output shows (entries, a feed's title or site).
    outputs: bool,
    /// The search index gained entries.
    search: bool,
    /// The latest poll time among the changes.
    at: Option<DateTime<Utc>>,
}

impl Changes {
    fn add(&mut self, other: Changes) {
        self.outputs |= other.outputs;
        self.search |= other.search;
        self.at = self.at.max(other.at);
    }

    /// Moves the revisions, in the transaction that made the changes.
    fn record(&self, tx: &Connection) -> rusqlite::Result<()> {
        let Some(at) = self.at else { return Ok(()) };
        if self.outputs {
            bump_revision(tx, at)?;
        }
        if self.search {
            search_changed(tx, at)?;
        }
        Ok(())
    }
}

/// One poll's writes, inside the caller's transaction or savepoint; what
/// readers cache by is left to the caller ([`Changes::record`]).
fn write_poll(tx: &Connection, rec: &PollRecord) -> rusqlite::Result<(PollReport, Changes)> {
    let checked = ts(rec.checked_at);
    let next = ts(rec.schedule.next_check_at);
    let mut report = PollReport::default();
    let mut changes = Changes {
        at: Some(rec.checked_at),
        ..Changes::default()
    };
    record_redirect_and_host(tx, rec)?;
    match &rec.outcome {
        PollOutcome::Deferred => {
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET next_check_at = ?6, ",
                    schedule_set!(),
                    " WHERE id = ?1"
                ),
                rec,
                &[&next],
            )?;
        }
        PollOutcome::Gone => {
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET status = 'gone', last_checked_at = ?6, last_status = 410,
                         last_error = '410 Gone: the server says this feed was removed for good',
                         next_check_at = ?7, ",
                    schedule_set!(),
                    "
                     WHERE id = ?1"
                ),
                rec,
                &[&checked, &next],
            )?;
        }
        PollOutcome::NotModified { validators } => {
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET last_checked_at = ?6, last_success_at = ?6, last_status = 304,
                         last_error = NULL, error_count = 0, next_check_at = ?7,
                         etag = coalesce(?8, etag), last_modified = coalesce(?9, last_modified),
                         ",
                    schedule_set!(),
                    "
                     WHERE id = ?1"
                ),
                rec,
                &[&checked, &next, &validators.etag, &validators.last_modified],
            )?;
        }
        PollOutcome::Failed { status, error } => {
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET last_checked_at = ?6, last_status = ?7, last_error = ?8,
                         error_count = error_count + 1, next_check_at = ?9, ",
                    schedule_set!(),
                    "
                     WHERE id = ?1"
                ),
                rec,
                &[&checked, &status, &error, &next],
            )?;
        }
        PollOutcome::Fetched {
            status,
            validators,
            feed,
        } => {
            // A feed never read before (no success recorded) has no
            // stored entries: only a recorded `200` stores them, and it
            // sets `last_success_at`, which nothing clears.
            let (feed_url, old_title, old_site, never_read): (
                String,
                Option<String>,
                Option<String>,
                bool,
            ) = query_one(
                tx,
                "SELECT url, site_title, site_url, last_success_at IS NULL FROM feed WHERE id = ?1",
                [rec.feed_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET last_checked_at = ?6, last_success_at = ?6, last_status = ?7,
                         last_error = NULL, error_count = 0, next_check_at = ?8,
                         etag = ?9, last_modified = ?10,
                         site_title = coalesce(?11, site_title), site_url = coalesce(?12, site_url),
                         hints = ?13, ",
                    schedule_set!(),
                    "
                     WHERE id = ?1"
                ),
                rec,
                &[
                    &checked,
                    &status,
                    &next,
                    &validators.etag,
                    &validators.last_modified,
                    &feed.title,
                    &feed.site_url,
                    &serde_json::to_string(&feed.hints).ok(),
                ],
            )?;
            let meta_changed = (feed.title.is_some() && feed.title != old_title)
                || (feed.site_url.is_some() && feed.site_url != old_site);
            let mut probes = PollProbes {
                stored: if never_read {
                    StoredRows::none(rec.feed_id, &feed.entries)
                } else {
                    StoredRows::of(rec.feed_id, &feed.entries)
                },
                known: KnownKeys::of(&feed.entries),
                tombstones: Tombstones::of(rec.feed_id),
                indexed: false,
            };
            for entry in &feed.entries {
                match upsert_entry(
                    tx,
                    rec.feed_id,
                    &feed_url,
                    entry,
                    &mut probes,
                    rec.checked_at,
                )? {
                    Upsert::New(entry_id) => {
                        report.new += 1;
                        if rec.full_text
                            && let Some(link) = &entry.link
                        {
                            exec(
                                tx,
                                "INSERT OR IGNORE INTO article (entry_id, feed_id, url, status, next_attempt_at)
                                 VALUES (?1, ?2, ?3, 'pending', ?4)",
                                params![entry_id, rec.feed_id, link, checked],
                            )?;
                            report.articles_queued += 1;
                        }
                    }
                    Upsert::Updated => report.updated += 1,
                    Upsert::Merged => report.merged += 1,
                    Upsert::Unchanged | Upsert::Tombstoned => {}
                }
            }
            changes.outputs |= meta_changed || report.new > 0 || report.updated > 0;
            changes.search |= probes.indexed;
        }
    }
    record_day(tx, rec, &report)?;
    Ok((report, changes))
}

/// The UTC day (days since 1970-01-01) of `t`, as `feed_day` counts them.
pub(in crate::store) fn day_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(86_400)
}

/// Counts the poll in the feed's history for the status page, in the
/// poll's own transaction. A deferred poll sent nothing and is not counted.
fn record_day(tx: &Connection, rec: &PollRecord, report: &PollReport) -> rusqlite::Result<()> {
    let (not_modified, errors) = match rec.outcome {
        PollOutcome::Deferred => return Ok(()),
        PollOutcome::NotModified { .. } => (1, 0),
        PollOutcome::Failed { .. } | PollOutcome::Gone => (0, 1),
        PollOutcome::Fetched { .. } => (0, 0),
    };
    exec(
        tx,
        "INSERT INTO feed_day (feed_id, day, polls, not_modified, errors, new_entries)
         VALUES (?1, ?2, 1, ?3, ?4, ?5)
         ON CONFLICT (feed_id, day) DO UPDATE SET
             polls = polls + 1,
             not_modified = not_modified + excluded.not_modified,
             errors = errors + excluded.errors,
             new_entries = new_entries + excluded.new_entries",
        params![
            rec.feed_id,
            day_of(rec.checked_at),
            not_modified,
            errors,
            report.new as i64
        ],
    )?;
    Ok(())
}
