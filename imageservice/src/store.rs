//! The content store and the snapshots under `<root>/images`:
//!
//! ```text
//! blobs/sha256/<hex>     verified blobs: manifests, configs, compressed layers
//! ingest/                downloads in progress (emptied at start)
//! snapshots/<chain hex>  one unpacked layer each, keyed by chain ID
//! snapshots/.tmp-*       unpacks in progress (removed at start)
//! ```
//!
//! A blob or snapshot only appears under its final name, by rename, once it
//! is complete and verified; a crash leaves only temporaries, which the next
//! start removes.
//!
//! Blob writes keep the `min_free_space` reserve of the filesystem: checked
//! for the whole blob before it starts and again every few MiB written.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedMutexGuard;

use crate::digest::Digest;
use crate::limits::{Exceeded, FreeSpace, FreeSpaceError};

/// Free space is checked again after this many bytes of a blob.
const FREE_SPACE_CHECK_EVERY: u64 = 16 << 20;

pub struct Store {
    root: PathBuf,
    min_free: FreeSpace,
    /// One lock per blob or snapshot being made, so concurrent pulls of the
    /// same content fetch or unpack it once.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("blob {digest}: {source}")]
    Io {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest}: received {got} bytes, the manifest says {want}")]
    Size { digest: Digest, got: u64, want: u64 },
    #[error("blob {want}: content does not match its digest (got {got})")]
    Mismatch { want: Digest, got: Digest },
    /// Writing it would cross a limit (the free-space reserve).
    #[error("blob {digest}: {source}")]
    Limit {
        digest: Digest,
        #[source]
        source: Exceeded,
    },
}

impl Store {
    /// Opens (creating) the store and removes what an interrupted run left.
    /// Blob writes keep `min_free` free on its filesystem.
    pub fn open(root: &Path, min_free: FreeSpace) -> io::Result<Store> {
        for d in ["blobs/sha256", "ingest", "snapshots"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        // Image content is root's alone: a setuid binary of an image must
        // not be reachable by the node's other users. At every start, so
        // that an older berth's 0755 dirs are closed too.
        for d in ["", "blobs", "blobs/sha256", "ingest", "snapshots"] {
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o700))?;
        }
        remove_dir_contents(&root.join("ingest"))?;
        for e in std::fs::read_dir(root.join("snapshots"))? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                remove_any(&e.path())?;
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            min_free,
            inflight: Mutex::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn snapshot_path(&self, chain: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain.hex())
    }

    pub fn has_snapshot(&self, chain: &Digest) -> bool {
        self.snapshot_path(chain).is_dir()
    }

    /// Serialises work on one piece of content (a blob, a snapshot).
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        self.lock_of(key).lock_owned().await
    }

    /// [`Store::lock`] if nobody holds it now.
    pub fn try_lock(&self, key: &str) -> Option<OwnedMutexGuard<()>> {
        self.lock_of(key).try_lock_owned().ok()
    }

    fn lock_of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, m| Arc::strong_count(m) > 1);
        map.entry(key.to_string()).or_default().clone()
    }

    /// Starts writing the blob `digest` of `size` bytes.
    pub async fn writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter, IngestError> {
        check_free(&self.root, self.min_free, digest, size)?;
        let tmp = self
            .root
            .join("ingest")
            .join(format!("{}-{}", digest.hex(), unique()));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|source| IngestError::Io {
                digest: digest.clone(),
                source,
            })?;
        Ok(BlobWriter {
            file,
            followers: None,
            tmp: Some(tmp),
            dest: self.blob_path(digest),
            digest: digest.clone(),
            want: size,
            written: 0,
            unchecked: 0,
            min_free: self.min_free,
            hasher: Sha256::new(),
        })
    }

    /// Stores a small blob already in memory (a manifest), verified.
    pub async fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), IngestError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut w = self.writer(digest, bytes.len() as u64).await?;
        w.write(bytes).await?;
        w.commit().await
    }

    /// A fresh directory to unpack a layer into; becomes the snapshot
    /// `chain` by [`Store::commit_snapshot`].
    pub fn temp_snapshot(&self) -> io::Result<PathBuf> {
        let p = self
            .root
            .join("snapshots")
            .join(format!(".tmp-{}", unique()));
        std::fs::create_dir(&p)?;
        Ok(p)
    }

    /// Whether `tmp` became the snapshot: false if another unpack of the
    /// same layer committed first (then `tmp` is removed; the contents are
    /// the same, both being checked against the same DiffID).
    pub fn commit_snapshot(&self, tmp: &Path, chain: &Digest) -> io::Result<bool> {
        // Never over one that is there, even empty (a layer of no files):
        // a container may run on it.
        let to = self.snapshot_path(chain);
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            tmp,
            nix::fcntl::AT_FDCWD,
            &to,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EEXIST) => {
                let _ = std::fs::remove_dir_all(tmp);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every blob digest and snapshot chain ID on disk.
    pub fn contents(&self) -> io::Result<(Vec<String>, Vec<String>)> {
        let names = |dir: PathBuf| -> io::Result<Vec<String>> {
            let mut v = Vec::new();
            for e in std::fs::read_dir(dir)? {
                let name = e?.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    v.push(format!("sha256:{name}"));
                }
            }
            Ok(v)
        };
        Ok((
            names(self.root.join("blobs/sha256"))?,
            names(self.root.join("snapshots"))?,
        ))
    }

    pub fn remove_blob(&self, d: &Digest) -> io::Result<()> {
        std::fs::remove_file(self.blob_path(d))
    }

    pub fn remove_snapshot(&self, chain: &Digest) -> io::Result<()> {
        remove_any(&self.snapshot_path(chain))
    }
}

