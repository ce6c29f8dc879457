//! CRI `CreateContainer`: the image resolved, an overlay rootfs from its
//! snapshots with a fresh upper layer, the OCI spec from the CRI config,
//! the image config and the pod, and a monitor that creates the container.

use cri_api::v1::{
    ContainerEventType, CreateContainerRequest, CreateContainerResponse, NamespaceMode,
};
use tonic::Status;

use crate::container::{NewContainer, Observed, key_of};
use crate::daemon::Daemon;
use crate::ids::random_id;
use crate::pod::{PodState, namespace_options};
use crate::spec::{ImageDefaults, PodContext};

pub async fn create_container(
    d: &Daemon,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse, Status> {
    let config = req
        .config
        .ok_or_else(|| Status::invalid_argument("CreateContainer: no config"))?;
    crate::cri::validate::id("CreateContainer", "pod_sandbox_id", &req.pod_sandbox_id)?;
    crate::cri::validate::container_config(&config)?;
    let asked_userns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .filter(|o| o.userns_options.is_some())
        .map(crate::pod::userns_maps)
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("CreateContainer: {e}")))?;
    // An image naming a checkpoint archive on the node asks for a restore.
    let restore = crate::container::restore::asked(&config);
    let archived = restore
        .as_deref()
        .map(crate::container::restore::read)
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("CreateContainer: {e}")))?;
    let meta = config.metadata.clone().unwrap_or_default();
    if meta.name.is_empty() {
        return Err(Status::invalid_argument(
            "CreateContainer: metadata name is required",
        ));
    }
    // CDI devices: all found before anything is made.
    let cdi = crate::cdi::resolve(&d.config.cdi.spec_dirs, &crate::cdi::requested(&config))
        .map_err(|e| Status::invalid_argument(format!("CreateContainer: {e}")))?;
    let (_turn, pod) = d.pod_in_turn(&req.pod_sandbox_id).await?;
    if pod.state != PodState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let key = key_of(&config);
    if let Some(holder) = d
        .containers
        .of_pod(&pod.id)
        .into_iter()
        .find(|c| key_of(c.config_ref()) == key)
    {
        // The kubelet retrying a call whose deadline ended: the container
        // that call made (and did not start) is its answer.
        if *holder.config_ref() == config
            && matches!(d.containers.observe(&holder.id), Observed::Created)
        {
            crate::trace::record("container_id", &holder.id);
            tracing::info!(container = %holder.id, name = %key, "CreateContainer retried: the container already made");
            return Ok(CreateContainerResponse {
                container_id: holder.id.clone(),
            });
        }
        return Err(Status::already_exists(format!(
            "container name {key:?} in pod {} is already in use by {}",
            pod.id, holder.id
        )));
    }
    let (image_name, image) = match &archived {
        Some(a) => restore_image(d, &pod, a)?,
        None => {
            let name = config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default();
            let image = d
                .images
                .find(&name)
                .map_err(|e| Status::internal(e.to_string()))?
                .ok_or_else(|| {
                    Status::not_found(format!("image {name:?} not found: pull it first"))
                })?;
            (name, image)
        }
    };
    let image_config = d
        .images
        .config(&image)
        .map_err(|e| Status::internal(e.to_string()))?;
    let lowers = d.images.snapshot_dirs(&image);
    // CRI image volumes: each named image, pulled already.
    let mut volume_images = Vec::new();
    let mut volumes = Vec::new();
    for (n, m) in config.mounts.iter().enumerate() {
        let Some(spec) = m.image.as_ref().filter(|s| !s.image.is_empty()) else {
            continue;
        };
        let rec = d
            .images
            .find(&spec.image)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "image volume {:?} at {}: image not found: pull it first",
                    spec.image, m.container_path
                ))
            })?;
        volumes.push(crate::container::ImageVolume {
            mount: n,
            image: spec.image.clone(),
            lowers: d.images.snapshot_dirs(&rec),
            sub_path: m.image_sub_path.clone(),
        });
        volume_images.push(rec);
    }

    // The image's defaults and the pod's context for the spec.
    let ic = image_config.config.clone().unwrap_or_default();
    let defaults = ImageDefaults {
        entrypoint: ic.entrypoint.clone().unwrap_or_default(),
        cmd: ic.cmd.clone().unwrap_or_default(),
        env: ic.env.clone().unwrap_or_default(),
        user: ic.user.clone().unwrap_or_default(),
        working_dir: ic.working_dir.clone().unwrap_or_default(),
    };
    let stop_signal = ic.stop_signal.clone().unwrap_or_default();
    let pod_config = pod.config();
    let opts = namespace_options(&pod_config);
    // A container is in its pod's user namespace (the kubelet repeats the
    // pod's options; none given means the pod's).
    let userns = crate::pod::pod_userns(&pod_config);
    if let Some(asked) = asked_userns
        && asked != userns
    {
        return Err(Status::invalid_argument(format!(
            "CreateContainer: userns_options differ from pod sandbox {}'s: a container shares its pod's user namespace",
            pod.id
        )));
    }
    let ns_dir = d.pods.ns_dir(&pod.id);
    let pod_dir = d.pods.pod_dir(&pod.id);
    let pin = |k: &str| {
        let p = ns_dir.join(k);
        p.exists().then_some(p)
    };
    let hostname = std::fs::read_to_string(pod_dir.join("hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let ctx = PodContext {
        net_ns: if opts.network() == NamespaceMode::Node {
            None
        } else {
            pin("net")
        },
        ipc_ns: if opts.ipc() == NamespaceMode::Node {
            None
        } else {
            pin("ipc")
        },
        uts_ns: pin("uts"),
        pid_ns: pin("pid"),
        hostname_file: pod_dir.join("hostname"),
        hosts_file: pod_dir.join("hosts"),
        resolv_file: pod_dir.join("resolv.conf"),
        shm_dir: (opts.ipc() != NamespaceMode::Node).then(|| pod_dir.join("shm")),
        hostname,
        cgroup_parent: pod_config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default(),
        systemd_cgroup: d.config.cgroup_driver == crate::config::CgroupDriver::Systemd,
        privileged: pod_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged),
        sysctls: pod_config
            .linux
            .as_ref()
            .map(|l| l.sysctls.clone().into_iter().collect())
            .unwrap_or_default(),
        target_pid_ns: target_pid_ns(d, &config),
        user_ns: userns.map(|maps| (ns_dir.join("user"), maps)),
        // Checked when the config was loaded.
        rlimits: d
            .config
            .default_rlimits
            .iter()
            .filter_map(|r| crate::config::parse_rlimit(r).ok())
            .collect(),
    };
    let log_path = if pod_config.log_directory.is_empty() || config.log_path.is_empty() {
        d.containers
            .default_log_dir()
            .join(format!("{}.log", meta.name))
    } else {
        std::path::Path::new(&pod_config.log_directory).join(&config.log_path)
    };
    let id = random_id().map_err(|e| Status::internal(format!("container id: {e}")))?;
    crate::trace::record("container_id", &id);
    // The pod's RuntimeClass handler: an external OCI runtime, or none.
    let runtime = match d.config.runtimes.get(&pod.runtime_handler) {
        Some(crate::config::RuntimeHandler::Oci { path }) => Some(path.clone()),
        _ => None,
    };
    // Its layers stay while it exists, even if the image is removed.
    let leased: Vec<&berth_imageservice::db::ImageRecord> = std::iter::once(&image)
        .chain(volume_images.iter())
        .collect();
    d.images.lease(&id, &leased).await.map_err(|e| {
        let s = crate::cri::image::error::status(e);
        Status::new(s.code(), format!("CreateContainer: {}", s.message()))
    })?;
    berth_db::crash::point("create:leased");
    let (cid, mut cfg) = (id.clone(), config.clone());
    // A restore's spec names the image, not the archive.
    if let Some(i) = cfg.image.as_mut().filter(|_| archived.is_some()) {
        i.image = image_name.clone();
    }
    let pod_maps = ctx.user_ns.as_ref().map(|(_, m)| *m);
    let userns_pin = ctx.user_ns.clone();
    let spec_for = move |rootfs: &std::path::Path, sources: &[(usize, std::path::PathBuf)]| {
        // Image volumes become read-only binds of their mounted layers;
        // host paths may come idmapped through the pod's user namespace.
        let mut cfg = cfg;
        for (n, src) in sources {
            let m = &mut cfg.mounts[*n];
            m.host_path = src.display().to_string();
            if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
                m.image = None;
                m.image_sub_path.clear();
                m.readonly = true;
            } else if pod_maps.is_some_and(|p| mount_maps(m) == Some(p)) {
                // The mappings the kubelet asked for are the pod's: done.
                m.uid_mappings.clear();
                m.gid_mappings.clear();
            }
        }
        let mut spec = crate::spec::build(&cid, &cfg, &defaults, &ctx, rootfs)?;
        crate::cdi::apply(&mut spec, &cdi).map_err(|e| crate::spec::Error::InvalidArgument {
            field: "CDI_devices".into(),
            reason: e,
        })?;
        clamp_oom_score_adj(&mut spec);
        let sig = crate::spec::stop_signal(&stop_signal)?;
        Ok((spec, sig))
    };
    let limits = d.config.images.limits();
    let rec = d
        .containers
        .create(
            NewContainer {
                id: &id,
                pod_id: &pod.id,
                config: &config,
                image: &image_name,
                image_id: &image.id,
                lowers: &lowers,
                volumes: &volumes,
                log_path,
                runtime: runtime.as_deref(),
                userns: userns_pin.as_ref(),
                restore: restore
                    .as_deref()
                    .map(|archive| crate::container::restore::Restore {
                        archive,
                        limits: &limits,
                    }),
            },
            spec_for,
        )
        .await
        .map_err(|e| {
            let _ = d.images.release(&id);
            let s = Status::from(e);
            Status::new(
                s.code(),
                format!("CreateContainer {key:?}: {}", s.message()),
            )
        })?;
    berth_db::crash::point("create:saved");
    tracing::info!(container = %rec.id, pod = %pod.id, name = %key, "container created");
    crate::cri::events::emit(
        d,
        &rec.id,
        ContainerEventType::ContainerCreatedEvent,
        &pod.id,
        None,
    );
    Ok(CreateContainerResponse { container_id: id })
}

