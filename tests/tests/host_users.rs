//! The node's other users (here `nobody`) cannot reach what images and
//! containers hold through berth's directories: a setuid binary a
//! container made, its rootfs, the image snapshots and blobs, a pod's
//! `/dev/shm` (the containerd CVE-2021-41103 class). Checked as `nobody`
//! itself, in a child process run as 65534:65534 with no other groups, on
//! a fresh berthd and on one restarted over directories an older berth
//! left open.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::setup::{Setup, busybox_config, setup_on, setup_with, userns_pod};
use cri_api::v1::*;

const NOBODY: u32 = 65534;
const EACCES: i32 = 13;

/// A command run as `nobody` (std drops the supplementary groups).
fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.uid(NOBODY).gid(NOBODY).env_clear().env("LC_ALL", "C");
    c
}

/// What `nobody` gets trying `path`: `stat` and `ls` refused, and an exec
/// refused by the kernel (EACCES) where `exec` is asked. Returns one line
/// per failure to refuse.
fn reachable(path: &Path, exec: bool) -> Vec<String> {
    let mut got = Vec::new();
    for tool in ["stat", "ls"] {
        let out = as_nobody(format!("/usr/bin/{tool}"))
            .arg("--")
            .arg(path)
            .output()
            .expect(tool);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("Permission denied") {
            got.push(format!("{tool} {}: {} {err}", path.display(), out.status));
        }
    }
    if exec {
        // (As `id`: busybox would say whose rights it ran with.)
        match as_nobody(path).arg0("id").output() {
            Err(e) if e.raw_os_error() == Some(EACCES) => {}
            other => got.push(format!("exec {}: {other:?}", path.display())),
        }
    }
    got
}

/// The paths of the container `id`'s content, its pod's and the images'.
fn content_paths(s: &Setup, id: &str) -> Vec<(PathBuf, bool)> {
    let (root, state) = (&s.b.root, &s.b.state);
    let entries = |d: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect()
    };
    let upper = root.join("containers").join(id).join("upper");
    let rootfs = state.join("containers").join(id).join("rootfs");
    let shm = state.join("pods").join(&s.pod).join("shm");
    // The setuid copy is there, as root sees it.
    let m = std::fs::metadata(upper.join("x")).expect("the setuid copy");
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert!(shm.join("f").is_file(), "the pod's /dev/shm file");
    let mut paths = vec![
        (upper.join("x"), true),
        (upper.clone(), false),
        (rootfs.join("x"), true),
        (rootfs.join("bin/busybox"), true),
        (rootfs.clone(), false),
        (shm.join("f"), false),
        (shm, false),
        (state.join("pods").join(&s.pod).join("hosts"), false),
        (state.join("ns").join(&s.pod).join("net"), false),
    ];
    let snapshots = entries(root.join("images/snapshots"));
    let blobs = entries(root.join("images/blobs/sha256"));
    assert!(!snapshots.is_empty() && !blobs.is_empty());
    for snap in snapshots {
        paths.push((snap.join("bin/busybox"), true));
        paths.push((snap, false));
    }
    paths.extend(blobs.into_iter().map(|b| (b, false)));
    paths
}

fn check_unreachable(s: &Setup, id: &str) {
    let mut open: Vec<String> = content_paths(s, id)
        .iter()
        .flat_map(|(p, exec)| reachable(p, *exec))
        .collect();
    // The metadata (every config, environments included) is known by
    // name: not readable.
    let db = s.b.root.join("berth.redb");
    let out = as_nobody("/usr/bin/head")
        .arg("-c1")
        .arg(&db)
        .output()
        .expect("head");
    if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("Permission denied") {
        open.push(format!("read {}: {}", db.display(), out.status));
    }
    assert!(open.is_empty(), "nobody reached:\n{}", open.join("\n"));
}

/// A container that leaves a setuid copy of busybox at /x and a file in
/// its pod's /dev/shm, and keeps running.
async fn attacker(s: &mut Setup, name: &str) -> String {
    let probe = "busybox cp /bin/busybox /x && busybox chmod 4755 /x && echo hi > /dev/shm/f && echo ready; exec sleep 1000";
    let id = s.run(s.config(name, &["/bin/sh", "-c", probe])).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.log(name).contains("ready") {
        assert!(std::time::Instant::now() < deadline, "{}", s.log(name));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    id
}

fn mode_and_group(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.gid())
}

