//! Talking to a container's monitor over its attach socket
//! (`<state>/attach.sock`, with [`berth_runtime::protocol::frame`]'s
//! frames): attaching to the container's stdio, and having the monitor
//! reopen the CRI log.

use std::time::Duration;

use berth_runtime::protocol::Resize;
use berth_runtime::protocol::frame::{Channel, Decoder, Frame, encode};
use berth_runtime::protocol::state::attach_socket_address;
use bytes::Bytes;
use cri_api::v1::AttachRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::container::{ContainerRecord, Observed};
use crate::daemon::Daemon;
use crate::streaming::session;

/// The monitor's side of the socket, as frames.
struct Frames {
    rd: tokio::net::unix::OwnedReadHalf,
    decoder: Decoder,
}

impl Frames {
    /// The next frame; None when the monitor closed the socket or sent
    /// what is not a frame.
    async fn next(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 32 * 1024];
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("attach: from the monitor: {e}");
                    return None;
                }
            }
            match self.rd.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.feed(&buf[..n]),
            }
        }
    }
}

/// The monitor's socket, once the container runs (the monitor opens it
/// as it starts pumping; on a loaded node that may take seconds, so it is
/// waited for up to 10 s while the container runs).
async fn connect(
    d: &Daemon,
    rec: &ContainerRecord,
) -> Result<(Frames, tokio::net::unix::OwnedWriteHalf), String> {
    let state = d.containers.state_dir(&rec.id);
    for _ in 0..500 {
        if !matches!(d.containers.observe(&rec.id), Observed::Running { .. }) {
            return Err(format!("container {} is not running", rec.id));
        }
        let dir = std::fs::File::open(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        if let Ok(s) = UnixStream::connect(attach_socket_address(&dir)).await {
            let (rd, wr) = s.into_split();
            let frames = Frames {
                rd,
                decoder: Decoder::new(),
            };
            return Ok((frames, wr));
        }
        drop(dir);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("container {}: its monitor does not answer", rec.id))
}

/// Attaches `io` to the container until it exits or the client leaves.
pub async fn attach(
    d: &Daemon,
    req: &AttachRequest,
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: Option<mpsc::Receiver<(u16, u16)>>,
    out: &mpsc::Sender<(u8, Bytes)>,
) -> Result<(), String> {
    let rec = d
        .containers
        .find(&req.container_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("container {:?} not found", req.container_id))?;
    let config = rec.config();
    let (mut frames, wr) = connect(d, &rec).await?;
    let wr = std::sync::Arc::new(tokio::sync::Mutex::new(wr));
    // The client's stdin, if the container has one.
    let stdin_task = match stdin {
        Some(mut rx) if req.stdin && config.stdin => {
            let wr = wr.clone();
            // An empty frame first: this session holds stdin (stdin_once
            // closes it when the session ends, even if it sent nothing).
            let _ = wr
                .lock()
                .await
                .write_all(&encode(Channel::Stdin, &[]))
                .await;
            Some(tokio::spawn(async move {
                while let Some(data) = rx.recv().await {
                    if wr
                        .lock()
                        .await
                        .write_all(&encode(Channel::Stdin, &data))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = wr
                    .lock()
                    .await
                    .write_all(&encode(Channel::StdinEnd, &[]))
                    .await;
            }))
        }
        _ => None,
    };
    let resize_task = resize.map(|mut rx| {
        let wr = wr.clone();
        tokio::spawn(async move {
            while let Some((cols, rows)) = rx.recv().await {
                let msg = Resize { cols, rows }.to_text();
                if wr
                    .lock()
                    .await
                    .write_all(&encode(Channel::Resize, msg.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    });
    loop {
        tokio::select! {
            f = frames.next() => {
                let Some(Frame { channel, data }) = f else { break };
                // Into the client's streaming channels.
                let to = match channel {
                    Channel::Stdout if req.stdout => session::STDOUT,
                    Channel::Stderr if req.stderr => session::STDERR,
                    _ => continue,
                };
                if out.send((to, Bytes::from(data))).await.is_err() {
                    break;
                }
            }
            _ = out.closed() => break,
        }
    }
    if let Some(t) = resize_task {
        t.abort();
    }
    // What the client sent before it left still goes in (its stdin
    // channel is closed by now, so the task ends).
    if let Some(t) = stdin_task
        && tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
    {
        tracing::warn!(container = %rec.id, "attach: stdin still pending, dropped");
    }
    // The session ends: its stdin ends (stdin_once applies).
    let _ = wr
        .lock()
        .await
        .write_all(&encode(Channel::StdinEnd, &[]))
        .await;
    Ok(())
}

/// Has the monitor open the container's log file anew (after the kubelet
/// renamed it); returns once it has.
pub async fn reopen_log(d: &Daemon, rec: &ContainerRecord) -> Result<(), String> {
    let (mut frames, mut wr) = connect(d, rec).await?;
    wr.write_all(&encode(Channel::Reopen, &[]))
        .await
        .map_err(|e| format!("asking the monitor: {e}"))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match frames.next().await {
                Some(Frame {
                    channel: Channel::Reopen,
                    data,
                }) => return Ok(String::from_utf8_lossy(&data).into_owned()),
                Some(_) => continue,
                None => return Err("the monitor closed the socket".to_string()),
            }
        }
    })
    .await
    .map_err(|_| "the monitor did not answer within 10s".to_string())??;
    if answer.is_empty() {
        Ok(())
    } else {
        Err(answer)
    }
}
