//! The mount calls berthd and the monitor both make: detached copies of
//! mounts and their attaching (`open_tree(2)`, `move_mount(2)`; berthd's
//! idmapped mounts, the monitor's set-aside), propagation changes, a
//! directory bound on itself, and whether a path is a mount's root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MsFlags, mount};

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

/// A detached copy of the mount at `at` (`open_tree(OPEN_TREE_CLONE)`),
/// with the mounts under it if `recursive`.
#[allow(unsafe_code)]
pub fn clone_tree(at: &Path, recursive: bool) -> std::io::Result<OwnedFd> {
    let path = cstr(at)?;
    let rec = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    let flags = libc::OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec;
    // SAFETY: a plain syscall on a NUL-terminated path; the descriptor it
    // returns is owned at once.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches the detached mount `tree` at `at` (`move_mount(2)`).
#[allow(unsafe_code)]
pub fn attach(tree: &OwnedFd, at: &Path) -> std::io::Result<()> {
    let dst = cstr(at)?;
    // SAFETY: a plain syscall on a descriptor we own and NUL-terminated
    // paths that live across it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the propagation of the mount at `at` (`MS_SHARED`, `MS_SLAVE`,
/// `MS_PRIVATE`, with `MS_REC` for the mounts under it too).
pub fn propagation(at: &Path, flags: MsFlags) -> nix::Result<()> {
    mount(None::<&str>, at, None::<&str>, flags, None::<&str>)
}

/// Binds `dir` on itself (not the mounts under it) and makes that mount
/// private.
pub fn bind_on_itself(dir: &Path) -> nix::Result<()> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    propagation(dir, MsFlags::MS_PRIVATE)
}

/// Whether `p` (not followed if a symbolic link) is the root of a mount.
#[allow(unsafe_code)]
pub fn is_mount_root(p: &Path) -> bool {
    let Ok(path) = cstr(p) else { return false };
    // SAFETY: statx writes into the zeroed struct it is given.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            &mut st,
        )
    };
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    r == 0 && st.stx_attributes_mask & root != 0 && st.stx_attributes & root != 0
}
