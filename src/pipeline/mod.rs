//! The poll pipeline: fetch → parse (which sanitises) → record.
//!
//! This orchestrator is the only pipeline code that talks to the store, and
//! it does so once per poll, at the end, with one [`PollRecord`]: the stages
//! in between are plain functions over plain data. A failing feed ends as a
//! recorded failure with its backoff, never as an error to the caller; only
//! a store failure is returned.

pub mod clean;
pub mod dedup;
pub mod discover;
pub mod extract;
pub mod fetch;
pub mod lenient;
pub mod parse;
pub mod rules;
pub mod sanitize;
pub mod scrape;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::ExtractConfig;
use crate::hosts::{HostLimiter, HostPermit, host_of};
use crate::model::{
    ArticleJob, ArticleOutcome, ArticleRecord, Feed, FetchOutcome, FetchedDoc, Freshness,
    ParsedFeed, PollOutcome, PollRecord, Schedule, SiteRule, TextPrint, Validators,
};
use crate::policy::{PollFacts, SchedulePolicy, learn_interval, parse_retry_after};
use crate::store::{Store, StoreError};

use extract::Extractor;
use fetch::{FetchError, Fetcher, Request, Secrets};
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
    /// 410: the feed is marked gone and no longer polled.
    Gone,
    /// Not polled: its host asked us to wait.
    Deferred,
}

impl PollStatus {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PollStatus::NotModified => "not_modified",
            PollStatus::Fetched { .. } => "fetched",
            PollStatus::Failed { .. } => "failed",
            PollStatus::Gone => "gone",
            PollStatus::Deferred => "deferred",
        }
    }
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
            PollStatus::Gone => f.write_str("410 gone: no longer polled"),
            PollStatus::Deferred => f.write_str("deferred: host asked us to wait"),
        }
    }
}

/// The result of polling one feed.
#[derive(Debug, Clone)]
pub struct PollSummary {
    pub feed_url: String,
    pub status: PollStatus,
    /// Entries that another feed had already brought (same URL).
    pub merged: usize,
    pub new: usize,
    pub updated: usize,
    pub duration: Duration,
    pub next_check_at: DateTime<Utc>,
}

/// Full-text settings, from `[extract]` and `[[site]]`.
#[derive(Debug, Clone)]
pub struct ArticleSettings {
    pub extract: ExtractConfig,
    pub sites: Arc<Vec<SiteRule>>,
    /// `[retention] max_content_size`: feed content longer than this is
    /// cut when parsed (see [`crate::values::cap_html`]).
    pub max_content: usize,
}

/// Everything a poll needs, built once at start-up and shared.
pub struct Pipeline {
    fetcher: Fetcher,
    sanitizer: Arc<Sanitizer>,
    extractor: Arc<Extractor>,
    policy: SchedulePolicy,
    articles: ArticleSettings,
    store: Store,
    /// Wakes the article worker when a poll queued new articles.
    articles_queued: Arc<tokio::sync::Notify>,
    /// One permit per core for parsing and extraction: more at once only
    /// adds threads (and their allocator arenas) without adding speed,
    /// while fetched bodies wait cheaply in memory.
    cpu: Arc<tokio::sync::Semaphore>,
    /// Whether the parse stage prepares each entry's search words, so the
    /// store indexes the entries a poll adds in the poll's own transaction
    /// (see [`Pipeline::index_on_store`]).
    index_on_store: bool,
}

impl Pipeline {
    pub fn new(
        fetcher: Fetcher,
        policy: SchedulePolicy,
        articles: ArticleSettings,
        store: Store,
    ) -> Pipeline {
        Pipeline {
            fetcher,
            sanitizer: Arc::new(Sanitizer::new()),
            extractor: Arc::new(Extractor::new()),
            policy,
            articles,
            store,
            articles_queued: Arc::new(tokio::sync::Notify::new()),
            cpu: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            index_on_store: false,
        }
    }

