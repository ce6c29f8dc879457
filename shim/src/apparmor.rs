//! AppArmor: whether the node has it, berth's default profile, and which
//! profile a container runs under.
//!
//! The node has AppArmor when the kernel's LSM is enabled, its policy
//! interface is mounted (`/sys/kernel/security/apparmor`) and
//! `apparmor_parser` is installed, as containerd and CRI-O decide. The
//! parser loads berth's own default profile, [`DEFAULT_PROFILE`], which
//! berthd generates and loads at start and again before a container needs
//! it, if it is missing. A
//! `localhost/<name>` profile is the operator's: it must be loaded already.
//!
//! The runtime applies the chosen profile when it executes the container's
//! process (`process.apparmorProfile` in the OCI spec); exec'd processes
//! copy the container's process settings, so they run under it too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cri_api::v1::LinuxContainerSecurityContext;

/// The profile `RuntimeDefault` (and an unset profile) stands for.
pub const DEFAULT_PROFILE: &str = "berth-default";

const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
const SECURITYFS: &str = "/sys/kernel/security/apparmor";
/// How long `apparmor_parser` may take to compile and load the profile
/// (seconds under software emulation; generous).
const PARSER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the node offers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Node {
    /// The LSM is enabled and its policy interface mounted.
    pub kernel: bool,
    /// `apparmor_parser`, to load berth's default profile.
    pub parser: Option<PathBuf>,
    /// Both: berth applies profiles. As with containerd and CRI-O, a
    /// kernel with AppArmor but no `apparmor_parser` (the userspace
    /// package not installed) counts as no AppArmor.
    pub enabled: bool,
}

/// The node's AppArmor, detected once.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let kernel = std::fs::read_to_string(ENABLED).is_ok_and(|s| s.starts_with('Y'))
            && Path::new(SECURITYFS).join("profiles").exists();
        let parser = find_parser();
        Node {
            kernel,
            enabled: kernel && parser.is_some(),
            parser,
        }
    })
}

fn find_parser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("apparmor_parser"))
        .find(|p| p.is_file())
}

/// The profile a container asked for, read from the CRI security context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `RuntimeDefault`, or nothing said (as containerd and CRI-O, the
    /// runtime default then applies).
    Default,
    Unconfined,
    /// A profile loaded by the operator, by name.
    Localhost(String),
}

/// Why a container's AppArmor request cannot be met.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The request is valid but the node cannot honour it now.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads the request: the `apparmor` field, else the deprecated
/// `apparmor_profile` string (`runtime/default`, `unconfined`,
/// `localhost/<name>`).
pub fn wanted(sc: &LinuxContainerSecurityContext) -> Result<Wanted, Error> {
    if let Some(p) = &sc.apparmor {
        const FIELD: &str = "security_context.apparmor";
        return match p.profile_type {
            0 => Ok(Wanted::Default),
            1 => Ok(Wanted::Unconfined),
            2 => localhost(FIELD, &p.localhost_ref),
            t => Err(Error::Invalid {
                field: FIELD,
                reason: format!("unknown profile type {t}"),
            }),
        };
    }
    const FIELD: &str = "security_context.apparmor_profile";
    #[allow(deprecated)]
    match sc.apparmor_profile.as_str() {
        "" | "runtime/default" => Ok(Wanted::Default),
        "unconfined" => Ok(Wanted::Unconfined),
        s => match s.strip_prefix("localhost/") {
            Some(name) => localhost(FIELD, name),
            None => Err(Error::Invalid {
                field: FIELD,
                reason: format!(
                    "{s:?} is not a profile: use \"runtime/default\", \"unconfined\" \
                     or \"localhost/<name>\""
                ),
            }),
        },
    }
}

/// A localhost reference: the name, with the kubelet's `localhost/` prefix
/// taken off if present. Names are the kernel's: no whitespace, no NUL.
fn localhost(field: &'static str, r: &str) -> Result<Wanted, Error> {
    let name = r.strip_prefix("localhost/").unwrap_or(r);
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err(Error::Invalid {
            field,
            reason: format!("{r:?} is not a profile name"),
        });
    }
    Ok(Wanted::Localhost(name.to_string()))
}

