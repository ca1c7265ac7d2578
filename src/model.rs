//! Plain data types that the pipeline stages hand to each other.
//!
//! Nothing in here does I/O or holds a handle (database, HTTP client): a stage
//! takes these values in and gives these values out, which is what lets every
//! stage be tested on its own with fixture data.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A subscription as the operator wrote it: in the config file, on the
/// command line, or in an imported OPML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSpec {
    /// The feed's address; always an absolute http(s) URL.
    pub url: String,
    /// A title chosen by the operator; it wins over the feed's own title.
    pub title: Option<String>,
    /// Free-form labels (from config, `--tag` or OPML folders), used for
    /// filtering outputs.
    pub tags: Vec<String>,
    /// A fixed polling interval for this feed, overriding `[poll] interval`.
    pub interval: Option<Duration>,
    /// Per-feed override of `[extract] full_text` (fetch each new entry's
    /// article page and keep its cleaned text); `None` = follow the global
    /// setting.
    pub full_text: Option<bool>,
    /// How this feed's requests differ from the defaults: its own
    /// User-Agent, headers, credentials or proxy.
    pub request: RequestOptions,
    /// Which of its entries are stored (`keep` and `block`).
    pub rules: EntryRules,
    /// Set for a web page without a feed, read as one by these selectors
    /// (`page = true` with `[feed.select]`).
    pub page: Option<PageRule>,
}

/// How a web page that has no feed is read as one: CSS selectors for its
/// items and, within each item, their parts. Each selector is known to
/// compile when it comes from the config or the command line; the parts
/// that are unset have defaults (see `pipeline::scrape`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PageRule {
    /// Each element it matches is one entry (nested matches belong to the
    /// outermost).
    pub item: String,
    pub title: Option<String>,
    pub link: Option<String>,
    pub date: Option<String>,
    pub summary: Option<String>,
    pub content: Option<String>,
    pub author: Option<String>,
    pub image: Option<String>,
}

impl PageRule {
    /// The parts a rule names, in the order they are documented; `item`
    /// first.
    pub const PARTS: [&'static str; 8] = [
        "item", "title", "link", "date", "summary", "content", "author", "image",
    ];

    /// Each selector that is set, with the part it is for, in
    /// [`PageRule::PARTS`] order.
    pub fn selectors(&self) -> Vec<(&'static str, &str)> {
        let optional = [
            &self.title,
            &self.link,
            &self.date,
            &self.summary,
            &self.content,
            &self.author,
            &self.image,
        ];
        let mut out = vec![("item", self.item.as_str())];
        for (part, value) in Self::PARTS[1..].iter().zip(optional) {
            if let Some(value) = value {
                out.push((part, value.as_str()));
            }
        }
        out
    }

    /// Sets the selector for `part` (one of [`PageRule::PARTS`]); false
    /// for an unknown part.
    pub fn set(&mut self, part: &str, selector: String) -> bool {
        let slot = match part {
            "item" => {
                self.item = selector;
                return true;
            }
            "title" => &mut self.title,
            "link" => &mut self.link,
            "date" => &mut self.date,
            "summary" => &mut self.summary,
            "content" => &mut self.content,
            "author" => &mut self.author,
            "image" => &mut self.image,
            _ => return false,
        };
        *slot = Some(selector);
        true
    }

    /// The rule as the store keeps it.
    pub fn to_json(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The rule the store kept; None when the column is empty or
    /// unreadable (the feed then polls as a feed, and says what it got).
    pub fn from_json(json: Option<&str>) -> Option<PageRule> {
        json.and_then(|j| serde_json::from_str::<PageRule>(j).ok())
            .filter(|rule| !rule.item.is_empty())
    }
}

/// Which of a feed's entries are stored, from `[[feed]] keep` and
/// `block`. Patterns are `regex` syntax, known to compile when they come
/// from the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EntryRules {
    /// When there are any, an entry is stored only if one matches.
    pub keep: Vec<EntryRule>,
    /// An entry that one of these matches is not stored; block wins.
    pub block: Vec<EntryRule>,
}

/// A regular expression on one part of an entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryRule {
    pub field: RuleField,
    pub pattern: String,
}

/// The part of an entry a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleField {
    Title,
    /// The content as the feed gave it (HTML source).
    Content,
    /// Any one of the authors.
    Author,
    /// Any one of the categories.
    Categories,
}