    /// Makes polls index the entries they add as they are stored, with
    /// words the parse stage prepares, instead of queueing them for the
    /// indexer. For `tributary poll`, which leaves the search index
    /// complete when it exits: indexing there costs the one writer thread
    /// only FTS5's insert, where the queue costs it the queue rows, reading
    /// every entry back and extracting its words, all after the last poll.
    /// The daemon keeps the queue, which lets indexing wait while polls
    /// arrive flat out (see `indexer`).
    #[must_use]
    pub fn index_on_store(mut self, on: bool) -> Pipeline {
        self.index_on_store = on;
        self
    }

    pub fn articles_queued(&self) -> &Arc<tokio::sync::Notify> {
        &self.articles_queued
    }

    pub fn article_settings(&self) -> &ArticleSettings {
        &self.articles
    }

    pub fn policy(&self) -> &SchedulePolicy {
        &self.policy
    }

    pub fn hosts(&self) -> &Arc<HostLimiter> {
        self.fetcher.hosts()
    }

    /// Polls one feed and records the result atomically. `permit`
    /// is a slot for the feed's host when the caller already holds one;
    /// `request_slot`, the caller's global request slot, is released as
    /// soon as the response is read, before parsing and recording.
    pub async fn poll(
        &self,
        feed: &Feed,
        permit: Option<HostPermit>,
        request_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<PollSummary, StoreError> {
        let started = Instant::now();
        let checked_at = Utc::now();
        let result = self.fetch_and_parse(feed, permit, request_slot).await;
        let url = feed.effective_url();
        let mut record = PollRecord {
            feed_id: feed.id,
            checked_at,
            schedule: Schedule {
                next_check_at: checked_at,
                interval: self.policy.interval_for(feed),
                reason: String::new(),
            },
            outcome: PollOutcome::Deferred,
            permanent_redirect: None,
            learned_interval: None,
            host_block: None,
            full_text: self.articles.extract.full_text_for(&feed.spec),
        };
        let status = match result {
            Ok(Fetched::Doc {
                doc_status,
                validators,
                freshness,
                permanent_redirect,
                parsed,
            }) => {
                let learned = learn_interval(&parsed.entries);
                record.schedule = self.policy.after_success(
                    feed,
                    PollFacts {
                        freshness,
                        hints: Some(&parsed.hints),
                        learned_interval: learned.or(feed.learned_interval),
                    },
                    checked_at,
                );
                record.learned_interval = learned;
                record.permanent_redirect = permanent_redirect;
                record.outcome = PollOutcome::Fetched {
                    status: doc_status,
                    validators,
                    // After learning the interval: the feed's rhythm is
                    // all of its entries, stored or not.
                    feed: keep_allowed(&feed.spec.rules, parsed),
                };
                PollStatus::Fetched { status: doc_status }
            }
            Ok(Fetched::NotModified {
                validators,
                freshness,
                permanent_redirect,
            }) => {
                record.schedule = self.policy.after_success(
                    feed,
                    PollFacts {
                        freshness,
                        hints: None,
                        learned_interval: feed.learned_interval,
                    },
                    checked_at,
                );
                record.permanent_redirect = permanent_redirect;
                record.outcome = PollOutcome::NotModified { validators };
                PollStatus::NotModified
            }
            Err(Failure::HostBlocked { until }) => {
                record.schedule = Schedule {
                    next_check_at: until.max(checked_at)
                        + chrono::Duration::seconds(fastrand::i64(0..=10)),
                    interval: self.policy.interval_for(feed),
                    reason: "host retry-after".to_owned(),
                };
                PollStatus::Deferred
            }
            Err(Failure::HostElsewhere { until }) => {
                record.schedule = Schedule {
                    next_check_at: until.max(checked_at),
                    interval: self.policy.interval_for(feed),
                    reason: "host busy on another node".to_owned(),
                };
                PollStatus::Deferred
            }
            Err(Failure::Gone) => {
                record.schedule = Schedule {
                    next_check_at: checked_at + chrono::Duration::days(3650),
                    interval: self.policy.interval_for(feed),
                    reason: "gone".to_owned(),
                };
                record.outcome = PollOutcome::Gone;
                PollStatus::Gone
            }
            Err(Failure::Error {
                status,
                error,
                retry_after,
            }) => {
                let retry = retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, checked_at));
                record.schedule = self.policy.after_failure(
                    feed,
                    feed.error_count.saturating_add(1),
                    retry,
                    checked_at,
                );
                // A 429 speaks for the whole host: every feed on it waits.
                if status == Some(429)
                    && let Some(host) = host_of(url)
                {
                    record.host_block = Some((host, record.schedule.next_check_at));
                }
                record.outcome = PollOutcome::Failed {
                    status,
                    error: error.clone(),
                };
                PollStatus::Failed { status, error }
            }
        };
        if let Some((host, until)) = &record.host_block {
            let wait = (*until - Utc::now()).to_std().unwrap_or_default();
            self.hosts()
                .block_until(host, tokio::time::Instant::now() + wait);
        }
        let next_check_at = record.schedule.next_check_at;
        let report = self.store.record_poll(record).await?;
        if report.articles_queued > 0 {
            self.articles_queued.notify_one();
        }
        let summary = PollSummary {
            feed_url: feed.spec.url.clone(),
            status,
            new: report.new,
            updated: report.updated,
            merged: report.merged,
            duration: started.elapsed(),
            next_check_at,
        };
        log_poll(&summary);
        metrics::histogram!("tributary_poll_duration_seconds")
            .record(summary.duration.as_secs_f64());
        metrics::counter!("tributary_polls_total", "result" => summary.status.label()).increment(1);
        metrics::counter!("tributary_entries_new_total").increment(report.new as u64);
        metrics::counter!("tributary_entries_updated_total").increment(report.updated as u64);
        Ok(summary)
    }

    async fn fetch_and_parse(
        &self,
        feed: &Feed,
        permit: Option<HostPermit>,
        request_slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Fetched, Failure> {
        // An operator subscribed to this feed: its host may be private (a
        // NAS at home), and so may its articles on that host.
        for url in [feed.spec.url.as_str(), feed.effective_url()] {
            if let Some(host) = host_of(url) {
                self.fetcher.guard().trust_host(&host);
            }
        }
        // The feed's secrets belong to the origin the operator subscribed
        // to, even after a permanent redirect moved the feed elsewhere.
        let secrets = url::Url::parse(&feed.spec.url).ok().map(Secrets::Origin);
        let request = secrets
            .as_ref()
            .filter(|_| !feed.spec.request.is_empty())
            .map(|secrets| Request {
                options: &feed.spec.request,
                secrets,
            });
        let fetched = match &feed.spec.page {
            Some(_) => {
                self.fetcher
                    .fetch_page_feed(feed.effective_url(), &feed.validators, permit, request)
                    .await
            }
            None => {
                self.fetcher
                    .fetch_feed(feed.effective_url(), &feed.validators, permit, request)
                    .await
            }
        }
        .map_err(Failure::from_fetch);
        drop(request_slot);
        let fetched = fetched?;
        let doc = match fetched {
            FetchOutcome::NotModified {
                validators,
                freshness,
                permanent_redirect,
            } => {
                return Ok(Fetched::NotModified {
                    validators,
                    freshness,
                    permanent_redirect,
                });
            }
            FetchOutcome::Fetched(doc) => doc,
        };
        // Parsing and sanitising are CPU work: keep them off the async
        // workers so a huge feed cannot stall the HTTP server.
        let sanitizer = Arc::clone(&self.sanitizer);
        let max_content = self.articles.max_content;
        let doc_status = doc.status;
        let validators = doc.validators.clone();
        let freshness = doc.freshness;
        let permanent_redirect = doc.permanent_redirect.clone();
        let parse_error = |error: String| Failure::Error {
            status: Some(doc_status),
            error,
            retry_after: None,
        };
        if let Some(rule) = &feed.spec.page {
            let rule = rule.clone();
            let _cpu = self.cpu.acquire().await;
            let words = self.index_on_store;
            let parsed = tokio::task::spawn_blocking(move || {
                scrape::scrape_doc(&doc, &rule, max_content, Utc::now())
                    .map(|feed| with_search_words(feed, words))
            })
            .await
            .map_err(|e| parse_error(format!("page reader crashed: {e}")))?
            .map_err(|e| {
                metrics::counter!("tributary_errors_total", "kind" => "parse").increment(1);
                parse_error(e.to_string())
            })?;
            return Ok(Fetched::Doc {
                doc_status,
                validators,
                freshness,
                permanent_redirect,
                parsed,
            });
        }
        let cpu = self.cpu.acquire().await;
        let page = (doc.body.clone(), doc.charset.clone(), doc.final_url.clone());
        let words = self.index_on_store;
        let parsed = tokio::task::spawn_blocking(move || {
            parse::parse_feed_with(
                &doc.body,
                doc.charset.as_deref(),
                &doc.final_url,
                &sanitizer,
                max_content,
            )
            .map(|feed| with_search_words(feed, words))
        })
        .await
        .map_err(|e| parse_error(format!("parser crashed: {e}")))?;
        drop(cpu);
        let parsed = match parsed {
            Ok(parsed) => parsed,
            // A web page where the feed should be (a site's address in the
            // config or an OPML file): poll the feed it offers.
            Err(parse::ParseError::HtmlPage) => {
                return self.poll_discovered(page, request).await.map_err(|e| {
                    metrics::counter!("tributary_errors_total", "kind" => "parse").increment(1);
                    parse_error(e)
                });
            }
            Err(e) => {
                metrics::counter!("tributary_errors_total", "kind" => "parse").increment(1);
                return Err(parse_error(e.to_string()));
            }
        };
        Ok(Fetched::Doc {
            doc_status,
            validators,
            freshness,
            permanent_redirect,
            parsed,
        })
    }
}

