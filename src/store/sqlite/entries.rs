//! A polled entry's rows: found by its feed's key (probed once per poll),
//! inserted, updated or kept out by a tombstone, and joined to a stored
//! story that the dedup rule says it is a copy of.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{Enclosure, ParsedEntry, RAW_HASH_PREFIX, stable_hash};
use crate::store::stories::Evidence;

use super::search::{add_to_index, queue_for_index};
use super::stories::{linked_stories, merge_stories, story_copies};
use super::{bump_revision, entry_uid, exec, json_list, numbered, query_one, ts};

pub(super) enum Upsert {
    New(i64),
    /// Another feed already brought this story (same URL key): this feed
    /// became one more source of it.
    Merged,
    Updated,
    Unchanged,
    /// Purged by retention earlier: not stored again.
    Tombstoned,
}

/// A tombstone's `seen_at` is refreshed at most this often, so a big feed
/// full of purged entries does not rewrite its tombstones on every poll.
const TOMBSTONE_REFRESH_SECS: i64 = 24 * 60 * 60;

/// The 16 bytes a tombstone keeps of an entry key: a fixed-key SipHash,
/// stable across builds (see [`stable_hash`]).
pub(super) fn tombstone_key(key: &str) -> [u8; 16] {
    stable_hash(&[key]).to_be_bytes()
}

/// Whether the polled feed has any tombstone, asked once per poll, when
/// its first entry not stored asks. Nearly every feed has none, and the
/// per-entry lookup this spares ran for every new entry of every poll.
pub(super) struct Tombstones {
    feed_id: i64,
    any: Option<bool>,
}

impl Tombstones {
    pub(super) fn of(feed_id: i64) -> Self {
        Tombstones { feed_id, any: None }
    }

    fn may_hold(&mut self, tx: &Connection) -> rusqlite::Result<bool> {
        if let Some(any) = self.any {
            return Ok(any);
        }
        let any = query_one(
            tx,
            "SELECT EXISTS (SELECT 1 FROM tombstone WHERE feed_id = ?1)",
            [self.feed_id],
            |r| r.get(0),
        )?;
        self.any = Some(any);
        Ok(any)
    }
}