impl RuleField {
    pub const ALL: [(&'static str, RuleField); 4] = [
        ("title", RuleField::Title),
        ("content", RuleField::Content),
        ("author", RuleField::Author),
        ("categories", RuleField::Categories),
    ];
}

impl EntryRules {
    pub fn is_empty(&self) -> bool {
        self.keep.is_empty() && self.block.is_empty()
    }

    /// The rules as the store keeps them: None when there are none.
    pub fn to_json(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// The rules the store kept; none when the column is empty or
    /// unreadable.
    pub fn from_json(json: Option<&str>) -> EntryRules {
        json.and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    }
}

/// Per-feed (or per-site) request options. The headers and credentials are
/// secrets: they go only to the origin they were given for, and `Debug`
/// shows that they are set, never what they are, so no log can leak them.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RequestOptions {
    /// Replaces `[poll] user_agent`, on every request of the fetch.
    pub user_agent: Option<String>,
    /// Extra headers (`Cookie`, an API key), name and value as written;
    /// names are valid header names, values valid header values.
    pub headers: Vec<(String, String)>,
    /// HTTP Basic credentials; a password never comes without a username.
    pub username: Option<String>,
    pub password: Option<String>,
    /// An http(s) proxy every request of this feed goes through.
    pub proxy: Option<String>,
}

impl RequestOptions {
    /// The options as the store keeps them: None when there are none.
    pub fn to_json(&self) -> Option<String> {
        // Serialising strings and a list of pairs cannot fail.
        (!self.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// The options the store kept; none when the column is empty or
    /// unreadable (a downgrade and upgrade must not stop a feed polling).
    pub fn from_json(json: Option<&str>) -> RequestOptions {
        json.and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    }

    /// Whether nothing differs from the defaults.
    pub fn is_empty(&self) -> bool {
        *self == RequestOptions::default()
    }

    /// Whether anything secret is set: headers, credentials, or a proxy URL
    /// with a user name or password in it.
    pub fn has_secrets(&self) -> bool {
        !self.headers.is_empty()
            || self.username.is_some()
            || self.password.is_some()
            || self.proxy.as_deref().is_some_and(|p| {
                url::Url::parse(p).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
            })
    }
}

impl std::fmt::Debug for RequestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RequestOptions")
            .field("user_agent", &self.user_agent)
            .field("headers", &names)
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("proxy", &self.proxy.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Per-site rules for the article cleaner, from `[[site]]` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRule {
    /// The site's host name, lowercase, without a trailing dot
    /// (`example.com`); the rule also covers its subdomains.
    pub host: String,
    /// CSS selectors, each known to compile: when one matches, that element
    /// is the article.
    pub keep: Vec<String>,
    /// CSS selectors, each known to compile: matching elements are removed
    /// before extraction.
    pub drop: Vec<String>,
    /// How article pages on this site are requested: a User-Agent,
    /// headers or credentials (sent only to this host and its subdomains),
    /// a proxy.
    pub request: RequestOptions,
}

impl SiteRule {
    /// Whether this rule applies to `host` (equal, or a subdomain of it):
    /// `example.com` covers `example.com` and `www.example.com`, not
    /// `badexample.com`. Case-insensitive; a trailing dot is ignored.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.eq_ignore_ascii_case(&self.host) {
            return true;
        }
        // Compare bytes so a multi-byte char cannot split a slice.
        let (host, rule) = (host.as_bytes(), self.host.as_bytes());
        host.len() > rule.len()
            && host[host.len() - rule.len() - 1] == b'.'
            && host[host.len() - rule.len()..].eq_ignore_ascii_case(rule)
    }
}

/// A named output from an `[[output]]` table, served at `/o/<name>.atom|.rss|.json`.
///
/// Every filter that is set narrows the output: an entry is in it when its
/// feed has one of `tags` (if any), is one of `feeds` (if any), and its
/// title or content matches `include` and not `exclude`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// 1 to 64 characters of `a-z`, `0-9`, `-` and `_`; unique across
    /// outputs.
    pub name: String,
    /// Shown as the output's title; None → `"<server.title>: <name>"` (see
    /// [`crate::config::ServerConfig::output_title`]).
    pub title: Option<String>,
    /// Entries from feeds with any of these tags (empty: no tag filter).
    pub tags: Vec<String>,
    /// Entries from any of these feed URLs, normalised as subscriptions are
    /// (`Url::parse(..).to_string()`; absolute http or https); empty: no
    /// feed filter.
    pub feeds: Vec<String>,
    /// A regular expression (`regex` crate syntax, known to compile) that
    /// an entry's title or content must match.
    pub include: Option<String>,
    /// A regular expression (`regex` crate syntax, known to compile) that
    /// neither an entry's title nor its content may match.
    pub exclude: Option<String>,
    /// Entries per page of this output, 1 to `server.max_page_size`; None →
    /// `server.page_size`.
    pub limit: Option<usize>,
    /// http(s) URLs that receive the output's new entries as JSON Feed
    /// documents (see `crate::push`).
    pub webhook: Vec<String>,
    /// Signs each webhook delivery (HMAC-SHA256) when set.
    pub webhook_secret: Option<Secret>,
    /// ntfy topic URLs (`https://ntfy.sh/<topic>`) that get a short notice
    /// of the output's new entries.
    pub ntfy: Vec<String>,
}

/// A secret string: `Debug` never shows it, so no log line or panic can.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Where a subscription came from. Config feeds are owned by the config file
/// (they are added, changed and removed by editing it); the others are owned
/// by the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedOrigin {
    Config,
    Cli,
    Opml,
}

