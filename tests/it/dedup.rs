//! One story, one entry, across feeds: the same URL in two feeds, and the
//! same wire story on two sites, end to end through the real binary.

use std::collections::HashSet;

use crate::support::{FeedServer, Reply, TestEnv, feed_table, http, read_atom, stderr, stdout};

fn one_item_feed(site: &str, guid: &str, title: &str, link: &str, teaser: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>{site}</title><link>https://{site}.example/</link><description>d</description>
<item><guid>{guid}</guid><title>{title}</title><link>{link}</link><description>{teaser}</description></item>
</channel></rss>"#
    )
}

const WIRE: [&str; 6] = [
    "The regional water authority said on Monday that reservoir levels had fallen to their lowest point in three decades after the driest summer on record, and announced a ban on garden hoses from the first of next month.",
    "Officials said the ban would apply to households and small businesses across the four districts served by the northern reservoirs, with exemptions for people with disabilities and for commercial growers who use drip irrigation.",
    "The authority's chief engineer said the reservoirs were holding just under forty percent of their capacity, compared with a long-term average of seventy percent for the time of year, and that inflows had been negligible since June.",
    "Farmers' groups warned that the restrictions, if extended into the winter, would hit dairy herds hardest, and called on the government to fund emergency boreholes and to speed up work on a new pipeline from the southern catchment.",
    "Environmental campaigners said the drought showed that leakage from old mains, which loses almost a quarter of treated water before it reaches a tap, should have been fixed years ago, and urged the regulator to impose fines.",
    "The authority said it would review the ban every two weeks and lift it once reservoir levels recovered to fifty percent, which forecasters said was unlikely before the spring unless the autumn proved unusually wet.",
];

/// The test server under another host name: another site, as far as
/// dedup's same-site rule is concerned (one site's stories share its
/// template, so two of its texts need more to be one story).
fn other_site(url: &str) -> String {
    url.replacen("127.0.0.1", "localhost", 1)
}

fn page(site: &str, title: &str, paragraphs: &[&str], extra: &str) -> String {
    let body: String = paragraphs.iter().map(|p| format!("<p>{p}</p>\n")).collect();
    format!(
        r#"<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title} - {site}</title></head>
<body><header><nav><a href="/">{site} home</a> <a href="/politics">Politics</a> <a href="/sport">Sport</a></nav></header>
<main><article><h1>{title}</h1><p class="byline">By Staff Reporter, {site}</p>
{body}{extra}</article></main>
<aside class="related"><h3>More from {site}</h3><ul><li><a href="/x">Other story</a></li></ul></aside>
<footer>© {site}</footer></body></html>"#
    )
}

#[tokio::test]
async fn the_same_link_in_two_feeds_is_one_story_with_both_sources() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed(
            "application/rss+xml",
            one_item_feed(
                "alpha",
                "a1",
                "Shared story",
                "https://news.example/story/42?utm_source=alpha",
                "From alpha.",
            ),
        ),
    );
    server.set(
        "/b.xml",
        Reply::feed(
            "application/rss+xml",
            one_item_feed(
                "beta",
                "b-77",
                "Shared story (beta)",
                "http://www.news.example/story/42/#top",
                "From beta.",
            ),
        ),
    );
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/a.xml"), ""),
            feed_table(&server.url("/b.xml"), ""),
        ]
        .concat(),
    );
    assert!(
        env.cli(&["poll", "--feed", &server.url("/a.xml")])
            .status
            .success()
    );
    let (first, _) = read_atom(&env.db_path()).await;
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("1 entries were stories another feed had already brought"),
        "{}",
        stdout(&out)
    );

    let (feed, xml) = read_atom(&env.db_path()).await;
    assert_eq!(feed.entries.len(), 1, "one story: {xml}");
    assert_eq!(
        feed.entries[0].id, first.entries[0].id,
        "the first-seen id stays"
    );
    // Both copies are credited: the second one as a related link.
    assert!(
        xml.contains("rel=\"related\"") && xml.contains("www.news.example/story/42"),
        "{xml}"
    );
    let json = crate::support::get_output(&env.db_path(), "/feed.json", &[])
        .await
        .text()
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let sources = v["items"][0]["_tributary"]["sources"]
        .as_array()
        .expect("sources");
    let feeds: HashSet<&str> = sources
        .iter()
        .filter_map(|s| s["feed_url"].as_str())
        .collect();
    assert_eq!(feeds.len(), 2, "{json}");
}

