//! Where a registry's settings live: its directory under the hosts
//! directory (or `_default`), its `hosts.toml`, or Docker-style certificate
//! files; and the upstream a registry gets when nothing says otherwise.

use std::io;
use std::path::{Path, PathBuf};

use super::parse::{parse_hosts_file, split_host_port};
use super::{
    Capabilities, DEFAULT_DIR, DOCKER_IO, DOCKER_IO_UPSTREAM, Entry, HOSTS_FILE, HostsError,
    Scheme, default_scheme_for, is_localhost,
};

pub(super) fn default_upstream(e: &mut Entry, registry_host: &str) {
    if registry_host == DOCKER_IO {
        e.scheme = Scheme::Https;
        e.host = DOCKER_IO_UPSTREAM.to_string();
    } else {
        e.host = registry_host.to_string();
        e.scheme = default_scheme_for(registry_host);
        e.loopback_default = is_localhost(registry_host) && e.scheme == Scheme::Http;
        if is_localhost(registry_host)
            && split_host_port(registry_host).map(|(_, p)| p) != Some("80")
        {
            e.skip_verify = true;
        }
    }
    e.path = "/v2".to_string();
    e.capabilities = Capabilities::ALL;
}

pub(super) fn validate_registry_host(host: &str) -> Result<(), HostsError> {
    let bad = host.is_empty()
        || host == "."
        || host == ".."
        || host == DEFAULT_DIR
        || host
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace());
    if bad {
        Err(HostsError::InvalidHost(host.to_string()))
    } else {
        Ok(())
    }
}

/// `host:port` → `host_port_` (containerd's colon-free directory name).
fn host_directory(host: &str) -> String {
    match host.rfind(':') {
        Some(i) if i > 0 => format!("{}_{}_", &host[..i], &host[i + 1..]),
        _ => host.to_string(),
    }
}

pub(super) fn host_dir(root: &Path, host: &str) -> Result<Option<PathBuf>, HostsError> {
    let mut candidates = Vec::with_capacity(3);
    let colon_free = host_directory(host);
    if colon_free != host {
        candidates.push(root.join(colon_free));
    }
    candidates.push(root.join(host));
    candidates.push(root.join(DEFAULT_DIR));
    for p in candidates {
        match std::fs::metadata(&p) {
            Ok(_) => return Ok(Some(std::path::absolute(&p).unwrap_or(p))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(HostsError::Io { path: p, source }),
        }
    }
    Ok(None)
}

pub(super) fn load_host_dir(dir: &Path) -> Result<Vec<Entry>, HostsError> {
    let file = dir.join(HOSTS_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(HostsError::Io { path: file, source }),
    };
    if text.is_empty() {
        return load_cert_files(dir);
    }
    parse_hosts_file(&file, dir, &text)
}

/// Docker's `certs.d` layout, for the upstream only.
fn load_cert_files(dir: &Path) -> Result<Vec<Entry>, HostsError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostsError::Io { path, source }
    };
    let mut entry = Entry::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![entry]),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut files = Vec::new();
    for de in rd {
        let de = de.map_err(io_err(dir))?;
        if de.file_type().map_err(io_err(&de.path()))?.is_dir() {
            continue;
        }
        files.push(de.file_name().to_string_lossy().into_owned());
    }
    files.sort();
    for name in files {
        if name.ends_with(".crt") {
            entry.ca.push(dir.join(&name));
        }
        if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            let key = match std::fs::metadata(&key) {
                Ok(_) => Some(key),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&key)(e)),
            };
            entry.client_certs.push((dir.join(&name), key));
        }
    }
    Ok(vec![entry])
}
