//! Pod namespaces without a pause process: each namespace is created by a
//! short-lived thread that `unshare`s it and bind-mounts its nsfs file onto
//! a pin under `<state>/ns/<pod-id>/`; the bind mount keeps it alive after
//! the thread is gone, and containers join it through that path.
//!
//! Only network, IPC and UTS namespaces are pinned: `unshare` of those is
//! per-thread, so it is safe inside berthd's multi-threaded process.
//!
//! A pod with its own user namespace is the exception: a multi-threaded
//! process may not make one, and the pod's other namespaces must be made
//! inside it to belong to it. `berth-monitor userns` makes them all at
//! once; berthd writes the ID maps, pins them from its /proc entry, then
//! enters them (as their owner's parent it may) to set them up.

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
    std::fs::create_dir_all(dir).map_err(|e| err("pin directory", e))?;
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

/// Has `berth-monitor userns` make a user namespace with `kinds` inside,
/// writes its ID maps and pins them all.
fn pin_in_userns(dir: &Path, kinds: &[Kind], maps: &super::IdMaps) -> Result<(), NsError> {
    use std::io::BufRead;
    let mut child = crate::container::monitor_command()
        .arg("userns")
        .args(kinds.iter().map(|k| k.name()))
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err("user namespace", e))?;
    let pid = child.id();
    let result = (|| {
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| err("user namespace", e))?;
        if line.trim() != "ready" {
            let mut msg = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut msg);
            }
            return Err(err("user namespace", msg.trim()));
        }
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
    })();
    drop(child.stdin.take());
    let _ = child.wait();
    result
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
