//! What the Redis store's unit tests share: a `redis-server` of their own (skipped, saying so, with
//! `RELAY_SKIP_REDIS_TESTS=1`), and a store on it without its committer or stream reader, whose scripts the
//! tests call as those would.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::{connect, Inner, RedisStore, Settings, RESPONSE_TIMEOUT};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::workers::Workers;

/// A `redis-server` of this test's own on a free loopback port, killed when dropped.
pub struct Server(std::process::Child, u16);

impl Server {
    /// `None` when Redis tests are skipped (`RELAY_SKIP_REDIS_TESTS=1`).
    pub fn start() -> Option<Server> {
        if std::env::var("RELAY_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("RELAY_SKIP_REDIS_TESTS=1: skipping a Redis test");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run the README's test command, or set RELAY_SKIP_REDIS_TESTS=1");
        Some(Server(child, port))
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/0", self.1)).unwrap()
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = self.client();
        for _ in 0..500 {
            if let Ok(conn) = client.get_multiplexed_async_connection().await {
                return conn;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("redis-server did not start");
    }

    /// A store of instance `i1` on this server (a TTL of `ttl_ms`, no webhook), with `--history-retention`
    /// of `history_ms`. Its commits are the tests' to make.
    pub async fn store(&self, ttl_ms: i64, history_ms: i64) -> RedisStore {
        let _ready = self.connection().await;
        let client = self.client();
        let settings = Settings {
            ttl_ms,
            retention_ms: 0,
            presence_timeout_ms: 10_000,
            cleanup_batch: 1000,
            history_ms,
            forget_after_ms: 60_000,
        };
        let stop_reader = CancellationToken::new();
        RedisStore {
            inner: Arc::new(Inner {
                conn: connect(&client, RESPONSE_TIMEOUT).await.unwrap(),
                state_conn: connect(&client, RESPONSE_TIMEOUT).await.unwrap(),
                link: Arc::new(Link::default()),
                hub: Arc::new(Hub::new()),
                metrics: Metrics::default(),
                instance_id: "i1".to_owned(),
                settings,
                _reader_stops_on_drop: stop_reader.clone().drop_guard(),
                stop_reader,
                workers: Workers::default(),
            }),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
