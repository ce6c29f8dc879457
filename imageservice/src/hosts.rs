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

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

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

fn default_upstream(e: &mut Entry, registry_host: &str) {
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

fn validate_registry_host(host: &str) -> Result<(), HostsError> {
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

fn host_dir(root: &Path, host: &str) -> Result<Option<PathBuf>, HostsError> {
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

fn load_host_dir(dir: &Path) -> Result<Vec<Entry>, HostsError> {
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

// ---------------------------------------------------------------------------
// File format

/// Settings shared by the top level (the server) and each `[host."…"]`.
#[derive(Debug, Default, Deserialize)]
struct RawHost {
    capabilities: Option<Vec<Spanned<String>>>,
    ca: Option<OneOrMany>,
    client: Option<ClientList>,
    skip_verify: Option<bool>,
    header: Option<OrderedMap<OneOrMany>>,
    override_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawFile {
    server: Option<Spanned<String>>,
    host: Option<OrderedMap<RawHost>>,
    // The server's settings, spelled out rather than `#[serde(flatten)]`:
    // flattening would drop the spans that keep header order.
    capabilities: Option<Vec<Spanned<String>>>,
    ca: Option<OneOrMany>,
    client: Option<ClientList>,
    skip_verify: Option<bool>,
    header: Option<OrderedMap<OneOrMany>>,
    override_path: Option<bool>,
}

/// A TOML table in document order (first appearance of each key), whatever
/// map type the `toml` crate was built with: keys are ordered by their span.
#[derive(Debug, Default)]
struct OrderedMap<V>(Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<(Spanned<String>, V)> = Vec::new();
                while let Some((k, val)) = m.next_entry::<Spanned<String>, V>()? {
                    v.push((k, val));
                }
                v.sort_by_key(|(k, _)| k.span().start);
                Ok(OrderedMap(v))
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

/// `"x"` or `["x", "y"]`.
#[derive(Debug)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany(v))
            }
        }
        d.deserialize_any(V_)
    }
}

/// `client`: `"both.pem"`, `["a.pem", "b.pem"]` or `[["a.cert", "a.key"], …]`
/// (the forms may be mixed in one array, as in containerd).
#[derive(Debug)]
struct ClientList(Vec<(String, Option<String>)>);

struct ClientItem((String, Option<String>));

impl<'de> Deserialize<'de> for ClientItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = ClientItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path or a [cert, key] pair of paths")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ClientItem((s.to_string(), None)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v: Vec<String> = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                match <[String; 2]>::try_from(v) {
                    Ok([cert, key]) => Ok(ClientItem((cert, Some(key).filter(|k| !k.is_empty())))),
                    Err(v) => Err(de::Error::invalid_length(v.len(), &"a [cert, key] pair")),
                }
            }
        }
        d.deserialize_any(V_)
    }
}

impl<'de> Deserialize<'de> for ClientList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V_;
        impl<'de> Visitor<'de> for V_ {
            type Value = ClientList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path, an array of paths, or an array of [cert, key] pairs")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ClientList(vec![(s.to_string(), None)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(ClientItem(p)) = a.next_element::<ClientItem>()? {
                    v.push(p);
                }
                Ok(ClientList(v))
            }
        }
        d.deserialize_any(V_)
    }
}

