//! A minimal Server-Sent Events client for `GET /api/v1/stream`: one HTTP/1.1 request over a plain TCP
//! connection (loopback only, no TLS), the response head checked for 200, the body decoded (chunked, sized,
//! or up to the close) and cut into events at blank lines, comments (`: keep-alive`) skipped. Written by
//! hand because the workspace's hyper is built without its client, and enabling it would add crates to
//! Cargo.lock. It does not judge events (`stream`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// How much of a refusal's body the error quotes.
const MAX_QUOTE: usize = 512;

/// One event as the server framed it.
pub struct Event {
    /// Its `id:` (a stream position), if it had one.
    pub id: Option<String>,
    /// Its `event:` (`message` when absent, as in the SSE spec).
    pub kind: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// How the response body ends.
enum Framing {
    /// `Transfer-Encoding: chunked`: `left` bytes of the current chunk to go (0: a size line is next), then
    /// its CRLF if `crlf`.
    Chunked { left: usize, crlf: bool },
    /// `Content-Length`: this many bytes to go.
    Length(usize),
    /// Neither: the body ends when the server closes.
    Close,
}

/// An open stream.
pub struct Sse {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    raw: Vec<u8>,
    /// Decoded body bytes not yet cut into events, from `cursor` on.
    text: Vec<u8>,
    cursor: usize,
    framing: Framing,
    /// The body ended (last chunk, length reached, or the close).
    ended: bool,
    /// The event being assembled.
    pending: (Option<String>, Option<String>, Option<String>),
    /// Scratch for socket reads.
    buf: Box<[u8]>,
}

/// Opens `path` (with its query) on `target`; an error quotes the status and the body of a refusal.
pub async fn open(target: &str, path: &str, api_key: Option<&str>, last_event_id: Option<&str>) -> anyhow::Result<Sse> {
    let mut stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\n");
    if let Some(key) = api_key {
        request += &format!("Authorization: Bearer {key}\r\n");
    }
    if let Some(id) = last_event_id {
        request += &format!("Last-Event-ID: {id}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).await?;
    let mut sse = Sse {
        stream,
        raw: Vec::new(),
        text: Vec::new(),
        cursor: 0,
        framing: Framing::Close,
        ended: false,
        pending: (None, None, None),
        buf: vec![0; 64 << 10].into_boxed_slice(),
    };
    let status = sse.read_head().await?;
    if status != 200 {
        let quote = tokio::time::timeout(std::time::Duration::from_secs(2), sse.quote()).await.unwrap_or_default();
        anyhow::bail!("GET {path} on {target} answered {status}: {quote}");
    }
    Ok(sse)
}

impl Sse {
    /// The next event; `None` once the server ended the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            while let Some(end) = self.text[self.cursor..].iter().position(|&b| b == b'\n') {
                let line = &self.text[self.cursor..self.cursor + end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = String::from_utf8_lossy(line).into_owned();
                self.cursor += end + 1;
                if let Some(event) = self.line(&line) {
                    return Ok(Some(event));
                }
            }
            self.text.drain(..self.cursor);
            self.cursor = 0;
            if self.ended || !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Takes one line into the pending event; the event when the line is the blank one that ends it.
    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let (id, kind, data) = std::mem::take(&mut self.pending);
            if kind.is_none() && data.is_none() {
                return None;
            }
            return Some(Event { id, kind: kind.unwrap_or_else(|| "message".into()), data: data.unwrap_or_default() });
        }
        if line.starts_with(':') {
            return None; // a comment: the keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match field {
            "id" => self.pending.0 = Some(value),
            "event" => self.pending.1 = Some(value),
            "data" => match &mut self.pending.2 {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.pending.2 = Some(value),
            },
            _ => {} // retry, or a field the spec says to ignore
        }
        None
    }

    /// Reads up to the end of the response head; its status code. Sets how the body is framed.
    async fn read_head(&mut self) -> anyhow::Result<u16> {
        let end = loop {
            if let Some(at) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            anyhow::ensure!(self.raw.len() < MAX_HEAD, "response head over {MAX_HEAD} bytes");
            let n = self.stream.read(&mut self.buf).await?;
            anyhow::ensure!(n > 0, "connection closed before the response head");
            self.raw.extend_from_slice(&self.buf[..n]);
        };
        let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
        self.raw.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| anyhow::anyhow!("not an HTTP response: {head:?}"))?;
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
            if name == "transfer-encoding" && value.contains("chunked") {
                self.framing = Framing::Chunked { left: 0, crlf: false };
            } else if name == "content-length" && !matches!(self.framing, Framing::Chunked { .. }) {
                self.framing = Framing::Length(value.parse().unwrap_or(0));
            }
        }
        self.ended = matches!(self.framing, Framing::Length(0));
        self.decode()?;
        Ok(status)
    }

    /// The start of a refusal's body, as text.
    async fn quote(&mut self) -> String {
        while !self.ended && self.text.len() < MAX_QUOTE {
            if !matches!(self.fill().await, Ok(true)) {
                break;
            }
        }
        let end = self.text.len().min(MAX_QUOTE);
        String::from_utf8_lossy(&self.text[..end]).trim().to_string()
    }

    /// Reads once from the socket and decodes what came; false at the end of the body or the connection.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            self.ended = true;
            return Ok(false);
        }
        self.raw.extend_from_slice(&self.buf[..n]);
        self.decode()?;
        Ok(true)
    }

    /// Moves body bytes from `raw` to `text`, as far as the framing allows.
    fn decode(&mut self) -> anyhow::Result<()> {
        loop {
            match &mut self.framing {
                Framing::Close => {
                    self.text.append(&mut self.raw);
                    return Ok(());
                }
                Framing::Length(left) => {
                    let take = (*left).min(self.raw.len());
                    self.text.extend(self.raw.drain(..take));
                    *left -= take;
                    self.ended |= *left == 0;
                    return Ok(());
                }
                Framing::Chunked { left, crlf } if *left > 0 => {
                    let take = (*left).min(self.raw.len());
                    self.text.extend(self.raw.drain(..take));
                    *left -= take;
                    *crlf = *left == 0;
                    if *left > 0 {
                        return Ok(());
                    }
                }
                Framing::Chunked { crlf, .. } if *crlf => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    self.raw.drain(..2);
                    *crlf = false;
                }
                Framing::Chunked { left, crlf } => {
                    let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return Ok(()) };
                    let line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    self.raw.drain(..end + 2);
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size =
                        usize::from_str_radix(size, 16).map_err(|_| anyhow::anyhow!("bad chunk size {line:?}"))?;
                    if size == 0 {
                        self.ended = true;
                        return Ok(());
                    }
                    (*left, *crlf) = (size, false);
                }
            }
        }
    }
}
