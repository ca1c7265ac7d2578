//! The cluster mode of the poll bench (`--postgres`): the same feeds,
//! served by nginx from many loopback hosts, polled by N `tributary run`
//! nodes sharing one fresh PostgreSQL database, beside one node on a
//! SQLite file.
//!
//! Each measurement (a backend and a node count) gets a fresh database
//! subscribed to every feed, then:
//!
//! 1. the **first cycle**: from spawning the nodes until every feed has
//!    been fetched, parsed and stored once, then until the search index
//!    holds every entry (its CPU counts with the cycle's: each new entry
//!    is indexed once);
//! 2. the **304 cycle**: the bench makes every feed due at once (one
//!    `UPDATE feed SET next_check_at = 0`, its only write to the daemon's
//!    data) and reloads the nodes (SIGHUP, so none waits out its idle
//!    look), then waits until every feed is recorded with a `304`.
//!
//! The nodes poll with `interval = "1h"`, so nothing else is polled
//! between the cycles. Progress is read every 250 ms over one connection
//! of the bench's own, whose backend CPU is subtracted from PostgreSQL's.
//! For each phase it reports wall time, feeds/s, the CPU time of the nodes
//! together and of the PostgreSQL server (its postmaster and every child
//! process, live ones from `/proc/<pid>/stat`, ended ones through the
//! postmaster's `cutime`/`cstime`; only when the server runs on this
//! machine), the WAL written, and at the end the database size
//! (`pg_database_size` and the live-row measure `max_database_size`
//! caps; the file for SQLite) and each node's peak RSS.
//!
//! Wall time does not scale with nodes on a machine where every node and
//! PostgreSQL share the same few cores; CPU per feed does carry to a
//! bigger machine, and is what the README's sizing is computed from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

use tributary::database::Database;
use tributary::model::{FeedOrigin, FeedSpec};
use tributary::store::Store;

use super::feeds::ENTRIES_PER_FEED;
use super::{Opts, cpu_seconds, free_port, load_average, median, mib, peak_rss_kib};

/// Longest a phase may take before the run is declared stuck.
const PHASE_LIMIT: Duration = Duration::from_secs(900);
/// How often progress is read: a count over the feed table each time, so
/// not so often that the bench's own queries weigh on the server.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// What one measurement runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres { nodes: usize },
}

impl Backend {
    fn nodes(self) -> usize {
        match self {
            Backend::Sqlite => 1,
            Backend::Postgres { nodes } => nodes,
        }
    }
    fn label(self) -> String {
        match self {
            Backend::Sqlite => "SQLite, 1 node".to_owned(),
            Backend::Postgres { nodes: 1 } => "PostgreSQL, 1 node".to_owned(),
            Backend::Postgres { nodes } => format!("PostgreSQL, {nodes} nodes"),
        }
    }
}

/// One phase's figures.
#[derive(Clone, Copy, Default)]
pub struct Phase {
    secs: f64,
    node_cpu: f64,
    /// `None` when the server's processes cannot be read (not this machine).
    pg_cpu: Option<f64>,
    wal_bytes: Option<u64>,
}

/// One measurement's figures.
pub struct Measured {
    /// Which binary: "A", or "B" in an A/B comparison.
    which: &'static str,
    backend: Backend,
    first: Phase,
    /// From the end of the first cycle until the index held every entry.
    index_secs: f64,
    /// First cycle and indexing together.
    first_all: Phase,
    second: Phase,
    db_bytes: u64,
    live_bytes: u64,
    rss_mib: Vec<f64>,
    load: String,
    ok: bool,
}

/// The database a measurement runs on, and the bench's connection to it.
enum Db {
    Sqlite {
        path: PathBuf,
        conn: rusqlite::Connection,
    },
    Postgres {
        rt: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
        /// The database's URL (for the nodes) and name (to drop it).
        url: String,
        name: String,
        server: String,
        /// The server's postmaster and the bench connection's backend, when
        /// the server runs here.
        postmaster: Option<u32>,
        monitor: Option<u32>,
    },
}

