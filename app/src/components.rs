//! Small pieces every page uses.

use leptos::prelude::*;

use crate::error::AppError;

/// An error as a creator reads it: the message, the field at fault, and where to fix it.
#[component]
pub fn ErrorBox(error: AppError) -> impl IntoView {
    let link = error.fix_link();
    view! {
        <div class="error" role="alert" data-code=format!("{:?}", error.code)>
            <p>{error.message.clone()}</p>
            {error.field.clone().map(|f| view! { <p class="muted">"Field: " <code>{f}</code></p> })}
            {link.map(|href| view! { <p><a href=href>"Open Settings"</a></p> })}
        </div>
    }
}

#[component]
pub fn Spinner(#[prop(into)] label: String) -> impl IntoView {
    view! {
        <div class="spinner" role="status" aria-live="polite">
            <span class="spinner-dot"></span>
            <span>{label}</span>
        </div>
    }
}

/// Parses an optional number field: blank means "use the default".
pub fn optional_number(text: &str) -> Option<u32> {
    let t = text.trim();
    if t.is_empty() {
        None
    } else {
        // A value that does not parse is sent as 0, so the server names the field.
        Some(t.parse().unwrap_or(0))
    }
}

pub fn optional_text(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Percent-encodes a value for a URL's path or query; `/` stays as it is (both allow it).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
