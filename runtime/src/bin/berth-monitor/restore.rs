//! A libcontainer container restored from a checkpoint (the builtin
//! handler): libcontainer has no restore, so the monitor runs `criu
//! restore` itself, as runc asks CRIU, and then records the restored
//! container as libcontainer's own, which exec, stats and delete load.
//!
//! - its cgroup is made by libcgroups (a systemd scope under the systemd
//!   driver) with the monitor in it while CRIU runs, so CRIU and what it
//!   restores start there (the `cgroup-root` keeps them there); the monitor
//!   then goes back to its own cgroups;
//! - its rootfs is berthd's overlay, its bind mounts (and the masked
//!   paths, device nodes and v1 cgroup hierarchies the dump declared
//!   external) mapped to the new container's sources;
//! - its pod's network (and a shared PID) namespace are inherited by CRIU
//!   from the monitor, and so are its new stdio pipes, in place of the
//!   pipes `descriptors.json` names;
//! - its processes are left stopped and its cgroups rooted in the new
//!   container's, by berthd's `criu.conf` (which runc reads too): the
//!   start continues them, as under runc.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_runtime::protocol::Container;
use berth_runtime::protocol::state::{CRIU_CONF, OCI_PID};
use libcgroups::common::CgroupManager;
use libcontainer::container::ContainerStatus;
use libcontainer::oci_spec::runtime::Spec;
use nix::unistd::Pid;

/// Restores container `a` from CRIU's `images`; its init's stdio become
/// `stdio`. Returns libcontainer's record of it.
pub fn restore(
    a: &Container,
    images: &Path,
    stdio: (OwnedFd, OwnedFd, OwnedFd),
) -> Result<libcontainer::container::Container, String> {
    super::checkpoint::criu_installed()?;
    let spec = Spec::load(a.bundle.join("config.json")).map_err(|e| e.to_string())?;
    let linux = spec.linux().clone().unwrap_or_default();
    let config = libcontainer::config::YoukiConfig::from_spec(&spec, &a.id)
        .map_err(|e| format!("the spec: {e}"))?;
    let systemd = linux
        .cgroups_path()
        .as_ref()
        .is_some_and(|p| berth_runtime::is_systemd_path(&p.to_string_lossy()));
    let rootfs = a.bundle.join(
        spec.root()
            .as_ref()
            .map_or(Path::new("rootfs"), |r| r.path()),
    );

    // What CRIU inherits: the namespaces the pod made, and the new stdio.
    let mut keep: Vec<(OwnedFd, String)> = Vec::new();
    for (name, path) in super::checkpoint::pod_namespaces(&linux) {
        let ns = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        keep.push((ns.into(), rust_criu::criu_ns_to_key(name)));
    }
    let descriptors: Vec<String> = std::fs::read(images.join("descriptors.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the checkpoint has no descriptors.json")?;
    let (i, o, e) = stdio;
    for (fd, was) in [i, o, e].into_iter().zip(&descriptors) {
        // CRIU reconnects pipes; what else the init had (a file, a
        // terminal) is restored as the images say.
        if was.starts_with("pipe:") {
            keep.push((fd, was.clone()));
        }
    }

    let mut c = Command::new("criu");
    c.arg("restore")
        .arg("--images-dir")
        .arg(images)
        .arg("--work-dir")
        .arg(&a.state)
        .args(["--log-file", "restore.log", "-v4"])
        .arg("--root")
        .arg(&rootfs)
        .args([
            "--restore-detached",
            "--restore-sibling",
            "--file-locks",
            "--manage-cgroups=soft",
        ])
        // berthd's, as runc reads it: processes left stopped, the cgroup
        // root the new container's.
        .arg("--config")
        .arg(a.state.join(CRIU_CONF))
        .arg("--pidfile")
        .arg(a.state.join(OCI_PID));
    for (key, to) in external_mounts(&spec) {
        c.arg("--ext-mount-map").arg(format!("{key}:{to}"));
    }
    for (fd, key) in &keep {
        c.arg("--inherit-fd")
            .arg(format!("fd[{}]:{key}", fd.as_raw_fd()));
        inheritable(fd)?;
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());

    let cgroup = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: config.cgroup_path.clone(),
        systemd_cgroup: systemd,
        container_name: a.id.clone(),
    })
    .map_err(|e| format!("the container's cgroup: {e}"))?;
    let mine = own_cgroups();
    let restored = in_cgroup(&cgroup, &linux, || {
        let status = c.status().map_err(|e| format!("criu: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "criu restore: {status}{}",
                super::checkpoint::criu_error(&a.state.join("restore.log"))
            ))
        }
    });
    return_to(&mine);
    drop(keep);
    let recorded = restored
        .and_then(|()| super::oci::read_pid(&a.state.join(OCI_PID)))
        .and_then(|pid| record(a, pid.as_raw(), systemd, &config));
    if recorded.is_err() {
        let _ = cgroup.remove();
        let _ = std::fs::remove_dir_all(a.root.join(&a.id));
    }
    recorded
}

