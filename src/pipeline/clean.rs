//! The clean stage: our boilerplate rules, run around dom_smoothie.
//!
//! dom_smoothie (Readability) finds the element that holds the article, but
//! keeps whatever the theme put inside it: share bars, bylines, "Read also"
//! links wedged between paragraphs, related-story lists, author boxes. This
//! module owns the rules that remove those, in two passes:
//!
//! - [`prepare`] runs on the whole page before detection: it resolves lazy
//!   images and removes elements whose `class`/`id` name a kind of
//!   boilerplate (share, newsletter, comments, cookie banner, ad, byline, …)
//!   unless they hold a large share of the page's prose, and marks captions
//!   so the text rendering can leave them out (dom_smoothie drops classes).
//! - [`finish`] runs on the extracted article: it removes, by structure
//!   rather than by words of any one language, inline related-article blocks
//!   (a short block that is one link to another page of the same site, after
//!   at most a short label), lists of same-site links, and the leading and
//!   trailing runs of title copies, bylines, dates, breadcrumbs and labels.
//!
//! Everything here is a plain function over a parsed DOM: no I/O, no
//! allocation proportional to anything but the page, no panics on input.

use std::borrow::Cow;

use dom_query::{Document, NodeRef};
use url::Url;

use super::sanitize::collapse_whitespace as collapse;

/// Class added to caption-like elements by [`prepare`]; dom_smoothie is told
/// to keep it, [`is_caption`] looks for it, the sanitiser strips it.
pub const CAPTION_CLASS: &str = "tributary-caption";

/// A boilerplate element holding more than this share of the page's
/// prose (text outside links) is kept: it is more likely a wrapper that happens to carry
/// a class like `has-share-buttons` than a share bar.
const MAX_PROSE_SHARE: f32 = 0.4;

/// Longest inline related-article block, in characters of text.
const MAX_RELATED_CHARS: usize = 220;

/// Longest label before a related-article link ("Baca Juga :", "Read also:").
const MAX_LABEL_CHARS: usize = 40;

/// How many blocks at each end of the article are examined for junk.
const EDGE_BLOCKS: usize = 12;

/// What kind of boilerplate a `class`/`id` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Remove the element (unless it holds much of the page's prose).
    Junk,
    /// Small metadata (byline, date, tags): removed only when short.
    Meta,
    /// Image caption or credit: kept in HTML, left out of the text.
    Caption,
}

/// Name parts (after splitting `class`/`id` on non-alphanumerics) that
/// name boilerplate outright.
const JUNK_WORDS: &[&str] = &[
    "share",
    "sharing",
    "shares",
    "social",
    "newsletter",
    "subscribe",
    "subscription",
    "signup",
    "optin",
    "related",
    "recommended",
    "recommendations",
    "popular",
    "trending",
    "mostread",
    "comment",
    "comments",
    "respond",
    "disqus",
    "cookie",
    "cookies",
    "consent",
    "gdpr",
    "ad",
    "ads",
    "advert",
    "adverts",
    "advertisement",
    "adsbygoogle",
    "sponsor",
    "sponsored",
    "promo",
    "breadcrumb",
    "breadcrumbs",
    "outbrain",
    "taboola",
    "nav",
    "navbar",
    "navigation",
    "menu",
    "sidebar",
    "widget",
    "print",
    "toolbar",
    "authorbox",
    "authorbio",
    "newsletters",
    "paywall",
    "reprints",
];

/// Prefixes of name parts that name boilerplate (`sharedaddy`, `relatedposts`).
const JUNK_PREFIXES: &[&str] = &[
    "share",
    "social",
    "newsletter",
    "subscri",
    "related",
    "comment",
    "cookie",
    "advert",
    "sponsor",
    "breadcrumb",
    "recommend",
];

/// Name parts of small metadata elements.
const META_WORDS: &[&str] = &[
    "byline",
    "dateline",
    "timestamp",
    "date",
    "time",
    "published",
    "updated",
    "meta",
    "tags",
    "tag",
    "author",
    "authors",
    "kicker",
    "category",
    "categories",
];

