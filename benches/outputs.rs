//! Output benchmark: the real daemon serving `/feed.atom` from a store of
//! 100,000 entries, loaded by `wrk` on loopback, next to nginx serving the
//! same bytes as a static file.
//!
//! ```text
//! cargo bench --bench outputs [-- --entries N --secs S --connections C --db PATH]
//! ```
//!
//! `--db PATH` keeps the generated database there (and reuses it when it
//! exists), for profiling the same data again.
//!
//! Needs `wrk` and `nginx` (Debian packages; `.ci/run` installs them). The
//! database is built through the library's `Store` (one `record_poll` per
//! synthetic feed: 200 feeds × 500 entries, the newest 1,000 with 500–1,500
//! words of full-text HTML, the rest with a teaser), then the release
//! binary (`CARGO_BIN_EXE_tributary`) is started on 127.0.0.1 with polling
//! pushed a month out, so nothing but the load moves.
//!
//! Rows: the default page (50 full-text entries) in full; the same with a
//! matching `If-None-Match` (304); the same gzip-compressed, as most readers
//! ask; `?q=` search for one word (the render cache answers after the
//! first request); `?q=` with a different word on every request (every
//! request runs FTS5 and renders: the honest search cost), under the same
//! load and from a single client; nginx serving
//! the identical bytes. Targets (issue 4): the full response at least half
//! nginx's rate, search p99 under 50 ms.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeZone, Utc};
use tributary::model::{
    FeedOrigin, FeedSpec, ParsedEntry, ParsedFeed, PollOutcome, PollRecord, Schedule, Validators,
};
use tributary::store::Store;

const FEEDS: usize = 200;
/// Entries that get long full-text bodies: the newest ones, so the default
/// page is all full text.
const FULL_TEXT: usize = 1_000;
/// The word searched for in the cached search row: in about 2% of entries.
const SEARCH_WORD: &str = "harbour";

