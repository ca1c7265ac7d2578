//! The outputs: Atom, RSS 2.0 and JSON Feed 1.1 with filters, search,
//! paging, attribution and pass-through, read by real parsers.

use std::collections::HashSet;

use crate::support::{FeedServer, Reply, TestEnv, feed_table, feedparser_check, get_output};

fn podcast_feed() -> String {
    r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Pod Site</title><link>https://pod.example/</link><description>d</description>
<item><guid>ep1</guid><title>Episode one: harbours</title><link>https://pod.example/ep1</link>
<description><![CDATA[<p>We talk about <b>harbours</b> and breakwaters.</p>]]></description>
<author>host@pod.example (Hosty McHostface)</author><category>audio</category>
<enclosure url="https://pod.example/ep1.mp3" length="1234567" type="audio/mpeg"/>
<pubDate>Mon, 09 Nov 2026 08:00:00 GMT</pubDate></item>
<item><guid>ep2</guid><title>Episode two: lighthouses</title><link>https://pod.example/ep2</link>
<description><![CDATA[<p>All about lighthouses.</p>]]></description>
<enclosure url="https://pod.example/ep2.mp3" length="2345678" type="audio/mpeg"/>
<pubDate>Tue, 10 Nov 2026 08:00:00 GMT</pubDate></item>
</channel></rss>"#
        .to_owned()
}

fn news_feed(n: usize) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>News Site</title><link>https://news.example/</link><description>d</description>"#,
    );
    for i in 0..n {
        s.push_str(&format!(
            "<item><guid>n{i}</guid><title>News number {i}</title><link>https://news.example/{i}</link>\
             <description>Story {i} about the city council.</description>\
             <pubDate>{}</pubDate></item>",
            (chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").expect("date")
                + chrono::Duration::hours(i as i64))
            .to_rfc2822()
        ));
    }
    s.push_str("</channel></rss>");
    s
}

async fn setup() -> (FeedServer, TestEnv) {
    let server = FeedServer::start().await;
    server.set(
        "/pod.xml",
        Reply::feed("application/rss+xml", podcast_feed()),
    );
    server.set(
        "/news.xml",
        Reply::feed("application/rss+xml", news_feed(5)),
    );
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/pod.xml"), "tags = [\"audio\"]"),
            feed_table(&server.url("/news.xml"), "tags = [\"news\"]"),
        ]
        .concat(),
    );
    assert!(env.cli(&["poll"]).status.success());
    (server, env)
}

async fn body(env: &TestEnv, path: &str) -> (reqwest::StatusCode, String, String) {
    let resp = get_output(&env.db_path(), path, &[]).await;
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, resp.text().await.expect("body"))
}

