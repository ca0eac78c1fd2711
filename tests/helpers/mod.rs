//! Shared setup for the integration tests: real `canvas-relay` processes on one temporary SQLite file, and a
//! WebSocket client that speaks the wire contract. Every wait is bounded; a test that would hang fails with
//! a message instead.

#![allow(dead_code, unused_imports)] // each test file uses a different part of this module

mod client;
mod proxy;
pub mod receiver;
mod redis_server;
mod skip;
pub mod sse;

pub use client::{Client, Seen};
pub use proxy::LossyProxy;
pub use redis_server::{RedisServer, Stall, Store};
pub use skip::skip_requested;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The relay binary Cargo built for these tests.
const RELAY: &str = env!("CARGO_BIN_EXE_canvas-relay");

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// A temporary directory holding the shared database file.
pub struct SharedFile {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl SharedFile {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("relay.db");
        SharedFile { dir, db }
    }

    /// Opens the file directly, as an operator with `sqlite3` would.
    pub fn open(&self) -> canvas_relay::rusqlite::Connection {
        let conn = canvas_relay::rusqlite::Connection::open(&self.db).expect("open db");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.open().query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    pub async fn start(&self, args: &[&str]) -> Instance {
        Instance::start(&self.db, args).await
    }
}

/// One running `canvas-relay serve` process.
pub struct Instance {
    child: Child,
    pub addr: SocketAddr,
    /// Everything the process wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    /// Its own working directory, when it shares nothing with the others but Redis.
    _workdir: Option<tempfile::TempDir>,
}

impl Instance {
    /// Starts a process on `db` on a free port and waits for its "listening on" line.
    pub async fn start(db: &Path, args: &[&str]) -> Instance {
        Instance::spawn(Command::new(RELAY), &[std::ffi::OsStr::new("--db"), db.as_os_str()], None, args).await
    }

    /// Like [`Instance::start`], under a soft open-file limit (`ulimit -n`) of `limit`, set by a shell that
    /// then execs the relay.
    pub async fn start_with_open_file_limit(db: &Path, limit: u32, args: &[&str]) -> Instance {
        let mut command = Command::new("sh");
        command.args(["-c", &format!("ulimit -S -n {limit} && exec \"$0\" \"$@\""), RELAY]);
        Instance::spawn(command, &[std::ffi::OsStr::new("--db"), db.as_os_str()], None, args).await
    }

    /// Starts a process on the Redis bus at `url`, in a working directory of its own (its `--db` is a file
    /// there that the Redis bus never opens).
    pub async fn start_on_redis(url: &str, args: &[&str]) -> Instance {
        let workdir = tempfile::tempdir().expect("temp dir");
        let bus = ["--bus", url, "--db", "relay.db"].map(std::ffi::OsStr::new);
        Instance::spawn(Command::new(RELAY), &bus, Some(workdir), args).await
    }

    /// [`Instance::start_on_redis`] under a soft open-file limit of `limit` (see
    /// [`Instance::start_with_open_file_limit`]).
    pub async fn start_on_redis_with_open_file_limit(url: &str, limit: u32, args: &[&str]) -> Instance {
        let workdir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new("sh");
        command.args(["-c", &format!("ulimit -S -n {limit} && exec \"$0\" \"$@\""), RELAY]);
        let bus = ["--bus", url, "--db", "relay.db"].map(std::ffi::OsStr::new);
        Instance::spawn(command, &bus, Some(workdir), args).await
    }

