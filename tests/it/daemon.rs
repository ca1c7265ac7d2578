//! `tributary run`: the scheduler and the server in one process, a graceful
//! stop, and a restart that keeps everything.

use std::time::{Duration, Instant};

use crate::feeds::rss;
use crate::support::{FeedServer, Reply, TestEnv, feed_table, get_output};

async fn wait_for_entries(base: &str, n: usize) -> String {
    wait_for_atom(&format!("{base}/feed.atom"), |count| count >= n).await
}

/// GETs the Atom document at `url` until the number of its entries
/// satisfies `done` (20 s at most), and returns it.
async fn wait_for_atom(url: &str, done: impl Fn(usize) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let xml = crate::support::http()
            .get(url)
            .send()
            .await
            .expect("GET feed")
            .text()
            .await
            .expect("body");
        if done(xml.matches("<entry>").count()) {
            return xml;
        }
        assert!(Instant::now() < deadline, "{url}: {xml}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn daemon_polls_serves_stops_gracefully_and_keeps_entries_across_restart() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", rss(&[("1", "First", "<p>one</p>")]))
            .with_etag("\"v1\""),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    let daemon = env.spawn_daemon().await;
    let base = env.base_url();
    wait_for_entries(&base, 1).await;

    // With a 1s interval it polls again, conditionally.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests("/a.xml").len() < 2 {
        assert!(Instant::now() < deadline, "no second poll");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.requests("/a.xml")[1].headers["if-none-match"],
        "\"v1\""
    );

    // A new item shows up without a restart.
    server.set(
        "/a.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("1", "First", "<p>one</p>"), ("2", "Second", "<p>two</p>")]),
        )
        .with_etag("\"v2\""),
    );
    let xml = wait_for_entries(&base, 2).await;
    assert!(xml.contains("Second"));

    // Operators can see what the poller did.
    let metrics = crate::support::http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    for needle in [
        "tributary_fetch_requests_total{host=\"127.0.0.1\",outcome=\"200\"}",
        "tributary_fetch_requests_total{host=\"127.0.0.1\",outcome=\"304\"}",
        "tributary_fetch_bytes_total{host=\"127.0.0.1\"}",
        "tributary_poll_duration_seconds",
        "tributary_polls_total{result=\"not_modified\"}",
        "tributary_store_poll_commits_total",
        "tributary_store_committed_polls_total",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }

    let (status, log) = daemon.stop();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(log.contains("poll"), "one info line per poll: {log}");
    assert!(log.contains("stopped"), "{log}");
    // A clean stop folds the WAL into the database: one self-contained
    // file (the checkpointer thread closes before the writer does).
    let wal = env.db_path().with_extension("db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "{} left behind", wal.display());

    // Entries survive the restart, with the same ids.
    let (before, _) = crate::support::read_atom(&env.db_path()).await;
    let daemon = env.spawn_daemon().await;
    let xml = wait_for_entries(&base, 2).await;
    for e in &before.entries {
        assert_eq!(xml.matches(&e.id).count(), 1, "{} once", e.id);
    }
    drop(daemon);
}

#[tokio::test]
async fn output_supports_conditional_get_and_limit() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[
                ("1", "One", "<p>1</p>"),
                ("2", "Two", "<p>2</p>"),
                ("3", "Three", "<p>3</p>"),
            ]),
        ),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    assert!(env.cli(&["poll"]).status.success());

    let first = get_output(&env.db_path(), "/feed.atom", &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["content-type"],
        "application/atom+xml; charset=utf-8"
    );
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    let last_modified = first.headers()["last-modified"]
        .to_str()
        .expect("last-modified")
        .to_owned();

    let again = get_output(&env.db_path(), "/feed.atom", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);
    let since = get_output(
        &env.db_path(),
        "/feed.atom",
        &[("if-modified-since", &last_modified)],
    )
    .await;
    assert_eq!(
        since.status(),
        304,
        "{last_modified} vs {:?}",
        since.headers()
    );

    let limited = get_output(&env.db_path(), "/feed.atom?limit=2", &[]).await;
    let xml = limited.text().await.expect("body");
    assert_eq!(xml.matches("<entry>").count(), 2);
    let bad = get_output(&env.db_path(), "/feed.atom?limit=zero", &[]).await;
    assert_eq!(bad.status(), 400);

    // Compressed bodies (made once per document and kept) decode to the
    // same document, in every coding a client may ask for.
    let plain = get_output(&env.db_path(), "/feed.atom", &[])
        .await
        .bytes()
        .await
        .expect("body");
    for (accept, coding) in [
        ("gzip", Some("gzip")),
        ("gzip, deflate, br", Some("br")),
        ("br;q=0, gzip", Some("gzip")),
        ("identity", None),
        ("gzip;q=0", None),
    ] {
        for _ in 0..2 {
            let resp =
                get_output(&env.db_path(), "/feed.atom", &[("accept-encoding", accept)]).await;
            assert_eq!(
                resp.headers()
                    .get("content-encoding")
                    .and_then(|v| v.to_str().ok()),
                coding,
                "{accept}"
            );
            assert_eq!(resp.headers()["vary"], "accept-encoding");
            let body = resp.bytes().await.expect("body");
            let mut decoded = Vec::new();
            use std::io::Read;
            match coding {
                Some("gzip") => {
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut decoded)
                        .expect("gunzip");
                }
                Some(_) => {
                    brotli::Decompressor::new(&body[..], 4096)
                        .read_to_end(&mut decoded)
                        .expect("brotli");
                }
                None => decoded = body.to_vec(),
            }
            assert_eq!(decoded, plain.to_vec(), "{accept}");
        }
    }

    // New data → a new ETag and a full response.
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", rss(&[("4", "Four", "<p>4</p>")])),
    );
    assert!(env.cli(&["poll"]).status.success());
    let changed = get_output(&env.db_path(), "/feed.atom", &[("if-none-match", &etag)]).await;
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().ok(), Some(etag.as_str()));

    let health = get_output(&env.db_path(), "/healthz", &[]).await;
    assert_eq!(health.status(), 200);
}

