//! The clean stage: our boilerplate rules, run around dom_smoothie.
//!
//! dom_smoothie (Readability) finds the element that holds the article, but
//! keeps whatever the theme put inside it: share bars, bylines, "Read also"
//! links wedged between paragraphs, related-story lists, author boxes. This
//! module owns the rules that remove those, in two passes:
//!
//! - [`prepare`] runs on the whole page before detection: it resolves lazy
//!   images and removes elements whose `class`/`id` name a kind of
//!   boilerplate (share, newsletter, comments, cookie banner, ad, byline, …),
//!   and marks captions so the text rendering can leave them out
//!   (dom_smoothie drops classes). Class words are evidence, not a verdict:
//!   an element that is, contains or carries the declared article body
//!   (`itemprop="articleBody"`, an `article` with most of the prose, text of
//!   the JSON-LD `articleBody`) is never removed, nor one that holds a large
//!   share of the prose, alone or together with the other elements named by
//!   the same class token (a page builder's `…-widget-container`s, an
//!   article's `section-and-ad` sections). It also measures the page
//!   ([`PageProse`]) so the extractor can tell when a result lost the
//!   article.
//! - [`finish`] runs on the extracted article: it removes, by structure
//!   rather than by words of any one language, inline related-article blocks
//!   (a short block that is one link to another page of the same site, after
//!   at most a short label), lists of same-site links, and the leading and
//!   trailing runs of title copies, bylines, dates, breadcrumbs and labels.
//!
//! [`finish`] never removes more than half of what it was given: rules are
//! applied in order of confidence while their total stays under that
//! budget, so cleaning may shrink an article but never empty it.
//!
//! Everything here is a plain function over a parsed DOM: no I/O, no
//! allocation proportional to anything but the page, no panics on input.

use dom_query::{Document, NodeData, NodeId, NodeRef};
use std::borrow::Cow;
// Keyed by node ids, built per page: a fast hasher (no untrusted keys).
use foldhash::{HashMap, HashSet};
use url::Url;

use super::sanitize::collapse_whitespace as collapse;

/// Class added to caption-like elements by [`prepare`]; dom_smoothie is told
/// to keep it, [`is_caption`] looks for it, the sanitiser strips it.
pub const CAPTION_CLASS: &str = "tributary-caption";

/// A boilerplate element holding more than this share of the page's
/// prose (text outside links) is kept: it is more likely a wrapper that happens to carry
/// a class like `has-share-buttons` than a share bar.
const MAX_PROSE_SHARE: f32 = 0.4;

/// The same, for [`Strength::Weak`] words, which name a slot or a layout
/// (`widget`, `ad`, `print`, `subscriber…`) rather than what is in it: an
/// ad slot or a print button holds no prose, so one that holds this share
/// of the page's prose is content placed in such a slot.
const MAX_WEAK_PROSE_SHARE: f32 = 0.15;

/// Inside the declared article body, a named element is kept when it holds
/// this share of the body's prose (strong words) …
const MAX_IN_BODY_SHARE: f32 = 0.4;
/// … or this share (weak words): a paywall's `subscriber-preview` wrapper
/// around the paragraphs is the article, a share bar beside them is not.
const MAX_WEAK_IN_BODY_SHARE: f32 = 0.1;

/// A declared article body (`itemprop="articleBody"`) counts when it holds
/// at least this share of the page's prose (microdata on a teaser card in a
/// sidebar does not).
const MIN_DECLARED_SHARE: f32 = 0.05;

/// A member of a group of alike-named elements that holds most of the
/// prose is kept with it when it holds at least this much prose itself (a
/// heading does; an empty ad slot or a menu of links does not).
const MIN_GROUP_MEMBER_CHARS: usize = 10;

/// Paragraphs shorter than this (characters of prose) do not count towards
/// the paragraph-density estimate of the main text.
const MIN_PARAGRAPH_CHARS: usize = 25;

/// Longest inline related-article block, in characters of text.
const MAX_RELATED_CHARS: usize = 220;

/// Longest label before a related-article link ("Baca Juga :", "Read also:").
const MAX_LABEL_CHARS: usize = 40;

/// How many blocks at each end of the article are examined for junk.
const EDGE_BLOCKS: usize = 12;

/// How sure a junk word is about what the element holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// Names the content itself: comments, share bar, cookie banner, related.
    Strong,
    /// Names a slot or a layout that also holds articles: widget, ad, print,
    /// paywall, subscriber…, promo, sponsor, social.
    Weak,
}

/// What kind of boilerplate a `class`/`id` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Remove the element (unless it holds or carries the article).
    Junk(Strength),
    /// Small metadata (byline, date, tags): removed only when short.
    Meta,
    /// Image caption or credit: kept in HTML, left out of the text.
    Caption,
}

/// Name parts (after splitting `class`/`id` on non-alphanumerics) that
/// name boilerplate outright. A part is a whole word between separators:
/// `ad` matches `section-and-ad` and `ad-slot`, never `adverb` or `head`;
/// [`WEAK_WORDS`] and [`JUNK_PREFIXES`] say which of these are weak
/// evidence.
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

/// Words of [`JUNK_WORDS`] that name a slot rather than its content.
const WEAK_WORDS: &[&str] = &[
    "social",
    "ad",
    "ads",
    "advert",
    "adverts",
    "promo",
    "sponsor",
    "sponsored",
    "widget",
    "print",
    "paywall",
];

