//! The status page: is each thing the product depends on working, in plain words.

use std::time::{Duration, Instant};

use super::qstash::{AccountStatus, KeyCheck};
use super::settings;
use super::state::AppState;
use crate::error::AppError;
use crate::model::{StatusCheck, StatusReport, Verdict};

fn check(
    name: &str,
    verdict: Verdict,
    message: impl Into<String>,
    started: Instant,
) -> StatusCheck {
    StatusCheck {
        name: name.to_owned(),
        verdict,
        message: message.into(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

async fn database(state: &AppState) -> StatusCheck {
    let started = Instant::now();
    let name = format!("Database ({})", state.db.backend.name());
    match sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM contents")
        .fetch_one(state.pool())
        .await
    {
        Ok(n) => check(
            &name,
            Verdict::Ok,
            format!("Connected; {n} contents stored."),
            started,
        ),
        Err(e) => {
            tracing::error!(error = %e, "status: database check failed");
            check(
                &name,
                Verdict::Error,
                "The database does not answer. Check DATABASE_URL and that the server is up.",
                started,
            )
        }
    }
}

async fn language_model(state: &AppState) -> StatusCheck {
    let started = Instant::now();
    let name = "Language model";
    let (values, key) = match (
        settings::values(state).await,
        settings::llm_api_key(state).await,
    ) {
        (Ok(v), Ok(k)) => (v, k),
        _ => {
            return check(
                name,
                Verdict::Error,
                "Settings could not be read from the database.",
                started,
            )
        }
    };
    let Some(key) = key else {
        return check(
            name,
            Verdict::Warning,
            format!(
                "No API key is set for {}: writing scripts from a topic is off. \"Use my script\" still works. \
                 Add a key in Settings.",
                values.llm_base_url
            ),
            started,
        );
    };
    let url = format!("{}/models", values.llm_base_url);
    let timeout = Duration::from_secs(u64::from(values.llm_timeout_secs.min(10)));
    let response = state
        .http
        .get(&url)
        .bearer_auth(&key)
        .timeout(timeout)
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => {
            let listed =
                super::openai::read_capped(r, super::openai::JSON_ANSWER_MAX_BYTES, "model list")
                    .await
                    .ok()
                    .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
                    .and_then(|v| v.get("data").and_then(|d| d.as_array()).cloned())
                    .unwrap_or_default();
            let has_model = listed
                .iter()
                .any(|m| m.get("id").and_then(|i| i.as_str()) == Some(values.llm_model.as_str()));
            if listed.is_empty() || has_model {
                check(
                    name,
                    Verdict::Ok,
                    format!(
                        "Reachable at {}; the key is accepted; model {}.",
                        values.llm_base_url, values.llm_model
                    ),
                    started,
                )
            } else {
                check(
                    name,
                    Verdict::Warning,
                    format!(
                        "Reachable and the key is accepted, but the model {} is not among the {} models it lists. \
                         Check the model name in Settings.",
                        values.llm_model,
                        listed.len()
                    ),
                    started,
                )
            }
        }
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => check(
            name,
            Verdict::Error,
            format!(
                "{} rejects the API key. Set a valid key in Settings.",
                values.llm_base_url
            ),
            started,
        ),
        Ok(r) => check(
            name,
            Verdict::Warning,
            format!(
                "{} answered {} to a model list request; script generation may still work.",
                values.llm_base_url,
                r.status()
            ),
            started,
        ),
        Err(e) if e.is_timeout() => check(
            name,
            Verdict::Error,
            format!(
                "{} did not answer within {} s.",
                values.llm_base_url,
                timeout.as_secs()
            ),
            started,
        ),
        Err(_) => check(
            name,
            Verdict::Error,
            format!(
                "Cannot reach {}. Check the base URL in Settings and the network.",
                values.llm_base_url
            ),
            started,
        ),
    }
}

async fn tool(name: &str, program: &str, arg: &str, needed_for: &str) -> StatusCheck {
    let started = Instant::now();
    let run = tokio::process::Command::new(program)
        .arg(arg)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(out)) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next().unwrap_or_default().trim().to_owned();
            check(name, Verdict::Ok, format!("Installed: {first}"), started)
        }
        Ok(Ok(out)) => check(name, Verdict::Error, format!("{program} is installed but failed to run ({}).", out.status), started),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => check(
            name,
            Verdict::Error,
            format!("{program} is not installed, so {needed_for} will not work. Install it with `apt-get install {program}` (scripts/setup.sh does)."),
            started,
        ),
        Ok(Err(e)) => check(name, Verdict::Error, format!("{program} cannot be started: {e}"), started),
        Err(_) => check(name, Verdict::Error, format!("{program} did not answer within 5 s."), started),
    }
}

