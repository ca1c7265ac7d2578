//! Polite, self-healing polling: what the poller sends, and when it plans
//! to come back, against scripted servers on 127.0.0.1. "When" is asserted
//! on the stored schedule, so no test waits for it.

use std::time::Duration;

use chrono::{Timelike, Utc};

use crate::feeds::rss;
use crate::support::{FeedServer, Reply, SharedHost, TestEnv, feed_table, shared_host, stdout};

/// Seconds from the feed's last check to its next one.
fn planned_wait(feed: &tributary::model::Feed) -> i64 {
    let last = feed.last_checked_at.expect("was checked");
    (feed.next_check_at - last).num_seconds()
}

fn item_feed() -> String {
    rss(&[("1", "One", "<p>1</p>")])
}

#[tokio::test]
async fn cache_control_max_age_holds_the_next_check_back() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", item_feed())
            .with_header("cache-control", "max-age=7200"),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    assert!(env.cli(&["poll"]).status.success());
    let feed = env.feed(&server.url("/a.xml")).await;
    assert_eq!(feed.schedule_reason.as_deref(), Some("max-age"));
    assert!(
        (7199..=7201).contains(&planned_wait(&feed)),
        "{}",
        planned_wait(&feed)
    );
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(list.contains("(max-age)"), "{list}");
}

