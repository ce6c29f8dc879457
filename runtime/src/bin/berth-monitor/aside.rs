//! Setting the node's pod mounts aside while the container is made.
//!
//! libcontainer and libcgroups read the whole mount table several times
//! per container (`/proc/self/mountinfo`, in the monitor and in the
//! container's init), and every pod adds about five mounts to it, so a
//! start got slower with each pod on the node. berthd keeps every pod's
//! mounts (rootfs overlays, image volumes, namespace pins, `/dev/shm`)
//! under its state directory and makes that directory a bind mount of
//! itself (the *tree*). The monitor then takes a mount namespace of its
//! own, keeps a copy of the few mounts its container's spec names, and
//! detaches the tree in one call: the directory underneath is the same
//! one (its files are all there), without the pods' mounts. It binds
//! that directory on itself again (a tree without the pods' mounts),
//! attaches the copies where they were, makes the container in that
//! small table, and goes back to the node's namespace. `berth-monitor
//! exec` does the same while it makes an exec's process.
//!
//! The mount the tree sits on is made a slave in that namespace first, so
//! that neither the detach nor the copies reach the node's namespace
//! where mounts are shared; a spec asking for shared propagation, which
//! that would cut off, is made in the node's namespace. So is one where
//! anything is unexpected (the tree is not a bind of its own directory,
//! a copy cannot be made): the node's namespace is left as it was.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_runtime::mounts::{attach, bind_on_itself, clone_tree, is_mount_root, propagation};
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// The node's mount namespace, to go back to once the container is made.
pub struct Aside {
    home: OwnedFd,
}

impl Aside {
    /// Back to the node's mount namespace: the pump and the rest of the
    /// container's life need nothing from this one (and must not keep
    /// its copies of the pod's mounts alive).
    pub fn back(self) -> Result<(), String> {
        setns(&self.home, CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("back to the node's mount namespace: {e}"))
    }
}

/// Why the mounts were not set aside; `Stuck` means the process is in a
/// namespace that is not the node's and could not go back: the container
/// must not be made.
pub enum NotAside {
    Skipped(String),
    Stuck(String),
}

/// Sets aside every mount under `tree` but those `spec` (the bundle's)
/// names (its rootfs, mount sources, namespace paths).
pub fn set_aside(
    tree: &Path,
    bundle: &Path,
    spec: Option<&serde_json::Value>,
) -> Result<Aside, NotAside> {
    let skip = |e: String| NotAside::Skipped(e);
    let spec = spec.ok_or_else(|| skip(format!("no spec in {}", bundle.display())))?;
    let needed = needed_paths(bundle, spec).map_err(skip)?;
    let keep = outermost_mounts(tree, &needed, is_mount_root);
    // By its real path: a symbolic link on the way (`/var/run`) is not
    // the mount under it.
    let real = std::fs::canonicalize(tree).map_err(|e| skip(format!("{}: {e}", tree.display())))?;
    let Some(under) = real.ancestors().skip(1).find(|a| is_mount_root(a)) else {
        return Err(skip(format!("no mount under {}", tree.display())));
    };
    let before =
        std::fs::metadata(bundle).map_err(|e| skip(format!("{}: {e}", bundle.display())))?;
    let home = nix::fcntl::open(
        "/proc/self/ns/mnt",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| skip(format!("/proc/self/ns/mnt: {e}")))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| skip(format!("unshare: {e}")))?;
    let aside = Aside { home };
    match detach_keeping(tree, under, &keep, bundle, &before) {
        Ok(()) => Ok(aside),
        Err(e) => match aside.back() {
            Ok(()) => Err(NotAside::Skipped(e)),
            Err(b) => Err(NotAside::Stuck(format!("{e}; {b}"))),
        },
    }
}

