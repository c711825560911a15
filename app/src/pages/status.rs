use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::system_status;
use crate::components::ErrorBox;
use crate::model::Verdict;

#[component]
pub fn StatusPage() -> impl IntoView {
    let report = Resource::new(|| (), |_| system_status());
    view! {
        <Title text="Status"/>
        <div class="page-head">
            <h1>"Status"</h1>
            <button on:click=move |_| report.refetch()>"Check again"</button>
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Checking…"</p> }>
            {move || Suspend::new(async move {
                match report.await {
                    Ok(r) => view! {
                        <ul class="checks">
                            {r.checks.into_iter().map(|c| {
                                let (class, word) = match c.verdict {
                                    Verdict::Ok => ("check ok", "OK"),
                                    Verdict::Warning => ("check warning", "Attention"),
                                    Verdict::Error => ("check error", "Not working"),
                                };
                                view! {
                                    <li class=class>
                                        <span class="badge">{word}</span>
                                        <div><strong>{c.name}</strong><p>{c.message}</p></div>
                                        <span class="muted">{format!("{} ms", c.elapsed_ms)}</span>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                        <p class="muted">{format!("CREVID {} on {}", r.version, r.database)}</p>
                        <Show when={let any = !r.recent_failures.is_empty(); move || any}>
                            <h2>"Recent task failures"</h2>
                            <p class="muted">"Creators see the message; the detail (a tool's own words, paths, the database's) is shown only here and in the server log."</p>
                        </Show>
                        <ul class="failures">
                            {r.recent_failures.into_iter().map(|f| view! {
                                <li>
                                    <div>
                                        <strong>{f.kind}</strong>" "
                                        <span class="muted">{format!("job {}, {}", f.job_id, f.failed_at)}</span>
                                        {f.content_id.map(|id| view! { " " <a href=format!("/contents/{id}")>"content"</a> })}
                                    </div>
                                    <p>{f.message}</p>
                                    {f.detail.map(|d| view! { <pre class="detail">{d}</pre> })}
                                </li>
                            }).collect_view()}
                        </ul>
                    }.into_any(),
                    Err(error) => view! { <ErrorBox error=error/> }.into_any(),
                }
            })}
        </Suspense>
    }
}
