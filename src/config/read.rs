//! Phase 1 of loading: the spanned TOML tree → typed [`Field`]s, one reader
//! per kind of value (string, duration, size, list …), each reporting a
//! [`Problem`] with the key and line at fault instead of stopping.
//!
//! The tables themselves are declared in `raw.rs` with [`raw_table!`]: a key
//! is one line there naming its type and the reader that reads it.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use url::Url;

use super::raw::SECTIONS;
use super::values::{parse_duration, parse_header, parse_http_url, parse_regex, parse_size};
use super::{LogFormat, Problem};
use crate::model::{EntryRule, RuleField};

/// Maps byte offsets to 1-based line numbers.
pub(super) struct LineIndex {
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        // The number of line starts at or before `offset` is its line number.
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// A value read in phase 1.
#[derive(Debug, Clone, Default)]
pub(super) enum Field<T> {
    /// The key is not in the file: use the default.
    #[default]
    Missing,
    /// The key is there but a problem was already reported for it: leave it
    /// out of further checks.
    Invalid,
    /// A value of the right type, with the line it was on.
    Set(T, usize),
}

impl<T> Field<T> {
    /// The value when the key was set and valid; None when it is missing
    /// (use the default) or invalid (already reported).
    pub(super) fn value(self) -> Option<T> {
        match self {
            Field::Set(value, _) => Some(value),
            Field::Missing | Field::Invalid => None,
        }
    }
}

impl<T: Clone> Field<T> {
    /// The value to use, or None when the key was invalid.
    pub(super) fn or(&self, default: T) -> Option<T> {
        match self {
            Field::Missing => Some(default),
            Field::Invalid => None,
            Field::Set(value, _) => Some(value.clone()),
        }
    }
}

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// Walks the TOML tree and collects problems; both phases run on it.
pub(super) struct Reader {
    pub(super) lines: LineIndex,
    pub(super) problems: Vec<Problem>,
}

impl Reader {
    pub(super) fn problem(&mut self, key: &str, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            line: Some(self.lines.line(span.start)),
            message: message.into(),
        });
    }

    pub(super) fn problem_at_line(&mut self, key: &str, line: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            line: Some(line),
            message: message.into(),
        });
    }

    /// The tables of an array of tables (`[[feed]]`), each with its index
    /// and the line of its header. Items that are not tables are reported.
    pub(super) fn array_of_tables<'a, 'i>(
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

    /// belongs in, else the list of known keys.
    pub(super) fn unknown_key(
        &mut self,
        key: &str,
        field: &str,
        span: Range<usize>,
        known: &[&str],
    ) {
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

    pub(super) fn wrong_type(
        &mut self,
        key: &str,
        span: Range<usize>,
        expected: &str,
        found: &DeValue<'_>,
    ) {
        self.problem(
            key,
            span,
            format!("expected {expected}, found {}", type_name(found)),
        );
    }

    pub(super) fn table<'a, 'i>(
        &mut self,
        key: &str,
        value: &'a Value<'i>,
    ) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            other => {
                self.wrong_type(key, value.span(), &format!("a table ([{key}])"), other);
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &str, value: &Value<'_>) -> Field<String> {
        match value.get_ref() {
            DeValue::String(s) => Field::Set(s.to_string(), self.lines.line(value.span().start)),
            other => {
                self.wrong_type(key, value.span(), "a string", other);
                Field::Invalid
            }
        }
    }

    /// A string, trimmed, that must not be blank.
    pub(super) fn non_empty_string(&mut self, key: &str, value: &Value<'_>) -> Field<String> {
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
    pub(super) fn parsed<T>(
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

    pub(super) fn boolean(&mut self, key: &str, value: &Value<'_>) -> Field<bool> {
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

    pub(super) fn integer(&mut self, key: &str, value: &Value<'_>) -> Field<i64> {
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

    pub(super) fn duration(&mut self, key: &str, value: &Value<'_>) -> Field<Duration> {
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

    pub(super) fn size(&mut self, key: &str, value: &Value<'_>) -> Field<u64> {
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

    pub(super) fn socket_addr(&mut self, key: &str, value: &Value<'_>) -> Field<SocketAddr> {
        self.parsed(key, value, |s| {
            s.trim().parse::<SocketAddr>().map_err(|_| {
                format!(
                    "invalid listen address \"{s}\": write it as HOST:PORT with an IP address, e.g. 127.0.0.1:8080 or [::1]:8080"
                )
            })
        })
    }

    pub(super) fn base_url(&mut self, key: &str, value: &Value<'_>) -> Field<Url> {
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

    pub(super) fn feed_url(&mut self, key: &str, value: &Value<'_>) -> Field<String> {
        self.parsed(key, value, |s| parse_http_url(s).map(|url| url.to_string()))
    }

    pub(super) fn log_format(&mut self, key: &str, value: &Value<'_>) -> Field<LogFormat> {
        self.parsed(key, value, |s| match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown log format \"{s}\": use \"text\" or \"json\""
            )),
        })
    }

    /// A table of HTTP headers, `name = "value"`, checked by
    /// [`parse_header`]; each bad one is reported as `key.Name`. Values are
    /// kept as written (they may be tokens with meaningful spaces).
    pub(super) fn header_table(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Field<Vec<(String, String)>> {
        let table = match value.get_ref() {
            DeValue::Table(table) => table,
            other => {
                let expected =
                    "a table of name = \"value\", e.g. headers = { Cookie = \"session=…\" }";
                self.wrong_type(key, value.span(), expected, other);
                return Field::Invalid;
            }
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut ok = true;
        for (name, item) in table.iter() {
            let name = name.get_ref().as_ref();
            let item_key = format!("{key}.{name}");
            let parsed = match self.string(&item_key, item) {
                Field::Set(v, _) => parse_header(name, &v),
                _ => {
                    ok = false;
                    continue;
                }
            };
            match parsed {
                Ok(header) => headers.push(header),
                Err(message) => {
                    self.problem(&item_key, item.span(), message);
                    ok = false;
                }
            }
        }
        if ok {
            Field::Set(headers, self.lines.line(value.span().start))
        } else {
            Field::Invalid
        }
    }

    /// A table of entry rules, `field = "regex"` with field one of
    /// `title`, `content`, `author`, `categories`; each bad one is
    /// reported as `key.field`.
    pub(super) fn rule_table(&mut self, key: &str, value: &Value<'_>) -> Field<Vec<EntryRule>> {
        let table = match value.get_ref() {
            DeValue::Table(table) => table,
            other => {
                let expected = "a table of part = \"regex\", e.g. keep = { title = \"(?i)rust\" }";
                self.wrong_type(key, value.span(), expected, other);
                return Field::Invalid;
            }
        };
        let mut rules = Vec::new();
        let mut ok = true;
        for (name, item) in table.iter() {
            let name = name.get_ref().as_ref();
            let item_key = format!("{key}.{name}");
            let Some(&(_, field)) = RuleField::ALL.iter().find(|(n, _)| *n == name) else {
                self.problem(
                    &item_key,
                    item.span(),
                    format!(
                        "unknown part \"{name}\": rules read title, content, author or categories"
                    ),
                );
                ok = false;
                continue;
            };
            match self.parsed(&item_key, item, parse_regex) {
                Field::Set(pattern, _) => rules.push(EntryRule { field, pattern }),
                _ => ok = false,
            }
        }
        if ok {
            Field::Set(rules, self.lines.line(value.span().start))
        } else {
            Field::Invalid
        }
    }

    /// A table inside a table (`[feed.select]`, or `select = { … }`), its
    /// keys read by `read` under `key` (`feed[2].select.item`).
    pub(super) fn sub_table<T>(
        &mut self,
        key: &str,
        value: &Value<'_>,
        read: impl FnOnce(&mut Reader, &str, &DeTable<'_>) -> (T, bool),
    ) -> Field<T> {
        match value.get_ref() {
            DeValue::Table(table) => {
                let line = self.lines.line(value.span().start);
                Field::Set(read(self, key, table).0, line)
            }
            other => {
                self.wrong_type(key, value.span(), "a table", other);
                Field::Invalid
            }
        }
    }

    /// An array of strings: trimmed, blanks rejected, duplicates dropped
    /// (the first one keeps its place).
    pub(super) fn tags(&mut self, key: &str, value: &Value<'_>) -> Field<Vec<String>> {
        self.string_list(key, value, |s| Ok(s.to_owned()))
    }

    /// An array of strings, each trimmed, non-blank and turned into a `T`
    /// by `parse` (which returns the whole message on failure); each bad
    /// item is reported as `key[N]` on its own line. Duplicates are dropped,
    /// the first one keeping its place.
    pub(super) fn string_list<T: PartialEq>(
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
}

/// How a value's type is named in messages.
pub(super) fn type_name(value: &DeValue<'_>) -> &'static str {
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
pub(super) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let normalised = key.to_lowercase().replace('-', "_");
    known
        .iter()
        .map(|&k| (edit_distance(&normalised, k), k))
        .filter(|&(d, k)| d <= 2 && d * 2 <= k.len().max(normalised.len()))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counted in chars.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
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

/// Declares the raw form of one table: a struct with one [`Field`] per key,
/// its list of known keys (`KEYS`, for unknown-key reports and the docs
/// test), and `read`, which reads each key with the reader named next to it
/// and reports any other key as unknown.
///
/// A key is one line, `name: Type = reader`, or `name: Type = reader(args)`
/// when the reader takes a parser (`parsed`, `string_list`):
///
/// ```text
/// raw_table! {
///     pub(super) struct RawPoll {
///         interval: Duration = duration,
///         websub_hub: Url = parsed(parse_websub_hub),
///     }
/// }
/// ```
///
/// The reader is a method of [`Reader`] called as
/// `reader.<reader>(key, value, args…)`, where `key` is the dotted key
/// (`poll.interval`, `feed[2].url`) the messages name.
macro_rules! raw_table {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident : $ty:ty = $read:ident $( ( $($arg:expr),* $(,)? ) )?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: $crate::config::read::Field<$ty>, )*
        }

        impl $name {
            /// The table's keys, in the order they are documented.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Reads the table's keys; `prefix` is the table's dotted name
            /// (`poll`, `feed[2]`). Returns whether a key was unknown along
            /// with what was read.
            pub fn read(
                reader: &mut $crate::config::read::Reader,
                prefix: &str,
                table: &toml::de::DeTable<'_>,
            ) -> (Self, bool) {
                let mut raw = Self::default();
                let mut unknown = false;
                for (name, value) in table.iter() {
                    let field = name.get_ref().as_ref();
                    let key = format!("{prefix}.{field}");
                    let key = key.as_str();
                    match field {
                        $(
                            stringify!($field) => {
                                raw.$field = reader.$read(key, value $(, $($arg),*)?);
                            }
                        )*
                        _ => {
                            reader.unknown_key(key, field, name.span(), Self::KEYS);
                            unknown = true;
                        }
                    }
                }
                (raw, unknown)
            }
        }
    };
}
pub(super) use raw_table;
