//! WebSub publisher (W3C WebSub §7): tells the configured hub when the
//! outputs changed, so subscribers get new entries pushed instead of
//! polling.
//!
//! It watches the store's output revision rather than being called from the
//! pipeline: a burst of polls becomes one ping, and nothing on the hot path
//! waits for the hub. The hub is the operator's choice, so it is contacted
//! directly, not through the feed fetcher's rules.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use url::Url;

use crate::store::{LeadTask, Store};

/// How often the revision is checked; also the longest a ping is delayed,
/// which batches the new entries of a polling burst into one ping.
const CHECK_EVERY: Duration = Duration::from_secs(3);

/// `start_rev` is the revision before polling started: anything after it
/// is news (a restart alone is not). Returns the last revision the hub was
/// told about, so a reload's new task carries on from there.
pub async fn run(
    hub: Url,
    topics: Vec<String>,
    user_agent: String,
    store: Store,
    start_rev: i64,
    shutdown: CancellationToken,
) -> i64 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .user_agent(user_agent)
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "WebSub disabled: cannot build its HTTP client");
            return start_rev;
        }
    };
    let mut pinged = start_rev;
    let mut lead = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = shutdown.cancelled() => return pinged,
        }
        // Once per cluster: the hub hears from the node that leads.
        if !store.keep_lead(LeadTask::WebSub, &mut lead).await {
            continue;
        }
        let Ok(rev) = store.revision().await else {
            continue;
        };
        if rev.rev == pinged {
            continue;
        }
        match publish(&client, &hub, &topics).await {
            Ok(()) => {
                pinged = rev.rev;
                tracing::debug!(hub = %hub, topics = topics.len(), "WebSub hub notified");
            }
            // Retried at the next check: the revision still differs.
            Err(e) => tracing::warn!(hub = %hub, error = %e, "WebSub hub ping failed"),
        }
    }
}

/// One `hub.mode=publish` request naming every topic (hubs accept the
/// parameter repeated).
async fn publish(client: &reqwest::Client, hub: &Url, topics: &[String]) -> Result<(), String> {
    // Built before any await: the serializer is not Send.
    let body = {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        ser.append_pair("hub.mode", "publish");
        for t in topics {
            ser.append_pair("hub.url", t);
        }
        ser.finish()
    };
    let resp = client
        .post(hub.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("hub answered HTTP {}", resp.status().as_u16()))
    }
}