/// How background tasks reach workers, and for QStash whether it is reachable, how many
/// tasks wait to be published and when the last delivery came.
async fn transport(state: &AppState) -> StatusCheck {
    let started = Instant::now();
    let name = "Background tasks";
    let Some(q) = &state.qstash else {
        return check(
            name,
            Verdict::Ok,
            "Embedded queue: workers in this server run pictures, narration and renders.",
            started,
        );
    };
    let ago = |at: Option<i64>| match at {
        Some(at) => format!("{} s ago", (super::db::now_ms() - at).max(0) / 1000),
        None => "none yet".to_owned(),
    };
    let (account, outbox) =
        tokio::join!(super::qstash::account(state), super::qstash::status(state));
    let outbox = match outbox {
        Ok(Some(o)) => o,
        _ => {
            return check(
                name,
                Verdict::Error,
                "The outbox could not be read from the database.",
                started,
            )
        }
    };
    let mut summary = format!(
        "QStash at {} calling {}/api/workers/…; outbox: {} waiting to be published; last publish {}; last delivery {}.",
        q.config.url,
        q.base,
        outbox.outbox_depth,
        ago(outbox.last_publish_ms),
        ago(outbox.last_delivery_ms),
    );
    let account = match account {
        Ok(Some(account)) => account,
        Ok(None) => return check(name, Verdict::Ok, summary, started),
        Err(e) => {
            return check(
                name,
                Verdict::Error,
                format!("{e}. {summary} Tasks wait in the outbox until QStash answers."),
                started,
            )
        }
    };
    summary.push_str(&account_summary(&account));
    // The worst finding speaks first; every one is said.
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    match account.keys {
        KeyCheck::Match | KeyCheck::Unknown => {}
        KeyCheck::Mismatch => errors.push(
            "QStash's current signing key is neither QSTASH_CURRENT_SIGNING_KEY nor QSTASH_NEXT_SIGNING_KEY: \
             every delivery is refused. Copy both keys from the Upstash console and restart."
                .to_owned(),
        ),
        KeyCheck::Rolled => warnings.push(
            "QStash rolled its signing keys: its current key is your QSTASH_NEXT_SIGNING_KEY, so deliveries \
             still verify, but after the next roll they will not. Copy both keys from the Upstash console and restart."
                .to_owned(),
        ),
        KeyCheck::WrongNext => warnings.push(
            "QSTASH_NEXT_SIGNING_KEY is not QStash's next signing key: after the next key roll every delivery \
             would be refused. Copy it from the Upstash console."
                .to_owned(),
        ),
        KeyCheck::NoNextKey => warnings.push(
            "QSTASH_NEXT_SIGNING_KEY is not set: after QStash rolls its keys every delivery would be refused."
                .to_owned(),
        ),
    }
    if let Some(cap) = account.retries_cap {
        let deliveries = i64::from(cap) + 1;
        warnings.push(format!(
            "QStash refused CREVID_QSTASH_RETRIES={} as more than the account's plan allows: messages are \
             published with {cap} retries{}. Set CREVID_QSTASH_RETRIES={cap} to say so yourself, or after \
             upgrading the plan restart to use {} again.",
            q.config.retries,
            if deliveries < super::jobs::MAX_ATTEMPTS {
                format!(
                    ", so QStash delivers a task {deliveries} times at most, fewer than its {} attempts",
                    super::jobs::MAX_ATTEMPTS
                )
            } else {
                String::new()
            },
            q.config.retries,
        ));
    }
    if let Some(error) = &account.pin_error {
        warnings.push(format!(
            "The limits per kind could not be pinned in QStash ({error}): a lowered limit holds only for \
             work queued from now."
        ));
    }
    if let Err(e) = &account.dead_letters {
        warnings.push(format!("The dead-letter queue could not be read: {e}."));
    }
    if let Err(e) = &account.flows {
        warnings.push(format!(
            "The flow-control wait lists could not be read: {e}."
        ));
    }
    if let Some(error) = outbox
        .last_publish_error
        .filter(|_| outbox.outbox_depth > 0)
    {
        warnings.push(format!("Publishing is being retried: {error}."));
    }
    // Published, yet no delivery came within the lease: QStash is refusing to deliver or
    // its deliveries are refused here (signing keys, clock), or they wait their turn under
    // flow control. The relay publishes them again and finally fails them; say so now.
    if outbox.stuck_tasks > 0 {
        warnings.push(format!(
            "{} task(s) published to QStash but not delivered within the lease of {} s; the oldest has waited {} s. \
             If this stays, deliveries are being refused: check QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY \
             and the server clock (refused deliveries are logged as \"refused a QStash delivery\"); a large job under \
             flow control also waits here.",
            outbox.stuck_tasks,
            state.timing.lease_ms / 1000,
            outbox.oldest_stuck_ms.unwrap_or(0) / 1000,
        ));
    }
    let (verdict, findings) = if !errors.is_empty() {
        (Verdict::Error, [errors, warnings].concat())
    } else if !warnings.is_empty() {
        (Verdict::Warning, warnings)
    } else {
        (Verdict::Ok, Vec::new())
    };
    let mut message = findings.join(" ");
    if !message.is_empty() {
        message.push(' ');
    }
    message.push_str(&summary);
    check(name, verdict, message, started)
}

