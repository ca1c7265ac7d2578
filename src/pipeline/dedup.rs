//! The dedup stage: when are two entries one story? Pure functions, no I/O.
//!
//! A **story** is a group of entries (feed items, in one feed or in many)
//! that are copies of one article; [`same_story`] is the one rule that
//! links two of them and [`group`] closes it transitively. Two questions,
//! two tools:
//!
//! - **Same URL** ([`url_key`], [`canonical_candidates`]): links that differ
//!   only in spelling (scheme, host case, `www.`/`m.`/`amp.`, default port,
//!   trailing slash, fragment, query order, tracking parameters, AMP
//!   variants) get the same key, and an entry is findable under the key of
//!   its link, of the URL its article was finally fetched from, and of the
//!   page's `<link rel=canonical>`/`og:url`.
//! - **Same text under another URL** ([`analyse`], [`is_near_duplicate`]):
//!   a syndicated wire story, a mirror, an AMP copy. The cleaned article text
//!   (plain text, e.g. [`super::sanitize::html_to_text`] of the extracted
//!   article) is cut into overlapping [`SHINGLE`]-word shingles and
//!   summarised twice: a 64-bit **SimHash** ([`Fingerprint`]) and a
//!   128-slot **MinHash** ([`Sketch`]). The decision rests on the MinHash
//!   estimate of the Jaccard similarity of the two shingle sets — a
//!   measure of *shared text*, which same-topic or same-template stories do
//!   not reach — plus a length-ratio and a publication-gap sanity check.
//!   SimHash alone was not enough: it measures a weighted cosine, and a
//!   Hamming distance small enough to exclude same-template texts also
//!   misses copies with different boilerplate.
//!
//! **Precision first.** Merging two different stories loses one, which is
//! worse than showing a duplicate. So texts under [`MIN_WORDS`] words are
//! never judged ([`analyse`] returns `None`), and the thresholds
//! ([`MIN_JACCARD`], [`MIN_LENGTH_RATIO`], [`MAX_PUBLISHED_GAP_SECS`]) were
//! set with margin against the labelled pairs in `tests/fixtures/dedup/`
//! (`cargo test --test dedup_quality -- --nocapture` prints precision and
//! recall).
//!
//! # What a store keeps per entry
//!
//! | column | type | from |
//! |---|---|---|
//! | `dedup_version` | INTEGER | [`VERSION`]; re-analyse rows with another version |
//! | `words` | INTEGER | [`Fingerprint::words`] |
//! | `simhash` | INTEGER | [`Fingerprint::simhash`] `as i64` |
//! | `minhash` | BLOB (256 bytes) | [`Sketch::to_bytes`] |
//! | one row per key in a side table `(key INTEGER, entry_id)`, indexed on `key` | INTEGER | [`Sketch::lsh_keys`] (16 per entry) and, if wanted, [`bands`] of the SimHash |
//! | one row per URL key in a side table `(url_key TEXT, entry_id)` | TEXT | [`canonical_candidates`] |
//!
//! # For the integrator
//!
//! - **Which text.** Analyse the best plain text the entry has: the
//!   extracted article once fetched, else the feed's content
//!   ([`super::sanitize::html_to_text`] of either). When the article
//!   arrives later, re-analyse and update the row (the entry's id does not
//!   change). Titles are not part of the text: syndicated copies rewrite
//!   them, and daily reports share them.
//! - **Candidates.** For a new entry, the entries sharing any of its
//!   [`Sketch::lsh_keys`] (16 indexed integers), restricted to a recent
//!   window (e.g. published or first seen within [`MAX_PUBLISHED_GAP_SECS`]);
//!   confirm each with [`is_near_duplicate`] (about 30 ns). Pairs with
//!   Jaccard 0.5 share a key with probability 0.99; in the fixtures every
//!   duplicate pair did. The SimHash [`bands`] only find near-identical
//!   copies (12 of 66 fixture duplicates): keep them if you want a cheap
//!   exact-copy index, not as the only one.
//! - **One rule for every pair**, in one feed or across feeds
//!   ([`same_story`]): a feed's own ids say which *item* an update belongs
//!   to, not that two items are two stories (a roundup lists an article
//!   twice; a site lists it in two sections). A shared URL key is weighed
//!   with the two listings (titles, dates), because a link that several
//!   differently titled items share is a programme or section page.
//! - **A story is the whole group.** Merging is transitive: A ~ B and
//!   B ~ C make A, B and C one story even when A ≉ C. A store keeps every
//!   member's evidence (URL keys, listings, prints) so that whichever copy
//!   arrives first the stories end as [`group`] makes them, under the
//!   earliest first-seen member's id.
//! - **Versions.** Rows whose `dedup_version` is not [`VERSION`] are not
//!   compared; re-analyse them from their stored text.
//!
//! Cost: [`analyse`] takes about 0.2 ms for a 1,000-word text in a release
//! build (the `fingerprinting_cost` test prints it).
//!
//! # Why the stored values are stable
//!
//! Every hash is SipHash-1-3 with the fixed keys [`SIP_KEYS`] (never std's
//! `DefaultHasher`, whose output may change between Rust releases) or
//! plain integer arithmetic with constants written below, so a fingerprint
//! computed today compares with one computed by any later build. The input
//! to the hashes depends on Unicode tables: NFKC (`icu_normalizer`),
//! lowercasing (std) and UAX #29 word boundaries (`unicode-segmentation`);
//! their updates only concern newly assigned characters. Tests pin
//! fingerprint values: a change that moves them must bump [`VERSION`].

use std::borrow::Cow;
use std::hash::Hasher;

use icu_normalizer::ComposingNormalizerBorrowed;
use siphasher::sip::SipHasher13;
use unicode_segmentation::UnicodeSegmentation;
use url::{Host, Url};

use super::sanitize;

// ---------------------------------------------------------------------------
// Same URL
// ---------------------------------------------------------------------------

/// Query parameters ignored when comparing URLs besides the sanitiser's
/// tracking parameters ([`sanitize::is_tracking_param`]), compared without
/// case: a key may drop a parameter that a served link keeps (`ref`,
/// `share`), because for *comparison* they never name another page.
const COMPARISON_ONLY_PARAMS: &[&str] = &[
    "gbraid",
    "wbraid",
    "ttclid",
    "li_fat_id",
    "igsh",
    "wt.mc_id",
    "ref",
    "referrer",
    "cmpid",
    "ocid",
    "ncid",
    "icid",
    "smid",
    "spm",
    "share",
    "s_kwcid",
    "ef_id",
    "oly_anon_id",
    "oly_enc_id",
    "vero_id",
    "vero_conv",
    "rb_clickid",
    "at_medium",
    "at_campaign",
    "fb_action_ids",
    "fb_action_types",
    "fb_source",
    "fb_ref",
    "_openstat",
];

