//! Unit tests of the spec steps, read through the spec's JSON form.

use super::capabilities::{DEFAULT_CAPS, own_capabilities};
use super::security::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
use super::*;
use cri_api::v1::LinuxContainerSecurityContext;
use cri_api::v1::{
    Capability, KeyValue, LinuxContainerConfig, LinuxContainerResources, Mount, NamespaceOption,
};
use serde_json::{Value, json};
use std::path::PathBuf;

pub(super) struct Tmp(pub(super) PathBuf);
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn tmpdir(tag: &str) -> Tmp {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "berth-spec-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&p).unwrap();
    Tmp(p)
}

pub(super) fn rootfs() -> Tmp {
    let t = tmpdir("rootfs");
    std::fs::create_dir_all(t.0.join("etc")).unwrap();
    std::fs::write(
        t.0.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        t.0.join("etc/group"),
        "root:x:0:\napp:x:1000:\naudio:x:63:app\n",
    )
    .unwrap();
    t
}

pub(super) fn pod() -> PodContext {
    PodContext {
        hostname_file: "/pod/hostname".into(),
        hosts_file: "/pod/hosts".into(),
        resolv_file: "/pod/resolv.conf".into(),
        hostname: "mypod".into(),
        cgroup_parent: "/kubepods/pod123".into(),
        systemd_cgroup: false,
        ..Default::default()
    }
}

pub(super) fn cfg() -> ContainerConfig {
    ContainerConfig {
        command: vec!["/bin/true".into()],
        ..Default::default()
    }
}

pub(super) fn with_sc(
    mut c: ContainerConfig,
    sc: LinuxContainerSecurityContext,
) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

/// The spec as JSON, each capability set sorted (oci-spec keeps them in
/// a `HashSet`, whose order is unspecified).
pub(super) fn canonical(spec: &Spec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap();
    if let Some(sets) = v
        .pointer_mut("/process/capabilities")
        .and_then(Value::as_object_mut)
    {
        for set in sets.values_mut() {
            if let Some(a) = set.as_array_mut() {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
    }
    v
}

pub(super) fn build_json(
    id: &str,
    c: &ContainerConfig,
    image: &ImageDefaults,
    pod: &PodContext,
    rootfs: &Path,
) -> Result<Value, Error> {
    build(id, c, image, pod, rootfs).map(|s| canonical(&s))
}

fn sorted(v: &[impl AsRef<str>]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.as_ref().to_string()).collect();
    v.sort();
    v
}

pub(super) fn spec_of(c: &ContainerConfig, img: &ImageDefaults) -> Result<Value, Error> {
    let r = rootfs();
    build_json("abc", c, img, &pod(), &r.0)
}

pub(super) fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn args_of(
    command: &[&str],
    args: &[&str],
    ep: &[&str],
    cmd: &[&str],
) -> Result<Vec<String>, Error> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let c = ContainerConfig {
        command: s(command),
        args: s(args),
        ..Default::default()
    };
    let img = ImageDefaults {
        entrypoint: s(ep),
        cmd: s(cmd),
        ..Default::default()
    };
    spec_of(&c, &img).map(|v| strs(&v["process"]["args"]))
}

#[test]
fn command_and_args() {
    // Nothing from CRI: image entrypoint + cmd.
    assert_eq!(args_of(&[], &[], &["/ep"], &["a"]).unwrap(), ["/ep", "a"]);
    // CRI args only: image entrypoint + CRI args.
    assert_eq!(
        args_of(&[], &["b"], &["/ep"], &["a"]).unwrap(),
        ["/ep", "b"]
    );
    // CRI command without args: the image Cmd is not used.
    assert_eq!(args_of(&["/c"], &[], &["/ep"], &["a"]).unwrap(), ["/c"]);
    // Both from CRI.
    assert_eq!(
        args_of(&["/c"], &["b"], &["/ep"], &["a"]).unwrap(),
        ["/c", "b"]
    );
    // Cmd only.
    assert_eq!(args_of(&[], &[], &[], &["/cmd"]).unwrap(), ["/cmd"]);
    assert!(matches!(args_of(&[], &[], &[], &[]), Err(Error::NoCommand)));
    assert_eq!(
        args_of(&[], &[], &[], &[]).unwrap_err().to_string(),
        "invalid argument: no command specified"
    );
}

