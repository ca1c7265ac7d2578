//! The dispatch loop: the one place that decides which feed is polled now,
//! for the daemon (`tributary run`) and for `tributary poll` alike.
//!
//! [`run`] takes its feeds from a [`Work`]: the daemon's schedule (feeds
//! leased from the store as they fall due, until shutdown) or a list
//! (`tributary poll`: each feed polled once, then it returns). Either way
//! each feed goes to the pipeline ([`Pipeline::poll`]: fetch → parse →
//! store) under the same caps:
//!
//! - **Request slots** (`concurrency`): a poll holds one only for its HTTP
//!   exchange, and a backlog slot until it is recorded, so fetching
//!   overlaps parsing and the group commit (a poll never holds its request
//!   slot through the commit's gathering wait), and the parsed feeds
//!   waiting for the writer stay bounded.
//! - **Per-host limits** ([`crate::hosts`]), taken without waiting: a feed
//!   whose host is busy waits in that host's queue, in memory, holding
//!   nothing. The queue starts its next feed as soon as the host may take
//!   one (a request to it ends, or its spacing has passed), so it drains
//!   at the host's own pace — N feeds at spacing s take about N·s — while
//!   feeds on other hosts, and article fetches, go past it.
//!
//! In the daemon a host's queue keeps what the host can start within
//! [`HORIZON`]; feeds further back are deferred in the store to their
//! projected turn, so one host with thousands of due feeds neither fills
//! memory nor hides the due feeds of other hosts from the next lease.
//! Every feed held in memory keeps its lease in the store; a lease that
//! could run out before the poll would end is renewed, never handed back.
//!
//! Article pages go through the same loop: leased as they fall due (a poll
//! that queued some wakes it), they wait in the same host queues, in
//! arrival order with that host's feeds, under their own cap (`[extract]
//! concurrency`), so a busy host delays neither another host's articles
//! nor its own for longer than its turn.
//!
//! On a cluster (PostgreSQL) the per-host limits must hold for all nodes
//! together: this node claims work only on hosts no other node holds and
//! takes their leases with it ([`HostTenancy`]); the limiter starts a
//! request only under a lease that covers it whole. Once a second the
//! loop hands back hosts it no longer uses, renews the rest and asks for
//! hosts a fetch wanted; jobs on a host it lost go back to the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hosts::{Busy, HostLimiter, HostPermit, host_of};
use crate::model::{ArticleJob, Feed};
use crate::pipeline::{Pipeline, PollSummary};
use crate::store::{ClusterShare, HostGrant, Store, StoreError, Tenant};

/// Longest wait between two looks at the database, so feeds added by the
/// CLI while the daemon runs are picked up without a signal.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How far ahead a host's queue is held in memory in the daemon; feeds
/// whose projected turn is later are deferred in the store to that turn.
/// Well inside half the lease margin, so a held feed rarely needs its
/// lease renewed.
pub const HORIZON: Duration = Duration::from_secs(20);

/// Most feeds one host's queue holds in memory, however fast the host.
const MAX_HOST_QUEUE: usize = 1024;

/// A host's pace is never taken as faster than this when projecting turns
/// (a host with no spacing whose requests have not been timed yet).
const MIN_PACE: Duration = Duration::from_millis(1);

/// How often held feeds' leases are looked at.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// On a cluster, how often (at most) this node looks at its host leases:
/// hands back the hosts it no longer uses, renews the others before they
/// run short, and asks for hosts a fetch wanted.
const HOST_PASS: Duration = Duration::from_secs(1);

/// A host lease must still run this long beyond the fetch timeout and the
/// spacing for a request to start under it (slack for the database's
/// answer to reach the node), or a quarter of `lease_margin` if less.
const HOLD_MARGIN: Duration = Duration::from_secs(2);

/// A host lease runs the fetch timeout, the spacing and this much more
/// (or `lease_margin` if less, so a dead node's hosts come back no later
/// than its feeds); it is renewed once half of what it has beyond a
/// request's need is used.
const LEASE_SLACK: Duration = Duration::from_secs(12);

/// How long a node keeps claiming work for a host it holds; then it
/// finishes what it holds (at most [`HORIZON`]) and hands the host back,
/// so hosts with a backlog go round the nodes.
const TENURE: Duration = Duration::from_secs(30);

/// A host held this long without a break has a backlog: hosts with one
/// are shared out evenly among the nodes.
const BUSY_AFTER: Duration = Duration::from_secs(3);

/// How soon a job this node holds for a host it lost (another node took
/// it after this node's lease ran out) is due again, for that node.
const HANDED_BACK: chrono::Duration = chrono::Duration::seconds(1);

/// How long `tributary poll` waits before it asks again for a host another
/// node holds.
const UNOWNED_RETRY: Duration = Duration::from_millis(500);

/// Due feeds leased ahead per request slot, and at most: enough to keep
/// the slots busy across a writer round trip (a lease waits behind a group
/// commit), few enough that a small daemon does not mark hundreds of
/// feeds "polling" that merely wait.
const LOOKAHEAD_PER_SLOT: usize = 4;
const MAX_LOOKAHEAD: usize = 256;

/// Polls past their request that may wait to be parsed and recorded: three
/// per request slot, at most [`MAX_BACKLOG_EXTRA`] (a parsed feed is tens
/// of kilobytes; a large `concurrency` must not turn into a large heap).
const BACKLOG_PER_SLOT: usize = 3;
const MAX_BACKLOG_EXTRA: usize = 192;

/// The caps a dispatch loop works under, from `[poll]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests in flight at once (`concurrency`).
    pub concurrency: usize,
    /// Article pages fetched at once (`[extract] concurrency`).
    pub article_concurrency: usize,
    /// The fetch timeout: how long a poll may take.
    pub timeout: Duration,
    /// How long a dispatched feed or page is held back from being
    /// dispatched again (by this node or another) beyond the fetch
    /// timeout (`[poll] lease_margin`); the poll's own result replaces it.
    pub lease_margin: Duration,
    /// How long in-flight polls may finish after shutdown.
    pub grace: Duration,
}

