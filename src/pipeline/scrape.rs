//! Pages without feeds: an HTML page and a [`PageRule`] (CSS selectors for
//! its items and their parts) in, the same [`ParsedFeed`] the feed parser
//! gives out. A page feed is polled like any feed — the same dispatch,
//! host etiquette and conditional requests — and only its parser differs.
//!
//! This module owns how a page's parts become an entry:
//! - **Items** are the elements the `item` selector matches, in document
//!   order, outermost only (an item nested in another is part of it), at
//!   most [`MAX_ITEMS`].
//! - **Link**: the `link` selector's element's `href` (or its first
//!   `a[href]`); by default the item itself when it is a link, else its
//!   first `a[href]`. Only http(s) links count (`javascript:`, `mailto:`
//!   are skipped); relative ones resolve against `<base href>`, else the
//!   page's URL.
//! - **Title**: the `title` selector's text, else the link's text.
//! - **Date**: the `date` selector's (by default the item's first `<time>`)
//!   `datetime` or `content` attribute, else its text, parsed leniently;
//!   none (or an implausible one) and the store uses the time the entry
//!   was first seen.
//! - **Text**: the `content` selector's HTML, else the `summary`
//!   selector's, else the item's first paragraph; `image` adds a picture
//!   before it; `author` is the selector's text (by default the item's
//!   `rel="author"` element). Content is stored as the page gave it and
//!   sanitised when served, like a feed's.
//! - **Identity**: an entry's key is its normalised link, as for a feed's
//!   guid-less entries, so re-ordering or editing the page never makes a
//!   duplicate; a link to a section of the page itself (`#v2`) keeps its
//!   fragment, items that share any other link are told apart by their
//!   title and text, and items with no link are keyed by title and text.
//!
//! It does no I/O and never panics on input: a page it cannot read is a
//! [`ScrapeError`] naming the selector at fault.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use dom_query::{Document, Matcher, NodeId, NodeRef, Selection};
use url::Url;

use super::parse;
use super::sanitize::{MAX_NESTING, collapse_whitespace, html_to_text, nesting_exceeds};
use crate::model::{FetchedDoc, PageRule, ParsedEntry, ParsedFeed};
use crate::values;

/// The most items read from one page: a listing longer than this shows
/// its newest first nearly always, and each item is an entry to store.
pub const MAX_ITEMS: usize = 200;

/// The most HTML read from one page, in bytes; the rest is cut (items come
/// before footers and the scripts many pages end with).
pub const MAX_PAGE: usize = 8_000_000;

/// Why a page could not be read as a feed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// A selector that does not compile (the config and the command line
    /// check them; one stored by another version may not).
    #[error("invalid CSS selector for {part} `{selector}`: {reason}")]
    BadSelector {
        part: &'static str,
        selector: String,
        reason: String,
    },
    #[error(
        "the item selector `{selector}` matched nothing on the page (a page built by JavaScript in the browser shows Tributary no items); check it with `tributary feeds test URL --item …`"
    )]
    NoItems { selector: String },
    #[error(
        "the item selector `{selector}` matched {items} element(s), but none has a title, an http(s) link or text"
    )]
    NothingRead { selector: String, items: usize },
    #[error("the page nests elements more than {MAX_NESTING} deep; it is not read")]
    TooDeep,
    #[error("the page's address {0} is not a URL")]
    BadUrl(String),
}

/// A [`PageRule`] with every selector compiled, ready for many pages.
pub struct Scraper {
    item: Matcher,
    item_source: String,
    title: Option<Matcher>,
    link: Option<Matcher>,
    date: Option<Matcher>,
    summary: Option<Matcher>,
    content: Option<Matcher>,
    author: Option<Matcher>,
    image: Option<Matcher>,
    /// The defaults for parts without a selector.
    any_link: Option<Matcher>,
    time: Option<Matcher>,
    paragraph: Option<Matcher>,
    rel_author: Option<Matcher>,
    img: Option<Matcher>,
}

fn compile(part: &'static str, selector: &str) -> Result<Matcher, ScrapeError> {
    Matcher::new(selector).map_err(|e| ScrapeError::BadSelector {
        part,
        selector: selector.to_owned(),
        reason: format!("{:?}", e.kind),
    })
}

