//! A polled entry's rows on PostgreSQL: found by its feed's key,
//! inserted, updated or kept out by a tombstone, and joined to a stored
//! story the dedup rule says it is a copy of; and the search queue and
//! index rows those writes touch.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::model::{Enclosure, ParsedEntry, PollReport, RAW_HASH_PREFIX, stable_hash};
use crate::store::entry_uid;
use crate::store::stories::Evidence;

use super::stories::{linked_stories, lock_keys, merge_stories};
use super::{bump_revision, exec, query, query_one, query_opt, ts};

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// What became of one polled entry.
enum Upsert {
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

/// A polled entry's stored copy, found by its feed and key.
#[derive(Clone)]
struct Found {
    id: i64,
    /// The copy's own content hash, else its story's.
    hash: String,
    updated: i64,
    own_hash: bool,
}

/// The stored copies of `keys` in `feed_id`, by key, in one query.
async fn found_copies(
    tx: &Transaction<'_>,
    feed_id: i64,
    keys: &[&str],
) -> PgResult<HashMap<String, Found>> {
    let rows = query(
        tx,
        "SELECT s.entry_key, e.id, coalesce(s.content_hash, e.content_hash), e.updated_at,
                s.content_hash IS NOT NULL
         FROM entry_source s JOIN entry e ON e.id = s.entry_id
         WHERE s.feed_id = $1 AND s.entry_key = ANY($2)",
        &[&feed_id, &keys],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                Found {
                    id: r.try_get(1)?,
                    hash: r.try_get(2)?,
                    updated: r.try_get(3)?,
                    own_hash: r.try_get(4)?,
                },
            ))
        })
        .collect()
}

/// The tombstones of `key_hashes` in `feed_id` (when each was last seen),
/// in one query.
async fn tombstones(
    tx: &Transaction<'_>,
    feed_id: i64,
    key_hashes: &[&Vec<u8>],
) -> PgResult<HashMap<Vec<u8>, i64>> {
    if key_hashes.is_empty() {
        return Ok(HashMap::new());
    }
    query(
        tx,
        "SELECT key_hash, seen_at FROM tombstone WHERE feed_id = $1 AND key_hash = ANY($2)",
        &[&feed_id, &key_hashes],
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}

/// A polled entry's values as its rows store them.
struct Values<'a> {
    hash: Cow<'a, str>,
    authors: String,
    categories: String,
    enclosures: String,
    published: Option<i64>,
}

