//! OPML subscription lists: turning an OPML document into [`FeedSpec`]s
//! ([`import`]) and [`FeedSpec`]s into an OPML 2.0 document ([`export`]).
//!
//! This module owns the mapping between OPML outlines and subscriptions:
//! folders and `category` attributes become tags, and tags become folders and
//! `category` attributes again, so that `import(export(feeds))` gives back the
//! same feeds. It does no I/O: the CLI reads and writes the files and talks
//! to the store; it hands this module text and gets text or values back.
//!
//! Reading goes through the `opml` crate, but leniently: real subscription
//! lists often lack the `version` attribute, carry one the crate does not
//! know, have an empty `<body>`, have a bare `&` in a URL, or have a
//! `<head>` the crate cannot parse (which we never use). Those are patched
//! and retried instead of rejected.
//!
//! Writing is done by hand, because the crate's writer leaves tabs, newlines
//! and control characters unescaped in attributes, which either changes the
//! value on the way back in or produces a document no parser accepts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
// `::` because this module shares its name with the crate it wraps.
use ::opml::{OPML, Outline};

use crate::model::FeedSpec;

/// Why an OPML document could not be read at all. Problems with single
/// outlines are not errors: they end up in [`Imported::skipped`].
#[derive(Debug, thiserror::Error)]
pub enum OpmlError {
    /// The text is not an XML document whose root element is `<opml>`.
    #[error("not an OPML document: {reason}")]
    NotOpml { reason: String },
    /// The root is `<opml>`, but the XML inside it is broken or lacks `<body>`.
    #[error("malformed OPML document: {detail}")]
    Malformed { detail: String },
}

/// What [`import`] found in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// One entry per distinct feed URL, in the order the URLs first appear.
    pub feeds: Vec<FeedSpec>,
    /// Outlines that were not imported, in document order, so the operator
    /// can be told what was left out and why.
    pub skipped: Vec<Skipped>,
}

/// An outline [`import`] left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The outline's `text`, else its `title`, else its `xmlUrl`; empty when
    /// it has none of them.
    pub outline: String,
    /// A lowercase sentence saying what is wrong with it.
    pub reason: String,
}

/// The versions the `opml` crate accepts; any other (or none) is replaced by
/// "2.0" before parsing, since 1.x documents are also valid 2.0 for our needs.
const KNOWN_VERSIONS: [&str; 3] = ["1.0", "1.1", "2.0"];

/// Reads an OPML 1.0, 1.1 or 2.0 document.
///
/// - Every outline with an `xmlUrl` becomes a feed. The URL must be an
///   absolute http(s) URL; it is normalised by `url::Url`. Otherwise the
///   outline is skipped with a reason.
/// - An outline without `xmlUrl` that contains outlines is a folder: its
///   `text` (else `title`) becomes a tag of every feed beneath it, outermost
///   folder first. A folder without a name adds no tag.
/// - A feed outline's `category` attribute (comma-separated, slash-delimited
///   paths such as `"/Tech/Rust,/News"`) adds every path segment as a tag,
///   after the folder tags. Tags are trimmed; empty ones and repeats are
///   dropped.
/// - The title is `title`, else `text`, trimmed; `None` when empty or equal
///   to the URL.
/// - A URL seen twice gives one feed with the union of the tags; the first
///   title found wins.
/// - An outline with `isComment="true"` is skipped with everything under it,
///   as the OPML spec says commented outlines are.
/// - An outline with neither `xmlUrl` nor children is skipped (it is an empty
///   folder or a note, not a feed).
/// - `interval` is always `None`: OPML has no place for it.
///
/// Tolerated: a missing or unknown `version`, an empty `<body>` (zero
/// feeds), a bare `&` or an unknown entity such as `&nbsp;` (read as literal
/// text), and an unparseable `<head>` (never used). Anything else that is not
/// well-formed OPML is an error. The text must already be decoded; a leading
/// byte-order mark is ignored.
pub fn import(text: &str) -> Result<Imported, OpmlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let patched;
    let text = match check_root(text)? {
        Some(edit) => {
            patched = edit.apply(text);
            patched.as_str()
        }
        None => text,
    };

    let document = match parse(text) {
        Ok(document) => document,
        Err(first) => repair_and_parse(text).ok_or(first)?,
    };

    let mut imported = Builder::default();
    if let Some(document) = document {
        imported.walk(&document.body.outlines, &mut Vec::new());
    }
    Ok(imported.finish())
}

