//! The article queue on PostgreSQL: pages due for a fetch, their leases,
//! and recording an attempt (the article, its evidence, and the stories
//! it joins).

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::model::{ArticleJob, ArticleOutcome, ArticleRecord, TextPrint};
use crate::store::stories;
use crate::store::{ArticleState, StoreError};

use super::entries::queue_for_index;
use super::stories::{lock_keys, unite};
use super::{PgStore, bump_revision, exec, opt_ts, query_opt, ts};

type PgResult<T> = Result<T, tokio_postgres::Error>;

fn parse_list(s: &str) -> Vec<String> {
    // A malformed column loses only that list, never the whole row.
    serde_json::from_str(s).unwrap_or_default()
}

/// Stores the analysis of `entry_id`'s own article (replacing an earlier
/// one of the same article) and its candidate keys.
async fn store_print(
    tx: &Transaction<'_>,
    entry_id: i64,
    print: &TextPrint,
    page_url: &str,
) -> PgResult<()> {
    exec(
        tx,
        "DELETE FROM entry_print WHERE entry_id = $1 AND origin = $1",
        &[&entry_id],
    )
    .await?;
    exec(
        tx,
        "INSERT INTO entry_print (entry_id, origin, site, version, words, simhash, minhash,
             published)
         VALUES ($1, $1, $2, $3, $4, $5, $6, $7)",
        &[
            &entry_id,
            &stories::site_of(page_url),
            &i64::from(print.version),
            &i64::from(print.words),
            &(print.simhash as i64),
            &print.minhash,
            &print.published,
        ],
    )
    .await?;
    let keys: Vec<i64> = print.lsh_keys.iter().map(|k| *k as i64).collect();
    exec(
        tx,
        "INSERT INTO entry_lsh (lsh_key, entry_id) SELECT unnest($1::bigint[]), $2
         ON CONFLICT DO NOTHING",
        &[&keys, &entry_id],
    )
    .await?;
    Ok(())
}

/// The columns [`article_job`] reads, from `article a JOIN entry e`.
pub(super) const ARTICLE_JOB_COLUMNS: &str =
    "a.entry_id, a.feed_id, a.url, e.title, e.authors, e.content_html, a.attempts, e.published_at";

/// An article job from a row of [`ARTICLE_JOB_COLUMNS`].
pub(super) fn article_job(r: &tokio_postgres::Row) -> Result<ArticleJob, StoreError> {
    Ok(ArticleJob {
        entry_id: r.try_get(0)?,
        feed_id: r.try_get(1)?,
        url: r.try_get(2)?,
        title: r.try_get(3)?,
        authors: parse_list(&r.try_get::<_, String>(4)?),
        feed_html: r.try_get(5)?,
        attempts: r.try_get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
        published: r.try_get(7)?,
    })
}

