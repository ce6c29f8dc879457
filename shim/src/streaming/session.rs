//! What a remotecommand session does, whichever transport carries it:
//! exec (a new process in the container) and attach (the container's own
//! stdio, through its monitor), with stdin, stdout, stderr, terminal
//! resizes and the final status on the error channel.

use std::sync::Arc;

use berth_runtime::protocol::Resize;
use bytes::Bytes;
use cri_api::v1::ExecRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::daemon::Daemon;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;

/// The remotecommand protocol version negotiated: v4 and later carry the
/// exit status as a Kubernetes `Status` JSON; earlier ones a plain text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

/// A session's streams, as the transport hands them over.
/// A started exec or attach session: where the client's stdin and
/// terminal sizes go, what comes back, and the task running it.
pub struct Started {
    pub stdin: mpsc::Sender<Bytes>,
    pub resize: mpsc::Sender<(u16, u16)>,
    pub out: mpsc::Receiver<(u8, Bytes)>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the exec or attach `pending` names (None for a port-forward),
/// taking stdin and terminal sizes only if the client will send them.
pub fn start(
    d: Arc<Daemon>,
    pending: super::Pending,
    stdin: bool,
    resize: bool,
    version: Version,
) -> Option<Started> {
    // Few chunks: each may be a whole client frame (up to 1 MiB).
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(4);
    let (resize_tx, resize_rx) = mpsc::channel::<(u16, u16)>(4);
    let (out_tx, out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    let io = Io {
        stdin: stdin.then_some(stdin_rx),
        resize: resize.then_some(resize_rx),
        out: out_tx,
        version,
    };
    let task = match pending {
        super::Pending::Exec(r) => tokio::spawn(exec(d, r, io)),
        super::Pending::Attach(r) => tokio::spawn(attach(d, r, io)),
        super::Pending::PortForward(_) => return None,
    };
    Some(Started {
        stdin: stdin_tx,
        resize: resize_tx,
        out: out_rx,
        task,
    })
}

pub struct Io {
    /// From the client; closed at the end of its input.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Terminal sizes (columns, rows) from the client.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// To the client: (channel, data).
    pub out: mpsc::Sender<(u8, Bytes)>,
    pub version: Version,
}

/// The error channel's final message: success, a non-zero exit, or an
/// error, as the kubelet's remotecommand server writes it.
pub fn status(version: Version, cmd: &[String], result: Result<i32, String>) -> Option<Bytes> {
    let json = match (&result, version >= Version::V4) {
        (Ok(0), true) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (Ok(0), false) => return None,
        (Ok(code), true) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        (Ok(code), false) => {
            return Some(Bytes::from(format!(
                "command terminated with non-zero exit code: exit code {code}"
            )));
        }
        (Err(e), true) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": e}]},
            "code": 500,
        }),
        (Err(e), false) => return Some(Bytes::from(e.clone())),
    };
    Some(Bytes::from(json.to_string()))
}

/// Exec: the process's stdio over the session, then its exit status.
pub async fn exec(d: Arc<Daemon>, req: ExecRequest, io: Io) {
    let Io {
        stdin,
        resize,
        out,
        version,
    } = io;
    let result = run_exec(&d, &req, stdin, resize, &out).await;
    if let Some(msg) = status(version, &req.cmd, result) {
        let _ = out.send((ERROR, msg)).await;
    }
}

async fn run_exec(
    d: &Daemon,
    req: &ExecRequest,
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: Option<mpsc::Receiver<(u16, u16)>>,
    out: &mpsc::Sender<(u8, Bytes)>,
) -> Result<i32, String> {
    let rec = d
        .containers
        .find(&req.container_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("container {:?} not found", req.container_id))?;
    let mut exec = crate::exec::spawn(
        &d.containers,
        &rec,
        &req.cmd,
        req.tty,
        req.stdin && stdin.is_some(),
    )
    .await?;
    // stdin: the client's data, then end of input.
    let stdin_task = match (exec.stdin.take(), stdin) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if w.write_all(&data).await.is_err() {
                    break;
                }
            }
        })),
        _ => None,
    };
    let resize_task = match (exec.control.take(), resize) {
        (Some(mut w), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some((cols, rows)) = rx.recv().await {
                let line = format!("{}\n", Resize { cols, rows }.to_text());
                if w.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        })),
        _ => None,
    };
    let pump = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, ch: u8, on: bool| {
        let out = out.clone();
        async move {
            let Some(mut r) = r else { return };
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        // A stream the client did not ask for is drained.
                        if on
                            && out
                                .send((ch, Bytes::copy_from_slice(&buf[..n])))
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    };
    let so: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> =
        exec.stdout.take().map(|s| Box::new(s) as _);
    let se: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> =
        exec.stderr.take().map(|s| Box::new(s) as _);
    // The client going away ends the process, as with containerd, even
    // one that writes nothing.
    let gone = tokio::select! {
        _ = async {
            tokio::join!(
                pump(so, STDOUT, req.stdout),
                pump(se, STDERR, req.stderr && !req.tty)
            )
        } => out.is_closed(),
        _ = out.closed() => true,
    };
    if gone {
        exec.kill().await;
    }
    let code = exec.wait().await;
    for t in [stdin_task, resize_task].into_iter().flatten() {
        t.abort();
    }
    code
}

/// Attach: the container's own stdio, through its monitor.
pub async fn attach(d: Arc<Daemon>, req: cri_api::v1::AttachRequest, io: Io) {
    let result = crate::attach::attach(&d, &req, io.stdin, io.resize, &io.out).await;
    if let Err(e) = result
        && let Some(msg) = status(io.version, &[], Err(e))
    {
        let _ = io.out.send((ERROR, msg)).await;
    } else if io.version >= Version::V4
        && let Some(msg) = status(io.version, &[], Ok(0))
    {
        let _ = io.out.send((ERROR, msg)).await;
    }
}
