//! A pod's infra process, when the pod shares one PID namespace:
//! `pause` makes a new PID namespace whose PID 1 is `pause-init` (which
//! only reaps orphans until it gets SIGTERM), writes that PID (berthd pins
//! the namespace) and exits.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use berth_runtime::protocol::Invocation;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Starts a pod's infra process in a new PID namespace (owned by the
/// pod's user namespace `userns`, if given) and writes its PID; berthd
/// pins the namespace. Returns once the PID is written (the infra process
/// goes on alone).
pub fn pause(pid_file: &Path, userns: Option<&Path>) -> Result<(), String> {
    let _ = nix::unistd::setsid();
    // Opened first: once in the pod's user namespace we may not create it.
    let mut out = File::create(pid_file).map_err(|e| format!("{}: {e}", pid_file.display()))?;
    if let Some(userns) = userns {
        let ns = File::open(userns).map_err(|e| format!("{}: {e}", userns.display()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the pod's user namespace: {e}"))?;
    }
    // This process is single-threaded, so it may unshare its PID namespace:
    // its next child is PID 1 there.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("unshare pid: {e}"))?;
    // Its pid file is unused: it names the pod's state in `ps` (and to
    // berth's tests, which look for leftover processes by it).
    let child = super::myself(&Invocation::PauseInit {
        pid_file: pid_file.to_path_buf(),
    })
    .current_dir("/")
    // Nothing of ours: berthd waits for our output to close.
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .map_err(|e| format!("infra process: {e}"))?;
    out.write_all(child.id().to_string().as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("pid file: {e}"))?;
    // The infra process is reparented when we exit; berthd reaps us.
    std::mem::forget(child);
    Ok(())
}

/// PID 1 of a pod's shared PID namespace: reaps whatever is orphaned to
/// it, and ends on SIGTERM or SIGINT.
pub fn pause_init() -> Result<(), String> {
    // PID 1 of the pod's containers runs berth-monitor's own binary: not
    // dumpable, so they cannot reach it through /proc/1/exe (and write to
    // berth's binary once nothing runs it: the CVE-2019-5736 class).
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("dumpable: {e}"))?;
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| e.to_string())?;
    let sigfd = SignalFd::new(&mask).map_err(|e| e.to_string())?;
    loop {
        match sigfd.read_signal() {
            Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => {
                while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if st == WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}