impl FeedOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedOrigin::Config => "config",
            FeedOrigin::Cli => "cli",
            FeedOrigin::Opml => "opml",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "config" => Some(FeedOrigin::Config),
            "cli" => Some(FeedOrigin::Cli),
            "opml" => Some(FeedOrigin::Opml),
            _ => None,
        }
    }
}

/// Whether a feed is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStatus {
    /// Polled on schedule (it may be failing; see `error_count`).
    Active,
    /// Paused by the operator; kept, not polled.
    Paused,
    /// The server said 410 Gone; not polled until resumed.
    Gone,
}

impl FeedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedStatus::Active => "active",
            FeedStatus::Paused => "paused",
            FeedStatus::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(FeedStatus::Active),
            "paused" => Some(FeedStatus::Paused),
            "gone" => Some(FeedStatus::Gone),
            _ => None,
        }
    }
}

/// HTTP cache validators, kept byte-for-byte as the server sent them so they
/// can be echoed back unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A subscription together with its polling state, as stored.
#[derive(Debug, Clone)]
pub struct Feed {
    pub id: i64,
    pub spec: FeedSpec,
    pub origin: FeedOrigin,
    pub status: FeedStatus,
    /// Where the feed is fetched from after a confirmed permanent redirect;
    /// `spec.url` stays what the operator subscribed to.
    pub fetch_url: Option<String>,
    /// A permanent redirect seen on recent polls but not yet confirmed,
    /// with how many polls in a row have shown it.
    pub pending_redirect: Option<(String, u32)>,
    /// The interval the last schedule used, and why (e.g. "adaptive",
    /// "max-age", "backoff", "retry-after").
    pub current_interval: Option<Duration>,
    pub schedule_reason: Option<String>,
    /// How often the feed publishes, learned from its entries' dates.
    pub learned_interval: Option<Duration>,
    /// Polling hints from the last document (ttl, skipHours, …).
    pub hints: FeedHints,
    /// The title the feed document gives itself.
    pub site_title: Option<String>,
    /// The feed's home page (its alternate link).
    pub site_url: Option<String>,
    pub validators: Validators,
    pub next_check_at: DateTime<Utc>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt; `None` when it never got a response.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Consecutive failed polls; reset to 0 by a success. Drives backoff.
    pub error_count: u32,
    /// Number of entries this feed contributed.
    pub entry_count: u64,
}

impl Feed {
    /// The URL polls go to.
    pub fn effective_url(&self) -> &str {
        self.fetch_url.as_deref().unwrap_or(&self.spec.url)
    }

    /// The name shown to readers: the operator's title, else the feed's own,
    /// else its URL.
    pub fn display_title(&self) -> &str {
        self.spec
            .title
            .as_deref()
            .or(self.site_title.as_deref())
            .unwrap_or(&self.spec.url)
    }

    /// One word for the feed's state, as `feeds list` and `status` show
    /// it: paused and gone win; otherwise new (never polled), ok or failing
    /// (consecutive errors, still retried).
    pub fn state(&self) -> &'static str {
        match (self.status, self.last_checked_at, self.error_count) {
            (FeedStatus::Paused, ..) => "paused",
            (FeedStatus::Gone, ..) => "gone",
            (_, None, _) => "new",
            (_, Some(_), 0) => "ok",
            _ => "failing",
        }
    }
}

