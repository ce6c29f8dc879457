//! `berth-monitor exec`: runs one more process in a running container
//! (libcontainer's tenant: the container's namespaces, cgroup, user,
//! capabilities, seccomp) for berthd's ExecSync and Exec, waits for it and
//! exits with its exit code.
//!
//! Invoked as [`berth_runtime::protocol::Invocation::Exec`] (`root`:
//! libcontainer's, or the external runtime's state root).
//!
//! File descriptors from berthd:
//! - 0, 1, 2: the process's stdin, stdout and stderr (with a terminal, 1
//!   carries the terminal's output and 2 is unused);
//! - [`CONTROL_FD`], read: `<cols> <rows>` lines resize the terminal;
//! - [`REPORT_FD`], written: one [`Report`] line, the pid once the process
//!   runs, or why it could not be started (exit code 255 then).
//!
//! SIGTERM kills the process (berthd's timeout) and ends the exec.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::aside::NotAside;
use berth_runtime::protocol::Resize;
use berth_runtime::protocol::exec::{CONTROL_FD, REPORT_FD, Report};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

pub fn exec_mode(
    id: &str,
    root: &Path,
    process: &Path,
    runtime: Option<&Path>,
    aside: Option<&Path>,
) -> Result<i32, String> {
    #[allow(unsafe_code)]
    // SAFETY: berthd hands these descriptors over; nothing else owns them.
    let (control, mut report) =
        unsafe { (File::from_raw_fd(CONTROL_FD), File::from_raw_fd(REPORT_FD)) };
    match run(id, root, process, runtime, aside, control) {
        Ok((pid, wait)) => {
            let _ = report.write_all(Report::Pid(pid.as_raw()).to_line().as_bytes());
            drop(report);
            wait()
        }
        Err(e) => {
            let _ = report.write_all(Report::Error(e).to_line().as_bytes());
            Ok(255)
        }
    }
}

type Wait = Box<dyn FnOnce() -> Result<i32, String>>;

fn run(
    id: &str,
    root: &Path,
    process_file: &Path,
    runtime: Option<&Path>,
    aside: Option<&Path>,
    control: File,
) -> Result<(Pid, Wait), String> {
    let process = process_file;
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(process).map_err(|e| format!("{}: {e}", process.display()))?,
    )
    .map_err(|e| format!("{}: {e}", process.display()))?;
    let tty = spec["terminal"].as_bool().unwrap_or(false);

    // SIGCHLD and SIGTERM through a signalfd (blocked before the fork;
    // the process unblocks them before its exec: see `ExecExecutor`).
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| format!("sigmask: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    let dup = |fd: i32| -> Result<OwnedFd, String> {
        #[allow(unsafe_code)]
        // SAFETY: 0, 1 and 2 are open for the life of this process.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        b.try_clone_to_owned().map_err(|e| format!("fd {fd}: {e}"))
    };
    let console = if tty { Some(console_socket()?) } else { None };
    if let Some(bin) = runtime {
        // The external runtime starts it detached; we reap it.
        super::oci::subreaper()?;
        // Next to the process file, in the container's own directory (not
        // a guessable name in /tmp that another user could make first),
        // and root's alone.
        let work = process.with_extension("work");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&work)
                .map_err(|e| format!("{}: {e}", work.display()))?;
        }
        let log = work.join("log");
        let o = super::oci::Oci {
            bin,
            root,
            log: &log,
        };
        let started = o.exec(
            id,
            process,
            &work.join("pid"),
            console.as_ref().map(|c| c.1.as_path()),
        );
        let _ = std::fs::remove_dir_all(&work);
        let pid = match started {
            Ok(p) => p,
            Err(e) => {
                if let Some((dir, _, _)) = &console {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(e);
            }
        };
        return finish(pid, sigfd, console, control);
    }
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| e.to_string())?
        .with_console_socket(console.as_ref().map(|c| c.1.clone()));
    if !tty {
        builder = builder
            .with_stdin(dup(0)?)
            .with_stdout(dup(1)?)
            .with_stderr(dup(2)?);
    }
    let container = libcontainer::container::Container::load(root.join(id))
        .map_err(|e| format!("container {id}: {e}"))?;
    let joined = join_user_namespace(&container, id)?;
    // libcontainer's tenant also leaves the container's seccomp filter
    // out: it is applied by our executor, right before the exec.
    let (process, seccomp) = seccomp_for_exec(&container, process)?;
    builder = builder.with_executor(ExecExecutor { seccomp });
    // Made with the other pods' mounts set aside, as the container was
    // (see `aside`): libcgroups reads the mount table whole to join the
    // container's cgroup. The process itself enters the container's mount
    // namespace, so this one only has to last the build. Not set aside,
    // it is made in the node's table as it is, and why goes to the
    // container's monitor log (this process's stderr is the exec's).
    // Having joined the container's user namespace, this process could
    // not go back to the node's mount namespace (owned by the node's
    // user namespace): not set aside.
    let aside = match aside
        .filter(|_| !joined)
        .map(|t| set_aside_for(t, &container))
    {
        Some(Ok(a)) => Some(a),
        None => None,
        Some(Err(NotAside::Skipped(e))) => {
            note(
                process_file,
                &format!("berth-monitor {id} exec: mounts not set aside: {e}"),
            );
            None
        }
        Some(Err(NotAside::Stuck(e))) => {
            return Err(format!("setting the node's mounts aside: {e}"));
        }
    };
    let built = builder
        .as_tenant()
        .with_process(Some(process.as_path()))
        .with_detach(tty)
        .build();
    // Back before waiting, so that an exec that lasts (a shell) keeps no
    // copy of the node's mounts alive.
    let back = aside.map(super::aside::Aside::back);
    if process != process_file {
        let _ = std::fs::remove_file(&process);
    }
    let pid = match built {
        Ok(p) => Pid::from_raw(p.as_raw()),
        Err(e) => {
            if let Some((dir, _, _)) = &console {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e.to_string());
        }
    };
    if let Some(Err(e)) = back {
        // The process runs; this monitor would hold the namespace's
        // copies of the node's mounts for as long as it does.
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        return Err(e);
    }
    finish(pid, sigfd, console, control)
}