/// A built-in selector; a literal, so it compiles (None would match
/// nothing).
fn builtin(selector: &str) -> Option<Matcher> {
    Matcher::new(selector).ok()
}

impl Scraper {
    pub fn new(rule: &PageRule) -> Result<Scraper, ScrapeError> {
        let optional = |part: &'static str, s: &Option<String>| {
            s.as_deref().map(|s| compile(part, s)).transpose()
        };
        Ok(Scraper {
            item: compile("item", &rule.item)?,
            item_source: rule.item.clone(),
            title: optional("title", &rule.title)?,
            link: optional("link", &rule.link)?,
            date: optional("date", &rule.date)?,
            summary: optional("summary", &rule.summary)?,
            content: optional("content", &rule.content)?,
            author: optional("author", &rule.author)?,
            image: optional("image", &rule.image)?,
            any_link: builtin("a[href]"),
            time: builtin("time"),
            paragraph: builtin("p"),
            rel_author: builtin("[rel~=author], [itemprop=author]"),
            img: builtin("img"),
        })
    }

    /// Reads `html`, fetched from `page_url`, as a feed. Content is cut to
    /// `max_content` bytes, as a feed's is.
    pub fn scrape(
        &self,
        html: &str,
        page_url: &Url,
        max_content: usize,
        now: DateTime<Utc>,
    ) -> Result<ParsedFeed, ScrapeError> {
        let html = cut(html, MAX_PAGE);
        if nesting_exceeds(html, MAX_NESTING) {
            return Err(ScrapeError::TooDeep);
        }
        let doc = Document::from(html);
        // Scripts and styles are never text, and never items.
        doc.select("script, style, noscript, template").remove();
        let base = doc
            .select("base[href]")
            .nodes()
            .first()
            .and_then(|b| b.attr("href"))
            .and_then(|href| page_url.join(href.trim()).ok())
            .filter(is_web_url)
            .unwrap_or_else(|| page_url.clone());
        let title = doc
            .select("title")
            .nodes()
            .first()
            .map(|t| collapse_whitespace(&t.text()))
            .and_then(|t| values::safe_text(&t, values::MAX_TITLE_CHARS));

        let matched = doc.select_matcher(&self.item);
        if matched.is_empty() {
            return Err(ScrapeError::NoItems {
                selector: self.item_source.clone(),
            });
        }
        let ids: HashSet<NodeId> = matched.nodes().iter().map(|n| n.id).collect();
        let items: Vec<NodeRef<'_>> = matched
            .nodes()
            .iter()
            .filter(|n| !n.ancestors_it(None).any(|a| ids.contains(&a.id)))
            .take(MAX_ITEMS)
            .copied()
            .collect();
        let raw: Vec<RawItem> = items
            .iter()
            .filter_map(|item| self.read_item(*item, &base, now))
            .collect();
        if raw.is_empty() {
            return Err(ScrapeError::NothingRead {
                selector: self.item_source.clone(),
                items: items.len(),
            });
        }

        // A link to a section of this page (`#v2`) is named by its
        // fragment; any other link several items share names none of them.
        let this_page = [parse::link_key(page_url), parse::link_key(&base)];
        let section = |link: &Url| {
            link.fragment().is_some_and(|f| !f.is_empty())
                && this_page.contains(&parse::link_key(link))
        };
        let mut links: HashMap<String, usize> = HashMap::new();
        for link in raw.iter().filter_map(|i| i.link.as_ref()) {
            if !section(link) {
                *links.entry(parse::link_key(link)).or_default() += 1;
            }
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(raw.len());
        for item in raw {
            let by_fragment = item.link.as_ref().is_some_and(section);
            let shared = !by_fragment
                && item
                    .link
                    .as_ref()
                    .is_some_and(|l| links.get(&parse::link_key(l)).copied().unwrap_or(0) > 1);
            let text = item
                .content_html
                .as_deref()
                .map(html_to_text)
                .unwrap_or_default();
            let key = match &item.link {
                Some(link) if by_fragment => parse::fragment_link_key(link),
                Some(link) if shared => parse::shared_key(
                    link,
                    &format!("{}\u{0}{text}", item.title.as_deref().unwrap_or("")),
                ),
                Some(link) => parse::link_key(link),
                None => parse::text_key(item.title.as_deref(), &text),
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            // Neither a shared link nor a section of a listing is a
            // story's own address, to recognise it by elsewhere.
            let url_keys = match &item.link {
                Some(_) if shared || by_fragment => Vec::new(),
                link => super::dedup::link_candidates(link.as_ref()),
            };
            let content_html = item.content_html.map(|html| {
                let html = values::legal_text(&html);
                values::cap_html(&html, max_content).into_owned()
            });
            let link = item
                .link
                .map(String::from)
                .filter(|l| l.len() <= values::MAX_URL_BYTES);
            // Relative URLs in the text resolve against the page it was on.
            let content_base = content_html
                .is_some()
                .then(|| base.to_string())
                .filter(|b| Some(b) != link.as_ref());
            let mut authors: Vec<String> = item.author.into_iter().collect();
            values::safe_list(&mut authors, values::MAX_NAME_CHARS, values::MAX_AUTHORS);
            let mut entry = ParsedEntry {
                key,
                title: item.title,
                link,
                content_html,
                content_base,
                authors,
                categories: Vec::new(),
                published: item.published,
                updated: None,
                enclosures: Vec::new(),
                url_keys,
                content_hash: None,
                search_words: None,
            };
            entry.content_hash = Some(entry.compute_content_hash());
            entries.push(entry);
        }
        Ok(ParsedFeed {
            title,
            site_url: Some(page_url.to_string()),
            hints: Default::default(),
            entries,
        })
    }

    /// One item's parts; None when it has no title, link or text.
    fn read_item(&self, item: NodeRef<'_>, base: &Url, now: DateTime<Utc>) -> Option<RawItem> {
        let within = Selection::from(item);
        let first = |m: &Matcher| within.select_single_matcher(m).nodes().first().copied();

        // The link, and the element it came from (its text is the default
        // title).
        let (link, anchor) = match &self.link {
            // The first element it matches (the item itself, then within
            // it) that has or holds an http(s) link.
            Some(m) => std::iter::once(item)
                .filter(|i| i.is_match(m))
                .chain(within.select_matcher(m).nodes().iter().copied())
                .find_map(|node| match href_of(node, base) {
                    Some(url) => Some((Some(url), Some(node))),
                    None => match self.first_web_link(node, base) {
                        (None, _) => None,
                        found => Some(found),
                    },
                })
                .unwrap_or((None, None)),
            None => match href_of(item, base) {
                Some(url) if self.any_link.as_ref().is_some_and(|m| item.is_match(m)) => {
                    (Some(url), Some(item))
                }
                _ => self.first_web_link(item, base),
            },
        };

        let title = self
            .title
            .as_ref()
            .and_then(first)
            .and_then(text_of)
            .or_else(|| anchor.and_then(link_text));
        let title = title.and_then(|t| values::safe_text(&t, values::MAX_TITLE_CHARS));

        let date_node = self.date.as_ref().or(self.time.as_ref()).and_then(first);
        let published = date_node
            .and_then(|n| self.date_of(n))
            .filter(|d| values::plausible_date(*d, now));

        let body = [&self.content, &self.summary]
            .into_iter()
            .flatten()
            .find_map(|m| first(m).map(|n| n.inner_html().to_string()))
            .filter(|h| !h.trim().is_empty())
            .or_else(|| {
                if self.content.is_some() || self.summary.is_some() {
                    return None;
                }
                // By default, the item's first paragraph that is not its
                // title over again.
                let paragraph = self.paragraph.as_ref()?;
                within
                    .select_matcher(paragraph)
                    .nodes()
                    .iter()
                    .find(|p| text_of(**p).is_some_and(|t| Some(&t) != title.as_ref()))
                    .map(|p| p.inner_html().to_string())
            });
        let image = self
            .image
            .as_ref()
            .and_then(first)
            .and_then(|n| self.image_of(n, base));
        let content_html = match (image, body) {
            (Some(src), body) => Some(format!(
                "<p><img src=\"{}\" alt=\"\"></p>{}",
                escape_attr(src.as_str()),
                body.unwrap_or_default()
            )),
            (None, body) => body,
        };
        let author = self
            .author
            .as_ref()
            .or(self.rel_author.as_ref())
            .and_then(first)
            .and_then(text_of);

        let shows_text = content_html
            .as_deref()
            .is_some_and(|h| !html_to_text(h).is_empty() || h.contains("<img"));
        if title.is_none() && link.is_none() && !shows_text {
            return None;
        }
        Some(RawItem {
            title,
            link,
            published,
            content_html: content_html.filter(|h| !h.trim().is_empty()),
            author,
        })
    }

    /// The first `a[href]` in `node` whose link is http(s), and that
    /// anchor.
    fn first_web_link<'a>(
        &self,
        node: NodeRef<'a>,
        base: &Url,
    ) -> (Option<Url>, Option<NodeRef<'a>>) {
        let Some(any_link) = &self.any_link else {
            return (None, None);
        };
        Selection::from(node)
            .select_matcher(any_link)
            .nodes()
            .iter()
            .find_map(|a| href_of(*a, base).map(|url| (Some(url), Some(*a))))
            .unwrap_or((None, None))
    }

    /// A date element's time: its `datetime` (a `<time>`) or `content`
    /// (microdata) attribute, a `<time datetime>` inside it, else its text.
    fn date_of(&self, node: NodeRef<'_>) -> Option<DateTime<Utc>> {
        let attr = |n: NodeRef<'_>| {
            n.attr("datetime")
                .or_else(|| n.attr("content"))
                .map(|v| v.to_string())
        };
        let inner_time = || {
            let time = self.time.as_ref()?;
            Selection::from(node)
                .select_single_matcher(time)
                .nodes()
                .first()
                .and_then(|t| attr(*t))
        };
        attr(node)
            .or_else(inner_time)
            .and_then(|v| page_date(&v))
            .or_else(|| page_date(&node.text()))
    }

    /// An image element's address: `src` (or a lazy `data-src`) of the
    /// element or of its first `<img>`.
    fn image_of(&self, node: NodeRef<'_>, base: &Url) -> Option<Url> {
        let src = |n: NodeRef<'_>| {
            ["src", "data-src"]
                .iter()
                .filter_map(|a| n.attr(a))
                .find_map(|v| resolve(&v, base))
        };
        src(node).or_else(|| {
            Selection::from(node)
                .select_matcher(self.img.as_ref()?)
                .nodes()
                .iter()
                .find_map(|i| src(*i))
        })
    }
}

