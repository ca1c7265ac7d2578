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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
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

/// Copies of a merged story other than the one the entry links to.
pub fn other_copies(e: &OutputEntry) -> impl Iterator<Item = &SourceInfo> {
    e.sources
        .iter()
        .skip(1)
        .filter(move |s| s.link.is_some() && s.link != e.link)
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
    rev: i64,
    etag: String,
    last_modified: SystemTime,
    body: Bytes,
}

/// Beyond this many cached documents the cache starts over: queries with
/// search terms or cursors are unbounded in number.
const CACHE_MAX: usize = 512;

struct AppState {
    store: Store,
    settings: ServeSettings,
    /// Rendered documents by request; one is reused while the store's
    /// revision is unchanged.
    cache: Mutex<HashMap<String, Arc<Rendered>>>,
}

pub fn router(store: Store, settings: ServeSettings) -> Router {
    let state = Arc::new(AppState {
        store,
        settings,
        cache: Mutex::new(HashMap::new()),
    });
    Router::new()
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
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
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
    let s = &state.settings;
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
    let s = &state.settings;
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
    let cached = state
        .cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
        .filter(|r| r.rev == rev.rev);
    let doc = match cached {
        Some(doc) => doc,
        None => {
            let limit = query.limit;
            let entries = match state.store.entries(query.clone()).await {
                Ok(e) => e,
                Err(e) => return unavailable(&e),
            };
            let base = match format {
                Format::Html if path == "/feed" => format!("{}/", s.base_url),
                Format::Html => format!("{}{path}", s.base_url),
                _ => format!("{}{path}.{}", s.base_url, format.ext()),
            };
            let next_url = (entries.len() == limit)
                .then(|| {
                    entries
                        .last()
                        .map(|e| format!("{base}{}", query_string(params, Some(e.cursor))))
                })
                .flatten();
            let meta = FeedMeta {
                title: out.title.clone(),
                id: format!("{base}{}", query_string(params, None)),
                self_url: format!("{base}{}", query_string(params, query.after)),
                home_url: format!("{}/", s.base_url),
                next_url,
                hub: s.hub.clone(),
                updated: rev.changed_at,
            };
            let body = match format {
                Format::Atom => atom::render(&meta, &entries),
                Format::Rss => rss::render(&meta, &entries),
                Format::Json => json::render(&meta, &entries),
                Format::Html => match river_page(s, path, &meta, &entries) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot render the river page");
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "cannot render this page\n",
                        )
                            .into_response();
                    }
                },
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            let doc = Arc::new(Rendered {
                rev: rev.rev,
                // Only compared for equality within this process's cache
                // lifetime plus the revision, so a std hash is fine here.
                etag: format!("\"r{}-{:x}\"", rev.rev, h.finish()),
                last_modified: rev.changed_at.into(),
                body: Bytes::from(body),
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
    respond(&doc, format.content_type(), headers)
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
            let doc =
                crate::opml::export(&specs, &format!("{} subscriptions", state.settings.title));
            ([(header::CONTENT_TYPE, "text/x-opml; charset=utf-8")], doc).into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Answers 304 when the client's validators still match (If-None-Match
/// wins over If-Modified-Since, RFC 9110 §13.2.2), else the document.
fn respond(doc: &Rendered, content_type: &'static str, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
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
    (StatusCode::OK, headers, doc.body.clone()).into_response()
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
