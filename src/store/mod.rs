//! Storage: the narrow, async interface the rest of the program uses to keep
//! feeds, entries and polling state.
//!
//! Callers see plain model types and [`StoreError`]; all SQL lives in
//! [`sqlite`]. A second backend would implement the same methods. One writer
//! connection takes every write (so writers never contend for SQLite's lock)
//! and separate reader connections serve the HTTP outputs; WAL mode lets
//! the readers run while the writer commits, and a checkpointer thread copy
//! the WAL into the database beside it. Each runs on its own thread, so no
//! SQLite call ever blocks an async worker.
//!
//! Faults are named here, not discovered by callers: a read-only or corrupt
//! file is a start-up error that says which file and what to do; a full
//! disk ([`StoreError::Full`]) is a pause in writing, logged once per
//! episode, while reads (and so the outputs) carry on.

mod backup;
mod checkpoint;
mod migrate;
mod postgres;
mod rows;
mod sqlite;
mod stories;
#[cfg(test)]
pub(crate) mod suite;

pub use backup::{BackupError, BackupProgress, BackupReport, backup};
pub use migrate::{MigrateError, MigrateProgress, MigrateReport, TableSummary, migrate_db};
pub use sqlite::{REDIRECT_CONFIRMATIONS, entry_uid};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{ErrorCode, OpenFlags};

use crate::database::Database;
use crate::model::{
    ArticleJob, ArticleRecord, Cursor, Feed, FeedOrigin, FeedSpec, FeedStatus, OutputEntry,
    PollRecord, PollReport,
};

/// Store failures. Each message already contains its cause (SQLite's own
/// text), so the cause is deliberately not exposed again as `source()`:
/// error chains printed with context would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open database {path}: {cause} (check that its directory exists and the daemon's user may write there; if this is not a Tributary database, move it away or point `database` elsewhere)"
    )]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "cannot bring database {path} up to date: {cause} (if the file is corrupt, restore a backup)"
    )]
    Migrate {
        path: PathBuf,
        cause: rusqlite_migration::Error,
    },
    #[error(
        "database {path} is read-only ({cause}): Tributary must write the file and create {path}-wal and {path}-shm beside it; make the file and its directory writable by the user the daemon runs as (under systemd, keep it in StateDirectory=)"
    )]
    ReadOnly { path: PathBuf, cause: String },
    #[error(
        "database {path} is corrupt or not a SQLite database ({detail}): restore a backup (`tributary backup FILE` makes one), or move the file away to start with an empty database"
    )]
    Corrupt { path: PathBuf, detail: String },
    /// The disk (or a size cap) is full. The write's transaction was
    /// rolled back; nothing of it was kept.
    #[error("database full: {path}: {cause}")]
    Full { path: PathBuf, cause: String },
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("the database connection is closed")]
    Closed,
    /// A batch of polls could not be committed; every poll in it gets this
    /// (the message of the one SQLite error, which cannot be cloned).
    #[error("database error: {0}")]
    Batch(String),
    /// The PostgreSQL server cannot be reached, or refuses the login. The
    /// URL is shown without its password.
    #[error("cannot connect to PostgreSQL at {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("cannot bring the PostgreSQL database at {url} up to date: {cause}")]
    PgMigrate { url: String, cause: String },
    #[error("database error: {}", pg_cause(.0))]
    Postgres(tokio_postgres::Error),
}

/// What went wrong on PostgreSQL, in words: the server's own message and
/// SQLSTATE (tokio-postgres shows only "db error" for those), else the
/// driver's with its cause ("error connecting to server: Connection
/// refused").
pub(super) fn pg_cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

impl StoreError {
    /// A full disk: writes are paused, not broken; retry later.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }

    /// Names a fault of the file itself (read-only, corrupt, full) with its
    /// path; other errors stay as they are.
    fn classify(self, path: &Path) -> StoreError {
        let cause = match &self {
            StoreError::Sqlite(e) | StoreError::Open { cause: e, .. } => e,
            StoreError::Migrate {
                cause: rusqlite_migration::Error::RusqliteError { err, .. },
                ..
            } => err,
            _ => return self,
        };
        let (code, cause) = (cause.sqlite_error_code(), cause.to_string());
        let path = path.to_owned();
        match code {
            Some(ErrorCode::DiskFull) => StoreError::Full { path, cause },
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { path, cause },
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path,
                detail: cause,
            },
            _ => self,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<tokio_rusqlite::Error<rusqlite::Error>> for StoreError {
    fn from(e: tokio_rusqlite::Error<rusqlite::Error>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(e) => StoreError::Sqlite(e),
            tokio_rusqlite::Error::Close((_, e)) => StoreError::Sqlite(e),
            _ => StoreError::Closed,
        }
    }
}

/// Whether `add_feeds` created a subscription or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Added,
    Exists,
}

/// What syncing the config's `[[feed]]` tables changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
}

/// A version stamp of everything the outputs show: `rev` moves whenever an
/// entry, or a feed's name, changes; `search` also whenever the search
/// index takes in entries, which changes what a search finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub rev: i64,
    pub changed_at: DateTime<Utc>,
    pub search: i64,
    pub search_changed_at: DateTime<Utc>,
}

impl Default for Revision {
    fn default() -> Self {
        Revision {
            rev: 0,
            changed_at: DateTime::UNIX_EPOCH,
            search: 0,
            search_changed_at: DateTime::UNIX_EPOCH,
        }
    }
}

/// An entry queued for the search index, as the outputs now show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchSource {
    pub entry_id: i64,
    /// How often the entry was queued again while it waited: the index
    /// takes words read at this count only.
    pub generation: i64,
    pub title: Option<String>,
    /// The used article's HTML, else the feed's content as given.
    pub html: Option<String>,
}

/// What an entry is indexed under: its title and the words of its
/// content, made from a [`SearchSource`] of that `generation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDoc {
    pub entry_id: i64,
    pub generation: i64,
    pub title: String,
    pub words: String,
}

/// What one batch of search indexing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStep {
    /// Entries indexed (or reindexed).
    pub indexed: usize,
    /// Whether more entries wait.
    pub more: bool,
}

/// Where an entry's article stands (for tests and status views).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArticleState {
    /// "pending", "done" or "failed".
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub word_count: Option<usize>,
    /// Whether the article replaced the feed's content in the outputs.
    pub used: bool,
}

/// What one retention step removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Entries deleted (with their sources, articles and search rows).
    pub entries: usize,
    /// Tombstones written, so the entries do not come back.
    pub tombstones: usize,
}

impl std::ops::AddAssign for Purged {
    fn add_assign(&mut self, other: Purged) {
        self.entries += other.entries;
        self.tombstones += other.tombstones;
    }
}

/// The database file's size, from its page counts (the WAL file aside).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbSize {
    /// Pages in the file, free ones included.
    pub file_bytes: u64,
    /// Pages in use: what `[retention] max_database_size` caps.
    pub used_bytes: u64,
    /// Whether free pages can be handed back in small steps
    /// (`auto_vacuum = INCREMENTAL`); otherwise they are reused in place.
    pub incremental_vacuum: bool,
}

/// One feed's polls on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedDay {
    /// Days since 1970-01-01.
    pub day: i64,
    pub polls: u32,
    /// Polls answered `304 Not Modified`.
    pub not_modified: u32,
    /// Polls that failed (network, HTTP error, unparsable, 410).
    pub errors: u32,
    pub new_entries: u32,
}

