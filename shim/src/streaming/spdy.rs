//! SPDY/3.1, as the kubelet's streaming library speaks it through
//! `moby/spdystream`: the client upgrades an HTTP/1.1 request, opens
//! streams with SYN_STREAM (odd ids, a `streamtype` header, and `port` /
//! `requestid` for port-forward), and the server answers each with
//! SYN_REPLY. Header blocks are zlib streams (one per direction, primed
//! with the SPDY/3 dictionary). Data frames carry the bytes; FLAG_FIN ends
//! a direction. spdystream does no flow control, so none is enforced;
//! PING is echoed, SETTINGS and WINDOW_UPDATE are read and ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::Pending;
use super::session::{self, ERROR, STDERR, STDOUT, Version};
use crate::cri::Daemon;

const REMOTECOMMAND: &[(&str, Version)] = &[
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V3),
    ("v2.channel.k8s.io", Version::V2),
    ("channel.k8s.io", Version::V1),
];
const PORTFORWARD: &str = "portforward.k8s.io";
/// How long the client has to open the streams a session needs.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame accepted (spdystream writes at most 64 KiB of data).
const MAX_FRAME: usize = 16 << 20;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;

pub async fn upgrade(d: Arc<Daemon>, pending: Pending, req: axum::extract::Request) -> Response {
    let offered: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    // The client's first choice that we serve; none offered means the
    // oldest protocol.
    let chosen: Option<(&str, Version)> = match &pending {
        Pending::PortForward(_) => offered
            .iter()
            .any(|o| o == PORTFORWARD)
            .then_some((PORTFORWARD, Version::V1)),
        _ if offered.is_empty() => Some(("", Version::V1)),
        _ => offered
            .iter()
            .find_map(|o| REMOTECOMMAND.iter().find(|(p, _)| p == o).copied()),
    };
    let Some((protocol, version)) = chosen else {
        return (
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}"),
        )
            .into_response();
    };
    let on_upgrade = hyper::upgrade::on(req);
    let idle = d
        .streaming
        .get()
        .map(|s| s.idle_timeout)
        .unwrap_or(Duration::from_secs(4 * 3600));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let conn = Conn::start(TokioIo::new(upgraded), idle);
                match pending {
                    Pending::PortForward(pf) => portforward(d, pf.pod_sandbox_id, conn).await,
                    other => remotecommand(d, other, conn, version).await,
                }
            }
            Err(e) => tracing::warn!("SPDY upgrade: {e}"),
        }
    });
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("SPDY/3.1"),
    );
    if !protocol.is_empty() {
        h.insert(
            "X-Stream-Protocol-Version",
            http::HeaderValue::from_static(protocol),
        );
    }
    r
}

/// What the connection's reader hands the session.
#[derive(Debug)]
pub enum Event {
    /// A new stream from the client, with its headers.
    Stream {
        id: u32,
        headers: HashMap<String, String>,
    },
    Data {
        id: u32,
        data: Bytes,
        fin: bool,
    },
    Reset {
        id: u32,
    },
}

/// What the writer sends.
enum Out {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Ping(u32),
    GoAway,
}

/// A SPDY connection: a reader task turning frames into [`Event`]s and a
/// writer task serializing what the session sends.
pub struct Conn {
    pub events: mpsc::Receiver<Event>,
    out: mpsc::Sender<Out>,
    writer: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn start<T: AsyncRead + AsyncWrite + Send + 'static>(io: T, idle: Duration) -> Conn {
        let (rd, wr) = tokio::io::split(io);
        let (ev_tx, events) = mpsc::channel(64);
        let (out, out_rx) = mpsc::channel(64);
        let writer = tokio::spawn(write_loop(wr, out_rx));
        let pings = out.clone();
        tokio::spawn(async move {
            if let Err(e) = read_loop(rd, ev_tx, pings, idle).await {
                tracing::debug!("SPDY connection: {e}");
            }
        });
        Conn {
            events,
            out,
            writer,
        }
    }

    pub async fn reply(&self, id: u32) {
        let _ = self.out.send(Out::Reply(id)).await;
    }

    pub fn sender(&self) -> StreamSender {
        StreamSender {
            out: self.out.clone(),
        }
    }

    /// GOAWAY, then the connection closes once everything queued is sent.
    pub async fn close(self) {
        let _ = self.out.send(Out::GoAway).await;
        drop(self.out);
        drop(self.events);
        let _ = self.writer.await;
    }
}

