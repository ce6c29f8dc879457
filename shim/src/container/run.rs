//! A created container's life: what its monitor's files say, start,
//! stop, and the start FIFO's control words.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use berth_runtime::protocol::Control;
use berth_runtime::protocol::state::{EXIT, PID, PID_START, START_FIFO, STARTED, process_start};
use nix::sys::signal::Signal;

use super::{ContainerError, ContainerRecord, Containers, Observed, name};

impl Containers {
    /// What the monitor's files say about the container now. What cannot
    /// have changed unseen is not read again: an exit is final, and a
    /// running init is held by a pidfd that says, in one poll, whether it
    /// still runs.
    pub fn observe(&self, id: &str) -> Observed {
        if let Some(o) = self.seen_now(id) {
            return o;
        }
        let (o, init) = self.observe_files(id);
        let seen = match (&o, init) {
            (Observed::Exited { .. }, _) => Seen::Exited(o.clone()),
            (Observed::Running { started_ns }, Some(init)) => Seen::Running {
                started_ns: *started_ns,
                init,
            },
            _ => return o,
        };
        let mut all = self.seen();
        // Not for a container removed meanwhile (its delete forgets it
        // under this lock, after the record is gone).
        if self.records.get(id).is_some() {
            all.insert(id.to_string(), seen);
        }
        o
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen_now(&self, id: &str) -> Option<Observed> {
        match self.seen().get(id)? {
            Seen::Exited(o) => Some(o.clone()),
            Seen::Running { started_ns, init } => init.alive().then_some(Observed::Running {
                started_ns: *started_ns,
            }),
        }
    }

    /// Drops what [`Containers::observe`] remembers of a removed container.
    pub(super) fn forget(&self, id: &str) {
        self.seen().remove(id);
    }

    /// The state files read, and the init's pidfd when it runs.
    fn observe_files(&self, id: &str) -> (Observed, Option<InitProcess>) {
        let dir = self.state_dir(id);
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
        let started_ns = read(STARTED)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if let Some(exit) = read(EXIT).and_then(|s| serde_json::from_str(&s).ok()) {
            return (Observed::Exited { started_ns, exit }, None);
        }
        match (self.init_process(id).ok(), started_ns) {
            (None, _) => (Observed::Unknown, None),
            (Some(_), 0) => (Observed::Created, None),
            (Some(init), s) => (Observed::Running { started_ns: s }, Some(init)),
        }
    }

    /// Resolves once the container's init has exited and its monitor has
    /// recorded how (or is gone without saying), or its record is removed.
    /// Waits on the init's pidfd in the reactor: nothing is polled while
    /// the container runs.
    pub async fn exited(&self, id: &str) {
        let registered = self.init_process(id).ok().and_then(|init| {
            #[allow(unsafe_code)]
            // SAFETY: the AsyncFd owns the OwnedFd: it stays open, the same
            // descriptor, until the AsyncFd is dropped.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    init.0,
                    tokio::io::Interest::READABLE,
                )
            }
            .ok()
        });
        match registered {
            Some(fd) => drop(fd.readable().await),
            // No pidfd to wait on (out of descriptors?): looked at each
            // second instead.
            None => {
                while matches!(
                    self.observe(id),
                    Observed::Running { .. } | Observed::Created
                ) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        while self.records.get(id).is_some() && self.wait_exit(id).await.is_err() {}
    }

    /// Tells the monitor to start the container; returns once it runs (or
    /// has already exited).
    pub async fn start(&self, rec: &ContainerRecord) -> Result<(), ContainerError> {
        match self.observe(&rec.id) {
            Observed::Created => {}
            other => {
                return Err(ContainerError::Start(format!(
                    "container {} is {}, not created",
                    rec.id,
                    name(&other)
                )));
            }
        }
        self.tell(&rec.id, Control::Start)
            .map_err(ContainerError::Start)?;
        berth_db::crash::point("start:told");
        let dir = self.state_dir(&rec.id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        if !crate::wait::any_exists(&dir, &[STARTED, EXIT], deadline).await {
            return Err(ContainerError::Start(format!(
                "container {} did not start within 30s",
                rec.id
            )));
        }
        if let Observed::Exited { exit, .. } = self.observe(&rec.id)
            && !exit.message.is_empty()
        {
            return Err(ContainerError::Start(exit.message));
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
    pub async fn stop(
        &self,
        rec: &ContainerRecord,
        timeout: Duration,
    ) -> Result<(), ContainerError> {
        let init = match self.observe(&rec.id) {
            Observed::Exited { .. } | Observed::Unknown => return Ok(()),
            Observed::Created => {
                self.tell(&rec.id, Control::Kill)
                    .map_err(ContainerError::Monitor)?;
                return self.wait_exit(&rec.id).await;
            }
            Observed::Running { .. } => match self.init_process(&rec.id) {
                Ok(p) => p,
                // Gone since: nothing to signal.
                Err(_) => return self.wait_exit(&rec.id).await,
            },
        };
        let sig = Signal::try_from(rec.stop_signal).unwrap_or(Signal::SIGTERM);
        if timeout > Duration::ZERO {
            let _ = init.signal(sig);
            berth_db::crash::point("stop:signalled");
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if !matches!(self.observe(&rec.id), Observed::Running { .. }) {
                    return self.wait_exit(&rec.id).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Through the pidfd: if the process is gone (even reaped and its
        // pid reused), this reaches nothing.
        let _ = init.signal(Signal::SIGKILL);
        self.wait_exit(&rec.id).await
    }

    /// Waits (30 s at most) until the container has exited and its
    /// monitor has recorded how. Between the monitor reaping the process
    /// and writing its exit, the container reads UNKNOWN: that is given 5 s
    /// to become EXITED (a monitor that is gone never says).
    async fn wait_exit(&self, id: &str) -> Result<(), ContainerError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut unknown_since: Option<Instant> = None;
        loop {
            match self.observe(id) {
                Observed::Exited { .. } => return Ok(()),
                Observed::Unknown => {
                    let since = *unknown_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(5) {
                        return Ok(());
                    }
                }
                Observed::Running { .. } | Observed::Created => unknown_since = None,
            }
            if Instant::now() > deadline {
                return Err(ContainerError::Monitor(format!(
                    "container {id} did not exit after SIGKILL"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(super) fn pid(&self, id: &str) -> Result<nix::unistd::Pid, String> {
        std::fs::read_to_string(self.state_dir(id).join(PID))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .map(nix::unistd::Pid::from_raw)
            .ok_or_else(|| format!("container {id}: no pid"))
    }

    /// The container's init, held by a pidfd, if it still exists: the
    /// process at the recorded pid is taken for it only if it started when
    /// the monitor recorded (`pid-start`), so a pid reused after the
    /// container was reaped (its monitor dead, say) is never signalled.
    pub(super) fn init_process(&self, id: &str) -> Result<InitProcess, String> {
        let pid = self.pid(id)?;
        let fd = InitProcess::open(pid).map_err(|e| format!("container {id}: pid {pid}: {e}"))?;
        // Read after the pidfd is open: a match means the pidfd holds the
        // process that started then. (No record: a monitor older than
        // the file; the pid is taken as it is.)
        let recorded = std::fs::read_to_string(self.state_dir(id).join(PID_START)).ok();
        if let Some(want) = recorded.and_then(|s| s.trim().parse::<u64>().ok())
            && process_start(pid.as_raw()) != Some(want)
        {
            return Err(format!(
                "container {id}: pid {pid} now belongs to another process"
            ));
        }
        Ok(fd)
    }
}

/// What [`Containers::observe`] remembers of a container.
pub(super) enum Seen {
    Running { started_ns: i64, init: InitProcess },
    Exited(Observed),
}

/// A process held by a pidfd (Linux 5.3): signals sent through it reach
/// that process or, once it is gone, nothing.
pub(super) struct InitProcess(OwnedFd);

impl InitProcess {
    fn open(pid: nix::unistd::Pid) -> nix::Result<Self> {
        crate::wait::pidfd(pid).map(InitProcess)
    }

    /// Has it not exited? (A pidfd polls readable once its process has
    /// exited, reaped or not.)
    fn alive(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    pub(super) fn signal(&self, sig: Signal) -> nix::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: pidfd_send_signal reads only its arguments (no siginfo).
        let r = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig as i32,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(nix::errno::Errno::last());
        }
        Ok(())
    }
}
