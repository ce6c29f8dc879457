//! The pump: the monitor once its container runs (executed by
//! `berth-monitor run`). Its stdin is the container's stdout pipe (or the
//! terminal's master), its stdout the container's stderr pipe. It copies
//! both into the CRI log and to attached clients, serves the attach
//! socket, reaps the init, records the exit and has `berth-monitor`
//! delete the container.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_runtime::protocol::state::{ATTACH_SOCKET, DELETED, write_atomic};
use berth_runtime::protocol::{Channel, Exit, Invocation, Pump};
use berth_runtime::reap::{OomWatch, drain_signals, reap, record_exit, sigchld_fd};
use berth_runtime::{LogStream, now_ns};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use super::attach::Attach;

pub fn pump_mode(p: &Pump) -> Result<(), String> {
    let (c, tty, cgroup) = (&p.container, p.tty, p.cgroup.as_deref());
    let pid = Pid::from_raw(p.pid);
    let sigfd = sigchld_fd()?;
    let out_r = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("stdout pipe: {e}"))?;
    let err_r = if tty {
        None
    } else {
        Some(
            std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("stderr pipe: {e}"))?,
        )
    };
    // Where attached clients' stdin goes: the terminal, or the pipe.
    let (input, term) = if tty {
        let m = out_r.try_clone().map_err(|e| format!("terminal: {e}"))?;
        let t = out_r.try_clone().map_err(|e| format!("terminal: {e}"))?;
        (Some(File::from(m)), Some(File::from(t)))
    } else {
        let fd = p.stdin_fd.map(|fd| {
            #[allow(unsafe_code)]
            // SAFETY: the monitor before the exec left this descriptor
            // open for us at this number; nothing else owns it.
            unsafe {
                <File as std::os::fd::FromRawFd>::from_raw_fd(fd)
            }
        });
        (fd, None)
    };
    let mut attach = Attach::bind(&c.state, input, c.stdin_once, term)?;
    let logs = Logs::open(c.log.clone())?;
    // The init may have exited between exec and the mask: reap first, and
    // still drain what it wrote.
    let already = reap(pid);
    let mut oom = OomWatch::new(cgroup);
    // Set up: what start-up mapped is not needed again.
    super::trim::trim();
    let exit = pump(
        pid,
        out_r,
        err_r,
        &sigfd,
        logs,
        &mut attach,
        already,
        oom.as_mut(),
    )?;
    let _ = std::fs::remove_file(c.state.join(ATTACH_SOCKET));
    let oom_seen = oom.as_ref().is_some_and(|o| o.seen);
    record_exit(cgroup, &c.state, exit, oom_seen);
    // The container is gone: `berth-monitor`, which made it, deletes it,
    // with nothing of ours left open and no signal blocked.
    drop((attach, sigfd, oom));
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let delete = Invocation::Delete {
        container: c.clone(),
        pid: pid.as_raw(),
    };
    let e = std::os::unix::process::CommandExt::exec(
        &mut delete.command(format!("/proc/self/fd/{}", p.monitor_fd)),
    );
    // Not deleted, but the monitor's work is over all the same.
    let _ = write_atomic(&c.state, DELETED, b"");
    Err(format!("executing berth-monitor delete: {e}"))
}

/// The CRI log file, which `ReopenContainerLog` makes the monitor open
/// anew after the kubelet has renamed it.
struct Logs {
    path: PathBuf,
    file: File,
}

impl Logs {
    fn open(path: PathBuf) -> Result<Logs, String> {
        let file = append(&path).map_err(|e| format!("log {}: {e}", path.display()))?;
        Ok(Logs { path, file })
    }

    fn reopen(&mut self) -> Result<(), String> {
        self.file =
            append(&self.path).map_err(|e| format!("reopening {}: {e}", self.path.display()))?;
        Ok(())
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Copies the container's output into the CRI log (and to attached
/// clients) until the init exits; serves the attach socket; returns the
/// init's exit. Watches for OOM kills meanwhile (`oom`).
#[allow(clippy::too_many_arguments)]
fn pump(
    pid: Pid,
    out_r: OwnedFd,
    err_r: Option<OwnedFd>,
    sigfd: &SignalFd,
    mut log: Logs,
    attach: &mut Attach,
    mut exit: Option<Exit>,
    mut oom: Option<&mut OomWatch>,
) -> Result<Exit, String> {
    let mut streams = [
        (
            Some(File::from(out_r)),
            LogStream::new("stdout"),
            Channel::Stdout,
        ),
        (
            err_r.map(File::from),
            LogStream::new("stderr"),
            Channel::Stderr,
        ),
    ];
    // A quarter of a pipe's buffer a read: a busy pipe takes four reads,
    // and an idle pump keeps fewer pages.
    let mut buf = vec![0u8; 16 * 1024];
    let mut entries = Vec::new();
    loop {
        // After the init is gone, give the pipes a moment to drain: a
        // process that escaped into the background may still hold them.
        let timeout = if exit.is_some() {
            PollTimeout::from(200u16)
        } else {
            PollTimeout::NONE
        };
        let mut fds: Vec<PollFd> = streams
            .iter()
            .filter_map(|(f, _, _)| f.as_ref())
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let n_streams = fds.len();
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        fds.extend(attach.poll_fds());
        // Last, so the attach sockets keep their places after the streams.
        let oom_at = fds.len();
        if let Some(w) = oom.as_deref() {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        let n = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        };
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if ready.get(oom_at).copied().unwrap_or(false)
            && let Some(w) = oom.as_deref_mut()
        {
            w.check();
        }
        if n == 0 && exit.is_some() {
            break;
        }
        let mut i = 0;
        for (file, stream, channel) in streams.iter_mut() {
            let Some(f) = file else { continue };
            if ready[i] {
                match f.read(&mut buf) {
                    // EIO: a terminal whose last holder is gone.
                    Ok(0) | Err(_) => {
                        stream.finish(now_ns(), &mut entries);
                        *file = None;
                    }
                    Ok(k) => {
                        stream.feed(&buf[..k], now_ns(), &mut entries);
                        attach.broadcast(*channel, &buf[..k]);
                    }
                }
            }
            i += 1;
        }
        if !entries.is_empty() {
            let _ = log.file.write_all(&entries);
            entries.clear();
        }
        let requests = attach.service(&ready[n_streams + 1..oom_at]);
        for client in requests.reopen {
            let answer = match log.reopen() {
                Ok(()) => String::new(),
                Err(e) => e,
            };
            attach.ack(client, Channel::Reopen, answer.as_bytes());
        }
        if exit.is_none() {
            drain_signals(sigfd);
            exit = reap(pid);
        }
        if exit.is_some() && streams.iter().all(|(f, _, _)| f.is_none()) {
            break;
        }
    }
    for (_, stream, _) in streams.iter_mut() {
        stream.finish(now_ns(), &mut entries);
    }
    let _ = log.file.write_all(&entries);
    exit.ok_or_else(|| "the container's exit was not seen".to_string())
}
