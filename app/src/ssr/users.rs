//! Accounts: the first admin, sign-in, and admin management of users.

use std::sync::atomic::Ordering;

use sqlx::Row;
use tower_sessions::Session;

use super::auth::{self, CurrentUser, DbSessionStore, USER_KEY};
use super::db::{format_ms, now_ms};
use super::error::DbResultExt;
use super::limits::Bucket;
use super::state::AppState;
use super::validate;
use crate::error::{AppError, ErrorCode};
use crate::model::{
    limits, CreateUserRequest, Role, SetupRequest, SignInRequest, UpdateUserRequest, UserView,
};

pub fn normalise_email(field: &str, email: &str) -> Result<String, AppError> {
    let email = validate::text(field, email, 3, limits::EMAIL_MAX_CHARS)?.to_lowercase();
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    };
    if valid {
        Ok(email)
    } else {
        Err(AppError::validation(
            field,
            format!("{field} is not an e-mail address"),
        ))
    }
}

pub fn check_password(field: &str, password: &str) -> Result<(), AppError> {
    let len = password.chars().count();
    if len < limits::PASSWORD_MIN_CHARS {
        return Err(AppError::validation(
            field,
            format!(
                "{field} must be at least {} characters",
                limits::PASSWORD_MIN_CHARS
            ),
        ));
    }
    if len > limits::PASSWORD_MAX_CHARS {
        return Err(AppError::validation(
            field,
            format!(
                "{field} must be at most {} characters",
                limits::PASSWORD_MAX_CHARS
            ),
        ));
    }
    Ok(())
}

fn view(row: &sqlx::any::AnyRow) -> Result<UserView, sqlx::Error> {
    Ok(UserView {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        role: Role::parse(&row.try_get::<String, _>("role")?).unwrap_or_default(),
        disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
        created_at: format_ms(row.try_get("created_at")?),
    })
}

pub async fn count(state: &AppState) -> Result<i64, AppError> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(state.pool())
        .await
        .db("counting users")
}

/// True once any account exists; cached, since it never becomes false again.
pub async fn setup_done(state: &AppState) -> Result<bool, AppError> {
    if state.setup_done.load(Ordering::Relaxed) {
        return Ok(true);
    }
    let done = count(state).await? > 0;
    if done {
        state.setup_done.store(true, Ordering::Relaxed);
    }
    Ok(done)
}

async fn insert(
    state: &AppState,
    req: &CreateUserRequest,
    only_if_first: bool,
) -> Result<Option<i64>, AppError> {
    let email = normalise_email("email", &req.email)?;
    check_password("password", &req.password)?;
    let hash = auth::hash_password(req.password.clone()).await?;
    let now = now_ms();
    // The first-admin insert checks "no user yet" in the same statement, so two racing
    // set-up requests cannot both create an admin.
    let sql = if only_if_first {
        "INSERT INTO users (email, password_hash, role, created_at, updated_at) \
         SELECT $1, $2, $3, $4, $4 WHERE NOT EXISTS (SELECT 1 FROM users) RETURNING id"
    } else {
        "INSERT INTO users (email, password_hash, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING id"
    };
    let mut tx = state.pool().begin().await.db("starting a transaction")?;
    if only_if_first && state.db.backend == super::db::Backend::Postgres {
        // Under READ COMMITTED two racing inserts could both see no user; the lock
        // serialises them. (SQLite has one writer at a time anyway.)
        sqlx::query("SELECT pg_advisory_xact_lock(7240001)")
            .execute(&mut *tx)
            .await
            .db("locking for set-up")?;
    }
    let result = sqlx::query_scalar::<_, i64>(sql)
        .bind(&email)
        .bind(&hash)
        .bind(req.role.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await;
    let result = match result {
        Ok(id) => tx.commit().await.map(|_| id),
        Err(e) => Err(e),
    };
    match result {
        Ok(id) => Ok(id),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            let mut err = AppError::new(
                ErrorCode::Conflict,
                format!("{email} already has an account"),
            );
            err.field = Some("email".into());
            Err(err)
        }
        Err(e) => Err(super::error::internal("inserting a user", e)),
    }
}

