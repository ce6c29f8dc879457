//! The files in a container's state directory (`<state>/containers/<id>`)
//! through which berthd and the monitor talk:
//!
//! ```text
//! config.json   the OCI bundle's spec (berthd writes it)
//! start         FIFO: berthd writes a Control word (start, kill)
//! monitor.log   the monitor's stderr (libcontainer's errors)
//! pid-start     the init's start time (written just before pid)
//! pid           the container's init pid, once CREATED
//! create-error  why creating failed
//! started       unix nanoseconds, once RUNNING
//! attach.sock   the attach socket (frames), while RUNNING
//! exit          the exit status (JSON: Exit), once EXITED
//! deleted       the monitor's work is done
//! oci/, oci.log, oci.pid   an external runtime's state root, log, pid file
//! ```
//! Every file the monitor writes is written whole and renamed into place.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const CONFIG: &str = "config.json";
pub const START_FIFO: &str = "start";
pub const MONITOR_LOG: &str = "monitor.log";
pub const PID: &str = "pid";
/// The init's start time, [`process_start`] of [`PID`]: the pid is the
/// container's only while the process holding it started then (a pid is
/// reused once its process is reaped, e.g. after the monitor died).
pub const PID_START: &str = "pid-start";
pub const CREATE_ERROR: &str = "create-error";
pub const STARTED: &str = "started";
pub const ATTACH_SOCKET: &str = "attach.sock";
pub const EXIT: &str = "exit";
/// Written by the monitor last, once the container is deleted (its cgroup
/// and the runtime's state gone): the monitor's work is done.
pub const DELETED: &str = "deleted";
/// An external OCI runtime's `--root` for this container.
pub const OCI_ROOT: &str = "oci";
/// An external OCI runtime's `--log`.
pub const OCI_LOG: &str = "oci.log";
/// An external OCI runtime's `--pid-file` for the init.
pub const OCI_PID: &str = "oci.pid";
/// A container restored from a checkpoint: CRIU's images, unpacked from
/// the archive by berthd. The monitor restores (rather than creates) the
/// container when it is there.
pub const RESTORE: &str = "restore";
/// The CRIU configuration berthd writes for a restore (the runtime's
/// `org.criu.config`): the restored processes are left stopped until the
/// start, so a restored container is CREATED as any other.
pub const CRIU_CONF: &str = "criu.conf";

/// The address of the attach socket in the state directory open as
/// `dir`: through the directory's descriptor, because the state dir's own
/// path may be too long for a socket address. Valid while `dir` is open.
pub fn attach_socket_address(dir: &std::fs::File) -> String {
    format!("/proc/self/fd/{}/{ATTACH_SOCKET}", dir.as_raw_fd())
}

/// How a container ended (the `exit` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code; 128 + n for death by signal n.
    pub code: i32,
    pub finished_ns: i64,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Set when the container never ran (start failed).
    #[serde(default)]
    pub message: String,
    /// The kernel's OOM killer killed a process of the container.
    #[serde(default)]
    pub oom_killed: bool,
}

impl Exit {
    /// Writes it as the `exit` file of the container's state dir `state`.
    pub fn write(&self, state: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomic(state, EXIT, &json)
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`; the command name before it may hold spaces and
/// parentheses, so fields are counted from its last `)`).
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so a
/// reader sees all of it or nothing.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, dir.join(name))
}