/// The words of [`Feed::state`], in the order `status` lists them.
pub const FEED_STATES: [&str; 5] = ["ok", "failing", "gone", "paused", "new"];

/// How much history the store keeps. `None` turns a limit off. Applied by
/// housekeeping (and `tributary purge`), never inside a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Entries whose output time (published, never later than first seen)
    /// is older than this are purged.
    pub max_age: Option<Duration>,
    /// Each feed keeps at most this many of its newest entries.
    pub max_entries_per_feed: Option<usize>,
    /// Each feed keeps at least this many of its newest entries: the age
    /// and size limits apply only beyond them.
    pub min_entries_per_feed: Option<usize>,
    /// The oldest entries of all feeds are purged until the database's
    /// used pages fit in this many bytes.
    pub max_database_size: Option<u64>,
    /// A tombstone is dropped once its feed has not carried the entry for
    /// this long.
    pub tombstone_max_age: Option<Duration>,
    /// At most this many tombstones are kept; the longest unseen go first.
    pub max_tombstones: Option<usize>,
}

/// A feed document as the fetch stage got it off the wire.
#[derive(Debug, Clone)]
pub struct FetchedDoc {
    /// The URL after redirects; relative links in the document resolve
    /// against it.
    pub final_url: String,
    pub status: u16,
    /// The `Content-Type` media type, lowercased, without parameters.
    pub media_type: Option<String>,
    /// The `charset` parameter of `Content-Type`, if any.
    pub charset: Option<String>,
    /// The raw, already decompressed body; never re-encoded.
    pub body: bytes::Bytes,
    pub validators: Validators,
    /// Set when every hop of the redirect chain was permanent (301/308).
    pub permanent_redirect: Option<String>,
    /// How long the server says the response stays fresh
    /// (`Cache-Control: max-age`, else `Expires`), with which header said so.
    pub freshness: Option<Freshness>,
}

/// A server's request not to be asked again before `lifetime` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub lifetime: Duration,
    /// "max-age" or "expires".
    pub source: &'static str,
}

/// What a fetch came back with, when it got an answer worth acting on.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// 304: the stored copy is current.
    NotModified {
        validators: Validators,
        freshness: Option<Freshness>,
        permanent_redirect: Option<String>,
    },
    Fetched(FetchedDoc),
}

/// An enclosure (podcast audio, attached file) passed through to the output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enclosure {
    pub url: String,
    pub media_type: Option<String>,
    pub length: Option<u64>,
}

/// One entry of a parsed feed. `content_html` is the entry's HTML as the
/// feed gave it (plain text escaped into HTML), **not yet sanitised**: the
/// store keeps it so, and `serve` sanitises what it renders.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEntry {
    /// Stable identity within its feed: GUID, else normalised link, else a
    /// hash of title and content. Never a random id.
    pub key: String,
    pub title: Option<String>,
    pub link: Option<String>,
    /// Untrusted HTML: see the type's comment.
    pub content_html: Option<String>,
    /// What relative URLs in `content_html` resolve against when that is
    /// not `link` (an `xml:base`, or the feed's URL for an entry without a
    /// link).
    pub content_base: Option<String>,
    pub authors: Vec<String>,
    pub categories: Vec<String>,
    pub published: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub enclosures: Vec<Enclosure>,
    /// Keys under which the same story from another feed is recognised
    /// (see `pipeline::dedup::url_key`).
    pub url_keys: Vec<String>,
    /// [`ParsedEntry::compute_content_hash`], prepared by the parse stage so
    /// the store's single writer does not; `None` and the store computes it.
    pub content_hash: Option<String>,
    /// The words the search index holds for `content_html`
    /// (`pipeline::sanitize::search_words`), prepared by the parse stage
    /// when the poll indexes the entries it adds as it stores them
    /// (`tributary poll`, which must leave the index complete anyway).
    /// `None`: the store queues new entries for the indexer instead.
    pub search_words: Option<String>,
}