impl Pipeline {
    /// A poll that got a web page (`body`, `charset`, `url`) instead of a
    /// feed: the best feed the page offers is fetched and parsed instead,
    /// and reported as a permanent move, so the feed's address is adopted
    /// once polls agree on it (as with a 301) and later polls go straight
    /// to it. The error says why nothing came of it.
    async fn poll_discovered(
        &self,
        (body, charset, url): (bytes::Bytes, Option<String>, String),
        request: Option<Request<'_>>,
    ) -> Result<Fetched, String> {
        let page = url::Url::parse(&url).map_err(|e| e.to_string())?;
        let html = parse::decode_html(&body, charset.as_deref(), Some(&page));
        let found = {
            let page = page.clone();
            let _cpu = self.cpu.acquire().await;
            tokio::task::spawn_blocking(move || discover::candidates(&html, &page))
                .await
                .unwrap_or_default()
        };
        let Some(candidate) = found.first() else {
            return Err(format!(
                "{}; the page links no feed: subscribe with `tributary feeds add {url}`, which also tries the usual paths, or use the feed's own URL, or read the page itself with CSS selectors (page = true; `tributary feeds test {url}` shows how)",
                parse::ParseError::HtmlPage
            ));
        };
        let fetched = self
            .fetcher
            .fetch_feed(&candidate.url, &Validators::default(), None, request)
            .await
            .map_err(|e| format!("the page's feed {} failed: {e}", candidate.url))?;
        let FetchOutcome::Fetched(doc) = fetched else {
            return Err(format!(
                "the page's feed {} answered 304 to an unconditional request",
                candidate.url
            ));
        };
        let sanitizer = Arc::clone(&self.sanitizer);
        let (doc_status, validators, freshness) =
            (doc.status, doc.validators.clone(), doc.freshness);
        let _cpu = self.cpu.acquire().await;
        let words = self.index_on_store;
        let parsed = tokio::task::spawn_blocking(move || {
            parse::parse_feed(
                &doc.body,
                doc.charset.as_deref(),
                &doc.final_url,
                &sanitizer,
            )
            .map(|feed| with_search_words(feed, words))
        })
        .await
        .map_err(|e| format!("parser crashed: {e}"))?
        .map_err(|e| format!("the page's feed {}: {e}", candidate.url))?;
        Ok(Fetched::Doc {
            doc_status,
            validators,
            freshness,
            permanent_redirect: Some(candidate.url.clone()),
            parsed,
        })
    }

