//! CDI, the Container Device Interface: devices named `vendor/class=name`
//! (by the kubelet's `ContainerConfig.CDI_devices`, or by `cdi.k8s.io/*`
//! annotations, comma-separated) are looked up in the spec files of
//! `[cdi] spec_dirs` (`*.json`, `*.yaml`, `*.yml`; a later directory wins
//! for the same device), and their container edits, and their spec's, are
//! applied to the OCI spec: environment, device nodes (with a device
//! cgroup rule each), mounts, hooks and additional groups.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Hook, Hooks, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    MountBuilder, Spec,
};
use serde::Deserialize;

/// The annotation prefix the kubelet's device plugins use.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";
/// A spec file larger than this is not read.
const MAX_SPEC_FILE: u64 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

/// What a device (or its spec) changes in a container.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<CdiMount>,
    #[serde(default)]
    hooks: Vec<CdiHook>,
    #[serde(default, rename = "additionalGIDs")]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: PathBuf,
    host_path: Option<PathBuf>,
    r#type: Option<String>,
    major: Option<i64>,
    minor: Option<i64>,
    file_mode: Option<u32>,
    permissions: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount {
    host_path: PathBuf,
    container_path: PathBuf,
    #[serde(default)]
    options: Vec<String>,
    r#type: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiHook {
    hook_name: String,
    path: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    timeout: Option<i64>,
}

/// The fully qualified names a container asks for: its `CDI_devices`,
/// then the `cdi.k8s.io/*` annotations' lists, each name once.
pub fn requested(c: &cri_api::v1::ContainerConfig) -> Vec<String> {
    let mut names: Vec<String> = c.cdi_devices.iter().map(|d| d.name.clone()).collect();
    let mut keys: Vec<&String> = c
        .annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for k in keys {
        names.extend(
            c.annotations[k]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The edits for `names`, from the specs in `dirs`; an unknown or
/// malformed name is an error naming it (and the spec files that failed
/// to load, if any).
pub fn resolve(dirs: &[PathBuf], names: &[String]) -> Result<Vec<Edits>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // kind -> (device name -> edits), and each kind's own edits; later
    // files (and directories) win.
    let mut kinds: BTreeMap<String, (BTreeMap<String, Edits>, Edits)> = BTreeMap::new();
    let mut broken = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "json" || x == "yaml" || x == "yml")
            })
            .collect();
        files.sort();
        for f in files {
            match load(&f) {
                Ok(spec) => {
                    let entry = kinds.entry(spec.kind).or_default();
                    entry.1 = spec.container_edits;
                    for d in spec.devices {
                        entry.0.insert(d.name, d.container_edits);
                    }
                }
                Err(e) => broken.push(format!("{}: {e}", f.display())),
            }
        }
    }
    let mut out = Vec::new();
    let mut kinds_used = std::collections::BTreeSet::new();
    for name in names {
        let (kind, device) = name
            .split_once('=')
            .filter(|(k, d)| k.contains('/') && !d.is_empty())
            .ok_or_else(|| format!("CDI device {name:?} is not vendor/class=name"))?;
        let Some((devices, kind_edits)) = kinds.get(kind) else {
            return Err(unknown(name, dirs, &broken));
        };
        let edits = devices
            .get(device)
            .ok_or_else(|| unknown(name, dirs, &broken))?;
        if kinds_used.insert(kind.to_string()) {
            out.push(kind_edits.clone());
        }
        out.push(edits.clone());
    }
    Ok(out)
}

fn unknown(name: &str, dirs: &[PathBuf], broken: &[String]) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut s = format!(
        "CDI device {name:?} is not in any spec under {}",
        dirs.join(", ")
    );
    if !broken.is_empty() {
        s.push_str(&format!(
            " (specs that failed to load: {})",
            broken.join("; ")
        ));
    }
    s
}

