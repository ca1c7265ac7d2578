//! Serve: the HTTP side — the merged output feeds and the health check.
//!
//! Reads only, through the store's reader connection. Rendered documents are
//! cached per query and revision, so a reader polling an unchanged output
//! costs one tiny query; every response carries a strong ETag and
//! Last-Modified and a matching conditional request gets `304`.

pub mod atom;
pub mod html;
pub mod json;
pub mod rss;
pub mod status;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::model::{Cursor, OutputEntry, SourceInfo};
use crate::pipeline::clean;
use crate::pipeline::sanitize::Sanitizer;
use crate::store::{EntryQuery, Store};

/// A named output from the config, served at `/o/<name>.<ext>`.
#[derive(Debug, Clone)]
pub struct NamedOutput {
    pub name: String,
    pub title: String,
    /// Its filters (tags, feeds, include/exclude); paging and request
    /// filters are added per request.
    pub filter: EntryQuery,
    pub page_size: usize,
}

/// What the server needs from the config.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub title: String,
    /// Public base URL without a trailing slash, e.g. `http://host:8080`.
    pub base_url: String,
    pub page_size: usize,
    pub max_page_size: usize,
    pub outputs: Vec<NamedOutput>,
    /// A WebSub hub advertised with rel="hub".
    pub hub: Option<String>,
    /// `[retention] max_database_size`, shown on the status page.
    pub db_cap: Option<u64>,
    /// `[retention] max_content_size`: an entry's content is cut to this
    /// many bytes in every output (see [`safe_entries`]).
    pub max_content: usize,
}

/// The identity and links of one rendered output document.
pub struct FeedMeta {
    pub title: String,
    /// Stable id: the output's first-page URL.
    pub id: String,
    /// This document's URL (with its cursor).
    pub self_url: String,
    pub home_url: String,
    /// The next (older) page, when there may be one.
    pub next_url: Option<String>,
    pub hub: Option<String>,
    /// When the data behind the output last changed.
    pub updated: DateTime<Utc>,
}

impl FeedMeta {
    /// The document's `updated`: the newest entry's, or the data's.
    pub fn updated_for(&self, entries: &[OutputEntry]) -> DateTime<Utc> {
        entries
            .iter()
            .map(|e| e.updated)
            .max()
            .map_or(self.updated, |n| n.max(self.updated))
    }
}

/// Copies of a merged story other than the one the entry links to, one
/// per link (two copies in one feed may share it).
pub fn other_copies(e: &OutputEntry) -> impl Iterator<Item = &SourceInfo> {
    e.sources
        .iter()
        .enumerate()
        .filter(move |&(i, s)| {
            s.link.is_some() && s.link != e.link && !e.sources[..i].iter().any(|o| o.link == s.link)
        })
        .map(|(_, s)| s)
}

/// The feeds that carried a merged story besides the first (which the
/// formats' own source element names), one per feed.
pub fn other_feeds(e: &OutputEntry) -> impl Iterator<Item = &SourceInfo> {
    e.sources
        .iter()
        .enumerate()
        .filter(move |&(i, s)| {
            !e.sources[..i.max(1)]
                .iter()
                .any(|o| o.feed_url == s.feed_url)
        })
        .map(|(_, s)| s)
}

