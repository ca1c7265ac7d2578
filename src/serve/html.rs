//! The river page: the merged output as HTML, for a phone or a desktop.
//!
//! Server-rendered with askama (escaping checked at compile time; only the
//! already-sanitised entry HTML is inserted raw). Newest first, each entry
//! with its source, time, lead image and a short lead, the full cleaned
//! text behind a `<details>` toggle, so nothing needs JavaScript.

use askama::Template;
use chrono::{DateTime, Utc};

use super::atom::display_title;
use crate::model::OutputEntry;
use crate::pipeline::sanitize::html_to_text;

/// Characters of text shown before "More".
const LEAD_CHARS: usize = 280;

pub struct Link {
    pub label: String,
    pub href: String,
}

/// One of the output's feeds, linked from the page.
pub struct FeedLink {
    pub label: &'static str,
    pub mime: &'static str,
    pub href: String,
}

pub struct Item {
    pub title: String,
    pub link: Option<String>,
    pub source: String,
    pub source_url: Option<String>,
    pub others: Vec<Link>,
    pub time_iso: String,
    pub time_label: String,
    pub image: Option<String>,
    pub lead: String,
    pub has_more: bool,
    /// Sanitised at ingestion; inserted as is.
    pub html: String,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
{% for f in feeds %}<link rel="alternate" type="{{ f.mime }}" title="{{ f.label }}" href="{{ f.href }}">
{% endfor %}<style>
:root { color-scheme: light dark; --muted: #6b7280; --line: #e5e7eb; }
body { margin: 0; font: 17px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; }
header, main, footer { max-width: 46rem; margin: 0 auto; padding: 0 1rem; }
header { padding-top: 1.5rem; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
nav { font-size: .9rem; margin-bottom: 1rem; }
nav a { margin-right: .8rem; }
article { padding: 1.2rem 0; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
article h2 { font-size: 1.2rem; margin: 0 0 .2rem; line-height: 1.3; }
article h2 a { color: inherit; text-decoration: none; }
.meta { color: var(--muted); font-size: .85rem; margin-bottom: .5rem; }
.lead-image { width: 100%; max-height: 22rem; object-fit: cover; border-radius: .4rem; }
.body img, .body video, .body iframe { max-width: 100%; height: auto; }
.body pre { overflow-x: auto; }
details summary { cursor: pointer; color: #2563eb; margin-top: .3rem; }
.empty { padding: 3rem 0; color: var(--muted); }
footer { color: var(--muted); font-size: .85rem; padding: 1.5rem 1rem 3rem; }
</style>
</head>
<body>
<header>
<h1>{{ title }}</h1>
<nav>{% for f in feeds %}<a href="{{ f.href }}">{{ f.label }}</a>{% endfor %}<a href="{{ opml }}">OPML</a></nav>
</header>
<main>
{% for i in items %}<article>
<h2>{% if let Some(l) = i.link %}<a href="{{ l }}">{{ i.title }}</a>{% else %}{{ i.title }}{% endif %}</h2>
<div class="meta">{% if let Some(u) = i.source_url %}<a href="{{ u }}">{{ i.source }}</a>{% else %}{{ i.source }}{% endif %} · <time datetime="{{ i.time_iso }}">{{ i.time_label }}</time>{% for o in i.others %} · also at <a href="{{ o.href }}">{{ o.label }}</a>{% endfor %}</div>
{% if let Some(img) = i.image %}<img class="lead-image" src="{{ img }}" alt="" loading="lazy">{% endif %}
<p class="lead">{{ i.lead }}</p>
{% if i.has_more %}<details><summary>More</summary><div class="body">{{ i.html|safe }}</div></details>{% endif %}
</article>
{% else %}<p class="empty">Nothing here yet: entries appear after the first poll.</p>
{% endfor %}{% if let Some(n) = next %}<p><a href="{{ n }}">Older entries →</a></p>{% endif %}
</main>
<footer>Merged by Tributary {{ version }}.</footer>
</body>
</html>
"#
)]
pub struct RiverPage {
    pub title: String,
    pub feeds: Vec<FeedLink>,
    pub opml: String,
    pub items: Vec<Item>,
    pub next: Option<String>,
    pub version: &'static str,
}

pub fn item(e: &OutputEntry) -> Item {
    let html = e.content_html.clone().unwrap_or_default();
    let text = html_to_text(&html);
    let (lead, has_more) = lead_of(&text);
    let src = e.source();
    Item {
        title: display_title(e),
        link: e.link.clone(),
        source: src.map_or_else(String::new, |s| s.title.clone()),
        source_url: src.and_then(|s| s.site_url.clone()),
        others: super::other_copies(e)
            .filter_map(|c| {
                Some(Link {
                    label: c.title.clone(),
                    href: c.link.clone()?,
                })
            })
            .collect(),
        time_iso: e.published.unwrap_or(e.updated).to_rfc3339(),
        time_label: time_label(e.published.unwrap_or(e.updated)),
        image: lead_image(&html),
        lead,
        has_more: has_more || html.contains("<img") || html.contains("<figure"),
        html,
    }
}

fn lead_of(text: &str) -> (String, bool) {
    if text.chars().count() <= LEAD_CHARS {
        return (text.to_owned(), false);
    }
    let mut cut: String = text.chars().take(LEAD_CHARS).collect();
    // End on a word boundary.
    if let Some(space) = cut.rfind(' ') {
        cut.truncate(space);
    }
    cut.push('…');
    (cut, true)
}

fn time_label(t: DateTime<Utc>) -> String {
    t.format("%-d %b %Y, %H:%M UTC").to_string()
}

/// The first image of the content, if any (already absolute and safe).
fn lead_image(html: &str) -> Option<String> {
    if !html.contains("<img") {
        return None;
    }
    let doc = dom_query::Document::fragment(html);
    doc.select("img[src]")
        .iter()
        .find_map(|img| img.attr("src").map(|s| s.to_string()))
        .filter(|s| s.starts_with("https://") || s.starts_with("http://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_end_on_a_word_and_say_when_there_is_more() {
        let (lead, more) = lead_of("short text");
        assert_eq!((lead.as_str(), more), ("short text", false));
        let long = "word ".repeat(100);
        let (lead, more) = lead_of(long.trim());
        assert!(more && lead.ends_with("word…") && lead.chars().count() <= LEAD_CHARS + 1);
    }

    #[test]
    fn the_lead_image_is_the_first_absolute_one() {
        let html =
            r#"<p>x</p><img src="https://a.example/1.jpg"><img src="https://a.example/2.jpg">"#;
        assert_eq!(lead_image(html).as_deref(), Some("https://a.example/1.jpg"));
        assert_eq!(lead_image("<p>no image</p>"), None);
    }

    #[test]
    fn the_page_escapes_text_and_inserts_only_content_raw() {
        let page = RiverPage {
            title: "<Tributary>".into(),
            feeds: vec![FeedLink {
                label: "Atom",
                mime: "application/atom+xml",
                href: "/feed.atom".into(),
            }],
            opml: "/opml".into(),
            items: vec![Item {
                title: "A <b>title</b>".into(),
                link: Some("https://a.example/?a=1&b=2".into()),
                source: "Src".into(),
                source_url: None,
                others: vec![],
                time_iso: "2026-01-01T00:00:00+00:00".into(),
                time_label: "1 Jan 2026".into(),
                image: None,
                lead: "lead".into(),
                has_more: true,
                html: "<p>body <em>kept</em></p>".into(),
            }],
            next: None,
            version: "0",
        };
        let html = page.render().expect("renders");
        assert!(html.contains("&#60;Tributary&#62;"), "{html}");
        assert!(!html.contains("<b>title</b>"), "{html}");
        assert!(html.contains("<p>body <em>kept</em></p>"));
        assert!(html.contains("<details><summary>More</summary>"));
    }
}
