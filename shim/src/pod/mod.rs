//! Pod sandboxes: their records in the metadata database and what a pod
//! holds on the node (pinned namespaces, /dev/shm, hostname/hosts/
//! resolv.conf, a cgroup), made and torn down in one place.
//!
//! ```text
//! <state>/ns/<id>/{net,ipc,uts}   pinned namespaces
//! <state>/pods/<id>/               hostname, hosts, resolv.conf, shm/ (tmpfs)
//! ```

pub mod ns;

use std::path::{Path, PathBuf};

use cri_api::v1::{NamespaceOption, PodSandboxConfig};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");

/// CRI NamespaceMode NODE: the node's own namespace.
pub const NS_NODE: i32 = 2;

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
    config: String,
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
    fn bare(id: String) -> PodRecord {
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
        }
    }

    pub fn config(&self) -> PodSandboxConfig {
        hex::decode(&self.config)
            .ok()
            .and_then(|b| PodSandboxConfig::decode(b.as_slice()).ok())
            .unwrap_or_default()
    }

    pub fn set_config(&mut self, c: &PodSandboxConfig) {
        self.config = hex::encode(c.encode_to_vec());
    }

    /// `name_namespace_uid_attempt`: what must be unique.
    pub fn key(&self) -> String {
        key_of(&self.config())
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

/// One ID mapping of a user namespace: `len` IDs from `container` inside
/// are `host` and on outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// A pod's user namespace: its one UID and one GID mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: IdRange,
    pub gid: IdRange,
}

impl IdMaps {
    /// The host UID and GID of `uid:gid` inside (unmapped ones: the
    /// overflow ID, as the kernel shows them).
    pub fn to_host(self, uid: u32, gid: u32) -> (u32, u32) {
        let map = |r: &IdRange, id: u32| {
            id.checked_sub(r.container)
                .filter(|off| *off < r.len)
                .map_or(65534, |off| r.host + off)
        };
        (map(&self.uid, uid), map(&self.gid, gid))
    }
}

/// CRI NamespaceMode POD.
const NS_POD: i32 = 0;

/// The user namespace asked for by `o`: None for the node's (no
/// `userns_options`, or NODE), the ID maps for POD. POD needs exactly one
/// UID and one GID mapping of container ID 0, onto a host range without
/// the node's root; CONTAINER and TARGET are not valid for user
/// namespaces, as the CRI says.
pub fn userns_maps(o: &NamespaceOption) -> Result<Option<IdMaps>, tonic::Status> {
    let bad = |m: String| tonic::Status::invalid_argument(format!("userns_options: {m}"));
    let Some(u) = o.userns_options.as_ref() else {
        return Ok(None);
    };
    match u.mode {
        NS_NODE => return Ok(None),
        NS_POD => {}
        m => {
            return Err(bad(format!(
                "mode {m} is not valid for a user namespace (only POD or NODE)"
            )));
        }
    }
    let one = |maps: &[cri_api::v1::IdMapping], kind: &str| -> Result<IdRange, tonic::Status> {
        let [m] = maps else {
            return Err(bad(format!(
                "mode POD needs exactly one {kind} mapping, got {}",
                maps.len()
            )));
        };
        if m.container_id != 0 {
            return Err(bad(format!(
                "the {kind} mapping must map container ID 0 (it starts at {})",
                m.container_id
            )));
        }
        if m.length == 0 || m.host_id.checked_add(m.length).is_none() {
            return Err(bad(format!(
                "the {kind} mapping {}+{} is not a range",
                m.host_id, m.length
            )));
        }
        if m.host_id == 0 {
            return Err(bad(format!(
                "the {kind} mapping makes the pod's root the node's root (host ID 0)"
            )));
        }
        Ok(IdRange {
            container: m.container_id,
            host: m.host_id,
            len: m.length,
        })
    };
    Ok(Some(IdMaps {
        uid: one(&u.uids, "UID")?,
        gid: one(&u.gids, "GID")?,
    }))
}