/// An enclosure's media type when it is one (`type/subtype`, RFC 6838
/// token characters, parameters allowed), else `None`. Source feeds carry
/// `type="mp3"` or `type="video"`; passed through, that made our Atom
/// invalid (RFC 4287's `atomMediaType`) and misleads any reader, so
/// outputs drop it (RSS and JSON Feed then say `application/octet-stream`).
pub fn media_type(enc: &crate::model::Enclosure) -> Option<&str> {
    let t = enc.media_type.as_deref()?.trim();
    let essence = t.split(';').next().unwrap_or_default().trim_end();
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let (ty, sub) = essence.split_once('/')?;
    (token(ty) && token(sub)).then_some(t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Format {
    Atom,
    Rss,
    Json,
    Html,
}

impl Format {
    fn from_ext(ext: &str) -> Option<Format> {
        match ext {
            "atom" => Some(Format::Atom),
            "rss" => Some(Format::Rss),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Format::Atom => "atom",
            Format::Rss => "rss",
            Format::Json => "json",
            Format::Html => "html",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Atom => "application/atom+xml; charset=utf-8",
            Format::Rss => "application/rss+xml; charset=utf-8",
            Format::Json => "application/feed+json; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

struct Rendered {
    /// The entries' revision, and the search index's for a `?q=` query.
    rev: (i64, i64),
    /// The settings generation it was rendered with.
    fingerprint: u64,
    etag: String,
    last_modified: SystemTime,
    body: Bytes,
    /// The body compressed, made on the first request that asks for each
    /// encoding and kept with the document: compressing half a megabyte
    /// of full text on every poll cost far more than serving it.
    gzip: OnceLock<Bytes>,
    br: OnceLock<Bytes>,
}

/// A content coding we serve precompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Brotli,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
        }
    }

    /// The coding to answer a request with: brotli, else gzip, when the
    /// client's `Accept-Encoding` allows it (q > 0, RFC 9110 §12.5.3).
    fn negotiate(request: &HeaderMap) -> Option<Coding> {
        let mut gzip = false;
        let mut br = false;
        let mut any = false;
        for value in request.get_all(header::ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let ok = q > 0.0;
                match coding.as_str() {
                    "gzip" | "x-gzip" => gzip = ok,
                    "br" => br = ok,
                    "*" => any = ok,
                    _ => {}
                }
            }
        }
        if br || any {
            Some(Coding::Brotli)
        } else if gzip {
            Some(Coding::Gzip)
        } else {
            None
        }
    }

    fn compress(self, body: &[u8]) -> Bytes {
        use std::io::Write;
        match self {
            Coding::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 4),
                    flate2::Compression::new(6),
                );
                // Writing to a Vec cannot fail.
                let _ = enc.write_all(body);
                Bytes::from(enc.finish().unwrap_or_default())
            }
            Coding::Brotli => {
                let mut out = Vec::with_capacity(body.len() / 4);
                {
                    // Quality 5: most of brotli's gain at gzip's speed;
                    // 11 (the format's default) takes seconds per megabyte.
                    let mut enc = brotli::CompressorWriter::new(&mut out, 64 * 1024, 5, 22);
                    let _ = enc.write_all(body);
                }
                Bytes::from(out)
            }
        }
    }
}

/// Beyond this many cached documents the cache starts over: queries with
/// search terms or cursors are unbounded in number.
const CACHE_MAX: usize = 512;

struct AppState {
    store: Store,
    /// The settings in force; swapped whole by [`ServeHandle::replace`] on a
    /// config reload. Each request takes one snapshot, so it never sees half
    /// of an old config and half of a new one.
    current: RwLock<Arc<Current>>,
    /// Rendered documents by request; one is reused while the store's
    /// revision and the settings are unchanged.
    cache: Mutex<HashMap<String, Arc<Rendered>>>,
    /// Feed content is stored as the feed gave it; every entry is
    /// sanitised here on its way to an output (see [`sanitize_entries`]).
    sanitizer: Arc<OutputSanitizer>,
}

/// One generation of settings with its fingerprint.
struct Current {
    settings: ServeSettings,
    /// A stable hash of the settings: part of every ETag and cache check, so
    /// a new title or base URL is never answered with a stale document or a
    /// `304`, within one process or across a restart.
    fingerprint: u64,
}

impl Current {
    fn new(settings: ServeSettings) -> Arc<Current> {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
        format!("{settings:?}").hash(&mut h);
        Arc::new(Current {
            fingerprint: h.finish(),
            settings,
        })
    }
}

