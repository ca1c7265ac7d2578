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
//!    a typed [`Field`] (or a [`Problem`] for an unknown key, a wrong type or
//!    an unparsable value). Nothing stops at the first error.
//! 2. **Validate**: lay the read values over the defaults and check ranges and
//!    rules that span several keys (`poll.interval >= poll.min_interval`,
//!    duplicate feed URLs, …). A value that already failed in phase 1 is left
//!    out of these checks so one typo is not reported three times.
//!
//! Each problem names its dotted key (`poll.interval`, `feed[2].url`) and its
//! 1-based line, computed from the byte spans the TOML parser hands back.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use url::Url;

use crate::model::{FeedSpec, OutputSpec, RetentionPolicy, SiteRule};

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
const DEFAULT_LOG_LEVEL: &str = "info";
const DEFAULT_FULL_TEXT: bool = true;
const DEFAULT_MAX_ATTEMPTS: u32 = 4;
const DEFAULT_EXTRACT_CONCURRENCY: usize = 4;
const DAY: u64 = 24 * 60 * 60;
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(180 * DAY);
const DEFAULT_MAX_ENTRIES_PER_FEED: usize = 1_000;
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
/// An output's name is part of its URL (`/o/<name>.atom`), so it is short
/// and needs no escaping.
const MAX_OUTPUT_NAME_LEN: usize = 64;

/// Hints repeated in several messages, kept in one place so they agree.
const DURATION_HINT: &str = "write it as 30s, 15m, 1h or 1h30m";
const SIZE_HINT: &str = "write it as 512KB, 10MB, 1GiB or a number of bytes";
const SELECTOR_HINT: &str =
    "write a CSS selector such as \"article\", \".post-body\" or \"div#content > p\"";
const OUTPUT_NAME_HINT: &str = "a name is 1 to 64 characters of a-z, 0-9, \"-\" and \"_\", as it becomes the output's URL (/o/<name>.atom)";
const WEBSUB_HUB_EXAMPLE: &str = "https://pubsubhubbub.appspot.com/";

/// The known keys of each table, used to reject unknown keys and to suggest
/// the intended one.
const TOP_KEYS: &[&str] = &[
    "database",
    "server",
    "poll",
    "log",
    "network",
    "extract",
    "retention",
    "feed",
    "site",
    "output",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "base_url",
    "title",
    "page_size",
    "max_page_size",
    "websub_hub",
];
const POLL_KEYS: &[&str] = &[
    "interval",
    "min_interval",
    "timeout",
    "connect_timeout",
    "concurrency",
    "max_body",
    "user_agent",
    "adaptive",
    "max_interval",
    "max_backoff",
    "per_host_concurrency",
    "per_host_spacing",
];
const LOG_KEYS: &[&str] = &["level", "format"];
const NETWORK_KEYS: &[&str] = &["allow"];
const EXTRACT_KEYS: &[&str] = &["full_text", "max_attempts", "concurrency"];
const RETENTION_KEYS: &[&str] = &[
    "max_age",
    "max_entries_per_feed",
    "max_database_size",
    "tombstone_max_age",
    "max_tombstones",
    "housekeeping_interval",
];
const FEED_KEYS: &[&str] = &["url", "title", "tags", "interval", "full_text"];
const SITE_KEYS: &[&str] = &["host", "keep", "drop"];
const OUTPUT_KEYS: &[&str] = &[
    "name", "title", "tags", "feeds", "include", "exclude", "limit",
];

/// Every table with its header as written in the file, so an unknown key can
/// be pointed at the table it belongs in.
const SECTIONS: &[(&str, &[&str])] = &[
    ("the top level", TOP_KEYS),
    ("[server]", SERVER_KEYS),
    ("[poll]", POLL_KEYS),
    ("[log]", LOG_KEYS),
    ("[network]", NETWORK_KEYS),
    ("[extract]", EXTRACT_KEYS),
    ("[retention]", RETENTION_KEYS),
    ("[[feed]]", FEED_KEYS),
    ("[[site]]", SITE_KEYS),
    ("[[output]]", OUTPUT_KEYS),
];

/// The validated configuration. Every field holds a usable value: defaults
/// are filled in and all rules have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// File it was loaded from (None when built from a string in tests).
    pub path: Option<PathBuf>,
    /// Resolved database path. Absolute unless the current directory could
    /// not be determined.
    pub database: PathBuf,
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
        from_toml_with_env(text, path, state_dir.as_deref())
    }

    /// The config with all defaults and no feeds (what an empty file gives).
    pub fn default_for(path: Option<&Path>) -> Config {
        let state_dir = std::env::var("STATE_DIRECTORY").ok();
        defaults(path, state_dir.as_deref())
    }
}

