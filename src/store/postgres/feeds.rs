//! Subscriptions on PostgreSQL: feed rows, their tags and settings;
//! adding, removing and syncing them with the config; reading them back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::model::{Feed, FeedOrigin, FeedSpec, FeedStatus, PageRule};
use crate::store::rows::{FEED_COLUMNS, FeedColumns};
use crate::store::{AddOutcome, StoreError, SyncReport};

use super::{PgStore, bump_revision, exec, query, query_opt, ts};

/// A [`FEED_COLUMNS`] row as a feed (without its tags).
fn feed_from_row(r: &Row) -> Result<Feed, tokio_postgres::Error> {
    Ok(FeedColumns {
        id: r.try_get(0)?,
        url: r.try_get(1)?,
        title: r.try_get(2)?,
        interval_secs: r.try_get(3)?,
        origin: r.try_get(4)?,
        site_title: r.try_get(5)?,
        site_url: r.try_get(6)?,
        etag: r.try_get(7)?,
        last_modified: r.try_get(8)?,
        next_check_at: r.try_get(9)?,
        last_checked_at: r.try_get(10)?,
        last_success_at: r.try_get(11)?,
        last_status: r.try_get(12)?,
        last_error: r.try_get(13)?,
        error_count: r.try_get(14)?,
        entry_count: r.try_get(15)?,
        status: r.try_get(16)?,
        fetch_url: r.try_get(17)?,
        redirect_url: r.try_get(18)?,
        redirect_count: r.try_get(19)?,
        current_interval_secs: r.try_get(20)?,
        schedule_reason: r.try_get(21)?,
        learned_interval_secs: r.try_get(22)?,
        hints: r.try_get(23)?,
        full_text: r.try_get(24)?,
        request: r.try_get(25)?,
        rules: r.try_get(26)?,
        page: r.try_get(27)?,
    }
    .into_feed())
}

