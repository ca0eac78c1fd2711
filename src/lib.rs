//! canvas-relay: a realtime relay for collaborative canvas apps. Several identical processes share one
//! SQLite file as their message bus; each relays logged messages between its WebSocket clients in per-canvas
//! seq order, without gaps, across processes. The wire contract is `PROTOCOL.md`; the README explains the
//! design and how to run it.
//!
//! [`run`] is the whole server: it opens the bus, serves HTTP and WebSockets on a bound listener, and shuts
//! down in order when `shutdown` resolves. `main.rs` only parses flags, sets up logging and binds.

mod admission;
mod auth;
mod clock;
pub mod config;
mod consumers;
mod core;
mod cursors;
mod http;
mod hub;
mod metrics;
mod object_ops;
mod periodic;
mod protocol;
mod ratelimit;
mod session;
mod shutdown;
mod store;

#[cfg(test)]
mod fuzz;

/// The SQLite binding the relay uses, for tools and tests that open the shared file themselves.
pub use deadpool_sqlite::rusqlite;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::core::Bus;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::shutdown::{Phase, Shutdown};

/// What every request handler and session shares.
pub struct App {
    pub config: Config,
    /// This process's identity in the instances table and in every welcome.
    pub instance_id: Uuid,
    pub hub: Arc<Hub>,
    pub bus: Bus,
    pub metrics: Metrics,
    /// Renders `/metrics`: this instance's recorder.
    pub prometheus: PrometheusHandle,
    pub shutdown: Shutdown,
    /// Checks client tokens when `--jwt-secret` is set.
    pub verifier: Option<auth::Verifier>,
    /// Cursors waiting for the next batch to other instances.
    pub cursors: Arc<cursors::CursorBuffer>,
    /// The connection limits (`--max-connections`, `--max-connections-per-user`).
    pub admission: Arc<admission::Admission>,
    /// The webhook deliverer's figures, when `--webhook-url` is set.
    pub webhook: Option<Arc<consumers::webhook::DeliveryStatus>>,
}

/// The first phases of a stop (see `shutdown.rs`): sessions stop reading, everything they accepted is
/// committed and acked, then they write what is queued and close. Each wait is bounded by
/// `--shutdown-timeout`.
async fn drain(app: &App) {
    tracing::info!("shutting down: draining connections");
    let timeout = app.config.shutdown_timeout;
    app.shutdown.enter(Phase::Draining);
    let still_reading = shutdown::wait_idle(&app.shutdown.reading, timeout).await;
    if let Err(error) = app.bus.flush().await {
        tracing::warn!(%error, "could not flush the writer queue");
    }
    app.shutdown.enter(Phase::Closing);
    let still_open = shutdown::wait_idle(&app.shutdown.alive, timeout).await;
    if still_reading + still_open > 0 {
        tracing::warn!(still_reading, still_open, "shutdown timeout reached with connections still open");
    }
}

/// Serves the relay on `listener` until `shutdown` resolves, then stops in order (see `shutdown.rs`):
/// no acknowledged message is lost, and every message accepted before the signal is committed and acked.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    config::open_files::warn_if_low(config.max_connections);
    let addr = listener.local_addr().context("reading the bound address")?;
    let recorder = metrics::recorder();
    let prometheus = recorder.handle();
    let metrics = Metrics::recorded_by(recorder);
    let hub = Arc::new(Hub::new());
    let instance_id = Uuid::new_v4();
    let storage = config.bus.describe(&config.db);
    let bus = Bus::open(&config, &instance_id.to_string(), &addr.to_string(), hub.clone(), metrics.clone())
        .await
        .with_context(|| format!("opening the database {storage}"))?;
    let stop_maintenance = CancellationToken::new();
    // Stops the upkeep if `run` itself is dropped (a caller's timeout or select), as well as at the end.
    let _stop_on_drop = stop_maintenance.clone().drop_guard();
    let webhook =
        consumers::webhook::start(&bus, &config, instance_id.to_string(), metrics.clone(), stop_maintenance.clone());
    let (webhook, webhook_status) = webhook.unzip();
    let app = Arc::new(App {
        config: config.clone(),
        instance_id,
        hub: hub.clone(),
        bus: bus.clone(),
        metrics,
        prometheus,
        shutdown: Shutdown::default(),
        cursors: hub.cursors().clone(),
        admission: admission::Admission::new(config.max_connections, config.max_connections_per_user),
        verifier: config.jwt_secret.as_ref().map(|secret| auth::Verifier::new(secret.expose())),
        webhook: webhook_status,
    });

    let (fatal, failed) = oneshot::channel();
    let maintenance = bus.maintain(app.cursors.clone(), config.clone(), stop_maintenance.clone(), fatal);
    let upkeep = tokio::spawn(metrics::upkeep(app.prometheus.clone(), stop_maintenance.clone()));
    let server = http::server::serve(
        listener,
        http::routes(app.clone()),
        config.handshake_timeout,
        config.shutdown_timeout,
        app.shutdown.stopped_accepting(),
    );
    let server = tokio::spawn(server);
    tracing::info!(instance = %instance_id, db = %storage, "listening on {addr}");

    // Stops on the caller's signal, or when the instance cannot go on (then `run` returns the reason).
    let failure = tokio::select! {
        () = shutdown => None,
        Ok(reason) = failed => Some(reason),
    };
    if let Some(reason) = &failure {
        tracing::error!("{reason}");
    }
    drain(&app).await;
    stop_maintenance.cancel();
    let _ = maintenance.await;
    let _ = upkeep.await;
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    bus.close().await;
    let _ = server.await;
    tracing::info!("stopped");
    match failure {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => Ok(()),
    }
}
