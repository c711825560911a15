//! Field checks shared by every entry point (server functions, REST). Each error names
//! the field, in the JSON path form the API documents (`presets.scene_count`).

use crate::error::AppError;

pub fn text(field: &str, value: &str, min: usize, max: usize) -> Result<String, AppError> {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len < min {
        return Err(if min <= 1 {
            AppError::validation(field, format!("{field} must not be empty"))
        } else {
            AppError::validation(
                field,
                format!("{field} must be at least {min} characters (got {len})"),
            )
        });
    }
    if len > max {
        return Err(AppError::validation(
            field,
            format!("{field} must be at most {max} characters (got {len})"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(AppError::validation(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

pub fn range_u32(field: &str, value: u32, min: u32, max: u32) -> Result<u32, AppError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(AppError::validation(
            field,
            format!("{field} must be between {min} and {max} (got {value})"),
        ))
    }
}

pub fn range_f64(field: &str, value: f64, min: f64, max: f64) -> Result<f64, AppError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(value)
    } else {
        Err(AppError::validation(
            field,
            format!("{field} must be between {min} and {max} (got {value})"),
        ))
    }
}

pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String, AppError> {
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(AppError::validation(
            field,
            format!(
                "{field} must be one of {} (got {value:?})",
                allowed.join(", ")
            ),
        ))
    }
}

pub fn http_url(field: &str, value: &str) -> Result<String, AppError> {
    let value = value.trim().trim_end_matches('/');
    match url::Url::parse(value) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
            Ok(value.to_owned())
        }
        Ok(_) => Err(AppError::validation(
            field,
            format!("{field} must be an http:// or https:// URL"),
        )),
        Err(e) => Err(AppError::validation(
            field,
            format!("{field} is not a valid URL: {e}"),
        )),
    }
}
