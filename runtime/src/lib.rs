//! What berthd and `berth-monitor` share: the contract between them
//! ([`protocol`]: the monitor's command line, the control words, the
//! attach frames, the state files), the CRI log format the monitor
//! writes, how the monitor reaps its container and records its exit
//! ([`reap`]), and the mount calls both make ([`mounts`]).

use std::path::{Path, PathBuf};

pub mod mounts;
pub mod protocol;
pub mod reap;

/// Is an OCI `linux.cgroupsPath` in the systemd driver's form,
/// `slice:prefix:name`, as runc and libcontainer read it?
pub fn is_systemd_path(path: &str) -> bool {
    !path.starts_with('/') && path.split(':').count() == 3
}

/// Where a cgroup lives below a hierarchy's root: an OCI `cgroupsPath` of
/// either driver (`/a/b`, or `a-b.slice:berth:id`, which systemd places at
/// `a.slice/a-b.slice/berth-id.scope`), or a pod's cgroup parent (a path,
/// or a slice name). `None` for a path that climbs or names nothing.
pub fn cgroup_rel(path: &str) -> Option<PathBuf> {
    let (slice, unit) = match path.split(':').collect::<Vec<_>>()[..] {
        [slice, prefix, name] if is_systemd_path(path) => {
            let unit = if name.ends_with(".slice") {
                name.to_string()
            } else {
                format!("{prefix}-{name}.scope")
            };
            (slice, Some(unit))
        }
        _ if path.ends_with(".slice") && !path.contains('/') => (path, None),
        _ => {
            let rel = path.trim_matches('/');
            if rel.is_empty()
                || rel
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.is_empty())
            {
                return None;
            }
            return Some(PathBuf::from(rel));
        }
    };
    let mut rel = PathBuf::new();
    let name = slice.strip_suffix(".slice")?;
    // "-.slice" is the root slice; `a-b.slice` lives in `a.slice`.
    if name != "-" {
        let parts: Vec<&str> = name.split('-').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || p.contains('/') || *p == "..")
        {
            return None;
        }
        for i in 1..=parts.len() {
            rel.push(format!("{}.slice", parts[..i].join("-")));
        }
    }
    if let Some(unit) = unit {
        if unit.contains('/') || unit.starts_with('.') {
            return None;
        }
        rel.push(unit);
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// How many processes the OOM killer killed in the cgroup at `cgroups_path`
/// (as in an OCI spec's `linux.cgroupsPath`): v2's `memory.events`, else
/// v1's `memory.oom_control`.
pub fn oom_kills(cgroups_path: &str) -> u64 {
    read_oom_kills(cgroups_path).unwrap_or(0)
}

/// As [`oom_kills`]; None when the cgroup (or its file) is gone.
pub fn read_oom_kills(cgroups_path: &str) -> Option<u64> {
    let rel = cgroup_rel(cgroups_path)?;
    let root = Path::new("/sys/fs/cgroup");
    let (file, key) = if root.join("cgroup.controllers").is_file() {
        (root.join(rel).join("memory.events"), "oom_kill ")
    } else {
        (
            root.join("memory").join(rel).join("memory.oom_control"),
            "oom_kill ",
        )
    };
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|n| n.trim().parse().ok())
}

/// OOM kills in the parent of the cgroup at `cgroups_path` and below it:
/// v2's `memory.events` counts a subtree's. None on v1 or when unreadable.
pub fn parent_oom_kills(cgroups_path: &str) -> Option<u64> {
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").is_file() {
        return None;
    }
    let rel = cgroup_rel(cgroups_path)?;
    let file = root.join(rel.parent()?).join("memory.events");
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with nanoseconds, in UTC: `2026-11-23T11:00:00.123456789Z`.
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The longest line written as one CRI log entry; longer ones are split
/// into partial (`P`) entries, as containerd and CRI-O do.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Turns a stream's bytes into CRI log entries:
/// `<RFC3339Nano> <stdout|stderr> <F|P> <text>\n`.
pub struct LogStream {
    name: &'static str,
    pending: Vec<u8>,
}

impl LogStream {
    pub fn new(name: &'static str) -> LogStream {
        LogStream {
            name,
            pending: Vec::new(),
        }
    }

    /// Appends `data`; writes every complete line (and every full-size
    /// piece of a longer one) to `out`.
    pub fn feed(&mut self, data: &[u8], now_ns: i64, out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        loop {
            match self.pending.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LOG_LINE => {
                    let line: Vec<u8> = self.pending.drain(..=i).collect();
                    self.entry(&line[..i], 'F', now_ns, out);
                }
                _ if self.pending.len() > MAX_LOG_LINE => {
                    let part: Vec<u8> = self.pending.drain(..MAX_LOG_LINE).collect();
                    self.entry(&part, 'P', now_ns, out);
                }
                _ => return,
            }
        }
    }

    /// At end of stream: what is left is a last, unterminated line.
    pub fn finish(&mut self, now_ns: i64, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.entry(&rest, 'F', now_ns, out);
        }
    }

    fn entry(&self, text: &[u8], tag: char, now_ns: i64, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{} {} {tag} ", rfc3339_nano(now_ns), self.name).as_bytes());
        out.extend_from_slice(text);
        out.push(b'\n');
    }
}

/// Sets the size of the terminal whose master is `tty` (an attach or exec
/// client's resize).
pub fn resize_terminal(tty: &impl std::os::fd::AsRawFd, size: protocol::Resize) {
    let ws = nix::libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    unsafe {
        nix::libc::ioctl(tty.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_of_both_drivers() {
        let rel = |p| cgroup_rel(p).map(|r| r.display().to_string());
        assert_eq!(
            rel("/kubepods/pod1/berth-c").as_deref(),
            Some("kubepods/pod1/berth-c")
        );
        assert_eq!(
            rel("kubepods-burstable-pod1.slice:berth:c").as_deref(),
            Some(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/berth-c.scope"
            )
        );
        assert_eq!(rel("system.slice").as_deref(), Some("system.slice"));
        assert_eq!(rel("-.slice:berth:c").as_deref(), Some("berth-c.scope"));
        assert!(is_systemd_path("a.slice:berth:c") && !is_systemd_path("/a:b:c"));
        for bad in [
            "/",
            "/a/../b",
            "a--b.slice",
            "a.slice:berth:../x",
            "../x.slice",
        ] {
            assert_eq!(rel(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(1_795_429_565_930_318_148),
            "2026-11-23T10:26:05.930318148Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn log_lines_full_and_partial() {
        let mut s = LogStream::new("stdout");
        let mut out = Vec::new();
        s.feed(b"hello\nwor", 0, &mut out);
        s.feed(b"ld\n", 0, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text,
            "1970-01-01T00:00:00.000000000Z stdout F hello\n1970-01-01T00:00:00.000000000Z stdout F world\n"
        );
        out.clear();
        let long = vec![b'x'; MAX_LOG_LINE + 10];
        s.feed(&long, 0, &mut out);
        s.feed(b"\n", 0, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(" stdout P ") && lines[0].ends_with(&"x".repeat(100)));
        assert!(lines[1].ends_with(" stdout F xxxxxxxxxx"));
        out.clear();
        s.feed(b"tail", 0, &mut out);
        assert!(out.is_empty());
        s.finish(0, &mut out);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with(" stdout F tail\n")
        );
    }
}
