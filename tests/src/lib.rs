//! Test harness: starts a real `berthd` on a private socket, root and state
//! dir, hands out CRI clients connected over that socket, and tears it all
//! down on drop.
//!
//! Use `#[tokio::test(flavor = "multi_thread")]`: stopping berthd blocks the
//! test's thread, and the clients' connections must still answer the
//! server's graceful GOAWAY meanwhile.

pub mod bench;
pub mod cgroup;
pub mod fixtures;
pub mod metrics;
pub mod net;
pub mod otlp;
pub mod registry;
pub mod setup;
pub mod soak;
pub mod streams;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

/// A directory removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "berth-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The berthd binary under test: `$BERTHD_BIN`, else the workspace's debug
/// build (`cargo build --workspace` makes it; the README's test command runs
/// that first).
pub fn berthd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTHD_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/berthd");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` first (or set BERTHD_BIN)",
        bin.display()
    );
    bin
}

/// How to start one berthd.
#[derive(Default)]
pub struct Options {
    /// Extra TOML appended to the generated config file.
    pub config: String,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra keys for the `[registry]` table (the harness writes that table
    /// to point `config_path` at the test's own hosts directory).
    pub registry: String,
    /// Extra keys for the `[cni]` table (likewise written by the harness).
    pub cni: String,
    /// Environment for this start only (not for [`Berthd::restart`]), e.g.
    /// `BERTH_CRASH_AT`.
    pub env: Vec<(String, String)>,
    /// The state directory on a mount of its own that is shared, as
    /// systemd makes every mount of a node (here they are private).
    pub shared_state: bool,
    /// The state directory named through a symbolic link on the way, as
    /// `/var/run` is `/run`.
    pub state_link: bool,
}

/// A running berthd with its own directories.
pub struct Berthd {
    child: Option<Child>,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub config_file: PathBuf,
    pub stderr_file: PathBuf,
    /// Holds socket, root, state, config, logs and a private CNI conf dir.
    pub dir: TempDir,
}

impl Berthd {
    /// Starts berthd with defaults and waits until it answers.
    pub async fn start() -> Berthd {
        Berthd::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Berthd {
        let dir = TempDir::new("berthd");
        let d = dir.path();
        for sub in ["net.d", "cni-bin", "certs.d"] {
            std::fs::create_dir_all(d.join(sub)).expect("create test dirs");
        }
        let config_file = d.join("config.toml");
        // Config keys first: the caller's extra TOML may open tables.
        let level = if opts.config.contains("log_level") {
            ""
        } else {
            "log_level = \"debug\""
        };
        // The driver the tests ask for (the VM lane runs the same tests
        // under both), unless the test sets one.
        let driver = match opts.config.contains("cgroup_driver") {
            true => "",
            false if crate::cgroup::systemd() => "cgroup_driver = \"systemd\"",
            false => "cgroup_driver = \"cgroupfs\"",
        };
        let config = format!(
            "{level}\n{driver}\n{}\n[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\n{}\n[registry]\nconfig_path = \"{}\"\n{}\n",
            opts.config,
            d.join("net.d").display(),
            d.join("cni-bin").display(),
            opts.cni,
            d.join("certs.d").display(),
            opts.registry,
        );
        std::fs::write(&config_file, config).expect("write config");
        let mut b = Berthd {
            child: None,
            socket: d.join("run/berth.sock"),
            root: d.join("root"),
            state: {
                let parent = match opts.shared_state {
                    true => shared_mount(&d.join("node")),
                    false => d.to_path_buf(),
                };
                match opts.state_link {
                    true => {
                        let link = d.join("link");
                        std::os::unix::fs::symlink(&parent, &link).expect("symlink");
                        link.join("state")
                    }
                    false => parent.join("state"),
                }
            },
            config_file,
            stderr_file: d.join("berthd.log"),
            dir,
        };
        let child = b.spawn(&opts.args, &opts.env);
        b.child = Some(child);
        b.wait_ready().await;
        b
    }

    /// Starts another berthd process with this one's paths, each flag in
    /// `replace` (`("--root", dir)`) swapped in, and waits for it to exit;
    /// for refusal tests.
    pub fn run_to_exit(&self, replace: &[(&str, &Path)]) -> (ExitStatus, String) {
        let out = self
            .command(replace)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run berthd");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// berthd with this instance's config, socket, root and state, but for
    /// the flags in `replace`.
    pub fn command(&self, replace: &[(&str, &Path)]) -> Command {
        let mut flags: Vec<(&str, &Path)> = vec![
            ("--config", &self.config_file),
            ("--socket", &self.socket),
            ("--root", &self.root),
            ("--state", &self.state),
        ];
        for (flag, value) in replace {
            match flags.iter_mut().find(|(f, _)| f == flag) {
                Some(slot) => slot.1 = value,
                None => flags.push((flag, value)),
            }
        }
        let mut cmd = Command::new(berthd_binary());
        for (flag, value) in flags {
            cmd.arg(flag).arg(value);
        }
        cmd
    }

    fn spawn(&self, args: &[String], env: &[(String, String)]) -> Child {
        let log = std::fs::File::create(&self.stderr_file).expect("create log");
        self.command(&[])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berthd")
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("berthd exited early ({status}):\n{}", self.log());
            }
            if self.socket.exists() && connect(&self.socket).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "berthd not ready after 30s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts berthd again on the same config, socket, root and state
    /// (after [`Berthd::stop_with`]), appending to the same log.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "berthd is still running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.stderr_file)
            .expect("open log");
        let child = self
            .command(&[])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// What berthd wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(connect(&self.socket).await.expect("connect"))
    }

    pub async fn image(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(connect(&self.socket).await.expect("connect"))
    }

    /// PullImage through the CRI; returns the image ref (its id).
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<cri_api::v1::AuthConfig>,
    ) -> Result<String, tonic::Status> {
        self.image()
            .await
            .pull_image(cri_api::v1::PullImageRequest {
                image: Some(cri_api::v1::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    /// Waits (up to `within`) for berthd to exit by itself; its status, or
    /// None if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` and waits (up to 30 s) for berthd to exit.
    pub fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("berthd ignored {signal} for 30s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop_with(Signal::SIGTERM);
        }
        // A test that failed half-way may have left pods: detach their
        // mounts (namespace pins, /dev/shm) so that nothing outlives the
        // test and the directory can go.
        let leftovers = mounts_under(self.dir.path());
        for m in leftovers.iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A tmpfs mounted at `dir` (made), shared: its copies in other mount
/// namespaces are its peers.
pub fn shared_mount(dir: &Path) -> PathBuf {
    use nix::mount::{MsFlags, mount};
    std::fs::create_dir_all(dir).expect("mount point");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .expect("tmpfs");
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .expect("shared");
    dir.to_path_buf()
}

/// Mount points under `dir` (not `dir` itself: berthd's state directory
/// is a bind mount of itself), in mount order.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    // The table names mounts by their real paths.
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir = real.as_path();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir) && Path::new(m) != dir)
        .map(str::to_string)
        .collect()
}

/// Detaches every mount under berthd's `state` and the directory's own
/// (the tree of them), as a reboot loses them.
pub fn unmount_state(state: &Path) {
    for m in mounts_under(state).iter().rev() {
        nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH).expect("umount");
    }
    let _ = nix::mount::umount2(state, nix::mount::MntFlags::MNT_DETACH);
}

/// A gRPC channel over a unix socket.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is required by tonic and ignored by the connector.
    Endpoint::from_static("http://berth.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// Pids of the live berth-monitor processes serving the berthd whose state
/// dir is `state` (it is on their command line).
pub fn monitor_pids(state: &Path) -> Vec<u32> {
    let state = state.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = String::from_utf8_lossy(&cmdline(*pid)).into_owned();
            cmd.contains("berth-monitor") && cmd.contains(&state)
        })
        .collect()
}

/// `/proc/<pid>/cmdline`. A process that is executing a new program (the
/// monitor becoming the pump) shows an empty one until the kernel has
/// laid out its arguments; that is read again for up to 2 s. Kernel
/// threads and zombies, always empty, are not.
pub fn cmdline(pid: u32) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmd.is_empty() || Instant::now() > deadline {
            return cmd;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return cmd;
        };
        // After the `(comm)`: state, ppid, pgrp, session, tty, tpgid, flags.
        let mut f = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let state = f.next().unwrap_or("Z");
        let flags: u64 = f.nth(5).and_then(|v| v.parse().ok()).unwrap_or(0);
        const PF_KTHREAD: u64 = 0x0020_0000;
        if state == "Z" || state == "X" || flags & PF_KTHREAD != 0 {
            return cmd;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The kB figures of `key` (`VmRSS:`, `Pss:`) in a /proc file such as
/// `/proc/<pid>/status` or `smaps_rollup`, summed.
pub fn proc_kb(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(key))
        .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .sum()
}

/// A process's user + system CPU time so far, in seconds (all its
/// threads; 0 if it is gone).
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime
    // are the 12th and 13th of those, in clock ticks (USER_HZ, 100 on
    // Linux whatever the kernel's own tick).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (n(11) + n(12)) as f64 / 100.0
}

/// Runs `openssl` (Debian's package) in `dir`; returns its stdout.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
pub fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        openssl(dir, args);
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=berth-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}
