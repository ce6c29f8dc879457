//! Reading and changing a cgroup's files, on cgroup v1 (one hierarchy per
//! controller under /sys/fs/cgroup/<controller>) and v2 (the unified
//! hierarchy at /sys/fs/cgroup). Paths are the OCI `cgroupsPath` form
//! (`/kubepods/pod1/berth-<id>`). Tested on v1; v2 is written to the
//! kernel's cgroup-v2 documentation.

use std::path::{Path, PathBuf};

use cri_api::v1::{LinuxContainerResources, PsiData, PsiStats};

const ROOT: &str = "/sys/fs/cgroup";

/// At or above this, a v1 memory limit means "no limit" (the kernel's
/// PAGE_COUNTER_MAX in bytes is just under 2^63).
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    V1,
    V2,
}

/// The node's cgroup mode, looked at once (it does not change while
/// berthd runs).
pub fn mode() -> Mode {
    static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        if Path::new(ROOT).join("cgroup.controllers").is_file() {
            Mode::V2
        } else {
            Mode::V1
        }
    })
}

/// Does v1's memory controller account swap (`memory.memsw.*`, a boot
/// option)? Looked at once: without it, no cgroup has those files.
fn swap_accounted() -> bool {
    static MEMSW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MEMSW.get_or_init(|| {
        Path::new(ROOT)
            .join("memory/memory.memsw.usage_in_bytes")
            .exists()
    })
}

/// v1's cpuacct hierarchy: `cpuacct`, or `cpu,cpuacct` where only the
/// co-mount's own name exists. Looked at once.
fn cpuacct_v1() -> &'static str {
    static NAME: std::sync::OnceLock<&str> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        if Path::new(ROOT).join("cpuacct").exists() {
            "cpuacct"
        } else {
            "cpu,cpuacct"
        }
    })
}

/// Whether the hierarchy berth uses has the hugetlb controller (on a
/// hybrid host it may be on the unified hierarchy only, which v1 mode
/// does not use).
pub fn has_hugetlb() -> bool {
    match mode() {
        Mode::V2 => std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "hugetlb")),
        Mode::V1 => Path::new(ROOT).join("hugetlb").is_dir(),
    }
}

/// Is systemd PID 1 (what `sd_booted()` checks)?
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// `auto` as this node's driver: systemd where systemd is PID 1 on the
/// unified hierarchy, else cgroupfs.
pub fn resolve_driver(driver: crate::config::CgroupDriver) -> crate::config::CgroupDriver {
    use crate::config::CgroupDriver;
    match driver {
        CgroupDriver::Auto if systemd_booted() && mode() == Mode::V2 => CgroupDriver::Systemd,
        CgroupDriver::Auto => CgroupDriver::Cgroupfs,
        d => d,
    }
}

/// Can this node honour the configured driver? systemd's needs systemd as
/// PID 1 on the unified hierarchy (its scopes are made over D-Bus).
pub fn check_driver(driver: crate::config::CgroupDriver) -> Result<(), String> {
    if driver != crate::config::CgroupDriver::Systemd {
        return Ok(());
    }
    if !systemd_booted() {
        return Err(
            "key `cgroup_driver`: \"systemd\" needs systemd as PID 1, and this \
             node has none (/run/systemd/system is missing): set cgroup_driver = \
             \"cgroupfs\" and the kubelet's cgroupDriver: cgroupfs"
                .into(),
        );
    }
    if mode() != Mode::V2 {
        return Err(
            "key `cgroup_driver`: berth's systemd driver needs the unified \
             cgroup hierarchy (cgroup v2), and this node boots v1: boot with \
             systemd.unified_cgroup_hierarchy=1, or set cgroup_driver = \"cgroupfs\""
                .into(),
        );
    }
    Ok(())
}