/// Name parts of captions and credits.
const CAPTION_WORDS: &[&str] = &[
    "caption",
    "captions",
    "credit",
    "credits",
    "copyright",
    "wp-caption-text",
];

/// Pairs of parts that together name an author box ("author-bio",
/// "about-author"); the first part alone is only [`Kind::Meta`].
const AUTHOR_BOX_PARTS: &[&str] = &["bio", "box", "info", "about", "profile", "card", "details"];

/// Longest text, in characters, of a [`Kind::Meta`] element that is removed.
const MAX_META_CHARS: usize = 160;

/// Classifies an element by its `class` and `id`.
fn classify(node: &NodeRef<'_>) -> Option<Kind> {
    let class = node.attr("class");
    let id = node.attr("id");
    if class.is_none() && id.is_none() {
        return None;
    }
    let mut names = String::new();
    for value in [class, id].into_iter().flatten() {
        names.push(' ');
        names.push_str(&value.to_ascii_lowercase());
    }
    if names.contains(CAPTION_CLASS) {
        return Some(Kind::Caption);
    }
    let parts: Vec<&str> = names
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    let mut kind = None;
    for (i, part) in parts.iter().enumerate() {
        if JUNK_WORDS.contains(part) || JUNK_PREFIXES.iter().any(|p| part.starts_with(p)) {
            return Some(Kind::Junk);
        }
        if part.starts_with("author")
            && parts
                .get(i + 1)
                .is_some_and(|next| AUTHOR_BOX_PARTS.contains(next))
        {
            return Some(Kind::Junk);
        }
        if CAPTION_WORDS.contains(part) || part.ends_with("caption") {
            kind = Some(Kind::Caption);
        } else if kind.is_none() && META_WORDS.contains(part) {
            kind = Some(Kind::Meta);
        }
    }
    kind
}

/// Elements never removed by class: the document skeleton and the elements
/// that usually *are* the article.
fn is_protected(name: &str) -> bool {
    matches!(name, "html" | "body" | "main" | "article")
}

/// Pre-extraction pass over the whole page.
pub fn prepare(doc: &Document, base: Option<&Url>) {
    let _ = base;
    let Some(body) = doc.body() else {
        return;
    };
    let total_prose = prose_chars(&body).max(1);
    let mut doomed = Vec::new();
    let mut stack = vec![body];
    while let Some(node) = stack.pop() {
        let name = node.node_name().unwrap_or_default();
        match name.as_ref() {
            "img" => {
                resolve_lazy_image(&node);
                continue;
            }
            // AMP pages: the image is a custom element the sanitiser would
            // drop; its attributes are an img's.
            "amp-img" => {
                node.rename("img");
                node.remove_children();
                resolve_lazy_image(&node);
                continue;
            }
            "noscript" => {
                resolve_noscript_image(&node);
                continue;
            }
            _ => {}
        }
        let small =
            |node: &NodeRef<'_>| (prose_chars(node) as f32) < MAX_PROSE_SHARE * total_prose as f32;
        let doom = match name.as_ref() {
            // A form wrapping the whole page (ASP.NET does that) is kept.
            "form" => small(&node),
            "button" | "select" | "textarea" | "input" | "nav" | "dialog" => true,
            n if is_protected(n) => false,
            _ => match classify(&node) {
                Some(Kind::Junk) => small(&node),
                Some(Kind::Meta) => {
                    text_chars(&node) <= MAX_META_CHARS && !has_block_of(&node, &["p"])
                }
                Some(Kind::Caption) => {
                    if name.as_ref() != "figure" {
                        node.add_class(CAPTION_CLASS);
                    }
                    continue;
                }
                None => false,
            },
        };
        if doom {
            doomed.push(node);
            continue;
        }
        stack.extend(node.element_children());
    }
    for node in doomed {
        node.remove_from_parent();
    }
}

