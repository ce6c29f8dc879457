//! What the monitor reads from (and fixes in) the bundle's `config.json`.

use std::path::Path;

use berth_runtime::protocol::state::{CONFIG, write_atomic};

/// The bundle's config.json, read once by whoever needs several of its
/// fields.
pub fn spec(bundle: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(bundle.join(CONFIG)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// `linux.cgroupsPath` of a spec.
pub fn cgroups_path(spec: &serde_json::Value) -> Option<String> {
    spec.pointer("/linux/cgroupsPath")?
        .as_str()
        .map(str::to_string)
}

/// Whether the spec asks for a terminal (`process.terminal`).
pub fn terminal(spec: &serde_json::Value) -> bool {
    spec.pointer("/process/terminal")
        .and_then(|t| t.as_bool())
        .unwrap_or(false)
}

/// Drops from the spec's seccomp rules the syscall names this node's
/// libseccomp does not know (a profile may name syscalls newer than it),
/// as runc does; a rule left with no name goes. The bundle is rewritten.
pub fn known_syscalls_only(bundle: &Path) -> Result<(), String> {
    let config = bundle.join(CONFIG);
    let text = std::fs::read(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let Some(rules) = spec
        .pointer_mut("/linux/seccomp/syscalls")
        .and_then(|r| r.as_array_mut())
    else {
        return Ok(());
    };
    let count = |rules: &[serde_json::Value]| -> usize {
        rules
            .iter()
            .map(|r| r["names"].as_array().map_or(0, Vec::len))
            .sum()
    };
    let before = count(rules);
    for r in rules.iter_mut() {
        if let Some(names) = r.get_mut("names").and_then(|n| n.as_array_mut()) {
            names.retain(|n| {
                n.as_str()
                    .is_some_and(|n| libseccomp::ScmpSyscall::from_name(n).is_ok())
            });
        }
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    if count(rules) == before {
        return Ok(());
    }
    let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
    write_atomic(bundle, CONFIG, &bytes).map_err(|e| format!("{}: {e}", config.display()))
}