/// What `tributary poll` hears of each poll and article attempt.
pub enum Polled {
    /// A feed's poll, with the feed's id.
    Feed(i64, Result<PollSummary, StoreError>),
    /// An article attempt: `"extracted"`, `"failed"` or `"deferred"`, and
    /// whether the entry was merged into an earlier story.
    Article(Result<(&'static str, bool), StoreError>),
}

/// Where a dispatch loop's feeds come from.
pub enum Work {
    /// The daemon: feeds and article pages leased from the store as they
    /// fall due, until shutdown.
    Schedule,
    /// `tributary poll`: these feeds, each polled once, and every article
    /// page due meanwhile (those the polls queue too), each tried once;
    /// every result is sent on `done`, and [`run`] returns once all are
    /// recorded.
    Once {
        feeds: Vec<Feed>,
        done: mpsc::UnboundedSender<Polled>,
    },
}

/// Polls feeds and fetches article pages from `work` until it is done (a
/// list) or `shutdown` fires (the schedule), then lets in-flight work
/// finish (each poll is recorded atomically, so an abandoned one leaves
/// nothing half written) — for at most `limits.grace` after a shutdown.
pub async fn run(
    store: Store,
    pipeline: Arc<Pipeline>,
    limits: Limits,
    work: Work,
    shutdown: CancellationToken,
) {
    let hosts = Arc::clone(pipeline.hosts());
    let articles_queued = Arc::clone(pipeline.articles_queued());
    let once = matches!(work, Work::Once { .. });
    let tenancy = store
        .shares_hosts()
        .then(|| HostTenancy::new(store.clone(), Arc::clone(&hosts), &limits));
    let (feeds, report) = match work {
        Work::Schedule => (
            Feeds::Schedule(Leasing::new(Kind::Feed, limits.concurrency, false)),
            None,
        ),
        Work::Once { feeds, done } => (
            Feeds::Once {
                total: feeds.len(),
                list: feeds.into(),
            },
            Some(done),
        ),
    };
    let mut d = Dispatcher {
        store: store.clone(),
        pipeline,
        hosts: Arc::clone(&hosts),
        slots: Slots::new(limits.concurrency),
        article_slots: Arc::new(Semaphore::new(limits.article_concurrency.max(1))),
        lease: to_chrono(limits.timeout + limits.lease_margin),
        timeout: limits.timeout,
        lease_margin: limits.lease_margin,
        // Often enough that a held job's lease, renewed when it would end
        // within the timeout plus half the margin, never runs out between
        // two looks.
        renew_every: RENEW_EVERY.min(limits.lease_margin / 2),
        feeds,
        articles: Leasing::new(Kind::Article, limits.article_concurrency, once),
        tenancy,
        next_host_pass: Instant::now(),
        report,
        queues: HashMap::new(),
        defers: Vec::new(),
        article_defers: Vec::new(),
        seq: 0,
        tracker: TaskTracker::new(),
        poll_done: Arc::new(Notify::new()),
        article_done: Arc::new(Notify::new()),
        finished: Arc::new(AtomicUsize::new(0)),
        articles_running: Arc::new(AtomicUsize::new(0)),
        next_renewal: Instant::now() + RENEW_EVERY.min(limits.lease_margin / 2),
    };
    if let Some(t) = &d.tenancy {
        // Counted among the nodes before the first claim, so a node
        // starting beside others takes no more than its share.
        t.pass(&Default::default(), &[], Vec::new()).await;
    }
    let slots = d.slots.clone();
    let poll_done = Arc::clone(&d.poll_done);
    let article_done = Arc::clone(&d.article_done);
    let lease_ready = Arc::new(Notify::new());
    let mut first: Option<Slot> = None;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Enabled before the hosts are looked at: a request that ends
        // while this round runs still wakes the wait below.
        let released = hosts.released();
        tokio::pin!(released);
        released.as_mut().enable();
        d.refill(Utc::now(), Instant::now(), &lease_ready).await;
        d.renew(Utc::now(), Instant::now()).await;
        d.host_pass(Instant::now()).await;
        // Taken after the writer round trips above: a host's spacing is
        // counted from when its request really starts.
        let (now, instant) = (Utc::now(), Instant::now());
        let need_slot = d.dispatch(first.take(), now, instant);
        d.flush_defers().await;
        if d.finished() {
            break;
        }
        let wake = d.next_wake(instant);
        let leasing =
            d.articles.task.is_some() || matches!(&d.feeds, Feeds::Schedule(l) if l.task.is_some());
        tokio::select! {
            s = slots.acquire(), if need_slot => match s {
                Some(s) => first = Some(s),
                None => break,
            },
            () = &mut released => {}
            () = poll_done.notified() => d.polled(Instant::now()),
            () = article_done.notified() => {}
            () = articles_queued.notified() => d.articles.next_look = Instant::now(),
            () = lease_ready.notified(), if leasing => {}
            () = tokio::time::sleep_until(wake) => {}
            () = shutdown.cancelled() => break,
        }
    }
    drop(first);
    d.release_all(Utc::now()).await;
    d.tracker.close();
    if d.report.is_some() && !shutdown.is_cancelled() {
        // `tributary poll` waits for everything it started.
        d.tracker.wait().await;
    } else if tokio::time::timeout(limits.grace, d.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = d.tracker.len(),
            "shutdown: abandoning polls still running (their transactions roll back)"
        );
    }
    if let Some(t) = &d.tenancy {
        // Only hosts with nothing in flight: an abandoned request keeps
        // its host until the lease runs out.
        t.release_all().await;
    }
}

/// A process's id among the nodes of a cluster: the same across reloads,
/// so a new dispatch loop takes over the leases of the one before.
fn node_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
    })
}

