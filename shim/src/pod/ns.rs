//! Pod namespaces without a pause process: each namespace is created by a
//! short-lived thread that `unshare`s it and bind-mounts its nsfs file onto
//! a pin under `<state>/ns/<pod-id>/`; the bind mount keeps it alive after
//! the thread is gone, and containers join it through that path.
//!
//! Only network, IPC and UTS namespaces are pinned: `unshare` of those is
//! per-thread, so it is safe inside berthd's multi-threaded process.
//!
//! A pod with its own user namespace is the exception: a multi-threaded
//! process may not unshare one, and the pod's other namespaces must be
//! made inside it to belong to it. A child cloned into them all at once
//! holds them while berthd writes the ID maps and pins them from its /proc
//! entry; berthd then enters them (as their owner's parent it may) to set
//! them up.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Net,
    Ipc,
    Uts,
    User,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
            Kind::User => "user",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
            Kind::User => CloneFlags::CLONE_NEWUSER,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("pinning the pod's {what}: {reason}")]
pub struct NsError {
    what: String,
    reason: String,
}

fn err(what: &str, reason: impl std::fmt::Display) -> NsError {
    NsError {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Creates the namespaces `kinds` and pins them in `dir`; sets the UTS
/// hostname and brings the new network namespace's loopback up. With
/// `userns`, they are made inside a new user namespace with those ID maps,
/// pinned too (as `user`). On error nothing stays pinned.
pub fn pin(
    dir: &Path,
    kinds: &[Kind],
    hostname: &str,
    userns: Option<&super::IdMaps>,
) -> Result<(), NsError> {
    // In a user namespace, a container's runtime opens the pins from
    // inside it (libcontainer does): the pod's root passes through.
    let traverse = userns.map(|m| m.to_host(0, 0).1);
    crate::dirs::private(dir, traverse).map_err(|e| err("pin directory", e))?;
    for k in kinds.iter().chain(userns.map(|_| &Kind::User)) {
        std::fs::File::create(dir.join(k.name())).map_err(|e| err(k.name(), e))?;
    }
    let (d, ks, host) = (dir.to_path_buf(), kinds.to_vec(), hostname.to_string());
    let result = match userns {
        None => std::thread::spawn(move || pin_on_this_thread(&d, &ks, &host))
            .join()
            .unwrap_or_else(|_| Err(err("namespaces", "the pinning thread panicked"))),
        Some(maps) => pin_in_userns(dir, kinds, maps).and_then(|()| {
            std::thread::spawn(move || set_up_on_this_thread(&d, &ks, &host))
                .join()
                .unwrap_or_else(|_| Err(err("namespaces", "the set-up thread panicked")))
        }),
    };
    if result.is_err() {
        unpin(dir);
    }
    result
}

/// Makes a user namespace with `kinds` inside (a child process cloned
/// into them, which only waits), writes its ID maps and pins them all.
fn pin_in_userns(dir: &Path, kinds: &[Kind], maps: &super::IdMaps) -> Result<(), NsError> {
    let flags = kinds
        .iter()
        .fold(CloneFlags::CLONE_NEWUSER, |f, k| f | k.flag());
    let holder = Holder::clone_into(flags).map_err(|e| err("user namespace", e))?;
    let pid = holder.pid;
    for (file, r) in [("uid_map", maps.uid), ("gid_map", maps.gid)] {
        std::fs::write(
            format!("/proc/{pid}/{file}"),
            format!("{} {} {}\n", r.container, r.host, r.len),
        )
        .map_err(|e| err("user namespace", format!("{file}: {e}")))?;
    }
    for k in std::iter::once(&Kind::User).chain(kinds) {
        bind(&format!("/proc/{pid}"), dir, *k)?;
    }
    Ok(())
}

/// A child process in new namespaces that holds them while berthd pins
/// them, and exits (and is reaped) when dropped.
struct Holder {
    pid: i32,
    release: Option<std::os::fd::OwnedFd>,
}

impl Holder {
    /// clone(2) with `flags` and no new stack: the child is a copy of this
    /// (multi-threaded) process, so it makes only async-signal-safe calls:
    /// it waits for the pipe to close, then _exits. A multi-threaded
    /// process may not unshare a user namespace, but may clone into one.
    #[allow(unsafe_code)]
    fn clone_into(flags: CloneFlags) -> Result<Holder, String> {
        use std::os::fd::AsRawFd;
        let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (rfd, wfd) = (r.as_raw_fd(), w.as_raw_fd());
        // SAFETY: raw clone without CLONE_VM, as fork(2); the child below
        // touches no lock or allocator and never returns.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags.bits() | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid == 0 {
            // SAFETY: close, read and _exit are async-signal-safe.
            unsafe {
                libc::close(wfd);
                let mut b = 0u8;
                libc::read(rfd, (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        if pid < 0 {
            return Err(format!("clone: {}", std::io::Error::last_os_error()));
        }
        drop(r);
        Ok(Holder {
            pid: pid as i32,
            release: Some(w),
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.release.take());
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

/// Enters the pinned UTS and network namespaces on a thread of its own to
/// set the hostname and bring loopback up.
fn set_up_on_this_thread(dir: &Path, kinds: &[Kind], hostname: &str) -> Result<(), NsError> {
    let enter = |k: Kind| -> Result<(), NsError> {
        let f = std::fs::File::open(dir.join(k.name())).map_err(|e| err(k.name(), e))?;
        nix::sched::setns(f, k.flag()).map_err(|e| err(k.name(), format!("setns: {e}")))
    };
    if kinds.contains(&Kind::Uts) && !hostname.is_empty() {
        enter(Kind::Uts)?;
        nix::unistd::sethostname(hostname).map_err(|e| err("uts", format!("hostname: {e}")))?;
    }
    if kinds.contains(&Kind::Net) {
        enter(Kind::Net)?;
        loopback_up().map_err(|e| err("net", format!("loopback up: {e}")))?;
    }
    Ok(())
}

/// Runs on a thread of its own, which dies with the namespaces it entered.
fn pin_on_this_thread(dir: &Path, kinds: &[Kind], hostname: &str) -> Result<(), NsError> {
    let flags = kinds.iter().fold(CloneFlags::empty(), |f, k| f | k.flag());
    unshare(flags).map_err(|e| err("namespaces", format!("unshare: {e}")))?;
    if kinds.contains(&Kind::Uts) && !hostname.is_empty() {
        nix::unistd::sethostname(hostname).map_err(|e| err("uts", format!("hostname: {e}")))?;
    }
    if kinds.contains(&Kind::Net) {
        loopback_up().map_err(|e| err("net", format!("loopback up: {e}")))?;
    }
    for k in kinds {
        bind("/proc/thread-self", dir, *k)?;
    }
    Ok(())
}

/// Pins namespace `k` of the task at `task` (a /proc directory) as
/// `dir/<k>`, a bind mount of its nsfs file.
fn bind(task: &str, dir: &Path, k: Kind) -> Result<(), NsError> {
    mount(
        Some(&PathBuf::from(format!("{task}/ns/{}", k.name()))),
        &dir.join(k.name()),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err(k.name(), format!("bind mount: {e}")))
}

/// `ip link set lo up` in this thread's (new) network namespace, where lo
/// is always interface 1.
fn loopback_up() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let r = handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| e.to_string());
        task.abort();
        r
    })
}

/// Unmounts and removes every pin in `dir`, then `dir`. Idempotent.
pub fn unpin(dir: &Path) {
    for k in [Kind::Net, Kind::Ipc, Kind::Uts, Kind::User] {
        let p = dir.join(k.name());
        let _ = umount2(&p, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&p);
    }
    let _ = std::fs::remove_dir(dir);
}
