//! `berth-monitor run`: creates the container (CRI CREATED), waits for
//! berthd's start word on the start FIFO (or a kill, or the init's early
//! death), starts it and executes `berth-pump` in its place.
//!
//! A container restored from a checkpoint (CRIU's images in the state
//! directory's `restore/`) is made by the external runtime's `restore`
//! instead, or by CRIU itself under libcontainer ([`super::restore`]),
//! its processes left stopped: CREATED as any other, until the start
//! continues them.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};

use berth_runtime::now_ns;
use berth_runtime::protocol::state::{
    CREATE_ERROR, OCI_PID, PID, PID_START, RESTORE, START_FIFO, STARTED, write_atomic,
};
use berth_runtime::protocol::{Container, Control, Exit, Invocation, Pump};
use berth_runtime::reap::{
    drain_signals, reap, record_exit, record_oom_base, sigchld_fd, write_exit,
};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::pipe2;

use super::aside::NotAside;
use super::engine::{Engine, External};

pub fn run(
    a: &Container,
    pump: &std::path::Path,
    aside: Option<&std::path::Path>,
) -> Result<(), String> {
    // berthd's copy of the pump: opened now, while berthd surely runs.
    let pump = File::open(pump).map_err(|e| format!("berth-pump {}: {e}", pump.display()))?;
    super::bundle::known_syscalls_only(&a.bundle)?;
    let spec = super::bundle::spec(&a.bundle);
    let cgroup = spec.as_ref().and_then(super::bundle::cgroups_path);
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let tty = spec.as_ref().is_some_and(super::bundle::terminal);
    // stdin: a pipe we keep the writing end of, or nothing: a pipe whose
    // writing end is closed, which reads as end of file as /dev/null does
    // (the node's /dev/null, from a mount the container does not have,
    // is a file CRIU cannot dump: no checkpoint).
    let (stdin_r, stdin_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let stdin_w = (a.stdin && !tty).then_some(stdin_w);
    // A terminal: libcontainer sends its master end over this socket.
    let console = if tty {
        Some(super::exec::console_socket()?)
    } else {
        None
    };
    let restore = a.state.join(RESTORE);
    // Under libcontainer, the container is made with the node's pod
    // mounts set aside (see `aside`); CRIU's restore and an external
    // runtime see the node's table as it is.
    let external = External::of(a);
    let lib = external.is_none() && !restore.is_dir();
    let aside = match aside
        .filter(|_| lib)
        .map(|t| super::aside::set_aside(t, &a.bundle, spec.as_ref()))
    {
        None => None,
        Some(Ok(x)) => Some(x),
        Some(Err(NotAside::Skipped(e))) => {
            eprintln!("berth-monitor {}: mounts not set aside: {e}", a.id);
            None
        }
        Some(Err(NotAside::Stuck(e))) => {
            let msg = format!("setting the node's mounts aside: {e}");
            let _ = write_atomic(&a.state, CREATE_ERROR, msg.as_bytes());
            return Err(msg);
        }
    };
    let built: Result<Engine, String> = match external {
        None if restore.is_dir() && tty => {
            Err("restoring a container with a terminal needs an external runtime (runc)".into())
        }
        None if restore.is_dir() => super::restore::restore(a, &restore, (stdin_r, out_w, err_w))
            .map(|c| Engine::Restored(Box::new(Engine::Lib(Box::new(c))))),
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
                // The systemd driver's `slice:prefix:name` path: libcontainer
                // makes the container's scope through systemd's D-Bus API.
                let systemd = cgroup
                    .as_deref()
                    .is_some_and(berth_runtime::is_systemd_path);
                b.as_init(&a.bundle).with_systemd(systemd).with_detach(true)
            })
            .and_then(|b| b.build())
            .map(|c| Engine::Lib(Box::new(c)))
            .map_err(|e| e.to_string()),
        Some(x) if restore.is_dir() => super::oci::subreaper().and_then(|()| {
            x.oci()
                .restore(
                    &a.id,
                    &a.bundle,
                    &a.state,
                    console.as_ref().map(|c| c.1.as_path()),
                    (!tty).then_some((stdin_r, out_w, err_w)),
                )
                .map(|pid| Engine::Restored(Box::new(Engine::Oci(x, pid))))
        }),
        Some(x) => super::oci::subreaper().and_then(|()| {
            let stdio = (!tty).then_some((stdin_r, out_w, err_w));
            x.oci()
                .create(
                    &a.id,
                    &a.bundle,
                    &a.state.join(OCI_PID),
                    console.as_ref().map(|c| c.1.as_path()),
                    stdio,
                )
                .map(|pid| Engine::Oci(x, pid))
        }),
    };
    if let Some(Err(e)) = aside.map(super::aside::Aside::back) {
        // Not fatal: the pump keeps this namespace's copies of the pod's
        // mounts alive until it ends.
        eprintln!("berth-monitor {}: {e}", a.id);
    }
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
            let m = super::exec::receive_master(l);
            let _ = std::fs::remove_dir_all(dir);
            match m {
                Ok(m) => Some(m),
                Err(e) => {
                    let msg = format!("creating the container's terminal: {e}");
                    let _ = write_atomic(&a.state, CREATE_ERROR, msg.as_bytes());
                    container.delete(&a.id, &a.state);
                    return Err(msg);
                }
            }
        }
        None => None,
    };
    let pid = container.pid().ok_or("the runtime gave no init pid")?;

    let sigfd = sigchld_fd()?;
    // Listening before the pid file says "created": berthd answers
    // CreateContainer as soon as it sees that file, and StartContainer's
    // word, which may follow at once, finds no reader otherwise (ENXIO).
    let mut fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.state.join(START_FIFO))
        .map_err(|e| format!("start fifo: {e}"))?;
    record_oom_base(cgroup.as_deref(), &a.state);
    if let Some(start) = berth_runtime::protocol::state::process_start(pid.as_raw()) {
        write_atomic(&a.state, PID_START, start.to_string().as_bytes())
            .map_err(|e| format!("pid-start file: {e}"))?;
    }
    write_atomic(&a.state, PID, pid.as_raw().to_string().as_bytes())
        .map_err(|e| format!("pid file: {e}"))?;

    // CREATED: wait for berthd's word, or for the init to die first.
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.log)
        .map_err(|e| format!("log {}: {e}", a.log.display()))?;
    let early_exit = loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut fds, PollTimeout::NONE).map_err(|e| format!("poll: {e}"))?;
        // Signals are drained before the reap, never after: a SIGCHLD that
        // arrives once the reap has looked (the init killed just below)
        // must stay pending to wake the next poll.
        drain_signals(&sigfd);
        if let Some(status) = reap(pid) {
            break Some(status);
        }
        if fds[0].any().unwrap_or(false) {
            let mut b = [0u8; 1];
            let _ = fifo.read(&mut b);
            match Control::from_byte(b[0]) {
                Some(Control::Start) => break None,
                Some(Control::Kill) => {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
                None => {}
            }
        }
    };
    if let Some(exit) = early_exit {
        record_exit(cgroup.as_deref(), &a.state, exit, false);
        container.delete(&a.id, &a.state);
        return Ok(());
    }
    if let Err(e) = container.start(&a.id) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        let x = Exit {
            code: 128,
            finished_ns: now_ns(),
            signal: None,
            message: format!("starting the container: {e}"),
            oom_killed: false,
        };
        write_exit(&a.state, &x);
        container.delete(&a.id, &a.state);
        return Err(x.message);
    }
    write_atomic(&a.state, STARTED, now_ns().to_string().as_bytes())
        .map_err(|e| format!("started file: {e}"))?;
    // Running: libcontainer's code and heap are not needed until the end,
    // so become the small pump (the same pid, so the container stays our
    // child): its pipes become our stdin and stdout, and this binary stays
    // open for it, for the delete. Only if exec fails do we go on here.
    drop((sigfd, fifo, log));
    // The stdin pipe's writing end survives the exec at its number.
    let stdin_fd = match &stdin_w {
        Some(w) => {
            nix::fcntl::fcntl(
                w,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map_err(|e| format!("stdin pipe: {e}"))?;
            Some(w.as_raw_fd())
        }
        None => None,
    };
    let (pump_in, pump_out) = match master {
        // With a terminal, its master is the one stream.
        Some(m) => (std::process::Stdio::from(m), std::process::Stdio::null()),
        None => (
            std::process::Stdio::from(out_r),
            std::process::Stdio::from(err_r),
        ),
    };
    let myself = nix::fcntl::open(
        "/proc/self/exe",
        OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("/proc/self/exe: {e}"))?;
    let inv = Invocation::Pump(Pump {
        container: a.clone(),
        pid: pid.as_raw(),
        stdin_fd,
        tty,
        cgroup,
        monitor_fd: myself.as_raw_fd(),
    });
    let e = std::os::unix::process::CommandExt::exec(
        inv.command(format!("/proc/self/fd/{}", pump.as_raw_fd()))
            .stdin(pump_in)
            .stdout(pump_out),
    );
    Err(format!("executing berth-pump: {e}"))
}
