//! The container as the monitor drives it: libcontainer's, or an
//! external OCI runtime's (runc's command line), with the operations both
//! share: its init's pid, start, delete.

use std::path::{Path, PathBuf};

use berth_runtime::protocol::Container;
use berth_runtime::protocol::state::{DELETED, OCI_LOG, OCI_ROOT, write_atomic};
use nix::unistd::Pid;

use super::oci::Oci;

/// An external runtime and where it keeps this container's state.
pub struct External {
    bin: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl External {
    /// The container's external runtime, if it has one.
    pub fn of(c: &Container) -> Option<External> {
        c.runtime.as_ref().map(|bin| External {
            bin: bin.clone(),
            root: c.state.join(OCI_ROOT),
            log: c.state.join(OCI_LOG),
        })
    }

    pub fn oci(&self) -> Oci<'_> {
        Oci {
            bin: &self.bin,
            root: &self.root,
            log: &self.log,
        }
    }
}

pub enum Engine {
    Lib(Box<libcontainer::container::Container>),
    /// The init's pid.
    Oci(External, Pid),
    /// Restored from a checkpoint, its processes stopped until the start.
    Restored(Box<Engine>),
}

impl Engine {
    /// The created container of `c` again (executed by the pump), for its
    /// delete.
    pub fn load(c: &Container, pid: Pid) -> Result<Engine, String> {
        match External::of(c) {
            Some(x) => Ok(Engine::Oci(x, pid)),
            None => libcontainer::container::Container::load(c.root.join(&c.id))
                .map(|l| Engine::Lib(Box::new(l)))
                .map_err(|e| format!("load for delete: {e}")),
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        match self {
            Engine::Lib(c) => c.pid().map(|p| Pid::from_raw(p.as_raw())),
            Engine::Oci(_, p) => Some(*p),
            Engine::Restored(e) => e.pid(),
        }
    }

    pub fn start(&mut self, id: &str) -> Result<(), String> {
        match self {
            Engine::Lib(c) => c.start().map_err(|e| e.to_string()),
            Engine::Oci(x, _) => x.oci().start(id),
            Engine::Restored(e) => match e.pid() {
                Some(p) => super::restore::continue_all(p),
                None => Err("the restored container has no pid".into()),
            },
        }
    }

    /// Kills anything left in the container's cgroup, removes it and the
    /// runtime's state; then writes `deleted`, the monitor's last word.
    pub fn delete(&mut self, id: &str, state: &Path) {
        let r = match self {
            Engine::Lib(c) => c.delete(true).map_err(|e| e.to_string()),
            Engine::Oci(x, _) => x.oci().delete(id),
            Engine::Restored(e) => return e.delete(id, state),
        };
        if let Err(e) = r {
            eprintln!("berth-monitor {id}: delete: {e}");
        }
        deleted(state);
    }
}

/// `berth-monitor delete`: the pump's container has exited; delete it.
pub fn delete_exited(c: &Container, pid: Pid) {
    match Engine::load(c, pid) {
        Ok(mut e) => e.delete(&c.id, &c.state),
        Err(e) => {
            eprintln!("berth-monitor {}: {e}", c.id);
            deleted(&c.state);
        }
    }
}

/// The monitor's work is done (also when there was nothing to delete).
pub fn deleted(state: &Path) {
    let _ = write_atomic(state, DELETED, b"");
}
