//! The job dashboard: every job with its progress, stage, queue position and per-scene
//! chips, polled every 2 s while something is active. `JobCard` is shared with the content
//! page.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{cancel_job, list_jobs, retry_job};
use crate::components::ErrorBox;
use crate::model::{JobDetail, JobFilter, TaskView};

pub fn active(job: &JobDetail) -> bool {
    matches!(job.job.status.as_str(), "queued" | "processing")
        || job.tasks.iter().any(|t| t.status == "running")
}

/// Polls `load` again 2 s after each answer while an item is `active` (after a failed
/// poll, while the last good answer had one), with one timer at a time, cleared when the
/// page goes: a timer firing after navigation must not touch a disposed action.
pub fn keep_polling<T: Clone + Send + Sync + 'static>(
    load: Action<(), Result<Vec<T>, crate::error::AppError>>,
    latest: RwSignal<Vec<T>>,
    active: fn(&T) -> bool,
) {
    let timer = StoredValue::new(None::<leptos::leptos_dom::helpers::TimeoutHandle>);
    let clear = move || {
        if let Some(handle) = timer.try_update_value(Option::take).flatten() {
            handle.clear();
        }
    };
    Effect::new(move |_| {
        let Some(answer) = load.value().get() else {
            return;
        };
        let again = match answer {
            Ok(list) => {
                let again = list.iter().any(active);
                latest.set(list);
                again
            }
            Err(_) => latest.with_untracked(|list| list.iter().any(active)),
        };
        clear();
        if again {
            if let Ok(handle) = set_timeout_with_handle(
                move || {
                    load.dispatch(());
                },
                std::time::Duration::from_secs(2),
            ) {
                timer.set_value(Some(handle));
            }
        }
    });
    on_cleanup(clear);
}

fn chip_word(status: &str) -> &'static str {
    match status {
        "queued" => "queued",
        "running" => "running",
        "succeeded" => "done",
        "failed" => "failed",
        _ => "cancelled",
    }
}

#[component]
pub fn Chip(label: String, task: Option<(String, Option<String>)>) -> impl IntoView {
    task.map(|(status, error)| {
        let word = chip_word(&status);
        view! {
            <span class=format!("chip {word}") title=error.unwrap_or_default() tabindex="0">
                {format!("{label}: {word}")}
            </span>
        }
    })
}

/// "Waiting: 12 tasks ahead", while a job has tasks waiting for a free slot.
fn queue_text(detail: &JobDetail) -> Option<String> {
    let ahead = detail.job.queue_ahead?;
    let running = detail.tasks.iter().any(|t| t.status == "running");
    match ahead {
        0 if running => None,
        0 => Some("Next in the queue".to_owned()),
        1 => Some("Waiting: 1 task ahead in the queue".to_owned()),
        n => Some(format!("Waiting: {n} tasks ahead in the queue")),
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "media" => "Images",
        "tts" => "Narration",
        "footage" => "Stock footage",
        _ => "Video",
    }
}

#[component]
pub fn JobCard(
    detail: JobDetail,
    on_cancel: Callback<i64>,
    on_retry: Callback<i64>,
    /// The jobs page names the content and shows every scene's chip; the content page shows
    /// chips beside each scene instead.
    #[prop(optional)]
    full: bool,
) -> impl IntoView {
    let job_id = detail.job.id;
    let is_active = active(&detail);
    let can_retry = !is_active && detail.job.failed_tasks > 0;
    let title = detail.job.content_title.clone();
    let contents = match detail.job.content_ids.as_slice() {
        [one] => view! {
            <a href=format!("/contents/{one}")>{title.unwrap_or_else(|| format!("Content {one}"))}</a>
        }
        .into_any(),
        many => view! { <span>{format!("{} contents", many.len())}</span> }.into_any(),
    };
    let render = detail.job.kind == "render";
    let chips = full.then(|| {
        detail
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t): (usize, &TaskView)| {
                view! { <Chip label=if render { "Render".to_owned() } else { format!("Scene {}", i + 1) } task=Some((t.status.clone(), t.last_error.clone()))/> }
            })
            .collect_view()
    });
    view! {
        <div class="job" data-status=detail.job.status.clone() data-job-id=job_id>
            <div class="job-head">
                <strong>{kind_label(&detail.job.kind)}</strong>
                {full.then_some(contents)}
                <span class="muted stage">{detail.job.stage_message.clone()}</span>
                {queue_text(&detail).map(|t| view! { <span class="queue">{t}</span> })}
                <span class="grow"></span>
                {is_active.then(|| view! { <button on:click=move |_| on_cancel.run(job_id)>"Cancel"</button> })}
                {can_retry.then(|| view! { <button on:click=move |_| on_retry.run(job_id)>"Retry failed"</button> })}
            </div>
            <progress max="100" value=detail.job.progress aria-label="Progress"></progress>
            {chips.map(|c| view! { <div class="chips">{c}</div> })}
            {detail.job.error.clone().map(|e| view! { <p class="muted job-error">{e}</p> })}
        </div>
    }
}

#[component]
pub fn JobsPage() -> impl IntoView {
    let status = RwSignal::new(String::new());
    let latest = RwSignal::new(Vec::<JobDetail>::new());
    let load = Action::new(move |_: &()| {
        let status = status.get_untracked();
        list_jobs(JobFilter {
            status: Some(status).filter(|s| !s.is_empty()),
            ..JobFilter::default()
        })
    });
    Effect::new(move |_| {
        status.track();
        load.dispatch(());
    });
    // Polled only while a job is active; the poll stops by itself when all are done.
    keep_polling(load, latest, active);
    let cancel = Action::new(|job: &i64| cancel_job(*job));
    let retry = Action::new(|job: &i64| retry_job(*job));
    Effect::new(move |previous: Option<usize>| {
        let versions = cancel.version().get() + retry.version().get();
        if previous.is_some_and(|p| p != versions) {
            load.dispatch(());
        }
        versions
    });
    let on_cancel = Callback::new(move |id| {
        cancel.dispatch(id);
    });
    let on_retry = Callback::new(move |id| {
        retry.dispatch(id);
    });
    view! {
        <Title text="Jobs"/>
        <div class="page-head">
            <h1>"Jobs"</h1>
            <label class="field inline"><span>"Show"</span>
                <select name="status" on:change=move |ev| status.set(event_target_value(&ev))>
                    <option value="">"All"</option>
                    {crate::model::JOB_STATUSES.iter().map(|s| view! { <option value=*s>{*s}</option> }).collect_view()}
                </select>
            </label>
        </div>
        {move || cancel.value().get().and_then(|r| r.err()).or_else(|| retry.value().get().and_then(|r| r.err()))
            .map(|error| view! { <ErrorBox error=error/> })}
        {move || load.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
        <section class="card jobs" aria-label="Jobs">
            {move || {
                let list = latest.get();
                if list.is_empty() && load.value().with(|v| v.is_some()) {
                    view! { <p class="muted">"No jobs yet. Open a content and click Generate images or Generate narration."</p> }.into_any()
                } else {
                    list.into_iter()
                        .map(|d| view! { <JobCard detail=d on_cancel=on_cancel on_retry=on_retry full=true/> })
                        .collect_view()
                        .into_any()
                }
            }}
        </section>
    }
}
