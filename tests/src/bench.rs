//! What the benchmarks share: their runtime, a berthd with busybox pulled,
//! and the pods they start.

use cri_api::v1::{LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata};

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
    let reg = Registry::start();
    fixtures::push_busybox(&reg, "bench/busybox", "1", Compression::Gzip).await;
    let image = reg.image("bench/busybox:1");
    let b = Berthd::start().await;
    b.pull(&image, None).await.expect("pull");
    (reg, b, image)
}

/// Removes the cgroup `parent` the benchmark's pods shared, in every
/// hierarchy: berth made it for the first pod and left it, still in use by
/// the others, when that pod went.
pub fn remove_shared_parent(parent: &str) {
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(h.path().join(parent));
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
