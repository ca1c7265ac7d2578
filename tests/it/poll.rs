//! Polling end to end: the real binary's `poll` against local feed servers,
//! then the real output server over the same database.

use std::collections::HashMap;

use crate::feeds::{atom, json_feed, rss};
use crate::support::{
    FeedServer, Reply, TestEnv, feed_table, feedparser_check, get_output, read_atom, stdout,
};

fn three_feeds(server: &FeedServer) -> String {
    server.set(
        "/rss.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[
                ("r1", "RSS one", "<p>first rss</p>"),
                ("r2", "RSS two", "<p>second rss</p>"),
            ]),
        )
        .gzipped(),
    );
    server.set(
        "/atom.xml",
        Reply::feed(
            "application/atom+xml",
            atom(&[("a1", "Atom one", "<p>first atom</p>")]),
        )
        .with_etag("\"atom-v1\""),
    );
    server.set(
        "/feed.json",
        Reply::feed(
            "application/feed+json",
            json_feed(&[
                ("j1", "JSON one", "<p>first json</p>"),
                ("j2", "JSON two", "<p>x</p>"),
            ]),
        )
        .with_header("last-modified", "Tue, 10 Nov 2026 12:00:00 GMT"),
    );
    [
        feed_table(
            &server.url("/rss.xml"),
            "title = \"My RSS\"\ntags = [\"a\"]",
        ),
        feed_table(&server.url("/atom.xml"), ""),
        feed_table(&server.url("/feed.json"), ""),
    ]
    .concat()
}

#[tokio::test]
async fn poll_merges_rss_atom_and_json_into_one_atom_feed_each_entry_once() {
    let server = FeedServer::start().await;
    let env = TestEnv::new(&three_feeds(&server));

    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("3 feeds polled: 5 new, 0 updated, 0 failed"),
        "{text}"
    );

    let (feed, xml) = read_atom(&env.db_path()).await;
    let mut titles: Vec<String> = feed
        .entries
        .iter()
        .filter_map(|e| e.title.as_ref().map(|t| t.content.clone()))
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        ["Atom one", "JSON one", "JSON two", "RSS one", "RSS two"]
    );
    let ids: std::collections::HashSet<&str> = feed.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 5, "entry ids are unique");

    // Every entry names the feed it came from; the operator's title wins.
    let source_of = |title: &str| -> String {
        let start = xml
            .find(&format!("<title>{title}</title>"))
            .expect("entry in output");
        let rest = &xml[start..];
        let src = rest.find("<source>").expect("entry has a source");
        let end = rest[src..].find("</source>").expect("source closes");
        rest[src..src + end].to_owned()
    };
    assert!(source_of("RSS one").contains("<title>My RSS</title>"));
    assert!(source_of("RSS one").contains(&server.url("/rss.xml")));
    assert!(source_of("Atom one").contains("<title>Atom Site</title>"));
    assert!(source_of("JSON two").contains("<title>JSON Site</title>"));

    // Content is passed through (sanitised), with links and authors.
    assert!(xml.contains("first atom"), "{xml}");
    let atom_entry = feed
        .entries
        .iter()
        .find(|e| e.title.as_ref().is_some_and(|t| t.content == "Atom one"))
        .expect("atom entry");
    assert_eq!(atom_entry.links[0].href, "https://atom.example/a1");
    assert_eq!(atom_entry.authors[0].name.as_deref(), Some("Ada"));

    // A real reader's parser accepts it without complaint.
    if let Some(report) = feedparser_check(&xml) {
        let v: serde_json::Value = serde_json::from_str(&report).expect("feedparser report");
        assert_eq!(v["bozo"], false, "feedparser complained: {report}");
        assert_eq!(v["version"], "atom10");
        assert_eq!(v["entries"], 5);
    }
}

