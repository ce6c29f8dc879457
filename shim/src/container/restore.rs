//! A container made again from a checkpoint archive (the one
//! CheckpointContainer writes, or CRI-O's and containerd's): asked by a
//! CreateContainer whose image is the archive's path on the node, as
//! CRI-O takes it.
//!
//! berthd reads the archive's `config.dump` for the image the container
//! ran (which must be here, pulled), makes the container's writable layer
//! from `rootfs-diff.tar` (through the image unpacker, with its bounds:
//! the archive may come from another node, and its layer is the tenant's)
//! and `deleted.files`, and puts CRIU's images where the state
//! directory's `restore` leads. There the monitor finds them and restores
//! the container (through the external runtime, or its own `criu
//! restore` under libcontainer), its processes left stopped (`criu.conf`
//! for runc) until StartContainer continues them; then the images go.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use berth_imageservice::Limits;
use berth_imageservice::unpack::{Compression, unpack_layer};
use berth_runtime::protocol::state::{CRIU_CONF, RESTORE};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

/// Most bytes of the archive's `config.dump`, `spec.dump` and
/// `deleted.files`, each.
const MAX_JSON: u64 = 4 << 20;
/// Where the archive's writable layer waits for its unpack.
const DIFF: &str = "rootfs-diff.tar";

/// What a CreateContainer restores from.
pub struct Restore<'a> {
    pub archive: &'a Path,
    /// The bounds of an image layer, which the archive's layer gets too.
    pub limits: &'a Limits,
}

/// What the archive says of the container it holds.
#[derive(Debug)]
pub struct Archived {
    /// The image it ran, as named and by id.
    pub image_name: String,
    pub image_ref: String,
    /// It had a terminal.
    pub terminal: bool,
}

/// The archive a CreateContainer asks to restore from: its image is an
/// absolute path naming a file on the node.
pub fn asked(config: &cri_api::v1::ContainerConfig) -> Option<PathBuf> {
    let image = config.image.as_ref().map_or("", |i| i.image.as_str());
    let path = Path::new(image);
    (path.is_absolute() && path.is_file()).then(|| path.to_path_buf())
}

/// An entry's name, without a leading `./`.
fn name_of<R: Read>(e: &tar::Entry<'_, R>) -> std::io::Result<String> {
    let p = e.path()?;
    let s = p.to_string_lossy();
    Ok(s.strip_prefix("./").unwrap_or(&s).to_string())
}

/// At most [`MAX_JSON`] bytes of an entry.
fn small<R: Read>(e: &mut tar::Entry<'_, R>, name: &str) -> Result<Vec<u8>, String> {
    if e.header().size().unwrap_or(u64::MAX) > MAX_JSON {
        return Err(format!("{name} is over {MAX_JSON} bytes"));
    }
    let mut b = Vec::new();
    e.take(MAX_JSON)
        .read_to_end(&mut b)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(b)
}

/// The archive's account of its container: what CreateContainer needs
/// before it makes anything. Errors say why it is no checkpoint archive.
pub fn read(archive: &Path) -> Result<Archived, String> {
    let what = |e: String| format!("{}: not a checkpoint archive: {e}", archive.display());
    let file = std::fs::File::open(archive).map_err(|e| what(e.to_string()))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let (mut config, mut spec, mut images) = (None, None, false);
    for e in tar.entries().map_err(|e| what(e.to_string()))? {
        let mut e = e.map_err(|e| what(e.to_string()))?;
        match name_of(&e).map_err(|e| what(e.to_string()))?.as_str() {
            "config.dump" => config = Some(small(&mut e, "config.dump").map_err(what)?),
            "spec.dump" => spec = Some(small(&mut e, "spec.dump").map_err(what)?),
            "checkpoint/inventory.img" => images = true,
            _ => {}
        }
    }
    let json = |b: Option<Vec<u8>>, name: &str| -> Result<serde_json::Value, String> {
        let b = b.ok_or_else(|| what(format!("no {name}")))?;
        serde_json::from_slice(&b).map_err(|e| what(format!("{name}: {e}")))
    };
    let (config, spec) = (json(config, "config.dump")?, json(spec, "spec.dump")?);
    if !images {
        return Err(what("no CRIU images (checkpoint/inventory.img)".into()));
    }
    let text = |k: &str| config[k].as_str().unwrap_or_default().to_string();
    let a = Archived {
        image_name: text("rootfsImageName"),
        image_ref: text("rootfsImageRef"),
        terminal: spec["process"]["terminal"] == true,
    };
    if a.image_name.is_empty() && a.image_ref.is_empty() {
        return Err(what(
            "config.dump names no image (rootfsImageName, rootfsImageRef)".into(),
        ));
    }
    Ok(a)
}

