//! "Find stock footage" under a scene: search Pexels or Pixabay (the scene's visual prompt
//! when no words are typed), see the results with their authors, use one.

use leptos::prelude::*;

use crate::api::{pick_footage, search_footage};
use crate::components::ErrorBox;
use crate::model::{
    limits, ContentDetail, StockCandidate, StockCredit, StockKind, StockProvider, StockResults,
};

/// A search as sent: the typed words (none: the visual prompt's), kind, library and page.
type Asked = (Option<String>, StockKind, Option<StockProvider>, u32);

/// "Video by Jane on Pexels", each part linked to the library's page for it.
#[component]
pub fn Credit(credit: StockCredit) -> impl IntoView {
    let what = match credit.kind {
        StockKind::Photos => "Photo",
        StockKind::Videos => "Video",
    };
    view! {
        <span class="credit">
            <a href=credit.page_url target="_blank" rel="noopener">{what}</a>
            " by "
            <a href=credit.author_url target="_blank" rel="noopener">{credit.author}</a>
            " on "
            <a href=credit.provider.home() target="_blank" rel="noopener">{credit.provider.label()}</a>
        </span>
    }
}

#[component]
pub fn FootagePicker(
    content_id: i64,
    scene_id: i64,
    /// The libraries with a key in Settings; the picker shows only when there is one.
    #[prop(into)]
    sources: Signal<Vec<StockProvider>>,
    /// The content once a result is the scene's visual.
    on_picked: Callback<ContentDetail>,
) -> AnyView {
    let query = RwSignal::new(String::new());
    let kind = RwSignal::new(StockKind::Videos);
    let provider = RwSignal::new(None::<StockProvider>);
    let results = RwSignal::new(Vec::<StockCandidate>::new());
    // The last answer, with the search it answered: "More results" asks for its next page
    // even when the inputs have changed since.
    let last = RwSignal::new(None::<(Asked, StockResults)>);
    let search = Action::new(move |asked: &Asked| {
        let (typed, kind, provider, page) = asked.clone();
        async move {
            let found =
                search_footage(content_id, scene_id, typed.clone(), kind, provider, page).await;
            found.map(|found| ((typed, kind, provider, page), found))
        }
    });
    let new_search = move || {
        let typed = query.get_untracked();
        let typed = (!typed.trim().is_empty()).then_some(typed);
        search.dispatch((typed, kind.get_untracked(), provider.get_untracked(), 1));
    };
    Effect::new(move |_| {
        if let Some(Ok((asked, found))) = search.value().get() {
            if found.page <= 1 {
                results.set(found.candidates.clone());
            } else {
                results.update(|r| r.extend(found.candidates.clone()));
            }
            last.set(Some((asked, found)));
        }
    });
    let pick = Action::new(move |token: &String| pick_footage(content_id, scene_id, token.clone()));
    Effect::new(move |_| {
        if let Some(Ok(detail)) = pick.value().get() {
            on_picked.run(detail);
        }
    });
    view! {
        <Show when=move || !sources.with(|s| s.is_empty())>
            <details class="footage">
                <summary>"Find stock footage"</summary>
                <form class="actions" on:submit=move |ev: leptos::ev::SubmitEvent| {
                    ev.prevent_default();
                    new_search();
                }>
                    <input type="search" name="stock_query" maxlength="100"
                        aria-label="Words to look for"
                        placeholder="Words to look for (else the visual prompt's)"
                        prop:value=move || query.get()
                        on:input=move |ev| query.set(event_target_value(&ev))/>
                    <select name="stock_kind" aria-label="Clips or photos"
                        on:change=move |ev| kind.set(StockKind::parse(&event_target_value(&ev)).unwrap_or_default())>
                        <option value="videos">"Clips"</option>
                        <option value="photos">"Photos"</option>
                    </select>
                    {move || (sources.with(|s| s.len()) > 1).then(|| view! {
                        <select name="stock_provider" aria-label="Library"
                            on:change=move |ev| provider.set(StockProvider::parse(&event_target_value(&ev)))>
                            {sources.get().into_iter().map(|p| view! { <option value=p.as_str()>{p.label()}</option> }).collect_view()}
                        </select>
                    })}
                    <button type="submit" disabled=move || search.pending().get()>
                        {move || if search.pending().get() { "Searching…" } else { "Search" }}</button>
                </form>
                {move || search.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
                {move || pick.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
                {move || last.get().map(|(_, found)| view! {
                    <p class="muted">
                        {format!("{} results for “{}” ({}) on ", found.total, found.query, found.orientation)}
                        <a href=found.provider.home() target="_blank" rel="noopener">{found.provider.label()}</a>
                        {move || pick.pending().get().then_some(" · Downloading and converting…")}
                    </p>
                })}
                <ul class="stock-results">
                    <For each=move || results.get() key=|c| c.pick.clone() children=move |c: StockCandidate| {
                        let token = c.pick.clone();
                        let length = c.duration_ms.map(|ms| format!(" · {:.0} s", ms as f64 / 1000.0));
                        view! {
                            <li>
                                <img src=c.preview_url alt=c.credit.line() loading="lazy"/>
                                <Credit credit=c.credit/>
                                <span class="muted">{format!("{}×{}", c.width, c.height)}{length}</span>
                                <button type="button" disabled=move || pick.pending().get()
                                    on:click=move |_| { pick.dispatch(token.clone()); }>"Use"</button>
                            </li>
                        }
                    }/>
                </ul>
                {move || last.get()
                    .filter(|(_, f)| f.page < f.provider.last_page()
                        && u64::from(f.page) * u64::from(limits::STOCK_PER_PAGE) < f.total)
                    .map(|((typed, kind, provider, page), _)| view! {
                        <button type="button" disabled=move || search.pending().get()
                            on:click=move |_| { search.dispatch((typed.clone(), kind, provider, page + 1)); }>"More results"</button>
                    })}
            </details>
        </Show>
    }
    // Type-erased: inside each scene's row its full type overflows the compiler's query
    // depth in a clean build.
    .into_any()
}
