//! Layer unpacking (`unpack_layer`) of a hostile tar, plain, gzip or zstd.
//!
//! The first byte picks the compression, the rest is the blob. Each run
//! unpacks into a fresh `dest` inside a scratch directory that also holds the
//! blob, a lower layer (the target of copy-ups) and a canary directory, with
//! a second canary at the fixed absolute path `/tmp/berth-fuzz-canary` so that
//! seeds can aim absolute symlinks and hard links at it.
//!
//! Asserts: no panic; a layer that unpacks stays within the (small) entry and
//! size limits given; and nothing outside `dest` changed: every path of the
//! scratch directory except `dest`, and of the absolute canary, has the same
//! type, mode, owner, size, link count, mtime, ctime, symlink target and
//! content as before the run; and no file inside `dest` holds the content of
//! a file outside it (read through a symlink). Needs root (whiteouts are
//! device nodes).
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_imageservice::Limits;
use berth_imageservice::unpack::{Compression, unpack_layer};
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "/tmp/berth-fuzz-canary";

/// Everything observable about a tree that unpacking must not change.
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(root: &Path, skip: &[&Path], out: &mut Snapshot) {
    let md = fs::symlink_metadata(root).expect("lstat in the scratch tree");
    let mut what = format!(
        "mode {:o} uid {} gid {} size {} nlink {} mtime {}.{} ctime {}.{}",
        md.mode(),
        md.uid(),
        md.gid(),
        md.size(),
        md.nlink(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    );
    if md.file_type().is_symlink() {
        what += &format!(" -> {:?}", fs::read_link(root).expect("readlink"));
    } else if md.is_file() {
        what += &format!(" content {:?}", fs::read(root).expect("read"));
    }
    out.insert(root.to_owned(), what);
    if md.is_dir() {
        for e in fs::read_dir(root).expect("readdir") {
            let p = e.expect("readdir entry").path();
            if !skip.contains(&p.as_path()) {
                snapshot(&p, skip, out);
            }
        }
    }
}

/// A random text for the files outside `dest`: no file inside may hold it (a
/// copy-up must not read through a symlink to the host). Random per process
/// and compared by hash only, so that the fuzzer can neither carry it in its
/// corpus nor learn it from the comparison.
fn secret() -> Vec<u8> {
    let mut r = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .expect("read /dev/urandom");
    format!("host secret {:02x?}\n", r).into_bytes()
}

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Panics if a regular file under `dir` holds one of the `secrets` (hashes).
fn assert_no_secret(dir: &Path, secrets: &[u64]) {
    for e in fs::read_dir(dir).expect("readdir dest") {
        let e = e.expect("readdir entry");
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            assert_no_secret(&e.path(), secrets);
        } else if ft.is_file() {
            let content = fs::read(e.path()).expect("read");
            assert!(
                !secrets.contains(&hash(&content)),
                "{:?} holds the content of a file outside dest",
                e.path()
            );
        }
    }
}

struct Scratch {
    root: PathBuf,
    dest: PathBuf,
    blob: PathBuf,
    lower: PathBuf,
    secrets: Vec<u64>,
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let root = PathBuf::from(format!("/tmp/berth-fuzz-unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let lower = root.join("lower");
        for d in ["etc", "bin", "dir/sub"] {
            fs::create_dir_all(lower.join(d)).expect("mkdir lower");
        }
        fs::write(lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("write");
        fs::write(lower.join("bin/sh"), "#!lower\n").expect("write");
        fs::write(lower.join("dir/sub/file"), "lower file\n").expect("write");
        symlink(CANARY, lower.join("canary")).expect("symlink");
        symlink("../outside", lower.join("dir/out")).expect("symlink");
        fs::create_dir_all(root.join("outside")).expect("mkdir outside");
        let own = secret();
        fs::write(root.join("outside/file"), &own).expect("write");
        fs::create_dir_all(CANARY).expect("mkdir canary");
        // Shared by concurrent runs: created once, then only read.
        let canary = Path::new(CANARY).join("file");
        if !canary.exists() {
            fs::write(&canary, secret()).expect("write canary");
        }
        let secrets = vec![hash(&own), hash(&fs::read(&canary).expect("read canary"))];
        Scratch {
            dest: root.join("dest"),
            blob: root.join("layer.blob"),
            lower,
            root,
            secrets,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, blob)) = data.split_first() else {
        return;
    };
    let compression = match pick % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let s = scratch();
    if s.dest.exists() {
        fs::remove_dir_all(&s.dest).expect("clean dest");
    }
    fs::create_dir(&s.dest).expect("mkdir dest");
    fs::write(&s.blob, blob).expect("write blob");
    let skip = [s.dest.as_path(), s.blob.as_path()];
    let mut before = Snapshot::new();
    snapshot(&s.root, &skip, &mut before);
    snapshot(Path::new(CANARY), &skip, &mut before);

    // Small limits, so that the fuzzer reaches them (and a bomb ends early).
    let limits = Limits {
        max_layer_unpacked_size: 1 << 20,
        max_layer_entries: 256,
        ..Limits::default()
    };
    let res = unpack_layer(
        &s.blob,
        compression,
        &s.dest,
        std::slice::from_ref(&s.lower),
        &limits,
    );
    if let Ok(u) = &res {
        assert!(u.entries <= limits.max_layer_entries, "{u:?}");
        assert!(u.bytes <= limits.max_layer_unpacked_size, "{u:?}");
    }

    let mut after = Snapshot::new();
    snapshot(&s.root, &skip, &mut after);
    snapshot(Path::new(CANARY), &skip, &mut after);
    if before != after {
        let changed: Vec<_> = before
            .iter()
            .filter(|(p, v)| after.get(*p) != Some(*v))
            .map(|(p, _)| p)
            .chain(after.keys().filter(|p| !before.contains_key(*p)))
            .collect();
        panic!("unpacking changed paths outside dest: {changed:?}");
    }
    assert_no_secret(&s.dest, &s.secrets);
    fs::remove_dir_all(&s.dest).expect("clean dest");
});
