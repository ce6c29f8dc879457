//! Translates a CRI `ContainerConfig`, the image config and the pod's
//! context into an OCI runtime spec (`config.json`), following what
//! containerd's CRI plugin produces.
//!
//! Users and groups named by the image or the security context are looked up
//! in the container's own `/etc/passwd` and `/etc/group`, read as plain files
//! inside the rootfs: a symlinked `etc`, `etc/passwd` or `etc/group` is
//! treated as absent, so nothing outside the rootfs is ever read.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use cri_api::v1::{ContainerConfig, LinuxContainerSecurityContext};
use serde_json::{Map, Value, json};

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
    /// e.g. "/kubepods/pod123" (cgroupfs driver).
    pub cgroup_parent: String,
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

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The request is invalid; `field` names the offending CRI field.
    #[error("invalid argument: {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Neither the CRI config nor the image gives a command.
    #[error("invalid argument: no command specified")]
    NoCommand,
    /// A feature berth does not implement.
    #[error("unimplemented: {0}")]
    Unsupported(String),
    /// Reading a file inside the rootfs failed (other than "not found").
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

const OCI_VERSION: &str = "1.0.2";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's `defaultUnixCaps`.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux knows (0..=40), in number order: what "ALL" adds.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const ETC_HOSTNAME: &str = "/etc/hostname";
const ETC_HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";
const DEV_SHM: &str = "/dev/shm";

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
) -> Result<Value, SpecError> {
    validate_id(id)?;
    let sc_default = LinuxContainerSecurityContext::default();
    let linux_cfg = c.linux.as_ref();
    let sc = linux_cfg
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&sc_default);
    if sc.privileged && !pod.privileged {
        return Err(invalid(
            "security_context.privileged",
            "a privileged container needs a privileged pod sandbox",
        ));
    }
    check_lsm(sc)?;

    let args = process_args(c, image)?;
    let hostname = pod_hostname(pod);
    let env = process_env(c, image, &hostname)?;
    let cwd = process_cwd(c, image)?;
    let user = process_user(sc, image, rootfs)?;
    let (caps, ambient) = if sc.privileged {
        (own_capabilities(), Vec::new())
    } else if pod.user_ns.is_some() {
        capabilities(sc, None)?
    } else {
        capabilities(sc, Some(&own_capabilities()))?
    };

    let mut process = Map::new();
    process.insert("terminal".into(), json!(c.tty));
    process.insert("user".into(), user);
    process.insert("args".into(), json!(args));
    process.insert("env".into(), json!(env));
    process.insert("cwd".into(), json!(cwd));
    let mut cap_sets = json!({
        "bounding": caps,
        "effective": caps,
        "permitted": caps,
    });
    // Ambient capabilities must be inheritable too; nothing else is (as
    // containerd, since CVE-2022-24769).
    if !ambient.is_empty() {
        cap_sets["inheritable"] = json!(ambient);
        cap_sets["ambient"] = json!(ambient);
    }
    process.insert("capabilities".into(), cap_sets);
    // Only when set: libcontainer takes the key's presence (even `false`)
    // to mean "load seccomp after dropping capabilities", which then fails
    // without no_new_privs.
    if sc.no_new_privs {
        process.insert("noNewPrivileges".into(), json!(true));
    }
    if !pod.rlimits.is_empty() {
        let rl: Vec<Value> = pod
            .rlimits
            .iter()
            .map(|(t, soft, hard)| json!({ "type": t, "soft": soft, "hard": hard }))
            .collect();
        process.insert("rlimits".into(), Value::Array(rl));
    }

    let mut linux = Map::new();
    let mut resources = Map::new();
    if let Some(r) = linux_cfg.and_then(|l| l.resources.as_ref()) {
        let oom = i32::try_from(r.oom_score_adj)
            .ok()
            .filter(|v| (-1000..=1000).contains(v))
            .ok_or_else(|| invalid("linux.resources.oom_score_adj", "must be in -1000..=1000"))?;
        process.insert("oomScoreAdj".into(), json!(oom));
        resources_from_cri(r, &mut resources)?;
    }

    let (mounts, rootfs_propagation) = mounts(c, pod, sc.readonly_rootfs)?;
    let (devices, device_rules) = devices(c)?;
    resources.insert("devices".into(), Value::Array(device_rules));

    linux.insert("namespaces".into(), namespaces(sc, pod)?);
    if let Some((_, maps)) = &pod.user_ns {
        let one = |r: &crate::pod::IdRange| json!([{ "containerID": r.container, "hostID": r.host, "size": r.len }]);
        linux.insert("uidMappings".into(), one(&maps.uid));
        linux.insert("gidMappings".into(), one(&maps.gid));
    }
    // A privileged container runs without seccomp, as with containerd.
    if !sc.privileged
        && let Some(profile) = crate::seccomp::for_container(sc, &caps)
            .map_err(|e| invalid("linux.security_context.seccomp", e))?
    {
        linux.insert("seccomp".into(), profile);
    }
    let sysctl = sysctls(pod)?;
    if !sysctl.is_empty() {
        linux.insert("sysctl".into(), json!(sysctl));
    }
    linux.insert("cgroupsPath".into(), json!(cgroups_path(id, pod)));
    linux.insert("resources".into(), Value::Object(resources));
    if !devices.is_empty() {
        linux.insert("devices".into(), Value::Array(devices.clone()));
    }
    let masked: Vec<&str> = if sc.privileged {
        Vec::new()
    } else if sc.masked_paths.is_empty() {
        DEFAULT_MASKED_PATHS.to_vec()
    } else {
        sc.masked_paths.iter().map(String::as_str).collect()
    };
    let readonly: Vec<&str> = if sc.privileged {
        Vec::new()
    } else if sc.readonly_paths.is_empty() {
        DEFAULT_READONLY_PATHS.to_vec()
    } else {
        sc.readonly_paths.iter().map(String::as_str).collect()
    };
    linux.insert("maskedPaths".into(), json!(masked));
    linux.insert("readonlyPaths".into(), json!(readonly));
    if let Some(p) = rootfs_propagation {
        linux.insert("rootfsPropagation".into(), json!(p));
    }

    let mut mounts = mounts;
    let mut devices = devices;
    if sc.privileged {
        privileged(&mut mounts, &mut devices, &mut linux)?;
    }
    let mut spec = Map::new();
    spec.insert("ociVersion".into(), json!(OCI_VERSION));
    spec.insert("process".into(), Value::Object(process));
    spec.insert(
        "root".into(),
        json!({ "path": rootfs.to_string_lossy(), "readonly": sc.readonly_rootfs }),
    );
    if pod.uts_ns.is_some() {
        spec.insert("hostname".into(), json!(hostname));
    }
    spec.insert("mounts".into(), Value::Array(mounts));
    spec.insert("linux".into(), Value::Object(linux));
    Ok(Value::Object(spec))
}

