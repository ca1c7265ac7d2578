//! `tributary migrate-db`: copies a SQLite database into an empty
//! PostgreSQL database, checked, leaving the SQLite file as it was.
//!
//! The SQLite file is opened read-only and read in one read transaction,
//! so the copy is one consistent snapshot even while a daemon writes to
//! it. Everything is written in one PostgreSQL transaction: table by
//! table with binary `COPY`, ids kept, identity sequences moved past the
//! largest id. Before it commits, every copied table is read back and
//! compared with what SQLite held (row count and a checksum of every
//! column); any difference rolls the whole copy back.
//!
//! Columns are matched by name between the two schemas, and typed by the
//! PostgreSQL schema: a SQLite table or column with no place on the
//! PostgreSQL side refuses the copy rather than leaving data behind. What
//! is derived is not copied: SQLite's hand-made search index (`entry_fts*`)
//! and its queue; instead every entry is queued for PostgreSQL's own
//! index. Feed leases in flight are released, as a restart would.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use futures_util::{StreamExt, pin_mut};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::database::PostgresUrl;

use super::StoreError;
use super::postgres::PgStore;

/// Tables copied row for row, parents before children. `order` is how the
/// SQLite side is read: `entry_source` in insertion order, which the
/// PostgreSQL side keeps as its `seq` (the order of a story's sources).
const TABLES: &[(&str, &str)] = &[
    ("feed", "id"),
    ("feed_tag", ""),
    ("entry", "id"),
    ("entry_source", "rowid"),
    ("entry_url", ""),
    ("entry_print", "id"),
    ("entry_lsh", ""),
    ("article", "entry_id"),
    ("tombstone", ""),
    ("feed_day", ""),
    ("host_block", ""),
    ("push_target", ""),
    ("meta", ""),
];

/// `meta` exists, with its counters, in a freshly migrated PostgreSQL
/// database: its rows are upserted, not copied into an empty table.
const META: &str = "meta";

/// SQLite tables that hold nothing of their own: the search index and its
/// queue, rebuilt on PostgreSQL (every entry is queued for its index).
fn is_derived(table: &str) -> bool {
    table == "entry_fts" || table.starts_with("entry_fts_") || table == "search_pending"
}

/// `schedule_reason` of a feed whose poll was in flight (as the backends).
const LEASED: &str = "polling";

/// Rows per message from the SQLite reader to the PostgreSQL writer.
const BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot open {path} read-only: {cause}")]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "{path} is at schema version {found}, this tributary's is {latest}: {hint}; migrate-db never writes the SQLite file"
    )]
    Version {
        path: PathBuf,
        found: i64,
        latest: usize,
        hint: &'static str,
    },
    #[error(
        "the SQLite database has a table `{0}` this version does not know how to copy; refusing rather than leaving it behind"
    )]
    UnknownTable(String),
    #[error(
        "column {table}.{column} of the SQLite database has no place in the PostgreSQL schema; refusing rather than leaving it behind"
    )]
    UnknownColumn { table: String, column: String },
    #[error("column {table}.{column} on PostgreSQL has type {ty}, which migrate-db cannot fill")]
    ColumnType {
        table: String,
        column: String,
        ty: String,
    },
    #[error("{table}.{column} holds {found} in row {row} where PostgreSQL wants {wanted}")]
    Value {
        table: String,
        column: String,
        row: u64,
        found: &'static str,
        wanted: &'static str,
    },
    #[error(
        "the PostgreSQL database {url} already holds Tributary data (rows in {tables}); migrate-db copies only into an empty database, and changed nothing"
    )]
    NotEmpty { url: String, tables: String },
    #[error(
        "the copy does not match the SQLite database ({0}); rolled back, the PostgreSQL database is unchanged"
    )]
    Mismatch(String),
    #[error("reading the SQLite database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("writing to PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the SQLite reader stopped: {0}")]
    Reader(String),
}

/// One table's outcome, as the summary prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub table: String,
    /// Rows read from SQLite and found, alike, on PostgreSQL.
    pub rows: u64,
    /// The checksum both sides agree on.
    pub checksum: u128,
}

