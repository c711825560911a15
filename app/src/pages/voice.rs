//! The content's voice: pick one of the voices narration can use now, hear a sample of it
//! (the content's first scene, through `GET /api/voices/preview`) before anything is
//! generated, set the speed, and save both for the narration made afterwards.

use leptos::prelude::*;

use crate::api::{list_voices, set_voice};
use crate::components::ErrorBox;
use crate::model::{limits, VoiceList, VoiceUpdate};

#[component]
pub fn VoicePicker(
    content_id: i64,
    language: String,
    initial_voice: String,
    initial_speed: Option<f64>,
) -> impl IntoView {
    let voice = RwSignal::new(initial_voice);
    // Empty: the admin's default speed.
    let speed = RwSignal::new(initial_speed.map(|s| s.to_string()).unwrap_or_default());
    let sample = RwSignal::new(None::<String>);
    let player = NodeRef::<leptos::html::Audio>::new();
    // Why the last sample did not play, in the server's words.
    let sample_error = RwSignal::new(None::<String>);
    let dirty = RwSignal::new(false);

    let load = Action::new(move |language: &String| {
        let language = language.clone();
        async move { list_voices(Some(language)).await }
    });
    // On the client only: the list asks the provider, which a page render must not wait on.
    Effect::new(move |_| {
        load.dispatch(language.clone());
    });
    let list = move || load.value().get().and_then(Result::ok);

    let save = Action::new(move |req: &VoiceUpdate| {
        let req = req.clone();
        async move { set_voice(content_id, req).await }
    });
    Effect::new(move |_| {
        if let Some(Ok(_)) = save.value().get() {
            dirty.set(false);
        }
    });

    let chosen_speed = move || speed.with(|s| s.trim().parse::<f64>().ok());
    let on_play = move |_| {
        let mut url = format!(
            "/api/voices/preview?content_id={content_id}&voice={}",
            query_value(&voice.get_untracked())
        );
        if let Some(s) = chosen_speed() {
            url.push_str(&format!("&speed={s}"));
        }
        sample_error.set(None);
        sample.set(Some(url.clone()));
        // Asked again on every press (the answer is `no-store`), even for the same voice.
        if let Some(audio) = player.get_untracked() {
            audio.set_src(&url);
            audio.load();
            let _ = audio.play();
        }
    };
    let on_save = move |_| {
        save.dispatch(VoiceUpdate {
            voice: voice.get_untracked(),
            speed: chosen_speed(),
        });
    };
    let options = move || {
        let current = voice.get();
        let mut options: Vec<(String, String)> = list()
            .map(|l: VoiceList| l.voices.into_iter().map(|v| (v.id, v.label)).collect())
            .unwrap_or_default();
        if !options.iter().any(|(id, _)| *id == current) {
            let label = if list().is_some() {
                format!("{current} (not offered by the current narration provider)")
            } else {
                current.clone()
            };
            options.insert(0, (current.clone(), label));
        }
        options
            .into_iter()
            .map(|(id, label)| {
                let selected = id == current;
                view! { <option value=id.clone() selected=selected>{label}</option> }
            })
            .collect_view()
    };

    view! {
        <div class="voice" aria-label="Voice">
            <strong>"Narration voice"</strong>
            <select name="voice" aria-label="Voice"
                on:change=move |ev| { voice.set(event_target_value(&ev)); dirty.set(true); }
                prop:value=move || voice.get()>
                {options}
            </select>
            <label class="field inline"><span>"Speed"</span>
                <input name="speed" type="number" min=limits::SPEED_MIN max=limits::SPEED_MAX step="0.05"
                    placeholder=move || list().map(|l| l.default_speed.to_string()).unwrap_or_default()
                    prop:value=move || speed.get()
                    on:input=move |ev| { speed.set(event_target_value(&ev)); dirty.set(true); }/></label>
            <button type="button" on:click=on_play>"▶ Play"</button>
            <button type="button" on:click=on_save disabled=move || save.pending().get() || !dirty.get()>
                "Save voice"</button>
            <audio class="voice-sample" controls node_ref=player
                style:display=move || if sample.with(Option::is_some) { "" } else { "none" }
                on:error=move |_| {
                    // The player only says it failed: ask again for the server's words.
                    #[cfg(feature = "hydrate")]
                    if let Some(url) = sample.get_untracked() {
                        leptos::task::spawn_local(async move {
                            sample_error.set(Some(why_not(&url).await));
                        });
                    }
                }></audio>
            {move || sample_error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            {move || match save.value().get() {
                Some(Ok(_)) if !dirty.get() => Some(view! {
                    <span class="muted" role="status">"Saved: narration made from now on uses this voice. Regenerate narration to hear it in the video."</span>
                }.into_any()),
                Some(Err(error)) => Some(view! { <ErrorBox error=error/> }.into_any()),
                _ => None,
            }}
            {move || load.value().get().and_then(Result::err).map(|error| view! { <ErrorBox error=error/> })}
        </div>
    }
}

/// The error message a failed sample's URL answers with.
#[cfg(feature = "hydrate")]
async fn why_not(url: &str) -> String {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let fallback = "The voice sample could not be played; try again.".to_owned();
    let Some(window) = web_sys::window() else {
        return fallback;
    };
    let Ok(response) = JsFuture::from(window.fetch_with_str(url)).await else {
        return "The server could not be reached; try again.".to_owned();
    };
    let Ok(response) = response.dyn_into::<web_sys::Response>() else {
        return fallback;
    };
    let Ok(text) = response.text() else {
        return fallback;
    };
    let text = JsFuture::from(text)
        .await
        .ok()
        .and_then(|t| t.as_string())
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|answer| answer["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or(fallback)
}

/// A query-string value, percent-encoded (a `+` in `en+f3` would otherwise read as a space).
fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_keep_their_plus_and_spaces() {
        assert_eq!(super::query_value("en+f3"), "en%2Bf3");
        assert_eq!(super::query_value("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(super::query_value("af_bella"), "af%5Fbella");
    }
}