/// Everything `tributary status` and `/status` show, read at one moment.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    pub feeds: Vec<Feed>,
    pub entries: u64,
    pub tombstones: u64,
    pub articles_pending: u64,
    pub articles_failed: u64,
    /// Entries waiting for the search indexer.
    pub search_backlog: u64,
    pub size: DbSize,
    /// When housekeeping last finished.
    pub housekept_at: Option<DateTime<Utc>>,
    /// The one-time re-examination of stories stored before copies in one
    /// feed and whole groups were merged.
    pub dedup_pass: DedupPass,
    /// Per feed id, its days from the requested one on, oldest first; a
    /// day without polls has no row.
    pub history: std::collections::HashMap<i64, Vec<FeedDay>>,
}

/// Where the one-time re-examination of stored stories stands
/// ([`Store::dedup_pass_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupPass {
    /// Not finished yet: the daemon runs it in short steps.
    Pending,
    /// Finished then.
    Done(DateTime<Utc>),
}

/// Which entries an output wants. Every filter narrows; empty lists and
/// `None` do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EntryQuery {
    pub limit: usize,
    /// Only entries after this position (the next page).
    pub after: Option<Cursor>,
    /// Only entries from feeds with any of these tags.
    pub tags: Vec<String>,
    /// Only entries from any of these feeds (subscription URLs).
    pub feeds: Vec<String>,
    /// Full-text search terms (all must match).
    pub search: Option<String>,
    /// Regular expressions on title or content: must match / must not.
    pub include: Option<String>,
    pub exclude: Option<String>,
    /// Only entries stored after the one with this id, oldest first (what
    /// a push delivers next), instead of the output order.
    pub since_id: Option<i64>,
}

/// A stored entry as a feed's keep/block rules read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSubject {
    pub entry_id: i64,
    /// The feed's key for the entry.
    pub key: String,
    pub title: Option<String>,
    /// As the feed gave it.
    pub content: Option<String>,
    pub authors: Vec<String>,
    pub categories: Vec<String>,
}

/// Where a push target (a named output's webhook or ntfy URL) stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// Every entry of the output up to this id has been delivered (or
    /// predates the target).
    pub delivered_id: i64,
    /// Failed attempts in a row at the next batch.
    pub attempts: u32,
    /// When to try the next batch again after a failure.
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// How a push attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The target took every entry up to this id.
    Delivered { up_to: i64 },
    Failed {
        error: String,
        retry_at: DateTime<Utc>,
    },
}

/// A handle to the database, whichever backend holds it; cheap to clone.
/// Every method dispatches to the backend; the program never sees which.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// A task that runs on one node of a cluster at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadTask {
    Housekeeping,
    WebSub,
    /// Push deliveries: each receiver hears from one node.
    Push,
}

/// Held while this node leads a [`LeadTask`] (from [`Store::try_lead`]),
/// or, in [`Store::keep_lead`]'s hands, while it waits to; dropping it
/// lets another node lead.
pub struct LeaderGuard {
    held: Option<postgres::Leadership>,
}

impl LeaderGuard {
    /// True once the lead is gone (its PostgreSQL connection dropped):
    /// ask [`Store::try_lead`] again before doing the task.
    pub fn lost(&self) -> bool {
        self.held.as_ref().is_some_and(|l| l.lost())
    }

    fn leading(&self) -> bool {
        self.held.as_ref().is_none_or(|l| l.leading())
    }
}

/// A node of a cluster asking the store for hosts (see
/// `postgres/hosts.rs`): who it is and how long its host leases last.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// This process's id, the same for every lease it takes.
    pub node: String,
    /// How long a lease runs from the moment it is asked for.
    pub lease: Duration,
    /// How long a node may keep claiming work for a host it holds; after
    /// that it finishes what it holds and hands the host back, so hosts
    /// with a backlog move between nodes instead of staying with one.
    pub tenure: Duration,
}

/// A host the store granted a node, in the node's own clock: it may send
/// the host requests until `until` (measured from before it asked, so
/// never later than the lease in the database), not before `free_at`
/// (the spacing the node that held it before left, or a 429's block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGrant {
    pub host: String,
    pub until: tokio::time::Instant,
    pub free_at: tokio::time::Instant,
}

/// The cluster as one node's heartbeat found it: the live nodes (itself
/// included) and the hosts with a backlog they hold between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShare {
    pub nodes: usize,
    pub backlog: usize,
}

impl ClusterShare {
    /// A node's even share of the hosts with a backlog (at least one).
    pub fn share(&self) -> usize {
        self.backlog.div_ceil(self.nodes.max(1)).max(1)
    }
}

/// Jobs claimed for a node, and the hosts it was granted for them: every
/// job's host (as `host_of` names it) is among them.
#[derive(Debug)]
pub struct Claimed<T> {
    pub jobs: Vec<T>,
    pub hosts: Vec<HostGrant>,
    /// Of `hosts`, how many the node did not hold and took for a backlog
    /// (several of the jobs).
    pub new_backlog_hosts: usize,
}

/// Which host a URL's requests go to, as the politeness limits key it
/// (`hosts::host_of`); passed in, so the store holds no such rule.
pub type HostOf = fn(&str) -> Option<String>;

/// With one node (SQLite) every host is the node's: the grants for the
/// hosts of `urls`, free at once.
fn every_host<'a>(
    urls: impl Iterator<Item = &'a str>,
    tenant: &Tenant,
    host_of: HostOf,
) -> Vec<HostGrant> {
    let now = tokio::time::Instant::now();
    let hosts: std::collections::BTreeSet<String> = urls.filter_map(host_of).collect();
    hosts
        .into_iter()
        .map(|host| HostGrant {
            host,
            until: now + tenant.lease,
            free_at: now,
        })
        .collect()
}

