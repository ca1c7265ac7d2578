//! Configuration: raw TOML text → validated [`Config`].
//!
//! This module owns the configuration file format: every key, its type, its
//! default and the rules its value must meet. Nothing downstream ever sees an
//! unvalidated value, and nothing else in the program reads TOML or the
//! `STATE_DIRECTORY` variable.
//!
//! Loading happens in two phases so that an operator sees every mistake in one
//! run instead of fixing them one restart at a time:
//!
//! 1. **Read**: walk the spanned TOML tree key by key, turning each value into
//!    a typed [`Field`](read::Field) (or a [`Problem`] for an unknown key, a wrong type or
//!    an unparsable value). Nothing stops at the first error.
//! 2. **Validate**: lay the read values over the defaults and check ranges and
//!    rules that span several keys (`poll.interval >= poll.min_interval`,
//!    duplicate feed URLs, …). A value that already failed in phase 1 is left
//!    out of these checks so one typo is not reported three times.
//!
//! Each problem names its dotted key (`poll.interval`, `feed[2].url`) and its
//! 1-based line, computed from the byte spans the TOML parser hands back.
//!
//! The parts: `raw` declares every table and key (one line per key), `read`
//! holds the readers of each kind of value, `values` the parsers of URLs,
//! durations, sizes and the like, `validate` the global tables' rules, and
//! `feeds` and `outputs` the arrays of tables. This file holds the public
//! types, their defaults and the entry points.

mod feeds;
mod outputs;
mod raw;
mod read;
mod validate;
mod values;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;
use url::Url;

use crate::database::Database;
use crate::model::{FeedSpec, OutputSpec, RetentionPolicy, SiteRule};
use read::{LineIndex, Reader};
pub use values::{
    format_bytes, format_duration, parse_duration, parse_header, parse_proxy, parse_regex,
    parse_selector, parse_size,
};

// The tests reach the parts' items through `use super::*`.
#[cfg(test)]
use {
    raw::SECTIONS,
    read::closest,
    values::{
        MAX_OUTPUT_NAME_LEN, OUTPUT_NAME_HINT, SELECTOR_HINT, describe_regex_error,
        describe_selector_error, parse_allow_rule, parse_output_name, parse_site_host,
    },
};
#[cfg(test)]
const SERVER_KEYS: &[&str] = raw::RawServer::KEYS;
#[cfg(test)]
const POLL_KEYS: &[&str] = raw::RawPoll::KEYS;
#[cfg(test)]
const FEED_KEYS: &[&str] = raw::RawFeed::KEYS;
#[cfg(test)]
const SITE_KEYS: &[&str] = raw::RawSite::KEYS;
#[cfg(test)]
const OUTPUT_KEYS: &[&str] = raw::RawOutput::KEYS;

// A macro rather than a const so that `concat!` can build the user agent at
// compile time: `concat!` only accepts literals.
macro_rules! project_url {
    () => {
        "https://github.com/tributary-rs/tributary"
    };
}

/// The project's home page, named in the output feeds' `<generator>`.
pub const PROJECT_URL: &str = project_url!();

/// Where the default user agent points server operators who want to know
/// who is fetching their feeds (the same page as [`PROJECT_URL`]).
pub const DEFAULT_USER_AGENT_PROJECT_URL: &str = PROJECT_URL;

/// The `User-Agent` sent when `[poll] user_agent` is not set:
/// `Tributary/<version> (+<project url>)`.
pub const DEFAULT_USER_AGENT: &str = concat!(
    "Tributary/",
    env!("CARGO_PKG_VERSION"),
    " (+",
    project_url!(),
    ")"
);

/// The file name of the database when `database` is not set.
const DEFAULT_DATABASE_FILE: &str = "tributary.db";
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));
const DEFAULT_TITLE: &str = "Tributary";
const DEFAULT_PAGE_SIZE: usize = 50;
const DEFAULT_MAX_PAGE_SIZE: usize = 500;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60 * 60);
const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONCURRENCY: usize = 8;
const DEFAULT_MAX_BODY: u64 = 10 * 1_000_000;
const DEFAULT_ADAPTIVE: bool = true;
const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_PER_HOST_CONCURRENCY: usize = 1;
const DEFAULT_PER_HOST_SPACING: Duration = Duration::from_secs(1);
/// How long past the fetch timeout a node's claim on a feed or page lasts.
const DEFAULT_LEASE_MARGIN: Duration = Duration::from_secs(60);
const DEFAULT_LOG_LEVEL: &str = "info";
const DEFAULT_FULL_TEXT: bool = true;
const DEFAULT_MAX_ATTEMPTS: u32 = 4;
const DEFAULT_EXTRACT_CONCURRENCY: usize = 4;
const DAY: u64 = 24 * 60 * 60;
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(180 * DAY);
const DEFAULT_MAX_ENTRIES_PER_FEED: usize = 1_000;
const DEFAULT_MIN_ENTRIES_PER_FEED: usize = 10;
/// Below this, a content cap would cut ordinary posts.
const MIN_MAX_CONTENT_SIZE: u64 = 1024;
const DEFAULT_MAX_DATABASE_SIZE: u64 = 1_000_000_000;
const DEFAULT_TOMBSTONE_MAX_AGE: Duration = Duration::from_secs(365 * DAY);
const DEFAULT_MAX_TOMBSTONES: usize = 500_000;
const DEFAULT_HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(DAY);