impl PgStore {
    /// Claims up to `limit` articles due at `now` (oldest first, from feeds
    /// still polled) and leases them until `until`, in one transaction: the
    /// rows are locked as they are chosen (`FOR UPDATE … SKIP LOCKED`), so
    /// nodes claiming at the same moment each get other articles, and a
    /// lease that ran out (its node died) makes the article due again.
    pub(in crate::store) async fn claim_articles(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        until: DateTime<Utc>,
    ) -> Result<Vec<ArticleJob>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {ARTICLE_JOB_COLUMNS}
                     FROM article a
                     JOIN entry e ON e.id = a.entry_id
                     JOIN feed f ON f.id = a.feed_id AND f.status = 'active'
                     WHERE a.status = 'pending' AND a.next_attempt_at <= $1
                     ORDER BY a.next_attempt_at, a.entry_id
                     LIMIT $2
                     FOR UPDATE OF a SKIP LOCKED"
                ),
                &[&ts(now), &limit],
            )
            .await?;
        let jobs = rows
            .iter()
            .map(article_job)
            .collect::<Result<Vec<_>, StoreError>>()?;
        let ids: Vec<i64> = jobs.iter().map(|j| j.entry_id).collect();
        exec(
            &tx,
            "UPDATE article SET next_attempt_at = $2 WHERE entry_id = ANY($1)",
            &[&ids, &ts(until)],
        )
        .await?;
        tx.commit().await?;
        Ok(jobs)
    }

    pub(in crate::store) async fn next_article_at(
        &self,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT min(next_attempt_at) FROM article WHERE status = 'pending'",
                &[],
            )
            .await?;
        Ok(opt_ts(row.try_get(0)?))
    }

    /// Moves leased articles to when they should be tried, or renews
    /// their lease, in one statement.
    pub(in crate::store) async fn defer_articles(
        &self,
        defers: Vec<(i64, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let (ids, ats): (Vec<i64>, Vec<i64>) = defers.iter().map(|(id, at)| (*id, ts(*at))).unzip();
        self.client()
            .await?
            .execute(
                "UPDATE article a SET next_attempt_at = d.at
                 FROM unnest($1::bigint[], $2::bigint[]) AS d(id, at) WHERE a.entry_id = d.id",
                &[&ids, &ats],
            )
            .await?;
        Ok(())
    }

    /// Records one article attempt in one transaction; true when the entry
    /// turned out to be a story another feed brought first, and merged
    /// into it.
    pub(in crate::store) async fn record_article(
        &self,
        rec: ArticleRecord,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The entry may have joined an earlier story while its page was
        // fetched: nothing left to record.
        let exists = query_opt(
            &tx,
            "SELECT 1 FROM article WHERE entry_id = $1 FOR UPDATE",
            &[&rec.entry_id],
        )
        .await?
        .is_some();
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
                exec(
                    &tx,
                    "UPDATE article SET status = 'done', attempts = attempts + 1,
                         last_error = NULL, final_url = $2, canonical_url = $3, html = $4,
                         text = $5, word_count = $6, used = $7, fetched_at = $8
                     WHERE entry_id = $1",
                    &[
                        &rec.entry_id,
                        final_url,
                        canonical_url,
                        html,
                        text,
                        &(*word_count as i64),
                        use_for_output,
                        &at,
                    ],
                )
                .await?;
                if *use_for_output {
                    queue_for_index(&tx, rec.entry_id, true).await?;
                    bump_revision(&tx, rec.at).await?;
                }
                // One story, one entry: the page's URLs or its text join
                // this entry with every story they link, under the
                // earliest one's id. Its keys are locked first, as a
                // polled copy's are.
                lock_keys(&tx, url_keys).await?;
                if !url_keys.is_empty() {
                    exec(
                        &tx,
                        "INSERT INTO entry_url (url_key, entry_id)
                         SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
                        &[url_keys, &rec.entry_id],
                    )
                    .await?;
                }
                if let Some(p) = print {
                    store_print(&tx, rec.entry_id, p, final_url).await?;
                }
                let (story, changed) = unite(&tx, rec.entry_id).await?;
                if changed > 0 {
                    bump_revision(&tx, rec.at).await?;
                }
                merged = story != rec.entry_id;
            }
            ArticleOutcome::Failed { error } => {
                exec(
                    &tx,
                    "UPDATE article SET attempts = attempts + 1, last_error = $2,
                         status = CASE WHEN $3::bigint IS NULL THEN 'failed' ELSE 'pending' END,
                         next_attempt_at = coalesce($3, next_attempt_at)
                     WHERE entry_id = $1",
                    &[&rec.entry_id, error, &retry],
                )
                .await?;
            }
            ArticleOutcome::Deferred => {
                exec(
                    &tx,
                    "UPDATE article SET next_attempt_at = coalesce($2, next_attempt_at)
                     WHERE entry_id = $1",
                    &[&rec.entry_id, &retry],
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.index_work.notify_one();
        Ok(merged)
    }

    /// Where an entry's article stands.
    pub(in crate::store) async fn article_state(
        &self,
        entry_uid: &str,
    ) -> Result<Option<ArticleState>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT a.status, a.attempts, a.last_error, a.word_count, a.used
                 FROM article a JOIN entry e ON e.id = a.entry_id WHERE e.uid = $1",
                &[&entry_uid],
            )
            .await?;
        row.map(|r| {
            Ok(ArticleState {
                status: r.try_get(0)?,
                attempts: r.try_get::<_, i64>(1)?.max(0) as u32,
                last_error: r.try_get(2)?,
                word_count: r.try_get::<_, Option<i64>>(3)?.map(|n| n.max(0) as usize),
                used: r.try_get(4)?,
            })
        })
        .transpose()
    }
}
