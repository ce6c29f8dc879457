//! `berth-monitor checkpoint`: dumps a running container's processes with
//! CRIU and leaves them running, for berthd's CheckpointContainer.
//!
//! With libcontainer, through CRIU's RPC service (`criu swrk`, found on
//! `PATH`); with an external runtime, its `checkpoint` command. Either
//! way: every bind mount is declared external (berthd's /etc/hosts,
//! volumes, the pod's /dev/shm), file locks are dumped, and CRIU writes
//! its images to `images` and its `dump.log` and `stats-dump` to `work`.
//! Established TCP connections are not dumped: CRIU then refuses a
//! container that has one, as CRI-O and containerd do by default.

use berth_runtime::protocol::Checkpoint;
use libcontainer::container::CheckpointOptions;

use super::oci::Oci;

pub fn checkpoint(c: &Checkpoint) -> Result<(), String> {
    let Checkpoint {
        id,
        root,
        images,
        work,
        runtime,
    } = c;
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|d| d.join("criu").is_file()) {
        return Err(format!(
            "criu is not installed (not found on PATH {}): install CRIU (Debian: criu)",
            path.to_string_lossy()
        ));
    }
    match runtime.as_deref() {
        Some(bin) => Oci {
            bin,
            root,
            log: &work.join("runtime.log"),
        }
        .checkpoint(id, images, work),
        None => {
            let mut c = libcontainer::container::Container::load(root.join(id))
                .map_err(|e| format!("container {id}: {e}"))?;
            c.checkpoint(&CheckpointOptions {
                ext_unix_sk: false,
                file_locks: true,
                image_path: images.to_path_buf(),
                leave_running: true,
                shell_job: false,
                tcp_established: false,
                work_path: Some(work.to_path_buf()),
                manage_cgroups_mode: rust_criu::CgMode::SOFT,
                link_remap: false,
            })
            .map_err(|e| {
                // CRIU says why in its log; its last error line is the
                // reason worth returning.
                let why = std::fs::read_to_string(work.join("dump.log"))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .find(|l| l.contains("Error"))
                    .map(|l| format!(" (dump.log: {})", l.trim()))
                    .unwrap_or_default();
                format!("criu dump: {e}{why}")
            })
        }
    }
}
