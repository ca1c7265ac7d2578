//! A polled entry's rows on PostgreSQL: found by its feed's key,
//! inserted, updated or kept out by a tombstone, and joined to a stored
//! story the dedup rule says it is a copy of; and the search queue and
//! index rows those writes touch.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::model::{Enclosure, ParsedEntry, RAW_HASH_PREFIX, stable_hash};
use crate::store::entry_uid;
use crate::store::stories::Evidence;

use super::stories::{linked_stories, lock_keys, merge_stories};
use super::{bump_revision, exec, query_one, query_opt, ts};

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// What became of one polled entry.
pub(super) enum Upsert {
    New(i64),
    /// A stored story's copy: this feed became one more source of it.
    Merged,
    Updated,
    Unchanged,
    /// Purged by retention earlier: not stored again.
    Tombstoned,
}

/// A tombstone's `seen_at` is refreshed at most this often.
const TOMBSTONE_REFRESH_SECS: i64 = 24 * 60 * 60;

/// The 16 bytes a tombstone keeps of an entry key (as on SQLite).
pub(super) fn tombstone_key(key: &str) -> Vec<u8> {
    stable_hash(&[key]).to_be_bytes().to_vec()
}

fn json_list<T: serde::Serialize>(v: &[T]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// Queues an entry for the search indexer; one already queued counts one
/// more change (`gen`), as on SQLite.
pub(super) async fn queue_for_index(
    tx: &Transaction<'_>,
    entry_id: i64,
    indexed: bool,
) -> PgResult<()> {
    exec(
        tx,
        "INSERT INTO search_pending (entry_id, reindex) VALUES ($1, $2)
         ON CONFLICT (entry_id) DO UPDATE SET gen = search_pending.gen + 1",
        &[&entry_id, &indexed],
    )
    .await?;
    Ok(())
}

/// Indexes an entry under its title (weighted higher) and `words`, with
/// PostgreSQL's own full-text search: a `tsvector` in `entry_search`,
/// GIN-indexed. `simple`: no stemming and no stop words, so every word
/// of a text in any language is found as written, as on SQLite.
pub(super) async fn add_to_index(
    tx: &Transaction<'_>,
    entry_id: i64,
    title: &str,
    words: &str,
) -> PgResult<()> {
    exec(
        tx,
        "INSERT INTO entry_search (entry_id, doc)
         VALUES ($1, setweight(to_tsvector('simple', $2), 'A') || to_tsvector('simple', $3))
         ON CONFLICT (entry_id) DO UPDATE SET doc = excluded.doc",
        &[&entry_id, &title, &words],
    )
    .await?;
    Ok(())
}

/// Searches find more: their cached pages and validators expire.
pub(super) async fn search_changed(tx: &Transaction<'_>, now: DateTime<Utc>) -> PgResult<()> {
    super::bump_search_revision(tx, now).await
}

async fn add_url_keys(tx: &Transaction<'_>, entry_id: i64, keys: &[String]) -> PgResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    exec(
        tx,
        "INSERT INTO entry_url (url_key, entry_id) SELECT unnest($1::text[]), $2
         ON CONFLICT DO NOTHING",
        &[&keys, &entry_id],
    )
    .await?;
    Ok(())
}

