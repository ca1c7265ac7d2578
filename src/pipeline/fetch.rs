//! Fetch: the only place that talks HTTP to the sites we poll.
//!
//! It owns the shared `reqwest::Client` and the rules every request follows:
//! the configured User-Agent, conditional requests with the stored
//! validators, gzip/brotli, connect and total timeouts, a streaming body-size
//! cap, and a hand-driven redirect loop so the caller learns whether a move
//! was permanent. It hands back raw bytes (never re-encoded text) with the
//! HTTP charset, for the parser to decode.
//!
//! A feed (or a `[[site]]` rule) may carry its own request options
//! ([`RequestOptions`]): a User-Agent, sent on every hop; extra headers and
//! Basic credentials, which are secrets and go only to the origin they were
//! given for ([`Secrets`]), never across a redirect to another host; and a
//! proxy, through its own client (one per proxy, built on first use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use headers::HeaderMapExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, redirect};
use url::Url;

use crate::hosts::{Busy, HostLimiter, HostPermit, host_of};

/// How soon a fetch refused a host another node of the cluster may hold
/// is tried again (by then this node has asked the store for it).
pub const ELSEWHERE_RETRY: Duration = Duration::from_secs(3);
use crate::model::{FetchOutcome, FetchedDoc, Freshness, RequestOptions, Validators};
use crate::netguard::{Blocked, Guard, GuardedResolver};

const MAX_REDIRECTS: usize = 5;

const PAGE_ACCEPT: &str = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1";

const FEED_ACCEPT: &str = "application/atom+xml, application/rss+xml, application/feed+json, \
     application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5";

/// The HTTP rules, from `[poll]` in the config.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub user_agent: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("HTTP {status}")]
    Status {
        status: u16,
        /// The raw `Retry-After` header, for the scheduler to honour.
        retry_after: Option<String>,
    },
    #[error("response body exceeds the {limit}-byte limit (poll.max_body)")]
    TooLarge { limit: u64 },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("redirect ({status}) without a usable Location header")]
    BadRedirect { status: u16 },
    #[error("{0}")]
    Http(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("not an HTML page ({media_type})")]
    NotHtml { media_type: String },
    /// The destination is not a public address (see `netguard`).
    #[error("{0}")]
    Blocked(#[from] Blocked),
    /// The host answered 429 earlier and asked us to wait; no request was
    /// sent.
    #[error("host asked us to wait (Retry-After) until {until}")]
    HostBlocked {
        until: chrono::DateTime<chrono::Utc>,
    },
    /// On a cluster: this node does not hold the host (another node may be
    /// sending it requests); no request was sent.
    #[error("host is being fetched by another node until about {until}")]
    HostElsewhere {
        until: chrono::DateTime<chrono::Utc>,
    },
}

impl FetchError {
    /// A short label for metrics and logs: what kind of failure this was.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::BadUrl { .. } => "bad_url",
            FetchError::Timeout(_) => "timeout",
            FetchError::Connect(_) => "connect",
            FetchError::Status { .. } => "http_status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::TooManyRedirects | FetchError::BadRedirect { .. } => "redirect",
            FetchError::Http(_) => "http",
            FetchError::Client(_) => "client",
            FetchError::HostBlocked { .. } => "host_blocked",
            FetchError::HostElsewhere { .. } => "host_elsewhere",
            FetchError::Blocked(_) => "blocked_address",
            FetchError::NotHtml { .. } => "not_html",
        }
    }

    /// The HTTP status the server answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } | FetchError::BadRedirect { status } => Some(*status),
            _ => None,
        }
    }
}

/// Flattens an error and its sources into one line: reqwest's own Display
/// says only "error sending request", the cause is further down.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn classify(e: reqwest::Error, timeout: Duration) -> FetchError {
    // The resolver's refusal travels down reqwest's error chain.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cur {
        if let Some(b) = c.downcast_ref::<Blocked>() {
            return FetchError::Blocked(b.clone());
        }
        cur = c.source();
    }
    if e.is_timeout() {
        FetchError::Timeout(timeout)
    } else if e.is_connect() {
        FetchError::Connect(chain(&e))
    } else {
        FetchError::Http(chain(&e))
    }
}

/// Splits a `Content-Type` into its lowercased media type and charset.
pub fn split_content_type(value: &str) -> (Option<String>, Option<String>) {
    let mut parts = value.split(';');
    let media = parts
        .next()
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty());
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    });
    (media, charset)
}