/// Characters of text under `node` outside links: the prose. Menus,
/// related lists and tag clouds are mostly links; an article is not.
fn prose_chars(node: &NodeRef<'_>) -> usize {
    let mut total = 0;
    let mut stack = vec![*node];
    while let Some(n) = stack.pop() {
        for child in n.children_it(false) {
            if child.is_text() {
                total += child.text().chars().filter(|c| !c.is_whitespace()).count();
            } else if child.is_element()
                && !child.has_name("a")
                && !child.has_name("script")
                && !child.has_name("style")
            {
                stack.push(child);
            }
        }
    }
    total
}

/// Characters of non-whitespace text under `node`.
fn text_chars(node: &NodeRef<'_>) -> usize {
    node.text().chars().filter(|c| !c.is_whitespace()).count()
}

fn has_block_of(node: &NodeRef<'_>, names: &[&str]) -> bool {
    node.descendants_it()
        .any(|d| d.is_element() && names.iter().any(|n| d.has_name(n)))
}

/// Attributes lazy-loading scripts keep the real image address in.
const LAZY_SRC: &[&str] = &[
    "data-src",
    "data-lazy-src",
    "data-original",
    "data-lazy",
    "data-url",
    "data-hi-res-src",
];
const LAZY_SRCSET: &[&str] = &["data-srcset", "data-lazy-srcset"];

/// Whether an image `src` is a stand-in for the real image.
fn is_placeholder(src: &str) -> bool {
    let src = src.trim();
    if src.is_empty() || src.starts_with("data:") || src == "#" || src == "about:blank" {
        return true;
    }
    let lower = src.to_ascii_lowercase();
    [
        "placeholder",
        "blank.gif",
        "spacer.gif",
        "pixel.gif",
        "lazy",
        "loading.gif",
        "grey.gif",
        "transparent.",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// `data-src` & co. → `src`, `data-srcset` → `srcset`.
fn resolve_lazy_image(img: &NodeRef<'_>) {
    let src = img.attr("src");
    if src.as_deref().is_none_or(is_placeholder) {
        if let Some(real) = LAZY_SRC
            .iter()
            .find_map(|a| img.attr(a).filter(|v| !is_placeholder(v)))
        {
            img.set_attr("src", real.trim());
        } else if let Some(first) = LAZY_SRCSET
            .iter()
            .chain(&["srcset"])
            .find_map(|a| img.attr(a))
            .and_then(|set| first_srcset_url(&set).map(str::to_owned))
        {
            img.set_attr("src", &first);
        }
    }
    if img.attr("srcset").is_none()
        && let Some(set) = LAZY_SRCSET.iter().find_map(|a| img.attr(a))
    {
        img.set_attr("srcset", &set);
    }
}

fn first_srcset_url(set: &str) -> Option<&str> {
    set.split(',')
        .next()?
        .split_whitespace()
        .next()
        .filter(|u| !is_placeholder(u))
}

/// A `<noscript><img></noscript>` copy after a lazy image replaces the
/// placeholder's address. (The parser sees noscript content as text.)
fn resolve_noscript_image(noscript: &NodeRef<'_>) {
    let Some(prev) = noscript.prev_element_sibling() else {
        return;
    };
    let lazy = if prev.has_name("img") {
        prev
    } else {
        match prev
            .descendants_it()
            .find(|d| d.is_element() && d.has_name("img"))
        {
            Some(img) => img,
            None => return,
        }
    };
    if !lazy.attr("src").as_deref().is_none_or(is_placeholder) {
        return;
    }
    // html5ever parses noscript content as text when scripting is on and
    // as elements when it is off; handle both.
    let copy_from = |copy: &NodeRef<'_>| {
        if let Some(src) = copy.attr("src").filter(|s| !is_placeholder(s)) {
            lazy.set_attr("src", &src);
            if let Some(set) = copy.attr("srcset") {
                lazy.set_attr("srcset", &set);
            }
        }
    };
    // Bound first: the iterator borrows the tree, which `copy_from` writes.
    let parsed_img = noscript
        .descendants_it()
        .find(|d| d.is_element() && d.has_name("img"));
    if let Some(img) = parsed_img {
        copy_from(&img);
        return;
    }
    let inner = noscript.text();
    if !inner.contains("<img") {
        return;
    }
    let fragment = Document::fragment(inner);
    if let Some(img) = fragment.select_single("img").nodes().first() {
        copy_from(img);
    }
}

/// What post-extraction cleaning knows about the entry and the page.
#[derive(Debug, Clone, Copy, Default)]
pub struct FinishContext<'a> {
    /// The page address: "this site" for related links, and "this page".
    pub base: Option<&'a Url>,
    /// Titles a copy of which at the top of the body is dropped.
    pub titles: &'a [Option<&'a str>],
    /// Author names a byline of which is dropped.
    pub authors: &'a [String],
    /// The byline the detector found in the page's metadata.
    pub byline: Option<&'a str>,
}

