//! The knobs of the server-side consumers: the webhook (`--webhook-*`) and the event stream (`--stream-*`).

use std::time::Duration;

use clap::Args;

use super::webhook_url::WebhookUrlParser;
use super::{Secret, WebhookUrl};

#[derive(Debug, Clone, Args)]
pub struct ConsumerConfig {
    /// Where every logged message is POSTed, per canvas in seq order, in signed batches (http:// only; put a
    /// TLS proxy beside the receiver for https). Off when unset. Every instance of one store takes the same
    /// webhook flags. Logs and /health show it without its userinfo and query (`http://***@host/path?***`).
    // `hide_env_values`: the URL may hold a password or a token, which `--help` would otherwise print.
    #[arg(long, env = "RELAY_WEBHOOK_URL", value_name = "URL", hide_env_values = true, value_parser = WebhookUrlParser)]
    pub webhook_url: Option<WebhookUrl>,

    /// The HMAC-SHA256 key of `X-Relay-Signature` and of the Standard Webhooks `webhook-signature` (for
    /// which a `whsec_` secret is base64 after the prefix); required with --webhook-url.
    #[arg(long, env = "RELAY_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Only these message types are delivered (comma-separated; `object-*` is a prefix); the others advance the
    /// position silently. Unset: every type.
    #[arg(long, env = "RELAY_WEBHOOK_TYPES", value_name = "TYPES", value_delimiter = ',')]
    pub webhook_types: Vec<String>,

    /// Most messages in one webhook request.
    #[arg(long, env = "RELAY_WEBHOOK_BATCH", value_name = "N", default_value_t = 100)]
    pub webhook_batch: usize,

    /// How long a batch that is not full waits for more messages, after its first was committed.
    #[arg(long, env = "RELAY_WEBHOOK_LINGER", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub webhook_linger: Duration,

    /// Longest wait between two attempts of a batch (retries back off exponentially, with jitter, up to this).
    #[arg(long, env = "RELAY_WEBHOOK_MAX_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub webhook_max_backoff: Duration,

    /// How long one webhook request may take before it counts as failed and is retried.
    #[arg(long, env = "RELAY_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// Most webhook requests in flight at once on this instance, across all canvases (each holds a
    /// connection to the receiver); canvases beyond it wait their turn, in order.
    #[arg(long, env = "RELAY_WEBHOOK_CONCURRENCY", value_name = "N", default_value_t = 16)]
    pub webhook_concurrency: usize,

    /// How long messages the webhook has not delivered are kept past --message-ttl; older ones become a gap.
    #[arg(long, env = "RELAY_WEBHOOK_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub webhook_retention: Duration,

    /// Undelivered messages (on the canvases this instance delivers) past which /health warns.
    #[arg(long, env = "RELAY_WEBHOOK_LAG_WARNING", value_name = "N", default_value_t = 10_000)]
    pub webhook_lag_warning: u64,

    /// Events buffered for one reader of GET /api/v1/stream; a reader that lets it fill is disconnected and
    /// resumes with Last-Event-ID.
    #[arg(long, env = "RELAY_STREAM_BUFFER", value_name = "N", default_value_t = 1000)]
    pub stream_buffer: usize,

    /// How often an idle event stream gets a keep-alive comment.
    #[arg(long, env = "RELAY_STREAM_KEEPALIVE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub stream_keepalive: Duration,
}

/// The webhook as configured: checked once at start.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Shown redacted; [`WebhookUrl::uri`] for the request.
    pub url: WebhookUrl,
    pub secret: Secret,
    /// Types delivered (a trailing `*` is a prefix); empty: all.
    pub types: Vec<String>,
    pub batch: usize,
    pub linger: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    /// Requests in flight at once (`--webhook-concurrency`).
    pub concurrency: usize,
    pub retention: Duration,
    pub lag_warning: u64,
}

impl ConsumerConfig {
    /// The webhook, if one is configured; an error says which flag to fix.
    pub fn webhook(&self) -> anyhow::Result<Option<Webhook>> {
        let Some(url) = &self.webhook_url else {
            anyhow::ensure!(self.webhook_secret.is_none(), "--webhook-secret is set but --webhook-url is not");
            return Ok(None);
        };
        anyhow::ensure!(
            url.uri().scheme_str() == Some("http") && url.uri().host().is_some(),
            "--webhook-url {url} must be an http:// URL with a host (https: run a TLS proxy beside the receiver)"
        );
        let secret = match &self.webhook_secret {
            Some(secret) if !secret.expose().is_empty() => secret.clone(),
            _ => {
                anyhow::bail!("--webhook-url needs --webhook-secret (RELAY_WEBHOOK_SECRET): receivers check signatures")
            }
        };
        crate::consumers::webhook::standard::SigningKey::from_secret(secret.expose()).map_err(anyhow::Error::msg)?;
        anyhow::ensure!((1..=10_000).contains(&self.webhook_batch), "--webhook-batch must be between 1 and 10000");
        anyhow::ensure!(
            (1..=10_000).contains(&self.webhook_concurrency),
            "--webhook-concurrency must be between 1 and 10000"
        );
        for (flag, value) in [
            ("--webhook-linger", self.webhook_linger),
            ("--webhook-max-backoff", self.webhook_max_backoff),
            ("--webhook-timeout", self.webhook_timeout),
            ("--webhook-retention", self.webhook_retention),
        ] {
            anyhow::ensure!(!value.is_zero(), "{flag} must be above zero");
        }
        let types = self.webhook_types.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
        Ok(Some(Webhook {
            url: url.clone(),
            secret,
            types,
            batch: self.webhook_batch,
            linger: self.webhook_linger,
            max_backoff: self.webhook_max_backoff,
            timeout: self.webhook_timeout,
            concurrency: self.webhook_concurrency,
            retention: self.webhook_retention,
            lag_warning: self.webhook_lag_warning,
        }))
    }