impl ParsedEntry {
    /// What the store compares to tell whether a stored entry changed:
    /// a hash of everything an output shows of it, taken over the content
    /// as the feed gave it and marked with [`RAW_HASH_PREFIX`].
    pub fn compute_content_hash(&self) -> String {
        let authors = self.authors.join("\u{1}");
        let categories = self.categories.join("\u{1}");
        let enclosures: Vec<&str> = self.enclosures.iter().map(|x| x.url.as_str()).collect();
        let enclosures = enclosures.join("\u{1}");
        let h = stable_hash(&[
            self.title.as_deref().unwrap_or(""),
            self.link.as_deref().unwrap_or(""),
            self.content_html.as_deref().unwrap_or(""),
            // A new base moves the content's relative links.
            self.content_base.as_deref().unwrap_or(""),
            &authors,
            &categories,
            &enclosures,
        ]);
        format!("{RAW_HASH_PREFIX}{h:032x}")
    }
}

/// Marks content hashes taken over content as the feed gave it. Hashes
/// without it were taken over sanitised content (before the store's
/// `raw_content.sql`) and cannot be compared with new ones.
pub const RAW_HASH_PREFIX: &str = "r:";

/// A 128-bit SipHash with fixed keys: stable across builds and Rust
/// versions, unlike std's `DefaultHasher`, so it is safe to persist.
pub fn stable_hash(parts: &[&str]) -> u128 {
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new_with_keys(0, 0);
    for p in parts {
        h.write(p.as_bytes());
        // A separator keeps ("ab", "c") and ("a", "bc") apart.
        h.write_u8(0xff);
    }
    siphasher::sip128::Hasher128::finish128(&h).as_u128()
}

/// The stored near-duplicate analysis of an article's text (see
/// `pipeline::dedup`): plain numbers and bytes, stable across builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPrint {
    pub version: u32,
    pub words: u32,
    pub simhash: u64,
    /// The MinHash sketch as bytes.
    pub minhash: Vec<u8>,
    /// Locality-sensitive keys for finding candidates.
    pub lsh_keys: Vec<u64>,
    /// Publication time, Unix seconds.
    pub published: Option<i64>,
}

/// What a feed document says about how often to poll it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FeedHints {
    /// RSS `<ttl>`.
    pub ttl: Option<Duration>,
    /// `sy:updatePeriod` divided by `sy:updateFrequency`.
    pub update_period: Option<Duration>,
    /// RSS `<skipHours>`: hours (0–23, GMT) in which not to poll.
    pub skip_hours: Vec<u8>,
    /// RSS `<skipDays>`: days (0 = Monday … 6 = Sunday) on which not to poll.
    pub skip_days: Vec<u8>,
}

/// A whole parsed feed document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedFeed {
    pub title: Option<String>,
    pub site_url: Option<String>,
    pub hints: FeedHints,
    /// Entries in document order, unique by `key` (first one wins).
    pub entries: Vec<ParsedEntry>,
}

/// The result of one poll of one feed, as handed to the store.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    NotModified {
        validators: Validators,
    },
    Fetched {
        status: u16,
        validators: Validators,
        feed: ParsedFeed,
    },
    /// 410: the feed is gone for good; stop polling it.
    Gone,
    /// Nothing was sent: the host asked us to wait (an earlier 429). Not
    /// an error of this feed.
    Deferred,
    Failed {
        status: Option<u16>,
        error: String,
    },
}

/// When a feed is next polled, and why then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub next_check_at: DateTime<Utc>,
    /// The interval this schedule is based on.
    pub interval: Duration,
    /// A short word for operators: "interval", "adaptive", "fixed",
    /// "max-age", "expires", "ttl", "sy:updatePeriod", "skipHours",
    /// "backoff", "retry-after", "host retry-after", "gone".
    pub reason: String,
}

/// Everything the store needs to record a poll in one transaction.
#[derive(Debug, Clone)]
pub struct PollRecord {
    pub feed_id: i64,
    pub checked_at: DateTime<Utc>,
    pub schedule: Schedule,
    pub outcome: PollOutcome,
    /// The target of a permanent redirect this poll followed, if any; the
    /// store adopts it once several polls in a row agree.
    pub permanent_redirect: Option<String>,
    /// A newly learned publishing interval, when the document told us one.
    pub learned_interval: Option<Duration>,
    /// A host asked us (429) to stay away until then.
    pub host_block: Option<(String, DateTime<Utc>)>,
    /// Queue new entries' article pages for full text.
    pub full_text: bool,
}

/// What recording a poll changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollReport {
    pub new: usize,
    pub updated: usize,
    /// New entries whose article page was queued for full text.
    pub articles_queued: usize,
    /// Entries recognised as a story another feed already brought (same
    /// URL): attached to it as a further source instead of added.
    pub merged: usize,
}