/// `probes`: what the poll looks up once rather than per entry (see
/// [`PollProbes`]): its stored rows, which of its URL keys are already
/// stored (only an entry with one of them can merge), and whether any
/// entry of the feed was purged.
pub(super) fn upsert_entry(
    tx: &Connection,
    feed_id: i64,
    feed_url: &str,
    e: &ParsedEntry,
    probes: &mut PollProbes<'_>,
    now: DateTime<Utc>,
) -> rusqlite::Result<Upsert> {
    let hash = match &e.content_hash {
        Some(h) => Cow::Borrowed(h.as_str()),
        None => Cow::Owned(e.compute_content_hash()),
    };
    let found = probes.stored.get(tx, &e.key)?;
    if found.as_ref().is_some_and(|f| f.content_hash == hash) {
        return Ok(Upsert::Unchanged);
    }
    // Past this point the poll writes this key's rows: a later entry of
    // the same key must see them, not the probe's snapshot.
    probes.stored.written(&e.key);
    let authors = json_list(&e.authors);
    let categories = json_list(&e.categories);
    let enclosures = json_list::<Enclosure>(&e.enclosures);
    let published = e.published.or(e.updated).map(ts);
    match found {
        Some(StoredRow {
            id,
            content_hash: old_hash,
            updated_at: old_updated,
            own_hash,
        }) => {
            // A copy stored before copies kept their own hash, of a story
            // with other copies: its story's hash is another copy's, so a
            // difference says nothing. Its hash is learnt quietly.
            if !own_hash && story_copies(tx, id)? > 1 {
                exec(
                    tx,
                    "UPDATE entry_source SET content_hash = ?3, title = ?4, published_at = ?5
                     WHERE feed_id = ?1 AND entry_key = ?2",
                    params![feed_id, e.key, hash, e.title, published],
                )?;
                return Ok(Upsert::Unchanged);
            }
            // A hash from before content was stored as given cannot tell
            // whether the entry changed: its content is replaced quietly,
            // keeping its time, so an upgrade does not mark every entry
            // that a feed still lists as updated.
            let quiet = !old_hash.starts_with(RAW_HASH_PREFIX);
            // The feed's own `updated` when it moved forward, else now: a
            // reader must see the entry's time move when its text changed.
            let updated = match e.updated.map(ts) {
                _ if quiet => old_updated,
                Some(u) if u > old_updated => u,
                _ => ts(now).max(old_updated + 1),
            };
            // The story's link stays its first copy's while it has others.
            exec(
                tx,
                "UPDATE entry SET title = ?2,
                     link = CASE WHEN (SELECT count(*) FROM entry_source o WHERE o.entry_id = ?1) > 1
                                 THEN link ELSE ?3 END,
                     content_html = ?4, authors = ?5,
                     categories = ?6, enclosures = ?7, published_at = coalesce(?8, published_at),
                     updated_at = ?9, content_hash = ?10, content_base = ?11
                 WHERE id = ?1",
                params![
                    id,
                    e.title,
                    e.link,
                    e.content_html,
                    authors,
                    categories,
                    enclosures,
                    published,
                    updated,
                    hash,
                    e.content_base
                ],
            )?;
            exec(
                tx,
                "UPDATE entry_source SET link = ?3, content_hash = ?4, title = ?5, published_at = ?6
                 WHERE feed_id = ?1 AND entry_key = ?2",
                params![feed_id, e.key, e.link, hash, e.title, published],
            )?;
            let article_used: bool = tx
                .query_row("SELECT used FROM article WHERE entry_id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or(false);
            if !article_used {
                queue_for_index(tx, id, true)?;
            }
            Ok(if quiet {
                Upsert::Unchanged
            } else {
                Upsert::Updated
            })
        }
        None => {
            // A purged entry the feed still carries stays purged; its
            // tombstone's clock restarts (at most daily, to spare writes).
            let seen: Option<i64> = if probes.tombstones.may_hold(tx)? {
                query_one(
                    tx,
                    "SELECT seen_at FROM tombstone WHERE feed_id = ?1 AND key_hash = ?2",
                    params![feed_id, tombstone_key(&e.key)],
                    |r| r.get(0),
                )
                .optional()?
            } else {
                None
            };
            if let Some(seen) = seen {
                if seen < ts(now) - TOMBSTONE_REFRESH_SECS {
                    tx.execute(
                        "UPDATE tombstone SET seen_at = ?3 WHERE feed_id = ?1 AND key_hash = ?2",
                        params![feed_id, tombstone_key(&e.key), ts(now)],
                    )?;
                }
                return Ok(Upsert::Tombstoned);
            }
            let now_s = ts(now);
            let may_merge = probes.known.any_of(tx, &e.url_keys)?;
            // One story, one entry: a copy of a stored story (same URL key,
            // listings that agree; in this feed or another) becomes one
            // more source of it, and joins any other story it links.
            if may_merge {
                let evidence = Evidence::of_listing(&e.url_keys, e.title.as_deref(), published);
                let linked = linked_stories(tx, &evidence, None, now_s)?;
                if let Some(&(story, _)) = linked.first() {
                    exec(
                        tx,
                        "INSERT INTO entry_source (feed_id, entry_key, entry_id, link, first_seen_at,
                             title, published_at, content_hash)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![feed_id, e.key, story, e.link, now_s, e.title, published, hash],
                    )?;
                    add_url_keys(tx, story, &e.url_keys)?;
                    for &(other, _) in &linked[1..] {
                        merge_stories(tx, other, story)?;
                    }
                    if linked.len() > 1 {
                        // Stories this poll's probe saw may be gone.
                        probes.stored.forget();
                    }
                    bump_revision(tx, now)?;
                    return Ok(Upsert::Merged);
                }
            }
            let uid = entry_uid(feed_url, &e.key);
            let sort_at = published.map_or(now_s, |p| p.min(now_s));
            let updated = e.updated.map(ts).or(published).unwrap_or(now_s);
            let inserted = exec(
                tx,
                "INSERT INTO entry (uid, title, link, content_html, authors, categories,
                     enclosures, published_at, updated_at, first_seen_at, sort_at, content_hash,
                     content_base)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (uid) DO NOTHING",
                params![
                    uid,
                    e.title,
                    e.link,
                    e.content_html,
                    authors,
                    categories,
                    enclosures,
                    published,
                    updated,
                    now_s,
                    sort_at,
                    hash,
                    e.content_base
                ],
            )?;
            // On a uid conflict (the feed was removed and re-added under the
            // same URL while another feed kept the entry) this attaches the
            // source to the existing story instead of duplicating it.
            let entry_id: i64 = if inserted == 1 {
                tx.last_insert_rowid()
            } else {
                query_one(tx, "SELECT id FROM entry WHERE uid = ?1", [&uid], |r| {
                    r.get(0)
                })?
            };
            // The parse stage prepared the words when this poll indexes
            // as it stores (`tributary poll`); an entry that was already
            // there (a uid conflict) may be indexed under other words.
            match &e.search_words {
                Some(words) if inserted == 1 => {
                    add_to_index(tx, entry_id, e.title.as_deref().unwrap_or_default(), words)?;
                    probes.indexed = true;
                }
                _ => queue_for_index(tx, entry_id, inserted != 1)?,
            }
            add_url_keys(tx, entry_id, &e.url_keys)?;
            // A later entry of this poll with one of these keys must look.
            probes.known.add(&e.url_keys);
            exec(
                tx,
                "INSERT INTO entry_source (feed_id, entry_key, entry_id, link, first_seen_at,
                     title, published_at, content_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    feed_id, e.key, entry_id, e.link, now_s, e.title, published, hash
                ],
            )?;
            Ok(Upsert::New(entry_id))
        }
    }
}

