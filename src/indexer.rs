//! The search indexer: keeps the full-text index in step with the entries,
//! off the poll path.
//!
//! Writes that add an entry or change what it is indexed under only queue
//! it (`store`); this task indexes the queue in batches of [`BATCH`], each
//! one short transaction on the writer. Indexing yields to polls: while
//! the daemon works through a backlog of polls (a first start, a burst
//! after downtime) — storing them keeps the writer more than [`MAX_LOAD`]
//! busy, or more than [`MAX_POLL_RATE`] polls a second arrive — it waits,
//! because then every core-second it took would come out of polling:
//! tokenising and merging terms was about a sixth of the daemon's CPU
//! while it polled flat out. It never waits longer than [`MAX_LAG`]: once
//! the queue has waited that long it is indexed to the end whatever the
//! load. So a search or a `?q=` output sees a new entry within moments on
//! a daemon keeping pace with its feeds, and within about a minute on one
//! working through a backlog.
//!
//! The queue is in the database, so entries queued before a crash or a
//! stop are indexed after the next start.
//!
//! This module also decides what an entry is indexed under ([`index_step`]):
//! its title and the distinct words of what the outputs show
//! (`sanitize::search_words`), made here, on a blocking thread, so the
//! store's backends only read the queue and write what they are given.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::pipeline::sanitize::search_words;
use crate::store::{IndexStep, PollLoad, SearchDoc, Store, StoreError};

/// Entries indexed per transaction: some 20 ms of the writer. Each
/// transaction flushes a new segment of the index, which later merges
/// rewrite, so larger batches cost less per entry: the stage bench's
/// `index` row (CPU per feed of 20 entries, against its `store` row) was
/// 0.52 x store at 500, 0.45 at 2,000 and 0.46 at 5,000.
pub const BATCH: usize = 2000;

/// The writer's poll load (share of the last second spent storing polls)
/// from which indexing waits.
pub const MAX_LOAD: f64 = 0.5;

/// Polls stored per second from which indexing waits. A daemon keeping
/// pace stores far fewer (10,000 feeds every 15 minutes is 11 a second);
/// more means it is working through a backlog, which even when every
/// answer is a cheap `304` keeps the cores busy fetching.
pub const MAX_POLL_RATE: f64 = 200.0;

/// The longest the queue waits for the load to fall.
pub const MAX_LAG: Duration = Duration::from_secs(60);

/// How often a waiting indexer looks at the load again.
const RECHECK: Duration = Duration::from_millis(100);

/// After a failed batch (a full disk, say), the pause before the next try.
const RETRY: Duration = Duration::from_secs(5);

/// A backlog at least this large is logged at info once it is indexed.
const NOTABLE: usize = 10_000;

/// Indexes up to `max` queued entries, oldest first: the store reads them
/// as the outputs now show them, their words are made here (away from the
/// writer), and the store writes them in one transaction, skipping any
/// entry that changed meanwhile (it stays queued).
pub async fn index_step(store: &Store, max: usize) -> Result<IndexStep, StoreError> {
    let batch = store.search_batch(max).await?;
    if batch.is_empty() {
        return Ok(IndexStep::default());
    }
    let docs = tokio::task::spawn_blocking(move || {
        batch
            .into_iter()
            .map(|s| SearchDoc {
                entry_id: s.entry_id,
                generation: s.generation,
                title: s.title.unwrap_or_default(),
                words: search_words(s.html.as_deref().unwrap_or_default()),
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| StoreError::Closed)?;
    store.write_search(docs).await
}

/// Indexes every queued entry, in batches of `batch`, so polls and readers
/// still get the writer in between; returns how many it indexed. For
/// one-shot commands, which leave nothing behind.
pub async fn index_all(store: &Store, batch: usize) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let step = index_step(store, batch).await?;
        total += step.indexed;
        if !step.more {
            return Ok(total);
        }
    }
}

/// Whether to index now, given how hard polls are being stored and how
/// long the queue has been waiting.
pub fn may_index(load: PollLoad, waiting: Duration) -> bool {
    (load.writer_busy < MAX_LOAD && load.polls_per_sec < MAX_POLL_RATE) || waiting >= MAX_LAG
}

/// Runs until `token` is cancelled. Starts by looking at the queue, which
/// a previous run may have left behind.
pub async fn run(store: Store, token: CancellationToken) {
    // When the queue was last seen non-empty after being empty: `None`
    // while it is (as far as this task knows) empty.
    let mut behind_since = Some(Instant::now());
    let mut run_indexed = 0usize;
    loop {
        let since = match behind_since {
            Some(t) => t,
            None => {
                metrics::gauge!("tributary_search_lag_seconds").set(0.0);
                tokio::select! {
                    () = token.cancelled() => return,
                    () = store.index_work() => {}
                }
                let t = Instant::now();
                behind_since = Some(t);
                t
            }
        };
        let waiting = since.elapsed();
        metrics::gauge!("tributary_search_lag_seconds").set(waiting.as_secs_f64());
        if !may_index(store.poll_load(), waiting) {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(RECHECK) => continue,
            }
        }
        match index_step(&store, BATCH).await {
            Ok(step) => {
                run_indexed += step.indexed;
                metrics::counter!("tributary_search_indexed_total").increment(step.indexed as u64);
                tracing::debug!(
                    indexed = step.indexed,
                    more = step.more,
                    "search index batch"
                );
                if !step.more {
                    if run_indexed >= NOTABLE {
                        tracing::info!(
                            entries = run_indexed,
                            seconds = format_args!("{:.1}", since.elapsed().as_secs_f64()),
                            "search index caught up"
                        );
                    }
                    run_indexed = 0;
                    behind_since = None;
                }
            }
            Err(StoreError::Closed) => return,
            Err(e) => {
                // A full disk is logged by the store, once per episode.
                if !matches!(e, StoreError::Full { .. }) {
                    tracing::warn!(error = %e, "search indexing failed; retrying");
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexing_yields_to_a_backlog_of_polls_until_the_queue_has_waited_too_long() {
        let load = |writer_busy, polls_per_sec| PollLoad {
            writer_busy,
            polls_per_sec,
        };
        let now = Duration::ZERO;
        assert!(may_index(load(0.0, 0.0), now));
        // Keeping pace: a poll every so often.
        assert!(may_index(load(MAX_LOAD - 0.01, 11.0), now));
        // A busy writer, or many cheap polls (a run of 304s).
        assert!(!may_index(load(MAX_LOAD, 11.0), now));
        assert!(!may_index(load(0.1, MAX_POLL_RATE), now));
        let almost = MAX_LAG - Duration::from_millis(1);
        assert!(!may_index(load(1.0, 5000.0), almost));
        assert!(may_index(load(1.0, 5000.0), MAX_LAG));
    }
}
