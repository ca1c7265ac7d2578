//! The poll pipeline: fetch → parse (which sanitises) → record.
//!
//! This orchestrator is the only pipeline code that talks to the store, and
//! it does so once per poll, at the end, with one [`PollRecord`]: the stages
//! in between are plain functions over plain data. A failing feed ends as a
//! recorded failure with its backoff, never as an error to the caller; only
//! a store failure is returned.

pub mod clean;
pub mod extract;
pub mod fetch;
pub mod parse;
pub mod sanitize;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::model::{Feed, FetchOutcome, PollOutcome, PollRecord};
use crate::scheduler::SchedulePolicy;
use crate::store::{Store, StoreError};

use fetch::{FetchError, Fetcher};
use sanitize::Sanitizer;

/// How a poll ended, for the CLI summary and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStatus {
    /// 304: the stored copy was current.
    NotModified,
    Fetched {
        status: u16,
    },
    Failed {
        status: Option<u16>,
        error: String,
    },
}

impl std::fmt::Display for PollStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollStatus::NotModified => f.write_str("304 not modified"),
            PollStatus::Fetched { status } => write!(f, "{status} ok"),
            PollStatus::Failed {
                status: Some(s),
                error,
            } => write!(f, "{s} error: {error}"),
            PollStatus::Failed {
                status: None,
                error,
            } => write!(f, "error: {error}"),
        }
    }
}

/// The result of polling one feed.
#[derive(Debug, Clone)]
pub struct PollSummary {
    pub feed_url: String,
    pub status: PollStatus,
    pub new: usize,
    pub updated: usize,
    pub duration: Duration,
    pub next_check_at: DateTime<Utc>,
}

/// Everything a poll needs, built once at start-up and shared.
pub struct Pipeline {
    fetcher: Fetcher,
    sanitizer: Arc<Sanitizer>,
    policy: SchedulePolicy,
    store: Store,
}

impl Pipeline {
    pub fn new(fetcher: Fetcher, policy: SchedulePolicy, store: Store) -> Pipeline {
        Pipeline {
            fetcher,
            sanitizer: Arc::new(Sanitizer::new()),
            policy,
            store,
        }
    }

    pub fn policy(&self) -> &SchedulePolicy {
        &self.policy
    }

    /// Polls one feed and records the result in one transaction.
    pub async fn poll(&self, feed: &Feed) -> Result<PollSummary, StoreError> {
        let started = Instant::now();
        let checked_at = Utc::now();
        let outcome = self.fetch_and_parse(feed).await;
        let next_check_at = match &outcome {
            Ok(_) => self.policy.next_after_success(feed, checked_at),
            Err(f) => self.policy.next_after_failure(
                feed,
                feed.error_count.saturating_add(1),
                f.retry_after.as_deref(),
                checked_at,
            ),
        };
        let (outcome, status) = match outcome {
            Ok(PollOutcome::Fetched {
                status,
                validators,
                feed,
            }) => (
                PollOutcome::Fetched {
                    status,
                    validators,
                    feed,
                },
                PollStatus::Fetched { status },
            ),
            Ok(other) => (other, PollStatus::NotModified),
            Err(f) => (
                PollOutcome::Failed {
                    status: f.status,
                    error: f.error.clone(),
                },
                PollStatus::Failed {
                    status: f.status,
                    error: f.error,
                },
            ),
        };
        let report = self
            .store
            .record_poll(PollRecord {
                feed_id: feed.id,
                checked_at,
                next_check_at,
                outcome,
            })
            .await?;
        let summary = PollSummary {
            feed_url: feed.spec.url.clone(),
            status,
            new: report.new,
            updated: report.updated,
            duration: started.elapsed(),
            next_check_at,
        };
        log_poll(&summary);
        Ok(summary)
    }

    async fn fetch_and_parse(&self, feed: &Feed) -> Result<PollOutcome, Failure> {
        let fetched = self
            .fetcher
            .fetch_feed(&feed.spec.url, &feed.validators)
            .await
            .map_err(Failure::from_fetch)?;
        let doc = match fetched {
            FetchOutcome::NotModified { validators } => {
                return Ok(PollOutcome::NotModified { validators });
            }
            FetchOutcome::Fetched(doc) => doc,
        };
        // Parsing and sanitising are CPU work: keep them off the async
        // workers so a huge feed cannot stall the HTTP server.
        let sanitizer = Arc::clone(&self.sanitizer);
        let status = doc.status;
        let validators = doc.validators.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            parse::parse_feed(
                &doc.body,
                doc.charset.as_deref(),
                &doc.final_url,
                &sanitizer,
            )
        })
        .await
        .map_err(|e| Failure {
            status: Some(status),
            error: format!("parser crashed: {e}"),
            retry_after: None,
        })?
        .map_err(|e| Failure {
            status: Some(status),
            error: e.to_string(),
            retry_after: None,
        })?;
        Ok(PollOutcome::Fetched {
            status,
            validators,
            feed: parsed,
        })
    }
}

/// A failed poll, as data.
struct Failure {
    status: Option<u16>,
    error: String,
    retry_after: Option<String>,
}

impl Failure {
    fn from_fetch(e: FetchError) -> Failure {
        let retry_after = match &e {
            FetchError::Status { retry_after, .. } => retry_after.clone(),
            _ => None,
        };
        Failure {
            status: e.status(),
            error: e.to_string(),
            retry_after,
        }
    }
}

fn log_poll(s: &PollSummary) {
    let ms = s.duration.as_millis() as u64;
    match &s.status {
        PollStatus::Failed { status, error } => tracing::warn!(
            feed = %s.feed_url,
            status = status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            error = %error,
            duration_ms = ms,
            next_check = %s.next_check_at.format("%Y-%m-%dT%H:%M:%SZ"),
            "poll failed"
        ),
        PollStatus::NotModified => tracing::info!(
            feed = %s.feed_url,
            status = 304,
            new = s.new,
            updated = s.updated,
            duration_ms = ms,
            "poll"
        ),
        PollStatus::Fetched { status } => tracing::info!(
            feed = %s.feed_url,
            status = *status,
            new = s.new,
            updated = s.updated,
            duration_ms = ms,
            "poll"
        ),
    }
}
