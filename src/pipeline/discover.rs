//! Discovery: which feeds a web page offers. The functions over a page
//! ([`candidates`], [`derived`]) are pure; [`Pipeline::discover`] fetches
//! (through `fetch`, like every request) and checks what they find, for
//! `feeds add`; a poll that finds a page where its feed should be uses
//! [`candidates`] on the page it already has.
//!
//! Three sources, best first:
//! 1. the page's own `<link rel="alternate">` feeds (RSS, Atom, JSON Feed),
//!    in document order, comment feeds last;
//! 2. feeds derived from the address of sites that do not link theirs (or
//!    not on every page): a YouTube channel, user or playlist, a subreddit,
//!    a GitHub repository's releases, a Mastodon account. The page's
//!    canonical URL counts as its address too;
//! 3. the usual paths (`/feed`, `/rss`, `/atom.xml`, …), which the caller
//!    probes only when the first two found nothing.

use dom_query::Document;
use url::Url;

use super::fetch::{FetchError, Request, Secrets};
use super::parse::{self, ParseError};
use super::{Pipeline, sanitize};
use crate::model::{FetchOutcome, RequestOptions, Validators};

/// The usual places of a site's feed, probed in this order when the page
/// links none.
pub const COMMON_PATHS: &[&str] = &[
    "/feed",
    "/rss",
    "/atom.xml",
    "/index.xml",
    "/feed.xml",
    "/rss.xml",
    "/feed.json",
    "/atom",
    "/index.rss",
];

/// Media types of `<link rel="alternate">` that are feeds.
const FEED_TYPES: &[(&str, FeedKind)] = &[
    ("application/rss+xml", FeedKind::Rss),
    ("application/atom+xml", FeedKind::Atom),
    ("application/feed+json", FeedKind::Json),
    ("application/json", FeedKind::Json),
    ("application/rdf+xml", FeedKind::Rss),
    ("text/xml", FeedKind::Unknown),
    ("application/xml", FeedKind::Unknown),
];

/// A page larger than this is not searched for links: the head, where
/// links live, comes first, and parsing a huge page costs.
const MAX_PAGE: usize = 2_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    Rss,
    Atom,
    Json,
    Unknown,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Rss => "RSS",
            FeedKind::Atom => "Atom",
            FeedKind::Json => "JSON Feed",
            FeedKind::Unknown => "feed",
        }
    }
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `<link rel="alternate">` on the page.
    Link,
    /// Derived from the address of a known kind of site.
    Derived,
    /// A usual path that answered with a feed.
    Probed,
}

/// A feed a page offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Absolute http(s) URL.
    pub url: String,
    /// The link's title, or what the derivation says it is.
    pub title: Option<String>,
    pub kind: FeedKind,
    pub source: Source,
}