    /// What `url` gives without subscribing to it, for `feeds test` and
    /// `feeds add --page`: read with `rule` as a page, else as a feed,
    /// else (a page without a rule) the feeds it links and an item
    /// selector that finds something on it. `options` are the request
    /// options; their secrets go only to `url`'s origin.
    pub async fn preview(
        &self,
        url: &str,
        rule: Option<&crate::model::PageRule>,
        options: &crate::model::RequestOptions,
    ) -> Result<Preview, PreviewError> {
        let origin = url::Url::parse(url).map_err(|e| PreviewError::Fetch(e.to_string()))?;
        let secrets = Secrets::Origin(origin);
        let request = Request {
            options,
            secrets: &secrets,
        };
        let max_content = self.articles.max_content;
        if let Some(rule) = rule {
            let scraper =
                scrape::Scraper::new(rule).map_err(|e| PreviewError::Read(e.to_string()))?;
            let doc = self
                .fetcher
                .fetch_page(url, None, Some(request))
                .await
                .map_err(|e| match e {
                    // It answered, with something no page rule reads.
                    FetchError::NotHtml { .. } => PreviewError::Read(format!(
                        "{e}: a page rule reads HTML pages; for a feed, leave the selectors out"
                    )),
                    e => PreviewError::Fetch(e.to_string()),
                })?;
            let _cpu = self.cpu.acquire().await;
            return tokio::task::spawn_blocking(move || {
                let page = url::Url::parse(&doc.final_url)
                    .map_err(|e| PreviewError::Read(e.to_string()))?;
                let html = parse::decode_html(&doc.body, doc.charset.as_deref(), Some(&page));
                scraper
                    .scrape(&html, &page, max_content, Utc::now())
                    .map(Preview::Page)
                    .map_err(|e| PreviewError::Read(e.to_string()))
            })
            .await
            .map_err(|e| PreviewError::Read(format!("page reader crashed: {e}")))?;
        }
        let doc = match self
            .fetcher
            .fetch_feed(url, &Validators::default(), None, Some(request))
            .await
            .map_err(|e| PreviewError::Fetch(e.to_string()))?
        {
            FetchOutcome::Fetched(doc) => doc,
            FetchOutcome::NotModified { .. } => {
                return Err(PreviewError::Fetch(
                    "HTTP 304 to an unconditional request".to_owned(),
                ));
            }
        };
        let sanitizer = Arc::clone(&self.sanitizer);
        let _cpu = self.cpu.acquire().await;
        tokio::task::spawn_blocking(move || {
            match parse::parse_feed_with(
                &doc.body,
                doc.charset.as_deref(),
                &doc.final_url,
                &sanitizer,
                max_content,
            ) {
                Ok(parsed) => Ok(Preview::Feed(parsed)),
                Err(parse::ParseError::HtmlPage) => {
                    let page = url::Url::parse(&doc.final_url)
                        .map_err(|e| PreviewError::Read(e.to_string()))?;
                    let html = parse::decode_html(&doc.body, doc.charset.as_deref(), Some(&page));
                    Ok(Preview::PageWithoutRule {
                        feeds: discover::candidates(&html, &page),
                        suggestion: scrape::suggest(&html, &page),
                    })
                }
                Err(e) => Err(PreviewError::Read(e.to_string())),
            }
        })
        .await
        .map_err(|e| PreviewError::Read(format!("parser crashed: {e}")))?
    }

