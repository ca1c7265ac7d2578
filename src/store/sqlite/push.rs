//! Push targets' delivery state.

use rusqlite::{Connection, params};

use crate::store::{PushOutcome, PushTarget};

use super::{opt_ts, query_one, ts};

/// A push target's state, created at the newest entry when it is new (a
/// new webhook gets what arrives from now on, not the backlog).
pub(in crate::store) fn push_target(
    conn: &mut Connection,
    output: &str,
    target: &str,
) -> rusqlite::Result<PushTarget> {
    conn.execute(
        "INSERT OR IGNORE INTO push_target (output, target, delivered_id)
         VALUES (?1, ?2, (SELECT coalesce(max(id), 0) FROM entry))",
        params![output, target],
    )?;
    query_one(
        conn,
        "SELECT delivered_id, attempts, retry_at, last_error FROM push_target
         WHERE output = ?1 AND target = ?2",
        params![output, target],
        |r| {
            Ok(PushTarget {
                delivered_id: r.get(0)?,
                attempts: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                retry_at: opt_ts(r.get(2)?),
                last_error: r.get(3)?,
            })
        },
    )
}

/// Records a push attempt: delivered up to `delivered_id` (attempts reset),
/// or failed (`error`, retry at `retry_at`).
pub(in crate::store) fn record_push(
    conn: &mut Connection,
    output: &str,
    target: &str,
    outcome: &PushOutcome,
) -> rusqlite::Result<()> {
    match outcome {
        PushOutcome::Delivered { up_to } => conn.execute(
            "UPDATE push_target SET delivered_id = max(delivered_id, ?3), attempts = 0,
                 retry_at = NULL, last_error = NULL
             WHERE output = ?1 AND target = ?2",
            params![output, target, up_to],
        )?,
        PushOutcome::Failed { error, retry_at } => conn.execute(
            "UPDATE push_target SET attempts = attempts + 1, retry_at = ?3, last_error = ?4
             WHERE output = ?1 AND target = ?2",
            params![output, target, ts(*retry_at), error],
        )?,
    };
    Ok(())
}
