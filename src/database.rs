//! Where the data lives: a SQLite file (the default), or a PostgreSQL
//! server named by a `postgres://` or `postgresql://` URL.
//!
//! A URL may carry a password (in its user part or as `?password=`); it is
//! kept here and handed only to the driver. Everything that shows a
//! [`Database`] — `Display`, `Debug`, logs, `check`, `status` — shows the
//! URL with the password replaced by `***`. Pure: no I/O.
//!
//! `sslmode` takes libpq's values: `disable`, `prefer` (the default: TLS
//! if the server offers it, unverified), `require` (TLS, unverified),
//! `verify-ca` (TLS, the certificate chains to `sslrootcert`) and
//! `verify-full` (and names the host; against `sslrootcert` if given,
//! else the system's trust store). The driver knows only the first three,
//! so the last two and `sslrootcert` are taken out of the URL it sees.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The environment variable that overrides the config's `database`, so a
/// password need not be written in the config file.
pub const ENV_VAR: &str = "TRIBUTARY_DATABASE";

/// What `database` names.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

impl Database {
    /// Reads a `database` value: a `postgres://` or `postgresql://` URL is
    /// a PostgreSQL server; anything else is a SQLite path, relative to
    /// `base` when not absolute.
    pub fn parse(value: &str, base: &Path) -> Result<Database, String> {
        if PostgresUrl::is_url(value) {
            return PostgresUrl::parse(value).map(Database::Postgres);
        }
        // `join` keeps an absolute path as it is.
        Ok(Database::Sqlite(base.join(value)))
    }

    /// The backend's name, as `status` shows it.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "SQLite",
            Database::Postgres(_) => "PostgreSQL",
        }
    }

    /// The SQLite file, when it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(p) => Some(p),
            Database::Postgres(_) => None,
        }
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "{}", p.display()),
            Database::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Database::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// A PostgreSQL connection URL. `Display` and `Debug` show it with any
/// password replaced by `***`; only [`PostgresUrl::driver_config`] sees
/// the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    full: String,
    shown: String,
    tls: Tls,
}

/// How the connection is encrypted and the server's certificate checked
/// (`sslmode`, `sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    /// PEM file of the certificates the server's must chain to.
    pub root_cert: Option<PathBuf>,
}

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Takes `sslmode` and `sslrootcert` out of `url`: what the driver sees,
/// and the TLS settings.
fn split_tls(url: &url::Url) -> Result<(url::Url, Tls), String> {
    let mut tls = Tls {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let mut rest = Vec::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" => {
                tls.mode = match v.as_ref() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other} is not one of disable, prefer, require, \
                             verify-ca, verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(v.as_ref())),
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    if tls.mode == SslMode::VerifyCa && tls.root_cert.is_none() {
        return Err("sslmode=verify-ca needs sslrootcert=PATH (the CA's certificate, PEM)".into());
    }
    let mut driver = url.clone();
    let sslmode = match tls.mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    rest.push(("sslmode".into(), sslmode.into()));
    driver.query_pairs_mut().clear().extend_pairs(rest);
    Ok((driver, tls))
}

impl PostgresUrl {
    /// Whether `value` names PostgreSQL rather than a file.
    pub fn is_url(value: &str) -> bool {
        let lower = value.trim_start().to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql://")
    }

    /// Checks the URL as the driver reads it (host, port, options such as
    /// `sslmode`, `connect_timeout`); the message never repeats the URL.
    pub fn parse(value: &str) -> Result<PostgresUrl, String> {
        let value = value.trim();
        let parsed =
            url::Url::parse(value).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        if parsed.host_str().is_none_or(str::is_empty)
            && !parsed.query_pairs().any(|(k, _)| k == "host")
        {
            return Err("a PostgreSQL URL needs a host: postgres://user@host/database".into());
        }
        // The driver reads the URL as `url` normalised it (a scheme in
        // capitals, say, is still a scheme).
        let (driver, tls) = split_tls(&parsed)?;
        let config = tokio_postgres::Config::from_str(driver.as_str())
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
        if config.get_user().is_none_or(str::is_empty) {
            return Err("a PostgreSQL URL needs a user name: postgres://user@host/database".into());
        }
        Ok(PostgresUrl {
            full: parsed.to_string(),
            shown: redact(&parsed),
            tls,
        })
    }

    /// How connections to the server are encrypted and checked.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// The driver's settings, password included: for the store only.
    pub fn driver_config(&self) -> tokio_postgres::Config {
        // Parsed once already in `parse`; a failure here cannot happen.
        url::Url::parse(&self.full)
            .ok()
            .and_then(|u| split_tls(&u).ok())
            .and_then(|(driver, _)| tokio_postgres::Config::from_str(driver.as_str()).ok())
            .unwrap_or_default()
    }

    /// The database name in the URL (the user name when none is given, as
    /// PostgreSQL itself defaults it).
    pub fn dbname(&self) -> Option<String> {
        let config = self.driver_config();
        config.get_dbname().or(config.get_user()).map(str::to_owned)
    }

