//! Retention end to end: the real binary's `poll`, `purge` and `status`
//! over real SQLite files, the `/status` page, and housekeeping in the
//! running daemon.

use std::time::{Duration, Instant};

use crate::support::{FeedServer, Reply, TestEnv, feed_table, get_configured, stderr, stdout};

/// An RSS document whose items are `(guid, age in days)`, each published
/// that long ago with a body of `body_bytes` characters.
fn dated_rss(items: &[(&str, i64)], body_bytes: usize) -> String {
    let now = chrono::Utc::now();
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Dated</title><link>https://dated.example/</link>
<description>d</description>"#,
    );
    for (guid, age) in items {
        let date = (now - chrono::Duration::days(*age)).to_rfc2822();
        // Words, so the search index holds something like real text.
        let body: String = (0..body_bytes / 8)
            .map(|i| format!("w{guid}x{i:03} "))
            .collect();
        s.push_str(&format!(
            "<item><guid isPermaLink=\"false\">{guid}</guid><title>Item {guid}</title>\
             <link>https://dated.example/{guid}</link><description><![CDATA[<p>{body}</p>]]></description>\
             <pubDate>{date}</pubDate></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

/// A test environment whose `[retention]` table holds `retention`.
fn env_with(retention: &str, feeds: &str) -> TestEnv {
    TestEnv::with_config(
        &[],
        &format!("[extract]\nfull_text = false\n\n[retention]\n{retention}\n"),
        feeds,
    )
}

fn run_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Titles in the merged output, newest first.
async fn titles(env: &TestEnv) -> Vec<String> {
    let (feed, _) = crate::support::read_atom(&env.db_path()).await;
    feed.entries
        .iter()
        .filter_map(|e| e.title.as_ref().map(|t| t.content.clone()))
        .collect()
}

#[tokio::test]
async fn entries_beyond_max_entries_per_feed_are_purged_and_do_not_come_back() {
    let server = FeedServer::start().await;
    let items: Vec<(String, i64)> = (1..=8).map(|i| (format!("e{i}"), i)).collect();
    let doc = |extra: &[(&str, i64)]| {
        let mut all: Vec<(&str, i64)> = extra.to_vec();
        all.extend(items.iter().map(|(g, a)| (g.as_str(), *a)));
        Reply::feed("application/rss+xml", dated_rss(&all, 40))
    };
    server.set("/f.xml", doc(&[]));
    let env = env_with(
        "max_entries_per_feed = 3",
        &feed_table(&server.url("/f.xml"), ""),
    );

    assert!(run_ok(&env, &["poll"]).contains("8 new"));
    let out = run_ok(&env, &["purge"]);
    assert!(
        out.contains("purged:     5 entries (0 older than max_age, 5 over max_entries_per_feed, 0 over max_database_size)"),
        "{out}"
    );
    assert!(
        out.contains("tombstones: 5 added, 0 dropped, 5 kept"),
        "{out}"
    );
    assert!(out.contains("database:"), "{out}");
    assert_eq!(titles(&env).await, ["Item e1", "Item e2", "Item e3"]);

    // The feed still carries all eight: the next poll stores none of the
    // purged ones again.
    let out = run_ok(&env, &["poll"]);
    assert!(out.contains("1 feeds polled: 0 new"), "{out}");
    assert_eq!(titles(&env).await, ["Item e1", "Item e2", "Item e3"]);

    // A genuinely new entry still arrives, and the limit holds again
    // after the next purge.
    server.set("/f.xml", doc(&[("e0", 0)]));
    assert!(run_ok(&env, &["poll"]).contains("1 feeds polled: 1 new"));
    assert!(run_ok(&env, &["purge"]).contains("purged:     1 entries"));
    assert_eq!(titles(&env).await, ["Item e0", "Item e1", "Item e2"]);
}

#[tokio::test]
async fn entries_older_than_max_age_are_purged() {
    let server = FeedServer::start().await;
    server.set(
        "/f.xml",
        Reply::feed(
            "application/rss+xml",
            dated_rss(
                &[("new", 1), ("month", 29), ("old", 31), ("ancient", 400)],
                40,
            ),
        ),
    );
    // One entry is kept whatever its age; "new" is that one anyway.
    let env = env_with(
        "max_age = \"30d\"\nmin_entries_per_feed = 1",
        &feed_table(&server.url("/f.xml"), ""),
    );
    run_ok(&env, &["poll"]);
    let out = run_ok(&env, &["purge"]);
    assert!(
        out.contains("purged:     2 entries (2 older than max_age, 0 over"),
        "{out}"
    );
    assert_eq!(titles(&env).await, ["Item new", "Item month"]);
    assert!(run_ok(&env, &["poll"]).contains("0 new"));
    assert_eq!(titles(&env).await.len(), 2);
}

#[tokio::test]
async fn the_size_cap_purges_the_oldest_entries_until_the_database_fits() {
    let server = FeedServer::start().await;
    let items: Vec<(String, i64)> = (0..400).map(|i| (format!("s{i:03}"), i)).collect();
    let items: Vec<(&str, i64)> = items.iter().map(|(g, a)| (g.as_str(), *a)).collect();
    server.set(
        "/big.xml",
        Reply::feed("application/rss+xml", dated_rss(&items, 6000)),
    );
    let env = env_with(
        "max_age = \"0s\"\nmax_entries_per_feed = 0\nmax_database_size = \"1MB\"",
        &feed_table(&server.url("/big.xml"), ""),
    );
    run_ok(&env, &["poll"]);
    let before = used_bytes(&env).await;
    assert!(before > 2_000_000, "test data too small: {before}");

    let out = run_ok(&env, &["purge"]);
    let after = used_bytes(&env).await;
    assert!(after <= 1_000_000, "{after} bytes used after purge:\n{out}");
    assert!(out.contains("over max_database_size)"), "{out}");
    // Only the oldest went: the newest is there, the oldest is not, and
    // well over a few entries are left.
    let left = titles(&env).await;
    assert_eq!(left.first().map(String::as_str), Some("Item s000"));
    assert!(!left.contains(&"Item s399".to_owned()));
    assert!(left.len() > 30, "{} left", left.len());
    // Purged ones stay purged.
    assert!(run_ok(&env, &["poll"]).contains("0 new"));
}

async fn used_bytes(env: &TestEnv) -> u64 {
    let store = tributary::store::Store::open(&env.db_path())
        .await
        .expect("open");
    let size = store.db_size().await.expect("size");
    store.close().await.expect("close");
    size.used_bytes
}

#[tokio::test]
async fn tombstones_are_bounded() {
    let server = FeedServer::start().await;
    server.set(
        "/f.xml",
        Reply::feed(
            "application/rss+xml",
            dated_rss(&[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)], 40),
        ),
    );
    let env = env_with(
        "max_entries_per_feed = 1\nmax_tombstones = 2",
        &feed_table(&server.url("/f.xml"), ""),
    );
    run_ok(&env, &["poll"]);
    let out = run_ok(&env, &["purge"]);
    assert!(out.contains("purged:     4 entries"), "{out}");
    assert!(
        out.contains("tombstones: 4 added, 2 dropped, 2 kept"),
        "{out}"
    );
    // Two lost their tombstone and come back on the next poll; the next
    // purge removes them again.
    assert!(run_ok(&env, &["poll"]).contains("2 new"));
    let out = run_ok(&env, &["purge"]);
    assert!(out.contains("purged:     2 entries"), "{out}");
    assert!(out.contains("2 kept"), "{out}");
}

#[tokio::test]
async fn status_shows_feeds_by_state_entries_database_and_outputs() {
    let server = FeedServer::start().await;
    server.set(
        "/ok.xml",
        Reply::feed("application/rss+xml", dated_rss(&[("1", 1), ("2", 2)], 40)),
    );
    server.set("/broken.xml", Reply::status(500, "oops"));
    let env = TestEnv::with_config(
        &[],
        "[extract]\nfull_text = false\n\n[[output]]\nname = \"news\"\n",
        &[
            feed_table(&server.url("/ok.xml"), ""),
            feed_table(&server.url("/broken.xml"), ""),
            feed_table("http://127.0.0.1:9/never.xml", ""),
        ]
        .concat(),
    );
    run_ok(&env, &["poll", "--feed", &server.url("/ok.xml")]);
    run_ok(&env, &["poll", "--feed", &server.url("/broken.xml")]);
    run_ok(&env, &["feeds", "pause", "http://127.0.0.1:9/never.xml"]);

    let out = run_ok(&env, &["status"]);
    assert!(
        out.contains("feeds:      3 (1 ok, 1 failing, 0 gone, 1 paused, 0 new)"),
        "{out}"
    );
    assert!(out.contains("last poll:  "), "{out}");
    assert!(out.contains("entries:    2 · tombstones 0"), "{out}");
    assert!(out.contains("articles:   0 pending, 0 failed"), "{out}");
    assert!(
        out.contains("database:   ") && out.contains("cap 1 GB"),
        "{out}"
    );
    let base = env.base_url();
    for url in [
        format!("{base}/feed.atom"),
        format!("{base}/o/news.atom"),
        format!("{base}/status"),
    ] {
        assert!(out.contains(&url), "{url} missing:\n{out}");
    }
    assert!(out.contains("needs attention:"), "{out}");
    assert!(out.contains(&server.url("/broken.xml")), "{out}");
    assert!(out.lines().count() < 25, "not one screen:\n{out}");
}

#[tokio::test]
async fn the_status_page_shows_each_feed_with_an_svg_chart() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", dated_rss(&[("1", 1)], 40)).with_etag("\"v1\""),
    );
    server.set("/b.xml", Reply::status(404, "gone missing"));
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/a.xml"), "title = \"Feed <A>\""),
            feed_table(&server.url("/b.xml"), ""),
        ]
        .concat(),
    );
    run_ok(&env, &["poll"]);
    run_ok(&env, &["poll"]); // a: 304, b: another error

    let resp = get_configured(&env, "/status").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let html = resp.text().await.expect("body");
    assert!(html.contains(&server.url("/a.xml")), "{html}");
    assert!(html.contains(&server.url("/b.xml")), "{html}");
    // Escaped like the river page.
    assert!(html.contains("Feed &#60;A&#62;"), "{html}");
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 2, "{html}");
    assert!(!html.contains("<script"), "no JavaScript");
    // Today's bar of each feed says what happened.
    assert!(
        html.contains("2 polls (1 not modified, 0 errors), 1 new entries"),
        "{html}"
    );
    assert!(
        html.contains("2 polls (0 not modified, 2 errors), 0 new entries"),
        "{html}"
    );
    assert!(html.contains("class=\"k-err\""), "{html}");
    assert!(html.contains("1 ok, 1 failing"), "{html}");
}

