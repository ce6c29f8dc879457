//! Unpacking of OCI image layers (tar, optionally gzip/zstd) into overlayfs
//! snapshot directories.
//!
//! Layers are hostile input. The security model:
//! * Every entry path (and hard link target) is split into plain components;
//!   absolute paths, `..` components and empty names are refused up front.
//! * The snapshot directory is private to us and entries are processed one at a
//!   time, so the only thing that can change the tree between a check and a use
//!   is the archive itself. We therefore walk each path with `lstat` from `dest`
//!   downwards and refuse if any parent component is a symlink (or not a dir).
//! * The final component is never followed: an existing entry is unlinked (or
//!   `remove_dir_all`ed, which does not follow symlinks) before creation, and all
//!   creation calls (`O_CREAT|O_EXCL`, mkdir, mknod, symlink, link) fail instead of
//!   following a symlink. Metadata calls use the no-follow variants (`lchown`,
//!   `lsetxattr`, `utimensat(AT_SYMLINK_NOFOLLOW)`); `chmod` follows symlinks and is
//!   therefore only applied to objects we have just created or lstat'ed as non-links.
//! * Hard link targets get the same validation and must resolve to a non-symlink,
//!   non-directory inside `dest`, or be copied up from a lower layer (walked with the
//!   same rules, honouring whiteouts and opaque dirs).
//!
//! Xattr policy (PAX `SCHILY.xattr.*` records):
//! * `trusted.overlay.*` / `user.overlay.*` from the archive are dropped: they are
//!   reserved for overlayfs and a layer must not forge whiteouts/redirects with them
//!   (whiteouts come only from `.wh.` entries).
//! * `security.*`: ENOTSUP and EPERM are ignored (filesystem or LSM refuses it).
//! * `user.*`: ENOTSUP is ignored (filesystem without user xattrs).
//! * any other failure (e.g. `trusted.*`, `system.*` ACLs) fails the unpack.
//!
//! Parent directories missing from the archive are created 0755 root:root.
//! Metadata order is lchown, xattrs, chmod (chown clears setuid bits and file
//! capabilities), mtime; directory mtimes are applied at the end, deepest first.
//! Whiteouts become 0:0 char devices and opaque dirs get `trusted.overlay.opaque=y`,
//! so unpacking needs root (CAP_MKNOD, CAP_SYS_ADMIN).
//!
//! Hard link entries do not apply their own header metadata: the inode's metadata
//! comes from the target's entry (or from the lower file when copied up).
//! An entry naming the root (`./`) is allowed only as a directory and updates the
//! metadata of `dest` itself.
//!
//! Size bounds ([`Limits`]): the uncompressed tar stream, and separately the
//! apparent size of the files written (sparse holes and copy-ups included), may
//! not exceed `max_layer_unpacked_size`; an entry whose header already claims
//! more is refused before anything of it is written. The number of entries is
//! bounded by `max_layer_entries`, and the filesystem's free space is checked
//! against `min_free_space` before the unpack and every few MiB written.
//!
//! Sparse files: runs of zero blocks in a regular file's content (the holes the
//! `tar` crate fills in for old GNU sparse 'S' entries, or zeros stored
//! verbatim) are seeked over, not written, so they stay holes on disk. GNU
//! tar's PAX sparse formats 0.0, 0.1 and 1.0 (`--format=posix --sparse`),
//! which the `tar` crate does not know, are read here: the real name and size
//! from the `GNU.sparse.*` records, the chunks written at their offsets. Holes
//! count towards `max_layer_unpacked_size` (it bounds the apparent size).
//!
//! Known limitation: GNU long-name and PAX header records are buffered in memory by
//! the `tar` crate, so their size is bounded only by the (decompressed) archive,
//! i.e. by `max_layer_unpacked_size`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::sys::time::TimeSpec;

use crate::limits::{Exceeded, FreeSpaceError, Limits};

mod entry;
mod meta;
mod path;
mod sparse;
#[cfg(test)]
mod tests;

