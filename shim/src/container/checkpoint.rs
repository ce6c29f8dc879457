//! CheckpointContainer's part on the node: a running container dumped
//! with CRIU (by `berth-monitor checkpoint`) and left running, and the
//! archive the kubelet's checkpoint API hands out (KEP-2008), in the
//! layout CRI-O and containerd write and `checkpointctl` reads:
//!
//! - `checkpoint/`: CRIU's images, with `descriptors.json` (the init's
//!   stdio, for a restore);
//! - `dump.log`, `stats-dump`: CRIU's log and statistics;
//! - `config.dump`: the container's id, name, image and times (JSON);
//! - `spec.dump`: its OCI spec, annotated with its pod's name and
//!   namespace the way containerd's is (`io.kubernetes.cri.*`);
//! - `rootfs-diff.tar`, `deleted.files`: what it changed in its writable
//!   layer: files added or modified, and paths deleted (overlay
//!   whiteouts), bind mount targets left out;
//! - `container.log`: its CRI log so far.
//!
//! The archive is a plain tar, root's alone (0600: it holds the
//! container's memory), written beside `location` and renamed onto it
//! only when whole; the staging directory goes whatever happens.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_runtime::protocol::{Checkpoint, Invocation};
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use super::{ContainerRecord, Containers, Observed};

/// Why a checkpoint was not made.
#[derive(Debug)]
pub enum CheckpointError {
    /// The container or the request cannot be checkpointed as they are.
    Refused(String),
    /// The dump did not end in time.
    Deadline(String),
    /// The dump, or writing the archive, failed.
    Failed(String),
}

/// How deep a writable layer's directories may nest: deeper, and the
/// archive is refused rather than walked without end.
const MAX_DEPTH: usize = 128;
/// How much of the monitor's error output is kept.
const MAX_ERR: u64 = 64 << 10;
/// How far a file in the writable layer may be sparse (its size past the
/// disk it takes): further, and the archive is refused rather than
/// written out to the holes' size (a tenant's `truncate -s 1T` would
/// otherwise fill the node's disk).
const MAX_HOLES: u64 = 1 << 20;

/// The containers a dump is running on: one at a time each (a second
/// CRIU would find the first's parasite in the processes).
#[derive(Default)]
pub struct Dumps(std::sync::Arc<std::sync::Mutex<HashSet<String>>>);

/// A container's dump under way; the container is free again when it
/// drops (when the dump's process has ended, even past the timeout).
struct Dumping(Dumps, String);

impl Dumps {
    fn begin(&self, id: &str) -> Option<Dumping> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(id.to_string())
            .then(|| Dumping(Dumps(self.0.clone()), id.to_string()))
    }
}

impl Drop for Dumping {
    fn drop(&mut self) {
        let mut set = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.1);
    }
}

/// Reads until a deadline, then fails `TimedOut`: the archive's every
/// read of the tenant's files, and of the dump, is bounded in time by the
/// call's timeout.
struct Until<R> {
    inner: R,
    deadline: Instant,
}

impl<R: Read> Read for Until<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        past(self.deadline)?;
        self.inner.read(buf)
    }
}

fn past(deadline: Instant) -> std::io::Result<()> {
    if Instant::now() >= deadline {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the checkpoint's timeout passed",
        ));
    }
    Ok(())
}

/// What the container's files make impossible to archive.
fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Unsupported, why)
}

/// An I/O failure of the checkpoint, by its cause.
fn failed(what: &str, e: std::io::Error) -> CheckpointError {
    match e.kind() {
        std::io::ErrorKind::TimedOut => CheckpointError::Deadline(format!("{what}: {e}")),
        std::io::ErrorKind::Unsupported => CheckpointError::Refused(format!("{what}: {e}")),
        _ => CheckpointError::Failed(format!("{what}: {e}")),
    }
}

/// The pod a container belongs to, as the archive names it.
#[derive(Clone)]
pub struct PodNames {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub handler: String,
}