/// Feed content with a script, an event handler, a foreign iframe, a
/// `javascript:` link and relative URLs (against `https://rss.example/`).
const HOSTILE: &str = "<p onclick=\"steal()\">text <a href=\"/rel\">link</a><img src=\"pic.png\"></p><script>alert(1)</script><iframe src=\"https://evil.example\"></iframe><a href=\"javascript:alert(1)\">x</a>";

#[tokio::test]
async fn script_and_event_handlers_never_reach_the_output() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", rss(&[("1", "Hostile", HOSTILE)])),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    assert!(env.cli(&["poll"]).status.success());
    let (feed, _) = crate::support::read_atom(&env.db_path()).await;
    let html = feed.entries[0]
        .content
        .as_ref()
        .and_then(|c| c.body.clone())
        .expect("content");
    for bad in ["<script", "onclick", "<iframe", "javascript:"] {
        assert!(!html.contains(bad), "{bad} in {html}");
    }
    // Relative URLs are resolved against the entry's link.
    assert!(html.contains("href=\"https://rss.example/rel\""), "{html}");
    assert!(
        html.contains("src=\"https://rss.example/pic.png\""),
        "{html}"
    );
}

/// Feed content is stored as the feed gave it and sanitised on its way
/// out, so every output, not only Atom, must show it clean and with
/// absolute URLs: RSS, JSON Feed and the river page too, and for Atom
/// content relative to an `xml:base` or, without a link, to the feed.
#[tokio::test]
async fn every_output_shows_feed_content_sanitised_with_absolute_urls() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", rss(&[("1", "Hostile", HOSTILE)])),
    );
    server.set(
        "/b.atom",
        Reply::feed(
            "application/atom+xml",
            r#"<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>B</title><id>urn:b</id><updated>2026-11-01T00:00:00Z</updated>
<entry><id>urn:b:1</id><title>Based</title><link href="https://b.example/posts/1"/><updated>2026-11-01T00:00:00Z</updated>
<content type="html" xml:base="https://cdn.b.example/media/">&lt;p&gt;&lt;img src="based.png"&gt; &lt;style&gt;p{}&lt;/style&gt;based text&lt;/p&gt;</content></entry>
<entry><id>urn:b:2</id><title>Linkless</title><updated>2026-11-01T00:00:00Z</updated>
<content type="html">&lt;p&gt;&lt;a href="linkless.html" onmouseover="steal()"&gt;linkless text&lt;/a&gt;&lt;/p&gt;</content></entry>
</feed>"#
                .to_owned(),
        ),
    );
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/a.xml"), ""),
            feed_table(&server.url("/b.atom"), ""),
        ]
        .concat(),
    );
    assert!(env.cli(&["poll"]).status.success());
    let linkless = server.url("/linkless.html");
    for path in ["/feed.atom", "/feed.rss", "/feed.json", "/"] {
        let resp = crate::support::get_output(&env.db_path(), path, &[]).await;
        assert_eq!(resp.status(), 200, "{path}");
        let body = resp.text().await.expect("body");
        for bad in [
            "alert(1)",
            "steal()",
            "evil.example",
            "javascript:",
            "p{}",
            "\"/rel",
            "\"pic.png",
            "\"based.png",
            "\"linkless.html",
        ] {
            assert!(!body.contains(bad), "{bad} in {path}: {body}");
        }
        // The river page shows short content as a text lead, without its
        // links; its HTML must still be clean (above).
        let goods: &[&str] = if path == "/" {
            &["based text", "linkless text"]
        } else {
            &[
                "https://rss.example/rel",
                "https://rss.example/pic.png",
                "https://cdn.b.example/media/based.png",
                linkless.as_str(),
                "based text",
                "linkless text",
            ]
        };
        for good in goods {
            assert!(body.contains(good), "{good} missing from {path}: {body}");
        }
    }
}

