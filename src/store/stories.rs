//! What a story is, for the backends: the one place the store applies
//! `pipeline::dedup`'s rule, so each backend only fetches rows and writes
//! merges.
//!
//! A backend reads a story's evidence as plain rows ([`StoryRows`]), asks
//! [`same_story`] about each candidate it found, orders the linked
//! stories with [`merge_order`], and moves articles as [`article_merge`]
//! says. The SQL (or whatever a backend speaks) finds candidates; the
//! decisions are made here, once, whatever the backend.

use crate::pipeline::dedup;

/// Prints of this analysis version are compared; others are stale (a
/// change to the analysis bumps it, and older rows are re-analysed, never
/// compared).
pub(crate) const PRINT_VERSION: i64 = dedup::VERSION as i64;

/// Stories first seen further apart than this are never candidates by
/// text ([`dedup::MAX_PUBLISHED_GAP_SECS`]).
pub(crate) const TEXT_WINDOW_SECS: i64 = dedup::MAX_PUBLISHED_GAP_SECS;

/// How many locality-sensitive keys one print has: a backend looks
/// candidates up this many keys at a time.
pub(crate) const LSH_KEYS_PER_PRINT: usize = dedup::LSH_BANDS;

/// One stored print, as a backend reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrintRow {
    pub words: i64,
    pub simhash: i64,
    pub minhash: Vec<u8>,
    pub published: Option<i64>,
    /// The site of the page it was taken from; `None` for a print stored
    /// before prints kept their site.
    pub site: Option<String>,
    /// Then, the page of the entry it came from (its article's final URL,
    /// else its link), whose site stands in.
    pub page: Option<String>,
}

/// What a backend reads of a stored story: every URL key of its copies,
/// every copy's listing (title and publication time), and every member's
/// print of [`PRINT_VERSION`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StoryRows {
    pub url_keys: Vec<String>,
    pub listings: Vec<(Option<String>, Option<i64>)>,
    pub prints: Vec<PrintRow>,
}

/// A story's (or a new copy's) evidence, as the dedup rule reads it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Evidence(dedup::Evidence);

impl Evidence {
    /// A stored story's evidence from its rows; a print that no longer
    /// reads (a damaged blob) is left out.
    pub fn of_rows(rows: StoryRows) -> Evidence {
        let listings = rows
            .listings
            .iter()
            .map(|(title, published)| dedup::Listing::new(title.as_deref(), *published))
            .collect();
        let prints = rows
            .prints
            .into_iter()
            .filter_map(|p| {
                let sketch = dedup::Sketch::from_bytes(&p.minhash)?;
                let text = dedup::Candidate {
                    fingerprint: dedup::Fingerprint {
                        simhash: p.simhash as u64,
                        words: u32::try_from(p.words).unwrap_or(0),
                    },
                    sketch,
                    published: p.published,
                };
                Some(match p.site {
                    Some(site) => dedup::Print { text, site },
                    None => dedup::Print::new(text, p.page.as_deref()),
                })
            })
            .collect();
        Evidence(dedup::Evidence {
            url_keys: rows.url_keys,
            listings,
            prints,
        })
    }

    /// A copy just polled: its URL keys and how its feed listed it.
    pub fn of_listing(url_keys: &[String], title: Option<&str>, published: Option<i64>) -> Self {
        Evidence(dedup::Evidence {
            url_keys: url_keys.to_vec(),
            listings: vec![dedup::Listing::new(title, published)],
            prints: Vec::new(),
        })
    }

    pub fn url_keys(&self) -> &[String] {
        &self.0.url_keys
    }

