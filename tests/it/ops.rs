//! Operations: sd_notify (READY, WATCHDOG, RELOADING, STOPPING), SIGHUP
//! reload without a restart, and `backup` of a live database.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::feeds::rss;
use crate::support::{FeedServer, Reply, TestEnv, feed_table, http, read_atom, stderr, stdout};

/// Collects sd_notify datagrams until one contains `want`; returns all seen.
fn wait_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {want} within 20 s; got {seen:?}");
}

async fn get_text(url: &str) -> (u16, String) {
    let resp = http().get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn wait_for_text(url: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get_text(url).await;
        if body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn notifies_ready_after_listening_then_watchdog_reload_and_stopping() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", rss(&[("1", "First", "<p>one</p>")])),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    let sock_path = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let daemon = env.spawn_daemon_with(&[
        ("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8 path")),
        ("WATCHDOG_USEC", "1000000"),
    ]);

    let mut seen = Vec::new();
    let sock = tokio::task::spawn_blocking(move || {
        wait_notify(&sock, "READY=1", &mut seen);
        (sock, seen)
    })
    .await
    .expect("wait for READY");
    let (sock, mut seen) = sock;
    // READY means the listener is bound: /healthz answers right away.
    let (status, _) = get_text(&format!("{}/healthz", env.base_url())).await;
    assert_eq!(status, 200, "READY=1 before the server answered");
    assert!(
        seen.iter().all(|m| !m.contains("WATCHDOG=1")),
        "watchdog before ready: {seen:?}"
    );

    // WatchdogSec=1s: pings every half second while the store answers.
    let started = Instant::now();
    let (sock, mut seen) = tokio::task::spawn_blocking(move || {
        wait_notify(&sock, "WATCHDOG=1", &mut seen);
        wait_notify(&sock, "WATCHDOG=1", &mut seen);
        (sock, seen)
    })
    .await
    .expect("wait for WATCHDOG");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A reload is framed by RELOADING=1 (with its timestamp) and READY=1.
    daemon.signal("HUP");
    let (sock, seen) = tokio::task::spawn_blocking(move || {
        wait_notify(&sock, "RELOADING=1", &mut seen);
        let reloading = seen.last().cloned().unwrap_or_default();
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
        wait_notify(&sock, "READY=1", &mut seen);
        (sock, seen)
    })
    .await
    .expect("wait for reload");

    let (status, err) = daemon.stop();
    assert!(status.success(), "{err}");
    let mut seen = seen;
    wait_notify(&sock, "STOPPING=1", &mut seen);
    assert!(err.contains("systemd watchdog enabled"), "{err}");
}