/// The container's writable layer (`layer`'s `upper`, empty) from the
/// archive, and CRIU's images into `layer`'s `restore/`, on the disk (the
/// state directory's `restore` links there: the state may be a tmpfs,
/// and the images hold the container's memory); returns the image's
/// paths the container had deleted, for [`delete_in`] once the rootfs is
/// mounted. `lowers` are the image's layers, topmost first.
pub(super) fn unpack(
    r: &Restore<'_>,
    state: &Path,
    layer: &Path,
    lowers: &[PathBuf],
) -> Result<Vec<String>, String> {
    let what = |e: String| format!("restoring from {}: {e}", r.archive.display());
    let (images, upper) = (layer.join(RESTORE), layer.join("upper"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&images)
        .map_err(|e| what(format!("{}: {e}", images.display())))?;
    std::os::unix::fs::symlink(&images, state.join(RESTORE))
        .map_err(|e| what(format!("{}: {e}", state.join(RESTORE).display())))?;
    let file = std::fs::File::open(r.archive).map_err(|e| what(e.to_string()))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let mut deleted = Vec::new();
    let diff = state.join(DIFF);
    for e in tar.entries().map_err(|e| what(e.to_string()))? {
        let mut e = e.map_err(|e| what(e.to_string()))?;
        let name = name_of(&e).map_err(|e| what(e.to_string()))?;
        let kind = e.header().entry_type();
        let to = match name.as_str() {
            "checkpoint" | "checkpoint/" => continue,
            "deleted.files" => {
                let b = small(&mut e, &name).map_err(what)?;
                deleted =
                    serde_json::from_slice(&b).map_err(|e| what(format!("deleted.files: {e}")))?;
                continue;
            }
            DIFF => diff.clone(),
            n => match n.strip_prefix("checkpoint/") {
                // CRIU's images are plain files in one directory.
                Some(img) if !img.is_empty() && !img.contains('/') && img != ".." && img != "." => {
                    images.join(img)
                }
                Some(_) => return Err(what(format!("{n:?}: not a CRIU image name"))),
                None => continue,
            },
        };
        // Regular files only (a sparse entry would be written out larger
        // than the archive holds it).
        if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
            return Err(what(format!("{name:?} is a {kind:?}, not a regular file")));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)
            .map_err(|e| what(format!("{name}: {e}")))?;
        std::io::copy(&mut e, &mut out).map_err(|e| what(format!("{name}: {e}")))?;
    }
    if !images.join("inventory.img").is_file() {
        return Err(what("no CRIU images (checkpoint/inventory.img)".into()));
    }
    if diff.exists() {
        let unpacked = unpack_layer(&diff, Compression::None, &upper, lowers, r.limits);
        let _ = std::fs::remove_file(&diff);
        unpacked.map_err(|e| what(format!("{DIFF}: {e}")))?;
    }
    Ok(deleted)
}

/// The container is restored: CRIU's images go.
pub(super) fn done(state: &Path, layer: &Path) {
    let _ = std::fs::remove_file(state.join(RESTORE));
    let _ = std::fs::remove_dir_all(layer.join(RESTORE));
}