#[tokio::test]
async fn the_daemon_runs_housekeeping_shortly_after_start() {
    let server = FeedServer::start().await;
    server.set(
        "/f.xml",
        Reply::feed(
            "application/rss+xml",
            dated_rss(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)], 40),
        ),
    );
    // Not adaptive: the items are days apart, which would stretch the
    // interval far beyond the test.
    let env = TestEnv::with_config(
        &[("adaptive", "false")],
        "[extract]\nfull_text = false\n\n[retention]\n\
         max_entries_per_feed = 2\nhousekeeping_interval = \"1s\"\n",
        &feed_table(&server.url("/f.xml"), ""),
    );
    let daemon = env.spawn_daemon().await;
    let base = env.base_url();
    // Polled (every second) and trimmed to two, which stay two while the
    // feed keeps offering all four.
    wait_for_status(&base, 20, "not trimmed", |page| {
        page.contains("2 entries") && page.contains("2 tombstones")
    })
    .await;
    let polls = server.requests("/f.xml").len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests("/f.xml").len() < polls + 2 {
        assert!(Instant::now() < deadline, "no more polls");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, err) = daemon.stop();
    assert!(status.success(), "{err}");
    assert!(err.contains("housekeeping done"), "{err}");
    assert_eq!(titles(&env).await, ["Item a", "Item b"]);
}

