//! One archive entry into the snapshot: parents, whiteouts and opaque
//! dirs, files, links, devices; hard links copied up from lower layers.

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use crate::limits::Exceeded;

use super::meta::Meta;
use super::path::{Lookup, create_file, join, lookup, nix_io, split_path};
use super::sparse::pax_sparse;
use super::{OPAQUE_MARKER, OPAQUE_XATTR, UnpackError, Unpacker, WHITEOUT_PREFIX, io_err, refused};

impl Unpacker<'_> {
    pub(super) fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), UnpackError> {
        let mut raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(()); // global PAX defaults carry nothing we use
        }
        let sparse = match kind {
            EntryType::Regular | EntryType::Continuous => {
                pax_sparse(entry).map_err(|e| refused(&String::from_utf8_lossy(&raw), e))?
            }
            _ => None,
        };
        if let Some(real) = sparse.as_ref().and_then(|s| s.name.clone()) {
            raw = real; // 0.1 and 1.0 store the real name apart
        }
        let name = String::from_utf8_lossy(&raw).into_owned();
        let comps = split_path(&raw).map_err(|r| refused(&name, r))?;
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_layer_entries {
            return Err(UnpackError::Limit(Exceeded {
                what: format!(
                    "the layer has more than {} entries",
                    self.limits.max_layer_entries
                ),
                key: "max_layer_entries",
                limit: self.limits.max_layer_entries.to_string(),
            }));
        }

        let Some((last, parents)) = comps.split_last() else {
            // The path names the snapshot root ("./").
            if !kind.is_dir() {
                return Err(refused(&name, "empty name (names the snapshot root)"));
            }
            let meta = Meta::read(entry, &name)?;
            return self.apply_meta(&name, self.dest.to_path_buf(), &meta, true);
        };
        if last.as_bytes() == OPAQUE_MARKER {
            let dir = self.ensure_dirs(&name, parents)?;
            return xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(io_err(&name, "set opaque xattr"));
        }
        if let Some(target) = last.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            if matches!(target, b"" | b"." | b"..") {
                return Err(refused(&name, "invalid whiteout name"));
            }
            let mut path = self.ensure_dirs(&name, parents)?;
            path.push(OsStr::from_bytes(target));
            self.clear(&name, &path, false)?;
            let r = mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0);
            return nix_io(r).map_err(io_err(&name, "create whiteout"));
        }

        let link = entry.link_name_bytes().map(|l| l.into_owned());
        // Old-style ('\0' type) entries with a trailing slash are directories.
        let is_dir =
            kind.is_dir() || (entry.header().as_old().linkflag[0] == 0 && raw.ends_with(b"/"));
        let mut path = self.ensure_dirs(&name, parents)?;
        path.push(last);

        if kind.is_hard_link() {
            let target = link.ok_or_else(|| refused(&name, "hard link without target"))?;
            return self.hard_link(&name, path, &target);
        }
        let meta = Meta::read(entry, &name)?;
        let keep_dir = self.clear(&name, &path, is_dir)?;
        match kind {
            _ if is_dir => {
                if !keep_dir {
                    fs::create_dir(&path).map_err(io_err(&name, "create directory"))?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // The size the header claims (a sparse file's full size):
                // refused before anything is written if it cannot fit.
                let claimed = match (entry.header().as_gnu(), &sparse) {
                    (_, Some(s)) => Ok(s.size),
                    (Some(g), None) if kind == EntryType::GNUSparse => g.real_size(),
                    _ => entry.header().entry_size(),
                };
                let claimed = claimed.map_err(|_| refused(&name, "invalid size in header"))?;
                self.count_bytes(&name, claimed, false)?;
                let mut f = create_file(&path).map_err(io_err(&name, "create file"))?;
                match &sparse {
                    Some(s) => self.write_pax_sparse(&name, entry, &mut f, s)?,
                    None => self.write_contents(&name, entry, &mut f)?,
                }
            }
            EntryType::Symlink => {
                let target = link.filter(|l| !l.is_empty());
                let target = target.ok_or_else(|| refused(&name, "symlink without target"))?;
                // The target is stored verbatim and never followed by us.
                symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_err(&name, "create symlink"))?;
            }
            EntryType::Char | EntryType::Block => {
                let h = entry.header();
                let dev = |v: io::Result<Option<u32>>| v.map(|d| u64::from(d.unwrap_or(0)));
                let bad = |_| refused(&name, "invalid device number");
                let maj = dev(h.device_major()).map_err(bad)?;
                let min = dev(h.device_minor()).map_err(bad)?;
                let t = [SFlag::S_IFBLK, SFlag::S_IFCHR][usize::from(kind == EntryType::Char)];
                let r = mknod(&path, t, Mode::empty(), makedev(maj, min));
                nix_io(r).map_err(io_err(&name, "create device"))?;
            }
            EntryType::Fifo => {
                let r = nix::unistd::mkfifo(&path, Mode::empty());
                nix_io(r).map_err(io_err(&name, "create fifo"))?;
            }
            other => {
                let t = other.as_byte().escape_ascii();
                return Err(refused(&name, format!("unsupported entry type '{t}'")));
            }
        }
        self.apply_meta(&name, path, &meta, is_dir)
    }
}