#[tokio::test]
async fn a_slow_feed_never_delays_the_others() {
    let server = FeedServer::start().await;
    server.set(
        "/slow.xml",
        Reply::feed("application/rss+xml", rss(&[("s", "Slow", "<p>s</p>")]))
            .delayed(Duration::from_secs(30)),
    );
    server.set(
        "/fast.xml",
        Reply::feed("application/rss+xml", rss(&[("f", "Fast", "<p>f</p>")])),
    );
    let env = TestEnv::with_poll(
        &[("timeout", "\"3s\""), ("concurrency", "2")],
        &[
            feed_table(&server.url("/slow.xml"), ""),
            feed_table(&server.url("/fast.xml"), ""),
        ]
        .concat(),
    );
    let started = Instant::now();
    let daemon = env.spawn_daemon().await;
    let xml = wait_for_entries(&env.base_url(), 1).await;
    assert!(xml.contains("Fast") && !xml.contains("Slow"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fast feed landed while the slow one was still hanging"
    );
    drop(daemon);

    // The slow one is cut off by the timeout and recorded as failing.
    let out = env.cli(&["poll"]);
    let text = crate::support::stdout(&out);
    assert!(text.contains("timed out"), "{text}");
}

#[tokio::test]
async fn an_oversized_feed_is_refused_not_stored() {
    let server = FeedServer::start().await;
    let big = format!("<p>{}</p>", "x".repeat(50_000));
    server.set(
        "/big.xml",
        Reply::feed("application/rss+xml", rss(&[("1", "Big", &big)])),
    );
    let env = TestEnv::with_poll(
        &[("max_body", "\"20KB\"")],
        &feed_table(&server.url("/big.xml"), ""),
    );
    let out = env.cli(&["poll"]);
    assert!(out.status.success());
    let text = crate::support::stdout(&out);
    assert!(text.contains("exceeds the 20000-byte limit"), "{text}");
}

/// Waits until a search output lists `n` entries.
async fn wait_for_search(base: &str, q: &str, n: usize) {
    wait_for_atom(&format!("{base}/feed.atom?q={q}"), |count| count == n).await;
}

/// Polls only queue entries for the search index; the daemon's indexer
/// catches up while it has time to spare, and a queue left in the database
/// (a crash or a stop in the middle of a burst) is indexed after the next
/// start, with nothing polled to set it off.
#[tokio::test]
async fn new_entries_become_searchable_and_a_queue_left_behind_is_indexed_at_start() {
    let server = FeedServer::start().await;
    let url = server.url("/a.xml");
    server.set(
        "/a.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("1", "First", "<p>about lighthouses</p>")]),
        ),
    );
    let env = TestEnv::new(&feed_table(&url, ""));
    let daemon = env.spawn_daemon().await;
    let base = env.base_url();
    wait_for_search(&base, "lighthouses", 1).await;

    server.set(
        "/a.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[
                ("1", "First", "<p>about lighthouses</p>"),
                ("2", "Second", "<p>about breakwaters</p>"),
            ]),
        ),
    );
    wait_for_search(&base, "breakwaters", 1).await;
    let (status, _) = daemon.stop();
    assert!(status.success());

    // What a daemon stopped mid-burst leaves: entries stored and queued,
    // the index without them. The feed is paused, so no poll can start
    // the indexer after the restart.
    {
        let db = rusqlite::Connection::open(env.db_path()).expect("open db");
        db.execute_batch(
            "INSERT INTO entry_fts (entry_fts) VALUES ('delete-all');
             INSERT INTO search_pending (entry_id, reindex) SELECT id, 0 FROM entry;",
        )
        .expect("queue every entry");
    }
    assert!(env.cli(&["feeds", "pause", &url]).status.success());
    let status = crate::support::stdout(&env.cli(&["status"]));
    assert!(
        status.contains("2 waiting for the search index"),
        "{status}"
    );
    let polled = server.requests("/a.xml").len();
    let found = get_output(&env.db_path(), "/feed.atom?q=lighthouses", &[])
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(found.matches("<entry>").count(), 0, "{found}");

    let daemon = env.spawn_daemon().await;
    wait_for_search(&base, "lighthouses", 1).await;
    wait_for_search(&base, "breakwaters", 1).await;
    let metrics = crate::support::http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("tributary_search_indexed_total 2"),
        "{metrics}"
    );
    drop(daemon);
    assert_eq!(
        server.requests("/a.xml").len(),
        polled,
        "polled while paused"
    );
}
