//! Per-feed request options end to end: a feed behind HTTP Basic auth, one
//! behind a cookie and a User-Agent check, credentials that must not follow
//! a redirect to another host, and secrets that never show in `feeds list`,
//! OPML, `/status` or a log.

use crate::feeds::rss;
use crate::support::{FeedServer, Reply, TestEnv, feed_table, get_configured, stderr, stdout};

/// `ada:open sesame`, as HTTP Basic sends it.
const BASIC: &str = "Basic YWRhOm9wZW4gc2VzYW1l";
const PASSWORD: &str = "open sesame";
const COOKIE: &str = "session=c00kie-s3cret";

fn feed(guid: &str) -> Reply {
    Reply::feed(
        "application/rss+xml",
        rss(&[(guid, &format!("Entry {guid}"), "<p>body</p>")]),
    )
}

/// Every secret of the tests; none may appear where the options are shown.
fn assert_no_secret(place: &str, text: &str) {
    for secret in [
        PASSWORD,
        "YWRhOm9wZW4gc2VzYW1l",
        "c00kie-s3cret",
        "proxy-pw",
    ] {
        assert!(!text.contains(secret), "{place} shows a secret:\n{text}");
    }
}

#[tokio::test]
async fn feeds_behind_basic_auth_and_a_cookie_with_a_user_agent_are_polled() {
    let server = FeedServer::start().await;
    server.set("/private.xml", feed("p1").requiring("authorization", BASIC));
    server.set(
        "/walled.xml",
        feed("w1")
            .requiring("cookie", COOKIE)
            .requiring("user-agent", "FriendlyReader/2.0"),
    );
    // The neighbour: the same wall without the options refuses.
    server.set("/walled-bare.xml", feed("b1").requiring("cookie", COOKIE));
    let feeds = [
        feed_table(
            &server.url("/private.xml"),
            &format!("username = \"ada\"\npassword = \"{PASSWORD}\""),
        ),
        feed_table(
            &server.url("/walled.xml"),
            &format!(
                "user_agent = \"FriendlyReader/2.0\"\nheaders = {{ Cookie = \"{COOKIE}\" }}\n\
                 proxy = \"http://reader:proxy-pw@127.0.0.1:1\""
            ),
        ),
        feed_table(&server.url("/walled-bare.xml"), ""),
    ]
    .concat();
    // The proxy above is only there to be kept secret: the walled feed
    // would fail through it, so it is checked below and then removed.
    let config_with_proxy = feeds.clone();
    let env = TestEnv::new(&feeds.replace("\nproxy = \"http://reader:proxy-pw@127.0.0.1:1\"", ""));

    let out = env.cli(&["poll"]);
    let text = stdout(&out);
    assert!(
        text.contains("3 feeds polled: 2 new, 0 updated, 1 failed"),
        "{text}\n{}",
        stderr(&out)
    );
    assert_no_secret("poll's output", &format!("{text}{}", stderr(&out)));
    // Each wall saw exactly what it asked for; the bare feed sent no cookie.
    let private = server.requests("/private.xml");
    assert_eq!(
        private[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        BASIC
    );
    let walled = server.requests("/walled.xml");
    assert_eq!(walled[0].headers.get("cookie").unwrap(), COOKIE);
    assert!(
        server.requests("/walled-bare.xml")[0]
            .headers
            .get("cookie")
            .is_none()
    );
    let walled_feed = env.feed(&server.url("/walled.xml")).await;
    assert_eq!(walled_feed.last_status, Some(200));
    let bare = env.feed(&server.url("/walled-bare.xml")).await;
    assert_eq!(bare.last_status, Some(401));

    // Shown as set, never as values.
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(list.contains("request: Basic credentials"), "{list}");
    assert!(
        list.contains("request: own User-Agent · headers Cookie"),
        "{list}"
    );
    assert_no_secret("feeds list", &list);
    let opml = stdout(&env.cli(&["opml", "export"]));
    assert!(opml.contains("/private.xml"), "{opml}");
    assert_no_secret("opml export", &opml);
    for path in ["/status", "/opml"] {
        let body = get_configured(&env, path).await.text().await.unwrap();
        assert_no_secret(path, &body);
    }

    // `check` warns while the file holding them is world-readable, and
    // names the proxy's password as a secret too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&env.config, {
        let text = std::fs::read_to_string(&env.config).unwrap();
        let (head, _) = text.split_once("[[feed]]").unwrap();
        format!("{head}{config_with_proxy}")
    })
    .unwrap();
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = env.cli(&["check"]);
    let said = stdout(&check);
    assert!(check.status.success(), "{said}{}", stderr(&check));
    assert!(
        said.contains(
            "is readable by every user and holds credentials or headers (feed[0], feed[1])"
        ),
        "{said}"
    );
    assert_no_secret("check", &said);
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let said = stdout(&env.cli(&["check"]));
    assert!(!said.contains("warning"), "{said}");
}

