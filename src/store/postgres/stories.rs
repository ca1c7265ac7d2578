//! Stories on PostgreSQL: reading a story's evidence, finding the stories
//! a copy is one with, merging them. The decisions are `store::stories`',
//! as for SQLite; this file only fetches rows and writes merges.
//!
//! Two nodes may store copies of one story at the same moment: a copy's
//! URL keys are locked (`pg_advisory_xact_lock`, in sorted order) before
//! its story is looked for, so the second copy waits for the first's
//! transaction and then finds its story, rather than making a second one.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::store::stories::{
    self, ArticleFacts, ArticleMerge, Evidence, PRINT_VERSION, PrintRow, StoryRows,
    TEXT_WINDOW_SECS,
};

use super::entries::queue_for_index;
use super::{PgStore, bump_revision, exec, query, query_one, query_opt, ts};
use crate::store::StoreError;

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Holds every `url_keys` key for the rest of the transaction: whoever
/// stores a copy under one of them waits. Sorted, so two transactions
/// never wait for each other in a circle.
pub(super) async fn lock_keys(tx: &Transaction<'_>, url_keys: &[String]) -> PgResult<()> {
    if url_keys.is_empty() {
        return Ok(());
    }
    let mut keys = url_keys.to_vec();
    keys.sort();
    keys.dedup();
    exec(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
        &[&keys],
    )
    .await?;
    Ok(())
}

/// A stored story's evidence, as rows for `store::stories`.
async fn evidence_of(tx: &Transaction<'_>, story: i64) -> PgResult<Evidence> {
    let mut rows = StoryRows::default();
    for r in query(
        tx,
        "SELECT url_key FROM entry_url WHERE entry_id = $1",
        &[&story],
    )
    .await?
    {
        rows.url_keys.push(r.try_get(0)?);
    }
    for r in query(
        tx,
        "SELECT coalesce(s.title, e.title), coalesce(s.published_at, e.published_at)
             FROM entry_source s JOIN entry e ON e.id = s.entry_id WHERE s.entry_id = $1",
        &[&story],
    )
    .await?
    {
        rows.listings.push((r.try_get(0)?, r.try_get(1)?));
    }
    for r in query(
        tx,
        "SELECT p.words, p.simhash, p.minhash, p.published, p.site,
                    (SELECT coalesce(a.final_url, o.link) FROM entry o
                     LEFT JOIN article a ON a.entry_id = o.id WHERE o.id = p.origin)
             FROM entry_print p WHERE p.entry_id = $1 AND p.version = $2",
        &[&story, &PRINT_VERSION],
    )
    .await?
    {
        rows.prints.push(PrintRow {
            words: r.try_get(0)?,
            simhash: r.try_get(1)?,
            minhash: r.try_get(2)?,
            published: r.try_get(3)?,
            site: r.try_get(4)?,
            page: r.try_get(5)?,
        });
    }
    Ok(Evidence::of_rows(rows))
}

async fn first_seen(tx: &Transaction<'_>, story: i64) -> PgResult<i64> {
    query_one(
        tx,
        "SELECT first_seen_at FROM entry WHERE id = $1",
        &[&story],
    )
    .await?
    .try_get(0)
}

