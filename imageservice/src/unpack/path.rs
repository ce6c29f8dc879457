//! Archive paths and the layer tree: splitting an entry's path into plain
//! components, looking a path up in a layer without following symlinks,
//! creating files that never follow or reuse an existing node.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{OPAQUE_XATTR, UnpackError, io_err, refused};

/// Splits a raw archive path into plain components ("." and empty ones dropped).
/// The result may be empty (the path names the root).
pub(super) fn split_path(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw[0] == b'/' {
        return Err("absolute path escapes the snapshot");
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path escapes the snapshot (\"..\" component)"),
            c if c.contains(&0) => return Err("path contains a NUL byte"),
            c => out.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(out)
}

pub(super) fn join(comps: &[OsString]) -> String {
    let v: Vec<_> = comps.iter().map(|c| c.to_string_lossy()).collect();
    v.join("/")
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() && md.rdev() == 0
}

/// `create_new` = O_CREAT|O_EXCL: never follows or reuses an existing node.
pub(super) fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

pub(super) fn nix_io(r: nix::Result<()>) -> io::Result<()> {
    Ok(r?)
}

/// Result of looking a hard link target up in one layer directory.
pub(super) enum Lookup {
    Found(PathBuf),
    /// Not in this layer; lower layers may have it.
    Absent,
    /// Deleted or shadowed by this layer (whiteout, non-dir parent, opaque dir).
    Hidden,
}

/// Looks `comps` up in one layer dir without following any symlink.
pub(super) fn lookup(name: &str, layer: &Path, comps: &[OsString]) -> Result<Lookup, UnpackError> {
    let mut p = layer.to_path_buf();
    let mut opaque = false;
    for (i, c) in comps.iter().enumerate() {
        p.push(c);
        let last = i + 1 == comps.len();
        let md = match fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(if opaque {
                    Lookup::Hidden
                } else {
                    Lookup::Absent
                });
            }
            Err(e) => return Err(io_err(name, "stat hard link target")(e)),
        };
        if is_whiteout(&md) {
            return Ok(Lookup::Hidden);
        }
        let rel = join(&comps[..=i]);
        if md.file_type().is_symlink() {
            let what = if last {
                "hard link target"
            } else {
                "parent of hard link target"
            };
            return Err(refused(name, format!("{what} {rel:?} is a symlink")));
        }
        if last {
            if md.is_dir() {
                return Err(refused(
                    name,
                    format!("hard link target {rel:?} is a directory"),
                ));
            }
            return Ok(Lookup::Found(p));
        }
        if !md.is_dir() {
            return Ok(Lookup::Hidden); // a non-directory hides everything below it
        }
        opaque |= matches!(xattr::get(&p, OPAQUE_XATTR), Ok(Some(v)) if v == b"y");
    }
    Ok(Lookup::Absent)
}
