//! Pages without feeds end to end: a `[[feed]]` with `page = true` (or
//! `feeds add --page`) is polled like a feed through the real binary, its
//! entries keyed by their links across a changing page; `feeds test`
//! shows what selectors find; mistakes are reported where they are made.

use crate::feeds::rss;
use crate::support::{FeedServer, Reply, TestEnv, feed_table, read_atom, stderr, stdout};

/// One listing item: a relative link, a title, a teaser and, when given,
/// a date as the page writes it.
fn item(slug: &str, title: &str, date: Option<&str>) -> String {
    let date = date
        .map(|d| format!("<span class=\"when\">Posted {d}</span>"))
        .unwrap_or_default();
    format!(
        "<div class=\"news\"><h3 class=\"headline\"><a href=\"{slug}\">{title}</a></h3>{date}\
         <p class=\"teaser\">About {title}, in a few words.</p></div>"
    )
}

fn page(items: &[String]) -> Reply {
    Reply::feed(
        "text/html; charset=utf-8",
        format!(
            "<!DOCTYPE html><html><head><title>Town news</title></head><body>\
             <nav><a href=\"/\">Home</a> <a href=\"/about\">About</a></nav>\
             <main>{}</main><footer><a href=\"/imprint\">Imprint</a></footer></body></html>",
            items.concat()
        ),
    )
}

const SELECT: &str =
    "page = true\n[feed.select]\nitem = \"div.news\"\ndate = \".when\"\nsummary = \".teaser\"\n";

/// Title → (id, link, published) of every entry the merged output holds.
async fn entries(env: &TestEnv) -> Vec<(String, String, String, Option<String>)> {
    let (doc, _) = read_atom(&env.db_path()).await;
    let mut out: Vec<_> = doc
        .entries
        .iter()
        .map(|e| {
            (
                e.title
                    .as_ref()
                    .map(|t| t.content.clone())
                    .unwrap_or_default(),
                e.id.clone(),
                e.links.first().map(|l| l.href.clone()).unwrap_or_default(),
                e.published.map(|d| d.to_rfc3339()),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_page_feed_follows_its_changing_page_without_duplicates() {
    let server = FeedServer::start().await;
    server.set(
        "/news/",
        page(&[
            item("/news/fair", "Autumn fair", Some("March 3rd, 2026")),
            item("bridge.html", "Bridge reopens", Some("2026-03-02")),
            item("../notice?utm_source=home", "Water notice", None),
        ])
        .with_etag("\"v1\""),
    );
    let url = server.url("/news/");
    let env = TestEnv::new(&feed_table(&url, SELECT));
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 feeds polled: 3 new"),
        "{}",
        stdout(&out)
    );
    let first = entries(&env).await;
    let base = server.url("");
    let base = base.trim_end_matches('/');
    let got: Vec<(&str, &str, Option<&str>)> = first
        .iter()
        .map(|(t, _, l, p)| (t.as_str(), l.as_str(), p.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "Autumn fair",
                &*format!("{base}/news/fair"),
                Some("2026-03-03T00:00:00+00:00")
            ),
            (
                "Bridge reopens",
                &*format!("{base}/news/bridge.html"),
                Some("2026-03-02T00:00:00+00:00")
            ),
            // No date on the page: the output dates it when first seen
            // (Atom's <updated>), and claims no publication date.
            (
                "Water notice",
                &*format!("{base}/notice?utm_source=home"),
                None
            ),
        ]
    );

    // Unchanged (304): nothing new, and the validator was sent.
    let out = env.cli(&["poll"]);
    assert!(stdout(&out).starts_with("STATUS"), "{}", stdout(&out));
    assert!(stdout(&out).contains("304"), "{}", stdout(&out));
    let sent = server.requests("/news/");
    assert_eq!(
        sent.last()
            .and_then(|r| r.headers.get("if-none-match"))
            .and_then(|v| v.to_str().ok()),
        Some("\"v1\"")
    );
    assert!(
        sent.last()
            .and_then(|r| r.headers.get("accept"))
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
        "a page is asked for as HTML"
    );

    // The page changes: a new item on top, the others re-ordered, one
    // gone, one title edited, one link without its tracking parameter
    // (the same entry, its link updated).
    server.set(
        "/news/",
        page(&[
            item("/news/library", "Library hours", Some("4 Mar 2026")),
            item("../notice", "Water notice", None),
            item(
                "/news/fair",
                "Autumn fair (updated)",
                Some("March 3rd, 2026"),
            ),
        ])
        .with_etag("\"v2\""),
    );
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("1 feeds polled: 1 new, 2 updated"),
        "{}",
        stdout(&out)
    );
    let second = entries(&env).await;
    let titles: Vec<&str> = second.iter().map(|(t, ..)| t.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Autumn fair (updated)",
            "Bridge reopens",
            "Library hours",
            "Water notice"
        ]
    );
    // Every entry kept its id.
    let id = |list: &[(String, String, String, Option<String>)], link: &str| {
        list.iter()
            .find(|(_, _, l, _)| l.contains(link))
            .map(|(_, id, ..)| id.clone())
            .unwrap_or_else(|| panic!("{link} in {list:?}"))
    };
    for link in ["/news/fair", "/notice", "/news/bridge.html"] {
        assert_eq!(id(&first, link), id(&second, link), "{link}");
    }
}