impl AppState {
    fn current(&self) -> Arc<Current> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// Swaps the server's settings while it runs (config reload).
#[derive(Clone)]
pub struct ServeHandle(Arc<AppState>);

impl ServeHandle {
    /// Puts `settings` in force for every request that starts from now on
    /// and empties the render cache.
    pub fn replace(&self, settings: ServeSettings) {
        let next = Current::new(settings);
        match self.0.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        if let Ok(mut c) = self.0.cache.lock() {
            c.clear();
        }
    }
}

pub fn router(store: Store, settings: ServeSettings) -> Router {
    router_with_handle(store, settings).0
}

/// The router and a handle that swaps its settings on reload.
pub fn router_with_handle(store: Store, settings: ServeSettings) -> (Router, ServeHandle) {
    let state = Arc::new(AppState {
        store,
        current: RwLock::new(Current::new(settings)),
        cache: Mutex::new(HashMap::new()),
        sanitizer: Arc::new(OutputSanitizer::default()),
    });
    let handle = ServeHandle(Arc::clone(&state));
    let router = Router::new()
        .route(
            "/feed.atom",
            get(|s, q, h| default_output(s, q, h, Format::Atom)),
        )
        .route(
            "/feed.rss",
            get(|s, q, h| default_output(s, q, h, Format::Rss)),
        )
        .route(
            "/feed.json",
            get(|s, q, h| default_output(s, q, h, Format::Json)),
        )
        .route("/", get(|s, q, h| default_output(s, q, h, Format::Html)))
        .route("/o/{file}", get(named_output))
        .route("/opml", get(opml))
        .route("/status", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .layer(tower_http::compression::CompressionLayer::new())
        // A panic in any handler is a bug; it must cost that request a
        // 500, not the connection (outputs also catch their own, to log
        // which entry did it: see `render_guarded`).
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(state);
    (router, handle)
}

/// Serves until `shutdown` fires, then stops accepting and lets in-flight
/// responses finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

type Params = Query<Vec<(String, String)>>;

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response()
}

async fn default_output(
    State(state): State<Arc<AppState>>,
    Query(params): Params,
    headers: HeaderMap,
    format: Format,
) -> Response {
    let current = state.current();
    let s = &current.settings;
    let out = NamedOutput {
        name: String::new(),
        title: s.title.clone(),
        filter: EntryQuery::default(),
        page_size: s.page_size,
    };
    render_output(&state, &out, "/feed", format, &params, &headers).await
}

async fn named_output(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    // `/o/<name>` is the output's page; `/o/<name>.<ext>` its feeds.
    let split = match file.rsplit_once('.') {
        Some((n, ext)) => Format::from_ext(ext).map(|f| (n, f)),
        None => Some((file.as_str(), Format::Html)),
    };
    let Some((name, format)) = split else {
        return (
            StatusCode::NOT_FOUND,
            "no such output: use /o/<name>.atom, .rss or .json\n",
        )
            .into_response();
    };
    let Some(out) = state
        .current()
        .settings
        .outputs
        .iter()
        .find(|o| o.name == name)
        .cloned()
    else {
        return (StatusCode::NOT_FOUND, format!("no output named {name:?}\n")).into_response();
    };
    render_output(
        &state,
        &out,
        &format!("/o/{name}"),
        format,
        &params,
        &headers,
    )
    .await
}

/// Turns request parameters into a query on top of the output's own
/// filters: `tag`, `feed` (repeatable), `q`, `limit`, `cursor`.
fn parse_params(
    out: &NamedOutput,
    max_page_size: usize,
    params: &[(String, String)],
) -> Result<EntryQuery, String> {
    let mut q = out.filter.clone();
    q.limit = out.page_size;
    for (k, v) in params {
        match k.as_str() {
            "tag" => q.tags.push(v.clone()),
            "feed" => q.feeds.push(
                url::Url::parse(v)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| v.clone()),
            ),
            "q" if v.chars().count() > 200 => return Err("q is limited to 200 characters".into()),
            "q" => q.search = Some(v.clone()).filter(|v| !v.trim().is_empty()),
            "limit" => match v.parse::<usize>() {
                Ok(n) if n >= 1 => q.limit = n.min(max_page_size),
                _ => {
                    return Err(format!(
                        "limit must be a whole number from 1 to {max_page_size}"
                    ));
                }
            },
            "cursor" => match Cursor::decode(v) {
                Some(c) => q.after = Some(c),
                None => return Err("cursor is not one this server gave out".into()),
            },
            _ => {}
        }
    }
    Ok(q)
}

/// The query string that reproduces a request's filters, for self and
/// next links (the cursor is added separately).
fn query_string(params: &[(String, String)], cursor: Option<Cursor>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if matches!(k.as_str(), "tag" | "feed" | "q" | "limit") {
            ser.append_pair(k, v);
        }
    }
    if let Some(c) = cursor {
        ser.append_pair("cursor", &c.encode());
    }
    let qs = ser.finish();
    if qs.is_empty() { qs } else { format!("?{qs}") }
}