/// The profile the container runs under (`None`: unconfined), loading
/// berth's default profile if it is needed and missing.
pub fn profile_for(sc: &LinuxContainerSecurityContext) -> Result<Option<String>, Error> {
    let wanted = wanted(sc)?;
    let node = node();
    match wanted {
        // Without AppArmor there is nothing to apply; privileged containers
        // run unconfined unless they name a profile, as with the peers.
        Wanted::Unconfined => Ok(None),
        Wanted::Default if !node.enabled || sc.privileged => Ok(None),
        Wanted::Default => {
            ensure_default(node)?;
            Ok(Some(DEFAULT_PROFILE.to_string()))
        }
        Wanted::Localhost(name) if !node.enabled => Err(Error::Invalid {
            field: "security_context.apparmor",
            reason: format!(
                "profile {name:?} asked for, but AppArmor is not enabled on this node{}",
                if node.kernel {
                    " (the kernel has it, but apparmor_parser is not installed)"
                } else {
                    ""
                }
            ),
        }),
        Wanted::Localhost(name) => {
            if !loaded(&name).map_err(|e| Error::Unavailable(e.to_string()))? {
                return Err(Error::Unavailable(format!(
                    "AppArmor profile {name:?} is not loaded on this node \
                     (load it with apparmor_parser first)"
                )));
            }
            Ok(Some(name))
        }
    }
}

/// Whether profile `name` is loaded: a line `<name> (<mode>)` of the
/// kernel's profile list.
pub fn loaded(name: &str) -> std::io::Result<bool> {
    let list = std::fs::read_to_string(Path::new(SECURITYFS).join("profiles"))?;
    Ok(list
        .lines()
        .any(|l| l.rsplit_once(" (").is_some_and(|(n, _)| n == name)))
}

/// Loads [`DEFAULT_PROFILE`] unless it is loaded. One caller at a time: a
/// burst of containers after the profile was unloaded runs the parser once.
pub fn ensure_default(node: &Node) -> Result<(), Error> {
    static LOADING: Mutex<()> = Mutex::new(());
    let _turn = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    let unavailable = |why: String| {
        Error::Unavailable(format!(
            "AppArmor profile {DEFAULT_PROFILE:?} cannot be loaded: {why}"
        ))
    };
    if loaded(DEFAULT_PROFILE).map_err(|e| unavailable(e.to_string()))? {
        return Ok(());
    }
    let parser = node
        .parser
        .as_deref()
        .ok_or_else(|| unavailable("apparmor_parser is not installed".into()))?;
    load(parser, &default_profile(Path::new("/etc/apparmor.d"))).map_err(unavailable)?;
    tracing::info!(profile = DEFAULT_PROFILE, "AppArmor profile loaded");
    Ok(())
}

/// At start: loads the default profile where AppArmor is on, and says what
/// the node has. A failure is logged; the first container that needs the
/// profile tries again and reports it.
pub fn init() {
    let node = node();
    if !node.enabled {
        if node.kernel {
            tracing::warn!(
                "the kernel has AppArmor but apparmor_parser is not installed: \
                 containers run without a profile (install apparmor)"
            );
        } else {
            tracing::info!(
                "AppArmor is not enabled on this node: containers run without a profile"
            );
        }
        return;
    }
    match ensure_default(node) {
        Ok(()) => tracing::info!(profile = DEFAULT_PROFILE, "AppArmor enabled"),
        Err(e) => tracing::warn!("{e}"),
    }
}