impl<'a> Values<'a> {
    fn of(e: &'a ParsedEntry) -> Values<'a> {
        Values {
            hash: match &e.content_hash {
                Some(h) => Cow::Borrowed(h.as_str()),
                None => Cow::Owned(e.compute_content_hash()),
            },
            authors: json_list(&e.authors),
            categories: json_list(&e.categories),
            enclosures: json_list::<Enclosure>(&e.enclosures),
            published: e.published.or(e.updated).map(ts),
        }
    }
}

/// Stores a poll's entries of `feed_id` (whose subscription URL is
/// `feed_url`) in the caller's transaction and counts what became of them
/// in `report`; with `full_text`, each new entry's page is queued. Returns
/// whether any went into the search index itself (words prepared by the
/// parse stage).
///
/// Each entry is stored as if alone, in the feed's order, but the reads
/// are made for all of them at once: the stored copies and tombstones of
/// their keys in one query each. New entries of which none can be a copy
/// of a stored story or of another (no URL key in common with either) are
/// inserted together, a statement per table; otherwise one by one, as the
/// dedup rule may join them to stories.
pub(super) async fn store_entries(
    tx: &Transaction<'_>,
    feed_id: i64,
    feed_url: &str,
    entries: &[ParsedEntry],
    now: DateTime<Utc>,
    full_text: bool,
    report: &mut PollReport,
) -> PgResult<bool> {
    let mut indexed = false;
    let values: Vec<Values> = entries.iter().map(Values::of).collect();
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    let found = found_copies(tx, feed_id, &keys).await?;
    let key_hashes: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| {
            if found.contains_key(&e.key) {
                Vec::new()
            } else {
                tombstone_key(&e.key)
            }
        })
        .collect();
    let unseen: Vec<&Vec<u8>> = key_hashes.iter().filter(|h| !h.is_empty()).collect();
    let tombs = tombstones(tx, feed_id, &unseen).await?;
    let fresh: Vec<usize> = (0..entries.len())
        .filter(|&i| !key_hashes[i].is_empty() && !tombs.contains_key(&key_hashes[i]))
        .collect();
    // A key twice in one poll (the parse stage keeps the first, but the
    // store does not count on it) is stored one by one.
    let mut keys_seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    let repeated = !entries.iter().all(|e| keys_seen.insert(e.key.as_str()));
    let batch =
        !fresh.is_empty() && !repeated && batchable(tx, fresh.iter().map(|&i| &entries[i])).await?;
    let fresh: HashSet<usize> = fresh.into_iter().collect();
    // What was read up front is read again for an entry once this poll
    // has written its story (an earlier entry of the same story), merged
    // stories, or stored the same key.
    let mut touched: HashSet<i64> = HashSet::new();
    let mut merged_any = false;
    let mut done: HashSet<&str> = HashSet::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let v = &values[i];
        let again = !done.insert(e.key.as_str());
        let stale =
            again || merged_any || found.get(&e.key).is_some_and(|f| touched.contains(&f.id));
        let copy = if stale {
            found_copies(tx, feed_id, &[e.key.as_str()])
                .await?
                .remove(&e.key)
                .map(Cow::Owned)
        } else {
            found.get(&e.key).map(Cow::Borrowed)
        };
        let outcome = if let Some(f) = copy {
            update_found(tx, feed_id, e, v, &f, now, &mut touched).await?
        } else if batch && fresh.contains(&i) {
            continue;
        } else {
            let seen = if stale {
                tombstones(tx, feed_id, &[&tombstone_key(&e.key)])
                    .await?
                    .into_values()
                    .next()
            } else {
                tombs.get(&key_hashes[i]).copied()
            };
            match seen {
                // A purged entry the feed still carries stays purged; its
                // tombstone's clock restarts (at most daily).
                Some(seen) => {
                    if seen < ts(now) - TOMBSTONE_REFRESH_SECS {
                        exec(
                            tx,
                            "UPDATE tombstone SET seen_at = $3
                             WHERE feed_id = $1 AND key_hash = $2",
                            &[&feed_id, &tombstone_key(&e.key), &ts(now)],
                        )
                        .await?;
                    }
                    Upsert::Tombstoned
                }
                None => insert_new(tx, feed_id, feed_url, e, v, now, &mut indexed).await?,
            }
        };
        match outcome {
            Upsert::New(id) => {
                report.new += 1;
                if full_text && let Some(link) = &e.link {
                    queue_articles(tx, feed_id, &[id], &[link.as_str()], now).await?;
                    report.articles_queued += 1;
                }
            }
            Upsert::Updated => report.updated += 1,
            Upsert::Merged => {
                report.merged += 1;
                merged_any = true;
            }
            Upsert::Unchanged | Upsert::Tombstoned => {}
        }
    }
    if batch {
        let fresh: Vec<(&ParsedEntry, &Values)> = (0..entries.len())
            .filter(|i| fresh.contains(i))
            .map(|i| (&entries[i], &values[i]))
            .collect();
        let ids = insert_batch(tx, feed_id, feed_url, &fresh, now, &mut indexed).await?;
        report.new += ids.len();
        if full_text {
            let (ids, links): (Vec<i64>, Vec<&str>) = fresh
                .iter()
                .zip(&ids)
                .filter_map(|((e, _), id)| Some((*id, e.link.as_deref()?)))
                .unzip();
            queue_articles(tx, feed_id, &ids, &links, now).await?;
            report.articles_queued += ids.len();
        }
    }
    Ok(indexed)
}

/// Queues new entries' pages for full text.
async fn queue_articles(
    tx: &Transaction<'_>,
    feed_id: i64,
    ids: &[i64],
    links: &[&str],
    now: DateTime<Utc>,
) -> PgResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    exec(
        tx,
        "INSERT INTO article (entry_id, feed_id, url, status, next_attempt_at)
         SELECT id, $2, url, 'pending', $4 FROM unnest($1::bigint[], $3::text[]) AS t(id, url)
         ON CONFLICT DO NOTHING",
        &[&ids, &feed_id, &links, &ts(now)],
    )
    .await?;
    Ok(())
}