/// The stop signal from the image config's StopSignal ("SIGTERM", "TERM",
/// "15"; case-insensitive), default 15 (SIGTERM) when empty.
pub fn stop_signal(image_stop_signal: &str) -> Result<i32, SpecError> {
    let raw = image_stop_signal.trim();
    if raw.is_empty() {
        return Ok(15);
    }
    let bad = || invalid("image StopSignal", format!("unknown signal {raw:?}"));
    if let Ok(n) = raw.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" | "CLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        "RTMIN" => 34,
        "RTMAX" => 64,
        _ => {
            let (base, off) = if let Some(o) = name.strip_prefix("RTMIN+") {
                (34, o.parse::<i32>().ok().filter(|o| (1..=15).contains(o)))
            } else if let Some(o) = name.strip_prefix("RTMAX-") {
                (
                    64,
                    o.parse::<i32>()
                        .ok()
                        .filter(|o| (1..=14).contains(o))
                        .map(|o| -o),
                )
            } else {
                (0, None)
            };
            base + off.ok_or_else(bad)?
        }
    };
    Ok(n)
}

fn validate_id(id: &str) -> Result<(), SpecError> {
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

fn process_args(c: &ContainerConfig, image: &ImageDefaults) -> Result<Vec<String>, SpecError> {
    // containerd's WithProcessArgs (from moby's daemon/commit.go).
    let mut command = c.command.clone();
    let mut args = c.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(command)
}

fn pod_hostname(pod: &PodContext) -> String {
    if !pod.hostname.is_empty() {
        return pod.hostname.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

fn replace_or_append(env: &mut Vec<String>, kv: String) {
    let key = env_key(&kv).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(slot) => *slot = kv,
        None => env.push(kv),
    }
}

fn process_env(
    c: &ContainerConfig,
    image: &ImageDefaults,
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    // As containerd: default PATH, then HOSTNAME, then image env, then CRI
    // env, each replacing an earlier entry with the same key in place.
    let mut env = vec![DEFAULT_PATH.to_string()];
    replace_or_append(&mut env, format!("HOSTNAME={hostname}"));
    for kv in &image.env {
        // runc rejects entries without '='.
        if kv.contains('=') && !kv.starts_with('=') {
            replace_or_append(&mut env, kv.clone());
        }
    }
    for (i, kv) in c.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(invalid(
                format!("envs[{i}].key"),
                format!("invalid name {:?}", kv.key),
            ));
        }
        let value = std::str::from_utf8(&kv.value)
            .map_err(|_| invalid(format!("envs[{i}].value"), "not valid UTF-8"))?;
        replace_or_append(&mut env, format!("{}={value}", kv.key));
    }
    Ok(env)
}

fn process_cwd(c: &ContainerConfig, image: &ImageDefaults) -> Result<String, SpecError> {
    let (field, cwd) = if !c.working_dir.is_empty() {
        ("working_dir", c.working_dir.as_str())
    } else if !image.working_dir.is_empty() {
        ("image WorkingDir", image.working_dir.as_str())
    } else {
        return Ok("/".into());
    };
    if !cwd.starts_with('/') {
        return Err(invalid(field, format!("{cwd:?} is not an absolute path")));
    }
    Ok(cwd.to_string())
}

// ---------------------------------------------------------------- users

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Most bytes of the image's `/etc/passwd` or `/etc/group` read to resolve
/// a user: they are image content, read into memory at CreateContainer.
pub const MAX_ETC_FILE: u64 = 4 << 20;

/// Reads `rootfs/etc/<name>` if `etc` is a real directory and the file a
/// regular file (not symlinks, opened with O_NOFOLLOW); `None` when absent.
/// A file over [`MAX_ETC_FILE`] bytes is refused, naming it.
fn read_etc_file(rootfs: &Path, name: &str) -> Result<Option<String>, SpecError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let etc = rootfs.join("etc");
    match std::fs::symlink_metadata(&etc) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SpecError::Io { path: etc, source }),
    }
    let path = etc.join(name);
    let too_large = || {
        invalid(
            format!("image /etc/{name}"),
            format!("larger than {MAX_ETC_FILE} bytes, the most berth reads to resolve a user"),
        )
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() > MAX_ETC_FILE => return Err(too_large()),
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SpecError::Io { path, source }),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SpecError::Io { path, source }),
    };
    // Bounded even if the file grew since the stat.
    let mut bytes = Vec::new();
    match file.take(MAX_ETC_FILE + 1).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() as u64 > MAX_ETC_FILE => Err(too_large()),
        Ok(_) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(source) => Err(SpecError::Io { path, source }),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn to_id(v: i64, field: &str) -> Result<u32, SpecError> {
    u32::try_from(v).map_err(|_| invalid(field, format!("{v} is not a valid id")))
}

fn process_user(
    sc: &LinuxContainerSecurityContext,
    image: &ImageDefaults,
    rootfs: &Path,
) -> Result<Value, SpecError> {
    // containerd's generateUserString: run_as_username wins over run_as_user;
    // run_as_group needs one of them.
    let mut user_part: Option<String> = None;
    let mut field = "security_context.run_as_user";
    if let Some(u) = &sc.run_as_user {
        user_part = Some(to_id(u.value, field)?.to_string());
    }
    if !sc.run_as_username.is_empty() {
        field = "security_context.run_as_username";
        user_part = Some(sc.run_as_username.clone());
    }
    let group_part = match &sc.run_as_group {
        Some(g) => Some(to_id(g.value, "security_context.run_as_group")?.to_string()),
        None => None,
    };
    let userstr = match (user_part, group_part) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u,
        (None, Some(_)) => {
            return Err(invalid(
                "security_context.run_as_group",
                "a group is specified without a user",
            ));
        }
        (None, None) => {
            field = "image User";
            image.user.clone()
        }
    };

    let passwd = parse_passwd(&read_etc_file(rootfs, "passwd")?.unwrap_or_default());
    let groups = parse_group(&read_etc_file(rootfs, "group")?.unwrap_or_default());

    let (uid, gid, username) = if userstr.is_empty() {
        let name = passwd.iter().find(|p| p.uid == 0).map(|p| p.name.clone());
        (0, 0, name)
    } else {
        let parts: Vec<&str> = userstr.split(':').collect();
        if parts.len() > 2 || parts[0].is_empty() {
            return Err(invalid(field, format!("invalid user {userstr:?}")));
        }
        let (uid, primary, name) = match parts[0].parse::<u32>() {
            Ok(uid) => match passwd.iter().find(|p| p.uid == uid) {
                Some(p) => (uid, p.gid, Some(p.name.clone())),
                None => (uid, 0, None),
            },
            Err(_) => match passwd.iter().find(|p| p.name == parts[0]) {
                Some(p) => (p.uid, p.gid, Some(p.name.clone())),
                None => {
                    return Err(invalid(
                        field,
                        format!("no user {:?} found in the image's /etc/passwd", parts[0]),
                    ));
                }
            },
        };
        let gid = match parts.get(1) {
            None => primary,
            Some(&"") => {
                return Err(invalid(field, format!("invalid user {userstr:?}")));
            }
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups
                    .iter()
                    .find(|e| e.name == *g)
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        invalid(
                            field,
                            format!("no group {g:?} found in the image's /etc/group"),
                        )
                    })?,
            },
        };
        (uid, gid, name)
    };

    // Primary gid first (containerd since the CVE-2023-25173 fix), then the
    // groups listing the user, then the CRI supplemental groups.
    let mut gids = vec![gid];
    // Strict (1): only the CRI's groups, none from the image's /etc/group.
    let strict = sc.supplemental_groups_policy == 1;
    if let Some(name) = username.as_ref().filter(|_| !strict) {
        for g in &groups {
            if g.name != *name && g.members.iter().any(|m| m == name) {
                gids.push(g.gid);
            }
        }
    }
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        gids.push(to_id(
            *g,
            &format!("security_context.supplemental_groups[{i}]"),
        )?);
    }
    let mut seen = HashSet::new();
    gids.retain(|g| seen.insert(*g));
    Ok(json!({ "uid": uid, "gid": gid, "additionalGids": gids }))
}