/// Runs `apparmor_parser -K -r` (replace, write no cache) with `text` on
/// its stdin, within [`PARSER_TIMEOUT`].
fn load(parser: &Path, text: &str) -> Result<(), String> {
    let mut child = Command::new(parser)
        .args(["-K", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", parser.display()))?;
    let fed = child.stdin.take().map(|mut i| i.write_all(text.as_bytes()));
    let deadline = Instant::now() + PARSER_TIMEOUT;
    let pidfd = crate::wait::pidfd(nix::unistd::Pid::from_raw(child.id() as i32)).ok();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => {
                crate::wait::for_exit(pidfd.as_ref(), deadline)
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("apparmor_parser took over {PARSER_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("waiting for apparmor_parser: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.take(4096).read_to_string(&mut err);
    }
    if let Some(Err(e)) = fed {
        err.push_str(&format!(" (writing the profile: {e})"));
    }
    Err(format!("apparmor_parser: {status}: {}", err.trim()))
}

/// The text of [`DEFAULT_PROFILE`]. Its rules are those of the profile the
/// peers apply by default (Docker's `docker-default`, containerd's
/// `cri-containerd.apparmor.d`): everything a container normally does is
/// allowed; mounting, writing the kernel's knobs in `/proc` and `/sys`, and
/// reading the few files that expose the host are not. `etc` is the
/// node's AppArmor directory: its base abstraction is included where the
/// node has it (as the peers do), so distribution fixes reach this profile.
pub fn default_profile(etc: &Path) -> String {
    let include = |f: &str| {
        if etc.join(f).is_file() {
            format!("#include <{f}>\n")
        } else {
            String::new()
        }
    };
    let name = DEFAULT_PROFILE;
    let mut p = String::new();
    p.push_str(&include("tunables/global"));
    p.push_str(&format!(
        "\nprofile {name} flags=(attach_disconnected,mediate_deleted) {{\n"
    ));
    p.push_str(&include("abstractions/base"));
    p.push_str(&format!(
        r#"
  network,
  capability,
  file,
  umount,
  # Signals from the node (berthd, the kubelet) and within the container.
  signal (receive) peer=unconfined,
  signal (send,receive) peer={name},
  ptrace (trace,read,tracedby,readby) peer={name},

  deny mount,

  # /proc: no writes to files directly in it, nor in its directories other
  # than the processes' own and sys/kernel/shm*; never sysrq or kcore.
  deny /proc/* w,
  deny /proc/{{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}}/** w,
  deny /proc/sys/[^k]** w,
  deny /proc/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny /proc/sysrq-trigger rwklx,
  deny /proc/kcore rwklx,

  # /sys: nothing written outside the cgroup filesystem; firmware, power
  # capping and the LSMs' own files not read either.
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,
}}
"#
    ));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1::SecurityProfile;

    fn sc(f: impl FnOnce(&mut LinuxContainerSecurityContext)) -> LinuxContainerSecurityContext {
        let mut sc = LinuxContainerSecurityContext::default();
        f(&mut sc);
        sc
    }

    #[allow(deprecated)]
    #[test]
    fn the_field_wins_over_the_deprecated_string() {
        let w = |s: LinuxContainerSecurityContext| wanted(&s).unwrap();
        let local = |r: &str| {
            Some(SecurityProfile {
                profile_type: 2,
                localhost_ref: r.into(),
            })
        };
        assert_eq!(w(sc(|_| ())), Wanted::Default);
        assert_eq!(
            w(sc(|s| s.apparmor_profile = "runtime/default".into())),
            Wanted::Default
        );
        assert_eq!(
            w(sc(|s| s.apparmor_profile = "unconfined".into())),
            Wanted::Unconfined
        );
        assert_eq!(
            w(sc(|s| s.apparmor_profile = "localhost/p1".into())),
            Wanted::Localhost("p1".into())
        );
        assert_eq!(
            w(sc(|s| {
                s.apparmor_profile = "unconfined".into();
                s.apparmor = local("localhost/p2");
            })),
            Wanted::Localhost("p2".into())
        );
        assert_eq!(
            w(sc(|s| s.apparmor = local("p3"))),
            Wanted::Localhost("p3".into())
        );
    }

    #[allow(deprecated)]
    #[test]
    fn nonsense_is_refused_with_the_field() {
        for s in [
            sc(|s| s.apparmor_profile = "docker/default".into()),
            sc(|s| s.apparmor_profile = "localhost/".into()),
            sc(|s| {
                s.apparmor = Some(SecurityProfile {
                    profile_type: 2,
                    localhost_ref: "two words".into(),
                })
            }),
            sc(|s| {
                s.apparmor = Some(SecurityProfile {
                    profile_type: 7,
                    ..Default::default()
                })
            }),
        ] {
            let e = wanted(&s).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{e}");
        }
    }

    #[test]
    fn the_default_profile_includes_only_what_the_node_has() {
        let dir = std::env::temp_dir().join(format!("berth-apparmor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bare = default_profile(&dir);
        assert!(!bare.contains("#include"), "{bare}");
        assert!(bare.contains("profile berth-default flags="), "{bare}");
        assert!(bare.contains("deny mount,"), "{bare}");
        std::fs::create_dir_all(dir.join("tunables")).unwrap();
        std::fs::write(dir.join("tunables/global"), "").unwrap();
        let full = default_profile(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(full.starts_with("#include <tunables/global>\n"), "{full}");
        assert!(!full.contains("abstractions/base"), "{full}");
        // Braces balance: the format escapes came out right.
        assert_eq!(full.matches('{').count(), full.matches('}').count());
    }
}
