//! The polling benchmark: how fast the real daemon polls many feeds.
//!
//! It serves `--feeds N` (default 10,000) distinct RSS feeds of 20 entries
//! each from an in-process server on 127.0.0.1 (its own thread and runtime,
//! bodies rendered up front, a strong ETag per feed and `304` for a matching
//! `If-None-Match`), subscribes a fresh database to all of them through the
//! library, then runs the release `tributary run` against it and measures:
//!
//! 1. the **first cycle**: from spawning the daemon until every feed has been
//!    fetched, parsed and stored once (`last_success_at` set on every row);
//! 2. the **304 cycle**: from then until every feed has been asked again,
//!    answered `304` (counted by the server, requests received after the
//!    first cycle ended) and stored (`last_status = 304` on every row).
//! 3. the **search index catching up**: polls only queue entries for the
//!    index, and the indexer waits while polls arrive flat out (see
//!    `indexer`), as they do here for as long as the daemon runs; so the
//!    bench then waits until the queue is empty and reports how long after
//!    the first cycle that was: the indexer's longest wait (60 s) and the
//!    time to index 200,000 entries.
//!
//! With `interval = "1s"` the daemon is always behind, so each cycle runs it
//! flat out; it polls the most overdue feed first, so the 304 cycle asks
//! every feed once. Progress is read from a read-only SQLite connection every
//! 50 ms. At the end it reports the daemon's peak RSS (`VmHWM`), its CPU time
//! per cycle and the database size, stops the daemon with SIGTERM and checks
//! that it exits 0.
//!
//! With `--runs N` it repeats the whole measurement N times (a fresh
//! database and daemon each time, the same server) and ends with the
//! spread and median of each figure.
//!
//! **`tributary poll`** (`--poll`): each run also measures the one-shot
//! command users run from cron or by hand, on a fresh database of the same
//! feeds, beside the daemon, with the default settings apart from the
//! concurrency limits, full text off and retention off (no schedule
//! settings: `poll` polls every feed whatever its schedule): `tributary
//! poll` once (the first cycle: it
//! exits only with every feed stored and the search index complete, which
//! the bench checks) and once more (every answer a `304`), each timed from
//! spawn to exit, with its CPU time and peak RSS (GNU `time`).
//!
//! **nginx** (`--nginx`, needs `apt-get install nginx`): the feeds are
//! written to files and served by nginx on 127.0.0.1 (one worker, `etag
//! on`, so a matching `If-None-Match` gets a `304`) instead of the
//! in-process server; cycles are then told from the database alone.
//!
//! `cargo bench --bench poll [-- --feeds N --concurrency C --per-host H --runs N --poll --nginx]`;
//! `TRIBUTARY_BIN=path` benchmarks that daemon binary instead of this
//! build's.
//!
//! **A/B comparisons:** with `TRIBUTARY_BIN_B=path` as well, each run
//! measures both daemons back to back (A, then B), and the summary adds
//! B's figures relative to A's, pair by pair. This machine's speed drifts
//! by as much as 40% over tens of minutes, so only figures taken minutes
//! apart are comparable; the median of the paired ratios is. An older
//! build must accept the database that this bench's library creates.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use chrono::Utc;

use tributary::model::{FeedOrigin, FeedSpec};
use tributary::store::Store;

/// Longest either cycle may take before the run is declared stuck.
const CYCLE_LIMIT: Duration = Duration::from_secs(600);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Command-line knobs; unknown arguments (cargo passes `--bench`) are
/// ignored.
struct Opts {
    feeds: usize,
    concurrency: usize,
    per_host: usize,
    /// Whole runs (fresh database, fresh daemon) against the same server.
    /// This machine's speed drifts from minute to minute, so one run says
    /// little; several give a spread and a median.
    runs: usize,
    /// Also measure `tributary poll` (first and 304 cycle) each run.
    poll: bool,
    /// Serve the feeds from nginx instead of the in-process server.
    nginx: bool,
    /// After `tributary poll`'s two cycles, copy its database into a fresh
    /// database on the PostgreSQL server `TRIBUTARY_TEST_POSTGRES` names
    /// with `tributary migrate-db` (implies `--poll`).
    migrate: bool,
    /// The cluster mode (`cluster`): nodes on PostgreSQL beside one node
    /// on SQLite, feeds from nginx on `hosts` loopback addresses.
    postgres: bool,
    /// Node counts to measure on PostgreSQL (`--nodes 1,2,3`).
    nodes: Vec<usize>,
    /// Loopback hosts the feeds are spread over in the cluster mode.
    hosts: usize,
    /// Whether `--per-host` was given (the cluster mode has its own
    /// default).
    per_host_set: bool,
    /// Leave the SQLite node out of the cluster mode.
    no_sqlite: bool,
}