/// Where the secrets of a set of request options may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secrets {
    /// Only to this origin (a feed's own URL): the same host and port, and
    /// the same scheme or an upgrade from http to https on default ports.
    Origin(Url),
    /// To this host and its subdomains (a `[[site]]` rule's host).
    Site(String),
}

impl Secrets {
    /// Whether secrets may go to `url`.
    pub fn allow(&self, url: &Url) -> bool {
        match self {
            Secrets::Origin(origin) => {
                let same_host = match (origin.host_str(), url.host_str()) {
                    (Some(a), Some(b)) => a
                        .trim_end_matches('.')
                        .eq_ignore_ascii_case(b.trim_end_matches('.')),
                    _ => false,
                };
                if !same_host {
                    return false;
                }
                let same = origin.scheme() == url.scheme()
                    && origin.port_or_known_default() == url.port_or_known_default();
                let upgrade = origin.scheme() == "http"
                    && url.scheme() == "https"
                    && origin.port().is_none()
                    && url.port().is_none();
                same || upgrade
            }
            Secrets::Site(host) => url.host_str().is_some_and(|h| {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                h == *host || h.ends_with(&format!(".{host}"))
            }),
        }
    }
}

/// One fetch's own request options and where their secrets may go.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub options: &'a RequestOptions,
    pub secrets: &'a Secrets,
}

/// Shares one connection pool, and one set of per-host limits, across
/// every fetch.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    /// A client per proxy URL, built on first use: a proxy is a property
    /// of the client in reqwest.
    proxied: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    settings: FetchSettings,
    hosts: Arc<HostLimiter>,
    guard: Arc<Guard>,
}

impl Fetcher {
    pub fn new(
        settings: FetchSettings,
        hosts: Arc<HostLimiter>,
        guard: Arc<Guard>,
    ) -> Result<Fetcher, FetchError> {
        // reqwest is built without a default crypto provider (ring keeps the
        // build lean); installing it twice is harmless, hence the ignore.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = build_client(&settings, &hosts, &guard, None)?;
        Ok(Fetcher {
            client,
            proxied: Arc::default(),
            settings,
            hosts,
            guard,
        })
    }

    /// The client for `proxy` (the shared one without a proxy).
    fn client_for(&self, proxy: Option<&str>) -> Result<reqwest::Client, FetchError> {
        let Some(proxy) = proxy else {
            return Ok(self.client.clone());
        };
        let mut clients = self
            .proxied
            .lock()
            .map_err(|_| FetchError::Client("the proxy client cache is poisoned".to_owned()))?;
        if let Some(client) = clients.get(proxy) {
            return Ok(client.clone());
        }
        // The operator named the proxy: its host may be private (a proxy on
        // the same machine), like a feed host the operator configured.
        if let Ok(url) = Url::parse(proxy)
            && let Some(host) = url.host_str()
        {
            self.guard.trust_host(host);
        }
        let client = build_client(&self.settings, &self.hosts, &self.guard, Some(proxy))?;
        clients.insert(proxy.to_owned(), client.clone());
        Ok(client)
    }

    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    pub fn hosts(&self) -> &Arc<HostLimiter> {
        &self.hosts
    }

    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// GETs a feed, conditionally when validators are known. The whole
    /// exchange, redirects and body included, is bounded by the total
    /// timeout. `permit` is a slot for the URL's host the caller already
    /// holds (the scheduler takes them without waiting); without one, the
    /// fetch waits for its host's turn.
    pub async fn fetch_feed(
        &self,
        url: &str,
        validators: &Validators,
        permit: Option<HostPermit>,
        request: Option<Request<'_>>,
    ) -> Result<FetchOutcome, FetchError> {
        self.fetch_bounded(url, validators, permit, FEED_ACCEPT, request)
            .await
    }

    /// GETs a web page read as a feed (a page rule): conditionally and
    /// under the same bounds as a feed, but asking for HTML; anything else
    /// is `NotHtml` before its body is read.
    pub async fn fetch_page_feed(
        &self,
        url: &str,
        validators: &Validators,
        permit: Option<HostPermit>,
        request: Option<Request<'_>>,
    ) -> Result<FetchOutcome, FetchError> {
        self.fetch_bounded(url, validators, permit, PAGE_ACCEPT, request)
            .await
    }

