//! A pod's own user namespace: the ID maps the CRI asks for, checked
//! against what the CRI allows.

use cri_api::v1::{NamespaceMode, NamespaceOption, PodSandboxConfig};

use super::namespace_options;

/// One ID mapping of a user namespace: `len` IDs from `container` inside
/// are `host` and on outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// A pod's user namespace: its one UID and one GID mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: IdRange,
    pub gid: IdRange,
}

impl IdMaps {
    /// The host UID and GID of `uid:gid` inside (unmapped ones: the
    /// overflow ID, as the kernel shows them).
    pub fn to_host(self, uid: u32, gid: u32) -> (u32, u32) {
        let map = |r: &IdRange, id: u32| {
            id.checked_sub(r.container)
                .filter(|off| *off < r.len)
                .map_or(65534, |off| r.host + off)
        };
        (map(&self.uid, uid), map(&self.gid, gid))
    }
}

/// The user namespace asked for by `o`: None for the node's (no
/// `userns_options`, or NODE), the ID maps for POD. POD needs exactly one
/// UID and one GID mapping of container ID 0, onto a host range without
/// the node's root; CONTAINER and TARGET are not valid for user
/// namespaces, as the CRI says.
pub fn userns_maps(o: &NamespaceOption) -> Result<Option<IdMaps>, String> {
    let bad = |m: String| format!("userns_options: {m}");
    let Some(u) = o.userns_options.as_ref() else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => return Ok(None),
        Ok(NamespaceMode::Pod) => {}
        _ => {
            let m = u.mode;
            return Err(bad(format!(
                "mode {m} is not valid for a user namespace (only POD or NODE)"
            )));
        }
    }
    let one = |maps: &[cri_api::v1::IdMapping], kind: &str| -> Result<IdRange, String> {
        let [m] = maps else {
            return Err(bad(format!(
                "mode POD needs exactly one {kind} mapping, got {}",
                maps.len()
            )));
        };
        if m.container_id != 0 {
            return Err(bad(format!(
                "the {kind} mapping must map container ID 0 (it starts at {})",
                m.container_id
            )));
        }
        if m.length == 0 || m.host_id.checked_add(m.length).is_none() {
            return Err(bad(format!(
                "the {kind} mapping {}+{} is not a range",
                m.host_id, m.length
            )));
        }
        if m.host_id == 0 {
            return Err(bad(format!(
                "the {kind} mapping makes the pod's root the node's root (host ID 0)"
            )));
        }
        Ok(IdRange {
            container: m.container_id,
            host: m.host_id,
            len: m.length,
        })
    };
    Ok(Some(IdMaps {
        uid: one(&u.uids, "UID")?,
        gid: one(&u.gids, "GID")?,
    }))
}

/// The pod's user namespace, as asked for by its config (already
/// validated when it was run).
pub fn pod_userns(c: &PodSandboxConfig) -> Option<IdMaps> {
    userns_maps(&namespace_options(c)).ok().flatten()
}

/// A pod's own user namespace cannot hold the node's network, IPC or PID
/// namespace (Status says `user_namespaces_host_network: false`).
pub fn check_pod_userns(o: &NamespaceOption) -> Result<Option<IdMaps>, String> {
    let maps = userns_maps(o)?;
    if maps.is_some() {
        for (name, mode) in [("network", o.network()), ("ipc", o.ipc()), ("pid", o.pid())] {
            if mode == NamespaceMode::Node {
                return Err(format!(
                    "userns_options: a pod in its own user namespace cannot use the node's {name} namespace"
                ));
            }
        }
    }
    Ok(maps)
}