/// Post-extraction pass over the article subtree.
pub fn finish(root: &NodeRef<'_>, ctx: &FinishContext<'_>) {
    remove_link_lists(root, ctx.base);
    let blocks = leaf_blocks(root);
    for block in &blocks {
        if is_related_block(block, ctx.base) {
            block.remove_from_parent();
        }
    }
    let blocks: Vec<_> = leaf_blocks(root);
    trim_edges(&blocks, ctx);
    remove_empty(root);
}

/// Elements whose end is the end of a paragraph of text.
pub(crate) fn is_block_name(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "section"
            | "article"
            | "main"
            | "header"
            | "footer"
            | "aside"
            | "nav"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "ul"
            | "ol"
            | "li"
            | "dl"
            | "dt"
            | "dd"
            | "blockquote"
            | "pre"
            | "figure"
            | "figcaption"
            | "table"
            | "thead"
            | "tbody"
            | "tfoot"
            | "tr"
            | "td"
            | "th"
            | "caption"
            | "hr"
            | "address"
            | "details"
            | "summary"
            | "form"
            | "fieldset"
    )
}

/// Whether `node` is a caption (figcaption or marked by [`prepare`]).
pub(crate) fn is_caption(node: &NodeRef<'_>) -> bool {
    node.has_name("figcaption") || node.has_class(CAPTION_CLASS)
}

/// Blocks with no block inside, in document order: the paragraphs,
/// headings, list items and lines a reader sees. Captions and tables are
/// atomic. Blocks without text are skipped.
fn leaf_blocks<'a>(root: &NodeRef<'a>) -> Vec<NodeRef<'a>> {
    let mut out = Vec::new();
    collect_blocks(root, &mut out);
    out
}

fn collect_blocks<'a>(node: &NodeRef<'a>, out: &mut Vec<NodeRef<'a>>) {
    let mut has_block_child = false;
    for child in node.element_children() {
        let name = child.node_name().unwrap_or_default();
        if is_block_name(&name) {
            has_block_child = true;
            break;
        }
    }
    let name = node.node_name().unwrap_or_default();
    let atomic = matches!(name.as_ref(), "table" | "pre" | "figcaption") || is_caption(node);
    if (!has_block_child || atomic) && node.is_element() && !node.text().trim().is_empty() {
        out.push(*node);
        return;
    }
    for child in node.element_children() {
        collect_blocks(&child, out);
    }
}

/// Collapsed text of a node.
fn norm_text(node: &NodeRef<'_>) -> String {
    collapse(&node.text())
}