/// Prefixes of name parts that name boilerplate (`sharedaddy`,
/// `relatedposts`), and whether the evidence is weak: `subscri…` names a
/// sign-up box (`subscribe-form`) as often as the paywalled article
/// (`subscriber-premium`, `subscriber-preview`).
const JUNK_PREFIXES: &[(&str, Strength)] = &[
    ("share", Strength::Strong),
    ("social", Strength::Weak),
    ("newsletter", Strength::Strong),
    ("subscri", Strength::Weak),
    ("related", Strength::Strong),
    ("comment", Strength::Strong),
    ("cookie", Strength::Strong),
    ("advert", Strength::Weak),
    ("sponsor", Strength::Weak),
    ("breadcrumb", Strength::Strong),
    ("recommend", Strength::Strong),
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

/// Most parts an `id` may have to be read as a name (see [`classify`]).
const MAX_ID_PARTS: usize = 3;

/// Classifies an element by its `class` and `id`; for junk, also the
/// whitespace-separated name token that said so (elements sharing it are
/// judged together).
fn classify(node: &NodeRef<'_>) -> Option<(Kind, String)> {
    let class = node.attr("class");
    let id = node.attr("id");
    if class.is_none() && id.is_none() {
        return None;
    }
    let class = class.map(|c| c.to_ascii_lowercase()).unwrap_or_default();
    let id = id.map(|c| c.to_ascii_lowercase()).unwrap_or_default();
    if class.contains(CAPTION_CLASS) {
        return Some((Kind::Caption, String::new()));
    }
    let mut kind = None;
    let tokens = class
        .split_ascii_whitespace()
        .map(|t| (t, false))
        .chain(id.split_ascii_whitespace().map(|t| (t, true)));
    for (token, is_id) in tokens {
        let parts: Vec<&str> = token
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .collect();
        // An id of many parts is a slug of a heading or a generated name
        // ("sharing-with-a-single-developer", "gigya-share-btns-2_gig_…"),
        // not a name for what the element is.
        if is_id && parts.len() > MAX_ID_PARTS {
            continue;
        }
        for (i, part) in parts.iter().enumerate() {
            let strength = if JUNK_WORDS.contains(part) {
                Some(if WEAK_WORDS.contains(part) {
                    Strength::Weak
                } else {
                    Strength::Strong
                })
            } else if part.starts_with("author")
                && parts
                    .get(i + 1)
                    .is_some_and(|next| AUTHOR_BOX_PARTS.contains(next))
            {
                Some(Strength::Strong)
            } else {
                JUNK_PREFIXES
                    .iter()
                    .find(|(p, _)| part.starts_with(p))
                    .map(|(_, s)| *s)
            };
            if let Some(strength) = strength {
                return Some((Kind::Junk(strength), token.to_owned()));
            }
            if CAPTION_WORDS.contains(part) || part.ends_with("caption") {
                kind = Some(Kind::Caption);
            } else if kind.is_none() && META_WORDS.contains(part) {
                kind = Some(Kind::Meta);
            }
        }
    }
    kind.map(|k| (k, String::new()))
}

/// Elements never removed by class: the document skeleton and the elements
/// that usually *are* the article.
fn is_protected(name: &str) -> bool {
    matches!(name, "html" | "body" | "main" | "article")
}

/// Which of [`prepare`]'s rules run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Everything: class/id words included.
    All,
    /// Lazy images, captions and form controls only: no class/id words.
    /// The extractor's fallback when the full rules lost the article.
    Structural,
}

/// What [`prepare`] measured on the page: the yardsticks a result is
/// checked against.
#[derive(Debug, Clone, Default)]
pub struct PageProse {
    /// Characters of prose (text outside links) in the whole body, before
    /// anything was removed.
    pub total: usize,
    /// Prose of the page's main run of paragraphs after the rules ran (the
    /// paragraph-density estimate, see [`densest`]).
    pub main: usize,
    /// Prose of the declared article body (`itemprop="articleBody"`), 0
    /// without one.
    pub declared: usize,
    /// The declared article body's HTML after the rules ran, when there is
    /// one: a candidate of its own when the detector took more than it.
    pub declared_html: Option<String>,
    /// The JSON-LD `articleBody` text (the longest, whitespace collapsed),
    /// when the page has one.
    pub schema_body: Option<String>,
}

/// A junk-named element waiting for the verdict.
struct Suspect<'a> {
    node: NodeRef<'a>,
    token: String,
    strength: Strength,
    prose: usize,
    /// The prose of the declared body the element sits inside.
    in_body: Option<usize>,
}