/// A line in the container's monitor log, beside the process file.
fn note(process_file: &Path, line: &str) {
    let log = process_file.with_file_name("monitor.log");
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(f, "{line}");
    }
}

/// The set-aside for an exec in `container`, keeping what its bundle's
/// spec names (see [`super::aside::set_aside`]).
fn set_aside_for(
    tree: &Path,
    container: &libcontainer::container::Container,
) -> Result<super::aside::Aside, NotAside> {
    let bundle = container.bundle();
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    super::aside::set_aside(tree, bundle, spec.as_ref())
}

/// The container's seccomp filter, for an exec'd process: libcontainer's
/// tenant drops it from the spec, so [`SeccompExecutor`] installs it just
/// before the exec. Without no_new_privs that needs CAP_SYS_ADMIN, which
/// the process may not keep: it is kept in the permitted set only (not
/// effective, not bounding) of a copy of `process`, and dropped again
/// before the exec. Returns the process file to use and the executor.
fn seccomp_for_exec(
    c: &libcontainer::container::Container,
    process: &Path,
) -> Result<(std::path::PathBuf, Option<SeccompExecutor>), String> {
    let config = c.bundle().join("config.json");
    let spec = libcontainer::oci_spec::runtime::Spec::load(&config)
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok((process.to_path_buf(), None));
    };
    let mut p: serde_json::Value = serde_json::from_slice(
        &std::fs::read(process).map_err(|e| format!("{}: {e}", process.display()))?,
    )
    .map_err(|e| format!("{}: {e}", process.display()))?;
    const ADMIN: &str = "CAP_SYS_ADMIN";
    let has = |set: &str| {
        p.pointer(&format!("/capabilities/{set}"))
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|c| c == ADMIN))
    };
    let keep_admin = !has("permitted");
    let effective_admin = has("effective");
    if keep_admin {
        let caps = p
            .as_object_mut()
            .ok_or("process.json is not an object")?
            .entry("capabilities")
            .or_insert_with(|| serde_json::json!({}));
        let permitted = caps
            .as_object_mut()
            .ok_or("capabilities is not an object")?
            .entry("permitted")
            .or_insert_with(|| serde_json::json!([]));
        permitted
            .as_array_mut()
            .ok_or("capabilities.permitted is not a list")?
            .push(ADMIN.into());
    }
    let copy = process.with_extension("seccomp.json");
    std::fs::write(&copy, p.to_string()).map_err(|e| format!("{}: {e}", copy.display()))?;
    Ok((
        copy,
        Some(SeccompExecutor {
            seccomp,
            raise_admin: !effective_admin,
            drop_admin: keep_admin,
        }),
    ))
}

