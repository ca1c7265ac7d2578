//! Leniency: text-level repairs that let feed-rs read what the most
//! forgiving feed readers read, without giving up the strictness that
//! protects us (no entity expansion, no DTDs: repairs only ever rewrite
//! markup into plainer markup, and no size cap is lifted).
//!
//! Two kinds, both on decoded UTF-8 text:
//! - **Normalisations**, applied to every document before its one parse
//!   because feed-rs reads the result differently without failing:
//!   misspelled or legacy namespace URIs (feed-rs matches them exactly,
//!   so Atom 0.3, RSS 0.90, Userland RSS 2.0 and `content:encoded` without
//!   its trailing slash read as nothing), Atom 0.3's element names, Atom
//!   text constructs with a type or mode feed-rs rejects, empty ones, and
//!   HTML written unescaped inside RSS descriptions. Each borrows the
//!   document when there is nothing to change.
//! - **Recovery**, tried only after a document failed as XML: undefined
//!   HTML entities and raw `&` escaped, stray end tags dropped and
//!   unclosed ones closed.
//!
//! And one for JSON Feed: fields of the wrong type are coerced or dropped
//! one by one, so one odd field never loses the feed.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// The namespace feed-rs knows for a misspelled or legacy one, if any.
/// Compared without case, scheme or trailing `/` and `#`.
fn canonical_namespace(uri: &str) -> Option<&'static str> {
    let u = uri.trim().to_ascii_lowercase();
    let u = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .unwrap_or(&u);
    let u = u.trim_end_matches(['/', '#']);
    let canonical = match u {
        "purl.org/atom/ns" | "www.w3.org/2005/atom" => "http://www.w3.org/2005/Atom",
        "purl.org/rss/1.0"
        | "my.netscape.com/rdf/simple/0.9"
        | "backend.userland.com/rss2"
        | "backend.userland.com/rss"
        | "blogs.law.harvard.edu/tech/rss" => "http://purl.org/rss/1.0/",
        "purl.org/rss/1.0/modules/content" => "http://purl.org/rss/1.0/modules/content/",
        "purl.org/dc/elements/1.1" => "http://purl.org/dc/elements/1.1/",
        "search.yahoo.com/mrss" | "video.search.yahoo.com/mrss" | "tools.search.yahoo.com/mrss" => {
            "http://search.yahoo.com/mrss/"
        }
        "www.itunes.com/dtds/podcast-1.0.dtd" | "itunes.com/dtds/podcast-1.0.dtd" => {
            "http://www.itunes.com/dtds/podcast-1.0.dtd"
        }
        "podcastindex.org/namespace/1.0" => "https://podcastindex.org/namespace/1.0",
        "wellformedweb.org/commentapi" => "http://wellformedweb.org/CommentAPI/",
        _ => return None,
    };
    (canonical != uri).then_some(canonical)
}

/// What [`normalize`] found out about the document on the way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The document declared Atom 0.3's namespace.
    pub atom03: bool,
}

/// Rewrites namespace declarations feed-rs would not recognise to the
/// URIs it knows.
fn normalize_namespaces(doc: &str) -> (Cow<'_, str>, Found) {
    static XMLNS: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r#"(xmlns(?::[A-Za-z_][\w.-]*)?\s*=\s*)(?:"([^"<]*)"|'([^'<]*)')"#).ok()
    });
    let mut found = Found::default();
    let Some(re) = XMLNS.as_ref() else {
        return (Cow::Borrowed(doc), found);
    };
    let mut out = String::new();
    let mut copied = 0;
    for c in re.captures_iter(doc) {
        let (Some(whole), Some(prefix)) = (c.get(0), c.get(1)) else {
            continue;
        };
        let value = c.get(2).or_else(|| c.get(3)).map_or("", |m| m.as_str());
        if value.to_ascii_lowercase().contains("purl.org/atom/ns") {
            found.atom03 = true;
        }
        if let Some(ns) = canonical_namespace(value) {
            out.push_str(doc.get(copied..whole.start()).unwrap_or(""));
            out.push_str(prefix.as_str());
            out.push('"');
            out.push_str(ns);
            out.push('"');
            copied = whole.end();
        }
    }
    if copied == 0 {
        return (Cow::Borrowed(doc), found);
    }
    out.push_str(doc.get(copied..).unwrap_or(""));
    (Cow::Owned(out), found)
}

