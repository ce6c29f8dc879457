//! Bounds on what a CRI request may carry, checked before anything is
//! made, so that a bad request gets `InvalidArgument` (or
//! `ResourceExhausted` for sheer size) naming the field, and leaves
//! nothing behind.
//!
//! berth trusts the kubelet, but a CRI request carries what a pod's
//! author wrote (names, labels, annotations, env, mounts, log paths), and
//! `crictl` users send what they like. Everything berth stores per object
//! is capped here; the caps are far above what Kubernetes itself admits
//! (names of 253 bytes, 256 KiB of annotations per object).

use std::collections::HashMap;
use std::path::{Component, Path};

use cri_api::v1::{ContainerConfig, Mount, PodSandboxConfig};
use prost::Message;
use tonic::Status;

/// Names, namespaces and uids in metadata (Kubernetes: 253).
pub const MAX_NAME: usize = 253;
/// Pod and container ids in requests: berth's are 64 hex digits, and
/// prefixes are fine. Anything else is looked up and not found, as the
/// CRI's idempotent calls want (StopContainer of an unknown id succeeds);
/// only length and NUL bytes are refused.
pub const MAX_ID: usize = 128;
/// Labels, and annotations, of one object: keys and values together
/// (Kubernetes caps annotations at 256 KiB).
pub const MAX_MAP_BYTES: usize = 256 << 10;
/// A whole config as the kubelet encodes it. Environment from several
/// ConfigMaps (1 MiB each at most) fits.
pub const MAX_POD_CONFIG: usize = 1 << 20;
pub const MAX_CONTAINER_CONFIG: usize = 4 << 20;
/// Paths: PATH_MAX.
pub const MAX_PATH: usize = 4096;

fn invalid(rpc: &str, m: String) -> Status {
    Status::invalid_argument(format!("{rpc}: {m}"))
}

/// A pod or container id in a request.
pub fn id(rpc: &str, field: &str, id: &str) -> Result<(), Status> {
    text(rpc, field, id, MAX_ID)
}

fn text(rpc: &str, field: &str, s: &str, max: usize) -> Result<(), Status> {
    if s.len() > max {
        return Err(invalid(
            rpc,
            format!("{field} is {} bytes long (at most {max})", s.len()),
        ));
    }
    if s.contains('\0') {
        return Err(invalid(rpc, format!("{field} contains a NUL byte")));
    }
    Ok(())
}

