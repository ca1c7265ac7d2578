//! The PostgreSQL backend: every SQL statement the program runs on
//! PostgreSQL lives in this folder, split by concern like the SQLite
//! backend's; this file holds the connection pool, the migrations and
//! what the backend cannot do yet.
//!
//! Several Tributary nodes may share one database, so every write that
//! belongs together is one transaction and claims are row locks: due
//! feeds are leased with `FOR UPDATE SKIP LOCKED`, and a lease is a time
//! in the row (`next_check_at`), so a node that dies mid-poll leaves its
//! feeds due again when their leases run out.

mod articles;
mod entries;
mod feeds;
mod hosts;
mod outputs;
mod polling;
mod retention;
mod status;
mod stories;

use super::rows::{from_ts, opt_ts, ts};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::database::{PostgresUrl, SslMode};

use super::{CommitStats, PollLoad, Revision, StoreError};

mod embedded {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

/// Connections in the pool: the dispatch loop, the article workers, the
/// indexer and the HTTP server each hold one for a statement at a time.
const POOL_SIZE: usize = 16;

/// How long a caller waits for a free connection, or for a new one.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The advisory lock migrations run under, so nodes starting together
/// do not migrate at once ("TRIB" in ASCII).
const MIGRATION_LOCK: i64 = 0x5452_4942;

/// The session advisory lock a once-per-cluster task is led under.
pub(super) fn lead_lock(task: super::LeadTask) -> i64 {
    match task {
        super::LeadTask::Housekeeping => MIGRATION_LOCK + 1,
        super::LeadTask::WebSub => MIGRATION_LOCK + 2,
        super::LeadTask::Push => MIGRATION_LOCK + 3,
    }
}

/// A dedicated connection for a task's session advisory lock, holding it
/// or waiting to: the lock lasts as long as the session, so a node that
/// dies (or loses its connection) lets another node lead on its next try.
/// A node that does not lead keeps the session and tries again on it, so
/// it does not open a connection every few seconds for as long as another
/// node leads.
pub(super) struct Leadership {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
    task: super::LeadTask,
    leading: bool,
}

impl Leadership {
    /// True once the connection (and so any lock it held) is gone.
    pub(super) fn lost(&self) -> bool {
        self.client.is_closed() || self.connection.is_finished()
    }

    /// Whether this session holds the task's lock.
    pub(super) fn leading(&self) -> bool {
        self.leading
    }

    /// Takes the lock if no other session holds it; whether this one does.
    pub(super) async fn try_take(&mut self) -> Result<bool, StoreError> {
        if !self.leading {
            self.leading = self
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&lead_lock(self.task)])
                .await?
                .try_get(0)?;
        }
        Ok(self.leading)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Closing the session releases the lock on the server.
        self.connection.abort();
    }
}

/// Opens the pool's connections. The end of one is logged at debug with
/// its cause: deadpool's own task warned "Connection error: db error" for
/// every pooled connection when the server restarted, with no cause, while
/// the work that failed says so at its own level.
struct QuietConnect {
    tls: MakeRustlsConnect,
}

impl deadpool_postgres::Connect for QuietConnect {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                        tokio_postgres::Error,
                    >,
                > + Send
                + '_,
        >,
    > {
        let (config, tls) = (config.clone(), self.tls.clone());
        Box::pin(async move {
            let (client, connection) = config.connect(tls).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %super::pg_cause(&e), "PostgreSQL connection closed");
                }
            });
            Ok((client, task))
        })
    }
}

