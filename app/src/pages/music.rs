//! Background music on the content page: upload an audio file, hear it, remove it. The
//! file goes to the same REST route API clients use (`PUT /api/contents/:id/music`, the
//! raw file as the body), so there is one place that checks and stores it.

use leptos::prelude::*;

#[component]
pub fn MusicPicker(
    content_id: i64,
    initial: Option<i64>,
    /// Set when the music changed, so the page can say the video is out of date.
    changed: RwSignal<bool>,
) -> impl IntoView {
    let music = RwSignal::new(initial);
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let done = move |result: Result<Option<i64>, String>| {
        match result {
            Ok(asset) => {
                music.set(asset);
                changed.set(true);
            }
            Err(message) => error.set(Some(message)),
        }
        busy.set(false);
    };
    let on_file = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let Some(input) = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            else {
                return;
            };
            let Some(file) = input.files().and_then(|files| files.get(0)) else {
                return;
            };
            busy.set(true);
            error.set(None);
            leptos::task::spawn_local(async move {
                done(send(content_id, Some(file)).await);
                input.set_value("");
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, content_id, done);
    };
    let on_remove = move |_| {
        #[cfg(feature = "hydrate")]
        {
            busy.set(true);
            error.set(None);
            leptos::task::spawn_local(async move { done(send(content_id, None).await) });
        }
    };
    view! {
        <div class="music" aria-label="Background music">
            <strong>"Background music"</strong>
            {move || match music.get() {
                Some(asset) => view! {
                    <audio controls preload="none" src=format!("/api/assets/{asset}")></audio>
                    <button type="button" on:click=on_remove disabled=move || busy.get()>"Remove music"</button>
                }.into_any(),
                None => view! {
                    <span class="muted">"None: looped or cut to the video's length, lowered under the narration."</span>
                }.into_any(),
            }}
            <label class="file-button">
                {move || if busy.get() { "Uploading…" } else if music.with(Option::is_some) { "Replace…" } else { "Choose an audio file…" }}
                <input type="file" name="music" accept="audio/mpeg,audio/wav,audio/ogg,audio/mp4,audio/aac,audio/flac,audio/*"
                    on:change=on_file disabled=move || busy.get()/>
            </label>
            {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
        </div>
    }
}

/// PUTs the file (or DELETEs the music) and returns the content's music asset, or the
/// server's own error message.
#[cfg(feature = "hydrate")]
async fn send(content_id: i64, file: Option<web_sys::File>) -> Result<Option<i64>, String> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let unreachable = || "The server could not be reached; try again.".to_owned();
    let init = web_sys::RequestInit::new();
    match &file {
        Some(file) => {
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
    let response: web_sys::Response = JsFuture::from(
        window.fetch_with_str_and_init(&format!("/api/contents/{content_id}/music"), &init),
    )
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
        Ok(answer["data"]["music_asset_id"].as_i64())
    } else {
        Err(answer["error"]["message"]
            .as_str()
            .unwrap_or("The music could not be saved.")
            .to_owned())
    }
}