/// Runs the workload as libcontainer's default executor does, after
/// installing the container's seccomp filter.
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: libcontainer::oci_spec::runtime::LinuxSeccomp,
    /// CAP_SYS_ADMIN is permitted but not effective: raise it to install
    /// the filter, then lower it again.
    raise_admin: bool,
    /// CAP_SYS_ADMIN was added to the permitted set for this only: drop it.
    drop_admin: bool,
}

impl libcontainer::workload::Executor for SeccompExecutor {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use caps::{CapSet, Capability};
        use libcontainer::workload::ExecutorError;
        let fail =
            |what: &str, e: &dyn std::fmt::Display| ExecutorError::Other(format!("{what}: {e}"));
        if self.raise_admin {
            caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
                .map_err(|e| fail("raising CAP_SYS_ADMIN for seccomp", &e))?;
        }
        let notify = libcontainer::seccomp::initialize_seccomp(&self.seccomp)
            .map_err(|e| fail("installing the container's seccomp filter", &e))?;
        if notify.is_some() {
            return Err(ExecutorError::Other(
                "seccomp notification (SCMP_ACT_NOTIFY) is not supported for exec".into(),
            ));
        }
        if self.raise_admin {
            caps::drop(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
                .map_err(|e| fail("lowering CAP_SYS_ADMIN", &e))?;
        }
        if self.drop_admin {
            caps::drop(None, CapSet::Permitted, Capability::CAP_SYS_ADMIN)
                .map_err(|e| fail("dropping CAP_SYS_ADMIN", &e))?;
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// What runs in the exec'd process right before its exec: the signal
/// mask the monitor set for itself (SIGCHLD, SIGTERM blocked, for its
/// signalfd) is cleared, since libcontainer keeps it and an exec keeps it
/// too (the process would never see a SIGTERM); then the container's
/// seccomp filter, if it has one.
#[derive(Clone)]
struct ExecExecutor {
    seccomp: Option<SeccompExecutor>,
}

impl libcontainer::workload::Executor for ExecExecutor {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(|e| {
            libcontainer::workload::ExecutorError::Other(format!("clearing the signal mask: {e}"))
        })?;
        match &self.seccomp {
            Some(s) => s.exec(spec),
            None => libcontainer::workload::default::DefaultExecutor {}.exec(spec),
        }
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// libcontainer's tenant joins every namespace of the container but its
/// user namespace, so a container in its pod's user namespace would get
/// the node's root in its other namespaces. This joins that one first
/// (we keep what we need as the node's root: our descriptors and files).
/// True if it joined one.
fn join_user_namespace(c: &libcontainer::container::Container, id: &str) -> Result<bool, String> {
    let pid = c
        .pid()
        .ok_or_else(|| format!("container {id} is not running"))?;
    let theirs = format!("/proc/{pid}/ns/user");
    let ino = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let (ours, target) = (ino("/proc/self/ns/user"), ino(&theirs));
    match (ours, target) {
        (Ok(a), Ok(b)) if a == b => Ok(false),
        (Ok(_), Ok(_)) => {
            let ns = File::open(&theirs).map_err(|e| format!("{theirs}: {e}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
                .map_err(|e| format!("joining the container's user namespace: {e}"))?;
            Ok(true)
        }
        (Err(e), _) | (_, Err(e)) => Err(format!("user namespace of {id}: {e}")),
    }
}

type Console = (
    std::path::PathBuf,
    std::path::PathBuf,
    std::os::unix::net::UnixListener,
);

/// With a terminal, takes its master end from the console socket; then
/// hands back the waiting.
fn finish(
    pid: Pid,
    sigfd: SignalFd,
    console: Option<Console>,
    control: File,
) -> Result<(Pid, Wait), String> {
    let master = match console {
        Some((dir, _, listener)) => {
            let got = receive_master(&listener);
            let _ = std::fs::remove_dir_all(&dir);
            match got {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let wait: Wait = Box::new(move || wait(pid, sigfd, master, control));
    Ok((pid, wait))
}

/// A console socket for libcontainer, in a private directory with a path
/// short enough for a unix socket: (directory, socket path, listener).
pub fn console_socket() -> Result<
    (
        std::path::PathBuf,
        std::path::PathBuf,
        std::os::unix::net::UnixListener,
    ),
    String,
> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("berth-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| format!("console socket: {e}"))?;
    Ok((dir, path, listener))
}

/// The terminal's master end, sent by the container over the console socket.
pub fn receive_master(listener: &std::os::unix::net::UnixListener) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (conn, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(|e| format!("receiving the terminal: {e}"))?;
    for c in msg
        .cmsgs()
        .map_err(|e| format!("receiving the terminal: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            #[allow(unsafe_code)]
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err("the container sent no terminal".into())
}

/// Waits for the process; with a terminal, pumps stdin into it and its
/// output to stdout, and applies resizes. Returns its exit code.
fn wait(pid: Pid, sigfd: SignalFd, master: Option<OwnedFd>, control: File) -> Result<i32, String> {
    let mut master = master.map(File::from);
    let mut stdin = master
        .as_ref()
        .and_then(|_| std::io::stdin().as_fd().try_clone_to_owned().ok())
        .map(File::from);
    let mut control = master.as_ref().map(|_| std::io::BufReader::new(control));
    let mut stdout = std::io::stdout();
    let mut code = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let mut slots = Vec::new();
        if let Some(m) = &master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            slots.push(0);
        }
        if let Some(s) = &stdin {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            slots.push(1);
        }
        if let Some(c) = &control {
            fds.push(PollFd::new(c.get_ref().as_fd(), PollFlags::POLLIN));
            slots.push(2);
        }
        // Once the process is gone, only what its terminal still holds.
        let timeout = if code.is_some() {
            PollTimeout::from(100u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) if code.is_some() => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = sigfd.read_signal() {
                if info.ssi_signo == Signal::SIGTERM as u32 {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
            }
            if code.is_none() {
                code = berth_runtime::reap::reap(pid).map(|e| e.code);
                if code.is_some() && master.is_none() {
                    break;
                }
            }
        }
        for (slot, ready) in slots.iter().zip(&ready[1..]) {
            if !ready {
                continue;
            }
            match slot {
                0 => {
                    let m = master.as_mut().ok_or("no terminal")?;
                    match m.read(&mut buf) {
                        Ok(n) if n > 0 => {
                            let _ = stdout.write_all(&buf[..n]);
                            let _ = stdout.flush();
                        }
                        // EIO: the last holder of the terminal is gone.
                        _ => master = None,
                    }
                }
                1 => {
                    let s = stdin.as_mut().ok_or("no stdin")?;
                    match s.read(&mut buf) {
                        Ok(n) if n > 0 => {
                            if let Some(m) = master.as_mut() {
                                let _ = m.write_all(&buf[..n]);
                            }
                        }
                        // stdin closed: the terminal sees end of input.
                        _ => {
                            if let Some(m) = master.as_mut() {
                                let _ = m.write_all(&[4]);
                            }
                            stdin = None;
                        }
                    }
                }
                _ => {
                    let mut line = String::new();
                    let c = control.as_mut().ok_or("no control")?;
                    match c.read_line(&mut line) {
                        Ok(n) if n > 0 => {
                            if let (Some(m), Some(r)) = (&master, Resize::parse(line.as_bytes())) {
                                berth_runtime::resize_terminal(m, r);
                            }
                        }
                        _ => control = None,
                    }
                }
            }
        }
        // Done once it has exited and its terminal (if any) is drained;
        // until then SIGCHLD and SIGTERM still wake the poll.
        if master.is_none() && code.is_some() {
            break;
        }
    }
    code.ok_or_else(|| "the process's exit was not seen".to_string())
}
