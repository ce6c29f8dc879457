//! Running `berth-monitor`: where its binary is, the sealed copy berthd
//! runs, and the one builder of its command lines (the arguments are
//! [`berth_runtime::protocol::Invocation`]'s, which the monitor parses).

use std::path::{Path, PathBuf};

use berth_runtime::protocol::Invocation;

/// `berth-monitor`, installed next to `berthd`.
pub fn path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("berth-monitor")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/berth-monitor"))
}

/// The one way berthd runs the monitor: as [`exe`], named `berth-monitor`
/// (its `argv[0]`, what `ps` shows), invoked as `inv`, with a clean
/// environment but for a standard `PATH`.
pub fn command(inv: &Invocation) -> std::process::Command {
    let mut c = std::process::Command::new(exe());
    std::os::unix::process::CommandExt::arg0(&mut c, "berth-monitor");
    c.args(inv.to_args()).env_clear().env(
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
    EXE.get_or_init(|| {
        let path = path();
        sealed_copy(&path).unwrap_or_else(|e| {
            tracing::warn!("running {} itself, not a sealed copy: {e}", path.display());
            path
        })
    })
}

fn sealed_copy(path: &Path) -> Result<PathBuf, String> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(
        c"berth-monitor",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
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
    let fd = std::os::fd::IntoRawFd::into_raw_fd(copy);
    Ok(PathBuf::from(format!("/proc/self/fd/{fd}")))
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
