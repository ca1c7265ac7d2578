//! Keep/block rules: which of a feed's entries are stored. Pure: the
//! poll applies them to a parsed feed before the store sees it, and
//! `feeds refilter` to what is stored.

use regex::Regex;

use crate::model::{EntryRule, EntryRules, ParsedEntry, RuleField};

/// A feed's rules, compiled once per poll.
#[derive(Debug, Default)]
pub struct Rules {
    keep: Vec<(RuleField, Regex)>,
    block: Vec<(RuleField, Regex)>,
}

/// The parts of an entry the rules read.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub title: Option<&'a str>,
    pub content: Option<&'a str>,
    pub authors: &'a [String],
    pub categories: &'a [String],
}

impl<'a> From<&'a ParsedEntry> for Subject<'a> {
    fn from(e: &'a ParsedEntry) -> Self {
        Subject {
            title: e.title.as_deref(),
            content: e.content_html.as_deref(),
            authors: &e.authors,
            categories: &e.categories,
        }
    }
}

impl Rules {
    /// Compiles `rules`; a pattern that does not compile (one stored by
    /// an older version, say) is left out rather than failing every poll.
    pub fn new(rules: &EntryRules) -> Rules {
        let compile = |list: &[EntryRule]| {
            list.iter()
                .filter_map(|r| Regex::new(&r.pattern).ok().map(|re| (r.field, re)))
                .collect()
        };
        Rules {
            keep: compile(&rules.keep),
            block: compile(&rules.block),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keep.is_empty() && self.block.is_empty()
    }

    /// Whether an entry is stored: no block rule matches it, and a keep
    /// rule does when there are any.
    pub fn allows(&self, entry: Subject<'_>) -> bool {
        let matches = |(field, re): &(RuleField, Regex)| match field {
            RuleField::Title => entry.title.is_some_and(|t| re.is_match(t)),
            RuleField::Content => entry.content.is_some_and(|c| re.is_match(c)),
            RuleField::Author => entry.authors.iter().any(|a| re.is_match(a)),
            RuleField::Categories => entry.categories.iter().any(|c| re.is_match(c)),
        };
        !self.block.iter().any(matches) && (self.keep.is_empty() || self.keep.iter().any(matches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(field: RuleField, pattern: &str) -> EntryRule {
        EntryRule {
            field,
            pattern: pattern.to_owned(),
        }
    }

    #[test]
    fn keep_needs_one_match_and_block_wins() {
        let rules = Rules::new(&EntryRules {
            keep: vec![
                rule(RuleField::Title, "(?i)rust"),
                rule(RuleField::Categories, "^lang$"),
            ],
            block: vec![
                rule(RuleField::Author, "(?i)bot"),
                rule(RuleField::Content, "sponsored"),
            ],
        });
        let authors = ["Ada".to_owned()];
        let bot = ["Ada".to_owned(), "ReleaseBot".to_owned()];
        let lang = ["news".to_owned(), "lang".to_owned()];
        let cases: Vec<(Subject<'_>, bool)> = vec![
            (
                Subject {
                    title: Some("Rust 2.0"),
                    content: None,
                    authors: &authors,
                    categories: &[],
                },
                true,
            ),
            (
                Subject {
                    title: Some("Go 2.0"),
                    content: None,
                    authors: &authors,
                    categories: &[],
                },
                false,
            ),
            (
                Subject {
                    title: None,
                    content: Some("<p>x</p>"),
                    authors: &[],
                    categories: &lang,
                },
                true,
            ),
            (
                Subject {
                    title: Some("Rust 2.0"),
                    content: None,
                    authors: &bot,
                    categories: &[],
                },
                false,
            ),
            (
                Subject {
                    title: Some("RUST"),
                    content: Some("<p>sponsored</p>"),
                    authors: &[],
                    categories: &[],
                },
                false,
            ),
            (
                Subject {
                    title: None,
                    content: None,
                    authors: &[],
                    categories: &[],
                },
                false,
            ),
        ];
        for (i, (s, allowed)) in cases.into_iter().enumerate() {
            assert_eq!(rules.allows(s), allowed, "case {i}");
        }
        // No rules: everything; block only: all but the blocked.
        assert!(Rules::new(&EntryRules::default()).allows(Subject {
            title: None,
            content: None,
            authors: &[],
            categories: &[]
        }));
        let block = Rules::new(&EntryRules {
            keep: vec![],
            block: vec![rule(RuleField::Title, "x")],
        });
        assert!(block.allows(Subject {
            title: Some("y"),
            content: None,
            authors: &[],
            categories: &[]
        }));
        assert!(!block.allows(Subject {
            title: Some("x"),
            content: None,
            authors: &[],
            categories: &[]
        }));
        // A pattern that does not compile is left out.
        assert!(
            Rules::new(&EntryRules {
                keep: vec![rule(RuleField::Title, "(")],
                block: vec![]
            })
            .is_empty()
        );
    }
}
