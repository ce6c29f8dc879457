//! Containers: their records, and what each holds on the node, made and
//! released here; the per-container `berth-monitor` runs them.
//!
//! ```text
//! <root>/containers/<id>/{upper,work}   the writable layer
//! <state>/containers/<id>/              bundle (config.json), rootfs (overlay
//!                                       mount), and the files the monitor
//!                                       writes (see berth_runtime)
//! <state>/runtime/                      libcontainer's own state
//! ```
//!
//! `<root>/containers`, each `<root>/containers/<id>` and `<state>/runtime`
//! are 0700; each `<state>/containers/<id>` is 0700, or 0710 with its pod's
//! root's group in a user namespace (see [`crate::dirs`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::protocol::state::{
    CREATE_ERROR, DELETED, EXIT, Exit, MONITOR_LOG, PID, START_FIFO, STARTED,
};
use berth_runtime::protocol::{Container as MonitoredContainer, Control, Invocation};
use cri_api::v1::ContainerConfig;

use crate::pod::IdMaps;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// Where idmapped copies of layers and volumes are staged, in a
/// container's state dir.
const IDMAP_DIR: &str = "idmap";

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
    config: String,
    /// Its cgroup (the OCI `cgroupsPath`).
    #[serde(default)]
    pub cgroup: String,
    /// The external OCI runtime of its pod's handler; None: libcontainer.
    #[serde(default)]
    pub runtime: Option<PathBuf>,
    /// The spec's `process.user` (uid, gid, additionalGids), for status.
    #[serde(default)]
    pub user: Option<serde_json::Value>,
}

impl ContainerRecord {
    pub fn config(&self) -> ContainerConfig {
        crate::stored::decode(&self.config)
    }

    pub fn set_config(&mut self, c: &ContainerConfig) {
        self.config = crate::stored::encode(c);
    }
}

/// `name_attempt`: what must be unique within a pod.
pub fn key_of(c: &ContainerConfig) -> String {
    let m = c.metadata.clone().unwrap_or_default();
    format!("{}_{}", m.name, m.attempt)
}

/// A CRI image volume: an image's layers mounted read-only for the
/// container's mount number `mount`, from `sub_path` inside the image.
pub struct ImageVolume {
    pub mount: usize,
    pub image: String,
    pub lowers: Vec<PathBuf>,
    pub sub_path: String,
}

/// Mounts layer dirs (topmost first) read-only at `at`: an overlay of
/// them, or a read-only bind of a lone one (overlayfs wants two lowers
/// when it has no upper).
fn mount_read_only(lowers: &[PathBuf], at: &Path) -> Result<(), String> {
    match lowers {
        [] => Err("the image has no layers".into()),
        [one] => {
            mount(
                Some(one.as_path()),
                at,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind: {e}"))?;
            mount(
                None::<&str>,
                at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| format!("read-only: {e}"))
        }
        many => {
            let lower = lowerdir(many);
            mount(
                Some("overlay"),
                at,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(format!("lowerdir={lower}").as_str()),
            )
            .map_err(|e| format!("overlay: {e}"))
        }
    }
}

/// overlayfs's `lowerdir` value: the layers, topmost first.
fn lowerdir(layers: &[PathBuf]) -> String {
    layers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// `at/sub_path`, refused if it leaves `at` (by `..` or by a symlink).
fn volume_source(at: &Path, sub_path: &str) -> Result<PathBuf, String> {
    let sub = Path::new(sub_path);
    if sub.is_absolute()
        || sub
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "image_sub_path {sub_path:?} must stay inside the image"
        ));
    }
    let p = at.join(sub);
    let real =
        std::fs::canonicalize(&p).map_err(|e| format!("image_sub_path {sub_path:?}: {e}"))?;
    let root = std::fs::canonicalize(at).map_err(|e| e.to_string())?;
    if !real.starts_with(&root) {
        return Err(format!(
            "image_sub_path {sub_path:?} leads out of the image"
        ));
    }
    Ok(real)
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

pub struct Containers {
    db: std::sync::Arc<Database>,
    root: PathBuf,
    state: PathBuf,
    monitor: PathBuf,
}

fn db_err(e: impl std::fmt::Display) -> String {
    format!("container metadata database: {e}")
}