impl Store {
    /// Due feeds leased for `tenant` (as [`Store::lease_due`]), but only
    /// feeds on hosts no other node holds, with a lease on each of their
    /// hosts taken in the same transaction. On SQLite (one node) every
    /// host is granted.
    ///
    /// A host not yet this node's with several of the claimed jobs (a
    /// backlog) is taken only while `backlog_room` allows (the node's
    /// room under its share, [`ClusterShare::share`]); its jobs are left
    /// for another node otherwise.
    pub async fn lease_due_on_hosts(
        &self,
        tenant: &Tenant,
        now: DateTime<Utc>,
        limit: usize,
        lease_until: DateTime<Utc>,
        host_of: HostOf,
        backlog_room: usize,
    ) -> Result<Claimed<Feed>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => {
                let jobs = b.lease_due(now, limit, lease_until).await?;
                let hosts = every_host(jobs.iter().map(Feed::effective_url), tenant, host_of);
                Ok(Claimed {
                    jobs,
                    hosts,
                    new_backlog_hosts: 0,
                })
            }
            Backend::Postgres(b) => {
                b.lease_due_on_hosts(tenant, now, limit, lease_until, host_of, backlog_room)
                    .await
            }
        }
    }

    /// Due article pages claimed for `tenant` (as
    /// [`Store::claim_articles`]), only on hosts no other node holds, with
    /// a lease on each of their hosts taken in the same transaction.
    pub async fn claim_articles_on_hosts(
        &self,
        tenant: &Tenant,
        now: DateTime<Utc>,
        limit: usize,
        until: DateTime<Utc>,
        host_of: HostOf,
        backlog_room: usize,
    ) -> Result<Claimed<ArticleJob>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => {
                let jobs = b.claim_articles(now, limit, until).await?;
                let hosts = every_host(jobs.iter().map(|j| j.url.as_str()), tenant, host_of);
                Ok(Claimed {
                    jobs,
                    hosts,
                    new_backlog_hosts: 0,
                })
            }
            Backend::Postgres(b) => {
                b.claim_articles_on_hosts(tenant, now, limit, until, host_of, backlog_room)
                    .await
            }
        }
    }

    /// Takes `hosts` for `tenant` where no other node holds them (a lease
    /// that ran out is taken over); returns the ones granted.
    pub async fn take_hosts(
        &self,
        tenant: &Tenant,
        hosts: Vec<String>,
    ) -> Result<Vec<HostGrant>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(every_host(hosts.iter().map(|h| h.as_str()), tenant, |h| {
                Some(h.to_owned())
            })),
            Backend::Postgres(b) => b.take_hosts(tenant, hosts).await,
        }
    }

    /// Renews `tenant`'s leases on `keep` (returning those still its own:
    /// one missing was lost) and hands `release` back, each with how long
    /// the next node must wait before its first request (spacing left, a
    /// 429's block), in one transaction.
    pub async fn renew_hosts(
        &self,
        tenant: &Tenant,
        keep: Vec<String>,
        release: Vec<(String, Duration)>,
    ) -> Result<Vec<HostGrant>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(every_host(keep.iter().map(|h| h.as_str()), tenant, |h| {
                Some(h.to_owned())
            })),
            Backend::Postgres(b) => b.renew_hosts(tenant, keep, release).await,
        }
    }

    /// Says this node is alive and holds `backlog` hosts with a backlog,
    /// and stops claiming for `leaving` (hosts it holds over its share:
    /// it finishes what it holds for them and hands them back); returns
    /// the cluster as it stands. On SQLite, one node.
    pub async fn heartbeat(
        &self,
        tenant: &Tenant,
        backlog: usize,
        leaving: Vec<String>,
    ) -> Result<ClusterShare, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(ClusterShare { nodes: 1, backlog }),
            Backend::Postgres(b) => b.heartbeat(tenant, backlog, leaving).await,
        }
    }

    /// A node stopping cleanly leaves the cluster's count at once.
    pub async fn leave_cluster(&self, tenant: &Tenant) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(b) => b.leave_cluster(tenant).await,
        }
    }

    /// Whether several nodes may share this database, so hosts must be
    /// leased before they are sent requests (PostgreSQL).
    pub fn shares_hosts(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Keeps `lead` current for `task`: keeps a held lead, else tries to
    /// take it — on the session of the last try while that lives, so a
    /// node that does not lead holds one idle connection rather than
    /// opening one per try. False while another node leads or the
    /// database cannot be reached (`lead` is then emptied, and the next
    /// call connects anew).
    pub async fn keep_lead(&self, task: LeadTask, lead: &mut Option<LeaderGuard>) -> bool {
        if let Some(guard) = lead.as_mut()
            && !guard.lost()
        {
            let tried = match guard.held.as_mut() {
                None => return true,
                Some(session) => session.try_take().await,
            };
            match tried {
                Ok(leading) => return leading,
                Err(e) => {
                    tracing::warn!(error = %e, ?task, "cannot check which node leads");
                    *lead = None;
                    return false;
                }
            }
        }
        *lead = match self.lead_session(task).await {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, ?task, "cannot check which node leads");
                None
            }
        };
        lead.as_ref().is_some_and(LeaderGuard::leading)
    }

    /// A session for `task`'s lead, holding it or not (SQLite: always).
    async fn lead_session(&self, task: LeadTask) -> Result<LeaderGuard, StoreError> {
        Ok(LeaderGuard {
            held: match &self.backend {
                Backend::Sqlite(_) => None,
                Backend::Postgres(p) => Some(p.lead_session(task).await?),
            },
        })
    }
}

/// The backends. An enum rather than a trait object: the methods stay
/// plain `async fn`s, without boxing their futures.
#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(postgres::PgStore),
}

/// The SQLite backend's async facade: one writer thread, reader threads,
/// group commit of polls.
#[derive(Clone)]
struct SqliteStore {
    writer: tokio_rusqlite::Connection,
    /// Read-only connections for the HTTP outputs, used in turn: a slow
    /// search on one does not queue every other reader behind it.
    readers: Arc<[tokio_rusqlite::Connection]>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    path: PathBuf,
    /// When a write last failed for lack of space, while that episode
    /// lasts (shared by all clones): it is logged once when it starts and
    /// once when it ends, and `/healthz` reports the daemon degraded.
    full: Arc<Mutex<Option<Instant>>>,
    /// Polls waiting for the writer; see [`Store::record_poll`].
    polls: Arc<Mutex<PollQueue>>,
    /// Woken after writes that may have queued entries for the search
    /// indexer; see [`Store::index_work`].
    index_work: Arc<tokio::sync::Notify>,
}

/// Poll records waiting to be written, each with the channel its caller
/// awaits, and whether a flush that will pick them up is already on the
/// writer's queue (or gathering, see [`GATHER_WINDOW`]).
#[derive(Default)]
struct PollQueue {
    pending: Vec<(PollRecord, PollReply)>,
    flush_queued: bool,
    /// When the writer last took a batch.
    last_flush: Option<Instant>,
    /// Wakes a gathering flush once [`GATHER_TARGET`] polls wait.
    gathered: Arc<tokio::sync::Notify>,
    /// The queued flush is gathering: only then is `gathered` notified, so
    /// a flush sent at once leaves no wake-up to cut the next one short.
    gathering: bool,
    stats: CommitStats,
    load: WriterLoad,
}

/// How hard the daemon has been storing polls lately: the time the writer
/// spent in poll batches and the polls in them, each decayed exponentially
/// over [`LOAD_WINDOW`], so they read as the share of the recent past the
/// writer was occupied (0 to 1) and as polls per second.
#[derive(Default, Clone, Copy)]
struct WriterLoad {
    busy: f64,
    polls: f64,
    at: Option<Instant>,
}

/// The time constant of [`WriterLoad`].
const LOAD_WINDOW: Duration = Duration::from_secs(1);

/// What [`Store::poll_load`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PollLoad {
    /// Share of the last second or so the writer spent storing polls.
    pub writer_busy: f64,
    /// Polls stored per second over about the last second.
    pub polls_per_sec: f64,
}

impl WriterLoad {
    fn decay(&self, now: Instant) -> f64 {
        self.at.map_or(0.0, |at| {
            let age = now.saturating_duration_since(at).as_secs_f64();
            (-age / LOAD_WINDOW.as_secs_f64()).exp()
        })
    }

    fn read(&self, now: Instant) -> PollLoad {
        let decay = self.decay(now);
        PollLoad {
            writer_busy: self.busy * decay,
            polls_per_sec: self.polls * decay,
        }
    }

    /// Adds a batch of `polls` that kept the writer busy for `took`, ending
    /// at `end`.
    fn add(&mut self, polls: usize, took: Duration, end: Instant) {
        let decay = self.decay(end);
        let window = LOAD_WINDOW.as_secs_f64();
        self.busy = (self.busy * decay + took.as_secs_f64() / window).min(1.0);
        self.polls = self.polls * decay + polls as f64 / window;
        self.at = Some(end);
    }
}

/// How polls were committed since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions (group commits) of polls.
    pub batches: u64,
    /// Polls written in them.
    pub polls: u64,
}

/// How long a flush started during a burst of polls waits for more to
/// join it. Every commit rewrites the pages all polls share (the ends of
/// the entry indexes, the search index's new segment, the feed rows) into
/// the WAL, and the checkpointer copies them again, so the store's cost
/// per poll falls steeply with the batch: the stage bench measured
/// ~990 µs per feed with 4 polls in flight, ~580 with 64 and ~510 with 512,
/// while the daemon under load committed a median of 9 polls at a time.
/// A poll waits at most this long more to be committed; an idle daemon's
/// flush (none in the last window) does not wait at all.
const GATHER_WINDOW: Duration = Duration::from_millis(50);