/// Host labels that name a variant of the same site, stripped from the
/// front of the host (repeatedly) while two labels remain.
fn is_variant_label(label: &str) -> bool {
    matches!(label, "www" | "m" | "mobile" | "amp")
        || label
            .strip_prefix("www")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The comparison key for "the same page": `None` for anything but an
/// absolute `http(s)` URL with a host.
///
/// The key is itself a URL (always `https`), so `url_key(&url_key(x)?) ==
/// url_key(x)`, and it reads well in a database; but it is a *key*, not a
/// link to follow (the `https`, the missing `www.` may not exist): store
/// the entry's real link separately. Normalised:
///
/// - scheme (`http` ≡ `https`), host case, a trailing dot, user info, the
///   default port (other ports are kept: another port is another server);
/// - `www.`, `wwwN.`, `m.`, `mobile.`, `amp.` host prefixes;
/// - empty path segments and the trailing slash;
/// - AMP variants: a trailing or leading `amp` path segment, `.amp` before
///   the extension, `?amp`, `?amp=1`, `?outputType=amp`, and the AMP caches
///   (`*.cdn.ampproject.org/c/s/…`, `google.com/amp/s/…`);
/// - the query: tracking parameters ([`COMPARISON_ONLY_PARAMS`] and the
///   sanitiser's, `utm_*` among them) and
///   empty pairs removed, the rest sorted; percent-escapes upper-cased;
/// - the fragment, unless it is a route (`#!…`, `#/…`).
///
/// It does not guess further (`/a.html` and `/a` stay apart, and so do
/// `?id=1` and `/id/1`): two different stories under one key would be
/// merged, which is worse than a duplicate left visible.
///
/// Built on `url` rather than the `urlnorm` crate, whose key joins host,
/// path segments and query tokens with `:` into one string: `/story?id=5`
/// and `/story/id/5` get the same key, as do `/a:b` and `/a/b`, `:8443`
/// and the default port, `.pdf` and `.html`; it also keeps `UTM_SOURCE`,
/// knows no AMP forms, and its key is not a URL.
pub fn url_key(url: &str) -> Option<String> {
    url_key_of(&Url::parse(url.trim()).ok()?)
}

/// [`url_key`] of a URL already parsed: the parse stage has every entry
/// link as a [`Url`], and parsing it again cost every entry of every poll.
pub fn url_key_of(url: &Url) -> Option<String> {
    let inner = unwrap_amp_cache(url);
    let url = inner.as_ref().unwrap_or(url);
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = match url.host()? {
        Host::Domain(d) => strip_variant_labels(d.trim_end_matches('.')).to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => format!("[{ip}]"),
    };
    if host.is_empty() {
        return None;
    }
    // `port()` is `None` for the scheme's default port; moving to https
    // then drops an explicit `:443` (the re-parse below does that).
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();

    let mut segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    // `/story/amp` and `/amp/story`; a loop so the result is a fixed point.
    while segments.len() > 1
        && segments
            .last()
            .is_some_and(|s| s.eq_ignore_ascii_case("amp"))
    {
        segments.pop();
    }
    while segments.len() > 1 && segments[0].eq_ignore_ascii_case("amp") {
        segments.remove(0);
    }
    let mut path = String::with_capacity(url.path().len());
    for (i, segment) in segments.iter().enumerate() {
        path.push('/');
        if i + 1 == segments.len() {
            path.push_str(&strip_amp_extension(segment));
        } else {
            path.push_str(segment);
        }
    }
    if path.is_empty() {
        path.push('/');
    }

    let mut pairs: Vec<&str> = url
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !is_noise_param(p))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();

    let mut key = format!("https://{host}{port}{}", upper_escapes(&path));
    if !pairs.is_empty() {
        key.push('?');
        key.push_str(&upper_escapes(&pairs.join("&")));
    }
    if let Some(fragment) = url.fragment().filter(|f| f.starts_with(['!', '/'])) {
        key.push('#');
        key.push_str(fragment);
    }
    // Re-parse so the key is spelled exactly as `url` spells it (and an
    // explicit default port goes); parsing a serialised URL is stable.
    Url::parse(&key).ok().map(String::from)
}

/// `*.cdn.ampproject.org/c/s/example.com/path` (and `/v/`, `/i/`, without
/// `s/` for http) and `www.google.com/amp/s/example.com/path`: the
/// publisher's URL inside an AMP cache URL.
fn unwrap_amp_cache(url: &Url) -> Option<Url> {
    let host = url.host_str()?;
    let rest = if host.ends_with(".cdn.ampproject.org") || host == "cdn.ampproject.org" {
        let path = url.path();
        ["/c/", "/v/", "/i/", "/wp/"]
            .iter()
            .find_map(|p| path.strip_prefix(p))?
    } else if matches!(host, "google.com" | "www.google.com") {
        url.path().strip_prefix("/amp/")?
    } else {
        return None;
    };
    let (scheme, rest) = match rest.strip_prefix("s/") {
        Some(r) => ("https", r),
        None => ("http", rest),
    };
    let mut inner = format!("{scheme}://{rest}");
    if let Some(q) = url.query() {
        inner.push('?');
        inner.push_str(q);
    }
    Url::parse(&inner).ok().filter(|u| u.host_str().is_some())
}

fn strip_variant_labels(mut host: &str) -> &str {
    while let Some((label, rest)) = host.split_once('.') {
        if !is_variant_label(label) || !rest.contains('.') {
            break;
        }
        host = rest;
    }
    host
}

/// `story.amp` → `story`, `story.amp.html` → `story.html`.
fn strip_amp_extension(segment: &str) -> Cow<'_, str> {
    let lower = segment.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix(".amp").filter(|s| !s.is_empty()) {
        return Cow::Owned(segment[..stem.len()].to_owned());
    }
    if let Some(i) = lower.find(".amp.").filter(|&i| i > 0) {
        return Cow::Owned(format!("{}{}", &segment[..i], &segment[i + 4..]));
    }
    Cow::Borrowed(segment)
}

/// A tracking parameter, or an AMP marker (`amp`, `amp=1`, `outputType=amp`).
fn is_noise_param(pair: &str) -> bool {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    let name = name.to_ascii_lowercase();
    let value = value.to_ascii_lowercase();
    sanitize::is_tracking_param(&name)
        || COMPARISON_ONLY_PARAMS.contains(&name.as_str())
        || (matches!(name.as_str(), "amp" | "_amp") && matches!(value.as_str(), "" | "1" | "true"))
        || (name == "outputtype" && value == "amp")
}

/// `%2f` → `%2F`: the same octet, spelled one way.
fn upper_escapes(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let needs = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && w[1].is_ascii_hexdigit()
            && w[2].is_ascii_hexdigit()
            && (w[1].is_ascii_lowercase() || w[2].is_ascii_lowercase())
    });
    if !needs {
        return Cow::Borrowed(s);
    }
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + 2 < out.len() {
        if out[i] == b'%' && out[i + 1].is_ascii_hexdigit() && out[i + 2].is_ascii_hexdigit() {
            out[i + 1] = out[i + 1].to_ascii_uppercase();
            out[i + 2] = out[i + 2].to_ascii_uppercase();
            i += 3;
        } else {
            i += 1;
        }
    }
    // Only ASCII bytes changed, so this is still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| s.to_owned()))
}

/// The URL keys under which an entry is findable: its link, the URL its
/// article was finally fetched from (after redirects), and the page's
/// `<link rel="canonical">` or `og:url`; each through [`url_key`], without
/// repeats, in that order. Two entries sharing any key are one story.
///
/// A key that names a home page (path `/`, no query, no route) is never a
/// story's identity — feeds that link every item to the front page, and
/// pages whose canonical is the front page, exist — so it is left out.
/// For the same reason a canonical or final URL that is an *ancestor* of
/// the link on the same host (`/news/` for `/news/2024/storm`) is left out:
/// that is a section page, shared by every story in it.
///
/// A shared key is weighed with the two listings ([`same_story`]): a page
/// that several differently titled items of a feed link is not their
/// identity.
pub fn canonical_candidates(
    entry_link: Option<&str>,
    final_url: Option<&str>,
    canonical_url: Option<&str>,
) -> Vec<String> {
    candidates(entry_link.and_then(url_key), final_url, canonical_url)
}

/// [`canonical_candidates`] of a feed entry, which has only its link, and
/// that already parsed.
pub fn link_candidates(entry_link: Option<&Url>) -> Vec<String> {
    candidates(entry_link.and_then(url_key_of), None, None)
}

fn candidates(
    link: Option<String>,
    final_url: Option<&str>,
    canonical_url: Option<&str>,
) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(3);
    let mut push = |key: String| {
        if !is_home_page(&key) && !keys.contains(&key) {
            keys.push(key);
        }
    };
    if let Some(link) = &link {
        push(link.clone());
    }
    for other in [final_url, canonical_url].into_iter().flatten() {
        let Some(key) = url_key(other) else { continue };
        if link.as_deref().is_some_and(|l| is_ancestor(&key, l)) {
            continue;
        }
        push(key);
    }
    keys
}