impl Containers {
    pub fn open(
        db: std::sync::Arc<Database>,
        root: &Path,
        state: &Path,
    ) -> Result<Containers, String> {
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(CONTAINERS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        let monitor = crate::monitor::path();
        let c = Containers {
            db,
            root: root.join("containers"),
            state: state.join("containers"),
            monitor,
        };
        c.clean_half_made()?;
        c.close_dirs()
            .map_err(|e| format!("closing the containers' directories to other users: {e}"))?;
        Ok(c)
    }

    pub fn monitor(&self) -> &Path {
        &self.monitor
    }

    pub fn all(&self) -> Result<Vec<ContainerRecord>, String> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(CONTAINERS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }

    /// By full id or unique prefix.
    pub fn find(&self, id: &str) -> Result<Option<ContainerRecord>, String> {
        if id.is_empty() {
            return Ok(None);
        }
        let mut m: Vec<ContainerRecord> = self
            .all()?
            .into_iter()
            .filter(|c| c.id.starts_with(id))
            .collect();
        Ok(match m.len() {
            1 => m.pop(),
            _ => m.into_iter().find(|c| c.id == id),
        })
    }

    pub fn save(&self, rec: &ContainerRecord) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(db_err)?;
            let bytes = serde_json::to_vec(rec).map_err(db_err)?;
            t.insert(rec.id.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn delete(&self, id: &str) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(CONTAINERS).map_err(db_err)?;
            t.remove(id).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    /// Where containers' writable layers live (one filesystem).
    pub fn layers_dir(&self) -> &Path {
        &self.root
    }

    /// The container's writable layer.
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.root.join(id).join("upper")
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.state.with_file_name("runtime")
    }

    /// Mounts the rootfs, writes the bundle and starts the monitor, which
    /// creates the container; returns once it is CREATED. On error nothing
    /// is left.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        id: &str,
        pod_id: &str,
        config: &ContainerConfig,
        image: &str,
        image_id: &str,
        lowers: &[PathBuf],
        volumes: &[ImageVolume],
        spec_for: impl FnOnce(&Path, &[(usize, PathBuf)]) -> Result<(crate::spec::Spec, i32), String>,
        log_path: PathBuf,
        runtime: Option<&Path>,
        userns: Option<&(PathBuf, IdMaps)>,
    ) -> Result<ContainerRecord, String> {
        let rec = ContainerRecord {
            id: id.to_string(),
            pod_id: pod_id.to_string(),
            created_ns: berth_runtime::now_ns(),
            image: image.to_string(),
            image_id: image_id.to_string(),
            log_path: log_path.display().to_string(),
            stop_signal: 15,
            config: crate::stored::encode(config),
            cgroup: String::new(),
            runtime: runtime.map(Path::to_path_buf),
            user: None,
        };
        match self
            .make(rec, lowers, volumes, spec_for, &log_path, userns)
            .await
        {
            Ok(rec) => Ok(rec),
            Err(e) => {
                self.release(id);
                Err(e)
            }
        }
    }