    /// GETs a web page (an article) under the same rules as feeds, with
    /// the caller's `permit` for its host or waiting for the host's turn.
    /// Only HTML is accepted: anything else is `NotHtml` before its body
    /// is read.
    pub async fn fetch_page(
        &self,
        url: &str,
        permit: Option<HostPermit>,
        request: Option<Request<'_>>,
    ) -> Result<FetchedDoc, FetchError> {
        let none = Validators::default();
        match self
            .fetch_bounded(url, &none, permit, PAGE_ACCEPT, request)
            .await?
        {
            FetchOutcome::Fetched(doc) => Ok(doc),
            // Without validators a server has no business answering 304.
            FetchOutcome::NotModified { .. } => Err(FetchError::Status {
                status: 304,
                retry_after: None,
            }),
        }
    }

    /// A permit for `url`'s host: the one given, if it is for this host,
    /// else one waited for. Held for the whole request.
    async fn permit_for(
        &self,
        url: &Url,
        given: Option<HostPermit>,
    ) -> Result<HostPermit, FetchError> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if let Some(p) = given.filter(|p| p.host() == host) {
            return Ok(p);
        }
        self.hosts.acquire(&host).await.map_err(|busy| {
            let until = match busy {
                Busy::Blocked(until) => until,
                // Another node of the cluster may be sending it requests:
                // this node asks for the host and tries again shortly.
                _ => tokio::time::Instant::now() + ELSEWHERE_RETRY,
            };
            let wait = until.saturating_duration_since(tokio::time::Instant::now());
            let until = chrono::Utc::now()
                + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            match busy {
                Busy::Blocked(_) => FetchError::HostBlocked { until },
                _ => FetchError::HostElsewhere { until },
            }
        })
    }

    /// One conditional GET asking for `accept`, the whole exchange bounded
    /// by the total timeout (feeds, page feeds and articles differ only in `accept` and validators).
    async fn fetch_bounded(
        &self,
        url: &str,
        validators: &Validators,
        permit: Option<HostPermit>,
        accept: &'static str,
        request: Option<Request<'_>>,
    ) -> Result<FetchOutcome, FetchError> {
        let limit = self.settings.timeout;
        let fetch = self.fetch_inner(url, validators, permit, accept, request);
        match tokio::time::timeout(limit, fetch).await {
            Ok(r) => r,
            Err(_) => {
                record_request(url, "timeout", 0);
                Err(FetchError::Timeout(limit))
            }
        }
    }

    async fn fetch_inner(
        &self,
        url: &str,
        validators: &Validators,
        mut permit: Option<HostPermit>,
        accept: &'static str,
        request: Option<Request<'_>>,
    ) -> Result<FetchOutcome, FetchError> {
        let mut current = parse_http_url(url)?;
        let client = self.client_for(request.and_then(|r| r.options.proxy.as_deref()))?;
        let mut all_permanent = true;
        for _ in 0..=MAX_REDIRECTS {
            // Every hop is checked: a redirect may point anywhere.
            self.guard.check_url(&current)?;
            // Released before the next hop's permit is taken, so a redirect
            // between two busy hosts cannot deadlock.
            let held = self.permit_for(&current, permit.take()).await?;
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
            // Validators are echoed byte-for-byte; a value that is not a
            // legal header is dropped rather than mangled.
            if let Some(v) = validators
                .etag
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::IF_NONE_MATCH, v);
            }
            if let Some(v) = validators
                .last_modified
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::IF_MODIFIED_SINCE, v);
            }
            let mut builder = client.get(current.clone());
            if let Some(request) = request {
                builder = with_options(builder, &mut headers, request, &current);
            }
            // The host's spacing counts from now, when the request really
            // starts, not from when the permit was taken.
            held.starting();
            let resp = builder.headers(headers).send().await.map_err(|e| {
                let e = classify(e, self.settings.timeout);
                record_request(current.as_str(), e.kind(), 0);
                e
            })?;
            let status = resp.status();
            record_request(current.as_str(), status.as_str(), 0);
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| current.join(v).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or(FetchError::BadRedirect {
                        status: status.as_u16(),
                    })?;
                all_permanent &= matches!(
                    status,
                    StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
                );
                current = location;
                drop(held);
                continue;
            }
            let permanent_redirect =
                (all_permanent && current.as_str() != url).then(|| current.to_string());
            let new_validators = Validators {
                etag: header_string(resp.headers(), header::ETAG),
                last_modified: header_string(resp.headers(), header::LAST_MODIFIED),
            };
            let freshness = freshness(resp.headers());
            if status == StatusCode::NOT_MODIFIED {
                return Ok(FetchOutcome::NotModified {
                    validators: new_validators,
                    freshness,
                    permanent_redirect,
                });
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    retry_after: header_string(resp.headers(), header::RETRY_AFTER),
                });
            }
            let (media_type, charset) = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(split_content_type)
                .unwrap_or((None, None));
            if accept == PAGE_ACCEPT
                && let Some(m) = media_type.as_deref().filter(|m| !is_html(m))
            {
                return Err(FetchError::NotHtml {
                    media_type: m.to_owned(),
                });
            }
            let body = self.read_capped(resp).await?;
            drop(held);
            record_request(current.as_str(), "body", body.len() as u64);
            return Ok(FetchOutcome::Fetched(FetchedDoc {
                final_url: current.to_string(),
                status: status.as_u16(),
                media_type,
                charset,
                body,
                validators: new_validators,
                permanent_redirect,
                freshness,
            }));
        }
        Err(FetchError::TooManyRedirects)
    }

    /// Reads the (already decompressed) body, stopping as soon as it passes
    /// the cap, so neither a huge file nor a zip bomb is ever held whole.
    async fn read_capped(&self, resp: reqwest::Response) -> Result<bytes::Bytes, FetchError> {
        let limit = self.settings.max_body;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        let mut buf = bytes::BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(e, self.settings.timeout))?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

