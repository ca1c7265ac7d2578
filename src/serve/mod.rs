//! Serve: the HTTP side — the merged output feeds and the health check.
//!
//! Reads only, through the store's reader connection. Rendered documents are
//! cached per query and revision, so a reader polling an unchanged output
//! costs one tiny query; every response carries a strong ETag and
//! Last-Modified and a matching conditional request gets `304`.

pub mod atom;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::store::{EntryQuery, Store};

/// What the server needs from the config.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub title: String,
    /// Public base URL without a trailing slash, e.g. `http://host:8080`.
    pub base_url: String,
    pub page_size: usize,
    pub max_page_size: usize,
}

struct Rendered {
    rev: i64,
    etag: String,
    last_modified: SystemTime,
    body: Bytes,
}

struct AppState {
    store: Store,
    settings: ServeSettings,
    /// Rendered documents by query; an entry is reused while the store's
    /// revision is unchanged. Bounded by the small set of query shapes
    /// (format × limit), which `limit` clamping keeps finite.
    cache: Mutex<HashMap<String, Arc<Rendered>>>,
}

pub fn router(store: Store, settings: ServeSettings) -> Router {
    let state = Arc::new(AppState {
        store,
        settings,
        cache: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/feed.atom", get(feed_atom))
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

#[derive(Debug, serde::Deserialize)]
struct FeedParams {
    limit: Option<String>,
}

async fn feed_atom(
    State(state): State<Arc<AppState>>,
    Query(params): Query<FeedParams>,
    request_headers: HeaderMap,
) -> Response {
    let s = &state.settings;
    let limit = match params.limit.as_deref().map(str::parse::<usize>) {
        None => s.page_size,
        Some(Ok(n)) if n >= 1 => n.min(s.max_page_size),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "limit must be a whole number from 1 to {}\n",
                    s.max_page_size
                ),
            )
                .into_response();
        }
    };
    let rev = match state.store.revision().await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let key = format!("atom?limit={limit}");
    let cached = state
        .cache
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
        .filter(|r| r.rev == rev.rev);
    let doc = match cached {
        Some(doc) => doc,
        None => {
            let entries = match state.store.entries(EntryQuery { limit }).await {
                Ok(e) => e,
                Err(e) => return unavailable(&e),
            };
            let self_url = format!("{}/feed.atom", s.base_url);
            let home_url = format!("{}/", s.base_url);
            let body = atom::render(
                &atom::FeedMeta {
                    title: &s.title,
                    self_url: &self_url,
                    home_url: &home_url,
                    updated: rev.changed_at,
                },
                &entries,
            );
            let doc = Arc::new(Rendered {
                rev: rev.rev,
                etag: format!("\"r{}-l{}\"", rev.rev, limit),
                last_modified: rev.changed_at.into(),
                body: Bytes::from(body),
            });
            if let Ok(mut c) = state.cache.lock() {
                c.insert(key, Arc::clone(&doc));
            }
            doc
        }
    };
    respond(
        &doc,
        "application/atom+xml; charset=utf-8",
        &request_headers,
    )
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

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.revision().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => unavailable(&e),
    }
}