    async fn make(
        &self,
        mut rec: ContainerRecord,
        lowers: &[PathBuf],
        volumes: &[ImageVolume],
        spec_for: impl FnOnce(&Path, &[(usize, PathBuf)]) -> Result<(crate::spec::Spec, i32), String>,
        log_path: &Path,
        userns: Option<&(PathBuf, IdMaps)>,
    ) -> Result<ContainerRecord, String> {
        let id = rec.id.clone();
        let dir = self.state_dir(&id);
        let layer = self.root.join(&id);
        let rootfs = dir.join("rootfs");
        // In a user namespace, the container's root looks its rootfs up here.
        let traverse = userns.map(|(_, m)| m.to_host(0, 0).1);
        crate::dirs::private(&dir, traverse).map_err(|e| format!("{}: {e}", dir.display()))?;
        crate::dirs::private(&layer, None).map_err(|e| format!("{}: {e}", layer.display()))?;
        for d in [layer.join("upper"), layer.join("work"), rootfs.clone()] {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        // In a user namespace, the layers are seen through its ID maps and
        // the writable layer is its root's.
        let staging = dir.join(IDMAP_DIR);
        let staged_layers = match userns {
            Some((ns, maps)) => {
                let (uid, gid) = maps.to_host(0, 0);
                std::os::unix::fs::chown(layer.join("upper"), Some(uid), Some(gid))
                    .map_err(|e| format!("writable layer: chown: {e}"))?;
                crate::idmap::stage_layers(lowers, &staging, "l", ns)
                    .map_err(|e| format!("idmapping the image: {e}"))?
            }
            None => lowers.to_vec(),
        };
        let lower = lowerdir(&staged_layers);
        let mounted = mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(
                format!(
                    "lowerdir={lower},upperdir={},workdir={}",
                    layer.join("upper").display(),
                    layer.join("work").display()
                )
                .as_str(),
            ),
        );
        if userns.is_some() {
            crate::idmap::unstage(&staged_layers);
        }
        mounted.map_err(|e| format!("mounting the rootfs: {e}"))?;
        // Image volumes: each image's layers, read-only, at vol-<n>.
        let mut sources = Vec::new();
        for (n, v) in volumes.iter().enumerate() {
            let at = dir.join(format!("vol-{n}"));
            std::fs::create_dir_all(&at).map_err(|e| format!("{}: {e}", at.display()))?;
            let lowers = match userns {
                Some((ns, _)) => {
                    crate::idmap::stage_layers(&v.lowers, &staging, &format!("i{n}-"), ns)
                        .map_err(|e| format!("image volume {:?}: idmapping: {e}", v.image))?
                }
                None => v.lowers.clone(),
            };
            let mounted = mount_read_only(&lowers, &at);
            if userns.is_some() {
                crate::idmap::unstage(&lowers);
            }
            mounted.map_err(|e| format!("image volume {:?}: {e}", v.image))?;
            sources.push((v.mount, volume_source(&at, &v.sub_path)?));
        }
        // Host paths, idmapped too where their filesystem allows it; the
        // container's own mounts hold them once it is created.
        let mut staged_binds = Vec::new();
        if let Some((ns, _)) = userns {
            for (n, m) in rec.config().mounts.iter().enumerate() {
                let bind = m.image.as_ref().is_none_or(|i| i.image.is_empty())
                    && !m.host_path.is_empty()
                    && m.propagation() == cri_api::v1::MountPropagation::PropagationPrivate;
                // (A missing host path is the spec's to report.)
                let Some(meta) = bind.then(|| std::fs::metadata(&m.host_path).ok()).flatten()
                else {
                    continue;
                };
                let at = staging.join(format!("v{n}"));
                let made = if meta.is_dir() {
                    std::fs::create_dir_all(&at)
                } else {
                    std::fs::File::create(&at).map(drop)
                };
                made.map_err(|e| format!("{}: {e}", at.display()))?;
                match crate::idmap::stage(Path::new(&m.host_path), &at, ns, true) {
                    Ok(()) => {
                        sources.push((n, at.clone()));
                        staged_binds.push(at);
                    }
                    Err(e) => {
                        tracing::warn!(container = %id, "{e}: {} is mounted as the node sees it", m.host_path);
                        crate::idmap::unstage(&[at]);
                    }
                }
            }
        }
        let (spec, stop_signal) = spec_for(&rootfs, &sources)?;
        rec.stop_signal = stop_signal;
        let process = spec.process().as_ref();
        rec.user = process.and_then(|p| serde_json::to_value(p.user()).ok());
        rec.cgroup = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The working dir is made if the image lacks it, as Docker does.
        if let Some((cwd, user)) = process.and_then(|p| Some((p.cwd().to_str()?, p.user()))) {
            let (uid, gid) = match userns {
                Some((_, maps)) => maps.to_host(user.uid(), user.gid()),
                None => (user.uid(), user.gid()),
            };
            make_dir_in(&rootfs, cwd, uid, gid).map_err(|e| format!("working dir {cwd:?}: {e}"))?;
        }
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("config.json: {e}"))?;
        nix::unistd::mkfifo(
            &dir.join(START_FIFO),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| format!("start fifo: {e}"))?;
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("log dir: {e}"))?;
        }
        // The runtimes' own state (one dir per container, theirs): root's.
        crate::dirs::private(&self.runtime_root(), None)
            .map_err(|e| format!("runtime root: {e}"))?;

        let monitor_log = std::fs::File::create(dir.join(MONITOR_LOG))
            .map_err(|e| format!("monitor log: {e}"))?;
        let run = {
            let c = rec.config();
            Invocation::Run(MonitoredContainer {
                id: id.clone(),
                bundle: dir.clone(),
                state: dir.clone(),
                root: self.runtime_root(),
                log: log_path.to_path_buf(),
                stdin: c.stdin,
                stdin_once: c.stdin && c.stdin_once,
                runtime: rec.runtime.clone(),
            })
        };
        let mut child = tokio::process::Command::from(crate::monitor::command(&run))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(monitor_log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.monitor.display()))?;
        // Reap the monitor when it ends (it outlives us if we go first).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if dir.join(PID).exists() {
                break;
            }
            if let Ok(msg) = std::fs::read_to_string(dir.join(CREATE_ERROR)) {
                let _ = child.wait().await;
                // libcontainer's own account of why, when it gave one.
                let why = std::fs::read_to_string(dir.join(MONITOR_LOG)).unwrap_or_default();
                let why: Vec<&str> = why
                    .lines()
                    .filter_map(|l| l.split_once(" ERROR ").map(|(_, m)| m.trim()))
                    .collect();
                return Err(if why.is_empty() {
                    msg
                } else {
                    format!("{}: {}", msg.trim(), why.join("; "))
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join(MONITOR_LOG)).unwrap_or_default();
                return Err(format!("berth-monitor exited ({status}): {}", log.trim()));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err("the container was not created within 60s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        crate::idmap::unstage_all(&staging);
        self.save(&rec)?;
        Ok(rec)
    }

    /// What the monitor's files say about the container now.
    pub fn observe(&self, id: &str) -> Observed {
        let dir = self.state_dir(id);
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
        let started_ns = read(STARTED)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if let Some(exit) = read(EXIT).and_then(|s| serde_json::from_str(&s).ok()) {
            return Observed::Exited { started_ns, exit };
        }
        let alive = self
            .pid(id)
            .is_ok_and(|p| nix::sys::signal::kill(p, None).is_ok());
        match (alive, started_ns) {
            (false, _) => Observed::Unknown,
            (true, 0) => Observed::Created,
            (true, s) => Observed::Running { started_ns: s },
        }
    }

    /// Tells the monitor to start the container; returns once it runs (or
    /// has already exited).
    pub async fn start(&self, rec: &ContainerRecord) -> Result<(), String> {
        match self.observe(&rec.id) {
            Observed::Created => {}
            other => {
                return Err(format!(
                    "container {} is {}, not created",
                    rec.id,
                    name(&other)
                ));
            }
        }
        self.tell(&rec.id, Control::Start)?;
        let dir = self.state_dir(&rec.id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join(STARTED).exists() && !dir.join(EXIT).exists() {
            if Instant::now() > deadline {
                return Err(format!("container {} did not start within 30s", rec.id));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Observed::Exited { exit, .. } = self.observe(&rec.id)
            && !exit.message.is_empty()
        {
            return Err(exit.message);
        }
        Ok(())
    }

    fn tell(&self, id: &str, word: Control) -> Result<(), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(self.state_dir(id).join(START_FIFO))
            .map_err(|e| format!("container {id}: its monitor is not listening: {e}"))?;
        f.write_all(&[word.byte()])
            .map_err(|e| format!("container {id}: telling its monitor: {e}"))
    }

    /// The stop signal, then SIGKILL once `timeout` has passed; returns
    /// when the container has exited. Idempotent.
    pub async fn stop(&self, rec: &ContainerRecord, timeout: Duration) -> Result<(), String> {
        let pid = match self.observe(&rec.id) {
            Observed::Exited { .. } | Observed::Unknown => return Ok(()),
            Observed::Created => {
                self.tell(&rec.id, Control::Kill)?;
                return self.wait_exit(rec).await;
            }
            Observed::Running { .. } => self.pid(&rec.id)?,
        };
        let sig = nix::sys::signal::Signal::try_from(rec.stop_signal)
            .unwrap_or(nix::sys::signal::Signal::SIGTERM);
        if timeout > Duration::ZERO {
            let _ = nix::sys::signal::kill(pid, sig);
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if !matches!(self.observe(&rec.id), Observed::Running { .. }) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Only while it still runs: the pid is not ours once it is reaped.
        if matches!(self.observe(&rec.id), Observed::Running { .. }) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.wait_exit(rec).await
    }

    async fn wait_exit(&self, rec: &ContainerRecord) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(
            self.observe(&rec.id),
            Observed::Running { .. } | Observed::Created
        ) {
            if Instant::now() > deadline {
                return Err(format!("container {} did not exit after SIGKILL", rec.id));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn pid(&self, id: &str) -> Result<nix::unistd::Pid, String> {
        std::fs::read_to_string(self.state_dir(id).join(PID))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .map(nix::unistd::Pid::from_raw)
            .ok_or_else(|| format!("container {id}: no pid"))
    }

    /// Kills it if it runs, then releases everything and forgets it.
    pub async fn remove(&self, rec: &ContainerRecord) -> Result<(), String> {
        self.stop(rec, Duration::ZERO).await?;
        self.wait_deleted(rec).await;
        self.release(&rec.id);
        self.delete(&rec.id)
    }

    /// Waits (3 s at most) for the monitor of an exited container to have
    /// deleted it: its cgroup must be gone before the pod's can be. If the
    /// monitor is gone without saying so, removes the (empty) cgroup.
    async fn wait_deleted(&self, rec: &ContainerRecord) {
        let dir = self.state_dir(&rec.id);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !dir.join(DELETED).exists() && dir.join(PID).exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !dir.join(DELETED).exists() && !rec.cgroup.is_empty() {
            for root in crate::cgroups::roots() {
                let _ = std::fs::remove_dir(root.join(rec.cgroup.trim_start_matches('/')));
            }
        }
    }

    /// Unmounts the rootfs and removes the container's directories.
    fn release(&self, id: &str) {
        let dir = self.state_dir(id);
        // First: what is staged there must not be removed with the dir.
        crate::idmap::unstage_all(&dir.join(IDMAP_DIR));
        if dir.join(IDMAP_DIR).exists() {
            tracing::error!(container = %id, "{} is still mounted: leaving it", dir.join(IDMAP_DIR).display());
            return;
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("vol-") {
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
            }
        }
        let _ = umount2(&dir.join("rootfs"), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(self.root.join(id));
    }

    /// Closes the containers' directories to the node's other users, as
    /// [`Containers::create`] makes them: those an older berth left open
    /// (0755) included. The writable layers need no one's passage (the
    /// overlay is mounted, and reaches them, as root).
    fn close_dirs(&self) -> std::io::Result<()> {
        crate::dirs::private(&self.root, None)?;
        for e in std::fs::read_dir(&self.root)? {
            let p = e?.path();
            if p.is_dir() {
                crate::dirs::close(&p, None)?;
            }
        }
        crate::dirs::tighten_each_in(&self.state)?;
        if self.runtime_root().is_dir() {
            crate::dirs::close(&self.runtime_root(), None)?;
        }
        Ok(())
    }

    /// Directories of containers never recorded (berthd died creating
    /// them) are released at start.
    fn clean_half_made(&self) -> Result<(), String> {
        let known: std::collections::HashSet<String> =
            self.all()?.into_iter().map(|c| c.id).collect();
        for base in [&self.state, &self.root] {
            let Ok(rd) = std::fs::read_dir(base) else {
                continue;
            };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&id) {
                    tracing::info!(container = %id, "removing a half-made container");
                    if let Ok(pid) = self.pid(&id) {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    self.release(&id);
                }
            }
        }
        Ok(())
    }
}

/// Creates `path` inside `root` as the container would see it: symlinks
/// met on the way are followed, but resolved inside `root` (an absolute
/// target means `root`'s own), never out of it. Missing directories are
/// made 0755 and owned by `uid:gid`.
pub fn make_dir_in(root: &Path, path: &str, uid: u32, gid: u32) -> Result<(), String> {
    use std::collections::VecDeque;
    use std::path::Component;
    let mut todo: VecDeque<std::ffi::OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    // Where we are, as components below root.
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            at.pop();
            continue;
        }
        let here: PathBuf = at
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => at.push(c),
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err("too many symlinks".into());
                }
                let target = std::fs::read_link(&here).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    at.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push_front(n.to_os_string()),
                        Component::ParentDir => todo.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => return Err(format!("{} is not a directory", here.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&here).map_err(|e| e.to_string())?;
                std::os::unix::fs::lchown(&here, Some(uid), Some(gid))
                    .map_err(|e| e.to_string())?;
                at.push(c);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

pub fn name(o: &Observed) -> &'static str {
    match o {
        Observed::Created => "created",
        Observed::Running { .. } => "running",
        Observed::Exited { .. } => "exited",
        Observed::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_are_made_inside_the_root_even_through_symlinks() {
        let top = std::env::temp_dir().join(format!("berth-mkdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let (root, outside) = (top.join("root"), top.join("outside"));
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        make_dir_in(&root, "/var/run/app", 0, 0).unwrap();
        assert!(root.join("run/app").is_dir(), "followed inside the root");
        make_dir_in(&root, "/evil/x", 0, 0).unwrap();
        assert!(!outside.join("x").exists(), "an absolute link stays inside");
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("x")
                .is_dir()
        );
        make_dir_in(&root, "/up/y", 0, 0).unwrap();
        assert!(root.join("y").is_dir(), "'..' stops at the root");
        std::fs::write(root.join("file"), "x").unwrap();
        assert!(make_dir_in(&root, "/file/z", 0, 0).is_err());
        std::fs::remove_dir_all(&top).unwrap();
    }
}
