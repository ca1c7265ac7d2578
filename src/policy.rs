//! Scheduling policy: when a feed is polled next. Pure functions of a
//! feed, what its last poll learned and the clock — interval (fixed,
//! default or learned from the publishing rhythm), jitter, the floors a
//! server or document asks for (`Cache-Control`, `Expires`, `<ttl>`,
//! `Retry-After`), `skipHours`/`skipDays`, error backoff.
//!
//! No I/O: the pipeline asks it for a [`Schedule`] after each poll, and the
//! dispatch loop (`dispatch`) for how long a feed may wait; neither is
//! imported here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{Feed, FeedHints, Freshness, ParsedEntry, Schedule};

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
    ///
    /// `sy:updatePeriod` (with `sy:updateFrequency`) is only the adaptive
    /// interval's starting guess while a feed has no publishing history,
    /// and never longer than the default: WordPress writes "hourly" into
    /// every feed whatever the site's cadence, so as a floor it capped
    /// every WordPress site at hourly, whatever `interval` said.
    fn base_interval(
        &self,
        feed: &Feed,
        learned: Option<Duration>,
        hints: &FeedHints,
    ) -> (Duration, &'static str) {
        if let Some(fixed) = feed.spec.interval {
            return (fixed.max(self.min_interval), "fixed");
        }
        let default = self.interval.max(self.min_interval);
        match (learned, hints.update_period) {
            (Some(gap), _) if self.adaptive => (
                (gap / 2).clamp(self.min_interval, self.max_interval.max(self.min_interval)),
                "adaptive",
            ),
            (None, Some(period)) if self.adaptive && period < default => {
                (period.max(self.min_interval), "sy:updatePeriod")
            }
            _ => (default, "interval"),
        }
    }

    /// When to poll next after a successful poll. Never sooner than the
    /// server (`Cache-Control: max-age`, `Expires`) or the document
    /// (`<ttl>`) asks (clamped to `max_interval`), never in an hour or on a
    /// day the feed says to skip. `sy:updatePeriod` is no floor (see
    /// `base_interval`).
    pub fn after_success(&self, feed: &Feed, facts: PollFacts<'_>, now: DateTime<Utc>) -> Schedule {
        let hints = facts.hints.unwrap_or(&feed.hints);
        let (base, mut reason) = self.base_interval(feed, facts.learned_interval, hints);
        let mut wait = jitter(base).max(self.min_interval);
        let asks = [
            facts.freshness.map(|f| (f.lifetime, f.source)),
            hints.ttl.map(|d| (d, "ttl")),
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
pub(crate) fn jitter(d: Duration) -> Duration {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{FeedOrigin, FeedSpec, FeedStatus, Validators};

    /// A feed for tests: `interval` seconds of its own, if any.
    pub(crate) fn feed(interval: Option<u64>) -> Feed {
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
                page: None,
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

    /// WordPress writes `sy:updatePeriod` hourly into every feed: it is
    /// no floor, whatever the interval, and before a feed has history it
    /// may only bring the first polls closer together.
    #[test]
    fn sy_update_period_is_never_a_floor_only_a_starting_guess() {
        let now = Utc::now();
        let hourly = FeedHints {
            update_period: Some(Duration::from_secs(3600)),
            ..FeedHints::default()
        };
        let facts = |learned| PollFacts {
            hints: Some(&hourly),
            learned_interval: learned,
            ..PollFacts::default()
        };
        let short = SchedulePolicy {
            interval: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
            ..policy()
        };
        // A fixed interval, the default interval, a learned one: each wins.
        let s = short.after_success(&feed(Some(5)), facts(None), now);
        assert_eq!((s.interval.as_secs(), s.reason.as_str()), (5, "fixed"));
        assert!(secs_after(now, s.next_check_at) <= 6);
        let s = short.after_success(&feed(None), facts(None), now);
        assert_eq!((s.interval.as_secs(), s.reason.as_str()), (5, "interval"));
        let s = short.after_success(&feed(None), facts(Some(Duration::from_secs(20))), now);
        assert_eq!((s.interval.as_secs(), s.reason.as_str()), (10, "adaptive"));
        let fixed = SchedulePolicy {
            adaptive: false,
            ..short.clone()
        };
        let s = fixed.after_success(&feed(None), facts(None), now);
        assert_eq!((s.interval.as_secs(), s.reason.as_str()), (5, "interval"));

        // Before any history, a shorter period is the adaptive guess ...
        let every_ten_minutes = FeedHints {
            update_period: Some(Duration::from_secs(600)),
            ..FeedHints::default()
        };
        let guess = PollFacts {
            hints: Some(&every_ten_minutes),
            ..PollFacts::default()
        };
        let s = policy().after_success(&feed(None), guess, now);
        assert_eq!(
            (s.interval.as_secs(), s.reason.as_str()),
            (600, "sy:updatePeriod")
        );
        // ... held to the floor, and history replaces it.
        let s = policy().after_success(&feed(None), facts(None), now);
        assert_eq!(
            (s.interval.as_secs(), s.reason.as_str()),
            (3600, "interval")
        );
        let tiny = FeedHints {
            update_period: Some(Duration::from_secs(10)),
            ..FeedHints::default()
        };
        let s = policy().after_success(
            &feed(None),
            PollFacts {
                hints: Some(&tiny),
                ..PollFacts::default()
            },
            now,
        );
        assert_eq!(s.interval.as_secs(), 300);
        // A hint the feed gave earlier (a 304 has no document) counts too,
        // the same way.
        let mut stored = feed(None);
        stored.hints = every_ten_minutes.clone();
        let s = policy().after_success(&stored, PollFacts::default(), now);
        assert_eq!(s.reason, "sy:updatePeriod");
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
            search_words: None,
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