/// A fetched page read with `rule`; see [`Scraper::scrape`].
pub fn scrape_doc(
    doc: &FetchedDoc,
    rule: &PageRule,
    max_content: usize,
    now: DateTime<Utc>,
) -> Result<ParsedFeed, ScrapeError> {
    let scraper = Scraper::new(rule)?;
    let page =
        Url::parse(&doc.final_url).map_err(|_| ScrapeError::BadUrl(doc.final_url.clone()))?;
    let html = parse::decode_html(&doc.body, doc.charset.as_deref(), Some(&page));
    scraper.scrape(&html, &page, max_content, now)
}

/// Item selectors common to many sites' listings, most specific first,
/// for `feeds test` to suggest on a page without a feed.
const SUGGESTIONS: &[&str] = &[
    "article", ".h-entry", ".hentry", ".post", ".entry", ".item", ".card", "main li",
];

/// An item selector that finds at least three linked items on `html`,
/// with how many it finds: a starting point for a page rule, not a
/// guess to subscribe with.
pub fn suggest(html: &str, page: &Url) -> Option<(String, usize)> {
    SUGGESTIONS.iter().find_map(|selector| {
        let rule = PageRule {
            item: (*selector).to_owned(),
            ..PageRule::default()
        };
        let found = Scraper::new(&rule)
            .ok()?
            .scrape(html, page, values::DEFAULT_MAX_CONTENT, Utc::now())
            .ok()?;
        let linked = found.entries.iter().filter(|e| e.link.is_some()).count();
        (linked >= 3).then(|| ((*selector).to_owned(), linked))
    })
}

