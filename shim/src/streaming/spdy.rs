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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Pending;
use super::codec::{self, Frame, GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, HeaderDecoder, ProtocolError};
use super::session::{self, ERROR, STDERR, STDOUT, Version};
use crate::daemon::Daemon;

const REMOTECOMMAND: &[(&str, Version)] = &[
    ("v4.channel.k8s.io", Version::V4),
    ("v3.channel.k8s.io", Version::V3),
    ("v2.channel.k8s.io", Version::V2),
    ("channel.k8s.io", Version::V1),
];
const PORTFORWARD: &str = "portforward.k8s.io";
/// How long the client has to open the streams a session needs.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Data bytes read from the client and not yet consumed (written to the
/// process or the pod connection), per connection. The reader waits for
/// room, so a client that sends faster than its streams drain is slowed
/// down (TCP backpressure), not buffered.
const DATA_BUDGET: usize = 4 << 20;
/// What a remotecommand client may send before its streams exist.
const MAX_EARLY_BYTES: usize = 1 << 20;
const MAX_EARLY_EVENTS: usize = 256;
/// Streams a remotecommand client may open (it needs five at most).
const MAX_COMMAND_STREAMS: usize = 16;
/// Port-forward: half-opened requests (an error stream waiting for its
/// data stream, or the other way round) and live connections.
const MAX_PENDING_PAIRS: usize = 64;
const MAX_FORWARDS: usize = 256;

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
        /// The data's share of [`DATA_BUDGET`], given back when dropped.
        budget: Option<OwnedSemaphorePermit>,
    },
    Reset {
        id: u32,
    },
}

/// What the writer sends.
enum Out {
    Reply(u32),
    Data {
        id: u32,
        data: Bytes,
        fin: bool,
    },
    Ping(u32),
    /// Then nothing more: the connection ends.
    GoAway(u32),
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
            match read_loop(rd, ev_tx, pings.clone(), idle).await {
                Ok(()) => {}
                Err(ReadError::Protocol(e)) => {
                    tracing::warn!("SPDY connection closed: {e}");
                    let _ = pings.send(Out::GoAway(GOAWAY_PROTOCOL_ERROR)).await;
                }
                Err(ReadError::Io(e)) => tracing::debug!("SPDY connection: {e}"),
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
        self.close_with(GOAWAY_OK).await
    }

    /// Ends the connection because the client broke the protocol.
    pub async fn protocol_error(self, e: ProtocolError) {
        tracing::warn!("SPDY session closed: {e}");
        self.close_with(GOAWAY_PROTOCOL_ERROR).await
    }

