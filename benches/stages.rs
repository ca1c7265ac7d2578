//! The stage benchmark: what one poll costs, stage by stage, without HTTP.
//!
//! `poll` measures the whole daemon, which shares two cores with its load
//! server and whose speed drifts with the machine; a change worth a few
//! percent drowns in that. This bench runs each stage of the first cycle
//! alone on the same deterministic documents `poll` serves and reports CPU
//! time per feed (from `/proc/.../schedstat`, nanoseconds), so a change can
//! be judged stage by stage:
//!
//! - `feed-rs`: `feed_rs::parser::parse` alone;
//! - `sanitize`: the sanitiser on every entry's HTML alone;
//! - `parse_feed`: the whole parse stage (decode, feed-rs, mapping, keys,
//!   sanitising), as the daemon runs it per document;
//! - `store`: recording every parsed poll in a fresh SQLite database with
//!   64 polls in flight (`--in-flight`; group commit, as in the daemon),
//!   split into the writer thread, the checkpointer and the rest. The
//!   batch size matters: 4 in flight cost ~990 µs per feed, 64 ~580, 512
//!   ~510;
//! - `index`: the search indexer catching up with what `store` queued,
//!   per feed of entries (off the poll path since polls only queue);
//! - `store 304`: recording a `304` for every feed;
//! - `store unchanged`: recording a `200` whose entries are all stored
//!   already, unchanged (a feed without validators, polled again).
//!
//! `cargo bench --bench stages [-- --feeds N --rounds R --in-flight P]`
//! (defaults 2,000 feeds, 3 rounds, 64; the best round is reported, the
//! least disturbed by the rest of the machine). For changes worth a few
//! percent, count instructions instead of time:
//! `valgrind --tool=callgrind <bench binary> --feeds 200 --rounds 1`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt as _;
use tributary::model::{
    FeedOrigin, FeedSpec, ParsedFeed, PollOutcome, PollRecord, Schedule, Validators,
};
use tributary::pipeline::parse::parse_feed;
use tributary::pipeline::sanitize::Sanitizer;
use tributary::store::Store;
use url::Url;

#[path = "common/feeds.rs"]
mod feeds;
use feeds::{ENTRIES_PER_FEED, render_feed};

const BASE: &str = "http://127.0.0.1:8080";

fn feed_url(i: usize) -> String {
    format!("{BASE}/f/{i}.xml")
}

struct Opts {
    feeds: usize,
    rounds: usize,
    /// Polls handed to the store at once (the daemon's backlog).
    in_flight: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        feeds: 2_000,
        rounds: 3,
        in_flight: 64,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let target = match a.as_str() {
            "--feeds" => &mut o.feeds,
            "--rounds" => &mut o.rounds,
            "--in-flight" => &mut o.in_flight,
            _ => continue,
        };
        *target = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{a} needs a positive number"));
    }
    assert!(
        o.feeds > 0 && o.rounds > 0,
        "--feeds and --rounds must be > 0"
    );
    o
}

/// CPU time of every thread of this process, by thread name, in ns.
fn thread_cpu() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let p = task.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0u64);
        *out.entry(name.trim().to_owned()).or_default() += ns;
    }
    out
}

/// CPU time of the calling thread, in ns.
fn own_cpu() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Runs `f` and returns its CPU time on this thread.
fn timed(f: impl FnOnce()) -> Duration {
    let start = own_cpu();
    f();
    Duration::from_nanos(own_cpu().saturating_sub(start))
}

fn main() {
    let o = opts();
    let docs: Vec<String> = (0..o.feeds).map(|i| render_feed(i, BASE)).collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    println!(
        "stages: {} feeds x {ENTRIES_PER_FEED} entries, {:.1} KiB each; best of {} rounds; CPU time per feed",
        o.feeds,
        bytes as f64 / o.feeds as f64 / 1024.0,
        o.rounds
    );
    let sanitizer = Sanitizer::new();
    // The HTML the sanitiser gets, with the base it resolves against.
    let bodies: Vec<(String, Url)> = docs
        .iter()
        .flat_map(|d| {
            let feed = feed_rs::parser::parse(d.as_bytes()).expect("bench feed parses");
            feed.entries.into_iter().filter_map(|e| {
                let html = e.summary?.content;
                let link = Url::parse(&e.links.first()?.href).ok()?;
                Some((html, link))
            })
        })
        .collect();

    let mut rows: Vec<(&str, Duration, String)> = Vec::new();
    let best =
        |f: &mut dyn FnMut() -> Duration| (0..o.rounds).map(|_| f()).min().unwrap_or_default();

    let t = best(&mut || {
        timed(|| {
            for d in &docs {
                std::hint::black_box(feed_rs::parser::parse(d.as_bytes()).ok());
            }
        })
    });
    rows.push(("feed-rs", t, String::new()));
    let t = best(&mut || {
        timed(|| {
            for (html, base) in &bodies {
                std::hint::black_box(sanitizer.clean_html(html, Some(base)));
            }
        })
    });
    rows.push(("sanitize", t, String::new()));
    let mut parsed: Vec<ParsedFeed> = Vec::new();
    let t = best(&mut || {
        let mut out = Vec::with_capacity(docs.len());
        let t = timed(|| {
            for (i, d) in docs.iter().enumerate() {
                out.push(parse_feed(d.as_bytes(), None, &feed_url(i), &sanitizer).expect("parses"));
            }
        });
        parsed = out;
        t
    });
    rows.push(("parse_feed", t, String::new()));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut store_rows: Option<StoreRound> = None;
    for _ in 0..o.rounds {
        let round = rt.block_on(store_round(&parsed, o.in_flight));
        if store_rows.as_ref().is_none_or(|b| round.fresh < b.fresh) {
            store_rows = Some(round);
        }
    }
    if let Some(r) = store_rows {
        rows.push(("store", r.fresh, r.split));
        rows.push(("index", r.index, String::new()));
        rows.push(("store 304", r.not_modified, String::new()));
        rows.push(("store unchanged", r.unchanged, String::new()));
    }

    println!();
    println!("| stage | CPU µs / feed | feeds / s on one core | |");
    println!("|---|---|---|---|");
    for (name, t, note) in rows {
        let per = t.as_secs_f64() * 1e6 / o.feeds as f64;
        println!(
            "| {name} | {per:.0} | {:.0} | {note} |",
            o.feeds as f64 / t.as_secs_f64()
        );
    }
}

