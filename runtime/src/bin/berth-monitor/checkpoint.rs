//! `berth-monitor checkpoint`: dumps a running container's processes with
//! CRIU and leaves them running, for berthd's CheckpointContainer.
//!
//! A libcontainer container through CRIU's RPC service (`criu swrk`,
//! found on `PATH`), asked as runc asks it; with an external runtime, its
//! `checkpoint` command. Either way: every bind mount, device node and
//! masked path is declared external (berthd's /etc/hosts, volumes, the pod's /dev/shm,
//! `/dev/null` over /proc's files), file locks are dumped, and CRIU writes
//! its images to `images` and its `dump.log` and `stats-dump` to `work`.
//! Established TCP connections are not dumped: CRIU then refuses a
//! container that has one, as CRI-O and containerd do by default.

use berth_runtime::protocol::Checkpoint;
use std::os::unix::fs::MetadataExt;

use super::oci::Oci;

pub fn checkpoint(c: &Checkpoint) -> Result<(), String> {
    let Checkpoint {
        id,
        root,
        images,
        work,
        runtime,
    } = c;
    criu_installed()?;
    match runtime.as_deref() {
        Some(bin) => Oci {
            bin,
            root,
            log: &work.join("runtime.log"),
        }
        .checkpoint(id, images, work),
        None => dump(id, root, images, work)
            .map_err(|e| format!("criu dump: {e}{}", criu_error(&work.join("dump.log")))),
    }
}

/// CRIU is on `PATH`, or why not.
pub fn criu_installed() -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|d| d.join("criu").is_file()) {
        return Err(format!(
            "criu is not installed (not found on PATH {}): install CRIU (Debian: criu)",
            path.to_string_lossy()
        ));
    }
    Ok(())
}

/// Why CRIU failed, from its log (` (dump.log: ...)`), or nothing: its
/// first error is the cause (the last, "Dumping FAILED." or "Restoring
/// FAILED.", says none).
pub fn criu_error(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .find(|l| l.contains("Error (") && !l.ends_with("FAILED."))
        .or_else(|| text.lines().rev().find(|l| l.contains("Error")))
        .map(|l| {
            let name = log.file_name().unwrap_or_default().to_string_lossy();
            format!(" ({name}: {})", l.trim())
        })
        .unwrap_or_default()
}

/// The oldest CRIU whose dump berth asks for (crun's and libcontainer's
/// minimum, 3.15).
const CRIU_MINIMUM: u32 = 31500;