impl Unpacker<'_> {
    /// Returns `dest/comps`, making sure every component is a real directory:
    /// a missing one is created with the owner and mode the same directory
    /// has in the layers below (so a layer adding `tmp/x` without a `tmp`
    /// entry does not turn the merged `/tmp` from 1777 into 0755), else
    /// 0755 root:root; symlinks and non-dirs are refused.
    fn ensure_dirs(&self, name: &str, comps: &[OsString]) -> Result<PathBuf, UnpackError> {
        let mut p = self.dest.to_path_buf();
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            let rel = join(&comps[..=i]);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(refused(name, format!("parent {rel:?} is a symlink")));
                }
                Ok(md) if md.is_dir() => {}
                Ok(_) => return Err(refused(name, format!("parent {rel:?} is not a directory"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let (mode, uid, gid) = self
                        .lower_dir(&comps[..=i])?
                        .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
                        .unwrap_or((0o755, 0, 0));
                    fs::create_dir(&p).map_err(io_err(name, format!("create parent {rel:?}")))?;
                    lchown(&p, Some(uid), Some(gid)).map_err(io_err(name, "chown parent"))?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                        .map_err(io_err(name, "chmod parent"))?;
                }
                Err(e) => return Err(io_err(name, format!("stat {rel:?}"))(e)),
            }
        }
        Ok(p)
    }

    /// The metadata of directory `comps` in the topmost lower that has it,
    /// checking every component there is a real directory (no symlink is
    /// followed); a non-directory in a higher lower hides the lower ones.
    fn lower_dir(&self, comps: &[OsString]) -> Result<Option<fs::Metadata>, UnpackError> {
        (self.lowers_ready)().map_err(UnpackError::Lower)?;
        Ok(self.topmost_lower_dir(comps))
    }

    fn topmost_lower_dir(&self, comps: &[OsString]) -> Option<fs::Metadata> {
        'lowers: for lower in self.lowers {
            let mut p = lower.clone();
            let mut md = None;
            for c in comps {
                p.push(c);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => md = Some(m),
                    Ok(_) => return None,
                    Err(_) => continue 'lowers,
                }
            }
            return md;
        }
        None
    }

    /// Removes whatever is at `path` (never following it). An existing directory
    /// is kept when the new entry is a directory too; returns whether it was kept.
    fn clear(&self, name: &str, path: &Path, new_is_dir: bool) -> Result<bool, UnpackError> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(name, "stat")(e)),
            Ok(md) if md.is_dir() && new_is_dir => Ok(true),
            // remove_dir_all does not follow symlinks inside the tree.
            Ok(md) if md.is_dir() => fs::remove_dir_all(path)
                .map(|_| false)
                .map_err(io_err(name, "remove")),
            Ok(_) => fs::remove_file(path)
                .map(|_| false)
                .map_err(io_err(name, "remove")),
        }
    }

    fn hard_link(
        &mut self,
        name: &str,
        path: PathBuf,
        raw_target: &[u8],
    ) -> Result<(), UnpackError> {
        let target =
            split_path(raw_target).map_err(|r| refused(name, format!("hard link target: {r}")))?;
        if target.is_empty() {
            return Err(refused(name, "hard link target is empty"));
        }
        let src = self.link_source(name, &target)?;
        if src == path {
            return Ok(()); // a link to itself: nothing to do
        }
        self.clear(name, &path, false)?;
        // linkat without AT_SYMLINK_FOLLOW; `src` was verified not to be a symlink anyway.
        fs::hard_link(&src, &path).map_err(io_err(name, "create hard link"))
    }

    /// Finds the hard link target in this layer, or copies it up from the first
    /// lower layer that has it (stopping at whiteouts / opaque dirs).
    fn link_source(&mut self, name: &str, target: &[OsString]) -> Result<PathBuf, UnpackError> {
        let layers = std::iter::once(self.dest).chain(self.lowers.iter().map(PathBuf::as_path));
        for (i, layer) in layers.enumerate() {
            if i == 1 {
                (self.lowers_ready)().map_err(UnpackError::Lower)?;
            }
            match lookup(name, layer, target)? {
                Lookup::Found(p) if i == 0 => return Ok(p),
                Lookup::Found(p) => return self.copy_up(name, &p, target),
                Lookup::Hidden => break,
                Lookup::Absent => {}
            }
        }
        Err(refused(
            name,
            format!("hard link target {:?} not found", join(target)),
        ))
    }

    /// Copies a regular file from a lower layer to the same path in `dest`,
    /// preserving owner, xattrs, mode and mtime.
    fn copy_up(
        &mut self,
        name: &str,
        src: &Path,
        target: &[OsString],
    ) -> Result<PathBuf, UnpackError> {
        let md = fs::symlink_metadata(src).map_err(io_err(name, "stat lower file"))?;
        if !md.is_file() {
            return Err(refused(
                name,
                "hard link target in a lower layer is not a regular file",
            ));
        }
        let (last, parents) = target
            .split_last()
            .ok_or_else(|| refused(name, "empty target"))?;
        let mut dst = self.ensure_dirs(name, parents)?;
        dst.push(last);
        let input = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(src);
        let mut input = input.map_err(io_err(name, "open lower file"))?;
        self.count_bytes(name, md.len(), false)?;
        let mut out = create_file(&dst).map_err(io_err(name, "create copy-up file"))?;
        self.write_contents(name, &mut input, &mut out)?;
        let mut xattrs = Vec::new();
        for k in xattr::list(src).map_err(io_err(name, "list lower xattrs"))? {
            if let Some(v) = xattr::get(src, &k).map_err(io_err(name, "read lower xattr"))? {
                xattrs.push((k, v));
            }
        }
        let (uid, gid, mode) = (md.uid(), md.gid(), md.mode() & 0o7777);
        let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
        let meta = Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        };
        self.apply_meta(name, dst.clone(), &meta, false)?;
        Ok(dst)
    }
}
