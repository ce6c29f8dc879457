//! Capabilities: containerd's default set, the CRI's adds, ambient adds
//! and drops, and a privileged container's "all berthd holds".

use std::str::FromStr as _;

use cri_api::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Spec};

use super::{Context, Error, invalid, process_mut};

/// containerd's `defaultUnixCaps`.
pub(super) const DEFAULT_CAPS: &[&str] = &[
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

/// Sets `process.capabilities`: the bounding set (also effective and
/// permitted) and, when there are ambient ones, those as ambient and
/// inheritable.
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    let (caps, ambient) = if cx.sc.privileged {
        (own_capabilities(), Vec::new())
    } else if cx.pod.user_ns.is_some() {
        capabilities(&cx.sc, None)?
    } else {
        capabilities(&cx.sc, Some(&own_capabilities()))?
    };
    let caps = typed(&caps)?;
    let mut sets = LinuxCapabilities::default();
    sets.set_bounding(Some(caps.clone()));
    sets.set_effective(Some(caps.clone()));
    sets.set_permitted(Some(caps));
    // Ambient capabilities must be inheritable too; nothing else is (as
    // containerd, since CVE-2022-24769).
    if ambient.is_empty() {
        sets.set_inheritable(None);
        sets.set_ambient(None);
    } else {
        let ambient = typed(&ambient)?;
        sets.set_inheritable(Some(ambient.clone()));
        sets.set_ambient(Some(ambient));
    }
    process_mut(spec).set_capabilities(Some(sets));
    Ok(())
}

/// The names ("CAP_CHOWN") as oci-spec's capabilities.
fn typed(names: &[String]) -> Result<Capabilities, Error> {
    names
        .iter()
        .map(|n| {
            Capability::from_str(n.strip_prefix("CAP_").unwrap_or(n)).map_err(|_| {
                invalid(
                    "security_context.capabilities",
                    format!("unknown capability {n:?}"),
                )
            })
        })
        .collect()
}

/// The bounding set the spec gives the process, as names ("CAP_CHOWN").
pub fn bounding_names(spec: &Spec) -> Vec<String> {
    let Some(set) = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
    else {
        return Vec::new();
    };
    ALL_CAPS
        .iter()
        .filter(|name| {
            Capability::from_str(name.trim_start_matches("CAP_")).is_ok_and(|c| set.contains(&c))
        })
        .map(|s| s.to_string())
        .collect()
}

fn cap_name(raw: &str, field: &str) -> Result<String, Error> {
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
) -> Result<(Vec<String>, Vec<String>), Error> {
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

/// The capabilities berthd itself may hold (its bounding set): what a
/// privileged container gets, as containerd's "all current capabilities"
/// (a node may run berthd without some).
pub(super) fn own_capabilities() -> Vec<String> {
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
