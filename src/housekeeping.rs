//! Housekeeping: applies the retention policy and keeps the database file
//! in shape — purge old entries (leaving tombstones), bound the tombstones
//! and the poll history, hand free pages back to the file system, `PRAGMA
//! optimize`, checkpoint the WAL.
//!
//! Every store call made here is one short transaction over at most
//! [`BATCH`] rows, and the loop yields between them, so polls and the
//! article worker (which share the one writer connection) commit in
//! between and never wait long. The daemon runs [`run`] under its
//! cancellation token; `tributary purge` calls [`once`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::model::RetentionPolicy;
use crate::store::{DbSize, LeadTask, Purged, Store, StoreError};

/// Rows per transaction: small enough that a step takes milliseconds.
pub const BATCH: usize = 200;
/// Days of poll history kept for the status page (which shows fewer).
pub const HISTORY_DAYS: i64 = 31;
/// Free pages handed back per step (4 MB at SQLite's default page size).
const VACUUM_PAGES: usize = 1024;
/// Pages of search-index merging per step.
const MERGE_PAGES: usize = 256;
/// Rounds of "estimate, purge, re-measure" for the size cap per run, so a
/// cap that pages cannot meet yet (space is freed a page at a time) never
/// purges everything in one go; the next run continues.
const SIZE_ROUNDS: usize = 4;
/// The first run waits this long after start (or one interval if that is
/// shorter), so the start-up polls go first.
pub const FIRST_RUN_DELAY: Duration = Duration::from_secs(60);

/// What one housekeeping run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Purged for being older than `max_age`.
    pub by_age: Purged,
    /// Purged beyond `max_entries_per_feed`.
    pub by_count: Purged,
    /// Purged to get under `max_database_size`.
    pub by_size: Purged,
    /// Tombstones dropped for age or count.
    pub tombstones_dropped: usize,
    pub before: DbSize,
    pub after: DbSize,
    /// The shutdown token fired before the run finished.
    pub interrupted: bool,
}

impl Report {
    pub fn purged(&self) -> Purged {
        let mut all = self.by_age;
        all += self.by_count;
        all += self.by_size;
        all
    }

    /// How much smaller the file got.
    pub fn reclaimed_bytes(&self) -> u64 {
        self.before.file_bytes.saturating_sub(self.after.file_bytes)
    }

    /// How many bytes of pages in use were freed (reusable even when the
    /// file cannot shrink).
    pub fn freed_bytes(&self) -> u64 {
        self.before.used_bytes.saturating_sub(self.after.used_bytes)
    }
}

/// Runs housekeeping every `interval` until `shutdown` fires, the first
/// time shortly after start. A failed run is logged and retried at the next
/// one: housekeeping never stops the daemon.
pub async fn run(
    store: Store,
    policy: RetentionPolicy,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut next = tokio::time::Instant::now() + interval.min(FIRST_RUN_DELAY);
    let mut lead = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + interval;
        // Once per cluster: nodes sharing a PostgreSQL database take turns
        // only when the leader goes away.
        if !store.keep_lead(LeadTask::Housekeeping, &mut lead).await {
            tracing::debug!("housekeeping left to the node that leads it");
            continue;
        }
        match once(&store, &policy, Utc::now(), &shutdown).await {
            Ok(r) => {
                let purged = r.purged();
                tracing::info!(
                    entries = purged.entries,
                    tombstones_added = purged.tombstones,
                    tombstones_dropped = r.tombstones_dropped,
                    used = r.after.used_bytes,
                    file = r.after.file_bytes,
                    reclaimed = r.reclaimed_bytes(),
                    interrupted = r.interrupted,
                    "housekeeping done"
                );
            }
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; it runs again later"),
        }
    }
}