/// Pre-extraction pass over the whole page.
pub fn prepare(doc: &Document, base: Option<&Url>, rules: Rules) -> PageProse {
    let _ = base;
    let schema_body = schema_article_body(doc);
    let Some(body) = doc.body() else {
        return PageProse {
            schema_body,
            ..PageProse::default()
        };
    };
    let prose = prose_map(&body);
    let prose_of = |n: &NodeRef<'_>| prose.get(&n.id).copied().unwrap_or(0);
    let total = prose_of(&body).max(1);
    let bodies = declared_bodies(&body, total, &prose_of);
    let declared_node = bodies
        .iter()
        .filter(|b| b.attr("itemprop").is_some())
        .max_by_key(|b| prose_of(b))
        .copied();
    let declared = declared_node.as_ref().map_or(0, &prose_of);
    // The bodies and every element containing one: never removed.
    let mut guarded: HashSet<NodeId> = HashSet::default();
    for b in &bodies {
        guarded.insert(b.id);
        for a in b.ancestors_it(None) {
            if !guarded.insert(a.id) {
                break;
            }
        }
    }
    let body_ids: HashSet<NodeId> = bodies.iter().map(|b| b.id).collect();
    let schema_probe = schema_body.as_deref().map(fold);

    let mut doomed = Vec::new();
    let mut suspects: Vec<Suspect<'_>> = Vec::new();
    let mut stack = vec![(body, None::<usize>)];
    while let Some((node, mut in_body)) = stack.pop() {
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
        if body_ids.contains(&node.id) {
            in_body = Some(prose_of(&node).max(1));
        }
        let is_guarded = guarded.contains(&node.id);
        let small = |node: &NodeRef<'_>| (prose_of(node) as f32) < MAX_PROSE_SHARE * total as f32;
        let doom = match name.as_ref() {
            _ if is_guarded => false,
            // Hidden from readers: not the article (dom_smoothie drops
            // these too; the density detector must not count them).
            _ if is_hidden(&node) => true,
            // A form wrapping the whole page (ASP.NET does that) is kept.
            "form" => small(&node),
            "button" | "select" | "textarea" | "input" | "nav" | "dialog" => true,
            n if is_protected(n) => false,
            _ => match classify(&node) {
                Some((Kind::Junk(strength), token)) if rules == Rules::All => {
                    suspects.push(Suspect {
                        node,
                        token,
                        strength,
                        prose: prose_of(&node),
                        in_body,
                    });
                    false
                }
                Some((Kind::Meta, _)) => {
                    text_chars(&node) <= MAX_META_CHARS && !has_block_of(&node, &["p"])
                }
                Some((Kind::Caption, _)) => {
                    if name.as_ref() != "figure" {
                        node.add_class(CAPTION_CLASS);
                    }
                    continue;
                }
                _ => false,
            },
        };
        if doom {
            doomed.push(node);
            continue;
        }
        stack.extend(node.element_children().into_iter().map(|c| (c, in_body)));
    }

    // Class words are evidence: weigh each suspect by the prose it would
    // take away, alone and with the others named by the same token.
    let mut groups: HashMap<&str, (usize, usize)> = HashMap::default();
    for s in &suspects {
        let g = groups.entry(s.token.as_str()).or_default();
        g.0 += 1;
        g.1 += s.prose;
    }
    for s in &suspects {
        let (share, in_body_share) = match s.strength {
            Strength::Strong => (MAX_PROSE_SHARE, MAX_IN_BODY_SHARE),
            Strength::Weak => (MAX_WEAK_PROSE_SHARE, MAX_WEAK_IN_BODY_SHARE),
        };
        let limit = share * total as f32;
        let (members, group_prose) = groups.get(s.token.as_str()).copied().unwrap_or((1, 0));
        let keep = s.prose as f32 >= limit
            || (members > 1 && group_prose as f32 >= limit && s.prose >= MIN_GROUP_MEMBER_CHARS)
            || (s.prose >= MIN_GROUP_MEMBER_CHARS
                && alike_siblings_prose(&s.node, &prose_of) as f32 >= limit)
            || s.in_body
                .is_some_and(|b| s.prose as f32 >= in_body_share * b as f32)
            || schema_probe
                .as_deref()
                .is_some_and(|schema| carries_schema_text(&s.node, schema));
        if !keep {
            doomed.push(s.node);
        }
    }
    for node in doomed {
        node.remove_from_parent();
    }
    let main = densest(&body).map_or(0, |(_, chars)| chars);
    PageProse {
        total,
        main,
        declared,
        declared_html: declared_node.map(|n| n.html().to_string()),
        schema_body,
    }
}

/// The prose of `node` and its siblings of the same tag and class, when it
/// has any (sections of one article, each with its own slug for an id);
/// 0 when it has none.
fn alike_siblings_prose(node: &NodeRef<'_>, prose_of: &dyn Fn(&NodeRef<'_>) -> usize) -> usize {
    let Some(parent) = node.parent() else {
        return 0;
    };
    let (name, class) = (node.node_name(), node.attr("class"));
    if class.as_ref().is_none_or(|c| c.trim().is_empty()) {
        return 0;
    }
    let alike: Vec<_> = parent
        .element_children()
        .into_iter()
        .filter(|s| s.node_name() == name && s.attr("class") == class)
        .collect();
    if alike.len() < 2 {
        return 0;
    }
    alike.iter().map(prose_of).sum()
}

/// Whether an element is hidden from readers by its own markup.
fn is_hidden(node: &NodeRef<'_>) -> bool {
    if node.has_attr("hidden") {
        return true;
    }
    node.attr("style").is_some_and(|style| {
        let style: String = style
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
        style.contains("display:none") || style.contains("visibility:hidden")
    })
}

/// The page's declared article bodies: `itemprop="articleBody"` elements
/// holding a fair share of the prose (the largest, and any at least half
/// its size), and an `article` holding most of it.
fn declared_bodies<'a>(
    body: &NodeRef<'a>,
    total: usize,
    prose_of: &dyn Fn(&NodeRef<'_>) -> usize,
) -> Vec<NodeRef<'a>> {
    let mut props = Vec::new();
    let mut out = Vec::new();
    for d in body.descendants_it().filter(NodeRef::is_element) {
        let declared = d.attr("itemprop").is_some_and(|v| {
            v.split_ascii_whitespace()
                .any(|t| t.eq_ignore_ascii_case("articleBody"))
        });
        if declared {
            props.push((d, prose_of(&d)));
        } else if d.has_name("article") && prose_of(&d) * 2 >= total {
            out.push(d);
        }
    }
    let largest = props.iter().map(|(_, p)| *p).max().unwrap_or(0);
    out.extend(
        props
            .into_iter()
            .filter(|(_, p)| {
                *p * 2 >= largest && *p as f32 >= MIN_DECLARED_SHARE * total as f32 && *p > 0
            })
            .map(|(d, _)| d),
    );
    out
}

/// Whether a suspect holds a paragraph of the JSON-LD `articleBody` (folded
/// text, see [`fold`]): it is, contains or is part of the article.
fn carries_schema_text(node: &NodeRef<'_>, schema: &str) -> bool {
    node.descendants_it()
        .filter(|d| d.is_element() && d.has_name("p"))
        .map(|p| fold(&p.text()))
        .find(|t| t.chars().count() >= 60)
        .is_some_and(|t| {
            let probe: String = t.chars().take(60).collect();
            schema.contains(&probe)
        })
}

