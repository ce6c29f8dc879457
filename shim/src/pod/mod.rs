//! Pod sandboxes: what a pod holds on the node, made in one step and
//! torn down in one place, and their records in the metadata database.
//! This file makes and removes pods; by concern:
//! `record.rs` (the record, what its config says), `ns.rs` (pinned
//! namespaces), `userns.rs` (its user namespace's ID maps), `infra.rs`
//! (the PID-namespace infra process), `network.rs` (CNI ADD/CHECK/DEL),
//! `files.rs` (hostname, hosts, resolv.conf, /dev/shm). The pod cgroup is
//! made with `crate::cgroups`.
//!
//! ```text
//! <state>/ns/<id>/{net,ipc,uts,user,pid}   pinned namespaces
//! <state>/pods/<id>/               hostname, hosts, resolv.conf, shm/ (tmpfs)
//! ```

mod files;
mod host;
mod infra;
mod network;
pub mod ns;
mod record;
mod userns;

pub use host::{Host, Kernel};
pub use network::cni_runtime_config;
pub use record::{Network, PodRecord, PodState, key_of, namespace_options, shares_pid};
pub use userns::{IdMaps, IdRange, check_pod_userns, pod_userns, userns_maps};

use std::path::{Path, PathBuf};

use berth_db::Table;
use cri_api::v1::{NamespaceMode, PodSandboxConfig};
use redb::Database;

const PODS: Table<PodRecord> = Table::new("pods");
/// In a pod's directory while it is being made: its record as it will be,
/// with the network CNI ADD is about to attach (see `attach_network`).
const HALF_MADE: &str = "half-made.json";

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod metadata database: {0}")]
    Db(#[from] berth_db::Error),
    /// berthd's own state on the node (the pod CIDR file).
    #[error("{0}")]
    State(String),
    #[error("pod {id}: {reason}")]
    Setup { id: String, reason: String },
    /// The CNI config or a plugin failed: the node's network is not ready.
    #[error("pod {id}: {reason}")]
    Network { id: String, reason: String },
}

pub struct Pods {
    records: berth_db::Cached<PodRecord>,
    state: PathBuf,
    cni: crate::config::CniConfig,
    host: Box<dyn Host>,
    /// The systemd cgroup driver is in use (for a pod without a parent).
    pub systemd_cgroup: bool,
}

impl Pods {
    pub fn open(
        db: std::sync::Arc<Database>,
        state: &Path,
        cni: crate::config::CniConfig,
    ) -> Result<Pods, PodError> {
        Pods::open_on(db, state, cni, Box::new(Kernel))
    }

    /// [`Pods::open`] with the kernel calls made through `host`.
    pub fn open_on(
        db: std::sync::Arc<Database>,
        state: &Path,
        cni: crate::config::CniConfig,
        host: Box<dyn Host>,
    ) -> Result<Pods, PodError> {
        let pods = Pods {
            records: berth_db::Cached::open(db, PODS)?,
            state: state.to_path_buf(),
            cni,
            host,
            systemd_cgroup: false,
        };
        pods.clean_half_made()?;
        pods.lost_after_reboot()?;
        pods.close_dirs()?;
        Ok(pods)
    }

