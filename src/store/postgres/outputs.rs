//! Entries for the outputs on PostgreSQL: filters, paging, search, the
//! feeds each entry came from; and the search queue the indexer drains,
//! the rules' view of a feed's entries, push targets' state.

use std::collections::HashMap;

use chrono::Utc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::model::{Cursor, OutputEntry, SourceInfo};
use crate::store::{
    EntryQuery, IndexStep, PushOutcome, PushTarget, RuleSubject, SearchDoc, SearchSource,
    StoreError,
};

use super::entries::search_changed;
use super::{PgStore, bump_revision, exec, from_ts, opt_ts, query_one, ts};

fn parse_list<T: serde::de::DeserializeOwned>(s: &str) -> Vec<T> {
    serde_json::from_str(s).unwrap_or_default()
}

fn entry_from_row(r: &Row) -> Result<OutputEntry, tokio_postgres::Error> {
    Ok(OutputEntry {
        cursor: Cursor {
            sort_at: r.try_get(1)?,
            id: r.try_get(0)?,
        },
        uid: r.try_get(2)?,
        title: r.try_get(3)?,
        link: r.try_get(4)?,
        content_html: r.try_get(5)?,
        content_base: r.try_get(11)?,
        content_is_article: r.try_get(12)?,
        authors: parse_list(&r.try_get::<_, String>(6)?),
        categories: parse_list(&r.try_get::<_, String>(7)?),
        enclosures: parse_list(&r.try_get::<_, String>(8)?),
        published: opt_ts(r.try_get(9)?),
        updated: from_ts(r.try_get(10)?),
        sources: Vec::new(),
    })
}

/// The `include`/`exclude` patterns, compiled with the same regex engine
/// as on SQLite (PostgreSQL's own `~` reads another dialect), and applied
/// to title and content as the output shows them.
struct Patterns {
    include: Option<regex::Regex>,
    exclude: Option<regex::Regex>,
}

impl Patterns {
    fn of(q: &EntryQuery) -> Result<Patterns, StoreError> {
        let compile = |p: &Option<String>| -> Result<Option<regex::Regex>, StoreError> {
            p.as_deref()
                .map(regex::Regex::new)
                .transpose()
                .map_err(|e| StoreError::Batch(format!("invalid filter pattern: {e}")))
        };
        Ok(Patterns {
            include: compile(&q.include)?,
            exclude: compile(&q.exclude)?,
        })
    }

    fn any(&self) -> bool {
        self.include.is_some() || self.exclude.is_some()
    }

    fn keep(&self, e: &OutputEntry) -> bool {
        let title = e.title.as_deref().unwrap_or_default();
        let content = e.content_html.as_deref().unwrap_or_default();
        let hit = |re: &regex::Regex| re.is_match(title) || re.is_match(content);
        self.include.as_ref().is_none_or(hit) && !self.exclude.as_ref().is_some_and(hit)
    }
}

