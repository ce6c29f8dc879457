//! A berthd with a busybox image pulled and one pod running, for tests
//! that run containers; checks on teardown that nothing is left.

use std::time::{Duration, Instant};

use crate::fixtures::{self, Compression, ImageConfig, ManifestKind, Platform};
use crate::registry::Registry;
use crate::{Berthd, monitor_pids, mounts_under};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use tonic::transport::Channel;

pub type Client = RuntimeServiceClient<Channel>;

/// A berthd with `image` pulled and one pod running; logs go under the
/// test's dir.
pub struct Setup {
    pub b: Berthd,
    pub reg: Registry,
    pub image: String,
    pub pod: String,
    pub pod_config: PodSandboxConfig,
    pub c: Client,
}

pub async fn setup(image_config: ImageConfig) -> Setup {
    setup_with(image_config, |_| {}).await
}

/// As [`setup`], with the pod's config changed by `pod` first.
pub async fn setup_with(
    image_config: ImageConfig,
    pod: impl FnOnce(&mut PodSandboxConfig),
) -> Setup {
    setup_on("", image_config, pod).await
}

/// As [`setup_with`], the pod run by RuntimeClass handler `handler`.
pub async fn setup_on(
    handler: &str,
    image_config: ImageConfig,
    pod: impl FnOnce(&mut PodSandboxConfig),
) -> Setup {
    setup_opts(crate::Options::default(), handler, image_config, pod).await
}

