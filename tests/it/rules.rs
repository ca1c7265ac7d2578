//! Keep/block rules end to end: a feed's rules decide which of its entries
//! are stored, and `feeds refilter` applies changed rules to what is
//! stored, leaving entries another feed carries to that feed.

use crate::support::{FeedServer, Reply, TestEnv, feed_table, read_atom, stderr, stdout};

fn item(guid: &str, title: &str, author: &str, category: &str, body: &str) -> String {
    format!(
        "<item><guid>{guid}</guid><title>{title}</title><link>https://rules.example/{guid}</link>\
         <author>{author}</author><category>{category}</category>\
         <description><![CDATA[{body}]]></description></item>"
    )
}

fn feed(items: &[String]) -> Reply {
    Reply::feed(
        "application/rss+xml",
        format!(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Rules</title>\
             <link>https://rules.example/</link><description>d</description>{}</channel></rss>",
            items.concat()
        ),
    )
}

async fn titles(env: &TestEnv) -> Vec<String> {
    let (doc, _) = read_atom(&env.db_path()).await;
    let mut titles: Vec<String> = doc
        .entries
        .iter()
        .filter_map(|e| e.title.as_ref().map(|t| t.content.clone()))
        .collect();
    titles.sort();
    titles
}

#[tokio::test]
async fn rules_decide_what_is_stored_and_refilter_applies_new_ones() {
    let server = FeedServer::start().await;
    let items = [
        item(
            "a",
            "Rust 2.0 released",
            "ada@rules.example (Ada)",
            "lang",
            "<p>The compiler got faster at generics.</p>",
        ),
        item(
            "b",
            "Go news",
            "bob@rules.example (Bob)",
            "lang",
            "<p>Garbage collection pauses shrink again.</p>",
        ),
        item(
            "c",
            "Rust sponsored post",
            "ada@rules.example (Ada)",
            "sponsored",
            "<p>Buy a course about lifetimes today.</p>",
        ),
        item(
            "d",
            "Weekly digest",
            "digest@rules.example (DigestBot)",
            "misc",
            "<p>Links about rust and other things this week.</p>",
        ),
    ];
    server.set("/rules.xml", feed(&items));
    // The same stories in a second feed without rules.
    server.set("/all.xml", feed(&items[1..2]));
    let rules = "keep = { title = \"(?i)rust\", content = \"(?i)rust\" }\n\
                 block = { categories = \"^sponsored$\", author = \"(?i)bot\" }";
    let env = TestEnv::new(
        &[
            feed_table(&server.url("/rules.xml"), rules),
            feed_table(&server.url("/all.xml"), ""),
        ]
        .concat(),
    );
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // a: kept by title; b: only through the other feed; c: blocked by its
    // category; d: kept by content but blocked by its author.
    assert_eq!(titles(&env).await, ["Go news", "Rust 2.0 released"]);
    assert!(
        stdout(&out).contains("2 feeds polled: 2 new, 0 updated, 0 failed"),
        "{}",
        stdout(&out)
    );

    // Rules that change in the config apply to new polls at once, and to
    // what is stored with `feeds refilter`.
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace(
        rules,
        "block = { title = \"(?i)^rust 2\" }\nkeep = { author = \"Bob\" }",
    );
    std::fs::write(&env.config, text).unwrap();
    let out = env.cli(&["feeds", "refilter"]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(
        said.contains(&format!(
            "{}: 1 entries left out by its rules",
            server.url("/rules.xml")
        )),
        "{said}"
    );
    assert_eq!(titles(&env).await, ["Go news"]);
    // Go news is now kept by its author in the rules feed too; the other
    // feed's copy never left.
    env.cli(&["poll"]);
    assert_eq!(titles(&env).await, ["Go news"]);

    // Rules relaxed: a poll brings back what is still in the feed.
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace(
        "block = { title = \"(?i)^rust 2\" }\nkeep = { author = \"Bob\" }",
        "",
    );
    std::fs::write(&env.config, text).unwrap();
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        titles(&env).await,
        [
            "Go news",
            "Rust 2.0 released",
            "Rust sponsored post",
            "Weekly digest"
        ]
    );
    let said = stdout(&env.cli(&["feeds", "refilter"]));
    assert!(said.contains("0 entries removed"), "{said}");
}

/// `feeds add --keep/--block` stores the same rules a `[[feed]]` table
/// holds: a bare regex reads the title or the content, `PART=REGEX` one
/// part; `feeds list` shows them; a bad regex is refused before anything
/// is subscribed.
#[tokio::test]
async fn feeds_add_flags_set_keep_and_block_rules() {
    let server = FeedServer::start().await;
    server.set(
        "/flags.xml",
        feed(&[
            item(
                "a",
                "Rust 2.0 released",
                "ada@x (Ada)",
                "lang",
                "<p>Faster.</p>",
            ),
            item(
                "b",
                "Go news",
                "bob@x (Bob)",
                "lang",
                "<p>All about rust too.</p>",
            ),
            item(
                "c",
                "Rust course",
                "ada@x (Ada)",
                "sponsored",
                "<p>Buy.</p>",
            ),
            item(
                "d",
                "Weekly digest",
                "d@x (DigestBot)",
                "misc",
                "<p>Links.</p>",
            ),
            item("e", "Zig news", "zed@x (Zed)", "lang", "<p>Comptime.</p>"),
        ]),
    );
    let url = server.url("/flags.xml");
    let env = TestEnv::new("");

    let out = env.cli(&["feeds", "add", &url, "--keep", "title=(?i)rust["]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--keep \"title=(?i)rust[\"") && err.contains("invalid regex"),
        "{err}"
    );
    assert!(!stdout(&env.cli(&["feeds", "list"])).contains(&url));

    let out = env.cli(&[
        "feeds",
        "add",
        &url,
        "--keep",
        "(?i)rust",
        "--keep",
        "author=Zed",
        "--block",
        "categories=^sponsored$",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(
        list.contains("keep: title ~ (?i)rust · content ~ (?i)rust · author ~ Zed"),
        "{list}"
    );
    assert!(list.contains("block: categories ~ ^sponsored$"), "{list}");

    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // a: title; b: content; c: blocked; d: no rule keeps it; e: author.
    assert_eq!(
        titles(&env).await,
        ["Go news", "Rust 2.0 released", "Zig news"]
    );
}
