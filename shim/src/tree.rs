//! The tree of pod mounts: berthd's state directory made a bind mount of
//! itself, private, at every start.
//!
//! Every mount berthd makes for a pod or a container (rootfs overlays,
//! image volumes, idmapped sources, namespace pins, `/dev/shm`) is under
//! the state directory, so with the directory a mount of its own they are
//! all under one mount. A monitor detaches that one mount, in a mount
//! namespace of its own, to make its container in a table without the
//! other pods' mounts (see the monitor's `aside.rs`): libcontainer and
//! libcgroups read the whole table several times per container. Private,
//! so that the pods' mounts do not propagate to the node's other
//! namespaces either.
//!
//! Left in place when berthd stops: running containers' mounts are in it.

use std::path::{Path, PathBuf};

/// What is mounted at and under a directory, from the mount table.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing at it, nothing under it.
    Bare,
    /// A bind mount of itself is on top.
    SelfBind,
    /// Something else (a file system of its own, or mounts from before
    /// the tree existed).
    Other(&'static str),
}

/// Makes `state` the tree if it is not, and says whether it is: the
/// directory for the monitors' `--aside`. Nothing is done where the table
/// shows anything else at or under it (pods' mounts from a berthd before
/// the tree: a bind over them would hide copies of them).
pub fn own(state: &Path) -> Option<PathBuf> {
    let table = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("/proc/self/mountinfo: {e}: pod mounts are not set aside");
            return None;
        }
    };
    // The table names mounts by their real paths (`/var/run` is `/run`).
    let real = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
    match found(&table, &real) {
        Found::SelfBind => Some(state.to_path_buf()),
        Found::Other(why) => {
            tracing::info!(
                "{} {why}: pod mounts are not set aside when containers are made",
                state.display()
            );
            None
        }
        Found::Bare => {
            let made = berth_runtime::mounts::bind_on_itself(state);
            match made {
                Ok(()) => Some(state.to_path_buf()),
                Err(e) => {
                    tracing::warn!(
                        "bind-mounting {} on itself: {e}: pod mounts are not set aside",
                        state.display()
                    );
                    None
                }
            }
        }
    }
}

/// One line of `/proc/self/mountinfo`: its id, parent, device, root and
/// mount point.
struct Line<'a> {
    id: &'a str,
    parent: &'a str,
    dev: &'a str,
    root: PathBuf,
    at: PathBuf,
}

fn line(l: &str) -> Option<Line<'_>> {
    let mut f = l.split(' ');
    Some(Line {
        id: f.next()?,
        parent: f.next()?,
        dev: f.next()?,
        root: PathBuf::from(unescape(f.next()?)),
        at: PathBuf::from(unescape(f.next()?)),
    })
}

/// The kernel's octal escapes (`\040` for a space) undone.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn found(table: &str, dir: &Path) -> Found {
    let lines: Vec<Line> = table.lines().filter_map(line).collect();
    let Some(top) = lines.iter().rev().find(|l| l.at == dir) else {
        return if lines.iter().any(|l| l.at.starts_with(dir)) {
            Found::Other("has mounts under it from before")
        } else {
            Found::Bare
        };
    };
    let Some(parent) = lines.iter().find(|l| l.id == top.parent) else {
        return Found::Other("is a mount whose parent is not in the table");
    };
    let Ok(rel) = dir.strip_prefix(&parent.at) else {
        return Found::Other("is a mount outside its parent");
    };
    if top.dev == parent.dev && top.root == parent.root.join(rel) {
        Found::SelfBind
    } else {
        Found::Other("is a file system of its own")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "\
22 1 0:21 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
23 1 8:1 / /var rw shared:1 - ext4 /dev/sda1 rw
";

    #[test]
    fn a_bare_directory_is_made_the_tree_and_then_known_as_it() {
        assert_eq!(found(NODE, Path::new("/run/berth")), Found::Bare);
        let bound = format!("{NODE}90 22 0:21 /berth /run/berth rw - tmpfs tmpfs rw\n");
        assert_eq!(found(&bound, Path::new("/run/berth")), Found::SelfBind);
        // With pods' mounts on it, and a second bind on top.
        let busy = format!(
            "{bound}91 90 0:5 net:[4026532] /run/berth/ns/p/net rw - nsfs nsfs rw\n\
             92 90 0:21 /berth /run/berth rw - tmpfs tmpfs rw\n"
        );
        assert_eq!(found(&busy, Path::new("/run/berth")), Found::SelfBind);
        // A path with a space, escaped by the kernel.
        let spaced = format!(
            "{NODE}93 23 8:1 /lib/my\\040state /var/lib/my\\040state rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(
            found(&spaced, Path::new("/var/lib/my state")),
            Found::SelfBind
        );
    }

    #[test]
    fn anything_else_at_or_under_it_is_left_alone() {
        let tmpfs = format!("{NODE}90 22 0:40 / /run/berth rw - tmpfs tmpfs rw\n");
        assert!(matches!(
            found(&tmpfs, Path::new("/run/berth")),
            Found::Other(_)
        ));
        let elsewhere = format!("{NODE}90 22 0:21 /other /run/berth rw - tmpfs tmpfs rw\n");
        assert!(matches!(
            found(&elsewhere, Path::new("/run/berth")),
            Found::Other(_)
        ));
        let old_pods =
            format!("{NODE}91 22 0:5 net:[4026532] /run/berth/ns/p/net rw - nsfs nsfs rw\n");
        assert!(matches!(
            found(&old_pods, Path::new("/run/berth")),
            Found::Other(_)
        ));
        assert_eq!(
            found(NODE, Path::new("/run/berthd")),
            Found::Bare,
            "a name that only starts alike"
        );
    }
}
