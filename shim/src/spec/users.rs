//! Users and groups: `process.user` from the security context or the
//! image's `User`, resolved in the container's own `/etc/passwd` and
//! `/etc/group` (read as plain files inside the rootfs, never through a
//! symlink), as containerd does.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use cri_api::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Spec, User};

use super::{Context, Error, ImageDefaults, invalid, process_mut};

/// Sets `process.user` (uid, gid, additional gids).
pub fn apply(spec: &mut Spec, cx: &Context) -> Result<(), Error> {
    let user = process_user(&cx.sc, cx.image, cx.rootfs)?;
    process_mut(spec).set_user(user);
    Ok(())
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Most bytes of the image's `/etc/passwd` or `/etc/group` read to resolve
/// a user: they are image content, read into memory at CreateContainer.
pub(super) const MAX_ETC_FILE: u64 = 4 << 20;

/// Reads `rootfs/etc/<name>` if `etc` is a real directory and the file a
/// regular file (not symlinks, opened with O_NOFOLLOW); `None` when absent.
/// A file over [`MAX_ETC_FILE`] bytes is refused, naming it.
pub(super) fn read_etc_file(rootfs: &Path, name: &str) -> Result<Option<String>, Error> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let etc = rootfs.join("etc");
    match std::fs::symlink_metadata(&etc) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: etc, source }),
    }
    let path = etc.join(name);
    let too_large = || {
        invalid(
            format!("image /etc/{name}"),
            format!("larger than {MAX_ETC_FILE} bytes, the most berth reads to resolve a user"),
        )
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() > MAX_ETC_FILE => return Err(too_large()),
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    // Bounded even if the file grew since the stat.
    let mut bytes = Vec::new();
    match file.take(MAX_ETC_FILE + 1).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() as u64 > MAX_ETC_FILE => Err(too_large()),
        Ok(_) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(source) => Err(Error::Io { path, source }),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn to_id(v: i64, field: &str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| invalid(field, format!("{v} is not a valid id")))
}