/// A mount's own ID mappings, when they are one UID and one GID range.
fn mount_maps(m: &cri_api::v1::Mount) -> Option<crate::pod::IdMaps> {
    let one = |v: &[cri_api::v1::IdMapping]| match v {
        [r] => Some(crate::pod::IdRange {
            container: r.container_id,
            host: r.host_id,
            len: r.length,
        }),
        _ => None,
    };
    Some(crate::pod::IdMaps {
        uid: one(&m.uid_mappings)?,
        gid: one(&m.gid_mappings)?,
    })
}

/// Never asks for an `oom_score_adj` below berthd's own, which the kernel
/// may refuse (it does on the development machines, even to root):
/// containerd's `restrict_oom_score_adj`. The kubelet asks -997 for
/// Guaranteed pods.
fn clamp_oom_score_adj(spec: &mut crate::spec::Spec) {
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if let Some(p) = spec.process_mut()
        && p.oom_score_adj().is_some_and(|asked| asked < own)
    {
        p.set_oom_score_adj(Some(own));
    }
}

/// For PID mode TARGET: the PID namespace of the running target container.
fn target_pid_ns(d: &Daemon, c: &cri_api::v1::ContainerConfig) -> Option<std::path::PathBuf> {
    let opts = c
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()?;
    if opts.pid() != NamespaceMode::Target {
        return None;
    }
    let target = d.containers.find(&opts.target_id).ok()??;
    if !matches!(
        d.containers.observe(&target.id),
        crate::container::Observed::Running { .. }
    ) {
        return None;
    }
    let pid = std::fs::read_to_string(
        d.containers
            .state_dir(&target.id)
            .join(berth_runtime::protocol::state::PID),
    )
    .ok()?;
    Some(format!("/proc/{}/ns/pid", pid.trim()).into())
}

