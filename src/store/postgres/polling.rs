//! The schedule on PostgreSQL: which feeds are due, their leases and
//! deferrals, host blocks.
//!
//! A lease is a claim several nodes respect: the due feeds are locked with
//! `FOR UPDATE SKIP LOCKED` (a feed another node is leasing this moment is
//! skipped, not waited for), and their `next_check_at` moves to the lease's
//! end, so no node sees them due again until the poll is recorded or the
//! lease runs out: a node that dies mid-poll leaves its feeds to the others
//! after at most the lease time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::model::{Feed, PollOutcome, PollRecord, PollReport};
use crate::store::StoreError;

use super::entries::{search_changed, store_entries};
use super::feeds::query_feeds;
use super::{PgStore, bump_revision, exec, from_ts, opt_ts, query, query_one, ts};

/// `schedule_reason` of a feed whose poll is in flight.
const LEASED: &str = "polling";

/// Seconds after which a node looks again at feeds another node holds:
/// their polls usually end well before their leases.
const LEASED_LOOK: i64 = 1;

impl PgStore {
    /// Due feeds (most overdue first; ties to the feed checked longest
    /// ago, never-checked first, then by id) leased until `lease_until`,
    /// in one transaction.
    pub(in crate::store) async fn lease_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Feed>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids: Vec<i64> = query(
            &tx,
            "WITH due AS (
                     SELECT id FROM feed
                     WHERE status = 'active' AND next_check_at <= $1
                     ORDER BY next_check_at, last_checked_at NULLS FIRST, id
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 UPDATE feed f SET next_check_at = $3, schedule_reason = $4
                 FROM due WHERE f.id = due.id
                 RETURNING f.id",
            &[&ts(now), &limit, &ts(lease_until), &LEASED],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        // Read back in due order, as they were before the lease moved them.
        let mut feeds = query_feeds(&tx, "WHERE f.id = ANY($1)", &[&ids]).await?;
        tx.commit().await?;
        let order: std::collections::HashMap<i64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        feeds.sort_by_key(|f| order.get(&f.id).copied().unwrap_or(usize::MAX));
        Ok(feeds)
    }

    /// The earliest next check of any active feed; a feed leased now
    /// counts as due within [`LEASED_LOOK`]. Another node's poll ends
    /// long before its lease and sets the feed's real next check, which
    /// nothing tells this node: taking the lease's end as the next due
    /// time left a node that found everything leased idle for the
    /// dispatch loop's longest wait (30 s) while the others did the work.
    pub(in crate::store) async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.client().await?;
        let soon = ts(Utc::now()) + LEASED_LOOK;
        let row = client
            .query_one(
                "SELECT min(CASE WHEN schedule_reason = $1 THEN least(next_check_at, $2)
                                 ELSE next_check_at END)
                 FROM feed WHERE status = 'active'",
                &[&LEASED, &soon],
            )
            .await?;
        Ok(opt_ts(row.try_get(0)?))
    }

    /// Spreads feeds that fell due while no node ran over
    /// `[now, now + window(feed))`; feeds never polled keep their place.
    /// Feeds another node is leasing are skipped.
    pub(in crate::store) async fn spread_overdue(
        &self,
        now: DateTime<Utc>,
        window: impl Fn(&Feed) -> Duration + Send + 'static,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let overdue = query_feeds(
            &tx,
            "WHERE f.status = 'active' AND f.next_check_at <= $1
               AND f.last_checked_at IS NOT NULL
             FOR UPDATE SKIP LOCKED",
            &[&ts(now)],
        )
        .await?;
        let (ids, ats): (Vec<i64>, Vec<i64>) = overdue
            .iter()
            .map(|feed| {
                let w = window(feed).as_secs().max(1);
                (feed.id, ts(now) + fastrand::u64(0..w) as i64)
            })
            .unzip();
        exec(
            &tx,
            "UPDATE feed f SET next_check_at = d.at
             FROM unnest($1::bigint[], $2::bigint[]) AS d(id, at) WHERE f.id = d.id",
            &[&ids, &ats],
        )
        .await?;
        tx.commit().await?;
        Ok(overdue.len())
    }

    /// On SQLite a lease left at start-up belongs to a process that died,
    /// and is released. Here it may belong to another node polling this
    /// very moment: it is left to run out (`next_check_at` is its end), so
    /// a dead node's feeds are due again after at most the lease time.
    /// Returns 0: nothing is released early.
    pub(in crate::store) async fn release_leases(
        &self,
        _now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Moves leased feeds that were not polled this round to a later check.
    pub(in crate::store) async fn defer(
        &self,
        defers: Vec<(i64, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let (ids, ats): (Vec<i64>, Vec<i64>) = defers.iter().map(|(id, at)| (*id, ts(*at))).unzip();
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE feed f SET next_check_at = d.at
                 FROM unnest($1::bigint[], $2::bigint[]) AS d(id, at) WHERE f.id = d.id",
            &[&ids, &ats],
        )
        .await?;
        Ok(())
    }

    /// Moves one feed's next check.
    pub(in crate::store) async fn reschedule(
        &self,
        feed_id: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE feed SET next_check_at = $2 WHERE id = $1",
            &[&feed_id, &ts(at)],
        )
        .await?;
        Ok(())
    }

    /// Host blocks (429 Retry-After) still in force at `now`.
    pub(in crate::store) async fn host_blocks(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT host, until FROM host_block WHERE until > $1",
            &[&ts(now)],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, from_ts(r.try_get(1)?))))
            .collect()
    }
}

