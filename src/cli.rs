//! The command line: argument parsing and one handler per verb.
//!
//! Verbs and flags are a contract other tools rely on (`run`, `poll`,
//! `feeds add|list|remove|pause|resume`, `opml import|export`, `check`,
//! `status`, `purge`, `backup`, `extract`, `--config`, `TRIBUTARY_CONFIG`):
//! add around them, never rename. Handlers print for
//! humans on stdout, log on stderr, and return `anyhow` errors with context;
//! a failing feed is never an error exit.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::app;
use crate::config::Config;
use crate::model::{
    EntryRule, EntryRules, Feed, FeedOrigin, FeedSpec, FeedStatus, PageRule, RequestOptions,
    RuleField,
};
use crate::pipeline::PollStatus;
use crate::store::{AddOutcome, Store};

/// System-wide config location, used when it exists and no path is given.
pub const SYSTEM_CONFIG: &str = "/etc/tributary/tributary.toml";
/// Fallback for running from a checkout.
pub const LOCAL_CONFIG: &str = "config/tributary.toml";

#[derive(Debug, Parser)]
#[command(
    name = "tributary",
    version,
    about = "A feed aggregator daemon: many noisy feeds in, one clean feed out"
)]
pub struct Cli {
    /// Config file [default: /etc/tributary/tributary.toml if it exists, else config/tributary.toml]
    #[arg(
        long,
        short,
        global = true,
        env = "TRIBUTARY_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll feeds on schedule and serve the merged feed until SIGINT/SIGTERM
    Run,
    /// Poll every feed once now, store the results, print a summary and exit
    Poll {
        /// Poll only this feed (repeatable); paused and gone feeds too
        #[arg(long = "feed", value_name = "URL")]
        feeds: Vec<String>,
    },
    /// Add, list or remove subscriptions
    #[command(subcommand)]
    Feeds(FeedsCommand),
    /// Import or export subscriptions as OPML 2.0
    #[command(subcommand)]
    Opml(OpmlCommand),
    /// Validate the configuration and report every problem
    Check,
    /// One screen: feeds by state, last poll, entries, database size, outputs
    Status,
    /// Apply `[retention]` now: purge old entries (leaving tombstones so they
    /// do not come back), bound the tombstones, reclaim space
    Purge {
        /// Also rebuild the database file (VACUUM), which shrinks it and
        /// turns on incremental vacuum for older databases; stop the daemon
        /// first, and have free disk space the size of the database
        #[arg(long)]
        vacuum: bool,
    },
    /// Extract and clean the article of saved pages (HTML or .gz); no config or database needed
    Extract(ExtractArgs),
    /// Copy the database, even while the daemon runs, into a new file and check the copy
    Backup {
        /// The backup file to create
        file: PathBuf,
        /// Overwrite FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Copy the SQLite database (the config's, or --from) into an empty
    /// PostgreSQL database, checked; the SQLite file is only read
    MigrateDb {
        /// The PostgreSQL database to fill: `postgres://user:password@host:port/database`
        #[arg(long, value_name = "URL")]
        to: String,
        /// The SQLite file to copy, instead of the config's `database`
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeedsCommand {
    /// Subscribe to a feed
    Add(Box<AddArgs>),
    /// Show every subscription with its polling state
    List,
    /// Unsubscribe; entries only this feed carried are deleted
    Remove { url: String },
    /// Stop polling a feed but keep it and its entries
    Pause { url: String },
    /// Poll a paused (or gone) feed again
    Resume { url: String },
    /// Apply each feed's keep/block rules to its stored entries: entries
    /// they leave out are removed (unless another feed carries them too)
    Refilter,
    /// Show what a feed, or a web page read with CSS selectors, gives:
    /// its entries' titles, links, dates and ids. Subscribes to nothing
    Test(Box<TestArgs>),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    pub url: String,
    /// Read URL as a page without a feed: the CSS selector of each item
    #[arg(long, value_name = "SELECTOR")]
    pub item: Option<String>,
    /// The selector of an item's title (default: its link's text)
    #[arg(
        long,
        visible_alias = "item-title",
        value_name = "SELECTOR",
        requires = "item"
    )]
    pub title: Option<String>,
    /// The selector of an item's link (default: its first `a[href]`)
    #[arg(
        long,
        visible_alias = "item-link",
        value_name = "SELECTOR",
        requires = "item"
    )]
    pub link: Option<String>,
    /// The selector of an item's date (default: its first `<time>`)
    #[arg(
        long,
        visible_alias = "item-date",
        value_name = "SELECTOR",
        requires = "item"
    )]
    pub date: Option<String>,
    /// The selector of an item's summary (default: its first paragraph)
    #[arg(
        long,
        visible_alias = "item-summary",
        value_name = "SELECTOR",
        requires = "item"
    )]
    pub summary: Option<String>,
    /// The selector of an item's full text, when the page has it
    #[arg(
        long,
        visible_alias = "item-content",
        value_name = "SELECTOR",
        requires = "item"
    )]
    pub content: Option<String>,
    /// The selector of an item's author (default: its `rel="author"`)
    #[arg(
        long,
        visible_alias = "item-author",
        value_name = "SELECTOR",
        requires = "item"
    )]
    pub author: Option<String>,
    /// The selector of an item's picture
    #[arg(
        long,
        visible_alias = "item-image",
        value_name = "SELECTOR",
        requires = "item"
    )]
    pub image: Option<String>,
    /// How many entries to show
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub show: usize,
    #[command(flatten)]
    pub request: RequestArgs,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub url: String,
    /// Title shown instead of the feed's own
    #[arg(long)]
    pub title: Option<String>,
    /// A tag for filtering; repeat for several
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Keep the feed's own content instead of fetching each article's full
    /// text (overrides `[extract] full_text` for this feed)
    #[arg(long)]
    pub no_full_text: bool,
    #[command(flatten)]
    pub request: RequestArgs,
    /// When URL is a web page offering several feeds, subscribe to the
    /// Nth one listed instead of the best
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub pick: Option<usize>,
    /// When URL is a web page offering several feeds, subscribe to all
    #[arg(long)]
    pub all: bool,
    /// Read URL as a web page without a feed, with CSS selectors: --item
    /// and the --item-* flags (`feeds test` shows what they find)
    #[arg(long, requires = "item", conflicts_with_all = ["pick", "all"])]
    pub page: bool,
    /// With --page: the CSS selector of each item on the page
    #[arg(long, value_name = "SELECTOR", requires = "page")]
    pub item: Option<String>,
    /// With --page: the selector of an item's title (default: its link's text)
    #[arg(long, value_name = "SELECTOR", requires = "item")]
    pub item_title: Option<String>,
    /// With --page: the selector of an item's link (default: its first `a[href]`)
    #[arg(long, value_name = "SELECTOR", requires = "item")]
    pub item_link: Option<String>,
    /// With --page: the selector of an item's date (default: its first `<time>`)
    #[arg(long, value_name = "SELECTOR", requires = "item")]
    pub item_date: Option<String>,
    /// With --page: the selector of an item's summary (default: its first paragraph)
    #[arg(long, value_name = "SELECTOR", requires = "item")]
    pub item_summary: Option<String>,
    /// With --page: the selector of an item's full text
    #[arg(long, value_name = "SELECTOR", requires = "item")]
    pub item_content: Option<String>,
    /// With --page: the selector of an item's author (default: its `rel="author"`)
    #[arg(long, value_name = "SELECTOR", requires = "item")]
    pub item_author: Option<String>,
    /// With --page: the selector of an item's picture
    #[arg(long, value_name = "SELECTOR", requires = "item")]
    pub item_image: Option<String>,
    /// Store only entries a keep rule matches: "PART=REGEX" with PART
    /// title, content, author or categories, or a bare REGEX for the title
    /// or the content; repeat for several (one matching is enough)
    #[arg(long = "keep", value_name = "[PART=]REGEX")]
    pub keep: Vec<String>,
    /// Never store entries a block rule matches (same form as --keep);
    /// block wins over keep
    #[arg(long = "block", value_name = "[PART=]REGEX")]
    pub block: Vec<String>,
}

