//! CRI `RunPodSandbox`: namespaces pinned, files written, cgroup made,
//! record committed READY; on failure nothing is left.

use cri_api::v1::{ContainerEventType, NamespaceMode, RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;
use berth_runtime::now_ns;

use crate::ids::random_id;
use crate::pod::{PodState, key_of};

pub async fn run_pod_sandbox(
    d: &Daemon,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse, Status> {
    let mut config = req
        .config
        .ok_or_else(|| Status::invalid_argument("RunPodSandbox: no config"))?;
    crate::cri::validate::pod_config(&config)?;
    if let Some(l) = &mut config.linux {
        l.cgroup_parent = crate::cgroups::check_parent(d.config.cgroup_driver, &l.cgroup_parent)
            .map_err(|e| Status::invalid_argument(format!("RunPodSandbox: {e}")))?;
    }
    let m = config.metadata.clone().unwrap_or_default();
    if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
        return Err(Status::invalid_argument(
            "RunPodSandbox: metadata name, namespace and uid are required",
        ));
    }
    match d.config.runtimes.get(&req.runtime_handler) {
        _ if req.runtime_handler.is_empty() => {}
        Some(crate::config::RuntimeHandler::Builtin) => {}
        Some(crate::config::RuntimeHandler::Oci { path }) => {
            if !path.is_file() {
                return Err(Status::failed_precondition(format!(
                    "RunPodSandbox: runtime handler {:?}: {} is not installed",
                    req.runtime_handler,
                    path.display()
                )));
            }
        }
        None => {
            return Err(Status::invalid_argument(format!(
                "RunPodSandbox: no runtime handler {:?} is configured",
                req.runtime_handler
            )));
        }
    }
    // sethostname(2) takes at most 64 bytes (HOST_NAME_MAX).
    if config.hostname.len() > 64 {
        return Err(Status::invalid_argument(format!(
            "RunPodSandbox: hostname {:?} is longer than 64 bytes",
            config.hostname
        )));
    }
    crate::pod::check_pod_userns(&crate::pod::namespace_options(&config))
        .map_err(|e| Status::invalid_argument(format!("RunPodSandbox: {e}")))?;
    // The CNI runtime config comes from annotations: refuse bad ones
    // before anything is made.
    if crate::pod::namespace_options(&config).network() != NamespaceMode::Node {
        crate::pod::cni_runtime_config(&config)
            .map_err(|e| Status::invalid_argument(format!("RunPodSandbox: {e}")))?;
    }
    let key = key_of(&config);
    // Held until the pod is made and recorded, or undone, even if this
    // call's deadline ends first.
    let turn = d.pod_names.lock(&key).await;
    if let Some(holder) = d.pods.find_by(|p| p.key() == key) {
        // The kubelet retrying a call whose deadline ended: the pod that
        // call made is its answer.
        if holder.state == PodState::Ready
            && *holder.config_ref() == config
            && holder.runtime_handler == req.runtime_handler
        {
            crate::trace::record("pod_id", &holder.id);
            tracing::info!(pod = %holder.id, name = %key, "RunPodSandbox retried: the pod already made");
            return Ok(RunPodSandboxResponse {
                pod_sandbox_id: holder.id.clone(),
            });
        }
        return Err(Status::already_exists(format!(
            "pod sandbox name {key:?} is already in use by {}",
            holder.id
        )));
    }
    let id = random_id().map_err(|e| Status::internal(format!("pod id: {e}")))?;
    crate::trace::record("pod_id", &id);
    let pods = d.pods.clone();
    let (pid, handler) = (id.clone(), req.runtime_handler.clone());
    let rec = crate::trace::spawn_blocking(move || {
        let made = pods.create(&pid, &config, &handler, now_ns());
        drop(turn);
        made
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))??;
    berth_db::crash::point("run_pod:saved");
    tracing::info!(pod = %rec.id, name = %key, "pod sandbox ready");
    for kind in [
        ContainerEventType::ContainerCreatedEvent,
        ContainerEventType::ContainerStartedEvent,
    ] {
        crate::cri::events::emit(d, &rec.id, kind, &rec.id, None);
    }
    Ok(RunPodSandboxResponse { pod_sandbox_id: id })
}
