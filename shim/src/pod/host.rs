//! What a pod needs from the kernel, behind a trait (youki's `Syscall`
//! idea): berthd uses [`Kernel`]; the pod logic's unit tests use a fake
//! that records the calls, so they need no root.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::{IdMaps, infra, ns};

pub trait Host: Send + Sync {
    /// Creates the namespaces `kinds` and pins them in `dir` (see
    /// [`ns::pin`]); on error nothing stays pinned.
    fn pin(
        &self,
        dir: &Path,
        kinds: &[ns::Kind],
        hostname: &str,
        userns: Option<&IdMaps>,
    ) -> Result<(), String>;
    /// Unpins every namespace in `dir` and removes it. Idempotent.
    fn unpin(&self, dir: &Path);
    /// Starts the infra process with its PID namespace pinned at
    /// `dir/pid`; its pid.
    fn start_infra(&self, dir: &Path, in_userns: bool) -> Result<i32, String>;
    /// Kills `pid` if it is still an infra process (not a reused pid).
    fn kill_infra(&self, pid: i32);
    fn mount_tmpfs(&self, at: &Path, options: &str) -> Result<(), String>;
    /// Detaches whatever is mounted at `at`; nothing mounted is fine.
    fn unmount(&self, at: &Path);
    /// Creates the cgroup `parent` where missing, adding what it made to
    /// `made` (see [`crate::cgroups::create_parent`]).
    fn create_cgroup(&self, parent: &str, made: &mut Vec<String>) -> Result<(), String>;
    fn remove_cgroups(&self, made: &[String]);
    /// Puts the infra process `pid` in its own cgroup in the pod's (see
    /// [`crate::cgroups::place_infra`]), adding what it made to `made`.
    fn place_infra(
        &self,
        pid: i32,
        parent: &str,
        pod_id: &str,
        systemd: bool,
        made: &mut Vec<String>,
    ) -> Result<(), String>;
    /// Whether a namespace is pinned (bind-mounted) at `path`.
    fn is_pinned(&self, path: &Path) -> bool;
}

/// The node's kernel.
pub struct Kernel;

impl Host for Kernel {
    fn pin(
        &self,
        dir: &Path,
        kinds: &[ns::Kind],
        hostname: &str,
        userns: Option<&IdMaps>,
    ) -> Result<(), String> {
        ns::pin(dir, kinds, hostname, userns).map_err(|e| e.to_string())
    }

    fn unpin(&self, dir: &Path) {
        ns::unpin(dir)
    }

    fn start_infra(&self, dir: &Path, in_userns: bool) -> Result<i32, String> {
        infra::start(dir, in_userns)
    }

    fn kill_infra(&self, pid: i32) {
        infra::kill(pid)
    }

    fn mount_tmpfs(&self, at: &Path, options: &str) -> Result<(), String> {
        mount(
            Some("shm"),
            at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options),
        )
        .map_err(|e| e.to_string())
    }

    fn unmount(&self, at: &Path) {
        let _ = umount2(at, MntFlags::MNT_DETACH);
    }

    fn create_cgroup(&self, parent: &str, made: &mut Vec<String>) -> Result<(), String> {
        crate::cgroups::create_parent(parent, made)
    }

    fn remove_cgroups(&self, made: &[String]) {
        crate::cgroups::remove_made(made)
    }

    fn place_infra(
        &self,
        pid: i32,
        parent: &str,
        pod_id: &str,
        systemd: bool,
        made: &mut Vec<String>,
    ) -> Result<(), String> {
        crate::cgroups::place_infra(pid, parent, pod_id, systemd, made)
    }

    fn is_pinned(&self, path: &Path) -> bool {
        nix::sys::statfs::statfs(path)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
    }
}
