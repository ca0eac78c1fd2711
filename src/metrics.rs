//! Every metric the relay exports, named in one place, and the Prometheus recorder behind `/metrics`.
//!
//! Handles are resolved once (`Metrics::recorded_by`) and cloned into the hot paths, so counting a delivery
//! is an atomic add, not a registry lookup. The `metrics` crate and its Prometheus exporter do the
//! bookkeeping and the text format; nothing here formats Prometheus output by hand. Each instance has a
//! recorder of its own, never installed process-wide: two instances in one process (tests, an embedding
//! application with its own global recorder) each count and render only their own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, NoopRecorder, Recorder};

use crate::protocol::{CanvasId, Cut};

/// Canvases that get a `canvas` label of their own; later ones are counted under `canvas="other"`, so a
/// relay serving millions of canvases does not grow millions of series.
const MAX_LABELLED_CANVASES: usize = 1000;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

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
    /// Publishes that repeated an idempotency key: acked with the original seq, nothing logged.
    pub duplicates: Counter,
    /// Write transactions committed (group commits).
    pub commits: Counter,
    /// Write transactions that failed; their messages got `unavailable`.
    pub commit_errors: Counter,
    /// Canvases a commit found moved under it (another instance committed to them first) and staged
    /// again: what nginx's hashing of canvases to instances keeps rare.
    pub commit_conflicts: Counter,
    /// Snapshots of canvas states this process wrote.
    pub snapshots_written: Counter,
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
    /// Clients closed with 4009 because their queue overflowed (also in `relay_clients_cut_total`).
    pub clients_cut_slow: Counter,
    /// Clients closed with 4009, by reason (slow, gap, epoch).
    clients_cut: [Counter; 4],
    /// Ephemeral frames (cursors) a slow reader missed: replaced by a newer one of the same sender, or dropped.
    pub ephemeral_missed: Counter,
    /// Canvas states joiners got: read with their snapshot (small), shared from the cache, or read whole
    /// for the cache (a big state nobody had serialized at that version).
    pub join_state_inline: Counter,
    pub join_state_cached: Counter,
    pub join_state_built: Counter,
    /// Idle, empty canvases deleted (their next use starts a new epoch).
    pub canvases_dropped: Counter,
    /// Doorbells (wake-ups) this instance rang after commits its peers must deliver, and ones it received.
    pub doorbells_rung: Counter,
    pub doorbells_received: Counter,
    /// Other instances alive at the last heartbeat.
    pub peer_instances: Gauge,
    /// Seconds from another instance's commit (its timestamp) to this instance reading it.
    pub peer_delivery_seconds: Histogram,
    /// The canvases that have a label of their own in the per-canvas series.
    labelled: Arc<Mutex<HashSet<CanvasId>>>,
    /// Clients closed with 4008 for sending on after rate_limited errors.
    pub clients_cut_rate: Counter,
    /// Holes skipped because rows expired before this process read them.
    pub gaps_skipped: Counter,
    /// Error frames sent to clients for bad frames.
    pub frame_errors: Counter,
    /// Expired rows deleted.
    pub cleanup_deleted: Counter,
    /// Readers of `GET /api/v1/stream` connected, and the events sent to them.
    pub stream_readers: Gauge,
    pub stream_events: Counter,
    /// Webhook messages not yet delivered, on the canvases this instance delivers.
    pub webhook_lag: Gauge,
    /// Seconds from a batch's first message's commit to its 2xx.
    pub webhook_delivery_seconds: Histogram,
    /// Batches and messages answered 2xx.
    pub webhook_batches: Counter,
    pub webhook_messages: Counter,
    /// What the per-canvas series register with as canvases appear (a no-op recorder in unit tests).
    recorder: Arc<dyn Recorder + Send + Sync>,
}

/// How often the recorder's upkeep runs (the exporter's own default when it runs its own listener).
const UPKEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Drains the histograms' pending samples into their buckets every few seconds until `stop`. Without it the
/// samples pile up until the next scrape of `/metrics`: an instance nobody scrapes grew by about 1 MB a second
/// at 60,000 messages a second (every commit and every row read from a peer records a sample).
pub async fn upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    crate::periodic::every(UPKEEP_PERIOD, stop, || {
        handle.run_upkeep();
        std::future::ready(())
    })
    .await
}

/// A Prometheus recorder for one instance: what its [`Metrics`] record into, and through
/// [`PrometheusRecorder::handle`] what `/metrics` renders; its upkeep is [`upkeep`]'s to run.
pub fn recorder() -> Arc<PrometheusRecorder> {
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
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("relay_peer_delivery_seconds".into()),
                &[0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("relay_webhook_delivery_seconds".into()),
                &[0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0],
            )
        })
        .expect("the bucket lists are non-empty constants");
    Arc::new(builder.build_recorder())
}

impl Metrics {
    /// Handles registered with `recorder`, this instance's (see [`recorder`]).
    pub fn recorded_by(recorder: Arc<PrometheusRecorder>) -> Self {
        Metrics::register(recorder)
    }