struct Args {
    db: Option<PathBuf>,
    entries: usize,
    secs: u64,
    connections: u32,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        db: None,
        entries: 100_000,
        secs: 10,
        connections: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().context("a value after the flag");
        match arg.as_str() {
            "--entries" => a.entries = value()?.parse()?,
            "--secs" => a.secs = value()?.parse()?,
            "--connections" => a.connections = value()?.parse()?,
            "--db" => a.db = Some(PathBuf::from(value()?)),
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    for tool in ["wrk", "nginx"] {
        if find(tool).is_none() {
            bail!("{tool} is required (apt-get install {tool})");
        }
    }
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let vocab = vocabulary();
    let db = match &args.db {
        Some(p) if p.exists() => std::path::absolute(p)?,
        other => {
            let db = match other {
                Some(p) => std::path::absolute(p)?,
                None => dir.path().join("tributary.db"),
            };
            let started = Instant::now();
            rt.block_on(fill(&db, args.entries, &vocab))?;
            eprintln!(
                "stored {} entries in {:.1}s",
                args.entries,
                started.elapsed().as_secs_f64()
            );
            db
        }
    };

    let port = free_port()?;
    let config = dir.path().join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"{}\"\n\
             [server]\nlisten = \"127.0.0.1:{port}\"\ntitle = \"Bench River\"\n\
             [extract]\nfull_text = false\n\
             [log]\nlevel = \"warn\"\n",
            db.display()
        ),
    )?;
    let daemon = Guard(
        Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the daemon")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base}/healthz"))?;

    // The bytes nginx serves are the daemon's own document.
    let (body, etag) = rt.block_on(get(&format!("{base}/feed.atom")))?;
    let entries = body.matches("<entry>").count();
    if entries != 50 {
        bail!("/feed.atom has {entries} entries, not 50");
    }
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("feed.atom"), &body)?;
    let nginx_port = free_port()?;
    let nginx = start_nginx(dir.path(), &www, nginx_port)?;
    wait_healthy(&format!("http://127.0.0.1:{nginx_port}/feed.atom"))?;

    let (search_body, _) = rt.block_on(get(&format!("{base}/feed.atom?q={SEARCH_WORD}")))?;
    let lua = dir.path().join("words.lua");
    std::fs::write(&lua, words_script(&vocab))?;
    let gz = rt.block_on(gzip_size(&format!("{base}/feed.atom")))?;

    let atom = format!("{base}/feed.atom");
    let inm = format!("If-None-Match: {etag}");
    let rows: Vec<(&str, Vec<String>, usize)> = vec![
        ("atom full", vec![atom.clone()], body.len()),
        ("atom 304", vec!["-H".into(), inm.clone(), atom.clone()], 0),
        (
            "atom full gzip",
            vec!["-H".into(), "Accept-Encoding: gzip".into(), atom.clone()],
            gz,
        ),
        (
            "search (cached)",
            vec![format!("{base}/feed.atom?q={SEARCH_WORD}")],
            search_body.len(),
        ),
        (
            "search (new word each)",
            vec!["-s".into(), lua.display().to_string(), atom.clone()],
            0,
        ),
        (
            "search (new word, 1 conn)",
            vec!["-s".into(), lua.display().to_string(), atom.clone()],
            0,
        ),
        (
            "nginx static",
            vec![format!("http://127.0.0.1:{nginx_port}/feed.atom")],
            body.len(),
        ),
    ];
    let mut results = Vec::new();
    for (name, extra, bytes) in rows {
        // One client alone: the latency a reader's search sees, without
        // waiting behind fifteen others for the database connection.
        let connections = if name.contains("1 conn") {
            1
        } else {
            args.connections
        };
        let r = wrk(&extra, args.secs, connections)?;
        eprintln!("{name}: {r:?}");
        results.push((name, r, bytes));
    }
    drop(nginx);
    drop(daemon);

    println!();
    println!(
        "{} entries, /feed.atom = 50 full-text entries; wrk -t1 -c{} -d{}s --latency on 127.0.0.1; {} CPUs",
        args.entries,
        args.connections,
        args.secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| {:<25} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "row", "req/s", "p50", "p99", "bytes"
    );
    println!(
        "|{:-<27}|{:->11}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", ""
    );
    for (name, r, bytes) in &results {
        println!(
            "| {:<25} | {:>9.0} | {:>9} | {:>9} | {:>9} |",
            name,
            r.rps,
            ms(r.p50),
            ms(r.p99),
            if *bytes == 0 && name.starts_with("search") {
                "varies".to_owned()
            } else {
                bytes.to_string()
            }
        );
    }
    let rate = |n: &str| results.iter().find(|r| r.0 == n).map_or(0.0, |r| r.1.rps);
    let p99 = |n: &str| results.iter().find(|r| r.0 == n).map_or(0.0, |r| r.1.p99);
    let ratio = rate("atom full") / rate("nginx static");
    println!();
    println!(
        "atom full / nginx = {:.2} (target ≥ 0.50): {}",
        ratio,
        verdict(ratio >= 0.5)
    );
    for row in [
        "search (cached)",
        "search (new word each)",
        "search (new word, 1 conn)",
    ] {
        println!(
            "{row} p99 = {} (target < 50 ms): {}",
            ms(p99(row)),
            verdict(p99(row) < 0.050)
        );
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn ms(secs: f64) -> String {
    if secs < 0.001 {
        format!("{:.0} µs", secs * 1e6)
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}

/// Stops (SIGTERM, then SIGKILL after 10 s) and reaps a child process when
/// dropped. SIGTERM matters for nginx: a SIGKILLed master leaves its
/// workers running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(bin: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    loop {
        if rt.block_on(get(url)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within 30s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .build()
        .expect("http client")
}

/// The body and ETag of a 200 response.
async fn get(url: &str) -> anyhow::Result<(String, String)> {
    let resp = client().get(url).send().await?;
    if !resp.status().is_success() {
        bail!("{url}: {}", resp.status());
    }
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((resp.text().await?, etag))
}

async fn gzip_size(url: &str) -> anyhow::Result<usize> {
    let resp = client()
        .get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    if resp.headers().get("content-encoding").is_none() {
        bail!("{url} was not compressed");
    }
    Ok(resp.bytes().await?.len())
}

fn start_nginx(root: &Path, www: &Path, port: u16) -> anyhow::Result<Guard> {
    use std::os::unix::fs::PermissionsExt;
    // Workers may run as another user: they must reach the file.
    for d in [root, www] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::set_permissions(
        www.join("feed.atom"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    let prefix = root.join("nginx");
    std::fs::create_dir_all(&prefix)?;
    let conf = prefix.join("nginx.conf");
    // Like for like: as many workers as the daemon has runtime threads
    // (one per CPU), no access log, keep-alive, the file from page cache.
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes auto;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n\
               types {{ application/atom+xml atom; }}\n\
               client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {www}; }}\n}}\n",
            p = prefix.display(),
            www = www.display(),
        ),
    )?;
    let bin = find("nginx").context("nginx")?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start nginx")?;
    Ok(Guard(child))
}

