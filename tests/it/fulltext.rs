//! Full text: article pages fetched for new entries, cleaned, stored, and
//! served in place of the feed's teaser; failures recorded and retried.

use std::time::{Duration, Instant};

use crate::support::{FeedServer, Reply, TestEnv, feed_table, read_atom, stdout};

/// A news page with everything a reader does not want around the story.
fn article_page(title: &str, paragraphs: &[&str]) -> String {
    let body: String = paragraphs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut s = format!("<p>{p}</p>\n");
            if i == 1 {
                s.push_str(
                    "<p><strong>Baca Juga : <a href=\"/other-story\">Harga cabai naik lagi di pasar induk</a></strong></p>\n",
                );
            }
            s
        })
        .collect();
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title} | Daily Example</title>
<link rel="canonical" href="/story"><script>window.track = 1;</script></head>
<body>
<header class="site-header"><nav><a href="/">Home</a> <a href="/world">World</a> <a href="/sport">Sport</a></nav></header>
<div class="cookie-banner">We use cookies to improve your experience. <button>Accept</button></div>
<main><article class="post">
<h1 class="entry-title">{title}</h1>
<div class="share-buttons"><a href="https://twitter.com/share">Tweet</a> <a href="https://facebook.com/share">Share</a></div>
<div class="entry-content">
{body}<figure><img src="/img/photo.jpg" alt="The harbour at dawn"><figcaption>The harbour at dawn.</figcaption></figure>
<p>Read the <a href="/report?utm_source=newsletter&amp;id=7">full report</a> for details.</p>
</div>
<div class="newsletter"><h3>Get the morning briefing</h3><form><input type="email" placeholder="Your email"><button>Subscribe</button></form></div>
</article>
<aside class="related"><h3>Most read</h3><ul><li><a href="/a">Story A</a></li><li><a href="/b">Story B</a></li></ul></aside>
<section id="comments" class="comments-area"><h3 id="reply-title" class="comment-reply-title">Leave a Reply</h3>
<form id="commentform"><p class="comment-notes">Your email address will not be published. Required fields are marked *</p>
<textarea name="comment"></textarea><input type="submit" value="Post Comment"></form></section>
</main>
<footer><p>© Daily Example. All rights reserved.</p></footer>
<script>console.log("tracking");</script>
</body></html>"#
    )
}

const PARAGRAPHS: [&str; 5] = [
    "The harbour authority confirmed on Tuesday that the new breakwater will be finished two months ahead of schedule, after crews worked through the calmer autumn weeks.",
    "Engineers said the structure, which stretches nearly a kilometre into the bay, should protect the fishing fleet from the winter storms that damaged dozens of boats last year.",
    "Local fishermen welcomed the news but warned that the cost of repairs from previous storms had left many families in debt, and asked the council for more support.",
    "The council said a compensation scheme would open in January and that applications could be made online or at the harbour office during the week.",
    "Work on a second phase, including a new slipway and storage sheds, is expected to begin in the spring if the regional government approves the funding.",
];

fn feed_with_article(server: &FeedServer, article_path: &str, teaser: &str) -> String {
    let link = server.url(article_path);
    format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Daily Example</title><link>{base}</link><description>d</description>
<item><guid>story-1</guid><title>Breakwater finished early</title><link>{link}</link><description>{teaser}</description></item>
</channel></rss>"#,
        base = server.url("/"),
    )
}

fn full_text_env(server: &FeedServer, tables: &str) -> TestEnv {
    TestEnv::with_config(&[], tables, &feed_table(&server.url("/feed.xml"), ""))
}

#[tokio::test]
async fn poll_stores_the_cleaned_article_and_serves_it_instead_of_the_teaser() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Reply::feed(
            "application/rss+xml",
            feed_with_article(&server, "/story", "The breakwater is nearly done."),
        ),
    );
    server.set(
        "/story",
        Reply::feed(
            "text/html; charset=utf-8",
            article_page("Breakwater finished early", &PARAGRAPHS),
        ),
    );
    let env = full_text_env(&server, "");
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("full text: 1 extracted"),
        "{}",
        stdout(&out)
    );

    let (feed, _) = read_atom(&env.db_path()).await;
    let html = feed.entries[0]
        .content
        .as_ref()
        .and_then(|c| c.body.clone())
        .expect("content");
    for p in PARAGRAPHS {
        assert!(html.contains(p), "paragraph missing: {p}\n{html}");
    }
    for unwanted in [
        "Baca Juga",
        "Harga cabai",
        "Leave a Reply",
        "will not be published",
        "Most read",
        "morning briefing",
        "We use cookies",
        "Tweet",
        "All rights reserved",
        "<script",
        "tracking",
        "utm_source",
        "Breakwater finished early</h1>",
    ] {
        assert!(!html.contains(unwanted), "{unwanted:?} survived:\n{html}");
    }
    // Images and links kept, made absolute.
    assert!(
        html.contains(&format!("src=\"{}\"", server.url("/img/photo.jpg"))),
        "{html}"
    );
    assert!(html.contains(&server.url("/report?id=7")), "{html}");

    // The article is not fetched again on later polls.
    env.cli(&["poll"]);
    assert_eq!(server.requests("/story").len(), 1);
}

