//! Pod namespaces without a pause process: each namespace is created by a
//! short-lived thread that `unshare`s it and bind-mounts its nsfs file onto
//! a pin under `<state>/ns/<pod-id>/`; the bind mount keeps it alive after
//! the thread is gone, and containers join it through that path.
//!
//! Only network, IPC and UTS namespaces are pinned: `unshare` of those is
//! per-thread, so it is safe inside berthd's multi-threaded process.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Net,
    Ipc,
    Uts,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
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
/// hostname and brings the new network namespace's loopback up. On error
/// nothing stays pinned.
pub fn pin(dir: &Path, kinds: &[Kind], hostname: &str) -> Result<(), NsError> {
    std::fs::create_dir_all(dir).map_err(|e| err("pin directory", e))?;
    for k in kinds {
        std::fs::File::create(dir.join(k.name())).map_err(|e| err(k.name(), e))?;
    }
    let (d, ks, host) = (dir.to_path_buf(), kinds.to_vec(), hostname.to_string());
    let result = std::thread::spawn(move || pin_on_this_thread(&d, &ks, &host))
        .join()
        .unwrap_or_else(|_| Err(err("namespaces", "the pinning thread panicked")));
    if result.is_err() {
        unpin(dir);
    }
    result
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
        let source = PathBuf::from(format!("/proc/thread-self/ns/{}", k.name()));
        mount(
            Some(&source),
            &dir.join(k.name()),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err(k.name(), format!("bind mount: {e}")))?;
    }
    Ok(())
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
    for k in [Kind::Net, Kind::Ipc, Kind::Uts] {
        let p = dir.join(k.name());
        let _ = umount2(&p, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&p);
    }
    let _ = std::fs::remove_dir(dir);
}
