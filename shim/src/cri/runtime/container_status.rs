//! CRI `ContainerStatus`, and the `Container` of `ListContainers`.

use std::collections::HashMap;

use cri_api::v1::{
    Container, ContainerResources, ContainerState, ContainerStatus, ContainerStatusRequest,
    ContainerStatusResponse, ContainerUser, ImageSpec, LinuxContainerUser,
};
use tonic::Status;

use crate::container::{ContainerRecord, Observed};
use crate::daemon::Daemon;

pub fn state_of(o: &Observed) -> ContainerState {
    match o {
        Observed::Created => ContainerState::ContainerCreated,
        Observed::Running { .. } => ContainerState::ContainerRunning,
        Observed::Exited { .. } => ContainerState::ContainerExited,
        Observed::Unknown => ContainerState::ContainerUnknown,
    }
}

fn image_spec(rec: &ContainerRecord) -> ImageSpec {
    ImageSpec {
        image: rec.image.clone(),
        image_ref: rec.image_id.clone(),
        user_specified_image: rec.image.clone(),
        ..Default::default()
    }
}

pub fn to_cri(d: &Daemon, rec: &ContainerRecord) -> Container {
    let c = rec.config_ref();
    Container {
        id: rec.id.clone(),
        pod_sandbox_id: rec.pod_id.clone(),
        metadata: c.metadata.clone(),
        image: Some(image_spec(rec)),
        image_ref: rec.image_id.clone(),
        state: state_of(&d.containers.observe(&rec.id)) as i32,
        created_at: rec.created_ns,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        image_id: rec.image_id.clone(),
    }
}

pub async fn container_status(
    d: &Daemon,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, Status> {
    let rec = d.container(&req.container_id)?;
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "info".to_string(),
            serde_json::json!({
                "stateDir": d.containers.state_dir(&rec.id),
                "stopSignal": rec.stop_signal,
            })
            .to_string(),
        );
    }
    Ok(ContainerStatusResponse {
        status: Some(status_of(d, &rec)),
        info,
    })
}

/// The container's status now, as `ContainerStatus` and events give it.
pub fn status_of(d: &Daemon, rec: &ContainerRecord) -> ContainerStatus {
    let c = rec.config();
    let observed = d.containers.observe(&rec.id);
    let (started_at, finished_at, exit_code, reason, message) = match &observed {
        Observed::Created => (0, 0, 0, String::new(), String::new()),
        Observed::Running { started_ns } => (*started_ns, 0, 0, String::new(), String::new()),
        Observed::Exited { started_ns, exit } => (
            *started_ns,
            exit.finished_ns,
            exit.code,
            if exit.oom_killed {
                "OOMKilled"
            } else if exit.code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string(),
            exit.message.clone(),
        ),
        Observed::Unknown => (
            0,
            0,
            0,
            "Unknown".to_string(),
            "its monitor is gone".to_string(),
        ),
    };
    ContainerStatus {
        id: rec.id.clone(),
        metadata: c.metadata,
        state: state_of(&observed) as i32,
        created_at: rec.created_ns,
        started_at,
        finished_at,
        exit_code,
        image: Some(image_spec(rec)),
        image_ref: rec.image_id.clone(),
        reason,
        message,
        labels: c.labels,
        annotations: c.annotations,
        mounts: c.mounts,
        log_path: rec.log_path.clone(),
        image_id: rec.image_id.clone(),
        resources: c
            .linux
            .and_then(|l| l.resources)
            .map(|r| ContainerResources {
                linux: Some(r),
                windows: None,
            }),
        user: user_of(rec),
        ..Default::default()
    }
}

/// The identity the container's first process started with (its spec's
/// user, recorded at create), which the kubelet reports for supplemental
/// groups.
fn user_of(rec: &ContainerRecord) -> Option<ContainerUser> {
    let u = rec.user.as_ref()?;
    Some(ContainerUser {
        linux: Some(LinuxContainerUser {
            uid: u["uid"].as_i64()?,
            gid: u["gid"].as_i64()?,
            supplemental_groups: u["additionalGids"]
                .as_array()
                .map(|g| g.iter().filter_map(|g| g.as_i64()).collect())
                .unwrap_or_default(),
        }),
    })
}