/// Text for comparisons: letters and digits only, lowercased.
fn fold(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn word_count(text: &str) -> usize {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .count()
}

/// Host without a leading `www.`/`m.`.
fn site_of(host: &str) -> &str {
    host.strip_prefix("www.")
        .or_else(|| host.strip_prefix("m."))
        .unwrap_or(host)
}

/// Whether `href` points to another page of the site `base` is on.
fn is_same_site_page(href: &str, base: Option<&Url>) -> bool {
    let href = href.trim();
    if href.is_empty() || href.starts_with('#') {
        return false;
    }
    let Some(base) = base else {
        // Without a page address, only relative links are known to be local.
        return !href.contains("://") && !href.starts_with("mailto:") && !href.starts_with("//");
    };
    let Ok(url) = base.join(href) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let (Some(a), Some(b)) = (url.host_str(), base.host_str()) else {
        return false;
    };
    let (a, b) = (site_of(a), site_of(b));
    let same_host =
        a.eq_ignore_ascii_case(b) || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"));
    same_host && url.path().len() > 1 && url.path() != base.path()
}

/// Text inside `<a>` elements under `node`, and the distinct hrefs.
fn link_stats(node: &NodeRef<'_>) -> (usize, Vec<String>) {
    let mut chars = 0;
    let mut hrefs: Vec<String> = Vec::new();
    for d in node.descendants_it() {
        if d.is_element() && d.has_name("a") {
            chars += text_chars(&d);
            let href = d
                .attr("href")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            if !hrefs.contains(&href) {
                hrefs.push(href);
            }
        }
    }
    (chars, hrefs)
}

/// An inline related-article block: short, essentially one link to another
/// page of the same site, optionally after a short label (`Baca Juga :`,
/// `Read also:`, `Читайте также:` — or any other language's).
fn is_related_block(block: &NodeRef<'_>, base: Option<&Url>) -> bool {
    let name = block.node_name().unwrap_or_default();
    if !matches!(
        name.as_ref(),
        "p" | "div"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "strong"
            | "b"
            | "span"
            | "section"
            | "aside"
    ) {
        return false;
    }
    let text = norm_text(block);
    let total = text.chars().filter(|c| !c.is_whitespace()).count();
    if total == 0 || text.chars().count() > MAX_RELATED_CHARS {
        return false;
    }
    let (link_chars, hrefs) = link_stats(block);
    let [href] = hrefs.as_slice() else {
        return false;
    };
    if !is_same_site_page(href, base) || link_chars * 2 < total {
        return false;
    }
    // The text outside the link: a label before it, punctuation after.
    // The link with the most text: an image link before the headline link
    // has none.
    let Some(link_text) = block
        .descendants_it()
        .filter(|d| d.is_element() && d.has_name("a"))
        .map(|a| norm_text(&a))
        .max_by_key(String::len)
    else {
        return false;
    };
    let Some(pos) = text.find(link_text.as_str()) else {
        return false;
    };
    let before = text.get(..pos).unwrap_or_default().trim();
    let after = text.get(pos + link_text.len()..).unwrap_or_default().trim();
    let label_ok = before.chars().count() <= MAX_LABEL_CHARS && word_count(before) <= 5;
    let after_ok = word_count(after) == 0 || (after.chars().count() <= 3);
    label_ok && after_ok && word_count(&link_text) >= 2
}

/// Lists whose items are each essentially one link to another page of this
/// site ("More stories", "Trending", tag lists), and a short label block
/// just before such a list.
fn remove_link_lists(root: &NodeRef<'_>, base: Option<&Url>) {
    let lists: Vec<_> = root
        .descendants_it()
        .filter(|d| d.is_element() && (d.has_name("ul") || d.has_name("ol")))
        .collect();
    for list in lists {
        let items: Vec<_> = list.element_children();
        if items.len() < 2 {
            continue;
        }
        let all_links = items.iter().all(|li| {
            let total = text_chars(li);
            let (link_chars, hrefs) = link_stats(li);
            total > 0
                && link_chars * 10 >= total * 7
                && !hrefs.is_empty()
                && hrefs.iter().all(|h| is_same_site_page(h, base))
        });
        if !all_links {
            continue;
        }
        if let Some(label) = list.prev_element_sibling() {
            let text = norm_text(&label);
            if is_label(&text) {
                label.remove_from_parent();
            }
        }
        list.remove_from_parent();
    }
}

/// A short line with no sentence in it: "Trending", "More from UK",
/// "You may also like...".
fn is_label(text: &str) -> bool {
    let words = word_count(text);
    words > 0
        && words <= 6
        && text.chars().count() <= 60
        && !text.trim_end_matches(['.', '…']).ends_with(['!', '?', ';'])
        && !ends_sentence(text)
}

fn ends_sentence(text: &str) -> bool {
    let t = text.trim_end_matches(|c: char| {
        c == '"' || c == '”' || c == '»' || c == ')' || c.is_whitespace()
    });
    t.ends_with(['.', '!', '?', '。']) && !t.ends_with("...")
}

/// A line that is mostly a date or time: a year or a clock time, few words.
fn is_dateline(text: &str) -> bool {
    let words = word_count(text);
    if words == 0 || words > 16 || text.chars().count() > 120 {
        return false;
    }
    let has_year = text
        .split(|c: char| !c.is_ascii_digit())
        .any(|n| n.len() == 4 && (n.starts_with("19") || n.starts_with("20")));
    let has_clock = text
        .as_bytes()
        .windows(3)
        .any(|w| matches!(w, [a, b':', c] if a.is_ascii_digit() && c.is_ascii_digit()));
    let has_numeric_date = text.split(|c: char| c.is_whitespace()).any(|tok| {
        let parts: Vec<&str> = tok.split(['/', '.', '-']).collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    });
    (has_year || has_clock || has_numeric_date) && !ends_sentence(text)
        || (has_clock && has_year && words <= 12)
}

/// Whether `text` repeats one of the titles.
fn is_title_copy(text: &str, titles: &[Option<&str>]) -> bool {
    let folded = fold(text);
    if folded.len() < 4 {
        return false;
    }
    titles.iter().flatten().any(|t| {
        let t = fold(t);
        !t.is_empty() && (t == folded || (folded.len() * 2 > t.len() && t.contains(&folded)))
    })
}

/// Whether `text` is a byline: it names an author and is short.
fn is_byline(text: &str, ctx: &FinishContext<'_>) -> bool {
    if word_count(text) > 14 || text.chars().count() > 120 {
        return false;
    }
    let folded = fold(text);
    let names = ctx
        .authors
        .iter()
        .map(|a| Cow::Borrowed(a.as_str()))
        .chain(ctx.byline.map(Cow::Borrowed));
    for name in names {
        let name = fold(&name);
        if name.len() >= 3 && folded.contains(&name) {
            return true;
        }
    }
    false
}

/// Removes the leading and trailing runs of blocks that are not article
/// text: title copies, bylines, dates, breadcrumbs, lone links and labels.
fn trim_edges(blocks: &[NodeRef<'_>], ctx: &FinishContext<'_>) {
    let is_edge_junk = |block: &NodeRef<'_>, leading: bool| -> bool {
        if is_caption(block) {
            return false;
        }
        let text = norm_text(block);
        if text.is_empty() {
            return true;
        }
        let heading = block
            .node_name()
            .is_some_and(|n| matches!(n.as_ref(), "h1" | "h2" | "h3" | "h4" | "h5" | "h6"));
        let total = text.chars().filter(|c| !c.is_whitespace()).count();
        let (link_chars, _) = link_stats(block);
        let all_link = link_chars * 10 >= total * 9 && word_count(&text) <= 20;
        if leading && is_title_copy(&text, ctx.titles) {
            return true;
        }
        if is_byline(&text, ctx) || is_dateline(&text) || all_link {
            return true;
        }
        if text.contains('©') && word_count(&text) <= 30 {
            return true;
        }
        if leading {
            !heading && word_count(&text) <= 3 && !ends_sentence(&text)
        } else {
            is_label(&text)
        }
    };
    let mut removed = 0;
    for block in blocks.iter().take(EDGE_BLOCKS) {
        if !is_edge_junk(block, true) {
            break;
        }
        block.remove_from_parent();
        removed += 1;
    }
    for block in blocks.iter().skip(removed).rev().take(EDGE_BLOCKS) {
        if !is_edge_junk(block, false) {
            break;
        }
        block.remove_from_parent();
    }
}

/// Removes elements left with neither text nor media.
fn remove_empty(root: &NodeRef<'_>) {
    let candidates: Vec<_> = root
        .descendants_it()
        .filter(|d| {
            d.is_element()
                && d.node_name().is_some_and(|n| {
                    matches!(
                        n.as_ref(),
                        "div"
                            | "section"
                            | "p"
                            | "span"
                            | "ul"
                            | "ol"
                            | "li"
                            | "header"
                            | "footer"
                            | "aside"
                    )
                })
        })
        .collect();
    for node in candidates.into_iter().rev() {
        let has_media = node.descendants_it().any(|d| {
            d.is_element()
                && d.node_name().is_some_and(|n| {
                    matches!(
                        n.as_ref(),
                        "img" | "picture" | "video" | "audio" | "iframe" | "svg" | "hr"
                    )
                })
        });
        if !has_media && node.text().trim().is_empty() {
            node.remove_from_parent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://news.example/section/this-story").unwrap()
    }

    /// Runs [`finish`] on `html` (the extracted article) and compares the
    /// remaining text, whitespace-normalised.
    #[track_caller]
    fn check(html: &str, expected: &str) {
        check_with(html, expected, &[], &[]);
    }

    #[track_caller]
    fn check_with(html: &str, expected: &str, titles: &[Option<&str>], authors: &[String]) {
        let doc = Document::fragment(html);
        let base = base();
        finish(
            &doc.root(),
            &FinishContext {
                base: Some(&base),
                titles,
                authors,
                byline: None,
            },
        );
        let text = collapse(&crate::pipeline::extract::text_of(&doc.root()));
        assert_eq!(text, collapse(expected), "{html}");
    }

    const P1: &str = "<p>First paragraph of the story, long enough to be prose.</p>";
    const P2: &str = "<p>Second paragraph of the story, which ends the article.</p>";
    const TEXT: &str = "First paragraph of the story, long enough to be prose. \
                        Second paragraph of the story, which ends the article.";

    #[test]
    fn inline_related_blocks() {
        for block in [
            r#"<p>Baca Juga : <a href="/section/other-story">Judul Berita Lain Di Sini</a></p>"#,
            r#"<p><strong>Read also: <a href="https://news.example/x/y">Another headline here</a></strong></p>"#,
            r#"<p>Читайте также: <a href="/x/z">Другая новость сайта</a></p>"#,
            r#"<p><b><a href="https://www.news.example/x/w">A bold linked headline</a></b></p>"#,
            r#"<div>Lihat juga - <a href="/a/b">Berita terkait hari ini</a>.</div>"#,
            // The same link twice (image and headline) is still one link.
            r#"<p><a href="/a/c"><img src="/i.jpg"></a> <a href="/a/c">Headline with image</a></p>"#,
        ] {
            check(&format!("{P1}{block}{P2}"), TEXT);
        }
    }

    #[test]
    fn prose_with_links_stays() {
        for block in [
            // Another site.
            r#"<p>Source: <a href="https://agency.example/report">The agency's report</a></p>"#,
            // A link inside a sentence.
            r#"<p>As <a href="/a/earlier">reported earlier</a>, the vote was close and contested.</p>"#,
            // Two different links.
            r#"<p><a href="/a/1">One story here</a> and <a href="/a/2">another one</a></p>"#,
            // A link to this very page or an anchor in it.
            r##"<p><a href="#notes">Jump to the notes below</a></p>"##,
        ] {
            let html = format!("{P1}{block}{P2}");
            let doc = Document::fragment(html.as_str());
            let want = collapse(&crate::pipeline::extract::text_of(&doc.root()));
            check(&html, &want);
        }
    }

    #[test]
    fn same_site_link_lists_and_their_label() {
        check(
            &format!(
                r#"{P1}{P2}<h3>Most read</h3><ul><li><a href="/a/1">One story</a></li><li><a href="/a/2">Two story</a></li></ul>"#
            ),
            TEXT,
        );
        // A list of sources on other sites is content.
        check(
            &format!(
                r#"{P1}<ul><li><a href="https://a.example/1">Study one</a></li><li><a href="https://b.example/2">Study two</a></li></ul>{P2}"#
            ),
            &format!("{} Study one Study two {}", &TEXT[..54], &TEXT[55..]),
        );
    }

    #[test]
    fn edges_title_byline_date_labels() {
        let authors = vec!["Jane Roe".to_owned()];
        check_with(
            &format!(
                "<h1>The Big Story</h1><p>By Jane Roe</p><p>March 3, 2024 10:15</p>\
                 <p><a href=\"/\">Home</a> › <a href=\"/news\">News</a></p>{P1}{P2}\
                 <p>Jane Roe</p><p>Trending</p>"
            ),
            TEXT,
            &[Some("The Big Story")],
            &authors,
        );
        // A heading inside the article is kept.
        check(
            &format!("{P1}<h2>A subheading</h2>{P2}"),
            &format!("{} A subheading {}", &TEXT[..54], &TEXT[55..]),
        );
    }

    #[test]
    fn classify_names() {
        let doc = Document::fragment(
            r#"<div class="entry-content has-share-buttons"></div><div class="sharedaddy"></div>
               <div id="jp-relatedposts"></div><div class="post-byline"></div><span class="wp-caption-text"></span>
               <div class="comment-respond"></div><div class="author-bio"></div><div class="headline"></div>
               <div class="shadow"></div><div class="loading"></div>"#,
        );
        let kinds: Vec<_> = doc
            .select("div, span")
            .nodes()
            .iter()
            .map(classify)
            .collect();
        assert_eq!(
            kinds,
            [
                Some(Kind::Junk),
                Some(Kind::Junk),
                Some(Kind::Junk),
                Some(Kind::Meta),
                Some(Kind::Caption),
                Some(Kind::Junk),
                Some(Kind::Junk),
                None,
                None,
                None,
            ]
        );
    }

    #[test]
    fn prepare_keeps_a_wrapper_that_holds_the_article() {
        let doc = Document::from(format!(
            r#"<html><body><div class="widget post-body">{P1}{P2}</div><div class="widget"><a href="/x">menu</a></div></body></html>"#
        ));
        prepare(&doc, None);
        assert!(doc.select(".post-body").exists());
        assert_eq!(doc.select(".widget").length(), 1);
    }

    #[test]
    fn lazy_images() {
        let doc = Document::from(
            r#"<html><body>
            <img id="a" src="data:image/gif;base64,R0lGOD" data-src="/real.jpg" data-srcset="/r-1.jpg 1x, /r-2.jpg 2x">
            <img id="b" data-lazy-src="/b.jpg">
            <img id="c" src="/placeholder.png" srcset="/c-400.jpg 400w">
            <img id="d" src="/keep.jpg" data-src="/other.jpg">
            <img id="e" src="/spacer.gif"><noscript><img src="/e.jpg" srcset="/e2.jpg 2x"></noscript>
            <amp-img id="f" src="/f.jpg" width="1" height="1"></amp-img>
            </body></html>"#,
        );
        prepare(&doc, None);
        let src = |id: &str| {
            doc.select(&format!("#{id}"))
                .attr("src")
                .map(|s| s.to_string())
        };
        assert_eq!(src("a").as_deref(), Some("/real.jpg"));
        assert_eq!(
            doc.select("#a").attr("srcset").as_deref(),
            Some("/r-1.jpg 1x, /r-2.jpg 2x")
        );
        assert_eq!(src("b").as_deref(), Some("/b.jpg"));
        assert_eq!(src("c").as_deref(), Some("/c-400.jpg"));
        assert_eq!(src("d").as_deref(), Some("/keep.jpg"));
        assert_eq!(src("e").as_deref(), Some("/e.jpg"));
        assert!(doc.select("img#f").exists());
    }
}
