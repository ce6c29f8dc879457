//! Security: AppArmor and SELinux options checked against the node, the
//! pod's sysctls, seccomp (profiles from `crate::seccomp`), masked and
//! read-only paths, and `noNewPrivileges`.

use std::collections::BTreeMap;
use std::path::Path;

use cri_api::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::Spec;

use super::capabilities::bounding_names;
use super::{Context, Error, PodContext, invalid, linux_mut, process_mut};

pub(super) const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub(super) const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Sets `process.apparmorProfile`, `process.noNewPrivileges`,
/// `linux.seccomp` (from the capabilities set before), `linux.sysctl`, `linux.maskedPaths` and
/// `linux.readonlyPaths`.
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    let sc = &cx.sc;
    // Only when set: libcontainer takes the key's presence (even `false`)
    // to mean "load seccomp after dropping capabilities", which then fails
    // without no_new_privs.
    if sc.no_new_privs {
        process_mut(spec).set_no_new_privileges(Some(true));
    }
    let apparmor = crate::apparmor::profile_for(sc).map_err(|e| match e {
        crate::apparmor::Error::Invalid { field, reason } => invalid(field, reason),
        crate::apparmor::Error::Unavailable(why) => Error::Unavailable(why),
    })?;
    process_mut(spec).set_apparmor_profile(apparmor);
    // A privileged container runs without seccomp, as with containerd.
    let seccomp = if sc.privileged {
        None
    } else {
        crate::seccomp::for_container(sc, &bounding_names(spec))
            .map_err(|e| invalid("linux.security_context.seccomp", e))?
    };
    let sysctl = sysctls(cx.pod)?;
    let paths = |asked: &[String], default: &[&str]| -> Vec<String> {
        if sc.privileged {
            Vec::new()
        } else if asked.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            asked.to_vec()
        }
    };
    let masked = paths(&sc.masked_paths, DEFAULT_MASKED_PATHS);
    let readonly = paths(&sc.readonly_paths, DEFAULT_READONLY_PATHS);
    let linux = linux_mut(spec);
    linux.set_seccomp(seccomp);
    if !sysctl.is_empty() {
        linux.set_sysctl(Some(sysctl.into_iter().collect()));
    }
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    Ok(())
}

/// SELinux: berth's hosts have none, so an explicit label is refused, as
/// containerd does on such a host. (AppArmor is chosen in [`apply`].)
pub(super) fn check_lsm(sc: &LinuxContainerSecurityContext) -> Result<(), Error> {
    let selinux_on = Path::new("/sys/fs/selinux/enforce").exists();
    if let Some(o) = &sc.selinux_options
        && !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
        && !selinux_on
    {
        return Err(invalid(
            "security_context.selinux_options",
            "an SELinux label asked for, but SELinux is not enabled on this node",
        ));
    }
    Ok(())
}

/// The pod's sysctls, if each is namespaced and the pod has the namespace:
/// IPC ones (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`)
/// need the pod's own IPC namespace, `net.*` its own network namespace.
fn sysctls(pod: &PodContext) -> Result<BTreeMap<String, String>, Error> {
    const IPC: &[&str] = &[
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
    ];
    for (k, v) in &pod.sysctls {
        let field = format!("sysctls[{k:?}]");
        if v.contains('\n') {
            return Err(invalid(field, "the value has a newline"));
        }
        let key = k.replace('/', ".");
        if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            if pod.ipc_ns.is_none() {
                return Err(invalid(
                    field,
                    "an IPC sysctl in a pod that uses the host's IPC namespace",
                ));
            }
        } else if key.starts_with("net.") {
            if pod.net_ns.is_none() {
                return Err(invalid(
                    field,
                    "a network sysctl in a pod that uses the host's network",
                ));
            }
        } else {
            return Err(invalid(field, "not a namespaced sysctl"));
        }
    }
    Ok(pod
        .sysctls
        .iter()
        .map(|(k, v)| (k.replace('/', "."), v.clone()))
        .collect())
}