    /// Runs `command` (the relay, or a shell that execs it) with `serve` and the arguments; on a free port
    /// unless `args` name one with `--listen` (a restart on the same port).
    async fn spawn(
        mut command: Command,
        storage: &[&std::ffi::OsStr],
        workdir: Option<tempfile::TempDir>,
        args: &[&str],
    ) -> Instance {
        if let Some(dir) = &workdir {
            command.current_dir(dir.path());
        }
        command.arg("serve");
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(storage)
            .args(args)
            .env("RUST_LOG", std::env::var("RELAY_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn canvas-relay");
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap();
                    return addr.parse::<SocketAddr>().expect("address in the listening line");
                }
            }
            panic!("canvas-relay exited before listening:\n{}", log.lock().unwrap());
        })
        .await
        .expect("canvas-relay did not start in time");
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Instance { child, addr, log, _workdir: workdir }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// Connects `user` to `canvas` and reads the welcome.
    pub async fn connect(&self, canvas: &str, user: &str) -> Client {
        self.connect_path(&format!("/ws/{canvas}?user={user}")).await.expect("connect")
    }

    /// Connects with `since` + `epoch` and reads the welcome.
    pub async fn resume(&self, canvas: &str, user: &str, since: u64, epoch: &str) -> Client {
        self.connect_path(&format!("/ws/{canvas}?user={user}&since={since}&epoch={epoch}")).await.expect("resume")
    }

    /// Opens a multiplexed socket (`/ws?<query>`, v1.1): no welcome until a join.
    pub async fn multiplexed(&self, query: &str) -> Client {
        Client::open_multiplexed(self.url(&format!("/ws?{query}"))).await.expect("open a multiplexed socket")
    }

    /// Connects to any path; an HTTP refusal comes back as (status, JSON body).
    pub async fn connect_path(&self, path_and_query: &str) -> Result<Client, (u16, Value)> {
        Client::connect_url(self.url(path_and_query)).await
    }

    /// A plain HTTP GET: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.http("GET", path, None, "").await
    }

    /// An HTTP/1.1 request with an optional bearer key: (status, body).
    pub async fn http(&self, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
        http(self.addr, method, path, key, body).await
    }

    /// An HTTP request whose answer is JSON: (status, body).
    pub async fn api(&self, method: &str, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        self.api_with(method, path, key, &[], body).await
    }

    /// [`Instance::api`] with more request headers.
    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Value,
    ) -> (u16, Value) {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let auth = key.map(|key| format!("Bearer {key}"));
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|auth| ("Authorization", auth)).into_iter().chain(headers.iter().copied()).collect();
        let (status, text) = http_with(self.addr, method, path, &headers, &body).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}")))
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args(["-s", signal, &self.pid().to_string()]).status();
        assert!(status.expect("kill").success());
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill -9");
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.expect("process did not exit").unwrap();
        status.code()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// One series of `/metrics`, named with its labels as Prometheus prints them (e.g.
    /// `relay_clients_cut_total{reason="slow"}`); 0 when it is not there yet.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
    }
}

impl Drop for Instance {
    /// A failing test shows what the server logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- canvas-relay {} log ---\n{}", self.addr, self.log_text());
        }
    }
}

/// Removes HTTP/1.1 chunked framing if present.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else { return body.to_owned() };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return body.to_owned() };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_owned();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// The numeric value of a close code, for assertions.
pub fn code(code: CloseCode) -> u16 {
    code.into()
}

/// An HTTP/1.1 request to any address (an instance, or nginx in front of them): (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let auth = key.map(|key| format!("Bearer {key}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|auth| ("Authorization", auth)).into_iter().collect();
    http_with(addr, method, path, &headers, body).await
}

/// [`http`] with any request headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.expect("http timed out").unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, dechunk(&body))
}

/// [`http_with`] that answers `None` instead of panicking when the address does not answer (an instance
/// killed or restarting) or the answer is cut short.
pub async fn try_http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.ok()?.ok()?;
    let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.ok()?.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, dechunk(body)))
}

/// Polls `condition` every 50 ms until it holds; fails the test, saying `what` was awaited, after twice
/// [`WAIT`] (deliveries under a loaded machine may take a while; a condition that never holds is a bug).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the scenario `async fn $name(store: Store)` as two tests, `$name::sqlite` (one shared file) and
/// `$name::redis` (a real redis-server; instances that share nothing else).
#[macro_export]
macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::helpers::Store::sqlite()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                if let Some(store) = super::helpers::Store::redis().await {
                    super::$name(store).await
                }
            }
        }
    )*};
}
