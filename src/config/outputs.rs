//! Phase 2 for `[[output]]`: the named outputs.

use std::collections::HashMap;

use super::raw::{Item, RawOutput};
use super::read::{Field, Reader};
use crate::model::{OutputSpec, Secret};

impl Reader {
    pub(super) fn validate_outputs(
        &mut self,
        raw: Vec<Item<RawOutput>>,
        max_page_size: Option<usize>,
    ) -> Vec<OutputSpec> {
        // Name → (index, line) of its first appearance.
        let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
        let mut outputs = Vec::with_capacity(raw.len());
        for Item {
            index: i,
            line: table_line,
            unknown_key: _,
            raw: output,
        } in raw
        {
            let limit = match output.limit {
                Field::Set(n, line) => match usize::try_from(n) {
                    Ok(limit) if limit >= 1 && max_page_size.is_none_or(|max| limit <= max) => {
                        Some(limit)
                    }
                    _ => {
                        let upper = match max_page_size {
                            Some(max) => format!("server.max_page_size ({max})"),
                            None => "server.max_page_size".to_owned(),
                        };
                        self.problem_at_line(
                            &format!("output[{i}].limit"),
                            line,
                            format!("must be between 1 and {upper}, got {n}"),
                        );
                        None
                    }
                },
                _ => None,
            };
            let name = match output.name {
                Field::Set(name, line) => {
                    if let Some((first, first_line)) = seen.get(&name) {
                        self.problem_at_line(
                            &format!("output[{i}].name"),
                            line,
                            format!(
                                "duplicate output name \"{name}\": already used by output[{first}] on line {first_line}; give each [[output]] its own name"
                            ),
                        );
                    } else {
                        seen.insert(name.clone(), (i, line));
                    }
                    name
                }
                Field::Missing => {
                    self.problem_at_line(
                        &format!("output[{i}].name"),
                        table_line,
                        "missing: every [[output]] needs name = \"…\", e.g. name = \"rust\" to serve it at /o/rust.atom",
                    );
                    continue;
                }
                Field::Invalid => continue,
            };
            let title = output.title.value();
            let tags = output.tags.value().unwrap_or_default();
            let feeds = output.feeds.value().unwrap_or_default();
            let include = output.include.value();
            let exclude = output.exclude.value();
            let webhook = output.webhook.value().unwrap_or_default();
            let webhook_secret = match output.webhook_secret {
                Field::Set(secret, line) if secret.is_empty() => {
                    self.problem_at_line(
                        &format!("output[{i}].webhook_secret"),
                        line,
                        "must not be empty: leave the key out to send unsigned deliveries",
                    );
                    None
                }
                Field::Set(_, line) if webhook.is_empty() => {
                    self.problem_at_line(
                        &format!("output[{i}].webhook_secret"),
                        line,
                        "a webhook_secret signs webhook deliveries: set webhook = [\"https://…\"] too",
                    );
                    None
                }
                Field::Set(secret, _) => Some(Secret(secret)),
                _ => None,
            };
            let ntfy = output.ntfy.value().unwrap_or_default();
            outputs.push(OutputSpec {
                name,
                title,
                tags,
                feeds,
                include,
                exclude,
                limit,
                webhook,
                webhook_secret,
                ntfy,
            });
        }
        outputs
    }
}
