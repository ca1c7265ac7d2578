//! Scheduling: which feed is polled when.
//!
//! [`SchedulePolicy`] is the pure part (interval, jitter, backoff,
//! Retry-After); [`run`] is the loop that asks the store for due feeds and
//! hands them to the pipeline under a global concurrency cap. The schedule
//! itself lives in the database (`feed.next_check_at`), so it survives
//! restarts; the loop keeps no state that a crash could lose.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hosts::{Busy, HostLimiter, HostPermit, host_of};
use crate::model::{Feed, FeedHints, Freshness, ParsedEntry, Schedule};
use crate::pipeline::Pipeline;
use crate::store::Store;

/// Longest wait between two looks at the database, so feeds added by the
/// CLI while the daemon runs are picked up without a signal.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How long a dispatched feed is held back from being dispatched again,
/// beyond the fetch timeout; the poll's own result replaces it.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Polling intervals and backoff, from `[poll]`.
#[derive(Debug, Clone)]
pub struct SchedulePolicy {
    /// Default interval between polls of a healthy feed.
    pub interval: Duration,
    /// Floor: no feed is polled more often than this.
    pub min_interval: Duration,
    /// Ceiling for learned intervals and for what feeds ask for.
    pub max_interval: Duration,
    /// Ceiling for error backoff and Retry-After.
    pub max_backoff: Duration,
    /// Learn each feed's interval from how often it publishes.
    pub adaptive: bool,
}

/// What a successful poll learned that bears on the next one.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollFacts<'a> {
    /// `Cache-Control: max-age` / `Expires` of the response.
    pub freshness: Option<Freshness>,
    /// The document's hints (ttl, sy:updatePeriod, skipHours/Days).
    pub hints: Option<&'a FeedHints>,
    /// How often the feed publishes, as far as we know.
    pub learned_interval: Option<Duration>,
}

/// Newest dated entries considered when learning a publishing interval.
const LEARN_FROM: usize = 20;

impl SchedulePolicy {
    /// The feed's own interval, else the default, never below the floor.
    pub fn interval_for(&self, feed: &Feed) -> Duration {
        feed.spec
            .interval
            .unwrap_or(self.interval)
            .max(self.min_interval)
    }

    /// The interval a healthy feed is polled at, before hints: a fixed
    /// per-feed interval wins; else, when adaptive, half the feed's typical
    /// gap between posts (so a new post waits half a gap on average),
    /// between floor and ceiling; else the default.
    fn base_interval(&self, feed: &Feed, learned: Option<Duration>) -> (Duration, &'static str) {
        if let Some(fixed) = feed.spec.interval {
            return (fixed.max(self.min_interval), "fixed");
        }
        match learned {
            Some(gap) if self.adaptive => (
                (gap / 2).clamp(self.min_interval, self.max_interval.max(self.min_interval)),
                "adaptive",
            ),
            _ => (self.interval.max(self.min_interval), "interval"),
        }
    }

    /// When to poll next after a successful poll. Never sooner than the
    /// server or the document asks (clamped to `max_interval`), never in
    /// an hour or on a day the feed says to skip.
    pub fn after_success(&self, feed: &Feed, facts: PollFacts<'_>, now: DateTime<Utc>) -> Schedule {
        let (base, mut reason) = self.base_interval(feed, facts.learned_interval);
        let mut wait = jitter(base).max(self.min_interval);
        let hints = facts.hints.unwrap_or(&feed.hints);
        let asks = [
            facts.freshness.map(|f| (f.lifetime, f.source)),
            hints.ttl.map(|d| (d, "ttl")),
            hints.update_period.map(|d| (d, "sy:updatePeriod")),
        ];
        for (asked, source) in asks.into_iter().flatten() {
            let asked = asked.min(self.max_interval.max(base));
            if asked > wait {
                wait = asked;
                reason = source;
            }
        }
        let mut next = now + to_chrono(wait);
        if let Some(allowed) = skip_forward(next, hints) {
            if allowed != next {
                reason = "skipHours";
            }
            next = allowed;
        }
        Schedule {
            next_check_at: next,
            interval: base,
            reason: reason.to_owned(),
        }
    }