/// A handle to a PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub(super) struct PgStore {
    pool: Pool,
    url: PostgresUrl,
    tls: MakeRustlsConnect,
    index_work: std::sync::Arc<tokio::sync::Notify>,
    /// Polls recorded since the store opened.
    polls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The minute host leases were last pruned (`hosts::renew_hosts`).
    hosts_pruned: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl PgStore {
    /// Connects to the database at `url` and brings its schema up to date.
    /// An unreachable server or a refused login is an error here, naming
    /// the URL (without its password).
    pub(super) async fn connect(url: &PostgresUrl) -> Result<PgStore, StoreError> {
        let mut config = url.driver_config();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let tls = tls_connector(url)?;
        let manager = Manager::from_connect(
            config,
            QuietConnect { tls: tls.clone() },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Connect {
                url: url.to_string(),
                cause: e.to_string(),
            })?;
        let store = PgStore {
            pool,
            url: url.clone(),
            tls,
            index_work: Default::default(),
            polls: Default::default(),
            hosts_pruned: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Opens a connection of its own for `task`'s lead lock (not the
    /// pool's: the lock must outlive any one statement) and tries to take
    /// the lock; the session is returned either way, to try again on.
    pub(super) async fn lead_session(
        &self,
        task: super::LeadTask,
    ) -> Result<Leadership, StoreError> {
        let mut config = self.url.driver_config();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let (client, connection) =
            config
                .connect(self.tls.clone())
                .await
                .map_err(|e| StoreError::Connect {
                    url: self.url.to_string(),
                    cause: super::pg_cause(&e),
                })?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut lead = Leadership {
            client,
            connection,
            task,
            leading: false,
        };
        lead.try_take().await?;
        Ok(lead)
    }

    /// A connection from the pool; failing to get one names the server.
    /// `migrate-db` copies through one too.
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Connect {
            url: self.url.to_string(),
            cause: match e {
                deadpool_postgres::PoolError::Backend(e) => super::pg_cause(&e),
                other => other.to_string(),
            },
        })
    }

    /// Runs the migrations not yet applied, under an advisory lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let applied = embedded::migrations::runner()
            .run_async(&mut **client)
            .await
            .map_err(|e| StoreError::PgMigrate {
                url: self.url.to_string(),
                cause: e.to_string(),
            });
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        applied.map(|_| ())
    }

    pub(super) async fn check(&self) -> Result<(), StoreError> {
        self.ping().await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    /// The output revision: the base counters plus every session's shard
    /// (see [`bump_revision`]), read in one snapshot, so it moves with
    /// every commit that changed what an output shows and never goes back.
    pub(super) async fn revision(&self) -> Result<Revision, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT key, value FROM meta
             WHERE key IN ('entries_rev', 'entries_changed_at', 'search_rev', 'search_changed_at')
                OR key LIKE '%@%'",
            &[],
        )
        .await?;
        let mut rev = Revision::default();
        let (mut changed_at, mut search_changed_at) = (0, 0);
        for row in rows {
            let (k, v): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            match k.split_once('@').map_or(k.as_str(), |(base, _)| base) {
                "entries_rev" => rev.rev += v,
                "entries_changed_at" => changed_at = changed_at.max(v),
                "search_rev" => rev.search += v,
                "search_changed_at" => search_changed_at = search_changed_at.max(v),
                _ => {}
            }
        }
        rev.changed_at = from_ts(changed_at);
        rev.search_changed_at = from_ts(search_changed_at);
        Ok(rev)
    }

    /// Each poll is its own commit here: batches and polls count alike.
    pub(super) fn commit_stats(&self) -> CommitStats {
        let polls = self.polls.load(std::sync::atomic::Ordering::Relaxed);
        CommitStats {
            batches: polls,
            polls,
        }
    }

    fn note_poll(&self) {
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn poll_load(&self) -> PollLoad {
        PollLoad::default()
    }

    pub(super) async fn index_work(&self) {
        self.index_work.notified().await;
    }

    /// Closes the pool: connections in use close when they are returned.
    pub(super) async fn close(self) -> Result<(), StoreError> {
        self.pool.close();
        Ok(())
    }

    pub(super) async fn entry_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM entry", &[])
            .await?
            .try_get(0)?;
        Ok(n.max(0) as u64)
    }
}

/// Hot statements run prepared once per connection (deadpool keeps each
/// connection's prepared statements by their text): from text alone
/// tokio-postgres prepares a statement every time it runs one, which is a
/// round trip more and a parse and plan on the server for each. Only for
/// SQL from a fixed set of texts: the cache keeps every text it sees.
pub(super) async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.execute(&statement, params).await
}

/// [`exec`] for a query: every row.
pub(super) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.query(&statement, params).await
}

/// [`exec`] for a query of one row.
pub(super) async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.query_one(&statement, params).await
}

/// [`exec`] for a query of at most one row.
pub(super) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.query_opt(&statement, params).await
}

/// Bumps the output revision in the caller's transaction: every node's
/// render cache keys on it.
///
/// Each session counts in a row of its own (`entries_rev@<backend pid>`,
/// beside `entries_changed_at@<pid>`), and the revision is the sum: one
/// row that every poll updated would hold each poll's transaction behind
/// the previous one's commit (its row lock lasts until the commit is on
/// disk), and polls from every node would be stored one at a time (and
/// shared rows taken in different orders by two polls deadlock). A
/// session runs one transaction at a time, so its rows wait for nobody.
/// Housekeeping folds the rows of ended sessions into the base rows
/// ([`fold_revision_shards`]); the sum stays as it was.
pub(super) async fn bump_revision(
    tx: &deadpool_postgres::Transaction<'_>,
    now: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    bump_shard(tx, "entries_rev", "entries_changed_at", now).await
}