/// Adds `request`'s options for the hop to `url`: its User-Agent always,
/// its headers and credentials only where its secrets may go. Secret
/// values are marked sensitive, so no debug output of the HTTP stack shows
/// them.
fn with_options(
    mut builder: reqwest::RequestBuilder,
    headers: &mut HeaderMap,
    request: Request<'_>,
    url: &Url,
) -> reqwest::RequestBuilder {
    let options = request.options;
    if let Some(agent) = options
        .user_agent
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(header::USER_AGENT, agent);
    }
    if !request.secrets.allow(url) {
        return builder;
    }
    for (name, value) in &options.headers {
        // Checked when the options were read; one that is not a legal
        // header is skipped rather than mangled.
        let (Ok(name), Ok(mut value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        value.set_sensitive(true);
        headers.append(name, value);
    }
    if let Some(username) = &options.username {
        builder = builder.basic_auth(username, options.password.as_deref());
    }
    builder
}

/// The HTTP client every fetch shares, or one through `proxy`.
fn build_client(
    settings: &FetchSettings,
    hosts: &HostLimiter,
    guard: &Arc<Guard>,
    proxy: Option<&str>,
) -> Result<reqwest::Client, FetchError> {
    let builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .connect_timeout(settings.connect_timeout)
        // Idle time between body chunks: cuts off servers that trickle.
        .read_timeout(settings.timeout)
        .redirect(redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        // As many idle connections per host as it may have requests in
        // flight: with fewer, every poll beyond them on a busy host
        // opened (and the host accepted) a new TCP connection.
        .pool_max_idle_per_host(hosts.concurrency().max(2))
        .dns_resolver(Arc::new(GuardedResolver {
            guard: Arc::clone(guard),
        }));
    let builder = match proxy {
        // A proxy resolves names itself, around the guard: only the
        // operator may name one (per feed or site), and the guard still
        // checks every URL's IP literal.
        Some(proxy) => builder.proxy(
            reqwest::Proxy::all(proxy)
                .map_err(|e| FetchError::Client(format!("invalid proxy: {}", chain(&e))))?,
        ),
        // Never the environment's proxy: it would resolve names around
        // the guard.
        None => builder.no_proxy(),
    };
    builder.build().map_err(|e| FetchError::Client(chain(&e)))
}

/// How long the response says it stays fresh: `Cache-Control: max-age`
/// wins over `Expires` (RFC 9111 §4.2.1); `no-cache`/`no-store` ask for no
/// freshness at all.
pub fn freshness(h: &HeaderMap) -> Option<Freshness> {
    if let Some(cc) = h.typed_get::<headers::CacheControl>() {
        if cc.no_cache() || cc.no_store() {
            return None;
        }
        if let Some(age) = cc.max_age() {
            return Some(Freshness {
                lifetime: age,
                source: "max-age",
            });
        }
    }
    let expires: SystemTime = h.typed_get::<headers::Expires>()?.into();
    // Measured against the server's own clock when it sent one, so a
    // skewed server clock does not distort the lifetime.
    let date = h
        .typed_get::<headers::Date>()
        .map_or_else(SystemTime::now, SystemTime::from);
    let lifetime = expires.duration_since(date).ok()?;
    Some(Freshness {
        lifetime,
        source: "expires",
    })
}

/// Counts one request outcome (a status code, or a failure kind) and the
/// body bytes received, by host.
fn record_request(url: &str, outcome: &str, bytes: u64) {
    let host = host_of(url).unwrap_or_default();
    if outcome == "body" {
        metrics::counter!("tributary_fetch_bytes_total", "host" => host).increment(bytes);
    } else {
        metrics::counter!("tributary_fetch_requests_total", "host" => host, "outcome" => outcome.to_owned())
            .increment(1);
    }
}

/// Media types an article page may have; anything else (PDF, images,
/// video) is not extracted.
fn is_html(media_type: &str) -> bool {
    matches!(media_type, "text/html" | "application/xhtml+xml")
}

fn header_string(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|v| !v.is_empty())
}

fn parse_http_url(url: &str) -> Result<Url, FetchError> {
    let parsed = Url::parse(url).map_err(|e| FetchError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::BadUrl {
            url: url.to_owned(),
            reason: "only http and https are supported".to_owned(),
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_splits_media_type_and_charset() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "application/rss+xml; charset=ISO-8859-1",
                Some("application/rss+xml"),
                Some("ISO-8859-1"),
            ),
            ("Text/XML", Some("text/xml"), None),
            (
                "text/xml;charset=\"utf-8\"",
                Some("text/xml"),
                Some("utf-8"),
            ),
            ("", None, None),
            (
                "text/html; foo=bar; CHARSET=koi8-r",
                Some("text/html"),
                Some("koi8-r"),
            ),
        ];
        for (input, media, charset) in cases {
            let (m, c) = split_content_type(input);
            assert_eq!(m.as_deref(), *media, "{input}");
            assert_eq!(c.as_deref(), *charset, "{input}");
        }
    }

    #[test]
    fn freshness_prefers_max_age_then_expires() {
        let mut h = HeaderMap::new();
        assert_eq!(freshness(&h), None);
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 2026 01:00:00 GMT"),
        );
        h.insert(
            header::DATE,
            HeaderValue::from_static("Thu, 01 Jan 2026 00:00:00 GMT"),
        );
        assert_eq!(
            freshness(&h),
            Some(Freshness {
                lifetime: Duration::from_secs(3600),
                source: "expires"
            })
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=600"),
        );
        assert_eq!(
            freshness(&h),
            Some(Freshness {
                lifetime: Duration::from_secs(600),
                source: "max-age"
            })
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        assert_eq!(freshness(&h), None);
    }

    #[test]
    fn secrets_go_to_their_origin_or_site_only() {
        let url = |s: &str| Url::parse(s).unwrap();
        let origin = Secrets::Origin(url("http://Feeds.Example.com/rss"));
        let cases = [
            ("http://feeds.example.com/other", true),
            ("http://feeds.example.com:80/x", true),
            ("http://FEEDS.example.com./x", true),
            // An upgrade to https on the default ports keeps them...
            ("https://feeds.example.com/rss", true),
            // ...another port, a downgrade, a sibling, a parent or a
            // subdomain does not.
            ("http://feeds.example.com:8080/rss", false),
            ("https://feeds.example.com:8443/rss", false),
            ("http://example.com/rss", false),
            ("http://cdn.feeds.example.com/rss", false),
            ("http://feeds.example.com.evil.net/rss", false),
            ("http://127.0.0.1/rss", false),
        ];
        for (target, allowed) in cases {
            assert_eq!(origin.allow(&url(target)), allowed, "{target}");
        }
        let https = Secrets::Origin(url("https://feeds.example.com/rss"));
        assert!(!https.allow(&url("http://feeds.example.com/rss")));
        let loopback = Secrets::Origin(url("http://127.0.0.1:4000/feed"));
        assert!(loopback.allow(&url("http://127.0.0.1:4000/moved")));
        assert!(!loopback.allow(&url("http://127.0.0.1:4001/feed")));

        let site = Secrets::Site("example.com".to_owned());
        for (target, allowed) in [
            ("https://example.com/a", true),
            ("http://www.example.com:8080/a", true),
            ("https://a.b.Example.com./a", true),
            ("https://badexample.com/a", false),
            ("https://example.com.evil.net/a", false),
        ] {
            assert_eq!(site.allow(&url(target)), allowed, "{target}");
        }
    }

    #[test]
    fn only_http_urls_are_fetched() {
        assert!(parse_http_url("ftp://example.com/feed").is_err());
        assert!(parse_http_url("not a url").is_err());
        assert!(parse_http_url("https://example.com/feed").is_ok());
    }
}