impl Containers {
    /// The state root of the runtime that made `rec`: libcontainer's, or
    /// the external runtime's beside the bundle.
    pub fn runtime_root_of(&self, rec: &ContainerRecord) -> PathBuf {
        match &rec.runtime {
            Some(_) => self
                .state_dir(&rec.id)
                .join(berth_runtime::protocol::state::OCI_ROOT),
            None => self.runtime_root(),
        }
    }

    /// Dumps running `rec` into a checkpoint archive at `location` (an
    /// absolute path whose directory exists), within `timeout`: the dump,
    /// the writable layer's changes and the archive all within it.
    pub async fn checkpoint(
        &self,
        rec: &ContainerRecord,
        pod: &PodNames,
        location: &Path,
        timeout: Duration,
    ) -> Result<(), CheckpointError> {
        // A timeout too far to count is no bound.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(u32::MAX.into()));
        let now = self.observe(&rec.id);
        if !matches!(now, Observed::Running { .. }) {
            return Err(CheckpointError::Refused(format!(
                "container {} is {}: only a running container can be checkpointed",
                rec.id,
                super::name(&now)
            )));
        }
        let dir = location
            .parent()
            .ok_or_else(|| CheckpointError::Refused("location has no directory".into()))?;
        let n = crate::ids::random_id().map_err(|e| CheckpointError::Failed(e.to_string()))?;
        let staging = dir.join(format!(".berth-checkpoint-{}", &n[..16]));
        let partial = dir.join(format!(".berth-checkpoint-{}.tar", &n[..16]));
        let staged = self.stage(rec, pod, &staging, deadline).await;
        // A dump past its time removes its own files when it ends.
        if let Err(e @ CheckpointError::Deadline(_)) = staged {
            return Err(e);
        }
        // The archive holds the container's memory: written, like the
        // staging directory's removal, off the async workers.
        let location = location.to_path_buf();
        let id = rec.id.clone();
        tokio::task::spawn_blocking(move || {
            let made = staged.and_then(|()| {
                archive(&staging, &partial, deadline)
                    .and_then(|()| std::fs::rename(&partial, &location))
                    .map_err(|e| {
                        failed(
                            &format!("container {id}: writing {}", location.display()),
                            e,
                        )
                    })
            });
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_file(&partial);
            made
        })
        .await
        .map_err(|e| CheckpointError::Failed(e.to_string()))?
    }

