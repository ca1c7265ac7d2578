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

use crate::model::Feed;
use crate::store::StoreError;

use super::feeds::query_feeds;
use super::{PgStore, from_ts, opt_ts, ts};

/// `schedule_reason` of a feed whose poll is in flight.
const LEASED: &str = "polling";

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
        let ids: Vec<i64> = tx
            .query(
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

    /// The earliest next check of any active feed.
    pub(in crate::store) async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT min(next_check_at) FROM feed WHERE status = 'active'",
                &[],
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
        tx.execute(
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
        client
            .execute(
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
        client
            .execute(
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
        let rows = client
            .query(
                "SELECT host, until FROM host_block WHERE until > $1",
                &[&ts(now)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, from_ts(r.try_get(1)?))))
            .collect()
    }
}