#[tokio::test]
async fn expires_and_ttl_are_honoured_up_to_max_interval_and_sy_update_period_is_not_a_floor() {
    let server = FeedServer::start().await;
    let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(5400));
    server.set(
        "/expires.xml",
        Reply::feed("application/rss+xml", item_feed()).with_header("expires", &expires),
    );
    let with_ttl = item_feed().replace(
        "<description>d</description>",
        "<description>d</description><ttl>120</ttl>",
    );
    server.set("/ttl.xml", Reply::feed("application/rss+xml", with_ttl));
    let with_sy = item_feed()
        .replace(
            "<rss version=\"2.0\">",
            "<rss version=\"2.0\" xmlns:sy=\"http://purl.org/rss/1.0/modules/syndication/\">",
        )
        .replace(
            "<description>d</description>",
            "<description>d</description><sy:updatePeriod>weekly</sy:updatePeriod>",
        );
    server.set("/sy.xml", Reply::feed("application/rss+xml", with_sy));
    let env = TestEnv::with_poll(
        &[("max_interval", "\"1d\"")],
        &[
            feed_table(&server.url("/expires.xml"), ""),
            feed_table(&server.url("/ttl.xml"), ""),
            feed_table(&server.url("/sy.xml"), ""),
        ]
        .concat(),
    );
    assert!(env.cli(&["poll"]).status.success());

    let f = env.feed(&server.url("/expires.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("expires"));
    assert!(
        (5390..=5401).contains(&planned_wait(&f)),
        "{}",
        planned_wait(&f)
    );
    let f = env.feed(&server.url("/ttl.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("ttl"));
    assert_eq!(planned_wait(&f), 7200);
    // A week is asked for in sy:updatePeriod: no floor (WordPress says
    // "hourly" of every site); the interval stands.
    let f = env.feed(&server.url("/sy.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("interval"));
    assert!(planned_wait(&f) <= 2, "{}", planned_wait(&f));
}

/// WordPress writes `<sy:updatePeriod>hourly</sy:updatePeriod>` into every
/// feed whatever the site's cadence: it is no floor. A feed with its own
/// `interval`, and one on the default interval, are both polled at the
/// configured 5 s by the daemon, with or without publishing history.
#[tokio::test]
async fn wordpress_sy_update_period_does_not_hold_the_configured_interval_back() {
    let server = FeedServer::start().await;
    let wordpress = |dated: bool| {
        let date = if dated {
            "<pubDate>Tue, 10 Nov 2026 10:00:00 GMT</pubDate>"
        } else {
            ""
        };
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\" \
             xmlns:sy=\"http://purl.org/rss/1.0/modules/syndication/\"><channel>\
             <title>A WordPress site</title><link>https://wp.example/</link>\
             <description>d</description>\
             <sy:updatePeriod>\n\thourly\t</sy:updatePeriod>\
             <sy:updateFrequency>\n\t1\t</sy:updateFrequency>\
             <item><guid>1</guid><title>One</title>{date}</item></channel></rss>"
        )
    };
    server.set(
        "/fixed.xml",
        Reply::feed("application/rss+xml", wordpress(true)),
    );
    server.set(
        "/default.xml",
        Reply::feed("application/rss+xml", wordpress(false)),
    );
    let env = TestEnv::with_poll(
        &[("interval", "\"5s\"")],
        &[
            feed_table(&server.url("/fixed.xml"), "interval = \"5s\""),
            feed_table(&server.url("/default.xml"), ""),
        ]
        .concat(),
    );
    // `tributary poll` plans the next check at the interval ...
    assert!(env.cli(&["poll"]).status.success());
    for (path, reason) in [("/fixed.xml", "fixed"), ("/default.xml", "interval")] {
        let f = env.feed(&server.url(path)).await;
        assert_eq!(f.schedule_reason.as_deref(), Some(reason), "{path}");
        assert!(
            (4..=6).contains(&planned_wait(&f)),
            "{path}: {}",
            planned_wait(&f)
        );
    }
    // ... and the daemon keeps to it.
    let daemon = env.spawn_daemon().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    drop(daemon);
    for path in ["/fixed.xml", "/default.xml"] {
        let polls = server.requests(path).len();
        assert!(
            polls >= 3,
            "{path}: polled {polls} times in 12 s at a 5 s interval"
        );
    }
}

/// Many feeds on one host (a YouTube or Substack subscriber's list), each
/// with an article page there, with the default per-host limits — one
/// request at a time, a second apart: that host's queue of feeds and
/// articles drains at its own pace, a request about a second after the one
/// before (never a long stall, never a burst), while feeds on other hosts
/// are polled on time and their articles fetched, none of them waiting
/// behind that queue.
#[tokio::test]
async fn feeds_sharing_a_host_drain_at_its_pace_and_hold_back_no_other_host() {
    const CROWD: usize = 200;
    const WATCH: Duration = Duration::from_secs(20);
    // The crowd is due again long before the host has had time for every
    // other feed: each must still wait its turn, not jump the queue. The
    // other hosts (other loopback addresses) have two feeds each, polled
    // every 3 s, each with an article page on its own host.
    let SharedHost {
        crowded,
        crowd_paths,
        others,
        tables,
    } = shared_host(
        CROWD,
        Duration::ZERO,
        "interval = \"2s\"",
        &["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        "interval = \"3s\"",
    )
    .await;
    let env = TestEnv::with_config(
        &[
            ("interval", "\"1h\""),
            ("concurrency", "8"),
            ("per_host_concurrency", "1"),
            ("per_host_spacing", "\"1s\""),
        ],
        "[extract]\nfull_text = true\n",
        &tables,
    );
    let started = std::time::Instant::now();
    let daemon = env.spawn_daemon().await;
    tokio::time::sleep(WATCH).await;
    let ended = std::time::Instant::now();
    let (_, log) = daemon.stop();
    let log_tail: String = {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };

    // The crowded host: one request about every second from its first
    // on, feeds and articles alike.
    let mut starts = Vec::new();
    for path in &crowd_paths {
        let seen = crowded.requests(path);
        assert!(seen.len() <= 1, "{path} asked {} times", seen.len());
        starts.extend(seen.iter().map(|s| s.at));
    }
    starts.sort();
    let first = *starts.first().expect("the crowded host was polled");
    assert!(
        first - started < Duration::from_secs(5),
        "{:?}",
        first - started
    );
    for (k, at) in starts.iter().enumerate() {
        let late = (*at - first).as_secs_f64() - k as f64;
        assert!(
            late < 2.5,
            "the crowded host's request #{k} started {:.1} s after its turn",
            late
        );
    }
    for w in starts.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(900),
            "two requests to one host {:?} apart",
            w[1] - w[0]
        );
    }
    let expected = (ended - first).as_secs_f64() - 3.0;
    assert!(
        starts.len() as f64 >= expected,
        "{} requests to the crowded host in {:.0} s",
        starts.len(),
        (ended - first).as_secs_f64()
    );

    // The other hosts: every feed polled from the start and every ~3 s,
    // and its article fetched soon after the feed's first poll.
    for server in &others {
        for j in 0..2 {
            let polls: Vec<std::time::Instant> = server
                .requests(&format!("/f{j}.xml"))
                .iter()
                .map(|s| s.at)
                .collect();
            let Some(&first) = polls.first() else {
                panic!(
                    "{} never polled; daemon log:\n{log_tail}",
                    server.url(&format!("/f{j}.xml"))
                );
            };
            assert!(
                first - started < Duration::from_secs(5),
                "first poll {:?}",
                first - started
            );
            let mut times = polls.clone();
            times.push(ended);
            for w in times.windows(2) {
                assert!(
                    w[1] - w[0] < Duration::from_secs(6),
                    "{}: {:?} between polls (interval 3 s): {polls:?}",
                    server.url(&format!("/f{j}.xml")),
                    w[1] - w[0]
                );
            }
            // Its host takes a request a second: its two feeds, then its
            // two articles, then the feeds again.
            let article = server.requests(&format!("/story-{j}"));
            let Some(fetched) = article.first().map(|s| s.at) else {
                panic!(
                    "{} never fetched; daemon log:\n{log_tail}",
                    server.url(&format!("/story-{j}"))
                );
            };
            assert!(
                fetched - first < Duration::from_secs(8),
                "article fetched {:?} after its feed",
                fetched - first
            );
        }
    }
}

/// The same at a tenth of the spacing, so a whole round fits in the test:
/// 200 feeds on one host at one request per 100 ms are all polled within
/// about 20 s, each in its turn, none twice, and no request comes sooner
/// than the spacing allows.
#[tokio::test]
async fn a_host_queue_drains_at_its_own_pace_not_in_whole_seconds() {
    const CROWD: usize = 200;
    let spacing = Duration::from_millis(100);
    let server = FeedServer::start().await;
    let mut tables = String::new();
    for i in 0..CROWD {
        let path = format!("/c{i}.xml");
        server.set(&path, Reply::feed("application/rss+xml", item_feed()));
        tables.push_str(&feed_table(&server.url(&path), ""));
    }
    let env = TestEnv::with_poll(
        &[
            ("interval", "\"1h\""),
            ("concurrency", "8"),
            ("per_host_concurrency", "1"),
            ("per_host_spacing", "\"100ms\""),
        ],
        &tables,
    );
    let daemon = env.spawn_daemon().await;
    let round = spacing * CROWD as u32;
    let deadline = std::time::Instant::now() + round + Duration::from_secs(15);
    let polled = |i: usize| !server.requests(&format!("/c{i}.xml")).is_empty();
    while !(0..CROWD).all(polled) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, log) = daemon.stop();
    let mut starts = Vec::new();
    for i in 0..CROWD {
        let seen = server.requests(&format!("/c{i}.xml"));
        assert_eq!(seen.len(), 1, "/c{i}.xml asked {} times", seen.len());
        starts.push(seen[0].at);
    }
    starts.sort();
    for (k, at) in starts.iter().enumerate() {
        let late = (*at - starts[0]).as_secs_f64() - k as f64 * spacing.as_secs_f64();
        assert!(
            late < 5.0,
            "request #{k} came {late:.1} s after its turn; log:\n{log}"
        );
    }
    // No burst. As the server sees them, on a loaded machine: tens of
    // milliseconds of jitter around the spacing.
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= spacing / 2, "{:?}", w[1] - w[0]);
    }
}