/// The name of the root element, without prefix, if the document has one.
pub fn root_name(doc: &str) -> Option<&str> {
    let tag = super::parse::root_start_tag(doc)?;
    let inner = doc.get(tag.start + 1..tag.end)?;
    let name = inner
        .split(|c: char| c.is_ascii_whitespace() || c == '/')
        .next()?;
    Some(name.rsplit(':').next().unwrap_or(name))
}

/// Every normalisation, in order; see the module doc.
pub fn normalize(doc: &str) -> (Cow<'_, str>, Found) {
    let (doc, found) = normalize_namespaces(doc);
    let root = root_name(&doc).map(str::to_owned);
    let doc = match root.as_deref() {
        Some("feed") => {
            let renamed = if found.atom03 {
                Cow::Owned(rename_atom03(&doc).into_owned())
            } else {
                doc
            };
            match atom_text_constructs(&renamed) {
                Cow::Borrowed(_) => renamed,
                Cow::Owned(s) => Cow::Owned(s),
            }
        }
        Some("RDF") => {
            let linked = items_without_link(&doc).into_owned();
            let wrapped = wrap_raw_html(&linked).into_owned();
            if wrapped == *doc {
                doc
            } else {
                Cow::Owned(wrapped)
            }
        }
        Some("rss") => {
            let doc = match wrap_raw_html(&doc) {
                Cow::Borrowed(_) => doc,
                Cow::Owned(s) => Cow::Owned(s),
            };
            match add_missing_channel(&doc) {
                Some(s) => Cow::Owned(s),
                None => doc,
            }
        }
        _ => doc,
    };
    (doc, found)
}

/// Atom 0.3's names for what Atom 1.0 calls otherwise. `created` is read
/// as the publication time only when the entries have no `issued`.
fn rename_atom03(doc: &str) -> Cow<'_, str> {
    static TAGS: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"<(/?)(modified|issued|created|tagline|copyright)([\s/>])").ok()
    });
    let Some(re) = TAGS.as_ref() else {
        return Cow::Borrowed(doc);
    };
    let has_issued = doc.contains("<issued");
    re.replace_all(doc, |c: &Captures<'_>| {
        let name = match &c[2] {
            "modified" => "updated",
            "issued" => "published",
            "created" if !has_issued => "published",
            "created" => "created",
            "tagline" => "subtitle",
            _ => "rights",
        };
        format!("<{}{name}{}", &c[1], &c[3])
    })
}

/// The attributes of a start tag's attribute text, as (name, value).
fn attributes(attrs: &str) -> Vec<(&str, &str)> {
    static ATTR: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r#"([A-Za-z_:][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')"#).ok());
    let Some(re) = ATTR.as_ref() else {
        return Vec::new();
    };
    re.captures_iter(attrs)
        .filter_map(|c| {
            let name = c.get(1)?.as_str();
            let value = c.get(2).or_else(|| c.get(3))?.as_str();
            Some((name, value))
        })
        .collect()
}