async fn render_output(
    state: &AppState,
    out: &NamedOutput,
    path: &str,
    format: Format,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let current = state.current();
    let s = &current.settings;
    let query = match parse_params(out, s.max_page_size, params) {
        Ok(q) => q,
        Err(msg) => return bad_request(msg),
    };
    let rev = match state.store.revision().await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let key = format!(
        "{path}.{}{}",
        format.ext(),
        query_string(params, query.after)
    );
    // A search's results also change when the index catches up with new
    // entries (see `indexer`), which does not move the entries' revision.
    let (doc_rev, changed_at) = if query.search.is_some() {
        (
            (rev.rev, rev.search),
            rev.changed_at.max(rev.search_changed_at),
        )
    } else {
        ((rev.rev, 0), rev.changed_at)
    };
    let cached = state
        .cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
        .filter(|r| r.rev == doc_rev && r.fingerprint == current.fingerprint);
    let doc = match cached {
        Some(doc) => doc,
        None => {
            // One entry more than the page shows tells whether a next page
            // exists, so `next` links (RFC 5005, JSON Feed's `next_url`)
            // appear only when it does, never to an empty page.
            let limit = query.limit;
            let mut entries = match state
                .store
                .entries(EntryQuery {
                    limit: limit.saturating_add(1),
                    ..query.clone()
                })
                .await
            {
                Ok(e) => e,
                Err(e) => return unavailable(&e),
            };
            let more = entries.len() > limit;
            entries.truncate(limit);
            // CPU work (about 10 µs an entry): off the async workers.
            let sanitizer = Arc::clone(&state.sanitizer);
            // Dates are judged against the revision's time, not this
            // node's clock: every node (and every render of one revision)
            // then makes the same bytes of the same rows, whatever its
            // clock says or when the cache was last filled.
            let now = if changed_at > DateTime::UNIX_EPOCH {
                changed_at
            } else {
                Utc::now()
            };
            let max_content = s.max_content;
            let entries = match tokio::task::spawn_blocking(move || {
                sanitize_entries(&sanitizer, safe_entries(entries, now, max_content))
            })
            .await
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "sanitising a page of entries failed");
                    return cannot_render();
                }
            };
            let base = match format {
                Format::Html if path == "/feed" => format!("{}/", s.base_url),
                Format::Html => format!("{}{path}", s.base_url),
                _ => format!("{}{path}.{}", s.base_url, format.ext()),
            };
            let next_url = more
                .then(|| {
                    entries
                        .last()
                        .map(|e| format!("{base}{}", query_string(params, Some(e.cursor))))
                })
                .flatten();
            let meta = FeedMeta {
                title: crate::values::legal_text(&out.title).into_owned(),
                id: format!("{base}{}", query_string(params, None)),
                self_url: format!("{base}{}", query_string(params, query.after)),
                home_url: format!("{}/", s.base_url),
                next_url,
                hub: s.hub.clone(),
                updated: changed_at,
            };
            let Some(body) = render_guarded(format, s, path, &meta, &entries) else {
                return cannot_render();
            };
            let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
            key.hash(&mut h);
            current.fingerprint.hash(&mut h);
            let doc = Arc::new(Rendered {
                rev: doc_rev,
                fingerprint: current.fingerprint,
                // Compared across nodes (a reader's next request may reach
                // another one): a fixed-key hash, not std's, whose output
                // may change between builds.
                etag: match doc_rev {
                    (rev, 0) => format!("\"r{rev}-{:x}\"", h.finish()),
                    (rev, search) => format!("\"r{rev}.{search}-{:x}\"", h.finish()),
                },
                last_modified: changed_at.into(),
                body: Bytes::from(body),
                gzip: OnceLock::new(),
                br: OnceLock::new(),
            });
            if let Ok(mut c) = state.cache.lock() {
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
                c.insert(key, Arc::clone(&doc));
            }
            doc
        }
    };
    let coding = Coding::negotiate(headers);
    let body = match coding {
        Some(c) => {
            let slot = match c {
                Coding::Gzip => &doc.gzip,
                Coding::Brotli => &doc.br,
            };
            match slot.get() {
                Some(b) => b.clone(),
                None => {
                    // Compression is CPU work: off the async workers. Two
                    // first requests may both compress; the first stored wins.
                    let plain = doc.body.clone();
                    match tokio::task::spawn_blocking(move || c.compress(&plain)).await {
                        Ok(z) => slot.get_or_init(|| z).clone(),
                        Err(_) => doc.body.clone(),
                    }
                }
            }
        }
        None => doc.body.clone(),
    };
    respond(&doc, format.content_type(), headers, coding, body)
}

/// Renders one document of `format`. A renderer that panics (a bug: the
/// entries were made safe first) costs this request a 500, never the
/// connection or the next request: the panic is caught here and the
/// entries that trigger it are found by rendering each alone, so the log
/// names the output and the entries. `None` when nothing was rendered
/// (logged).
fn render_guarded(
    format: Format,
    s: &ServeSettings,
    path: &str,
    meta: &FeedMeta,
    entries: &[OutputEntry],
) -> Option<String> {
    let render = |entries: &[OutputEntry]| match format {
        Format::Atom => Ok(atom::render(meta, entries)),
        Format::Rss => Ok(rss::render(meta, entries)),
        Format::Json => Ok(json::render(meta, entries)),
        Format::Html => river_page(s, path, meta, entries),
    };
    guarded(&format!("{path}.{}", format.ext()), entries, render)
}

