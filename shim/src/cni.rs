//! CNI configuration discovery, as libcni does it: the first file (in name
//! order) in the conf dir with a `.conf`, `.conflist` or `.json` suffix that
//! parses is the pod network; every plugin it names must exist in a bin dir.

use std::path::{Path, PathBuf};

/// The network berthd would use for pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub file: PathBuf,
    pub name: String,
    pub plugins: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotReady {
    #[error("cni config uninitialized: no network config found in {0}")]
    NoConfig(PathBuf),
    #[error("cni config {file}: {reason}")]
    BadConfig { file: PathBuf, reason: String },
    #[error("cni plugin {plugin:?} (from {file}) not found in {dirs}")]
    MissingPlugin {
        file: PathBuf,
        plugin: String,
        dirs: String,
    },
}

/// Finds the pod network config and checks that its plugins are installed.
pub fn load(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetworkConfig, NotReady> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    let file = files
        .into_iter()
        .next()
        .ok_or_else(|| NotReady::NoConfig(conf_dir.to_path_buf()))?;
    let bad = |reason: String| NotReady::BadConfig {
        file: file.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let name = doc
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| bad("no \"name\"".into()))?
        .to_string();
    // A .conflist has "plugins"; a single .conf is its own plugin.
    let plugin_docs: Vec<&serde_json::Value> = match doc.get("plugins") {
        Some(serde_json::Value::Array(list)) if !list.is_empty() => list.iter().collect(),
        Some(_) => return Err(bad("\"plugins\" must be a non-empty list".into())),
        None => vec![&doc],
    };
    let mut plugins = Vec::new();
    for p in plugin_docs {
        let ty = p
            .get("type")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty() && !t.contains('/'))
            .ok_or_else(|| bad("a plugin has no valid \"type\"".into()))?;
        let found = bin_dirs
            .iter()
            .map(|d| d.join(ty))
            .find(|p| is_executable(p));
        match found {
            Some(path) => plugins.push(path),
            None => {
                return Err(NotReady::MissingPlugin {
                    file: file.clone(),
                    plugin: ty.to_string(),
                    dirs: bin_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    Ok(NetworkConfig {
        file,
        name,
        plugins,
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Dirs {
        top: PathBuf,
        conf: PathBuf,
        bin: PathBuf,
    }

    fn dirs(tag: &str) -> Dirs {
        let top = std::env::temp_dir().join(format!("berth-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let (conf, bin) = (top.join("net.d"), top.join("bin"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        Dirs { top, conf, bin }
    }

    fn plugin(d: &Dirs, name: &str) {
        let p = d.bin.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn empty_dir_is_not_ready() {
        let d = dirs("empty");
        std::fs::write(d.conf.join("README"), "not a config").unwrap();
        assert_eq!(
            load(&d.conf, std::slice::from_ref(&d.bin)),
            Err(NotReady::NoConfig(d.conf.clone()))
        );
        std::fs::remove_dir_all(d.top).unwrap();
    }

    #[test]
    fn first_conflist_by_name_with_plugins_present_is_ready() {
        let d = dirs("ready");
        std::fs::write(
            d.conf.join("10-pods.conflist"),
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.conf.join("20-other.conf"),
            r#"{"name":"other","type":"x"}"#,
        )
        .unwrap();
        plugin(&d, "bridge");
        let e = load(&d.conf, std::slice::from_ref(&d.bin)).unwrap_err();
        assert!(e.to_string().contains("\"portmap\""), "{e}");
        plugin(&d, "portmap");
        let net = load(&d.conf, std::slice::from_ref(&d.bin)).unwrap();
        assert_eq!(net.name, "pods");
        assert_eq!(
            net.plugins,
            vec![d.bin.join("bridge"), d.bin.join("portmap")]
        );
        std::fs::remove_dir_all(d.top).unwrap();
    }

    #[test]
    fn broken_json_is_reported_with_its_file() {
        let d = dirs("broken");
        std::fs::write(d.conf.join("10.conf"), "{").unwrap();
        let e = load(&d.conf, std::slice::from_ref(&d.bin)).unwrap_err();
        assert!(matches!(e, NotReady::BadConfig { .. }), "{e}");
        std::fs::remove_dir_all(d.top).unwrap();
    }
}
