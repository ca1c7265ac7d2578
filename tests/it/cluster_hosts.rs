//! Per-host politeness across a cluster: three real `tributary run`
//! processes on one PostgreSQL database share the feeds of one crowded
//! host (feeds and their article pages) and of a few other hosts. Across
//! all nodes the crowded host never has more requests in flight than
//! `per_host_concurrency`, its request starts stay `per_host_spacing`
//! apart, the other hosts' feeds are polled on time, and every node
//! works. Skipped (saying so) without `TRIBUTARY_TEST_POSTGRES`.

use std::time::{Duration, Instant};

use crate::support::{Daemon, FeedServer, PgDatabase, Seen, SharedHost, TestEnv, shared_host};

/// The node (its User-Agent) that sent a request.
fn node_of(seen: &Seen) -> String {
    seen.headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Every request a server saw, by start.
fn all_requests(server: &FeedServer, paths: &[String]) -> Vec<Seen> {
    let mut seen: Vec<Seen> = paths.iter().flat_map(|p| server.requests(p)).collect();
    seen.sort_by_key(|s| s.at);
    seen
}

struct Cluster {
    envs: Vec<TestEnv>,
    daemons: Vec<Option<Daemon>>,
}

/// Starts `n` nodes on `db`, each with its own config (its own port and
/// User-Agent `node-<i>`), the same `[poll]` keys, tables and feeds.
async fn start_cluster(
    n: usize,
    db: &PgDatabase,
    poll: &[(&str, &str)],
    tables: &str,
    feeds: &str,
) -> Cluster {
    let mut envs = Vec::new();
    let mut daemons = Vec::new();
    for i in 0..n {
        let agent = format!("\"node-{i}\"");
        let mut keys: Vec<(&str, &str)> = poll.to_vec();
        keys.push(("user_agent", &agent));
        let env = TestEnv::with_config(&keys, tables, feeds);
        daemons.push(Some(
            env.spawn_daemon_with(&[("TRIBUTARY_DATABASE", &db.url)]),
        ));
        envs.push(env);
    }
    for env in &envs {
        env.wait_healthy().await;
    }
    Cluster { envs, daemons }
}

impl Cluster {
    fn logs(&self) -> String {
        self.daemons
            .iter()
            .flatten()
            .map(|d| {
                let log = d.log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Stops every node still running (SIGTERM), each must exit cleanly.
    fn stop(&mut self) {
        for d in &mut self.daemons {
            if let Some(d) = d.take() {
                let (status, log) = d.stop();
                assert!(status.success(), "{log}");
            }
        }
        let _ = &self.envs;
    }
}

/// The defaults: one request at a time to a host, a second apart. Three
/// nodes, 150 feeds on one host, each with its article page there (full
/// text on), plus two feeds on each of six other hosts: the crowded host
/// sees one request at a time, starts at least a second apart (less a
/// little for the loopback's jitter), from whichever node holds it, and
/// keeps its pace; the other hosts' feeds are polled from the start and
/// every few seconds; every node polled something.
#[tokio::test]
async fn three_nodes_keep_the_default_per_host_limits_together() {
    const CROWD: usize = 150;
    const WATCH: Duration = Duration::from_secs(20);
    let Some(db) = PgDatabase::create("three_nodes_keep_the_default_per_host_limits").await else {
        return;
    };
    let SharedHost {
        crowded,
        crowd_paths,
        others,
        tables,
    } = shared_host(
        CROWD,
        Duration::ZERO,
        "interval = \"2s\"",
        &[
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.5",
            "127.0.0.6",
            "127.0.0.7",
        ],
        "interval = \"3s\"",
    )
    .await;
    let started = Instant::now();
    let mut cluster = start_cluster(
        3,
        &db,
        &[
            ("interval", "\"1h\""),
            ("concurrency", "8"),
            ("per_host_concurrency", "1"),
            ("per_host_spacing", "\"1s\""),
        ],
        "[extract]\nfull_text = true\n",
        &tables,
    )
    .await;
    tokio::time::sleep(WATCH).await;
    let ended = Instant::now();
    let logs = cluster.logs();
    cluster.stop();

    let crowd = all_requests(&crowded, &crowd_paths);
    // Each feed waits its turn: at one request a second, a feed polled
    // every 2 s comes round again only after the others. (Twice, not
    // once: a node that takes the host over starts its own queue, and a
    // feed polled early and due again may come before the feeds the last
    // holder had deferred to their turns.)
    for path in &crowd_paths {
        let n = crowded.requests(path).len();
        assert!(n <= 2, "{path} asked {n} times");
    }
    assert!(
        crowd.len() >= 10,
        "the crowded host kept its pace: {} requests in {:?}\n{logs}",
        crowd.len(),
        ended - started
    );
    for w in crowd.windows(2) {
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(900),
            "two requests to the crowded host {:?} apart ({} then {}): {} then {}",
            w[1].at - w[0].at,
            node_of(&w[0]),
            node_of(&w[1]),
            w[0].path,
            w[1].path
        );
    }
    let mut nodes = std::collections::BTreeSet::new();
    nodes.extend(crowd.iter().map(node_of));
    for server in &others {
        for j in 0..2 {
            let path = format!("/f{j}.xml");
            let polls = server.requests(&path);
            nodes.extend(polls.iter().map(node_of));
            let Some(first) = polls.first().map(|s| s.at) else {
                panic!("{} never polled\n{logs}", server.url(&path));
            };
            assert!(
                first - started < Duration::from_secs(8),
                "{} first polled {:?} after start",
                server.url(&path),
                first - started
            );
            let mut times: Vec<Instant> = polls.iter().map(|s| s.at).collect();
            times.push(ended);
            for w in times.windows(2) {
                assert!(
                    w[1] - w[0] < Duration::from_secs(7),
                    "{}: {:?} between polls (interval 3 s)\n{logs}",
                    server.url(&path),
                    w[1] - w[0]
                );
            }
            nodes.extend(server.requests(&format!("/story-{j}")).iter().map(node_of));
        }
    }
    assert_eq!(
        nodes.len(),
        3,
        "every node did some of the work: {nodes:?}\n{logs}"
    );
    db.drop_database().await;
}

/// Other limits — two requests at once, 200 ms apart, on a host whose
/// answers take 300 ms — and a node killed (SIGKILL) while it holds the
/// crowded host: no more than two requests are ever in flight to it and
/// their starts stay 200 ms apart, across the nodes and across the
/// takeover, and another node carries on with the host within a lease
/// (timeout + spacing + 12 s) of the kill.
#[tokio::test]
async fn other_limits_hold_and_a_killed_nodes_host_is_taken_over() {
    const CROWD: usize = 200;
    let answer = Duration::from_millis(300);
    let spacing = Duration::from_millis(200);
    let Some(db) = PgDatabase::create("other_limits_hold_and_a_killed_nodes_host").await else {
        return;
    };
    let SharedHost {
        crowded,
        crowd_paths,
        others,
        tables,
    } = shared_host(
        CROWD,
        answer,
        "",
        &["127.0.0.8", "127.0.0.9", "127.0.0.10"],
        "interval = \"2s\"",
    )
    .await;
    let mut cluster = start_cluster(
        3,
        &db,
        &[
            ("interval", "\"1h\""),
            ("timeout", "\"2s\""),
            ("concurrency", "8"),
            ("per_host_concurrency", "2"),
            ("per_host_spacing", "\"200ms\""),
        ],
        "[extract]\nfull_text = true\n",
        &tables,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Kill the node holding the crowded host: the last to send it one.
    let holder = all_requests(&crowded, &crowd_paths)
        .last()
        .map(node_of)
        .unwrap_or_else(|| panic!("the crowded host was polled\n{}", cluster.logs()));
    let index: usize = holder
        .trim_start_matches("node-")
        .parse()
        .expect("node-<i>");
    let killed_at = Instant::now();
    let (_, _) = cluster.daemons[index].take().expect("running").kill();
    let lease = Duration::from_secs(2) + spacing + Duration::from_secs(12);
    let deadline = killed_at + lease + Duration::from_secs(8);
    let taken_over = loop {
        let after: Vec<Seen> = all_requests(&crowded, &crowd_paths)
            .into_iter()
            .filter(|s| s.at > killed_at + answer && node_of(s) != holder)
            .collect();
        if let Some(first) = after.first() {
            break first.at;
        }
        assert!(
            Instant::now() < deadline,
            "no node took the crowded host over within {:?} of the kill\n{}",
            deadline - killed_at,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A little more after the takeover, then stop the rest.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = cluster.logs();
    cluster.stop();

    let crowd = all_requests(&crowded, &crowd_paths);
    assert!(
        taken_over - killed_at <= lease + Duration::from_secs(8),
        "{:?}",
        taken_over - killed_at
    );
    // The server sees each request from its start to its answer, 300 ms
    // later; a little jitter is allowed on each side.
    let slack = Duration::from_millis(40);
    for w in crowd.windows(2) {
        assert!(
            w[1].at - w[0].at >= spacing - slack,
            "two requests to the crowded host {:?} apart ({} then {})",
            w[1].at - w[0].at,
            node_of(&w[0]),
            node_of(&w[1])
        );
    }
    for (i, s) in crowd.iter().enumerate() {
        let in_flight = crowd[..i]
            .iter()
            .filter(|o| o.at + answer > s.at + slack)
            .count()
            + 1;
        assert!(
            in_flight <= 2,
            "{in_flight} requests in flight to the crowded host at once (#{i}, {})\n{logs}",
            node_of(s)
        );
    }
    // The host went from the killed node to another.
    let nodes: std::collections::BTreeSet<String> = crowd.iter().map(node_of).collect();
    assert!(nodes.len() >= 2, "{nodes:?}");
    drop(others);
    db.drop_database().await;
}
