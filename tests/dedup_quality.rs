//! Quality of near-duplicate detection (`pipeline::dedup`) over the
//! labelled pairs in `tests/fixtures/dedup/`: prints precision and recall
//! and fails under precision 0.99 or recall 0.90.
//!
//! ```text
//! cargo test --test dedup_quality -- --nocapture
//! ```
//!
//! The fixtures are plain TOML, no build step: `stories-*.toml` and
//! `reports.toml` hold the texts (reports fill a shared template with each
//! day's values; `{{para:ID:N}}` quotes paragraph N of another story), and
//! `pairs.toml` names two stories per pair, the edits that turn each into
//! the copy a site would publish (its boilerplate, a dropped or added
//! paragraph, light wording changes), and the label.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tributary::pipeline::dedup::{self, Candidate};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dedup");

#[derive(Deserialize)]
struct StoryFile {
    #[serde(default)]
    template: BTreeMap<String, Template>,
    #[serde(default)]
    story: Vec<Story>,
}

#[derive(Deserialize)]
struct Template {
    text: String,
}

#[derive(Deserialize)]
struct Story {
    id: String,
    text: Option<String>,
    template: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct PairFile {
    site: BTreeMap<String, Site>,
    pair: Vec<Pair>,
}

/// A publisher's wrapping: paragraphs before and after the story, and an
/// ad slot between every two paragraphs (AMP pages).
#[derive(Deserialize)]
struct Site {
    #[serde(default)]
    head: Vec<String>,
    #[serde(default)]
    tail: Vec<String>,
    ad: Option<String>,
}

#[derive(Deserialize)]
struct Pair {
    a: String,
    #[serde(default)]
    edit_a: Vec<String>,
    b: String,
    #[serde(default)]
    edit_b: Vec<String>,
    duplicate: bool,
    note: String,
}

fn paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// All stories by id, templates filled and quotes expanded.
fn load_stories() -> BTreeMap<String, Vec<String>> {
    let mut raw: BTreeMap<String, String> = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| !p.ends_with("pairs.toml"))
        .collect();
    files.sort();
    for path in files {
        let file: StoryFile = toml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for story in file.story {
            let text = match (&story.text, &story.template) {
                (Some(text), None) => text.clone(),
                (None, Some(t)) => fill(&file.template[t].text, &story.vars, &story.id),
                _ => panic!("{}: needs text or template", story.id),
            };
            assert!(
                raw.insert(story.id.clone(), text).is_none(),
                "duplicate id {}",
                story.id
            );
        }
    }
    let mut stories = BTreeMap::new();
    for (id, text) in &raw {
        let mut text = text.clone();
        while let Some(start) = text.find("{{para:") {
            let end = start + text[start..].find("}}").unwrap();
            let spec = &text[start + 7..end];
            let (src, n) = spec.rsplit_once(':').unwrap();
            let quoted = paragraphs(&raw[src])[n.parse::<usize>().unwrap()].clone();
            text.replace_range(start..end + 2, &quoted);
        }
        stories.insert(id.clone(), paragraphs(&text));
    }
    stories
}

fn fill(template: &str, vars: &BTreeMap<String, String>, id: &str) -> String {
    let mut out = template.to_owned();
    for (k, v) in vars {
        let slot = format!("{{{k}}}");
        assert!(out.contains(&slot), "{id}: unused var {k}");
        out = out.replace(&slot, v);
    }
    assert!(!out.contains(['{', '}']), "{id}: unfilled template slot");
    out
}

fn index(len: usize, spec: &str) -> usize {
    let i: isize = spec.parse().unwrap();
    if i < 0 {
        (len as isize + i) as usize
    } else {
        i as usize
    }
}

