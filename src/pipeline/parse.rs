//! The parse stage: raw feed bytes in, a sanitised [`ParsedFeed`] out.
//!
//! This module owns four things, in the order they happen:
//! 1. **Decoding**: choosing the character encoding (BOM → HTTP charset → XML
//!    declaration → valid UTF-8 → detection) and handing feed-rs UTF-8 whose
//!    XML declaration no longer names another encoding. feed-rs decodes by
//!    itself from the declaration only, ignores the HTTP charset, and fails the
//!    whole document on one malformed byte; decoding here, with replacement,
//!    sidesteps all three.
//! 2. **Leniency**: retrying documents feed-rs rejects but a reader should not
//!    (junk before the XML declaration, `<rss>` without a version it knows).
//! 3. **Mapping** feed-rs's model to ours: plain-text titles, absolute http(s)
//!    links, sanitised content, deduplicated authors and categories.
//! 4. **Identity**: each entry's stable `key`, never feed-rs's generated id
//!    (a random UUID when an item has neither guid nor link).
//!
//! It does no I/O and never panics on input; everything a document can get
//! wrong is either repaired or reported as a [`ParseError`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::ops::Range;

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::Encoding;
use feed_rs::model::{Content, Entry, Feed, FeedType, Link, Text};
use feed_rs::parser::{ParseErrorKind, ParseFeedError};
use siphasher::sip128::{Hasher128, SipHasher13};
use url::Url;

use super::sanitize::{Sanitizer, collapse_whitespace, html_to_text};
use std::time::Duration;

use crate::model::{Enclosure, FeedHints, ParsedEntry, ParsedFeed};

/// Longest `key` kept verbatim, in bytes. Longer guids and links are replaced
/// by a hash so keys stay index-friendly; a handful of feeds use whole
/// paragraphs, or data: URLs, as guids.
pub const MAX_KEY_LEN: usize = 512;

/// What our id generator hands feed-rs for items without a guid/id. A NUL
/// cannot occur in XML, so no real id collides with it; that is how we tell
/// "the document had an id" from "feed-rs made one up".
const GENERATED_ID: &str = "\u{0}tributary-generated";

/// How far into the document the XML declaration is looked for, matching the
/// WHATWG prescan's 1024 bytes.
const SNIFF_LEN: usize = 1024;

/// Why a document could not be read as a feed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("empty document: the response body has no content")]
    Empty,
    #[error(
        "not a feed: got an HTML page; the URL is probably a web page, use the feed it links to with <link rel=\"alternate\">"
    )]
    HtmlPage,
    #[error("not a feed: no <rss>, <feed>, <rdf:RDF> or JSON Feed root found")]
    NotAFeed,
    #[error("not a feed: the <rss> element has no <channel> and no <item>")]
    RssWithoutChannel,
    /// The document is a feed with items, but not one could be read: an
    /// error, so the feed never looks fine while showing nothing.
    #[error(
        "no entries read: the document has {items} item(s) but none has a title, link or text we can read"
    )]
    NothingRead { items: usize },
    #[error("invalid XML: {detail}")]
    Xml { detail: String },
    #[error("invalid JSON Feed: {detail}")]
    Json { detail: String },
    #[error("unsupported JSON Feed version {version:?}")]
    JsonVersion { version: String },
    /// The XML is well-formed but breaks a rule of its feed format. The
    /// position is a byte offset into the document after decoding to UTF-8.
    #[error("malformed feed at byte {position}: {detail}")]
    Malformed { position: u64, detail: String },
    #[error("unreadable feed: {detail}")]
    Other { detail: String },
    /// feed-rs panicked on this document; a bug in feed-rs, not in the feed.
    #[error("feed parser crashed on this document (a feed-rs bug): {detail}")]
    ParserPanic { detail: String },
}

/// Parse raw feed bytes.
///
/// `charset` is the HTTP `Content-Type` charset parameter if any; `feed_url`
/// is the final URL the bytes came from: the base for relative links, and the
/// fallback base when sanitising content. If `feed_url` is not an absolute URL
/// the document still parses, but relative links are dropped.
///
/// Dates are passed through as the feed gives them, parsed leniently by
/// feed-rs; a `published` date in the future is *not* clamped here, so callers
/// that sort or filter by date should decide what "the future" means.
pub fn parse_feed(
    body: &[u8],
    charset: Option<&str>,
    feed_url: &str,
    sanitizer: &Sanitizer,
) -> Result<ParsedFeed, ParseError> {
    parse_feed_with(
        body,
        charset,
        feed_url,
        sanitizer,
        crate::values::DEFAULT_MAX_CONTENT,
    )
}

/// [`parse_feed`] with content cut to `max_content` bytes (`[retention]
/// max_content_size`), with a visible note, so one huge item cannot bloat
/// the database and every page that shows it.
pub fn parse_feed_with(
    body: &[u8],
    charset: Option<&str>,
    feed_url: &str,
    sanitizer: &Sanitizer,
    max_content: usize,
) -> Result<ParsedFeed, ParseError> {
    // A base feed-rs cannot parse would fail every document, so only a real
    // one is passed on.
    let base = Url::parse(feed_url).ok().filter(|u| !u.cannot_be_a_base());
    let text = decode(body, charset, base.as_ref());
    let doc = text.trim_start_matches(|c: char| c == '\u{FEFF}' || c.is_whitespace());
    if doc.is_empty() {
        return Err(ParseError::Empty);
    }
    let feed = parse_leniently(doc, base.as_ref()).map_err(|e| to_parse_error(e, doc))?;
    let ttl = feed.ttl;
    let items = feed.entries.len();
    let content_bases = if feed.feed_type == FeedType::Atom && doc.contains("xml:base") {
        atom_content_bases(doc, base.as_ref())
    } else {
        HashMap::new()
    };
    let mut parsed = map_feed(
        feed,
        base.as_ref(),
        sanitizer,
        max_content,
        chrono::Utc::now(),
        content_bases,
    );
    if parsed.entries.is_empty() {
        // feed-rs reads items it cannot use as nothing; count what the
        // document holds so an unreadable feed is an error, not silence.
        let items = items.max(count_items(doc));
        if items > 0 {
            return Err(ParseError::NothingRead { items });
        }
    }
    parsed.hints = scan_hints(doc, ttl);
    Ok(parsed)
}

/// Items (`<item>`, `<entry>`) or JSON Feed items in a document, roughly:
/// for the error message of a feed none of whose items could be read.
fn count_items(doc: &str) -> usize {
    if doc.starts_with('{') {
        return serde_json::from_str::<serde_json::Value>(doc)
            .ok()
            .and_then(|v| v.get("items")?.as_array().map(Vec::len))
            .unwrap_or(0);
    }
    let tags = |t: &str| {
        doc.match_indices(t)
            .filter(|(i, m)| {
                doc.as_bytes()
                    .get(i + m.len())
                    .is_some_and(|b| b.is_ascii_whitespace() || *b == b'>')
            })
            .count()
    };
    tags("<item") + tags("<entry")
}

// ---------------------------------------------------------------------------
// Polling hints
// ---------------------------------------------------------------------------

/// Reads what the channel says about polling: RSS `<ttl>` (feed-rs has it),
/// `sy:updatePeriod`/`sy:updateFrequency`, `<skipHours>` and `<skipDays>`
/// (feed-rs drops those). Scans only the channel's head: it stops at the
/// first item, so the cost does not grow with the document.
fn scan_hints(doc: &str, ttl_minutes: Option<u32>) -> FeedHints {
    use quick_xml::events::Event;
    let mut hints = FeedHints {
        ttl: ttl_minutes
            .filter(|&m| m > 0)
            .map(|m| Duration::from_secs(u64::from(m) * 60)),
        ..FeedHints::default()
    };
    if !doc.starts_with('<') {
        return hints; // JSON Feed: none of these exist.
    }
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut path: Vec<String> = Vec::new();
    let (mut period, mut frequency): (Option<String>, Option<u64>) = (None, None);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name().into_inner().to_ascii_lowercase();
                if name == "item" || name == "entry" || path.len() > 8 {
                    break;
                }
                path.push(name);
            }
            Ok(Event::End(_)) => {
                path.pop();
            }
            Ok(Event::Text(t)) => {
                let text = t.xml10_content();
                let text = text.trim();
                let leaf = path.last().map(String::as_str);
                let parent = path
                    .len()
                    .checked_sub(2)
                    .and_then(|i| path.get(i))
                    .map(String::as_str);
                match (parent, leaf) {
                    (Some("skiphours"), Some("hour")) => {
                        // 24 is sometimes written for midnight.
                        if let Ok(h) = text.parse::<u8>().map(|h| h % 24)
                            && !hints.skip_hours.contains(&h)
                        {
                            hints.skip_hours.push(h);
                        }
                    }
                    (Some("skipdays"), Some("day")) => {
                        if let Some(d) = weekday(text)
                            && !hints.skip_days.contains(&d)
                        {
                            hints.skip_days.push(d);
                        }
                    }
                    (_, Some("updateperiod")) => period = Some(text.to_ascii_lowercase()),
                    (_, Some("updatefrequency")) => frequency = text.parse().ok(),
                    _ => {}
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Skipping every hour or every day would mean never polling: ignore.
    if hints.skip_hours.len() >= 24 {
        hints.skip_hours.clear();
    }
    if hints.skip_days.len() >= 7 {
        hints.skip_days.clear();
    }
    hints.skip_hours.sort_unstable();
    hints.skip_days.sort_unstable();
    let base = match period.as_deref() {
        Some("hourly") => Some(3600),
        Some("daily") => Some(86_400),
        Some("weekly") => Some(7 * 86_400),
        Some("monthly") => Some(30 * 86_400),
        Some("yearly") => Some(365 * 86_400),
        _ => None,
    };
    hints.update_period =
        base.map(|secs: u64| Duration::from_secs(secs / frequency.filter(|&f| f > 0).unwrap_or(1)));
    hints
}

/// RSS day names; 0 = Monday.
fn weekday(s: &str) -> Option<u8> {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let s = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == s)
        .and_then(|i| u8::try_from(i).ok())
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decodes `body` to UTF-8 text, never failing: malformed sequences become
/// U+FFFD. Borrows when the body is already valid UTF-8 that says so (or says
/// nothing); copies only when decoding or the declaration rewrite demands it.
fn decode<'a>(body: &'a [u8], charset: Option<&str>, base: Option<&Url>) -> Cow<'a, str> {
    let (encoding, payload) = choose_encoding(body, charset, base);
    let (text, _had_errors) = encoding.decode_without_bom_handling(payload);
    declare_utf8(text)
}

/// Picks the encoding, returning it with the bytes to decode (the BOM cut
/// off). Order: BOM → UTF-16 byte pattern → HTTP charset → XML declaration →
/// valid UTF-8 → mostly UTF-8 → chardetng.
fn choose_encoding<'a>(
    body: &'a [u8],
    charset: Option<&str>,
    base: Option<&Url>,
) -> (&'static Encoding, &'a [u8]) {
    choose_encoding_with(body, charset, base, xml_encoding_span)
}

/// Decodes an HTML page to text, never failing: BOM → HTTP charset →
/// `<meta charset>` in the first 1024 bytes → valid UTF-8 → detection.
/// html5ever does not prescan for `<meta charset>` itself.
pub fn decode_html(body: &[u8], charset: Option<&str>, url: Option<&Url>) -> String {
    let (encoding, payload) = choose_encoding_with(body, charset, url, meta_charset_span);
    encoding.decode_without_bom_handling(payload).0.into_owned()
}

/// Where a `<meta charset=…>` or `<meta http-equiv=Content-Type
/// content="…; charset=…">` names the encoding, within the first 1024
/// bytes (a simplified WHATWG prescan: enough for real pages).
fn meta_charset_span(bytes: &[u8]) -> Option<Range<usize>> {
    let head = bytes.get(..bytes.len().min(SNIFF_LEN))?;
    let lower = head.to_ascii_lowercase();
    let mut from = 0;
    while let Some(meta) = find(lower.get(from..)?, b"<meta").map(|i| i + from) {
        let end = find(lower.get(meta..)?, b">").map_or(lower.len(), |i| i + meta);
        let tag = lower.get(meta..end)?;
        if let Some(at) = find(tag, b"charset=") {
            let mut start = meta + at + b"charset=".len();
            while matches!(lower.get(start), Some(b'"' | b'\'' | b' ')) {
                start += 1;
            }
            let len = lower
                .get(start..end)?
                .iter()
                .position(|c| matches!(c, b'"' | b'\'' | b' ' | b';' | b'/' | b'>'))
                .unwrap_or(end - start);
            if len > 0 {
                return Some(start..start + len);
            }
        }
        from = end;
    }
    None
}

fn choose_encoding_with<'a>(
    body: &'a [u8],
    charset: Option<&str>,
    base: Option<&Url>,
    declared_in_doc: fn(&[u8]) -> Option<Range<usize>>,
) -> (&'static Encoding, &'a [u8]) {
    if let Some((encoding, bom_len)) = Encoding::for_bom(body) {
        return (encoding, body.get(bom_len..).unwrap_or_default());
    }
    if let Some(encoding) = utf16_without_bom(body) {
        return (encoding, body);
    }
    let declared = charset
        .and_then(|c| usable_label(c.as_bytes()))
        .or_else(|| {
            let range = declared_in_doc(body)?;
            usable_label(body.get(range)?)
        });
    if let Some(encoding) = declared {
        return (encoding, body);
    }
    if std::str::from_utf8(body).is_ok() || is_mostly_utf8(body) {
        return (encoding_rs::UTF_8, body);
    }
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(body, true);
    let tld = base.and_then(tld_of);
    (detector.guess(tld, Utf8Detection::Allow), body)
}

