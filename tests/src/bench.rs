//! What the benchmarks share: their runtime, a berthd with busybox pulled,
//! and the pods they start.

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    PodSandboxConfig, PodSandboxMetadata, RunPodSandboxRequest, StartContainerRequest,
};
use tonic::transport::Channel;

use crate::Berthd;
use crate::fixtures::{self, Compression};
use crate::registry::Registry;

/// The runtime every benchmark runs in: two workers, as the machines have
/// two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A registry with busybox pushed, and a berthd that pulled it; the
/// image reference.
pub async fn berthd_with_busybox() -> (Registry, Berthd, String) {
    berthd_with_busybox_and(crate::Options::default()).await
}

/// [`berthd_with_busybox`], berthd started with `opts`.
pub async fn berthd_with_busybox_and(opts: crate::Options) -> (Registry, Berthd, String) {
    let (reg, image) = registry_with_busybox("bench").await;
    let b = Berthd::start_with(opts).await;
    b.pull(&image, None).await.expect("pull");
    (reg, b, image)
}

/// A registry on loopback serving busybox as `<ns>/busybox:1` (gzip), and
/// that image's name.
pub async fn registry_with_busybox(ns: &str) -> (Registry, String) {
    let reg = Registry::start();
    let repo = format!("{ns}/busybox");
    fixtures::push_busybox(&reg, &repo, "1", Compression::Gzip).await;
    let image = reg.image(&format!("{repo}:1"));
    (reg, image)
}

/// Removes the cgroup `parent` the benchmark's pods shared, and each of
/// its ancestors up to its top that is left empty, in every hierarchy:
/// berth made them for the first pod and left them, still in use by the
/// others, when that pod went.
pub fn remove_shared_parent(parent: &str) {
    for h in crate::cgroup::hierarchies() {
        let mut dir = crate::cgroup::rel(parent);
        while !dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir(h.join(&dir));
            dir.pop();
        }
    }
}

/// Pod `name` logging under the berthd's dir, in cgroup `cgroup_parent`.
pub fn pod_config(b: &Berthd, name: &str, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: b.dir.path().join("logs").display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox of `pod_config`; the pod's id.
pub async fn run_pod(
    c: &mut RuntimeServiceClient<Channel>,
    pod_config: &PodSandboxConfig,
) -> String {
    c.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(pod_config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .expect("pod")
    .into_inner()
    .pod_sandbox_id
}

/// CreateContainer + StartContainer of container `name` running `command`
/// from `image` in `pod`; the container's id.
pub async fn start_container(
    c: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_config: &PodSandboxConfig,
    image: &str,
    name: &str,
    command: &[&str],
    log_path: String,
) -> String {
    let id = c
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.to_string(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| s.to_string()).collect(),
                log_path,
                ..Default::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start");
    id
}

/// A pod running one busybox `sleep 1000` from `image`; the pod's id.
/// With `BERTH_BENCH_CHATTY=1` the container instead writes a line to its
/// log ten times a second, so its monitor's pages are those of a pump at
/// work rather than an idle one.
pub async fn start_pod(
    c: &mut RuntimeServiceClient<Channel>,
    pod_config: PodSandboxConfig,
    image: &str,
    log_path: String,
) -> String {
    let pod = run_pod(c, &pod_config).await;
    let command: &[&str] = if std::env::var_os("BERTH_BENCH_CHATTY").is_some() {
        &[
            "/bin/sh",
            "-c",
            "while :; do echo tick; echo tock >&2; sleep 0.1; done",
        ]
    } else {
        &["/bin/sleep", "1000"]
    };
    start_container(c, &pod, &pod_config, image, "sleep", command, log_path).await;
    pod
}

/// Milliseconds as "median, p90, min, max".
pub fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.total_cmp(b));
    format!(
        "median {:.3} ms, p90 {:.3} ms, min {:.3} ms, max {:.3} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        ms[0],
        ms[ms.len() - 1]
    )
}

/// The `p`-th percentile (0..=1) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)]
}
