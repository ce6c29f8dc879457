//! Reaping the container's init and recording how it ended (the state
//! dir's `exit` file): what `berth-monitor` and `berth-pump` share.
//! `cgroups_path` is the container's `linux.cgroupsPath`.

use std::path::Path;

use crate::now_ns;
use crate::protocol::state::Exit;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// SIGCHLD blocked and delivered through a (non-blocking) signalfd from
/// here on. Called once the init exists, so it does not inherit the mask.
pub fn sigchld_fd() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| format!("sigmask: {e}"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))
}

pub fn drain_signals(sigfd: &SignalFd) {
    while let Ok(Some(_)) = sigfd.read_signal() {}
}

/// Reaps every exited child; returns the init's exit when it is among them.
pub fn reap(init: Pid) -> Option<Exit> {
    let mut found = None;
    loop {
        let (code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == init => (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == init => {
                (128 + sig as i32, Some(sig as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(_) => continue,
        };
        found = Some(Exit {
            code,
            finished_ns: now_ns(),
            signal,
            message: String::new(),
            oom_killed: false,
        });
    }
}

/// Writes the exit file, noting whether the OOM killer struck the
/// container's cgroup: seen as it happened (`oom_seen`), or read now
/// (before the container's delete removes the cgroup).
pub fn record_exit(cgroups_path: Option<&str>, state: &Path, mut exit: Exit, oom_seen: bool) {
    let own = cgroups_path.and_then(crate::read_oom_kills);
    // The cgroup already gone (systemd removes an empty scope at once, even
    // before the inotify watch was set when the kill came early): killed by
    // SIGKILL while the OOM kills in its parent (the pod's) rose since the
    // container was created counts as the OOM killer's.
    let parent_saw = || {
        let base: Option<u64> = std::fs::read_to_string(state.join(OOM_BASE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let now = cgroups_path.and_then(crate::parent_oom_kills);
        matches!((base, now), (Some(b), Some(n)) if n > b)
    };
    exit.oom_killed = oom_seen
        || own.is_some_and(|n| n > 0)
        || (own.is_none() && exit.signal == Some(Signal::SIGKILL as i32) && parent_saw());
    write_exit(state, &exit);
}

/// The parent cgroup's OOM kill count when the container was created.
pub const OOM_BASE: &str = "oom-base";

/// Records [`OOM_BASE`] (v2; nothing on v1, whose cgroup stays until the
/// container's delete).
pub fn record_oom_base(cgroups_path: Option<&str>, state: &Path) {
    if let Some(n) = cgroups_path.and_then(crate::parent_oom_kills) {
        let _ = std::fs::write(state.join(OOM_BASE), n.to_string());
    }
}

/// Watches a v2 cgroup's `memory.events` with inotify, so that an OOM kill
/// is seen when it happens. Under the systemd driver, systemd stops a
/// scope and removes its cgroup as soon as its last process is gone,
/// often before the monitor has reaped the init and could read the file
/// (containerd's shim and CRI-O's conmon watch it the same way).
pub struct OomWatch {
    inotify: Inotify,
    cgroups_path: String,
    pub seen: bool,
}

impl OomWatch {
    /// A watch on the container's `memory.events`; None on v1 (whose
    /// cgroup stays until the delete) or when the file is not there.
    pub fn new(cgroups_path: Option<&str>) -> Option<OomWatch> {
        let cgroups_path = cgroups_path?.to_string();
        let file = Path::new("/sys/fs/cgroup")
            .join(crate::cgroup_rel(&cgroups_path)?)
            .join("memory.events");
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        inotify.add_watch(&file, AddWatchFlags::IN_MODIFY).ok()?;
        let mut w = OomWatch {
            inotify,
            cgroups_path,
            seen: false,
        };
        w.check();
        Some(w)
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.inotify.as_fd()
    }

    /// Reads the events that woke us and the OOM kill count.
    pub fn check(&mut self) {
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
        }
        if crate::oom_kills(&self.cgroups_path) > 0 {
            self.seen = true;
        }
    }
}

/// Writes the exit file as it is.
pub fn write_exit(state: &Path, exit: &Exit) {
    let _ = exit.write(state);
}
