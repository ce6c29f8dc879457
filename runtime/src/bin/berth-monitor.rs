//! berth-monitor: one per container, started by berthd and detached from
//! it (its own session), so the container outlives a berthd restart or
//! crash. It creates the container with youki's libcontainer, holds its
//! stdout/stderr and writes them to the CRI log, starts it when berthd
//! says so, reaps it and records its exit, then deletes it.
//!
//! Single-threaded on purpose: libcontainer clones and runs Rust code in
//! the child, which is only safe in a process with one thread.
//!
//! Usage: berth-monitor <id> <bundle> <state-dir> <libcontainer-root> <log-path> [stdin[,once]]
//!
//! `stdin`: the container gets a stdin pipe, written through the attach
//! socket (`once`: closed after the first attach session that used it).
//! A container whose spec asks for a terminal gets one (libcontainer's
//! console socket); its output is logged as stdout.
//!
//! Also a pod's infra process, when the pod shares one PID namespace:
//! `berth-monitor pause <pid-file> [<userns>]` makes a new PID namespace
//! whose PID 1 is `berth-monitor pause-init` (which only reaps orphans
//! until it gets SIGTERM), writes that PID (berthd pins the namespace) and
//! exits.

#[path = "berth-monitor/attach.rs"]
mod attach;
#[path = "berth-monitor/exec.rs"]
mod exec;
#[path = "berth-monitor/oci.rs"]
mod oci;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_runtime::{
    CREATE_ERROR, DELETED, EXIT, Exit, LogStream, PID, START_FIFO, STARTED, now_ns, write_atomic,
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
    stdin: bool,
    once: bool,
    /// An external OCI runtime (runc's command line) instead of libcontainer.
    runtime: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("pause") => return report(pause(&a[2..])),
        Some("pause-init") => return report(pause_init()),
        Some("pump") => return report(pump_mode(&a[2..])),
        Some("exec") => {
            return match exec::exec_mode(&a[2..]) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("berth-monitor exec: {e}");
                    ExitCode::from(255)
                }
            };
        }
        _ => {}
    }
    let (id, bundle, state, root, log, opts) = match a.as_slice() {
        [_, id, bundle, state, root, log] => (id, bundle, state, root, log, ""),
        [_, id, bundle, state, root, log, opts] => (id, bundle, state, root, log, opts.as_str()),
        _ => {
            eprintln!(
                "usage: berth-monitor <id> <bundle> <state-dir> <libcontainer-root> <log-path> [stdin[,once]]"
            );
            return ExitCode::from(2);
        }
    };
    let args = Args {
        id: id.clone(),
        bundle: bundle.into(),
        state: state.into(),
        root: root.into(),
        log: log.into(),
        stdin: opts.split(',').any(|o| o == "stdin"),
        once: opts.split(',').any(|o| o == "once"),
        runtime: opts
            .split(',')
            .find_map(|o| o.strip_prefix("runtime="))
            .map(PathBuf::from),
    };
    // libcontainer says why it failed only through tracing: its errors
    // go to our stderr, the container's monitor.log.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::ERROR)
        .with_ansi(false)
        .try_init();
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
    known_syscalls_only(&a.bundle.join("config.json"))?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let tty = std::fs::read(a.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|s| s.pointer("/process/terminal").and_then(|t| t.as_bool()))
        .unwrap_or(false);
    // stdin: a pipe we keep the writing end of, or nothing.
    let (stdin_r, stdin_w): (OwnedFd, Option<OwnedFd>) = if a.stdin && !tty {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        (r, Some(w))
    } else {
        let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        (devnull.into(), None)
    };
    // A terminal: libcontainer sends its master end over this socket.
    let console = if tty {
        Some(exec::console_socket()?)
    } else {
        None
    };
    let (oci_root, oci_log) = (a.state.join("oci"), a.state.join("oci.log"));
    let oci = a.runtime.as_deref().map(|bin| oci::Oci {
        bin,
        root: &oci_root,
        log: &oci_log,
    });
    let built: Result<Engine, String> = match &oci {
        None => ContainerBuilder::new(a.id.clone(), SyscallType::default())
            .validate_id()
            .and_then(|b| b.with_root_path(&a.root))
            .map(|b| {
                let b = b.with_console_socket(console.as_ref().map(|c| c.1.clone()));
                let b = if tty {
                    b
                } else {
                    b.with_stdin(stdin_r).with_stdout(out_w).with_stderr(err_w)
                };
                b.as_init(&a.bundle).with_systemd(false).with_detach(true)
            })
            .and_then(|b| b.build())
            .map(|c| Engine::Lib(Box::new(c)))
            .map_err(|e| e.to_string()),
        Some(o) => oci::subreaper().and_then(|()| {
            let stdio = (!tty).then_some((stdin_r, out_w, err_w));
            o.create(
                &a.id,
                &a.bundle,
                &a.state.join("oci.pid"),
                console.as_ref().map(|c| c.1.as_path()),
                stdio,
            )
            .map(Engine::Oci)
        }),
    };
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("creating the container: {e}");
            let _ = write_atomic(&a.state, CREATE_ERROR, msg.as_bytes());
            return Err(msg);
        }
    };
    let master = match &console {
        Some((dir, _, l)) => {
            let m = exec::receive_master(l);
            let _ = std::fs::remove_dir_all(dir);
            match m {
                Ok(m) => Some(m),
                Err(e) => {
                    let msg = format!("creating the container's terminal: {e}");
                    let _ = write_atomic(&a.state, CREATE_ERROR, msg.as_bytes());
                    container.delete(oci.as_ref(), &a.id, &a.state);
                    return Err(msg);
                }
            }
        }
        None => None,
    };
    let pid = container.pid().ok_or("the runtime gave no init pid")?;

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
            if let Err(e) = container.start(oci.as_ref(), &a.id) {
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
                container.delete(oci.as_ref(), &a.id, &a.state);
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
            // The stdin pipe's writing end survives the exec at its number.
            let input = match &stdin_w {
                Some(w) => {
                    nix::fcntl::fcntl(
                        w,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )
                    .map_err(|e| format!("stdin pipe: {e}"))?;
                    w.as_raw_fd().to_string()
                }
                None => "-".to_string(),
            };
            let mut flags = Vec::new();
            if tty {
                flags.push("tty".to_string());
            }
            if a.once {
                flags.push("once".to_string());
            }
            if let Some(rt) = &a.runtime {
                flags.push(format!("runtime={}", rt.display()));
            }
            let (pump_in, pump_out) = match master {
                // With a terminal, its master is the one stream.
                Some(m) => (std::process::Stdio::from(m), std::process::Stdio::null()),
                None => (
                    std::process::Stdio::from(out_r),
                    std::process::Stdio::from(err_r),
                ),
            };
            let e = std::os::unix::process::CommandExt::exec(
                myself()
                    .arg("pump")
                    .args([
                        &a.id,
                        &path_str(&a.bundle),
                        &path_str(&a.state),
                        &path_str(&a.root),
                        &path_str(&a.log),
                    ])
                    .arg(pid.as_raw().to_string())
                    .arg(input)
                    .arg(if flags.is_empty() {
                        "-".to_string()
                    } else {
                        flags.join(",")
                    })
                    .stdin(pump_in)
                    .stdout(pump_out),
            );
            return Err(format!("re-exec as the pump: {e}"));
        }
    };
    let mut exit = exit;
    // Read before delete removes the cgroup.
    exit.oom_killed = cgroups_path(&a.bundle).is_some_and(|p| berth_runtime::oom_kills(&p) > 0);
    record_exit(&a.state, &exit);
    // Kills anything left in the cgroup, removes it and the runtime's state.
    container.delete(oci.as_ref(), &a.id, &a.state);
    Ok(())
}