/// CPU time of all threads for each phase of [`store_round`], and the
/// split of the first by thread.
struct StoreRound {
    fresh: Duration,
    index: Duration,
    not_modified: Duration,
    unchanged: Duration,
    split: String,
}

/// Records every parsed feed in a fresh database, then a 304 for each,
/// then the same documents again.
async fn store_round(parsed: &[ParsedFeed], in_flight: usize) -> StoreRound {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("bench.db"))
        .await
        .expect("open store");
    let specs = (0..parsed.len())
        .map(|i| FeedSpec {
            url: feed_url(i),
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
    let ids: HashMap<String, i64> = store
        .feeds()
        .await
        .expect("feeds")
        .into_iter()
        .map(|f| (f.spec.url, f.id))
        .collect();
    let now = Utc::now();
    let record = |i: usize, outcome: PollOutcome| PollRecord {
        feed_id: ids[&feed_url(i)],
        checked_at: now,
        schedule: Schedule {
            next_check_at: now + chrono::Duration::hours(1),
            interval: Duration::from_secs(3600),
            reason: "interval".into(),
        },
        outcome,
        permanent_redirect: None,
        learned_interval: None,
        host_block: None,
        full_text: false,
    };
    let validators = |i: usize| Validators {
        etag: Some(format!("\"feed-{i}-v1\"")),
        last_modified: None,
    };

    // Every document again as a 200, with or without validators.
    let fetched = |validators: &dyn Fn(usize) -> Validators| -> Vec<PollRecord> {
        parsed
            .iter()
            .enumerate()
            .map(|(i, feed)| {
                record(
                    i,
                    PollOutcome::Fetched {
                        status: 200,
                        validators: validators(i),
                        feed: feed.clone(),
                    },
                )
            })
            .collect()
    };
    let recs = fetched(&validators);
    let before = thread_cpu();
    let stored = futures_util::stream::iter(recs)
        .map(|r| store.record_poll(r))
        .buffer_unordered(in_flight)
        .fold(0, |n, r| async move { n + r.expect("recorded").new })
        .await;
    let after = thread_cpu();
    assert_eq!(
        stored,
        parsed.len() * ENTRIES_PER_FEED,
        "every entry is new"
    );
    let mut split: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect();
    let fresh = Duration::from_nanos(split.iter().map(|(_, v)| v).sum());
    split.sort_by_key(|s| std::cmp::Reverse(s.1));
    let split = split
        .iter()
        .map(|(k, v)| format!("{k} {:.0}%", *v as f64 * 100.0 / fresh.as_nanos() as f64))
        .collect::<Vec<_>>()
        .join(", ");

    let before: u64 = thread_cpu().values().sum();
    let indexed = tributary::indexer::index_all(&store, tributary::indexer::BATCH)
        .await
        .expect("indexed");
    assert_eq!(indexed, stored, "every new entry was queued");
    let index = Duration::from_nanos(thread_cpu().values().sum::<u64>() - before);

    let recs: Vec<PollRecord> = (0..parsed.len())
        .map(|i| {
            record(
                i,
                PollOutcome::NotModified {
                    validators: validators(i),
                },
            )
        })
        .collect();
    let not_modified = record_all(&store, recs, in_flight).await;

    let unchanged = record_all(&store, fetched(&|_| Validators::default()), in_flight).await;
    store.close().await.expect("close store");
    StoreRound {
        fresh,
        index,
        not_modified,
        unchanged,
        split,
    }
}

/// Records `recs`, `in_flight` at a time, and returns the CPU time all
/// threads spent meanwhile. Every poll must be recorded and change nothing.
async fn record_all(store: &Store, recs: Vec<PollRecord>, in_flight: usize) -> Duration {
    let before: u64 = thread_cpu().values().sum();
    futures_util::stream::iter(recs)
        .map(|r| store.record_poll(r))
        .buffer_unordered(in_flight)
        .for_each(|r| async move {
            let report = r.expect("recorded");
            assert_eq!((report.new, report.updated), (0, 0), "nothing changed");
        })
        .await;
    Duration::from_nanos(thread_cpu().values().sum::<u64>() - before)
}