/// A restore's image: the one its archive's container ran, pulled
/// already.
fn restore_image(
    d: &Daemon,
    pod: &crate::pod::PodRecord,
    a: &crate::container::restore::Archived,
) -> Result<(String, berth_imageservice::db::ImageRecord), Status> {
    let oci = matches!(
        d.config.runtimes.get(&pod.runtime_handler),
        Some(crate::config::RuntimeHandler::Oci { .. })
    );
    if a.terminal && !oci {
        return Err(Status::unimplemented(format!(
            "CreateContainer: restoring a container that had a terminal is implemented through \
             an external OCI runtime (a handler of type \"oci\", such as runc), not pod {}'s \
             handler {:?}",
            pod.id, pod.runtime_handler
        )));
    }
    let mut found = None;
    for name in [&a.image_ref, &a.image_name] {
        found = d
            .images
            .find(name)
            .map_err(|e| Status::internal(e.to_string()))?;
        if found.is_some() {
            break;
        }
    }
    let image = found.ok_or_else(|| {
        Status::not_found(format!(
            "CreateContainer: the checkpoint's image {:?} ({}) not found: pull it first",
            a.image_name, a.image_ref
        ))
    })?;
    let name = if a.image_name.is_empty() {
        image.id.clone()
    } else {
        a.image_name.clone()
    };
    Ok((name, image))
}
