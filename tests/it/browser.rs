//! The river page in a real browser (headless Chromium): it renders, shows
//! the entries, and the "More" toggle works without JavaScript. A
//! screenshot is kept as a test artifact.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{FeedServer, Reply, TestEnv, feed_table};

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|n| Path::new("/usr/bin").join(n))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("TRIBUTARY_REQUIRE_CHROMIUM").is_none(),
            "chromium is required (apt-get install chromium)"
        );
        eprintln!("skipping: no chromium installed");
    }
    found
}

fn run_chromium(bin: &Path, profile: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[tokio::test]
async fn the_river_page_renders_in_chromium() {
    let Some(bin) = chromium() else { return };
    let server = FeedServer::start().await;
    let feed = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour News</title><link>https://news.example/</link><description>d</description>
<item><guid>1</guid><title>Breakwater finished two months early</title><link>https://news.example/1</link>
<description><![CDATA[<p>The harbour authority confirmed on Tuesday that the new breakwater will be finished two months ahead of schedule, after crews worked through the calmer autumn weeks.</p><p>Engineers said the structure should protect the fishing fleet from the winter storms that damaged dozens of boats last year, and local fishermen welcomed the news.</p><p>A compensation scheme opens in January.</p>]]></description></item>
<item><guid>2</guid><title>Lighthouse keeper retires after forty years</title><link>https://news.example/2</link><description>Short note.</description></item>
</channel></rss>"#;
    server.set("/feed.xml", Reply::feed("application/rss+xml", feed));
    let env = TestEnv::new(&feed_table(&server.url("/feed.xml"), ""));
    let daemon = env.spawn_daemon().await;
    let url = format!("{}/", env.base_url());
    // Wait for the first poll to land.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !crate::support::http()
        .get(&url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
        .contains("Lighthouse keeper")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no entries on the page"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let profile = tempfile::tempdir().expect("profile dir");
    let dom = run_chromium(&bin, profile.path(), &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("Breakwater finished two months early"),
        "{dom}"
    );
    assert!(dom.contains("Lighthouse keeper retires"), "{dom}");
    assert!(
        dom.contains("<details>") && dom.contains("<summary>More</summary>"),
        "{dom}"
    );

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join("river-phone.png");
    let _ = std::fs::remove_file(&shot);
    let out = run_chromium(
        &bin,
        profile.path(),
        &[
            "--window-size=412,915",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 5_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    drop(daemon);
}
