//! Issue 18 end to end: feeds only a forgiving reader reads, served on
//! 127.0.0.1 and polled by the real binary (`tributary poll`), must show
//! their entries in the output; a feed whose items cannot be read is a
//! failing feed with a clear error, never a silent empty success.

use crate::support::{FeedServer, Reply, TestEnv, feed_table, read_atom, stdout};

/// A fixture of `tests/fixtures/feeds/lenient/`.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/feeds/lenient/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each fixture with the titles its entries must have in the output.
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "atom03.xml",
        "application/atom+xml",
        &[
            "Escaped HTML content",
            "Base64 content",
            "Inline XHTML content",
        ],
    ),
    (
        "atom-text-types.xml",
        "application/atom+xml",
        &[
            "XHTML typed title",
            "Plain media type",
            "Another media type",
        ],
    ),
    (
        "json-wrong-types.json",
        "application/feed+json",
        &[
            "Tags as a string",
            "Numeric id, author string",
            "42",
            "Authors object",
        ],
    ),
    (
        "rss-userland.xml",
        "application/rss+xml",
        &["Scripting News item"],
    ),
    (
        "rss090.rdf",
        "application/rdf+xml",
        &["First 0.90 item", "Second 0.90 item"],
    ),
    (
        "rss1-no-link.rdf",
        "application/rdf+xml",
        &[
            "About names the item",
            "Neither link nor about",
            "With a link",
        ],
    ),
    (
        "rss-misspelled-ns.xml",
        "application/rss+xml",
        &["Full text in content:encoded"],
    ),
    (
        "youtube-media.xml",
        "application/atom+xml",
        &["How we built the bridge"],
    ),
    (
        "podcast-itunes.xml",
        "application/rss+xml",
        &["Episode 7: Tides"],
    ),
    (
        "rss-raw-html.xml",
        "application/rss+xml",
        &["Well-formed raw markup", "Raw markup that is not XML"],
    ),
    (
        "rss-not-wellformed.xml",
        "application/rss+xml",
        &["Fish & chips — today", "A stray end tag"],
    ),
    (
        "rss-no-channel.xml",
        "application/rss+xml",
        &["Item straight under rss"],
    ),
    (
        "titles-angle-brackets.xml",
        "application/rss+xml",
        &["History of the <blink> tag", "if a < b && c > d"],
    ),
    (
        "atom-xml-base.xml",
        "application/atom+xml",
        &["Feed base only", "Entry base relative to the feed's"],
    ),
    (
        "rss-shared-link.xml",
        "application/rss+xml",
        &[
            "Episode 1: Rivers",
            "Episode 2: Lakes",
            "Episode 3: Seas",
            "Guid repeated",
            "Own page",
        ],
    ),
];

/// Entries whose text was lost before: (title, text its content must hold).
const CONTENT: &[(&str, &str)] = &[
    ("Base64 content", "Decoded from <i>base64</i>"),
    ("Full text in content:encoded", "text of the first post"),
    ("How we built the bridge", "Steel, cables &amp; patience."),
    ("Episode 7: Tides", "moons with a guest"),
    ("Well-formed raw markup", "Submitted by"),
    ("Raw markup that is not XML", "line two"),
    ("Fish & chips — today", "at the café"),
    ("Feed base only", "https://cdn.example.org/site/img/one.png"),
    (
        "Entry base relative to the feed's",
        "https://cdn.example.org/site/posts/2024/two.png",
    ),
];

#[tokio::test]
async fn every_lenient_fixture_is_polled_into_the_output() {
    let server = FeedServer::start().await;
    let mut feeds = String::new();
    for (name, media_type, _) in CASES {
        server.set(&format!("/{name}"), Reply::feed(media_type, fixture(name)));
        feeds.push_str(&feed_table(&server.url(&format!("/{name}")), ""));
    }
    let env = TestEnv::new(&feeds);
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let listed = stdout(&env.cli(&["feeds", "list"]));
    let (feed, _) = read_atom(&env.db_path()).await;
    let titles: Vec<String> = feed
        .entries
        .iter()
        .filter_map(|e| e.title.as_ref().map(|t| t.content.clone()))
        .collect();
    for (name, _, want) in CASES {
        for title in *want {
            assert!(
                titles.iter().any(|t| t == title),
                "{name}: no entry titled {title:?} in the output\n{titles:#?}\n{listed}"
            );
        }
    }
    for (title, text) in CONTENT {
        let body = feed
            .entries
            .iter()
            .find(|e| e.title.as_ref().is_some_and(|t| t.content == *title))
            .and_then(|e| e.content.as_ref()?.body.clone())
            .unwrap_or_default();
        assert!(body.contains(text), "{title}: {text:?} not in {body:?}");
    }
    // The shared programme page: three episodes, each once; the repeated
    // guid once.
    for title in ["Episode 3: Seas", "Guid repeated"] {
        assert_eq!(
            titles.iter().filter(|t| *t == title).count(),
            1,
            "{title}: {titles:#?}"
        );
    }
    assert!(!listed.contains("failing"), "{listed}");
}

