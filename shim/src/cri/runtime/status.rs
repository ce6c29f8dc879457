//! CRI `Status`: RuntimeReady and NetworkReady, each computed from what is
//! on the node at the time of the call.

use std::collections::HashMap;
use std::path::Path;

use cri_api::v1::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusRequest, StatusResponse,
};

use crate::cni;
use crate::config::DEFAULT_HANDLER;
use crate::daemon::Daemon;

const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

pub fn status(daemon: &Daemon, req: StatusRequest) -> StatusResponse {
    let config = &daemon.config;
    let cgroups = cgroup_mode(Path::new("/sys/fs/cgroup"));
    let pump = crate::monitor::path(crate::monitor::PUMP);
    let runtime = runtime_condition(
        cgroups,
        &config.state,
        &[daemon.containers.monitor(), &pump],
    );
    let network = cni::load(&config.cni.conf_dir, &config.cni.bin_dirs);
    let network_condition = match &network {
        Ok(_) => condition(NETWORK_READY, Ok(())),
        Err(e) => condition(NETWORK_READY, Err(("NetworkPluginNotReady", e.to_string()))),
    };

    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "config".to_string(),
            serde_json::to_string(config).unwrap_or_else(|e| format!("\"{e}\"")),
        );
        info.insert(
            "cgroups".to_string(),
            serde_json::Value::from(cgroups.unwrap_or("none")).to_string(),
        );
        let driver = match config.cgroup_driver {
            crate::config::CgroupDriver::Cgroupfs | crate::config::CgroupDriver::Auto => "cgroupfs",
            crate::config::CgroupDriver::Systemd => "systemd",
        };
        info.insert(
            "cgroupDriver".to_string(),
            serde_json::Value::from(driver).to_string(),
        );
        let aa = crate::apparmor::node();
        info.insert(
            "apparmor".to_string(),
            serde_json::json!({
                "enabled": aa.enabled,
                "kernel": aa.kernel,
                "parser": aa.parser,
                "defaultProfile": crate::apparmor::DEFAULT_PROFILE,
                "defaultLoaded": aa.enabled
                    && crate::apparmor::loaded(crate::apparmor::DEFAULT_PROFILE).unwrap_or(false),
            })
            .to_string(),
        );
        let cni = match &network {
            Ok(n) => serde_json::json!({
                "file": n.file, "network": n.name, "plugins": n.plugins,
            }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        info.insert("cni".to_string(), cni.to_string());
    }

    // "" is the kubelet's name for the default handler.
    // Handlers that can run pods: the built-in one, and external OCI
    // runtimes whose binary is installed.
    let handlers = std::iter::once("")
        .chain(
            config
                .runtimes
                .iter()
                .filter(|(_, h)| match h {
                    crate::config::RuntimeHandler::Builtin => true,
                    // An external runtime only when it is installed.
                    crate::config::RuntimeHandler::Oci { path } => path.is_file(),
                })
                .map(|(name, _)| name.as_str()),
        )
        .map(|name| RuntimeHandler {
            name: name.to_string(),
            features: Some(RuntimeHandlerFeatures {
                // "rro" bind options: mount_setattr with AT_RECURSIVE
                // (libcontainer), which needs Linux 5.12; not claimed for
                // external runtimes (runc before 1.2 lacks it).
                recursive_read_only_mounts: kernel_at_least(5, 12)
                    && matches!(
                        config.runtimes.get(name),
                        None | Some(crate::config::RuntimeHandler::Builtin)
                    ),
                // berth makes the pod's user namespace and idmaps its
                // layers itself (overlayfs over idmapped layers: Linux
                // 5.19); a handler only joins it, which runc and crun do.
                user_namespaces: kernel_at_least(5, 19),
            }),
        })
        .collect();
    debug_assert!(config.runtimes.contains_key(DEFAULT_HANDLER));

    StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime, network_condition],
        }),
        info,
        runtime_handlers: handlers,
        features: Some(RuntimeFeatures {
            // Strict is honoured (spec.rs: process_user).
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
        }),
    }
}

/// `helpers`: the binaries berthd runs (berth-monitor, berth-pump).
fn runtime_condition(cgroups: Option<&str>, state: &Path, helpers: &[&Path]) -> RuntimeCondition {
    let missing = helpers.iter().find(|h| !h.is_file());
    let verdict = if cgroups.is_none() {
        Err((
            "CgroupsUnavailable",
            "no cgroup v1 or v2 hierarchy is mounted at /sys/fs/cgroup".to_string(),
        ))
    } else if !state.is_dir() {
        Err((
            "StateDirMissing",
            format!("state directory {} is gone", state.display()),
        ))
    } else if let Some(m) = missing {
        Err((
            "MonitorMissing",
            format!(
                "{} is missing: install berth-monitor and berth-pump next to berthd",
                m.display()
            ),
        ))
    } else {
        Ok(())
    };
    condition(RUNTIME_READY, verdict)
}

fn condition(kind: &str, verdict: Result<(), (&str, String)>) -> RuntimeCondition {
    match verdict {
        Ok(()) => RuntimeCondition {
            r#type: kind.to_string(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err((reason, message)) => RuntimeCondition {
            r#type: kind.to_string(),
            status: false,
            reason: reason.to_string(),
            message,
        },
    }
}

/// `v2` for a unified hierarchy, `v1` for legacy or hybrid, None for none.
fn cgroup_mode(root: &Path) -> Option<&'static str> {
    if root.join("cgroup.controllers").is_file() {
        Some("v2")
    } else if root.join("memory").is_dir() && root.join("cpu").is_dir() {
        Some("v1")
    } else {
        None
    }
}

/// Is the running kernel at least `major.minor`?
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mode_by_layout() {
        let top = std::env::temp_dir().join(format!("berth-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir_all(top.join("memory")).unwrap();
        assert_eq!(cgroup_mode(&top), None);
        std::fs::create_dir_all(top.join("cpu")).unwrap();
        assert_eq!(cgroup_mode(&top), Some("v1"));
        std::fs::write(top.join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(cgroup_mode(&top), Some("v2"));
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn missing_cgroups_is_reported_first() {
        let sh: &[&Path] = &[Path::new("/bin/sh"), Path::new("/bin/true")];
        let c = runtime_condition(None, Path::new("/"), sh);
        assert!(!c.status);
        assert_eq!(c.reason, "CgroupsUnavailable");
        let c = runtime_condition(Some("v1"), Path::new("/nonexistent/berth"), sh);
        assert_eq!(c.reason, "StateDirMissing");
        let c = runtime_condition(
            Some("v1"),
            Path::new("/"),
            &[Path::new("/bin/sh"), Path::new("/nonexistent/p")],
        );
        assert_eq!(c.reason, "MonitorMissing");
        assert!(c.message.contains("/nonexistent/p"), "{}", c.message);
        assert!(runtime_condition(Some("v1"), Path::new("/"), sh).status);
    }
}