/// The restore's CRIU configuration: its processes left stopped until the
/// start, and its cgroups made below the new container's (runc maps them
/// there only on cgroup v1: CRIU would put them back in the checkpointed
/// container's). The spec names it to runc (`org.criu.config`), whose
/// options it overrides; under libcontainer the monitor gives it to
/// `criu --config`.
///
/// The mount points of the spec's mounts are made in `rootfs` too, as a
/// create makes them: the writable layer the archive brought leaves out
/// bind mount targets, and CRIU mounts only onto what is there.
pub(super) fn configure(
    spec: &mut crate::spec::Spec,
    state: &Path,
    rootfs: &Path,
) -> Result<(), String> {
    for m in spec.mounts().iter().flatten() {
        let file = m
            .source()
            .as_ref()
            .filter(|_| {
                m.typ().as_deref() == Some("bind")
                    || m.options()
                        .iter()
                        .flatten()
                        .any(|o| o == "bind" || o == "rbind")
            })
            .is_some_and(|s| s.metadata().is_ok_and(|m| !m.is_dir()));
        mount_point(rootfs, m.destination(), file)
            .map_err(|e| format!("mount point {}: {e}", m.destination().display()))?;
    }
    let cgroup = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .and_then(|p| berth_runtime::cgroup_rel(&p.to_string_lossy()))
        .ok_or("the container has no cgroup to restore into")?;
    let conf = state.join(CRIU_CONF);
    let text = format!("leave-stopped\ncgroup-root /{}\n", cgroup.display());
    std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
    let mut a = spec.annotations().clone().unwrap_or_default();
    a.insert("org.criu.config".into(), conf.display().to_string());
    spec.set_annotations(Some(a));
    Ok(())
}