/// Maps a declared charset label to an encoding we can trust.
///
/// A UTF-16 label reached here is a lie: a real UTF-16 document would have
/// had a BOM or the UTF-16 byte pattern. The WHATWG prescan treats it as
/// UTF-8, and so do we. The "replacement" encoding (labels like `iso-2022-kr`)
/// would turn the whole document into a single U+FFFD, so it counts as no
/// declaration.
fn usable_label(label: &[u8]) -> Option<&'static Encoding> {
    let label = label.trim_ascii();
    let label = label
        .strip_prefix(b"\"")
        .and_then(|l| l.strip_suffix(b"\""))
        .or_else(|| label.strip_prefix(b"'").and_then(|l| l.strip_suffix(b"'")))
        .unwrap_or(label);
    match Encoding::for_label(label)? {
        e if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE => Some(encoding_rs::UTF_8),
        e if e == encoding_rs::REPLACEMENT => None,
        e => Some(e),
    }
}

/// Recognises BOM-less UTF-16 by its first character, `<` (XML spec,
/// appendix F): `3C 00` is little-endian, `00 3C` big-endian.
fn utf16_without_bom(body: &[u8]) -> Option<&'static Encoding> {
    match body.get(..2)? {
        [b'<', 0] => Some(encoding_rs::UTF_16LE),
        [0, b'<'] => Some(encoding_rs::UTF_16BE),
        _ => None,
    }
}

/// Whether invalid UTF-8 is really UTF-8 with a few stray bytes rather than a
/// legacy encoding. Text in a single-byte or legacy CJK encoding almost never
/// forms valid multi-byte UTF-8 sequences by accident, while a UTF-8 document
/// with one bad byte is full of them. Sending the latter to chardetng would
/// turn every correct accented letter into mojibake to "fix" one byte.
fn is_mostly_utf8(bytes: &[u8]) -> bool {
    let mut valid_multibyte = 0usize;
    let mut invalid = 0usize;
    let mut rest = bytes;
    loop {
        let (valid, after) = match std::str::from_utf8(rest) {
            Ok(s) => (s.as_bytes(), None),
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `None` means the input ends mid-sequence.
                let bad_len = e.error_len().unwrap_or(after.len());
                (valid, Some(after.get(bad_len..).unwrap_or_default()))
            }
        };
        // Lead bytes of multi-byte sequences are 0xC0 and up.
        valid_multibyte += valid.iter().filter(|&&b| b >= 0xC0).count();
        match after {
            None => break,
            Some(after) => {
                invalid += 1;
                rest = after;
            }
        }
    }
    valid_multibyte > 0 && valid_multibyte >= 2 * invalid
}

/// The top-level domain chardetng wants: the last DNS label, lowercase ASCII.
/// IP addresses and odd labels give `None` (chardetng panics on a bad label).
fn tld_of(url: &Url) -> Option<&[u8]> {
    let Some(url::Host::Domain(host)) = url.host() else {
        return None;
    };
    let tld = host.trim_end_matches('.').rsplit('.').next()?;
    let ok = !tld.is_empty()
        && tld
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(tld.as_bytes())
}

/// The byte range of the `encoding` value in an XML declaration
/// (`<?xml … encoding="X" … ?>`) within the first [`SNIFF_LEN`] bytes. Works
/// on raw ASCII-compatible bytes and on decoded text alike.
fn xml_encoding_span(bytes: &[u8]) -> Option<Range<usize>> {
    let head = bytes.get(..SNIFF_LEN).unwrap_or(bytes);
    let start = find(head, b"<?xml")?;
    // `<?xml-stylesheet …?>` is a processing instruction, not the declaration.
    if !head.get(start + 5)?.is_ascii_whitespace() {
        return None;
    }
    let decl_len = find(head.get(start..)?, b"?>")?;
    let decl = head.get(start..start + decl_len)?;
    let attr = find(decl, b"encoding")?;
    let mut i = start + attr + b"encoding".len();
    let skip_ws = |i: &mut usize| {
        while head.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if head.get(i) != Some(&b'=') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    let quote = *head.get(i).filter(|&&q| q == b'"' || q == b'\'')?;
    let value_start = i + 1;
    let value_len = head.get(value_start..)?.iter().position(|&b| b == quote)?;
    Some(value_start..value_start + value_len)
}

/// Rewrites the XML declaration of decoded text to say UTF-8 when it names
/// another encoding that quick-xml knows; otherwise feed-rs would decode the
/// (already decoded) text a second time and produce mojibake.
fn declare_utf8(text: Cow<'_, str>) -> Cow<'_, str> {
    let Some(range) = xml_encoding_span(text.as_bytes()) else {
        return text;
    };
    let declared = text
        .as_bytes()
        .get(range.clone())
        .and_then(Encoding::for_label);
    match declared {
        Some(e) if e != encoding_rs::UTF_8 => {
            let mut owned = text.into_owned();
            // The range lies between ASCII quotes, so it is on char
            // boundaries; checked anyway because replace_range panics.
            if owned.is_char_boundary(range.start) && owned.is_char_boundary(range.end) {
                owned.replace_range(range, "utf-8");
            }
            Cow::Owned(owned)
        }
        _ => text,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Parsing with recovery
// ---------------------------------------------------------------------------

/// A feed's date. Well-formed RFC 2822 and RFC 3339 dates — nearly all of
/// them — are parsed directly; the rest get the repairs feed-rs's own
/// lenient parser applies (which it applies to every date, running eight
/// regular-expression replacements per entry before even trying: a tenth of
/// the parse time in the polling benchmark).
pub(super) fn timestamp(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = text.trim();
    chrono::DateTime::parse_from_rfc2822(t)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(t))
        .ok()
        .map(|d| d.to_utc())
        .or_else(|| repaired_timestamp(t))
}

/// feed-rs 3.0's repairs for dates that break the RFCs, in its order
/// (RFC 3339, RFC 2822, then RFC 1123 without a weekday); each pattern
/// replaces its first match only, as there. Not public in feed-rs.
fn repaired_timestamp(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use regex::Regex;
    use std::sync::LazyLock;
    type Fixes = LazyLock<Vec<(Regex, &'static str)>>;
    fn compile(fixes: &[(&str, &'static str)]) -> Vec<(Regex, &'static str)> {
        fixes
            .iter()
            .filter_map(|(re, to)| Regex::new(re).ok().map(|re| (re, *to)))
            .collect()
    }
    fn apply(fixes: &[(Regex, &'static str)], t: &str) -> String {
        let mut out = t.to_owned();
        for (re, to) in fixes {
            out = re.replace(&out, *to).into_owned();
        }
        out
    }
    static RFC3339: Fixes = LazyLock::new(|| {
        compile(&[
            (r"(\+|-)(\d{2})(\d{2})", "${1}${2}:${3}"),
            (r"-\d{2}$", "${0}T00:00:00+00:00"),
        ])
    });
    static RFC2822: Fixes = LazyLock::new(|| {
        compile(&[
            ("(UTC|-0000$)", "+0000"),
            ("(Sun|Mon|Tue|Wed|Thu|Fri|Sat)[a-z]*, ", ""),
            (
                "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*",
                "$1",
            ),
            (
                r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{1,2}) (\d{4})",
                "$2 $1 $3",
            ),
            (" 24:", " 00:"),
            (" ([0-9]):", " 0${1}:"),
        ])
    });
    static RFC1123: Fixes =
        LazyLock::new(|| compile(&[(" Z$", " +0000"), ("^[[:alpha:]]{3}, ", "")]));
    chrono::DateTime::parse_from_rfc3339(apply(&RFC3339, t).trim())
        .or_else(|_| chrono::DateTime::parse_from_rfc2822(&apply(&RFC2822, t)))
        .or_else(|_| chrono::DateTime::parse_from_str(&apply(&RFC1123, t), "%d %b %Y %H:%M:%S %z"))
        .ok()
        .map(|d| d.to_utc())
        .or_else(|| more_repaired_timestamp(t))
}

/// Repairs beyond feed-rs's, for dates lenient readers read: a weekday
/// without its comma (`Tue 23 Nov 2010 01:30:00 GMT`), a W3C date-time
/// without seconds (`2001-01-01T00:00+00:00`), and an ISO date with a
/// space for the `T` and an offset without colon (`2006-01-11 16:43:22
/// -0800`).
fn more_repaired_timestamp(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use regex::Regex;
    use std::sync::LazyLock;
    static WEEKDAY: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"^(?i)(mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?\s+(\d)").ok());
    static NO_SECONDS: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(Z|[+-]\d{2}:?\d{2})$").ok()
    });
    if let Some(re) = WEEKDAY.as_ref()
        && re.is_match(t)
    {
        let rest = re.replace(t, "$2");
        if let Ok(d) = chrono::DateTime::parse_from_rfc2822(&rest) {
            return Some(d.to_utc());
        }
    }
    if let Some(c) = NO_SECONDS.as_ref().and_then(|re| re.captures(t)) {
        let zone = match &c[3] {
            "Z" => "+00:00".to_owned(),
            z if z.len() == 5 => format!("{}:{}", &z[..3], &z[3..]),
            z => z.to_owned(),
        };
        let full = format!("{}T{}:00{zone}", &c[1], &c[2]);
        if let Ok(d) = chrono::DateTime::parse_from_rfc3339(&full) {
            return Some(d.to_utc());
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%d %H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S %z",
    ] {
        if let Ok(d) = chrono::DateTime::parse_from_str(t, format) {
            return Some(d.to_utc());
        }
    }
    None
}

/// One feed-rs attempt, with a fresh parser: it carries per-document Media
/// RSS state, and building one only boxes two closures.
///
/// feed-rs 3.0.0 can panic on input: its "email (name)" splitter slices
/// strings at byte offsets that may fall inside a multi-byte character
/// (`<author>Jörg·tom@example.com</author>`). A panic must not take the
/// poller down, so it is caught and reported as [`FeedRsError::Panic`].
/// (Under `panic = "abort"` this guard does nothing.)
fn try_parse(doc: &str, base: Option<&Url>) -> Result<Feed, FeedRsError> {
    let parser = feed_rs::parser::Builder::new()
        .base_uri(base.map(Url::as_str))
        .id_generator(|_links, _title, _base| GENERATED_ID.to_owned())
        // Sanitising happens once, in our stage, after URLs are made absolute.
        .sanitize_content(false)
        .timestamp_parser(timestamp)
        .build();
    // Unwind safety: nothing observes `parser` or `doc` after a panic.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parser.parse(doc.as_bytes())
    }));
    match result {
        Ok(parsed) => parsed.map_err(FeedRsError::Failed),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(FeedRsError::Panic(message))
        }
    }
}

/// A failed feed-rs attempt.
enum FeedRsError {
    Failed(ParseFeedError),
    Panic(String),
}

/// Parses `doc`, retrying the failures a lenient reader should survive.
/// A well-formed document is parsed exactly once, after the
/// normalisations of [`super::lenient`] (which borrow it when they have
/// nothing to change).
fn parse_leniently(doc: &str, base: Option<&Url>) -> Result<Feed, FeedRsError> {
    let mut doc = doc;
    let normalized;
    if doc.starts_with('<') {
        normalized = super::lenient::normalize(doc).0;
        doc = &*normalized;
    }
    let mut err = match try_parse(doc, base) {
        Ok(feed) => return Ok(feed),
        Err(e) => e,
    };

    // Junk before the XML declaration (a PHP warning, a stray `<br />`):
    // start at the declaration instead.
    if let Some(start) = xml_encoding_decl_start(doc).filter(|&s| s > 0) {
        doc = doc.get(start..).unwrap_or(doc);
        err = match try_parse(doc, base) {
            Ok(feed) => return Ok(feed),
            Err(e) => e,
        };
    }

    // A JSON Feed field of the wrong type (a number for an id, a string
    // for tags) makes feed-rs reject the whole feed: coerce field by field.
    if matches!(err, FeedRsError::Failed(ParseFeedError::JsonSerde(_))) {
        // A lone surrogate escape makes serde_json reject the document.
        let unpaired = super::lenient::replace_lone_surrogates(doc);
        let json = unpaired.as_deref().unwrap_or(doc);
        if let Some(fixed) = super::lenient::coerce_json_feed(json) {
            return try_parse(&fixed, base);
        }
        if unpaired.is_some() {
            return try_parse(json, base);
        }
    }

    // Not well-formed XML that a lenient reader recovers (a raw `&`, an
    // undefined HTML entity, a stray or unclosed tag): repaired once.
    if matches!(err, FeedRsError::Failed(ParseFeedError::XmlReader(_)))
        && let Some(fixed) = super::lenient::recover(doc)
    {
        match try_parse(&fixed, base) {
            // A repair that reads nothing explains less than the error.
            Ok(feed) if feed.entries.is_empty() => return Err(err),
            Ok(feed) => return Ok(feed),
            Err(e) if is_no_feed_root(&e) => {
                return match patch_rss_version(&fixed).map(|p| try_parse(&p, base)) {
                    Some(Ok(feed)) if !feed.entries.is_empty() => Ok(feed),
                    _ => Err(err),
                };
            }
            // The first error describes the document as it came.
            Err(_) => return Err(err),
        }
    }

    // feed-rs accepts <rss> only with version "2.0", "", "0.91" or "0.92";
    // anything else (missing, "0.93", "2.01", "2.0.1") is treated as RSS 2.0,
    // which is what every reader does.
    if is_no_feed_root(&err)
        && let Some(patched) = patch_rss_version(doc)
    {
        return try_parse(&patched, base);
    }
    Err(err)
}

