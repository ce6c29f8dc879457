//! Modes of the directories berth makes under `<root>` and `<state>`.
//!
//! A directory that holds image or container content (a writable layer, a
//! mounted rootfs, a pod's `/dev/shm`) is closed to the node's other users:
//! a setuid binary a container made, or an image shipped, must not be
//! reachable (let alone runnable) by an unprivileged user of the node (the
//! containerd CVE-2021-41103 class). Such a directory is 0700 and root's;
//! where a container in a user namespace must look a path up under it while
//! it is being set up (its rootfs, its pod's files), 0710 with the group of
//! the pod's root as the node sees it, so that only that pod's processes
//! may pass through (and not list) it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Makes `dir` (missing parents as usual: they must stay passable) and
/// closes it: 0700, or 0710 with group `traverse_gid`.
pub fn private(dir: &Path, traverse_gid: Option<u32>) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        made => made?,
    }
    close(dir, traverse_gid)
}

/// Closes the existing directory `dir`: 0700, or 0710 with group
/// `traverse_gid`. (Idempotent: berthd does it again at every start.)
pub fn close(dir: &Path, traverse_gid: Option<u32>) -> io::Result<()> {
    if let Some(gid) = traverse_gid {
        std::os::unix::fs::chown(dir, None, Some(gid))?;
    }
    let mode = if traverse_gid.is_some() { 0o710 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Closes a directory an older berth left open (0755): 0700, or 0710 if
/// its group was given to a pod (not root's). A missing one is fine;
/// one already closed is left as is.
pub fn tighten(dir: &Path) -> io::Result<()> {
    let m = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let want = if m.gid() == 0 { 0o700 } else { 0o710 };
    if m.mode() & 0o7777 != want {
        tracing::info!("closing {} to other users ({want:o})", dir.display());
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want))?;
    }
    Ok(())
}

/// [`tighten`] for every directory in `parent`.
pub fn tighten_each_in(parent: &Path) -> io::Result<()> {
    let rd = match std::fs::read_dir(parent) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        tighten(&e?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").mode() & 0o7777
    }

    #[test]
    fn an_older_versions_open_dirs_are_closed_and_a_pods_group_kept() {
        let top = std::env::temp_dir().join(format!("berth-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let (old, pods) = (top.join("old"), top.join("pods"));
        for d in [&old, &pods.join("a"), &pods.join("b")] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::write(pods.join("file"), "").expect("file");
        let file_mode = mode(&pods.join("file"));
        // (Run as root, as berthd is: b's group is a pod's.)
        let pod_gid = 300_000;
        let as_root = nix::unistd::geteuid().is_root();
        if as_root {
            std::os::unix::fs::chown(pods.join("b"), None, Some(pod_gid)).expect("chown");
        }
        tighten(&old).expect("tighten");
        tighten_each_in(&pods).expect("tighten pods");
        tighten(&top.join("missing")).expect("a missing dir is fine");
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&pods.join("a")), 0o700);
        if as_root {
            assert_eq!(mode(&pods.join("b")), 0o710);
        }
        assert_eq!(mode(&pods.join("file")), file_mode, "files are left alone");
        // Again: nothing changes.
        tighten_each_in(&pods).expect("again");
        assert_eq!(mode(&pods.join("a")), 0o700);

        let made = top.join("new/deeper");
        private(&made, None).expect("private");
        assert_eq!(mode(&made), 0o700);
        assert_eq!(
            mode(&top.join("new")) & 0o111,
            0o111,
            "parents stay passable"
        );
        if as_root {
            let shared = top.join("shared");
            private(&shared, Some(pod_gid)).expect("private");
            let m = std::fs::metadata(&shared).expect("metadata");
            assert_eq!((m.mode() & 0o7777, m.gid()), (0o710, pod_gid));
        }
        std::fs::remove_dir_all(&top).expect("cleanup");
    }
}