    /// Closes the pods' directories to the node's other users, as
    /// [`Pods::create`] makes them: those an older berth left open (0755)
    /// included; a pod in a user namespace keeps its root's passage.
    fn close_dirs(&self) -> Result<(), PodError> {
        for rec in self.all()? {
            let traverse = pod_userns(&rec.config()).map(|m| m.to_host(0, 0).1);
            for dir in [self.pod_dir(&rec.id), self.ns_dir(&rec.id)] {
                if dir.is_dir() {
                    crate::dirs::close(&dir, traverse).map_err(|e| PodError::Setup {
                        id: rec.id.clone(),
                        reason: format!("closing {} to other users: {e}", dir.display()),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Every record, in id order (held in memory: no database read).
    pub fn all(&self) -> Result<Vec<std::sync::Arc<PodRecord>>, PodError> {
        Ok(self.records.all())
    }

    /// The first pod, in id order, that `pred` accepts.
    pub fn find_by(&self, pred: impl Fn(&PodRecord) -> bool) -> Option<std::sync::Arc<PodRecord>> {
        self.records.find_by(pred)
    }

    /// By full id or unique id prefix.
    pub fn find(&self, id: &str) -> Result<Option<PodRecord>, PodError> {
        Ok(self.records.find(id).map(|r| (*r).clone()))
    }

    pub fn save(&self, rec: &PodRecord) -> Result<(), PodError> {
        Ok(self.records.put(&rec.id, rec)?)
    }

    fn delete(&self, id: &str) -> Result<(), PodError> {
        Ok(self.records.delete(id)?)
    }

    pub fn ns_dir(&self, id: &str) -> PathBuf {
        self.state.join("ns").join(id)
    }

    /// The pod's pinned network namespace; None: it uses the node's.
    pub fn netns(&self, rec: &PodRecord) -> Option<PathBuf> {
        rec.pinned
            .iter()
            .any(|k| k == ns::Kind::Net.name())
            .then(|| self.ns_dir(&rec.id).join(ns::Kind::Net.name()))
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.state.join("pods").join(id)
    }

    /// The pod CIDR the kubelet gave (UpdateRuntimeConfig), kept in the
    /// state dir: it holds until the node reboots, as the kubelet's call.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), PodError> {
        std::fs::create_dir_all(&self.state)
            .and_then(|_| std::fs::write(self.state.join("pod-cidr"), cidr))
            .map_err(|e| PodError::State(format!("saving the pod CIDR: {e}")))
    }

    fn pod_cidr(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join("pod-cidr"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Makes everything the pod holds on the node and records it READY.
    /// On error, undoes what it made.
    pub fn create(
        &self,
        id: &str,
        config: &PodSandboxConfig,
        runtime_handler: &str,
        created_ns: i64,
    ) -> Result<PodRecord, PodError> {
        let mut rec = PodRecord {
            state: PodState::Ready,
            created_ns,
            runtime_handler: runtime_handler.to_string(),
            config: crate::stored::encode(config),
            ..PodRecord::bare(id.to_string())
        };
        match self.make(&mut rec, config) {
            Ok(()) => {
                berth_db::crash::point("run_pod:made");
                if let Err(e) = self.save(&rec) {
                    self.teardown(&rec);
                    return Err(e);
                }
                Ok(rec)
            }
            Err(reason) => {
                self.teardown(&rec);
                let id = id.to_string();
                Err(if reason.starts_with("network") {
                    PodError::Network { id, reason }
                } else {
                    PodError::Setup { id, reason }
                })
            }
        }
    }

    fn make(&self, rec: &mut PodRecord, config: &PodSandboxConfig) -> Result<(), String> {
        let opts = namespace_options(config);
        let dir = self.pod_dir(&rec.id);
        // In a user namespace, the pod's root looks its files up here.
        let traverse = pod_userns(config).map(|m| m.to_host(0, 0).1);
        crate::dirs::private(&dir, traverse).map_err(|e| format!("{}: {e}", dir.display()))?;

        // Namespaces: the pod's own unless it asks for the node's.
        let mut kinds = vec![ns::Kind::Uts];
        if opts.network() != NamespaceMode::Node {
            kinds.push(ns::Kind::Net);
        }
        if opts.ipc() != NamespaceMode::Node {
            kinds.push(ns::Kind::Ipc);
        }
        // A host-network pod keeps the node's hostname, as the kubelet expects.
        if opts.network() == NamespaceMode::Node {
            kinds.retain(|k| *k != ns::Kind::Uts);
        }
        // No hostname asked: the node's, as containerd does (a pod name
        // may be longer than the kernel's 64 bytes).
        let hostname = if config.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let userns = pod_userns(config);
        rec.pinned = kinds.iter().map(|k| k.name().to_string()).collect();
        if userns.is_some() {
            rec.pinned.push(ns::Kind::User.name().to_string());
        }
        let stage = crate::trace::Stage::start("namespaces");
        self.host
            .pin(&self.ns_dir(&rec.id), &kinds, &hostname, userns.as_ref())?;

        // One PID namespace for the whole pod, when asked: an infra process
        // (berth-monitor as PID 1, reaping orphans) holds it.
        if shares_pid(config) {
            rec.infra_pid = Some(
                self.host
                    .start_infra(&self.ns_dir(&rec.id), userns.is_some())?,
            );
        }

        stage.done();
        if opts.network() != NamespaceMode::Node {
            let stage = crate::trace::Stage::start("network");
            self.attach_network(rec, config)?;
            stage.done();
        }
        self.write_files(rec, config, &hostname, userns)?;

        // The pod cgroup: the kubelet's cgroup_parent, made if missing.
        let parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        // (A systemd slice is systemd's to make.)
        if !parent.is_empty() && !parent.ends_with(".slice") {
            self.host.create_cgroup(&parent, &mut rec.cgroups)?;
        }
        // The infra process leaves berthd's cgroup for one of the pod's.
        if let Some(pid) = rec.infra_pid {
            let systemd = parent.ends_with(".slice") || (parent.is_empty() && self.systemd_cgroup);
            self.host
                .place_infra(pid, &parent, &rec.id, systemd, &mut rec.cgroups)?;
        }
        Ok(())
    }

    /// Releases what a pod holds on the node. Idempotent.
    pub fn teardown(&self, rec: &PodRecord) {
        // The infra process first: the shared PID namespace, and anything
        // still in it, dies with it.
        self.stop_infra(rec);
        if rec.network.is_some() {
            let mut r = rec.clone();
            if let Err(e) = self.detach_network(&mut r) {
                tracing::warn!(pod = %rec.id, "{e}");
            }
        }
        self.host.unpin(&self.ns_dir(&rec.id));
        let dir = self.pod_dir(&rec.id);
        self.host.unmount(&dir.join("shm"));
        let _ = std::fs::remove_dir_all(&dir);
        self.host.remove_cgroups(&rec.cgroups);
    }

    /// Removes the pod: its network (an error stops the removal, so the
    /// kubelet retries), what it holds, then its record.
    pub fn remove(&self, rec: &PodRecord) -> Result<(), PodError> {
        let mut rec = rec.clone();
        self.detach_network(&mut rec)?;
        self.teardown(&rec);
        berth_db::crash::point("remove_pod:torn_down");
        self.delete(&rec.id)
    }

    /// A READY pod whose namespaces are no longer pinned (the node
    /// rebooted, and `<state>` went with it) cannot run containers: it
    /// becomes NOTREADY, as the kubelet then expects to make it anew. Its
    /// network is still recorded, so the background DEL releases what ADD
    /// took (an IPAM's addresses outlive a reboot).
    fn lost_after_reboot(&self) -> Result<(), PodError> {
        for rec in self.all()? {
            if rec.state != PodState::Ready {
                continue;
            }
            let dir = self.ns_dir(&rec.id);
            let pins = rec.pinned.iter().map(|k| dir.join(k));
            let infra = rec.infra_pid.map(|_| dir.join("pid"));
            if let Some(lost) = pins.chain(infra).find(|p| !self.host.is_pinned(p)) {
                tracing::warn!(
                    pod = %rec.id,
                    "{} is no longer pinned (the node rebooted?): the pod is NOTREADY",
                    lost.display()
                );
                let mut rec = (*rec).clone();
                rec.state = PodState::NotReady;
                self.save(&rec)?;
            }
        }
        Ok(())
    }

    /// A berthd that died between making a pod and recording it leaves
    /// directories and mounts with no record: release them.
    fn clean_half_made(&self) -> Result<(), PodError> {
        let known: std::collections::HashSet<String> =
            self.all()?.into_iter().map(|p| p.id.clone()).collect();
        for sub in ["ns", "pods"] {
            let Ok(rd) = std::fs::read_dir(self.state.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&id) {
                    tracing::info!(pod = %id, "removing a half-made pod");
                    // Its network, if ADD may have run, from the intent
                    // written before it.
                    let rec = std::fs::read(self.pod_dir(&id).join(HALF_MADE))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<PodRecord>(&b).ok())
                        .filter(|r| r.id == id)
                        .unwrap_or_else(|| PodRecord::bare(id));
                    self.teardown(&rec);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