/// What one item said, before it gets its key.
struct RawItem {
    title: Option<String>,
    link: Option<Url>,
    published: Option<DateTime<Utc>>,
    content_html: Option<String>,
    author: Option<String>,
}

/// `html` cut to at most `max` bytes, at a character boundary.
fn cut(html: &str, max: usize) -> &str {
    if html.len() <= max {
        return html;
    }
    let mut at = max;
    while !html.is_char_boundary(at) {
        at -= 1;
    }
    &html[..at]
}

fn is_web_url(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https") && url.has_host()
}

/// A URL from the page made absolute; only http(s) ones.
fn resolve(raw: &str, base: &Url) -> Option<Url> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    base.join(raw).ok().filter(is_web_url)
}

fn href_of(node: NodeRef<'_>, base: &Url) -> Option<Url> {
    node.attr("href").and_then(|h| resolve(&h, base))
}

/// An element's text on one line; None when blank.
fn text_of(node: NodeRef<'_>) -> Option<String> {
    Some(collapse_whitespace(&node.text())).filter(|t| !t.is_empty())
}

/// What a link says: its text, else its `title`, else its image's `alt`.
fn link_text(anchor: NodeRef<'_>) -> Option<String> {
    text_of(anchor)
        .or_else(|| anchor.attr("title").map(|t| collapse_whitespace(&t)))
        .or_else(|| {
            Selection::from(anchor)
                .select("img[alt]")
                .nodes()
                .first()
                .and_then(|i| i.attr("alt"))
                .map(|t| collapse_whitespace(&t))
        })
        .filter(|t| !t.is_empty())
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

/// A date as pages write it: what feeds send (RFC 3339, RFC 2822 and
/// their usual breakages, see `parse`), dates without a time or zone
/// (`2026-03-01`, `March 1, 2026`, `1 Mar 2026`, `01.03.2026`; month
/// names in English), or one of those inside other words
/// (`Posted on March 1st, 2026 by Ada`). Times without a zone are taken
/// as UTC. Relative dates ("2 hours ago") are not read.
pub fn page_date(text: &str) -> Option<DateTime<Utc>> {
    let t = collapse_whitespace(text);
    if t.is_empty() || t.len() > 300 {
        return None;
    }
    parse::timestamp(&t).or_else(|| plain_date(&t)).or_else(|| {
        date_patterns()
            .iter()
            .flat_map(|re| re.find_iter(&t))
            .find_map(|m| parse::timestamp(m.as_str()).or_else(|| plain_date(m.as_str())))
    })
}

/// Date and time formats without a zone, tried after removing ordinal
/// suffixes (`1st`), commas and the dot of an abbreviated month.
fn plain_date(t: &str) -> Option<DateTime<Utc>> {
    const DATE_TIMES: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    const DATES: &[&str] = &[
        "%Y-%m-%d",
        "%Y/%m/%d",
        "%d.%m.%Y",
        "%B %d %Y",
        "%d %B %Y",
        "%A %B %d %Y",
        "%A %d %B %Y",
    ];
    let t = t.trim();
    for f in DATE_TIMES {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc());
        }
    }
    let normal = normalise_date_words(t);
    for f in DATES {
        for candidate in [t, normal.as_str()] {
            if let Ok(d) = NaiveDate::parse_from_str(candidate, f) {
                return d.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
            }
        }
    }
    None
}