/// Whether a [`url_key`] is a site's front page: nothing after the
/// authority but `/`. Read off the string, which `url_key` spells as
/// `https://host[:port]/…` (no user info, so no `/` before the path),
/// instead of parsing it a third time for every entry of every poll.
fn is_home_page(key: &str) -> bool {
    key.strip_prefix("https://")
        .and_then(|rest| rest.find('/').map(|at| &rest[at..]))
        == Some("/")
}

/// `ancestor` is a strict path prefix of `key` on the same host and port.
fn is_ancestor(ancestor: &str, key: &str) -> bool {
    let (Ok(a), Ok(k)) = (Url::parse(ancestor), Url::parse(key)) else {
        return false;
    };
    if a.host_str() != k.host_str() || a.port() != k.port() || a.query().is_some() {
        return false;
    }
    let (ap, kp) = (a.path().trim_end_matches('/'), k.path());
    ap.len() < kp.len() && kp.starts_with(ap) && kp.as_bytes()[ap.len()] == b'/'
}

// ---------------------------------------------------------------------------
// Same text
// ---------------------------------------------------------------------------

/// Version of the text analysis: tokenisation, [`SHINGLE`], hash keys and
/// seeds. Stored beside the values; values of another version are not
/// comparable and must be recomputed from the text.
pub const VERSION: u32 = 1;

/// Words per shingle. Four words keep shared stock phrases of one topic
/// ("the central bank said") from looking like shared text, while a light
/// edit (one changed word) only breaks four shingles.
pub const SHINGLE: usize = 4;

/// Fewer words than this and a text is not judged at all: short items
/// (teasers, briefs, link posts) share too little to tell a syndicated
/// copy from a story on the same event, so they are never merged on text.
pub const MIN_WORDS: u32 = 100;

/// Estimated Jaccard similarity of the shingle sets from which two texts
/// are one story. In the fixtures, syndicated copies with other bylines,
/// boilerplate, an added or dropped paragraph score 0.5–0.92 (median 0.70),
/// except copies buried in 170 words of page chrome (0.37–0.49, missed);
/// different stories score 0–0.30 (median 0.06), the highest being
/// unrelated stories in that same heavy template. The threshold sits
/// nearer the duplicates on purpose: precision first.
pub const MIN_JACCARD: f64 = 0.5;

/// Estimated share of the shorter text's shingles found in the longer one
/// ([`Similarity::containment`]) from which two texts are one story even
/// when [`MIN_JACCARD`] is not reached: a copy inside a heavy page
/// template, whose boilerplate dilutes the Jaccard similarity (0.37–0.49
/// in the fixtures) but not the share of the story found in it (0.60–0.97).
/// Different stories in one heavy template reach 0.46, a follow-up quoting
/// the original 0.33, so it sits well above them; with
/// [`MIN_LENGTH_RATIO`] a text is never "contained" in one more than
/// twice as long.
pub const MIN_CONTAINMENT: f64 = 0.7;

/// The shorter text must have at least this share of the longer's words.
pub const MIN_LENGTH_RATIO: f64 = 0.5;

/// Two texts published further apart than this are never one story (a
/// recurring notice with the same wording is a new notice).
pub const MAX_PUBLISHED_GAP_SECS: i64 = 7 * 24 * 3600;

/// Number of MinHash slots.
pub const SKETCH_SLOTS: usize = 128;

/// Rows per LSH band in [`Sketch::lsh_keys`]; there are `LSH_BANDS` bands.
const LSH_ROWS: usize = 2;
/// Bands in [`Sketch::lsh_keys`]. With 2 rows a band matches with
/// probability J², so a pair shares at least one of 16 keys with
/// probability 1 − (1 − J²)¹⁶: 0.99 at J = 0.5, 0.92 at J = 0.4.
pub const LSH_BANDS: usize = 16;

/// The fixed SipHash keys of every persisted hash in this module ("trib",
/// "dedup v1" in ASCII). Never change them: stored values would stop
/// matching new ones.
pub const SIP_KEYS: (u64, u64) = (0x7472_6962_7574_6172, 0x6465_6475_7020_7631);

/// The SimHash of a text and its length: what is stored, and what the
/// SimHash [`bands`] index is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// 64-bit SimHash over the text's shingles (store `as i64`).
    pub simhash: u64,
    /// Length of the text in words (after normalisation).
    pub words: u32,
}

impl Fingerprint {
    /// Number of differing bits.
    pub fn distance(&self, other: &Fingerprint) -> u32 {
        (self.simhash ^ other.simhash).count_ones()
    }
}

/// A MinHash sketch: for each of [`SKETCH_SLOTS`] hash functions, the low
/// 16 bits of the least value over the text's shingles ("b-bit MinHash").
/// The share of equal slots estimates the Jaccard similarity of two
/// texts' shingle sets, with a standard error of √(J(1−J)/128) ≤ 0.044;
/// keeping 16 bits instead of 32 doubles the slots in the same 256 bytes,
/// at the cost of a chance match per slot of 2⁻¹⁶ (a bias under 0.0001).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sketch([u16; SKETCH_SLOTS]);

impl Sketch {
    /// Little-endian bytes, 2 per slot: the stored form (256 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The inverse of [`Sketch::to_bytes`]; `None` for a blob of another
    /// length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Sketch> {
        if bytes.len() != SKETCH_SLOTS * 2 {
            return None;
        }
        let mut slots = [0u16; SKETCH_SLOTS];
        for (slot, chunk) in slots.iter_mut().zip(bytes.chunks_exact(2)) {
            *slot = u16::from_le_bytes([chunk[0], chunk[1]]);
        }
        Some(Sketch(slots))
    }

    /// Estimated Jaccard similarity of the two texts' shingle sets, 0–1.
    pub fn jaccard(&self, other: &Sketch) -> f64 {
        let equal = self.0.iter().zip(&other.0).filter(|(a, b)| a == b).count();
        equal as f64 / SKETCH_SLOTS as f64
    }

    /// Locality-sensitive keys for finding candidates: [`LSH_BANDS`] keys,
    /// each a hash of the band number and [`LSH_ROWS`] slots (store `as
    /// i64`, indexed). Two entries sharing any key are candidates.
    ///
    /// These, not the SimHash [`bands`], find syndicated copies: four
    /// 16-bit SimHash bands only guarantee a shared band up to 3 differing
    /// bits, which in practice means near-identical text, while a copy with
    /// other boilerplate differs in 10–20 bits.
    pub fn lsh_keys(&self) -> [u64; LSH_BANDS] {
        let mut keys = [0u64; LSH_BANDS];
        for (band, key) in keys.iter_mut().enumerate() {
            let mut h = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
            h.write_u32(band as u32);
            for slot in &self.0[band * LSH_ROWS..(band + 1) * LSH_ROWS] {
                h.write_u16(*slot);
            }
            *key = h.finish();
        }
        keys
    }
}

/// Everything [`is_near_duplicate`] looks at, for one entry: computed from
/// the text by [`analyse`], or rebuilt from stored columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub fingerprint: Fingerprint,
    pub sketch: Sketch,
    /// Publication time, Unix seconds, if known ([`MAX_PUBLISHED_GAP_SECS`]).
    pub published: Option<i64>,
}

/// The SimHash fingerprint of `text`, or `None` when it has fewer than
/// [`MIN_WORDS`] words.
pub fn fingerprint(text: &str) -> Option<Fingerprint> {
    analyse(text, None).map(|c| c.fingerprint)
}

