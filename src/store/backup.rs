//! Online backup of a live database into a new file (`tributary backup`).
//!
//! The copy is one consistent snapshot: the source connection holds a read
//! transaction for the whole copy, so in WAL mode the daemon goes on
//! committing polls while pages are copied in steps, and the backup never
//! restarts because of them. The copy is written next to its destination
//! under a temporary name, checked with `PRAGMA integrity_check`, switched to
//! a rollback journal (one self-contained file) and only then moved into
//! place; a failed or interrupted backup never leaves a half-written file
//! under the requested name.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// Pages copied per step (4 MiB at SQLite's default 4 KiB page size): big
/// enough to be quick, small enough for a live progress line.
const PAGES_PER_STEP: i32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path} already exists (pass --force to overwrite it)")]
    Exists { path: PathBuf },
    #[error("{path} is the live database itself; back up to another file")]
    SameFile { path: PathBuf },
    #[error(
        "{wal} exists, so {path} looks like a database in use; choose another file or remove it"
    )]
    InUse { path: PathBuf, wal: PathBuf },
    #[error("cannot read database {path}: {cause} (is `database` in the config right?)")]
    Source {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("cannot write backup {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error("cannot write backup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the copy in {path} failed its integrity check: {report}; the backup was removed")]
    Integrity { path: PathBuf, report: String },
}

/// How far a backup is, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupProgress {
    pub done: u64,
    pub total: u64,
}

/// What a finished backup wrote.
#[derive(Debug, Clone, Copy)]
pub struct BackupReport {
    /// Size of the backup file.
    pub bytes: u64,
    pub pages: u64,
    pub elapsed: Duration,
}

/// Copies the database at `source` into a new file `dest`. Refuses an
/// existing `dest` unless `overwrite`. Blocking: run it off async workers.
pub fn backup(
    source: &Path,
    dest: &Path,
    overwrite: bool,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<BackupReport, BackupError> {
    backup_in_steps(source, dest, overwrite, PAGES_PER_STEP, progress)
}

fn backup_in_steps(
    source: &Path,
    dest: &Path,
    overwrite: bool,
    pages_per_step: i32,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let io_err = |source| BackupError::Io {
        path: dest.to_owned(),
        source,
    };
    if dest.exists() {
        let same = match (source.canonicalize(), dest.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            return Err(BackupError::SameFile {
                path: dest.to_owned(),
            });
        }
        if !overwrite {
            return Err(BackupError::Exists {
                path: dest.to_owned(),
            });
        }
    }
    // A stale WAL beside the destination would be replayed over the copy
    // the next time it is opened.
    let wal = suffixed(dest, "-wal");
    if wal.exists() {
        return Err(BackupError::InUse {
            path: dest.to_owned(),
            wal,
        });
    }

    let src_err = |cause| BackupError::Source {
        path: source.to_owned(),
        cause,
    };
    // Read-only and never created: a wrong path is an error, not an empty copy.
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(src_err)?;
    src.busy_timeout(Duration::from_secs(10)).map_err(src_err)?;

    let tmp = temp_path(dest);
    let _ = std::fs::remove_file(&tmp);
    let result = copy_and_check(&src, &tmp, pages_per_step, progress);
    drop(src);
    let pages = match result {
        Ok(pages) => pages,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(match e {
                Step::Source(cause) => src_err(cause),
                Step::Write(cause) => BackupError::Write {
                    path: dest.to_owned(),
                    cause,
                },
                Step::Integrity(report) => BackupError::Integrity {
                    path: dest.to_owned(),
                    report,
                },
            });
        }
    };

    // Durable before it is visible under its name.
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err)?;
    let placed = if overwrite {
        std::fs::rename(&tmp, dest)
    } else {
        // A hard link fails if `dest` appeared meanwhile, where a rename
        // would silently replace it.
        match std::fs::hard_link(&tmp, dest) {
            Ok(()) => std::fs::remove_file(&tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&tmp);
                return Err(BackupError::Exists {
                    path: dest.to_owned(),
                });
            }
            // File systems without hard links.
            Err(_) => std::fs::rename(&tmp, dest),
        }
    };
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    let bytes = std::fs::metadata(dest).map_err(io_err)?.len();
    Ok(BackupReport {
        bytes,
        pages,
        elapsed: started.elapsed(),
    })
}

