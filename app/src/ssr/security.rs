//! Request guards that apply to every route: CSRF (Origin check), security headers, and
//! the page access rules (sign-in redirects, admin-only pages, first-run set-up).

use axum::extract::{Request, State};
use axum::http::header::{
    CONTENT_SECURITY_POLICY, HOST, ORIGIN, REFERER, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::auth::CurrentUser;
use super::state::AppState;
use super::users;
use crate::components::urlencode;
use crate::error::{AppError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user; data is scoped to its owner unless the user is an admin.
    User,
    /// Admins only.
    Admin,
}

/// Every page of the app and who may open it. The router's page list must match this
/// table (a test checks), so a new page cannot go live without a rule.
pub const PAGES: &[(&str, Access)] = &[
    ("/login", Access::Public),
    ("/setup", Access::Public),
    ("/", Access::User),
    ("/library", Access::User),
    ("/jobs", Access::User),
    ("/contents/:id", Access::User),
    ("/tokens", Access::User),
    ("/webhooks", Access::User),
    ("/settings", Access::Admin),
    ("/status", Access::Admin),
    ("/users", Access::Admin),
];

fn matches(pattern: &str, path: &str) -> bool {
    let (p, a): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == a.len()
        && p.iter()
            .zip(&a)
            .all(|(p, a)| p.starts_with(':') && !a.is_empty() || p == a)
}

pub fn page_access(path: &str) -> Option<Access> {
    PAGES
        .iter()
        .find(|(pattern, _)| matches(pattern, path))
        .map(|(_, access)| *access)
}

/// Page requests: anonymous users go to the sign-in page (or, before any account exists,
/// to the set-up page); creators asking for an admin page go home.
pub async fn guard_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return next.run(request).await;
    }
    // The router also serves "/settings/" as "/settings": match it the same way.
    let raw = request.uri().path();
    let path = if raw.len() > 1 {
        raw.trim_end_matches('/').to_owned()
    } else {
        raw.to_owned()
    };
    let Some(access) = page_access(&path) else {
        return next.run(request).await;
    };
    let user = request.extensions().get::<CurrentUser>().cloned();
    let set_up = match users::setup_done(&state).await {
        Ok(done) => done,
        Err(e) => return e.into_response(),
    };
    if !set_up {
        return if path == "/setup" {
            next.run(request).await
        } else {
            Redirect::to("/setup").into_response()
        };
    }
    if path == "/setup" || (path == "/login" && user.is_some()) {
        return Redirect::to("/").into_response();
    }
    match (access, user) {
        (Access::Public, _) => next.run(request).await,
        (_, None) => {
            let target = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            Redirect::to(&format!("/login?next={}", urlencode(target))).into_response()
        }
        (Access::Admin, Some(user)) if !user.is_admin() => Redirect::to("/").into_response(),
        _ => next.run(request).await,
    }
}