#[tokio::test]
async fn credentials_do_not_follow_a_redirect_to_another_host() {
    let origin = FeedServer::start().await;
    let elsewhere = FeedServer::start().await;
    elsewhere.set("/moved.xml", feed("m1"));
    origin.set(
        "/feed.xml",
        Reply::status(302, "").with_header("location", &elsewhere.url("/moved.xml")),
    );
    // The neighbour: a redirect within the origin keeps them.
    origin.set(
        "/old.xml",
        Reply::status(301, "").with_header("location", &origin.url("/new.xml")),
    );
    origin.set("/new.xml", feed("n1").requiring("authorization", BASIC));
    let options = format!(
        "username = \"ada\"\npassword = \"{PASSWORD}\"\n\
         user_agent = \"FriendlyReader/2.0\"\nheaders = {{ Cookie = \"{COOKIE}\" }}"
    );
    let env = TestEnv::new(
        &[
            feed_table(&origin.url("/feed.xml"), &options),
            feed_table(&origin.url("/old.xml"), &options),
        ]
        .concat(),
    );

    let out = env.cli(&["poll"]);
    let text = stdout(&out);
    assert!(
        text.contains("2 feeds polled: 2 new, 0 updated, 0 failed"),
        "{text}\n{}",
        stderr(&out)
    );
    let first = &origin.requests("/feed.xml")[0];
    assert_eq!(first.headers.get("authorization").unwrap(), BASIC);
    assert_eq!(first.headers.get("cookie").unwrap(), COOKIE);
    // Another port of 127.0.0.1 is another origin: no secret reaches it,
    // while the User-Agent, which is no secret, still does.
    let moved = &elsewhere.requests("/moved.xml")[0];
    assert!(moved.headers.get("authorization").is_none(), "{moved:?}");
    assert!(moved.headers.get("cookie").is_none(), "{moved:?}");
    assert_eq!(
        moved.headers.get("user-agent").unwrap(),
        "FriendlyReader/2.0"
    );
    let kept = &origin.requests("/new.xml")[0];
    assert_eq!(kept.headers.get("cookie").unwrap(), COOKIE);
}

#[tokio::test]
async fn feeds_add_keeps_request_options_in_the_database() {
    let server = FeedServer::start().await;
    server.set(
        "/private.xml",
        feed("p1")
            .requiring("authorization", BASIC)
            .requiring("x-api-key", "k3y")
            .requiring("user-agent", "FriendlyReader/2.0"),
    );
    let env = TestEnv::new("");
    let url = server.url("/private.xml");
    let add = env
        .command()
        .args([
            "feeds",
            "add",
            &url,
            "--username",
            "ada",
            "--header",
            "X-Api-Key: k3y",
            "--user-agent",
            "FriendlyReader/2.0",
        ])
        .env("TRIBUTARY_FEED_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", stderr(&add));
    let out = env.cli(&["poll"]);
    let text = stdout(&out);
    assert!(
        text.contains("1 feeds polled: 1 new, 0 updated, 0 failed")
            || text.contains("1 feed polled: 1 new, 0 updated, 0 failed"),
        "{text}\n{}",
        stderr(&out)
    );
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(
        list.contains("request: own User-Agent · headers X-Api-Key · Basic credentials"),
        "{list}"
    );
    assert_no_secret("feeds list", &list);

    // A malformed header or a password without a user name is refused.
    for args in [
        vec!["--header", "no colon here"],
        vec!["--header", "Host: elsewhere"],
        vec!["--password", "x"],
        vec!["--proxy", "socks5://127.0.0.1:9050"],
    ] {
        let mut all = vec!["feeds", "add", "http://127.0.0.1:9/other.xml"];
        all.extend(args.iter().copied());
        let out = env.cli(&all);
        assert!(!out.status.success(), "{args:?} was accepted");
    }
}

