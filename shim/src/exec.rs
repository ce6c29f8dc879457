//! Running another process in a running container, for ExecSync and the
//! streaming server's exec: `berth-monitor exec` (libcontainer's tenant)
//! with the process's stdio as pipes, a control pipe for terminal resizes
//! and a report pipe saying whether it started (their numbers and lines
//! are [`berth_runtime::protocol::exec`]'s).

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use berth_runtime::protocol::Invocation;
use berth_runtime::protocol::exec::{CONTROL_FD, REPORT_FD, Report};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use crate::container::{ContainerRecord, Containers, Observed};

/// An exec'd process, running.
pub struct Exec {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    /// `<cols> <rows>\n` lines resize its terminal.
    pub control: Option<tokio::net::unix::pipe::Sender>,
    process_file: std::path::PathBuf,
}

impl Drop for Exec {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.process_file);
    }
}

impl Exec {
    /// Kills the process (the monitor kills it on SIGTERM) and waits.
    pub async fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait().await;
    }

    /// Waits for the process; its exit code.
    pub async fn wait(&mut self) -> Result<i32, String> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| format!("waiting for the exec: {e}"))?;
        Ok(status.code().unwrap_or(255))
    }
}

/// Starts `cmd` in the container: its process settings (user, env, cwd,
/// capabilities, seccomp, ...) with `cmd` as its arguments.
pub async fn spawn(
    cs: &Containers,
    rec: &ContainerRecord,
    cmd: &[String],
    tty: bool,
    stdin: bool,
) -> Result<Exec, String> {
    if cmd.is_empty() {
        return Err("no command".into());
    }
    if !matches!(cs.observe(&rec.id), Observed::Running { .. }) {
        return Err(format!("container {} is not running", rec.id));
    }
    let dir = cs.state_dir(&rec.id);
    let spec: crate::spec::Spec = serde_json::from_slice(
        &std::fs::read(dir.join("config.json")).map_err(|e| format!("config.json: {e}"))?,
    )
    .map_err(|e| format!("config.json: {e}"))?;
    let mut process = spec.process().clone().ok_or("config.json: no process")?;
    process.set_args(Some(cmd.to_vec()));
    process.set_terminal(Some(tty));
    process.set_console_size(None);
    let process = serde_json::to_string(&process).map_err(|e| format!("exec spec: {e}"))?;
    let n = crate::ids::random_id().map_err(|e| e.to_string())?;
    let process_file = dir.join(format!("exec-{}.json", &n[..16]));
    std::fs::write(&process_file, process).map_err(|e| format!("exec spec: {e}"))?;

    let (ctl_r, ctl_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let inv = Invocation::Exec {
        id: rec.id.clone(),
        root: cs.runtime_root_of(rec),
        process: process_file.clone(),
        runtime: rec.runtime.clone(),
        // The other pods' mounts set aside while the process is made, as
        // for the container (see tree.rs): libcgroups reads the mount
        // table whole.
        aside: cs.aside.clone(),
    };
    let mut command = tokio::process::Command::from(crate::monitor::command(&inv));
    command
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let (ctl, rep) = (ctl_r.as_raw_fd(), rep_w.as_raw_fd());
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec only dup2 and fcntl run, both
    // async-signal-safe; the descriptors stay open in the parent until
    // spawn returns.
    unsafe {
        command.pre_exec(move || {
            for (from, to) in [(ctl, CONTROL_FD), (rep, REPORT_FD)] {
                if from == to {
                    nix::libc::fcntl(to, nix::libc::F_SETFD, 0);
                } else if nix::libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cs.monitor().display()))?;
    drop((ctl_r, rep_w));
    let report = tokio::net::unix::pipe::Receiver::from_owned_fd(rep_r)
        .map_err(|e| format!("report pipe: {e}"))?;
    let mut line = String::new();
    let _ = tokio::io::BufReader::new(report).read_line(&mut line).await;
    let mut exec = Exec {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        control: tokio::net::unix::pipe::Sender::from_owned_fd(ctl_w).ok(),
        child,
        process_file,
    };
    match Report::parse(&line) {
        Some(Report::Pid(_)) => Ok(exec),
        report => {
            let _ = exec.child.wait().await;
            Err(match report {
                Some(Report::Error(m)) => m,
                _ => "the exec ended before it started".to_string(),
            })
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}
