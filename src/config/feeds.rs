//! Phase 2 for `[[feed]]` and `[[site]]`: what to poll and how to clean
//! its article pages.

use std::collections::HashMap;
use std::time::Duration;

use super::raw::{Item, RawFeed, RawSelect, RawSite};
use super::read::{Field, Reader};
use super::values::format_duration;
use crate::model::{EntryRules, FeedSpec, PageRule, RequestOptions, SiteRule};

impl Reader {
    pub(super) fn validate_feeds(
        &mut self,
        raw: Vec<Item<RawFeed>>,
        min_interval: Option<Duration>,
        max_interval: Option<Duration>,
    ) -> Vec<FeedSpec> {
        // URL → (index, line) of its first appearance.
        let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
        let mut feeds = Vec::with_capacity(raw.len());
        for Item {
            index: i,
            line: table_line,
            unknown_key: _,
            raw: feed,
        } in raw
        {
            let url = match feed.url {
                Field::Set(url, line) => {
                    if let Some((first, first_line)) = seen.get(&url) {
                        self.problem_at_line(
                            &format!("feed[{i}].url"),
                            line,
                            format!(
                                "duplicate feed url \"{url}\": already listed as feed[{first}] on line {first_line}"
                            ),
                        );
                    } else {
                        seen.insert(url.clone(), (i, line));
                    }
                    url
                }
                Field::Missing => {
                    self.problem_at_line(
                        &format!("feed[{i}].url"),
                        table_line,
                        "missing: every [[feed]] needs url = \"https://…\"",
                    );
                    continue;
                }
                Field::Invalid => continue,
            };
            let interval = match (feed.interval, min_interval, max_interval) {
                (Field::Set(d, line), Some(min), _) if d < min => {
                    self.problem_at_line(
                        &format!("feed[{i}].interval"),
                        line,
                        format!(
                            "interval ({}) is shorter than poll.min_interval ({}): raise it or lower poll.min_interval",
                            format_duration(d),
                            format_duration(min)
                        ),
                    );
                    None
                }
                (Field::Set(d, line), _, Some(max)) if d > max => {
                    self.problem_at_line(
                        &format!("feed[{i}].interval"),
                        line,
                        format!(
                            "interval ({}) is longer than poll.max_interval ({}): lower it or raise poll.max_interval",
                            format_duration(d),
                            format_duration(max)
                        ),
                    );
                    None
                }
                (Field::Set(d, _), _, _) => Some(d),
                _ => None,
            };
            let request = self.request_options(
                &format!("feed[{i}]"),
                feed.user_agent,
                feed.headers,
                feed.username,
                feed.password,
                feed.proxy,
            );
            let title = feed.title.value();
            let tags = feed.tags.value().unwrap_or_default();
            let full_text = feed.full_text.value();
            let rules = EntryRules {
                keep: feed.keep.value().unwrap_or_default(),
                block: feed.block.value().unwrap_or_default(),
            };
            let page = self.page_rule(i, table_line, feed.page, feed.select);
            feeds.push(FeedSpec {
                url,
                title,
                tags,
                interval,
                full_text,
                request,
                rules,
                page,
            });
        }
        feeds
    }

    /// The page rule of `feed[i]`: `page = true` needs `select.item`, and
    /// `select` needs `page = true`.
    fn page_rule(
        &mut self,
        i: usize,
        table_line: usize,
        page: Field<bool>,
        select: Field<RawSelect>,
    ) -> Option<PageRule> {
        let example = "e.g. select = { item = \"article\", title = \"h2\" }";
        match (page, select) {
            (Field::Set(true, _), Field::Set(select, line)) => {
                let item = match select.item {
                    Field::Set(item, _) => item,
                    Field::Missing => {
                        self.problem_at_line(
                            &format!("feed[{i}].select.item"),
                            line,
                            format!("missing: a page feed needs the CSS selector of its items, {example}"),
                        );
                        return None;
                    }
                    Field::Invalid => return None,
                };
                Some(PageRule {
                    item,
                    title: select.title.value(),
                    link: select.link.value(),
                    date: select.date.value(),
                    summary: select.summary.value(),
                    content: select.content.value(),
                    author: select.author.value(),
                    image: select.image.value(),
                })
            }
            (Field::Set(true, line), Field::Missing) => {
                self.problem_at_line(
                    &format!("feed[{i}].select"),
                    line,
                    format!("missing: page = true reads the page with CSS selectors; add them, {example} (`tributary feeds test URL --item …` shows what they find)"),
                );
                None
            }
            (Field::Set(false, _) | Field::Missing, Field::Set(_, line)) => {
                self.problem_at_line(
                    &format!("feed[{i}].select"),
                    line.max(table_line),
                    "select reads a web page without a feed: set page = true too (or remove select to read the url as a feed)",
                );
                None
            }
            _ => None,
        }
    }

    /// The request options of a `[[feed]]` or `[[site]]` (`prefix`); a
    /// password needs a username.
    fn request_options(
        &mut self,
        prefix: &str,
        user_agent: Field<String>,
        headers: Field<Vec<(String, String)>>,
        username: Field<String>,
        password: Field<String>,
        proxy: Field<String>,
    ) -> RequestOptions {
        if let (Field::Set(_, line), Field::Missing) = (&password, &username) {
            self.problem_at_line(
                &format!("{prefix}.password"),
                *line,
                "a password needs a username: set username too",
            );
        }
        RequestOptions {
            user_agent: user_agent.value(),
            headers: headers.value().unwrap_or_default(),
            username: username.value(),
            password: password.value(),
            proxy: proxy.value(),
        }
    }

    pub(super) fn validate_sites(&mut self, raw: Vec<Item<RawSite>>) -> Vec<SiteRule> {
        // Host → (index, line) of its first appearance.
        let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
        let mut sites = Vec::with_capacity(raw.len());
        for Item {
            index: i,
            line: table_line,
            unknown_key,
            raw: site,
        } in raw
        {
            let host = match site.host {
                Field::Set(host, line) => {
                    if let Some((first, first_line)) = seen.get(&host) {
                        self.problem_at_line(
                            &format!("site[{i}].host"),
                            line,
                            format!(
                                "duplicate site host \"{host}\": already listed as site[{first}] on line {first_line}; merge the two [[site]] tables"
                            ),
                        );
                    } else {
                        seen.insert(host.clone(), (i, line));
                    }
                    Some(host)
                }
                Field::Missing => {
                    self.problem_at_line(
                        &format!("site[{i}].host"),
                        table_line,
                        "missing: every [[site]] needs host = \"example.com\"",
                    );
                    None
                }
                Field::Invalid => None,
            };
            let request = self.request_options(
                &format!("site[{i}]"),
                site.user_agent,
                site.headers,
                site.username,
                site.password,
                site.proxy,
            );
            // A bad selector was reported already; an empty rule is not
            // worth reporting on top of it.
            let (Some(keep), Some(drop)) = (site.keep.or(Vec::new()), site.drop.or(Vec::new()))
            else {
                continue;
            };
            if keep.is_empty() && drop.is_empty() && request.is_empty() && !unknown_key {
                self.problem_at_line(
                    &format!("site[{i}]"),
                    table_line,
                    "a [[site]] needs keep or drop selectors (or both), e.g. keep = [\"article\"] or drop = [\".comments\"]",
                );
                continue;
            }
            if let Some(host) = host {
                sites.push(SiteRule {
                    host,
                    keep,
                    drop,
                    request,
                });
            }
        }
        sites
    }
}
