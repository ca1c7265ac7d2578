//! Several real `tributary run` processes on one PostgreSQL database (a
//! fresh one per test, on `TRIBUTARY_TEST_POSTGRES`; skipped, saying so,
//! without it): each due feed polled by exactly one node per cycle, a
//! killed node's feeds and article pages taken over within the lease time,
//! a PostgreSQL restart survived, and every node serving the same bytes
//! and ETag for the same data. The nodes tell themselves apart to the feed
//! servers by their `User-Agent` (`tributary-node-N`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::support::{
    FeedServer, Node, PgCluster, PgDatabase, Reply, Seen, TestEnv, cluster_nodes, feed_table,
    get_store_output, http, sent_by, start_cluster,
};

/// An RSS document of feed `feed` with entries `0..n`: unique titles and
/// links, dated an hour apart (so the output order is fixed).
fn rss(feed: usize, n: usize) -> String {
    let items: String = (0..n)
        .map(|k| {
            format!(
                "<item><guid>f{feed}-{k}</guid><title>Feed {feed} story {k}</title>\
                 <link>https://news{feed}.example/story/{k}</link>\
                 <description>&lt;p&gt;Story {k} of feed {feed}, \
                 &lt;b&gt;bold&lt;/b&gt; and plain.&lt;/p&gt;</description>\
                 <pubDate>{}</pubDate></item>",
                (chrono::DateTime::from_timestamp(
                    1_772_000_000 + (feed * 100 + k) as i64 * 3600,
                    0
                )
                .expect("date"))
                .to_rfc2822()
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Feed {feed}</title>\
         <link>https://news{feed}.example/</link>{items}</channel></rss>"
    )
}

fn title(feed: usize, k: usize) -> String {
    format!("Feed {feed} story {k}")
}

/// Entries in the database, and how many distinct titles they have.
async fn stored(url: &str) -> (i64, i64) {
    let row = crate::support::pg_client(url)
        .await
        .query_one("SELECT count(*), count(DISTINCT title) FROM entry", &[])
        .await
        .expect("count entries");
    (row.get(0), row.get(1))
}

/// Waits until the database holds `n` entries; fails naming what the
/// nodes logged otherwise.
async fn wait_stored(url: &str, n: i64, secs: u64, nodes: &[Node]) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (count, _) = stored(url).await;
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} of {n} entries stored after {secs}s:\n{}",
            logs(nodes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tail of each node's log, for a failure message; with
/// `CLUSTER_LOG_DIR` set, each whole log is also written there.
fn logs(nodes: &[Node]) -> String {
    if let Ok(dir) = std::env::var("CLUSTER_LOG_DIR") {
        for n in nodes {
            let _ = std::fs::write(format!("{dir}/{}.log", n.name), n.log());
        }
    }
    nodes
        .iter()
        .map(|n| format!("--- {}:\n{}", n.name, tail(&n.log(), 40)))
        .collect()
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The titles of a node's JSON Feed (`limit` entries), in order, and its
/// item ids.
async fn served_titles(node: &Node, limit: usize) -> (Vec<String>, Vec<String>) {
    let text = http()
        .get(format!("{}/feed.json?limit={limit}", node.base_url()))
        .send()
        .await
        .expect("GET /feed.json")
        .text()
        .await
        .expect("body");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON Feed");
    let items = json["items"].as_array().cloned().unwrap_or_default();
    let field = |k: &str| -> Vec<String> {
        items
            .iter()
            .map(|i| i[k].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    (field("title"), field("id"))
}

/// Every entry in `want` is served by every node once, and nothing else.
async fn assert_served_once(nodes: &[Node], want: &HashSet<String>) {
    for node in nodes {
        let (titles, ids) = served_titles(node, want.len() + 50).await;
        let distinct: HashSet<&String> = titles.iter().collect();
        assert_eq!(distinct.len(), titles.len(), "{}: a story twice", node.name);
        let distinct_ids: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct_ids.len(), ids.len(), "{}: an id twice", node.name);
        let got: HashSet<String> = titles.into_iter().collect();
        let missing: Vec<&String> = want.difference(&got).collect();
        let extra: Vec<&String> = got.difference(want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} serves {} entries; missing {missing:?}, unexpected {extra:?}",
            node.name,
            got.len()
        );
    }
}

/// Every feed polled exactly once per cycle by the cluster: 150 feeds on
/// three hosts, three nodes (the third joining once the others hold
/// every feed), a 2 s interval. Each feed's requests are
/// spaced about one interval apart (two nodes polling one feed in one
/// cycle would send two within moments; a feed the cluster lost would go
/// unpolled), all three nodes take part, and the entries (added midway,
/// while the nodes poll) are stored and served once each.
#[tokio::test]
async fn three_nodes_poll_every_feed_exactly_once_per_cycle() {
    let Some(db) = PgDatabase::create("three_nodes_poll_every_feed_exactly_once_per_cycle").await
    else {
        return;
    };
    const PER_HOST: usize = 50;
    let servers = [
        FeedServer::start_on("127.0.0.1").await,
        FeedServer::start_on("127.0.0.2").await,
        FeedServer::start_on("127.0.0.3").await,
    ];
    let mut feeds = String::new();
    // (server, path, feed number)
    let mut all = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for i in 0..PER_HOST {
            let f = s * PER_HOST + i;
            let path = format!("/f/{f}.xml");
            // The first answers are slow, so the first nodes hold every
            // feed for a while.
            server.set(
                &path,
                Reply::feed("application/rss+xml", rss(f, 2))
                    .with_etag("\"v1\"")
                    .delayed(Duration::from_secs(3)),
            );
            feeds.push_str(&feed_table(&server.url(&path), ""));
            all.push((s, path, f));
        }
    }
    let mut nodes = cluster_nodes(
        3,
        &[
            ("interval", "\"2s\""),
            ("adaptive", "false"),
            ("concurrency", "64"),
            ("per_host_concurrency", "64"),
        ],
        "[extract]\nfull_text = false\n",
        &feeds,
    );
    // Two nodes first, then the third while the others hold every feed:
    // it must not sit idle until the leases it saw would have run out.
    start_cluster(&mut nodes[1..], &db.url).await;
    start_cluster(&mut nodes[..1], &db.url).await;
    for (s, path, f) in &all {
        servers[*s].set(
            path,
            Reply::feed("application/rss+xml", rss(*f, 2)).with_etag("\"v1\""),
        );
    }
    let n = all.len();
    wait_stored(&db.url, 2 * n as i64, 30, &nodes).await;

    // New entries while the nodes poll: every feed gains a third.
    for (s, path, f) in &all {
        servers[*s].set(
            path,
            Reply::feed("application/rss+xml", rss(*f, 3)).with_etag("\"v2\""),
        );
    }
    wait_stored(&db.url, 3 * n as i64, 30, &nodes).await;
    // A few more cycles of conditional GETs.
    let watch_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let watched = watch_from.elapsed();

    let mut by_node: HashMap<String, usize> = HashMap::new();
    for (s, path, f) in &all {
        let seen: Vec<Seen> = servers[*s].requests(path);
        assert!(!seen.is_empty(), "feed {f} never polled:\n{}", logs(&nodes));
        for pair in seen.windows(2) {
            let gap = pair[1].at - pair[0].at;
            // The schedule is kept in whole seconds: a 2 s interval
            // (±10%) may come round after 0.8 s; two nodes polling one
            // feed would send their requests within moments.
            assert!(
                gap >= Duration::from_millis(500),
                "feed {f} polled twice in one cycle ({gap:?} apart, by {} and {}):\n{}",
                sent_by(&pair[0]),
                sent_by(&pair[1]),
                logs(&nodes)
            );
            // A feed the cluster lost would wait for its lease (65 s);
            // the first answers took 3 s, and a loaded machine lags.
            assert!(
                gap <= Duration::from_secs(12),
                "feed {f} missed cycles ({gap:?} between polls):\n{}",
                logs(&nodes)
            );
        }
        let late = seen.iter().filter(|r| r.at >= watch_from).count();
        assert!(
            late >= 2 && late as f64 <= watched.as_secs_f64() / 0.8 + 1.0,
            "feed {f} polled {late} times in {watched:?} at a 2s interval"
        );
        for r in &seen {
            *by_node.entry(sent_by(r)).or_default() += 1;
        }
    }
    let total: usize = by_node.values().sum();
    for node in &nodes {
        let share = by_node.get(&node.name).copied().unwrap_or(0);
        assert!(
            share * 20 >= total,
            "{} sent {share} of {total} polls: {by_node:?}\n{}",
            node.name,
            logs(&nodes)
        );
    }
    assert_eq!(by_node.len(), 3, "{by_node:?}");

    let (count, titles) = stored(&db.url).await;
    assert_eq!((count, titles), (3 * n as i64, 3 * n as i64));
    let want: HashSet<String> = all
        .iter()
        .flat_map(|(_, _, f)| (0..3).map(|k| title(*f, k)))
        .collect();
    assert_served_once(&nodes, &want).await;

    for node in nodes {
        let (status, log) = node.daemon.expect("running").stop();
        assert!(status.success(), "{log}");
    }
    db.drop_database().await;
}

/// Waits until the search index holds every entry (so a `?q=` page is the
/// same on every node).
async fn wait_indexed(db: &PgDatabase, nodes: &[Node]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 = db
            .client()
            .await
            .query_one("SELECT count(*) FROM search_pending", &[])
            .await
            .expect("count search_pending")
            .get(0);
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} entries still wait for the search index:\n{}",
            logs(nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A document as one node served it.
#[derive(Debug, PartialEq)]
struct Doc {
    status: u16,
    etag: String,
    last_modified: String,
    body: String,
}

async fn get_doc(node: &Node, path: &str, if_none_match: Option<&str>) -> Doc {
    let mut req = http().get(format!("{}{path}", node.base_url()));
    if let Some(etag) = if_none_match {
        req = req.header("if-none-match", etag);
    }
    let resp = req.send().await.expect("GET output");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, etag, last_modified) = (
        resp.status().as_u16(),
        header("etag"),
        header("last-modified"),
    );
    Doc {
        status,
        etag,
        last_modified,
        body: resp.text().await.expect("body"),
    }
}

const OUTPUTS: [&str; 8] = [
    "/feed.atom",
    "/feed.rss",
    "/feed.json",
    "/",
    "/feed.json?q=bold",
    "/feed.atom?limit=5",
    "/o/news.rss",
    "/o/news",
];

/// Every output from every node: the same status, bytes, ETag and
/// Last-Modified as node 0's, which it returns per path.
async fn same_everywhere(nodes: &[Node]) -> Vec<Doc> {
    let mut first = Vec::new();
    for path in OUTPUTS {
        let doc = get_doc(&nodes[0], path, None).await;
        assert_eq!(doc.status, 200, "{path}: {}", doc.body);
        assert!(!doc.etag.is_empty(), "{path} has no ETag");
        for node in &nodes[1..] {
            let other = get_doc(node, path, None).await;
            assert!(
                other == doc,
                "{path}: {} serves other bytes or validators than {}:\n{:?}\n{:?}",
                node.name,
                nodes[0].name,
                (&doc.etag, &doc.last_modified, doc.body.len()),
                (&other.etag, &other.last_modified, other.body.len()),
            );
            // One node's validator holds at every node.
            let again = get_doc(node, path, Some(&doc.etag)).await;
            assert_eq!(again.status, 304, "{path} at {}", node.name);
        }
        first.push(doc);
    }
    first
}

/// Any node serves any output, and the same bytes and ETag for the same
/// data: every format, a page, a search and a named output, from three
/// nodes. A conditional GET with one node's ETag gets a 304 from the
/// others. After a new entry arrives (polled by whichever node), every
/// node serves the new document, none a stale cached one, with a new ETag
/// that is again the same everywhere.
#[tokio::test]
async fn every_node_serves_the_same_bytes_and_etag() {
    let Some(db) = PgDatabase::create("every_node_serves_the_same_bytes_and_etag").await else {
        return;
    };
    let server = FeedServer::start().await;
    let mut feeds = String::new();
    for f in 0..8 {
        let path = format!("/s/{f}.xml");
        server.set(&path, Reply::feed("application/rss+xml", rss(f, 3)));
        feeds.push_str(&feed_table(&server.url(&path), "tags = [\"news\"]"));
    }
    let mut nodes = cluster_nodes(
        3,
        &[("adaptive", "false")],
        "[extract]\nfull_text = false\n[[output]]\nname = \"news\"\ntags = [\"news\"]\n",
        &feeds,
    );
    start_cluster(&mut nodes, &db.url).await;
    wait_stored(&db.url, 24, 30, &nodes).await;
    wait_indexed(&db, &nodes).await;
    let before = same_everywhere(&nodes).await;

    // A new entry, the newest of all, on one feed.
    let mut newest = rss(3, 3);
    newest = newest.replacen(
        "<item>",
        "<item><guid>late</guid><title>Late &amp; breaking</title>\
         <link>https://late.example/1</link><description>bold news</description>\
         <pubDate>Mon, 01 Jun 2026 10:00:00 GMT</pubDate></item><item>",
        1,
    );
    server.set("/s/3.xml", Reply::feed("application/rss+xml", newest));
    wait_stored(&db.url, 25, 30, &nodes).await;
    wait_indexed(&db, &nodes).await;
    let after = same_everywhere(&nodes).await;
    for ((path, old), new) in OUTPUTS.iter().zip(&before).zip(&after) {
        assert_ne!(old.etag, new.etag, "{path}: the ETag did not change");
        assert!(
            [
                "Late &amp; breaking",
                "Late & breaking",
                "Late &#38; breaking"
            ]
            .iter()
            .any(|t| new.body.contains(t)),
            "{path} does not show the new entry:\n{}",
            new.body
        );
        for node in &nodes {
            let stale = get_doc(node, path, Some(&old.etag)).await;
            assert_eq!(
                stale.status, 200,
                "{path} at {}: 304 on a stale ETag",
                node.name
            );
        }
    }

    for node in nodes {
        let (status, log) = node.daemon.expect("running").stop();
        assert!(status.success(), "{log}");
    }
    db.drop_database().await;
}

/// An article page for entry `k` of feed `f`: prose of its own (no two
/// pages near duplicates) with a marker the outputs show once extracted.
fn article_page(f: usize, k: usize) -> String {
    let mut rng = fastrand::Rng::with_seed((f * 1000 + k) as u64);
    let vocab = [
        "harbour",
        "council",
        "storm",
        "fleet",
        "bridge",
        "market",
        "river",
        "school",
        "train",
        "garden",
        "museum",
        "festival",
        "harvest",
        "library",
        "island",
        "valley",
        "factory",
        "station",
        "orchard",
        "tunnel",
        "meadow",
        "quarry",
        "lighthouse",
        "bakery",
        "stadium",
        "forest",
        "canal",
        "village",
        "castle",
        "airport",
    ];
    let paragraphs: String = (0..4)
        .map(|_| {
            let words: Vec<&str> = (0..40).map(|_| vocab[rng.usize(..vocab.len())]).collect();
            format!("<p>The {}.</p>\n", words.join(" "))
        })
        .collect();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Feed {f} story {k}</title></head><body><main><article>\
         <h1>Feed {f} story {k}</h1><p>Marker f{f}k{k} opens the full article.</p>\n\
         {paragraphs}</article></main></body></html>"
    )
}

/// Feed `f`'s two entries linking to article pages on `server`.
fn rss_with_articles(server: &FeedServer, f: usize) -> String {
    let items: String = (0..2)
        .map(|k| {
            format!(
                "<item><guid>f{f}-{k}</guid><title>Feed {f} story {k}</title>\
                 <link>{}</link><description>Teaser {k} of feed {f}.</description>\
                 <pubDate>Mon, 02 Mar 2026 1{k}:0{}:00 GMT</pubDate></item>",
                server.url(&format!("/a/{f}/{k}")),
                f % 10
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Feed {f}</title>\
         <link>{}</link>{items}</channel></rss>",
        server.url("/")
    )
}

/// Work leased in the database and not yet done: feeds being polled
/// (URL → lease end) and article pages claimed (URL → lease end).
async fn leases(db: &PgDatabase) -> (HashMap<String, i64>, HashMap<String, i64>) {
    let client = db.client().await;
    let rows = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .expect("read leases")
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<HashMap<_, _>>()
        }
    };
    let now = chrono::Utc::now().timestamp();
    let mut feeds =
        rows("SELECT url, next_check_at FROM feed WHERE schedule_reason = 'polling'").await;
    feeds.retain(|_, until| *until > now);
    let mut pages = rows("SELECT url, next_attempt_at FROM article WHERE status = 'pending'").await;
    pages.retain(|_, until| *until > now);
    (feeds, pages)
}

/// kill -9 of a node while it holds leases on feeds and article pages
/// (its requests hang: the feed server answers `tributary-node-0` only
/// after a minute): the other nodes poll its feeds and fetch its pages
/// once the leases run out — not before, and within a few seconds after
/// — and nothing is lost (every entry served, with its article) or
/// duplicated (every entry, story and article once). The lease is the
/// fetch timeout plus `[poll] lease_margin`, here 6 s + 2 s; the host's
/// lease (see `cluster_hosts.rs`) is no longer.
#[tokio::test]
async fn a_killed_nodes_feeds_and_pages_are_taken_over_when_its_leases_run_out() {
    let Some(db) = PgDatabase::create("a_killed_nodes_feeds_and_pages_are_taken_over").await else {
        return;
    };
    const FEEDS: usize = 10;
    let server = FeedServer::start().await;
    let hang = Duration::from_secs(60);
    let mut feeds = String::new();
    for f in 0..FEEDS {
        server.set(
            &format!("/k/{f}.xml"),
            Reply::feed("application/rss+xml", rss_with_articles(&server, f)),
        );
        for k in 0..2 {
            server.set(
                &format!("/a/{f}/{k}"),
                Reply::feed("text/html; charset=utf-8", article_page(f, k)).slow_for(
                    "user-agent",
                    "tributary-node-0",
                    hang,
                ),
            );
        }
        feeds.push_str(&feed_table(&server.url(&format!("/k/{f}.xml")), ""));
    }
    let mut nodes = cluster_nodes(
        3,
        &[
            ("interval", "\"3s\""),
            ("adaptive", "false"),
            ("timeout", "\"6s\""),
            ("lease_margin", "\"2s\""),
            ("concurrency", "16"),
            ("per_host_concurrency", "32"),
        ],
        "[extract]\nfull_text = true\nconcurrency = 8\n",
        &feeds,
    );
    // Node 0 alone first: it polls every feed (answered at once), claims
    // the article pages they queue (its requests hang), and, once the
    // feeds answer it slowly too, leases them at its next cycle.
    start_cluster(&mut nodes[..1], &db.url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pages) = leases(&db).await;
        if pages.len() >= 2 * FEEDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 0 did not claim the article pages:\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for f in 0..FEEDS {
        server.set(
            &format!("/k/{f}.xml"),
            Reply::feed("application/rss+xml", rss_with_articles(&server, f)).slow_for(
                "user-agent",
                "tributary-node-0",
                hang,
            ),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (feeds, _) = leases(&db).await;
        if feeds.len() == FEEDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 0 did not lease its feeds again:\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The others start; node 0 dies holding every lease.
    start_cluster(&mut nodes[1..], &db.url).await;
    let (feed_leases, page_leases) = leases(&db).await;
    // The host's lease too (the per-host limits hold for the cluster: a
    // node sends a host requests only while it holds it), in seconds: no
    // other node may fetch from the host before it runs out either.
    let host_lease: f64 = db
        .client()
        .await
        .query_one(
            "SELECT coalesce(max(expires_at), 0) FROM host_lease WHERE node <> ''",
            &[],
        )
        .await
        .expect("read the host lease")
        .get::<_, i64>(0) as f64
        / 1000.0;
    let killed_at = Instant::now();
    let killed_ts = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let (_, log) = nodes[0].daemon.take().expect("node 0").kill();
    assert!(
        !log.contains("cannot record") && !log.contains("timed out"),
        "node 0 finished some of its work before it was killed:\n{log}"
    );
    assert_eq!(feed_leases.len(), FEEDS, "{feed_leases:?}");
    assert_eq!(page_leases.len(), 2 * FEEDS, "{page_leases:?}");

    // Every page fetched (and extracted) by another node.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let done: i64 = db
            .client()
            .await
            .query_one("SELECT count(*) FROM article WHERE status = 'done'", &[])
            .await
            .expect("count articles")
            .get(0);
        if done == 2 * FEEDS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} pages fetched since node 0 died:\n{}",
            2 * FEEDS,
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while feed_leases
        .keys()
        .any(|url| !server_has_taken_over(&server, url, killed_at))
    {
        assert!(
            Instant::now() < deadline,
            "node 0's feeds were not polled by another node:\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each lease was honoured to its end and taken over soon after:
    // `until` is whole seconds, so the work may come due up to a second
    // early; a few seconds cover the dispatch loop's next look.
    let requests = server.all_requests();
    for (url, until) in feed_leases.iter().chain(&page_leases) {
        let path = url::Url::parse(url).expect("url").path().to_owned();
        let first = requests
            .iter()
            .filter(|r| r.path == path && r.at > killed_at && sent_by(r) != "tributary-node-0")
            .map(|r| killed_ts + (r.at - killed_at).as_secs_f64())
            .next()
            .unwrap_or_else(|| panic!("{url} not taken over:\n{}", logs(&nodes)));
        let until = (*until as f64).max(host_lease);
        assert!(
            first >= until - 1.0,
            "{url} fetched {:.1}s before node 0's lease ran out",
            until - first
        );
        assert!(
            first <= until + 5.0,
            "{url} taken over {:.1}s after node 0's lease ran out",
            first - until
        );
    }

    // Nothing lost, nothing twice.
    let (count, titles) = stored(&db.url).await;
    assert_eq!((count, titles), (2 * FEEDS as i64, 2 * FEEDS as i64));
    // An entry is a story; each feed's item is one source of it.
    let sources: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM entry_source", &[])
        .await
        .expect("count sources")
        .get(0);
    assert_eq!(sources, 2 * FEEDS as i64);
    let want: HashSet<String> = (0..FEEDS)
        .flat_map(|f| (0..2).map(move |k| title(f, k)))
        .collect();
    assert_served_once(&nodes[1..], &want).await;
    let text = http()
        .get(format!("{}/feed.json?limit=100", nodes[1].base_url()))
        .send()
        .await
        .expect("GET /feed.json")
        .text()
        .await
        .expect("body");
    for f in 0..FEEDS {
        for k in 0..2 {
            assert_eq!(
                text.matches(&format!("Marker f{f}k{k} ")).count(),
                1,
                "article f{f}k{k} not served once"
            );
        }
    }

    for node in nodes.into_iter().skip(1) {
        let (status, log) = node.daemon.expect("running").stop();
        assert!(status.success(), "{log}");
    }
    db.drop_database().await;
}

/// Whether a node other than node 0 requested `url` since `since`.
fn server_has_taken_over(server: &FeedServer, url: &str, since: Instant) -> bool {
    let path = url::Url::parse(url).expect("url").path().to_owned();
    server
        .requests(&path)
        .iter()
        .any(|r| r.at > since && sent_by(r) != "tributary-node-0")
}

/// Each node's /healthz status.
async fn health(nodes: &[Node]) -> Vec<u16> {
    let mut out = Vec::new();
    for node in nodes {
        out.push(
            match http()
                .get(format!("{}/healthz", node.base_url()))
                .timeout(Duration::from_secs(20))
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            },
        );
    }
    out
}

/// PostgreSQL restarted under load — a clean fast shutdown, then a crash
/// (`-m immediate`) — on a server of the test's own, with three nodes
/// polling: no node exits; while the database is down each logs an error
/// saying so and /healthz answers 503; after the restart they carry on
/// on their own: /healthz is 200 again, entries published while it was
/// down are stored and served, the WebSub hub hears of them (its lead was
/// taken again), and no entry is lost or stored twice.
#[tokio::test]
async fn the_nodes_ride_out_a_postgres_restart() {
    let Some(pg) = PgCluster::start("the_nodes_ride_out_a_postgres_restart") else {
        return;
    };
    const FEEDS: usize = 12;
    let server = FeedServer::start().await;
    let publish = |n: usize| {
        for f in 0..FEEDS {
            server.set(
                &format!("/p/{f}.xml"),
                Reply::feed("application/rss+xml", rss(f, n)),
            );
        }
    };
    publish(2);
    server.set("/hub", Reply::status(202, ""));
    let feeds: String = (0..FEEDS)
        .map(|f| feed_table(&server.url(&format!("/p/{f}.xml")), ""))
        .collect();
    let mut nodes = cluster_nodes(
        3,
        &[
            ("adaptive", "false"),
            ("timeout", "\"3s\""),
            ("lease_margin", "\"2s\""),
        ],
        "[extract]\nfull_text = false\n",
        &feeds,
    );
    for node in &nodes {
        node.env
            .set_server("websub_hub", &format!("\"{}\"", server.url("/hub")));
    }
    start_cluster(&mut nodes, &pg.url).await;
    wait_stored(&pg.url, 2 * FEEDS as i64, 30, &nodes).await;

    let mut n = 2;
    for mode in ["fast", "immediate"] {
        pg.stop(mode);
        let logged: Vec<usize> = nodes.iter().map(|node| node.log().len()).collect();
        n += 1;
        publish(n);
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (node, from) in nodes.iter_mut().zip(&logged) {
            let running = node.daemon.as_mut().is_some_and(|d| d.is_running());
            assert!(
                running,
                "{} exited when PostgreSQL stopped ({mode}):\n{}",
                node.name,
                node.log()
            );
            let log = node.log();
            let while_down = &log[*from..];
            assert!(
                while_down.lines().any(
                    |l| (l.contains("ERROR") || l.contains("WARN")) && l.contains("PostgreSQL")
                ),
                "{} logged no error naming PostgreSQL while it was down ({mode}):\n{while_down}",
                node.name
            );
            // Each error says what went wrong, not just that something did.
            assert!(
                !while_down
                    .lines()
                    .any(|l| l.trim_end().ends_with("db error")),
                "{} logged an error without its cause ({mode}):\n{while_down}",
                node.name
            );
        }
        assert_eq!(
            health(&nodes).await,
            vec![503; 3],
            "/healthz while PostgreSQL is down ({mode})"
        );

        pg.start_again();
        let restarted = Instant::now();
        let deadline = restarted + Duration::from_secs(20);
        while health(&nodes).await != vec![200; 3] {
            assert!(
                Instant::now() < deadline,
                "/healthz after PostgreSQL came back ({mode}): {:?}\n{}",
                health(&nodes).await,
                logs(&nodes)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_stored(&pg.url, (n * FEEDS) as i64, 30, &nodes).await;
        // The hub hears of the new entries: one node leads WebSub again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.requests("/hub").iter().any(|r| r.at > restarted) {
            assert!(
                Instant::now() < deadline,
                "no WebSub ping after PostgreSQL came back ({mode}):\n{}",
                logs(&nodes)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let (count, titles) = stored(&pg.url).await;
    assert_eq!((count, titles), ((n * FEEDS) as i64, (n * FEEDS) as i64));
    let want: HashSet<String> = (0..FEEDS)
        .flat_map(|f| (0..n).map(move |k| title(f, k)))
        .collect();
    assert_served_once(&nodes, &want).await;
    for node in nodes {
        let (status, log) = node.daemon.expect("running").stop();
        assert!(status.success(), "{log}");
    }
}

/// A revision's documents are the same bytes whenever and wherever they
/// are rendered: two routers (two nodes) over one database, one rendering
/// three seconds after the other, serve an entry dated just over a day
/// ahead of the revision alike. Judged against each node's clock, the
/// first render moved its date (implausible then) and the second kept it.
#[tokio::test]
async fn a_revision_renders_the_same_bytes_on_every_node_at_any_time() {
    use tributary::model::{
        ParsedEntry, ParsedFeed, PollOutcome, PollRecord, Schedule, Validators,
    };
    let env = TestEnv::new(&feed_table("http://127.0.0.1:9/f.xml", ""));
    let config = tributary::config::Config::load(&env.config).expect("config");
    let store = tributary::app::open_store(&config).await.expect("store");
    let feed = store
        .feed_by_url("http://127.0.0.1:9/f.xml")
        .await
        .expect("read")
        .expect("feed");
    let now = chrono::Utc::now();
    let entry = ParsedEntry {
        key: "ahead".into(),
        title: Some("Dated ahead".into()),
        link: Some("https://ahead.example/1".into()),
        content_html: Some("<p>From a clock a day ahead.</p>".into()),
        content_base: None,
        authors: vec![],
        categories: vec![],
        published: Some(now + chrono::Duration::seconds(86_400 + 2)),
        updated: None,
        enclosures: vec![],
        url_keys: vec![],
        content_hash: None,
        search_words: None,
    };
    store
        .record_poll(PollRecord {
            feed_id: feed.id,
            checked_at: now,
            schedule: Schedule {
                next_check_at: now + chrono::Duration::seconds(60),
                interval: Duration::from_secs(60),
                reason: "interval".into(),
            },
            outcome: PollOutcome::Fetched {
                status: 200,
                validators: Validators::default(),
                feed: ParsedFeed {
                    title: Some("Ahead".into()),
                    site_url: None,
                    hints: Default::default(),
                    entries: vec![entry],
                },
            },
            permanent_redirect: None,
            learned_interval: None,
            host_block: None,
            full_text: false,
        })
        .await
        .expect("record");
    let render = |store: tributary::store::Store| async move {
        let resp = get_store_output(store, "/feed.json", &[]).await;
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (etag, resp.text().await.expect("body"))
    };
    let first = render(store.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = render(store.clone()).await;
    assert!(first.1.contains("Dated ahead"), "{}", first.1);
    assert_eq!(first, second, "two renders of one revision differ");
    store.close().await.expect("close");
}

/// A node that stops cleanly (SIGTERM) hands the feeds it holds back at
/// once: 20 feeds on one host with a 1 s spacing, all leased by one node
/// that polls one a second; when it stops, the feeds it had not polled
/// yet are due again at once, so the other nodes need not wait for the
/// leases to run out.
#[tokio::test]
async fn a_node_that_stops_cleanly_hands_its_leases_back() {
    let Some(db) = PgDatabase::create("a_node_that_stops_cleanly_hands_its_leases_back").await
    else {
        return;
    };
    const FEEDS: usize = 20;
    let server = FeedServer::start().await;
    let mut feeds = String::new();
    for f in 0..FEEDS {
        let path = format!("/h/{f}.xml");
        server.set(&path, Reply::feed("application/rss+xml", rss(f, 1)));
        feeds.push_str(&feed_table(&server.url(&path), ""));
    }
    let mut nodes = cluster_nodes(
        1,
        &[
            ("concurrency", "8"),
            ("per_host_concurrency", "1"),
            ("per_host_spacing", "\"1s\""),
        ],
        "[extract]\nfull_text = false\n",
        &feeds,
    );
    start_cluster(&mut nodes, &db.url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let (leased, _) = leases(&db).await;
        if leased.len() >= FEEDS / 2 {
            break leased;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not lease the feeds: {leased:?}\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, log) = nodes.remove(0).daemon.expect("running").stop();
    assert!(status.success(), "{log}");
    let now = chrono::Utc::now().timestamp();
    let client = db.client().await;
    for url in held.keys() {
        let row = client
            .query_one(
                "SELECT next_check_at, last_checked_at FROM feed WHERE url = $1",
                &[url],
            )
            .await
            .expect("feed");
        let (next, checked): (i64, Option<i64>) = (row.get(0), row.get(1));
        assert!(
            checked.is_some() || next <= now,
            "{url} is still leased {}s after its node stopped:\n{log}",
            next - now
        );
    }
    db.drop_database().await;
}

/// TLS to PostgreSQL as `sslmode` says, against a server that takes TLS
/// connections only, with a certificate for `localhost` from a CA of the
/// test's own: `disable` is refused by the server; `prefer` and `require`
/// encrypt without checking; `verify-ca` checks the chain (not the name);
/// `verify-full` the chain and the name. A certificate that does not
/// check out is a clear error naming the URL and what is wrong with it.
#[tokio::test]
async fn tls_to_postgres_follows_sslmode() {
    let Some((pg, ca, other_ca)) = PgCluster::start_tls("tls_to_postgres_follows_sslmode") else {
        return;
    };
    let env = TestEnv::new("");
    let status = |url: String| {
        let out = env
            .command()
            .env("TRIBUTARY_DATABASE", &url)
            .arg("status")
            .output()
            .expect("run status");
        (
            out.status.code(),
            format!(
                "{}{}",
                crate::support::stdout(&out),
                crate::support::stderr(&out)
            ),
        )
    };
    let ip = pg.url.clone();
    let name = pg.url.replace("127.0.0.1", "localhost");
    let (ca, other_ca) = (ca.display().to_string(), other_ca.display().to_string());
    for url in [
        format!("{ip}?sslmode=prefer"),
        format!("{ip}?sslmode=require"),
        format!("{ip}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{name}?sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let (code, out) = status(url.clone());
        assert_eq!(code, Some(0), "{url}:\n{out}");
    }
    for (url, says) in [
        (format!("{ip}?sslmode=disable"), "no encryption"),
        (
            format!("{ip}?sslmode=verify-full&sslrootcert={ca}"),
            "certificate not valid for name",
        ),
        (
            format!("{name}?sslmode=verify-full&sslrootcert={other_ca}"),
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            format!("{name}?sslmode=verify-full"),
            "invalid peer certificate",
        ),
    ] {
        let (code, out) = status(url.clone());
        assert_ne!(code, Some(0), "{url}:\n{out}");
        assert!(
            out.contains("cannot connect to PostgreSQL at") && out.contains(says),
            "{url}: expected an error saying {says:?}:\n{out}"
        );
    }
    let (code, out) = status(format!("{ip}?sslmode=verify-ca"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("sslrootcert"), "{out}");
    let (code, out) = status(format!("{ip}?sslmode=verify-everything"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("sslmode=verify-everything"), "{out}");
}