/// Polls that end the gathering early: past this, a bigger batch saves
/// little.
const GATHER_TARGET: usize = 128;

/// Sends a flush of the poll queue to the writer, first waiting (at most
/// [`GATHER_WINDOW`]) for [`GATHER_TARGET`] polls when `gather` is given.
async fn send_flush(
    writer: tokio_rusqlite::Connection,
    queue: Arc<Mutex<PollQueue>>,
    gather: Option<Arc<tokio::sync::Notify>>,
    index_work: Arc<tokio::sync::Notify>,
) {
    if let Some(gathered) = gather {
        let _ = tokio::time::timeout(GATHER_WINDOW, gathered.notified()).await;
    }
    let q = Arc::clone(&queue);
    let sent = writer
        .call(move |c| -> Result<Vec<PollRecord>, rusqlite::Error> { Ok(flush_polls(c, &q)) })
        .await;
    match sent {
        // The parsed entries are freed here, not on the writer thread,
        // which every poll waits for.
        Ok(records) => {
            index_work.notify_one();
            drop(records);
        }
        Err(_) => {
            // The writer is gone: nothing queued will ever run.
            let waiting = {
                let mut q = lock(&queue);
                q.flush_queued = false;
                std::mem::take(&mut q.pending)
            };
            for (_, reply) in waiting {
                let _ = reply.send(Err(StoreError::Closed));
            }
        }
    }
}

type PollReply = tokio::sync::oneshot::Sender<Result<PollReport, StoreError>>;

fn lock(q: &Mutex<PollQueue>) -> MutexGuard<'_, PollQueue> {
    // Every update under this lock is a push or a take: a panic cannot
    // leave it half done, so poisoning is ignored.
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs on the writer thread: takes every poll queued so far and records
/// them in one transaction, then answers each caller. Returns the records
/// for the caller to free off this thread.
fn flush_polls(conn: &mut rusqlite::Connection, queue: &Mutex<PollQueue>) -> Vec<PollRecord> {
    let batch = {
        let mut q = lock(queue);
        q.flush_queued = false;
        q.gathering = false;
        q.last_flush = Some(Instant::now());
        if !q.pending.is_empty() {
            q.stats.batches += 1;
            q.stats.polls += q.pending.len() as u64;
            // Operators see how well commits are grouped: polls / commits.
            metrics::counter!("tributary_store_poll_commits_total").increment(1);
            metrics::counter!("tributary_store_committed_polls_total")
                .increment(q.pending.len() as u64);
        }
        std::mem::take(&mut q.pending)
    };
    if batch.is_empty() {
        return Vec::new();
    }
    let (recs, replies): (Vec<PollRecord>, Vec<PollReply>) = batch.into_iter().unzip();
    let started = Instant::now();
    let written = sqlite::record_polls(conn, &recs);
    let end = Instant::now();
    lock(queue).load.add(recs.len(), end - started, end);
    match written {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result.map_err(StoreError::from));
            }
        }
        Err(e) => {
            // Every caller gets the same error; SQLite's own code is kept so
            // a full disk is still recognised as one.
            let message = e.to_string();
            for reply in replies {
                let err = match &e {
                    rusqlite::Error::SqliteFailure(code, msg) => {
                        StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone()))
                    }
                    _ => StoreError::Batch(message.clone()),
                };
                let _ = reply.send(Err(err));
            }
        }
    }
    recs
}

/// A full-disk episode ends at the first successful write once no write
/// has failed for this long. Small writes (a lease) may succeed while a
/// poll's larger one still fails; ending the episode on those would log
/// "full" and "writable again" over and over.
const FULL_QUIET: Duration = Duration::from_secs(30);

/// Read-only connections serving the outputs (each its own thread).
const READERS: usize = 2;