/// Bounds that protect the daemon and the feeds' servers from a typo.
const MIN_MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_CONCURRENCY: i64 = 1024;
const MIN_MAX_BODY: u64 = 1_000;
const MAX_MAX_ATTEMPTS: i64 = 20;
/// The smallest database size cap: below this even an empty database with
/// its indexes would not fit, and every entry would be purged.
const MIN_MAX_DATABASE_SIZE: u64 = 1_000_000;

/// The validated configuration. Every field holds a usable value: defaults
/// are filled in and all rules have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// File it was loaded from (None when built from a string in tests).
    pub path: Option<PathBuf>,
    /// Where the data lives: a SQLite file (resolved path, absolute unless
    /// the current directory could not be determined) or a PostgreSQL URL.
    /// `TRIBUTARY_DATABASE` overrides the file's `database`.
    pub database: Database,
    pub server: ServerConfig,
    pub poll: PollConfig,
    pub log: LogConfig,
    pub network: NetworkConfig,
    pub extract: ExtractConfig,
    pub retention: RetentionConfig,
    /// The `[[feed]]` tables in file order; URLs are unique.
    pub feeds: Vec<FeedSpec>,
    /// The `[[site]]` tables in file order; hosts are unique, and every rule
    /// has at least one selector, each known to compile.
    pub sites: Vec<SiteRule>,
    /// The `[[output]]` tables in file order; names are unique, regexes
    /// compile, feed URLs are normalised and limits are within
    /// `server.max_page_size`.
    pub outputs: Vec<OutputSpec>,
}

/// `[server]`: the HTTP server that publishes the output feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address the server binds to.
    pub listen: SocketAddr,
    /// The public address of the server, used for absolute links in the
    /// output (self links, ids). Always http or https with no query or
    /// fragment. Its path never ends in `/`, except the bare root, which the
    /// `url` crate always spells `/` (`https://example.com/`). Build links
    /// with [`ServerConfig::url_for`] rather than [`Url::join`], which would
    /// drop the last path segment.
    pub base_url: Url,
    /// Title of the combined output feed.
    pub title: String,
    /// Entries per output page when the client does not ask for a number.
    pub page_size: usize,
    /// The cap on `?limit=`, so one request cannot ask for the whole database.
    pub max_page_size: usize,
    /// A WebSub hub: the outputs name it with `rel="hub"`, and the daemon
    /// pings it after new entries land. Always http or https, with no
    /// fragment. None: no WebSub.
    pub websub_hub: Option<Url>,
}

