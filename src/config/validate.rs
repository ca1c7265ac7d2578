//! Phase 2 of loading: the read values laid over the defaults, with the
//! ranges and the rules between keys of the global tables (`[server]`,
//! `[poll]`, `[extract]`, `[retention]`) checked. `[[feed]]`, `[[site]]` and
//! `[[output]]` have their own modules.

use std::path::Path;
use std::time::Duration;

use super::raw::{RawConfig, RawExtract, RawPoll, RawRetention, RawServer};
use super::read::{Field, Reader};
use super::values::format_duration;
use super::*;

impl Reader {
    /// Lays the read values over the defaults and checks ranges and rules
    /// between keys. Returns a complete `Config` even when problems were
    /// found (with defaults in the bad places); the caller discards it then.
    pub(super) fn validate(
        &mut self,
        raw: RawConfig,
        path: Option<&Path>,
        state_dir: Option<&str>,
    ) -> Config {
        let mut config = defaults(path, state_dir);

        if let Field::Set(database, line) = &raw.database {
            match Database::parse(database, &base_dir(path)) {
                Ok(db) => config.database = db,
                Err(message) => self.problem_at_line("database", *line, message),
            }
        }

        let max_page_size = self.validate_server(&raw.server, &mut config.server);
        let max_interval = self.validate_poll(&raw.poll, &mut config.poll);
        let min_interval = raw.poll.min_interval.or(DEFAULT_MIN_INTERVAL);
        if let Some(level) = raw.log.level.or(config.log.level.clone()) {
            config.log.level = level;
        }
        if let Some(format) = raw.log.format.or(config.log.format) {
            config.log.format = format;
        }
        if let Field::Set(allow, _) = raw.network.allow {
            config.network.allow = allow;
        }
        self.validate_extract(&raw.extract, &mut config.extract);
        self.validate_retention(&raw.retention, &mut config.retention);
        config.feeds = self.validate_feeds(raw.feeds, min_interval, max_interval);
        config.sites = self.validate_sites(raw.sites);
        config.outputs = self.validate_outputs(raw.outputs, max_page_size);
        config
    }

    /// Whether a problem was already reported for `key`, so a rule between
    /// keys does not blame the same key twice.
    pub(super) fn reported(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }

    /// A count that must be between 1 and `max`: the value when it is set
    /// and in range, None otherwise (a problem is reported when it is out
    /// of range).
    pub(super) fn count(&mut self, key: &str, field: &Field<i64>, max: i64) -> Option<usize> {
        let Field::Set(n, line) = *field else {
            return None;
        };
        match usize::try_from(n) {
            Ok(c) if (1..=max).contains(&n) => Some(c),
            _ => {
                self.problem_at_line(key, line, format!("must be between 1 and {max}, got {n}"));
                None
            }
        }
    }