impl Opts {
    fn parse() -> Opts {
        let mut opts = Opts {
            feeds: 10_000,
            concurrency: 64,
            per_host: 64,
            runs: 1,
            poll: false,
            nginx: false,
            migrate: false,
            postgres: false,
            nodes: vec![1, 2, 3],
            hosts: 32,
            per_host_set: false,
            no_sqlite: false,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let target = match a.as_str() {
                "--poll" => {
                    opts.poll = true;
                    continue;
                }
                "--nginx" => {
                    opts.nginx = true;
                    continue;
                }
                "--migrate" => {
                    opts.poll = true;
                    opts.migrate = true;
                    continue;
                }
                "--postgres" => {
                    opts.postgres = true;
                    continue;
                }
                "--no-sqlite" => {
                    opts.no_sqlite = true;
                    continue;
                }
                "--nodes" => {
                    opts.nodes = it
                        .next()
                        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                        .unwrap_or_default();
                    assert!(
                        !opts.nodes.is_empty() && !opts.nodes.contains(&0),
                        "--nodes needs a list of node counts (1,2,3)"
                    );
                    continue;
                }
                "--hosts" => &mut opts.hosts,
                "--per-host" => {
                    opts.per_host_set = true;
                    &mut opts.per_host
                }
                "--feeds" => &mut opts.feeds,
                "--concurrency" => &mut opts.concurrency,
                "--runs" => &mut opts.runs,
                _ => continue,
            };
            *target = it
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a positive number"));
        }
        assert!(opts.feeds > 0, "--feeds must be at least 1");
        assert!(opts.runs > 0, "--runs must be at least 1");
        assert!(
            (1..=254).contains(&opts.hosts),
            "--hosts must be between 1 and 254"
        );
        opts
    }

    /// Requests to one host at a time in the cluster mode: the feeds are
    /// spread over many hosts there, each held to a modest limit.
    fn cluster_per_host(&self) -> usize {
        if self.per_host_set { self.per_host } else { 8 }
    }
}

#[path = "poll/cluster.rs"]
mod cluster;

// ------------------------------------------------------------ the feeds

#[path = "common/feeds.rs"]
mod feeds;
use feeds::{ENTRIES_PER_FEED, render_feed};

// ------------------------------------------------------------ the server

struct Served {
    body: Bytes,
    etag: HeaderValue,
    /// Set by the first 304 this feed gets once `ServerState::marking` is on.
    asked_again: AtomicBool,
}

struct ServerState {
    feeds: Vec<Served>,
    full: AtomicU64,
    not_modified: AtomicU64,
    /// On after the first cycle: 304s from then on count towards the second.
    marking: AtomicBool,
    /// Feeds answered 304 since `marking` went on.
    asked_again: AtomicU64,
}

impl ServerState {
    /// Back to "nothing served yet", for the next run.
    fn reset(&self) {
        self.marking.store(false, Ordering::SeqCst);
        self.full.store(0, Ordering::SeqCst);
        self.not_modified.store(0, Ordering::SeqCst);
        self.asked_again.store(0, Ordering::SeqCst);
        for f in &self.feeds {
            f.asked_again.store(false, Ordering::SeqCst);
        }
    }
}

async fn serve_feed(
    State(state): State<Arc<ServerState>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let feed = name
        .strip_suffix(".xml")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|i| state.feeds.get(i));
    let Some(feed) = feed else {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == feed.etag.as_bytes());
    let mut r = if fresh {
        state.not_modified.fetch_add(1, Ordering::Relaxed);
        if state.marking.load(Ordering::Relaxed) && !feed.asked_again.swap(true, Ordering::Relaxed)
        {
            state.asked_again.fetch_add(1, Ordering::Relaxed);
        }
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        state.full.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(Body::from(feed.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/rss+xml; charset=utf-8"),
        );
        r
    };
    r.headers_mut().insert(header::ETAG, feed.etag.clone());
    r
}

/// Starts the feed server on its own thread and current-thread runtime, so
/// it never competes with the daemon for a tokio worker.
fn start_server(state: Arc<ServerState>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind feed server");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    std::thread::Builder::new()
        .name("feed-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new()
                    .route("/f/{name}", get(serve_feed))
                    .with_state(state);
                axum::serve(listener, app).await.expect("feed server");
            });
        })
        .expect("spawn server thread");
    addr
}

// ------------------------------------------------------------ the daemon

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Which process the config is for: the daemon runs flat out (every feed
/// due every second), `tributary poll` with the defaults for the rest.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Daemon,
    Poll,
}

