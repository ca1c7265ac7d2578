//! The SQLite backend: every SQL statement of the program lives in this file.
//!
//! Functions here are synchronous and take a `rusqlite::Connection`; the
//! async facade in `store/mod.rs` runs them on the connection's own thread.
//! Each write that belongs together (one poll, one import) is one
//! transaction, so a crash or shutdown never leaves half of it behind.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

use crate::pipeline::dedup;
use crate::pipeline::sanitize::search_words;

use crate::model::{
    ArticleJob, ArticleOutcome, ArticleRecord, Cursor, Enclosure, EntryRules, Feed, FeedOrigin,
    FeedSpec, FeedStatus, OutputEntry, ParsedEntry, PollOutcome, PollRecord, PollReport,
    RAW_HASH_PREFIX, RequestOptions, SourceInfo, TextPrint, Validators, stable_hash,
};

use super::{
    AddOutcome, ArticleState, DbSize, DedupPass, EntryQuery, FeedDay, Purged, PushOutcome,
    PushTarget, Revision, RuleSubject, StatusSnapshot, SyncReport,
};

/// Schema history; append, never edit, once a version has shipped.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("schema.sql")),
        // A feed's own `full_text` setting; NULL follows `[extract] full_text`.
        M::up("ALTER TABLE feed ADD COLUMN full_text INTEGER;"),
        M::up(include_str!("polling.sql")),
        M::up(include_str!("articles.sql")),
        M::up(include_str!("outputs.sql")),
        M::up(include_str!("dedup.sql")),
        M::up(include_str!("retention.sql")),
        M::up(include_str!("throughput.sql")),
        M::up(include_str!("raw_content.sql")),
        M::up(include_str!("search_queue.sql")),
        // A feed's own request options (User-Agent, headers, credentials,
        // proxy) as JSON; NULL: none.
        M::up("ALTER TABLE feed ADD COLUMN request TEXT;"),
        M::up(include_str!("stories.sql")),
        M::up(include_str!("push.sql")),
        // A feed's keep/block rules as JSON; NULL: none.
        M::up("ALTER TABLE feed ADD COLUMN rules TEXT;"),
    ])
}

/// Settings every connection gets. WAL lets the HTTP server's reader run
/// while the single writer commits; NORMAL sync is durable in WAL mode up to
/// the last transaction on power loss.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    register_functions(conn)?;
    // A new database frees pages incrementally, so housekeeping can hand
    // space back to the file system in small steps. This only takes effect
    // before the first table exists; an older database keeps its mode
    // until `tributary purge --vacuum` rebuilds it.
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if tables == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
    }
    // rusqlite caches 16 statements by default; one poll cycles through
    // more than that (schedule, feed state, four per entry, revision,
    // due query, leases), and a thrashing cache recompiles every one.
    conn.set_prepared_statement_cache_capacity(64);
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )
}

/// Whether the database is in WAL mode. `PRAGMA journal_mode = WAL` on a
/// file SQLite may not write keeps the old mode instead of failing.
pub(super) fn is_wal(conn: &Connection) -> rusqlite::Result<bool> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    Ok(mode.eq_ignore_ascii_case("wal"))
}

/// `PRAGMA quick_check`: `None` when every page is sound, else the first
/// few problems SQLite found, joined.
pub(super) fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let lines: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
    Ok((lines != ["ok"]).then(|| lines.join("; ")))
}

/// `regexp(pattern, text)` for output filters. The compiled pattern is
/// cached per statement, so a query compiles each pattern once. A bad
/// pattern is an error (config validation rejects those up front).
pub(super) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "regexp",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let re = ctx.get_or_create_aux(
                0,
                |v| -> Result<regex::Regex, Box<dyn std::error::Error + Send + Sync>> {
                    Ok(regex::Regex::new(v.as_str()?)?)
                },
            )?;
            let text = ctx.get_raw(1).as_str().unwrap_or_default();
            Ok(re.is_match(text))
        },
    )
}

/// Queues an entry for the search indexer ([`index_pending`]). Every path
/// that adds an entry or changes what it is indexed under comes here
/// instead of indexing in its own transaction: tokenising and merging
/// terms was about a sixth of the daemon's CPU while polls arrived flat
/// out, and a queue lets that wait until the writer has time to spare.
/// `indexed` says whether the index may already hold the entry; a row
/// already queued keeps what it said, since the index still holds what it
/// held when that row was queued.
fn queue_for_index(tx: &Connection, entry_id: i64, indexed: bool) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT OR IGNORE INTO search_pending (entry_id, reindex) VALUES (?1, ?2)",
        params![entry_id, indexed],
    )?;
    Ok(())
}

/// What one [`index_pending`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStep {
    /// Entries indexed (or reindexed).
    pub indexed: usize,
    /// Whether more entries wait.
    pub more: bool,
}

/// Indexes up to `max` queued entries, oldest first, in one transaction,
/// and takes them off the queue. An entry is indexed under its title and
/// the words ([`search_words`]) of what the outputs show as its content:
/// the article text when the article is used, else the feed's content.
/// Reading that here, rather than carrying words from the poll, means an
/// entry changed again while queued is indexed once, as it now is.
pub(super) fn index_pending(
    conn: &mut Connection,
    max: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<IndexStep> {
    let tx = conn.transaction()?;
    let mut indexed = 0;
    let mut last = None;
    {
        let mut pending = tx.prepare_cached(
            "SELECT p.entry_id, p.reindex, e.title, coalesce(a.html, e.content_html)
             FROM search_pending p
             JOIN entry e ON e.id = p.entry_id
             LEFT JOIN article a ON a.entry_id = p.entry_id AND a.used = 1
             ORDER BY p.entry_id
             LIMIT ?1",
        )?;
        let mut rows = pending.query([max as i64])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let reindex: bool = row.get(1)?;
            let title: Option<String> = row.get(2)?;
            let html: Option<String> = row.get(3)?;
            if reindex {
                exec(&tx, "DELETE FROM entry_fts WHERE rowid = ?1", [id])?;
            }
            exec(
                &tx,
                "INSERT INTO entry_fts (rowid, title, body) VALUES (?1, ?2, ?3)",
                params![
                    id,
                    title.unwrap_or_default(),
                    search_words(html.as_deref().unwrap_or_default())
                ],
            )?;
            indexed += 1;
            last = Some(id);
        }
    }
    if let Some(last) = last {
        // Every queued id up to `last` was read above, in this transaction.
        exec(
            &tx,
            "DELETE FROM search_pending WHERE entry_id <= ?1",
            [last],
        )?;
        // Searches now find more: their cached pages and validators expire.
        exec(
            &tx,
            "UPDATE meta SET value = value + 1 WHERE key = 'search_rev'",
            [],
        )?;
        exec(
            &tx,
            "UPDATE meta SET value = max(value, ?1) WHERE key = 'search_changed_at'",
            [ts(now)],
        )?;
    }
    let more: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM search_pending)", [], |r| {
        r.get(0)
    })?;
    tx.commit()?;
    Ok(IndexStep { indexed, more })
}

/// Entries waiting for the search indexer.
pub(super) fn search_backlog(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row("SELECT count(*) FROM search_pending", [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// Turns what a reader typed into an FTS5 query that cannot be a syntax
/// error: every word quoted, all required.
fn fts_query(q: &str) -> Option<String> {
    let terms: Vec<String> = q
        .split_whitespace()
        .map(|w| w.replace('"', ""))
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// Settings for the one writer connection, on top of [`configure`]. A poll
/// touches random pages of the entry indexes (uids are hashes), so with
/// SQLite's default 2 MiB page cache nearly every insert re-reads an index
/// page from the OS; 16 MiB keeps the hot part of a few hundred thousand
/// entries' indexes. A larger WAL before each automatic checkpoint (16 MiB
/// instead of 4 MiB) means a page rewritten by many polls is copied into
/// the database, and fsynced, once per checkpoint rather than many times;
/// normally the checkpointer thread (see `checkpoint`) takes over from
/// the automatic checkpoint, at the same size.
pub(super) fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA cache_size = -16384;
         PRAGMA wal_autocheckpoint = 4000;",
    )
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), rusqlite_migration::Error> {
    migrations().to_latest(conn)
}

/// Runs a statement through the connection's statement cache. The poll
/// path runs the same dozen statements for every feed and entry, and
/// compiling one costs more than running it.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, p: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(p)
}

/// `query_row` through the statement cache; see [`exec`].
fn query_one<T, P, F>(conn: &Connection, sql: &str, p: P, f: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)?.query_row(p, f)
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn from_ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

fn opt_ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.map(from_ts)
}

/// The public id of an entry first seen as `key` in the feed at `feed_url`.
/// A UUID-shaped URN so every reader accepts it as an Atom id and RSS guid.
///
/// Its first 32 bits hash the feed alone, the other 96 the feed and key:
/// `uid` is a unique index, and with ids that were wholly random every
/// new entry landed on its own page of it, so each group commit rewrote
/// most of that index into the WAL (the polling benchmark wrote 2.6 GB for
/// a 350 MB database). A feed's entries now sit together. Ids stored
/// before keep their old form: an id never changes once given.
pub fn entry_uid(feed_url: &str, key: &str) -> String {
    let feed = stable_hash(&[feed_url]) >> 96;
    let h = (feed << 96) | (stable_hash(&[feed_url, key]) & ((1u128 << 96) - 1));
    // Mark it as a version 8 ("custom") UUID with the RFC 4122 variant.
    let h = (h & !(0xf << 76)) | (0x8 << 76);
    let h = (h & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{h:032x}");
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn json_list<T: serde::Serialize>(v: &[T]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list<T: serde::de::DeserializeOwned>(s: &str) -> Vec<T> {
    // A malformed column loses only that list, never the whole row.
    serde_json::from_str(s).unwrap_or_default()
}

fn bump_revision(tx: &Connection, now: DateTime<Utc>) -> rusqlite::Result<()> {
    exec(
        tx,
        "UPDATE meta SET value = value + 1 WHERE key = 'entries_rev'",
        [],
    )?;
    exec(
        tx,
        "UPDATE meta SET value = max(value, ?1) WHERE key = 'entries_changed_at'",
        [ts(now)],
    )?;
    Ok(())
}

pub(super) fn ping(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT 1", [], |_| Ok(()))
}

pub(super) fn revision(conn: &Connection) -> rusqlite::Result<Revision> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM meta")?;
    let mut rev = Revision::default();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (k, v) = row?;
        match k.as_str() {
            "entries_rev" => rev.rev = v,
            "entries_changed_at" => rev.changed_at = from_ts(v),
            "search_rev" => rev.search = v,
            "search_changed_at" => rev.search_changed_at = from_ts(v),
            _ => {}
        }
    }
    Ok(rev)
}

// ---------------------------------------------------------------- feeds

fn set_tags(tx: &Connection, feed_id: i64, tags: &[String]) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM feed_tag WHERE feed_id = ?1", [feed_id])?;
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO feed_tag (feed_id, tag) VALUES (?1, ?2)")?;
    for tag in tags {
        stmt.execute(params![feed_id, tag])?;
    }
    Ok(())
}

fn insert_feed(
    tx: &Connection,
    spec: &FeedSpec,
    origin: FeedOrigin,
    now: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO feed (url, title, interval_secs, origin, next_check_at, created_at,
                           full_text, request, rules)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8)",
        params![
            spec.url,
            spec.title,
            spec.interval.map(|d| d.as_secs() as i64),
            origin.as_str(),
            ts(now),
            spec.full_text,
            spec.request.to_json(),
            spec.rules.to_json(),
        ],
    )?;
    let id = tx.last_insert_rowid();
    set_tags(tx, id, &spec.tags)?;
    Ok(id)
}

/// Removes a feed and every entry that no other feed carries.
fn delete_feed(tx: &Connection, feed_id: i64, now: DateTime<Utc>) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM entry WHERE id IN (
             SELECT s.entry_id FROM entry_source s WHERE s.feed_id = ?1
               AND NOT EXISTS (SELECT 1 FROM entry_source o
                               WHERE o.entry_id = s.entry_id AND o.feed_id <> ?1))",
        [feed_id],
    )?;
    tx.execute("DELETE FROM feed WHERE id = ?1", [feed_id])?;
    bump_revision(tx, now)
}