#[tokio::test]
async fn two_entries_of_one_feed_linking_one_live_page_stay_apart() {
    let server = FeedServer::start().await;
    let feed = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://t.example/</link><description>d</description>
<item><guid>1</guid><title>Live blog, morning</title><link>https://t.example/live</link><description>a</description></item>
<item><guid>2</guid><title>Live blog, evening</title><link>https://t.example/live</link><description>b</description></item>
</channel></rss>"#;
    server.set("/t.xml", Reply::feed("application/rss+xml", feed));
    let env = TestEnv::new(&feed_table(&server.url("/t.xml"), ""));
    env.cli(&["poll"]);
    let (feed, _) = read_atom(&env.db_path()).await;
    assert_eq!(feed.entries.len(), 2);
}

#[tokio::test]
async fn a_wire_story_on_two_sites_becomes_one_entry_but_different_stories_stay_apart() {
    let server = FeedServer::start().await;
    // The same wire story: different sites, URLs, titles, boilerplate, and
    // one paragraph dropped on the second site.
    server.set(
        "/alpha/story",
        Reply::feed(
            "text/html",
            page(
                "Alpha Times",
                "Hosepipe ban as reservoirs hit 30-year low",
                &WIRE,
                "<p>This story was first published by the Northern Wire service.</p>",
            ),
        ),
    );
    server.set(
        "/beta/news/drought",
        Reply::feed(
            "text/html",
            page(
                "Beta Daily",
                "Reservoirs at lowest level in three decades, hose ban announced",
                &WIRE[..5],
                "<p>Reporting by our agency partner.</p>",
            ),
        ),
    );
    // A different story on the same topic and template as the first: the
    // same sentences with other facts in each (what templated stories
    // share). A text that differed only in a handful of nouns would be
    // told apart from the wire story by the same-site rule, but its copy
    // on another site would link the two (`tests/fixtures/dedup/groups.toml`
    // keeps such a pair on one site).
    let other: Vec<String> = WIRE
        .iter()
        .map(|p| {
            p.replace("water authority", "electricity board")
                .replace("reservoir", "coal stock")
                .replace("hoses", "floodlights")
                .replace("drought", "heatwave")
                .replace("Farmers'", "Factory owners'")
                .replace("on Monday", "late on Thursday")
                .replace("three decades", "twenty years")
                .replace("the first of next month", "the end of this week")
                .replace("four districts", "six industrial zones")
                .replace("forty percent", "a third")
                .replace("seventy percent", "two thirds")
                .replace("since June", "since the turbine fire in March")
                .replace("dairy herds", "steel mills")
                .replace("southern catchment", "offshore wind farm")
                .replace("a quarter of treated water", "a tenth of generated power")
                .replace("two weeks", "ten days")
                .replace("fifty percent", "eighty percent")
        })
        .collect();
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let mut shuffled = other.clone();
    shuffled.reverse();
    server.set(
        "/alpha/other",
        Reply::feed(
            "text/html",
            page(
                "Alpha Times",
                "Power board warns of winter shortfall",
                &shuffled,
                "",
            ),
        ),
    );

    let alpha = format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Alpha Times</title><link>{0}</link><description>d</description>
<item><guid>alpha-1</guid><title>Hosepipe ban as reservoirs hit 30-year low</title><link>{1}</link><description>Teaser.</description><pubDate>Mon, 23 Nov 2026 09:00:00 GMT</pubDate></item>
<item><guid>alpha-2</guid><title>Power board warns of winter shortfall</title><link>{2}</link><description>Teaser.</description><pubDate>Mon, 23 Nov 2026 10:00:00 GMT</pubDate></item>
</channel></rss>"#,
        server.url("/alpha/"),
        server.url("/alpha/story"),
        server.url("/alpha/other")
    );
    let beta = format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Beta Daily</title><link>{0}</link><description>d</description>
<item><guid>beta-9</guid><title>Reservoirs at lowest level in three decades</title><link>{1}</link><description>Teaser.</description><pubDate>Mon, 23 Nov 2026 11:00:00 GMT</pubDate></item>
</channel></rss>"#,
        other_site(&server.url("/beta/")),
        other_site(&server.url("/beta/news/drought"))
    );
    server.set("/alpha.xml", Reply::feed("application/rss+xml", alpha));
    server.set("/beta.xml", Reply::feed("application/rss+xml", beta));
    let env = TestEnv::with_config(
        &[],
        "",
        &[
            feed_table(&server.url("/alpha.xml"), ""),
            feed_table(&other_site(&server.url("/beta.xml")), ""),
        ]
        .concat(),
    );
    assert!(
        env.cli(&["poll", "--feed", &server.url("/alpha.xml")])
            .status
            .success()
    );
    let (first, _) = read_atom(&env.db_path()).await;
    let wire_id = first
        .entries
        .iter()
        .find(|e| {
            e.title
                .as_ref()
                .is_some_and(|t| t.content.starts_with("Hosepipe"))
        })
        .expect("alpha's wire story")
        .id
        .clone();

    let out = env.cli(&["poll", "--feed", &other_site(&server.url("/beta.xml"))]);
    assert!(
        stdout(&out).contains("1 articles were stories another feed had already brought"),
        "{}",
        stdout(&out)
    );
    let (feed, xml) = read_atom(&env.db_path()).await;
    assert_eq!(
        feed.entries.len(),
        2,
        "the wire story once, the other story kept: {xml}"
    );
    let wire = feed
        .entries
        .iter()
        .find(|e| e.id == wire_id)
        .expect("the first-seen id survives");
    assert!(
        wire.links
            .iter()
            .any(|l| l.rel.as_deref() == Some("related") && l.href.contains("/beta/news/drought")),
        "{:?}",
        wire.links
    );
    assert!(feed.entries.iter().any(|e| {
        e.title
            .as_ref()
            .is_some_and(|t| t.content.starts_with("Power board"))
    }));
}