/// Forwards a call to whichever backend the store holds: both take the
/// same arguments and return the same types, so each `Store` method is one
/// line instead of a two-armed match.
macro_rules! on_backend {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite database at
    /// `path`. A file that is not a database, or is read-only, is an error
    /// here — never a silent empty database.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(SqliteStore::open(path).await?),
        })
    }

    /// Opens the database `database` names: a SQLite file ([`Store::open`])
    /// or a PostgreSQL server, whose schema is brought up to date.
    pub async fn connect(database: &Database) -> Result<Store, StoreError> {
        match database {
            Database::Sqlite(path) => Store::open(path).await,
            Database::Postgres(url) => Ok(Store {
                backend: Backend::Postgres(postgres::PgStore::connect(url).await?),
            }),
        }
    }

    /// Which backend holds the data ("SQLite", "PostgreSQL").
    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    /// Whether writes are failing because the disk is full.
    pub fn is_full(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(s) => s.is_full(),
            Backend::Postgres(_) => false,
        }
    }

    /// [`Store::add_feeds`], calling `progress` with the number of feeds
    /// handled so far as it goes.
    pub async fn add_feeds_with_progress(
        &self,
        specs: Vec<FeedSpec>,
        origin: FeedOrigin,
        now: DateTime<Utc>,
        progress: impl FnMut(usize) + Send + 'static,
    ) -> Result<Vec<AddOutcome>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                s.add_feeds_with_progress(specs, origin, now, progress)
                    .await
            }
            Backend::Postgres(p) => {
                p.add_feeds_with_progress(specs, origin, now, progress)
                    .await
            }
        }
    }

    /// Spreads feeds that fell due while the daemon was down over
    /// `[now, now + window(feed))`, so a restart does not burst every host
    /// at once; feeds never polled keep their place.
    pub async fn spread_overdue(
        &self,
        now: DateTime<Utc>,
        window: impl Fn(&Feed) -> Duration + Send + 'static,
    ) -> Result<usize, StoreError> {
        on_backend!(self, b => b.spread_overdue(now, window).await)
    }

    /// How many group commits wrote how many polls so far.
    pub fn commit_stats(&self) -> CommitStats {
        on_backend!(self, b => b.commit_stats())
    }

    /// How hard the daemon has been storing polls over about the last
    /// second.
    pub fn poll_load(&self) -> PollLoad {
        on_backend!(self, b => b.poll_load())
    }

    /// Returns once a write may have queued entries for the search index
    /// since the last call returned (at once if one did meanwhile).
    pub async fn index_work(&self) {
        on_backend!(self, b => b.index_work().await)
    }

    /// Leads `task` for the cluster if no other node does: on PostgreSQL
    /// while this node holds a session advisory lock on a connection kept
    /// for it (released when the guard drops or the connection dies); on
    /// SQLite always (one node per database).
    pub async fn try_lead(&self, task: LeadTask) -> Result<Option<LeaderGuard>, StoreError> {
        let guard = self.lead_session(task).await?;
        Ok(guard.leading().then_some(guard))
    }

    /// Closes the connections, waiting for queued work to finish; after
    /// this returns every accepted write is stored.
    pub async fn close(self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }

    /// Adds subscriptions in one transaction; existing URLs are left alone.
    pub async fn add_feeds(
        &self,
        specs: Vec<FeedSpec>,
        origin: FeedOrigin,
        now: DateTime<Utc>,
    ) -> Result<Vec<AddOutcome>, StoreError> {
        self.add_feeds_with_progress(specs, origin, now, |_| {})
            .await
    }

    /// Runs the re-examination to its end, yielding between steps, unless
    /// `cancel` fires; returns the stories merged away.
    pub async fn dedup_pass(
        &self,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<usize, StoreError> {
        let mut merged = 0;
        while !cancel.is_cancelled() {
            match self.dedup_pass_step(Utc::now()).await? {
                Some(n) => merged += n,
                None => break,
            }
            // Polls and articles queued on the writer go first.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(merged)
    }

    /// Checks every page of the database (`PRAGMA quick_check`), so a
    /// damaged file stops the daemon at start-up with a clear message
    /// instead of failing polls one by one. Linear in the file's size.
    pub async fn check(&self) -> Result<(), StoreError> {
        on_backend!(self, b => b.check().await)
    }

    pub async fn sync_config_feeds(
        &self,
        specs: Vec<FeedSpec>,
        now: DateTime<Utc>,
    ) -> Result<SyncReport, StoreError> {
        on_backend!(self, b => b.sync_config_feeds(specs, now).await)
    }

    /// Removes a subscription and the entries only it carried; returns the
    /// removed feed, or `None` when no feed has that URL.
    pub async fn remove_feed(
        &self,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Feed>, StoreError> {
        on_backend!(self, b => b.remove_feed(url, now).await)
    }

    pub async fn feeds(&self) -> Result<Vec<Feed>, StoreError> {
        on_backend!(self, b => b.feeds().await)
    }

    pub async fn feed_by_url(&self, url: &str) -> Result<Option<Feed>, StoreError> {
        on_backend!(self, b => b.feed_by_url(url).await)
    }

    pub async fn feed_by_id(&self, id: i64) -> Result<Option<Feed>, StoreError> {
        on_backend!(self, b => b.feed_by_id(id).await)
    }

    /// Due feeds (most overdue first) leased until `lease_until`, in
    /// one transaction, so the scheduler needs one writer round trip per
    /// round rather than two.
    pub async fn lease_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Feed>, StoreError> {
        on_backend!(self, b => b.lease_due(now, limit, lease_until).await)
    }

    /// The earliest next check of any feed.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        on_backend!(self, b => b.next_due_at().await)
    }

    /// Makes feeds whose poll an earlier process never finished due now;
    /// see [`sqlite::release_leases`].
    pub async fn release_leases(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        on_backend!(self, b => b.release_leases(now).await)
    }

    /// Moves leased feeds that were not polled this round to a later
    /// check; see [`sqlite::defer`].
    pub async fn defer(&self, defers: Vec<(i64, DateTime<Utc>)>) -> Result<(), StoreError> {
        on_backend!(self, b => b.defer(defers).await)
    }

    /// Hosts still blocked by a 429's Retry-After, for start-up.
    pub async fn host_blocks(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        on_backend!(self, b => b.host_blocks(now).await)
    }

    /// Pauses or resumes a feed (resuming also revives a gone feed).
    pub async fn set_status(
        &self,
        feed_id: i64,
        status: FeedStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b.set_status(feed_id, status, now).await)
    }

    pub async fn reschedule(&self, feed_id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        on_backend!(self, b => b.reschedule(feed_id, at).await)
    }

    /// Claims up to `limit` articles due at `now` (oldest first) and
    /// leases them until `until`, atomically: claimers running at the same
    /// moment (several nodes on one PostgreSQL database) never get the same
    /// article, and one whose lease ran out (its node died) is due again.
    pub async fn claim_articles(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        until: DateTime<Utc>,
    ) -> Result<Vec<ArticleJob>, StoreError> {
        on_backend!(self, b => b.claim_articles(now, limit, until).await)
    }

    pub async fn next_article_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        on_backend!(self, b => b.next_article_at().await)
    }

    /// Moves leased articles to when they should be tried (their host's
    /// turn, the end of a 429), or renews their lease: one transaction per
    /// distinct time, in one writer round trip.
    pub async fn defer_articles(
        &self,
        defers: Vec<(i64, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b.defer_articles(defers).await)
    }

    /// Records one article attempt in one transaction; true when the entry
    /// turned out to be a story another feed brought first, and was merged
    /// into it.
    pub async fn record_article(&self, rec: ArticleRecord) -> Result<bool, StoreError> {
        on_backend!(self, b => b.record_article(rec).await)
    }

    pub async fn article_state(&self, entry_uid: &str) -> Result<Option<ArticleState>, StoreError> {
        on_backend!(self, b => b.article_state(entry_uid).await)
    }

    /// Records one poll (state, validators, entries) atomically.
    ///
    /// Group commit: a poll that finishes while the writer is busy joins
    /// the next batch, and a batch is one transaction in which a failing
    /// poll rolls back alone (see [`sqlite::record_polls`]). The first poll
    /// into an empty queue starts the flush; the ones queued before it
    /// runs ride along. An idle daemon writes each poll at once; during a
    /// burst the flush first gathers polls for up to [`GATHER_WINDOW`], so
    /// a busy daemon commits in large batches. Returns when this poll is
    /// committed.
    pub async fn record_poll(&self, rec: PollRecord) -> Result<PollReport, StoreError> {
        on_backend!(self, b => b.record_poll(rec).await)
    }

    /// Up to `max` entries queued for the search index, oldest first, as
    /// the outputs now show them; the indexer makes their words
    /// (`crate::indexer`) and hands them to [`Store::write_search`]. Runs
    /// on a reader connection.
    pub async fn search_batch(&self, max: usize) -> Result<Vec<SearchSource>, StoreError> {
        on_backend!(self, b => b.search_batch(max).await)
    }

    /// Indexes `docs` in one transaction and takes them off the queue,
    /// except those whose entry changed (or went) since
    /// [`Store::search_batch`] read it: they stay queued for the next
    /// batch.
    pub async fn write_search(&self, docs: Vec<SearchDoc>) -> Result<IndexStep, StoreError> {
        on_backend!(self, b => b.write_search(docs).await)
    }

    /// Entries for an output, newest first. Runs on the reader connection.
    /// Their feed content is untrusted, as the feed gave it: sanitise it
    /// (`serve::sanitize_entries`) before rendering it anywhere.
    pub async fn entries(&self, q: EntryQuery) -> Result<Vec<OutputEntry>, StoreError> {
        on_backend!(self, b => b.entries(q).await)
    }

    /// A feed's stored entries, as its keep/block rules read them.
    pub async fn feed_entries_for_rules(
        &self,
        feed_id: i64,
    ) -> Result<Vec<RuleSubject>, StoreError> {
        on_backend!(self, b => b.feed_entries_for_rules(feed_id).await)
    }

    /// Drops the feed's claim on the entries with these keys (and each
    /// entry no other feed carries); how many were dropped.
    pub async fn release_entries(
        &self,
        feed_id: i64,
        keys: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        on_backend!(self, b => b.release_entries(feed_id, keys, now).await)
    }

    /// A push target's delivery state; a new target starts at the newest
    /// entry stored.
    pub async fn push_target(&self, output: &str, target: &str) -> Result<PushTarget, StoreError> {
        on_backend!(self, b => b.push_target(output, target).await)
    }

    /// Records how a push attempt went, for the next attempt and across
    /// restarts.
    pub async fn record_push(
        &self,
        output: &str,
        target: &str,
        outcome: PushOutcome,
    ) -> Result<(), StoreError> {
        on_backend!(self, b => b.record_push(output, target, outcome).await)
    }

    /// The current output revision. Runs on the reader connection.
    pub async fn revision(&self) -> Result<Revision, StoreError> {
        on_backend!(self, b => b.revision().await)
    }

    /// Purges up to `batch` entries whose output time is before `cutoff`,
    /// except each feed's newest `keep` entries.
    pub async fn purge_older_than(
        &self,
        cutoff: DateTime<Utc>,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        on_backend!(self, b => b.purge_older_than(cutoff, keep, batch, now).await)
    }

    /// Purges up to `batch` of the oldest entries across all feeds, except
    /// each feed's newest `keep` entries.
    pub async fn purge_oldest(
        &self,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        on_backend!(self, b => b.purge_oldest(keep, batch, now).await)
    }

    /// Ids of the feeds carrying more than `max` entries.
    pub async fn feeds_over(&self, max: usize) -> Result<Vec<i64>, StoreError> {
        on_backend!(self, b => b.feeds_over(max).await)
    }

    /// Purges up to `batch` of a feed's entries beyond its newest `keep`.
    pub async fn purge_feed_excess(
        &self,
        feed_id: i64,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        on_backend!(self, b => b.purge_feed_excess(feed_id, keep, batch, now).await)
    }

    /// Drops up to `batch` tombstones last seen before `cutoff`.
    pub async fn expire_tombstones(
        &self,
        cutoff: DateTime<Utc>,
        batch: usize,
    ) -> Result<usize, StoreError> {
        on_backend!(self, b => b.expire_tombstones(cutoff, batch).await)
    }

    /// Drops up to `batch` of the longest-unseen tombstones beyond `max`.
    pub async fn trim_tombstones(&self, max: usize, batch: usize) -> Result<usize, StoreError> {
        on_backend!(self, b => b.trim_tombstones(max, batch).await)
    }

    /// Forgets the poll history of days before `now`'s day minus `days`.
    pub async fn trim_history(&self, days: i64, now: DateTime<Utc>) -> Result<usize, StoreError> {
        on_backend!(self, b => b.trim_history(days, now).await)
    }

    pub async fn entry_count(&self) -> Result<u64, StoreError> {
        on_backend!(self, b => b.entry_count().await)
    }

    pub async fn db_size(&self) -> Result<DbSize, StoreError> {
        on_backend!(self, b => b.db_size().await)
    }

    /// Returns up to `pages` free pages to the file system.
    pub async fn incremental_vacuum(&self, pages: usize) -> Result<(), StoreError> {
        on_backend!(self, b => b.incremental_vacuum(pages).await)
    }

    /// One bounded step of merging the search index; whether it did work.
    pub async fn merge_search_index(&self, pages: usize) -> Result<bool, StoreError> {
        on_backend!(self, b => b.merge_search_index(pages).await)
    }

    /// `PRAGMA optimize` and a truncating WAL checkpoint.
    pub async fn optimize_and_checkpoint(&self) -> Result<(), StoreError> {
        on_backend!(self, b => b.optimize_and_checkpoint().await)
    }

    /// Rebuilds the file (`VACUUM`) with incremental auto-vacuum on. Holds
    /// the writer for as long as it takes: for `purge --vacuum` only.
    pub async fn full_vacuum(&self) -> Result<(), StoreError> {
        on_backend!(self, b => b.full_vacuum().await)
    }

    /// One step of the one-time re-examination of stored stories (one
    /// short transaction over [`sqlite::DEDUP_PASS_BATCH`] entries, so
    /// polls and serving go on between steps): `None` once the pass has
    /// run, else how many stories it merged away in this step.
    pub async fn dedup_pass_step(&self, now: DateTime<Utc>) -> Result<Option<usize>, StoreError> {
        on_backend!(self, b => b.dedup_pass_step(now).await)
    }

    /// Notes when housekeeping finished, for `status`.
    pub async fn set_housekept(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        on_backend!(self, b => b.set_housekept(at).await)
    }

    /// What `status` shows, with poll history from `days` days ago on.
    /// Runs on the reader connection.
    pub async fn status(
        &self,
        days: i64,
        now: DateTime<Utc>,
    ) -> Result<StatusSnapshot, StoreError> {
        on_backend!(self, b => b.status(days, now).await)
    }

    /// A trivial query on both connections: the watchdog's sign that the
    /// database threads answer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, b => b.ping().await)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    /// A file that is not a database, or is read-only, is an error here —
    /// never a silent empty database.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |cause| StoreError::Open {
            path: path.to_owned(),
            cause,
        };
        let writer = tokio_rusqlite::Connection::open(path)
            .await
            .map_err(open_err)?;
        let p = path.to_owned();
        writer
            .call(move |c| -> Result<(), StoreError> {
                // SQLite quietly falls back to read-only when it may not
                // write the file; a daemon would then fail on its first
                // poll. Say so now, naming the file.
                if c.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
                    return Err(StoreError::ReadOnly {
                        path: p,
                        cause: "the file cannot be opened for writing".to_owned(),
                    });
                }
                sqlite::configure(c)
                    .and_then(|()| sqlite::configure_writer(c))
                    .map_err(|cause| StoreError::Open {
                        path: p.clone(),
                        cause,
                    })?;
                sqlite::migrate(c).map_err(|cause| StoreError::Migrate {
                    path: p.clone(),
                    cause,
                })?;
                // `journal_mode = WAL` does not fail on a file it cannot
                // write: it reports the mode it kept.
                if !sqlite::is_wal(c).map_err(StoreError::Sqlite)? {
                    return Err(StoreError::ReadOnly {
                        path: p,
                        cause: "cannot switch to WAL mode".to_owned(),
                    });
                }
                // Without it SQLite's own automatic checkpoint stays on.
                if let Err(e) = checkpoint::install(c, &p) {
                    tracing::warn!(error = %e, "cannot start the checkpointer thread; the writer checkpoints itself");
                }
                Ok(())
            })
            .await
            .map_err(|e| match e {
                tokio_rusqlite::Error::Error(e) => e.classify(path),
                _ => StoreError::Closed,
            })?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = tokio_rusqlite::Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .await
            .map_err(open_err)?;
            reader
                .call(|c| {
                    c.busy_timeout(Duration::from_secs(5))?;
                    sqlite::register_functions(c)
                })
                .await?;
            readers.push(reader);
        }
        Ok(SqliteStore {
            writer,
            readers: readers.into(),
            next_reader: Arc::default(),
            path: path.to_owned(),
            polls: Arc::default(),
            full: Arc::new(Mutex::new(None)),
            index_work: Arc::default(),
        })
    }

    /// The next reader connection, in turn.
    fn reader(&self) -> &tokio_rusqlite::Connection {
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.readers[i % self.readers.len()]
    }

    pub async fn check(&self) -> Result<(), StoreError> {
        let problems = self
            .reader()
            .call(|c| sqlite::quick_check(c))
            .await
            .map_err(|e| StoreError::from(e).classify(&self.path))?;
        match problems {
            None => Ok(()),
            Some(detail) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail,
            }),
        }
    }

    /// Whether writes are failing because the disk is full.
    pub fn is_full(&self) -> bool {
        self.full.lock().is_ok_and(|f| f.is_some())
    }

    /// Runs one write on the writer connection. A full disk becomes
    /// [`StoreError::Full`] (the transaction has rolled back), logged once
    /// per episode; see [`FULL_QUIET`] for when an episode ends.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let result = self
            .writer
            .call(f)
            .await
            .map_err(|e| StoreError::from(e).classify(&self.path));
        self.track(result)
    }

    /// Notes a write's outcome for the full-disk episode: its start and end
    /// are logged once each, and `/healthz` says degraded meanwhile.
    fn track<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let Ok(mut full) = self.full.lock() else {
            return result;
        };
        match (&result, *full) {
            (Err(StoreError::Full { cause, .. }), None) => {
                tracing::error!(
                    database = %self.path.display(),
                    "database full: {cause}; serving existing entries, writes resume when space is freed"
                );
                *full = Some(Instant::now());
            }
            (Err(StoreError::Full { .. }), Some(_)) => *full = Some(Instant::now()),
            (Ok(_), Some(since)) if since.elapsed() >= FULL_QUIET => {
                tracing::warn!(
                    database = %self.path.display(),
                    "database writable again: space was freed, writes resumed"
                );
                *full = None;
            }
            _ => {}
        }
        result
    }

    pub async fn sync_config_feeds(
        &self,
        specs: Vec<FeedSpec>,
        now: DateTime<Utc>,
    ) -> Result<SyncReport, StoreError> {
        self.write(move |c| sqlite::sync_config_feeds(c, &specs, now))
            .await
    }

    /// [`Store::add_feeds`], calling `progress` with the number of feeds
    /// handled so far (on the writer thread) as it goes.
    pub async fn add_feeds_with_progress(
        &self,
        specs: Vec<FeedSpec>,
        origin: FeedOrigin,
        now: DateTime<Utc>,
        mut progress: impl FnMut(usize) + Send + 'static,
    ) -> Result<Vec<AddOutcome>, StoreError> {
        self.write(move |c| sqlite::add_feeds(c, &specs, origin, now, &mut progress))
            .await
    }

    pub async fn remove_feed(
        &self,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Feed>, StoreError> {
        let url = url.to_owned();
        self.write(move |c| sqlite::remove_feed(c, &url, now)).await
    }

    pub async fn feeds(&self) -> Result<Vec<Feed>, StoreError> {
        Ok(self.writer.call(|c| sqlite::feeds(c)).await?)
    }

    pub async fn feed_by_url(&self, url: &str) -> Result<Option<Feed>, StoreError> {
        let url = url.to_owned();
        Ok(self
            .writer
            .call(move |c| sqlite::feed_by_url(c, &url))
            .await?)
    }

    pub async fn feed_by_id(&self, id: i64) -> Result<Option<Feed>, StoreError> {
        Ok(self.writer.call(move |c| sqlite::feed_by_id(c, id)).await?)
    }

    pub async fn lease_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Feed>, StoreError> {
        self.write(move |c| sqlite::lease_due(c, now, limit, lease_until))
            .await
    }

    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.writer.call(|c| sqlite::next_due_at(c)).await?)
    }

    /// Spreads feeds that fell due while the daemon was down; see
    /// [`sqlite::spread_overdue`].
    pub async fn spread_overdue(
        &self,
        now: DateTime<Utc>,
        window: impl Fn(&Feed) -> Duration + Send + 'static,
    ) -> Result<usize, StoreError> {
        self.write(move |c| sqlite::spread_overdue(c, now, &window))
            .await
    }

    pub async fn release_leases(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.write(move |c| sqlite::release_leases(c, now)).await
    }

    pub async fn defer(&self, defers: Vec<(i64, DateTime<Utc>)>) -> Result<(), StoreError> {
        self.write(move |c| sqlite::defer(c, &defers)).await
    }

    pub async fn host_blocks(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::host_blocks(c, now))
            .await?)
    }

    pub async fn set_status(
        &self,
        feed_id: i64,
        status: FeedStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |c| sqlite::set_status(c, feed_id, status, now))
            .await
    }

    pub async fn reschedule(&self, feed_id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |c| sqlite::reschedule(c, feed_id, at))
            .await
    }

    pub async fn claim_articles(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        until: DateTime<Utc>,
    ) -> Result<Vec<ArticleJob>, StoreError> {
        self.write(move |c| sqlite::claim_articles(c, now, limit, until))
            .await
    }

    pub async fn next_article_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.writer.call(|c| sqlite::next_article_at(c)).await?)
    }

    pub async fn defer_articles(
        &self,
        defers: Vec<(i64, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let mut by_time: std::collections::BTreeMap<i64, (DateTime<Utc>, Vec<i64>)> =
            std::collections::BTreeMap::new();
        for (id, at) in defers {
            by_time
                .entry(at.timestamp())
                .or_insert_with(|| (at, Vec::new()))
                .1
                .push(id);
        }
        self.write(move |c| {
            for (at, ids) in by_time.into_values() {
                sqlite::lease_articles(c, &ids, at)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn record_article(&self, rec: ArticleRecord) -> Result<bool, StoreError> {
        let recorded = self.write(move |c| sqlite::record_article(c, &rec)).await;
        if recorded.is_ok() {
            self.index_work.notify_one();
        }
        recorded
    }

    pub async fn article_state(&self, entry_uid: &str) -> Result<Option<ArticleState>, StoreError> {
        let uid = entry_uid.to_owned();
        Ok(self
            .reader()
            .call(move |c| sqlite::article_state(c, &uid))
            .await?)
    }

    pub async fn record_poll(&self, rec: PollRecord) -> Result<PollReport, StoreError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = lock(&self.polls);
            q.pending.push((rec, reply));
            if q.flush_queued {
                if q.gathering && q.pending.len() == GATHER_TARGET {
                    q.gathered.notify_one();
                }
                None
            } else {
                q.flush_queued = true;
                // In a burst (the last flush was moments ago) the flush
                // waits to gather more polls; otherwise it goes at once.
                q.gathering = q.last_flush.is_some_and(|t| t.elapsed() < GATHER_WINDOW);
                Some(q.gathering.then(|| Arc::clone(&q.gathered)))
            }
        };
        if let Some(gather) = start {
            // A task of its own, so the flush is sent (and every queued
            // caller answered) even if this caller's future is dropped.
            tokio::spawn(send_flush(
                self.writer.clone(),
                Arc::clone(&self.polls),
                gather,
                Arc::clone(&self.index_work),
            ));
        }
        let result = result
            .await
            .unwrap_or(Err(StoreError::Closed))
            .map_err(|e| e.classify(&self.path));
        self.track(result)
    }

    /// How many group commits wrote how many polls so far.
    pub fn commit_stats(&self) -> CommitStats {
        lock(&self.polls).stats
    }

    /// How hard the daemon has been storing polls over about the last
    /// second.
    pub fn poll_load(&self) -> PollLoad {
        lock(&self.polls).load.read(Instant::now())
    }

    // ---- the search index: entries are queued for it by the writes that
    // add or change them, and indexed by `crate::indexer` in batches.

    /// Returns once a write may have queued entries for the search index
    /// since the last call returned (at once if one did meanwhile).
    pub async fn index_work(&self) {
        self.index_work.notified().await;
    }

    pub async fn search_batch(&self, max: usize) -> Result<Vec<SearchSource>, StoreError> {
        Ok(self
            .reader()
            .call(move |c| sqlite::pending_for_index(c, max))
            .await?)
    }

    pub async fn write_search(&self, docs: Vec<SearchDoc>) -> Result<IndexStep, StoreError> {
        self.write(move |c| sqlite::write_index(c, &docs, Utc::now()))
            .await
    }

    pub async fn entries(&self, q: EntryQuery) -> Result<Vec<OutputEntry>, StoreError> {
        Ok(self.reader().call(move |c| sqlite::entries(c, &q)).await?)
    }

    pub async fn feed_entries_for_rules(
        &self,
        feed_id: i64,
    ) -> Result<Vec<RuleSubject>, StoreError> {
        Ok(self
            .reader()
            .call(move |c| sqlite::feed_entries_for_rules(c, feed_id))
            .await?)
    }

    pub async fn release_entries(
        &self,
        feed_id: i64,
        keys: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.write(move |c| sqlite::release_entries(c, feed_id, &keys, now))
            .await
    }

    pub async fn push_target(&self, output: &str, target: &str) -> Result<PushTarget, StoreError> {
        let (output, target) = (output.to_owned(), target.to_owned());
        self.write(move |c| sqlite::push_target(c, &output, &target))
            .await
    }

    pub async fn record_push(
        &self,
        output: &str,
        target: &str,
        outcome: PushOutcome,
    ) -> Result<(), StoreError> {
        let (output, target) = (output.to_owned(), target.to_owned());
        self.write(move |c| sqlite::record_push(c, &output, &target, &outcome))
            .await
    }

    pub async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.reader().call(|c| sqlite::revision(c)).await?)
    }

    // ---- retention and housekeeping: each call is one short transaction,
    // so polls commit between them (see `crate::housekeeping`).

    pub async fn purge_older_than(
        &self,
        cutoff: DateTime<Utc>,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        self.write(move |c| sqlite::purge_older_than(c, cutoff, keep, batch, now))
            .await
    }

    pub async fn purge_oldest(
        &self,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        self.write(move |c| sqlite::purge_oldest(c, keep, batch, now))
            .await
    }

    pub async fn feeds_over(&self, max: usize) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::feeds_over(c, max))
            .await?)
    }

    pub async fn purge_feed_excess(
        &self,
        feed_id: i64,
        keep: usize,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        self.write(move |c| sqlite::purge_feed_excess(c, feed_id, keep, batch, now))
            .await
    }

    pub async fn expire_tombstones(
        &self,
        cutoff: DateTime<Utc>,
        batch: usize,
    ) -> Result<usize, StoreError> {
        self.write(move |c| sqlite::expire_tombstones(c, cutoff, batch))
            .await
    }

    pub async fn trim_tombstones(&self, max: usize, batch: usize) -> Result<usize, StoreError> {
        self.write(move |c| sqlite::trim_tombstones(c, max, batch))
            .await
    }

    pub async fn trim_history(&self, days: i64, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let before = sqlite::day_of(now) - days;
        self.write(move |c| sqlite::trim_history(c, before)).await
    }

    pub async fn entry_count(&self) -> Result<u64, StoreError> {
        Ok(self.writer.call(|c| sqlite::entry_count(c)).await?)
    }

    pub async fn db_size(&self) -> Result<DbSize, StoreError> {
        Ok(self.writer.call(|c| sqlite::db_size(c)).await?)
    }

    pub async fn incremental_vacuum(&self, pages: usize) -> Result<(), StoreError> {
        self.write(move |c| sqlite::incremental_vacuum(c, pages))
            .await
    }

    pub async fn merge_search_index(&self, pages: usize) -> Result<bool, StoreError> {
        self.write(move |c| sqlite::merge_search_index(c, pages))
            .await
    }

    pub async fn optimize_and_checkpoint(&self) -> Result<(), StoreError> {
        self.write(|c| sqlite::optimize_and_checkpoint(c)).await
    }

    pub async fn full_vacuum(&self) -> Result<(), StoreError> {
        Ok(self.writer.call(|c| sqlite::full_vacuum(c)).await?)
    }

    pub async fn dedup_pass_step(&self, now: DateTime<Utc>) -> Result<Option<usize>, StoreError> {
        self.write(move |c| sqlite::dedup_pass_step(c, sqlite::DEDUP_PASS_BATCH, now))
            .await
    }

    pub async fn set_housekept(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |c| sqlite::set_housekept(c, at)).await
    }

    pub async fn status(
        &self,
        days: i64,
        now: DateTime<Utc>,
    ) -> Result<StatusSnapshot, StoreError> {
        let since = sqlite::day_of(now) - days + 1;
        Ok(self
            .reader()
            .call(move |c| sqlite::status(c, since))
            .await?)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.reader().call(|c| sqlite::ping(c)).await?;
        self.writer.call(|c| sqlite::ping(c)).await?;
        Ok(())
    }

    /// Closes both connections, waiting for queued work to finish; after
    /// this returns every accepted write is on disk.
    pub async fn close(self) -> Result<(), StoreError> {
        let _ = self
            .writer
            .call(|c| c.execute_batch("PRAGMA optimize;"))
            .await;
        // Readers and the checkpointer first: the writer, closed last,
        // folds the WAL into the database and removes it.
        for conn in self.readers.iter() {
            conn.clone().close().await.map_err(|e| match e {
                tokio_rusqlite::Error::Close((_, e)) => StoreError::Sqlite(e),
                _ => StoreError::Closed,
            })?;
        }
        let _ = self
            .writer
            .call(|c| -> rusqlite::Result<()> {
                checkpoint::stop(c);
                Ok(())
            })
            .await;
        self.writer.close().await.map_err(|e| match e {
            tokio_rusqlite::Error::Close((_, e)) => StoreError::Sqlite(e),
            _ => StoreError::Closed,
        })?;
        Ok(())
    }
}