/// The pod's user namespace, as asked for by its config (already
/// validated when it was run).
pub fn pod_userns(c: &PodSandboxConfig) -> Option<IdMaps> {
    userns_maps(&namespace_options(c)).ok().flatten()
}

/// A pod's own user namespace cannot hold the node's network, IPC or PID
/// namespace (Status says `user_namespaces_host_network: false`).
pub fn check_pod_userns(o: &NamespaceOption) -> Result<Option<IdMaps>, tonic::Status> {
    let maps = userns_maps(o)?;
    if maps.is_some() {
        for (name, mode) in [("network", o.network), ("ipc", o.ipc), ("pid", o.pid)] {
            if mode == NS_NODE {
                return Err(tonic::Status::invalid_argument(format!(
                    "userns_options: a pod in its own user namespace cannot use the node's {name} namespace"
                )));
            }
        }
    }
    Ok(maps)
}

pub fn key_of(c: &PodSandboxConfig) -> String {
    let m = c.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod metadata database: {0}")]
    Db(String),
    #[error("pod {id}: {reason}")]
    Setup { id: String, reason: String },
    /// The CNI config or a plugin failed: the node's network is not ready.
    #[error("pod {id}: {reason}")]
    Network { id: String, reason: String },
}

fn db_err(e: impl std::fmt::Display) -> PodError {
    PodError::Db(e.to_string())
}

pub struct Pods {
    db: std::sync::Arc<Database>,
    state: PathBuf,
    cni: crate::config::CniConfig,
}