/// Issue 18: a new subscription to a blog whose posts are all older than
/// `max_age` used to show them until the first housekeeping purged them
/// all. Each feed's newest `min_entries_per_feed` (10 by default) stay,
/// in the running daemon, whatever their age; the rest still go.
#[tokio::test]
async fn a_feed_whose_posts_are_all_old_stays_visible_after_housekeeping() {
    let server = FeedServer::start().await;
    let items: Vec<(String, i64)> = (0..12).map(|i| (format!("o{i:02}"), 400 + i)).collect();
    let items: Vec<(&str, i64)> = items.iter().map(|(g, a)| (g.as_str(), *a)).collect();
    server.set(
        "/old.xml",
        Reply::feed("application/rss+xml", dated_rss(&items, 40)),
    );
    // The default max_age (180 days) and min_entries_per_feed (10).
    let env = TestEnv::with_config(
        &[("adaptive", "false")],
        "[extract]\nfull_text = false\n\n[retention]\nhousekeeping_interval = \"1s\"\n",
        &feed_table(&server.url("/old.xml"), ""),
    );
    let daemon = env.spawn_daemon().await;
    let base = env.base_url();
    wait_for_status(&base, 30, "not housekept as expected", |page| {
        page.contains("10 entries") && page.contains("2 tombstones")
    })
    .await;
    // Several more housekeeping runs change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, err) = daemon.stop();
    assert!(status.success(), "{err}");
    assert!(err.contains("housekeeping done"), "{err}");
    let want: Vec<String> = (0..10).map(|i| format!("Item o{i:02}")).collect();
    assert_eq!(titles(&env).await, want);
}

/// Polls the daemon's `/status` page until `done` holds for it, failing
/// with `what` and the last page after `secs` seconds.
async fn wait_for_status(base: &str, secs: u64, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let page = crate::support::http()
            .get(format!("{base}/status"))
            .send()
            .await
            .expect("GET /status")
            .text()
            .await
            .expect("body");
        if done(&page) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}:\n{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
