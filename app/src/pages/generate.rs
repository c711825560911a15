use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_navigate;

use crate::api::{generate_script, save_content};
use crate::components::{optional_number, optional_text, ErrorBox, Spinner};
use crate::model::{
    limits, GenerateRequest, GeneratedScript, Mode, PresetsInput, SaveContentRequest,
};

#[component]
pub fn GeneratePage() -> impl IntoView {
    let mode = RwSignal::new(Mode::Topic);
    let input = RwSignal::new(String::new());
    let language = RwSignal::new(String::new());
    let tone = RwSignal::new(String::new());
    let target_seconds = RwSignal::new(String::new());
    let scene_count = RwSignal::new(String::new());
    let aspect_ratio = RwSignal::new(String::new());
    let visual_style = RwSignal::new(String::new());

    let generate = Action::new(|req: &GenerateRequest| {
        let req = req.clone();
        async move { generate_script(req).await }
    });
    let save = Action::new(|req: &SaveContentRequest| {
        let req = req.clone();
        async move { save_content(req).await }
    });

    let request = move || GenerateRequest {
        mode: mode.get_untracked(),
        input: input.get_untracked(),
        presets: PresetsInput {
            language: optional_text(&language.get_untracked()),
            tone: optional_text(&tone.get_untracked()),
            target_seconds: optional_number(&target_seconds.get_untracked()),
            scene_count: optional_number(&scene_count.get_untracked()),
            aspect_ratio: optional_text(&aspect_ratio.get_untracked()),
            visual_style: optional_text(&visual_style.get_untracked()),
            voice: None,
            speed: None,
            transition: None,
        },
    };
    // What the shown script was generated from: the form may change during the wait.
    let generated_from = RwSignal::new(None::<GenerateRequest>);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        save.value().set(None);
        let req = request();
        generated_from.set(Some(req.clone()));
        generate.dispatch(req);
    };

    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(saved)) = save.value().get() {
            navigate(&format!("/contents/{}", saved.id), Default::default());
        }
    });

    let placeholder = move || match mode.get() {
        Mode::Topic => "What is the video about? e.g. Why octopuses have three hearts",
        Mode::Script => "Paste your script here. It is split into scenes by sentences, offline.",
    };
    let limit = move || match mode.get() {
        Mode::Topic => limits::TOPIC_MAX_CHARS,
        Mode::Script => limits::SCRIPT_MAX_CHARS,
    };

    view! {
        <Title text="Generate"/>
        <h1>"Generate a script"</h1>
        <form method="post" class="card generate-form" on:submit=on_submit>
            <div class="mode-switch" role="radiogroup" aria-label="Mode">
                <label class:active=move || mode.get() == Mode::Topic>
                    <input type="radio" name="mode" value="topic" checked=true
                        on:change=move |_| mode.set(Mode::Topic)/>
                    "From a topic (AI)"
                </label>
                <label class:active=move || mode.get() == Mode::Script>
                    <input type="radio" name="mode" value="script"
                        on:change=move |_| mode.set(Mode::Script)/>
                    "Use my script (offline)"
                </label>
            </div>
            <label class="field">
                <span>{move || if mode.get() == Mode::Topic { "Topic" } else { "Script" }}</span>
                <textarea name="input" rows=move || if mode.get() == Mode::Topic { "3" } else { "10" }
                    placeholder=placeholder maxlength=move || limit().to_string()
                    prop:value=move || input.get()
                    on:input=move |ev| input.set(event_target_value(&ev))></textarea>
                <small class="muted">{move || format!("{} / {} characters", input.with(|i| i.chars().count()), limit())}</small>
            </label>
            <details class="presets">
                <summary>"Presets (blank = the admin's defaults)"</summary>
                <div class="grid">
                    <label class="field"><span>"Language"</span>
                        <input name="language" placeholder="English" bind:value=language/></label>
                    <label class="field"><span>"Tone"</span>
                        <input name="tone" placeholder="informative" bind:value=tone/></label>
                    <label class="field"><span>"Target length (s)"</span>
                        <input name="target_seconds" type="number" min=limits::TARGET_SECONDS_MIN
                            max=limits::TARGET_SECONDS_MAX placeholder="60" bind:value=target_seconds/></label>
                    <label class="field"><span>"Scenes"</span>
                        <input name="scene_count" type="number" min=limits::SCENE_COUNT_MIN
                            max=limits::SCENE_COUNT_MAX placeholder="6" bind:value=scene_count/></label>
                    <label class="field"><span>"Aspect ratio"</span>
                        <select name="aspect_ratio" on:change=move |ev| aspect_ratio.set(event_target_value(&ev))>
                            <option value="">"Default"</option>
                            <option value="9:16">"9:16 (vertical)"</option>
                            <option value="16:9">"16:9 (landscape)"</option>
                            <option value="1:1">"1:1 (square)"</option>
                        </select></label>
                    <label class="field"><span>"Visual style"</span>
                        <input name="visual_style" placeholder="cinematic" bind:value=visual_style/></label>
                </div>
            </details>
            <button type="submit" class="primary" disabled=move || generate.pending().get()>
                {move || if mode.get() == Mode::Topic { "Generate script" } else { "Split into scenes" }}
            </button>
        </form>

        <Show when=move || generate.pending().get()>
            <Spinner label="Writing your script… this can take 10–30 seconds."/>
        </Show>

        {move || generate.value().get().map(|result| match result {
            Ok(script) => {
                let from = generated_from.get_untracked();
                let (mode, input) = from.map(|r| (r.mode, r.input)).unwrap_or_default();
                view! { <ScriptPreview script=script mode=mode input=input save=save/> }.into_any()
            }
            Err(error) => view! { <ErrorBox error=error/> }.into_any(),
        })}
    }
}

#[component]
fn ScriptPreview(
    script: GeneratedScript,
    mode: Mode,
    input: String,
    save: Action<SaveContentRequest, Result<crate::model::ContentDetail, crate::error::AppError>>,
) -> impl IntoView {
    let scene_total: f64 = script.scenes.iter().map(|s| s.seconds).sum();
    let request = SaveContentRequest {
        mode,
        input,
        script: script.clone(),
    };
    view! {
        <section class="card script" data-testid="script">
            <header class="script-head">
                <div>
                    <h2>{script.title.clone()}</h2>
                    <p class="hook">{script.hook.clone()}</p>
                    <p class="muted">
                        {format!("{} scenes · {:.0} s · {} · by {}", script.scenes.len(), scene_total,
                            script.presets.aspect_ratio, script.provider)}
                    </p>
                </div>
                <button class="primary" disabled=move || save.pending().get()
                    on:click=move |_| { save.dispatch(request.clone()); }>
                    {move || if save.pending().get() { "Saving…" } else { "Save to library" }}
                </button>
            </header>
            {move || save.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            <ol class="scenes">
                {script.scenes.iter().enumerate().map(|(i, scene)| view! {
                    <li class="scene appear" style=format!("animation-delay: {}ms", i * 120)>
                        <p class="narration">{scene.narration.clone()}</p>
                        <p class="visual"><span class="label">"Visual"</span>{scene.visual_prompt.clone()}</p>
                        <span class="seconds">{format!("{:.1} s", scene.seconds)}</span>
                    </li>
                }).collect_view()}
            </ol>
            <p class="muted">{script.description.clone()}</p>
            <p class="tags">{script.hashtags.join(" ")}</p>
        </section>
    }
}
