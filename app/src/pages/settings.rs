use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{get_settings, list_voices, reset_settings, update_settings};
use crate::components::ErrorBox;
use crate::model::{SettingsUpdate, SettingsValues, SettingsView};

#[component]
pub fn SettingsPage() -> impl IntoView {
    let settings = Resource::new(|| (), |_| get_settings());
    view! {
        <Title text="Settings"/>
        <h1>"Settings"</h1>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match settings.await {
                    Ok(view) => view! { <SettingsForm initial=view/> }.into_any(),
                    Err(error) => view! { <ErrorBox error=error/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// One text input bound to a field of `SettingsValues`.
macro_rules! text_field {
    ($values:ident, $label:expr, $field:ident, $hint:expr) => {
        view! {
            <label class="field"><span>{$label}</span>
                <input name=stringify!($field) value=$values.with_untracked(|v| v.$field.to_string())
                    prop:value=move || $values.with(|v| v.$field.to_string())
                    on:change=move |ev| {
                        // A value that does not parse snaps back to the last valid one.
                        let text = event_target_value(&ev);
                        match text.trim().parse() {
                            Ok(parsed) => $values.update(|v| v.$field = parsed),
                            Err(_) => $values.update(|_| {}),
                        }
                    }/>
                <small class="muted">{$hint}</small>
            </label>
        }
    };
}

/// A write-only key: the masked stored one as a placeholder, a new one typed over it, and
/// a box to remove it.
#[derive(Clone, Copy)]
struct KeyInput {
    masked: RwSignal<Option<String>>,
    typed: RwSignal<String>,
    remove: RwSignal<bool>,
}

impl KeyInput {
    fn new(masked: Option<String>) -> Self {
        Self {
            masked: RwSignal::new(masked),
            typed: RwSignal::new(String::new()),
            remove: RwSignal::new(false),
        }
    }

    fn reset(self, masked: Option<String>) {
        self.masked.set(masked);
        self.typed.set(String::new());
        self.remove.set(false);
    }

    /// As `SettingsUpdate` wants it: absent keeps, empty removes, text replaces.
    fn update(self) -> Option<String> {
        if self.remove.get_untracked() {
            Some(String::new())
        } else {
            Some(self.typed.get_untracked()).filter(|k| !k.trim().is_empty())
        }
    }

    fn view(self, name: &'static str, label: &'static str, hint: &'static str) -> impl IntoView {
        view! {
            <label class="field"><span>{label}</span>
                <input name=name type="password" autocomplete="off"
                    placeholder=move || self.masked.get().map(|m| format!("Stored: {m} — type to replace")).unwrap_or_else(|| "Not set".into())
                    prop:value=move || self.typed.get() on:input=move |ev| self.typed.set(event_target_value(&ev))/>
                <small class="muted">{hint}</small>
            </label>
            <Show when=move || self.masked.get().is_some()>
                <label class="checkbox"><input type="checkbox" name=format!("remove_{name}")
                    prop:checked=move || self.remove.get()
                    on:change=move |ev| self.remove.set(event_target_checked(&ev))/>" Remove the stored key"</label>
            </Show>
        }
    }
}

#[component]
fn SettingsForm(initial: SettingsView) -> impl IntoView {
    let values = RwSignal::new(initial.values.clone());
    // The voices narration can use now, offered for the default voice (asked on the
    // client: the list may ask the provider).
    let voices = Action::new(|_: &()| async { list_voices(None).await });
    Effect::new(move |_| {
        voices.dispatch(());
    });
    let llm_key = KeyInput::new(initial.llm_api_key_masked.clone());
    let image_key = KeyInput::new(initial.image_api_key_masked.clone());
    let tts_key = KeyInput::new(initial.tts_api_key_masked.clone());
    let transcription_key = KeyInput::new(initial.transcription_api_key_masked.clone());
    let pexels_key = KeyInput::new(initial.pexels_api_key_masked.clone());
    let pixabay_key = KeyInput::new(initial.pixabay_api_key_masked.clone());

    let save = Action::new(|update: &SettingsUpdate| {
        let update = update.clone();
        async move { update_settings(update).await }
    });
    let reset = Action::new(|_: &()| reset_settings());
    let apply = move |view: SettingsView| {
        values.set(view.values);
        llm_key.reset(view.llm_api_key_masked);
        image_key.reset(view.image_api_key_masked);
        tts_key.reset(view.tts_api_key_masked);
        transcription_key.reset(view.transcription_api_key_masked);
        pexels_key.reset(view.pexels_api_key_masked);
        pixabay_key.reset(view.pixabay_api_key_masked);
    };
    Effect::new(move |_| {
        if let Some(Ok(view)) = save.value().get() {
            apply(view);
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(view)) = reset.value().get() {
            apply(view);
        }
    });

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        save.dispatch(SettingsUpdate {
            values: values.get_untracked().to_update_map(),
            llm_api_key: llm_key.update(),
            image_api_key: image_key.update(),
            tts_api_key: tts_key.update(),
            transcription_api_key: transcription_key.update(),
            pexels_api_key: pexels_key.update(),
            pixabay_api_key: pixabay_key.update(),
        });
    };
    let error = move || {
        save.value()
            .get()
            .and_then(|r| r.err())
            .or_else(|| reset.value().get().and_then(|r| r.err()))
    };
    let defaults = SettingsValues::default();

    view! {
        <form method="post" class="card settings" on:submit=on_submit>
            <h2>"Language model (script writing)"</h2>
            <p class="muted">"Any OpenAI-compatible endpoint: OpenAI, Azure, Ollama (http://localhost:11434/v1), vLLM, LM Studio, OpenRouter."</p>
            {text_field!(values, "Base URL", llm_base_url, format!("Default {}", defaults.llm_base_url))}
            {text_field!(values, "Model", llm_model, format!("Default {}", defaults.llm_model))}
            {llm_key.view("llm_api_key", "API key", "Stored encrypted; never shown again. Local servers such as Ollama accept any value.")}
            <label class="field"><span>"Temperature (0–2)"</span>
                <input name="llm_temperature"
                    value=values.with_untracked(|v| v.llm_temperature.map(|t| t.to_string()).unwrap_or_default())
                    prop:value=move || values.with(|v| v.llm_temperature.map(|t| t.to_string()).unwrap_or_default())
                    on:change=move |ev| {
                        let text = event_target_value(&ev);
                        match text.trim() {
                            "" => values.update(|v| v.llm_temperature = None),
                            t => match t.parse() {
                                Ok(parsed) => values.update(|v| v.llm_temperature = Some(parsed)),
                                Err(_) => values.update(|_| {}),
                            },
                        }
                    }/>
                <small class="muted">"Higher is more varied; leave empty for reasoning models (o-series, GPT-5, DeepSeek-R1), which refuse it"</small>
            </label>
            {text_field!(values, "Timeout (seconds, 1–600)", llm_timeout_secs, "How long a creator waits at most")}
            {text_field!(values, "Script generations per user per minute", rate_generate_per_minute, "")}
            {text_field!(values, "Background jobs per user per minute", rate_jobs_per_minute, "")}
            {text_field!(values, "Media storage per user (MiB)", storage_quota_mb, "0 for no quota; new pictures, narration, videos and music are refused beyond it")}
            {text_field!(values, "Private addresses URLs may reach", allowed_private_addresses, "Comma-separated ranges (192.168.1.0/24, fd00::/8) that pasted picture and clip URLs, providers' image URLs and webhook URLs may reach, such as a media server on this network; empty: public addresses only")}
            <label class="checkbox"><input type="checkbox" name="llm_json_schema"
                prop:checked=move || values.with(|v| v.llm_json_schema)
                on:change=move |ev| values.update(|v| v.llm_json_schema = event_target_checked(&ev))/>
                " Use JSON-schema structured output (turn off for servers that only support JSON mode)"</label>

            <h2>"Pictures and narration"</h2>
            <p class="muted">"Built in works offline: scene cards drawn with ffmpeg and narration by espeak-ng. The OpenAI-compatible provider uses the script's endpoint and key, or an endpoint of its own (e.g. pictures from OpenAI, narration from a local Kokoro-FastAPI at http://localhost:8880/v1)."</p>
            <div class="grid">
                {provider_select(values, "Pictures", "image_provider", |v| &v.image_provider, |v, p| v.image_provider = p)}
                {text_field!(values, "Pictures endpoint", image_base_url, "Empty: the script's endpoint and key")}
                {image_key.view("image_api_key", "Pictures API key", "Only with an endpoint of its own; empty: the script's key on the script's host, else none")}
                {text_field!(values, "Image model", image_model, format!("Default {}", defaults.image_model))}
                {text_field!(values, "Image size", image_size, "auto (from the aspect ratio) or WxH")}
                {text_field!(values, "Image quality", image_quality, "auto, low, medium, high (standard, hd for DALL·E)")}
                {text_field!(values, "Images in flight", image_concurrency, "1–64, across all servers")}
                {text_field!(values, "Images per minute", image_per_minute, "0 for no limit; your provider tier's limit")}
                {provider_select(values, "Narration", "tts_provider", |v| &v.tts_provider, |v, p| v.tts_provider = p)}
                {text_field!(values, "Narration endpoint", tts_base_url, "Empty: the script's endpoint and key")}
                {tts_key.view("tts_api_key", "Narration API key", "Only with an endpoint of its own; empty: the script's key on the script's host, else none")}
                {text_field!(values, "Transcription model", transcription_model, "e.g. whisper-1: times captions of provider narration to its words; empty: off")}
                {text_field!(values, "Transcription endpoint", transcription_base_url, "Empty: the narration's endpoint and key")}
                {transcription_key.view("transcription_api_key", "Transcription API key", "Only with an endpoint of its own; empty: the narration's key on its host, else none")}
                {text_field!(values, "Speech model", tts_model, format!("Default {}", defaults.tts_model))}
                {text_field!(values, "Speech speed", tts_speed, "0.25–4")}
                {text_field!(values, "Narrations in flight", tts_concurrency, "1–64, across all servers")}
                {text_field!(values, "Narrations per minute", tts_per_minute, "0 for no limit")}
                {text_field!(values, "Media request timeout (s)", media_timeout_secs, "5–900; a slower answer is retried")}
            </div>

            <h2>"Stock footage"</h2>
            <p class="muted">"With a key, creators search Pexels or Pixabay for photos and clips under each scene, and \"Find footage for all scenes\" picks them in the background. Both are free; their authors are credited as the licences ask."</p>
            <div class="grid">
                {pexels_key.view("pexels_api_key", "Pexels API key", "From pexels.com/api; empty: Pexels is not searched")}
                {text_field!(values, "Pexels API", pexels_base_url, format!("Default {}", defaults.pexels_base_url))}
                {pixabay_key.view("pixabay_api_key", "Pixabay API key", "From pixabay.com/api/docs; empty: Pixabay is not searched")}
                {text_field!(values, "Pixabay API", pixabay_base_url, format!("Default {}", defaults.pixabay_base_url))}
            </div>

            <h2>"Video"</h2>
            <div class="grid">
                {text_field!(values, "Video height", video_height, "720 or 1080 (the short side)")}
                {text_field!(values, "Pause after each scene (ms)", video_pause_ms, "0–5000")}
                {text_field!(values, "Renders at once", render_concurrency, "1–8, across all servers")}
                {text_field!(values, "Transition time (ms)", video_fade_ms, "taken from each side of a join by the content's transition; 0 for hard cuts, up to 1000")}
                {text_field!(values, "Music level (%)", music_volume, "0–100; lowered further under speech")}
                {text_field!(values, "Subtitle size (%)", subtitle_size, "50–200")}
                {text_field!(values, "Subtitle colour", subtitle_colour, "#RRGGBB")}
                {text_field!(values, "Subtitle outline", subtitle_outline, "0–6")}
                <label class="field"><span>"Caption style"</span>
                    <select name="caption_style"
                        prop:value=move || values.with(|v| v.caption_style.clone())
                        on:change=move |ev| values.update(|v| v.caption_style = event_target_value(&ev))>
                        {[("lines", "Lines"), ("word", "One word at a time"), ("highlight", "Lines, spoken word highlighted")].iter().map(|(value, label)| view! {
                            <option value=*value selected=values.with_untracked(|v| v.caption_style == *value)>{*label}</option>
                        }).collect_view()}
                    </select>
                    <small class="muted">"Timed to the words as espeak-ng speaks them, or by the transcription model for provider narration; otherwise by the share of letters"</small></label>
                {text_field!(values, "Highlight colour", caption_highlight_colour, "#RRGGBB, for the spoken word")}
                <label class="field"><span>"Subtitle position"</span>
                    <select name="subtitle_position"
                        prop:value=move || values.with(|v| v.subtitle_position.clone())
                        on:change=move |ev| values.update(|v| v.subtitle_position = event_target_value(&ev))>
                        {["bottom", "middle", "top"].iter().map(|p| view! {
                            <option value=*p selected=values.with_untracked(|v| v.subtitle_position == *p)>{*p}</option>
                        }).collect_view()}
                    </select></label>
            </div>
            <label class="checkbox"><input type="checkbox" name="video_subtitles"
                prop:checked=move || values.with(|v| v.video_subtitles)
                on:change=move |ev| values.update(|v| v.video_subtitles = event_target_checked(&ev))/>
                " Burn subtitles into the video (an .srt file is made either way)"</label>
            <label class="checkbox"><input type="checkbox" name="video_motion"
                prop:checked=move || values.with(|v| v.video_motion)
                on:change=move |ev| values.update(|v| v.video_motion = event_target_checked(&ev))/>
                " Slow zoom on each scene's picture"</label>

            <h2>"Defaults for new scripts"</h2>
            <div class="grid">
                {text_field!(values, "Language", default_language, "")}
                {text_field!(values, "Tone", default_tone, "")}
                {text_field!(values, "Target length (s)", default_target_seconds, "10–600")}
                {text_field!(values, "Scenes", default_scene_count, "1–30")}
                <label class="field"><span>"Aspect ratio"</span>
                    <select name="default_aspect_ratio"
                        prop:value=move || values.with(|v| v.default_aspect_ratio.clone())
                        on:change=move |ev| values.update(|v| v.default_aspect_ratio = event_target_value(&ev))>
                        {crate::model::ASPECT_RATIOS.iter().map(|r| view! {
                            <option value=*r selected=values.with_untracked(|v| v.default_aspect_ratio == *r)>{*r}</option>
                        }).collect_view()}
                    </select></label>
                {text_field!(values, "Visual style", default_visual_style, "")}
                <label class="field"><span>"Voice"</span>
                    <input name="default_voice" list="voice-options"
                        value=values.with_untracked(|v| v.default_voice.clone())
                        prop:value=move || values.with(|v| v.default_voice.clone())
                        on:change=move |ev| values.update(|v| v.default_voice = event_target_value(&ev))/>
                    <datalist id="voice-options">
                        {move || voices.value().get().and_then(Result::ok).map(|list| list.voices.into_iter().map(|v| view! {
                            <option value=v.id>{v.label}</option>
                        }).collect_view())}
                    </datalist>
                    <small class="muted">"What new contents start with; each content can pick its own and hear it first. Offline: an espeak-ng variant such as en+f3."</small>
                </label>
            </div>
            {move || error().map(|error| view! { <ErrorBox error=error/> })}
            <p class="status-line">{move || matches!(save.value().get(), Some(Ok(_))).then_some("Settings saved.")}</p>
            <div class="actions">
                <button type="submit" class="primary" disabled=move || save.pending().get()>"Save settings"</button>
                <button type="button" on:click=move |_| { reset.dispatch(()); }>"Reset to defaults"</button>
            </div>
        </form>
    }
}

fn provider_select(
    values: RwSignal<SettingsValues>,
    label: &'static str,
    name: &'static str,
    get: fn(&SettingsValues) -> &String,
    set: fn(&mut SettingsValues, String),
) -> impl IntoView {
    view! {
        <label class="field"><span>{label}</span>
            <select name=name
                prop:value=move || values.with(|v| get(v).clone())
                on:change=move |ev| values.update(|v| set(v, event_target_value(&ev)))>
                <option value="builtin" selected=values.with_untracked(|v| get(v) == "builtin")>"Built in (offline)"</option>
                <option value="openai" selected=values.with_untracked(|v| get(v) == "openai")>"OpenAI-compatible"</option>
            </select>
        </label>
    }
}