/// The longest `articleBody` string in the page's JSON-LD, whitespace
/// collapsed; `None` when there is none with text.
fn schema_article_body(doc: &Document) -> Option<String> {
    let mut best: Option<String> = None;
    for script in doc.select(r#"script[type="application/ld+json"]"#).nodes() {
        let text = script.text();
        if !text.contains("articleBody") {
            continue;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
            continue;
        };
        let mut stack = vec![&value];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        if k == "articleBody"
                            && let Some(body) = v.as_str()
                            && best.as_ref().is_none_or(|b| body.len() > b.len())
                        {
                            best = Some(body.to_owned());
                        }
                        stack.push(v);
                    }
                }
                serde_json::Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
    }
    best.map(|b| collapse(&b)).filter(|b| !b.is_empty())
}

/// Prose characters (text outside links, scripts and styles) of every
/// element under `root`, in one pass over the tree.
fn prose_map(root: &NodeRef<'_>) -> HashMap<NodeId, usize> {
    // Pre-order with parent indices; children always come after their
    // parent, so one reverse sweep adds every element into its parent.
    let mut order: Vec<(NodeId, Option<usize>, bool)> = Vec::new();
    let mut own: Vec<usize> = Vec::new();
    let mut stack = vec![(*root, None)];
    while let Some((node, parent)) = stack.pop() {
        let idx = order.len();
        let mut chars = 0;
        for child in node.children_it(false) {
            if child.is_text() {
                chars += own_text_chars(&child);
            } else if child.is_element() && !is_not_text(&child) {
                // Scripts and styles (often most of a page's bytes) are
                // not read at all.
                stack.push((child, Some(idx)));
            }
        }
        let counts = !node.has_name("a");
        order.push((node.id, parent, counts));
        own.push(chars);
    }
    for i in (0..order.len()).rev() {
        if let (Some(p), true) = (order[i].1, order[i].2) {
            own[p] += own[i];
        }
    }
    order
        .into_iter()
        .zip(own)
        .map(|((id, _, _), chars)| (id, chars))
        .collect()
}

/// Elements whose text is not text a reader sees.
fn is_not_text(node: &NodeRef<'_>) -> bool {
    ["script", "style", "noscript", "template", "svg", "math"]
        .iter()
        .any(|n| node.has_name(n))
}