/// The container, as libcontainer holds it or as an external runtime's.
enum Engine {
    Lib(Box<libcontainer::container::Container>),
    /// The init's pid.
    Oci(Pid),
}

impl Engine {
    fn pid(&self) -> Option<Pid> {
        match self {
            Engine::Lib(c) => c.pid().map(|p| Pid::from_raw(p.as_raw())),
            Engine::Oci(p) => Some(*p),
        }
    }

    fn start(&mut self, oci: Option<&oci::Oci>, id: &str) -> Result<(), String> {
        match (self, oci) {
            (Engine::Lib(c), _) => c.start().map_err(|e| e.to_string()),
            (Engine::Oci(_), Some(o)) => o.start(id),
            (Engine::Oci(_), None) => Err("no runtime".into()),
        }
    }

    fn delete(&mut self, oci: Option<&oci::Oci>, id: &str, state: &Path) {
        let r = match (self, oci) {
            (Engine::Lib(c), _) => c.delete(true).map_err(|e| e.to_string()),
            (Engine::Oci(_), Some(o)) => o.delete(id),
            (Engine::Oci(_), None) => Ok(()),
        };
        if let Err(e) = r {
            eprintln!("berth-monitor {id}: delete: {e}");
        }
        let _ = write_atomic(state, DELETED, b"");
    }
}

