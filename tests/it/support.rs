//! Shared test harness: a scriptable feed server on 127.0.0.1, a temp
//! directory with a config and database, and helpers to drive the real
//! binary and read the real output server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

/// One canned response.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When set, a request whose If-None-Match equals it gets a 304.
    pub etag: Option<String>,
    /// When set, gzip the body if the client accepts it.
    pub gzip: bool,
    /// When set, wait this long before answering (a slow server).
    pub delay: Option<Duration>,
    /// When set, send the body one byte at a time with this pause between
    /// bytes (a trickling server).
    pub trickle: Option<Duration>,
    /// Headers the request must carry, exactly, or it gets a 401 (a feed
    /// behind a login, a cookie or a bot wall).
    pub require: Vec<(String, String)>,
    /// Requests whose header `.0` contains `.1` wait `.2` before the
    /// answer (one cluster node's requests hang while the others' go).
    pub slow_for: Vec<(String, String, Duration)>,
}

impl Reply {
    pub fn feed(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            etag: None,
            gzip: false,
            delay: None,
            trickle: None,
            require: Vec::new(),
            slow_for: Vec::new(),
        }
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
            etag: None,
            gzip: false,
            delay: None,
            trickle: None,
            require: Vec::new(),
            slow_for: Vec::new(),
        }
    }

    pub fn with_etag(mut self, etag: &str) -> Reply {
        self.etag = Some(etag.to_owned());
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }

    pub fn trickled(mut self, pause: Duration) -> Reply {
        self.trickle = Some(pause);
        self
    }

    /// Answers 401 unless the request carries `name: value`.
    pub fn requiring(mut self, name: &str, value: &str) -> Reply {
        self.require.push((name.into(), value.into()));
        self
    }

    /// Requests whose `header` contains `needle` wait `d` first.
    pub fn slow_for(mut self, header: &str, needle: &str, d: Duration) -> Reply {
        self.slow_for.push((header.into(), needle.into(), d));
        self
    }

    pub fn gzipped(mut self) -> Reply {
        self.gzip = true;
        self
    }
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The client's address: one per TCP connection.
    pub peer: SocketAddr,
    pub path: String,
    pub method: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

#[derive(Default)]
struct ServerState {
    routes: HashMap<String, Reply>,
    /// Replies given once each, in order, before the route's own.
    queued: HashMap<String, std::collections::VecDeque<Reply>>,
    seen: Vec<Seen>,
}

/// A feed server whose responses the test scripts and whose requests it
/// inspects. It runs on its own thread and runtime, so a test may block
/// (e.g. waiting for the real binary) without starving it.
pub struct FeedServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FeedServer {
    pub async fn start() -> FeedServer {
        FeedServer::start_on("127.0.0.1").await
    }

