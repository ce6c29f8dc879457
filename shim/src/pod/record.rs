//! A pod as berth records it, and what its CRI config says that the
//! rest of berth asks about (its unique name, namespace modes).

use cri_api::v1::{NamespaceMode, NamespaceOption, PodSandboxConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

/// One pod, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub state: PodState,
    pub created_ns: i64,
    pub runtime_handler: String,
    /// The CRI PodSandboxConfig, protobuf-encoded, hex.
    pub(super) config: String,
    /// Namespaces pinned for it (names of [`ns::Kind`]).
    pub pinned: Vec<String>,
    /// Cgroup directories berth created (and so removes), relative to each
    /// hierarchy, shallowest first.
    pub cgroups: Vec<String>,
    pub shm_mounted: bool,
    /// The CNI network attached by ADD, until DEL succeeds.
    #[serde(default)]
    pub network: Option<Network>,
    /// The infra process holding the pod's shared PID namespace, if any.
    #[serde(default)]
    pub infra_pid: Option<i32>,
    /// The last failure of CNI DEL (retried in the background) or CHECK.
    #[serde(default)]
    pub network_error: Option<String>,
    /// `config`, decoded once.
    #[serde(skip)]
    pub(super) decoded: std::sync::OnceLock<PodSandboxConfig>,
}

/// What DEL needs: the config ADD ran with and its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub list: serde_json::Value,
    pub result: serde_json::Value,
    pub ips: Vec<String>,
    /// The runtimeConfig ADD got (DEL must get the same: host-local needs
    /// the ipRanges it allocated from).
    #[serde(default)]
    pub runtime_config: serde_json::Value,
}

impl PodRecord {
    /// A record holding nothing yet: what `create` fills in, and what
    /// teardown is given for a pod berth never recorded.
    pub(super) fn bare(id: String) -> PodRecord {
        PodRecord {
            id,
            state: PodState::NotReady,
            created_ns: 0,
            runtime_handler: String::new(),
            config: String::new(),
            pinned: Vec::new(),
            cgroups: Vec::new(),
            shm_mounted: false,
            network: None,
            infra_pid: None,
            network_error: None,
            decoded: Default::default(),
        }
    }

    pub fn config(&self) -> PodSandboxConfig {
        self.config_ref().clone()
    }

    /// The config, decoded on first use.
    pub fn config_ref(&self) -> &PodSandboxConfig {
        self.decoded
            .get_or_init(|| crate::stored::decode(&self.config))
    }

    pub fn set_config(&mut self, c: &PodSandboxConfig) {
        self.config = crate::stored::encode(c);
        self.decoded = c.clone().into();
    }

    /// `name_namespace_uid_attempt`: what must be unique.
    pub fn key(&self) -> String {
        key_of(self.config_ref())
    }
}

/// The pod's namespace modes (all POD when unset).
pub fn namespace_options(c: &PodSandboxConfig) -> NamespaceOption {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

pub fn key_of(c: &PodSandboxConfig) -> String {
    let m = c.metadata.as_ref();
    let f = |f: fn(&cri_api::v1::PodSandboxMetadata) -> &str| m.map_or("", f);
    format!(
        "{}_{}_{}_{}",
        f(|m| &m.name),
        f(|m| &m.namespace),
        f(|m| &m.uid),
        m.map_or(0, |m| m.attempt)
    )
}

/// Whether the pod asks for one PID namespace shared by its containers.
pub fn shares_pid(c: &PodSandboxConfig) -> bool {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|o| o.pid() == NamespaceMode::Pod)
}