#[tokio::test]
async fn an_article_that_says_less_than_the_feed_leaves_the_feed_content() {
    let server = FeedServer::start().await;
    let long_teaser = PARAGRAPHS.join(" ");
    server.set(
        "/feed.xml",
        Reply::feed(
            "application/rss+xml",
            feed_with_article(&server, "/short", &long_teaser),
        ),
    );
    server.set(
        "/short",
        Reply::feed(
            "text/html",
            "<html><body><article><p>Subscribe to read the rest of this story, which is about a harbour and its breakwater and the people who live there.</p></article></body></html>",
        ),
    );
    let env = full_text_env(&server, "");
    env.cli(&["poll"]);
    let (feed, _) = read_atom(&env.db_path()).await;
    let html = feed.entries[0]
        .content
        .as_ref()
        .and_then(|c| c.body.clone())
        .expect("content");
    assert!(html.contains("harbour authority confirmed"), "{html}");
    assert!(!html.contains("Subscribe to read"), "{html}");
}

#[tokio::test]
async fn failing_articles_are_recorded_and_retried_then_given_up() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Reply::feed(
            "application/rss+xml",
            feed_with_article(&server, "/down", "Teaser text stays."),
        ),
    );
    server.set("/down", Reply::status(503, "busy"));
    let env = full_text_env(&server, "[extract]\nmax_attempts = 2\n");
    env.cli(&["poll"]);
    let store = tributary::store::Store::open(&env.db_path())
        .await
        .expect("store");
    let (feed, _) = read_atom(&env.db_path()).await;
    let uid = feed.entries[0].id.clone();
    let state = store
        .article_state(&uid)
        .await
        .expect("query")
        .expect("queued");
    assert_eq!(state.status, "pending", "retried later");
    assert_eq!(state.attempts, 1);
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("503"),
        "{state:?}"
    );
    // Meanwhile the entry carries the feed's content.
    let html = feed.entries[0]
        .content
        .as_ref()
        .and_then(|c| c.body.clone())
        .expect("content");
    assert!(html.contains("Teaser text stays."));
    // A later poll does not retry before the backoff has passed.
    env.cli(&["poll"]);
    assert_eq!(server.requests("/down").len(), 1);
    drop(store);
}

#[tokio::test]
async fn non_html_and_private_article_links_are_not_fetched_as_articles() {
    let server = FeedServer::start().await;
    let port = server.addr.port();
    let feed = format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>{base}</link><description>d</description>
<item><guid>pdf</guid><title>A PDF</title><link>{pdf}</link><description>teaser</description></item>
<item><guid>local</guid><title>Local</title><link>http://localhost:{port}/story</link><description>teaser</description></item>
</channel></rss>"#,
        base = server.url("/"),
        pdf = server.url("/doc.pdf"),
    );
    server.set("/feed.xml", Reply::feed("application/rss+xml", feed));
    server.set("/doc.pdf", Reply::feed("application/pdf", "%PDF-1.4"));
    server.set(
        "/story",
        Reply::feed("text/html", article_page("x", &PARAGRAPHS)),
    );
    let env = full_text_env(&server, "");
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("full text: 0 extracted, 2 failed"),
        "{}",
        stdout(&out)
    );
    assert!(
        server.requests("/story").is_empty(),
        "localhost is another host: refused"
    );

    let store = tributary::store::Store::open(&env.db_path())
        .await
        .expect("store");
    let (feed, _) = read_atom(&env.db_path()).await;
    for e in &feed.entries {
        let state = store
            .article_state(&e.id)
            .await
            .expect("query")
            .expect("queued");
        assert_eq!(state.status, "failed", "not retried: {state:?}");
        let err = state.last_error.unwrap_or_default();
        assert!(
            err.contains("not an HTML page") || err.contains("refused to connect"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn full_text_can_be_turned_off_per_feed() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Reply::feed(
            "application/rss+xml",
            feed_with_article(&server, "/story", "teaser"),
        ),
    );
    server.set(
        "/story",
        Reply::feed("text/html", article_page("x", &PARAGRAPHS)),
    );
    let env = TestEnv::with_config(
        &[],
        "",
        &feed_table(&server.url("/feed.xml"), "full_text = false"),
    );
    let out = env.cli(&["poll"]);
    assert!(!stdout(&out).contains("full text:"), "{}", stdout(&out));
    assert!(server.requests("/story").is_empty());
}

#[tokio::test]
async fn the_daemon_fetches_articles_in_the_background() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Reply::feed(
            "application/rss+xml",
            feed_with_article(&server, "/story", "teaser only"),
        ),
    );
    server.set(
        "/story",
        Reply::feed("text/html", article_page("x", &PARAGRAPHS)),
    );
    let env = full_text_env(&server, "");
    let daemon = env.spawn_daemon().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let xml = crate::support::http()
            .get(format!("{}/feed.atom", env.base_url()))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        if xml.contains("second phase") {
            break;
        }
        assert!(Instant::now() < deadline, "no full text in {xml}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(daemon);
}

