//! Storage: the narrow, async interface the rest of the program uses to keep
//! feeds, entries and polling state.
//!
//! Callers see plain model types and [`StoreError`]; all SQL lives in
//! [`sqlite`]. A second backend would implement the same methods. One writer
//! connection takes every write (so writers never contend for SQLite's lock)
//! and a separate reader connection serves the HTTP outputs; WAL mode lets
//! the reader run while the writer commits. Both run on their own threads, so
//! no SQLite call ever blocks an async worker.

mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::OpenFlags;

use crate::model::{Feed, FeedOrigin, FeedSpec, FeedStatus, OutputEntry, PollRecord, PollReport};

/// Store failures. Each message already contains its cause (SQLite's own
/// text), so the cause is deliberately not exposed again as `source()`:
/// error chains printed with context would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open database {path}: {cause} (if this is not a Tributary database, move it away or point `database` elsewhere)"
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
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("the database connection is closed")]
    Closed,
    /// A batch of polls could not be committed; every poll in it gets this
    /// (the message of the one SQLite error, which cannot be cloned).
    #[error("database error: {0}")]
    Batch(String),
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

/// A version stamp of everything the outputs show: it moves whenever an
/// entry, or a feed's name, changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub rev: i64,
    pub changed_at: DateTime<Utc>,
}

impl Default for Revision {
    fn default() -> Self {
        Revision {
            rev: 0,
            changed_at: DateTime::UNIX_EPOCH,
        }
    }
}

/// Which entries an output wants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryQuery {
    pub limit: usize,
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: tokio_rusqlite::Connection,
    reader: tokio_rusqlite::Connection,
    path: PathBuf,
    /// Polls waiting for the writer; see [`Store::record_poll`].
    polls: Arc<Mutex<PollQueue>>,
}

/// Poll records waiting to be written, each with the channel its caller
/// awaits, and whether a flush that will pick them up is already on the
/// writer's queue.
#[derive(Default)]
struct PollQueue {
    pending: Vec<(PollRecord, PollReply)>,
    flush_queued: bool,
}

type PollReply = tokio::sync::oneshot::Sender<Result<PollReport, StoreError>>;

