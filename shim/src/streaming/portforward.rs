//! Port-forward: a TCP connection to a port inside the pod's network
//! namespace (made by a short-lived thread that joins the namespace, so
//! the socket belongs to it), joined to a client stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::StreamSender;
use super::ws::Codec;
use crate::daemon::Daemon;

/// Connects to `port` on the pod's loopback: inside its network namespace
/// pinned at `netns`, or on the node's for a host-network pod (None).
pub async fn dial(netns: Option<&Path>, port: u16) -> Result<tokio::net::TcpStream, String> {
    let connect = move || -> Result<std::net::TcpStream, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .or_else(|_| {
                let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v6, Duration::from_secs(10))
            })
            .map_err(|e| format!("connecting to port {port} in the pod: {e}"))
    };
    let ns = netns
        .map(|p| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()?;
    let std = tokio::task::spawn_blocking(move || match ns {
        None => connect(),
        // A thread of its own, which dies in the pod's namespace.
        Some(ns) => std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("joining the pod's network: {e}"))?;
            connect()
        })
        .join()
        .map_err(|_| "the dialing thread panicked".to_string())?,
    })
    .await
    .map_err(|e| e.to_string())??;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(std).map_err(|e| e.to_string())
}

/// One SPDY port-forward request: the data stream joined to a fresh
/// connection; a failure goes to the error stream.
pub async fn spdy_pair(
    netns: Option<PathBuf>,
    port: u16,
    err: u32,
    data: u32,
    mut from_client: mpsc::Receiver<Option<super::spdy::Chunk>>,
    out: StreamSender,
) {
    let conn = match dial(netns.as_deref(), port).await {
        Ok(c) => c,
        Err(e) => {
            out.data(err, Bytes::from(e), true).await;
            out.data(data, Bytes::new(), true).await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let up = async {
        while let Some(Some((chunk, _budget))) = from_client.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !out
                        .data(data, Bytes::copy_from_slice(&buf[..n]), false)
                        .await
                    {
                        return;
                    }
                }
            }
        }
        out.data(data, Bytes::new(), true).await;
    };
    tokio::join!(up, down);
    out.data(err, Bytes::new(), true).await;
}

/// Most ports one WebSocket port-forward may ask for: channel numbers are
/// bytes, two per port.
const MAX_WS_PORTS: usize = 127;

/// Port-forward over WebSocket: for the i-th port, channel 2i carries its
/// data and 2i+1 its errors; each opens with the port number.
pub async fn websocket(
    d: Arc<Daemon>,
    pod_id: String,
    ports: Vec<i32>,
    mut socket: WebSocket,
    codec: Codec,
    idle: Duration,
) {
    let Some(pod) = d.pods.find(&pod_id).ok().flatten() else {
        let _ = socket.send(super::ws::normal_close()).await;
        return;
    };
    if ports.len() > MAX_WS_PORTS {
        let e = super::codec::ProtocolError(format!(
            "{} ports asked for (at most {MAX_WS_PORTS}: two channels each)",
            ports.len()
        ));
        let _ = socket.send(super::ws::protocol_close(&e)).await;
        return;
    }
    let netns = d.pods.netns(&pod);
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    let mut to_pod = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let port = u16::try_from(*port).unwrap_or(0);
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, err_ch] {
            if socket
                .send(codec.encode(ch, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        to_pod.push(tx);
        let (netns, out) = (netns.clone(), out_tx.clone());
        tokio::spawn(async move {
            let conn = match dial(netns.as_deref(), port).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = out.send((err_ch, Bytes::from(e))).await;
                    return;
                }
            };
            let (mut rd, mut wr) = conn.into_split();
            let up = async {
                while let Some(chunk) = rx.recv().await {
                    if wr.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0
                        || out
                            .send((data_ch, Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            };
            tokio::join!(up, down);
        });
    }
    drop(out_tx);
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            m = socket.recv() => {
                deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                let Some(Ok(m)) = m else { break };
                if matches!(m, Message::Close(_)) {
                    break;
                }
                let decoded = match codec.decode(&m) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = socket.send(super::ws::protocol_close(&e)).await;
                        break;
                    }
                };
                if let Some((ch, data)) = decoded
                    && ch % 2 == 0
                    && let Some(tx) = to_pod.get((ch / 2) as usize)
                    && !data.is_empty()
                {
                    let _ = tx.send(data).await;
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
                        let _ = socket.send(super::ws::normal_close()).await;
                        break;
                    }
                }
            }
            _ = &mut deadline => {
                let _ = socket.send(super::ws::normal_close()).await;
                break;
            }
        }
    }
}