#[tokio::test]
async fn every_format_is_served_with_its_media_type_and_reads_cleanly() {
    let (_server, env) = setup().await;
    for (path, ct, version) in [
        ("/feed.atom", "application/atom+xml", "atom10"),
        ("/feed.rss", "application/rss+xml", "rss20"),
        ("/feed.json", "application/feed+json", "json11"),
    ] {
        let (status, content_type, text) = body(&env, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(content_type.starts_with(ct), "{path}: {content_type}");
        let parsed = feed_rs::parser::parse(text.as_bytes()).expect("parses");
        assert_eq!(parsed.entries.len(), 7, "{path}");
        // feedparser reads JSON Feed only from versions that have its
        // JSON parser (none released yet: 6.0.14 has none); the check
        // runs wherever the installed one can.
        if let Some(report) = feedparser_check(&text) {
            let v: serde_json::Value = serde_json::from_str(&report).expect("report");
            assert_eq!(v["bozo"], false, "{path}: {report}");
            assert_eq!(v["version"], version, "{path}");
            assert_eq!(v["entries"], 7);
        }
    }
}

#[tokio::test]
async fn rss_has_unique_guids_rfc822_dates_sources_and_enclosures() {
    let (server, env) = setup().await;
    let (_, _, xml) = body(&env, "/feed.rss").await;
    let errors = crate::validators::rss_rule_errors(&xml);
    assert!(errors.is_empty(), "{errors:#?}\n{xml}");
    let channel = rss::Channel::read_from(xml.as_bytes()).expect("valid RSS");
    let guids: HashSet<&str> = channel
        .items
        .iter()
        .filter_map(|i| i.guid.as_ref().map(|g| g.value.as_str()))
        .collect();
    assert_eq!(guids.len(), channel.items.len(), "guids are unique");
    for item in &channel.items {
        let date = item.pub_date.as_deref().expect("pubDate");
        chrono::DateTime::parse_from_rfc2822(date).expect("RFC 822 date");
        let source = item.source.as_ref().expect("source");
        assert!(source.url.starts_with(&server.url("/")), "{}", source.url);
    }
    let ep1 = channel
        .items
        .iter()
        .find(|i| i.title.as_deref() == Some("Episode one: harbours"))
        .expect("episode");
    let enc = ep1.enclosure.as_ref().expect("podcast keeps its audio");
    assert_eq!(enc.url, "https://pod.example/ep1.mp3");
    assert_eq!(enc.mime_type, "audio/mpeg");
    assert_eq!(enc.length, "1234567");
    assert_eq!(ep1.categories[0].name, "audio");
    assert!(
        ep1.content
            .as_deref()
            .unwrap_or_default()
            .contains("<b>harbours</b>"),
        "{ep1:?}"
    );
}

#[tokio::test]
async fn json_feed_follows_the_1_1_field_rules() {
    let (server, env) = setup().await;
    let (_, _, text) = body(&env, "/feed.json").await;
    let errors = crate::validators::json_feed_rule_errors(&text);
    assert!(errors.is_empty(), "{errors:#?}\n{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["version"], "https://jsonfeed.org/version/1.1");
    assert!(v["title"].is_string());
    let items = v["items"].as_array().expect("items");
    let ids: HashSet<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids.len(), items.len());
    for item in items {
        assert!(item["content_html"].is_string() || item["content_text"].is_string());
        if let Some(d) = item["date_published"].as_str() {
            chrono::DateTime::parse_from_rfc3339(d).expect("RFC 3339");
        }
        let src = &item["_tributary"]["sources"][0];
        assert!(
            src["feed_url"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&server.url("/"))
        );
        assert!(src["title"].is_string());
    }
    let ep1 = items
        .iter()
        .find(|i| i["title"] == "Episode one: harbours")
        .expect("episode");
    assert_eq!(ep1["attachments"][0]["url"], "https://pod.example/ep1.mp3");
    assert_eq!(ep1["attachments"][0]["mime_type"], "audio/mpeg");
    assert_eq!(ep1["attachments"][0]["size_in_bytes"], 1234567);
    assert_eq!(ep1["tags"][0], "audio");
    assert!(
        ep1["authors"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .contains("Hosty")
    );
}

#[tokio::test]
async fn filters_by_tag_feed_search_and_limit() {
    let (server, env) = setup().await;
    let count = |text: &str| {
        feed_rs::parser::parse(text.as_bytes())
            .expect("parses")
            .entries
            .len()
    };
    assert_eq!(count(&body(&env, "/feed.atom?tag=audio").await.2), 2);
    assert_eq!(
        count(&body(&env, "/feed.atom?tag=news&tag=audio").await.2),
        7
    );
    let feed = url::form_urlencoded::byte_serialize(server.url("/news.xml").as_bytes())
        .collect::<String>();
    assert_eq!(
        count(&body(&env, &format!("/feed.rss?feed={feed}")).await.2),
        5
    );
    // Full-text search over titles and content.
    let (_, _, text) = body(&env, "/feed.json?q=lighthouses").await;
    assert_eq!(count(&text), 1);
    assert!(text.contains("Episode two"));
    assert_eq!(count(&body(&env, "/feed.atom?q=council+story").await.2), 5);
    assert_eq!(
        count(&body(&env, "/feed.atom?q=%22unbalanced").await.2),
        0,
        "no syntax error"
    );
    assert_eq!(count(&body(&env, "/feed.atom?limit=3").await.2), 3);
    assert_eq!(body(&env, "/feed.atom?limit=0").await.0, 400);
    assert_eq!(body(&env, "/feed.atom?cursor=nonsense").await.0, 400);
}

#[tokio::test]
async fn paging_follows_next_links_through_every_entry_once() {
    let (server, env) = setup().await;
    let mut seen = Vec::new();
    let mut path = "/feed.atom?limit=2".to_owned();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 10, "paging does not end");
        let (_, _, xml) = body(&env, &path).await;
        let feed = feed_rs::parser::parse(xml.as_bytes()).expect("parses");
        seen.extend(feed.entries.iter().map(|e| e.id.clone()));
        let next = feed.links.iter().find(|l| l.rel.as_deref() == Some("next"));
        match next {
            Some(l) => {
                // A new entry arriving between pages must not shift them.
                if pages == 1 {
                    let breaking = news_feed(5).replace(
                        "</channel>",
                        &format!(
                            "<item><guid>breaking</guid><title>Breaking</title><pubDate>{}</pubDate></item></channel>",
                            chrono::Utc::now().to_rfc2822()
                        ),
                    );
                    server.set("/news.xml", Reply::feed("application/rss+xml", breaking));
                    env.cli(&["poll"]);
                }
                let u = url::Url::parse(&l.href).expect("absolute next link");
                path = format!("{}?{}", u.path(), u.query().unwrap_or_default());
            }
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no entry twice: {seen:?}");
    assert_eq!(
        seen.len(),
        7,
        "every entry that existed at the start: {seen:?}"
    );

    // JSON Feed pages the same way.
    let (_, _, text) = body(&env, "/feed.json?limit=4").await;
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let next = v["next_url"].as_str().expect("next_url");
    assert!(next.contains("cursor="), "{next}");
}

#[tokio::test]
async fn opml_lists_the_subscriptions() {
    let (server, env) = setup().await;
    let (status, ct, text) = body(&env, "/opml").await;
    assert_eq!(status, 200);
    assert!(ct.contains("opml"), "{ct}");
    let imported = tributary::opml::import(&text).expect("valid OPML");
    let urls: HashSet<String> = imported.feeds.iter().map(|f| f.url.clone()).collect();
    assert!(urls.contains(&server.url("/pod.xml")) && urls.contains(&server.url("/news.xml")));
}

#[tokio::test]
async fn named_outputs_apply_their_filters() {
    let server = FeedServer::start().await;
    server.set(
        "/pod.xml",
        Reply::feed("application/rss+xml", podcast_feed()),
    );
    server.set(
        "/news.xml",
        Reply::feed("application/rss+xml", news_feed(5)),
    );
    let env = TestEnv::with_config(
        &[],
        "[extract]\nfull_text = false\n\n\
         [[output]]\nname = \"audio\"\ntitle = \"Just audio\"\ntags = [\"audio\"]\n\n\
         [[output]]\nname = \"harbours\"\ninclude = \"(?i)harbour\"\nlimit = 1\n\n\
         [[output]]\nname = \"quiet\"\nexclude = \"council\"\n",
        &[
            feed_table(&server.url("/pod.xml"), "tags = [\"audio\"]"),
            feed_table(&server.url("/news.xml"), "tags = [\"news\"]"),
        ]
        .concat(),
    );
    assert!(env.cli(&["poll"]).status.success());
    let count = |text: &str| {
        feed_rs::parser::parse(text.as_bytes())
            .expect("parses")
            .entries
            .len()
    };
    let get = |p: &'static str| crate::support::get_configured(&env, p);

    let audio = get("/o/audio.atom").await.text().await.expect("body");
    assert_eq!(count(&audio), 2);
    assert!(audio.contains("<title>Just audio</title>"), "{audio}");
    let harbours = get("/o/harbours.json").await.text().await.expect("body");
    assert_eq!(count(&harbours), 1);
    assert!(harbours.contains("Episode one"));
    assert_eq!(
        count(&get("/o/quiet.rss").await.text().await.expect("body")),
        2
    );
    // Request filters narrow a named output further.
    assert_eq!(
        count(
            &get("/o/audio.atom?q=lighthouses")
                .await
                .text()
                .await
                .expect("body")
        ),
        1
    );
    assert_eq!(get("/o/missing.atom").await.status(), 404);
    assert_eq!(get("/o/audio.xml").await.status(), 404);
    let page = get("/o/audio").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .expect("body")
            .contains("Episode two: lighthouses")
    );
}

#[tokio::test]
async fn the_river_page_lists_entries_with_feeds_and_no_javascript() {
    let (_server, env) = setup().await;
    let resp = get_output(&env.db_path(), "/", &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let html = resp.text().await.expect("body");
    for needle in [
        "Episode one: harbours",
        "News number 4",
        "/feed.atom",
        "/feed.rss",
        "/feed.json",
        "/opml",
        "Pod Site",
        "<meta name=\"viewport\"",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    assert!(!html.contains("<script"), "no JavaScript needed");
}

#[tokio::test]
async fn the_websub_hub_is_advertised_and_pinged_when_entries_land() {
    let server = FeedServer::start().await;
    server.set(
        "/news.xml",
        Reply::feed("application/rss+xml", news_feed(2)),
    );
    server.set("/hub", Reply::status(204, ""));
    let hub = server.url("/hub");
    let env = TestEnv::with_config(
        &[],
        "[extract]\nfull_text = false\n",
        &feed_table(&server.url("/news.xml"), ""),
    );
    // websub_hub belongs in [server].
    let text = std::fs::read_to_string(&env.config).expect("read");
    let text = text.replace("[server]\n", &format!("[server]\nwebsub_hub = \"{hub}\"\n"));
    std::fs::write(&env.config, text).expect("write");

    let daemon = env.spawn_daemon().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ping = loop {
        if let Some(p) = server.requests("/hub").into_iter().next() {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hub was never pinged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ping.method, "POST");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&ping.body)
        .into_owned()
        .collect();
    assert!(
        form.contains(&("hub.mode".into(), "publish".into())),
        "{form:?}"
    );
    let atom = format!("{}/feed.atom", env.base_url());
    assert!(form.contains(&("hub.url".into(), atom)), "{form:?}");

    let xml = crate::support::http()
        .get(format!("{}/feed.atom", env.base_url()))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        xml.contains(&format!("href=\"{hub}\"")) && xml.contains("rel=\"hub\""),
        "{xml}"
    );
    drop(daemon);
}

/// Indexing changes what a search finds without changing any entry, so a
/// `?q=` output's validators move with the search index: a reader holding
/// the ETag or date of the page from before must get the new page, not a
/// 304. Outputs without `?q=` keep theirs.
#[tokio::test]
async fn a_search_is_revalidated_when_the_index_catches_up() {
    let (_server, env) = setup().await;
    // Entries stored and queued, the index not there yet: what a daemon
    // polling flat out serves for a moment.
    {
        let db = rusqlite::Connection::open(env.db_path()).expect("open db");
        db.execute_batch(
            "INSERT INTO entry_fts (entry_fts) VALUES ('delete-all');
             INSERT INTO search_pending (entry_id, reindex) SELECT id, 0 FROM entry;",
        )
        .expect("queue every entry");
    }
    let count = |xml: &str| xml.matches("<entry>").count();
    let header = |r: &reqwest::Response, name: &str| -> String {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let before = get_output(&env.db_path(), "/feed.atom?q=lighthouses", &[]).await;
    let (etag, date) = (header(&before, "etag"), header(&before, "last-modified"));
    assert_eq!(count(&before.text().await.expect("body")), 0);
    let plain = get_output(&env.db_path(), "/feed.atom", &[]).await;
    let plain_etag = header(&plain, "etag");

    // A second passes so that Last-Modified (whole seconds) can move too.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let store = tributary::store::Store::open(&env.db_path())
        .await
        .expect("open store");
    assert_eq!(
        tributary::indexer::index_all(&store, 500)
            .await
            .expect("index"),
        7
    );
    store.close().await.expect("close");

    for (name, value) in [("if-none-match", &etag), ("if-modified-since", &date)] {
        let after = get_output(
            &env.db_path(),
            "/feed.atom?q=lighthouses",
            &[(name, value.as_str())],
        )
        .await;
        assert_eq!(after.status(), 200, "{name}: {value}");
        assert_eq!(count(&after.text().await.expect("body")), 1, "{name}");
    }
    let plain = get_output(
        &env.db_path(),
        "/feed.atom",
        &[("if-none-match", plain_etag.as_str())],
    )
    .await;
    assert_eq!(plain.status(), 304, "an output without ?q= is unchanged");
}