    /// The same server with `dbname` as the database (tests create and drop
    /// databases through the one they are given).
    pub fn with_dbname(&self, dbname: &str) -> PostgresUrl {
        match url::Url::parse(&self.full) {
            Ok(mut u) => {
                u.set_path(&format!("/{dbname}"));
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .filter(|(k, _)| k != "dbname")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if pairs.is_empty() {
                    u.set_query(None);
                } else {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
                PostgresUrl {
                    full: u.to_string(),
                    shown: redact(&u),
                    tls: self.tls.clone(),
                }
            }
            Err(_) => self.clone(),
        }
    }
}

/// The URL with its password (user part and `password=` option) replaced.
fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if shown.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = shown
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_takes_libpq_values_and_the_driver_sees_what_it_knows() {
        let url = |q: &str| PostgresUrl::parse(&format!("postgres://u@db.lan/t{q}"));
        let tls = |q: &str| url(q).unwrap().tls().clone();
        let driver = |q: &str| url(q).unwrap().driver_config().get_ssl_mode();
        use tokio_postgres::config::SslMode as Driver;
        assert_eq!(tls("").mode, SslMode::Prefer);
        assert_eq!(driver(""), Driver::Prefer);
        assert_eq!(tls("?sslmode=disable").mode, SslMode::Disable);
        assert_eq!(driver("?sslmode=disable"), Driver::Disable);
        assert_eq!(driver("?sslmode=require"), Driver::Require);
        let full = tls("?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5");
        assert_eq!(full.mode, SslMode::VerifyFull);
        assert_eq!(full.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        let u = url("?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5").unwrap();
        assert_eq!(u.driver_config().get_ssl_mode(), Driver::Require);
        assert_eq!(
            u.driver_config().get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
        assert!(u.to_string().contains("sslmode=verify-full"), "{u}");
        assert_eq!(tls("?sslmode=verify-full").root_cert, None);
        assert_eq!(u.with_dbname("other").tls(), &full);
        assert!(
            url("?sslmode=verify-ca")
                .unwrap_err()
                .contains("sslrootcert")
        );
        assert!(
            url("?sslmode=allow-all")
                .unwrap_err()
                .contains("sslmode=allow-all")
        );
    }

    #[test]
    fn a_url_selects_postgres_and_anything_else_is_a_file() {
        let base = Path::new("/etc/tributary");
        for url in [
            "postgres://feeds@db.lan/tributary",
            "postgresql://feeds@db.lan:5433/tributary",
            "POSTGRES://feeds@127.0.0.1/tributary?sslmode=disable",
        ] {
            let db = Database::parse(url, base).unwrap();
            assert_eq!(db.backend(), "PostgreSQL", "{url}");
        }
        assert_eq!(
            Database::parse("x.db", base).unwrap(),
            Database::Sqlite(PathBuf::from("/etc/tributary/x.db"))
        );
        // A file whose name merely mentions postgres is a file.
        assert_eq!(
            Database::parse("/srv/postgres://x", base)
                .unwrap()
                .backend(),
            "SQLite"
        );
        assert_eq!(
            Database::parse("postgres.db", base).unwrap().backend(),
            "SQLite"
        );
    }

    #[test]
    fn a_bad_url_is_an_error_that_does_not_repeat_it() {
        for bad in [
            "postgres://",
            "postgres:///tributary",
            "postgres://u:hunter2@db.lan/t?sslmode=sometimes",
            "postgres://u:hunter2@db.lan:notaport/t",
            "postgres://:hunter2@db.lan/t",
        ] {
            let err = PostgresUrl::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        for (url, shown) in [
            (
                "postgres://feeds:hunter2@db.lan/tributary",
                "postgres://feeds:***@db.lan/tributary",
            ),
            (
                "postgresql://feeds@db.lan/tributary?password=hunter2&sslmode=disable",
                "postgresql://feeds@db.lan/tributary?password=***&sslmode=disable",
            ),
            (
                "postgres://feeds:p%40ss%2Fhunter2@db.lan/t",
                "postgres://feeds:***@db.lan/t",
            ),
            ("postgres://feeds@db.lan/t", "postgres://feeds@db.lan/t"),
        ] {
            let db = Database::parse(url, Path::new("/")).unwrap();
            for text in [db.to_string(), format!("{db:?}"), format!("{db:#?}")] {
                assert!(!text.contains("hunter2"), "{text}");
                assert!(text.contains(shown), "{text} lacks {shown}");
            }
        }
        // The driver still gets it.
        let Database::Postgres(url) =
            Database::parse("postgres://feeds:hunter2@db.lan/t", Path::new("/")).unwrap()
        else {
            panic!("not postgres")
        };
        assert_eq!(url.driver_config().get_password(), Some(&b"hunter2"[..]));
        let other = url.with_dbname("scratch");
        assert_eq!(other.dbname().as_deref(), Some("scratch"));
        assert_eq!(other.driver_config().get_password(), Some(&b"hunter2"[..]));
        assert_eq!(other.to_string(), "postgres://feeds:***@db.lan/scratch");
    }
}
