//! `database = "postgres://…"` and `TRIBUTARY_DATABASE` from the outside:
//! what `check` says, that no password ever shows, and the real daemon
//! polling and serving on PostgreSQL as it does on SQLite. The store's own
//! behaviour on both backends is tested by `store::suite`.

use std::time::{Duration, Instant};

use crate::support::{
    FeedServer, PgDatabase, Reply, TestEnv, feed_table, http, run_expecting_exit_with, stderr,
    stdout,
};

/// `check` validates the URL, shows it without its password and names
/// the backend. It does not connect: no server is needed.
#[test]
fn check_shows_the_url_without_its_password() {
    let env = TestEnv::new("");
    let url = "postgres://feeds:hunter2@127.0.0.1:1/tributary";
    let out = env
        .command()
        .env("TRIBUTARY_DATABASE", url)
        .arg("check")
        .output()
        .expect("run");
    let (out_text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{out_text}{err}");
    assert!(
        out_text.contains("database: postgres://feeds:***@127.0.0.1:1/tributary (PostgreSQL)"),
        "{out_text}"
    );
    assert!(!err.contains("not complete"), "{err}");
    assert!(!out_text.contains("hunter2") && !err.contains("hunter2"));
    // The file's own SQLite database was not created.
    assert!(!env.db_path().exists());

    // Without the variable, the file's path: SQLite, and fine.
    let out = env.cli(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("tributary.db (SQLite)"),
        "{}",
        stdout(&out)
    );
}

/// A bad URL in the variable is a config error naming the variable, and
/// does not repeat the password.
#[test]
fn a_bad_database_url_is_a_config_error_without_the_password() {
    let env = TestEnv::new("");
    let out = env
        .command()
        .env(
            "TRIBUTARY_DATABASE",
            "postgres://feeds:hunter2@127.0.0.1:notaport/t",
        )
        .arg("check")
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TRIBUTARY_DATABASE"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// `run` against a server that does not answer fails at start-up naming
/// the URL without its password.
#[test]
fn run_against_an_unreachable_server_names_it_without_the_password() {
    let env = TestEnv::new("");
    let port = crate::support::free_port();
    let url = format!("postgres://feeds:hunter2@127.0.0.1:{port}/tributary");
    let (status, log) = run_expecting_exit_with(&env, &[("TRIBUTARY_DATABASE", &url)]);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "cannot connect to PostgreSQL at postgres://feeds:***@127.0.0.1:{port}/tributary"
        )),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
}

const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>Harbour</title><link>https://harbour.example/</link>
<item><guid>h1</guid><title>Tide &lt;high&gt; &amp; rising</title><link>https://harbour.example/1</link>
  <description>&lt;p&gt;The &lt;b&gt;tide&lt;/b&gt; rose.&lt;/p&gt;</description>
  <pubDate>Mon, 02 Mar 2026 10:00:00 GMT</pubDate></item>
<item><guid>h2</guid><title>Ferry resumes</title><link>https://harbour.example/2</link>
  <description>Ferries run again.</description>
  <pubDate>Tue, 03 Mar 2026 10:00:00 GMT</pubDate></item>
<item><guid>h3</guid><title>Gulls, undated</title><link>https://harbour.example/3</link>
  <description>&lt;p&gt;No date here.&lt;/p&gt;</description></item>
</channel></rss>"#;