    /// A server on another loopback address (`127.0.0.2`, …): another
    /// host to the poller, whose per-host limits key on the host name.
    pub async fn start_on(ip: &'static str) -> FeedServer {
        let state = Arc::new(Mutex::new(ServerState::default()));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("feed server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind((ip, 0))
                    .await
                    .expect("bind feed server");
                let _ = addr_tx.send(listener.local_addr().expect("local addr"));
                let _ = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            });
            // Requests still sleeping (slow-server tests) are dropped here.
            rt.shutdown_background();
        });
        let addr = addr_rx.recv().expect("feed server started");
        FeedServer {
            addr,
            state,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .expect("server state")
            .routes
            .insert(path.to_owned(), reply);
    }

    /// Answers the next requests to `path` with `replies`, one each, then
    /// with what `set` gave it.
    pub fn queue(&self, path: &str, replies: Vec<Reply>) {
        self.state
            .lock()
            .expect("server state")
            .queued
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Every request seen so far, in arrival order.
    pub fn all_requests(&self) -> Vec<Seen> {
        self.state.lock().expect("server state").seen.clone()
    }

    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.state
            .lock()
            .expect("server state")
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn handle(
    State(state): State<Arc<Mutex<ServerState>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let reply = {
        let mut st = state.lock().expect("server state");
        st.seen.push(Seen {
            peer,
            path: path.clone(),
            method,
            headers: headers.clone(),
            body,
            at: Instant::now(),
        });
        match st.queued.get_mut(&path).and_then(|q| q.pop_front()) {
            Some(reply) => Some(reply),
            None => st.routes.get(&path).cloned(),
        }
    };
    let Some(reply) = reply else {
        return Response::builder()
            .status(404)
            .body(Body::from("not found"))
            .expect("response");
    };
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    for (name, needle, d) in &reply.slow_for {
        let matches = headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(needle.as_str()));
        if matches {
            tokio::time::sleep(*d).await;
        }
    }
    let refused = reply.require.iter().any(|(name, value)| {
        headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str())
    });
    if refused {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"test\"")
            .body(Body::from("login required"))
            .expect("response");
    }
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    if let Some(etag) = &reply.etag {
        resp = resp.header(header::ETAG, etag);
        let inm = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if inm == Some(etag.as_str()) {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, etag)
                .body(Body::empty())
                .expect("response");
        }
    }
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let body = if reply.gzip && accepts_gzip {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&reply.body).expect("gzip");
        resp = resp.header(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        enc.finish().expect("gzip")
    } else {
        reply.body
    };
    if let Some(pause) = reply.trickle {
        let stream = futures_util::stream::unfold(0usize, move |i| {
            let body = body.clone();
            async move {
                let byte = *body.get(i)?;
                tokio::time::sleep(pause).await;
                Some((Ok::<_, std::io::Error>(vec![byte]), i + 1))
            }
        });
        return resp.body(Body::from_stream(stream)).expect("response");
    }
    resp.body(Body::from(body)).expect("response")
}

/// A temp directory with a config file and (once used) a database.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
}

/// A TOML `[[feed]]` table for `url`.
pub fn feed_table(url: &str, extra: &str) -> String {
    format!("[[feed]]\nurl = \"{url}\"\n{extra}\n")
}

impl TestEnv {
    /// Writes a config polling every second, with the given `[[feed]]`
    /// tables appended.
    pub fn new(feeds: &str) -> TestEnv {
        TestEnv::with_poll(&[], feeds)
    }

    /// Like `new`, with some `[poll]` keys replaced, e.g.
    /// `[("timeout", "\"2s\"")]`.
    pub fn with_poll(overrides: &[(&str, &str)], feeds: &str) -> TestEnv {
        // Full text is off unless a test asks for it: test feeds link to
        // made-up hosts, and tests only ever talk to 127.0.0.1.
        TestEnv::with_config(overrides, "[extract]\nfull_text = false\n", feeds)
    }