/// One spec file, YAML or JSON (JSON is YAML), at most [`MAX_SPEC_FILE`].
fn load(path: &Path) -> Result<SpecFile, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_SPEC_FILE {
        return Err(format!("larger than {MAX_SPEC_FILE} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let spec: SpecFile = serde_norway::from_str(&text).map_err(|e| e.to_string())?;
    let major: u32 = spec
        .cdi_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cdiVersion {:?} is not a version", spec.cdi_version))?;
    if major > 1 {
        return Err(format!(
            "cdiVersion {} is newer than berth knows",
            spec.cdi_version
        ));
    }
    if !spec.kind.contains('/') {
        return Err(format!("kind {:?} is not vendor/class", spec.kind));
    }
    Ok(spec)
}

/// Applies `edits` (from [`resolve`]) to `spec`.
pub fn apply(spec: &mut Spec, edits: &[Edits]) -> Result<(), String> {
    for e in edits {
        apply_one(spec, e)?;
    }
    Ok(())
}

fn apply_one(spec: &mut Spec, e: &Edits) -> Result<(), String> {
    if let Some(p) = spec.process_mut() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &e.env {
            let key = kv.split('=').next().unwrap_or(kv);
            env.retain(|old| old.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
        if !e.additional_gids.is_empty() {
            let mut user = p.user().clone();
            let mut gids = user.additional_gids().clone().unwrap_or_default();
            gids.extend(&e.additional_gids);
            user.set_additional_gids(Some(gids));
            p.set_user(user);
        }
    }
    for n in &e.device_nodes {
        let (dev, rule) = device(n)?;
        let linux = spec.linux_mut().get_or_insert_with(Default::default);
        let mut devices = linux.devices().clone().unwrap_or_default();
        devices.retain(|d| d.path() != dev.path());
        devices.push(dev);
        linux.set_devices(Some(devices));
        let resources = linux.resources_mut().get_or_insert_with(Default::default);
        let mut rules = resources.devices().clone().unwrap_or_default();
        rules.push(rule);
        resources.set_devices(Some(rules));
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &e.mounts {
        let kind = m.r#type.clone().unwrap_or_else(|| "bind".into());
        let mut options = m.options.clone();
        if kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.push("rbind".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(&m.container_path)
                .source(&m.host_path)
                .typ(kind)
                .options(options)
                .build()
                .map_err(|e| format!("CDI mount {}: {e}", m.container_path.display()))?,
        );
    }
    spec.set_mounts(Some(mounts));
    if !e.hooks.is_empty() {
        let mut hooks: Hooks = spec.hooks().clone().unwrap_or_default();
        for h in &e.hooks {
            let mut hook = Hook::default();
            hook.set_path(h.path.clone());
            hook.set_args(Some(h.args.clone()).filter(|a| !a.is_empty()));
            hook.set_env(Some(h.env.clone()).filter(|a| !a.is_empty()));
            hook.set_timeout(h.timeout);
            let list = match h.hook_name.as_str() {
                "prestart" => hooks.prestart_mut(),
                "createRuntime" => hooks.create_runtime_mut(),
                "createContainer" => hooks.create_container_mut(),
                "startContainer" => hooks.start_container_mut(),
                "poststart" => hooks.poststart_mut(),
                "poststop" => hooks.poststop_mut(),
                other => return Err(format!("CDI hook {other:?} is not an OCI hook")),
            };
            list.get_or_insert_with(Vec::new).push(hook);
        }
        spec.set_hooks(Some(hooks));
    }
    Ok(())
}

/// The OCI device for a CDI device node, and the cgroup rule allowing it:
/// type and numbers from the node on the host where the spec leaves them
/// out.
fn device(n: &DeviceNode) -> Result<(LinuxDevice, oci_spec::runtime::LinuxDeviceCgroup), String> {
    let host = n.host_path.as_deref().unwrap_or(&n.path);
    let stat = std::fs::metadata(host);
    let (typ, major, minor, mode) = match (&n.r#type, n.major, n.minor) {
        (Some(t), Some(ma), Some(mi)) => (t.clone(), ma, mi, n.file_mode),
        _ => {
            let m = stat.map_err(|e| format!("CDI device node {}: {e}", host.display()))?;
            let ft = m.file_type();
            let t = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                return Err(format!(
                    "CDI device node {} is not a device",
                    host.display()
                ));
            };
            let rdev = m.rdev();
            let (ma, mi) = (
                nix::sys::stat::major(rdev) as i64,
                nix::sys::stat::minor(rdev) as i64,
            );
            (
                n.r#type.clone().unwrap_or_else(|| t.to_string()),
                n.major.unwrap_or(ma),
                n.minor.unwrap_or(mi),
                n.file_mode.or(Some(m.mode() & 0o7777)),
            )
        }
    };
    let dtype = match typ.as_str() {
        "c" | "u" => LinuxDeviceType::C,
        "b" => LinuxDeviceType::B,
        "p" => LinuxDeviceType::P,
        other => return Err(format!("CDI device node type {other:?}")),
    };
    let mut b = LinuxDeviceBuilder::default()
        .path(&n.path)
        .typ(dtype)
        .major(major)
        .minor(minor);
    if let Some(m) = mode {
        b = b.file_mode(m);
    }
    if let Some(u) = n.uid {
        b = b.uid(u);
    }
    if let Some(g) = n.gid {
        b = b.gid(g);
    }
    let dev = b.build().map_err(|e| format!("CDI device node: {e}"))?;
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(dtype)
        .major(major)
        .minor(minor)
        .access(n.permissions.clone().unwrap_or_else(|| "rwm".into()))
        .build()
        .map_err(|e| format!("CDI device rule: {e}"))?;
    Ok((dev, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_field_then_the_annotations_once_each() {
        let mut c = cri_api::v1::ContainerConfig {
            cdi_devices: vec![cri_api::v1::CdiDevice {
                name: "a.com/x=1".into(),
            }],
            ..Default::default()
        };
        c.annotations
            .insert("cdi.k8s.io/plugin".into(), "a.com/x=1, b.io/y=2,".into());
        c.annotations.insert("other".into(), "c.io/z=3".into());
        assert_eq!(requested(&c), ["a.com/x=1", "b.io/y=2"]);
    }

    #[test]
    fn specs_in_yaml_and_json_resolve_and_unknown_names_say_where_they_looked() {
        let dir = std::env::temp_dir().join(format!("berth-cdi-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            a.join("v.yaml"),
            "cdiVersion: \"0.6.0\"\nkind: v.io/gpu\ncontainerEdits:\n  env: [KIND=1]\ndevices:\n- name: g0\n  containerEdits:\n    env: [DEV=old]\n",
        )
        .unwrap();
        std::fs::write(
            b.join("v.json"),
            r#"{"cdiVersion":"0.6.0","kind":"v.io/gpu","devices":[{"name":"g0","containerEdits":{"env":["DEV=new"]}}]}"#,
        )
        .unwrap();
        std::fs::write(b.join("bad.yaml"), "kind: [").unwrap();
        let dirs = [a.clone(), b.clone()];
        let e = resolve(&dirs, &["v.io/gpu=g0".into()]).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].env, ["DEV=new"]);
        let err = resolve(&dirs, &["v.io/gpu=g9".into()]).unwrap_err();
        assert!(
            err.contains("g9") && err.contains(&a.display().to_string()),
            "{err}"
        );
        assert!(err.contains("bad.yaml"), "{err}");
        assert!(resolve(&dirs, &["nonsense".into()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