const STORM: [&str; 5] = [
    "A storm with gusts of more than one hundred and twenty kilometres an hour swept across the northern coast overnight, bringing down power lines and trees and forcing the closure of the main coastal road between the two ferry ports.",
    "About forty thousand homes were without electricity on Tuesday morning, the grid operator said, adding that crews had been sent from neighbouring regions and that most customers should be reconnected by the evening.",
    "The harbour master said all ferry crossings to the islands had been cancelled until at least Wednesday, leaving hundreds of travellers stranded, and that two fishing boats had been damaged at their moorings in the old port.",
    "The weather service lifted its red warning at dawn but kept an amber warning for high waves in place until midnight, and urged people to stay away from sea walls and promenades while the tide remained high.",
    "Local councils opened three schools as shelters for families whose homes had been damaged, and the regional government said it would release emergency funds to repair roofs and sea defences once the damage had been assessed.",
];

const SHOW: [&str; 3] = [
    "The Morning Show is the station's flagship programme of news, conversation and music, broadcast live every weekday from six until nine from our studio in the old harbour building.",
    "Each episode brings the stories of the day with reporters across the region, interviews with the people behind the headlines, and listeners' calls on the questions that matter to them.",
    "Every episode is available to stream for thirty days after broadcast, and the most popular interviews are collected in a weekly podcast published every Saturday morning with a look ahead to the week.",
];

