//! The merged feed as RSS 2.0, written with the `rss` crate (no hand-made
//! escaping). Guids are the entries' permanent ids (`isPermaLink="false"`),
//! dates are RFC 822, HTML goes in `content:encoded` and `description`,
//! authors in `dc:creator` (RSS's own `author` must be an e-mail address),
//! and paging/self/hub links use the Atom namespace, as readers expect.

use std::collections::BTreeMap;

use rss::extension::atom::{AtomExtension, Link as AtomLink};
use rss::extension::dublincore::DublinCoreExtension;
use rss::{Category, Channel, Enclosure, Guid, Item, Source};

use super::FeedMeta;
use super::atom::{display_title, xml_safe};
use crate::model::OutputEntry;

pub fn render(meta: &FeedMeta, entries: &[OutputEntry]) -> String {
    let mut links = vec![atom_link(
        &meta.self_url,
        "self",
        Some("application/rss+xml"),
    )];
    if let Some(next) = &meta.next_url {
        links.push(atom_link(next, "next", Some("application/rss+xml")));
    }
    if let Some(hub) = &meta.hub {
        links.push(atom_link(hub, "hub", None));
    }
    let mut namespaces = BTreeMap::new();
    namespaces.insert("atom".to_owned(), "http://www.w3.org/2005/Atom".to_owned());
    namespaces.insert(
        "content".to_owned(),
        "http://purl.org/rss/1.0/modules/content/".to_owned(),
    );
    namespaces.insert(
        "dc".to_owned(),
        "http://purl.org/dc/elements/1.1/".to_owned(),
    );
    let channel = Channel {
        title: xml_safe(&meta.title),
        link: xml_safe(&meta.home_url),
        description: xml_safe(&format!("{}: merged by Tributary", meta.title)),
        generator: Some(format!("Tributary {}", env!("CARGO_PKG_VERSION"))),
        last_build_date: Some(rfc822(meta.updated_for(entries))),
        atom_ext: Some(AtomExtension { links }),
        items: entries.iter().map(item).collect(),
        namespaces,
        ..Default::default()
    };
    channel.to_string()
}

fn item(e: &OutputEntry) -> Item {
    let related: Vec<AtomLink> = super::other_copies(e)
        .filter_map(|c| c.link.as_deref())
        .map(|l| atom_link(l, "related", Some("text/html")))
        .chain(
            super::other_feeds(e)
                .map(|f| atom_link(f.site_url.as_deref().unwrap_or(&f.feed_url), "via", None)),
        )
        .collect();
    Item {
        title: Some(xml_safe(&display_title(e))),
        link: e.link.as_deref().map(xml_safe),
        description: e.content_html.as_deref().map(xml_safe),
        content: e.content_html.as_deref().map(xml_safe),
        guid: Some(Guid {
            value: e.uid.clone(),
            permalink: false,
        }),
        pub_date: Some(rfc822(e.published.unwrap_or(e.updated))),
        categories: e
            .categories
            .iter()
            .map(|c| Category {
                name: xml_safe(c),
                domain: None,
            })
            .collect(),
        // RSS allows one enclosure per item; podcasts have one.
        enclosure: e.enclosures.first().map(|enc| Enclosure {
            url: xml_safe(&enc.url),
            length: enc.length.unwrap_or(0).to_string(),
            mime_type: xml_safe(super::media_type(enc).unwrap_or("application/octet-stream")),
        }),
        source: e.source().map(|s| Source {
            url: xml_safe(&s.feed_url),
            title: Some(xml_safe(&s.title)),
        }),
        dublin_core_ext: (!e.authors.is_empty()).then(|| DublinCoreExtension {
            creators: e.authors.iter().map(|a| xml_safe(a)).collect(),
            ..Default::default()
        }),
        atom_ext: (!related.is_empty()).then_some(AtomExtension { links: related }),
        ..Default::default()
    }
}

/// An RFC 822 date. chrono panics on a year it cannot write in four
/// digits; entries reach here made safe (`serve::safe_entries`), and a
/// date that still is not is clamped rather than allowed to take the
/// whole document down.
fn rfc822(d: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{DateTime, Datelike};
    let d = if (1..=9999).contains(&d.year()) {
        d
    } else if d.year() < 1 {
        DateTime::UNIX_EPOCH
    } else {
        DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default()
    };
    d.to_rfc2822()
}

fn atom_link(href: &str, rel: &str, mime: Option<&str>) -> AtomLink {
    AtomLink {
        href: xml_safe(href),
        rel: rel.to_owned(),
        mime_type: mime.map(str::to_owned),
        ..Default::default()
    }
}