    /// Checks `[server]`; returns the `max_page_size` that `[[output]]`
    /// limits must not exceed, or None when it is not known (invalid).
    pub(super) fn validate_server(
        &mut self,
        raw: &RawServer,
        server: &mut ServerConfig,
    ) -> Option<usize> {
        if let Some(listen) = raw.listen.or(server.listen) {
            server.listen = listen;
            server.base_url = base_url_for(listen);
        }
        if let Field::Set(url, _) = &raw.base_url {
            server.base_url = url.clone();
        }
        if let Some(title) = raw.title.or(server.title.clone()) {
            server.title = title;
        }

        let max_page_size = match &raw.max_page_size {
            Field::Set(n, line) => match usize::try_from(*n) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.problem_at_line(
                        "server.max_page_size",
                        *line,
                        format!("must be at least 1, got {n}"),
                    );
                    None
                }
            },
            Field::Missing => Some(DEFAULT_MAX_PAGE_SIZE),
            Field::Invalid => None,
        };
        if let Some(max) = max_page_size {
            server.max_page_size = max;
        }
        if let Field::Set(n, line) = &raw.page_size {
            match usize::try_from(*n) {
                Ok(n) if n >= 1 && max_page_size.is_none_or(|max| n <= max) => {
                    server.page_size = n;
                }
                _ => {
                    let upper = match max_page_size {
                        Some(max) => format!("max_page_size ({max})"),
                        None => "max_page_size".to_owned(),
                    };
                    self.problem_at_line(
                        "server.page_size",
                        *line,
                        format!("must be between 1 and {upper}, got {n}"),
                    );
                }
            }
        } else if let (Field::Missing, Some(max)) = (&raw.page_size, max_page_size) {
            // A small max_page_size lowers the default page size with it,
            // rather than making the operator set both.
            server.page_size = DEFAULT_PAGE_SIZE.min(max);
        }
        if let Field::Set(hub, _) = &raw.websub_hub {
            server.websub_hub = Some(hub.clone());
        }
        max_page_size
    }

    /// Checks `[poll]`; returns the `max_interval` that `[[feed]]`
    /// intervals must not exceed, or None when it is not known (invalid).
    pub(super) fn validate_poll(
        &mut self,
        raw: &RawPoll,
        poll: &mut PollConfig,
    ) -> Option<Duration> {
        let min_interval = match &raw.min_interval {
            Field::Set(d, line) if *d < MIN_MIN_INTERVAL => {
                self.problem_at_line(
                    "poll.min_interval",
                    *line,
                    format!("must be at least 1s, got {}", format_duration(*d)),
                );
                None
            }
            other => other.or(DEFAULT_MIN_INTERVAL),
        };
        if let Some(min) = min_interval {
            poll.min_interval = min;
        }
        // The interval the other keys are checked against; None when it is
        // not known, so those checks are skipped.
        let interval = match (&raw.interval, min_interval) {
            (Field::Set(interval, line), Some(min)) if *interval < min => {
                self.problem_at_line(
                    "poll.interval",
                    *line,
                    format!(
                        "interval ({}) is shorter than min_interval ({}): raise interval or lower min_interval",
                        format_duration(*interval),
                        format_duration(min)
                    ),
                );
                None
            }
            (Field::Set(interval, _), _) => {
                poll.interval = *interval;
                Some(*interval)
            }
            // Only a min_interval from the file can exceed the default
            // interval; that key is the one with a line to point at.
            (Field::Missing, Some(min)) if DEFAULT_INTERVAL < min => {
                if let Field::Set(_, line) = raw.min_interval {
                    self.problem_at_line(
                        "poll.min_interval",
                        line,
                        format!(
                            "min_interval ({}) is longer than the default interval ({}): set interval too, or lower min_interval",
                            format_duration(min),
                            format_duration(DEFAULT_INTERVAL)
                        ),
                    );
                }
                None
            }
            (Field::Missing, _) => Some(DEFAULT_INTERVAL),
            (Field::Invalid, _) => None,
        };
        let max_interval = match (&raw.max_interval, interval) {
            (Field::Set(max, line), Some(interval)) if *max < interval => {
                self.problem_at_line(
                    "poll.max_interval",
                    *line,
                    format!(
                        "max_interval ({}) is shorter than interval ({}): raise max_interval or lower interval",
                        format_duration(*max),
                        format_duration(interval)
                    ),
                );
                None
            }
            // As above: only an interval from the file can exceed the
            // default ceiling.
            (Field::Missing, Some(interval)) if DEFAULT_MAX_INTERVAL < interval => {
                if let Field::Set(_, line) = raw.interval {
                    self.problem_at_line(
                        "poll.interval",
                        line,
                        format!(
                            "interval ({}) is longer than the default max_interval ({}): set max_interval too, or lower interval",
                            format_duration(interval),
                            format_duration(DEFAULT_MAX_INTERVAL)
                        ),
                    );
                }
                None
            }
            (other, _) => other.or(DEFAULT_MAX_INTERVAL),
        };
        if let Some(max) = max_interval {
            poll.max_interval = max;
        }
        match (&raw.max_backoff, min_interval) {
            (Field::Set(max, line), Some(min)) if *max < min => self.problem_at_line(
                "poll.max_backoff",
                *line,
                format!(
                    "max_backoff ({}) is shorter than min_interval ({}): raise max_backoff or lower min_interval",
                    format_duration(*max),
                    format_duration(min)
                ),
            ),
            (Field::Set(max, _), _) => poll.max_backoff = *max,
            (Field::Missing, Some(min)) if DEFAULT_MAX_BACKOFF < min => {
                if let Field::Set(_, line) = raw.min_interval
                    && !self.reported("poll.min_interval")
                {
                    self.problem_at_line(
                        "poll.min_interval",
                        line,
                        format!(
                            "min_interval ({}) is longer than the default max_backoff ({}): set max_backoff too, or lower min_interval",
                            format_duration(min),
                            format_duration(DEFAULT_MAX_BACKOFF)
                        ),
                    );
                }
            }
            _ => {}
        }
        if let Some(adaptive) = raw.adaptive.or(poll.adaptive) {
            poll.adaptive = adaptive;
        }
        // Zero is a meaningful spacing (none), so unlike the timeouts it is
        // accepted.
        if let Some(spacing) = raw.per_host_spacing.or(poll.per_host_spacing) {
            poll.per_host_spacing = spacing;
        }
        if let Some(c) = self.count(
            "poll.per_host_concurrency",
            &raw.per_host_concurrency,
            MAX_CONCURRENCY,
        ) {
            poll.per_host_concurrency = c;
        }
        for (key, field, slot) in [
            ("poll.timeout", &raw.timeout, &mut poll.timeout),
            (
                "poll.connect_timeout",
                &raw.connect_timeout,
                &mut poll.connect_timeout,
            ),
            (
                "poll.lease_margin",
                &raw.lease_margin,
                &mut poll.lease_margin,
            ),
        ] {
            match field {
                Field::Set(d, line) if d.is_zero() => {
                    self.problem_at_line(key, *line, "must be longer than 0s");
                }
                Field::Set(d, _) => *slot = *d,
                _ => {}
            }
        }
        if let Some(c) = self.count("poll.concurrency", &raw.concurrency, MAX_CONCURRENCY) {
            poll.concurrency = c;
        }
        match raw.max_body {
            Field::Set(n, line) if n < MIN_MAX_BODY => self.problem_at_line(
                "poll.max_body",
                line,
                format!("must be at least 1KB (1000 bytes), got {n} bytes"),
            ),
            Field::Set(n, _) => poll.max_body = n,
            _ => {}
        }
        if let Field::Set(agent, _) = &raw.user_agent {
            poll.user_agent = agent.clone();
        }
        max_interval
    }

    pub(super) fn validate_extract(&mut self, raw: &RawExtract, extract: &mut ExtractConfig) {
        if let Some(full_text) = raw.full_text.or(extract.full_text) {
            extract.full_text = full_text;
        }
        if let Some(n) = self.count("extract.max_attempts", &raw.max_attempts, MAX_MAX_ATTEMPTS) {
            // The range check keeps it far below u32::MAX.
            extract.max_attempts = n as u32;
        }
        if let Some(c) = self.count("extract.concurrency", &raw.concurrency, MAX_CONCURRENCY) {
            extract.concurrency = c;
        }
    }

    /// A limit where 0 means "no limit": None for 0, the value when it is
    /// in range, or a problem.
    pub(super) fn limit(
        &mut self,
        key: &str,
        field: &Field<i64>,
        default: Option<usize>,
    ) -> Option<usize> {
        match *field {
            Field::Missing => default,
            Field::Invalid => None,
            Field::Set(0, _) => None,
            Field::Set(n, line) => match usize::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem_at_line(
                        key,
                        line,
                        format!("must be 0 (no limit) or more, got {n}"),
                    );
                    None
                }
            },
        }
    }

    pub(super) fn validate_retention(
        &mut self,
        raw: &RawRetention,
        retention: &mut RetentionConfig,
    ) {
        // "0s" and 0 turn a limit off.
        let off_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
        if let Some(d) = raw.max_age.or(DEFAULT_MAX_AGE) {
            retention.max_age = off_if_zero(d);
        }
        if !matches!(raw.max_entries_per_feed, Field::Invalid) {
            retention.max_entries_per_feed = self.limit(
                "retention.max_entries_per_feed",
                &raw.max_entries_per_feed,
                Some(DEFAULT_MAX_ENTRIES_PER_FEED),
            );
        }
        if !matches!(raw.min_entries_per_feed, Field::Invalid) {
            retention.min_entries_per_feed = self.limit(
                "retention.min_entries_per_feed",
                &raw.min_entries_per_feed,
                Some(DEFAULT_MIN_ENTRIES_PER_FEED),
            );
        }
        match raw.max_content_size {
            Field::Set(n, line) if n < MIN_MAX_CONTENT_SIZE => self.problem_at_line(
                "retention.max_content_size",
                line,
                format!(
                    "must be at least 1KB, got {n} bytes: a smaller cap would cut ordinary posts"
                ),
            ),
            Field::Set(n, _) => {
                retention.max_content_size = usize::try_from(n).unwrap_or(usize::MAX);
            }
            _ => {}
        }
        match raw.max_database_size {
            Field::Set(n, line) if n != 0 && n < MIN_MAX_DATABASE_SIZE => self.problem_at_line(
                "retention.max_database_size",
                line,
                format!(
                    "must be 0 (no cap) or at least 1MB, got {n} bytes: a smaller database cannot hold even its indexes"
                ),
            ),
            Field::Set(n, _) => retention.max_database_size = (n != 0).then_some(n),
            _ => {}
        }
        if let Some(d) = raw.tombstone_max_age.or(DEFAULT_TOMBSTONE_MAX_AGE) {
            retention.tombstone_max_age = off_if_zero(d);
        }
        if !matches!(raw.max_tombstones, Field::Invalid) {
            retention.max_tombstones = self.limit(
                "retention.max_tombstones",
                &raw.max_tombstones,
                Some(DEFAULT_MAX_TOMBSTONES),
            );
        }
        // Tombstones are what keep purged entries out, but they must not
        // grow without bound themselves.
        let age_off = matches!(raw.tombstone_max_age, Field::Set(d, _) if d.is_zero());
        let count_off = matches!(raw.max_tombstones, Field::Set(0, _));
        if age_off && count_off {
            let Field::Set(_, line) = raw.max_tombstones else {
                return;
            };
            self.problem_at_line(
                "retention.max_tombstones",
                line,
                "tombstones must be bounded: tombstone_max_age is \"0s\" too; set one of them above zero",
            );
        }
        match raw.housekeeping_interval {
            Field::Set(d, line) if d < MIN_MIN_INTERVAL => self.problem_at_line(
                "retention.housekeeping_interval",
                line,
                format!("must be at least 1s, got {}", format_duration(d)),
            ),
            Field::Set(d, _) => retention.housekeeping_interval = d,
            _ => {}
        }
    }
}
