//! The store's tests that run against every backend: the same calls and
//! the same assertions on a SQLite file and, when `TRIBUTARY_TEST_POSTGRES`
//! names a PostgreSQL server (`postgres://postgres@127.0.0.1:5432/postgres`),
//! on a fresh database created there for the test and dropped after it.
//! Without the variable the PostgreSQL half is skipped, and says so; with
//! `TRIBUTARY_REQUIRE_POSTGRES=1` (as `.ci/run` sets) a skip is a failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AddOutcome, SearchDoc, Store, SyncReport};
use crate::database::{Database, PostgresUrl};
use crate::model::{
    ArticleOutcome, ArticleRecord, FeedOrigin, FeedSpec, FeedStatus, ParsedEntry, ParsedFeed,
    PollOutcome, PollRecord, PollReport, RequestOptions, Schedule, Validators,
};
use crate::pipeline::dedup;

/// The server the PostgreSQL half runs on.
const SERVER_VAR: &str = "TRIBUTARY_TEST_POSTGRES";
/// Set to 1 to make a skipped PostgreSQL half fail.
const REQUIRE_VAR: &str = "TRIBUTARY_REQUIRE_POSTGRES";

/// A store of one backend for one test, with what to clean up after it.
pub(crate) struct TestStore {
    pub store: Store,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
    /// The server and the database created for this test.
    scratch: Option<(PostgresUrl, String)>,
}

impl TestStore {
    /// Closes the store and drops its scratch database.
    pub async fn finish(self) {
        self.store.close().await.expect("close");
        if let Some((server, name)) = self.scratch {
            let admin = admin(&server).await;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .expect("drop the test database");
        }
    }
}

async fn admin(server: &PostgresUrl) -> tokio_postgres::Client {
    let (client, connection) = server
        .driver_config()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {SERVER_VAR} ({server}): {e}"));
    tokio::spawn(connection);
    client
}

/// One store per backend: SQLite always, PostgreSQL when the server
/// variable is set (else a line saying it was skipped).
pub(crate) async fn backends(test: &str) -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Store::open(&dir.path().join("t.db")).await.expect("open");
    let mut out = vec![TestStore {
        store: sqlite,
        backend: "SQLite",
        _dir: Some(dir),
        scratch: None,
    }];
    match std::env::var(SERVER_VAR).ok().filter(|v| !v.is_empty()) {
        Some(url) => {
            let server = PostgresUrl::parse(&url)
                .unwrap_or_else(|e| panic!("{SERVER_VAR} is not a PostgreSQL URL: {e}"));
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "tributary_test_{}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                fastrand::u32(..)
            );
            admin(&server)
                .await
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create the test database");
            let store = Store::connect(&Database::Postgres(server.with_dbname(&name)))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            out.push(TestStore {
                store,
                backend: "PostgreSQL",
                _dir: None,
                scratch: Some((server, name)),
            });
        }
        None if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") => {
            panic!("{test}: {REQUIRE_VAR}=1 but {SERVER_VAR} is not set")
        }
        None => {
            // Straight to stderr: the test harness captures `eprintln!`
            // of passing tests, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "{test}: PostgreSQL half SKIPPED ({SERVER_VAR} is not set; e.g. \
                 {SERVER_VAR}=postgres://postgres@127.0.0.1:5432/postgres)"
            );
        }
    }
    out
}

fn spec(url: &str) -> FeedSpec {
    FeedSpec {
        url: url.to_owned(),
        title: None,
        tags: vec![],
        interval: None,
        full_text: None,
        request: Default::default(),
        rules: Default::default(),
        page: None,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
}

/// Subscriptions keep every setting through add, config sync and removal,
/// and the output revision moves when what the outputs show changes.
#[tokio::test]
async fn subscriptions_round_trip_through_add_sync_and_remove() {
    for t in backends("subscriptions_round_trip").await {
        let s = &t.store;
        let b = t.backend;
        let now = at(0);
        let rich = FeedSpec {
            title: Some("Harbour <news> & \u{1F30A}".into()),
            tags: vec!["sea".into(), "Alpha".into(), "sea".into()],
            interval: Some(Duration::from_secs(900)),
            full_text: Some(false),
            request: RequestOptions {
                user_agent: Some("FriendlyReader/2.0".into()),
                headers: vec![("Cookie".into(), "a=1".into())],
                username: Some("ada".into()),
                password: Some("open sesame".into()),
                proxy: Some("http://proxy.lan:3128/".into()),
            },
            page: Some(crate::model::PageRule {
                item: "article".into(),
                title: Some("h2".into()),
                ..Default::default()
            }),
            ..spec("https://a.example/feed")
        };
        let added = s
            .add_feeds(
                vec![rich.clone(), spec("https://b.example/feed")],
                FeedOrigin::Cli,
                now,
            )
            .await
            .expect("add");
        assert_eq!(added, [AddOutcome::Added, AddOutcome::Added], "{b}");
        let again = s
            .add_feeds(vec![spec("https://a.example/feed")], FeedOrigin::Opml, now)
            .await
            .expect("add again");
        assert_eq!(again, [AddOutcome::Exists], "{b}");

        let feeds = s.feeds().await.expect("feeds");
        assert_eq!(feeds.len(), 2, "{b}");
        let a = &feeds[0];
        assert_eq!(a.spec.url, rich.url, "{b}");
        assert_eq!(a.spec.title, rich.title, "{b}");
        assert_eq!(a.spec.tags, ["Alpha", "sea"], "{b}: sorted, once each");
        assert_eq!(a.spec.interval, rich.interval, "{b}");
        assert_eq!(a.spec.full_text, Some(false), "{b}");
        assert_eq!(a.spec.request, rich.request, "{b}");
        assert_eq!(a.spec.page, rich.page, "{b}");
        assert_eq!(a.origin, FeedOrigin::Cli, "{b}");
        assert_eq!(a.next_check_at, now, "{b}: a new feed is due at once");
        assert_eq!(a.status, FeedStatus::Active, "{b}");
        assert_eq!(a.entry_count, 0, "{b}");
        assert!(feeds[1].spec.tags.is_empty(), "{b}");
        assert!(feeds[0].id < feeds[1].id, "{b}: ids follow insertion");
        let by_url = s.feed_by_url(&rich.url).await.expect("by url");
        assert_eq!(by_url.as_ref().map(|f| f.id), Some(a.id), "{b}");
        let by_id = s.feed_by_id(feeds[1].id).await.expect("by id");
        assert_eq!(
            by_id.map(|f| f.spec.url).as_deref(),
            Some("https://b.example/feed"),
            "{b}"
        );
        assert!(
            s.feed_by_url("https://nope.example/")
                .await
                .expect("none")
                .is_none()
        );
        assert!(s.feed_by_id(-1).await.expect("none").is_none());

        // The config takes `a` over with other settings, adds `c`; `b`
        // (from the CLI) stays.
        let rev = s.revision().await.expect("revision").rev;
        let c = FeedSpec {
            tags: vec!["x".into()],
            ..spec("https://c.example/feed")
        };
        let mut a2 = rich.clone();
        a2.title = Some("Renamed".into());
        a2.full_text = None;
        a2.page = None;
        let report = s
            .sync_config_feeds(vec![a2.clone(), c.clone()], at(10))
            .await
            .expect("sync");
        assert_eq!(
            report,
            SyncReport {
                added: 1,
                updated: 1,
                removed: 0
            },
            "{b}"
        );
        assert!(s.revision().await.expect("revision").rev > rev, "{b}");
        let a = s.feed_by_url(&a2.url).await.expect("a").expect("a");
        assert_eq!(a.origin, FeedOrigin::Config, "{b}");
        assert_eq!(a.spec.title.as_deref(), Some("Renamed"), "{b}");
        assert_eq!(a.spec.full_text, None, "{b}");
        assert_eq!(a.spec.page, None, "{b}: a page feed again a feed");
        // The same config again changes nothing.
        let rev = s.revision().await.expect("revision").rev;
        let report = s
            .sync_config_feeds(vec![a2.clone(), c.clone()], at(20))
            .await
            .expect("sync");
        assert_eq!(report, SyncReport::default(), "{b}");
        assert_eq!(s.revision().await.expect("revision").rev, rev, "{b}");
        // Tags alone are a change; a feed left out of the config goes.
        let c2 = FeedSpec {
            tags: vec!["y".into()],
            ..c.clone()
        };
        let report = s.sync_config_feeds(vec![c2], at(30)).await.expect("sync");
        assert_eq!(
            report,
            SyncReport {
                added: 0,
                updated: 1,
                removed: 1
            },
            "{b}"
        );
        let urls: Vec<String> = s
            .feeds()
            .await
            .expect("feeds")
            .into_iter()
            .map(|f| f.spec.url)
            .collect();
        assert_eq!(
            urls,
            ["https://b.example/feed", "https://c.example/feed"],
            "{b}"
        );

        let removed = s
            .remove_feed("https://b.example/feed", at(40))
            .await
            .expect("remove");
        assert_eq!(
            removed.map(|f| f.spec.url).as_deref(),
            Some("https://b.example/feed"),
            "{b}"
        );
        assert!(
            s.remove_feed("https://b.example/feed", at(40))
                .await
                .expect("remove")
                .is_none(),
            "{b}"
        );
        assert_eq!(s.feeds().await.expect("feeds").len(), 1, "{b}");
        t.finish().await;
    }
}

/// Due feeds are leased most overdue first and leave the due list until
/// the lease ends; deferring, rescheduling, pausing and resuming move them.
#[tokio::test]
async fn leases_take_due_feeds_off_the_due_list_until_they_end() {
    for t in backends("leases_take_due_feeds").await {
        let s = &t.store;
        let b = t.backend;
        let specs = (0..5)
            .map(|i| spec(&format!("https://{i}.example/feed")))
            .collect();
        s.add_feeds(specs, FeedOrigin::Cli, at(0))
            .await
            .expect("add");
        let ids: Vec<i64> = s
            .feeds()
            .await
            .expect("feeds")
            .iter()
            .map(|f| f.id)
            .collect();
        // Most overdue first: feed 4 has been due longest.
        s.reschedule(ids[4], at(-100)).await.expect("reschedule");
        let now = at(10);
        let until = at(100);
        let leased = s.lease_due(now, 3, until).await.expect("lease");
        let leased_ids: Vec<i64> = leased.iter().map(|f| f.id).collect();
        assert_eq!(leased_ids, [ids[4], ids[0], ids[1]], "{b}");
        for id in &leased_ids {
            let f = s.feed_by_id(*id).await.expect("feed").expect("feed");
            assert_eq!(f.next_check_at, until, "{b}");
            assert_eq!(f.schedule_reason.as_deref(), Some("polling"), "{b}");
        }
        let rest = s.lease_due(now, 10, until).await.expect("lease");
        let rest_ids: Vec<i64> = rest.iter().map(|f| f.id).collect();
        assert_eq!(rest_ids, [ids[2], ids[3]], "{b}");
        assert!(
            s.lease_due(now, 10, until).await.expect("lease").is_empty(),
            "{b}"
        );
        assert_eq!(s.next_due_at().await.expect("next"), Some(until), "{b}");
        // A lease that ran out (its node died) is due again.
        let after = s.lease_due(at(101), 10, at(200)).await.expect("lease");
        assert_eq!(after.len(), 5, "{b}");

        // Deferred feeds come back at their time.
        s.defer(vec![(ids[0], at(150)), (ids[1], at(160))])
            .await
            .expect("defer");
        let due = s.lease_due(at(155), 10, at(300)).await.expect("lease");
        assert_eq!(
            due.iter().map(|f| f.id).collect::<Vec<_>>(),
            [ids[0]],
            "{b}"
        );

        // A paused feed is never due; resuming makes it due now.
        s.set_status(ids[1], FeedStatus::Paused, at(155))
            .await
            .expect("pause");
        assert!(
            s.lease_due(at(1_000), 10, at(1_100))
                .await
                .expect("lease")
                .iter()
                .all(|f| f.id != ids[1]),
            "{b}"
        );
        s.set_status(ids[1], FeedStatus::Active, at(2_000))
            .await
            .expect("resume");
        let f = s.feed_by_id(ids[1]).await.expect("feed").expect("feed");
        assert_eq!(
            (f.status, f.next_check_at, f.schedule_reason.as_deref()),
            (FeedStatus::Active, at(2_000), Some("resumed")),
            "{b}"
        );
        t.finish().await;
    }
}

/// Many leases taken at once (several nodes, or one node's rounds) never
/// hand one feed out twice.
#[tokio::test]
async fn concurrent_leases_never_share_a_feed() {
    for t in backends("concurrent_leases_never_share_a_feed").await {
        let b = t.backend;
        let specs = (0..60)
            .map(|i| spec(&format!("https://h{}.example/{i}", i % 7)))
            .collect();
        t.store
            .add_feeds(specs, FeedOrigin::Cli, at(0))
            .await
            .expect("add");
        let mut takers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let s = t.store.clone();
            takers.spawn(async move { s.lease_due(at(1), 10, at(500)).await });
        }
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        while let Some(done) = takers.join_next().await {
            for f in done.expect("task").expect("lease") {
                total += 1;
                assert!(seen.insert(f.id), "{b}: feed {} leased twice", f.id);
            }
        }
        assert_eq!(total, 60, "{b}: 8 takers of 10 lease all 60");
        t.finish().await;
    }
}