    /// Everything the archive holds, in `staging`.
    async fn stage(
        &self,
        rec: &ContainerRecord,
        pod: &PodNames,
        staging: &Path,
        deadline: Instant,
    ) -> Result<(), CheckpointError> {
        let dumping = self.dumping.begin(&rec.id).ok_or_else(|| {
            CheckpointError::Refused(format!(
                "a checkpoint of container {} is under way: try again when it ends",
                rec.id
            ))
        })?;
        let images = staging.join("checkpoint");
        for d in [staging, &images] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(|e| failed(&d.display().to_string(), e))?;
        }
        let inv = Invocation::Checkpoint(Checkpoint {
            id: rec.id.clone(),
            root: self.runtime_root_of(rec),
            images,
            work: staging.to_path_buf(),
            runtime: rec.runtime.clone(),
        });
        let mut child = tokio::process::Command::from(crate::monitor::command(&inv))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| failed("berth-monitor checkpoint", e))?;
        let mut stderr = child.stderr.take().expect("piped");
        // The dump is never killed: CRIU stopped in the middle could leave
        // its parasite in the container's processes. Past the timeout it
        // goes on alone, and its files go when it ends.
        let mut dump = tokio::spawn(async move {
            let mut err = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(
                &mut tokio::io::AsyncReadExt::take(&mut stderr, MAX_ERR),
                &mut err,
            )
            .await;
            // Not read further: a monitor with more to say gets EPIPE
            // rather than blocking on a full pipe.
            drop(stderr);
            let status = child.wait().await;
            drop(dumping);
            (status, err)
        });
        let (status, err) = match tokio::time::timeout_at(deadline.into(), &mut dump).await {
            Ok(r) => r.map_err(|e| CheckpointError::Failed(e.to_string()))?,
            Err(_) => {
                let staging = staging.to_path_buf();
                tokio::spawn(async move {
                    let _ = dump.await;
                    let _ = tokio::fs::remove_dir_all(&staging).await;
                });
                return Err(CheckpointError::Deadline(format!(
                    "the dump of container {} did not end within the timeout; it goes \
                     on, and what it wrote is removed when it ends",
                    rec.id
                )));
            }
        };
        let status = status.map_err(|e| failed("berth-monitor checkpoint", e))?;
        if !status.success() {
            let err = String::from_utf8_lossy(&err);
            let why = err
                .lines()
                .rev()
                .find(|l| l.starts_with("berth-monitor"))
                .unwrap_or(err.trim());
            return Err(CheckpointError::Failed(format!(
                "checkpointing container {}: {}",
                rec.id,
                why.trim_start_matches("berth-monitor: ")
            )));
        }
        let state = self.state_dir(&rec.id);
        let rec = rec.clone();
        let upper = self.upper_dir(&rec.id);
        let staging = staging.to_path_buf();
        let pod = pod.clone();
        let what = format!("container {}", rec.id);
        tokio::task::spawn_blocking(move || {
            metadata(&rec, &pod, &state, &upper, &staging, deadline)
        })
        .await
        .map_err(|e| CheckpointError::Failed(e.to_string()))?
        .map_err(|e| failed(&what, e))
    }
}

/// `config.dump`, `spec.dump`, and the writable layer's changes.
fn metadata(
    rec: &ContainerRecord,
    pod: &PodNames,
    state: &Path,
    upper: &Path,
    staging: &Path,
    deadline: Instant,
) -> std::io::Result<()> {
    let bad = |e: serde_json::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let name = rec
        .config_ref()
        .metadata
        .as_ref()
        .map_or(String::new(), |m| m.name.clone());
    let config = serde_json::json!({
        "id": rec.id,
        "name": name,
        "rootfsImage": rec.image,
        "rootfsImageRef": rec.image_id,
        "rootfsImageName": rec.image,
        "runtime": if pod.handler.is_empty() { "berth" } else { &pod.handler },
        "createdTime": berth_runtime::rfc3339_nano(rec.created_ns),
        "checkpointedTime": berth_runtime::rfc3339_nano(berth_runtime::now_ns()),
        "restoredTime": "0001-01-01T00:00:00Z",
        "restored": false,
    });
    write_private(
        &staging.join("config.dump"),
        &serde_json::to_vec_pretty(&config).map_err(bad)?,
    )?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("config.json"))?).map_err(bad)?;
    let binds: HashSet<String> = spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["type"] == "bind"
                || m["options"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
        })
        .filter_map(|m| m["destination"].as_str().map(String::from))
        .collect();
    if !spec["annotations"].is_object() {
        spec["annotations"] = serde_json::json!({});
    }
    let a = &mut spec["annotations"];
    a["io.kubernetes.cri.container-type"] = "container".into();
    a["io.kubernetes.cri.container-name"] = name.into();
    a["io.kubernetes.cri.sandbox-id"] = pod.id.clone().into();
    a["io.kubernetes.cri.sandbox-name"] = pod.name.clone().into();
    a["io.kubernetes.cri.sandbox-namespace"] = pod.namespace.clone().into();
    a["io.kubernetes.cri.image-name"] = rec.image.clone().into();
    write_private(
        &staging.join("spec.dump"),
        &serde_json::to_vec_pretty(&spec).map_err(bad)?,
    )?;
    // Its output so far, as containerd's archive carries it (the log is
    // the pump's file in the kubelet's log directory; gone after a
    // rotation that removed it, which is no error).
    match File::open(&rec.log_path) {
        Ok(log) => {
            // As long as it is now: the pump goes on appending to it.
            let len = log.metadata()?.len();
            let mut to = create_private(&staging.join("container.log"))?;
            std::io::copy(
                &mut Until {
                    inner: log,
                    deadline,
                }
                .take(len),
                &mut to,
            )?;
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    rootfs_diff(upper, &binds, staging, deadline)
}

/// A new file, root's alone (never an existing one).
fn create_private(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_private(path)?.write_all(bytes)
}

/// `rootfs-diff.tar` and `deleted.files` (each only if not empty) from
/// the writable layer at `upper`. The layer is the tenant's: it is walked
/// by descriptor, never following a link, so a path swapped for a
/// symlink while we read cannot lead out of it.
fn rootfs_diff(
    upper: &Path,
    skip: &HashSet<String>,
    staging: &Path,
    deadline: Instant,
) -> std::io::Result<()> {
    let root: OwnedFd = std::fs::File::open(upper)?.into();
    let tar_path = staging.join("rootfs-diff.tar");
    let file = create_private(&tar_path)?;
    let mut d = Diff {
        tar: tar::Builder::new(std::io::BufWriter::new(file)),
        deleted: Vec::new(),
        added: 0,
        skip,
        deadline,
    };
    d.walk(root, "", 0)?;
    let Diff {
        tar,
        deleted,
        added,
        ..
    } = d;
    tar.into_inner()?.flush()?;
    if added == 0 {
        std::fs::remove_file(&tar_path)?;
    }
    if !deleted.is_empty() {
        let json = serde_json::to_vec(&deleted).map_err(std::io::Error::other)?;
        write_private(&staging.join("deleted.files"), &json)?;
    }
    Ok(())
}

struct Diff<'a> {
    tar: tar::Builder<std::io::BufWriter<File>>,
    deleted: Vec<String>,
    added: usize,
    skip: &'a HashSet<String>,
    deadline: Instant,
}