#[tokio::test]
async fn an_item_selector_matching_nothing_is_the_feeds_error_not_a_crash() {
    let server = FeedServer::start().await;
    server.set("/js-app", page(&[]));
    let url = server.url("/js-app");
    let env = TestEnv::new(&feed_table(
        &url,
        "page = true\nselect = { item = \"div.news\" }",
    ));
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("1 failed"), "{said}");
    let expected = "the item selector `div.news` matched nothing on the page";
    assert!(said.contains(expected), "{said}");
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(list.contains("failing"), "{list}");
    assert!(list.contains(&format!("last error: {expected}")), "{list}");
    let status = stdout(&env.cli(&["status"]));
    assert!(status.contains(expected), "{status}");
}

#[test]
fn check_rejects_a_bad_selector_with_its_key_and_line() {
    let env = TestEnv::new(&feed_table(
        "https://town.example/news/",
        "page = true\n[feed.select]\nitem = \"div.news\"\ndate = \"span[\"\n",
    ));
    let out = env.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    let text = std::fs::read_to_string(&env.config).unwrap();
    let line = text.lines().position(|l| l.starts_with("date = ")).unwrap() + 1;
    assert!(
        err.contains(&format!(":{line}: feed[0].select.date")),
        "{err}"
    );
    assert!(err.contains("invalid CSS selector \"span[\""), "{err}");
}

