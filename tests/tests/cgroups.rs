//! cgroup drivers and hierarchies: what only makes sense on cgroup v2, or
//! under the systemd driver. They run in the VM lane's guest (systemd as
//! PID 1, cgroup v2: `tests/vm/lane.sh`) with `BERTH_TEST_CGROUP_DRIVER`
//! set to each driver; elsewhere each says SKIPPED and why.

use std::process::Command;

use berth_tests::cgroup;
use berth_tests::setup::{busybox_config, setup, setup_with};
use berth_tests::{Berthd, Options};
use cri_api::v1::*;
use tonic::Code;

/// `systemctl show UNIT -p PROP --value`.
fn systemd_property(unit: &str, prop: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", unit, "-p", prop, "--value"])
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The loaded units whose names start with `berth-` in `slice`, by
/// `systemctl status` (what an operator looks at).
fn scopes_in(slice: &str) -> Vec<String> {
    let out = Command::new("systemctl")
        .args(["status", "--no-pager", "--lines=0", slice])
        .output()
        .expect("systemctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut scopes: Vec<String> = text
        .split(|c: char| c.is_whitespace() || "─├└│".contains(c))
        .filter(|w| w.starts_with("berth-") && w.ends_with(".scope"))
        .map(String::from)
        .collect();
    scopes.dedup();
    scopes
}

/// The cgroup driver berthd tells the kubelet (RuntimeConfig).
async fn reported_driver(b: &Berthd) -> i32 {
    let r = b
        .runtime()
        .await
        .runtime_config(RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    r.linux.expect("linux").cgroup_driver
}

fn skip_unless_systemd_driver() -> bool {
    if !cgroup::systemd() {
        eprintln!(
            "SKIPPED: needs the systemd cgroup driver (the VM lane runs it with \
             BERTH_TEST_CGROUP_DRIVER=systemd on a systemd node)"
        );
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_container_is_a_delegated_scope_in_the_pods_slice_and_goes_with_it() {
    if skip_unless_systemd_driver() {
        return;
    }
    let mut s = setup(busybox_config()).await;
    let slice = s.cgroup_parent();
    let a = s.run(s.config("a", &["sleep", "3600"])).await;
    let b = s.run(s.config("b", &["sleep", "3600"])).await;
    for id in [&a, &b] {
        let unit = format!("berth-{id}.scope");
        assert_eq!(systemd_property(&unit, "ActiveState"), "active", "{unit}");
        assert_eq!(systemd_property(&unit, "Slice"), slice, "{unit}");
        assert_eq!(systemd_property(&unit, "Delegate"), "yes", "{unit}");
        assert!(cgroup::container_dir(&slice, id, "").is_dir(), "{unit}");
    }
    let mut want = vec![format!("berth-{a}.scope"), format!("berth-{b}.scope")];
    want.sort();
    let mut seen = scopes_in(&slice);
    seen.sort();
    assert_eq!(seen, want, "systemctl status {slice}");

    // systemd re-executing itself keeps the scopes and their processes.
    let st = Command::new("systemctl")
        .arg("daemon-reexec")
        .status()
        .expect("reexec");
    assert!(st.success());
    for id in [&a, &b] {
        assert_eq!(
            s.status(id).await.state,
            ContainerState::ContainerRunning as i32
        );
        assert_eq!(
            systemd_property(&format!("berth-{id}.scope"), "ActiveState"),
            "active"
        );
    }
    // So does a berthd crash and restart.
    s.b.stop_with(nix::sys::signal::Signal::SIGKILL);
    s.b.restart().await;
    s.c = s.b.runtime().await;
    assert_eq!(
        s.status(&a).await.state,
        ContainerState::ContainerRunning as i32
    );

    // New limits reach the scope's properties as well as its files, so a
    // daemon-reload keeps them.
    s.c.update_container_resources(UpdateContainerResourcesRequest {
        container_id: a.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update");
    let unit = format!("berth-{a}.scope");
    assert_eq!(
        systemd_property(&unit, "MemoryMax"),
        (96u64 << 20).to_string()
    );
    let st = Command::new("systemctl")
        .arg("daemon-reload")
        .status()
        .expect("reload");
    assert!(st.success());
    let max = cgroup::container_dir(&slice, &a, "").join("memory.max");
    let max = std::fs::read_to_string(max).expect("memory.max");
    assert_eq!(max.trim(), (96u64 << 20).to_string());

    // The scopes go with their containers; remove_all checks the slice's
    // cgroup is gone too.
    s.remove_all().await;
    assert!(scopes_in(&slice).is_empty(), "{:?}", scopes_in(&slice));
    for id in [&a, &b] {
        let state = systemd_property(&format!("berth-{id}.scope"), "ActiveState");
        assert_eq!(state, "inactive", "berth-{id}.scope");
    }
}

/// The kubelet sends a parent in its own driver's form: one that does not
/// match berth's driver means the two disagree, and the pod is refused
/// with the fix rather than placed where the kubelet does not look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_in_the_other_drivers_form_is_refused_with_the_fix() {
    let b = Berthd::start_with(Options::default()).await;
    let mut c = b.runtime().await;
    let wrong = if cgroup::systemd() {
        "/kubepods/besteffort/pod1"
    } else {
        "kubepods-besteffort-pod1.slice"
    };
    let e = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "p".into(),
                    uid: "u".into(),
                    namespace: "n".into(),
                    attempt: 0,
                }),
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent: wrong.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("wrong driver's parent");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("cgroupDriver"), "{e:?}");
    let pods = c
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
}

/// RuntimeConfig and Status report the driver in use and the hierarchy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_and_hierarchy_in_use_are_reported() {
    let b = Berthd::start_with(Options::default()).await;
    let mut c = b.runtime().await;
    let want = if cgroup::systemd() {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    assert_eq!(reported_driver(&b).await, want as i32);
    let info = c
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner()
        .info;
    let hierarchy = if cgroup::v2() { "\"v2\"" } else { "\"v1\"" };
    assert_eq!(info.get("cgroups").map(String::as_str), Some(hierarchy));
    let driver = if cgroup::systemd() {
        "\"systemd\""
    } else {
        "\"cgroupfs\""
    };
    assert_eq!(info.get("cgroupDriver").map(String::as_str), Some(driver));
}

/// `auto` (the default) is the node's driver: systemd where systemd is PID
/// 1 on cgroup v2, as kubeadm sets the kubelet there; cgroupfs elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_driver_follows_the_node() {
    let b = Berthd::start_with(Options {
        config: "cgroup_driver = \"auto\"\n".into(),
        ..Default::default()
    })
    .await;
    let systemd_node = std::path::Path::new("/run/systemd/system").is_dir() && cgroup::v2();
    let want = if systemd_node {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    assert_eq!(reported_driver(&b).await, want as i32);
}

/// Where systemd is not PID 1, the systemd driver is refused at start with
/// the fix, not reported to the kubelet and then failed on every pod.
#[test]
fn the_systemd_driver_without_systemd_is_refused_at_start() {
    if std::path::Path::new("/run/systemd/system").is_dir() {
        eprintln!("SKIPPED: systemd is PID 1 here, so the systemd driver is honoured");
        return;
    }
    let dir = berth_tests::TempDir::new("nosystemd");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "cgroup_driver = \"systemd\"\n").expect("config");
    let out = Command::new(berth_tests::berthd_binary())
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()
        .expect("berthd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PID 1") && err.contains("cgroupfs"), "{err}");
}

/// On v2, stats carry pressure stall information for CPU, memory and I/O,
/// and the cAdvisor metrics the bytes a container wrote and its pressure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_stats_carry_pressure_and_the_bytes_written() {
    if !cgroup::v2() {
        eprintln!("SKIPPED: pressure files and io.stat are cgroup v2's (the VM lane runs it)");
        return;
    }
    let mut s = setup(busybox_config()).await;
    let id = s
        .run(s.config(
            "writer",
            &[
                "/bin/sh",
                "-c",
                "dd if=/dev/zero of=/data bs=1M count=8 conv=fsync 2>/dev/null && echo wrote; \
                 sleep 3600",
            ],
        ))
        .await;
    s.wait_log("writer", "wrote").await;
    let stats =
        s.c.container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let cpu_psi = stats.cpu.and_then(|c| c.psi).expect("cpu psi");
    assert!(cpu_psi.some.is_some(), "{cpu_psi:?}");
    assert!(stats.memory.and_then(|m| m.psi).is_some(), "memory psi");
    let io_psi = stats.io.and_then(|i| i.psi).expect("io psi");
    assert!(io_psi.some.is_some() && io_psi.full.is_some(), "{io_psi:?}");

    let metrics =
        s.c.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await
            .expect("metrics")
            .into_inner()
            .pod_metrics;
    let cm = metrics
        .iter()
        .flat_map(|p| &p.container_metrics)
        .find(|c| c.container_id == id)
        .expect("container metrics");
    let value = |name: &str| {
        cm.metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.value.as_ref())
            .map(|v| v.value)
    };
    let written = value("container_fs_writes_bytes_total").expect("writes metric");
    assert!(written >= 8 << 20, "wrote 8 MiB, io.stat says {written}");
    for name in [
        "container_pressure_cpu_waiting_seconds_total",
        "container_pressure_memory_stalled_seconds_total",
        "container_pressure_io_waiting_seconds_total",
    ] {
        assert!(value(name).is_some(), "{name}");
    }
    s.remove_all().await;
}