/// A blob being written: hashed as it streams, verified, fsynced and
/// renamed into place by `commit`; removed if dropped before that.
pub struct BlobWriter {
    file: tokio::fs::File,
    /// Readers of the blob as it arrives ([`BlobWriter::follow`]).
    followers: Option<Arc<Progress>>,
    tmp: Option<PathBuf>,
    dest: PathBuf,
    digest: Digest,
    want: u64,
    written: u64,
    /// Bytes written since free space was last checked.
    unchecked: u64,
    min_free: FreeSpace,
    hasher: Sha256,
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), IngestError> {
        self.written += chunk.len() as u64;
        if self.written > self.want {
            return Err(IngestError::Size {
                digest: self.digest.clone(),
                got: self.written,
                want: self.want,
            });
        }
        self.unchecked += chunk.len() as u64;
        if self.unchecked >= FREE_SPACE_CHECK_EVERY {
            self.unchecked = 0;
            if let Some(dir) = self.dest.parent() {
                check_free(dir, self.min_free, &self.digest, self.want - self.written)?;
            }
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|source| IngestError::Io {
                digest: self.digest.clone(),
                source,
            })?;
        if let Some(p) = &self.followers {
            p.tell(None);
        }
        Ok(())
    }

    /// A reader of the blob as it is written, for unpacking a layer while
    /// it downloads. It reads what has reached the file, waits (blocking)
    /// for more, and ends only once the blob is complete and verified; if
    /// the blob turns out wrong or the download stops, its read fails.
    /// What it returned before then is unverified: whatever is made from
    /// it must be kept only once the read has ended.
    pub fn follow(&mut self) -> io::Result<BlobReader> {
        let tmp = self.tmp.as_deref().unwrap_or(Path::new(""));
        let file = std::fs::File::open(tmp)?;
        let progress = self
            .followers
            .get_or_insert_with(|| {
                Arc::new(Progress {
                    state: Mutex::new((0, None)),
                    changed: std::sync::Condvar::new(),
                })
            })
            .clone();
        Ok(BlobReader {
            file,
            at: 0,
            progress,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn commit(mut self) -> Result<(), IngestError> {
        // Every write in the file before the end is told, whichever it is.
        let flushed = self.file.flush().await;
        let r = match flushed {
            Ok(()) => self.verify_and_rename().await,
            Err(source) => Err(IngestError::Io {
                digest: self.digest.clone(),
                source,
            }),
        };
        if let (Some(p), Ok(())) = (&self.followers, &r) {
            p.tell(Some(Ok(())));
        }
        r
    }

    async fn verify_and_rename(&mut self) -> Result<(), IngestError> {
        if self.written != self.want {
            return Err(IngestError::Size {
                digest: self.digest.clone(),
                got: self.written,
                want: self.want,
            });
        }
        let got = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if got != self.digest {
            return Err(IngestError::Mismatch {
                want: self.digest.clone(),
                got,
            });
        }
        let io = |source| IngestError::Io {
            digest: self.digest.clone(),
            source,
        };
        self.file.sync_all().await.map_err(io)?;
        let tmp = self.tmp.take().unwrap_or_default();
        tokio::fs::rename(&tmp, &self.dest).await.map_err(io)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Not committed: a follower's read fails (after a commit, this
        // changes nothing).
        if let Some(p) = &self.followers {
            p.tell(Some(Err(format!(
                "the download of blob {} did not complete",
                self.digest
            ))));
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// How far a followed download is: a count of writes (for waking
/// readers) and, once it has ended, how.
struct Progress {
    state: Mutex<(u64, Option<Result<(), String>>)>,
    changed: std::sync::Condvar,
}

impl Progress {
    /// Another write reached the file, or (`end`) the download ended; the
    /// first end told is the one that counts.
    fn tell(&self, end: Option<Result<(), String>>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 += 1;
        if st.1.is_none() {
            st.1 = end;
        }
        self.changed.notify_all();
    }
}

/// Reads a blob while it downloads ([`BlobWriter::follow`]); blocking.
pub struct BlobReader {
    file: std::fs::File,
    at: u64,
    progress: Arc<Progress>,
}

impl io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut st = self
            .progress
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            // What was told before this read. A write told may still be on
            // its way to the file (tokio's file hands it to a blocking
            // thread), so finding nothing new waits for the next telling;
            // once the end is told, everything is in the file (the commit
            // flushed it first).
            let (writes, end) = (st.0, st.1.clone());
            drop(st);
            let n = self.file.read_at(buf, self.at)?;
            if n > 0 || buf.is_empty() {
                self.at += n as u64;
                return Ok(n);
            }
            match end {
                Some(Ok(())) => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => {}
            }
            st = self
                .progress
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            while st.0 == writes {
                st = self
                    .progress
                    .changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// Refuses if `more` bytes for blob `digest` would eat into the reserve.
fn check_free(dir: &Path, min: FreeSpace, digest: &Digest, more: u64) -> Result<(), IngestError> {
    min.check(dir, more).map_err(|e| match e {
        FreeSpaceError::Exceeded(source) => IngestError::Limit {
            digest: digest.clone(),
            source,
        },
        FreeSpaceError::Statvfs(source) => IngestError::Io {
            digest: digest.clone(),
            source,
        },
    })
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_dir_contents(dir: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        remove_any(&e?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tag: &str) -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("berth-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir, FreeSpace::Bytes(0)).unwrap();
        (dir, s)
    }

    /// A follower reads each write as it lands, blocks for more, and ends
    /// only with the verified blob; a wrong blob, or a download given up,
    /// fails its read instead of ending it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_reads_the_blob_as_it_arrives_and_ends_only_verified() {
        use std::io::Read;
        let (dir, s) = store("follow");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let read_all = |mut r: BlobReader| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                r.read_to_end(&mut got).map(|_| got)
            })
        };

        // Verified: everything, then the end.
        let digest = Digest::of(&data);
        let mut w = s.writer(&digest, data.len() as u64).await.unwrap();
        let reader = read_all(w.follow().unwrap());
        for chunk in data.chunks(7_000) {
            w.write(chunk).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(
            !reader.is_finished(),
            "it ended before the blob was verified"
        );
        w.commit().await.unwrap();
        assert_eq!(reader.join().unwrap().unwrap(), data);

        // Every byte there, but not the digest's: the read fails.
        let wrong = Digest::of(b"something else");
        let mut w = s.writer(&wrong, data.len() as u64).await.unwrap();
        let reader = read_all(w.follow().unwrap());
        w.write(&data).await.unwrap();
        let e = w.commit().await.unwrap_err();
        assert!(matches!(e, IngestError::Mismatch { .. }), "{e}");
        let e = reader.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("did not complete"), "{e}");

        // Given up half-way (the pull stopped): the read fails too.
        let mut w = s.writer(&digest, data.len() as u64).await.unwrap();
        let reader = read_all(w.follow().unwrap());
        w.write(&data[..1000]).await.unwrap();
        drop(w);
        assert!(reader.join().unwrap().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn content_dirs_are_closed_to_other_users_even_an_older_versions() {
        let (dir, s) = store("modes");
        let mode = |d: &str| std::fs::metadata(dir.join(d)).unwrap().permissions().mode() & 0o7777;
        let snap = s.snapshot_path(&Digest::of(b"layer"));
        std::fs::create_dir(&snap).unwrap();
        std::fs::set_permissions(&snap, std::fs::Permissions::from_mode(0o755)).unwrap();
        // As an older berth left them.
        for d in ["", "blobs", "blobs/sha256", "ingest", "snapshots"] {
            std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        drop(s);
        let _s = Store::open(&dir, FreeSpace::Bytes(0)).unwrap();
        for d in ["", "blobs", "blobs/sha256", "ingest", "snapshots"] {
            assert_eq!(mode(d), 0o700, "{d:?}");
        }
        // A snapshot's own mode is its image's root dir's: left as it is.
        let snap_mode = std::fs::metadata(&snap).unwrap().permissions().mode() & 0o7777;
        assert_eq!(snap_mode, 0o755);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn verified_blobs_land_and_bad_ones_leave_nothing() {
        let (dir, s) = store("blobs");
        let d = Digest::of(b"hello");
        s.put(&d, b"hello").await.unwrap();
        assert_eq!(std::fs::read(s.blob_path(&d)).unwrap(), b"hello");

        let other = Digest::of(b"other");
        // More bytes than the manifest said: refused as they arrive.
        let mut w = s.writer(&other, 5).await.unwrap();
        let e = w.write(b"tampered").await.unwrap_err();
        assert!(matches!(e, IngestError::Size { .. }), "{e}");
        drop(w);
        let e = s.put(&other, b"OTHER").await.unwrap_err();
        assert!(matches!(e, IngestError::Mismatch { .. }), "{e}");
        assert!(!s.has_blob(&other));
        assert_eq!(std::fs::read_dir(dir.join("ingest")).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn blobs_keep_the_free_space_reserve() {
        let dir = std::env::temp_dir().join(format!("berth-store-free-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A reserve of the whole filesystem: no blob fits.
        let s = Store::open(&dir, FreeSpace::Percent(100)).unwrap();
        let d = Digest::of(b"hello");
        let e = s.put(&d, b"hello").await.unwrap_err();
        assert!(matches!(e, IngestError::Limit { .. }), "{e}");
        assert!(e.to_string().contains("min_free_space = \"100%\""), "{e}");
        assert!(!s.has_blob(&d));
        assert_eq!(std::fs::read_dir(dir.join("ingest")).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn leftovers_are_removed_at_open() {
        let (dir, s) = store("leftovers");
        let w = s.writer(&Digest::of(b"x"), 1).await.unwrap();
        std::mem::forget(w); // as if berthd died mid-download
        let tmp = s.temp_snapshot().unwrap();
        std::fs::write(tmp.join("f"), "x").unwrap();
        drop(s);
        let s = Store::open(&dir, FreeSpace::Bytes(0)).unwrap();
        assert_eq!(std::fs::read_dir(dir.join("ingest")).unwrap().count(), 0);
        assert_eq!(s.contents().unwrap(), (vec![], vec![]));
        assert!(!tmp.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
