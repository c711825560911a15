//! Personal API tokens: shown once, stored as SHA-256 hashes, revocable.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sqlx::Row;

use super::auth::{sha256_hex, CurrentUser};
use super::db::{format_ms, now_ms};
use super::error::DbResultExt;
use super::state::AppState;
use super::validate;
use crate::error::AppError;
use crate::model::{limits, CreateTokenRequest, CreatedToken, Role, TokenView};

const PREFIX: &str = "crevid_";
/// `last_used_at` is written at most this often, not on every request.
const TOUCH_EVERY_MS: i64 = 60_000;

fn view(row: &sqlx::any::AnyRow) -> Result<TokenView, sqlx::Error> {
    Ok(TokenView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: format_ms(row.try_get("created_at")?),
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")?
            .map(format_ms),
    })
}

pub async fn create(
    state: &AppState,
    user: &CurrentUser,
    req: CreateTokenRequest,
) -> Result<CreatedToken, AppError> {
    let name = validate::text("name", &req.name, 1, limits::TOKEN_NAME_MAX_CHARS)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let prefix: String = secret.chars().take(PREFIX.len() + 4).collect();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(user.id)
    .bind(&name)
    .bind(sha256_hex(&secret))
    .bind(&prefix)
    .bind(now_ms())
    .fetch_one(state.pool())
    .await
    .db("creating a token")?;
    let token = list(state, user)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(AppError::internal)?;
    Ok(CreatedToken { token, secret })
}

pub async fn list(state: &AppState, user: &CurrentUser) -> Result<Vec<TokenView>, AppError> {
    let rows = sqlx::query(
        "SELECT id, name, prefix, created_at, last_used_at FROM api_tokens \
         WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id DESC",
    )
    .bind(user.id)
    .fetch_all(state.pool())
    .await
    .db("listing tokens")?;
    rows.iter()
        .map(view)
        .collect::<Result<_, _>>()
        .db("decoding tokens")
}

pub async fn revoke(state: &AppState, user: &CurrentUser, id: i64) -> Result<(), AppError> {
    let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(id)
        .bind(user.id)
        .execute(state.pool())
        .await
        .db("revoking a token")?;
    if done.rows_affected() == 0 {
        return Err(AppError::not_found("token"));
    }
    Ok(())
}

/// The active user a presented token belongs to.
pub async fn lookup(state: &AppState, secret: &str) -> Result<Option<CurrentUser>, AppError> {
    if !secret.starts_with(PREFIX) || secret.len() > 200 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT t.id AS token_id, t.last_used_at, u.id, u.email, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL",
    )
    .bind(sha256_hex(secret))
    .fetch_optional(state.pool())
    .await
    .db("looking up a token")?;
    let Some(row) = row else { return Ok(None) };
    let read = || -> Result<(i64, Option<i64>, CurrentUser), sqlx::Error> {
        Ok((
            row.try_get("token_id")?,
            row.try_get("last_used_at")?,
            CurrentUser {
                id: row.try_get("id")?,
                email: row.try_get("email")?,
                role: Role::parse(&row.try_get::<String, _>("role")?).unwrap_or_default(),
            },
        ))
    };
    let (token_id, last_used, user) = read().db("decoding a token")?;
    let now = now_ms();
    if last_used.is_none_or(|t| now - t > TOUCH_EVERY_MS) {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(state.pool())
            .await
            .db("touching a token")?;
    }
    Ok(Some(user))
}
