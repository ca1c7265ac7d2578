//! Push: a named output's new entries delivered to its `webhook` URLs (as
//! JSON Feed documents, batched, HMAC-signed when the output has a
//! `webhook_secret`) and its `ntfy` topics (a short notice).
//!
//! Like the WebSub publisher it watches the store rather than being called
//! from the pipeline, so a slow or hanging receiver never holds up a poll:
//! each target has its own loop, its own timeouts and its own backoff.
//! Delivery state lives in the store (`push_target`): every entry of the
//! output up to an id has gone to the target, so each entry goes once per
//! target, in storage order, and a restart carries on where it stopped. A
//! new target starts at the newest entry: it gets what arrives from then
//! on, not the backlog. Receivers are the operator's choice, so they are
//! contacted directly, not through the feed fetcher's rules. Nodes sharing
//! a PostgreSQL database deliver from one node at a time (the one holding
//! the push lead, `LeadTask::Push`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::{OutputEntry, Secret};
use crate::serve::{FeedMeta, OutputSanitizer};
use crate::store::{EntryQuery, LeadTask, PushOutcome, Store};

/// How often a target with nothing to deliver looks for new entries; also
/// the longest a new entry waits, which batches a polling burst.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Entries per delivery at most.
const BATCH: usize = 50;
/// The first retry after a failure; each further failure doubles it, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// Time allowed for one delivery, body included.
const TIMEOUT: Duration = Duration::from_secs(30);
/// An ntfy notice names this many titles at most.
const NTFY_TITLES: usize = 3;

/// The header that carries a delivery's signature:
/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Tributary-Signature";
/// The header naming a delivery (`<output>:<first id>-<last id>`), so a
/// receiver can tell a repeat after a crash between its answer and our
/// record of it.
pub const DELIVERY_HEADER: &str = "X-Tributary-Delivery";

/// One place a named output's new entries go.
#[derive(Debug, Clone)]
pub struct Target {
    pub output: String,
    pub title: String,
    /// The output's JSON Feed URL, the delivered documents' `feed_url`.
    pub feed_url: String,
    pub home_url: String,
    pub url: String,
    pub kind: Kind,
    /// The output's filters.
    pub filter: EntryQuery,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Webhook { secret: Option<Secret> },
    Ntfy,
}

/// Every push target of the config's named outputs.
pub fn targets(config: &Config) -> Vec<Target> {
    let settings = crate::app::serve_settings(config);
    let mut targets = Vec::new();
    for (output, named) in config.outputs.iter().zip(&settings.outputs) {
        let base = Target {
            output: output.name.clone(),
            title: named.title.clone(),
            feed_url: format!("{}/o/{}.json", settings.base_url, output.name),
            home_url: format!("{}/", settings.base_url),
            url: String::new(),
            kind: Kind::Ntfy,
            filter: named.filter.clone(),
        };
        for url in &output.webhook {
            targets.push(Target {
                url: url.clone(),
                kind: Kind::Webhook {
                    secret: output.webhook_secret.clone(),
                },
                ..base.clone()
            });
        }
        for url in &output.ntfy {
            targets.push(Target {
                url: url.clone(),
                ..base.clone()
            });
        }
    }
    targets
}

/// Delivers to every target until `shutdown`.
pub async fn run(
    targets: Vec<Target>,
    user_agent: String,
    store: Store,
    shutdown: CancellationToken,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .user_agent(user_agent)
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        // A receiver that redirects has moved: fix the config.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "push disabled: cannot build its HTTP client");
            return;
        }
    };
    let sanitizer = Arc::new(OutputSanitizer::default());
    let mut lead = None;
    loop {
        // Once per cluster: nodes sharing a PostgreSQL database would
        // each deliver every batch. The node that leads delivers; when it
        // goes (or loses its connection), another takes over within
        // moments and carries on from the delivery state in the store (a
        // batch in flight at that moment goes again, under the same
        // delivery id). One node always leads on SQLite.
        if !store.keep_lead(LeadTask::Push, &mut lead).await {
            if !pause(CHECK_EVERY, &shutdown).await {
                return;
            }
            continue;
        }
        let loops = futures_util::future::join_all(targets.iter().cloned().map(|target| {
            deliver_loop(
                target,
                client.clone(),
                store.clone(),
                Arc::clone(&sanitizer),
                shutdown.clone(),
            )
        }));
        let lost = async {
            while lead.as_ref().is_some_and(|g| !g.lost()) {
                tokio::time::sleep(CHECK_EVERY).await;
            }
        };
        tokio::select! {
            _ = loops => return,
            () = lost => {
                tracing::warn!("lost the push lead (database connection); another node delivers");
            }
        }
    }
}

/// Sleeps for `d` unless shut down first; false when shut down.
async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown.cancelled() => false,
    }
}

/// The wait before retry number `attempts` (1 = the first retry).
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Where a target's URL is, for logs: a webhook's path or an ntfy topic
/// may be a secret, its host is not.
fn host(url: &str) -> String {
    crate::hosts::host_of(url).unwrap_or_default()
}