/// Escapes text for an XML text node.
fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Makes Atom text constructs (and `content`) readable by feed-rs, which
/// fails the whole document on a `type` other than text, html and xhtml
/// (`""`, `text/plain`, `application/xhtml+xml`, …) and on an empty one:
/// types are mapped to the three Atom 1.0 knows, Atom 0.3's `mode`
/// (`escaped`, `base64`, `xml`) is applied (base64 is decoded), and empty
/// elements are dropped. Unprefixed elements only: Atom is the default
/// namespace of every Atom document we have seen.
fn atom_text_constructs(doc: &str) -> Cow<'_, str> {
    static START: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"<(title|subtitle|summary|rights|content)((?:\s[^<>]*?)?)(/?)>").ok()
    });
    let Some(re) = START.as_ref() else {
        return Cow::Borrowed(doc);
    };
    let mut out = String::new();
    let mut copied = 0; // bytes of `doc` handled so far
    let mut changed = false;
    for c in re.captures_iter(doc) {
        let (Some(whole), Some(name)) = (c.get(0), c.get(1)) else {
            continue;
        };
        if whole.start() < copied {
            continue; // inside an element already rewritten
        }
        let name = name.as_str();
        let attrs = c.get(2).map_or("", |m| m.as_str());
        let self_closing = c.get(3).is_some_and(|m| !m.as_str().is_empty());
        let attr_list = attributes(attrs);
        let get = |n: &str| {
            attr_list
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let (ty, mode, src) = (get("type"), get("mode"), get("src"));
        // Where the element's body ends, and the whole element.
        let close = format!("</{name}>");
        let (body, end) = if self_closing {
            ("", whole.end())
        } else {
            match doc.get(whole.end()..).and_then(|rest| rest.find(&close)) {
                Some(at) => (
                    doc.get(whole.end()..whole.end() + at).unwrap_or(""),
                    whole.end() + at + close.len(),
                ),
                None => continue, // not well-formed: left to recovery
            }
        };
        if src.is_some() && name == "content" {
            continue; // out-of-line content: nothing inline to read
        }
        let is_html = |t: &str| matches!(t, "html" | "text/html");
        let is_xhtml = |t: &str| matches!(t, "xhtml" | "application/xhtml+xml");
        let ty_str = ty.as_deref().unwrap_or("text");
        let mut new_body: Option<String> = None;
        let new_type: Option<&str>;
        if mode.as_deref() == Some("base64") {
            use base64::Engine;
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            match decoded {
                Some(text)
                    if ty_str.starts_with("text/") || is_html(ty_str) || is_xhtml(ty_str) =>
                {
                    new_body = Some(escape_text(&text));
                    new_type = Some(if is_html(ty_str) || is_xhtml(ty_str) {
                        "html"
                    } else {
                        "text"
                    });
                }
                // A base64 image or file: nothing to read as text.
                _ => new_type = None,
            }
            if new_type.is_none() {
                out.push_str(doc.get(copied..whole.start()).unwrap_or(""));
                copied = end;
                changed = true;
                continue;
            }
        } else if mode.as_deref() == Some("escaped") {
            new_type = Some(if is_html(ty_str) || is_xhtml(ty_str) {
                "html"
            } else {
                "text"
            });
        } else if is_html(ty_str) {
            // Markup written raw (Atom 0.3's mode="xml", or a careless
            // generator) is read as XHTML rather than lost.
            let raw = body.contains('<') && !body.trim_start().starts_with("<![CDATA[");
            new_type = Some(if raw { "xhtml" } else { "html" });
        } else if is_xhtml(ty_str) {
            new_type = Some(if body.contains('<') { "xhtml" } else { "text" });
        } else if matches!(ty_str, "" | "text" | "text/plain") {
            new_type = Some("text");
        } else if name == "content" && ty_str.contains('/') && !ty_str.starts_with("text/") {
            new_type = None; // a media type feed-rs reads (or XML): as given
        } else if ty_str.starts_with("text/") && name == "content" {
            new_type = None;
        } else {
            new_type = Some("text");
        }
        let body_now = new_body.as_deref().unwrap_or(body);
        if body_now.trim().is_empty() {
            // Empty: feed-rs fails the whole feed on it; nothing is lost.
            out.push_str(doc.get(copied..whole.start()).unwrap_or(""));
            copied = end;
            changed = true;
            continue;
        }
        let type_same =
            new_type.is_none_or(|t| ty.as_deref() == Some(t) || (t == "text" && ty.is_none()));
        if type_same && mode.is_none() && new_body.is_none() {
            continue;
        }
        // Rebuild the start tag: every attribute but type and mode kept.
        let mut tag = format!("<{name}");
        for (k, v) in &attr_list {
            if !k.eq_ignore_ascii_case("type") && !k.eq_ignore_ascii_case("mode") {
                tag.push_str(&format!(" {k}=\"{v}\""));
            }
        }
        match new_type {
            Some(t) => tag.push_str(&format!(" type=\"{t}\">")),
            None => match ty.as_deref() {
                Some(t) => tag.push_str(&format!(" type=\"{t}\">")),
                None => tag.push('>'),
            },
        }
        out.push_str(doc.get(copied..whole.start()).unwrap_or(""));
        out.push_str(&tag);
        out.push_str(body_now);
        out.push_str(&close);
        copied = end;
        changed = true;
    }
    if !changed {
        return Cow::Borrowed(doc);
    }
    out.push_str(doc.get(copied..).unwrap_or(""));
    Cow::Owned(out)
}

