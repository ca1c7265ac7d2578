//! Push end to end: the daemon delivers a named output's new entries to
//! its webhooks (JSON Feed, signed) and ntfy topics, retries a failing
//! receiver without delivering anything twice, keeps its place across a
//! restart, and keeps polling while a receiver hangs.

use std::time::{Duration, Instant};

use crate::feeds::rss;
use crate::support::{FeedServer, Reply, Seen, TestEnv, feed_table, stderr, stdout};

const SECRET: &str = "wh-s3cret";

fn news(items: &[(&str, &str)]) -> Reply {
    let items: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|(guid, body)| (*guid, *guid, *body))
        .collect();
    Reply::feed("application/rss+xml", rss(&items))
}

const OLD: (&str, &str) = (
    "old-story",
    "<p>The harbour opened its new ferry terminal.</p>",
);
const NEW_A: (&str, &str) = (
    "new-alpha",
    "<p>Orchestra announces a winter season of Sibelius.</p>",
);
const NEW_B: (&str, &str) = (
    "new-beta",
    "<p>Cyclists get a protected lane along the river.</p>",
);

/// Waits until `ok` holds, failing with `what` after a minute.
async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The push targets the daemon has set up, from its database.
fn targets(env: &TestEnv) -> i64 {
    rusqlite::Connection::open(env.db_path())
        .and_then(|db| db.query_row("SELECT count(*) FROM push_target", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// The item titles of a webhook delivery, checking it is a JSON Feed.
fn items(seen: &Seen) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_slice(&seen.body).expect("JSON body");
    assert_eq!(doc["version"], "https://jsonfeed.org/version/1.1", "{doc}");
    doc["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn env_with_output(server: &FeedServer, output: &str) -> TestEnv {
    TestEnv::with_config(
        &[],
        &format!("[extract]\nfull_text = false\n\n[[output]]\nname = \"all\"\n{output}\n"),
        &feed_table(&server.url("/news.xml"), ""),
    )
}

#[tokio::test]
async fn webhooks_get_each_new_entry_once_through_failures_and_restarts() {
    let server = FeedServer::start().await;
    server.set("/news.xml", news(&[OLD]));
    server.set("/hook/flaky", Reply::status(200, "ok"));
    server.queue(
        "/hook/flaky",
        vec![Reply::status(500, "down"), Reply::status(503, "still down")],
    );
    server.set("/hook/ok", Reply::status(204, ""));
    server.set("/ntfy/news", Reply::status(200, "{}"));
    let env = env_with_output(
        &server,
        &format!(
            "webhook = [\"{}\", \"{}\"]\nwebhook_secret = \"{SECRET}\"\nntfy = [\"{}\"]",
            server.url("/hook/flaky"),
            server.url("/hook/ok"),
            server.url("/ntfy/news")
        ),
    );
    // What was stored before a target existed is not pushed to it.
    let out = env.cli(&["poll"]);
    assert!(
        stdout(&out).contains("1 new"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let daemon = env.spawn_daemon().await;
    wait_for("the push targets", || targets(&env) == 3).await;
    server.set("/news.xml", news(&[OLD, NEW_A, NEW_B]));
    wait_for("the deliveries", || {
        server.requests("/hook/flaky").len() >= 3
            && !server.requests("/hook/ok").is_empty()
            && !server.requests("/ntfy/news").is_empty()
    })
    .await;
    // Time for a stray second delivery to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The receiver that failed twice got the batch three times, and took
    // it once; the other took it at once. Each new entry, once, signed.
    let flaky = server.requests("/hook/flaky");
    assert_eq!(flaky.len(), 3, "{flaky:?}");
    for seen in [&flaky[2], &server.requests("/hook/ok")[0]] {
        let mut titles = items(seen);
        titles.sort();
        assert_eq!(titles, ["new-alpha", "new-beta"]);
        assert_eq!(seen.method, "POST");
        let signature = seen.headers["x-tributary-signature"].to_str().unwrap();
        let hex = signature.strip_prefix("sha256=").expect("sha256=");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        assert!(
            ring::hmac::verify(&key, &seen.body, &tag).is_ok(),
            "bad signature"
        );
        assert!(seen.headers.contains_key("x-tributary-delivery"));
    }
    // A retry sends the same batch.
    assert_eq!(items(&flaky[0]), items(&flaky[2]));
    assert_eq!(server.requests("/hook/ok").len(), 1);

    // ntfy: one short notice naming the entries.
    let notices = server.requests("/ntfy/news");
    assert_eq!(notices.len(), 1);
    let notice = String::from_utf8_lossy(&notices[0].body).into_owned();
    assert!(
        notice.contains("new-alpha") && notice.contains("new-beta"),
        "{notice}"
    );

    // A restart carries on where delivery stopped: nothing again.
    let (_, log) = daemon.stop();
    assert!(!log.contains(SECRET), "the secret was logged");
    let daemon = env.spawn_daemon().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(server.requests("/hook/flaky").len(), 3);
    assert_eq!(server.requests("/hook/ok").len(), 1);
    assert_eq!(server.requests("/ntfy/news").len(), 1);
    drop(daemon);
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_polling() {
    let server = FeedServer::start().await;
    server.set("/news.xml", news(&[OLD]));
    server.set(
        "/hook/hang",
        Reply::status(200, "late").delayed(Duration::from_secs(120)),
    );
    let env = env_with_output(
        &server,
        &format!("webhook = [\"{}\"]", server.url("/hook/hang")),
    );
    env.cli(&["poll"]);
    let daemon = env.spawn_daemon().await;
    wait_for("the push target", || targets(&env) == 1).await;
    server.set("/news.xml", news(&[OLD, NEW_A]));
    wait_for("the webhook to be called", || {
        !server.requests("/hook/hang").is_empty()
    })
    .await;
    // The receiver has not answered; polls go on and land.
    let polls_before = server.requests("/news.xml").len();
    server.set("/news.xml", news(&[OLD, NEW_A, NEW_B]));
    let atom = format!("{}/feed.atom", env.base_url());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = crate::support::http()
            .get(&atom)
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        if body.contains("new-beta") {
            break;
        }
        assert!(Instant::now() < deadline, "new-beta never landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.requests("/news.xml").len() > polls_before);
    assert_eq!(server.requests("/hook/hang").len(), 1);
    // And the daemon still stops when asked.
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
