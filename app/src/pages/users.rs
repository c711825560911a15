use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::{create_user, list_users, update_user};
use crate::components::ErrorBox;
use crate::model::{limits, CreateUserRequest, Role, UpdateUserRequest};

#[component]
pub fn UsersPage() -> impl IntoView {
    let email = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let admin = RwSignal::new(false);
    let create = Action::new(|req: &CreateUserRequest| create_user(req.clone()));
    let update = Action::new(|(id, req): &(i64, UpdateUserRequest)| update_user(*id, req.clone()));
    let users = Resource::new(
        move || (create.version().get(), update.version().get()),
        |_| list_users(),
    );
    Effect::new(move |_| {
        if let Some(Ok(_)) = create.value().get() {
            email.set(String::new());
            password.set(String::new());
        }
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let role = if admin.get_untracked() {
            Role::Admin
        } else {
            Role::Creator
        };
        create.dispatch(CreateUserRequest {
            email: email.get_untracked(),
            password: password.get_untracked(),
            role,
        });
    };
    view! {
        <Title text="Users"/>
        <h1>"Users"</h1>
        <form method="post" class="card" on:submit=on_submit>
            <h2>"Add a user"</h2>
            <div class="grid">
                <label class="field"><span>"E-mail"</span><input name="new_email" type="email" required bind:value=email/></label>
                <label class="field"><span>"Password"</span><input name="new_password" type="password" required
                    minlength=limits::PASSWORD_MIN_CHARS autocomplete="new-password" bind:value=password/></label>
            </div>
            <label class="checkbox"><input type="checkbox" name="new_admin" bind:checked=admin/>" Admin"</label>
            {move || create.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            <button type="submit" class="primary" disabled=move || create.pending().get()>"Add user"</button>
        </form>
        {move || update.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match users.await {
                    Ok(list) => view! {
                        <ul class="rows">
                            {list.into_iter().map(|u| {
                                let id = u.id;
                                let role_label = if u.role == Role::Admin { "admin" } else { "creator" };
                                let other = if u.role == Role::Admin { Role::Creator } else { Role::Admin };
                                view! {
                                    <li class="card row" class:disabled=u.disabled>
                                        <div><strong>{u.email}</strong>
                                            <p class="muted">{format!("{role_label}{} · since {}",
                                                if u.disabled { " · disabled" } else { "" }, u.created_at)}</p></div>
                                        <div class="actions">
                                            <button on:click=move |_| { update.dispatch((id, UpdateUserRequest { role: Some(other), disabled: None })); }>
                                                {if other == Role::Admin { "Make admin" } else { "Make creator" }}</button>
                                            <button class=if u.disabled { "" } else { "danger-outline" }
                                                on:click=move |_| { update.dispatch((id, UpdateUserRequest { role: None, disabled: Some(!u.disabled) })); }>
                                                {if u.disabled { "Enable" } else { "Disable" }}</button>
                                        </div>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any(),
                    Err(error) => view! { <ErrorBox error=error/> }.into_any(),
                }
            })}
        </Suspense>
    }
}
