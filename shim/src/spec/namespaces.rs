//! Namespaces: the pod's user namespace and its ID maps, the PID mode
//! (container, pod, node or a target's), the pod's IPC, UTS and network
//! namespaces, the container's own mount (and cgroup) namespace, and the
//! hostname.

use std::path::{Path, PathBuf};

use cri_api::v1::{LinuxContainerSecurityContext, NamespaceMode};
use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Spec};

use super::{Context, Error, PodContext, invalid, linux_mut};

/// Sets `linux.namespaces`, `linux.uidMappings`/`gidMappings` in a
/// user-namespaced pod, and `hostname` when the pod has its own UTS
/// namespace.
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    let ns = namespaces(&cx.sc, cx.pod)?;
    let linux = linux_mut(spec);
    linux.set_namespaces(Some(ns));
    if let Some((_, maps)) = &cx.pod.user_ns {
        let one = |r: &crate::pod::IdRange| {
            LinuxIdMappingBuilder::default()
                .container_id(r.container)
                .host_id(r.host)
                .size(r.len)
                .build()
                .map(|m| vec![m])
        };
        linux.set_uid_mappings(Some(one(&maps.uid)?));
        linux.set_gid_mappings(Some(one(&maps.gid)?));
    }
    if cx.pod.uts_ns.is_some() {
        spec.set_hostname(Some(cx.hostname.clone()));
    }
    Ok(())
}

fn ns(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path.cloned());
    n
}

fn namespaces(
    sc: &LinuxContainerSecurityContext,
    pod: &PodContext,
) -> Result<Vec<LinuxNamespace>, Error> {
    let mut out = Vec::new();
    // The pod's user namespace first: the runtime joins it before making
    // the container's own namespaces, so that they belong to it.
    if let Some((path, _)) = &pod.user_ns {
        out.push(ns(LinuxNamespaceType::User, Some(path)));
    }
    let pid = sc.namespace_options.as_ref().map(|o| o.pid);
    match pid.map(NamespaceMode::try_from) {
        None | Some(Ok(NamespaceMode::Container)) => out.push(ns(LinuxNamespaceType::Pid, None)),
        Some(Ok(NamespaceMode::Node)) => {}
        Some(Ok(NamespaceMode::Pod)) => match &pod.pid_ns {
            Some(path) => out.push(ns(LinuxNamespaceType::Pid, Some(path))),
            None => {
                return Err(invalid(
                    "security_context.namespace_options.pid",
                    "POD, but the pod does not share a PID namespace",
                ));
            }
        },
        Some(Ok(NamespaceMode::Target)) => match &pod.target_pid_ns {
            Some(path) => out.push(ns(LinuxNamespaceType::Pid, Some(path))),
            None => {
                return Err(invalid(
                    "security_context.namespace_options.target_id",
                    "the target container is not running",
                ));
            }
        },
        Some(Err(_)) => {
            return Err(invalid(
                "security_context.namespace_options.pid",
                format!("unknown mode {}", pid.unwrap_or_default()),
            ));
        }
    }
    for (typ, path) in [
        (LinuxNamespaceType::Ipc, &pod.ipc_ns),
        (LinuxNamespaceType::Uts, &pod.uts_ns),
        (LinuxNamespaceType::Network, &pod.net_ns),
    ] {
        if let Some(p) = path {
            out.push(ns(typ, Some(p)));
        }
    }
    out.push(ns(LinuxNamespaceType::Mount, None));
    // containerd gives each container its own cgroup namespace on cgroup v2.
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}
