//! The merged Atom 1.0 document (RFC 4287), written with `atom_syndication`
//! so escaping is never hand-made.
//!
//! Every entry carries an `atom:source` naming the feed it came from; the
//! feed-level author makes entries without one valid (RFC 4287 §4.1.2).

use atom_syndication::{
    Category, Content, Entry, Feed, FixedDateTime, Generator, Link, Person, Source, Text,
};
use chrono::{DateTime, Utc};

use super::FeedMeta;
use crate::model::OutputEntry;

pub fn render(meta: &FeedMeta, entries: &[OutputEntry]) -> String {
    let mut links = vec![
        link(&meta.self_url, "self", Some("application/atom+xml")),
        link(&meta.home_url, "alternate", Some("text/html")),
    ];
    // RFC 5005 paging: a reader follows rel="next" to catch up.
    if let Some(next) = &meta.next_url {
        links.push(link(next, "next", Some("application/atom+xml")));
    }
    if let Some(hub) = &meta.hub {
        links.push(link(hub, "hub", None));
    }
    let feed = Feed {
        title: Text::plain(xml_safe(&meta.title)),
        id: xml_safe(&meta.id),
        updated: fixed(meta.updated_for(entries)),
        authors: vec![person(&meta.title)],
        generator: Some(Generator {
            value: "Tributary".into(),
            uri: Some(crate::config::PROJECT_URL.into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
        links,
        entries: entries.iter().map(entry).collect(),
        ..Default::default()
    };
    feed.to_string()
}

fn entry(e: &OutputEntry) -> Entry {
    let mut links = Vec::new();
    if let Some(l) = &e.link {
        links.push(link(l, "alternate", Some("text/html")));
    }
    // Every other copy of a merged story, so a reader can open each one.
    for copy in super::other_copies(e) {
        links.push(Link {
            title: Some(xml_safe(&copy.title)),
            ..link(
                copy.link.as_deref().unwrap_or_default(),
                "related",
                Some("text/html"),
            )
        });
    }
    // Every other feed that carried it (the first is `atom:source`).
    for feed in super::other_feeds(e) {
        links.push(Link {
            title: Some(xml_safe(&feed.title)),
            ..link(
                feed.site_url.as_deref().unwrap_or(&feed.feed_url),
                "via",
                None,
            )
        });
    }
    for enc in &e.enclosures {
        links.push(Link {
            href: xml_safe(&enc.url),
            rel: "enclosure".into(),
            mime_type: super::media_type(enc).map(xml_safe),
            length: enc.length.map(|n| n.to_string()),
            ..Default::default()
        });
    }
    let source = e.source().map(|src| {
        let mut source_links = vec![link(&src.feed_url, "self", None)];
        if let Some(site) = &src.site_url {
            source_links.push(link(site, "alternate", Some("text/html")));
        }
        Source {
            title: Text::plain(xml_safe(&src.title)),
            id: xml_safe(&src.feed_url),
            updated: fixed(e.updated),
            links: source_links,
            ..Default::default()
        }
    });
    Entry {
        title: Text::plain(xml_safe(&display_title(e))),
        id: e.uid.clone(),
        updated: fixed(e.updated),
        published: e.published.map(fixed),
        authors: e.authors.iter().map(|a| person(a)).collect(),
        categories: e
            .categories
            .iter()
            .map(|c| Category {
                term: xml_safe(c),
                ..Default::default()
            })
            .collect(),
        links,
        content: e.content_html.as_deref().map(|html| Content {
            value: Some(xml_safe(html)),
            content_type: Some("html".into()),
            ..Default::default()
        }),
        source,
        ..Default::default()
    }
}

/// Every Atom entry needs a title; a feed item without one is named after
/// the start of its text, else its link.
pub fn display_title(e: &OutputEntry) -> String {
    if let Some(t) = e.title.as_deref().filter(|t| !t.trim().is_empty()) {
        return t.to_owned();
    }
    if let Some(text) = e
        .content_html
        .as_deref()
        .map(crate::pipeline::sanitize::html_to_text)
        .filter(|t| !t.is_empty())
    {
        let mut words = String::new();
        for w in text.split_whitespace() {
            if words.len() + w.len() > 80 {
                words.push('…');
                break;
            }
            if !words.is_empty() {
                words.push(' ');
            }
            words.push_str(w);
        }
        return words;
    }
    e.link.clone().unwrap_or_else(|| "(untitled)".to_owned())
}

fn person(name: &str) -> Person {
    Person {
        name: xml_safe(name),
        ..Default::default()
    }
}

fn link(href: &str, rel: &str, mime: Option<&str>) -> Link {
    Link {
        href: xml_safe(href),
        rel: rel.into(),
        mime_type: mime.map(str::to_owned),
        ..Default::default()
    }
}

fn fixed(t: DateTime<Utc>) -> FixedDateTime {
    t.fixed_offset()
}

/// Drops characters XML 1.0 forbids or discourages (see
/// [`crate::values::is_legal_char`]); one stray control byte in a source
/// feed must not make the whole output unreadable.
pub fn xml_safe(s: &str) -> String {
    crate::values::legal_text(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceInfo;

    fn sample(title: Option<&str>, content: Option<&str>) -> OutputEntry {
        OutputEntry {
            uid: "urn:uuid:00000000-0000-8000-8000-000000000001".into(),
            title: title.map(Into::into),
            link: Some("https://example.com/a?x=1&y=2".into()),
            content_html: content.map(Into::into),
            content_base: None,
            content_is_article: false,
            authors: vec!["Ann <ann@example.com>".into()],
            categories: vec!["rust & go".into()],
            published: None,
            updated: DateTime::UNIX_EPOCH,
            enclosures: vec![],
            sources: vec![SourceInfo {
                feed_url: "https://example.com/feed".into(),
                title: "Example".into(),
                site_url: Some("https://example.com/".into()),
                link: Some("https://example.com/a?x=1&y=2".into()),
            }],
            cursor: crate::model::Cursor { sort_at: 0, id: 1 },
        }
    }

    #[test]
    fn renders_escaped_valid_xml_that_parses_back() {
        let meta = FeedMeta {
            title: "My <river>".into(),
            id: "http://127.0.0.1:8080/feed.atom".into(),
            self_url: "http://127.0.0.1:8080/feed.atom".into(),
            home_url: "http://127.0.0.1:8080/".into(),
            next_url: None,
            hub: None,
            updated: DateTime::UNIX_EPOCH,
        };
        let xml = render(
            &meta,
            &[sample(Some("A & B \u{1} <c>"), Some("<p>x &amp; y</p>"))],
        );
        let parsed = feed_rs::parser::parse(xml.as_bytes()).expect("own output parses");
        assert_eq!(parsed.entries.len(), 1);
        let title = parsed.entries[0].title.as_ref().map(|t| t.content.clone());
        assert_eq!(title.as_deref(), Some("A & B  <c>"));
        assert!(xml.contains("<source>"), "{xml}");
    }

    #[test]
    fn an_enclosure_type_that_is_no_media_type_is_dropped() {
        // Regression: `type="video"` from a source feed made the output
        // fail RFC 4287's schema (atomMediaType needs a slash).
        let mut e = sample(Some("t"), None);
        for (ty, kept) in [
            ("video", None),
            ("audio/mpeg", Some("audio/mpeg")),
            ("audio/mpeg; codecs=mp3", Some("audio/mpeg; codecs=mp3")),
            ("/mpeg", None),
            ("audio/", None),
            ("a b/c", None),
        ] {
            e.enclosures = vec![crate::model::Enclosure {
                url: "https://example.com/a.mp3".into(),
                media_type: Some(ty.into()),
                length: None,
            }];
            assert_eq!(super::super::media_type(&e.enclosures[0]), kept, "{ty}");
            let xml = entry(&e).links.last().map(|l| l.mime_type.clone());
            assert_eq!(xml, Some(kept.map(str::to_owned)), "{ty}");
        }
    }

    #[test]
    fn untitled_entries_get_a_title_from_their_text() {
        let e = sample(None, Some("<p>Hello <b>world</b>, this is it.</p>"));
        assert_eq!(display_title(&e), "Hello world, this is it.");
        let e = sample(Some("  "), None);
        assert_eq!(display_title(&e), "https://example.com/a?x=1&y=2");
    }
}
