//! Who is calling. Sessions are tower-sessions records kept in our own database (so every
//! server process shares them); API tokens are random secrets stored as SHA-256 hashes;
//! passwords are argon2id. One middleware resolves the caller once per request and puts a
//! `CurrentUser` into the request's extensions; REST handlers take it through the `Actor`
//! and `AdminActor` extractors and server functions through `require_user`/`require_admin`.

use std::net::{IpAddr, SocketAddr};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::Session;

use super::db::now_ms;
use super::state::AppState;
use super::{tokens, users};
use crate::error::AppError;
use crate::model::Role;

/// The session key holding the signed-in user's id.
pub const USER_KEY: &str = "user_id";

#[derive(Debug, Clone, PartialEq)]
pub struct CurrentUser {
    pub id: i64,
    pub email: String,
    pub role: Role,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

// ---- passwords -------------------------------------------------------------------------

/// argon2id with the crate's defaults (OWASP's minimum: 19 MiB, 2 passes), off the async
/// threads.
pub async fn hash_password(password: String) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| super::error::internal("password hashing task", e))?
    .map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        AppError::internal()
    })
}

/// Verified against when the account does not exist: same algorithm and cost as real hashes.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Hd3sJzJ4pv0X0VQkq7TzJmKp7g5vK2wQ2iJ4b8s3gS4";

/// Verifies against `hash`, or against a fixed dummy hash when the account does not exist,
/// so the answer takes as long either way and does not reveal which e-mails are registered.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
        && known
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn unknown_accounts_cost_a_real_verification() {
        // The dummy must parse, or unknown e-mails would answer faster than known ones.
        assert!(argon2::PasswordHash::new(super::DUMMY_HASH).is_ok());
        assert!(!super::verify_password("anything".into(), None).await);
        let hash = super::hash_password("a long passphrase".into())
            .await
            .unwrap();
        assert!(super::verify_password("a long passphrase".into(), Some(hash.clone())).await);
        assert!(!super::verify_password("another passphrase".into(), Some(hash)).await);
    }
}

// ---- tokens ----------------------------------------------------------------------------

pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- session store ---------------------------------------------------------------------

/// tower-sessions records in the `sessions` table, through the same storage layer as
/// everything else (SQLite or Postgres).
#[derive(Debug, Clone)]
pub struct DbSessionStore {
    pool: AnyPool,
}

impl DbSessionStore {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Ends every session of a user at once (disabled accounts).
    pub async fn delete_for_user(pool: &AnyPool, user_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Removes expired records; run now and then.
    pub async fn delete_expired(pool: &AnyPool) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now_ms())
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    }
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn encode(record: &Record) -> Result<(String, Option<i64>, i64), session_store::Error> {
    let data = serde_json::to_string(&record.data)
        .map_err(|e| session_store::Error::Encode(e.to_string()))?;
    let user_id = record.data.get(USER_KEY).and_then(|v| v.as_i64());
    let expires_ms = (record.expiry_date.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok((data, user_id, expires_ms))
}

impl DbSessionStore {
    /// Inserts the record; `on_conflict` says what an existing id means. Returns whether
    /// a row was written.
    async fn write(&self, record: &Record, on_conflict: &str) -> session_store::Result<bool> {
        let (data, user_id, expires) = encode(record)?;
        let written = sqlx::query(&format!(
            "INSERT INTO sessions (id, data, user_id, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) {on_conflict}"
        ))
        .bind(record.id.to_string())
        .bind(&data)
        .bind(user_id)
        .bind(expires)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(written.rows_affected() == 1)
    }
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A fresh id that happens to exist already gets another one.
        while !self.write(record, "DO NOTHING").await? {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.write(
            record,
            "DO UPDATE SET data = excluded.data, user_id = excluded.user_id, expires_at = excluded.expires_at",
        )
        .await
        .map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT data, expires_at FROM sessions WHERE id = $1 AND expires_at > $2",
        )
        .bind(id.to_string())
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some((data, expires_ms)) = row else {
            return Ok(None);
        };
        let data =
            serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_ms) * 1_000_000)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

