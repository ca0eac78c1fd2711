//! A real `redis-server` for the Redis-bus tests: its own port on 127.0.0.1 and its own directory, with the
//! persistence a test asks for, and a [`Store`] that runs the same scenario on the SQLite file or on Redis.
//!
//! `redis-server` must be installed (the test command installs it): without it these tests fail. Only
//! `RELAY_SKIP_REDIS_TESTS=1` skips them instead (never under CI), and each says so (`helpers::skip`).

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{Instance, SharedFile, WAIT};

/// Where the instances of a scenario keep their data.
pub enum Store {
    File(SharedFile),
    Redis(RedisServer),
}

/// The current generation's rows of canvas `?1` in the shared file (see [`Store::logged`]).
// `op <= 2`: the log as its readers see it (rows with op 3 and 4 are object ops kept only for history, as
// Redis keeps them only in the canvas's ops stream).
const GENERATION_TYPES: &str = "SELECT message_type FROM message_queue
     WHERE canvas_id = ?1 AND generation = (SELECT generation FROM canvases WHERE canvas_id = ?1) AND op <= 2
     ORDER BY id";
const GENERATION_ROWS: &str = "SELECT seq, sender, payload FROM message_queue
     WHERE canvas_id = ?1 AND generation = (SELECT generation FROM canvases WHERE canvas_id = ?1) AND op <= 2";

impl Store {
    pub fn sqlite() -> Store {
        Store::File(SharedFile::new())
    }

    /// A fresh Redis server with AOF persistence (`appendfsync always`); `None` when Redis tests are skipped.
    pub async fn redis() -> Option<Store> {
        Some(Store::Redis(RedisServer::start(true).await?))
    }

    /// Which store this is, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Store::File(_) => "SQLite file",
            Store::Redis(_) => "Redis",
        }
    }

    /// Starts an instance on this store.
    pub async fn start(&self, args: &[&str]) -> Instance {
        match self {
            Store::File(file) => file.start(args).await,
            Store::Redis(redis) => Instance::start_on_redis(&redis.url(), args).await,
        }
    }

    /// Starts an instance on this store under a soft open-file limit (`ulimit -n`) of `limit`.
    pub async fn start_with_open_file_limit(&self, limit: u32, args: &[&str]) -> Instance {
        match self {
            Store::File(file) => Instance::start_with_open_file_limit(&file.db, limit, args).await,
            Store::Redis(redis) => Instance::start_on_redis_with_open_file_limit(&redis.url(), limit, args).await,
        }
    }

    /// The types of a canvas's retained messages in seq order, read from storage directly (expired ones
    /// included until storage drops them), of its current generation (a reset keeps the old one's rows in
    /// the file, for the event stream, but drops them from the canvas's log as Redis does).
    pub async fn logged(&self, canvas: &str) -> Vec<String> {
        match self {
            Store::File(file) => {
                let conn = file.open();
                let mut stmt = conn.prepare(GENERATION_TYPES).unwrap();
                stmt.query_map([canvas], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
            }
            Store::Redis(redis) => redis.log(canvas).await.iter().map(|e| e.get::<String>("t").unwrap()).collect(),
        }
    }

    /// A canvas's logged messages from seq 1 to `up_to`, read from storage directly: seq -> (sender, data as
    /// JSON text). For a canvas never reset (a reset's marker and earlier generations are not told apart).
    pub async fn log(&self, canvas: &str, up_to: u64) -> std::collections::BTreeMap<u64, (String, String)> {
        match self {
            Store::File(file) => {
                let conn = file.open();
                let mut stmt = conn.prepare(&format!("{GENERATION_ROWS} AND seq <= ?2")).unwrap();
                let rows = stmt.query_map(canvas_relay::rusqlite::params![canvas, up_to as i64], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, (r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
                });
                rows.unwrap().map(Result::unwrap).collect()
            }
            Store::Redis(redis) => {
                let entries = redis.log(canvas).await;
                let field = |entry: &redis::streams::StreamId, name: &str| {
                    entry.get::<String>(name).unwrap_or_else(|| panic!("entry {} has no field {name}", entry.id))
                };
                entries
                    .iter()
                    .map(|entry| (field(entry, "s").parse().unwrap(), (field(entry, "f"), field(entry, "d"))))
                    .filter(|(seq, _)| (1..=up_to).contains(seq))
                    .collect()
            }
        }
    }

    /// A canvas's last seq, read from storage directly.
    pub async fn head(&self, canvas: &str) -> u64 {
        match self {
            Store::File(file) => {
                let sql = format!("SELECT coalesce(max(last_seq), 0) FROM canvases WHERE canvas_id = '{canvas}'");
                file.count(&sql) as u64
            }
            Store::Redis(redis) => {
                let seq: Option<u64> = redis::cmd("HGET")
                    .arg(format!("relay:{{{canvas}}}:head"))
                    .arg("seq")
                    .query_async(&mut redis.connection().await)
                    .await
                    .unwrap();
                seq.unwrap_or(0)
            }
        }
    }

    /// The webhook's recorded position of a canvas, read from storage directly: (generation, seq, the last
    /// seq of the batch in flight); `None` before the first save.
    pub async fn webhook_position(&self, canvas: &str) -> Option<(u64, u64, Option<u64>)> {
        match self {
            Store::File(file) => {
                let conn = file.open();
                let sql = "SELECT generation, seq, inflight FROM webhook_positions WHERE canvas_id = ?1";
                let row = conn.query_row(sql, [canvas], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, Option<i64>>(2)?))
                });
                match row {
                    Ok((generation, seq, inflight)) => Some((generation, seq, inflight.map(|p| p as u64))),
                    Err(canvas_relay::rusqlite::Error::QueryReturnedNoRows) => None,
                    Err(error) => panic!("reading the webhook position of {canvas}: {error}"),
                }
            }
            Store::Redis(redis) => {
                let (generation, seq, inflight): (Option<u64>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
                    .arg(format!("relay:{{{canvas}}}:webhook"))
                    .arg(&["g", "s", "p"][..])
                    .query_async(&mut redis.connection().await)
                    .await
                    .unwrap();
                Some((generation?, seq?, inflight))
            }
        }
    }

    /// Canvases the storage keeps a head for.
    pub async fn canvases(&self) -> usize {
        match self {
            Store::File(file) => file.count("SELECT count(*) FROM canvases") as usize,
            Store::Redis(redis) => {
                let heads: Vec<String> =
                    redis::cmd("KEYS").arg("relay:{*}:head").query_async(&mut redis.connection().await).await.unwrap();
                heads.len()
            }
        }
    }

    /// Open connections across instances, as presence storage holds them.
    pub async fn connections(&self) -> i64 {
        match self {
            Store::File(file) => file.count("SELECT count(*) FROM connections"),
            Store::Redis(redis) => {
                let users: std::collections::HashMap<String, i64> =
                    redis::cmd("HGETALL").arg("relay:users").query_async(&mut redis.connection().await).await.unwrap();
                users.values().sum()
            }
        }
    }

    /// Makes the storage stop answering writes until the returned guard is dropped: the file's write lock
    /// held by another connection, or Redis stopped (SIGSTOP).
    pub fn stall(&self) -> Stall<'_> {
        match self {
            Store::File(file) => {
                let conn = file.open();
                conn.execute_batch("BEGIN EXCLUSIVE").expect("taking the write lock");
                Stall::File(conn)
            }
            Store::Redis(redis) => {
                redis.pause();
                Stall::Redis(redis)
            }
        }
    }

    /// The shared file, to check rows directly; `None` on Redis (checked through the protocol only).
    pub fn shared_file(&self) -> Option<&SharedFile> {
        match self {
            Store::File(file) => Some(file),
            Store::Redis(_) => None,
        }
    }
}