/// A libcontainer container's dump through CRIU's RPC service, as
/// libcontainer's own checkpoint makes it plus what runc adds: the
/// masked paths (`/dev/null` bound over files of /proc and /sys) declared
/// external mounts too. Without them CRIU cannot dump a container in a
/// user namespace, where those mounts' peer groups lie outside it
/// ("unreachable sharing").
fn dump(
    id: &str,
    root: &std::path::Path,
    images: &std::path::Path,
    work: &std::path::Path,
) -> Result<(), String> {
    use libcontainer::container::ContainerStatus;
    use libcontainer::oci_spec::runtime::Spec;
    use std::os::fd::AsRawFd;

    let c = libcontainer::container::Container::load(root.join(id))
        .map_err(|e| format!("container {id}: {e}"))?;
    if c.status() != ContainerStatus::Running {
        return Err(format!("container {id} is {:?}, not running", c.status()));
    }
    let pid = c
        .pid()
        .ok_or_else(|| format!("container {id} has no pid"))?
        .as_raw();
    let spec = Spec::load(c.bundle().join("config.json")).map_err(|e| e.to_string())?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut criu = rust_criu::Criu::new().map_err(|e| e.to_string())?;
    let version = criu.get_criu_version().map_err(|e| e.to_string())?;
    if version < CRIU_MINIMUM {
        return Err(format!(
            "CRIU {version} is older than {CRIU_MINIMUM}: install CRIU 3.15 or later"
        ));
    }
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination().to_string_lossy().into_owned();
        if is_bind(m) {
            criu.set_external_mount(dest.clone(), dest);
        } else if m.typ().as_deref() == Some("cgroup") {
            // Under cgroup v1 the container sees the node's hierarchies.
            for mp in v1_cgroup_mounts() {
                criu.set_external_mount(mp.clone(), mp);
            }
        }
    }
    for p in linux.masked_paths().iter().flatten() {
        match std::fs::metadata(format!("/proc/{pid}/root{p}")) {
            Ok(m) if !m.is_dir() => criu.set_external_mount(p.clone(), "/dev/null".into()),
            _ => {}
        }
    }
    // In a user namespace the device nodes are the node's, bound in:
    // libcontainer's defaults and the spec's own.
    for d in device_paths(&linux) {
        criu.set_external_mount(d.clone(), d);
    }
    // The pod's network and PID namespaces are berth's, made before the
    // container: external, as runc and libcontainer declare them.
    for (name, path) in pod_namespaces(&linux) {
        let ino = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .ino();
        criu.add_external(format!("{name}[{ino}]:{}", rust_criu::criu_ns_to_key(name)));
    }
    // The init's stdio, for a restore to reconnect.
    let descriptors: Vec<String> = (0..3)
        .map(|n| {
            std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
                .map_or_else(|_| "/dev/null".into(), |l| l.to_string_lossy().into_owned())
        })
        .collect();
    std::fs::write(
        images.join("descriptors.json"),
        serde_json::to_vec(&descriptors).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("descriptors.json: {e}"))?;
    let images_dir =
        std::fs::File::open(images).map_err(|e| format!("{}: {e}", images.display()))?;
    let work_dir = std::fs::File::open(work).map_err(|e| format!("{}: {e}", work.display()))?;
    criu.set_images_dir_fd(images_dir.as_raw_fd());
    criu.set_work_dir_fd(work_dir.as_raw_fd());
    criu.set_log_file("dump.log".into());
    criu.set_log_level(4);
    criu.set_pid(pid);
    criu.set_leave_running(true);
    criu.set_ext_unix_sk(false);
    criu.set_shell_job(false);
    criu.set_tcp_established(false);
    criu.set_file_locks(true);
    criu.set_orphan_pts_master(true);
    criu.set_manage_cgroups(true);
    criu.cgroups_mode(rust_criu::CgMode::SOFT);
    criu.set_link_remap(false);
    criu.set_root(c.bundle().to_string_lossy().into_owned());
    criu.dump().map_err(|e| e.to_string())
}

/// The namespaces berth made before the container, by the spec's paths:
/// the pod's network namespace, and a PID namespace the pod shares.
/// CRIU takes them as external (`extRootNetNS`, `extRootPidNS`), as runc
/// and libcontainer declare them.
pub fn pod_namespaces(
    linux: &libcontainer::oci_spec::runtime::Linux,
) -> Vec<(&'static str, std::path::PathBuf)> {
    use libcontainer::oci_spec::runtime::LinuxNamespaceType;
    [
        (LinuxNamespaceType::Network, "net"),
        (LinuxNamespaceType::Pid, "pid"),
    ]
    .into_iter()
    .filter_map(|(kind, name)| {
        let ns = linux
            .namespaces()
            .iter()
            .flatten()
            .find(|n| n.typ() == kind)?;
        Some((name, ns.path().clone()?))
    })
    .collect()
}

/// A bind mount, by its type or its options.
pub fn is_bind(m: &libcontainer::oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// The container's device nodes: libcontainer's defaults and the spec's.
pub fn device_paths(linux: &libcontainer::oci_spec::runtime::Linux) -> Vec<String> {
    DEFAULT_DEVICES
        .iter()
        .map(|d| d.to_string())
        .chain(
            linux
                .devices()
                .iter()
                .flatten()
                .map(|d| d.path().to_string_lossy().into_owned()),
        )
        .collect()
}

/// The device nodes libcontainer gives every container.
const DEFAULT_DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/random",
    "/dev/urandom",
];

/// The node's cgroup v1 hierarchies under /sys/fs/cgroup (none under v2).
pub fn v1_cgroup_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (fields, fs) = l.split_once(" - ")?;
            let point = fields.split(' ').nth(4)?;
            (fs.split(' ').next() == Some("cgroup") && point.starts_with("/sys/fs/cgroup"))
                .then(|| point.to_string())
        })
        .collect()
}