/// This node's hold on hosts on a cluster (PostgreSQL): the leases the
/// store grants ([`Store::lease_due_on_hosts`] and the other claims take
/// them with the work, [`Store::take_hosts`] for a fetch's other hosts)
/// and the limiter that enforces them. Cheap to clone.
#[derive(Clone)]
struct HostTenancy {
    store: Store,
    tenant: Tenant,
    hosts: Arc<HostLimiter>,
    /// A lease in use is renewed once it runs shorter than this.
    renew_below: Duration,
    /// How often the leases are looked at.
    pass_every: Duration,
    /// How many more hosts with a backlog this node may take (its room
    /// under its even share of them), from the last heartbeat.
    room: Arc<AtomicUsize>,
    /// Hosts this node holds over its share: it claims no more for them,
    /// finishes what it holds and hands them back.
    leaving: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The cluster as the last heartbeat found it.
    share: Arc<std::sync::Mutex<ClusterShare>>,
    /// Held across each lease statement and its effect on the limiter, so
    /// a claim's grant and a hand-back of the same host never interleave
    /// (a host handed back in the store while the limiter still counts it
    /// as held, or the reverse).
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl HostTenancy {
    fn new(store: Store, hosts: Arc<HostLimiter>, limits: &Limits) -> HostTenancy {
        let need = limits.timeout + hosts.spacing();
        let hold_for = need + HOLD_MARGIN.min(limits.lease_margin / 4);
        let lease = need + LEASE_SLACK.min(limits.lease_margin);
        let slack = lease.saturating_sub(hold_for);
        hosts.enable_tenancy(hold_for);
        HostTenancy {
            store,
            tenant: Tenant {
                node: node_id().to_owned(),
                lease,
                tenure: TENURE,
            },
            hosts,
            room: Arc::new(AtomicUsize::new(usize::MAX)),
            leaving: Arc::default(),
            share: Arc::new(std::sync::Mutex::new(ClusterShare {
                nodes: 1,
                backlog: 0,
            })),
            renew_below: hold_for + slack / 2,
            pass_every: HOST_PASS.min(slack / 3).max(Duration::from_millis(100)),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A claim's grants, and the room its new hosts with a backlog used.
    fn took<T>(&self, claimed: &crate::store::Claimed<T>) {
        self.grant(&claimed.hosts);
        let _ = self
            .room
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                Some(r.saturating_sub(claimed.new_backlog_hosts))
            });
    }

    fn grant(&self, grants: &[HostGrant]) {
        for g in grants {
            self.hosts.grant(&g.host, g.until, g.free_at);
        }
    }

    /// Hands back the hosts no longer used (nothing in flight, held or
    /// just finished), renews the rest before they run short, asks for
    /// the hosts in `wanted`, and keeps this node to its share of the
    /// hosts with a backlog (`queued`: how many jobs wait for each host
    /// here): over it, it gives up the ones with the longest queues.
    async fn pass(
        &self,
        held: &std::collections::HashSet<String>,
        queued: &[(String, usize)],
        wanted: Vec<String>,
    ) {
        let _order = self.lock.lock().await;
        let now = Instant::now();
        let mut keep = Vec::new();
        let mut release = Vec::new();
        let mut leased = std::collections::HashSet::new();
        let mut busy: Vec<(String, usize, Duration)> = Vec::new();
        let leaving = self
            .leaving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for mut t in self.hosts.tenancy(now) {
            // A host handed on goes the moment nothing runs for it.
            if leaving.contains(&t.host) && t.in_flight == 0 {
                t.busy = false;
            }
            if t.held >= BUSY_AFTER {
                let waiting = queued
                    .iter()
                    .find(|(h, _)| *h == t.host)
                    .map_or(0, |(_, n)| *n);
                busy.push((t.host.clone(), waiting, t.held));
            }
            if t.busy || held.contains(&t.host) {
                if t.until < now + self.renew_below {
                    keep.push(t.host.clone());
                }
                leased.insert(t.host);
            } else if self.hosts.revoke(&t.host, true) {
                release.push((t.host, t.wait));
            } else {
                leased.insert(t.host);
            }
        }
        if !keep.is_empty() || !release.is_empty() {
            match self
                .store
                .renew_hosts(&self.tenant, keep.clone(), release)
                .await
            {
                Ok(renewed) => {
                    for g in &renewed {
                        self.hosts.extend(&g.host, g.until);
                    }
                    for host in keep {
                        if !renewed.iter().any(|g| g.host == host) {
                            tracing::warn!(%host, "lost the lease on a host; another node has it");
                            self.hosts.revoke(&host, false);
                            leased.remove(&host);
                        }
                    }
                }
                // The leases run out by themselves: the limiter stops
                // sending before the store's lease ends.
                Err(e) => tracing::warn!(error = %e, "cannot renew host leases"),
            }
        }
        let wanted: Vec<String> = wanted.into_iter().filter(|h| !leased.contains(h)).collect();
        if !wanted.is_empty() {
            match self.store.take_hosts(&self.tenant, wanted).await {
                Ok(grants) => self.grant(&grants),
                Err(e) => tracing::warn!(error = %e, "cannot take host leases"),
            }
        }
        busy.retain(|(h, _, _)| leased.contains(h));
        self.heartbeat(busy).await;
    }

    /// Tells the cluster this node lives and how many hosts with a backlog
    /// it keeps; gives up those over its share; updates its room.
    /// `busy`: the hosts held long enough to have a backlog, with how many
    /// jobs wait for each here and how long it has been held.
    async fn heartbeat(&self, busy: Vec<(String, usize, Duration)>) {
        let share = *self.share.lock().unwrap_or_else(|p| p.into_inner());
        let mut backlog: Vec<(String, usize, Duration)> = {
            let mut leaving = self.leaving.lock().unwrap_or_else(|p| p.into_inner());
            leaving.retain(|h| busy.iter().any(|(b, _, _)| b == h));
            busy.into_iter()
                .filter(|(h, _, _)| !leaving.contains(h))
                .collect()
        };
        let mut leaving = Vec::new();
        if share.nodes > 1 && backlog.len() > share.share() {
            // The longest queues (then the longest held) go first.
            backlog.sort_by_key(|b| std::cmp::Reverse((b.1, b.2)));
            let over = backlog.len() - share.share();
            leaving = backlog.drain(..over).map(|(h, _, _)| h).collect();
            tracing::debug!(hosts = ?leaving, "over this node's share of busy hosts; handing them on");
        }
        match self
            .store
            .heartbeat(&self.tenant, backlog.len(), leaving.clone())
            .await
        {
            Ok(now) => {
                self.leaving
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(leaving);
                // Up to its share; one more when every node is at its
                // share, or a host with a backlog nobody holds yet would
                // wait for a node to join.
                let full = now.share() * now.nodes <= now.backlog;
                let room = if now.nodes <= 1 {
                    usize::MAX
                } else {
                    (now.share() + usize::from(full)).saturating_sub(backlog.len())
                };
                self.room.store(room, Ordering::SeqCst);
                *self.share.lock().unwrap_or_else(|p| p.into_inner()) = now;
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell the cluster this node lives"),
        }
    }

    /// At the end of a dispatch loop: hands back every host with nothing
    /// in flight.
    async fn release_all(&self) {
        let _order = self.lock.lock().await;
        let now = Instant::now();
        let release: Vec<(String, Duration)> = self
            .hosts
            .tenancy(now)
            .into_iter()
            .filter(|t| self.hosts.revoke(&t.host, true))
            .map(|t| (t.host, t.wait))
            .collect();
        if !release.is_empty()
            && let Err(e) = self
                .store
                .renew_hosts(&self.tenant, Vec::new(), release)
                .await
        {
            tracing::warn!(error = %e, "cannot hand hosts back; their leases run out");
        }
        if let Err(e) = self.store.leave_cluster(&self.tenant).await {
            tracing::warn!(error = %e, "cannot leave the cluster; it stops counting this node in 5 s");
        }
    }
}

/// What a poll holds while it runs. A request slot (one of `concurrency`)
/// covers only the HTTP exchange and is handed to the pipeline, which
/// drops it once the response is read; a backlog slot (a few per request
/// slot, bounded) is held until the poll is recorded. So the next requests
/// overlap parsing and writing, the global cap still bounds requests in
/// flight, and the backlog bounds the parsed feeds waiting for the writer
/// — which also lets the writer commit them in larger batches.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Feed,
    Article,
}

/// One request to make: a feed to poll or an article page to fetch.
#[expect(
    clippy::large_enum_variant,
    reason = "jobs held are few (a lookahead, a host's horizon) and move rarely"
)]
enum Job {
    Feed(Feed),
    Article(ArticleJob),
}

