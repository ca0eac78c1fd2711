//! `GET /health` (status and the figures behind it; 200 when healthy or warning, 503 when critical) and
//! `GET /metrics` (Prometheus text). Neither needs the API key.
//!
//! The PRD's thresholds (1,000 / 5,000 queued messages, oldest 10 / 30 s) were written for a queue that
//! should be nearly empty. Here rows are kept for the TTL on purpose, so queue size and age are judged
//! against the TTL: what matters is rows this instance has not read (poll lag, the PRD's queue thresholds),
//! rows past their deletion time by cleanup rounds (cleanup stuck; rows kept for the webhook are not due),
//! a full writer queue, and storage errors. The webhook adds warnings of its own, never critical.

use std::sync::Arc;

use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::with_state;
use crate::consumers::webhook;
use crate::store::figures::BusFigures;
use crate::App;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Warning,
    Critical,
}

/// A storage error within this window makes the instance critical.
const RECENT_ERROR_MS: i64 = 10_000;
/// Unread rows behind the head: the PRD's queue thresholds.
const LAG_WARNING_ROWS: i64 = 1_000;
const LAG_CRITICAL_ROWS: i64 = 5_000;

/// Judges the figures; returns the status and the reasons for anything short of healthy.
pub fn assess(figures: &BusFigures, cleanup_interval_ms: i64) -> (Status, Vec<String>) {
    let mut findings = Vec::new();
    let mut flag = |status, reason: String| findings.push((status, reason));
    if let (Some(error), Some(age)) = (&figures.last_error, figures.last_error_age_ms) {
        if age < RECENT_ERROR_MS {
            flag(Status::Critical, format!("storage error {}s ago: {error}", age / 1000));
        }
    }
    let (depth, capacity) = (figures.writer_queue_depth, figures.writer_queue_capacity.max(1));
    if depth * 10 >= capacity * 9 {
        flag(Status::Critical, format!("writer queue {depth}/{capacity}"));
    } else if depth * 2 >= capacity {
        flag(Status::Warning, format!("writer queue {depth}/{capacity}"));
    }
    let lag = figures.poll_lag_rows;
    if lag >= LAG_CRITICAL_ROWS {
        flag(Status::Critical, format!("{lag} committed rows not yet read"));
    } else if lag >= LAG_WARNING_ROWS {
        flag(Status::Warning, format!("{lag} committed rows not yet read"));
    }
    // Rows due for deletion (past the TTL, or delivered by the webhook after it) that are still there.
    let overdue = figures.cleanup_overdue_ms.unwrap_or(0);
    if overdue > 3 * cleanup_interval_ms + 30_000 {
        flag(Status::Critical, format!("a row is {}s past its deletion: cleanup is not keeping up", overdue / 1000));
    } else if overdue > cleanup_interval_ms + 10_000 {
        flag(Status::Warning, format!("a row is {}s past its deletion: cleanup is behind", overdue / 1000));
    }
    let status = findings.iter().map(|(s, _)| *s).max().unwrap_or(Status::Healthy);
    (status, findings.into_iter().map(|(_, reason)| reason).collect())
}

/// The webhook's warnings: a receiver that is gone (410), a lag past `--webhook-lag-warning`, undelivered
/// messages kept past the TTL for it. Never critical: a receiver's trouble is no reason to take this
/// instance out of a load balancer.
pub fn assess_webhook(figures: &webhook::Figures, lag_warning: u64, ttl_ms: i64) -> Vec<String> {
    let mut warnings = Vec::new();
    if figures.gone {
        warnings.push("webhook stopped: the receiver answered 410 Gone (restart to deliver again)".to_owned());
    }
    if figures.lag_messages > lag_warning {
        warnings.push(format!("webhook lag: {} messages not yet delivered", figures.lag_messages));
    }
    if let Some(age) = figures.oldest_undelivered_age_ms.filter(|age| *age > ttl_ms) {
        let failure = figures.last_failure.as_deref().unwrap_or("none yet");
        warnings.push(format!(
            "webhook: the oldest undelivered message is {}s old, kept past the TTL (last failure: {failure})",
            age / 1000
        ));
    }
    warnings
}

pub fn health(app: Arc<App>) -> BoxedFilter<(Response,)> {
    warp::path!("health").and(warp::get()).and(with_state(app)).then(health_report).boxed()
}

