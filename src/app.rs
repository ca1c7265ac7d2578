//! Start-up, reload and shutdown of the daemon: opens the store, syncs the
//! config's feeds into it, then runs the scheduler, the article worker,
//! housekeeping and the HTTP server under one cancellation token until it
//! fires. SIGHUP (via the CLI) re-reads the config and swaps the workers and
//! the server's settings in place.
//!
//! This is the only module that spawns long-lived tasks. Shutdown order:
//! stop accepting connections and dispatching polls, let in-flight polls
//! finish (bounded), then close the store so every accepted write is on
//! disk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hosts::{HostLimiter, HostLimits};
use crate::netguard::Guard;
use crate::pipeline::fetch::{FetchError, FetchSettings, Fetcher};
use crate::pipeline::{ArticleSettings, Pipeline};
use crate::policy::SchedulePolicy;
use crate::serve::{NamedOutput, ServeSettings};
use crate::store::{EntryQuery, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source} (is another process using it? see server.listen)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// Opens the database named by the config and makes its config-owned feeds
/// match the file. Every command that reads or changes feeds starts here.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let store = Store::connect(&config.database).await?;
    sync_feeds(config, &store).await?;
    Ok(store)
}

async fn sync_feeds(config: &Config, store: &Store) -> Result<(), StoreError> {
    let report = store
        .sync_config_feeds(config.feeds.clone(), Utc::now())
        .await?;
    if report != Default::default() {
        tracing::info!(
            added = report.added,
            updated = report.updated,
            removed = report.removed,
            "config feeds synced"
        );
    }
    Ok(())
}

pub fn fetch_settings(config: &Config) -> FetchSettings {
    FetchSettings {
        user_agent: config.poll.user_agent.clone(),
        timeout: config.poll.timeout,
        connect_timeout: config.poll.connect_timeout,
        max_body: config.poll.max_body,
    }
}

pub fn schedule_policy(config: &Config) -> SchedulePolicy {
    SchedulePolicy {
        interval: config.poll.interval,
        min_interval: config.poll.min_interval,
        max_interval: config.poll.max_interval,
        max_backoff: config.poll.max_backoff,
        adaptive: config.poll.adaptive,
    }
}

/// The dispatch loop's caps, for the daemon and `tributary poll` alike.
pub fn dispatch_limits(config: &Config) -> crate::dispatch::Limits {
    crate::dispatch::Limits {
        concurrency: config.poll.concurrency,
        article_concurrency: config.extract.concurrency,
        timeout: config.poll.timeout,
        lease_margin: config.poll.lease_margin,
        // In-flight polls get one fetch timeout plus a little to finish.
        grace: config.poll.timeout + Duration::from_secs(5),
    }
}

/// The poll pipeline for one-shot commands and the daemon alike. Host
/// blocks (429s) still in force are loaded, so a restart honours them.
pub async fn pipeline(config: &Config, store: Store) -> Result<Pipeline, AppError> {
    let hosts = HostLimiter::new(HostLimits {
        concurrency: config.poll.per_host_concurrency,
        spacing: config.poll.per_host_spacing,
    });
    let now = Utc::now();
    for (host, until) in store.host_blocks(now).await? {
        let wait = (until - now).to_std().unwrap_or_default();
        hosts.block_until(&host, tokio::time::Instant::now() + wait);
    }
    let guard = Guard::new(config.network.clone());
    // Subscribed hosts may be private (a feed on a NAS); their articles
    // may be fetched before the feed is polled again in this process.
    for feed in store.feeds().await? {
        for url in [feed.spec.url.as_str(), feed.effective_url()] {
            if let Some(host) = crate::hosts::host_of(url) {
                guard.trust_host(&host);
            }
        }
    }
    Ok(Pipeline::new(
        Fetcher::new(fetch_settings(config), hosts, guard)?,
        schedule_policy(config),
        ArticleSettings {
            extract: config.extract.clone(),
            sites: Arc::new(config.sites.clone()),
            max_content: config.retention.max_content_size,
        },
        store,
    ))
}

pub fn serve_settings(config: &Config) -> ServeSettings {
    ServeSettings {
        title: config.server.title.clone(),
        base_url: config
            .server
            .base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        page_size: config.server.page_size,
        max_page_size: config.server.max_page_size,
        outputs: config
            .outputs
            .iter()
            .map(|o| NamedOutput {
                name: o.name.clone(),
                title: config.server.output_title(o),
                filter: EntryQuery {
                    tags: o.tags.clone(),
                    feeds: o.feeds.clone(),
                    include: o.include.clone(),
                    exclude: o.exclude.clone(),
                    ..EntryQuery::default()
                },
                page_size: o.limit.unwrap_or(config.server.page_size),
            })
            .collect(),
        hub: config.server.websub_hub.as_ref().map(|u| u.to_string()),
        db_cap: config.retention.max_database_size,
        max_content: config.retention.max_content_size,
    }
}

