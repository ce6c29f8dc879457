//! berth-monitor: one per container, started by berthd and detached from
//! it (its own session), so the container outlives a berthd restart or
//! crash. It creates the container with youki's libcontainer, holds its
//! stdout/stderr and writes them to the CRI log, starts it when berthd
//! says so, reaps it and records its exit, then deletes it.
//!
//! Single-threaded on purpose: libcontainer clones and runs Rust code in
//! the child, which is only safe in a process with one thread.
//!
//! Usage: berth-monitor <id> <bundle> <state-dir> <libcontainer-root> <log-path>
//!
//! Also a pod's infra process, when the pod shares one PID namespace:
//! `berth-monitor pause <pin> <pid-file>` makes a new PID namespace whose
//! PID 1 is `berth-monitor pause-init` (which only reaps orphans until it
//! gets SIGTERM), pins it at `<pin>` and exits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_runtime::{
    CREATE_ERROR, EXIT, Exit, LogStream, PID, START_FIFO, STARTED, now_ns, write_atomic,
};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

struct Args {
    id: String,
    bundle: PathBuf,
    state: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("pause") => return report(pause(&a[2..])),
        Some("pause-init") => return report(pause_init()),
        Some("pump") => return report(pump_mode(&a[2..])),
        _ => {}
    }
    let [_, id, bundle, state, root, log] = a.as_slice() else {
        eprintln!("usage: berth-monitor <id> <bundle> <state-dir> <libcontainer-root> <log-path>");
        return ExitCode::from(2);
    };
    let args = Args {
        id: id.clone(),
        bundle: bundle.into(),
        state: state.into(),
        root: root.into(),
        log: log.into(),
    };
    // Our own session: a signal to berthd's process group never reaches us.
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-monitor {}: {e}", args.id);
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let built = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .validate_id()
        .and_then(|b| b.with_root_path(&a.root))
        .map(|b| {
            b.with_stdin(devnull)
                .with_stdout(out_w)
                .with_stderr(err_w)
                .as_init(&a.bundle)
                .with_systemd(false)
                .with_detach(true)
        })
        .and_then(|b| b.build());
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("creating the container: {e}");
            let _ = write_atomic(&a.state, CREATE_ERROR, msg.as_bytes());
            return Err(msg);
        }
    };
    let pid = container
        .pid()
        .map(|p| Pid::from_raw(p.as_raw()))
        .ok_or("libcontainer gave no init pid")?;

    // SIGCHLD through a signalfd from here on: the init exists already, so
    // it does not inherit the blocked mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| format!("sigmask: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    write_atomic(&a.state, PID, pid.as_raw().to_string().as_bytes())
        .map_err(|e| format!("pid file: {e}"))?;

    // CREATED: wait for berthd's word, or for the init to die first.
    let mut fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.state.join(START_FIFO))
        .map_err(|e| format!("start fifo: {e}"))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.log)
        .map_err(|e| format!("log {}: {e}", a.log.display()))?;
    let exit = loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut fds, PollTimeout::NONE).map_err(|e| format!("poll: {e}"))?;
        if let Some(status) = reap(pid) {
            break Some(status);
        }
        if fds[0].any().unwrap_or(false) {
            let mut b = [0u8; 1];
            let _ = fifo.read(&mut b);
            match b[0] {
                b's' => break None,
                b'k' => {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
                _ => {}
            }
        }
        drain_signals(&sigfd);
    };
    let exit = match exit {
        Some(status) => status,
        None => {
            if let Err(e) = container.start() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                let x = Exit {
                    code: 128,
                    finished_ns: now_ns(),
                    signal: None,
                    message: format!("starting the container: {e}"),
                    oom_killed: false,
                };
                record_exit(&a.state, &x);
                let _ = container.delete(true);
                return Err(x.message);
            }
            write_atomic(&a.state, STARTED, now_ns().to_string().as_bytes())
                .map_err(|e| format!("started file: {e}"))?;
            // Running: libcontainer's code and heap are not needed until
            // the end, so become a lean pump (the same pid, so the
            // container stays our child): its pipes become our stdin and
            // stdout. Only if exec fails do we go on here.
            drop(sigfd);
            drop(fifo);
            drop(log);
            let e = std::os::unix::process::CommandExt::exec(
                std::process::Command::new(
                    std::env::current_exe().map_err(|e| format!("current exe: {e}"))?,
                )
                .arg("pump")
                .args([
                    &a.id,
                    &path_str(&a.bundle),
                    &path_str(&a.state),
                    &path_str(&a.root),
                    &path_str(&a.log),
                ])
                .arg(pid.as_raw().to_string())
                .stdin(std::process::Stdio::from(out_r))
                .stdout(std::process::Stdio::from(err_r)),
            );
            return Err(format!("re-exec as the pump: {e}"));
        }
    };
    let mut exit = exit;
    // Read before delete removes the cgroup.
    exit.oom_killed = cgroups_path(&a.bundle).is_some_and(|p| berth_runtime::oom_kills(&p) > 0);
    record_exit(&a.state, &exit);
    // Kills anything left in the cgroup, removes it and libcontainer's state.
    if let Err(e) = container.delete(true) {
        eprintln!("berth-monitor {}: delete: {e}", a.id);
    }
    Ok(())
}

fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts a pod's infra process in a new PID namespace and pins that
/// namespace; returns once it is pinned (the infra process goes on alone).
fn pause(args: &[String]) -> Result<(), String> {
    let [pin, pid_file] = args else {
        return Err("usage: berth-monitor pause <pin> <pid-file>".into());
    };
    let _ = nix::unistd::setsid();
    // This process is single-threaded, so it may unshare its PID namespace:
    // its next child is PID 1 there.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("unshare pid: {e}"))?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = std::process::Command::new(me)
        .arg("pause-init")
        .current_dir("/")
        // Nothing of ours: berthd waits for our output to close.
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("infra process: {e}"))?;
    let pid = child.id();
    nix::mount::mount(
        Some(Path::new(&format!("/proc/{pid}/ns/pid"))),
        Path::new(pin),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pinning the pid namespace: {e}"))?;
    write_atomic(
        Path::new(pid_file).parent().unwrap_or(Path::new("/")),
        &Path::new(pid_file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pid.to_string().as_bytes(),
    )
    .map_err(|e| format!("pid file: {e}"))?;
    // The infra process is reparented when we exit; berthd reaps us.
    std::mem::forget(child);
    Ok(())
}

/// PID 1 of a pod's shared PID namespace: reaps whatever is orphaned to
/// it, and ends on SIGTERM or SIGINT.
fn pause_init() -> Result<(), String> {
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

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The monitor once its container runs (re-exec'd by `run`): stdin is the
/// container's stdout pipe, stdout its stderr pipe. Pumps them into the
/// log, reaps the init, records the exit and deletes the container.
fn pump_mode(args: &[String]) -> Result<(), String> {
    let [id, bundle, state, root, log, pid] = args else {
        return Err("usage: berth-monitor pump <id> <bundle> <state> <root> <log> <pid>".into());
    };
    let (bundle, state, root) = (Path::new(bundle), Path::new(state), Path::new(root));
    let pid = Pid::from_raw(pid.parse().map_err(|_| "bad pid")?);
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(|e| format!("sigmask: {e}"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let out_r = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("stdout pipe: {e}"))?;
    let err_r = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("stderr pipe: {e}"))?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("log {log}: {e}"))?;
    // The init may have exited between exec and the mask: reap first, and
    // still drain what it wrote.
    let already = reap(pid);
    let mut exit = pump(pid, out_r, err_r, &sigfd, &mut log, already)?;
    exit.oom_killed = cgroups_path(bundle).is_some_and(|p| berth_runtime::oom_kills(&p) > 0);
    record_exit(state, &exit);
    match libcontainer::container::Container::load(root.join(id)) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                eprintln!("berth-monitor {id}: delete: {e}");
            }
        }
        Err(e) => eprintln!("berth-monitor {id}: load for delete: {e}"),
    }
    Ok(())
}

/// Copies the container's output into the CRI log until the init exits;
/// returns its exit.
fn pump(
    pid: Pid,
    out_r: OwnedFd,
    err_r: OwnedFd,
    sigfd: &SignalFd,
    log: &mut File,
    mut exit: Option<Exit>,
) -> Result<Exit, String> {
    let mut streams = [
        (Some(File::from(out_r)), LogStream::new("stdout")),
        (Some(File::from(err_r)), LogStream::new("stderr")),
    ];
    let mut buf = vec![0u8; 64 * 1024];
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
            .filter_map(|(f, _)| f.as_ref())
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        let n = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        };
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if n == 0 && exit.is_some() {
            break;
        }
        let mut i = 0;
        for (file, stream) in streams.iter_mut() {
            let Some(f) = file else { continue };
            if ready[i] {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        stream.finish(now_ns(), &mut entries);
                        *file = None;
                    }
                    Ok(k) => stream.feed(&buf[..k], now_ns(), &mut entries),
                }
            }
            i += 1;
        }
        if !entries.is_empty() {
            let _ = log.write_all(&entries);
            entries.clear();
        }
        if exit.is_none() {
            drain_signals(sigfd);
            exit = reap(pid);
        }
        if exit.is_some() && streams.iter().all(|(f, _)| f.is_none()) {
            break;
        }
    }
    for (_, stream) in streams.iter_mut() {
        stream.finish(now_ns(), &mut entries);
    }
    let _ = log.write_all(&entries);
    exit.ok_or_else(|| "the container's exit was not seen".to_string())
}

/// Reaps every exited child; returns the init's exit when it is among them.
fn reap(init: Pid) -> Option<Exit> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == init => {
                found = Some(Exit {
                    code,
                    finished_ns: now_ns(),
                    signal: None,
                    message: String::new(),
                    oom_killed: false,
                });
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p == init => {
                found = Some(Exit {
                    code: 128 + sig as i32,
                    finished_ns: now_ns(),
                    signal: Some(sig as i32),
                    message: String::new(),
                    oom_killed: false,
                });
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(_) => {}
        }
    }
}

/// `linux.cgroupsPath` of the bundle's config.json.
fn cgroups_path(bundle: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    spec.pointer("/linux/cgroupsPath")?
        .as_str()
        .map(str::to_string)
}

fn drain_signals(sigfd: &SignalFd) {
    while let Ok(Some(_)) = sigfd.read_signal() {}
}

fn record_exit(state: &Path, exit: &Exit) {
    if let Ok(json) = serde_json::to_vec(exit) {
        let _ = write_atomic(state, EXIT, &json);
    }
}
