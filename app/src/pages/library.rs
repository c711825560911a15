use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::list_contents;
use crate::components::{urlencode, ErrorBox};
use crate::model::{ContentPage, ListQuery, Mode};

const PER_PAGE: u32 = 12;

#[component]
pub fn LibraryPage() -> impl IntoView {
    let query = use_query_map();
    let q = move || query.read().get("q").unwrap_or_default();
    let page = move || {
        query
            .read()
            .get("page")
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(1)
    };
    let contents = Resource::new(
        move || (q(), page()),
        |(q, page)| {
            list_contents(ListQuery {
                q: Some(q),
                page: Some(page),
                per_page: Some(PER_PAGE),
            })
        },
    );

    view! {
        <Title text="Library"/>
        <div class="page-head">
            <h1>"Library"</h1>
            <form method="get" action="/library" class="search" role="search">
                <input type="search" name="q" placeholder="Search titles" value=q aria-label="Search titles"/>
                <button type="submit">"Search"</button>
            </form>
        </div>
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match contents.await {
                    Ok(p) => view! { <ContentList page=p q=q()/> }.into_any(),
                    Err(error) => view! { <ErrorBox error=error/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn ContentList(page: ContentPage, q: String) -> impl IntoView {
    if page.items.is_empty() {
        let message = if q.is_empty() {
            "Nothing saved yet. Generate a script and save it to see it here."
        } else {
            "No content matches that search."
        };
        return view! { <p class="empty">{message}</p> }.into_any();
    }
    let pages = page.pages();
    let link = move |n: u32| {
        if q.is_empty() {
            format!("/library?page={n}")
        } else {
            format!("/library?q={}&page={n}", urlencode(&q))
        }
    };
    view! {
        <ul class="library">
            {page.items.into_iter().map(|c| view! {
                <li class="card content-card">
                    <a href=format!("/contents/{}", c.id) class="title">{c.title}</a>
                    <p class="muted">
                        {format!("{} scenes · {} · {} · {}", c.scene_count, c.aspect_ratio,
                            if c.mode == Mode::Topic { "AI script" } else { "own script" }, c.created_at)}
                    </p>
                </li>
            }).collect_view()}
        </ul>
        <nav class="pager" aria-label="Pages">
            {(page.page > 1).then(|| view! { <a href=link(page.page - 1) rel="prev">"← Newer"</a> })}
            <span class="muted">{format!("Page {} of {} · {} in all", page.page, pages, page.total)}</span>
            {(page.page < pages).then(|| view! { <a href=link(page.page + 1) rel="next">"Older →"</a> })}
        </nav>
    }
    .into_any()
}
