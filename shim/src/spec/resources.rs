//! Resources: the cgroup path under the pod's parent, the CRI's CPU,
//! memory, hugepage and unified limits, and `process.oomScoreAdj`.

use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources, Spec};

use super::{Context, Error, PodContext, invalid, linux_mut, process_mut, resources_mut};

/// Sets `linux.cgroupsPath`, the CRI's limits in `linux.resources`, and
/// `process.oomScoreAdj`.
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    if let Some(r) = cx.resources() {
        let oom = i32::try_from(r.oom_score_adj)
            .ok()
            .filter(|v| (-1000..=1000).contains(v))
            .ok_or_else(|| invalid("linux.resources.oom_score_adj", "must be in -1000..=1000"))?;
        process_mut(spec).set_oom_score_adj(Some(oom));
        // The systemd driver: the cpuset is written to the scope's files
        // once the container exists (see `with_cpuset`).
        resources_from_cri(r, resources_mut(spec), !cx.pod.systemd_cgroup)?;
    }
    linux_mut(spec).set_cgroups_path(Some(cgroups_path(cx.id, cx.pod).into()));
    Ok(())
}

pub(super) fn cgroups_path(id: &str, pod: &PodContext) -> String {
    let parent = pod.cgroup_parent.trim_end_matches('/');
    if pod.systemd_cgroup {
        // runc's and libcontainer's `slice:prefix:name`: berth-<id>.scope.
        let slice = if parent.is_empty() {
            "system.slice"
        } else {
            parent
        };
        format!("{slice}:berth:{id}")
    } else if parent.is_empty() {
        format!("/berth/{id}")
    } else if parent.starts_with('/') {
        format!("{parent}/berth-{id}")
    } else {
        format!("/{parent}/berth-{id}")
    }
}

/// The CRI's limits as OCI resources, but the cpuset (for the systemd
/// driver's unit properties on UpdateContainerResources).
pub fn oci_resources(r: &cri_api::v1::LinuxContainerResources) -> Result<LinuxResources, Error> {
    let mut out = LinuxResources::default();
    resources_from_cri(r, &mut out, false)?;
    Ok(out)
}

/// `with_cpuset`: the cpuset too. Under the systemd driver it is not given
/// to the runtime: libcgroups 0.7 (libcontainer's) sends systemd the
/// AllowedCPUs/AllowedMemoryNodes properties as arrays of u64 where
/// systemd wants bytes, and systemd then refuses the whole scope
/// ("Unexpected message contents"). berth writes `cpuset.cpus` and
/// `cpuset.mems` itself instead, which systemd leaves alone as long as
/// the unit has no AllowedCPUs.
fn resources_from_cri(
    r: &cri_api::v1::LinuxContainerResources,
    out: &mut LinuxResources,
    with_cpuset: bool,
) -> Result<(), Error> {
    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    if r.cpu_shares != 0 {
        let s = u64::try_from(r.cpu_shares)
            .map_err(|_| invalid("linux.resources.cpu_shares", "must not be negative"))?;
        cpu.set_shares(Some(s));
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
        any_cpu = true;
    }
    if r.cpu_period != 0 {
        let p = u64::try_from(r.cpu_period)
            .map_err(|_| invalid("linux.resources.cpu_period", "must not be negative"))?;
        cpu.set_period(Some(p));
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() && with_cpuset {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() && with_cpuset {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        any_cpu = true;
    }
    if any_cpu {
        out.set_cpu(Some(cpu));
    }
    let mut mem = LinuxMemory::default();
    if r.memory_limit_in_bytes != 0 {
        mem.set_limit(Some(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes != 0 {
        mem.set_swap(Some(r.memory_swap_limit_in_bytes));
    }
    if r.memory_limit_in_bytes != 0 || r.memory_swap_limit_in_bytes != 0 {
        out.set_memory(Some(mem));
    }
    // The kubelet sends a limit (0 unless asked) for every page size the
    // node has; without the hugetlb controller none can be enforced, and
    // runc skips them too rather than fail every container.
    if !r.hugepage_limits.is_empty() && !crate::cgroups::has_hugetlb() {
        tracing::debug!("no hugetlb cgroup controller: hugepage limits not applied");
    } else if !r.hugepage_limits.is_empty() {
        let hp = r
            .hugepage_limits
            .iter()
            .map(|h| {
                let limit = i64::try_from(h.limit).map_err(|_| {
                    invalid(
                        format!("linux.resources.hugepage_limits[{:?}]", h.page_size),
                        "limit too large",
                    )
                })?;
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone());
                l.set_limit(limit);
                Ok(l)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        out.set_hugepage_limits(Some(hp));
    }
    if !r.unified.is_empty() {
        out.set_unified(Some(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    Ok(())
}
