//! Every metric the relay exports, named in one place, and the Prometheus recorder behind `/metrics`.
//!
//! Handles are resolved once (`Metrics::new`) and cloned into the hot paths, so counting a delivery is an
//! atomic add, not a registry lookup. The `metrics` crate and its Prometheus exporter do the bookkeeping
//! and the text format; nothing here formats Prometheus output by hand.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Handles to every metric; cheap to clone (each is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    /// Logged messages accepted from clients and the API, before commit.
    pub messages_in: Counter,
    /// Cursor frames received.
    pub cursors_in: Counter,
    /// Frames queued to clients: messages, acks and cursors.
    pub deliveries: Counter,
    /// Logged messages committed by this process.
    pub messages_committed: Counter,
    /// Write transactions committed (group commits).
    pub commits: Counter,
    /// Write transactions that failed; their messages got `unavailable`.
    pub commit_errors: Counter,
    /// Messages per commit.
    pub commit_batch_size: Histogram,
    /// Seconds from BEGIN IMMEDIATE to COMMIT.
    pub commit_seconds: Histogram,
    /// Queries the watcher ran for new rows.
    pub polls: Counter,
    /// Rows those queries returned.
    pub poll_rows: Counter,
    /// Rows not yet read behind the file's head, as of the last health check.
    pub poll_lag_rows: Gauge,
    /// Messages waiting for the writer.
    pub writer_queue_depth: Gauge,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_total: Counter,
    /// Clients closed with 4009 because their queue overflowed.
    pub clients_cut_slow: Counter,
    /// Clients closed with 4008 for sending on after rate_limited errors.
    pub clients_cut_rate: Counter,
    /// Holes skipped because rows expired before this process read them.
    pub gaps_skipped: Counter,
    /// Error frames sent to clients for bad frames.
    pub frame_errors: Counter,
    /// Expired rows deleted.
    pub cleanup_deleted: Counter,
}

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns the handle `/metrics` renders.
/// `None` if another recorder was installed first, e.g. by an embedding application.
pub fn install_recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("relay_commit_batch_size".into()),
                    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("relay_commit_seconds".into()),
                        &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0],
                    )
                })
                .ok()?;
            builder.install_recorder().ok()
        })
        .clone()
}

impl Metrics {
    /// Handles registered with the installed recorder (call `install_recorder` first). Without a recorder
    /// (unit tests) every handle is a no-op.
    pub fn new() -> Self {
        Metrics {
            messages_in: counter!("relay_messages_in_total"),
            cursors_in: counter!("relay_cursors_in_total"),
            deliveries: counter!("relay_deliveries_total"),
            messages_committed: counter!("relay_messages_committed_total"),
            commits: counter!("relay_commits_total"),
            commit_errors: counter!("relay_commit_errors_total"),
            commit_batch_size: histogram!("relay_commit_batch_size"),
            commit_seconds: histogram!("relay_commit_seconds"),
            polls: counter!("relay_polls_total"),
            poll_rows: counter!("relay_poll_rows_total"),
            poll_lag_rows: gauge!("relay_poll_lag_rows"),
            writer_queue_depth: gauge!("relay_writer_queue_depth"),
            connections: gauge!("relay_connections"),
            connections_total: counter!("relay_connections_total"),
            clients_cut_slow: counter!("relay_clients_cut_slow_total"),
            clients_cut_rate: counter!("relay_clients_cut_rate_total"),
            gaps_skipped: counter!("relay_gaps_skipped_total"),
            frame_errors: counter!("relay_frame_errors_total"),
            cleanup_deleted: counter!("relay_cleanup_deleted_total"),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