/// As [`setup_on`], berthd started with `opts`.
pub async fn setup_opts(
    opts: crate::Options,
    handler: &str,
    image_config: ImageConfig,
    pod: impl FnOnce(&mut PodSandboxConfig),
) -> Setup {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let reg = Registry::start();
    let img = fixtures::Image::new(ManifestKind::Oci, image_config)
        .layer(fixtures::busybox_layer(Compression::Gzip));
    fixtures::push_image(&reg, "test/app", "1", &img).await;
    let image = reg.image("test/app:1");
    let b = Berthd::start_with(opts).await;
    b.pull(&image, None).await.expect("pull");
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "pod".into(),
            uid: "pod-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "podhost".into(),
        log_directory: b.dir.path().join("logs").display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: crate::cgroup::unique_parent(&n.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod_config = pod_config;
    pod(&mut pod_config);
    let mut c = b.runtime().await;
    let pod = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .expect("pod")
        .into_inner()
        .pod_sandbox_id;
    Setup {
        b,
        reg,
        image,
        pod,
        pod_config,
        c,
    }
}

impl Setup {
    /// The pod's cgroup parent, as its config gives it.
    pub fn cgroup_parent(&self) -> String {
        self.pod_config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default()
    }

    pub fn config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            ..Default::default()
        }
    }

    pub async fn create(&mut self, config: ContainerConfig) -> Result<String, tonic::Status> {
        self.c
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.pod.clone(),
                config: Some(config),
                sandbox_config: Some(self.pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn run(&mut self, config: ContainerConfig) -> String {
        let id = self.create(config).await.expect("create");
        self.c
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("start");
        id
    }

    /// Runs `config` until it exits; its log.
    pub async fn run_to_exit(&mut self, config: ContainerConfig) -> String {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let id = self.run(config).await;
        self.wait_exited(&id).await;
        self.log(&name)
    }

    pub async fn status(&mut self, id: &str) -> ContainerStatus {
        container_status(&mut self.c, id).await
    }

    pub async fn wait_exited(&mut self, id: &str) -> ContainerStatus {
        wait_exited(&mut self.c, id).await
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.b.dir.path().join("logs").join(name).join("0.log"))
            .unwrap_or_default()
    }

    /// Polls container `name`'s log until a line ends with `line`.
    pub async fn wait_log(&self, name: &str, line: &str) {
        for _ in 0..300 {
            if self.log(name).lines().any(|l| l.ends_with(line)) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{name} never logged {line:?}: {}", self.log(name));
    }

    pub async fn remove_all(&mut self) {
        self.c
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.pod.clone(),
            })
            .await
            .expect("remove pod");
        // (The state directory itself is a mount: berthd's tree of them.)
        let left = || [mounts_under(&self.b.root), mounts_under(&self.b.state)].concat();
        assert!(left().is_empty(), "{:?}", left());
        // No cgroup: the pod's (berth made it) and its containers' are gone.
        let cg = self.cgroup_parent();
        // The systemd driver: no berth scope is left in the pod's slices;
        // the slices are the kubelet's (here the test's) to stop.
        if crate::cgroup::systemd() {
            let top = crate::cgroup::ROOT.to_string()
                + "/"
                + &crate::cgroup::top(&cg).display().to_string();
            let out = std::process::Command::new("find")
                .args([&top, "-name", "berth-*.scope"])
                .output()
                .expect("find");
            let left = String::from_utf8_lossy(&out.stdout);
            assert!(left.trim().is_empty(), "scopes left: {left}");
            let slice = crate::cgroup::top(&cg).display().to_string();
            let _ = std::process::Command::new("systemctl")
                .args(["stop", &slice])
                .status();
        }
        // In every hierarchy: runc makes them in name=systemd and the
        // unified one too on a hybrid node.
        for h in crate::cgroup::hierarchies() {
            let left = h.join(crate::cgroup::top(&cg));
            assert!(!left.exists(), "{} left", left.display());
        }
        // No process: every monitor of this berthd has ended.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = monitor_pids(&self.b.state);
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "monitors left: {left:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A pod security context asking for a user namespace of its own, with
/// the 65536 IDs from `host_id` (UIDs and GIDs alike).
pub fn userns_pod(host_id: u32) -> LinuxSandboxSecurityContext {
    let range = vec![IdMapping {
        host_id,
        container_id: 0,
        length: 65536,
    }];
    LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: range.clone(),
                gids: range,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ContainerStatus of `id` (which must exist).
pub async fn container_status(c: &mut Client, id: &str) -> ContainerStatus {
    c.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("status")
    .into_inner()
    .status
    .expect("status")
}

/// Polls ContainerStatus until the container has exited (30 s at most).
pub async fn wait_exited(c: &mut Client, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = container_status(c, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} never exited: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The messages of a CRI log file's lines (`<time> <stream> <tag> <msg>`).
pub fn log_messages(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect()
}

pub fn busybox_config() -> ImageConfig {
    ImageConfig::for_platform(&Platform::linux_amd64()).cmd(["/bin/sh"])
}

/// The options for a RuntimeClass handler `name` that runs `path`.
pub fn handler(name: &str, path: &std::path::Path) -> crate::Options {
    crate::Options {
        config: format!(
            "[runtimes.{name}]\ntype = \"oci\"\npath = \"{}\"\n",
            path.display()
        ),
        ..Default::default()
    }
}

/// A RuntimeClass handler `name` whose runtime is a shell script in `dir`:
/// `prologue`, then runc with the same arguments.
pub fn wrapped_runc(dir: &std::path::Path, name: &str, prologue: &str) -> crate::Options {
    use std::os::unix::fs::PermissionsExt;
    let runtime = dir.join(format!("{name}-runc"));
    let script = format!("#!/bin/sh\n{prologue}exec /usr/sbin/runc \"$@\"\n");
    std::fs::write(&runtime, script).expect("wrapped runtime");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755))
        .expect("wrapped runtime");
    handler(name, &runtime)
}

/// runc, held at one subcommand: a RuntimeClass handler named "gated"
/// whose `verb` touches `<dir>/<verb>-started`, waits (up to 30 s) for
/// `<dir>/go`, then runs runc and writes its exit status to
/// `<dir>/<verb>-status`. The options to pass to [`setup_opts`].
pub fn gated_runc(dir: &std::path::Path, verb: &str) -> crate::Options {
    let prologue = format!(
        r#"for a in "$@"; do
  if [ "$a" = {verb} ]; then
    touch {d}/{verb}-started
    i=0
    while [ ! -e {d}/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    /usr/sbin/runc "$@"
    rc=$?
    echo $rc > {d}/{verb}-status
    exit $rc
  fi
done
"#,
        d = dir.display()
    );
    wrapped_runc(dir, "gated", &prologue)
}
