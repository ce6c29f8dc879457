//! CreateContainer's part on the node: the rootfs, the OCI bundle, and a
//! `berth-monitor` that creates the container and holds it CREATED.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::protocol::state::{CREATE_ERROR, MONITOR_LOG, PID, START_FIFO};
use berth_runtime::protocol::{Container as MonitoredContainer, Invocation};
use cri_api::v1::ContainerConfig;

use super::{ContainerError, ContainerRecord, Containers, IDMAP_DIR, ImageVolume, make_dir_in};
use crate::pod::IdMaps;
use crate::spec::Spec;

/// What a new container is made of.
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub pod_id: &'a str,
    pub config: &'a ContainerConfig,
    /// The image as the user named it, and the image id it resolved to.
    pub image: &'a str,
    pub image_id: &'a str,
    /// The image's layer directories, topmost first.
    pub lowers: &'a [PathBuf],
    pub volumes: &'a [ImageVolume],
    pub log_path: PathBuf,
    /// The pod handler's external OCI runtime; None: libcontainer.
    pub runtime: Option<&'a Path>,
    /// The pod's user namespace: its pin, and its ID maps.
    pub userns: Option<&'a (PathBuf, IdMaps)>,
    /// The checkpoint archive it is restored from; None: a new container.
    pub restore: Option<super::restore::Restore<'a>>,
}

/// How D-Bus reports a call whose recipient (systemd) left the bus before
/// it answered.
const BUS_DROPPED: &str = "disconnected from message bus without replying";

impl Containers {
    /// Mounts the rootfs, writes the bundle and starts the monitor, which
    /// creates the container; returns once it is CREATED. On error nothing
    /// is left. `spec_for` builds the spec once the rootfs and the mount
    /// sources are known; it also gives the stop signal.
    pub async fn create(
        &self,
        new: NewContainer<'_>,
        spec_for: impl FnOnce(&Path, &[(usize, PathBuf)]) -> Result<(Spec, i32), crate::spec::Error>,
    ) -> Result<ContainerRecord, ContainerError> {
        let rec = ContainerRecord {
            id: new.id.to_string(),
            pod_id: new.pod_id.to_string(),
            created_ns: berth_runtime::now_ns(),
            image: new.image.to_string(),
            image_id: new.image_id.to_string(),
            log_path: new.log_path.display().to_string(),
            stop_signal: 15,
            config: crate::stored::encode(new.config),
            cgroup: String::new(),
            runtime: new.runtime.map(Path::to_path_buf),
            user: None,
            decoded: new.config.clone().into(),
        };
        match self.make(rec, &new, spec_for).await {
            Ok(rec) => Ok(rec),
            Err(e) => {
                self.release(new.id);
                Err(e)
            }
        }
    }

    async fn make(
        &self,
        mut rec: ContainerRecord,
        new: &NewContainer<'_>,
        spec_for: impl FnOnce(&Path, &[(usize, PathBuf)]) -> Result<(Spec, i32), crate::spec::Error>,
    ) -> Result<ContainerRecord, ContainerError> {
        let stage = crate::trace::Stage::start("rootfs");
        // A restore unpacks its archive here: off the async workers' turn.
        let (rootfs, sources) = match new.restore {
            Some(_) => tokio::task::block_in_place(|| self.mount_rootfs(&rec, new)),
            None => self.mount_rootfs(&rec, new),
        }
        .map_err(ContainerError::Create)?;
        stage.done();
        berth_db::crash::point("create:rootfs");
        let (mut spec, stop_signal) = spec_for(&rootfs, &sources)?;
        rec.stop_signal = stop_signal;
        if new.restore.is_some() {
            super::restore::configure(&mut spec, &self.state_dir(&rec.id), &rootfs)
                .map_err(ContainerError::Create)?;
        }
        self.write_bundle(&mut rec, &spec, &rootfs, new)
            .map_err(ContainerError::Create)?;
        let started = std::time::Instant::now();
        tracing::Instrument::instrument(
            self.start_monitor_again_if_dropped(&rec, &new.log_path),
            tracing::debug_span!("stage", otel.name = "monitor"),
        )
        .await
        .map_err(ContainerError::Create)?;
        crate::metrics::stage("monitor", started.elapsed());
        if new.restore.is_some() {
            super::restore::done(&self.state_dir(&rec.id), &self.root.join(&rec.id));
        }
        // The systemd driver's cpuset, which the runtime was not given (see
        // spec::resources): into the scope's files before the start.
        if berth_runtime::is_systemd_path(&rec.cgroup) {
            let r = rec
                .config()
                .linux
                .and_then(|l| l.resources)
                .unwrap_or_default();
            let cpuset = cri_api::v1::LinuxContainerResources {
                cpuset_cpus: r.cpuset_cpus,
                cpuset_mems: r.cpuset_mems,
                ..Default::default()
            };
            let written = crate::cgroups::Cgroup::new(&rec.cgroup)
                .ok_or_else(|| format!("cgroup {:?}", rec.cgroup))
                .and_then(|cg| cg.writes_for(&cpuset))
                .and_then(|w| crate::cgroups::apply(&w).map_err(|e| format!("the cpuset: {e}")));
            if let Err(e) = written {
                // The created container goes, with its monitor.
                let _ = self.stop(&rec, Duration::ZERO).await;
                self.wait_deleted(&rec).await;
                return Err(ContainerError::Create(e));
            }
        }
        crate::idmap::unstage_all(&self.state_dir(&rec.id).join(IDMAP_DIR));
        berth_db::crash::point("create:monitor");
        self.save(&rec)?;
        Ok(rec)
    }

