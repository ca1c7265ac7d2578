//! The sanitize stage: untrusted feed HTML in, HTML that is safe to serve out.
//!
//! This module owns the HTML allow-list (which tags and attributes survive),
//! the rule that every URL left in the output is absolute, the removal of
//! tracking parameters (`utm_*`, `fbclid`, …) from links and images, and
//! the conversion of HTML snippets (titles and the like) to one line of
//! plain text. It runs last on everything we store, feed content and
//! extracted articles alike, so nothing earlier needs to be trusted.
//!
//! Beyond ammonia's defaults it allows `<iframe>` from a few video hosts
//! (https only, see [`is_allowed_iframe`]) and small inline images
//! (`data:image/png|gif|jpeg|webp`, see [`MAX_DATA_IMAGE_LEN`]); every other
//! iframe and `data:` URL is dropped.
//!
//! It does no I/O. [`Sanitizer`] is built once and shared: it holds an
//! [`ammonia::Builder`], which is costly to configure (a dozen hash sets) and
//! cannot be cloned, while the base URL for relative links differs per entry.
//! Rather than rebuilding or locking the builder per call, the builder's URL
//! callbacks read the base from a thread-local slot that [`Sanitizer::clean_html`]
//! fills for exactly the duration of one (synchronous) `clean` call.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;

use ammonia::{Builder, UrlRelative};
use url::Url;

/// Schemes ammonia lets through to the attribute filter. Everything else
/// (`javascript:`, `vbscript:`, app-specific schemes) is dropped; `data:`
/// passes ammonia only to be checked by [`filter_attribute`], which keeps
/// it on small `<img src>` only.
const ALLOWED_SCHEMES: [&str; 4] = ["http", "https", "mailto", "data"];

/// Tags whose *content* is dropped along with the tag. Other disallowed tags
/// are unwrapped (their children kept); for these the children are code,
/// embedded documents or fallback markup that ammonia's parser sees as raw
/// text, so keeping them would show garbage to the reader. (`iframe` is
/// allowed, and its raw-text content is removed by [`drop_disallowed_iframes`].)
const DROP_WITH_CONTENT: [&str; 6] = ["script", "style", "object", "embed", "noscript", "template"];

/// Largest `data:` image URL kept, in bytes (about 3 KB of image): enough
/// for an icon or a formula, too small to smuggle a page.
pub const MAX_DATA_IMAGE_LEN: usize = 4096;

/// Hosts whose embeds are kept, with the path prefix of their player.
const VIDEO_EMBEDS: [(&str, &str); 5] = [
    ("www.youtube.com", "/embed/"),
    ("youtube.com", "/embed/"),
    ("www.youtube-nocookie.com", "/embed/"),
    ("youtube-nocookie.com", "/embed/"),
    ("player.vimeo.com", "/video/"),
];

/// Query parameters that only track the reader. Exact names; plus every
/// `utm_*` parameter.
const TRACKING_PARAMS: [&str; 22] = [
    "fbclid",
    "gclid",
    "gclsrc",
    "dclid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "igshid",
    "yclid",
    "_hsenc",
    "_hsmi",
    "__hssc",
    "__hstc",
    "__hsfp",
    "hsctatracking",
    "ref_src",
    "ref_url",
    "mkt_tok",
    "_ga",
    "_gl",
    "wt_mc",
    "twclid",
];

/// Whether a query parameter (its name, lowercased) only tracks the reader.
pub fn is_tracking_param(name: &str) -> bool {
    name.starts_with("utm_") || TRACKING_PARAMS.contains(&name)
}

thread_local! {
    /// Base URL of the `clean_html` call currently running on this thread, or
    /// `None` when relative URLs must be dropped. Only [`BaseGuard`] writes it.
    static CURRENT_BASE: RefCell<Option<Url>> = const { RefCell::new(None) };
}

/// Sets [`CURRENT_BASE`] for one `clean` call and clears it afterwards, even if
/// ammonia panics, so a stale base can never leak into the next call.
struct BaseGuard;

impl BaseGuard {
    fn set(base: Option<&Url>) -> Self {
        CURRENT_BASE.with(|slot| *slot.borrow_mut() = base.cloned());
        BaseGuard
    }
}

impl Drop for BaseGuard {
    fn drop(&mut self) {
        CURRENT_BASE.with(|slot| slot.borrow_mut().take());
    }
}

/// Resolves a relative URL against the current base. `None` (drop the
/// attribute) when there is no usable base or the result is not web-safe.
fn resolve_relative(relative: &str) -> Option<String> {
    CURRENT_BASE.with(|slot| {
        let slot = slot.borrow();
        let joined = slot.as_ref()?.join(relative.trim()).ok()?;
        is_web_scheme(&joined).then(|| joined.into())
    })
}