/// What a migration did.
#[derive(Debug, Clone, Default)]
pub struct MigrateReport {
    pub tables: Vec<TableSummary>,
    /// Text values that held NUL characters, which PostgreSQL's text cannot
    /// store: copied without them.
    pub nul_stripped: u64,
    /// Feeds whose poll was in flight in the snapshot, made due again.
    pub leases_released: u64,
    /// Entries queued for PostgreSQL's search index.
    pub search_queued: u64,
}

/// Progress of the copy: rows copied so far and rows in all.
#[derive(Debug, Clone, Copy)]
pub struct MigrateProgress {
    pub done: u64,
    pub total: u64,
}

/// The PostgreSQL types a column can be filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bool,
    Bytes,
}

impl Kind {
    fn of(data_type: &str) -> Option<Kind> {
        match data_type {
            "bigint" | "integer" | "smallint" => Some(Kind::Int),
            "text" => Some(Kind::Text),
            "boolean" => Some(Kind::Bool),
            "bytea" => Some(Kind::Bytes),
            _ => None,
        }
    }

    fn pg_type(self, data_type: &str) -> Type {
        match (self, data_type) {
            (Kind::Int, "integer") => Type::INT4,
            (Kind::Int, "smallint") => Type::INT2,
            (Kind::Int, _) => Type::INT8,
            (Kind::Text, _) => Type::TEXT,
            (Kind::Bool, _) => Type::BOOL,
            (Kind::Bytes, _) => Type::BYTEA,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Int => "an integer",
            Kind::Text => "text",
            Kind::Bool => "0 or 1",
            Kind::Bytes => "a blob",
        }
    }
}

/// One value on its way, in the PostgreSQL column's type.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) => v.to_sql(ty, out),
            Val::Text(v) => v.to_sql(ty, out),
            Val::Bool(v) => v.to_sql(ty, out),
            Val::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
            Type::BOOL,
            Type::BYTEA,
        ]
        .contains(ty)
    }

    to_sql_checked!();
}

/// A row's checksum: every value with its kind, so `NULL`, `0`, `''` and
/// `false` differ. Rows are summed, so the order they are read in does not
/// matter (PostgreSQL and SQLite order text differently).
fn row_hash(row: &[Val]) -> u128 {
    let mut h = siphasher::sip128::SipHasher13::new_with_keys(0x5452_4942, 0x4d49_4752);
    for v in row {
        match v {
            Val::Null => h.write_u8(0),
            Val::Int(i) => {
                h.write_u8(1);
                h.write_i64(*i);
            }
            Val::Text(s) => {
                h.write_u8(2);
                h.write_usize(s.len());
                h.write(s.as_bytes());
            }
            Val::Bool(b) => {
                h.write_u8(3);
                h.write_u8(u8::from(*b));
            }
            Val::Bytes(b) => {
                h.write_u8(4);
                h.write_usize(b.len());
                h.write(b);
            }
        }
    }
    siphasher::sip128::Hasher128::finish128(&h).as_u128()
}

/// A column copied: its name and PostgreSQL type.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    ty: Type,
}

/// A table copied: its columns (those both sides have), how SQLite is read.
#[derive(Debug, Clone)]
struct Plan {
    table: &'static str,
    order: &'static str,
    columns: Vec<Column>,
    /// An identity column whose sequence moves past the copied ids.
    identity: Option<String>,
}

/// What the SQLite reader sends the PostgreSQL writer.
enum Msg {
    /// Row counts per table, in plan order, read in the snapshot.
    Totals(Vec<u64>),
    Rows(usize, Vec<Vec<Val>>),
    /// A table is read: its rows and checksum on the SQLite side.
    Done(usize, u64, u128),
    Finished {
        nul_stripped: u64,
    },
}

