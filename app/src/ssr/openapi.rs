//! The OpenAPI 3.1 document of the REST API, served at `GET /api/openapi.json`.
//!
//! Each handler in `rest` carries its `#[utoipa::path]` (path, parameters, body, success
//! answers, route-specific errors); the shapes come from `model` (`ToSchema`). What every
//! route shares is added here from `rest::api_routes()`, the table the router is built
//! from: who may call it (security), and the errors its access rule and shape can produce
//! (401/403 from the access rule, 404 for a missing `{id}`, 413/415/422 for a JSON body,
//! 421 and 500 for everyone). A test checks the table and the document name the same
//! routes, and schemathesis checks the server keeps to it (`server/tests/api/openapi.rs`).

use std::collections::BTreeMap;

use axum::http::Method;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ContentBuilder, Object, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder, Type,
};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::rest::{self, ApiRoute};
use super::security::Access;
use crate::error::AppError;

/// Every error answer's body: `{"error": {"code", "message", "field"?, "retry_after_secs"?}}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: AppError,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CREVID",
        description = "Turn an idea into a short narrated video: scripts, scene pictures, \
            narration and the render, as JSON over HTTP. Sign in with `POST /api/auth/sign-in` \
            (a session cookie) or send an API token (Settings → API tokens) as \
            `Authorization: Bearer crevid_…`. Pictures, narration and renders are background \
            jobs: the call answers 202 with the job, and `GET /api/jobs/{id}` shows its \
            progress. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}` with the \
            HTTP status the code maps to.",
    ),
    paths(
        rest::healthz,
        rest::openapi_json,
        rest::metrics,
        rest::setup,
        rest::sign_in,
        rest::sign_out,
        rest::me,
        rest::generate,
        rest::list_contents,
        rest::save_content,
        rest::get_content,
        rest::update_content,
        rest::delete_content,
        rest::render_content,
        rest::content_video,
        rest::content_subtitles,
        rest::put_music,
        rest::delete_music,
        rest::generate_media,
        rest::batch_media,
        rest::generate_tts,
        rest::batch_tts,
        rest::list_jobs,
        rest::get_job,
        rest::retry_job,
        rest::cancel_job,
        rest::get_asset,
        rest::list_tokens,
        rest::create_token,
        rest::revoke_token,
        rest::list_webhooks,
        rest::create_webhook,
        rest::get_webhook,
        rest::update_webhook,
        rest::delete_webhook,
        rest::rotate_webhook_secret,
        rest::list_webhook_deliveries,
        rest::redeliver_webhook,
        rest::get_settings,
        rest::put_settings,
        rest::reset_settings,
        rest::get_status,
        rest::list_users,
        rest::create_user,
        rest::update_user,
        rest::list_voices,
        rest::preview_voice,
        rest::put_voice,
        rest::put_transition,
        rest::put_clip,
        rest::put_visual,
        rest::delete_visual,
        rest::search_footage,
        rest::stock_preview,
        rest::find_footage,
    ),
    components(schemas(ErrorBody)),
    modifiers(&FromRouteTable),
    tags(
        (name = "auth", description = "Accounts signing in and out"),
        (name = "contents", description = "Scripts, scenes and their media"),
        (name = "jobs", description = "Background work: pictures, narration, renders"),
        (name = "voices", description = "Narration voices: list, hear, choose per content"),
        (name = "tokens", description = "The caller's API tokens"),
        (name = "webhooks", description = "Signed calls to the caller's URLs when jobs end, videos are ready or contents are deleted (Standard Webhooks)"),
        (name = "settings", description = "Models, voices, keys and limits (admins)"),
        (name = "users", description = "Accounts (admins)"),
        (name = "system", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// The document, as served. Built on each call (about a millisecond): it is asked for
/// rarely, and holding it would mean one more thing in `AppState` for no gain.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// `(method, path)` of every operation in `doc`.
pub fn operations(doc: &Document) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for method in [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
        ] {
            if operation(item, &method).is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out
}

fn operation<'a>(item: &'a PathItem, method: &Method) -> Option<&'a Operation> {
    match *method {
        Method::GET => item.get.as_ref(),
        Method::PUT => item.put.as_ref(),
        Method::POST => item.post.as_ref(),
        Method::DELETE => item.delete.as_ref(),
        Method::PATCH => item.patch.as_ref(),
        Method::HEAD => item.head.as_ref(),
        Method::OPTIONS => item.options.as_ref(),
        Method::TRACE => item.trace.as_ref(),
        _ => None,
    }
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        _ => None,
    }
}