/// Wraps HTML that an RSS feed wrote unescaped inside an HTML-bearing
/// element (`description`, `content:encoded`, `itunes:summary`, …) in
/// CDATA, so the markup is read as the element's text (as lenient readers
/// do) instead of being lost as unknown child elements or failing the
/// document when it is not well-formed XML.
fn wrap_raw_html(doc: &str) -> Cow<'_, str> {
    static START: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"<((?:[A-Za-z_][\w.-]*:)?(?:description|encoded|summary))((?:\s[^<>]*?)?)>")
            .ok()
    });
    let Some(re) = START.as_ref() else {
        return Cow::Borrowed(doc);
    };
    if !may_have_raw_html(doc) {
        return Cow::Borrowed(doc);
    }
    let mut out = String::new();
    let mut copied = 0;
    for c in re.captures_iter(doc) {
        let (Some(whole), Some(name)) = (c.get(0), c.get(1)) else {
            continue;
        };
        if whole.start() < copied || whole.as_str().ends_with("/>") {
            continue;
        }
        let close = format!("</{}>", name.as_str());
        let Some(len) = doc.get(whole.end()..).and_then(|r| r.find(&close)) else {
            continue;
        };
        let body = doc.get(whole.end()..whole.end() + len).unwrap_or("");
        let trimmed = body.trim_start();
        // Raw markup: a tag that is not already CDATA or a comment.
        let raw = body.contains('<') && !trimmed.starts_with("<![CDATA[");
        if !raw {
            continue;
        }
        out.push_str(doc.get(copied..whole.end()).unwrap_or(""));
        out.push_str("<![CDATA[");
        out.push_str(&body.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]>");
        copied = whole.end() + len;
    }
    if copied == 0 {
        return Cow::Borrowed(doc);
    }
    out.push_str(doc.get(copied..).unwrap_or(""));
    Cow::Owned(out)
}

/// Whether any HTML-bearing element may hold raw markup: a cheap,
/// conservative scan (SIMD substring search, no regex) that lets the
/// nearly every feed that escapes or CDATA-wraps its HTML skip
/// [`wrap_raw_html`]'s regex. True whenever in doubt.
fn may_have_raw_html(doc: &str) -> bool {
    let bytes = doc.as_bytes();
    for name in [&b"description"[..], b"encoded", b"summary"] {
        for at in memchr::memmem::find_iter(bytes, name) {
            // A start tag: `<name` or `<prefix:name`, not `</…`.
            let before = bytes.get(..at).unwrap_or_default();
            let lt = before.iter().rposition(|&b| b == b'<');
            let Some(lt) = lt else { continue };
            let prefix = before.get(lt + 1..).unwrap_or_default();
            let is_start = prefix.is_empty()
                || (prefix.last() == Some(&b':')
                    && prefix.iter().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
                    }));
            if !is_start {
                continue;
            }
            let Some(gt) = memchr::memchr(b'>', bytes.get(at..).unwrap_or_default()) else {
                return true;
            };
            if bytes.get(at + gt - 1) == Some(&b'/') {
                continue; // empty element
            }
            let mut body = bytes.get(at + gt + 1..).unwrap_or_default();
            while body.first().is_some_and(u8::is_ascii_whitespace) {
                body = body.get(1..).unwrap_or_default();
            }
            if let Some(cdata) = body.strip_prefix(b"<![CDATA[") {
                let Some(end) = memchr::memmem::find(cdata, b"]]>") else {
                    return true;
                };
                body = cdata.get(end + 3..).unwrap_or_default();
            }
            // The next tag must be this element's end tag.
            match memchr::memchr(b'<', body) {
                Some(i) if body.get(i + 1) == Some(&b'/') => {}
                _ => return true,
            }
        }
    }
    false
}

/// RSS 1.0 (and 0.90) items without `<link>`: feed-rs drops them. The
/// item's `rdf:about` stands in when it is a web URL (it names the item),
/// else a link no output ever shows (not http), so the item is read with
/// its title and text and keyed by them.
fn items_without_link(doc: &str) -> Cow<'_, str> {
    static ITEM: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"(?s)<item(\s[^<>]*?)?>(.*?)</item>").ok());
    let Some(re) = ITEM.as_ref() else {
        return Cow::Borrowed(doc);
    };
    re.replace_all(doc, |c: &Captures<'_>| {
        let attrs = c.get(1).map_or("", |m| m.as_str());
        let body = c.get(2).map_or("", |m| m.as_str());
        if body.contains("<link") {
            return c[0].to_owned();
        }
        let about = attributes(attrs)
            .into_iter()
            .find(|(k, _)| k.ends_with("about"))
            .map(|(_, v)| v.trim())
            .filter(|v| v.starts_with("http://") || v.starts_with("https://"));
        let link = about.map_or_else(|| NO_LINK.to_owned(), escape_text);
        format!("<item{attrs}><link>{link}</link>{body}</item>")
    })
}

/// The stand-in link of an item that has none: not a web URL, so the
/// mapping drops it as it drops every non-http(s) link.
pub const NO_LINK: &str = "tributary:no-link";

