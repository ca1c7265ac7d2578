//! Value safety: the rules that make a feed's values safe to store and to
//! serve, whatever the feed sent — plausible dates, text without characters
//! XML or readers reject, length caps, and a size cap for content.
//!
//! The parse stage applies them once, to every entry it hands on; the
//! renderers in `serve` apply them again on the way out, because entries
//! stored by older versions never went through the first pass. Pure
//! functions on plain values, so both sides share one definition.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

/// Characters a title keeps (a headline, not an article).
pub const MAX_TITLE_CHARS: usize = 500;
/// Characters an author name keeps.
pub const MAX_NAME_CHARS: usize = 200;
/// Characters a category keeps.
pub const MAX_CATEGORY_CHARS: usize = 200;
/// Authors an entry keeps.
pub const MAX_AUTHORS: usize = 32;
/// Categories an entry keeps.
pub const MAX_CATEGORIES: usize = 64;
/// Bytes a URL keeps: longer ones are dropped, not cut (a cut URL points
/// somewhere else).
pub const MAX_URL_BYTES: usize = 4096;
/// The default `[retention] max_content_size`: content beyond it is cut
/// with a visible marker.
pub const DEFAULT_MAX_CONTENT: usize = 256 * 1024;

/// How far ahead of now a date may be and still be believed: feeds in
/// other time zones, clocks a little off.
const FUTURE_SLACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Whether a feed's date can be believed: not before 1970 (no feed item is
/// older than the format, and year 0 or negative years are placeholders),
/// and not more than a day ahead of `now`. Implausible dates are dropped;
/// the store then falls back to the time the entry was first seen.
pub fn plausible_date(date: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    date >= DateTime::UNIX_EPOCH && date <= now + FUTURE_SLACK
}

/// Whether `c` may appear in text we store or serve: XML 1.0's `Char`
/// production minus what it only discourages — C0 controls other than tab,
/// newline and carriage return, DEL and the C1 controls, and the
/// noncharacters (U+FDD0–U+FDEF and the last two code points of every
/// plane). Lone surrogates cannot occur in a Rust string; decoding turned
/// them into U+FFFD.
pub fn is_legal_char(c: char) -> bool {
    let u = u32::from(c);
    match u {
        0x09 | 0x0A | 0x0D => true,
        0x00..=0x1F | 0x7F..=0x9F => false,
        0xFDD0..=0xFDEF => false,
        _ => u & 0xFFFE != 0xFFFE,
    }
}

/// `s` without the characters [`is_legal_char`] rejects; borrows when
/// there are none (nearly always).
pub fn legal_text(s: &str) -> Cow<'_, str> {
    // Fast path over bytes (vectorised): every illegal character starts
    // with a C0/DEL byte, 0xC2 (C1 controls), 0xEF (U+FDD0–U+FFFF) or a
    // four-byte lead (the other planes' noncharacters); text without
    // these bytes is legal without decoding a character.
    let suspect = |b: u8| {
        (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
            || b == 0x7F
            || b == 0xC2
            || b == 0xEF
            || b >= 0xF0
    };
    // A fold without early exit, so the loop vectorises.
    let any_suspect = s.bytes().fold(false, |seen, b| seen | suspect(b));
    if !any_suspect || s.chars().all(is_legal_char) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().filter(|&c| is_legal_char(c)).collect())
    }
}