fn map(rpc: &str, field: &str, m: &HashMap<String, String>) -> Result<(), Status> {
    let mut total = 0;
    for (k, v) in m {
        if k.contains('\0') || v.contains('\0') {
            return Err(invalid(
                rpc,
                format!("{field} {:?} contains a NUL byte", truncated(k)),
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_MAP_BYTES {
        return Err(Status::resource_exhausted(format!(
            "{rpc}: {field} hold {total} bytes (at most {MAX_MAP_BYTES})"
        )));
    }
    Ok(())
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A path of the request: no NUL, at most PATH_MAX, no `..` component,
/// absolute or relative as `absolute` says.
fn path(rpc: &str, field: &str, p: &str, absolute: bool) -> Result<(), Status> {
    text(rpc, field, p, MAX_PATH)?;
    let path = Path::new(p);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            rpc,
            format!("{field} {:?} has a \"..\" component", truncated(p)),
        ));
    }
    match (absolute, path.is_absolute()) {
        (true, false) => Err(invalid(
            rpc,
            format!("{field} {:?} is not an absolute path", truncated(p)),
        )),
        (false, true) => Err(invalid(
            rpc,
            format!(
                "{field} {:?} must be relative to the pod's log_directory",
                truncated(p)
            ),
        )),
        _ => Ok(()),
    }
}

fn size(rpc: &str, what: &str, n: usize, max: usize) -> Result<(), Status> {
    if n > max {
        return Err(Status::resource_exhausted(format!(
            "{rpc}: the {what} is {n} bytes encoded (at most {max})"
        )));
    }
    Ok(())
}

/// RunPodSandbox's config.
pub fn pod_config(c: &PodSandboxConfig) -> Result<(), Status> {
    const RPC: &str = "RunPodSandbox";
    let m = c.metadata.clone().unwrap_or_default();
    text(RPC, "metadata.name", &m.name, MAX_NAME)?;
    text(RPC, "metadata.namespace", &m.namespace, MAX_NAME)?;
    text(RPC, "metadata.uid", &m.uid, MAX_NAME)?;
    map(RPC, "labels", &c.labels)?;
    map(RPC, "annotations", &c.annotations)?;
    // Its length (64, sethostname's) is checked by RunPodSandbox.
    text(RPC, "hostname", &c.hostname, MAX_NAME)?;
    if !c.log_directory.is_empty() {
        path(RPC, "log_directory", &c.log_directory, true)?;
    }
    if let Some(l) = &c.linux {
        text(RPC, "linux.cgroup_parent", &l.cgroup_parent, MAX_PATH)?;
    }
    if let Some(dns) = &c.dns_config {
        for s in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
            text(RPC, "dns_config", s, MAX_NAME)?;
        }
    }
    size(RPC, "pod config", c.encoded_len(), MAX_POD_CONFIG)
}

/// CreateContainer's config.
pub fn container_config(c: &ContainerConfig) -> Result<(), Status> {
    const RPC: &str = "CreateContainer";
    let m = c.metadata.clone().unwrap_or_default();
    text(RPC, "metadata.name", &m.name, MAX_NAME)?;
    map(RPC, "labels", &c.labels)?;
    map(RPC, "annotations", &c.annotations)?;
    if !c.log_path.is_empty() {
        path(RPC, "log_path", &c.log_path, false)?;
    }
    text(RPC, "working_dir", &c.working_dir, MAX_PATH)?;
    for a in c.command.iter().chain(&c.args) {
        text(RPC, "command and args", a, usize::MAX)?;
    }
    for e in &c.envs {
        text(RPC, "envs key", &e.key, usize::MAX)?;
        if e.value.contains(&0) {
            return Err(invalid(
                RPC,
                format!("envs value of {:?} contains a NUL byte", truncated(&e.key)),
            ));
        }
    }
    for mnt in &c.mounts {
        mount(RPC, mnt)?;
    }
    for d in &c.devices {
        path(RPC, "devices.host_path", &d.host_path, true)?;
        path(RPC, "devices.container_path", &d.container_path, true)?;
    }
    size(
        RPC,
        "container config",
        c.encoded_len(),
        MAX_CONTAINER_CONFIG,
    )
}

fn mount(rpc: &str, m: &Mount) -> Result<(), Status> {
    path(rpc, "mounts.container_path", &m.container_path, true)?;
    // An image volume names an image, not a host path.
    if m.image.is_none() || !m.host_path.is_empty() {
        path(rpc, "mounts.host_path", &m.host_path, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1::{ContainerMetadata, PodSandboxMetadata};

    fn pod() -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "7c1b".into(),
                attempt: 0,
            }),
            log_directory: "/var/log/pods/default_web_7c1b".into(),
            ..Default::default()
        }
    }

    fn container() -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            log_path: "app/0.log".into(),
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: "/var/lib/kubelet/pods/x/volumes/data".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn field_of(s: Status) -> (tonic::Code, String) {
        (s.code(), s.message().to_string())
    }

    #[test]
    fn the_kubelets_usual_requests_pass() {
        pod_config(&pod()).unwrap();
        container_config(&container()).unwrap();
        id("x", "container_id", "0123abcdef").unwrap();
        id("x", "container_id", "").unwrap();
    }

    #[test]
    fn long_names_nul_bytes_and_huge_maps_are_refused_by_field() {
        let mut p = pod();
        p.metadata.as_mut().unwrap().name = "a".repeat(1 << 20);
        let (code, m) = field_of(pod_config(&p).unwrap_err());
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert!(m.contains("metadata.name"), "{m}");

        let mut p = pod();
        p.metadata.as_mut().unwrap().uid = "a\0b".into();
        assert!(
            pod_config(&p)
                .unwrap_err()
                .message()
                .contains("metadata.uid")
        );

        let mut p = pod();
        p.annotations
            .insert("big".into(), "v".repeat(MAX_MAP_BYTES + 1));
        let (code, m) = field_of(pod_config(&p).unwrap_err());
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert!(m.contains("annotations"), "{m}");

        let mut c = container();
        c.labels.insert("k\0".into(), "v".into());
        assert!(
            container_config(&c)
                .unwrap_err()
                .message()
                .contains("labels")
        );

        let mut c = container();
        c.envs.push(cri_api::v1::KeyValue {
            key: "A".into(),
            value: vec![b'x'; MAX_CONTAINER_CONFIG],
        });
        let (code, m) = field_of(container_config(&c).unwrap_err());
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert!(m.contains("container config"), "{m}");

        let (code, m) =
            field_of(id("StopContainer", "container_id", &"a".repeat(MAX_ID + 1)).unwrap_err());
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert!(m.contains("container_id"), "{m}");
        assert!(id("StopContainer", "container_id", "a\0").is_err());
        id("StopContainer", "container_id", "no-such-container").unwrap();
    }

    #[test]
    fn log_and_mount_paths_stay_where_they_belong() {
        for bad in ["/etc/shadow", "../../etc/cron.d/x", "app/../../x"] {
            let mut c = container();
            c.log_path = bad.into();
            let m = container_config(&c).unwrap_err().message().to_string();
            assert!(m.contains("log_path"), "{bad}: {m}");
        }
        for bad in ["relative/dir", "/var/log/pods/../../etc"] {
            let mut p = pod();
            p.log_directory = bad.into();
            let m = pod_config(&p).unwrap_err().message().to_string();
            assert!(m.contains("log_directory"), "{bad}: {m}");
        }
        for (cp, hp) in [
            ("data", "/x"),
            ("/data/../../etc", "/x"),
            ("/data", "/x/../../etc"),
        ] {
            let mut c = container();
            c.mounts[0].container_path = cp.into();
            c.mounts[0].host_path = hp.into();
            let m = container_config(&c).unwrap_err().message().to_string();
            assert!(m.contains("mounts."), "{cp} {hp}: {m}");
        }
    }
}