    /// Lets this pipeline fetch from `host` even when it is not public:
    /// the operator named it (a feed on a NAS).
    pub fn trust_host(&self, host: &str) {
        self.fetcher.guard().trust_host(host);
    }

    /// Fetches, extracts and cleans one article. Never fails: a failure is
    /// an outcome, with a retry time while attempts remain and the error
    /// is worth retrying.
    /// `permit` is a slot for the page's host when the caller holds one;
    /// without one, the fetch waits for its host's turn.
    pub async fn fetch_article(
        &self,
        job: &ArticleJob,
        permit: Option<HostPermit>,
    ) -> ArticleRecord {
        let at = Utc::now();
        let attempt = job.attempts + 1;
        // The most specific `[[site]]` rule with request options for the
        // page's host; its secrets go to that site only.
        let site = host_of(&job.url).and_then(|host| {
            self.articles
                .sites
                .iter()
                .filter(|rule| !rule.request.is_empty() && rule.matches(&host))
                .max_by_key(|rule| rule.host.len())
        });
        let secrets = site.map(|rule| Secrets::Site(rule.host.clone()));
        let request = site.zip(secrets.as_ref()).map(|(rule, secrets)| Request {
            options: &rule.request,
            secrets,
        });
        let (outcome, retryable) = match self.fetcher.fetch_page(&job.url, permit, request).await {
            Ok(doc) => match self.extract(job, doc).await {
                Ok(outcome) => (outcome, false),
                Err(error) => (ArticleOutcome::Failed { error }, false),
            },
            Err(FetchError::HostBlocked { until } | FetchError::HostElsewhere { until }) => {
                return ArticleRecord {
                    entry_id: job.entry_id,
                    at,
                    outcome: ArticleOutcome::Deferred,
                    retry_at: Some(until),
                };
            }
            Err(e) => {
                metrics::counter!("tributary_errors_total", "kind" => e.kind()).increment(1);
                let retryable = match &e {
                    FetchError::Status { status, .. } => {
                        *status >= 500 || *status == 408 || *status == 429
                    }
                    FetchError::Timeout(_) | FetchError::Connect(_) | FetchError::Http(_) => true,
                    _ => false,
                };
                (
                    ArticleOutcome::Failed {
                        error: e.to_string(),
                    },
                    retryable,
                )
            }
        };
        let retry_at = (retryable && attempt < self.articles.extract.max_attempts).then(|| {
            // 5 min, 10 min, 20 min, … capped at 6 h, with jitter.
            let exp = attempt.saturating_sub(1).min(10);
            let wait = Duration::from_secs(300)
                .saturating_mul(1 << exp)
                .min(Duration::from_secs(6 * 3600));
            at + chrono::Duration::from_std(wait.mul_f64(0.9 + fastrand::f64() * 0.2))
                .unwrap_or(chrono::Duration::hours(6))
        });
        let result = match &outcome {
            ArticleOutcome::Extracted { .. } => "extracted",
            ArticleOutcome::Failed { .. } => "failed",
            ArticleOutcome::Deferred => "deferred",
        };
        metrics::counter!("tributary_articles_total", "result" => result).increment(1);
        if let ArticleOutcome::Failed { error } = &outcome {
            tracing::debug!(url = %job.url, error = %error, attempt, "article failed");
        }
        ArticleRecord {
            entry_id: job.entry_id,
            at,
            outcome,
            retry_at,
        }
    }