enum Step {
    Source(rusqlite::Error),
    Write(rusqlite::Error),
    Integrity(String),
}

fn copy_and_check(
    src: &Connection,
    tmp: &Path,
    pages_per_step: i32,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<u64, Step> {
    let mut dst = Connection::open(tmp).map_err(Step::Write)?;
    // One snapshot for the whole copy: with a read transaction open on the
    // source, each step reads the same snapshot instead of restarting when
    // the daemon commits (WAL lets those commits go on meanwhile).
    src.execute_batch("BEGIN").map_err(Step::Source)?;
    src.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(Step::Source)?;
    let copied = (|| {
        let backup = Backup::new(src, &mut dst).map_err(Step::Write)?;
        loop {
            let step = backup.step(pages_per_step).map_err(Step::Write)?;
            let p = backup.progress();
            let total = u64::try_from(p.pagecount).unwrap_or(0);
            let done = total.saturating_sub(u64::try_from(p.remaining).unwrap_or(0));
            match step {
                StepResult::Done => {
                    progress(BackupProgress { done: total, total });
                    return Ok(total);
                }
                StepResult::More => progress(BackupProgress { done, total }),
                // Only the destination can be locked (by someone else).
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })();
    let _ = src.execute_batch("COMMIT");
    let pages = copied?;

    let report: Vec<String> = dst
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(Step::Write)?;
    if report != ["ok"] {
        return Err(Step::Integrity(report.join("; ")));
    }
    // The copy is one self-contained file; the daemon switches a restored
    // database back to WAL when it opens it.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(Step::Write)?;
    dst.close().map_err(|(_, e)| Step::Write(e))?;
    Ok(pages)
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `.NAME.partial-PID` beside `dest`, so the final rename stays on one file
/// system.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(|| "backup".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with_rows(path: &Path, n: usize) {
        let mut c = Connection::open(path).expect("open");
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
        )
        .expect("schema");
        let tx = c.transaction().expect("begin");
        for i in 0..n {
            tx.execute(
                "INSERT INTO t (v) VALUES (?1)",
                [format!("row {i} {}", "x".repeat(200))],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }

    fn count(path: &Path) -> i64 {
        Connection::open(path)
            .expect("open copy")
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn copies_reports_progress_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.db");
        let dest = dir.path().join("copy.db");
        db_with_rows(&src, 5000);

        let mut seen = Vec::new();
        let report =
            backup_in_steps(&src, &dest, false, 16, &mut |p| seen.push(p)).expect("backup");
        assert_eq!(count(&dest), 5000);
        assert!(report.bytes > 1_000_000, "{report:?}");
        let last = seen.last().expect("progress reported");
        assert_eq!(last.done, last.total);
        assert!(seen.len() > 1, "copied in steps: {seen:?}");
        // Self-contained: no WAL beside the copy.
        assert!(!suffixed(&dest, "-wal").exists());

        let err = backup(&src, &dest, false, &mut |_| {}).expect_err("exists");
        assert!(matches!(err, BackupError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("--force"));
        backup(&src, &dest, true, &mut |_| {}).expect("--force overwrites");

        let err = backup(&src, &src, true, &mut |_| {}).expect_err("same file");
        assert!(matches!(err, BackupError::SameFile { .. }), "{err}");

        let missing = dir.path().join("missing.db");
        let err =
            backup(&missing, &dir.path().join("x.db"), false, &mut |_| {}).expect_err("no source");
        assert!(matches!(err, BackupError::Source { .. }), "{err}");
        assert!(!dir.path().join("x.db").exists());
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_writer_during_the_copy_neither_restarts_nor_tears_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.db");
        let dest = dir.path().join("copy.db");
        db_with_rows(&src, 5000);
        let writer = Connection::open(&src).expect("writer");
        let mut steps = 0;
        backup_in_steps(&src, &dest, false, 16, &mut |_| {
            // Another connection commits between steps, as the daemon does.
            writer
                .execute("INSERT INTO t (v) VALUES ('during')", [])
                .expect("write during backup");
            steps += 1;
            // Without one snapshot for the whole copy, each write restarts
            // the backup and it never ends.
            assert!(steps < 1000, "the backup keeps restarting");
        })
        .expect("backup");
        assert!(steps > 1);
        // The snapshot taken at the start: none of the writes during it.
        assert_eq!(count(&dest), 5000);
    }
}