/// Fingerprint and sketch of `text` in one pass, or `None` when it has
/// fewer than [`MIN_WORDS`] words. `text` is plain text (no markup).
pub fn analyse(text: &str, published: Option<i64>) -> Option<Candidate> {
    let words = word_hashes(text);
    let count = u32::try_from(words.len()).unwrap_or(u32::MAX);
    if count < MIN_WORDS {
        return None;
    }
    let mut votes = [0i32; 64];
    let mut mins = [u32::MAX; SKETCH_SLOTS];
    for window in words.windows(SHINGLE) {
        let mut h = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
        for w in window {
            h.write_u64(*w);
        }
        let shingle = h.finish();
        for (bit, vote) in votes.iter_mut().enumerate() {
            *vote += if shingle >> bit & 1 == 1 { 1 } else { -1 };
        }
        for (slot, (a, b)) in mins.iter_mut().zip(MINHASH_PARAMS.iter()) {
            // Multiply-add-shift: a universal hash family over u64, enough
            // here because `shingle` is already a strong hash.
            let v = (a.wrapping_mul(shingle).wrapping_add(*b) >> 32) as u32;
            *slot = (*slot).min(v);
        }
    }
    let mins = mins.map(|m| m as u16);
    let simhash = votes.iter().enumerate().fold(
        0u64,
        |acc, (bit, &v)| if v > 0 { acc | 1 << bit } else { acc },
    );
    Some(Candidate {
        fingerprint: Fingerprint {
            simhash,
            words: count,
        },
        sketch: Sketch(mins),
        published,
    })
}

/// The SimHash split into four 16-bit bands (low bits first) for an
/// indexed lookup: two fingerprints within 3 bits share at least one band
/// (pigeonhole). See [`Sketch::lsh_keys`] for the index that also finds
/// copies with different boilerplate.
pub fn bands(fp: u64) -> [u16; 4] {
    [
        fp as u16,
        (fp >> 16) as u16,
        (fp >> 32) as u16,
        (fp >> 48) as u16,
    ]
}

/// Whether `a` and `b` are the same story told in (nearly) the same words.
/// Symmetric. Never true for texts under [`MIN_WORDS`], texts of very
/// different length ([`MIN_LENGTH_RATIO`]), texts published more than
/// [`MAX_PUBLISHED_GAP_SECS`] apart, or texts sharing less than
/// [`MIN_JACCARD`] of their shingles unless nearly all of the shorter is in
/// the longer ([`MIN_CONTAINMENT`]).
pub fn is_near_duplicate(a: &Candidate, b: &Candidate) -> bool {
    let s = similarity(a, b);
    let (wa, wb) = (a.fingerprint.words, b.fingerprint.words);
    wa >= MIN_WORDS
        && wb >= MIN_WORDS
        && s.length_ratio >= MIN_LENGTH_RATIO
        && s.published_gap
            .is_none_or(|gap| gap <= MAX_PUBLISHED_GAP_SECS)
        && (s.jaccard >= MIN_JACCARD || s.containment >= MIN_CONTAINMENT)
}

/// The measures behind [`is_near_duplicate`], for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Estimated Jaccard similarity of the shingle sets.
    pub jaccard: f64,
    /// SimHash Hamming distance (0–64).
    pub distance: u32,
    /// Shorter text's words over the longer's.
    pub length_ratio: f64,
    /// Estimated share of the shorter text's shingles that the longer one
    /// has too (from the Jaccard estimate and the lengths): near 1 when one
    /// text is the other plus boilerplate, even when Jaccard is lowered by
    /// that boilerplate.
    pub containment: f64,
    /// Seconds between the publication times, when both are known.
    pub published_gap: Option<i64>,
}

/// The measures [`is_near_duplicate`] decides on. Symmetric.
pub fn similarity(a: &Candidate, b: &Candidate) -> Similarity {
    let (wa, wb) = (a.fingerprint.words, b.fingerprint.words);
    Similarity {
        jaccard: a.sketch.jaccard(&b.sketch),
        distance: a.fingerprint.distance(&b.fingerprint),
        length_ratio: f64::from(wa.min(wb)) / f64::from(wa.max(wb).max(1)),
        containment: containment(a.sketch.jaccard(&b.sketch), wa, wb),
        published_gap: a
            .published
            .zip(b.published)
            .map(|(x, y)| i64::try_from(x.abs_diff(y)).unwrap_or(i64::MAX)),
    }
}

/// |A ∩ B| / min(|A|, |B|) from J = |A ∩ B| / |A ∪ B| and the sizes
/// (shingles ≈ words): |A ∩ B| = J (|A| + |B|) / (1 + J).
fn containment(jaccard: f64, wa: u32, wb: u32) -> f64 {
    let (wa, wb) = (f64::from(wa), f64::from(wb));
    let shared = jaccard * (wa + wb) / (1.0 + jaccard);
    (shared / wa.min(wb).max(1.0)).min(1.0)
}

/// The text's words, normalised (NFKC, lowercase, one apostrophe) and
/// hashed: UAX #29 words, so punctuation is not a word and Han characters
/// each are one.
fn word_hashes(text: &str) -> Vec<u64> {
    const NFKC: ComposingNormalizerBorrowed<'static> = ComposingNormalizerBorrowed::new_nfkc();
    let text = NFKC.normalize(text).to_lowercase();
    let text = if text.contains(['\u{2019}', '\u{2018}', '\u{02BC}']) {
        Cow::Owned(text.replace(['\u{2019}', '\u{2018}', '\u{02BC}'], "'"))
    } else {
        Cow::Borrowed(text.as_str())
    };
    text.unicode_words()
        .map(|w| {
            let mut h = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
            h.write(w.as_bytes());
            h.finish()
        })
        .collect()
}

/// `(a, b)` of each MinHash slot's hash `(a·x + b) >> 32`: a fixed
/// SplitMix64 sequence (seed 0x5EED), `a` odd. Computed at compile time,
/// so it is part of the format, like [`SIP_KEYS`].
const MINHASH_PARAMS: [(u64, u64); SKETCH_SLOTS] = {
    let mut params = [(0u64, 0u64); SKETCH_SLOTS];
    let mut state: u64 = 0x5EED;
    let mut i = 0;
    while i < SKETCH_SLOTS {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let a = splitmix(state) | 1;
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let b = splitmix(state);
        params[i] = (a, b);
        i += 1;
    }
    params
};

const fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// One story
// ---------------------------------------------------------------------------

/// Two listings of one link whose titles match are one item only if their
/// feeds dated them at most this far apart: one article listed in two
/// sections, or by two feeds that date it by their own clocks. Further
/// apart, the shared link is a page that recurring items point at (a
/// daily "Weather update" linking the weather page).
pub const SAME_LINK_TITLED_GAP_SECS: i64 = 12 * 3600;

/// Two listings of one link with *different* titles are one item only if
/// both are dated and at most this far apart (a roundup listing an article
/// twice at once). Otherwise the link is a programme or section page that
/// differently titled items share (a radio show's episodes all link the
/// show's page), and a shared link says nothing about their identity.
pub const SAME_LINK_UNTITLED_GAP_SECS: i64 = 10 * 60;

/// How a feed listed one copy of a story: what decides whether a shared
/// URL key names the same article.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// [`title_key`] of the copy's title; empty when it had none.
    pub title_key: String,
    /// Publication time, Unix seconds.
    pub published: Option<i64>,
}

impl Listing {
    pub fn new(title: Option<&str>, published: Option<i64>) -> Listing {
        Listing {
            title_key: title.map(title_key).unwrap_or_default(),
            published,
        }
    }
}

/// Everything known of an entry, or of a story (the union over its copies),
/// when deciding whether two are one story.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Every [`url_key`] a copy is found under (link, final and canonical
    /// URL of its article).
    pub url_keys: Vec<String>,
    /// Every copy as its feed listed it.
    pub listings: Vec<Listing>,
    /// Every copy's text analysis (articles of fewer than [`MIN_WORDS`]
    /// words have none).
    pub prints: Vec<Print>,
}

/// One copy's text analysis, and the site its page is on.
#[derive(Debug, Clone, PartialEq)]
pub struct Print {
    pub text: Candidate,
    /// [`site_of`] the page; empty when unknown.
    pub site: String,
}

impl Print {
    pub fn new(text: Candidate, page_url: Option<&str>) -> Print {
        Print {
            text,
            site: page_url.and_then(site_of).unwrap_or_default(),
        }
    }
}

/// The site of a page, as two copies are compared: the host of its
/// [`url_key`] (so `www.`, `m.`, `amp.` and AMP caches are the site).
pub fn site_of(url: &str) -> Option<String> {
    let key = url_key(url)?;
    Url::parse(&key).ok()?.host_str().map(str::to_owned)
}