pub async fn get(state: &AppState, id: i64) -> Result<UserView, AppError> {
    let row =
        sqlx::query("SELECT id, email, role, disabled_at, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(state.pool())
            .await
            .db("reading a user")?
            .ok_or_else(|| AppError::not_found("user"))?;
    view(&row).db("decoding a user")
}

#[tracing::instrument(name = "users.create", skip_all)]
pub async fn create(state: &AppState, req: CreateUserRequest) -> Result<UserView, AppError> {
    let id = insert(state, &req, false)
        .await?
        .ok_or_else(AppError::internal)?;
    state.setup_done.store(true, Ordering::Relaxed);
    get(state, id).await
}

/// First run: the first account, an admin, signed in at once.
#[tracing::instrument(name = "users.setup", skip_all)]
pub async fn setup_first_admin(
    state: &AppState,
    session: &Session,
    ip: Option<std::net::IpAddr>,
    setup: SetupRequest,
) -> Result<UserView, AppError> {
    // Cheap refusals first: set-up is public, and hashing a password costs 19 MiB.
    if setup_done(state).await? {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "CREVID is already set up. Sign in instead.",
        ));
    }
    throttle_address(state, ip)?;
    if let Some(code) = state.setup_code.as_deref() {
        // Digests of equal length: the comparison's time says nothing about the code.
        use sha2::{Digest, Sha256};
        // Dashes, spaces and case are the reader's choice.
        let plain = |code: &str| -> String {
            code.chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        let given = plain(setup.setup_code.as_deref().unwrap_or_default());
        if Sha256::digest(given.as_bytes()) != Sha256::digest(plain(code).as_bytes()) {
            return Err(AppError::new(
                ErrorCode::Forbidden,
                "This server can be reached from other machines, so setting it up needs the \
                 set-up code it printed in its log at start.",
            ));
        }
    }
    let req = CreateUserRequest {
        email: setup.email,
        password: setup.password,
        role: Role::Admin,
    };
    let Some(id) = insert(state, &req, true).await? else {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "CREVID is already set up. Sign in instead.",
        ));
    };
    state.setup_done.store(true, Ordering::Relaxed);
    start_session(session, id).await?;
    get(state, id).await
}

/// A one-time set-up code: 12 characters from an alphabet without look-alikes (about 60
/// bits), in groups of four, to be copied from the server's log.
pub fn new_setup_code() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let chars: Vec<char> = (0..12)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The per-address budget shared by sign-in and set-up, the two public password paths.
fn throttle_address(state: &AppState, ip: Option<std::net::IpAddr>) -> Result<(), AppError> {
    let Some(ip) = ip else { return Ok(()) };
    state
        .limits
        .check(
            Bucket::SignInIp,
            &ip.to_string(),
            state.limits.sign_in_per_ip,
        )
        .map_err(|secs| AppError::rate_limited("sign-in attempts from this address", secs))
}

async fn start_session(session: &Session, user_id: i64) -> Result<(), AppError> {
    // A new id at sign-in: whatever id the browser had before (perhaps planted) is dead.
    session
        .cycle_id()
        .await
        .map_err(|e| super::error::internal("rotating the session", e))?;
    session
        .insert(USER_KEY, user_id)
        .await
        .map_err(|e| super::error::internal("writing the session", e))?;
    session
        .save()
        .await
        .map_err(|e| super::error::internal("saving the session", e))
}

