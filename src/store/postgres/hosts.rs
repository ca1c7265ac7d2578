//! Host leases on PostgreSQL: which node of a cluster may send a host
//! requests. One node holds a host at a time (`host_lease`), so the
//! per-host limits each node keeps in memory (`hosts::HostLimiter`) hold
//! for the cluster; a node serves a host's queue locally for as long as
//! its lease runs, with no database round trip per request.
//!
//! Leases are taken where work is claimed: due feeds and article pages
//! are claimed only on hosts no other node holds (or the claimer's own,
//! within its tenure), and the claimer's leases on their hosts are taken
//! in the same transaction; a job whose host another node took meanwhile
//! is not claimed. Times compared across nodes are the database's clock
//! (`clock_timestamp()`, in milliseconds); a node converts them into its
//! own monotonic clock conservatively (a lease's end from before it asked,
//! a wait from after the answer), so no node's wall clock matters.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio::time::Instant;

use crate::model::{ArticleJob, Feed};
use crate::store::{Claimed, ClusterShare, HostGrant, HostOf, StoreError, Tenant};

use super::articles::{ARTICLE_JOB_COLUMNS, article_job};
use super::feeds::query_feeds;
use super::{PgStore, ts};

/// The database's clock now, in milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// `host_of` in SQL, for a URL as stored (serialised by the `url` crate,
/// so its host is already lowercased and encoded): the text between
/// `scheme://` (and any `user@`) and the port, path, query or fragment.
/// Only the claims' filter uses it, to leave out work on other nodes'
/// hosts; the leases themselves are taken under `host_of`'s own names,
/// so a URL this reads differently is at worst not claimed this round.
fn host_sql(url: &str) -> String {
    format!(
        "lower(substring({url} FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?(\\[[^]]*\\]|[^/?#:]*)'))"
    )
}

/// The claims' filter on a job whose URL is `url`: its host is free (no
/// lease in force, or a lease of this node within its tenure) and not
/// blocked by a 429. `$me`, `$tenure_ms` and `$now_s` are parameters.
fn host_free_sql(url: &str, me: &str, tenure_ms: &str, now_s: &str) -> String {
    let host = host_sql(url);
    format!(
        "NOT EXISTS (SELECT 1 FROM host_lease l WHERE l.host = {host}
                       AND l.expires_at > {NOW_MS}
                       AND (l.node <> {me} OR l.taken_at < {NOW_MS} - {tenure_ms}))
         AND NOT EXISTS (SELECT 1 FROM host_block b WHERE b.host = {host} AND b.until > {now_s})"
    )
}

/// Of the hosts of claimed jobs (in claim order), the ones to take: every
/// host this node holds or with one job; of the others (a backlog, for
/// a node that does not hold it yet) at most `room`; and how many of
/// those it takes.
fn hosts_to_take<'a>(
    hosts: impl Iterator<Item = &'a str>,
    held: &BTreeSet<String>,
    room: usize,
) -> (BTreeSet<String>, usize) {
    let mut count: Vec<(&str, usize)> = Vec::new();
    for h in hosts {
        match count.iter_mut().find(|(c, _)| *c == h) {
            Some((_, n)) => *n += 1,
            None => count.push((h, 1)),
        }
    }
    let mut left = room;
    let take: BTreeSet<String> = count
        .into_iter()
        .filter(|(h, n)| {
            if *n < 2 || held.contains(*h) {
                return true;
            }
            let take = left > 0;
            left = left.saturating_sub(1);
            take
        })
        .map(|(h, _)| h.to_owned())
        .collect();
    (take, room - left)
}