/// Runs `render` over `entries`, catching a panic; see [`render_guarded`].
fn guarded<E: std::fmt::Display>(
    output: &str,
    entries: &[OutputEntry],
    render: impl Fn(&[OutputEntry]) -> Result<String, E>,
) -> Option<String> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    match catch_unwind(AssertUnwindSafe(|| render(entries))) {
        Ok(Ok(body)) => Some(body),
        Ok(Err(e)) => {
            tracing::error!(output, error = %e, "cannot render an output");
            None
        }
        Err(payload) => {
            let culprits = panicking_entries(entries, &render);
            tracing::error!(
                output,
                entries = ?culprits,
                panic = panic_message(payload.as_ref()),
                "rendering an output panicked; answered 500"
            );
            None
        }
    }
}

/// The uids of the entries that make `render` panic on their own.
fn panicking_entries<'a, E>(
    entries: &'a [OutputEntry],
    render: &impl Fn(&[OutputEntry]) -> Result<String, E>,
) -> Vec<&'a str> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    entries
        .iter()
        .filter(|e| catch_unwind(AssertUnwindSafe(|| render(std::slice::from_ref(*e)))).is_err())
        .map(|e| e.uid.as_str())
        .collect()
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

/// Makes stored entries safe to render, whatever version stored them:
/// dates a reader can represent and believe (an implausible one falls
/// back to the entry's place in the output order, which the store never
/// sets later than first seen), only characters XML allows in every text
/// field, capped titles, names and categories, and content cut to
/// `max_content` bytes with a visible note. The same rules as the parse
/// stage applies to new entries ([`crate::values`]). Runs before
/// [`sanitize_entries`], which closes any element a cut left open.
pub fn safe_entries(
    mut entries: Vec<OutputEntry>,
    now: DateTime<Utc>,
    max_content: usize,
) -> Vec<OutputEntry> {
    use crate::values::{self, legal_text, make_legal};
    let url = |u: &mut Option<String>| {
        if let Some(s) = u {
            make_legal(s);
        }
        if u.as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > values::MAX_URL_BYTES)
        {
            *u = None;
        }
    };
    for e in &mut entries {
        let ok = |d: &DateTime<Utc>| values::plausible_date(*d, now);
        let placed = DateTime::from_timestamp(e.cursor.sort_at, 0).filter(ok);
        if e.published.is_some_and(|d| !ok(&d)) {
            e.published = placed;
        }
        if !ok(&e.updated) {
            e.updated = e.published.or(placed).unwrap_or(DateTime::UNIX_EPOCH);
        }
        e.title = e
            .title
            .as_deref()
            .and_then(|t| values::safe_text(t, values::MAX_TITLE_CHARS));
        url(&mut e.link);
        url(&mut e.content_base);
        if let Some(html) = &mut e.content_html {
            make_legal(html);
            if let std::borrow::Cow::Owned(cut) = values::cap_html(html, max_content) {
                *html = cut;
            }
        }
        values::safe_list(&mut e.authors, values::MAX_NAME_CHARS, values::MAX_AUTHORS);
        values::safe_list(
            &mut e.categories,
            values::MAX_CATEGORY_CHARS,
            values::MAX_CATEGORIES,
        );
        e.enclosures.retain_mut(|enc| {
            make_legal(&mut enc.url);
            if let Some(t) = &mut enc.media_type {
                make_legal(t);
            }
            !enc.url.is_empty() && enc.url.len() <= values::MAX_URL_BYTES
        });
        for src in &mut e.sources {
            make_legal(&mut src.feed_url);
            src.title = values::safe_text(&src.title, values::MAX_TITLE_CHARS)
                .unwrap_or_else(|| legal_text(&src.feed_url).into_owned());
            url(&mut src.site_url);
            url(&mut src.link);
        }
    }
    entries
}

/// The answer when a page cannot be rendered (the cause is logged).
fn cannot_render() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot render this page\n",
    )
        .into_response()
}