/// Refuses requests whose Host is a name this server was not told it has. A DNS-rebinding
/// page (attacker.example re-pointed at 127.0.0.1 or a LAN address) would otherwise talk
/// to CREVID as its own origin, cookies, CSRF check and all. Accepted: IP literals,
/// `localhost` (and `*.localhost`), and the host of `CREVID_PUBLIC_URL`.
pub async fn hosts(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let named = request.uri().host().map(str::to_owned).or_else(|| {
        request
            .headers()
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    // Without any Host no browser sent it, and rebinding needs a browser.
    let Some(named) = named else {
        return next.run(request).await;
    };
    if host_allowed(&named, state.public_origin.as_deref()) {
        return next.run(request).await;
    }
    tracing::warn!(host = %named, "refused a request for a host name this server does not have");
    AppError::new(
        ErrorCode::MisdirectedRequest,
        format!(
            "This server does not answer to the name {named:?}. To reach it by a name, set \
             CREVID_PUBLIC_URL to its address."
        ),
    )
    .into_response()
}

/// Whether `host` (a Host header or URI authority, port optional) may be served.
pub fn host_allowed(host: &str, public_origin: Option<&str>) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
    {
        return true;
    }
    public_origin
        .and_then(|origin| url::Url::parse(origin).ok())
        .and_then(|url| {
            url.host_str()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        })
        .is_some_and(|public| public == name)
}

/// The scheme://host[:port] a header names, for comparing origins.
fn origin_of(value: &str) -> Option<String> {
    let url = url::Url::parse(value).ok()?;
    Some(url.origin().ascii_serialization())
}

/// Refuses state-changing requests whose Origin (or, without one, Referer) is not this
/// app's. Requests with a bearer token carry no ambient credentials and are exempt.
pub async fn csrf(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    // QStash's deliveries carry no cookie; their signature is checked by the route.
    if request.uri().path().starts_with("/api/workers/") {
        return next.run(request).await;
    }
    let headers = request.headers();
    if headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
    {
        return next.run(request).await;
    }
    let claimed = headers
        .get(ORIGIN)
        .or_else(|| headers.get(REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(origin_of);
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // With a public URL configured, only its origin is ours; otherwise the Host's.
    let ours = |origin: &str| match state.public_origin.as_deref() {
        Some(public) => origin == public,
        None => origin == format!("http://{host}") || origin == format!("https://{host}"),
    };
    match claimed {
        Some(origin) if ours(&origin) => next.run(request).await,
        Some(origin) => {
            tracing::warn!(%origin, "refused a cross-site request");
            AppError::new(ErrorCode::Csrf, "This request came from another site and was refused.").into_response()
        }
        None => AppError::new(
            ErrorCode::Csrf,
            "A browser request that changes data must carry an Origin header; API clients use a bearer token.",
        )
        .into_response(),
    }
}

/// Security headers on every response. Pages set their own CSP (with the script nonce)
/// while rendering; anything else gets one that allows nothing to run.
pub async fn headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let api =
        request.uri().path().starts_with("/api/") || request.uri().path().starts_with("/_sfn/");
    let favicon = request.uri().path() == "/favicon.svg";
    let mut response = next.run(request).await;
    let succeeded = response.status().is_success();
    let h = response.headers_mut();
    if api {
        // API answers can carry secrets shown once (a new token): never cache them.
        h.insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    } else if favicon && succeeded {
        // Not named after its content, so not for a year; a day saves every page a request.
        h.insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=86400"),
        );
    } else if !h.contains_key(axum::http::header::CACHE_CONTROL)
        && h.get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/html"))
    {
        // A page shows one user's things: no shared cache may keep it, and the browser
        // revalidates so a new build or a change is never hidden (RFC 9111 §5.2.2).
        h.insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
    }
    if state
        .public_origin
        .as_deref()
        .is_some_and(|o| o.starts_with("https://"))
    {
        h.insert(
            axum::http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(CONTENT_SECURITY_POLICY) {
        h.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

/// The CSP of a rendered page: its inline hydration script by nonce, the WASM it loads;
/// pictures, sound and video from the app, and from `media_origin` (the object store's,
/// when players are redirected to pre-signed URLs there).
pub fn page_csp(nonce: &str, dev: bool, media_origin: Option<&str>) -> String {
    let media = media_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:{media}; media-src 'self' blob:{media}; connect-src 'self'{}; object-src 'none'; \
         base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
        if dev { " ws: wss:" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_may_be_served() {
        for ok in [
            "127.0.0.1:3000",
            "localhost:3000",
            "LOCALHOST",
            "app.localhost",
            "192.168.1.5",
            "[::1]:3000",
            "crevid.example.com",
            "crevid.example.com.:443",
        ] {
            assert!(host_allowed(ok, Some("https://crevid.example.com")), "{ok}");
        }
        for refused in [
            "attacker.example",
            "attacker.example:3000",
            "crevid.example.com.attacker.example",
            "[::1",
            "localhost.attacker.example",
        ] {
            assert!(
                !host_allowed(refused, Some("https://crevid.example.com")),
                "{refused}"
            );
        }
        assert!(!host_allowed("crevid.example.com", None));
    }

    #[test]
    fn page_patterns() {
        assert_eq!(page_access("/contents/12"), Some(Access::User));
        assert_eq!(page_access("/contents/"), None);
        assert_eq!(page_access("/settings"), Some(Access::Admin));
        assert_eq!(page_access("/api/contents"), None);
        assert_eq!(page_access("/"), Some(Access::User));
        assert!(!matches("/settings", "/settings/x"));
    }
}
