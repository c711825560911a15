use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map};

use std::collections::HashMap;

use super::footage::{Credit, FootagePicker};
use super::jobs::{keep_polling, Chip, JobCard};
use super::music::MusicPicker;
use super::voice::VoicePicker;
use crate::api::{
    cancel_job, content_jobs, delete_content, find_footage, get_content, retry_job,
    set_clip_options, set_transition, start_job, start_render, stock_sources, update_content,
};
use crate::components::ErrorBox;
use crate::model::{
    limits, ClipUpdate, ContentDetail, FootageRequest, JobDetail, JobKind, MediaRequest, SceneClip,
    SceneEdit, SceneView, StockCredit, StockKind, StockProvider, Transition, UpdateContentRequest,
    WhenShorter,
};

/// A file a creator chose or dropped (only the browser has one).
#[cfg(feature = "hydrate")]
type PictureFile = web_sys::File;
#[cfg(not(feature = "hydrate"))]
type PictureFile = ();

/// What a creator puts on a scene: a file, or the URL of one. (The server's render only
/// builds the page; the browser sends.)
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
enum Sent {
    File(PictureFile),
    Url(String),
}

/// What a scene shows of its media: the current picture and narration, and how the
/// latest task for each is doing.
#[derive(Clone, Default, PartialEq)]
struct SceneMedia {
    image: Option<i64>,
    audio: Option<i64>,
    /// "Clip · 4.2 s · loops" when the visual is the creator's clip (`image` is its first
    /// frame).
    clip: Option<String>,
    /// Who made it, when it is stock footage.
    credit: Option<StockCredit>,
    image_task: Option<(String, Option<String>)>,
    audio_task: Option<(String, Option<String>)>,
}

/// A creator's own picture or clip put on (or taken off) a scene in this page.
#[derive(Clone, PartialEq)]
struct Own {
    image: Option<i64>,
    clip: Option<String>,
    credit: Option<StockCredit>,
    /// The newest job known then, whose older pictures it replaces.
    upto: i64,
}

impl Own {
    fn of(scene: &SceneView, upto: i64) -> Self {
        Self {
            image: scene.image_asset_id,
            clip: scene.clip.as_ref().map(clip_label),
            credit: scene.credit.clone(),
            upto,
        }
    }
}

type OwnPictures = HashMap<i64, Own>;

/// How the scene list names a clip.
fn clip_label(clip: &SceneClip) -> String {
    let then = match clip.when_shorter {
        WhenShorter::Loop => "loops",
        WhenShorter::Freeze => "holds its last frame",
    };
    let sound = match clip.sound {
        0 => String::new(),
        n => format!(" · its sound at {n} %"),
    };
    format!(
        "Your clip · {:.1} s · {then} when shorter{sound}",
        clip.duration_ms as f64 / 1000.0
    )
}