/// Sends data on the server's side of streams.
#[derive(Clone)]
pub struct StreamSender {
    out: mpsc::Sender<Out>,
}

impl StreamSender {
    pub async fn data(&self, id: u32, data: Bytes, fin: bool) -> bool {
        self.out.send(Out::Data { id, data, fin }).await.is_ok()
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    events: mpsc::Sender<Event>,
    out: mpsc::Sender<Out>,
    idle: Duration,
) -> Result<(), String> {
    let mut inflate = flate2::Decompress::new(true);
    let dict = cri_api::spdy_dictionary();
    let mut head = [0u8; 8];
    loop {
        match tokio::time::timeout(idle, rd.read_exact(&mut head)).await {
            Err(_) => return Err(format!("idle for {}s", idle.as_secs())),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes"));
        }
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let ev = Event::Data {
                id,
                data: Bytes::from(body),
                fin: flags & FLAG_FIN != 0,
            };
            if events.send(ev).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |at: usize| -> Result<u32, String> {
            body.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .ok_or_else(|| "short control frame".to_string())
        };
        match kind {
            SYN_STREAM => {
                let id = word(0)?;
                let block = body.get(10..).ok_or("short SYN_STREAM")?;
                let headers = decode_headers(&mut inflate, &dict, block)?;
                if events.send(Event::Stream { id, headers }).await.is_err() {
                    return Ok(());
                }
            }
            RST_STREAM => {
                let id = word(0)?;
                let _ = events.send(Event::Reset { id }).await;
            }
            PING => {
                let _ = out.send(Out::Ping(word(0)?)).await;
            }
            GOAWAY => return Ok(()),
            // SETTINGS, HEADERS, WINDOW_UPDATE, SYN_REPLY: nothing to do
            // (HEADERS would still advance the zlib stream).
            8 => {
                if let Some(block) = body.get(4..) {
                    decode_headers(&mut inflate, &dict, block)?;
                }
            }
            _ => {}
        }
    }
}

/// Inflates a header block with the connection's zlib stream and parses
/// it: a count, then length-prefixed names and values (names lowercase,
/// several values joined by NUL).
fn decode_headers(
    inflate: &mut flate2::Decompress,
    dict: &[u8],
    block: &[u8],
) -> Result<HashMap<String, String>, String> {
    let mut plain = Vec::with_capacity(block.len() * 4 + 64);
    let mut input = block;
    loop {
        let before_in = inflate.total_in();
        let before_out = inflate.total_out();
        if plain.capacity() - plain.len() < 1024 {
            plain.reserve(4096);
        }
        match inflate.decompress_vec(input, &mut plain, flate2::FlushDecompress::Sync) {
            Ok(_) => {}
            Err(e) if e.needs_dictionary().is_some() => {
                inflate
                    .set_dictionary(dict)
                    .map_err(|e| format!("header dictionary: {e}"))?;
            }
            Err(e) => return Err(format!("header block: {e}")),
        }
        let used = (inflate.total_in() - before_in) as usize;
        input = &input[used..];
        let produced = inflate.total_out() - before_out;
        if input.is_empty() && produced == 0 {
            break;
        }
        if input.is_empty() && plain.capacity() > plain.len() {
            break;
        }
        if plain.len() > MAX_FRAME {
            return Err("header block too large".into());
        }
    }
    parse_block(&plain)
}

fn parse_block(b: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = b.get(at..at + n).ok_or("short header block")?;
        at += n;
        Ok(s)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| "count")?);
    let mut h = HashMap::new();
    for _ in 0..count {
        let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| "len")?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| "len")?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        h.insert(name, value);
    }
    Ok(h)
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
    let dict = cri_api::spdy_dictionary();
    let _ = deflate.set_dictionary(&dict);
    while let Some(o) = rx.recv().await {
        let frame = match o {
            Out::Reply(id) => {
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&encode_headers(&mut deflate, &[]));
                control(SYN_REPLY, 0, &body)
            }
            Out::Data { id, data, fin } => {
                let mut f = Vec::with_capacity(8 + data.len());
                f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                f.push(if fin { FLAG_FIN } else { 0 });
                f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                f.extend_from_slice(&data);
                f
            }
            Out::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Out::GoAway => {
                let mut body = 0u32.to_be_bytes().to_vec();
                body.extend_from_slice(&0u32.to_be_bytes());
                control(GOAWAY, 0, &body)
            }
        };
        if wr.write_all(&frame).await.is_err() {
            return;
        }
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

