//! How `berth-monitor` and `berth-pump` are invoked: their modes as one
//! [`Invocation`], turned into a command line by [`Invocation::to_args`]
//! (berthd, and the two executing each other) and back by
//! [`Invocation::parse`].
//!
//! ```text
//! run    <id> <bundle> <state> <root> <log> <pump> [--stdin] [--stdin-once] [--runtime <bin>]
//!        [--aside <tree>]
//! pump   <id> <bundle> <state> <root> <log> <pid> <monitor-fd> [--stdin] [--stdin-once]
//!        [--runtime <bin>] [--stdin-fd <n>] [--tty] [--cgroup <path>]
//! delete <id> <bundle> <state> <root> <log> <pid> [--stdin] [--stdin-once] [--runtime <bin>]
//! exec <id> <root> <process.json> [--runtime <bin>] [--aside <tree>]
//! pause <pid-file> [--userns <path>]
//! pause-init <pid-file>
//! ```
//! Positional arguments come first, so a path that looks like a flag is
//! still a path.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

/// A container as its monitor is given it (`run`, `pump` after it, and
/// `delete` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// The OCI bundle (its `config.json`).
    pub bundle: PathBuf,
    /// The state directory (see [`super::state`]).
    pub state: PathBuf,
    /// libcontainer's state root.
    pub root: PathBuf,
    /// The CRI log file.
    pub log: PathBuf,
    /// The container gets a stdin pipe, written through the attach socket.
    pub stdin: bool,
    /// Its stdin closes after the first attach session that used it ends.
    pub stdin_once: bool,
    /// An external OCI runtime (runc's command line) instead of
    /// libcontainer.
    pub runtime: Option<PathBuf>,
}

/// `berth-pump`'s invocation: its stdin is the container's stdout (or
/// terminal), its stdout the container's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pump {
    pub container: Container,
    /// The container's init.
    pub pid: i32,
    /// The descriptor left open for the container's stdin pipe.
    pub stdin_fd: Option<i32>,
    /// The container has a terminal (its master is our stdin).
    pub tty: bool,
    /// The container's `linux.cgroupsPath`, for its OOM kills.
    pub cgroup: Option<String>,
    /// The descriptor left open on `berth-monitor`, which the pump
    /// executes as [`Invocation::Delete`] once the container has exited.
    pub monitor_fd: i32,
}

/// `berth-monitor checkpoint`: CRIU's images of container `id` into
/// `images`, CRIU's log and statistics into `work`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: String,
    /// libcontainer's state root, or the external runtime's.
    pub root: PathBuf,
    pub images: PathBuf,
    pub work: PathBuf,
    pub runtime: Option<PathBuf>,
}

/// One run of `berth-monitor` (or `berth-pump`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Create the container, start it on berthd's word, then become the
    /// pump: `berth-pump`, at `pump` (berthd's sealed copy of it, opened
    /// at once).
    Run {
        container: Container,
        pump: PathBuf,
        /// berthd's tree of pod mounts (a bind mount of itself), which the
        /// monitor sets aside while it makes the container.
        aside: Option<PathBuf>,
    },
    /// `berth-pump`, the monitor once its container runs (executed by
    /// `Run`).
    Pump(Pump),
    /// Delete the exited container whose init was `pid` (executed by the
    /// pump): kill what is left of it, remove its cgroup and the
    /// runtime's state.
    Delete { container: Container, pid: i32 },
    /// Run one more process in a running container (see
    /// [`super::exec`] for its descriptors).
    Exec {
        id: String,
        /// libcontainer's state root, or the external runtime's.
        root: PathBuf,
        /// The OCI process to run (JSON).
        process: PathBuf,
        runtime: Option<PathBuf>,
        /// berthd's tree of pod mounts, set aside while the process is
        /// made, as for `Run`.
        aside: Option<PathBuf>,
    },
    /// Checkpoint a running container with CRIU and leave it running.
    Checkpoint(Checkpoint),
    /// Start a pod's infra process in a new PID namespace (owned by the
    /// user namespace at `userns`, if given); write its pid to `pid_file`.
    Pause {
        pid_file: PathBuf,
        userns: Option<PathBuf>,
    },
    /// The infra process: PID 1 of the pod's PID namespace. `pid_file`
    /// is unused; it names the pod in `ps`.
    PauseInit { pid_file: PathBuf },
}

/// Why a command line is not an [`Invocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError(String);

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; usage:\n{}", self.0, USAGE)
    }
}

impl std::error::Error for ArgsError {}