impl Job {
    fn kind(&self) -> Kind {
        match self {
            Job::Feed(_) => Kind::Feed,
            Job::Article(_) => Kind::Article,
        }
    }

    /// The feed's id or the article's entry id (each kind its own).
    fn id(&self) -> i64 {
        match self {
            Job::Feed(f) => f.id,
            Job::Article(a) => a.entry_id,
        }
    }

    fn url(&self) -> &str {
        match self {
            Job::Feed(f) => f.effective_url(),
            Job::Article(a) => &a.url,
        }
    }
}

/// The right to start a job: a feed's request and backlog slots, or one
/// of the article worker's `[extract] concurrency`.
enum Ticket {
    Feed(Slot),
    Article(OwnedSemaphorePermit),
}

/// A job held in memory until it can start, with the end of its lease in
/// the store (`None` for feeds `tributary poll` was given).
struct Held {
    job: Job,
    lease_until: Option<DateTime<Utc>>,
    /// Order of arrival, across hosts: the longest-waiting head goes first.
    seq: u64,
}

/// What a host queue's head does this round.
enum Step {
    Start(Box<Held>, HostPermit),
    /// The host is busy (or the queue empty): the ticket goes on.
    Wait,
    Blocked(Vec<Held>, Instant),
    /// On a cluster, another node has the host now.
    HandBack(Vec<Held>),
}

/// Jobs waiting for one host's turn, feeds and articles in arrival order.
struct HostQueue {
    jobs: VecDeque<Held>,
    /// When the host may take a request again (its spacing, a 429); a
    /// host at its concurrency limit is tried again when a request ends.
    retry_at: Instant,
    /// The projected turn of the last job given to this host, held here
    /// or deferred in the store: where the next one's turn is counted from.
    tail: Instant,
}

/// Jobs of one kind leased from the store, a lease ahead.
struct Leasing {
    kind: Kind,
    /// Jobs asked for per lease, and the most held in `ready`.
    size: usize,
    /// Leased jobs not looked at yet, oldest lease first.
    ready: VecDeque<Held>,
    /// The lease in flight, with when it ends and how many it asked for.
    task: Option<(LeaseTask, DateTime<Utc>, usize)>,
    /// When to ask the store again while nothing is due.
    next_look: Instant,
    full: FullBackoff,
    /// Jobs this loop deferred to their host's turn, and when: when one
    /// falls due again it takes its turn instead of being counted anew.
    returning: HashMap<i64, DateTime<Utc>>,
    /// `tributary poll`: the articles already tried in this pass (each is
    /// tried once), and how many polls had finished when the last lease
    /// that found nothing new was asked for.
    attempted: Option<std::collections::HashSet<i64>>,
    empty_after: Option<usize>,
    asked_after: usize,
}

/// A lease: the jobs due now and, when there were fewer than asked for,
/// when the next one falls due.
struct Leased {
    jobs: Vec<Job>,
    next_due: Option<DateTime<Utc>>,
}

/// The answer to a lease asked for in the background; the task sends it
/// before it wakes the loop, so the loop finds it when woken.
type LeaseTask = tokio::sync::oneshot::Receiver<Result<Leased, StoreError>>;

impl Leasing {
    fn new(kind: Kind, concurrency: usize, once: bool) -> Leasing {
        Leasing {
            kind,
            size: (concurrency.max(1) * LOOKAHEAD_PER_SLOT).min(MAX_LOOKAHEAD),
            ready: VecDeque::new(),
            task: None,
            next_look: Instant::now(),
            full: FullBackoff::default(),
            returning: HashMap::new(),
            attempted: once.then(std::collections::HashSet::new),
            empty_after: None,
            asked_after: 0,
        }
    }

    /// Takes a finished lease, and asks for the next one (in the
    /// background) once fewer than half a lookahead are ready: the next
    /// batch is leased while this one is dispatched. `held` is how many
    /// of this kind wait in host queues; `polled`, how many polls have
    /// finished (for `tributary poll`).
    async fn refill(
        &mut self,
        store: &Store,
        tenancy: Option<&HostTenancy>,
        (now, instant): (DateTime<Utc>, Instant),
        lease: chrono::Duration,
        (held, polled): (usize, usize),
        done: &Arc<Notify>,
    ) {
        let cluster = tenancy.is_some();
        let answer = match self.task.as_mut().map(|(t, _, _)| t.try_recv()) {
            None | Some(Err(tokio::sync::oneshot::error::TryRecvError::Empty)) => None,
            Some(Ok(answer)) => Some(Ok(answer)),
            Some(Err(tokio::sync::oneshot::error::TryRecvError::Closed)) => Some(Err(())),
        };
        if let Some(answer) = answer
            && let Some((_, until, asked)) = self.task.take()
        {
            match answer {
                Ok(Ok(leased)) => {
                    self.full.reset();
                    let drained = leased.jobs.len() < asked;
                    let mut fresh = 0;
                    for job in leased.jobs {
                        if let Some(tried) = &mut self.attempted
                            && !tried.insert(job.id())
                        {
                            continue;
                        }
                        fresh += 1;
                        self.ready.push_back(Held {
                            job,
                            lease_until: Some(until),
                            seq: 0,
                        });
                    }
                    if fresh == 0 {
                        self.empty_after = Some(self.asked_after);
                    }
                    self.next_look = if drained {
                        // Whole seconds in the store: never spin on less.
                        let wait = leased
                            .next_due
                            .map_or(MAX_IDLE, |at| (at - now).to_std().unwrap_or_default());
                        // On a cluster, work due and not handed out is on
                        // other nodes' hosts: about a second between looks,
                        // jittered, so the node that looks first when work
                        // falls due is not always the same one.
                        let least = if cluster {
                            Duration::from_millis(500 + fastrand::u64(0..1000))
                        } else {
                            Duration::from_millis(200)
                        };
                        instant + wait.clamp(least, MAX_IDLE)
                    } else {
                        instant
                    };
                }
                Ok(Err(e)) => {
                    // A full disk is logged once per episode by the store;
                    // the wait grows while it lasts instead of spinning.
                    let wait = self.full.wait_after(&e);
                    if !e.is_full() {
                        tracing::error!(error = %e, "cannot lease due work; retrying in 5s");
                    }
                    self.next_look = instant + wait;
                }
                Err(()) => {
                    tracing::error!("lease task failed; retrying in 5s");
                    self.next_look = instant + Duration::from_secs(5);
                }
            }
        }
        // `tributary poll` holds no more than a lookahead of articles at
        // once; the daemon defers what a host cannot start soon.
        let room = self.attempted.is_none() || self.ready.len() + held < self.size;
        if self.task.is_none()
            && room
            && self.ready.len() < self.size / 2
            && instant >= self.next_look
        {
            let store = store.clone();
            let want = self.size - self.ready.len();
            let until = now + lease;
            let done = Arc::clone(done);
            let kind = self.kind;
            self.asked_after = polled;
            let tenancy = tenancy.cloned();
            let (answer, task) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let leased = lease_due(&store, tenancy.as_ref(), kind, want, until).await;
                let _ = answer.send(leased);
                done.notify_one();
            });
            self.task = Some((task, until, want));
        }
    }
}