impl Pods {
    pub fn open(
        db: std::sync::Arc<Database>,
        state: &Path,
        cni: crate::config::CniConfig,
    ) -> Result<Pods, PodError> {
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(PODS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        let pods = Pods {
            db,
            state: state.to_path_buf(),
            cni,
        };
        pods.clean_half_made()?;
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

    pub fn all(&self) -> Result<Vec<PodRecord>, PodError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(PODS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }

    /// By full id or unique id prefix.
    pub fn find(&self, id: &str) -> Result<Option<PodRecord>, PodError> {
        if id.is_empty() {
            return Ok(None);
        }
        let mut matches: Vec<PodRecord> = self
            .all()?
            .into_iter()
            .filter(|p| p.id.starts_with(id))
            .collect();
        Ok(match matches.len() {
            1 => matches.pop(),
            _ => matches.into_iter().find(|p| p.id == id),
        })
    }

    pub fn save(&self, rec: &PodRecord) -> Result<(), PodError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(PODS).map_err(db_err)?;
            let bytes = serde_json::to_vec(rec).map_err(db_err)?;
            t.insert(rec.id.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn delete(&self, id: &str) -> Result<(), PodError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(PODS).map_err(db_err)?;
            t.remove(id).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
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
            .map_err(|e| PodError::Db(format!("saving the pod CIDR: {e}")))
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
            config: hex::encode(config.encode_to_vec()),
            ..PodRecord::bare(id.to_string())
        };
        match self.make(&mut rec, config) {
            Ok(()) => {
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
        if opts.network != NS_NODE {
            kinds.push(ns::Kind::Net);
        }
        if opts.ipc != NS_NODE {
            kinds.push(ns::Kind::Ipc);
        }
        // A host-network pod keeps the node's hostname, as the kubelet expects.
        if opts.network == NS_NODE {
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
        ns::pin(&self.ns_dir(&rec.id), &kinds, &hostname, userns.as_ref())
            .map_err(|e| e.to_string())?;

        // One PID namespace for the whole pod, when asked: an infra process
        // (berth-monitor as PID 1, reaping orphans) holds it.
        if shares_pid(config) {
            rec.infra_pid = Some(self.start_infra(&rec.id, userns.is_some())?);
        }

        // The pod network, through the CNI plugins (none configured: the
        // pod keeps loopback only, and Status says the network is not ready).
        if opts.network != NS_NODE {
            match crate::cni::load(&self.cni.conf_dir, &self.cni.bin_dirs) {
                Err(crate::cni::NotReady::NoConfig(dir)) => {
                    tracing::warn!(pod = %rec.id, "no CNI config in {}: loopback only", dir.display());
                }
                Err(e) => return Err(format!("network: {e}")),
                Ok(net) => {
                    // Host ports need a plugin that takes portMappings.
                    let wants_ports = config.port_mappings.iter().any(|p| p.host_port > 0);
                    let has_portmap = net.list["plugins"].as_array().is_some_and(|ps| {
                        ps.iter()
                            .any(|p| p["capabilities"]["portMappings"].as_bool() == Some(true))
                    });
                    if wants_ports && !has_portmap {
                        return Err(format!(
                            "network {:?}: the pod asks for host ports, but no plugin in {} handles portMappings (add portmap)",
                            net.name,
                            net.file.display()
                        ));
                    }
                    let netns = self.ns_dir(&rec.id).join("net");
                    let mut a = attachment(&rec.id, &netns, config, self.cni.plugin_timeout);
                    a.runtime_config = cni_runtime_config(config)?;
                    if let Some(cidr) = self.pod_cidr() {
                        // One range set per address family, as host-local wants.
                        let ranges: Vec<serde_json::Value> = cidr
                            .split(',')
                            .map(|c| serde_json::json!([{ "subnet": c.trim() }]))
                            .collect();
                        a.runtime_config["ipRanges"] = serde_json::Value::Array(ranges);
                    }
                    let result = crate::cni::add(&net.list, &self.cni.bin_dirs, &a)
                        .map_err(|e| format!("network {:?}: {e}", net.name))?;
                    rec.network = Some(Network {
                        ips: crate::cni::ips(&result),
                        list: net.list,
                        result,
                        runtime_config: a.runtime_config,
                    });
                }
            }
        }

        // Files every container of the pod mounts.
        let node_hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hostname = if opts.network == NS_NODE {
            node_hostname
        } else {
            hostname
        };
        // In a user namespace, the pod's root owns them, as it would on
        // the node.
        let owner = userns.map(|m| m.to_host(0, 0));
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{name}: {e}"))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("{name}: chown: {e}"))?;
            }
            Ok::<(), String>(())
        };
        write("hostname", format!("{hostname}\n"))?;
        write(
            "hosts",
            if opts.network == NS_NODE {
                std::fs::read_to_string("/etc/hosts").unwrap_or_default()
            } else {
                let mut hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string();
                // The pod's own name resolves to its IPs.
                for ip in rec.network.iter().flat_map(|n| &n.ips) {
                    hosts.push_str(&format!("{ip}\t{hostname}\n"));
                }
                hosts
            },
        )?;
        write("resolv.conf", resolv_conf(config))?;

        // /dev/shm: the pod's own tmpfs unless it shares the node's IPC.
        if opts.ipc != NS_NODE {
            let shm = dir.join("shm");
            std::fs::create_dir_all(&shm).map_err(|e| format!("shm: {e}"))?;
            mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(
                    match owner {
                        Some((uid, gid)) => format!("mode=1777,size=65536k,uid={uid},gid={gid}"),
                        None => "mode=1777,size=65536k".to_string(),
                    }
                    .as_str(),
                ),
            )
            .map_err(|e| format!("mount shm: {e}"))?;
            rec.shm_mounted = true;
        }

        // The pod cgroup: the kubelet's cgroup_parent, made if missing.
        let parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        // (A systemd slice is systemd's to make; the systemd driver is not
        // built yet.)
        if !parent.is_empty() && !parent.ends_with(".slice") {
            cgroup_create(&parent, &mut rec.cgroups)?;
        }
        Ok(())
    }

    /// Starts the pod's infra process (in its user namespace, if it has
    /// one) and pins its PID namespace.
    fn start_infra(&self, id: &str, in_userns: bool) -> Result<i32, String> {
        let dir = self.ns_dir(id);
        let pin = dir.join("pid");
        std::fs::File::create(&pin).map_err(|e| format!("pid pin: {e}"))?;
        let pid_file = dir.join("infra.pid");
        let pause = berth_runtime::protocol::Invocation::Pause {
            pid_file: pid_file.clone(),
            userns: in_userns.then(|| dir.join(ns::Kind::User.name())),
        };
        let out = crate::monitor::command(&pause)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("infra process: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "infra process: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| "infra process: no pid".to_string())?;
        mount(
            Some(Path::new(&format!("/proc/{pid}/ns/pid"))),
            &pin,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("pinning the pid namespace: {e}"))?;
        Ok(pid)
    }

    /// CNI DEL for the pod's network, then forgets it. Idempotent; an error
    /// keeps the network recorded, so that a retry runs DEL again.
    pub fn detach_network(&self, rec: &mut PodRecord) -> Result<(), PodError> {
        let Some(net) = rec.network.clone() else {
            return Ok(());
        };
        let config = rec.config();
        let netns = self.ns_dir(&rec.id).join("net");
        let mut a = attachment(&rec.id, &netns, &config, self.cni.plugin_timeout);
        a.runtime_config = if net.runtime_config.is_null() {
            cni_runtime_config(&config).unwrap_or_default()
        } else {
            net.runtime_config.clone()
        };
        if let Err(e) = crate::cni::del(&net.list, Some(&net.result), &self.cni.bin_dirs, &a) {
            let reason = format!("network teardown: {e}");
            rec.network_error = Some(reason.clone());
            if self.find(&rec.id)?.is_some() {
                self.save(rec)?;
            }
            return Err(PodError::Network {
                id: rec.id.clone(),
                reason,
            });
        }
        rec.network = None;
        rec.network_error = None;
        if self.find(&rec.id)?.is_some() {
            self.save(rec)?;
        }
        Ok(())
    }

    /// CNI CHECK of the pod's network (after a berthd restart: is the
    /// attachment still what ADD made?). The outcome is recorded in
    /// `network_error`. `Ok(false)`: nothing to check, or the config's
    /// version has no CHECK.
    pub fn check_network(&self, rec: &mut PodRecord) -> Result<bool, PodError> {
        let Some(net) = rec.network.clone() else {
            return Ok(false);
        };
        let config = rec.config();
        let netns = self.ns_dir(&rec.id).join("net");
        let mut a = attachment(&rec.id, &netns, &config, self.cni.plugin_timeout);
        a.runtime_config = net.runtime_config.clone();
        let outcome = crate::cni::check(&net.list, &net.result, &self.cni.bin_dirs, &a);
        let before = rec.network_error.take();
        let checked = match outcome {
            Ok(checked) => checked,
            Err(e) => {
                rec.network_error = Some(format!("network check: {e}"));
                false
            }
        };
        if before != rec.network_error && self.find(&rec.id)?.is_some() {
            self.save(rec)?;
        }
        match &rec.network_error {
            Some(reason) => Err(PodError::Network {
                id: rec.id.clone(),
                reason: reason.clone(),
            }),
            None => Ok(checked),
        }
    }

    /// Releases what a pod holds on the node. Idempotent.
    pub fn teardown(&self, rec: &PodRecord) {
        // The infra process first: the shared PID namespace, and anything
        // still in it, dies with it.
        let ns_dir = self.ns_dir(&rec.id);
        let infra = rec.infra_pid.or_else(|| {
            std::fs::read_to_string(ns_dir.join("infra.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
        });
        if let Some(pid) = infra
            && is_infra(pid)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = umount2(&ns_dir.join("pid"), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(ns_dir.join("pid"));
        let _ = std::fs::remove_file(ns_dir.join("infra.pid"));
        if rec.network.is_some() {
            let mut r = rec.clone();
            if let Err(e) = self.detach_network(&mut r) {
                tracing::warn!(pod = %rec.id, "{e}");
            }
        }
        ns::unpin(&self.ns_dir(&rec.id));
        let dir = self.pod_dir(&rec.id);
        let _ = umount2(&dir.join("shm"), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&dir);
        cgroup_remove(&rec.cgroups);
    }

    /// Removes the pod: its network (an error stops the removal, so the
    /// kubelet retries), what it holds, then its record.
    pub fn remove(&self, rec: &PodRecord) -> Result<(), PodError> {
        let mut rec = rec.clone();
        self.detach_network(&mut rec)?;
        self.teardown(&rec);
        self.delete(&rec.id)
    }

    /// A berthd that died between making a pod and recording it leaves
    /// directories and mounts with no record: release them.
    fn clean_half_made(&self) -> Result<(), PodError> {
        let known: std::collections::HashSet<String> =
            self.all()?.into_iter().map(|p| p.id).collect();
        for sub in ["ns", "pods"] {
            let Ok(rd) = std::fs::read_dir(self.state.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&id) {
                    tracing::info!(pod = %id, "removing a half-made pod");
                    self.teardown(&PodRecord::bare(id));
                }
            }
        }
        Ok(())
    }
}

/// Whether the pod asks for one PID namespace shared by its containers.
pub fn shares_pid(c: &PodSandboxConfig) -> bool {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|o| o.pid == 0)
}

/// Is `pid` still a berth infra process (and not a reused pid)?
fn is_infra(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("pause-init"))
        .unwrap_or(false)
}

/// The CNI environment for a pod (its runtime config is added by the
/// caller: [`cni_runtime_config`] for ADD, the stored one for DEL).
fn attachment<'a>(
    id: &'a str,
    netns: &'a Path,
    c: &'a PodSandboxConfig,
    timeout: std::time::Duration,
) -> crate::cni::Attachment<'a> {
    let m = c.metadata.as_ref();
    crate::cni::Attachment {
        pod_id: id,
        netns,
        pod_name: m.map(|m| m.name.as_str()).unwrap_or(""),
        pod_namespace: m.map(|m| m.namespace.as_str()).unwrap_or(""),
        pod_uid: m.map(|m| m.uid.as_str()).unwrap_or(""),
        runtime_config: serde_json::Value::Null,
        timeout,
    }
}

