//! An external OCI runtime with runc's command line (runc, crun), for
//! RuntimeClass handlers of `type = "oci"`: the monitor drives it instead
//! of the built-in libcontainer. The monitor is a child subreaper, so the
//! container's init (and an exec'd process) that the runtime leaves
//! behind is reparented to it and reaped by it, as with libcontainer.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::unistd::Pid;

pub struct Oci<'a> {
    pub bin: &'a Path,
    /// The runtime's own state root (`--root`).
    pub root: &'a Path,
    /// Where its log (JSON lines) goes, for error messages.
    pub log: &'a Path,
}

impl Oci<'_> {
    fn command(&self) -> Command {
        let mut c = Command::new(self.bin);
        c.arg("--root")
            .arg(self.root)
            .arg("--log")
            .arg(self.log)
            .arg("--log-format")
            .arg("json");
        c
    }

    /// The last error the runtime logged, else its exit status.
    fn failure(&self, what: &str, status: std::process::ExitStatus) -> String {
        let log = std::fs::read_to_string(self.log).unwrap_or_default();
        let msg = log
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["level"] == "error")
            .and_then(|v| v["msg"].as_str().map(String::from));
        format!(
            "{} {what}: {}",
            self.bin.display(),
            msg.unwrap_or_else(|| status.to_string())
        )
    }

    /// [`Self::command`] for the container of `bundle`. The systemd
    /// driver: the runtime makes the container's scope through systemd
    /// (runc and crun remember it for later commands).
    fn command_for(&self, bundle: &Path) -> Command {
        let mut c = self.command();
        let cgroup = super::bundle::spec(bundle).and_then(|s| super::bundle::cgroups_path(&s));
        if cgroup.is_some_and(|p| berth_runtime::is_systemd_path(&p)) {
            c.arg("--systemd-cgroup");
        }
        c
    }

    fn run(&self, what: &str, c: &mut Command) -> Result<(), String> {
        let status = c
            .status()
            .map_err(|e| format!("{} {what}: {e}", self.bin.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(what, status))
        }
    }

    /// `create`: the container exists, its init waits for `start`.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console: Option<&Path>,
        stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    ) -> Result<Pid, String> {
        let mut c = self.command_for(bundle);
        c.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(sock) = console {
            c.arg("--console-socket").arg(sock);
        }
        c.arg(id);
        with_stdio(&mut c, stdio);
        self.run("create", &mut c)?;
        read_pid(pid_file)
    }

    /// `restore --detach`: the container made again from CRIU's images in
    /// the state directory `state` (CRIU's `restore.log` there too), its
    /// processes left stopped (the bundle's `org.criu.config` says so)
    /// until [`super::restore::continue_all`]. The restored init's stdio pipes become
    /// `stdio`: the runtime maps the pipes `descriptors.json` names onto
    /// its own stdio; its terminal's new master goes to `console`, as at a
    /// create.
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        state: &Path,
        console: Option<&Path>,
        stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    ) -> Result<Pid, String> {
        use berth_runtime::protocol::state::{OCI_PID, RESTORE};
        let pid_file = state.join(OCI_PID);
        let mut c = self.command_for(bundle);
        c.arg("restore");
        if let Some(sock) = console {
            c.arg("--console-socket").arg(sock);
        }
        c.arg("--detach")
            .arg("--file-locks")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--image-path")
            .arg(state.join(RESTORE))
            .arg("--work-path")
            .arg(state)
            .arg(id);
        with_stdio(&mut c, stdio);
        self.run("restore", &mut c).map_err(|e| {
            format!(
                "{e}{}",
                super::checkpoint::criu_error(&state.join("restore.log"))
            )
        })?;
        read_pid(&pid_file)
    }

    pub fn start(&self, id: &str) -> Result<(), String> {
        self.run("start", self.command().arg("start").arg(id))
    }

    pub fn delete(&self, id: &str) -> Result<(), String> {
        self.run(
            "delete",
            self.command().arg("delete").arg("--force").arg(id),
        )
    }

    /// `checkpoint --leave-running`: CRIU's images into `images`, its log
    /// into `work`.
    pub fn checkpoint(&self, id: &str, images: &Path, work: &Path) -> Result<(), String> {
        self.run(
            "checkpoint",
            self.command()
                .arg("checkpoint")
                .arg("--leave-running")
                .arg("--file-locks")
                .arg("--image-path")
                .arg(images)
                .arg("--work-path")
                .arg(work)
                .arg(id),
        )
    }

    /// `exec -d`: the process runs (with our stdio, or a terminal sent to
    /// `console`); returns its pid.
    pub fn exec(
        &self,
        id: &str,
        process: &Path,
        pid_file: &Path,
        console: Option<&Path>,
    ) -> Result<Pid, String> {
        let mut c = self.command();
        c.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(sock) = console {
            c.arg("--tty").arg("--console-socket").arg(sock);
        }
        c.arg(id);
        self.run("exec", &mut c)?;
        read_pid(pid_file)
    }
}

/// The init inherits these from the runtime; none: nothing.
fn with_stdio(c: &mut Command, stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>) {
    match stdio {
        Some((i, o, e)) => c.stdin(i).stdout(o).stderr(e),
        None => c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    };
}

pub fn read_pid(file: &Path) -> Result<Pid, String> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .map(Pid::from_raw)
        .ok_or_else(|| format!("no pid in {}", file.display()))
}

/// Become the reaper of what the runtime leaves behind.
pub fn subreaper() -> Result<(), String> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))
}