/// Polls in a row that must show the same permanent redirect before the
/// feed's fetch URL follows it (as on SQLite).
const REDIRECT_CONFIRMATIONS: i64 = crate::store::REDIRECT_CONFIRMATIONS;

/// The schedule columns every poll sets, as `$2`..`$5` of the outcome's
/// `UPDATE feed`: the current interval, why, the learned interval when
/// there is one, and whether a pending redirect is forgotten.
macro_rules! schedule_set {
    () => {
        "interval_secs_current = $2, schedule_reason = $3,
         learned_interval_secs = coalesce($4, learned_interval_secs),
         redirect_url = CASE WHEN $5 THEN NULL ELSE redirect_url END,
         redirect_count = CASE WHEN $5 THEN 0 ELSE redirect_count END"
    };
}

/// Runs one outcome's `UPDATE feed`: `$1` the feed, `$2`..`$5` the
/// schedule columns, `extra` from `$6` on.
async fn update_feed(
    tx: &Transaction<'_>,
    sql: &str,
    rec: &PollRecord,
    extra: &[&(dyn ToSql + Sync)],
) -> Result<(), tokio_postgres::Error> {
    let interval = rec.schedule.interval.as_secs() as i64;
    let learned = rec.learned_interval.map(|d| d.as_secs() as i64);
    let forget_redirect = rec.permanent_redirect.is_none()
        && matches!(
            rec.outcome,
            PollOutcome::Fetched { .. } | PollOutcome::NotModified { .. }
        );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &rec.feed_id,
        &interval,
        &rec.schedule.reason,
        &learned,
        &forget_redirect,
    ];
    params.extend_from_slice(extra);
    exec(tx, sql, &params).await?;
    Ok(())
}

/// A permanent redirect seen, and a host's request to wait.
async fn record_redirect_and_host(
    tx: &Transaction<'_>,
    rec: &PollRecord,
) -> Result<(), tokio_postgres::Error> {
    if let Some(target) = &rec.permanent_redirect {
        exec(
            tx,
            "UPDATE feed SET
                 redirect_count = CASE WHEN redirect_url IS NOT DISTINCT FROM $2
                                       THEN redirect_count + 1 ELSE 1 END,
                 redirect_url = $2
             WHERE id = $1",
            &[&rec.feed_id, target],
        )
        .await?;
        exec(
            tx,
            "UPDATE feed SET fetch_url = redirect_url, redirect_url = NULL, redirect_count = 0
             WHERE id = $1 AND redirect_count >= $2",
            &[&rec.feed_id, &REDIRECT_CONFIRMATIONS],
        )
        .await?;
    }
    if let Some((host, until)) = &rec.host_block {
        exec(
            tx,
            "INSERT INTO host_block (host, until) VALUES ($1, $2)
             ON CONFLICT (host) DO UPDATE SET until = greatest(host_block.until, excluded.until)",
            &[host, &ts(*until)],
        )
        .await?;
    }
    Ok(())
}