#[tokio::test]
async fn a_feed_whose_items_cannot_be_read_fails_with_a_clear_error() {
    let server = FeedServer::start().await;
    server.set(
        "/empty-items.xml",
        Reply::feed(
            "application/rss+xml",
            "<rss version=\"2.0\"><channel><title>t</title><item></item><item><title> </title></item></channel></rss>",
        ),
    );
    server.set(
        "/no-channel.xml",
        Reply::feed(
            "application/rss+xml",
            "<rss version=\"2.0\"><title>x</title></rss>",
        ),
    );
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/empty-items.xml"), ""),
            feed_table(&server.url("/no-channel.xml"), ""),
        ]
        .concat(),
    );
    let out = env.cli(&["poll"]);
    assert!(out.status.success());
    let listed = stdout(&env.cli(&["feeds", "list"]));
    assert!(
        listed.contains("no entries read: the document has 2 item(s)"),
        "{listed}"
    );
    assert!(
        listed.contains("the <rss> element has no <channel> and no <item>"),
        "{listed}"
    );
}

/// Episodes of a radio programme, without guids, all linking to the
/// programme page, with full text on: each episode stays its own entry
/// (not one story), and the page's text does not replace theirs.
#[tokio::test]
async fn episodes_sharing_a_programme_page_stay_apart_with_full_text() {
    let server = FeedServer::start().await;
    let page = server.url("/programme");
    let items: String = (1..=15)
        .map(|i| {
            format!(
                "<item><title>Episode {i}: topic {i}</title><link>{page}</link>\
                 <description>What episode {i} is about, in a sentence of its own.</description>\
                 <pubDate>Mon, {i:02} Sep 2025 06:00:00 GMT</pubDate></item>"
            )
        })
        .collect();
    server.set(
        "/radio.xml",
        Reply::feed(
            "application/rss+xml",
            format!(
                "<rss version=\"2.0\"><channel><title>Radio</title><link>{page}</link>\
                 <description>d</description>{items}</channel></rss>"
            ),
        ),
    );
    let about = "The morning programme brings you the news, the weather and conversations with people from all over the region, every weekday from six until nine. ".repeat(8);
    server.set(
        "/programme",
        Reply::feed(
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html><html><head><title>The Morning Programme</title></head>\
                 <body><article><h1>The Morning Programme</h1><p>{about}</p></article></body></html>"
            ),
        ),
    );
    let env = TestEnv::with_config(
        &[],
        "[extract]\nfull_text = true\n",
        &feed_table(&server.url("/radio.xml"), ""),
    );
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let (feed, _) = read_atom(&env.db_path()).await;
    let mut titles: Vec<String> = feed
        .entries
        .iter()
        .filter_map(|e| e.title.as_ref().map(|t| t.content.clone()))
        .collect();
    titles.sort();
    let mut want: Vec<String> = (1..=15)
        .map(|i| format!("Episode {i}: topic {i}"))
        .collect();
    want.sort();
    assert_eq!(titles, want);
    // A second poll of the same document adds nothing.
    let out = env.cli(&["poll"]);
    assert!(stdout(&out).contains("0 new"), "{}", stdout(&out));
}

/// A 5 MiB item is stored and served cut, with the note saying so.
#[tokio::test]
async fn a_huge_item_is_cut_with_a_visible_note() {
    let server = FeedServer::start().await;
    let huge = "<p>word</p>".repeat(5 * 1024 * 1024 / 11);
    server.set(
        "/huge.xml",
        Reply::feed(
            "application/rss+xml",
            format!(
                "<rss version=\"2.0\"><channel><title>Huge</title><link>https://huge.example/</link>\
                 <description>d</description><item><guid>h</guid><title>Huge</title>\
                 <link>https://huge.example/h</link><description><![CDATA[{huge}]]></description>\
                 </item></channel></rss>"
            ),
        ),
    );
    let env = TestEnv::with_config(
        &[("max_body", "\"20MB\"")],
        "[extract]\nfull_text = false\n\n[retention]\nmax_content_size = \"64KiB\"\n",
        &feed_table(&server.url("/huge.xml"), ""),
    );
    assert!(env.cli(&["poll"]).status.success());
    let stored: i64 = rusqlite::Connection::open(env.db_path())
        .expect("db")
        .query_row("SELECT length(content_html) FROM entry", [], |r| r.get(0))
        .expect("row");
    assert!(stored < 70 * 1024, "{stored} bytes stored");
    let (_, xml) = read_atom(&env.db_path()).await;
    // Escaped in Atom, 64 KiB of markup is about twice that.
    assert!(xml.len() < 200 * 1024, "{} bytes served", xml.len());
    assert!(
        xml.contains("Cut here by Tributary: this entry is"),
        "{}",
        &xml[xml.len() - 500..]
    );
}
