//! Configuration: defaults, then an optional TOML file, then the environment. A bad value
//! fails at start with a message that names the variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone)]
pub struct Config {
    /// `LEPTOS_SITE_ADDR`
    pub site_addr: SocketAddr,
    /// `LEPTOS_SITE_ROOT`: the built site (pkg/, public files).
    pub site_root: PathBuf,
    pub site_pkg_dir: String,
    pub output_name: String,
    pub production: bool,
    pub reload_port: u32,
    /// `CREVID_DATA_DIR`: database file, media, key file. Always absolute: a relative
    /// value is resolved against the working directory at start, because subprocesses
    /// (ffmpeg) run in work directories of their own and would resolve it elsewhere.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`
    pub database_url: String,
    /// `CREVID_SECRET_KEY`: base64 of 32 bytes; when unset a key file under the data dir.
    pub secret_key: Option<String>,
    pub log_format: LogFormat,
    /// `CREVID_PUBLIC_URL`: where users reach the app (https:// turns on Secure cookies).
    pub public_url: Option<url::Url>,
    /// `CREVID_CLIENT_IP_HEADER`: a header set by a trusted reverse proxy (such as
    /// `X-Forwarded-For`) whose last address is the client's; none (the peer) by default.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// `CREVID_RATE_WINDOW_SECS`: the window every rate limit counts in (default 60).
    pub rate_window_secs: u64,
    /// `CREVID_EMBEDDED_WORKERS`: run background tasks in this process (default true).
    pub embedded_workers: bool,
    /// How long a claimed task stays claimed without a heartbeat (a crashed worker's tasks
    /// run again after it); tests shorten it.
    pub task_lease_ms: u64,
    /// The first retry's delay; later ones double it (with jitter), up to 5 minutes.
    pub retry_base_ms: u64,
    /// `CREVID_SHUTDOWN_GRACE_SECS`: on SIGTERM, how long running tasks may finish before
    /// they are stopped and queued again without spending an attempt (default 8 s, under
    /// Docker's 10 s before SIGKILL).
    pub shutdown_grace_secs: u64,
    /// `QSTASH_TOKEN` and the rest: tasks go through QStash instead of the embedded workers.
    pub qstash: Option<app::ssr::qstash::QStashConfig>,
    /// `CREVID_STORAGE_URL` (`s3://bucket/prefix`) with the `AWS_*` variables: media in an
    /// S3-compatible object store instead of only under the data dir.
    pub object_store: Option<app::ssr::storage::ObjectStoreConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("site_addr", &self.site_addr)
            .field("site_root", &self.site_root)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &app::ssr::db::redact_url(&self.database_url),
            )
            .field("secret_key", &self.secret_key.as_ref().map(|_| "(set)"))
            .field("production", &self.production)
            .field("public_url", &self.public_url.as_ref().map(|u| u.as_str()))
            .field("client_ip_header", &self.client_ip_header)
            .field("rate_window_secs", &self.rate_window_secs)
            .field("task_lease_ms", &self.task_lease_ms)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("object_store", &self.object_store)
            .field(
                "qstash",
                &self.qstash.as_ref().map(|q| {
                    format!(
                        "{} (retries {}, timeout {} s, DLQ {})",
                        q.url,
                        q.retries,
                        q.timeout.as_secs(),
                        if q.keep_dead_letters {
                            "keep"
                        } else {
                            "delete"
                        }
                    )
                }),
            )
            .finish()
    }
}

