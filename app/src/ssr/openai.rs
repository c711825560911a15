//! One way to build an async-openai client for any capability: our shared reqwest pool, a
//! per-request timeout, no hidden retries (the engine and the creator decide), and a record
//! of the last answer's status and `Retry-After`, which async-openai's errors do not keep.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::Client;

/// What the transport saw of the last answer.
#[derive(Default, Debug, Clone, Copy)]
pub struct Seen {
    pub status: Option<u16>,
    pub retry_after: Option<u64>,
}

#[derive(Clone, Default)]
pub struct LastAnswer(Arc<Mutex<Seen>>);

impl LastAnswer {
    pub fn get(&self) -> Seen {
        self.0.lock().map(|g| *g).unwrap_or_default()
    }
}

pub fn client(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    timeout: Duration,
) -> (Client<OpenAIConfig>, LastAnswer) {
    let seen = LastAnswer::default();
    let service = {
        let http = http.clone();
        let seen = seen.clone();
        tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            let seen = seen.clone();
            async move {
                let mut request = factory.build().await?;
                *request.timeout_mut() = Some(timeout);
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if let Ok(mut seen) = seen.0.lock() {
                    *seen = Seen {
                        status: Some(response.status().as_u16()),
                        retry_after,
                    };
                }
                Ok::<_, OpenAIError>(response)
            }
        })
    };
    let config = OpenAIConfig::new()
        .with_api_base(base_url.to_owned())
        .with_api_key(api_key.to_owned());
    (
        Client::build(http.clone(), config).with_http_service(service),
        seen,
    )
}