/// [`legal_text`] in place.
pub fn make_legal(s: &mut String) {
    if let Cow::Owned(clean) = legal_text(s) {
        *s = clean;
    }
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn cap_chars(s: &mut String, max: usize) {
    if let Some((at, _)) = s.char_indices().nth(max) {
        // Leave room for the ellipsis within the cap.
        let cut = s
            .char_indices()
            .nth(max.saturating_sub(1))
            .map_or(at, |(i, _)| i);
        s.truncate(cut);
        s.push('…');
    }
}

/// A plain-text field made safe: legal characters, one trimmed line when
/// `one_line`, at most `max` characters; `None` when nothing is left.
pub fn safe_text(s: &str, max: usize) -> Option<String> {
    let mut out = legal_text(s).trim().to_owned();
    cap_chars(&mut out, max);
    (!out.is_empty()).then_some(out)
}

/// Makes a list of short text values safe: each made legal and capped,
/// blanks and repeats dropped, at most `max_items` kept.
pub fn safe_list(list: &mut Vec<String>, max_chars: usize, max_items: usize) {
    let mut out: Vec<String> = Vec::with_capacity(list.len().min(max_items));
    for v in list.drain(..) {
        if out.len() >= max_items {
            break;
        }
        if let Some(v) = safe_text(&v, max_chars)
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
    *list = out;
}

/// HTML cut to at most about `max` bytes, with a visible note saying so;
/// borrowed when it fits. The cut never falls inside a tag, a character
/// or an entity; elements left open are closed by the sanitiser's HTML
/// parser, which every output runs content through after this.
pub fn cap_html(html: &str, max: usize) -> Cow<'_, str> {
    if html.len() <= max {
        return Cow::Borrowed(html);
    }
    let mut cut = max;
    while !html.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &html[..cut];
    // Inside a tag (a `<` after the last `>`): cut before it.
    let head = match (head.rfind('<'), head.rfind('>')) {
        (Some(lt), gt) if gt.is_none_or(|gt| gt < lt) => &head[..lt],
        _ => head,
    };
    // Inside an entity (`&amp` without its `;`): cut before it.
    let head = match head.rfind('&') {
        Some(amp) if !head[amp..].contains(';') && head.len() - amp <= 32 => &head[..amp],
        _ => head,
    };
    let kb = html.len().div_ceil(1024);
    Cow::Owned(format!(
        "{head}<p><em>[Cut here by Tributary: this entry is {kb} KB; the full text is at its link.]</em></p>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_outside_1970_to_tomorrow_are_implausible() {
        let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert!(plausible_date(at("1970-01-01T00:00:00Z"), now));
        assert!(plausible_date(at("2026-06-01T23:59:00Z"), now));
        assert!(!plausible_date(at("2026-06-02T00:00:01Z"), now));
        assert!(!plausible_date(at("1969-12-31T23:59:59Z"), now));
        assert!(!plausible_date(DateTime::<Utc>::MIN_UTC, now));
        assert!(!plausible_date(DateTime::<Utc>::MAX_UTC, now));
    }

    #[test]
    fn illegal_characters_are_dropped() {
        assert_eq!(
            legal_text("a\u{1}b\u{7}c\u{1b}d\u{7f}e\u{85}f\u{fdd0}g\u{fffe}h\u{1ffff}i\t\n\r"),
            "abcdefghi\t\n\r"
        );
        assert!(matches!(legal_text("plain ✓ text"), Cow::Borrowed(_)));
        assert!(is_legal_char('\u{fffd}'));
        assert!(is_legal_char('\u{10fffd}'));
        assert!(!is_legal_char('\u{10ffff}'));
        assert!(!is_legal_char('\0'));
    }

    #[test]
    fn caps_cut_on_characters_with_an_ellipsis() {
        let mut s = "ééééé".to_owned();
        cap_chars(&mut s, 3);
        assert_eq!(s, "éé…");
        let mut s = "abc".to_owned();
        cap_chars(&mut s, 3);
        assert_eq!(s, "abc");
        assert_eq!(safe_text(" \u{1} ", 10), None);
        let mut list = vec![
            "a".into(),
            " a ".into(),
            "".into(),
            "b\u{0}".into(),
            "c".into(),
        ];
        safe_list(&mut list, 10, 2);
        assert_eq!(list, ["a", "b"]);
    }

    #[test]
    fn html_is_cut_outside_tags_and_entities_with_a_note() {
        assert!(matches!(cap_html("<p>short</p>", 100), Cow::Borrowed(_)));
        let html = format!("<p>{}</p><p>tail &amp; more</p>", "x".repeat(100));
        for max in 0..html.len() {
            let out = cap_html(&html, max);
            let head = out.split("<p><em>[Cut here").next().unwrap();
            assert!(head.len() <= max, "{max}: {out}");
            assert!(!head.ends_with("&am") && !head.ends_with("<p"), "{out}");
            assert!(out.contains("this entry is 1 KB"), "{out}");
        }
        let multibyte = "é".repeat(1000);
        assert!(cap_html(&multibyte, 7).starts_with("ééé<p>"));
    }
}