/// The feeds `html`, fetched from `page`, links or its address implies,
/// best first, without duplicates.
pub fn candidates(html: &str, page: &Url) -> Vec<Candidate> {
    let mut found = Vec::new();
    let mut addresses = vec![page.clone()];
    if html.len() <= MAX_PAGE && !sanitize::nesting_exceeds(html, sanitize::MAX_NESTING) {
        let doc = Document::from(html);
        // Relative hrefs resolve against <base href> when there is one.
        let base = doc
            .select("base[href]")
            .iter()
            .next()
            .and_then(|b| b.attr("href"))
            .and_then(|href| page.join(href.trim()).ok())
            .unwrap_or_else(|| page.clone());
        let mut comments = Vec::new();
        for link in doc.select("link[rel][href]").iter() {
            let rel = link.attr("rel").unwrap_or_default().to_ascii_lowercase();
            if !rel.split_ascii_whitespace().any(|r| r == "alternate") {
                continue;
            }
            let media = link
                .attr("type")
                .map(|t| {
                    t.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            let Some(&(_, kind)) = FEED_TYPES.iter().find(|(t, _)| *t == media) else {
                continue;
            };
            let Some(url) = link
                .attr("href")
                .and_then(|href| base.join(href.trim()).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
            else {
                continue;
            };
            let title = link
                .attr("title")
                .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|t| !t.is_empty());
            let candidate = Candidate {
                url: url.to_string(),
                title,
                kind,
                source: Source::Link,
            };
            // A blog's comments feed is rarely what a reader means.
            if is_comments(&candidate) {
                comments.push(candidate);
            } else {
                found.push(candidate);
            }
        }
        found.extend(comments);
        if let Some(canonical) = doc
            .select("link[rel=canonical][href], meta[property='og:url'][content]")
            .iter()
            .find_map(|el| el.attr("href").or_else(|| el.attr("content")))
            .and_then(|href| page.join(href.trim()).ok())
        {
            addresses.push(canonical);
        }
    }
    for address in &addresses {
        if let Some(derived) = derived(address) {
            found.push(derived);
        }
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|c| seen.insert(c.url.clone()));
    found
}

impl Candidate {
    /// Whether the candidate should be fetched before subscribing: all
    /// but the feeds derived for the large sites whose feed addresses are
    /// fixed (checking those would mean fetching them for nothing).
    pub fn needs_check(&self) -> bool {
        let fixed = Url::parse(&self.url).ok().and_then(|u| {
            u.host_str()
                .map(|h| matches!(h, "www.youtube.com" | "www.reddit.com" | "github.com"))
        });
        !(self.source == Source::Derived && fixed == Some(true))
    }
}

fn is_comments(c: &Candidate) -> bool {
    let title = c.title.as_deref().unwrap_or_default().to_lowercase();
    title.contains("comment") || c.url.to_lowercase().contains("/comments/feed")
}

/// The feed of a known kind of site, from a page's address alone.
pub fn derived(url: &Url) -> Option<Candidate> {
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    let host = host
        .strip_prefix("www.")
        .or_else(|| host.strip_prefix("m."))
        .or_else(|| host.strip_prefix("old."))
        .unwrap_or(&host);
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let candidate = |url: String, title: String, kind| Candidate {
        url,
        title: Some(title),
        kind,
        source: Source::Derived,
    };
    let safe = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    match (host, segments.as_slice()) {
        ("youtube.com", _) => {
            let videos = "https://www.youtube.com/feeds/videos.xml";
            if let Some((_, list)) = url.query_pairs().find(|(k, _)| k == "list")
                && safe(&list)
            {
                return Some(candidate(
                    format!("{videos}?playlist_id={list}"),
                    "YouTube playlist".into(),
                    FeedKind::Atom,
                ));
            }
            match segments.as_slice() {
                ["channel", id, ..] if safe(id) => Some(candidate(
                    format!("{videos}?channel_id={id}"),
                    "YouTube channel".into(),
                    FeedKind::Atom,
                )),
                ["user", name, ..] if safe(name) => Some(candidate(
                    format!("{videos}?user={name}"),
                    "YouTube user".into(),
                    FeedKind::Atom,
                )),
                _ => None,
            }
        }
        ("reddit.com", ["r", name, rest @ ..]) if safe(name) => {
            // A subreddit, or one of its listings (/r/rust/top).
            let listing = match rest {
                [l, ..] if matches!(*l, "new" | "top" | "hot" | "rising") => format!("{l}/"),
                _ => String::new(),
            };
            Some(candidate(
                format!("https://www.reddit.com/r/{name}/{listing}.rss"),
                format!("r/{name}"),
                FeedKind::Atom,
            ))
        }
        ("reddit.com", ["user" | "u", name, ..]) if safe(name) => Some(candidate(
            format!("https://www.reddit.com/user/{name}/.rss"),
            format!("u/{name}"),
            FeedKind::Atom,
        )),
        ("github.com", [owner, repo, ..])
            if safe(owner)
                && safe(repo)
                && !matches!(
                    *owner,
                    "orgs" | "settings" | "marketplace" | "topics" | "features" | "sponsors"
                ) =>
        {
            let repo = repo.strip_suffix(".git").unwrap_or(repo);
            Some(candidate(
                format!("https://github.com/{owner}/{repo}/releases.atom"),
                format!("{owner}/{repo} releases"),
                FeedKind::Atom,
            ))
        }
        // A Mastodon (or other ActivityPub server's) account page:
        // https://host/@user, whose feed is https://host/@user.rss.
        (_, [account]) if account.len() > 1 && account.starts_with('@') && safe(&account[1..]) => {
            let mut feed = url.clone();
            feed.set_path(&format!("/{account}.rss"));
            feed.set_query(None);
            feed.set_fragment(None);
            Some(candidate(
                feed.to_string(),
                format!("{account} posts"),
                FeedKind::Rss,
            ))
        }
        _ => None,
    }
}

/// The usual feed URLs of `page`'s site, in probing order.
pub fn common_paths(page: &Url) -> Vec<String> {
    COMMON_PATHS
        .iter()
        .filter_map(|path| page.join(path).ok())
        .map(|u| u.to_string())
        .collect()
}

/// What `feeds add` learns about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// The address is a feed itself.
    Feed,
    /// The address is a page; these feeds were found, best first, each
    /// checked to be a feed (or exempt, see [`Candidate::needs_check`]).
    Page { feeds: Vec<Candidate> },
}

/// Why discovery found nothing to subscribe to.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The address could not be fetched at all.
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// The address answered with something that is neither a feed nor a
    /// page (an image, a broken feed).
    #[error("{0}")]
    NotAFeed(ParseError),
    /// A page that offers no feed.
    #[error(
        "no feed found on {url}: the page links none (<link rel=\"alternate\">) and none of {} answers with a feed",
        COMMON_PATHS.join(", ")
    )]
    NoFeed { url: String },
}

