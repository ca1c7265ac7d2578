//! The command-line verbs other tools rely on: check, feeds, opml.

use crate::support::{TestEnv, feed_table, stderr, stdout};

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tributary.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["--config", example, "check"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(": ok"), "{}", stdout(&out));
}

#[test]
fn check_rejects_a_bad_config_naming_every_key_and_line() {
    let env = TestEnv::new("");
    std::fs::write(
        &env.config,
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[poll]\nintervall = \"1h\"\ntimeout = \"soon\"\n\n[[feed]]\nurl = \"ftp://x\"\n",
    )
    .expect("write");
    let out = env.cli(&["check"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(":5: poll.intervall"), "{err}");
    assert!(err.contains(":6: poll.timeout"), "{err}");
    assert!(err.contains(":9: feed[0].url"), "{err}");
    // No database is created for a config that does not load.
    assert!(!env.db_path().exists());
}

#[test]
fn config_path_comes_from_the_environment_too() {
    let env = TestEnv::new("");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .env("TRIBUTARY_CONFIG", &env.config)
        .arg("check")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&env.config.display().to_string()));
}

#[test]
fn feeds_add_list_remove() {
    let env = TestEnv::new(&feed_table(
        "https://config.example/feed",
        "title = \"From config\"",
    ));
    // Nothing listens on port 1: `feeds add` cannot check the feed, says
    // so, and subscribes to it as given.
    let out = env.cli(&[
        "feeds",
        "add",
        "http://127.0.0.1:1/cli.rss",
        "--title",
        "CLI",
        "--tag",
        "x",
        "--tag",
        "y",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: cannot check http://127.0.0.1:1/cli.rss now"),
        "{}",
        stderr(&out)
    );

    let again = env.cli(&["feeds", "add", "http://127.0.0.1:1/cli.rss"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already subscribed"),
        "{}",
        stderr(&again)
    );

    let bad = env.cli(&["feeds", "add", "not a url"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not a valid URL"), "{}", stderr(&bad));

    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(list.contains("http://127.0.0.1:1/cli.rss"), "{list}");
    assert!(list.contains("tags: x, y"), "{list}");
    assert!(list.contains("https://config.example/feed"), "{list}");
    assert!(list.contains("title: From config"), "{list}");

    // A config-owned feed is removed by editing the config, not the CLI.
    let refused = env.cli(&["feeds", "remove", "https://config.example/feed"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("[[feed]]"),
        "{}",
        stderr(&refused)
    );

    assert!(
        env.cli(&["feeds", "remove", "http://127.0.0.1:1/cli.rss"])
            .status
            .success()
    );
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(!list.contains("/cli.rss"), "{list}");
    let missing = env.cli(&["feeds", "remove", "http://127.0.0.1:1/cli.rss"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("not subscribed"));
}

#[test]
fn removing_a_feed_from_the_config_unsubscribes_it() {
    let env = TestEnv::new(&feed_table("https://a.example/feed", ""));
    assert!(stdout(&env.cli(&["feeds", "list"])).contains("a.example"));
    let text = std::fs::read_to_string(&env.config).expect("read");
    let text = text.replace("https://a.example/feed", "https://b.example/feed");
    std::fs::write(&env.config, text).expect("write");
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(
        !list.contains("a.example") && list.contains("b.example"),
        "{list}"
    );
}

#[test]
fn opml_import_export_round_trips() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/opml/subscriptions.opml"
    );
    let first = TestEnv::new("");
    let out = first.cli(&["opml", "import", fixture]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("imported"), "{}", stdout(&out));
    let exported = stdout(&first.cli(&["opml", "export"]));
    assert!(exported.contains("<opml version=\"2.0\""), "{exported}");

    // Importing the export elsewhere gives the same subscriptions.
    let second = TestEnv::new("");
    let path = second.dir.path().join("export.opml");
    std::fs::write(&path, &exported).expect("write");
    let path = path.to_str().expect("utf-8 path");
    assert!(second.cli(&["opml", "import", path]).status.success());
    let a = tributary::opml::import(&exported).expect("parse export");
    let b = tributary::opml::import(&stdout(&second.cli(&["opml", "export"]))).expect("parse");
    let norm = |mut v: Vec<tributary::model::FeedSpec>| {
        for f in &mut v {
            f.tags.sort();
        }
        v.sort_by(|x, y| x.url.cmp(&y.url));
        v
    };
    assert!(!a.feeds.is_empty());
    assert_eq!(norm(a.feeds.clone()), norm(b.feeds));
    // Folders became tags.
    assert!(a.feeds.iter().any(|f| f.tags.len() >= 2), "{:?}", a.feeds);

    // Importing twice adds nothing.
    let out = second.cli(&["opml", "import", path]);
    assert!(
        stdout(&out).contains("imported 0 feeds"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let env = TestEnv::new("");
    std::fs::write(
        env.db_path(),
        b"this is not sqlite, and must not be overwritten",
    )
    .expect("write");
    let out = env.cli(&["feeds", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("tributary.db"), "{err}");
    assert_eq!(
        std::fs::read(env.db_path()).expect("read"),
        b"this is not sqlite, and must not be overwritten"
    );
}

/// The stored `full_text` setting of the feed at `url`.
async fn stored_full_text(env: &TestEnv, url: &str) -> Option<bool> {
    let store = tributary::store::Store::open(&env.db_path())
        .await
        .expect("open store");
    let feed = store.feed_by_url(url).await.expect("query");
    store.close().await.expect("close");
    feed.unwrap_or_else(|| panic!("{url} is not stored"))
        .spec
        .full_text
}

#[tokio::test]
async fn full_text_setting_round_trips_from_cli_and_config() {
    let env = TestEnv::new(&format!(
        "{}{}",
        feed_table("https://on.example/feed", "full_text = true"),
        feed_table("https://off.example/feed", "full_text = false"),
    ));
    let out = env.cli(&[
        "feeds",
        "add",
        "http://127.0.0.1:1/cli.rss",
        "--no-full-text",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.cli(&["feeds", "add", "http://127.0.0.1:1/default.rss"]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert_eq!(
        stored_full_text(&env, "http://127.0.0.1:1/cli.rss").await,
        Some(false)
    );
    assert_eq!(
        stored_full_text(&env, "http://127.0.0.1:1/default.rss").await,
        None
    );
    assert_eq!(
        stored_full_text(&env, "https://on.example/feed").await,
        Some(true)
    );
    assert_eq!(
        stored_full_text(&env, "https://off.example/feed").await,
        Some(false)
    );
    let list = stdout(&env.cli(&["feeds", "list"]));
    assert!(list.contains("full text: off"), "{list}");
    assert!(list.contains("full text: on"), "{list}");

    // Editing the config changes the stored setting at the next start;
    // removing the key goes back to following [extract] full_text.
    let text = std::fs::read_to_string(&env.config).expect("read");
    let text = text
        .replace("full_text = true", "")
        .replace("full_text = false", "full_text = true");
    std::fs::write(&env.config, text).expect("write");
    assert!(env.cli(&["feeds", "list"]).status.success());
    assert_eq!(
        stored_full_text(&env, "https://on.example/feed").await,
        None
    );
    assert_eq!(
        stored_full_text(&env, "https://off.example/feed").await,
        Some(true)
    );
    // A CLI feed keeps its own setting.
    assert_eq!(
        stored_full_text(&env, "http://127.0.0.1:1/cli.rss").await,
        Some(false)
    );
}
