//! Waiting for what another process does without looking on a timer: a
//! file appearing in a directory (inotify), a process exiting (its pidfd).
//! A wait that looked every few milliseconds cost each pod start that
//! much: the monitor's `pid` and `started` files, each CNI plugin's exit.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// Resolves once one of `names` exists in `dir` (true), or at `deadline`
/// (false). A file created there or renamed into place wakes it at once.
/// Without inotify (out of instances?), it looks every 5 ms.
pub async fn any_exists(dir: &Path, names: &[&str], deadline: tokio::time::Instant) -> bool {
    let exists = || names.iter().any(|n| dir.join(n).exists());
    // Watched before the first look, so nothing made in between is missed.
    let watch = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .ok()
        .and_then(|i| {
            i.add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                .ok()?;
            #[allow(unsafe_code)]
            // SAFETY: the AsyncFd owns the Inotify, whose descriptor stays
            // open, the same one, until the AsyncFd is dropped.
            unsafe { tokio::io::unix::AsyncFd::register(Watch(i)) }.ok()
        });
    let watch = ClosedAside(watch);
    loop {
        if exists() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        match &watch.0 {
            Some(w) => {
                tokio::select! {
                    ready = w.readable() => {
                        if let Ok(mut ready) = ready {
                            while let Ok(events) = w.get_ref().0.read_events() {
                                if events.is_empty() {
                                    break;
                                }
                            }
                            ready.clear_ready();
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// An inotify instance as tokio's reactor takes it.
struct Watch(Inotify);

impl std::os::fd::AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// An inotify instance closed on a blocking thread when dropped (the wait
/// ended, or was given up): closing one waits for the kernel's fsnotify
/// SRCU grace period, 5-7 ms here (seen with strace), which each pod start
/// step would otherwise wait for after its answer had come.
struct ClosedAside(Option<tokio::io::unix::AsyncFd<Watch>>);

impl Drop for ClosedAside {
    fn drop(&mut self) {
        let Some(w) = self.0.take() else { return };
        let inotify = w.into_inner();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || drop(inotify));
        }
    }
}

/// A pidfd for `pid` (Linux 5.3): it polls readable once the process has
/// exited, and signals sent through it reach that process or nothing.
pub fn pidfd(pid: nix::unistd::Pid) -> nix::Result<OwnedFd> {
    #[allow(unsafe_code)]
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor, owned here, or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    #[allow(unsafe_code)]
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Blocks until the process of `pidfd` exits or `deadline` passes; without
/// a pidfd, for 5 ms. The caller then looks (`try_wait`).
pub fn for_exit(pidfd: Option<&OwnedFd>, deadline: Instant) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let Some(fd) = pidfd else {
        std::thread::sleep(Duration::from_millis(5));
        return;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file renamed into place (as the monitor writes its state files)
    /// or created wakes the wait; none, and the deadline ends it.
    #[tokio::test]
    async fn a_file_appearing_ends_the_wait_and_none_ends_at_the_deadline() {
        let dir = std::env::temp_dir().join(format!("berth-wait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let soon = || tokio::time::Instant::now() + Duration::from_millis(200);
        assert!(!any_exists(&dir, &["pid"], soon()).await);
        let d = dir.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::fs::write(d.join(".tmp-pid"), b"1").unwrap();
            std::fs::rename(d.join(".tmp-pid"), d.join("pid")).unwrap();
        });
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        assert!(any_exists(&dir, &["pid", "exit"], far).await);
        writer.await.unwrap();
        std::fs::write(dir.join("exit"), b"").unwrap();
        assert!(any_exists(&dir, &["exit"], soon()).await, "already there");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pidfd_wait_ends_with_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let fd = pidfd(nix::unistd::Pid::from_raw(child.id() as i32)).unwrap();
        for_exit(Some(&fd), Instant::now() + Duration::from_secs(30));
        assert!(child.try_wait().unwrap().is_some(), "exited, not timed out");
    }
}