/// Stores one polled entry of `feed_id` (whose subscription URL is
/// `feed_url`); `indexed` is set when it went into the search index
/// itself (words prepared by the parse stage).
pub(super) async fn upsert_entry(
    tx: &Transaction<'_>,
    feed_id: i64,
    feed_url: &str,
    e: &ParsedEntry,
    now: DateTime<Utc>,
    indexed: &mut bool,
) -> PgResult<Upsert> {
    let hash = match &e.content_hash {
        Some(h) => Cow::Borrowed(h.as_str()),
        None => Cow::Owned(e.compute_content_hash()),
    };
    let found = query_opt(
        tx,
        "SELECT e.id, coalesce(s.content_hash, e.content_hash), e.updated_at,
                    s.content_hash IS NOT NULL
             FROM entry_source s JOIN entry e ON e.id = s.entry_id
             WHERE s.feed_id = $1 AND s.entry_key = $2",
        &[&feed_id, &e.key],
    )
    .await?;
    let authors = json_list(&e.authors);
    let categories = json_list(&e.categories);
    let enclosures = json_list::<Enclosure>(&e.enclosures);
    let published = e.published.or(e.updated).map(ts);
    let hash: &str = &hash;
    if let Some(row) = found {
        let id: i64 = row.try_get(0)?;
        let old_hash: String = row.try_get(1)?;
        let old_updated: i64 = row.try_get(2)?;
        let own_hash: bool = row.try_get(3)?;
        if old_hash == hash {
            return Ok(Upsert::Unchanged);
        }
        // A copy stored before copies kept their own hash, of a story with
        // other copies: a difference says nothing; its hash is learnt.
        let copies: i64 = query_one(
            tx,
            "SELECT count(*) FROM entry_source WHERE entry_id = $1",
            &[&id],
        )
        .await?
        .try_get(0)?;
        if !own_hash && copies > 1 {
            exec(
                tx,
                "UPDATE entry_source SET content_hash = $3, title = $4, published_at = $5
                 WHERE feed_id = $1 AND entry_key = $2",
                &[&feed_id, &e.key, &hash, &e.title, &published],
            )
            .await?;
            return Ok(Upsert::Unchanged);
        }
        // A hash from before content was stored as given: replaced quietly.
        let quiet = !old_hash.starts_with(RAW_HASH_PREFIX);
        let updated = match e.updated.map(ts) {
            _ if quiet => old_updated,
            Some(u) if u > old_updated => u,
            _ => ts(now).max(old_updated + 1),
        };
        // The story's link stays its first copy's while it has others.
        exec(
            tx,
            "UPDATE entry SET title = $2,
                 link = CASE WHEN $12::bigint > 1 THEN link ELSE $3 END,
                 content_html = $4, authors = $5, categories = $6, enclosures = $7,
                 published_at = coalesce($8, published_at), updated_at = $9,
                 content_hash = $10, content_base = $11
             WHERE id = $1",
            &[
                &id,
                &e.title,
                &e.link,
                &e.content_html,
                &authors,
                &categories,
                &enclosures,
                &published,
                &updated,
                &hash,
                &e.content_base,
                &copies,
            ],
        )
        .await?;
        exec(
            tx,
            "UPDATE entry_source SET link = $3, content_hash = $4, title = $5, published_at = $6
             WHERE feed_id = $1 AND entry_key = $2",
            &[&feed_id, &e.key, &e.link, &hash, &e.title, &published],
        )
        .await?;
        let article_used = query_opt(tx, "SELECT used FROM article WHERE entry_id = $1", &[&id])
            .await?
            .map(|r| r.try_get::<_, bool>(0))
            .transpose()?
            .unwrap_or(false);
        if !article_used {
            queue_for_index(tx, id, true).await?;
        }
        return Ok(if quiet {
            Upsert::Unchanged
        } else {
            Upsert::Updated
        });
    }
    // A purged entry the feed still carries stays purged; its tombstone's
    // clock restarts (at most daily).
    let key_hash = tombstone_key(&e.key);
    let seen: Option<i64> = query_opt(
        tx,
        "SELECT seen_at FROM tombstone WHERE feed_id = $1 AND key_hash = $2",
        &[&feed_id, &key_hash],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?;
    if let Some(seen) = seen {
        if seen < ts(now) - TOMBSTONE_REFRESH_SECS {
            exec(
                tx,
                "UPDATE tombstone SET seen_at = $3 WHERE feed_id = $1 AND key_hash = $2",
                &[&feed_id, &key_hash, &ts(now)],
            )
            .await?;
        }
        return Ok(Upsert::Tombstoned);
    }
    let now_s = ts(now);
    // One story, one entry. Another node may be storing a copy this very
    // moment: its keys are locked first, so one of the two waits and then
    // finds the other's story.
    lock_keys(tx, &e.url_keys).await?;
    if !e.url_keys.is_empty() {
        let evidence = Evidence::of_listing(&e.url_keys, e.title.as_deref(), published);
        let linked = linked_stories(tx, &evidence, None, now_s).await?;
        if let Some(&(story, _)) = linked.first() {
            exec(
                tx,
                "INSERT INTO entry_source (feed_id, entry_key, entry_id, link, first_seen_at,
                     title, published_at, content_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &feed_id, &e.key, &story, &e.link, &now_s, &e.title, &published, &hash,
                ],
            )
            .await?;
            add_url_keys(tx, story, &e.url_keys).await?;
            for &(other, _) in &linked[1..] {
                merge_stories(tx, other, story).await?;
            }
            bump_revision(tx, now).await?;
            return Ok(Upsert::Merged);
        }
    }
    let uid = entry_uid(feed_url, &e.key);
    let sort_at = published.map_or(now_s, |p| p.min(now_s));
    let updated = e.updated.map(ts).or(published).unwrap_or(now_s);
    let inserted = query_opt(
        tx,
        "INSERT INTO entry (uid, title, link, content_html, authors, categories,
                 enclosures, published_at, updated_at, first_seen_at, sort_at, content_hash,
                 content_base)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (uid) DO NOTHING
             RETURNING id",
        &[
            &uid,
            &e.title,
            &e.link,
            &e.content_html,
            &authors,
            &categories,
            &enclosures,
            &published,
            &updated,
            &now_s,
            &sort_at,
            &hash,
            &e.content_base,
        ],
    )
    .await?;
    // On a uid conflict (the feed was removed and re-added while another
    // feed kept the entry) the source joins the existing story.
    let (entry_id, new) = match inserted {
        Some(row) => (row.try_get(0)?, true),
        None => (
            query_one(tx, "SELECT id FROM entry WHERE uid = $1", &[&uid])
                .await?
                .try_get(0)?,
            false,
        ),
    };
    match &e.search_words {
        Some(words) if new => {
            add_to_index(tx, entry_id, e.title.as_deref().unwrap_or_default(), words).await?;
            *indexed = true;
        }
        _ => queue_for_index(tx, entry_id, !new).await?,
    }
    add_url_keys(tx, entry_id, &e.url_keys).await?;
    exec(
        tx,
        "INSERT INTO entry_source (feed_id, entry_key, entry_id, link, first_seen_at,
             title, published_at, content_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &feed_id, &e.key, &entry_id, &e.link, &now_s, &e.title, &published, &hash,
        ],
    )
    .await?;
    Ok(Upsert::New(entry_id))
}