/// Leases up to `want` due jobs of `kind` until `until`; on a cluster,
/// only jobs on hosts this node holds or could take, taking them.
async fn lease_due(
    store: &Store,
    tenancy: Option<&HostTenancy>,
    kind: Kind,
    want: usize,
    until: DateTime<Utc>,
) -> Result<Leased, StoreError> {
    let now = Utc::now();
    let jobs: Vec<Job> = match (kind, tenancy) {
        (Kind::Feed, None) => store
            .lease_due(now, want, until)
            .await?
            .into_iter()
            .map(Job::Feed)
            .collect(),
        (Kind::Article, None) => store
            .claim_articles(now, want, until)
            .await?
            .into_iter()
            .map(Job::Article)
            .collect(),
        (Kind::Feed, Some(t)) => {
            let _order = t.lock.lock().await;
            let room = t.room.load(Ordering::SeqCst);
            let claimed = store
                .lease_due_on_hosts(&t.tenant, now, want, until, host_of, room)
                .await?;
            t.took(&claimed);
            claimed.jobs.into_iter().map(Job::Feed).collect()
        }
        (Kind::Article, Some(t)) => {
            let _order = t.lock.lock().await;
            let room = t.room.load(Ordering::SeqCst);
            let claimed = store
                .claim_articles_on_hosts(&t.tenant, now, want, until, host_of, room)
                .await?;
            t.took(&claimed);
            claimed.jobs.into_iter().map(Job::Article).collect()
        }
    };
    let next_due = if jobs.len() < want {
        match kind {
            Kind::Feed => store.next_due_at().await.unwrap_or(None),
            Kind::Article => store.next_article_at().await.unwrap_or(None),
        }
    } else {
        None
    };
    Ok(Leased { jobs, next_due })
}

enum Feeds {
    Schedule(Leasing),
    Once { list: VecDeque<Feed>, total: usize },
}

struct Dispatcher {
    store: Store,
    pipeline: Arc<Pipeline>,
    hosts: Arc<HostLimiter>,
    slots: Slots,
    article_slots: Arc<Semaphore>,
    /// A whole lease: the fetch timeout plus `lease_margin`.
    lease: chrono::Duration,
    timeout: Duration,
    lease_margin: Duration,
    renew_every: Duration,
    feeds: Feeds,
    articles: Leasing,
    /// On a cluster, this node's host leases.
    tenancy: Option<HostTenancy>,
    next_host_pass: Instant,
    /// Where `tributary poll` hears each result.
    report: Option<mpsc::UnboundedSender<Polled>>,
    queues: HashMap<String, HostQueue>,
    /// Feeds and articles to move in the store, written once per round.
    defers: Vec<(i64, DateTime<Utc>)>,
    article_defers: Vec<(i64, DateTime<Utc>)>,
    seq: u64,
    tracker: TaskTracker,
    poll_done: Arc<Notify>,
    article_done: Arc<Notify>,
    /// Polls recorded (or failed to be), for `tributary poll` to know
    /// when it is done.
    finished: Arc<AtomicUsize>,
    articles_running: Arc<AtomicUsize>,
    next_renewal: Instant,
}

impl Dispatcher {
    fn once(&self) -> bool {
        matches!(self.feeds, Feeds::Once { .. })
    }

    async fn refill(&mut self, now: DateTime<Utc>, instant: Instant, done: &Arc<Notify>) {
        let polled = self.finished.load(Ordering::SeqCst);
        if let Feeds::Once { total, .. } = &self.feeds
            && polled >= *total
            && self.articles.task.is_none()
            && self.articles.empty_after < Some(*total)
        {
            // Every poll is recorded: look again (until a look finds
            // nothing new) for the articles the last of them queued.
            self.articles.next_look = instant;
        }
        let (mut feeds_held, mut articles_held) = (0, 0);
        for h in self.queues.values().flat_map(|q| q.jobs.iter()) {
            match h.job.kind() {
                Kind::Feed => feeds_held += 1,
                Kind::Article => articles_held += 1,
            }
        }
        if let Feeds::Schedule(leasing) = &mut self.feeds {
            leasing
                .refill(
                    &self.store,
                    self.tenancy.as_ref(),
                    (now, instant),
                    self.lease,
                    (feeds_held, polled),
                    done,
                )
                .await;
        }
        self.articles
            .refill(
                &self.store,
                self.tenancy.as_ref(),
                (now, instant),
                self.lease,
                (articles_held, polled),
                done,
            )
            .await;
    }