fn rss(title: &str, site: &str, items: &[(&str, &str, &str, &str)]) -> String {
    let items: String = items
        .iter()
        .map(|(guid, title, link, date)| {
            format!(
                "<item><guid>{guid}</guid><title>{title}</title><link>{link}</link>\
                 <description>Teaser.</description><pubDate>{date}</pubDate></item>\n"
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title><link>{site}</link><description>d</description>
{items}</channel></rss>"#
    )
}

/// One `tributary poll` of feeds carrying copies of one story inside one
/// feed and across feeds (tracking parameters, an AMP page, a partner's
/// edited copy on another site), next to entries that must stay apart (a
/// show's episodes linking the show's page, two same-titled reports, a
/// different story): the daemon's `/feed.atom` shows each story once,
/// with every copy linked and every feed named.
#[tokio::test]
async fn one_poll_shows_each_story_once_with_every_copy_linked() {
    let server = FeedServer::start().await;
    let wire = |p: &str| server.url(&format!("/wire/{p}"));
    let partner = |p: &str| other_site(&server.url(&format!("/partner/{p}")));
    // The wire's article and its AMP page (canonical: the article).
    server.set(
        "/wire/storm",
        Reply::feed(
            "text/html",
            page("Wire", "Storm batters the coast", &STORM, ""),
        ),
    );
    server.set(
        "/wire/amp/storm",
        Reply::feed(
            "text/html",
            page(
                "Wire",
                "Storm batters the coast",
                &STORM,
                &format!(
                    r#"<link rel="canonical" href="{}"><p>Advertisement</p>"#,
                    wire("storm")
                ),
            ),
        ),
    );
    // The partner's lightly edited copy: a dateline, one paragraph cut,
    // a correction note, its own template and URL.
    let mut edited: Vec<String> = STORM[..4].iter().map(|p| p.to_string()).collect();
    edited[0] = format!("NORTH SHIELDS — {}", edited[0]);
    edited.push(
        "Correction: an earlier version of this story gave the wrong day for the ferry cancellations."
            .into(),
    );
    let edited: Vec<&str> = edited.iter().map(String::as_str).collect();
    server.set(
        "/partner/news/coast-storm",
        Reply::feed(
            "text/html",
            page(
                "Partner Post",
                "Storm batters coast, 40,000 without power",
                &edited,
                "",
            ),
        ),
    );
    server.set(
        "/wire/drought",
        Reply::feed(
            "text/html",
            page("Wire", "Hosepipe ban announced", &WIRE, ""),
        ),
    );
    // A radio show's page: every episode links it.
    server.set(
        "/radio/show",
        Reply::feed("text/html", page("Radio", "The Morning Show", &SHOW, "")),
    );
    let mon = "Mon, 23 Nov 2026 09:00:00 GMT";
    let mon_late = "Mon, 23 Nov 2026 09:05:00 GMT";
    let tue = "Tue, 24 Nov 2026 09:00:00 GMT";
    let wed = "Wed, 25 Nov 2026 09:00:00 GMT";
    // A roundup listing the article twice (with and without utm_*) and
    // its AMP page, and another story.
    let roundup = rss(
        "Roundup",
        &server.url("/roundup/"),
        &[
            (
                "r1",
                "Storm batters the coast",
                &format!("{}?utm_source=roundup&amp;utm_medium=rss", wire("storm")),
                mon,
            ),
            ("r2", "Storm batters the coast", &wire("storm"), mon_late),
            (
                "r3",
                "Storm batters the coast (AMP)",
                &wire("amp/storm"),
                mon,
            ),
            ("r4", "Hosepipe ban announced", &wire("drought"), mon),
        ],
    );
    let partner_feed = rss(
        "Partner Post",
        &partner(""),
        &[(
            "p1",
            "Storm batters coast, 40,000 without power | Partner Post",
            &partner("news/coast-storm"),
            tue,
        )],
    );
    let radio = rss(
        "Radio",
        &server.url("/radio/"),
        &[
            (
                "ep1",
                "Morning Show: the storm",
                &server.url("/radio/show"),
                mon,
            ),
            (
                "ep2",
                "Morning Show: the ban",
                &server.url("/radio/show"),
                tue,
            ),
            (
                "ep3",
                "Morning Show: the budget",
                &server.url("/radio/show"),
                wed,
            ),
        ],
    );
    server.set("/roundup.xml", Reply::feed("application/rss+xml", roundup));
    server.set("/radio.xml", Reply::feed("application/rss+xml", radio));
    server.set(
        "/partner.xml",
        Reply::feed("application/rss+xml", partner_feed),
    );
    let feeds = [
        feed_table(&server.url("/roundup.xml"), ""),
        feed_table(&other_site(&server.url("/partner.xml")), ""),
        feed_table(&server.url("/radio.xml"), ""),
    ]
    .concat();
    let env = TestEnv::with_config(&[], "", &feeds);
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&env.cli(&["status"]))
            .contains("re-examination of stored stories for duplicates pending"),
        "the pass is the daemon's"
    );

    let daemon = env.spawn_daemon().await;
    let xml = http()
        .get(format!("{}/feed.atom?limit=500", env.base_url()))
        .send()
        .await
        .expect("GET /feed.atom")
        .text()
        .await
        .expect("body");
    let feed = feed_rs::parser::parse(xml.as_bytes()).expect("Atom parses");
    // The daemon's one-time re-examination of stored stories has run (a
    // fresh database has nothing to merge), and `status` says so.
    let before = stdout(&env.cli(&["status"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = stdout(&env.cli(&["status"]));
        if status.contains("stored stories re-examined for duplicates") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{before}\n{status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    daemon.stop();
    let titled = |prefix: &str| -> Vec<&feed_rs::model::Entry> {
        feed.entries
            .iter()
            .filter(|e| {
                e.title
                    .as_ref()
                    .is_some_and(|t| t.content.starts_with(prefix))
            })
            .collect()
    };
    let storm = titled("Storm batters");
    assert_eq!(storm.len(), 1, "the storm story once: {xml}");
    let links: HashSet<&str> = storm[0].links.iter().map(|l| l.href.as_str()).collect();
    for copy in [
        format!("{}?utm_source=roundup&utm_medium=rss", wire("storm")),
        wire("storm"),
        wire("amp/storm"),
        partner("news/coast-storm"),
    ] {
        assert!(links.contains(copy.as_str()), "{copy} linked: {xml}");
    }
    // Every feed that carried it is named: the one polled first as its
    // source, the other through rel="via".
    let at = xml.find("Storm batters").expect("storm entry");
    let entry_xml = &xml[at..at + xml[at..].find("</entry>").expect("entry end")];
    let source = &entry_xml[entry_xml.find("<source>").expect("atom:source")..];
    let via: Vec<&str> = storm[0]
        .links
        .iter()
        .filter(|l| l.rel.as_deref() == Some("via"))
        .map(|l| l.href.as_str())
        .collect();
    let (roundup_site, partner_site) = (server.url("/roundup/"), partner(""));
    assert!(
        (source.contains("/roundup.xml") && via == [partner_site.as_str()])
            || (source.contains("/partner.xml") && via == [roundup_site.as_str()]),
        "source {source}, via {via:?}: {xml}"
    );
    assert_eq!(titled("Hosepipe ban").len(), 1, "{xml}");
    assert_eq!(titled("Morning Show").len(), 3, "each episode stays: {xml}");
    assert_eq!(feed.entries.len(), 5, "{xml}");
}