/// Opens `path` read-only and checks it is a Tributary database at this
/// version's schema.
fn open_source(path: &Path) -> Result<Connection, MigrateError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|cause| MigrateError::Open {
        path: path.to_owned(),
        cause,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|cause| MigrateError::Open {
            path: path.to_owned(),
            cause,
        })?;
    let latest = super::sqlite::latest_version();
    let hint = if found == 0 {
        Some("it is not a Tributary database")
    } else if found < i64::try_from(latest).unwrap_or(i64::MAX) {
        Some("run this tributary on it once (`tributary status` will do) to bring it up to date")
    } else if found > i64::try_from(latest).unwrap_or(i64::MAX) {
        Some("it was written by a newer tributary; migrate with that version")
    } else {
        None
    };
    if let Some(hint) = hint {
        return Err(MigrateError::Version {
            path: path.to_owned(),
            found,
            latest,
            hint,
        });
    }
    Ok(conn)
}

/// Copies the SQLite database at `from` into the PostgreSQL database at
/// `to`, which must hold no Tributary data (its schema is created first).
/// `progress` is called as rows are copied.
pub async fn migrate_db(
    from: &Path,
    to: &PostgresUrl,
    progress: &mut (dyn FnMut(MigrateProgress) + Send),
) -> Result<MigrateReport, MigrateError> {
    // The source is checked before anything is done to the target.
    let path = from.to_owned();
    tokio::task::spawn_blocking(move || open_source(&path).map(drop))
        .await
        .map_err(|e| MigrateError::Reader(e.to_string()))??;

    let store = PgStore::connect(to).await?;
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    // Nothing else writes these tables until the copy commits or rolls
    // back: a node started meanwhile waits, a second migrate-db too.
    let all: Vec<&str> = TABLES
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t != META)
        .chain(["search_pending", "entry_search"])
        .collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        all.join(", ")
    ))
    .await?;
    let mut holding = Vec::new();
    for table in &all {
        let row = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await?;
        if row.try_get::<_, bool>(0)? {
            holding.push(*table);
        }
    }
    if !holding.is_empty() {
        return Err(MigrateError::NotEmpty {
            url: to.to_string(),
            tables: holding.join(", "),
        });
    }

    let mut plans = Vec::new();
    for (table, order) in TABLES {
        let rows = tx
            .query(
                "SELECT column_name::text, data_type::text, is_generated::text,
                        coalesce(identity_generation::text, '')
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[table],
            )
            .await?;
        let mut columns = Vec::new();
        let mut identity = None;
        for row in rows {
            let name: String = row.try_get(0)?;
            let data_type: String = row.try_get(1)?;
            let generated: String = row.try_get(2)?;
            let identity_kind: String = row.try_get(3)?;
            // Filled by PostgreSQL itself (entry_source's `seq`).
            if generated == "ALWAYS" || identity_kind == "ALWAYS" {
                continue;
            }
            if identity_kind == "BY DEFAULT" {
                identity = Some(name.clone());
            }
            let Some(kind) = Kind::of(&data_type) else {
                return Err(MigrateError::ColumnType {
                    table: (*table).to_owned(),
                    column: name,
                    ty: data_type,
                });
            };
            columns.push(Column {
                ty: kind.pg_type(&data_type),
                name,
                kind,
            });
        }
        plans.push(Plan {
            table,
            order,
            columns,
            identity,
        });
    }

    // The reader narrows each plan to the columns SQLite has (checking it
    // has none PostgreSQL lacks) and streams the rows.
    let (send, mut recv) = tokio::sync::mpsc::channel::<Result<Msg, MigrateError>>(4);
    let (plan_send, plan_recv) = std::sync::mpsc::channel::<Vec<Plan>>();
    let path = from.to_owned();
    let reader_plans = plans.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let outcome = read_source(&path, reader_plans, &plan_send, &send);
        if let Err(e) = outcome {
            let _ = send.blocking_send(Err(e));
        }
    });
    let plans = match plan_recv.recv() {
        Ok(p) => p,
        Err(_) => {
            // The reader failed before it had a plan; its error is queued.
            let err = match recv.recv().await {
                Some(Err(e)) => e,
                _ => MigrateError::Reader("no plan".into()),
            };
            return Err(err);
        }
    };

    let mut report = MigrateReport::default();
    let mut sqlite_side: BTreeMap<usize, (u64, u128)> = BTreeMap::new();
    let mut total = 0;
    let mut done = 0;
    let mut current: Option<(usize, std::pin::Pin<Box<BinaryCopyInWriter>>)> = None;
    let mut meta_rows: Vec<Vec<Val>> = Vec::new();
    while let Some(msg) = recv.recv().await {
        match msg? {
            Msg::Totals(t) => {
                total = t.iter().sum();
                progress(MigrateProgress { done, total });
            }
            Msg::Rows(i, rows) => {
                let plan = &plans[i];
                if plan.table == META {
                    meta_rows.extend(rows);
                    continue;
                }
                if current.as_ref().is_none_or(|(c, _)| *c != i) {
                    let cols: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
                    let sink = tx
                        .copy_in(&format!(
                            "COPY {} ({}) FROM STDIN (FORMAT binary)",
                            plan.table,
                            cols.join(", ")
                        ))
                        .await?;
                    let types: Vec<Type> = plan.columns.iter().map(|c| c.ty.clone()).collect();
                    current = Some((i, Box::pin(BinaryCopyInWriter::new(sink, &types))));
                }
                if let Some((_, writer)) = current.as_mut() {
                    for row in &rows {
                        let refs: Vec<&(dyn ToSql + Sync)> =
                            row.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                        writer.as_mut().write(&refs).await?;
                    }
                }
                done += rows.len() as u64;
                progress(MigrateProgress { done, total });
            }
            Msg::Done(i, rows, sum) => {
                if let Some((c, mut writer)) = current.take() {
                    if c == i {
                        writer.as_mut().finish().await?;
                    } else {
                        current = Some((c, writer));
                    }
                }
                sqlite_side.insert(i, (rows, sum));
            }
            Msg::Finished { nul_stripped } => {
                report.nul_stripped = nul_stripped;
            }
        }
    }
    reader
        .await
        .map_err(|e| MigrateError::Reader(e.to_string()))?;
    if sqlite_side.len() != plans.len() {
        return Err(MigrateError::Reader(
            "the reader stopped before the last table".into(),
        ));
    }

    // The counters PostgreSQL's schema starts with are replaced by the
    // SQLite database's; keys only PostgreSQL has stay.
    for row in &meta_rows {
        if let [key, value] = row.as_slice() {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[key, value],
            )
            .await?;
        }
    }

    // Checked: every table read back and compared before anything commits.
    let mut mismatches = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let (rows, sum) = sqlite_side.get(&i).copied().unwrap_or_default();
        let (pg_rows, pg_sum) = if plan.table == META {
            let keys: Vec<String> = meta_rows
                .iter()
                .filter_map(|r| match r.first() {
                    Some(Val::Text(k)) => Some(k.clone()),
                    _ => None,
                })
                .collect();
            checksum_pg(&tx, plan, "WHERE key = ANY($1)", &[&keys]).await?
        } else {
            checksum_pg(&tx, plan, "", &[]).await?
        };
        if (pg_rows, pg_sum) != (rows, sum) {
            mismatches.push(format!(
                "{}: {rows} rows in SQLite, {pg_rows} on PostgreSQL{}",
                plan.table,
                if rows == pg_rows {
                    ", contents differ"
                } else {
                    ""
                }
            ));
        }
        report.tables.push(TableSummary {
            table: plan.table.to_owned(),
            rows: pg_rows,
            checksum: pg_sum,
        });
    }
    if !mismatches.is_empty() {
        // Dropping the transaction rolls it back.
        return Err(MigrateError::Mismatch(mismatches.join("; ")));
    }

    for plan in &plans {
        if let Some(col) = &plan.identity {
            // The next id given is past every copied one.
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', '{col}'),
                                   coalesce((SELECT max({col}) FROM {t}), 1),
                                   (SELECT max({col}) FROM {t}) IS NOT NULL)",
                    t = plan.table
                ),
                &[],
            )
            .await?;
        }
    }
    let now = chrono::Utc::now().timestamp();
    report.leases_released = tx
        .execute(
            "UPDATE feed SET next_check_at = LEAST(next_check_at, $1), schedule_reason = 'restarted'
             WHERE schedule_reason = $2",
            &[&now, &LEASED],
        )
        .await?;
    report.search_queued = tx
        .execute(
            "INSERT INTO search_pending (entry_id, reindex, gen) SELECT id, false, 0 FROM entry",
            &[],
        )
        .await?;
    tx.commit().await?;
    drop(client);
    store.close().await?;
    Ok(report)
}

