//! CRI `PodSandboxStatus` and the `PodSandbox` of `ListPodSandbox`.

use std::collections::HashMap;

use cri_api::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandbox, PodSandboxNetworkStatus, PodSandboxState,
    PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
};
use tonic::Status;

use crate::daemon::Daemon;
use crate::pod::{PodRecord, PodState};
use berth_runtime::now_ns;

pub fn state_of(rec: &PodRecord) -> PodSandboxState {
    match rec.state {
        PodState::Ready => PodSandboxState::SandboxReady,
        PodState::NotReady => PodSandboxState::SandboxNotready,
    }
}

pub fn to_cri(rec: &PodRecord) -> PodSandbox {
    let c = rec.config_ref();
    PodSandbox {
        id: rec.id.clone(),
        metadata: c.metadata.clone(),
        state: state_of(rec) as i32,
        created_at: rec.created_ns,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}

/// The pod's IPs from its CNI result: the first is the pod IP.
fn network_status(rec: &PodRecord) -> PodSandboxNetworkStatus {
    let ips = rec
        .network
        .as_ref()
        .map(|n| n.ips.clone())
        .unwrap_or_default();
    let mut it = ips.into_iter();
    PodSandboxNetworkStatus {
        ip: it.next().unwrap_or_default(),
        additional_ips: it.map(|ip| PodIp { ip }).collect(),
    }
}

/// The pod-level resources the kubelet last recorded (UpdatePodSandboxResources).
fn resources_json(r: Option<cri_api::v1::LinuxContainerResources>) -> serde_json::Value {
    match r {
        None => serde_json::Value::Null,
        Some(r) => serde_json::json!({
            "cpuShares": r.cpu_shares,
            "cpuQuota": r.cpu_quota,
            "cpuPeriod": r.cpu_period,
            "memoryLimitInBytes": r.memory_limit_in_bytes,
            "memorySwapLimitInBytes": r.memory_swap_limit_in_bytes,
            "cpusetCpus": r.cpuset_cpus,
            "cpusetMems": r.cpuset_mems,
        }),
    }
}

pub async fn pod_sandbox_status(
    d: &Daemon,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, Status> {
    let rec = d.pod(&req.pod_sandbox_id)?;
    let mut info = HashMap::new();
    if req.verbose {
        let ns_dir = d.pods.ns_dir(&rec.id);
        let namespaces: HashMap<&String, String> = rec
            .pinned
            .iter()
            .map(|k| (k, ns_dir.join(k).display().to_string()))
            .collect();
        info.insert(
            "info".to_string(),
            serde_json::json!({
                "namespaces": namespaces,
                "podDir": d.pods.pod_dir(&rec.id),
                "cgroupsCreated": rec.cgroups,
                "shm": rec.shm_mounted,
                "cniNetwork": rec.network.as_ref().map(|n| &n.list["name"]),
                "cniResult": rec.network.as_ref().map(|n| &n.result),
                "networkError": rec.network_error,
                "resources": resources_json(rec.config().linux.and_then(|l| l.resources)),
                "overhead": resources_json(rec.config().linux.and_then(|l| l.overhead)),
            })
            .to_string(),
        );
    }
    Ok(PodSandboxStatusResponse {
        status: Some(status_of(&rec)),
        info,
        containers_statuses: Vec::new(),
        timestamp: now_ns(),
    })
}

pub fn status_of(rec: &PodRecord) -> PodSandboxStatus {
    let c = rec.config();
    let options = crate::pod::namespace_options(&c);
    PodSandboxStatus {
        id: rec.id.clone(),
        metadata: c.metadata,
        state: state_of(rec) as i32,
        created_at: rec.created_ns,
        network: Some(network_status(rec)),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(options),
            }),
        }),
        labels: c.labels,
        annotations: c.annotations,
        runtime_handler: rec.runtime_handler.clone(),
    }
}