/// What a JSON Feed shows of each item, ids aside (a daemon's own).
fn items(json: &serde_json::Value) -> Vec<(String, String, String)> {
    json["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    let s = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
                    (s("title"), s("url"), s("content_html"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `base`'s JSON Feed until it shows `n` items; returns it and the
/// Atom feed served then.
async fn served(base: &str, n: usize, log: impl Fn() -> String) -> (serde_json::Value, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http().get(format!("{base}/feed.json")).send().await
            && r.status().is_success()
            && let Ok(text) = r.text().await
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
            && items(&json).len() >= n
        {
            let atom = http()
                .get(format!("{base}/feed.atom"))
                .send()
                .await
                .expect("GET /feed.atom");
            assert_eq!(atom.status(), 200);
            return (json, atom.text().await.expect("atom body"));
        }
        assert!(
            Instant::now() < deadline,
            "no {n} entries served:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real `tributary run` on PostgreSQL polls a feed from a loopback
/// server and serves its entries in Atom and JSON Feed, the same entries
/// a daemon on SQLite serves for the same feed; then `tributary purge`
/// applies retention there (and the purged entry stays purged). Skipped
/// (saying so) without `TRIBUTARY_TEST_POSTGRES`.
#[tokio::test]
async fn run_on_postgres_polls_and_serves_what_sqlite_serves() {
    let Some(scratch) = PgDatabase::create("run_on_postgres").await else {
        return;
    };
    let server = FeedServer::start().await;
    server.set("/h.xml", Reply::feed("application/rss+xml", RSS));
    let feeds = feed_table(&server.url("/h.xml"), "");
    let on_pg = TestEnv::new(&feeds);
    let on_sqlite = TestEnv::new(&feeds);

    let pg = on_pg.spawn_daemon_with(&[("TRIBUTARY_DATABASE", &scratch.url)]);
    on_pg.wait_healthy().await;
    let lite = on_sqlite.spawn_daemon().await;
    let (pg_json, pg_atom) = served(&on_pg.base_url(), 3, || pg.log()).await;
    let (lite_json, lite_atom) = served(&on_sqlite.base_url(), 3, || lite.log()).await;
    // PostgreSQL was used, not the config's SQLite file.
    assert!(!on_pg.db_path().exists(), "{}", pg.log());
    assert!(!pg.log().contains("not complete"), "{}", pg.log());

    let pg_items = items(&pg_json);
    assert_eq!(pg_items.len(), 3, "{pg_json}");
    assert_eq!(
        pg_items,
        items(&lite_json),
        "the same entries, in the same order"
    );
    assert!(
        pg_items.iter().any(|(t, _, _)| t == "Tide <high> & rising"),
        "{pg_items:?}"
    );
    let titles = |xml: &str| -> Vec<String> {
        let feed = feed_rs::parser::parse(xml.as_bytes()).expect("Atom parses");
        feed.entries
            .into_iter()
            .map(|e| e.title.map(|t| t.content).unwrap_or_default())
            .collect()
    };
    assert_eq!(titles(&pg_atom), titles(&lite_atom));
    assert_eq!(titles(&pg_atom).len(), 3);
    let (status, log) = pg.stop();
    assert!(status.success(), "{log}");
    drop(lite);

    // Retention on PostgreSQL: one entry per feed is kept.
    let config = std::fs::read_to_string(&on_pg.config).expect("config");
    std::fs::write(
        &on_pg.config,
        format!("{config}\n[retention]\nmax_entries_per_feed = 1\n"),
    )
    .expect("write config");
    let env_url = scratch.url.clone();
    let purge = |env: &TestEnv| {
        env.command()
            .env("TRIBUTARY_DATABASE", &env_url)
            .arg("purge")
            .output()
            .expect("run purge")
    };
    let out = purge(&on_pg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("purged:     2 entries"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("2 added"), "{}", stdout(&out));
    let again = purge(&on_pg);
    assert!(
        stdout(&again).contains("purged:     0 entries"),
        "{}",
        stdout(&again)
    );

    // The daemon polls the same feed again: what was purged stays purged.
    let before = server.requests("/h.xml").len();
    let pg = on_pg.spawn_daemon_with(&[("TRIBUTARY_DATABASE", &scratch.url)]);
    on_pg.wait_healthy().await;
    let (json, _) = served(&on_pg.base_url(), 1, || pg.log()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests("/h.xml").len() < before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.requests("/h.xml").len() >= before + 2,
        "polled again: {}",
        pg.log()
    );
    let json_after = http()
        .get(format!("{}/feed.json", on_pg.base_url()))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    let json_after: serde_json::Value = serde_json::from_str(&json_after).expect("JSON Feed");
    assert_eq!(items(&json).len(), 1, "{json}");
    assert_eq!(items(&json_after).len(), 1, "{json_after}");
    let (status, log) = pg.stop();
    assert!(status.success(), "{log}");
    scratch.drop_database().await;
}