/// Rows and checksum of a table on PostgreSQL, as [`row_hash`] sums them.
async fn checksum_pg(
    tx: &tokio_postgres::Transaction<'_>,
    plan: &Plan,
    filter: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(u64, u128), MigrateError> {
    let cols: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
    let sql = format!("SELECT {} FROM {} {filter}", cols.join(", "), plan.table);
    let stream = tx.query_raw(&sql, params.iter().copied()).await?;
    pin_mut!(stream);
    let (mut rows, mut sum) = (0u64, 0u128);
    let mut vals = Vec::with_capacity(cols.len());
    while let Some(row) = stream.next().await {
        let row = row?;
        vals.clear();
        for (i, c) in plan.columns.iter().enumerate() {
            let v = match (c.kind, &c.ty) {
                (Kind::Int, t) if *t == Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)?
                    .map(|v| Val::Int(v.into())),
                (Kind::Int, t) if *t == Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)?
                    .map(|v| Val::Int(v.into())),
                (Kind::Int, _) => row.try_get::<_, Option<i64>>(i)?.map(Val::Int),
                (Kind::Text, _) => row.try_get::<_, Option<String>>(i)?.map(Val::Text),
                (Kind::Bool, _) => row.try_get::<_, Option<bool>>(i)?.map(Val::Bool),
                (Kind::Bytes, _) => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Val::Bytes),
            };
            vals.push(v.unwrap_or(Val::Null));
        }
        rows += 1;
        sum = sum.wrapping_add(row_hash(&vals));
    }
    Ok((rows, sum))
}