/// Whether new `entries` can be inserted together: none shares a URL key
/// with a stored story or with another of them, so the dedup rule (which
/// looks only at stories sharing a key with a listing) joins none of them
/// to a story. Their keys are locked first, all at once and in order, as
/// one entry's are: a copy another node stores meanwhile waits for this
/// transaction, and two polls never wait for each other in a circle.
async fn batchable<'e>(
    tx: &Transaction<'_>,
    entries: impl Iterator<Item = &'e ParsedEntry>,
) -> PgResult<bool> {
    let mut all: Vec<String> = Vec::new();
    let mut shared = false;
    let mut seen: HashSet<&str> = HashSet::new();
    for e in entries {
        let own: HashSet<&str> = e.url_keys.iter().map(String::as_str).collect();
        for k in own {
            shared |= !seen.insert(k);
            all.push(k.to_owned());
        }
    }
    lock_keys(tx, &all).await?;
    if shared {
        return Ok(false);
    }
    if all.is_empty() {
        return Ok(true);
    }
    let stored: bool = query_one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM entry_url WHERE url_key = ANY($1))",
        &[&all],
    )
    .await?
    .try_get(0)?;
    Ok(!stored)
}

/// Inserts new entries none of which is a copy (see [`batchable`]), a
/// statement per table, in the feed's order; returns their ids.
async fn insert_batch(
    tx: &Transaction<'_>,
    feed_id: i64,
    feed_url: &str,
    fresh: &[(&ParsedEntry, &Values<'_>)],
    now: DateTime<Utc>,
    indexed: &mut bool,
) -> PgResult<Vec<i64>> {
    let now_s = ts(now);
    let uids: Vec<String> = fresh
        .iter()
        .map(|(e, _)| entry_uid(feed_url, &e.key))
        .collect();
    let titles: Vec<Option<&str>> = fresh.iter().map(|(e, _)| e.title.as_deref()).collect();
    let links: Vec<Option<&str>> = fresh.iter().map(|(e, _)| e.link.as_deref()).collect();
    let contents: Vec<Option<&str>> = fresh
        .iter()
        .map(|(e, _)| e.content_html.as_deref())
        .collect();
    let authors: Vec<&str> = fresh.iter().map(|(_, v)| v.authors.as_str()).collect();
    let categories: Vec<&str> = fresh.iter().map(|(_, v)| v.categories.as_str()).collect();
    let enclosures: Vec<&str> = fresh.iter().map(|(_, v)| v.enclosures.as_str()).collect();
    let published: Vec<Option<i64>> = fresh.iter().map(|(_, v)| v.published).collect();
    let updated: Vec<i64> = fresh
        .iter()
        .map(|(e, v)| e.updated.map(ts).or(v.published).unwrap_or(now_s))
        .collect();
    let sort_at: Vec<i64> = fresh
        .iter()
        .map(|(_, v)| v.published.map_or(now_s, |p| p.min(now_s)))
        .collect();
    let hashes: Vec<&str> = fresh.iter().map(|(_, v)| v.hash.as_ref()).collect();
    let bases: Vec<Option<&str>> = fresh
        .iter()
        .map(|(e, _)| e.content_base.as_deref())
        .collect();
    // Ids are drawn in the feed's order, as one by one.
    let rows = query(
        tx,
        "INSERT INTO entry (uid, title, link, content_html, authors, categories,
             enclosures, published_at, updated_at, first_seen_at, sort_at, content_hash,
             content_base)
         SELECT uid, title, link, content_html, authors, categories, enclosures,
                published_at, updated_at, $13, sort_at, content_hash, content_base
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[],
                     $12::text[]) WITH ORDINALITY
              AS t(uid, title, link, content_html, authors, categories, enclosures,
                   published_at, updated_at, sort_at, content_hash, content_base, n)
         ORDER BY n
         ON CONFLICT (uid) DO NOTHING
         RETURNING id, uid",
        &[
            &uids,
            &titles,
            &links,
            &contents,
            &authors,
            &categories,
            &enclosures,
            &published,
            &updated,
            &sort_at,
            &hashes,
            &bases,
            &now_s,
        ],
    )
    .await?;
    let mut inserted: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        inserted.insert(r.try_get(1)?, r.try_get(0)?);
    }
    // On a uid conflict (the feed was removed and re-added while another
    // feed kept the entry) the source joins the existing story.
    let mut existing: HashMap<String, i64> = HashMap::new();
    if inserted.len() < uids.len() {
        let missing: Vec<&str> = uids
            .iter()
            .filter(|u| !inserted.contains_key(*u))
            .map(String::as_str)
            .collect();
        for r in query(
            tx,
            "SELECT uid, id FROM entry WHERE uid = ANY($1)",
            &[&missing],
        )
        .await?
        {
            existing.insert(r.try_get(0)?, r.try_get(1)?);
        }
    }
    let mut ids = Vec::with_capacity(uids.len());
    let (mut index_ids, mut index_titles, mut index_words) = (Vec::new(), Vec::new(), Vec::new());
    let (mut queue_ids, mut queue_reindex) = (Vec::new(), Vec::new());
    let (mut url_keys, mut url_ids) = (Vec::new(), Vec::new());
    for ((e, _), uid) in fresh.iter().zip(&uids) {
        let (id, new) = match inserted.get(uid) {
            Some(&id) => (id, true),
            None => match existing.get(uid) {
                Some(&id) => (id, false),
                // Neither inserted nor there (deleted meanwhile): the
                // query fails as one by one, and the poll is rolled back.
                None => (
                    query_one(tx, "SELECT id FROM entry WHERE uid = $1", &[uid])
                        .await?
                        .try_get(0)?,
                    false,
                ),
            },
        };
        ids.push(id);
        match &e.search_words {
            Some(words) if new => {
                index_ids.push(id);
                index_titles.push(e.title.as_deref().unwrap_or_default());
                index_words.push(words.as_str());
            }
            _ => {
                queue_ids.push(id);
                queue_reindex.push(!new);
            }
        }
        for k in &e.url_keys {
            url_keys.push(k.as_str());
            url_ids.push(id);
        }
    }
    if !index_ids.is_empty() {
        exec(
            tx,
            "INSERT INTO entry_search (entry_id, doc)
             SELECT id, setweight(to_tsvector('simple', title), 'A')
                        || to_tsvector('simple', words)
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(id, title, words)
             ON CONFLICT (entry_id) DO UPDATE SET doc = excluded.doc",
            &[&index_ids, &index_titles, &index_words],
        )
        .await?;
        *indexed = true;
    }
    if !queue_ids.is_empty() {
        exec(
            tx,
            "INSERT INTO search_pending (entry_id, reindex)
             SELECT * FROM unnest($1::bigint[], $2::boolean[])
             ON CONFLICT (entry_id) DO UPDATE SET gen = search_pending.gen + 1",
            &[&queue_ids, &queue_reindex],
        )
        .await?;
    }
    if !url_keys.is_empty() {
        exec(
            tx,
            "INSERT INTO entry_url (url_key, entry_id)
             SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
            &[&url_keys, &url_ids],
        )
        .await?;
    }
    let keys: Vec<&str> = fresh.iter().map(|(e, _)| e.key.as_str()).collect();
    let published: Vec<Option<i64>> = fresh.iter().map(|(_, v)| v.published).collect();
    exec(
        tx,
        "INSERT INTO entry_source (feed_id, entry_key, entry_id, link, first_seen_at,
             title, published_at, content_hash)
         SELECT $1, key, id, link, $2, title, published, hash
         FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[],
                     $8::text[]) AS t(key, id, link, title, published, hash)",
        &[
            &feed_id, &now_s, &keys, &ids, &links, &titles, &published, &hashes,
        ],
    )
    .await?;
    Ok(ids)
}