/// A feed's own request options, for `feeds add` and `feeds test`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The User-Agent sent for this feed instead of `[poll] user_agent`
    #[arg(long, value_name = "UA")]
    pub user_agent: Option<String>,
    /// An extra request header, "Name: value" (a Cookie, an API key); repeat
    /// for several. Sent only to the feed's own origin
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// HTTP Basic user name, sent only to the feed's own origin
    #[arg(long)]
    pub username: Option<String>,
    /// HTTP Basic password; prefer the environment variable, which other
    /// users cannot read from the process list
    #[arg(long, env = "TRIBUTARY_FEED_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// An http(s) proxy for this feed's requests
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum OpmlCommand {
    /// Add every feed in an OPML file; nested outlines become tags
    Import { file: PathBuf },
    /// Write all subscriptions as OPML 2.0 to stdout
    Export,
}

impl Cli {
    /// The config path: `--config`/`TRIBUTARY_CONFIG`, else the system file
    /// when present, else the checkout's example.
    pub fn config_path(&self) -> PathBuf {
        if let Some(p) = &self.config {
            return p.clone();
        }
        if Path::new(SYSTEM_CONFIG).exists() {
            PathBuf::from(SYSTEM_CONFIG)
        } else {
            PathBuf::from(LOCAL_CONFIG)
        }
    }

    /// Whether the verb is the long-running daemon (it logs at info; the
    /// one-shot verbs keep stderr quiet unless asked).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run)
    }
}

/// Runs a verb with a loaded config.
pub async fn execute(cli: &Cli, config: Config) -> anyhow::Result<()> {
    match &cli.command {
        Command::Check => check(&config),
        Command::Status => status(&config).await,
        Command::Purge { vacuum } => purge(&config, *vacuum).await,
        Command::Run => run(config).await,
        Command::Poll { feeds } => poll(&config, feeds).await,
        Command::Feeds(FeedsCommand::Add(args)) => feeds_add(&config, args).await,
        Command::Feeds(FeedsCommand::List) => feeds_list(&config).await,
        Command::Feeds(FeedsCommand::Remove { url }) => feeds_remove(&config, url).await,
        Command::Feeds(FeedsCommand::Pause { url }) => {
            feeds_set_status(&config, url, FeedStatus::Paused).await
        }
        Command::Feeds(FeedsCommand::Refilter) => feeds_refilter(&config).await,
        Command::Feeds(FeedsCommand::Test(args)) => feeds_test(&config, args).await,
        Command::Feeds(FeedsCommand::Resume { url }) => {
            feeds_set_status(&config, url, FeedStatus::Active).await
        }
        Command::Opml(OpmlCommand::Import { file }) => opml_import(&config, file).await,
        Command::Opml(OpmlCommand::Export) => opml_export(&config).await,
        Command::Extract(args) => extract_files(args, &config),
        Command::Backup { file, force } => backup(&config, file, *force).await,
        Command::MigrateDb { to, from } => migrate_db(&config, to, from.as_deref()).await,
    }
}

fn check(config: &Config) -> anyhow::Result<()> {
    let path = config.path.as_deref().map_or_else(
        || "(built-in defaults)".to_owned(),
        |p| p.display().to_string(),
    );
    println!("{path}: ok");
    println!(
        "  database: {} ({})",
        config.database,
        config.database.backend()
    );
    println!("  listen:   {}", config.server.listen);
    println!(
        "  output:   {}/feed.atom",
        app::serve_settings(config).base_url
    );
    println!("  feeds:    {}", config.feeds.len());
    if let Some(warning) = config
        .path
        .as_deref()
        .and_then(|p| secrets_warning(config, p))
    {
        println!("warning: {warning}");
    }
    Ok(())
}

/// A warning when the config file holds feed credentials or headers but
/// every user of the machine may read it.
fn secrets_warning(config: &Config, path: &Path) -> Option<String> {
    let feeds = config.feeds.iter().map(|f| &f.request);
    let sites = config.sites.iter().map(|s| &s.request);
    let holders: Vec<String> = feeds
        .enumerate()
        .filter(|(_, r)| r.has_secrets())
        .map(|(i, _)| format!("feed[{i}]"))
        .chain(
            sites
                .enumerate()
                .filter(|(_, r)| r.has_secrets())
                .map(|(i, _)| format!("site[{i}]")),
        )
        .collect();
    if holders.is_empty() {
        return None;
    }
    world_readable(path).then(|| {
        format!(
            "{} is readable by every user and holds credentials or headers ({}): chmod o-r {}",
            path.display(),
            holders.join(", "),
            path.display()
        )
    })
}

#[cfg(unix)]
fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(not(unix))]
fn world_readable(_path: &Path) -> bool {
    false
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    // One pending reload is enough: SIGHUPs that arrive while one waits
    // are covered by it.
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(watch_signals(shutdown.clone(), reload_tx));
    app::run(config, None, shutdown, reloads).await?;
    Ok(())
}

/// SIGINT or SIGTERM → graceful stop; SIGHUP → reload the config.
async fn watch_signals(
    shutdown: tokio_util::sync::CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received");
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received");
                let _ = reload.try_send(());
            }
        }
    }
    shutdown.cancel();
}