impl Diff<'_> {
    /// Adds what is under `dir` (the layer's `rel`, "" at its root).
    fn walk(&mut self, dir: OwnedFd, rel: &str, depth: usize) -> std::io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(refused(format!(
                "its writable layer nests deeper than {MAX_DEPTH} directories at {rel}"
            )));
        }
        let mut names: Vec<std::ffi::OsString> =
            std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            past(self.deadline)?;
            let Some(n) = name.to_str() else {
                return Err(refused(format!(
                    "its writable layer's {rel}/{} is not named in UTF-8",
                    name.to_string_lossy()
                )));
            };
            let path = format!("{rel}/{n}");
            if self.skip.contains(&path) {
                continue;
            }
            let st = fstatat(dir.as_fd(), n, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if kind == SFlag::S_IFDIR {
                let sub = openat(
                    dir.as_fd(),
                    n,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                self.walk(sub, &path, depth + 1)?;
            } else if kind == SFlag::S_IFCHR && st.st_rdev == 0 {
                // An overlay whiteout: deleted from the image.
                self.deleted.push(path);
            } else if kind == SFlag::S_IFREG {
                let f = openat(
                    dir.as_fd(),
                    n,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                    Mode::empty(),
                )?;
                let st = fstat(&f)?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                    continue;
                }
                let mut h = header(&st, tar::EntryType::Regular);
                let size = st.st_size as u64;
                let disk = (st.st_blocks as u64).saturating_mul(512);
                if size > disk.saturating_add(MAX_HOLES) {
                    return Err(refused(format!(
                        "its writable layer's {path} is sparse ({size} bytes in {disk} \
                         on disk): berth archives no file with more than {MAX_HOLES} \
                         bytes of holes"
                    )));
                }
                h.set_size(size);
                // It may shrink while read: the entry is padded to its size.
                let body = Until {
                    inner: File::from(f),
                    deadline: self.deadline,
                }
                .take(size)
                .chain(std::io::repeat(0))
                .take(size);
                self.tar.append_data(&mut h, &path[1..], body)?;
                self.added += 1;
            } else if kind == SFlag::S_IFLNK {
                let target = readlinkat(dir.as_fd(), n)?;
                let mut h = header(&st, tar::EntryType::Symlink);
                h.set_size(0);
                self.tar.append_link(&mut h, &path[1..], target)?;
                self.added += 1;
            }
            // Sockets, fifos and device nodes the tenant made are not
            // carried over.
        }
        Ok(())
    }
}