use meta::set_mtime;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Holes are found at this granularity (the usual filesystem block).
const BLOCK: usize = 4096;
static ZEROS: [u8; BLOCK] = [0; BLOCK];
/// How much of the blob is read at once: large enough that a layer of
/// many megabytes is a few thousand reads and inflate calls, not tens of
/// thousands (std's default buffer is 8 KiB).
const READ_AHEAD: usize = 128 << 10;
/// Free space is checked again after this many bytes written.
const FREE_SPACE_CHECK_EVERY: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI/Docker layer media type: ...tar, ...tar+gzip, ...tar+zstd,
    /// application/vnd.docker.image.rootfs.diff.tar.gzip, and the
    /// foreign/nondistributable variants. None for unknown types.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("snapshot directory {}: {reason}", path.display())]
    Destination { path: PathBuf, reason: String },
    #[error("layer blob {}: {source}", path.display())]
    Blob { path: PathBuf, source: io::Error },
    #[error("reading layer archive: {0}")]
    Archive(#[source] io::Error),
    /// A lower layer this one needed failed to unpack.
    #[error("{0}")]
    Lower(String),
    /// The entry is invalid or hostile (escape attempt, unsupported type, ...).
    #[error("layer entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    /// The layer crosses one of the `[images]` limits.
    #[error("{0}")]
    Limit(Exceeded),
    /// A filesystem operation failed while applying the entry.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: String,
        source: io::Error,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    /// Bytes of regular file content written (including files copied up from lowers).
    pub bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's DiffID.
    pub diff_id: String,
}

/// Hashes everything read through it: the DiffID of the uncompressed layer.
/// Fails once more than `max` bytes came through, and says so in `over`
/// (the `tar` crate may wrap the error it sees).
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    read: u64,
    max: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            self.over.set(true);
            return Err(io::Error::other("uncompressed layer over the size limit"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn refused(entry: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

fn io_err(entry: &str, op: impl Into<String>) -> impl FnOnce(io::Error) -> UnpackError {
    let (entry, op) = (entry.to_owned(), op.into());
    move |source| UnpackError::Io { entry, op, source }
}

/// Unpacks the layer blob at `blob` into `dest`, which must exist and be empty.
/// `lowers` are the already-unpacked snapshot dirs of the layers below, topmost first
/// (used only to resolve a hard link whose target is not in this layer: copy the
/// target file up from the first lower that has it, then link to the copy).
/// On error the caller deletes `dest`; nothing outside `dest` may have been touched.
/// `limits` bound what it may write (see the module doc); crossing one is
/// [`UnpackError::Limit`].
pub fn unpack_layer(
    blob: &Path,
    compression: Compression,
    dest: &Path,
    lowers: &[PathBuf],
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    unpack_layer_over(blob, None, compression, dest, lowers, &|| Ok(()), limits)
}

/// [`unpack_layer`] while the `lowers` may still be unpacking: they are
/// read only for a missing parent directory or a hard link whose target
/// is not in this layer, and `lowers_ready` is called first, each time,
/// to wait until they are all there (it says why not if one failed).
/// Layers that bring their own parents and links never wait, so a
/// pull's layers unpack side by side.
///
/// With `arriving`, the blob is read from it rather than from `blob`
/// (which then only names it in errors): a blob still downloading. The
/// stream is read to its end, so a reader that fails at the end (the blob
/// turned out wrong) fails the unpack.
pub fn unpack_layer_over(
    blob: &Path,
    arriving: Option<&mut dyn Read>,
    compression: Compression,
    dest: &Path,
    lowers: &[PathBuf],
    lowers_ready: &dyn Fn() -> Result<(), String>,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    let dest_err = |reason: String| UnpackError::Destination {
        path: dest.to_owned(),
        reason,
    };
    let md = fs::symlink_metadata(dest).map_err(|e| dest_err(e.to_string()))?;
    if !md.is_dir() {
        return Err(dest_err("not a directory".into()));
    }
    if fs::read_dir(dest)
        .map_err(|e| dest_err(e.to_string()))?
        .next()
        .is_some()
    {
        return Err(dest_err("not empty".into()));
    }

    let blob_err = |source| UnpackError::Blob {
        path: blob.to_owned(),
        source,
    };
    let file: Box<dyn Read + '_> = match arriving {
        Some(r) => Box::new(r),
        None => Box::new(File::open(blob).map_err(blob_err)?),
    };
    // Everything below streams: no layer is ever held in memory as a whole.
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(BufReader::with_capacity(READ_AHEAD, file)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            READ_AHEAD, file,
        ))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(blob_err)?),
    };
    let over = Rc::new(Cell::new(false));
    let mut archive = tar::Archive::new(HashingReader {
        inner: reader,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
        read: 0,
        max: limits.max_layer_unpacked_size,
        over: over.clone(),
    });
    let mut u = Unpacker {
        dest,
        lowers,
        lowers_ready,
        limits,
        stats: Unpacked::default(),
        dir_times: BTreeMap::new(),
        unchecked: 0,
        buf: vec![0; 32 * BLOCK],
    };
    u.check_free_space("", 0)?;
    let stream_limit = || {
        UnpackError::Limit(Exceeded::bytes(
            "the uncompressed layer has",
            "max_layer_unpacked_size",
            limits.max_layer_unpacked_size,
        ))
    };
    let walked = (|| {
        for entry in archive.entries().map_err(UnpackError::Archive)? {
            u.entry(&mut entry.map_err(UnpackError::Archive)?)?;
        }
        Ok(())
    })();
    match walked {
        Err(_) if over.get() => return Err(stream_limit()),
        r => r?,
    }
    // The DiffID covers the whole stream, end-of-archive padding included.
    let mut rest = archive.into_inner();
    if let Err(e) = io::copy(&mut rest, &mut io::sink()) {
        return Err(if over.get() {
            stream_limit()
        } else {
            blob_err(e)
        });
    }
    let diff_id = format!(
        "sha256:{}",
        hex::encode(sha2::Digest::finalize(rest.hasher))
    );
    let mut stats = u.finish()?;
    stats.diff_id = diff_id;
    Ok(stats)
}

