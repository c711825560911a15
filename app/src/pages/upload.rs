//! Files a page sends to the REST API as they are (the body is the file), or a JSON body
//! for the same route, so the route that checks and stores them is the one API clients
//! use too.

/// PUTs `file` to `url` as its body with its own type (or DELETEs `url` when there is no
/// file) and returns the answer's `data`, or the server's own error message (`failed`
/// when it gives none).
#[cfg(feature = "hydrate")]
pub async fn send_file(
    url: &str,
    file: Option<&web_sys::File>,
    failed: &str,
) -> Result<serde_json::Value, String> {
    send(url, file.map(Body::File), failed).await
}

/// What a request sends: a file as it is, or a JSON document.
#[cfg(feature = "hydrate")]
pub enum Body<'a> {
    File(&'a web_sys::File),
    Json(serde_json::Value),
}

/// PUTs `body` to `url` (or DELETEs `url` when there is none), answering as
/// [`send_file`].
#[cfg(feature = "hydrate")]
pub async fn send(
    url: &str,
    body: Option<Body<'_>>,
    failed: &str,
) -> Result<serde_json::Value, String> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let unreachable = || "The server could not be reached; try again.".to_owned();
    let init = web_sys::RequestInit::new();
    match body {
        Some(Body::Json(value)) => {
            init.set_method("PUT");
            let headers = web_sys::Headers::new().map_err(|_| unreachable())?;
            headers
                .set("content-type", "application/json")
                .map_err(|_| unreachable())?;
            init.set_headers(&headers);
            init.set_body(&wasm_bindgen::JsValue::from_str(&value.to_string()));
        }
        Some(Body::File(file)) => {
            init.set_method("PUT");
            let headers = web_sys::Headers::new().map_err(|_| unreachable())?;
            let kind = file.type_();
            headers
                .set(
                    "content-type",
                    if kind.is_empty() {
                        "application/octet-stream"
                    } else {
                        &kind
                    },
                )
                .map_err(|_| unreachable())?;
            init.set_headers(&headers);
            init.set_body(file);
        }
        None => init.set_method("DELETE"),
    }
    let window = web_sys::window().ok_or_else(unreachable)?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(|_| unreachable())?
        .dyn_into()
        .map_err(|_| unreachable())?;
    let text = JsFuture::from(response.text().map_err(|_| unreachable())?)
        .await
        .map_err(|_| unreachable())?
        .as_string()
        .unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| format!("The server answered {}.", response.status()))?;
    if response.ok() {
        Ok(answer["data"].clone())
    } else {
        Err(answer["error"]["message"]
            .as_str()
            .unwrap_or(failed)
            .to_owned())
    }
}