/// QStash's limits on a kind, as an admin set them: `(at most 2 at once, 10 a minute)`.
fn limits_text(parallelism: Option<i64>, rate: Option<(i64, i64)>) -> String {
    let mut parts = Vec::new();
    if let Some(p) = parallelism {
        parts.push(format!("at most {p} at once"));
    }
    if let Some((rate, period)) = rate {
        parts.push(match period {
            60 => format!("{rate} a minute"),
            1 => format!("{rate} a second"),
            s => format!("{rate} every {s} s"),
        });
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// What a kind of task is, in an admin's words.
fn kind_name(kind: &str) -> &'static str {
    match kind {
        super::jobs::SCENE_IMAGE => "pictures",
        super::jobs::SCENE_AUDIO => "narration",
        super::jobs::SCENE_FOOTAGE => "stock footage",
        super::jobs::WEBHOOK_DELIVERY => "webhook deliveries",
        _ => "renders",
    }
}

/// The account's side, in a sentence or two: what waits under flow control, and the
/// dead-letter queue.
fn account_summary(account: &AccountStatus) -> String {
    let mut out = String::new();
    if let Ok(flows) = &account.flows {
        let flows: Vec<String> = flows
            .iter()
            .map(|f| {
                format!(
                    "{} {} waiting{}",
                    kind_name(f.kind),
                    f.wait_list,
                    limits_text(f.parallelism, f.rate)
                )
            })
            .collect();
        if !flows.is_empty() {
            out.push_str(&format!(
                " Waiting for their turn in QStash: {}.",
                flows.join(", ")
            ));
        }
    }
    if let Ok((n, more)) = account.dead_letters {
        out.push_str(&format!(
            " In QStash's dead-letter queue: {n}{} message(s) of this installation{}.",
            if more { "+" } else { "" },
            if n > 0 {
                " (their tasks show why they failed; the Upstash console shows the messages)"
            } else {
                ""
            }
        ));
    }
    out
}

async fn media_storage(state: &AppState) -> StatusCheck {
    let started = Instant::now();
    match state.storage.check().await {
        Ok(message) => check("Media storage", Verdict::Ok, message, started),
        Err(message) => {
            tracing::error!(error = %message, "status: media storage check failed");
            check("Media storage", Verdict::Error, message, started)
        }
    }
}

pub async fn report(state: &AppState) -> Result<StatusReport, AppError> {
    let (db, llm, queue, ffmpeg, espeak, media) = tokio::join!(
        database(state),
        language_model(state),
        transport(state),
        tool("ffmpeg", "ffmpeg", "-version", "video render"),
        tool("espeak-ng", "espeak-ng", "--version", "offline narration"),
        media_storage(state),
    );
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        database: state.db.backend.name().to_owned(),
        checks: vec![db, llm, queue, ffmpeg, espeak, media],
        recent_failures: super::jobs::recent_failures(state, 10).await?,
    })
}