    async fn close_with(self, status: u32) {
        let _ = self.out.send(Out::GoAway(status)).await;
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

enum ReadError {
    Protocol(ProtocolError),
    Io(String),
}

impl From<ProtocolError> for ReadError {
    fn from(e: ProtocolError) -> Self {
        ReadError::Protocol(e)
    }
}

/// Reads frames until the client goes, sends GOAWAY or breaks the
/// protocol. Memory: one frame body ([`codec::MAX_FRAME`]), one header
/// block ([`codec::MAX_HEADER_BLOCK`]) and the data budget.
async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    events: mpsc::Sender<Event>,
    out: mpsc::Sender<Out>,
    idle: Duration,
) -> Result<(), ReadError> {
    let mut headers = HeaderDecoder::new(cri_api::spdy_dictionary());
    let budget = Arc::new(Semaphore::new(DATA_BUDGET));
    let mut head = [0u8; 8];
    loop {
        match tokio::time::timeout(idle, rd.read_exact(&mut head)).await {
            Err(_) => return Err(ReadError::Io(format!("idle for {}s", idle.as_secs()))),
            Ok(Err(e)) => return Err(ReadError::Io(e.to_string())),
            Ok(Ok(_)) => {}
        }
        let h = codec::parse_head(&head)?;
        let permit = if h.control {
            None
        } else {
            // Waiting here is the backpressure; MAX_FRAME < DATA_BUDGET,
            // so a frame always fits once earlier data is consumed.
            let n = u32::try_from(h.len).unwrap_or(u32::MAX);
            match budget.clone().acquire_many_owned(n).await {
                Ok(p) => Some(p),
                Err(_) => return Ok(()),
            }
        };
        let mut body = vec![0u8; h.len];
        match tokio::time::timeout(idle, rd.read_exact(&mut body)).await {
            Err(_) => return Err(ReadError::Io(format!("idle for {}s", idle.as_secs()))),
            Ok(Err(e)) => return Err(ReadError::Io(e.to_string())),
            Ok(Ok(_)) => {}
        }
        let ev = match codec::decode_frame(&h, Bytes::from(body), &mut headers)? {
            Frame::SynStream { id, headers } => Event::Stream { id, headers },
            Frame::Data { id, data, fin } => Event::Data {
                id,
                data,
                fin,
                budget: permit,
            },
            Frame::RstStream { id } => Event::Reset { id },
            Frame::Ping(id) => {
                let _ = out.send(Out::Ping(id)).await;
                continue;
            }
            Frame::GoAway => return Ok(()),
            Frame::Ignored => continue,
        };
        if events.send(ev).await.is_err() {
            return Ok(());
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut headers = codec::HeaderEncoder::new(&cri_api::spdy_dictionary());
    while let Some(o) = rx.recv().await {
        let mut last = false;
        let frame = match o {
            Out::Reply(id) => {
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&headers.encode(&[]));
                codec::control_frame(codec::SYN_REPLY, 0, &body)
            }
            Out::Data { id, data, fin } => codec::data_frame(id, fin, &data),
            Out::Ping(id) => codec::control_frame(codec::PING, 0, &id.to_be_bytes()),
            Out::GoAway(status) => {
                last = true;
                let mut body = 0u32.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                codec::control_frame(codec::GOAWAY, 0, &body)
            }
        };
        if wr.write_all(&frame).await.is_err() {
            return;
        }
        if last {
            break;
        }
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

/// The stream types of remotecommand.
const COMMAND_STREAMS: &[&str] = &["error", "stdin", "stdout", "stderr", "resize"];

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
    let mut ids: HashMap<&'static str, u32> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    // What the client sends before all its streams exist, bounded.
    let mut early = Vec::new();
    let mut early_bytes = 0;
    let mut opened = 0;
    while ids.len() < expected {
        let problem = match tokio::time::timeout_at(deadline, conn.events.recv()).await {
            Ok(Some(Event::Stream { id, headers })) => {
                conn.reply(id).await;
                opened += 1;
                let kind = headers.get("streamtype").map(String::as_str).unwrap_or("");
                match COMMAND_STREAMS.iter().find(|k| **k == kind) {
                    _ if opened > MAX_COMMAND_STREAMS => {
                        Some(format!("more than {MAX_COMMAND_STREAMS} streams"))
                    }
                    Some(k) => {
                        ids.insert(k, id);
                        None
                    }
                    None => Some(format!("unknown stream type {kind:?}")),
                }
            }
            Ok(Some(other)) => {
                if let Event::Data { data, .. } = &other {
                    early_bytes += data.len();
                }
                early.push(other);
                (early.len() > MAX_EARLY_EVENTS || early_bytes > MAX_EARLY_BYTES).then(|| {
                    format!(
                        "more than {MAX_EARLY_EVENTS} frames or {MAX_EARLY_BYTES} bytes before its streams"
                    )
                })
            }
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(
                    "SPDY session: the client opened {} of {expected} streams",
                    ids.len()
                );
                conn.close().await;
                return;
            }
        };
        if let Some(p) = problem {
            conn.protocol_error(ProtocolError(p)).await;
            return;
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
    let by_id: HashMap<u32, &str> = ids.iter().map(|(k, v)| (*v, *k)).collect();
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
    let mut input = Input {
        by_id: &by_id,
        stdin: Some(stdin_tx),
        resize: codec::ResizeStream::default(),
        resize_tx,
    };
    for ev in early {
        input.take(ev).await;
    }
    let mut client_gone = false;
    loop {
        tokio::select! {
            ev = conn.events.recv() => {
                let Some(ev) = ev else {
                    client_gone = true;
                    break;
                };
                input.take(ev).await;
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
    drop(input);
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

/// The client's side of a remotecommand session: stdin and resizes.
struct Input<'a> {
    by_id: &'a HashMap<u32, &'static str>,
    /// None once stdin ended (FIN, RST_STREAM or the process gone).
    stdin: Option<mpsc::Sender<Bytes>>,
    resize: codec::ResizeStream,
    resize_tx: mpsc::Sender<(u16, u16)>,
}

impl Input<'_> {
    async fn take(&mut self, ev: Event) {
        match ev {
            Event::Data { id, data, fin, .. } => match self.by_id.get(&id).copied() {
                Some("stdin") => {
                    if let Some(tx) = &self.stdin
                        && !data.is_empty()
                        && tx.send(data).await.is_err()
                    {
                        self.stdin = None;
                    }
                    if fin {
                        self.stdin = None;
                    }
                }
                Some("resize") => match self.resize.push(&data) {
                    Ok(sizes) => {
                        for s in sizes {
                            let _ = self.resize_tx.try_send(s);
                        }
                    }
                    Err(e) => tracing::warn!("SPDY session: resizing stops: {e}"),
                },
                _ => {}
            },
            Event::Reset { id } if self.by_id.get(&id).copied() == Some("stdin") => {
                self.stdin = None;
            }
            _ => {}
        }
    }
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

/// Data for a pod connection, with its share of the connection's budget.
pub type Chunk = (Bytes, Option<OwnedSemaphorePermit>);

async fn portforward(d: Arc<Daemon>, pod_id: String, mut conn: Conn) {
    let Some(pod) = d.pods.find(&pod_id).ok().flatten() else {
        conn.close().await;
        return;
    };
    let netns = d.pods.netns(&pod);
    let sender = conn.sender();
    // requestid → (error stream, data stream, port)
    let mut pairs: HashMap<String, (Option<u32>, Option<u32>, u16)> = HashMap::new();
    // data stream id → bytes for the pod connection (None: the client's
    // side ended)
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Chunk>>> = HashMap::new();
    while let Some(ev) = conn.events.recv().await {
        match ev {
            Event::Stream { id, headers } => {
                conn.reply(id).await;
                let rid = headers.get("requestid").cloned().unwrap_or_default();
                let port = headers
                    .get("port")
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(0);
                if !pairs.contains_key(&rid) && pairs.len() >= MAX_PENDING_PAIRS {
                    let e =
                        format!("more than {MAX_PENDING_PAIRS} unmatched port-forward requests");
                    drop(sender);
                    conn.protocol_error(ProtocolError(e)).await;
                    return;
                }
                let e = pairs.entry(rid.clone()).or_insert((None, None, port));
                match headers.get("streamtype").map(String::as_str) {
                    Some("error") => e.0 = Some(id),
                    Some("data") => e.1 = Some(id),
                    _ => {}
                }
                let (Some(err), Some(data), port) = *e else {
                    continue;
                };
                pairs.remove(&rid);
                to_pod.retain(|_, tx| !tx.is_closed());
                if to_pod.len() >= MAX_FORWARDS {
                    let msg = format!("more than {MAX_FORWARDS} connections on one port-forward");
                    sender.data(err, Bytes::from(msg), true).await;
                    sender.data(data, Bytes::new(), true).await;
                    continue;
                }
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
            Event::Data {
                id,
                data,
                fin,
                budget,
            } => {
                if let Some(tx) = to_pod.get(&id) {
                    if !data.is_empty() && tx.send(Some((data, budget))).await.is_err() {
                        to_pod.remove(&id);
                        continue;
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