/// Feeds that fell due while no daemon ran are spread over their window;
/// feeds never polled keep their place.
#[tokio::test]
async fn overdue_feeds_are_spread_and_new_ones_keep_their_place() {
    for t in backends("overdue_feeds_are_spread").await {
        let s = &t.store;
        let b = t.backend;
        s.add_feeds(
            vec![spec("https://a.example/"), spec("https://b.example/")],
            FeedOrigin::Cli,
            at(0),
        )
        .await
        .expect("add");
        let spread = s
            .spread_overdue(at(1_000), |_| Duration::from_secs(600))
            .await
            .expect("spread");
        assert_eq!(spread, 0, "{b}: never polled, never spread");
        assert_eq!(s.next_due_at().await.expect("next"), Some(at(0)), "{b}");
        t.finish().await;
    }
}

fn poll(feed_id: i64, outcome: PollOutcome, now: DateTime<Utc>) -> PollRecord {
    PollRecord {
        feed_id,
        checked_at: now,
        schedule: Schedule {
            next_check_at: now + chrono::Duration::seconds(60),
            interval: Duration::from_secs(60),
            reason: "interval".into(),
        },
        outcome,
        permanent_redirect: None,
        learned_interval: None,
        host_block: None,
        full_text: false,
    }
}

fn fetched(feed_id: i64, entries: Vec<ParsedEntry>, now: DateTime<Utc>) -> PollRecord {
    poll(
        feed_id,
        PollOutcome::Fetched {
            status: 200,
            validators: Validators {
                etag: Some("\"v1\"".into()),
                last_modified: None,
            },
            feed: ParsedFeed {
                title: Some("Site".into()),
                site_url: None,
                hints: Default::default(),
                entries,
            },
        },
        now,
    )
}

/// An item of a feed: its key, title, link (and the link's URL keys).
fn item(key: &str, title: &str, link: &str, body: &str) -> ParsedEntry {
    ParsedEntry {
        key: key.into(),
        title: Some(title.into()),
        link: Some(link.into()),
        content_html: Some(body.into()),
        content_base: None,
        authors: vec![],
        categories: vec![],
        published: Some(at(0)),
        updated: None,
        enclosures: vec![],
        url_keys: dedup::canonical_candidates(Some(link), None, None),
        content_hash: None,
        search_words: None,
    }
}

fn report(new: usize, updated: usize, merged: usize) -> PollReport {
    PollReport {
        new,
        updated,
        merged,
        ..PollReport::default()
    }
}

async fn two_feeds(s: &Store) -> (i64, i64) {
    s.add_feeds(
        vec![
            spec("https://a.example/feed"),
            spec("https://b.example/feed"),
        ],
        FeedOrigin::Cli,
        at(0),
    )
    .await
    .expect("add");
    let feeds = s.feeds().await.expect("feeds");
    (feeds[0].id, feeds[1].id)
}

/// A poll stores new entries once, finds them unchanged next time, an
/// edited one updated, and a copy of a stored story in another feed
/// becomes one more source of it; the output revision moves only when
/// what the outputs show changed.
#[tokio::test]
async fn polls_store_entries_once_and_copies_join_their_story() {
    for t in backends("polls_store_entries_once").await {
        let s = &t.store;
        let b = t.backend;
        let (a, other) = two_feeds(s).await;
        let first = vec![
            item(
                "guid:1",
                "Storm hits the coast",
                "https://news.example/storm",
                "<p>one</p>",
            ),
            item(
                "guid:2",
                "Harbour reopens",
                "https://news.example/harbour",
                "<p>two</p>",
            ),
        ];
        let rev = s.revision().await.expect("rev").rev;
        let got = s
            .record_poll(fetched(a, first.clone(), at(10)))
            .await
            .expect("poll");
        assert_eq!(got, report(2, 0, 0), "{b}");
        assert!(s.revision().await.expect("rev").rev > rev, "{b}");
        let feed = s.feed_by_id(a).await.expect("feed").expect("feed");
        assert_eq!(feed.entry_count, 2, "{b}");
        assert_eq!(feed.last_status, Some(200), "{b}");
        assert_eq!(feed.validators.etag.as_deref(), Some("\"v1\""), "{b}");
        assert_eq!(feed.site_title.as_deref(), Some("Site"), "{b}");
        assert_eq!(feed.last_checked_at, Some(at(10)), "{b}");
        assert_eq!(feed.next_check_at, at(70), "{b}");

        // The same items again: nothing changed, the revision stays.
        let rev = s.revision().await.expect("rev").rev;
        let got = s
            .record_poll(fetched(a, first.clone(), at(20)))
            .await
            .expect("poll");
        assert_eq!(got, report(0, 0, 0), "{b}");
        assert_eq!(s.revision().await.expect("rev").rev, rev, "{b}");

        // One edited: an update.
        let mut edited = first.clone();
        edited[0].content_html = Some("<p>one, corrected</p>".into());
        let got = s
            .record_poll(fetched(a, edited, at(30)))
            .await
            .expect("poll");
        assert_eq!(got, report(0, 1, 0), "{b}");

        // Another feed lists the storm story (tracking parameter, a site
        // suffix on the title): one more source of the same story.
        let copy = vec![item(
            "b:9",
            "Storm hits the coast | B",
            "https://www.news.example/storm?utm_source=rss",
            "<p>copy</p>",
        )];
        let got = s
            .record_poll(fetched(other, copy, at(40)))
            .await
            .expect("poll");
        assert_eq!(got, report(0, 0, 1), "{b}");
        assert_eq!(s.entry_count().await.expect("count"), 2, "{b}");
        let feed = s.feed_by_id(other).await.expect("feed").expect("feed");
        assert_eq!(feed.entry_count, 1, "{b}");
        t.finish().await;
    }
}

