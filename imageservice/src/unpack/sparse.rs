//! File contents: holes kept as holes, and GNU tar's PAX sparse formats
//! (0.0, 0.1, 1.0) read here because the `tar` crate does not know them.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{BLOCK, FREE_SPACE_CHECK_EVERY, UnpackError, Unpacker, ZEROS, io_err, refused};

impl Unpacker<'_> {
    /// Copies a file's content into the new file `f`, counting it against
    /// the limits; whole zero blocks are seeked over (left as holes) and the
    /// length is set at the end, so sparse content stays sparse.
    pub(super) fn write_contents(
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
    pub(super) fn write_pax_sparse<R: Read>(
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
}

/// Most chunks a PAX sparse map may list (16 bytes of memory each).
const MAX_SPARSE_CHUNKS: usize = 1 << 20;

/// A sparse file in GNU tar's PAX formats (`tar --format=posix --sparse`):
/// 0.0 (`GNU.sparse.offset`/`numbytes` records), 0.1 (`GNU.sparse.map`) and
/// 1.0 (the map at the head of the data). `name` replaces the header's
/// `GNUSparseFile.N/...` name in 0.1 and 1.0.
pub(super) struct PaxSparse {
    pub(super) name: Option<Vec<u8>>,
    pub(super) size: u64,
    /// (offset, length) of the data chunks; `None`: read it from the data (1.0).
    map: Option<Vec<(u64, u64)>>,
}

/// The entry's PAX sparse description, if it has one.
pub(super) fn pax_sparse<R: Read>(entry: &mut tar::Entry<R>) -> Result<Option<PaxSparse>, String> {
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