/// A pod's `cgroup_parent` in the form the driver expects: a path for
/// cgroupfs (`/kubepods/pod1`), a slice name for systemd
/// (`kubepods-besteffort-pod1.slice`), as the kubelet sends them when set
/// to the same driver; returned as berth keeps it. Under systemd a path
/// whose last element is a slice (`/test.slice`, as critest sends) means
/// that slice, as with containerd and CRI-O. Any other mismatch means the
/// kubelet's cgroupDriver differs from berth's: refused with the fix.
pub fn check_parent(driver: crate::config::CgroupDriver, parent: &str) -> Result<String, String> {
    if parent.is_empty() {
        return Ok(String::new());
    }
    let slice = parent.ends_with(".slice") && !parent.contains('/');
    let base = parent
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    match driver {
        crate::config::CgroupDriver::Systemd if !slice && base.ends_with(".slice") => {
            check_parent(driver, base)
        }
        crate::config::CgroupDriver::Systemd if !slice => Err(format!(
            "cgroup_parent {parent:?} is a path, but berth uses the systemd cgroup driver, \
             which takes a slice (e.g. kubepods-besteffort-pod<uid>.slice): set the \
             kubelet's cgroupDriver: systemd"
        )),
        crate::config::CgroupDriver::Cgroupfs if slice => Err(format!(
            "cgroup_parent {parent:?} is a systemd slice, but berth uses the cgroupfs \
             driver: set cgroup_driver = \"systemd\" in berth's config (or the kubelet's \
             cgroupDriver: cgroupfs)"
        )),
        _ => berth_runtime::cgroup_rel(parent)
            .map(|_| parent.to_string())
            .ok_or_else(|| format!("cgroup_parent {parent:?} is not a valid cgroup")),
    }
}

/// One cgroup, by its path relative to every hierarchy. Its directories
/// are opened once each, on first read, and files read relative to them:
/// a stats call reads several files of each cgroup, and the path walk
/// through cgroupfs is most of what a read costs. One made [`Cgroup::kept`]
/// also keeps the files it read open and reads them again from offset 0
/// (a cgroup file is a seq file, shown afresh by a read there): opening
/// and closing a cgroupfs file costs more than reading it.
#[derive(Debug, Clone)]
pub struct Cgroup {
    mode: Mode,
    rel: PathBuf,
    dirs: [std::sync::OnceLock<Option<std::sync::Arc<std::os::fd::OwnedFd>>>; DIR_SLOTS],
    /// The files kept open (None: none are).
    kept: Option<std::sync::Arc<std::sync::Mutex<Vec<KeptFile>>>>,
}

/// A cgroup file kept open, by controller and name; it counts against
/// [`kept_budget`] while it lives.
#[derive(Debug)]
struct KeptFile {
    controller: &'static str,
    name: String,
    fd: std::os::fd::OwnedFd,
}

/// Files kept open by every [`Cgroup`], and how many may be: half the
/// descriptors berthd may open (`RLIMIT_NOFILE`'s soft limit), so that a
/// berthd started with a shell's 1,024 keeps 512 and opens the rest on
/// each read as before; 65,536 at most.
static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn kept_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| (soft / 2).min(65_536) as usize)
    })
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The controllers whose directories a [`Cgroup`] keeps open (v1 has one
/// per hierarchy; v2 uses the first for all).
const DIR_CONTROLLERS: [&str; 5] = ["memory", "cpuacct", "blkio", "pids", "cpu"];
const DIR_SLOTS: usize = DIR_CONTROLLERS.len();

/// Memory figures the kubelet asks for, in bytes (faults in events).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Memory {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// None: no limit.
    pub limit: Option<u64>,
    pub swap_usage: Option<u64>,
    pub swap_limit: Option<u64>,
}