fn scene_media(
    detail: &ContentDetail,
    jobs: &[JobDetail],
    own: &OwnPictures,
) -> HashMap<i64, SceneMedia> {
    let mut media: HashMap<i64, SceneMedia> = detail
        .scenes
        .iter()
        .map(|s| {
            (
                s.id,
                SceneMedia {
                    image: s.image_asset_id,
                    audio: s.audio_asset_id,
                    clip: s.clip.as_ref().map(clip_label),
                    credit: s.credit.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    for (scene, own) in own {
        if let Some(entry) = media.get_mut(scene) {
            entry.image = own.image;
            entry.clip = own.clip.clone();
            entry.credit = own.credit.clone();
        }
    }
    // Oldest job first, so the newest task decides what a scene shows.
    for job in jobs.iter().rev() {
        for task in &job.tasks {
            let Some(entry) = task.scene_id.and_then(|id| media.get_mut(&id)) else {
                continue;
            };
            // Stock footage found in the background is the scene's picture too.
            let image = task.kind == "scene.image" || task.kind == "scene.footage";
            let replaced_by_own = image
                && task
                    .scene_id
                    .and_then(|id| own.get(&id))
                    .is_some_and(|own| job.job.id <= own.upto);
            if task.status == "succeeded" && !replaced_by_own {
                // Asset ids grow: an older task's picture never hides the newer one the
                // page was loaded with (a creator's upload after that job).
                let newer = |current: Option<i64>, asset: i64| current.is_none_or(|c| asset > c);
                if let Some(asset) = task.output_asset_id {
                    if image && newer(entry.image, asset) {
                        entry.image = Some(asset);
                        entry.clip = None;
                        entry.credit = None;
                    } else if !image && newer(entry.audio, asset) {
                        entry.audio = Some(asset)
                    }
                }
            }
            let state = Some((task.status.clone(), task.last_error.clone()));
            if image {
                entry.image_task = state
            } else {
                entry.audio_task = state
            }
        }
    }
    media
}

#[component]
pub fn ContentPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let content = Resource::new(id, get_content);
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match content.await {
                    Ok(detail) => view! { <Editor detail=detail/> }.into_any(),
                    Err(error) => view! { <Title text="Content"/><ErrorBox error=error/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[derive(Clone, Copy)]
struct Row {
    key: usize,
    id: Option<i64>,
    narration: RwSignal<String>,
    visual_prompt: RwSignal<String>,
    seconds: RwSignal<f64>,
    /// How the creator's own picture or clip meets the frame: `crop` or `pad`.
    fit: RwSignal<String>,
    /// What the creator's clip does when the scene is longer: `loop` or `freeze`.
    when_shorter: RwSignal<String>,
    /// The clip's own sound under the narration, in percent.
    sound: RwSignal<String>,
    /// A picture or clip URL being pasted.
    url: RwSignal<String>,
}

impl Row {
    /// The query a file for this scene is sent with (pictures use `fit` only).
    fn visual_query(&self) -> String {
        format!(
            "fit={}&when_shorter={}&sound={}",
            self.fit.get_untracked(),
            self.when_shorter.get_untracked(),
            self.sound.get_untracked()
        )
    }
}

fn rows_from(detail: &ContentDetail, next_key: &mut usize) -> Vec<Row> {
    detail
        .scenes
        .iter()
        .map(|s| {
            *next_key += 1;
            Row {
                key: *next_key,
                id: Some(s.id),
                narration: RwSignal::new(s.narration.clone()),
                visual_prompt: RwSignal::new(s.visual_prompt.clone()),
                seconds: RwSignal::new(s.seconds),
                fit: RwSignal::new("crop".to_owned()),
                when_shorter: RwSignal::new(
                    s.clip
                        .as_ref()
                        .map_or(WhenShorter::Loop, |c| c.when_shorter)
                        .as_str()
                        .to_owned(),
                ),
                sound: RwSignal::new(s.clip.as_ref().map_or(0, |c| c.sound).to_string()),
                url: RwSignal::new(String::new()),
            }
        })
        .collect()
}

#[component]
fn Editor(detail: ContentDetail) -> impl IntoView {
    let id = detail.id;
    let next_key = StoredValue::new(0usize);
    let mut key = 0;
    let rows = RwSignal::new(rows_from(&detail, &mut key));
    next_key.set_value(key);
    let title = RwSignal::new(detail.title.clone());
    let dirty = RwSignal::new(false);
    let confirm_delete = RwSignal::new(false);

    let save = Action::new(move |req: &UpdateContentRequest| {
        let req = req.clone();
        async move { update_content(id, req).await }
    });
    let delete = Action::new(move |_: &()| async move { delete_content(id).await });

    // After a save, new scenes have ids: take them from the server's answer.
    Effect::new(move |_| {
        if let Some(Ok(saved)) = save.value().get() {
            let mut key = next_key.get_value();
            rows.set(rows_from(&saved, &mut key));
            next_key.set_value(key);
            title.set(saved.title.clone());
            dirty.set(false);
        }
    });
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(())) = delete.value().get() {
            navigate("/library", Default::default());
        }
    });

    let position_of =
        move |key: usize| rows.with(|rs| rs.iter().position(|r| r.key == key).unwrap_or(0));
    let move_row = move |key: usize, delta: isize| {
        rows.update(|rs| {
            if let Some(i) = rs.iter().position(|r| r.key == key) {
                let j = i as isize + delta;
                if j >= 0 && (j as usize) < rs.len() {
                    rs.swap(i, j as usize);
                }
            }
        });
        dirty.set(true);
    };
    let add_row = move |_| {
        let key = next_key.get_value() + 1;
        next_key.set_value(key);
        rows.update(|rs| {
            rs.push(Row {
                key,
                id: None,
                narration: RwSignal::new(String::new()),
                visual_prompt: RwSignal::new(String::new()),
                seconds: RwSignal::new(4.0),
                fit: RwSignal::new("crop".to_owned()),
                when_shorter: RwSignal::new("loop".to_owned()),
                sound: RwSignal::new("0".to_owned()),
                url: RwSignal::new(String::new()),
            })
        });
        dirty.set(true);
    };
    let on_save = move |_| {
        let scenes = rows.with_untracked(|rs| {
            rs.iter()
                .map(|r| SceneEdit {
                    id: r.id,
                    narration: r.narration.get_untracked(),
                    visual_prompt: r.visual_prompt.get_untracked(),
                    seconds: Some(r.seconds.get_untracked()),
                })
                .collect()
        });
        save.dispatch(UpdateContentRequest {
            title: title.get_untracked(),
            scenes,
        });
    };
    let total_seconds = move || rows.with(|rs| rs.iter().map(|r| r.seconds.get()).sum::<f64>());

    // Jobs of this content, polled every 2 s while any is active, and not otherwise. An
    // action rather than a resource: a poll must not send the page back to "Loading…".
    let latest = RwSignal::new(Vec::<JobDetail>::new());
    let load = Action::new(move |_: &()| content_jobs(id));
    Effect::new(move |_| {
        load.dispatch(());
    });
    keep_polling(load, latest, super::jobs::active);
    // "Render the video when everything is ready", for the Generate buttons.
    let render_after = RwSignal::new(false);
    // Every scene, or (regenerate) just one.
    let start = Action::new(move |(kind, scene): &(JobKind, Option<i64>)| {
        start_job(
            *kind,
            MediaRequest {
                content_id: id,
                scene_ids: scene.map(|s| vec![s]),
                render_after: render_after.get_untracked(),
            },
        )
    });
    // The stock libraries with a key; none hides every stock control.
    let sources = RwSignal::new(Vec::<StockProvider>::new());
    let load_sources = Action::new(|_: &()| stock_sources());
    Effect::new(move |_| {
        load_sources.dispatch(());
    });
    Effect::new(move |_| {
        if let Some(Ok(found)) = load_sources.value().get() {
            sources.set(found);
        }
    });
    let footage_kind = RwSignal::new(StockKind::Videos);
    let find_all = Action::new(move |_: &()| {
        find_footage(FootageRequest {
            content_id: id,
            scene_ids: None,
            kind: footage_kind.get_untracked(),
            render_after: render_after.get_untracked(),
        })
    });
    let cancel = Action::new(|job: &i64| cancel_job(*job));
    let retry = Action::new(|job: &i64| retry_job(*job));
    let render = Action::new(move |_: &()| start_render(id));
    Effect::new(move |previous: Option<usize>| {
        // Any action's answer changes what the jobs show: look again now.
        let versions = start.version().get()
            + find_all.version().get()
            + cancel.version().get()
            + retry.version().get()
            + render.version().get();
        if previous.is_some_and(|p| p != versions) {
            load.dispatch(());
        }
        versions
    });
    let on_cancel = Callback::new(move |job| {
        cancel.dispatch(job);
    });
    let on_retry = Callback::new(move |job| {
        retry.dispatch(job);
    });
    let initial = detail.clone();
    let own = RwSignal::new(OwnPictures::new());
    // The music or a scene's own picture changed in this page since its last render.
    let sources_changed = RwSignal::new(false);
    let media =
        Memo::new(move |_| latest.with(|list| own.with(|own| scene_media(&initial, list, own))));
    let picture_errors = RwSignal::new(HashMap::<i64, String>::new());
    // Puts a creator's file on a scene (or takes their picture off: no file).
    let send_picture = move |scene: i64, query: String, sent: Option<Sent>| {
        #[cfg(feature = "hydrate")]
        {
            picture_errors.update(|e| {
                e.remove(&scene);
            });
            let upto = latest.with_untracked(|l| l.iter().map(|d| d.job.id).max().unwrap_or(0));
            leptos::task::spawn_local(async move {
                let url = format!("/api/contents/{id}/scenes/{scene}/visual?{query}");
                use super::upload::Body;
                let body = match &sent {
                    Some(Sent::File(file)) => Some(Body::File(file)),
                    Some(Sent::Url(link)) => Some(Body::Json(serde_json::json!({ "url": link }))),
                    None => None,
                };
                let answer =
                    super::upload::send(&url, body, "The picture could not be saved.").await;
                match answer {
                    Ok(data) => {
                        let view = data["scenes"]
                            .as_array()
                            .and_then(|s| s.iter().find(|s| s["id"] == scene))
                            .and_then(|s| serde_json::from_value::<SceneView>(s.clone()).ok());
                        let own_now = match view {
                            Some(view) => Own::of(&view, upto),
                            None => Own {
                                image: None,
                                clip: None,
                                credit: None,
                                upto,
                            },
                        };
                        own.update(|o| {
                            o.insert(scene, own_now);
                        });
                        sources_changed.set(true);
                    }
                    Err(message) => picture_errors.update(|e| {
                        e.insert(scene, message);
                    }),
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (scene, query, sent, id);
    };
    // A clip's options changed in the page: saved at once (the next render uses them).
    let change_clip = move |row: Row, scene: i64| {
        let update = ClipUpdate {
            when_shorter: WhenShorter::parse(&row.when_shorter.get_untracked()).unwrap_or_default(),
            sound: row.sound.get_untracked().parse().unwrap_or(0),
        };
        let upto = latest.with_untracked(|l| l.iter().map(|d| d.job.id).max().unwrap_or(0));
        leptos::task::spawn_local(async move {
            match set_clip_options(id, scene, update).await {
                Ok(detail) => {
                    if let Some(s) = detail.scenes.iter().find(|s| s.id == scene) {
                        own.update(|o| {
                            o.insert(scene, Own::of(s, upto));
                        });
                        sources_changed.set(true);
                    }
                }
                Err(error) => picture_errors.update(|e| {
                    e.insert(scene, error.message);
                }),
            }
        });
    };
    // Several files dropped or chosen on a scene: the first goes to that scene, the next
    // to the saved scene after it, and so on, each with its own scene's options.
    #[cfg(feature = "hydrate")]
    let send_files = move |from_key: usize, files: web_sys::FileList| {
        // A scene not saved yet has nowhere to keep a file.
        let targets: Vec<Row> = rows.with_untracked(|rs| {
            rs.iter()
                .skip_while(|r| r.key != from_key)
                .take_while(|r| r.id.is_some() || r.key != from_key)
                .filter(|r| r.id.is_some())
                .copied()
                .collect()
        });
        for (i, row) in targets.into_iter().enumerate() {
            let (Some(file), Some(scene)) = (files.get(i as u32), row.id) else {
                break;
            };
            send_picture(scene, row.visual_query(), Some(Sent::File(file)));
        }
    };
    // The saved scenes, in order, and whether each has words to narrate: what a render
    // would use.
    let saved: Vec<(i64, bool)> = detail
        .scenes
        .iter()
        .map(|s| (s.id, !s.narration.trim().is_empty()))
        .collect();
    let missing = Memo::new(move |_| {
        media.with(|m| {
            saved
                .iter()
                .enumerate()
                .filter(|(_, (id, speaks))| {
                    m.get(id)
                        .is_none_or(|s| s.image.is_none() || (*speaks && s.audio.is_none()))
                })
                .map(|(i, _)| (i + 1).to_string())
                .collect::<Vec<_>>()
        })
    });
    let newest = move |list: &[JobDetail], kinds: &[&str]| {
        list.iter()
            .filter(|d| kinds.contains(&d.job.kind.as_str()) && d.job.status == "completed")
            .map(|d| d.job.id)
            .max()
    };
    // Footage found in the background lands on scenes as a pick does: once a footage job
    // finishes, the content is read again for its scenes' clips and credits.
    let seen_footage = StoredValue::new(None::<i64>);
    Effect::new(move |_| {
        // Ended, however: a job where one scene found nothing fails, yet the others got theirs.
        let ended = latest.with(|list| {
            list.iter()
                .filter(|d| d.job.kind == "footage")
                .filter(|d| matches!(d.job.status.as_str(), "completed" | "failed" | "cancelled"))
                .map(|d| d.job.id)
                .max()
        });
        let Some(job) = ended else {
            return;
        };
        if seen_footage.get_value().is_some_and(|seen| seen >= job) {
            return;
        }
        seen_footage.set_value(Some(job));
        leptos::task::spawn_local(async move {
            if let Ok(detail) = get_content(id).await {
                own.update(|o| {
                    for scene in detail.scenes.iter().filter(|s| s.credit.is_some()) {
                        o.insert(scene.id, Own::of(scene, job));
                    }
                });
            }
        });
    });
    let on_picked = move |scene: i64| {
        Callback::new(move |detail: ContentDetail| {
            let upto = latest.with_untracked(|l| l.iter().map(|d| d.job.id).max().unwrap_or(0));
            if let Some(s) = detail.scenes.iter().find(|s| s.id == scene) {
                own.update(|o| {
                    o.insert(scene, Own::of(s, upto));
                });
                sources_changed.set(true);
            }
        })
    };
    // The stock footage in the video, for its description (both libraries ask for credit).
    let credits = Memo::new(move |_| {
        let scenes: Vec<i64> = rows.with(|rs| rs.iter().filter_map(|r| r.id).collect());
        media.with(|m| {
            let mut lines: Vec<StockCredit> = Vec::new();
            for credit in scenes
                .iter()
                .filter_map(|id| m.get(id).and_then(|s| s.credit.clone()))
            {
                if !lines.contains(&credit) {
                    lines.push(credit);
                }
            }
            lines
        })
    });
    let (first_video, was_out_of_date) = (detail.video_asset_id, detail.video_out_of_date);
    let transition = RwSignal::new(detail.presets.transition);
    let save_transition = Action::new(move |t: &Transition| {
        let t = *t;
        async move { set_transition(id, t).await }
    });
    let on_transition = move |ev: leptos::ev::Event| {
        if let Some(t) = Transition::parse(&event_target_value(&ev)) {
            transition.set(t);
            sources_changed.set(true);
            save_transition.dispatch(t);
        }
    };
    let first_music = detail.music_asset_id;
    let (voice_language, first_voice, first_speed) = (
        detail.presets.language.clone(),
        detail.presets.voice.clone(),
        detail.presets.speed,
    );
    // Changes whenever a new render completes, so the player loads the new file.
    let video_version = Memo::new(move |_| {
        latest
            .with(|list| newest(list, &["render"]))
            .map(|job| format!("job{job}"))
            .or(first_video.map(|asset| format!("asset{asset}")))
    });
    let out_of_date = Memo::new(move |_| {
        let changed = sources_changed.get();
        latest.with(|list| {
            match (
                newest(list, &["render"]),
                newest(list, &["media", "tts", "footage"]),
            ) {
                (Some(render), Some(media)) => media > render || changed,
                (Some(_), None) => changed,
                (None, media) => {
                    was_out_of_date || (first_video.is_some() && (media.is_some() || changed))
                }
            }
        })
    });

    view! {
        <Title text=detail.title.clone()/>
        <div class="page-head">
            <input class="title-input" aria-label="Title" maxlength=limits::TITLE_MAX_CHARS
                value=detail.title.clone() prop:value=move || title.get()
                on:input=move |ev| { title.set(event_target_value(&ev)); dirty.set(true); }/>
            <div class="actions">
                <button class="primary" on:click=on_save disabled=move || save.pending().get()>
                    {move || if save.pending().get() { "Saving…" } else { "Save changes" }}
                </button>
                <Show when=move || !confirm_delete.get()
                    fallback=move || view! {
                        <span class="confirm">"Delete this content and its scenes? "
                            <button class="danger" on:click=move |_| { delete.dispatch(()); }>"Yes, delete"</button>
                            <button on:click=move |_| confirm_delete.set(false)>"Cancel"</button>
                        </span>
                    }>
                    <button class="danger-outline" on:click=move |_| confirm_delete.set(true)>"Delete"</button>
                </Show>
            </div>
        </div>
        <p class="muted">
            {move || format!("{} scenes · {:.0} s", rows.with(|r| r.len()), total_seconds())}
            {format!(" · {} · {} · by {} · created {}", detail.presets.aspect_ratio, detail.presets.language,
                detail.provider, detail.created_at)}
        </p>
        <p class="status-line">
            {move || match save.value().get() {
                Some(Ok(_)) if !dirty.get() => "All changes saved.".to_owned(),
                _ if dirty.get() => "Unsaved changes.".to_owned(),
                _ => String::new(),
            }}
        </p>
        {move || save.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
        {move || delete.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
        {(!detail.hook.is_empty()).then(|| view! { <p class="hook">{detail.hook.clone()}</p> })}
        <section class="card jobs" aria-label="Background jobs">
            <div class="actions">
                <button on:click=move |_| { start.dispatch((JobKind::Media, None)); } disabled=move || start.pending().get()>"Generate images"</button>
                <button on:click=move |_| { start.dispatch((JobKind::Tts, None)); } disabled=move || start.pending().get()>"Generate narration"</button>
                {move || (!sources.with(|s| s.is_empty())).then(|| view! {
                    <span class="find-footage">
                        <button on:click=move |_| { find_all.dispatch(()); } disabled=move || find_all.pending().get()>
                            "Find footage for all scenes"</button>
                        <select name="footage_kind" aria-label="Stock clips or photos"
                            on:change=move |ev| footage_kind.set(StockKind::parse(&event_target_value(&ev)).unwrap_or_default())>
                            <option value="videos">"Clips"</option>
                            <option value="photos">"Photos"</option>
                        </select>
                    </span>
                })}
                <label class="checkbox"><input type="checkbox" name="render_after"
                    prop:checked=move || render_after.get()
                    on:change=move |ev| render_after.set(event_target_checked(&ev))/>
                    " Render the video when everything is ready"</label>
                <span class="muted">"Made in the background by the providers an admin chose in Settings; "
                    <a href="/jobs">"all jobs"</a></span>
            </div>
            <VoicePicker content_id=id language=voice_language initial_voice=first_voice initial_speed=first_speed/>
            {move || start.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            {move || find_all.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            {move || load.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            {move || latest.get().into_iter().map(|d| view! { <JobCard detail=d on_cancel=on_cancel on_retry=on_retry/> }).collect_view()}
        </section>
        <section class="card video" aria-label="Video">
            <div class="actions">
                // A render started now takes the current music.
                <button class="primary" on:click=move |_| { sources_changed.set(false); render.dispatch(()); }
                    disabled=move || render.pending().get() || !missing.with(|m| m.is_empty())>"Render video"</button>
                <span class="muted">{move || missing.with(|m| match m.as_slice() {
                    [] => "Every scene's picture and narration, with subtitles, into an MP4.".to_owned(),
                    [one] => format!("Scene {one} still needs its picture or narration."),
                    many => format!("Scenes {} still need their picture or narration.", many.join(", ")),
                })}</span>
            </div>
            {move || render.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            {move || video_version.get().map(|version| view! {
                <video controls preload="metadata" src=format!("/api/contents/{id}/video?v={version}")></video>
                <p class="muted">
                    <a href=format!("/api/contents/{id}/video") download=format!("crevid-{id}.mp4")>"Download MP4"</a>
                    " · "
                    <a href=format!("/api/contents/{id}/subtitles") download=format!("crevid-{id}.srt")>"Subtitles (.srt)"</a>
                    {move || out_of_date.get().then(|| view! {
                        <strong class="stale">" · Video out of date: a scene, the music or the transition changed since it was rendered."</strong>
                    })}
                </p>
            })}
            {move || (!credits.with(|c| c.is_empty())).then(|| view! {
                <p class="credits">"Stock footage: "
                    {credits.get().into_iter().map(|c| view! { <Credit credit=c/> }).collect_view()}
                </p>
            })}
            <MusicPicker content_id=id initial=first_music changed=sources_changed/>
            <div class="transition-picker">
                <label>"Between scenes "
                    <select name="transition" on:change=on_transition>
                        {Transition::ALL.into_iter().map(|t| view! {
                            <option value=t.as_str() selected=move || transition.get() == t>{t.label()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <span class="muted">{move || match save_transition.value().get() {
                    Some(Ok(_)) => "Saved: the next render draws it.",
                    _ if save_transition.pending().get() => "Saving…",
                    _ => "Drawn at each join by ffmpeg; a re-render redraws only the joins that changed.",
                }}</span>
            </div>
            {move || save_transition.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
        </section>
        <ol class="scenes editing">
            <For each=move || rows.get() key=|r| r.key children=move |row: Row| {
                let key = row.key;
                view! {
                    <li class="scene" data-scene-key=key
                        on:dragover=move |ev: leptos::ev::DragEvent| ev.prevent_default()
                        on:drop=move |ev: leptos::ev::DragEvent| {
                            // Pictures or clips dropped on a saved scene: it and the scenes after.
                            ev.prevent_default();
                            #[cfg(feature = "hydrate")]
                            if let Some(files) = ev.data_transfer().and_then(|d| d.files()) {
                                send_files(key, files);
                            }
                        }>
                        <div class="scene-bar">
                            <strong>{move || format!("Scene {}", position_of(key) + 1)}</strong>
                            <span class="grow"></span>
                            <button type="button" title="Move up" aria-label="Move up"
                                disabled=move || position_of(key) == 0
                                on:click=move |_| move_row(key, -1)>"↑"</button>
                            <button type="button" title="Move down" aria-label="Move down"
                                disabled=move || { position_of(key) + 1 >= rows.with(|r| r.len()) }
                                on:click=move |_| move_row(key, 1)>"↓"</button>
                            <button type="button" class="danger-outline" aria-label="Delete scene"
                                on:click=move |_| { rows.update(|rs| rs.retain(|r| r.key != key)); dirty.set(true); }>
                                "Delete scene"</button>
                        </div>
                        {move || row.id.and_then(|sid| media.with(|m| m.get(&sid).cloned())).map(|m| view! {
                            <div class="scene-media">
                                {m.image.map(|a| view! { <img src=format!("/api/assets/{a}") alt="Scene picture"/> })}
                                <div class="scene-media-side">
                                    {row.id.map(|sid| { let has_clip = m.clip.is_some(); view! {
                                        <div class="actions">
                                            <button type="button" on:click=move |_| { start.dispatch((JobKind::Media, Some(sid))); }>
                                                "Regenerate picture"</button>
                                            <button type="button" on:click=move |_| { start.dispatch((JobKind::Tts, Some(sid))); }>
                                                "Regenerate narration"</button>
                                        </div>
                                        <div class="actions own-picture">
                                            <label class="file-button">"Use my picture or clip…"
                                                <input type="file" name="picture" multiple
                                                    accept="image/png,image/jpeg,image/webp,video/mp4,video/quicktime,video/webm"
                                                    title="Several files go to this scene and the ones after it, in order"
                                                    on:change=move |ev| {
                                                        #[cfg(feature = "hydrate")]
                                                        {
                                                            use wasm_bindgen::JsCast;
                                                            let input = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok());
                                                            if let Some(input) = input {
                                                                if let Some(files) = input.files() {
                                                                    send_files(row.key, files);
                                                                }
                                                                input.set_value("");
                                                            }
                                                        }
                                                        #[cfg(not(feature = "hydrate"))]
                                                        let _ = ev;
                                                    }/></label>
                                            <select name="fit" aria-label="How your picture or clip fits the frame"
                                                prop:value=move || row.fit.get()
                                                on:change=move |ev| row.fit.set(event_target_value(&ev))>
                                                <option value="crop">"Fill the frame (crop)"</option>
                                                <option value="pad">"Whole picture (bars)"</option>
                                            </select>
                                            <select name="when_shorter" aria-label="What a clip shorter than the scene does"
                                                prop:value=move || row.when_shorter.get()
                                                on:change=move |ev| {
                                                    row.when_shorter.set(event_target_value(&ev));
                                                    if has_clip { change_clip(row, sid); }
                                                }>
                                                <option value="loop">"Short clip: loop"</option>
                                                <option value="freeze">"Short clip: hold last frame"</option>
                                            </select>
                                            <select name="sound" aria-label="The clip's own sound under the narration"
                                                prop:value=move || row.sound.get()
                                                on:change=move |ev| {
                                                    row.sound.set(event_target_value(&ev));
                                                    if has_clip { change_clip(row, sid); }
                                                }>
                                                <option value="0">"Clip sound: off"</option>
                                                <option value="25">"Clip sound: 25 %"</option>
                                                <option value="50">"Clip sound: 50 %"</option>
                                                <option value="100">"Clip sound: full"</option>
                                            </select>
                                            {m.image.map(|_| view! {
                                                <button type="button" class="danger-outline"
                                                    on:click=move |_| send_picture(sid, row.visual_query(), None)>
                                                    "Remove picture"</button>
                                            })}
                                        </div>
                                        <form class="actions visual-url" on:submit=move |ev: leptos::ev::SubmitEvent| {
                                            ev.prevent_default();
                                            let link = row.url.get_untracked();
                                            if !link.trim().is_empty() {
                                                send_picture(sid, row.visual_query(), Some(Sent::Url(link.trim().to_owned())));
                                                row.url.set(String::new());
                                            }
                                        }>
                                            <input type="url" name="visual_url" aria-label="A picture or clip URL"
                                                placeholder="…or paste a picture or clip URL"
                                                prop:value=move || row.url.get()
                                                on:input=move |ev| row.url.set(event_target_value(&ev))/>
                                            <button type="submit">"Use URL"</button>
                                        </form>
                                        {move || picture_errors.with(|e| e.get(&sid).cloned()).map(|message| view! {
                                            <p class="error" role="alert">{message}</p>
                                        })}
                                    }.into_any() })}
                                    {m.clip.clone().map(|label| view! { <p class="clip-label">{label}</p> })}
                                    {m.credit.clone().map(|credit| view! { <p class="scene-credit"><Credit credit=credit/></p> })}
                                    {m.audio.map(|a| view! { <audio controls preload="none" src=format!("/api/assets/{a}")></audio> })}
                                    <div class="chips">
                                        <Chip label="Picture".to_owned() task=m.image_task.clone()/>
                                        <Chip label="Narration".to_owned() task=m.audio_task.clone()/>
                                    </div>
                                </div>
                            </div>
                        }.into_any())}
                        // Outside the media above, which the job poll redraws: typed words and
                        // results stay while jobs run.
                        {row.id.map(|sid| view! {
                            <FootagePicker content_id=id scene_id=sid sources=sources on_picked=on_picked(sid)/>
                        })}
                        <label class="field"><span>"Narration"</span>
                            <textarea name="narration" rows="3" maxlength=limits::NARRATION_MAX_CHARS
                                prop:value=move || row.narration.get()
                                on:input=move |ev| { row.narration.set(event_target_value(&ev)); dirty.set(true); }>
                                {row.narration.get_untracked()}
                            </textarea></label>
                        <label class="field"><span>"Visual prompt"</span>
                            <textarea name="visual_prompt" rows="2" maxlength=limits::VISUAL_PROMPT_MAX_CHARS
                                prop:value=move || row.visual_prompt.get()
                                on:input=move |ev| { row.visual_prompt.set(event_target_value(&ev)); dirty.set(true); }>
                                {row.visual_prompt.get_untracked()}
                            </textarea></label>
                        <label class="field inline"><span>"Seconds"</span>
                            <input name="seconds" type="number" min="0.5" max=limits::SCENE_SECONDS_MAX step="0.1"
                                value=row.seconds.get_untracked() prop:value=move || row.seconds.get().to_string()
                                on:input=move |ev| {
                                    if let Ok(v) = event_target_value(&ev).parse::<f64>() { row.seconds.set(v); }
                                    dirty.set(true);
                                }/></label>
                    </li>
                }
                // Type-erased: the row's view type is deep enough to strain the compiler.
                .into_any()
            }/>
        </ol>
        <button type="button" class="add" on:click=add_row>"+ Add scene"</button>
    }
}