    /// Starts every job that can start now: first the heads of the host
    /// queues whose host is free (longest waiting first), then the feeds
    /// and articles not looked at yet. Returns whether feeds that could
    /// start wait for a request slot.
    fn dispatch(&mut self, mut slot: Option<Slot>, now: DateTime<Utc>, instant: Instant) -> bool {
        let mut need_slot = false;
        let once = self.once();
        let mut heads: Vec<(u64, String)> = self
            .queues
            .iter()
            .filter(|(_, q)| q.retry_at <= instant)
            .filter_map(|(h, q)| q.jobs.front().map(|f| (f.seq, h.clone())))
            .collect();
        heads.sort_unstable();
        for (_, host) in heads {
            while let Some(kind) = self
                .queues
                .get(&host)
                .and_then(|q| q.jobs.front())
                .map(|h| h.job.kind())
            {
                let Some(ticket) = self.ticket(kind, &mut slot) else {
                    need_slot |= kind == Kind::Feed;
                    break;
                };
                let step = match self.queues.get_mut(&host) {
                    None => Step::Wait,
                    Some(q) => match self.hosts.try_acquire(&host, Instant::now()) {
                        Ok(permit) => match q.jobs.pop_front() {
                            Some(held) => Step::Start(Box::new(held), permit),
                            None => Step::Wait,
                        },
                        Err(Busy::Full) => {
                            q.retry_at = instant;
                            Step::Wait
                        }
                        Err(Busy::Throttled(at)) => {
                            q.retry_at = at;
                            Step::Wait
                        }
                        Err(Busy::Blocked(until)) => {
                            // A 429 arrived while jobs queued for the host.
                            q.tail = instant;
                            Step::Blocked(q.jobs.drain(..).collect(), until)
                        }
                        Err(Busy::Unowned) if once => {
                            // `tributary poll` waits for the host.
                            self.hosts.want(&host);
                            q.retry_at = instant + UNOWNED_RETRY;
                            Step::Wait
                        }
                        Err(Busy::Unowned) => {
                            // This node lost the host: its jobs go back to
                            // the store, for the node that has it.
                            q.tail = instant;
                            Step::HandBack(q.jobs.drain(..).collect())
                        }
                    },
                };
                match step {
                    Step::Start(held, permit) => {
                        if let Some(t) = self.start(held.job, ticket, Some(permit)) {
                            give_back(t, &mut slot);
                        }
                    }
                    Step::Wait => {
                        give_back(ticket, &mut slot);
                        break;
                    }
                    Step::Blocked(held, until) => {
                        give_back(ticket, &mut slot);
                        for h in held {
                            self.blocked(h, None, until, now, instant);
                        }
                        break;
                    }
                    Step::HandBack(held) => {
                        give_back(ticket, &mut slot);
                        for h in held {
                            self.hand_back(h, now);
                        }
                        break;
                    }
                }
            }
        }
        for kind in [Kind::Feed, Kind::Article] {
            while let Some(held) = self.next_fresh(kind) {
                let host = host_of(held.job.url()).unwrap_or_default();
                if self.queues.get(&host).is_some_and(|q| !q.jobs.is_empty()) {
                    // Behind the jobs already waiting for this host.
                    self.enqueue(host, held, instant, now, instant);
                    continue;
                }
                let Some(ticket) = self.ticket(kind, &mut slot) else {
                    self.put_back(held);
                    need_slot |= kind == Kind::Feed;
                    break;
                };
                match self.hosts.try_acquire(&host, Instant::now()) {
                    Ok(permit) => {
                        if let Some(t) = self.start(held.job, ticket, Some(permit)) {
                            give_back(t, &mut slot);
                        }
                    }
                    Err(Busy::Blocked(until)) => {
                        if let Some(t) = self.blocked(held, Some(ticket), until, now, instant) {
                            give_back(t, &mut slot);
                        }
                    }
                    Err(Busy::Full) => {
                        give_back(ticket, &mut slot);
                        self.enqueue(host, held, instant, now, instant);
                    }
                    Err(Busy::Throttled(at)) => {
                        give_back(ticket, &mut slot);
                        self.enqueue(host, held, at, now, instant);
                    }
                    Err(Busy::Unowned) if once => {
                        give_back(ticket, &mut slot);
                        self.hosts.want(&host);
                        self.enqueue(host, held, instant + UNOWNED_RETRY, now, instant);
                    }
                    Err(Busy::Unowned) => {
                        give_back(ticket, &mut slot);
                        self.hand_back(held, now);
                    }
                }
            }
        }
        need_slot
    }

    /// A job leased for a host this node no longer holds goes back to the
    /// store, due in a moment for the node that holds the host.
    fn hand_back(&mut self, held: Held, now: DateTime<Utc>) {
        let at = now + HANDED_BACK;
        match held.job.kind() {
            Kind::Feed => self.defers.push((held.job.id(), at)),
            Kind::Article => self.article_defers.push((held.job.id(), at)),
        }
    }

