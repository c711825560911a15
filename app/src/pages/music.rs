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
    let url = format!("/api/contents/{content_id}/music");
    super::upload::send_file(&url, file.as_ref(), "The music could not be saved.")
        .await
        .map(|data| data["music_asset_id"].as_i64())
}
