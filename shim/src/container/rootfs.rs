//! A container's root filesystem: an overlay of the image's layers under
//! its own writable layer, the CRI image volumes (read-only layers), the
//! idmapped staging for a pod's user namespace, and their release.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::{ContainerRecord, Containers, IDMAP_DIR, NewContainer};

/// A CRI image volume: an image's layers mounted read-only for the
/// container's mount number `mount`, from `sub_path` inside the image.
pub struct ImageVolume {
    pub mount: usize,
    pub image: String,
    pub lowers: Vec<PathBuf>,
    pub sub_path: String,
}

/// Mounts layer dirs (topmost first) read-only at `at`: an overlay of
/// them, or a read-only bind of a lone one (overlayfs wants two lowers
/// when it has no upper).
fn mount_read_only(lowers: &[PathBuf], at: &Path) -> Result<(), String> {
    match lowers {
        [] => Err("the image has no layers".into()),
        [one] => {
            mount(
                Some(one.as_path()),
                at,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind: {e}"))?;
            mount(
                None::<&str>,
                at,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| format!("read-only: {e}"))
        }
        many => {
            let lower = lowerdir(many);
            mount(
                Some("overlay"),
                at,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(format!("lowerdir={lower}").as_str()),
            )
            .map_err(|e| format!("overlay: {e}"))
        }
    }
}

/// overlayfs's `lowerdir` value: the layers, topmost first.
fn lowerdir(layers: &[PathBuf]) -> String {
    layers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// `at/sub_path`, refused if it leaves `at` (by `..` or by a symlink).
fn volume_source(at: &Path, sub_path: &str) -> Result<PathBuf, String> {
    let sub = Path::new(sub_path);
    if sub.is_absolute()
        || sub
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "image_sub_path {sub_path:?} must stay inside the image"
        ));
    }
    let p = at.join(sub);
    let real =
        std::fs::canonicalize(&p).map_err(|e| format!("image_sub_path {sub_path:?}: {e}"))?;
    let root = std::fs::canonicalize(at).map_err(|e| e.to_string())?;
    if !real.starts_with(&root) {
        return Err(format!(
            "image_sub_path {sub_path:?} leads out of the image"
        ));
    }
    Ok(real)
}

impl Containers {
    /// Mounts the container's rootfs (the image's layers under a fresh
    /// writable layer) and its image volumes, and stages the host paths
    /// its user namespace sees idmapped; the rootfs, and the mount
    /// sources that replace the config's (by mount number).
    pub(super) fn mount_rootfs(
        &self,
        rec: &ContainerRecord,
        new: &NewContainer<'_>,
    ) -> Result<(PathBuf, Vec<(usize, PathBuf)>), String> {
        let (lowers, volumes, userns) = (new.lowers, new.volumes, new.userns);
        let id = rec.id.clone();
        let dir = self.state_dir(&id);
        let layer = self.root.join(&id);
        let rootfs = dir.join("rootfs");
        // In a user namespace, the container's root looks its rootfs up here.
        let traverse = userns.map(|(_, m)| m.to_host(0, 0).1);
        crate::dirs::private(&dir, traverse).map_err(|e| format!("{}: {e}", dir.display()))?;
        crate::dirs::private(&layer, None).map_err(|e| format!("{}: {e}", layer.display()))?;
        for d in [layer.join("upper"), layer.join("work"), rootfs.clone()] {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        // In a user namespace, the layers are seen through its ID maps and
        // the writable layer is its root's.
        let staging = dir.join(IDMAP_DIR);
        let staged_layers = match userns {
            Some((ns, maps)) => {
                let (uid, gid) = maps.to_host(0, 0);
                std::os::unix::fs::chown(layer.join("upper"), Some(uid), Some(gid))
                    .map_err(|e| format!("writable layer: chown: {e}"))?;
                crate::idmap::stage_layers(lowers, &staging, "l", ns)
                    .map_err(|e| format!("idmapping the image: {e}"))?
            }
            None => lowers.to_vec(),
        };
        // A restore: the checkpointed writable layer, before the mount.
        let deleted = match &new.restore {
            Some(r) => super::restore::unpack(r, &dir, &layer, lowers),
            None => Ok(Vec::new()),
        };
        let deleted = deleted.inspect_err(|_| {
            if userns.is_some() {
                crate::idmap::unstage(&staged_layers);
            }
        })?;
        let lower = lowerdir(&staged_layers);
        let mounted = mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(
                format!(
                    "lowerdir={lower},upperdir={},workdir={}",
                    layer.join("upper").display(),
                    layer.join("work").display()
                )
                .as_str(),
            ),
        );
        if userns.is_some() {
            crate::idmap::unstage(&staged_layers);
        }
        mounted.map_err(|e| format!("mounting the rootfs: {e}"))?;
        super::restore::delete_in(&rootfs, &deleted)
            .map_err(|e| format!("restoring the writable layer: {e}"))?;
        // Image volumes: each image's layers, read-only, at vol-<n>.
        let mut sources = Vec::new();
        for (n, v) in volumes.iter().enumerate() {
            let at = dir.join(format!("vol-{n}"));
            std::fs::create_dir_all(&at).map_err(|e| format!("{}: {e}", at.display()))?;
            let lowers = match userns {
                Some((ns, _)) => {
                    crate::idmap::stage_layers(&v.lowers, &staging, &format!("i{n}-"), ns)
                        .map_err(|e| format!("image volume {:?}: idmapping: {e}", v.image))?
                }
                None => v.lowers.clone(),
            };
            let mounted = mount_read_only(&lowers, &at);
            if userns.is_some() {
                crate::idmap::unstage(&lowers);
            }
            mounted.map_err(|e| format!("image volume {:?}: {e}", v.image))?;
            sources.push((v.mount, volume_source(&at, &v.sub_path)?));
        }
        // Host paths, idmapped too where their filesystem allows it; the
        // container's own mounts hold them once it is created.
        let mut staged_binds = Vec::new();
        if let Some((ns, _)) = userns {
            for (n, m) in rec.config().mounts.iter().enumerate() {
                let bind = m.image.as_ref().is_none_or(|i| i.image.is_empty())
                    && !m.host_path.is_empty()
                    && m.propagation() == cri_api::v1::MountPropagation::PropagationPrivate;
                // (A missing host path is the spec's to report.)
                let Some(meta) = bind.then(|| std::fs::metadata(&m.host_path).ok()).flatten()
                else {
                    continue;
                };
                let at = staging.join(format!("v{n}"));
                let made = if meta.is_dir() {
                    std::fs::create_dir_all(&at)
                } else {
                    std::fs::File::create(&at).map(drop)
                };
                made.map_err(|e| format!("{}: {e}", at.display()))?;
                match crate::idmap::stage(Path::new(&m.host_path), &at, ns, true) {
                    Ok(()) => {
                        sources.push((n, at.clone()));
                        staged_binds.push(at);
                    }
                    Err(e) => {
                        tracing::warn!(container = %id, "{e}: {} is mounted as the node sees it", m.host_path);
                        crate::idmap::unstage(&[at]);
                    }
                }
            }
        }
        Ok((rootfs, sources))
    }