// --------------------------------------------------------- capabilities

fn cap_name(raw: &str, field: &str) -> Result<String, SpecError> {
    let upper = raw.trim().to_ascii_uppercase();
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(invalid(field, format!("unknown capability {raw:?}")))
    }
}

/// The bounding (= effective = permitted) set and the ambient set (also
/// the inheritable one): containerd's defaults, `add_capabilities`,
/// `add_ambient_capabilities` (in every set, as the CRI says), then
/// `drop_capabilities` (from every set).
///
/// `held`: the capabilities there are to give (berthd's own bounding set;
/// None in a user namespace, where every capability is the namespace's).
/// `ALL` means all of those, as containerd's "all current capabilities";
/// adding one berthd lacks is refused, saying so.
fn capabilities(
    sc: &LinuxContainerSecurityContext,
    held: Option<&[String]>,
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let Some(cc) = &sc.capabilities else {
        return Ok((caps, Vec::new()));
    };
    let all: Vec<String> = match held {
        Some(h) => h.to_vec(),
        None => ALL_CAPS.iter().map(|s| s.to_string()).collect(),
    };
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
    // As containerd: ALL first (so "add ALL, drop X" works), then the
    // individual adds, then the individual drops.
    if cc.add_capabilities.iter().any(is_all) {
        caps = all.clone();
    }
    if cc.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    let mut ambient = Vec::new();
    for (list, field, ambient_too) in [
        (&cc.add_capabilities, "add_capabilities", false),
        (
            &cc.add_ambient_capabilities,
            "add_ambient_capabilities",
            true,
        ),
    ] {
        for (i, a) in list.iter().enumerate() {
            let names: Vec<String> = if is_all(a) {
                if !ambient_too {
                    continue;
                }
                all.clone()
            } else {
                let f = format!("security_context.capabilities.{field}[{i}]");
                let name = cap_name(a, &f)?;
                if !all.contains(&name) {
                    return Err(invalid(
                        f,
                        format!(
                            "{name} is not in berthd's own bounding set: this node withholds it, so no container here can have it"
                        ),
                    ));
                }
                vec![name]
            };
            for name in names {
                if ambient_too && !ambient.contains(&name) {
                    ambient.push(name.clone());
                }
                if !caps.contains(&name) {
                    caps.push(name);
                }
            }
        }
    }
    for (i, d) in cc.drop_capabilities.iter().enumerate() {
        if is_all(d) {
            ambient.clear();
            continue;
        }
        let name = cap_name(
            d,
            &format!("security_context.capabilities.drop_capabilities[{i}]"),
        )?;
        caps.retain(|c| *c != name);
        ambient.retain(|c| *c != name);
    }
    Ok((caps, ambient))
}

// --------------------------------------------------------------- mounts

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Value {
    json!({ "destination": dest, "type": typ, "source": source, "options": options })
}

fn clean_abs(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// The mount list and the rootfs propagation it needs (as containerd's
/// WithMounts).
fn mounts(
    c: &ContainerConfig,
    pod: &PodContext,
    readonly_rootfs: bool,
) -> Result<(Vec<Value>, Option<&'static str>), SpecError> {
    // (destination, mount) for the binds: extra mounts, then CRI mounts.
    let mut binds: Vec<(PathBuf, Value)> = Vec::new();
    let mut cri_dests: HashSet<PathBuf> = HashSet::new();
    let mut propagation: Option<&'static str> = None;

    let mut cri_binds = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let field = |f: &str| format!("mounts[{i}].{f}");
        let dest = clean_abs(&m.container_path).ok_or_else(|| {
            invalid(
                field("container_path"),
                format!("{:?} is not an absolute path", m.container_path),
            )
        })?;
        if m.image.as_ref().is_some_and(|s| !s.image.is_empty()) {
            return Err(SpecError::Unsupported(format!(
                "{}: image volumes",
                field("image")
            )));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(SpecError::Unsupported(format!(
                "{}: id-mapped mounts other than the pod's own user namespace mappings, or on a filesystem without idmapped mounts",
                field("uid_mappings")
            )));
        }
        if m.host_path.is_empty() {
            return Err(invalid(field("host_path"), "empty"));
        }
        let src = match std::fs::canonicalize(&m.host_path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(invalid(
                    field("host_path"),
                    format!("{:?} does not exist", m.host_path),
                ));
            }
            Err(e) => {
                return Err(invalid(
                    field("host_path"),
                    format!("{:?}: {e}", m.host_path),
                ));
            }
        };
        let mut options = vec!["rbind"];
        match m.propagation {
            0 => options.push("rprivate"),
            1 => {
                options.push("rslave");
                // The rootfs's propagation, always recursive: the OCI
                // names are "slave" and "shared" (libcontainer knows
                // only those; runc takes both forms).
                if propagation != Some("shared") {
                    propagation = Some("slave");
                }
            }
            2 => {
                options.push("rshared");
                propagation = Some("shared");
            }
            p => return Err(invalid(field("propagation"), format!("unknown value {p}"))),
        }
        if m.recursive_read_only {
            if !m.readonly {
                return Err(invalid(field("recursive_read_only"), "requires readonly"));
            }
            if m.propagation != 0 {
                return Err(invalid(
                    field("recursive_read_only"),
                    "requires private propagation",
                ));
            }
            options.push("rro");
        } else if m.readonly {
            options.push("ro");
        }
        cri_dests.insert(dest.clone());
        let value = mount(
            &dest.to_string_lossy(),
            "bind",
            &src.to_string_lossy(),
            &options,
        );
        cri_binds.push((dest, value));
    }

    // The pod's /dev/shm and /etc files, unless a CRI mount replaces them.
    let shm_src = pod
        .shm_dir
        .as_ref()
        .map_or_else(|| DEV_SHM.to_string(), |p| p.to_string_lossy().into_owned());
    let etc_opts: &[&str] = if readonly_rootfs {
        &["rbind", "rprivate", "ro"]
    } else {
        &["rbind", "rprivate"]
    };
    let extras: [(&str, String, &[&str]); 4] = [
        (
            DEV_SHM,
            shm_src,
            &["rbind", "rprivate", "nosuid", "nodev", "noexec"],
        ),
        (
            ETC_HOSTNAME,
            pod.hostname_file.to_string_lossy().into_owned(),
            etc_opts,
        ),
        (
            ETC_HOSTS,
            pod.hosts_file.to_string_lossy().into_owned(),
            etc_opts,
        ),
        (
            RESOLV_CONF,
            pod.resolv_file.to_string_lossy().into_owned(),
            etc_opts,
        ),
    ];
    for (dest, src, opts) in extras {
        let d = PathBuf::from(dest);
        if !cri_dests.contains(&d) {
            binds.push((d, mount(dest, "bind", &src, opts)));
        }
    }
    binds.extend(cri_binds);
    // containerd sorts these (stably) by depth so parents mount first.
    binds.sort_by_key(|(d, _)| depth(d));

    let defaults = [
        (
            "/proc",
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        ),
        (
            "/dev",
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
        ),
        (
            "/dev/pts",
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            ),
        ),
        (
            "/dev/mqueue",
            mount(
                "/dev/mqueue",
                "mqueue",
                "mqueue",
                &["nosuid", "noexec", "nodev"],
            ),
        ),
        (
            "/sys",
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
        ),
        (
            "/sys/fs/cgroup",
            mount(
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                &["nosuid", "noexec", "nodev", "relatime", "ro"],
            ),
        ),
    ];
    let dev_replaced = cri_dests.contains(Path::new("/dev"));
    let mut out: Vec<Value> = defaults
        .into_iter()
        .filter(|(d, _)| {
            !cri_dests.contains(Path::new(d)) && (!dev_replaced || !d.starts_with("/dev/"))
        })
        .map(|(_, m)| m)
        .collect();
    out.extend(binds.into_iter().map(|(_, m)| m));
    Ok((out, propagation))
}