/// Every outcome leaves the feed's state as the status views read it:
/// 304, errors counted then cleared, a 429's host block, a redirect
/// adopted after three polls agree, 410 stops polling.
#[tokio::test]
async fn each_poll_outcome_leaves_the_feed_state() {
    for t in backends("each_poll_outcome_leaves_the_feed_state").await {
        let s = &t.store;
        let b = t.backend;
        let (a, _) = two_feeds(s).await;
        let failed = |n| {
            poll(
                a,
                PollOutcome::Failed {
                    status: Some(503),
                    error: "503 Service Unavailable".into(),
                },
                at(n),
            )
        };
        s.record_poll(failed(10)).await.expect("poll");
        let mut blocked = failed(20);
        blocked.host_block = Some(("a.example".into(), at(5_000)));
        s.record_poll(blocked).await.expect("poll");
        let feed = s.feed_by_id(a).await.expect("feed").expect("feed");
        assert_eq!(feed.error_count, 2, "{b}");
        assert_eq!(feed.last_status, Some(503), "{b}");
        assert_eq!(
            feed.last_error.as_deref(),
            Some("503 Service Unavailable"),
            "{b}"
        );
        assert_eq!(
            s.host_blocks(at(100)).await.expect("blocks"),
            [("a.example".to_owned(), at(5_000))],
            "{b}"
        );
        assert!(
            s.host_blocks(at(5_000)).await.expect("blocks").is_empty(),
            "{b}"
        );

        for n in 0..3 {
            let mut moved = poll(
                a,
                PollOutcome::NotModified {
                    validators: Validators::default(),
                },
                at(30 + n),
            );
            moved.permanent_redirect = Some("https://a.example/new-feed".into());
            s.record_poll(moved).await.expect("poll");
            let feed = s.feed_by_id(a).await.expect("feed").expect("feed");
            if n < 2 {
                assert_eq!(feed.fetch_url, None, "{b}: not after {} polls", n + 1);
                assert_eq!(
                    feed.pending_redirect,
                    Some(("https://a.example/new-feed".into(), n as u32 + 1)),
                    "{b}"
                );
            } else {
                assert_eq!(
                    feed.fetch_url.as_deref(),
                    Some("https://a.example/new-feed"),
                    "{b}"
                );
                assert_eq!(feed.pending_redirect, None, "{b}");
            }
        }
        let feed = s.feed_by_id(a).await.expect("feed").expect("feed");
        assert_eq!((feed.error_count, feed.last_status), (0, Some(304)), "{b}");
        assert_eq!(feed.last_error, None, "{b}");

        s.record_poll(poll(a, PollOutcome::Gone, at(40)))
            .await
            .expect("poll");
        let feed = s.feed_by_id(a).await.expect("feed").expect("feed");
        assert_eq!(feed.status, FeedStatus::Gone, "{b}");
        assert!(
            s.lease_due(at(10_000), 10, at(10_100))
                .await
                .expect("lease")
                .iter()
                .all(|f| f.id != a),
            "{b}"
        );
        t.finish().await;
    }
}

/// Two copies of one story stored at the same moment, from two feeds
/// (two nodes, or one node's concurrent polls), are one story: the store
/// serialises them on the story's URL keys, not on luck.
#[tokio::test]
async fn copies_stored_at_the_same_moment_are_one_story() {
    for t in backends("copies_stored_at_the_same_moment").await {
        let b = t.backend;
        let specs = (0..6)
            .map(|i| spec(&format!("https://f{i}.example/feed")))
            .collect();
        t.store
            .add_feeds(specs, FeedOrigin::Cli, at(0))
            .await
            .expect("add");
        let ids: Vec<i64> = t
            .store
            .feeds()
            .await
            .expect("feeds")
            .iter()
            .map(|f| f.id)
            .collect();
        for round in 0..5 {
            let link = format!("https://news.example/story-{round}");
            let mut polls = tokio::task::JoinSet::new();
            for (i, &id) in ids.iter().enumerate() {
                let s = t.store.clone();
                let copy = item(&format!("k{round}-{i}"), "Same story", &link, "<p>x</p>");
                polls.spawn(async move { s.record_poll(fetched(id, vec![copy], at(100))).await });
            }
            let mut new = 0;
            while let Some(done) = polls.join_next().await {
                let r = done.expect("task").expect("poll");
                new += r.new;
                assert_eq!(r.new + r.merged, 1, "{b}");
            }
            assert_eq!(
                new, 1,
                "{b}: round {round}: one copy is new, the rest join it"
            );
        }
        assert_eq!(t.store.entry_count().await.expect("count"), 5, "{b}");
        t.finish().await;
    }
}

/// A poll of many entries stores each as if it came alone, in the feed's
/// order: new ones get ids in that order, a copy of a stored story joins
/// it, two items of one poll linking one story are one story, a key twice
/// in one poll is stored once and then found, and items known already
/// are found unchanged or updated beside new ones.
#[tokio::test]
async fn a_poll_of_many_entries_stores_each_as_if_alone() {
    for t in backends("a_poll_of_many_entries").await {
        let s = &t.store;
        let b = t.backend;
        let (a, other) = two_feeds(s).await;
        let first: Vec<ParsedEntry> = (0..30)
            .map(|i| {
                item(
                    &format!("guid:{i}"),
                    &format!("Story {i}"),
                    &format!("https://news.example/story-{i}"),
                    &format!("<p>{i}</p>"),
                )
            })
            .collect();
        let got = s
            .record_poll(fetched(a, first.clone(), at(10)))
            .await
            .expect("poll");
        assert_eq!(got, report(30, 0, 0), "{b}");
        let mut stored = s.entries(query(100)).await.expect("entries");
        stored.sort_by_key(|e| e.cursor.id);
        let want: Vec<String> = (0..30).map(|i| format!("Story {i}")).collect();
        assert_eq!(titles(&stored), want, "{b}: ids in the feed's order");

        // Another feed: two new stories, a copy of story 3, and two items
        // linking one new story (the second joins the first).
        let second = vec![
            item("b:x", "Fresh x", "https://news.example/x", "<p>x</p>"),
            item(
                "b:3",
                "Story 3",
                "https://news.example/story-3?utm_source=rss",
                "<p>3 again</p>",
            ),
            item("b:y", "Fresh y", "https://news.example/y", "<p>y</p>"),
            item("b:d1", "Twice", "https://news.example/twice", "<p>d</p>"),
            item("b:d2", "Twice", "https://news.example/twice", "<p>d</p>"),
        ];
        let got = s
            .record_poll(fetched(other, second, at(20)))
            .await
            .expect("poll");
        assert_eq!(got, report(3, 0, 2), "{b}");
        assert_eq!(s.entry_count().await.expect("count"), 33, "{b}");

        // The first feed again: story 5 edited, listed twice (the second
        // time as the first), a new story on top; the rest unchanged.
        let mut again = vec![item(
            "guid:new",
            "Newest",
            "https://news.example/newest",
            "<p>n</p>",
        )];
        again.extend(first.iter().cloned());
        again[6].content_html = Some("<p>5, corrected</p>".into());
        again.push(again[6].clone());
        let got = s
            .record_poll(fetched(a, again, at(30)))
            .await
            .expect("poll");
        assert_eq!(got, report(1, 1, 0), "{b}");
        assert_eq!(s.entry_count().await.expect("count"), 34, "{b}");
        t.finish().await;
    }
}

/// Polls of several entries each, storing copies of the same stories in
/// different orders at the same moment (several nodes), make one story
/// each and never wait for each other in a circle.
#[tokio::test]
async fn polls_listing_the_same_stories_at_once_make_one_story_each() {
    for t in backends("polls_listing_the_same_stories").await {
        let b = t.backend;
        let specs = (0..6)
            .map(|i| spec(&format!("https://f{i}.example/feed")))
            .collect();
        t.store
            .add_feeds(specs, FeedOrigin::Cli, at(0))
            .await
            .expect("add");
        let ids: Vec<i64> = t
            .store
            .feeds()
            .await
            .expect("feeds")
            .iter()
            .map(|f| f.id)
            .collect();
        for round in 0..4 {
            let mut polls = tokio::task::JoinSet::new();
            for (i, &id) in ids.iter().enumerate() {
                let s = t.store.clone();
                // Each feed lists the round's five stories from another one.
                let copies: Vec<ParsedEntry> = (0..5)
                    .map(|k| {
                        let story = (k + i) % 5;
                        item(
                            &format!("k{round}-{story}"),
                            &format!("Story {round}-{story}"),
                            &format!("https://news.example/{round}/{story}"),
                            "<p>x</p>",
                        )
                    })
                    .collect();
                polls.spawn(async move { s.record_poll(fetched(id, copies, at(100))).await });
            }
            let mut new = 0;
            while let Some(done) = polls.join_next().await {
                let r = done.expect("task").expect("poll");
                assert_eq!(r.new + r.merged, 5, "{b}");
                new += r.new;
            }
            assert_eq!(new, 5, "{b}: round {round}: each story is new once");
        }
        assert_eq!(t.store.entry_count().await.expect("count"), 20, "{b}");
        t.finish().await;
    }
}

/// The output revision moves with every change whichever node stores
/// it, every node reads the same one, and housekeeping's upkeep (which on
/// PostgreSQL folds the counters of ended sessions into one) leaves it as
/// it was.
#[tokio::test]
async fn every_node_reads_one_revision_that_moves_with_each_change() {
    for t in backends("every_node_reads_one_revision").await {
        let b = t.backend;
        let s = &t.store;
        let (a, other_feed) = two_feeds(s).await;
        // A second node on PostgreSQL; SQLite has one (its file takes one
        // writing process).
        let second = match &t.scratch {
            Some((server, name)) => Some(
                Store::connect(&Database::Postgres(server.with_dbname(name)))
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            None => None,
        };
        let other = second.clone().unwrap_or_else(|| s.clone());
        let r0 = s.revision().await.expect("rev");
        let mut polls = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (node, feed) = if i % 2 == 0 {
                (s.clone(), a)
            } else {
                (other.clone(), other_feed)
            };
            let entry = item(
                &format!("k{i}"),
                &format!("Story {i}"),
                &format!("https://news.example/{i}"),
                "<p>x</p>",
            );
            polls.spawn(async move {
                node.record_poll(fetched(feed, vec![entry], at(10 + i)))
                    .await
            });
        }
        while let Some(done) = polls.join_next().await {
            done.expect("task").expect("poll");
        }
        let r1 = s.revision().await.expect("rev");
        assert!(r1.rev > r0.rev, "{b}: {} after {}", r1.rev, r0.rev);
        assert_eq!(r1.changed_at, at(17), "{b}");
        assert_eq!(
            other.revision().await.expect("rev"),
            r1,
            "{b}: one revision"
        );
        if let Some(second) = second {
            second.close().await.expect("close");
        }
        // The other node's sessions end (the server sees them go soon
        // after); folding their counters keeps the revision.
        if t.scratch.is_some() {
            for _ in 0..100 {
                if ended_sessions_rows(&t).await > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                ended_sessions_rows(&t).await > 0,
                "{b}: the other node's rows"
            );
        }
        s.optimize_and_checkpoint().await.expect("upkeep");
        assert_eq!(s.revision().await.expect("rev"), r1, "{b}: upkeep keeps it");
        assert_eq!(ended_sessions_rows(&t).await, 0, "{b}: folded");
        let entry = item("late", "Late", "https://news.example/late", "<p>l</p>");
        s.record_poll(fetched(a, vec![entry], at(30)))
            .await
            .expect("poll");
        let r2 = s.revision().await.expect("rev");
        assert!(r2.rev > r1.rev, "{b}");
        assert_eq!(r2.changed_at, at(30), "{b}");
        t.finish().await;
    }
}

