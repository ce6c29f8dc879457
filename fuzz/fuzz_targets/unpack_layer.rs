//! Layer unpacking (`unpack_layer`) of a hostile tar, plain, gzip or zstd.
//!
//! The first byte picks the compression, the rest is the blob. Each run
//! unpacks into a fresh `dest` inside a scratch directory that also holds the
//! blob, a lower layer (the target of copy-ups) and a canary directory, with
//! a second canary at the fixed absolute path `/tmp/berth-fuzz-canary` so that
//! seeds can aim absolute symlinks and hard links at it.
//!
//! Asserts: no panic, and nothing outside `dest` changed: every path of the
//! scratch directory except `dest`, and of the absolute canary, has the same
//! type, mode, owner, size, link count, mtime, ctime, symlink target and
//! content as before the run; and no file inside `dest` holds the content of
//! a file outside it (read through a symlink). Needs root (whiteouts are
//! device nodes).
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_imageservice::unpack::{Compression, unpack_layer};
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "/tmp/berth-fuzz-canary";
/// The content of the files outside `dest`: no file inside may contain it
/// (a copy-up must not read through a symlink to the host).
const SECRET: &str = "host secret 5b0c2e9a7d41f3e8, not for layers\n";

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

/// Panics if a regular file under `dir` holds [`SECRET`].
fn assert_no_secret(dir: &Path) {
    for e in fs::read_dir(dir).expect("readdir dest") {
        let e = e.expect("readdir entry");
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            assert_no_secret(&e.path());
        } else if ft.is_file() {
            let content = fs::read(e.path()).expect("read");
            assert!(
                !content
                    .windows(SECRET.len())
                    .any(|w| w == SECRET.as_bytes()),
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
        fs::write(root.join("outside/file"), SECRET).expect("write");
        fs::create_dir_all(CANARY).expect("mkdir canary");
        let _ = fs::write(Path::new(CANARY).join("file"), SECRET);
        Scratch {
            dest: root.join("dest"),
            blob: root.join("layer.blob"),
            lower,
            root,
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

    let _ = unpack_layer(
        &s.blob,
        compression,
        &s.dest,
        std::slice::from_ref(&s.lower),
    );

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
    assert_no_secret(&s.dest);
    fs::remove_dir_all(&s.dest).expect("clean dest");
});