fn is_no_feed_root(err: &FeedRsError) -> bool {
    matches!(
        err,
        FeedRsError::Failed(ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot))
    )
}

/// Where `<?xml ` starts, if it is within the first [`SNIFF_LEN`] bytes.
fn xml_encoding_decl_start(doc: &str) -> Option<usize> {
    let head = doc.as_bytes().get(..SNIFF_LEN).unwrap_or(doc.as_bytes());
    let start = find(head, b"<?xml")?;
    head.get(start + 5)
        .is_some_and(u8::is_ascii_whitespace)
        .then_some(start)
}

/// Returns `doc` with its root `<rss …>` start tag carrying `version="2.0"`
/// instead of whatever version it had; `None` if the root is not `<rss>`.
fn patch_rss_version(doc: &str) -> Option<String> {
    let tag = root_start_tag(doc)?;
    let name_and_attrs = doc.get(tag.start + 1..tag.end)?;
    let attrs = name_and_attrs.strip_prefix("rss")?;
    if !attrs.is_empty() && !attrs.starts_with(|c: char| c.is_ascii_whitespace() || c == '/') {
        return None; // `<rssfoo>`
    }
    let attrs = remove_attribute(attrs, "version");
    Some(format!(
        "{}<rss version=\"2.0\"{}{}",
        doc.get(..tag.start)?,
        attrs,
        doc.get(tag.end..)?
    ))
}

/// The byte range of the root element's start tag, `<` up to but excluding
/// `>`, skipping the XML declaration, processing instructions, comments and a
/// DOCTYPE (with an internal subset).
pub(super) fn root_start_tag(doc: &str) -> Option<Range<usize>> {
    let bytes = doc.as_bytes();
    let mut i = 0;
    loop {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let rest = bytes.get(i..)?;
        if rest.starts_with(b"<?") {
            i += find(rest, b"?>")? + 2;
        } else if rest.starts_with(b"<!--") {
            i += find(rest, b"-->")? + 3;
        } else if rest.starts_with(b"<!") {
            i += markup_end(rest)? + 1;
        } else if rest.starts_with(b"<") {
            return Some(i..i + markup_end(rest)?);
        } else {
            return None;
        }
    }
}

/// Index of the `>` closing the markup that starts `bytes`, skipping quoted
/// values and a DOCTYPE's `[…]` internal subset.
fn markup_end(bytes: &[u8]) -> Option<usize> {
    let mut quote = None;
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'[') => depth += 1,
            (None, b']') => depth = depth.saturating_sub(1),
            (None, b'>') if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Removes attribute `name` from the attribute part of a start tag (the text
/// after the element name). Borrows when the attribute is absent.
fn remove_attribute<'a>(attrs: &'a str, name: &str) -> Cow<'a, str> {
    let bytes = attrs.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let attr_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let name_start = i;
        while bytes
            .get(i)
            .is_some_and(|b| !b.is_ascii_whitespace() && !matches!(b, b'=' | b'>' | b'/'))
        {
            i += 1;
        }
        if i == name_start {
            i += 1; // `/`, `>` or a stray `=`
            continue;
        }
        let attr_name = attrs.get(name_start..i);
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let len = bytes
                        .get(i + 1..)
                        .and_then(|r| r.iter().position(|&b| b == q));
                    i = len.map_or(bytes.len(), |len| i + 1 + len + 1);
                }
                _ => {
                    while bytes
                        .get(i)
                        .is_some_and(|b| !b.is_ascii_whitespace() && *b != b'>')
                    {
                        i += 1;
                    }
                }
            }
        }
        if attr_name == Some(name)
            && let (Some(before), Some(after)) = (attrs.get(..attr_start), attrs.get(i..))
        {
            return Cow::Owned(format!("{before}{after}"));
        }
    }
    Cow::Borrowed(attrs)
}

fn to_parse_error(err: FeedRsError, doc: &str) -> ParseError {
    let err = match err {
        FeedRsError::Failed(err) => err,
        FeedRsError::Panic(detail) => return ParseError::ParserPanic { detail },
    };
    match err {
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) if looks_like_html(doc) => {
            ParseError::HtmlPage
        }
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot)
            if super::lenient::root_name(doc) == Some("rss") && !doc.contains("<channel") =>
        {
            ParseError::RssWithoutChannel
        }
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => ParseError::NotAFeed,
        ParseFeedError::ParseError(kind) => {
            let detail = kind.to_string();
            match kind {
                ParseErrorKind::UnknownMimeType { position, .. }
                | ParseErrorKind::MissingContent { position, .. }
                | ParseErrorKind::UnknownEnumVariant { position, .. }
                | ParseErrorKind::IllegalState { position, .. } => ParseError::Malformed {
                    position,
                    // feed-rs appends "at position N"; the variant says it.
                    detail: detail
                        .rsplit_once(" at position ")
                        .map_or(detail.as_str(), |(d, _)| d)
                        .to_owned(),
                },
                _ => ParseError::Other { detail },
            }
        }
        ParseFeedError::XmlReader(e) => {
            let detail = e.to_string();
            // feed-rs prefixes quick-xml's message with the error's kind.
            let detail = detail
                .strip_prefix("Parser error: ")
                .unwrap_or(&detail)
                .to_owned();
            ParseError::Xml { detail }
        }
        ParseFeedError::JsonSerde(e) => ParseError::Json {
            detail: e.to_string(),
        },
        ParseFeedError::JsonUnsupportedVersion(version) => ParseError::JsonVersion { version },
        ParseFeedError::IoError(e) => ParseError::Other {
            detail: e.to_string(),
        },
    }
}

fn looks_like_html(doc: &str) -> bool {
    let head = doc.as_bytes().get(..SNIFF_LEN).unwrap_or(doc.as_bytes());
    let lower = head.to_ascii_lowercase();
    find(&lower, b"<!doctype html").is_some() || find(&lower, b"<html").is_some()
}

// ---------------------------------------------------------------------------
// Mapping
// ---------------------------------------------------------------------------

/// What every entry mapping needs from its feed.
struct FeedContext<'a> {
    base: Option<&'a Url>,
    feed_type: FeedType,
    sanitizer: &'a Sanitizer,
    /// `[retention] max_content_size`.
    max_content: usize,
    /// Dates after a day past this are not believed.
    now: chrono::DateTime<chrono::Utc>,
    /// Normalised links that more than one guid-less item of this
    /// document points at: not an article's identity (a programme page
    /// every episode links to), so those items are keyed by more.
    shared_links: HashSet<String>,
    /// The `xml:base` in scope at each Atom entry's content, by entry id
    /// (see [`atom_content_bases`]).
    content_bases: HashMap<String, Url>,
}

fn map_feed(
    feed: Feed,
    base: Option<&Url>,
    sanitizer: &Sanitizer,
    max_content: usize,
    now: chrono::DateTime<chrono::Utc>,
    content_bases: HashMap<String, Url>,
) -> ParsedFeed {
    let mut ctx = FeedContext {
        base,
        feed_type: feed.feed_type.clone(),
        sanitizer,
        max_content,
        now,
        shared_links: HashSet::new(),
        content_bases: HashMap::new(),
    };
    ctx.shared_links = shared_links(&feed.entries, &ctx);
    ctx.content_bases = content_bases;
    // Same key twice in one document: the first one kept wins.
    let mut seen = HashSet::with_capacity(feed.entries.len());
    let mut entries = Vec::with_capacity(feed.entries.len());
    for entry in &feed.entries {
        if let Some(entry) = map_entry(entry, &ctx, &seen) {
            seen.insert(entry.key.clone());
            entries.push(entry);
        }
    }
    ParsedFeed {
        title: feed
            .title
            .as_ref()
            .and_then(|t| plain_title(t, &ctx.feed_type))
            .and_then(|t| crate::values::safe_text(&t, crate::values::MAX_TITLE_CHARS)),
        site_url: pick_alternate(&feed.links, base).map(String::from),
        hints: FeedHints::default(),
        entries,
    }
}

/// For each Atom entry (by its `<id>`), the `xml:base` in scope at its
/// content: the content's own, resolved against the entry's, resolved
/// against the feed's, resolved against the document's URL (RFC 4287
/// §2, XML Base). feed-rs applies xml:base to links but gives the
/// content only its own attribute, unresolved. Entries under no xml:base
/// at all are absent.
fn atom_content_bases(doc: &str, base: Option<&Url>) -> HashMap<String, Url> {
    use quick_xml::events::{BytesStart, Event};
    let mut out = HashMap::new();
    let mut reader = quick_xml::Reader::from_str(doc);
    reader.config_mut().check_end_names = false;
    // The base in scope at each open element (None: only the document's).
    let mut stack: Vec<Option<Url>> = Vec::new();
    let mut entry: Option<(usize, Option<String>, Option<Url>)> = None; // depth, id, content base
    let mut in_id = false;
    let xml_base = |e: &BytesStart<'_>, parent: Option<&Url>| -> Option<Url> {
        let attr = e
            .attributes()
            .flatten()
            .find(|a| a.key.as_ref() == "xml:base")?;
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .ok()?;
        resolve(&value, parent.or(base))
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let parent = stack.last().cloned().flatten();
                let here = xml_base(&e, parent.as_ref()).or(parent);
                let name = e.local_name();
                let name = name.as_ref();
                if name == "entry" {
                    entry = Some((stack.len(), None, None));
                }
                if let Some((depth, id, content)) = &mut entry {
                    if stack.len() == *depth + 1 && name == "id" {
                        in_id = id.is_none();
                    }
                    if stack.len() == *depth + 1 && name == "content" {
                        *content = here.clone();
                    }
                }
                stack.push(here);
            }
            Ok(Event::Empty(e)) => {
                if let Some((depth, _, content)) = &mut entry
                    && stack.len() == *depth + 1
                    && e.local_name().as_ref() == "content"
                {
                    let parent = stack.last().cloned().flatten();
                    *content = xml_base(&e, parent.as_ref()).or(parent);
                }
            }
            Ok(Event::Text(t)) if in_id => {
                if let Some((_, id, _)) = &mut entry {
                    *id = Some(t.xml10_content().trim().to_owned());
                }
            }
            Ok(Event::End(_)) => {
                in_id = false;
                stack.pop();
                if let Some((depth, id, content)) = &entry
                    && stack.len() == *depth
                {
                    // An entry's content outside any xml:base, with no
                    // content element, is left to the link.
                    let scoped = content.clone().or_else(|| stack.last().cloned().flatten());
                    if let (Some(id), Some(b)) = (id.clone(), scoped) {
                        out.insert(id, b);
                    }
                    entry = None;
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// The normalised links shared by two or more guid-less entries.
fn shared_links(entries: &[Entry], ctx: &FeedContext<'_>) -> HashSet<String> {
    let mut once = HashSet::new();
    let mut twice = HashSet::new();
    for entry in entries.iter().filter(|e| real_id(e).is_none()) {
        if let Some(link) = pick_alternate(&entry.links, ctx.base) {
            let link = normalize_link(&link);
            if !once.insert(link.clone()) {
                twice.insert(link);
            }
        }
    }
    twice
}

/// `None` for entries with neither title, link nor content, and for
/// entries whose key is in `seen` (checked before the costly sanitising).
fn map_entry(entry: &Entry, ctx: &FeedContext<'_>, seen: &HashSet<String>) -> Option<ParsedEntry> {
    use crate::values;
    let title = entry
        .title
        .as_ref()
        .and_then(|t| plain_title(t, &ctx.feed_type))
        .and_then(|t| values::safe_text(&t, values::MAX_TITLE_CHARS));
    let guid = real_id(entry);
    let link = pick_alternate(&entry.links, ctx.base).or_else(|| {
        // An RSS guid is a permalink unless isPermaLink="false"; feed-rs
        // drops that attribute, so a guid that is an absolute http(s) URL
        // stands in for a missing <link>.
        let is_rss = matches!(ctx.feed_type, FeedType::RSS0 | FeedType::RSS2);
        guid.filter(|_| is_rss)
            .and_then(|g| Url::parse(g).ok())
            .filter(is_web_url)
    });
    // Implausible dates (year 0, 1969, next year) are dropped: the store
    // then uses the time the entry was first seen.
    let plausible = |d: &chrono::DateTime<chrono::Utc>| values::plausible_date(*d, ctx.now);
    let published = entry.published.filter(plausible);
    let updated = entry.updated.filter(plausible);

    let body = pick_body(entry, &ctx.feed_type);
    let shared = link
        .as_ref()
        .is_some_and(|l| guid.is_none() && ctx.shared_links.contains(&normalize_link(l)));
    let key = if shared {
        shared_link_key(link.as_ref(), title.as_deref(), published, body.as_ref())
    } else {
        entry_key(guid, link.as_ref(), title.as_deref(), body.as_ref())
    };
    if seen.contains(&key) {
        return None;
    }
    // Relative URLs in content resolve against the content's own xml:base
    // if it has one, else the entry's page, else the feed. Only what is
    // not the entry's link is kept: serving falls back to the link.
    // In Atom, the xml:base in scope (the content's, resolved against its
    // entry's and feed's) is normative and wins over the link.
    let content_base = match ctx.content_bases.get(entry.id.trim()) {
        Some(b) => Some(b.clone()).filter(|b| Some(b) != link.as_ref()),
        None => entry
            .base
            .as_deref()
            .and_then(|b| resolve(b, ctx.base))
            .filter(|b| Some(b) != link.as_ref())
            .or_else(|| link.is_none().then(|| ctx.base.cloned()).flatten()),
    };
    // Stored as the feed gave it and sanitised when served (see
    // `serve`): most stored entries are never in an output page, and
    // sanitising every entry of every poll was a fifth of a poll's CPU.
    let content_html = body.as_ref().and_then(|body| {
        let html = match body {
            Body::Html(html) => html.trim().to_owned(),
            Body::Plain(text) => plain_to_html(text),
        };
        let html = values::legal_text(&html);
        let html = values::cap_html(&html, ctx.max_content).into_owned();
        ctx.sanitizer.may_store(&html).then_some(html)
    });

    if title.is_none() && link.is_none() {
        // Kept only for what it shows; rare enough to sanitise here to know.
        let shows = content_html
            .as_deref()
            .and_then(|html| ctx.sanitizer.clean_html(html, content_base.as_ref()))
            .is_some();
        if !shows {
            return None;
        }
    }
    let content_base = content_base.map(String::from);

    // A link several items share names no one story: it is no key for
    // recognising the story elsewhere either.
    let url_keys = if shared {
        Vec::new()
    } else {
        super::dedup::link_candidates(link.as_ref())
    };
    let mut authors = authors(entry);
    values::safe_list(&mut authors, values::MAX_NAME_CHARS, values::MAX_AUTHORS);
    let mut categories = categories(entry);
    values::safe_list(
        &mut categories,
        values::MAX_CATEGORY_CHARS,
        values::MAX_CATEGORIES,
    );
    let mut enclosures = enclosures(entry, ctx);
    for enc in &mut enclosures {
        if let Some(t) = &mut enc.media_type {
            values::make_legal(t);
        }
    }
    enclosures.retain(|e| e.url.len() <= values::MAX_URL_BYTES);
    let link = link
        .map(String::from)
        .filter(|l| l.len() <= values::MAX_URL_BYTES);
    let mut parsed = ParsedEntry {
        key,
        title,
        url_keys,
        link,
        content_html,
        content_base,
        authors,
        categories,
        published,
        updated,
        enclosures,
        content_hash: None,
        search_words: None,
    };
    parsed.content_hash = Some(parsed.compute_content_hash());
    Some(parsed)
}

/// A title as one line of plain text; `None` when blank.
///
/// Markup is only interpreted where the feed says the title is HTML (Atom
/// `type="html"`/`"xhtml"`), or, where it cannot say (RSS, JSON Feed),
/// where it looks like HTML: a closing tag, a `<br>` or an entity left
/// after XML decoding. An Atom `type="text"` title, or an RSS title like
/// "History of the `<blink>` tag", keeps its angle brackets.
fn plain_title(text: &Text, feed_type: &FeedType) -> Option<String> {
    let declared_plain =
        *feed_type == FeedType::Atom && text.content_type.subty().as_str() == "plain";
    let html = !declared_plain
        && text.content.contains(['<', '&'])
        && (text.content_type.subty().as_str() != "plain" || looks_like_html_text(&text.content));
    let title = if html {
        html_to_text(&text.content)
    } else {
        collapse_whitespace(&text.content)
    };
    (!title.is_empty()).then_some(title)
}

/// Whether text with no declared type is HTML, as feedparser judges it:
/// it has an end tag, a `<br>`, or a character or entity reference.
fn looks_like_html_text(s: &str) -> bool {
    use regex::Regex;
    use std::sync::LazyLock;
    static HTML: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"(?i)</[a-z][a-z0-9]*\s*>|<br\s*/?>|&(#[0-9]+|#x[0-9a-f]+|[a-z][a-z0-9]*);")
            .ok()
    });
    HTML.as_ref().is_some_and(|re| re.is_match(s))
}