fn process_user(
    sc: &LinuxContainerSecurityContext,
    image: &ImageDefaults,
    rootfs: &Path,
) -> Result<User, Error> {
    // containerd's generateUserString: run_as_username wins over run_as_user;
    // run_as_group needs one of them.
    let mut user_part: Option<String> = None;
    let mut field = "security_context.run_as_user";
    if let Some(u) = &sc.run_as_user {
        user_part = Some(to_id(u.value, field)?.to_string());
    }
    if !sc.run_as_username.is_empty() {
        field = "security_context.run_as_username";
        user_part = Some(sc.run_as_username.clone());
    }
    let group_part = match &sc.run_as_group {
        Some(g) => Some(to_id(g.value, "security_context.run_as_group")?.to_string()),
        None => None,
    };
    let userstr = match (user_part, group_part) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u,
        (None, Some(_)) => {
            return Err(invalid(
                "security_context.run_as_group",
                "a group is specified without a user",
            ));
        }
        (None, None) => {
            field = "image User";
            image.user.clone()
        }
    };

    let passwd = parse_passwd(&read_etc_file(rootfs, "passwd")?.unwrap_or_default());
    let groups = parse_group(&read_etc_file(rootfs, "group")?.unwrap_or_default());

    let (uid, gid, username) = if userstr.is_empty() {
        let name = passwd.iter().find(|p| p.uid == 0).map(|p| p.name.clone());
        (0, 0, name)
    } else {
        let parts: Vec<&str> = userstr.split(':').collect();
        if parts.len() > 2 || parts[0].is_empty() {
            return Err(invalid(field, format!("invalid user {userstr:?}")));
        }
        let (uid, primary, name) = match parts[0].parse::<u32>() {
            Ok(uid) => match passwd.iter().find(|p| p.uid == uid) {
                Some(p) => (uid, p.gid, Some(p.name.clone())),
                None => (uid, 0, None),
            },
            Err(_) => match passwd.iter().find(|p| p.name == parts[0]) {
                Some(p) => (p.uid, p.gid, Some(p.name.clone())),
                None => {
                    return Err(invalid(
                        field,
                        format!("no user {:?} found in the image's /etc/passwd", parts[0]),
                    ));
                }
            },
        };
        let gid = match parts.get(1) {
            None => primary,
            Some(&"") => {
                return Err(invalid(field, format!("invalid user {userstr:?}")));
            }
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups
                    .iter()
                    .find(|e| e.name == *g)
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        invalid(
                            field,
                            format!("no group {g:?} found in the image's /etc/group"),
                        )
                    })?,
            },
        };
        (uid, gid, name)
    };

    // Primary gid first (containerd since the CVE-2023-25173 fix), then the
    // groups listing the user, then the CRI supplemental groups.
    let mut gids = vec![gid];
    // Strict (1): only the CRI's groups, none from the image's /etc/group.
    let strict = sc.supplemental_groups_policy == 1;
    if let Some(name) = username.as_ref().filter(|_| !strict) {
        for g in &groups {
            if g.name != *name && g.members.iter().any(|m| m == name) {
                gids.push(g.gid);
            }
        }
    }
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        gids.push(to_id(
            *g,
            &format!("security_context.supplemental_groups[{i}]"),
        )?);
    }
    let mut seen = HashSet::new();
    gids.retain(|g| seen.insert(*g));
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(Some(gids));
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::{build_json, cfg, pod, spec_of, tmpdir, with_sc};
    use cri_api::v1::{ContainerConfig, Int64Value};
    use serde_json::{Value, json};

    fn user_of(c: &ContainerConfig, image_user: &str) -> Result<Value, Error> {
        let img = ImageDefaults {
            user: image_user.into(),
            ..Default::default()
        };
        spec_of(c, &img).map(|v| v["process"]["user"].clone())
    }

    #[test]
    fn users() {
        let c = cfg();
        assert_eq!(
            user_of(&c, "").unwrap(),
            json!({"uid":0,"gid":0,"additionalGids":[0]})
        );
        assert_eq!(
            user_of(&c, "1000").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,63]})
        );
        assert_eq!(
            user_of(&c, "app").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,63]})
        );
        assert_eq!(
            user_of(&c, "app:audio").unwrap(),
            json!({"uid":1000,"gid":63,"additionalGids":[63]})
        );
        assert_eq!(
            user_of(&c, "1000:63").unwrap(),
            json!({"uid":1000,"gid":63,"additionalGids":[63]})
        );
        assert_eq!(
            user_of(&c, "4242").unwrap(),
            json!({"uid":4242,"gid":0,"additionalGids":[0]})
        );
        assert_eq!(user_of(&c, "nobody").unwrap()["uid"], 65534);
        let e = user_of(&c, "ghost").unwrap_err().to_string();
        assert!(e.contains("ghost") && e.contains("image User"), "{e}");
        assert!(user_of(&c, "app:nogroup").is_err());

        // run_as_user overrides the image; run_as_group, supplemental groups.
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 65534 }),
            supplemental_groups: vec![5000],
            ..Default::default()
        };
        assert_eq!(
            user_of(&with_sc(cfg(), sc.clone()), "app").unwrap(),
            json!({"uid":65534,"gid":65534,"additionalGids":[65534,5000]})
        );
        let sc2 = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 7 }),
            ..sc
        };
        assert_eq!(user_of(&with_sc(cfg(), sc2), "").unwrap()["gid"], 7);
        let sc = LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            ..Default::default()
        };
        assert_eq!(
            user_of(&with_sc(cfg(), sc), "root").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,63]})
        );
        // Strict: the image's /etc/group adds nothing.
        let sc = LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            supplemental_groups: vec![5000],
            supplemental_groups_policy: 1,
            ..Default::default()
        };
        assert_eq!(
            user_of(&with_sc(cfg(), sc), "").unwrap(),
            json!({"uid":1000,"gid":1000,"additionalGids":[1000,5000]})
        );
        let sc = LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..Default::default()
        };
        assert!(
            user_of(&with_sc(cfg(), sc), "")
                .unwrap_err()
                .to_string()
                .contains("run_as_username")
        );
        let sc = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 7 }),
            ..Default::default()
        };
        assert!(user_of(&with_sc(cfg(), sc), "app").is_err());
    }

    #[test]
    fn a_huge_passwd_or_group_is_refused_naming_it() {
        for name in ["passwd", "group"] {
            let r = tmpdir(&format!("huge-{name}"));
            std::fs::create_dir_all(r.0.join("etc")).unwrap();
            let f = std::fs::File::create(r.0.join("etc").join(name)).unwrap();
            // Sparse: 1 GiB to read, nothing on disk.
            f.set_len(1 << 30).unwrap();
            let e = read_etc_file(&r.0, name).unwrap_err().to_string();
            assert!(e.contains(&format!("image /etc/{name}")), "{e}");
            assert!(e.contains("larger than 4194304 bytes"), "{e}");
            f.set_len(MAX_ETC_FILE).unwrap();
            assert_eq!(
                read_etc_file(&r.0, name).unwrap().unwrap().len() as u64,
                MAX_ETC_FILE
            );
        }
    }

    #[test]
    fn passwd_symlink_is_not_followed() {
        let r = tmpdir("symroot");
        let outside = tmpdir("outside");
        std::fs::write(outside.0.join("passwd"), "evil:x:7:7::/:/bin/sh\n").unwrap();
        std::fs::create_dir_all(r.0.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.0.join("passwd"), r.0.join("etc/passwd")).unwrap();
        let img = ImageDefaults {
            user: "evil".into(),
            ..Default::default()
        };
        assert!(build_json("abc", &cfg(), &img, &pod(), &r.0).is_err());
    }
}