    /// On a cluster, once a [`HOST_PASS`] (or less): hands back the hosts this node
    /// no longer uses, renews the rest, and asks for hosts fetches wanted.
    async fn host_pass(&mut self, instant: Instant) {
        let Some(t) = self.tenancy.clone() else {
            return;
        };
        if instant < self.next_host_pass {
            return;
        }
        // Hosts being handed on are looked at more often: other nodes
        // wait for them.
        let handing_on = !t
            .leaving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        let every = if handing_on {
            t.pass_every.min(Duration::from_millis(250))
        } else {
            t.pass_every
        };
        self.next_host_pass = instant + every;
        let mut held: std::collections::HashSet<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.jobs.is_empty())
            .map(|(h, _)| h.clone())
            .collect();
        let ready = match &self.feeds {
            Feeds::Schedule(l) => Some(l.ready.iter()),
            Feeds::Once { .. } => None,
        };
        for h in ready
            .into_iter()
            .flatten()
            .chain(self.articles.ready.iter())
        {
            if let Some(host) = host_of(h.job.url()) {
                held.insert(host);
            }
        }
        let queued: Vec<(String, usize)> = self
            .queues
            .iter()
            .map(|(h, q)| (h.clone(), q.jobs.len()))
            .collect();
        t.pass(&held, &queued, self.hosts.take_wanted()).await;
    }

    /// A feed's slot (the one held, else a free one) or an article's.
    fn ticket(&self, kind: Kind, slot: &mut Option<Slot>) -> Option<Ticket> {
        match kind {
            Kind::Feed => slot
                .take()
                .or_else(|| self.slots.try_acquire())
                .map(Ticket::Feed),
            Kind::Article => Arc::clone(&self.article_slots)
                .try_acquire_owned()
                .ok()
                .map(Ticket::Article),
        }
    }

    /// Starts a job with its ticket; hands the ticket back when the two
    /// do not match (never, as the callers take them).
    fn start(&self, job: Job, ticket: Ticket, host: Option<HostPermit>) -> Option<Ticket> {
        match (job, ticket) {
            (Job::Feed(feed), Ticket::Feed(slot)) => {
                self.spawn_poll(feed, slot, host);
                None
            }
            (Job::Article(article), Ticket::Article(permit)) => {
                self.spawn_article(article, permit, host);
                None
            }
            (_, ticket) => Some(ticket),
        }
    }

    /// A job whose host asked us (429) to stay away until `until`: the
    /// daemon moves it to then; `tributary poll` runs it anyway, which
    /// records it as deferred without sending a request.
    fn blocked(
        &mut self,
        held: Held,
        ticket: Option<Ticket>,
        until: Instant,
        now: DateTime<Utc>,
        instant: Instant,
    ) -> Option<Ticket> {
        if self.once() {
            let Some(ticket) = ticket else {
                // It goes round again, taking a ticket of its own.
                self.put_back(held);
                return None;
            };
            return self.start(held.job, ticket, None);
        }
        let at = now
            + to_chrono(until.saturating_duration_since(instant))
            + to_chrono(crate::policy::jitter(Duration::from_secs(10)));
        match held.job.kind() {
            Kind::Feed => self.defers.push((held.job.id(), at)),
            Kind::Article => self.article_defers.push((held.job.id(), at)),
        }
        ticket
    }

    /// Puts a job in its host's queue, or — in the daemon, when its turn
    /// is beyond [`HORIZON`] — defers it in the store to that turn.
    /// `free_at` is when the host said it may take a request.
    fn enqueue(
        &mut self,
        host: String,
        mut held: Held,
        free_at: Instant,
        now: DateTime<Utc>,
        instant: Instant,
    ) {
        let pace = self.hosts.pace(&host).max(MIN_PACE);
        let once = self.once();
        self.seq += 1;
        held.seq = self.seq;
        let q = self.queues.entry(host).or_insert_with(|| HostQueue {
            jobs: VecDeque::new(),
            retry_at: free_at,
            tail: instant,
        });
        if q.jobs.is_empty() {
            q.retry_at = free_at;
        }
        let turn = if q.jobs.is_empty() && q.tail <= instant {
            free_at.max(instant)
        } else {
            q.tail.max(instant) + pace
        };
        if once {
            q.jobs.push_back(held);
            return;
        }
        let kind = held.job.kind();
        let leasing = match (kind, &mut self.feeds) {
            (Kind::Feed, Feeds::Schedule(l)) => l,
            (Kind::Feed, Feeds::Once { .. }) => {
                q.jobs.push_back(held);
                return;
            }
            (Kind::Article, _) => &mut self.articles,
        };
        if leasing.returning.remove(&held.job.id()).is_some() {
            // Its turn was counted when it was deferred.
            q.jobs.push_back(held);
            return;
        }
        q.tail = turn;
        if turn > instant + HORIZON || q.jobs.len() >= MAX_HOST_QUEUE {
            // Timestamps in the store are whole seconds: at least one
            // second on, or it would be due again at once.
            let at = (now + to_chrono(turn.saturating_duration_since(instant)))
                .max(now + chrono::Duration::seconds(1));
            leasing.returning.insert(held.job.id(), at);
            match kind {
                Kind::Feed => self.defers.push((held.job.id(), at)),
                Kind::Article => self.article_defers.push((held.job.id(), at)),
            }
        } else {
            q.jobs.push_back(held);
        }
    }

    /// The next job of `kind` not looked at yet.
    fn next_fresh(&mut self, kind: Kind) -> Option<Held> {
        match (kind, &mut self.feeds) {
            (Kind::Feed, Feeds::Schedule(l)) => l.ready.pop_front(),
            (Kind::Feed, Feeds::Once { list, .. }) => list.pop_front().map(|feed| Held {
                job: Job::Feed(feed),
                lease_until: None,
                seq: 0,
            }),
            (Kind::Article, _) => self.articles.ready.pop_front(),
        }
    }

    fn put_back(&mut self, held: Held) {
        match (held.job, &mut self.feeds) {
            (Job::Feed(feed), Feeds::Once { list, .. }) => list.push_front(feed),
            (Job::Feed(feed), Feeds::Schedule(l)) => l.ready.push_front(Held {
                job: Job::Feed(feed),
                ..held
            }),
            (job @ Job::Article(_), _) => self.articles.ready.push_front(Held { job, ..held }),
        }
    }

    fn spawn_poll(&self, feed: Feed, slot: Slot, host: Option<HostPermit>) {
        let pipeline = Arc::clone(&self.pipeline);
        let poll_done = Arc::clone(&self.poll_done);
        let finished = Arc::clone(&self.finished);
        let store = self.store.clone();
        let report = self.report.clone();
        self.tracker.spawn(async move {
            let Slot { request, backlog } = slot;
            let result = pipeline.poll(&feed, host, Some(request)).await;
            match (report, result) {
                (Some(report), result) => {
                    let _ = report.send(Polled::Feed(feed.id, result));
                }
                (None, Ok(_)) => {}
                // Logged once per episode by the store. The poll is tried
                // again at the feed's own interval (not at the end of its
                // lease), so writing resumes soon after space does; if even
                // this small write fails, the lease brings the feed back.
                (None, Err(e)) if e.is_full() => {
                    tracing::debug!(feed = %feed.spec.url, "poll not recorded: database full");
                    let at = Utc::now() + to_chrono(pipeline.policy().interval_for(&feed));
                    let _ = store.reschedule(feed.id, at).await;
                }
                (None, Err(e)) => {
                    tracing::error!(feed = %feed.spec.url, error = %e, "cannot record poll");
                }
            }
            drop(backlog);
            finished.fetch_add(1, Ordering::SeqCst);
            poll_done.notify_one();
        });
    }

    /// Fetches and cleans one article page and records the attempt. A
    /// failure is recorded with its retry time; the feed's own content
    /// stands until an article that says more replaces it.
    fn spawn_article(
        &self,
        job: ArticleJob,
        permit: OwnedSemaphorePermit,
        host: Option<HostPermit>,
    ) {
        let pipeline = Arc::clone(&self.pipeline);
        let store = self.store.clone();
        let report = self.report.clone();
        let done = Arc::clone(&self.article_done);
        let running = Arc::clone(&self.articles_running);
        running.fetch_add(1, Ordering::SeqCst);
        self.tracker.spawn(async move {
            let record = pipeline.fetch_article(&job, host).await;
            let result = match &record.outcome {
                crate::model::ArticleOutcome::Extracted { .. } => "extracted",
                crate::model::ArticleOutcome::Failed { .. } => "failed",
                crate::model::ArticleOutcome::Deferred => "deferred",
            };
            let recorded = store.record_article(record).await;
            match &recorded {
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
            if let Some(report) = report {
                let _ = report.send(Polled::Article(recorded.map(|merged| (result, merged))));
            }
            drop(permit);
            running.fetch_sub(1, Ordering::SeqCst);
            done.notify_one();
        });
    }

    /// A poll ended: it has moved its feed's next check, which may now be
    /// the earliest, so the store is asked again soon.
    fn polled(&mut self, instant: Instant) {
        if let Feeds::Schedule(l) = &mut self.feeds {
            l.next_look = l.next_look.min(instant + Duration::from_secs(1));
        }
    }

    async fn flush_defers(&mut self) {
        // Deferred jobs are not running, so writing their new time cannot
        // race their own result. If this fails their lease runs out and
        // they come back on their own.
        if !self.defers.is_empty() {
            let defers = std::mem::take(&mut self.defers);
            if let Err(e) = self.store.defer(defers).await {
                tracing::error!(error = %e, "cannot record deferred feeds; they retry after their lease");
            }
        }
        if !self.article_defers.is_empty() {
            let defers = std::mem::take(&mut self.article_defers);
            if let Err(e) = self.store.defer_articles(defers).await {
                tracing::error!(error = %e, "cannot record deferred articles; they retry after their lease");
            }
        }
    }

    /// Renews the leases of held jobs that might otherwise run out before
    /// they end (a job started now ends within the fetch timeout), in one
    /// write per kind; a job waiting for a slow host keeps its place.
    async fn renew(&mut self, now: DateTime<Utc>, instant: Instant) {
        if instant < self.next_renewal {
            return;
        }
        self.next_renewal = instant + self.renew_every;
        let old = now - chrono::Duration::minutes(10);
        self.articles.returning.retain(|_, at| *at > old);
        let soon = now + to_chrono(self.timeout + self.lease_margin / 2);
        let until = now + self.lease;
        let mut feeds = Vec::new();
        let mut articles = Vec::new();
        let mut held: Vec<&mut Held> = self
            .queues
            .values_mut()
            .flat_map(|q| q.jobs.iter_mut())
            .collect();
        if let Feeds::Schedule(l) = &mut self.feeds {
            l.returning.retain(|_, at| *at > old);
            held.extend(l.ready.iter_mut());
        }
        held.extend(self.articles.ready.iter_mut());
        for h in held {
            if h.lease_until.is_some_and(|at| at < soon) {
                h.lease_until = Some(until);
                match h.job.kind() {
                    Kind::Feed => feeds.push((h.job.id(), until)),
                    Kind::Article => articles.push((h.job.id(), until)),
                }
            }
        }
        // Queues of hosts with nothing held or projected go.
        self.queues
            .retain(|_, q| !q.jobs.is_empty() || q.tail > instant);
        if !feeds.is_empty() || !articles.is_empty() {
            tracing::debug!(
                feeds = feeds.len(),
                articles = articles.len(),
                "renewing leases of work waiting for its host"
            );
        }
        if !feeds.is_empty()
            && let Err(e) = self.store.defer(feeds).await
        {
            tracing::warn!(error = %e, "cannot renew leases; those feeds may be polled late");
        }
        if !articles.is_empty()
            && let Err(e) = self.store.defer_articles(articles).await
        {
            tracing::warn!(error = %e, "cannot renew article leases");
        }
    }

    /// `tributary poll` is done once every feed it was given is recorded
    /// and every article due meanwhile has been tried.
    fn finished(&self) -> bool {
        let Feeds::Once { total, .. } = &self.feeds else {
            return false;
        };
        self.finished.load(Ordering::SeqCst) >= *total
            && self.articles.task.is_none()
            && self.articles.ready.is_empty()
            && self.articles.empty_after >= Some(*total)
            && self.articles_running.load(Ordering::SeqCst) == 0
            && self.queues.values().all(|q| q.jobs.is_empty())
    }

    /// When to look again without being woken: the next host whose
    /// spacing or block ends, the next look at the store, a renewal.
    fn next_wake(&self, instant: Instant) -> Instant {
        let mut wake = instant + MAX_IDLE;
        for q in self.queues.values() {
            if !q.jobs.is_empty() && q.retry_at > instant {
                wake = wake.min(q.retry_at);
            }
        }
        let leasings = [
            match &self.feeds {
                Feeds::Schedule(l) => Some(l),
                Feeds::Once { .. } => None,
            },
            Some(&self.articles),
        ];
        for l in leasings.into_iter().flatten() {
            if l.task.is_none() {
                wake = wake.min(l.next_look.max(instant));
            }
        }
        if !self.once() {
            wake = wake.min(self.next_renewal.max(instant + Duration::from_millis(200)));
        }
        if self.tenancy.is_some() {
            wake = wake.min(
                self.next_host_pass
                    .max(instant + Duration::from_millis(200)),
            );
        }
        wake
    }

    /// At shutdown (or a reload): hands every job held in memory back to
    /// the store, due at once, so the next loop starts with them.
    async fn release_all(&mut self, now: DateTime<Utc>) {
        if self.once() {
            return;
        }
        let mut feeds: Vec<(i64, DateTime<Utc>)> = Vec::new();
        let mut articles: Vec<(i64, DateTime<Utc>)> = Vec::new();
        let mut held: Vec<Held> = self
            .queues
            .values_mut()
            .flat_map(|q| q.jobs.drain(..))
            .collect();
        held.extend(self.articles.ready.drain(..));
        if let Some((task, _, _)) = self.articles.task.take()
            && let Ok(Ok(leased)) = task.await
        {
            articles.extend(leased.jobs.iter().map(|j| (j.id(), now)));
        }
        if let Feeds::Schedule(l) = &mut self.feeds {
            held.extend(l.ready.drain(..));
            if let Some((task, _, _)) = l.task.take()
                && let Ok(Ok(leased)) = task.await
            {
                feeds.extend(leased.jobs.iter().map(|j| (j.id(), now)));
            }
        }
        for h in held {
            match h.job.kind() {
                Kind::Feed => feeds.push((h.job.id(), now)),
                Kind::Article => articles.push((h.job.id(), now)),
            }
        }
        feeds.append(&mut self.defers);
        articles.append(&mut self.article_defers);
        if !feeds.is_empty()
            && let Err(e) = self.store.defer(feeds).await
        {
            tracing::warn!(error = %e, "cannot hand back leased feeds; they come back when their lease ends");
        }
        if !articles.is_empty()
            && let Err(e) = self.store.defer_articles(articles).await
        {
            tracing::warn!(error = %e, "cannot hand back leased articles; they come back when their lease ends");
        }
    }
}

/// A ticket not used: a feed's slot stays with the round, an article's
/// permit goes back to its semaphore.
fn give_back(ticket: Ticket, slot: &mut Option<Slot>) {
    if let Ticket::Feed(s) = ticket {
        *slot = Some(s);
    }
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
    fn wait_after(&mut self, e: &StoreError) -> Duration {
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

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