/// [`Config::from_toml`] with the value of `STATE_DIRECTORY` passed in, so
/// tests do not race on the process environment.
fn from_toml_with_env(
    text: &str,
    path: Option<&Path>,
    state_dir: Option<&str>,
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
    let config = reader.validate(raw, path, state_dir);
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
        database,
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

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        // The number of line starts at or before `offset` is its line number.
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// A value read in phase 1.
#[derive(Debug, Clone, Default)]
enum Field<T> {
    /// The key is not in the file: use the default.
    #[default]
    Missing,
    /// The key is there but a problem was already reported for it: leave it
    /// out of further checks.
    Invalid,
    /// A value of the right type, with the line it was on.
    Set(T, usize),
}

impl<T: Clone> Field<T> {
    /// The value to use, or None when the key was invalid.
    fn or(&self, default: T) -> Option<T> {
        match self {
            Field::Missing => Some(default),
            Field::Invalid => None,
            Field::Set(value, _) => Some(value.clone()),
        }
    }
}

/// Phase 1 output: what the file says, typed but not yet checked against
/// ranges or other keys.
#[derive(Default)]
struct RawConfig {
    database: Field<String>,
    server: RawServer,
    poll: RawPoll,
    log: RawLog,
    network: RawNetwork,
    extract: RawExtract,
    retention: RawRetention,
    feeds: Vec<RawFeed>,
    sites: Vec<RawSite>,
    outputs: Vec<RawOutput>,
}

#[derive(Default)]
struct RawServer {
    listen: Field<SocketAddr>,
    base_url: Field<Url>,
    title: Field<String>,
    page_size: Field<i64>,
    max_page_size: Field<i64>,
    websub_hub: Field<Url>,
}

#[derive(Default)]
struct RawPoll {
    interval: Field<Duration>,
    min_interval: Field<Duration>,
    timeout: Field<Duration>,
    connect_timeout: Field<Duration>,
    concurrency: Field<i64>,
    max_body: Field<u64>,
    user_agent: Field<String>,
    adaptive: Field<bool>,
    max_interval: Field<Duration>,
    max_backoff: Field<Duration>,
    per_host_concurrency: Field<i64>,
    per_host_spacing: Field<Duration>,
}

#[derive(Default)]
struct RawLog {
    level: Field<String>,
    format: Field<LogFormat>,
}

#[derive(Default)]
struct RawNetwork {
    allow: Field<Vec<AllowRule>>,
}

#[derive(Default)]
struct RawExtract {
    full_text: Field<bool>,
    max_attempts: Field<i64>,
    concurrency: Field<i64>,
}

#[derive(Default)]
struct RawRetention {
    max_age: Field<Duration>,
    max_entries_per_feed: Field<i64>,
    max_database_size: Field<u64>,
    tombstone_max_age: Field<Duration>,
    max_tombstones: Field<i64>,
    housekeeping_interval: Field<Duration>,
}

#[derive(Default)]
struct RawFeed {
    /// Position in the file's feed array, for `feed[N]` in messages.
    index: usize,
    /// Line of the `[[feed]]` table, for problems about a missing key.
    line: usize,
    url: Field<String>,
    title: Field<String>,
    tags: Field<Vec<String>>,
    interval: Field<Duration>,
    full_text: Field<bool>,
}

#[derive(Default)]
struct RawSite {
    /// Position in the file's site array, for `site[N]` in messages.
    index: usize,
    /// Line of the `[[site]]` table, for problems about missing keys.
    line: usize,
    host: Field<String>,
    keep: Field<Vec<String>>,
    drop: Field<Vec<String>>,
    /// Whether an unknown key was reported: most likely a misspelt `keep`
    /// or `drop`, so an empty rule is not reported on top of it.
    unknown_key: bool,
}

#[derive(Default)]
struct RawOutput {
    /// Position in the file's output array, for `output[N]` in messages.
    index: usize,
    /// Line of the `[[output]]` table, for problems about a missing key.
    line: usize,
    name: Field<String>,
    title: Field<String>,
    tags: Field<Vec<String>>,
    feeds: Field<Vec<String>>,
    include: Field<String>,
    exclude: Field<String>,
    limit: Field<i64>,
}

type Value<'i> = Spanned<DeValue<'i>>;

/// Walks the TOML tree and collects problems; both phases run on it.
struct Reader {
    lines: LineIndex,
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, key: &str, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            line: Some(self.lines.line(span.start)),
            message: message.into(),
        });
    }

    fn problem_at_line(&mut self, key: &str, line: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            line: Some(line),
            message: message.into(),
        });
    }

    // ---- phase 1: read ----

    fn read_root(&mut self, root: &DeTable<'_>) -> RawConfig {
        let mut raw = RawConfig::default();
        for (name, value) in root.iter() {
            let key = name.get_ref().as_ref();
            match key {
                "database" => raw.database = self.non_empty_string(key, value),
                "server" => {
                    if let Some(table) = self.table(key, value) {
                        raw.server = self.read_server(table);
                    }
                }
                "poll" => {
                    if let Some(table) = self.table(key, value) {
                        raw.poll = self.read_poll(table);
                    }
                }
                "log" => {
                    if let Some(table) = self.table(key, value) {
                        raw.log = self.read_log(table);
                    }
                }
                "network" => {
                    if let Some(table) = self.table(key, value) {
                        raw.network = self.read_network(table);
                    }
                }
                "extract" => {
                    if let Some(table) = self.table(key, value) {
                        raw.extract = self.read_extract(table);
                    }
                }
                "retention" => {
                    if let Some(table) = self.table(key, value) {
                        raw.retention = self.read_retention(table);
                    }
                }
                "feed" => {
                    for (i, line, table) in self.array_of_tables(key, value) {
                        let mut feed = self.read_feed(&format!("feed[{i}]"), table);
                        feed.index = i;
                        feed.line = line;
                        raw.feeds.push(feed);
                    }
                }
                "site" => {
                    for (i, line, table) in self.array_of_tables(key, value) {
                        let mut site = self.read_site(&format!("site[{i}]"), table);
                        site.index = i;
                        site.line = line;
                        raw.sites.push(site);
                    }
                }
                "output" => {
                    for (i, line, table) in self.array_of_tables(key, value) {
                        let mut output = self.read_output(&format!("output[{i}]"), table);
                        output.index = i;
                        output.line = line;
                        raw.outputs.push(output);
                    }
                }
                _ => self.unknown_key(key, key, name.span(), TOP_KEYS),
            }
        }
        raw
    }

    fn read_server(&mut self, table: &DeTable<'_>) -> RawServer {
        let mut raw = RawServer::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("server.{field}");
            let key = key.as_str();
            match field {
                "listen" => raw.listen = self.socket_addr(key, value),
                "base_url" => raw.base_url = self.base_url(key, value),
                "title" => raw.title = self.non_empty_string(key, value),
                "page_size" => raw.page_size = self.integer(key, value),
                "max_page_size" => raw.max_page_size = self.integer(key, value),
                "websub_hub" => raw.websub_hub = self.parsed(key, value, parse_websub_hub),
                _ => self.unknown_key(key, field, name.span(), SERVER_KEYS),
            }
        }
        raw
    }

    fn read_poll(&mut self, table: &DeTable<'_>) -> RawPoll {
        let mut raw = RawPoll::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("poll.{field}");
            let key = key.as_str();
            match field {
                "interval" => raw.interval = self.duration(key, value),
                "min_interval" => raw.min_interval = self.duration(key, value),
                "timeout" => raw.timeout = self.duration(key, value),
                "connect_timeout" => raw.connect_timeout = self.duration(key, value),
                "concurrency" => raw.concurrency = self.integer(key, value),
                "max_body" => raw.max_body = self.size(key, value),
                "user_agent" => raw.user_agent = self.non_empty_string(key, value),
                "adaptive" => raw.adaptive = self.boolean(key, value),
                "max_interval" => raw.max_interval = self.duration(key, value),
                "max_backoff" => raw.max_backoff = self.duration(key, value),
                "per_host_concurrency" => raw.per_host_concurrency = self.integer(key, value),
                "per_host_spacing" => raw.per_host_spacing = self.duration(key, value),
                _ => self.unknown_key(key, field, name.span(), POLL_KEYS),
            }
        }
        raw
    }

    fn read_log(&mut self, table: &DeTable<'_>) -> RawLog {
        let mut raw = RawLog::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("log.{field}");
            let key = key.as_str();
            match field {
                "level" => raw.level = self.non_empty_string(key, value),
                "format" => raw.format = self.log_format(key, value),
                _ => self.unknown_key(key, field, name.span(), LOG_KEYS),
            }
        }
        raw
    }

    fn read_network(&mut self, table: &DeTable<'_>) -> RawNetwork {
        let mut raw = RawNetwork::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("network.{field}");
            let key = key.as_str();
            match field {
                "allow" => raw.allow = self.string_list(key, value, parse_allow_rule),
                _ => self.unknown_key(key, field, name.span(), NETWORK_KEYS),
            }
        }
        raw
    }

    fn read_extract(&mut self, table: &DeTable<'_>) -> RawExtract {
        let mut raw = RawExtract::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("extract.{field}");
            let key = key.as_str();
            match field {
                "full_text" => raw.full_text = self.boolean(key, value),
                "max_attempts" => raw.max_attempts = self.integer(key, value),
                "concurrency" => raw.concurrency = self.integer(key, value),
                _ => self.unknown_key(key, field, name.span(), EXTRACT_KEYS),
            }
        }
        raw
    }

    fn read_retention(&mut self, table: &DeTable<'_>) -> RawRetention {
        let mut raw = RawRetention::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("retention.{field}");
            let key = key.as_str();
            match field {
                "max_age" => raw.max_age = self.duration(key, value),
                "max_entries_per_feed" => raw.max_entries_per_feed = self.integer(key, value),
                "max_database_size" => raw.max_database_size = self.size(key, value),
                "tombstone_max_age" => raw.tombstone_max_age = self.duration(key, value),
                "max_tombstones" => raw.max_tombstones = self.integer(key, value),
                "housekeeping_interval" => raw.housekeeping_interval = self.duration(key, value),
                _ => self.unknown_key(key, field, name.span(), RETENTION_KEYS),
            }
        }
        raw
    }

    /// The tables of an array of tables (`[[feed]]`), each with its index
    /// and the line of its header. Items that are not tables are reported.
    fn array_of_tables<'a, 'i>(
        &mut self,
        key: &str,
        value: &'a Value<'i>,
    ) -> Vec<(usize, usize, &'a DeTable<'i>)> {
        let items = match value.get_ref() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                self.problem(
                    key,
                    value.span(),
                    format!(
                        "expected an array of tables: write each {key} as [[{key}]], not [{key}]"
                    ),
                );
                return Vec::new();
            }
            other => {
                let expected = format!("an array of tables ([[{key}]])");
                self.wrong_type(key, value.span(), &expected, other);
                return Vec::new();
            }
        };
        let mut tables = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(table) => {
                    tables.push((i, self.lines.line(item.span().start), table));
                }
                other => self.wrong_type(&format!("{key}[{i}]"), item.span(), "a table", other),
            }
        }
        tables
    }

    fn read_feed(&mut self, prefix: &str, table: &DeTable<'_>) -> RawFeed {
        let mut raw = RawFeed::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("{prefix}.{field}");
            let key = key.as_str();
            match field {
                "url" => raw.url = self.feed_url(key, value),
                "title" => raw.title = self.non_empty_string(key, value),
                "tags" => raw.tags = self.tags(key, value),
                "interval" => raw.interval = self.duration(key, value),
                "full_text" => raw.full_text = self.boolean(key, value),
                _ => self.unknown_key(key, field, name.span(), FEED_KEYS),
            }
        }
        raw
    }

    fn read_site(&mut self, prefix: &str, table: &DeTable<'_>) -> RawSite {
        let mut raw = RawSite::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("{prefix}.{field}");
            let key = key.as_str();
            match field {
                "host" => raw.host = self.parsed(key, value, parse_site_host),
                "keep" => raw.keep = self.string_list(key, value, parse_selector),
                "drop" => raw.drop = self.string_list(key, value, parse_selector),
                _ => {
                    self.unknown_key(key, field, name.span(), SITE_KEYS);
                    raw.unknown_key = true;
                }
            }
        }
        raw
    }

    fn read_output(&mut self, prefix: &str, table: &DeTable<'_>) -> RawOutput {
        let mut raw = RawOutput::default();
        for (name, value) in table.iter() {
            let field = name.get_ref().as_ref();
            let key = format!("{prefix}.{field}");
            let key = key.as_str();
            match field {
                "name" => raw.name = self.parsed(key, value, parse_output_name),
                "title" => raw.title = self.non_empty_string(key, value),
                "tags" => raw.tags = self.tags(key, value),
                "feeds" => {
                    raw.feeds = self
                        .string_list(key, value, |s| parse_http_url(s).map(|url| url.to_string()));
                }
                "include" => raw.include = self.parsed(key, value, parse_regex),
                "exclude" => raw.exclude = self.parsed(key, value, parse_regex),
                "limit" => raw.limit = self.integer(key, value),
                _ => self.unknown_key(key, field, name.span(), OUTPUT_KEYS),
            }
        }
        raw
    }

    /// Reports an unknown key of the table whose keys are `known`, with a
    /// hint: a close known key of the same table, else the table(s) the key
    /// belongs in, else the list of known keys.
    fn unknown_key(&mut self, key: &str, field: &str, span: Range<usize>, known: &[&str]) {
        let hint = if let Some(close) = closest(field, known) {
            format!("did you mean \"{close}\"?")
        } else {
            let homes: Vec<&str> = SECTIONS
                .iter()
                .filter(|(_, keys)| *keys != known && keys.contains(&field))
                .map(|(header, _)| *header)
                .collect();
            if homes.is_empty() {
                format!("known keys are {}", known.join(", "))
            } else {
                format!("this key belongs in {}", homes.join(" or "))
            }
        };
        self.problem(key, span, format!("unknown key \"{field}\": {hint}"));
    }

    fn wrong_type(&mut self, key: &str, span: Range<usize>, expected: &str, found: &DeValue<'_>) {
        self.problem(
            key,
            span,
            format!("expected {expected}, found {}", type_name(found)),
        );
    }

    fn table<'a, 'i>(&mut self, key: &str, value: &'a Value<'i>) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            other => {
                self.wrong_type(key, value.span(), &format!("a table ([{key}])"), other);
                None
            }
        }
    }

    fn string(&mut self, key: &str, value: &Value<'_>) -> Field<String> {
        match value.get_ref() {
            DeValue::String(s) => Field::Set(s.to_string(), self.lines.line(value.span().start)),
            other => {
                self.wrong_type(key, value.span(), "a string", other);
                Field::Invalid
            }
        }
    }

    /// A string, trimmed, that must not be blank.
    fn non_empty_string(&mut self, key: &str, value: &Value<'_>) -> Field<String> {
        match self.string(key, value) {
            Field::Set(s, line) => {
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    self.problem(key, value.span(), "must not be empty");
                    Field::Invalid
                } else {
                    Field::Set(trimmed.to_owned(), line)
                }
            }
            other => other,
        }
    }

    /// Parses a string with `parse`, which returns the whole message on
    /// failure.
    fn parsed<T>(
        &mut self,
        key: &str,
        value: &Value<'_>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Field<T> {
        match self.string(key, value) {
            Field::Set(s, line) => match parse(&s) {
                Ok(v) => Field::Set(v, line),
                Err(message) => {
                    self.problem(key, value.span(), message);
                    Field::Invalid
                }
            },
            Field::Missing => Field::Missing,
            Field::Invalid => Field::Invalid,
        }
    }

    fn boolean(&mut self, key: &str, value: &Value<'_>) -> Field<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Field::Set(*b, self.lines.line(value.span().start)),
            DeValue::String(s) => {
                self.problem(
                    key,
                    value.span(),
                    format!(
                        "expected a boolean, found a string: write true or false without quotes, not \"{s}\""
                    ),
                );
                Field::Invalid
            }
            other => {
                self.wrong_type(key, value.span(), "a boolean (true or false)", other);
                Field::Invalid
            }
        }
    }

    fn integer(&mut self, key: &str, value: &Value<'_>) -> Field<i64> {
        match value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Field::Set(n, self.lines.line(value.span().start)),
                Err(_) => {
                    self.problem(key, value.span(), "number is too large");
                    Field::Invalid
                }
            },
            other => {
                self.wrong_type(key, value.span(), "an integer", other);
                Field::Invalid
            }
        }
    }

    fn duration(&mut self, key: &str, value: &Value<'_>) -> Field<Duration> {
        if let DeValue::Integer(i) = value.get_ref() {
            // A bare number has no unit; guessing seconds would turn a
            // minutes-minded `interval = 30` into a poll every 30 seconds.
            self.problem(
                key,
                value.span(),
                format!(
                    "expected a duration string, found an integer: add quotes and a unit, e.g. \"{n}s\" for seconds or \"{n}m\" for minutes",
                    n = i.as_str()
                ),
            );
            return Field::Invalid;
        }
        self.parsed(key, value, parse_duration)
    }

    fn size(&mut self, key: &str, value: &Value<'_>) -> Field<u64> {
        if let DeValue::Integer(_) = value.get_ref() {
            // A bare integer is unambiguous for a size: bytes.
            return match self.integer(key, value) {
                Field::Set(n, line) => match u64::try_from(n) {
                    Ok(n) => Field::Set(n, line),
                    Err(_) => {
                        self.problem(key, value.span(), "must not be negative");
                        Field::Invalid
                    }
                },
                _ => Field::Invalid,
            };
        }
        self.parsed(key, value, parse_size)
    }

    fn socket_addr(&mut self, key: &str, value: &Value<'_>) -> Field<SocketAddr> {
        self.parsed(key, value, |s| {
            s.trim().parse::<SocketAddr>().map_err(|_| {
                format!(
                    "invalid listen address \"{s}\": write it as HOST:PORT with an IP address, e.g. 127.0.0.1:8080 or [::1]:8080"
                )
            })
        })
    }

    fn base_url(&mut self, key: &str, value: &Value<'_>) -> Field<Url> {
        self.parsed(key, value, |s| {
            let mut url = parse_http_url(s)?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "invalid URL \"{s}\": a base URL cannot have a query (?…) or fragment (#…)"
                ));
            }
            // See `ServerConfig::base_url` for why the slash goes.
            let path = url.path().trim_end_matches('/').to_owned();
            url.set_path(&path);
            Ok(url)
        })
    }

    fn feed_url(&mut self, key: &str, value: &Value<'_>) -> Field<String> {
        self.parsed(key, value, |s| parse_http_url(s).map(|url| url.to_string()))
    }

    fn log_format(&mut self, key: &str, value: &Value<'_>) -> Field<LogFormat> {
        self.parsed(key, value, |s| match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown log format \"{s}\": use \"text\" or \"json\""
            )),
        })
    }

    /// An array of strings: trimmed, blanks rejected, duplicates dropped
    /// (the first one keeps its place).
    fn tags(&mut self, key: &str, value: &Value<'_>) -> Field<Vec<String>> {
        self.string_list(key, value, |s| Ok(s.to_owned()))
    }

    /// An array of strings, each trimmed, non-blank and turned into a `T`
    /// by `parse` (which returns the whole message on failure); each bad
    /// item is reported as `key[N]` on its own line. Duplicates are dropped,
    /// the first one keeping its place.
    fn string_list<T: PartialEq>(
        &mut self,
        key: &str,
        value: &Value<'_>,
        mut parse: impl FnMut(&str) -> Result<T, String>,
    ) -> Field<Vec<T>> {
        let items = match value.get_ref() {
            DeValue::Array(items) => items,
            DeValue::String(s) => {
                self.problem(
                    key,
                    value.span(),
                    format!("expected an array of strings, found a string: write it as [\"{s}\"]"),
                );
                return Field::Invalid;
            }
            other => {
                self.wrong_type(key, value.span(), "an array of strings", other);
                return Field::Invalid;
            }
        };
        let mut list: Vec<T> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let parsed = match self.non_empty_string(&item_key, item) {
                Field::Set(s, _) => parse(&s),
                _ => {
                    ok = false;
                    continue;
                }
            };
            match parsed {
                Ok(v) => {
                    if !list.contains(&v) {
                        list.push(v);
                    }
                }
                Err(message) => {
                    self.problem(&item_key, item.span(), message);
                    ok = false;
                }
            }
        }
        if ok {
            Field::Set(list, self.lines.line(value.span().start))
        } else {
            Field::Invalid
        }
    }

    // ---- phase 2: validate ----

    /// Lays the read values over the defaults and checks ranges and rules
    /// between keys. Returns a complete `Config` even when problems were
    /// found (with defaults in the bad places); the caller discards it then.
    fn validate(&mut self, raw: RawConfig, path: Option<&Path>, state_dir: Option<&str>) -> Config {
        let mut config = defaults(path, state_dir);

        if let Field::Set(database, _) = &raw.database {
            // `join` keeps an absolute path as it is.
            config.database = base_dir(path).join(database);
        }

        let max_page_size = self.validate_server(&raw.server, &mut config.server);
        let max_interval = self.validate_poll(&raw.poll, &mut config.poll);
        let min_interval = raw.poll.min_interval.or(DEFAULT_MIN_INTERVAL);
        if let Some(level) = raw.log.level.or(config.log.level.clone()) {
            config.log.level = level;
        }
        if let Some(format) = raw.log.format.or(config.log.format) {
            config.log.format = format;
        }
        if let Field::Set(allow, _) = raw.network.allow {
            config.network.allow = allow;
        }
        self.validate_extract(&raw.extract, &mut config.extract);
        self.validate_retention(&raw.retention, &mut config.retention);
        config.feeds = self.validate_feeds(raw.feeds, min_interval, max_interval);
        config.sites = self.validate_sites(raw.sites);
        config.outputs = self.validate_outputs(raw.outputs, max_page_size);
        config
    }

    /// Whether a problem was already reported for `key`, so a rule between
    /// keys does not blame the same key twice.
    fn reported(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }

    /// A count that must be between 1 and `max`: the value when it is set
    /// and in range, None otherwise (a problem is reported when it is out
    /// of range).
    fn count(&mut self, key: &str, field: &Field<i64>, max: i64) -> Option<usize> {
        let Field::Set(n, line) = *field else {
            return None;
        };
        match usize::try_from(n) {
            Ok(c) if (1..=max).contains(&n) => Some(c),
            _ => {
                self.problem_at_line(key, line, format!("must be between 1 and {max}, got {n}"));
                None
            }
        }
    }

    /// Checks `[server]`; returns the `max_page_size` that `[[output]]`
    /// limits must not exceed, or None when it is not known (invalid).
    fn validate_server(&mut self, raw: &RawServer, server: &mut ServerConfig) -> Option<usize> {
        if let Some(listen) = raw.listen.or(server.listen) {
            server.listen = listen;
            server.base_url = base_url_for(listen);
        }
        if let Field::Set(url, _) = &raw.base_url {
            server.base_url = url.clone();
        }
        if let Some(title) = raw.title.or(server.title.clone()) {
            server.title = title;
        }

        let max_page_size = match &raw.max_page_size {
            Field::Set(n, line) => match usize::try_from(*n) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.problem_at_line(
                        "server.max_page_size",
                        *line,
                        format!("must be at least 1, got {n}"),
                    );
                    None
                }
            },
            Field::Missing => Some(DEFAULT_MAX_PAGE_SIZE),
            Field::Invalid => None,
        };
        if let Some(max) = max_page_size {
            server.max_page_size = max;
        }
        if let Field::Set(n, line) = &raw.page_size {
            match usize::try_from(*n) {
                Ok(n) if n >= 1 && max_page_size.is_none_or(|max| n <= max) => {
                    server.page_size = n;
                }
                _ => {
                    let upper = match max_page_size {
                        Some(max) => format!("max_page_size ({max})"),
                        None => "max_page_size".to_owned(),
                    };
                    self.problem_at_line(
                        "server.page_size",
                        *line,
                        format!("must be between 1 and {upper}, got {n}"),
                    );
                }
            }
        } else if let (Field::Missing, Some(max)) = (&raw.page_size, max_page_size) {
            // A small max_page_size lowers the default page size with it,
            // rather than making the operator set both.
            server.page_size = DEFAULT_PAGE_SIZE.min(max);
        }
        if let Field::Set(hub, _) = &raw.websub_hub {
            server.websub_hub = Some(hub.clone());
        }
        max_page_size
    }

    /// Checks `[poll]`; returns the `max_interval` that `[[feed]]`
    /// intervals must not exceed, or None when it is not known (invalid).
    fn validate_poll(&mut self, raw: &RawPoll, poll: &mut PollConfig) -> Option<Duration> {
        let min_interval = match &raw.min_interval {
            Field::Set(d, line) if *d < MIN_MIN_INTERVAL => {
                self.problem_at_line(
                    "poll.min_interval",
                    *line,
                    format!("must be at least 1s, got {}", format_duration(*d)),
                );
                None
            }
            other => other.or(DEFAULT_MIN_INTERVAL),
        };
        if let Some(min) = min_interval {
            poll.min_interval = min;
        }
        // The interval the other keys are checked against; None when it is
        // not known, so those checks are skipped.
        let interval = match (&raw.interval, min_interval) {
            (Field::Set(interval, line), Some(min)) if *interval < min => {
                self.problem_at_line(
                    "poll.interval",
                    *line,
                    format!(
                        "interval ({}) is shorter than min_interval ({}): raise interval or lower min_interval",
                        format_duration(*interval),
                        format_duration(min)
                    ),
                );
                None
            }
            (Field::Set(interval, _), _) => {
                poll.interval = *interval;
                Some(*interval)
            }
            // Only a min_interval from the file can exceed the default
            // interval; that key is the one with a line to point at.
            (Field::Missing, Some(min)) if DEFAULT_INTERVAL < min => {
                if let Field::Set(_, line) = raw.min_interval {
                    self.problem_at_line(
                        "poll.min_interval",
                        line,
                        format!(
                            "min_interval ({}) is longer than the default interval ({}): set interval too, or lower min_interval",
                            format_duration(min),
                            format_duration(DEFAULT_INTERVAL)
                        ),
                    );
                }
                None
            }
            (Field::Missing, _) => Some(DEFAULT_INTERVAL),
            (Field::Invalid, _) => None,
        };
        let max_interval = match (&raw.max_interval, interval) {
            (Field::Set(max, line), Some(interval)) if *max < interval => {
                self.problem_at_line(
                    "poll.max_interval",
                    *line,
                    format!(
                        "max_interval ({}) is shorter than interval ({}): raise max_interval or lower interval",
                        format_duration(*max),
                        format_duration(interval)
                    ),
                );
                None
            }
            // As above: only an interval from the file can exceed the
            // default ceiling.
            (Field::Missing, Some(interval)) if DEFAULT_MAX_INTERVAL < interval => {
                if let Field::Set(_, line) = raw.interval {
                    self.problem_at_line(
                        "poll.interval",
                        line,
                        format!(
                            "interval ({}) is longer than the default max_interval ({}): set max_interval too, or lower interval",
                            format_duration(interval),
                            format_duration(DEFAULT_MAX_INTERVAL)
                        ),
                    );
                }
                None
            }
            (other, _) => other.or(DEFAULT_MAX_INTERVAL),
        };
        if let Some(max) = max_interval {
            poll.max_interval = max;
        }
        match (&raw.max_backoff, min_interval) {
            (Field::Set(max, line), Some(min)) if *max < min => self.problem_at_line(
                "poll.max_backoff",
                *line,
                format!(
                    "max_backoff ({}) is shorter than min_interval ({}): raise max_backoff or lower min_interval",
                    format_duration(*max),
                    format_duration(min)
                ),
            ),
            (Field::Set(max, _), _) => poll.max_backoff = *max,
            (Field::Missing, Some(min)) if DEFAULT_MAX_BACKOFF < min => {
                if let Field::Set(_, line) = raw.min_interval
                    && !self.reported("poll.min_interval")
                {
                    self.problem_at_line(
                        "poll.min_interval",
                        line,
                        format!(
                            "min_interval ({}) is longer than the default max_backoff ({}): set max_backoff too, or lower min_interval",
                            format_duration(min),
                            format_duration(DEFAULT_MAX_BACKOFF)
                        ),
                    );
                }
            }
            _ => {}
        }
        if let Some(adaptive) = raw.adaptive.or(poll.adaptive) {
            poll.adaptive = adaptive;
        }
        // Zero is a meaningful spacing (none), so unlike the timeouts it is
        // accepted.
        if let Some(spacing) = raw.per_host_spacing.or(poll.per_host_spacing) {
            poll.per_host_spacing = spacing;
        }
        if let Some(c) = self.count(
            "poll.per_host_concurrency",
            &raw.per_host_concurrency,
            MAX_CONCURRENCY,
        ) {
            poll.per_host_concurrency = c;
        }
        for (key, field, slot) in [
            ("poll.timeout", &raw.timeout, &mut poll.timeout),
            (
                "poll.connect_timeout",
                &raw.connect_timeout,
                &mut poll.connect_timeout,
            ),
        ] {
            match field {
                Field::Set(d, line) if d.is_zero() => {
                    self.problem_at_line(key, *line, "must be longer than 0s");
                }
                Field::Set(d, _) => *slot = *d,
                _ => {}
            }
        }
        if let Some(c) = self.count("poll.concurrency", &raw.concurrency, MAX_CONCURRENCY) {
            poll.concurrency = c;
        }
        match raw.max_body {
            Field::Set(n, line) if n < MIN_MAX_BODY => self.problem_at_line(
                "poll.max_body",
                line,
                format!("must be at least 1KB (1000 bytes), got {n} bytes"),
            ),
            Field::Set(n, _) => poll.max_body = n,
            _ => {}
        }
        if let Field::Set(agent, _) = &raw.user_agent {
            poll.user_agent = agent.clone();
        }
        max_interval
    }

    fn validate_extract(&mut self, raw: &RawExtract, extract: &mut ExtractConfig) {
        if let Some(full_text) = raw.full_text.or(extract.full_text) {
            extract.full_text = full_text;
        }
        if let Some(n) = self.count("extract.max_attempts", &raw.max_attempts, MAX_MAX_ATTEMPTS) {
            // The range check keeps it far below u32::MAX.
            extract.max_attempts = n as u32;
        }
        if let Some(c) = self.count("extract.concurrency", &raw.concurrency, MAX_CONCURRENCY) {
            extract.concurrency = c;
        }
    }

    /// A limit where 0 means "no limit": None for 0, the value when it is
    /// in range, or a problem.
    fn limit(&mut self, key: &str, field: &Field<i64>, default: Option<usize>) -> Option<usize> {
        match *field {
            Field::Missing => default,
            Field::Invalid => None,
            Field::Set(0, _) => None,
            Field::Set(n, line) => match usize::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem_at_line(
                        key,
                        line,
                        format!("must be 0 (no limit) or more, got {n}"),
                    );
                    None
                }
            },
        }
    }

    fn validate_retention(&mut self, raw: &RawRetention, retention: &mut RetentionConfig) {
        // "0s" and 0 turn a limit off.
        let off_if_zero = |d: Duration| (!d.is_zero()).then_some(d);
        if let Some(d) = raw.max_age.or(DEFAULT_MAX_AGE) {
            retention.max_age = off_if_zero(d);
        }
        if !matches!(raw.max_entries_per_feed, Field::Invalid) {
            retention.max_entries_per_feed = self.limit(
                "retention.max_entries_per_feed",
                &raw.max_entries_per_feed,
                Some(DEFAULT_MAX_ENTRIES_PER_FEED),
            );
        }
        match raw.max_database_size {
            Field::Set(n, line) if n != 0 && n < MIN_MAX_DATABASE_SIZE => self.problem_at_line(
                "retention.max_database_size",
                line,
                format!(
                    "must be 0 (no cap) or at least 1MB, got {n} bytes: a smaller database cannot hold even its indexes"
                ),
            ),
            Field::Set(n, _) => retention.max_database_size = (n != 0).then_some(n),
            _ => {}
        }
        if let Some(d) = raw.tombstone_max_age.or(DEFAULT_TOMBSTONE_MAX_AGE) {
            retention.tombstone_max_age = off_if_zero(d);
        }
        if !matches!(raw.max_tombstones, Field::Invalid) {
            retention.max_tombstones = self.limit(
                "retention.max_tombstones",
                &raw.max_tombstones,
                Some(DEFAULT_MAX_TOMBSTONES),
            );
        }
        // Tombstones are what keep purged entries out, but they must not
        // grow without bound themselves.
        let age_off = matches!(raw.tombstone_max_age, Field::Set(d, _) if d.is_zero());
        let count_off = matches!(raw.max_tombstones, Field::Set(0, _));
        if age_off && count_off {
            let Field::Set(_, line) = raw.max_tombstones else {
                return;
            };
            self.problem_at_line(
                "retention.max_tombstones",
                line,
                "tombstones must be bounded: tombstone_max_age is \"0s\" too; set one of them above zero",
            );
        }
        match raw.housekeeping_interval {
            Field::Set(d, line) if d < MIN_MIN_INTERVAL => self.problem_at_line(
                "retention.housekeeping_interval",
                line,
                format!("must be at least 1s, got {}", format_duration(d)),
            ),
            Field::Set(d, _) => retention.housekeeping_interval = d,
            _ => {}
        }
    }

    fn validate_feeds(
        &mut self,
        raw: Vec<RawFeed>,
        min_interval: Option<Duration>,
        max_interval: Option<Duration>,
    ) -> Vec<FeedSpec> {
        // URL → (index, line) of its first appearance.
        let mut seen: std::collections::HashMap<String, (usize, usize)> =
            std::collections::HashMap::new();
        let mut feeds = Vec::with_capacity(raw.len());
        for feed in raw {
            let i = feed.index;
            let url = match feed.url {
                Field::Set(url, line) => {
                    if let Some((first, first_line)) = seen.get(&url) {
                        self.problem_at_line(
                            &format!("feed[{i}].url"),
                            line,
                            format!(
                                "duplicate feed url \"{url}\": already listed as feed[{first}] on line {first_line}"
                            ),
                        );
                    } else {
                        seen.insert(url.clone(), (i, line));
                    }
                    url
                }
                Field::Missing => {
                    self.problem_at_line(
                        &format!("feed[{i}].url"),
                        feed.line,
                        "missing: every [[feed]] needs url = \"https://…\"",
                    );
                    continue;
                }
                Field::Invalid => continue,
            };
            let interval = match (feed.interval, min_interval, max_interval) {
                (Field::Set(d, line), Some(min), _) if d < min => {
                    self.problem_at_line(
                        &format!("feed[{i}].interval"),
                        line,
                        format!(
                            "interval ({}) is shorter than poll.min_interval ({}): raise it or lower poll.min_interval",
                            format_duration(d),
                            format_duration(min)
                        ),
                    );
                    None
                }
                (Field::Set(d, line), _, Some(max)) if d > max => {
                    self.problem_at_line(
                        &format!("feed[{i}].interval"),
                        line,
                        format!(
                            "interval ({}) is longer than poll.max_interval ({}): lower it or raise poll.max_interval",
                            format_duration(d),
                            format_duration(max)
                        ),
                    );
                    None
                }
                (Field::Set(d, _), _, _) => Some(d),
                _ => None,
            };
            let title = match feed.title {
                Field::Set(title, _) => Some(title),
                _ => None,
            };
            let tags = match feed.tags {
                Field::Set(tags, _) => tags,
                _ => Vec::new(),
            };
            let full_text = match feed.full_text {
                Field::Set(full_text, _) => Some(full_text),
                _ => None,
            };
            feeds.push(FeedSpec {
                url,
                title,
                tags,
                interval,
                full_text,
            });
        }
        feeds
    }

    fn validate_sites(&mut self, raw: Vec<RawSite>) -> Vec<SiteRule> {
        // Host → (index, line) of its first appearance.
        let mut seen: std::collections::HashMap<String, (usize, usize)> =
            std::collections::HashMap::new();
        let mut sites = Vec::with_capacity(raw.len());
        for site in raw {
            let i = site.index;
            let host = match site.host {
                Field::Set(host, line) => {
                    if let Some((first, first_line)) = seen.get(&host) {
                        self.problem_at_line(
                            &format!("site[{i}].host"),
                            line,
                            format!(
                                "duplicate site host \"{host}\": already listed as site[{first}] on line {first_line}; merge the two [[site]] tables"
                            ),
                        );
                    } else {
                        seen.insert(host.clone(), (i, line));
                    }
                    Some(host)
                }
                Field::Missing => {
                    self.problem_at_line(
                        &format!("site[{i}].host"),
                        site.line,
                        "missing: every [[site]] needs host = \"example.com\"",
                    );
                    None
                }
                Field::Invalid => None,
            };
            // A bad selector was reported already; an empty rule is not
            // worth reporting on top of it.
            let (Some(keep), Some(drop)) = (site.keep.or(Vec::new()), site.drop.or(Vec::new()))
            else {
                continue;
            };
            if keep.is_empty() && drop.is_empty() && !site.unknown_key {
                self.problem_at_line(
                    &format!("site[{i}]"),
                    site.line,
                    "a [[site]] needs keep or drop selectors (or both), e.g. keep = [\"article\"] or drop = [\".comments\"]",
                );
                continue;
            }
            if let Some(host) = host {
                sites.push(SiteRule { host, keep, drop });
            }
        }
        sites
    }

    fn validate_outputs(
        &mut self,
        raw: Vec<RawOutput>,
        max_page_size: Option<usize>,
    ) -> Vec<OutputSpec> {
        // Name → (index, line) of its first appearance.
        let mut seen: std::collections::HashMap<String, (usize, usize)> =
            std::collections::HashMap::new();
        let mut outputs = Vec::with_capacity(raw.len());
        for output in raw {
            let i = output.index;
            let limit = match output.limit {
                Field::Set(n, line) => match usize::try_from(n) {
                    Ok(limit) if limit >= 1 && max_page_size.is_none_or(|max| limit <= max) => {
                        Some(limit)
                    }
                    _ => {
                        let upper = match max_page_size {
                            Some(max) => format!("server.max_page_size ({max})"),
                            None => "server.max_page_size".to_owned(),
                        };
                        self.problem_at_line(
                            &format!("output[{i}].limit"),
                            line,
                            format!("must be between 1 and {upper}, got {n}"),
                        );
                        None
                    }
                },
                _ => None,
            };
            let name = match output.name {
                Field::Set(name, line) => {
                    if let Some((first, first_line)) = seen.get(&name) {
                        self.problem_at_line(
                            &format!("output[{i}].name"),
                            line,
                            format!(
                                "duplicate output name \"{name}\": already used by output[{first}] on line {first_line}; give each [[output]] its own name"
                            ),
                        );
                    } else {
                        seen.insert(name.clone(), (i, line));
                    }
                    name
                }
                Field::Missing => {
                    self.problem_at_line(
                        &format!("output[{i}].name"),
                        output.line,
                        "missing: every [[output]] needs name = \"…\", e.g. name = \"rust\" to serve it at /o/rust.atom",
                    );
                    continue;
                }
                Field::Invalid => continue,
            };
            let title = match output.title {
                Field::Set(title, _) => Some(title),
                _ => None,
            };
            let tags = match output.tags {
                Field::Set(tags, _) => tags,
                _ => Vec::new(),
            };
            let feeds = match output.feeds {
                Field::Set(feeds, _) => feeds,
                _ => Vec::new(),
            };
            let include = match output.include {
                Field::Set(include, _) => Some(include),
                _ => None,
            };
            let exclude = match output.exclude {
                Field::Set(exclude, _) => Some(exclude),
                _ => None,
            };
            outputs.push(OutputSpec {
                name,
                title,
                tags,
                feeds,
                include,
                exclude,
                limit,
            });
        }
        outputs
    }
}