/// Pod annotations that ask for static addresses: `berth.io/ips`
/// (comma-separated, with prefix length) and `berth.io/mac`, given to
/// plugins with the `ips` / `mac` capabilities (the CNI conventions).
pub const IPS_ANNOTATION: &str = "berth.io/ips";
pub const MAC_ANNOTATION: &str = "berth.io/mac";

/// The CNI `runtimeConfig` for ADD, from the pod config: every key the
/// CNI conventions define that the CRI can fill. Each plugin gets only
/// the keys its `capabilities` ask for. A bad annotation is an error.
pub fn cni_runtime_config(c: &PodSandboxConfig) -> Result<serde_json::Value, String> {
    let port_mappings: Vec<serde_json::Value> = c
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let protocol = match p.protocol {
                1 => "udp",
                2 => "sctp",
                _ => "tcp",
            };
            serde_json::json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": protocol,
                "hostIP": p.host_ip,
            })
        })
        .collect();
    let mut rc = serde_json::json!({
        "portMappings": port_mappings,
        "io.kubernetes.cri.pod-annotations": c.annotations,
    });
    if let Some(d) = &c.dns_config {
        rc["dns"] =
            serde_json::json!({"servers": d.servers, "searches": d.searches, "options": d.options});
    }
    // The kubelet's bandwidth annotations, in bits per second; the burst
    // is left unbounded, as containerd does.
    let mut bandwidth = serde_json::Map::new();
    for (annotation, rate, burst) in [
        (
            "kubernetes.io/ingress-bandwidth",
            "ingressRate",
            "ingressBurst",
        ),
        (
            "kubernetes.io/egress-bandwidth",
            "egressRate",
            "egressBurst",
        ),
    ] {
        if let Some(v) = c.annotations.get(annotation) {
            let bits =
                crate::cni::quantity(v).map_err(|e| format!("annotation {annotation}: {e}"))?;
            bandwidth.insert(rate.into(), bits.into());
            bandwidth.insert(burst.into(), u64::from(u32::MAX).into());
        }
    }
    if !bandwidth.is_empty() {
        rc["bandwidth"] = serde_json::Value::Object(bandwidth);
    }
    if let Some(v) = c.annotations.get(IPS_ANNOTATION) {
        let mut ips = Vec::new();
        for ip in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, prefix) = ip.split_once('/').unwrap_or((ip, ""));
            let addr: std::net::IpAddr = addr
                .parse()
                .map_err(|_| format!("annotation {IPS_ANNOTATION}: {ip:?} is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if !prefix.is_empty() && !prefix.parse::<u8>().is_ok_and(|p| p <= max) {
                return Err(format!("annotation {IPS_ANNOTATION}: bad prefix in {ip:?}"));
            }
            ips.push(serde_json::Value::from(ip));
        }
        rc["ips"] = serde_json::Value::Array(ips);
    }
    if let Some(mac) = c.annotations.get(MAC_ANNOTATION) {
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() != 6
            || !parts
                .iter()
                .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!(
                "annotation {MAC_ANNOTATION}: {mac:?} is not a MAC address"
            ));
        }
        rc["mac"] = mac.as_str().into();
    }
    if let Some(parent) = c
        .linux
        .as_ref()
        .map(|l| &l.cgroup_parent)
        .filter(|p| !p.is_empty())
    {
        rc["cgroupPath"] = parent.as_str().into();
    }
    Ok(rc)
}