#[tokio::test]
async fn feeds_test_shows_what_a_page_rule_and_a_feed_give() {
    let server = FeedServer::start().await;
    server.set(
        "/news/",
        page(&[
            item("/news/fair", "Autumn fair", Some("March 3rd, 2026")),
            item("bridge.html", "Bridge reopens", None),
        ]),
    );
    server.set(
        "/feed.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("g1", "From the feed", "<p>x</p>")]),
        ),
    );
    let env = TestEnv::new("");
    let url = server.url("/news/");
    let out = env.cli(&[
        "feeds", "test", &url, "--item", "div.news", "--title", "h3", "--date", ".when",
    ]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    let fair = server.url("/news/fair");
    for want in [
        format!("{url} read with the item selector `div.news`: 2 entries"),
        "  1. Autumn fair".to_owned(),
        format!("     link: {fair}"),
        "     date: 2026-03-03T00:00:00Z".to_owned(),
        format!("     id:   link:{fair}"),
        "  2. Bridge reopens".to_owned(),
        "     date: none (the time it is first seen)".to_owned(),
        format!(
            "tributary feeds add {url} --page --item div.news --item-title h3 --item-date .when"
        ),
        "select = { item = \"div.news\", title = \"h3\", date = \".when\" }".to_owned(),
    ] {
        assert!(said.contains(&want), "missing {want:?} in\n{said}");
    }
    // Nothing was subscribed.
    assert!(stdout(&env.cli(&["feeds", "list"])).contains("no feeds"));

    // A feed: what the feed parser reads.
    let feed = server.url("/feed.xml");
    let out = env.cli(&["feeds", "test", &feed]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(
        said.contains("is a feed (\"RSS Site\"): 1 entries"),
        "{said}"
    );
    assert!(said.contains("  1. From the feed"), "{said}");
    assert!(said.contains("     id:   guid:g1"), "{said}");

    // A page without a feed and without selectors: says so and shows a
    // page rule.
    let out = env.cli(&["feeds", "test", &url]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("is a web page without a feed"), "{said}");
    assert!(said.contains("page = true"), "{said}");
    assert!(
        said.contains(&format!("tributary feeds test {url} --item ")),
        "{said}"
    );

    // Selectors that find nothing: an error naming the selector.
    let out = env.cli(&["feeds", "test", &url, "--item", "article"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the item selector `article` matched nothing"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn feeds_add_page_subscribes_and_polls_with_its_selectors() {
    let server = FeedServer::start().await;
    server.set(
        "/news/",
        page(&[
            item("/news/fair", "Autumn fair", Some("March 3rd, 2026")),
            item("/news/bridge", "Bridge reopens", Some("2026-03-02")),
        ]),
    );
    let url = server.url("/news/");
    let env = TestEnv::new("");

    // Selectors that find nothing are refused, and nothing is subscribed.
    let out = env.cli(&["feeds", "add", &url, "--page", "--item", "li.post"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the item selector `li.post` matched nothing"),
        "{}",
        stderr(&out)
    );
    let out = env.cli(&[
        "feeds",
        "add",
        &url,
        "--page",
        "--item",
        "div[",
        "--item-title",
        "h3",
    ]);
    assert!(
        stderr(&out).contains("--item: invalid CSS selector"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&env.cli(&["feeds", "list"])).contains("no feeds"));

    let out = env.cli(&[
        "feeds",
        "add",
        &url,
        "--page",
        "--item",
        "div.news",
        "--item-title",
        "h3",
        "--item-date",
        ".when",
        "--block",
        "title=Bridge",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("the selectors find 2 entries"),
        "{}",
        stdout(&out)
    );
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(
        list.contains("page: item `div.news` · title `h3` · date `.when`"),
        "{list}"
    );
    assert!(list.contains("block: title ~ Bridge"), "{list}");
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = entries(&env).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "Autumn fair");
    assert_eq!(got[0].3.as_deref(), Some("2026-03-03T00:00:00+00:00"));

    // OPML export names the page as a link, not as a feed.
    let opml = stdout(&env.cli(&["opml", "export"]));
    assert!(opml.contains("type=\"link\""), "{opml}");
    assert!(!opml.contains(&format!("xmlUrl=\"{url}\"")), "{opml}");
}

#[tokio::test]
async fn no_feed_found_suggests_a_page_rule() {
    let server = FeedServer::start().await;
    server.set("/", page(&[item("/a", "A", None)]));
    let env = TestEnv::new("");
    let url = server.url("/");
    let out = env.cli(&["feeds", "add", &url]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("no feed found on {url}")), "{err}");
    assert!(
        err.contains(&format!("tributary feeds test {url} --item")),
        "{err}"
    );
    assert!(err.contains("--page --item"), "{err}");
    assert!(err.contains("page = true"), "{err}");
}

/// The daemon's path: `tributary run` polls a page feed on schedule,
/// fetches each entry's article for full text like any feed's, and polls
/// the page again conditionally.
#[tokio::test]
async fn the_daemon_polls_a_page_feed_and_fetches_its_articles() {
    let server = FeedServer::start().await;
    server.set(
        "/news/",
        page(&[
            item("/news/fair", "Autumn fair", Some("March 3rd, 2026")),
            item("/news/bridge", "Bridge reopens", None),
        ])
        .with_etag("\"p1\""),
    );
    for (path, words) in [("/news/fair", "stalls"), ("/news/bridge", "cyclists")] {
        let paragraph = format!(
            "<p>The town's {words} came back this week, and everyone who had waited all year \
             for them turned out in the square to see what was new and who was there.</p>"
        );
        server.set(
            path,
            Reply::feed(
                "text/html; charset=utf-8",
                format!(
                    "<html><head><title>{path}</title></head><body><article><h1>{path}</h1>{}</article></body></html>",
                    paragraph.repeat(6)
                ),
            ),
        );
    }
    let env = TestEnv::with_config(
        &[],
        "[extract]\nfull_text = true\n",
        &feed_table(&server.url("/news/"), SELECT),
    );
    let daemon = env.spawn_daemon().await;
    let url = format!("{}/feed.atom", env.base_url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let xml = crate::support::http()
            .get(&url)
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        if xml.matches("<entry>").count() == 2 && xml.contains("stalls") && xml.contains("cyclists")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{xml}\n{}",
            daemon.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    while server.requests("/news/").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no second poll");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.requests("/news/")[1].headers["if-none-match"],
        "\"p1\""
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// `feeds test` takes the request options `feeds add` takes, so a page
/// behind a cookie can be tried before subscribing.
#[tokio::test]
async fn feeds_test_sends_the_request_options() {
    let server = FeedServer::start().await;
    server.set(
        "/members/",
        page(&[item("/members/a", "Members only", None)]).requiring("cookie", "s=1"),
    );
    let env = TestEnv::new("");
    let url = server.url("/members/");
    let out = env.cli(&["feeds", "test", &url, "--item", "div.news"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = env.cli(&[
        "feeds",
        "test",
        &url,
        "--item",
        "div.news",
        "--header",
        "Cookie: s=1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("  1. Members only"),
        "{}",
        stdout(&out)
    );
}

/// `--page` on a feed's address is refused: the answer is no HTML page.
#[tokio::test]
async fn feeds_add_page_on_a_feed_is_refused() {
    let server = FeedServer::start().await;
    server.set(
        "/feed.xml",
        Reply::feed("application/rss+xml", rss(&[("g1", "One", "<p>x</p>")])),
    );
    let env = TestEnv::new("");
    let url = server.url("/feed.xml");
    let out = env.cli(&["feeds", "add", &url, "--page", "--item", "item"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("a page rule reads HTML pages"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&env.cli(&["feeds", "list"])).contains("no feeds"));
}
