//! What the image store uses on its filesystem (`ImageFsInfo`), kept
//! incrementally: a finished snapshot (`snapshots/<chain>`) is
//! content-addressed and never changes once renamed into place, so it is
//! walked once and remembered by its directory's inode; a call then costs
//! a read of the store's directories and a stat of each entry, not a walk
//! of every file of every layer. Blobs are single files (a stat each);
//! downloads and unpacks in progress are walked each time.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone)]
pub struct Usage {
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

/// Bytes and inodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    bytes: u64,
    inodes: u64,
}

impl Count {
    fn add(&mut self, m: &std::fs::Metadata) {
        self.bytes += m.blocks() * 512;
        self.inodes += 1;
    }

    fn plus(&mut self, o: Count) {
        self.bytes += o.bytes;
        self.inodes += o.inodes;
    }
}

/// The finished snapshots measured so far: name -> (directory inode, its
/// count); and the store's mount point, found once (the mount table of a
/// busy node is thousands of lines).
#[derive(Default)]
pub struct Snapshots {
    measured: Mutex<HashMap<String, (u64, Count)>>,
    mountpoint: std::sync::OnceLock<PathBuf>,
}

impl Snapshots {
    /// The usage of the store at `root`.
    pub fn usage(&self, root: &Path) -> std::io::Result<Usage> {
        let mut total = Count::default();
        total.add(&std::fs::symlink_metadata(root)?);
        for e in std::fs::read_dir(root)? {
            let p = e?.path();
            if p.file_name().is_some_and(|n| n == "snapshots") && p.is_dir() {
                total.plus(self.snapshots(&p)?);
            } else {
                walk(&p, &mut total)?;
            }
        }
        Ok(Usage {
            mountpoint: self.mountpoint.get_or_init(|| mountpoint_of(root)).clone(),
            bytes: total.bytes,
            inodes: total.inodes,
        })
    }

    fn snapshots(&self, dir: &Path) -> std::io::Result<Count> {
        let mut total = Count::default();
        total.add(&std::fs::symlink_metadata(dir)?);
        let mut known = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashMap::with_capacity(known.len());
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let m = match e.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // In progress: as it is now, not remembered.
            if name.starts_with('.') || !m.is_dir() {
                walk(&e.path(), &mut total)?;
                continue;
            }
            let count = match known.get(&name) {
                Some((ino, c)) if *ino == m.ino() => *c,
                _ => {
                    let mut c = Count::default();
                    walk(&e.path(), &mut c)?;
                    c
                }
            };
            total.plus(count);
            seen.insert(name, (m.ino(), count));
        }
        // Removed snapshots are forgotten.
        *known = seen;
        Ok(total)
    }
}

/// Adds `p` and, for a directory, everything below it.
fn walk(p: &Path, u: &mut Count) -> std::io::Result<()> {
    let m = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        // Removed while we walked: not ours to count.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    u.add(&m);
    if m.is_dir() {
        let rd = match std::fs::read_dir(p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in rd {
            walk(&e?.path(), u)?;
        }
    }
    Ok(())
}

/// The mount point holding `p`, from /proc/self/mountinfo.
fn mountpoint_of(p: &Path) -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| canonical.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembered figure equals a full walk after snapshots come and
    /// go, and a snapshot replaced under the same name is measured anew.
    #[test]
    fn the_incremental_figure_is_the_full_walk() {
        let root = std::env::temp_dir().join(format!("berth-usage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let snaps = root.join("snapshots");
        std::fs::create_dir_all(snaps.join("a/bin")).unwrap();
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(snaps.join("a/bin/x"), vec![1u8; 20_000]).unwrap();
        std::fs::write(root.join("blobs/sha256/b1"), vec![2u8; 5000]).unwrap();
        let full = || {
            let mut c = Count::default();
            walk(&root, &mut c).unwrap();
            c
        };
        let s = Snapshots::default();
        let got = |s: &Snapshots| {
            let u = s.usage(&root).unwrap();
            Count {
                bytes: u.bytes,
                inodes: u.inodes,
            }
        };
        assert_eq!(got(&s), full());
        std::fs::create_dir_all(snaps.join("b")).unwrap();
        std::fs::write(snaps.join("b/y"), vec![3u8; 70_000]).unwrap();
        std::fs::create_dir_all(snaps.join(".tmp-c")).unwrap();
        std::fs::write(snaps.join(".tmp-c/z"), vec![4u8; 9000]).unwrap();
        assert_eq!(got(&s), full(), "added");
        std::fs::write(snaps.join(".tmp-c/z2"), vec![4u8; 9000]).unwrap();
        assert_eq!(got(&s), full(), "in progress, grown");
        std::fs::remove_dir_all(snaps.join("a")).unwrap();
        assert_eq!(got(&s), full(), "removed");
        // "b" made anew (a new inode) with other content.
        std::fs::remove_dir_all(snaps.join("b")).unwrap();
        std::fs::rename(snaps.join(".tmp-c"), snaps.join("b")).unwrap();
        assert_eq!(got(&s), full(), "replaced");
        assert_eq!(s.measured.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
