//! The accept loop: every TCP connection gets TCP_NODELAY and an HTTP/1.1 connection (hyper) serving the
//! routes, with a deadline for its request headers. HTTP/1.1 only: WebSockets upgrade from it, and nginx
//! speaks it to upstreams. It does not decide who may open a WebSocket (that is
//! `admission.rs`, after the request is read) and does not close WebSockets at shutdown (sessions do).
//!
//! This replaces `warp::serve`, which runs hyper without a timer: there, a client that opens a connection
//! and sends its headers a byte a minute (slowloris) holds a task and a file descriptor forever.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// After an accept error that is not about one connection (the process is out of file descriptors), wait
/// this long before accepting again rather than spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `routes` on `listener` until `stop` resolves, then waits for the HTTP requests in progress (not
/// for upgraded WebSockets, which hyper has handed over), each at most `drain` (a response body a client
/// does not read, such as an event stream's, would otherwise hold shutdown forever).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    header_timeout: Duration,
    drain: Duration,
    stop: impl Future<Output = ()>,
) {
    // Every connection's task is tracked, so that stopping can wait for the requests in progress.
    let (connections, stopping) = (TaskTracker::new(), CancellationToken::new());
    let mut stop = std::pin::pin!(stop);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    tracing::error!(%error, "accept failed; pausing before the next accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Nagle's algorithm would hold small frames back until the peer's delayed ACK: tens of milliseconds
        // on a relay of small messages.
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        let stopping = stopping.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    // Finish the request in progress, then close; an upgraded WebSocket is no longer ours.
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(drain, connection).await {
                        Ok(ended) => ended,
                        Err(_) => {
                            tracing::debug!("an HTTP response was not finished within the shutdown timeout; closed");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = ended {
                // A client that went away mid-request, sent garbage or ran out of time: its problem, not ours.
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
