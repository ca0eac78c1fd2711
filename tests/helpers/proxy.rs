//! A TCP proxy in front of a real redis-server that can lose one reply: the request that carries a marker is
//! forwarded to Redis, which applies it, but its reply never reaches the relay and the connection drops.
//! The fault a timeout or a network cut causes, on demand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback proxy to a Redis port.
pub struct LossyProxy {
    pub port: u16,
    /// The marker whose request's reply is to be lost, until it is.
    armed: Arc<Mutex<Option<String>>>,
    /// Replies lost so far.
    lost: Arc<AtomicUsize>,
}

impl LossyProxy {
    pub async fn start(redis_port: u16) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (armed, lost) = (Arc::new(Mutex::new(None::<String>)), Arc::new(AtomicUsize::new(0)));
        let (armed_for_loop, lost_for_loop) = (armed.clone(), lost.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)).await else { continue };
                tokio::spawn(pump(client, server, armed_for_loop.clone(), lost_for_loop.clone()));
            }
        });
        LossyProxy { port, armed, lost }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Loses the reply to the next request that contains `marker`.
    pub fn lose_reply_to(&self, marker: &str) {
        *self.armed.lock().unwrap() = Some(marker.to_owned());
    }

    pub fn replies_lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until `n` replies were lost. A client may hear of a lost reply's request before
    /// the proxy has dropped the reply: on Redis the stream reader acks from the log entry.
    pub async fn wait_replies_lost(&self, n: usize) -> usize {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.replies_lost() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.replies_lost()
    }
}

async fn pump(client: TcpStream, server: TcpStream, armed: Arc<Mutex<Option<String>>>, lost: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cut = Arc::new(tokio::sync::Notify::new());
    let cut_after_request = cut.clone();
    let upstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let marked = {
                let mut armed = armed.lock().unwrap();
                let hit =
                    armed.as_ref().is_some_and(|marker| buf[..n].windows(marker.len()).any(|w| w == marker.as_bytes()));
                if hit {
                    *armed = None;
                }
                hit
            };
            if marked {
                // Before the request leaves: its answer cannot come back before the cut is known.
                cut_after_request.notify_one();
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut cutting = false;
    loop {
        let n = tokio::select! {
            biased;
            () = cut.notified(), if !cutting => {
                cutting = true;
                continue;
            }
            read = server_read.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        if cutting {
            // Redis answered the marked request: that answer (and whatever came with it) is lost, and the
            // connection goes down as a network fault would take it.
            lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
    let _ = client_write.shutdown().await;
}
