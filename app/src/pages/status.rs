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
                    }.into_any(),
                    Err(error) => view! { <ErrorBox error=error/> }.into_any(),
                }
            })}
        </Suspense>
    }
}