    /// Decoding, extraction and cleaning are CPU work: off the async
    /// workers.
    async fn extract(&self, job: &ArticleJob, doc: FetchedDoc) -> Result<ArticleOutcome, String> {
        let extractor = Arc::clone(&self.extractor);
        let sites = Arc::clone(&self.articles.sites);
        let job = job.clone();
        let _cpu = self.cpu.acquire().await;
        tokio::task::spawn_blocking(move || {
            let url = url::Url::parse(&doc.final_url).ok();
            let html = parse::decode_html(&doc.body, doc.charset.as_deref(), url.as_ref());
            let opts = extract::ExtractOptions {
                url: url.as_ref(),
                entry_title: job.title.as_deref(),
                entry_authors: &job.authors,
                rules: &sites,
            };
            let article = extractor.extract(&html, &opts).map_err(|e| e.to_string())?;
            let feed_words = job
                .feed_html
                .as_deref()
                .map(|h| sanitize::html_to_text(h).split_whitespace().count())
                .unwrap_or(0);
            let url_keys = dedup::canonical_candidates(
                Some(job.url.as_str()),
                Some(doc.final_url.as_str()),
                article.canonical_url.as_deref(),
            );
            let published = job
                .published
                .or_else(|| article.published.map(|p| p.timestamp()));
            let print = dedup::analyse(&article.text, published).map(|c| TextPrint {
                version: dedup::VERSION,
                words: c.fingerprint.words,
                simhash: c.fingerprint.simhash,
                minhash: c.sketch.to_bytes(),
                lsh_keys: c.sketch.lsh_keys().to_vec(),
                published,
            });
            Ok(ArticleOutcome::Extracted {
                final_url: doc.final_url,
                canonical_url: article.canonical_url,
                use_for_output: article.word_count > feed_words,
                html: article.html,
                text: article.text,
                word_count: article.word_count,
                url_keys,
                print,
            })
        })
        .await
        .map_err(|e| format!("extractor crashed: {e}"))?
    }
}