pub const USAGE: &str = "\
  berth-monitor run <id> <bundle> <state> <root> <log> <pump> [--stdin] [--stdin-once] [--runtime <bin>] [--aside <tree>]
  berth-pump pump <id> <bundle> <state> <root> <log> <pid> <monitor-fd> [--stdin] [--stdin-once] [--runtime <bin>] [--stdin-fd <n>] [--tty] [--cgroup <path>]
  berth-monitor delete <id> <bundle> <state> <root> <log> <pid> [--stdin] [--stdin-once] [--runtime <bin>]
  berth-monitor exec <id> <root> <process.json> [--runtime <bin>] [--aside <tree>]
  berth-monitor checkpoint <id> <root> <image-dir> <work-dir> [--runtime <bin>]
  berth-monitor pause <pid-file> [--userns <path>]
  berth-monitor pause-init <pid-file>";

fn err<T>(msg: impl Into<String>) -> Result<T, ArgsError> {
    Err(ArgsError(msg.into()))
}

impl Invocation {
    /// The one way either binary is run as this invocation: `program`
    /// (a path such as `/proc/self/fd/<n>`: berthd's sealed copies are
    /// memfds), named `berth-monitor` (its `argv[0]`, what `ps` shows).
    pub fn command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        std::os::unix::process::CommandExt::arg0(&mut c, "berth-monitor");
        c.args(self.to_args());
        c
    }

    /// The arguments after `argv[0]`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a = Args::default();
        match self {
            Invocation::Run {
                container,
                pump,
                aside,
            } => {
                a.word("run");
                a.container(container);
                a.path(pump);
                a.container_flags(container);
                a.option("--aside", aside.as_ref());
            }
            Invocation::Pump(Pump {
                container,
                pid,
                stdin_fd,
                tty,
                cgroup,
                monitor_fd,
            }) => {
                a.word("pump");
                a.container(container);
                a.word(&pid.to_string());
                a.word(&monitor_fd.to_string());
                a.container_flags(container);
                if let Some(fd) = stdin_fd {
                    a.word("--stdin-fd");
                    a.word(&fd.to_string());
                }
                a.flag("--tty", *tty);
                if let Some(cg) = cgroup {
                    a.word("--cgroup");
                    a.word(cg);
                }
            }
            Invocation::Delete { container, pid } => {
                a.word("delete");
                a.container(container);
                a.word(&pid.to_string());
                a.container_flags(container);
            }
            Invocation::Exec {
                id,
                root,
                process,
                runtime,
                aside,
            } => {
                a.word("exec");
                a.word(id);
                a.path(root);
                a.path(process);
                a.option("--runtime", runtime.as_ref());
                a.option("--aside", aside.as_ref());
            }
            Invocation::Checkpoint(c) => {
                a.word("checkpoint");
                a.word(&c.id);
                for p in [&c.root, &c.images, &c.work] {
                    a.path(p);
                }
                a.option("--runtime", c.runtime.as_ref());
            }
            Invocation::Pause { pid_file, userns } => {
                a.word("pause");
                a.path(pid_file);
                a.option("--userns", userns.as_ref());
            }
            Invocation::PauseInit { pid_file } => {
                a.word("pause-init");
                a.path(pid_file);
            }
        }
        a.0
    }

    /// The invocation these arguments (after `argv[0]`) name.
    pub fn parse(args: &[OsString]) -> Result<Invocation, ArgsError> {
        let Some((mode, rest)) = args.split_first() else {
            return err("no mode");
        };
        let mode = mode.to_str().unwrap_or("");
        match mode {
            "run" => {
                let (pos, mut flags) = split(rest, 6)?;
                let container = container(&pos[..5], &mut flags)?;
                let aside = flags.value("--aside")?.map(PathBuf::from);
                flags.done()?;
                Ok(Invocation::Run {
                    container,
                    pump: pos[5].clone().into(),
                    aside,
                })
            }
            "pump" => {
                let (pos, mut flags) = split(rest, 7)?;
                let container = container(&pos[..5], &mut flags)?;
                let pid = number(&pos[5], "pid")?;
                let monitor_fd = number(&pos[6], "monitor-fd")?;
                let stdin_fd = match flags.value("--stdin-fd")? {
                    Some(fd) => Some(number(&fd, "--stdin-fd")?),
                    None => None,
                };
                let tty = flags.flag("--tty");
                let cgroup = match flags.value("--cgroup")? {
                    Some(cg) => Some(text(&cg, "--cgroup")?),
                    None => None,
                };
                flags.done()?;
                Ok(Invocation::Pump(Pump {
                    container,
                    pid,
                    stdin_fd,
                    tty,
                    cgroup,
                    monitor_fd,
                }))
            }
            "delete" => {
                let (pos, mut flags) = split(rest, 6)?;
                let container = container(&pos[..5], &mut flags)?;
                let pid = number(&pos[5], "pid")?;
                flags.done()?;
                Ok(Invocation::Delete { container, pid })
            }
            "exec" => {
                let (pos, mut flags) = split(rest, 3)?;
                let runtime = flags.value("--runtime")?.map(PathBuf::from);
                let aside = flags.value("--aside")?.map(PathBuf::from);
                flags.done()?;
                Ok(Invocation::Exec {
                    id: text(&pos[0], "id")?,
                    root: pos[1].clone().into(),
                    process: pos[2].clone().into(),
                    runtime,
                    aside,
                })
            }
            "checkpoint" => {
                let (pos, mut flags) = split(rest, 4)?;
                let runtime = flags.value("--runtime")?.map(PathBuf::from);
                flags.done()?;
                Ok(Invocation::Checkpoint(Checkpoint {
                    id: text(&pos[0], "id")?,
                    root: pos[1].clone().into(),
                    images: pos[2].clone().into(),
                    work: pos[3].clone().into(),
                    runtime,
                }))
            }
            "pause" => {
                let (pos, mut flags) = split(rest, 1)?;
                let userns = flags.value("--userns")?.map(PathBuf::from);
                flags.done()?;
                Ok(Invocation::Pause {
                    pid_file: pos[0].clone().into(),
                    userns,
                })
            }
            "pause-init" => {
                let (pos, flags) = split(rest, 1)?;
                flags.done()?;
                Ok(Invocation::PauseInit {
                    pid_file: pos[0].clone().into(),
                })
            }
            _ => err(format!("unknown mode {:?}", args[0])),
        }
    }
}