fn write_config(dir: &Path, opts: &Opts, mode: Mode) -> (PathBuf, String) {
    // `tributary poll` polls every feed once whatever its schedule, so it
    // gets the defaults apart from the limits under test; the daemon needs
    // every feed due again at once for its 304 cycle.
    let schedule = match mode {
        Mode::Daemon => {
            "interval = \"1s\"\n\
             min_interval = \"1s\"\n\
             adaptive = false\n\
             timeout = \"30s\"\n"
        }
        Mode::Poll => "",
    };
    let poll = format!(
        "{schedule}\
         concurrency = {}\n\
         per_host_concurrency = {}\n\
         per_host_spacing = \"0s\"\n",
        opts.concurrency, opts.per_host
    );
    // The documents are dated March 2026 (fixed, so runs compare): past the
    // default retention, which would purge them mid-run once housekeeping
    // starts. The bench measures polling, so it keeps every entry.
    let text = format!(
        "database = \"tributary.db\"\n\n\
         [server]\nlisten = \"127.0.0.1:{}\"\n\n\
         [poll]\n{poll}\n\
         [extract]\nfull_text = false\n\n\
         [retention]\nmax_age = \"0s\"\n\n\
         [network]\nallow = [\"127.0.0.1\"]\n\n\
         [log]\nlevel = \"info\"\n",
        free_port()
    );
    let path = dir.join("tributary.toml");
    std::fs::write(&path, &text).expect("write config");
    (path, poll)
}

/// Subscribes the database to every feed in one `add_feeds` call, through
/// the library, before the daemon starts.
fn subscribe(db: &Path, addr: SocketAddr, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::open(db).await.expect("open store");
        let specs = (0..n)
            .map(|i| FeedSpec {
                url: format!("http://{addr}/f/{i}.xml"),
                title: None,
                tags: vec![],
                interval: None,
                full_text: None,
                request: Default::default(),
                rules: Default::default(),
                page: None,
            })
            .collect();
        store
            .add_feeds(specs, FeedOrigin::Cli, Utc::now())
            .await
            .expect("add feeds");
        store.close().await.expect("close store");
    });
}

/// Pages of CPU time (user + system) the process has used, in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may
    // contain spaces: utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `VmHWM` (peak resident set) from /proc, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `wchar` (bytes passed to write calls) and `write_bytes` (bytes sent to