#[test]
fn env_merge() {
    let mut c = cfg();
    c.envs = vec![
        KeyValue {
            key: "A".into(),
            value: b"cri".to_vec(),
        },
        KeyValue {
            key: "C".into(),
            value: b"3".to_vec(),
        },
    ];
    let img = ImageDefaults {
        env: vec!["A=img".into(), "B=2".into()],
        ..Default::default()
    };
    let env = strs(&spec_of(&c, &img).unwrap()["process"]["env"]);
    assert_eq!(
        env,
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME=mypod",
            "A=cri",
            "B=2",
            "C=3"
        ]
    );
    let img = ImageDefaults {
        env: vec!["PATH=/x".into(), "HOSTNAME=img".into()],
        ..Default::default()
    };
    let env = strs(&spec_of(&cfg(), &img).unwrap()["process"]["env"]);
    assert_eq!(env, ["PATH=/x", "HOSTNAME=img"]);
}

#[test]
fn cwd_precedence() {
    let img = ImageDefaults {
        working_dir: "/img".into(),
        ..Default::default()
    };
    let mut c = cfg();
    assert_eq!(
        spec_of(&c, &ImageDefaults::default()).unwrap()["process"]["cwd"],
        "/"
    );
    assert_eq!(spec_of(&c, &img).unwrap()["process"]["cwd"], "/img");
    c.working_dir = "/cri".into();
    assert_eq!(spec_of(&c, &img).unwrap()["process"]["cwd"], "/cri");
    c.working_dir = "rel".into();
    assert!(
        spec_of(&c, &img)
            .unwrap_err()
            .to_string()
            .contains("working_dir")
    );
}