/// Sanitises the entries of a page as they leave the store for an output:
/// the one place content does, so every format and the river page render
/// only sanitised HTML with absolute URLs. Feed content is stored as the
/// feed gave it (most stored entries never reach a page, and sanitising
/// every new entry was a fifth of a poll's CPU); relative URLs resolve
/// against the entry's `content_base`, else its link. Content that shows
/// nothing once sanitised is dropped, as it was when stored sanitised.
/// An entry already sanitised with the same content is not sanitised
/// again (see [`OutputSanitizer`]).
///
/// Feed content (not an article, which was cleaned when extracted) first
/// goes through the cleaning rules that apply to it
/// ([`clean::feed_content`]: inline related links, share and comment
/// links, the "appeared first on" footer); sanitising runs last, on the
/// cleaned HTML, or on the content as given if cleaning left nothing
/// visible.
pub fn sanitize_entries(
    sanitizer: &OutputSanitizer,
    mut entries: Vec<OutputEntry>,
) -> Vec<OutputEntry> {
    for e in &mut entries {
        let Some(html) = e.content_html.take() else {
            continue;
        };
        let (base, link) = (e.content_base.as_deref(), e.link.as_deref());
        let title = e.title.as_deref();
        let is_article = e.content_is_article;
        let key = OutputSanitizer::key(e.cursor.id, &html, base, link, title, is_article);
        e.content_html = sanitizer.get_or_insert_with(key, || {
            let page = link.and_then(|l| url::Url::parse(l).ok());
            let cleaned = (!is_article)
                .then(|| clean::feed_content(&html, page.as_ref(), title))
                .flatten();
            cleaned
                .and_then(|c| sanitizer.sanitizer.clean_stored(&c, base, link))
                .or_else(|| sanitizer.sanitizer.clean_stored(&html, base, link))
        });
    }
    entries
}

/// The sanitiser, and sanitised content by entry and stored content, so a
/// page rendered again (a new revision, another query, another format)
/// mostly reuses entries already sanitised: with large entries,
/// sanitising a page costs several milliseconds. Bounded by bytes; starts
/// over when full, like the render cache.
#[derive(Default)]
pub struct OutputSanitizer {
    sanitizer: Sanitizer,
    map: Mutex<Sanitized>,
}

/// Results by key (`None`: nothing visible), and their bytes.
type Sanitized = (HashMap<u64, Option<Arc<str>>>, usize);

/// Bytes of sanitised HTML [`OutputSanitizer`] holds at most.
const SANITIZED_CACHE_BYTES: usize = 8 << 20;

impl OutputSanitizer {
    /// The entry, its stored content, what its URLs resolve against, and
    /// what feed-content cleaning reads (title, whether it is an article):
    /// whatever changes the result changes the key.
    fn key(
        id: i64,
        html: &str,
        base: Option<&str>,
        link: Option<&str>,
        title: Option<&str>,
        is_article: bool,
    ) -> u64 {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
        (id, html, base, link, title, is_article).hash(&mut h);
        h.finish()
    }

    fn get_or_insert_with(
        &self,
        key: u64,
        clean: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        if let Ok(map) = self.map.lock()
            && let Some(hit) = map.0.get(&key)
        {
            return hit.as_deref().map(str::to_owned);
        }
        let cleaned = clean();
        if let Ok(mut map) = self.map.lock() {
            let size = cleaned.as_ref().map_or(0, String::len) + 64;
            if map.1 + size > SANITIZED_CACHE_BYTES {
                *map = (HashMap::new(), 0);
            }
            map.1 += size;
            map.0.insert(key, cleaned.as_deref().map(Arc::from));
        }
        cleaned
    }
}

fn river_page(
    s: &ServeSettings,
    path: &str,
    meta: &FeedMeta,
    entries: &[OutputEntry],
) -> Result<String, askama::Error> {
    use askama::Template;
    let feeds = [Format::Atom, Format::Rss, Format::Json]
        .into_iter()
        .map(|f| html::FeedLink {
            label: match f {
                Format::Atom => "Atom",
                Format::Rss => "RSS",
                _ => "JSON Feed",
            },
            mime: f.content_type().split(';').next().unwrap_or_default(),
            href: format!("{}{path}.{}", s.base_url, f.ext()),
        })
        .collect();
    html::RiverPage {
        title: meta.title.clone(),
        feeds,
        opml: format!("{}/opml", s.base_url),
        items: entries.iter().map(html::item).collect(),
        next: meta.next_url.clone(),
        version: env!("CARGO_PKG_VERSION"),
    }
    .render()
}