/// Every output document a WebSub hub should hear about.
pub fn websub_topics(config: &Config) -> Vec<String> {
    let base = serve_settings(config).base_url;
    let mut topics: Vec<String> = ["atom", "rss", "json"]
        .iter()
        .map(|ext| format!("{base}/feed.{ext}"))
        .collect();
    for o in &config.outputs {
        for ext in ["atom", "rss", "json"] {
            topics.push(format!("{base}/o/{}.{ext}", o.name));
        }
    }
    topics
}

/// Runs the daemon until `shutdown` fires. `listener` lets tests pass a
/// socket bound to port 0; the daemon binds `server.listen` itself. Every
/// message on `reloads` (the CLI sends one per SIGHUP) re-reads the config
/// file and applies it without a restart; see [`reload`].
pub async fn run(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), AppError> {
    crate::serve::install_metrics();
    let store = Store::connect(&config.database).await?;
    // A damaged file stops the daemon here, with its path, before anything
    // is written to it, rather than failing polls one by one.
    store.check().await?;
    sync_feeds(&config, &store).await?;
    let released = store.release_leases(Utc::now()).await?;
    if released > 0 {
        tracing::info!(
            feeds = released,
            "polls the previous run left unfinished are due again"
        );
    }
    let policy = schedule_policy(&config);
    let spread = store
        .spread_overdue(Utc::now(), {
            let policy = policy.clone();
            move |f| policy.startup_spread(f)
        })
        .await?;
    if spread > 0 {
        tracing::info!(
            feeds = spread,
            "spreading feeds that fell due while stopped"
        );
    }
    let pipeline = Arc::new(pipeline(&config, store.clone()).await?);
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.server.listen,
                source,
            })?,
    };
    let local = listener.local_addr().map_err(AppError::Serve)?;
    tracing::info!(
        listen = %local,
        feed = %format!("{}/feed.atom", serve_settings(&config).base_url),
        feeds = config.feeds.len(),
        database = %config.database,
        backend = store.backend(),
        "tributary started"
    );

    // Read before polling starts, so the first poll's entries are news.
    let start_rev = store.revision().await?.rev;
    let mut workers = Workers::start(&config, &store, pipeline, start_rev, &shutdown);
    let (router, serve_handle) =
        crate::serve::router_with_handle(store.clone(), serve_settings(&config));
    let mut server = tokio::spawn(crate::serve::serve(listener, router, shutdown.clone()));
    // The database is migrated and the listener bound: connections queue
    // in its backlog until the server task accepts them.
    crate::systemd::ready(&format!(
        "serving on {local}, {} feeds in the config",
        config.feeds.len()
    ));
    // Started only after READY: its first ping is immediate, and on the
    // multi-threaded runtime it could otherwise reach systemd first.
    let watchdog = crate::systemd::watchdog_interval().map(|interval| {
        tracing::info!(?interval, "systemd watchdog enabled");
        tokio::spawn(crate::systemd::watchdog(
            store.clone(),
            interval,
            shutdown.clone(),
        ))
    });

    // A server that dies on its own takes the daemon down with it rather
    // than leaving a poller nobody can read from.
    let mut config = config;
    let mut reloadable = true;
    let early = loop {
        tokio::select! {
            r = &mut server => break Some(r),
            () = shutdown.cancelled() => break None,
            msg = reloads.recv(), if reloadable => match msg {
                Some(()) => {
                    crate::systemd::reloading();
                    let outcome = reload(&config, &store, &mut workers, &serve_handle, &shutdown).await;
                    if let Some(next) = outcome {
                        config = next;
                    }
                    crate::systemd::ready(&format!(
                        "serving on {local}, {} feeds in the config",
                        config.feeds.len()
                    ));
                }
                // Nobody can ask for a reload any more.
                None => reloadable = false,
            },
        }
    };
    crate::systemd::stopping();
    tracing::info!("shutting down");
    shutdown.cancel();
    let served = match early {
        Some(r) => r,
        None => server.await,
    };
    workers.stop().await;
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    store.close().await?;
    tracing::info!("stopped");
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Serve(e)),
        Err(e) => Err(AppError::Serve(std::io::Error::other(e))),
    }
}

/// The tasks that poll, fetch articles, index for search and ping the WebSub
/// hub: everything a
/// reload replaces. They run under their own child of the shutdown token,
/// so a reload can stop them alone and a shutdown stops them with the rest.
struct Workers {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// `None` without a hub; its result is the last revision announced.
    websub: Option<JoinHandle<i64>>,
    /// Where a reload's WebSub task starts when this set has none.
    start_rev: i64,
}