/// ammonia's relative-URL callback; a named function because a closure
/// cannot be given the higher-ranked signature ammonia needs.
fn evaluate_relative(relative: &str) -> Option<Cow<'_, str>> {
    resolve_relative(relative).map(Cow::Owned)
}

fn is_web_scheme(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

/// Resolves one `srcset` candidate URL: absolute http(s) kept, relative joined
/// with the current base, anything else dropped.
fn resolve_srcset_url(candidate: &str) -> Option<String> {
    match Url::parse(candidate) {
        Ok(url) => is_web_scheme(&url).then(|| url.into()),
        Err(url::ParseError::RelativeUrlWithoutBase) => resolve_relative(candidate),
        Err(_) => None,
    }
}

/// Rewrites a `srcset` value so every candidate URL is absolute http(s).
///
/// ammonia treats `srcset` as an opaque string (it is not in its list of URL
/// attributes), so without this a relative or `javascript:` candidate would
/// pass through untouched. Follows the shape of the HTML "parse a srcset
/// attribute" algorithm closely enough for real feeds: candidates are
/// `url [descriptor]` separated by commas, and a URL may itself contain commas
/// only in its interior. Returns `None` when no candidate survives.
fn rewrite_srcset(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len() + 32);
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        let url_end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let (raw_url, after_url) = rest.split_at(url_end);
        // A URL ending in commas ends its candidate there (no descriptor).
        let url = raw_url.trim_end_matches(',');
        let (descriptor, next) = if url.len() < raw_url.len() {
            ("", after_url)
        } else {
            let desc_end = after_url.find(',').unwrap_or(after_url.len());
            let (desc, next) = after_url.split_at(desc_end);
            (desc.trim(), next)
        };
        rest = next;
        if let Some(resolved) = resolve_srcset_url(url).map(|u| strip_tracking(&u).into_owned()) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&resolved);
            if !descriptor.is_empty() {
                out.push(' ');
                out.push_str(descriptor);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Nesting (by [`nesting_exceeds`]'s estimate) beyond which HTML is not
/// parsed at all. html5ever checks the stack of open elements on every
/// tag, so parsing costs tags × depth: fuzzing found 3 000 nested `<div>`s
/// (33 kB) taking over 10 s, and a hostile megabyte would take hours in a
/// poller or article thread. Real pages nest a few dozen deep.
pub const MAX_NESTING: usize = 512;

/// Elements whose start tag does not open a level that stays open: void
/// elements, and those the parser closes by itself when a sibling starts
/// (`<p>`, `<li>`, table parts, …), which pages often leave unclosed.
const FLAT_ELEMENTS: [&str; 39] = [
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
    "input", "keygen", "link", "meta", "param", "source", "track", "wbr", "p", "li", "dt", "dd",
    "option", "optgroup", "rb", "rp", "rt", "rtc", "tr", "td", "th", "tbody", "thead", "tfoot",
    "colgroup", "caption", "html", "body",
];

/// Elements whose content is raw text: a `<div` inside them is not a tag.
const RAW_TEXT_ELEMENTS: [&str; 9] = [
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "head",
];

/// Whether `html` nests elements more than `limit` deep, estimated by one
/// linear scan without parsing: start tags open a level (except
/// [`FLAT_ELEMENTS`]), an end tag closes back to its element, comments and
/// raw text are skipped. It errs towards counting too deep only for pages
/// that leave many inline elements unclosed, which the parser nests too.
pub fn nesting_exceeds(html: &str, limit: usize) -> bool {
    let b = html.as_bytes();
    let mut open: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    // This runs before every sanitiser call (each feed entry), so tags are
    // found with memchr and classified by one `match`, not list scans.
    while let Some(lt) = b.get(i..).and_then(|rest| memchr::memchr(b'<', rest)) {
        i += lt + 1;
        match b.get(i) {
            Some(b'!') => {
                let end: &[u8] = if b.get(i..i + 3) == Some(b"!--") {
                    b"-->"
                } else {
                    b">"
                };
                i = find_from(b, i, end).map_or(b.len(), |at| at + end.len());
            }
            Some(b'/') => {
                let name = tag_name(b, i + 1);
                if let Some(at) = open.iter().rposition(|n| n.eq_ignore_ascii_case(name)) {
                    open.truncate(at);
                }
                i += 1 + name.len();
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let name = tag_name(b, i);
                i += name.len();
                match classify_tag(name) {
                    TagKind::RawText => {
                        // Skip to its end tag (`</script`, any case).
                        let mut close = Vec::with_capacity(name.len() + 2);
                        close.extend_from_slice(b"</");
                        close.extend(name.iter().map(u8::to_ascii_lowercase));
                        i = find_from_ignore_case(b, i, &close).unwrap_or(b.len());
                    }
                    TagKind::Flat => {}
                    TagKind::Nesting => {
                        open.push(name);
                        if open.len() > limit {
                            return true;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    false
}

enum TagKind {
    /// In [`RAW_TEXT_ELEMENTS`].
    RawText,
    /// In [`FLAT_ELEMENTS`].
    Flat,
    Nesting,
}

/// Which of [`nesting_exceeds`]'s lists a start tag's name is in, any case.
fn classify_tag(name: &[u8]) -> TagKind {
    // Every listed name is at most 8 bytes; longer ones nest.
    let mut buf = [0u8; 8];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return TagKind::Nesting;
    };
    for (to, from) in lower.iter_mut().zip(name) {
        *to = from.to_ascii_lowercase();
    }
    let lower = &*lower;
    if RAW_TEXT_ELEMENTS.iter().any(|n| n.as_bytes() == lower) {
        TagKind::RawText
    } else if FLAT_ELEMENTS.iter().any(|n| n.as_bytes() == lower) {
        TagKind::Flat
    } else {
        TagKind::Nesting
    }
}

/// The tag name starting at `at`: letters, digits, `-`, `_`, `:`.
fn tag_name(b: &[u8], at: usize) -> &[u8] {
    let rest = b.get(at..).unwrap_or_default();
    let len = rest
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':')))
        .unwrap_or(rest.len());
    rest.get(..len).unwrap_or_default()
}

fn find_from(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(b.get(from..)?, needle).map(|p| p + from)
}

/// `needle` starts with `<`, which has no other case: candidates are found
/// with memchr and only they are compared.
fn find_from_ignore_case(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut at = from;
    loop {
        at += memchr::memchr(first, b.get(at..)?)?;
        if b.get(at..at + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
        {
            return Some(at);
        }
        at += 1;
    }
}

/// Cleans untrusted HTML with one allow-list configured at start-up.
pub struct Sanitizer {
    /// Configured once; its relative-URL callbacks read [`CURRENT_BASE`].
    builder: Builder<'static>,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sanitizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sanitizer").finish_non_exhaustive()
    }
}

impl Sanitizer {
    pub fn new() -> Self {
        let mut builder = Builder::default();
        // ammonia's default tag list already covers headings, lists, tables,
        // pre/code, blockquote, figure/figcaption and img; `tfoot` is missing.
        builder
            .add_tags(["tfoot"])
            // `sizes` is meaningless without `srcset` but harmless, and
            // without it `w` descriptors make browsers assume 100vw.
            .add_tag_attributes("img", ["srcset", "sizes"])
            .add_clean_content_tags(DROP_WITH_CONTENT)
            .url_schemes(HashSet::from(ALLOWED_SCHEMES))
            .url_relative(UrlRelative::Custom(Box::new(evaluate_relative)))
            .add_tags(["iframe"])
            .add_tag_attributes(
                "iframe",
                ["src", "width", "height", "allowfullscreen", "title"],
            )
            .attribute_filter(filter_attribute)
            .link_rel(Some("noopener noreferrer"))
            .strip_comments(true);
        Sanitizer { builder }
    }

    /// [`Self::clean_html`] for stored feed content on its way to an
    /// output: relative URLs resolve against the entry's `content_base`,
    /// else its link (see `model::ParsedEntry`).
    pub fn clean_stored(
        &self,
        html: &str,
        content_base: Option<&str>,
        link: Option<&str>,
    ) -> Option<String> {
        let base = content_base.or(link).and_then(|b| Url::parse(b).ok());
        self.clean_html(html, base.as_ref())
    }

    /// Whether untrusted HTML is worth storing for [`Self::clean_html`] to
    /// sanitise when it is served: not blank, and not nested so deep that
    /// sanitising it would cost too much ([`MAX_NESTING`]). A scan, no parse.
    pub fn may_store(&self, html: &str) -> bool {
        !html.trim().is_empty() && !nesting_exceeds(html, MAX_NESTING)
    }

    /// Clean untrusted HTML: allow-list (ammonia defaults plus img
    /// `srcset`/`sizes`, `tfoot`, and video iframes), no
    /// script/style/object/embed or other iframe, no event handlers, no
    /// `style`/`class`, only http(s) and mailto URLs (and small `data:`
    /// images), no tracking parameters.
    /// Relative URLs (including in `srcset`) are made absolute against `base`;
    /// without a base they are dropped. Links get `rel="noopener noreferrer"`.
    ///
    /// Returns `None` when the result has no text and no images, and for
    /// HTML nested more than [`MAX_NESTING`] deep (too costly to parse).
    pub fn clean_html(&self, html: &str, base: Option<&Url>) -> Option<String> {
        if html.trim().is_empty() || nesting_exceeds(html, MAX_NESTING) {
            return None;
        }
        let html = drop_disallowed_iframes(html);
        let cleaned = {
            let _guard = BaseGuard::set(base);
            self.builder.clean(&html).to_string()
        };
        has_visible_content(&cleaned).then_some(cleaned)
    }
}

/// ammonia's attribute filter: `srcset` rewritten, iframe `src` checked
/// against the video allow-list, `data:` allowed on small images only,
/// tracking parameters removed from every URL.
fn filter_attribute<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    match attribute {
        "srcset" => rewrite_srcset(value).map(Cow::Owned),
        "src" if element == "iframe" => {
            let url = Url::parse(value.trim()).ok()?;
            is_allowed_iframe(&url).then(|| Cow::Owned(strip_tracking(url.as_str()).into_owned()))
        }
        "href" | "src" | "cite" | "poster" => {
            let trimmed = value.trim_start();
            if trimmed
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("data:"))
            {
                return (element == "img" && attribute == "src" && is_small_data_image(trimmed))
                    .then_some(Cow::Borrowed(value));
            }
            Some(strip_tracking(value))
        }
        _ => Some(Cow::Borrowed(value)),
    }
}

/// Whether an iframe address is a video player we embed: https, a host in
/// [`VIDEO_EMBEDS`], and that host's player path.
pub fn is_allowed_iframe(url: &Url) -> bool {
    url.scheme() == "https"
        && url.host_str().is_some_and(|host| {
            VIDEO_EMBEDS
                .iter()
                .any(|(h, path)| host.eq_ignore_ascii_case(h) && url.path().starts_with(path))
        })
}

/// `data:image/(png|gif|jpeg|webp)[;base64],…` no longer than
/// [`MAX_DATA_IMAGE_LEN`]. SVG is not on the list: it can carry script.
fn is_small_data_image(url: &str) -> bool {
    let Some(rest) = url.get(5..) else {
        return false;
    };
    let mime = rest
        .split([';', ','])
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    url.len() <= MAX_DATA_IMAGE_LEN
        && matches!(
            mime.as_str(),
            "image/png" | "image/gif" | "image/jpeg" | "image/jpg" | "image/webp"
        )
}

/// Removes iframes that are not allow-listed video players, with their
/// content, before ammonia sees them. ammonia cannot drop an element by an
/// attribute's value: it would leave an empty `<iframe>` box (and its
/// fallback text) behind. The attribute filter checks `src` again, so this
/// pass only has to be tidy, not safe.
fn drop_disallowed_iframes(html: &str) -> Cow<'_, str> {
    let bytes = html.as_bytes();
    let has_iframe = find_from_ignore_case(bytes, 0, b"<iframe").is_some();
    if !has_iframe {
        return Cow::Borrowed(html);
    }
    let doc = dom_query::Document::fragment(html);
    for iframe in doc.select("iframe").nodes() {
        let allowed = iframe
            .attr("src")
            .and_then(|src| Url::parse(src.trim()).ok())
            .is_some_and(|url| is_allowed_iframe(&url));
        if allowed {
            iframe.remove_children();
        } else {
            iframe.remove_from_parent();
        }
    }
    Cow::Owned(doc.html().to_string())
}

/// Removes tracking parameters (`utm_*`, `fbclid`, …) from a URL's query,
/// absolute or relative; the query goes if nothing is left. Other
/// parameters keep their order and spelling.
pub fn strip_tracking(url: &str) -> Cow<'_, str> {
    let Some(q) = url.find('?') else {
        return Cow::Borrowed(url);
    };
    let (head, rest) = url.split_at(q);
    let rest = rest.get(1..).unwrap_or_default();
    let (query, fragment) = match rest.find('#') {
        Some(h) => rest.split_at(h),
        None => (rest, ""),
    };
    let is_tracking = |pair: &str| {
        let key = pair
            .split('=')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        is_tracking_param(&key)
    };
    if !query.split('&').any(is_tracking) {
        return Cow::Borrowed(url);
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_tracking(p))
        .collect();
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out.push_str(fragment);
    Cow::Owned(out)
}

