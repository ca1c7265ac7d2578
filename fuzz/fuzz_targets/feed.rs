//! Feed bytes → `parse_feed` → entry keys → public entry ids.
//!
//! The first input byte picks a charset hint (as an HTTP header would give
//! one); the rest is the body. Beyond "no panic", it checks what the store
//! relies on: keys are non-empty, bounded, unique within one document, and
//! every key maps to a well-formed `urn:uuid:` id.

#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tributary::pipeline::parse::{MAX_KEY_LEN, parse_feed};
use tributary::pipeline::sanitize::Sanitizer;

const CHARSETS: [Option<&str>; 6] = [
    None,
    Some("utf-8"),
    Some("iso-8859-1"),
    Some("windows-1251"),
    Some("shift_jis"),
    Some("not-a-charset"),
];
const FEED_URL: &str = "https://feeds.example.com/blog/feed.xml";

fuzz_target!(|data: &[u8]| {
    static SANITIZER: OnceLock<Sanitizer> = OnceLock::new();
    let sanitizer = SANITIZER.get_or_init(|| {
        // libfuzzer-sys's panic hook aborts on every panic, even one that
        // is caught. `parse_feed` deliberately catches feed-rs's panics
        // (they become `ParseError::ParserPanic`), so only a panic that
        // escapes it may count as a crash: libfuzzer-sys still aborts on
        // those, after this hook has printed where it happened.
        std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
        Sanitizer::new()
    });
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let charset = CHARSETS[usize::from(pick) % CHARSETS.len()];
    let Ok(feed) = parse_feed(body, charset, FEED_URL, sanitizer) else {
        return;
    };
    let mut seen = HashSet::new();
    for entry in &feed.entries {
        let key = entry.key.as_str();
        assert!(!key.is_empty(), "empty key");
        assert!(key.len() <= MAX_KEY_LEN, "key of {} bytes", key.len());
        assert!(seen.insert(key), "duplicate key {key:?} in one document");
        let uid = tributary::store::entry_uid(FEED_URL, key);
        assert_eq!(uid.len(), "urn:uuid:".len() + 36, "{uid}");
    }
});