    /// What the record keeps of the spec, the working dir, config.json,
    /// the start FIFO and the log's directory.
    fn write_bundle(
        &self,
        rec: &mut ContainerRecord,
        spec: &Spec,
        rootfs: &Path,
        new: &NewContainer<'_>,
    ) -> Result<(), String> {
        let (dir, log_path, userns) = (self.state_dir(&rec.id), &new.log_path, new.userns);
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
            make_dir_in(rootfs, cwd, uid, gid).map_err(|e| format!("working dir {cwd:?}: {e}"))?;
        }
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?,
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
        Ok(())
    }

    /// [`Self::start_monitor`], once more if systemd dropped its D-Bus
    /// connection while it made the container's scope (it does when its
    /// bus stalls, e.g. in a storm of mount events: systemd issue 32381),
    /// as runc retries when its own connection drops. The failed attempt
    /// cleaned up after itself; if it left the runtime's state, or the
    /// scope, the second attempt fails saying so.
    async fn start_monitor_again_if_dropped(
        &self,
        rec: &ContainerRecord,
        log_path: &Path,
    ) -> Result<(), String> {
        match self.start_monitor(rec, log_path).await {
            Err(e) if e.contains(BUS_DROPPED) => {
                tracing::warn!(container = %rec.id, "creating again: {e}");
                let dir = self.state_dir(&rec.id);
                for f in [CREATE_ERROR, MONITOR_LOG] {
                    let _ = std::fs::remove_file(dir.join(f));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.start_monitor(rec, log_path).await
            }
            r => r,
        }
    }

    /// Starts the monitor and waits (60 s at most) until it has created the
    /// container, or said why it could not.
    async fn start_monitor(&self, rec: &ContainerRecord, log_path: &Path) -> Result<(), String> {
        let (id, dir) = (rec.id.clone(), self.state_dir(&rec.id));
        let monitor_log = std::fs::File::create(dir.join(MONITOR_LOG))
            .map_err(|e| format!("monitor log: {e}"))?;
        let run = {
            let c = rec.config();
            Invocation::Run {
                container: MonitoredContainer {
                    id: id.clone(),
                    bundle: dir.clone(),
                    state: dir.clone(),
                    root: self.runtime_root(),
                    log: log_path.to_path_buf(),
                    stdin: c.stdin,
                    stdin_once: c.stdin && c.stdin_once,
                    runtime: rec.runtime.clone(),
                },
                pump: crate::monitor::pump().to_path_buf(),
                aside: self.aside.clone(),
            }
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
            // Until the monitor writes one of its answers, or exits.
            let until = tokio::time::Instant::from_std(deadline);
            tokio::select! {
                _ = crate::wait::any_exists(&dir, &[PID, CREATE_ERROR], until) => {}
                _ = child.wait() => {}
            }
        }
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }
}
