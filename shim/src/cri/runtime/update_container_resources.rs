//! CRI `UpdateContainerResources`: new CPU, memory, cpuset and hugepage
//! limits (and v2 `unified` keys) written to the container's cgroup in
//! place. Fields left at zero keep their value. If the kernel refuses a
//! value, what was already written is put back and the kernel's reason
//! is returned; the container keeps its old limits.

use cri_api::v1::{LinuxContainerResources, UpdateContainerResourcesRequest};
use tonic::Status;

use crate::container::Observed;
use crate::daemon::Daemon;

pub async fn update_container_resources(
    d: &Daemon,
    req: UpdateContainerResourcesRequest,
) -> Result<(), Status> {
    let mut rec = d.container(&req.container_id)?;
    let Some(new) = req.linux else {
        return Ok(());
    };
    match d.containers.observe(&rec.id) {
        Observed::Created | Observed::Running { .. } => {}
        other => {
            return Err(Status::failed_precondition(format!(
                "container {} is {}: its resources cannot change",
                rec.id,
                crate::container::name(&other)
            )));
        }
    }
    let cgroup = crate::stats::container_cgroup(&d.containers, &rec)
        .filter(|c| c.exists())
        .ok_or_else(|| Status::failed_precondition(format!("container {}: no cgroup", rec.id)))?;
    let writes = cgroup
        .writes_for(&new)
        .map_err(|e| Status::invalid_argument(format!("UpdateContainerResources: {e}")))?;
    tokio::task::spawn_blocking(move || crate::cgroups::apply(&writes))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| {
            Status::invalid_argument(format!(
                "UpdateContainerResources {}: the kernel refused {e}; the old limits stay",
                rec.id
            ))
        })?;
    // ContainerStatus reports the resources now in force.
    let mut config = rec.config();
    let linux = config.linux.get_or_insert_with(Default::default);
    let merged = merge(linux.resources.take().unwrap_or_default(), new);
    if berth_runtime::is_systemd_path(&rec.cgroup) {
        // The files are written; systemd must know the new limits too, or
        // its next daemon-reload puts the unit's old properties back.
        let (path, id, r) = (rec.cgroup.clone(), rec.id.clone(), merged.clone());
        let set = tokio::task::spawn_blocking(move || set_unit_properties(&path, &id, &r)).await;
        if let Err(e) = set.map_err(|e| e.to_string()).and_then(|r| r) {
            tracing::warn!(container = %rec.id, "updating the scope's properties: {e}");
        }
    }
    linux.resources = Some(merged);
    rec.set_config(&config);
    d.containers.save(&rec)?;
    tracing::info!(container = %rec.id, "container resources updated");
    Ok(())
}

/// The systemd driver: the container's scope gets `r` as unit properties
/// (MemoryMax, CPUWeight, CPUQuota, AllowedCPUs, ...) over D-Bus, as runc
/// does, through libcgroups' systemd manager.
fn set_unit_properties(
    cgroups_path: &str,
    id: &str,
    r: &cri_api::v1::LinuxContainerResources,
) -> Result<(), String> {
    use libcgroups::common::{CgroupManager, ControllerOpt};
    let resources = crate::spec::resources::oci_resources(r).map_err(|e| e.to_string())?;
    let manager = libcgroups::systemd::manager::Manager::new(
        "/sys/fs/cgroup".into(),
        cgroups_path.into(),
        id.to_string(),
        true,
        std::time::Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| e.to_string())
}

/// `new`'s non-zero fields over `old`.
fn merge(
    mut old: LinuxContainerResources,
    new: LinuxContainerResources,
) -> LinuxContainerResources {
    if new.cpu_period != 0 {
        old.cpu_period = new.cpu_period;
    }
    if new.cpu_quota != 0 {
        old.cpu_quota = new.cpu_quota;
    }
    if new.cpu_shares != 0 {
        old.cpu_shares = new.cpu_shares;
    }
    if new.memory_limit_in_bytes != 0 {
        old.memory_limit_in_bytes = new.memory_limit_in_bytes;
    }
    if new.memory_swap_limit_in_bytes != 0 {
        old.memory_swap_limit_in_bytes = new.memory_swap_limit_in_bytes;
    }
    if !new.cpuset_cpus.is_empty() {
        old.cpuset_cpus = new.cpuset_cpus;
    }
    if !new.cpuset_mems.is_empty() {
        old.cpuset_mems = new.cpuset_mems;
    }
    if !new.hugepage_limits.is_empty() {
        old.hugepage_limits = new.hugepage_limits;
    }
    old.unified.extend(new.unified);
    old
}