    /// The locality-sensitive keys of its prints, sorted, each once: a
    /// story sharing one may have a near-duplicate text.
    pub fn lsh_keys(&self) -> Vec<i64> {
        let mut keys: Vec<i64> = self
            .0
            .prints
            .iter()
            .flat_map(|p| p.text.sketch.lsh_keys())
            .map(|k| k as i64)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// Whether `a` and `b` are one story: `dedup::same_story`, the one rule.
pub(crate) fn same_story(a: &Evidence, b: &Evidence) -> bool {
    dedup::same_story(&a.0, &b.0).is_some()
}

/// The site a print's page is on, as prints are compared and stored
/// (empty when the URL has none).
pub(crate) fn site_of(page_url: &str) -> String {
    dedup::site_of(page_url).unwrap_or_default()
}

/// Sorts stories `(id, first seen)` earliest first; ties by id.
pub(crate) fn earliest_first(stories: &mut [(i64, i64)]) {
    stories.sort_unstable_by_key(|&(id, seen)| (seen, id));
}

/// `me` and the stories linked to it are one: they merge into the
/// earliest first seen, which keeps its id. Returns that story and the
/// others, which merge into it.
pub(crate) fn merge_order(me: (i64, i64), linked: &[(i64, i64)]) -> (i64, Vec<i64>) {
    let mut all = linked.to_vec();
    all.push(me);
    earliest_first(&mut all);
    let target = all[0].0;
    (target, all[1..].iter().map(|&(id, _)| id).collect())
}

/// What a backend knows of a story's article row when two stories merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArticleFacts {
    /// "pending", "done" or "failed".
    pub status: String,
    /// Whether it replaced the feed's content in the outputs.
    pub used: bool,
    pub words: i64,
}

/// What happens to the articles when story `from` merges into `into`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArticleMerge {
    /// `into` has no page to fetch: it takes `from`'s, fetched or not.
    Move,
    /// `from`'s fetched article says more: it replaces `into`'s (as done).
    Replace,
    /// `into` keeps its own; `from`'s goes with `from`.
    Keep,
}

/// The article rule of a merge: a story without an article takes the
/// other's; a fetched, used article that says more replaces the story's
/// text. One still to be fetched is kept: its page may be evidence (its
/// canonical URL, its text) that links further copies.
pub(crate) fn article_merge(
    from: Option<&ArticleFacts>,
    into: Option<&ArticleFacts>,
) -> ArticleMerge {
    match (from, into) {
        (Some(_), None) => ArticleMerge::Move,
        (Some(f), Some(i)) if f.used && i.status != "pending" && (!i.used || i.words < f.words) => {
            ArticleMerge::Replace
        }
        _ => ArticleMerge::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: &str, used: bool, words: i64) -> ArticleFacts {
        ArticleFacts {
            status: status.to_owned(),
            used,
            words,
        }
    }

    #[test]
    fn the_earliest_story_absorbs_the_others_ties_by_id() {
        assert_eq!(merge_order((5, 100), &[]), (5, vec![]));
        assert_eq!(merge_order((5, 100), &[(9, 50), (3, 200)]), (9, vec![5, 3]));
        assert_eq!(
            merge_order((5, 100), &[(4, 100), (6, 100)]),
            (4, vec![5, 6])
        );
    }

    #[test]
    fn an_article_moves_to_a_story_without_one_and_replaces_only_with_more() {
        let done = |used, words| facts("done", used, words);
        assert_eq!(article_merge(None, None), ArticleMerge::Keep);
        assert_eq!(
            article_merge(None, Some(&done(true, 10))),
            ArticleMerge::Keep
        );
        assert_eq!(
            article_merge(Some(&facts("pending", false, 0)), None),
            ArticleMerge::Move
        );
        assert_eq!(
            article_merge(Some(&done(true, 900)), Some(&done(true, 300))),
            ArticleMerge::Replace
        );
        assert_eq!(
            article_merge(Some(&done(true, 300)), Some(&done(true, 900))),
            ArticleMerge::Keep
        );
        // The story's own text was not used: a used one replaces it.
        assert_eq!(
            article_merge(Some(&done(true, 10)), Some(&done(false, 900))),
            ArticleMerge::Replace
        );
        // An unused article never replaces; a pending one is kept.
        assert_eq!(
            article_merge(Some(&done(false, 900)), Some(&done(true, 10))),
            ArticleMerge::Keep
        );
        assert_eq!(
            article_merge(Some(&done(true, 900)), Some(&facts("pending", false, 0))),
            ArticleMerge::Keep
        );
    }

    #[test]
    fn evidence_from_rows_skips_a_damaged_print_and_keeps_listings() {
        let rows = StoryRows {
            url_keys: vec!["https://n.example/a".into()],
            listings: vec![(Some("A title".into()), Some(10))],
            prints: vec![PrintRow {
                words: 200,
                simhash: 1,
                minhash: vec![1, 2, 3],
                published: None,
                site: None,
                page: None,
            }],
        };
        let ev = Evidence::of_rows(rows);
        assert_eq!(ev.url_keys(), ["https://n.example/a"]);
        assert!(ev.lsh_keys().is_empty());
        let copy = Evidence::of_listing(&["https://n.example/a".into()], Some("A title"), Some(20));
        assert!(same_story(&ev, &copy));
    }
}