    /// Unmounts the rootfs and removes the container's directories.
    pub(super) fn release(&self, id: &str) {
        let dir = self.state_dir(id);
        // First: what is staged there must not be removed with the dir.
        crate::idmap::unstage_all(&dir.join(IDMAP_DIR));
        if dir.join(IDMAP_DIR).exists() {
            tracing::error!(container = %id, "{} is still mounted: leaving it", dir.join(IDMAP_DIR).display());
            return;
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("vol-") {
                let _ = umount2(&e.path(), MntFlags::MNT_DETACH);
            }
        }
        let _ = umount2(&dir.join("rootfs"), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(self.root.join(id));
    }
}

/// Creates `path` inside `root` as the container would see it: symlinks
/// met on the way are followed, but resolved inside `root` (an absolute
/// target means `root`'s own), never out of it. Missing directories are
/// made 0755 and owned by `uid:gid`.
pub fn make_dir_in(root: &Path, path: &str, uid: u32, gid: u32) -> Result<(), String> {
    use std::collections::VecDeque;
    use std::path::Component;
    let mut todo: VecDeque<std::ffi::OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect();
    // Where we are, as components below root.
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            at.pop();
            continue;
        }
        let here: PathBuf = at
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => at.push(c),
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err("too many symlinks".into());
                }
                let target = std::fs::read_link(&here).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    at.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => todo.push_front(n.to_os_string()),
                        Component::ParentDir => todo.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => return Err(format!("{} is not a directory", here.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&here).map_err(|e| e.to_string())?;
                std::os::unix::fs::lchown(&here, Some(uid), Some(gid))
                    .map_err(|e| e.to_string())?;
                at.push(c);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_are_made_inside_the_root_even_through_symlinks() {
        let top = std::env::temp_dir().join(format!("berth-mkdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let (root, outside) = (top.join("root"), top.join("outside"));
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        make_dir_in(&root, "/var/run/app", 0, 0).unwrap();
        assert!(root.join("run/app").is_dir(), "followed inside the root");
        make_dir_in(&root, "/evil/x", 0, 0).unwrap();
        assert!(!outside.join("x").exists(), "an absolute link stays inside");
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("x")
                .is_dir()
        );
        make_dir_in(&root, "/up/y", 0, 0).unwrap();
        assert!(root.join("y").is_dir(), "'..' stops at the root");
        std::fs::write(root.join("file"), "x").unwrap();
        assert!(make_dir_in(&root, "/file/z", 0, 0).is_err());
        std::fs::remove_dir_all(&top).unwrap();
    }
}
