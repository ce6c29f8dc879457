//! RemoveContainer's part on the node: the container killed if it runs,
//! its monitor's deletion awaited, its directories released, its record
//! forgotten; and, at start, containers whose monitor is gone.

use std::time::Duration;

use berth_runtime::protocol::state::{DELETED, Exit, PID};

use super::{ContainerError, ContainerRecord, Containers, Observed};

impl Containers {
    /// A container whose monitor is gone without recording an exit (the
    /// node rebooted and took `<state>` with it, or the monitor was
    /// killed) is recorded EXITED, code 255, with the reason, so that the
    /// kubelet makes it anew instead of finding it UNKNOWN for ever. Run at
    /// start, after a grace moment for a monitor that was just writing the
    /// exit of a container that had ended.
    pub(super) fn lost_monitors(&self) -> Result<(), ContainerError> {
        let unknown = || -> Result<Vec<String>, ContainerError> {
            Ok(self
                .all()?
                .into_iter()
                .filter(|c| self.observe(&c.id) == Observed::Unknown)
                .map(|c| c.id.clone())
                .collect())
        };
        if unknown()?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
        for id in unknown()? {
            let dir = self.state_dir(&id);
            let exit = Exit {
                code: 255,
                finished_ns: berth_runtime::now_ns(),
                signal: None,
                message: "its monitor is gone without recording an exit (the node \
                          rebooted, or berth-monitor was killed)"
                    .into(),
                oom_killed: false,
            };
            let written = crate::dirs::private(&dir, None).and_then(|()| exit.write(&dir));
            match written {
                Ok(()) => tracing::warn!(container = %id, "{}: EXITED", exit.message),
                Err(e) => tracing::warn!(container = %id, "recording its lost monitor: {e}"),
            }
        }
        Ok(())
    }

    /// Kills it if it runs, then releases everything and forgets it.
    pub async fn remove(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        self.stop(rec, Duration::ZERO).await?;
        self.wait_deleted(rec).await;
        berth_db::crash::point("remove_container:deleted");
        self.release(&rec.id);
        berth_db::crash::point("remove_container:released");
        self.delete(&rec.id)
    }

    /// Waits (3 s at most) for the monitor of an exited container to have
    /// deleted it: its cgroup must be gone before the pod's can be. If the
    /// monitor is gone without saying so, removes the (empty) cgroup.
    pub(super) async fn wait_deleted(&self, rec: &ContainerRecord) {
        let dir = self.state_dir(&rec.id);
        if dir.join(PID).exists() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            crate::wait::any_exists(&dir, &[DELETED], deadline).await;
        }
        if !dir.join(DELETED).exists() && !rec.cgroup.is_empty() {
            let rel = berth_runtime::cgroup_rel(&rec.cgroup).unwrap_or_default();
            for root in crate::cgroups::roots()
                .iter()
                .filter(|_| !rel.as_os_str().is_empty())
            {
                let _ = std::fs::remove_dir(root.join(&rel));
            }
        }
    }
}