/// Retries a document the `opml` crate rejected after repairing defects
/// common in hand-made and badly generated lists, each on top of the last:
/// a bare `&` (usually in an `xmlUrl` query string), then a `<head>` the
/// crate cannot parse (say, an empty `<vertScrollState>`), which we never
/// read anyway. `None` when that does not help either; the caller then
/// reports the first error, which describes the document as written.
fn repair_and_parse(text: &str) -> Option<Option<OPML>> {
    let escaped = escape_bare_ampersands(text);
    let text = match &escaped {
        Some(escaped) => match parse(escaped) {
            Ok(document) => return Some(document),
            Err(_) => escaped.as_str(),
        },
        None => text,
    };
    parse(&remove_head(text)?).ok()
}

/// Parses with the `opml` crate; `Ok(None)` is a document with an empty body.
fn parse(text: &str) -> Result<Option<OPML>, OpmlError> {
    match OPML::from_str(text) {
        Ok(document) => Ok(Some(document)),
        // The spec wants at least one outline, but an empty subscription list
        // is a perfectly good thing to import: it has no feeds.
        Err(::opml::Error::BodyHasNoOutlines) => Ok(None),
        // The wrapper only says "Failed to process XML file"; the XML error
        // inside says what and where.
        Err(::opml::Error::XmlError(e)) => Err(OpmlError::Malformed {
            detail: e.to_string(),
        }),
        Err(e) => Err(OpmlError::Malformed {
            detail: e.to_string(),
        }),
    }
}

/// Collects feeds while walking the outline tree, merging repeated URLs.
#[derive(Default)]
struct Builder {
    feeds: Vec<FeedSpec>,
    /// Index into `feeds` by normalised URL.
    seen: HashMap<String, usize>,
    skipped: Vec<Skipped>,
}

impl Builder {
    /// Visits `outlines`; `folders` holds the names of the enclosing folders,
    /// outermost first.
    fn walk(&mut self, outlines: &[Outline], folders: &mut Vec<String>) {
        for outline in outlines {
            if outline.is_comment == Some(true) {
                self.skip(outline, "commented out (isComment=\"true\")".to_owned());
                continue;
            }
            match &outline.xml_url {
                Some(xml_url) => {
                    self.feed(outline, xml_url, folders);
                    // A feed with children is odd but harmless: take the
                    // children too, in the feed's folder.
                    self.walk(&outline.outlines, folders);
                }
                None if !outline.outlines.is_empty() => {
                    let name =
                        non_empty(Some(&outline.text)).or(non_empty(outline.title.as_deref()));
                    match name {
                        Some(name) => {
                            folders.push(name.to_owned());
                            self.walk(&outline.outlines, folders);
                            folders.pop();
                        }
                        None => self.walk(&outline.outlines, folders),
                    }
                }
                None => self.skip(
                    outline,
                    "no xmlUrl attribute and no child outlines: not a feed".to_owned(),
                ),
            }
        }
    }

    fn feed(&mut self, outline: &Outline, xml_url: &str, folders: &[String]) {
        let url = match feed_url(xml_url) {
            Ok(url) => url,
            Err(reason) => return self.skip(outline, reason),
        };
        let title = non_empty(outline.title.as_deref())
            .or(non_empty(Some(&outline.text)))
            .filter(|title| *title != url && *title != xml_url.trim())
            .map(str::to_owned);

        let mut tags = Vec::new();
        for tag in folders
            .iter()
            .map(String::as_str)
            .chain(category_tags(outline))
        {
            add_tag(&mut tags, tag);
        }

        match self.seen.get(&url).and_then(|&i| self.feeds.get_mut(i)) {
            Some(existing) => {
                if existing.title.is_none() {
                    existing.title = title;
                }
                for tag in &tags {
                    add_tag(&mut existing.tags, tag);
                }
            }
            None => {
                self.seen.insert(url.clone(), self.feeds.len());
                self.feeds.push(FeedSpec {
                    url,
                    title,
                    tags,
                    interval: None,
                    // OPML has no way to say it; the global setting applies.
                    full_text: None,
                    request: Default::default(),
                    rules: Default::default(),
                    page: None,
                });
            }
        }
    }

    fn skip(&mut self, outline: &Outline, reason: String) {
        let outline = non_empty(Some(&outline.text))
            .or(non_empty(outline.title.as_deref()))
            .or(non_empty(outline.xml_url.as_deref()))
            .unwrap_or_default()
            .to_owned();
        self.skipped.push(Skipped { outline, reason });
    }

    fn finish(self) -> Imported {
        Imported {
            feeds: self.feeds,
            skipped: self.skipped,
        }
    }
}