/// Feeds matching `where_sql` (which may order and limit), with their tags.
pub(super) async fn query_feeds(
    client: &impl GenericClient,
    where_sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Feed>, tokio_postgres::Error> {
    let sql = format!("SELECT {FEED_COLUMNS} FROM feed f {where_sql}");
    let rows = query(client, &sql, params).await?;
    let mut feeds = rows
        .iter()
        .map(feed_from_row)
        .collect::<Result<Vec<Feed>, _>>()?;
    if feeds.is_empty() {
        return Ok(feeds);
    }
    let ids: Vec<i64> = feeds.iter().map(|f| f.id).collect();
    let mut by_id: HashMap<i64, Vec<String>> = HashMap::new();
    for row in query(
        client,
        "SELECT feed_id, tag FROM feed_tag WHERE feed_id = ANY($1)",
        &[&ids],
    )
    .await?
    {
        by_id
            .entry(row.try_get(0)?)
            .or_default()
            .push(row.try_get(1)?);
    }
    for f in &mut feeds {
        if let Some(mut tags) = by_id.remove(&f.id) {
            // Byte order, as the SQLite backend gives them, whatever the
            // database's collation.
            tags.sort();
            f.spec.tags = tags;
        }
    }
    Ok(feeds)
}

async fn set_tags(
    tx: &Transaction<'_>,
    feed_id: i64,
    tags: &[String],
) -> Result<(), tokio_postgres::Error> {
    exec(tx, "DELETE FROM feed_tag WHERE feed_id = $1", &[&feed_id]).await?;
    exec(
        tx,
        "INSERT INTO feed_tag (feed_id, tag) SELECT $1, unnest($2::text[])
         ON CONFLICT DO NOTHING",
        &[&feed_id, &tags],
    )
    .await?;
    Ok(())
}

fn interval_secs(spec: &FeedSpec) -> Option<i64> {
    spec.interval.map(|d| d.as_secs() as i64)
}

/// Inserts a subscription unless its URL is there; whether it did.
async fn insert_feed(
    tx: &Transaction<'_>,
    spec: &FeedSpec,
    origin: FeedOrigin,
    now: DateTime<Utc>,
) -> Result<bool, tokio_postgres::Error> {
    let row = query_opt(
        tx,
        "INSERT INTO feed (url, title, interval_secs, origin, next_check_at, created_at,
                               full_text, request, rules, page)
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)
             ON CONFLICT (url) DO NOTHING
             RETURNING id",
        &[
            &spec.url,
            &spec.title,
            &interval_secs(spec),
            &origin.as_str(),
            &ts(now),
            &spec.full_text,
            &spec.request.to_json(),
            &spec.rules.to_json(),
            &spec.page.as_ref().map(PageRule::to_json),
        ],
    )
    .await?;
    match row {
        Some(row) => {
            set_tags(tx, row.try_get(0)?, &spec.tags).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Removes a feed and every entry no other feed carries.
async fn delete_feed(
    tx: &Transaction<'_>,
    feed_id: i64,
    now: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    exec(
        tx,
        "DELETE FROM entry WHERE id IN (
             SELECT s.entry_id FROM entry_source s WHERE s.feed_id = $1
               AND NOT EXISTS (SELECT 1 FROM entry_source o
                               WHERE o.entry_id = s.entry_id AND o.feed_id <> $1))",
        &[&feed_id],
    )
    .await?;
    exec(tx, "DELETE FROM feed WHERE id = $1", &[&feed_id]).await?;
    bump_revision(tx, now).await
}

impl PgStore {
    pub(in crate::store) async fn add_feeds_with_progress(
        &self,
        specs: Vec<FeedSpec>,
        origin: FeedOrigin,
        now: DateTime<Utc>,
        mut progress: impl FnMut(usize) + Send + 'static,
    ) -> Result<Vec<AddOutcome>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut out = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            progress(i);
            out.push(if insert_feed(&tx, spec, origin, now).await? {
                AddOutcome::Added
            } else {
                AddOutcome::Exists
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Makes the config-owned feeds match `specs`, in one transaction; see
    /// the SQLite backend's `sync_config_feeds`. The feed table is locked
    /// for the sync, so two nodes reloading at once apply one after the
    /// other.
    pub(in crate::store) async fn sync_config_feeds(
        &self,
        specs: Vec<FeedSpec>,
        now: DateTime<Utc>,
    ) -> Result<SyncReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        exec(&tx, "LOCK TABLE feed IN SHARE ROW EXCLUSIVE MODE", &[]).await?;
        let mut report = SyncReport::default();
        let mut wanted: HashMap<&str, &FeedSpec> =
            specs.iter().map(|s| (s.url.as_str(), s)).collect();
        let existing = query(&tx, "SELECT id, url, origin FROM feed", &[]).await?;
        for row in existing {
            let (id, url, origin): (i64, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            match wanted.remove(url.as_str()) {
                Some(spec) => {
                    let changed = exec(
                        &tx,
                        "UPDATE feed SET title = $2, interval_secs = $3, full_text = $4,
                                 request = $5, rules = $6, page = $7, origin = 'config'
                             WHERE id = $1 AND (title IS DISTINCT FROM $2
                                 OR interval_secs IS DISTINCT FROM $3
                                 OR full_text IS DISTINCT FROM $4
                                 OR request IS DISTINCT FROM $5
                                 OR rules IS DISTINCT FROM $6
                                 OR page IS DISTINCT FROM $7 OR origin <> 'config')",
                        &[
                            &id,
                            &spec.title,
                            &interval_secs(spec),
                            &spec.full_text,
                            &spec.request.to_json(),
                            &spec.rules.to_json(),
                            &spec.page.as_ref().map(PageRule::to_json),
                        ],
                    )
                    .await?;
                    let mut old_tags: Vec<String> =
                        query(&tx, "SELECT tag FROM feed_tag WHERE feed_id = $1", &[&id])
                            .await?
                            .iter()
                            .map(|r| r.try_get(0))
                            .collect::<Result<_, _>>()?;
                    old_tags.sort();
                    let mut new_tags = spec.tags.clone();
                    new_tags.sort();
                    new_tags.dedup();
                    if old_tags != new_tags {
                        set_tags(&tx, id, &spec.tags).await?;
                    }
                    if changed > 0 || old_tags != new_tags {
                        report.updated += 1;
                        // Titles and tags show in the output.
                        bump_revision(&tx, now).await?;
                    }
                }
                None if origin == FeedOrigin::Config.as_str() => {
                    delete_feed(&tx, id, now).await?;
                    report.removed += 1;
                }
                None => {}
            }
        }
        // Insert in config order so ids follow the file.
        for spec in &specs {
            if wanted.contains_key(spec.url.as_str())
                && insert_feed(&tx, spec, FeedOrigin::Config, now).await?
            {
                report.added += 1;
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    pub(in crate::store) async fn remove_feed(
        &self,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Feed>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(feed) = query_feeds(&tx, "WHERE f.url = $1 FOR UPDATE", &[&url])
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        delete_feed(&tx, feed.id, now).await?;
        tx.commit().await?;
        Ok(Some(feed))
    }

    pub(in crate::store) async fn feeds(&self) -> Result<Vec<Feed>, StoreError> {
        let client = self.client().await?;
        Ok(query_feeds(&client, "ORDER BY f.id", &[]).await?)
    }

    pub(in crate::store) async fn feed_by_url(
        &self,
        url: &str,
    ) -> Result<Option<Feed>, StoreError> {
        let client = self.client().await?;
        Ok(query_feeds(&client, "WHERE f.url = $1", &[&url])
            .await?
            .into_iter()
            .next())
    }

    pub(in crate::store) async fn feed_by_id(&self, id: i64) -> Result<Option<Feed>, StoreError> {
        let client = self.client().await?;
        Ok(query_feeds(&client, "WHERE f.id = $1", &[&id])
            .await?
            .into_iter()
            .next())
    }

    /// Pauses, resumes (also a gone feed) or otherwise sets a feed's
    /// status; a resumed feed is due now.
    pub(in crate::store) async fn set_status(
        &self,
        feed_id: i64,
        status: FeedStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        exec(
            &client,
            "UPDATE feed SET status = $2,
                     next_check_at = CASE WHEN $2 = 'active' THEN $3 ELSE next_check_at END,
                     schedule_reason = CASE WHEN $2 = 'active' THEN 'resumed' ELSE $2 END
                 WHERE id = $1",
            &[&feed_id, &status.as_str(), &ts(now)],
        )
        .await?;
        Ok(())
    }
}
