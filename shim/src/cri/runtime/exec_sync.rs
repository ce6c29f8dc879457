//! CRI `ExecSync`: runs a command in a running container (its namespaces,
//! cgroup, user, capabilities, seccomp, env and cwd) and returns its
//! stdout, stderr and exit code. Each stream keeps at most
//! [`MAX_OUTPUT`] bytes (the rest is read and dropped), so a runaway
//! command cannot fill berthd's memory. With a timeout, a command still
//! running then is killed and the call fails with `DeadlineExceeded`,
//! which the kubelet reports as a timed-out probe.

use std::time::Duration;

use cri_api::v1::{ExecSyncRequest, ExecSyncResponse};
use tokio::io::{AsyncRead, AsyncReadExt};
use tonic::Status;

use crate::container::Observed;
use crate::daemon::Daemon;

/// Bytes kept of each of stdout and stderr.
pub const MAX_OUTPUT: usize = 4 << 20;

pub async fn exec_sync(d: &Daemon, req: ExecSyncRequest) -> Result<ExecSyncResponse, Status> {
    let rec = d.container(&req.container_id)?;
    if !matches!(d.containers.observe(&rec.id), Observed::Running { .. }) {
        return Err(Status::failed_precondition(format!(
            "ExecSync: container {} is not running",
            rec.id
        )));
    }
    let mut exec = crate::exec::spawn(&d.containers, &rec, &req.cmd, false, false)
        .await
        .map_err(|e| Status::unknown(format!("ExecSync in {}: {e}", rec.id)))?;
    let (stdout, stderr) = (exec.stdout.take(), exec.stderr.take());
    let run = async {
        let (out, err) = tokio::join!(capped(stdout), capped(stderr));
        let code = exec.wait().await;
        (out, err, code)
    };
    let result = if req.timeout > 0 {
        tokio::time::timeout(Duration::from_secs(req.timeout as u64), run).await
    } else {
        Ok(run.await)
    };
    match result {
        Ok((stdout, stderr, code)) => Ok(ExecSyncResponse {
            stdout,
            stderr,
            exit_code: code.map_err(Status::internal)?,
        }),
        Err(_) => {
            exec.kill().await;
            Err(Status::deadline_exceeded(format!(
                "ExecSync {:?} in {}: timed out after {}s",
                req.cmd, rec.id, req.timeout
            )))
        }
    }
}

/// Reads to the end, keeping the first [`MAX_OUTPUT`] bytes.
async fn capped(r: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