/// An absolute http(s) URL with a host.
fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| {
        format!("invalid URL \"{s}\": {e}; write it in full, e.g. https://example.com/feed.xml")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid URL \"{s}\": only http and https URLs are supported"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL \"{s}\": it has no host"));
    }
    Ok(url)
}

/// `[server] websub_hub`: an absolute http(s) URL without a fragment.
fn parse_websub_hub(s: &str) -> Result<Url, String> {
    if let Err(e) = Url::parse(s.trim()) {
        return Err(format!(
            "invalid URL \"{s}\": {e}; write the hub's address in full, e.g. {WEBSUB_HUB_EXAMPLE}"
        ));
    }
    let url = parse_http_url(s)?;
    if url.fragment().is_some() {
        return Err(format!(
            "invalid URL \"{s}\": a hub URL cannot have a fragment (#…)"
        ));
    }
    Ok(url)
}

/// The `name` of an `[[output]]`: 1 to [`MAX_OUTPUT_NAME_LEN`] characters
/// of `a-z`, `0-9`, `-` and `_`, so it can stand in a URL as it is.
fn parse_output_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let invalid = |why: String| {
        Err(format!(
            "invalid output name \"{s}\": {why}; {OUTPUT_NAME_HINT}"
        ))
    };
    if !name.chars().all(allowed) {
        // Uppercase is the likely slip; name the first other character
        // when there is one, else suggest the lowercase spelling.
        let lowercase = name.to_ascii_lowercase();
        return match lowercase.chars().find(|&c| !allowed(c)) {
            Some(bad) => invalid(format!("{bad:?} is not allowed")),
            None => invalid(format!(
                "uppercase letters are not allowed, write \"{lowercase}\""
            )),
        };
    }
    if name.len() > MAX_OUTPUT_NAME_LEN {
        return invalid(format!(
            "it is {} characters long, at most {MAX_OUTPUT_NAME_LEN} are allowed",
            name.len()
        ));
    }
    Ok(name.to_owned())
}

