//! Idmapped mounts (`mount_setattr(2)` with `MOUNT_ATTR_IDMAP`, Linux
//! 5.12+; under overlayfs, 5.19+): a copy of a mount whose file owners are
//! seen through a user namespace's ID maps. A pod in its own user
//! namespace gets its image layers and volumes this way, so that a file of
//! the node's root is its root's, and what its root writes there is the
//! node's root's again, while on the node its root is an unprivileged ID.
//!
//! A copy is made detached (`open_tree(OPEN_TREE_CLONE)`), idmapped, then
//! attached at a staging path under the container's state directory. The
//! overlay or the container's bind mount holds what it needs of it, so
//! the staging mount is detached again right after ([`unstage`]).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (include/uapi/linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mounts at `at` (an existing file or directory, as `source` is) a copy
/// of `source` idmapped through the user namespace pinned at `userns`;
/// `recursive` takes its submounts along. On error nothing is mounted.
#[allow(unsafe_code)]
pub fn stage(source: &Path, at: &Path, userns: &Path, recursive: bool) -> Result<(), String> {
    let ns = std::fs::File::open(userns).map_err(|e| format!("{}: {e}", userns.display()))?;
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    let tree = berth_runtime::mounts::clone_tree(source, recursive)
        .map_err(|e| format!("open_tree {}: {e}", source.display()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: a plain syscall on a descriptor we own and a struct that
    // lives across it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | rec,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(format!(
            "idmapping {}: {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    berth_runtime::mounts::attach(&tree, at).map_err(|e| {
        format!(
            "attaching the idmapped {} at {}: {e}",
            source.display(),
            at.display()
        )
    })?;
    Ok(())
}

/// Stages idmapped copies of the directories `layers` as
/// `<dir>/<prefix><n>`, in order. On error, those staged so far are
/// detached.
pub fn stage_layers(
    layers: &[PathBuf],
    dir: &Path,
    prefix: &str,
    userns: &Path,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut staged = Vec::new();
    for layer in layers {
        let at = dir.join(format!("{prefix}{}", staged.len()));
        let made = std::fs::create_dir(&at)
            .map_err(|e| format!("{}: {e}", at.display()))
            .and_then(|()| stage(layer, &at, userns, false));
        if let Err(e) = made {
            unstage(&staged);
            return Err(e);
        }
        staged.push(at);
    }
    Ok(staged)
}

/// Detaches staged mounts and removes their mount points.
pub fn unstage(staged: &[PathBuf]) {
    for p in staged {
        let _ = umount2(p, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(p).or_else(|_| std::fs::remove_file(p));
    }
}

/// Detaches whatever is staged under `dir` and removes it (a container's
/// leftovers after a crash).
pub fn unstage_all(dir: &Path) {
    let staged: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    unstage(&staged);
    let _ = std::fs::remove_dir(dir);
}
