//! Reading and changing a cgroup's files, on cgroup v1 (one hierarchy per
//! controller under /sys/fs/cgroup/<controller>) and v2 (the unified
//! hierarchy at /sys/fs/cgroup). Paths are the OCI `cgroupsPath` form
//! (`/kubepods/pod1/berth-<id>`). Tested on v1; v2 is written to the
//! kernel's cgroup-v2 documentation.

use std::path::{Path, PathBuf};

use cri_api::v1::LinuxContainerResources;

const ROOT: &str = "/sys/fs/cgroup";

/// At or above this, a v1 memory limit means "no limit" (the kernel's
/// PAGE_COUNTER_MAX in bytes is just under 2^63).
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    V1,
    V2,
}

pub fn mode() -> Mode {
    if Path::new(ROOT).join("cgroup.controllers").is_file() {
        Mode::V2
    } else {
        Mode::V1
    }
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

/// One cgroup, by its path relative to every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    mode: Mode,
    rel: PathBuf,
}

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

impl Cgroup {
    pub fn new(path: &str) -> Option<Cgroup> {
        let rel = path.trim_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
            return None;
        }
        Some(Cgroup {
            mode: mode(),
            rel: PathBuf::from(rel),
        })
    }

    /// The directory of `controller` (v1) or the cgroup (v2).
    fn dir(&self, controller: &str) -> PathBuf {
        match self.mode {
            Mode::V2 => Path::new(ROOT).join(&self.rel),
            Mode::V1 => {
                let c = match controller {
                    // cpu and cpuacct are usually co-mounted; either name works.
                    "cpuacct" if !Path::new(ROOT).join("cpuacct").exists() => "cpu,cpuacct",
                    c => c,
                };
                Path::new(ROOT).join(c).join(&self.rel)
            }
        }
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller).join(file)).ok()
    }

    fn read_u64(&self, controller: &str, file: &str) -> Option<u64> {
        self.read(controller, file)?.trim().parse().ok()
    }

    /// Does the cgroup exist (in the memory hierarchy, or at all on v2)?
    pub fn exists(&self) -> bool {
        self.dir("memory").is_dir()
    }

    /// CPU time used, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        match self.mode {
            Mode::V1 => self.read_u64("cpuacct", "cpuacct.usage"),
            Mode::V2 => stat_value(&self.read("cpu", "cpu.stat")?, "usage_usec").map(|u| u * 1000),
        }
    }

    pub fn memory(&self) -> Option<Memory> {
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
                if let Some(memsw) = self.read_u64("memory", "memory.memsw.usage_in_bytes") {
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
                m.swap_usage = self.read_u64("memory", "memory.swap.current");
                m.swap_limit = self.read_u64("memory", "memory.swap.max");
            }
        }
        Some(m)
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
                    // The conversion runc and the kubelet use.
                    let shares = r.cpu_shares.clamp(2, 262_144) as u64;
                    put(
                        "cpu",
                        "cpu.weight",
                        (1 + ((shares - 2) * 9999) / 262_142).to_string(),
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
    Ok(())
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
    fn stat_values_by_key() {
        let s = "cache 10\nrss 20\ntotal_rss 30\ntotal_inactive_file 5\n";
        assert_eq!(stat_value(s, "rss"), Some(20));
        assert_eq!(stat_value(s, "total_rss"), Some(30));
        assert_eq!(stat_value(s, "swap"), None);
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
                    "39".to_string()
                ),
                ("/sys/fs/cgroup/p/c/cpu.max".into(), "50000 100000".into()),
                ("/sys/fs/cgroup/p/c/memory.max".into(), "67108864".into()),
            ]
        );
        let v1 = Cgroup {
            mode: Mode::V1,
            rel: "p/c".into(),
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