impl PgStore {
    /// Entries for an output, newest first (or, with `since_id`, in
    /// storage order). Filters by tag, feed and search run in SQL; the
    /// include/exclude patterns in Rust, page by page, until the page is
    /// full or the entries run out.
    pub(in crate::store) async fn entries(
        &self,
        q: EntryQuery,
    ) -> Result<Vec<OutputEntry>, StoreError> {
        let patterns = Patterns::of(&q)?;
        let client = self.client().await?;
        let forward = q.since_id.is_some();
        let mut out: Vec<OutputEntry> = Vec::new();
        let mut after = q.after;
        let mut since = q.since_id;
        // With patterns, read ahead in larger pages: most rows may fail.
        let page = if patterns.any() {
            q.limit.saturating_mul(4).clamp(50, 2_000)
        } else {
            q.limit
        };
        let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
        loop {
            let mut sql = String::from(
                "SELECT e.id, e.sort_at, e.uid, e.title, e.link,
                        CASE WHEN a.used THEN a.html ELSE e.content_html END,
                        e.authors, e.categories, e.enclosures, e.published_at, e.updated_at,
                        CASE WHEN a.used THEN NULL ELSE e.content_base END,
                        coalesce(a.used, false)
                 FROM entry e LEFT JOIN article a ON a.entry_id = e.id
                 WHERE true",
            );
            let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            let mut arg = |sql: &mut String, text: &str, v: Box<dyn ToSql + Sync + Send>| {
                args.push(v);
                sql.push_str(&text.replace("$?", &format!("${}", args.len())));
            };
            if !forward && let Some(c) = after {
                arg(
                    &mut sql,
                    " AND (e.sort_at, e.id) < ($?",
                    Box::new(c.sort_at),
                );
                arg(&mut sql, ", $?)", Box::new(c.id));
            }
            if let Some(id) = since {
                arg(&mut sql, " AND e.id > $?", Box::new(id));
            }
            if !q.tags.is_empty() {
                arg(
                    &mut sql,
                    " AND e.id IN (SELECT s.entry_id FROM entry_source s
                      JOIN feed_tag t ON t.feed_id = s.feed_id WHERE t.tag = ANY($?))",
                    Box::new(q.tags.clone()),
                );
            }
            if !q.feeds.is_empty() {
                arg(
                    &mut sql,
                    " AND e.id IN (SELECT s.entry_id FROM entry_source s
                      JOIN feed f ON f.id = s.feed_id WHERE f.url = ANY($?))",
                    Box::new(q.feeds.clone()),
                );
            }
            if let Some(words) = search {
                arg(
                    &mut sql,
                    " AND e.id IN (SELECT entry_id FROM entry_search
                      WHERE doc @@ plainto_tsquery('simple', $?))",
                    Box::new(words.to_owned()),
                );
            }
            sql.push_str(if forward {
                " ORDER BY e.id"
            } else {
                " ORDER BY e.sort_at DESC, e.id DESC"
            });
            arg(
                &mut sql,
                " LIMIT $?",
                Box::new(i64::try_from(page).unwrap_or(i64::MAX)),
            );
            let params: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client.query(&sql, &params).await?;
            let fetched = rows.len();
            for row in &rows {
                let e = entry_from_row(row)?;
                after = Some(e.cursor);
                since = since.map(|_| e.cursor.id);
                if patterns.keep(&e) {
                    out.push(e);
                    if out.len() == q.limit {
                        break;
                    }
                }
            }
            if out.len() >= q.limit || fetched < page || !patterns.any() {
                break;
            }
        }
        self.attach_sources(&client, &mut out).await?;
        Ok(out)
    }

    /// Every feed that carried each entry, first seen first.
    async fn attach_sources(
        &self,
        client: &deadpool_postgres::Object,
        entries: &mut [OutputEntry],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = entries.iter().map(|e| e.cursor.id).collect();
        let rows = client
            .query(
                "SELECT s.entry_id, f.url, coalesce(f.title, f.site_title, f.url), f.site_url,
                        s.link
                 FROM entry_source s JOIN feed f ON f.id = s.feed_id
                 WHERE s.entry_id = ANY($1)
                 ORDER BY s.entry_id, s.first_seen_at, s.seq",
                &[&ids],
            )
            .await?;
        let mut by_id: HashMap<i64, Vec<SourceInfo>> = HashMap::new();
        for r in rows {
            by_id.entry(r.try_get(0)?).or_default().push(SourceInfo {
                feed_url: r.try_get(1)?,
                title: r.try_get(2)?,
                site_url: r.try_get(3)?,
                link: r.try_get(4)?,
            });
        }
        for e in entries {
            e.sources = by_id.remove(&e.cursor.id).unwrap_or_default();
        }
        Ok(())
    }

    /// Up to `max` queued entries, oldest first, as the outputs show them.
    pub(in crate::store) async fn search_batch(
        &self,
        max: usize,
    ) -> Result<Vec<SearchSource>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT p.entry_id, p.gen, e.title, coalesce(a.html, e.content_html)
                 FROM search_pending p
                 JOIN entry e ON e.id = p.entry_id
                 LEFT JOIN article a ON a.entry_id = p.entry_id AND a.used
                 ORDER BY p.entry_id
                 LIMIT $1",
                &[&i64::try_from(max).unwrap_or(i64::MAX)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SearchSource {
                    entry_id: r.try_get(0)?,
                    generation: r.try_get(1)?,
                    title: r.try_get(2)?,
                    html: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Indexes `docs` and takes them off the queue, except those queued
    /// again (changed) since they were read, in one transaction and one
    /// statement for the whole batch. Rows are locked with SKIP LOCKED:
    /// two nodes' indexers never wait for, nor index, the same entry at
    /// once.
    pub(in crate::store) async fn write_search(
        &self,
        docs: Vec<SearchDoc>,
    ) -> Result<IndexStep, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids: Vec<i64> = docs.iter().map(|d| d.entry_id).collect();
        let gens: Vec<i64> = docs.iter().map(|d| d.generation).collect();
        let titles: Vec<&str> = docs.iter().map(|d| d.title.as_str()).collect();
        let words: Vec<&str> = docs.iter().map(|d| d.words.as_str()).collect();
        // The tsvector row is replaced whole: no separate delete.
        let indexed = exec(
            &tx,
            "WITH taken AS (
                 DELETE FROM search_pending WHERE entry_id IN (
                     SELECT p.entry_id FROM search_pending p
                     JOIN unnest($1::bigint[], $2::bigint[]) AS w(id, gen)
                       ON w.id = p.entry_id AND w.gen = p.gen
                     FOR UPDATE OF p SKIP LOCKED)
                 RETURNING entry_id)
             INSERT INTO entry_search (entry_id, doc)
             SELECT d.id, setweight(to_tsvector('simple', d.title), 'A')
                          || to_tsvector('simple', d.words)
             FROM unnest($1::bigint[], $3::text[], $4::text[]) AS d(id, title, words)
             JOIN taken ON taken.entry_id = d.id
             ON CONFLICT (entry_id) DO UPDATE SET doc = excluded.doc",
            &[&ids, &gens, &titles, &words],
        )
        .await?;
        if indexed > 0 {
            search_changed(&tx, Utc::now()).await?;
        }
        let more = query_one(&tx, "SELECT EXISTS (SELECT 1 FROM search_pending)", &[])
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(IndexStep {
            indexed: usize::try_from(indexed).unwrap_or(usize::MAX),
            more,
        })
    }

    /// A feed's stored entries as its keep/block rules read them.
    pub(in crate::store) async fn feed_entries_for_rules(
        &self,
        feed_id: i64,
    ) -> Result<Vec<RuleSubject>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT e.id, s.entry_key, e.title, e.content_html, e.authors, e.categories
                 FROM entry_source s JOIN entry e ON e.id = s.entry_id WHERE s.feed_id = $1",
                &[&feed_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RuleSubject {
                    entry_id: r.try_get(0)?,
                    key: r.try_get(1)?,
                    title: r.try_get(2)?,
                    content: r.try_get(3)?,
                    authors: parse_list(&r.try_get::<_, String>(4)?),
                    categories: parse_list(&r.try_get::<_, String>(5)?),
                })
            })
            .collect()
    }

    /// Drops the feed's claim on the entries with these keys, and each
    /// entry no other feed carries; how many claims were dropped.
    pub(in crate::store) async fn release_entries(
        &self,
        feed_id: i64,
        keys: Vec<String>,
        now: chrono::DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let released: Vec<i64> = tx
            .query(
                "DELETE FROM entry_source WHERE feed_id = $1 AND entry_key = ANY($2)
                 RETURNING entry_id",
                &[&feed_id, &keys],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if !released.is_empty() {
            tx.execute(
                "DELETE FROM entry WHERE id = ANY($1)
                   AND NOT EXISTS (SELECT 1 FROM entry_source WHERE entry_id = entry.id)",
                &[&released],
            )
            .await?;
            bump_revision(&tx, now).await?;
        }
        tx.commit().await?;
        Ok(released.len())
    }

    /// A push target's state, created at the newest entry when new.
    pub(in crate::store) async fn push_target(
        &self,
        output: &str,
        target: &str,
    ) -> Result<PushTarget, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO push_target (output, target, delivered_id)
                 VALUES ($1, $2, (SELECT coalesce(max(id), 0) FROM entry))
                 ON CONFLICT DO NOTHING",
                &[&output, &target],
            )
            .await?;
        let r = client
            .query_one(
                "SELECT delivered_id, attempts, retry_at, last_error FROM push_target
                 WHERE output = $1 AND target = $2",
                &[&output, &target],
            )
            .await?;
        Ok(PushTarget {
            delivered_id: r.try_get(0)?,
            attempts: r.try_get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
            retry_at: opt_ts(r.try_get(2)?),
            last_error: r.try_get(3)?,
        })
    }

    /// Records a push attempt.
    pub(in crate::store) async fn record_push(
        &self,
        output: &str,
        target: &str,
        outcome: PushOutcome,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        match outcome {
            PushOutcome::Delivered { up_to } => {
                client
                    .execute(
                        "UPDATE push_target SET delivered_id = greatest(delivered_id, $3),
                             attempts = 0, retry_at = NULL, last_error = NULL
                         WHERE output = $1 AND target = $2",
                        &[&output, &target, &up_to],
                    )
                    .await?
            }
            PushOutcome::Failed { error, retry_at } => {
                client
                    .execute(
                        "UPDATE push_target SET attempts = attempts + 1, retry_at = $3,
                             last_error = $4
                         WHERE output = $1 AND target = $2",
                        &[&output, &target, &ts(retry_at), &error],
                    )
                    .await?
            }
        };
        Ok(())
    }
}
