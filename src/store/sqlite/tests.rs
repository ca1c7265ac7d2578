//! Tests of the SQLite backend, through its functions and the schema.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use rusqlite_migration::{M, Migrations};

use crate::model::{
    ArticleOutcome, ArticleRecord, FeedOrigin, FeedSpec, ParsedEntry, PollOutcome, PollRecord,
    PollReport, RAW_HASH_PREFIX, RequestOptions, Validators,
};
use crate::pipeline::dedup;
use crate::pipeline::sanitize::search_words;
use crate::store::rows::FEED_COLUMNS;
use crate::store::{DedupPass, EntryQuery, IndexStep, SearchDoc, SearchSource};

use super::articles::*;
use super::entries::*;
use super::feeds::*;
use super::polling::*;
use super::retention::*;
use super::search::*;
use super::status::*;
use super::stories::*;
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
    Migrations::new(vec![M::up(include_str!("migrations/schema.sql"))])
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
        page: None,
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
            sync_config_feeds(&mut conn, &[spec("https://c.example/", full_text)], now).unwrap();
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

#[test]
fn page_rules_round_trip_through_add_and_config_sync() {
    let mut conn = memory_db();
    let now = Utc::now();
    let with = |title: Option<&str>| FeedSpec {
        page: Some(crate::model::PageRule {
            item: "article".into(),
            title: title.map(str::to_owned),
            ..Default::default()
        }),
        ..spec("https://p.example/", None)
    };
    add_feeds(&mut conn, &[with(None)], FeedOrigin::Cli, now, &mut |_| {}).unwrap();
    let page_of = |conn: &Connection| {
        feed_by_url(conn, "https://p.example/")
            .unwrap()
            .unwrap()
            .spec
            .page
    };
    assert_eq!(page_of(&conn), with(None).page);
    // A changed selector is an update, the same rule is not, and none
    // makes the address a feed again.
    for (spec, updated) in [
        (with(Some("h2")), 1),
        (with(Some("h2")), 0),
        (spec("https://p.example/", None), 1),
    ] {
        let report = sync_config_feeds(&mut conn, std::slice::from_ref(&spec), now).unwrap();
        assert_eq!(report.updated, updated, "{:?}", spec.page);
        assert_eq!(page_of(&conn), spec.page);
    }
    conn.execute("UPDATE feed SET page = '{\"title\": \"h2\"}'", [])
        .unwrap();
    assert_eq!(page_of(&conn), None, "a rule without an item is none");
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

/// One indexer batch as `crate::indexer::index_step` runs it: read, make
/// the words, write.
fn index_pending(
    conn: &mut Connection,
    max: usize,
    now: DateTime<Utc>,
) -> rusqlite::Result<IndexStep> {
    let docs = words_of(pending_for_index(conn, max)?);
    write_index(conn, &docs, now)
}

fn words_of(batch: Vec<SearchSource>) -> Vec<SearchDoc> {
    batch
        .into_iter()
        .map(|s| SearchDoc {
            entry_id: s.entry_id,
            generation: s.generation,
            title: s.title.unwrap_or_default(),
            words: search_words(s.html.as_deref().unwrap_or_default()),
        })
        .collect()
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
    // Each transaction that changed entries moved the revision once: the
    // replayed first batch (two polls stored, one rolled back) and the
    // second (one poll changed, one did not).
    assert_eq!(revision(&conn).unwrap().rev, 2);
    // A batch that changes nothing leaves it.
    record_polls(&mut conn, &[fetched(a, &["3"], now)]).unwrap();
    assert_eq!(revision(&conn).unwrap().rev, 2);
}

/// A feed never read before is not probed for stored rows (it has none),
/// yet an entry key it lists twice, or a second poll of it in the same
/// batch, still finds what the poll itself wrote.
#[test]
fn a_feed_read_for_the_first_time_still_sees_what_its_poll_wrote() {
    let mut conn = memory_db();
    let now = Utc::now();
    let [a] = subscribe(&mut conn, ["https://a.example/"], now);
    let results = record_polls(
        &mut conn,
        &[
            fetched(a, &["1", "1", "2"], now),
            fetched(a, &["2", "3"], now),
        ],
    )
    .unwrap();
    let reports: Vec<PollReport> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.new, r.updated))
            .collect::<Vec<_>>(),
        [(2, 0), (1, 0)]
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 3);
    assert_eq!(count(&conn, "SELECT count(*) FROM entry_source"), 3);
    // Read once, the feed's stored rows are probed as usual.
    let again = record_polls(&mut conn, &[fetched(a, &["1", "2", "3"], now)]).unwrap();
    assert_eq!(again[0].as_ref().unwrap().new, 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM entry"), 3);
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
    Migrations::new(vec![M::up(include_str!("migrations/schema.sql"))])
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
        search_words: None,
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
        let report = record_poll(&mut conn, &fetched_entries(id, items.clone(), later)).unwrap();
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

/// The indexer reads a batch, makes its words away from the writer, then
/// writes them: an entry a poll changed in between is not indexed with the
/// words read before; it stays queued and the next batch indexes it as it
/// now reads. An entry deleted in between is skipped.
#[test]
fn an_entry_changed_while_its_words_are_made_is_indexed_as_it_now_reads() {
    let mut conn = memory_db();
    let now = Utc::now();
    let [id] = subscribe(&mut conn, ["https://a.example/"], now);
    let first = vec![
        titled("guid:1", "Harbour", "<p>Lighthouse keepers</p>"),
        titled("guid:2", "Gone", "<p>seaweed</p>"),
    ];
    record_poll(&mut conn, &fetched_entries(id, first, now)).unwrap();
    let read = words_of(pending_for_index(&conn, 10).unwrap());
    assert_eq!(read.len(), 2);
    // Meanwhile a poll changes the first entry and the second is deleted.
    let later = now + chrono::Duration::seconds(10);
    let changed = vec![titled("guid:1", "Harbour", "<p>Breakwater news</p>")];
    record_poll(&mut conn, &fetched_entries(id, changed, later)).unwrap();
    conn.execute(
        "DELETE FROM entry WHERE id = (SELECT entry_id FROM entry_source WHERE entry_key = 'guid:2')",
        [],
    )
    .unwrap();
    let step = write_index(&mut conn, &read, now).unwrap();
    assert_eq!(
        step,
        IndexStep {
            indexed: 0,
            more: true
        }
    );
    assert!(search(&conn, "lighthouse").is_empty());
    assert_eq!(search_backlog(&conn).unwrap(), 1);
    let step = index_pending(&mut conn, 10, now).unwrap();
    assert_eq!(
        step,
        IndexStep {
            indexed: 1,
            more: false
        }
    );
    assert_eq!(search(&conn, "breakwater"), ["Harbour"]);
    assert!(search(&conn, "lighthouse").is_empty());
    assert!(search(&conn, "seaweed").is_empty());
}

/// `tributary poll`'s path: entries whose words the parse stage prepared
/// are searchable once the poll commits, with nothing queued, exactly as
/// the indexer would have indexed them; a change to one is still queued,
/// and the index is then as the queue's path leaves it.
#[test]
fn entries_with_prepared_words_are_indexed_by_their_poll() {
    let mut conn = memory_db();
    let now = Utc::now();
    let [id] = subscribe(&mut conn, ["https://a.example/"], now);
    let prepared = |key: &str, title: &str, body: &str| {
        let mut e = titled(key, title, body);
        e.search_words = Some(search_words(body));
        e
    };
    let rev = |conn: &Connection| count(conn, "SELECT value FROM meta WHERE key = 'search_rev'");
    let before = rev(&conn);
    let first = vec![
        prepared(
            "guid:1",
            "Harbour",
            "<p>Lighthouse <b>keepers</b></p><script>hidden()</script>",
        ),
        prepared("guid:2", "Other", "<p>ferries</p>"),
    ];
    record_poll(&mut conn, &fetched_entries(id, first, now)).unwrap();
    assert_eq!(search_backlog(&conn).unwrap(), 0, "nothing queued");
    assert_eq!(search(&conn, "keepers"), ["Harbour"]);
    assert_eq!(search(&conn, "harbour"), ["Harbour"]);
    assert_eq!(search(&conn, "ferries"), ["Other"]);
    assert!(search(&conn, "hidden").is_empty());
    assert!(rev(&conn) > before, "cached searches expire");

    // A change is queued and reindexed as it now reads.
    let later = now + chrono::Duration::seconds(10);
    let changed = vec![
        prepared("guid:1", "Harbour", "<p>Breakwater news</p>"),
        prepared("guid:2", "Other", "<p>ferries</p>"),
    ];
    record_poll(&mut conn, &fetched_entries(id, changed, later)).unwrap();
    assert_eq!(search_backlog(&conn).unwrap(), 1);
    index_pending(&mut conn, 10, later).unwrap();
    assert!(search(&conn, "keepers").is_empty());
    assert_eq!(search(&conn, "breakwater"), ["Harbour"]);
    assert_eq!(count(&conn, "SELECT count(*) FROM entry_fts_docsize"), 2);
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