/// storage) from /proc/<pid>/io, in bytes.
fn written(pid: u32) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn db_size(db: &Path) -> (u64, u64) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    (file_size(db), file_size(&wal))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Counts rows of `feed` matching `cond`; 0 while the database is busy.
fn count(conn: &rusqlite::Connection, cond: &str) -> u64 {
    conn.query_row(
        &format!("SELECT count(*) FROM feed WHERE {cond}"),
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
    .unwrap_or_else(|e| {
        eprintln!("count failed: {e}");
        0
    })
}

/// Waits until `done` holds, checking every [`SAMPLE_EVERY`]; panics if the
/// daemon exits or the cycle takes longer than [`CYCLE_LIMIT`].
fn wait_until(child: &mut Child, what: &str, mut done: impl FnMut() -> bool) -> Instant {
    let start = Instant::now();
    loop {
        if done() {
            return Instant::now();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("daemon exited ({status}) during the {what}");
        }
        if start.elapsed() > CYCLE_LIMIT {
            let _ = child.kill();
            panic!("the {what} did not finish within {CYCLE_LIMIT:?}");
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

fn main() {
    let opts = Opts::parse();
    let n = opts.feeds;
    let ticks = clock_ticks();

    let rendered = Instant::now();
    // Links point at the publisher's site, not at the feed server.
    let site = "https://bench.example";
    let feeds: Vec<Served> = (0..n)
        .map(|i| Served {
            body: Bytes::from(render_feed(i, site)),
            etag: HeaderValue::from_str(&format!("\"feed-{i}-v1\"")).expect("etag"),
            asked_again: AtomicBool::new(false),
        })
        .collect();
    let body_bytes: usize = feeds.iter().map(|f| f.body.len()).sum();
    let state = Arc::new(ServerState {
        feeds,
        full: AtomicU64::new(0),
        not_modified: AtomicU64::new(0),
        marking: AtomicBool::new(false),
        asked_again: AtomicU64::new(0),
    });
    if opts.postgres {
        return cluster_main(&opts, &state.feeds, body_bytes, ticks);
    }
    let nginx = opts.nginx.then(|| Nginx::start(&state.feeds, 1));
    let addr = match &nginx {
        Some(n) => n.addr,
        None => start_server(Arc::clone(&state)),
    };
    eprintln!(
        "rendered {n} feeds ({:.1} MiB, {:.1} KiB each) in {:.1?}; serving on {addr}",
        mib(body_bytes as u64),
        body_bytes as f64 / n as f64 / 1024.0,
        rendered.elapsed()
    );
    // `TRIBUTARY_BIN` runs another build (an older commit, for an A/B
    // comparison on the same machine minutes apart).
    let a = std::env::var("TRIBUTARY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tributary").to_owned());
    let b = std::env::var("TRIBUTARY_BIN_B").ok();
    let mut runs_a = Vec::with_capacity(opts.runs);
    let mut runs_b = Vec::with_capacity(opts.runs);
    let mut polls_a = Vec::new();
    let mut polls_b = Vec::new();
    for run in 1..=opts.runs {
        if opts.runs > 1 || b.is_some() {
            println!("\n## run {run} of {}, A\n", opts.runs);
        }
        if opts.poll {
            settle();
            polls_a.push(poll_once(&opts, &a, addr, ticks));
        }
        settle();
        state.reset();
        runs_a.push(run_once(&opts, &a, &state, addr, body_bytes, ticks));
        if let Some(b) = &b {
            println!("\n## run {run} of {}, B\n", opts.runs);
            if opts.poll {
                settle();
                polls_b.push(poll_once(&opts, b, addr, ticks));
            }
            settle();
            state.reset();
            runs_b.push(run_once(&opts, b, &state, addr, body_bytes, ticks));
        }
    }
    drop(nginx);
    if opts.poll {
        poll_table("A", &polls_a, &runs_a);
        if b.is_some() {
            poll_table("B", &polls_b, &runs_b);
            compare_polls(&polls_a, &polls_b);
        }
    }
    if let Some(b) = &b {
        println!("\nA: {a}\nB: {b}");
    }
    if opts.runs > 1 || b.is_some() {
        summarise("A", &runs_a);
    }
    if b.is_some() {
        summarise("B", &runs_b);
        compare(&runs_a, &runs_b);
    }
    if runs_a.iter().chain(&runs_b).any(|r| !r.ok) || polls_a.iter().chain(&polls_b).any(|p| !p.ok)
    {
        std::process::exit(1);
    }
}

/// The cluster mode: every measurement of every run, then the medians.
fn cluster_main(opts: &Opts, feeds: &[Served], body_bytes: usize, ticks: f64) {
    use cluster::Backend;
    let n = opts.feeds;
    let nginx = Nginx::start(feeds, opts.hosts);
    let urls = cluster::feed_urls(n, &nginx.addrs);
    let a = std::env::var("TRIBUTARY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tributary").to_owned());
    let b = std::env::var("TRIBUTARY_BIN_B").ok();
    let mut backends = Vec::new();
    if !opts.no_sqlite {
        backends.push(Backend::Sqlite);
    }
    backends.extend(opts.nodes.iter().map(|&nodes| Backend::Postgres { nodes }));
    println!("# tributary cluster benchmark");
    println!(
        "feeds: {n} x {ENTRIES_PER_FEED} entries, {:.1} KiB each, served by nginx (one worker) \
         on {} loopback hosts ({} ... {}), feed i on host i mod {}",
        body_bytes as f64 / n as f64 / 1024.0,
        nginx.addrs.len(),
        nginx.addrs[0],
        nginx.addrs[nginx.addrs.len() - 1],
        nginx.addrs.len()
    );
    println!("nodes: `tributary run`, each with these [poll] settings:");
    for line in cluster::poll_settings(opts).lines() {
        println!("    {line}");
    }
    println!("    [extract] full_text = false; [retention] max_age = \"0s\"");
    println!("PostgreSQL: {}", cluster::server_settings());
    match &b {
        Some(b) => println!("A: {a}\nB: {b}"),
        None => println!("binary: {a}"),
    }
    let mut all_a = Vec::new();
    let mut all_b = Vec::new();
    for run in 1..=opts.runs {
        for &backend in &backends {
            all_a.push(cluster::measure(opts, &a, backend, &urls, ticks, run, "A"));
            if let Some(b) = &b {
                all_b.push(cluster::measure(opts, b, backend, &urls, ticks, run, "B"));
            }
        }
    }
    drop(nginx);
    cluster::summarise(n, &all_a, "A");
    if b.is_some() {
        cluster::summarise(n, &all_b, "B");
        cluster::compare(&all_a, &all_b);
    }
    if !cluster::all_ok(&all_a) || !cluster::all_ok(&all_b) {
        std::process::exit(1);
    }
}

/// Writes the previous run's dirty pages (over a gigabyte) to storage
/// before the next run starts, so that run does not pay for their
/// writeback; seen as a load average of 4 to 5 by the third run without it.
fn settle() {
    if let Err(e) = Command::new("sync").status() {
        eprintln!("sync before the run failed: {e}");
    }
}

/// B's figures over A's, run by run (each pair measured minutes apart),
/// with the median ratio: the figure an A/B comparison should quote.
fn compare(a: &[RunResult], b: &[RunResult]) {
    type Figure = fn(&RunResult) -> f64;
    let rows: [(&str, Figure); 4] = [
        ("first cycle, feeds/s", |r| r.first_rate),
        ("first cycle, daemon CPU s", |r| r.first_cpu),
        ("304 cycle, feeds/s", |r| r.second_rate),
        ("peak RSS, MiB", |r| r.rss_mib),
    ];
    println!("\n## B / A, pair by pair\n");
    println!("| figure | each pair | median |");
    println!("|---|---|---|");
    for (name, f) in rows {
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| f(b) / f(a)).collect();
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!("| {name} | {} | {:.3} |", each.join(" "), median(ratios));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One run's headline figures, for the summary.
struct RunResult {
    first_rate: f64,
    first_cpu: f64,
    second_rate: f64,
    second_cpu: f64,
    /// From the end of the first cycle until the search index held every
    /// entry.
    index_lag: f64,
    rss_mib: f64,
    ok: bool,
}

/// Min, median and max of each figure over the runs.
fn summarise(label: &str, runs: &[RunResult]) {
    let stats = |f: &dyn Fn(&RunResult) -> f64| {
        let v: Vec<f64> = runs.iter().map(f).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, median(v), hi)
    };
    println!("\n## summary of {} runs, {label}\n", runs.len());
    println!("| figure | min | median | max | target |");
    println!("|---|---|---|---|---|");
    type Figure = fn(&RunResult) -> f64;
    // (figure, value, decimals shown, target)
    let rows: [(&str, Figure, usize, &str); 6] = [
        ("first cycle, feeds/s", |r| r.first_rate, 0, ">= 1500"),
        ("first cycle, daemon CPU s", |r| r.first_cpu, 1, ""),
        ("304 cycle, feeds/s", |r| r.second_rate, 0, ">= 5000"),
        ("304 cycle, daemon CPU s", |r| r.second_cpu, 1, ""),
        (
            "search index caught up after first cycle, s",
            |r| r.index_lag,
            1,
            "",
        ),
        ("peak RSS, MiB", |r| r.rss_mib, 1, "< 100"),
    ];
    for (name, f, d, target) in rows {
        let (lo, mid, hi) = stats(&f);
        println!("| {name} | {lo:.d$} | {mid:.d$} | {hi:.d$} | {target} |");
    }
}

fn run_once(
    opts: &Opts,
    bin: &str,
    state: &ServerState,
    addr: SocketAddr,
    body_bytes: usize,
    ticks: f64,
) -> RunResult {
    let n = opts.feeds;
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("working directory: {}", dir.path().display());
    let (config, poll) = write_config(dir.path(), opts, Mode::Daemon);
    let db = dir.path().join("tributary.db");
    subscribe(&db, addr, n);
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log file");

    println!("# tributary polling benchmark");
    println!(
        "feeds: {n} x {ENTRIES_PER_FEED} entries, {:.1} KiB each, one host ({addr}), in-process server on its own thread",
        body_bytes as f64 / n as f64 / 1024.0
    );
    println!("daemon: {bin} run, log level info to a file");
    println!("[poll] settings:");
    for line in poll.lines() {
        println!("    {line}");
    }
    println!("    [extract] full_text = false");
    println!("    [retention] max_age = \"0s\"");

    let load_before = load_average();
    let spawned = Instant::now();
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("TRIBUTARY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn daemon");
    let pid = child.id();
    eprintln!("daemon pid {pid}");
    let bench_cpu_start = cpu_seconds(std::process::id(), ticks);

    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open database read-only");
    conn.busy_timeout(Duration::from_secs(1))
        .expect("busy timeout");

    let n64 = n as u64;
    // Every feed must have been served once before the cycle can be
    // done, and the count scans the whole feed table: checked only then,
    // so the monitor does not take CPU from the daemon it measures.
    let counted = !opts.nginx;
    let first_done = wait_until(&mut child, "first cycle", || {
        (!counted || state.full.load(Ordering::SeqCst) >= n64)
            && count(&conn, "last_success_at IS NOT NULL") >= n64
    });
    state.marking.store(true, Ordering::SeqCst);
    let cpu_first = cpu_seconds(pid, ticks);
    let bench_cpu_first = cpu_seconds(std::process::id(), ticks) - bench_cpu_start;
    let full_first = state.full.load(Ordering::SeqCst);
    let nm_first = state.not_modified.load(Ordering::SeqCst);
    let rss_first = peak_rss_kib(pid);
    let (db_first, wal_first) = db_size(&db);

    let second_done = wait_until(&mut child, "304 cycle", || {
        (!counted || state.asked_again.load(Ordering::SeqCst) >= n64)
            && count(&conn, "last_status = 304") >= n64
    });
    let cpu_second = cpu_seconds(pid, ticks) - cpu_first;
    let full_second = state.full.load(Ordering::SeqCst) - full_first;
    let nm_second = state.not_modified.load(Ordering::SeqCst) - nm_first;
    let (wchar, write_bytes) = written(pid);
    let (db_bytes, wal_bytes) = db_size(&db);
    // Polls only queue entries for the search index, and the indexer
    // waits (at most a minute) while polls arrive flat out, as they do
    // here for as long as the daemon runs. A daemon from before the queue
    // indexes inline: the query fails on it, and it counts as caught up.
    let indexed = wait_until(&mut child, "search indexing", || {
        conn.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM search_pending)",
            [],
            |r| r.get::<_, bool>(0),
        )
        .unwrap_or(true)
    });
    // A high-water mark: the whole run, indexing included.
    let rss = peak_rss_kib(pid);
    let failed = count(&conn, "last_error IS NOT NULL");
    let entries: i64 = conn
        .query_row("SELECT count(*) FROM entry", [], |r| r.get(0))
        .unwrap_or(0);
    drop(conn);

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > stop_deadline {
            let _ = child.kill();
            panic!("daemon did not stop within 60s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (db_after, wal_after) = db_size(&db);

    let t1 = first_done - spawned;
    let t2 = second_done - first_done;
    let lag = indexed.saturating_duration_since(first_done);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!();
    println!("| cycle | time | feeds/s | target | daemon CPU | requests (200 / 304) |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| first (fetch, parse, store) | {:.2} s | {:.0} | >= 1500 | {:.1} s | {} / {} |",
        t1.as_secs_f64(),
        rate(t1),
        cpu_first,
        full_first,
        nm_first
    );
    println!(
        "| second (all 304) | {:.2} s | {:.0} | >= 5000 | {:.1} s | {} / {} |",
        t2.as_secs_f64(),
        rate(t2),
        cpu_second,
        full_second,
        nm_second
    );
    println!(
        "| search index caught up | {:.2} s after the first cycle | | waits <= 60 s, then indexes | | |",
        lag.as_secs_f64()
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| peak RSS (VmHWM) | {:.1} MiB (after first cycle {:.1} MiB) | < 100 MiB |",
        rss as f64 / 1024.0,
        rss_first as f64 / 1024.0
    );
    println!(
        "| database after first cycle | {:.1} MiB db + {:.1} MiB wal | |",
        mib(db_first),
        mib(wal_first)
    );
    println!(
        "| database after 304 cycle | {:.1} MiB db + {:.1} MiB wal | |",
        mib(db_bytes),
        mib(wal_bytes)
    );
    println!(
        "| database after shutdown | {:.1} MiB db + {:.1} MiB wal | |",
        mib(db_after),
        mib(wal_after)
    );
    println!(
        "| entries stored | {entries} (expected {}) | |",
        n * ENTRIES_PER_FEED
    );
    println!(
        "| bench process CPU in the first cycle (load server, progress checks) | {bench_cpu_first:.1} s | |"
    );
    println!("| feeds with an error | {failed} | 0 |");
    println!("| daemon log | {:.1} MiB | |", mib(file_size(&log_path)));
    println!(
        "| daemon writes (both cycles) | {:.0} MiB written, {:.0} MiB to storage | |",
        mib(wchar),
        mib(write_bytes)
    );
    println!(
        "| machine load average (1/5/15 min) | {load_before} before, {} after | |",
        load_average()
    );
    println!("| daemon exit after SIGTERM | {status} | 0 |");
    let _ = std::io::stdout().flush();

    let mut ok = true;
    if !status.success() {
        eprintln!("FAIL: daemon exited with {status}");
        ok = false;
    }
    if failed > 0 || entries != (n * ENTRIES_PER_FEED) as i64 {
        eprintln!("FAIL: {failed} feeds failed, {entries} entries stored");
        ok = false;
    }
    if !ok {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(20).collect();
        for l in tail.into_iter().rev() {
            eprintln!("  {l}");
        }
    }
    RunResult {
        first_rate: rate(t1),
        first_cpu: cpu_first,
        second_rate: rate(t2),
        second_cpu: cpu_second,
        index_lag: lag.as_secs_f64(),
        rss_mib: rss as f64 / 1024.0,
        ok,
    }
}

// ------------------------------------------------------------ nginx

/// nginx serving the rendered feeds from files, on its own port, until
/// dropped.
struct Nginx {
    addr: SocketAddr,
    /// Every address it serves on: `127.0.0.1` for one host, else
    /// `127.0.1.1`, `127.0.1.2`, … (one port), which the daemon's
    /// per-host limits count as different hosts.
    addrs: Vec<SocketAddr>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(feeds: &[Served], hosts: usize) -> Nginx {
        let dir = tempfile::tempdir().expect("nginx dir");
        let root = dir.path().join("root/f");
        std::fs::create_dir_all(&root).expect("nginx root");
        for (i, f) in feeds.iter().enumerate() {
            std::fs::write(root.join(format!("{i}.xml")), &f.body).expect("write feed file");
        }
        let port = free_port();
        let addrs: Vec<SocketAddr> = if hosts <= 1 {
            vec![SocketAddr::from(([127, 0, 0, 1], port))]
        } else {
            (1..=hosts)
                .map(|h| SocketAddr::from(([127, 0, 1, h as u8], port)))
                .collect()
        };
        let listen: String = addrs.iter().map(|a| format!("listen {a}; ")).collect();
        let d = dir.path().display();
        // One worker, as a small server would run it; ETags on (nginx's
        // default) so a matching If-None-Match is a 304.
        let conf = format!(
            "worker_processes 1;\ndaemon off;\nuser root;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  etag on;\n  keepalive_requests 1000000;\n\
               types {{ application/rss+xml xml; }}\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               server {{ {listen}root {d}/root; }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .spawn()
            .expect("start nginx (apt-get install nginx)");
        let addr = addrs[0];
        let deadline = Instant::now() + Duration::from_secs(10);
        while addrs
            .iter()
            .any(|a| std::net::TcpStream::connect(a).is_err())
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: see {d}/error.log"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            addr,
            addrs,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ tributary poll

/// One `tributary poll` measurement: a fresh database polled twice.
struct PollResult {
    first_secs: f64,
    first_cpu: f64,
    second_secs: f64,
    second_cpu: f64,
    /// Peak RSS of either process, MiB.
    rss_mib: f64,
    n: usize,
    ok: bool,
}

impl PollResult {
    fn first_rate(&self) -> f64 {
        self.n as f64 / self.first_secs
    }
    fn second_rate(&self) -> f64 {
        self.n as f64 / self.second_secs
    }
}

/// Runs `bin --config config poll` under GNU time: wall seconds, CPU
/// seconds (user + system), peak RSS in KiB, success.
fn timed_poll(bin: &str, config: &Path, dir: &Path, label: &str) -> (f64, f64, u64, bool) {
    timed(bin, config, dir, label, &["poll"])
}

/// Runs `bin --config config ARGS` as [`timed_poll`] does.
fn timed(
    bin: &str,
    config: &Path,
    dir: &Path,
    label: &str,
    args: &[&str],
) -> (f64, f64, u64, bool) {
    let time_file = dir.join(format!("{label}.time"));
    let out = std::fs::File::create(dir.join(format!("{label}.out"))).expect("poll output file");
    let err = std::fs::File::create(dir.join(format!("{label}.log"))).expect("poll log file");
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(&time_file)
        .arg(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TRIBUTARY_CONFIG")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .status()
        .expect("run tributary poll under /usr/bin/time");
    let secs = started.elapsed().as_secs_f64();
    let t = std::fs::read_to_string(&time_file).unwrap_or_default();
    let f: Vec<f64> = t
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let (rss, cpu) = match f.as_slice() {
        [rss, user, sys] => (*rss as u64, user + sys),
        _ => (0, f64::NAN),
    };
    (secs, cpu, rss, status.success())
}

fn poll_once(opts: &Opts, bin: &str, addr: SocketAddr, _ticks: f64) -> PollResult {
    let n = opts.feeds;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, poll) = write_config(dir.path(), opts, Mode::Poll);
    let db = dir.path().join("tributary.db");
    subscribe(&db, addr, n);
    println!("# tributary poll: {bin} poll, {n} feeds ({addr})");
    println!("[poll] settings (the rest default):");
    for line in poll.lines() {
        println!("    {line}");
    }
    println!("    [extract] full_text = false");
    println!("    [retention] max_age = \"0s\"");
    let (first_secs, first_cpu, rss1, ok1) = timed_poll(bin, &config, dir.path(), "first");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database read-only");
    let entries: i64 = conn
        .query_row("SELECT count(*) FROM entry", [], |r| r.get(0))
        .unwrap_or(0);
    // `poll` leaves the search index complete: nothing queued, every
    // entry in it. (A build from before the queue has no such table.)
    let queued: i64 = conn
        .query_row("SELECT count(*) FROM search_pending", [], |r| r.get(0))
        .unwrap_or(0);
    // Every entry in the index: the contentless index keeps one size row
    // per document it holds.
    let indexed: i64 = conn
        .query_row("SELECT count(*) FROM entry_fts_docsize", [], |r| r.get(0))
        .unwrap_or(0);
    let stored = count(&conn, "last_status = 200");
    drop(conn);
    let (second_secs, second_cpu, rss2, ok2) = timed_poll(bin, &config, dir.path(), "second");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database read-only");
    let not_modified = count(&conn, "last_status = 304");
    drop(conn);
    let expected = (n * ENTRIES_PER_FEED) as i64;
    let ok = ok1
        && ok2
        && entries == expected
        && queued == 0
        && indexed == expected
        && stored == n as u64
        && not_modified == n as u64;
    if opts.migrate {
        migrate_once(bin, &config, dir.path(), &db, n);
    }
    if !ok {
        eprintln!(
            "FAIL: poll exit ok {ok1}/{ok2}, {entries} entries (expected {expected}), \
             {queued} queued for the index, {indexed} indexed, {stored} stored 200, {not_modified} 304; see {}",
            dir.path().display()
        );
        // Kept for a look.
        let _ = dir.keep();
    }
    let r = PollResult {
        first_secs,
        first_cpu,
        second_secs,
        second_cpu,
        rss_mib: rss1.max(rss2) as f64 / 1024.0,
        n,
        ok,
    };
    println!();
    println!("| `tributary poll` | time | feeds/s | target | CPU | peak RSS |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| first (fetch, parse, store, index: {queued} left queued) | {:.2} s | {:.0} | >= 1500 | {:.1} s | {:.1} MiB |",
        r.first_secs,
        r.first_rate(),
        r.first_cpu,
        rss1 as f64 / 1024.0
    );
    println!(
        "| second (all 304) | {:.2} s | {:.0} | >= 8000 | {:.1} s | {:.1} MiB |",
        r.second_secs,
        r.second_rate(),
        r.second_cpu,
        rss2 as f64 / 1024.0
    );
    println!();
    r
}

/// `tributary migrate-db` of the polled database into a fresh PostgreSQL
/// database: time, CPU, peak RSS, and the size on both sides.
fn migrate_once(bin: &str, config: &Path, dir: &Path, db: &Path, n: usize) {
    let Ok(server) = std::env::var("TRIBUTARY_TEST_POSTGRES") else {
        eprintln!("--migrate: SKIPPED (TRIBUTARY_TEST_POSTGRES is not set)");
        return;
    };
    let name = format!("tributary_bench_{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin = |sql: String| {
        let server = server.clone();
        runtime.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
                .await
                .expect("connect to TRIBUTARY_TEST_POSTGRES");
            tokio::spawn(conn);
            let rows = client.query(&sql, &[]).await.expect("admin query");
            rows.first().and_then(|r| r.try_get::<_, i64>(0).ok())
        })
    };
    admin(format!("CREATE DATABASE \"{name}\""));
    let mut url = url::Url::parse(&server).expect("server URL");
    url.set_path(&format!("/{name}"));
    let (secs, cpu, rss, ok) = timed(
        bin,
        config,
        dir,
        "migrate",
        &["migrate-db", "--to", url.as_str()],
    );
    let pg_bytes = admin(format!("SELECT pg_database_size('{name}')")).unwrap_or(0);
    admin(format!("DROP DATABASE \"{name}\" WITH (FORCE)"));
    let lite_bytes = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    let rows = (n * ENTRIES_PER_FEED) as f64;
    println!();
    println!(
        "| `tributary migrate-db` | time | entries/s | CPU (tributary) | peak RSS | SQLite | PostgreSQL |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} feeds x {ENTRIES_PER_FEED} entries{} | {secs:.2} s | {:.0} | {cpu:.1} s | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
        if ok { "" } else { " (FAILED, see migrate.log)" },
        rows / secs,
        rss as f64 / 1024.0,
        mib(lite_bytes),
        mib(u64::try_from(pg_bytes).unwrap_or(0)),
    );
    if !ok {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.join("migrate.log")).unwrap_or_default()
        );
    }
}

/// `tributary poll` beside the daemon, median of the runs.
fn poll_table(label: &str, polls: &[PollResult], daemon: &[RunResult]) {
    let med = |v: Vec<f64>| median(v);
    println!(
        "\n## `tributary poll` and the daemon, {label}, median of {} runs\n",
        polls.len()
    );
    println!("| figure | `tributary poll` | daemon (`run`) | target (poll) |");
    println!("|---|---|---|---|");
    println!(
        "| first cycle, feeds/s | {:.0} | {:.0} (index deferred) | >= 1500, index complete at exit |",
        med(polls.iter().map(PollResult::first_rate).collect()),
        med(daemon.iter().map(|r| r.first_rate).collect())
    );
    println!(
        "| first cycle, CPU s | {:.1} | {:.1} | |",
        med(polls.iter().map(|p| p.first_cpu).collect()),
        med(daemon.iter().map(|r| r.first_cpu).collect())
    );
    println!(
        "| 304 cycle, feeds/s | {:.0} | {:.0} | >= 8000 |",
        med(polls.iter().map(PollResult::second_rate).collect()),
        med(daemon.iter().map(|r| r.second_rate).collect())
    );
    println!(
        "| 304 cycle, CPU s | {:.1} | {:.1} | |",
        med(polls.iter().map(|p| p.second_cpu).collect()),
        med(daemon.iter().map(|r| r.second_cpu).collect())
    );
    println!(
        "| peak RSS, MiB | {:.1} | {:.1} | <= 100 |",
        med(polls.iter().map(|p| p.rss_mib).collect()),
        med(daemon.iter().map(|r| r.rss_mib).collect())
    );
}

/// B's `tributary poll` figures over A's, pair by pair.
fn compare_polls(a: &[PollResult], b: &[PollResult]) {
    type Figure = fn(&PollResult) -> f64;
    let rows: [(&str, Figure); 5] = [
        ("poll first cycle, feeds/s", PollResult::first_rate),
        ("poll first cycle, CPU s", |p| p.first_cpu),
        ("poll 304 cycle, feeds/s", PollResult::second_rate),
        ("poll 304 cycle, CPU s", |p| p.second_cpu),
        ("poll peak RSS, MiB", |p| p.rss_mib),
    ];
    println!("\n## `tributary poll`, B / A, pair by pair\n");
    println!("| figure | each pair | median |");
    println!("|---|---|---|");
    for (name, f) in rows {
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| f(b) / f(a)).collect();
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!("| {name} | {} | {:.3} |", each.join(" "), median(ratios));
    }
}