/// resolv.conf from the CRI DnsConfig, else the node's.
fn resolv_conf(config: &PodSandboxConfig) -> String {
    match &config.dns_config {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for server in &d.servers {
                s.push_str(&format!("nameserver {server}\n"));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

/// The cgroup hierarchies on this node: the v2 root, or each v1
/// controller's mount (named hierarchies and co-mounted links skipped).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").is_file() {
        return vec![root.to_path_buf()];
    }
    [
        "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb",
    ]
    .iter()
    .map(|c| root.join(c))
    .filter(|p| p.is_dir())
    .collect()
}

/// Creates `parent` in every hierarchy where it is missing, adding each
/// directory it made to `made` (shallowest first): those, and only those,
/// berth removes. A cgroup the kubelet made stays the kubelet's.
pub fn cgroup_create(parent: &str, made: &mut Vec<String>) -> Result<(), String> {
    let rel = parent.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(format!("invalid cgroup_parent {parent:?}"));
    }
    for root in cgroup_roots() {
        let mut sub = PathBuf::new();
        for c in rel.split('/') {
            sub.push(c);
            let p = root.join(&sub);
            match std::fs::create_dir(&p) {
                Ok(()) => {
                    let s = sub.to_string_lossy().into_owned();
                    if !made.contains(&s) {
                        made.push(s);
                    }
                }
                // There already (or just made by someone else): not ours.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cgroup {}: {e}", p.display())),
            }
        }
    }
    Ok(())
}

/// Removes the cgroup directories berth made, deepest first, in every
/// hierarchy (the kernel refuses non-empty ones, which then stay).
pub fn cgroup_remove(made: &[String]) {
    for root in cgroup_roots() {
        for rel in made.iter().rev() {
            let _ = std::fs::remove_dir(root.join(rel));
        }
    }
}
