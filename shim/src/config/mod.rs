//! berthd's configuration: the TOML file, its defaults, and the command-line
//! flags that override it. Every key is documented in the README.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_imageservice::limits::{FreeSpace, Limits, parse_size};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where berthd looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    // toml's message already names the line, the column and the key.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration. Unknown keys are an error, not a silent typo.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub log_level: String,
    pub cgroup_driver: CgroupDriver,
    pub pinned_images: Vec<String>,
    /// Resource limits every container starts with, as CRI-O's
    /// `default_ulimits`: "nofile=1024:4096" (name=soft:hard, or one value
    /// for both; "unlimited" or -1 for no limit). Empty: berthd's own.
    pub default_rlimits: Vec<String>,
    pub registry: RegistryConfig,
    pub images: ImagesConfig,
    pub cni: CniConfig,
    pub cdi: CdiConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub streaming: StreamingConfig,
    pub runtimes: BTreeMap<String, RuntimeHandler>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// The node's: systemd where systemd is PID 1 on cgroup v2 (as the
    /// kubelet's and kubeadm's defaults there), else cgroupfs. Resolved
    /// at start ([`crate::cgroups::resolve_driver`]).
    Auto,
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// containerd's hosts.toml layout: `<config_path>/<host>/hosts.toml`.
    pub config_path: PathBuf,
    /// The window of the minimum-rate rule: a blob download that brings
    /// less than `pull_min_rate` bytes/s on average over any window this
    /// long is cancelled (and so is one that brings nothing this long).
    #[serde(with = "duration")]
    pub pull_progress_timeout: Duration,
    /// Bytes per second a blob download must average over every
    /// `pull_progress_timeout` window; 0: one byte per window is enough.
    pub pull_min_rate: u64,
    /// Deadline of each registry request: connecting, the token exchange,
    /// the answer's headers, and a manifest, token or error body read whole.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
}

/// Bounds on what a pull may fetch and unpack (see the README's table).
/// Sizes are bytes, as an integer or a string with a unit ("64MiB").
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Most bytes one layer may unpack to.
    #[serde(deserialize_with = "deserialize_size")]
    pub max_layer_unpacked_size: u64,
    /// Most entries per layer.
    pub max_layer_entries: u64,
    /// Most layers per image.
    pub max_layers: u64,
    /// Most bytes of a manifest or an index.
    #[serde(deserialize_with = "deserialize_size")]
    pub max_manifest_size: u64,
    /// Most bytes of an image config blob.
    #[serde(deserialize_with = "deserialize_size")]
    pub max_config_size: u64,
    /// Free space of the image filesystem a pull may not eat into: a size
    /// or a percentage of the filesystem ("5%").
    #[serde(
        deserialize_with = "deserialize_free_space",
        serialize_with = "serialize_free_space"
    )]
    pub min_free_space: FreeSpace,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        let l = Limits::default();
        ImagesConfig {
            max_layer_unpacked_size: l.max_layer_unpacked_size,
            max_layer_entries: l.max_layer_entries,
            max_layers: l.max_layers,
            max_manifest_size: l.max_manifest_size,
            max_config_size: l.max_config_size,
            min_free_space: l.min_free_space,
        }
    }
}

impl ImagesConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_layer_unpacked_size: self.max_layer_unpacked_size,
            max_layer_entries: self.max_layer_entries,
            max_layers: self.max_layers,
            max_manifest_size: self.max_manifest_size,
            max_config_size: self.max_config_size,
            min_free_space: self.min_free_space,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// How often a CNI DEL that failed is tried again in the background.
    #[serde(with = "duration")]
    pub del_retry_interval: Duration,
    /// How long one plugin execution (ADD, DEL or CHECK) may take before
    /// its process group is killed and the call fails.
    #[serde(with = "duration")]
    pub plugin_timeout: Duration,
}

/// The Prometheus endpoint (see `crate::metrics`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` to serve `/metrics` on; empty: off.
    pub address: String,
}

/// OpenTelemetry traces (see `crate::trace`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC collector, `http://host:4317`; empty: the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`/`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// and without those, off.
    pub endpoint: String,
    /// The share of calls traced, 0 to 1, unless the caller's traceparent
    /// decided (or `OTEL_TRACES_SAMPLER` is set).
    pub sampling_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            endpoint: String::new(),
            sampling_ratio: 1.0,
        }
    }
}