/// The stories other than `me` that are one story with `evidence`, with
/// their first-seen times, earliest first: candidates share a URL key, or
/// a locality-sensitive key with a print and were first seen within
/// `TEXT_WINDOW_SECS` of `around`; `stories::same_story` decides.
pub(super) async fn linked_stories(
    tx: &Transaction<'_>,
    evidence: &Evidence,
    me: Option<i64>,
    around: i64,
) -> PgResult<Vec<(i64, i64)>> {
    let mut candidates: Vec<i64> = Vec::new();
    let keys = evidence.url_keys().to_vec();
    if !keys.is_empty() {
        for r in query(
            tx,
            "SELECT DISTINCT entry_id FROM entry_url
                 WHERE url_key = ANY($1) AND entry_id IS DISTINCT FROM $2",
            &[&keys, &me],
        )
        .await?
        {
            candidates.push(r.try_get(0)?);
        }
    }
    let lsh = evidence.lsh_keys();
    if !lsh.is_empty() {
        let params: [&(dyn ToSql + Sync); 4] = [&lsh, &me, &around, &TEXT_WINDOW_SECS];
        for r in query(
            tx,
            "SELECT DISTINCT l.entry_id FROM entry_lsh l JOIN entry x ON x.id = l.entry_id
                 WHERE l.lsh_key = ANY($1) AND l.entry_id IS DISTINCT FROM $2
                   AND x.first_seen_at BETWEEN $3::bigint - $4::bigint AND $3::bigint + $4::bigint",
            &params,
        )
        .await?
        {
            candidates.push(r.try_get(0)?);
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    let mut linked = Vec::new();
    for id in candidates {
        let other = evidence_of(tx, id).await?;
        if stories::same_story(evidence, &other) {
            linked.push((id, first_seen(tx, id).await?));
        }
    }
    stories::earliest_first(&mut linked);
    Ok(linked)
}

/// Merges `story` with every story the evidence links it to,
/// transitively, into the earliest first seen (`stories::merge_order`).
/// Returns the story it is now part of and how many merged away.
pub(super) async fn unite(tx: &Transaction<'_>, story: i64) -> PgResult<(i64, usize)> {
    let mut me = story;
    let mut merged = 0;
    // Each round merges at least one story away; the bound is a guard.
    for _ in 0..64 {
        let evidence = evidence_of(tx, me).await?;
        lock_keys(tx, evidence.url_keys()).await?;
        let seen = first_seen(tx, me).await?;
        let linked = linked_stories(tx, &evidence, Some(me), seen).await?;
        if linked.is_empty() {
            break;
        }
        let (target, from) = stories::merge_order((me, seen), &linked);
        for &id in &from {
            merge_stories(tx, id, target).await?;
        }
        me = target;
        merged += from.len();
    }
    Ok((me, merged))
}

async fn article_facts(tx: &Transaction<'_>, id: i64) -> PgResult<Option<ArticleFacts>> {
    query_opt(
        tx,
        "SELECT status, used, coalesce(word_count, 0) FROM article WHERE entry_id = $1",
        &[&id],
    )
    .await?
    .map(|r| {
        Ok(ArticleFacts {
            status: r.try_get(0)?,
            used: r.try_get(1)?,
            words: r.try_get(2)?,
        })
    })
    .transpose()
}

/// The earlier `into` absorbs `from`: copies, URL keys, prints and
/// candidate keys move over; the articles as `stories::article_merge`
/// says; `from` is deleted.
pub(super) async fn merge_stories(tx: &Transaction<'_>, from: i64, into: i64) -> PgResult<()> {
    exec(
        tx,
        "UPDATE entry_source SET entry_id = $2 WHERE entry_id = $1",
        &[&from, &into],
    )
    .await?;
    exec(
        tx,
        "INSERT INTO entry_url (url_key, entry_id)
         SELECT url_key, $2 FROM entry_url WHERE entry_id = $1 ON CONFLICT DO NOTHING",
        &[&from, &into],
    )
    .await?;
    exec(
        tx,
        "UPDATE entry_print SET entry_id = $2 WHERE entry_id = $1",
        &[&from, &into],
    )
    .await?;
    exec(
        tx,
        "INSERT INTO entry_lsh (lsh_key, entry_id)
         SELECT lsh_key, $2 FROM entry_lsh WHERE entry_id = $1 ON CONFLICT DO NOTHING",
        &[&from, &into],
    )
    .await?;
    let (from_article, into_article) = (
        article_facts(tx, from).await?,
        article_facts(tx, into).await?,
    );
    match stories::article_merge(from_article.as_ref(), into_article.as_ref()) {
        ArticleMerge::Move => {
            exec(
                tx,
                "UPDATE article SET entry_id = $2 WHERE entry_id = $1",
                &[&from, &into],
            )
            .await?;
            if article_facts(tx, into).await?.is_some_and(|a| a.used) {
                queue_for_index(tx, into, true).await?;
            }
        }
        ArticleMerge::Replace => {
            exec(
                tx,
                "INSERT INTO article (entry_id, feed_id, url, status, attempts,
                     next_attempt_at, final_url, canonical_url, html, text, word_count, used,
                     fetched_at)
                 SELECT $2, feed_id, url, 'done', attempts, next_attempt_at, final_url,
                        canonical_url, html, text, word_count, used, fetched_at
                 FROM article WHERE entry_id = $1
                 ON CONFLICT (entry_id) DO UPDATE SET
                     feed_id = excluded.feed_id, url = excluded.url, status = 'done',
                     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                     final_url = excluded.final_url, canonical_url = excluded.canonical_url,
                     html = excluded.html, text = excluded.text,
                     word_count = excluded.word_count, used = excluded.used,
                     fetched_at = excluded.fetched_at, last_error = NULL",
                &[&from, &into],
            )
            .await?;
            queue_for_index(tx, into, true).await?;
        }
        ArticleMerge::Keep => {}
    }
    exec(tx, "DELETE FROM entry WHERE id = $1", &[&from]).await?;
    Ok(())
}

/// Entries the one-time re-examination looks at per transaction.
const DEDUP_PASS_BATCH: i64 = 50;

impl PgStore {
    /// One step of the one-time re-examination of stories stored by an
    /// older version (a database moved over from SQLite may need it; one
    /// created here starts without): up to 50 entries, each merged with
    /// whatever its evidence links it to. `None` once the pass has run.
    /// The meta row is locked, so two nodes take turns.
    pub(in crate::store) async fn dedup_pass_step(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<usize>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(next) = query_opt(
            &tx,
            "SELECT value FROM meta WHERE key = 'dedup_pass_next' FOR UPDATE",
            &[],
        )
        .await?
        else {
            return Ok(None);
        };
        let next: i64 = next.try_get(0)?;
        let ids: Vec<i64> = query(
            &tx,
            "SELECT id FROM entry WHERE id >= $1 ORDER BY id LIMIT $2",
            &[&next, &DEDUP_PASS_BATCH],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        let mut merged = 0;
        for &id in &ids {
            let exists = query_opt(&tx, "SELECT 1 FROM entry WHERE id = $1", &[&id])
                .await?
                .is_some();
            if exists {
                merged += unite(&tx, id).await?.1;
            }
        }
        if merged > 0 {
            bump_revision(&tx, now).await?;
        }
        match ids.last() {
            Some(last) if ids.len() as i64 == DEDUP_PASS_BATCH => {
                exec(
                    &tx,
                    "UPDATE meta SET value = $1 WHERE key = 'dedup_pass_next'",
                    &[&(last + 1)],
                )
                .await?;
            }
            _ => {
                exec(&tx, "DELETE FROM meta WHERE key = 'dedup_pass_next'", &[]).await?;
                exec(
                    &tx,
                    "INSERT INTO meta (key, value) VALUES ('dedup_pass_done_at', $1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&ts(now)],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Some(merged))
    }
}