// -------------------------------------------------------------- devices

/// containerd/runc's default device cgroup rules: deny all, then allow the
/// standard nodes.
fn default_device_rules() -> Vec<Value> {
    let mut v = vec![json!({ "allow": false, "access": "rwm" })];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (5, 0),
        (5, 1),
        (5, 2),
        (1, 8),
        (1, 9),
    ] {
        v.push(
            json!({ "allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm" }),
        );
    }
    v.push(json!({ "allow": true, "type": "c", "major": 136, "access": "rwm" }));
    v.push(json!({ "allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm" }));
    v
}

fn dev_major(rdev: u64) -> u64 {
    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)
}

fn dev_minor(rdev: u64) -> u64 {
    (rdev & 0xff) | ((rdev >> 12) & !0xff)
}

/// `linux.devices` and the device cgroup rules for the CRI devices.
fn devices(c: &ContainerConfig) -> Result<(Vec<Value>, Vec<Value>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = default_device_rules();
    for (i, d) in c.devices.iter().enumerate() {
        let field = |f: &str| format!("devices[{i}].{f}");
        let dest = clean_abs(&d.container_path).ok_or_else(|| {
            invalid(
                field("container_path"),
                format!("{:?} is not an absolute path", d.container_path),
            )
        })?;
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !perms.chars().all(|ch| matches!(ch, 'r' | 'w' | 'm')) {
            return Err(invalid(field("permissions"), format!("invalid {perms:?}")));
        }
        let meta = std::fs::canonicalize(&d.host_path)
            .and_then(std::fs::metadata)
            .map_err(|e| invalid(field("host_path"), format!("{:?}: {e}", d.host_path)))?;
        let ft = meta.file_type();
        let typ = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            return Err(invalid(
                field("host_path"),
                format!(
                    "{:?} is not a device node (directories of devices are not supported)",
                    d.host_path
                ),
            ));
        };
        let (major, minor) = (dev_major(meta.rdev()), dev_minor(meta.rdev()));
        nodes.push(json!({
            "path": dest.to_string_lossy(),
            "type": typ,
            "major": major,
            "minor": minor,
            "fileMode": meta.mode() & 0o777,
            "uid": 0,
            "gid": 0,
        }));
        rules.push(
            json!({ "allow": true, "type": typ, "major": major, "minor": minor, "access": perms }),
        );
    }
    Ok((nodes, rules))
}

// ------------------------------------------------------------ privileged

/// The capabilities berthd itself may hold (its bounding set): what a
/// privileged container gets, as containerd's "all current capabilities"
/// (a node may run berthd without some).
fn own_capabilities() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// What `privileged` adds, as containerd: every host device (and a device
/// rule allowing all), /sys and the cgroup fs writable. (All capabilities,
/// no masked or read-only paths and no seccomp are set where those are.)
fn privileged(
    mounts: &mut [Value],
    devices: &mut Vec<Value>,
    linux: &mut Map<String, Value>,
) -> Result<(), SpecError> {
    for m in mounts.iter_mut() {
        if matches!(m["destination"].as_str(), Some("/sys" | "/sys/fs/cgroup"))
            && let Some(opts) = m.get_mut("options").and_then(Value::as_array_mut)
        {
            opts.retain(|o| o != "ro");
        }
    }
    let have: HashSet<String> = devices
        .iter()
        .filter_map(|d| d["path"].as_str().map(String::from))
        .collect();
    for d in host_devices(Path::new("/dev")) {
        if !have.contains(d["path"].as_str().unwrap_or("")) {
            devices.push(d);
        }
    }
    linux.insert("devices".into(), Value::Array(devices.clone()));
    if let Some(r) = linux.get_mut("resources").and_then(Value::as_object_mut) {
        r.insert(
            "devices".into(),
            json!([{ "allow": true, "access": "rwm" }]),
        );
    }
    Ok(())
}

/// The device nodes under `dir` (not /dev/pts, /dev/shm, /dev/mqueue,
/// which the container gets its own of), as OCI `linux.devices`.
fn host_devices(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !matches!(path.to_str(), Some("/dev/pts" | "/dev/shm" | "/dev/mqueue")) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        let typ = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            continue;
        };
        // The console and ptmx are the container's own; the standard
        // nodes every container gets are made by the runtime already.
        if matches!(
            path.to_str(),
            Some(
                "/dev/console"
                    | "/dev/ptmx"
                    | "/dev/null"
                    | "/dev/zero"
                    | "/dev/full"
                    | "/dev/random"
                    | "/dev/urandom"
                    | "/dev/tty"
            )
        ) {
            continue;
        }
        out.push(json!({
            "path": path.to_string_lossy(),
            "type": typ,
            "major": dev_major(meta.rdev()),
            "minor": dev_minor(meta.rdev()),
            "fileMode": meta.mode() & 0o777,
            "uid": meta.uid(),
            "gid": meta.gid(),
        }));
    }
    out
}

