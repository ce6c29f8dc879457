//! CRI `Exec`, `Attach` and `PortForward`: each checks its request and
//! answers with a single-use URL on berth's streaming server, where the
//! client then runs the session.

use cri_api::v1::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest,
    PortForwardResponse,
};
use tonic::Status;

use crate::container::Observed;
use crate::daemon::Daemon;
use crate::streaming::Pending;

fn url(d: &Daemon, p: Pending) -> Result<String, Status> {
    d.streaming
        .get()
        .ok_or_else(|| Status::unavailable("the streaming server is not running"))?
        .url(p)
        .map_err(Status::internal)
}

fn running(d: &Daemon, id: &str, rpc: &str) -> Result<String, Status> {
    let rec = d.container(id)?;
    if !matches!(d.containers.observe(&rec.id), Observed::Running { .. }) {
        return Err(Status::failed_precondition(format!(
            "{rpc}: container {} is not running",
            rec.id
        )));
    }
    Ok(rec.id)
}

pub fn exec(d: &Daemon, mut req: ExecRequest) -> Result<ExecResponse, Status> {
    if req.cmd.is_empty() {
        return Err(Status::invalid_argument("Exec: no command"));
    }
    if req.tty && req.stderr {
        return Err(Status::invalid_argument(
            "Exec: tty and stderr cannot both be true",
        ));
    }
    if !(req.stdin || req.stdout || req.stderr) {
        return Err(Status::invalid_argument(
            "Exec: one of stdin, stdout and stderr must be true",
        ));
    }
    req.container_id = running(d, &req.container_id, "Exec")?;
    Ok(ExecResponse {
        url: url(d, Pending::Exec(req))?,
    })
}

pub fn attach(d: &Daemon, mut req: AttachRequest) -> Result<AttachResponse, Status> {
    if req.tty && req.stderr {
        return Err(Status::invalid_argument(
            "Attach: tty and stderr cannot both be true",
        ));
    }
    if !(req.stdin || req.stdout || req.stderr) {
        return Err(Status::invalid_argument(
            "Attach: one of stdin, stdout and stderr must be true",
        ));
    }
    req.container_id = running(d, &req.container_id, "Attach")?;
    Ok(AttachResponse {
        url: url(d, Pending::Attach(req))?,
    })
}

pub fn port_forward(
    d: &Daemon,
    mut req: PortForwardRequest,
) -> Result<PortForwardResponse, Status> {
    let pod = d.pod(&req.pod_sandbox_id)?;
    if pod.state != crate::pod::PodState::Ready {
        return Err(Status::failed_precondition(format!(
            "PortForward: pod sandbox {} is not ready",
            pod.id
        )));
    }
    if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(Status::invalid_argument(format!(
            "PortForward: bad port {p}"
        )));
    }
    req.pod_sandbox_id = pod.id;
    Ok(PortForwardResponse {
        url: url(d, Pending::PortForward(req))?,
    })
}