/// Applies a pair's edits, in order, to a story's paragraphs.
fn edit(paras: &[String], edits: &[String], sites: &BTreeMap<String, Site>, ctx: &str) -> String {
    let mut p = paras.to_vec();
    for e in edits {
        let (op, arg) = e.split_once(':').unwrap_or((e, ""));
        match op {
            "site" => {
                let site = sites
                    .get(arg)
                    .unwrap_or_else(|| panic!("{ctx}: no site {arg}"));
                if let Some(ad) = &site.ad {
                    let mut with_ads = Vec::new();
                    for (i, para) in p.iter().enumerate() {
                        with_ads.push(para.clone());
                        if i % 2 == 1 && i + 1 < p.len() {
                            with_ads.push(ad.clone());
                        }
                    }
                    p = with_ads;
                }
                p = site
                    .head
                    .iter()
                    .chain(&p)
                    .chain(&site.tail)
                    .cloned()
                    .collect();
            }
            "drop" => {
                p.remove(index(p.len(), arg));
            }
            "keep" => p.truncate(arg.parse().unwrap()),
            "swap" => {
                let (i, j) = arg.split_once(':').unwrap();
                let (i, j) = (index(p.len(), i), index(p.len(), j));
                p.swap(i, j);
            }
            "insert" => {
                let (i, text) = arg.split_once(':').unwrap();
                let i = index(p.len() + 1, i);
                p.insert(i, text.to_owned());
            }
            "append" => p.push(arg.to_owned()),
            "prepend" => p.insert(0, arg.to_owned()),
            "lead" => p[0] = format!("{arg}{}", p[0]),
            "sub" => {
                let (from, to) = arg.split_once("=>").unwrap();
                let joined = p.join("\n\n");
                assert!(joined.contains(from), "{ctx}: sub {from:?} matches nothing");
                p = joined
                    .replace(from, to)
                    .split("\n\n")
                    .map(String::from)
                    .collect();
            }
            _ => panic!("{ctx}: unknown edit {e}"),
        }
    }
    p.join("\n\n")
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

#[test]
fn dedup_precision_and_recall() {
    let stories = load_stories();
    let pairs: PairFile =
        toml::from_str(&std::fs::read_to_string(Path::new(DIR).join("pairs.toml")).unwrap())
            .unwrap();
    assert!(pairs.pair.len() >= 100, "at least 100 labelled pairs");

    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    let (mut lsh_found, mut band_found) = (0, 0);
    let mut texts = 0;
    let mut long_texts = 0;
    let mut dup_j = Vec::new();
    let mut non_j = Vec::new();
    let mut report = Vec::new();
    for (n, pair) in pairs.pair.iter().enumerate() {
        let ctx = format!("pair {n} ({} / {})", pair.a, pair.b);
        let story = |id: &str| {
            stories
                .get(id)
                .unwrap_or_else(|| panic!("{ctx}: no story {id}"))
        };
        let a = edit(story(&pair.a), &pair.edit_a, &pairs.site, &ctx);
        let b = edit(story(&pair.b), &pair.edit_b, &pairs.site, &ctx);
        assert!(!pair.note.is_empty(), "{ctx}: note");
        if !pair.duplicate {
            assert_ne!(pair.a, pair.b, "{ctx}: a non-duplicate must be two stories");
        }
        for t in [&a, &b] {
            texts += 1;
            long_texts += usize::from(words(t) >= 150);
        }
        let (ca, cb): (Option<Candidate>, Option<Candidate>) =
            (dedup::analyse(&a, None), dedup::analyse(&b, None));
        let (Some(ca), Some(cb)) = (ca, cb) else {
            panic!("{ctx}: fixture texts must be long enough to judge");
        };
        let s = dedup::similarity(&ca, &cb);
        let got = dedup::is_near_duplicate(&ca, &cb);
        assert_eq!(got, dedup::is_near_duplicate(&cb, &ca), "{ctx}: symmetry");
        if pair.duplicate {
            dup_j.push(s.jaccard);
            let (ka, kb) = (ca.sketch.lsh_keys(), cb.sketch.lsh_keys());
            lsh_found += usize::from(ka.iter().any(|k| kb.contains(k)));
            let (ba, bb) = (
                dedup::bands(ca.fingerprint.simhash),
                dedup::bands(cb.fingerprint.simhash),
            );
            band_found += usize::from(ba.iter().zip(&bb).any(|(x, y)| x == y));
        } else {
            non_j.push(s.jaccard);
        }
        match (pair.duplicate, got) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
        report.push(format!(
            "{} {:>3} J={:.2} d={:>2} len={:.2} {:>4}/{:<4} {} ~ {}: {}",
            if pair.duplicate == got { "  " } else { "✗ " },
            n,
            s.jaccard,
            s.distance,
            s.length_ratio,
            ca.fingerprint.words,
            cb.fingerprint.words,
            pair.a,
            pair.b,
            pair.note
        ));
    }
    let precision = if tp + fp == 0 {
        1.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = tp as f64 / (tp + fn_) as f64;
    let stat = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (dmin, dmed, dmax) = stat(&mut dup_j);
    let (nmin, nmed, nmax) = stat(&mut non_j);
    println!("{}", report.join("\n"));
    println!(
        "\ndedup quality over {} pairs ({} duplicates, {} not; {texts} texts, {long_texts} of 150+ words)",
        pairs.pair.len(),
        tp + fn_,
        fp + tn
    );
    println!("  tp {tp}  fp {fp}  fn {fn_}  tn {tn}");
    println!("  precision {precision:.3}  recall {recall:.3}");
    println!("  Jaccard estimate, duplicates: min {dmin:.2} median {dmed:.2} max {dmax:.2}");
    println!("  Jaccard estimate, non-duplicates: min {nmin:.2} median {nmed:.2} max {nmax:.2}");
    println!(
        "  candidate retrieval of duplicates: MinHash LSH keys {lsh_found}/{}, SimHash bands {band_found}/{}",
        tp + fn_,
        tp + fn_
    );
    assert!(precision >= 0.99, "precision {precision:.3} < 0.99");
    assert!(recall >= 0.90, "recall {recall:.3} < 0.90");
}