impl ServerConfig {
    /// The absolute URL of `path` under `base_url`:
    /// `https://example.com/feeds` + `atom.xml` → `https://example.com/feeds/atom.xml`.
    /// A leading `/` on `path` is ignored, so `"/atom.xml"` gives the same.
    pub fn url_for(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.base_url.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// The title of a named output: its own `title`, else
    /// `"<server title>: <name>"` (`Tributary: rust`).
    pub fn output_title(&self, output: &OutputSpec) -> String {
        match &output.title {
            Some(title) => title.clone(),
            None => format!("{}: {}", self.title, output.name),
        }
    }
}

/// `[poll]`: how feeds are fetched.
///
/// The intervals are ordered: `min_interval <= interval <= max_interval`,
/// and every `[[feed]] interval` lies in the same range; `min_interval <=
/// max_backoff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollConfig {
    /// How often a feed is polled unless it sets its own `interval`.
    pub interval: Duration,
    /// The floor for any interval, including ones a feed asks for (`ttl`,
    /// `Cache-Control`), so the daemon never hammers a server.
    pub min_interval: Duration,
    /// Whether each feed's interval is learned from how often it publishes,
    /// between `min_interval` and `max_interval`: a feed that posts once a
    /// week need not be fetched every hour, a busy one is not left stale.
    pub adaptive: bool,
    /// The ceiling for adaptive intervals and for intervals a feed asks for
    /// (`ttl`, `Cache-Control`), so a quiet or misconfigured feed is still
    /// looked at now and then.
    pub max_interval: Duration,
    /// The ceiling for error backoff and for `Retry-After`, so a feed that
    /// was down for a while is noticed soon after it comes back.
    pub max_backoff: Duration,
    /// At most this many simultaneous requests to one host (feeds and
    /// article pages alike), so many feeds on one server never look like an
    /// attack on it.
    pub per_host_concurrency: usize,
    /// Minimum time between the starts of two requests to the same host;
    /// zero means no spacing.
    pub per_host_spacing: Duration,
    /// Total time allowed for one fetch, body included.
    pub timeout: Duration,
    /// Time allowed to establish the connection.
    pub connect_timeout: Duration,
    /// Global cap on simultaneous fetches.
    pub concurrency: usize,
    /// Largest response body accepted, in bytes; protects memory from a
    /// runaway or hostile server.
    pub max_body: u64,
    /// The `User-Agent` header sent with every fetch.
    pub user_agent: String,
    /// How long past `timeout` a feed or article page a node took stays
    /// its own: the node's claim in the database lasts `timeout` plus this.
    /// On PostgreSQL it is how soon another node takes over the work of a
    /// node that died mid-poll; too short, and a slow poll's result could
    /// arrive after another node fetched the feed again.
    pub lease_margin: Duration,
}

/// `[log]`: what the daemon logs and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` `EnvFilter` directive: a level (`info`) or a list
    /// (`info,tributary::pipeline=debug`). Checked only for being non-empty;
    /// the logging setup reports a malformed directive.
    pub level: String,
    pub format: LogFormat,
}

/// `[network]`: which addresses that are not public the daemon may fetch
/// from. Loopback, private, link-local and similar addresses are refused by
/// default so that a feed (or a link in one) cannot make the daemon probe
/// the operator's own network. Feeds that the operator configured on a
/// private host are allowed elsewhere, not via this list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The `allow` items in file order, without duplicates.
    pub allow: Vec<AllowRule>,
}

/// One item of `[network] allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// A network (`192.168.1.0/24`, `fd00::/8`), or a single address as a
    /// /32 or /128 network. Host bits are cleared: `192.168.1.7/24` is kept
    /// as `192.168.1.0/24`.
    Net(ipnet::IpNet),
    /// A host name, lowercase, without a trailing dot, internationalised
    /// names in their `xn--` form (`nas.local`); matched exactly: it does
    /// not cover subdomains.
    Host(String),
}

impl NetworkConfig {
    /// Whether `ip` lies in one of the allowed networks. An IPv4-mapped IPv6
    /// address (`::ffff:10.0.0.5`) also counts as the IPv4 address it
    /// carries, so the way a resolver spells an address does not matter.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.allow.iter().any(|rule| match rule {
            AllowRule::Net(net) => net.contains(&ip) || net.contains(&canonical),
            AllowRule::Host(_) => false,
        })
    }

    /// Whether `host`, as it appears in a URL, is allowed by name: equal to
    /// a listed host name, ignoring case and a trailing dot. Internationalised
    /// names compare in their `xn--` form, which is how [`Url::host_str`]
    /// gives them. An IP literal (`10.0.0.5`, `[::1]`) is checked with
    /// [`NetworkConfig::allows_ip`].
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.allows_ip(ip);
        }
        self.allow
            .iter()
            .any(|rule| matches!(rule, AllowRule::Host(name) if name.eq_ignore_ascii_case(host)))
    }
}

/// `[extract]`: replacing an entry's excerpt with the text of its article
/// page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractConfig {
    /// Whether to fetch each new entry's article page and keep its cleaned
    /// text; a feed's own `full_text` wins (see
    /// [`ExtractConfig::full_text_for`]).
    pub full_text: bool,
    /// How many times a failing article fetch is tried, with backoff, before
    /// the entry keeps the feed's own content; 1 to 20.
    pub max_attempts: u32,
    /// Simultaneous article fetches across all hosts; the per-host limits
    /// of `[poll]` still apply.
    pub concurrency: usize,
}

impl ExtractConfig {
    /// Whether full text is fetched for `feed`: its own `full_text` when
    /// set, else `[extract] full_text`.
    pub fn full_text_for(&self, feed: &FeedSpec) -> bool {
        feed.full_text.unwrap_or(self.full_text)
    }
}