#[derive(Debug)]
struct WrkResult {
    rps: f64,
    /// Seconds.
    p50: f64,
    p99: f64,
}

fn wrk(extra: &[String], secs: u64, connections: u32) -> anyhow::Result<WrkResult> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
        .arg("--latency")
        .args(extra)
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success()
        || text.contains("Non-2xx") && !extra.iter().any(|e| e.starts_with("If-None-Match"))
    {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let field = |prefix: &str| -> anyhow::Result<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no {prefix:?} in wrk output:\n{text}"))
    };
    Ok(WrkResult {
        rps: field("Requests/sec:")?.parse()?,
        p50: duration(field("50%")?)?,
        p99: duration(field("99%")?)?,
    })
}

/// wrk's `1.23ms`, `456.00us`, `2.01s`.
fn duration(s: &str) -> anyhow::Result<f64> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {s:?}"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("unit {unit:?}"),
    })
}

/// A wrk script that asks `?q=` with the next vocabulary word on every
/// request, so the render cache never answers.
fn words_script(vocab: &[String]) -> String {
    let words: Vec<String> = vocab.iter().map(|w| format!("\"{w}\"")).collect();
    format!(
        "local words = {{{}}}\nlocal i = 0\n\
         request = function()\n  i = i + 1\n  local w = words[(i % #words) + 1]\n  \
         return wrk.format(\"GET\", \"/feed.atom?q=\" .. w)\nend\n",
        words.join(",")
    )
}

/// Two thousand made-up words (syllable pairs and triples), so the text
/// has a realistic spread of rare and common words.
fn vocabulary() -> Vec<String> {
    const SYL: [&str; 24] = [
        "ka", "lo", "mer", "tan", "si", "ro", "vel", "da", "pin", "qua", "ste", "bor", "ni", "gal",
        "fe", "thu", "wen", "ar", "ix", "ol", "pra", "chi", "mo", "ze",
    ];
    let mut v = Vec::new();
    for a in SYL {
        for b in SYL {
            v.push(format!("{a}{b}"));
            if v.len() % 3 == 0 {
                for c in ["n", "s", "t"] {
                    v.push(format!("{a}{b}{c}"));
                }
            }
        }
    }
    v.truncate(2_000);
    v
}

/// Zipf-ish choice: low indexes (common words) far more often.
fn word<'a>(vocab: &'a [String], rng: &mut fastrand::Rng) -> &'a str {
    let x = rng.f64();
    let i = ((vocab.len() as f64).powf(x) - 1.0) as usize;
    &vocab[i.min(vocab.len() - 1)]
}