impl Workers {
    fn start(
        config: &Config,
        store: &Store,
        pipeline: Arc<Pipeline>,
        start_rev: i64,
        shutdown: &CancellationToken,
    ) -> Workers {
        let token = shutdown.child_token();
        let scheduler = tokio::spawn(crate::dispatch::run(
            store.clone(),
            Arc::clone(&pipeline),
            dispatch_limits(config),
            crate::dispatch::Work::Schedule,
            token.clone(),
        ));
        // Retention limits come from the config, so housekeeping restarts
        // with a reload like the other workers.
        let housekeeping = tokio::spawn(crate::housekeeping::run(
            store.clone(),
            config.retention.policy(),
            config.retention.housekeeping_interval,
            token.clone(),
        ));
        let indexer = tokio::spawn(crate::indexer::run(store.clone(), token.clone()));
        let reexamine = tokio::spawn(reexamine_stories(store.clone(), token.clone()));
        let mut tasks = vec![scheduler, housekeeping, indexer, reexamine];
        let push = crate::push::targets(config);
        if !push.is_empty() {
            tasks.push(tokio::spawn(crate::push::run(
                push,
                config.poll.user_agent.clone(),
                store.clone(),
                token.clone(),
            )));
        }
        let websub = config.server.websub_hub.clone().map(|hub| {
            tokio::spawn(crate::websub::run(
                hub,
                websub_topics(config),
                config.poll.user_agent.clone(),
                store.clone(),
                start_rev,
                token.clone(),
            ))
        });
        Workers {
            token,
            tasks,
            websub,
            start_rev,
        }
    }

    /// Stops the tasks and waits for in-flight polls to finish (each within
    /// its grace period). Returns the last revision the hub heard about.
    async fn stop(&mut self) -> i64 {
        self.token.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        match self.websub.take() {
            Some(w) => w.await.unwrap_or(self.start_rev),
            None => self.start_rev,
        }
    }
}

/// The one-time re-examination of stories stored by an older version, in
/// short steps while the daemon polls and serves (a no-op once it has
/// run; an interrupted pass goes on after the next start).
async fn reexamine_stories(store: Store, token: CancellationToken) {
    match store.dedup_pass(&token).await {
        Ok(0) => {}
        Ok(merged) => tracing::info!(merged, "stored stories re-examined: duplicates merged"),
        Err(e) => tracing::warn!(error = %e, "re-examining stored stories failed"),
    }
}

/// Re-reads the config file and applies it to the running daemon; returns
/// the config now in force, or `None` when the running one stays.
///
/// An unreadable or invalid file changes nothing: every problem is logged
/// at error and the daemon keeps polling and serving on its current config.
/// A valid one is applied in this order: the config's feeds are synced into
/// the store (one transaction), a new pipeline is built (fetch limits,
/// per-host limits, extraction, the SSRF guard's trusted hosts), the old
/// workers are stopped and drained, new ones start, the server's settings
/// are swapped (outputs, title, base URL, page sizes, hub) and the log level
/// changes. What is bound at start-up — the listen address, the database,
/// the log format — needs a restart; a change to it is logged as such.
async fn reload(
    current: &Config,
    store: &Store,
    workers: &mut Workers,
    serve: &crate::serve::ServeHandle,
    shutdown: &CancellationToken,
) -> Option<Config> {
    let Some(path) = current.path.as_deref() else {
        tracing::warn!("reload requested, but there is no config file (built-in defaults)");
        return None;
    };
    tracing::info!(config = %path.display(), "reloading the config");
    let next = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("{line}");
            }
            tracing::error!(
                config = %path.display(),
                "config not reloaded: fix the problems above and reload again; \
                 still running on the previous config"
            );
            return None;
        }
    };
    for (what, changed) in [
        ("server.listen", next.server.listen != current.server.listen),
        ("database", next.database != current.database),
        ("log.format", next.log.format != current.log.format),
    ] {
        if changed {
            tracing::warn!(key = what, "this change takes effect only after a restart");
        }
    }

    let applied = async {
        let report = store
            .sync_config_feeds(next.feeds.clone(), Utc::now())
            .await?;
        let pipeline = Arc::new(pipeline(&next, store.clone()).await?);
        Ok::<_, AppError>((report, pipeline))
    }
    .await;
    let (report, pipeline) = match applied {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "config not reloaded; still running on the previous config");
            return None;
        }
    };
    // Drained before the new set starts, so per-host limits and leases
    // never see two schedulers at once.
    let announced = workers.stop().await;
    *workers = Workers::start(&next, store, pipeline, announced, shutdown);
    serve.replace(serve_settings(&next));
    if next.log.level != current.log.level {
        match crate::logging::set_level(&next.log.level) {
            Ok(true) => tracing::info!(level = %next.log.level, "log level changed"),
            Ok(false) => tracing::info!("log level left alone: RUST_LOG overrides [log] level"),
            Err(e) => tracing::warn!(error = %e, "cannot change the log level"),
        }
    }
    tracing::info!(
        feeds = next.feeds.len(),
        added = report.added,
        updated = report.updated,
        removed = report.removed,
        outputs = next.outputs.len(),
        "config reloaded"
    );
    Some(next)
}