/// PostgreSQL's revision rows of sessions that ended (0 on SQLite).
async fn ended_sessions_rows(t: &TestStore) -> i64 {
    let Some((server, name)) = &t.scratch else {
        return 0;
    };
    let (client, connection) = server
        .with_dbname(name)
        .driver_config()
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT count(*) FROM meta WHERE key LIKE '%@%'
               AND split_part(key, '@', 2) NOT IN (SELECT pid::text FROM pg_stat_activity)",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

/// A poll that fails part-way leaves nothing of itself behind.
#[tokio::test]
async fn a_failing_poll_leaves_nothing_behind() {
    for t in backends("a_failing_poll_leaves_nothing_behind").await {
        let s = &t.store;
        let b = t.backend;
        let (a, _) = two_feeds(s).await;
        let mut rec = fetched(
            a,
            vec![item("guid:1", "T", "https://n.example/t", "<p>t</p>")],
            at(10),
        );
        // A feed that does not exist: the entry's source row cannot refer
        // to it, after the feed update found nothing to update.
        rec.feed_id = -7;
        assert!(s.record_poll(rec).await.is_err(), "{b}");
        assert_eq!(s.entry_count().await.expect("count"), 0, "{b}");
        let feed = s.feed_by_id(a).await.expect("feed").expect("feed");
        assert_eq!(feed.last_checked_at, None, "{b}");
        t.finish().await;
    }
}

fn print_of(text: &str, published: Option<i64>) -> Option<crate::model::TextPrint> {
    dedup::analyse(text, published).map(|c| crate::model::TextPrint {
        version: dedup::VERSION,
        words: c.fingerprint.words,
        simhash: c.fingerprint.simhash,
        minhash: c.sketch.to_bytes(),
        lsh_keys: c.sketch.lsh_keys().to_vec(),
        published,
    })
}

fn extracted(entry_id: i64, url: &str, text: &str, now: DateTime<Utc>) -> ArticleRecord {
    ArticleRecord {
        entry_id,
        at: now,
        outcome: ArticleOutcome::Extracted {
            final_url: url.to_owned(),
            canonical_url: None,
            html: format!("<p>{text}</p>"),
            text: text.to_owned(),
            word_count: text.split_whitespace().count(),
            use_for_output: true,
            url_keys: dedup::canonical_candidates(Some(url), None, None),
            print: print_of(text, Some(at(0).timestamp())),
        },
        retry_at: None,
    }
}

/// A poll of a full-text feed queues each new entry's page; the queue
/// hands it out when due, holds it while leased, retries a failure at
/// its time and gives up when told.
#[tokio::test]
async fn the_article_queue_hands_out_retries_and_gives_up() {
    for t in backends("the_article_queue").await {
        let s = &t.store;
        let b = t.backend;
        let (a, _) = two_feeds(s).await;
        let mut rec = fetched(
            a,
            vec![item(
                "guid:1",
                "Kelp",
                "https://a.example/kelp",
                "<p>teaser</p>",
            )],
            at(10),
        );
        rec.full_text = true;
        let got = s.record_poll(rec).await.expect("poll");
        assert_eq!(got.articles_queued, 1, "{b}");
        let jobs = s.claim_articles(at(10), 10, at(100)).await.expect("claim");
        assert_eq!(jobs.len(), 1, "{b}");
        let job = &jobs[0];
        assert_eq!(
            (job.url.as_str(), job.title.as_deref(), job.attempts),
            ("https://a.example/kelp", Some("Kelp"), 0),
            "{b}"
        );
        assert_eq!(job.feed_html.as_deref(), Some("<p>teaser</p>"), "{b}");
        assert!(
            s.claim_articles(at(50), 10, at(150))
                .await
                .expect("claim")
                .is_empty(),
            "{b}: a leased article is not claimed again"
        );
        assert_eq!(
            s.next_article_at().await.expect("next"),
            Some(at(100)),
            "{b}"
        );
        s.record_article(ArticleRecord {
            entry_id: job.entry_id,
            at: at(60),
            outcome: ArticleOutcome::Failed {
                error: "timed out".into(),
            },
            retry_at: Some(at(500)),
        })
        .await
        .expect("record");
        let uid = crate::store::entry_uid("https://a.example/feed", "guid:1");
        let state = s.article_state(&uid).await.expect("state").expect("state");
        assert_eq!(
            (
                state.status.as_str(),
                state.attempts,
                state.last_error.as_deref()
            ),
            ("pending", 1, Some("timed out")),
            "{b}"
        );
        assert_eq!(
            s.next_article_at().await.expect("next"),
            Some(at(500)),
            "{b}"
        );
        s.record_article(ArticleRecord {
            entry_id: job.entry_id,
            at: at(600),
            outcome: ArticleOutcome::Failed {
                error: "404 Not Found".into(),
            },
            retry_at: None,
        })
        .await
        .expect("record");
        let state = s.article_state(&uid).await.expect("state").expect("state");
        assert_eq!(
            (state.status.as_str(), state.attempts),
            ("failed", 2),
            "{b}"
        );
        assert_eq!(s.next_article_at().await.expect("next"), None, "{b}");
        t.finish().await;
    }
}

/// Many article claims at the same moment (several nodes on one database,
/// each with its connections) never hand one page out twice and leave none
/// behind; a claim whose lease ran out (its node died) is taken again.
#[tokio::test]
async fn concurrent_article_claims_never_share_a_page() {
    for t in backends("concurrent_article_claims").await {
        let b = t.backend;
        let (a, other) = two_feeds(&t.store).await;
        for (feed, site) in [(a, "a"), (other, "b")] {
            let items = (0..30)
                .map(|i| {
                    item(
                        &format!("{site}:{i}"),
                        &format!("Tide table {site} {i}"),
                        &format!("https://{site}.example/tide/{i}"),
                        "<p>teaser</p>",
                    )
                })
                .collect();
            let mut rec = fetched(feed, items, at(10));
            rec.full_text = true;
            let got = t.store.record_poll(rec).await.expect("poll");
            assert_eq!(got.articles_queued, 30, "{b}");
        }
        let claim_all = |now: DateTime<Utc>, until: DateTime<Utc>| {
            let mut takers = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let s = t.store.clone();
                takers.spawn(async move { s.claim_articles(now, 10, until).await });
            }
            async move {
                let mut seen = std::collections::HashSet::new();
                while let Some(done) = takers.join_next().await {
                    for job in done.expect("task").expect("claim") {
                        assert!(
                            seen.insert(job.entry_id),
                            "{b}: article {} claimed twice",
                            job.entry_id
                        );
                    }
                }
                seen
            }
        };
        let first = claim_all(at(20), at(500)).await;
        assert_eq!(first.len(), 60, "{b}: 8 claimers of 10 take all 60");
        assert!(
            claim_all(at(499), at(900)).await.is_empty(),
            "{b}: nothing is claimed while leased"
        );
        assert_eq!(
            t.store.next_article_at().await.expect("next"),
            Some(at(500)),
            "{b}"
        );
        let again = claim_all(at(500), at(900)).await;
        assert_eq!(again, first, "{b}: expired leases are claimed again");
        t.finish().await;
    }
}