/// `tributary backup FILE`: an online copy of the database, safe while the
/// daemon runs. It opens the database read-only and never syncs the
/// config's feeds, so a backup writes nothing to the live file.
async fn backup(config: &Config, file: &Path, force: bool) -> anyhow::Result<()> {
    use crate::progress::Progress;
    let Some(source) = config.database.sqlite_path().map(Path::to_path_buf) else {
        anyhow::bail!(
            "`tributary backup` copies a SQLite file; back a PostgreSQL database up with pg_dump"
        );
    };
    let dest = file.to_owned();
    let started = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        let mut progress = Progress::stderr("backup", "pages", None);
        crate::store::backup(&source, &dest, force, &mut |p| {
            progress.set_total(p.total);
            progress.set(p.done);
        })
    })
    .await
    .context("the backup task failed")??;
    println!(
        "backed up {} to {}: {} in {:.2} s, integrity ok",
        config.database,
        file.display(),
        human_size(report.bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `tributary migrate-db --to URL`: copies the SQLite database into an
/// empty PostgreSQL database and prints what each table holds on both
/// sides. The URL's password is never shown.
async fn migrate_db(config: &Config, to: &str, from: Option<&Path>) -> anyhow::Result<()> {
    use crate::progress::Progress;
    let to = crate::database::PostgresUrl::parse(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let source = match (from, &config.database) {
        (Some(p), _) => p.to_path_buf(),
        (None, crate::database::Database::Sqlite(p)) => p.clone(),
        (None, crate::database::Database::Postgres(_)) => anyhow::bail!(
            "the config's database is PostgreSQL already; name the SQLite file to copy with --from PATH"
        ),
    };
    eprintln!("copying {} to {to}", source.display());
    let started = std::time::Instant::now();
    let mut bar = Progress::stderr("migrate-db", "rows", None);
    let report = crate::store::migrate_db(&source, &to, &mut |p| {
        bar.set_total(p.total);
        bar.set(p.done);
    })
    .await;
    bar.finish();
    let report = report?;
    println!(
        "{:<14} {:>10}  checksum (SQLite = PostgreSQL)",
        "table", "rows"
    );
    for t in &report.tables {
        println!("{:<14} {:>10}  {:032x}", t.table, t.rows, t.checksum);
    }
    println!(
        "migrated {} to {to} in {:.2} s, checked: every table matches",
        source.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{} entries queued for PostgreSQL's search index; {} feed leases released",
        report.search_queued, report.leases_released
    );
    if report.nul_stripped > 0 {
        println!(
            "{} text values held NUL characters, which PostgreSQL cannot store: copied without them",
            report.nul_stripped
        );
    }
    println!("{} was only read; it is unchanged", source.display());
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

async fn open(config: &Config) -> anyhow::Result<Store> {
    // The store's errors name the database file already.
    Ok(app::open_store(config).await?)
}

/// One pass of the daemon's dispatch loop over the active feeds (or the
/// named ones), then the articles they queued, then the search index; a
/// table of what each poll did, and a summary.
async fn poll(config: &Config, only: &[String]) -> anyhow::Result<()> {
    let store = open(config).await?;
    // A one-shot pass leaves the search index complete: the entries it adds
    // are indexed as they are stored rather than all after the last poll.
    let pipeline = std::sync::Arc::new(
        app::pipeline(config, store.clone())
            .await?
            .index_on_store(true),
    );
    let mut feeds = store.feeds().await?;
    if only.is_empty() {
        // Paused and gone feeds are polled only when named.
        feeds.retain(|f| f.status == FeedStatus::Active);
    } else {
        let wanted: Vec<String> = only
            .iter()
            .map(|u| validate_feed_url(u).unwrap_or_else(|_| u.clone()))
            .collect();
        if let Some(missing) = wanted
            .iter()
            .find(|u| !feeds.iter().any(|f| &f.spec.url == *u))
        {
            store.close().await?;
            bail!("{missing} is not subscribed (see `tributary feeds list`)");
        }
        feeds.retain(|f| wanted.contains(&f.spec.url));
    }
    if feeds.is_empty() {
        println!(
            "no feeds configured: add [[feed]] tables to the config or run `tributary feeds add URL`"
        );
        return Ok(());
    }
    let order: std::collections::HashMap<i64, usize> =
        feeds.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
    let urls: Vec<String> = feeds.iter().map(|f| f.spec.url.clone()).collect();
    let mut progress =
        crate::progress::Progress::stderr("polling", "feeds", Some(feeds.len() as u64));
    let (done, mut polled) = tokio::sync::mpsc::unbounded_channel();
    let pass = crate::dispatch::run(
        store.clone(),
        std::sync::Arc::clone(&pipeline),
        app::dispatch_limits(config),
        crate::dispatch::Work::Once { feeds, done },
        tokio_util::sync::CancellationToken::new(),
    );
    let collect = async {
        let mut results = Vec::with_capacity(urls.len());
        let mut articles = ArticleTally::default();
        while let Some(done) = polled.recv().await {
            match done {
                crate::dispatch::Polled::Feed(id, result) => {
                    progress.inc(1);
                    results.push((order.get(&id).copied().unwrap_or(usize::MAX), result));
                }
                crate::dispatch::Polled::Article(result) => articles.add(result),
            }
        }
        (results, articles)
    };
    let ((), (mut results, articles)) = tokio::join!(pass, collect);
    progress.finish();
    results.sort_by_key(|(i, _)| *i);

    let mut out = std::io::stdout().lock();
    let (mut new, mut updated, mut failed, mut merged) = (0, 0, 0, 0);
    writeln!(out, "{:<8} {:>5} {:>7}  FEED", "STATUS", "NEW", "UPDATED")?;
    for (i, result) in results {
        let url = urls.get(i).map_or("a feed", String::as_str);
        let s = result.with_context(|| format!("cannot record poll of {url}"))?;
        new += s.new;
        updated += s.updated;
        merged += s.merged;
        let status = match &s.status {
            PollStatus::NotModified => "304".to_owned(),
            PollStatus::Fetched { status } => status.to_string(),
            PollStatus::Failed { status, .. } => {
                failed += 1;
                status.map_or_else(|| "error".to_owned(), |s| s.to_string())
            }
            PollStatus::Gone => "410".to_owned(),
            PollStatus::Deferred => "deferred".to_owned(),
        };
        writeln!(
            out,
            "{status:<8} {:>5} {:>7}  {}",
            s.new, s.updated, s.feed_url
        )?;
        match &s.status {
            PollStatus::Failed { error, .. } => {
                writeln!(out, "{:<8} {:>5} {:>7}    error: {error}", "", "", "")?;
            }
            PollStatus::Gone | PollStatus::Deferred => {
                writeln!(out, "{:<8} {:>5} {:>7}    {}", "", "", "", s.status)?;
            }
            _ => {}
        }
    }
    writeln!(
        out,
        "{} feeds polled: {new} new, {updated} updated, {failed} failed",
        urls.len()
    )?;
    if merged > 0 {
        writeln!(
            out,
            "{merged} entries were stories another feed had already brought"
        )?;
    }
    drop(out);
    articles.print()?;
    // The daemon's indexer would catch up later; a one-shot command leaves
    // the search index complete.
    crate::indexer::index_all(&store, crate::indexer::BATCH)
        .await
        .context("cannot update the search index")?;
    store.close().await?;
    Ok(())
}

/// What `poll` did with the article pages due during its pass: each got
/// one attempt, so `poll` leaves full text in place like the daemon does;
/// failures keep their retry time for later.
#[derive(Default)]
struct ArticleTally {
    extracted: usize,
    failed: usize,
    deferred: usize,
    merged: usize,
    error: Option<crate::store::StoreError>,
}

impl ArticleTally {
    fn add(&mut self, result: Result<(&'static str, bool), crate::store::StoreError>) {
        match result {
            Ok((outcome, merged)) => {
                match outcome {
                    "extracted" => self.extracted += 1,
                    "failed" => self.failed += 1,
                    _ => self.deferred += 1,
                }
                self.merged += usize::from(merged);
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn print(self) -> anyhow::Result<()> {
        if let Some(e) = self.error {
            return Err(e).context("cannot record an article");
        }
        if self.extracted + self.failed + self.deferred > 0 {
            println!(
                "full text: {} extracted, {} failed, {} deferred",
                self.extracted, self.failed, self.deferred
            );
            if self.merged > 0 {
                println!(
                    "{} articles were stories another feed had already brought: merged",
                    self.merged
                );
            }
        }
        Ok(())
    }
}

fn validate_feed_url(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a valid URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("{url:?}: only http and https feeds are supported");
    }
    Ok(parsed.to_string())
}

/// The request options of `feeds add`, checked by the same rules as the
/// config's `[[feed]]` keys.
fn request_options(args: &RequestArgs) -> anyhow::Result<RequestOptions> {
    let mut headers = Vec::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--header {header:?}: write it as \"Name: value\", e.g. \"Cookie: session=abc\"");
        };
        let header = crate::config::parse_header(name.trim(), value.trim())
            .map_err(|message| anyhow::anyhow!("--header: {message}"))?;
        headers.push(header);
    }
    let non_empty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let proxy = match &args.proxy {
        Some(proxy) => Some(
            crate::config::parse_proxy(proxy)
                .map_err(|message| anyhow::anyhow!("--proxy: {message}"))?,
        ),
        None => None,
    };
    let username = non_empty(&args.username);
    if args.password.is_some() && username.is_none() {
        bail!("--password needs --username");
    }
    Ok(RequestOptions {
        user_agent: non_empty(&args.user_agent),
        headers,
        username,
        password: args.password.clone().filter(|p| !p.is_empty()),
        proxy,
    })
}

/// The keep/block rules of `feeds add`: each flag `PART=REGEX` is one
/// rule, as `keep = { PART = "REGEX" }` in the config; a bare `REGEX` is
/// two, on the title and on the content (as an output's `include` reads
/// them). Regexes are checked as the config's are.
fn entry_rules(args: &AddArgs) -> anyhow::Result<EntryRules> {
    fn parse(flag: &str, values: &[String]) -> anyhow::Result<Vec<EntryRule>> {
        let mut rules = Vec::new();
        for value in values {
            let part = value.split_once('=').and_then(|(part, pattern)| {
                RuleField::ALL
                    .iter()
                    .find(|(name, _)| *name == part.trim())
                    .map(|&(_, field)| (field, pattern))
            });
            let (fields, pattern) = match part {
                Some((field, pattern)) => (vec![field], pattern),
                None => (vec![RuleField::Title, RuleField::Content], value.as_str()),
            };
            let pattern = crate::config::parse_regex(pattern)
                .map_err(|message| anyhow::anyhow!("--{flag} {value:?}: {message}"))?;
            for field in fields {
                let rule = EntryRule {
                    field,
                    pattern: pattern.clone(),
                };
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        Ok(rules)
    }
    Ok(EntryRules {
        keep: parse("keep", &args.keep)?,
        block: parse("block", &args.block)?,
    })
}

/// A page rule from selector flags, `(part, flag, value)`, each checked
/// as the config's are; None without an item selector.
fn page_rule(parts: &[(&str, &str, &Option<String>)]) -> anyhow::Result<Option<PageRule>> {
    let mut rule = PageRule::default();
    for (part, flag, value) in parts {
        if let Some(value) = value {
            let selector = crate::config::parse_selector(value)
                .map_err(|message| anyhow::anyhow!("--{flag}: {message}"))?;
            rule.set(part, selector);
        }
    }
    Ok((!rule.item.is_empty()).then_some(rule))
}

async fn feeds_add(config: &Config, args: &AddArgs) -> anyhow::Result<()> {
    let url = validate_feed_url(&args.url)?;
    let rules = entry_rules(args)?;
    let page = page_rule(&[
        ("item", "item", &args.item),
        ("title", "item-title", &args.item_title),
        ("link", "item-link", &args.item_link),
        ("date", "item-date", &args.item_date),
        ("summary", "item-summary", &args.item_summary),
        ("content", "item-content", &args.item_content),
        ("author", "item-author", &args.item_author),
        ("image", "item-image", &args.item_image),
    ])?;
    let mut tags: Vec<String> = args
        .tags
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    let request = request_options(&args.request)?;
    let store = open(config).await?;
    let chosen = match &page {
        Some(rule) => check_page(config, &store, &url, rule, &request).await,
        None => choose_feeds(config, &store, &url, &request, args).await,
    };
    let feeds = match chosen {
        Ok(feeds) => feeds,
        Err(e) => {
            store.close().await?;
            return Err(e);
        }
    };
    let specs: Vec<FeedSpec> = feeds
        .iter()
        .map(|feed| FeedSpec {
            url: feed.clone(),
            title: args.title.clone().filter(|t| !t.trim().is_empty()),
            tags: tags.clone(),
            interval: None,
            // Without the flag the feed follows `[extract] full_text`.
            full_text: args.no_full_text.then_some(false),
            request: request.clone(),
            rules: rules.clone(),
            page: page.clone(),
        })
        .collect();
    let outcome = store.add_feeds(specs, FeedOrigin::Cli, Utc::now()).await?;
    store.close().await?;
    let mut added = 0;
    for (feed, outcome) in feeds.iter().zip(&outcome) {
        match outcome {
            AddOutcome::Added => {
                added += 1;
                println!(
                    "added {feed}; it will be polled at the next scheduler tick (or run `tributary poll`)"
                );
            }
            _ => eprintln!("{feed} is already subscribed"),
        }
    }
    if added == 0 {
        bail!("{} is already subscribed", feeds.join(", "));
    }
    Ok(())
}

/// `feeds add --page`: the page is read with the rule first, so a rule
/// that finds nothing is not subscribed; a page that cannot be fetched
/// now is subscribed as given, with a warning (polls say what is wrong).
async fn check_page(
    config: &Config,
    store: &Store,
    url: &str,
    rule: &PageRule,
    request: &RequestOptions,
) -> anyhow::Result<Vec<String>> {
    use crate::pipeline::{Preview, PreviewError};
    let pipeline = app::pipeline(config, store.clone()).await?;
    if let Some(host) = crate::hosts::host_of(url) {
        pipeline.trust_host(&host);
    }
    match pipeline.preview(url, Some(rule), request).await {
        Ok(Preview::Page(parsed)) => {
            println!(
                "{url}: the selectors find {} entr{}",
                parsed.entries.len(),
                if parsed.entries.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            );
        }
        Ok(_) => {}
        // The page answered, and the rule finds nothing on it.
        Err(PreviewError::Read(e)) => bail!(
            "{url}: {e}\nnothing was subscribed; `tributary feeds test {url} --item …` shows what selectors find"
        ),
        Err(PreviewError::Fetch(e)) => {
            eprintln!("warning: cannot fetch {url} now ({e}); subscribing to it as given")
        }
    }
    Ok(vec![url.to_owned()])
}

/// How to read `url` as a page without a feed with `rule`: the
/// `feeds test` line, the `feeds add` line and the `[[feed]]` table.
struct PageRuleExample {
    test: String,
    add: String,
    table: String,
}

impl PageRuleExample {
    fn new(url: &str, rule: &PageRule) -> PageRuleExample {
        let mut flags = String::new();
        let mut select = Vec::new();
        for (part, selector) in rule.selectors() {
            let flag = if part == "item" {
                "--item".to_owned()
            } else {
                format!("--item-{part}")
            };
            flags.push_str(&format!(" {flag} {}", shell_quote(selector)));
            select.push(format!("{part} = {}", toml_string(selector)));
        }
        let url_word = shell_quote(url);
        PageRuleExample {
            test: format!("tributary feeds test {url_word}{flags}"),
            add: format!("tributary feeds add {url_word} --page{flags}"),
            table: format!(
                "[[feed]]\nurl = {}\npage = true\nselect = {{ {} }}",
                toml_string(url),
                select.join(", ")
            ),
        }
    }

    /// The `feeds add` line and the table, indented.
    fn subscribe(&self) -> String {
        format!(
            "  {}\nor in the config:\n{}",
            self.add,
            indent(&self.table, "  ")
        )
    }

    /// All three, indented.
    fn all(&self) -> String {
        format!("  {}\nthen subscribe with\n{}", self.test, self.subscribe())
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as a TOML basic string (JSON's escapes are TOML's).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `tributary feeds test URL`: what a poll would read, without
/// subscribing.
async fn feeds_test(config: &Config, args: &TestArgs) -> anyhow::Result<()> {
    use crate::pipeline::Preview;
    let url = validate_feed_url(&args.url)?;
    let rule = page_rule(&[
        ("item", "item", &args.item),
        ("title", "title", &args.title),
        ("link", "link", &args.link),
        ("date", "date", &args.date),
        ("summary", "summary", &args.summary),
        ("content", "content", &args.content),
        ("author", "author", &args.author),
        ("image", "image", &args.image),
    ])?;
    let request = request_options(&args.request)?;
    let store = open(config).await?;
    let pipeline = app::pipeline(config, store.clone()).await?;
    if let Some(host) = crate::hosts::host_of(&url) {
        pipeline.trust_host(&host);
    }
    let preview = pipeline.preview(&url, rule.as_ref(), &request).await;
    store.close().await?;
    let preview = preview.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let mut out = std::io::stdout().lock();
    match preview {
        Preview::Feed(parsed) => {
            writeln!(
                out,
                "{url} is a feed{}: {} entries",
                parsed
                    .title
                    .as_deref()
                    .map(|t| format!(" (\"{t}\")"))
                    .unwrap_or_default(),
                parsed.entries.len()
            )?;
            print_entries(&mut out, &parsed, args.show)?;
        }
        Preview::Page(parsed) => {
            let Some(rule) = &rule else {
                return Ok(());
            };
            writeln!(
                out,
                "{url} read with the item selector `{}`: {} entries",
                rule.item,
                parsed.entries.len()
            )?;
            print_entries(&mut out, &parsed, args.show)?;
            writeln!(out, "\nsubscribe with")?;
            writeln!(out, "{}", PageRuleExample::new(&url, rule).subscribe())?;
        }
        Preview::PageWithoutRule { feeds, suggestion } => {
            if !feeds.is_empty() {
                writeln!(
                    out,
                    "{url} is a web page; it links {} feed{}:",
                    feeds.len(),
                    if feeds.len() == 1 { "" } else { "s" }
                )?;
                for (i, feed) in feeds.iter().enumerate() {
                    writeln!(out, "  {}. {} ({})", i + 1, feed.url, feed.kind.as_str())?;
                }
                writeln!(
                    out,
                    "`tributary feeds test {}` shows what the first one reads; `tributary feeds add {}` subscribes to it",
                    feeds[0].url,
                    shell_quote(&url)
                )?;
                return Ok(());
            }
            writeln!(
                out,
                "{url} is a web page without a feed (it links none; `tributary feeds add` also tries the usual paths)."
            )?;
            let item = match &suggestion {
                Some((selector, n)) => {
                    writeln!(
                        out,
                        "It can be read as one with CSS selectors for its items: `{selector}` finds {n} linked items here. Try"
                    )?;
                    selector.clone()
                }
                None => {
                    writeln!(
                        out,
                        "It can be read as one with CSS selectors for its items (each item's element, and optionally its title, link, date and summary within it), e.g."
                    )?;
                    "article".to_owned()
                }
            };
            let example = PageRule {
                item,
                title: suggestion.is_none().then(|| "h2".to_owned()),
                date: suggestion.is_none().then(|| "time".to_owned()),
                ..PageRule::default()
            };
            writeln!(out, "{}", PageRuleExample::new(&url, &example).all())?;
        }
    }
    Ok(())
}

/// The first `show` entries of a preview: title, link, date and id.
fn print_entries(
    out: &mut impl Write,
    parsed: &crate::model::ParsedFeed,
    show: usize,
) -> anyhow::Result<()> {
    for (i, entry) in parsed.entries.iter().take(show).enumerate() {
        writeln!(
            out,
            "  {}. {}",
            i + 1,
            entry.title.as_deref().unwrap_or("(no title)")
        )?;
        writeln!(out, "     link: {}", entry.link.as_deref().unwrap_or("-"))?;
        let date = entry.published.or(entry.updated).map_or_else(
            || "none (the time it is first seen)".to_owned(),
            |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        writeln!(out, "     date: {date}")?;
        writeln!(out, "     id:   {}", entry.key)?;
    }
    if parsed.entries.len() > show {
        writeln!(
            out,
            "  … and {} more (--show N for more)",
            parsed.entries.len() - show
        )?;
    }
    Ok(())
}

/// The feed URLs `feeds add URL` subscribes to: URL itself when it is a
/// feed (or cannot be checked now), else the feed(s) its page offers,
/// listed on stdout.
async fn choose_feeds(
    config: &Config,
    store: &Store,
    url: &str,
    request: &RequestOptions,
    args: &AddArgs,
) -> anyhow::Result<Vec<String>> {
    use crate::pipeline::discover::{DiscoverError, Discovery};
    let pipeline = app::pipeline(config, store.clone()).await?;
    // The operator names this address: its host may be private.
    if let Some(host) = crate::hosts::host_of(url) {
        pipeline.trust_host(&host);
    }
    let feeds = match pipeline.discover(url, request).await {
        Ok(Discovery::Feed) => return Ok(vec![url.to_owned()]),
        Ok(Discovery::Page { feeds }) => feeds,
        Err(DiscoverError::NoFeed { url }) => {
            let example = PageRule {
                item: "article".to_owned(),
                title: Some("h2".to_owned()),
                date: Some("time".to_owned()),
                ..PageRule::default()
            };
            bail!(
                "no feed found on {url}: the page links none (<link rel=\"alternate\">), and none of {} answers with a feed. If the site has a feed elsewhere, add its URL.\nTo read the page itself as a feed, give CSS selectors for its items; see what they find with\n{}",
                crate::pipeline::discover::COMMON_PATHS.join(", "),
                PageRuleExample::new(&url, &example).all()
            )
        }
        Err(e) => {
            // Offline, or the feed is broken right now: subscribe as asked;
            // polls will report what is wrong.
            eprintln!("warning: cannot check {url} now ({e}); subscribing to it as given");
            return Ok(vec![url.to_owned()]);
        }
    };
    println!(
        "{url} is a web page; it offers {} feed{}:",
        feeds.len(),
        if feeds.len() == 1 { "" } else { "s" }
    );
    for (i, feed) in feeds.iter().enumerate() {
        let title = feed
            .title
            .as_deref()
            .map(|t| format!(" \"{t}\""))
            .unwrap_or_default();
        println!("  {}. {} ({}{title})", i + 1, feed.url, feed.kind.as_str());
    }
    let chosen: Vec<&crate::pipeline::discover::Candidate> = if args.all {
        feeds.iter().collect()
    } else {
        let n = args.pick.unwrap_or(1);
        match n.checked_sub(1).and_then(|i| feeds.get(i)) {
            Some(feed) => vec![feed],
            None => bail!("--pick {n}: choose a number from 1 to {}", feeds.len()),
        }
    };
    if !args.all && args.pick.is_none() && feeds.len() > 1 {
        println!("subscribing to 1 (--pick N for another, --all for every one)");
    }
    // Secrets given for the page's site are not carried to another one.
    if request.has_secrets() {
        let page = url::Url::parse(url)?;
        let origin = crate::pipeline::fetch::Secrets::Origin(page);
        if let Some(elsewhere) = chosen
            .iter()
            .find(|f| url::Url::parse(&f.url).is_ok_and(|u| !origin.allow(&u)))
        {
            bail!(
                "{} is on another site than {url}: the headers and credentials given are not sent there; add that feed's URL directly if they are meant for it",
                elsewhere.url
            );
        }
    }
    Ok(chosen.into_iter().map(|f| f.url.clone()).collect())
}

async fn feeds_refilter(config: &Config) -> anyhow::Result<()> {
    let store = open(config).await?;
    let mut total = 0;
    for feed in store.feeds().await? {
        let rules = crate::pipeline::rules::Rules::new(&feed.spec.rules);
        let rejected: Vec<String> = store
            .feed_entries_for_rules(feed.id)
            .await?
            .into_iter()
            .filter(|e| {
                !rules.allows(crate::pipeline::rules::Subject {
                    title: e.title.as_deref(),
                    content: e.content.as_deref(),
                    authors: &e.authors,
                    categories: &e.categories,
                })
            })
            .map(|e| e.key)
            .collect();
        if rejected.is_empty() {
            continue;
        }
        let removed = store.release_entries(feed.id, rejected, Utc::now()).await?;
        total += removed;
        println!("{}: {removed} entries left out by its rules", feed.spec.url);
    }
    store.close().await?;
    println!("{total} entries removed");
    Ok(())
}

fn ago(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "never".to_owned(),
        Some(t) => human_delta(now - t, "ago"),
    }
}

fn human_delta(d: chrono::Duration, suffix: &str) -> String {
    let s = d.num_seconds();
    let (n, unit) = match s.abs() {
        x if x < 120 => (x, "s"),
        x if x < 7200 => (x / 60, "m"),
        x if x < 172_800 => (x / 3600, "h"),
        x => (x / 86400, "d"),
    };
    if s < 0 {
        format!("in {n}{unit}")
    } else {
        format!("{n}{unit} {suffix}")
    }
}

/// One word for a feed's state; see [`Feed::state`].
pub fn feed_state(f: &Feed) -> &'static str {
    f.state()
}

async fn feeds_list(config: &Config) -> anyhow::Result<()> {
    let store = open(config).await?;
    let feeds = store.feeds().await?;
    store.close().await?;
    if feeds.is_empty() {
        println!("no feeds: add [[feed]] tables to the config or run `tributary feeds add URL`");
        return Ok(());
    }
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    for f in &feeds {
        writeln!(out, "{:<8} {}", feed_state(f), f.spec.url)?;
        let next = match f.status {
            FeedStatus::Paused | FeedStatus::Gone => "never".to_owned(),
            _ if f.next_check_at <= now => "due".to_owned(),
            _ => human_delta(now - f.next_check_at, ""),
        };
        let interval = match (f.current_interval, f.schedule_reason.as_deref()) {
            (Some(i), Some(why)) => format!("{} ({why})", crate::config::format_duration(i)),
            (Some(i), None) => crate::config::format_duration(i),
            (None, _) => "-".to_owned(),
        };
        writeln!(
            out,
            "         title: {} · entries {} · from {}",
            f.display_title(),
            f.entry_count,
            f.origin.as_str()
        )?;
        writeln!(
            out,
            "         last success {} · HTTP {} · errors {} · next check {next} · interval {interval}",
            ago(f.last_success_at, now),
            f.last_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            f.error_count,
        )?;
        if !f.spec.tags.is_empty() {
            writeln!(out, "         tags: {}", f.spec.tags.join(", "))?;
        }
        if let Some(full_text) = f.spec.full_text {
            writeln!(
                out,
                "         full text: {}",
                if full_text { "on" } else { "off" }
            )?;
        }
        if !f.spec.request.is_empty() {
            // What is set, never a value: headers and credentials are
            // secrets, and a proxy URL may hold a password.
            let request = &f.spec.request;
            let mut parts = Vec::new();
            if request.user_agent.is_some() {
                parts.push("own User-Agent".to_owned());
            }
            if !request.headers.is_empty() {
                let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
                parts.push(format!("headers {}", names.join(", ")));
            }
            if request.username.is_some() {
                parts.push("Basic credentials".to_owned());
            }
            if request.proxy.is_some() {
                parts.push("proxy".to_owned());
            }
            writeln!(out, "         request: {}", parts.join(" · "))?;
        }
        if let Some(page) = &f.spec.page {
            let parts: Vec<String> = page
                .selectors()
                .iter()
                .map(|(part, selector)| format!("{part} `{selector}`"))
                .collect();
            writeln!(out, "         page: {}", parts.join(" · "))?;
        }
        // Rules are no secret: they say why entries are missing.
        for (word, rules) in [("keep", &f.spec.rules.keep), ("block", &f.spec.rules.block)] {
            if !rules.is_empty() {
                writeln!(out, "         {word}: {}", describe_rules(rules))?;
            }
        }
        if let Some(moved) = &f.fetch_url {
            writeln!(
                out,
                "         moved to: {moved} (permanent redirect, confirmed)"
            )?;
        }
        if let Some((target, n)) = &f.pending_redirect {
            writeln!(
                out,
                "         redirects to: {target} (seen {n}×, not yet adopted)"
            )?;
        }
        if let Some(err) = f
            .last_error
            .as_deref()
            .filter(|_| f.error_count > 0 || f.status == FeedStatus::Gone)
        {
            writeln!(out, "         last error: {err}")?;
        }
    }
    Ok(())
}

/// Rules as `feeds list` shows them: `title ~ (?i)rust · author ~ Bot`.
fn describe_rules(rules: &[EntryRule]) -> String {
    let parts: Vec<String> = rules
        .iter()
        .map(|rule| {
            let part = RuleField::ALL
                .iter()
                .find(|(_, field)| *field == rule.field)
                .map_or("?", |(name, _)| name);
            format!("{part} ~ {}", rule.pattern)
        })
        .collect();
    parts.join(" · ")
}

/// Pauses or resumes a subscription; resuming also revives a gone feed.
async fn feeds_set_status(config: &Config, url: &str, status: FeedStatus) -> anyhow::Result<()> {
    let key = validate_feed_url(url).unwrap_or_else(|_| url.to_owned());
    let store = open(config).await?;
    let Some(feed) = store.feed_by_url(&key).await? else {
        store.close().await?;
        bail!("{url} is not subscribed (see `tributary feeds list`)");
    };
    store.set_status(feed.id, status, Utc::now()).await?;
    store.close().await?;
    match status {
        FeedStatus::Paused => println!("paused {key}: it keeps its entries and is not polled"),
        _ => println!("resumed {key}: it is due now"),
    }
    Ok(())
}

async fn feeds_remove(config: &Config, url: &str) -> anyhow::Result<()> {
    let key = validate_feed_url(url).unwrap_or_else(|_| url.to_owned());
    let store = open(config).await?;
    let Some(feed) = store.feed_by_url(&key).await? else {
        store.close().await?;
        bail!("{url} is not subscribed (see `tributary feeds list`)");
    };
    if feed.origin == FeedOrigin::Config {
        store.close().await?;
        let path = config
            .path
            .as_deref()
            .map_or_else(|| "the config file".to_owned(), |p| p.display().to_string());
        bail!("{url} is defined in {path}: remove its [[feed]] table there instead");
    }
    store.remove_feed(&key, Utc::now()).await?;
    store.close().await?;
    println!("removed {key} and {} entries", feed.entry_count);
    Ok(())
}

/// `tributary status`: the state of the whole installation on one screen.
async fn status(config: &Config) -> anyhow::Result<()> {
    use crate::config::format_bytes;
    let store = open(config).await?;
    let now = Utc::now();
    let snap = store.status(1, now).await?;
    let store_backend = store.backend();
    store.close().await?;
    let settings = app::serve_settings(config);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Tributary {} · {} ({})",
        env!("CARGO_PKG_VERSION"),
        config.database,
        store_backend
    )?;
    let states: Vec<String> = crate::model::FEED_STATES
        .iter()
        .map(|s| {
            let n = snap.feeds.iter().filter(|f| f.state() == *s).count();
            format!("{n} {s}")
        })
        .collect();
    writeln!(
        out,
        "feeds:      {} ({})",
        snap.feeds.len(),
        states.join(", ")
    )?;
    let last = snap
        .feeds
        .iter()
        .filter_map(|f| f.last_checked_at.map(|t| (t, f)))
        .max_by_key(|(t, _)| *t);
    match last {
        Some((t, f)) => writeln!(out, "last poll:  {} ({})", ago(Some(t), now), f.spec.url)?,
        None => writeln!(out, "last poll:  never")?,
    }
    writeln!(
        out,
        "entries:    {} · tombstones {} · {} waiting for the search index",
        snap.entries, snap.tombstones, snap.search_backlog
    )?;
    writeln!(
        out,
        "articles:   {} pending, {} failed",
        snap.articles_pending, snap.articles_failed
    )?;
    match snap.dedup_pass {
        crate::store::DedupPass::Done(at) => writeln!(
            out,
            "stories:    stored stories re-examined for duplicates {}",
            ago(Some(at), now)
        )?,
        crate::store::DedupPass::Pending => writeln!(
            out,
            "stories:    re-examination of stored stories for duplicates pending (the daemon runs it)"
        )?,
    }
    let cap = config.retention.max_database_size.map_or_else(
        || "no cap".to_owned(),
        |c| format!("cap {}", format_bytes(c)),
    );
    writeln!(
        out,
        "database:   {} used, {} file, {cap} · housekeeping {}",
        format_bytes(snap.size.used_bytes),
        format_bytes(snap.size.file_bytes),
        ago(snap.housekept_at, now)
    )?;
    for (i, (label, url)) in crate::serve::status::output_urls(&settings)
        .iter()
        .enumerate()
    {
        let head = if i == 0 { "outputs:" } else { "" };
        writeln!(out, "{head:<11} {url}  ({label})")?;
    }
    // Feeds an operator should look at; the rest are in `feeds list`.
    let attention: Vec<&Feed> = snap
        .feeds
        .iter()
        .filter(|f| matches!(f.state(), "failing" | "gone"))
        .collect();
    if !attention.is_empty() {
        writeln!(out, "\nneeds attention:")?;
        for f in attention.iter().take(STATUS_ATTENTION_ROWS) {
            let err = f.last_error.as_deref().unwrap_or("-");
            writeln!(
                out,
                "{:<8} {} · {} errors · last success {} · {err}",
                f.state(),
                f.spec.url,
                f.error_count,
                ago(f.last_success_at, now)
            )?;
        }
        if attention.len() > STATUS_ATTENTION_ROWS {
            writeln!(
                out,
                "… and {} more (see `tributary feeds list`)",
                attention.len() - STATUS_ATTENTION_ROWS
            )?;
        }
    }
    Ok(())
}

/// Failing or gone feeds listed by `status`, so it stays one screen.
const STATUS_ATTENTION_ROWS: usize = 10;

/// `tributary purge`: housekeeping now, with what it removed.
async fn purge(config: &Config, vacuum: bool) -> anyhow::Result<()> {
    use crate::config::format_bytes;
    let store = open(config).await?;
    let policy = config.retention.policy();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut report = crate::housekeeping::once(&store, &policy, Utc::now(), &stop)
        .await
        .context("cannot apply retention")?;
    if vacuum {
        store
            .full_vacuum()
            .await
            .context("cannot rebuild the database (VACUUM); is the disk full?")?;
        report.after = store.db_size().await?;
    }
    let tombstones = store.status(1, Utc::now()).await?.tombstones;
    store.close().await?;
    let purged = report.purged();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "purged:     {} entries ({} older than max_age, {} over max_entries_per_feed, {} over max_database_size)",
        purged.entries, report.by_age.entries, report.by_count.entries, report.by_size.entries
    )?;
    writeln!(
        out,
        "tombstones: {} added, {} dropped, {tombstones} kept",
        purged.tombstones, report.tombstones_dropped
    )?;
    writeln!(
        out,
        "database:   {} freed, {} reclaimed; now {} used, {} file",
        format_bytes(report.freed_bytes()),
        format_bytes(report.reclaimed_bytes()),
        format_bytes(report.after.used_bytes),
        format_bytes(report.after.file_bytes)
    )?;
    if !report.after.incremental_vacuum {
        writeln!(
            out,
            "note:       free pages are reused but the file does not shrink; \
             `tributary purge --vacuum` (daemon stopped) rebuilds it once"
        )?;
    }
    Ok(())
}

async fn opml_import(config: &Config, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read OPML file {}", file.display()))?;
    let imported =
        crate::opml::import(&text).with_context(|| format!("cannot import {}", file.display()))?;
    let store = open(config).await?;
    let mut progress =
        crate::progress::Progress::stderr("importing", "feeds", Some(imported.feeds.len() as u64));
    let outcomes = store
        .add_feeds_with_progress(
            imported.feeds.clone(),
            FeedOrigin::Opml,
            Utc::now(),
            move |n| progress.set(n as u64),
        )
        .await?;
    store.close().await?;
    let added = outcomes.iter().filter(|o| **o == AddOutcome::Added).count();
    println!(
        "imported {added} feeds from {} ({} already subscribed, {} skipped)",
        file.display(),
        outcomes.len() - added,
        imported.skipped.len()
    );
    for s in &imported.skipped {
        println!("  skipped {:?}: {}", s.outline, s.reason);
    }
    Ok(())
}

async fn opml_export(config: &Config) -> anyhow::Result<()> {
    let store = open(config).await?;
    let feeds = store.feeds().await?;
    store.close().await?;
    // The feed's own title stands in when the operator gave none, so the
    // file is readable in any other reader.
    let specs: Vec<FeedSpec> = feeds
        .into_iter()
        .map(|f| FeedSpec {
            title: f.spec.title.clone().or(f.site_title),
            ..f.spec
        })
        .collect();
    let doc = crate::opml::export(&specs, &format!("{} subscriptions", config.server.title));
    let mut out = std::io::stdout().lock();
    out.write_all(doc.as_bytes())?;
    if !doc.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The pages' address: base for relative links and host for site rules
    #[arg(long)]
    pub url: Option<String>,
    /// Print one JSON object `{"<file name>": {"articleBody", "html"}}` for all files
    #[arg(long)]
    pub json: bool,
    /// Saved pages; names ending in .gz are gunzipped
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `tributary extract`: the daemon's extractor and cleaner on saved pages,
/// for debugging a site and for measuring. A page with no article is a
/// warning and an empty result, not an error; an unreadable file is.
fn extract_files(args: &ExtractArgs, config: &Config) -> anyhow::Result<()> {
    use crate::pipeline::extract::{ExtractOptions, Extractor};

    let url = args
        .url
        .as_deref()
        .map(url::Url::parse)
        .transpose()
        .context("--url must be an absolute URL, e.g. https://example.com/post")?;
    let extractor = Extractor::new();
    let opts = ExtractOptions {
        url: url.as_ref(),
        rules: &config.sites,
        ..ExtractOptions::default()
    };
    let started = std::time::Instant::now();
    let mut json = serde_json::Map::new();
    let mut out = std::io::stdout().lock();
    for path in &args.files {
        let html = read_page(path, url.as_ref())?;
        let (text, html) = match extractor.extract(&html, &opts) {
            Ok(article) => (article.text, article.html),
            Err(e) => {
                tracing::warn!("{}: {e}", path.display());
                (String::new(), String::new())
            }
        };
        if args.json {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let id = name.split('.').next().unwrap_or(&name).to_owned();
            json.insert(id, serde_json::json!({ "articleBody": text, "html": html }));
        } else {
            if args.files.len() > 1 {
                writeln!(out, "==> {} <==", path.display())?;
            }
            writeln!(out, "{text}\n")?;
        }
    }
    if args.json {
        serde_json::to_writer(&mut out, &json)?;
        writeln!(out)?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} pages in {:.3} s ({:.0} pages/s)",
        args.files.len(),
        secs,
        args.files.len() as f64 / secs.max(f64::EPSILON)
    );
    Ok(())
}

/// Reads a saved page: gunzipped when the name ends in `.gz`, decoded as
/// UTF-8 when valid, else in the encoding chardetng guesses.
fn read_page(path: &Path, url: Option<&url::Url>) -> anyhow::Result<String> {
    use std::io::Read;

    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("{} is not valid gzip", path.display()))?;
        out
    } else {
        raw
    };
    // The same decoding as fetched pages: BOM, <meta charset>, detection.
    Ok(crate::pipeline::parse::decode_html(&bytes, None, url))
}