/// Storage made to stop answering (see [`Store::stall`]); answers again when dropped.
pub enum Stall<'a> {
    File(canvas_relay::rusqlite::Connection),
    Redis(&'a RedisServer),
}

impl Drop for Stall<'_> {
    fn drop(&mut self) {
        match self {
            Stall::File(conn) => drop(conn.execute_batch("ROLLBACK")),
            Stall::Redis(redis) => redis.resume(),
        }
    }
}

/// A `redis-server` process on a free loopback port.
pub struct RedisServer {
    dir: tempfile::TempDir,
    pub port: u16,
    persistent: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one; with `persistent`, every write is in the AOF (fsynced) before Redis replies.
    pub async fn start(persistent: bool) -> Option<RedisServer> {
        if super::skip_requested("RELAY_SKIP_REDIS_TESTS", "a Redis-bus test") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = RedisServer { dir: tempfile::tempdir().unwrap(), port, persistent, child: None };
        server.spawn().await;
        Some(server)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", if self.persistent { "yes" } else { "no" }, "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: run the README's test command, or set RELAY_SKIP_REDIS_TESTS=1");
        self.child = Some(child);
        tokio::time::timeout(WAIT, async {
            while redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: Redis gets no chance to save anything beyond what its persistence already wrote.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// SIGSTOP: Redis keeps its connections but answers nothing until [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("redis-server is running");
        let status = std::process::Command::new("kill").args(["-s", signal, &pid.to_string()]).status();
        assert!(status.expect("kill").success());
    }

    /// Starts it again on the same port and directory (so with the same AOF, when persistent).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// A connection for checks the protocol cannot make.
    /// Every entry of a canvas's log stream, oldest first.
    pub async fn log(&self, canvas: &str) -> Vec<redis::streams::StreamId> {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("relay:{{{canvas}}}:log"))
            .arg("-")
            .arg("+")
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
        entries.ids
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.expect("connect to Redis")
    }
}