/// A feed that carried an output entry, for `atom:source` and attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub feed_url: String,
    pub title: String,
    pub site_url: Option<String>,
    /// This feed's link to the story (copies of a merged story differ).
    pub link: Option<String>,
}

/// A position in the output order (newest first), for paging: entries
/// strictly after it come next. Stable: it names a place in the order, not
/// an offset, so new entries do not shift pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub sort_at: i64,
    pub id: i64,
}

impl Cursor {
    pub fn encode(self) -> String {
        format!("{}-{}", self.sort_at, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (a, b) = s.split_once('-')?;
        Some(Cursor {
            sort_at: a.parse().ok()?,
            id: b.parse().ok()?,
        })
    }
}

/// An entry as the output feeds render it.
#[derive(Debug, Clone)]
pub struct OutputEntry {
    /// Public, permanent id (a `urn:uuid:`), fixed when first seen.
    pub uid: String,
    pub title: Option<String>,
    pub link: Option<String>,
    /// As the store returns it, the feed's untrusted HTML (or an article's
    /// cleaned HTML); `serve` sanitises it before any output renders it.
    pub content_html: Option<String>,
    /// See [`ParsedEntry::content_base`].
    pub content_base: Option<String>,
    /// Whether `content_html` is a fetched article (cleaned and sanitised
    /// when stored) rather than the feed's own content (cleaned by
    /// `clean::feed_content` and sanitised on its way out).
    pub content_is_article: bool,
    pub authors: Vec<String>,
    pub categories: Vec<String>,
    pub published: Option<DateTime<Utc>>,
    pub updated: DateTime<Utc>,
    pub enclosures: Vec<Enclosure>,
    /// Every feed that carried the story, first-seen first (never empty).
    pub sources: Vec<SourceInfo>,
    /// Where this entry sits in the output order.
    pub cursor: Cursor,
}

impl OutputEntry {
    /// The feed the story was first seen in.
    pub fn source(&self) -> Option<&SourceInfo> {
        self.sources.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_rule_matches_its_host_and_subdomains() {
        let rule = SiteRule {
            host: "example.com".into(),
            keep: vec!["article".into()],
            drop: vec![],
            request: Default::default(),
        };
        let cases = [
            ("example.com", true),
            ("www.example.com", true),
            ("a.b.example.com", true),
            ("EXAMPLE.com", true),
            ("Www.Example.Com.", true),
            ("badexample.com", false),
            ("example.com.evil.net", false),
            ("example.co", false),
            ("xample.com", false),
            ("com", false),
            ("", false),
            ("bücher.example.com", true),
        ];
        for (host, want) in cases {
            assert_eq!(rule.matches(host), want, "{host:?}");
        }
    }
}

/// An article page to fetch and clean for an entry.
#[derive(Debug, Clone)]
pub struct ArticleJob {
    pub entry_id: i64,
    pub feed_id: i64,
    /// The entry's link: the page to fetch.
    pub url: String,
    /// The entry's title and authors, so the cleaner can drop a repeated
    /// title and a byline that only repeats them.
    pub title: Option<String>,
    pub authors: Vec<String>,
    /// The feed's own content for the entry: the article replaces it only
    /// when it says more.
    pub feed_html: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// The entry's publication time (Unix seconds), for near-duplicate
    /// checks.
    pub published: Option<i64>,
}

/// What fetching and cleaning an article came to.
#[derive(Debug, Clone)]
pub enum ArticleOutcome {
    Extracted {
        final_url: String,
        canonical_url: Option<String>,
        /// Clean, sanitised HTML with absolute URLs.
        html: String,
        text: String,
        word_count: usize,
        /// Whether the article says more than the feed's own content, and
        /// so replaces it in the outputs.
        use_for_output: bool,
        /// Keys of the entry link, the final URL and the page's canonical
        /// URL, for recognising the same story from another feed.
        url_keys: Vec<String>,
        /// The text's near-duplicate analysis; `None` for short texts,
        /// which are never merged on text.
        print: Option<TextPrint>,
    },
    Failed {
        error: String,
    },
    /// Not attempted: the host asked us to wait (429).
    Deferred,
}

/// One article attempt, for the store.
#[derive(Debug, Clone)]
pub struct ArticleRecord {
    pub entry_id: i64,
    pub at: DateTime<Utc>,
    pub outcome: ArticleOutcome,
    /// When to try again; `None` gives up (the entry keeps the feed's
    /// content).
    pub retry_at: Option<DateTime<Utc>>,
}
