//! Mounts: the runtime's defaults (/proc, /dev, /sys, ...), the pod's
//! /dev/shm and /etc files, the CRI's binds with their propagation, and
//! the root filesystem, as containerd's `WithMounts`.

use std::collections::HashSet;
use std::io;
use std::path::{Component, Path, PathBuf};

use cri_api::v1::ContainerConfig;
use oci_spec::runtime::{Mount, Root, Spec};

use super::{Context, Error, PodContext, invalid, linux_mut};

const ETC_HOSTNAME: &str = "/etc/hostname";
const ETC_HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";
const DEV_SHM: &str = "/dev/shm";

/// Sets `root`, `mounts` and `linux.rootfsPropagation`.
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    let (mounts, propagation) = mounts(cx.config, cx.pod, cx.sc.readonly_rootfs)?;
    let mut root = Root::default();
    root.set_path(cx.rootfs.to_path_buf());
    root.set_readonly(Some(cx.sc.readonly_rootfs));
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    if let Some(p) = propagation {
        linux_mut(spec).set_rootfs_propagation(Some(p.to_string()));
    }
    Ok(())
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

pub(super) fn clean_abs(p: &str) -> Option<PathBuf> {
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
) -> Result<(Vec<Mount>, Option<&'static str>), Error> {
    // (destination, mount) for the binds: extra mounts, then CRI mounts.
    let mut binds: Vec<(PathBuf, Mount)> = Vec::new();
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
            return Err(Error::Unsupported(format!(
                "{}: image volumes",
                field("image")
            )));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(Error::Unsupported(format!(
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
    let mut out: Vec<Mount> = defaults
        .into_iter()
        .filter(|(d, _)| {
            !cri_dests.contains(Path::new(d)) && (!dev_replaced || !d.starts_with("/dev/"))
        })
        .map(|(_, m)| m)
        .collect();
    out.extend(binds.into_iter().map(|(_, m)| m));
    Ok((out, propagation))
}
