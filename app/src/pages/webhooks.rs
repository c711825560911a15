//! The Webhooks page: a user's endpoints, their secrets (shown when made or rotated), and
//! each endpoint's deliveries with a Redeliver button.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{
    create_webhook, delete_webhook, list_webhooks, redeliver_webhook, rotate_webhook_secret,
    update_webhook, webhook_deliveries,
};
use crate::components::ErrorBox;
use crate::model::{
    limits, CreateWebhookRequest, UpdateWebhookRequest, WebhookDeliveryView, WebhookEndpointView,
    WebhookEvent, WebhookWithSecret,
};

/// What each event is, for the checkboxes.
fn event_label(event: WebhookEvent) -> &'static str {
    match event {
        WebhookEvent::JobCompleted => "a job finished with every scene done",
        WebhookEvent::JobFailed => "a job finished with a failure",
        WebhookEvent::VideoReady => "a video was rendered",
        WebhookEvent::ContentDeleted => "a content was deleted",
    }
}

#[component]
pub fn WebhooksPage() -> impl IntoView {
    let url = RwSignal::new(String::new());
    let description = RwSignal::new(String::new());
    let chosen = RwSignal::new(WebhookEvent::ALL.to_vec());
    let create = Action::new(|req: &CreateWebhookRequest| create_webhook(req.clone()));
    // Anything that changes the list (an edit, a rotation, a deletion) bumps this.
    let changed = RwSignal::new(0u32);
    // The secret just made or rotated, shown once.
    let secret = RwSignal::new(None::<WebhookWithSecret>);
    Effect::new(move |_| {
        if let Some(Ok(made)) = create.value().get() {
            secret.set(Some(made));
            url.set(String::new());
            description.set(String::new());
        }
    });
    let endpoints = Resource::new(
        move || (create.version().get(), changed.get()),
        |_| list_webhooks(),
    );
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        create.dispatch(CreateWebhookRequest {
            url: url.get_untracked(),
            events: Some(chosen.get_untracked()),
            description: Some(description.get_untracked()),
        });
    };
    view! {
        <Title text="Webhooks"/>
        <h1>"Webhooks"</h1>
        <p class="muted">
            "CREVID calls your URL when a job ends, a video is ready or a content is deleted. Each call is signed as "
            <a href="https://www.standardwebhooks.com" rel="noreferrer">"Standard Webhooks"</a>
            " describe (" <code>"webhook-id"</code> ", " <code>"webhook-timestamp"</code> ", "
            <code>"webhook-signature"</code> "): check it with their library and your endpoint's secret. "
            "Calls that fail are retried with growing waits."
        </p>
        <form method="post" class="card webhook-form" on:submit=on_submit>
            <label>"URL"
                <input name="webhook_url" type="url" placeholder="https://example.com/hooks/crevid" required
                    maxlength=limits::WEBHOOK_URL_MAX_CHARS bind:value=url/></label>
            <label>"Description (optional)"
                <input name="webhook_description" placeholder="e.g. post new videos to our channel"
                    maxlength=limits::WEBHOOK_DESCRIPTION_MAX_CHARS bind:value=description/></label>
            <fieldset>
                <legend>"Events"</legend>
                {WebhookEvent::ALL.into_iter().map(|event| view! {
                    <label class="checkbox">
                        <input type="checkbox" name="webhook_event" value=event.as_str()
                            prop:checked=move || chosen.get().contains(&event)
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                chosen.update(|list| {
                                    list.retain(|e| *e != event);
                                    if on { list.push(event); }
                                });
                            }/>
                        <code>{event.as_str()}</code> " — " {event_label(event)}
                    </label>
                }).collect_view()}
            </fieldset>
            <button type="submit" class="primary" disabled=move || create.pending().get()>"Add endpoint"</button>
        </form>
        {move || create.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
        {move || secret.get().map(|made| view! {
            <div class="card secret" data-testid="webhook-secret">
                <p><strong>{format!("Signing secret of {}: copy it now, it is shown only this once.", made.endpoint.url)}</strong></p>
                <code>{made.secret}</code>
            </div>
        })}
        // A Transition, not a Suspense: an edit keeps the list (and any open deliveries)
        // on screen while it reloads.
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match endpoints.await {
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No endpoints yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <ul class="rows">
                            {list.into_iter().map(|endpoint| view! {
                                <Endpoint endpoint=endpoint changed=changed secret=secret/>
                            }).collect_view()}
                        </ul>
                    }.into_any(),
                    Err(error) => view! { <ErrorBox error=error/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn Endpoint(
    endpoint: WebhookEndpointView,
    changed: RwSignal<u32>,
    secret: RwSignal<Option<WebhookWithSecret>>,
) -> impl IntoView {
    let id = endpoint.id;
    let enabled = endpoint.enabled;
    let toggle = Action::new(move |on: &bool| {
        update_webhook(
            id,
            UpdateWebhookRequest {
                enabled: Some(*on),
                ..Default::default()
            },
        )
    });
    let rotate = Action::new(move |_: &()| rotate_webhook_secret(id));
    let remove = Action::new(move |_: &()| delete_webhook(id));
    Effect::new(move |_| {
        if let Some(Ok(_)) = toggle.value().get() {
            changed.update(|n| *n += 1);
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(made)) = rotate.value().get() {
            secret.set(Some(made));
            changed.update(|n| *n += 1);
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = remove.value().get() {
            changed.update(|n| *n += 1);
        }
    });
    let open = RwSignal::new(false);
    // Rotating or deleting asks first: a rotation within a day of the last one ends the
    // older secret at once, and a deletion takes the delivery history with it.
    let confirming = RwSignal::new(None::<&'static str>);
    let events = endpoint
        .events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let rotated = endpoint
        .previous_secret_expires_at
        .map(|until| format!(" · the previous secret also signs until {until}"));
    view! {
        <li class="card row webhook" data-testid="webhook">
            <div>
                <strong>{endpoint.url}</strong>
                {(!enabled).then(|| view! { <span class="badge failed">"disabled"</span> })}
                {(!endpoint.description.is_empty()).then(|| view! { <p>{endpoint.description.clone()}</p> })}
                <p class="muted">{format!("{events} · added {}", endpoint.created_at)}{rotated}</p>
                {move || toggle.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
                {move || rotate.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
                {move || remove.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
                {move || open.get().then(|| view! { <Deliveries endpoint_id=id enabled=enabled/> })}
            </div>
            <div class="actions">
                <button type="button" on:click=move |_| open.update(|o| *o = !*o)>
                    {move || if open.get() { "Hide deliveries" } else { "Deliveries" }}
                </button>
                <button type="button" on:click=move |_| { toggle.dispatch(!enabled); }>
                    {if enabled { "Disable" } else { "Enable" }}
                </button>
                {move || match confirming.get() {
                    Some("rotate") => view! {
                        <span class="confirm">"A new secret; the current one signs beside it for 24 hours. "
                            <button type="button" class="primary" disabled=move || rotate.pending().get()
                                on:click=move |_| { confirming.set(None); rotate.dispatch(()); }>"Rotate"</button>
                            <button type="button" on:click=move |_| confirming.set(None)>"Cancel"</button>
                        </span>
                    }.into_any(),
                    Some(_) => view! {
                        <span class="confirm">"Delete this endpoint and its deliveries? "
                            <button type="button" class="danger" disabled=move || remove.pending().get()
                                on:click=move |_| { confirming.set(None); remove.dispatch(()); }>"Yes, delete"</button>
                            <button type="button" on:click=move |_| confirming.set(None)>"Cancel"</button>
                        </span>
                    }.into_any(),
                    None => view! {
                        <button type="button" disabled=move || rotate.pending().get()
                            on:click=move |_| confirming.set(Some("rotate"))>"Rotate secret"</button>
                        <button type="button" class="danger-outline"
                            on:click=move |_| confirming.set(Some("delete"))>"Delete"</button>
                    }.into_any(),
                }}
            </div>
        </li>
    }
}

fn pending(delivery: &WebhookDeliveryView) -> bool {
    delivery.status == "pending"
}

/// The endpoint's deliveries, polled every 2 s while one is pending.
#[component]
fn Deliveries(endpoint_id: i64, enabled: bool) -> impl IntoView {
    let latest = RwSignal::new(Vec::<WebhookDeliveryView>::new());
    let loaded = RwSignal::new(false);
    let load = Action::new(move |_: &()| webhook_deliveries(endpoint_id));
    let redeliver =
        Action::new(move |delivery_id: &i64| redeliver_webhook(endpoint_id, *delivery_id));
    Effect::new(move |_| {
        redeliver.version().track();
        load.dispatch(());
    });
    Effect::new(move |_| {
        if load.value().with(Option::is_some) {
            loaded.set(true);
        }
    });
    super::jobs::keep_polling(load, latest, pending);
    view! {
        <div class="deliveries" data-testid="deliveries">
            <button type="button" on:click=move |_| { load.dispatch(()); }>"Refresh"</button>
            {move || redeliver.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            {move || load.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            {move || {
                let rows = latest.get();
                if !loaded.get() {
                    return view! { <p class="muted">"Loading…"</p> }.into_any();
                }
                if rows.is_empty() {
                    return view! { <p class="empty">"Nothing sent yet."</p> }.into_any();
                }
                view! {
                    <table>
                        <thead><tr><th>"Event"</th><th>"Status"</th><th>"Attempts"</th><th>"Answer"</th><th>"Sent"</th><th></th></tr></thead>
                        <tbody>
                            {rows.into_iter().map(|d| {
                                let id = d.id;
                                let waiting = pending(&d);
                                let answer = match (d.response_status, d.last_error) {
                                    (_, Some(error)) if d.status != "succeeded" => error,
                                    (Some(code), _) => code.to_string(),
                                    (None, _) => "—".into(),
                                };
                                view! {
                                    <tr data-testid="delivery">
                                        <td><code>{d.event.as_str()}</code></td>
                                        <td><span class=format!("badge {}", d.status)>{d.status.clone()}</span></td>
                                        <td>{d.attempts}</td>
                                        <td class="muted">{answer}</td>
                                        <td class="muted" title=d.message_id>{d.delivered_at.unwrap_or(d.created_at)}</td>
                                        <td>{(enabled && !waiting).then(|| view! {
                                            <button type="button" on:click=move |_| { redeliver.dispatch(id); }>"Redeliver"</button>
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </div>
    }
    .into_any()
}
