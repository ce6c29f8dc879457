//! The infra process of a pod that shares one PID namespace among its
//! containers: `berth-monitor` as PID 1 (reaping orphans) holds the
//! namespace, and a bind mount of it pins it.

use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::{PodRecord, Pods, ns};

/// Starts the pod's infra process (in its user namespace, if it has
/// one) and pins its PID namespace.
pub(super) fn start(dir: &Path, in_userns: bool) -> Result<i32, String> {
    let pin = dir.join("pid");
    std::fs::File::create(&pin).map_err(|e| format!("pid pin: {e}"))?;
    let pid_file = dir.join("infra.pid");
    let pause = berth_runtime::protocol::Invocation::Pause {
        pid_file: pid_file.clone(),
        userns: in_userns.then(|| dir.join(ns::Kind::User.name())),
    };
    let out = crate::monitor::command(&pause)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("infra process: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "infra process: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| "infra process: no pid".to_string())?;
    mount(
        Some(Path::new(&format!("/proc/{pid}/ns/pid"))),
        &pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pinning the pid namespace: {e}"))?;
    Ok(pid)
}

/// Kills `pid` if it is still an infra process, and waits (2 s at most)
/// until it has left its cgroup (gone, or a zombie), so that the pod's
/// cgroups can be removed after it.
pub(super) fn kill(pid: i32) {
    if is_infra(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the command name in parentheses.
            let exited = state
                .rsplit_once(')')
                .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
            if exited {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Pods {
    /// Kills the infra process (the PID namespace, and anything still in
    /// it, dies with it) and drops the namespace's pin. Idempotent.
    pub(super) fn stop_infra(&self, rec: &PodRecord) {
        let ns_dir = self.ns_dir(&rec.id);
        let infra = rec.infra_pid.or_else(|| {
            std::fs::read_to_string(ns_dir.join("infra.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
        });
        if let Some(pid) = infra {
            self.host.kill_infra(pid);
        }
        self.host.unmount(&ns_dir.join("pid"));
        let _ = std::fs::remove_file(ns_dir.join("pid"));
        let _ = std::fs::remove_file(ns_dir.join("infra.pid"));
    }
}

/// Is `pid` still a berth infra process (and not a reused pid)?
fn is_infra(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("pause-init"))
        .unwrap_or(false)
}
