//! Discovery end to end: `feeds add` on a web page subscribes to the feed
//! it offers (links, a known site's address, the usual paths), and a
//! `[[feed]]` or OPML entry that names a page polls the page's feed.

use crate::feeds::{atom, rss};
use crate::support::{FeedServer, Reply, TestEnv, feed_table, stderr, stdout};

fn html(head: &str) -> Reply {
    Reply::feed(
        "text/html; charset=utf-8",
        format!(
            "<!DOCTYPE html><html><head><title>A site</title>{head}</head><body><p>Hello</p></body></html>"
        ),
    )
}

fn rss_reply(guid: &str) -> Reply {
    Reply::feed(
        "application/rss+xml",
        rss(&[(guid, &format!("Entry {guid}"), "<p>body</p>")]),
    )
}

/// A blog home page with its comments feed first, its main feed and an
/// Atom feed, as WordPress-like sites have them.
fn blog(server: &FeedServer) {
    server.set(
        "/",
        html(
            r#"<link rel="alternate" type="application/rss+xml" title="Blog &raquo; Comments Feed" href="/comments/feed/">
               <link rel="alternate" type="application/rss+xml" title="Blog &raquo; Feed" href="/feed/">
               <link rel="alternate" type="application/atom+xml" title="Blog (Atom)" href="atom.xml">"#,
        ),
    );
    server.set("/feed/", rss_reply("main"));
    server.set("/comments/feed/", rss_reply("comment"));
    server.set(
        "/atom.xml",
        Reply::feed(
            "application/atom+xml",
            atom(&[("a1", "Atom one", "<p>x</p>")]),
        ),
    );
}

fn listed(env: &TestEnv) -> String {
    stdout(&env.cli(&["feeds", "list"]))
}