    /// Checks the stream's knobs and the webhook's.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.stream_buffer >= 1, "--stream-buffer must be at least 1");
        anyhow::ensure!(!self.stream_keepalive.is_zero(), "--stream-keepalive must be above zero");
        self.webhook().map(drop)
    }

    /// How long a store keeps messages the webhook has not delivered (`None`: no webhook, only the TTL).
    pub fn retention(&self) -> Option<Duration> {
        self.webhook_url.is_some().then_some(self.webhook_retention)
    }
}

impl Webhook {
    /// Whether messages of `kind` are delivered.
    pub fn delivers(&self, kind: &str) -> bool {
        self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => kind.starts_with(prefix),
                None => t == kind,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(args: &[&str]) -> anyhow::Result<Option<Webhook>> {
        let mut all = vec!["canvas-relay", "serve"];
        all.extend_from_slice(args);
        let cli = super::super::Cli::try_parse_resolved_from(all).expect("flags parse");
        let super::super::Command::Serve(config) = cli.command;
        config.consumers.webhook()
    }

    #[test]
    fn a_webhook_needs_a_parsable_http_url_and_a_secret() {
        assert!(with(&[]).unwrap().is_none());
        let no_secret = with(&["--webhook-url", "http://127.0.0.1:9/hook"]).unwrap_err().to_string();
        assert!(no_secret.contains("--webhook-secret"), "{no_secret}");
        let args = ["canvas-relay", "serve", "--webhook-url", "not a url", "--webhook-secret", "s"];
        let bad = super::super::Cli::try_parse_resolved_from(args).unwrap_err().to_string();
        assert!(bad.contains("--webhook-url") && bad.contains("not a URL"), "{bad}");
        let https = with(&["--webhook-url", "https://example.com/", "--webhook-secret", "s"]).unwrap_err();
        assert!(https.to_string().contains("http://"), "{https}");
        let ok = with(&["--webhook-url", "http://127.0.0.1:9/hook", "--webhook-secret", "s"]).unwrap().unwrap();
        assert_eq!(ok.url.uri().path(), "/hook");
        let hidden = with(&["--webhook-url", "https://u:hunter2@example.com/?token=s3cret", "--webhook-secret", "s"]);
        let hidden = hidden.unwrap_err().to_string();
        assert!(hidden.contains("https://***@example.com/?***") && !hidden.contains("hunter2"), "{hidden}");
    }

    #[test]
    fn the_config_never_shows_the_webhook_url_whole() {
        let url = "http://relay:hunter2@127.0.0.1:9/hook?token=s3cret";
        let cli = super::super::Cli::try_parse_resolved_from(["canvas-relay", "serve", "--webhook-url", url]).unwrap();
        let super::super::Command::Serve(config) = cli.command;
        let shown = format!("{config:?}");
        assert!(shown.contains("http://***@127.0.0.1:9/hook?***"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");
        let webhook = with(&["--webhook-url", url, "--webhook-secret", "s"]).unwrap().unwrap();
        let shown = format!("{webhook:?} {}", webhook.url);
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn requests_in_flight_default_to_16_and_are_at_least_one() {
        let webhook = with(&["--webhook-url", "http://h/", "--webhook-secret", "s"]).unwrap().unwrap();
        assert_eq!(webhook.concurrency, 16);
        let two = with(&["--webhook-url", "http://h/", "--webhook-secret", "s", "--webhook-concurrency", "2"]);
        assert_eq!(two.unwrap().unwrap().concurrency, 2);
        let none = with(&["--webhook-url", "http://h/", "--webhook-secret", "s", "--webhook-concurrency", "0"]);
        assert!(none.unwrap_err().to_string().contains("--webhook-concurrency"));
    }

    #[test]
    fn types_are_exact_names_or_prefixes() {
        let webhook =
            with(&["--webhook-url", "http://h/", "--webhook-secret", "s", "--webhook-types", "object-*,comment"])
                .unwrap()
                .unwrap();
        assert!(webhook.delivers("object-create") && webhook.delivers("comment"));
        assert!(!webhook.delivers("comments") && !webhook.delivers("user-connected"));
    }
}