#[tokio::test]
async fn second_poll_is_conditional_and_adds_nothing() {
    let server = FeedServer::start().await;
    let env = TestEnv::new(&three_feeds(&server));
    assert!(env.cli(&["poll"]).status.success());

    let out = env.cli(&["poll"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("3 feeds polled: 0 new, 0 updated, 0 failed"),
        "{text}"
    );

    // The validators come back byte for byte.
    let atom_reqs = server.requests("/atom.xml");
    assert_eq!(atom_reqs.len(), 2);
    assert!(atom_reqs[0].headers.get("if-none-match").is_none());
    assert_eq!(atom_reqs[1].headers["if-none-match"], "\"atom-v1\"");
    assert!(text.contains("304"), "{text}");
    let json_reqs = server.requests("/feed.json");
    assert_eq!(
        json_reqs[1].headers["if-modified-since"],
        "Tue, 10 Nov 2026 12:00:00 GMT"
    );
    // Compressed transfer is offered, and the configured User-Agent sent.
    let rss_req = &server.requests("/rss.xml")[0];
    let ae = rss_req.headers["accept-encoding"]
        .to_str()
        .unwrap_or_default();
    assert!(ae.contains("gzip") && ae.contains("br"), "{ae}");
    let ua = rss_req.headers["user-agent"].to_str().unwrap_or_default();
    assert!(ua.starts_with("Tributary/"), "{ua}");

    let (feed, _) = read_atom(&env.db_path()).await;
    assert_eq!(feed.entries.len(), 5);
}

#[tokio::test]
async fn changed_entry_is_updated_in_place_not_duplicated() {
    let server = FeedServer::start().await;
    server.set(
        "/rss.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("r1", "Title", "<p>old text</p>")]),
        ),
    );
    let env = TestEnv::new(&feed_table(&server.url("/rss.xml"), ""));
    assert!(env.cli(&["poll"]).status.success());
    let (before, _) = read_atom(&env.db_path()).await;

    server.set(
        "/rss.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[
                ("r1", "Title (corrected)", "<p>new text</p>"),
                ("r2", "Other", "<p>o</p>"),
            ]),
        ),
    );
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("1 new, 1 updated"),
        "{}",
        stdout(&out)
    );

    let (after, xml) = read_atom(&env.db_path()).await;
    assert_eq!(after.entries.len(), 2);
    let old = &before.entries[0];
    let new = after
        .entries
        .iter()
        .find(|e| e.id == old.id)
        .expect("same id after the update");
    assert_eq!(
        new.title.as_ref().map(|t| t.content.as_str()),
        Some("Title (corrected)")
    );
    assert!(xml.contains("new text") && !xml.contains("old text"));
    assert!(new.updated > old.updated, "updated time moves");
}

/// The entries `tributary poll` adds are searchable when it exits, and so
/// is what a later `poll` changed: new entries are indexed as they are
/// stored, changes through the queue, which `poll` drains before exiting.
#[tokio::test]
async fn poll_leaves_every_entry_searchable_as_it_now_reads() {
    let server = FeedServer::start().await;
    server.set(
        "/rss.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[
                ("r1", "Harbour", "<p>lighthouse keepers</p>"),
                ("r2", "Other", "<p>ferries<script>hidden()</script></p>"),
            ]),
        ),
    );
    // A page read as a feed takes the same path.
    server.set(
        "/news.html",
        Reply::feed(
            "text/html; charset=utf-8",
            "<!DOCTYPE html><html><head><title>Town news</title></head><body>\
             <div class=\"news\"><h3><a href=\"/n/1\">Market day</a></h3>\
             <p class=\"teaser\">Cheesemongers gather</p></div></body></html>",
        ),
    );
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/rss.xml"), ""),
            feed_table(
                &server.url("/news.html"),
                "page = true\n[feed.select]\nitem = \"div.news\"\nsummary = \".teaser\"\n",
            ),
        ]
        .concat(),
    );
    let found = |q: &'static str| {
        let db = env.db_path();
        async move {
            let xml = get_output(&db, &format!("/feed.atom?q={q}"), &[])
                .await
                .text()
                .await
                .expect("body");
            xml.matches("<entry>").count()
        }
    };
    let queued = || {
        let db = rusqlite::Connection::open(env.db_path()).expect("open db");
        db.query_row("SELECT count(*) FROM search_pending", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count queue")
    };
    assert!(env.cli(&["poll"]).status.success());
    assert_eq!(found("keepers").await, 1);
    assert_eq!(found("harbour").await, 1);
    assert_eq!(found("ferries").await, 1);
    assert_eq!(found("hidden").await, 0, "scripts are not text");
    assert_eq!(found("cheesemongers").await, 1);
    assert_eq!(queued(), 0);

    server.set(
        "/rss.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[
                ("r1", "Harbour", "<p>breakwater news</p>"),
                ("r2", "Other", "<p>ferries<script>hidden()</script></p>"),
                ("r3", "Third", "<p>seaweed</p>"),
            ]),
        ),
    );
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("1 new, 1 updated"),
        "{}",
        stdout(&out)
    );
    assert_eq!(found("keepers").await, 0, "the old words go");
    assert_eq!(found("breakwater").await, 1);
    assert_eq!(found("seaweed").await, 1);
    assert_eq!(queued(), 0);
}