/// Feed content shown as it is (full text off) goes through the same
/// structural rules on its way out: inline related links, share and
/// comment links, and the "appeared first on" line go; the prose stays;
/// a teaser that is only such a line is not emptied; the store keeps the
/// content as the feed gave it.
#[tokio::test]
async fn feed_content_is_cleaned_on_its_way_out_never_emptied() {
    let server = FeedServer::start().await;
    let post = server.url("/2024/07/12/breakwater/");
    let site = server.url("/");
    let content = format!(
        "<p>{p0}</p>\
         <p><strong>Read also:</strong> <a href=\"{site}2024/07/11/archive/\">Archive</a></p>\
         <p>{p1}</p>\
         <p><a href=\"{post}#comments\">3 comments</a> | <a href=\"https://twitter.com/intent/tweet?url={enc}\">Tweet</a></p>\
         <p>The post <a href=\"{post}\">Breakwater finished early</a> appeared first on <a href=\"{site}\">Daily Example</a>.</p>",
        p0 = PARAGRAPHS[0],
        p1 = PARAGRAPHS[1],
        enc = post.replace(':', "%3A").replace('/', "%2F"),
    );
    let only_related = format!(
        "<p>Baca juga: <a href=\"{site}2024/07/10/older/\">An older story from this site</a></p>"
    );
    let item = |guid: &str, link: &str, html: &str| {
        format!(
            "<item><guid>{guid}</guid><title>Breakwater finished early</title><link>{link}</link>\
             <description><![CDATA[{html}]]></description></item>"
        )
    };
    server.set(
        "/feed.xml",
        Reply::feed(
            "application/rss+xml",
            format!(
                r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Daily Example</title><link>{site}</link><description>d</description>{}{}</channel></rss>"#,
                item("a", &post, &content),
                item("b", &server.url("/2024/07/12/other/"), &only_related),
            ),
        ),
    );
    let env = TestEnv::with_config(
        &[],
        "",
        &feed_table(&server.url("/feed.xml"), "full_text = false"),
    );
    env.cli(&["poll"]);
    let (feed, _) = read_atom(&env.db_path()).await;
    let body = |guid_link: &str| {
        feed.entries
            .iter()
            .find(|e| e.links.iter().any(|l| l.href == guid_link))
            .and_then(|e| e.content.as_ref())
            .and_then(|c| c.body.clone())
            .expect("content")
    };
    let html = body(&post);
    assert!(html.contains(PARAGRAPHS[0]), "{html}");
    assert!(html.contains(PARAGRAPHS[1]), "{html}");
    for gone in [
        "Read also",
        "Archive",
        "3 comments",
        "Tweet",
        "appeared first on",
    ] {
        assert!(!html.contains(gone), "{gone:?} survived:\n{html}");
    }
    let other = body(&server.url("/2024/07/12/other/"));
    assert!(other.contains("An older story"), "not emptied: {other}");
    // Stored as the feed gave it: a better rule applies to it later.
    let conn = rusqlite::Connection::open(env.db_path()).expect("db");
    let stored: String = conn
        .query_row(
            "SELECT content_html FROM entry WHERE link = ?1",
            [&post],
            |r| r.get(0),
        )
        .expect("stored");
    assert!(stored.contains("appeared first on"), "{stored}");
}