/// `[retention]`: how much history the database keeps, and how often
/// housekeeping applies it. Every limit is optional (`"0s"` or `0` in the
/// file turns it off), except that tombstones are always bounded by age,
/// count or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Entries older than this (by their output time: published, never
    /// later than first seen) are purged.
    pub max_age: Option<Duration>,
    /// Each feed keeps only this many of its newest entries, so one
    /// firehose cannot crowd out the rest.
    pub max_entries_per_feed: Option<usize>,
    /// Each feed keeps at least this many of its newest entries whatever
    /// their age and the size cap, so a feed that was read stays visible
    /// (a blog whose posts are all older than `max_age`).
    pub min_entries_per_feed: Option<usize>,
    /// An entry's stored and served content is cut to this many bytes,
    /// with a visible note, so one huge item cannot bloat every page.
    pub max_content_size: usize,
    /// The oldest entries of all feeds are purged while the database's
    /// used pages exceed this many bytes; at least 1MB.
    pub max_database_size: Option<u64>,
    /// A purged entry's tombstone is dropped once its feed has not carried
    /// the entry for this long. Until then the entry cannot come back.
    pub tombstone_max_age: Option<Duration>,
    /// At most this many tombstones are kept; the longest unseen go first.
    pub max_tombstones: Option<usize>,
    /// Time between housekeeping runs (retention, vacuum, optimize,
    /// checkpoint); the first runs shortly after start.
    pub housekeeping_interval: Duration,
}

impl RetentionConfig {
    /// The limits as the store applies them.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_age: self.max_age,
            max_entries_per_feed: self.max_entries_per_feed,
            min_entries_per_feed: self.min_entries_per_feed,
            max_database_size: self.max_database_size,
            tombstone_max_age: self.tombstone_max_age,
            max_tombstones: self.max_tombstones,
        }
    }
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal or the journal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but has problems; all of them are listed, in line
    /// order.
    #[error("{}", render_problems(.path.as_deref(), .problems))]
    Invalid {
        path: Option<PathBuf>,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key at fault (`poll.interval`, `feed[2].url`); empty for a
    /// TOML syntax error, which has no key yet.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// One line per problem: `path:line: key: message`.
fn render_problems(path: Option<&Path>, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, problem) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let origin = path.map(|p| p.display().to_string());
        match (origin, problem.line) {
            (Some(origin), Some(line)) => out.push_str(&format!("{origin}:{line}: ")),
            (Some(origin), None) => out.push_str(&format!("{origin}: ")),
            (None, Some(line)) => out.push_str(&format!("line {line}: ")),
            (None, None) => {}
        }
        if !problem.key.is_empty() {
            out.push_str(&problem.key);
            out.push_str(": ");
        }
        out.push_str(&problem.message);
    }
    out
}

impl Config {
    /// Load and validate a file. Relative paths inside resolve against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, Some(path))
    }

    /// Validate TOML text; `path` is used for messages and for resolving
    /// relative paths (None → current dir).
    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let state_dir = std::env::var("STATE_DIRECTORY").ok();
        let database = std::env::var(crate::database::ENV_VAR).ok();
        from_toml_with_vars(text, path, state_dir.as_deref(), database.as_deref())
    }

    /// The config with all defaults and no feeds (what an empty file gives).
    pub fn default_for(path: Option<&Path>) -> Config {
        let state_dir = std::env::var("STATE_DIRECTORY").ok();
        defaults(path, state_dir.as_deref())
    }
}

/// [`Config::from_toml`] with the value of `STATE_DIRECTORY` passed in, so
/// tests do not race on the process environment.
#[cfg(test)]
fn from_toml_with_env(
    text: &str,
    path: Option<&Path>,
    state_dir: Option<&str>,
) -> Result<Config, ConfigError> {
    from_toml_with_vars(text, path, state_dir, None)
}

