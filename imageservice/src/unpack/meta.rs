//! An entry's metadata (owner, mode, mtime, xattrs) from its header and
//! PAX records, and applying it in the order (and with the xattr policy) the
//! `unpack` module doc gives.

use std::ffi::{OsStr, OsString};
use std::fs::{self};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use super::{UnpackError, Unpacker, io_err, refused};

/// Metadata of an entry, taken from its header and PAX records.
pub(super) struct Meta {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    pub(super) mtime: TimeSpec,
    pub(super) xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    pub(super) fn read<R: Read>(
        entry: &mut tar::Entry<R>,
        name: &str,
    ) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let bad = |what: &str| refused(name, format!("invalid {what} in header"));
        // The tar crate already applies PAX uid/gid overrides to the header.
        let uid = num(h.uid()).ok_or_else(|| bad("uid"))?;
        let gid = num(h.gid()).ok_or_else(|| bad("gid"))?;
        let mode = h.mode().map_err(|_| bad("mode"))? & 0o7777;
        let mtime = TimeSpec::new(num(h.mtime()).ok_or_else(|| bad("mtime"))?, 0);
        let mut meta = Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs: Vec::new(),
        };
        let pax = entry
            .pax_extensions()
            .map_err(|e| refused(name, format!("bad PAX header: {e}")))?;
        for rec in pax.into_iter().flatten() {
            let rec = rec.map_err(|e| refused(name, format!("bad PAX record: {e}")))?;
            if let Some(key) = rec.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                meta.xattrs.push((
                    OsStr::from_bytes(key).to_owned(),
                    rec.value_bytes().to_vec(),
                ));
            } else if rec.key_bytes() == b"mtime" {
                // Sub-second mtime ("secs[.frac]"); ignored if unparsable.
                if let Some(ts) = parse_pax_time(rec.value_bytes()) {
                    meta.mtime = ts;
                }
            }
        }
        Ok(meta)
    }
}

pub(super) fn num<T: TryFrom<u64>>(v: io::Result<u64>) -> Option<T> {
    v.ok()?.try_into().ok()
}

fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().ok()?;
    if s.starts_with('-') && nanos > 0 {
        // "-1.5" is 1.5s before the epoch, i.e. -2s + 0.5s.
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

/// Sets one xattr according to the policy in the `unpack` module doc.
fn set_xattr(path: &Path, key: &OsStr, value: &[u8]) -> io::Result<()> {
    let k = key.as_bytes();
    if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") {
        return Ok(());
    }
    match xattr::set(path, key, value) {
        Err(e)
            if e.raw_os_error() == Some(Errno::ENOTSUP as i32)
                && (k.starts_with(b"security.") || k.starts_with(b"user.")) =>
        {
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(Errno::EPERM as i32) && k.starts_with(b"security.") => {
            Ok(())
        }
        r => r,
    }
}

pub(super) fn set_mtime(path: &Path, t: &TimeSpec) -> io::Result<()> {
    Ok(utimensat(
        AT_FDCWD,
        path,
        t,
        t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

impl Unpacker<'_> {
    /// Owner, xattrs, mode, mtime, in that order: chown clears setuid bits and
    /// file capabilities, so xattrs and mode come after it.
    pub(super) fn apply_meta(
        &mut self,
        name: &str,
        path: PathBuf,
        m: &Meta,
        is_dir: bool,
    ) -> Result<(), UnpackError> {
        lchown(&path, Some(m.uid), Some(m.gid)).map_err(io_err(name, "chown"))?;
        for (k, v) in &m.xattrs {
            set_xattr(&path, k, v)
                .map_err(io_err(name, format!("set xattr {}", k.to_string_lossy())))?;
        }
        let is_symlink = fs::symlink_metadata(&path)
            .map_err(io_err(name, "stat"))?
            .file_type()
            .is_symlink();
        if !is_symlink {
            // Safe to follow: `path` is a node we created or lstat'ed as a real dir.
            fs::set_permissions(&path, fs::Permissions::from_mode(m.mode))
                .map_err(io_err(name, "chmod"))?;
        }
        if is_dir {
            self.dir_times.insert(path, m.mtime);
            Ok(())
        } else {
            set_mtime(&path, &m.mtime).map_err(io_err(name, "set mtime"))
        }
    }
}
