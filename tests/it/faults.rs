//! Crash and fault safety with the real binary: SIGKILL at random moments,
//! a full disk, read-only and corrupt database files, and SIGTERM while
//! polls are in flight.
//!
//! The disk-full and read-only tests need a filesystem the test can make
//! full or read-only. As root (CI containers) they mount a small tmpfs or a
//! read-only bind mount, which also stops root; as another user the
//! read-only test uses file permissions, and the disk-full test is skipped
//! with a message (mounting needs root).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::feeds::rss;
use crate::support::{FeedServer, Reply, TestEnv, feed_table, http, run_expecting_exit};

// ------------------------------------------------------------------ helpers

/// Opens the database read-only, as a backup tool would.
fn open_ro(db: &Path) -> Connection {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// `PRAGMA integrity_check` must say exactly "ok".
fn assert_integrity(db: &Path, when: &str) {
    let conn = open_ro(db);
    let mut stmt = conn.prepare("PRAGMA integrity_check").expect("prepare");
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("integrity_check")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(lines, ["ok"], "integrity_check {when}");
}

/// Every stored entry's public id; also checks that no entry is stored
/// twice and none is half-written (an entry without a source row).
fn stored_uids(db: &Path, when: &str) -> HashSet<String> {
    let conn = open_ro(db);
    let dup_keys: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT 1 FROM entry_source
                                   GROUP BY feed_id, entry_key HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .expect("dup keys");
    assert_eq!(dup_keys, 0, "duplicate feed+key {when}");
    let orphans: i64 = conn
        .query_row(
            "SELECT count(*) FROM entry e
             WHERE NOT EXISTS (SELECT 1 FROM entry_source s WHERE s.entry_id = e.id)",
            [],
            |r| r.get(0),
        )
        .expect("orphans");
    assert_eq!(orphans, 0, "entries without a source {when}");
    let mut stmt = conn.prepare("SELECT uid FROM entry").expect("prepare");
    let uids: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("uids")
        .collect::<Result<_, _>>()
        .expect("rows");
    let set: HashSet<String> = uids.iter().cloned().collect();
    assert_eq!(set.len(), uids.len(), "duplicate uid {when}");
    set
}

/// The entry ids of the daemon's merged Atom output; none may repeat.
async fn served_ids(base: &str) -> Option<Vec<String>> {
    let resp = http()
        .get(format!("{base}/feed.atom?limit=500"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let xml = resp.text().await.ok()?;
    let feed = feed_rs::parser::parse(xml.as_bytes()).expect("output parses");
    let ids: Vec<String> = feed.entries.iter().map(|e| e.id.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate ids in the output");
    Some(ids)
}

fn count_entries(db: &Path) -> usize {
    open_ro(db)
        .query_row("SELECT count(*) FROM entry", [], |r| r.get::<_, i64>(0))
        .expect("count") as usize
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Points the environment's config at another database path (relative to
/// the config's directory).
fn use_database(env: &TestEnv, rel: &str) -> PathBuf {
    let text = std::fs::read_to_string(&env.config).expect("read config");
    let text = text.replacen(
        "database = \"tributary.db\"",
        &format!("database = \"{rel}\""),
        1,
    );
    std::fs::write(&env.config, text).expect("write config");
    env.dir.path().join(rel)
}

/// A mount the test made; unmounted (lazily, so a test that failed with
/// files still open cleans up too) when dropped.
struct Mount(PathBuf);

impl Mount {
    /// Runs `mount args…`; `None` (after saying why) when it fails.
    fn new(target: &Path, args: &[&str]) -> Option<Mount> {
        let out = Command::new("mount").args(args).output().ok()?;
        if !out.status.success() {
            eprintln!(
                "mount {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mount(target.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

// ------------------------------------------------------------------ SIGKILL

/// A feed whose newest item changes on every version: item `n` and the
/// four before it.
fn rolling_feed(feed: usize, n: u64) -> Reply {
    let items: Vec<(String, String, String)> = (n.saturating_sub(4)..=n)
        .rev()
        .map(|i| {
            (
                format!("f{feed}-{i}"),
                format!("Feed {feed} item {i}"),
                format!(
                    "<p>Item {i} of feed {feed}. {}</p>",
                    "Some words. ".repeat(20)
                ),
            )
        })
        .collect();
    let items: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    Reply::feed("application/rss+xml", rss(&items))
}

/// Keeps every feed changing (a new item every 150 ms) until dropped.
struct Churn {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Churn {
    fn start(server: Arc<FeedServer>, feeds: usize) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let n = Arc::new(AtomicU64::new(1));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let v = n.fetch_add(1, Ordering::Relaxed);
                    for f in 0..feeds {
                        server.set(&format!("/f{f}.xml"), rolling_feed(f, v));
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        Churn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The crash test: 30 changing feeds polled every second, the
/// daemon SIGKILLed 50 times at random moments (some during start-up),
/// and after every kill the database is sound, nothing served was lost,
/// nothing is duplicated; at the end polling is shown to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    const FEEDS: usize = 30;
    const KILLS: usize = 50;
    let server = Arc::new(FeedServer::start().await);
    for f in 0..FEEDS {
        server.set(&format!("/f{f}.xml"), rolling_feed(f, 0));
    }
    let churn = Churn::start(Arc::clone(&server), FEEDS);
    let feeds: String = (0..FEEDS)
        .map(|f| feed_table(&server.url(&format!("/f{f}.xml")), ""))
        .collect();
    let env = TestEnv::with_poll(
        &[("concurrency", "8"), ("per_host_concurrency", "8")],
        &feeds,
    );
    let db = env.db_path();
    let base = env.base_url();
    let started = Instant::now();

    let mut served: HashSet<String> = HashSet::new();
    let mut startup_kills = 0;
    for round in 0..KILLS {
        // Every fifth kill lands during start-up (opening, migrating,
        // releasing leases), without waiting for the daemon to answer.
        let daemon = if round % 5 == 4 {
            startup_kills += 1;
            let d = env.start_daemon();
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..150))).await;
            d
        } else {
            let d = env.spawn_daemon().await;
            let total = fastrand::u64(50..=400);
            let before_read = fastrand::u64(0..total);
            tokio::time::sleep(Duration::from_millis(before_read)).await;
            if let Some(ids) = served_ids(&base).await {
                served.extend(ids);
            }
            tokio::time::sleep(Duration::from_millis(total - before_read)).await;
            d
        };
        let (status, log) = daemon.kill();
        assert!(
            !log.contains("panicked"),
            "round {round}: the daemon panicked:\n{log}"
        );
        assert!(
            !status.success() && !log.contains("error:") && !log.contains("ERROR"),
            "round {round}: the daemon failed or exited on its own ({status}):\n{log}"
        );
        if !db.exists() {
            continue; // killed before it created the file
        }
        let when = format!("after kill {}", round + 1);
        assert_integrity(&db, &when);
        let stored = stored_uids(&db, &when);
        let lost: Vec<&String> = served.difference(&stored).collect();
        assert!(lost.is_empty(), "{when}: served then lost: {lost:?}");
    }
    eprintln!(
        "{KILLS} kills ({startup_kills} during start-up) in {:.1}s; {} entries served, {} stored",
        started.elapsed().as_secs_f64(),
        served.len(),
        count_entries(&db)
    );
    assert!(
        served.len() > FEEDS,
        "too few entries were served for the test to mean much: {}",
        served.len()
    );

    // Polling resumes: every feed gets new entries after the last restart,
    // including feeds whose poll the last kill interrupted.
    let before = count_entries(&db);
    let restarted_at = chrono::Utc::now().timestamp();
    let daemon = env.spawn_daemon().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let conn = open_ro(&db);
        let fresh: i64 = conn
            .query_row(
                "SELECT count(DISTINCT s.feed_id) FROM entry_source s JOIN entry e ON e.id = s.entry_id
                 WHERE e.first_seen_at >= ?1",
                [restarted_at],
                |r| r.get(0),
            )
            .expect("fresh");
        if fresh as usize == FEEDS {
            break;
        }
        if Instant::now() > deadline {
            let mut stmt = conn
                .prepare(
                    "SELECT id, next_check_at - strftime('%s', 'now'), schedule_reason,
                            error_count, last_error FROM feed",
                )
                .expect("prepare");
            let feeds: Vec<String> = stmt
                .query_map([], |r| {
                    Ok(format!(
                        "{} in {:?}s ({:?}, {} errors: {:?})",
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?
                    ))
                })
                .expect("feeds")
                .collect::<Result<_, _>>()
                .expect("rows");
            panic!(
                "after restart only {fresh} of {FEEDS} feeds got new entries ({before} before):\n{}\n{}",
                feeds.join("\n"),
                daemon.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(churn);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert_integrity(&db, "after the final stop");
    let stored = stored_uids(&db, "after the final stop");
    assert!(served.is_subset(&stored));
}

// ------------------------------------------------------------------ disk full

/// `n` distinct, incompressible-ish paragraphs of about `size` bytes.
fn bulky(tag: &str, size: usize) -> String {
    let mut s = String::with_capacity(size + 16);
    s.push_str("<p>");
    while s.len() < size {
        s.push_str(&format!("{tag}{:016x} ", fastrand::u64(..)));
    }
    s.push_str("</p>");
    s
}

/// Fills the filesystem holding `dir` with one file until it refuses.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0x5a_u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Smaller writes for the last partial chunk.
    while f.write_all(&chunk[..512]).is_ok() {}
    let _ = f.sync_all();
    path
}

/// A real full disk (a 32 MB tmpfs filled to the last byte): the poll that
/// cannot be written is rolled back, the episode is logged once, the
/// daemon keeps serving and answering /healthz (reporting it degraded),
/// does not spin, and writes again once space is freed.
#[tokio::test]
async fn disk_full_pauses_writes_keeps_serving_and_resumes() {
    if !is_root() {
        eprintln!("skipped: simulating a full disk mounts a small tmpfs, which needs root");
        return;
    }
    const FEEDS: usize = 4;
    let server = FeedServer::start().await;
    let old = |f: usize| {
        let items: Vec<(String, String)> = (0..3)
            .map(|i| (format!("f{f}-old{i}"), format!("Old {f}.{i}")))
            .collect();
        let items: Vec<(&str, &str, &str)> = items
            .iter()
            .map(|(g, t)| (g.as_str(), t.as_str(), "<p>small</p>"))
            .collect();
        rss(&items)
    };
    for f in 0..FEEDS {
        server.set(
            &format!("/f{f}.xml"),
            Reply::feed("application/rss+xml", old(f)),
        );
    }
    let feeds: String = (0..FEEDS)
        .map(|f| feed_table(&server.url(&format!("/f{f}.xml")), ""))
        .collect();
    let env = TestEnv::new(&feeds);
    let mnt = env.dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let Some(_mount) = Mount::new(
        &mnt,
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=32m",
            "tmpfs",
            &mnt.to_string_lossy(),
        ],
    ) else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let db = use_database(&env, "small/tributary.db");
    let base = env.base_url();

    let daemon = env.spawn_daemon().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let ids = served_ids(&base).await.unwrap_or_default();
        if ids.len() == FEEDS * 3 {
            break ids;
        }
        assert!(Instant::now() < deadline, "first polls: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The disk fills up; then every feed publishes bulky new entries
    // (each poll ~300 kB of text plus its index: more than the WAL has room for).
    let filler = fill(&mnt);
    for f in 0..FEEDS {
        let items: Vec<(String, String, String)> = (0..3)
            .map(|i| {
                (
                    format!("f{f}-new{i}"),
                    format!("New {f}.{i}"),
                    bulky("w", 100_000),
                )
            })
            .collect();
        let mut all: Vec<(&str, &str, &str)> = items
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        let old_items: Vec<(String, String)> = (0..3)
            .map(|i| (format!("f{f}-old{i}"), format!("Old {f}.{i}")))
            .collect();
        all.extend(
            old_items
                .iter()
                .map(|(g, t)| (g.as_str(), t.as_str(), "<p>small</p>")),
        );
        server.set(
            &format!("/f{f}.xml"),
            Reply::feed("application/rss+xml", rss(&all)),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("database full") {
        assert!(
            Instant::now() < deadline,
            "no 'database full' line: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let several more polls fail (1 s interval) while checking serving.
    let requests_at_full: usize = (0..FEEDS)
        .map(|f| server.requests(&format!("/f{f}.xml")).len())
        .sum();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let health = http()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz answers while the disk is full");
        assert_eq!(health.status(), 200);
        let text = health.text().await.expect("body");
        assert!(text.contains("degraded"), "{text}");
        let ids = served_ids(&base).await.expect("outputs still serve");
        assert_eq!(
            ids, before,
            "the output keeps what it had, nothing half-written"
        );
    }
    let log = daemon.log();
    assert_eq!(
        log.matches("database full").count(),
        1,
        "logged once per episode:\n{log}"
    );
    assert!(
        log.contains("serving existing entries, writes resume when space is freed"),
        "{log}"
    );
    assert!(
        !log.contains("cannot record"),
        "no per-poll error spam:\n{log}"
    );
    // Not spinning: polls go on at the feeds' own pace (1 s), no faster.
    let requests_now: usize = (0..FEEDS)
        .map(|f| server.requests(&format!("/f{f}.xml")).len())
        .sum();
    assert!(
        requests_now - requests_at_full <= FEEDS * 6,
        "{} requests in 3 s",
        requests_now - requests_at_full
    );

    // Space returns: the next polls are written.
    std::fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let ids = served_ids(&base).await.unwrap_or_default();
        if ids.len() == FEEDS * 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume ({} entries): {}",
            ids.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_integrity(&db, "after the disk-full episode");
    stored_uids(&db, "after the disk-full episode");
}

// ------------------------------------------------------- start-up failures

/// Makes a database with a few entries through the real binary.
async fn seeded_env(items: usize) -> (FeedServer, TestEnv) {
    let server = FeedServer::start().await;
    let ids: Vec<(String, String)> = (0..items)
        .map(|i| (format!("g{i}"), format!("Entry {i}")))
        .collect();
    let body = bulky("x", 2000);
    let items: Vec<(&str, &str, &str)> = ids
        .iter()
        .map(|(g, t)| (g.as_str(), t.as_str(), body.as_str()))
        .collect();
    server.set("/a.xml", Reply::feed("application/rss+xml", rss(&items)));
    let env = TestEnv::new(&feed_table(&server.url("/a.xml"), ""));
    (server, env)
}

fn assert_clear_startup_error(env: &TestEnv, db: &Path, needle: &str) -> String {
    let (status, log) = run_expecting_exit(env);
    assert!(!status.success(), "started anyway:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains(&db.display().to_string()),
        "names the file:\n{log}"
    );
    assert!(log.contains(needle), "says {needle:?}:\n{log}");
    log
}

/// A read-only database is refused at start-up with what to do — not
/// opened read-only only to fail on every poll. As root, permissions do
/// not stop writes, so the file sits on a read-only bind mount; otherwise
/// the file and its directory are made read-only.
#[tokio::test]
async fn read_only_database_is_a_clear_startup_error() {
    let (_server, env) = seeded_env(3).await;
    let dir = env.dir.path().join("state");
    std::fs::create_dir(&dir).expect("mkdir");
    let db = use_database(&env, "state/tributary.db");
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let size = std::fs::metadata(&db).expect("db exists").len();

    let _mount;
    if is_root() {
        let d = dir.to_string_lossy().into_owned();
        let Some(m) = Mount::new(&dir, &["--bind", &d, &d]) else {
            eprintln!("skipped: cannot bind-mount here, and root ignores permissions");
            return;
        };
        _mount = m;
        match Mount::new(&dir, &["-o", "remount,ro,bind", &d]) {
            // The same mount as `_mount`, which unmounts it.
            Some(remounted) => std::mem::forget(remounted),
            None => {
                eprintln!("skipped: cannot remount read-only here");
                return;
            }
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).expect("chmod");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    }
    let log = assert_clear_startup_error(&env, &db, "is read-only");
    assert!(log.contains("writable"), "{log}");
    assert_eq!(std::fs::metadata(&db).expect("db").len(), size);
    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    }
}

/// A file that is not a database is refused, and left as it was: never
/// replaced by a silent empty database.
#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_startup_error() {
    let (_server, env) = seeded_env(1).await;
    let db = env.db_path();
    let junk = "these are somebody's notes, not a database\n".repeat(200);
    std::fs::write(&db, &junk).expect("write junk");
    let log = assert_clear_startup_error(&env, &db, "corrupt or not a SQLite database");
    assert!(log.contains("restore a backup"), "{log}");
    assert_eq!(std::fs::read_to_string(&db).expect("still there"), junk);
}

/// A real database with damaged pages (header intact, so it opens and
/// migrates fine) is caught by the start-up check.
#[tokio::test]
async fn a_database_with_damaged_pages_is_a_clear_startup_error() {
    let (_server, env) = seeded_env(60).await;
    let db = env.db_path();
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let mut bytes = std::fs::read(&db).expect("read db");
    assert!(bytes.len() > 8 * 4096, "db too small: {}", bytes.len());
    // Keep page 1 (header and schema); scribble over a run of pages.
    for (i, b) in bytes[3 * 4096..8 * 4096].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&db, &bytes).expect("write damaged db");
    assert_clear_startup_error(&env, &db, "is corrupt");
    assert_eq!(std::fs::read(&db).expect("still there"), bytes);
}

/// A database path that names a directory is a start-up error too.
#[tokio::test]
async fn a_database_path_that_is_a_directory_is_a_clear_startup_error() {
    let (_server, env) = seeded_env(1).await;
    let db = env.db_path();
    std::fs::create_dir(&db).expect("mkdir");
    assert_clear_startup_error(&env, &db, "cannot open database");
}

// ------------------------------------------------------------------ SIGTERM

/// SIGTERM while every feed's poll is in flight on slow servers: the
/// daemon stops, and each feed is either fully updated (state and all new
/// entries, in one transaction) or untouched — never half.
#[tokio::test]
async fn sigterm_during_slow_polls_leaves_each_feed_whole() {
    const FEEDS: usize = 12;
    let server = FeedServer::start().await;
    let items = |f: usize, n: usize| {
        let v: Vec<(String, String)> = (0..n)
            .map(|i| (format!("f{f}-{i}"), format!("Item {f}.{i}")))
            .collect();
        v
    };
    let doc = |f: usize, n: usize| {
        let v = items(f, n);
        let refs: Vec<(&str, &str, &str)> = v
            .iter()
            .map(|(g, t)| (g.as_str(), t.as_str(), "<p>body</p>"))
            .collect();
        rss(&refs)
    };
    for f in 0..FEEDS {
        server.set(
            &format!("/f{f}.xml"),
            Reply::feed("application/rss+xml", doc(f, 2)),
        );
    }
    let feeds: String = (0..FEEDS)
        .map(|f| feed_table(&server.url(&format!("/f{f}.xml")), ""))
        .collect();
    let env = TestEnv::with_poll(
        &[
            ("concurrency", "12"),
            ("per_host_concurrency", "12"),
            ("timeout", "\"4s\""),
        ],
        &feeds,
    );
    let db = env.db_path();
    let daemon = env.spawn_daemon().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_ids(&env.base_url()).await.unwrap_or_default().len() < FEEDS * 2 {
        assert!(Instant::now() < deadline, "first polls: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each feed now publishes three more items, slowly: most answer within
    // the shutdown grace; two hang past the fetch timeout.
    for f in 0..FEEDS {
        let delay = if f < 2 {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(500 + 150 * f as u64)
        };
        server.set(
            &format!("/f{f}.xml"),
            Reply::feed("application/rss+xml", doc(f, 5)).delayed(delay),
        );
    }
    let seen_before: Vec<usize> = (0..FEEDS)
        .map(|f| server.requests(&format!("/f{f}.xml")).len())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..FEEDS).any(|f| server.requests(&format!("/f{f}.xml")).len() <= seen_before[f]) {
        assert!(Instant::now() < deadline, "polls did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_at = Instant::now();
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "stopped {:.1}s after SIGTERM",
        stopped_at.elapsed().as_secs_f64()
    );

    assert_integrity(&db, "after SIGTERM");
    stored_uids(&db, "after SIGTERM");
    let conn = open_ro(&db);
    let mut updated = 0;
    for f in 0..FEEDS {
        let url = server.url(&format!("/f{f}.xml"));
        let keys: HashSet<String> = conn
            .prepare(
                "SELECT s.entry_key FROM entry_source s JOIN feed fd ON fd.id = s.feed_id
                 WHERE fd.url = ?1",
            )
            .expect("prepare")
            .query_map([&url], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let want = |n: usize| -> HashSet<String> {
            items(f, n)
                .into_iter()
                .map(|(g, _)| format!("guid:{g}"))
                .collect()
        };
        if keys == want(5) {
            updated += 1;
        } else {
            assert_eq!(keys, want(2), "feed {f} is half-updated");
        }
    }
    // The fast ones finished within the grace period.
    assert!(
        updated >= FEEDS - 2,
        "only {updated} feeds finished their poll"
    );
}

/// The scheduler leases due feeds ahead of its free slots (four per slot,
/// at most 256, per round trip). On SIGTERM the ones it held but had not
/// started are handed back, due at once: a restart polls them right away
/// instead of after their lease (the fetch timeout plus a minute) runs out.
#[tokio::test]
async fn sigterm_hands_back_feeds_leased_ahead() {
    const FEEDS: usize = 30;
    let server = FeedServer::start().await;
    for f in 0..FEEDS {
        server.set(
            &format!("/f{f}.xml"),
            Reply::feed(
                "application/rss+xml",
                rss(&[(&format!("f{f}"), "Item", "<p>body</p>")]),
            )
            .delayed(Duration::from_secs(2)),
        );
    }
    let feeds: String = (0..FEEDS)
        .map(|f| feed_table(&server.url(&format!("/f{f}.xml")), ""))
        .collect();
    let env = TestEnv::with_poll(
        &[
            ("concurrency", "2"),
            ("per_host_concurrency", "2"),
            ("timeout", "\"10s\""),
        ],
        &feeds,
    );
    let db = env.db_path();
    let daemon = env.spawn_daemon().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = |server: &FeedServer| {
        (0..FEEDS)
            .filter(|f| !server.requests(&format!("/f{f}.xml")).is_empty())
            .count()
    };
    while started(&server) < 2 {
        assert!(
            Instant::now() < deadline,
            "polls did not start: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let asked = started(&server);
    assert!(
        asked < FEEDS,
        "every feed was asked before the stop: {asked}"
    );

    // Never-polled feeds must not sit behind a lease (next check about 70 s
    // away); handed back, they are due now.
    let conn = open_ro(&db);
    let held: i64 = conn
        .query_row(
            "SELECT count(*) FROM feed
             WHERE last_checked_at IS NULL AND next_check_at > unixepoch() + 30",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let unpolled: i64 = conn
        .query_row(
            "SELECT count(*) FROM feed WHERE last_checked_at IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert!(unpolled > 0, "the test needs feeds left unpolled");
    assert_eq!(
        held, 0,
        "{unpolled} unpolled feeds, {held} still leased\n{log}"
    );
}