/// AppArmor and SELinux: berth's hosts have neither, so an explicit
/// profile or label is refused, as containerd does on such a host; the
/// runtime default (or none) is accepted.
fn check_lsm(sc: &LinuxContainerSecurityContext) -> Result<(), SpecError> {
    let apparmor_on = Path::new("/sys/kernel/security/apparmor").exists();
    if let Some(p) = &sc.apparmor {
        // 0 RuntimeDefault, 1 Unconfined, 2 Localhost
        if p.profile_type == 2 && !apparmor_on {
            return Err(invalid(
                "security_context.apparmor",
                format!(
                    "profile {:?} asked for, but AppArmor is not enabled on this node",
                    p.localhost_ref
                ),
            ));
        }
    }
    #[allow(deprecated)]
    let legacy = sc.apparmor_profile.as_str();
    if let Some(name) = legacy.strip_prefix("localhost/")
        && !apparmor_on
    {
        return Err(invalid(
            "security_context.apparmor_profile",
            format!("profile {name:?} asked for, but AppArmor is not enabled on this node"),
        ));
    }
    let selinux_on = Path::new("/sys/fs/selinux/enforce").exists();
    if let Some(o) = &sc.selinux_options
        && !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
        && !selinux_on
    {
        return Err(invalid(
            "security_context.selinux_options",
            "an SELinux label asked for, but SELinux is not enabled on this node",
        ));
    }
    Ok(())
}

/// The pod's sysctls, if each is namespaced and the pod has the namespace:
/// IPC ones (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`)
/// need the pod's own IPC namespace, `net.*` its own network namespace.
fn sysctls(pod: &PodContext) -> Result<std::collections::BTreeMap<String, String>, SpecError> {
    const IPC: &[&str] = &[
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
    ];
    for (k, v) in &pod.sysctls {
        let field = format!("sysctls[{k:?}]");
        if v.contains('\n') {
            return Err(invalid(field, "the value has a newline"));
        }
        let key = k.replace('/', ".");
        if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            if pod.ipc_ns.is_none() {
                return Err(invalid(
                    field,
                    "an IPC sysctl in a pod that uses the host's IPC namespace",
                ));
            }
        } else if key.starts_with("net.") {
            if pod.net_ns.is_none() {
                return Err(invalid(
                    field,
                    "a network sysctl in a pod that uses the host's network",
                ));
            }
        } else {
            return Err(invalid(field, "not a namespaced sysctl"));
        }
    }
    Ok(pod
        .sysctls
        .iter()
        .map(|(k, v)| (k.replace('/', "."), v.clone()))
        .collect())
}

// ------------------------------------------------------ namespaces etc.

fn namespaces(sc: &LinuxContainerSecurityContext, pod: &PodContext) -> Result<Value, SpecError> {
    let mut ns = Vec::new();
    // The pod's user namespace first: the runtime joins it before making
    // the container's own namespaces, so that they belong to it.
    if let Some((path, _)) = &pod.user_ns {
        ns.push(json!({ "type": "user", "path": path.to_string_lossy() }));
    }
    // NamespaceMode: 0 POD, 1 CONTAINER, 2 NODE, 3 TARGET.
    match sc.namespace_options.as_ref().map(|o| o.pid) {
        None | Some(1) => ns.push(json!({ "type": "pid" })),
        Some(2) => {}
        Some(0) => match &pod.pid_ns {
            Some(path) => ns.push(json!({ "type": "pid", "path": path })),
            None => {
                return Err(invalid(
                    "security_context.namespace_options.pid",
                    "POD, but the pod does not share a PID namespace",
                ));
            }
        },
        Some(3) => match &pod.target_pid_ns {
            Some(path) => ns.push(json!({ "type": "pid", "path": path })),
            None => {
                return Err(invalid(
                    "security_context.namespace_options.target_id",
                    "the target container is not running",
                ));
            }
        },
        Some(p) => {
            return Err(invalid(
                "security_context.namespace_options.pid",
                format!("unknown mode {p}"),
            ));
        }
    }
    for (typ, path) in [
        ("ipc", &pod.ipc_ns),
        ("uts", &pod.uts_ns),
        ("network", &pod.net_ns),
    ] {
        if let Some(p) = path {
            ns.push(json!({ "type": typ, "path": p.to_string_lossy() }));
        }
    }
    ns.push(json!({ "type": "mount" }));
    // containerd gives each container its own cgroup namespace on cgroup v2.
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        ns.push(json!({ "type": "cgroup" }));
    }
    Ok(Value::Array(ns))
}

fn cgroups_path(id: &str, pod: &PodContext) -> String {
    let parent = pod.cgroup_parent.trim_end_matches('/');
    if parent.is_empty() {
        format!("/berth/{id}")
    } else if parent.starts_with('/') {
        format!("{parent}/berth-{id}")
    } else {
        format!("/{parent}/berth-{id}")
    }
}