/// Keys of the optional config file; each matches an environment variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    site_addr: Option<String>,
    site_root: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    secret_key: Option<String>,
    log_format: Option<String>,
    env: Option<String>,
    public_url: Option<String>,
    storage_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// From the process environment (and `CREVID_CONFIG` or `./crevid.toml`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(&|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
    }

    pub fn load(env: Env<'_>) -> Result<Self, ConfigError> {
        let file = match env("CREVID_CONFIG") {
            Some(path) => read_file(Path::new(&path), "CREVID_CONFIG")?,
            None if Path::new("crevid.toml").exists() => {
                read_file(Path::new("crevid.toml"), "./crevid.toml")?
            }
            None => FileConfig::default(),
        };
        let pick = |var: &str, from_file: Option<String>| env(var).or(from_file);

        let site_addr = pick("LEPTOS_SITE_ADDR", file.site_addr)
            .unwrap_or_else(|| "127.0.0.1:3000".into())
            .parse::<SocketAddr>()
            .map_err(|e| {
                ConfigError(format!(
                    "LEPTOS_SITE_ADDR must be host:port, like 127.0.0.1:3000 ({e})"
                ))
            })?;
        let data_dir = env("CREVID_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| "data".into());
        let data_dir = std::path::absolute(&data_dir).map_err(|e| {
            ConfigError(format!(
                "CREVID_DATA_DIR: cannot resolve {} to an absolute path ({e})",
                data_dir.display()
            ))
        })?;
        let database_url = pick("DATABASE_URL", file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("crevid.db").display()));
        app::ssr::db::Backend::from_url(&database_url).map_err(|e| ConfigError(e.to_string()))?;
        let site_root = env("LEPTOS_SITE_ROOT")
            .map(PathBuf::from)
            .or(file.site_root)
            .unwrap_or_else(default_site_root);
        let log_format = match pick("CREVID_LOG_FORMAT", file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "CREVID_LOG_FORMAT must be text or json (got {other:?})"
                )))
            }
        };
        let production = match pick("LEPTOS_ENV", file.env)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("dev") | Some("development") => false,
            Some("prod") | Some("production") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "LEPTOS_ENV must be DEV or PROD (got {other:?})"
                )))
            }
        };
        let reload_port = env("LEPTOS_RELOAD_PORT")
            .map(|p| {
                p.parse().map_err(|_| {
                    ConfigError(format!(
                        "LEPTOS_RELOAD_PORT must be a port number (got {p:?})"
                    ))
                })
            })
            .transpose()?
            .unwrap_or(3001);
        let public_url = pick("CREVID_PUBLIC_URL", file.public_url)
            .map(|u| {
                url::Url::parse(&u)
                    .ok()
                    .filter(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some())
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "CREVID_PUBLIC_URL must be an http(s) URL (got {u:?})"
                        ))
                    })
            })
            .transpose()?;
        let client_ip_header = env("CREVID_CLIENT_IP_HEADER")
            .map(|name| {
                axum::http::HeaderName::try_from(name.trim()).map_err(|_| {
                    ConfigError(format!(
                        "CREVID_CLIENT_IP_HEADER must be a header name, like X-Forwarded-For (got {name:?})"
                    ))
                })
            })
            .transpose()?;
        let rate_window_secs = env("CREVID_RATE_WINDOW_SECS")
            .map(|v| {
                v.parse::<u64>().ok().filter(|s| *s >= 1).ok_or_else(|| {
                    ConfigError(format!(
                        "CREVID_RATE_WINDOW_SECS must be a whole number of seconds ≥ 1 (got {v:?})"
                    ))
                })
            })
            .transpose()?
            .unwrap_or(60);
        let whole = |name: &str, min: u64, default: u64| -> Result<u64, ConfigError> {
            env(name)
                .map(|v| {
                    v.parse::<u64>().ok().filter(|n| *n >= min).ok_or_else(|| {
                        ConfigError(format!("{name} must be a whole number ≥ {min} (got {v:?})"))
                    })
                })
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let task_lease_ms = whole("CREVID_TASK_LEASE_MS", 300, 30_000)?;
        let retry_base_ms = whole("CREVID_RETRY_BASE_MS", 1, 1_000)?;
        let shutdown_grace_secs = whole("CREVID_SHUTDOWN_GRACE_SECS", 0, 8)?;
        let embedded_workers = match env("CREVID_EMBEDDED_WORKERS").as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(ConfigError(format!(
                    "CREVID_EMBEDDED_WORKERS must be true or false (got {other:?})"
                )))
            }
        };
        let qstash = match env("QSTASH_TOKEN") {
            None => None,
            Some(token) => {
                let current = env("QSTASH_CURRENT_SIGNING_KEY").ok_or_else(|| {
                    ConfigError(
                        "QSTASH_CURRENT_SIGNING_KEY must be set with QSTASH_TOKEN: worker routes verify QStash's signatures with it"
                            .into(),
                    )
                })?;
                let url = env("QSTASH_URL").unwrap_or_else(|| "https://qstash.upstash.io".into());
                let parsed = url::Url::parse(&url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        ConfigError(format!("QSTASH_URL must be an http(s) URL (got {url:?})"))
                    })?;
                let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
                if public_url.is_none() && !local {
                    return Err(ConfigError(
                        "CREVID_PUBLIC_URL must be set with QStash: it is where QStash calls the worker routes"
                            .into(),
                    ));
                }
                let at_most = |name: &str, value: u64, max: u64| {
                    if value > max {
                        Err(ConfigError(format!(
                            "{name} must be at most {max} (got {value})"
                        )))
                    } else {
                        Ok(value)
                    }
                };
                // More deliveries than a task has attempts, with room for a failed answer.
                let retries = at_most(
                    "CREVID_QSTASH_RETRIES",
                    whole("CREVID_QSTASH_RETRIES", 0, 8)?,
                    100,
                )?;
                let timeout = at_most(
                    "CREVID_QSTASH_TIMEOUT_SECS",
                    whole("CREVID_QSTASH_TIMEOUT_SECS", 10, 300)?,
                    86_400,
                )?;
                // A render stops 35 s before the timeout to clean up; below a minute no
                // video of any length could be rendered.
                if timeout < 60 {
                    return Err(ConfigError(format!(
                        "CREVID_QSTASH_TIMEOUT_SECS must be at least 60 (got {timeout}): a render stops 35 s before it, \
                         so a shorter timeout leaves no time to render"
                    )));
                }
                let tolerance = at_most(
                    "CREVID_QSTASH_CLOCK_TOLERANCE_SECS",
                    whole("CREVID_QSTASH_CLOCK_TOLERANCE_SECS", 0, 5)?,
                    60,
                )?;
                let keep_dead_letters = match env("CREVID_QSTASH_DLQ").as_deref() {
                    None | Some("delete") => false,
                    Some("keep") => true,
                    Some(other) => {
                        return Err(ConfigError(format!(
                            "CREVID_QSTASH_DLQ must be delete or keep (got {other:?})"
                        )))
                    }
                };
                Some(
                    app::ssr::qstash::QStashConfig::new(
                        &url,
                        token,
                        current,
                        env("QSTASH_NEXT_SIGNING_KEY"),
                        (
                            retries as u32,
                            std::time::Duration::from_secs(timeout),
                            std::time::Duration::from_secs(tolerance),
                        ),
                    )
                    .keeping_dead_letters(keep_dead_letters),
                )
            }
        };
        let object_store = match pick("CREVID_STORAGE_URL", file.storage_url) {
            None => None,
            Some(url) => {
                if !url.starts_with("s3://") {
                    return Err(ConfigError(format!(
                        "CREVID_STORAGE_URL must be s3://bucket or s3://bucket/prefix (got {url:?})"
                    )));
                }
                let options = S3_VARIABLES
                    .iter()
                    .filter_map(|name| env(name).map(|v| (name.to_ascii_lowercase(), v)))
                    .collect();
                let presign = whole("CREVID_STORAGE_PRESIGN_SECS", 0, 0)?;
                if presign > 7 * 24 * 3600 {
                    return Err(ConfigError(format!(
                        "CREVID_STORAGE_PRESIGN_SECS must be at most 604800, S3's limit for a pre-signed URL (got {presign})"
                    )));
                }
                Some(app::ssr::storage::ObjectStoreConfig {
                    url,
                    options,
                    presign: (presign > 0).then(|| std::time::Duration::from_secs(presign)),
                })
            }
        };
        Ok(Config {
            object_store,
            qstash,
            embedded_workers,
            task_lease_ms,
            retry_base_ms,
            shutdown_grace_secs,
            public_url,
            client_ip_header,
            rate_window_secs,
            site_addr,
            site_root,
            site_pkg_dir: env("LEPTOS_SITE_PKG_DIR").unwrap_or_else(|| "pkg".into()),
            output_name: env("LEPTOS_OUTPUT_NAME").unwrap_or_else(|| "crevid".into()),
            production,
            reload_port,
            data_dir,
            database_url,
            secret_key: pick("CREVID_SECRET_KEY", file.secret_key),
            log_format,
        })
    }
}

