//! The WebSocket transport (the kubelet's `wsstream`): every message is a
//! channel byte then data (binary protocols), or a channel digit then
//! base64 data (`base64.` protocols). On connect the server sends an
//! empty message on the lowest channel it will write. `v5.channel.k8s.io`
//! adds a CLOSE message (`255, channel`) that ends a client's stream.
//!
//! Port-forward: two channels per port (data `2i`, error `2i+1`), each
//! opened by the server with the port number (2 bytes, little endian).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;

use super::Pending;
use super::codec::{self, ProtocolError};
use super::session::{self, ERROR, RESIZE, STDERR, STDIN, STDOUT, Version};
use crate::daemon::Daemon;

/// Subprotocols served, for remotecommand and for port-forward.
const EXEC_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
    "channel.k8s.io",
];
const PORTFORWARD_PROTOCOLS: &[&str] = &[
    TUNNEL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
    "channel.k8s.io",
];
/// SPDY/3.1 port-forward tunnelled through the WebSocket: its binary
/// messages carry the SPDY connection's bytes.
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The CLOSE message of `v5.channel.k8s.io`.
const CLOSE: u8 = 255;
/// Largest message (and frame) a client may send: the kubelet's clients
/// write stdin and port-forward data 32 KiB at a time.
pub const MAX_MESSAGE: usize = 1 << 20;

pub async fn upgrade(d: Arc<Daemon>, pending: Pending, req: axum::extract::Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    // The client's offers in its order (the extractor keeps a set).
    let offered: Vec<String> = req
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let (mut parts, _) = req.into_parts();
    let mut ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let supported = match pending {
        Pending::PortForward(_) => PORTFORWARD_PROTOCOLS,
        _ => EXEC_PROTOCOLS,
    };
    // The first protocol the client offers that we serve, as wsstream.
    let chosen = offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .and_then(|p| http::HeaderValue::from_str(p).ok());
    let protocol = chosen
        .as_ref()
        .and_then(|p| p.to_str().ok())
        .unwrap_or("channel.k8s.io")
        .to_string();
    if let Some(p) = chosen {
        ws.set_selected_protocol(p);
    }
    let idle = d
        .streaming
        .get()
        .map(|s| s.idle_timeout)
        .unwrap_or(std::time::Duration::from_secs(4 * 3600));
    let ws = ws.max_message_size(MAX_MESSAGE).max_frame_size(MAX_MESSAGE);
    ws.on_upgrade(move |socket| async move {
        let codec = Codec {
            base64: protocol.contains("base64"),
        };
        match pending {
            Pending::PortForward(pf) if protocol == TUNNEL => {
                tunnel(d, pf.pod_sandbox_id, socket, idle).await
            }
            Pending::PortForward(pf) => {
                let mut ports: Vec<i32> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("port="))
                    .filter_map(|p| p.parse().ok())
                    .collect();
                if ports.is_empty() {
                    ports = pf.port.clone();
                }
                super::portforward::websocket(d, pf.pod_sandbox_id, ports, socket, codec, idle)
                    .await
            }
            other => {
                let version = if protocol.starts_with("v5.") {
                    Version::V5
                } else if protocol.starts_with("v4.") {
                    Version::V4
                } else {
                    Version::V1
                };
                remotecommand(d, other, socket, codec, version, idle).await
            }
        }
    })
}

#[derive(Clone, Copy)]
pub struct Codec {
    base64: bool,
}

impl Codec {
    pub fn encode(&self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            s.push(char::from(b'0' + channel));
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::Text(s.into())
        } else {
            let mut v = Vec::with_capacity(1 + data.len());
            v.push(channel);
            v.extend_from_slice(data);
            Message::Binary(v.into())
        }
    }

    /// (channel, data) of a message from the client; None for messages
    /// that carry none (empty, ping, pong). Binary protocols take text
    /// messages too, as the kubelet's wsstream does (the Kubernetes Python
    /// client sends stdin so).
    pub fn decode(&self, m: &Message) -> Result<Option<(u8, Bytes)>, ProtocolError> {
        match m {
            Message::Binary(b) => codec::decode_ws(self.base64, false, b),
            Message::Text(t) => codec::decode_ws(self.base64, true, t.as_bytes()),
            _ => Ok(None),
        }
    }
}

/// Closes a session whose client broke the protocol (status 1002).
pub fn protocol_close(e: &ProtocolError) -> Message {
    tracing::warn!("WebSocket session closed: {e}");
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::PROTOCOL,
        reason: e.0.chars().take(120).collect::<String>().into(),
    }))
}