/// 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(crate) fn parse_hosts_file(
    file: &Path,
    dir: &Path,
    text: &str,
) -> Result<Vec<Entry>, HostsError> {
    let raw: RawFile = toml::from_str(text).map_err(|source| HostsError::Parse {
        path: file.to_path_buf(),
        source,
    })?;
    // `pos`: where the problem is, if known more precisely than the entry.
    let invalid = |label: &str, entry_pos: Option<usize>, pos: Option<usize>, what: String| {
        HostsError::Invalid {
            path: file.to_path_buf(),
            line: pos.or(entry_pos).map(|p| line_of(text, p)),
            what: format!("{label}: {what}"),
        }
    };

    let mut out = Vec::new();
    for (name, cfg) in raw.host.unwrap_or_default().0 {
        let label = format!("host {:?}", name.get_ref());
        let fail =
            |pos: Option<usize>, what: String| invalid(&label, Some(name.span().start), pos, what);
        out.push(build_entry(Some(name.get_ref()), dir, cfg, &fail)?);
    }

    let server = raw.server.filter(|s| !s.get_ref().is_empty());
    let top = RawHost {
        capabilities: raw.capabilities,
        ca: raw.ca,
        client: raw.client,
        skip_verify: raw.skip_verify,
        header: raw.header,
        override_path: raw.override_path,
    };
    let label = match &server {
        Some(s) => format!("server {:?}", s.get_ref()),
        None => "server".to_string(),
    };
    let fail = |pos: Option<usize>, what: String| {
        invalid(&label, server.as_ref().map(|s| s.span().start), pos, what)
    };
    out.push(build_entry(
        server.as_ref().map(|s| s.get_ref().as_str()),
        dir,
        top,
        &fail,
    )?);
    Ok(out)
}

fn build_entry(
    url: Option<&str>,
    dir: &Path,
    cfg: RawHost,
    fail: &dyn Fn(Option<usize>, String) -> HostsError,
) -> Result<Entry, HostsError> {
    let override_path = cfg.override_path.unwrap_or(false);
    let mut e = Entry::default();
    if let Some(url) = url {
        let (scheme, host, path) = parse_url(url, override_path).map_err(|w| fail(None, w))?;
        e.scheme = scheme;
        e.host = host;
        e.path = path;
    }
    e.skip_verify = cfg.skip_verify.unwrap_or(false);
    match cfg.capabilities {
        Some(caps) if !caps.is_empty() => {
            e.capabilities = Capabilities::NONE;
            for c in caps {
                match c.get_ref().to_ascii_lowercase().as_str() {
                    "pull" => e.capabilities.pull = true,
                    "resolve" => e.capabilities.resolve = true,
                    "push" => e.capabilities.push = true,
                    "referrers" => e.capabilities.referrers = true,
                    _ => {
                        return Err(fail(
                            Some(c.span().start),
                            format!("unknown capability {:?}", c.get_ref()),
                        ));
                    }
                }
            }
        }
        // Absent or `[]`: everything, as in containerd.
        _ => e.capabilities = Capabilities::ALL,
    }
    let abs = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    if let Some(OneOrMany(cas)) = cfg.ca {
        e.ca = cas.iter().map(|p| abs(p)).collect();
    }
    if let Some(ClientList(pairs)) = cfg.client {
        e.client_certs = pairs
            .iter()
            .map(|(c, k)| (abs(c), k.as_deref().map(&abs)))
            .collect();
    }
    if let Some(h) = cfg.header {
        for (k, OneOrMany(vals)) in h.0 {
            for v in vals {
                e.headers.push((k.get_ref().clone(), v));
            }
        }
    }
    Ok(e)
}

/// containerd's URL rule: no scheme → `https://` is prepended; the
/// path is cleaned and `/v2` appended unless it already ends in `/v2` or
/// `override_path` is set (then it is used as-is, possibly empty).
fn parse_url(url: &str, override_path: bool) -> Result<(Scheme, String, String), String> {
    // containerd tests for a leading "http"; looking for "://" agrees on
    // every URL containerd handles and also takes `HTTPS://h` and `httpbin:5000`.
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    let (scheme, rest) = full
        .split_once("://")
        .ok_or_else(|| format!("invalid URL {url:?}"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("unsupported scheme {other:?} (want http or https)")),
    };
    // Query and fragment are not part of the API root.
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, raw_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".to_string());
    }
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid host in URL {url:?}"));
    }
    let mut path = if raw_path.is_empty() {
        String::new()
    } else {
        clean_path(raw_path)
    };
    if path == "/" {
        path.clear();
    }
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok((scheme, authority.to_string(), path))
}