async fn deliver_loop(
    target: Target,
    client: reqwest::Client,
    store: Store,
    sanitizer: Arc<OutputSanitizer>,
    shutdown: CancellationToken,
) {
    let host = host(&target.url);
    while !shutdown.is_cancelled() {
        let state = match store.push_target(&target.output, &target.url).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(output = %target.output, host = %host, error = %e, "push state unavailable");
                if !pause(CHECK_EVERY, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        if let Some(wait) = state
            .retry_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            && !pause(wait, &shutdown).await
        {
            return;
        }
        let query = EntryQuery {
            since_id: Some(state.delivered_id),
            limit: BATCH,
            ..target.filter.clone()
        };
        let entries = match store.entries(query).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(output = %target.output, error = %e, "push: cannot read entries");
                Vec::new()
            }
        };
        let Some(up_to) = entries.iter().map(|e| e.cursor.id).max() else {
            if !pause(CHECK_EVERY, &shutdown).await {
                return;
            }
            continue;
        };
        let sent = tokio::select! {
            sent = deliver(&client, &target, entries, &sanitizer) => sent,
            () = shutdown.cancelled() => return,
        };
        let outcome = match sent {
            Ok(count) => {
                tracing::info!(output = %target.output, host = %host, entries = count, "pushed new entries");
                PushOutcome::Delivered { up_to }
            }
            Err(error) => {
                let wait = backoff(state.attempts + 1);
                tracing::warn!(
                    output = %target.output,
                    host = %host,
                    error = %error,
                    retry_in = %crate::config::format_duration(wait),
                    "push failed"
                );
                PushOutcome::Failed {
                    error,
                    retry_at: Utc::now()
                        + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                }
            }
        };
        if let Err(e) = store
            .record_push(&target.output, &target.url, outcome)
            .await
        {
            tracing::warn!(output = %target.output, error = %e, "push: cannot record the outcome");
            if !pause(CHECK_EVERY, &shutdown).await {
                return;
            }
        }
    }
}

/// Sends one batch; the number of entries, or why it failed.
async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    entries: Vec<OutputEntry>,
    sanitizer: &Arc<OutputSanitizer>,
) -> Result<usize, String> {
    let count = entries.len();
    let first = entries.first().map_or(0, |e| e.cursor.id);
    let last = entries.last().map_or(0, |e| e.cursor.id);
    let request = match &target.kind {
        Kind::Webhook { secret } => {
            // Sanitised like every output: the receiver may show it.
            let sanitizer = Arc::clone(sanitizer);
            let entries = tokio::task::spawn_blocking(move || {
                crate::serve::sanitize_entries(&sanitizer, entries)
            })
            .await
            .map_err(|e| format!("sanitising crashed: {e}"))?;
            let body = webhook_body(target, &entries);
            let mut request = client
                .post(&target.url)
                .header(reqwest::header::CONTENT_TYPE, "application/feed+json")
                .header(DELIVERY_HEADER, format!("{}:{first}-{last}", target.output));
            if let Some(secret) = secret {
                request = request.header(SIGNATURE_HEADER, signature(secret, body.as_bytes()));
            }
            request.body(body)
        }
        Kind::Ntfy => {
            let (title, message, click) = ntfy_notice(target, &entries);
            // ntfy reads its options from the query too, where any text
            // is safe (headers would need ASCII).
            let mut url = url::Url::parse(&target.url).map_err(|e| e.to_string())?;
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("title", &title)
                    .append_pair("tags", "newspaper");
                if let Some(click) = &click {
                    query.append_pair("click", click);
                }
            }
            client.post(url).body(message)
        }
    };
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "no answer within {}",
                crate::config::format_duration(TIMEOUT)
            )
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        }
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(count)
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// The JSON Feed document of a batch: the output's title and URLs, and
/// its new entries as items.
pub fn webhook_body(target: &Target, entries: &[OutputEntry]) -> String {
    let meta = FeedMeta {
        title: target.title.clone(),
        id: target.feed_url.clone(),
        self_url: target.feed_url.clone(),
        home_url: target.home_url.clone(),
        next_url: None,
        hub: None,
        updated: Utc::now(),
    };
    crate::serve::json::render(&meta, entries)
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.0.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// An ntfy notice: its title (the output's), a short message naming the
/// first titles, and the first entry's link to open.
fn ntfy_notice(target: &Target, entries: &[OutputEntry]) -> (String, String, Option<String>) {
    let titles: Vec<String> = entries
        .iter()
        .take(NTFY_TITLES)
        .map(|e| {
            let title = e.title.as_deref().unwrap_or("(untitled)");
            // One line of reasonable length.
            let title: String = title.split_whitespace().collect::<Vec<_>>().join(" ");
            title.chars().take(120).collect()
        })
        .collect();
    let more = entries.len().saturating_sub(titles.len());
    let mut message = titles.join("\n");
    if more > 0 {
        message.push_str(&format!("\n… and {more} more"));
    }
    let title = format!("{}: {} new", target.title, entries.len());
    let click = entries.first().and_then(|e| e.link.clone());
    (title, message, click)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_up_to_an_hour() {
        let secs: Vec<u64> = (1..=13).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(
            secs,
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let secret = Secret("Jefe".to_owned());
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
