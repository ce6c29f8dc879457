//! Golden tests: the whole `config.json` berthd writes for the kubelet's
//! typical containers, compared with `testdata/*.json`.
//!
//! Paths that differ per run (the temporary rootfs and host directories)
//! are written as `/ROOTFS` and `/HOST`; a privileged container's host
//! devices and its capabilities (berthd's own bounding set), which depend
//! on the machine, as placeholder strings; the cgroup namespace a cgroup v2
//! host adds is checked and left out. The seccomp architectures are this
//! machine's (the files were written on x86_64).
//! Capability sets are sorted (oci-spec holds them in a `HashSet`).
//! `BERTH_UPDATE_GOLDEN=1 cargo test -p berthd golden` rewrites the files.

use std::path::Path;

use cri_api::v1::{
    Capability, ContainerConfig, Device, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, Mount, NamespaceOption,
    SecurityProfile,
};
use serde_json::Value;

use super::capabilities::own_capabilities;
use super::tests::{canonical, rootfs, tmpdir};
use super::{ImageDefaults, PodContext, build};

/// A pod with its own network, IPC, UTS and PID namespaces (pinned files).
fn pod() -> PodContext {
    PodContext {
        net_ns: Some("/run/berth/netns/p1".into()),
        ipc_ns: Some("/run/berth/ipcns/p1".into()),
        uts_ns: Some("/run/berth/utsns/p1".into()),
        pid_ns: Some("/run/berth/pidns/p1".into()),
        hostname_file: "/var/lib/berth/pods/p1/hostname".into(),
        hosts_file: "/var/lib/berth/pods/p1/hosts".into(),
        resolv_file: "/var/lib/berth/pods/p1/resolv.conf".into(),
        shm_dir: Some("/run/berth/shm/p1".into()),
        hostname: "web-0".into(),
        cgroup_parent: "/kubepods/besteffort/podp1".into(),
        systemd_cgroup: false,
        rlimits: vec![("RLIMIT_NOFILE".into(), 1_048_576, 1_048_576)],
        ..Default::default()
    }
}

fn image() -> ImageDefaults {
    ImageDefaults {
        entrypoint: vec!["/docker-entrypoint.sh".into()],
        cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "NGINX_VERSION=1.27".into(),
        ],
        user: String::new(),
        working_dir: String::new(),
    }
}

fn linux(sc: LinuxContainerSecurityContext) -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    })
}

/// The kubelet's security context for a container without one in its pod
/// spec: POD IPC/network, CONTAINER PID.
fn kubelet_sc() -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds the spec, renders it pretty, and compares it with (or with
/// BERTH_UPDATE_GOLDEN set, writes) `testdata/<name>.json`.
fn check(name: &str, id: &str, c: &ContainerConfig, pod: &PodContext, host: Option<&Path>) {
    let r = rootfs();
    let spec = build(id, c, &image(), pod, &r.0).unwrap();
    let mut v: Value = canonical(&spec);
    if pod.privileged {
        if let Some(devs) = v.pointer_mut("/linux/devices") {
            assert!(devs.as_array().is_some_and(|d| !d.is_empty()));
            *devs = Value::String("<host devices>".into());
        }
        let mut own = own_capabilities();
        own.sort();
        for set in ["bounding", "effective", "permitted"] {
            let caps = v
                .pointer_mut(&format!("/process/capabilities/{set}"))
                .unwrap();
            assert_eq!(*caps, serde_json::json!(own), "{set}");
            *caps = Value::String("<berthd's bounding set>".into());
        }
    }
    // Only on a cgroup v2 host, the container's own cgroup namespace.
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let ns = v.pointer_mut("/linux/namespaces").unwrap();
        let last = ns.as_array_mut().and_then(Vec::pop);
        assert_eq!(last, Some(serde_json::json!({ "type": "cgroup" })));
    }
    let mut text = serde_json::to_string_pretty(&v).unwrap();
    text = text.replace(&*r.0.to_string_lossy(), "/ROOTFS");
    if let Some(h) = host {
        let h = std::fs::canonicalize(h).unwrap();
        text = text.replace(&*h.to_string_lossy(), "/HOST");
    }
    text.push('\n');
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/spec/testdata")
        .join(format!("{name}.json"));
    if std::env::var_os("BERTH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (BERTH_UPDATE_GOLDEN=1 writes it)", file.display()));
    assert!(
        want == text,
        "{name}: the generated spec differs from {}:\n{text}",
        file.display()
    );
}

