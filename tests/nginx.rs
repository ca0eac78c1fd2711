//! Two instances behind a real nginx running the repository's `nginx.conf` (rendered for the test's instances
//! by `scripts/nginx-conf.sh`, as `scripts/cluster.sh` does): a short `load-test latency` run through it with
//! no loss and no gap (and the canvas app served through it), and fail-over: the instance serving a client is killed, the client reconnects through nginx to
//! the survivor and resumes with no gap. Needs `nginx` (the test command installs it).

mod helpers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use helpers::{Client, SharedFile, WAIT};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// nginx in the foreground on a free loopback port, in its own temporary prefix.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _prefix: tempfile::TempDir,
}

impl Nginx {
    async fn start(instances: &[SocketAddr]) -> Nginx {
        let prefix = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(prefix.path().join("tmp")).unwrap();
        let addr = free_port();
        let conf = render(instances, addr);
        let conf_path = prefix.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx is required for this test: apt-get install nginx (scripts/test.sh does)");
        tokio::time::timeout(WAIT, async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("nginx did not start listening");
        Nginx { child, addr, _prefix: prefix }
    }

    async fn connect(&self, path_and_query: &str) -> Client {
        Client::connect_url(format!("ws://{}{}", self.addr, path_and_query)).await.expect("connect through nginx")
    }
}

impl Drop for Nginx {
    /// SIGTERM lets the master stop its worker; a SIGKILLed master would leave the worker running. The master
    /// exits once its worker has: that is waited for (bounded), not a fixed while.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let deadline = std::time::Instant::now() + WAIT;
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn nginx_binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.exists() {
        sbin.to_owned()
    } else {
        PathBuf::from("nginx")
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `nginx.conf` for our instances and listen address, rendered by `scripts/nginx-conf.sh` (as the cluster
/// script does).
fn render(instances: &[SocketAddr], listen: SocketAddr) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nginx-conf.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg(listen.to_string())
        .args(instances.iter().map(SocketAddr::to_string))
        .output()
        .expect("run scripts/nginx-conf.sh");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_run_through_nginx_loses_nothing_and_sees_no_gap() {
    let file = SharedFile::new();
    let args = ["--rate-limit", "0", "--allowed-origins", "https://app.example"];
    let (a, b) = (file.start(&args).await, file.start(&args).await);
    let nginx = Nginx::start(&[a.addr, b.addr]).await;
    let load_test = Path::new(env!("CARGO_BIN_EXE_canvas-relay")).with_file_name("load-test");
    assert!(load_test.exists(), "build the workspace first (cargo build --workspace): {}", load_test.display());
    let output = Command::new(load_test)
        .args(["latency", "--targets", &nginx.addr.to_string(), "--duration", "3s", "--rate", "200"])
        .args(["--clients", "12", "--canvases", "4", "--json"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "load-test failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["gaps"].as_u64(), report["lost"].as_u64(), report["errors"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(report["acked"], report["sent"], "{report}");
    assert!(report["delivered"].as_u64().unwrap() > 0, "{report}");
    // The canvas app comes through the same address.
    let (status, page) = helpers::http(nginx.addr, "GET", "/?canvas=team-1&name=Ann", None, "").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"src="/app/app.js""#), "{page}");
    let (status, script) = helpers::http(nginx.addr, "GET", "/app/draw.js", None, "").await;
    assert_eq!(status, 200);
    assert!(script.contains("export function mountBoard"));
    // A multiplexed socket (the JS client's, the app's) upgrades through nginx too.
    let mut mux = Client::open_multiplexed(format!("ws://{}/ws?user=ann", nginx.addr)).await.expect("GET /ws");
    mux.join("team-1", None).await;
    mux.send(json!({"type": "note", "canvas": "team-1", "data": 1, "ref": "n"})).await;
    assert_eq!(mux.recv().await["type"], "ack");
    // nginx passes the Host with its port, so the app's own origin through nginx passes --allowed-origins.
    let url = format!("ws://{}/ws/o?user=ann", nginx.addr);
    assert!(Client::connect_with_origin(url.clone(), Some(&format!("http://{}", nginx.addr))).await.is_ok());
    assert_eq!(Client::connect_with_origin(url, Some("https://evil.example")).await.err().unwrap().0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_instance_dies_its_clients_resume_through_nginx_on_another_with_no_gap() {
    let file = SharedFile::new();
    let mut instances = [file.start(&[]).await, file.start(&[]).await];
    let nginx = Nginx::start(&[instances[0].addr, instances[1].addr]).await;

    let mut ann = nginx.connect("/ws/fo?user=ann").await;
    let id_of_first = instances[0].connect("probe", "p").await.welcome["instance"].clone();
    let serving = usize::from(ann.welcome["instance"] != id_of_first);
    let mut bob = instances[1 - serving].connect("fo", "bob").await; // on the instance that survives
    ann.skip_presence(bob.seq()).await;
    for n in 0..20 {
        ann.publish("note", json!({"n": n}), "r").await;
    }
    let (acks, _) = ann.read_through(bob.seq() + 20).await;
    assert_eq!(acks.len(), 20);
    let (epoch, last) = (ann.epoch(), bob.seq() + 20);

    instances[serving].kill().await;
    let (_, _) = ann.recv_until_close().await;
    for n in 20..30 {
        bob.publish("note", json!({"n": n}), "r").await; // while ann is away
    }
    let mut back = nginx.connect(&format!("/ws/fo?user=ann&since={last}&epoch={epoch}")).await;
    assert_eq!(back.welcome["resumed"], true, "{}", back.welcome);
    assert_ne!(back.welcome["instance"], ann.welcome["instance"], "nginx sent the reconnect to the survivor");
    bob.publish("note", json!({"n": 30}), "r").await;
    let (acks, _) = bob.read_through(last + 11).await;
    let head = acks.last().unwrap().0;
    let (seen, _) = back.read_through(head).await;
    let ns: Vec<u64> =
        seen.iter().filter(|(_, s)| s.kind() == "note").map(|(_, s)| s.data()["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (20..=30).collect::<Vec<_>>(), "replay then live, every message once, in order");
}
