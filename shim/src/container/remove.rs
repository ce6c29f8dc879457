//! RemoveContainer's part on the node: the container killed if it runs,
//! its monitor's deletion awaited, its directories released, its record
//! forgotten.

use std::time::{Duration, Instant};

use berth_runtime::protocol::state::{DELETED, PID};

use super::{ContainerError, ContainerRecord, Containers};

impl Containers {
    /// Kills it if it runs, then releases everything and forgets it.
    pub async fn remove(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
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
}