/// A fresh store in `dir` subscribed to `n` feeds
/// (`https://example.com/{i}.xml`), with their ids in order.
#[cfg(test)]
pub(crate) async fn store_with_feeds(
    dir: &Path,
    n: usize,
    now: DateTime<Utc>,
) -> (Store, Vec<i64>) {
    use crate::model::{FeedOrigin, FeedSpec};
    let store = Store::open(&dir.join("t.db")).await.expect("open");
    let specs = (0..n)
        .map(|i| FeedSpec {
            url: format!("https://example.com/{i}.xml"),
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
        .add_feeds(specs, FeedOrigin::Cli, now)
        .await
        .expect("add");
    let ids = store
        .feeds()
        .await
        .expect("feeds")
        .iter()
        .map(|f| f.id)
        .collect();
    (store, ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PollOutcome, Schedule, Validators};

    #[test]
    fn the_poll_load_reads_as_busy_share_and_rate_and_fades() {
        let t0 = Instant::now();
        let mut load = WriterLoad::default();
        assert_eq!(load.read(t0), PollLoad::default());
        // Flat out for a second: batches of 100 polls, each taking 100 ms.
        for i in 1..=10 {
            load.add(
                100,
                Duration::from_millis(100),
                t0 + Duration::from_millis(100 * i),
            );
        }
        let now = t0 + Duration::from_secs(1);
        let l = load.read(now);
        assert!((0.6..=1.0).contains(&l.writer_busy), "{l:?}");
        assert!((600.0..=1000.0).contains(&l.polls_per_sec), "{l:?}");
        // Quiet for five seconds: it has faded to almost nothing.
        let later = load.read(now + Duration::from_secs(5));
        assert!(
            later.writer_busy < 0.01 && later.polls_per_sec < 10.0,
            "{later:?}"
        );
    }

    fn not_modified(feed_id: i64) -> PollRecord {
        let now = Utc::now();
        PollRecord {
            feed_id,
            checked_at: now,
            schedule: Schedule {
                next_check_at: now + chrono::Duration::hours(1),
                interval: Duration::from_secs(3600),
                reason: "interval".into(),
            },
            outcome: PollOutcome::NotModified {
                validators: Validators::default(),
            },
            permanent_redirect: None,
            learned_interval: None,
            host_block: None,
            full_text: false,
        }
    }

    /// Polls that finish a few milliseconds apart during a burst are
    /// gathered into a few commits. Without gathering, an idle writer took
    /// each as it came: the polling benchmark committed a median of 9 polls
    /// per transaction, and here it would be one per poll.
    #[tokio::test]
    async fn a_burst_of_polls_is_committed_in_a_few_batches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, ids) = store_with_feeds(dir.path(), 40, Utc::now()).await;
        // An idle store commits the first poll on its own, at once.
        store.record_poll(not_modified(ids[0])).await.expect("poll");
        assert_eq!(
            store.commit_stats(),
            CommitStats {
                batches: 1,
                polls: 1
            }
        );
        let mut polls = tokio::task::JoinSet::new();
        for &id in &ids[1..] {
            let store = store.clone();
            polls.spawn(async move { store.record_poll(not_modified(id)).await });
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        while let Some(done) = polls.join_next().await {
            done.expect("task").expect("recorded");
        }
        let stats = store.commit_stats();
        assert_eq!(stats.polls, 40);
        // 39 polls over ~80 ms (more on a slow machine) with a 50 ms window.
        assert!(stats.batches <= 6, "{stats:?}");
        store.close().await.expect("close");
    }
}