pub(super) fn add_feeds(
    conn: &mut Connection,
    specs: &[FeedSpec],
    origin: FeedOrigin,
    now: DateTime<Utc>,
    progress: &mut dyn FnMut(usize),
) -> rusqlite::Result<Vec<AddOutcome>> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        progress(i);
        let existing: Option<i64> = query_one(
            &tx,
            "SELECT id FROM feed WHERE url = ?1",
            [&spec.url],
            |r| r.get(0),
        )
        .optional()?;
        out.push(match existing {
            Some(_) => AddOutcome::Exists,
            None => {
                insert_feed(&tx, spec, origin, now)?;
                AddOutcome::Added
            }
        });
    }
    tx.commit()?;
    Ok(out)
}

/// Makes the config-owned feeds match `specs`: new ones are added, changed
/// ones updated, ones no longer in the config removed. A feed added earlier
/// from the CLI or OPML that now appears in the config becomes config-owned.
pub(super) fn sync_config_feeds(
    conn: &mut Connection,
    specs: &[FeedSpec],
    now: DateTime<Utc>,
) -> rusqlite::Result<SyncReport> {
    let tx = conn.transaction()?;
    let mut report = SyncReport::default();
    let mut wanted: HashMap<&str, &FeedSpec> = specs.iter().map(|s| (s.url.as_str(), s)).collect();

    let existing: Vec<(i64, String, String)> = {
        let mut stmt = tx.prepare("SELECT id, url, origin FROM feed")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, url, origin) in existing {
        match wanted.remove(url.as_str()) {
            Some(spec) => {
                let changed = tx.execute(
                    "UPDATE feed SET title = ?2, interval_secs = ?3, full_text = ?4,
                         request = ?5, rules = ?6, origin = 'config'
                     WHERE id = ?1 AND (title IS NOT ?2 OR interval_secs IS NOT ?3
                                        OR full_text IS NOT ?4 OR request IS NOT ?5
                                        OR rules IS NOT ?6 OR origin <> 'config')",
                    params![
                        id,
                        spec.title,
                        spec.interval.map(|d| d.as_secs() as i64),
                        spec.full_text,
                        spec.request.to_json(),
                        spec.rules.to_json(),
                    ],
                )?;
                let old_tags: Vec<String> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT tag FROM feed_tag WHERE feed_id = ?1 ORDER BY tag",
                    )?;
                    let rows = stmt.query_map([id], |r| r.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut new_tags = spec.tags.clone();
                new_tags.sort();
                new_tags.dedup();
                if old_tags != new_tags {
                    set_tags(&tx, id, &spec.tags)?;
                }
                if changed > 0 || old_tags != new_tags {
                    report.updated += 1;
                    // Titles and tags show in the output.
                    bump_revision(&tx, now)?;
                }
            }
            None if origin == FeedOrigin::Config.as_str() => {
                delete_feed(&tx, id, now)?;
                report.removed += 1;
            }
            None => {}
        }
    }
    // Insert in config order so ids follow the file.
    for spec in specs {
        if wanted.contains_key(spec.url.as_str()) {
            insert_feed(&tx, spec, FeedOrigin::Config, now)?;
            report.added += 1;
        }
    }
    tx.commit()?;
    Ok(report)
}

