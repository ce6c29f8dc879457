//! Containers: their records, and what each holds on the node, made and
//! released here; the per-container `berth-monitor` runs them. This file
//! opens the table and the directories; by concern: `record.rs` (the
//! record, what the monitor's files say), `rootfs.rs` (the overlay rootfs,
//! image volumes, idmapped staging), `create.rs` (bundle and monitor
//! start), `run.rs` (start, stop, the monitor's state), `remove.rs`,
//! `checkpoint.rs` (CheckpointContainer's archive), `restore.rs` (a
//! container made again from one).
//!
//! ```text
//! <root>/containers/<id>/{upper,work}   the writable layer
//! <state>/containers/<id>/              bundle (config.json), rootfs (overlay
//!                                       mount), and the files the monitor
//!                                       writes (see berth_runtime)
//! <state>/runtime/                      libcontainer's own state
//! <state>/logs/<name>.log               logs of containers given no log path
//! ```
//!
//! `<root>/containers`, each `<root>/containers/<id>` and `<state>/runtime`
//! are 0700; each `<state>/containers/<id>` is 0700, or 0710 with its pod's
//! root's group in a user namespace (see [`crate::dirs`]).

pub mod checkpoint;
mod create;
mod record;
mod remove;
pub mod restore;
mod rootfs;
mod run;

pub use create::NewContainer;
pub use record::{ContainerRecord, Observed, key_of, name};
pub use rootfs::{ImageVolume, make_dir_in};

use std::path::{Path, PathBuf};

use std::sync::Arc;

use berth_db::{Cached, Table};
use redb::Database;

const CONTAINERS: Table<ContainerRecord> = Table::new("containers");

/// Where idmapped copies of layers and volumes are staged, in a
/// container's state dir.
const IDMAP_DIR: &str = "idmap";

/// What went wrong with a container; `crate::cri::error` gives each its
/// gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container metadata database: {0}")]
    Db(#[from] berth_db::Error),
    /// The spec refused the config or the image.
    #[error(transparent)]
    Spec(#[from] crate::spec::Error),
    /// Making what it holds on the node, or its monitor, failed.
    #[error("{0}")]
    Create(String),
    /// It could not be started: not created, or its process failed.
    #[error("{0}")]
    Start(String),
    /// Its monitor did not do what it was told (stop, kill).
    #[error("{0}")]
    Monitor(String),
}

pub struct Containers {
    records: Cached<ContainerRecord>,
    /// What `observe` found that cannot change unseen (see run.rs).
    seen: std::sync::Mutex<std::collections::HashMap<String, run::Seen>>,
    root: PathBuf,
    state: PathBuf,
    monitor: PathBuf,
    /// The containers a CRIU dump is running on (see checkpoint.rs).
    dumping: checkpoint::Dumps,
    /// The tree of pod mounts the monitors set aside (see tree.rs), if
    /// the state directory is one.
    pub aside: Option<PathBuf>,
}

impl Containers {
    pub fn open(
        db: std::sync::Arc<Database>,
        root: &Path,
        state: &Path,
    ) -> Result<Containers, ContainerError> {
        let monitor = crate::monitor::path(crate::monitor::MONITOR);
        let c = Containers {
            records: Cached::open_grouped(db, CONTAINERS, |c| c.pod_id.clone())?,
            seen: Default::default(),
            root: root.join("containers"),
            state: state.join("containers"),
            monitor,
            dumping: Default::default(),
            aside: None,
        };
        c.clean_half_made()?;
        c.lost_monitors()?;
        c.close_dirs().map_err(|e| {
            ContainerError::Create(format!(
                "closing the containers' directories to other users: {e}"
            ))
        })?;
        Ok(c)
    }

    pub fn monitor(&self) -> &Path {
        &self.monitor
    }

    /// Every record, in id order (held in memory: no database read).
    pub fn all(&self) -> Result<Vec<Arc<ContainerRecord>>, ContainerError> {
        Ok(self.records.all())
    }

    /// The records of one pod (grouped by pod: no scan).
    pub fn of_pod(&self, pod_id: &str) -> Vec<Arc<ContainerRecord>> {
        self.records.of_group(pod_id)
    }

    /// By full id or unique prefix.
    pub fn find(&self, id: &str) -> Result<Option<ContainerRecord>, ContainerError> {
        Ok(self.records.find(id).map(|r| (*r).clone()))
    }

    pub fn save(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        Ok(self.records.put(&rec.id, rec)?)
    }

    fn delete(&self, id: &str) -> Result<(), ContainerError> {
        self.records.delete(id)?;
        self.forget(id);
        Ok(())
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

    /// Where a container logs when its pod or config names no log path
    /// (crictl without `log_directory`): beside the containers' state
    /// directories, not among them, where it would look like a half-made
    /// container's.
    pub fn default_log_dir(&self) -> PathBuf {
        self.state.with_file_name("logs")
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.state.with_file_name("runtime")
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
    fn clean_half_made(&self) -> Result<(), ContainerError> {
        let known: std::collections::HashSet<String> =
            self.all()?.into_iter().map(|c| c.id.clone()).collect();
        for base in [&self.state, &self.root] {
            let Ok(rd) = std::fs::read_dir(base) else {
                continue;
            };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&id) {
                    tracing::info!(container = %id, "removing a half-made container");
                    if let Ok(init) = self.init_process(&id) {
                        let _ = init.signal(nix::sys::signal::Signal::SIGKILL);
                    }
                    self.release(&id);
                }
            }
        }
        Ok(())
    }
}