/// Checks and normalises an `xmlUrl`; the error is the reason to skip it.
fn feed_url(xml_url: &str) -> Result<String, String> {
    let raw = xml_url.trim();
    if raw.is_empty() {
        return Err("xmlUrl is empty".to_owned());
    }
    let url =
        url::Url::parse(raw).map_err(|e| format!("xmlUrl {raw:?} is not an absolute URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => Ok(url.to_string()),
        other => Err(format!(
            "xmlUrl {raw:?} has scheme {other:?}; only http and https feeds are supported"
        )),
    }
}

/// The path segments of a `category` attribute: "/Tech/Rust,/News" gives
/// "Tech", "Rust", "News".
fn category_tags(outline: &Outline) -> impl Iterator<Item = &str> {
    outline
        .category
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .flat_map(|path| path.split('/'))
}

/// Appends `tag`, trimmed, unless it is empty or already there.
fn add_tag(tags: &mut Vec<String>, tag: &str) {
    let tag = tag.trim();
    if !tag.is_empty() && !tags.iter().any(|t| t == tag) {
        tags.push(tag.to_owned());
    }
}

/// `s` trimmed, or `None` when that leaves nothing.
fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// A textual edit to the document.
struct Edit {
    /// Byte range to replace.
    range: (usize, usize),
    insert: &'static str,
}

impl Edit {
    fn apply(&self, text: &str) -> String {
        let (start, end) = self.range;
        let before = text.get(..start).unwrap_or_default();
        let after = text.get(end..).unwrap_or_default();
        format!("{before}{}{after}", self.insert)
    }
}

/// Checks that the root element, past the prolog (XML declaration,
/// comments, processing instructions, DOCTYPE), is `<opml>`, and returns the
/// edit that gives it a version the `opml` crate accepts, if one is needed.
///
/// This runs before the `opml` crate so that a wrong document gets a clear
/// error: the crate reports an RSS feed as "unexpected end of file".
fn check_root(text: &str) -> Result<Option<Edit>, OpmlError> {
    let not_opml = |reason: &str| OpmlError::NotOpml {
        reason: reason.to_owned(),
    };
    if text.trim().is_empty() {
        return Err(not_opml("the text is empty"));
    }
    let start = skip_misc(text, 0).ok_or_else(|| not_opml("the XML prolog is not terminated"))?;
    if !text.get(start..).unwrap_or_default().starts_with('<') {
        return Err(not_opml("it does not start with an XML element"));
    }
    let root = scan_start_tag(text, start)
        .ok_or_else(|| not_opml("the root element's start tag is malformed"))?;
    if root.name != "opml" {
        return Err(OpmlError::NotOpml {
            reason: format!("the root element is <{}>, expected <opml>", root.name),
        });
    }
    let version = root.attrs.iter().find(|a| a.name == "version");
    Ok(match version {
        Some(v) => {
            let value = text.get(v.value_start..v.value_end).unwrap_or_default();
            (!KNOWN_VERSIONS.contains(&value.trim())).then_some(Edit {
                range: (v.value_start, v.value_end),
                insert: "2.0",
            })
        }
        None => Some(Edit {
            range: (root.name_end, root.name_end),
            insert: " version=\"2.0\"",
        }),
    })
}

/// Skips whitespace, comments, processing instructions and a DOCTYPE from
/// `pos`; returns the offset of the next thing, or `None` if one of them is
/// not terminated.
fn skip_misc(text: &str, mut pos: usize) -> Option<usize> {
    loop {
        let rest = text.get(pos..)?;
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        let skip = if trimmed.starts_with("<?") {
            trimmed.find("?>")? + 2
        } else if trimmed.starts_with("<!--") {
            trimmed.find("-->")? + 3
        } else if trimmed.starts_with("<!DOCTYPE") {
            // An internal subset may contain '>' of its own.
            let close = trimmed.find('>')?;
            match trimmed.find('[') {
                Some(open) if open < close => {
                    let subset_end = open + trimmed.get(open..)?.find(']')?;
                    subset_end + trimmed.get(subset_end..)?.find('>')? + 1
                }
                _ => close + 1,
            }
        } else {
            return Some(pos);
        };
        pos += skip;
    }
}

/// A start tag found by [`scan_start_tag`]; all offsets are into the text.
struct StartTag<'a> {
    name: &'a str,
    name_end: usize,
    attrs: Vec<Attr<'a>>,
    /// Just past the closing `>`.
    end: usize,
    self_closing: bool,
}

struct Attr<'a> {
    name: &'a str,
    value_start: usize,
    value_end: usize,
}