/// `/opml`: the subscriptions, for moving to or sharing with another reader.
async fn opml(State(state): State<Arc<AppState>>) -> Response {
    match state.store.feeds().await {
        Ok(feeds) => {
            let specs: Vec<crate::model::FeedSpec> = feeds
                .into_iter()
                .map(|f| crate::model::FeedSpec {
                    title: f.spec.title.clone().or(f.site_title),
                    ..f.spec
                })
                .collect();
            let doc = crate::opml::export(
                &specs,
                &format!("{} subscriptions", state.current().settings.title),
            );
            ([(header::CONTENT_TYPE, "text/x-opml; charset=utf-8")], doc).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// `/status`: feeds by state, database, outputs, and a chart per feed.
/// Rendered per request (it is small and shows the time); never cached.
async fn status_page(State(state): State<Arc<AppState>>) -> Response {
    let now = Utc::now();
    let snap = match state.store.status(status::CHART_DAYS, now).await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let current = state.current();
    match status::render(&snap, &current.settings, current.settings.db_cap, now) {
        Ok(page) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            page,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the status page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render this page\n",
            )
                .into_response()
        }
    }
}

/// Answers 304 when the client's validators still match (If-None-Match
/// wins over If-Modified-Since, RFC 9110 §13.2.2), else the document.
fn respond(
    doc: &Rendered,
    content_type: &'static str,
    request: &HeaderMap,
    coding: Option<Coding>,
    body: Bytes,
) -> Response {
    let mut headers = HeaderMap::new();
    // The body depends on Accept-Encoding; the ETag does not (one
    // representation's validator, as tower-http's layer also had it).
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::from_str(&doc.etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(doc.last_modified)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    // Looked up only when present: the typed decoder turns an absent
    // If-None-Match into an empty list that would shadow If-Modified-Since.
    let not_modified = if request.contains_key(header::IF_NONE_MATCH) {
        match (request.typed_get::<IfNoneMatch>(), doc.etag.parse::<ETag>()) {
            (Some(inm), Ok(etag)) => !inm.precondition_passes(&etag),
            _ => false,
        }
    } else if let Some(ims) = request.typed_get::<IfModifiedSince>() {
        !ims.is_modified(doc.last_modified)
    } else {
        false
    };
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(c) = coding {
        // Already encoded: the compression layer leaves it alone.
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.name()));
    }
    (StatusCode::OK, headers, body).into_response()
}

fn unavailable(e: &crate::store::StoreError) -> Response {
    // The client gets a short message; the log gets the cause.
    tracing::error!(error = %e, "cannot read the database for an output");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is not available; try again later\n",
    )
        .into_response()
}