#[tokio::test]
async fn feeds_add_on_a_page_subscribes_to_its_best_feed_and_lists_the_others() {
    let server = FeedServer::start().await;
    blog(&server);
    let env = TestEnv::new("");
    let out = env.cli(&["feeds", "add", &server.url("/")]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("is a web page; it offers 3 feeds:"), "{said}");
    assert!(
        said.contains(&format!(
            "1. {} (RSS \"Blog » Feed\")",
            server.url("/feed/")
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("2. {} (Atom", server.url("/atom.xml"))),
        "{said}"
    );
    assert!(
        said.contains(&format!("3. {}", server.url("/comments/feed/"))),
        "{said}"
    );
    assert!(
        said.contains(&format!("added {};", server.url("/feed/"))),
        "{said}"
    );
    let list = listed(&env);
    assert!(list.contains(&server.url("/feed/")), "{list}");
    assert!(!list.contains(&server.url("/atom.xml")), "{list}");
    // It polls.
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("1 feeds polled: 1 new, 0 updated, 0 failed"),
        "{}",
        stdout(&out)
    );

    // --pick N and --all.
    let env = TestEnv::new("");
    let out = env.cli(&["feeds", "add", &server.url("/"), "--pick", "2"]);
    assert!(
        stdout(&out).contains(&format!("added {};", server.url("/atom.xml"))),
        "{}",
        stdout(&out)
    );
    let out = env.cli(&["feeds", "add", &server.url("/"), "--pick", "4"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--pick 4: choose a number from 1 to 3"),
        "{}",
        stderr(&out)
    );
    let out = env.cli(&["feeds", "add", &server.url("/"), "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is already subscribed"),
        "{}",
        stderr(&out)
    );
    let list = listed(&env);
    for path in ["/feed/", "/atom.xml", "/comments/feed/"] {
        assert!(list.contains(&server.url(path)), "{path}: {list}");
    }
}

#[tokio::test]
async fn a_broken_first_link_falls_back_to_the_next_and_a_plain_feed_is_added_as_is() {
    let server = FeedServer::start().await;
    server.set(
        "/",
        html(
            r#"<link rel="alternate" type="application/rss+xml" href="/gone.xml">
               <link rel="alternate" type="application/rss+xml" href="/feed.xml">"#,
        ),
    );
    server.set("/feed.xml", rss_reply("x"));
    let env = TestEnv::new("");
    let out = env.cli(&["feeds", "add", &server.url("/")]);
    let said = stdout(&out);
    assert!(said.contains("it offers 1 feed:"), "{said}");
    assert!(
        said.contains(&format!("added {};", server.url("/feed.xml"))),
        "{said}"
    );

    // A feed's own URL: no listing, subscribed as given.
    let env = TestEnv::new("");
    let out = env.cli(&["feeds", "add", &server.url("/feed.xml")]);
    let said = stdout(&out);
    assert!(!said.contains("web page"), "{said}");
    assert!(
        said.contains(&format!("added {};", server.url("/feed.xml"))),
        "{said}"
    );
}

#[tokio::test]
async fn a_page_without_links_is_probed_at_the_usual_paths_or_said_to_have_none() {
    let server = FeedServer::start().await;
    server.set("/", html(""));
    server.set("/rss", rss_reply("probed"));
    let env = TestEnv::new("");
    let out = env.cli(&["feeds", "add", &server.url("/")]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(
        said.contains(&format!("added {};", server.url("/rss"))),
        "{said}"
    );
    // /feed was tried first, and nothing after the first that answered.
    assert_eq!(server.requests("/feed").len(), 1);
    assert!(server.requests("/atom.xml").is_empty());

    let bare = FeedServer::start().await;
    bare.set("/", html(""));
    let out = env.cli(&["feeds", "add", &bare.url("/")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no feed found on {}", bare.url("/"))),
        "{err}"
    );
    assert!(err.contains("/feed, /rss, /atom.xml"), "{err}");
    assert!(!listed(&env).contains(&bare.url("/")));
}

#[tokio::test]
async fn known_sites_get_their_feed_derived() {
    let server = FeedServer::start().await;
    // Pages shaped like a YouTube channel and a subreddit, served locally:
    // their canonical address is the site's; the derived feed is on the
    // site itself and is not fetched (tests only talk to 127.0.0.1).
    server.set(
        "/yt",
        html(r#"<link rel="canonical" href="https://www.youtube.com/channel/UCabc123">"#),
    );
    server.set(
        "/reddit",
        html(r#"<meta property="og:url" content="https://www.reddit.com/r/rust/">"#),
    );
    // A Mastodon-shaped account page on any host: /@name → /@name.rss.
    server.set("/@ada", html(""));
    server.set("/@ada.rss", rss_reply("toot"));
    let env = TestEnv::new("");
    for (page, feed) in [
        (
            server.url("/yt"),
            "https://www.youtube.com/feeds/videos.xml?channel_id=UCabc123".to_owned(),
        ),
        (
            server.url("/reddit"),
            "https://www.reddit.com/r/rust/.rss".to_owned(),
        ),
        (server.url("/@ada"), server.url("/@ada.rss")),
    ] {
        let out = env.cli(&["feeds", "add", &page]);
        let said = stdout(&out);
        assert!(out.status.success(), "{page}: {said}{}", stderr(&out));
        assert!(said.contains(&format!("added {feed};")), "{page}: {said}");
    }
    // A YouTube address itself is not even fetched.
    let out = env.cli(&[
        "feeds",
        "add",
        "https://www.youtube.com/playlist?list=PLxyz",
    ]);
    assert!(
        stdout(&out).contains("added https://www.youtube.com/feeds/videos.xml?playlist_id=PLxyz;"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[tokio::test]
async fn a_config_feed_naming_a_page_polls_the_feed_it_links_and_adopts_it() {
    let server = FeedServer::start().await;
    blog(&server);
    let other = FeedServer::start().await;
    other.set(
        "/home",
        html(r#"<link rel="alternate" type="application/atom+xml" href="/atom">"#),
    );
    other.set(
        "/atom",
        Reply::feed(
            "application/atom+xml",
            atom(&[("o1", "Other one", "<p>y</p>")]),
        ),
    );
    let env = TestEnv::new(&feed_table(&server.url("/"), ""));
    // And one from OPML.
    let opml = env.dir.path().join("subs.opml");
    std::fs::write(
        &opml,
        format!(
            r#"<?xml version="1.0"?><opml version="2.0"><head><title>s</title></head><body>
<outline text="Other" type="rss" xmlUrl="{}"/></body></opml>"#,
            other.url("/home")
        ),
    )
    .unwrap();
    let out = env.cli(&["opml", "import", opml.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("2 feeds polled: 2 new, 0 updated, 0 failed"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let (feed, _) = crate::support::read_atom(&env.db_path()).await;
    let titles: Vec<String> = feed
        .entries
        .iter()
        .filter_map(|e| e.title.as_ref().map(|t| t.content.clone()))
        .collect();
    assert!(titles.contains(&"Entry main".to_owned()), "{titles:?}");
    assert!(titles.contains(&"Other one".to_owned()), "{titles:?}");
    // Polls that agree adopt the feed's address, as with a 301.
    for _ in 0..3 {
        env.cli(&["poll"]);
    }
    let page = env.feed(&server.url("/")).await;
    assert_eq!(
        page.fetch_url.as_deref(),
        Some(server.url("/feed/").as_str())
    );
    let before = server.requests("/").len();
    env.cli(&["poll"]);
    assert_eq!(
        server.requests("/").len(),
        before,
        "the page was fetched again"
    );
    assert_eq!(
        env.feed(&other.url("/home")).await.fetch_url.as_deref(),
        Some(other.url("/atom").as_str())
    );

    // A page that links nothing says so, and how to go on.
    server.set("/", html(""));
    let env = TestEnv::new(&feed_table(&server.url("/"), ""));
    let out = env.cli(&["poll"]);
    assert!(stdout(&out).contains("1 failed"), "{}", stdout(&out));
    let list = listed(&env);
    assert!(list.contains("the page links no feed"), "{list}");
}