/// The SQLite side, on a blocking thread: one read transaction for the
/// whole copy, tables streamed in plan order.
fn read_source(
    path: &Path,
    plans: Vec<Plan>,
    plan_send: &std::sync::mpsc::Sender<Vec<Plan>>,
    send: &tokio::sync::mpsc::Sender<Result<Msg, MigrateError>>,
) -> Result<(), MigrateError> {
    let mut conn = open_source(path)?;
    // A deferred transaction's snapshot starts at its first read: the
    // schema check below, so every later read sees the same database.
    let tx = conn.transaction()?;
    let tables: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let known: HashSet<&str> = plans.iter().map(|p| p.table).collect();
    for t in &tables {
        if !known.contains(t.as_str()) && !is_derived(t) {
            return Err(MigrateError::UnknownTable(t.clone()));
        }
    }
    let mut narrowed = Vec::with_capacity(plans.len());
    for mut plan in plans {
        let sqlite_cols: Vec<String> = {
            let mut stmt = tx.prepare(&format!("PRAGMA table_info({})", plan.table))?;
            stmt.query_map([], |r| r.get(1))?
                .collect::<rusqlite::Result<_>>()?
        };
        for c in &sqlite_cols {
            if !plan.columns.iter().any(|p| &p.name == c) {
                return Err(MigrateError::UnknownColumn {
                    table: plan.table.to_owned(),
                    column: c.clone(),
                });
            }
        }
        // PostgreSQL-only columns take their defaults.
        plan.columns.retain(|p| sqlite_cols.contains(&p.name));
        narrowed.push(plan);
    }
    let plans = narrowed;
    let _ = plan_send.send(plans.clone());

    let mut totals = Vec::with_capacity(plans.len());
    for plan in &plans {
        let n: i64 = tx.query_row(&format!("SELECT count(*) FROM {}", plan.table), [], |r| {
            r.get(0)
        })?;
        totals.push(u64::try_from(n).unwrap_or(0));
    }
    let closed = || MigrateError::Reader("the writer stopped".into());
    send.blocking_send(Ok(Msg::Totals(totals)))
        .map_err(|_| closed())?;

    let mut nul_stripped = 0u64;
    for (i, plan) in plans.iter().enumerate() {
        let cols: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
        let order = if plan.order.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", plan.order)
        };
        let mut stmt = tx.prepare(&format!(
            "SELECT {} FROM {}{order}",
            cols.join(", "),
            plan.table
        ))?;
        let mut rows = stmt.query([])?;
        let (mut count, mut sum) = (0u64, 0u128);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(row) = rows.next()? {
            count += 1;
            let mut vals = Vec::with_capacity(cols.len());
            for (j, c) in plan.columns.iter().enumerate() {
                let v = convert(row.get_ref(j)?, c.kind, &mut nul_stripped).map_err(|found| {
                    MigrateError::Value {
                        table: plan.table.to_owned(),
                        column: c.name.clone(),
                        row: count,
                        found,
                        wanted: c.kind.name(),
                    }
                })?;
                vals.push(v);
            }
            sum = sum.wrapping_add(row_hash(&vals));
            batch.push(vals);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                send.blocking_send(Ok(Msg::Rows(i, full)))
                    .map_err(|_| closed())?;
            }
        }
        if !batch.is_empty() {
            send.blocking_send(Ok(Msg::Rows(i, batch)))
                .map_err(|_| closed())?;
        }
        send.blocking_send(Ok(Msg::Done(i, count, sum)))
            .map_err(|_| closed())?;
    }
    send.blocking_send(Ok(Msg::Finished { nul_stripped }))
        .map_err(|_| closed())?;
    // Read-only: nothing to commit; ending the read is all.
    tx.rollback()?;
    Ok(())
}