#[test]
fn golden_plain_container_in_a_default_pod() {
    let c = ContainerConfig {
        linux: linux(kubelet_sc()),
        ..Default::default()
    };
    check("plain", "c-plain", &c, &pod(), None);
}

#[test]
fn golden_restricted_container_with_resources() {
    let sc = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: vec!["NET_BIND_SERVICE".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        }),
        run_as_user: Some(Int64Value { value: 1000 }),
        run_as_group: Some(Int64Value { value: 1000 }),
        supplemental_groups: vec![2000],
        readonly_rootfs: true,
        no_new_privs: true,
        seccomp: Some(SecurityProfile {
            profile_type: 0,
            ..Default::default()
        }),
        masked_paths: vec!["/proc/kcore".into(), "/proc/keys".into()],
        readonly_paths: vec!["/proc/sys".into(), "/proc/bus".into()],
        ..kubelet_sc()
    };
    let c = ContainerConfig {
        command: vec!["/app".into()],
        args: vec!["--port=8080".into()],
        working_dir: "/srv".into(),
        envs: vec![KeyValue {
            key: "MODE".into(),
            value: b"prod".to_vec(),
        }],
        linux: Some(LinuxContainerConfig {
            security_context: Some(sc),
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 256 << 20,
                oom_score_adj: 936,
                cpuset_cpus: "0".into(),
                unified: [("memory.high".to_string(), "200000000".to_string())].into(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let mut p = pod();
    p.sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
    check("restricted", "c-restricted", &c, &p, None);
}

#[test]
fn golden_privileged_container() {
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        ..kubelet_sc()
    };
    let c = ContainerConfig {
        tty: true,
        stdin: true,
        linux: linux(sc),
        ..Default::default()
    };
    let mut p = pod();
    p.privileged = true;
    check("privileged", "c-priv", &c, &p, None);
}

#[test]
fn golden_host_network_pid_ipc() {
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: 2,
            pid: 2,
            ipc: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = ContainerConfig {
        linux: linux(sc),
        ..Default::default()
    };
    let p = PodContext {
        net_ns: None,
        ipc_ns: None,
        uts_ns: None,
        pid_ns: None,
        shm_dir: None,
        hostname: "node-1".into(),
        ..pod()
    };
    check("host-namespaces", "c-host", &c, &p, None);
}

#[test]
fn golden_mounts_and_devices() {
    let h = tmpdir("host");
    for d in ["config", "cache", "shared", "etc-hosts-dir"] {
        std::fs::create_dir(h.0.join(d)).unwrap();
    }
    let bind = |container: &str, host: &str, readonly: bool, propagation: i32| Mount {
        container_path: container.into(),
        host_path: h.0.join(host).to_string_lossy().into_owned(),
        readonly,
        propagation,
        ..Default::default()
    };
    let c = ContainerConfig {
        mounts: vec![
            bind("/etc/config", "config", true, 0),
            bind("/var/cache/app", "cache", false, 1),
            bind("/mnt/shared", "shared", false, 2),
            Mount {
                recursive_read_only: true,
                ..bind("/data/ro", "config", true, 0)
            },
        ],
        devices: vec![Device {
            container_path: "/dev/xnull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        }],
        linux: linux(kubelet_sc()),
        ..Default::default()
    };
    check("mounts-devices", "c-mounts", &c, &pod(), Some(&h.0));
}

#[test]
fn golden_user_namespaced_pod() {
    let maps = crate::pod::IdMaps {
        uid: crate::pod::IdRange {
            container: 0,
            host: 65536,
            len: 65536,
        },
        gid: crate::pod::IdRange {
            container: 0,
            host: 65536,
            len: 65536,
        },
    };
    let p = PodContext {
        user_ns: Some(("/run/berth/userns/p1".into(), maps)),
        ..pod()
    };
    let sc = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        }),
        run_as_username: "app".into(),
        ..kubelet_sc()
    };
    let c = ContainerConfig {
        linux: linux(sc),
        ..Default::default()
    };
    check("userns", "c-userns", &c, &p, None);
}