/// The hosts `tenant` holds now.
async fn held_hosts(
    client: &impl GenericClient,
    tenant: &Tenant,
) -> Result<BTreeSet<String>, StoreError> {
    Ok(client
        .query(
            &format!("SELECT host FROM host_lease WHERE node = $1 AND expires_at > {NOW_MS}"),
            &[&tenant.node],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Takes `hosts` for `tenant` where no other node holds them, or its
/// lease ran out (a node's own lease is renewed, its tenure kept); hosts
/// are taken in sorted order, so two nodes taking at once never deadlock.
/// `asked` is when the caller started asking: a lease's end is counted
/// from it on this node's clock.
async fn take(
    client: &impl GenericClient,
    tenant: &Tenant,
    hosts: &BTreeSet<String>,
    asked: Instant,
) -> Result<Vec<HostGrant>, StoreError> {
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let rows = client
        .query(
            &format!(
                "INSERT INTO host_lease AS l (host, node, expires_at, taken_at)
                 SELECT h, $1, {NOW_MS} + $2, {NOW_MS} FROM unnest($3::text[]) AS h
                 ON CONFLICT (host) DO UPDATE SET
                     node = excluded.node,
                     expires_at = excluded.expires_at,
                     taken_at = CASE WHEN l.node = excluded.node THEN l.taken_at
                                     ELSE excluded.taken_at END
                 WHERE l.node = excluded.node OR l.expires_at <= {NOW_MS}
                 RETURNING l.host,
                     greatest(l.next_start,
                              coalesce((SELECT b.until * 1000 FROM host_block b
                                        WHERE b.host = l.host), 0)) - {NOW_MS}"
            ),
            &[&tenant.node, &millis(tenant.lease), &names],
        )
        .await?;
    let answered = Instant::now();
    rows.iter()
        .map(|r| {
            let wait: i64 = r.try_get(1)?;
            Ok(HostGrant {
                host: r.try_get(0)?,
                until: asked + tenant.lease,
                free_at: answered + Duration::from_millis(wait.max(0) as u64),
            })
        })
        .collect()
}

impl PgStore {
    /// Due feeds on hosts free for `tenant`, leased until `lease_until`,
    /// with leases on their hosts, in one transaction (see the module
    /// documentation).
    pub(in crate::store) async fn lease_due_on_hosts(
        &self,
        tenant: &Tenant,
        now: DateTime<Utc>,
        limit: usize,
        lease_until: DateTime<Utc>,
        host_of: HostOf,
        backlog_room: usize,
    ) -> Result<Claimed<Feed>, StoreError> {
        let asked = Instant::now();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let url = "coalesce(f.fetch_url, f.url)";
        let candidates = tx
            .query(
                &format!(
                    "SELECT f.id, {url} FROM feed f
                     WHERE f.status = 'active' AND f.next_check_at <= $1
                       AND {}
                     ORDER BY f.next_check_at, f.last_checked_at NULLS FIRST, f.id
                     LIMIT $2
                     FOR UPDATE OF f SKIP LOCKED",
                    host_free_sql(url, "$3", "$4", "$1")
                ),
                &[&ts(now), &limit, &tenant.node, &millis(tenant.tenure)],
            )
            .await?;
        let candidates: Vec<(i64, Option<String>)> = candidates
            .iter()
            .map(|r| Ok((r.try_get(0)?, host_of(&r.try_get::<_, String>(1)?))))
            .collect::<Result<_, StoreError>>()?;
        let held = held_hosts(&tx, tenant).await?;
        let (hosts, new_backlog_hosts) = hosts_to_take(
            candidates.iter().filter_map(|(_, h)| h.as_deref()),
            &held,
            backlog_room,
        );
        let grants = take(&tx, tenant, &hosts, asked).await?;
        let granted: BTreeSet<&str> = grants.iter().map(|g| g.host.as_str()).collect();
        // A URL without a host is no host's: it fails on its own.
        let ids: Vec<i64> = candidates
            .iter()
            .filter(|(_, h)| h.as_deref().is_none_or(|h| granted.contains(h)))
            .map(|(id, _)| *id)
            .collect();
        tx.execute(
            "UPDATE feed SET next_check_at = $2, schedule_reason = 'polling' WHERE id = ANY($1)",
            &[&ids, &ts(lease_until)],
        )
        .await?;
        let mut feeds = query_feeds(&tx, "WHERE f.id = ANY($1)", &[&ids]).await?;
        tx.commit().await?;
        let order: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        feeds.sort_by_key(|f| order.get(&f.id).copied().unwrap_or(usize::MAX));
        Ok(Claimed {
            jobs: feeds,
            hosts: grants,
            new_backlog_hosts,
        })
    }

    /// Due article pages on hosts free for `tenant`, leased until `until`,
    /// with leases on their hosts, in one transaction.
    pub(in crate::store) async fn claim_articles_on_hosts(
        &self,
        tenant: &Tenant,
        now: DateTime<Utc>,
        limit: usize,
        until: DateTime<Utc>,
        host_of: HostOf,
        backlog_room: usize,
    ) -> Result<Claimed<ArticleJob>, StoreError> {
        let asked = Instant::now();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {ARTICLE_JOB_COLUMNS}
                     FROM article a
                     JOIN entry e ON e.id = a.entry_id
                     JOIN feed f ON f.id = a.feed_id AND f.status = 'active'
                     WHERE a.status = 'pending' AND a.next_attempt_at <= $1
                       AND {}
                     ORDER BY a.next_attempt_at, a.entry_id
                     LIMIT $2
                     FOR UPDATE OF a SKIP LOCKED",
                    host_free_sql("a.url", "$3", "$4", "$1")
                ),
                &[&ts(now), &limit, &tenant.node, &millis(tenant.tenure)],
            )
            .await?;
        let jobs = rows
            .iter()
            .map(article_job)
            .collect::<Result<Vec<_>, StoreError>>()?;
        let job_hosts: Vec<String> = jobs.iter().filter_map(|j| host_of(&j.url)).collect();
        let held = held_hosts(&tx, tenant).await?;
        let (hosts, new_backlog_hosts) =
            hosts_to_take(job_hosts.iter().map(String::as_str), &held, backlog_room);
        let grants = take(&tx, tenant, &hosts, asked).await?;
        let granted: BTreeSet<&str> = grants.iter().map(|g| g.host.as_str()).collect();
        let jobs: Vec<ArticleJob> = jobs
            .into_iter()
            .filter(|j| host_of(&j.url).is_none_or(|h| granted.contains(h.as_str())))
            .collect();
        let ids: Vec<i64> = jobs.iter().map(|j| j.entry_id).collect();
        tx.execute(
            "UPDATE article SET next_attempt_at = $2 WHERE entry_id = ANY($1)",
            &[&ids, &ts(until)],
        )
        .await?;
        tx.commit().await?;
        Ok(Claimed {
            jobs,
            hosts: grants,
            new_backlog_hosts,
        })
    }

    /// Records this node's heartbeat and backlog, ends its tenure of
    /// `leaving`, and reads the live nodes and their backlogs, in one
    /// transaction.
    pub(in crate::store) async fn heartbeat(
        &self,
        tenant: &Tenant,
        backlog: usize,
        leaving: Vec<String>,
    ) -> Result<ClusterShare, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mine = i64::try_from(backlog).unwrap_or(i64::MAX);
        tx.execute(
            &format!(
                "INSERT INTO cluster_node (node, seen_at, backlog) VALUES ($1, {NOW_MS}, $2)
                 ON CONFLICT (node) DO UPDATE SET seen_at = excluded.seen_at,
                     backlog = excluded.backlog"
            ),
            &[&tenant.node, &mine],
        )
        .await?;
        if !leaving.is_empty() {
            tx.execute(
                "UPDATE host_lease SET taken_at = 0 WHERE node = $1 AND host = ANY($2)",
                &[&tenant.node, &leaving],
            )
            .await?;
        }
        let row = tx
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(sum(backlog), 0)::bigint FROM cluster_node
                     WHERE seen_at > {NOW_MS} - 5000"
                ),
                &[],
            )
            .await?;
        tx.commit().await?;
        let (nodes, total): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(ClusterShare {
            nodes: usize::try_from(nodes).unwrap_or(1).max(1),
            backlog: usize::try_from(total).unwrap_or(0).max(backlog),
        })
    }

    pub(in crate::store) async fn leave_cluster(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute("DELETE FROM cluster_node WHERE node = $1", &[&tenant.node])
            .await?;
        Ok(())
    }

    /// Takes `hosts` for `tenant` where no other node holds them.
    pub(in crate::store) async fn take_hosts(
        &self,
        tenant: &Tenant,
        hosts: Vec<String>,
    ) -> Result<Vec<HostGrant>, StoreError> {
        let asked = Instant::now();
        let client = self.client().await?;
        take(&client, tenant, &hosts.into_iter().collect(), asked).await
    }

    /// Renews `keep` and hands `release` back (with the wait the next
    /// holder owes each), in one transaction; returns the grants of the
    /// hosts of `keep` still this node's. Once a minute, hosts handed back
    /// more than an hour ago whose wait is over are forgotten.
    pub(in crate::store) async fn renew_hosts(
        &self,
        tenant: &Tenant,
        keep: Vec<String>,
        release: Vec<(String, Duration)>,
    ) -> Result<Vec<HostGrant>, StoreError> {
        let asked = Instant::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut grants = Vec::new();
        if !keep.is_empty() {
            let mut keep = keep;
            keep.sort();
            let rows = tx
                .query(
                    &format!(
                        "UPDATE host_lease SET expires_at = {NOW_MS} + $2
                         WHERE node = $1 AND host = ANY($3) RETURNING host"
                    ),
                    &[&tenant.node, &millis(tenant.lease), &keep],
                )
                .await?;
            let answered = Instant::now();
            for r in rows {
                grants.push(HostGrant {
                    host: r.try_get(0)?,
                    until: asked + tenant.lease,
                    free_at: answered,
                });
            }
        }
        if !release.is_empty() {
            let (hosts, waits): (Vec<String>, Vec<i64>) =
                release.into_iter().map(|(h, w)| (h, millis(w))).unzip();
            tx.execute(
                &format!(
                    "UPDATE host_lease l SET node = '', expires_at = {NOW_MS},
                         next_start = greatest(l.next_start, {NOW_MS} + r.wait)
                     FROM unnest($2::text[], $3::bigint[]) AS r(host, wait)
                     WHERE l.host = r.host AND l.node = $1"
                ),
                &[&tenant.node, &hosts, &waits],
            )
            .await?;
            let minute = ts(Utc::now()) / 60;
            let last = self
                .hosts_pruned
                .swap(minute, std::sync::atomic::Ordering::Relaxed);
            if last != minute {
                tx.execute(
                    &format!(
                        "DELETE FROM host_lease WHERE node = '' AND expires_at < {NOW_MS} - 3600000
                           AND next_start < {NOW_MS}"
                    ),
                    &[],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(grants)
    }
}