/// Names of the two ways to call as a user, as `securitySchemes` keys.
const BEARER: &str = "bearer";
const SESSION: &str = "session";

struct FromRouteTable;

impl Modify for FromRouteTable {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`crevid_…`) made in Settings → API tokens or with \
                         `POST /api/tokens`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "crevid_session",
                "The browser's session after `POST /api/auth/sign-in`; state-changing \
                 requests must then come from this site (Origin), or they answer 403 \
                 `csrf`.",
            ))),
        );
        for route in rest::api_routes() {
            let Some(op) = doc
                .paths
                .paths
                .get_mut(route.path)
                .and_then(|item| operation_mut(item, &route.method))
            else {
                // The route-table test names it; the document stays as complete as it can.
                continue;
            };
            shared_answers(&route, op);
        }
    }
}

/// Security and the errors `route`'s access rule and shape can produce, added to what its
/// annotation says.
fn shared_answers(route: &ApiRoute, op: &mut Operation) {
    let responses = &mut op.responses.responses;
    let mut add = |status: u16, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    };
    add(
        421,
        "The request's Host is not a name this server has (`misdirected_request`).",
    );
    add(
        500,
        "An unexpected fault, logged on the server (`internal`).",
    );
    if route.access == Access::Public {
        add(
            401,
            "A bearer token was sent and is unknown or revoked (`unauthorized`); without one \
             the route answers.",
        );
    } else {
        add(
            401,
            "Not signed in, or the token is unknown or revoked (`unauthorized`).",
        );
    }
    let writes = route.method != Method::GET;
    match (route.access, writes) {
        (Access::Admin, _) => add(
            403,
            "Only an admin may do this (`forbidden`), or a session's request came from \
             another site (`csrf`).",
        ),
        (_, true) => add(403, "A session's request came from another site (`csrf`)."),
        _ => {}
    }
    if route.path.contains("{id}") {
        add(
            404,
            "No such thing, or it is not the caller's (`not_found`).",
        );
    }
    let has_query = op.parameters.iter().flatten().any(|p| {
        matches!(
            p.parameter_in,
            utoipa::openapi::path::ParameterIn::Query | utoipa::openapi::path::ParameterIn::Path
        )
    });
    if op.request_body.is_some() {
        add(
            413,
            "The body is larger than the route accepts (`payload_too_large`), or the user's \
             media fill the storage quota (`quota_exceeded`).",
        );
        add(
            415,
            "The body's Content-Type is not one the route reads (`unsupported_media_type`).",
        );
    }
    if op.request_body.is_some() || has_query {
        add(
            422,
            "A parameter or the body is not valid: `validation` names the `field`, \
             `invalid_json` says what could not be read.",
        );
    }
    if route.access != Access::Public {
        op.security = Some(vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::new(SESSION, Vec::<String>::new()),
        ]);
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// A 429 with its `Retry-After` (whole seconds).
fn rate_limited(description: &str) -> RefOr<Response> {
    let RefOr::T(mut response) = error_response(description) else {
        unreachable!("error_response builds an inline response");
    };
    response.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(Object::with_type(Type::Integer))
            .description(Some("Seconds to wait before trying again."))
            .build(),
    );
    RefOr::T(response)
}

/// A body that is a file's bytes (`type: string, format: binary`), whatever its type.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .build()
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// 404 for a route whose body or query names contents by id.
pub struct ContentNotFound;

impl IntoResponses for ContentNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "404".into(),
            error_response(
                "A content or scene the request names is not the caller's (`not_found`).",
            ),
        )])
    }
}

/// 413 for a route that makes media: the user's storage quota is full.
pub struct QuotaExceeded;

impl IntoResponses for QuotaExceeded {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "413".into(),
            error_response("The user's media already fill the storage quota (`quota_exceeded`)."),
        )])
    }
}

/// 403 for a GET that spends something: refused when a browser says another site sent it
/// (`Sec-Fetch-Site: cross-site`).
pub struct CrossSite;

impl IntoResponses for CrossSite {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "403".into(),
            error_response("The browser says another site sent this request (`csrf`)."),
        )])
    }
}

/// 401 for sign-in: the e-mail or the password is wrong.
pub struct WrongCredentials;

