//! Talking to a container's monitor over its attach socket
//! (`<state>/attach.sock`; the frames are described in berth-monitor's
//! `attach.rs`): attaching to the container's stdio, and having the
//! monitor reopen the CRI log.

use std::time::Duration;

use bytes::Bytes;
use cri_api::v1::AttachRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::container::{ContainerRecord, Observed};
use crate::daemon::Daemon;
use crate::streaming::session::{STDERR, STDOUT};

const STDIN: u8 = 0;
const STDIN_END: u8 = 3;
const RESIZE: u8 = 4;
const REOPEN: u8 = 5;

fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + data.len());
    f.push(kind);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

async fn read_frame(s: &mut tokio::net::unix::OwnedReadHalf) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut data = vec![0u8; len];
    s.read_exact(&mut data).await.ok()?;
    Some((head[0], data))
}

/// The monitor's socket, once the container runs (the monitor opens it
/// as it starts pumping; on a loaded node that may take seconds, so it is
/// waited for up to 10 s while the container runs).
async fn connect(d: &Daemon, rec: &ContainerRecord) -> Result<UnixStream, String> {
    let state = d.containers.state_dir(&rec.id);
    for _ in 0..500 {
        if !matches!(d.containers.observe(&rec.id), Observed::Running { .. }) {
            return Err(format!("container {} is not running", rec.id));
        }
        // Through the directory's descriptor: the state dir's own path may
        // be too long for a socket address.
        let dir = std::fs::File::open(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let path = format!(
            "/proc/self/fd/{}/attach.sock",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        );
        if let Ok(s) = UnixStream::connect(&path).await {
            return Ok(s);
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
        .find(&req.container_id)?
        .ok_or_else(|| format!("container {:?} not found", req.container_id))?;
    let config = rec.config();
    let (mut rd, wr) = connect(d, &rec).await?.into_split();
    let wr = std::sync::Arc::new(tokio::sync::Mutex::new(wr));
    // The client's stdin, if the container has one.
    let stdin_task = match stdin {
        Some(mut rx) if req.stdin && config.stdin => {
            let wr = wr.clone();
            // An empty frame first: this session holds stdin (stdin_once
            // closes it when the session ends, even if it sent nothing).
            let _ = wr.lock().await.write_all(&frame(STDIN, &[])).await;
            Some(tokio::spawn(async move {
                while let Some(data) = rx.recv().await {
                    if wr
                        .lock()
                        .await
                        .write_all(&frame(STDIN, &data))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = wr.lock().await.write_all(&frame(STDIN_END, &[])).await;
            }))
        }
        _ => None,
    };
    let resize_task = resize.map(|mut rx| {
        let wr = wr.clone();
        tokio::spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                let msg = format!("{w} {h}");
                if wr
                    .lock()
                    .await
                    .write_all(&frame(RESIZE, msg.as_bytes()))
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
            f = read_frame(&mut rd) => {
                let Some((kind, data)) = f else { break };
                let wanted = match kind {
                    STDOUT => req.stdout,
                    STDERR => req.stderr,
                    _ => false,
                };
                if wanted && out.send((kind, Bytes::from(data))).await.is_err() {
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
    let _ = wr.lock().await.write_all(&frame(STDIN_END, &[])).await;
    Ok(())
}

/// Has the monitor open the container's log file anew (after the kubelet
/// renamed it); returns once it has.
pub async fn reopen_log(d: &Daemon, rec: &ContainerRecord) -> Result<(), String> {
    let (mut rd, mut wr) = connect(d, rec).await?.into_split();
    wr.write_all(&frame(REOPEN, &[]))
        .await
        .map_err(|e| format!("asking the monitor: {e}"))?;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match read_frame(&mut rd).await {
                Some((REOPEN, msg)) => return Ok(String::from_utf8_lossy(&msg).into_owned()),
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