fn resources_from_cri(
    r: &cri_api::v1::LinuxContainerResources,
    out: &mut Map<String, Value>,
) -> Result<(), SpecError> {
    let mut cpu = Map::new();
    if r.cpu_shares != 0 {
        let s = u64::try_from(r.cpu_shares)
            .map_err(|_| invalid("linux.resources.cpu_shares", "must not be negative"))?;
        cpu.insert("shares".into(), json!(s));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period != 0 {
        let p = u64::try_from(r.cpu_period)
            .map_err(|_| invalid("linux.resources.cpu_period", "must not be negative"))?;
        cpu.insert("period".into(), json!(p));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    let mut mem = Map::new();
    if r.memory_limit_in_bytes != 0 {
        mem.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes != 0 {
        mem.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !mem.is_empty() {
        out.insert("memory".into(), Value::Object(mem));
    }
    // The kubelet sends a limit (0 unless asked) for every page size the
    // node has; without the hugetlb controller none can be enforced, and
    // runc skips them too rather than fail every container.
    if !r.hugepage_limits.is_empty() && !crate::cgroups::has_hugetlb() {
        tracing::debug!("no hugetlb cgroup controller: hugepage limits not applied");
    } else if !r.hugepage_limits.is_empty() {
        let hp: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|h| json!({ "pageSize": h.page_size, "limit": h.limit }))
            .collect();
        out.insert("hugepageLimits".into(), Value::Array(hp));
    }
    if !r.unified.is_empty() {
        let mut keys: Vec<_> = r.unified.iter().collect();
        keys.sort();
        let u: Map<String, Value> = keys
            .into_iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        out.insert("unified".into(), Value::Object(u));
    }
    Ok(())
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1::{
        Capability, Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerResources, Mount,
        NamespaceOption,
    };

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmpdir(tag: &str) -> Tmp {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "berth-spec-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn rootfs() -> Tmp {
        let t = tmpdir("rootfs");
        std::fs::create_dir_all(t.0.join("etc")).unwrap();
        std::fs::write(
            t.0.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            t.0.join("etc/group"),
            "root:x:0:\napp:x:1000:\naudio:x:63:app\n",
        )
        .unwrap();
        t
    }

    fn pod() -> PodContext {
        PodContext {
            hostname_file: "/pod/hostname".into(),
            hosts_file: "/pod/hosts".into(),
            resolv_file: "/pod/resolv.conf".into(),
            hostname: "mypod".into(),
            cgroup_parent: "/kubepods/pod123".into(),
            ..Default::default()
        }
    }

    fn cfg() -> ContainerConfig {
        ContainerConfig {
            command: vec!["/bin/true".into()],
            ..Default::default()
        }
    }

    fn with_sc(mut c: ContainerConfig, sc: LinuxContainerSecurityContext) -> ContainerConfig {
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        });
        c
    }

    fn spec_of(c: &ContainerConfig, img: &ImageDefaults) -> Result<Value, SpecError> {
        let r = rootfs();
        build("abc", c, img, &pod(), &r.0)
    }

    fn strs(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    fn args_of(
        command: &[&str],
        args: &[&str],
        ep: &[&str],
        cmd: &[&str],
    ) -> Result<Vec<String>, SpecError> {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = ContainerConfig {
            command: s(command),
            args: s(args),
            ..Default::default()
        };
        let img = ImageDefaults {
            entrypoint: s(ep),
            cmd: s(cmd),
            ..Default::default()
        };
        spec_of(&c, &img).map(|v| strs(&v["process"]["args"]))
    }

    #[test]
    fn command_and_args() {
        // Nothing from CRI: image entrypoint + cmd.
        assert_eq!(args_of(&[], &[], &["/ep"], &["a"]).unwrap(), ["/ep", "a"]);
        // CRI args only: image entrypoint + CRI args.
        assert_eq!(
            args_of(&[], &["b"], &["/ep"], &["a"]).unwrap(),
            ["/ep", "b"]
        );
        // CRI command without args: the image Cmd is not used.
        assert_eq!(args_of(&["/c"], &[], &["/ep"], &["a"]).unwrap(), ["/c"]);
        // Both from CRI.
        assert_eq!(
            args_of(&["/c"], &["b"], &["/ep"], &["a"]).unwrap(),
            ["/c", "b"]
        );
        // Cmd only.
        assert_eq!(args_of(&[], &[], &[], &["/cmd"]).unwrap(), ["/cmd"]);
        assert!(matches!(
            args_of(&[], &[], &[], &[]),
            Err(SpecError::NoCommand)
        ));
        assert_eq!(
            args_of(&[], &[], &[], &[]).unwrap_err().to_string(),
            "invalid argument: no command specified"
        );
    }

    #[test]
    fn env_merge() {
        let mut c = cfg();
        c.envs = vec![
            KeyValue {
                key: "A".into(),
                value: b"cri".to_vec(),
            },
            KeyValue {
                key: "C".into(),
                value: b"3".to_vec(),
            },
        ];
        let img = ImageDefaults {
            env: vec!["A=img".into(), "B=2".into()],
            ..Default::default()
        };
        let env = strs(&spec_of(&c, &img).unwrap()["process"]["env"]);
        assert_eq!(
            env,
            [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOSTNAME=mypod",
                "A=cri",
                "B=2",
                "C=3"
            ]
        );
        let img = ImageDefaults {
            env: vec!["PATH=/x".into(), "HOSTNAME=img".into()],
            ..Default::default()
        };
        let env = strs(&spec_of(&cfg(), &img).unwrap()["process"]["env"]);
        assert_eq!(env, ["PATH=/x", "HOSTNAME=img"]);
    }

    #[test]
    fn cwd_precedence() {
        let img = ImageDefaults {
            working_dir: "/img".into(),
            ..Default::default()
        };
        let mut c = cfg();
        assert_eq!(
            spec_of(&c, &ImageDefaults::default()).unwrap()["process"]["cwd"],
            "/"
        );
        assert_eq!(spec_of(&c, &img).unwrap()["process"]["cwd"], "/img");
        c.working_dir = "/cri".into();
        assert_eq!(spec_of(&c, &img).unwrap()["process"]["cwd"], "/cri");
        c.working_dir = "rel".into();
        assert!(
            spec_of(&c, &img)
                .unwrap_err()
                .to_string()
                .contains("working_dir")
        );
    }

    fn user_of(c: &ContainerConfig, image_user: &str) -> Result<Value, SpecError> {
        let img = ImageDefaults {
            user: image_user.into(),
            ..Default::default()
        };
        spec_of(c, &img).map(|v| v["process"]["user"].clone())
    }

    #[test]
    fn users() {
        let c = cfg();
        assert_eq!(
            user_of(&c, "").unwrap(),
            json!({"uid":0,"gid":0,"additionalGids":[0]})
        );
        assert_eq!(
            user_of(&c, "1000").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,63]})
        );
        assert_eq!(
            user_of(&c, "app").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,63]})
        );
        assert_eq!(
            user_of(&c, "app:audio").unwrap(),
            json!({"uid":1000,"gid":63,"additionalGids":[63]})
        );
        assert_eq!(
            user_of(&c, "1000:63").unwrap(),
            json!({"uid":1000,"gid":63,"additionalGids":[63]})
        );
        assert_eq!(
            user_of(&c, "4242").unwrap(),
            json!({"uid":4242,"gid":0,"additionalGids":[0]})
        );
        assert_eq!(user_of(&c, "nobody").unwrap()["uid"], 65534);
        let e = user_of(&c, "ghost").unwrap_err().to_string();
        assert!(e.contains("ghost") && e.contains("image User"), "{e}");
        assert!(user_of(&c, "app:nogroup").is_err());

        // run_as_user overrides the image; run_as_group, supplemental groups.
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 65534 }),
            supplemental_groups: vec![5000],
            ..Default::default()
        };
        assert_eq!(
            user_of(&with_sc(cfg(), sc.clone()), "app").unwrap(),
            json!({"uid":65534,"gid":65534,"additionalGids":[65534,5000]})
        );
        let sc2 = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 7 }),
            ..sc
        };
        assert_eq!(user_of(&with_sc(cfg(), sc2), "").unwrap()["gid"], 7);
        let sc = LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            ..Default::default()
        };
        assert_eq!(
            user_of(&with_sc(cfg(), sc), "root").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,63]})
        );
        // Strict: the image's /etc/group adds nothing.
        let sc = LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            supplemental_groups: vec![5000],
            supplemental_groups_policy: 1,
            ..Default::default()
        };
        assert_eq!(
            user_of(&with_sc(cfg(), sc), "").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,5000]})
        );
        let sc = LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..Default::default()
        };
        assert!(
            user_of(&with_sc(cfg(), sc), "")
                .unwrap_err()
                .to_string()
                .contains("run_as_username")
        );
        let sc = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 7 }),
            ..Default::default()
        };
        assert!(user_of(&with_sc(cfg(), sc), "app").is_err());
    }

    #[test]
    fn a_huge_passwd_or_group_is_refused_naming_it() {
        for name in ["passwd", "group"] {
            let r = tmpdir(&format!("huge-{name}"));
            std::fs::create_dir_all(r.0.join("etc")).unwrap();
            let f = std::fs::File::create(r.0.join("etc").join(name)).unwrap();
            // Sparse: 1 GiB to read, nothing on disk.
            f.set_len(1 << 30).unwrap();
            let e = read_etc_file(&r.0, name).unwrap_err().to_string();
            assert!(e.contains(&format!("image /etc/{name}")), "{e}");
            assert!(e.contains("larger than 4194304 bytes"), "{e}");
            f.set_len(MAX_ETC_FILE).unwrap();
            assert_eq!(
                read_etc_file(&r.0, name).unwrap().unwrap().len() as u64,
                MAX_ETC_FILE
            );
        }
    }

    #[test]
    fn passwd_symlink_is_not_followed() {
        let r = tmpdir("symroot");
        let outside = tmpdir("outside");
        std::fs::write(outside.0.join("passwd"), "evil:x:7:7::/:/bin/sh\n").unwrap();
        std::fs::create_dir_all(r.0.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.0.join("passwd"), r.0.join("etc/passwd")).unwrap();
        let img = ImageDefaults {
            user: "evil".into(),
            ..Default::default()
        };
        assert!(build("abc", &cfg(), &img, &pod(), &r.0).is_err());
    }

    #[test]
    fn ambient_capabilities_are_in_every_set_until_dropped() {
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_ambient_capabilities: vec!["NET_ADMIN".into(), "CAP_NET_BIND_SERVICE".into()],
                drop_capabilities: vec!["NET_ADMIN".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = spec_of(&with_sc(cfg(), sc), &ImageDefaults::default()).unwrap();
        let caps = &v["process"]["capabilities"];
        assert_eq!(strs(&caps["ambient"]), ["CAP_NET_BIND_SERVICE"]);
        assert_eq!(caps["ambient"], caps["inheritable"]);
        let bounding = strs(&caps["bounding"]);
        assert!(bounding.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(!bounding.contains(&"CAP_NET_ADMIN".to_string()));
        let bad = LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_ambient_capabilities: vec!["CAP_NOPE".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = spec_of(&with_sc(cfg(), bad), &ImageDefaults::default()).unwrap_err();
        assert!(e.to_string().contains("add_ambient_capabilities[0]"), "{e}");
    }

    fn caps_of(add: &[&str], drop: &[&str]) -> Vec<String> {
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = spec_of(&with_sc(cfg(), sc), &ImageDefaults::default()).unwrap();
        let caps = &v["process"]["capabilities"];
        assert_eq!(caps["bounding"], caps["effective"]);
        assert_eq!(caps["bounding"], caps["permitted"]);
        assert!(caps.get("inheritable").is_none() && caps.get("ambient").is_none());
        strs(&caps["bounding"])
    }

    #[test]
    fn capabilities_add_drop() {
        assert_eq!(caps_of(&[], &[]), DEFAULT_CAPS);
        let c = caps_of(&["net_admin", "CAP_SYS_TIME"], &["chown", "CAP_KILL"]);
        assert!(c.contains(&"CAP_NET_ADMIN".into()) && c.contains(&"CAP_SYS_TIME".into()));
        assert!(!c.contains(&"CAP_CHOWN".into()) && !c.contains(&"CAP_KILL".into()));
        assert_eq!(c.len(), DEFAULT_CAPS.len());
        assert_eq!(
            caps_of(&["NET_BIND_SERVICE"], &["ALL"]),
            ["CAP_NET_BIND_SERVICE"]
        );
        assert!(caps_of(&[], &["all"]).is_empty());
        // ALL is what berthd holds (this host may withhold some).
        let all = caps_of(&["ALL"], &["SYS_ADMIN"]);
        assert_eq!(all.len(), own_capabilities().len() - 1);
        assert!(!all.contains(&"CAP_SYS_ADMIN".into()));
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["BOGUS".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(spec_of(&with_sc(cfg(), sc), &ImageDefaults::default()).is_err());
    }

    #[test]
    fn privileged_needs_a_privileged_pod_and_opens_everything() {
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            seccomp: Some(cri_api::v1::SecurityProfile::default()),
            ..Default::default()
        };
        let c = with_sc(cfg(), sc);
        let e = spec_of(&c, &ImageDefaults::default()).unwrap_err();
        assert!(e.to_string().contains("privileged pod sandbox"), "{e}");
        let r = rootfs();
        let mut p = pod();
        p.privileged = true;
        let v = build("abc", &c, &ImageDefaults::default(), &p, &r.0).unwrap();
        assert_eq!(
            v["process"]["capabilities"]["bounding"],
            json!(own_capabilities())
        );
        assert!(own_capabilities().contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([{ "allow": true, "access": "rwm" }])
        );
        let devs = v["linux"]["devices"].as_array().unwrap();
        assert!(devs.iter().all(|d| d["path"] != "/dev/null"));
        assert!(!devs.is_empty());
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(!sys["options"].as_array().unwrap().contains(&json!("ro")));
    }

    #[test]
    fn sysctls_must_be_namespaced_and_have_their_namespace() {
        let r = rootfs();
        let mut p = pod();
        p.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        let e = build("abc", &cfg(), &ImageDefaults::default(), &p, &r.0).unwrap_err();
        assert!(e.to_string().contains("host's network"), "{e}");
        p.net_ns = Some("/run/netns/x".into());
        p.ipc_ns = Some("/run/ipc/x".into());
        p.sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
        let v = build("abc", &cfg(), &ImageDefaults::default(), &p, &r.0).unwrap();
        assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        p.sysctls.insert("kernel.panic".into(), "1".into());
        let e = build("abc", &cfg(), &ImageDefaults::default(), &p, &r.0).unwrap_err();
        assert!(e.to_string().contains("not a namespaced sysctl"), "{e}");
    }

    #[test]
    fn namespaces_and_hostname() {
        let r = rootfs();
        let img = ImageDefaults::default();
        let v = build("abc", &cfg(), &img, &pod(), &r.0).unwrap();
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                assert!(n.get("path").is_none());
                n["type"].as_str().unwrap()
            })
            .collect();
        assert_eq!(&ns[..2], ["pid", "mount"]);
        assert!(v.get("hostname").is_none());

        let mut p = pod();
        p.net_ns = Some("/run/berth/netns/x".into());
        p.ipc_ns = Some("/run/berth/ipcns/x".into());
        p.uts_ns = Some("/run/berth/utsns/x".into());
        let v = build("abc", &cfg(), &img, &p, &r.0).unwrap();
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns[0], json!({"type":"pid"}));
        assert_eq!(ns[1], json!({"type":"ipc","path":"/run/berth/ipcns/x"}));
        assert_eq!(ns[2], json!({"type":"uts","path":"/run/berth/utsns/x"}));
        assert_eq!(ns[3], json!({"type":"network","path":"/run/berth/netns/x"}));
        assert_eq!(ns[4], json!({"type":"mount"}));
        assert_eq!(v["hostname"], "mypod");

        // Host PID.
        let sc = LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = build("abc", &with_sc(cfg(), sc), &img, &pod(), &r.0).unwrap();
        assert!(
            !v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "pid")
        );
    }

    fn dests(v: &Value) -> Vec<String> {
        v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect()
    }

    fn find<'a>(v: &'a Value, dest: &str) -> Vec<&'a Value> {
        v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"] == dest)
            .collect()
    }

    #[test]
    fn default_mounts() {
        let v = spec_of(&cfg(), &ImageDefaults::default()).unwrap();
        assert_eq!(
            dests(&v),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/shm",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf"
            ]
        );
        assert_eq!(find(&v, "/dev/shm")[0]["source"], "/dev/shm");
        assert_eq!(
            find(&v, "/etc/hosts")[0],
            &json!({
                "destination": "/etc/hosts", "type": "bind", "source": "/pod/hosts",
                "options": ["rbind", "rprivate"]
            })
        );
        let mut p = pod();
        p.shm_dir = Some("/run/pod/shm".into());
        let sc = LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        };
        let r = rootfs();
        let v = build(
            "abc",
            &with_sc(cfg(), sc),
            &ImageDefaults::default(),
            &p,
            &r.0,
        )
        .unwrap();
        assert_eq!(find(&v, "/dev/shm")[0]["source"], "/run/pod/shm");
        assert_eq!(
            find(&v, "/etc/resolv.conf")[0]["options"],
            json!(["rbind", "rprivate", "ro"])
        );
        assert_eq!(
            v["root"],
            json!({"path": r.0.to_string_lossy(), "readonly": true})
        );
        assert_eq!(v["linux"]["maskedPaths"], json!(DEFAULT_MASKED_PATHS));
        assert_eq!(v["linux"]["readonlyPaths"], json!(DEFAULT_READONLY_PATHS));
    }

    fn cri_mount(container: &str, host: &Path, readonly: bool, propagation: i32) -> Mount {
        Mount {
            container_path: container.into(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            propagation,
            ..Default::default()
        }
    }

    #[test]
    fn cri_mounts() {
        let h = tmpdir("host");
        std::fs::write(h.0.join("hosts"), "").unwrap();
        std::fs::create_dir(h.0.join("data")).unwrap();
        std::os::unix::fs::symlink(h.0.join("data"), h.0.join("link")).unwrap();
        let canon = std::fs::canonicalize(h.0.join("data")).unwrap();

        let mut c = cfg();
        c.mounts = vec![
            cri_mount("/data/sub", &h.0.join("data"), false, 1),
            cri_mount("/etc/hosts", &h.0.join("hosts"), true, 0),
            cri_mount("/data", &h.0.join("link"), true, 2),
        ];
        let v = spec_of(&c, &ImageDefaults::default()).unwrap();
        let hosts = find(&v, "/etc/hosts");
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0]["options"], json!(["rbind", "rprivate", "ro"]));
        let data = find(&v, "/data")[0];
        assert_eq!(data["source"], canon.to_string_lossy().as_ref());
        assert_eq!(data["options"], json!(["rbind", "rshared", "ro"]));
        assert_eq!(
            find(&v, "/data/sub")[0]["options"],
            json!(["rbind", "rslave"])
        );
        let d = dests(&v);
        let pos = |x: &str| d.iter().position(|y| y == x).unwrap();
        assert!(pos("/data") < pos("/data/sub"));
        assert!(pos("/sys/fs/cgroup") < pos("/data"));
        assert_eq!(v["linux"]["rootfsPropagation"], "shared");

        let mut c = cfg();
        c.mounts = vec![cri_mount("/x", &h.0.join("missing"), false, 0)];
        let e = spec_of(&c, &ImageDefaults::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mounts[0].host_path") && e.contains("missing"),
            "{e}"
        );
        c.mounts = vec![cri_mount("rel", &h.0.join("data"), false, 0)];
        assert!(
            spec_of(&c, &ImageDefaults::default())
                .unwrap_err()
                .to_string()
                .contains("container_path")
        );
    }

    #[test]
    fn cgroups_and_resources() {
        let r = rootfs();
        let img = ImageDefaults::default();
        let mut c = cfg();
        c.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 512,
                cpu_quota: 50000,
                cpu_period: 100000,
                memory_limit_in_bytes: 1 << 20,
                oom_score_adj: 999,
                cpuset_cpus: "0".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let v = build("abc", &c, &img, &pod(), &r.0).unwrap();
        assert_eq!(v["linux"]["cgroupsPath"], "/kubepods/pod123/berth-abc");
        assert_eq!(v["process"]["oomScoreAdj"], 999);
        let res = &v["linux"]["resources"];
        assert_eq!(
            res["cpu"],
            json!({"shares":512,"quota":50000,"period":100000,"cpus":"0"})
        );
        assert_eq!(res["memory"], json!({"limit": 1048576}));
        assert!(res.get("pids").is_none());
        assert_eq!(res["devices"][0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(v["ociVersion"], "1.0.2");
        let mut p = pod();
        p.cgroup_parent = String::new();
        let v = build("abc", &cfg(), &img, &p, &r.0).unwrap();
        assert_eq!(v["linux"]["cgroupsPath"], "/berth/abc");
        assert!(v["process"].get("oomScoreAdj").is_none());
        assert!(build("../x", &cfg(), &img, &p, &r.0).is_err());
    }

    #[test]
    fn stop_signals() {
        assert_eq!(stop_signal("").unwrap(), 15);
        assert_eq!(stop_signal("SIGTERM").unwrap(), 15);
        assert_eq!(stop_signal("TERM").unwrap(), 15);
        assert_eq!(stop_signal("15").unwrap(), 15);
        assert_eq!(stop_signal("sigkill").unwrap(), 9);
        assert_eq!(stop_signal("SIGQUIT").unwrap(), 3);
        assert_eq!(stop_signal("SIGRTMIN+3").unwrap(), 37);
        assert_eq!(stop_signal("RTMAX").unwrap(), 64);
        assert!(stop_signal("0").is_err());
        assert!(stop_signal("SIGBOGUS").is_err());
        assert!(stop_signal("99").is_err());
    }
}