fn pg_connect(rt: &tokio::runtime::Runtime, url: &str) -> tokio_postgres::Client {
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        tokio::spawn(conn);
        client
    })
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of `pid` (utime, stime) and of its ended, waited-for
/// children (cutime, cstime).
fn cpu_with_children(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12) + get(13) + get(14)) / ticks
}

/// CPU seconds of the PostgreSQL server: the postmaster with its ended
/// children, and every live child.
fn server_cpu(postmaster: u32, ticks: f64) -> f64 {
    let mut total = cpu_with_children(postmaster, ticks);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if parent_of(pid) == Some(postmaster) {
                total += cpu_seconds(pid, ticks);
            }
        }
    }
    total
}

impl Db {
    fn fresh(backend: Backend, dir: &Path, tag: &str) -> Db {
        match backend {
            Backend::Sqlite => {
                let path = dir.join("tributary.db");
                // The schema first, so the read-only connection has tables.
                let rt = runtime();
                rt.block_on(async {
                    Store::open(&path)
                        .await
                        .expect("create SQLite database")
                        .close()
                        .await
                        .expect("close");
                });
                let conn = rusqlite::Connection::open(&path).expect("open SQLite database");
                conn.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                Db::Sqlite { path, conn }
            }
            Backend::Postgres { .. } => {
                let server = std::env::var("TRIBUTARY_TEST_POSTGRES")
                    .expect("--postgres needs TRIBUTARY_TEST_POSTGRES naming a server");
                let rt = runtime();
                let name = format!("tributary_bench_{}_{tag}", std::process::id());
                let admin = pg_connect(&rt, &server);
                rt.block_on(admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")))
                    .expect("create the bench database");
                drop(admin);
                let mut url = url::Url::parse(&server).expect("server URL");
                url.set_path(&format!("/{name}"));
                let url = url.to_string();
                // The schema, through the library (as a node would make it).
                rt.block_on(async {
                    let db = Database::parse(&url, Path::new(".")).expect("database URL");
                    Store::connect(&db)
                        .await
                        .expect("create PostgreSQL schema")
                        .close()
                        .await
                        .expect("close");
                });
                let client = pg_connect(&rt, &url);
                let monitor: Option<u32> = rt
                    .block_on(client.query_one("SELECT pg_backend_pid()", &[]))
                    .ok()
                    .and_then(|r| r.try_get::<_, i32>(0).ok())
                    .and_then(|p| u32::try_from(p).ok())
                    .filter(|p| Path::new(&format!("/proc/{p}")).exists());
                let postmaster = monitor.and_then(parent_of);
                Db::Postgres {
                    rt,
                    client,
                    url,
                    name,
                    server,
                    postmaster,
                    monitor,
                }
            }
        }
    }

    /// A number from `sql` (one row, one integer); 0 when it fails.
    fn number(&self, sql: &str) -> i64 {
        let got = match self {
            Db::Sqlite { conn, .. } => conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map_err(|e| e.to_string()),
            Db::Postgres { rt, client, .. } => rt
                .block_on(client.query_one(sql, &[]))
                .and_then(|r| r.try_get::<_, i64>(0))
                .map_err(|e| e.to_string()),
        };
        got.unwrap_or_else(|e| {
            eprintln!("{sql}: {e}");
            0
        })
    }

    fn count(&self, cond: &str) -> u64 {
        self.number(&format!("SELECT count(*) FROM feed WHERE {cond}"))
            .max(0) as u64
    }

    fn execute(&self, sql: &str) {
        match self {
            Db::Sqlite { conn, .. } => {
                conn.execute_batch(sql).expect(sql);
            }
            Db::Postgres { rt, client, .. } => rt.block_on(client.batch_execute(sql)).expect(sql),
        }
    }

    /// The server's CPU seconds so far, less the bench connection's own.
    fn server_cpu(&self, ticks: f64) -> Option<f64> {
        match self {
            Db::Sqlite { .. } => None,
            Db::Postgres {
                postmaster: Some(pm),
                monitor,
                ..
            } => Some(server_cpu(*pm, ticks) - monitor.map_or(0.0, |m| cpu_seconds(m, ticks))),
            Db::Postgres { .. } => None,
        }
    }

    /// The WAL position, in bytes.
    fn wal(&self) -> Option<u64> {
        match self {
            Db::Sqlite { .. } => None,
            Db::Postgres { .. } => Some(
                self.number("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
                    .max(0) as u64,
            ),
        }
    }

    /// The database's size and the live-row measure the size cap applies
    /// to, through the store.
    fn sizes(&self) -> (u64, u64) {
        let database = match self {
            Db::Sqlite { path, .. } => Database::Sqlite(path.clone()),
            Db::Postgres { url, .. } => Database::parse(url, Path::new(".")).expect("URL"),
        };
        runtime().block_on(async {
            let store = Store::connect(&database).await.expect("open for sizes");
            let size = store.db_size().await.expect("db_size");
            let _ = store.close().await;
            let file = match &database {
                // The WAL too: it holds what the checkpointer has not moved yet.
                Database::Sqlite(p) => {
                    size.file_bytes
                        + std::fs::metadata(format!("{}-wal", p.display())).map_or(0, |m| m.len())
                }
                Database::Postgres(_) => size.file_bytes,
            };
            (file, size.used_bytes)
        })
    }

    /// What the nodes' `database` is.
    fn database_value(&self) -> String {
        match self {
            Db::Sqlite { path, .. } => path.display().to_string(),
            Db::Postgres { url, .. } => url.clone(),
        }
    }

    fn drop_database(self) {
        if let Db::Postgres {
            rt,
            client,
            name,
            server,
            ..
        } = self
        {
            drop(client);
            let admin = pg_connect(&rt, &server);
            if let Err(e) =
                rt.block_on(admin.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
            {
                eprintln!("dropping {name}: {e}");
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The server's settings that decide what a commit costs, for the output.
pub fn server_settings() -> String {
    let Ok(server) = std::env::var("TRIBUTARY_TEST_POSTGRES") else {
        return "TRIBUTARY_TEST_POSTGRES is not set".to_owned();
    };
    let rt = runtime();
    let client = pg_connect(&rt, &server);
    let mut out = Vec::new();
    for s in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_level",
        "shared_buffers",
        "max_connections",
    ] {
        let v = rt
            .block_on(client.query_one(&format!("SHOW {s}"), &[]))
            .ok()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_else(|| "?".to_owned());
        out.push(format!("{s}={v}"));
    }
    out.join(", ")
}

/// The feeds' URLs: feed `i` on host `i % hosts` (`127.0.1.1`, …).
pub fn feed_urls(n: usize, hosts: &[SocketAddr]) -> Vec<String> {
    (0..n)
        .map(|i| format!("http://{}/f/{i}.xml", hosts[i % hosts.len()]))
        .collect()
}

fn subscribe(db: &Db, urls: &[String]) {
    let database = match db {
        Db::Sqlite { path, .. } => Database::Sqlite(path.clone()),
        Db::Postgres { url, .. } => Database::parse(url, Path::new(".")).expect("URL"),
    };
    runtime().block_on(async {
        let store = Store::connect(&database).await.expect("open store");
        let specs = urls
            .iter()
            .map(|url| FeedSpec {
                url: url.clone(),
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

/// The `[poll]` settings every node runs with.
pub fn poll_settings(opts: &Opts) -> String {
    format!(
        "interval = \"1h\"\n\
         adaptive = false\n\
         timeout = \"30s\"\n\
         concurrency = {}\n\
         per_host_concurrency = {}\n\
         per_host_spacing = \"0s\"\n",
        opts.concurrency,
        opts.cluster_per_host()
    )
}

fn node_config(dir: &Path, node: usize, opts: &Opts) -> PathBuf {
    // The database comes from TRIBUTARY_DATABASE, as it would in a
    // deployment keeping its password out of the file.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n\n\
         [poll]\n{}\n\
         [extract]\nfull_text = false\n\n\
         [retention]\nmax_age = \"0s\"\n\n\
         [network]\nallow = [\"127.0.0.0/8\"]\n\n\
         [log]\nlevel = \"info\"\n",
        free_port(),
        poll_settings(opts)
    );
    let path = dir.join(format!("node{node}.toml"));
    std::fs::write(&path, text).expect("write node config");
    path
}

/// Waits until `done` holds, checking every [`SAMPLE_EVERY`]; panics if a
/// node exits or the phase takes longer than [`PHASE_LIMIT`].
fn wait_until(nodes: &mut [Child], what: &str, mut done: impl FnMut() -> bool) -> Instant {
    let start = Instant::now();
    loop {
        if done() {
            return Instant::now();
        }
        for child in nodes.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a node exited ({status}) during the {what}");
            }
        }
        if start.elapsed() > PHASE_LIMIT {
            for child in nodes.iter_mut() {
                let _ = child.kill();
            }
            panic!("the {what} did not finish within {PHASE_LIMIT:?}");
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

fn signal(nodes: &[Child], sig: &str) {
    for child in nodes {
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
    }
}

/// Where the figures stand at one moment.
struct Mark {
    at: Instant,
    node_cpu: f64,
    pg_cpu: Option<f64>,
    wal: Option<u64>,
}

fn mark(db: &Db, pids: &[u32], ticks: f64, at: Instant) -> Mark {
    Mark {
        at,
        node_cpu: pids.iter().map(|p| cpu_seconds(*p, ticks)).sum(),
        pg_cpu: db.server_cpu(ticks),
        wal: db.wal(),
    }
}

fn phase(a: &Mark, b: &Mark) -> Phase {
    Phase {
        secs: (b.at - a.at).as_secs_f64(),
        node_cpu: b.node_cpu - a.node_cpu,
        pg_cpu: a.pg_cpu.zip(b.pg_cpu).map(|(a, b)| b - a),
        wal_bytes: a.wal.zip(b.wal).map(|(a, b)| b.saturating_sub(a)),
    }
}

/// One measurement: a fresh database, `backend`'s nodes, both cycles.
pub fn measure(
    opts: &Opts,
    bin: &str,
    backend: Backend,
    urls: &[String],
    ticks: f64,
    run: usize,
    which: &'static str,
) -> Measured {
    let n = urls.len();
    let n64 = n as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = format!(
        "{run}_{}_{}",
        which.to_ascii_lowercase(),
        match backend {
            Backend::Sqlite => "sqlite".to_owned(),
            Backend::Postgres { nodes } => format!("pg{nodes}"),
        }
    );
    let db = Db::fresh(backend, dir.path(), &tag);
    subscribe(&db, urls);
    super::settle();
    let load = load_average();
    println!(
        "\n### {which}: {} (run {run}); load average before: {load}",
        backend.label()
    );

    let start = Instant::now();
    let mut nodes: Vec<Child> = (0..backend.nodes())
        .map(|i| {
            let config = node_config(dir.path(), i, opts);
            let log =
                std::fs::File::create(dir.path().join(format!("node{i}.log"))).expect("node log");
            Command::new(bin)
                .arg("--config")
                .arg(&config)
                .arg("run")
                .env("TRIBUTARY_DATABASE", db.database_value())
                .env_remove("RUST_LOG")
                .env_remove("TRIBUTARY_CONFIG")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn node")
        })
        .collect();
    let pids: Vec<u32> = nodes.iter().map(Child::id).collect();
    let m0 = mark(&db, &pids, ticks, start);

    let t = wait_until(&mut nodes, "first cycle", || {
        db.count("last_success_at IS NOT NULL") >= n64
    });
    let m1 = mark(&db, &pids, ticks, t);
    let t = wait_until(&mut nodes, "search indexing", || {
        db.number("SELECT count(*) FROM search_pending") == 0
    });
    let m2 = mark(&db, &pids, ticks, t);

    // Every feed due now; the reload makes each node look at once.
    db.execute("UPDATE feed SET next_check_at = 0");
    let m3 = mark(&db, &pids, ticks, Instant::now());
    signal(&nodes, "-HUP");
    let t = wait_until(&mut nodes, "304 cycle", || {
        db.count("last_status = 304") >= n64
    });
    let m4 = mark(&db, &pids, ticks, t);

    let rss_mib: Vec<f64> = pids
        .iter()
        .map(|p| peak_rss_kib(*p) as f64 / 1024.0)
        .collect();
    let entries = db.number("SELECT count(*) FROM entry");
    let failed = db.count("last_error IS NOT NULL");
    signal(&nodes, "-TERM");
    let mut exits_ok = true;
    for child in &mut nodes {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        exits_ok &= status.is_some_and(|s| s.success());
    }
    let (db_bytes, live_bytes) = db.sizes();
    let expected = (n * ENTRIES_PER_FEED) as i64;
    let ok = exits_ok && failed == 0 && entries == expected;
    if !ok {
        eprintln!(
            "FAIL: {} — exits ok: {exits_ok}, {failed} feeds failed, {entries} entries \
             (expected {expected}); logs kept in {}",
            backend.label(),
            dir.path().display()
        );
        let _ = dir.keep();
    }
    db.drop_database();
    let m = Measured {
        which,
        backend,
        first: phase(&m0, &m1),
        index_secs: (m2.at - m1.at).as_secs_f64(),
        first_all: phase(&m0, &m2),
        second: phase(&m3, &m4),
        db_bytes,
        live_bytes,
        rss_mib,
        load: format!("{load} before, {} after", load_average()),
        ok,
    };
    print_rows(n, std::slice::from_ref(&m));
    m
}

fn ms_per_feed(cpu: f64, n: usize) -> String {
    format!("{:.2}", cpu * 1000.0 / n as f64)
}

fn opt_ms(cpu: Option<f64>, n: usize) -> String {
    cpu.map_or_else(|| "n/a".to_owned(), |c| ms_per_feed(c, n))
}

fn opt_mib(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".to_owned(), |b| format!("{:.0}", mib(b)))
}

/// The table: one row per measurement (or per backend, medians).
fn print_rows(n: usize, rows: &[Measured]) {
    println!();
    println!(
        "| backend | first cycle s | feeds/s | index done after s | node CPU ms/feed (first + index) | PostgreSQL CPU ms/feed | WAL MiB | 304 cycle s | feeds/s | node CPU ms/feed | PostgreSQL CPU ms/feed | WAL MiB | database MiB (on disk / live rows) | peak RSS per node MiB | load average |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for m in rows {
        let rss: Vec<String> = m.rss_mib.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {}{}{} | {:.1} | {:.0} | {:.1} | {} | {} | {} | {:.1} | {:.0} | {} | {} | {} | {:.0} / {:.0} | {} | {} |",
            if m.which == "A" {
                String::new()
            } else {
                format!("{}: ", m.which)
            },
            m.backend.label(),
            if m.ok { "" } else { " (FAILED)" },
            m.first.secs,
            n as f64 / m.first.secs,
            m.index_secs,
            ms_per_feed(m.first_all.node_cpu, n),
            opt_ms(m.first_all.pg_cpu, n),
            opt_mib(m.first_all.wal_bytes),
            m.second.secs,
            n as f64 / m.second.secs,
            ms_per_feed(m.second.node_cpu, n),
            opt_ms(m.second.pg_cpu, n),
            opt_mib(m.second.wal_bytes),
            mib(m.db_bytes),
            mib(m.live_bytes),
            rss.join(" "),
            m.load,
        );
    }
}

/// Medians per backend over the runs, in the order measured.
pub fn summarise(n: usize, all: &[Measured], which: &'static str) {
    let mut backends: Vec<Backend> = Vec::new();
    for m in all {
        if !backends.contains(&m.backend) {
            backends.push(m.backend);
        }
    }
    let med = |v: Vec<f64>| median(v);
    let med_opt = |v: Vec<Option<f64>>| -> Option<f64> {
        let v: Option<Vec<f64>> = v.into_iter().collect();
        v.map(median)
    };
    let rows: Vec<Measured> = backends
        .iter()
        .map(|b| {
            let ms: Vec<&Measured> = all.iter().filter(|m| m.backend == *b).collect();
            let phase = |f: &dyn Fn(&Measured) -> Phase| Phase {
                secs: med(ms.iter().map(|m| f(m).secs).collect()),
                node_cpu: med(ms.iter().map(|m| f(m).node_cpu).collect()),
                pg_cpu: med_opt(ms.iter().map(|m| f(m).pg_cpu).collect()),
                wal_bytes: med_opt(
                    ms.iter()
                        .map(|m| f(m).wal_bytes.map(|b| b as f64))
                        .collect(),
                )
                .map(|b| b as u64),
            };
            let nodes = b.nodes();
            Measured {
                which,
                backend: *b,
                first: phase(&|m| m.first),
                index_secs: med(ms.iter().map(|m| m.index_secs).collect()),
                first_all: phase(&|m| m.first_all),
                second: phase(&|m| m.second),
                db_bytes: med(ms.iter().map(|m| m.db_bytes as f64).collect()) as u64,
                live_bytes: med(ms.iter().map(|m| m.live_bytes as f64).collect()) as u64,
                rss_mib: (0..nodes)
                    .map(|i| med(ms.iter().map(|m| m.rss_mib[i]).collect()))
                    .collect(),
                load: ms
                    .iter()
                    .map(|m| m.load.split(" before").next().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
                    .join("; "),
                ok: ms.iter().all(|m| m.ok),
            }
        })
        .collect();
    let runs = all.len() / backends.len().max(1);
    println!(
        "\n## cluster bench, {which}: median of {runs} runs ({n} feeds x {ENTRIES_PER_FEED} entries)"
    );
    print_rows(n, &rows);
    println!(
        "\nCPU ms/feed: CPU seconds (user + system) over feeds; the first cycle's includes \
         indexing every entry for search. All nodes, PostgreSQL and nginx share this \
         machine's {} cores, so wall time and feeds/s do not scale with nodes here; CPU per \
         feed is the figure that carries to bigger machines. Load average: 1/5/15 min before \
         each run.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// B's figures over A's, measurement by measurement (each pair taken
/// back to back), with the median ratio per backend.
pub fn compare(a: &[Measured], b: &[Measured]) {
    type Figure = fn(&Measured) -> Option<f64>;
    let figures: [(&str, Figure); 6] = [
        ("first cycle, feeds/s", |m| Some(1.0 / m.first.secs)),
        ("first cycle + index, node CPU", |m| {
            Some(m.first_all.node_cpu)
        }),
        ("first cycle + index, PostgreSQL CPU", |m| {
            m.first_all.pg_cpu
        }),
        ("304 cycle, feeds/s", |m| Some(1.0 / m.second.secs)),
        ("304 cycle, node CPU", |m| Some(m.second.node_cpu)),
        ("304 cycle, PostgreSQL CPU", |m| m.second.pg_cpu),
    ];
    let mut backends: Vec<Backend> = Vec::new();
    for m in a {
        if !backends.contains(&m.backend) {
            backends.push(m.backend);
        }
    }
    println!("\n## B / A, pair by pair (each pair measured back to back)\n");
    println!("| backend | figure | each pair | median |");
    println!("|---|---|---|---|");
    for backend in backends {
        let pairs: Vec<(&Measured, &Measured)> = a
            .iter()
            .zip(b)
            .filter(|(x, _)| x.backend == backend)
            .collect();
        for (name, f) in figures {
            let ratios: Vec<f64> = pairs
                .iter()
                .filter_map(|(x, y)| Some(f(y)? / f(x)?))
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
            println!(
                "| {} | {name} | {} | {:.3} |",
                backend.label(),
                each.join(" "),
                median(ratios)
            );
        }
    }
}

/// Whether every measurement succeeded.
pub fn all_ok(all: &[Measured]) -> bool {
    all.iter().all(|m| m.ok)
}