fn lock(q: &Mutex<PollQueue>) -> MutexGuard<'_, PollQueue> {
    // Every update under this lock is a push or a take: a panic cannot
    // leave it half done, so poisoning is ignored.
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs on the writer thread: takes every poll queued so far and records
/// them in one transaction, then answers each caller.
fn flush_polls(conn: &mut rusqlite::Connection, queue: &Mutex<PollQueue>) {
    let batch = {
        let mut q = lock(queue);
        q.flush_queued = false;
        std::mem::take(&mut q.pending)
    };
    if batch.is_empty() {
        return;
    }
    let (recs, replies): (Vec<PollRecord>, Vec<PollReply>) = batch.into_iter().unzip();
    match sqlite::record_polls(conn, &recs) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result.map_err(StoreError::from));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Batch(message.clone())));
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    /// A file that is not a database, or is read-only, is an error here —
    /// never a silent empty database.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
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
                sqlite::configure(c)
                    .and_then(|()| sqlite::configure_writer(c))
                    .map_err(|cause| StoreError::Open {
                        path: p.clone(),
                        cause,
                    })?;
                sqlite::migrate(c).map_err(|cause| StoreError::Migrate { path: p, cause })
            })
            .await
            .map_err(|e| match e {
                tokio_rusqlite::Error::Error(e) => e,
                _ => StoreError::Closed,
            })?;
        let reader = tokio_rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .await
        .map_err(open_err)?;
        reader
            .call(|c| c.busy_timeout(Duration::from_secs(5)))
            .await?;
        Ok(Store {
            writer,
            reader,
            path: path.to_owned(),
            polls: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes config-owned feeds match the config file.
    pub async fn sync_config_feeds(
        &self,
        specs: Vec<FeedSpec>,
        now: DateTime<Utc>,
    ) -> Result<SyncReport, StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::sync_config_feeds(c, &specs, now))
            .await?)
    }

    /// Adds subscriptions in one transaction; existing URLs are left alone.
    pub async fn add_feeds(
        &self,
        specs: Vec<FeedSpec>,
        origin: FeedOrigin,
        now: DateTime<Utc>,
    ) -> Result<Vec<AddOutcome>, StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::add_feeds(c, &specs, origin, now))
            .await?)
    }

    /// Removes a subscription and the entries only it carried; returns the
    /// removed feed, or `None` when no feed has that URL.
    pub async fn remove_feed(
        &self,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Feed>, StoreError> {
        let url = url.to_owned();
        Ok(self
            .writer
            .call(move |c| sqlite::remove_feed(c, &url, now))
            .await?)
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

    /// Feeds whose next check is at or before `now`, most overdue first.
    pub async fn due_feeds(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Feed>, StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::due_feeds(c, now, limit))
            .await?)
    }

    /// Due feeds (as [`Store::due_feeds`]) leased until `lease_until`, in
    /// one transaction, so the scheduler needs one writer round trip per
    /// round rather than two.
    pub async fn lease_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Feed>, StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::lease_due(c, now, limit, lease_until))
            .await?)
    }

    /// The earliest next check of any feed.
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
        Ok(self
            .writer
            .call(move |c| sqlite::spread_overdue(c, now, &window))
            .await?)
    }

    /// Leases dispatched feeds and defers others, in one transaction.
    pub async fn dispatch(
        &self,
        leases: Vec<i64>,
        lease_until: DateTime<Utc>,
        defers: Vec<(i64, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::dispatch(c, &leases, lease_until, &defers))
            .await?)
    }

    /// Hosts still blocked by a 429's Retry-After, for start-up.
    pub async fn host_blocks(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::host_blocks(c, now))
            .await?)
    }

    /// Pauses or resumes a feed (resuming also revives a gone feed).
    pub async fn set_status(
        &self,
        feed_id: i64,
        status: FeedStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::set_status(c, feed_id, status, now))
            .await?)
    }

    pub async fn reschedule(&self, feed_id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(self
            .writer
            .call(move |c| sqlite::reschedule(c, feed_id, at))
            .await?)
    }

    /// Records one poll (state, validators, entries) atomically.
    ///
    /// Group commit: a poll that finishes while the writer is busy joins
    /// the next batch, and a batch is one transaction with a savepoint per
    /// poll (see [`sqlite::record_polls`]). The first poll into an empty
    /// queue sends the flush; the ones queued before it runs ride along, so
    /// an idle daemon still writes each poll at once and a busy one commits
    /// once per batch instead of once per poll. Returns when this poll is
    /// committed.
    pub async fn record_poll(&self, rec: PollRecord) -> Result<PollReport, StoreError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let send_flush = {
            let mut q = lock(&self.polls);
            q.pending.push((rec, reply));
            !std::mem::replace(&mut q.flush_queued, true)
        };
        if send_flush {
            let queue = Arc::clone(&self.polls);
            // `call` hands the closure to the writer on its first poll, so
            // it is queued before this future can be dropped; once queued
            // it runs and answers every caller even if this one goes away.
            let sent = self
                .writer
                .call(move |c| -> Result<(), rusqlite::Error> {
                    flush_polls(c, &queue);
                    Ok(())
                })
                .await;
            if sent.is_err() {
                // The writer is gone: nothing queued will ever run.
                let waiting = {
                    let mut q = lock(&self.polls);
                    q.flush_queued = false;
                    std::mem::take(&mut q.pending)
                };
                for (_, reply) in waiting {
                    let _ = reply.send(Err(StoreError::Closed));
                }
            }
        }
        result.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Entries for an output, newest first. Runs on the reader connection.
    pub async fn entries(&self, q: EntryQuery) -> Result<Vec<OutputEntry>, StoreError> {
        Ok(self.reader.call(move |c| sqlite::entries(c, &q)).await?)
    }

    /// The current output revision. Runs on the reader connection.
    pub async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.reader.call(|c| sqlite::revision(c)).await?)
    }

    /// Closes both connections, waiting for queued work to finish; after
    /// this returns every accepted write is on disk.
    pub async fn close(self) -> Result<(), StoreError> {
        let _ = self
            .writer
            .call(|c| c.execute_batch("PRAGMA optimize;"))
            .await;
        for conn in [self.reader, self.writer] {
            conn.close().await.map_err(|e| match e {
                tokio_rusqlite::Error::Close((_, e)) => StoreError::Sqlite(e),
                _ => StoreError::Closed,
            })?;
        }
        Ok(())
    }
}