    /// Like `with_poll`, with more tables (e.g. `[extract]`, `[[site]]`)
    /// written before the feeds.
    pub fn with_config(overrides: &[(&str, &str)], tables: &str, feeds: &str) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("tributary.toml");
        let mut poll: Vec<(&str, &str)> = vec![
            ("interval", "\"1s\""),
            ("min_interval", "\"1s\""),
            ("timeout", "\"5s\""),
            ("connect_timeout", "\"2s\""),
            ("concurrency", "4"),
            // Every test server is on 127.0.0.1: per-host limits would
            // serialise unrelated tests' feeds.
            ("per_host_concurrency", "4"),
            ("per_host_spacing", "\"0s\""),
        ];
        for (k, v) in overrides {
            poll.retain(|(pk, _)| pk != k);
            poll.push((k, v));
        }
        let poll: String = poll.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let text = format!(
            "database = \"tributary.db\"\n\
             [server]\nlisten = \"127.0.0.1:{port}\"\ntitle = \"Test River\"\n\
             [poll]\n{poll}\
             [log]\nlevel = \"info\"\n\n{tables}\n{feeds}"
        );
        std::fs::write(&config, text).expect("write config");
        TestEnv { dir, config, port }
    }

    /// Sets a `[server]` key to a TOML value, e.g. `base_url`: the nodes
    /// of a cluster behind one address all name it, so their documents
    /// are the same bytes.
    pub fn set_server(&self, key: &str, value: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let text = text.replacen("[server]\n", &format!("[server]\n{key} = {value}\n"), 1);
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tributary.db")
    }

    /// The real binary: this build's, or `TRIBUTARY_TEST_BIN` (another
    /// build, to see a new test fail on the code it guards against).
    pub fn command(&self) -> Command {
        let bin = std::env::var_os("TRIBUTARY_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tributary").into());
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&self.config);
        cmd.env_remove("TRIBUTARY_CONFIG")
            .env_remove("TRIBUTARY_DATABASE")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs a verb of the real binary to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_blocking(self.command().args(args))
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Opens the database (the real store) to inspect a feed's state.
    pub async fn feed(&self, url: &str) -> tributary::model::Feed {
        let store = tributary::store::Store::open(&self.db_path())
            .await
            .expect("open store");
        let feed = store
            .feed_by_url(url)
            .await
            .expect("query")
            .expect("feed exists");
        store.close().await.expect("close");
        feed
    }

    /// Starts `tributary run` and waits until it answers /healthz.
    pub async fn spawn_daemon(&self) -> Daemon {
        let daemon = self.start_daemon();
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http().get(&url).send().await
                && r.status().is_success()
            {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not become healthy: {}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts `tributary run` without waiting for it.
    pub fn start_daemon(&self) -> Daemon {
        self.spawn_daemon_with(&[])
    }

    /// Starts `tributary run` with extra environment variables and returns
    /// at once, before it is ready.
    pub fn spawn_daemon_with(&self, envs: &[(&str, &str)]) -> Daemon {
        let child = self
            .command()
            .arg("run")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon");
        Daemon::capture(child)
    }

    /// Waits until the daemon answers /healthz.
    pub async fn wait_healthy(&self) {
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http().get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "daemon did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running `tributary run`; killed on drop if the test did not stop it.
/// Its stderr is read as it comes, so a test can watch the log while the
/// daemon runs.
pub struct Daemon {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn capture(mut child: Child) -> Daemon {
        let log = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|stderr| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().expect("daemon log");
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        });
        Daemon {
            child: Some(child),
            log,
            reader,
        }
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("daemon log").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the process is still running (not exited, not restarted).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits for the process to exit (after a signal); its status and the
    /// whole log.
    fn wait_exit(mut self, what: &str) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not stop within 20s of {what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then wait; returns the exit status and stderr.
    pub fn stop(self) -> (std::process::ExitStatus, String) {
        self.signal("TERM");
        self.wait_exit("SIGTERM")
    }

    /// SIGKILL (a crash: nothing runs on the way out), then wait.
    pub fn kill(self) -> (std::process::ExitStatus, String) {
        self.signal("KILL");
        self.wait_exit("SIGKILL")
    }
}

/// Runs `tributary run` expecting it to fail at start-up; its status and
/// stderr. Fails the test if it is still running after 20 s.
pub fn run_expecting_exit(env: &TestEnv) -> (std::process::ExitStatus, String) {
    env.start_daemon().wait_exit("start-up")
}

/// [`run_expecting_exit`] with environment variables set.
pub fn run_expecting_exit_with(
    env: &TestEnv,
    envs: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    env.spawn_daemon_with(envs).wait_exit("start-up")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_blocking(cmd: &mut Command) -> Output {
    cmd.output().expect("run tributary")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A plain HTTP client for talking to the daemon. reqwest is built without
/// a default TLS provider, so one is installed first.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GETs `path` from the real router built from the environment's config
/// (named outputs, hub and all) over its database.
pub async fn get_configured(env: &TestEnv, path: &str) -> reqwest::Response {
    let config = tributary::config::Config::load(&env.config).expect("config loads");
    let store = tributary::store::Store::open(&env.db_path())
        .await
        .expect("open store");
    let router = tributary::serve::router(store, tributary::app::serve_settings(&config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("GET")
}

/// Serves the output of the database at `db` in-process (the real router on
/// the real store) and GETs `path` from it.
pub async fn get_output(db: &Path, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let store = tributary::store::Store::open(db).await.expect("open store");
    get_store_output(store, path, headers).await
}

/// Serves the output of an open `store` (either backend) in-process with
/// the real router and GETs `path` from it, without decompressing.
pub async fn get_store_output(
    store: tributary::store::Store,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let router = tributary::serve::router(
        store,
        tributary::serve::ServeSettings {
            title: "Test River".into(),
            base_url: "http://127.0.0.1:9".into(),
            page_size: 50,
            max_page_size: 500,
            outputs: Vec::new(),
            hub: None,
            db_cap: None,
            max_content: tributary::values::DEFAULT_MAX_CONTENT,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    // Raw: no transparent decompression, so tests see Content-Encoding.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .build()
        .expect("client");
    let mut req = client.get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("GET output")
}

/// The merged Atom feed of the database at `db`, parsed.
pub async fn read_atom(db: &Path) -> (feed_rs::model::Feed, String) {
    let resp = get_output(db, "/feed.atom?limit=500", &[]).await;
    assert_eq!(resp.status(), 200);
    let xml = resp.text().await.expect("body");
    let feed = feed_rs::parser::parse(xml.as_bytes()).expect("output parses as a feed");
    (feed, xml)
}

/// Validates an Atom/RSS document with Python's feedparser, the parser
/// behind many real readers, and a JSON Feed where the installed
/// feedparser has a JSON parser (released 6.0.x has none: `None` then).
/// When `TRIBUTARY_REQUIRE_FEEDPARSER` is set (CI sets it), a missing
/// feedparser fails the test instead of skipping.
pub fn feedparser_check(xml: &str) -> Option<String> {
    let script = r#"
import sys, json
try:
    import feedparser
except ImportError:
    print("MISSING"); sys.exit(0)
import importlib.util
doc = sys.stdin.buffer.read()
if doc.lstrip()[:1] == b"{" and importlib.util.find_spec("feedparser.parsers.json") is None:
    print("NOJSON"); sys.exit(0)
d = feedparser.parse(doc)
print(json.dumps({"bozo": bool(d.bozo), "exc": str(d.get("bozo_exception", "")),
                  "version": d.version, "entries": len(d.entries),
                  "ids": [e.get("id") for e in d.entries],
                  "sources": [e.get("source", {}).get("title") for e in d.entries]}))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take()?;
        stdin.write_all(xml.as_bytes()).ok()?;
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text == "NOJSON" {
        eprintln!("skipping feedparser: this feedparser has no JSON Feed parser");
        return None;
    }
    if text == "MISSING" {
        assert!(
            std::env::var_os("TRIBUTARY_REQUIRE_FEEDPARSER").is_none(),
            "feedparser is required (pip install feedparser)"
        );
        return None;
    }
    Some(text)
}

/// Whether an outside validator (`xmllint`, `newsboat`, `wrk`, …) is on
/// the PATH. When `TRIBUTARY_REQUIRE_VALIDATORS` is set (CI sets it), a
/// missing one fails the test instead of skipping it.
pub fn require_tool(bin: &str, install: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).is_file()));
    if !found {
        assert!(
            std::env::var_os("TRIBUTARY_REQUIRE_VALIDATORS").is_none(),
            "{bin} is required ({install})"
        );
        eprintln!("skipping: {bin} is not installed ({install})");
    }
    found
}

/// The `TRIBUTARY_TEST_POSTGRES` server, or `None` after saying that
/// `test` is skipped; with `TRIBUTARY_REQUIRE_POSTGRES=1` (CI) a missing
/// server fails the test instead.
pub fn postgres_server(test: &str) -> Option<String> {
    match std::env::var("TRIBUTARY_TEST_POSTGRES") {
        Ok(server) => Some(server),
        Err(_) => {
            assert!(
                std::env::var("TRIBUTARY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "TRIBUTARY_REQUIRE_POSTGRES=1 but TRIBUTARY_TEST_POSTGRES is not set"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "{test}: SKIPPED (TRIBUTARY_TEST_POSTGRES is not set)"
            );
            None
        }
    }
}

/// A client of the PostgreSQL server at `url` (its connection task runs
/// on the caller's runtime).
pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A fresh database of the test's own on the `TRIBUTARY_TEST_POSTGRES`
/// server; [`PgDatabase::drop_database`] removes it.
pub struct PgDatabase {
    server: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// `None` (saying so) when the PostgreSQL tests are not wanted.
    pub async fn create(test: &str) -> Option<PgDatabase> {
        let server = postgres_server(test)?;
        let name = format!("tributary_it_{}_{}", std::process::id(), fastrand::u32(..));
        pg_client(&server)
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        let mut url = url::Url::parse(&server).expect("server URL");
        url.set_path(&format!("/{name}"));
        Some(PgDatabase {
            server,
            name,
            url: url.to_string(),
        })
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        pg_client(&self.url).await
    }

    pub async fn drop_database(self) {
        pg_client(&self.server)
            .await
            .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .await
            .expect("drop database");
    }
}

/// A PostgreSQL server of the test's own (initdb + pg_ctl in a temp dir,
/// on a free loopback port, as `.ci/postgres.sh` starts one), for tests
/// that stop and start it; never the shared one other tests use. Run as
/// the `postgres` user when the tests run as root (initdb refuses root).
/// Stopped (immediately) and removed on drop.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    pub url: String,
    /// Serves TLS only (see [`PgCluster::start_tls`]).
    ssl: bool,
}

impl PgCluster {
    /// `None` (saying so) when the PostgreSQL tests are not wanted; a
    /// failure when they are and PostgreSQL's programs are not installed.
    pub fn start(test: &str) -> Option<PgCluster> {
        let cluster = PgCluster::init(test)?;
        cluster.start_again();
        Some(cluster)
    }

    /// A server that takes TLS connections only (`hostssl` in pg_hba.conf),
    /// with a certificate for `localhost` signed by a CA of the test's own;
    /// also returns the CA's certificate and another CA's (PEM files).
    pub fn start_tls(test: &str) -> Option<(PgCluster, PathBuf, PathBuf)> {
        let mut cluster = PgCluster::init(test)?;
        let data = cluster.dir.path().join("data");
        let certs = cluster.dir.path().join("certs");
        std::fs::create_dir(&certs).expect("certs dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .current_dir(&certs)
                .args(args)
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN={ca}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
            openssl(&args);
        }
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&args);
        std::fs::write(
            certs.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write ext.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        for f in ["server.crt", "server.key"] {
            std::fs::copy(certs.join(f), data.join(f)).expect("copy cert");
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .expect("write pg_hba.conf");
        if is_root() {
            for f in ["server.crt", "server.key", "pg_hba.conf"] {
                let ok = Command::new("chown")
                    .arg("postgres")
                    .arg(data.join(f))
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chown {f}");
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod server.key");
        cluster.ssl = true;
        cluster.start_again();
        Some((cluster, certs.join("ca.crt"), certs.join("other-ca.crt")))
    }

    /// `initdb` in a temp dir; not started.
    fn init(test: &str) -> Option<PgCluster> {
        postgres_server(test)?;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").is_file())
            .max_by_key(|b| {
                b.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .expect("PostgreSQL's programs (/usr/lib/postgresql/*/bin/initdb) are not installed");
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown postgres {}", dir.path().display());
        }
        let port = free_port();
        let cluster = PgCluster {
            bin,
            port,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            ssl: false,
        };
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C.UTF-8".as_ref(),
            ],
        );
        Some(cluster)
    }

    /// Runs one of PostgreSQL's programs as the server's owner; panics
    /// with its output if it fails.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let (data, log) = (self.dir.path().join("data"), self.dir.path().join("log"));
        let mut options = format!(
            "-h 127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if self.ssl {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        );
    }

    /// Stops the server: `mode` is pg_ctl's (`fast` disconnects clients
    /// and shuts down cleanly, `immediate` is a crash).
    pub fn stop(&self, mode: &str) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let path = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| stdout(&o).trim() == "0")
}

/// One node of a cluster: its own config (listen port, `User-Agent`
/// `tributary-node-N`, the shared `base_url`) on a shared database.
pub struct Node {
    pub env: TestEnv,
    pub name: String,
    pub daemon: Option<Daemon>,
}

impl Node {
    pub fn base_url(&self) -> String {
        self.env.base_url()
    }

    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }
}

/// `n` nodes' configs: `with_config(poll, tables, feeds)` each, with the
/// node's own `User-Agent` (`tributary-node-0`, …) so a feed server tells
/// them apart, and one `base_url` for all.
pub fn cluster_nodes(n: usize, poll: &[(&str, &str)], tables: &str, feeds: &str) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let name = format!("tributary-node-{i}");
            let agent = format!("\"{name}\"");
            let mut overrides = poll.to_vec();
            overrides.push(("user_agent", &agent));
            let env = TestEnv::with_config(&overrides, tables, feeds);
            env.set_server("base_url", "\"https://river.example\"");
            Node {
                env,
                name,
                daemon: None,
            }
        })
        .collect()
}

/// Starts `tributary run` on every node against `database`, then waits
/// until each answers /healthz.
pub async fn start_cluster(nodes: &mut [Node], database: &str) {
    for node in nodes.iter_mut() {
        node.daemon = Some(
            node.env
                .spawn_daemon_with(&[("TRIBUTARY_DATABASE", database)]),
        );
    }
    for node in nodes.iter() {
        let url = format!("{}/healthz", node.base_url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http().get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become healthy: {}",
                node.name,
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The node whose `User-Agent` sent `seen`.
pub fn sent_by(seen: &Seen) -> String {
    seen.headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A feed with one entry whose article page `page` is on `server` too;
/// both answers take `delay`.
pub fn feed_with_story(server: &FeedServer, feed: &str, page: &str, delay: Duration) {
    let doc = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>\
         <link>{base}</link><description>d</description>\
         <item><guid>{page}</guid><title>Story {page}</title><link>{story}</link>\
         <description>teaser</description></item></channel></rss>",
        base = server.url("/"),
        story = server.url(page),
    );
    server.set(feed, Reply::feed("application/rss+xml", doc).delayed(delay));
    server.set(
        page,
        Reply::feed(
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>Story</title></head><body><article>\
                 <h1>Story {page}</h1><p>{}</p></article></body></html>",
                "A paragraph of the article that says more than the teaser. ".repeat(20)
            ),
        )
        .delayed(delay),
    );
}

/// Many feeds on one host beside a few on others: the shape the per-host
/// politeness tests share.
pub struct SharedHost {
    /// The crowded host.
    pub crowded: FeedServer,
    /// Its feeds' and article pages' paths.
    pub crowd_paths: Vec<String>,
    /// The other hosts, two feeds (and their pages) each.
    pub others: Vec<FeedServer>,
    /// The `[[feeds]]` tables of every feed.
    pub tables: String,
}

/// `crowd` feeds on one host (each with its article page there, answers
/// taking `answer`; `crowd_keys` in each feed's table) and two on each of
/// the loopback addresses `other_ips` (answering at once; `other_keys`).
pub async fn shared_host(
    crowd: usize,
    answer: Duration,
    crowd_keys: &str,
    other_ips: &[&'static str],
    other_keys: &str,
) -> SharedHost {
    let crowded = FeedServer::start().await;
    let mut tables = String::new();
    let mut crowd_paths = Vec::new();
    for i in 0..crowd {
        let (feed, page) = (format!("/c{i}.xml"), format!("/a{i}"));
        feed_with_story(&crowded, &feed, &page, answer);
        tables.push_str(&feed_table(&crowded.url(&feed), crowd_keys));
        crowd_paths.push(feed);
        crowd_paths.push(page);
    }
    let mut others = Vec::new();
    for ip in other_ips {
        let server = FeedServer::start_on(ip).await;
        for j in 0..2 {
            let feed = format!("/f{j}.xml");
            feed_with_story(&server, &feed, &format!("/story-{j}"), Duration::ZERO);
            tables.push_str(&feed_table(&server.url(&feed), other_keys));
        }
        others.push(server);
    }
    SharedHost {
        crowded,
        crowd_paths,
        others,
        tables,
    }
}
