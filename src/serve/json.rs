//! The merged feed as JSON Feed 1.1 (<https://jsonfeed.org/version/1.1>).
//!
//! Where every entry came from goes in a `_tributary` extension object
//! (extensions start with an underscore, per the spec): the feed that first
//! carried it and every copy of a merged story, with each copy's link.

use serde::Serialize;

use super::FeedMeta;
use super::atom::display_title;
use crate::model::OutputEntry;

#[derive(Serialize)]
struct JsonFeed<'a> {
    version: &'static str,
    title: &'a str,
    home_page_url: &'a str,
    feed_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hubs: Vec<Hub<'a>>,
    authors: Vec<Author<'a>>,
    items: Vec<Item<'a>>,
}

#[derive(Serialize)]
struct Hub<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    url: &'a str,
}

#[derive(Serialize)]
struct Author<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Item<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    title: String,
    /// The spec needs content_html or content_text; an empty string
    /// stands in when a feed item had neither.
    content_html: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    date_published: Option<String>,
    date_modified: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authors: Vec<Author<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
    #[serde(rename = "_tributary")]
    tributary: Extension<'a>,
}

#[derive(Serialize)]
struct Attachment<'a> {
    url: &'a str,
    mime_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_in_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Extension<'a> {
    about: &'static str,
    sources: Vec<SourceJson<'a>>,
}

#[derive(Serialize)]
struct SourceJson<'a> {
    feed_url: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    home_page_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

pub fn render(meta: &FeedMeta, entries: &[OutputEntry]) -> String {
    let feed = JsonFeed {
        version: "https://jsonfeed.org/version/1.1",
        title: &meta.title,
        home_page_url: &meta.home_url,
        feed_url: &meta.self_url,
        next_url: meta.next_url.as_deref(),
        hubs: meta
            .hub
            .as_deref()
            .map(|url| Hub {
                kind: "WebSub",
                url,
            })
            .into_iter()
            .collect(),
        authors: vec![Author { name: &meta.title }],
        items: entries.iter().map(item).collect(),
    };
    // Serialising plain structs of strings cannot fail; an empty object is
    // a safe answer if it ever did.
    serde_json::to_string(&feed).unwrap_or_else(|_| "{}".to_owned())
}

fn item(e: &OutputEntry) -> Item<'_> {
    Item {
        id: &e.uid,
        url: e.link.as_deref(),
        title: display_title(e),
        content_html: e.content_html.as_deref().unwrap_or_default(),
        date_published: e.published.map(|d| d.to_rfc3339()),
        date_modified: e.updated.to_rfc3339(),
        authors: e.authors.iter().map(|a| Author { name: a }).collect(),
        tags: &e.categories,
        attachments: e
            .enclosures
            .iter()
            .map(|a| Attachment {
                url: &a.url,
                mime_type: super::media_type(a).unwrap_or("application/octet-stream"),
                size_in_bytes: a.length,
            })
            .collect(),
        tributary: Extension {
            about: "https://github.com/tributary-rs/tributary#json-feed-extension",
            sources: e
                .sources
                .iter()
                .map(|s| SourceJson {
                    feed_url: &s.feed_url,
                    title: &s.title,
                    home_page_url: s.site_url.as_deref(),
                    url: s.link.as_deref(),
                })
                .collect(),
        },
    }
}