    /// Exponential backoff: one interval after the first failure, doubling
    /// with each further one, capped; a `Retry-After` the server sent wins
    /// when it asks for longer (up to the same cap).
    pub fn after_failure(
        &self,
        feed: &Feed,
        consecutive_errors: u32,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Schedule {
        let base = self.interval_for(feed);
        let cap = self.max_backoff.max(self.min_interval);
        let exp = consecutive_errors.saturating_sub(1).min(16);
        let backoff = base.saturating_mul(1 << exp).min(cap);
        let mut wait = jitter(backoff).max(self.min_interval).min(cap);
        let mut reason = "backoff";
        if let Some(ra) = retry_after.map(|ra| ra.min(cap))
            && ra >= wait
        {
            wait = ra;
            reason = "retry-after";
        }
        Schedule {
            next_check_at: now + to_chrono(wait),
            interval: base,
            reason: reason.to_owned(),
        }
    }

    /// The window over which feeds that fell due during downtime are spread
    /// at start-up.
    pub fn startup_spread(&self, feed: &Feed) -> Duration {
        self.interval_for(feed).min(Duration::from_secs(600))
    }
}

/// How often a feed publishes: the median gap between its newest dated
/// entries. `None` with fewer than three dates (too little evidence).
pub fn learn_interval(entries: &[ParsedEntry]) -> Option<Duration> {
    let mut dates: Vec<DateTime<Utc>> = entries
        .iter()
        .filter_map(|e| e.published.or(e.updated))
        .collect();
    dates.sort_unstable_by(|a, b| b.cmp(a));
    dates.dedup();
    dates.truncate(LEARN_FROM);
    if dates.len() < 3 {
        return None;
    }
    let mut gaps: Vec<i64> = dates
        .windows(2)
        .filter_map(|w| match w {
            [newer, older] => Some((*newer - *older).num_seconds()),
            _ => None,
        })
        .collect();
    gaps.sort_unstable();
    let median = *gaps.get(gaps.len() / 2)?;
    Some(Duration::from_secs(u64::try_from(median).ok()?.max(1)))
}

/// Moves `t` forward to the first hour (GMT) that neither `skipHours` nor
/// `skipDays` excludes; `None` when nothing is excluded.
fn skip_forward(t: DateTime<Utc>, hints: &FeedHints) -> Option<DateTime<Utc>> {
    use chrono::{Datelike, DurationRound, Timelike};
    if hints.skip_hours.is_empty() && hints.skip_days.is_empty() {
        return None;
    }
    let skipped = |t: DateTime<Utc>| {
        let day = t.weekday().num_days_from_monday() as u8;
        hints.skip_hours.contains(&(t.hour() as u8)) || hints.skip_days.contains(&day)
    };
    let mut cur = t;
    // A week of hours covers every combination; the parser already drops
    // hints that would exclude everything.
    for _ in 0..24 * 7 {
        if !skipped(cur) {
            return Some(cur);
        }
        cur = cur
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap_or(cur)
            + chrono::Duration::hours(1);
    }
    Some(t)
}

/// ±10 %, so feeds added together (and feeds on one host) drift apart
/// instead of hitting servers in lockstep.
fn jitter(d: Duration) -> Duration {
    let f = 0.9 + fastrand::f64() * 0.2;
    d.mul_f64(f)
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    (at - now).to_std().ok()
}

/// Polls past their request that may wait to be parsed and recorded: three
/// per request slot, at most [`MAX_BACKLOG_EXTRA`] (a parsed feed is tens
/// of kilobytes; a large `concurrency` must not turn into a large heap).
/// See [`Slots`].
const BACKLOG_PER_SLOT: usize = 3;
const MAX_BACKLOG_EXTRA: usize = 192;

/// What a poll holds while it runs. A request slot (one of `concurrency`)
/// covers only the HTTP exchange and is handed to the pipeline, which
/// drops it once the response is read; a backlog slot (a few per request
/// slot, bounded) is held until the poll is recorded. So the next requests overlap
/// parsing and writing, the global cap still bounds requests in flight,
/// and the backlog bounds the parsed feeds waiting for the writer — which
/// also lets the writer commit them in larger batches.
struct Slot {
    request: OwnedSemaphorePermit,
    backlog: OwnedSemaphorePermit,
}

#[derive(Clone)]
struct Slots {
    requests: Arc<Semaphore>,
    backlog: Arc<Semaphore>,
}

impl Slots {
    fn new(concurrency: usize) -> Slots {
        let concurrency = concurrency.max(1);
        Slots {
            requests: Arc::new(Semaphore::new(concurrency)),
            backlog: Arc::new(Semaphore::new(
                concurrency + (concurrency * BACKLOG_PER_SLOT).min(MAX_BACKLOG_EXTRA),
            )),
        }
    }

    /// Waits for both slots; `None` once the semaphores are closed.
    async fn acquire(&self) -> Option<Slot> {
        let backlog = Arc::clone(&self.backlog).acquire_owned().await.ok()?;
        let request = Arc::clone(&self.requests).acquire_owned().await.ok()?;
        Some(Slot { request, backlog })
    }

