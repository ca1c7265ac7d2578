//! What `status` shows, read on PostgreSQL in one repeatable-read
//! transaction, so the numbers agree.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::store::{DbSize, DedupPass, FeedDay, StatusSnapshot, StoreError};

use super::feeds::query_feeds;
use super::retention::live_bytes_sql;
use super::{PgStore, from_ts, ts};

impl PgStore {
    /// Everything `status` shows, with poll history from `days` days ago.
    /// The size is the database's on disk (`pg_database_size`), and the
    /// bytes of its live rows, which the size cap measures
    /// ([`PgStore::db_size`]).
    pub(in crate::store) async fn status(
        &self,
        days: i64,
        now: DateTime<Utc>,
    ) -> Result<StatusSnapshot, StoreError> {
        let since_day = ts(now).div_euclid(86_400) - days + 1;
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let feeds = query_feeds(&tx, "ORDER BY f.id", &[]).await?;
        let counts = tx
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM entry),
                        (SELECT count(*) FROM tombstone),
                        (SELECT count(*) FROM article WHERE status = 'pending'),
                        (SELECT count(*) FROM article WHERE status = 'failed'),
                        (SELECT count(*) FROM search_pending),
                        pg_database_size(current_database()),
                        (SELECT value FROM meta WHERE key = 'housekeeping_at'),
                        (SELECT value FROM meta WHERE key = 'dedup_pass_done_at'),
                        EXISTS (SELECT 1 FROM meta WHERE key = 'dedup_pass_next'),
                        ({})::BIGINT",
                    live_bytes_sql()
                ),
                &[],
            )
            .await?;
        let n = |i: usize| -> Result<u64, tokio_postgres::Error> {
            Ok(counts.try_get::<_, i64>(i)?.max(0) as u64)
        };
        let size = n(5)?;
        let done_at: Option<i64> = counts.try_get(7)?;
        let pending: bool = counts.try_get(8)?;
        // A database created here never needs the pass: it is done unless
        // a move from SQLite left it to run.
        let dedup_pass = match (pending, done_at) {
            (true, _) => DedupPass::Pending,
            (false, Some(at)) => DedupPass::Done(from_ts(at)),
            (false, None) => DedupPass::Done(DateTime::UNIX_EPOCH),
        };
        let mut history: HashMap<i64, Vec<FeedDay>> = HashMap::new();
        for r in tx
            .query(
                "SELECT feed_id, day, polls, not_modified, errors, new_entries FROM feed_day
                 WHERE day >= $1 ORDER BY feed_id, day",
                &[&since_day],
            )
            .await?
        {
            let c = |i: usize| -> Result<u32, tokio_postgres::Error> {
                Ok(r.try_get::<_, i64>(i)?.clamp(0, u32::MAX as i64) as u32)
            };
            history.entry(r.try_get(0)?).or_default().push(FeedDay {
                day: r.try_get(1)?,
                polls: c(2)?,
                not_modified: c(3)?,
                errors: c(4)?,
                new_entries: c(5)?,
            });
        }
        tx.commit().await?;
        Ok(StatusSnapshot {
            feeds,
            entries: n(0)?,
            tombstones: n(1)?,
            articles_pending: n(2)?,
            articles_failed: n(3)?,
            search_backlog: n(4)?,
            size: DbSize {
                file_bytes: size,
                used_bytes: n(9)?,
                incremental_vacuum: false,
            },
            housekept_at: counts.try_get::<_, Option<i64>>(6)?.map(from_ts),
            dedup_pass,
            history,
        })
    }
}