/// Reads the start tag at `pos` (which holds its `<`). Just enough XML to
/// find attributes reliably: values may contain `>` and either quote.
fn scan_start_tag(text: &str, pos: usize) -> Option<StartTag<'_>> {
    let offset = |s: &str| text.len() - s.len();
    let rest = text.get(pos..)?.strip_prefix('<')?;
    let name_len = rest
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(rest.len());
    let name = rest.get(..name_len)?;
    if name.is_empty() {
        return None;
    }
    let mut rest = rest.get(name_len..)?;
    let name_end = offset(rest);
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/>") {
            return Some(StartTag {
                name,
                name_end,
                attrs,
                end: offset(after),
                self_closing: true,
            });
        }
        if let Some(after) = rest.strip_prefix('>') {
            return Some(StartTag {
                name,
                name_end,
                attrs,
                end: offset(after),
                self_closing: false,
            });
        }
        let attr_len = rest.find(|c: char| c.is_whitespace() || c == '=')?;
        let attr_name = rest.get(..attr_len)?;
        if attr_name.is_empty() || attr_name.contains(['<', '>', '/']) {
            return None;
        }
        rest = rest
            .get(attr_len..)?
            .trim_start()
            .strip_prefix('=')?
            .trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let value = rest.get(1..)?;
        let value_len = value.find(quote)?;
        attrs.push(Attr {
            name: attr_name,
            value_start: offset(value),
            value_end: offset(value) + value_len,
        });
        rest = value.get(value_len + 1..)?;
    }
}

/// `text` without the `<head>` element that follows the root start tag, or
/// `None` when there is no such element.
fn remove_head(text: &str) -> Option<String> {
    let root = scan_start_tag(text, skip_misc(text, 0)?)?;
    let start = skip_misc(text, root.end)?;
    let head = scan_start_tag(text, start)?;
    if head.name != "head" {
        return None;
    }
    let end = if head.self_closing {
        head.end
    } else {
        let close = head.end + text.get(head.end..)?.find("</head")?;
        close + text.get(close..)?.find('>')? + 1
    };
    Some(format!("{}{}", text.get(..start)?, text.get(end..)?))
}

/// `text` with every `&` that does not start a character reference or a
/// predefined entity written as `&amp;`, or `None` when there is no such `&`.
fn escape_bare_ampersands(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut changed = false;
    let mut parts = text.split('&');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        let reference = part
            .split_once(';')
            .is_some_and(|(name, _)| is_reference_name(name));
        out.push_str(if reference { "&" } else { "&amp;" });
        changed |= !reference;
        out.push_str(part);
    }
    changed.then_some(out)
}

/// Whether `&name;` is a character reference (`#233`, `#xE9`) or one of the
/// five entities XML predefines. Other entities (`&nbsp;`) would need a DTD,
/// which the parser does not read, so they are as broken as a bare `&`.
fn is_reference_name(name: &str) -> bool {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = name.strip_prefix("#x") {
        digits(hex, 16)
    } else if let Some(decimal) = name.strip_prefix('#') {
        digits(decimal, 10)
    } else {
        matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
    }
}

/// Writes an OPML 2.0 document with `title` in its head and the current time
/// as `dateCreated`. See [`export_at`].
pub fn export(feeds: &[FeedSpec], title: &str) -> String {
    export_at(feeds, title, Utc::now())
}

