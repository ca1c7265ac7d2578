//! WAL checkpoints on their own thread and connection.
//!
//! SQLite's automatic checkpoint runs on the connection that commits, so
//! the one writer stopped every few thousand pages to copy the WAL into
//! the database — about a sixth of its time while polling flat out, time
//! in which no poll was recorded. Here the writer's WAL hook only counts
//! the pages in the WAL and, past [`CHECKPOINT_PAGES`], wakes a
//! checkpointer thread, which copies them with a `PASSIVE` checkpoint
//! while the writer goes on committing (WAL mode allows exactly that).
//!
//! The WAL starts again from the top only when a write begins with every
//! frame already copied, which a writer that never pauses would not let a
//! concurrent checkpoint achieve: so past [`RESTART_PAGES`] the writer
//! itself finishes the copy (only the frames the checkpointer has not
//! reached yet) before going on. If no checkpointer runs on the writer's
//! thread, the hook checkpoints in place, as SQLite's own automatic
//! checkpoint would.

use std::cell::RefCell;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// WAL pages (4 KiB each) after which a checkpoint is started: a page
/// many polls rewrite is copied into the database once per checkpoint.
const CHECKPOINT_PAGES: i32 = 4000;

/// WAL pages past which the writer completes the checkpoint itself, so
/// the WAL restarts: bounds the `-wal` file (~64 MiB).
const RESTART_PAGES: i32 = 16_000;

/// The checkpointer serving the writer connection on this thread: its
/// wake-up channel and its thread, joined by [`stop`].
struct Checkpointer {
    wake: SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

thread_local! {
    static CHECKPOINTER: RefCell<Option<Checkpointer>> = const { RefCell::new(None) };
}

/// Installs the WAL hook on the writer connection and starts its
/// checkpointer. Must run on the writer's own thread (the hook finds the
/// checkpointer through a thread-local). The checkpointer thread ends when
/// the writer thread does.
pub(super) fn install(writer: &Connection, path: &Path) -> std::io::Result<()> {
    let (wake, wakes) = sync_channel(1);
    let path = path.to_owned();
    let thread = std::thread::Builder::new()
        .name("tributary-ckpt".into())
        .spawn(move || run(&path, &wakes))?;
    CHECKPOINTER.with(|c| *c.borrow_mut() = Some(Checkpointer { wake, thread }));
    // Replaces SQLite's automatic checkpoint, which is itself a WAL hook.
    writer.wal_hook(Some(on_commit));
    Ok(())
}

/// Ends the checkpointer and waits for it to close its connection, so that
/// the writer, closed next, is the database's last connection: SQLite then
/// checkpoints the whole WAL and removes it, and a cleanly stopped daemon
/// leaves one self-contained file. Runs on the writer's thread.
pub(super) fn stop(writer: &Connection) {
    writer.wal_hook(None);
    if let Some(Checkpointer { wake, thread }) = CHECKPOINTER.with(|c| c.borrow_mut().take()) {
        drop(wake);
        let _ = thread.join();
    }
}

/// Runs on the writer's thread after each commit, with the WAL's size.
fn on_commit(wal: &rusqlite::hooks::Wal, pages: std::os::raw::c_int) -> rusqlite::Result<()> {
    if pages < CHECKPOINT_PAGES {
        return Ok(());
    }
    if pages >= RESTART_PAGES {
        // Busy (the checkpointer is mid-copy) is not an error: the next
        // commit tries again.
        let _ = wal.checkpoint();
        return Ok(());
    }
    let woken = CHECKPOINTER.with(|c| match &*c.borrow() {
        // Full: a wake-up is already pending, which covers this commit.
        Some(ckpt) => !matches!(ckpt.wake.try_send(()), Err(TrySendError::Disconnected(_))),
        None => false,
    });
    if !woken {
        // No checkpointer (it could not start, or it ended): do what
        // SQLite's automatic checkpoint does. Busy is not an error here.
        let _ = wal.checkpoint();
    }
    Ok(())
}

fn run(path: &Path, wakes: &Receiver<()>) {
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(database = %path.display(), error = %e, "checkpointer cannot open the database; the writer checkpoints itself");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    // Ends when the writer's thread, and with it the sender, is gone.
    while wakes.recv().is_ok() {
        // A full disk or a busy database: the next commit wakes us again,
        // and the store reports a full disk itself.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_pages(path: &Path) -> u64 {
        let wal = path.with_extension("db-wal");
        std::fs::metadata(wal).map(|m| m.len() / 4096).unwrap_or(0)
    }

    /// One run of the scenario below: ~80 MiB in 4 MiB commits with the
    /// checkpointer installed. Returns the rows, the database's pages and
    /// the WAL's high-water mark in pages.
    fn commit_80_mib() -> (i64, u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        // Without the hook nothing would checkpoint at all.
        install(&conn, &path).unwrap();
        // Without checkpoints the WAL would hold all of it.
        for _ in 0..20 {
            let tx = conn.unchecked_transaction().unwrap();
            for _ in 0..250 {
                tx.execute("INSERT INTO t (v) VALUES (zeroblob(16000))", [])
                    .unwrap();
            }
            tx.commit().unwrap();
            // Give the checkpointer a moment, as the writer's other work
            // would.
            std::thread::sleep(Duration::from_millis(20));
        }
        let copied: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        let db_pages = std::fs::metadata(&path).unwrap().len() / 4096;
        (copied, db_pages, wal_pages(&path))
    }

    /// The writer's commits are copied into the database by the
    /// checkpointer thread, and the WAL restarts instead of growing while
    /// the writer keeps committing.
    ///
    /// Whether the checkpointer gets a core between the writer's commits
    /// is up to the machine: at a load of 11 on 2 cores one run in four
    /// saw it copy nothing until the end. A checkpointer that works keeps
    /// the WAL bounded in at least one of three runs; a broken one in none.
    #[test]
    fn checkpointer_keeps_the_wal_bounded() {
        let mut wals = Vec::new();
        for _ in 0..3 {
            let (copied, db_pages, wal) = commit_80_mib();
            assert_eq!(copied, 5000);
            // The database file holds the rows: they were checkpointed.
            assert!(db_pages > 10_000, "database has {db_pages} pages");
            if wal < 12_000 {
                return;
            }
            wals.push(wal);
        }
        panic!("WAL grew to {wals:?} pages in three runs");
    }

    /// Stopping the checkpointer before closing the writer leaves the
    /// writer as the last connection, which folds the WAL into the file
    /// and removes it. (On this test's thread the checkpointer would
    /// otherwise live, holding the WAL open, until the thread ends.)
    #[test]
    fn stop_lets_the_writer_close_the_wal_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        install(&conn, &path).unwrap();
        // Past the wake-up threshold, so the checkpointer has the WAL open.
        for _ in 0..1300 {
            conn.execute("INSERT INTO t (v) VALUES (zeroblob(16000))", [])
                .unwrap();
        }
        let wal = path.with_extension("db-wal");
        assert!(wal.exists());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // One checkpoint of the first ~4,000 pages makes the file ~16 MB.
        while std::fs::metadata(&path).unwrap().len() < 8 << 20 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop(&conn);
        drop(conn);
        assert!(!wal.exists(), "WAL left behind");
        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1300);
    }
}