/// The AWS variables the object store reads (object_store's names for them, in upper
/// case): where the store is, and the credentials.
const S3_VARIABLES: [&str; 8] = [
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "AWS_SKIP_SIGNATURE",
];

fn read_file(path: &Path, named_by: &str) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{named_by}: cannot read {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| ConfigError(format!("{named_by}: {} is not valid: {e}", path.display())))
}

/// The built site sits at `target/site` beside `target/{debug,release}/crevid`, so the
/// binary finds it from any working directory; `./target/site` and `./site` are fallbacks.
fn default_site_root() -> PathBuf {
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .into_iter()
        .flat_map(|dir| [dir.join("../site"), dir.join("site")]);
    beside_exe
        .chain([PathBuf::from("target/site"), PathBuf::from("site")])
        .find(|candidate| candidate.join("pkg").is_dir())
        .map(|p| p.canonicalize().unwrap_or(p))
        .unwrap_or_else(|| PathBuf::from("target/site"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_to_sqlite_under_the_data_dir() {
        let c = load(&[("CREVID_DATA_DIR", "/tmp/x")]).unwrap();
        assert_eq!(c.database_url, "sqlite:///tmp/x/crevid.db");
        assert_eq!(c.site_addr.to_string(), "127.0.0.1:3000");
    }

    #[test]
    fn an_object_store_takes_its_url_and_the_aws_variables() {
        let c = load(&[("CREVID_DATA_DIR", "/tmp/x")]).unwrap();
        assert!(c.object_store.is_none(), "the data dir by default");
        let c = load(&[
            ("CREVID_STORAGE_URL", "s3://media/crevid"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("CREVID_STORAGE_PRESIGN_SECS", "300"),
        ])
        .unwrap();
        let store = c.object_store.as_ref().expect("an object store");
        assert_eq!(store.url, "s3://media/crevid");
        assert_eq!(
            store.options,
            [
                (
                    "aws_endpoint_url".to_owned(),
                    "http://127.0.0.1:9000".to_owned()
                ),
                ("aws_secret_access_key".to_owned(), "very-secret".to_owned())
            ]
        );
        assert_eq!(store.presign, Some(std::time::Duration::from_secs(300)));
        assert!(
            !format!("{c:?}").contains("very-secret"),
            "no secret in logs"
        );

        let e = load(&[("CREVID_STORAGE_URL", "minio://media")]).unwrap_err();
        assert!(e.0.contains("CREVID_STORAGE_URL must be s3://"), "{}", e.0);
        let e = load(&[
            ("CREVID_STORAGE_URL", "s3://media"),
            ("CREVID_STORAGE_PRESIGN_SECS", "604801"),
        ])
        .unwrap_err();
        assert!(e.0.contains("at most 604800"), "{}", e.0);
    }

    #[test]
    fn a_relative_data_dir_is_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let c = load(&[("CREVID_DATA_DIR", "data")]).unwrap();
        assert_eq!(c.data_dir, cwd.join("data"));
        assert_eq!(
            c.database_url,
            format!("sqlite://{}", cwd.join("data/crevid.db").display())
        );
        let c = load(&[]).unwrap();
        assert_eq!(c.data_dir, cwd.join("data"));
    }

    #[test]
    fn a_qstash_timeout_must_leave_a_render_time_and_the_dlq_mode_is_named() {
        let qstash = |extra: &[(&'static str, &'static str)]| {
            let mut vars = vec![
                ("QSTASH_TOKEN", "t"),
                ("QSTASH_URL", "http://127.0.0.1:8080"),
                ("QSTASH_CURRENT_SIGNING_KEY", "sig_a"),
            ];
            vars.extend_from_slice(extra);
            load(&vars)
        };
        let e = qstash(&[("CREVID_QSTASH_TIMEOUT_SECS", "30")])
            .unwrap_err()
            .0;
        assert!(
            e.contains("CREVID_QSTASH_TIMEOUT_SECS must be at least 60"),
            "{e}"
        );
        let c = qstash(&[("CREVID_QSTASH_TIMEOUT_SECS", "60")]).unwrap();
        assert_eq!(c.qstash.as_ref().map(|q| q.timeout.as_secs()), Some(60));
        let e = qstash(&[("CREVID_QSTASH_DLQ", "Keep")]).unwrap_err().0;
        assert!(
            e.contains("CREVID_QSTASH_DLQ must be delete or keep"),
            "{e}"
        );
        let c = qstash(&[("CREVID_QSTASH_DLQ", "keep")]).unwrap();
        assert!(c.qstash.as_ref().is_some_and(|q| q.keep_dead_letters));
        assert!(format!("{c:?}").contains("DLQ keep"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let e = load(&[("DATABASE_URL", "mysql://h/db")]).unwrap_err().0;
        assert!(e.contains("DATABASE_URL"), "{e}");
        let e = load(&[("CREVID_CLIENT_IP_HEADER", "not a header")])
            .unwrap_err()
            .0;
        assert!(e.contains("CREVID_CLIENT_IP_HEADER"), "{e}");
        let e = load(&[("LEPTOS_SITE_ADDR", "nope")]).unwrap_err().0;
        assert!(e.contains("LEPTOS_SITE_ADDR"), "{e}");
        let e = load(&[("CREVID_CONFIG", "/nonexistent/crevid.toml")])
            .unwrap_err()
            .0;
        assert!(e.contains("CREVID_CONFIG"), "{e}");
    }
}