/// The guid/id the document gave the entry, if it gave one.
fn real_id(entry: &Entry) -> Option<&str> {
    Some(entry.id.trim()).filter(|id| !id.is_empty() && *id != GENERATED_ID)
}

/// Resolves a possibly relative URL; only absolute http(s) URLs survive.
fn resolve(raw: &str, base: Option<&Url>) -> Option<Url> {
    let raw = raw.trim();
    let url = match Url::parse(raw) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => base?.join(raw).ok()?,
        Err(_) => return None,
    };
    is_web_url(&url).then_some(url)
}

fn is_web_url(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https") && url.has_host()
}

/// Media type without parameters, compared case-insensitively.
fn media_type_is(media_type: &str, wanted: &[&str]) -> bool {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    wanted.iter().any(|w| essence.eq_ignore_ascii_case(w))
}

/// feed-rs labels Atom `type="xhtml"` as `application/xhtml`.
const HTML_TYPES: &[&str] = &["text/html", "application/xhtml+xml", "application/xhtml"];

/// The page a feed or entry points at: links with `rel` absent or
/// "alternate" (not comments, not self, not attachments), preferring one
/// typed text/html; resolved, absolute http(s).
fn pick_alternate(links: &[Link], base: Option<&Url>) -> Option<Url> {
    let candidates = links.iter().filter(|l| {
        l.target.is_none()
            && l.rel
                .as_deref()
                .is_none_or(|r| r.trim().eq_ignore_ascii_case("alternate"))
            && l.media_type
                .as_deref()
                .is_none_or(|t| media_type_is(t, HTML_TYPES))
    });
    let mut fallback = None;
    for link in candidates {
        let Some(url) = resolve(&link.href, base) else {
            continue;
        };
        if link.media_type.is_some() {
            return Some(url);
        }
        fallback.get_or_insert(url);
    }
    fallback
}

/// The entry body chosen for `content_html`, before sanitising.
enum Body<'a> {
    Html(&'a str),
    Plain(&'a str),
}

impl Body<'_> {
    /// Length of visible text, roughly: characters outside tags, not
    /// decoding entities. Only used to compare content with summary, so a
    /// scan beats building two DOMs per entry.
    fn approx_text_len(&self) -> usize {
        match self {
            Body::Plain(text) => text.chars().filter(|c| !c.is_whitespace()).count(),
            Body::Html(html) => {
                let mut in_tag = false;
                let mut len = 0;
                let mut chars = html.chars().peekable();
                while let Some(c) = chars.next() {
                    match c {
                        '<' if !in_tag
                            && chars
                                .peek()
                                .is_some_and(|n| n.is_ascii_alphabetic() || "/!?".contains(*n)) =>
                        {
                            in_tag = true
                        }
                        '>' if in_tag => in_tag = false,
                        _ if in_tag || c.is_whitespace() => {}
                        _ => len += 1,
                    }
                }
                len
            }
        }
    }

    /// The body as plain text, for the content hash.
    fn text(&self) -> String {
        match self {
            Body::Html(html) => html_to_text(html),
            Body::Plain(text) => collapse_whitespace(text),
        }
    }
}

/// Classifies a body by media type. RSS has no way to declare plain text,
/// and feed-rs labels some RSS fields (RSS 1.0 descriptions) text/plain even
/// though publishers put escaped HTML in them, so RSS bodies are always HTML.
/// Atom `type="text"` and JSON Feed `content_text`/`summary` mean what they
/// say. Other inline types (XML, base64-encoded files) are not shown.
fn classify<'a>(body: &'a str, media_type: &str, feed_type: &FeedType) -> Option<Body<'a>> {
    if body.trim().is_empty() {
        return None;
    }
    let rss = matches!(feed_type, FeedType::RSS0 | FeedType::RSS1 | FeedType::RSS2);
    if media_type_is(media_type, HTML_TYPES) || (rss && media_type_is(media_type, &["text/plain"]))
    {
        Some(Body::Html(body))
    } else if is_readable_text(media_type) {
        Some(Body::Plain(body))
    } else {
        None
    }
}

/// `text/*` other than HTML and XML (`text/plain`, `text/markdown`, …):
/// shown escaped, as written.
fn is_readable_text(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    essence
        .get(..5)
        .is_some_and(|t| t.eq_ignore_ascii_case("text/"))
        && !media_type_is(essence, &["text/xml"])
}

/// The richer of content and summary: content unless the summary has more
/// text (some feeds put a teaser in content and the article in summary).
fn pick_body<'a>(entry: &'a Entry, feed_type: &FeedType) -> Option<Body<'a>> {
    let content = entry
        .content
        .as_ref()
        .and_then(|c: &Content| classify(c.body.as_deref()?, c.content_type.as_str(), feed_type));
    let summary = entry
        .summary
        .as_ref()
        .and_then(|s| classify(&s.content, s.content_type.as_str(), feed_type));
    match (content, summary) {
        (Some(c), Some(s)) if s.approx_text_len() > c.approx_text_len() => Some(s),
        (Some(c), _) => Some(c),
        (None, Some(s)) => Some(s),
        // Nothing else: the text of a Media RSS group (YouTube puts it in
        // `media:group/media:description`) or a podcast's `itunes:summary`.
        (None, None) => entry.media.iter().find_map(|m| {
            let d = m.description.as_ref()?;
            classify(&d.content, d.content_type.as_str(), feed_type)
        }),
    }
}

/// Escapes plain text into HTML: blank lines separate `<p>` paragraphs,
/// single line breaks become `<br>`.
fn plain_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut in_paragraph = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if in_paragraph {
                out.push_str("</p>");
                in_paragraph = false;
            }
            continue;
        }
        out.push_str(if in_paragraph { "<br>" } else { "<p>" });
        in_paragraph = true;
        for c in line.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
    }
    if in_paragraph {
        out.push_str("</p>");
    }
    out
}

/// Pushes `value` unless it is blank or already present (order kept).
fn push_unique(list: &mut Vec<String>, value: &str) {
    let value = value.trim();
    if !value.is_empty() && !list.iter().any(|v| v == value) {
        list.push(value.to_owned());
    }
}

fn authors(entry: &Entry) -> Vec<String> {
    let mut out = Vec::with_capacity(entry.authors.len());
    for person in &entry.authors {
        // RSS writes authors as "email (Name)"; feed-rs splits off the
        // email but keeps the parentheses.
        let name = person
            .name
            .as_deref()
            .map(|n| {
                let n = n.trim();
                n.strip_prefix('(')
                    .and_then(|n| n.strip_suffix(')'))
                    .unwrap_or(n)
                    .trim()
            })
            .filter(|n| !n.is_empty());
        if let Some(value) = name.or(person.email.as_deref()) {
            push_unique(&mut out, value);
        }
    }
    out
}

fn categories(entry: &Entry) -> Vec<String> {
    let mut out = Vec::with_capacity(entry.categories.len());
    for category in &entry.categories {
        let term = Some(category.term.trim()).filter(|t| !t.is_empty());
        if let Some(value) = term.or(category.label.as_deref()) {
            push_unique(&mut out, value);
        }
    }
    out
}

