//! The cgroup hierarchy the tests run on (v1 here, v2 in the VM lane's
//! guest), and where berth puts a pod's and a container's cgroup under the
//! driver the tests run berthd with: `BERTH_TEST_CGROUP_DRIVER`, `cgroupfs`
//! (the default) or `systemd`.

use std::path::{Path, PathBuf};

pub const ROOT: &str = "/sys/fs/cgroup";

/// Is this node on the unified hierarchy?
pub fn v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").is_file()
}

/// Do the tests run berthd with the systemd cgroup driver?
pub fn systemd() -> bool {
    std::env::var("BERTH_TEST_CGROUP_DRIVER").is_ok_and(|d| d == "systemd")
}

/// A pod cgroup parent of this test process for `tag`, in the form the
/// kubelet uses with the driver: `/berth-test-<pid>-<tag>/pod` (cgroupfs)
/// or `berthtest_<pid>_<tag>-pod.slice` (systemd).
pub fn unique_parent(tag: &str) -> String {
    let pid = std::process::id();
    if systemd() {
        format!("berthtest_{pid}_{}-pod.slice", tag.replace('-', "_"))
    } else {
        format!("/berth-test-{pid}-{tag}/pod")
    }
}

/// Where `parent` lives below a hierarchy's root: a path as it is, or a
/// systemd slice expanded (`a-b.slice` is `a.slice/a-b.slice`).
pub fn rel(parent: &str) -> PathBuf {
    if let Some(name) = parent
        .strip_suffix(".slice")
        .filter(|_| !parent.contains('/'))
    {
        let parts: Vec<&str> = name.split('-').collect();
        return (1..=parts.len())
            .map(|i| format!("{}.slice", parts[..i].join("-")))
            .collect();
    }
    PathBuf::from(parent.trim_start_matches('/'))
}

/// The hierarchies of this node: the v2 root, or every v1 mount (the
/// name=systemd and unified ones of a hybrid node included: runc makes
/// cgroups there too).
pub fn hierarchies() -> Vec<PathBuf> {
    if v2() {
        return vec![PathBuf::from(ROOT)];
    }
    std::fs::read_dir(ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// `parent`'s directory: of `controller` on v1, the one directory on v2.
pub fn dir(parent: &str, controller: &str) -> PathBuf {
    let root = Path::new(ROOT);
    let base = if v2() {
        root.to_path_buf()
    } else {
        root.join(controller)
    };
    base.join(rel(parent))
}

/// The cgroup directory of container `id` in pod cgroup `parent`.
pub fn container_dir(parent: &str, id: &str, controller: &str) -> PathBuf {
    dir(parent, controller).join(if systemd() {
        format!("berth-{id}.scope")
    } else {
        format!("berth-{id}")
    })
}

/// The first directory of `parent`: what a test made and must find gone.
pub fn top(parent: &str) -> PathBuf {
    rel(parent).components().take(1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_as_systemd_places_them() {
        assert_eq!(
            rel("kubepods-burstable-pod1.slice"),
            Path::new("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice")
        );
        assert_eq!(rel("/kubepods/pod1"), Path::new("kubepods/pod1"));
        assert_eq!(top("a-b.slice"), Path::new("a.slice"));
    }
}
