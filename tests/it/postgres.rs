//! `database = "postgres://…"` and `TRIBUTARY_DATABASE` from the outside:
//! what `check` and `run` say while the PostgreSQL backend is incomplete,
//! and that no password ever shows. The store's own behaviour on both
//! backends is tested by `store::suite`.

use crate::support::{TestEnv, run_expecting_exit_with, stderr, stdout};

/// `check` validates the URL, shows it without its password, names the
/// backend, and refuses while the backend is incomplete, naming what it
/// lacks. It does not connect: no server is needed.
#[test]
fn check_shows_the_url_without_its_password_and_refuses_an_incomplete_backend() {
    let env = TestEnv::new("");
    let url = "postgres://feeds:hunter2@127.0.0.1:1/tributary";
    let out = env
        .command()
        .env("TRIBUTARY_DATABASE", url)
        .arg("check")
        .output()
        .expect("run");
    let (out_text, err) = (stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{out_text}{err}");
    assert!(
        out_text.contains("database: postgres://feeds:***@127.0.0.1:1/tributary (PostgreSQL)"),
        "{out_text}"
    );
    assert!(
        err.contains("the PostgreSQL backend is not complete yet"),
        "{err}"
    );
    assert!(err.contains("retention"), "{err}");
    assert!(!out_text.contains("hunter2") && !err.contains("hunter2"));
    // The file's own SQLite database was not created.
    assert!(!env.db_path().exists());

    // Without the variable, the file's path: SQLite, and fine.
    let out = env.cli(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("tributary.db (SQLite)"),
        "{}",
        stdout(&out)
    );
}

/// A bad URL in the variable is a config error naming the variable, and
/// does not repeat the password.
#[test]
fn a_bad_database_url_is_a_config_error_without_the_password() {
    let env = TestEnv::new("");
    let out = env
        .command()
        .env(
            "TRIBUTARY_DATABASE",
            "postgres://feeds:hunter2@127.0.0.1:notaport/t",
        )
        .arg("check")
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TRIBUTARY_DATABASE"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// `run` against a server that does not answer fails at start-up naming
/// the URL without its password.
#[test]
fn run_against_an_unreachable_server_names_it_without_the_password() {
    let env = TestEnv::new("");
    let port = crate::support::free_port();
    let url = format!("postgres://feeds:hunter2@127.0.0.1:{port}/tributary");
    let (status, log) = run_expecting_exit_with(&env, &[("TRIBUTARY_DATABASE", &url)]);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "cannot connect to PostgreSQL at postgres://feeds:***@127.0.0.1:{port}/tributary"
        )),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
}

/// `run` on a PostgreSQL server that answers: the schema is created, then
/// the daemon refuses to start, naming what the backend lacks. Skipped
/// (saying so) without `TRIBUTARY_TEST_POSTGRES`.
#[tokio::test]
async fn run_on_postgres_creates_the_schema_then_refuses_naming_what_is_missing() {
    let Ok(server) = std::env::var("TRIBUTARY_TEST_POSTGRES") else {
        assert!(
            std::env::var("TRIBUTARY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "TRIBUTARY_REQUIRE_POSTGRES=1 but TRIBUTARY_TEST_POSTGRES is not set"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "run_on_postgres: SKIPPED (TRIBUTARY_TEST_POSTGRES is not set)"
        );
        return;
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

    let env = TestEnv::new("");
    let env_url = url.to_string();
    let (status, log) = tokio::task::spawn_blocking(move || {
        run_expecting_exit_with(&env, &[("TRIBUTARY_DATABASE", &env_url)])
    })
    .await
    .expect("run");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("the PostgreSQL backend is not complete yet"),
        "{log}"
    );
    assert!(log.contains("retention"), "{log}");

    let (db, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    let tables: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name IN ('feed', 'entry', 'entry_search')",
            &[],
        )
        .await
        .expect("tables")
        .get(0);
    assert_eq!(tables, 3, "the schema was created");
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop database");
}