/// How many linked candidates are fetched to check them before giving up
/// on the page's links.
const MAX_CHECKS: usize = 4;

impl Pipeline {
    /// What `url` is: a feed, or a page and the feeds it offers (links,
    /// a known site's feed, else the first usual path that answers with a
    /// feed). `options` are the subscription's own request options; their
    /// secrets go only to `url`'s origin.
    pub async fn discover(
        &self,
        url: &str,
        options: &RequestOptions,
    ) -> Result<Discovery, DiscoverError> {
        let page = Url::parse(url).map_err(|e| FetchError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        // A well-known site's page is not fetched: its feed is known.
        if let Some(feed) = derived(&page).filter(|c| !c.needs_check()) {
            return Ok(Discovery::Page { feeds: vec![feed] });
        }
        let secrets = Secrets::Origin(page.clone());
        let request = Request {
            options,
            secrets: &secrets,
        };
        let doc = match self.fetch_doc(url, request).await? {
            Ok(_) => return Ok(Discovery::Feed),
            Err((ParseError::HtmlPage, doc)) => doc,
            Err((e, _)) => return Err(DiscoverError::NotAFeed(e)),
        };
        let final_url = Url::parse(&doc.final_url).unwrap_or(page.clone());
        let html = parse::decode_html(&doc.body, doc.charset.as_deref(), Some(&final_url));
        let found = tokio::task::spawn_blocking(move || candidates(&html, &final_url))
            .await
            .unwrap_or_default();
        let mut feeds = Vec::new();
        let mut checks = 0;
        for candidate in found {
            if !candidate.needs_check() {
                feeds.push(candidate);
                continue;
            }
            // The best one is checked, and the next while checks fail;
            // the rest are listed as the page gives them.
            if feeds.is_empty() && checks < MAX_CHECKS {
                checks += 1;
                if !matches!(self.fetch_doc(&candidate.url, request).await, Ok(Ok(_))) {
                    continue;
                }
            }
            feeds.push(candidate);
        }
        if feeds.is_empty() {
            for path in common_paths(&page) {
                if let Ok(Ok(kind)) = self.fetch_doc(&path, request).await {
                    feeds.push(Candidate {
                        url: path,
                        title: None,
                        kind,
                        source: Source::Probed,
                    });
                    // One is enough: each probe is a request to the site.
                    break;
                }
            }
        }
        if feeds.is_empty() {
            return Err(DiscoverError::NoFeed {
                url: url.to_owned(),
            });
        }
        Ok(Discovery::Page { feeds })
    }

    /// Fetches `url` and parses it: the feed's kind, or why it is not a
    /// feed with the document (a page's HTML, for its links).
    async fn fetch_doc(
        &self,
        url: &str,
        request: Request<'_>,
    ) -> Result<Result<FeedKind, (ParseError, crate::model::FetchedDoc)>, FetchError> {
        let doc = match self
            .fetcher
            .fetch_feed(url, &Validators::default(), None, Some(request))
            .await?
        {
            FetchOutcome::Fetched(doc) => doc,
            // Without validators a server has no business answering 304.
            FetchOutcome::NotModified { .. } => {
                return Err(FetchError::Status {
                    status: 304,
                    retry_after: None,
                });
            }
        };
        let sanitizer = std::sync::Arc::clone(&self.sanitizer);
        let _cpu = self.cpu.acquire().await;
        tokio::task::spawn_blocking(move || {
            match parse::parse_feed(
                &doc.body,
                doc.charset.as_deref(),
                &doc.final_url,
                &sanitizer,
            ) {
                Ok(_) => {
                    let kind = match doc.media_type.as_deref() {
                        Some(m) if m.contains("atom") => FeedKind::Atom,
                        Some(m) if m.contains("json") => FeedKind::Json,
                        Some(m) if m.contains("rss") => FeedKind::Rss,
                        _ => FeedKind::Unknown,
                    };
                    Ok(Ok(kind))
                }
                Err(e) => Ok(Err((e, doc))),
            }
        })
        .await
        .map_err(|e| FetchError::Http(format!("parser crashed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(found: &[Candidate]) -> Vec<&str> {
        found.iter().map(|c| c.url.as_str()).collect()
    }

    #[test]
    fn alternate_links_in_order_comments_last_relative_resolved() {
        let page = Url::parse("https://blog.example/post/1").unwrap();
        let html = r#"<html><head>
            <link rel="stylesheet" href="/style.css">
            <link rel="alternate" type="application/rss+xml" title="Blog &raquo; Comments Feed" href="/comments/feed/">
            <link rel="alternate" type="application/rss+xml" title=" Blog   Feed " href="/feed/">
            <link rel="alternate" type="application/atom+xml" href="atom.xml">
            <link rel="alternate" type="application/feed+json" href="https://blog.example/feed.json">
            <link rel="alternate" type="text/html" hreflang="fr" href="/fr/">
            <link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
            <link rel="alternate" type="application/rss+xml" href="/feed/">
            <link rel="ALTERNATE home" type="Application/RSS+XML; charset=utf-8" href="//cdn.example/x.rss">
            </head><body><a rel="alternate" href="/not-a-link.xml">x</a></body></html>"#;
        let found = candidates(html, &page);
        assert_eq!(
            urls(&found),
            [
                "https://blog.example/feed/",
                "https://blog.example/post/atom.xml",
                "https://blog.example/feed.json",
                "https://cdn.example/x.rss",
                "https://blog.example/comments/feed/",
            ]
        );
        assert_eq!(found[0].title.as_deref(), Some("Blog Feed"));
        assert_eq!(found[1].kind, FeedKind::Atom);
        assert_eq!(found[2].kind, FeedKind::Json);
        assert!(found.iter().all(|c| c.source == Source::Link));
    }

    #[test]
    fn base_href_is_honoured() {
        let page = Url::parse("https://a.example/x/y").unwrap();
        let html = r#"<head><base href="https://b.example/root/"><link rel="alternate" type="application/atom+xml" href="feed.atom"></head>"#;
        assert_eq!(
            urls(&candidates(html, &page)),
            ["https://b.example/root/feed.atom"]
        );
    }

    #[test]
    fn known_sites_derive_their_feeds() {
        let cases = [
            (
                "https://www.youtube.com/channel/UCabc_-1/videos",
                Some("https://www.youtube.com/feeds/videos.xml?channel_id=UCabc_-1"),
            ),
            (
                "https://youtube.com/user/SomeOne",
                Some("https://www.youtube.com/feeds/videos.xml?user=SomeOne"),
            ),
            (
                "https://m.youtube.com/playlist?list=PL1234",
                Some("https://www.youtube.com/feeds/videos.xml?playlist_id=PL1234"),
            ),
            (
                "https://www.youtube.com/watch?v=x&list=PL99",
                Some("https://www.youtube.com/feeds/videos.xml?playlist_id=PL99"),
            ),
            ("https://www.youtube.com/@handle", None),
            ("https://www.youtube.com/", None),
            (
                "https://old.reddit.com/r/rust/",
                Some("https://www.reddit.com/r/rust/.rss"),
            ),
            (
                "https://www.reddit.com/r/rust/top/?t=week",
                Some("https://www.reddit.com/r/rust/top/.rss"),
            ),
            (
                "https://www.reddit.com/r/rust/comments/abc/title/",
                Some("https://www.reddit.com/r/rust/.rss"),
            ),
            (
                "https://reddit.com/u/someone",
                Some("https://www.reddit.com/user/someone/.rss"),
            ),
            (
                "https://github.com/rust-lang/rust",
                Some("https://github.com/rust-lang/rust/releases.atom"),
            ),
            (
                "https://github.com/rust-lang/rust.git",
                Some("https://github.com/rust-lang/rust/releases.atom"),
            ),
            (
                "https://github.com/tokio-rs/tokio/releases/tag/v1",
                Some("https://github.com/tokio-rs/tokio/releases.atom"),
            ),
            ("https://github.com/rust-lang", None),
            ("https://github.com/orgs/rust-lang", None),
            (
                "https://mastodon.social/@Gargron",
                Some("https://mastodon.social/@Gargron.rss"),
            ),
            (
                "http://127.0.0.1:8000/@ada?x=1",
                Some("http://127.0.0.1:8000/@ada.rss"),
            ),
            ("https://mastodon.social/@", None),
            ("https://mastodon.social/@ada/12345", None),
            ("https://blog.example/", None),
        ];
        for (page, feed) in cases {
            let got = derived(&Url::parse(page).unwrap());
            assert_eq!(got.as_ref().map(|c| c.url.as_str()), feed, "{page}");
            if let Some(c) = got {
                assert_eq!(c.source, Source::Derived);
                assert!(Url::parse(&c.url).is_ok());
            }
        }
    }

    #[test]
    fn a_canonical_address_derives_too_and_links_come_first() {
        // A YouTube-shaped page served from elsewhere (a mirror, a saved
        // copy): its canonical address is the channel.
        let page = Url::parse("http://127.0.0.1:9/c/something").unwrap();
        let html = r#"<html><head><link rel="canonical" href="https://www.youtube.com/channel/UCxyz"></head></html>"#;
        assert_eq!(
            urls(&candidates(html, &page)),
            ["https://www.youtube.com/feeds/videos.xml?channel_id=UCxyz"]
        );
        let html = r#"<html><head>
            <link rel="alternate" type="application/rss+xml" title="RSS" href="https://www.youtube.com/feeds/videos.xml?channel_id=UCxyz">
            <meta property="og:url" content="https://www.youtube.com/channel/UCxyz">
            </head></html>"#;
        let found = candidates(html, &page);
        assert_eq!(
            urls(&found),
            ["https://www.youtube.com/feeds/videos.xml?channel_id=UCxyz"]
        );
        assert_eq!(found[0].source, Source::Link);
    }

    #[test]
    fn hostile_pages_give_nothing_without_panicking() {
        let page = Url::parse("https://x.example/").unwrap();
        let deep = "<div>".repeat(100_000);
        for html in [
            "",
            "<link rel=alternate>",
            "\u{0}\u{FFFF}<<<>>>",
            deep.as_str(),
        ] {
            assert!(candidates(html, &page).is_empty());
        }
    }

    #[test]
    fn common_paths_are_on_the_pages_origin() {
        let page = Url::parse("https://blog.example/a/b?c=d").unwrap();
        let paths = common_paths(&page);
        assert_eq!(paths[0], "https://blog.example/feed");
        assert!(paths.iter().all(|p| p.starts_with("https://blog.example/")));
        assert_eq!(paths.len(), COMMON_PATHS.len());
    }
}