pub(super) fn remove_feed(
    conn: &mut Connection,
    url: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Feed>> {
    let Some(feed) = feed_by_url(conn, url)? else {
        return Ok(None);
    };
    let tx = conn.transaction()?;
    delete_feed(&tx, feed.id, now)?;
    tx.commit()?;
    Ok(Some(feed))
}

const FEED_COLUMNS: &str = "f.id, f.url, f.title, f.interval_secs, f.origin, f.site_title,
    f.site_url, f.etag, f.last_modified, f.next_check_at, f.last_checked_at,
    f.last_success_at, f.last_status, f.last_error, f.error_count,
    (SELECT count(*) FROM entry_source s WHERE s.feed_id = f.id),
    f.status, f.fetch_url, f.redirect_url, f.redirect_count, f.interval_secs_current,
    f.schedule_reason, f.learned_interval_secs, f.hints, f.full_text, f.request, f.rules";

fn secs(v: Option<i64>) -> Option<Duration> {
    v.map(|s| Duration::from_secs(s.max(0) as u64))
}

fn feed_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Feed> {
    let origin: String = r.get(4)?;
    Ok(Feed {
        id: r.get(0)?,
        spec: FeedSpec {
            url: r.get(1)?,
            title: r.get(2)?,
            tags: Vec::new(),
            interval: secs(r.get(3)?),
            full_text: r.get(24)?,
            request: RequestOptions::from_json(r.get::<_, Option<String>>(25)?.as_deref()),
            rules: EntryRules::from_json(r.get::<_, Option<String>>(26)?.as_deref()),
        },
        origin: FeedOrigin::parse(&origin).unwrap_or(FeedOrigin::Cli),
        site_title: r.get(5)?,
        site_url: r.get(6)?,
        validators: Validators {
            etag: r.get(7)?,
            last_modified: r.get(8)?,
        },
        next_check_at: from_ts(r.get(9)?),
        last_checked_at: opt_ts(r.get(10)?),
        last_success_at: opt_ts(r.get(11)?),
        last_status: r
            .get::<_, Option<i64>>(12)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(13)?,
        error_count: r.get::<_, i64>(14)?.clamp(0, u32::MAX as i64) as u32,
        entry_count: r.get::<_, i64>(15)?.max(0) as u64,
        status: FeedStatus::parse(&r.get::<_, String>(16)?).unwrap_or(FeedStatus::Active),
        fetch_url: r.get(17)?,
        pending_redirect: r.get::<_, Option<String>>(18)?.map(|u| {
            (
                u,
                r.get::<_, i64>(19).unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            )
        }),
        current_interval: secs(r.get(20)?),
        schedule_reason: r.get(21)?,
        learned_interval: secs(r.get(22)?),
        hints: r
            .get::<_, Option<String>>(23)?
            .and_then(|h| serde_json::from_str(&h).ok())
            .unwrap_or_default(),
    })
}

fn attach_tags(conn: &Connection, feeds: &mut [Feed]) -> rusqlite::Result<()> {
    if feeds.is_empty() {
        return Ok(());
    }
    let mut by_id: HashMap<i64, Vec<String>> = HashMap::new();
    if feeds.len() == 1 {
        let mut stmt =
            conn.prepare_cached("SELECT feed_id, tag FROM feed_tag WHERE feed_id = ?1")?;
        let rows = stmt.query_map([feeds[0].id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (id, tag): (i64, String) = row?;
            by_id.entry(id).or_default().push(tag);
        }
    } else {
        let mut stmt = conn.prepare_cached("SELECT feed_id, tag FROM feed_tag")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (id, tag): (i64, String) = row?;
            by_id.entry(id).or_default().push(tag);
        }
    }
    for f in feeds {
        if let Some(mut tags) = by_id.remove(&f.id) {
            tags.sort();
            f.spec.tags = tags;
        }
    }
    Ok(())
}

fn query_feeds(
    conn: &Connection,
    where_sql: &str,
    p: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<Vec<Feed>> {
    let sql = format!("SELECT {FEED_COLUMNS} FROM feed f {where_sql}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(p, feed_from_row)?;
    let mut feeds: Vec<Feed> = rows.collect::<rusqlite::Result<_>>()?;
    attach_tags(conn, &mut feeds)?;
    Ok(feeds)
}

pub(super) fn feeds(conn: &Connection) -> rusqlite::Result<Vec<Feed>> {
    query_feeds(conn, "ORDER BY f.id", &[])
}

pub(super) fn feed_by_url(conn: &Connection, url: &str) -> rusqlite::Result<Option<Feed>> {
    Ok(query_feeds(conn, "WHERE f.url = ?1", &[&url])?
        .into_iter()
        .next())
}

pub(super) fn feed_by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<Feed>> {
    Ok(query_feeds(conn, "WHERE f.id = ?1", &[&id])?
        .into_iter()
        .next())
}

pub(super) fn due_feeds(
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
pub(super) fn lease_due(
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

pub(super) fn next_due_at(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
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
pub(super) fn spread_overdue(
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
pub(super) fn reschedule(
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
pub(super) fn defer(
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
pub(super) fn release_leases(conn: &Connection, now: DateTime<Utc>) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE feed SET next_check_at = min(next_check_at, ?1), schedule_reason = 'restarted'
         WHERE schedule_reason = ?2",
        params![ts(now), LEASED],
    )
}

/// Host blocks (429 Retry-After) still in force at `now`.
pub(super) fn host_blocks(
    conn: &Connection,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<(String, DateTime<Utc>)>> {
    let mut stmt = conn.prepare_cached("SELECT host, until FROM host_block WHERE until > ?1")?;
    let rows = stmt.query_map([ts(now)], |r| Ok((r.get(0)?, from_ts(r.get(1)?))))?;
    rows.collect()
}

/// Pauses, resumes (also a gone feed) or otherwise sets a feed's status;
/// a resumed feed is due now.
pub(super) fn set_status(
    conn: &Connection,
    feed_id: i64,
    status: FeedStatus,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE feed SET status = ?2,
             next_check_at = CASE WHEN ?2 = 'active' THEN ?3 ELSE next_check_at END,
             schedule_reason = CASE WHEN ?2 = 'active' THEN 'resumed' ELSE ?2 END
         WHERE id = ?1",
        params![feed_id, status.as_str(), ts(now)],
    )?;
    Ok(())
}

// ---------------------------------------------------------------- polls

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
pub(super) fn record_polls(
    conn: &mut Connection,
    recs: &[PollRecord],
) -> rusqlite::Result<Vec<rusqlite::Result<PollReport>>> {
    {
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(recs.len());
        let mut failed = false;
        for rec in recs {
            match write_poll(&tx, rec) {
                Ok(report) => out.push(Ok(report)),
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
    for rec in recs {
        let sp = tx.savepoint()?;
        match write_poll(&sp, rec) {
            Ok(report) => {
                sp.commit()?;
                out.push(Ok(report));
            }
            Err(e) if sp.is_autocommit() => return Err(e),
            Err(e) => out.push(Err(e)),
        }
    }
    tx.commit()?;
    Ok(out)
}

/// One poll's writes, inside the caller's transaction or savepoint.
fn write_poll(tx: &Connection, rec: &PollRecord) -> rusqlite::Result<PollReport> {
    let checked = ts(rec.checked_at);
    let next = ts(rec.schedule.next_check_at);
    let mut report = PollReport::default();
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
            let (feed_url, old_title, old_site): (String, Option<String>, Option<String>) =
                query_one(
                    tx,
                    "SELECT url, site_title, site_url FROM feed WHERE id = ?1",
                    [rec.feed_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
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
                stored: StoredRows::of(rec.feed_id, &feed.entries),
                known: KnownKeys::of(&feed.entries),
                tombstones: Tombstones::of(rec.feed_id),
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
            if meta_changed || report.new > 0 || report.updated > 0 {
                bump_revision(tx, rec.checked_at)?;
            }
        }
    }
    record_day(tx, rec, &report)?;
    Ok(report)
}

/// The UTC day (days since 1970-01-01) of `t`, as `feed_day` counts them.
pub(super) fn day_of(t: DateTime<Utc>) -> i64 {
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

enum Upsert {
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
fn tombstone_key(key: &str) -> [u8; 16] {
    stable_hash(&[key]).to_be_bytes()
}

/// Whether the polled feed has any tombstone, asked once per poll, when
/// its first entry not stored asks. Nearly every feed has none, and the
/// per-entry lookup this spares ran for every new entry of every poll.
struct Tombstones {
    feed_id: i64,
    any: Option<bool>,
}

impl Tombstones {
    fn of(feed_id: i64) -> Self {
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
fn upsert_entry(
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
                let evidence = dedup::Evidence {
                    url_keys: e.url_keys.clone(),
                    listings: vec![dedup::Listing::new(e.title.as_deref(), published)],
                    prints: Vec::new(),
                };
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
            queue_for_index(tx, entry_id, inserted != 1)?;
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

// ---------------------------------------------------------------- dedup

/// Keys probed per statement by [`known_url_keys`] and [`StoredRows`]; a
/// fixed count keeps one cached statement (unused slots are NULL, which
/// matches nothing).
const KEY_PROBE: usize = 16;

/// What [`upsert_entry`] looks up once per poll rather than once per entry.
struct PollProbes<'a> {
    stored: StoredRows<'a>,
    known: KnownKeys<'a>,
    tombstones: Tombstones,
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
struct StoredRows<'a> {
    feed_id: i64,
    entries: &'a [ParsedEntry],
    rows: Option<HashMap<String, StoredRow>>,
    written: HashSet<String>,
}

impl<'a> StoredRows<'a> {
    fn of(feed_id: i64, entries: &'a [ParsedEntry]) -> Self {
        StoredRows {
            feed_id,
            entries,
            rows: None,
            written: HashSet::new(),
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
struct KnownKeys<'a> {
    entries: &'a [ParsedEntry],
    known: Option<HashSet<String>>,
}

impl<'a> KnownKeys<'a> {
    fn of(entries: &'a [ParsedEntry]) -> Self {
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

fn add_url_keys(tx: &Connection, entry_id: i64, keys: &[String]) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO entry_url (url_key, entry_id) VALUES (?1, ?2)")?;
    for k in keys {
        stmt.execute(params![k, entry_id])?;
    }
    Ok(())
}

fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many copies (feed items) a story has.
fn story_copies(tx: &Connection, story: i64) -> rusqlite::Result<i64> {
    query_one(
        tx,
        "SELECT count(*) FROM entry_source WHERE entry_id = ?1",
        [story],
        |r| r.get(0),
    )
}

/// What a stored story says of itself for `dedup::same_story`: every URL
/// key of its copies, every copy's listing (a copy stored before copies
/// kept their own is listed as the story), and every member's print of
/// the current analysis version.
fn evidence_of(tx: &Connection, story: i64) -> rusqlite::Result<dedup::Evidence> {
    let mut ev = dedup::Evidence::default();
    let mut stmt = tx.prepare_cached("SELECT url_key FROM entry_url WHERE entry_id = ?1")?;
    ev.url_keys = stmt
        .query_map([story], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = tx.prepare_cached(
        "SELECT coalesce(s.title, e.title), coalesce(s.published_at, e.published_at)
         FROM entry_source s JOIN entry e ON e.id = s.entry_id WHERE s.entry_id = ?1",
    )?;
    ev.listings = stmt
        .query_map([story], |r| {
            Ok(dedup::Listing::new(
                r.get::<_, Option<String>>(0)?.as_deref(),
                r.get(1)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    // A print stored before prints kept their site is its entry's page.
    let mut stmt = tx.prepare_cached(
        "SELECT p.words, p.simhash, p.minhash, p.published, p.site,
                (SELECT coalesce(a.final_url, o.link) FROM entry o
                 LEFT JOIN article a ON a.entry_id = o.id WHERE o.id = p.origin)
         FROM entry_print p WHERE p.entry_id = ?1 AND p.version = ?2",
    )?;
    let rows = stmt.query_map(params![story, i64::from(dedup::VERSION)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    for row in rows {
        let (words, simhash, minhash, published, site, page) = row?;
        if let Some(sketch) = dedup::Sketch::from_bytes(&minhash) {
            let text = dedup::Candidate {
                fingerprint: dedup::Fingerprint {
                    simhash: simhash as u64,
                    words: u32::try_from(words).unwrap_or(0),
                },
                sketch,
                published,
            };
            ev.prints.push(match site {
                Some(site) => dedup::Print { text, site },
                None => dedup::Print::new(text, page.as_deref()),
            });
        }
    }
    Ok(ev)
}

/// The stories other than `me` that `dedup::same_story` says are one story
/// with `evidence`, with their first-seen times, earliest first.
/// Candidates are stories sharing a URL key, and stories first seen within
/// `dedup::MAX_PUBLISHED_GAP_SECS` of `around` sharing a locality-sensitive
/// key with one of its prints; the pure decision is made here, the SQL
/// only finds candidates.
fn linked_stories(
    tx: &Connection,
    evidence: &dedup::Evidence,
    me: Option<i64>,
    around: i64,
) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut candidates: Vec<i64> = Vec::new();
    if !evidence.url_keys.is_empty() {
        let sql = format!(
            "SELECT DISTINCT entry_id FROM entry_url WHERE url_key IN ({}) AND entry_id IS NOT ?1",
            numbered(2, evidence.url_keys.len())
        );
        let args = std::iter::once(&me as &dyn rusqlite::ToSql)
            .chain(evidence.url_keys.iter().map(|k| k as &dyn rusqlite::ToSql));
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?;
        for row in rows {
            candidates.push(row?);
        }
    }
    let lsh: Vec<i64> = {
        let mut keys: Vec<i64> = evidence
            .prints
            .iter()
            .flat_map(|p| p.text.sketch.lsh_keys())
            .map(|k| k as i64)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    };
    for chunk in lsh.chunks(dedup::LSH_BANDS) {
        let sql = format!(
            "SELECT DISTINCT l.entry_id FROM entry_lsh l JOIN entry x ON x.id = l.entry_id
             WHERE l.lsh_key IN ({}) AND l.entry_id IS NOT ?1
               AND x.first_seen_at BETWEEN ?2 - ?3 AND ?2 + ?3",
            numbered(4, chunk.len())
        );
        let window = dedup::MAX_PUBLISHED_GAP_SECS;
        let head: [&dyn rusqlite::ToSql; 3] = [&me, &around, &window];
        let args = head
            .into_iter()
            .chain(chunk.iter().map(|k| k as &dyn rusqlite::ToSql));
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?;
        for row in rows {
            candidates.push(row?);
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    let mut linked = Vec::new();
    for id in candidates {
        let other = evidence_of(tx, id)?;
        if dedup::same_story(evidence, &other).is_some() {
            let first_seen: i64 = query_one(
                tx,
                "SELECT first_seen_at FROM entry WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            linked.push((id, first_seen));
        }
    }
    linked.sort_unstable_by_key(|&(id, seen)| (seen, id));
    Ok(linked)
}

/// Merges `story` with every story the evidence links it to, transitively,
/// into the earliest first seen of them, which keeps its id. Returns the
/// story `story` is now part of (itself when nothing merged or it was the
/// earliest) and how many stories merged away. Whatever order copies and
/// articles arrive in, the stories end as the groups `dedup::group` makes
/// of the same entries.
fn unite(tx: &Connection, story: i64) -> rusqlite::Result<(i64, usize)> {
    let mut me = story;
    let mut merged = 0;
    // Each round merges at least one story away; the bound is a guard.
    for _ in 0..64 {
        let evidence = evidence_of(tx, me)?;
        let first_seen: i64 = query_one(
            tx,
            "SELECT first_seen_at FROM entry WHERE id = ?1",
            [me],
            |r| r.get(0),
        )?;
        let mut linked = linked_stories(tx, &evidence, Some(me), first_seen)?;
        if linked.is_empty() {
            break;
        }
        linked.push((me, first_seen));
        linked.sort_unstable_by_key(|&(id, seen)| (seen, id));
        let target = linked[0].0;
        for &(id, _) in &linked[1..] {
            merge_stories(tx, id, target)?;
        }
        me = target;
        merged += linked.len() - 1;
    }
    Ok((me, merged))
}

/// The earlier `into` absorbs `from`: its copies, URL keys, prints and
/// candidate keys move over; its article replaces the story's fetched
/// text when it says more, and becomes the story's when it has none;
/// `from` is deleted. The story keeps its id.
fn merge_stories(tx: &Connection, from: i64, into: i64) -> rusqlite::Result<()> {
    exec(
        tx,
        "UPDATE entry_source SET entry_id = ?2 WHERE entry_id = ?1",
        params![from, into],
    )?;
    exec(
        tx,
        "INSERT OR IGNORE INTO entry_url (url_key, entry_id)
         SELECT url_key, ?2 FROM entry_url WHERE entry_id = ?1",
        params![from, into],
    )?;
    exec(
        tx,
        "UPDATE entry_print SET entry_id = ?2 WHERE entry_id = ?1",
        params![from, into],
    )?;
    exec(
        tx,
        "INSERT OR IGNORE INTO entry_lsh (lsh_key, entry_id)
         SELECT lsh_key, ?2 FROM entry_lsh WHERE entry_id = ?1",
        params![from, into],
    )?;
    let article = |id: i64| -> rusqlite::Result<Option<(String, bool, i64)>> {
        query_one(
            tx,
            "SELECT status, used, coalesce(word_count, 0) FROM article WHERE entry_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
    };
    match (article(from)?, article(into)?) {
        // The story has no page to fetch: it takes `from`'s, fetched or not.
        (Some(_), None) => {
            exec(
                tx,
                "UPDATE article SET entry_id = ?2 WHERE entry_id = ?1",
                params![from, into],
            )?;
            if article(into)?.is_some_and(|(_, used, _)| used) {
                queue_for_index(tx, into, true)?;
            }
        }
        // A fetched article that says more replaces the story's text. One
        // still to be fetched is kept: its page may be evidence (its
        // canonical URL, its text) that links further copies.
        (Some((_, true, from_words)), Some((status, used, words)))
            if status != "pending" && (!used || words < from_words) =>
        {
            exec(
                tx,
                "INSERT OR REPLACE INTO article (entry_id, feed_id, url, status, attempts,
                     next_attempt_at, final_url, canonical_url, html, text, word_count, used,
                     fetched_at)
                 SELECT ?2, feed_id, url, 'done', attempts, next_attempt_at, final_url,
                        canonical_url, html, text, word_count, used, fetched_at
                 FROM article WHERE entry_id = ?1",
                params![from, into],
            )?;
            queue_for_index(tx, into, true)?;
        }
        _ => {}
    }
    exec(tx, "DELETE FROM entry WHERE id = ?1", [from])?;
    Ok(())
}

/// Stores the analysis of `entry_id`'s own article (replacing an earlier
/// one of the same article, keeping its members' prints) and its
/// candidate keys.
fn store_print(
    tx: &Connection,
    entry_id: i64,
    print: &TextPrint,
    page_url: &str,
) -> rusqlite::Result<()> {
    exec(
        tx,
        "DELETE FROM entry_print WHERE entry_id = ?1 AND origin = ?1",
        [entry_id],
    )?;
    exec(
        tx,
        "INSERT INTO entry_print (entry_id, origin, site, version, words, simhash, minhash,
             published)
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            entry_id,
            dedup::site_of(page_url).unwrap_or_default(),
            i64::from(print.version),
            i64::from(print.words),
            print.simhash as i64,
            print.minhash,
            print.published
        ],
    )?;
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO entry_lsh (lsh_key, entry_id) VALUES (?1, ?2)")?;
    for k in &print.lsh_keys {
        stmt.execute(params![*k as i64, entry_id])?;
    }
    Ok(())
}

/// Entries the one-time re-examination looks at per transaction.
pub(super) const DEDUP_PASS_BATCH: usize = 50;

/// One step of the one-time re-examination of stories stored before
/// copies in one feed, groups and every member's print were considered:
/// up to `batch` entries, in one transaction, each merged with whatever
/// its stored evidence links it to ([`unite`]). Returns `None` once the
/// pass has run (and records when), else how many stories merged away.
pub(super) fn dedup_pass_step(
    conn: &mut Connection,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<usize>> {
    let tx = conn.transaction()?;
    let next: Option<i64> = query_one(
        &tx,
        "SELECT value FROM meta WHERE key = 'dedup_pass_next'",
        [],
        |r| r.get(0),
    )
    .optional()?;
    let Some(next) = next else {
        return Ok(None);
    };
    let ids: Vec<i64> = {
        let mut stmt =
            tx.prepare_cached("SELECT id FROM entry WHERE id >= ?1 ORDER BY id LIMIT ?2")?;
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        stmt.query_map(params![next, limit], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut merged = 0;
    for &id in &ids {
        let exists: bool = query_one(
            &tx,
            "SELECT EXISTS (SELECT 1 FROM entry WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        if exists {
            merged += unite(&tx, id)?.1;
        }
    }
    if merged > 0 {
        bump_revision(&tx, now)?;
    }
    match ids.last() {
        Some(last) if ids.len() == batch => {
            exec(
                &tx,
                "UPDATE meta SET value = ?1 WHERE key = 'dedup_pass_next'",
                [last + 1],
            )?;
        }
        _ => {
            exec(&tx, "DELETE FROM meta WHERE key = 'dedup_pass_next'", [])?;
            exec(
                &tx,
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('dedup_pass_done_at', ?1)",
                [ts(now)],
            )?;
        }
    }
    tx.commit()?;
    Ok(Some(merged))
}

/// When the one-time re-examination finished (`None` while it has not).
pub(super) fn dedup_pass_done_at(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let at: Option<i64> = query_one(
        conn,
        "SELECT value FROM meta WHERE key = 'dedup_pass_done_at'",
        [],
        |r| r.get(0),
    )
    .optional()?;
    Ok(opt_ts(at))
}

// ---------------------------------------------------------------- articles

/// Articles due for an attempt, oldest first, from feeds still polled.
pub(super) fn due_articles(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> rusqlite::Result<Vec<ArticleJob>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT a.entry_id, a.feed_id, a.url, e.title, e.authors, e.content_html, a.attempts,
                e.published_at
         FROM article a
         JOIN entry e ON e.id = a.entry_id
         JOIN feed f ON f.id = a.feed_id AND f.status = 'active'
         WHERE a.status = 'pending' AND a.next_attempt_at <= ?1
         ORDER BY a.next_attempt_at, a.entry_id
         LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![ts(now), limit], |r| {
        Ok(ArticleJob {
            entry_id: r.get(0)?,
            feed_id: r.get(1)?,
            url: r.get(2)?,
            title: r.get(3)?,
            authors: parse_list(&r.get::<_, String>(4)?),
            feed_html: r.get(5)?,
            attempts: r.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
            published: r.get(7)?,
        })
    })?;
    rows.collect()
}

pub(super) fn next_article_at(conn: &Connection) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let v: Option<i64> = conn.query_row(
        "SELECT min(next_attempt_at) FROM article WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )?;
    Ok(opt_ts(v))
}

/// Holds dispatched articles back while they are fetched.
pub(super) fn lease_articles(
    conn: &mut Connection,
    ids: &[i64],
    until: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt =
            tx.prepare_cached("UPDATE article SET next_attempt_at = ?2 WHERE entry_id = ?1")?;
        for id in ids {
            stmt.execute(params![id, ts(until)])?;
        }
    }
    tx.commit()
}

/// Records an article attempt; returns whether the entry was merged into
/// an earlier story.
pub(super) fn record_article(conn: &mut Connection, rec: &ArticleRecord) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    // The entry may have joined an earlier story while its page was
    // fetched (another copy's evidence linked them): its article went
    // with it, or the story had one already. Nothing left to record.
    let exists: bool = query_one(
        &tx,
        "SELECT EXISTS (SELECT 1 FROM article WHERE entry_id = ?1)",
        [rec.entry_id],
        |r| r.get(0),
    )?;
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
            tx.execute(
                "UPDATE article SET status = 'done', attempts = attempts + 1, last_error = NULL,
                     final_url = ?2, canonical_url = ?3, html = ?4, text = ?5, word_count = ?6,
                     used = ?7, fetched_at = ?8
                 WHERE entry_id = ?1",
                params![
                    rec.entry_id,
                    final_url,
                    canonical_url,
                    html,
                    text,
                    *word_count as i64,
                    *use_for_output,
                    at
                ],
            )?;
            if *use_for_output {
                queue_for_index(&tx, rec.entry_id, true)?;
                bump_revision(&tx, rec.at)?;
            }
            // One story, one entry: the same page (final or canonical URL)
            // or the same text, in this feed or another, joins this entry
            // with every story it links, under the earliest one's id.
            add_url_keys(&tx, rec.entry_id, url_keys)?;
            if let Some(p) = print {
                store_print(&tx, rec.entry_id, p, final_url)?;
            }
            let (story, changed) = unite(&tx, rec.entry_id)?;
            if changed > 0 {
                bump_revision(&tx, rec.at)?;
            }
            merged = story != rec.entry_id;
        }
        ArticleOutcome::Failed { error } => {
            tx.execute(
                "UPDATE article SET attempts = attempts + 1, last_error = ?2,
                     status = CASE WHEN ?3 IS NULL THEN 'failed' ELSE 'pending' END,
                     next_attempt_at = coalesce(?3, next_attempt_at)
                 WHERE entry_id = ?1",
                params![rec.entry_id, error, retry],
            )?;
        }
        ArticleOutcome::Deferred => {
            tx.execute(
                "UPDATE article SET next_attempt_at = coalesce(?2, next_attempt_at)
                 WHERE entry_id = ?1",
                params![rec.entry_id, retry],
            )?;
        }
    }
    tx.commit()?;
    Ok(merged)
}

/// Article states for one entry, for tests and status views.
pub(super) fn article_state(
    conn: &Connection,
    entry_uid: &str,
) -> rusqlite::Result<Option<ArticleState>> {
    conn.query_row(
        "SELECT a.status, a.attempts, a.last_error, a.word_count, a.used
         FROM article a JOIN entry e ON e.id = a.entry_id WHERE e.uid = ?1",
        [entry_uid],
        |r| {
            Ok(ArticleState {
                status: r.get(0)?,
                attempts: r.get::<_, i64>(1)?.max(0) as u32,
                last_error: r.get(2)?,
                word_count: r.get::<_, Option<i64>>(3)?.map(|n| n.max(0) as usize),
                used: r.get(4)?,
            })
        },
    )
    .optional()
}

// ---------------------------------------------------------------- retention
//
// Each function here is one short transaction over at most `batch` rows,
// so the single writer is never held for long: housekeeping calls them in
// a loop and polls commit in between.

/// Tombstones every source of `entry_ids` and deletes the entries (their
/// sources, articles and search rows go with them: ON DELETE CASCADE and
/// the `entry_fts_delete` trigger).
fn bury_entries(
    tx: &Connection,
    entry_ids: &[i64],
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let mut purged = Purged::default();
    let mut sources =
        tx.prepare_cached("SELECT feed_id, entry_key FROM entry_source WHERE entry_id = ?1")?;
    let mut delete = tx.prepare_cached("DELETE FROM entry WHERE id = ?1")?;
    for id in entry_ids {
        let rows: Vec<(i64, String)> = sources
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (feed_id, key) in rows {
            purged.tombstones += add_tombstone(tx, feed_id, &key, now)?;
        }
        purged.entries += delete.execute([id])?;
    }
    if purged.entries > 0 {
        bump_revision(tx, now)?;
    }
    Ok(purged)
}

/// Returns 1 when the tombstone is new.
fn add_tombstone(
    tx: &Connection,
    feed_id: i64,
    key: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let hash = tombstone_key(key);
    let added = tx
        .prepare_cached(
            "INSERT INTO tombstone (feed_id, key_hash, seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (feed_id, key_hash) DO NOTHING",
        )?
        .execute(params![feed_id, hash, ts(now)])?;
    if added == 0 {
        tx.prepare_cached(
            "UPDATE tombstone SET seen_at = max(seen_at, ?3) WHERE feed_id = ?1 AND key_hash = ?2",
        )?
        .execute(params![feed_id, hash, ts(now)])?;
    }
    Ok(added)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn purge_ids(conn: &mut Connection, ids: Vec<i64>, now: DateTime<Utc>) -> rusqlite::Result<Purged> {
    if ids.is_empty() {
        return Ok(Purged::default());
    }
    let tx = conn.transaction()?;
    let purged = bury_entries(&tx, &ids, now)?;
    tx.commit()?;
    Ok(purged)
}

/// Entries among the newest `:keep` of any feed that carries them: the
/// age and size limits never purge these, so a feed that was read stays
/// visible whatever the age of its posts. A CTE for the queries below.
const KEPT_NEWEST: &str = "kept(id) AS (
    SELECT entry_id FROM (
        SELECT s.entry_id, row_number() OVER (
            PARTITION BY s.feed_id ORDER BY e.sort_at DESC, e.id DESC) AS n
        FROM entry_source s JOIN entry e ON e.id = s.entry_id)
    WHERE n <= :keep)";

/// Purges up to `batch` of the oldest entries whose output time is before
/// `cutoff`, except each feed's newest `keep`.
pub(super) fn purge_older_than(
    conn: &mut Connection,
    cutoff: DateTime<Utc>,
    keep: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare_cached(&format!(
            "WITH {KEPT_NEWEST}
             SELECT id FROM entry WHERE sort_at < :cutoff AND id NOT IN kept
             ORDER BY sort_at, id LIMIT :batch"
        ))?;
        stmt.query_map(
            rusqlite::named_params! {
                ":cutoff": ts(cutoff), ":keep": limit(keep), ":batch": limit(batch)
            },
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?
    };
    purge_ids(conn, ids, now)
}

/// Purges up to `batch` of the oldest entries of all feeds (for the size
/// cap), except each feed's newest `keep`.
pub(super) fn purge_oldest(
    conn: &mut Connection,
    keep: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let ids: Vec<i64> = {
        let mut stmt = conn.prepare_cached(&format!(
            "WITH {KEPT_NEWEST}
             SELECT id FROM entry WHERE id NOT IN kept ORDER BY sort_at, id LIMIT :batch"
        ))?;
        stmt.query_map(
            rusqlite::named_params! { ":keep": limit(keep), ":batch": limit(batch) },
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?
    };
    purge_ids(conn, ids, now)
}

/// Feeds carrying more than `max` entries.
pub(super) fn feeds_over(conn: &Connection, max: usize) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT feed_id FROM entry_source GROUP BY feed_id HAVING count(*) > ?1 ORDER BY feed_id",
    )?;
    stmt.query_map([limit(max)], |r| r.get(0))?.collect()
}

/// Releases up to `batch` of one feed's entries beyond its newest `keep`:
/// the feed's claim is tombstoned and dropped, and an entry no other feed
/// carries is deleted.
pub(super) fn purge_feed_excess(
    conn: &mut Connection,
    feed_id: i64,
    keep: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<Purged> {
    let tx = conn.transaction()?;
    let rows: Vec<(String, i64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT s.entry_key, s.entry_id FROM entry_source s JOIN entry e ON e.id = s.entry_id
             WHERE s.feed_id = ?1 ORDER BY e.sort_at DESC, e.id DESC LIMIT ?3 OFFSET ?2",
        )?;
        stmt.query_map(params![feed_id, limit(keep), limit(batch)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    let mut purged = Purged::default();
    for (key, entry_id) in &rows {
        purged.tombstones += add_tombstone(&tx, feed_id, key, now)?;
        tx.prepare_cached("DELETE FROM entry_source WHERE feed_id = ?1 AND entry_key = ?2")?
            .execute(params![feed_id, key])?;
        purged.entries += tx
            .prepare_cached(
                "DELETE FROM entry WHERE id = ?1
                   AND NOT EXISTS (SELECT 1 FROM entry_source WHERE entry_id = ?1)",
            )?
            .execute([entry_id])?;
    }
    if !rows.is_empty() {
        bump_revision(&tx, now)?;
    }
    tx.commit()?;
    Ok(purged)
}

/// Drops up to `batch` tombstones last seen before `cutoff`.
pub(super) fn expire_tombstones(
    conn: &Connection,
    cutoff: DateTime<Utc>,
    batch: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM tombstone WHERE (feed_id, key_hash) IN (
             SELECT feed_id, key_hash FROM tombstone WHERE seen_at < ?1
             ORDER BY seen_at LIMIT ?2)",
        params![ts(cutoff), limit(batch)],
    )
}

/// Drops up to `batch` of the longest-unseen tombstones beyond `max`.
pub(super) fn trim_tombstones(
    conn: &Connection,
    max: usize,
    batch: usize,
) -> rusqlite::Result<usize> {
    let count: i64 = conn.query_row("SELECT count(*) FROM tombstone", [], |r| r.get(0))?;
    let excess = (count - limit(max)).clamp(0, limit(batch));
    if excess == 0 {
        return Ok(0);
    }
    conn.execute(
        "DELETE FROM tombstone WHERE (feed_id, key_hash) IN (
             SELECT feed_id, key_hash FROM tombstone ORDER BY seen_at LIMIT ?1)",
        [excess],
    )
}

/// Forgets poll history before `day`.
pub(super) fn trim_history(conn: &Connection, day: i64) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM feed_day WHERE day < ?1", [day])
}

pub(super) fn entry_count(conn: &Connection) -> rusqlite::Result<u64> {
    Ok(conn
        .query_row("SELECT count(*) FROM entry", [], |r| r.get::<_, i64>(0))?
        .max(0) as u64)
}

pub(super) fn db_size(conn: &Connection) -> rusqlite::Result<DbSize> {
    let pragma = |name: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
    };
    let page_size = pragma("page_size")?.max(0) as u64;
    let pages = pragma("page_count")?.max(0) as u64;
    let free = pragma("freelist_count")?.max(0) as u64;
    Ok(DbSize {
        file_bytes: pages * page_size,
        used_bytes: pages.saturating_sub(free) * page_size,
        incremental_vacuum: pragma("auto_vacuum")? == 2,
    })
}

/// Hands up to `pages` free pages back to the file system (incremental
/// auto-vacuum only; a no-op otherwise).
pub(super) fn incremental_vacuum(conn: &Connection, pages: usize) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages});"))
}

/// One bounded step of merging the search index, which drops the rows of
/// deleted entries from its segments. Returns whether there was work.
pub(super) fn merge_search_index(conn: &Connection, pages: usize) -> rusqlite::Result<bool> {
    let before = conn.total_changes();
    // A negative page count merges even a single segment, so deleted rows
    // are dropped however the index is laid out.
    conn.execute(
        "INSERT INTO entry_fts (entry_fts, rank) VALUES ('merge', ?1)",
        [-limit(pages)],
    )?;
    // FTS5 reports one change for the command itself; more means it wrote.
    Ok(conn.total_changes() - before > 1)
}

/// `PRAGMA optimize` and a checkpoint that truncates the WAL file.
pub(super) fn optimize_and_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA optimize;")?;
    // Returns (busy, log pages, checkpointed pages); a busy checkpoint is
    // simply retried next time.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Rebuilds the whole file with incremental auto-vacuum on. Long, and
/// needs free disk space the size of the database: only on request.
pub(super) fn full_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
}

pub(super) fn set_housekept(conn: &Connection, at: DateTime<Utc>) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('housekeeping_at', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [ts(at)],
    )?;
    Ok(())
}

// ---------------------------------------------------------------- status

/// Everything `status` shows, read in one transaction so the numbers agree.
pub(super) fn status(conn: &mut Connection, since_day: i64) -> rusqlite::Result<StatusSnapshot> {
    let tx = conn.transaction()?;
    let feeds = query_feeds(&tx, "ORDER BY f.id", &[])?;
    let count = |sql: &str| -> rusqlite::Result<u64> {
        Ok(tx.query_row(sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64)
    };
    let entries = count("SELECT count(*) FROM entry")?;
    let tombstones = count("SELECT count(*) FROM tombstone")?;
    let articles_pending = count("SELECT count(*) FROM article WHERE status = 'pending'")?;
    let articles_failed = count("SELECT count(*) FROM article WHERE status = 'failed'")?;
    let housekept_at = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'housekeeping_at'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(from_ts);
    let dedup_pass = match dedup_pass_done_at(&tx)? {
        Some(at) => DedupPass::Done(at),
        None => DedupPass::Pending,
    };
    let mut history: HashMap<i64, Vec<FeedDay>> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT feed_id, day, polls, not_modified, errors, new_entries FROM feed_day
             WHERE day >= ?1 ORDER BY feed_id, day",
        )?;
        let rows = stmt.query_map([since_day], |r| {
            let n = |i| {
                r.get::<_, i64>(i)
                    .map(|v| v.clamp(0, u32::MAX as i64) as u32)
            };
            Ok((
                r.get::<_, i64>(0)?,
                FeedDay {
                    day: r.get(1)?,
                    polls: n(2)?,
                    not_modified: n(3)?,
                    errors: n(4)?,
                    new_entries: n(5)?,
                },
            ))
        })?;
        for row in rows {
            let (feed_id, day) = row?;
            history.entry(feed_id).or_default().push(day);
        }
    }
    let size = db_size(&tx)?;
    let search_backlog = search_backlog(&tx)?;
    tx.commit()?;
    Ok(StatusSnapshot {
        feeds,
        entries,
        tombstones,
        articles_pending,
        articles_failed,
        search_backlog,
        size,
        housekept_at,
        dedup_pass,
        history,
    })
}

// ---------------------------------------------------------------- output

/// A feed's stored entries as its keep/block rules read them: id, the
/// feed's key, title, content as given, authors, categories.
pub(super) fn feed_entries_for_rules(
    conn: &Connection,
    feed_id: i64,
) -> rusqlite::Result<Vec<RuleSubject>> {
    let mut stmt = conn.prepare(
        "SELECT e.id, s.entry_key, e.title, e.content_html, e.authors, e.categories
         FROM entry_source s JOIN entry e ON e.id = s.entry_id WHERE s.feed_id = ?1",
    )?;
    let rows = stmt.query_map([feed_id], |r| {
        let list = |json: Option<String>| -> Vec<String> {
            json.and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default()
        };
        Ok(RuleSubject {
            entry_id: r.get(0)?,
            key: r.get(1)?,
            title: r.get(2)?,
            content: r.get(3)?,
            authors: list(r.get(4)?),
            categories: list(r.get(5)?),
        })
    })?;
    rows.collect()
}

/// Drops `feed_id`'s claim on the entries with these keys, and each entry
/// no other feed carries. No tombstone: the feed's rules keep them out,
/// and relaxing the rules lets them back in.
pub(super) fn release_entries(
    conn: &mut Connection,
    feed_id: i64,
    keys: &[String],
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut removed = 0;
    for key in keys {
        let entry_id: Option<i64> = query_one(
            &tx,
            "SELECT entry_id FROM entry_source WHERE feed_id = ?1 AND entry_key = ?2",
            params![feed_id, key],
            |r| r.get(0),
        )
        .optional()?;
        let Some(entry_id) = entry_id else { continue };
        tx.prepare_cached("DELETE FROM entry_source WHERE feed_id = ?1 AND entry_key = ?2")?
            .execute(params![feed_id, key])?;
        tx.prepare_cached(
            "DELETE FROM entry WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM entry_source WHERE entry_id = ?1)",
        )?
        .execute([entry_id])?;
        removed += 1;
    }
    if removed > 0 {
        bump_revision(&tx, now)?;
    }
    tx.commit()?;
    Ok(removed)
}

/// A push target's state, created at the newest entry when it is new (a
/// new webhook gets what arrives from now on, not the backlog).
pub(super) fn push_target(
    conn: &mut Connection,
    output: &str,
    target: &str,
) -> rusqlite::Result<PushTarget> {
    conn.execute(
        "INSERT OR IGNORE INTO push_target (output, target, delivered_id)
         VALUES (?1, ?2, (SELECT coalesce(max(id), 0) FROM entry))",
        params![output, target],
    )?;
    query_one(
        conn,
        "SELECT delivered_id, attempts, retry_at, last_error FROM push_target
         WHERE output = ?1 AND target = ?2",
        params![output, target],
        |r| {
            Ok(PushTarget {
                delivered_id: r.get(0)?,
                attempts: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                retry_at: opt_ts(r.get(2)?),
                last_error: r.get(3)?,
            })
        },
    )
}

/// Records a push attempt: delivered up to `delivered_id` (attempts reset),
/// or failed (`error`, retry at `retry_at`).
pub(super) fn record_push(
    conn: &mut Connection,
    output: &str,
    target: &str,
    outcome: &PushOutcome,
) -> rusqlite::Result<()> {
    match outcome {
        PushOutcome::Delivered { up_to } => conn.execute(
            "UPDATE push_target SET delivered_id = max(delivered_id, ?3), attempts = 0,
                 retry_at = NULL, last_error = NULL
             WHERE output = ?1 AND target = ?2",
            params![output, target, up_to],
        )?,
        PushOutcome::Failed { error, retry_at } => conn.execute(
            "UPDATE push_target SET attempts = attempts + 1, retry_at = ?3, last_error = ?4
             WHERE output = ?1 AND target = ?2",
            params![output, target, ts(*retry_at), error],
        )?,
    };
    Ok(())
}

pub(super) fn entries(conn: &Connection, q: &EntryQuery) -> rusqlite::Result<Vec<OutputEntry>> {
    // With a search, SQLite's own plan walks every FTS match, looks each
    // entry up and sorts them all: 130 ms for a word in most of 100,000
    // entries (benches/outputs.rs). Walking the output order instead and
    // stopping at the page's end costs at most one pass over the match
    // list (about 30 ms for that word, under 1 ms for a rarer one).
    let index = if q.search.is_some() {
        " INDEXED BY entry_sort"
    } else {
        ""
    };
    let mut sql = format!(
        "SELECT e.id, e.sort_at, e.uid, e.title, e.link,
                CASE WHEN a.used = 1 THEN a.html ELSE e.content_html END AS content,
                e.authors, e.categories, e.enclosures, e.published_at, e.updated_at,
                CASE WHEN a.used = 1 THEN NULL ELSE e.content_base END,
                coalesce(a.used, 0) = 1
         FROM entry e{index}
         LEFT JOIN article a ON a.entry_id = e.id
         WHERE 1"
    );
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(c) = q.after {
        sql.push_str(" AND (e.sort_at, e.id) < (?, ?)");
        args.push(Box::new(c.sort_at));
        args.push(Box::new(c.id));
    }
    if let Some(id) = q.since_id {
        sql.push_str(" AND e.id > ?");
        args.push(Box::new(id));
    }
    if !q.tags.is_empty() {
        sql.push_str(&format!(
            " AND e.id IN (SELECT s.entry_id FROM entry_source s
                           JOIN feed_tag t ON t.feed_id = s.feed_id WHERE t.tag IN ({}))",
            placeholders(q.tags.len())
        ));
        args.extend(
            q.tags
                .iter()
                .map(|t| Box::new(t.clone()) as Box<dyn rusqlite::ToSql>),
        );
    }
    if !q.feeds.is_empty() {
        sql.push_str(&format!(
            " AND e.id IN (SELECT s.entry_id FROM entry_source s
                           JOIN feed f ON f.id = s.feed_id WHERE f.url IN ({}))",
            placeholders(q.feeds.len())
        ));
        args.extend(
            q.feeds
                .iter()
                .map(|t| Box::new(t.clone()) as Box<dyn rusqlite::ToSql>),
        );
    }
    if let Some(fts) = q.search.as_deref().and_then(fts_query) {
        sql.push_str(" AND e.id IN (SELECT rowid FROM entry_fts WHERE entry_fts MATCH ?)");
        args.push(Box::new(fts));
    }
    if let Some(re) = &q.include {
        sql.push_str(
            " AND (regexp(?1000, coalesce(e.title, '')) OR regexp(?1000, coalesce(content, '')))",
        );
        args.push(Box::new(re.clone()));
    }
    if let Some(re) = &q.exclude {
        sql.push_str(" AND NOT (regexp(?1001, coalesce(e.title, '')) OR regexp(?1001, coalesce(content, '')))");
        args.push(Box::new(re.clone()));
    }
    sql.push_str(if q.since_id.is_some() {
        // Storage order, oldest first: what a push delivers next.
        " ORDER BY e.id LIMIT ?"
    } else {
        " ORDER BY e.sort_at DESC, e.id DESC LIMIT ?"
    });
    args.push(Box::new(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    let sql = number_placeholders(&sql);

    let mut stmt = conn.prepare_cached(&sql)?;
    let params: Vec<&dyn rusqlite::ToSql> = args.iter().map(|b| b.as_ref()).collect();
    let rows = stmt.query_map(params.as_slice(), |r| {
        Ok(OutputEntry {
            cursor: Cursor {
                sort_at: r.get(1)?,
                id: r.get(0)?,
            },
            uid: r.get(2)?,
            title: r.get(3)?,
            link: r.get(4)?,
            content_html: r.get(5)?,
            content_base: r.get(11)?,
            content_is_article: r.get(12)?,
            authors: parse_list(&r.get::<_, String>(6)?),
            categories: parse_list(&r.get::<_, String>(7)?),
            enclosures: parse_list(&r.get::<_, String>(8)?),
            published: opt_ts(r.get(9)?),
            updated: from_ts(r.get(10)?),
            sources: Vec::new(),
        })
    })?;
    let mut entries: Vec<OutputEntry> = rows.collect::<rusqlite::Result<_>>()?;
    attach_sources(conn, &mut entries)?;
    Ok(entries)
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Numbers the plain `?` placeholders in order, leaving the include and
/// exclude patterns (`?1000`, `?1001`, each used twice) to be renumbered
/// to the positions their values were pushed at.
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    let mut pending: Vec<(String, usize)> = Vec::new();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if digits.is_empty() {
            n += 1;
            out.push_str(&format!("?{n}"));
        } else {
            // A named slot: the first use claims the next number.
            let slot = match pending.iter().find(|(d, _)| *d == digits) {
                Some((_, k)) => *k,
                None => {
                    n += 1;
                    pending.push((digits, n));
                    n
                }
            };
            out.push_str(&format!("?{slot}"));
        }
    }
    out
}

/// Every feed that carried each entry, first-seen first.
fn attach_sources(conn: &Connection, entries: &mut [OutputEntry]) -> rusqlite::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT s.entry_id, f.url, coalesce(f.title, f.site_title, f.url), f.site_url, s.link
         FROM entry_source s JOIN feed f ON f.id = s.feed_id
         WHERE s.entry_id IN ({})
         ORDER BY s.entry_id, s.first_seen_at, s.rowid",
        placeholders(entries.len())
    );
    let ids: Vec<i64> = entries.iter().map(|e| e.cursor.id).collect();
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(ids.iter()), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            SourceInfo {
                feed_url: r.get(1)?,
                title: r.get(2)?,
                site_url: r.get(3)?,
                link: r.get(4)?,
            },
        ))
    })?;
    let mut by_id: HashMap<i64, Vec<SourceInfo>> = HashMap::new();
    for row in rows {
        let (id, src) = row?;
        by_id.entry(id).or_default().push(src);
    }
    for e in entries {
        e.sources = by_id.remove(&e.cursor.id).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_uid_is_stable_and_uuid_shaped() {
        let a = entry_uid("https://example.com/feed", "guid:1");
        assert_eq!(a, entry_uid("https://example.com/feed", "guid:1"));
        assert_ne!(a, entry_uid("https://example.com/feed", "guid:2"));
        let hex = a.strip_prefix("urn:uuid:").unwrap_or_default();
        assert_eq!(hex.len(), 36);
        assert_eq!(&hex[14..15], "8");
        assert!(matches!(&hex[19..20], "8" | "9" | "a" | "b"), "{a}");
        // Pinned so a dependency bump that changed the hash would fail here
        // instead of silently giving every stored story a new id.
        assert_eq!(a, "urn:uuid:c0b08dfd-d1ba-8ccf-a1e5-0ec1a377e656");
        // One feed's entries share a prefix (they sit together in the
        // index); another feed's do not.
        let b = entry_uid("https://example.com/feed", "guid:2");
        let c = entry_uid("https://example.org/feed", "guid:1");
        assert_eq!(a[..17], b[..17]);
        assert_ne!(a[..17], c[..17]);
    }

    #[test]
    fn new_databases_vacuum_incrementally_and_old_ones_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let mut fresh = Connection::open(dir.path().join("new.db")).unwrap();
        configure(&fresh).unwrap();
        migrate(&mut fresh).unwrap();
        assert!(db_size(&fresh).unwrap().incremental_vacuum);

        // A database created before retention existed keeps its mode…
        let mut old = Connection::open(dir.path().join("old.db")).unwrap();
        Migrations::new(vec![M::up(include_str!("schema.sql"))])
            .to_latest(&mut old)
            .unwrap();
        configure(&old).unwrap();
        migrate(&mut old).unwrap();
        assert!(!db_size(&old).unwrap().incremental_vacuum);
        // …until a full vacuum rebuilds it.
        full_vacuum(&old).unwrap();
        assert!(db_size(&old).unwrap().incremental_vacuum);
    }

    /// The search index merges eight segments at a time (see
    /// `throughput.sql`): a setting FTS5 keeps in its own config table.
    #[test]
    fn search_index_merges_eight_segments_at_a_time() {
        let conn = memory_db();
        let automerge: i64 = conn
            .query_row(
                "SELECT v FROM entry_fts_config WHERE k = 'automerge'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(automerge, 8);
    }

    /// The search index built from `search_words` must hold the same
    /// terms for the same rows as one built from the whole text: compared
    /// term by term, with the number of rows per term, through `fts5vocab`,
    /// over text with case, punctuation, diacritics, entities, non-Latin
    /// scripts, odd whitespace, shared prefixes and repeats.
    #[test]
    fn indexing_each_word_once_indexes_the_same_terms() {
        let conn = memory_db();
        conn.execute_batch(
            "CREATE VIRTUAL TABLE whole USING fts5(title, body, content = '', detail = none,
                 tokenize = 'unicode61 remove_diacritics 2');
             CREATE VIRTUAL TABLE whole_v USING fts5vocab(whole, row);
             CREATE VIRTUAL TABLE once_v USING fts5vocab(entry_fts, row);",
        )
        .unwrap();
        let docs = [
            "<p>Café, CAFE and cafe\u{301}; the café's menu &amp; the Cafe.</p>",
            "<h2>Москва</h2><p>Москва — столица. москва, МОСКВА!</p><p>東京 東京タワー 東京</p>",
            "<p>e-mail e-mail E-Mail re-read; 3.14 3,14 3.14 x<sup>2</sup>x2</p>",
            "<p>Baca Juga : berita lain</p><p>berita berita\tberita\u{2003}berita\u{a0}lain</p>",
            "one<b>two</b>one two onetwo river rivers riverside 3.14 3.15 <unclosed",
        ];
        for (rowid, html) in docs.iter().enumerate() {
            conn.execute(
                "INSERT INTO whole (rowid, title, body) VALUES (?1, 't', ?2)",
                params![rowid as i64, whole_text(html)],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO entry_fts (rowid, title, body) VALUES (?1, 't', ?2)",
                params![rowid as i64, search_words(html)],
            )
            .unwrap();
        }
        let vocab = |table: &str| -> Vec<(String, i64)> {
            let mut stmt = conn
                .prepare(&format!("SELECT term, doc FROM {table} ORDER BY term"))
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let whole = vocab("whole_v");
        assert!(whole.len() > 30, "{whole:?}");
        assert_eq!(vocab("once_v"), whole);
    }

    /// Every word of `html`, tags dropped: what the index was built from
    /// before repeats were left out.
    fn whole_text(html: &str) -> String {
        let mut out = String::new();
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            out.push_str(&rest[..open]);
            out.push(' ');
            match rest[open..].find('>') {
                Some(close) => rest = &rest[open + close + 1..],
                None => return out,
            }
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    fn memory_db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    /// Subscribes to `urls` (as the CLI would) and returns their ids.
    fn subscribe<const N: usize>(
        conn: &mut Connection,
        urls: [&str; N],
        now: DateTime<Utc>,
    ) -> [i64; N] {
        let specs: Vec<FeedSpec> = urls.iter().map(|u| spec(u, None)).collect();
        add_feeds(conn, &specs, FeedOrigin::Cli, now, &mut |_| {}).unwrap();
        urls.map(|u| feed_by_url(conn, u).unwrap().unwrap().id)
    }

    fn spec(url: &str, full_text: Option<bool>) -> FeedSpec {
        FeedSpec {
            url: url.to_owned(),
            title: None,
            tags: vec![],
            interval: None,
            full_text,
            request: Default::default(),
            rules: Default::default(),
        }
    }

    fn full_text_of(conn: &Connection, url: &str) -> Option<bool> {
        feed_by_url(conn, url).unwrap().unwrap().spec.full_text
    }

    #[test]
    fn full_text_round_trips_through_add_and_config_sync() {
        let mut conn = memory_db();
        let now = Utc::now();
        let specs = [
            spec("https://a.example/", Some(false)),
            spec("https://b.example/", Some(true)),
            spec("https://c.example/", None),
        ];
        add_feeds(&mut conn, &specs, FeedOrigin::Cli, now, &mut |_| {}).unwrap();
        for s in &specs {
            assert_eq!(full_text_of(&conn, &s.url), s.full_text, "{}", s.url);
        }

        // The config takes a feed over and changes its setting, both ways
        // and back to "follow the global setting".
        for (full_text, updated) in [
            (Some(true), 1),
            (Some(true), 0),
            (None, 1),
            (Some(false), 1),
        ] {
            let report =
                sync_config_feeds(&mut conn, &[spec("https://c.example/", full_text)], now)
                    .unwrap();
            assert_eq!(report.updated, updated, "{full_text:?}");
            assert_eq!(full_text_of(&conn, "https://c.example/"), full_text);
        }
        // A new config feed keeps its setting too.
        let report = sync_config_feeds(
            &mut conn,
            &[
                spec("https://c.example/", Some(false)),
                spec("https://d.example/", Some(false)),
            ],
            now,
        )
        .unwrap();
        assert_eq!((report.added, report.updated), (1, 0));
        assert_eq!(full_text_of(&conn, "https://d.example/"), Some(false));
    }

    #[test]
    fn request_options_round_trip_through_add_and_config_sync() {
        let mut conn = memory_db();
        let now = Utc::now();
        let with = |cookie: &str| FeedSpec {
            request: RequestOptions {
                user_agent: Some("FriendlyReader/2.0".into()),
                headers: vec![("Cookie".into(), cookie.into())],
                username: Some("ada".into()),
                password: Some("open sesame".into()),
                proxy: Some("http://proxy.lan:3128/".into()),
            },
            ..spec("https://r.example/", None)
        };
        add_feeds(&mut conn, &[with("a=1")], FeedOrigin::Cli, now, &mut |_| {}).unwrap();
        let request_of = |conn: &Connection| {
            feed_by_url(conn, "https://r.example/")
                .unwrap()
                .unwrap()
                .spec
                .request
        };
        assert_eq!(request_of(&conn), with("a=1").request);
        // The config takes it over: a changed cookie is an update, the same
        // options are not, and none clears them.
        for (spec, updated) in [
            (with("a=2"), 1),
            (with("a=2"), 0),
            (spec("https://r.example/", None), 1),
        ] {
            let report = sync_config_feeds(&mut conn, std::slice::from_ref(&spec), now).unwrap();
            assert_eq!(report.updated, updated, "{:?}", spec.request);
            assert_eq!(request_of(&conn), spec.request);
        }
        // A stored value that no longer reads (a hand edit, a downgrade)
        // leaves the feed polling without options.
        conn.execute("UPDATE feed SET request = 'not json'", [])
            .unwrap();
        assert!(request_of(&conn).is_empty());
    }

    fn fetched(feed_id: i64, keys: &[&str], now: DateTime<Utc>) -> PollRecord {
        let entries = keys
            .iter()
            .map(|k| ParsedEntry {
                title: Some(format!("title {k}")),
                ..entry(k, format!("<p>{k}</p>"))
            })
            .collect();
        fetched_entries(feed_id, entries, now)
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_batch_of_polls_commits_each_and_isolates_a_failing_one() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [a, b] = subscribe(&mut conn, ["https://a.example/", "https://b.example/"], now);
        // The middle record names a feed that does not exist: it fails
        // after writing its schedule, and must roll back alone.
        let recs = [
            fetched(a, &["1", "2"], now),
            fetched(9999, &["x"], now),
            fetched(b, &["1"], now),
        ];
        let results = record_polls(&mut conn, &recs).unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(
            *results[0].as_ref().unwrap(),
            PollReport {
                new: 2,
                updated: 0,
                ..PollReport::default()
            }
        );
        assert!(results[1].is_err());
        assert_eq!(
            *results[2].as_ref().unwrap(),
            PollReport {
                new: 1,
                updated: 0,
                ..PollReport::default()
            }
        );
        assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 3);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM feed WHERE last_status = 200"),
            2
        );
        // Polls later in the same batch see earlier ones: the same entry
        // seen twice is new once, then unchanged.
        let results = record_polls(
            &mut conn,
            &[fetched(a, &["3"], now), fetched(a, &["3"], now)],
        )
        .unwrap();
        let reports: Vec<PollReport> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            reports,
            [
                PollReport {
                    new: 1,
                    updated: 0,
                    ..PollReport::default()
                },
                PollReport {
                    new: 0,
                    updated: 0,
                    ..PollReport::default()
                }
            ]
        );
        // Three polls changed entries; the unchanged one left the revision.
        assert_eq!(revision(&conn).unwrap().rev, 3);
    }

    #[test]
    fn leasing_due_feeds_takes_them_off_the_due_list() {
        let mut conn = memory_db();
        let now = Utc::now();
        let specs: Vec<FeedSpec> = (0..5)
            .map(|i| spec(&format!("https://{i}.example/"), None))
            .collect();
        add_feeds(&mut conn, &specs, FeedOrigin::Cli, now, &mut |_| {}).unwrap();
        let until = now + chrono::Duration::seconds(90);
        let leased = lease_due(&mut conn, now, 3, until).unwrap();
        assert_eq!(leased.len(), 3);
        for f in &leased {
            let stored = feed_by_id(&conn, f.id).unwrap().unwrap();
            assert_eq!(stored.next_check_at, from_ts(ts(until)));
        }
        let rest = due_feeds(&conn, now, 10).unwrap();
        assert_eq!(rest.len(), 2);
        assert!(rest.iter().all(|f| leased.iter().all(|l| l.id != f.id)));
    }

    /// The due query reads the most overdue feeds straight off an index
    /// and stops at its limit: sorting every due feed on each call made
    /// leasing cost more than polling with thousands of feeds due.
    #[test]
    fn due_feeds_are_read_in_index_order_without_a_sort() {
        let conn = memory_db();
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {FEED_COLUMNS} FROM feed f
                 WHERE f.status = 'active' AND f.next_check_at <= ?1
                 ORDER BY f.next_check_at, f.last_checked_at, f.id LIMIT ?2"
            ))
            .unwrap()
            .query_map([0, 1], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX feed_due"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn feeds_from_before_full_text_follow_the_global_setting() {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        Migrations::new(vec![M::up(include_str!("schema.sql"))])
            .to_latest(&mut conn)
            .unwrap();
        conn.execute(
            "INSERT INTO feed (url, origin, next_check_at, created_at)
             VALUES ('https://old.example/', 'cli', 0, 0)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(full_text_of(&conn, "https://old.example/"), None);
    }

    fn fetched_entries(feed_id: i64, entries: Vec<ParsedEntry>, now: DateTime<Utc>) -> PollRecord {
        PollRecord {
            feed_id,
            checked_at: now,
            schedule: crate::model::Schedule {
                next_check_at: now + chrono::Duration::seconds(60),
                interval: Duration::from_secs(60),
                reason: "interval".into(),
            },
            outcome: PollOutcome::Fetched {
                status: 200,
                validators: Validators {
                    etag: Some("\"new\"".into()),
                    last_modified: None,
                },
                feed: crate::model::ParsedFeed {
                    title: Some("Site".into()),
                    site_url: None,
                    hints: Default::default(),
                    entries,
                },
            },
            permanent_redirect: None,
            learned_interval: None,
            host_block: None,
            full_text: false,
        }
    }

    fn entry(key: &str, body: String) -> ParsedEntry {
        ParsedEntry {
            key: key.into(),
            title: Some(key.into()),
            link: None,
            content_html: Some(body),
            content_base: None,
            authors: vec![],
            categories: vec![],
            published: None,
            updated: None,
            enclosures: vec![],
            url_keys: vec![],
            content_hash: None,
        }
    }

    /// One poll through the batch writer, as the store's queue would send it.
    fn record_poll(conn: &mut Connection, rec: &PollRecord) -> rusqlite::Result<PollReport> {
        let mut results = record_polls(conn, std::slice::from_ref(rec))?;
        results.pop().unwrap_or(Ok(PollReport::default()))
    }

    /// A store from before feed content was kept as the feed gave it holds
    /// sanitised content under hashes without the prefix: the next poll
    /// takes the feed's content without marking the entry updated (else an
    /// upgrade would re-announce every entry a feed still lists); a real
    /// change after that is an update again.
    #[test]
    fn an_upgrade_does_not_mark_stored_entries_updated() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [id] = subscribe(&mut conn, ["https://a.example/"], now);
        let raw = "<p onclick=\"x()\">one</p>";
        record_poll(
            &mut conn,
            &fetched_entries(id, vec![entry("guid:1", raw.into())], now),
        )
        .unwrap();
        conn.execute_batch(
            "UPDATE entry SET content_html = '<p>one</p>',
                 content_hash = '0123456789abcdef0123456789abcdef';
             UPDATE entry_source SET content_hash = NULL;",
        )
        .unwrap();
        let state = |conn: &Connection| -> (i64, i64, String, String) {
            conn.query_row(
                "SELECT e.updated_at, m.value, e.content_html, e.content_hash
                 FROM entry e, meta m WHERE m.key = 'entries_rev'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
        };
        let (updated, rev, _, _) = state(&conn);

        let later = now + chrono::Duration::seconds(10);
        let report = record_poll(
            &mut conn,
            &fetched_entries(id, vec![entry("guid:1", raw.into())], later),
        )
        .unwrap();
        assert_eq!(report.updated, 0);
        let (updated_now, rev_now, html, hash) = state(&conn);
        assert_eq!((updated_now, rev_now), (updated, rev));
        assert_eq!(html, raw);
        assert!(hash.starts_with(RAW_HASH_PREFIX), "{hash}");

        let report = record_poll(
            &mut conn,
            &fetched_entries(
                id,
                vec![entry("guid:1", "<p>two</p>".into())],
                later + chrono::Duration::seconds(10),
            ),
        )
        .unwrap();
        assert_eq!(report.updated, 1);
        assert!(state(&conn).0 > updated);
    }

    /// A poll's stored rows are probed in batches of [`KEY_PROBE`] keys:
    /// with more entries than one batch, some unchanged, some changed and
    /// some new, each is classified as the per-entry lookup did, and a key
    /// the poll carries twice (only a hand-built record can) is seen as
    /// written by its first copy.
    #[test]
    fn a_poll_probes_its_stored_entries_in_batches() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [id] = subscribe(&mut conn, ["https://a.example/"], now);
        let first: Vec<ParsedEntry> = (0..KEY_PROBE + 4)
            .map(|i| entry(&format!("guid:{i}"), format!("<p>{i}</p>")))
            .collect();
        let report = record_poll(&mut conn, &fetched_entries(id, first, now)).unwrap();
        assert_eq!(report.new, KEY_PROBE + 4);

        // Keys 0..KEY_PROBE+4 again: every third changed; three new ones.
        let mut second: Vec<ParsedEntry> = (0..KEY_PROBE + 7)
            .map(|i| {
                let body = if i % 3 == 0 { "changed" } else { "" };
                entry(&format!("guid:{i}"), format!("<p>{i}{body}</p>"))
            })
            .collect();
        // The same new key twice: stored once, the later copy wins.
        second.push(entry("guid:dup", "<p>first</p>".into()));
        second.push(entry("guid:dup", "<p>second</p>".into()));
        let later = now + chrono::Duration::seconds(10);
        let report = record_poll(&mut conn, &fetched_entries(id, second, later)).unwrap();
        let changed = (0..KEY_PROBE + 4).filter(|i| i % 3 == 0).count();
        assert_eq!(report.new, 4, "{report:?}");
        assert_eq!(report.updated, changed + 1, "{report:?}");
        let (entries, dup): (i64, String) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM entry), e.content_html FROM entry_source s
                 JOIN entry e ON e.id = s.entry_id WHERE s.entry_key = 'guid:dup'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(entries, (KEY_PROBE + 8) as i64);
        assert_eq!(dup, "<p>second</p>");
    }

    /// Titles of the entries a search finds, as the outputs run it.
    fn search(conn: &Connection, q: &str) -> Vec<String> {
        let q = EntryQuery {
            limit: 50,
            search: Some(q.to_owned()),
            ..EntryQuery::default()
        };
        let mut titles: Vec<String> = entries(conn, &q)
            .unwrap()
            .into_iter()
            .filter_map(|e| e.title)
            .collect();
        titles.sort();
        titles
    }

    fn titled(key: &str, title: &str, body: &str) -> ParsedEntry {
        ParsedEntry {
            title: Some(title.to_owned()),
            ..entry(key, body.to_owned())
        }
    }

    fn linked(key: &str, title: &str, link: &str, body: &str) -> ParsedEntry {
        ParsedEntry {
            link: Some(link.to_owned()),
            url_keys: dedup::canonical_candidates(Some(link), None, None),
            ..titled(key, title, body)
        }
    }

    /// Two listings of one article in one feed are one story, and each
    /// copy is compared with its own last version: polling them again is
    /// no update, though their texts differ.
    #[test]
    fn copies_in_one_feed_are_one_story_and_never_update_each_other() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [id] = subscribe(&mut conn, ["https://roundup.example/feed"], now);
        let items = vec![
            linked(
                "guid:1",
                "Storm hits the coast",
                "https://news.example/storm?utm_source=roundup",
                "<p>first blurb</p>",
            ),
            linked(
                "guid:2",
                "Storm hits the coast",
                "https://news.example/storm",
                "<p>second blurb</p>",
            ),
            linked(
                "guid:3",
                "Other story",
                "https://news.example/other",
                "<p>x</p>",
            ),
        ];
        let report = record_poll(&mut conn, &fetched_entries(id, items.clone(), now)).unwrap();
        assert_eq!((report.new, report.merged), (2, 1));
        assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 2);
        let rev = revision(&conn).unwrap().rev;
        for n in 1..4 {
            let later = now + chrono::Duration::seconds(60 * n);
            let report =
                record_poll(&mut conn, &fetched_entries(id, items.clone(), later)).unwrap();
            assert_eq!((report.new, report.updated, report.merged), (0, 0, 0));
        }
        assert_eq!(revision(&conn).unwrap().rev, rev, "nothing changed");
        // A real edit of either copy is one.
        let mut edited = items.clone();
        edited[1].content_html = Some("<p>second blurb, corrected</p>".into());
        let later = now + chrono::Duration::seconds(600);
        let report = record_poll(&mut conn, &fetched_entries(id, edited, later)).unwrap();
        assert_eq!(report.updated, 1);
        // The story keeps its first copy's link while it has others.
        let link: String = query_one(
            &conn,
            "SELECT link FROM entry ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
        assert_eq!(link, "https://news.example/storm?utm_source=roundup");
    }

    /// A new entry that joins two stored stories moves copies this poll
    /// has already looked up: a later entry of the poll that changed is
    /// still found (regression: its story's old id was gone).
    #[test]
    fn a_poll_that_merges_stories_finds_its_later_entries_in_them() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [a, b] = subscribe(
            &mut conn,
            ["https://a.example/feed", "https://b.example/feed"],
            now,
        );
        let title = "Storm hits the coast";
        let w = linked("guid:w", title, "https://n.example/storm-copy", "<p>w</p>");
        record_poll(&mut conn, &fetched_entries(b, vec![w], now)).unwrap();
        let x = linked("guid:x", title, "https://n.example/storm", "<p>x</p>");
        let later = now + chrono::Duration::seconds(60);
        record_poll(&mut conn, &fetched_entries(a, vec![x.clone()], later)).unwrap();
        assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 2);
        // Y is found under both links; X changed.
        let mut y = linked("guid:y", title, "https://n.example/storm", "<p>y</p>");
        y.url_keys.extend(dedup::canonical_candidates(
            Some("https://n.example/storm-copy"),
            None,
            None,
        ));
        let x2 = ParsedEntry {
            content_html: Some("<p>x, updated</p>".into()),
            ..x
        };
        let even_later = later + chrono::Duration::seconds(60);
        let report = record_poll(&mut conn, &fetched_entries(a, vec![y, x2], even_later)).unwrap();
        assert_eq!((report.merged, report.updated), (1, 1));
        assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 1);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM entry_source"),
            3,
            "w, x and y are one story"
        );
    }

    /// A database from before: two copies of one article in one feed, and
    /// a copy in another feed, stored as three stories (an older version
    /// never merged inside a feed). The pass merges them once, in steps,
    /// under the first-seen id, and says when it ran.
    #[test]
    fn the_reexamination_pass_merges_stored_duplicates_once() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [a, b] = subscribe(
            &mut conn,
            ["https://a.example/feed", "https://b.example/feed"],
            now,
        );
        // Stored as an older version would: no URL key matched at poll
        // time (keys are added below, as they were stored then).
        let unkeyed = |e: ParsedEntry| ParsedEntry {
            url_keys: Vec::new(),
            ..e
        };
        let first = vec![
            unkeyed(linked(
                "guid:1",
                "Storm hits the coast",
                "https://news.example/storm",
                "<p>a</p>",
            )),
            unkeyed(linked(
                "guid:2",
                "Storm hits the coast",
                "https://news.example/storm?utm_medium=rss",
                "<p>b</p>",
            )),
            unkeyed(linked(
                "guid:3",
                "Other story",
                "https://news.example/other",
                "<p>c</p>",
            )),
        ];
        record_poll(&mut conn, &fetched_entries(a, first, now)).unwrap();
        let later = now + chrono::Duration::seconds(60);
        let copy = vec![unkeyed(linked(
            "guid:9",
            "Storm hits the coast | B",
            "https://www.news.example/storm/",
            "<p>d</p>",
        ))];
        record_poll(&mut conn, &fetched_entries(b, copy, later)).unwrap();
        conn.execute_batch(
            "UPDATE entry_source SET title = NULL, published_at = NULL, content_hash = NULL;",
        )
        .unwrap();
        {
            let rows: Vec<(i64, String)> = {
                let mut stmt = conn
                    .prepare("SELECT entry_id, link FROM entry_source")
                    .unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap()
            };
            for (entry, link) in rows {
                add_url_keys(
                    &conn,
                    entry,
                    &dedup::canonical_candidates(Some(&link), None, None),
                )
                .unwrap();
            }
        }
        assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 4);
        let first_uid: String = query_one(
            &conn,
            "SELECT e.uid FROM entry e JOIN entry_source s ON s.entry_id = e.id
             WHERE s.entry_key = 'guid:1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
        let rev = revision(&conn).unwrap().rev;
        assert_eq!(status(&mut conn, 0).unwrap().dedup_pass, DedupPass::Pending);

        let mut steps = 0;
        let mut merged = 0;
        while let Some(n) = dedup_pass_step(&mut conn, 2, later).unwrap() {
            steps += 1;
            merged += n;
            assert!(steps < 10);
        }
        // Entry 1 takes in 2 and 4 in the first step; 3 is left for the
        // second, which finds no more.
        assert_eq!((steps, merged), (2, 2));
        assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 2);
        let sources: i64 = query_one(
            &conn,
            "SELECT count(*) FROM entry_source s JOIN entry e ON e.id = s.entry_id
             WHERE e.uid = ?1",
            [&first_uid],
            |r| r.get(0),
        )
        .unwrap();
        assert_eq!(sources, 3, "the story keeps its first-seen id");
        assert!(revision(&conn).unwrap().rev > rev);
        assert_eq!(
            status(&mut conn, 0).unwrap().dedup_pass,
            DedupPass::Done(from_ts(ts(later)))
        );
        // Once.
        assert_eq!(dedup_pass_step(&mut conn, 2, later).unwrap(), None);
    }

    /// An entry that joined an earlier story while its page was fetched
    /// has no article row left: its result is dropped, not an error.
    #[test]
    fn an_article_of_an_entry_merged_meanwhile_is_dropped() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [id] = subscribe(&mut conn, ["https://a.example/feed"], now);
        let mut rec = fetched_entries(
            id,
            vec![linked("guid:1", "T", "https://news.example/t", "<p>a</p>")],
            now,
        );
        rec.full_text = true;
        record_poll(&mut conn, &rec).unwrap();
        let entry_id = count(&conn, "SELECT id FROM entry");
        conn.execute("DELETE FROM article", []).unwrap();
        let merged = record_article(
            &mut conn,
            &ArticleRecord {
                entry_id,
                at: now,
                outcome: ArticleOutcome::Failed { error: "x".into() },
                retry_at: None,
            },
        )
        .unwrap();
        assert!(!merged);
        conn.execute("DELETE FROM entry", []).unwrap();
        let merged = record_article(
            &mut conn,
            &ArticleRecord {
                entry_id,
                at: now,
                outcome: ArticleOutcome::Extracted {
                    final_url: "https://news.example/t".into(),
                    canonical_url: None,
                    html: String::new(),
                    text: String::new(),
                    word_count: 0,
                    use_for_output: false,
                    url_keys: vec!["https://news.example/t".into()],
                    print: None,
                },
                retry_at: None,
            },
        )
        .unwrap();
        assert!(!merged);
    }

    #[test]
    fn entries_are_searchable_once_the_indexer_has_run_as_they_now_read() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [id] = subscribe(&mut conn, ["https://a.example/"], now);
        let first = vec![
            titled("guid:1", "Harbour", "<p>Lighthouse keepers</p>"),
            titled("guid:2", "Other", "<p>ferries</p>"),
        ];
        record_poll(&mut conn, &fetched_entries(id, first, now)).unwrap();
        // Stored and served, but only queued for the index.
        assert!(search(&conn, "lighthouse").is_empty());
        assert_eq!(search_backlog(&conn).unwrap(), 2);
        let step = |indexed, more| IndexStep { indexed, more };
        assert_eq!(index_pending(&mut conn, 1, now).unwrap(), step(1, true));
        assert_eq!(index_pending(&mut conn, 10, now).unwrap(), step(1, false));
        assert_eq!(search(&conn, "lighthouse"), ["Harbour"]);
        assert_eq!(search(&conn, "harbour"), ["Harbour"]);
        assert_eq!(search(&conn, "ferries"), ["Other"]);

        // A changed entry is reindexed as it now reads: its old words go.
        let later = now + chrono::Duration::seconds(10);
        let changed = vec![
            titled("guid:1", "Harbour", "<p>Breakwater news</p>"),
            titled("guid:2", "Other", "<p>ferries</p>"),
        ];
        record_poll(&mut conn, &fetched_entries(id, changed, later)).unwrap();
        assert_eq!(search_backlog(&conn).unwrap(), 1);
        assert_eq!(
            search(&conn, "lighthouse"),
            ["Harbour"],
            "not yet reindexed"
        );
        index_pending(&mut conn, 10, now).unwrap();
        assert!(search(&conn, "lighthouse").is_empty());
        assert_eq!(search(&conn, "breakwater"), ["Harbour"]);

        // An entry deleted while queued leaves nothing queued or indexed.
        let third = vec![titled("guid:3", "Gone", "<p>seaweed</p>")];
        record_poll(&mut conn, &fetched_entries(id, third, later)).unwrap();
        conn.execute(
            "DELETE FROM entry WHERE id = (SELECT entry_id FROM entry_source WHERE entry_key = 'guid:3')",
            [],
        )
        .unwrap();
        assert_eq!(search_backlog(&conn).unwrap(), 0);
        assert_eq!(index_pending(&mut conn, 10, now).unwrap(), step(0, false));
        assert!(search(&conn, "seaweed").is_empty());
        let indexed = count(&conn, "SELECT count(*) FROM entry_fts_docsize");
        assert_eq!(indexed, 2);
    }

    #[test]
    fn an_entry_whose_article_is_used_is_indexed_under_the_article() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [id] = subscribe(&mut conn, ["https://a.example/"], now);
        // The story as the feed carries it, on a feed with full text on.
        let story = |body: &str, at: DateTime<Utc>| {
            let mut e = titled("guid:1", "Story", body);
            e.link = Some("https://a.example/story".to_owned());
            PollRecord {
                full_text: true,
                ..fetched_entries(id, vec![e], at)
            }
        };
        let report = record_poll(&mut conn, &story("<p>teaser</p>", now)).unwrap();
        assert_eq!(report.articles_queued, 1);
        index_pending(&mut conn, 10, now).unwrap();
        assert_eq!(search(&conn, "teaser"), ["Story"]);

        let entry_id = count(&conn, "SELECT id FROM entry");
        let html = "<p>The whole article about kelp forests.</p>".to_owned();
        let rec = ArticleRecord {
            entry_id,
            at: now,
            outcome: ArticleOutcome::Extracted {
                final_url: "https://a.example/story".to_owned(),
                canonical_url: None,
                text: "The whole article about kelp forests.".to_owned(),
                html,
                word_count: 6,
                use_for_output: true,
                url_keys: vec![],
                print: None,
            },
            retry_at: None,
        };
        record_article(&mut conn, &rec).unwrap();
        assert_eq!(search_backlog(&conn).unwrap(), 1);
        index_pending(&mut conn, 10, now).unwrap();
        assert_eq!(search(&conn, "kelp"), ["Story"]);
        assert!(search(&conn, "teaser").is_empty());

        // A later poll that changes the feed's content leaves the article's
        // words in place.
        let later = now + chrono::Duration::seconds(10);
        let report = record_poll(&mut conn, &story("<p>new teaser</p>", later)).unwrap();
        assert_eq!(report.updated, 1);
        index_pending(&mut conn, 10, now).unwrap();
        assert_eq!(search(&conn, "kelp"), ["Story"]);
    }

    /// SQLite's page cap fails a write exactly as a full disk does
    /// (SQLITE_FULL), so it stands in for one here; the integration test
    /// fills a real tmpfs.
    #[test]
    fn disk_full_during_a_poll_rolls_the_whole_poll_back() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [id] = subscribe(&mut conn, ["https://a.example/"], now);
        record_poll(
            &mut conn,
            &fetched_entries(id, vec![entry("guid:1", "<p>one</p>".into())], now),
        )
        .unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 2)
            .unwrap();

        let bulky: Vec<ParsedEntry> = (2..40)
            .map(|i| {
                entry(
                    &format!("guid:{i}"),
                    format!("<p>{}</p>", "word ".repeat(2000)),
                )
            })
            .collect();
        let later = now + chrono::Duration::seconds(5);
        let err = record_poll(&mut conn, &fetched_entries(id, bulky, later)).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
        let store_err = super::super::StoreError::from(err).classify(std::path::Path::new("x.db"));
        assert!(store_err.is_full(), "{store_err}");
        assert!(store_err.to_string().starts_with("database full: x.db: "));

        // Nothing of the failed poll is there: no entry, no feed state.
        let feed = feed_by_id(&conn, id).unwrap().unwrap();
        assert_eq!(feed.entry_count, 1);
        assert_eq!(
            feed.last_checked_at.map(|t| t.timestamp()),
            Some(now.timestamp())
        );
        let entries: i64 = conn
            .query_row("SELECT count(*) FROM entry", [], |r| r.get(0))
            .unwrap();
        assert_eq!(entries, 1);
        // And the connection still works: with room again, the poll lands.
        conn.pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        let bulky: Vec<ParsedEntry> = (2..40)
            .map(|i| {
                entry(
                    &format!("guid:{i}"),
                    format!("<p>{}</p>", "word ".repeat(2000)),
                )
            })
            .collect();
        let report = record_poll(&mut conn, &fetched_entries(id, bulky, later)).unwrap();
        assert_eq!(report.new, 38);
    }

    #[test]
    fn a_lease_left_by_a_dead_process_is_released_at_start_up() {
        let mut conn = memory_db();
        let now = Utc::now();
        let [a, b] = subscribe(&mut conn, ["https://a.example/", "https://b.example/"], now);
        let lease = now + chrono::Duration::seconds(65);
        // Both are leased the way the scheduler takes them.
        let leased = lease_due(&mut conn, now, 10, lease).unwrap();
        assert_eq!(leased.len(), 2);
        // b's poll finished; a's process died mid-poll.
        record_poll(&mut conn, &fetched_entries(b, vec![], now)).unwrap();
        assert_eq!(release_leases(&conn, now).unwrap(), 1);
        let a = feed_by_id(&conn, a).unwrap().unwrap();
        assert_eq!(a.next_check_at.timestamp(), now.timestamp());
        let b = feed_by_id(&conn, b).unwrap().unwrap();
        assert_eq!(
            b.next_check_at.timestamp(),
            (now + chrono::Duration::seconds(60)).timestamp()
        );
        assert_eq!(release_leases(&conn, now).unwrap(), 0);
    }
}
