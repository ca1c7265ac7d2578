//! Row decoding both backends share: timestamps stored as Unix seconds,
//! and a feed row's columns ([`FEED_COLUMNS`]) turned into a [`Feed`].
//! Each backend only reads the raw values with its own driver; what they
//! mean (origin and status names, clamps, the JSON of request options,
//! rules, page selectors and hints) is decided here once, so the two
//! cannot drift apart.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    EntryRules, Feed, FeedOrigin, FeedSpec, FeedStatus, PageRule, RequestOptions, Validators,
};

pub(super) fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

pub(super) fn from_ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

pub(super) fn opt_ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.map(from_ts)
}

fn secs(v: Option<i64>) -> Option<Duration> {
    v.map(|s| Duration::from_secs(s.max(0) as u64))
}

/// The columns a feed row is read from, in [`FeedColumns`]' order (the
/// same SQL on SQLite and PostgreSQL).
pub(super) const FEED_COLUMNS: &str = "f.id, f.url, f.title, f.interval_secs, f.origin,
    f.site_title, f.site_url, f.etag, f.last_modified, f.next_check_at, f.last_checked_at,
    f.last_success_at, f.last_status, f.last_error, f.error_count,
    (SELECT count(*) FROM entry_source s WHERE s.feed_id = f.id),
    f.status, f.fetch_url, f.redirect_url, f.redirect_count, f.interval_secs_current,
    f.schedule_reason, f.learned_interval_secs, f.hints, f.full_text, f.request, f.rules, f.page";

/// The raw values of one [`FEED_COLUMNS`] row, as either driver reads them.
pub(super) struct FeedColumns {
    pub id: i64,
    pub url: String,
    pub title: Option<String>,
    pub interval_secs: Option<i64>,
    pub origin: String,
    pub site_title: Option<String>,
    pub site_url: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub next_check_at: i64,
    pub last_checked_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub error_count: i64,
    pub entry_count: i64,
    pub status: String,
    pub fetch_url: Option<String>,
    pub redirect_url: Option<String>,
    pub redirect_count: Option<i64>,
    pub current_interval_secs: Option<i64>,
    pub schedule_reason: Option<String>,
    pub learned_interval_secs: Option<i64>,
    pub hints: Option<String>,
    pub full_text: Option<bool>,
    pub request: Option<String>,
    pub rules: Option<String>,
    pub page: Option<String>,
}

impl FeedColumns {
    /// The feed, without its tags (read separately). Unknown origin or
    /// status names and unreadable JSON fall back to defaults rather than
    /// hiding the feed.
    pub(super) fn into_feed(self) -> Feed {
        let count = |n: i64| n.clamp(0, u32::MAX as i64) as u32;
        Feed {
            id: self.id,
            spec: FeedSpec {
                url: self.url,
                title: self.title,
                tags: Vec::new(),
                interval: secs(self.interval_secs),
                full_text: self.full_text,
                request: RequestOptions::from_json(self.request.as_deref()),
                rules: EntryRules::from_json(self.rules.as_deref()),
                page: PageRule::from_json(self.page.as_deref()),
            },
            origin: FeedOrigin::parse(&self.origin).unwrap_or(FeedOrigin::Cli),
            site_title: self.site_title,
            site_url: self.site_url,
            validators: Validators {
                etag: self.etag,
                last_modified: self.last_modified,
            },
            next_check_at: from_ts(self.next_check_at),
            last_checked_at: opt_ts(self.last_checked_at),
            last_success_at: opt_ts(self.last_success_at),
            last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: self.last_error,
            error_count: count(self.error_count),
            entry_count: self.entry_count.max(0) as u64,
            status: FeedStatus::parse(&self.status).unwrap_or(FeedStatus::Active),
            fetch_url: self.fetch_url,
            pending_redirect: self
                .redirect_url
                .map(|u| (u, count(self.redirect_count.unwrap_or(0)))),
            current_interval: secs(self.current_interval_secs),
            schedule_reason: self.schedule_reason,
            learned_interval: secs(self.learned_interval_secs),
            hints: self
                .hints
                .and_then(|h| serde_json::from_str(&h).ok())
                .unwrap_or_default(),
        }
    }
}
