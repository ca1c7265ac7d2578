//! The benchmark feeds, shared by `poll` and `stages`: deterministic RSS
//! documents, so both measure the same work.

use chrono::{TimeZone, Utc};

pub const ENTRIES_PER_FEED: usize = 20;

/// A deterministic pseudo-random word list, so every feed and entry has
/// its own text without the bench depending on a corpus.
const WORDS: &[&str] = &[
    "river", "delta", "stream", "current", "harbour", "signal", "archive", "update", "lantern",
    "meadow", "quartz", "protocol", "garden", "engine", "orbit", "pillar", "timber", "canvas",
    "ledger", "compass", "village", "summit", "needle", "thunder", "marble", "willow", "falcon",
    "copper", "ember", "glacier", "horizon", "island", "jasmine", "kernel", "lattice", "mosaic",
    "nectar", "oasis", "paddle", "quiver", "ripple", "saddle", "tundra", "umbrella", "velvet",
    "walnut", "yonder", "zephyr", "the", "a", "of", "and", "to", "in", "is", "for", "with", "on",
];

fn sentence(rng: &mut fastrand::Rng, words: usize) -> String {
    let mut s = String::with_capacity(words * 8);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.usize(..WORDS.len())]);
    }
    s
}

/// One RSS 2.0 document: 20 items with guid, title, link, pubDate and a
/// few paragraphs of HTML (a link, a relative image, attributes the
/// sanitiser strips) in an escaped `<description>`, as most feeds write it.
pub fn render_feed(id: usize, base: &str) -> String {
    let mut rng = fastrand::Rng::with_seed(id as u64);
    let newest = Utc
        .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("fixed date");
    let mut out = String::with_capacity(24 * 1024);
    out.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <rss version=\"2.0\">\n<channel>\n\
         <title>Bench feed {id}: {}</title>\n\
         <link>{base}/site/{id}/</link>\n\
         <description>{}</description>\n\
         <language>en</language>\n\
         <lastBuildDate>{}</lastBuildDate>\n",
        sentence(&mut rng, 3),
        sentence(&mut rng, 12),
        newest.to_rfc2822()
    ));
    for i in 0..ENTRIES_PER_FEED {
        let published = newest - chrono::Duration::minutes((i * 97 + id % 60) as i64);
        let mut html = String::with_capacity(1200);
        for p in 0..3 {
            html.push_str("<p class=\"body\">");
            html.push_str(&sentence(&mut rng, 30 + p * 5));
            if p == 1 {
                html.push_str(&format!(
                    " <a href=\"https://example.org/ref/{id}/{i}\" onclick=\"track()\">{}</a>",
                    sentence(&mut rng, 3)
                ));
            }
            html.push_str(".</p>");
        }
        html.push_str(&format!(
            "<p><img src=\"/images/{id}/{i}.jpg\" alt=\"{}\" width=\"640\" height=\"360\"></p>",
            sentence(&mut rng, 2)
        ));
        out.push_str(&format!(
            "<item>\n<title>{}</title>\n\
             <link>{base}/site/{id}/posts/{i}.html</link>\n\
             <guid isPermaLink=\"false\">tag:bench.example,2026:feed-{id}-item-{i}</guid>\n\
             <pubDate>{}</pubDate>\n\
             <description>{}</description>\n</item>\n",
            sentence(&mut rng, 6),
            published.to_rfc2822(),
            escape(&html)
        ));
    }
    out.push_str("</channel>\n</rss>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
