//! Every table of the file and its keys, each key one line: its name, its
//! type once read, and the reader that reads it (see [`raw_table!`]). This
//! is phase 1's output: what the file says, typed but not yet checked
//! against ranges or other keys.
//!
//! Adding a key: a line here, the field in the public config type (or
//! model spec) with its default, and a line in the table's validation that
//! lays it over the default. The README and `config/tributary.toml` must
//! show it (the `every_key_is_documented` test checks).

use std::net::SocketAddr;
use std::time::Duration;

use toml::de::DeTable;
use url::Url;

use super::read::{Field, Reader, Value, raw_table};
use super::values::{
    parse_allow_rule, parse_http_url, parse_output_name, parse_proxy, parse_regex, parse_selector,
    parse_site_host, parse_websub_hub,
};
use super::{AllowRule, LogFormat};
use crate::model::EntryRule;

/// The keys of the top level: `database` and the tables.
pub(super) const TOP_KEYS: &[&str] = &[
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

/// Every table with its header as written in the file, so an unknown key can
/// be pointed at the table it belongs in.
pub(super) const SECTIONS: &[(&str, &[&str])] = &[
    ("the top level", TOP_KEYS),
    ("[server]", RawServer::KEYS),
    ("[poll]", RawPoll::KEYS),
    ("[log]", RawLog::KEYS),
    ("[network]", RawNetwork::KEYS),
    ("[extract]", RawExtract::KEYS),
    ("[retention]", RawRetention::KEYS),
    ("[[feed]]", RawFeed::KEYS),
    ("[feed.select]", RawSelect::KEYS),
    ("[[site]]", RawSite::KEYS),
    ("[[output]]", RawOutput::KEYS),
];

raw_table! {
    /// `[server]`
    pub(super) struct RawServer {
        listen: SocketAddr = socket_addr,
        base_url: Url = base_url,
        title: String = non_empty_string,
        page_size: i64 = integer,
        max_page_size: i64 = integer,
        websub_hub: Url = parsed(parse_websub_hub),
    }
}

raw_table! {
    /// `[poll]`
    pub(super) struct RawPoll {
        interval: Duration = duration,
        min_interval: Duration = duration,
        timeout: Duration = duration,
        connect_timeout: Duration = duration,
        concurrency: i64 = integer,
        max_body: u64 = size,
        user_agent: String = non_empty_string,
        adaptive: bool = boolean,
        max_interval: Duration = duration,
        max_backoff: Duration = duration,
        per_host_concurrency: i64 = integer,
        per_host_spacing: Duration = duration,
        lease_margin: Duration = duration,
    }
}

raw_table! {
    /// `[log]`
    pub(super) struct RawLog {
        level: String = non_empty_string,
        format: LogFormat = log_format,
    }
}

raw_table! {
    /// `[network]`
    pub(super) struct RawNetwork {
        allow: Vec<AllowRule> = string_list(parse_allow_rule),
    }
}

raw_table! {
    /// `[extract]`
    pub(super) struct RawExtract {
        full_text: bool = boolean,
        max_attempts: i64 = integer,
        concurrency: i64 = integer,
    }
}

raw_table! {
    /// `[retention]`
    pub(super) struct RawRetention {
        max_age: Duration = duration,
        max_entries_per_feed: i64 = integer,
        min_entries_per_feed: i64 = integer,
        max_content_size: u64 = size,
        max_database_size: u64 = size,
        tombstone_max_age: Duration = duration,
        max_tombstones: i64 = integer,
        housekeeping_interval: Duration = duration,
    }
}

raw_table! {
    /// One `[[feed]]`.
    pub(super) struct RawFeed {
        url: String = feed_url,
        title: String = non_empty_string,
        tags: Vec<String> = tags,
        interval: Duration = duration,
        full_text: bool = boolean,
        user_agent: String = non_empty_string,
        headers: Vec<(String, String)> = header_table,
        username: String = non_empty_string,
        password: String = string,
        proxy: String = parsed(parse_proxy),
        keep: Vec<EntryRule> = rule_table,
        block: Vec<EntryRule> = rule_table,
        page: bool = boolean,
        select: RawSelect = sub_table(RawSelect::read),
    }
}

raw_table! {
    /// A `[[feed]]`'s `select` table: how a page without a feed is read
    /// (with `page = true`). Keep in step with `PageRule::PARTS`.
    pub(super) struct RawSelect {
        item: String = parsed(parse_selector),
        title: String = parsed(parse_selector),
        link: String = parsed(parse_selector),
        date: String = parsed(parse_selector),
        summary: String = parsed(parse_selector),
        content: String = parsed(parse_selector),
        author: String = parsed(parse_selector),
        image: String = parsed(parse_selector),
    }
}

raw_table! {
    /// One `[[site]]`.
    pub(super) struct RawSite {
        host: String = parsed(parse_site_host),
        keep: Vec<String> = string_list(parse_selector),
        drop: Vec<String> = string_list(parse_selector),
        user_agent: String = non_empty_string,
        headers: Vec<(String, String)> = header_table,
        username: String = non_empty_string,
        password: String = string,
        proxy: String = parsed(parse_proxy),
    }
}

raw_table! {
    /// One `[[output]]`.
    pub(super) struct RawOutput {
        name: String = parsed(parse_output_name),
        title: String = non_empty_string,
        tags: Vec<String> = tags,
        feeds: Vec<String> = string_list(|s| parse_http_url(s).map(|url| url.to_string())),
        include: String = parsed(parse_regex),
        exclude: String = parsed(parse_regex),
        limit: i64 = integer,
        webhook: Vec<String> = string_list(|s| parse_http_url(s).map(|url| url.to_string())),
        webhook_secret: String = string,
        ntfy: Vec<String> = string_list(|s| parse_http_url(s).map(|url| url.to_string())),
    }
}

/// One table of an array of tables (`[[feed]]`), where it stands.
pub(super) struct Item<T> {
    /// Position in the file's array, for `feed[N]` in messages.
    pub index: usize,
    /// Line of the table's header, for problems about a missing key.
    pub line: usize,
    /// Whether an unknown key was reported in this table: most likely a
    /// misspelt key, so a table that looks empty is not reported on top.
    pub unknown_key: bool,
    pub raw: T,
}

/// What the whole file says.
#[derive(Default)]
pub(super) struct RawConfig {
    pub database: Field<String>,
    pub server: RawServer,
    pub poll: RawPoll,
    pub log: RawLog,
    pub network: RawNetwork,
    pub extract: RawExtract,
    pub retention: RawRetention,
    pub feeds: Vec<Item<RawFeed>>,
    pub sites: Vec<Item<RawSite>>,
    pub outputs: Vec<Item<RawOutput>>,
}

impl Reader {
    /// Reads the whole file: each top-level key, every table and every
    /// table of the arrays.
    pub(super) fn read_root(&mut self, root: &DeTable<'_>) -> RawConfig {
        let mut raw = RawConfig::default();
        for (name, value) in root.iter() {
            let key = name.get_ref().as_ref();
            match key {
                "database" => raw.database = self.non_empty_string(key, value),
                "server" => raw.server = self.read_table(key, value, RawServer::read),
                "poll" => raw.poll = self.read_table(key, value, RawPoll::read),
                "log" => raw.log = self.read_table(key, value, RawLog::read),
                "network" => raw.network = self.read_table(key, value, RawNetwork::read),
                "extract" => raw.extract = self.read_table(key, value, RawExtract::read),
                "retention" => raw.retention = self.read_table(key, value, RawRetention::read),
                "feed" => raw.feeds = self.read_array(key, value, RawFeed::read),
                "site" => raw.sites = self.read_array(key, value, RawSite::read),
                "output" => raw.outputs = self.read_array(key, value, RawOutput::read),
                _ => self.unknown_key(key, key, name.span(), TOP_KEYS),
            }
        }
        raw
    }

    /// A table (`[poll]`) read with `read`; the defaults when the value is
    /// not a table (reported).
    fn read_table<T: Default>(
        &mut self,
        key: &str,
        value: &Value<'_>,
        read: impl FnOnce(&mut Reader, &str, &DeTable<'_>) -> (T, bool),
    ) -> T {
        match self.table(key, value) {
            Some(table) => read(self, key, table).0,
            None => T::default(),
        }
    }

    /// Every table of an array of tables (`[[feed]]`), each read with
    /// `read` under its own prefix (`feed[2]`).
    fn read_array<T>(
        &mut self,
        key: &str,
        value: &Value<'_>,
        read: impl Fn(&mut Reader, &str, &DeTable<'_>) -> (T, bool),
    ) -> Vec<Item<T>> {
        let mut items = Vec::new();
        for (index, line, table) in self.array_of_tables(key, value) {
            let (raw, unknown_key) = read(self, &format!("{key}[{index}]"), table);
            items.push(Item {
                index,
                line,
                unknown_key,
                raw,
            });
        }
        items
    }
}