/// Why two entries are one story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// They share a URL key, and the listings agree that it names one
    /// article ([`SAME_LINK_TITLED_GAP_SECS`], [`SAME_LINK_UNTITLED_GAP_SECS`]).
    SameUrl,
    /// Two of their texts are near duplicates ([`is_near_duplicate`]).
    SameText,
}

/// Whether `a` and `b` (entries or whole stories) are one story, and why.
/// The one rule for every pair, in one feed or across feeds. Symmetric.
///
/// - A **shared URL key** is an identity when some listing of each side
///   agrees: matching titles ([`title_key`]) listed within
///   [`SAME_LINK_TITLED_GAP_SECS`], or different titles listed within
///   [`SAME_LINK_UNTITLED_GAP_SECS`]. When no pair agrees, the key is a
///   page that several items link (a programme page), and the two are kept
///   apart *even if their texts match*: their articles are that one page,
///   so matching texts are not independent evidence.
/// - Otherwise **near-duplicate texts** ([`is_near_duplicate`]) of any
///   copy of each. Two texts from one site ([`Print::site`]) also need
///   listings with matching titles within [`SAME_LINK_TITLED_GAP_SECS`]:
///   one site's pages share its template and stock sentences (a templated
///   story with a handful of nouns swapped reaches Jaccard 0.79 in the
///   fixtures), and when its article pages cannot be read (a cookie wall,
///   a paywall notice, a bot check) every page yields the same text. A
///   site listing one article twice gives it its title both times.
///
/// Titles alone never merge: daily reports share them.
pub fn same_story(a: &Evidence, b: &Evidence) -> Option<Link> {
    if a.url_keys.iter().any(|k| b.url_keys.contains(k)) {
        let agree = a
            .listings
            .iter()
            .any(|la| b.listings.iter().any(|lb| one_listing(la, lb)));
        return agree.then_some(Link::SameUrl);
    }
    let titled = || {
        a.listings
            .iter()
            .any(|la| b.listings.iter().any(|lb| one_titled_listing(la, lb)))
    };
    a.prints
        .iter()
        .any(|pa| {
            b.prints.iter().any(|pb| {
                is_near_duplicate(&pa.text, &pb.text)
                    && (pa.site.is_empty() || pa.site != pb.site || titled())
            })
        })
        .then_some(Link::SameText)
}

/// Two listings with matching titles, listed close enough to be one
/// article (see [`same_story`]).
fn one_titled_listing(a: &Listing, b: &Listing) -> bool {
    titles_match(&a.title_key, &b.title_key)
        && a.published
            .zip(b.published)
            .is_none_or(|(x, y)| x.abs_diff(y) <= SAME_LINK_TITLED_GAP_SECS.unsigned_abs())
}

/// Two listings of one URL that name one article (see [`same_story`]).
fn one_listing(a: &Listing, b: &Listing) -> bool {
    let gap = a
        .published
        .zip(b.published)
        .map(|(x, y)| i64::try_from(x.abs_diff(y)).unwrap_or(i64::MAX));
    let titled = titles_match(&a.title_key, &b.title_key);
    if titled {
        gap.is_none_or(|g| g <= SAME_LINK_TITLED_GAP_SECS)
    } else {
        gap.is_some_and(|g| g <= SAME_LINK_UNTITLED_GAP_SECS)
    }
}

/// Share of the two titles' distinct words ([`title_key`]) they must have
/// in common to name one article: "Freight train derails near the border"
/// and "Freight train derails near border" do (0.83), two episodes of one
/// show ("Morning Show: the flood", "… the strike", 0.6) and two bulletins
/// ("News at nine", "News at ten", 0.5) do not.
pub const MIN_TITLE_OVERLAP: f64 = 0.75;

/// Whether two [`title_key`]s name one article; an empty one (no title)
/// says nothing against it.
pub fn titles_match(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() || a == b {
        return true;
    }
    let wa: std::collections::BTreeSet<&str> = a.split(' ').collect();
    let wb: std::collections::BTreeSet<&str> = b.split(' ').collect();
    let shared = wa.intersection(&wb).count();
    let all = wa.union(&wb).count();
    shared as f64 >= MIN_TITLE_OVERLAP * all as f64
}

/// Separators before a site name at the end of a title (`Storm hits coast
/// | Daily Herald`, `… – Herald`, `… - BBC News`).
const TITLE_SUFFIX_SEPARATORS: &[&str] = &[" | ", " – ", " — ", " - ", " :: ", " · ", " • "];

/// Words a site-name suffix may have at most.
const MAX_SUFFIX_WORDS: usize = 4;

/// A title as compared: NFKC, lower case, words only (punctuation and
/// spacing dropped), without a trailing site name in brackets or after
/// `|`, `–`, `—`, ` - ` when what remains has at least two words.
pub fn title_key(title: &str) -> String {
    const NFKC: ComposingNormalizerBorrowed<'static> = ComposingNormalizerBorrowed::new_nfkc();
    let title = NFKC.normalize(title.trim());
    let mut main: &str = &title;
    // "Storm hits (Herald)", "Storm hits [video]".
    for (open, close) in [('(', ')'), ('[', ']')] {
        if let Some(inner) = main.strip_suffix(close)
            && let Some(at) = inner.rfind(open)
            && at > 0
            && inner[at + 1..].unicode_words().count() <= MAX_SUFFIX_WORDS
            && main[..at].unicode_words().count() >= 2
        {
            main = main[..at].trim_end();
        }
    }
    if let Some((at, sep)) = TITLE_SUFFIX_SEPARATORS
        .iter()
        .filter_map(|s| main.rfind(s).map(|at| (at, *s)))
        .max_by_key(|(at, _)| *at)
    {
        let (head, tail) = (&main[..at], &main[at + sep.len()..]);
        if tail.unicode_words().count() <= MAX_SUFFIX_WORDS && head.unicode_words().count() >= 2 {
            main = head;
        }
    }
    let lower = main.to_lowercase();
    let mut key = String::with_capacity(lower.len());
    for w in lower.unicode_words() {
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(w);
    }
    key
}

