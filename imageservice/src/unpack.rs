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
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use crate::limits::{Exceeded, FreeSpaceError, Limits};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Holes are found at this granularity (the usual filesystem block).
const BLOCK: usize = 4096;
static ZEROS: [u8; BLOCK] = [0; BLOCK];
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
    let file = File::open(blob).map_err(blob_err)?;
    // Everything below streams: no layer is ever held in memory as a whole.
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(BufReader::new(file)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
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

/// Splits a raw archive path into plain components ("." and empty ones dropped).
/// The result may be empty (the path names the root).
fn split_path(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
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

fn join(comps: &[OsString]) -> String {
    let v: Vec<_> = comps.iter().map(|c| c.to_string_lossy()).collect();
    v.join("/")
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Metadata of an entry, taken from its header and PAX records.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<R>, name: &str) -> Result<Meta, UnpackError> {
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

fn num<T: TryFrom<u64>>(v: io::Result<u64>) -> Option<T> {
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

/// Sets one xattr according to the policy documented at the top of the module.
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

fn set_mtime(path: &Path, t: &TimeSpec) -> io::Result<()> {
    Ok(utimensat(
        AT_FDCWD,
        path,
        t,
        t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

/// `create_new` = O_CREAT|O_EXCL: never follows or reuses an existing node.
fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn nix_io(r: nix::Result<()>) -> io::Result<()> {
    Ok(r?)
}

/// Result of looking a hard link target up in one layer directory.
enum Lookup {
    Found(PathBuf),
    /// Not in this layer; lower layers may have it.
    Absent,
    /// Deleted or shadowed by this layer (whiteout, non-dir parent, opaque dir).
    Hidden,
}

struct Unpacker<'a> {
    dest: &'a Path,
    lowers: &'a [PathBuf],
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

    /// Copies a file's content into the new file `f`, counting it against
    /// the limits; whole zero blocks are seeked over (left as holes) and the
    /// length is set at the end, so sparse content stays sparse.
    fn write_contents(
        &mut self,
        name: &str,
        r: &mut impl Read,
        f: &mut File,
    ) -> Result<(), UnpackError> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.copy_sparse(name, r, f, &mut buf);
        self.buf = buf;
        f.set_len(result?).map_err(io_err(name, "set file length"))
    }

    /// Writes a PAX sparse entry's data chunks at their offsets; the rest
    /// of the file stays holes (counted as its apparent size).
    fn write_pax_sparse<R: Read>(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<R>,
        f: &mut File,
        sparse: &PaxSparse,
    ) -> Result<(), UnpackError> {
        let bad = |what: &str| refused(name, format!("bad PAX sparse map: {what}"));
        let map = match &sparse.map {
            Some(m) => m.clone(),
            None => read_sparse_map(entry).map_err(|e| bad(&e))?,
        };
        let mut buf = std::mem::take(&mut self.buf);
        let mut end = 0u64;
        let mut data = 0u64;
        let mut result = Ok(());
        for &(offset, len) in &map {
            let chunk_end = offset.checked_add(len).ok_or_else(|| bad("overflow"))?;
            if offset < end || chunk_end > sparse.size {
                result = Err(bad("chunks out of order or past the file's size"));
                break;
            }
            end = chunk_end;
            if let Err(e) = f.seek(SeekFrom::Start(offset)) {
                result = Err(io_err(name, "seek to sparse chunk")(e));
                break;
            }
            match self.copy_sparse(name, &mut entry.take(len), f, &mut buf) {
                Ok(n) if n == len => data += n,
                Ok(_) => {
                    result = Err(bad("the data is shorter than the map"));
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.buf = buf;
        result?;
        // The holes count towards the layer's apparent size.
        self.count_bytes(name, sparse.size - data, true)?;
        f.set_len(sparse.size)
            .map_err(io_err(name, "set file length"))
    }

    fn copy_sparse(
        &mut self,
        name: &str,
        r: &mut impl Read,
        f: &mut File,
        buf: &mut [u8],
    ) -> Result<u64, UnpackError> {
        let mut len = 0u64;
        let mut hole = 0u64;
        loop {
            let n = read_full(r, buf).map_err(io_err(name, "read file content"))?;
            if n == 0 {
                break;
            }
            self.count_bytes(name, n as u64, true)?;
            len += n as u64;
            // Runs of data blocks are written in one call; zero blocks
            // only move the position.
            let mut data_start = None;
            for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                let at = i * BLOCK;
                if *block == ZEROS[..block.len()] {
                    if let Some(s) = data_start.take() {
                        self.write_run(name, f, &mut hole, &buf[s..at])?;
                    }
                    hole += block.len() as u64;
                } else if data_start.is_none() {
                    data_start = Some(at);
                }
            }
            if let Some(s) = data_start {
                self.write_run(name, f, &mut hole, &buf[s..n])?;
            }
        }
        Ok(len)
    }

    fn write_run(
        &mut self,
        name: &str,
        f: &mut File,
        hole: &mut u64,
        data: &[u8],
    ) -> Result<(), UnpackError> {
        if *hole > 0 {
            let off = i64::try_from(*hole).map_err(|_| refused(name, "hole too large"))?;
            f.seek(SeekFrom::Current(off))
                .map_err(io_err(name, "seek over hole"))?;
            *hole = 0;
        }
        self.unchecked += data.len() as u64;
        if self.unchecked >= FREE_SPACE_CHECK_EVERY {
            self.check_free_space(name, 0)?;
        }
        f.write_all(data).map_err(io_err(name, "write file"))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), UnpackError> {
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

    /// Owner, xattrs, mode, mtime, in that order: chown clears setuid bits and
    /// file capabilities, so xattrs and mode come after it.
    fn apply_meta(
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
                        .lower_dir(&comps[..=i])
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
    fn lower_dir(&self, comps: &[OsString]) -> Option<fs::Metadata> {
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

/// Most chunks a PAX sparse map may list (16 bytes of memory each).
const MAX_SPARSE_CHUNKS: usize = 1 << 20;

/// A sparse file in GNU tar's PAX formats (`tar --format=posix --sparse`):
/// 0.0 (`GNU.sparse.offset`/`numbytes` records), 0.1 (`GNU.sparse.map`) and
/// 1.0 (the map at the head of the data). `name` replaces the header's
/// `GNUSparseFile.N/...` name in 0.1 and 1.0.
struct PaxSparse {
    name: Option<Vec<u8>>,
    size: u64,
    /// (offset, length) of the data chunks; `None`: read it from the data (1.0).
    map: Option<Vec<(u64, u64)>>,
}

/// The entry's PAX sparse description, if it has one.
fn pax_sparse<R: Read>(entry: &mut tar::Entry<R>) -> Result<Option<PaxSparse>, String> {
    let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    else {
        return Ok(None);
    };
    let num = |v: &[u8]| -> Result<u64, String> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "bad number {:?} in PAX sparse record",
                    v.escape_ascii().to_string()
                )
            })
    };
    let (mut major, mut name, mut size, mut map) = (None, None, None, None::<Vec<(u64, u64)>>);
    let mut offset = None;
    for rec in pax {
        let rec = rec.map_err(|e| format!("bad PAX record: {e}"))?;
        let v = rec.value_bytes();
        match rec.key_bytes() {
            b"GNU.sparse.major" => major = Some(num(v)?),
            b"GNU.sparse.name" => name = Some(v.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => size = Some(num(v)?),
            b"GNU.sparse.map" => {
                let nums = v
                    .split(|b| *b == b',')
                    .filter(|n| !n.is_empty())
                    .map(num)
                    .collect::<Result<Vec<_>, _>>()?;
                if nums.len() % 2 != 0 || nums.len() / 2 > MAX_SPARSE_CHUNKS {
                    return Err("bad GNU.sparse.map".into());
                }
                map = Some(nums.chunks(2).map(|c| (c[0], c[1])).collect());
            }
            b"GNU.sparse.offset" => offset = Some(num(v)?),
            b"GNU.sparse.numbytes" => {
                let o = offset
                    .take()
                    .ok_or("GNU.sparse.numbytes without an offset")?;
                let m = map.get_or_insert_with(Vec::new);
                if m.len() >= MAX_SPARSE_CHUNKS {
                    return Err("too many GNU.sparse chunks".into());
                }
                m.push((o, num(v)?));
            }
            _ => {}
        }
    }
    let Some(size) = size else {
        return Ok(None); // not a sparse file
    };
    match major {
        Some(1) if map.is_none() => Ok(Some(PaxSparse {
            name,
            size,
            map: None,
        })),
        Some(m) if m != 0 => Err(format!("unsupported PAX sparse format {m}")),
        _ => {
            let map = map.ok_or("PAX sparse entry without a map")?;
            Ok(Some(PaxSparse {
                name,
                size,
                map: Some(map),
            }))
        }
    }
}

/// Reads the map at the head of a PAX 1.0 sparse file's data: the number
/// of chunks, then offset and length of each, one decimal per line, padded
/// with zeros to a 512-byte record.
fn read_sparse_map(r: &mut impl Read) -> Result<Vec<(u64, u64)>, String> {
    let mut consumed = 0usize;
    let mut line = |consumed: &mut usize| -> Result<u64, String> {
        let mut digits = String::new();
        loop {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)
                .map_err(|e| format!("reading the map: {e}"))?;
            *consumed += 1;
            match b[0] {
                b'\n' => break,
                d if d.is_ascii_digit() && digits.len() < 20 => digits.push(char::from(d)),
                _ => return Err("not a decimal number".into()),
            }
        }
        digits
            .parse()
            .map_err(|_| "not a decimal number".to_string())
    };
    let count = line(&mut consumed)?;
    if count > MAX_SPARSE_CHUNKS as u64 {
        return Err(format!("{count} chunks (at most {MAX_SPARSE_CHUNKS})"));
    }
    let mut map = Vec::new();
    for _ in 0..count {
        let offset = line(&mut consumed)?;
        map.push((offset, line(&mut consumed)?));
    }
    let pad = (512 - consumed % 512) % 512;
    io::copy(&mut r.take(pad as u64), &mut io::sink())
        .map_err(|e| format!("reading the map: {e}"))?;
    Ok(map)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
/// Full reads keep blocks aligned with file offsets.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Looks `comps` up in one layer dir without following any symlink.
fn lookup(name: &str, layer: &Path, comps: &[OsString]) -> Result<Lookup, UnpackError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, FileTypeExt};
    use std::sync::atomic::{AtomicU32, Ordering};

    const T0: i64 = 1_500_000_000;

    /// A scratch directory under /tmp, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            let p = PathBuf::from(format!("/tmp/berth-unpack-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn dir(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            fs::create_dir_all(&p).unwrap();
            p
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Tar writer that puts raw name bytes into the header (bypassing the tar
    /// crate's own path validation, so hostile names can be produced).
    struct Tb {
        b: tar::Builder<Vec<u8>>,
        uid: u64,
    }
    impl Tb {
        fn new() -> Tb {
            Tb {
                b: tar::Builder::new(Vec::new()),
                uid: 0,
            }
        }
        fn header(
            &self,
            ty: EntryType,
            name: &str,
            link: &str,
            mode: u32,
            size: usize,
        ) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(ty);
            h.set_mode(mode);
            h.set_uid(self.uid);
            h.set_gid(self.uid + 1);
            h.set_mtime(T0 as u64);
            h.set_size(size as u64);
            h
        }
        fn add(
            &mut self,
            ty: EntryType,
            name: &str,
            link: &str,
            mode: u32,
            data: &[u8],
        ) -> &mut Tb {
            let mut h = self.header(ty, name, link, mode, data.len());
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }
        /// Entries "T name [link-or-content]" separated by "; ". T: F file, D dir,
        /// S symlink, L hard link, P PAX record "key=value", other: raw type byte.
        fn spec(&mut self, spec: &str) -> &mut Tb {
            for e in spec.split("; ") {
                let mut f = e.splitn(3, ' ');
                let (t, name) = (f.next().unwrap().as_bytes()[0], f.next().unwrap_or(""));
                let arg = f.next().unwrap_or("");
                match t {
                    b'F' => self.add(EntryType::Regular, name, "", 0o644, arg.as_bytes()),
                    b'D' => self.add(EntryType::Directory, name, "", 0o755, b""),
                    b'S' => self.add(EntryType::Symlink, name, arg, 0o777, b""),
                    b'L' => self.add(EntryType::Link, name, arg, 0o644, b""),
                    b'P' => {
                        let (k, v) = name.split_once('=').unwrap();
                        self.pax(&[(k, v.as_bytes())])
                    }
                    t => self.add(EntryType::new(t), name, "", 0o644, b""),
                };
            }
            self
        }
        fn dev(&mut self, ty: EntryType, name: &str, major: u32, minor: u32) -> &mut Tb {
            let mut h = self.header(ty, name, "", 0o666, 0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_cksum();
            self.b.append(&h, io::empty()).unwrap();
            self
        }
        /// A PAX extended header applying to the next entry.
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tb {
            let mut data = Vec::new();
            for (k, v) in records {
                let body = [b" ", k.as_bytes(), b"=", v, b"\n"].concat();
                let mut len = body.len() + 1;
                while len.to_string().len() + body.len() != len {
                    len += 1;
                }
                data.extend_from_slice(format!("{len}").as_bytes());
                data.extend_from_slice(&body);
            }
            self.add(EntryType::XHeader, "PaxHeader", "", 0o644, &data)
        }
        fn blob(&mut self, dir: &Path, c: Compression) -> PathBuf {
            let tar = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
            let tar = tar.into_inner().unwrap();
            let bytes = match c {
                Compression::None => tar,
                Compression::Gzip => {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    e.write_all(&tar).unwrap();
                    e.finish().unwrap()
                }
                Compression::Zstd => zstd::encode_all(&tar[..], 3).unwrap(),
            };
            let p = dir.join(format!("layer-{c:?}"));
            fs::write(&p, bytes).unwrap();
            p
        }
    }

    fn lmeta(p: impl AsRef<Path>) -> fs::Metadata {
        fs::symlink_metadata(p).unwrap()
    }
    /// (mode & 07777, uid, gid, mtime)
    fn attrs(p: impl AsRef<Path>) -> (u32, u32, u32, i64) {
        let m = lmeta(p);
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime())
    }
    fn xget(p: impl AsRef<Path>, k: &str) -> Option<Vec<u8>> {
        xattr::get(p, k).unwrap()
    }

    #[test]
    fn media_types() {
        let m = Compression::from_media_type;
        let oci = "application/vnd.oci.image.layer";
        assert_eq!(m(&format!("{oci}.v1.tar")), Some(Compression::None));
        assert_eq!(m(&format!("{oci}.v1.tar+gzip")), Some(Compression::Gzip));
        assert_eq!(m(&format!("{oci}.v1.tar+zstd")), Some(Compression::Zstd));
        let nd = format!("{oci}.nondistributable.v1.tar+gzip");
        assert_eq!(m(&nd), Some(Compression::Gzip));
        let docker = "application/vnd.docker.image.rootfs";
        assert_eq!(
            m(&format!("{docker}.diff.tar.gzip")),
            Some(Compression::Gzip)
        );
        assert_eq!(
            m(&format!("{docker}.foreign.diff.tar.gzip")),
            Some(Compression::Gzip)
        );
        assert_eq!(m("application/vnd.oci.image.config.v1+json"), None);
    }

    #[test]
    fn unpacks_all_entry_types() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let s = Scratch::new();
            let dest = s.dir("dest");
            let mut tb = Tb::new();
            tb.spec("D ./");
            tb.uid = 1000;
            tb.pax(&[
                ("SCHILY.xattr.user.foo", b"bar"),
                ("SCHILY.xattr.trusted.t", b"tv"),
            ]);
            tb.add(EntryType::Directory, "./etc/", "", 0o750, b"");
            tb.add(
                EntryType::Regular,
                "./etc/passwd",
                "",
                0o4755,
                b"root:x:0:0\n",
            );
            tb.spec("S etc/link passwd; L etc/hard ./etc/passwd");
            tb.uid = 0;
            tb.add(EntryType::Fifo, "dev/fifo", "", 0o640, b"");
            tb.dev(EntryType::Char, "dev/null", 1, 3)
                .dev(EntryType::Block, "dev/loop9", 7, 9);
            tb.spec("P mtime=1600000000.25; F nanos");
            let long = format!("long/{}", "x".repeat(150)); // GNU long name
            let mut h = tb.header(EntryType::Regular, "", "", 0o644, 4);
            tb.b.append_data(&mut h, &long, &b"long"[..]).unwrap();
            // Old-style '\0' type: a file, and a directory (trailing slash).
            for (n, data) in [("old.txt", &b"old"[..]), ("olddir/", b"")] {
                let mut h = tb.header(EntryType::Regular, n, "", 0o600, data.len());
                h.as_old_mut().linkflag = [0];
                h.set_cksum();
                tb.b.append(&h, data).unwrap();
            }
            tb.spec("F sub/x gone soon; F .wh.gone; F sub/.wh.x; F opq/.wh..wh..opq");
            let blob = tb.blob(&s.0, c);

            let res = unpack_layer(&blob, c, &dest, &[], &Limits::default()).unwrap();
            assert_eq!((res.entries, res.bytes), (16, 11 + 4 + 3 + 9));
            // The DiffID is the digest of the uncompressed stream, whatever
            // the compression.
            if c == Compression::None {
                let raw = fs::read(&blob).unwrap();
                assert_eq!(res.diff_id, crate::digest::Digest::of(&raw).to_string());
            }

            // Directory mtime is applied after its children were created.
            assert_eq!(attrs(dest.join("etc")), (0o750, 1000, 1001, T0));
            assert_eq!(xget(dest.join("etc"), "user.foo").unwrap(), b"bar");
            assert_eq!(xget(dest.join("etc"), "trusted.t").unwrap(), b"tv");
            let pw = dest.join("etc/passwd");
            assert_eq!(attrs(&pw), (0o4755, 1000, 1001, T0));
            assert_eq!(fs::read(&pw).unwrap(), b"root:x:0:0\n");
            assert!(lmeta(dest.join("etc/link")).file_type().is_symlink());
            assert_eq!(attrs(dest.join("etc/link")), (0o777, 1000, 1001, T0));
            assert_eq!(
                fs::read_link(dest.join("etc/link")).unwrap(),
                Path::new("passwd")
            );
            assert_eq!(lmeta(dest.join("etc/hard")).ino(), lmeta(&pw).ino());
            let (mode, uid, gid, _) = attrs(dest.join("dev")); // created: not in the tar
            assert_eq!((mode, uid, gid), (0o755, 0, 0));
            assert!(lmeta(dest.join("dev/fifo")).file_type().is_fifo());
            assert_eq!(attrs(dest.join("dev/fifo")).0, 0o640);
            let n = lmeta(dest.join("dev/null"));
            assert!(n.file_type().is_char_device() && n.rdev() == makedev(1, 3));
            assert_eq!(n.mode() & 0o7777, 0o666);
            let b = lmeta(dest.join("dev/loop9"));
            assert!(b.file_type().is_block_device() && b.rdev() == makedev(7, 9));
            let t = lmeta(dest.join("nanos"));
            assert_eq!((t.mtime(), t.mtime_nsec()), (1_600_000_000, 250_000_000));
            assert_eq!(fs::read(dest.join(&long)).unwrap(), b"long");
            assert!(lmeta(dest.join("old.txt")).is_file() && lmeta(dest.join("olddir")).is_dir());
            for wh in ["gone", "sub/x"] {
                let m = lmeta(dest.join(wh));
                assert!(m.file_type().is_char_device() && m.rdev() == 0, "{wh}");
            }
            assert!(!dest.join(".wh.gone").exists() && !dest.join("sub/.wh.x").exists());
            assert_eq!(xget(dest.join("opq"), OPAQUE_XATTR).unwrap(), b"y");
            assert!(!dest.join("opq/.wh..wh..opq").exists());
        }
    }

    #[test]
    fn hardlink_copied_up_from_lower() {
        let s = Scratch::new();
        let (l1, l2, dest) = (s.dir("l1/usr/bin"), s.dir("l2/usr/bin"), s.dir("dest"));
        let tool = l2.join("tool");
        fs::write(&tool, b"#!tool").unwrap();
        lchown(&tool, Some(7), Some(8)).unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o751)).unwrap();
        xattr::set(&tool, "user.k", b"v").unwrap();
        set_mtime(&tool, &TimeSpec::new(T0, 0)).unwrap();
        let lowers = [s.0.join("l1"), s.0.join("l2")];
        let blob = Tb::new()
            .spec("L usr/bin/alias usr/bin/tool")
            .blob(&s.0, Compression::None);

        let res =
            unpack_layer(&blob, Compression::None, &dest, &lowers, &Limits::default()).unwrap();
        assert_eq!((res.entries, res.bytes), (1, 6));
        let copy = dest.join("usr/bin/tool");
        assert_eq!(fs::read(&copy).unwrap(), b"#!tool");
        assert_eq!(attrs(&copy), (0o751, 7, 8, T0));
        assert_eq!(xget(&copy, "user.k").unwrap(), b"v");
        assert_eq!(lmeta(dest.join("usr/bin/alias")).ino(), lmeta(&copy).ino());
        assert_eq!(lmeta(&tool).nlink(), 1, "lower file untouched");

        // A whiteout in the upper lower hides the bottom file.
        mknod(&l1.join("tool"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        let dest2 = s.dir("dest2");
        let err = unpack_layer(
            &blob,
            Compression::None,
            &dest2,
            &lowers,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn missing_parents_take_owner_and_mode_from_the_lowers() {
        let s = Scratch::new();
        let tmp = s.dir("l1/tmp");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
        let home = s.dir("l1/home/app");
        lchown(&home, Some(1000), Some(1000)).unwrap();
        let dest = s.dir("dest");
        let blob = Tb::new()
            .spec("F tmp/x x; F home/app/.profile p; F new/y y")
            .blob(&s.0, Compression::None);
        unpack_layer(
            &blob,
            Compression::None,
            &dest,
            &[s.0.join("l1")],
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            attrs(dest.join("tmp")).0,
            0o1777,
            "/tmp keeps its sticky bit"
        );
        let (_, uid, gid, _) = attrs(dest.join("home/app"));
        assert_eq!((uid, gid), (1000, 1000));
        let (mode, uid, _, _) = attrs(dest.join("new"));
        assert_eq!((mode, uid), (0o755, 0), "unknown below: the default");
    }

    /// Every escape attempt fails and leaves everything outside `dest` untouched.
    #[test]
    fn hostile_layers_are_refused() {
        let s = Scratch::new();
        let out = s.dir("outside");
        fs::write(out.join("secret"), b"s3cret").unwrap();
        let lower = s.dir("lower");
        symlink(&out, lower.join("etc")).unwrap(); // a lower layer with `etc -> outside`
        // dest is s/dN/a/dest, so "../../outside" from dest/x reaches s/outside.
        let cases = [
            ("absolute path", format!("F {}/abs", out.display())),
            ("escapes", "F ../x".into()),
            ("escapes", "F a/../../x".into()),
            ("empty path", "F ".into()),
            ("snapshot root", "F ./".into()),
            ("escapes", "P path=../../x; F ok".into()),
            (
                "parent \"evil\" is a symlink",
                "S evil ../../outside; F evil/pwned".into(),
            ),
            ("is a symlink", "S a b; S b ../../outside; F a/file".into()),
            ("escapes", "L h ../../etc/passwd".into()),
            ("absolute", "L h /etc/passwd".into()),
            (
                "target \"s\" is a symlink",
                "S s ../../outside/secret; L h s".into(),
            ),
            ("is a symlink", "S d ../../outside; L h d/secret".into()),
            ("is a symlink", "L h etc/secret".into()), // through the lower's symlink
            (
                "is a symlink",
                "S evil ../../outside; F evil/.wh.secret".into(),
            ),
            (
                "is a symlink",
                "S evil ../../outside; F evil/.wh..wh..opq".into(),
            ),
            ("invalid whiteout", "F a/.wh...".into()),
            ("unsupported entry type", "Z z".into()),
        ];
        for (i, (want, spec)) in cases.iter().enumerate() {
            let dest = s.dir(&format!("d{i}/a/dest"));
            let blob = Tb::new().spec(spec).blob(&s.0, Compression::Gzip);
            let lowers = std::slice::from_ref(&lower);
            let err = unpack_layer(&blob, Compression::Gzip, &dest, lowers, &Limits::default())
                .unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with("layer entry \"") && msg.contains(want),
                "{spec}: {msg}"
            );
            assert!(
                matches!(err, UnpackError::Refused { .. }),
                "{spec}: {err:?}"
            );
            assert_outside_untouched(&s, &out, spec);
        }

        // Entries over existing symlinks replace the symlink, never write through it.
        let dest = s.dir("ok/a/dest");
        let spec = "S f ../../outside/new; F f mine; S g ../../outside/secret; F g mine; \
                    S d ../../outside; D d; F d/x mine; S s ../../outside/secret; F t; L s t";
        let blob = Tb::new().spec(spec).blob(&s.0, Compression::Zstd);
        unpack_layer(&blob, Compression::Zstd, &dest, &[], &Limits::default()).unwrap();
        for f in ["f", "g", "d/x"] {
            assert!(lmeta(dest.join(f)).is_file() && fs::read(dest.join(f)).unwrap() == b"mine");
        }
        assert!(lmeta(dest.join("d")).is_dir());
        assert_eq!(lmeta(dest.join("s")).ino(), lmeta(dest.join("t")).ino());
        assert_outside_untouched(&s, &out, spec);
    }

    /// A GNU sparse entry ('S', as `tar --sparse` writes by default):
    /// `chunks` of (offset, data) in a file of `size` bytes.
    fn gnu_sparse(tb: &mut Tb, name: &str, size: u64, chunks: &[(u64, &[u8])]) {
        let data: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        let mut h = tb.header(EntryType::GNUSparse, name, "", 0o644, data.len());
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(size);
        for (slot, (off, d)) in g.sparse.iter_mut().zip(chunks) {
            slot.set_offset(*off);
            slot.set_length(d.len() as u64);
        }
        h.set_cksum();
        tb.b.append(&h, &data[..]).unwrap();
    }

    fn limits(bytes: u64, entries: u64) -> Limits {
        Limits {
            max_layer_unpacked_size: bytes,
            max_layer_entries: entries,
            ..Limits::default()
        }
    }

    #[test]
    fn sparse_files_stay_sparse() {
        let s = Scratch::new();
        let dest = s.dir("dest");
        let size = 1u64 << 30;
        let mut tb = Tb::new();
        // Chunks are whole 512-byte records but the last, as GNU tar makes them.
        let mut head = vec![7u8; 512];
        head[..4].copy_from_slice(b"head");
        let tail = [&[9u8; 508][..], b"tail"].concat();
        let chunks = [
            (0, &head[..]),
            (size / 2 + 512, &tail[..]),
            (size - 4, b"tail"),
        ];
        gnu_sparse(&mut tb, "disk.img", size, &chunks);
        // Zeros stored verbatim in a plain file become holes too.
        let mut zeros = vec![0u8; 1 << 20];
        zeros[..3].copy_from_slice(b"abc");
        tb.add(EntryType::Regular, "zeros", "", 0o644, &zeros);
        let blob = tb.blob(&s.0, Compression::Gzip);
        let res = unpack_layer(&blob, Compression::Gzip, &dest, &[], &Limits::default()).unwrap();
        assert_eq!(res.bytes, size + (1 << 20));
        let m = lmeta(dest.join("disk.img"));
        assert_eq!(m.len(), size);
        assert!(
            m.blocks() * 512 <= 64 << 10,
            "{} blocks allocated",
            m.blocks()
        );
        let mut f = File::open(dest.join("disk.img")).unwrap();
        let mut b = [0u8; 4];
        f.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"head");
        f.seek(SeekFrom::Start(size / 2)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert_eq!(b, [0; 4]);
        f.seek(SeekFrom::Start(size / 2 + 1020)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"tail");
        f.seek(SeekFrom::Start(size - 4)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"tail");
        let z = lmeta(dest.join("zeros"));
        assert_eq!(z.len(), 1 << 20);
        assert!(
            z.blocks() * 512 <= 64 << 10,
            "{} blocks allocated",
            z.blocks()
        );
        assert_eq!(fs::read(dest.join("zeros")).unwrap(), zeros);
    }

    /// The three PAX sparse formats, written by hand, and every format GNU
    /// tar itself writes with `--sparse` (its default `gnu` format and
    /// `posix` with sparse versions 0.0, 0.1 and 1.0).
    #[test]
    fn pax_and_gnu_tar_sparse_formats() {
        let s = Scratch::new();
        let size: u64 = 64 << 20;
        let (second, size_s) = (size / 2, size.to_string());
        let check = |f: &Path| {
            let m = lmeta(f);
            assert_eq!(m.len(), size, "{}", f.display());
            assert!(
                m.blocks() * 512 <= 64 << 10,
                "{}: {} blocks",
                f.display(),
                m.blocks()
            );
            let mut file = File::open(f).unwrap();
            let mut b = [0u8; 4];
            for (at, want) in [(0, b"head"), (second, b"tail"), (size - 4, &[0; 4])] {
                file.seek(SeekFrom::Start(at)).unwrap();
                file.read_exact(&mut b).unwrap();
                assert_eq!(&b, want, "{} at {at}", f.display());
            }
        };
        let mut tb = Tb::new();
        let off = second.to_string();
        tb.pax(&[
            ("GNU.sparse.size", size_s.as_bytes()),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.offset", b"0"),
            ("GNU.sparse.numbytes", b"4"),
            ("GNU.sparse.offset", off.as_bytes()),
            ("GNU.sparse.numbytes", b"4"),
        ]);
        tb.add(EntryType::Regular, "v00", "", 0o644, b"headtail");
        let map = format!("0,4,{second},4,{size},0");
        tb.pax(&[
            ("GNU.sparse.size", size_s.as_bytes()),
            ("GNU.sparse.name", b"v01"),
            ("GNU.sparse.map", map.as_bytes()),
        ]);
        tb.add(
            EntryType::Regular,
            "GNUSparseFile.1/v01",
            "",
            0o644,
            b"headtail",
        );
        tb.pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"v10"),
            ("GNU.sparse.realsize", size_s.as_bytes()),
        ]);
        let mut data = format!("2\n0\n4\n{second}\n4\n").into_bytes();
        data.resize(512, 0);
        data.extend_from_slice(b"headtail");
        tb.add(EntryType::Regular, "GNUSparseFile.1/v10", "", 0o644, &data);
        let blob = tb.blob(&s.0, Compression::None);
        let dest = s.dir("dest");
        let res = unpack_layer(&blob, Compression::None, &dest, &[], &Limits::default()).unwrap();
        assert_eq!((res.entries, res.bytes), (3, 3 * size));
        for f in ["v00", "v01", "v10"] {
            check(&dest.join(f));
        }
        assert!(!dest.join("GNUSparseFile.1").exists());

        // GNU tar's own archives.
        let src = s.dir("src");
        let f = File::create(src.join("disk.img")).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", second).unwrap();
        for (i, args) in [
            &["--sparse"][..],
            &["--sparse", "--format=posix", "--sparse-version=0.0"],
            &["--sparse", "--format=posix", "--sparse-version=0.1"],
            &["--sparse", "--format=posix", "--sparse-version=1.0"],
        ]
        .iter()
        .enumerate()
        {
            let tar = s.0.join(format!("gnu-{i}.tar"));
            let st = std::process::Command::new("tar")
                .args(*args)
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&src)
                .arg("disk.img")
                .status()
                .expect("GNU tar (Debian's tar package) is needed for this test");
            assert!(st.success(), "tar {args:?}");
            let dest = s.dir(&format!("gnu-dest-{i}"));
            let lim = limits(size, 10);
            unpack_layer(&tar, Compression::None, &dest, &[], &lim)
                .unwrap_or_else(|e| panic!("tar {args:?}: {e}"));
            check(&dest.join("disk.img"));
            let names: Vec<_> = fs::read_dir(&dest)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["disk.img"], "tar {args:?}");
            // One byte less of limit: the hole counts.
            let dest = s.dir(&format!("gnu-small-{i}"));
            let err = unpack_layer(&tar, Compression::None, &dest, &[], &limits(size - 1, 10))
                .unwrap_err();
            assert!(matches!(err, UnpackError::Limit(_)), "tar {args:?}: {err}");
        }
    }

    /// A 4 GiB file of zeros gzipped to a few MiB: refused from its header,
    /// before anything is written; the same bytes hidden from the header
    /// (not a tar at all) stop at the stream bound.
    #[test]
    fn gzip_bombs_stop_at_the_size_limit() {
        let s = Scratch::new();
        let bomb = s.0.join("bomb.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&bomb).unwrap(),
            flate2::Compression::fast(),
        );
        let size = 4u64 << 30;
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        gz.write_all(h.as_bytes()).unwrap();
        // Only 2 MiB really follow: the header's claim alone is refused.
        let zeros = vec![0u8; 2 << 20];
        gz.write_all(&zeros).unwrap();
        gz.finish().unwrap();
        assert!(fs::metadata(&bomb).unwrap().len() < 64 << 10);

        let dest = s.dir("dest");
        let lim = limits(1 << 20, 100);
        let err = unpack_layer(&bomb, Compression::Gzip, &dest, &[], &lim).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, UnpackError::Limit(_)), "{err:?}");
        assert!(
            msg.contains("\"zeros\"")
                && msg.contains("[images] max_layer_unpacked_size = \"1MiB\""),
            "{msg}"
        );
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "nothing written");

        // A file whose header is honest but whose content crosses the limit
        // midway: counted as written, stopped there.
        let dest = s.dir("dest2");
        let mut tb = Tb::new();
        tb.add(EntryType::Regular, "a", "", 0o644, &vec![1u8; 768 << 10]);
        tb.add(EntryType::Regular, "b", "", 0o644, &vec![2u8; 768 << 10]);
        let blob = tb.blob(&s.0, Compression::Gzip);
        let err = unpack_layer(&blob, Compression::Gzip, &dest, &[], &lim).unwrap_err();
        assert!(matches!(err, UnpackError::Limit(_)), "{err:?}");
        assert!(err.to_string().contains("\"b\""), "{err}");
        assert!(!dest.join("b").exists(), "refused before it was created");

        // 2 MiB of zeros that are no tar header: the end of the archive
        // comes at once, but the stream (hashed for the DiffID) is bounded.
        let raw = s.0.join("raw.gz");
        let mut gz =
            flate2::write::GzEncoder::new(File::create(&raw).unwrap(), flate2::Compression::fast());
        gz.write_all(&zeros).unwrap();
        gz.finish().unwrap();
        let dest = s.dir("dest3");
        let err = unpack_layer(&raw, Compression::Gzip, &dest, &[], &lim).unwrap_err();
        assert!(matches!(err, UnpackError::Limit(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("the uncompressed layer has more than 1048576 bytes"),
            "{err}"
        );
    }

    #[test]
    fn entries_are_bounded() {
        let s = Scratch::new();
        let mut tb = Tb::new();
        for i in 0..11 {
            tb.add(EntryType::Regular, &format!("f{i}"), "", 0o644, b"x");
        }
        let blob = tb.blob(&s.0, Compression::None);
        let dest = s.dir("ok");
        let res = unpack_layer(&blob, Compression::None, &dest, &[], &limits(1 << 20, 11)).unwrap();
        assert_eq!(res.entries, 11);
        let dest = s.dir("over");
        let err =
            unpack_layer(&blob, Compression::None, &dest, &[], &limits(1 << 20, 10)).unwrap_err();
        assert!(matches!(err, UnpackError::Limit(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("more than 10 entries (limit: [images] max_layer_entries = 10)"),
            "{err}"
        );
    }

    #[test]
    fn the_free_space_reserve_is_kept() {
        let s = Scratch::new();
        let blob = Tb::new().spec("F a x").blob(&s.0, Compression::None);
        let dest = s.dir("dest");
        let lim = Limits {
            min_free_space: crate::limits::FreeSpace::Percent(100),
            ..Limits::default()
        };
        let err = unpack_layer(&blob, Compression::None, &dest, &[], &lim).unwrap_err();
        assert!(
            err.to_string().contains("min_free_space = \"100%\""),
            "{err}"
        );
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
    }

    fn assert_outside_untouched(s: &Scratch, out: &Path, spec: &str) {
        let names: Vec<_> = fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "{spec}: outside dir modified");
        let m = lmeta(out.join("secret"));
        assert_eq!((m.nlink(), m.len()), (1, 6), "{spec}");
        assert!(xget(out, OPAQUE_XATTR).is_none(), "{spec}");
        assert!(!s.0.join("x").exists(), "{spec}: escaped file created");
    }
}