/// A SQLite value in the PostgreSQL column's type. SQLite's columns take
/// any type; a value of the wrong one is an error, not a guess. The one
/// change: PostgreSQL's text cannot hold NUL characters, which are dropped
/// (and counted).
fn convert(v: ValueRef<'_>, kind: Kind, nul_stripped: &mut u64) -> Result<Val, &'static str> {
    let found = |v: ValueRef<'_>| match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    };
    Ok(match (kind, v) {
        (_, ValueRef::Null) => Val::Null,
        (Kind::Int, ValueRef::Integer(i)) => Val::Int(i),
        (Kind::Bool, ValueRef::Integer(0)) => Val::Bool(false),
        (Kind::Bool, ValueRef::Integer(1)) => Val::Bool(true),
        (Kind::Bytes, ValueRef::Blob(b)) => Val::Bytes(b.to_vec()),
        (Kind::Text, ValueRef::Text(t)) => {
            let s = std::str::from_utf8(t).map_err(|_| "text that is not UTF-8")?;
            if s.contains('\0') {
                *nul_stripped += 1;
                Val::Text(s.replace('\0', ""))
            } else {
                Val::Text(s.to_owned())
            }
        }
        (Kind::Bool, ValueRef::Integer(_)) => return Err("an integer other than 0 or 1"),
        (_, other) => return Err(found(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_is_strict_but_drops_nul() {
        let mut n = 0;
        assert_eq!(
            convert(ValueRef::Integer(1), Kind::Bool, &mut n),
            Ok(Val::Bool(true))
        );
        assert!(convert(ValueRef::Integer(2), Kind::Bool, &mut n).is_err());
        assert!(convert(ValueRef::Real(1.5), Kind::Int, &mut n).is_err());
        assert!(convert(ValueRef::Text(b"12"), Kind::Int, &mut n).is_err());
        assert!(convert(ValueRef::Text(b"\xff"), Kind::Text, &mut n).is_err());
        assert_eq!(
            convert(ValueRef::Text(b"a\0b"), Kind::Text, &mut n),
            Ok(Val::Text("ab".into()))
        );
        assert_eq!(n, 1);
        assert_eq!(convert(ValueRef::Null, Kind::Int, &mut n), Ok(Val::Null));
    }

    #[test]
    fn row_hash_tells_kinds_and_boundaries_apart() {
        let rows = [
            vec![Val::Null],
            vec![Val::Int(0)],
            vec![Val::Bool(false)],
            vec![Val::Text(String::new())],
            vec![Val::Bytes(Vec::new())],
            vec![Val::Text("ab".into()), Val::Text("c".into())],
            vec![Val::Text("a".into()), Val::Text("bc".into())],
        ];
        let hashes: HashSet<u128> = rows.iter().map(|r| row_hash(r)).collect();
        assert_eq!(hashes.len(), rows.len());
    }
}