static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls are
/// no-ops), so fetches and polls start counting. The daemon calls it at
/// start; one-shot commands do not, and record nothing.
pub fn install_metrics() {
    METRICS.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed (an embedding
        // program's); then ours just stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    });
}

/// `/metrics`: Prometheus text format.
async fn metrics_text() -> Response {
    match METRICS.get() {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle.render(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

/// 200 while the outputs can be served. A full disk stops writes, not
/// serving: it is reported in the body, still with 200.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.revision().await {
        Ok(_) if state.store.is_full() => (
            StatusCode::OK,
            "degraded: database full; serving stored entries, writes paused\n",
        )
            .into_response(),
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, html: &str) -> OutputEntry {
        OutputEntry {
            uid: format!("urn:uuid:00000000-0000-8000-8000-{id:012}"),
            title: Some("t".into()),
            link: Some("https://example.com/posts/1".into()),
            content_html: Some(html.into()),
            content_base: None,
            content_is_article: false,
            authors: vec![],
            categories: vec![],
            published: None,
            updated: DateTime::UNIX_EPOCH,
            enclosures: vec![],
            sources: vec![],
            cursor: Cursor { sort_at: 0, id },
        }
    }

    fn shown(cache: &OutputSanitizer, entries: Vec<OutputEntry>) -> Vec<Option<String>> {
        sanitize_entries(cache, entries)
            .into_iter()
            .map(|e| e.content_html)
            .collect()
    }

    /// The cache returns what sanitising returns, and never an entry's old
    /// result once its content or base changed.
    #[test]
    fn sanitised_content_is_cached_per_entry_and_content() {
        let cache = OutputSanitizer::default();
        let hostile = "<p onclick=\"x()\"><a href=\"rel\">one</a></p><script>y()</script>";
        let want = Some(
            "<p><a href=\"https://example.com/posts/rel\" rel=\"noopener noreferrer\">one</a></p>"
                .to_owned(),
        );
        assert_eq!(shown(&cache, vec![entry(1, hostile)]), vec![want.clone()]);
        assert_eq!(shown(&cache, vec![entry(1, hostile)]), [want]);
        assert_eq!(cache.map.lock().unwrap().0.len(), 1);
        // Same id, new content: sanitised afresh.
        assert_eq!(
            shown(&cache, vec![entry(1, "<p>two</p>")]),
            [Some("<p>two</p>".to_owned())]
        );
        // Same content, another base: its URLs resolve against the new one.
        let mut based = entry(1, hostile);
        based.content_base = Some("https://cdn.example.net/x/".into());
        let out = shown(&cache, vec![based]);
        assert!(
            out[0]
                .as_deref()
                .is_some_and(|h| h.contains("https://cdn.example.net/x/rel")),
            "{out:?}"
        );
        // Nothing visible stays nothing.
        assert_eq!(
            shown(&cache, vec![entry(2, "<script>z()</script>")]),
            [None]
        );
        assert_eq!(
            shown(&cache, vec![entry(2, "<script>z()</script>")]),
            [None]
        );
    }

    /// A renderer that panics on one entry costs the request (None), and
    /// the entry is named; others render.
    #[test]
    fn a_panicking_renderer_is_caught_and_the_entry_named() {
        let entries = vec![entry(1, "a"), entry(2, "boom"), entry(3, "c")];
        let render = |es: &[OutputEntry]| -> Result<String, String> {
            if es.iter().any(|e| e.content_html.as_deref() == Some("boom")) {
                panic!("renderer bug");
            }
            Ok(format!("{} entries", es.len()))
        };
        assert_eq!(guarded("/feed.rss", &entries, render), None);
        assert_eq!(
            panicking_entries(&entries, &render),
            ["urn:uuid:00000000-0000-8000-8000-000000000002"]
        );
        assert_eq!(
            guarded("/feed.rss", &entries[..1], render).as_deref(),
            Some("1 entries")
        );
    }

    /// What older versions stored (any date, control characters, huge
    /// content) leaves `safe_entries` representable and legal.
    #[test]
    fn stored_entries_are_made_safe_to_render() {
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let year = |y: i32| {
            chrono::NaiveDate::from_ymd_opt(y, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        };
        let mut e = entry(1, &format!("<p>{}</p>", "x".repeat(10_000)));
        e.title = Some(format!("a\u{1}b\u{7f}\u{1b}{}", "t".repeat(2000)));
        e.published = Some(year(99_999));
        e.updated = year(-5);
        e.cursor.sort_at = year(2026).timestamp();
        e.authors = vec!["\u{0}".into(), "Ann\u{85}".into()];
        let out = safe_entries(vec![e], now, 1000).remove(0);
        assert_eq!(out.published, Some(year(2026)));
        assert_eq!(out.updated, year(2026));
        let title = out.title.unwrap();
        assert!(
            title.starts_with("abttt") && title.ends_with('…'),
            "{title}"
        );
        assert_eq!(title.chars().count(), crate::values::MAX_TITLE_CHARS);
        assert_eq!(out.authors, ["Ann"]);
        let html = out.content_html.unwrap();
        assert!(
            html.len() < 1200 && html.contains("Cut here by Tributary"),
            "{html}"
        );
        // Plausible values pass untouched; no date is invented.
        let mut e = entry(2, "<p>ok</p>");
        e.published = None;
        e.updated = year(2025);
        let out = safe_entries(vec![e], now, 1000).remove(0);
        assert_eq!((out.published, out.updated), (None, year(2025)));
        assert_eq!(out.content_html.as_deref(), Some("<p>ok</p>"));
    }

    /// Feed content goes through `clean::feed_content` before the
    /// sanitiser; an article (cleaned when extracted) does not; and the
    /// cache tells the two apart.
    #[test]
    fn feed_content_is_cleaned_articles_are_not() {
        let cache = OutputSanitizer::default();
        let html = "<p>The story itself, long enough to be the larger part of the entry text.</p>\
                    <p>Read also: <a href=\"https://example.com/posts/0\">Archive</a></p>";
        let out = shown(&cache, vec![entry(3, html)]);
        let got = out[0].as_deref().unwrap_or_default();
        assert!(got.contains("The story itself"), "{got}");
        assert!(!got.contains("Archive"), "{got}");
        let mut article = entry(3, html);
        article.content_is_article = true;
        let out = shown(&cache, vec![article]);
        assert!(
            out[0].as_deref().is_some_and(|h| h.contains("Archive")),
            "{out:?}"
        );
    }
}