#[test]
fn ambient_capabilities_are_in_every_set_until_dropped() {
    let sc = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_ambient_capabilities: vec!["NET_ADMIN".into(), "CAP_NET_BIND_SERVICE".into()],
            drop_capabilities: vec!["NET_ADMIN".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = spec_of(&with_sc(cfg(), sc), &ImageDefaults::default()).unwrap();
    let caps = &v["process"]["capabilities"];
    assert_eq!(strs(&caps["ambient"]), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(caps["ambient"], caps["inheritable"]);
    let bounding = strs(&caps["bounding"]);
    assert!(bounding.contains(&"CAP_NET_BIND_SERVICE".to_string()));
    assert!(!bounding.contains(&"CAP_NET_ADMIN".to_string()));
    let bad = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_ambient_capabilities: vec!["CAP_NOPE".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = spec_of(&with_sc(cfg(), bad), &ImageDefaults::default()).unwrap_err();
    assert!(e.to_string().contains("add_ambient_capabilities[0]"), "{e}");
}

fn caps_of(add: &[&str], drop: &[&str]) -> Vec<String> {
    let sc = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = spec_of(&with_sc(cfg(), sc), &ImageDefaults::default()).unwrap();
    let caps = &v["process"]["capabilities"];
    assert_eq!(caps["bounding"], caps["effective"]);
    assert_eq!(caps["bounding"], caps["permitted"]);
    assert!(caps.get("inheritable").is_none() && caps.get("ambient").is_none());
    strs(&caps["bounding"])
}

#[test]
fn capabilities_add_drop() {
    assert_eq!(caps_of(&[], &[]), sorted(DEFAULT_CAPS));
    let c = caps_of(&["net_admin", "CAP_SYS_TIME"], &["chown", "CAP_KILL"]);
    assert!(c.contains(&"CAP_NET_ADMIN".into()) && c.contains(&"CAP_SYS_TIME".into()));
    assert!(!c.contains(&"CAP_CHOWN".into()) && !c.contains(&"CAP_KILL".into()));
    assert_eq!(c.len(), DEFAULT_CAPS.len());
    assert_eq!(
        caps_of(&["NET_BIND_SERVICE"], &["ALL"]),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert!(caps_of(&[], &["all"]).is_empty());
    // ALL is what berthd holds (this host may withhold some).
    let all = caps_of(&["ALL"], &["SYS_ADMIN"]);
    assert_eq!(all.len(), own_capabilities().len() - 1);
    assert!(!all.contains(&"CAP_SYS_ADMIN".into()));
    let sc = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: vec!["BOGUS".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(spec_of(&with_sc(cfg(), sc), &ImageDefaults::default()).is_err());
}

#[test]
fn privileged_needs_a_privileged_pod_and_opens_everything() {
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        seccomp: Some(cri_api::v1::SecurityProfile::default()),
        ..Default::default()
    };
    let c = with_sc(cfg(), sc);
    let e = spec_of(&c, &ImageDefaults::default()).unwrap_err();
    assert!(e.to_string().contains("privileged pod sandbox"), "{e}");
    let r = rootfs();
    let mut p = pod();
    p.privileged = true;
    let v = build_json("abc", &c, &ImageDefaults::default(), &p, &r.0).unwrap();
    assert_eq!(
        v["process"]["capabilities"]["bounding"],
        json!(sorted(&own_capabilities()))
    );
    assert!(own_capabilities().contains(&"CAP_SYS_ADMIN".to_string()));
    assert_eq!(v["linux"]["maskedPaths"], json!([]));
    assert!(v["linux"].get("seccomp").is_none());
    assert_eq!(
        v["linux"]["resources"]["devices"],
        json!([{ "allow": true, "access": "rwm" }])
    );
    let devs = v["linux"]["devices"].as_array().unwrap();
    assert!(devs.iter().all(|d| d["path"] != "/dev/null"));
    assert!(!devs.is_empty());
    let sys = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys")
        .unwrap();
    assert!(!sys["options"].as_array().unwrap().contains(&json!("ro")));
}

#[test]
fn sysctls_must_be_namespaced_and_have_their_namespace() {
    let r = rootfs();
    let mut p = pod();
    p.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    let e = build_json("abc", &cfg(), &ImageDefaults::default(), &p, &r.0).unwrap_err();
    assert!(e.to_string().contains("host's network"), "{e}");
    p.net_ns = Some("/run/netns/x".into());
    p.ipc_ns = Some("/run/ipc/x".into());
    p.sysctls
        .insert("kernel.shm_rmid_forced".into(), "1".into());
    let v = build_json("abc", &cfg(), &ImageDefaults::default(), &p, &r.0).unwrap();
    assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
    p.sysctls.insert("kernel.panic".into(), "1".into());
    let e = build_json("abc", &cfg(), &ImageDefaults::default(), &p, &r.0).unwrap_err();
    assert!(e.to_string().contains("not a namespaced sysctl"), "{e}");
}

#[test]
fn namespaces_and_hostname() {
    let r = rootfs();
    let img = ImageDefaults::default();
    let v = build_json("abc", &cfg(), &img, &pod(), &r.0).unwrap();
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert!(n.get("path").is_none());
            n["type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(&ns[..2], ["pid", "mount"]);
    assert!(v.get("hostname").is_none());

    let mut p = pod();
    p.net_ns = Some("/run/berth/netns/x".into());
    p.ipc_ns = Some("/run/berth/ipcns/x".into());
    p.uts_ns = Some("/run/berth/utsns/x".into());
    let v = build_json("abc", &cfg(), &img, &p, &r.0).unwrap();
    let ns = v["linux"]["namespaces"].as_array().unwrap();
    assert_eq!(ns[0], json!({"type":"pid"}));
    assert_eq!(ns[1], json!({"type":"ipc","path":"/run/berth/ipcns/x"}));
    assert_eq!(ns[2], json!({"type":"uts","path":"/run/berth/utsns/x"}));
    assert_eq!(ns[3], json!({"type":"network","path":"/run/berth/netns/x"}));
    assert_eq!(ns[4], json!({"type":"mount"}));
    assert_eq!(v["hostname"], "mypod");

    // Host PID.
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = build_json("abc", &with_sc(cfg(), sc), &img, &pod(), &r.0).unwrap();
    assert!(
        !v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "pid")
    );
}

fn dests(v: &Value) -> Vec<String> {
    v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(v: &'a Value, dest: &str) -> Vec<&'a Value> {
    v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] == dest)
        .collect()
}

#[test]
fn default_mounts() {
    let v = spec_of(&cfg(), &ImageDefaults::default()).unwrap();
    assert_eq!(
        dests(&v),
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/shm",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf"
        ]
    );
    assert_eq!(find(&v, "/dev/shm")[0]["source"], "/dev/shm");
    assert_eq!(
        find(&v, "/etc/hosts")[0],
        &json!({
            "destination": "/etc/hosts", "type": "bind", "source": "/pod/hosts",
            "options": ["rbind", "rprivate"]
        })
    );
    let mut p = pod();
    p.shm_dir = Some("/run/pod/shm".into());
    let sc = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    };
    let r = rootfs();
    let v = build_json(
        "abc",
        &with_sc(cfg(), sc),
        &ImageDefaults::default(),
        &p,
        &r.0,
    )
    .unwrap();
    assert_eq!(find(&v, "/dev/shm")[0]["source"], "/run/pod/shm");
    assert_eq!(
        find(&v, "/etc/resolv.conf")[0]["options"],
        json!(["rbind", "rprivate", "ro"])
    );
    assert_eq!(
        v["root"],
        json!({"path": r.0.to_string_lossy(), "readonly": true})
    );
    assert_eq!(v["linux"]["maskedPaths"], json!(DEFAULT_MASKED_PATHS));
    assert_eq!(v["linux"]["readonlyPaths"], json!(DEFAULT_READONLY_PATHS));
}

fn cri_mount(container: &str, host: &Path, readonly: bool, propagation: i32) -> Mount {
    Mount {
        container_path: container.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        propagation,
        ..Default::default()
    }
}

#[test]
fn cri_mounts() {
    let h = tmpdir("host");
    std::fs::write(h.0.join("hosts"), "").unwrap();
    std::fs::create_dir(h.0.join("data")).unwrap();
    std::os::unix::fs::symlink(h.0.join("data"), h.0.join("link")).unwrap();
    let canon = std::fs::canonicalize(h.0.join("data")).unwrap();

    let mut c = cfg();
    c.mounts = vec![
        cri_mount("/data/sub", &h.0.join("data"), false, 1),
        cri_mount("/etc/hosts", &h.0.join("hosts"), true, 0),
        cri_mount("/data", &h.0.join("link"), true, 2),
    ];
    let v = spec_of(&c, &ImageDefaults::default()).unwrap();
    let hosts = find(&v, "/etc/hosts");
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["options"], json!(["rbind", "rprivate", "ro"]));
    let data = find(&v, "/data")[0];
    assert_eq!(data["source"], canon.to_string_lossy().as_ref());
    assert_eq!(data["options"], json!(["rbind", "rshared", "ro"]));
    assert_eq!(
        find(&v, "/data/sub")[0]["options"],
        json!(["rbind", "rslave"])
    );
    let d = dests(&v);
    let pos = |x: &str| d.iter().position(|y| y == x).unwrap();
    assert!(pos("/data") < pos("/data/sub"));
    assert!(pos("/sys/fs/cgroup") < pos("/data"));
    assert_eq!(v["linux"]["rootfsPropagation"], "shared");

    let mut c = cfg();
    c.mounts = vec![cri_mount("/x", &h.0.join("missing"), false, 0)];
    let e = spec_of(&c, &ImageDefaults::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mounts[0].host_path") && e.contains("missing"),
        "{e}"
    );
    c.mounts = vec![cri_mount("rel", &h.0.join("data"), false, 0)];
    assert!(
        spec_of(&c, &ImageDefaults::default())
            .unwrap_err()
            .to_string()
            .contains("container_path")
    );
}

#[test]
fn cgroups_and_resources() {
    let r = rootfs();
    let img = ImageDefaults::default();
    let mut c = cfg();
    c.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50000,
            cpu_period: 100000,
            memory_limit_in_bytes: 1 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let v = build_json("abc", &c, &img, &pod(), &r.0).unwrap();
    assert_eq!(v["linux"]["cgroupsPath"], "/kubepods/pod123/berth-abc");
    assert_eq!(v["process"]["oomScoreAdj"], 999);
    let res = &v["linux"]["resources"];
    assert_eq!(
        res["cpu"],
        json!({"shares":512,"quota":50000,"period":100000,"cpus":"0"})
    );
    assert_eq!(res["memory"], json!({"limit": 1048576}));
    assert!(res.get("pids").is_none());
    assert_eq!(res["devices"][0], json!({"allow": false, "access": "rwm"}));
    assert_eq!(v["ociVersion"], "1.0.2");
    let mut p = pod();
    p.cgroup_parent = String::new();
    let v = build_json("abc", &cfg(), &img, &p, &r.0).unwrap();
    assert_eq!(v["linux"]["cgroupsPath"], "/berth/abc");
    assert!(v["process"].get("oomScoreAdj").is_none());
    assert!(build_json("../x", &cfg(), &img, &p, &r.0).is_err());
}

#[test]
fn spec_errors_are_failed_precondition_with_their_text() {
    let e = build(
        "../x",
        &cfg(),
        &ImageDefaults::default(),
        &pod(),
        Path::new("/nonexistent"),
    )
    .unwrap_err();
    let text = e.to_string();
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), text);
    assert!(text.contains("container id"), "{text}");
}

#[test]
fn the_empty_spec_carries_none_of_oci_specs_defaults() {
    assert_eq!(
        serde_json::to_value(super::empty()).unwrap(),
        json!({
            "ociVersion": "1.0.2",
            "mounts": [],
            "process": { "terminal": false, "user": { "uid": 0, "gid": 0 }, "cwd": "/" },
            "linux": { "resources": {} }
        })
    );
}