/// An `include` or `exclude` regular expression, kept as written (spaces
/// matter in a regex, so it is not trimmed); compiling it here means a typo
/// is a config error, not a filter that silently never matches.
fn parse_regex(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(
            "must not be empty: an empty regex matches every entry; leave the key out instead"
                .to_owned(),
        );
    }
    match regex::Regex::new(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!(
            "invalid regex \"{s}\": {}",
            describe_regex_error(&e.to_string())
        )),
    }
}

/// The gist of a `regex` error in one line. A syntax error spans several
/// lines (the pattern, a `^` under the fault, then `error: <what>`); only
/// the `<what>` is kept, since a config message is one line and already
/// quotes the pattern.
fn describe_regex_error(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .or(lines.first().copied())
        .unwrap_or("it does not compile")
        .to_owned()
}

/// One item of `[network] allow`: a network (`192.168.1.0/24`), a single
/// address (`10.0.0.5`, `::1`) or a host name (`nas.local`).
fn parse_allow_rule(s: &str) -> Result<AllowRule, String> {
    let text = s.trim();
    // A URL is a host name written wrongly, not a network with a prefix.
    if text.contains('/') && !text.contains("://") {
        return text
            .parse::<ipnet::IpNet>()
            .map(|net| AllowRule::Net(net.trunc()))
            .map_err(|_| {
                format!(
                    "invalid network \"{s}\": write an address and a prefix length, e.g. \"192.168.1.0/24\" or \"fd00::/8\""
                )
            });
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(AllowRule::Net(ip.into()));
    }
    parse_host_name(
        s,
        "nas.local",
        "list each host name, or allow a network such as \"192.168.1.0/24\"",
    )
    .map(AllowRule::Host)
}

/// The `host` of a `[[site]]`.
fn parse_site_host(s: &str) -> Result<String, String> {
    if s.trim().starts_with('.') {
        return Err(format!(
            "invalid host \"{s}\": write it without the leading dot; \"example.com\" already covers its subdomains"
        ));
    }
    parse_host_name(
        s,
        "example.com",
        "write \"example.com\", which already covers its subdomains",
    )
}

/// A bare host name such as `example.com`, lowercased, without a trailing
/// dot, internationalised names in their `xn--` form. The error is a
/// complete message; it spells `example` as the correct form and gives
/// `wildcard_hint` for a `*`.
fn parse_host_name(s: &str, example: &str, wildcard_hint: &str) -> Result<String, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let invalid = |why: String| Err(format!("invalid host \"{s}\": {why}"));
    if let Some((scheme, _)) = text.split_once("://") {
        return invalid(format!(
            "write only the host name, without \"{scheme}://\", e.g. \"{example}\""
        ));
    }
    if text.contains('/') {
        return invalid(format!(
            "write only the host name, without a path, e.g. \"{example}\""
        ));
    }
    if text.contains(':') {
        return invalid(format!(
            "write only the host name, without a port, e.g. \"{example}\""
        ));
    }
    if text.contains('*') {
        return invalid(format!("wildcards are not supported: {wildcard_hint}"));
    }
    let text = text.strip_suffix('.').unwrap_or(text);
    let host = match url::Host::parse(text) {
        Ok(url::Host::Domain(domain)) => domain,
        Ok(ip) => return Ok(ip.to_string()),
        Err(_) => {
            return invalid(format!(
                "not a valid host name; write it as e.g. \"{example}\""
            ));
        }
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return invalid(format!(
            "not a valid host name: use letters, digits, hyphens and dots, e.g. \"{example}\""
        ));
    }
    Ok(host)
}

/// A CSS selector as the article cleaner will use it; compiling it here
/// means a typo is a config error, not a rule that silently never matches.
fn parse_selector(s: &str) -> Result<String, String> {
    match dom_query::Matcher::new(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!(
            "invalid CSS selector \"{s}\": {}; {SELECTOR_HINT}",
            describe_selector_error(&format!("{:?}", e.kind))
        )),
    }
}