// ---- the caller ------------------------------------------------------------------------

fn bearer(parts: &axum::http::HeaderMap) -> Option<&str> {
    parts
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Resolves the caller from a bearer token or the session cookie. A token that is unknown
/// or revoked is an error (the client meant to authenticate); no credentials at all is an
/// anonymous request, which the routes then accept or refuse.
pub async fn authenticate(
    State(state): State<AppState>,
    session: Session,
    mut request: Request,
    next: Next,
) -> Response {
    let user = if let Some(secret) = bearer(request.headers()) {
        match tokens::lookup(&state, secret).await {
            Ok(Some(user)) => Some(user),
            Ok(None) => {
                return AppError::new(
                    crate::error::ErrorCode::Unauthorized,
                    "The API token is unknown, revoked, or its user is disabled.",
                )
                .into_response()
            }
            Err(e) => return e.into_response(),
        }
    } else {
        match session.get::<i64>(USER_KEY).await {
            Ok(Some(user_id)) => match users::active_by_id(&state, user_id).await {
                Ok(Some(user)) => Some(user),
                Ok(None) => {
                    // Disabled or deleted since sign-in: end the session now.
                    let _ = session.flush().await;
                    None
                }
                Err(e) => return e.into_response(),
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "session could not be read");
                None
            }
        }
    };
    if let Some(user) = user {
        request.extensions_mut().insert(user);
    }
    next.run(request).await
}

/// A signed-in caller (401 otherwise).
pub struct Actor(pub CurrentUser);

/// A signed-in admin (401 when anonymous, 403 for a creator).
pub struct AdminActor(pub CurrentUser);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<CurrentUser>()
            .cloned()
            .map(Actor)
            .ok_or_else(AppError::unauthorized)
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<CurrentUser>().cloned().map(Actor))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminActor {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Actor(user) = Actor::from_request_parts(parts, state).await?;
        if user.is_admin() {
            Ok(AdminActor(user))
        } else {
            Err(AppError::forbidden())
        }
    }
}

/// The caller of a server function or page render, from the request parts leptos_axum
/// provides as context.
pub fn current_user() -> Option<CurrentUser> {
    leptos::prelude::use_context::<Parts>().and_then(|p| p.extensions.get::<CurrentUser>().cloned())
}

pub fn require_user() -> Result<CurrentUser, AppError> {
    current_user().ok_or_else(AppError::unauthorized)
}

pub fn require_admin() -> Result<CurrentUser, AppError> {
    let user = require_user()?;
    if user.is_admin() {
        Ok(user)
    } else {
        Err(AppError::forbidden())
    }
}

/// The client's address, for throttling: the last address in `header` when one is
/// configured and present (a trusted reverse proxy appends the address it saw; entries
/// before it are whatever the client claimed), else the peer (the app is served with
/// connect info). Entries may be `ip`, `ip:port`, `[v6]:port` or RFC 7239's `for=…`.
pub fn client_ip(parts: &Parts, header: Option<&axum::http::HeaderName>) -> Option<IpAddr> {
    let forwarded = header.and_then(|name| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(parse_forwarded)
            .next_back()
    });
    forwarded.or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let entry = entry
        .split(';')
        .find_map(|part| part.trim().strip_prefix("for="))
        .unwrap_or(entry)
        .trim_matches('"');
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// The session of the current server-function request.
pub async fn session() -> Result<Session, AppError> {
    leptos_axum::extract::<Session>()
        .await
        .map_err(|e| super::error::internal("session missing from the request", e))
}

/// Gives a server function's error its HTTP status, as the REST API would.
pub fn respond<T>(result: Result<T, AppError>) -> Result<T, AppError> {
    if let Err(e) = &result {
        if let Some(options) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
            let status = axum::http::StatusCode::from_u16(e.code.http_status());
            options.set_status(status.unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR));
            if let Some(secs) = e.retry_after_secs {
                if let Ok(value) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                    options.insert_header(axum::http::header::RETRY_AFTER, value);
                }
            }
        }
    }
    result
}