    fn try_acquire(&self) -> Option<Slot> {
        let backlog = Arc::clone(&self.backlog).try_acquire_owned().ok()?;
        let request = Arc::clone(&self.requests).try_acquire_owned().ok()?;
        Some(Slot { request, backlog })
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.requests
            .available_permits()
            .min(self.backlog.available_permits())
    }
}

/// Polls due feeds until `shutdown` fires, then lets in-flight polls finish
/// (each is recorded atomically, so an abandoned one leaves nothing half
/// written) for at most `grace`.
///
/// Per-host limits are applied here, without waiting: a feed whose host
/// is busy (concurrency or spacing) is deferred to when the host frees up,
/// queued behind the host's other due feeds; a feed whose host asked us to
/// wait (429) is deferred to then. So a slow or strict host never holds a
/// global slot that another host's feed could use.
pub async fn run(
    store: Store,
    pipeline: Arc<Pipeline>,
    concurrency: usize,
    lease: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let slots = Slots::new(concurrency);
    let tracker = TaskTracker::new();
    let hosts = Arc::clone(pipeline.hosts());
    // Finished polls wake the loop: each one has just moved its feed's next
    // check, which may now be the earliest.
    let poll_done = Arc::new(tokio::sync::Notify::new());
    let lease = to_chrono(lease + LEASE_MARGIN);
    let mut full = FullBackoff::default();
    let mut ahead = Lookahead::new(concurrency);
    loop {
        let first = tokio::select! {
            s = slots.acquire() => match s {
                Some(s) => s,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        let now = Utc::now();
        ahead.release_stale(&store, now, lease).await;
        ahead.collect_prefetch().await;
        if ahead.ready.is_empty() {
            match store.lease_due(now, ahead.size, now + lease).await {
                Ok(due) => {
                    full.reset();
                    ahead.add(due, ahead.size, now + lease);
                }
                Err(e) => {
                    // A full disk is logged once per episode by the store;
                    // the wait grows while it lasts instead of spinning.
                    let wait = full.wait_after(&e);
                    if !e.is_full() {
                        tracing::error!(error = %e, "scheduler cannot read due feeds; retrying in 5s");
                    }
                    drop(first);
                    if sleep_or_cancel(wait, &shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        // The next batch is leased while this one is dispatched: a lease
        // is a writer round trip, which waits behind a group commit.
        ahead.prefetch(&store, now + lease);
        let plan = ahead.plan(first, &slots, &hosts, now);
        let dispatched = !plan.dispatch.is_empty();
        let deferred = !plan.defer.is_empty();
        for Dispatch { feed, slot, host } in plan.dispatch {
            let pipeline = Arc::clone(&pipeline);
            let poll_done = Arc::clone(&poll_done);
            let store = store.clone();
            tracker.spawn(async move {
                let Slot { request, backlog } = slot;
                match pipeline.poll(&feed, host, Some(request)).await {
                    Ok(_) => {}
                    // Logged once per episode by the store. The poll is
                    // tried again at the feed's own interval (not at the
                    // end of its lease), so writing resumes soon after
                    // space does; if even this small write fails, the
                    // lease brings the feed back.
                    Err(e) if e.is_full() => {
                        tracing::debug!(feed = %feed.spec.url, "poll not recorded: database full");
                        let at = Utc::now() + to_chrono(pipeline.policy().interval_for(&feed));
                        let _ = store.reschedule(feed.id, at).await;
                    }
                    Err(e) => {
                        tracing::error!(feed = %feed.spec.url, error = %e, "cannot record poll");
                    }
                }
                drop(backlog);
                poll_done.notify_one();
            });
        }
        // Deferred feeds are not being polled, so writing their new time
        // after the polls start cannot race a poll's own result. If this
        // fails their lease runs out and they come back on their own.
        if deferred && let Err(e) = store.defer(plan.defer).await {
            tracing::error!(error = %e, "cannot record deferred feeds; they retry after their lease");
        }
        // A full lease that was deferred may hide more due feeds behind it.
        if dispatched || plan.more || (!ahead.drained && deferred) {
            continue;
        }
        let wait = match store.next_due_at().await {
            Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default().min(MAX_IDLE),
            Ok(None) => MAX_IDLE,
            Err(e) => {
                tracing::error!(error = %e, "scheduler cannot read the schedule");
                Duration::from_secs(5)
            }
        };
        // Timestamps are whole seconds: never spin on a sub-second wait.
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
            () = poll_done.notified() => {}
            () = shutdown.cancelled() => break,
        }
    }
    ahead.release_all(&store, Utc::now()).await;
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_flight = tracker.len(),
            "shutdown: abandoning polls still running (their transactions roll back)"
        );
    }
}

/// Due feeds leased ahead per request slot, and at most: enough to keep
/// the slots busy across a writer round trip, few enough that a small
/// daemon does not mark hundreds of feeds "polling" that merely wait.
const LOOKAHEAD_PER_SLOT: usize = 4;
const MAX_LOOKAHEAD: usize = 256;

type LeaseTask = tokio::task::JoinHandle<Result<Vec<Feed>, crate::store::StoreError>>;

/// Feeds leased but not yet dispatched, and the next lease in flight.
///
/// Leasing one round at a time, the scheduler waited for a writer round
/// trip before every round, and the writer is often in the middle of a
/// group commit: in the polling benchmark rounds averaged 20 feeds and
/// the loop spent 6.8 s of an 11 s first cycle waiting for leases while
/// slots stood free. Now a lease takes up to `size` feeds (four per slot,
/// at most [`MAX_LOOKAHEAD`]) and the next one is asked for while this one
/// is dispatched.
///
/// A feed held here keeps its lease (`now + poll timeout + a margin`); it
/// is released (due again at once) once held for half the margin, and at
/// shutdown, so no lease can lapse while the feed waits here or polls.
struct Lookahead {
    /// Feeds asked for per lease, and the most held.
    size: usize,
    ready: VecDeque<Feed>,
    /// `ready` by lease, oldest first: how many feeds of each are left and
    /// when that lease runs out.
    leases: VecDeque<(usize, DateTime<Utc>)>,
    /// The lease in flight, with when it ends and how many it asked for.
    prefetch: Option<(LeaseTask, DateTime<Utc>, usize)>,
    /// The last lease returned fewer feeds than asked: nothing more is due
    /// now, so no lease is asked for ahead.
    drained: bool,
}

impl Lookahead {
    fn new(concurrency: usize) -> Lookahead {
        Lookahead {
            size: (concurrency.max(1) * LOOKAHEAD_PER_SLOT).min(MAX_LOOKAHEAD),
            ready: VecDeque::new(),
            leases: VecDeque::new(),
            prefetch: None,
            drained: false,
        }
    }

    fn add(&mut self, due: Vec<Feed>, asked: usize, until: DateTime<Utc>) {
        self.drained = due.len() < asked;
        if !due.is_empty() {
            self.leases.push_back((due.len(), until));
            self.ready.extend(due);
        }
    }

    /// One round of [`plan_round`] over the ready feeds.
    fn plan(
        &mut self,
        first: Slot,
        slots: &Slots,
        hosts: &Arc<HostLimiter>,
        now: DateTime<Utc>,
    ) -> Plan {
        let before = self.ready.len();
        let plan = plan_round(&mut self.ready, first, slots, hosts, now);
        // plan_round takes feeds from the front: the oldest leases first.
        let mut taken = before - self.ready.len();
        while taken > 0 {
            let Some(front) = self.leases.front_mut() else {
                break;
            };
            let n = front.0.min(taken);
            front.0 -= n;
            taken -= n;
            if front.0 == 0 {
                self.leases.pop_front();
            }
        }
        plan
    }

    /// Starts the next lease when fewer than half a lookahead is left.
    fn prefetch(&mut self, store: &Store, until: DateTime<Utc>) {
        if self.prefetch.is_some() || self.drained || self.ready.len() >= self.size / 2 {
            return;
        }
        let store = store.clone();
        let want = self.size - self.ready.len();
        let task = tokio::spawn(async move { store.lease_due(Utc::now(), want, until).await });
        self.prefetch = Some((task, until, want));
    }

    /// Takes a finished lease, or waits for one when nothing is ready. A
    /// failed one is dropped: the caller's own lease then meets the same
    /// error and handles it.
    async fn collect_prefetch(&mut self) {
        let done = self
            .prefetch
            .as_ref()
            .is_some_and(|(task, _, _)| task.is_finished() || self.ready.is_empty());
        if !done {
            return;
        }
        let Some((task, until, asked)) = self.prefetch.take() else {
            return;
        };
        match task.await {
            Ok(Ok(due)) => self.add(due, asked, until),
            Ok(Err(e)) => tracing::debug!(error = %e, "lease ahead failed"),
            Err(e) => tracing::debug!(error = %e, "lease ahead task failed"),
        }
    }

    /// Hands back feeds held too long: due again at once, not polled twice.
    /// `lease` is the whole lease (fetch timeout + [`LEASE_MARGIN`]). A
    /// feed dispatched from here must finish its poll before its lease
    /// ends, so nothing is dispatched once held for half the margin: a
    /// poll started then still ends (timeout) half a margin early.
    async fn release_stale(&mut self, store: &Store, now: DateTime<Utc>, lease: chrono::Duration) {
        let oldest = self.leases.front().map(|(_, at)| *at);
        let latest_start = |at: DateTime<Utc>| at - lease + to_chrono(LEASE_MARGIN / 2);
        if oldest.is_some_and(|at| now >= latest_start(at)) {
            self.release_all(store, now).await;
        }
    }

    async fn release_all(&mut self, store: &Store, now: DateTime<Utc>) {
        if let Some((task, _, _)) = self.prefetch.take()
            && let Ok(Ok(due)) = task.await
        {
            self.ready.extend(due);
        }
        let held: Vec<(i64, DateTime<Utc>)> = self.ready.drain(..).map(|f| (f.id, now)).collect();
        self.leases.clear();
        if !held.is_empty()
            && let Err(e) = store.defer(held).await
        {
            tracing::warn!(error = %e, "cannot hand back leased feeds; they come back when their lease ends");
        }
    }
}

struct Dispatch {
    feed: Feed,
    slot: Slot,
    host: Option<HostPermit>,
}

/// One round's decisions: feeds to poll now (with their slots), feeds to
/// move later, and whether due feeds were left for lack of global slots.
struct Plan {
    dispatch: Vec<Dispatch>,
    defer: Vec<(i64, DateTime<Utc>)>,
    more: bool,
}

fn plan_round(
    due: &mut VecDeque<Feed>,
    first: Slot,
    slots: &Slots,
    hosts: &Arc<HostLimiter>,
    now: DateTime<Utc>,
) -> Plan {
    let instant = Instant::now();
    let to_utc = |at: Instant| now + to_chrono(at.saturating_duration_since(instant));
    let mut plan = Plan {
        dispatch: Vec::new(),
        defer: Vec::new(),
        more: false,
    };
    let mut first = Some(first);
    // Feeds deferred per host this round, to queue them one spacing apart
    // instead of all at the same instant.
    let mut queued: HashMap<String, u32> = HashMap::new();
    while let Some(feed) = due.pop_front() {
        // A global slot first: when they run out the round ends with
        // `more`, and the rest wait in `due` for the next round. Taken
        // the other way round, a host whose limit is as high as the global
        // one looks busy exactly when the slots run out, and every feed left
        // in the batch was deferred a second further than the one before.
        let slot = match first.take() {
            Some(s) => s,
            None => match slots.try_acquire() {
                Some(s) => s,
                None => {
                    due.push_front(feed);
                    plan.more = true;
                    break;
                }
            },
        };
        let host = host_of(feed.effective_url()).unwrap_or_default();
        match hosts.try_acquire(&host, instant) {
            Ok(host_permit) => {
                plan.dispatch.push(Dispatch {
                    feed,
                    slot,
                    host: Some(host_permit),
                });
            }
            Err(busy) => {
                // The slot stays with this round for the next feed.
                first = Some(slot);
                match busy {
                    Busy::Blocked(until) => {
                        plan.defer.push((
                            feed.id,
                            to_utc(until) + to_chrono(jitter(Duration::from_secs(10))),
                        ));
                    }
                    Busy::Throttled(at) => {
                        let n = queued.entry(host).or_default();
                        *n += 1;
                        let step = hosts.spacing().max(Duration::from_secs(1));
                        plan.defer
                            .push((feed.id, to_utc(at) + to_chrono(step * (*n - 1))));
                    }
                }
            }
        }
    }
    plan
}

/// Fetches and cleans queued article pages until `shutdown` fires, at most
/// `concurrency` at once (and within per-host limits, which the fetch waits
/// for). Attempts are leased before they start, like polls; a failed one
/// comes back at its retry time, and the feed's own content stands until
/// an article that says more replaces it.
pub async fn run_articles(
    store: Store,
    pipeline: Arc<Pipeline>,
    concurrency: usize,
    lease: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let tracker = TaskTracker::new();
    let queued = Arc::clone(pipeline.articles_queued());
    let done = Arc::new(tokio::sync::Notify::new());
    let lease = to_chrono(lease + LEASE_MARGIN);
    let mut full = FullBackoff::default();
    loop {
        let first = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let now = Utc::now();
        let available = permits.available_permits() + 1;
        let jobs = match store.due_articles(now, available).await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot read due articles; retrying in 5s");
                drop(first);
                if sleep_or_cancel(Duration::from_secs(5), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        if jobs.is_empty() {
            drop(first);
            let wait = match store.next_article_at().await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default().min(MAX_IDLE),
                Ok(None) => MAX_IDLE,
                Err(_) => Duration::from_secs(5),
            };
            tokio::select! {
                () = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
                () = queued.notified() => {}
                () = done.notified() => {}
                () = shutdown.cancelled() => break,
            }
            continue;
        }
        let mut slots = vec![first];
        while slots.len() < jobs.len() {
            match Arc::clone(&permits).try_acquire_owned() {
                Ok(p) => slots.push(p),
                Err(_) => break,
            }
        }
        let jobs: Vec<_> = jobs.into_iter().take(slots.len()).collect();
        let ids = jobs.iter().map(|j| j.entry_id).collect();
        if let Err(e) = store.lease_articles(ids, now + lease).await {
            drop(slots);
            let wait = full.wait_after(&e);
            if !e.is_full() {
                tracing::error!(error = %e, "cannot lease articles; retrying in 5s");
            }
            if sleep_or_cancel(wait, &shutdown).await {
                break;
            }
            continue;
        }
        full.reset();
        for (job, slot) in jobs.into_iter().zip(slots) {
            let pipeline = Arc::clone(&pipeline);
            let store = store.clone();
            let done = Arc::clone(&done);
            tracker.spawn(async move {
                let record = pipeline.fetch_article(&job).await;
                match store.record_article(record).await {
                    Ok(true) => {
                        metrics::counter!("tributary_stories_merged_total").increment(1);
                        tracing::debug!(url = %job.url, "article merged into an earlier story");
                    }
                    Ok(false) => {}
                    Err(e) if e.is_full() => {
                        tracing::debug!(url = %job.url, "article not recorded: database full");
                    }
                    Err(e) => tracing::error!(url = %job.url, error = %e, "cannot record article"),
                }
                drop(slot);
                done.notify_one();
            });
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(grace, tracker.wait()).await;
}

/// How long a dispatch loop waits after a failed write: 5 s for an
/// ordinary error; on a full disk, 5 s doubling to 30 s while it stays
/// full, so a daemon that cannot write neither spins nor fills the log.
#[derive(Debug, Default)]
struct FullBackoff {
    /// Consecutive failed writes for lack of space.
    streak: u32,
}

const FULL_BACKOFF_MAX: Duration = Duration::from_secs(30);

impl FullBackoff {
    fn wait_after(&mut self, e: &crate::store::StoreError) -> Duration {
        if !e.is_full() {
            return Duration::from_secs(5);
        }
        let wait = Duration::from_secs(5)
            .saturating_mul(1 << self.streak.min(8))
            .min(FULL_BACKOFF_MAX);
        self.streak = self.streak.saturating_add(1);
        wait
    }

    fn reset(&mut self) {
        self.streak = 0;
    }
}

/// Sleeps; true when cancelled instead.
async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FeedOrigin, FeedSpec, FeedStatus, Validators};

    /// Feeds leased ahead and held for half the lease margin are handed
    /// back (due at once), so a poll started from the queue always ends
    /// before its lease; fresher ones stay.
    #[tokio::test]
    async fn feeds_held_ahead_too_long_are_handed_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = Utc::now();
        let (store, _) = crate::store::store_with_feeds(dir.path(), 3, now).await;
        let lease = to_chrono(Duration::from_secs(30) + LEASE_MARGIN);
        // Four per slot, capped: a small daemon holds few feeds ahead.
        assert_eq!(Lookahead::new(2).size, 8);
        assert_eq!(Lookahead::new(1_000).size, MAX_LOOKAHEAD);
        let mut ahead = Lookahead::new(1);
        let due = store
            .lease_due(now, ahead.size, now + lease)
            .await
            .expect("lease");
        assert_eq!(due.len(), 3);
        ahead.add(due, ahead.size, now + lease);

        let fresh = now + to_chrono(LEASE_MARGIN / 2) - chrono::Duration::seconds(1);
        ahead.release_stale(&store, fresh, lease).await;
        assert_eq!(ahead.ready.len(), 3, "held under half the margin: kept");

        let stale = now + to_chrono(LEASE_MARGIN / 2);
        ahead.release_stale(&store, stale, lease).await;
        assert!(ahead.ready.is_empty());
        let again = store
            .lease_due(stale, ahead.size, stale + lease)
            .await
            .expect("lease");
        assert_eq!(again.len(), 3, "handed back feeds are due at once");
        store.close().await.expect("close");
    }

    fn feed(interval: Option<u64>) -> Feed {
        Feed {
            id: 1,
            spec: FeedSpec {
                url: "https://example.com/feed".into(),
                title: None,
                tags: vec![],
                interval: interval.map(Duration::from_secs),
                full_text: None,
                request: Default::default(),
                rules: Default::default(),
            },
            origin: FeedOrigin::Config,
            status: FeedStatus::Active,
            fetch_url: None,
            pending_redirect: None,
            current_interval: None,
            schedule_reason: None,
            learned_interval: None,
            hints: FeedHints::default(),
            site_title: None,
            site_url: None,
            validators: Validators::default(),
            next_check_at: DateTime::UNIX_EPOCH,
            last_checked_at: None,
            last_success_at: None,
            last_status: None,
            last_error: None,
            error_count: 0,
            entry_count: 0,
        }
    }

    fn policy() -> SchedulePolicy {
        SchedulePolicy {
            interval: Duration::from_secs(3600),
            min_interval: Duration::from_secs(300),
            max_interval: Duration::from_secs(86400),
            max_backoff: Duration::from_secs(86400),
            adaptive: true,
        }
    }

    fn secs_after(now: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
        (t - now).num_seconds()
    }

    fn ok(p: &SchedulePolicy, f: &Feed, facts: PollFacts<'_>, now: DateTime<Utc>) -> (i64, String) {
        let s = p.after_success(f, facts, now);
        (secs_after(now, s.next_check_at), s.reason)
    }

    #[test]
    fn success_waits_one_interval_with_jitter() {
        let now = Utc::now();
        for _ in 0..100 {
            let (s, why) = ok(&policy(), &feed(None), PollFacts::default(), now);
            assert!((3240..=3960).contains(&s), "{s}");
            assert_eq!(why, "interval");
        }
    }

    #[test]
    fn per_feed_interval_is_fixed_but_not_below_floor() {
        let p = policy();
        assert_eq!(p.interval_for(&feed(Some(7200))), Duration::from_secs(7200));
        assert_eq!(p.interval_for(&feed(Some(10))), Duration::from_secs(300));
        let facts = PollFacts {
            learned_interval: Some(Duration::from_secs(60)),
            ..PollFacts::default()
        };
        let (_, why) = ok(&p, &feed(Some(7200)), facts, Utc::now());
        assert_eq!(why, "fixed");
    }

    #[test]
    fn adaptive_interval_is_half_the_publishing_gap_within_bounds() {
        let p = policy();
        let now = Utc::now();
        let cases = [(6 * 3600, 3 * 3600), (60, 300), (30 * 86400, 86400)];
        for (gap, expect) in cases {
            let facts = PollFacts {
                learned_interval: Some(Duration::from_secs(gap)),
                ..PollFacts::default()
            };
            let s = p.after_success(&feed(None), facts, now);
            assert_eq!(s.interval, Duration::from_secs(expect), "gap {gap}");
            assert_eq!(s.reason, "adaptive");
        }
        let fixed = SchedulePolicy {
            adaptive: false,
            ..policy()
        };
        let facts = PollFacts {
            learned_interval: Some(Duration::from_secs(6 * 3600)),
            ..PollFacts::default()
        };
        assert_eq!(
            fixed.after_success(&feed(None), facts, now).reason,
            "interval"
        );
    }

    #[test]
    fn server_and_document_hints_are_never_undercut_but_are_capped() {
        let p = policy();
        let now = Utc::now();
        let hints = FeedHints {
            ttl: Some(Duration::from_secs(2 * 3600)),
            ..FeedHints::default()
        };
        let facts = PollFacts {
            hints: Some(&hints),
            ..PollFacts::default()
        };
        assert_eq!(ok(&p, &feed(None), facts, now), (7200, "ttl".to_owned()));
        let facts = PollFacts {
            freshness: Some(Freshness {
                lifetime: Duration::from_secs(10 * 86400),
                source: "max-age",
            }),
            ..PollFacts::default()
        };
        assert_eq!(
            ok(&p, &feed(None), facts, now),
            (86400, "max-age".to_owned())
        );
        // A short max-age does not make us poll sooner than the interval.
        let facts = PollFacts {
            freshness: Some(Freshness {
                lifetime: Duration::from_secs(60),
                source: "max-age",
            }),
            ..PollFacts::default()
        };
        assert_eq!(ok(&p, &feed(None), facts, now).1, "interval");
    }

    #[test]
    fn skip_days_move_to_the_next_allowed_day() {
        use chrono::{Datelike, TimeZone};
        let p = policy();
        // A Friday noon; the next check would land Friday 13:00 ± jitter.
        let now = Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .single()
            .expect("date");
        let hints = FeedHints {
            skip_days: vec![4, 5, 6], // Friday, Saturday, Sunday
            ..FeedHints::default()
        };
        let facts = PollFacts {
            hints: Some(&hints),
            ..PollFacts::default()
        };
        let s = p.after_success(&feed(None), facts, now);
        assert_eq!(s.reason, "skipHours");
        assert_eq!(s.next_check_at.weekday(), chrono::Weekday::Mon);
        assert_eq!(s.next_check_at.hour_minute(), (0, 0));
    }

    trait HourMinute {
        fn hour_minute(&self) -> (u32, u32);
    }
    impl HourMinute for DateTime<Utc> {
        fn hour_minute(&self) -> (u32, u32) {
            use chrono::Timelike;
            (self.hour(), self.minute())
        }
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let now = Utc::now();
        let p = policy();
        let expect = [
            (1, 3600),
            (2, 7200),
            (3, 14400),
            (5, 57600),
            (6, 86400),
            (40, 86400),
        ];
        for (errors, base) in expect {
            let s = p.after_failure(&feed(None), errors, None, now);
            let secs = secs_after(now, s.next_check_at);
            let lo = (base as f64 * 0.9) as i64 - 1;
            let hi = ((base as f64 * 1.1) as i64).min(86400);
            assert!(
                (lo..=hi).contains(&secs),
                "errors={errors}: {secs} not in {lo}..={hi}"
            );
            assert_eq!(s.reason, "backoff");
        }
    }

    #[test]
    fn retry_after_extends_backoff() {
        let now = Utc::now();
        let s = policy().after_failure(&feed(None), 1, Some(Duration::from_secs(20000)), now);
        assert_eq!(secs_after(now, s.next_check_at), 20000);
        assert_eq!(s.reason, "retry-after");
        // Capped at max_backoff.
        let s = policy().after_failure(&feed(None), 1, Some(Duration::from_secs(10 * 86400)), now);
        assert_eq!(secs_after(now, s.next_check_at), 86400);
    }

    #[test]
    fn retry_after_parses_both_forms() {
        let now = Utc::now();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let past = httpdate::fmt_http_date((now - chrono::Duration::seconds(10)).into());
        assert_eq!(parse_retry_after(&past, now), None);
        let future = httpdate::fmt_http_date((now + chrono::Duration::seconds(100)).into());
        let d = parse_retry_after(&future, now).expect("future date");
        assert!((98..=100).contains(&d.as_secs()), "{d:?}");
    }

    /// Regression: with the host limit as high as the global one, running
    /// out of global slots made the rest of the batch look host-throttled,
    /// and each was deferred a second after the one before (the polling
    /// benchmark's first 1,000 feeds took 140 s instead of 3).
    #[tokio::test(start_paused = true)]
    async fn running_out_of_global_slots_defers_nothing() {
        use crate::hosts::HostLimits;
        let slots = Slots::new(2);
        let hosts = HostLimiter::new(HostLimits {
            concurrency: 2,
            spacing: Duration::ZERO,
        });
        let mut due: VecDeque<Feed> = (1..=5).map(|id| Feed { id, ..feed(None) }).collect();
        let first = slots.try_acquire().expect("slot");
        let plan = plan_round(&mut due, first, &slots, &hosts, Utc::now());
        let ids: Vec<i64> = plan.dispatch.iter().map(|d| d.feed.id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(plan.defer.is_empty(), "{:?}", plan.defer);
        assert!(plan.more);
        // The rest stay queued, in order, for the next round.
        let left: Vec<i64> = due.iter().map(|f| f.id).collect();
        assert_eq!(left, [3, 4, 5]);
    }

    /// A poll's request slot bounds requests in flight and comes back as
    /// soon as its response is read; its backlog slot bounds polls still
    /// being parsed or recorded, a few per request slot.
    #[tokio::test]
    async fn request_slots_free_early_and_the_backlog_bounds_the_rest() {
        let slots = Slots::new(2);
        let a = slots.try_acquire().expect("first");
        let _b = slots.try_acquire().expect("second");
        assert!(slots.try_acquire().is_none(), "two requests at most");
        // `a` has its response: it parses and records while another starts.
        let Slot { request, backlog } = a;
        drop(request);
        let mut held = vec![backlog];
        while let Some(s) = slots.try_acquire() {
            let Slot { request, backlog } = s;
            drop(request);
            held.push(backlog);
        }
        // The second slot still holds its request; the rest are backlog.
        assert_eq!(held.len() + 1, 2 + 2 * BACKLOG_PER_SLOT);
        assert_eq!(slots.available(), 0);
        held.pop();
        assert!(slots.try_acquire().is_some());
        // A large pool gets a bounded backlog.
        let big = Slots::new(1000);
        assert_eq!(big.backlog.available_permits(), 1000 + MAX_BACKLOG_EXTRA);
    }

    /// A host at its own limit still defers its feeds, and the global slot
    /// it did not use goes to the next host's feed.
    #[tokio::test(start_paused = true)]
    async fn a_busy_host_defers_and_passes_its_slot_on() {
        use crate::hosts::HostLimits;
        let slots = Slots::new(4);
        let hosts = HostLimiter::new(HostLimits {
            concurrency: 1,
            spacing: Duration::ZERO,
        });
        let on = |id: i64, host: &str| {
            let mut f = feed(None);
            f.id = id;
            f.spec.url = format!("https://{host}/feed");
            f
        };
        let mut due = VecDeque::from([on(1, "a.example"), on(2, "a.example"), on(3, "b.example")]);
        let first = slots.try_acquire().expect("slot");
        let plan = plan_round(&mut due, first, &slots, &hosts, Utc::now());
        let ids: Vec<i64> = plan.dispatch.iter().map(|d| d.feed.id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(plan.defer.len(), 1);
        assert_eq!(plan.defer[0].0, 2);
        assert!(!plan.more);
        assert_eq!(slots.requests.available_permits(), 2);
    }

    fn entry_at(now: DateTime<Utc>, hours_ago: i64) -> ParsedEntry {
        ParsedEntry {
            key: format!("guid:{hours_ago}"),
            title: None,
            link: None,
            content_html: None,
            content_base: None,
            authors: vec![],
            categories: vec![],
            published: Some(now - chrono::Duration::hours(hours_ago)),
            updated: None,
            enclosures: vec![],
            url_keys: vec![],
            content_hash: None,
        }
    }

    #[test]
    fn publishing_interval_is_the_median_gap() {
        let now = Utc::now();
        let entries: Vec<ParsedEntry> = [0, 6, 12, 18, 100]
            .iter()
            .map(|h| entry_at(now, *h))
            .collect();
        assert_eq!(
            learn_interval(&entries),
            Some(Duration::from_secs(6 * 3600))
        );
        assert_eq!(
            learn_interval(&entries[..2]),
            None,
            "two dates are too little"
        );
    }
}
