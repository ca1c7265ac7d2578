//! `tributary migrate-db --to URL`: a SQLite database made by real polls
//! is copied into PostgreSQL and compared there table by table; the
//! SQLite file is left as it was, a database already holding data is
//! refused untouched, and the URL's password never shows. The PostgreSQL
//! half is skipped (saying so) without `TRIBUTARY_TEST_POSTGRES`.

use crate::support::{FeedServer, Reply, TestEnv, feed_table, free_port, stderr, stdout};

/// Tables holding user data, compared row for row after a migration.
const TABLES: &[&str] = &[
    "feed",
    "feed_tag",
    "entry",
    "entry_source",
    "entry_url",
    "entry_print",
    "entry_lsh",
    "article",
    "tombstone",
    "feed_day",
    "host_block",
    "push_target",
];

const PARAGRAPHS: [&str; 4] = [
    "The harbour authority confirmed on Tuesday that the new breakwater will be finished two months ahead of schedule, after crews worked through the calmer autumn weeks.",
    "Engineers said the structure, which stretches nearly a kilometre into the bay, should protect the fishing fleet from the winter storms that damaged dozens of boats last year.",
    "Local fishermen welcomed the news but warned that the cost of repairs from previous storms had left many families in debt, and asked the council for more support.",
    "The council said a compensation scheme would open in January and that applications could be made online or at the harbour office during the week.",
];

fn page(title: &str) -> String {
    let body: String = PARAGRAPHS
        .iter()
        .map(|p| format!("<p>{title}: {p}</p>\n"))
        .collect();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><main><article><h1>{title}</h1>{body}</article></main></body></html>"
    )
}