fn encode_headers(deflate: &mut flate2::Compress, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
        plain.extend_from_slice(k.as_bytes());
        plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
        plain.extend_from_slice(v.as_bytes());
    }
    let mut out = Vec::with_capacity(plain.len() + 64);
    let _ = deflate.compress_vec(&plain, &mut out, flate2::FlushCompress::Sync);
    out
}

/// Exec or attach over SPDY: waits for the streams the request needs,
/// then runs the session with the streams as its channels.
async fn remotecommand(d: Arc<Daemon>, pending: Pending, mut conn: Conn, version: Version) {
    let (stdin, stdout, stderr, tty) = match &pending {
        Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        Pending::PortForward(_) => return,
    };
    let expected = 1
        + usize::from(stdin)
        + usize::from(stdout)
        + usize::from(stderr)
        + usize::from(tty && version >= Version::V3);
    let mut ids: HashMap<String, u32> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    let mut early = Vec::new();
    while ids.len() < expected {
        match tokio::time::timeout_at(deadline, conn.events.recv()).await {
            Ok(Some(Event::Stream { id, headers })) => {
                conn.reply(id).await;
                let kind = headers.get("streamtype").cloned().unwrap_or_default();
                ids.insert(kind, id);
            }
            Ok(Some(other)) => early.push(other),
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(
                    "SPDY session: the client opened {} of {expected} streams",
                    ids.len()
                );
                conn.close().await;
                return;
            }
        }
    }
    let Some(session::Started {
        stdin: stdin_tx,
        resize: resize_tx,
        out: mut out_rx,
        task,
    }) = session::start(
        d,
        pending,
        ids.contains_key("stdin"),
        ids.contains_key("resize"),
        version,
    )
    else {
        return;
    };
    let by_id: HashMap<u32, String> = ids.iter().map(|(k, v)| (*v, k.clone())).collect();
    let sender = conn.sender();
    let stream_of = |ch: u8| {
        let name = match ch {
            STDOUT => "stdout",
            STDERR => "stderr",
            ERROR => "error",
            _ => return None,
        };
        ids.get(name).copied()
    };
    let mut stdin_tx = Some(stdin_tx);
    let mut client_gone = false;
    let mut resize_buf = Vec::new();
    let mut handle = |ev: Event, stdin_tx: &mut Option<mpsc::Sender<Bytes>>| -> Option<Bytes> {
        match ev {
            Event::Data { id, data, fin } => match by_id.get(&id).map(String::as_str) {
                Some("stdin") => {
                    if fin {
                        // Sent after the data, below.
                        return Some(data);
                    }
                    if !data.is_empty() {
                        return Some(data);
                    }
                }
                Some("resize") => {
                    resize_buf.extend_from_slice(&data);
                    // Go's json.Encoder: objects one after another.
                    let mut it = serde_json::Deserializer::from_slice(&resize_buf)
                        .into_iter::<serde_json::Value>();
                    let mut used = 0;
                    while let Some(Ok(v)) = it.next() {
                        used = it.byte_offset();
                        if let (Some(w), Some(h)) = (v["Width"].as_u64(), v["Height"].as_u64()) {
                            let _ = resize_tx.try_send((w as u16, h as u16));
                        }
                    }
                    resize_buf.drain(..used);
                }
                _ => {}
            },
            Event::Reset { id } if by_id.get(&id).map(String::as_str) == Some("stdin") => {
                *stdin_tx = None;
            }
            _ => {}
        }
        None
    };
    for ev in early {
        let fin = matches!(&ev, Event::Data { fin: true, id, .. } if by_id.get(id).map(String::as_str) == Some("stdin"));
        if let Some(data) = handle(ev, &mut stdin_tx)
            && let Some(tx) = &stdin_tx
            && !data.is_empty()
        {
            let _ = tx.send(data).await;
        }
        if fin {
            stdin_tx = None;
        }
    }
    loop {
        tokio::select! {
            ev = conn.events.recv() => {
                let Some(ev) = ev else {
                    stdin_tx = None;
                    client_gone = true;
                    break;
                };
                let fin = matches!(&ev, Event::Data { fin: true, id, .. } if by_id.get(id).map(String::as_str) == Some("stdin"));
                if let Some(data) = handle(ev, &mut stdin_tx)
                    && let Some(tx) = &stdin_tx
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    stdin_tx = None;
                }
                if fin {
                    stdin_tx = None;
                }
            }
            o = out_rx.recv() => match o {
                Some((ch, data)) => {
                    if let Some(id) = stream_of(ch)
                        && !sender.data(id, data, false).await
                    {
                        client_gone = true;
                        break;
                    }
                }
                None => break,
            }
        }
    }
    drop(stdin_tx);
    if client_gone {
        // Nobody to send to: the session sees its output closed and ends
        // (an exec'd process is killed).
        drop(out_rx);
        let _ = task.await;
        drop(sender);
        conn.close().await;
        return;
    }
    // Whatever is still queued, then every stream we write ends.
    while let Some((ch, data)) = out_rx.recv().await {
        if let Some(id) = stream_of(ch) {
            sender.data(id, data, false).await;
        }
    }
    let _ = task.await;
    for name in ["stdout", "stderr", "error"] {
        if let Some(id) = ids.get(name) {
            sender.data(*id, Bytes::new(), true).await;
        }
    }
    drop(sender);
    conn.close().await;
}

