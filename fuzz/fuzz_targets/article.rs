//! An article page's HTML → `Extractor::extract` (site rules → prepare →
//! dom_smoothie or the fallback → finish → sanitise).
//!
//! The first input byte chooses the options (page URL, an entry title and
//! author to strip, a site rule), so the title/byline rules and the rule
//! path are exercised too. Beyond "no panic", it checks the one promise
//! that makes extraction safe to be wrong: the output went through the
//! sanitiser last, so no `<script>` survives (text is escaped, so the
//! string can only appear as a tag).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tributary::model::SiteRule;
use tributary::pipeline::extract::{ExtractOptions, Extractor};
use url::Url;

fuzz_target!(|data: &[u8]| {
    static EXTRACTOR: OnceLock<Extractor> = OnceLock::new();
    static URL: OnceLock<Url> = OnceLock::new();
    static RULES: OnceLock<Vec<SiteRule>> = OnceLock::new();
    let extractor = EXTRACTOR.get_or_init(|| {
        // libfuzzer-sys's panic hook aborts on every panic, even a caught
        // one. The extractor deliberately catches dom_smoothie's panics
        // (and falls back), so only a panic that escapes `extract` may
        // count: libfuzzer-sys still aborts on those.
        std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
        Extractor::new()
    });
    let url = URL.get_or_init(|| {
        Url::parse("https://news.example.com/2024/05/story.html").expect("static url")
    });
    let rules = RULES.get_or_init(|| {
        vec![SiteRule {
            host: "news.example.com".into(),
            keep: vec![],
            drop: vec![".ad, aside".into()],
        }]
    });
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let html = String::from_utf8_lossy(body);
    let authors = vec!["Jane Doe".to_owned()];
    let opts = ExtractOptions {
        url: (flags & 1 != 0).then_some(url),
        entry_title: (flags & 2 != 0).then_some("Story"),
        entry_authors: if flags & 4 != 0 { &authors } else { &[] },
        rules: if flags & 8 != 0 { rules } else { &[] },
    };
    if let Ok(article) = extractor.extract(&html, &opts) {
        let lower = article.html.to_ascii_lowercase();
        assert!(!lower.contains("<script"), "script survived: {}", article.html);
    }
});
