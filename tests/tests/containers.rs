//! Containers through the CRI with a real berthd as root: busybox images
//! from a real registry, run by berth-monitor with youki's libcontainer.

use std::time::Duration;

use berth_tests::fixtures::{self, Compression, ImageConfig, ManifestKind, Platform};
use berth_tests::mounts_under;
use berth_tests::setup::{busybox_config, setup, setup_opts, setup_with};
use cri_api::v1::*;
use nix::sys::signal::Signal;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_logs_and_exits() {
    let mut s = setup(busybox_config()).await;
    let id = s
        .create(s.config(
            "app",
            &[
                "/bin/sh",
                "-c",
                "echo hello; echo oops >&2; hostname; exit 3",
            ],
        ))
        .await
        .expect("create");
    let st = s.status(&id).await;
    assert_eq!(st.state, ContainerState::ContainerCreated as i32);
    assert_eq!(st.image.as_ref().expect("image").image, s.image);
    assert!(st.image_id.starts_with("sha256:"));
    assert_eq!(st.image_ref, st.image_id);

    s.c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start");
    let st = s.wait_exited(&id).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(st.reason, "Error");
    assert!(st.started_at >= st.created_at && st.finished_at >= st.started_at);

    // The CRI log: every line tagged with its stream, in full.
    let log = s.log("app");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F hello")),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.ends_with(" stderr F oops")), "{log}");
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F podhost")),
        "{log}"
    );
    for l in &lines {
        let ts = l.split(' ').next().expect("timestamp");
        assert!(ts.ends_with('Z') && ts.len() == 30, "{l}");
    }

    // Listed, filtered, then removed with nothing left.
    let list =
        s.c.list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerExited as i32,
                }),
                pod_sandbox_id: s.pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("list")
        .into_inner()
        .containers;
    assert_eq!(list.len(), 1);
    s.c.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("remove");
    assert_gone(&mut s, id).await;
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let mut s = setup(busybox_config()).await;
    // sleep as pid 1 ignores SIGTERM: only SIGKILL ends it.
    let stubborn = s.run(s.config("stubborn", &["/bin/sleep", "1000"])).await;
    // A shell that handles SIGTERM exits with its own code.
    let polite = s
        .run(s.config(
            "polite",
            &[
                "/bin/sh",
                "-c",
                "trap 'exit 42' TERM; echo trapped; while true; do sleep 0.1; done",
            ],
        ))
        .await;
    // SIGTERM before the trap is set would kill it with 143, not 42.
    s.wait_log("polite", "trapped").await;
    assert_eq!(
        s.status(&polite).await.state,
        ContainerState::ContainerRunning as i32
    );
    s.c.stop_container(StopContainerRequest {
        container_id: polite.clone(),
        timeout: 30,
    })
    .await
    .expect("stop polite");
    assert_eq!(s.status(&polite).await.exit_code, 42);

    s.c.stop_container(StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 1,
    })
    .await
    .expect("stop stubborn");
    let st = s.status(&stubborn).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137, "killed by SIGKILL");
    // Stop is idempotent.
    s.c.stop_container(StopContainerRequest {
        container_id: stubborn,
        timeout: 1,
    })
    .await
    .expect("stop again");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_config_applies_as_docker_does() {
    let image = ImageConfig::for_platform(&Platform::linux_amd64())
        .entrypoint(["/bin/sh", "-c"])
        .cmd(["echo $GREETING $WHO from $(pwd) as $(id -u):$(id -g)"])
        .set_env(["PATH=/bin", "GREETING=hello", "WHO=image"])
        .working_dir("/home/app")
        .user("app");
    let mut s = setup(image).await;
    let mut cfg = s.config("env", &[]);
    cfg.envs = vec![KeyValue {
        key: "WHO".into(),
        value: "cri".into(),
    }];
    let id = s.run(cfg).await;
    let st = s.wait_exited(&id).await;
    assert_eq!(st.exit_code, 0, "{}", s.log("env"));
    assert!(
        s.log("env")
            .contains(" stdout F hello cri from /home/app as 1000:1000"),
        "{}",
        s.log("env")
    );
    // The kubelet asks -997 for Guaranteed pods: never below berthd's own.
    let mut cfg = s.config("oom", &["/bin/sh", "-c", "cat /proc/self/oom_score_adj"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            oom_score_adj: -997,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = s.run(cfg).await;
    let st = s.wait_exited(&id).await;
    assert_eq!(st.exit_code, 0, "{}", s.log("oom"));
    let own: i64 = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", s.b.pid()))
        .expect("berthd's oom_score_adj")
        .trim()
        .parse()
        .expect("number");
    let got: i64 = s
        .log("oom")
        .lines()
        .find_map(|l| l.split(" stdout F ").nth(1))
        .expect("a line")
        .trim()
        .parse()
        .expect("number");
    assert!(got >= own, "{got} < berthd's {own}");

    // A working dir missing from the image is created.
    let mut cfg = s.config("cwd", &["/bin/sh", "-c", "pwd"]);
    cfg.working_dir = "/srv/new/dir".into();
    let id = s.run(cfg).await;
    let st = s.wait_exited(&id).await;
    assert_eq!(st.exit_code, 0, "{}", s.log("cwd"));
    assert!(
        s.log("cwd").contains(" stdout F /srv/new/dir"),
        "{}",
        s.log("cwd")
    );

    // The CRI's user wins over the image's.
    let mut cfg = s.config("root", &["/bin/sh", "-c", "id -u"]);
    cfg.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = s.run(cfg).await;
    s.wait_exited(&id).await;
    assert!(s.log("root").contains(" stdout F 0"), "{}", s.log("root"));
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_and_bad_input_leaves_nothing() {
    let mut s = setup(busybox_config()).await;
    let first = s
        .create(s.config("same", &["/bin/true"]))
        .await
        .expect("first");
    // The same call again (the kubelet retrying after its deadline): the
    // container the first one made, not a second.
    let again = s
        .create(s.config("same", &["/bin/true"]))
        .await
        .expect("retry");
    assert_eq!(again, first);
    // Another container under the same name and attempt is refused.
    let e = s
        .create(s.config("same", &["/bin/false"]))
        .await
        .expect_err("clash");
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert!(e.message().contains(&first), "{}", e.message());

    let mut missing = s.config("missing-image", &["/bin/true"]);
    missing.image = Some(ImageSpec {
        image: "registry.invalid/none:1".into(),
        ..Default::default()
    });
    let e = s.create(missing).await.expect_err("no such image");
    assert_eq!(e.code(), Code::NotFound, "{e}");

    let e = s
        .create(s.config("nocmd", &["/no/such/binary"]))
        .await
        .expect_err("bad executable");
    assert!(e.message().contains("/no/such/binary"), "{}", e.message());
    // Only the first container has anything on the node.
    let left: Vec<String> = std::fs::read_dir(s.b.state.join("containers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(left, [first.as_str()]);
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_a_berthd_crash() {
    let mut s = setup(busybox_config()).await;
    let running = s.run(s.config("running", &["/bin/sleep", "1000"])).await;
    let finishing = s
        .run(s.config(
            "finishing",
            &["/bin/sh", "-c", "read x < /dev/null; sleep 1; exit 7"],
        ))
        .await;
    s.b.stop_with(Signal::SIGKILL);
    // While berthd is down, one of them exits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.b.restart().await;
    s.c = s.b.runtime().await;
    assert_eq!(
        s.status(&running).await.state,
        ContainerState::ContainerRunning as i32
    );
    let st = s.wait_exited(&finishing).await;
    assert_eq!(st.exit_code, 7);

    // The restarted berthd watches the container it found running: its
    // end, by no CRI call, is a STOPPED event.
    let mut events =
        s.c.get_container_events(GetEventsRequest {})
            .await
            .expect("events")
            .into_inner();
    let pid: i32 = std::fs::read_to_string(s.b.state.join("containers").join(&running).join("pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    let e = tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .expect("an event within 20s")
        .expect("stream")
        .expect("open");
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (
            running.as_str(),
            ContainerEventType::ContainerStoppedEvent as i32
        )
    );
    let st = s.wait_exited(&running).await;
    assert_eq!(st.exit_code, 137);
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_containers_share_its_network_and_long_lines_are_split() {
    let mut s = setup(busybox_config()).await;
    // One serves on the pod's loopback, the other reaches it on localhost.
    let server = s
        .run(s.config(
            "server",
            &["/bin/sh", "-c", "echo hi-from-server | nc -l -p 8080"],
        ))
        .await;
    let client = s
        .run(s.config(
            "client",
            &[
                "/bin/sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 8080 </dev/null && exit 0; sleep 0.2; done; exit 1",
            ],
        ))
        .await;
    let st = s.wait_exited(&client).await;
    assert_eq!(st.exit_code, 0, "{}", s.log("client"));
    assert!(
        s.log("client").contains(" stdout F hi-from-server"),
        "{}",
        s.log("client")
    );
    s.wait_exited(&server).await;

    // A 20000-byte line: one 16 KiB partial entry, then the rest in full.
    let long = s
        .run(s.config(
            "long",
            &[
                "/bin/sh",
                "-c",
                "head -c 20000 /dev/zero | tr '\\0' x; echo; echo after",
            ],
        ))
        .await;
    s.wait_exited(&long).await;
    let log = s.log("long");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{}", &log[..log.len().min(300)]);
    assert!(lines[0].contains(" stdout P ") && lines[0].ends_with(&"x".repeat(16 * 1024)));
    assert!(lines[1].contains(" stdout F ") && lines[1].ends_with(&"x".repeat(20000 - 16 * 1024)));
    assert!(lines[2].ends_with(" stdout F after"));
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_mounts_aside_reaches_nothing_of_a_node_whose_mounts_are_shared() {
    // systemd makes every mount shared: a monitor's copy of the mount
    // under berthd's tree is then a peer of the node's, and what the
    // monitor detaches or puts back there must not reach the node.
    // Its state named through a symbolic link, as `/var/run/berth` would
    // be: the table has the real path.
    let opts = berth_tests::Options {
        shared_state: true,
        state_link: true,
        ..Default::default()
    };
    let mut s = setup_opts(opts, "", busybox_config(), |_| {}).await;
    let real = std::fs::canonicalize(&s.b.state).expect("state");
    assert_ne!(real, s.b.state);
    let id = s
        .run(s.config(
            "app",
            &[
                "/bin/sh",
                "-c",
                "grep ' /etc/resolv.conf ' /proc/self/mountinfo; hostname; exec sleep 60",
            ],
        ))
        .await;
    s.wait_log("app", " stdout F podhost").await;
    // The container's binds of the pod's files are private, as the node's
    // tree makes them, not slaves of the shared mount under it (CRIU
    // could not restore that sharing).
    let log = s.log("app");
    let line = log.lines().find(|l| l.contains("resolv.conf")).expect(&log);
    assert!(!line.contains("master:"), "{line}");
    let rootfs = real.join("containers").join(&id).join("rootfs");
    let seen = mounts_under(&real);
    let rootfs = rootfs.display().to_string();
    assert_eq!(
        seen.iter().filter(|m| **m == rootfs).count(),
        1,
        "the node sees copies of the container's rootfs: {seen:?}"
    );
    // A restarted berthd finds its tree, and binds no second one on it.
    s.b.stop_with(nix::sys::signal::Signal::SIGTERM);
    s.b.restart().await;
    s.c = s.b.runtime().await;
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let at_state = table
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(real.to_str().expect("utf-8")))
        .count();
    assert_eq!(at_state, 1, "{table}");
    let said = monitor_said(&s, &id);
    assert!(!said.contains("not set aside"), "{said}");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_works_from_the_mount_under_berthds_tree() {
    // Volumes on the very mount berthd's tree sits on, which a monitor
    // makes a slave while it sets mounts aside: the node's mounts still
    // reach a HostToContainer volume there, and a Bidirectional one (its
    // container made in the node's namespace) still reaches the node.
    let opts = berth_tests::Options {
        shared_state: true,
        ..Default::default()
    };
    let mut s = setup_opts(opts, "", busybox_config(), |p| {
        p.linux
            .get_or_insert_with(Default::default)
            .security_context = Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        });
    })
    .await;
    let node = s.b.state.parent().expect("the shared mount").to_path_buf();
    let vol = node.join("vol");
    std::fs::create_dir_all(vol.join("later")).expect("vol");
    std::fs::create_dir_all(vol.join("back")).expect("vol");
    let volume = |at: &str, p: MountPropagation| Mount {
        container_path: at.into(),
        host_path: vol.display().to_string(),
        propagation: p as i32,
        ..Default::default()
    };
    let mut watcher = s.config(
        "watcher",
        &[
            "/bin/sh",
            "-c",
            "echo up; for i in $(seq 100); do grep -q ' /mnt/h/later ' /proc/mounts && echo seen && break; sleep 0.1; done; exec sleep 60",
        ],
    );
    watcher.mounts = vec![volume(
        "/mnt/h",
        MountPropagation::PropagationHostToContainer,
    )];
    let w = s.run(watcher).await;
    s.wait_log("watcher", " stdout F up").await;
    let said = monitor_said(&s, &w);
    assert!(!said.contains("not set aside"), "{said}");
    nix::mount::mount(
        Some("tmpfs"),
        &vol.join("later"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("a mount on the node");
    s.wait_log("watcher", " stdout F seen").await;

    let mut maker = s.config(
        "maker",
        &[
            "/bin/sh",
            "-c",
            "mount -t tmpfs none /mnt/b/back && echo made; exec sleep 60",
        ],
    );
    maker.mounts = vec![volume("/mnt/b", MountPropagation::PropagationBidirectional)];
    maker.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let m = s.run(maker).await;
    s.wait_log("maker", " stdout F made").await;
    let back = vol.join("back").display().to_string();
    assert!(
        mounts_under(&vol).contains(&back),
        "the container's mount did not reach the node: {:?}",
        mounts_under(&vol)
    );
    let said = monitor_said(&s, &m);
    assert!(said.contains("shared mount propagation"), "{said}");
    for at in mounts_under(&vol).iter().rev() {
        let _ = nix::mount::umount2(at.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    s.remove_all().await;
}

/// What the container's monitor wrote to its log.
fn monitor_said(s: &berth_tests::setup::Setup, id: &str) -> String {
    let dir = s.b.state.join("containers").join(id);
    std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default()
}

/// The mount namespace of a process, as its link names it.
fn mount_ns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_made_with_the_nodes_pod_mounts_set_aside() {
    let mut s = setup(busybox_config()).await;
    // berthd's state directory is a bind mount of itself: the one mount
    // over every pod's mounts, which each monitor detaches in a mount
    // namespace of its own while it makes its container.
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let state = s.b.state.display().to_string();
    assert!(
        table
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(state.as_str())),
        "{state} is not a mount"
    );
    // What the container needs from the tree was kept: its rootfs, its
    // pod's namespaces (the pod's hostname) and /dev/shm.
    let id = s
        .run(s.config(
            "app",
            &[
                "/bin/sh",
                "-c",
                "hostname; grep -c ' /dev/shm ' /proc/mounts; exec sleep 60",
            ],
        ))
        .await;
    let monitors = berth_tests::monitor_pids(&s.b.state);
    assert_eq!(monitors.len(), 1);
    // Then the monitor went back to the node's namespace (as the pump).
    assert_eq!(mount_ns(&monitors[0].to_string()), mount_ns("self"));
    let said = monitor_said(&s, &id);
    assert!(!said.contains("not set aside"), "{said}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s.log("app").contains(" stdout F 1") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = s.log("app");
    assert!(log.contains(" stdout F podhost"), "{log}");
    assert!(log.contains(" stdout F 1"), "{log}");
    s.remove_all().await;
}

/// An exec's process is made with the other pods' mounts set aside too
/// (libcgroups reads the whole table to join the container's cgroup), and
/// its monitor is back in the node's namespace while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_is_made_with_the_nodes_pod_mounts_set_aside() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("app", &["sleep", "60"])).await;
    let exec = |cmd: &str, timeout| ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        timeout,
    };
    // In the container's namespaces: its hostname and its /dev/shm.
    let r =
        s.c.exec_sync(exec("hostname; grep -c ' /dev/shm ' /proc/mounts", 10))
            .await
            .expect("exec")
            .into_inner();
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).as_ref()),
        (0, "podhost\n1\n"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A lasting exec: its monitor waits in the node's namespace.
    let state = s.b.state.clone();
    let waiting = move || {
        berth_tests::monitor_pids(&state)
            .into_iter()
            .filter(|pid| {
                let args = berth_tests::cmdline(*pid);
                args.split(|b| *b == 0).nth(1) == Some(b"exec".as_slice())
            })
            .collect::<Vec<_>>()
    };
    // The first exec's monitor may still be on its way out.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !waiting().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = s.b.runtime().await;
    let sleep = exec("sleep 5", 20);
    let long = tokio::spawn(async move { c.exec_sync(sleep).await });
    // The monitor, and for a moment its forks on their way into the
    // container (the same command line): the lowest pid.
    let mut pids = waiting();
    while pids.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        pids = waiting();
    }
    let monitor = *pids.iter().min().expect("an exec monitor");
    // Asked to set the tree aside (a skip would be in its log, below).
    let args = String::from_utf8_lossy(&berth_tests::cmdline(monitor)).replace('\0', " ");
    assert!(args.contains(" --aside "), "{args}");
    let monitor = monitor.to_string();
    let node = mount_ns("self");
    while mount_ns(&monitor) != node && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mount_ns(&monitor), node);
    assert!(!long.is_finished(), "the exec ended: {:?}", long.await);
    let r = long.await.expect("join").expect("exec").into_inner();
    assert_eq!(r.exit_code, 0);
    let said = monitor_said(&s, &id);
    assert!(!said.contains("not set aside"), "{said}");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_oom_killed() {
    let mut s = setup(busybox_config()).await;
    let mut cfg = s.config(
        "hog",
        &[
            "/bin/sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
        ],
    );
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = s.run(cfg).await;
    let st = s.wait_exited(&id).await;
    assert_eq!(
        st.reason,
        "OOMKilled",
        "exit {}: {}",
        st.exit_code,
        s.log("hog")
    );
    assert_ne!(st.exit_code, 0);
    assert!(!s.log("hog").contains("survived"));
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_can_share_one_pid_namespace() {
    let mut s = setup(busybox_config()).await;
    // A second pod that asks for one PID namespace.
    let shared = NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let mut pod_config = s.pod_config.clone();
    pod_config.metadata.as_mut().expect("metadata").name = "shared".into();
    pod_config.linux.get_or_insert_default().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(shared.clone()),
        ..Default::default()
    });
    let pod =
        s.c.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("pod")
        .into_inner()
        .pod_sandbox_id;
    let infra: i32 = std::fs::read_to_string(s.b.state.join("ns").join(&pod).join("infra.pid"))
        .expect("infra pid")
        .trim()
        .parse()
        .expect("pid");
    let mut ids = Vec::new();
    for (name, cmd) in [
        ("sleeper", vec!["/bin/sleep", "1000"]),
        (
            "looker",
            vec![
                "/bin/sh",
                "-c",
                "sleep 0.3; ps -o pid,args; \
                 cat /proc/1/exe >/dev/null 2>&1 && echo exe-readable || echo exe-hidden",
            ],
        ),
    ] {
        let mut config = s.config(name, &cmd);
        config.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(shared.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let id =
            s.c.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .expect("create")
            .into_inner()
            .container_id;
        s.c.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start");
        ids.push(id);
    }
    let looker = ids[1].clone();
    s.wait_exited(&looker).await;
    let log = s.log("looker");
    assert!(
        log.contains("sleep 1000"),
        "the other container's process: {log}"
    );
    // PID 1 runs berth's own binary: the container cannot get at it.
    assert!(log.contains("exe-hidden"), "{log}");
    assert!(
        log.contains("pause-init"),
        "PID 1 is the infra process: {log}"
    );

    s.c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove");
    // Gone (or a zombie waiting for the node's init to reap it: no
    // cmdline); SIGKILL takes effect asynchronously, so wait a little.
    let alive = || {
        let cmdline = std::fs::read(format!("/proc/{infra}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains("pause-init")
    };
    for _ in 0..100 {
        if !alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(), "the infra process outlived its pod");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_image_keeps_its_layers_for_the_containers_using_it() {
    let mut s = setup(busybox_config()).await;
    let id = s
        .create(s.config("user", &["/bin/sh", "-c", "echo still-here"]))
        .await
        .expect("create");
    s.b.image()
        .await
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: s.image.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("rmi");
    let snapshots = s.b.root.join("images/snapshots");
    let count = || {
        std::fs::read_dir(&snapshots)
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert!(count() > 0, "the container's layers were collected");
    s.c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start");
    s.wait_exited(&id).await;
    assert!(
        s.log("user").contains(" stdout F still-here"),
        "{}",
        s.log("user")
    );
    // With the container gone, so are its layers.
    s.c.remove_container(RemoveContainerRequest { container_id: id })
        .await
        .expect("remove");
    assert_eq!(count(), 0);
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_can_be_mounted_as_a_read_only_volume() {
    let mut s = setup(busybox_config()).await;
    // A data image of two layers (so its volume is an overlay of both).
    let data = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()),
    )
    .layer(
        fixtures::Layer::new()
            .dir("data", 0o755)
            .file("data/hello.txt", "hello from a volume", 0o644)
            .build(Compression::Gzip),
    )
    .layer(
        fixtures::Layer::new()
            .dir("data", 0o755)
            .file("data/second.txt", "second layer", 0o644)
            .build(Compression::Gzip),
    );
    fixtures::push_image(&s.reg, "test/data", "1", &data).await;
    let data_ref = s.reg.image("test/data:1");
    s.b.pull(&data_ref, None).await.expect("pull data");
    let mut cfg = s.config(
        "vol",
        &[
            "/bin/sh",
            "-c",
            "cat /mnt/data/hello.txt; echo; cat /mnt/data/second.txt; echo; touch /mnt/data/x 2>/dev/null || echo read-only",
        ],
    );
    cfg.mounts = vec![Mount {
        container_path: "/mnt/data".into(),
        image: Some(ImageSpec {
            image: data_ref.clone(),
            ..Default::default()
        }),
        image_sub_path: "data".into(),
        ..Default::default()
    }];
    let id = s.run(cfg).await;
    let st = s.wait_exited(&id).await;
    let log = s.log("vol");
    assert_eq!(st.exit_code, 0, "{log}");
    for want in ["hello from a volume", "second layer", "read-only"] {
        assert!(log.contains(&format!(" stdout F {want}")), "{want}: {log}");
    }

    // A sub path that climbs out is refused, and leaves nothing.
    let mut bad = s.config("escape", &["/bin/true"]);
    bad.mounts = vec![Mount {
        container_path: "/mnt/x".into(),
        image: Some(ImageSpec {
            image: data_ref,
            ..Default::default()
        }),
        image_sub_path: "../..".into(),
        ..Default::default()
    }];
    let e = s.create(bad).await.expect_err("escape");
    assert!(e.message().contains("image_sub_path"), "{}", e.message());
    s.remove_all().await;
}

/// Runs a container of an image that is busybox plus `layer` (pushed as
/// `test/trap:<tag>`), with `mounts`; then checks that nothing was created
/// or mounted in `outside`. Creating or starting may fail: refused is fine.
async fn run_trap(
    s: &mut berth_tests::setup::Setup,
    tag: &str,
    layer: fixtures::Layer,
    mounts: Vec<Mount>,
    outside: &std::path::Path,
) {
    let image = fixtures::Image::new(ManifestKind::Oci, busybox_config())
        .layer(fixtures::busybox_layer(Compression::Gzip))
        .layer(layer.build(Compression::Gzip));
    fixtures::push_image(&s.reg, "test/trap", tag, &image).await;
    let trap = s.reg.image(&format!("test/trap:{tag}"));
    s.b.pull(&trap, None).await.expect("pull");
    let name = format!("trap-{tag}");
    let mut cfg = s.config(
        &name,
        &["/bin/sh", "-c", "head -c 20 /proc/self/stat; ls /mnt/x"],
    );
    cfg.image = Some(ImageSpec {
        image: trap,
        ..Default::default()
    });
    cfg.mounts = mounts;
    if let Ok(id) = s.create(cfg).await {
        let _ =
            s.c.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await;
        s.wait_exited(&id).await;
    }
    let escaped: Vec<_> = std::fs::read_dir(outside)
        .expect("outside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        escaped.is_empty(),
        "{tag}: created on the host: {escaped:?}"
    );
    assert!(
        mounts_under(outside).is_empty(),
        "{tag}: mounted on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_targets_never_follow_symlinks_out_of_the_rootfs() {
    let mut s = setup(busybox_config()).await;
    // An image whose /mnt is a symlink to a host path: a bind mount at
    // /mnt/x must land inside the container, not on the host.
    let outside = berth_tests::TempDir::new("escape-target");
    let source = berth_tests::TempDir::new("mount-source");
    std::fs::write(source.path().join("f"), "inside").expect("source");
    let mounts = vec![Mount {
        container_path: "/mnt/x".into(),
        host_path: source.path().display().to_string(),
        ..Default::default()
    }];
    let layer = fixtures::Layer::new().symlink("mnt", &outside.path().display().to_string());
    run_trap(&mut s, "mnt", layer, mounts, outside.path()).await;

    // The same with the rootfs's own /proc, /sys and /dev/shm mount points
    // (the CVE-2019-16884 class): procfs, sysfs or the pod's shm must never
    // be mounted through them onto a host path.
    for (tag, link) in [("proc", "proc"), ("sys", "sys"), ("shm", "dev/shm")] {
        let outside = berth_tests::TempDir::new("escape-target");
        let mut layer = fixtures::Layer::new();
        if link == "dev/shm" {
            layer = layer.dir("dev", 0o755);
        }
        let layer = layer.symlink(link, &outside.path().join("x").display().to_string());
        run_trap(&mut s, tag, layer, Vec::new(), outside.path()).await;
    }
    s.remove_all().await;
}

/// ContainerStatus of `id` is NotFound: it was removed.
async fn assert_gone(s: &mut berth_tests::setup::Setup, id: String) {
    let e =
        s.c.container_status(ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_remove_of_a_removed_container_succeed() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("gone", &["sleep", "1000"])).await;
    for _ in 0..2 {
        s.c.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("stop");
        s.c.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("remove");
    }
    // Status of an unknown container is still NotFound.
    assert_gone(&mut s, id).await;
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_the_runtime_fails_to_create_leaves_no_cgroup() {
    // A namespaced sysctl with a value the kernel refuses: the spec takes
    // it, and the runtime fails inside the container's init, after its
    // cgroup was made.
    let mut s = berth_tests::setup::setup_with(busybox_config(), |p| {
        p.linux
            .get_or_insert_with(Default::default)
            .sysctls
            .insert("net.ipv4.ip_forward".into(), "not-a-number".into());
    })
    .await;
    for attempt in ["first", "again"] {
        let e = s
            .create(s.config(&format!("bad-{attempt}"), &["true"]))
            .await
            .expect_err("the kernel refuses the sysctl");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    }
    // remove_all checks that the pod's cgroup (and so every container
    // cgroup inside it) is gone.
    s.remove_all().await;
}

/// The monitor's command line keeps a handler's runtime path whole
/// (it was once a comma-separated option list, which cut such a path in
/// two and the container could not be created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_runtime_whose_path_holds_a_comma_runs_containers() {
    let dir = berth_tests::TempDir::new("comma");
    let bin_dir = dir.path().join("a,b");
    std::fs::create_dir_all(&bin_dir).expect("runtime dir");
    let runc = bin_dir.join("runc");
    std::os::unix::fs::symlink("/usr/sbin/runc", &runc).expect("runc link");
    let opts = berth_tests::setup::handler("comma", &runc);
    let mut s = setup_opts(opts, "comma", busybox_config(), |_| {}).await;
    let id = s
        .create(s.config("app", &["/bin/echo", "ran"]))
        .await
        .expect("create");
    s.c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start");
    let st = s.wait_exited(&id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let log = s.log("app");
    assert!(log.lines().any(|l| l.ends_with(" stdout F ran")), "{log}");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_node_reboot_a_container_is_exited_with_a_reason() {
    let mut s = setup(busybox_config()).await;
    let running = s.run(s.config("running", &["/bin/sleep", "1000"])).await;
    let created = s
        .create(s.config("created", &["/bin/sleep", "1000"]))
        .await
        .expect("create");
    // A reboot, as far as berth can tell: every process gone, and
    // <state> (a tmpfs under /run on a node) gone with its mounts.
    s.b.stop_with(Signal::SIGKILL);
    let pids: Vec<i32> = [&running, &created]
        .iter()
        .filter_map(|id| {
            let p = s.b.state.join("containers").join(id).join("pid");
            std::fs::read_to_string(p).ok()?.trim().parse().ok()
        })
        .chain(
            berth_tests::monitor_pids(&s.b.state)
                .into_iter()
                .map(|p| p as i32),
        )
        .collect();
    assert!(
        pids.len() >= 4,
        "two containers and their monitors: {pids:?}"
    );
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    berth_tests::unmount_state(&s.b.state);
    std::fs::remove_dir_all(&s.b.state).expect("state");
    s.b.restart().await;
    s.c = s.b.runtime().await;
    for id in [&running, &created] {
        let st = s.status(id).await;
        assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
        assert_eq!(st.exit_code, 255);
        assert!(st.message.contains("monitor is gone"), "{st:?}");
    }
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_without_a_log_directory_survives_a_berthd_restart() {
    // crictl's way: a pod config without log_directory.
    let mut s = setup_with(busybox_config(), |p| p.log_directory.clear()).await;
    let id = s.run(s.config("say", &["/bin/echo", "kept"])).await;
    let path = s.wait_exited(&id).await.log_path;
    assert!(
        std::fs::read_to_string(&path).is_ok_and(|l| l.contains(" stdout F kept")),
        "{path}"
    );
    s.b.stop_with(Signal::SIGTERM);
    s.b.restart().await;
    s.c = s.b.runtime().await;
    let log = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        log.contains(" stdout F kept"),
        "{path} after a restart: {log:?}"
    );
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_container_whose_caller_gave_up_finishes_and_its_retry_gets_it() {
    // runc, but `create` waits until the test says go.
    let dir = berth_tests::TempDir::new("slow-runtime");
    let opts = berth_tests::setup::gated_runc(dir.path(), "create");
    let mut s = setup_opts(opts, "gated", busybox_config(), |_| {}).await;
    let request = CreateContainerRequest {
        pod_sandbox_id: s.pod.clone(),
        config: Some(s.config("app", &["/bin/echo", "ran"])),
        sandbox_config: Some(s.pod_config.clone()),
    };
    // The kubelet's deadline ends while the runtime creates it.
    let mut c = s.c.clone();
    let first = tokio::spawn({
        let request = request.clone();
        async move { c.create_container(request).await }
    });
    for _ in 0..400 {
        if dir.path().join("create-started").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dir.path().join("create-started").exists(),
        "runc create never ran"
    );
    first.abort();
    let _ = first.await;
    // Its retry waits for that container, and gets it.
    let mut c = s.c.clone();
    let retry = tokio::spawn(async move { c.create_container(request).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(dir.path().join("go"), "").expect("go");
    let id = retry
        .await
        .expect("join")
        .expect("the retry gets the container")
        .into_inner()
        .container_id;
    let all =
        s.c.list_containers(ListContainersRequest::default())
            .await
            .expect("list")
            .into_inner()
            .containers;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].id, id);
    s.c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start");
    assert_eq!(s.wait_exited(&id).await.exit_code, 0);
    // Nothing of a second attempt is left: no mount, cgroup or monitor.
    s.remove_all().await;
}

/// systemd dropping off D-Bus while the container's scope was being made
/// (what systemd does when its bus stalls) fails the attempt, not the
/// CreateContainer: berthd makes the container once more. Here runc's
/// first `create` fails with that error, as a runtime reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_lost_systemds_bus_is_made_again() {
    let dir = berth_tests::TempDir::new("bus-dropped");
    let prologue = format!(
        r#"log=; prev=
for a in "$@"; do
  [ "$prev" = --log ] && log=$a
  prev=$a
done
for a in "$@"; do
  if [ "$a" = create ] && [ ! -e {d}/dropped ]; then
    touch {d}/dropped
    echo '{{"level":"error","msg":"unable to start unit: Message recipient disconnected from message bus without replying"}}' >> "$log"
    exit 1
  fi
done
"#,
        d = dir.path().display()
    );
    let opts = berth_tests::setup::wrapped_runc(dir.path(), "dropped", &prologue);
    let mut s = setup_opts(opts, "dropped", busybox_config(), |_| {}).await;
    let id = s.run(s.config("app", &["/bin/echo", "made"])).await;
    assert!(dir.path().join("dropped").exists(), "the first create ran");
    assert_eq!(s.wait_exited(&id).await.exit_code, 0);
    assert!(s.log("app").contains(" stdout F made"), "{}", s.log("app"));
    s.remove_all().await;
}

/// A container whose monitor died and whose process was reaped leaves its
/// pid to be reused. StopContainer must not signal whatever holds that
/// pid now: berthd holds the init by a pidfd, and takes the process at the
/// pid for the container's only if it started when the monitor recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_never_signals_a_process_that_reused_the_containers_pid() {
    let mut s = setup(busybox_config()).await;
    let id = s.run(s.config("gone", &["/bin/sleep", "1000"])).await;
    let dir = s.b.state.join("containers").join(&id);
    let init: i32 = std::fs::read_to_string(dir.join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    // The monitor dies, then the container's process.
    let monitors = berth_tests::monitor_pids(&s.b.state);
    assert_eq!(monitors.len(), 1, "{monitors:?}");
    for pid in [monitors[0] as i32, init] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    }
    // Its pid is reused (simulated: the pid file now names another live
    // process, as it would after a reuse).
    let mut decoy = std::process::Command::new("/bin/sleep")
        .arg("1000")
        .spawn()
        .expect("decoy");
    std::fs::write(dir.join(".pid.tmp"), decoy.id().to_string()).expect("pid");
    std::fs::rename(dir.join(".pid.tmp"), dir.join("pid")).expect("pid");
    s.c.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .expect("stop");
    let st = s.status(&id).await;
    assert_ne!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    let survived = decoy.try_wait().expect("decoy").is_none();
    let _ = decoy.kill();
    let _ = decoy.wait();
    assert!(
        survived,
        "StopContainer signalled the process holding the reused pid"
    );
    s.remove_all().await;
}

/// CDI devices from the kubelet's field and a `cdi.k8s.io/*` annotation:
/// the device node (a harmless one, /dev/null), environment and a mount,
/// from a YAML and a JSON spec; an unknown device refused before anything
/// is made. Under the builtin handler and runc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_devices_bring_their_nodes_env_and_mounts() {
    let dir = berth_tests::TempDir::new("cdi");
    let specs = dir.path().join("cdi");
    let share = dir.path().join("share");
    std::fs::create_dir_all(&specs).expect("specs");
    std::fs::create_dir_all(&share).expect("share");
    std::fs::write(share.join("f"), "from the host\n").expect("f");
    std::fs::write(
        specs.join("dev.yaml"),
        format!(
            "cdiVersion: \"0.6.0\"\nkind: berth.test/dev\ndevices:\n- name: null0\n  containerEdits:\n    env: [CDI_DEV=null0]\n    deviceNodes:\n    - path: /dev/cdi-null\n      hostPath: /dev/null\n    mounts:\n    - hostPath: {}\n      containerPath: /cdi\n      options: [ro, bind]\n",
            share.display()
        ),
    )
    .expect("yaml");
    std::fs::write(
        specs.join("other.json"),
        r#"{"cdiVersion":"0.5.0","kind":"berth.test/other","devices":[{"name":"x","containerEdits":{"env":["OTHER=1"]}}]}"#,
    )
    .expect("json");
    for handler in ["", "runc"] {
        let opts = berth_tests::Options {
            config: format!("[cdi]\nspec_dirs = [\"{}\"]\n", specs.display()),
            ..Default::default()
        };
        let mut s = setup_opts(opts, handler, busybox_config(), |_| {}).await;
        let script = "echo hi > /dev/cdi-null && echo wrote; echo dev=$CDI_DEV other=$OTHER; \
                      cat /cdi/f; touch /cdi/g 2>/dev/null && echo rw || echo ro";
        let mut cfg = s.config("cdi", &["/bin/sh", "-c", script]);
        cfg.cdi_devices = vec![CdiDevice {
            name: "berth.test/dev=null0".into(),
        }];
        cfg.annotations
            .insert("cdi.k8s.io/test".into(), "berth.test/other=x".into());
        let log = s.run_to_exit(cfg).await;
        for want in ["wrote", "dev=null0 other=1", "from the host", " ro"] {
            assert!(log.contains(want), "{handler:?}: no {want:?} in {log}");
        }
        let mut cfg = s.config("unknown", &["true"]);
        cfg.cdi_devices = vec![CdiDevice {
            name: "berth.test/dev=nope".into(),
        }];
        let e = s.create(cfg).await.expect_err("unknown CDI device");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("nope") && e.message().contains(&specs.display().to_string()),
            "{e:?}"
        );
        s.remove_all().await;
    }
}