/// Counts the poll in the feed's history (a deferred poll sent nothing).
async fn record_day(
    tx: &Transaction<'_>,
    rec: &PollRecord,
    report: &PollReport,
) -> Result<(), tokio_postgres::Error> {
    let (not_modified, errors): (i64, i64) = match rec.outcome {
        PollOutcome::Deferred => return Ok(()),
        PollOutcome::NotModified { .. } => (1, 0),
        PollOutcome::Failed { .. } | PollOutcome::Gone => (0, 1),
        PollOutcome::Fetched { .. } => (0, 0),
    };
    exec(
        tx,
        "INSERT INTO feed_day (feed_id, day, polls, not_modified, errors, new_entries)
         VALUES ($1, $2, 1, $3, $4, $5)
         ON CONFLICT (feed_id, day) DO UPDATE SET
             polls = feed_day.polls + 1,
             not_modified = feed_day.not_modified + excluded.not_modified,
             errors = feed_day.errors + excluded.errors,
             new_entries = feed_day.new_entries + excluded.new_entries",
        &[
            &rec.feed_id,
            &ts(rec.checked_at).div_euclid(86_400),
            &not_modified,
            &errors,
            &(report.new as i64),
        ],
    )
    .await?;
    Ok(())
}

/// One poll's writes, in the caller's transaction.
async fn write_poll(
    tx: &Transaction<'_>,
    rec: &PollRecord,
) -> Result<PollReport, tokio_postgres::Error> {
    let checked = ts(rec.checked_at);
    let next = ts(rec.schedule.next_check_at);
    let mut report = PollReport::default();
    record_redirect_and_host(tx, rec).await?;
    match &rec.outcome {
        PollOutcome::Deferred => {
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET next_check_at = $6, ",
                    schedule_set!(),
                    " WHERE id = $1"
                ),
                rec,
                &[&next],
            )
            .await?;
        }
        PollOutcome::Gone => {
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET status = 'gone', last_checked_at = $6, last_status = 410,
                         last_error = '410 Gone: the server says this feed was removed for good',
                         next_check_at = $7, ",
                    schedule_set!(),
                    " WHERE id = $1"
                ),
                rec,
                &[&checked, &next],
            )
            .await?;
        }
        PollOutcome::NotModified { validators } => {
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET last_checked_at = $6, last_success_at = $6, last_status = 304,
                         last_error = NULL, error_count = 0, next_check_at = $7,
                         etag = coalesce($8, etag), last_modified = coalesce($9, last_modified), ",
                    schedule_set!(),
                    " WHERE id = $1"
                ),
                rec,
                &[&checked, &next, &validators.etag, &validators.last_modified],
            )
            .await?;
        }
        PollOutcome::Failed { status, error } => {
            let status = status.map(i64::from);
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET last_checked_at = $6, last_status = $7, last_error = $8,
                         error_count = error_count + 1, next_check_at = $9, ",
                    schedule_set!(),
                    " WHERE id = $1"
                ),
                rec,
                &[&checked, &status, error, &next],
            )
            .await?;
        }
        PollOutcome::Fetched {
            status,
            validators,
            feed,
        } => {
            let row = query_one(
                tx,
                "SELECT url, site_title, site_url FROM feed WHERE id = $1",
                &[&rec.feed_id],
            )
            .await?;
            let (feed_url, old_title, old_site): (String, Option<String>, Option<String>) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let status = i64::from(*status);
            let hints = serde_json::to_string(&feed.hints).ok();
            update_feed(
                tx,
                concat!(
                    "UPDATE feed SET last_checked_at = $6, last_success_at = $6, last_status = $7,
                         last_error = NULL, error_count = 0, next_check_at = $8,
                         etag = $9, last_modified = $10,
                         site_title = coalesce($11, site_title),
                         site_url = coalesce($12, site_url), hints = $13, ",
                    schedule_set!(),
                    " WHERE id = $1"
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
                    &hints,
                ],
            )
            .await?;
            let meta_changed = (feed.title.is_some() && feed.title != old_title)
                || (feed.site_url.is_some() && feed.site_url != old_site);
            let indexed = store_entries(
                tx,
                rec.feed_id,
                &feed_url,
                &feed.entries,
                rec.checked_at,
                rec.full_text,
                &mut report,
            )
            .await?;
            if meta_changed || report.new > 0 || report.updated > 0 {
                bump_revision(tx, rec.checked_at).await?;
            }
            if indexed {
                search_changed(tx, rec.checked_at).await?;
            }
        }
    }
    record_day(tx, rec, &report).await?;
    Ok(report)
}

impl PgStore {
    /// Records one poll (feed state, validators, entries, stories, the
    /// day's history) in one transaction: all of it or nothing.
    pub(in crate::store) async fn record_poll(
        &self,
        rec: PollRecord,
    ) -> Result<PollReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let report = write_poll(&tx, &rec).await?;
        tx.commit().await?;
        self.note_poll();
        self.index_work.notify_one();
        Ok(report)
    }
}