/// Groups entries into stories: the connected components of
/// [`same_story`] over every pair, as indices of the first member of each
/// entry's group. The reference for what a store does incrementally
/// (whatever the order the evidence arrives in, the groups are these),
/// and what `tests/dedup_quality.rs` measures. Quadratic: for tests and
/// small sets.
pub fn group(entries: &[Evidence]) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..entries.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..entries.len() {
        for j in i + 1..entries.len() {
            if same_story(&entries[i], &entries[j]).is_some() {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    (0..entries.len()).map(|i| root(&mut parent, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_key(input: &str, want: Option<&str>) {
        let got = url_key(input);
        assert_eq!(got.as_deref(), want, "url_key({input:?})");
        if let Some(key) = &got {
            assert_eq!(
                url_key(key).as_ref(),
                Some(key),
                "not idempotent for {input:?}"
            );
        }
    }

    #[test]
    fn url_keys() {
        let same = [
            "https://example.com/news/storm",
            "http://example.com/news/storm",
            "HTTPS://Example.COM/news/storm/",
            "https://www.example.com/news/storm",
            "https://m.example.com/news/storm",
            "https://mobile.example.com/news/storm",
            "https://www2.example.com/news/storm",
            "https://amp.example.com/news/storm",
            "https://example.com:443/news/storm",
            "http://example.com:80/news/storm",
            "https://example.com./news/storm",
            "https://user:pw@example.com/news/storm",
            "https://example.com//news//storm//",
            "https://example.com/news/storm#comments",
            "https://example.com/news/storm/amp",
            "https://example.com/news/storm/amp/",
            "https://example.com/amp/news/storm",
            "https://example.com/news/storm.amp",
            "https://example.com/news/storm?amp",
            "https://example.com/news/storm?amp=1",
            "https://example.com/news/storm?outputType=amp",
            "https://example-com.cdn.ampproject.org/c/s/example.com/news/storm",
            "https://www.google.com/amp/s/www.example.com/news/storm/amp",
            "https://example.com/news/storm?utm_source=rss&utm_medium=feed&UTM_Campaign=x",
            "https://example.com/news/storm?fbclid=1&gclid=2&dclid=3&msclkid=4&mc_cid=5&mc_eid=6",
            "https://example.com/news/storm?igshid=1&yclid=2&_hsenc=3&_hsmi=4&ref=hn&ref_src=twsrc",
            "https://example.com/news/storm?cmpid=1&ocid=2&spm=3&share=4&_ga=5&&",
            "https://example.com/news/storm?",
        ];
        for input in same {
            check_key(input, Some("https://example.com/news/storm"));
        }

        // The query is sorted; meaningful parameters stay.
        check_key(
            "https://example.com/a?b=2&utm_x=1&a=1&fbclid=z",
            Some("https://example.com/a?a=1&b=2"),
        );
        check_key(
            "https://example.com/a?id=7",
            Some("https://example.com/a?id=7"),
        );
        check_key(
            "https://example.com/story.amp.html?amp=1",
            Some("https://example.com/story.html"),
        );
        // Routes in fragments are pages.
        check_key(
            "https://example.com/#!/story/5",
            Some("https://example.com/#!/story/5"),
        );
        check_key(
            "https://example.com/app/#/s/5",
            Some("https://example.com/app#/s/5"),
        );
        // Percent-escapes are spelled one way.
        check_key(
            "https://example.com/a%2fb?q=%c3%a9",
            Some("https://example.com/a%2Fb?q=%C3%A9"),
        );
        // Another port is another server; IPs are not "www-stripped".
        check_key(
            "https://example.com:8443/x",
            Some("https://example.com:8443/x"),
        );
        check_key("http://127.0.0.1:8080/x/", Some("https://127.0.0.1:8080/x"));
        check_key("http://[::1]/x", Some("https://[::1]/x"));
        // A bare variant label is the site itself, not a prefix.
        check_key("https://m.com/x", Some("https://m.com/x"));
        check_key("https://www.co/x", Some("https://www.co/x"));
        // `amp` alone is a path, not a marker.
        check_key("https://example.com/amp", Some("https://example.com/amp"));
        check_key(
            "https://example.com/amp/amp",
            Some("https://example.com/amp"),
        );
        // Not web pages.
        check_key("mailto:a@example.com", None);
        check_key("/relative/path", None);
        check_key("ftp://example.com/x", None);
        check_key("not a url", None);
        check_key("", None);
    }

    #[test]
    fn url_keys_keep_different_pages_apart() {
        let different = [
            "https://example.com/story?id=5",
            "https://example.com/story/id/5",
            "https://example.com/story?id=6",
            "https://example.com/story.html",
            "https://example.com/Story",
            "https://example.com/story",
            "https://example.com:8080/story",
            "https://other.example.com/story",
            "https://example.com/story?page=2",
        ];
        let keys: Vec<_> = different.iter().map(|u| url_key(u).unwrap()).collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn url_key_is_idempotent_on_generated_urls() {
        let mut rng = fastrand::Rng::with_seed(4);
        let hosts = [
            "Example.com",
            "www.www.a.b",
            "m.amp.news.example",
            "[::1]",
            "10.0.0.1",
        ];
        let segs = [
            "amp",
            "Amp",
            "",
            "a.amp",
            "b.amp.html",
            "%7e",
            "x y",
            "story",
            "ü",
        ];
        let params = [
            "amp=1",
            "utm_a=1",
            "b=%2f",
            "a",
            "",
            "outputType=AMP",
            "ref=x",
            "z=1",
        ];
        let frags = ["", "#x", "#!/r", "#/r", "#"];
        for _ in 0..2000 {
            let mut u = format!(
                "{}://{}{}",
                ["http", "https", "HTTP"][rng.usize(..3)],
                hosts[rng.usize(..hosts.len())],
                ["", ":80", ":443", ":8080"][rng.usize(..4)]
            );
            for _ in 0..rng.usize(..4) {
                u.push('/');
                u.push_str(segs[rng.usize(..segs.len())]);
            }
            if rng.bool() {
                u.push('?');
                for _ in 0..rng.usize(..4) {
                    u.push_str(params[rng.usize(..params.len())]);
                    u.push('&');
                }
            }
            u.push_str(frags[rng.usize(..frags.len())]);
            if let Some(key) = url_key(&u) {
                assert_eq!(url_key(&key).as_ref(), Some(&key), "{u}");
            }
        }
    }

    #[test]
    fn candidate_keys() {
        assert_eq!(
            canonical_candidates(
                Some("https://feeds.example.com/~r/x/story?utm_source=rss"),
                Some("https://www.example.com/news/storm/"),
                Some("https://example.com/news/storm"),
            ),
            [
                "https://feeds.example.com/~r/x/story",
                "https://example.com/news/storm"
            ]
        );
        // Home pages and section pages are nobody's identity.
        assert_eq!(
            canonical_candidates(
                Some("https://example.com/news/2024/storm"),
                Some("https://example.com/"),
                Some("https://example.com/news/"),
            ),
            ["https://example.com/news/2024/storm"]
        );
        assert!(
            canonical_candidates(Some("https://example.com/?utm_source=x"), None, None).is_empty()
        );
        // A syndicated copy points at the original: findable under both.
        assert_eq!(
            canonical_candidates(
                Some("https://daily.example/wire/storm-hits-coast"),
                None,
                Some("https://wire.example/2024/storm-hits-coast"),
            ),
            [
                "https://daily.example/wire/storm-hits-coast",
                "https://wire.example/2024/storm-hits-coast"
            ]
        );
        assert!(canonical_candidates(None, None, None).is_empty());
        assert!(canonical_candidates(Some("nonsense"), None, None).is_empty());
    }

    /// `is_home_page` reads the key as a string; it must agree with what
    /// the parsed URL says for every shape of key.
    #[test]
    fn home_pages_are_told_from_the_key_string() {
        for raw in [
            "https://example.com",
            "https://example.com/",
            "http://example.com:8080/",
            "https://127.0.0.1:8443",
            "https://[::1]/",
            "https://example.com/?utm_source=x",
            "https://example.com/?id=5",
            "https://example.com/#!/story/5",
            "https://example.com/#top",
            "https://example.com/news",
            "https://example.com//",
            "https://user:pw@example.com/",
            "https://example.com/index.html",
            "https://example.com/amp",
        ] {
            let Some(key) = url_key(raw) else { continue };
            let parsed = Url::parse(&key).expect("keys are URLs");
            let want =
                parsed.path() == "/" && parsed.query().is_none() && parsed.fragment().is_none();
            assert_eq!(is_home_page(&key), want, "{raw} -> {key}");
        }
        assert!(is_home_page(&url_key("https://example.com:8443/").unwrap()));
        assert!(!is_home_page(
            &url_key("https://example.com/?id=5").unwrap()
        ));
    }

    #[test]
    fn parsed_links_get_the_keys_their_text_gets() {
        for raw in [
            "https://example.com/news/story-1.html",
            "http://www.example.com/a/b?utm_source=x&id=5#top",
            "https://m.example.com/story/amp/",
            "https://example-com.cdn.ampproject.org/c/s/example.com/story",
            "https://www.google.com/amp/s/example.com/story.amp.html",
            "https://example.com:443/x",
            "https://example.com/",
            "https://bücher.example/straße",
            "ftp://example.com/file",
        ] {
            let url = Url::parse(raw).unwrap();
            assert_eq!(
                link_candidates(Some(&url)),
                canonical_candidates(Some(url.as_str()), None, None),
                "{raw}"
            );
            assert_eq!(url_key_of(&url), url_key(raw), "{raw}");
        }
        assert!(link_candidates(None).is_empty());
    }

    const WORDS: &[&str] = &[
        "the", "council", "river", "said", "on", "tuesday", "flood", "water", "minister", "report",
        "bridge", "police", "rain", "north", "school", "market", "shares", "rose", "fell",
        "percent", "of", "and", "a", "in", "after", "before", "city", "workers", "strike", "union",
        "talks", "budget", "million", "vote", "mayor", "election", "storm", "coast", "train",
        "station",
    ];

    fn random_text(rng: &mut fastrand::Rng, words: usize) -> String {
        (0..words)
            .map(|_| WORDS[rng.usize(..WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn short_texts_are_never_judged() {
        let mut rng = fastrand::Rng::with_seed(1);
        let short = random_text(&mut rng, MIN_WORDS as usize - 1);
        assert_eq!(fingerprint(&short), None);
        assert_eq!(analyse(&short, None), None);
        assert_eq!(fingerprint(""), None);
        // Punctuation is not a word.
        let dots = format!("{short} . , ; — … !");
        assert_eq!(fingerprint(&dots), None);
        let enough = random_text(&mut rng, MIN_WORDS as usize);
        assert_eq!(fingerprint(&enough).map(|f| f.words), Some(MIN_WORDS));
    }

    #[test]
    fn identical_texts_are_duplicates_and_the_decision_is_symmetric() {
        let mut rng = fastrand::Rng::with_seed(2);
        for _ in 0..50 {
            let n = rng.usize(100..600);
            let a = random_text(&mut rng, n);
            let ca = analyse(&a, Some(1_700_000_000)).unwrap();
            assert!(is_near_duplicate(&ca, &ca));
            // Markup-free whitespace, case and compatibility forms do not matter.
            let b = a.to_uppercase().replace(' ', "\u{00A0} \n");
            assert_eq!(analyse(&b, Some(1_700_000_000)).unwrap(), ca);
            // Symmetry, over unrelated and related pairs.
            let m = rng.usize(100..600);
            let c = if rng.bool() {
                random_text(&mut rng, m)
            } else {
                format!("{a} {}", random_text(&mut rng, m / 3))
            };
            let cc = analyse(&c, Some(1_700_000_000 + rng.i64(0..900_000))).unwrap();
            assert_eq!(is_near_duplicate(&ca, &cc), is_near_duplicate(&cc, &ca));
            assert_eq!(similarity(&ca, &cc), similarity(&cc, &ca));
        }
    }

    #[test]
    fn sanity_checks_veto() {
        let mut rng = fastrand::Rng::with_seed(3);
        let a = random_text(&mut rng, 300);
        let day = 24 * 3600;
        let ca = analyse(&a, Some(0)).unwrap();
        let week_later = analyse(&a, Some(8 * day)).unwrap();
        assert!(!is_near_duplicate(&ca, &week_later), "published gap");
        let undated = analyse(&a, None).unwrap();
        assert!(is_near_duplicate(&ca, &undated));
        // The first 300 words inside a text three times as long.
        let long = format!("{a} {}", random_text(&mut rng, 700));
        assert!(
            !is_near_duplicate(&ca, &analyse(&long, Some(0)).unwrap()),
            "length ratio"
        );
    }

    #[test]
    fn jaccard_estimate_is_close() {
        // Texts with known overlap: the estimate stays within 4 standard errors.
        let mut rng = fastrand::Rng::with_seed(5);
        for shared in [0usize, 100, 200, 300, 400] {
            let common = random_text(&mut rng, shared);
            let a = format!("{common} {}", random_text(&mut rng, 400 - shared));
            let b = format!("{common} {}", random_text(&mut rng, 400 - shared));
            let (ca, cb) = (analyse(&a, None).unwrap(), analyse(&b, None).unwrap());
            let exact = exact_jaccard(&a, &b);
            let est = ca.sketch.jaccard(&cb.sketch);
            assert!(
                (est - exact).abs() < 0.25,
                "shared {shared}: exact {exact:.2}, estimate {est:.2}"
            );
        }
    }

    fn exact_jaccard(a: &str, b: &str) -> f64 {
        use std::collections::HashSet;
        let set = |t: &str| -> HashSet<Vec<u64>> {
            word_hashes(t)
                .windows(SHINGLE)
                .map(<[u64]>::to_vec)
                .collect()
        };
        let (sa, sb) = (set(a), set(b));
        sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64
    }

    #[test]
    fn bands_find_fingerprints_within_three_bits() {
        let mut rng = fastrand::Rng::with_seed(6);
        for _ in 0..1000 {
            let a = rng.u64(..);
            let mut b = a;
            for _ in 0..rng.usize(0..=3) {
                b ^= 1 << rng.u32(0..64);
            }
            let (ba, bb) = (bands(a), bands(b));
            assert!(ba.iter().zip(&bb).any(|(x, y)| x == y));
        }
        assert_eq!(
            bands(0x0123_4567_89AB_CDEF),
            [0xCDEF, 0x89AB, 0x4567, 0x0123]
        );
    }

    #[test]
    fn sketch_round_trips_through_bytes() {
        let c = analyse(&random_text(&mut fastrand::Rng::with_seed(7), 200), None).unwrap();
        let bytes = c.sketch.to_bytes();
        assert_eq!(bytes.len(), 256);
        assert_eq!(Sketch::from_bytes(&bytes), Some(c.sketch.clone()));
        assert_eq!(Sketch::from_bytes(&bytes[1..]), None);
        assert_eq!(
            c.sketch.lsh_keys(),
            Sketch::from_bytes(&bytes).unwrap().lsh_keys()
        );
    }

    #[test]
    fn title_keys_drop_case_punctuation_and_site_names() {
        let k = title_key("Storm hits the coast");
        for t in [
            "Storm hits the coast",
            "STORM HITS THE COAST!",
            "Storm hits the coast | Daily Herald",
            "Storm hits the coast – Herald",
            "Storm hits the coast - BBC News",
            "  Storm  hits the coast — The Northern Portal ",
            "Storm hits the coast…",
        ] {
            assert_eq!(title_key(t), k, "{t}");
        }
        // A suffix is stripped only when enough title remains, and only a
        // short one (a site name, not the second half of a headline).
        assert_eq!(title_key("Live | Results"), "live results");
        assert_ne!(
            title_key("Storm hits the coast - thousands of homes without power tonight"),
            k
        );
        assert_eq!(title_key(""), "");
        assert_eq!(title_key("<script>"), "script");
    }

    #[test]
    fn titles_match_on_most_words() {
        let m = |a: &str, b: &str| titles_match(&title_key(a), &title_key(b));
        assert!(m(
            "Freight train derails near the border",
            "Freight train derails near border"
        ));
        assert!(m("Weather update", "Weather update"));
        assert!(m("", "Anything at all"));
        assert!(!m("Morning Show: the flood", "Morning Show: the strike"));
        assert!(!m("News at nine", "News at ten"));
        assert!(!m("Episode 14", "Episode 15"));
        // Symmetric.
        for (a, b) in [("a b c d", "a b c"), ("x", "x y z w")] {
            assert_eq!(titles_match(a, b), titles_match(b, a));
        }
    }

    fn listed(keys: &[&str], title: &str, at: Option<i64>) -> Evidence {
        Evidence {
            url_keys: keys.iter().map(|k| url_key(k).unwrap()).collect(),
            listings: vec![Listing::new(Some(title), at)],
            prints: Vec::new(),
        }
    }

    #[test]
    fn a_shared_link_is_weighed_with_the_listings() {
        let h = 3600;
        let a = listed(
            &["https://x.example/a?utm_source=rss"],
            "Storm hits the coast",
            Some(0),
        );
        // Same article listed twice: same title, near in time, or undated.
        for b in [
            listed(
                &["https://x.example/a"],
                "Storm hits the coast",
                Some(2 * h),
            ),
            listed(&["https://x.example/a"], "Storm hits the coast | X", None),
            listed(&["https://x.example/a"], "Another title", Some(300)),
        ] {
            assert_eq!(same_story(&a, &b), Some(Link::SameUrl));
            assert_eq!(same_story(&b, &a), Some(Link::SameUrl));
        }
        // A page recurring items link: titled alike a day apart, or titled
        // differently and not listed at the same moment.
        for b in [
            listed(
                &["https://x.example/a"],
                "Storm hits the coast",
                Some(24 * h),
            ),
            listed(&["https://x.example/a"], "Another title", Some(h)),
            listed(&["https://x.example/a"], "Another title", None),
        ] {
            assert_eq!(same_story(&a, &b), None);
        }
        // No shared key, no prints: nothing links them, titles alone never.
        let c = listed(&["https://y.example/b"], "Storm hits the coast", Some(0));
        assert_eq!(same_story(&a, &c), None);
    }

    #[test]
    fn matching_texts_of_one_programme_page_do_not_link_its_episodes() {
        let text = random_text(&mut fastrand::Rng::with_seed(9), 300);
        let print = analyse(&text, Some(0)).unwrap();
        let episode = |title: &str, at: i64| Evidence {
            url_keys: vec![url_key("https://radio.example/show").unwrap()],
            listings: vec![Listing::new(Some(title), Some(at))],
            prints: vec![Print::new(
                print.clone(),
                Some("https://radio.example/show"),
            )],
        };
        let (a, b) = (episode("Show: floods", 0), episode("Show: strikes", 86_400));
        assert_eq!(same_story(&a, &b), None);
        // The same text under two unrelated links is one story.
        let mut c = b.clone();
        c.url_keys = vec![url_key("https://mirror.example/show-floods").unwrap()];
        c.prints[0].site = "mirror.example".into();
        assert_eq!(same_story(&a, &c), Some(Link::SameText));
        // On one site, even identical text (a cookie wall on every page)
        // needs a matching title as well.
        let mut d = c.clone();
        d.prints[0].site = "radio.example".into();
        assert_eq!(same_story(&a, &d), None, "identical text");
        let near = {
            let mut words: Vec<String> = text.split(' ').map(String::from).collect();
            for w in words.iter_mut().step_by(16) {
                *w = "changed".into();
            }
            analyse(&words.join(" "), Some(0)).unwrap()
        };
        assert!(is_near_duplicate(&print, &near));
        d.prints[0].text = near;
        assert_eq!(same_story(&a, &d), None, "one site's template");
        d.listings[0] = Listing::new(Some("Show: floods"), Some(3600));
        assert_eq!(same_story(&a, &d), Some(Link::SameText), "titled alike");
        d.listings[0] = Listing::new(Some("Show: floods"), Some(86_400));
        assert_eq!(same_story(&a, &d), None, "titled alike, a day apart");
    }

    #[test]
    fn groups_are_transitive_and_do_not_depend_on_order() {
        let mut rng = fastrand::Rng::with_seed(10);
        let base = random_text(&mut rng, 400);
        // A chain: each copy is a window 60 words further on, so
        // the first and last share too little, each neighbour enough.
        let words: Vec<&str> = base.split(' ').collect();
        let slice = |from: usize| words[from..from + 250].join(" ");
        let entries: Vec<Evidence> = (0..3)
            .map(|i| Evidence {
                url_keys: vec![format!("https://site{i}.example/story")],
                listings: vec![Listing::new(Some("Story"), Some(0))],
                prints: vec![Print::new(analyse(&slice(i * 60), Some(0)).unwrap(), None)],
            })
            .collect();
        assert!(same_story(&entries[0], &entries[1]).is_some());
        assert!(same_story(&entries[1], &entries[2]).is_some());
        assert!(same_story(&entries[0], &entries[2]).is_none());
        assert_eq!(group(&entries), [0, 0, 0]);
        let reversed: Vec<Evidence> = entries.iter().rev().cloned().collect();
        assert_eq!(group(&reversed), [0, 0, 0]);
        let other = Evidence {
            url_keys: vec!["https://other.example/x".into()],
            listings: vec![Listing::new(Some("Other"), Some(0))],
            prints: vec![Print::new(
                analyse(&random_text(&mut rng, 300), Some(0)).unwrap(),
                None,
            )],
        };
        let mixed = vec![
            entries[2].clone(),
            other,
            entries[0].clone(),
            entries[1].clone(),
        ];
        assert_eq!(group(&mixed), [0, 1, 0, 0]);
    }

    #[test]
    fn a_copy_inside_boilerplate_is_contained() {
        let mut rng = fastrand::Rng::with_seed(11);
        // A clean copy, and one inside a heavy template.
        let story = random_text(&mut rng, 250);
        let byline = random_text(&mut rng, 20);
        let template = random_text(&mut rng, 260);
        let a = analyse(&format!("{byline} {story}"), Some(0)).unwrap();
        let b = analyse(&format!("{template} {story}"), Some(0)).unwrap();
        let s = similarity(&a, &b);
        assert!(s.jaccard < MIN_JACCARD, "{s:?}");
        assert!(s.containment >= MIN_CONTAINMENT, "{s:?}");
        assert!(is_near_duplicate(&a, &b));
        // Two stories in that template: the template is all they share.
        let c = analyse(
            &format!("{template} {}", random_text(&mut rng, 250)),
            Some(0),
        )
        .unwrap();
        assert!(!is_near_duplicate(&b, &c), "{:?}", similarity(&b, &c));
    }

    const PINNED_TEXT: &str = "Heavy rain caused the river to burst its banks on Tuesday, flooding \
        dozens of homes in the low-lying districts of the town. Emergency services \
        evacuated more than two hundred residents overnight, and the regional \
        government said it would open three temporary shelters in school buildings. \
        The mayor told reporters that the water level had started to fall by the \
        afternoon, but warned that more rain was forecast for the weekend. Engineers \
        will inspect the old stone bridge before it reopens to traffic, and the \
        railway line to the coast remains closed until further notice. Residents \
        were asked to boil drinking water and to avoid the flooded streets.";

    /// Stored fingerprints must mean the same thing forever. If this test
    /// fails, the analysis changed: bump [`VERSION`] (stored rows will be
    /// recomputed) and only then update the pinned values.
    #[test]
    fn fingerprints_are_pinned() {
        let text = PINNED_TEXT;
        let c = analyse(text, None).unwrap();
        assert_eq!(c.fingerprint.words, 108);
        assert_eq!(VERSION, 1);
        assert_eq!(
            format!("{:016x}", c.fingerprint.simhash),
            "935f30dada09e76c"
        );
        assert_eq!(c.sketch.0[..4], [5834, 50124, 42180, 23024]);
        assert_eq!(c.sketch.lsh_keys()[0], 10253423268044002349);

        // Unicode forms that mean the same: NFKC, case, curly apostrophes.
        let variant = text
            .replace("Tuesday", "ＴＵＥＳＤＡＹ")
            .replace("the town", "the town\u{2019}s")
            .replace("town\u{2019}s", "town");
        assert_eq!(analyse(&variant, None).unwrap(), c);
        assert_eq!(MINHASH_PARAMS[0].0 & 1, 1);
    }

    /// Cost per stored article; run with `--nocapture` to see it.
    #[test]
    fn fingerprinting_cost() {
        // ~1,000 words of real prose (punctuation, capitals, numbers).
        let texts: Vec<String> = (0..50)
            .map(|n| {
                (0..10)
                    .map(|i| format!("{PINNED_TEXT} Part {n}-{i}."))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert!(fingerprint(&texts[0]).is_some_and(|f| (1000..1200).contains(&f.words)));
        let start = std::time::Instant::now();
        let mut sink = 0u64;
        for t in &texts {
            sink ^= analyse(t, None).unwrap().fingerprint.simhash;
        }
        let per_text = start.elapsed() / texts.len() as u32;
        let candidates: Vec<Candidate> = texts.iter().map(|t| analyse(t, None).unwrap()).collect();
        let start = std::time::Instant::now();
        let mut compared = 0u32;
        for a in &candidates {
            for b in &candidates {
                sink ^= u64::from(is_near_duplicate(a, b));
                compared += 1;
            }
        }
        let compare = start.elapsed() / compared;
        println!(
            "dedup: analyse() of a 1000-word text: {per_text:?}; is_near_duplicate: {compare:?} [{sink:x}]"
        );
    }
}