/// Drops from the spec's seccomp rules the syscall names this node's
/// libseccomp does not know (a profile may name syscalls newer than it),
/// as runc does; a rule left with no name goes. The bundle is rewritten.
fn known_syscalls_only(config: &Path) -> Result<(), String> {
    let text = std::fs::read(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let Some(rules) = spec
        .pointer_mut("/linux/seccomp/syscalls")
        .and_then(|r| r.as_array_mut())
    else {
        return Ok(());
    };
    let before: usize = rules
        .iter()
        .map(|r| r["names"].as_array().map_or(0, Vec::len))
        .sum();
    for r in rules.iter_mut() {
        if let Some(names) = r.get_mut("names").and_then(|n| n.as_array_mut()) {
            names.retain(|n| {
                n.as_str()
                    .is_some_and(|n| libseccomp::ScmpSyscall::from_name(n).is_ok())
            });
        }
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    let after: usize = rules
        .iter()
        .map(|r| r["names"].as_array().map_or(0, Vec::len))
        .sum();
    if after == before {
        return Ok(());
    }
    let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
    let dir = config.parent().unwrap_or(Path::new("/"));
    write_atomic(dir, "config.json", &bytes).map_err(|e| format!("{}: {e}", config.display()))
}

/// A command that runs this binary again. Not by its path: berthd runs a
/// sealed in-memory copy of it, which only /proc/self/exe names.
fn myself() -> std::process::Command {
    let mut c = std::process::Command::new("/proc/self/exe");
    std::os::unix::process::CommandExt::arg0(&mut c, "berth-monitor");
    c
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

/// Starts a pod's infra process in a new PID namespace (owned by the
/// pod's user namespace `userns`, if given) and writes its PID; berthd
/// pins the namespace. Returns once the PID is written (the infra process
/// goes on alone).
fn pause(args: &[String]) -> Result<(), String> {
    let (pid_file, userns) = match args {
        [pid_file] => (pid_file, None),
        [pid_file, userns] => (pid_file, Some(userns)),
        _ => return Err("usage: berth-monitor pause <pid-file> [<userns>]".into()),
    };
    let _ = nix::unistd::setsid();
    // Opened first: once in the pod's user namespace we may not create it.
    let mut out = File::create(pid_file).map_err(|e| format!("{pid_file}: {e}"))?;
    if let Some(userns) = userns {
        let ns = File::open(userns).map_err(|e| format!("{userns}: {e}"))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the pod's user namespace: {e}"))?;
    }
    // This process is single-threaded, so it may unshare its PID namespace:
    // its next child is PID 1 there.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("unshare pid: {e}"))?;
    let child = myself()
        .arg("pause-init")
        // Unused: it names the pod's state in `ps` (and to berth's tests,
        // which look for leftover processes by it).
        .arg(pid_file)
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
fn pause_init() -> Result<(), String> {
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

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The monitor once its container runs (re-exec'd by `run`): stdin is the
/// container's stdout pipe, stdout its stderr pipe. Pumps them into the
/// log, reaps the init, records the exit and deletes the container.
fn pump_mode(args: &[String]) -> Result<(), String> {
    let [id, bundle, state, root, log, pid, input, flags] = args else {
        return Err(
            "usage: berth-monitor pump <id> <bundle> <state> <root> <log> <pid> <stdin-fd|-> <flags|->"
                .into(),
        );
    };
    let tty = flags.split(',').any(|f| f == "tty");
    let once = flags.split(',').any(|f| f == "once");
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
        let fd = input.parse::<i32>().ok().map(|fd| {
            #[allow(unsafe_code)]
            // SAFETY: the monitor before the exec left this descriptor
            // open for us at this number; nothing else owns it.
            unsafe {
                <File as std::os::fd::FromRawFd>::from_raw_fd(fd)
            }
        });
        (fd, None)
    };
    let mut attach = attach::Attach::bind(state, input, once, term)?;
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("log {log}: {e}"))?;
    // The init may have exited between exec and the mask: reap first, and
    // still drain what it wrote.
    let already = reap(pid);
    let logs = Logs {
        path: PathBuf::from(log),
        file: log_file,
    };
    let mut exit = pump(pid, out_r, err_r, &sigfd, logs, &mut attach, already)?;
    let _ = std::fs::remove_file(state.join("attach.sock"));
    exit.oom_killed = cgroups_path(bundle).is_some_and(|p| berth_runtime::oom_kills(&p) > 0);
    record_exit(state, &exit);
    let runtime = flags.split(',').find_map(|f| f.strip_prefix("runtime="));
    match runtime {
        Some(bin) => {
            let (oci_root, oci_log) = (state.join("oci"), state.join("oci.log"));
            let o = oci::Oci {
                bin: Path::new(bin),
                root: &oci_root,
                log: &oci_log,
            };
            if let Err(e) = o.delete(id) {
                eprintln!("berth-monitor {id}: delete: {e}");
            }
        }
        None => match libcontainer::container::Container::load(root.join(id)) {
            Ok(mut c) => {
                if let Err(e) = c.delete(true) {
                    eprintln!("berth-monitor {id}: delete: {e}");
                }
            }
            Err(e) => eprintln!("berth-monitor {id}: load for delete: {e}"),
        },
    }
    let _ = write_atomic(state, DELETED, b"");
    Ok(())
}

/// The CRI log file, which `ReopenContainerLog` makes the monitor open
/// anew after the kubelet has renamed it.
struct Logs {
    path: PathBuf,
    file: File,
}

impl Logs {
    fn reopen(&mut self) -> Result<(), String> {
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("reopening {}: {e}", self.path.display()))?;
        Ok(())
    }
}

/// Copies the container's output into the CRI log (and to attached
/// clients) until the init exits; serves the attach socket; returns the
/// init's exit.
fn pump(
    pid: Pid,
    out_r: OwnedFd,
    err_r: Option<OwnedFd>,
    sigfd: &SignalFd,
    mut log: Logs,
    attach: &mut attach::Attach,
    mut exit: Option<Exit>,
) -> Result<Exit, String> {
    let mut streams = [
        (
            Some(File::from(out_r)),
            LogStream::new("stdout"),
            attach::STDOUT,
        ),
        (
            err_r.map(File::from),
            LogStream::new("stderr"),
            attach::STDERR,
        ),
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
            .filter_map(|(f, _, _)| f.as_ref())
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let n_streams = fds.len();
        fds.push(PollFd::new(sigfd.as_fd(), PollFlags::POLLIN));
        fds.extend(attach.poll_fds());
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
        for (file, stream, kind) in streams.iter_mut() {
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
                        attach.broadcast(*kind, &buf[..k]);
                    }
                }
            }
            i += 1;
        }
        if !entries.is_empty() {
            let _ = log.file.write_all(&entries);
            entries.clear();
        }
        let requests = attach.service(&ready[n_streams + 1..]);
        for client in requests.reopen {
            let answer = match log.reopen() {
                Ok(()) => String::new(),
                Err(e) => e,
            };
            attach.ack(client, attach::REOPEN, answer.as_bytes());
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
