//! A plain TCP client for `GET /api/v1/stream` (Server-Sent Events) for the stream tests: sends the request
//! with the API key and an optional `Last-Event-ID`, undoes HTTP/1.1 chunked framing as it reads, and splits
//! the body into events (`id:`, `event:`, `data:` lines up to a blank line) and comment lines (`:`), lines
//! ending where an EventSource ends them (CRLF, LF or CR).
//!
//! It owns no assertions about what the stream should hold: the tests do.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use super::WAIT;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    /// `message` when the server named none (the SSE default).
    pub event: String,
    pub data: String,
}

impl Event {
    /// `data` as JSON; panics (naming the event) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|_| panic!("event data is not JSON: {self:?}"))
    }
}

/// What the stream yields: an event, or a comment line (keep-alive).
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Event(Event),
    Comment(String),
}

/// An open event stream.
pub struct EventStream {
    reader: BufReader<TcpStream>,
    pub content_type: Option<String>,
    /// The body is chunked: `pending` is filled chunk by chunk.
    chunked: bool,
    /// Body bytes read but not yet split into lines.
    pending: Vec<u8>,
    /// The last line ended at a CR: an LF right after it belongs to that line ending.
    after_cr: bool,
}

impl EventStream {
    /// Opens `GET /api/v1/stream{query}` on `addr`; a refusal comes back as (status, body).
    pub async fn open(
        addr: SocketAddr,
        query: &str,
        key: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, (u16, String)> {
        EventStream::open_with_window(addr, query, key, last_event_id, None).await
    }

    /// [`EventStream::open`] with this socket's receive buffer set to `window` bytes, so that a reader that
    /// does not read makes the server's side fill up soon instead of after megabytes of kernel buffers.
    pub async fn open_with_window(
        addr: SocketAddr,
        query: &str,
        key: Option<&str>,
        last_event_id: Option<&str>,
        window: Option<u32>,
    ) -> Result<EventStream, (u16, String)> {
        let socket = TcpSocket::new_v4().expect("a socket");
        if let Some(window) = window {
            socket.set_recv_buffer_size(window).expect("SO_RCVBUF");
        }
        let mut stream = tokio::time::timeout(WAIT, socket.connect(addr)).await.expect("connect timed out").unwrap();
        let mut request =
            format!("GET /api/v1/stream{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(key) = key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send the request");
        let mut events = EventStream {
            reader: BufReader::new(stream),
            content_type: None,
            chunked: false,
            pending: Vec::new(),
            after_cr: false,
        };
        let status = tokio::time::timeout(WAIT, events.read_head()).await.expect("no response head in time");
        if status == 200 {
            return Ok(events);
        }
        let mut body = Vec::new();
        while tokio::time::timeout(WAIT, events.fill()).await.expect("no error body in time") {}
        body.append(&mut events.pending);
        Err((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Reads the status line and headers; returns the status.
    async fn read_head(&mut self) -> u16 {
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("status line");
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.expect("a header line");
            let header = line.trim_end();
            if header.is_empty() {
                return status;
            }
            let Some((name, value)) = header.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                self.chunked = true;
            } else if name == "content-type" {
                self.content_type = Some(value.to_owned());
            }
        }
    }

    /// Reads more of the body into `pending`; false when the body (or the connection) ended.
    async fn fill(&mut self) -> bool {
        if !self.chunked {
            let mut buf = [0u8; 16 * 1024];
            return match self.reader.read(&mut buf).await {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    true
                }
            };
        }
        let mut size = String::new();
        if !matches!(self.reader.read_line(&mut size).await, Ok(n) if n > 0) {
            return false;
        }
        let Ok(size) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else { return false };
        if size == 0 {
            return false;
        }
        let mut chunk = vec![0u8; size + 2]; // the chunk and its CRLF
        if self.reader.read_exact(&mut chunk).await.is_err() {
            return false;
        }
        self.pending.extend_from_slice(&chunk[..size]);
        true
    }

    /// The next line of the body without its line ending; `None` when the stream ended. Lines end as an
    /// EventSource ends them: at CRLF, at a lone LF, or at a lone CR.
    async fn line(&mut self) -> Option<String> {
        loop {
            if self.after_cr && !self.pending.is_empty() {
                if self.pending[0] == b'\n' {
                    self.pending.remove(0); // the LF of a CRLF whose CR ended the last line
                }
                self.after_cr = false;
            }
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n' || *b == b'\r') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                self.after_cr = line.last() == Some(&b'\r');
                let line = String::from_utf8(line).expect("the stream is UTF-8");
                return Some(line[..line.len() - 1].to_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next event or comment; `None` when the server ended the stream. Fails the test after [`WAIT`].
    pub async fn next(&mut self) -> Option<Item> {
        tokio::time::timeout(WAIT, self.next_item()).await.expect("nothing on the stream in time")
    }

    async fn next_item(&mut self) -> Option<Item> {
        let (mut id, mut event, mut data, mut fields) = (None, None, Vec::new(), 0);
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                if fields > 0 {
                    let event = event.unwrap_or_else(|| "message".to_owned());
                    return Some(Item::Event(Event { id, event, data: data.join("\n") }));
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                if fields == 0 {
                    return Some(Item::Comment(comment.to_owned()));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            fields += 1;
            match field {
                "id" => id = Some(value),
                "event" => event = Some(value),
                "data" => data.push(value),
                _ => {} // retry:, or a field this client does not know
            }
        }
    }

    /// The next event, comments skipped; `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.next().await? {
                Item::Event(event) => return Some(event),
                Item::Comment(_) => continue,
            }
        }
    }

    /// The next `count` events; panics if the stream ends first.
    pub async fn events(&mut self, count: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            let event = self.next_event().await;
            events.push(event.unwrap_or_else(|| panic!("the stream ended after {} of {count} events", events.len())));
        }
        events
    }
}
