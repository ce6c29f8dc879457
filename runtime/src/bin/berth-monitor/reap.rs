//! Reaping the container's init and recording how it ended (the state
//! dir's `exit` file).

use std::path::Path;

use berth_runtime::now_ns;
use berth_runtime::protocol::state::Exit;
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
/// container's cgroup (read before the container's delete removes it).
pub fn record_exit(bundle: &Path, state: &Path, mut exit: Exit) {
    exit.oom_killed =
        super::bundle::cgroups_path(bundle).is_some_and(|p| berth_runtime::oom_kills(&p) > 0);
    write_exit(state, &exit);
}

/// Writes the exit file as it is.
pub fn write_exit(state: &Path, exit: &Exit) {
    let _ = exit.write(state);
}