/// Writes an OPML 2.0 document with `title` in its head and `created` as
/// `dateCreated` (RFC 822).
///
/// A tagged feed is placed in a folder named after its first tag and carries
/// a `category` attribute listing all its tags as "/tag" paths, so readers
/// that know only folders and readers that know only categories both see its
/// tags. Untagged feeds sit at the top level. Each feed outline has
/// `type="rss"`, `text` and `title` (its title, else its URL) and `xmlUrl`.
///
/// Order: feeds keep their relative order; a folder sits where its first
/// feed would. So `import(export(feeds))` gives `feeds` stably grouped by
/// first tag, with the same titles and tag sets, provided that URLs are
/// distinct and already normalised (as [`import`] makes them), titles have
/// no surrounding whitespace and do not equal their URL, and tags are
/// trimmed and non-empty. A tag containing '/' or ',' cannot be written into
/// `category` (it would read back as several tags), so it survives only as
/// the first tag, the folder. Characters XML 1.0 cannot carry (most C0
/// controls) are dropped.
pub fn export_at(feeds: &[FeedSpec], title: &str, created: DateTime<Utc>) -> String {
    // Top-level items in output order: a lone feed, or a folder by index.
    enum Item<'a> {
        Feed(&'a FeedSpec),
        Folder(usize),
    }
    let mut items = Vec::new();
    let mut folders: Vec<(&str, Vec<&FeedSpec>)> = Vec::new();
    for feed in feeds {
        match feed.tags.iter().map(|t| t.trim()).find(|t| !t.is_empty()) {
            None => items.push(Item::Feed(feed)),
            Some(tag) => match folders.iter_mut().find(|(name, _)| *name == tag) {
                Some((_, members)) => members.push(feed),
                None => {
                    items.push(Item::Folder(folders.len()));
                    folders.push((tag, vec![feed]));
                }
            },
        }
    }

    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n");
    out.push_str("  <head>\n    <title>");
    escape_into(&mut out, title);
    out.push_str("</title>\n    <dateCreated>");
    out.push_str(&created.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
    out.push_str("</dateCreated>\n  </head>\n  <body>\n");
    for item in items {
        match item {
            Item::Feed(feed) => write_feed(&mut out, feed, "    "),
            Item::Folder(i) => {
                let Some((name, members)) = folders.get(i) else {
                    continue;
                };
                out.push_str("    <outline text=\"");
                escape_into(&mut out, name);
                out.push_str("\" title=\"");
                escape_into(&mut out, name);
                out.push_str("\">\n");
                for feed in members {
                    write_feed(&mut out, feed, "      ");
                }
                out.push_str("    </outline>\n");
            }
        }
    }
    out.push_str("  </body>\n</opml>\n");
    out
}

fn write_feed(out: &mut String, feed: &FeedSpec, indent: &str) {
    let name = feed
        .title
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(&feed.url);
    out.push_str(indent);
    // A page read with selectors is no feed another reader could poll:
    // it goes out as a link to the page (OPML 2.0 `type="link"`), never
    // as an `xmlUrl` that would hand that reader HTML.
    let (kind, url_attribute) = match feed.page {
        Some(_) => ("link", "url"),
        None => ("rss", "xmlUrl"),
    };
    out.push_str("<outline type=\"");
    out.push_str(kind);
    out.push_str("\" text=\"");
    escape_into(out, name);
    out.push_str("\" title=\"");
    escape_into(out, name);
    out.push_str("\" ");
    out.push_str(url_attribute);
    out.push_str("=\"");
    escape_into(out, &feed.url);
    out.push('"');
    if feed.page.is_some() {
        out.push_str(" htmlUrl=\"");
        escape_into(out, &feed.url);
        out.push('"');
    }

    let mut category = String::new();
    let mut written: Vec<&str> = Vec::new();
    for tag in feed.tags.iter().map(|t| t.trim()) {
        if tag.is_empty() || tag.contains(['/', ',']) || written.contains(&tag) {
            continue;
        }
        if !category.is_empty() {
            category.push(',');
        }
        category.push('/');
        category.push_str(tag);
        written.push(tag);
    }
    if !category.is_empty() {
        out.push_str(" category=\"");
        escape_into(out, &category);
        out.push('"');
    }
    out.push_str("/>\n");
}

/// Escapes `s` for use in attribute values and text content. Tab, newline
/// and carriage return become character references, because a parser turns
/// them into spaces (or strips them) when they appear literally in an
/// attribute. Characters XML 1.0 forbids are dropped: no reference can carry
/// them either.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{fffe}' | '\u{ffff}' => {}
            c if c < ' ' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(url: &str, title: Option<&str>, tags: &[&str]) -> FeedSpec {
        FeedSpec {
            url: url.to_owned(),
            title: title.map(str::to_owned),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            interval: None,
            full_text: None,
            request: Default::default(),
            rules: Default::default(),
            page: None,
        }
    }

    fn ok(text: &str) -> Imported {
        match import(text) {
            Ok(imported) => imported,
            Err(e) => panic!("import failed: {e}\n{text}"),
        }
    }

    /// Wraps outlines in a minimal 2.0 document.
    fn doc(body: &str) -> String {
        format!(r#"<opml version="2.0"><head><title>t</title></head><body>{body}</body></opml>"#)
    }

    /// Feeds as comparable values: order-insensitive, tags as sets.
    fn normalised(feeds: &[FeedSpec]) -> Vec<(String, Option<String>, Vec<String>)> {
        let mut out: Vec<_> = feeds
            .iter()
            .map(|f| {
                let mut tags = f.tags.clone();
                tags.sort();
                tags.dedup();
                (f.url.clone(), f.title.clone(), tags)
            })
            .collect();
        out.sort();
        out
    }

    fn assert_round_trip(feeds: &[FeedSpec]) {
        let xml = export(feeds, "Round trip");
        let back = ok(&xml);
        assert_eq!(back.skipped, vec![], "{xml}");
        assert_eq!(normalised(&back.feeds), normalised(feeds), "{xml}");
    }

    #[test]
    fn round_trip_keeps_feeds_titles_and_tag_sets() {
        assert_round_trip(&[
            spec("https://example.com/feed.xml", Some("Plain"), &[]),
            spec(
                "https://a.example/rss",
                Some("Tom & Jerry <3> \"quoted\" 'single'"),
                &["Tech", "Rust"],
            ),
            spec("https://b.example/atom?x=1&y=2", None, &["Tech"]),
            spec(
                "http://c.example/",
                Some("Ünïcødé — 日本語 🦀"),
                &["Ñews", "Tech", "日本"],
            ),
            spec(
                "https://d.example/feed",
                Some("tab\tand\nnewline\r\ninside"),
                &["Rust"],
            ),
            spec("https://e.example/feed", None, &[]),
        ]);
    }

    #[test]
    fn round_trip_of_nothing_is_nothing() {
        assert_round_trip(&[]);
    }

    #[test]
    fn round_trip_order_is_grouped_by_first_tag() {
        let feeds = [
            spec("https://1.example/", None, &["B"]),
            spec("https://2.example/", None, &[]),
            spec("https://3.example/", None, &["A", "B"]),
            spec("https://4.example/", None, &["B", "A"]),
            spec("https://5.example/", None, &[]),
        ];
        let urls: Vec<_> = ok(&export(&feeds, "t"))
            .feeds
            .into_iter()
            .map(|f| f.url)
            .collect();
        assert_eq!(
            urls,
            [
                "https://1.example/",
                "https://4.example/",
                "https://2.example/",
                "https://3.example/",
                "https://5.example/"
            ]
        );
    }

    #[test]
    fn round_trip_keeps_a_first_tag_with_a_slash() {
        // The folder carries it; `category` cannot, so it is left out there.
        assert_round_trip(&[spec("https://a.example/", None, &["a/b", "c"])]);
    }

    #[test]
    fn export_writes_folders_categories_and_head() {
        let created = Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).single();
        let Some(created) = created else {
            panic!("valid date");
        };
        let xml = export_at(
            &[
                spec("https://a.example/", Some("A & B"), &["Tech", "Rust"]),
                spec("https://b.example/", None, &[]),
            ],
            "My <feeds>",
            created,
        );
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head>
    <title>My &lt;feeds&gt;</title>
    <dateCreated>Tue, 04 Mar 2025 05:06:07 GMT</dateCreated>
  </head>
  <body>
    <outline text="Tech" title="Tech">
      <outline type="rss" text="A &amp; B" title="A &amp; B" xmlUrl="https://a.example/" category="/Tech,/Rust"/>
    </outline>
    <outline type="rss" text="https://b.example/" title="https://b.example/" xmlUrl="https://b.example/"/>
  </body>
</opml>
"#
        );
    }

    #[test]
    fn export_drops_characters_xml_cannot_carry() {
        let xml = export(
            &[spec("https://a.example/", Some("bell\u{7}s"), &[])],
            "t\u{0}",
        );
        assert_eq!(
            ok(&xml).feeds,
            vec![spec("https://a.example/", Some("bells"), &[])]
        );
    }

    #[test]
    fn nested_folders_become_tags_outermost_first() {
        let imported = ok(&doc(r#"
            <outline text="Tech">
              <outline title="Rust">
                <outline text="Deep"><outline xmlUrl="https://deep.example/" text="D"/></outline>
                <outline xmlUrl="https://rust.example/" text="R"/>
              </outline>
              <outline xmlUrl="https://tech.example/" text="T"/>
            </outline>
            <outline text="  "><outline xmlUrl="https://nameless.example/"/></outline>
            <outline xmlUrl="https://top.example/"/>"#));
        assert_eq!(
            imported.feeds,
            vec![
                spec(
                    "https://deep.example/",
                    Some("D"),
                    &["Tech", "Rust", "Deep"]
                ),
                spec("https://rust.example/", Some("R"), &["Tech", "Rust"]),
                spec("https://tech.example/", Some("T"), &["Tech"]),
                spec("https://nameless.example/", None, &[]),
                spec("https://top.example/", None, &[]),
            ]
        );
        assert_eq!(imported.skipped, vec![]);
    }

    #[test]
    fn category_attribute_adds_every_path_segment() {
        let imported = ok(&doc(r#"
            <outline text="Folder">
              <outline xmlUrl="https://a.example/" category="/Tech/Rust, /News,,Folder,/ /Plain" />
            </outline>"#));
        assert_eq!(
            imported.feeds,
            vec![spec(
                "https://a.example/",
                None,
                &["Folder", "Tech", "Rust", "News", "Plain"]
            )]
        );
    }

    #[test]
    fn title_prefers_title_then_text_and_drops_the_url() {
        let imported = ok(&doc(r#"
            <outline xmlUrl="https://a.example/" text="Text" title="Title"/>
            <outline xmlUrl="https://b.example/" text="  Text  " title=" "/>
            <outline xmlUrl="https://c.example" text="https://c.example"/>
            <outline xmlUrl="https://d.example" text="https://d.example/"/>
            <outline xmlUrl="https://e.example/" text=""/>"#));
        assert_eq!(
            imported.feeds,
            vec![
                spec("https://a.example/", Some("Title"), &[]),
                spec("https://b.example/", Some("Text"), &[]),
                spec("https://c.example/", None, &[]),
                spec("https://d.example/", None, &[]),
                spec("https://e.example/", None, &[]),
            ]
        );
    }

    #[test]
    fn missing_version_is_tolerated() {
        let imported = ok(r#"<opml><body><outline xmlUrl="https://a.example/"/></body></opml>"#);
        assert_eq!(imported.feeds, vec![spec("https://a.example/", None, &[])]);
    }

    #[test]
    fn known_and_unknown_versions_are_read() {
        for version in ["1.0", "1.1", "2.0", "3.0", "", "2.0.1"] {
            for quote in ['"', '\''] {
                let text = format!(
                    "<?xml version=\"1.0\"?>\n<opml xmlns:x=\"urn:x\"\n version={quote}{version}{quote} x:y='>'>\
                     <body><outline xmlUrl=\"https://a.example/\"/></body></opml>"
                );
                assert_eq!(ok(&text).feeds.len(), 1, "{text}");
            }
        }
    }

    #[test]
    fn empty_body_gives_no_feeds() {
        for body in [
            "<body></body>",
            "<body/>",
            "<body>\n  <!-- nothing -->\n</body>",
        ] {
            let text = format!(r#"<opml version="1.0"><head/>{body}</opml>"#);
            assert_eq!(ok(&text), Imported::default(), "{text}");
        }
        assert_eq!(ok("<opml><body/></opml>"), Imported::default());
    }

    #[test]
    fn unparseable_head_is_ignored() {
        let text = r#"<opml version="2.0"><head><title>x</title><vertScrollState></vertScrollState></head>
            <body><outline xmlUrl="https://a.example/"/></body></opml>"#;
        assert_eq!(ok(text).feeds.len(), 1);
    }

    #[test]
    fn bare_ampersands_are_read_as_text() {
        let text = r#"<opml version="2.0"><head><windowTop>x</windowTop></head><body>
            <outline text="Q&amp;A &#233; &#xE9; & more&nbsp;" xmlUrl="https://a.example/?a=1&b=2&c;=3"/>
            </body></opml>"#;
        assert_eq!(
            ok(text).feeds,
            vec![spec(
                "https://a.example/?a=1&b=2&c;=3",
                Some("Q&A é é & more&nbsp;"),
                &[]
            )]
        );
        assert_eq!(
            escape_bare_ampersands("&amp;&lt;&gt;&quot;&apos;&#1;&#x1F;"),
            None
        );
        assert_eq!(
            escape_bare_ampersands("&&#;&#x;&1a;&nbsp;&").as_deref(),
            Some("&amp;&amp;#;&amp;#x;&amp;1a;&amp;nbsp;&amp;")
        );
    }

    #[test]
    fn duplicate_urls_merge_tags_and_keep_the_first_title() {
        let imported = ok(&doc(r#"
            <outline text="A"><outline xmlUrl="https://a.example/feed" text="First"/></outline>
            <outline text="B"><outline xmlUrl="https://A.EXAMPLE/feed" text="Second" category="/A,/C"/></outline>
            <outline xmlUrl="https://b.example/"/>
            <outline xmlUrl="https://b.example/" text="Late title"/>"#));
        assert_eq!(
            imported.feeds,
            vec![
                spec("https://a.example/feed", Some("First"), &["A", "B", "C"]),
                spec("https://b.example/", Some("Late title"), &[]),
            ]
        );
    }

    #[test]
    fn page_feeds_export_as_links_to_their_page_not_as_feeds() {
        let page = FeedSpec {
            page: Some(crate::model::PageRule {
                item: "article".into(),
                ..Default::default()
            }),
            ..spec("https://news.example/list", Some("News page"), &["news"])
        };
        let plain = spec("https://feed.example/rss", None, &[]);
        let xml = export_at(&[page, plain.clone()], "Subs", Utc::now());
        assert!(
            xml.contains(
                r#"<outline type="link" text="News page" title="News page" url="https://news.example/list" htmlUrl="https://news.example/list" category="/news"/>"#
            ),
            "{xml}"
        );
        assert!(
            !xml.contains(r#"xmlUrl="https://news.example/list""#),
            "{xml}"
        );
        // Read back, it is no feed: only the real one is imported.
        let back = import(&xml).unwrap();
        assert_eq!(back.feeds.len(), 1);
        assert_eq!(back.feeds[0].url, plain.url);
    }

    #[test]
    fn bad_urls_are_skipped_with_a_reason() {
        let imported = ok(&doc(r#"
            <outline text="Relative" xmlUrl="/feed.xml"/>
            <outline title="Gopher" xmlUrl="gopher://example.com/1"/>
            <outline xmlUrl="feed://example.com/rss"/>
            <outline text="Empty" xmlUrl="  "/>
            <outline text="Note"/>
            <outline text="Good" xmlUrl=" https://good.example/ "/>"#));
        assert_eq!(
            imported.feeds,
            vec![spec("https://good.example/", Some("Good"), &[])]
        );
        let skipped: Vec<_> = imported
            .skipped
            .iter()
            .map(|s| s.outline.as_str())
            .collect();
        assert_eq!(
            skipped,
            [
                "Relative",
                "Gopher",
                "feed://example.com/rss",
                "Empty",
                "Note"
            ]
        );
        let reasons: Vec<_> = imported.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons[0].contains("not an absolute URL"), "{reasons:?}");
        assert!(reasons[1].contains("scheme \"gopher\""), "{reasons:?}");
        assert!(reasons[2].contains("scheme \"feed\""), "{reasons:?}");
        assert_eq!(reasons[3], "xmlUrl is empty");
        assert!(reasons[4].contains("no xmlUrl"), "{reasons:?}");
    }

    #[test]
    fn commented_outlines_are_skipped_with_their_children() {
        let imported = ok(&doc(r#"
            <outline text="Old" isComment="true"><outline xmlUrl="https://old.example/"/></outline>
            <outline text="Kept" isComment="false" xmlUrl="https://kept.example/"/>"#));
        assert_eq!(
            imported.feeds,
            vec![spec("https://kept.example/", Some("Kept"), &[])]
        );
        assert_eq!(imported.skipped.len(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        let cases = [
            ("", "not an OPML document: the text is empty"),
            ("   \n", "not an OPML document: the text is empty"),
            (
                "this is not xml",
                "not an OPML document: it does not start with an XML element",
            ),
            (
                "<?xml version=\"1.0\"",
                "not an OPML document: the XML prolog is not terminated",
            ),
            (
                r#"<?xml version="1.0"?><rss version="2.0"><channel/></rss>"#,
                "not an OPML document: the root element is <rss>, expected <opml>",
            ),
            (
                "<opml version=\"2.0>",
                "not an OPML document: the root element's start tag is malformed",
            ),
        ];
        for (text, message) in cases {
            match import(text) {
                Err(e) => assert_eq!(e.to_string(), message, "{text:?}"),
                Ok(imported) => panic!("{text:?} imported as {imported:?}"),
            }
        }
        let malformed = [
            r#"<opml version="2.0"><body><outline text="a"></body></opml>"#,
            r#"<opml version="2.0"><head/></opml>"#,
            "<opml version=\"2.0\"><body><outline text=\"a\"/>",
        ];
        for text in malformed {
            match import(text) {
                Err(e @ OpmlError::Malformed { .. }) => {
                    assert!(
                        e.to_string().starts_with("malformed OPML document: "),
                        "{e}"
                    )
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn feed_reader_export_fixture() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/opml/subscriptions.opml"
        ));
        let imported = ok(text);
        assert_eq!(imported.skipped, vec![]);
        assert_eq!(
            imported.feeds,
            vec![
                spec(
                    "https://hnrss.org/frontpage",
                    Some("Hacker News: Front Page"),
                    &["Tech"]
                ),
                spec("https://lwn.net/headlines/rss", Some("LWN.net"), &["Tech"]),
                spec(
                    "https://blog.rust-lang.org/feed.xml",
                    Some("Rust Blog"),
                    &["Tech", "Rust"]
                ),
                spec(
                    "https://this-week-in-rust.org/rss.xml",
                    Some("This Week in Rust"),
                    &["Tech", "Rust", "Newsletters"]
                ),
                spec("https://fasterthanli.me/index.xml", None, &["Tech", "Rust"]),
                spec(
                    "https://feeds.arstechnica.com/arstechnica/science?format=xml&utm_source=reader",
                    Some("Ars Technica — Science & Space"),
                    &[]
                ),
                spec(
                    "https://www.lemonde.fr/rss/une.xml",
                    Some("Le Monde – À la une"),
                    &[]
                ),
            ]
        );
        assert_round_trip(&imported.feeds);
    }
}