/// A cgroup file's text, read from offset 0 (so a file kept open is
/// shown afresh). Plain reads into room for a whole memory.stat
/// (read_to_string would first stat and seek the file for a size that
/// cgroupfs does not know). Every file read here is one record of a seq
/// file, which a read hands over whole when there is room for it: a read
/// that leaves room is the whole file, and the read that would return its
/// end is not needed.
fn read_whole(fd: &std::os::fd::OwnedFd) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match nix::sys::uio::pread(fd, &mut buf[len..], len as i64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

impl Cgroup {
    /// The cgroup of an OCI `cgroupsPath` of either driver, or of a pod's
    /// cgroup parent (a path, or a systemd slice).
    pub fn new(path: &str) -> Option<Cgroup> {
        Some(Cgroup {
            mode: mode(),
            rel: berth_runtime::cgroup_rel(path)?,
            dirs: Default::default(),
            kept: None,
        })
    }

    /// This cgroup, keeping the files it reads open (for one held between
    /// stats calls).
    pub fn kept(mut self) -> Cgroup {
        self.kept = Some(Default::default());
        self
    }

    /// The directory of `controller` (v1) or the cgroup (v2).
    fn dir(&self, controller: &str) -> PathBuf {
        match self.mode {
            Mode::V2 => Path::new(ROOT).join(&self.rel),
            Mode::V1 => {
                let c = match controller {
                    "cpuacct" => cpuacct_v1(),
                    c => c,
                };
                Path::new(ROOT).join(c).join(&self.rel)
            }
        }
    }

    /// The open directory of `controller` (None: the cgroup is not there).
    fn dir_fd(&self, controller: &str) -> Option<std::sync::Arc<std::os::fd::OwnedFd>> {
        use nix::fcntl::OFlag;
        let open = || {
            nix::fcntl::open(
                &self.dir(controller),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
            .map(std::sync::Arc::new)
        };
        let slot = match self.mode {
            Mode::V2 => Some(0),
            Mode::V1 => DIR_CONTROLLERS.iter().position(|c| *c == controller),
        };
        match slot {
            Some(i) => self.dirs[i].get_or_init(open).clone(),
            None => open(),
        }
    }

    fn read(&self, controller: &'static str, file: &str) -> Option<String> {
        use nix::fcntl::OFlag;
        if let Some(kept) = &self.kept {
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = kept
                .iter()
                .position(|k| k.controller == controller && k.name == file)
            {
                match read_whole(&kept[i].fd) {
                    Some(text) => return Some(text),
                    // Gone (the cgroup was removed): opened again below.
                    None => drop(kept.swap_remove(i)),
                }
            }
        }
        let dir = self.dir_fd(controller)?;
        let fd = nix::fcntl::openat(
            &*dir,
            file,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        let text = read_whole(&fd)?;
        if let Some(kept) = &self.kept {
            use std::sync::atomic::Ordering;
            if KEPT.fetch_add(1, Ordering::Relaxed) < kept_budget() {
                kept.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(KeptFile {
                        controller,
                        name: file.to_string(),
                        fd,
                    });
            } else {
                KEPT.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Some(text)
    }

    fn read_u64(&self, controller: &'static str, file: &str) -> Option<u64> {
        self.read(controller, file)?.trim().parse().ok()
    }

    /// Does the cgroup exist (in the memory hierarchy, or at all on v2)?
    pub fn exists(&self) -> bool {
        self.dir_fd("memory").is_some()
    }

    /// CPU time used, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        match self.mode {
            Mode::V1 => self.read_u64("cpuacct", "cpuacct.usage"),
            Mode::V2 => stat_value(&self.read("cpu", "cpu.stat")?, "usage_usec").map(|u| u * 1000),
        }
    }

    /// Memory figures; the swap ones only with `swap` (a pod's stats have
    /// none, and they cost two reads).
    pub fn memory(&self, swap: bool) -> Option<Memory> {
        let mut m = Memory::default();
        match self.mode {
            Mode::V1 => {
                m.usage = self.read_u64("memory", "memory.usage_in_bytes")?;
                let stat = self.read("memory", "memory.stat").unwrap_or_default();
                let v = |k: &str| stat_value(&stat, k).unwrap_or(0);
                let inactive = v("total_inactive_file");
                m.working_set = m.usage.saturating_sub(inactive);
                m.rss = v("total_rss");
                m.page_faults = v("total_pgfault");
                m.major_page_faults = v("total_pgmajfault");
                m.limit = self
                    .read_u64("memory", "memory.limit_in_bytes")
                    .filter(|l| *l < V1_UNLIMITED);
                if let Some(memsw) = (swap && swap_accounted())
                    .then(|| self.read_u64("memory", "memory.memsw.usage_in_bytes"))
                    .flatten()
                {
                    m.swap_usage = Some(memsw.saturating_sub(m.usage));
                    m.swap_limit = self
                        .read_u64("memory", "memory.memsw.limit_in_bytes")
                        .filter(|l| *l < V1_UNLIMITED)
                        .map(|l| l.saturating_sub(m.limit.unwrap_or(0)));
                }
            }
            Mode::V2 => {
                m.usage = self.read_u64("memory", "memory.current")?;
                let stat = self.read("memory", "memory.stat").unwrap_or_default();
                let v = |k: &str| stat_value(&stat, k).unwrap_or(0);
                m.working_set = m.usage.saturating_sub(v("inactive_file"));
                m.rss = v("anon");
                m.page_faults = v("pgfault");
                m.major_page_faults = v("pgmajfault");
                m.limit = self.read_u64("memory", "memory.max");
                if swap {
                    m.swap_usage = self.read_u64("memory", "memory.swap.current");
                    m.swap_limit = self.read_u64("memory", "memory.swap.max");
                }
            }
        }
        Some(m)
    }

    /// Pressure stall information of `resource` (`cpu`, `memory`, `io`):
    /// v2's `<resource>.pressure` (v1 has none per cgroup). Totals in
    /// microseconds, as the kernel counts them.
    pub fn psi(&self, resource: &'static str) -> Option<PsiStats> {
        if self.mode != Mode::V2 {
            return None;
        }
        parse_psi(&self.read(resource, &format!("{resource}.pressure"))?)
    }

    /// Bytes read and written by the cgroup's processes on block devices:
    /// v2's `io.stat` (`rbytes`, `wbytes`), v1's
    /// `blkio.throttle.io_service_bytes_recursive` (`Read`, `Write`).
    pub fn io_bytes(&self) -> Option<(u64, u64)> {
        let (mut read, mut write) = (0u64, 0u64);
        match self.mode {
            Mode::V2 => {
                for field in self.read("io", "io.stat")?.split_whitespace() {
                    match field.split_once('=') {
                        Some(("rbytes", n)) => read += n.parse::<u64>().unwrap_or(0),
                        Some(("wbytes", n)) => write += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            Mode::V1 => {
                let text = self.read("blkio", "blkio.throttle.io_service_bytes_recursive")?;
                for l in text.lines() {
                    match l.split_whitespace().collect::<Vec<_>>()[..] {
                        [_, "Read", n] => read += n.parse::<u64>().unwrap_or(0),
                        [_, "Write", n] => write += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
        Some((read, write))
    }

    /// Processes (tasks, on v1's pids controller) in the cgroup.
    pub fn pids(&self) -> Option<u64> {
        self.read_u64("pids", "pids.current")
    }

    /// The files `r` changes, with their new values, in the order to write
    /// them. Fields at zero (or empty) are left as they are, as the CRI
    /// means. A `unified` key that is not a plain cgroup file name is an
    /// error.
    pub fn writes_for(
        &self,
        r: &LinuxContainerResources,
    ) -> Result<Vec<(PathBuf, String)>, String> {
        let mut w = Vec::new();
        let mut put = |controller: &str, file: &str, value: String| {
            w.push((self.dir(controller).join(file), value));
        };
        match self.mode {
            Mode::V1 => {
                if r.cpu_shares > 0 {
                    put("cpu", "cpu.shares", r.cpu_shares.to_string());
                }
                if r.cpu_period > 0 {
                    put("cpu", "cpu.cfs_period_us", r.cpu_period.to_string());
                }
                if r.cpu_quota != 0 {
                    put("cpu", "cpu.cfs_quota_us", r.cpu_quota.to_string());
                }
                if !r.cpuset_cpus.is_empty() {
                    put("cpuset", "cpuset.cpus", r.cpuset_cpus.clone());
                }
                if !r.cpuset_mems.is_empty() {
                    put("cpuset", "cpuset.mems", r.cpuset_mems.clone());
                }
                let memsw = self.dir("memory").join("memory.memsw.limit_in_bytes");
                let swap = r.memory_swap_limit_in_bytes;
                if r.memory_limit_in_bytes > 0 {
                    let mem = r.memory_limit_in_bytes.to_string();
                    let current_memsw = std::fs::read_to_string(&memsw)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok());
                    // memsw must stay >= the memory limit: raise it first,
                    // lower it last.
                    match (swap > 0 && memsw.exists(), current_memsw) {
                        (true, Some(cur)) if swap > cur => {
                            put("memory", "memory.memsw.limit_in_bytes", swap.to_string());
                            put("memory", "memory.limit_in_bytes", mem);
                        }
                        (true, _) => {
                            put("memory", "memory.limit_in_bytes", mem);
                            put("memory", "memory.memsw.limit_in_bytes", swap.to_string());
                        }
                        (false, _) => put("memory", "memory.limit_in_bytes", mem),
                    }
                }
                for h in r.hugepage_limits.iter().filter(|_| has_hugetlb()) {
                    put(
                        "hugetlb",
                        &format!("hugetlb.{}.limit_in_bytes", h.page_size),
                        h.limit.to_string(),
                    );
                }
            }
            Mode::V2 => {
                if r.cpu_shares > 0 {
                    put(
                        "cpu",
                        "cpu.weight",
                        shares_to_weight(r.cpu_shares as u64).to_string(),
                    );
                }
                if r.cpu_quota != 0 || r.cpu_period > 0 {
                    let quota = if r.cpu_quota > 0 {
                        r.cpu_quota.to_string()
                    } else {
                        "max".to_string()
                    };
                    let period = if r.cpu_period > 0 {
                        r.cpu_period
                    } else {
                        100_000
                    };
                    put("cpu", "cpu.max", format!("{quota} {period}"));
                }
                if !r.cpuset_cpus.is_empty() {
                    put("cpuset", "cpuset.cpus", r.cpuset_cpus.clone());
                }
                if !r.cpuset_mems.is_empty() {
                    put("cpuset", "cpuset.mems", r.cpuset_mems.clone());
                }
                if r.memory_limit_in_bytes > 0 {
                    put("memory", "memory.max", r.memory_limit_in_bytes.to_string());
                    if r.memory_swap_limit_in_bytes > 0 {
                        let swap = r
                            .memory_swap_limit_in_bytes
                            .saturating_sub(r.memory_limit_in_bytes);
                        put("memory", "memory.swap.max", swap.to_string());
                    }
                }
                for h in r.hugepage_limits.iter().filter(|_| has_hugetlb()) {
                    put(
                        "hugetlb",
                        &format!("hugetlb.{}.max", h.page_size),
                        h.limit.to_string(),
                    );
                }
                for (k, v) in &r.unified {
                    let plain = k.contains('.')
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
                    if !plain || k.starts_with('.') {
                        return Err(format!("unified: {k:?} is not a cgroup file name"));
                    }
                    put("", k, v.clone());
                }
            }
        }
        Ok(w)
    }
}

/// CPU shares (v1, 2..=262144) as v2's `cpu.weight` (1..=10000): the
/// quadratic-in-log2 conversion of runc >= 1.3.2, crun >= 1.23 and
/// libcontainer (which sets the weight at creation for `builtin`), so an
/// update gives what creation gave: 2 -> 1, 1024 -> 100, 262144 -> 10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
        }
    }
}

/// Writes each file in order; on the first failure, puts back what was
/// already changed (last first) and returns the kernel's reason.
pub fn apply(writes: &[(PathBuf, String)]) -> Result<(), String> {
    let mut done: Vec<(&Path, String)> = Vec::new();
    for (path, value) in writes {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let old = std::fs::read_to_string(path)
            .map_err(|e| format!("{name}: {e}"))?
            .trim()
            .to_string();
        if let Err(e) = std::fs::write(path, value) {
            for (p, v) in done.iter().rev() {
                if let Err(e) = std::fs::write(p, v) {
                    tracing::warn!("restoring {}: {e}", p.display());
                }
            }
            return Err(format!("{name} = {value}: {e}"));
        }
        done.push((path, old));
    }
    Ok(())
}

/// A `*.pressure` file: `some` and `full` lines of
/// `avg10=.. avg60=.. avg300=.. total=..`.
fn parse_psi(text: &str) -> Option<PsiStats> {
    let line = |kind: &str| -> Option<PsiData> {
        let l = text.lines().find(|l| l.starts_with(kind))?;
        let mut d = PsiData::default();
        for field in l.split_whitespace().skip(1) {
            match field.split_once('=')? {
                ("avg10", v) => d.avg10 = v.parse().ok()?,
                ("avg60", v) => d.avg60 = v.parse().ok()?,
                ("avg300", v) => d.avg300 = v.parse().ok()?,
                ("total", v) => d.total = v.parse().ok()?,
                _ => {}
            }
        }
        Some(d)
    };
    let some = line("some ")?;
    Some(PsiStats {
        full: line("full "),
        some: Some(some),
    })
}

/// `key value` lines (memory.stat, cpu.stat): the value of `key`.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Bytes and inodes used under `dir` (a container's writable layer), not
/// following symlinks or crossing into other filesystems.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            // Hard links count once.
            if m.nlink() > 1 && !seen.insert(m.ino()) {
                continue;
            }
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// The cgroup hierarchies on this node: the v2 root, or each v1
/// controller's mount (co-mounted links skipped), and on a hybrid node the
/// `name=systemd` and unified hierarchies too: runc makes a container's
/// cgroup, and so the pod's, in those as well.
pub fn roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").is_file() {
        return vec![root.to_path_buf()];
    }
    [
        "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb",
        "systemd", "unified",
    ]
    .iter()
    .map(|c| root.join(c))
    .filter(|p| p.is_dir())
    .collect()
}

/// Creates `parent` in every hierarchy where it is missing, adding each
/// directory it made to `made` (shallowest first): those, and only those,
/// berth removes. A cgroup the kubelet made stays the kubelet's.
pub fn create_parent(parent: &str, made: &mut Vec<String>) -> Result<(), String> {
    // A slice is systemd's to make (when the first scope in it starts) and
    // to remove.
    if parent.ends_with(".slice") && !parent.contains('/') {
        return Ok(());
    }
    let rel = parent.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(format!("invalid cgroup_parent {parent:?}"));
    }
    for root in roots() {
        let mut sub = PathBuf::new();
        for c in rel.split('/') {
            sub.push(c);
            let p = root.join(&sub);
            match std::fs::create_dir(&p) {
                Ok(()) => {
                    let s = sub.to_string_lossy().into_owned();
                    if !made.contains(&s) {
                        made.push(s);
                    }
                }
                // There already (or just made by someone else): not ours.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cgroup {}: {e}", p.display())),
            }
        }
    }
    if mode() == Mode::V2 {
        enable_controllers(Path::new(rel));
    }
    Ok(())
}

/// On v2, a cgroup has a controller's files only when its parent enables it
/// in `cgroup.subtree_control`: enable every controller each ancestor of
/// `rel` has, from the root down, as runc does. Best effort: a parent that
/// holds processes refuses (the kernel's no-internal-process rule), and
/// then the pod has what its parent gives it.
fn enable_controllers(rel: &Path) {
    let mut dir = PathBuf::from(ROOT);
    for c in rel.components() {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        for ctl in available.split_whitespace() {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{ctl}"));
        }
        dir.push(c);
    }
}

/// Puts a pod's infra process (the holder of its shared PID namespace) in
/// a cgroup of its own beside its containers', accounted to the pod:
/// systemd driver, the transient `berth-pod-<id>.scope` with `Delegate=yes`
/// in the pod's slice, made over D-Bus (systemd stops it when the process
/// dies); cgroupfs, `<parent>/berth-pod-<id>` in every hierarchy, added to
/// `made` so that it goes with the pod's cgroups.
pub fn place_infra(
    pid: i32,
    parent: &str,
    pod_id: &str,
    systemd: bool,
    made: &mut Vec<String>,
) -> Result<(), String> {
    let name = format!("pod-{pod_id}");
    if systemd {
        use libcgroups::common::CgroupManager;
        let slice = if parent.is_empty() {
            "system.slice"
        } else {
            parent
        };
        let unit = format!("berth-{name}.scope");
        let manager = libcgroups::systemd::manager::Manager::new(
            ROOT.into(),
            format!("{slice}:berth:{name}").into(),
            name,
            true,
            std::time::Duration::from_secs(5),
        )
        .map_err(|e| format!("{unit}: {e}"))?;
        return manager
            .add_task(nix029::unistd::Pid::from_raw(pid))
            .map_err(|e| format!("starting {unit} in {slice}: {e}"));
    }
    let parent = parent.trim_end_matches('/');
    let path = format!(
        "{}/berth-{name}",
        if parent.is_empty() { "/berth" } else { parent }
    );
    create_parent(&path, made)?;
    if mode() == Mode::V1 {
        inherit_cpuset(Path::new(path.trim_start_matches('/')));
    }
    for root in roots() {
        let procs = root.join(path.trim_start_matches('/')).join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| format!("{}: {e}", procs.display()))?;
    }
    Ok(())
}

/// v1's cpuset takes no task until its `cpuset.cpus` and `cpuset.mems` are
/// set (ENOSPC): each new directory down `rel` gets its parent's, as runc
/// does.
fn inherit_cpuset(rel: &Path) {
    let mut dir = Path::new(ROOT).join("cpuset");
    for c in rel.components() {
        let child = dir.join(c);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = std::fs::read_to_string(child.join(file)).unwrap_or_default();
            if own.trim().is_empty()
                && let Ok(theirs) = std::fs::read_to_string(dir.join(file))
            {
                let _ = std::fs::write(child.join(file), theirs.trim());
            }
        }
        dir = child;
    }
}

/// Removes the cgroup directories berth made, deepest first, in every
/// hierarchy (the kernel refuses non-empty ones, which then stay).
pub fn remove_made(made: &[String]) {
    for root in roots() {
        for rel in made.iter().rev() {
            let _ = std::fs::remove_dir(root.join(rel));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_cgroup_reads_its_open_files_afresh_and_lets_a_removed_one_go() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let rel = format!("/berth-unit-kept-{}", std::process::id());
        let cg = Cgroup::new(&rel).expect("path").kept();
        let dir = cg.dir("memory");
        std::fs::create_dir(&dir).expect("a cgroup");
        let limit = |cg: &Cgroup| match cg.mode {
            Mode::V1 => cg.read_u64("memory", "memory.limit_in_bytes"),
            Mode::V2 => cg.read_u64("memory", "memory.max").or(Some(u64::MAX)),
        };
        let count = |cg: &Cgroup| cg.kept.as_ref().map_or(0, |k| k.lock().unwrap().len());
        let file = match cg.mode {
            Mode::V1 => "memory.limit_in_bytes",
            Mode::V2 => "memory.max",
        };
        std::fs::write(dir.join(file), "67108864").expect("limit");
        assert_eq!(limit(&cg), Some(64 << 20));
        assert_eq!(count(&cg), 1, "the file is kept open");
        // Read again through the same descriptor: the new value.
        std::fs::write(dir.join(file), "33554432").expect("limit");
        assert_eq!(limit(&cg), Some(32 << 20));
        assert_eq!(count(&cg), 1);
        // Removed: the kept file reads nothing and is let go.
        std::fs::remove_dir(&dir).expect("rmdir");
        assert_eq!(cg.read("memory", file), None);
        assert_eq!(count(&cg), 0);
    }

    #[test]
    fn parents_in_the_drivers_forms() {
        use crate::config::CgroupDriver::{Cgroupfs, Systemd};
        let ok = |d, p: &str| check_parent(d, p).unwrap();
        assert_eq!(ok(Systemd, ""), "");
        assert_eq!(ok(Systemd, "kubepods-pod1.slice"), "kubepods-pod1.slice");
        // A path ending in a slice is that slice (critest sends "/test.slice").
        assert_eq!(ok(Systemd, "/test.slice"), "test.slice");
        assert_eq!(ok(Systemd, "/a/b/kubepods.slice/"), "kubepods.slice");
        assert!(check_parent(Systemd, "/kubepods/pod1").is_err());
        assert_eq!(ok(Cgroupfs, "/kubepods/pod1"), "/kubepods/pod1");
        assert_eq!(ok(Cgroupfs, "/test.slice"), "/test.slice");
        assert!(check_parent(Cgroupfs, "kubepods-pod1.slice").is_err());
    }

    #[test]
    fn stat_values_by_key() {
        let s = "cache 10\nrss 20\ntotal_rss 30\ntotal_inactive_file 5\n";
        assert_eq!(stat_value(s, "rss"), Some(20));
        assert_eq!(stat_value(s, "total_rss"), Some(30));
        assert_eq!(stat_value(s, "swap"), None);
    }

    #[test]
    fn shares_become_weights_as_libcontainer_sets_them() {
        let w: Vec<u64> = [0, 2, 512, 1024, 262_144].map(shares_to_weight).to_vec();
        assert_eq!(w, [0, 1, 59, 100, 10_000]);
    }

    #[test]
    fn pressure_files_parse() {
        let p = parse_psi(
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.25 avg300=0.00 total=99\n",
        )
        .unwrap();
        let some = p.some.unwrap();
        assert_eq!((some.avg10, some.total), (1.5, 1234));
        assert_eq!(p.full.map(|f| (f.avg60, f.total)), Some((0.25, 99)));
        assert!(parse_psi("").is_none());
    }

    #[test]
    fn paths_that_climb_are_refused() {
        assert!(Cgroup::new("/a/../b").is_none());
        assert!(Cgroup::new("/").is_none());
        assert!(Cgroup::new("/kubepods/pod1/berth-x").is_some());
    }

    #[test]
    fn cri_resources_become_cgroup_writes() {
        let cg = Cgroup {
            mode: Mode::V2,
            rel: "p/c".into(),
            dirs: Default::default(),
            kept: None,
        };
        let r = LinuxContainerResources {
            cpu_shares: 1024,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let w: Vec<(String, String)> = cg
            .writes_for(&r)
            .unwrap()
            .into_iter()
            .map(|(p, v)| (p.display().to_string(), v))
            .collect();
        assert_eq!(
            w,
            [
                (
                    "/sys/fs/cgroup/p/c/cpu.weight".to_string(),
                    "100".to_string()
                ),
                ("/sys/fs/cgroup/p/c/cpu.max".into(), "50000 100000".into()),
                ("/sys/fs/cgroup/p/c/memory.max".into(), "67108864".into()),
            ]
        );
        let v1 = Cgroup {
            mode: Mode::V1,
            rel: "p/c".into(),
            dirs: Default::default(),
            kept: None,
        };
        let w: Vec<String> = v1
            .writes_for(&LinuxContainerResources {
                cpu_quota: -1,
                cpuset_cpus: "0".into(),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|(p, v)| format!("{}={v}", p.display()))
            .collect();
        assert_eq!(
            w,
            [
                "/sys/fs/cgroup/cpu/p/c/cpu.cfs_quota_us=-1",
                "/sys/fs/cgroup/cpuset/p/c/cpuset.cpus=0"
            ]
        );
    }
}