/// The directories berth closes, and the mode and group each must have
/// (`pod_gid`: its pod's root's group, if it is in a user namespace).
fn closed_dirs(s: &Setup, id: &str, pod_gid: Option<u32>) -> Vec<(PathBuf, (u32, u32))> {
    let (root, state) = (&s.b.root, &s.b.state);
    let pods = pod_gid.map_or((0o700, 0), |g| (0o710, g));
    vec![
        (root.join("images"), (0o700, 0)),
        (root.join("images/snapshots"), (0o700, 0)),
        (root.join("images/blobs"), (0o700, 0)),
        (root.join("images/blobs/sha256"), (0o700, 0)),
        (root.join("images/ingest"), (0o700, 0)),
        (root.join("containers"), (0o700, 0)),
        (state.join("runtime"), (0o700, 0)),
        (root.join("containers").join(id), (0o700, 0)),
        (state.join("containers").join(id), pods),
        (state.join("pods").join(&s.pod), pods),
        (state.join("ns").join(&s.pod), pods),
    ]
}

async fn out_of_reach(userns: Option<u32>) {
    let mut s = setup_with(busybox_config(), |p| {
        if let Some(host_id) = userns {
            p.linux
                .get_or_insert_with(Default::default)
                .security_context = Some(userns_pod(host_id));
        }
    })
    .await;
    let id = attacker(&mut s, "attacker").await;
    check_unreachable(&s, &id);
    for (dir, want) in closed_dirs(&s, &id, userns) {
        assert_eq!(mode_and_group(&dir), want, "{}", dir.display());
    }
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_on_the_node_reaches_no_image_or_container_content() {
    out_of_reach(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_on_the_node_reaches_no_content_of_a_user_namespace_pod() {
    out_of_reach(Some(600_000)).await;
}

/// An older berth made every directory 0755 and root's: berthd closes
/// them at start; its running containers still take execs and a pod in a
/// user namespace still gets new containers, under either handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_versions_open_dirs_are_closed_at_start() {
    for (handler, userns) in [("", None), ("", Some(700_000)), ("runc", Some(800_000))] {
        let mut s = setup_on(handler, busybox_config(), |p| {
            if let Some(host_id) = userns {
                p.linux
                    .get_or_insert_with(Default::default)
                    .security_context = Some(userns_pod(host_id));
            }
        })
        .await;
        let id = attacker(&mut s, "attacker").await;
        s.b.stop_with(nix::sys::signal::Signal::SIGKILL);
        for (dir, _) in closed_dirs(&s, &id, userns) {
            std::os::unix::fs::chown(&dir, None, Some(0)).expect("chown");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let db = s.b.root.join("berth.redb");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            !reachable(&s.b.root.join("containers").join(&id).join("upper/x"), true).is_empty(),
            "the old layout is open"
        );
        s.b.restart().await;
        s.c = s.b.runtime().await;
        // (The socket answers connects before start-up is done: a call
        // returns once it is.)
        s.c.version(VersionRequest::default())
            .await
            .expect("version");
        // A running container's bundle needs no one's passage any more:
        // root's alone; its pod's files and pins keep the pod's group.
        let bundle = s.b.state.join("containers").join(&id);
        for (dir, want) in closed_dirs(&s, &id, userns) {
            let want = if dir == bundle { (0o700, 0) } else { want };
            assert_eq!(mode_and_group(&dir), want, "{userns:?} {}", dir.display());
        }
        assert_eq!(mode_and_group(&db), (0o600, 0));
        check_unreachable(&s, &id);
        // The running container still takes execs...
        let out =
            s.c.exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["cat".into(), "/proc/self/uid_map".into()],
                timeout: 10,
            })
            .await
            .expect("exec")
            .into_inner();
        let host = userns.unwrap_or(0).to_string();
        let map = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            map.split_whitespace().nth(1) == Some(host.as_str()),
            "{userns:?} {map}"
        );
        // ... and the pod's root still passes where it must: a new
        // container runs.
        let log = s
            .run_to_exit(s.config("after", &["cat", "/proc/self/uid_map"]))
            .await;
        let map = berth_tests::setup::log_messages(&log).join(" ");
        assert!(
            map.split_whitespace().nth(1) == Some(host.as_str()),
            "{userns:?} {log}"
        );
        s.remove_all().await;
    }
}

/// The probes tell an open path from a closed one: the refusals they
/// see are the kernel's, not a missing tool's or user's.
#[test]
fn the_probes_tell_open_from_closed() {
    let dir = berth_tests::TempDir::new("nobody");
    let tool = dir.path().join("tool");
    std::fs::copy("/usr/bin/true", &tool).expect("copy");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(reachable(&tool, true).len(), 3, "stat, ls and exec work");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_eq!(reachable(&tool, true), Vec::<String>::new());
}
