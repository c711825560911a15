//! One storage layer over SQLite and Postgres. Queries are written once with `$n`
//! placeholders (both drivers accept them) against sqlx's `Any` driver; the schema
//! differs only where the dialects do, in `migrations/{sqlite,postgres}`.

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// The URL scheme picks the backend; anything else is a configuration error that
    /// names the variable it came from.
    pub fn from_url(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(DbError::Config(format!(
                "DATABASE_URL must start with sqlite: or postgres:// (got {})",
                redact_url(url)
            )))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Config(String),
    #[error("could not open the database at DATABASE_URL={url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
    /// For connections outside the pool (Postgres LISTEN).
    pub url: std::sync::Arc<str>,
}

/// Hides the password of a database URL so it can go into logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Database {
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let connect_err = |source| DbError::Connect {
            url: redact_url(url),
            source,
        };
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            // Create the file (and its directory) on first run.
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
            if let Some(path) = sqlite_path(&url) {
                if let Some(dir) = std::path::Path::new(&path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            DbError::Config(format!(
                                "DATABASE_URL points at {path}, whose directory cannot be created: {e}"
                            ))
                        })?;
                    }
                }
            }
        }
        let options: AnyConnectOptions = url.parse().map_err(connect_err)?;
        let shared_url: std::sync::Arc<str> = url.as_str().into();
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; the busy timeout
                        // makes a second writer wait instead of failing at once.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        Ok(Self {
            pool,
            backend,
            url: shared_url,
        })
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("../migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("../migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Tables and their columns, sorted: what the schema test compares across dialects.
    pub async fn schema(&self) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
        let rows: Vec<(String, String)> = match self.backend {
            Backend::Sqlite => {
                sqlx::query_as(
                    "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'",
                )
                .fetch_all(&self.pool)
                .await?
            }
            Backend::Postgres => {
                sqlx::query_as(
                    "SELECT table_name::text, column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%'",
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (table, column) in rows {
            tables.entry(table).or_default().push(column);
        }
        Ok(tables
            .into_iter()
            .map(|(t, mut cols)| {
                cols.sort();
                (t, cols)
            })
            .collect())
    }
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

/// Milliseconds since the Unix epoch: how every timestamp is stored, in both dialects.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `2026-11-24 09:12 UTC`: days-from-civil inverted (H. Hinnant), so no date crate is
/// needed for one format.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// `ms` since the Unix epoch as RFC 3339 in UTC (`2026-12-07T18:00:00.123Z`), as machine
/// readers want it (Standard Webhooks' `timestamp`).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An optional non-negative number to bind as `NULLIF($n, -1.0)`: -1 stands for NULL.
/// sqlx's Any driver binds a NULL double as a float4 (sqlx-core 0.8 `any/arguments.rs`),
/// and Postgres refuses it for a statement it prepared with a float8 ("incorrect binary
/// data format"), so a NULL never travels as one.
pub fn nullable_f64(value: Option<f64>) -> f64 {
    value.unwrap_or(-1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(format_ms(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_ms(1_795_512_720_000), "2026-11-24 09:32 UTC");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn unknown_scheme_names_the_variable() {
        let err = Backend::from_url("mysql://x").unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