/// Keys probed per statement by [`known_url_keys`] and [`StoredRows`]; a
/// fixed count keeps one cached statement (unused slots are NULL, which
/// matches nothing).
pub(super) const KEY_PROBE: usize = 16;

/// What [`upsert_entry`] looks up once per poll rather than once per entry.
pub(super) struct PollProbes<'a> {
    pub(super) stored: StoredRows<'a>,
    pub(super) known: KnownKeys<'a>,
    pub(super) tombstones: Tombstones,
    /// Whether the poll added entries to the search index itself.
    pub(super) indexed: bool,
}

/// What the store holds of one of this feed's entry keys.
#[derive(Debug, Clone, PartialEq)]
struct StoredRow {
    id: i64,
    /// The copy's own hash, else (`own_hash` false) its story's.
    content_hash: String,
    updated_at: i64,
    own_hash: bool,
}

/// The stored rows of a poll's entry keys, probed [`KEY_PROBE`] keys per
/// statement on the first lookup: a poll of 20 entries costs two
/// statements instead of twenty, whether its entries are new or known.
/// A key the poll has since written is looked up on its own again.
pub(super) struct StoredRows<'a> {
    feed_id: i64,
    entries: &'a [ParsedEntry],
    rows: Option<HashMap<String, StoredRow>>,
    written: HashSet<String>,
}

impl<'a> StoredRows<'a> {
    pub(super) fn of(feed_id: i64, entries: &'a [ParsedEntry]) -> Self {
        StoredRows {
            feed_id,
            entries,
            rows: None,
            written: HashSet::new(),
        }
    }

    /// For a feed known to have no stored entries (never read before):
    /// nothing to probe. Keys the poll writes are still looked up.
    pub(super) fn none(feed_id: i64, entries: &'a [ParsedEntry]) -> Self {
        StoredRows {
            rows: Some(HashMap::new()),
            ..StoredRows::of(feed_id, entries)
        }
    }