#[tokio::test]
async fn sighup_adds_a_feed_and_swaps_settings_without_a_restart() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("a1", "Alpha one", "<p>a</p>")]),
        ),
    );
    server.set(
        "/b.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("b1", "Bravo one", "<p>b</p>")]),
        ),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    let mut daemon = env.spawn_daemon().await;
    let pid = daemon.pid();
    let feed_url = format!("{}/feed.atom", env.base_url());
    wait_for_text(&feed_url, "Alpha one").await;
    assert!(server.requests("/b.xml").is_empty());

    // Add a feed, a named output and a new title, then SIGHUP.
    let text = std::fs::read_to_string(&env.config).expect("read config");
    // The listen address cannot change live: logged, old one kept.
    let other = crate::support::free_port();
    let text = text
        .replace("title = \"Test River\"", "title = \"Reloaded River\"")
        .replace(
            &format!("127.0.0.1:{}", env.port),
            &format!("127.0.0.1:{other}"),
        )
        + &feed_table(&server.url("/b.xml"), "tags = [\"bravo\"]")
        + "\n[[output]]\nname = \"bravo\"\ntags = [\"bravo\"]\n";
    std::fs::write(&env.config, text).expect("write config");
    daemon.signal("HUP");

    let xml = wait_for_text(&feed_url, "Bravo one").await;
    assert!(xml.contains("Reloaded River"), "{xml}");
    let named = wait_for_text(&format!("{}/o/bravo.atom", env.base_url()), "Bravo one").await;
    assert!(!named.contains("Alpha one"), "{named}");
    assert!(daemon.is_running());
    assert_eq!(daemon.pid(), pid);

    // Remove feed a: its entries go with it.
    let text = std::fs::read_to_string(&env.config).expect("read config");
    let text = text.replace(&feed_table(&server.url("/a.xml"), ""), "");
    std::fs::write(&env.config, text).expect("write config");
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, xml) = get_text(&feed_url).await;
        if !xml.contains("Alpha one") {
            assert!(xml.contains("Bravo one"));
            break;
        }
        assert!(Instant::now() < deadline, "feed a not removed: {xml}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, err) = daemon.stop();
    assert!(status.success(), "{err}");
    assert!(err.contains("config reloaded"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("server.listen") && l.contains("only after a restart")),
        "{err}"
    );
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_serving_and_polling_on_the_old_one() {
    let server = FeedServer::start().await;
    server.set(
        "/a.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&[("a1", "Alpha one", "<p>a</p>")]),
        ),
    );
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    let mut daemon = env.spawn_daemon().await;
    let feed_url = format!("{}/feed.atom", env.base_url());
    wait_for_text(&feed_url, "Alpha one").await;

    // Two problems: both must be reported.
    let good = std::fs::read_to_string(&env.config).expect("read config");
    let broken = good
        .replace("interval = \"1s\"", "interval = \"soon\"")
        .replace(
            "title = \"Test River\"",
            "title = \"Broken River\"\npage_size = 0",
        );
    std::fs::write(&env.config, &broken).expect("write config");
    daemon.signal("HUP");
    // Give the reload time to happen, then check it kept polling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let polls = server.requests("/a.xml").len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests("/a.xml").len() < polls + 2 {
        assert!(
            Instant::now() < deadline,
            "polling stopped after a bad reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, xml) = get_text(&feed_url).await;
    assert_eq!(status, 200);
    assert!(
        xml.contains("Test River") && !xml.contains("Broken River"),
        "{xml}"
    );
    assert!(daemon.is_running());

    let (status, err) = daemon.stop();
    assert!(status.success(), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.iter().any(|l| l.contains("poll.interval")), "{err}");
    assert!(
        errors.iter().any(|l| l.contains("server.page_size")),
        "{err}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.contains("still running on the previous config")),
        "{err}"
    );
}

#[tokio::test]
async fn backup_of_a_live_database_opens_and_has_the_entries() {
    let server = FeedServer::start().await;
    let items: Vec<(String, String, String)> = (0..60)
        .map(|i| {
            (
                format!("g{i}"),
                format!("Item {i}"),
                format!("<p>{}</p>", "x".repeat(2000)),
            )
        })
        .collect();
    let refs: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    server.set("/a.xml", Reply::feed("application/rss+xml", rss(&refs)));
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    let daemon = env.spawn_daemon().await;
    wait_for_text(
        &format!("{}/feed.atom?limit=100", env.base_url()),
        "Item 59",
    )
    .await;

    // The daemon keeps polling every second meanwhile.
    let copy = env.dir.path().join("copy.db");
    let out = env.cli(&["backup", copy.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("integrity ok"), "{said}");
    assert!(said.contains("KiB") || said.contains("MiB"), "{said}");
    // Not a terminal: no progress line.
    assert!(!stderr(&out).contains('\r'), "{:?}", stderr(&out));
    assert!(!env.dir.path().join("copy.db-wal").exists());

    // An existing file is refused without --force, replaced with it.
    let again = env.cli(&["backup", copy.to_str().expect("utf-8 path")]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    let forced = env.cli(&["backup", "--force", copy.to_str().expect("utf-8 path")]);
    assert!(forced.status.success(), "{}", stderr(&forced));

    let (status, err) = daemon.stop();
    assert!(status.success(), "{err}");
    let (feed, _) = read_atom(&copy).await;
    assert_eq!(feed.entries.len(), 60);
}

/// Runs the daemon with stderr in a file and `JOURNAL_STREAM` set to the
/// file's own device and inode (`matching`) or to something else; returns
/// the log.
async fn daemon_log(env: &TestEnv, matching: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    let log = env.dir.path().join(format!("stderr-{matching}.log"));
    let file = std::fs::File::create(&log).expect("create log");
    let meta = file.metadata().expect("stat");
    let stream = if matching {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        "1:1".to_owned()
    };
    let mut child = env
        .command()
        .arg("run")
        .env("JOURNAL_STREAM", stream)
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn");
    env.wait_healthy().await;
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(child.wait().expect("wait").success());
    std::fs::read_to_string(&log).expect("read log")
}

#[tokio::test]
async fn under_journald_lines_have_priorities_and_no_timestamp() {
    let env = TestEnv::new("");
    let text = daemon_log(&env, true).await;
    let started = text
        .lines()
        .find(|l| l.contains("tributary started"))
        .unwrap_or_else(|| panic!("{text}"));
    // `<6>` (info) and then the level: no timestamp of our own.
    let rest = started
        .strip_prefix("<6>")
        .unwrap_or_else(|| panic!("{started}"));
    assert!(rest.trim_start().starts_with("INFO"), "{started}");
    assert!(
        !text.contains('\x1b'),
        "no colours in the journal: {text:?}"
    );

    // An inherited variable that does not name our stderr changes nothing.
    let text = daemon_log(&env, false).await;
    let started = text
        .lines()
        .find(|l| l.contains("tributary started"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        started.starts_with(|c: char| c.is_ascii_digit()),
        "timestamp first: {started}"
    );
    assert!(
        !text.contains('\x1b'),
        "no colours off a terminal: {text:?}"
    );
}
