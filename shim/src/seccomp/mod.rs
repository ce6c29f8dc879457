//! Seccomp for containers, from the CRI `SecurityProfile`:
//!
//! - `Unconfined` (or no profile at all): none;
//! - `RuntimeDefault`: berth's default profile — everything not listed
//!   fails with EPERM; the list is the one Docker, containerd and CRI-O
//!   share (ordinary syscalls, plus those a granted capability unlocks,
//!   and `clone` without namespace flags unless CAP_SYS_ADMIN);
//! - `Localhost`: a JSON profile file on the node, in the OCI runtime-spec
//!   form or Docker's (`archMap` / `names`); a missing or invalid file fails
//!   CreateContainer with the reason.
//!
//! The deprecated `seccomp_profile_path` (`runtime/default`,
//! `docker/default`, `unconfined`, `localhost/<path>`) is read the same way
//! when `seccomp` is unset.

use serde_json::{Value, json};

use cri_api::v1::LinuxContainerSecurityContext;
use cri_api::v1::security_profile::ProfileType;

/// Syscalls every container may make under the default profile.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // ptrace and reading another process's memory: kernels from 4.8 on
    // check seccomp after ptrace, so these no longer bypass the filter.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
];

/// Syscalls a capability unlocks, when the container has it.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// The namespace flags `clone` may not carry without CAP_SYS_ADMIN:
/// CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0080;

/// The OCI architectures of this machine's ABIs.
fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "riscv64" => vec!["SCMP_ARCH_RISCV64"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "powerpc64" => vec!["SCMP_ARCH_PPC64LE"],
        _ => Vec::new(),
    }
}

/// Berth's RuntimeDefault profile for a container with `caps`.
pub fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut rules = vec![json!({ "names": ALLOWED, "action": "SCMP_ACT_ALLOW" })];
    // personality: only the harmless personas.
    for p in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": p, "op": "SCMP_CMP_EQ" }],
        }));
    }
    // socket: every family but AF_VSOCK (40).
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": 40, "op": "SCMP_CMP_NE" }],
    }));
    if std::env::consts::ARCH == "x86_64" {
        rules.push(json!({ "names": ["arch_prctl", "modify_ldt"], "action": "SCMP_ACT_ALLOW" }));
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags; clone3 (whose flags a filter
        // cannot read) answers ENOSYS, so libcs fall back to clone.
        rules.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{
                "index": if std::env::consts::ARCH == "s390x" { 1 } else { 0 },
                "value": CLONE_NAMESPACE_FLAGS,
                "valueTwo": 0,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }));
        rules.push(json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 38,
        }));
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(json!({ "names": names, "action": "SCMP_ACT_ALLOW" }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": architectures(),
        "syscalls": rules,
    })
}

/// What the CRI asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    None,
    Default,
    File(String),
}

fn ask(sc: &LinuxContainerSecurityContext) -> Result<Ask, String> {
    if let Some(p) = &sc.seccomp {
        return Ok(match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ask::Default,
            Ok(ProfileType::Unconfined) => Ask::None,
            Ok(ProfileType::Localhost) => Ask::File(p.localhost_ref.clone()),
            Err(_) => return Err(format!("unknown profile type {}", p.profile_type)),
        });
    }
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    Ok(match path {
        "" | "unconfined" => Ask::None,
        "runtime/default" | "docker/default" => Ask::Default,
        p => match p.strip_prefix("localhost/") {
            Some(file) => Ask::File(file.to_string()),
            None => return Err(format!("unknown seccomp profile {p:?}")),
        },
    })
}

/// The OCI `linux.seccomp` for a container, typed, or None for
/// unconfined.
pub fn for_container(
    sc: &LinuxContainerSecurityContext,
    caps: &[String],
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, String> {
    let Some(doc) = profile(sc, caps)? else {
        return Ok(None);
    };
    serde_json::from_value(doc)
        .map(Some)
        .map_err(|e| format!("not a valid OCI seccomp profile: {e}"))
}

/// The OCI `linux.seccomp` for a container as JSON, or None for
/// unconfined.
fn profile(sc: &LinuxContainerSecurityContext, caps: &[String]) -> Result<Option<Value>, String> {
    match ask(sc)? {
        Ask::None => Ok(None),
        Ask::Default => Ok(Some(runtime_default(caps))),
        Ask::File(path) => {
            if !path.starts_with('/') {
                return Err(format!(
                    "seccomp profile {path:?}: a Localhost profile must be an absolute path"
                ));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("seccomp profile {path}: {e}"))?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| format!("seccomp profile {path}: not JSON: {e}"))?;
            from_file(&doc)
                .map(Some)
                .map_err(|e| format!("seccomp profile {path}: {e}"))
        }
    }
}

/// A profile file (OCI or Docker form) as OCI `linux.seccomp`.
fn from_file(doc: &Value) -> Result<Value, String> {
    let obj = doc.as_object().ok_or("not a JSON object")?;
    let default = obj
        .get("defaultAction")
        .and_then(Value::as_str)
        .ok_or("no defaultAction")?;
    if !default.starts_with("SCMP_ACT_") {
        return Err(format!("unknown defaultAction {default:?}"));
    }
    let mut out = serde_json::Map::new();
    out.insert("defaultAction".into(), json!(default));
    if let Some(e) = obj.get("defaultErrnoRet") {
        out.insert("defaultErrnoRet".into(), e.clone());
    }
    // Docker's archMap: this machine's architectures and their subs.
    let arches: Vec<Value> = match (obj.get("architectures"), obj.get("archMap")) {
        (Some(a), _) => a
            .as_array()
            .cloned()
            .ok_or("architectures must be a list")?,
        (None, Some(Value::Array(map))) => {
            let ours = architectures();
            map.iter()
                .filter(|m| {
                    m["architecture"]
                        .as_str()
                        .is_some_and(|a| ours.first() == Some(&a))
                })
                .flat_map(|m| {
                    std::iter::once(m["architecture"].clone()).chain(
                        m["subArchitectures"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect()
        }
        _ => Vec::new(),
    };
    if !arches.is_empty() {
        out.insert("architectures".into(), Value::Array(arches));
    }
    let mut rules = Vec::new();
    for (i, r) in obj
        .get("syscalls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let names: Vec<Value> = match (r.get("names"), r.get("name")) {
            (Some(Value::Array(n)), _) => n.clone(),
            (None, Some(n @ Value::String(_))) => vec![n.clone()],
            _ => return Err(format!("syscalls[{i}]: no names")),
        };
        if names.iter().any(|n| !n.is_string()) {
            return Err(format!("syscalls[{i}]: names must be strings"));
        }
        let action = r
            .get("action")
            .and_then(Value::as_str)
            .filter(|a| a.starts_with("SCMP_ACT_"))
            .ok_or_else(|| format!("syscalls[{i}]: no valid action"))?;
        let mut rule = serde_json::Map::new();
        rule.insert("names".into(), Value::Array(names));
        rule.insert("action".into(), json!(action));
        for k in ["errnoRet", "args"] {
            if let Some(v) = r.get(k) {
                rule.insert(k.into(), v.clone());
            }
        }
        rules.push(Value::Object(rule));
    }
    out.insert("syscalls".into(), Value::Array(rules));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests;