#[tokio::test]
async fn failing_feeds_are_recorded_while_the_others_land() {
    let server = FeedServer::start().await;
    server.set("/broken", Reply::status(500, "oops"));
    server.set(
        "/garbage",
        Reply::feed("text/html", "<html><body>not a feed</body></html>"),
    );
    server.set(
        "/good.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("g1", "Good one", "<p>fine</p>")]),
        ),
    );
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/broken"), ""),
            feed_table(&server.url("/garbage"), ""),
            feed_table(&server.url("/good.xml"), ""),
            // Nothing listens here: a connection error.
            feed_table(
                &format!("http://127.0.0.1:{}/x", crate::support::free_port()),
                "",
            ),
        ]
        .concat(),
    );
    let out = env.cli(&["poll"]);
    assert!(
        out.status.success(),
        "a failing feed is not a failing command"
    );
    let text = stdout(&out);
    assert!(
        text.contains("4 feeds polled: 1 new, 0 updated, 3 failed"),
        "{text}"
    );
    assert!(text.contains("HTTP 500"), "{text}");

    let list = stdout(&env.cli(&["feeds", "list"]));
    let failing: Vec<&str> = list.lines().filter(|l| l.starts_with("failing")).collect();
    assert_eq!(failing.len(), 3, "{list}");
    assert!(list.contains("last error: HTTP 500"), "{list}");
    assert!(
        list.contains("last error: not a feed") || list.contains("last error:"),
        "{list}"
    );

    let (feed, _) = read_atom(&env.db_path()).await;
    assert_eq!(feed.entries.len(), 1);
}

#[tokio::test]
async fn http_charset_decodes_latin1_feeds() {
    let server = FeedServer::start().await;
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Caf\u{e9}</title>\
         <item><guid>1</guid><title>Cr\u{e8}me br\u{fb}l\u{e9}e</title><description>d\u{e9}j\u{e0} vu</description></item>\
         </channel></rss>",
    );
    server.set(
        "/latin1.xml",
        Reply::feed(
            "application/rss+xml; charset=ISO-8859-1",
            bytes.into_owned(),
        ),
    );
    let env = TestEnv::new(&feed_table(&server.url("/latin1.xml"), ""));
    assert!(env.cli(&["poll"]).status.success());
    let (feed, _) = read_atom(&env.db_path()).await;
    let titles: HashMap<_, _> = feed
        .entries
        .iter()
        .map(|e| (e.title.as_ref().map(|t| t.content.clone()), ()))
        .collect();
    assert!(
        titles.contains_key(&Some("Crème brûlée".to_owned())),
        "{titles:?}"
    );
}