    /// Every handle, registered with `recorder`, which is kept for the series that appear later.
    fn register(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        metrics::with_local_recorder(&*recorder.clone(), || Metrics {
            messages_in: counter!("relay_messages_in_total"),
            cursors_in: counter!("relay_cursors_in_total"),
            deliveries: counter!("relay_deliveries_total"),
            messages_committed: counter!("relay_messages_committed_total"),
            duplicates: counter!("relay_duplicates_total"),
            commits: counter!("relay_commits_total"),
            commit_errors: counter!("relay_commit_errors_total"),
            commit_conflicts: counter!("relay_commit_conflicts_total"),
            snapshots_written: counter!("relay_snapshots_written_total"),
            commit_batch_size: histogram!("relay_commit_batch_size"),
            commit_seconds: histogram!("relay_commit_seconds"),
            polls: counter!("relay_polls_total"),
            poll_rows: counter!("relay_poll_rows_total"),
            poll_lag_rows: gauge!("relay_poll_lag_rows"),
            writer_queue_depth: gauge!("relay_writer_queue_depth"),
            connections: gauge!("relay_connections"),
            connections_total: counter!("relay_connections_total"),
            clients_cut_slow: counter!("relay_clients_cut_slow_total"),
            clients_cut: [Cut::Slow, Cut::Gap, Cut::Epoch, Cut::Removed]
                .map(|reason| counter!("relay_clients_cut_total", "reason" => reason.as_str())),
            ephemeral_missed: counter!("relay_ephemeral_missed_total"),
            canvases_dropped: counter!("relay_canvases_dropped_total"),
            join_state_inline: counter!("relay_join_states_total", "source" => "inline"),
            join_state_cached: counter!("relay_join_states_total", "source" => "cache"),
            join_state_built: counter!("relay_join_states_total", "source" => "built"),
            doorbells_rung: counter!("relay_doorbells_rung_total"),
            doorbells_received: counter!("relay_doorbells_received_total"),
            peer_instances: gauge!("relay_peer_instances"),
            peer_delivery_seconds: histogram!("relay_peer_delivery_seconds"),
            labelled: Arc::default(),
            clients_cut_rate: counter!("relay_clients_cut_rate_total"),
            gaps_skipped: counter!("relay_gaps_skipped_total"),
            frame_errors: counter!("relay_frame_errors_total"),
            cleanup_deleted: counter!("relay_cleanup_deleted_total"),
            stream_readers: gauge!("relay_stream_readers"),
            stream_events: counter!("relay_stream_events_total"),
            webhook_lag: gauge!("relay_webhook_lag_messages"),
            webhook_delivery_seconds: histogram!("relay_webhook_delivery_seconds"),
            webhook_batches: counter!("relay_webhook_batches_total"),
            webhook_messages: counter!("relay_webhook_messages_total"),
            recorder,
        })
    }

    /// Runs `record` with this instance's recorder in scope, for a series registered as it first appears.
    fn with_recorder(&self, record: impl FnOnce()) {
        metrics::with_local_recorder(&*self.recorder, record)
    }
}

impl Metrics {
    /// A client was cut (4009, or 4003 when removed): counted once, under its reason, in all and for its
    /// canvas.
    pub fn cut(&self, canvas: &CanvasId, reason: Cut) {
        let index = match reason {
            Cut::Slow => 0,
            Cut::Gap => 1,
            Cut::Epoch => 2,
            Cut::Removed => 3,
        };
        self.clients_cut[index].increment(1);
        if reason == Cut::Slow {
            self.clients_cut_slow.increment(1);
        }
        let canvas = self.label(canvas);
        self.with_recorder(|| {
            counter!("relay_canvas_cuts_total", "canvas" => canvas, "reason" => reason.as_str()).increment(1);
        });
    }

    /// A webhook attempt failed: `status` is the HTTP status, or `timeout` / `connect` / `request`.
    pub fn webhook_failed(&self, status: &str) {
        let status = status.to_owned();
        self.with_recorder(|| counter!("relay_webhook_failures_total", "status" => status).increment(1));
    }

    /// Receivers of a canvas missed `missed` ephemeral frames (see `ephemeral_missed`).
    pub fn ephemeral_missed(&self, canvas: &CanvasId, missed: u64) {
        if missed == 0 {
            return;
        }
        self.ephemeral_missed.increment(missed);
        let canvas = self.label(canvas);
        self.with_recorder(|| {
            counter!("relay_canvas_outbox_drops_total", "canvas" => canvas, "lane" => "ephemeral").increment(missed);
        });
    }

    /// The `canvas` label of a per-canvas series: its id for the first canvases, `other` after that.
    fn label(&self, canvas: &CanvasId) -> String {
        let mut labelled = self.labelled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if labelled.contains(canvas) || (labelled.len() < MAX_LABELLED_CANVASES && labelled.insert(canvas.clone())) {
            canvas.as_str().to_owned()
        } else {
            "other".to_owned()
        }
    }
}

impl Default for Metrics {
    /// Handles that record nothing (unit tests).
    fn default() -> Self {
        Metrics::register(Arc::new(NoopRecorder))
    }
}