/// [`bump_revision`] for the search revision: searches find more.
pub(super) async fn bump_search_revision(
    tx: &deadpool_postgres::Transaction<'_>,
    now: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    bump_shard(tx, "search_rev", "search_changed_at", now).await
}

async fn bump_shard(
    tx: &deadpool_postgres::Transaction<'_>,
    counter: &str,
    changed_at: &str,
    now: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    exec(
        tx,
        "INSERT INTO meta (key, value)
         VALUES ($1 || '@' || pg_backend_pid(), 1), ($2 || '@' || pg_backend_pid(), $3)
         ON CONFLICT (key) DO UPDATE SET value = CASE
             WHEN split_part(meta.key, '@', 1) = $1 THEN meta.value + 1
             ELSE greatest(meta.value, excluded.value) END",
        &[&counter, &changed_at, &ts(now)],
    )
    .await?;
    Ok(())
}

/// Folds the revision rows of sessions that ended into the base rows
/// (counters added, times the latest), in one transaction: the revision
/// every node reads stays the same, and the table keeps one row per live
/// session. A session that starts meanwhile under a folded row's pid
/// waits for this transaction and then starts a row of its own.
pub(super) async fn fold_revision_shards(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(), tokio_postgres::Error> {
    exec(
        tx,
        "WITH gone AS (
             DELETE FROM meta
             WHERE split_part(key, '@', 1) IN
                   ('entries_rev', 'entries_changed_at', 'search_rev', 'search_changed_at')
               AND split_part(key, '@', 2) <> ''
               AND split_part(key, '@', 2) NOT IN (SELECT pid::text FROM pg_stat_activity)
             RETURNING split_part(key, '@', 1) AS base, value),
         folded AS (
             SELECT base, CASE WHEN base IN ('entries_rev', 'search_rev') THEN sum(value)
                                ELSE max(value) END AS value
             FROM gone GROUP BY base)
         UPDATE meta SET value = CASE WHEN meta.key IN ('entries_rev', 'search_rev')
                                      THEN meta.value + folded.value
                                      ELSE greatest(meta.value, folded.value) END
         FROM folded WHERE meta.key = folded.base",
        &[],
    )
    .await?;
    Ok(())
}

/// The TLS connector for `url`'s `sslmode` and `sslrootcert` (see
/// [`crate::database`]): rustls, as for feeds. `disable` never uses it;
/// `prefer` and `require` encrypt without checking the certificate (as
/// libpq does); `verify-ca` checks that it chains to `sslrootcert`;
/// `verify-full` also that it names the host, against `sslrootcert` or
/// else the system's trust store.
fn tls_connector(url: &PostgresUrl) -> Result<MakeRustlsConnect, StoreError> {
    use std::sync::Arc;
    let fail = |cause: String| StoreError::Connect {
        url: url.to_string(),
        cause,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .dangerous();
    let tls = url.tls();
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        match (tls.mode, &tls.root_cert) {
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, _) => {
                Arc::new(tls::Unverified(Arc::clone(&provider)))
            }
            (mode, Some(path)) => {
                let roots = tls::read_roots(path).map_err(fail)?;
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| fail(format!("sslrootcert {}: {e}", path.display())))?;
                if mode == SslMode::VerifyCa {
                    Arc::new(tls::AnyName(webpki))
                } else {
                    webpki
                }
            }
            (_, None) => Arc::new(
                rustls_platform_verifier::Verifier::new(Arc::clone(&provider))
                    .map_err(|e| fail(format!("the system's trust store: {e}")))?,
            ),
        };
    Ok(MakeRustlsConnect::new(
        builder
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// The certificate checks `sslmode` asks for that rustls does not have.
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

    /// The certificates of a PEM file (`sslrootcert`).
    pub(super) fn read_roots(path: &Path) -> Result<RootCertStore, String> {
        let what = |e: &dyn std::fmt::Display| format!("sslrootcert {}: {e}", path.display());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| what(&e))? {
            roots
                .add(cert.map_err(|e| what(&e))?)
                .map_err(|e| what(&e))?;
        }
        if roots.is_empty() {
            return Err(what(&"no certificate in the file"));
        }
        Ok(roots)
    }

    /// `prefer` and `require`: any certificate (the handshake's signatures
    /// are still checked), as libpq does without a root certificate.
    #[derive(Debug)]
    pub(super) struct Unverified(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `verify-ca`: the chain is checked, the name is not.
    #[derive(Debug)]
    pub(super) struct AnyName(pub(super) Arc<rustls::client::WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}