/// An `<rss>` document whose items are not inside a `<channel>`: the items
/// wrapped in one, as lenient readers read them. `None` when there is a
/// channel or nothing to wrap.
fn add_missing_channel(doc: &str) -> Option<String> {
    if doc.contains("<channel") || !doc.contains("<item") {
        return None;
    }
    let tag = super::parse::root_start_tag(doc)?;
    let end = doc.rfind("</rss>")?;
    if end <= tag.end {
        return None;
    }
    Some(format!(
        "{}<channel>{}</channel>{}",
        doc.get(..=tag.end)?,
        doc.get(tag.end + 1..end)?,
        doc.get(end..)?
    ))
}

/// Recovery for a document that failed as XML; see the module doc.
/// `None` when it changes nothing.
pub fn recover(doc: &str) -> Option<String> {
    let escaped = escape_entities(doc);
    let balanced = balance_tags(&escaped);
    (balanced != doc).then_some(balanced)
}

/// Entity references XML itself defines.
const XML_ENTITIES: [&str; 5] = ["amp", "lt", "gt", "quot", "apos"];

/// Replaces HTML's named entities (undefined in XML: `&eacute;`,
/// `&nbsp;`, `&mdash;`) with character references, and escapes a `&` that
/// starts no reference at all. CDATA sections and comments are left
/// alone. Never expands anything defined in the document.
fn escape_entities(doc: &str) -> Cow<'_, str> {
    let bytes = doc.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = memchr::memchr3(b'&', b'<', b'<', bytes.get(i..).unwrap_or_default()) {
        let pos = i + at;
        let rest = doc.get(pos..).unwrap_or("");
        if rest.starts_with("<![CDATA[") {
            i = rest.find("]]>").map_or(bytes.len(), |e| pos + e + 3);
            continue;
        }
        if rest.starts_with("<!--") {
            i = rest.find("-->").map_or(bytes.len(), |e| pos + e + 3);
            continue;
        }
        if rest.starts_with('<') {
            i = pos + 1;
            continue;
        }
        // `&`: a reference is `&name;` or `&#digits;` / `&#xhex;`.
        let name_len = rest
            .get(1..)
            .unwrap_or("")
            .bytes()
            .take(40)
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'#')
            .count();
        let name = rest.get(1..1 + name_len).unwrap_or("");
        let terminated = rest.as_bytes().get(1 + name_len) == Some(&b';');
        let replacement = if terminated && name.starts_with('#') {
            let num = name.trim_start_matches('#');
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            match code.map(char::from_u32) {
                None => Some("&amp;".to_owned()),
                // A reference to a character XML forbids (`&#1;`, a
                // surrogate) fails the document: U+FFFD stands in.
                Some(c) if !c.is_some_and(crate::values::is_legal_char) => {
                    Some("&#xFFFD;".to_owned())
                }
                Some(_) => None,
            }
        } else if terminated && XML_ENTITIES.contains(&name) {
            None
        } else if terminated
            && let Some((cp, cp2)) = markup5ever::data::NAMED_ENTITIES.get(&format!("{name};")[..])
        {
            let mut r = format!("&#{cp};");
            if *cp2 != 0 {
                r.push_str(&format!("&#{cp2};"));
            }
            Some(r)
        } else {
            Some("&amp;".to_owned())
        };
        if let Some(r) = replacement {
            out.push_str(doc.get(copied..pos).unwrap_or(""));
            out.push_str(&r);
            // `&amp;` replaces only the `&`; a reference replaces itself.
            copied = if r == "&amp;" {
                pos + 1
            } else {
                pos + name_len + 2
            };
        }
        i = pos + 1;
    }
    if copied == 0 {
        return Cow::Borrowed(doc);
    }
    out.push_str(doc.get(copied..).unwrap_or(""));
    Cow::Owned(out)
}