/// Port-forward over SPDY: each request is a pair of streams (`error`
/// and `data`) with the same `requestid` and a `port`; the data stream is
/// joined to a connection to that port inside the pod.
/// Port-forward over SPDY carried by any byte stream (the WebSocket
/// tunnel `SPDY/3.1+portforward.k8s.io` hands one).
pub async fn portforward_over<T: AsyncRead + AsyncWrite + Send + 'static>(
    d: Arc<Daemon>,
    pod_id: String,
    io: T,
    idle: Duration,
) {
    portforward(d, pod_id, Conn::start(io, idle)).await
}

async fn portforward(d: Arc<Daemon>, pod_id: String, mut conn: Conn) {
    let Some(pod) = d.pods.find(&pod_id).ok().flatten() else {
        conn.close().await;
        return;
    };
    let netns = d.pods.netns(&pod);
    let sender = conn.sender();
    // requestid → (error stream, data stream, port)
    let mut pairs: HashMap<String, (Option<u32>, Option<u32>, u16)> = HashMap::new();
    // data stream id → bytes for the pod connection
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    while let Some(ev) = conn.events.recv().await {
        match ev {
            Event::Stream { id, headers } => {
                conn.reply(id).await;
                let rid = headers.get("requestid").cloned().unwrap_or_default();
                let port = headers
                    .get("port")
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(0);
                let e = pairs.entry(rid.clone()).or_insert((None, None, port));
                match headers.get("streamtype").map(String::as_str) {
                    Some("error") => e.0 = Some(id),
                    Some("data") => e.1 = Some(id),
                    _ => {}
                }
                if let (Some(err), Some(data), port) = *e {
                    pairs.remove(&rid);
                    let (tx, rx) = mpsc::channel(16);
                    to_pod.insert(data, tx);
                    tokio::spawn(super::portforward::spdy_pair(
                        netns.clone(),
                        port,
                        err,
                        data,
                        rx,
                        sender.clone(),
                    ));
                }
            }
            Event::Data { id, data, fin } => {
                if let Some(tx) = to_pod.get(&id) {
                    if !data.is_empty() {
                        let _ = tx.send(Some(data)).await;
                    }
                    if fin {
                        let _ = tx.send(None).await;
                        to_pod.remove(&id);
                    }
                }
            }
            Event::Reset { id } => {
                to_pod.remove(&id);
            }
        }
    }
    drop(sender);
    conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_round_trip_through_the_shared_zlib_streams() {
        let dict = cri_api::spdy_dictionary();
        let mut c = flate2::Compress::new(flate2::Compression::default(), true);
        c.set_dictionary(&dict).unwrap();
        let mut dz = flate2::Decompress::new(true);
        for round in 0..3 {
            let v = format!("error-{round}");
            let block = encode_headers(&mut c, &[("streamtype", &v), ("port", "80")]);
            let h = decode_headers(&mut dz, &dict, &block).unwrap();
            assert_eq!(h["streamtype"], v);
            assert_eq!(h["port"], "80");
        }
    }
}
