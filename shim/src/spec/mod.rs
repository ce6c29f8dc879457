//! Translates a CRI `ContainerConfig`, the image config and the pod's
//! context into a typed OCI runtime spec ([`Spec`], written once as the
//! bundle's `config.json`), following what containerd's CRI plugin
//! produces.
//!
//! [`build`] runs an ordered list of steps, one file per concern, each
//! `apply(&mut Spec, &Context) -> Result<(), Error>` (containerd's
//! `SpecOpts`): process and env, users and groups, capabilities,
//! resources, mounts, devices, namespaces, security (sysctls, LSMs,
//! seccomp, masked paths), and last what `privileged` opens up.
//!
//! Users and groups named by the image or the security context are looked up
//! in the container's own `/etc/passwd` and `/etc/group`, read as plain files
//! inside the rootfs: a symlinked `etc`, `etc/passwd` or `etc/group` is
//! treated as absent, so nothing outside the rootfs is ever read.

mod capabilities;
mod devices;
mod mounts;
mod namespaces;
mod process;
pub mod resources;
mod security;
mod users;

use std::io;
use std::path::{Path, PathBuf};

use cri_api::v1::{ContainerConfig, LinuxContainerSecurityContext};
pub use oci_spec::runtime::Spec;
use oci_spec::runtime::{Linux, LinuxResources, Process};

pub use process::stop_signal;

/// What the image config says (from its `config` section).
#[derive(Debug, Clone, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
}

/// The pod the container joins.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    /// Pinned network namespace file to join; `None` = the host's.
    pub net_ns: Option<PathBuf>,
    /// Pinned IPC namespace file to join; `None` = the host's.
    pub ipc_ns: Option<PathBuf>,
    /// Pinned UTS namespace file to join; `None` = the host's.
    pub uts_ns: Option<PathBuf>,
    /// The pod's shared PID namespace (held by its infra process), for
    /// containers whose PID mode is POD; `None` when the pod has none.
    pub pid_ns: Option<PathBuf>,
    pub hostname_file: PathBuf,
    pub hosts_file: PathBuf,
    pub resolv_file: PathBuf,
    /// The pod's `/dev/shm` tmpfs; `None` = host IPC, bind the host's `/dev/shm`.
    pub shm_dir: Option<PathBuf>,
    pub hostname: String,
    /// e.g. "/kubepods/pod123" (cgroupfs driver) or
    /// "kubepods-besteffort-pod123.slice" (systemd driver).
    pub cgroup_parent: String,
    /// The systemd cgroup driver: the container gets a transient
    /// `berth-<id>.scope` in the parent slice.
    pub systemd_cgroup: bool,
    /// The pod may run privileged containers.
    pub privileged: bool,
    /// The pod's sysctls (namespaced ones only; checked here).
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// For PID mode TARGET: the target container's PID namespace.
    pub target_pid_ns: Option<PathBuf>,
    /// The pod's user namespace (pinned file) and its ID maps; `None` =
    /// the host's.
    pub user_ns: Option<(PathBuf, crate::pod::IdMaps)>,
    /// Resource limits every container gets (`runtime.default_rlimits`):
    /// (type as "RLIMIT_NOFILE", soft, hard).
    pub rlimits: Vec<(String, u64, u64)>,
}

/// What went wrong turning a container's request into a spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; `field` names the offending CRI field.
    #[error("invalid argument: {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Neither the CRI config nor the image gives a command.
    #[error("invalid argument: no command specified")]
    NoCommand,
    /// A feature berth does not implement.
    #[error("unimplemented: {0}")]
    Unsupported(String),
    /// The request is valid but the node cannot honour it now (an
    /// AppArmor profile that is not loaded).
    #[error("{0}")]
    Unavailable(String),
    /// oci-spec refused a value (its builders check some).
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    /// Reading a file inside the rootfs failed (other than "not found").
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// CreateContainer answers a spec error with FailedPrecondition, as it
/// always has (the message is the error's text).
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::failed_precondition(e.to_string())
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Everything the steps read: the request, the image, the pod, and what
/// is derived from them once.
pub struct Context<'a> {
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    pub image: &'a ImageDefaults,
    pub pod: &'a PodContext,
    /// The container's mounted root filesystem.
    pub rootfs: &'a Path,
    /// The container's security context (an empty one when unset).
    pub sc: LinuxContainerSecurityContext,
    /// The pod's hostname (the node's when the pod names none).
    pub hostname: String,
}