/// One housekeeping run: retention, then the file's upkeep. Stops early
/// (with `interrupted`) when `stop` fires; what was done stays done.
pub async fn once(
    store: &Store,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<Report, StoreError> {
    let mut report = Report {
        before: store.db_size().await?,
        ..Report::default()
    };
    let finished = steps(store, policy, now, stop, &mut report).await?;
    report.interrupted = !finished;
    if finished {
        store.set_housekept(now).await?;
    }
    report.after = store.db_size().await?;
    Ok(report)
}

/// Whether to go on: false once `stop` fired. Also lets other work on the
/// writer run between two steps.
async fn go_on(stop: &CancellationToken) -> bool {
    tokio::task::yield_now().await;
    !stop.is_cancelled()
}

/// The steps of [`once`]; false when interrupted.
async fn steps(
    store: &Store,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    stop: &CancellationToken,
    report: &mut Report,
) -> Result<bool, StoreError> {
    // Each feed's newest few are kept whatever their age and the size cap
    // (`min_entries_per_feed`): a feed that was read stays visible.
    let keep = policy.min_entries_per_feed.unwrap_or(0);
    if let Some(age) = policy.max_age {
        let cutoff = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        loop {
            let p = store.purge_older_than(cutoff, keep, BATCH, now).await?;
            report.by_age += p;
            if !go_on(stop).await {
                return Ok(false);
            }
            if p.entries < BATCH {
                break;
            }
        }
    }

    if let Some(max) = policy.max_entries_per_feed {
        for feed_id in store.feeds_over(max).await? {
            loop {
                let p = store.purge_feed_excess(feed_id, max, BATCH, now).await?;
                report.by_count += p;
                if !go_on(stop).await {
                    return Ok(false);
                }
                // Each released row adds a tombstone or deletes an entry.
                if p.entries.max(p.tombstones) < BATCH {
                    break;
                }
            }
        }
    }

    if let Some(cap) = policy.max_database_size {
        for _ in 0..SIZE_ROUNDS {
            let size = store.db_size().await?;
            let entries = store.entry_count().await?;
            tracing::debug!(
                used = size.used_bytes,
                file = size.file_bytes,
                entries,
                cap,
                "size cap round"
            );
            if size.used_bytes <= cap || entries == 0 {
                break;
            }
            // Aim a little under the cap, so the next poll does not cross
            // it again at once. Purge the share of entries that the excess
            // is of the whole: the schema's fixed overhead makes this an
            // underestimate, which the next round corrects; it never
            // overshoots by much.
            let target = cap - cap / 20;
            let excess = (size.used_bytes - target) as f64 / size.used_bytes as f64;
            let mut todo = ((entries as f64 * excess).ceil() as usize).max(1);
            while todo > 0 {
                let p = store.purge_oldest(keep, todo.min(BATCH), now).await?;
                report.by_size += p;
                if !go_on(stop).await {
                    return Ok(false);
                }
                if p.entries == 0 {
                    break;
                }
                todo = todo.saturating_sub(p.entries);
            }
            // Deleted rows leave the search index only when its segments
            // are merged.
            for _ in 0..64 {
                let more = store.merge_search_index(MERGE_PAGES).await?;
                if !go_on(stop).await {
                    return Ok(false);
                }
                if !more {
                    break;
                }
            }
        }
    }

    if let Some(age) = policy.tombstone_max_age {
        let cutoff = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        loop {
            let n = store.expire_tombstones(cutoff, BATCH * 10).await?;
            report.tombstones_dropped += n;
            if !go_on(stop).await {
                return Ok(false);
            }
            if n < BATCH * 10 {
                break;
            }
        }
    }
    if let Some(max) = policy.max_tombstones {
        loop {
            let n = store.trim_tombstones(max, BATCH * 10).await?;
            report.tombstones_dropped += n;
            if !go_on(stop).await {
                return Ok(false);
            }
            if n < BATCH * 10 {
                break;
            }
        }
    }

    store.trim_history(HISTORY_DAYS, now).await?;

    let size = store.db_size().await?;
    if size.incremental_vacuum {
        let free_pages = (size.file_bytes - size.used_bytes) / 512;
        // Bounded by the free pages there were (at the smallest page size).
        for _ in 0..=(free_pages / VACUUM_PAGES as u64) {
            let before = store.db_size().await?;
            if before.file_bytes == before.used_bytes {
                break;
            }
            store.incremental_vacuum(VACUUM_PAGES).await?;
            if !go_on(stop).await {
                return Ok(false);
            }
        }
    }
    store.optimize_and_checkpoint().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        FeedHints, FeedOrigin, FeedSpec, ParsedEntry, ParsedFeed, PollOutcome, PollRecord,
        PollReport, Schedule, Validators,
    };
    use crate::store::EntryQuery;

    const DAY: i64 = 86_400;

    /// A real store in a temp file with feeds `a`, `b`, … and a clock.
    struct World {
        store: Store,
        _dir: tempfile::TempDir,
        now: DateTime<Utc>,
    }

    fn url(feed: &str) -> String {
        format!("https://{feed}.example/feed")
    }

    impl World {
        async fn new(feeds: &[&str]) -> World {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("t.db")).await.unwrap();
            let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
            let specs = feeds
                .iter()
                .map(|f| FeedSpec {
                    url: url(f),
                    title: None,
                    tags: vec![],
                    interval: None,
                    full_text: None,
                    request: Default::default(),
                    rules: Default::default(),
                    page: None,
                })
                .collect();
            store.add_feeds(specs, FeedOrigin::Cli, now).await.unwrap();
            World {
                store,
                _dir: dir,
                now,
            }
        }

        /// Records a fetched document of `feed` whose entries are `(key,
        /// age in days)`, at the world's clock.
        async fn poll(&self, feed: &str, entries: &[(&str, i64)]) -> PollReport {
            let id = self
                .store
                .feed_by_url(&url(feed))
                .await
                .unwrap()
                .unwrap()
                .id;
            let entries = entries
                .iter()
                .map(|(key, age)| ParsedEntry {
                    key: (*key).to_owned(),
                    title: Some((*key).to_owned()),
                    link: None,
                    content_html: Some(format!("<p>{key}</p>")),
                    content_base: None,
                    authors: vec![],
                    categories: vec![],
                    published: Some(self.now - chrono::Duration::seconds(age * DAY)),
                    updated: None,
                    enclosures: vec![],
                    url_keys: vec![],
                    content_hash: None,
                    search_words: None,
                })
                .collect();
            self.store
                .record_poll(PollRecord {
                    feed_id: id,
                    checked_at: self.now,
                    schedule: Schedule {
                        next_check_at: self.now,
                        interval: Duration::from_secs(3600),
                        reason: "interval".into(),
                    },
                    outcome: PollOutcome::Fetched {
                        status: 200,
                        validators: Validators::default(),
                        feed: ParsedFeed {
                            title: None,
                            site_url: None,
                            hints: FeedHints::default(),
                            entries,
                        },
                    },
                    permanent_redirect: None,
                    learned_interval: None,
                    host_block: None,
                    full_text: false,
                })
                .await
                .unwrap()
        }

        /// The keys (titles) of `feed`'s stored entries, newest first.
        async fn keys(&self, feed: &str) -> Vec<String> {
            let q = EntryQuery {
                limit: 10_000,
                feeds: vec![url(feed)],
                ..EntryQuery::default()
            };
            let entries = self.store.entries(q).await.unwrap();
            entries.into_iter().filter_map(|e| e.title).collect()
        }

        async fn housekeep(&self, policy: RetentionPolicy) -> Report {
            once(&self.store, &policy, self.now, &CancellationToken::new())
                .await
                .unwrap()
        }

        async fn tombstones(&self) -> u64 {
            self.store.status(1, self.now).await.unwrap().tombstones
        }
    }

    const NO_LIMITS: RetentionPolicy = RetentionPolicy {
        max_age: None,
        max_entries_per_feed: None,
        min_entries_per_feed: None,
        max_database_size: None,
        tombstone_max_age: None,
        max_tombstones: None,
    };

    fn days(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n * DAY as u64))
    }

    /// Feeds `a` and `b` with entries `(key, age in days)`; after one run
    /// of `policy`, each feed keeps exactly `expect` (newest first), every
    /// purged entry has a tombstone, and a second poll of the same
    /// documents brings none back.
    #[track_caller]
    fn check(
        policy: RetentionPolicy,
        a: &[(&str, i64)],
        b: &[(&str, i64)],
        expect_a: &[&str],
        expect_b: &[&str],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let w = World::new(&["a", "b"]).await;
            w.poll("a", a).await;
            w.poll("b", b).await;
            let report = w.housekeep(policy).await;
            assert_eq!(w.keys("a").await, expect_a, "{policy:?}");
            assert_eq!(w.keys("b").await, expect_b, "{policy:?}");
            let purged = a.len() + b.len() - expect_a.len() - expect_b.len();
            assert_eq!(report.purged().entries, purged);
            assert_eq!(report.purged().tombstones, purged);
            assert_eq!(w.tombstones().await, purged as u64);
            for (feed, doc) in [("a", a), ("b", b)] {
                let again = w.poll(feed, doc).await;
                assert_eq!(again.new, 0, "purged entries of {feed} came back");
            }
            assert_eq!(w.keys("a").await, expect_a);
        });
    }

    #[test]
    fn retention_rules() {
        let a = [("a1", 1), ("a2", 5), ("a3", 11), ("a4", 30)];
        let b = [("b1", 2), ("b2", 400)];
        check(NO_LIMITS, &a, &b, &["a1", "a2", "a3", "a4"], &["b1", "b2"]);
        // max_age: by publication time.
        let by_age = RetentionPolicy {
            max_age: days(10),
            ..NO_LIMITS
        };
        check(by_age, &a, &b, &["a1", "a2"], &["b1"]);
        // max_entries_per_feed: each feed keeps its newest.
        let by_count = RetentionPolicy {
            max_entries_per_feed: Some(3),
            ..NO_LIMITS
        };
        check(by_count, &a, &b, &["a1", "a2", "a3"], &["b1", "b2"]);
        let one = RetentionPolicy {
            max_entries_per_feed: Some(1),
            ..NO_LIMITS
        };
        check(one, &a, &b, &["a1"], &["b1"]);
        // Both: whichever is stricter, per entry.
        let both = RetentionPolicy {
            max_age: days(3),
            max_entries_per_feed: Some(3),
            ..NO_LIMITS
        };
        check(both, &a, &b, &["a1"], &["b1"]);
        // A generous size cap purges nothing.
        let roomy = RetentionPolicy {
            max_database_size: Some(1 << 30),
            ..NO_LIMITS
        };
        check(roomy, &a, &b, &["a1", "a2", "a3", "a4"], &["b1", "b2"]);
        // Each feed's newest few stay whatever their age: b's only
        // entries are old, and are kept.
        let keep_two = RetentionPolicy {
            max_age: days(3),
            min_entries_per_feed: Some(2),
            ..NO_LIMITS
        };
        check(keep_two, &a, &b, &["a1", "a2"], &["b1", "b2"]);
        let keep_one = RetentionPolicy {
            max_age: days(1),
            min_entries_per_feed: Some(1),
            ..NO_LIMITS
        };
        check(keep_one, &a, &b, &["a1"], &["b1"]);
        // The count limit still applies to them.
        let capped = RetentionPolicy {
            max_age: days(1),
            max_entries_per_feed: Some(1),
            min_entries_per_feed: Some(3),
            ..NO_LIMITS
        };
        check(capped, &a, &b, &["a1"], &["b1"]);
        // A size cap no database meets leaves them too.
        let tiny = RetentionPolicy {
            max_database_size: Some(1),
            min_entries_per_feed: Some(1),
            ..NO_LIMITS
        };
        check(tiny, &a, &b, &["a1"], &["b1"]);
    }

    #[test]
    fn many_batches_are_purged_in_one_run() {
        let keys: Vec<String> = (0..BATCH * 2 + 7).map(|i| format!("k{i:04}")).collect();
        let doc: Vec<(&str, i64)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i as i64))
            .collect();
        let keep = RetentionPolicy {
            max_entries_per_feed: Some(5),
            ..NO_LIMITS
        };
        check(
            keep,
            &doc,
            &[],
            &["k0000", "k0001", "k0002", "k0003", "k0004"],
            &[],
        );
        let young = RetentionPolicy {
            max_age: days(2),
            ..NO_LIMITS
        };
        // Exactly max_age old is not older than it: kept.
        check(young, &doc, &[], &["k0000", "k0001", "k0002"], &[]);
    }

    #[tokio::test]
    async fn new_entries_still_arrive_after_a_purge() {
        let w = World::new(&["a"]).await;
        w.poll("a", &[("old", 3), ("older", 4)]).await;
        w.housekeep(RetentionPolicy {
            max_entries_per_feed: Some(1),
            ..NO_LIMITS
        })
        .await;
        assert_eq!(w.keys("a").await, ["old"]);
        let report = w.poll("a", &[("new", 0), ("old", 3), ("older", 4)]).await;
        assert_eq!(report.new, 1);
        assert_eq!(w.keys("a").await, ["new", "old"]);
    }

    #[tokio::test]
    async fn tombstones_are_bounded_by_count() {
        let w = World::new(&["a"]).await;
        w.poll(
            "a",
            &[("e1", 1), ("e2", 2), ("e3", 3), ("e4", 4), ("e5", 5)],
        )
        .await;
        let keep_one = RetentionPolicy {
            max_entries_per_feed: Some(1),
            ..NO_LIMITS
        };
        w.housekeep(keep_one).await;
        assert_eq!(w.tombstones().await, 4);
        let report = w
            .housekeep(RetentionPolicy {
                max_tombstones: Some(3),
                ..keep_one
            })
            .await;
        assert_eq!((report.tombstones_dropped, w.tombstones().await), (1, 3));
    }

    #[tokio::test]
    async fn tombstones_expire_only_after_the_feed_stopped_carrying_the_entry() {
        let mut w = World::new(&["a"]).await;
        w.poll("a", &[("e1", 1), ("e2", 2), ("e3", 3), ("e4", 4)])
            .await;
        let policy = RetentionPolicy {
            max_entries_per_feed: Some(1),
            tombstone_max_age: days(100),
            ..NO_LIMITS
        };
        w.housekeep(policy).await;
        assert_eq!(w.tombstones().await, 3);
        // The feed still carries e2 90 days later; e3 and e4 are gone
        // from its document.
        w.now += chrono::Duration::days(90);
        assert_eq!(w.poll("a", &[("e1", 1), ("e2", 2)]).await.new, 0);
        w.now += chrono::Duration::days(60);
        let report = w.housekeep(policy).await;
        assert_eq!((report.tombstones_dropped, w.tombstones().await), (2, 1));
        assert_eq!(w.poll("a", &[("e2", 2)]).await.new, 0);
        // Once its tombstone is gone an entry counts as new again.
        assert_eq!(w.poll("a", &[("e3", 3)]).await.new, 1);
    }

    #[tokio::test]
    async fn polls_are_counted_per_day_and_old_days_trimmed() {
        let mut w = World::new(&["a"]).await;
        w.poll("a", &[("x", 0)]).await;
        w.poll("a", &[("x", 0), ("y", 0)]).await;
        let id = w.store.feed_by_url(&url("a")).await.unwrap().unwrap().id;
        let snap = w.store.status(14, w.now).await.unwrap();
        let days = &snap.history[&id];
        assert_eq!(days.len(), 1);
        assert_eq!(
            (days[0].polls, days[0].new_entries, days[0].errors),
            (2, 2, 0)
        );
        w.now += chrono::Duration::days(HISTORY_DAYS + 1);
        w.housekeep(NO_LIMITS).await;
        let snap = w.store.status(HISTORY_DAYS + 5, w.now).await.unwrap();
        assert!(snap.history.is_empty(), "{:?}", snap.history);
        assert!(snap.housekept_at.is_some());
    }

    #[tokio::test]
    async fn a_stopped_run_says_so_and_keeps_what_it_did() {
        let w = World::new(&["a"]).await;
        w.poll("a", &[("e1", 1), ("e2", 2)]).await;
        let stop = CancellationToken::new();
        stop.cancel();
        let policy = RetentionPolicy {
            max_entries_per_feed: Some(1),
            ..NO_LIMITS
        };
        let report = once(&w.store, &policy, w.now, &stop).await.unwrap();
        assert!(report.interrupted);
        assert_eq!(w.keys("a").await.len() + report.purged().entries, 2);
        assert!(
            w.store
                .status(1, w.now)
                .await
                .unwrap()
                .housekept_at
                .is_none()
        );
    }
}
