//! A container as berth records it, and what the monitor's files say
//! about it now.

use std::path::PathBuf;

use berth_runtime::protocol::state::Exit;
use cri_api::v1::ContainerConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub created_ns: i64,
    /// The image as the user named it, and the image id it resolved to.
    pub image: String,
    pub image_id: String,
    pub log_path: String,
    pub stop_signal: i32,
    /// The CRI ContainerConfig, protobuf-encoded, hex.
    pub(super) config: String,
    /// Its cgroup (the OCI `cgroupsPath`).
    #[serde(default)]
    pub cgroup: String,
    /// The external OCI runtime of its pod's handler; None: libcontainer.
    #[serde(default)]
    pub runtime: Option<PathBuf>,
    /// The spec's `process.user` (uid, gid, additionalGids), for status.
    #[serde(default)]
    pub user: Option<serde_json::Value>,
    /// `config`, decoded once.
    #[serde(skip)]
    pub(super) decoded: std::sync::OnceLock<ContainerConfig>,
}

impl ContainerRecord {
    pub fn config(&self) -> ContainerConfig {
        self.config_ref().clone()
    }

    /// The config, decoded on first use.
    pub fn config_ref(&self) -> &ContainerConfig {
        self.decoded
            .get_or_init(|| crate::stored::decode(&self.config))
    }

    pub fn set_config(&mut self, c: &ContainerConfig) {
        self.config = crate::stored::encode(c);
        self.decoded = c.clone().into();
    }
}

/// `name_attempt`: what must be unique within a pod.
pub fn key_of(c: &ContainerConfig) -> String {
    let m = c.metadata.as_ref();
    format!(
        "{}_{}",
        m.map_or("", |m| &m.name),
        m.map_or(0, |m| m.attempt)
    )
}

/// What the monitor's files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Created,
    Running {
        started_ns: i64,
    },
    Exited {
        started_ns: i64,
        exit: Exit,
    },
    /// Its monitor is gone without recording an exit.
    Unknown,
}

pub fn name(o: &Observed) -> &'static str {
    match o {
        Observed::Created => "created",
        Observed::Running { .. } => "running",
        Observed::Exited { .. } => "exited",
        Observed::Unknown => "unknown",
    }
}
