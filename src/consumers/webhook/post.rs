//! Sending one batch: the signed POST with its per-request timeout, and the retry schedule (exponential
//! backoff with jitter, capped). What an answer means is decided here once: 2xx delivered, 410 the receiver
//! is gone for good, anything else (another status, a refused connection, a timeout) a failure to retry.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::batch::{signature, WebhookBatch};
use super::standard::SigningKey;
use crate::config::Webhook;

/// The first retry's delay; each next one doubles, up to `--webhook-max-backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Most bytes of a receiver's answer read (to reuse the connection); the rest is dropped with it.
const MAX_ANSWER: usize = 64 * 1024;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// 410: the receiver asks for no more deliveries.
    Gone,
    /// Worth retrying; the label for `relay_webhook_failures_total{status}`.
    Failed(String),
}

/// The pooled HTTP/1.1 client of one deliverer (connections to the receiver are kept alive).
#[derive(Clone)]
pub struct Poster {
    client: Client<HttpConnector, Full<Bytes>>,
    webhook: Webhook,
    /// The Standard Webhooks key of `--webhook-secret` (checked when the configuration was read).
    key: SigningKey,
}

impl Poster {
    pub fn new(webhook: Webhook) -> Poster {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(webhook.timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let key = SigningKey::from_secret(webhook.secret.expose()).expect("--webhook-secret was checked when read");
        Poster { client, webhook, key }
    }

    /// One attempt of `batch`, given at most `within` (the webhook's timeout, or less when the lease ends
    /// sooner).
    pub async fn post(&self, batch: &WebhookBatch, body: &Bytes, within: Duration) -> Answer {
        // Standard Webhooks: the id is the batch's key; the time and the signature are this attempt's.
        let (id, timestamp) = (batch.idempotency_key(), crate::clock::now_ms().max(0) as u64 / 1000);
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.webhook.url.uri().clone())
            .header("content-type", "application/json")
            .header("x-relay-signature", signature(self.webhook.secret.expose(), body))
            .header("webhook-signature", self.key.sign(&id, timestamp, body))
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp)
            .header("idempotency-key", id)
            .header("user-agent", concat!("canvas-relay/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body.clone()))
            .expect("a request of a valid URI and ASCII headers builds");
        let attempt = async {
            let response = self.client.request(request).await.map_err(|error| {
                let label = if error.is_connect() { "connect" } else { "request" };
                tracing::debug!(%error, "webhook request failed");
                label.to_owned()
            })?;
            let status = response.status();
            // Read a little of the answer so the connection goes back to the pool.
            let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER).collect().await;
            Ok::<StatusCode, String>(status)
        };
        match tokio::time::timeout(within, attempt).await {
            Err(_) => Answer::Failed("timeout".to_owned()),
            Ok(Err(label)) => Answer::Failed(label),
            Ok(Ok(status)) if status.is_success() => Answer::Delivered,
            Ok(Ok(StatusCode::GONE)) => Answer::Gone,
            Ok(Ok(status)) => Answer::Failed(status.as_u16().to_string()),
        }
    }

    /// How long to wait before attempt `failures + 1`: `FIRST_BACKOFF × 2^(failures − 1)` capped at
    /// `--webhook-max-backoff`, of which a random half ("equal jitter"), so that canvases failing together
    /// do not retry together.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exponential = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(20));
        let capped = exponential.min(self.webhook.max_backoff);
        capped / 2 + capped.mul_f64(random_fraction() / 2.0)
    }
}

/// A number in [0, 1): the standard library's randomly keyed hasher, hashing nothing.
fn random_fraction() -> f64 {
    (RandomState::new().hash_one(()) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let args = ["canvas-relay", "serve", "--webhook-url", "http://h/", "--webhook-secret", "s"];
        let crate::config::Command::Serve(mut config) =
            crate::config::Cli::try_parse_resolved_from(args).unwrap().command;
        config.consumers.webhook_max_backoff = Duration::from_secs(1);
        let poster = Poster::new(config.consumers.webhook().unwrap().unwrap());
        for (failures, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (30, 1000)] {
            let wait = poster.backoff(failures);
            let full = Duration::from_millis(full);
            assert!(wait >= full / 2 && wait <= full, "{failures} failures: {wait:?} not within half of {full:?}");
        }
    }
}