impl<'a> Context<'a> {
    pub fn new(
        id: &'a str,
        config: &'a ContainerConfig,
        image: &'a ImageDefaults,
        pod: &'a PodContext,
        rootfs: &'a Path,
    ) -> Self {
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        Context {
            id,
            config,
            image,
            pod,
            rootfs,
            sc,
            hostname: pod_hostname(pod),
        }
    }

    /// The CRI resources, if any.
    fn resources(&self) -> Option<&cri_api::v1::LinuxContainerResources> {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
    }
}

/// One step of [`build`].
type Step = fn(&mut Spec, &Context) -> Result<(), Error>;

/// The steps in order; later ones see (and may change) what earlier ones
/// set, e.g. `privileged` opens up the mounts and devices.
const STEPS: &[Step] = &[
    validate,
    process::apply,
    users::apply,
    capabilities::apply,
    resources::apply,
    mounts::apply,
    devices::apply,
    namespaces::apply,
    security::apply,
    devices::privileged,
];

const OCI_VERSION: &str = "1.0.2";

/// Builds the OCI runtime spec for container `id`.
///
/// `rootfs` is the container's mounted root filesystem; user and group names
/// are resolved in its `/etc/passwd` and `/etc/group`.
pub fn build(
    id: &str,
    c: &ContainerConfig,
    image: &ImageDefaults,
    pod: &PodContext,
    rootfs: &Path,
) -> Result<Spec, Error> {
    let cx = Context::new(id, c, image, pod, rootfs);
    let mut spec = empty();
    for step in STEPS {
        step(&mut spec, &cx)?;
    }
    Ok(spec)
}

/// A spec with only the version, an empty process and an empty `linux`
/// (oci-spec's `Default`s describe a shell container; none of that here).
fn empty() -> Spec {
    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.into());
    spec.set_hostname(None);
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(None);
    spec.set_mounts(Some(Vec::new()));
    spec.set_root(None);
    let mut p = Process::default();
    p.set_terminal(Some(false));
    p.set_console_size(None);
    p.set_args(None);
    p.set_env(None);
    p.set_capabilities(None);
    p.set_rlimits(None);
    p.set_no_new_privileges(None);
    p.set_apparmor_profile(None);
    p.set_selinux_label(None);
    p.set_io_priority(None);
    p.set_scheduler(None);
    p.set_exec_cpu_affinity(None);
    spec.set_process(Some(p));
    let mut linux = Linux::default();
    linux.set_resources(Some(LinuxResources::default()));
    linux.set_namespaces(None);
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    spec.set_linux(Some(linux));
    spec
}

/// The spec's process (present from [`empty`] on).
fn process_mut(spec: &mut Spec) -> &mut Process {
    spec.process_mut().get_or_insert_with(Process::default)
}

/// The spec's `linux` section (present from [`empty`] on).
fn linux_mut(spec: &mut Spec) -> &mut Linux {
    spec.linux_mut().get_or_insert_with(Linux::default)
}

/// The spec's `linux.resources`.
fn resources_mut(spec: &mut Spec) -> &mut LinuxResources {
    linux_mut(spec)
        .resources_mut()
        .get_or_insert_with(LinuxResources::default)
}

/// The checks that come before any step: a valid id, a privileged
/// container only in a privileged pod, and LSM options this node has.
fn validate(_: &mut Spec, cx: &Context) -> Result<(), Error> {
    validate_id(cx.id)?;
    if cx.sc.privileged && !cx.pod.privileged {
        return Err(invalid(
            "security_context.privileged",
            "a privileged container needs a privileged pod sandbox",
        ));
    }
    security::check_lsm(&cx.sc)
}

fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid("container id", format!("{id:?} is not a valid id")));
    }
    Ok(())
}

fn pod_hostname(pod: &PodContext) -> String {
    if !pod.hostname.is_empty() {
        return pod.hostname.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests;