#[tokio::test]
async fn skip_hours_move_the_next_check_to_an_allowed_hour() {
    let server = FeedServer::start().await;
    // Skip every hour except the one three hours from now.
    let allowed = (Utc::now().hour() + 3) % 24;
    let hours: String = (0..24)
        .filter(|h| *h != allowed)
        .map(|h| format!("<hour>{h}</hour>"))
        .collect();
    let doc = item_feed().replace(
        "<description>d</description>",
        &format!("<description>d</description><skipHours>{hours}</skipHours>"),
    );
    server.set("/a.xml", Reply::feed("application/rss+xml", doc));
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    assert!(env.cli(&["poll"]).status.success());
    let f = env.feed(&server.url("/a.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("skipHours"));
    assert_eq!(f.next_check_at.hour(), allowed);
    assert_eq!(f.next_check_at.minute(), 0);
}

#[tokio::test]
async fn a_429_slows_every_feed_on_that_host_and_survives_a_restart() {
    let server = FeedServer::start().await;
    server.set(
        "/limited.xml",
        Reply::status(429, "slow down").with_header("retry-after", "3600"),
    );
    server.set(
        "/other.xml",
        Reply::feed("application/rss+xml", item_feed()),
    );
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/limited.xml"), ""),
            feed_table(&server.url("/other.xml"), ""),
        ]
        .concat(),
    );
    let out = env.cli(&["poll", "--feed", &server.url("/limited.xml")]);
    assert!(stdout(&out).contains("429"), "{}", stdout(&out));
    let f = env.feed(&server.url("/limited.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("retry-after"));
    assert!(
        (3599..=3601).contains(&planned_wait(&f)),
        "{}",
        planned_wait(&f)
    );

    // A new process (as after a restart) still keeps away from the host:
    // the other feed on it is deferred without a request being sent.
    let out = env.cli(&["poll", "--feed", &server.url("/other.xml")]);
    assert!(stdout(&out).contains("deferred"), "{}", stdout(&out));
    assert!(server.requests("/other.xml").is_empty());
    let other = env.feed(&server.url("/other.xml")).await;
    assert_eq!(other.schedule_reason.as_deref(), Some("host retry-after"));
    assert_eq!(other.error_count, 0, "a deferral is not an error");
    let wait = (other.next_check_at - Utc::now()).num_seconds();
    assert!((3500..=3620).contains(&wait), "{wait}");
}

#[tokio::test]
async fn a_503_with_an_http_date_retry_after_is_obeyed() {
    let server = FeedServer::start().await;
    let when = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(10_000));
    server.set(
        "/a.xml",
        Reply::status(503, "maintenance").with_header("retry-after", &when),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    env.cli(&["poll"]);
    let f = env.feed(&server.url("/a.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("retry-after"));
    assert!(
        (9990..=10_001).contains(&planned_wait(&f)),
        "{}",
        planned_wait(&f)
    );
}

#[tokio::test]
async fn errors_back_off_exponentially_and_success_resets() {
    let server = FeedServer::start().await;
    server.set("/a.xml", Reply::status(500, "boom"));
    let url = server.url("/a.xml");
    let env = TestEnv::with_poll(
        &[("max_backoff", "\"3h\"")],
        &feed_table(&url, "interval = \"1h\""),
    );
    let mut waits = Vec::new();
    for _ in 0..4 {
        env.cli(&["poll", "--feed", &url]);
        let f = env.feed(&url).await;
        assert_eq!(f.schedule_reason.as_deref(), Some("backoff"));
        waits.push(planned_wait(&f));
    }
    let expect = [3600.0, 7200.0, 10800.0, 10800.0];
    for (w, e) in waits.iter().zip(expect) {
        assert!(
            (*w as f64) >= e * 0.89 && (*w as f64) <= (e * 1.11).min(10800.0),
            "{waits:?}"
        );
    }
    let f = env.feed(&url).await;
    assert_eq!(f.error_count, 4);
    assert_eq!(
        f.status,
        tributary::model::FeedStatus::Active,
        "never disabled"
    );

    server.set("/a.xml", Reply::feed("application/rss+xml", item_feed()));
    env.cli(&["poll", "--feed", &url]);
    let f = env.feed(&url).await;
    assert_eq!(f.error_count, 0);
    assert_eq!(f.schedule_reason.as_deref(), Some("fixed"));
}

#[tokio::test]
async fn a_permanent_redirect_is_adopted_once_seen_consistently() {
    let server = FeedServer::start().await;
    let new_url = server.url("/new.xml");
    server.set(
        "/old.xml",
        Reply::status(301, "moved").with_header("location", "/new.xml"),
    );
    server.set(
        "/temp.xml",
        Reply::status(302, "elsewhere").with_header("location", "/new.xml"),
    );
    server.set("/new.xml", Reply::feed("application/rss+xml", item_feed()));
    let old_url = server.url("/old.xml");
    let temp_url = server.url("/temp.xml");
    let env = TestEnv::new(&[feed_table(&old_url, ""), feed_table(&temp_url, "")].concat());

    assert!(env.cli(&["poll"]).status.success());
    let (before, _) = crate::support::read_atom(&env.db_path()).await;
    for n in 1..3 {
        let f = env.feed(&old_url).await;
        assert_eq!(f.fetch_url, None, "not adopted after {n} polls");
        assert_eq!(f.pending_redirect, Some((new_url.clone(), n)));
        env.cli(&["poll"]);
    }
    let f = env.feed(&old_url).await;
    assert_eq!(f.fetch_url.as_deref(), Some(new_url.as_str()));
    assert_eq!(
        env.feed(&temp_url).await.fetch_url,
        None,
        "302 is never stored"
    );

    // From now on the old address is not asked any more.
    let old_requests = server.requests("/old.xml").len();
    env.cli(&["poll"]);
    assert_eq!(server.requests("/old.xml").len(), old_requests);
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(
        list.contains("moved to: ") && list.contains(&new_url),
        "{list}"
    );

    // Entries kept their identity across the move.
    let (after, _) = crate::support::read_atom(&env.db_path()).await;
    let ids = |f: &feed_rs::model::Feed| {
        let mut v: Vec<String> = f.entries.iter().map(|e| e.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&before), ids(&after));
}

#[tokio::test]
async fn gone_stops_polling_until_resumed() {
    let server = FeedServer::start().await;
    server.set("/a.xml", Reply::status(410, "gone"));
    let url = server.url("/a.xml");
    let env = TestEnv::new(&feed_table(&url, ""));
    let out = env.cli(&["poll"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("410"), "{}", stdout(&out));
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(list.starts_with("gone"), "{list}");

    env.cli(&["poll"]);
    assert_eq!(
        server.requests("/a.xml").len(),
        1,
        "a gone feed is not polled"
    );

    server.set("/a.xml", Reply::feed("application/rss+xml", item_feed()));
    assert!(env.cli(&["feeds", "resume", &url]).status.success());
    env.cli(&["poll"]);
    assert_eq!(server.requests("/a.xml").len(), 2);
    assert!(stdout(&env.cli(&["feeds", "list"])).starts_with("ok"));
}

#[tokio::test]
async fn paused_feeds_are_not_polled() {
    let server = FeedServer::start().await;
    server.set("/a.xml", Reply::feed("application/rss+xml", item_feed()));
    let url = server.url("/a.xml");
    let env = TestEnv::new(&feed_table(&url, ""));
    assert!(env.cli(&["feeds", "pause", &url]).status.success());
    env.cli(&["poll"]);
    assert!(server.requests("/a.xml").is_empty());
    assert!(stdout(&env.cli(&["feeds", "list"])).starts_with("paused"));
    // Named explicitly, it is polled anyway.
    env.cli(&["poll", "--feed", &url]);
    assert_eq!(server.requests("/a.xml").len(), 1);
}

#[tokio::test]
async fn a_trickling_server_is_cut_off_by_the_timeout() {
    let server = FeedServer::start().await;
    server.set(
        "/slow.xml",
        Reply::feed("application/rss+xml", item_feed()).trickled(Duration::from_millis(50)),
    );
    let env = TestEnv::with_poll(
        &[("timeout", "\"2s\"")],
        &feed_table(&server.url("/slow.xml"), ""),
    );
    let started = std::time::Instant::now();
    let out = env.cli(&["poll"]);
    assert!(stdout(&out).contains("timed out"), "{}", stdout(&out));
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn per_host_spacing_separates_requests_to_one_host() {
    let server = FeedServer::start().await;
    for p in ["/a.xml", "/b.xml", "/c.xml"] {
        server.set(p, Reply::feed("application/rss+xml", item_feed()));
    }
    let env = TestEnv::with_poll(
        &[
            ("per_host_concurrency", "1"),
            ("per_host_spacing", "\"700ms\""),
        ],
        &["/a.xml", "/b.xml", "/c.xml"]
            .iter()
            .map(|p| feed_table(&server.url(p), ""))
            .collect::<String>(),
    );
    assert!(env.cli(&["poll"]).status.success());
    let mut times: Vec<std::time::Instant> = ["/a.xml", "/b.xml", "/c.xml"]
        .iter()
        .map(|p| server.requests(p)[0].at)
        .collect();
    times.sort();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(650), "{gap:?}");
    }
}

#[tokio::test]
async fn legacy_charsets_decode_to_the_right_text() {
    let server = FeedServer::start().await;
    let cyrillic = "<?xml version=\"1.0\" encoding=\"windows-1251\"?><rss version=\"2.0\"><channel><title>t</title>\
        <item><guid>1</guid><title>Привет, мир</title></item></channel></rss>";
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(cyrillic);
    server.set(
        "/cp1251.xml",
        Reply::feed("application/rss+xml", bytes.into_owned()),
    );
    let japanese = "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
        <item><guid>2</guid><title>こんにちは世界</title></item></channel></rss>";
    let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode(japanese);
    server.set(
        "/sjis.xml",
        Reply::feed("application/rss+xml; charset=Shift_JIS", bytes.into_owned()),
    );
    let mut stray = rss(&[("3", "caf\u{e9} ok", "<p>x</p>")]).into_bytes();
    stray.extend_from_slice(b"<!-- \xff -->");
    server.set("/stray.xml", Reply::feed("application/rss+xml", stray));
    let env = TestEnv::new(
        &["/cp1251.xml", "/sjis.xml", "/stray.xml"]
            .iter()
            .map(|p| feed_table(&server.url(p), ""))
            .collect::<String>(),
    );
    let out = env.cli(&["poll"]);
    assert!(stdout(&out).contains("0 failed"), "{}", stdout(&out));
    let (_, xml) = crate::support::read_atom(&env.db_path()).await;
    for t in ["Привет, мир", "こんにちは世界", "café ok"] {
        assert!(xml.contains(t), "{t} missing");
    }
}

#[tokio::test]
async fn adaptive_interval_follows_the_publishing_rhythm() {
    let server = FeedServer::start().await;
    // One post every six hours.
    let mut doc =
        String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>");
    let newest = Utc::now() - chrono::Duration::hours(1);
    for i in 0..8 {
        let at = newest - chrono::Duration::hours(6 * i);
        doc.push_str(&format!(
            "<item><guid>{i}</guid><title>post {i}</title><pubDate>{}</pubDate></item>",
            at.to_rfc2822()
        ));
    }
    doc.push_str("</channel></rss>");
    server.set("/a.xml", Reply::feed("application/rss+xml", doc.clone()));
    server.set("/b.xml", Reply::feed("application/rss+xml", doc));
    let env = TestEnv::with_poll(
        &[("interval", "\"30m\""), ("min_interval", "\"5m\"")],
        &[
            feed_table(&server.url("/a.xml"), ""),
            feed_table(&server.url("/b.xml"), "interval = \"45m\""),
        ]
        .concat(),
    );
    assert!(env.cli(&["poll"]).status.success());
    let f = env.feed(&server.url("/a.xml")).await;
    assert_eq!(f.learned_interval, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(f.schedule_reason.as_deref(), Some("adaptive"));
    assert_eq!(f.current_interval, Some(Duration::from_secs(3 * 3600)));
    // A fixed per-feed interval wins over learning.
    let f = env.feed(&server.url("/b.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("fixed"));
    assert_eq!(f.current_interval, Some(Duration::from_secs(45 * 60)));

    // adaptive = false: every feed at `interval`.
    let env = TestEnv::with_poll(
        &[
            ("interval", "\"30m\""),
            ("min_interval", "\"5m\""),
            ("adaptive", "false"),
        ],
        &feed_table(&server.url("/a.xml"), ""),
    );
    assert!(env.cli(&["poll"]).status.success());
    let f = env.feed(&server.url("/a.xml")).await;
    assert_eq!(f.schedule_reason.as_deref(), Some("interval"));
    assert_eq!(f.current_interval, Some(Duration::from_secs(30 * 60)));
}

#[tokio::test]
async fn redirects_to_non_public_addresses_are_refused() {
    let server = FeedServer::start().await;
    let port = server.addr.port();
    server.set("/ok.xml", Reply::feed("application/rss+xml", item_feed()));
    let targets = [
        (
            "/to-localhost",
            format!("http://localhost:{port}/ok.xml"),
            "localhost",
        ),
        (
            "/to-metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local",
        ),
        (
            "/to-hex-loopback",
            format!("http://0x7f000002:{port}/ok.xml"),
            "loopback",
        ),
        ("/to-private", "http://10.0.0.1/feed".to_owned(), "private"),
        (
            "/to-mapped",
            format!("http://[::ffff:127.0.0.2]:{port}/ok.xml"),
            "loopback",
        ),
    ];
    for (path, location, _) in &targets {
        server.set(
            path,
            Reply::status(302, "moved").with_header("location", location),
        );
    }
    let env = TestEnv::new(
        &targets
            .iter()
            .map(|(p, _, _)| feed_table(&server.url(p), ""))
            .collect::<String>(),
    );
    let out = env.cli(&["poll"]);
    let text = stdout(&out);
    assert!(text.contains("5 failed"), "{text}");
    for (path, _, kind) in &targets {
        let f = env.feed(&server.url(path)).await;
        let err = f.last_error.unwrap_or_default();
        assert!(
            err.contains("refused to connect") && err.contains(kind),
            "{path}: {err}"
        );
    }
    // The operator's own feed host (127.0.0.1) stays reachable.
    assert_eq!(
        server.requests("/ok.xml").len(),
        0,
        "no request reached the target"
    );
}

/// Many feeds on one host reuse the connections the per-host limit allows
/// instead of opening a new one for most polls: the host sees at most
/// `per_host_concurrency` connections over two full rounds.
#[tokio::test]
async fn feeds_on_one_host_reuse_its_connections() {
    let server = FeedServer::start().await;
    let paths: Vec<String> = (0..24).map(|i| format!("/f{i}.xml")).collect();
    for p in &paths {
        // Slow enough that all four connections are busy at once.
        server.set(
            p,
            Reply::feed("application/rss+xml", item_feed()).delayed(Duration::from_millis(20)),
        );
    }
    let env = TestEnv::with_poll(
        &[("concurrency", "4"), ("per_host_concurrency", "4")],
        &paths
            .iter()
            .map(|p| feed_table(&server.url(p), ""))
            .collect::<String>(),
    );
    let out = env.cli(&["poll"]);
    assert!(stdout(&out).contains("0 failed"), "{}", stdout(&out));
    let peers: std::collections::HashSet<std::net::SocketAddr> = paths
        .iter()
        .flat_map(|p| server.requests(p))
        .map(|seen| seen.peer)
        .collect();
    assert!(
        peers.len() <= 4,
        "24 polls opened {} connections",
        peers.len()
    );
}

/// The daemon never has more requests in flight than `concurrency` (across
/// hosts) or `per_host_concurrency` (to one host), even now that a poll
/// gives its request slot back before it is parsed and recorded: with slow
/// replies, no `limit + 1` requests ever start within one reply's time.
#[tokio::test]
async fn the_daemon_keeps_requests_in_flight_within_both_caps() {
    for (global, per_host) in [("2", "8"), ("8", "2")] {
        let server = FeedServer::start().await;
        let paths: Vec<String> = (0..6).map(|i| format!("/slow{i}.xml")).collect();
        let delay = Duration::from_millis(400);
        for p in &paths {
            server.set(
                p,
                Reply::feed("application/rss+xml", item_feed()).delayed(delay),
            );
        }
        let env = TestEnv::with_poll(
            &[
                ("concurrency", global),
                ("per_host_concurrency", per_host),
                ("interval", "\"1h\""),
            ],
            &paths
                .iter()
                .map(|p| feed_table(&server.url(p), ""))
                .collect::<String>(),
        );
        let daemon = env.spawn_daemon().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while paths.iter().any(|p| server.requests(p).is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "not every feed polled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(daemon);
        let mut starts: Vec<std::time::Instant> =
            paths.iter().map(|p| server.requests(p)[0].at).collect();
        starts.sort();
        // Two slots: the third request waits for the first reply.
        for w in starts.windows(3) {
            let gap = w[2] - w[0];
            assert!(
                gap >= delay - Duration::from_millis(50),
                "concurrency {global}, per host {per_host}: three requests within {gap:?}"
            );
        }
    }
}