struct Unpacker<'a> {
    dest: &'a Path,
    lowers: &'a [PathBuf],
    /// Waits until `lowers` are all unpacked.
    lowers_ready: &'a dyn Fn() -> Result<(), String>,
    limits: &'a Limits,
    stats: Unpacked,
    /// Directory mtimes, applied at the end (adding children changes them).
    dir_times: BTreeMap<PathBuf, TimeSpec>,
    /// Bytes written since free space was last checked.
    unchecked: u64,
    /// Copy buffer, a whole number of blocks.
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    /// Refuses if `n` more bytes of file content would cross
    /// `max_layer_unpacked_size`; with `add`, counts them as written.
    fn count_bytes(&mut self, name: &str, n: u64, add: bool) -> Result<(), UnpackError> {
        let max = self.limits.max_layer_unpacked_size;
        let total = self.stats.bytes.saturating_add(n);
        if total > max {
            let what = format!("entry {name:?}: the layer's files add up to");
            return Err(UnpackError::Limit(Exceeded::bytes(
                &what,
                "max_layer_unpacked_size",
                max,
            )));
        }
        if add {
            self.stats.bytes = total;
        }
        Ok(())
    }

    /// Refuses if writing `more` bytes would eat into `min_free_space`.
    fn check_free_space(&mut self, name: &str, more: u64) -> Result<(), UnpackError> {
        self.unchecked = 0;
        match self.limits.min_free_space.check(self.dest, more) {
            Ok(()) => Ok(()),
            Err(FreeSpaceError::Exceeded(e)) => Err(UnpackError::Limit(e)),
            Err(FreeSpaceError::Statvfs(e)) => Err(io_err(name, "statvfs")(e)),
        }
    }

    /// Applies directory mtimes, deepest first, to directories that still exist.
    fn finish(self) -> Result<Unpacked, UnpackError> {
        let mut dirs: Vec<_> = self.dir_times.into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, t) in dirs {
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                let name = p.strip_prefix(self.dest).unwrap_or(&p).to_string_lossy();
                set_mtime(&p, &t).map_err(io_err(&name, "set directory mtime"))?;
            }
        }
        Ok(self.stats)
    }
}