/// Opens `dirs` below `root` one by one, each without following a link
/// (a link on the way fails: the rootfs is the tenant's). A missing one
/// is made when `make`, else ends the walk: `None`.
fn walk(root: &Path, dirs: &[&OsStr], make: bool) -> Result<Option<OwnedFd>, String> {
    let mut at: OwnedFd = std::fs::File::open(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .into();
    for p in dirs {
        if make {
            match nix::sys::stat::mkdirat(at.as_fd(), *p, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        at = match openat(
            at.as_fd(),
            *p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) if !make => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", Path::new(p).display())),
        };
    }
    Ok(Some(at))
}

/// Makes `path` (a directory, or an empty `file`) inside `rootfs` if it
/// is not there, its missing parents as directories (see [`walk`]).
fn mount_point(rootfs: &Path, path: &Path, file: bool) -> Result<(), String> {
    let parts: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(());
    };
    let at = walk(rootfs, dirs, true)?.expect("made");
    let made = if file {
        openat(
            at.as_fd(),
            *last,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    } else {
        nix::sys::stat::mkdirat(at.as_fd(), *last, Mode::from_bits_truncate(0o755))
    };
    match made {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes `deleted` (paths in the image the checkpointed container had
/// deleted) from the mounted `rootfs`, each resolved inside it without
/// following a link (see [`walk`]); one already gone is no error.
pub(super) fn delete_in(rootfs: &Path, deleted: &[String]) -> Result<(), String> {
    for d in deleted {
        let bad = || format!("deleted.files: {d:?} is not a path in the container");
        let parts: Vec<&OsStr> = Path::new(d)
            .components()
            .filter(|c| *c != Component::RootDir && *c != Component::CurDir)
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(bad());
        };
        let Some(at) = walk(rootfs, dirs, false).map_err(|e| format!("deleting {d:?}: {e}"))?
        else {
            continue;
        };
        let st = match fstatat(at.as_fd(), *last, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(format!("deleting {d:?}: {e}")),
        };
        let gone = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            // Its parent held open: the path below cannot be swapped.
            use std::os::fd::AsRawFd;
            let p = Path::new("/proc/self/fd")
                .join(at.as_raw_fd().to_string())
                .join(last);
            std::fs::remove_dir_all(p).map_err(|e| e.to_string())
        } else {
            nix::unistd::unlinkat(at.as_fd(), *last, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(|e| e.to_string())
        };
        gone.map_err(|e| format!("deleting {d:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);

    impl Tmp {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("berth-restore-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn archive(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let p = dir.join("a.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
        for (name, bytes) in entries {
            // The name as is (the tar crate's own setter refuses `..`).
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *bytes).unwrap();
        }
        b.finish().unwrap();
        p
    }

    const CONFIG: &[u8] = br#"{"rootfsImageName":"busybox","rootfsImageRef":"sha256:ab"}"#;

    #[test]
    fn an_archive_names_its_image_or_is_no_archive() {
        let t = tmp("read");
        let a = archive(
            t.path(),
            &[
                ("config.dump", CONFIG),
                ("spec.dump", br#"{"process":{"terminal":true}}"#),
                ("checkpoint/inventory.img", b"x"),
            ],
        );
        let got = read(&a).unwrap();
        assert_eq!(
            (got.image_name.as_str(), got.image_ref.as_str()),
            ("busybox", "sha256:ab")
        );
        assert!(got.terminal);
        for (entries, why) in [
            (
                vec![
                    ("spec.dump", &b"{}"[..]),
                    ("checkpoint/inventory.img", b"x"),
                ],
                "no config.dump",
            ),
            (
                vec![("config.dump", CONFIG), ("spec.dump", b"{}")],
                "no CRIU images",
            ),
            (
                vec![
                    ("config.dump", b"{}"),
                    ("spec.dump", b"{}"),
                    ("checkpoint/inventory.img", b"x"),
                ],
                "names no image",
            ),
            (
                vec![
                    ("config.dump", b"{"),
                    ("spec.dump", b"{}"),
                    ("checkpoint/inventory.img", b"x"),
                ],
                "config.dump:",
            ),
        ] {
            let a = archive(t.path(), &entries);
            let e = read(&a).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        std::fs::write(t.path().join("a.tar"), vec![7u8; 2048]).unwrap();
        assert!(
            read(&t.path().join("a.tar"))
                .unwrap_err()
                .contains("not a checkpoint archive")
        );
    }

    #[test]
    fn images_with_a_path_are_refused() {
        let t = tmp("images");
        let state = t.path().join("state");
        let layer = t.path().join("layer");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(layer.join("upper")).unwrap();
        for bad in ["checkpoint/../../escape", "checkpoint/sub/x.img"] {
            let a = archive(t.path(), &[("checkpoint/inventory.img", b"x"), (bad, b"y")]);
            let limits = Limits::default();
            let r = Restore {
                archive: &a,
                limits: &limits,
            };
            done(&state, &layer);
            let e = unpack(&r, &state, &layer, &[]).unwrap_err();
            assert!(e.contains("not a CRIU image name"), "{e}");
            assert!(!t.path().join("escape").exists());
        }
    }

    #[test]
    fn mount_points_are_made_inside_the_rootfs() {
        let t = tmp("mountpoints");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        mount_point(&root, Path::new("/run/secrets/token"), true).unwrap();
        mount_point(&root, Path::new("/dev/shm"), false).unwrap();
        assert!(root.join("run/secrets/token").is_file() && root.join("dev/shm").is_dir());
        // Made again: there already.
        mount_point(&root, Path::new("/run/secrets/token"), true).unwrap();
        assert!(mount_point(&root, Path::new("/etc/hostname"), true).is_err());
        assert!(mount_point(&root, Path::new("/etc/x/y"), false).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn deleted_paths_stay_inside_the_rootfs() {
        let t = tmp("deleted");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("etc/dir/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "").unwrap();
        std::fs::write(root.join("etc/file"), "").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        delete_in(
            &root,
            &[
                "/etc/file".into(),
                "/etc/dir".into(),
                "/link/keep".into(),
                "/gone/x".into(),
            ],
        )
        .unwrap_err();
        // The link is not followed: the walk stops there, refusing.
        assert!(outside.join("keep").exists());
        delete_in(
            &root,
            &[
                "/etc/file".into(),
                "/etc/dir".into(),
                "/gone/x".into(),
                "/link".into(),
            ],
        )
        .unwrap();
        assert!(!root.join("etc/file").exists() && !root.join("etc/dir").exists());
        assert!(root.join("etc").is_dir() && outside.join("keep").exists());
        assert!(!root.join("link").exists());
        assert!(
            delete_in(&root, &["../x".into()])
                .unwrap_err()
                .contains("not a path")
        );
    }
}