/// What [`Pipeline::preview`] found at an address.
#[derive(Debug)]
pub enum Preview {
    /// A feed, as a poll would read it.
    Feed(ParsedFeed),
    /// A page read with the rule given.
    Page(ParsedFeed),
    /// A page and no rule: the feeds it links (best first) and an item
    /// selector that finds items on it, with how many.
    PageWithoutRule {
        feeds: Vec<discover::Candidate>,
        suggestion: Option<(String, usize)>,
    },
}

/// Why [`Pipeline::preview`] has nothing to show.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PreviewError {
    /// The address could not be fetched (now).
    #[error("{0}")]
    Fetch(String),
    /// It was fetched, and what it holds cannot be read as asked.
    #[error("{0}")]
    Read(String),
}

/// A successful fetch, parsed.
enum Fetched {
    Doc {
        doc_status: u16,
        validators: Validators,
        freshness: Option<Freshness>,
        permanent_redirect: Option<String>,
        parsed: ParsedFeed,
    },
    NotModified {
        validators: Validators,
        freshness: Option<Freshness>,
        permanent_redirect: Option<String>,
    },
}

/// `parsed` without the entries the feed's keep/block rules leave out.
fn keep_allowed(rules: &crate::model::EntryRules, mut parsed: ParsedFeed) -> ParsedFeed {
    if !rules.is_empty() {
        let rules = rules::Rules::new(rules);
        parsed.entries.retain(|e| rules.allows(e.into()));
    }
    parsed
}

/// `parsed` with each entry's search words prepared when `on` (see
/// [`Pipeline::index_on_store`]); runs in the parse stage's blocking task.
fn with_search_words(mut parsed: ParsedFeed, on: bool) -> ParsedFeed {
    if on {
        for e in &mut parsed.entries {
            e.search_words = Some(sanitize::search_words(
                e.content_html.as_deref().unwrap_or_default(),
            ));
        }
    }
    parsed
}

/// A poll that did not produce a document, as data.
enum Failure {
    /// 410 Gone.
    Gone,
    /// The host is blocked by an earlier 429; nothing was sent.
    HostBlocked { until: DateTime<Utc> },
    /// Another node of the cluster holds the host; nothing was sent.
    HostElsewhere { until: DateTime<Utc> },
    Error {
        status: Option<u16>,
        error: String,
        retry_after: Option<String>,
    },
}

impl Failure {
    fn from_fetch(e: FetchError) -> Failure {
        if !matches!(
            e,
            FetchError::HostBlocked { .. } | FetchError::HostElsewhere { .. }
        ) {
            metrics::counter!("tributary_errors_total", "kind" => e.kind()).increment(1);
        }
        match e {
            FetchError::Status { status: 410, .. } => Failure::Gone,
            FetchError::HostBlocked { until } => Failure::HostBlocked { until },
            FetchError::HostElsewhere { until } => Failure::HostElsewhere { until },
            FetchError::Status {
                status,
                retry_after,
            } => Failure::Error {
                status: Some(status),
                error: format!("HTTP {status}"),
                retry_after,
            },
            e => Failure::Error {
                status: e.status(),
                error: e.to_string(),
                retry_after: None,
            },
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
        PollStatus::Gone | PollStatus::Deferred => tracing::info!(
            feed = %s.feed_url,
            status = %s.status,
            duration_ms = ms,
            "poll"
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
