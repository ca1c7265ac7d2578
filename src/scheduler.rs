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
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::Feed;
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
    /// Ceiling for error backoff and Retry-After.
    pub max_backoff: Duration,
}

impl SchedulePolicy {
    /// The feed's own interval, else the default, never below the floor.
    pub fn interval_for(&self, feed: &Feed) -> Duration {
        feed.spec
            .interval
            .unwrap_or(self.interval)
            .max(self.min_interval)
    }

    pub fn next_after_success(&self, feed: &Feed, now: DateTime<Utc>) -> DateTime<Utc> {
        now + to_chrono(jitter(self.interval_for(feed)).max(self.min_interval))
    }

    /// Exponential backoff: one interval after the first failure, doubling
    /// with each further one, capped; a `Retry-After` the server sent wins
    /// when it asks for longer (up to the same cap).
    pub fn next_after_failure(
        &self,
        feed: &Feed,
        consecutive_errors: u32,
        retry_after: Option<&str>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let base = self.interval_for(feed);
        let cap = self.max_backoff.max(base);
        let exp = consecutive_errors.saturating_sub(1).min(16);
        let backoff = base.saturating_mul(1 << exp).min(cap);
        let mut wait = jitter(backoff).max(self.min_interval).min(cap);
        if let Some(ra) = retry_after.and_then(|v| parse_retry_after(v, now)) {
            wait = wait.max(ra.min(cap));
        }
        now + to_chrono(wait)
    }

    /// The window over which feeds that fell due during downtime are spread
    /// at start-up.
    pub fn startup_spread(&self, feed: &Feed) -> Duration {
        self.interval_for(feed).min(Duration::from_secs(600))
    }
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

/// Polls due feeds until `shutdown` fires, then lets in-flight polls finish
/// (each is one transaction, so an abandoned one leaves nothing half
/// written) for at most `grace`.
pub async fn run(
    store: Store,
    pipeline: Arc<Pipeline>,
    concurrency: usize,
    lease: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let tracker = TaskTracker::new();
    // Finished polls wake the loop: each one has just moved its feed's next
    // check, which may now be the earliest.
    let poll_done = Arc::new(tokio::sync::Notify::new());
    let lease = to_chrono(lease + LEASE_MARGIN);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let now = Utc::now();
        let due = match store.due_feeds(now, 1).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "scheduler cannot read due feeds; retrying in 5s");
                drop(permit);
                if sleep_or_cancel(Duration::from_secs(5), &shutdown).await {
                    break;
                }
                continue;
            }
        };
        if let Some(feed) = due.into_iter().next() {
            // Lease the feed so the next look does not dispatch it again
            // while this poll runs; the poll's result overwrites it.
            if let Err(e) = store.reschedule(feed.id, now + lease).await {
                tracing::error!(feed = %feed.spec.url, error = %e, "cannot lease feed");
                drop(permit);
                if sleep_or_cancel(Duration::from_secs(5), &shutdown).await {
                    break;
                }
                continue;
            }
            let pipeline = Arc::clone(&pipeline);
            let poll_done = Arc::clone(&poll_done);
            tracker.spawn(async move {
                if let Err(e) = pipeline.poll(&feed).await {
                    tracing::error!(feed = %feed.spec.url, error = %e, "cannot record poll");
                }
                drop(permit);
                poll_done.notify_one();
            });
            continue;
        }
        drop(permit);
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
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_flight = tracker.len(),
            "shutdown: abandoning polls still running (their transactions roll back)"
        );
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
    use crate::model::{FeedOrigin, FeedSpec, Validators};

    fn feed(interval: Option<u64>) -> Feed {
        Feed {
            id: 1,
            spec: FeedSpec {
                url: "https://example.com/feed".into(),
                title: None,
                tags: vec![],
                interval: interval.map(Duration::from_secs),
                full_text: None,
            },
            origin: FeedOrigin::Config,
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
            max_backoff: Duration::from_secs(86400),
        }
    }

    fn secs_after(now: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
        (t - now).num_seconds()
    }

    #[test]
    fn success_waits_one_interval_with_jitter() {
        let now = Utc::now();
        for _ in 0..100 {
            let s = secs_after(now, policy().next_after_success(&feed(None), now));
            assert!((3240..=3960).contains(&s), "{s}");
        }
    }

    #[test]
    fn per_feed_interval_wins_but_not_below_floor() {
        let p = policy();
        assert_eq!(p.interval_for(&feed(Some(7200))), Duration::from_secs(7200));
        assert_eq!(p.interval_for(&feed(Some(10))), Duration::from_secs(300));
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
            let s = secs_after(now, p.next_after_failure(&feed(None), errors, None, now));
            let lo = (base as f64 * 0.9) as i64 - 1;
            let hi = ((base as f64 * 1.1) as i64).min(86400);
            assert!(
                (lo..=hi).contains(&s),
                "errors={errors}: {s} not in {lo}..={hi}"
            );
        }
    }

    #[test]
    fn retry_after_extends_backoff() {
        let now = Utc::now();
        let s = secs_after(
            now,
            policy().next_after_failure(&feed(None), 1, Some("20000"), now),
        );
        assert_eq!(s, 20000);
        let date = httpdate::fmt_http_date((now + chrono::Duration::seconds(30000)).into());
        let s = secs_after(
            now,
            policy().next_after_failure(&feed(None), 1, Some(&date), now),
        );
        assert!((29998..=30000).contains(&s), "{s}");
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
    }
}