/// `dir`'s entries, sorted, as `rel/...` in `tar`: directories and
/// regular files (what CRIU and berth write there), each read by
/// `deadline`.
fn append_all<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let (p, name) = (dir.join(&name), rel.join(&name));
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            // Named `dir/`, as tar(1) names directories.
            tar.append_dir(name.join(""), &p)?;
            append_all(tar, &p, &name, deadline)?;
        } else if meta.is_file() {
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&meta);
            let body = Until {
                inner: File::open(&p)?,
                deadline,
            }
            .take(meta.len());
            tar.append_data(&mut h, &name, body)?;
        }
    }
    Ok(())
}

fn header(st: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_mtime(st.st_mtime.max(0) as u64);
    h
}

/// The staging directory as a plain tar at `out` (0600, new), by
/// `deadline`.
fn archive(staging: &Path, out: &Path, deadline: Instant) -> std::io::Result<()> {
    let file = create_private(out)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    append_all(&mut tar, staging, Path::new(""), deadline)?;
    let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(600)
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Each entry of the tar at `p`: its kind, bytes and link target.
    fn read_tar(p: &Path) -> std::collections::BTreeMap<String, (tar::EntryType, Vec<u8>, String)> {
        let mut a = tar::Archive::new(File::open(p).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let kind = e.header().entry_type();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                let mut b = Vec::new();
                e.read_to_end(&mut b).unwrap();
                (name, (kind, b, link))
            })
            .collect()
    }

    #[test]
    fn the_diff_holds_the_layers_files_links_and_whiteouts_and_nothing_outside() {
        let top = scratch("rootfs-diff");
        let (upper, staging, outside) = (top.join("upper"), top.join("staging"), top.join("out"));
        for d in [&upper, &staging, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(upper.join("etc/app")).unwrap();
        std::fs::write(upper.join("etc/app/conf"), "v=1\n").unwrap();
        std::fs::write(upper.join("etc/hosts"), "bound\n").unwrap();
        std::fs::write(outside.join("secret"), "node's\n").unwrap();
        // Links are carried as links, never followed out of the layer.
        std::os::unix::fs::symlink(outside.join("secret"), upper.join("etc/leak")).unwrap();
        std::os::unix::fs::symlink(&outside, upper.join("dir-leak")).unwrap();
        // A whiteout: the image's /bin/ls deleted.
        std::fs::create_dir_all(upper.join("bin")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("bin/ls"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        let skip: HashSet<String> = ["/etc/hosts".to_string()].into();
        rootfs_diff(&upper, &skip, &staging, later()).unwrap();
        let diff = read_tar(&staging.join("rootfs-diff.tar"));
        assert_eq!(
            diff.keys().collect::<Vec<_>>(),
            ["dir-leak", "etc/app/conf", "etc/leak"],
            "{diff:?}"
        );
        assert_eq!(diff["etc/app/conf"].1, b"v=1\n");
        assert_eq!(diff["etc/leak"].0, tar::EntryType::Symlink);
        assert_eq!(
            diff["etc/leak"].2,
            outside.join("secret").display().to_string()
        );
        assert!(diff["etc/leak"].1.is_empty());
        assert_eq!(diff["dir-leak"].0, tar::EntryType::Symlink);
        let deleted: Vec<String> =
            serde_json::from_slice(&std::fs::read(staging.join("deleted.files")).unwrap()).unwrap();
        assert_eq!(deleted, ["/bin/ls"]);
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn an_unchanged_layer_makes_no_diff_and_a_too_deep_one_is_refused() {
        let top = scratch("rootfs-diff-deep");
        let (upper, staging) = (top.join("upper"), top.join("staging"));
        std::fs::create_dir_all(upper.join("empty/dirs")).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        rootfs_diff(&upper, &HashSet::new(), &staging, later()).unwrap();
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        let deep: PathBuf = std::iter::repeat_n("d", MAX_DEPTH + 2).collect();
        std::fs::create_dir_all(upper.join(deep)).unwrap();
        let e = rootfs_diff(&upper, &HashSet::new(), &staging, later()).unwrap_err();
        assert!(e.to_string().contains("deeper than"), "{e}");
        assert!(matches!(failed("c", e), CheckpointError::Refused(_)));
        std::fs::remove_dir_all(&top).unwrap();
    }

    /// A tenant's `truncate -s 1T`: refused at once, never written out.
    #[test]
    fn a_sparse_file_is_refused_and_a_small_hole_is_carried() {
        let top = scratch("rootfs-diff-sparse");
        let (upper, staging) = (top.join("upper"), top.join("staging"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        let f = File::create(upper.join("small-hole")).unwrap();
        f.set_len(MAX_HOLES / 2).unwrap();
        rootfs_diff(&upper, &HashSet::new(), &staging, later()).unwrap();
        let diff = read_tar(&staging.join("rootfs-diff.tar"));
        assert_eq!(diff["small-hole"].1.len() as u64, MAX_HOLES / 2);
        std::fs::remove_dir_all(&staging).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        let f = File::create(upper.join("big")).unwrap();
        f.set_len(1 << 40).unwrap();
        let e = rootfs_diff(&upper, &HashSet::new(), &staging, later()).unwrap_err();
        assert!(e.to_string().contains("/big is sparse"), "{e}");
        assert!(matches!(failed("c", e), CheckpointError::Refused(_)));
        assert!(
            std::fs::metadata(staging.join("rootfs-diff.tar"))
                .unwrap()
                .len()
                < 1 << 20
        );
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn one_dump_at_a_time_for_each_container() {
        let dumps = Dumps::default();
        let a = dumps.begin("a").unwrap();
        assert!(dumps.begin("a").is_none());
        let b = dumps.begin("b").unwrap();
        drop(a);
        assert!(dumps.begin("a").is_some());
        drop(b);
    }

    /// Past the deadline, the layer's files and the dump are read no more.
    #[test]
    fn past_the_deadline_nothing_more_is_read() {
        let top = scratch("checkpoint-deadline");
        let (upper, staging) = (top.join("upper"), top.join("staging"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(upper.join("f"), "x").unwrap();
        let gone = Instant::now();
        let e = rootfs_diff(&upper, &HashSet::new(), &staging, gone).unwrap_err();
        assert!(matches!(failed("c", e), CheckpointError::Deadline(_)));
        let e = archive(&upper, &top.join("c.tar"), gone).unwrap_err();
        assert!(matches!(failed("c", e), CheckpointError::Deadline(_)));
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn the_archive_has_a_checkpoint_directory_entry_and_is_roots_alone() {
        use std::os::unix::fs::PermissionsExt;
        let top = scratch("checkpoint-archive");
        let staging = top.join("staging");
        std::fs::create_dir_all(staging.join("checkpoint")).unwrap();
        std::fs::write(staging.join("checkpoint/inventory.img"), "i").unwrap();
        std::fs::write(staging.join("config.dump"), "{}").unwrap();
        let out = top.join("c.tar");
        archive(&staging, &out, later()).unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let all = read_tar(&out);
        assert_eq!(all["checkpoint/"].0, tar::EntryType::Directory, "{all:?}");
        assert_eq!(all["checkpoint/inventory.img"].1, b"i");
        assert_eq!(all["config.dump"].1, b"{}");
        // Never over an existing file (the caller renames it into place).
        assert!(archive(&staging, &out, later()).is_err());
        std::fs::remove_dir_all(&top).unwrap();
    }
}
