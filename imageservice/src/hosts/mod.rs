//! Registry host configuration in containerd's `hosts.toml` directory format.
//!
//! A node configured for containerd (`config_path = "/etc/containerd/certs.d"`)
//! works unchanged: for a registry host such as `127.0.0.1:5000` the first
//! directory that exists among
//!
//! 1. `<config_path>/127.0.0.1_5000_` (containerd checks this form on every
//!    platform, first, whenever the host has a port),
//! 2. `<config_path>/127.0.0.1:5000`,
//! 3. `<config_path>/_default`,
//!
//! is used, and only that one: a host directory without a `hosts.toml` does not
//! fall through to `_default`. Inside it, `hosts.toml` lists mirrors as
//! `[host."…"]` tables, tried in file order, and the top-level `server` (the
//! upstream) is always appended last. A directory without a `hosts.toml` (or
//! with an empty one) falls back to Docker's `certs.d` layout: `*.crt` files
//! are CA certificates and `*.cert` (+ matching `*.key`) client certificates,
//! both for the upstream.
//!
//! When the file has no `server`, the upstream is the registry itself:
//! `https://registry-1.docker.io` for `docker.io`, `https://<host>` otherwise,
//! except loopback hosts (see [`default_scheme_for`]). Such a defaulted
//! upstream always gets path `/v2` and every capability, whatever the
//! top-level `capabilities`/`override_path` say (containerd does the same);
//! top-level `ca`, `client`, `skip_verify` and `header` still apply to it.
//!
//! Differences from containerd, on purpose:
//! - a malformed `hosts.toml` (bad TOML, wrong value type, unknown capability,
//!   bad URL) is an error here; containerd logs it and silently falls back to
//!   the certificate-file layout, i.e. ignores the file;
//! - mirrors given as inline tables or dotted keys (`host."m" = { … }`) are
//!   used, in file order; containerd only sees `[host."m"]` table headers;
//! - in a client pair `["cert", ""]` the empty key means "key is in the cert
//!   file" (containerd's documented intent; its code joins `""` onto the
//!   directory and then fails to read the directory as a key);
//! - a URL path of just `/` counts as no path (containerd produces `//v2`);
//! - `dial_timeout` and `proxy` are accepted but not interpreted here (unknown
//!   keys are ignored, as containerd's TOML decoder does).

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod dirs;
mod parse;
#[cfg(test)]
mod tests;

use dirs::{default_upstream, host_dir, load_host_dir, validate_registry_host};
pub(crate) use parse::parse_hosts_file;
use parse::split_host_port;

/// Name of the per-host configuration file.
pub const HOSTS_FILE: &str = "hosts.toml";
/// Directory consulted for hosts that have none of their own.
pub const DEFAULT_DIR: &str = "_default";

const DOCKER_IO: &str = "docker.io";
const DOCKER_IO_UPSTREAM: &str = "registry-1.docker.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a host may be used for. `resolve` (tag → digest) is a trusted
/// operation: a public mirror should have `pull` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
    /// Listing referrers (containerd ≥ 2.1 knows this capability).
    pub referrers: bool,
}

impl Capabilities {
    /// The default when `capabilities` is absent or empty.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
        referrers: true,
    };
    pub const NONE: Capabilities = Capabilities {
        pull: false,
        resolve: false,
        push: false,
        referrers: false,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::ALL
    }
}

/// One host to try, in order, for a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    pub scheme: Scheme,
    /// `host[:port]`, e.g. `mirror.example:5000`.
    pub host: String,
    /// API root: `/v2` normally (appended to any configured path), the
    /// configured path as-is with `override_path = true` (possibly empty).
    pub path: String,
    pub capabilities: Capabilities,
    /// CA certificate files, absolute when the config path is.
    pub ca: Vec<PathBuf>,
    /// Client certificate and key; `None` key: the key is in the cert file.
    pub client_certs: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: bool,
    /// Extra request headers in file order; a list value gives one entry per
    /// element, all with the same name.
    pub headers: Vec<(String, String)>,
    /// The `server` entry (always the last one).
    pub is_upstream: bool,
    /// The upstream of a loopback registry that has no `server` in
    /// hosts.toml (berth chose `http` for it, see [`default_scheme_for`]).
    pub loopback_default: bool,
}