/// The paragraph-density detector: each paragraph's prose counts for its
/// parent in full and for its grandparent by half; the best element wins.
/// An article split into sibling sections (a heading and paragraphs in a
/// wrapper of their own, the wrappers alike) is taken whole: when the
/// winner, or one of its two nearest ancestors, has siblings of the same
/// tag and class that hold paragraphs too, their common parent is the
/// article. Returns the element and the prose of the paragraphs it holds.
pub fn densest<'a>(root: &NodeRef<'a>) -> Option<(NodeRef<'a>, usize)> {
    let mut scores: HashMap<NodeId, (NodeRef<'a>, usize)> = HashMap::default();
    let mut paragraphs: Vec<(NodeRef<'a>, usize)> = Vec::new();
    for p in root
        .descendants_it()
        .filter(|d| d.is_element() && d.has_name("p"))
    {
        let chars = prose_chars(&p);
        if chars < MIN_PARAGRAPH_CHARS {
            continue;
        }
        let parent = p.parent().filter(NodeRef::is_element);
        let grand = parent.and_then(|n| n.parent()).filter(NodeRef::is_element);
        if let Some(n) = parent {
            scores.entry(n.id).or_insert((n, 0)).1 += chars * 2;
        }
        if let Some(n) = grand {
            scores.entry(n.id).or_insert((n, 0)).1 += chars;
        }
        paragraphs.push((p, chars));
    }
    let mut ranked: Vec<(NodeRef<'a>, usize)> = scores.into_values().collect();
    ranked.sort_by_key(|(n, score)| (std::cmp::Reverse(*score), n.id));
    // Candidates are a paragraph's parent or grandparent, widened at most
    // three levels: no ancestor further up is ever asked about.
    let under = |x: &NodeRef<'_>| -> usize {
        paragraphs
            .iter()
            .filter(|(p, _)| p.ancestors_it(Some(6)).any(|a| a.id == x.id))
            .map(|(_, c)| c)
            .sum()
    };
    // The few best-scoring elements, each widened to its sections and
    // scored by what the widening added; the best of those wins.
    let mut best: Option<(NodeRef<'a>, usize)> = None;
    for (candidate, score) in ranked.into_iter().take(DENSEST_CANDIDATES) {
        let (node, factor) = widen_to_sections(candidate, root, &under);
        let value = (score as f32 * factor) as usize;
        if best.as_ref().is_none_or(|(_, v)| value > *v) {
            best = Some((node, value));
        }
    }
    let (node, _) = best?;
    Some((node, under(&node)))
}

/// How many of the best-scoring elements [`densest`] widens and compares.
const DENSEST_CANDIDATES: usize = 5;

/// `node`, or the parent of the alike sections it (or one of its two
/// nearest ancestors) is one of, with how much more paragraph prose that
/// holds.
fn widen_to_sections<'a>(
    node: NodeRef<'a>,
    root: &NodeRef<'a>,
    under: &dyn Fn(&NodeRef<'_>) -> usize,
) -> (NodeRef<'a>, f32) {
    let mut level = node;
    for _ in 0..3 {
        let Some(parent) = level.parent().filter(|p| {
            p.is_element() && !p.has_name("body") && !p.has_name("html") && p.id != root.id
        }) else {
            break;
        };
        let (name, class) = (level.node_name(), level.attr("class"));
        let alike: usize = parent
            .element_children()
            .iter()
            .filter(|s| s.id != level.id && s.node_name() == name && s.attr("class") == class)
            .map(under)
            .sum();
        let own = under(&level).max(1);
        if alike > 0 && alike * 5 >= own {
            return (parent, (own + alike) as f32 / own as f32);
        }
        level = parent;
    }
    (node, 1.0)
}

/// Characters of text under `node` outside links: the prose. Menus,
/// related lists and tag clouds are mostly links; an article is not.
pub(crate) fn prose_chars(node: &NodeRef<'_>) -> usize {
    let mut total = 0;
    let mut stack = vec![*node];
    while let Some(n) = stack.pop() {
        for child in n.children_it(false) {
            if child.is_text() {
                total += own_text_chars(&child);
            } else if child.is_element() && !child.has_name("a") && !is_not_text(&child) {
                stack.push(child);
            }
        }
    }
    total
}

/// Characters of non-whitespace text in a text node, read in place
/// (`NodeRef::text` copies the text into a new buffer).
fn own_text_chars(node: &NodeRef<'_>) -> usize {
    node.query(|n| match &n.data {
        NodeData::Text { contents } => contents.chars().filter(|c| !c.is_whitespace()).count(),
        _ => 0,
    })
    .unwrap_or(0)
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

/// Post-extraction pass over the article subtree. Each rule's removals
/// are measured before they are made; a rule that would take the total
/// past half of the subtree's text is skipped ("fewer rules"), so the
/// article shrinks but is never emptied.
pub fn finish(root: &NodeRef<'_>, ctx: &FinishContext<'_>) {
    let mut budget = Budget::half_of(root);
    budget.apply(&link_lists(root, ctx.base));
    let related: Vec<_> = leaf_blocks(root)
        .into_iter()
        .filter(|b| is_related_block(b, ctx.base))
        .collect();
    budget.apply(&related);
    let blocks: Vec<_> = leaf_blocks(root);
    // An author bio closing the article is removed even past the budget
    // (a short article's bio can be longer than it), but never the
    // article's first third.
    let bio = author_bio(&blocks, ctx);
    let bio_chars: usize = bio.iter().map(text_chars).sum();
    if !bio.is_empty() && bio_chars * 3 <= text_chars(root) * 2 {
        for b in &bio {
            b.remove_from_parent();
        }
    }
    let blocks: Vec<_> = leaf_blocks(root);
    budget.apply(&edge_junk(&blocks, ctx));
    remove_empty(root);
}

/// Most blocks an author bio at the end of an article spans.
const MAX_BIO_BLOCKS: usize = 4;

/// An author bio at the end of the article: a block among the last few
/// that opens with the name of one of the entry's authors (or the page's
/// byline) and is a sentence about them, with what follows it.
fn author_bio<'a>(blocks: &[NodeRef<'a>], ctx: &FinishContext<'_>) -> Vec<NodeRef<'a>> {
    let names: Vec<String> = ctx
        .authors
        .iter()
        .map(|a| fold(a))
        .chain(ctx.byline.map(fold))
        .filter(|n| n.chars().count() >= 5)
        .collect();
    if names.is_empty() || blocks.len() < 2 {
        return Vec::new();
    }
    let from = blocks.len().saturating_sub(MAX_BIO_BLOCKS).max(1);
    for (i, block) in blocks.iter().enumerate().skip(from) {
        let text = norm_text(block);
        if word_count(&text) < 8 || !ends_sentence(&text) {
            continue;
        }
        let folded = fold(&text);
        if names.iter().any(|n| folded.starts_with(n.as_str())) {
            return blocks[i..].to_vec();
        }
    }
    Vec::new()
}

/// The structural rules over a feed entry's own HTML, for when no article
/// replaces it: inline related links ("Read also: …"), blocks of share
/// and comment links, a closing line that links back to the entry itself
/// (WordPress's "The post … appeared first on …"), and a leading copy of
/// the title. `link` is the entry's address ("this page" and "this site"),
/// `title` its title. Returns the cleaned HTML, or `None` when no rule
/// applied or the rules would remove more than half of the text: the
/// content is then served as it is (never emptied). Sanitising still runs
/// after this, on whatever it returns.
pub fn feed_content(html: &str, link: Option<&Url>, title: Option<&str>) -> Option<String> {
    if html.trim().is_empty() {
        return None;
    }
    let doc = Document::fragment(html);
    let root = doc.root();
    let mut budget = Budget::half_of(&root);
    if budget.left == 0 {
        return None;
    }
    let blocks = leaf_blocks(&root);
    let mut doomed: Vec<NodeRef<'_>> = blocks
        .iter()
        .filter(|b| is_related_block(b, link) || is_share_block(b, link))
        .copied()
        .collect();
    if let Some(first) = blocks.first()
        && is_title_copy(&norm_text(first), &[title])
        && !doomed.iter().any(|d| d.id == first.id)
    {
        doomed.push(*first);
    }
    if let Some(last) = blocks.last()
        && is_self_link_footer(last, link)
        && !doomed.iter().any(|d| d.id == last.id)
    {
        doomed.push(*last);
    }
    if doomed.is_empty() || !budget.apply(&doomed) {
        return None;
    }
    remove_empty(&root);
    let out = root.inner_html().to_string();
    (!out.trim().is_empty()).then_some(out)
}

/// A short block of links that all share this page or point into it
/// (`#comments`, `#respond`): "Tweet · Share · 3 comments".
fn is_share_block(block: &NodeRef<'_>, page: Option<&Url>) -> bool {
    let Some(page) = page else {
        return false;
    };
    let text = norm_text(block);
    let total = text.chars().filter(|c| !c.is_whitespace()).count();
    if word_count(&text) > 12 {
        return false;
    }
    let (link_chars, hrefs) = link_stats(block);
    !hrefs.is_empty()
        && link_chars * 10 >= total * 7
        && hrefs.iter().all(|h| is_share_or_self_link(h, page))
}

/// Whether `href` points at `page` itself (an anchor in it) or is a share
/// link: a URL that carries the page's address in its query.
fn is_share_or_self_link(href: &str, page: &Url) -> bool {
    let Ok(url) = page.join(href.trim()) else {
        return false;
    };
    if same_page(&url, page) {
        return url.fragment().is_some();
    }
    let (Some(host), path) = (page.host_str(), page.path().trim_end_matches('/')) else {
        return false;
    };
    let needle = match page.port() {
        Some(port) => format!("{}:{port}{path}", site_of(host)),
        None => format!("{}{path}", site_of(host)),
    };
    url.query_pairs().any(|(_, v)| v.contains(&needle))
}

/// Same scheme-less address: host (without `www.`), path (without a
/// trailing slash) and query.
fn same_page(a: &Url, b: &Url) -> bool {
    a.host_str().map(site_of) == b.host_str().map(site_of)
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        && a.query() == b.query()
}

/// The closing line of a syndicated post: short, mostly links, one of them
/// to the entry itself and all of them to its site ("The post <a>…</a>
/// appeared first on <a>…</a>.", in any language).
fn is_self_link_footer(block: &NodeRef<'_>, page: Option<&Url>) -> bool {
    let Some(page) = page else {
        return false;
    };
    let text = norm_text(block);
    let total = text.chars().filter(|c| !c.is_whitespace()).count();
    if word_count(&text) > 40 || total == 0 {
        return false;
    }
    let (link_chars, hrefs) = link_stats(block);
    let urls: Vec<Url> = hrefs
        .iter()
        .filter_map(|h| page.join(h.trim()).ok())
        .collect();
    link_chars * 10 >= total * 3
        && urls.iter().any(|u| same_page(u, page))
        && urls
            .iter()
            .all(|u| u.host_str().map(site_of) == page.host_str().map(site_of))
}

/// How much text the rules of [`finish`] may still remove.
struct Budget {
    left: usize,
}

impl Budget {
    fn half_of(root: &NodeRef<'_>) -> Self {
        Budget {
            left: text_chars(root) / 2,
        }
    }

    /// Removes `nodes` if their text fits in what is left; returns whether
    /// it did.
    fn apply(&mut self, nodes: &[NodeRef<'_>]) -> bool {
        let cost: usize = nodes.iter().map(text_chars).sum();
        if cost > self.left {
            return false;
        }
        self.left -= cost;
        for n in nodes {
            n.remove_from_parent();
        }
        true
    }
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
    if !is_same_site_page(href, base) {
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
    if !label_ok || !after_ok {
        return false;
    }
    // A label ending in a separator ("Read also:", "Lihat juga -") makes
    // even a one-word link ("Archive") a related link; without one, the
    // link must be most of the block and read like a headline.
    let labelled = word_count(before) > 0 && before.ends_with(LABEL_SEPARATORS);
    labelled && word_count(&link_text) >= 1
        || link_chars * 2 >= total && word_count(&link_text) >= 2
}

/// Characters a label before a related link ends with.
const LABEL_SEPARATORS: &[char] = &[':', '-', '–', '—', '»', '›', '|', '>', '→', '：'];

/// Lists whose items are each essentially one link to another page of this
/// site ("More stories", "Trending", tag lists), and a short label block
/// just before such a list.
fn link_lists<'a>(root: &NodeRef<'a>, base: Option<&Url>) -> Vec<NodeRef<'a>> {
    let mut out = Vec::new();
    let lists: Vec<_> = root
        .descendants_it()
        .filter(|d| d.is_element() && (d.has_name("ul") || d.has_name("ol")))
        .collect();
    for list in lists {
        // A list inside one already found goes with it.
        if out
            .iter()
            .any(|o: &NodeRef<'_>| list.ancestors_it(None).any(|a| a.id == o.id))
        {
            continue;
        }
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
                out.push(label);
            }
        }
        out.push(list);
    }
    out
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

/// The leading and trailing runs of blocks that are not article
/// text: title copies, bylines, dates, breadcrumbs, lone links and labels.
fn edge_junk<'a>(blocks: &[NodeRef<'a>], ctx: &FinishContext<'_>) -> Vec<NodeRef<'a>> {
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
    let leading = blocks
        .iter()
        .take(EDGE_BLOCKS)
        .take_while(|b| is_edge_junk(b, true))
        .count();
    let trailing = blocks
        .iter()
        .skip(leading)
        .rev()
        .take(EDGE_BLOCKS)
        .take_while(|b| is_edge_junk(b, false))
        .count();
    let mut out: Vec<_> = blocks.iter().take(leading).copied().collect();
    out.extend(blocks.iter().rev().take(trailing).copied());
    out
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
            .map(|n| classify(n).map(|(k, _)| k))
            .collect();
        let junk = Some(Kind::Junk(Strength::Strong));
        assert_eq!(
            kinds,
            [
                junk,
                junk,
                junk,
                Some(Kind::Meta),
                Some(Kind::Caption),
                junk,
                junk,
                None,
                None,
                None,
            ]
        );
    }

    /// Junk words match whole name parts; the rule's reach, spelled out.
    #[test]
    fn junk_words_match_whole_name_parts() {
        let weak = Some(Kind::Junk(Strength::Weak));
        let strong = Some(Kind::Junk(Strength::Strong));
        for (class, want, token) in [
            ("section-and-ad", weak, "section-and-ad"),
            ("ad-slot top", weak, "ad-slot"),
            ("story adverb", None, ""),
            ("header head", None, ""),
            (
                "main-content subscriber-premium",
                weak,
                "subscriber-premium",
            ),
            ("subscribe-box", strong, "subscribe-box"),
            (
                "elementor-widget-container",
                weak,
                "elementor-widget-container",
            ),
            ("widgetized", None, ""),
            ("post sharedaddy", strong, "sharedaddy"),
            ("commentary", strong, "commentary"),
            ("shadow loading", None, ""),
        ] {
            let doc = Document::fragment(format!(r#"<div class="{class}"></div>"#));
            let node = doc.select("div").nodes()[0];
            let got = classify(&node);
            assert_eq!(got.as_ref().map(|(k, _)| *k), want, "{class}");
            if want.is_some() {
                assert_eq!(got.map(|(_, t)| t).as_deref(), Some(token), "{class}");
            }
        }
    }

    #[test]
    fn prepare_keeps_a_wrapper_that_holds_the_article() {
        let doc = Document::from(format!(
            r#"<html><body><div class="widget post-body">{P1}{P2}</div><div class="widget"><a href="/x">menu</a></div></body></html>"#
        ));
        prepare(&doc, None, Rules::All);
        assert!(doc.select(".post-body").exists());
        assert_eq!(doc.select(".widget").length(), 1);
    }

    /// Five paragraphs of prose, each wrapped by `wrap` (`{}` = the paragraph).
    fn paragraphs(wrap: &str) -> String {
        (1..=5)
            .map(|i| {
                wrap.replace(
                    "{}",
                    &format!(
                        "<p>Paragraph {i} of the story, with enough words in it to be prose \
                         rather than a label, and a second clause to make it longer.</p>"
                    ),
                )
            })
            .collect()
    }

    fn page(body: &str) -> Document {
        page_with(body, "")
    }

    /// `body` on a page with `other` prose beside it (a neutral block).
    fn page_with(body: &str, other: &str) -> Document {
        Document::from(format!(
            "<html><head></head><body><div class=\"site-nav\"><a href=\"/\">Home</a></div>{body}\
             <div class=\"comments\"><p>A reader's comment that is long enough to be prose.</p></div>\
             <div class=\"elsewhere\">{other}</div></body></html>"
        ))
    }

    /// `n` paragraphs of prose that are not the story.
    fn other_prose(n: usize) -> String {
        "<p>Some other text on the page, as long as one of its paragraphs is, \
         and with a clause or two more to make it about as long.</p>"
            .repeat(n)
    }

    fn kept_paragraphs(doc: &Document) -> usize {
        doc.select("p")
            .nodes()
            .iter()
            .filter(|p| p.text().contains("of the story"))
            .count()
    }

    #[test]
    fn prepare_never_removes_the_declared_article_body() {
        // A paywall's wrapper named like a sign-up box, declared as the
        // body, on a page where it holds little of the prose (a long
        // comment thread or listing beside it): the declaration guards it.
        let doc = page_with(
            &format!(
                r#"<div class="subscriber-premium" itemprop="articleBody"><div class="subscriber-preview">{}</div></div>"#,
                paragraphs("{}")
            ),
            &other_prose(40),
        );
        prepare(&doc, None, Rules::All);
        assert_eq!(kept_paragraphs(&doc), 5);
        assert!(!doc.select(".comments").exists(), "other junk still goes");
        // A strong word too ("share"), on the body and inside it.
        let doc = page_with(
            &format!(
                r#"<div class="share-wrap"><div itemprop="articleBody"><div class="related-text">{}</div><div class="share-bar"><a href="https://x.example/share">Share</a></div></div></div>"#,
                paragraphs("{}")
            ),
            &other_prose(40),
        );
        prepare(&doc, None, Rules::All);
        assert_eq!(kept_paragraphs(&doc), 5);
        assert!(
            !doc.select(".share-bar").exists(),
            "a small share bar inside goes"
        );
    }

    #[test]
    fn elements_named_alike_are_weighed_together() {
        for wrap in [
            // Each paragraph in its own paywall wrapper.
            r#"<div class="subscriber-preview">{}</div>"#,
            // Sections that also hold an ad slot.
            r#"<div class="section-and-ad">{}<div class="ad-slot"></div></div>"#,
            // Page-builder widgets.
            r#"<div class="pb-widget"><div class="pb-widget-container">{}</div></div>"#,
            // A strong word, each section a share of the prose.
            r#"<div class="related-part">{}</div>"#,
            // Not siblings: each in a column of its own, named alike.
            r#"<div class="col"><div class="pb-widget-container">{}</div></div>"#,
            r#"<div class="col"><div class="related-part">{}</div></div>"#,
        ] {
            // Each part holds an eighth of the prose: too little alone.
            let doc = page_with(&paragraphs(wrap), &other_prose(2));
            prepare(&doc, None, Rules::All);
            assert_eq!(kept_paragraphs(&doc), 5, "{wrap}");
            assert!(!doc.select(".ad-slot").exists(), "{wrap}");
        }
        // One small element with a junk name still goes.
        let doc = page(&format!(
            r#"<div class="body">{}</div><div class="subscribe-box"><p>Subscribe for unlimited access, from one dollar a week.</p></div>"#,
            paragraphs("{}")
        ));
        prepare(&doc, None, Rules::All);
        assert_eq!(kept_paragraphs(&doc), 5);
        assert!(!doc.select(".subscribe-box").exists());
    }

    #[test]
    fn json_ld_article_body_protects_the_elements_that_carry_it() {
        let prose = paragraphs("{}");
        let text = Document::fragment(prose.as_str()).root().text().to_string();
        let json = serde_json::json!({
            "@context": "https://schema.org",
            "@graph": [{"@type": "NewsArticle", "articleBody": text}]
        });
        // Five wrappers, each under a sixth of the prose: the group rule
        // does not apply (the tokens differ), the schema text does.
        let body: String = (1..=5)
            .map(|i| {
                format!(
                    r#"<div class="promo-block-{i}"><p>Paragraph {i} of the story, with enough words in it to be prose rather than a label, and a second clause to make it longer.</p></div>"#
                )
            })
            .collect();
        let doc = Document::from(format!(
            r#"<html><head><script type="application/ld+json">{json}</script></head><body>{body}<div class="promo-box"><p>Buy the print edition today and save a third on the cover price.</p></div></body></html>"#
        ));
        let page = prepare(&doc, None, Rules::All);
        assert_eq!(kept_paragraphs(&doc), 5);
        assert!(!doc.select(".promo-box").exists());
        assert!(
            page.schema_body
                .is_some_and(|b| b.contains("Paragraph 3 of the story"))
        );
        // Without it, the small weak-named blocks go one by one.
        let doc = Document::from(format!("<html><body>{body}</body></html>"));
        prepare(&doc, None, Rules::All);
        assert!(kept_paragraphs(&doc) >= 1);
    }

    #[test]
    fn structural_rules_leave_class_words_alone() {
        let doc = page(&paragraphs("{}"));
        prepare(&doc, None, Rules::Structural);
        assert!(doc.select(".comments").exists());
        assert!(!doc.select("nav, button").exists());
    }

    #[test]
    fn densest_keeps_sibling_sections_together() {
        let sections: String = (1..=4)
            .map(|i| {
                format!(
                    "<section class=\"part\" id=\"s{i}\"><h2>Part {i}</h2><div class=\"t\">{}</div></section>",
                    paragraphs("{}")
                )
            })
            .collect();
        let doc = Document::from(format!(
            "<html><body><div id=\"story\">{sections}</div><div id=\"bio\"><div>{}</div></div></body></html>",
            paragraphs("{}").repeat(2)
        ));
        let body = doc.body().unwrap();
        let (node, chars) = densest(&body).unwrap();
        assert_eq!(node.attr("id").as_deref(), Some("story"));
        assert_eq!(chars, prose_chars(&node) - "Part1Part2Part3Part4".len());
    }

    #[test]
    fn finish_never_removes_more_than_half() {
        // Same-site link lists that are most of the "article" (a link
        // digest) stay; so do related-looking lines that are most of it.
        let list = r#"<ul><li><a href="/a/1">First linked story of the week</a></li><li><a href="/a/2">Second linked story of the week</a></li><li><a href="/a/3">Third linked story of the week</a></li></ul>"#;
        let html = format!("<p>This week's links.</p>{list}");
        check(
            &html,
            "This week's links. First linked story of the week Second linked story of the week Third linked story of the week",
        );
        check(
            &format!("{P1}{list}{P2}"),
            &format!("{} {}", &TEXT[..54], &TEXT[55..]),
        );
    }

    #[test]
    fn a_label_and_a_one_word_same_site_link_is_a_related_link() {
        for block in [
            r#"<p><strong>Read also:</strong> <a href="/2024/07/11/archive/">Archive</a></p>"#,
            r#"<p>Lihat juga — <a href="https://news.example/x/">Arsip</a></p>"#,
        ] {
            check(&format!("{P1}{block}{P2}"), TEXT);
        }
        for block in [
            // No label: a one-word link alone is not a headline.
            r#"<p><a href="/2024/07/11/archive/">Archive</a></p>"#,
            // A label without a separator reads as a sentence.
            r#"<p>Photos by <a href="/staff/jo/">Jo</a></p>"#,
            // Another site.
            r#"<p>Read also: <a href="https://other.example/x/">Archive</a></p>"#,
        ] {
            let html = format!("{P1}{P2}{block}{P1}");
            let doc = Document::fragment(html.as_str());
            let want = collapse(&crate::pipeline::extract::text_of(&doc.root()));
            check(&html, &want);
        }
    }

    #[test]
    fn feed_content_loses_related_share_and_footer_lines_never_its_text() {
        let link = Url::parse("https://blog.example/2024/07/12/a-post/").unwrap();
        let clean = |html: &str| {
            let out = feed_content(html, Some(&link), Some("A post about things"));
            let doc = Document::fragment(out.as_deref().unwrap_or(html));
            collapse(&crate::pipeline::extract::text_of(&doc.root()))
        };
        let body = format!("{P1}{P2}");
        let junk = [
            r#"<p><strong>Read also:</strong> <a href="/2024/07/11/archive/">Archive</a></p>"#,
            r#"<p>Baca juga: <a href="https://blog.example/2024/07/10/older-post/">An older post on this blog</a></p>"#,
            r#"<p>The post <a href="https://blog.example/2024/07/12/a-post/">A post about things</a> appeared first on <a href="https://blog.example">Example Blog</a>.</p>"#,
            r#"<p><a href="https://blog.example/2024/07/12/a-post/#comments">3 comments</a> | <a href="https://twitter.com/intent/tweet?url=https%3A%2F%2Fblog.example%2F2024%2F07%2F12%2Fa-post%2F">Tweet</a></p>"#,
        ];
        for j in junk {
            assert_eq!(clean(&format!("{body}{j}")), TEXT, "{j}");
        }
        // The footer only at the end; the others anywhere.
        for j in [junk[0], junk[1], junk[3]] {
            assert_eq!(clean(&format!("{P1}{j}{P2}")), TEXT, "{j}");
        }
        assert_eq!(clean(&format!("<h2>A post about things</h2>{body}")), TEXT);
        // Nothing to do: None, the content is served as it is.
        assert_eq!(feed_content(&body, Some(&link), None), None);
        // Never emptied: a teaser that is only a related-looking line stays.
        let only = junk[1];
        assert_eq!(feed_content(only, Some(&link), None), None);
        // Prose that links to the post itself stays.
        let teaser = r#"<p>In this post I look at why the river floods every spring and what the town could do about it, <a href="https://blog.example/2024/07/12/a-post/">continue reading</a>.</p>"#;
        assert_eq!(feed_content(teaser, Some(&link), None), None);
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
        prepare(&doc, None, Rules::All);
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