/// Whether serialised, already sanitised HTML shows anything: non-whitespace
/// text or an image.
///
/// A string scan instead of a second DOM parse. It relies on the shape of
/// html5ever's serialiser output: `<` in text is always escaped, attribute
/// values are always double-quoted with `"` escaped, and comments are gone.
fn has_visible_content(html: &str) -> bool {
    let bytes = html.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'<' => {
                // Skip to the end of the tag, ignoring `>` inside quotes.
                let start = i;
                let mut in_quotes = false;
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'"' => in_quotes = !in_quotes,
                        b'>' if !in_quotes => break,
                        _ => {}
                    }
                    i += 1;
                }
                if is_image_tag(bytes.get(start..i).unwrap_or_default()) {
                    return true;
                }
            }
            b'&' => {
                // The serialiser writes U+00A0 as `&nbsp;`; it is not content.
                if !bytes.get(i..).is_some_and(|s| s.starts_with(b"&nbsp;")) {
                    return true;
                }
                i += "&nbsp;".len() - 1;
            }
            _ if b.is_ascii_whitespace() => {}
            _ if b < 0x80 => return true,
            _ => {
                // A non-ASCII character: visible unless it is Unicode
                // whitespace or invisible formatting.
                let ch = html.get(i..).and_then(|s| s.chars().next());
                if let Some(ch) = ch {
                    if !ch.is_whitespace() && !is_invisible(ch) {
                        return true;
                    }
                    i += ch.len_utf8() - 1;
                }
            }
        }
        i += 1;
    }
    false
}