/// Turns the `Debug` form of a selector parse error
/// (`Custom(UnsupportedPseudoClassOrElement)`,
/// `Basic(UnexpectedToken(Delim('!')))`) into words ("unsupported pseudo
/// class or element", "unexpected token Delim('!')"): the selector crates
/// give their errors no `Display`.
fn describe_selector_error(debug: &str) -> String {
    let inner = ["Basic(", "Custom("]
        .iter()
        .find_map(|wrapper| debug.strip_prefix(wrapper)?.strip_suffix(')'))
        .unwrap_or(debug);
    let (name, detail) = match inner.split_once('(') {
        Some((name, rest)) => (name, rest.strip_suffix(')').unwrap_or(rest)),
        None => (inner, ""),
    };
    let mut words = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() && !words.is_empty() {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    if words == "end of input" {
        "it ends too early".to_owned()
    } else if detail.is_empty() {
        words
    } else {
        format!("{words} {detail}")
    }
}

/// How a value's type is named in messages.
fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The known key closest to `key`, if it is close enough to be a likely
/// typo (`intervall`, `base-url`, `Title`).
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let normalised = key.to_lowercase().replace('-', "_");
    known
        .iter()
        .map(|&k| (edit_distance(&normalised, k), k))
        .filter(|&(d, k)| d <= 2 && d * 2 <= k.len().max(normalised.len()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counted in chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses a duration such as `30s`, `15m`, `1h`, `1d`, `1h30m` or `500ms`.
///
/// A duration is one or more `<integer><unit>` parts, summed; spaces between
/// parts are allowed. Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d`. A number
/// without a unit, a fraction, a sign or an unknown unit is an error. The
/// error is a complete message (`invalid duration "5x": write it as …`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration \"{s}\": {DURATION_HINT}");
    let text = s.trim();
    if text.starts_with('-') {
        return Err(format!("invalid duration \"{s}\": must not be negative"));
    }
    if text.is_empty() {
        return Err(invalid());
    }
    let too_large = || format!("invalid duration \"{s}\": too large");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits_end].parse().map_err(|_| too_large())?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_end] {
            "ns" => Some(Duration::from_nanos(n)),
            "us" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(60 * 60).map(Duration::from_secs),
            "d" => n.checked_mul(24 * 60 * 60).map(Duration::from_secs),
            _ => return Err(invalid()),
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or_else(too_large)?;
        rest = rest[unit_end..].trim_start();
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, largest units
/// first: 5400s → `1h30m`, 90s → `1m30s`, 0 → `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// Parses a size such as `10MB`, `512KB`, `1GB`, `1MiB` or a plain number of
/// bytes (`1048576`).
///
/// Decimal units are powers of 1000 (`KB`, `MB`, `GB`, `TB`), binary units
/// powers of 1024 (`KiB`, `MiB`, `GiB`, `TiB`); `B` is bytes. Units are
/// case-insensitive and may follow a space. The error is a complete message.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size \"{s}\": {SIZE_HINT}");
    let text = s.trim();
    if text.starts_with('-') {
        return Err(format!("invalid size \"{s}\": must not be negative"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(invalid());
    }
    let too_large = || format!("invalid size \"{s}\": too large");
    let n: u64 = text[..digits_end].parse().map_err(|_| too_large())?;
    let multiplier: u64 = match text[digits_end..]
        .trim_start()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    n.checked_mul(multiplier).ok_or_else(too_large)
}

/// A byte count for people, in decimal units with one decimal: `1.5 MB`,
/// `830 KB`, `12 B`. For display; [`parse_size`] reads whole numbers only.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "KB"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            let tenths = (n as u128 * 10 + size as u128 / 2) / size as u128;
            return match tenths % 10 {
                0 => format!("{} {unit}", tenths / 10),
                t => format!("{}.{t} {unit}", tenths / 10),
            };
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `toml` as if it were `/etc/tributary/tributary.toml`, with
    /// no `STATE_DIRECTORY`.
    fn load(toml: &str) -> Result<Config, ConfigError> {
        from_toml_with_env(toml, Some(Path::new("/etc/tributary/tributary.toml")), None)
    }

    fn ok(toml: &str) -> Config {
        match load(toml) {
            Ok(config) => config,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn problems(toml: &str) -> Vec<Problem> {
        match load(toml) {
            Ok(config) => panic!("expected problems, got {config:#?}"),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("expected ConfigError::Invalid, got {e:?}"),
        }
    }

    /// Asserts that `toml` has exactly one problem, at `key` on `line`, and
    /// returns its message for further checks.
    #[track_caller]
    fn check_err(toml: &str, key: &str, line: usize) -> String {
        let problems = problems(toml);
        assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
        let p = &problems[0];
        assert_eq!(
            (p.key.as_str(), p.line),
            (key, Some(line)),
            "wrong key or line for problem: {}",
            p.message
        );
        p.message.clone()
    }

    #[test]
    fn empty_file_gives_every_default() {
        let config = ok("");
        assert_eq!(
            config.path.as_deref(),
            Some(Path::new("/etc/tributary/tributary.toml"))
        );
        assert_eq!(config.database, Path::new("/etc/tributary/tributary.db"));
        let server = &config.server;
        assert_eq!(server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(server.base_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(server.title, "Tributary");
        assert_eq!(server.page_size, 50);
        assert_eq!(server.max_page_size, 500);
        assert_eq!(server.websub_hub, None);
        let poll = &config.poll;
        assert_eq!(poll.interval, Duration::from_secs(3600));
        assert_eq!(poll.min_interval, Duration::from_secs(300));
        assert_eq!(poll.timeout, Duration::from_secs(30));
        assert_eq!(poll.connect_timeout, Duration::from_secs(10));
        assert_eq!(poll.concurrency, 8);
        assert_eq!(poll.max_body, 10_000_000);
        assert_eq!(poll.user_agent, DEFAULT_USER_AGENT);
        assert!(poll.adaptive);
        assert_eq!(poll.max_interval, Duration::from_secs(86_400));
        assert_eq!(poll.max_backoff, Duration::from_secs(86_400));
        assert_eq!(poll.per_host_concurrency, 1);
        assert_eq!(poll.per_host_spacing, Duration::from_secs(1));
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(config.network.allow.is_empty());
        assert!(config.extract.full_text);
        assert_eq!(config.extract.max_attempts, 4);
        assert_eq!(config.extract.concurrency, 4);
        let retention = &config.retention;
        assert_eq!(retention.max_age, Some(Duration::from_secs(180 * 86_400)));
        assert_eq!(retention.max_entries_per_feed, Some(1_000));
        assert_eq!(retention.max_database_size, Some(1_000_000_000));
        assert_eq!(
            retention.tombstone_max_age,
            Some(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(retention.max_tombstones, Some(500_000));
        assert_eq!(retention.housekeeping_interval, Duration::from_secs(86_400));
        assert!(config.feeds.is_empty());
        assert!(config.sites.is_empty());
        assert!(config.outputs.is_empty());

        // default_for is what an empty file gives (modulo the environment,
        // which only affects `database`).
        let default = defaults(Some(Path::new("/etc/tributary/tributary.toml")), None);
        assert_eq!(config, default);
    }

    #[test]
    fn default_user_agent_names_version_and_project() {
        assert_eq!(
            DEFAULT_USER_AGENT,
            format!(
                "Tributary/{} (+{})",
                env!("CARGO_PKG_VERSION"),
                DEFAULT_USER_AGENT_PROJECT_URL
            )
        );
    }

    #[test]
    fn every_key_is_parsed() {
        let config = ok(r#"
database = "data/feeds.db"

[server]
listen = "0.0.0.0:9000"
base_url = "https://feeds.example.com/river/"
title = "  My River  "
page_size = 20
max_page_size = 100
websub_hub = " https://hub.example.com/publish?x=1 "

[poll]
interval = "2h"
min_interval = "1s"
timeout = "1m"
connect_timeout = "5s"
concurrency = 16
max_body = "5MiB"
user_agent = "MyBot/1.0"
adaptive = false
max_interval = "12h"
max_backoff = "6h"
per_host_concurrency = 2
per_host_spacing = "250ms"

[log]
level = "info,tributary=debug"
format = "json"

[network]
allow = ["192.168.1.7/24", "fd00::/8", "10.0.0.5", "::1", " NAS.Local. ", "nas.local"]

[extract]
full_text = false
max_attempts = 7
concurrency = 2

[[feed]]
url = "https://blog.rust-lang.org/feed.xml"
title = "Rust Blog"
tags = [" rust ", "lang", "rust"]
interval = "30m"
full_text = true

[[feed]]
url = "HTTPS://LWN.net/headlines/rss"

[[site]]
host = "Example.COM"
keep = ["article .post-body", "main"]
drop = [".comments", "div#share > a"]

[[site]]
host = "lwn.net."
drop = ["table.Form"]

[[output]]
name = "rust-news_2"
title = "  Rust news  "
tags = [" rust ", "lang", "rust"]
feeds = ["HTTPS://Blog.Rust-Lang.org/feed.xml", "https://lwn.net", "https://lwn.net/"]
include = '(?i)\b(rust|cargo)\b'
exclude = ' sponsored '
limit = 100

[[output]]
name = "all"
"#);
        assert_eq!(config.database, Path::new("/etc/tributary/data/feeds.db"));
        assert_eq!(
            config.server,
            ServerConfig {
                listen: "0.0.0.0:9000".parse().unwrap(),
                base_url: Url::parse("https://feeds.example.com/river").unwrap(),
                title: "My River".into(),
                page_size: 20,
                max_page_size: 100,
                websub_hub: Some(Url::parse("https://hub.example.com/publish?x=1").unwrap()),
            }
        );
        assert_eq!(
            config.poll,
            PollConfig {
                interval: Duration::from_secs(7200),
                min_interval: Duration::from_secs(1),
                timeout: Duration::from_secs(60),
                connect_timeout: Duration::from_secs(5),
                concurrency: 16,
                max_body: 5 * 1024 * 1024,
                user_agent: "MyBot/1.0".into(),
                adaptive: false,
                max_interval: Duration::from_secs(12 * 3600),
                max_backoff: Duration::from_secs(6 * 3600),
                per_host_concurrency: 2,
                per_host_spacing: Duration::from_millis(250),
            }
        );
        assert_eq!(
            config.log,
            LogConfig {
                level: "info,tributary=debug".into(),
                format: LogFormat::Json
            }
        );
        assert_eq!(
            config.feeds,
            vec![
                FeedSpec {
                    url: "https://blog.rust-lang.org/feed.xml".into(),
                    title: Some("Rust Blog".into()),
                    tags: vec!["rust".into(), "lang".into()],
                    interval: Some(Duration::from_secs(1800)),
                    full_text: Some(true),
                },
                FeedSpec {
                    url: "https://lwn.net/headlines/rss".into(),
                    title: None,
                    tags: vec![],
                    interval: None,
                    full_text: None,
                },
            ]
        );
        let net = |s: &str| AllowRule::Net(s.parse().unwrap());
        assert_eq!(
            config.network.allow,
            vec![
                net("192.168.1.0/24"),
                net("fd00::/8"),
                net("10.0.0.5/32"),
                net("::1/128"),
                AllowRule::Host("nas.local".into()),
            ]
        );
        assert_eq!(
            config.extract,
            ExtractConfig {
                full_text: false,
                max_attempts: 7,
                concurrency: 2,
            }
        );
        assert_eq!(
            config.sites,
            vec![
                SiteRule {
                    host: "example.com".into(),
                    keep: vec!["article .post-body".into(), "main".into()],
                    drop: vec![".comments".into(), "div#share > a".into()],
                },
                SiteRule {
                    host: "lwn.net".into(),
                    keep: vec![],
                    drop: vec!["table.Form".into()],
                },
            ]
        );
        assert_eq!(
            config.outputs,
            vec![
                OutputSpec {
                    name: "rust-news_2".into(),
                    title: Some("Rust news".into()),
                    tags: vec!["rust".into(), "lang".into()],
                    // Normalised like [[feed]] urls, duplicates dropped.
                    feeds: vec![
                        "https://blog.rust-lang.org/feed.xml".into(),
                        "https://lwn.net/".into(),
                    ],
                    include: Some(r"(?i)\b(rust|cargo)\b".into()),
                    // Spaces matter in a regex: kept as written.
                    exclude: Some(" sponsored ".into()),
                    limit: Some(100),
                },
                OutputSpec {
                    name: "all".into(),
                    title: None,
                    tags: vec![],
                    feeds: vec![],
                    include: None,
                    exclude: None,
                    limit: None,
                },
            ]
        );
    }

    #[test]
    fn base_url_defaults_to_listen_and_loses_trailing_slash() {
        let config = ok("[server]\nlisten = \"[::1]:8081\"\n");
        assert_eq!(config.server.base_url.as_str(), "http://[::1]:8081/");

        let base = |s: &str| {
            ok(&format!("[server]\nbase_url = \"{s}\"\n"))
                .server
                .base_url
                .to_string()
        };
        assert_eq!(base("https://example.com"), "https://example.com/");
        assert_eq!(base("https://example.com/"), "https://example.com/");
        assert_eq!(base("https://example.com/a/b/"), "https://example.com/a/b");
        assert_eq!(base("https://example.com/a//"), "https://example.com/a");
    }

    #[test]
    fn url_for_joins_without_double_or_missing_slashes() {
        let server = |s: &str| ok(&format!("[server]\nbase_url = \"{s}\"\n")).server;
        let root = server("https://example.com/");
        assert_eq!(root.url_for("atom.xml"), "https://example.com/atom.xml");
        assert_eq!(root.url_for("/atom.xml"), "https://example.com/atom.xml");
        let sub = server("https://example.com/river/");
        assert_eq!(
            sub.url_for("atom.xml"),
            "https://example.com/river/atom.xml"
        );
        assert_eq!(
            sub.url_for("/atom.xml"),
            "https://example.com/river/atom.xml"
        );
    }

    #[test]
    fn small_max_page_size_lowers_default_page_size() {
        let config = ok("[server]\nmax_page_size = 10\n");
        assert_eq!(config.server.page_size, 10);
        assert_eq!(config.server.max_page_size, 10);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let msg = check_err("database = \"x.db\"\nfeeds = []\n", "feeds", 2);
        assert!(msg.contains("did you mean \"feed\"?"), "{msg}");

        let msg = check_err(
            "[server]\nlisten = \"127.0.0.1:1\"\nbase-url = \"http://x\"\n",
            "server.base-url",
            3,
        );
        assert!(msg.contains("did you mean \"base_url\"?"), "{msg}");

        let msg = check_err(
            "[[feed]]\nurl = \"https://a.example/\"\n\n[[feed]]\nurl = \"https://b.example/\"\ntag = [\"x\"]\n",
            "feed[1].tag",
            6,
        );
        assert!(msg.contains("did you mean \"tags\"?"), "{msg}");

        let msg = check_err("[server]\nuser_agent = \"x\"\n", "server.user_agent", 2);
        assert!(msg.contains("belongs in [poll]"), "{msg}");

        let msg = check_err("[log]\nwhatever = 1\n", "log.whatever", 2);
        assert!(msg.contains("known keys are level, format"), "{msg}");

        let msg = check_err(
            "[[output]]\nname = \"a\"\n\n[[output]]\nname = \"b\"\ntagz = [\"x\"]\n",
            "output[1].tagz",
            6,
        );
        assert!(
            msg.contains("unknown key \"tagz\": did you mean \"tags\"?"),
            "{msg}"
        );
        let msg = check_err(
            "[[output]]\nname = \"a\"\nfeed = [\"https://a.example/\"]\n",
            "output[0].feed",
            3,
        );
        assert!(msg.contains("did you mean \"feeds\"?"), "{msg}");
        let msg = check_err(
            "[[output]]\nname = \"a\"\nfull_text = true\n",
            "output[0].full_text",
            3,
        );
        assert!(msg.contains("belongs in [extract] or [[feed]]"), "{msg}");
        let msg = check_err("outputs = []\n", "outputs", 1);
        assert!(msg.contains("did you mean \"output\"?"), "{msg}");
        let msg = check_err(
            "[server]\nwebsub_hubs = \"https://hub.example/\"\n",
            "server.websub_hubs",
            2,
        );
        assert!(msg.contains("did you mean \"websub_hub\"?"), "{msg}");
        let msg = check_err(
            "[[output]]\nname = \"a\"\nwebsub_hub = \"https://hub.example/\"\n",
            "output[0].websub_hub",
            3,
        );
        assert!(msg.contains("belongs in [server]"), "{msg}");

        let msg = check_err("\n[extract]\nenabled = true\n", "extract.enabled", 3);
        assert!(
            msg.contains("known keys are full_text, max_attempts, concurrency"),
            "{msg}"
        );
        let msg = check_err("[network]\nallowed = []\n", "network.allowed", 2);
        assert!(msg.contains("did you mean \"allow\"?"), "{msg}");
        let msg = check_err(
            "[[site]]\nhost = \"a.example\"\nkeeps = [\"p\"]\n",
            "site[0].keeps",
            3,
        );
        assert!(msg.contains("did you mean \"keep\"?"), "{msg}");
        let msg = check_err("[poll]\nmax_attempts = 3\n", "poll.max_attempts", 2);
        assert!(msg.contains("belongs in [extract]"), "{msg}");
        let msg = check_err("sites = []\n", "sites", 1);
        assert!(msg.contains("did you mean \"site\"?"), "{msg}");
    }

    // One case per line: a table reads better than rustfmt's layout.
    #[rustfmt::skip]
    #[test]
    fn wrong_types_are_reported() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("database = 1", "database", 1, "expected a string, found an integer"),
            ("server = 1", "server", 1, "expected a table ([server])"),
            ("[server]\npage_size = \"10\"", "server.page_size", 2, "expected an integer, found a string"),
            ("[server]\nmax_page_size = 1.5", "server.max_page_size", 2, "found a float"),
            ("[poll]\nconcurrency = true", "poll.concurrency", 2, "found a boolean"),
            ("[poll]\ninterval = 3600", "poll.interval", 2, "\"3600s\""),
            ("[poll]\nmax_body = [1]", "poll.max_body", 2, "found an array"),
            ("[log]\nformat = 1979-05-27", "log.format", 2, "found a datetime"),
            ("[feed]\nurl = \"https://a.example/\"", "feed", 1, "[[feed]], not [feed]"),
            ("feed = [1]", "feed[0]", 1, "expected a table"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntags = \"rust\"", "feed[0].tags", 3, "[\"rust\"]"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntags = [\"ok\", 2]", "feed[0].tags[1]", 3, "found an integer"),
            ("[poll]\nadaptive = \"yes\"", "poll.adaptive", 2, "expected a boolean, found a string: write true or false without quotes, not \"yes\""),
            ("[poll]\nadaptive = 1", "poll.adaptive", 2, "expected a boolean (true or false), found an integer"),
            ("[poll]\nper_host_concurrency = \"2\"", "poll.per_host_concurrency", 2, "expected an integer, found a string"),
            ("[poll]\nper_host_spacing = 1", "poll.per_host_spacing", 2, "\"1s\""),
            ("[poll]\nmax_interval = 86400", "poll.max_interval", 2, "\"86400s\""),
            ("[poll]\nmax_backoff = true", "poll.max_backoff", 2, "found a boolean"),
            ("network = 1", "network", 1, "expected a table ([network])"),
            ("[network]\nallow = \"10.0.0.0/8\"", "network.allow", 2, "[\"10.0.0.0/8\"]"),
            ("[network]\nallow = [\"10.0.0.0/8\", 10]", "network.allow[1]", 2, "expected a string, found an integer"),
            ("extract = \"yes\"", "extract", 1, "expected a table ([extract])"),
            ("[extract]\nfull_text = \"false\"", "extract.full_text", 2, "without quotes"),
            ("[extract]\nmax_attempts = 2.5", "extract.max_attempts", 2, "found a float"),
            ("[extract]\nconcurrency = \"4\"", "extract.concurrency", 2, "found a string"),
            ("[[feed]]\nurl = \"https://a.example/\"\nfull_text = 0", "feed[0].full_text", 3, "found an integer"),
            ("[site]\nhost = \"a.example\"", "site", 1, "write each site as [[site]], not [site]"),
            ("site = [1]", "site[0]", 1, "expected a table"),
            ("site = 1", "site", 1, "expected an array of tables ([[site]])"),
            ("[[site]]\nhost = 1\nkeep = [\"p\"]", "site[0].host", 2, "expected a string"),
            ("[[site]]\nhost = \"a.example\"\nkeep = \"article\"", "site[0].keep", 3, "write it as [\"article\"]"),
            ("[[site]]\nhost = \"a.example\"\ndrop = [[\"p\"]]", "site[0].drop[0]", 3, "found an array"),
            ("[server]\nwebsub_hub = true", "server.websub_hub", 2, "expected a string, found a boolean"),
            ("[output]\nname = \"a\"", "output", 1, "write each output as [[output]], not [output]"),
            ("output = [1]", "output[0]", 1, "expected a table"),
            ("output = \"all\"", "output", 1, "expected an array of tables ([[output]])"),
            ("[[output]]\nname = 1", "output[0].name", 2, "expected a string, found an integer"),
            ("[[output]]\nname = \"a\"\ntitle = 1", "output[0].title", 3, "expected a string"),
            ("[[output]]\nname = \"a\"\ntags = \"rust\"", "output[0].tags", 3, "write it as [\"rust\"]"),
            ("[[output]]\nname = \"a\"\ntags = [\"ok\", 2]", "output[0].tags[1]", 3, "found an integer"),
            ("[[output]]\nname = \"a\"\nfeeds = \"https://a.example/\"", "output[0].feeds", 3, "write it as [\"https://a.example/\"]"),
            ("[[output]]\nname = \"a\"\nfeeds = [{ url = \"x\" }]", "output[0].feeds[0]", 3, "found a table"),
            ("[[output]]\nname = \"a\"\ninclude = [\"rust\"]", "output[0].include", 3, "expected a string, found an array"),
            ("[[output]]\nname = \"a\"\nexclude = 1", "output[0].exclude", 3, "expected a string, found an integer"),
            ("[[output]]\nname = \"a\"\nlimit = \"20\"", "output[0].limit", 3, "expected an integer, found a string"),
            ("[[output]]\nname = \"a\"\nlimit = 2.5", "output[0].limit", 3, "found a float"),
        ];
        for &(toml, key, line, needle) in cases {
            let msg = check_err(toml, key, line);
            assert!(msg.contains(needle), "{toml:?}: {msg:?} lacks {needle:?}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn bad_values_are_reported() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("database = \" \"", "database", 1, "must not be empty"),
            ("[server]\nlisten = \"localhost:8080\"", "server.listen", 2, "HOST:PORT"),
            ("[server]\nlisten = \"127.0.0.1\"", "server.listen", 2, "invalid listen address"),
            ("[server]\nbase_url = \"example.com\"", "server.base_url", 2, "invalid URL"),
            ("[server]\nbase_url = \"ftp://example.com\"", "server.base_url", 2, "only http and https"),
            ("[server]\nbase_url = \"https://example.com/?a=1\"", "server.base_url", 2, "query"),
            ("[server]\ntitle = \"\"", "server.title", 2, "must not be empty"),
            ("[server]\npage_size = 0", "server.page_size", 2, "between 1 and max_page_size (500)"),
            ("[server]\npage_size = 600", "server.page_size", 2, "got 600"),
            ("[server]\nmax_page_size = 0", "server.max_page_size", 2, "at least 1"),
            ("[server]\nmax_page_size = 10\npage_size = 11", "server.page_size", 3, "max_page_size (10)"),
            ("[poll]\ninterval = \"5x\"", "poll.interval", 2, "invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m"),
            ("[poll]\ntimeout = \"-5s\"", "poll.timeout", 2, "negative"),
            ("[poll]\ntimeout = \"0s\"", "poll.timeout", 2, "longer than 0s"),
            ("[poll]\nconnect_timeout = \"\"", "poll.connect_timeout", 2, "invalid duration"),
            ("[poll]\nmin_interval = \"500ms\"", "poll.min_interval", 2, "at least 1s"),
            ("[poll]\nconcurrency = 0", "poll.concurrency", 2, "between 1 and 1024"),
            ("[poll]\nconcurrency = 1025", "poll.concurrency", 2, "between 1 and 1024"),
            ("[poll]\nconcurrency = 99999999999999999999", "poll.concurrency", 2, "too large"),
            ("[poll]\nmax_body = \"10XB\"", "poll.max_body", 2, "invalid size \"10XB\""),
            ("[poll]\nmax_body = \"999B\"", "poll.max_body", 2, "at least 1KB"),
            ("[poll]\nmax_body = -1", "poll.max_body", 2, "negative"),
            ("[poll]\nuser_agent = \"\"", "poll.user_agent", 2, "must not be empty"),
            ("[log]\nlevel = \"\"", "log.level", 2, "must not be empty"),
            ("[log]\nformat = \"xml\"", "log.format", 2, "\"text\" or \"json\""),
            ("[[feed]]\nurl = \"not a url\"", "feed[0].url", 2, "invalid URL"),
            ("[[feed]]\nurl = \"file:///etc/passwd\"", "feed[0].url", 2, "only http and https"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntitle = \" \"", "feed[0].title", 3, "must not be empty"),
            ("[[feed]]\nurl = \"https://a.example/\"\ntags = [\"\"]", "feed[0].tags[0]", 3, "must not be empty"),
            ("\n[[feed]]\ntitle = \"x\"", "feed[0].url", 2, "missing"),
            ("[[feed]]\nurl = \"https://a.example/\"\ninterval = \"2d\"", "feed[0].interval", 3, "interval (2d) is longer than poll.max_interval (1d)"),
            ("[poll]\nmax_interval = \"30m\"", "poll.max_interval", 2, "max_interval (30m) is shorter than interval (1h)"),
            ("[poll]\nmax_interval = \"0s\"", "poll.max_interval", 2, "max_interval (0s) is shorter than interval (1h)"),
            ("[poll]\nmax_interval = \"1x\"", "poll.max_interval", 2, "invalid duration"),
            ("[poll]\nmax_backoff = \"1m\"", "poll.max_backoff", 2, "max_backoff (1m) is shorter than min_interval (5m)"),
            ("[poll]\nmax_backoff = \"-1m\"", "poll.max_backoff", 2, "negative"),
            ("[poll]\nper_host_concurrency = 0", "poll.per_host_concurrency", 2, "between 1 and 1024, got 0"),
            ("[poll]\nper_host_concurrency = 1025", "poll.per_host_concurrency", 2, "between 1 and 1024, got 1025"),
            ("[poll]\nper_host_concurrency = -1", "poll.per_host_concurrency", 2, "got -1"),
            ("[poll]\nper_host_spacing = \"soon\"", "poll.per_host_spacing", 2, "invalid duration \"soon\""),
            ("[extract]\nmax_attempts = 0", "extract.max_attempts", 2, "between 1 and 20, got 0"),
            ("[extract]\nmax_attempts = 21", "extract.max_attempts", 2, "between 1 and 20, got 21"),
            ("[extract]\nconcurrency = 0", "extract.concurrency", 2, "between 1 and 1024, got 0"),
            ("[extract]\nconcurrency = 2000", "extract.concurrency", 2, "between 1 and 1024, got 2000"),
            ("[network]\nallow = [\"10.0.0.0/33\"]", "network.allow[0]", 2, "invalid network \"10.0.0.0/33\": write an address and a prefix length, e.g. \"192.168.1.0/24\""),
            ("[network]\nallow = [\"192.168.1/24\"]", "network.allow[0]", 2, "invalid network"),
            ("[network]\nallow = [\"fd00::/x\"]", "network.allow[0]", 2, "invalid network"),
            ("[network]\nallow = [\"10.0.0.0/8\",\n  \"nas.local/24\"]", "network.allow[1]", 3, "invalid network"),
            ("[network]\nallow = [\" \"]", "network.allow[0]", 2, "must not be empty"),
            ("[network]\nallow = [\"http://nas.local\"]", "network.allow[0]", 2, "without \"http://\", e.g. \"nas.local\""),
            ("[network]\nallow = [\"nas.local:8080\"]", "network.allow[0]", 2, "without a port"),
            ("[network]\nallow = [\"*.local\"]", "network.allow[0]", 2, "wildcards are not supported: list each host name"),
            ("[network]\nallow = [\"nas local\"]", "network.allow[0]", 2, "not a valid host name"),
            ("[network]\nallow = [\"a..b\"]", "network.allow[0]", 2, "not a valid host name"),
            ("[network]\nallow = [\"10.0.0.256\"]", "network.allow[0]", 2, "not a valid host name"),
            ("[[site]]\nhost = \"https://example.com/\"\nkeep = [\"p\"]", "site[0].host", 2, "write only the host name, without \"https://\", e.g. \"example.com\""),
            ("[[site]]\nhost = \"example.com/blog\"\nkeep = [\"p\"]", "site[0].host", 2, "without a path"),
            ("[[site]]\nhost = \"example.com:8443\"\nkeep = [\"p\"]", "site[0].host", 2, "without a port"),
            ("[[site]]\nhost = \".example.com\"\nkeep = [\"p\"]", "site[0].host", 2, "already covers its subdomains"),
            ("[[site]]\nhost = \"*.example.com\"\nkeep = [\"p\"]", "site[0].host", 2, "wildcards are not supported"),
            ("[[site]]\nhost = \"\"\nkeep = [\"p\"]", "site[0].host", 2, "must not be empty"),
            ("\n[[site]]\nkeep = [\"p\"]", "site[0].host", 2, "missing: every [[site]] needs host"),
            ("[[site]]\nhost = \"a.example\"\nkeep = [\"article\", \"div[\"]", "site[0].keep[1]", 3, "invalid CSS selector \"div[\""),
            ("[[site]]\nhost = \"a.example\"\ndrop = [\"p:frobnicate\"]", "site[0].drop[0]", 3, "invalid CSS selector \"p:frobnicate\""),
            ("[[site]]\nhost = \"a.example\"\ndrop = [\"\"]", "site[0].drop[0]", 3, "must not be empty"),
            ("\n[[site]]\nhost = \"a.example\"", "site[0]", 2, "needs keep or drop selectors"),
            ("[[site]]\nhost = \"a.example\"\nkeep = []\ndrop = []", "site[0]", 1, "needs keep or drop selectors"),
            ("[server]\nwebsub_hub = \"hub.example.com\"", "server.websub_hub", 2, "invalid URL \"hub.example.com\": relative URL without a base; write the hub's address in full, e.g. https://pubsubhubbub.appspot.com/"),
            ("[server]\nwebsub_hub = \"\"", "server.websub_hub", 2, "invalid URL"),
            ("[server]\nwebsub_hub = \"ftp://hub.example.com/\"", "server.websub_hub", 2, "only http and https"),
            ("[server]\nwebsub_hub = \"https://hub.example.com/#x\"", "server.websub_hub", 2, "cannot have a fragment"),
            ("\n[[output]]\ntitle = \"x\"", "output[0].name", 2, "missing: every [[output]] needs name = \"…\""),
            ("[[output]]\nname = \"\"", "output[0].name", 2, "must not be empty"),
            ("[[output]]\nname = \"Rust\"", "output[0].name", 2, "invalid output name \"Rust\": uppercase letters are not allowed, write \"rust\"; a name is 1 to 64 characters of a-z, 0-9, \"-\" and \"_\""),
            ("[[output]]\nname = \"rust news\"", "output[0].name", 2, "' ' is not allowed; a name is 1 to 64 characters of a-z, 0-9, \"-\" and \"_\""),
            ("[[output]]\nname = \"a/b\"", "output[0].name", 2, "'/' is not allowed"),
            ("[[output]]\nname = \"rust.atom\"", "output[0].name", 2, "'.' is not allowed"),
            ("[[output]]\nname = \"café\"", "output[0].name", 2, "'é' is not allowed"),
            ("[[output]]\nname = \"Rust News\"", "output[0].name", 2, "' ' is not allowed"),
            ("[[output]]\nname = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "output[0].name", 2, "it is 65 characters long, at most 64 are allowed"),
            ("[[output]]\nname = \"a\"\ntitle = \" \"", "output[0].title", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\ntags = [\" \"]", "output[0].tags[0]", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\nfeeds = [\"lwn.net/headlines/rss\"]", "output[0].feeds[0]", 3, "invalid URL \"lwn.net/headlines/rss\""),
            ("[[output]]\nname = \"a\"\nfeeds = [\"https://a.example/\",\n  \"file:///etc/passwd\"]", "output[0].feeds[1]", 4, "only http and https"),
            ("[[output]]\nname = \"a\"\nfeeds = [\"\"]", "output[0].feeds[0]", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\ninclude = \"(rust\"", "output[0].include", 3, "invalid regex \"(rust\": unclosed group"),
            ("[[output]]\nname = \"a\"\nexclude = \"[a-\"", "output[0].exclude", 3, "invalid regex \"[a-\": unclosed character class"),
            ("[[output]]\nname = \"a\"\ninclude = \"\"", "output[0].include", 3, "must not be empty"),
            ("[[output]]\nname = \"a\"\nexclude = ''", "output[0].exclude", 3, "leave the key out instead"),
            ("[[output]]\nname = \"a\"\nlimit = 0", "output[0].limit", 3, "must be between 1 and server.max_page_size (500), got 0"),
            ("[[output]]\nname = \"a\"\nlimit = 501", "output[0].limit", 3, "must be between 1 and server.max_page_size (500), got 501"),
            ("[[output]]\nname = \"a\"\nlimit = -1", "output[0].limit", 3, "got -1"),
            ("[server]\nmax_page_size = 20\n\n[[output]]\nname = \"a\"\nlimit = 21", "output[0].limit", 6, "server.max_page_size (20), got 21"),
            ("[[output]]\nname = \"a\"\nlimit = 99999999999999999999", "output[0].limit", 3, "too large"),
        ];
        for &(toml, key, line, needle) in cases {
            let msg = check_err(toml, key, line);
            assert!(msg.contains(needle), "{toml:?}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn output_names_parse() {
        let long = "a".repeat(MAX_OUTPUT_NAME_LEN);
        let cases = [
            ("rust", "rust"),
            (" rust ", "rust"),
            ("a", "a"),
            ("0", "0"),
            ("rust-news_2", "rust-news_2"),
            ("-", "-"),
            ("_all", "_all"),
            (long.as_str(), long.as_str()),
        ];
        for (s, want) in cases {
            assert_eq!(parse_output_name(s).as_deref(), Ok(want), "{s:?}");
        }
        let cases = [
            ("", "must not be empty"),
            ("  ", "must not be empty"),
            ("Rust", "uppercase letters are not allowed, write \"rust\""),
            (
                "RUST-News",
                "uppercase letters are not allowed, write \"rust-news\"",
            ),
            ("Rust News", "' ' is not allowed"),
            ("rust.atom", "'.' is not allowed"),
            ("a/b", "'/' is not allowed"),
            ("a%20b", "'%' is not allowed"),
            ("über", "'ü' is not allowed"),
            ("a\tb", "'\\t' is not allowed"),
        ];
        for (s, needle) in cases {
            let err = parse_output_name(s).unwrap_err();
            assert!(err.contains(needle), "{s:?}: {err:?} lacks {needle:?}");
            if !s.trim().is_empty() {
                assert!(err.ends_with(OUTPUT_NAME_HINT), "{err}");
            }
        }
        let too_long = "a".repeat(MAX_OUTPUT_NAME_LEN + 1);
        let err = parse_output_name(&too_long).unwrap_err();
        assert!(
            err.contains("it is 65 characters long, at most 64 are allowed"),
            "{err}"
        );
    }

    #[test]
    fn regexes_are_compiled() {
        for good in [
            "rust",
            r"(?i)\b(rust|cargo)\b",
            "^\\[Sponsored\\]",
            " ",
            "a|b|c",
            r"\p{Greek}+",
            "(?x) rust  # a comment",
        ] {
            assert_eq!(parse_regex(good).as_deref(), Ok(good), "{good:?}");
        }
        let cases = [
            ("(rust", "unclosed group"),
            ("rust)", "unopened group"),
            ("[a-", "unclosed character class"),
            ("*rust", "repetition operator missing expression"),
            ("a{2,1}", "invalid repetition count range"),
            (r"\p{Nope}", "Unicode property not found"),
            (r"(a)\1", "backreferences are not supported"),
            ("(?P<n>a)(?P<n>b)", "duplicate capture group name"),
            ("a\n(b", "unclosed group"),
        ];
        for (bad, needle) in cases {
            let err = parse_regex(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid regex \"{bad}\": ")),
                "{err}"
            );
            assert!(err.contains(needle), "{bad:?}: {err:?} lacks {needle:?}");
            // One line after the quoted pattern, without the regex crate's
            // "regex parse error:" banner or its ^ marker.
            let after = &err[format!("invalid regex \"{bad}\": ").len()..];
            assert!(!after.contains('\n'), "{err:?}");
            assert!(!after.contains("regex parse error"), "{err:?}");
            assert!(!after.contains('^'), "{err:?}");
        }
        // A pattern that compiles too big says so in one line.
        let err = parse_regex(r"\w{1000}{1000}").unwrap_err();
        assert!(err.contains("size limit"), "{err}");
        assert!(!err.contains('\n'), "{err:?}");
    }

    #[test]
    fn regex_errors_read_as_one_line() {
        let cases = [
            (
                "regex parse error:\n    (rust\n    ^\nerror: unclosed group",
                "unclosed group",
            ),
            (
                "Compiled regex exceeds size limit of 10485760 bytes.",
                "Compiled regex exceeds size limit of 10485760 bytes.",
            ),
            ("\n  something odd  \n", "something odd"),
            ("", "it does not compile"),
        ];
        for (message, want) in cases {
            assert_eq!(describe_regex_error(message), want, "{message:?}");
        }
    }

    #[test]
    fn duplicate_output_names_are_reported_at_the_second() {
        let msg = check_err(
            r#"
[[output]]
name = "rust"
tags = ["rust"]

[[output]]
name = "news"

[[output]]
title = "More Rust"
name = " rust "
"#,
            "output[2].name",
            11,
        );
        assert!(
            msg.contains("duplicate output name \"rust\": already used by output[0] on line 3"),
            "{msg}"
        );
        // Names differ from feed titles and tags: no clash across tables.
        let config = ok(
            "[[feed]]\nurl = \"https://a.example/\"\ntitle = \"rust\"\ntags = [\"rust\"]\n\n[[output]]\nname = \"rust\"\ntags = [\"rust\"]\n",
        );
        assert_eq!(config.outputs.len(), 1);
    }

    #[test]
    fn output_limits_follow_max_page_size() {
        let limit = |toml: &str| ok(toml).outputs[0].limit;
        let cases = [
            ("[[output]]\nname = \"a\"\n", None),
            ("[[output]]\nname = \"a\"\nlimit = 1\n", Some(1)),
            ("[[output]]\nname = \"a\"\nlimit = 500\n", Some(500)),
            (
                "[server]\nmax_page_size = 1000\n\n[[output]]\nname = \"a\"\nlimit = 1000\n",
                Some(1000),
            ),
            (
                "[server]\nmax_page_size = 10\n\n[[output]]\nname = \"a\"\nlimit = 10\n",
                Some(10),
            ),
        ];
        for (toml, want) in cases {
            assert_eq!(limit(toml), want, "{toml}");
        }
        // An invalid max_page_size is not used to judge limits: only it is
        // reported.
        check_err(
            "[server]\nmax_page_size = 0\n\n[[output]]\nname = \"a\"\nlimit = 600\n",
            "server.max_page_size",
            2,
        );
        check_err(
            "[server]\nmax_page_size = \"big\"\n\n[[output]]\nname = \"a\"\nlimit = 600\n",
            "server.max_page_size",
            2,
        );
        // Without a known ceiling a limit must still be at least 1.
        let found =
            problems("[server]\nmax_page_size = \"big\"\n\n[[output]]\nname = \"a\"\nlimit = 0\n");
        let got: Vec<(&str, Option<usize>, &str)> = found
            .iter()
            .map(|p| (p.key.as_str(), p.line, p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "server.max_page_size",
                    Some(2),
                    "expected an integer, found a string"
                ),
                (
                    "output[0].limit",
                    Some(6),
                    "must be between 1 and server.max_page_size, got 0"
                ),
            ]
        );
    }

    #[test]
    fn output_title_defaults_to_server_title_and_name() {
        let config = ok(
            "[server]\ntitle = \"My River\"\n\n[[output]]\nname = \"rust\"\n\n[[output]]\nname = \"linux\"\ntitle = \"Penguins\"\n",
        );
        let titles: Vec<String> = config
            .outputs
            .iter()
            .map(|o| config.server.output_title(o))
            .collect();
        assert_eq!(titles, ["My River: rust", "Penguins"]);
        let config = ok("[[output]]\nname = \"all\"\n");
        assert_eq!(
            config.server.output_title(&config.outputs[0]),
            "Tributary: all"
        );
    }

    #[test]
    fn every_output_problem_is_reported_in_line_order() {
        // One [[output]] with a problem on every key, then a duplicate name:
        // all are reported, each with its key and line.
        let toml = r#"
[[output]]
name = "Bad Name"
title = ""
tags = "rust"
feeds = ["https://ok.example/", "not a url"]
include = "(oops"
exclude = "[z-a]"
limit = 0
colour = "blue"

[[output]]
name = "ok"

[[output]]
include = "fine"
limit = 9999

[[output]]
name = "ok"
"#;
        let got: Vec<(String, Option<usize>)> = problems(toml)
            .into_iter()
            .map(|p| (p.key, p.line))
            .collect();
        let want = [
            ("output[0].name", 3),
            ("output[0].title", 4),
            ("output[0].tags", 5),
            ("output[0].feeds[1]", 6),
            ("output[0].include", 7),
            ("output[0].exclude", 8),
            ("output[0].limit", 9),
            ("output[0].colour", 10),
            ("output[2].name", 15),
            ("output[2].limit", 17),
            ("output[3].name", 20),
        ];
        let want: Vec<(String, Option<usize>)> =
            want.iter().map(|&(k, l)| (k.to_owned(), Some(l))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn interval_must_not_undercut_min_interval() {
        let msg = check_err(
            "[poll]\nmin_interval = \"10m\"\ninterval = \"5m\"\n",
            "poll.interval",
            3,
        );
        assert!(msg.contains("shorter than min_interval (10m)"), "{msg}");

        // With interval left at its default, the key to fix is the floor.
        check_err("[poll]\nmin_interval = \"2h\"\n", "poll.min_interval", 2);

        let msg = check_err(
            "[poll]\nmin_interval = \"1m\"\n\n[[feed]]\nurl = \"https://a.example/\"\ninterval = \"30s\"\n",
            "feed[0].interval",
            6,
        );
        assert!(msg.contains("shorter than poll.min_interval (1m)"), "{msg}");

        // The default floor (5m) applies when min_interval is not set.
        check_err(
            "[[feed]]\nurl = \"https://a.example/\"\ninterval = \"1m\"\n",
            "feed[0].interval",
            3,
        );
    }

    #[test]
    fn interval_ceilings() {
        // max_interval is compared with interval, both values named.
        let msg = check_err(
            "[poll]\ninterval = \"2h\"\nmax_interval = \"90m\"\n",
            "poll.max_interval",
            3,
        );
        assert!(
            msg.contains("max_interval (1h30m) is shorter than interval (2h)"),
            "{msg}"
        );
        // Equal is fine, and a long interval needs a long enough ceiling.
        let config = ok("[poll]\ninterval = \"2d\"\nmax_interval = \"2d\"\n");
        assert_eq!(config.poll.max_interval, Duration::from_secs(2 * 86_400));
        // With max_interval left at its default, the key to fix is interval.
        let msg = check_err("[poll]\ninterval = \"2d\"\n", "poll.interval", 2);
        assert!(
            msg.contains("longer than the default max_interval (1d)"),
            "{msg}"
        );

        // max_backoff is compared with min_interval.
        let msg = check_err(
            "[poll]\nmin_interval = \"10m\"\nmax_backoff = \"5m\"\n",
            "poll.max_backoff",
            3,
        );
        assert!(
            msg.contains("max_backoff (5m) is shorter than min_interval (10m)"),
            "{msg}"
        );
        let config = ok("[poll]\nmin_interval = \"10m\"\nmax_backoff = \"10m\"\n");
        assert_eq!(config.poll.max_backoff, Duration::from_secs(600));
        let msg = check_err(
            "[poll]\nmin_interval = \"2d\"\ninterval = \"3d\"\nmax_interval = \"3d\"\n",
            "poll.min_interval",
            2,
        );
        assert!(
            msg.contains("longer than the default max_backoff (1d)"),
            "{msg}"
        );
        // A min_interval already blamed for the default interval is not
        // blamed again for the default max_backoff.
        let msg = check_err("[poll]\nmin_interval = \"2d\"\n", "poll.min_interval", 2);
        assert!(msg.contains("default interval"), "{msg}");

        // A feed's own interval stays within both bounds.
        let msg = check_err(
            "[poll]\nmax_interval = \"6h\"\n\n[[feed]]\nurl = \"https://a.example/\"\ninterval = \"7h\"\n",
            "feed[0].interval",
            6,
        );
        assert!(msg.contains("longer than poll.max_interval (6h)"), "{msg}");
        // An invalid max_interval is not used to judge feeds.
        check_err(
            "[poll]\nmax_interval = \"soon\"\n\n[[feed]]\nurl = \"https://a.example/\"\ninterval = \"7d\"\n",
            "poll.max_interval",
            2,
        );
    }

    #[test]
    fn per_host_spacing_accepts_zero() {
        let spacing = |s: &str| {
            ok(&format!("[poll]\nper_host_spacing = \"{s}\"\n"))
                .poll
                .per_host_spacing
        };
        assert_eq!(spacing("0s"), Duration::ZERO);
        assert_eq!(spacing("0ms"), Duration::ZERO);
        assert_eq!(spacing("2s500ms"), Duration::from_millis(2500));
        // Unlike a timeout, where zero is an error.
        check_err("[poll]\ntimeout = \"0s\"\n", "poll.timeout", 2);
    }

    #[test]
    fn booleans_and_counts_at_their_bounds() {
        let config = ok(
            "[poll]\nadaptive = false\nper_host_concurrency = 1024\n\n[extract]\nfull_text = false\nmax_attempts = 20\nconcurrency = 1\n",
        );
        assert!(!config.poll.adaptive);
        assert_eq!(config.poll.per_host_concurrency, 1024);
        assert!(!config.extract.full_text);
        assert_eq!(config.extract.max_attempts, 20);
        assert_eq!(config.extract.concurrency, 1);
        assert_eq!(ok("[extract]\nmax_attempts = 1\n").extract.max_attempts, 1);
    }

    #[test]
    fn feed_full_text_overrides_extract_full_text() {
        let toml = |global: &str, feed: &str| {
            format!(
                "[extract]\nfull_text = {global}\n\n[[feed]]\nurl = \"https://a.example/\"\n{feed}\n"
            )
        };
        let cases = [
            ("true", "", None, true),
            ("false", "", None, false),
            ("true", "full_text = false", Some(false), false),
            ("false", "full_text = true", Some(true), true),
        ];
        for (global, feed, want_spec, want) in cases {
            let config = ok(&toml(global, feed));
            let spec = &config.feeds[0];
            assert_eq!(spec.full_text, want_spec, "{global} {feed}");
            assert_eq!(config.extract.full_text_for(spec), want, "{global} {feed}");
        }
    }

    #[test]
    fn allow_rules() {
        let config = ok(r#"
[network]
allow = ["192.168.1.0/24", "fd00::/8", "10.0.0.5", "::1", "NAS.local", "[fe80::1]"]
"#);
        let network = &config.network;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ips = [
            ("192.168.1.1", true),
            ("192.168.1.255", true),
            ("192.168.2.1", false),
            ("10.0.0.5", true),
            ("10.0.0.6", false),
            ("::1", true),
            ("::2", false),
            ("fd12:3456::1", true),
            ("fe80::1", true),
            ("fe80::2", false),
            ("127.0.0.1", false),
            // The IPv4-mapped spelling of an allowed IPv4 address.
            ("::ffff:192.168.1.9", true),
            ("::ffff:10.0.0.6", false),
        ];
        for (s, want) in ips {
            assert_eq!(network.allows_ip(ip(s)), want, "allows_ip({s})");
        }
        let hosts = [
            ("nas.local", true),
            ("NAS.LOCAL", true),
            ("nas.local.", true),
            ("www.nas.local", false),
            ("nas.local.evil.example", false),
            ("nas", false),
            ("example.com", false),
            // IP literals, as a URL spells them, go through allows_ip.
            ("10.0.0.5", true),
            ("10.0.0.6", false),
            ("[::1]", true),
            ("[::2]", false),
        ];
        for (host, want) in hosts {
            assert_eq!(network.allows_host(host), want, "allows_host({host})");
        }

        // Nothing is allowed by default.
        let empty = ok("").network;
        assert!(!empty.allows_ip(ip("127.0.0.1")));
        assert!(!empty.allows_host("localhost"));
        // A name is a name, even one that resolves to loopback.
        let localhost = ok("[network]\nallow = [\"localhost\"]\n").network;
        assert!(localhost.allows_host("LocalHost"));
        assert!(!localhost.allows_ip(ip("127.0.0.1")));
    }

    #[test]
    fn allow_items_parse() {
        let net = |s: &str| AllowRule::Net(s.parse().unwrap());
        let cases = [
            ("192.168.1.0/24", net("192.168.1.0/24")),
            ("192.168.1.77/24", net("192.168.1.0/24")),
            (" 10.0.0.5 ", net("10.0.0.5/32")),
            ("::1", net("::1/128")),
            ("[::1]", net("::1/128")),
            ("FD00::/8", net("fd00::/8")),
            ("0.0.0.0/0", net("0.0.0.0/0")),
            ("Nas.Local", AllowRule::Host("nas.local".into())),
            ("printer", AllowRule::Host("printer".into())),
            (
                "bücher.local",
                AllowRule::Host("xn--bcher-kva.local".into()),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_allow_rule(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn site_hosts_parse() {
        let cases = [
            ("example.com", "example.com"),
            (" Example.COM. ", "example.com"),
            ("blog.example.co.uk", "blog.example.co.uk"),
            ("my_site.example", "my_site.example"),
            ("bücher.example", "xn--bcher-kva.example"),
        ];
        for (s, want) in cases {
            assert_eq!(parse_site_host(s).as_deref(), Ok(want), "{s:?}");
        }
        for bad in [
            "http://example.com",
            "example.com/",
            "example.com:80",
            "exa mple.com",
            "-",
            ".",
            "example..com",
        ] {
            assert!(parse_site_host(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn selectors_are_compiled() {
        for good in [
            "article",
            ".post-body",
            "div#content > p",
            "main article, .entry-content",
            "p:first-child",
            "a[href^=\"https://twitter.com\"]",
            "ul li:nth-child(2n+1)",
            "div:has(> img)",
        ] {
            assert_eq!(parse_selector(good).as_deref(), Ok(good), "{good:?}");
        }
        for bad in ["div[", "p:frobnicate", "> p", "#", "a,,b", "!", "div..x"] {
            let err = parse_selector(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid CSS selector \"{bad}\": ")),
                "{err}"
            );
            assert!(err.ends_with(SELECTOR_HINT), "{err}");
        }
    }

    #[test]
    fn selector_errors_read_as_words() {
        let cases = [
            (
                "Custom(UnsupportedPseudoClassOrElement)",
                "unsupported pseudo class or element",
            ),
            (
                "Basic(UnexpectedToken(Delim('!')))",
                "unexpected token Delim('!')",
            ),
            ("Basic(EndOfInput)", "it ends too early"),
            ("Something", "something"),
        ];
        for (debug, want) in cases {
            assert_eq!(describe_selector_error(debug), want);
        }
    }

    #[test]
    fn duplicate_site_hosts_are_reported_at_the_second() {
        let msg = check_err(
            r#"
[[site]]
host = "example.com"
keep = ["article"]

[[site]]
host = "lwn.net"
drop = [".ads"]

[[site]]
host = "Example.COM."
drop = [".comments"]
"#,
            "site[2].host",
            11,
        );
        assert!(msg.contains("already listed as site[0] on line 3"), "{msg}");

        // A subdomain is a different site: its rule is more specific.
        let config = ok(
            "[[site]]\nhost = \"example.com\"\nkeep = [\"article\"]\n\n[[site]]\nhost = \"blog.example.com\"\nkeep = [\"main\"]\n",
        );
        assert_eq!(config.sites.len(), 2);
    }

    #[test]
    fn a_bad_selector_is_not_also_an_empty_site() {
        // Only the selector is reported, not "needs keep or drop" too.
        check_err(
            "[[site]]\nhost = \"a.example\"\nkeep = [\"div[\"]\n",
            "site[0].keep[0]",
            3,
        );
        // Every bad selector is reported, each on its line.
        let got: Vec<(String, Option<usize>)> = problems(
            "[[site]]\nhost = \"a.example\"\nkeep = [\n  \"div[\",\n  \"article\",\n  \"p:nope\",\n]\ndrop = [\"!\"]\n",
        )
        .into_iter()
        .map(|p| (p.key, p.line))
        .collect();
        let want = [
            ("site[0].keep[0]", 4),
            ("site[0].keep[2]", 6),
            ("site[0].drop[0]", 8),
        ];
        let want: Vec<(String, Option<usize>)> =
            want.iter().map(|&(k, l)| (k.to_owned(), Some(l))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_invalid_value_is_not_reported_again_by_later_checks() {
        // min_interval is bad; interval must not also be flagged against it.
        check_err(
            "[poll]\nmin_interval = \"soon\"\ninterval = \"1s\"\n",
            "poll.min_interval",
            2,
        );
        // max_page_size is bad; page_size is only checked for >= 1.
        check_err(
            "[server]\nmax_page_size = \"big\"\npage_size = 1000\n",
            "server.max_page_size",
            2,
        );
    }

    #[test]
    fn duplicate_feed_urls_are_reported_at_the_second() {
        let msg = check_err(
            r#"
[[feed]]
url = "https://hnrss.org/frontpage"

[[feed]]
url = "https://lwn.net/headlines/rss"

[[feed]]
url = "https://HNRSS.org/frontpage"
"#,
            "feed[2].url",
            9,
        );
        assert!(msg.contains("already listed as feed[0] on line 3"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_in_line_order() {
        let toml = r#"
[server]
listen = "nowhere"
title = ""

[poll]
interval = "5x"
colour = "blue"

[[feed]]
url = "https://a.example/"

[[feed]]
url = "https://a.example/"
interval = 60
"#;
        let got: Vec<(String, Option<usize>)> = problems(toml)
            .into_iter()
            .map(|p| (p.key, p.line))
            .collect();
        let want = [
            ("server.listen", 3),
            ("server.title", 4),
            ("poll.interval", 7),
            ("poll.colour", 8),
            ("feed[1].url", 14),
            ("feed[1].interval", 15),
        ];
        let want: Vec<(String, Option<usize>)> =
            want.iter().map(|&(k, l)| (k.to_owned(), Some(l))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn display_puts_one_problem_per_line() {
        let err = from_toml_with_env(
            "[poll]\ninterval = \"5x\"\ntimeout = \"0s\"\n",
            Some(Path::new("config/tributary.toml")),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config/tributary.toml:2: poll.interval: invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m\n\
             config/tributary.toml:3: poll.timeout: must be longer than 0s"
        );

        let err = from_toml_with_env("[poll]\ninterval = \"5x\"\n", None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: poll.interval: invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m"
        );
    }

    #[test]
    fn syntax_error_reports_its_line() {
        let found = problems("[server]\nlisten = \"127.0.0.1:1\"\ntitle = \n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].key, "");
        assert_eq!(found[0].line, Some(3));
        assert!(found[0].message.starts_with("invalid TOML: "), "{found:#?}");

        // A key defined twice is a TOML error too.
        let found = problems("[poll]\ninterval = \"1h\"\n\ninterval = \"2h\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, Some(4), "{found:#?}");
    }

    #[test]
    fn read_error_names_the_file() {
        let err = Config::load(Path::new("/nonexistent/tributary.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/tributary.toml: "),
            "{err}"
        );
    }

    #[test]
    fn database_location() {
        let etc = Some(Path::new("/etc/tributary/tributary.toml"));
        let db = |toml: &str, path: Option<&Path>, state: Option<&str>| match from_toml_with_env(
            toml, path, state,
        ) {
            Ok(config) => config.database,
            Err(e) => panic!("{e}"),
        };
        // systemd's StateDirectory wins over the config directory for the
        // default; only the first of several directories is used.
        assert_eq!(
            db("", etc, Some("/var/lib/tributary")),
            Path::new("/var/lib/tributary/tributary.db")
        );
        assert_eq!(
            db("", etc, Some("/var/lib/tributary:/var/lib/other")),
            Path::new("/var/lib/tributary/tributary.db")
        );
        assert_eq!(
            db("", etc, Some("")),
            Path::new("/etc/tributary/tributary.db")
        );
        assert_eq!(db("", etc, None), Path::new("/etc/tributary/tributary.db"));
        // An explicit path wins; relative resolves against the config file.
        let state = Some("/var/lib/tributary");
        assert_eq!(
            db("database = \"x.db\"", etc, state),
            Path::new("/etc/tributary/x.db")
        );
        assert_eq!(
            db("database = \"/srv/x.db\"", etc, state),
            Path::new("/srv/x.db")
        );
        // Without a file, relative means the current directory.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(db("", None, None), cwd.join("tributary.db"));
        assert_eq!(db("database = \"x.db\"", None, None), cwd.join("x.db"));
        assert_eq!(
            db("", Some(Path::new("tributary.toml")), None),
            cwd.join("tributary.db")
        );
        assert_eq!(
            db("", Some(Path::new("config/tributary.toml")), None),
            cwd.join("config/tributary.db")
        );
    }

    #[test]
    fn durations() {
        let secs = Duration::from_secs;
        let cases = [
            ("30s", secs(30)),
            ("15m", secs(900)),
            ("1h", secs(3600)),
            ("1d", secs(86_400)),
            ("1h30m", secs(5400)),
            (" 1h 30m ", secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("0s", Duration::ZERO),
            ("90m", secs(5400)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), Ok(want), "{s:?}");
        }
        for bad in [
            "",
            "  ",
            "5",
            "5x",
            "-5m",
            "1.5h",
            "h",
            "1h30",
            "1 hour",
            "5S",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_duration("5x"),
            Err("invalid duration \"5x\": write it as 30s, 15m, 1h or 1h30m".to_owned())
        );
    }

    #[test]
    fn format_duration_is_the_inverse_of_parse() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(86_400 + 60), "1d1m"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_nanos(1_001_001_001), "1s1ms1us1ns"),
        ];
        for (d, s) in cases {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s), Ok(d), "{s:?}");
        }
        for s in ["30s", "15m", "1h", "1d", "1h30m", "500ms", "2d3h4m5s6ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("10MB", 10_000_000),
            ("512KB", 512_000),
            ("1GB", 1_000_000_000),
            ("1MiB", 1_048_576),
            ("1KiB", 1024),
            ("2GiB", 2 << 30),
            ("1048576", 1_048_576),
            ("100B", 100),
            ("10 mb", 10_000_000),
            ("0", 0),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s), Ok(want), "{s:?}");
        }
        for bad in [
            "",
            "MB",
            "10XB",
            "1.5MB",
            "-1MB",
            "10M",
            "99999999999999999999",
            "20000000TB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn closest_key_suggestions() {
        assert_eq!(closest("intervall", POLL_KEYS), Some("interval"));
        assert_eq!(closest("Title", SERVER_KEYS), Some("title"));
        assert_eq!(closest("min-interval", POLL_KEYS), Some("min_interval"));
        assert_eq!(closest("colour", POLL_KEYS), None);
        assert_eq!(closest("ur", FEED_KEYS), Some("url"));
        assert_eq!(closest("link", FEED_KEYS), None);
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/tributary.toml"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        let config = match from_toml_with_env(&text, Some(path), None) {
            Ok(config) => config,
            Err(e) => panic!("the example config does not load:\n{e}"),
        };
        // Whatever the example shows uncommented must equal the defaults the
        // code uses, so the documentation cannot drift from behaviour.
        let defaults = defaults(Some(path), None);
        assert_eq!(config.server, defaults.server);
        assert_eq!(config.poll, defaults.poll);
        assert_eq!(config.log, defaults.log);
        assert_eq!(config.network, defaults.network);
        assert_eq!(config.extract, defaults.extract);
        assert_eq!(config.retention, defaults.retention);
        // The example [[site]] and [[output]] are commented out: site rules
        // and named outputs are opt-in.
        assert_eq!(config.sites, defaults.sites);
        assert_eq!(config.outputs, defaults.outputs);
        assert_eq!(config.database, path.with_file_name("tributary.db"));
        assert!(config.feeds.len() >= 2, "{:#?}", config.feeds);
        assert!(
            config
                .feeds
                .iter()
                .any(|f| f.url == "https://blog.rust-lang.org/feed.xml")
        );
        assert!(config.feeds.iter().any(|f| !f.tags.is_empty()));

        // And the public entry point agrees.
        assert!(Config::load(path).is_ok());

        // The commented-out examples are valid once uncommented, next to
        // the uncommented rest of the file.
        let uncommented = |header: &str| {
            let block = commented_example(&text, header);
            let full = format!("{text}\n{block}");
            match from_toml_with_env(&full, Some(path), None) {
                Ok(config) => config,
                Err(e) => panic!("the example {header} does not load:\n{e}"),
            }
        };
        let config = uncommented("[[site]]");
        assert_eq!(config.sites.len(), 1, "{:#?}", config.sites);

        // The [[output]] example shows every key: none is left at its
        // default. Its feeds are among the example's feeds.
        let config = uncommented("[[output]]");
        let [output] = config.outputs.as_slice() else {
            panic!("{:#?}", config.outputs);
        };
        assert!(
            output.title.is_some()
                && !output.tags.is_empty()
                && !output.feeds.is_empty()
                && output.include.is_some()
                && output.exclude.is_some()
                && output.limit.is_some(),
            "{output:#?}"
        );
        for url in &output.feeds {
            assert!(config.feeds.iter().any(|f| &f.url == url), "{url}");
        }
        for tag in &output.tags {
            assert!(config.feeds.iter().any(|f| f.tags.contains(tag)), "{tag}");
        }

        // The commented-out websub_hub is valid once uncommented too.
        let hub = text
            .lines()
            .find_map(|l| l.strip_prefix("# websub_hub = "))
            .expect("the example shows websub_hub");
        let config = ok(&format!("[server]\nwebsub_hub = {hub}\n"));
        assert_eq!(
            config.server.websub_hub.as_ref().map(Url::as_str),
            Some("https://pubsubhubbub.appspot.com/")
        );
    }

    /// The commented-out example table `header` (`[[site]]`) of the example
    /// config, uncommented: its `# [[site]]` line and the `# key = value`
    /// lines right after it.
    fn commented_example(text: &str, header: &str) -> String {
        let mut lines = text.lines().skip_while(|l| *l != format!("# {header}"));
        let mut block = String::new();
        if let Some(line) = lines.next() {
            block.push_str(&line[2..]);
            block.push('\n');
        }
        for line in lines.take_while(|l| l.starts_with("# ") && l.contains(" = ")) {
            block.push_str(&line[2..]);
            block.push('\n');
        }
        assert!(block.contains(" = "), "no example {header} found");
        block
    }

    #[test]
    fn every_key_is_documented() {
        let example = include_str!("../config/tributary.toml");
        let readme = include_str!("../README.md");
        for (header, keys) in SECTIONS {
            for key in *keys {
                let row = match *header {
                    // The other top-level keys are tables, documented by
                    // their own keys.
                    "the top level" if *key != "database" => continue,
                    "the top level" => format!("| `{key}` |"),
                    _ => format!("| `{header} {key}` |"),
                };
                assert!(readme.contains(&row), "README.md lacks a row {row}");
                let line = format!("{key} = ");
                assert!(
                    example
                        .lines()
                        .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&line)),
                    "config/tributary.toml does not show {header} {key}"
                );
            }
        }
        // The commented-out tables show each of their own keys, not just a
        // key of the same name elsewhere (`title`, `tags`).
        for (header, keys) in [("[[site]]", SITE_KEYS), ("[[output]]", OUTPUT_KEYS)] {
            let block = commented_example(example, header);
            for key in keys {
                assert!(
                    block.lines().any(|l| l.starts_with(&format!("{key} = "))),
                    "the example {header} in config/tributary.toml does not show {key}"
                );
            }
        }
    }

    #[test]
    fn retention_keys_are_read_and_zero_turns_a_limit_off() {
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        let policy = |max_age,
                      max_entries_per_feed,
                      max_database_size,
                      tombstone_max_age,
                      max_tombstones| {
            RetentionPolicy {
                max_age,
                max_entries_per_feed,
                max_database_size,
                tombstone_max_age,
                max_tombstones,
            }
        };
        let defaults = policy(
            days(180),
            Some(1000),
            Some(1_000_000_000),
            days(365),
            Some(500_000),
        );
        let cases = [
            ("", defaults),
            (
                "max_age = \"30d\"\nmax_entries_per_feed = 50\nmax_database_size = \"2GiB\"\n\
                 tombstone_max_age = \"90d\"\nmax_tombstones = 10",
                policy(days(30), Some(50), Some(2 << 30), days(90), Some(10)),
            ),
            (
                "max_age = \"0s\"\nmax_entries_per_feed = 0\nmax_database_size = 0",
                policy(None, None, None, days(365), Some(500_000)),
            ),
            (
                "tombstone_max_age = \"0s\"",
                RetentionPolicy {
                    tombstone_max_age: None,
                    ..defaults
                },
            ),
            (
                "max_tombstones = 0",
                RetentionPolicy {
                    max_tombstones: None,
                    ..defaults
                },
            ),
        ];
        for (body, expected) in cases {
            let r = ok(&format!("[retention]\n{body}\n")).retention;
            assert_eq!(r.policy(), expected, "{body}");
        }
        let r = ok("[retention]\nhousekeeping_interval = \"6h\"\n").retention;
        assert_eq!(r.housekeeping_interval, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn retention_problems_name_key_and_line() {
        let cases = [
            (
                "max_entries_per_feed = -1",
                "retention.max_entries_per_feed",
                "0 (no limit) or more",
            ),
            (
                "max_database_size = \"512KB\"",
                "retention.max_database_size",
                "at least 1MB",
            ),
            (
                "max_database_size = \"lots\"",
                "retention.max_database_size",
                "invalid size",
            ),
            ("max_age = 30", "retention.max_age", "add quotes and a unit"),
            (
                "housekeeping_interval = \"0s\"",
                "retention.housekeeping_interval",
                "at least 1s",
            ),
            (
                "max_tombstones = -5",
                "retention.max_tombstones",
                "0 (no limit) or more",
            ),
            (
                "max_entries = 5",
                "retention.max_entries",
                "max_entries_per_feed",
            ),
        ];
        for (line, key, needle) in cases {
            let message = check_err(&format!("[retention]\n{line}\n"), key, 2);
            assert!(message.contains(needle), "{line}: {message}");
        }
        // Tombstones must stay bounded by age or count.
        let message = check_err(
            "[retention]\ntombstone_max_age = \"0s\"\nmax_tombstones = 0\n",
            "retention.max_tombstones",
            3,
        );
        assert!(message.contains("bounded"), "{message}");
    }

    #[test]
    fn bytes_are_formatted_for_people() {
        for (n, text) in [
            (0, "0 B"),
            (999, "999 B"),
            (1_000, "1 KB"),
            (1_540_000, "1.5 MB"),
            (1_000_000_000, "1 GB"),
        ] {
            assert_eq!(format_bytes(n), text);
        }
    }
}