/// In a namespace of our own: copies of the `keep` mounts, the tree
/// detached, the copies attached where they were.
fn detach_keeping(
    tree: &Path,
    under: &Path,
    keep: &[PathBuf],
    bundle: &Path,
    before: &std::fs::Metadata,
) -> Result<(), String> {
    // The mount the tree sits on (`/run`, or `/`) is, on a systemd node,
    // shared with the node's namespace: the detach and the copies put
    // back on it would reach the node's namespace too (the copies hidden
    // under berthd's tree there). A slave here still receives the node's
    // mounts, and sends nothing back. (Only sources on that very mount
    // lose the way back from a container, which shared propagation
    // needs: a spec that asks for it is not set aside.)
    propagation(under, MsFlags::MS_SLAVE)
        .map_err(|e| format!("making {} a slave: {e}", under.display()))?;
    // The tree private, so that nothing under it propagates either.
    propagation(tree, MsFlags::MS_REC | MsFlags::MS_PRIVATE)
        .map_err(|e| format!("making {} private: {e}", tree.display()))?;
    let copies = keep
        .iter()
        .map(|k| {
            clone_tree(k, true)
                .map(|fd| (k, fd))
                .map_err(|e| format!("copying the mount {}: {e}", k.display()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    umount2(tree, MntFlags::MNT_DETACH)
        .map_err(|e| format!("detaching {}: {e}", tree.display()))?;
    // The directory under the tree must be the tree's own: a bind of itself.
    match std::fs::metadata(bundle) {
        Ok(m) if m.dev() == before.dev() && m.ino() == before.ino() => {}
        _ => return Err(format!("{} is not a bind mount of itself", tree.display())),
    }
    // The directory bound on itself again, private, the copies on it: the
    // container's binds of files there (its pod's resolv.conf, hosts) are
    // private, as the node's tree makes them, and not slaves of the mount
    // under it (CRIU restores a bind's sharing from the node's side: one
    // it cannot find there fails the restore).
    bind_on_itself(tree).map_err(|e| format!("binding {} on itself: {e}", tree.display()))?;
    for (at, fd) in copies {
        attach(&fd, at).map_err(|e| format!("attaching {} again: {e}", at.display()))?;
    }
    Ok(())
}

/// The absolute paths the spec names: its rootfs, its mounts' sources,
/// its namespaces' paths. An error for a spec that asks for shared
/// propagation (a Kubernetes `Bidirectional` mount).
fn needed_paths(bundle: &Path, spec: &serde_json::Value) -> Result<Vec<PathBuf>, String> {
    if shares_mounts(spec) {
        return Err("the spec asks for shared mount propagation".into());
    }
    let mut paths = Vec::new();
    if let Some(root) = spec.pointer("/root/path").and_then(|p| p.as_str()) {
        paths.push(bundle.join(root));
    }
    let strings = |list: &str, field: &str| -> Vec<PathBuf> {
        spec.pointer(list)
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| m.get(field)?.as_str())
            .map(PathBuf::from)
            .collect()
    };
    paths.extend(strings("/mounts", "source"));
    paths.extend(strings("/linux/namespaces", "path"));
    paths.retain(|p| p.is_absolute());
    Ok(paths)
}

fn shares_mounts(spec: &serde_json::Value) -> bool {
    let shared = |o: &str| o == "shared" || o == "rshared";
    let root = spec
        .pointer("/linux/rootfsPropagation")
        .and_then(|p| p.as_str())
        .is_some_and(shared);
    let mounts = spec
        .pointer("/mounts")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("options")?.as_array())
        .flatten()
        .any(|o| o.as_str().is_some_and(shared));
    root || mounts
}

/// The mounts to keep: for each needed path under `tree`, the outermost
/// mount root between the tree and it (its copy takes the mounts under
/// it along); none for a path on the tree itself. No mount twice, none
/// inside another.
fn outermost_mounts(
    tree: &Path,
    needed: &[PathBuf],
    is_mount_root: impl Fn(&Path) -> bool,
) -> Vec<PathBuf> {
    let mut keep: Vec<PathBuf> = Vec::new();
    for p in needed {
        let Ok(rest) = p.strip_prefix(tree) else {
            continue;
        };
        let mut at = tree.to_path_buf();
        for c in rest.components() {
            at.push(c);
            if is_mount_root(&at) {
                keep.push(at);
                break;
            }
        }
    }
    keep.sort();
    keep.dedup();
    let all = keep.clone();
    keep.retain(|k| !all.iter().any(|o| o != k && k.starts_with(o)));
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_needed_path_keeps_its_outermost_mount_under_the_tree() {
        let mounts = [
            "/s/containers/a/rootfs",
            "/s/containers/a/vol-0",
            "/s/containers/a/vol-0/inner",
            "/s/ns/p/net",
            "/s/pods/p/shm",
            "/other/m",
        ];
        let is_root = |p: &Path| mounts.iter().any(|m| Path::new(m) == p);
        let needed: Vec<PathBuf> = [
            "/s/containers/a/rootfs",
            "/s/containers/a/vol-0/inner/sub/dir",
            "/s/ns/p/net",
            "/s/ns/p/net",
            "/s/pods/p/shm",
            "/s/pods/p/hosts",
            "/other/m/x",
            "/s",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let keep = outermost_mounts(Path::new("/s"), &needed, is_root);
        assert_eq!(
            keep,
            [
                "/s/containers/a/rootfs",
                "/s/containers/a/vol-0",
                "/s/ns/p/net",
                "/s/pods/p/shm"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_spec_with_shared_propagation_is_seen() {
        let plain = serde_json::json!({
            "linux": {"rootfsPropagation": "rslave"},
            "mounts": [{"destination": "/v", "source": "/s", "options": ["rbind", "rslave"]}]
        });
        assert!(!shares_mounts(&plain));
        let volume = serde_json::json!({
            "mounts": [{"destination": "/v", "source": "/s", "options": ["rbind", "rshared", "ro"]}]
        });
        assert!(shares_mounts(&volume));
        assert!(shares_mounts(
            &serde_json::json!({"linux": {"rootfsPropagation": "shared"}})
        ));
    }

    #[test]
    fn a_mount_inside_another_kept_is_taken_along_not_twice() {
        let is_root = |p: &Path| p == Path::new("/s/c") || p == Path::new("/s/c/d/e");
        let needed = [PathBuf::from("/s/c/d/e/f"), PathBuf::from("/s/c/x")];
        assert_eq!(
            outermost_mounts(Path::new("/s"), &needed, is_root),
            [PathBuf::from("/s/c")]
        );
    }
}
