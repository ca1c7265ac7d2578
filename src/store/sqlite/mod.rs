//! The SQLite backend: every SQL statement the program runs on SQLite
//! lives in this folder, one file per concern; this file holds the
//! connection set-up, the migrations and the helpers they share.
//!
//! Functions here are synchronous and take a `rusqlite::Connection`; the
//! async facade in `store/mod.rs` runs them on the connection's own thread.
//! Each write that belongs together (one poll, one import) is one
//! transaction, so a crash or shutdown never leaves half of it behind.

mod articles;
mod entries;
mod feeds;
mod outputs;
mod polling;
mod push;
mod retention;
mod rules;
mod search;
mod status;
mod stories;

use super::rows::{from_ts, opt_ts, ts};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use crate::model::stable_hash;

use super::Revision;

pub(super) use articles::{
    article_state, claim_articles, lease_articles, next_article_at, record_article,
};
pub(super) use feeds::{
    add_feeds, feed_by_id, feed_by_url, feeds, remove_feed, set_status, sync_config_feeds,
};
pub(super) use outputs::entries;
pub use polling::REDIRECT_CONFIRMATIONS;
pub(super) use polling::{
    day_of, defer, host_blocks, lease_due, next_due_at, record_polls, release_leases, reschedule,
    spread_overdue,
};
pub(super) use push::{push_target, record_push};
pub(super) use retention::{
    db_size, entry_count, expire_tombstones, feeds_over, full_vacuum, incremental_vacuum,
    optimize_and_checkpoint, purge_feed_excess, purge_older_than, purge_oldest, set_housekept,
    trim_history, trim_tombstones,
};
pub(super) use rules::{feed_entries_for_rules, release_entries};
pub(super) use search::{merge_search_index, pending_for_index, write_index};
pub(super) use status::status;
pub(super) use stories::{DEDUP_PASS_BATCH, dedup_pass_step};

/// Schema history; append, never edit, once a version has shipped.
fn migrations() -> Migrations<'static> {
    Migrations::new(migration_list())
}

/// The schema version (`PRAGMA user_version`) of an up-to-date database:
/// `migrate-db` copies only from one, as it never writes the file.
pub(super) fn latest_version() -> usize {
    migration_list().len()
}

fn migration_list() -> Vec<M<'static>> {
    vec![
        M::up(include_str!("migrations/schema.sql")),
        // A feed's own `full_text` setting; NULL follows `[extract] full_text`.
        M::up("ALTER TABLE feed ADD COLUMN full_text INTEGER;"),
        M::up(include_str!("migrations/polling.sql")),
        M::up(include_str!("migrations/articles.sql")),
        M::up(include_str!("migrations/outputs.sql")),
        M::up(include_str!("migrations/dedup.sql")),
        M::up(include_str!("migrations/retention.sql")),
        M::up(include_str!("migrations/throughput.sql")),
        M::up(include_str!("migrations/raw_content.sql")),
        M::up(include_str!("migrations/search_queue.sql")),
        // A feed's own request options (User-Agent, headers, credentials,
        // proxy) as JSON; NULL: none.
        M::up("ALTER TABLE feed ADD COLUMN request TEXT;"),
        M::up(include_str!("migrations/stories.sql")),
        M::up(include_str!("migrations/push.sql")),
        // A feed's keep/block rules as JSON; NULL: none.
        M::up("ALTER TABLE feed ADD COLUMN rules TEXT;"),
        M::up(include_str!("migrations/search_gen.sql")),
        // A page feed's selectors (`PageRule`) as JSON; NULL: a feed.
        M::up("ALTER TABLE feed ADD COLUMN page TEXT;"),
    ]
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

fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