/// An RSS document whose items (guid, title, path) link pages on `server`.
fn rss(server: &FeedServer, name: &str, items: &[(&str, &str, &str)]) -> String {
    let items: String = items
        .iter()
        .map(|(guid, title, path)| {
            // Dated by the page, so copies of a story in two feeds agree.
            let day = path.chars().last().unwrap_or('0');
            format!(
                "<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title>\
                 <link>{}</link><description>Teaser &lt;b&gt;{title}&lt;/b&gt;</description>\
                 <pubDate>1{day} Nov 2026 10:00:00 GMT</pubDate><category>news</category></item>",
                server.url(path)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>{name}</title>\
         <link>{}</link><description>d</description>{items}</channel></rss>",
        server.url("/")
    )
}

/// A SQLite database made by real polls: three feeds (one with request
/// options and tags), a story carried by two feeds, articles fetched,
/// entries purged by retention (tombstones), poll history.
async fn polled_database() -> (FeedServer, TestEnv) {
    let server = FeedServer::start().await;
    let a_items: Vec<(String, String, String)> = (1..=6)
        .map(|i| (format!("a{i}"), format!("Story A{i}"), format!("/a/{i}")))
        .collect();
    let a_refs: Vec<(&str, &str, &str)> = a_items
        .iter()
        .map(|(g, t, p)| (g.as_str(), t.as_str(), p.as_str()))
        .collect();
    server.set(
        "/a.xml",
        Reply::feed("application/rss+xml", rss(&server, "Feed A", &a_refs)),
    );
    // Feed B carries A's newest story under its own guid: one story, two
    // sources.
    server.set(
        "/b.xml",
        Reply::feed(
            "application/rss+xml",
            rss(
                &server,
                "Feed B",
                &[("b2", "Story B2", "/b/2"), ("b-copy", "Story A6", "/a/6")],
            ),
        )
        .requiring("x-token", "s3"),
    );
    server.set(
        "/c.xml",
        Reply::feed(
            "application/rss+xml",
            rss(&server, "Feed C", &[("c1", "Story C1", "/c/1")]),
        ),
    );
    for path in [
        "/a/1", "/a/2", "/a/3", "/a/4", "/a/5", "/a/6", "/b/2", "/c/1",
    ] {
        server.set(
            path,
            Reply::feed("text/html; charset=utf-8", page(&format!("Page {path}"))),
        );
    }
    let feeds = format!(
        "{}{}{}",
        feed_table(&server.url("/a.xml"), "tags = [\"news\", \"local\"]"),
        feed_table(
            &server.url("/b.xml"),
            "user_agent = \"MigratingReader/1.0\"\nheaders = { X-Token = \"s3\" }"
        ),
        feed_table(&server.url("/c.xml"), "title = \"Feed C, renamed\""),
    );
    let env = TestEnv::with_config(&[], "[retention]\nmax_entries_per_feed = 4\n", &feeds);
    let out = env.cli(&["poll"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.cli(&["purge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("tombstones: 2 added"),
        "{}",
        stdout(&out)
    );
    (server, env)
}

/// A fresh database on the test server, or `None` (having said so) when
/// `TRIBUTARY_TEST_POSTGRES` is unset.
async fn fresh_database(test: &str) -> Option<(tokio_postgres::Client, String, url::Url)> {
    let Ok(server) = std::env::var("TRIBUTARY_TEST_POSTGRES") else {
        assert!(
            std::env::var("TRIBUTARY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "TRIBUTARY_REQUIRE_POSTGRES=1 but TRIBUTARY_TEST_POSTGRES is not set"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{test}: SKIPPED (TRIBUTARY_TEST_POSTGRES is not set)"
        );
        return None;
    };
    let (admin, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("connect to TRIBUTARY_TEST_POSTGRES");
    tokio::spawn(connection);
    let name = format!("tributary_it_{}_{}", std::process::id(), fastrand::u32(..));
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create database");
    let mut url = url::Url::parse(&server).expect("server URL");
    url.set_path(&format!("/{name}"));
    Some((admin, name, url))
}

/// Every row of `table` as text, sorted: SQLite's side.
fn sqlite_rows(db: &std::path::Path, table: &str) -> (Vec<String>, Vec<Vec<String>>) {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table}"))
        .expect("select");
    let cols: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows: Vec<Vec<String>> = stmt
        .query_map([], |r| {
            Ok((0..cols.len())
                .map(|i| match r.get_ref(i).expect("value") {
                    ValueRef::Null => "NULL".to_owned(),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => v.to_string(),
                    ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => format!("x{}", hex(b)),
                })
                .collect())
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows.sort();
    (cols, rows)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The same columns of `table` on PostgreSQL, as text the same way.
async fn pg_rows(db: &tokio_postgres::Client, table: &str, cols: &[String]) -> Vec<Vec<String>> {
    use tokio_postgres::types::Type;
    let rows = db
        .query(&format!("SELECT {} FROM {table}", cols.join(", ")), &[])
        .await
        .expect("select");
    let mut out: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let t = c.type_();
                    let v = if *t == Type::INT8 {
                        r.get::<_, Option<i64>>(i).map(|v| v.to_string())
                    } else if *t == Type::BOOL {
                        r.get::<_, Option<bool>>(i)
                            .map(|v| i64::from(v).to_string())
                    } else if *t == Type::BYTEA {
                        r.get::<_, Option<Vec<u8>>>(i)
                            .map(|v| format!("x{}", hex(&v)))
                    } else {
                        r.get::<_, Option<String>>(i).map(|v| format!("'{v}'"))
                    };
                    v.unwrap_or_else(|| "NULL".to_owned())
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// `path` as the real router serves it from `store`.
async fn serve_body(store: tributary::store::Store, path: &str) -> String {
    let resp = crate::support::get_store_output(store, path, &[]).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.text().await.expect("body")
}

/// The whole path: a polled SQLite database is migrated; every table holds
/// on PostgreSQL exactly what it held in SQLite; both backends serve the
/// same `/feed.json` and `/feed.atom` from it; new ids follow the copied
/// ones; search is queued for every entry; the SQLite file's bytes are
/// unchanged; a second migration into the now non-empty database is
/// refused and changes nothing; the URL's password shows nowhere.
#[tokio::test]
async fn migrate_db_copies_every_table_checked_and_leaves_sqlite_untouched() {
    let Some((admin, name, mut url)) = fresh_database("migrate_db").await else {
        return;
    };
    let (_server, env) = polled_database().await;
    let db_file = env.db_path();
    let before = std::fs::read(&db_file).expect("read db");

    // trust authentication takes any password: it is there to be hidden.
    url.set_password(Some("hunter2")).expect("password");
    let to = url.to_string();
    let out = tokio::task::spawn_blocking({
        let mut cmd = env.command();
        cmd.args(["migrate-db", "--to", &to]);
        move || cmd.output().expect("run")
    })
    .await
    .expect("join");
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}{err}");
    assert!(
        !text.contains("hunter2") && !err.contains("hunter2"),
        "{text}{err}"
    );
    assert!(err.contains(":***@"), "{err}");
    assert!(text.contains("checked: every table matches"), "{text}");
    assert!(text.contains("is unchanged"), "{text}");

    let (db, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);

    let mut compared = Vec::new();
    for table in TABLES {
        let (cols, lite) = sqlite_rows(&db_file, table);
        let pg = pg_rows(&db, table, &cols).await;
        assert_eq!(lite, pg, "table {table} differs");
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().take(2).collect::<Vec<_>>()
                    == [*table, &lite.len().to_string()]),
            "summary misses {table} with {} rows:\n{text}",
            lite.len()
        );
        compared.push((*table, lite.len()));
    }
    // The fixture holds what the migration must carry.
    let count = |t: &str| compared.iter().find(|(n, _)| *n == t).map_or(0, |c| c.1);
    assert_eq!(count("feed"), 3);
    assert!(count("tombstone") >= 2, "{compared:?}");
    assert!(
        count("article") > 0 && count("entry_print") > 0,
        "{compared:?}"
    );
    assert!(
        count("feed_tag") == 2 && count("feed_day") > 0,
        "{compared:?}"
    );
    let merged: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT entry_id FROM entry_source
                                   GROUP BY entry_id HAVING count(*) > 1) s",
            &[],
        )
        .await
        .expect("merged")
        .get(0);
    assert_eq!(merged, 1, "the story both A and B carry is one entry");
    let request: Option<String> = db
        .query_one("SELECT request FROM feed WHERE url LIKE '%/b.xml'", &[])
        .await
        .expect("request")
        .get(0);
    assert!(
        request.is_some_and(|r| r.contains("MigratingReader/1.0") && r.contains("X-Token")),
        "request options copied"
    );
    // A story's sources keep their order (SQLite's rowid, PostgreSQL's seq).
    let lite_order: Vec<String> = {
        let conn = rusqlite::Connection::open_with_flags(
            &db_file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open");
        let mut stmt = conn
            .prepare("SELECT entry_key FROM entry_source ORDER BY rowid")
            .expect("select");
        stmt.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let pg_order: Vec<String> = db
        .query("SELECT entry_key FROM entry_source ORDER BY seq", &[])
        .await
        .expect("order")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(lite_order, pg_order);
    // Meta counters came along.
    let lite_rev: i64 = rusqlite::Connection::open(&db_file)
        .expect("open")
        .query_row(
            "SELECT value FROM meta WHERE key = 'entries_rev'",
            [],
            |r| r.get(0),
        )
        .expect("rev");
    let pg_rev: i64 = db
        .query_one("SELECT value FROM meta WHERE key = 'entries_rev'", &[])
        .await
        .expect("rev")
        .get(0);
    assert_eq!(lite_rev, pg_rev);
    // Every entry waits for PostgreSQL's own search index.
    let queued: i64 = db
        .query_one("SELECT count(*) FROM search_pending", &[])
        .await
        .expect("queued")
        .get(0);
    assert_eq!(queued as usize, count("entry"));
    // New ids follow the copied ones.
    for table in ["feed", "entry", "entry_print"] {
        let row = db
            .query_one(
                &format!(
                    "SELECT nextval(pg_get_serial_sequence('{table}', 'id')),
                            (SELECT coalesce(max(id), 0) FROM {table})"
                ),
                &[],
            )
            .await
            .expect("sequence");
        let (next, max): (i64, i64) = (row.get(0), row.get(1));
        assert!(next > max, "{table}: next id {next}, largest copied {max}");
    }

    // Both backends serve the same merged feed from the same data.
    let database = tributary::database::Database::Postgres(
        tributary::database::PostgresUrl::parse(&to).expect("url"),
    );
    for path in ["/feed.json?limit=500", "/feed.atom?limit=500"] {
        let lite = serve_body(
            tributary::store::Store::open(&db_file)
                .await
                .expect("open SQLite"),
            path,
        )
        .await;
        let pg = serve_body(
            tributary::store::Store::connect(&database)
                .await
                .expect("connect PostgreSQL"),
            path,
        )
        .await;
        assert_eq!(lite, pg, "{path} differs between the backends");
        assert!(lite.contains("Story A6"), "{lite}");
    }

    // Again, into the database that now holds data: refused, unchanged.
    let entries_before = pg_rows(&db, "entry", &["id".to_owned(), "uid".to_owned()]).await;
    let out = tokio::task::spawn_blocking({
        let mut cmd = env.command();
        cmd.args(["migrate-db", "--to", &to]);
        move || cmd.output().expect("run")
    })
    .await
    .expect("join");
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{text}{err}");
    assert!(err.contains("already holds Tributary data"), "{err}");
    assert!(
        !text.contains("hunter2") && !err.contains("hunter2"),
        "{text}{err}"
    );
    assert_eq!(
        pg_rows(&db, "entry", &["id".to_owned(), "uid".to_owned()]).await,
        entries_before
    );
    let queued_after: i64 = db
        .query_one("SELECT count(*) FROM search_pending", &[])
        .await
        .expect("queued")
        .get(0);
    assert_eq!(queued_after, queued);

    // The SQLite file was only read.
    assert!(
        std::fs::read(&db_file).expect("read db") == before,
        "the SQLite file changed"
    );
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop database");
}

/// Without a server: a refused connection names the URL without its
/// password, and the SQLite file is unchanged. A missing SQLite file is
/// refused before PostgreSQL is contacted, and not created.
#[tokio::test]
async fn migrate_db_failures_hide_the_password_and_touch_no_file() {
    let (_server, env) = polled_database().await;
    let db_file = env.db_path();
    let before = std::fs::read(&db_file).expect("read db");
    let port = free_port();
    let to = format!("postgres://feeds:hunter2@127.0.0.1:{port}/tributary");
    let out = env.cli(&["migrate-db", "--to", &to]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{text}{err}");
    assert!(
        err.contains(&format!("postgres://feeds:***@127.0.0.1:{port}/tributary")),
        "{err}"
    );
    assert!(
        !text.contains("hunter2") && !err.contains("hunter2"),
        "{text}{err}"
    );
    assert!(std::fs::read(&db_file).expect("read db") == before);

    let missing = env.dir.path().join("nothing-here.db");
    let out = env.cli(&[
        "migrate-db",
        "--to",
        &to,
        "--from",
        missing.to_str().expect("utf-8 path"),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot open") && err.contains("read-only"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!missing.exists(), "migrate-db created the SQLite file");
}

/// The check is real: when what PostgreSQL stores differs from what was
/// read (here a trigger rewrites titles as they arrive), the migration
/// fails naming the table, and rolls everything back. Migrating a database
/// with no feeds first creates the schema (and leaves it empty, so it may
/// be migrated into again).
#[tokio::test]
async fn migrate_db_rolls_back_when_the_copy_does_not_match() {
    let Some((admin, name, url)) = fresh_database("migrate_db_mismatch").await else {
        return;
    };
    let to = url.to_string();
    let empty = TestEnv::new("");
    assert!(empty.cli(&["status"]).status.success());
    let out = tokio::task::spawn_blocking({
        let mut cmd = empty.command();
        cmd.args(["migrate-db", "--to", &to]);
        move || cmd.output().expect("run")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));

    let (db, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    db.batch_execute(
        "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN NEW.title = upper(NEW.title); RETURN NEW; END $$;
         CREATE TRIGGER shout BEFORE INSERT ON entry FOR EACH ROW EXECUTE FUNCTION shout();",
    )
    .await
    .expect("trigger");

    let (_server, env) = polled_database().await;
    let out = tokio::task::spawn_blocking({
        let mut cmd = env.command();
        cmd.args(["migrate-db", "--to", &to]);
        move || cmd.output().expect("run")
    })
    .await
    .expect("join");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("does not match") && err.contains("entry: ") && err.contains("rolled back"),
        "{err}"
    );
    for table in ["feed", "entry", "entry_source", "search_pending"] {
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "{table} kept rows of a failed migration");
    }
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop database");
}