async fn remotecommand(
    d: Arc<Daemon>,
    pending: Pending,
    mut socket: WebSocket,
    codec: Codec,
    version: Version,
    idle: std::time::Duration,
) {
    let (stdin_wanted, stdout_wanted, stderr_wanted, tty) = match &pending {
        Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
        Pending::PortForward(_) => return,
    };
    let Some(session::Started {
        stdin: stdin_tx,
        resize: resize_tx,
        out: mut out_rx,
        task,
    }) = session::start(d, pending, stdin_wanted, tty, version)
    else {
        return;
    };
    // The lowest channel we will write: the client knows we are there.
    let first = if stdout_wanted {
        STDOUT
    } else if stderr_wanted {
        STDERR
    } else {
        ERROR
    };
    // A client gone already skips the loop: the session ends as when it
    // leaves later (its stdin ends, an exec's process is killed), never by
    // an abort that could stop it half-way.
    let gone = socket.send(codec.encode(first, &[])).await.is_err();
    let mut stdin_tx = Some(stdin_tx);
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    if !gone {
        loop {
            tokio::select! {
                m = socket.recv() => {
                    deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                    let Some(Ok(m)) = m else {
                        // The client is gone: its input ends.
                        stdin_tx = None;
                        break;
                    };
                    if matches!(m, Message::Close(_)) {
                        stdin_tx = None;
                        break;
                    }
                    let (ch, data) = match codec.decode(&m) {
                        Ok(Some(cd)) => cd,
                        Ok(None) => continue,
                        Err(e) => {
                            let _ = socket.send(protocol_close(&e)).await;
                            stdin_tx = None;
                            break;
                        }
                    };
                    match ch {
                        STDIN => {
                            if let Some(tx) = &stdin_tx
                                && !data.is_empty()
                                && tx.send(data).await.is_err()
                            {
                                stdin_tx = None;
                            }
                        }
                        RESIZE => {
                            if let Some((w, h)) = codec::parse_resize(&data) {
                                let _ = resize_tx.try_send((w, h));
                            }
                        }
                        CLOSE if version >= Version::V5 && data.first() == Some(&STDIN) => {
                            stdin_tx = None;
                        }
                        _ => {}
                    }
                }
                o = out_rx.recv() => {
                    deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                    match o {
                        Some((ch, data)) => {
                            if socket.send(codec.encode(ch, &data)).await.is_err() {
                                break;
                            }
                        }
                        None => {
                            let _ = socket.send(normal_close()).await;
                            return;
                        }
                    }
                }
                _ = &mut deadline => {
                    tracing::info!("streaming session idle for {}s: closing", idle.as_secs());
                    let _ = socket.send(normal_close()).await;
                    // Ended as if the client had left: the session's own end
                    // (stdin closed, an exec's process killed) runs.
                    stdin_tx = None;
                    break;
                }
            }
        }
    }
    drop(stdin_tx);
    // The client closed its side: let the session finish what it sends.
    drop(out_rx);
    let _ = task.await;
}

/// Joins the WebSocket's binary messages to a byte stream and runs SPDY
/// port-forward over it.
async fn tunnel(d: Arc<Daemon>, pod_id: String, socket: WebSocket, idle: std::time::Duration) {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut stream) = socket.split();
    let inbound = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let data = match m {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let outbound = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let m = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(normal_close()).await;
    });
    super::spdy::portforward_over(d, pod_id, theirs, idle).await;
    let _ = outbound.await;
    inbound.abort();
}

/// A close frame with status 1000: clients (gorilla/websocket) read a
/// close without a status as an error, not as the end of the streams.
pub fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_frames() {
        let bin = Codec { base64: false };
        let m = bin.encode(STDOUT, b"hi");
        assert_eq!(m, Message::Binary(vec![1, b'h', b'i'].into()));
        assert_eq!(
            bin.decode(&m),
            Ok(Some((STDOUT, Bytes::from_static(b"hi"))))
        );
        let b64 = Codec { base64: true };
        let m = b64.encode(STDERR, b"hi");
        assert_eq!(m, Message::Text("2aGk=".into()));
        assert_eq!(
            b64.decode(&m),
            Ok(Some((STDERR, Bytes::from_static(b"hi"))))
        );
        // A base64 message whose first character is multi-byte panicked.
        assert!(b64.decode(&Message::Text("é".into())).is_err());
    }
}