/// `March 1st, 2026` → `March 1 2026`; `Mar. 1` → `Mar 1`.
fn normalise_date_words(t: &str) -> String {
    use regex::Regex;
    use std::sync::LazyLock;
    static ORDINAL: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"(?i)\b(\d{1,2})(st|nd|rd|th)\b").ok());
    let t = match ORDINAL.as_ref() {
        Some(re) => re.replace_all(t, "$1").into_owned(),
        None => t.to_owned(),
    };
    let t: String = t
        .split_whitespace()
        .map(|w| {
            let w = w.trim_end_matches(',');
            // `Mar.` but not `01.03.2026`.
            if w.ends_with('.') && w.chars().all(|c| c.is_alphabetic() || c == '.') {
                w.trim_end_matches('.')
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    t
}

/// Dates inside other words: ISO dates (with a time), `Month D, YYYY` and
/// `D Month YYYY`.
fn date_patterns() -> &'static [regex::Regex] {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<Vec<regex::Regex>> = LazyLock::new(|| {
        const MONTH: &str = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?";
        [
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
                .to_owned(),
            format!(r"(?i)\b{MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"),
            format!(r"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\.?\s+{MONTH},?\s+\d{{4}}"),
            r"\b\d{2}\.\d{2}\.\d{4}\b".to_owned(),
        ]
        .iter()
        .filter_map(|p| regex::Regex::new(p).ok())
        .collect()
    });
    &PATTERNS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(item: &str) -> PageRule {
        PageRule {
            item: item.to_owned(),
            ..PageRule::default()
        }
    }

    fn page() -> Url {
        Url::parse("https://news.example/blog/index.html").unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    fn scrape(html: &str, rule: &PageRule) -> Result<ParsedFeed, ScrapeError> {
        Scraper::new(rule)?.scrape(html, &page(), values::DEFAULT_MAX_CONTENT, now())
    }

    fn listing(items: &[(&str, &str)]) -> String {
        let items: String = items
            .iter()
            .map(|(href, title)| {
                format!("<article><h2><a href=\"{href}\">{title}</a></h2><p>About {title}.</p></article>")
            })
            .collect();
        format!(
            "<html><head><title> The  Blog </title></head><body><nav><a href=\"/\">Home</a></nav>{items}</body></html>"
        )
    }

    #[test]
    fn defaults_take_the_first_link_its_text_and_the_first_paragraph() {
        let html = listing(&[("one.html", "First"), ("/two", "Second & more")]);
        let feed = scrape(&html, &rule("article")).unwrap();
        assert_eq!(feed.title.as_deref(), Some("The Blog"));
        assert_eq!(feed.site_url.as_deref(), Some(page().as_str()));
        let got: Vec<_> = feed
            .entries
            .iter()
            .map(|e| (e.title.as_deref(), e.link.as_deref(), e.key.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Some("First"),
                    Some("https://news.example/blog/one.html"),
                    "link:https://news.example/blog/one.html"
                ),
                (
                    Some("Second & more"),
                    Some("https://news.example/two"),
                    "link:https://news.example/two"
                ),
            ]
        );
        let first = &feed.entries[0];
        assert_eq!(first.content_html.as_deref(), Some("About First."));
        assert_eq!(first.content_base.as_deref(), Some(page().as_str()));
        assert_eq!(first.published, None);
        assert!(first.url_keys.iter().any(|k| k.contains("one.html")));
        assert!(first.content_hash.is_some());
    }

    #[test]
    fn keys_follow_links_so_order_and_edits_do_not_change_them() {
        let before = scrape(
            &listing(&[("/a?utm_source=x", "A"), ("/b#top", "B")]),
            &rule("article"),
        )
        .unwrap();
        let after = scrape(
            &listing(&[("/c", "C"), ("/b", "B, edited"), ("/a", "A")]),
            &rule("article"),
        )
        .unwrap();
        let key = |f: &ParsedFeed, title: &str| {
            f.entries
                .iter()
                .find(|e| e.title.as_deref() == Some(title))
                .map(|e| e.key.clone())
                .unwrap()
        };
        assert_eq!(key(&before, "A"), key(&after, "A"));
        assert_eq!(key(&before, "B"), key(&after, "B, edited"));
        assert_ne!(key(&after, "C"), key(&after, "A"));
    }

    #[test]
    fn base_href_and_explicit_selectors() {
        let html = r#"<html><head><base href="https://cdn.example/posts/"></head><body>
            <div class="row"><span class="t">  Hello
               world </span><a class="more" href="javascript:void(0)">more</a>
               <a class="more" href="hello">read</a>
               <span class="when">Posted on March 3rd, 2026 by Ada</span>
               <div class="lede"><p>Lede <a href="x.html">x</a></p></div>
               <span class="by">Ada</span><img class="pic" data-src="p.jpg"></div>
            <div class="row"><span class="t">No link</span><div class="lede">Only text</div></div>
          </body></html>"#;
        let rule = PageRule {
            item: ".row".into(),
            title: Some(".t".into()),
            link: Some("a.more".into()),
            date: Some(".when".into()),
            summary: Some(".lede".into()),
            author: Some(".by".into()),
            image: Some(".pic".into()),
            ..PageRule::default()
        };
        let feed = scrape(html, &rule).unwrap();
        let [a, b] = &feed.entries[..] else {
            panic!("{feed:?}")
        };
        assert_eq!(a.title.as_deref(), Some("Hello world"));
        // The javascript: link is passed over for the next one.
        assert_eq!(a.link.as_deref(), Some("https://cdn.example/posts/hello"));
        assert_eq!(a.published, Some("2026-03-03T00:00:00Z".parse().unwrap()));
        assert_eq!(a.authors, ["Ada"]);
        let html = a.content_html.as_deref().unwrap();
        assert!(
            html.starts_with("<p><img src=\"https://cdn.example/posts/p.jpg\""),
            "{html}"
        );
        assert!(html.contains("Lede <a href=\"x.html\">x</a>"), "{html}");
        assert_eq!(
            a.content_base.as_deref(),
            Some("https://cdn.example/posts/")
        );
        // No link: keyed by title and text, and its text resolves against
        // the page.
        assert_eq!(b.link, None);
        assert!(b.key.starts_with("hash:"), "{}", b.key);
        assert_eq!(b.content_html.as_deref(), Some("Only text"));
    }

    #[test]
    fn dates_in_the_forms_pages_write_them() {
        let at = |s: &str| page_date(s).map(|d| d.to_rfc3339());
        let day = Some("2026-03-01T00:00:00+00:00".to_owned());
        for s in [
            "2026-03-01",
            "March 1, 2026",
            "Mar. 1st, 2026",
            "1 March 2026",
            "Sunday, March 1, 2026",
            "01.03.2026",
            "2026/03/01",
            "Posted on 1 Mar 2026 by Ada",
            "Updated: March 1st, 2026",
        ] {
            assert_eq!(at(s), day, "{s}");
        }
        assert_eq!(
            at("2026-03-01T12:30:00+02:00").as_deref(),
            Some("2026-03-01T10:30:00+00:00")
        );
        assert_eq!(
            at("2026-03-01 12:30").as_deref(),
            Some("2026-03-01T12:30:00+00:00")
        );
        for s in [
            "",
            "yesterday",
            "2 hours ago",
            "March",
            "99999-01-01",
            "no date",
        ] {
            assert_eq!(at(s), None, "{s}");
        }
    }

    #[test]
    fn a_time_element_is_the_default_date_and_implausible_dates_are_dropped() {
        let html = r#"<ul><li><a href="/a">A</a> <time datetime="2026-05-02T08:00:00Z">May 2</time></li>
            <li><a href="/b">B</a> <time datetime="9999-01-01">far</time></li>
            <li><a href="/c">C</a> <time>0001-01-01</time></li></ul>"#;
        let feed = scrape(html, &rule("li")).unwrap();
        let dates: Vec<_> = feed.entries.iter().map(|e| e.published).collect();
        assert_eq!(
            dates,
            [Some("2026-05-02T08:00:00Z".parse().unwrap()), None, None]
        );
    }

    #[test]
    fn an_item_selector_that_matches_nothing_is_an_error_naming_it() {
        let err = scrape(&listing(&[("/a", "A")]), &rule("div.post")).unwrap_err();
        assert_eq!(
            err,
            ScrapeError::NoItems {
                selector: "div.post".into()
            }
        );
        assert!(
            err.to_string()
                .starts_with("the item selector `div.post` matched nothing on the page"),
            "{err}"
        );
        let err = scrape("<p></p><p> </p>", &rule("p")).unwrap_err();
        assert!(
            matches!(err, ScrapeError::NothingRead { items: 2, .. }),
            "{err}"
        );
        let err = Scraper::new(&rule("div[")).err().unwrap();
        assert!(
            matches!(err, ScrapeError::BadSelector { part: "item", .. }),
            "{err}"
        );
    }

    #[test]
    fn scripts_never_become_text_and_only_web_links_count() {
        let html = r#"<div class="i"><a href="javascript:alert(1)">Click<script>alert("x")</script></a>
              <script>document.write("<a href='/evil'>evil</a>")</script><style>.x{}</style>
              <p>Visible<script>var secret = 1;</script></p></div>
            <div class="i"><a href="mailto:a@b.example">Mail</a><a href="data:text/html,hi">d</a><p>Write</p></div>
            <div class="i"><a href="mailto:a@b.example">Mail</a></div>"#;
        let feed = scrape(html, &rule(".i")).unwrap();
        // The last item has no web link, no title and no text: nothing.
        let [a, b] = &feed.entries[..] else {
            panic!("{feed:?}")
        };
        assert_eq!(a.link, None);
        assert_eq!(b.link, None);
        assert_eq!(b.content_html.as_deref(), Some("Write"));
        for e in &feed.entries {
            let all = format!("{:?} {:?}", e.title, e.content_html);
            assert!(!all.contains("alert") && !all.contains("secret"), "{all}");
            assert!(!all.contains("evil"), "{all}");
        }
        assert_eq!(a.content_html.as_deref(), Some("Visible"));
    }

    #[test]
    fn nested_items_belong_to_the_outermost_and_links_shared_by_items_keep_them_apart() {
        let html = r#"<div class="c"><a href="/one">One</a>
                <div class="c"><a href="/inner">Inner</a></div></div>
            <div class="c"><a href="/section">Section</a><p>First story</p></div>
            <div class="c"><a href="/section">Section</a><p>Second story</p></div>"#;
        let feed = scrape(html, &rule(".c")).unwrap();
        let keys: Vec<&str> = feed.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert_eq!(keys[0], "link:https://news.example/one");
        assert!(keys[1].starts_with("link:https://news.example/section#"));
        assert_ne!(keys[1], keys[2]);
        assert!(feed.entries[1].url_keys.is_empty());

        // Sections of the page itself: the fragment names each, whatever
        // their text says on the next poll or which others are listed.
        let sections = |b: &str| {
            format!(
                r##"<section><a href="#v2">v2</a><p>Two {b}</p></section>
                <section><a href="changes.html#v1">v1</a><p>One {b}</p></section>
                <section><a href="#">top</a><p>Top {b}</p></section>
                <section><a href="#">top</a><p>Top again {b}</p></section>"##
            )
        };
        let keys = |b: &str| -> Vec<String> {
            scrape(&sections(b), &rule("section"))
                .unwrap()
                .entries
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        let before = keys("first");
        assert_eq!(before[0], "link:https://news.example/blog/index.html#v2");
        // Another page's fragment is no name: its link is.
        assert_eq!(before[1], "link:https://news.example/blog/changes.html");
        let after = keys("edited");
        assert_eq!(before[..2], after[..2]);
        // Links to the page itself name nothing: keyed by their text.
        assert_ne!(before[2], before[3]);
    }

    #[test]
    fn hostile_pages_are_bounded_not_fatal() {
        // Thousands of items: the first MAX_ITEMS are read.
        let many: String = (0..5000)
            .map(|i| format!("<li><a href=\"/p{i}\">Post {i}</a></li>"))
            .collect();
        let feed = scrape(&format!("<ul>{many}</ul>"), &rule("li")).unwrap();
        assert_eq!(feed.entries.len(), MAX_ITEMS);
        assert_eq!(feed.entries[0].title.as_deref(), Some("Post 0"));
        // Nesting deeper than the sanitiser parses is refused.
        let deep = format!(
            "{}<a href=\"/x\">x</a>",
            "<div class=i>".repeat(MAX_NESTING + 10)
        );
        assert_eq!(
            scrape(&deep, &rule(".i")).unwrap_err(),
            ScrapeError::TooDeep
        );
        // A page over MAX_PAGE is cut at a character boundary, not refused.
        let big = format!(
            "<ul><li><a href=\"/first\">é first</a></li></ul><!--{}-->",
            "é".repeat(MAX_PAGE / 2 + 1)
        );
        let feed = scrape(&big, &rule("li")).unwrap();
        assert_eq!(feed.entries.len(), 1);
        // Control characters and huge titles are made safe; huge content
        // is cut.
        let title = format!("A\u{1}B{}", "x".repeat(10_000));
        let html = format!(
            "<li><a href=\"/t\">{title}</a><p>{}</p></li>",
            "y".repeat(100_000)
        );
        let feed = Scraper::new(&rule("li"))
            .unwrap()
            .scrape(&html, &page(), 2048, now())
            .unwrap();
        let e = &feed.entries[0];
        let t = e.title.as_deref().unwrap();
        assert!(!t.contains('\u{1}') && t.chars().count() <= values::MAX_TITLE_CHARS);
        assert!(e.content_html.as_deref().unwrap().len() < 4096);
    }

    #[test]
    fn suggestions_need_three_linked_items() {
        let html = listing(&[("/a", "A"), ("/b", "B"), ("/c", "C")]);
        assert_eq!(suggest(&html, &page()), Some(("article".to_owned(), 3)));
        let html = listing(&[("/a", "A")]);
        assert_eq!(suggest(&html, &page()), None);
    }
}
