//! Devices: the default device cgroup rules, the CRI's device nodes, and
//! what `privileged` opens up (every host device, /sys and the cgroup fs
//! writable).

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cri_api::v1::ContainerConfig;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Spec};

use super::mounts::clean_abs;
use super::{Context, Error, invalid, linux_mut, resources_mut};

/// Sets `linux.devices` (when the CRI asks for any) and the device cgroup
/// rules in `linux.resources.devices`.
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    let (nodes, rules) = devices(cx.config)?;
    resources_mut(spec).set_devices(Some(rules));
    if !nodes.is_empty() {
        linux_mut(spec).set_devices(Some(nodes));
    }
    Ok(())
}

/// What `privileged` adds, as containerd: every host device (and a device
/// rule allowing all), /sys and the cgroup fs writable. (All capabilities,
/// no masked or read-only paths and no seccomp are set where those are.)
pub fn privileged(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    if !cx.sc.privileged {
        return Ok(());
    }
    for m in spec.mounts_mut().iter_mut().flatten() {
        let dest = m.destination().to_str();
        if matches!(dest, Some("/sys" | "/sys/fs/cgroup"))
            && let Some(opts) = m.options().clone()
        {
            m.set_options(Some(opts.into_iter().filter(|o| o != "ro").collect()));
        }
    }
    let linux = linux_mut(spec);
    let mut devices = linux.devices().clone().unwrap_or_default();
    let have: HashSet<_> = devices.iter().map(|d| d.path().clone()).collect();
    for d in host_devices(Path::new("/dev")) {
        if !have.contains(d.path()) {
            devices.push(d);
        }
    }
    linux.set_devices(Some(devices));
    resources_mut(spec).set_devices(Some(vec![rule(true, None, None, None, "rwm")]));
    Ok(())
}

/// One device cgroup rule.
fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(typ);
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// One device node.
fn node(
    path: &Path,
    typ: LinuxDeviceType,
    rdev: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(path.to_path_buf());
    d.set_typ(typ);
    d.set_major(dev_major(rdev));
    d.set_minor(dev_minor(rdev));
    d.set_file_mode(Some(mode & 0o777));
    d.set_uid(Some(uid));
    d.set_gid(Some(gid));
    d
}

/// containerd/runc's default device cgroup rules: deny all, then allow the
/// standard nodes.
fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    let c = Some(LinuxDeviceType::C);
    let mut v = vec![rule(false, None, None, None, "rwm")];
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
        v.push(rule(true, c, Some(major), Some(minor), "rwm"));
    }
    v.push(rule(true, c, Some(136), None, "rwm"));
    v.push(rule(true, c, Some(10), Some(200), "rwm"));
    v
}

fn dev_major(rdev: u64) -> i64 {
    (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as i64
}

fn dev_minor(rdev: u64) -> i64 {
    ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as i64
}

/// `linux.devices` and the device cgroup rules for the CRI devices.
fn devices(c: &ContainerConfig) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), Error> {
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
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(invalid(
                field("host_path"),
                format!(
                    "{:?} is not a device node (directories of devices are not supported)",
                    d.host_path
                ),
            ));
        };
        let n = node(&dest, typ, meta.rdev(), meta.mode(), 0, 0);
        rules.push(rule(
            true,
            Some(typ),
            Some(n.major()),
            Some(n.minor()),
            perms,
        ));
        nodes.push(n);
    }
    Ok((nodes, rules))
}

/// The device nodes under `dir` (not /dev/pts, /dev/shm, /dev/mqueue,
/// which the container gets its own of), as OCI `linux.devices`.
fn host_devices(dir: &Path) -> Vec<LinuxDevice> {
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
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
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
        out.push(node(
            &path,
            typ,
            meta.rdev(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
        ));
    }
    out
}
