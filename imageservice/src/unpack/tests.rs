//! Unpacking tests on scratch directories: every entry type, hard links
//! across layers, hostile layers, sparse formats, size and entry limits.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use tar::EntryType;

use super::*;

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
    fn header(&self, ty: EntryType, name: &str, link: &str, mode: u32, size: usize) -> tar::Header {
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
    fn add(&mut self, ty: EntryType, name: &str, link: &str, mode: u32, data: &[u8]) -> &mut Tb {
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

    let res = unpack_layer(&blob, Compression::None, &dest, &lowers, &Limits::default()).unwrap();
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
        let err =
            unpack_layer(&blob, Compression::Gzip, &dest, lowers, &Limits::default()).unwrap_err();
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
        let err =
            unpack_layer(&tar, Compression::None, &dest, &[], &limits(size - 1, 10)).unwrap_err();
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
    let mut gz =
        flate2::write::GzEncoder::new(File::create(&bomb).unwrap(), flate2::Compression::fast());
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
        msg.contains("\"zeros\"") && msg.contains("[images] max_layer_unpacked_size = \"1MiB\""),
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
    let err = unpack_layer(&blob, Compression::None, &dest, &[], &limits(1 << 20, 10)).unwrap_err();
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

/// A layer that brings its own parents never waits for the ones below; one
/// that needs a lower (a missing parent, a link to a lower file) waits,
/// and fails with the lower's failure.
#[test]
fn only_a_layer_that_reads_the_lowers_waits_for_them() {
    let s = Scratch::new();
    let lower = s.dir("l1/usr/bin");
    fs::write(lower.join("tool"), b"t").unwrap();
    let lowers = [s.0.join("l1")];
    let waits = std::cell::Cell::new(0);
    let count = || {
        waits.set(waits.get() + 1);
        Ok(())
    };
    let own = Tb::new()
        .spec("D usr; D usr/lib; F usr/lib/a a")
        .blob(&s.0, Compression::None);
    unpack_layer_over(
        &own,
        None,
        Compression::None,
        &s.dir("d1"),
        &lowers,
        &count,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(waits.get(), 0, "its own parents: no wait");
    let needs = Tb::new()
        .spec("F tmp/x x; L usr/bin/alias usr/bin/tool")
        .blob(&s.0, Compression::None);
    unpack_layer_over(
        &needs,
        None,
        Compression::None,
        &s.dir("d2"),
        &lowers,
        &count,
        &Limits::default(),
    )
    .unwrap();
    assert!(waits.get() >= 2, "a missing parent and a lower link wait");
    let failed = || Err("layer 0 below failed: boom".to_string());
    let err = unpack_layer_over(
        &needs,
        None,
        Compression::None,
        &s.dir("d3"),
        &lowers,
        &failed,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Lower(_)), "{err}");
}