/// CDI device specs (see `crate::cdi`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CdiConfig {
    /// Read in this order; a later directory wins for the same device.
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    pub address: String,
    /// 0 picks a free port.
    pub port: u16,
    /// A session with no traffic either way for this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// How long the URL of an Exec, Attach or PortForward stays usable.
    #[serde(with = "duration")]
    pub token_ttl: Duration,
    /// Serve HTTPS with this certificate chain (PEM) and key; both or
    /// neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

/// One RuntimeClass handler.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RuntimeHandler {
    /// youki's libcontainer inside berth-monitor.
    Builtin,
    /// An external binary with runc's command line (runc, crun).
    Oci { path: PathBuf },
}

/// The handler the kubelet means by an empty `runtime_handler`.
pub const DEFAULT_HANDLER: &str = "builtin";

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: "/run/berth/berth.sock".into(),
            root: "/var/lib/berth".into(),
            state: "/run/berth".into(),
            log_level: "info".into(),
            cgroup_driver: CgroupDriver::Auto,
            pinned_images: Vec::new(),
            default_rlimits: Vec::new(),
            registry: RegistryConfig::default(),
            images: ImagesConfig::default(),
            cni: CniConfig::default(),
            cdi: CdiConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            streaming: StreamingConfig::default(),
            runtimes: default_runtimes(),
        }
    }
}