    /// `key` must be one of the poll's entries' keys.
    fn get(&mut self, tx: &Connection, key: &str) -> rusqlite::Result<Option<StoredRow>> {
        // A copy's own hash; a copy stored before copies kept one is
        // compared with its story's.
        const ROW: &str = "SELECT s.entry_key, e.id, coalesce(s.content_hash, e.content_hash),
                 e.updated_at, s.content_hash IS NOT NULL
             FROM entry_source s JOIN entry e ON e.id = s.entry_id";
        // Built once: the probe runs for every poll that brings entries.
        static PROBE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "{ROW} WHERE s.feed_id = ?1 AND s.entry_key IN ({})",
                numbered(2, KEY_PROBE)
            )
        });
        let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, StoredRow)> {
            Ok((
                r.get(0)?,
                StoredRow {
                    id: r.get(1)?,
                    content_hash: r.get(2)?,
                    updated_at: r.get(3)?,
                    own_hash: r.get(4)?,
                },
            ))
        };
        if self.written.contains(key) {
            return query_one(
                tx,
                &format!("{ROW} WHERE s.feed_id = ?1 AND s.entry_key = ?2"),
                params![self.feed_id, key],
                row,
            )
            .optional()
            .map(|r| r.map(|(_, stored)| stored));
        }
        let rows = match &mut self.rows {
            Some(rows) => rows,
            slot => {
                let mut stmt = tx.prepare_cached(&PROBE)?;
                let mut found = HashMap::new();
                for chunk in self.entries.chunks(KEY_PROBE) {
                    let keys = (0..KEY_PROBE).map(|i| chunk.get(i).map(|e| &e.key));
                    let args = std::iter::once(&self.feed_id as &dyn rusqlite::ToSql).chain(
                        keys.map(|k| match k {
                            Some(k) => k as &dyn rusqlite::ToSql,
                            None => &rusqlite::types::Null,
                        }),
                    );
                    let mut q = stmt.query(rusqlite::params_from_iter(args))?;
                    while let Some(r) = q.next()? {
                        let (k, stored) = row(r)?;
                        found.insert(k, stored);
                    }
                }
                slot.insert(found)
            }
        };
        Ok(rows.get(key).cloned())
    }

    fn written(&mut self, key: &str) {
        self.written.insert(key.to_owned());
    }

    /// Drops what was probed: a merge moved this feed's copies to another
    /// story, so the next lookup probes again.
    fn forget(&mut self) {
        self.rows = None;
    }
}

/// Which of a poll's URL keys some stored entry is already found under,
/// probed once, when the poll's first new entry asks (a poll of entries
/// all stored before asks nothing).
///
/// Nearly every new entry's keys are new: probing them all in a couple of
/// statements per poll, instead of running [`linked_stories`]' lookups for
/// each entry, spares the writer most of the story lookup. Keys this poll
/// stores are added ([`KnownKeys::add`]): a later entry of the same poll
/// may be a copy of an earlier one (a roundup listing an article twice).
pub(super) struct KnownKeys<'a> {
    entries: &'a [ParsedEntry],
    known: Option<HashSet<String>>,
}

impl<'a> KnownKeys<'a> {
    pub(super) fn of(entries: &'a [ParsedEntry]) -> Self {
        KnownKeys {
            entries,
            known: None,
        }
    }

    fn any_of(&mut self, tx: &Connection, keys: &[String]) -> rusqlite::Result<bool> {
        let known = match &mut self.known {
            Some(known) => known,
            slot => slot.insert(known_url_keys(tx, self.entries)?),
        };
        Ok(keys.iter().any(|k| known.contains(k)))
    }

    /// Keys this poll stored: a later entry of the poll with one of them
    /// is a copy to look at (a roundup listing one article twice).
    fn add(&mut self, keys: &[String]) {
        if let Some(known) = &mut self.known {
            known.extend(keys.iter().cloned());
        }
    }
}

fn known_url_keys(tx: &Connection, entries: &[ParsedEntry]) -> rusqlite::Result<HashSet<String>> {
    let keys: Vec<&String> = entries.iter().flat_map(|e| &e.url_keys).collect();
    let mut known = HashSet::new();
    if keys.is_empty() {
        return Ok(known);
    }
    static PROBE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT DISTINCT url_key FROM entry_url WHERE url_key IN ({})",
            numbered(1, KEY_PROBE)
        )
    });
    let mut stmt = tx.prepare_cached(&PROBE)?;
    for chunk in keys.chunks(KEY_PROBE) {
        let args = (0..KEY_PROBE).map(|i| chunk.get(i).map(|k| k.as_str()));
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            known.insert(row.get(0)?);
        }
    }
    Ok(known)
}

pub(super) fn add_url_keys(
    tx: &Connection,
    entry_id: i64,
    keys: &[String],
) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO entry_url (url_key, entry_id) VALUES (?1, ?2)")?;
    for k in keys {
        stmt.execute(params![k, entry_id])?;
    }
    Ok(())
}
