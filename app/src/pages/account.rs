use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::{create_token, list_tokens, revoke_token, setup_admin, sign_in};
use crate::components::ErrorBox;
use crate::model::{limits, CreateTokenRequest, SetupRequest, SignInRequest};

/// Where to go after signing in: a local path only, never another site.
fn safe_next(next: Option<String>) -> String {
    next.filter(|n| {
        let mut chars = n.chars();
        // "/path" but not "//host" or "/\host"; no whitespace or control characters,
        // which browsers strip (turning "/\t/host" into "//host").
        chars.next() == Some('/')
            && !matches!(chars.next(), Some('/') | Some('\\'))
            && !n
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    })
    .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/library?page=2".into())), "/library?page=2");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "https://evil.example",
            "evil",
            "/\n/x",
        ] {
            assert_eq!(safe_next(Some(bad.into())), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let email = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let action = Action::new(|req: &SignInRequest| sign_in(req.clone()));
    Effect::new(move |_| {
        if let Some(Ok(_)) = action.value().get() {
            // A full load, so every part of the page sees the new session.
            let _ = window()
                .location()
                .set_href(&safe_next(query.read_untracked().get("next")));
        }
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        action.dispatch(SignInRequest {
            email: email.get_untracked(),
            password: password.get_untracked(),
        });
    };
    view! {
        <Title text="Sign in"/>
        <form method="post" class="card narrow" on:submit=on_submit>
            <h1>"Sign in"</h1>
            <label class="field"><span>"E-mail"</span>
                <input name="email" type="email" autocomplete="username" required bind:value=email/></label>
            <label class="field"><span>"Password"</span>
                <input name="password" type="password" autocomplete="current-password" required bind:value=password/></label>
            {move || action.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            <button type="submit" class="primary" disabled=move || action.pending().get()>"Sign in"</button>
        </form>
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let email = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let confirm = RwSignal::new(String::new());
    let code = RwSignal::new(String::new());
    let action = Action::new(|req: &SetupRequest| setup_admin(req.clone()));
    Effect::new(move |_| {
        if let Some(Ok(_)) = action.value().get() {
            let _ = window().location().set_href("/settings");
        }
    });
    let mismatch = move || !confirm.get().is_empty() && confirm.get() != password.get();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if !mismatch() {
            let code = code.get_untracked();
            action.dispatch(SetupRequest {
                email: email.get_untracked(),
                password: password.get_untracked(),
                setup_code: (!code.trim().is_empty()).then_some(code),
            });
        }
    };
    view! {
        <Title text="Set up"/>
        <form method="post" class="card narrow" on:submit=on_submit>
            <h1>"Welcome to CREVID"</h1>
            <p class="muted">"No account exists yet. Create the first admin: it can add creators and other admins, and set models, voices and keys."</p>
            <label class="field"><span>"E-mail"</span>
                <input name="email" type="email" autocomplete="username" required bind:value=email/></label>
            <label class="field"><span>"Password"</span>
                <input name="password" type="password" autocomplete="new-password" required
                    minlength=limits::PASSWORD_MIN_CHARS bind:value=password/>
                <small class="muted">{format!("At least {} characters.", limits::PASSWORD_MIN_CHARS)}</small></label>
            <label class="field"><span>"Repeat the password"</span>
                <input name="confirm" type="password" autocomplete="new-password" required bind:value=confirm/></label>
            <Show when=mismatch><p class="error">"The passwords differ."</p></Show>
            <label class="field"><span>"Set-up code"</span>
                <input name="setup_code" type="text" autocomplete="off" bind:value=code/>
                <small class="muted">"Only when the server can be reached from other machines: it prints the code in its log at start."</small></label>
            {move || action.value().get().and_then(|r| r.err()).map(|error| view! { <ErrorBox error=error/> })}
            <button type="submit" class="primary" disabled=move || action.pending().get()>"Create admin and sign in"</button>
        </form>
    }
}

#[component]
pub fn TokensPage() -> impl IntoView {
    let name = RwSignal::new(String::new());
    let create = Action::new(|req: &CreateTokenRequest| create_token(req.clone()));
    let revoke = Action::new(|id: &i64| revoke_token(*id));
    let tokens = Resource::new(
        move || (create.version().get(), revoke.version().get()),
        |_| list_tokens(),
    );
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        create.dispatch(CreateTokenRequest {
            name: name.get_untracked(),
        });
        name.set(String::new());
    };
    view! {
        <Title text="API tokens"/>
        <h1>"API tokens"</h1>
        <p class="muted">"Use a token as " <code>"Authorization: Bearer …"</code> " with the REST API. It acts as you, with your rights."</p>
        <form method="post" class="card search" on:submit=on_submit>
            <input name="token_name" placeholder="What is it for? e.g. my upload script" required
                maxlength=limits::TOKEN_NAME_MAX_CHARS bind:value=name/>
            <button type="submit" class="primary">"Create token"</button>
        </form>
        {move || create.value().get().map(|result| match result {
            Ok(created) => view! {
                <div class="card secret" data-testid="new-token">
                    <p><strong>"Copy it now: it is shown only this once."</strong></p>
                    <code>{created.secret}</code>
                </div>
            }.into_any(),
            Err(error) => view! { <ErrorBox error=error/> }.into_any(),
        })}
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match tokens.await {
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No tokens yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <ul class="rows">
                            {list.into_iter().map(|t| view! {
                                <li class="card row">
                                    <div><strong>{t.name}</strong>
                                        <p class="muted">{format!("{}… · created {} · last used {}", t.prefix, t.created_at,
                                            t.last_used_at.unwrap_or_else(|| "never".into()))}</p></div>
                                    <button class="danger-outline" on:click=move |_| { revoke.dispatch(t.id); }>"Revoke"</button>
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