fn default_runtimes() -> BTreeMap<String, RuntimeHandler> {
    BTreeMap::from([
        (DEFAULT_HANDLER.to_string(), RuntimeHandler::Builtin),
        (
            "runc".to_string(),
            RuntimeHandler::Oci {
                path: "/usr/sbin/runc".into(),
            },
        ),
    ])
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: "/etc/berth/certs.d".into(),
            pull_progress_timeout: Duration::from_secs(5 * 60),
            pull_min_rate: 1024,
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            del_retry_interval: Duration::from_secs(30),
            plugin_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1".into(),
            port: 0,
            idle_timeout: Duration::from_secs(4 * 3600),
            token_ttl: Duration::from_secs(60),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Values given on the command line; each one wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// Where each value of the effective config came from: by dotted key
/// (`registry.request_timeout`, `runtimes.crun.path`), the file or flag
/// that set it last. Keys set by nothing are defaults.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Origins(pub BTreeMap<String, String>);

impl Origins {
    /// The origin of `key`, or of the closest table above it that was set
    /// whole; "default" when nothing set it.
    pub fn of(&self, key: &str) -> &str {
        let mut k = key;
        loop {
            if let Some(o) = self.0.get(k) {
                return o;
            }
            match k.rsplit_once('.') {
                Some((up, _)) => k = up,
                None => return "default",
            }
        }
    }
}

impl Config {
    /// The drop-in directory of the main config file `path`: `config.d`
    /// beside it (`/etc/berth/config.d` for the default file).
    pub fn dropin_dir(path: &Path) -> PathBuf {
        path.parent().unwrap_or(Path::new("/")).join("config.d")
    }

    /// Loads the config: `explicit` must exist; the default path may be
    /// missing, which means all defaults. Then merges the drop-ins (`*.toml` in
    /// [`Config::dropin_dir`], in name order) over the main file: tables
    /// merge key by key, any other value replaces the one before. Each file
    /// is checked alone first, so an error names its file and line. Also
    /// says where each value came from.
    pub fn load_with_origins(
        explicit: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<(Config, Origins), ConfigError> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        let mut files = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(text) => files.push((path.to_path_buf(), text)),
            Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let dir = Config::dropin_dir(path);
        let mut dropins: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(ConfigError::Read { path: dir, source }),
        };
        dropins.sort();
        for f in dropins {
            let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
                path: f.clone(),
                source,
            })?;
            files.push((f, text));
        }
        let mut merged = toml::Table::new();
        let mut origins = Origins::default();
        for (f, text) in &files {
            Config::parse(f, text)?;
            let table: toml::Table = toml::from_str(text).map_err(|e| parse_error(f, e))?;
            merge(
                &mut merged,
                table,
                "",
                &f.display().to_string(),
                &mut origins,
            );
        }
        let mut config = Config::from_table(path, merged)?;
        for (key, set) in [
            ("socket", overrides.socket.is_some()),
            ("root", overrides.root.is_some()),
            ("state", overrides.state.is_some()),
            ("log_level", overrides.log_level.is_some()),
        ] {
            if set {
                origins
                    .0
                    .insert(key.into(), format!("--{}", key.replace('_', "-")));
            }
        }
        config.apply(overrides);
        config.validate(path)?;
        Ok((config, origins))
    }

    fn from_table(path: &Path, table: toml::Table) -> Result<Config, ConfigError> {
        let config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(path, e))?;
        Ok(with_default_runtimes(config))
    }

    /// The effective config as TOML, each value followed by where it came
    /// from (`berthd --print-config`).
    pub fn annotated(&self, origins: &Origins) -> String {
        let value = toml::Value::try_from(self).unwrap_or(toml::Value::Table(Default::default()));
        let mut out = String::new();
        if let toml::Value::Table(t) = value {
            print_table(&mut out, &t, "", origins);
        }
        out
    }

    /// Parses one file's text. User runtimes are added to the defaults, so a
    /// file that only adds `[runtimes.crun]` keeps `builtin` and `runc`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config = toml::from_str(text).map_err(|e| parse_error(path, e))?;
        Ok(with_default_runtimes(config))
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.socket {
            self.socket = v.clone();
        }
        if let Some(v) = &o.root {
            self.root = v.clone();
        }
        if let Some(v) = &o.state {
            self.state = v.clone();
        }
        if let Some(v) = &o.log_level {
            self.log_level = v.clone();
        }
    }

    /// Checks what the types alone cannot.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        for (key, value) in [
            ("socket", &self.socket),
            ("root", &self.root),
            ("state", &self.state),
        ] {
            if !value.is_absolute() {
                return Err(invalid(format!(
                    "key `{key}`: {} is not an absolute path",
                    value.display()
                )));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid(format!(
                "key `log_level`: {:?} is not a level or filter: {e}",
                self.log_level
            )));
        }
        for r in &self.default_rlimits {
            parse_rlimit(r).map_err(|e| invalid(format!("key `default_rlimits`: {e}")))?;
        }
        for (key, value) in [
            (
                "registry.pull_progress_timeout",
                self.registry.pull_progress_timeout,
            ),
            ("registry.request_timeout", self.registry.request_timeout),
        ] {
            if value < Duration::from_secs(1) {
                return Err(invalid(format!(
                    "key `{key}`: {value:?} is less than a second: every registry request would fail"
                )));
            }
        }
        if self.streaming.tls_cert_file.is_some() != self.streaming.tls_key_file.is_some() {
            return Err(invalid(
                "keys `streaming.tls_cert_file` and `streaming.tls_key_file` go together".into(),
            ));
        }
        if !self.metrics.address.is_empty()
            && self
                .metrics
                .address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(format!(
                "key `metrics.address`: {:?} is not ip:port",
                self.metrics.address
            )));
        }
        if !self.tracing.endpoint.is_empty()
            && !["http://", "https://"]
                .iter()
                .any(|p| self.tracing.endpoint.starts_with(p))
        {
            return Err(invalid(format!(
                "key `tracing.endpoint`: {:?} is not an http:// or https:// URL",
                self.tracing.endpoint
            )));
        }
        if !(0.0..=1.0).contains(&self.tracing.sampling_ratio) {
            return Err(invalid(format!(
                "key `tracing.sampling_ratio`: {} is not between 0 and 1",
                self.tracing.sampling_ratio
            )));
        }
        if self.streaming.address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!(
                "key `streaming.address`: {:?} is not an IP address",
                self.streaming.address
            )));
        }
        if !matches!(
            self.runtimes.get(DEFAULT_HANDLER),
            Some(RuntimeHandler::Builtin)
        ) {
            return Err(invalid(format!(
                "key `runtimes.{DEFAULT_HANDLER}`: the default handler must have type = \"builtin\""
            )));
        }
        Ok(())
    }
}

/// toml's message names the line, the column and the key.
fn parse_error(path: &Path, e: toml::de::Error) -> ConfigError {
    ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    }
}

/// The user's runtimes added to the defaults, so a file that only adds
/// `[runtimes.crun]` keeps `builtin` and `runc`.
fn with_default_runtimes(mut config: Config) -> Config {
    let mut runtimes = default_runtimes();
    runtimes.append(&mut config.runtimes);
    config.runtimes = runtimes;
    config
}