/// A command line being written.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn word(&mut self, w: &str) {
        self.0.push(w.into());
    }

    fn path(&mut self, p: &std::path::Path) {
        self.0.push(p.as_os_str().to_owned());
    }

    fn flag(&mut self, name: &str, on: bool) {
        if on {
            self.word(name);
        }
    }

    fn option(&mut self, name: &str, value: Option<&PathBuf>) {
        if let Some(v) = value {
            self.word(name);
            self.path(v);
        }
    }

    fn container(&mut self, c: &Container) {
        self.word(&c.id);
        for p in [&c.bundle, &c.state, &c.root, &c.log] {
            self.path(p);
        }
    }

    fn container_flags(&mut self, c: &Container) {
        self.flag("--stdin", c.stdin);
        self.flag("--stdin-once", c.stdin_once);
        self.option("--runtime", c.runtime.as_ref());
    }
}

/// The flags after the positional arguments, taken one by one.
struct Flags(Vec<Option<OsString>>);

impl Flags {
    /// Whether the bare flag `name` is there (taken, once).
    fn flag(&mut self, name: &str) -> bool {
        let at = self
            .0
            .iter()
            .position(|a| a.as_deref() == Some(OsStr::new(name)));
        at.map(|i| self.0[i] = None).is_some()
    }

    /// The value after `name`, if it is there.
    fn value(&mut self, name: &str) -> Result<Option<OsString>, ArgsError> {
        let Some(i) = self
            .0
            .iter()
            .position(|a| a.as_deref() == Some(OsStr::new(name)))
        else {
            return Ok(None);
        };
        self.0[i] = None;
        match self.0.get_mut(i + 1).and_then(Option::take) {
            Some(v) => Ok(Some(v)),
            None => err(format!("{name} needs a value")),
        }
    }

    /// An error for whatever was not taken.
    fn done(self) -> Result<(), ArgsError> {
        match self.0.into_iter().flatten().next() {
            None => Ok(()),
            Some(a) => err(format!("unexpected argument {a:?}")),
        }
    }
}

fn split(rest: &[OsString], n: usize) -> Result<(&[OsString], Flags), ArgsError> {
    if rest.len() < n {
        return err(format!("{n} arguments wanted, {} given", rest.len()));
    }
    let (pos, flags) = rest.split_at(n);
    Ok((pos, Flags(flags.iter().cloned().map(Some).collect())))
}

fn container(pos: &[OsString], flags: &mut Flags) -> Result<Container, ArgsError> {
    Ok(Container {
        id: text(&pos[0], "id")?,
        bundle: pos[1].clone().into(),
        state: pos[2].clone().into(),
        root: pos[3].clone().into(),
        log: pos[4].clone().into(),
        stdin: flags.flag("--stdin"),
        stdin_once: flags.flag("--stdin-once"),
        runtime: flags.value("--runtime")?.map(PathBuf::from),
    })
}

fn text(a: &OsStr, what: &str) -> Result<String, ArgsError> {
    match a.to_str() {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => err(format!("{what} {a:?} is not a name")),
    }
}

fn number(a: &OsStr, what: &str) -> Result<i32, ArgsError> {
    match a.to_str().and_then(|s| s.parse().ok()) {
        Some(n) => Ok(n),
        None => err(format!("{what} {a:?} is not a number")),
    }
}

#[cfg(test)]
mod tests;