impl IntoResponses for WrongCredentials {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "401".into(),
            error_response(
                "Wrong e-mail or password, or the account is disabled (`unauthorized`).",
            ),
        )])
    }
}

/// 409 for a route that refuses what conflicts with the stored state.
pub struct Conflict;

impl IntoResponses for Conflict {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "409".into(),
            error_response(
                "Conflicts with what is stored: the address is taken, setup is done, or \
                 the job has nothing to retry, or there is no video yet (`conflict`).",
            ),
        )])
    }
}

/// 429 for a route with a per-user rate limit.
pub struct TooManyRequests;

impl IntoResponses for TooManyRequests {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "429".into(),
            rate_limited("The caller's rate limit is spent (`rate_limited`)."),
        )])
    }
}

/// 429 for sign-in and setup: failed attempts from one address are throttled.
pub struct TooManyAttempts;

impl IntoResponses for TooManyAttempts {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "429".into(),
            rate_limited("Too many failed attempts from this address (`rate_limited`)."),
        )])
    }
}

/// What calling the language model can answer beyond the route's own errors.
pub struct ProviderErrors;

impl IntoResponses for ProviderErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "409".into(),
                error_response(
                    "No key is set for the model's provider (`provider_not_configured`).",
                ),
            ),
            (
                "429".into(),
                rate_limited(
                    "The caller's rate limit is spent (`rate_limited`) or the provider's \
                     (`provider_rate_limited`).",
                ),
            ),
            (
                "502".into(),
                error_response(
                    "The provider refused the key or the request, declined, answered what \
                     is not a script, or is unreachable (`provider_*`).",
                ),
            ),
            (
                "504".into(),
                error_response("The provider did not answer in time (`provider_timeout`)."),
            ),
        ])
    }
}

/// A stored file's range answers (RFC 9110 §14), and the redirect to the object store.
pub struct RangeErrors;

impl IntoResponses for RangeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "307".into(),
                ResponseBuilder::new()
                    .description(
                        "With an object store and `CREVID_STORAGE_PRESIGN_SECS`: `Location` is a \
                         pre-signed URL of the file, valid that many seconds.",
                    )
                    .build()
                    .into(),
            ),
            (
                "304".into(),
                ResponseBuilder::new()
                    .description("Not modified since `If-Modified-Since`.")
                    .build()
                    .into(),
            ),
            (
                "416".into(),
                ResponseBuilder::new()
                    .description("The `Range` is outside the file.")
                    .build()
                    .into(),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router is built from `api_routes()`; the document must name exactly those
    /// routes, each with its method, so a new route cannot go live undocumented.
    #[test]
    fn the_document_names_every_route_in_the_router_and_no_other() {
        let doc = document();
        let mut documented = operations(&doc);
        let mut routed: Vec<(Method, String)> = rest::api_routes()
            .into_iter()
            .map(|r| (r.method, r.path.to_owned()))
            .collect();
        let key = |(m, p): &(Method, String)| (p.clone(), m.to_string());
        documented.sort_by_key(key);
        routed.sort_by_key(key);
        let missing: Vec<_> = routed.iter().filter(|r| !documented.contains(r)).collect();
        let stale: Vec<_> = documented.iter().filter(|d| !routed.contains(d)).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "documented routes the router lacks: {stale:?}"
        );
    }

    #[test]
    fn security_follows_each_routes_access_rule() {
        let doc = document();
        for route in rest::api_routes() {
            let op = operation(&doc.paths.paths[route.path], &route.method).unwrap();
            let statuses: Vec<&str> = op.responses.responses.keys().map(String::as_str).collect();
            match route.access {
                Access::Public => {
                    assert!(op.security.is_none(), "{} {}", route.method, route.path);
                }
                Access::User | Access::Admin => {
                    assert_eq!(
                        op.security.as_ref().map(Vec::len),
                        Some(2),
                        "{} {}",
                        route.method,
                        route.path
                    );
                    assert!(statuses.contains(&"401"), "{} {}", route.method, route.path);
                }
            }
            if route.access == Access::Admin {
                assert!(statuses.contains(&"403"), "{} {}", route.method, route.path);
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_schema_it_refers_to() {
        let json = serde_json::to_value(document()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let schemas = json["components"]["schemas"].as_object().unwrap();
        let text = json.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(
                schemas.contains_key(name),
                "{name} is referred to but not defined"
            );
        }
    }
}