/// Attachments: Media RSS / RSS `<enclosure>` / iTunes media, Atom
/// `rel="enclosure"` links and JSON Feed attachments (which feed-rs turns
/// into typed links without `rel`). Absolute http(s) only, unique by URL.
fn enclosures(entry: &Entry, ctx: &FeedContext<'_>) -> Vec<Enclosure> {
    let mut out: Vec<Enclosure> = Vec::new();
    let mut push = |url: Option<Url>, media_type: Option<String>, length: Option<u64>| {
        let Some(url) = url else { return };
        let url = String::from(url);
        if !out.iter().any(|e| e.url == url) {
            out.push(Enclosure {
                url,
                media_type,
                length,
            });
        }
    };
    for media in &entry.media {
        for content in &media.content {
            let url = content.url.clone().filter(is_web_url);
            let media_type = content.content_type.as_ref().map(|t| t.to_string());
            push(url, media_type, content.size);
        }
    }
    for link in &entry.links {
        let is_enclosure = match link.rel.as_deref() {
            Some(rel) => rel.trim().eq_ignore_ascii_case("enclosure"),
            None => {
                ctx.feed_type == FeedType::JSON
                    && link
                        .media_type
                        .as_deref()
                        .is_some_and(|t| !media_type_is(t, HTML_TYPES))
            }
        };
        if is_enclosure {
            push(
                resolve(&link.href, ctx.base),
                link.media_type.clone(),
                link.length,
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

/// The entry's stable key: `guid:` + the document's own id, else `link:` +
/// the normalised link, else `hash:` + a hash of title and content text.
fn entry_key(
    guid: Option<&str>,
    link: Option<&Url>,
    title: Option<&str>,
    body: Option<&Body<'_>>,
) -> String {
    if let Some(guid) = guid {
        return capped_key("guid", guid);
    }
    if let Some(link) = link {
        return capped_key("link", &normalize_link(link));
    }
    let content = body.map(Body::text).unwrap_or_default();
    let mut hasher = stable_hasher();
    hasher.write(title.unwrap_or_default().as_bytes());
    hasher.write(b"\0");
    hasher.write(content.as_bytes());
    format!("hash:{:032x}", hasher.finish128().as_u128())
}

/// The key of an entry known by its link alone: `link:` and the
/// normalised link, as [`entry_key`] makes it for a feed's guid-less
/// entries, so a page and a feed of one site key a story alike.
pub(super) fn link_key(link: &Url) -> String {
    capped_key("link", &normalize_link(link))
}

/// [`link_key`] with the link's fragment kept: for items of one page that
/// link its sections (`changes.html#v2`), where the fragment is what
/// names each one.
pub(super) fn fragment_link_key(link: &Url) -> String {
    match link.fragment().filter(|f| !f.is_empty()) {
        Some(fragment) => capped_key("link", &format!("{}#{fragment}", normalize_link(link))),
        None => link_key(link),
    }
}

/// The key of an entry with neither guid nor link: `hash:` and a hash of
/// its title and text, as [`entry_key`] makes it.
pub(super) fn text_key(title: Option<&str>, text: &str) -> String {
    let mut hasher = stable_hasher();
    hasher.write(title.unwrap_or_default().as_bytes());
    hasher.write(b"\0");
    hasher.write(text.as_bytes());
    format!("hash:{:032x}", hasher.finish128().as_u128())
}

/// The key of an entry whose link other entries of its document share
/// (a page whose items all link one section page): the link and a hash
/// of `distinct`, what tells them apart. Never equal to a [`link_key`].
pub(super) fn shared_key(link: &Url, distinct: &str) -> String {
    let mut hasher = stable_hasher();
    hasher.write(distinct.as_bytes());
    capped_key(
        "link",
        &format!(
            "{}#{:032x}",
            normalize_link(link),
            hasher.finish128().as_u128()
        ),
    )
}

/// The key of a guid-less entry whose link other entries of its document
/// share: the link plus a hash of what tells the items apart (title,
/// publication time, text). Items that agree on all of it are one.
fn shared_link_key(
    link: Option<&Url>,
    title: Option<&str>,
    published: Option<chrono::DateTime<chrono::Utc>>,
    body: Option<&Body<'_>>,
) -> String {
    let mut hasher = stable_hasher();
    hasher.write(title.unwrap_or_default().as_bytes());
    hasher.write(b"\0");
    hasher.write(
        published
            .map(|d| d.timestamp())
            .unwrap_or(i64::MIN)
            .to_string()
            .as_bytes(),
    );
    hasher.write(b"\0");
    hasher.write(body.map(Body::text).unwrap_or_default().as_bytes());
    let link = link.map(normalize_link).unwrap_or_default();
    // `#` cannot occur in a normalised link (the fragment is dropped), so
    // these keys never collide with plain link keys.
    capped_key(
        "link",
        &format!("{link}#{:032x}", hasher.finish128().as_u128()),
    )
}

/// SipHash-1-3 with fixed zero keys: unlike std's `DefaultHasher`, its output
/// is specified and never changes between builds, so keys stay valid across
/// upgrades.
fn stable_hasher() -> SipHasher13 {
    SipHasher13::new_with_keys(0, 0)
}

/// `prefix:value`, or `prefix-hash:<hex>` when that would exceed
/// [`MAX_KEY_LEN`].
fn capped_key(prefix: &str, value: &str) -> String {
    if prefix.len() + 1 + value.len() <= MAX_KEY_LEN {
        return format!("{prefix}:{value}");
    }
    let mut hasher = stable_hasher();
    hasher.write(value.as_bytes());
    format!("{prefix}-hash:{:032x}", hasher.finish128().as_u128())
}

/// A link as a key: the fragment and tracking parameters (`utm_*`, `fbclid`,
/// `gclid`) dropped; scheme and host are already lowercase and default ports
/// gone, courtesy of `url`'s parser. Other parameters keep their order and
/// their original encoding.
fn normalize_link(link: &Url) -> String {
    let mut url = link.clone();
    url.set_fragment(None);
    if let Some(query) = url.query() {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty() && !is_tracking_param(pair))
            .collect();
        let kept = kept.join("&");
        url.set_query((!kept.is_empty()).then_some(kept.as_str()));
    }
    url.into()
}

fn is_tracking_param(pair: &str) -> bool {
    let name = pair.split('=').next().unwrap_or_default();
    name.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("utm_"))
        || name.eq_ignore_ascii_case("fbclid")
        || name.eq_ignore_ascii_case("gclid")
}

#[cfg(test)]
mod tests {
    /// The dates feeds really send, well-formed or not, parse to the same
    /// instant whichever path takes them.
    #[test]
    fn timestamps_parse_directly_or_after_repair() {
        let at = |s: &str| super::timestamp(s).map(|d| d.to_rfc3339());
        let noon = Some("2026-03-01T12:00:00+00:00".to_owned());
        for ok in [
            "Sun, 01 Mar 2026 12:00:00 +0000",
            "Sun, 01 Mar 2026 12:00:00 GMT",
            " 2026-03-01T12:00:00Z ",
            "2026-03-01T13:00:00+01:00",
            // Repaired:
            "Sun, 01 Mar 2026 12:00:00 UTC",
            "Sunday, 01 March 2026 12:00:00 +0000",
            "Thurs, 01 Mar 2026 12:00:00 GMT",
            "Sun, 01 Mar 2026 12:00:00 -0000",
            "Mar 01 2026 12:00:00 +0000",
            "2026-03-01T13:00:00+0100",
            "Sun, 01 Mar 2026 12:00:00 Z",
        ] {
            assert_eq!(at(ok), noon, "{ok}");
        }
        assert_eq!(
            at("Sun, 01 Mar 2026 9:05:00 +0000"),
            Some("2026-03-01T09:05:00+00:00".to_owned())
        );
        assert_eq!(
            at("2026-03-01"),
            Some("2026-03-01T00:00:00+00:00".to_owned())
        );
        // Seen in real feeds: no comma after the weekday, a W3C date
        // without seconds, an ISO date with a space and a bare offset.
        assert_eq!(
            at("Tue 23 Nov 2010 01:30:00 GMT"),
            Some("2010-11-23T01:30:00+00:00".to_owned())
        );
        assert_eq!(
            at("2001-01-01T00:00+00:00"),
            Some("2001-01-01T00:00:00+00:00".to_owned())
        );
        assert_eq!(
            at("2006-01-11 16:43:22 -0800"),
            Some("2006-01-12T00:43:22+00:00".to_owned())
        );
        assert_eq!(
            at("2006-01-11T16:43Z"),
            Some("2006-01-11T16:43:00+00:00".to_owned())
        );
        assert_eq!(at("yesterday"), None);
        assert_eq!(at(""), None);
    }

    use super::*;

    /// What an output shows of an entry's content: stored as the feed gave
    /// it, sanitised on the way out as `serve` does.
    fn shown(e: &ParsedEntry) -> Option<String> {
        let html = e.content_html.as_deref()?;
        Sanitizer::new().clean_stored(html, e.content_base.as_deref(), e.link.as_deref())
    }
    use chrono::{DateTime, Utc};

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/feeds/",
                $name
            ))
            .as_slice()
        };
    }

    #[track_caller]
    fn parse(body: &[u8], charset: Option<&str>, url: &str) -> ParsedFeed {
        parse_feed(body, charset, url, &Sanitizer::new())
            .unwrap_or_else(|e| panic!("parse failed: {e}"))
    }

    #[track_caller]
    fn parse_err(body: &[u8]) -> ParseError {
        match parse_feed(body, None, "https://example.com/feed", &Sanitizer::new()) {
            Ok(feed) => panic!("expected an error, got {feed:?}"),
            Err(e) => e,
        }
    }

    fn date(s: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    fn titles(feed: &ParsedFeed) -> Vec<Option<&str>> {
        feed.entries.iter().map(|e| e.title.as_deref()).collect()
    }

    fn keys(feed: &ParsedFeed) -> Vec<&str> {
        feed.entries.iter().map(|e| e.key.as_str()).collect()
    }

    // --- fixtures, one per format -------------------------------------

    #[test]
    fn rss2_fixture() {
        let feed = parse(
            fixture!("rss2.xml"),
            None,
            "https://blog.example.com/feed.xml",
        );
        assert_eq!(feed.title.as_deref(), Some("Tom & Jerry\u{2019}s Blog"));
        // The channel <link>, not the atom:link rel="self".
        assert_eq!(feed.site_url.as_deref(), Some("https://blog.example.com/"));
        // The duplicate guid and the blank item are gone; order is kept.
        assert_eq!(
            titles(&feed),
            [
                Some("First post"),
                Some("Second post without guid"),
                None,
                Some("Permalink guid")
            ]
        );

        let first = &feed.entries[0];
        assert_eq!(first.key, "guid:tag:blog.example.com,2024:1");
        assert_eq!(
            first.link.as_deref(),
            Some("https://blog.example.com/2024/first-post/")
        );
        // content:encoded beats the shorter description; script, handlers
        // and iframe are gone; relative URLs resolve against the entry link.
        assert_eq!(
            shown(first).as_deref(),
            Some(
                "<p>Hello <b>world</b>.</p>\
                 <p>Read <a href=\"https://blog.example.com/2024/about/\" rel=\"noopener noreferrer\">about us</a>.</p>\
                 <img src=\"https://blog.example.com/2024/first-post/images/cat.png\" alt=\"A cat\">"
            )
        );
        assert_eq!(first.authors, ["Tom Cat", "Jerry"]);
        assert_eq!(first.categories, ["cats", "mice"]);
        assert_eq!(first.published, date("2024-01-02T10:00:00Z"));
        assert_eq!(
            first.enclosures,
            [Enclosure {
                url: "https://cdn.example.com/ep1.mp3".into(),
                media_type: Some("audio/mpeg".into()),
                length: Some(12345),
            }]
        );

        let second = &feed.entries[1];
        assert_eq!(
            second.key,
            "link:https://blog.example.com/2024/second/?id=7"
        );
        assert_eq!(
            second.link.as_deref(),
            Some(
                "https://blog.example.com/2024/second/?utm_source=rss&id=7&utm_medium=feed&fbclid=abc#comments"
            )
        );
        assert_eq!(
            shown(second).as_deref(),
            Some("<p>Escaped <i>HTML</i> description.</p>")
        );

        let note = &feed.entries[2];
        assert!(note.key.starts_with("hash:"), "{}", note.key);
        assert_eq!(note.link, None);
        assert_eq!(
            shown(note).as_deref(),
            Some("A note with neither guid nor link, only text.")
        );

        let permalink = &feed.entries[3];
        assert_eq!(
            permalink.key,
            "guid:https://blog.example.com/2024/permalink/"
        );
        assert_eq!(
            permalink.link.as_deref(),
            Some("https://blog.example.com/2024/permalink/")
        );
        assert_eq!(shown(permalink), None);
    }

    #[test]
    fn rss1_fixture() {
        let feed = parse(
            fixture!("rss1.rdf"),
            None,
            "https://rdf.example.org/index.rdf",
        );
        assert_eq!(feed.title.as_deref(), Some("RDF Site"));
        assert_eq!(feed.site_url.as_deref(), Some("https://rdf.example.org/"));
        // RSS 1.0 has no guid: the link is the key.
        assert_eq!(
            keys(&feed),
            [
                "link:https://rdf.example.org/news/1",
                "link:https://rdf.example.org/news/2"
            ]
        );
        let [one, two] = &feed.entries[..] else {
            panic!("two entries expected")
        };
        // feed-rs calls RSS 1.0 descriptions text/plain; they are HTML.
        assert_eq!(
            shown(one).as_deref(),
            Some("Plain <b>escaped</b> description")
        );
        assert_eq!(one.authors, ["Alice"]);
        assert_eq!(one.published, date("2024-02-01T08:30:00Z"));
        assert_eq!(two.link.as_deref(), Some("https://rdf.example.org/news/2"));
        assert_eq!(
            shown(two).as_deref(),
            Some(
                "<p>The <em>full</em> story, with <a href=\"https://rdf.example.org/more\" rel=\"noopener noreferrer\">more</a>.</p>"
            )
        );
        assert_eq!(two.published, date("2024-02-02T07:30:00Z"));
    }

    #[test]
    fn atom_fixture() {
        let feed = parse(
            fixture!("atom.xml"),
            None,
            "https://atom.example.net/feed.atom",
        );
        assert_eq!(feed.title.as_deref(), Some("Atom & Eve"));
        // The text/html alternate, not self and not the JSON alternate.
        assert_eq!(feed.site_url.as_deref(), Some("https://atom.example.net/"));
        assert_eq!(
            keys(&feed),
            [
                "guid:urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a",
                "guid:urn:uuid:2",
                "guid:urn:uuid:3"
            ]
        );

        let plain = &feed.entries[0];
        assert_eq!(plain.title.as_deref(), Some("Plain & simple"));
        assert_eq!(
            plain.link.as_deref(),
            Some("https://atom.example.net/2024/03/plain")
        );
        // type="text" is escaped, not interpreted, and gets paragraphs.
        assert_eq!(
            shown(plain).as_deref(),
            Some("<p>Line one &lt;not a tag&gt; &amp; more.</p><p>Second paragraph.</p>")
        );
        assert_eq!(plain.authors, ["Eve", "anon@example.net"]);
        assert_eq!(plain.categories, ["rust", "Label only"]);
        assert_eq!(plain.published, date("2024-03-01T08:00:00Z"));
        assert_eq!(plain.updated, date("2024-03-01T11:00:00Z"));
        assert_eq!(
            plain.enclosures,
            [Enclosure {
                url: "https://atom.example.net/media/clip.mp4".into(),
                media_type: Some("video/mp4".into()),
                length: Some(999),
            }]
        );

        let rich = &feed.entries[1];
        assert_eq!(rich.title.as_deref(), Some("Rich XHTML title"));
        assert_eq!(
            shown(rich).as_deref(),
            Some(
                "<p>The full <a href=\"https://atom.example.net/x\" rel=\"noopener noreferrer\">article</a> body, much longer than the teaser.</p>"
            )
        );

        // A summary with more text than the content wins.
        assert_eq!(
            shown(&feed.entries[2]).as_deref(),
            Some(
                "<p>This summary is the whole article and has much more text than the content.</p>"
            )
        );
    }

    #[test]
    fn json_feed_fixture() {
        let feed = parse(
            fixture!("jsonfeed.json"),
            None,
            "https://json.example.com/feed.json",
        );
        assert_eq!(feed.title.as_deref(), Some("JSON & Friends"));
        assert_eq!(feed.site_url.as_deref(), Some("https://json.example.com/"));
        assert_eq!(
            keys(&feed),
            ["guid:1", "guid:2", "link:https://json.example.com/posts/3"]
        );

        let first = &feed.entries[0];
        assert_eq!(
            first.link.as_deref(),
            Some("https://json.example.com/posts/1")
        );
        assert_eq!(
            shown(first).as_deref(),
            Some("<p>Hi <img src=\"https://json.example.com/img/1.png\"></p>")
        );
        assert_eq!(first.authors, ["Ann"]);
        assert_eq!(first.categories, ["json", "feeds"]);
        assert_eq!(first.published, date("2024-05-01T09:00:00Z"));
        assert_eq!(first.updated, date("2024-05-02T09:00:00Z"));
        assert_eq!(
            first.enclosures,
            [Enclosure {
                url: "https://json.example.com/files/talk.mp3".into(),
                media_type: Some("audio/mpeg".into()),
                length: Some(2048),
            }]
        );

        let text_only = &feed.entries[1];
        assert_eq!(text_only.title, None);
        assert_eq!(
            shown(text_only).as_deref(),
            Some(
                "<p>Just text with &lt;angle&gt; &amp; ampersand.</p><p>Second paragraph<br>with a line break.</p>"
            )
        );
        // The link keeps its fragment; only the key drops it.
        assert_eq!(
            feed.entries[2].link.as_deref(),
            Some("https://json.example.com/posts/3#top")
        );
    }

    #[test]
    fn atom_content_types() {
        let entry = |content: &str| {
            format!(
                "<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>t</title><entry><id>e</id>\
                 <title>t</title><summary>the summary</summary>{content}</entry></feed>"
            )
        };
        for (content, want) in [
            (
                "<content type=\"text/markdown\">*hi* &lt;b&gt; and more words here</content>",
                "<p>*hi* &lt;b&gt; and more words here</p>",
            ),
            (
                "<content type=\"image/png\">iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAA</content>",
                "<p>the summary</p>",
            ),
            (
                "<content type=\"html\">&lt;p&gt;html body, longer&lt;/p&gt;</content>",
                "<p>html body, longer</p>",
            ),
        ] {
            let feed = parse(entry(content).as_bytes(), None, "https://example.com/");
            assert_eq!(shown(&feed.entries[0]).as_deref(), Some(want), "{content}");
        }
    }

    #[test]
    fn json_feed_with_numeric_ids() {
        let doc = r#"{"version":"https://jsonfeed.org/version/1","title":"n",
            "items":[{"id":42,"title":"a"},{"id":4.5,"title":"b"},{"id":"s","title":"c"}]}"#;
        let feed = parse(doc.as_bytes(), None, "https://example.com/");
        assert_eq!(keys(&feed), ["guid:42", "guid:4.5", "guid:s"]);
    }

    #[test]
    fn relative_links_and_xml_base() {
        let feed = parse(
            fixture!("xml-base.xml"),
            None,
            "https://base.example.com/feed",
        );
        assert_eq!(
            feed.site_url.as_deref(),
            Some("https://base.example.com/blog/")
        );
        let [nested, own_base] = &feed.entries[..] else {
            panic!("two entries expected")
        };
        assert_eq!(
            nested.link.as_deref(),
            Some("https://base.example.com/blog/posts/hello.html")
        );
        assert_eq!(
            shown(nested).as_deref(),
            Some(
                "<p><img src=\"https://base.example.com/blog/posts/img/pic.jpg\" srcset=\"https://base.example.com/blog/posts/img/pic-2x.jpg 2x\"> \
                 <a href=\"https://base.example.com/blog/other.html\" rel=\"noopener noreferrer\">other</a> \
                 <a href=\"https://base.example.com/abs\" rel=\"noopener noreferrer\">abs</a></p>"
            )
        );
        assert_eq!(
            own_base.link.as_deref(),
            Some("https://base.example.com/root-relative")
        );
        assert_eq!(
            shown(own_base).as_deref(),
            Some("<img src=\"https://static.example.org/assets/a.png\">")
        );
    }

    #[test]
    fn rss_without_usable_version() {
        let feed = parse(
            fixture!("rss-no-version.xml"),
            None,
            "https://old.example.com/rss",
        );
        assert_eq!(feed.title.as_deref(), Some("Versionless"));
        assert_eq!(keys(&feed), ["guid:old-1"]);

        for root in [
            "<rss>",
            r#"<rss version="0.93">"#,
            r#"<rss version="0.94">"#,
            r#"<rss version='2.01'>"#,
            r#"<rss xmlns:dc="http://purl.org/dc/elements/1.1/" version = "2.0.1" xmlns:x="y">"#,
            "<rss\nversion=\"9\"\n>",
        ] {
            let doc = format!(
                "<?xml version=\"1.0\"?>\n<!DOCTYPE rss [<!ENTITY x \"y\">]>\n{root}<channel><title>T</title>\
                 <item><title>A</title><guid>a</guid></item></channel></rss>"
            );
            let feed = parse(doc.as_bytes(), None, "https://example.com/");
            assert_eq!(keys(&feed), ["guid:a"], "{root}");
        }
    }

    #[test]
    fn garbage_before_the_declaration() {
        let rss = "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>T</title>\
                   <item><title>A</title><guid>a</guid></item></channel></rss>";
        for junk in [
            "",
            "\n\n   \t",
            "\u{FEFF}\n",
            "Notice: undefined index\n",
            "<br />\n<b>Warning</b>: x in y.php\n",
        ] {
            let feed = parse(
                format!("{junk}{rss}").as_bytes(),
                None,
                "https://example.com/",
            );
            assert_eq!(keys(&feed), ["guid:a"], "{junk:?}");
        }
    }

    // --- identity -------------------------------------------------------

    #[test]
    fn hash_keys_are_stable() {
        let a = parse(
            fixture!("rss2.xml"),
            None,
            "https://blog.example.com/feed.xml",
        );
        let b = parse(
            fixture!("rss2.xml"),
            None,
            "https://mirror.example.org/other.xml",
        );
        assert_eq!(a.entries[2].key, b.entries[2].key);
        // Pinned: the hash must never change between builds or versions,
        // or every link-less entry would reappear as new after an upgrade.
        assert_eq!(a.entries[2].key, "hash:641e5414195c058f511e3506e63dd1af");

        let item = |title: &str, body: &str| {
            format!(
                "<rss version=\"2.0\"><channel><title>t</title><item><title>{title}</title>\
                 <description>{body}</description></item></channel></rss>"
            )
        };
        let key = |doc: String| {
            parse(doc.as_bytes(), None, "https://example.com/").entries[0]
                .key
                .clone()
        };
        assert_eq!(key(item("A", "body")), key(item("A", "body")));
        assert_ne!(key(item("A", "body")), key(item("B", "body")));
        assert_ne!(key(item("A", "body")), key(item("A", "other")));
        // Title and body are separated, so text cannot shift between them.
        assert_ne!(key(item("AB", "C")), key(item("A", "BC")));
    }

    #[test]
    fn duplicate_keys_keep_the_first() {
        let doc = "<rss version=\"2.0\"><channel><title>t</title>\
            <item><title>one</title><guid>same</guid></item>\
            <item><title>two</title><guid> same </guid></item>\
            <item><title>three</title><link>https://e.example/x#a</link></item>\
            <item><title>four</title><link>https://E.example/x?utm_campaign=z#b</link></item>\
            <item><guid>later</guid></item>\
            <item><title>five</title><guid>later</guid></item>\
            </channel></rss>";
        let feed = parse(doc.as_bytes(), None, "https://example.com/");
        // An empty first occurrence is dropped, so it claims no key. Two
        // guid-less items that share a link but not a title are two.
        assert_eq!(
            titles(&feed),
            [Some("one"), Some("three"), Some("four"), Some("five")]
        );
    }

    #[test]
    fn normalized_links() {
        for (input, want) in [
            ("https://example.com/a", "https://example.com/a"),
            ("HTTPS://EXAMPLE.com:443/A#frag", "https://example.com/A"),
            ("http://example.com:80/?", "http://example.com/"),
            ("http://example.com:8080/x", "http://example.com:8080/x"),
            (
                "https://e.com/p?utm_source=a&UTM_Medium=b&fbclid=c&gclid=d",
                "https://e.com/p",
            ),
            (
                "https://e.com/p?b=2&utm_x=1&a=1&",
                "https://e.com/p?b=2&a=1",
            ),
            (
                "https://e.com/p?q=a%20b&utm=keep",
                "https://e.com/p?q=a%20b&utm=keep",
            ),
        ] {
            let url = Url::parse(input).unwrap();
            assert_eq!(normalize_link(&url), want, "{input}");
        }
    }

    #[test]
    fn long_keys_are_hashed() {
        let long = "x".repeat(MAX_KEY_LEN);
        let key = capped_key("guid", &long);
        assert!(key.starts_with("guid-hash:") && key.len() < 64, "{key}");
        assert_eq!(key, capped_key("guid", &long));
        assert_ne!(key, capped_key("guid", &format!("{long}y")));
        let fits = "y".repeat(MAX_KEY_LEN - "guid:".len());
        assert_eq!(capped_key("guid", &fits).len(), MAX_KEY_LEN);
    }

    #[test]
    fn entries_without_title_link_or_content_are_dropped() {
        let doc = "<rss version=\"2.0\"><channel><title>t</title>\
            <item><title> </title><description><![CDATA[<p> </p><script>x</script>]]></description></item>\
            <item><link>javascript:alert(1)</link></item>\
            <item><title>kept</title></item>\
            </channel></rss>";
        let feed = parse(doc.as_bytes(), None, "https://example.com/");
        assert_eq!(titles(&feed), [Some("kept")]);
    }

    #[test]
    fn unusable_feed_url_still_parses() {
        let doc = "<rss version=\"2.0\"><channel><title>t</title><link>/home</link>\
            <item><title>a</title><link>/a</link><description><![CDATA[<a href=\"/x\">x</a>]]></description></item>\
            </channel></rss>";
        let feed = parse(doc.as_bytes(), None, "not a url");
        assert_eq!(feed.site_url, None);
        let entry = &feed.entries[0];
        assert_eq!(entry.link, None);
        assert_eq!(
            shown(entry).as_deref(),
            Some("<a rel=\"noopener noreferrer\">x</a>")
        );
    }

    // --- encodings ------------------------------------------------------

    /// An RSS document with `text` as the channel title, encoded with
    /// `encoding`, optionally declaring `declared` in its XML declaration.
    fn encoded_rss(text: &str, encoding: &'static Encoding, declared: Option<&str>) -> Vec<u8> {
        let decl = declared.map_or(String::new(), |d| {
            format!("<?xml version=\"1.0\" encoding=\"{d}\"?>\n")
        });
        let doc = format!(
            "{decl}<rss version=\"2.0\"><channel><title>{text}</title>\
             <item><title>{text}</title><guid>1</guid></item></channel></rss>"
        );
        let (bytes, _, unmappable) = encoding.encode(&doc);
        assert!(
            !unmappable,
            "{text:?} is not representable in {}",
            encoding.name()
        );
        bytes.into_owned()
    }

    #[track_caller]
    fn check_title(body: &[u8], charset: Option<&str>, url: &str, want: &str) {
        let feed = parse(body, charset, url);
        assert_eq!(feed.title.as_deref(), Some(want));
        assert_eq!(feed.entries[0].title.as_deref(), Some(want));
    }

    const RUSSIAN: &str = "Съешь же ещё этих мягких французских булок";
    const GERMAN: &str = "Grüße aus Köln, Straße und Ärger";
    const JAPANESE: &str = "日本語のフィードです。今日は良い天気ですね。";

    #[test]
    fn legacy_encodings() {
        use encoding_rs::{SHIFT_JIS, WINDOWS_1251, WINDOWS_1252};
        let url = "https://feeds.example.com/rss";
        // Declared only in the XML declaration.
        check_title(
            &encoded_rss(RUSSIAN, WINDOWS_1251, Some("windows-1251")),
            None,
            url,
            RUSSIAN,
        );
        check_title(
            &encoded_rss(JAPANESE, SHIFT_JIS, Some("Shift_JIS")),
            None,
            url,
            JAPANESE,
        );
        check_title(
            &encoded_rss(GERMAN, WINDOWS_1252, Some("ISO-8859-1")),
            None,
            url,
            GERMAN,
        );
        // Declared only by HTTP.
        check_title(
            &encoded_rss(RUSSIAN, WINDOWS_1251, None),
            Some("windows-1251"),
            url,
            RUSSIAN,
        );
        check_title(
            &encoded_rss(GERMAN, WINDOWS_1252, None),
            Some("\"iso-8859-1\""),
            url,
            GERMAN,
        );
        check_title(
            &encoded_rss(JAPANESE, SHIFT_JIS, None),
            Some("shift_jis"),
            url,
            JAPANESE,
        );
        // HTTP beats the declaration.
        check_title(
            &encoded_rss(RUSSIAN, WINDOWS_1251, Some("utf-8")),
            Some("cp1251"),
            url,
            RUSSIAN,
        );
        // Not declared at all: detected, with the TLD as a hint.
        check_title(
            &encoded_rss(RUSSIAN, WINDOWS_1251, None),
            None,
            "https://news.example.ru/",
            RUSSIAN,
        );
        check_title(
            &encoded_rss(JAPANESE, SHIFT_JIS, None),
            None,
            "https://example.jp/feed",
            JAPANESE,
        );
        check_title(
            &encoded_rss(GERMAN, WINDOWS_1252, None),
            None,
            "https://example.de/feed",
            GERMAN,
        );
    }

    #[test]
    fn encoding_fixtures() {
        let feed = parse(
            fixture!("windows-1251.xml"),
            None,
            "https://news.example.ru/rss",
        );
        assert_eq!(feed.title.as_deref(), Some("Новости дня"));
        assert_eq!(feed.entries[0].title.as_deref(), Some("Привет, мир"));

        let feed = parse(
            fixture!("iso-8859-1.xml"),
            Some("ISO-8859-1"),
            "https://latin.example.de/rss",
        );
        assert_eq!(feed.title.as_deref(), Some("Señor Müller's café"));
        assert_eq!(
            shown(&feed.entries[0]).as_deref(),
            Some("Straße, Ärger, Öl, ½ and ©.")
        );

        // One stray Latin-1 byte in a UTF-8 feed is one U+FFFD, not an error.
        let feed = parse(
            fixture!("rss-stray-byte.xml"),
            None,
            "https://utf8.example.fr/",
        );
        assert_eq!(feed.title.as_deref(), Some("Café crème"));
        assert_eq!(
            feed.entries[0].title.as_deref(),
            Some("Déjà vu – naïve \u{FFFD} here")
        );
    }

    #[test]
    fn unicode_encodings_and_boms() {
        let url = "https://example.com/";
        let text = "Ünïcödé ✓";
        let utf8 = encoded_rss(text, encoding_rs::UTF_8, Some("UTF-8"));
        check_title(
            &[b"\xEF\xBB\xBF".as_slice(), &utf8].concat(),
            None,
            url,
            text,
        );
        // A BOM overrides a wrong HTTP charset.
        check_title(
            &[b"\xEF\xBB\xBF".as_slice(), &utf8].concat(),
            Some("windows-1251"),
            url,
            text,
        );

        // UTF-16 with a BOM, the declaration saying UTF-16 too.
        let doc = String::from_utf8(encoded_rss(text, encoding_rs::UTF_8, Some("UTF-16"))).unwrap();
        let mut le = vec![0xFF, 0xFE];
        le.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
        check_title(&le, None, url, text);
        let mut be = vec![0xFE, 0xFF];
        be.extend(doc.encode_utf16().flat_map(u16::to_be_bytes));
        check_title(&be, None, url, text);
        // … and without a BOM.
        check_title(le.get(2..).unwrap(), None, url, text);

        // UTF-8 that claims UTF-16 in its declaration is UTF-8.
        check_title(
            &encoded_rss(text, encoding_rs::UTF_8, Some("utf-16")),
            None,
            url,
            text,
        );
    }

    #[test]
    fn stray_bytes_in_utf8() {
        let url = "https://example.com/";
        let mut doc = encoded_rss("Déjà vu – naïve STRAY", encoding_rs::UTF_8, None);
        while let Some(at) = find(&doc, b"STRAY") {
            doc.splice(at..at + 5, [0xE9]);
        }
        // Declared by HTTP, undeclared but mostly UTF-8: replacement, not mojibake.
        check_title(&doc, Some("utf-8"), url, "Déjà vu – naïve \u{FFFD}");
        check_title(&doc, None, url, "Déjà vu – naïve \u{FFFD}");
    }

    #[test]
    fn decoding_borrows_clean_utf8() {
        let body = encoded_rss("plain", encoding_rs::UTF_8, Some("utf-8"));
        assert!(matches!(decode(&body, None, None), Cow::Borrowed(_)));
        let body = encoded_rss("plain ascii", encoding_rs::UTF_8, Some("iso-8859-1"));
        // ASCII decodes without a copy; only the declaration forces one.
        let text = decode(&body, None, None);
        assert!(text.contains("encoding=\"utf-8\""), "{text}");
    }

    #[test]
    fn mostly_utf8_heuristic() {
        assert!(is_mostly_utf8("héllo wörld \u{2013} ok".as_bytes()));
        assert!(is_mostly_utf8(b"caf\xC3\xA9 cr\xC3\xA8me \xE9"));
        assert!(!is_mostly_utf8(b"caf\xE9 cr\xE8me"));
        assert!(!is_mostly_utf8(
            &encoding_rs::WINDOWS_1251.encode(RUSSIAN).0
        ));
        assert!(!is_mostly_utf8(b"truncated \xC3"));
        assert!(!is_mostly_utf8(b""));
    }

    // --- failures -------------------------------------------------------

    #[test]
    fn not_feeds_are_errors() {
        assert!(matches!(parse_err(b""), ParseError::Empty));
        assert!(matches!(parse_err(b" \r\n\t "), ParseError::Empty));
        assert!(matches!(parse_err(b"\xEF\xBB\xBF  "), ParseError::Empty));
        assert!(matches!(
            parse_err(fixture!("not-a-feed.html")),
            ParseError::HtmlPage
        ));
        assert!(matches!(
            parse_err(b"<HTML><body>hi</body></HTML>"),
            ParseError::HtmlPage
        ));
        for garbage in [
            b"hello world".as_slice(),
            b"<<<<",
            b"\x00\x01\x02\xFF\xFE\xFD",
            b"<?xml version=\"1.0\"?><opml version=\"2.0\"><body/></opml>",
            b"<rss><channel><title>never closed",
        ] {
            let err = parse_err(garbage);
            assert!(
                matches!(err, ParseError::NotAFeed | ParseError::Xml { .. }),
                "{garbage:?}: {err:?}"
            );
        }
        assert!(matches!(parse_err(b"{ nope"), ParseError::Json { .. }));
        assert!(matches!(
            parse_err(br#"{"version":"https://jsonfeed.org/version/9","title":"x","items":[]}"#),
            ParseError::JsonVersion { .. }
        ));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            ParseError::NotAFeed.to_string(),
            "not a feed: no <rss>, <feed>, <rdf:RDF> or JSON Feed root found"
        );
        // Recovery reads the item of a stray end tag; a document nothing
        // survives recovery of keeps the parser's own message.
        let err = parse_err(b"<rss version=\"2.0\"><channel><title>t</title><!-- never closed");
        assert!(err.to_string().starts_with("invalid XML: "), "{err}");
        // A text construct of an unknown type no longer fails the feed: it
        // is read as text (feed-rs alone calls it malformed).
        let feed = parse(
            b"<feed xmlns=\"http://www.w3.org/2005/Atom\"><title type=\"bogus\">t</title></feed>",
            None,
            "https://example.com/",
        );
        assert_eq!(feed.title.as_deref(), Some("t"));
        let malformed = ParseError::Malformed {
            position: 7,
            detail: "x".into(),
        };
        assert_eq!(malformed.to_string(), "malformed feed at byte 7: x");
    }

    /// Regression: feed-rs 3.0.0 slices "email (name)" strings at byte
    /// offsets inside multi-byte characters and panics.
    #[test]
    fn feed_rs_panic_is_an_error() {
        let doc = "<rss version=\"2.0\"><channel><title>t</title><item><title>a</title>\
                   <author>Jörg·tom@example.com</author></item></channel></rss>";
        let err = parse_err(doc.as_bytes());
        assert!(matches!(err, ParseError::ParserPanic { .. }), "{err:?}");
    }

    /// Found by fuzzing (`fuzz/`, target `feed`): quick-xml 0.42 (inside
    /// feed-rs) asserts when a second XML declaration with another
    /// encoding turns up mid-document (`set_encoding() called after prefix
    /// buffer was drained`). The same guard as above turns it into an
    /// error for this feed instead of a panic in the poller.
    #[test]
    fn quick_xml_set_encoding_panic_on_a_late_declaration_is_an_error() {
        let doc = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\">\
                   <channel><title>t</title>\n\
                   <?xml version=\"1.0\" encoding=\"windows-1251\"?>\n\
                   <item><title>a</title></item></channel></rss>";
        // Today a `ParserPanic`; any error is fine once upstream fixes it.
        let err = parse_err(doc.as_bytes());
        assert!(!err.to_string().is_empty());
    }

    /// Every prefix of every fixture parses or fails cleanly: no panics.
    #[test]
    fn truncated_documents_never_panic() {
        let sanitizer = Sanitizer::new();
        for body in [
            fixture!("rss2.xml"),
            fixture!("rss1.rdf"),
            fixture!("atom.xml"),
            fixture!("jsonfeed.json"),
            fixture!("xml-base.xml"),
            fixture!("windows-1251.xml"),
            fixture!("rss-stray-byte.xml"),
        ] {
            for len in (0..body.len()).step_by(13) {
                let _ = parse_feed(&body[..len], None, "https://example.com/", &sanitizer);
            }
        }
    }

    // --- leniency: feeds the most forgiving readers read (issue 18) ------

    #[track_caller]
    fn lenient(name: &str) -> ParsedFeed {
        let path = format!(
            "{}/tests/fixtures/feeds/lenient/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).expect("fixture");
        parse(&body, None, "https://fixtures.example.com/feed")
    }

    #[test]
    fn atom_0_3_is_read() {
        let feed = lenient("atom03.xml");
        assert_eq!(feed.title.as_deref(), Some("Old Generator Blog"));
        assert_eq!(feed.site_url.as_deref(), Some("https://old.example.org/"));
        assert_eq!(
            titles(&feed),
            [
                Some("Escaped HTML content"),
                Some("Base64 content"),
                Some("Inline XHTML content")
            ]
        );
        let [escaped, b64, xhtml] = &feed.entries[..] else {
            panic!("three entries")
        };
        assert_eq!(escaped.key, "guid:tag:old.example.org,2024:1");
        // issued is the publication time, modified the update.
        assert_eq!(escaped.published, date("2024-06-01T08:00:00Z"));
        assert_eq!(escaped.updated, date("2024-06-02T09:00:00Z"));
        assert_eq!(
            shown(escaped).as_deref(),
            Some("<p>An <b>escaped</b> body.</p>")
        );
        assert_eq!(
            shown(b64).as_deref(),
            Some("<p>Decoded from <i>base64</i>.</p>")
        );
        assert_eq!(b64.published, date("2024-06-02T08:00:00Z"));
        assert_eq!(
            shown(xhtml).as_deref(),
            Some("<p>Inline <em>XHTML</em> body, longer than the summary.</p>")
        );
    }

    #[test]
    fn atom_text_constructs_of_any_type_do_not_fail_the_feed() {
        let feed = lenient("atom-text-types.xml");
        assert_eq!(feed.title.as_deref(), Some("Odd Types"));
        assert_eq!(
            titles(&feed),
            [
                Some("XHTML typed title"),
                Some("Plain media type"),
                Some("Another media type"),
                None
            ]
        );
        let shown_all: Vec<Option<String>> = feed.entries.iter().map(shown).collect();
        assert_eq!(
            shown_all,
            [
                Some("<p>An empty type is text.</p>".to_owned()),
                Some("<p>HTML by media type</p>".to_owned()),
                Some("<p>Base64 summary</p>".to_owned()),
                Some("<p>Empty title and summary</p>".to_owned()),
            ]
        );
    }

    #[test]
    fn json_feed_fields_of_the_wrong_type_lose_nothing_else() {
        let feed = lenient("json-wrong-types.json");
        assert_eq!(feed.title.as_deref(), Some("Loose JSON"));
        assert_eq!(keys(&feed), ["guid:a", "guid:2", "guid:c", "guid:d"]);
        let e = &feed.entries;
        assert_eq!(e[0].categories, ["news", "local"]);
        assert_eq!(e[0].published, date("2024-08-01T10:00:00Z"));
        assert_eq!(e[1].authors, ["Bee"]);
        assert_eq!(e[1].categories, ["x", "3"]);
        assert_eq!(shown(&e[1]).as_deref(), Some("<p>B text</p>"));
        assert_eq!(e[2].title.as_deref(), Some("42"));
        assert_eq!(e[2].enclosures.len(), 1);
        assert_eq!(e[2].enclosures[0].length, None);
        assert_eq!(e[3].authors, ["Dee"]);
    }

    #[test]
    fn lone_surrogates_and_illegal_references_do_not_fail_the_feed() {
        let doc = r#"{"version":"https://jsonfeed.org/version/1.1","title":"S\ud800",
            "items":[{"id":"1","title":"half \udc00 pair","content_text":"ok \ud83d\ude00"}]}"#;
        let feed = parse(doc.as_bytes(), None, "https://example.com/");
        assert_eq!(feed.entries[0].title.as_deref(), Some("half \u{fffd} pair"));
        assert_eq!(feed.title.as_deref(), Some("S\u{fffd}"));
        let doc = "<rss version=\"2.0\"><channel><title>t</title>\
                   <item><guid>1</guid><title>bell &#7; and &#xD800;</title></item></channel></rss>";
        let feed = parse(doc.as_bytes(), None, "https://example.com/");
        assert_eq!(
            feed.entries[0].title.as_deref(),
            Some("bell \u{fffd} and \u{fffd}")
        );
    }

    #[test]
    fn rss_in_the_userland_namespace_and_rss_0_90_are_read() {
        let feed = lenient("rss-userland.xml");
        assert_eq!(feed.title.as_deref(), Some("Userland Namespace"));
        assert_eq!(titles(&feed), [Some("Scripting News item")]);
        assert_eq!(feed.entries[0].published, date("2004-01-05T12:00:00Z"));
        assert_eq!(
            shown(&feed.entries[0]).as_deref(),
            Some("Text of the item.")
        );

        let feed = lenient("rss090.rdf");
        assert_eq!(feed.title.as_deref(), Some("Netscape Era"));
        assert_eq!(
            keys(&feed),
            [
                "link:https://netscape.example.com/1",
                "link:https://netscape.example.com/2"
            ]
        );
    }

    #[test]
    fn rss_1_0_items_without_link_are_kept() {
        let feed = lenient("rss1-no-link.rdf");
        assert_eq!(
            titles(&feed),
            [
                Some("About names the item"),
                Some("Neither link nor about"),
                Some("With a link")
            ]
        );
        let e = &feed.entries;
        assert_eq!(
            e[0].link.as_deref(),
            Some("https://rdf-nolink.example.org/notes/1")
        );
        assert_eq!(e[0].published, date("2024-02-01T08:30:00Z"));
        assert_eq!(e[1].link, None);
        assert!(e[1].key.starts_with("hash:"), "{}", e[1].key);
        assert_eq!(shown(&e[1]).as_deref(), Some("Second note."));
        assert_eq!(
            e[2].link.as_deref(),
            Some("https://rdf-nolink.example.org/notes/3.html")
        );
    }

    #[test]
    fn misspelled_namespaces_are_understood() {
        let feed = lenient("rss-misspelled-ns.xml");
        let e = &feed.entries[0];
        assert_eq!(
            shown(e).as_deref(),
            Some("<p>The <b>full</b> text of the first post, much longer than its teaser.</p>")
        );
        assert_eq!(e.authors, ["Dee Creator"]);
        assert_eq!(e.enclosures.len(), 1);
        assert_eq!(e.enclosures[0].url, "https://sloppy.example.com/v.mp4");
    }

    #[test]
    fn media_and_itunes_descriptions_are_content_when_nothing_else_is() {
        let feed = lenient("youtube-media.xml");
        assert_eq!(
            shown(&feed.entries[0]).as_deref(),
            Some("<p>Steel, cables &amp; patience.<br>Part one of three.</p>")
        );
        let feed = lenient("podcast-itunes.xml");
        assert_eq!(
            shown(&feed.entries[0]).as_deref(),
            Some("We talk about tides &amp; moons with a guest.")
        );
    }

    #[test]
    fn unescaped_html_in_descriptions_is_read() {
        let feed = lenient("rss-raw-html.xml");
        let shown_all: Vec<Option<String>> = feed.entries.iter().map(shown).collect();
        assert_eq!(
            shown_all,
            [
                Some(
                    "<p>Submitted by <a href=\"https://raw.example.com/u/ann\" rel=\"noopener noreferrer\">ann</a></p><p>Second <b>paragraph</b>.</p>"
                        .to_owned()
                ),
                Some(
                    "<p>Line one<br>line two<img src=\"https://raw.example.com/i.png\"></p>"
                        .to_owned()
                ),
            ]
        );
    }

    #[test]
    fn recoverable_xml_errors_are_recovered() {
        let feed = lenient("rss-not-wellformed.xml");
        assert_eq!(feed.title.as_deref(), Some("Café & Bar"));
        assert_eq!(
            titles(&feed),
            [Some("Fish & chips — today"), Some("A stray end tag")]
        );
        assert_eq!(
            feed.entries[0].link.as_deref(),
            Some("https://broken.example.com/1?x=1&y=2")
        );
        assert_eq!(
            shown(&feed.entries[0]).as_deref(),
            Some("Prices &lt; 5 € at the café")
        );
        assert_eq!(shown(&feed.entries[1]).as_deref(), Some("Still read."));
        // Still no entity expansion: a DTD's entities are not used.
        let doc = "<?xml version=\"1.0\"?><!DOCTYPE rss [<!ENTITY boom \"BOOM\">]>\
                   <rss version=\"2.0\"><channel><title>t &boom;</title>\
                   <item><title>a &boom;</title><guid>x</guid></item></channel></rss>";
        let feed = parse(doc.as_bytes(), None, "https://example.com/");
        assert!(
            !feed.entries[0]
                .title
                .as_deref()
                .unwrap_or("")
                .contains("BOOM")
        );
    }

    #[test]
    fn rss_without_channel_is_read_or_named() {
        let feed = lenient("rss-no-channel.xml");
        assert_eq!(titles(&feed), [Some("Item straight under rss")]);
        let err = parse_err(b"<?xml version=\"1.0\"?><rss version=\"2.0\"><title>x</title></rss>");
        assert!(matches!(err, ParseError::RssWithoutChannel), "{err:?}");
        assert_eq!(
            err.to_string(),
            "not a feed: the <rss> element has no <channel> and no <item>"
        );
    }

    #[test]
    fn a_feed_whose_items_yield_nothing_is_an_error() {
        let err = parse_err(
            b"<rss version=\"2.0\"><channel><title>t</title><item></item><item> </item></channel></rss>",
        );
        assert!(
            matches!(err, ParseError::NothingRead { items: 2 }),
            "{err:?}"
        );
        // An empty channel is a feed with nothing yet, not an error.
        let feed = parse(
            b"<rss version=\"2.0\"><channel><title>t</title></channel></rss>",
            None,
            "https://example.com/",
        );
        assert!(feed.entries.is_empty());
    }

    #[test]
    fn plain_text_titles_keep_their_angle_brackets() {
        let feed = lenient("titles-angle-brackets.xml");
        assert_eq!(
            titles(&feed),
            [
                Some("History of the <blink> tag"),
                Some("Escaped HTML title"),
                Some("if a < b && c > d"),
                Some("Café & more")
            ]
        );
        let feed = lenient("atom-titles-types.xml");
        assert_eq!(
            titles(&feed),
            [
                Some("History of the <blink> tag &amp; </b>"),
                Some("History of the bold tag")
            ]
        );
    }

    #[test]
    fn xml_base_of_feed_and_entry_resolves_content() {
        let feed = lenient("atom-xml-base.xml");
        let shown_all: Vec<Option<String>> = feed.entries.iter().map(shown).collect();
        assert_eq!(
            shown_all,
            [
                Some(
                    "<img src=\"https://cdn.example.org/site/img/one.png\"> <a href=\"https://cdn.example.org/about\" rel=\"noopener noreferrer\">about</a>"
                        .to_owned()
                ),
                Some("<img src=\"https://cdn.example.org/site/posts/2024/two.png\">".to_owned()),
                Some("<img src=\"https://media.example.net/a/b/three.png\">".to_owned()),
            ]
        );
    }

    #[test]
    fn items_sharing_a_link_stay_apart_and_a_repeated_guid_is_one() {
        let feed = lenient("rss-shared-link.xml");
        assert_eq!(
            titles(&feed),
            [
                Some("Episode 1: Rivers"),
                Some("Episode 2: Lakes"),
                Some("Episode 3: Seas"),
                Some("Guid repeated"),
                Some("Own page")
            ]
        );
        let e = &feed.entries;
        assert!(
            e[0].key
                .starts_with("link:https://radio.example.com/morning#"),
            "{}",
            e[0].key
        );
        assert_ne!(e[0].key, e[1].key);
        // A link several items share is no key for merging stories.
        assert!(e[0].url_keys.is_empty());
        assert_eq!(e[4].key, "link:https://radio.example.com/special");
        // Stable: the same document gives the same keys.
        assert_eq!(keys(&lenient("rss-shared-link.xml")), keys(&feed));
    }

    #[test]
    fn implausible_dates_and_unsafe_text_are_made_safe() {
        let doc = format!(
            "<rss version=\"2.0\"><channel><title>t</title>\
             <item><guid>1</guid><title>Bell\u{7}\u{1b}[31m red\u{85}</title><pubDate>Sat, 01 Jan 1966 00:00:00 GMT</pubDate>\
               <author>x@example.com (A\u{1}nn)</author><category>c\u{fffe}</category></item>\
             <item><guid>2</guid><title>{}</title><pubDate>Mon, 01 Jan 2културн</pubDate></item>\
             <item><guid>3</guid><title>future</title><pubDate>Fri, 01 Jan 2100 00:00:00 GMT</pubDate>\
               <description><![CDATA[<p>{}</p>]]></description></item>\
             </channel></rss>",
            "t".repeat(100_000),
            "word ".repeat(300_000)
        );
        let feed = parse(doc.as_bytes(), None, "https://example.com/");
        let e = &feed.entries;
        assert_eq!(e[0].title.as_deref(), Some("Bell[31m red"));
        assert_eq!(e[0].published, None);
        assert_eq!(e[0].authors, ["Ann"]);
        assert_eq!(e[0].categories, ["c"]);
        assert_eq!(
            e[1].title.as_deref().map(|t| t.chars().count()),
            Some(crate::values::MAX_TITLE_CHARS)
        );
        assert_eq!(e[2].published, None);
        let html = e[2].content_html.as_deref().unwrap_or_default();
        assert!(
            html.len() <= crate::values::DEFAULT_MAX_CONTENT + 200
                && html.contains("Cut here by Tributary"),
            "{}",
            html.len()
        );
    }

    // --- helpers --------------------------------------------------------

    #[test]
    fn attribute_removal() {
        for (input, want) in [
            (r#" version="0.93">"#, ">"),
            (r#" a="1" version='x' b="2">"#, r#" a="1" b="2">"#),
            (
                " version = \"1\"\n xmlns:version=\"v\">",
                "\n xmlns:version=\"v\">",
            ),
            (r#" data="version=1">"#, r#" data="version=1">"#),
            (" version=2.0 a=b>", " a=b>"),
            (r#" version="unterminated"#, ""),
            (">", ">"),
        ] {
            assert_eq!(remove_attribute(input, "version"), want, "{input:?}");
        }
    }

    #[test]
    fn encoding_declaration_span() {
        fn span(s: &str) -> Option<&str> {
            xml_encoding_span(s.as_bytes()).map(|r| &s[r])
        }
        assert_eq!(
            span(r#"<?xml version="1.0" encoding="KOI8-R"?><rss/>"#),
            Some("KOI8-R")
        );
        assert_eq!(span("<?xml version='1.0' encoding = 'x' ?>"), Some("x"));
        assert_eq!(span(r#"<?xml version="1.0"?><rss/>"#), None);
        assert_eq!(span(r#"<?xml-stylesheet encoding="x"?>"#), None);
        assert_eq!(span(r#"<?xml encoding="unterminated"#), None);
        assert_eq!(
            span(r#"<rss><?xml version="1.0" encoding="late"?>"#),
            Some("late")
        );
    }

    #[test]
    fn tlds() {
        let tld = |u: &str| {
            tld_of(&Url::parse(u).unwrap()).map(|t| String::from_utf8_lossy(t).into_owned())
        };
        assert_eq!(tld("https://news.example.RU/feed").as_deref(), Some("ru"));
        assert_eq!(
            tld("https://example.xn--p1ai/").as_deref(),
            Some("xn--p1ai")
        );
        assert_eq!(tld("https://пример.рф/").as_deref(), Some("xn--p1ai"));
        assert_eq!(tld("https://localhost:8080/").as_deref(), Some("localhost"));
        assert_eq!(tld("https://127.0.0.1/"), None);
        assert_eq!(tld("https://[::1]/"), None);
    }

    #[test]
    fn sanitizer_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Sanitizer>();
    }

    #[test]
    fn polling_hints_are_read_from_the_channel_head() {
        let doc = r#"<?xml version="1.0"?>
<rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>
<title>t</title><ttl>90</ttl>
<sy:updatePeriod>daily</sy:updatePeriod><sy:updateFrequency>4</sy:updateFrequency>
<skipHours><hour>0</hour><hour>1</hour><hour>24</hour><hour>x</hour></skipHours>
<skipDays><day>Saturday</day><day>sunday</day></skipDays>
<item><title>a</title><skipHours><hour>5</hour></skipHours></item>
</channel></rss>"#;
        let feed = parse_feed(
            doc.as_bytes(),
            None,
            "https://example.com/feed",
            &Sanitizer::new(),
        )
        .expect("parses");
        assert_eq!(
            feed.hints,
            FeedHints {
                ttl: Some(Duration::from_secs(90 * 60)),
                update_period: Some(Duration::from_secs(6 * 3600)),
                skip_hours: vec![0, 1],
                skip_days: vec![5, 6],
            }
        );
    }

    #[test]
    fn feeds_without_hints_have_none() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><id>x</id><updated>2026-01-01T00:00:00Z</updated></feed>"#;
        let feed = parse_feed(
            doc.as_bytes(),
            None,
            "https://example.com/feed",
            &Sanitizer::new(),
        )
        .expect("parses");
        assert_eq!(feed.hints, FeedHints::default());
    }

    #[test]
    fn html_pages_decode_by_meta_charset_or_http_charset() {
        let page = "<html><head><meta charset=\"windows-1251\"><title>x</title></head><body><p>Привет</p></body></html>";
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(page);
        assert!(decode_html(&bytes, None, None).contains("Привет"));
        let page = "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"></head><body>caf\u{e9}</body></html>";
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(page);
        assert!(decode_html(&bytes, None, None).contains("café"));
        // The HTTP header wins over the page.
        let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode("<meta charset=\"utf-8\"><p>日本語</p>");
        assert!(decode_html(&bytes, Some("Shift_JIS"), None).contains("日本語"));
        assert!(decode_html("<p>plain ünïcode</p>".as_bytes(), None, None).contains("ünïcode"));
    }
}