impl RegistryHost {
    /// `scheme://host/path`, e.g. `https://mirror.example:5000/v2`.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    /// containerd's rule for an `http://` host that also carries TLS settings
    /// (`ca`, `client`, `skip_verify`; and a defaulted loopback upstream, which
    /// gets `skip_verify`): unless the port is 80 it tries HTTPS first and
    /// falls back to plain HTTP when the server does not speak TLS.
    /// (containerd also counts an explicit `skip_verify = false`; that is not
    /// distinguishable from absent here.)
    pub fn tries_https_first(&self) -> bool {
        self.scheme == Scheme::Http
            && (self.skip_verify || !self.ca.is_empty() || !self.client_certs.is_empty())
            && split_host_port(&self.host).map(|(_, p)| p) != Some("80")
    }

    /// May credentials go to this host over plain HTTP? Only when plain
    /// HTTP is what was asked for: a hosts.toml host written `http://`
    /// without `ca`, `client` or `skip_verify` (or on port 80), or a
    /// loopback registry without a `server` in hosts.toml, whose traffic
    /// never leaves the node. A host that [tries HTTPS
    /// first](Self::tries_https_first) and finds plain HTTP gets none: its
    /// TLS settings say the operator expected TLS.
    pub fn plain_http_credentials(&self) -> bool {
        self.scheme == Scheme::Http && (!self.tries_https_first() || self.loopback_default)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("invalid registry host {0:?}")]
    InvalidHost(String),
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax or type error; the toml error text carries line and column.
    #[error("parsing {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A well-formed file with a value containerd would reject.
    #[error("{}{}: {what}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        what: String,
    },
}

/// The hosts to try for `registry_host` (e.g. `docker.io`, `127.0.0.1:5000`):
/// mirrors in file order, then the upstream. With no configuration at all,
/// just the default upstream.
pub fn hosts_for(config_path: &Path, registry_host: &str) -> Result<Vec<RegistryHost>, HostsError> {
    validate_registry_host(registry_host)?;
    let mut hosts = match host_dir(config_path, registry_host)? {
        Some(dir) => load_host_dir(&dir)?,
        None => vec![Entry::default()],
    };
    if let Some(last) = hosts.last_mut()
        && last.host.is_empty()
    {
        default_upstream(last, registry_host);
    }
    let n = hosts.len();
    Ok(hosts
        .into_iter()
        .enumerate()
        .map(|(i, e)| RegistryHost {
            scheme: e.scheme,
            host: e.host,
            path: e.path,
            capabilities: e.capabilities,
            ca: e.ca,
            client_certs: e.client_certs,
            skip_verify: e.skip_verify,
            headers: e.headers,
            is_upstream: i + 1 == n,
            loopback_default: e.loopback_default,
        })
        .collect())
}

/// Scheme of the defaulted upstream (no `server` configured) for `host`.
///
/// `https`, except for loopback hosts (`localhost`, `127.0.0.0/8`, `::1`)
/// with an explicit port other than 443, which get `http`. This is
/// containerd's rule: a loopback upstream is `http` on a non-standard port,
/// but containerd also marks it `skip_verify` (unless the port is 80), so it
/// actually tries HTTPS without verification first and falls back to HTTP
/// ([`RegistryHost::tries_https_first`]). Bare `localhost` and
/// `localhost:443` stay `https` (unverified).
pub fn default_scheme_for(host: &str) -> Scheme {
    if is_localhost(host) {
        match split_host_port(host).map(|(_, p)| p) {
            None | Some("443") => Scheme::Https,
            Some(_) => Scheme::Http,
        }
    } else {
        Scheme::Https
    }
}

/// `localhost` or a loopback IP, with or without a port.
pub fn is_localhost(host: &str) -> bool {
    let h = split_host_port(host).map_or(host, |(h, _)| h);
    let h = h
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(h);
    if h == "localhost" {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Resolution

/// One host while it is being built; `host` empty means "fill in defaults".
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    scheme: Scheme,
    host: String,
    path: String,
    capabilities: Capabilities,
    ca: Vec<PathBuf>,
    client_certs: Vec<(PathBuf, Option<PathBuf>)>,
    skip_verify: bool,
    headers: Vec<(String, String)>,
    loopback_default: bool,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            scheme: Scheme::Https,
            host: String::new(),
            path: String::new(),
            capabilities: Capabilities::ALL,
            ca: Vec::new(),
            client_certs: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
            loopback_default: false,
        }
    }
}