/// Whether `tag` (from `<` up to, not including, `>`) is an `img` start tag
/// that still has a source after cleaning.
fn is_image_tag(tag: &[u8]) -> bool {
    let Some(name) = tag.get(1..5) else {
        return false;
    };
    let is_img = name
        .get(..3)
        .is_some_and(|n| n.eq_ignore_ascii_case(b"img"))
        && name.get(3).is_some_and(|c| matches!(c, b' ' | b'/'));
    // An attribute value could only fake this match with text that is
    // itself shown (as alt text), so the shortcut is harmless.
    is_img && (contains(tag, b" src=") || contains(tag, b" srcset="))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Zero-width and BOM characters, which show nothing on their own.
fn is_invisible(ch: char) -> bool {
    matches!(ch, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// The words of HTML for the search index: tags, scripts, styles and
/// comments dropped (feed content is stored as the feed gave it), entities
/// left as they are, each distinct word once, separated by spaces. Not for
/// display.
///
/// The index (`store`, FTS5 with `detail = none`) records only which rows
/// hold a term, so a repeated word adds nothing to it, yet FTS5 would
/// tokenise and hash every occurrence on the one writer thread, which is
/// what bounds how fast polls are stored. This runs before, off that
/// thread: in the indexer's blocking task for queued entries, in the parse
/// stage for the entries `tributary poll` indexes as it stores them.
/// Words are runs between ASCII whitespace or tags and repeats are
/// byte-identical, and the tokenizer never joins text across whitespace, so
/// the terms indexed are exactly those of the whole text (checked against
/// FTS5 itself in the store's tests).
pub fn search_words(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    // Sized for a few paragraphs, so the set rarely grows.
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(256, Default::default());
    let mut rest = html;
    while let Some(open) = memchr::memchr(b'<', rest.as_bytes()) {
        add_new_words(&rest[..open], &mut seen, &mut out);
        let after = &rest.as_bytes()[open + 1..];
        let skip_to: Option<&[u8]> = if after.starts_with(b"!--") {
            Some(b"-->")
        } else if after
            .get(..6)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"script"))
        {
            Some(b"</script")
        } else if after
            .get(..5)
            .is_some_and(|t| t.eq_ignore_ascii_case(b"style"))
        {
            Some(b"</style")
        } else {
            None
        };
        // Where the tag (or the element's end tag) ends: the next `>` from
        // here.
        let from = match skip_to {
            Some(end) => match find_from_ignore_case(rest.as_bytes(), open + 1, end) {
                // `-->` holds its own `>`; an end tag's follows it.
                Some(at) => at + end.len() - usize::from(end.ends_with(b">")),
                None => return out,
            },
            None => open,
        };
        match memchr::memchr(b'>', &rest.as_bytes()[from..]) {
            Some(close) => rest = &rest[from + close + 1..],
            // An unclosed tag runs to the end.
            None => return out,
        }
    }
    add_new_words(rest, &mut seen, &mut out);
    out
}

/// Appends the words of `text` not yet in `seen`. Splitting at ASCII
/// whitespace only is enough (a run that holds other whitespace is split
/// the same way by the tokenizer wherever it appears) and is a byte scan.
fn add_new_words<'a>(text: &'a str, seen: &mut foldhash::HashSet<&'a str>, out: &mut String) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        // Both ends sit at ASCII bytes or the ends of `text`: char
        // boundaries, so `get` always succeeds.
        if let Some(word) = text.get(start..i).filter(|w| !w.is_empty())
            && seen.insert(word)
        {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
}

/// HTML (or text with entities) → plain text on one line: tags removed,
/// entities decoded (`&amp;`, `&nbsp;`, `&rsquo;`, …), whitespace collapsed,
/// trimmed. Text inside `<script>`/`<style>` is not text and is dropped.
pub fn html_to_text(html: &str) -> String {
    // Most titles are plain text; skip the HTML parser for them.
    if !html.contains(['<', '&']) {
        return collapse_whitespace(html);
    }
    let doc = dom_query::Document::fragment(html);
    let junk = doc.select("script, style, template");
    if junk.exists() {
        junk.remove();
    }
    // `formatted_text` rather than `text`: it puts breaks between block
    // elements, so `<p>a</p><p>b</p>` becomes "a b", not "ab".
    collapse_whitespace(&doc.formatted_text())
}

/// Collapses every run of Unicode whitespace (including NBSP) to one space and
/// trims the ends.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_keep_each_word_once_and_skip_what_is_not_text() {
        assert_eq!(
            search_words("<p>one<a href=\"x\">two</a></p>three &amp; four<br"),
            "one two three &amp; four"
        );
        assert_eq!(search_words("plain"), "plain");
        assert_eq!(
            search_words("<p>The cat and the cat.</p>\n<p>The  CAT\u{a0}and\tcat.</p>"),
            "The cat and the cat. CAT\u{a0}and"
        );
        assert_eq!(
            search_words(
                "a<SCRIPT>var x = '<p>hidden</p>';</Script>b<style>p{}</style >c\
                 <!-- <p>gone</p> -->d<script src=x>"
            ),
            "a b c d"
        );
        assert_eq!(search_words("  \n "), "");
    }

    fn nested(tag: &str, n: usize, inner: &str) -> String {
        format!(
            "{}{inner}{}",
            format!("<{tag}>").repeat(n),
            format!("</{tag}>").repeat(n)
        )
    }

    #[test]
    fn nesting_estimate_counts_open_levels_only() {
        assert!(nesting_exceeds(&nested("div", 513, "x"), 512));
        assert!(!nesting_exceeds(&nested("div", 512, "x"), 512));
        assert!(nesting_exceeds(&nested("DiV", 40, "x"), 32));
        // Closed siblings, unclosed paragraphs and list items, void
        // elements, comments and raw text do not add up.
        let flat = "<div>a</div>".repeat(2000)
            + &"<p>para".repeat(2000)
            + &"<ul><li>item".repeat(10)
            + &"<br><img src=x>".repeat(2000)
            + &"<!-- <div><div> -->".repeat(2000)
            + "<script>"
            + &"<div>".repeat(2000)
            + "</SCRIPT>";
        assert!(!nesting_exceeds(&flat, 16), "flat page counted deep");
        // An end tag closes whatever was left open inside its element.
        let unclosed = format!("<div>{}</div>", "<span>".repeat(10)).repeat(100);
        assert!(!nesting_exceeds(&unclosed, 16));
        // Truncated input is fine.
        for s in ["<", "</", "<!--", "<script", "<div", "<!"] {
            assert!(!nesting_exceeds(s, 4));
        }
    }

    #[test]
    fn real_pages_are_far_below_the_nesting_limit() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/articles");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "html") {
                let html = std::fs::read_to_string(&path).unwrap();
                assert!(!nesting_exceeds(&html, 32), "{}", path.display());
            }
        }
    }

    /// Found by fuzzing (`fuzz/`, target `article`): html5ever's parse is
    /// tags × depth, so deeply nested markup stalled a thread for seconds
    /// per 30 kB. Such HTML is now refused before it is parsed.
    #[test]
    fn deeply_nested_html_is_refused_before_the_quadratic_parse() {
        let deep = nested("div", 100_000, "<p>text</p>");
        let started = std::time::Instant::now();
        assert_eq!(Sanitizer::new().clean_html(&deep, None), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let fine = nested("div", 100, "<p>text</p>");
        assert!(Sanitizer::new().clean_html(&fine, None).is_some());
    }

    fn base() -> Url {
        Url::parse("https://example.com/blog/post/").unwrap()
    }

    /// Cleans `input` with the test base and checks that every `want`
    /// fragment is present and every `reject` fragment is absent.
    #[track_caller]
    fn check(input: &str, want: &[&str], reject: &[&str]) {
        let out = Sanitizer::new()
            .clean_html(input, Some(&base()))
            .unwrap_or_else(|| panic!("expected content for {input:?}"));
        for w in want {
            assert!(out.contains(w), "{w:?} missing from {out:?}");
        }
        for r in reject {
            assert!(!out.contains(r), "{r:?} present in {out:?}");
        }
    }

    #[test]
    fn removes_active_content() {
        check(
            "<p>hi<script>alert(1)</script></p><style>p{}</style>",
            &["<p>hi</p>"],
            &["script", "alert", "style", "p{}"],
        );
        check(
            r#"<img src="/a.png" onerror="alert(1)"><p onclick="x()">t</p>"#,
            &["<img src=\"https://example.com/a.png\">", "<p>t</p>"],
            &["onerror", "onclick", "alert"],
        );
        check(
            r#"<a href="javascript:alert(1)">x</a><a href="JaVaScRiPt:alert(2)">y</a>"#,
            &["x", "y"],
            &["javascript", "JaVaScRiPt", "alert"],
        );
        check(
            r#"<p>before</p><iframe src="https://evil.example/">fallback</iframe><p>after</p>"#,
            &["<p>before</p>", "<p>after</p>"],
            &["iframe", "evil", "fallback"],
        );
        check(
            r#"<p style="color:red" class="x">t</p><object data="x.swf">o</object><embed src="y">"#,
            &["<p>t</p>"],
            &["style", "class", "object", "swf", "embed"],
        );
    }

    #[test]
    fn makes_relative_urls_absolute() {
        check(
            r#"<a href="other">o</a><a href="/root">r</a><a href="//cdn.example/x">c</a><img src="img.png" alt="A">"#,
            &[
                r#"<a href="https://example.com/blog/post/other" rel="noopener noreferrer">o</a>"#,
                r#"href="https://example.com/root""#,
                r#"href="https://cdn.example/x""#,
                r#"<img src="https://example.com/blog/post/img.png" alt="A">"#,
            ],
            &[],
        );
        check(
            r#"<img src="a.png" srcset="a-1x.png 1x, /a-2x.png 2x, javascript:alert(1) 3x,https://x.example/a,b.png 4x" sizes="50vw">"#,
            &[
                r#"srcset="https://example.com/blog/post/a-1x.png 1x, https://example.com/a-2x.png 2x, https://x.example/a,b.png 4x""#,
                r#"sizes="50vw""#,
            ],
            &["javascript"],
        );
    }

    #[test]
    fn keeps_the_allow_list() {
        check(
            "<figure><img src=\"https://x.example/i.png\" width=\"10\" height=\"20\"><figcaption>c</figcaption></figure>\
             <table><thead><tr><th>h</th></tr></thead><tfoot><tr><td>f</td></tr></tfoot></table>\
             <pre><code>let x = 1;</code></pre><blockquote>q</blockquote><h2>h2</h2><ul><li>i</li></ul><ol><li>j</li></ol>",
            &[
                "<figure>",
                "width=\"10\"",
                "<figcaption>c</figcaption>",
                "<thead>",
                "<tfoot>",
                "<pre><code>let x = 1;</code></pre>",
                "<blockquote>q</blockquote>",
                "<h2>h2</h2>",
                "<ul><li>i</li></ul>",
                "<ol><li>j</li></ol>",
            ],
            &[],
        );
    }

    #[test]
    fn without_base_relative_urls_are_dropped() {
        let s = Sanitizer::new();
        let out = s
            .clean_html(
                r#"<a href="rel">t</a><a href="https://a.example/">abs</a>"#,
                None,
            )
            .unwrap();
        assert_eq!(
            out,
            r#"<a rel="noopener noreferrer">t</a><a href="https://a.example/" rel="noopener noreferrer">abs</a>"#
        );
        // A relative image without a base is gone, and so is the content.
        assert_eq!(s.clean_html(r#"<img src="x.png">"#, None), None);
        // The base of one call never leaks into the next.
        assert!(
            s.clean_html(r#"<img src="x.png">"#, Some(&base()))
                .is_some()
        );
        assert_eq!(s.clean_html(r#"<img src="x.png">"#, None), None);
    }

    #[test]
    fn empty_results_are_none() {
        let s = Sanitizer::new();
        for input in [
            "",
            "   \n\t",
            "<p> </p>",
            "<p>&nbsp;</p><br><hr>",
            "<script>alert(1)</script>",
            "<!-- only a comment -->",
            "<div><span>\u{200B}</span></div>",
        ] {
            assert_eq!(s.clean_html(input, Some(&base())), None, "{input:?}");
        }
        // An image alone is content; so is one character of text.
        assert!(
            s.clean_html(r#"<img src="/i.png">"#, Some(&base()))
                .is_some()
        );
        assert!(s.clean_html("<p>é</p>", None).is_some());
        assert!(s.clean_html("<p>&amp;</p>", None).is_some());
    }

    #[test]
    fn entities_survive_cleaning() {
        check(
            "<p>Tom &amp; Jerry&rsquo;s &lt;tag&gt;</p>",
            &["<p>Tom &amp; Jerry\u{2019}s &lt;tag&gt;</p>"],
            &[],
        );
    }

    #[test]
    fn video_iframes_only() {
        check(
            r#"<p>a</p><iframe src="https://www.youtube.com/embed/xyz?utm_source=x" width="560" onload="x()">fallback</iframe>"#,
            &[r#"<iframe src="https://www.youtube.com/embed/xyz" width="560"></iframe>"#],
            &["onload", "fallback", "utm_source"],
        );
        check(
            r#"<p>a</p><iframe src="https://player.vimeo.com/video/1"></iframe>"#,
            &[r#"<iframe src="https://player.vimeo.com/video/1"></iframe>"#],
            &[],
        );
        for bad in [
            "http://www.youtube.com/embed/xyz",
            "https://www.youtube.com/watch?v=xyz",
            "https://evil.example/embed/x",
            "https://player.vimeo.com.evil.example/video/1",
            "javascript:alert(1)",
            "/embed/relative",
        ] {
            check(
                &format!(r#"<p>a</p><IFRAME SRC="{bad}">fallback</IFRAME>"#),
                &["<p>a</p>"],
                &["iframe", "fallback", "evil"],
            );
        }
    }

    #[test]
    fn data_urls_only_on_small_images() {
        let png = "data:image/png;base64,iVBORw0KGgo=";
        check(
            &format!(r#"<img src="{png}" alt="dot">"#),
            &[&format!(r#"<img src="{png}" alt="dot">"#)],
            &[],
        );
        let big = format!("data:image/png;base64,{}", "A".repeat(MAX_DATA_IMAGE_LEN));
        check(
            &format!(
                r#"<p>t</p><img src="{big}"><img src="data:image/svg+xml,<svg onload=alert(1)>">"#
            ),
            &["<p>t</p>"],
            &["data:", "svg"],
        );
        check(
            r#"<a href="data:text/html,<script>alert(1)</script>">x</a><a href=" DATA:image/png,x">y</a>"#,
            &["x", "y"],
            &["data:", "DATA:", "script"],
        );
    }

    #[test]
    fn tracking_parameters_are_removed() {
        for (input, want) in [
            ("https://a.example/p", "https://a.example/p"),
            ("https://a.example/p?id=3", "https://a.example/p?id=3"),
            (
                "https://a.example/p?utm_source=x&utm_medium=y",
                "https://a.example/p",
            ),
            (
                "https://a.example/p?id=3&fbclid=abc#top",
                "https://a.example/p?id=3#top",
            ),
            ("/rel?gclid=1&q=a%20b&UTM_Campaign=z", "/rel?q=a%20b"),
            (
                "https://a.example/?mc_cid=1&mc_eid=2&igshid=3&yclid=4&_hsenc=5&ref_src=6",
                "https://a.example/",
            ),
            ("https://a.example/p?utm", "https://a.example/p?utm"),
        ] {
            assert_eq!(strip_tracking(input), want, "{input}");
        }
        check(
            r#"<a href="/x?utm_source=feed&id=1">l</a><img src="i.png?fbclid=2" srcset="i2.png?utm_medium=a 2x">"#,
            &[
                r#"href="https://example.com/x?id=1""#,
                r#"src="https://example.com/blog/post/i.png""#,
                r#"srcset="https://example.com/blog/post/i2.png 2x""#,
            ],
            &["utm_", "fbclid"],
        );
    }

    #[test]
    fn html_to_text_cases() {
        for (input, want) in [
            ("", ""),
            ("  plain   title \n", "plain title"),
            ("Tom &amp; Jerry", "Tom & Jerry"),
            ("a&nbsp;b &rsquo; c &#8212; d", "a b \u{2019} c \u{2014} d"),
            ("<b>Bold</b> <i>move</i>", "Bold move"),
            ("<p>one</p><p>two</p>", "one two"),
            ("x<script>alert(1)</script>y<style>p{}</style>", "xy"),
            ("AT&T < 3 > 2", "AT&T < 3 > 2"),
            ("<![CDATA[x]]>", ""),
            ("line\nbreak\u{a0}nbsp", "line break nbsp"),
        ] {
            assert_eq!(html_to_text(input), want, "{input:?}");
        }
    }
}