/// A pod that shares one PID namespace has an infra process (PID 1 of the
/// namespace): it runs in a cgroup of the pod's, not berthd's, under
/// either driver, and goes with the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_pid_pods_infra_process_is_in_the_pods_cgroup() {
    let mut s = setup_with(busybox_config(), |p| {
        p.linux.get_or_insert_default().security_context = Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    })
    .await;
    let parent = s.cgroup_parent();
    let infra = std::fs::read_to_string(s.b.state.join("ns").join(&s.pod).join("infra.pid"))
        .expect("infra pid");
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", infra.trim())).expect("cgroup");
    let leaf = if cgroup::systemd() {
        format!("berth-pod-{}.scope", s.pod)
    } else {
        format!("berth-pod-{}", s.pod)
    };
    let want = format!("/{}/{leaf}", cgroup::rel(&parent).display());
    // v2: the one line; v1: every controller's line (checked on memory's).
    let line = cgroup
        .lines()
        .find(|l| l.starts_with("0::") || l.contains(":memory:"))
        .expect("cgroup line");
    assert!(line.ends_with(&want), "{line} (want {want})");
    if cgroup::systemd() {
        assert_eq!(systemd_property(&leaf, "ActiveState"), "active");
    }
    // A container joins the namespace; everything goes with the pod
    // (remove_all checks the pod's cgroups are gone).
    let mut cfg = s.config("c", &["sleep", "3600"]);
    cfg.linux.get_or_insert_default().security_context = Some(LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    s.run(cfg).await;
    s.remove_all().await;
    if cgroup::systemd() {
        assert_ne!(systemd_property(&leaf, "ActiveState"), "active");
    }
}