/// Lexical clean of an absolute URL path, like Go's `path.Clean`.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go's `net.SplitHostPort` for `host:port` and `[v6]:port`; `None` when
/// there is no port (`localhost`, `::1`, `[::1]`).
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((h, port));
    }
    let (h, port) = s.rsplit_once(':')?;
    if h.contains(':') {
        return None; // bare IPv6
    }
    Some((h, port))
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "berth-hosts-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn write(&self, host_dir: &str, text: &str) -> PathBuf {
            let d = self.0.join(host_dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(HOSTS_FILE), text).unwrap();
            d
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn urls(h: &[RegistryHost]) -> Vec<String> {
        h.iter().map(RegistryHost::base_url).collect()
    }

    const PULL_ONLY: Capabilities = Capabilities {
        pull: true,
        resolve: false,
        push: false,
        referrers: false,
    };

    #[test]
    fn no_config_gives_default_upstream() {
        let t = TempDir::new();
        let h = hosts_for(t.path(), "quay.io").unwrap();
        assert_eq!(
            h,
            vec![RegistryHost {
                scheme: Scheme::Https,
                host: "quay.io".into(),
                path: "/v2".into(),
                capabilities: Capabilities::ALL,
                ca: vec![],
                client_certs: vec![],
                skip_verify: false,
                headers: vec![],
                is_upstream: true,
                loopback_default: false,
            }]
        );
        // Nonexistent config dir altogether.
        let h = hosts_for(&t.path().join("nope"), "example.com:5000").unwrap();
        assert_eq!(urls(&h), ["https://example.com:5000/v2"]);
        let h = hosts_for(t.path(), "docker.io").unwrap();
        assert_eq!(urls(&h), ["https://registry-1.docker.io/v2"]);
    }

    #[test]
    fn loopback_defaults() {
        let t = TempDir::new();
        let one = |host: &str| hosts_for(t.path(), host).unwrap().remove(0);
        let h = one("localhost:5000");
        assert_eq!(h.base_url(), "http://localhost:5000/v2");
        assert!(h.skip_verify && h.tries_https_first());
        let h = one("127.0.0.254:5000");
        assert_eq!(h.scheme, Scheme::Http);
        assert!(h.tries_https_first());
        assert_eq!(one("[::1]:5000").base_url(), "http://[::1]:5000/v2");
        let h = one("localhost");
        assert_eq!((h.scheme, h.skip_verify), (Scheme::Https, true));
        assert_eq!(one("localhost:443").scheme, Scheme::Https);
        let h = one("localhost:80");
        assert_eq!(
            (h.scheme, h.skip_verify, h.tries_https_first()),
            (Scheme::Http, false, false)
        );
        assert_eq!(one("::1").scheme, Scheme::Https);
        let h = one("example.com:5000");
        assert_eq!((h.scheme, h.skip_verify), (Scheme::Https, false));

        assert_eq!(default_scheme_for("127.0.0.1:5000"), Scheme::Http);
        assert_eq!(default_scheme_for("localhost"), Scheme::Https);
        assert_eq!(default_scheme_for("10.0.0.1:5000"), Scheme::Https);
        assert!(
            is_localhost("[::1]")
                && is_localhost("::ffff:127.0.0.1")
                && !is_localhost("localhost.example")
        );
    }

    #[test]
    fn default_dir_applies() {
        let t = TempDir::new();
        t.write(
            "_default",
            "[host.\"https://registry.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        );
        let h = hosts_for(t.path(), "ghcr.io").unwrap();
        assert_eq!(
            urls(&h),
            ["https://registry.example.com/v2", "https://ghcr.io/v2"]
        );
        assert!(!h[0].is_upstream && h[1].is_upstream);
        assert!(h[0].capabilities.resolve && !h[0].capabilities.push);
        let h = hosts_for(t.path(), "docker.io").unwrap();
        assert_eq!(
            urls(&h),
            [
                "https://registry.example.com/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
    }

    #[test]
    fn host_dir_overrides_default() {
        let t = TempDir::new();
        t.write("_default", "[host.\"https://default-mirror\"]\n");
        t.write("ghcr.io", "[host.\"https://ghcr-mirror\"]\n");
        assert_eq!(
            urls(&hosts_for(t.path(), "ghcr.io").unwrap()),
            ["https://ghcr-mirror/v2", "https://ghcr.io/v2"]
        );
        // A host dir without hosts.toml still shadows _default (containerd).
        std::fs::create_dir_all(t.path().join("quay.io")).unwrap();
        assert_eq!(
            urls(&hosts_for(t.path(), "quay.io").unwrap()),
            ["https://quay.io/v2"]
        );
        // host:port and containerd's colon-free form, which wins.
        t.write("reg.example:5000", "[host.\"https://colon\"]\n");
        assert_eq!(
            hosts_for(t.path(), "reg.example:5000").unwrap()[0].host,
            "colon"
        );
        t.write("reg.example_5000_", "[host.\"https://underscore\"]\n");
        assert_eq!(
            hosts_for(t.path(), "reg.example:5000").unwrap()[0].host,
            "underscore"
        );
    }

    #[test]
    fn docker_io_server_default() {
        let t = TempDir::new();
        // No `server`: upstream defaults even though the file exists, and the
        // defaulted upstream ignores top-level capabilities/override_path.
        t.write(
            "docker.io",
            "capabilities = [\"pull\"]\noverride_path = true\nskip_verify = true\n[host.\"mirror.gcr.io\"]\n",
        );
        let h = hosts_for(t.path(), "docker.io").unwrap();
        assert_eq!(
            urls(&h),
            [
                "https://mirror.gcr.io/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert_eq!(h[1].capabilities, Capabilities::ALL);
        assert!(h[1].skip_verify);
        // Explicit server keeps its own settings.
        t.write(
            "docker.io",
            "server = \"https://docker.io\"\ncapabilities = [\"pull\"]\n",
        );
        let h = hosts_for(t.path(), "docker.io").unwrap();
        assert_eq!(urls(&h), ["https://docker.io/v2"]);
        assert_eq!(h[0].capabilities, PULL_ONLY);
    }

    #[test]
    fn mirror_order_preserved() {
        let t = TempDir::new();
        t.write(
            "example.com",
            r#"
server = "https://example.com"
[host."https://zeta.mirror"]
[host."https://alpha.mirror"]
  capabilities = ["pull"]
[host."https://mid.mirror"]
[host."https://alpha.mirror".header]
  x-a = "1"
"#,
        );
        let h = hosts_for(t.path(), "example.com").unwrap();
        assert_eq!(
            urls(&h),
            [
                "https://zeta.mirror/v2",
                "https://alpha.mirror/v2",
                "https://mid.mirror/v2",
                "https://example.com/v2"
            ]
        );
        assert_eq!(h[1].headers, [("x-a".to_string(), "1".to_string())]);
        assert_eq!(h[1].capabilities, PULL_ONLY);
    }

    #[test]
    fn capabilities_parsing() {
        let t = TempDir::new();
        t.write(
            "example.com",
            r#"
[host."https://a"]
  capabilities = ["pull"]
[host."https://b"]
  capabilities = ["PULL", "Resolve"]
[host."https://c"]
  capabilities = []
"#,
        );
        let h = hosts_for(t.path(), "example.com").unwrap();
        assert_eq!(h[0].capabilities, PULL_ONLY);
        assert!(!h[0].capabilities.resolve);
        assert!(h[1].capabilities.pull && h[1].capabilities.resolve && !h[1].capabilities.push);
        assert_eq!(h[2].capabilities, Capabilities::ALL);

        let d = t.write(
            "bad.example",
            "\n[host.\"https://a\"]\n  capabilities = [\"pull\", \"fetch\"]\n",
        );
        let err = hosts_for(t.path(), "bad.example").unwrap_err().to_string();
        assert!(
            err.contains(&d.join(HOSTS_FILE).display().to_string()),
            "{err}"
        );
        assert!(err.contains(":3") && err.contains("fetch"), "{err}");
    }

    #[test]
    fn relative_ca_and_client_paths() {
        let t = TempDir::new();
        let d = t.write(
            "example.com",
            r#"
ca = "upstream.crt"
[host."https://m1"]
  ca = ["a.pem", "/etc/certs/b.pem", "sub/c.pem"]
  client = [["client.cert", "client.key"], ["both.pem", ""]]
[host."https://m2"]
  client = "/abs/client.pem"
[host."https://m3"]
  client = ["one.pem", "two.pem"]
"#,
        );
        let h = hosts_for(t.path(), "example.com").unwrap();
        assert_eq!(
            h[0].ca,
            [
                d.join("a.pem"),
                "/etc/certs/b.pem".into(),
                d.join("sub/c.pem")
            ]
        );
        assert!(h[0].ca.iter().all(|p| p.is_absolute()));
        assert_eq!(
            h[0].client_certs,
            [
                (d.join("client.cert"), Some(d.join("client.key"))),
                (d.join("both.pem"), None)
            ]
        );
        assert_eq!(
            h[1].client_certs,
            [(PathBuf::from("/abs/client.pem"), None)]
        );
        assert_eq!(
            h[2].client_certs,
            [(d.join("one.pem"), None), (d.join("two.pem"), None)]
        );
        assert_eq!(h[3].ca, [d.join("upstream.crt")]);
        assert_eq!(h[3].base_url(), "https://example.com/v2");

        t.write("pair.example", "client = [[\"a\", \"b\", \"c\"]]\n");
        let err = hosts_for(t.path(), "pair.example").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn docker_cert_files_fallback() {
        let t = TempDir::new();
        let d = t.path().join("example.com");
        std::fs::create_dir_all(&d).unwrap();
        for f in [
            "ca.crt",
            "client.cert",
            "client.key",
            "other.cert",
            "README",
        ] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let h = hosts_for(t.path(), "example.com").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].ca, [d.join("ca.crt")]);
        assert_eq!(
            h[0].client_certs,
            [
                (d.join("client.cert"), Some(d.join("client.key"))),
                (d.join("other.cert"), None)
            ]
        );
        assert_eq!(h[0].base_url(), "https://example.com/v2");
    }

    #[test]
    fn headers_single_and_list() {
        let t = TempDir::new();
        t.write(
            "example.com",
            r#"
[header]
  x-top = "t"
[host."https://m"]
  [host."https://m".header]
    x-zz = "single"
    x-custom = ["a", "b"]
"#,
        );
        let h = hosts_for(t.path(), "example.com").unwrap();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            h[0].headers,
            [
                kv("x-zz", "single"),
                kv("x-custom", "a"),
                kv("x-custom", "b")
            ]
        );
        assert_eq!(h[1].headers, [kv("x-top", "t")]);

        t.write("bad.example", "[header]\nx = 1\n");
        let err = hosts_for(t.path(), "bad.example").unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("a string or an array of strings"),
            "{err}"
        );
    }

    #[test]
    fn override_path_and_server_paths() {
        let t = TempDir::new();
        t.write(
            "example.com",
            r#"
server = "https://registry.example/some/path"
[host."https://noncompliant.mirror/v2/namespaceprefix"]
  override_path = true
[host."https://noprefix.mirror"]
  override_path = true
[host."https://bak.mirror/us/"]
[host."https://already.mirror/x/v2"]
[host."https://slash.mirror/"]
[host."https://dots.mirror/a/./b/../c//"]
"#,
        );
        let h = hosts_for(t.path(), "example.com").unwrap();
        assert_eq!(
            urls(&h),
            [
                "https://noncompliant.mirror/v2/namespaceprefix",
                "https://noprefix.mirror",
                "https://bak.mirror/us/v2",
                "https://already.mirror/x/v2",
                "https://slash.mirror/v2",
                "https://dots.mirror/a/c/v2",
                "https://registry.example/some/path/v2",
            ]
        );
        t.write(
            "o.example",
            "server = \"https://o.example/api\"\noverride_path = true\n",
        );
        assert_eq!(
            urls(&hosts_for(t.path(), "o.example").unwrap()),
            ["https://o.example/api"]
        );
    }

    #[test]
    fn who_may_get_credentials_over_plain_http() {
        let t = TempDir::new();
        t.write(
            "example.com",
            r#"
server = "http://example.com:5000"
[host."http://ca.mirror:5000"]
  ca = "ca.pem"
[host."http://skip.mirror:5000"]
  skip_verify = true
[host."http://client.mirror:5000"]
  client = "c.pem"
[host."http://plain.mirror:5000"]
[host."http://port80.mirror:80"]
  skip_verify = true
[host."https://tls.mirror"]
"#,
        );
        let h = hosts_for(t.path(), "example.com").unwrap();
        let decide = |h: &RegistryHost| (h.tries_https_first(), h.plain_http_credentials());
        // TLS settings on an http:// host: HTTPS first, and no credentials
        // if it turns out to speak plain HTTP.
        assert_eq!(decide(&h[0]), (true, false), "{:?}", h[0]);
        assert_eq!(decide(&h[1]), (true, false), "{:?}", h[1]);
        assert_eq!(decide(&h[2]), (true, false), "{:?}", h[2]);
        // Plain HTTP, asked for in so many words.
        assert_eq!(decide(&h[3]), (false, true), "{:?}", h[3]);
        assert_eq!(decide(&h[4]), (false, true), "{:?}", h[4]);
        // HTTPS is HTTPS.
        assert_eq!(decide(&h[5]), (false, false), "{:?}", h[5]);
        // The top-level server without TLS settings.
        assert_eq!(decide(&h[6]), (false, true), "{:?}", h[6]);

        // A loopback registry without hosts.toml: HTTPS first (containerd's
        // default), credentials allowed over HTTP: they stay on the node.
        let lo = hosts_for(t.path(), "127.0.0.1:5000").unwrap().remove(0);
        assert!(lo.loopback_default);
        assert_eq!(decide(&lo), (true, true));
        // The same address written in hosts.toml with TLS settings is not
        // the default: no credentials over plain HTTP.
        t.write(
            "127.0.0.1:5000",
            "server = \"http://127.0.0.1:5000\"\nskip_verify = true\n",
        );
        let lo = hosts_for(t.path(), "127.0.0.1:5000").unwrap().remove(0);
        assert!(!lo.loopback_default);
        assert_eq!(decide(&lo), (true, false));
        // Loopback but HTTPS by default: nothing over plain HTTP to decide.
        let lo = hosts_for(t.path(), "localhost").unwrap().remove(0);
        assert!(!lo.loopback_default && !lo.plain_http_credentials());
    }

    #[test]
    fn schemes() {
        let t = TempDir::new();
        t.write(
            "example.com",
            r#"
server = "registry.example:5000"
[host."mirror:5000"]
[host."http://192.168.31.250:5000"]
  skip_verify = true
[host."http://plain.mirror"]
[host."HTTPS://upper.mirror"]
[host."httpbin.local:5000"]
"#,
        );
        let h = hosts_for(t.path(), "example.com").unwrap();
        assert_eq!(
            urls(&h),
            [
                "https://mirror:5000/v2",
                "http://192.168.31.250:5000/v2",
                "http://plain.mirror/v2",
                "https://upper.mirror/v2",
                "https://httpbin.local:5000/v2",
                "https://registry.example:5000/v2",
            ]
        );
        assert!(h[1].skip_verify && h[1].tries_https_first());
        assert!(!h[2].tries_https_first());

        t.write("bad.example", "[host.\"ftp://x\"]\n");
        let err = hosts_for(t.path(), "bad.example").unwrap_err().to_string();
        assert!(
            err.contains(":1") && err.contains("unsupported scheme"),
            "{err}"
        );
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let t = TempDir::new();
        let d = t.write(
            "example.com",
            "server = \"https://example.com\"\n[host.\"https://m\"\n  capabilities = [\"pull\"]\n",
        );
        let err = hosts_for(t.path(), "example.com").unwrap_err();
        assert!(matches!(err, HostsError::Parse { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(&d.join(HOSTS_FILE).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("line 2"), "{msg}");

        t.write(
            "type.example",
            "server = \"https://x\"\n\nskip_verify = \"yes\"\n",
        );
        let msg = hosts_for(t.path(), "type.example").unwrap_err().to_string();
        assert!(
            msg.contains("type.example") && msg.contains("line 3"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_ignored() {
        let t = TempDir::new();
        t.write(
            "example.com",
            "server = \"https://example.com\"\nproxy = \"http://p:8080\"\nfuture = 1\n[host.\"https://m\"]\n  dial_timeout = \"1s\"\n  server = \"ignored\"\n",
        );
        assert_eq!(
            urls(&hosts_for(t.path(), "example.com").unwrap()),
            ["https://m/v2", "https://example.com/v2"]
        );
    }

    #[test]
    fn rejects_path_like_registry_hosts() {
        let t = TempDir::new();
        for bad in ["", "..", "a/b", "_default", "a b"] {
            assert!(
                matches!(hosts_for(t.path(), bad), Err(HostsError::InvalidHost(_))),
                "{bad:?}"
            );
        }
    }

    /// The mirror example and the detailed example from containerd's docs/hosts.md.
    #[test]
    fn containerd_docs_examples() {
        let t = TempDir::new();
        let d = t.write(
            "docker.io",
            r#"
server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest from this host
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"                 # Or absolute path /etc/containerd/certs.d/docker.io/docker-mirror.crt
"#,
        );
        let h = hosts_for(t.path(), "docker.io").unwrap();
        assert_eq!(
            urls(&h),
            [
                "https://public-mirror.example.com/v2",
                "https://docker-mirror.internal/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert_eq!(h[0].capabilities, PULL_ONLY);
        assert_eq!(h[1].ca, [d.join("docker-mirror.crt")]);
        assert!(h[1].capabilities.resolve && !h[1].capabilities.push);
        assert_eq!(h[2].capabilities, Capabilities::ALL);
        assert!(h[2].is_upstream);

        // containerd's TestParseHostFile input, expectations from that test.
        t.write(
            "test.registry",
            r#"
server = "https://test-default.registry"
ca = "/etc/path/default"
[header]
  x-custom-1 = "custom header"

[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push", "referrers"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://no-referrers.registry"]
  capabilities = ["pull", "resolve", "push"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://noncompliantmirror.registry/v2/namespaceprefix"]
  capabilities = ["pull"]
  override_path = true

[host."https://noprefixnoncompliant.registry"]
  override_path = true

[host."https://onlyheader.registry".header]
  x-custom-1 = "justaheader"

[host."https://dial-timeout.registry"]
  dial_timeout = "3s"
"#,
        );
        let h = hosts_for(t.path(), "test.registry").unwrap();
        let got: Vec<_> = h
            .iter()
            .map(|h| (h.scheme, h.host.as_str(), h.path.as_str()))
            .collect();
        use Scheme::*;
        assert_eq!(
            got,
            [
                (Https, "mirror.registry", "/v2"),
                (Https, "mirror-bak.registry", "/us/v2"),
                (Http, "mirror.registry", "/v2"),
                (Https, "test-1.registry", "/v2"),
                (Https, "test-2.registry", "/v2"),
                (Https, "test-3.registry", "/v2"),
                (Https, "no-referrers.registry", "/v2"),
                (Https, "noncompliantmirror.registry", "/v2/namespaceprefix"),
                (Https, "noprefixnoncompliant.registry", ""),
                (Https, "onlyheader.registry", "/v2"),
                (Https, "dial-timeout.registry", "/v2"),
                (Https, "test-default.registry", "/v2"),
            ]
        );
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            h[0].headers,
            [kv("x-custom-2", "value1"), kv("x-custom-2", "value2")]
        );
        assert_eq!(h[0].ca, [PathBuf::from("/etc/certs/mirror.pem")]);
        assert!(!h[0].skip_verify && h[1].skip_verify);
        assert_eq!(h[3].capabilities, Capabilities::ALL);
        assert_eq!(
            h[3].client_certs,
            [
                (
                    "/etc/certs/client.cert".into(),
                    Some("/etc/certs/client.key".into())
                ),
                ("/etc/certs/client.pem".into(), None)
            ]
        );
        assert_eq!(
            h[6].capabilities,
            Capabilities {
                referrers: false,
                ..Capabilities::ALL
            }
        );
        assert_eq!(h[9].headers, [kv("x-custom-1", "justaheader")]);
        assert_eq!(h[11].ca, [PathBuf::from("/etc/path/default")]);
        assert_eq!(h[11].headers, [kv("x-custom-1", "custom header")]);
        assert!(h[11].is_upstream && h[..11].iter().all(|h| !h.is_upstream));
    }
}
