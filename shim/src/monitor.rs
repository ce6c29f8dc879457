//! Running `berth-monitor`: where its binary is (and `berth-pump`'s, which
//! the monitor becomes once its container runs), the sealed copies berthd
//! runs, and the one builder of its command lines (the arguments are
//! [`berth_runtime::protocol::Invocation`]'s, which the monitor parses).

use std::path::{Path, PathBuf};

use berth_runtime::protocol::Invocation;

pub const MONITOR: &str = "berth-monitor";
pub const PUMP: &str = "berth-pump";

/// The helper binary `name` ([`MONITOR`], [`PUMP`]), installed next to
/// `berthd`.
pub fn path(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| Path::new("/usr/local/bin").join(name))
}

/// The one way berthd runs the monitor: as [`exe`], named `berth-monitor`
/// (its `argv[0]`, what `ps` shows), invoked as `inv`, with a clean
/// environment but for a standard `PATH`.
pub fn command(inv: &Invocation) -> std::process::Command {
    let mut c = inv.command(exe());
    c.env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    c
}

/// The monitor as berthd runs it: a sealed in-memory copy of
/// [`path`], made once. Every process that runs in a container
/// starts as a monitor (libcontainer clones it), and a container process
/// that reached it through `/proc/<pid>/exe` could otherwise write to
/// berth's own binary on the node (the CVE-2019-5736 class). A sealed
/// memfd cannot be written by anyone. If one cannot be made, the file is
/// run (with a warning).
pub fn exe() -> &'static Path {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| sealed(MONITOR, "self"))
}

/// The pump as the monitor runs it: a sealed copy as [`exe`] is (a
/// container sharing the node's PID namespace can see the pump), named
/// through berthd's pid, as the monitor opens it.
pub fn pump() -> &'static Path {
    static PUMP_EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PUMP_EXE.get_or_init(|| sealed(PUMP, &std::process::id().to_string()))
}

/// `/proc/<proc>/fd/<n>` of a sealed copy of the helper `name`, or its
/// path when no copy can be made.
fn sealed(name: &str, proc: &str) -> PathBuf {
    let path = path(name);
    match sealed_copy(name, &path) {
        Ok(fd) => PathBuf::from(format!("/proc/{proc}/fd/{fd}")),
        Err(e) => {
            tracing::warn!("running {} itself, not a sealed copy: {e}", path.display());
            path
        }
    }
}

fn sealed_copy(name: &str, path: &Path) -> Result<i32, String> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| format!("memfd: {e}"))?;
    let mut copy = std::fs::File::from(fd);
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::copy(&mut file, &mut copy).map_err(|e| format!("copying {}: {e}", path.display()))?;
    fcntl(
        &copy,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SEAL
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE,
        ),
    )
    .map_err(|e| format!("sealing: {e}"))?;
    // Held open for as long as berthd runs; its children run it by path.
    Ok(std::os::fd::IntoRawFd::into_raw_fd(copy))
}

/// How many `berth-monitor` processes serve the berthd whose state
/// directory is `state` (it is on their command lines): a scan of /proc,
/// for the metrics endpoint.
pub fn running(state: &Path) -> usize {
    let state = state.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let mut args = cmd.split(|b| *b == 0);
            args.next() == Some(b"berth-monitor") && cmd.windows(state.len()).any(|w| w == state)
        })
        .count()
}