/// Re-nests the elements: an end tag that closes nothing open is dropped,
/// one that closes an element further up closes the ones inside it too,
/// and elements still open at the end are closed. Stops copying at the
/// first error the tokenizer cannot get past.
fn balance_tags(doc: &str) -> String {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(doc);
    reader.config_mut().check_end_names = false;
    let mut out = String::with_capacity(doc.len() + 64);
    let mut stack: Vec<String> = Vec::new();
    let mut last = 0usize;
    loop {
        let event = reader.read_event();
        let pos = usize::try_from(reader.buffer_position()).unwrap_or(doc.len());
        let raw = doc.get(last..pos).unwrap_or("");
        match event {
            Ok(Event::Start(e)) => {
                stack.push(e.name().into_inner().to_owned());
                out.push_str(raw);
            }
            Ok(Event::End(e)) => {
                let name = e.name().into_inner().to_owned();
                if let Some(depth) = stack.iter().rposition(|n| *n == name) {
                    // Text before the tag, then the closes.
                    let lt = raw.rfind("</").unwrap_or(0);
                    out.push_str(raw.get(..lt).unwrap_or(""));
                    while stack.len() > depth {
                        if let Some(n) = stack.pop() {
                            out.push_str(&format!("</{n}>"));
                        }
                    }
                } else {
                    let lt = raw.rfind("</").unwrap_or(0);
                    out.push_str(raw.get(..lt).unwrap_or(""));
                }
            }
            Ok(Event::Eof) => {
                out.push_str(raw);
                break;
            }
            Ok(_) => out.push_str(raw),
            Err(_) => break,
        }
        last = pos;
    }
    while let Some(n) = stack.pop() {
        out.push_str(&format!("</{n}>"));
    }
    out
}