fn paragraphs(vocab: &[String], rng: &mut fastrand::Rng, words: usize, topic: bool) -> String {
    let mut html = String::with_capacity(words * 8);
    let mut left = words;
    let mut first = true;
    while left > 0 {
        let n = left.min(rng.usize(40..120));
        left -= n;
        html.push_str("<p>");
        for i in 0..n {
            if i > 0 {
                html.push(' ');
            }
            if first && topic && i == 3 {
                html.push_str(SEARCH_WORD);
            } else if i % 17 == 5 {
                html.push_str("<a href=\"https://example.com/ref\">");
                html.push_str(word(vocab, rng));
                html.push_str("</a>");
            } else {
                html.push_str(word(vocab, rng));
            }
        }
        html.push_str(".</p>\n");
        first = false;
    }
    html
}

/// Stores `total` entries across `FEEDS` feeds, the newest `FULL_TEXT`
/// with long bodies, through the store's own `record_poll`.
async fn fill(db: &Path, total: usize, vocab: &[String]) -> anyhow::Result<()> {
    let store = Store::open(db).await?;
    let now = Utc::now();
    let specs: Vec<FeedSpec> = (0..FEEDS)
        .map(|f| FeedSpec {
            url: format!("https://site{f}.example/feed.xml"),
            title: Some(format!("Site {f}")),
            tags: vec![if f % 2 == 0 { "news" } else { "blogs" }.to_owned()],
            interval: None,
            full_text: Some(false),
            request: Default::default(),
            rules: Default::default(),
            page: None,
        })
        .collect();
    store.add_feeds(specs, FeedOrigin::Cli, now).await?;
    let feeds = store.feeds().await?;
    let per_feed = total.div_ceil(FEEDS);
    let mut rng = fastrand::Rng::with_seed(4287);
    // Entry n (0 = newest) is published n minutes before a fixed instant.
    let newest = Utc
        .with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .context("date")?;
    for (fi, feed) in feeds.iter().enumerate() {
        let mut entries = Vec::with_capacity(per_feed);
        for k in 0..per_feed {
            let n = k * FEEDS + fi;
            if n >= total {
                break;
            }
            let at = newest - chrono::Duration::minutes(n as i64);
            let topic = rng.usize(0..50) == 0;
            let words = if n < FULL_TEXT {
                rng.usize(500..=1500)
            } else {
                rng.usize(30..90)
            };
            let mut title: Vec<&str> = (0..rng.usize(4..10))
                .map(|_| word(vocab, &mut rng))
                .collect();
            if topic {
                title.push(SEARCH_WORD);
            }
            let link = format!(
                "https://site{fi}.example/{}/story-{n}",
                at.format("%Y/%m/%d")
            );
            entries.push(ParsedEntry {
                key: format!("guid:{n}"),
                title: Some(title.join(" ")),
                link: Some(link.clone()),
                content_html: Some(paragraphs(vocab, &mut rng, words, topic)),
                content_base: None,
                authors: vec![format!("Reporter {}", n % 37)],
                categories: vec![word(vocab, &mut rng).to_owned()],
                published: Some(at),
                updated: Some(at),
                enclosures: Vec::new(),
                url_keys: vec![link],
                content_hash: None,
                search_words: None,
            });
        }
        store
            .record_poll(PollRecord {
                feed_id: feed.id,
                checked_at: now,
                // A month out: the daemon must not poll during the run.
                schedule: Schedule {
                    next_check_at: now + chrono::Duration::days(30),
                    interval: Duration::from_secs(3600),
                    reason: "bench".into(),
                },
                outcome: PollOutcome::Fetched {
                    status: 200,
                    validators: Validators::default(),
                    feed: ParsedFeed {
                        title: feed.spec.title.clone(),
                        site_url: Some(format!("https://site{fi}.example/")),
                        hints: Default::default(),
                        entries,
                    },
                },
                permanent_redirect: None,
                learned_interval: None,
                host_block: None,
                full_text: false,
            })
            .await?;
    }
    store.close().await?;
    Ok(())
}
