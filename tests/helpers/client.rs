//! A WebSocket client that speaks the wire contract, for the integration tests: connect and read the
//! welcome, publish, read frames with bounded waits, follow a seq stream checking it is gap-free.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

/// A WebSocket client speaking the wire contract.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

/// What a client saw after its welcome, seq by seq.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Someone else's message: (type, from, data).
    Message { kind: String, from: String, data: Value },
    /// The ack of one of our own messages, with its ref.
    Ack { reference: Option<String> },
}

impl Seen {
    /// The type of someone else's message; `"ack"` for an ack.
    pub fn kind(&self) -> &str {
        match self {
            Seen::Message { kind, .. } => kind,
            Seen::Ack { .. } => "ack",
        }
    }

    /// The data of someone else's message; panics on an ack (the caller expected only others' messages).
    pub fn data(&self) -> &Value {
        match self {
            Seen::Message { data, .. } => data,
            Seen::Ack { .. } => panic!("expected a message from someone else, got an ack"),
        }
    }
}

impl Client {
    /// Connects to a WebSocket URL and reads the welcome; an HTTP refusal comes back as (status, JSON body).
    pub async fn connect_url(url: String) -> Result<Client, (u16, Value)> {
        Client::connect_with_origin(url, None).await
    }

    /// Opens a multiplexed socket (`GET /ws`, v1.1), which gets no welcome until it joins a canvas.
    pub async fn open_multiplexed(url: String) -> Result<Client, (u16, Value)> {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.expect("connect timed out") {
            Ok((ws, _)) => Ok(Client { ws, welcome: Value::Null }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().map(serde_json::from_slice).and_then(Result::ok);
                Err((status, body.unwrap_or(Value::Null)))
            }
            Err(error) => panic!("connect failed: {error}"),
        }
    }

    /// On a multiplexed socket: joins `canvas` (resuming from `resume`, if given) and returns its welcome,
    /// which must be the next frame but for presence states of the socket's other canvases (ephemeral:
    /// one of a connection gone from another instance may come late, in a cursor batch).
    pub async fn join(&mut self, canvas: &str, resume: Option<(u64, &str)>) -> Value {
        let mut join = json!({"type": "join", "canvas": canvas});
        if let Some((since, epoch)) = resume {
            join["since"] = since.into();
            join["epoch"] = epoch.into();
        }
        self.send(join).await;
        let welcome = loop {
            let frame = self.recv().await;
            if frame["type"] != "presence" || frame["canvas"] == canvas {
                break frame;
            }
        };
        assert_eq!(
            (welcome["type"].as_str(), welcome["canvas"].as_str()),
            (Some("welcome"), Some(canvas)),
            "{welcome}"
        );
        welcome
    }

    /// [`Client::connect_url`], sending an `Origin` header as a browser page on that origin would.
    pub async fn connect_with_origin(url: String, origin: Option<&str>) -> Result<Client, (u16, Value)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a WebSocket URL");
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().expect("an origin header value"));
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("connect timed out") {
            Ok((ws, _)) => {
                let mut client = Client { ws, welcome: Value::Null };
                let welcome = client.recv().await;
                assert_eq!(welcome["type"], "welcome", "first frame must be the welcome");
                client.welcome = welcome;
                Ok(client)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().map(serde_json::from_slice).and_then(Result::ok);
                Err((status, body.unwrap_or(Value::Null)))
            }
            Err(error) => panic!("connect failed: {error}"),
        }
    }

    pub fn seq(&self) -> u64 {
        self.welcome["seq"].as_u64().unwrap()
    }

    pub fn epoch(&self) -> String {
        self.welcome["epoch"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.expect("send");
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    /// Publishes a logged message.
    pub async fn publish(&mut self, kind: &str, data: Value, reference: &str) {
        self.send(json!({"type": kind, "data": data, "ref": reference})).await;
    }

    /// The next text frame as JSON (WebSocket pings and pongs are skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("no frame in time");
            match frame.expect("socket ended").expect("socket error") {
                Message::Text(text) => return serde_json::from_str(&text).expect("server sent invalid JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame that is not of type `kind` (e.g. the `presence` frame a closing connection's
    /// peers get beside its `user-disconnected`, for a test about the latter).
    pub async fn recv_skipping(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] != kind {
                return frame;
            }
        }
    }

    /// Reads frames until the server closes; returns the close code and the text frames before it.
    pub async fn recv_until_close(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("no close in time");
            match frame {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(close))) => return (close.map(|c| u16::from(c.code)), frames),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (None, frames),
            }
        }
    }

    /// Reads until seq `upto` has been seen, checking the stream is gap-free and in order from the welcome.
    /// Frames without a seq (cursors, errors, pongs) are returned separately.
    pub async fn read_through(&mut self, upto: u64) -> (Vec<(u64, Seen)>, Vec<Value>) {
        let mut next = self.seq() + 1;
        let mut seen = Vec::new();
        let mut other = Vec::new();
        while next <= upto {
            let frame = self.recv().await;
            let Some(seq) = frame["seq"].as_u64() else {
                other.push(frame);
                continue;
            };
            assert_eq!(seq, next, "gap or reorder: expected seq {next}, got {frame}");
            let item = if frame["type"] == "ack" {
                Seen::Ack { reference: frame["ref"].as_str().map(str::to_owned) }
            } else {
                Seen::Message {
                    kind: frame["type"].as_str().unwrap().to_owned(),
                    from: frame["from"].as_str().unwrap().to_owned(),
                    data: frame["data"].clone(),
                }
            };
            seen.push((seq, item));
            next += 1;
        }
        (seen, other)
    }

    /// Reads the presence messages (others joining or leaving) up to seq `upto`, gap-free; panics on anything
    /// else. For tests that connect several clients before the part they look at.
    pub async fn skip_presence(&mut self, upto: u64) {
        let (seen, other) = self.read_through(upto).await;
        for (seq, item) in seen {
            let Seen::Message { kind, .. } = item else { panic!("seq {seq}: expected presence, got an ack") };
            assert!(kind.starts_with("user-"), "seq {seq}: expected presence, got {kind}");
        }
        // Presence states (v1.1) may come among them: a connection that closed meanwhile goes null.
        let other: Vec<&Value> = other.iter().filter(|frame| frame["type"] != "presence").collect();
        assert!(other.is_empty(), "unexpected frames: {other:?}");
        self.welcome["seq"] = upto.into();
    }

    /// Creates `count` objects `{"id": "<prefix><n>", "n": n, "pad": <pad bytes>}`, keeping up to 256 unacked,
    /// and waits for every ack (other frames are skipped). Returns the last seq acked.
    pub async fn create_objects(&mut self, prefix: &str, count: usize, pad: usize) -> u64 {
        let padding = "p".repeat(pad);
        let (mut sent, mut acked, mut last) = (0, 0, 0);
        while acked < count {
            while sent < count && sent - acked < 256 {
                let data = json!({"id": format!("{prefix}{sent}"), "n": sent, "pad": padding});
                self.send(json!({"type": "object-create", "data": data, "ref": format!("c{sent}")})).await;
                sent += 1;
            }
            let frame = self.recv().await;
            match frame["type"].as_str() {
                Some("ack") => {
                    acked += 1;
                    last = frame["seq"].as_u64().unwrap();
                }
                Some("error") => panic!("creating objects: {frame}"),
                _ => {}
            }
        }
        last
    }

    /// Sends a close frame and waits for the server's reply.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}