/// Runs `f` (CRIU) with the monitor in the container's cgroup, made now
/// and limited as the spec says.
fn in_cgroup(
    cgroup: &libcgroups::common::AnyCgroupManager,
    linux: &libcontainer::oci_spec::runtime::Linux,
    f: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let me = nix029::unistd::Pid::from_raw(std::process::id() as i32);
    cgroup
        .add_task(me)
        .map_err(|e| format!("the container's cgroup: {e}"))?;
    if let Some(r) = linux.resources() {
        cgroup
            .apply(&libcgroups::common::ControllerOpt {
                resources: r,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| format!("the container's cgroup limits: {e}"))?;
    }
    f()
}

/// libcontainer's record of the restored container (its state and its
/// config, as its own create writes them), so that it is loaded as any
/// other.
fn record(
    a: &Container,
    pid: i32,
    systemd: bool,
    config: &libcontainer::config::YoukiConfig,
) -> Result<libcontainer::container::Container, String> {
    let dir = a.root.join(&a.id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut c = libcontainer::container::Container::new(
        &a.id,
        ContainerStatus::Running,
        Some(pid),
        &a.bundle,
        &dir,
    )
    .map_err(|e| e.to_string())?;
    c.set_systemd(systemd).set_creator(0);
    c.save()
        .map_err(|e| format!("the container's state: {e}"))?;
    config
        .save(&dir)
        .map_err(|e| format!("the container's config: {e}"))?;
    Ok(c)
}

/// The mounts the dump declared external (see checkpoint.rs), by the
/// keys it stored them under, each with what it is on this node now.
fn external_mounts(spec: &Spec) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if let (true, Some(src)) = (super::checkpoint::is_bind(m), m.source()) {
            v.push((
                m.destination().to_string_lossy().into_owned(),
                src.to_string_lossy().into_owned(),
            ));
        }
    }
    v.push(("/dev/null".into(), "/dev/null".into()));
    let linux = spec.linux().clone().unwrap_or_default();
    for d in super::checkpoint::device_paths(&linux) {
        v.push((d.clone(), d));
    }
    for mp in super::checkpoint::v1_cgroup_mounts() {
        v.push((mp.clone(), mp));
    }
    v
}

/// Clears close-on-exec: CRIU inherits the descriptor at its number.
fn inheritable(fd: &OwnedFd) -> Result<(), String> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map(drop)
    .map_err(|e| format!("descriptor {}: {e}", fd.as_raw_fd()))
}

/// The monitor's own cgroups: each hierarchy's `cgroup.procs` it is in.
fn own_cgroups() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let hierarchy = match ctrls {
                "" if Path::new("/sys/fs/cgroup/cgroup.procs").exists() => String::new(),
                "" => "unified".into(),
                c => c.strip_prefix("name=").unwrap_or(c).to_string(),
            };
            Some(
                Path::new("/sys/fs/cgroup")
                    .join(hierarchy)
                    .join(path.trim_start_matches('/'))
                    .join("cgroup.procs"),
            )
        })
        .filter(|p| p.exists())
        .collect()
}

/// Puts the monitor back in `cgroups` ([`own_cgroups`]).
fn return_to(cgroups: &[PathBuf]) {
    for p in cgroups {
        if let Err(e) = std::fs::write(p, std::process::id().to_string()) {
            eprintln!("berth-monitor: back to {}: {e}", p.display());
        }
    }
}

/// Continues the restored processes CRIU left stopped: the init and all
/// its descendants (none can fork while stopped, so the walk is whole).
pub fn continue_all(init: Pid) -> Result<(), String> {
    let mut todo = vec![init];
    let mut all = Vec::new();
    while let Some(p) = todo.pop() {
        all.push(p);
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten();
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    // Children first: the init, continued last, finds them running.
    for p in all.iter().rev() {
        nix::sys::signal::kill(*p, nix::sys::signal::Signal::SIGCONT)
            .map_err(|e| format!("continuing restored process {p}: {e}"))?;
    }
    Ok(())
}
