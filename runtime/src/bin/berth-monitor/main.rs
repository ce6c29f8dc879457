//! berth-monitor: one per container, started by berthd and detached from
//! it (its own session), so the container outlives a berthd restart or
//! crash. It creates the container with youki's libcontainer (or an
//! external OCI runtime) and starts it when berthd says so; then it
//! becomes `berth-pump`, a small binary, which writes the container's
//! output to the CRI log, reaps it and records its exit, and at the end
//! executes this one again to delete the container.
//!
//! Single-threaded on purpose: libcontainer clones and runs Rust code in
//! the child, which is only safe in a process with one thread.
//!
//! Its command line is [`berth_runtime::protocol::Invocation`]; the modes:
//!
//! - `run` ([`create`]): creates the container (with the node's pod
//!   mounts set aside, [`aside`]) and waits, CREATED, for
//!   berthd's start word; then executes `berth-pump` (berthd's sealed copy,
//!   opened at the start), which
//! - `delete` ([`engine`]) ends: kills what is left of the exited
//!   container, removes its cgroup and the runtime's state;
//! - `exec` ([`exec`]): runs one more process in a running container;
//! - `checkpoint` ([`checkpoint`]): dumps a running container with CRIU
//!   and leaves it running; `run` of a container with CRIU's images in
//!   its state restores it instead of creating it (an external runtime's
//!   `restore`, or [`restore`] under libcontainer);
//! - `pause`, `pause-init` ([`pause`]): a pod's infra process, when the
//!   pod shares one PID namespace.
//!
//! A container with stdin gets a pipe, written through the attach socket;
//! one whose spec asks for a terminal gets one (libcontainer's console
//! socket), its output logged as stdout.

mod aside;
mod bundle;
mod checkpoint;
mod create;
mod engine;
mod exec;
mod oci;
mod pause;
mod restore;

use std::ffi::OsString;
use std::process::ExitCode;

use berth_runtime::protocol::Invocation;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let inv = match Invocation::parse(&args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            return ExitCode::from(2);
        }
    };
    match inv {
        Invocation::Run {
            container: c,
            pump,
            aside,
        } => {
            log_errors();
            // Our own session: a signal to berthd's process group never
            // reaches us.
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            match create::run(&c, &pump, aside.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth-monitor {}: {e}", c.id);
                    ExitCode::FAILURE
                }
            }
        }
        Invocation::Delete { container, pid } => {
            engine::delete_exited(&container, nix::unistd::Pid::from_raw(pid));
            ExitCode::SUCCESS
        }
        Invocation::Pump { .. } => report(Err("pump is berth-pump's mode".into())),
        Invocation::Exec {
            id,
            root,
            process,
            runtime,
            aside,
        } => match exec::exec_mode(&id, &root, &process, runtime.as_deref(), aside.as_deref()) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("berth-monitor exec: {e}");
                ExitCode::from(255)
            }
        },
        Invocation::Checkpoint(c) => {
            log_errors();
            report(checkpoint::checkpoint(&c))
        }
        Invocation::Pause { pid_file, userns } => {
            report(pause::pause(&pid_file, userns.as_deref()))
        }
        Invocation::PauseInit { .. } => report(pause::pause_init()),
    }
}

/// libcontainer says why it failed only through tracing: its errors go to
/// our stderr (the container's monitor.log, or berthd's reading).
fn log_errors() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::ERROR)
        .with_ansi(false)
        .try_init();
}

/// A command that runs this binary again as `inv`. Not by its path:
/// berthd runs a sealed in-memory copy of it, which only /proc/self/exe
/// names.
fn myself(inv: &Invocation) -> std::process::Command {
    inv.command("/proc/self/exe")
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