/// JSON text with every `\u` escape of a lone surrogate (half of a
/// UTF-16 pair, which serde_json rejects, failing the whole feed)
/// replaced by `\uFFFD`. `None` when there is none.
pub fn replace_lone_surrogates(doc: &str) -> Option<String> {
    fn unit(s: &str) -> Option<u16> {
        let hex = s.get(..4)?;
        u16::from_str_radix(hex, 16).ok()
    }
    let bytes = doc.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', bytes.get(i..).unwrap_or_default()) {
        let pos = i + at;
        if bytes.get(pos + 1) != Some(&b'u') {
            i = pos + 2; // another escape, `\\` included
            continue;
        }
        let Some(u) = doc.get(pos + 2..).and_then(unit) else {
            i = pos + 2;
            continue;
        };
        let high = (0xD800..0xDC00).contains(&u);
        let low = (0xDC00..0xE000).contains(&u);
        let paired = high
            && doc.get(pos + 6..pos + 8) == Some("\\u")
            && doc
                .get(pos + 8..)
                .and_then(unit)
                .is_some_and(|l| (0xDC00..0xE000).contains(&l));
        if paired {
            i = pos + 12;
        } else if high || low {
            out.push_str(doc.get(copied..pos).unwrap_or(""));
            out.push_str("\\uFFFD");
            copied = pos + 6;
            i = pos + 6;
        } else {
            i = pos + 6;
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(doc.get(copied..).unwrap_or(""));
    Some(out)
}

/// A JSON Feed with every field of the wrong type coerced to the type
/// JSON Feed 1.1 gives it (a number where a string belongs becomes a
/// string, `"tags": "a,b"` becomes `["a", "b"]`, a lone author object an
/// array) or dropped when it cannot be, and items that are not objects
/// dropped. `None` when the text is not a JSON object or nothing changed.
pub fn coerce_json_feed(doc: &str) -> Option<String> {
    use serde_json::{Map, Value};
    let mut v: Value = serde_json::from_str(doc).ok()?;
    let before = v.clone();
    fn string(v: &mut Map<String, Value>, key: &str) {
        let fixed = match v.get(key) {
            None | Some(Value::String(_)) | Some(Value::Null) => return,
            Some(Value::Number(n)) => Some(Value::String(n.to_string())),
            Some(Value::Bool(b)) => Some(Value::String(b.to_string())),
            Some(_) => None,
        };
        match fixed {
            Some(f) => {
                v.insert(key.to_owned(), f);
            }
            None => {
                v.remove(key);
            }
        }
    }
    fn author(v: Value) -> Option<Value> {
        match v {
            Value::String(s) => Some(serde_json::json!({ "name": s })),
            Value::Object(mut o) => {
                string(&mut o, "name");
                string(&mut o, "url");
                Some(Value::Object(o))
            }
            _ => None,
        }
    }
    fn authors(o: &mut Map<String, Value>) {
        if let Some(a) = o.remove("author")
            && let Some(a) = author(a)
        {
            o.insert("author".into(), a);
        }
        let list = match o.remove("authors") {
            Some(Value::Array(list)) => list.into_iter().filter_map(author).collect(),
            Some(other) => author(other).into_iter().collect(),
            None => return,
        };
        o.insert("authors".into(), Value::Array(list));
    }
    let feed = v.as_object_mut()?;
    string(feed, "version");
    if !feed.get("title").is_some_and(Value::is_string) {
        string(feed, "title");
        if !feed.get("title").is_some_and(Value::is_string) {
            feed.insert("title".into(), Value::String(String::new()));
        }
    }
    for key in [
        "home_page_url",
        "feed_url",
        "language",
        "description",
        "icon",
        "favicon",
    ] {
        string(feed, key);
    }
    authors(feed);
    let items = match feed.remove("items") {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter_map(|item| {
            let Value::Object(mut o) = item else {
                return None;
            };
            for key in [
                "id",
                "url",
                "external_url",
                "title",
                "content_html",
                "content_text",
                "summary",
                "date_published",
                "date_modified",
            ] {
                string(&mut o, key);
            }
            authors(&mut o);
            let tags = match o.remove("tags") {
                Some(Value::String(s)) => Some(
                    s.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| Value::String(t.to_owned()))
                        .collect(),
                ),
                Some(Value::Array(list)) => Some(
                    list.into_iter()
                        .filter_map(|t| match t {
                            Value::String(s) => Some(Value::String(s)),
                            Value::Number(n) => Some(Value::String(n.to_string())),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            };
            if let Some(tags) = tags {
                o.insert("tags".into(), Value::Array(tags));
            }
            let attachments = match o.remove("attachments") {
                Some(Value::Array(list)) => Some(list),
                Some(Value::Object(a)) => Some(vec![Value::Object(a)]),
                _ => None,
            };
            if let Some(list) = attachments {
                let list: Vec<Value> = list
                    .into_iter()
                    .filter_map(|a| {
                        let Value::Object(mut a) = a else { return None };
                        string(&mut a, "url");
                        string(&mut a, "mime_type");
                        string(&mut a, "title");
                        if !a.get("url").is_some_and(Value::is_string) {
                            return None;
                        }
                        if !a.get("mime_type").is_some_and(Value::is_string) {
                            a.insert(
                                "mime_type".into(),
                                Value::String("application/octet-stream".into()),
                            );
                        }
                        if !a.get("size_in_bytes").is_none_or(Value::is_u64) {
                            a.remove("size_in_bytes");
                        }
                        Some(Value::Object(a))
                    })
                    .collect();
                o.insert("attachments".into(), Value::Array(list));
            }
            Some(Value::Object(o))
        })
        .collect();
    feed.insert("items".into(), Value::Array(items));
    (v != before).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_normalised() {
        let (doc, found) = normalize_namespaces(
            r#"<rss xmlns:content="http://purl.org/rss/1.0/modules/content" xmlns:media='http://search.yahoo.com/mrss' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns="http://backend.userland.com/rss2">"#,
        );
        assert_eq!(
            doc,
            r#"<rss xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:media="http://search.yahoo.com/mrss/" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns="http://purl.org/rss/1.0/">"#
        );
        assert!(!found.atom03);
        let (doc, found) =
            normalize_namespaces(r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#">"#);
        assert_eq!(
            doc,
            r#"<feed version="0.3" xmlns="http://www.w3.org/2005/Atom">"#
        );
        assert!(found.atom03);
        let clean = r#"<rss xmlns:dc="http://purl.org/dc/elements/1.1/">"#;
        assert!(matches!(normalize_namespaces(clean).0, Cow::Borrowed(_)));
    }

    #[test]
    fn entities_are_made_xml() {
        assert_eq!(
            escape_entities(
                "a &eacute; &nbsp;&mdash; b & c &amp; &#233; &#x41; &bogus; &#zz; <![CDATA[&x]]> &"
            ),
            "a &#233; &#160;&#8212; b &amp; c &amp; &#233; &#x41; &amp;bogus; &amp;#zz; <![CDATA[&x]]> &amp;"
        );
        assert!(matches!(escape_entities("a &amp; b"), Cow::Borrowed(_)));
    }

    #[test]
    fn tags_are_balanced() {
        assert_eq!(
            balance_tags("<rss><channel><item><title>a</b></title><p>x</item></channel></rss>"),
            "<rss><channel><item><title>a</title><p>x</p></item></channel></rss>"
        );
        assert_eq!(balance_tags("<a><b>t"), "<a><b>t</b></a>");
    }

    #[test]
    fn the_raw_html_precheck_is_conservative() {
        for raw in [
            "<description><p>x</p></description>",
            "<content:encoded>a <b>b</b></content:encoded>",
            "<description type=\"x\"><br></description>",
        ] {
            assert!(may_have_raw_html(raw), "{raw}");
            assert!(matches!(wrap_raw_html(raw), Cow::Owned(_)), "{raw}");
        }
        // Doubt is enough: CDATA followed by markup is looked at closely.
        assert!(may_have_raw_html(
            "<description><![CDATA[x]]><b>y</b></description>"
        ));
        for clean in [
            "<description>&lt;p&gt;x</description>",
            "<description><![CDATA[<p>x</p>]]></description>",
            "<itunes:summary>plain</itunes:summary><description/>",
            "<title>summary of the description</title>",
        ] {
            assert!(!may_have_raw_html(clean), "{clean}");
        }
    }

    #[test]
    fn raw_html_in_descriptions_becomes_cdata() {
        let doc = "<rss><channel><item><description><p>Hi <br> there]]></p></description>\
                   <description>&lt;p&gt;escaped</description><description><![CDATA[<b>x</b>]]></description></item></channel></rss>";
        assert_eq!(
            wrap_raw_html(doc),
            "<rss><channel><item><description><![CDATA[<p>Hi <br> there]]]]><![CDATA[></p>]]></description>\
             <description>&lt;p&gt;escaped</description><description><![CDATA[<b>x</b>]]></description></item></channel></rss>"
        );
    }

    #[test]
    fn atom_text_constructs_are_made_readable() {
        for (input, want) in [
            (
                r#"<title type="">T</title>"#,
                r#"<title type="text">T</title>"#,
            ),
            (
                r#"<title type="text/plain">T</title>"#,
                r#"<title type="text">T</title>"#,
            ),
            (
                r#"<summary type="application/xhtml+xml"><div>x</div></summary>"#,
                r#"<summary type="xhtml"><div>x</div></summary>"#,
            ),
            (
                r#"<content type="text/html" mode="escaped">&lt;p&gt;x</content>"#,
                r#"<content type="html">&lt;p&gt;x</content>"#,
            ),
            (
                r#"<content type="text/html" mode="base64">PHA+aGk8L3A+</content>"#,
                r#"<content type="html">&lt;p&gt;hi&lt;/p&gt;</content>"#,
            ),
            (
                r#"<content type="image/png" mode="base64">iVBORw0=</content>"#,
                "",
            ),
            (r#"<summary></summary><title/>"#, ""),
            (
                r#"<title type="image/png">T</title>"#,
                r#"<title type="text">T</title>"#,
            ),
            (r#"<title>Plain</title>"#, r#"<title>Plain</title>"#),
            (
                r#"<content xml:base="/x/" type="html">h</content>"#,
                r#"<content xml:base="/x/" type="html">h</content>"#,
            ),
        ] {
            assert_eq!(atom_text_constructs(input), want, "{input}");
        }
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(
            replace_lone_surrogates(r#"{"a":"x\ud800y\uDC00z\ud83d\ude00\\ud800"}"#).as_deref(),
            Some(r#"{"a":"x\uFFFDy\uFFFDz\ud83d\ude00\\ud800"}"#)
        );
        assert_eq!(replace_lone_surrogates(r#"{"a":"\u00e9"}"#), None);
        assert_eq!(
            escape_entities("a&#1;b&#xD800;c&#65;"),
            "a&#xFFFD;b&#xFFFD;c&#65;"
        );
    }

    #[test]
    fn json_fields_of_the_wrong_type_are_coerced() {
        let doc = r#"{"version":"https://jsonfeed.org/version/1.1","title":5,"items":[
            {"id":1,"title":"a","tags":"x, y","author":"Ann","attachments":{"url":"https://e.example/a.mp3"}},
            "junk",
            {"id":"2","tags":[1,"z",null],"authors":{"name":"Bo"},"date_published":20240101}]}"#;
        let v: serde_json::Value = serde_json::from_str(&coerce_json_feed(doc).unwrap()).unwrap();
        assert_eq!(v["title"], "5");
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["id"], "1");
        assert_eq!(items[0]["tags"], serde_json::json!(["x", "y"]));
        assert_eq!(items[0]["author"]["name"], "Ann");
        assert_eq!(
            items[0]["attachments"][0]["mime_type"],
            "application/octet-stream"
        );
        assert_eq!(items[1]["tags"], serde_json::json!(["1", "z"]));
        assert_eq!(items[1]["authors"][0]["name"], "Bo");
        assert_eq!(items[1]["date_published"], "20240101");
    }
}