async fn health_report(app: Arc<App>) -> Response {
    let (canvases, connections) = app.hub.counts();
    let base = serde_json::json!({
        "instance": app.instance_id.to_string(),
        "local_canvases": canvases,
        "local_connections": connections,
        "message_ttl_ms": app.bus.ttl_ms(),
    });
    let mut body = match app.bus.figures().await {
        Ok(figures) => {
            let cleanup_ms = app.config.cleanup_interval.as_millis() as i64;
            let (status, reasons) = assess(&figures, cleanup_ms);
            app.metrics.poll_lag_rows.set(figures.poll_lag_rows as f64);
            let mut body = serde_json::to_value(&figures).unwrap_or_default();
            body["status"] = serde_json::json!(status);
            body["reasons"] = serde_json::json!(reasons);
            body
        }
        Err(error) => serde_json::json!({ "status": Status::Critical, "reasons": [error.to_string()] }),
    };
    if let (Some(body), Some(base)) = (body.as_object_mut(), base.as_object()) {
        body.extend(base.clone());
    }
    if let Some(status) = &app.webhook {
        let figures = status.figures();
        app.metrics.webhook_lag.set(figures.lag_messages as f64);
        let warnings = assess_webhook(&figures, app.config.consumers.webhook_lag_warning, app.bus.ttl_ms());
        if !warnings.is_empty() && body["status"] == "healthy" {
            body["status"] = serde_json::json!(Status::Warning);
        }
        if let Some(reasons) = body["reasons"].as_array_mut() {
            reasons.extend(warnings.into_iter().map(serde_json::Value::from));
        }
        body["webhook"] = serde_json::to_value(&figures).unwrap_or_default();
    }
    let code = if body["status"] == "critical" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

pub fn metrics(app: Arc<App>) -> BoxedFilter<(Response,)> {
    warp::path!("metrics").and(warp::get()).and(with_state(app)).map(render_metrics).boxed()
}

fn render_metrics(app: Arc<App>) -> Response {
    // The lag is the webhook's own figure, not a counter anything increments: read it for each scrape.
    if let Some(status) = &app.webhook {
        app.metrics.webhook_lag.set(status.figures().lag_messages as f64);
    }
    let text = app.prometheus.render();
    warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::figures::StoreFigures;
    use crate::store::sqlite::queries::FileFigures;

    fn file_figures() -> FileFigures {
        FileFigures {
            queue_rows: 60_000,
            oldest_row_age_ms: 59_000,
            cleanup_overdue_ms: 0,
            head_id: 100,
            live_instances: 2,
        }
    }

    fn figures() -> BusFigures {
        BusFigures {
            bus: "sqlite",
            storage: StoreFigures::of(&file_figures()),
            cleanup_overdue_ms: Some(0),
            writer_queue_depth: 0,
            writer_queue_capacity: 1000,
            poll_lag_rows: 0,
            last_poll_age_ms: 1,
            peer_instances: 1,
            oldest_unread_age_ms: None,
            last_error: None,
            last_error_age_ms: None,
        }
    }

    #[test]
    fn a_full_log_within_the_ttl_is_healthy() {
        assert_eq!(assess(&figures(), 30_000), (Status::Healthy, vec![]));
    }

    #[test]
    fn lag_and_queue_and_cleanup_raise_warnings_then_critical() {
        let mut f = figures();
        f.poll_lag_rows = 1_500;
        assert_eq!(assess(&f, 30_000).0, Status::Warning);
        f.poll_lag_rows = 6_000;
        assert_eq!(assess(&f, 30_000).0, Status::Critical);
        let mut f = figures();
        f.writer_queue_depth = 950;
        assert_eq!(assess(&f, 30_000).0, Status::Critical);
        let aged = |age| {
            let mut f = figures();
            f.cleanup_overdue_ms = Some(age);
            f
        };
        assert_eq!(assess(&aged(30_000), 30_000).0, Status::Healthy);
        assert_eq!(assess(&aged(50_000), 30_000).0, Status::Warning);
        assert_eq!(assess(&aged(140_000), 30_000).0, Status::Critical);
    }

    #[test]
    fn a_recent_storage_error_is_critical_an_old_one_is_not() {
        let mut f = figures();
        f.last_error = Some("the disk is full".into());
        f.last_error_age_ms = Some(2_000);
        let (status, reasons) = assess(&f, 30_000);
        assert_eq!(status, Status::Critical);
        assert!(reasons[0].contains("disk is full"));
        f.last_error_age_ms = Some(60_000);
        assert_eq!(assess(&f, 30_000).0, Status::Healthy);
    }

    /// The figures a Redis store reports, as `figures()` is for the file.
    fn redis_figures() -> BusFigures {
        let redis = crate::store::redis::RedisFigures {
            redis_ping_ms: 0.25,
            store_epoch: Some("e7".into()),
            live_instances: 2,
        };
        BusFigures {
            bus: "redis",
            storage: StoreFigures::of(&redis),
            cleanup_overdue_ms: None,
            writer_queue_capacity: 0,
            ..figures()
        }
    }

    #[test]
    fn the_figures_of_each_store_keep_their_names_in_health() {
        let file = serde_json::to_value(figures()).unwrap();
        let expected = serde_json::json!({
            "bus": "sqlite", "queue_rows": 60_000, "oldest_row_age_ms": 59_000, "cleanup_overdue_ms": 0,
            "head_id": 100, "live_instances": 2, "writer_queue_depth": 0, "writer_queue_capacity": 1000,
            "poll_lag_rows": 0, "last_poll_age_ms": 1, "peer_instances": 1, "oldest_unread_age_ms": null,
            "last_error": null, "last_error_age_ms": null,
        });
        assert_eq!(file, expected);
        let redis = serde_json::to_value(redis_figures()).unwrap();
        let expected = serde_json::json!({
            "bus": "redis", "redis_ping_ms": 0.25, "store_epoch": "e7", "live_instances": 2,
            "writer_queue_depth": 0, "writer_queue_capacity": 0, "poll_lag_rows": 0, "last_poll_age_ms": 1,
            "peer_instances": 1, "oldest_unread_age_ms": null, "last_error": null, "last_error_age_ms": null,
        });
        assert_eq!(redis, expected);
        assert_eq!(serde_json::to_string(&redis_figures()).unwrap().matches("live_instances").count(), 1);
    }
}