/// The dotted keys whose values differ between `a` and `b` (a list is one
/// value).
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn flatten(v: &toml::Value, prefix: &str, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(v, &key, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut fa = BTreeMap::new();
    let mut fb = BTreeMap::new();
    for (c, f) in [(a, &mut fa), (b, &mut fb)] {
        if let Ok(v) = toml::Value::try_from(c) {
            flatten(&v, "", f);
        }
    }
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .cloned()
        .collect()
}

/// Merges `from` (one file's table, from `origin`) into `into`.
fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    origin: &str,
    origins: &mut Origins,
) {
    for (k, v) in from {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => {
                merge(a, b, &key, origin, origins)
            }
            (_, toml::Value::Table(b)) => {
                let mut t = toml::Table::new();
                merge(&mut t, b, &key, origin, origins);
                into.insert(k, toml::Value::Table(t));
            }
            (_, v) => {
                origins.0.insert(key, origin.to_string());
                into.insert(k, v);
            }
        }
    }
}

/// `table`'s values then its sub-tables, as TOML, with origins.
fn print_table(out: &mut String, table: &toml::Table, prefix: &str, origins: &Origins) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    for (k, v) in table.iter().filter(|(_, v)| !v.is_table()) {
        out.push_str(&format!("{k} = {v}  # {}\n", origins.of(&key(k))));
    }
    for (k, v) in table.iter() {
        if let toml::Value::Table(t) = v {
            out.push_str(&format!("\n[{}]\n", key(k)));
            print_table(out, t, &key(k), origins);
        }
    }
}

/// The resource limits setrlimit(2) knows, by their ulimit names.
pub(crate) const RLIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Parses one `default_rlimits` entry, "nofile=1024:4096" or
/// "core=unlimited", into the OCI type ("RLIMIT_NOFILE"), soft and hard.
pub fn parse_rlimit(s: &str) -> Result<(String, u64, u64), String> {
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not name=soft:hard"))?;
    let name = name.trim().to_ascii_lowercase();
    if !RLIMITS.contains(&name.as_str()) {
        return Err(format!(
            "{s:?}: unknown limit {name:?} (one of {})",
            RLIMITS.join(", ")
        ));
    }
    let value = |v: &str| -> Result<u64, String> {
        match v.trim() {
            "unlimited" | "-1" => Ok(u64::MAX),
            n => n
                .parse()
                .map_err(|_| format!("{s:?}: {n:?} is not a number or \"unlimited\"")),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (value(soft)?, value(hard)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        return Err(format!("{s:?}: the soft limit is above the hard one"));
    }
    Ok((format!("RLIMIT_{}", name.to_ascii_uppercase()), soft, hard))
}

/// Parses `300ms`, `30s`, `5m`, `1h` or combinations such as `1m30s`, as
/// Go's `time.ParseDuration` (and so containerd's config) accepts them.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as \"30s\", \"5m\" or \"1h30m\"");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .filter(|&n| n > 0)
            .ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(unit).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `#[serde(with = "duration")]`: a duration written as in the config
/// file ("30s", "5m", "1h").
mod duration {
    pub(super) use super::deserialize_duration as deserialize;
    pub(super) use super::serialize_duration as serialize;
}

fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A key written as an integer of bytes or as a string ("64MiB", "5%").
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrStr {
    Int(u64),
    Str(String),
}

/// A size: an integer of bytes or a string such as "64MiB".
fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match IntOrStr::deserialize(d)? {
        IntOrStr::Int(n) => Ok(n),
        IntOrStr::Str(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn deserialize_free_space<'de, D: Deserializer<'de>>(d: D) -> Result<FreeSpace, D::Error> {
    match IntOrStr::deserialize(d)? {
        IntOrStr::Int(n) => Ok(FreeSpace::Bytes(n)),
        IntOrStr::Str(s) => FreeSpace::parse(&s).map_err(serde::de::Error::custom),
    }
}

fn serialize_free_space<S: Serializer>(f: &FreeSpace, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&f.to_string())
}

fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        s.serialize_str(&format!("{}s", ms / 1000))
    } else {
        s.serialize_str(&format!("{ms}ms"))
    }
}

#[cfg(test)]
mod tests;