/// berthd as an operator runs it on a systemd node: under
/// `manifests/berthd.service` (Type=notify, KillMode=process, Delegate=yes).
/// `systemctl start` returns once berthd said READY=1, and a restart of the
/// unit leaves the containers running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berthd_runs_under_its_systemd_unit_and_a_restart_keeps_containers() {
    if !std::path::Path::new("/run/systemd/system").is_dir() {
        eprintln!("SKIPPED: systemd is not PID 1 here (the VM lane runs it)");
        return;
    }
    let mut s = setup(busybox_config()).await;
    // The same berthd (config, socket, root, state), now as the unit.
    s.b.stop_with(nix::sys::signal::Signal::SIGTERM);
    let cmd = s.b.command(&[]);
    let exec = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let unit = format!("berthd-test-{}.service", std::process::id());
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/berthd.service"
    ))
    .expect("unit");
    let text = template.replace(
        "ExecStart=/usr/local/bin/berthd",
        &format!("ExecStart={exec}"),
    );
    assert_ne!(text, template, "the unit's ExecStart line");
    let path = std::path::Path::new("/run/systemd/system").join(&unit);
    std::fs::write(&path, text).expect("write unit");
    let systemctl = |args: &[&str]| {
        let st = Command::new("systemctl")
            .args(args)
            .status()
            .expect("systemctl");
        assert!(st.success(), "systemctl {args:?}");
    };
    systemctl(&["daemon-reload"]);
    systemctl(&["start", &unit]);
    assert_eq!(systemd_property(&unit, "ActiveState"), "active");
    s.c = berth_tests::setup::Client::new(berth_tests::connect(&s.b.socket).await.expect("socket"));
    let id = s.run(s.config("c", &["sleep", "3600"])).await;

    systemctl(&["restart", &unit]);
    s.c = berth_tests::setup::Client::new(berth_tests::connect(&s.b.socket).await.expect("socket"));
    assert_eq!(
        s.status(&id).await.state,
        ContainerState::ContainerRunning as i32
    );

    systemctl(&["stop", &unit]);
    std::fs::remove_file(&path).expect("remove unit");
    systemctl(&["daemon-reload"]);
    s.b.restart().await;
    s.c = s.b.runtime().await;
    s.remove_all().await;
}