/// [`Config::from_toml`] with the values of `STATE_DIRECTORY` and
/// `TRIBUTARY_DATABASE` (which overrides the file's `database`) passed in.
fn from_toml_with_vars(
    text: &str,
    path: Option<&Path>,
    state_dir: Option<&str>,
    database: Option<&str>,
) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: path.map(Path::to_path_buf),
        problems,
    };
    let lines = LineIndex::new(text);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(err) => {
            // After a syntax error the tree is incomplete, so checking keys
            // would only add noise: report the syntax error alone.
            return Err(invalid(vec![Problem {
                key: String::new(),
                line: err.span().map(|span| lines.line(span.start)),
                message: format!("invalid TOML: {}", err.message()),
            }]));
        }
    };

    let mut reader = Reader {
        lines,
        problems: Vec::new(),
    };
    let raw = reader.read_root(root.get_ref());
    let mut config = reader.validate(raw, path, state_dir);
    if let Some(value) = database.filter(|v| !v.trim().is_empty()) {
        match Database::parse(value, &base_dir(path)) {
            Ok(db) => config.database = db,
            Err(message) => reader.problems.push(Problem {
                key: crate::database::ENV_VAR.to_owned(),
                line: None,
                message: format!("(environment variable) {message}"),
            }),
        }
    }
    if reader.problems.is_empty() {
        Ok(config)
    } else {
        let mut problems = reader.problems;
        // The tree is walked in key order, not file order; a reader expects
        // file order. Problems without a line go last.
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(invalid(problems))
    }
}

/// The configuration an empty file gives.
fn defaults(path: Option<&Path>, state_dir: Option<&str>) -> Config {
    let base_dir = base_dir(path);
    let database = match state_dir
        .and_then(|dirs| dirs.split(':').next())
        .filter(|dir| !dir.is_empty())
    {
        // systemd's StateDirectory= is the place the unit may write to; it
        // may list several directories, the first is ours.
        Some(dir) => Path::new(dir).join(DEFAULT_DATABASE_FILE),
        None => base_dir.join(DEFAULT_DATABASE_FILE),
    };
    Config {
        path: path.map(Path::to_path_buf),
        database: Database::Sqlite(database),
        server: ServerConfig {
            listen: DEFAULT_LISTEN,
            base_url: base_url_for(DEFAULT_LISTEN),
            title: DEFAULT_TITLE.to_owned(),
            page_size: DEFAULT_PAGE_SIZE,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            websub_hub: None,
        },
        poll: PollConfig {
            interval: DEFAULT_INTERVAL,
            min_interval: DEFAULT_MIN_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            max_body: DEFAULT_MAX_BODY,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            adaptive: DEFAULT_ADAPTIVE,
            max_interval: DEFAULT_MAX_INTERVAL,
            max_backoff: DEFAULT_MAX_BACKOFF,
            per_host_concurrency: DEFAULT_PER_HOST_CONCURRENCY,
            per_host_spacing: DEFAULT_PER_HOST_SPACING,
            lease_margin: DEFAULT_LEASE_MARGIN,
        },
        log: LogConfig {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: LogFormat::Text,
        },
        network: NetworkConfig::default(),
        extract: ExtractConfig {
            full_text: DEFAULT_FULL_TEXT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            concurrency: DEFAULT_EXTRACT_CONCURRENCY,
        },
        retention: RetentionConfig {
            max_age: Some(DEFAULT_MAX_AGE),
            max_entries_per_feed: Some(DEFAULT_MAX_ENTRIES_PER_FEED),
            min_entries_per_feed: Some(DEFAULT_MIN_ENTRIES_PER_FEED),
            max_content_size: crate::values::DEFAULT_MAX_CONTENT,
            max_database_size: Some(DEFAULT_MAX_DATABASE_SIZE),
            tombstone_max_age: Some(DEFAULT_TOMBSTONE_MAX_AGE),
            max_tombstones: Some(DEFAULT_MAX_TOMBSTONES),
            housekeeping_interval: DEFAULT_HOUSEKEEPING_INTERVAL,
        },
        feeds: Vec::new(),
        sites: Vec::new(),
        outputs: Vec::new(),
    }
}

/// The directory relative paths in the file resolve against: the file's own
/// directory, made absolute so the result does not depend on the daemon's
/// working directory staying put.
fn base_dir(path: Option<&Path>) -> PathBuf {
    let dir = path.and_then(Path::parent).unwrap_or(Path::new(""));
    if dir.is_absolute() {
        return dir.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) if dir.as_os_str().is_empty() => cwd,
        Ok(cwd) => cwd.join(dir),
        // Without a current directory a relative path is the best we have;
        // it still means "relative to wherever the process runs".
        Err(_) => dir.to_path_buf(),
    }
}

/// `http://<listen>`, the default `base_url`.
fn base_url_for(listen: SocketAddr) -> Url {
    // Not user input: a SocketAddr always renders as a valid URL authority
    // (`[::1]:8080` included).
    Url::parse(&format!("http://{listen}/")).expect("a socket address is a valid URL authority")
}

#[cfg(test)]
mod tests;