#[tokio::test]
async fn site_rules_carry_request_options_to_their_article_pages_only() {
    let server = FeedServer::start().await;
    let page = |text: &str| {
        Reply::feed(
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>Story</title></head><body><article><h1>Story</h1>\
                 <p>{text} The harbour authority confirmed on Tuesday that the new \
                 breakwater will be finished two months ahead of schedule.</p>\
                 <p>Engineers said the structure should protect the fishing fleet \
                 from the winter storms that damaged dozens of boats last year.</p>\
                 </article></body></html>"
            ),
        )
    };
    server.set(
        "/story",
        page("Subscribers read this.").requiring("cookie", "subscriber=1"),
    );
    server.set("/other", page("Everyone reads this."));
    // The same server under two host names: the rule is for one of them.
    let port = server.addr.port();
    let items = format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>http://127.0.0.1:{port}/</link><description>d</description>
<item><guid>s1</guid><title>Walled</title><link>http://127.0.0.1:{port}/story</link><description>teaser one</description></item>
<item><guid>s2</guid><title>Open</title><link>http://localhost:{port}/other</link><description>teaser two</description></item>
</channel></rss>"#
    );
    server.set("/feed.xml", Reply::feed("application/rss+xml", items));
    let tables = "[extract]\nfull_text = true\n\
                  [network]\nallow = [\"localhost\"]\n\
                  [[site]]\nhost = \"127.0.0.1\"\nheaders = { Cookie = \"subscriber=1\" }\n";
    let env = TestEnv::with_config(&[], tables, &feed_table(&server.url("/feed.xml"), ""));

    let out = env.cli(&["poll"]);
    let text = stdout(&out);
    assert!(
        text.contains("full text: 2 extracted"),
        "{text}\n{}",
        stderr(&out)
    );
    assert_eq!(
        server.requests("/story")[0].headers.get("cookie").unwrap(),
        "subscriber=1"
    );
    assert!(server.requests("/other")[0].headers.get("cookie").is_none());
    // The feed itself is not the site rule's business.
    assert!(
        server.requests("/feed.xml")[0]
            .headers
            .get("cookie")
            .is_none()
    );
    let (_, atom) = crate::support::read_atom(&env.db_path()).await;
    assert!(atom.contains("Subscribers read this."), "{atom}");
}

#[tokio::test]
async fn a_feed_with_a_proxy_is_fetched_through_it() {
    // An HTTP proxy sees the absolute URL; the test server answers by path,
    // so it stands in for the proxy of a host that does not exist.
    let proxy = FeedServer::start().await;
    proxy.set("/feed.xml", feed("x1"));
    let proxy_url = format!("http://reader:proxy-pw@{}", proxy.addr);
    let env = TestEnv::new(&feed_table(
        "http://192.0.2.1/feed.xml",
        &format!("proxy = \"{proxy_url}\""),
    ));
    let out = env.cli(&["poll"]);
    let text = stdout(&out);
    assert!(
        text.contains("1 feeds polled: 1 new, 0 updated, 0 failed"),
        "{text}\n{}",
        stderr(&out)
    );
    let seen = &proxy.requests("/feed.xml")[0];
    // "reader:proxy-pw"
    assert_eq!(
        seen.headers.get("proxy-authorization").unwrap(),
        "Basic cmVhZGVyOnByb3h5LXB3"
    );
    assert_eq!(seen.headers.get("host").unwrap(), "192.0.2.1");
    assert_no_secret("poll's output", &format!("{text}{}", stderr(&out)));
}