/// Once-per-cluster tasks: of two nodes on one PostgreSQL database only one
/// leads a task; when the leader goes, the other takes over. On SQLite
/// (one node) the node always leads.
#[tokio::test]
async fn one_node_leads_each_task_and_another_takes_over() {
    use crate::store::LeadTask::{Housekeeping, Push, WebSub};
    for t in backends("one_node_leads_each_task").await {
        let b = t.backend;
        let Some((server, name)) = &t.scratch else {
            let first = t.store.try_lead(Housekeeping).await.expect("lead");
            assert!(first.is_some(), "{b}: one node always leads");
            assert!(
                t.store
                    .try_lead(Housekeeping)
                    .await
                    .expect("lead")
                    .is_some(),
                "{b}"
            );
            t.finish().await;
            continue;
        };
        let other = Store::connect(&Database::Postgres(server.with_dbname(name)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let lead = t.store.try_lead(Housekeeping).await.expect("lead");
        let lead = lead.expect("the first node leads");
        assert!(!lead.lost(), "{b}");
        assert!(
            other.try_lead(Housekeeping).await.expect("lead").is_none(),
            "{b}: the second node does not lead while the first does"
        );
        assert!(
            t.store
                .try_lead(Housekeeping)
                .await
                .expect("lead")
                .is_none(),
            "{b}: nor does a second try of the leader's own node"
        );
        let websub = other.try_lead(WebSub).await.expect("lead");
        assert!(websub.is_some(), "{b}: each task has its own lead");
        let push = other.try_lead(Push).await.expect("lead");
        assert!(push.is_some(), "{b}: push too");
        assert!(
            t.store.try_lead(Push).await.expect("lead").is_none(),
            "{b}: one node pushes"
        );
        drop(lead);
        // The server releases the lock when it sees the session close.
        let mut taken = None;
        for _ in 0..100 {
            taken = other.try_lead(Housekeeping).await.expect("lead");
            if taken.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(taken.is_some(), "{b}: the other node takes over");
        assert!(
            t.store
                .try_lead(Housekeeping)
                .await
                .expect("lead")
                .is_none(),
            "{b}: the first node no longer leads"
        );
        drop((taken, websub, push));

        // A node that does not lead keeps one idle session and tries again
        // on it, rather than opening a connection per try.
        let (admin, connection) = server
            .with_dbname(name)
            .driver_config()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let lead_sessions = || async {
            let mut pids: Vec<i32> = admin
                .query(
                    "SELECT pid FROM pg_stat_activity
                     WHERE datname = current_database()
                       AND query LIKE 'SELECT pg_try_advisory_lock%'",
                    &[],
                )
                .await
                .expect("pg_stat_activity")
                .iter()
                .map(|r| r.get(0))
                .collect();
            pids.sort_unstable();
            pids
        };
        let mut leader = None;
        assert!(t.store.keep_lead(WebSub, &mut leader).await, "{b}");
        let mut waiting = None;
        assert!(!other.keep_lead(WebSub, &mut waiting).await, "{b}");
        let sessions = lead_sessions().await;
        assert_eq!(
            sessions.len(),
            2,
            "{b}: the leader's and the waiting node's"
        );
        for _ in 0..3 {
            assert!(!other.keep_lead(WebSub, &mut waiting).await, "{b}");
            assert_eq!(
                lead_sessions().await,
                sessions,
                "{b}: no new session per try"
            );
        }
        drop(leader);
        let mut took = false;
        for _ in 0..100 {
            if other.keep_lead(WebSub, &mut waiting).await {
                took = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(took, "{b}: the waiting node takes over on its session");
        assert_eq!(lead_sessions().await.len(), 1, "{b}");
        assert!(sessions.contains(&lead_sessions().await[0]), "{b}");
        drop(waiting);
        other.close().await.expect("close");
        t.finish().await;
    }
}

/// Two feeds' entries whose pages turn out to carry the same text (on
/// other sites, under other links) become one story when the second
/// article is recorded: it merges into the first seen, which keeps its
/// id and gets the article.
#[tokio::test]
async fn articles_with_the_same_text_join_their_stories() {
    for t in backends("articles_with_the_same_text").await {
        let s = &t.store;
        let b = t.backend;
        let (a, other) = two_feeds(s).await;
        let text: String = (0..160)
            .map(|i| format!("harbour{} ", i % 97))
            .chain((0..40).map(|i| format!("storm{i} ")))
            .collect();
        for (feed, key, link, when) in [
            (a, "a:1", "https://a.example/story", 10),
            (other, "b:1", "https://b.example/other-name", 20),
        ] {
            let mut rec = fetched(feed, vec![item(key, "Storm", link, "<p>t</p>")], at(when));
            rec.full_text = true;
            assert_eq!(s.record_poll(rec).await.expect("poll").new, 1, "{b}");
        }
        assert_eq!(s.entry_count().await.expect("count"), 2, "{b}");
        let jobs = s.claim_articles(at(30), 10, at(90)).await.expect("claim");
        assert_eq!(jobs.len(), 2, "{b}");
        let merged = s
            .record_article(extracted(jobs[0].entry_id, &jobs[0].url, &text, at(30)))
            .await
            .expect("record");
        assert!(!merged, "{b}: the first is its own story");
        let merged = s
            .record_article(extracted(jobs[1].entry_id, &jobs[1].url, &text, at(40)))
            .await
            .expect("record");
        assert!(merged, "{b}: the second joins the first");
        assert_eq!(s.entry_count().await.expect("count"), 1, "{b}");
        let feed = s.feed_by_id(other).await.expect("feed").expect("feed");
        assert_eq!(
            feed.entry_count, 1,
            "{b}: the copy is a source of the story"
        );
        let uid = crate::store::entry_uid("https://a.example/feed", "a:1");
        let state = s.article_state(&uid).await.expect("state").expect("state");
        assert!(state.used, "{b}");
        t.finish().await;
    }
}

/// The one-time re-examination of stored stories runs to its end and
/// then says it has run.
#[tokio::test]
async fn the_reexamination_pass_ends_and_stays_ended() {
    for t in backends("the_reexamination_pass_ends").await {
        let s = &t.store;
        let b = t.backend;
        let (a, _) = two_feeds(s).await;
        let items = (0..120)
            .map(|i| {
                item(
                    &format!("k{i}"),
                    &format!("T{i}"),
                    &format!("https://n.example/{i}"),
                    "<p>x</p>",
                )
            })
            .collect();
        s.record_poll(fetched(a, items, at(10)))
            .await
            .expect("poll");
        let mut steps = 0;
        while let Some(merged) = s.dedup_pass_step(at(20)).await.expect("step") {
            assert_eq!(merged, 0, "{b}: nothing to merge");
            steps += 1;
            assert!(steps <= 4, "{b}: 120 entries take at most 3 steps of 50");
        }
        assert_eq!(s.dedup_pass_step(at(30)).await.expect("step"), None, "{b}");
        assert_eq!(s.entry_count().await.expect("count"), 120, "{b}");
        t.finish().await;
    }
}

fn query(limit: usize) -> super::EntryQuery {
    super::EntryQuery {
        limit,
        ..Default::default()
    }
}

fn titles(entries: &[crate::model::OutputEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.title.clone().unwrap_or_default())
        .collect()
}

/// Outputs read entries newest first, page by page, narrowed by tag,
/// feed, search (once the indexer has run), include and exclude patterns,
/// or in storage order after an id (push); each names its feeds.
#[tokio::test]
async fn outputs_page_filter_and_search_entries() {
    for t in backends("outputs_page_filter_and_search").await {
        let s = &t.store;
        let b = t.backend;
        s.add_feeds(
            vec![
                FeedSpec {
                    tags: vec!["sea".into()],
                    title: Some("Sea news".into()),
                    ..spec("https://a.example/feed")
                },
                spec("https://b.example/feed"),
            ],
            FeedOrigin::Cli,
            at(0),
        )
        .await
        .expect("add");
        let feeds = s.feeds().await.expect("feeds");
        let (a, other) = (feeds[0].id, feeds[1].id);
        let dated = |key: &str, title: &str, body: &str, when: i64| ParsedEntry {
            published: Some(at(when)),
            ..item(key, title, &format!("https://n.example/{key}"), body)
        };
        let first = vec![
            dated(
                "1",
                "Lighthouse keepers",
                "<p>The keepers of the light</p>",
                1,
            ),
            dated("2", "Ferry strike", "<p>Ferries stay in port</p>", 2),
            dated("3", "Kelp forests", "<p>Kelp grows fast</p>", 3),
        ];
        s.record_poll(fetched(a, first, at(100)))
            .await
            .expect("poll");
        let second = vec![
            dated("4", "Harbour dues", "<p>Dues rise</p>", 4),
            dated("5", "Storm warning", "<p>A storm over the ferries</p>", 5),
        ];
        s.record_poll(fetched(other, second, at(100)))
            .await
            .expect("poll");

        let all = s.entries(query(10)).await.expect("entries");
        assert_eq!(
            titles(&all),
            [
                "Storm warning",
                "Harbour dues",
                "Kelp forests",
                "Ferry strike",
                "Lighthouse keepers"
            ],
            "{b}"
        );
        assert_eq!(all[4].sources.len(), 1, "{b}");
        assert_eq!(all[4].sources[0].title, "Sea news", "{b}");
        assert_eq!(all[4].sources[0].feed_url, "https://a.example/feed", "{b}");
        assert_eq!(all[0].sources[0].title, "Site", "{b}: the feed's own title");
        assert_eq!(all[0].published, Some(at(5)), "{b}");

        // Pages of two, by cursor.
        let page1 = s.entries(query(2)).await.expect("page");
        let page2 = s
            .entries(super::EntryQuery {
                after: page1.last().map(|e| e.cursor),
                ..query(2)
            })
            .await
            .expect("page");
        assert_eq!(titles(&page2), ["Kelp forests", "Ferry strike"], "{b}");

        let tagged = s
            .entries(super::EntryQuery {
                tags: vec!["sea".into()],
                ..query(10)
            })
            .await
            .expect("tagged");
        assert_eq!(tagged.len(), 3, "{b}");
        let of_b = s
            .entries(super::EntryQuery {
                feeds: vec!["https://b.example/feed".into()],
                ..query(10)
            })
            .await
            .expect("feed");
        assert_eq!(titles(&of_b), ["Storm warning", "Harbour dues"], "{b}");

        // Patterns read title or content (Rust regex syntax on both).
        let ferries = s
            .entries(super::EntryQuery {
                include: Some(r"(?i)\bferr(y|ies)\b".into()),
                ..query(1)
            })
            .await
            .expect("include");
        assert_eq!(titles(&ferries), ["Storm warning"], "{b}");
        let no_ferries = s
            .entries(super::EntryQuery {
                exclude: Some(r"(?i)ferr".into()),
                ..query(10)
            })
            .await
            .expect("exclude");
        assert_eq!(
            titles(&no_ferries),
            ["Harbour dues", "Kelp forests", "Lighthouse keepers"],
            "{b}"
        );

        // Search finds nothing until the indexer has run.
        let search = |q: &str| super::EntryQuery {
            search: Some(q.into()),
            ..query(10)
        };
        assert!(
            s.entries(search("kelp")).await.expect("search").is_empty(),
            "{b}"
        );
        let indexed = crate::indexer::index_all(s, 2).await.expect("index");
        assert_eq!(indexed, 5, "{b}");
        assert_eq!(
            titles(&s.entries(search("kelp")).await.expect("search")),
            ["Kelp forests"],
            "{b}"
        );
        assert_eq!(
            titles(&s.entries(search("ferries")).await.expect("search")),
            ["Storm warning", "Ferry strike"],
            "{b}"
        );
        assert_eq!(
            titles(&s.entries(search("storm ferries")).await.expect("search")),
            ["Storm warning"],
            "{b}"
        );
        assert!(
            s.entries(search("storm kelp"))
                .await
                .expect("search")
                .is_empty(),
            "{b}"
        );

        // Storage order after an id: what a push delivers next.
        let since = s
            .entries(super::EntryQuery {
                since_id: Some(all[2].cursor.id),
                ..query(10)
            })
            .await
            .expect("since");
        assert_eq!(titles(&since), ["Harbour dues", "Storm warning"], "{b}");
        t.finish().await;
    }
}

/// A push target starts at the newest entry and keeps its state; a feed's
/// rules read its entries and release the ones they now leave out.
#[tokio::test]
async fn push_targets_and_rules_keep_their_state() {
    for t in backends("push_targets_and_rules").await {
        let s = &t.store;
        let b = t.backend;
        let (a, _) = two_feeds(s).await;
        let items = vec![
            item("1", "Keep me", "https://n.example/1", "<p>x</p>"),
            item("2", "Drop me", "https://n.example/2", "<p>y</p>"),
        ];
        s.record_poll(fetched(a, items, at(10)))
            .await
            .expect("poll");
        let newest = s.entries(query(1)).await.expect("entries")[0].cursor.id;
        let target = s
            .push_target("river", "https://hook.example/")
            .await
            .expect("target");
        assert_eq!((target.delivered_id, target.attempts), (newest, 0), "{b}");
        s.record_push(
            "river",
            "https://hook.example/",
            super::PushOutcome::Failed {
                error: "503".into(),
                retry_at: at(99),
            },
        )
        .await
        .expect("push");
        let target = s
            .push_target("river", "https://hook.example/")
            .await
            .expect("target");
        assert_eq!(
            (
                target.attempts,
                target.retry_at,
                target.last_error.as_deref()
            ),
            (1, Some(at(99)), Some("503")),
            "{b}"
        );
        s.record_push(
            "river",
            "https://hook.example/",
            super::PushOutcome::Delivered { up_to: newest + 5 },
        )
        .await
        .expect("push");
        let target = s
            .push_target("river", "https://hook.example/")
            .await
            .expect("target");
        assert_eq!(
            (target.delivered_id, target.attempts, target.retry_at),
            (newest + 5, 0, None),
            "{b}"
        );

        let mut subjects = s.feed_entries_for_rules(a).await.expect("subjects");
        subjects.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(subjects.len(), 2, "{b}");
        assert_eq!(subjects[1].title.as_deref(), Some("Drop me"), "{b}");
        let released = s
            .release_entries(a, vec!["2".into(), "nope".into()], at(20))
            .await
            .expect("release");
        assert_eq!(released, 1, "{b}");
        assert_eq!(
            titles(&s.entries(query(10)).await.expect("entries")),
            ["Keep me"],
            "{b}"
        );
        t.finish().await;
    }
}

/// `status` reads feeds, counts and each feed's days in one snapshot.
#[tokio::test]
async fn status_counts_entries_queues_and_each_feeds_days() {
    for t in backends("status_counts").await {
        let s = &t.store;
        let b = t.backend;
        let (a, other) = two_feeds(s).await;
        let day = at(0);
        let mut rec = fetched(
            a,
            vec![
                item("1", "One", "https://n.example/1", "<p>x</p>"),
                item("2", "Two", "https://n.example/2", "<p>y</p>"),
            ],
            day,
        );
        rec.full_text = true;
        s.record_poll(rec).await.expect("poll");
        s.record_poll(poll(
            a,
            PollOutcome::NotModified {
                validators: Validators::default(),
            },
            day + chrono::Duration::seconds(60),
        ))
        .await
        .expect("poll");
        s.record_poll(poll(
            other,
            PollOutcome::Failed {
                status: None,
                error: "refused".into(),
            },
            day,
        ))
        .await
        .expect("poll");
        while s.dedup_pass_step(day).await.expect("step").is_some() {}
        let snap = s.status(1, day).await.expect("status");
        assert_eq!(snap.feeds.len(), 2, "{b}");
        assert_eq!(snap.entries, 2, "{b}");
        assert_eq!(snap.tombstones, 0, "{b}");
        assert_eq!((snap.articles_pending, snap.articles_failed), (2, 0), "{b}");
        assert_eq!(snap.search_backlog, 2, "{b}");
        assert!(snap.size.file_bytes > 0, "{b}");
        assert!(matches!(snap.dedup_pass, super::DedupPass::Done(_)), "{b}");
        let days = &snap.history[&a];
        assert_eq!(days.len(), 1, "{b}");
        assert_eq!(
            (
                days[0].polls,
                days[0].not_modified,
                days[0].errors,
                days[0].new_entries
            ),
            (2, 1, 0, 2),
            "{b}"
        );
        assert_eq!(snap.history[&other][0].errors, 1, "{b}");
        t.finish().await;
    }
}

const DAY: i64 = 86_400;

/// An item published `day` days after `at(0)`.
fn dated(key: &str, link: &str, day: i64) -> ParsedEntry {
    ParsedEntry {
        published: Some(at(day * DAY)),
        ..item(key, &format!("Story {key}"), link, &format!("<p>{key}</p>"))
    }
}

/// Retention on both backends: the age limit, the per-feed limit and the
/// size cap's oldest-first purge each keep every feed's newest `keep`
/// (a story two feeds carry counts for both), tombstone every key of what
/// they purge so a later poll does not store it again, and move the
/// output revision; tombstones and history are bounded; housekeeping's
/// time is kept.
#[tokio::test]
async fn retention_purges_keeps_the_newest_and_tombstones_keep_entries_out() {
    for t in backends("retention_purges").await {
        let s = &t.store;
        let b = t.backend;
        let (a, other) = two_feeds(s).await;
        let now = at(20 * DAY);
        let a_items: Vec<ParsedEntry> = (0..10)
            .map(|i| dated(&format!("a{i}"), &format!("https://a.example/{i}"), i))
            .collect();
        // b carries a's oldest story too (one story, two sources) and two
        // of its own.
        let b_items = vec![
            dated("b-copy", "https://a.example/0", 0),
            dated("b1", "https://b.example/1", 1),
            dated("b2", "https://b.example/2", 2),
        ];
        s.record_poll(fetched(a, a_items.clone(), now))
            .await
            .expect("poll a");
        let r = s
            .record_poll(fetched(other, b_items.clone(), now))
            .await
            .expect("poll b");
        assert_eq!((r.new, r.merged), (2, 1), "{b}: the copy joined a's story");
        assert_eq!(s.entry_count().await.expect("count"), 12, "{b}");

        // By age: older than day 5, each feed's newest 2 aside (b1, b2).
        let rev = s.revision().await.expect("rev").rev;
        let cutoff = at(5 * DAY);
        let first = s.purge_older_than(cutoff, 2, 2, now).await.expect("age");
        assert_eq!(first.entries, 2, "{b}: one batch");
        let rest = s.purge_older_than(cutoff, 2, 100, now).await.expect("age");
        assert_eq!(first.entries + rest.entries, 5, "{b}: a0..a4");
        // a0..a4, and b's key of the shared story.
        assert_eq!(first.tombstones + rest.tombstones, 6, "{b}");
        assert!(s.revision().await.expect("rev").rev > rev, "{b}");
        let nothing = s.purge_older_than(cutoff, 2, 100, now).await.expect("age");
        assert_eq!(nothing, super::Purged::default(), "{b}");
        let left = titles(&s.entries(query(50)).await.expect("entries"));
        assert_eq!(
            left,
            [
                "Story a9", "Story a8", "Story a7", "Story a6", "Story a5", "Story b2", "Story b1"
            ],
            "{b}"
        );

        // The feeds still carry what was purged: it stays purged.
        let later = now + chrono::Duration::hours(1);
        let again = s
            .record_poll(fetched(a, a_items.clone(), later))
            .await
            .expect("poll a again");
        assert_eq!(again.new, 0, "{b}: tombstoned entries came back");
        let again = s
            .record_poll(fetched(other, b_items.clone(), later))
            .await
            .expect("poll b again");
        assert_eq!(again.new, 0, "{b}");
        assert_eq!(s.entry_count().await.expect("count"), 7, "{b}");

        // Per feed: a keeps its newest 3.
        assert_eq!(s.feeds_over(3).await.expect("over"), vec![a], "{b}");
        assert_eq!(
            s.feeds_over(5).await.expect("over"),
            Vec::<i64>::new(),
            "{b}"
        );
        let p = s.purge_feed_excess(a, 3, 100, now).await.expect("excess");
        assert_eq!((p.entries, p.tombstones), (2, 2), "{b}: a5, a6");
        assert_eq!(
            s.feeds_over(3).await.expect("over"),
            Vec::<i64>::new(),
            "{b}"
        );

        // Oldest first across feeds, each feed's newest aside.
        let p = s.purge_oldest(1, 100, now).await.expect("oldest");
        assert_eq!(p.entries, 3, "{b}: a7, a8, b1");
        let left = titles(&s.entries(query(50)).await.expect("entries"));
        assert_eq!(left, ["Story a9", "Story b2"], "{b}");
        let again = s
            .record_poll(fetched(a, a_items.clone(), later))
            .await
            .expect("poll a once more");
        assert_eq!(again.new, 0, "{b}");

        // Tombstones: 6 + 2 + 3, bounded by age, then by number.
        let count = |s: &Store| {
            let s = s.clone();
            async move { s.status(1, now).await.expect("status").tombstones }
        };
        assert_eq!(count(s).await, 11, "{b}");
        assert_eq!(
            s.expire_tombstones(now, 100).await.expect("expire"),
            0,
            "{b}"
        );
        let expired = s
            .expire_tombstones(now + chrono::Duration::seconds(1), 4)
            .await;
        assert_eq!(expired.expect("expire"), 4, "{b}: one batch");
        assert_eq!(count(s).await, 7, "{b}");
        assert_eq!(s.trim_tombstones(5, 1).await.expect("trim"), 1, "{b}");
        assert_eq!(s.trim_tombstones(5, 100).await.expect("trim"), 1, "{b}");
        assert_eq!(s.trim_tombstones(5, 100).await.expect("trim"), 0, "{b}");
        assert_eq!(count(s).await, 5, "{b}");
        // With its tombstone gone, an entry a feed still carries is stored
        // again as new.
        assert_eq!(s.trim_tombstones(0, 100).await.expect("trim"), 5, "{b}");
        let back = s
            .record_poll(fetched(a, a_items, later))
            .await
            .expect("poll a after the tombstones went");
        assert_eq!(back.new, 9, "{b}");

        // History: today's polls stay, older days go.
        let day = |n: i64| now + chrono::Duration::days(n);
        assert_eq!(s.trim_history(30, now).await.expect("history"), 0, "{b}");
        assert!(s.trim_history(0, day(1)).await.expect("history") > 0, "{b}");
        let snap = s.status(7, day(1)).await.expect("status");
        assert!(snap.history.values().all(|d| d.is_empty()), "{b}");

        assert_eq!(snap.housekept_at, None, "{b}");
        s.set_housekept(later).await.expect("housekept");
        let snap = s.status(1, later).await.expect("status");
        assert_eq!(snap.housekept_at, Some(later), "{b}");
        t.finish().await;
    }
}

/// The size cap's measure shrinks as entries are purged, so housekeeping
/// under a cap purges the oldest entries until the rest fits and then
/// stops, instead of purging everything; the vacuum-like steps run.
#[tokio::test]
async fn the_size_cap_purges_the_oldest_until_the_rest_fits() {
    for t in backends("the_size_cap_purges").await {
        let s = &t.store;
        let b = t.backend;
        let (a, _) = two_feeds(s).await;
        let now = at(400 * DAY);
        let body = "<p>tide </p>".repeat(300);
        let items: Vec<ParsedEntry> = (0..300)
            .map(|i| ParsedEntry {
                content_html: Some(format!("{i}{body}")),
                ..dated(&format!("k{i}"), &format!("https://a.example/{i}"), i)
            })
            .collect();
        s.record_poll(fetched(a, items, now)).await.expect("poll");
        let full = s.db_size().await.expect("size");
        assert!(full.used_bytes > 0 && full.file_bytes > 0, "{b}: {full:?}");

        let p = s.purge_oldest(0, 100, now).await.expect("purge");
        assert_eq!(p.entries, 100, "{b}");
        let less = s.db_size().await.expect("size");
        assert!(
            less.used_bytes < full.used_bytes,
            "{b}: purging did not shrink the measure: {full:?} -> {less:?}"
        );
        // What 100 entries weigh, about.
        let per_100 = full.used_bytes - less.used_bytes;

        // A cap that holds about half of what is left.
        let cap = less.used_bytes - per_100;
        let policy = crate::model::RetentionPolicy {
            max_age: None,
            max_entries_per_feed: None,
            min_entries_per_feed: Some(5),
            max_database_size: Some(cap),
            tombstone_max_age: None,
            max_tombstones: None,
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let report = crate::housekeeping::once(s, &policy, now, &stop)
            .await
            .expect("housekeeping");
        let left = s.entry_count().await.expect("count");
        assert!(
            (40..200).contains(&left),
            "{b}: {left} entries left of 200 under a cap of {cap} ({report:?})"
        );
        assert!(report.after.used_bytes <= cap, "{b}: {report:?}");
        // The oldest went: the newest is still there.
        let newest = titles(&s.entries(query(1)).await.expect("entries"));
        assert_eq!(newest, ["Story k299"], "{b}");
        assert!(
            s.status(1, now)
                .await
                .expect("status")
                .housekept_at
                .is_some()
        );
        // `purge --vacuum`'s step runs too, and leaves the entries.
        s.full_vacuum().await.expect("full vacuum");
        assert_eq!(s.entry_count().await.expect("count"), left, "{b}");
        t.finish().await;
    }
}

/// A node of a cluster for the host-lease tests: its own store (its own
/// pool of connections) on the test's database.
async fn another_node(t: &TestStore) -> Option<Store> {
    let (server, name) = t.scratch.as_ref()?;
    Some(
        Store::connect(&Database::Postgres(server.with_dbname(name)))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn tenant(node: &str, lease_ms: u64) -> super::Tenant {
    super::Tenant {
        node: node.to_owned(),
        lease: Duration::from_millis(lease_ms),
        tenure: Duration::from_secs(30),
    }
}

fn granted(grants: &[super::HostGrant]) -> Vec<&str> {
    let mut hosts: Vec<&str> = grants.iter().map(|g| g.host.as_str()).collect();
    hosts.sort_unstable();
    hosts
}

/// Host leases: a node claims due feeds only on hosts no other node holds
/// and takes their hosts with them; a host handed back is free at once
/// (after the spacing the last holder left), one whose lease ran out (its
/// node died) is taken over, a 429's block goes with the host, and a node
/// whose lease was taken hears that it lost it. On SQLite (one node) every
/// host is the node's.
#[tokio::test]
async fn host_leases_keep_each_host_with_one_node_until_handed_back_or_run_out() {
    for t in backends("host_leases_keep_each_host_with_one_node").await {
        let b = t.backend;
        let s = &t.store;
        let now = Utc::now();
        let urls = [
            "http://one.example/1",
            "http://two.example/1",
            "http://one.example/2",
            "http://one.example/3",
            "http://TWO.example:8080/2",
        ];
        for (i, url) in urls.iter().enumerate() {
            s.add_feeds(
                vec![spec(url)],
                FeedOrigin::Cli,
                now - chrono::Duration::seconds(100),
            )
            .await
            .expect("add");
            let id = s.feed_by_url(url).await.expect("feed").expect("feed").id;
            s.reschedule(id, now - chrono::Duration::seconds(50 - i as i64))
                .await
                .expect("due");
        }
        let until = now + chrono::Duration::seconds(60);
        let host_of: super::HostOf = crate::hosts::host_of;
        let a = tenant("node-a", 30_000);
        let Some(other) = another_node(&t).await else {
            let all = s
                .lease_due_on_hosts(&a, now, 10, until, host_of, usize::MAX)
                .await
                .expect("claim");
            assert_eq!(all.jobs.len(), 5, "{b}");
            assert_eq!(granted(&all.hosts), ["one.example", "two.example"], "{b}");
            let taken = s
                .take_hosts(&a, vec!["x.example".into()])
                .await
                .expect("take");
            assert_eq!(granted(&taken), ["x.example"], "{b}");
            t.finish().await;
            continue;
        };
        let bnode = tenant("node-b", 30_000);
        let first = s
            .lease_due_on_hosts(&a, now, 1, until, host_of, usize::MAX)
            .await
            .expect("claim");
        assert_eq!(first.jobs.len(), 1, "{b}");
        assert_eq!(first.jobs[0].spec.url, urls[0], "{b}");
        assert_eq!(granted(&first.hosts), ["one.example"], "{b}");
        let before = tokio::time::Instant::now();
        assert!(first.hosts[0].until <= before + a.lease, "{b}");
        // The other node gets only the other host's feeds (its port is no
        // other host, its capitals no other name).
        let second = other
            .lease_due_on_hosts(&bnode, now, 10, until, host_of, usize::MAX)
            .await
            .expect("claim");
        let mut got: Vec<&str> = second.jobs.iter().map(|f| f.spec.url.as_str()).collect();
        got.sort_unstable();
        assert_eq!(
            got,
            ["http://TWO.example:8080/2", "http://two.example/1"],
            "{b}"
        );
        assert_eq!(granted(&second.hosts), ["two.example"], "{b}");
        // The first node's next claim takes the rest of its own host.
        let third = s
            .lease_due_on_hosts(&a, now, 10, until, host_of, usize::MAX)
            .await
            .expect("claim");
        assert_eq!(third.jobs.len(), 2, "{b}");
        assert!(
            third
                .jobs
                .iter()
                .all(|f| f.spec.url.contains("one.example")),
            "{b}"
        );
        assert!(
            other
                .take_hosts(&bnode, vec!["one.example".into()])
                .await
                .expect("take")
                .is_empty(),
            "{b}: a held host is not taken"
        );
        // Handed back with 700 ms of spacing left: the next node may take
        // it at once and must wait those 700 ms.
        s.renew_hosts(
            &a,
            vec![],
            vec![("one.example".into(), Duration::from_millis(700))],
        )
        .await
        .expect("release");
        let asked = tokio::time::Instant::now();
        let taken = other
            .take_hosts(&bnode, vec!["one.example".into()])
            .await
            .expect("take");
        assert_eq!(granted(&taken), ["one.example"], "{b}");
        assert!(
            taken[0].free_at >= asked + Duration::from_millis(600),
            "{b}: the spacing left goes with the host: {:?}",
            taken[0].free_at - asked
        );
        // The first node's renewal finds it lost the host.
        assert!(
            s.renew_hosts(&a, vec!["one.example".into()], vec![])
                .await
                .expect("renew")
                .is_empty(),
            "{b}"
        );
        // A node that stops renewing (dies) holds a host only until its
        // lease runs out; then another node takes it over.
        let short = tenant("node-a", 800);
        let held = s
            .take_hosts(&short, vec!["three.example".into()])
            .await
            .expect("take");
        assert_eq!(granted(&held), ["three.example"], "{b}");
        assert!(
            other
                .take_hosts(&bnode, vec!["three.example".into()])
                .await
                .expect("take")
                .is_empty(),
            "{b}"
        );
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let over = other
            .take_hosts(&bnode, vec!["three.example".into()])
            .await
            .expect("take");
        assert_eq!(granted(&over), ["three.example"], "{b}: taken over");
        // Renewing keeps a host: the other node cannot take it.
        let renewed = other
            .renew_hosts(&bnode, vec!["three.example".into()], vec![])
            .await
            .expect("renew");
        assert_eq!(granted(&renewed), ["three.example"], "{b}");
        assert!(
            s.take_hosts(&a, vec!["three.example".into()])
                .await
                .expect("take")
                .is_empty(),
            "{b}"
        );
        // A 429's block goes with the host: its feeds are not claimed while
        // it lasts, and whoever takes it waits for its end.
        s.add_feeds(vec![spec("http://four.example/f")], FeedOrigin::Cli, now)
            .await
            .expect("add");
        let four = s
            .feed_by_url("http://four.example/f")
            .await
            .expect("feed")
            .expect("feed");
        let mut blocked = poll(four.id, PollOutcome::Deferred, now);
        blocked.host_block = Some(("four.example".into(), now + chrono::Duration::seconds(30)));
        blocked.schedule.next_check_at = now - chrono::Duration::seconds(1);
        s.record_poll(blocked).await.expect("record");
        assert!(
            other
                .lease_due_on_hosts(&bnode, now, 10, until, host_of, usize::MAX)
                .await
                .expect("claim")
                .jobs
                .is_empty(),
            "{b}: nothing is claimed on a blocked host"
        );
        let asked = tokio::time::Instant::now();
        let four = other
            .take_hosts(&bnode, vec!["four.example".into()])
            .await
            .expect("take");
        assert!(
            four[0].free_at >= asked + Duration::from_secs(25),
            "{b}: {:?}",
            four[0].free_at - asked
        );
        other.close().await.expect("close");
        t.finish().await;
    }
}

/// Three nodes on one database, each keeping the per-host limits in its
/// own limiter over the hosts it holds (as the dispatch loop does), work
/// through the feeds of two hosts: across all of them a host never has
/// more requests in flight than its concurrency, and its request starts
/// stay its spacing apart, while the work spreads over the nodes (a
/// short tenure hands the hosts round). Without the leases each node would
/// send each host its own share.
#[tokio::test]
async fn nodes_sharing_hosts_keep_each_hosts_limits_together() {
    use crate::hosts::{Busy, HostLimiter, HostLimits};
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;
    const FEEDS: usize = 48;
    const CONCURRENCY: usize = 2;
    let spacing = Duration::from_millis(60);
    for t in backends("nodes_sharing_hosts_keep_each_hosts_limits").await {
        let b = t.backend;
        if t.scratch.is_none() {
            // One node: nothing to share.
            t.finish().await;
            continue;
        }
        let now = Utc::now();
        let specs = (0..FEEDS)
            .map(|i| spec(&format!("http://h{}.example/{i}", i % 2)))
            .collect();
        t.store
            .add_feeds(specs, FeedOrigin::Cli, now - chrono::Duration::seconds(10))
            .await
            .expect("add");
        for f in t.store.feeds().await.expect("feeds") {
            t.store
                .reschedule(f.id, now - chrono::Duration::seconds(5))
                .await
                .expect("due");
        }
        // (host, node, start, end) of every request.
        type Request = (String, usize, Instant, Instant);
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let mut nodes = tokio::task::JoinSet::new();
        for n in 0..3 {
            let store = another_node(&t).await.expect("a node");
            let log = Arc::clone(&log);
            nodes.spawn(async move {
                let limiter = HostLimiter::new(HostLimits {
                    concurrency: CONCURRENCY,
                    spacing,
                });
                // A request lasts at most 150 ms (the "timeout").
                let hold_for = Duration::from_millis(150) + spacing;
                limiter.enable_tenancy(hold_for);
                let me = super::Tenant {
                    node: format!("node-{n}"),
                    lease: hold_for + Duration::from_millis(600),
                    tenure: Duration::from_millis(400),
                };
                let deadline = Instant::now() + Duration::from_secs(12);
                let mut held: Vec<crate::model::Feed> = Vec::new();
                let mut running = tokio::task::JoinSet::new();
                let mut next_pass = Instant::now();
                while Instant::now() < deadline {
                    if held.len() < 4 {
                        let until = Utc::now() + chrono::Duration::seconds(60);
                        let claimed = store
                            .lease_due_on_hosts(
                                &me,
                                Utc::now(),
                                4,
                                until,
                                crate::hosts::host_of,
                                usize::MAX,
                            )
                            .await
                            .expect("claim");
                        for g in &claimed.hosts {
                            limiter.grant(&g.host, g.until, g.free_at);
                        }
                        held.extend(claimed.jobs);
                    }
                    let mut waiting = Vec::new();
                    for feed in std::mem::take(&mut held) {
                        let host = crate::hosts::host_of(&feed.spec.url).expect("host");
                        match limiter.try_acquire(&host, Instant::now()) {
                            Ok(permit) => {
                                let start = Instant::now();
                                permit.starting();
                                let log = Arc::clone(&log);
                                let store = store.clone();
                                running.spawn(async move {
                                    let took = 20 + fastrand::u64(0..100);
                                    tokio::time::sleep(Duration::from_millis(took)).await;
                                    let end = Instant::now();
                                    drop(permit);
                                    log.lock().expect("log").push((host, n, start, end));
                                    store
                                        .defer(vec![(
                                            feed.id,
                                            Utc::now() + chrono::Duration::hours(1),
                                        )])
                                        .await
                                        .expect("done");
                                });
                            }
                            Err(Busy::Unowned) => {
                                store
                                    .defer(vec![(feed.id, Utc::now())])
                                    .await
                                    .expect("hand back");
                            }
                            Err(_) => waiting.push(feed),
                        }
                    }
                    held = waiting;
                    while running.try_join_next().is_some() {}
                    if Instant::now() >= next_pass {
                        next_pass = Instant::now() + Duration::from_millis(100);
                        let busy: std::collections::HashSet<String> = held
                            .iter()
                            .filter_map(|f| crate::hosts::host_of(&f.spec.url))
                            .collect();
                        let (mut keep, mut release) = (Vec::new(), Vec::new());
                        for h in limiter.tenancy(Instant::now()) {
                            if h.busy || busy.contains(&h.host) {
                                keep.push(h.host);
                            } else if limiter.revoke(&h.host, true) {
                                release.push((h.host, h.wait));
                            }
                        }
                        let renewed = store
                            .renew_hosts(&me, keep.clone(), release)
                            .await
                            .expect("renew");
                        for g in &renewed {
                            limiter.extend(&g.host, g.until);
                        }
                        for h in keep {
                            if !renewed.iter().any(|g| g.host == h) {
                                limiter.revoke(&h, false);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                while running.join_next().await.is_some() {}
                store.close().await.expect("close");
            });
        }
        while let Some(done) = nodes.join_next().await {
            done.expect("node");
        }
        let log = log.lock().expect("log").clone();
        let mut by_node = [0usize; 3];
        for host in ["h0.example", "h1.example"] {
            let mut reqs: Vec<(Instant, Instant, usize)> = log
                .iter()
                .filter(|r| r.0 == host)
                .map(|r| (r.2, r.3, r.1))
                .collect();
            reqs.sort();
            assert_eq!(reqs.len(), FEEDS / 2, "{b}: every feed of {host} once");
            for w in reqs.windows(2) {
                assert!(
                    w[1].0 - w[0].0 >= spacing,
                    "{b}: {host}: starts {:?} apart (nodes {} and {})",
                    w[1].0 - w[0].0,
                    w[0].2,
                    w[1].2
                );
            }
            for (i, r) in reqs.iter().enumerate() {
                let in_flight = reqs[..i].iter().filter(|o| o.1 > r.0).count() + 1;
                assert!(
                    in_flight <= CONCURRENCY,
                    "{b}: {host}: {in_flight} requests in flight at once"
                );
                by_node[r.2] += 1;
            }
        }
        assert!(
            by_node.iter().filter(|&&n| n > 0).count() >= 2,
            "{b}: the work spread over the nodes: {by_node:?}"
        );
        t.finish().await;
    }
}

/// The indexer writes what it read, except entries changed (queued again)
/// since it read them: those stay queued and are indexed by the next
/// batch, with their new words. Fails when the generation check is
/// dropped (the stale words would be indexed and the entry dequeued).
#[tokio::test]
async fn an_entry_changed_after_its_batch_was_read_stays_queued() {
    for t in backends("changed_after_batch_read").await {
        let s = &t.store;
        let b = t.backend;
        s.add_feeds(vec![spec("https://a.example/feed")], FeedOrigin::Cli, at(0))
            .await
            .expect("add");
        let feed = s.feeds().await.expect("feeds")[0].id;
        let one = |title: &str, body: &str| vec![item("1", title, "https://n.example/1", body)];
        s.record_poll(fetched(feed, one("Kelp", "<p>Kelp grows</p>"), at(100)))
            .await
            .expect("poll");
        s.record_poll(fetched(feed, one("Other", "<p>Plain</p>"), at(100)))
            .await
            .expect("poll");
        let stale = s.search_batch(100).await.expect("batch");
        assert!(!stale.is_empty(), "{b}");
        // The entry changes after the batch was read.
        s.record_poll(fetched(feed, one("Seaweed", "<p>Seaweed now</p>"), at(200)))
            .await
            .expect("poll");
        let docs = stale
            .into_iter()
            .map(|d| SearchDoc {
                entry_id: d.entry_id,
                generation: d.generation,
                title: d.title.unwrap_or_default(),
                words: crate::pipeline::sanitize::search_words(
                    d.html.as_deref().unwrap_or_default(),
                ),
            })
            .collect();
        let step = s.write_search(docs).await.expect("write");
        assert_eq!(
            step.indexed, 0,
            "{b}: the changed entry was indexed with its old words"
        );
        assert!(step.more, "{b}: the changed entry left the queue");
        crate::indexer::index_all(s, 100).await.expect("index");
        let found = |q: &str| super::EntryQuery {
            search: Some(q.into()),
            ..query(10)
        };
        assert_eq!(
            s.entries(found("seaweed")).await.expect("search").len(),
            1,
            "{b}"
        );
        assert_eq!(
            s.entries(found("plain")).await.expect("search").len(),
            0,
            "{b}"
        );
    }
}