/// A stored copy of a polled entry whose content changed: the story (or,
/// for a copy of a story with others, the copy) takes the new content.
/// The story's id goes into `touched`.
async fn update_found(
    tx: &Transaction<'_>,
    feed_id: i64,
    e: &ParsedEntry,
    v: &Values<'_>,
    found: &Found,
    now: DateTime<Utc>,
    touched: &mut HashSet<i64>,
) -> PgResult<Upsert> {
    let Found {
        id,
        hash: ref old_hash,
        updated: old_updated,
        own_hash,
    } = *found;
    let hash: &str = &v.hash;
    let (authors, categories, enclosures, published) =
        (&v.authors, &v.categories, &v.enclosures, v.published);
    if old_hash == hash {
        return Ok(Upsert::Unchanged);
    }
    touched.insert(id);
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
    Ok(if quiet {
        Upsert::Unchanged
    } else {
        Upsert::Updated
    })
}

/// Stores a polled entry no stored copy has: joined to the story the
/// dedup rule finds for it, else a new story.
async fn insert_new(
    tx: &Transaction<'_>,
    feed_id: i64,
    feed_url: &str,
    e: &ParsedEntry,
    v: &Values<'_>,
    now: DateTime<Utc>,
    indexed: &mut bool,
) -> PgResult<Upsert> {
    let hash: &str = &v.hash;
    let (authors, categories, enclosures, published) =
        (&v.authors, &v.categories, &v.enclosures, v.published);
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