#[tracing::instrument(name = "users.sign_in", skip_all)]
pub async fn sign_in(
    state: &AppState,
    session: &Session,
    ip: Option<std::net::IpAddr>,
    req: SignInRequest,
) -> Result<UserView, AppError> {
    // Bounded, so the throttle's keys stay small whatever is sent.
    let email: String = req
        .email
        .trim()
        .to_lowercase()
        .chars()
        .take(limits::EMAIL_MAX_CHARS)
        .collect();
    throttle_address(state, ip)?;
    // Keyed by account and address: failures from one address never lock the account for
    // its owner elsewhere.
    let failures_key = match ip {
        Some(ip) => format!("{email}|{ip}"),
        None => email.clone(),
    };
    let failures = &state.limits.sign_in_failures;
    failures
        .check(&failures_key, state.limits.sign_in_per_account)
        .map_err(|secs| AppError::rate_limited("failed sign-ins for this account", secs))?;
    let row: Option<(i64, String, Option<i64>)> =
        sqlx::query_as("SELECT id, password_hash, disabled_at FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(state.pool())
            .await
            .db("reading a user")?;
    let (hash, id, disabled) = match row {
        Some((id, hash, disabled)) => (Some(hash), Some(id), disabled.is_some()),
        None => (None, None, false),
    };
    let ok = auth::verify_password(req.password, hash).await;
    match (ok, id) {
        (true, Some(id)) if !disabled => {
            start_session(session, id).await?;
            get(state, id).await
        }
        // One answer for a wrong e-mail, a wrong password and a disabled account.
        _ => {
            failures.record(&failures_key);
            Err(AppError::new(
                ErrorCode::Unauthorized,
                "Wrong e-mail or password.",
            ))
        }
    }
}

pub async fn sign_out(session: &Session) -> Result<(), AppError> {
    session
        .flush()
        .await
        .map_err(|e| super::error::internal("ending a session", e))
}

/// The user behind a session, if still active.
pub async fn active_by_id(state: &AppState, id: i64) -> Result<Option<CurrentUser>, AppError> {
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, email, role FROM users WHERE id = $1 AND disabled_at IS NULL")
            .bind(id)
            .fetch_optional(state.pool())
            .await
            .db("reading the signed-in user")?;
    Ok(row.map(|(id, email, role)| CurrentUser {
        id,
        email,
        role: Role::parse(&role).unwrap_or_default(),
    }))
}

pub async fn list(state: &AppState) -> Result<Vec<UserView>, AppError> {
    let rows =
        sqlx::query("SELECT id, email, role, disabled_at, created_at FROM users ORDER BY email")
            .fetch_all(state.pool())
            .await
            .db("listing users")?;
    rows.iter()
        .map(view)
        .collect::<Result<_, _>>()
        .db("decoding users")
}

#[tracing::instrument(name = "users.update", skip_all, fields(user_id = id))]
pub async fn update(
    state: &AppState,
    admin: &CurrentUser,
    id: i64,
    req: UpdateUserRequest,
) -> Result<UserView, AppError> {
    let current = get(state, id).await?;
    if id == admin.id && (req.disabled == Some(true) || req.role == Some(Role::Creator)) {
        return Err(AppError::validation(
            if req.disabled == Some(true) {
                "disabled"
            } else {
                "role"
            },
            "You cannot disable yourself or remove your own admin role; ask another admin.",
        ));
    }
    let now = now_ms();
    if let Some(role) = req.role {
        sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3")
            .bind(role.as_str())
            .bind(now)
            .bind(id)
            .execute(state.pool())
            .await
            .db("changing a role")?;
    }
    match req.disabled {
        Some(true) if !current.disabled => {
            sqlx::query("UPDATE users SET disabled_at = $1, updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(state.pool())
                .await
                .db("disabling a user")?;
            // Sessions end now; tokens stop at their next use (their lookup checks the user).
            DbSessionStore::delete_for_user(state.pool(), id)
                .await
                .db("ending a user's sessions")?;
        }
        Some(false) if current.disabled => {
            sqlx::query("UPDATE users SET disabled_at = NULL, updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(state.pool())
                .await
                .db("enabling a user")?;
        }
        _ => {}
    }
    get(state, id).await
}
