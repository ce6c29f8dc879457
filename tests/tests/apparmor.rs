//! AppArmor, where the node has it (the VM lane's Debian guest): berth's
//! default profile, Unconfined, Localhost profiles in both of the CRI's
//! forms, privileged containers, exec'd processes, under the builtin
//! handler and runc. Where the node has no AppArmor (this repository's
//! usual host), each test says SKIPPED, after checking what berthd reports.

use std::io::Write;
use std::process::{Command, Stdio};

use berth_tests::setup::{Setup, busybox_config, setup_on};
use cri_api::v1::security_profile::ProfileType;
use cri_api::v1::*;
use tokio::sync::RwLock;
use tonic::Code;

const DEFAULT: &str = "berth-default";
const DENY_WRITE: &str = "berth-test-deny-write";

/// Held for reading by every test; for writing by the one that unloads
/// berth's default profile, which every other test's containers use.
static PROFILES: RwLock<()> = RwLock::const_new(());

/// The kernel's AppArmor, on and mounted.
fn kernel() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
        && std::path::Path::new("/sys/kernel/security/apparmor/profiles").exists()
}

/// AppArmor as berth (and the peers) count it: the kernel's, and the
/// parser to load profiles.
fn enabled() -> bool {
    kernel()
        && Command::new("apparmor_parser")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn skipped(test: &str) -> bool {
    if enabled() {
        return false;
    }
    eprintln!("SKIPPED {test}: AppArmor is not enabled on this node");
    true
}

fn loaded(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .expect("profiles")
        .lines()
        .any(|l| l.rsplit_once(" (").is_some_and(|(n, _)| n == name))
}

/// Loads (or replaces) a profile, as an operator would.
fn load(text: &str) {
    let mut p = Command::new("apparmor_parser")
        .args(["-K", "-r"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("apparmor_parser");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("profile");
    assert!(p.wait().expect("wait").success(), "apparmor_parser -r");
}

fn load_deny_write() {
    load(&format!(
        "#include <tunables/global>\n\
         profile {DENY_WRITE} flags=(attach_disconnected) {{\n\
         #include <abstractions/base>\n  file,\n  deny /** w,\n}}\n"
    ));
}

fn with_sc(mut c: ContainerConfig, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

fn profile(t: ProfileType, name: &str) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        apparmor: Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: name.into(),
        }),
        ..Default::default()
    }
}

#[allow(deprecated)]
fn legacy(s: &str) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        apparmor_profile: s.into(),
        ..Default::default()
    }
}

/// `/proc/self/attr/current` of a process exec'd into `id`.
async fn exec_label(s: &mut Setup, id: &str) -> String {
    exec(s, id, "cat /proc/self/attr/current").await.1
}

async fn exec(s: &mut Setup, id: &str, script: &str) -> (i32, String) {
    let r =
        s.c.exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 60,
        })
        .await
        .expect("exec")
        .into_inner();
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
    )
}

/// Prints the container's label, tries a mount (it has CAP_SYS_ADMIN, and
/// no seccomp filter: only AppArmor refuses it), then waits.
const PROBE: &str = "echo label=$(cat /proc/self/attr/current); \
    mount -t tmpfs t /home && echo mount=ok || echo mount=refused; echo ready; sleep 1000";

fn probe(s: &Setup, name: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    let mut sc = sc;
    sc.capabilities = Some(Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    with_sc(s.config(name, &["/bin/sh", "-c", PROBE]), sc)
}

/// Runs the probe; its label and whether the mount worked, and the label
/// of a process exec'd into it.
async fn observe(s: &mut Setup, name: &str, sc: LinuxContainerSecurityContext) -> Vec<String> {
    let id = s.run(probe(s, name, sc)).await;
    s.wait_log(name, "ready").await;
    let log = s.log(name);
    let mut out: Vec<String> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .filter(|l| l.starts_with("label=") || l.starts_with("mount="))
        .map(String::from)
        .collect();
    out.push(format!("exec={}", exec_label(s, &id).await));
    out
}

fn expect(label: &str, mount: &str) -> Vec<String> {
    vec![
        format!("label={label}"),
        format!("mount={mount}"),
        format!("exec={label}"),
    ]
}

async fn the_default_and_unconfined(handler: &str) {
    let _turn = PROFILES.read().await;
    let mut s = setup_on(handler, busybox_config(), |_| {}).await;
    let confined = expect(&format!("{DEFAULT} (enforce)"), "refused");
    let free = expect("unconfined", "ok");
    // Nothing said: the runtime default, as with containerd and CRI-O.
    assert_eq!(observe(&mut s, "unset", Default::default()).await, confined);
    assert_eq!(
        observe(&mut s, "default", profile(ProfileType::RuntimeDefault, "")).await,
        confined
    );
    assert_eq!(
        observe(&mut s, "legacy-default", legacy("runtime/default")).await,
        confined
    );
    assert_eq!(
        observe(&mut s, "unconfined", profile(ProfileType::Unconfined, "")).await,
        free
    );
    assert_eq!(
        observe(&mut s, "legacy-unconfined", legacy("unconfined")).await,
        free
    );
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_profile_confines_containers_and_execs_unless_unconfined() {
    if skipped("the_default_profile_confines_containers_and_execs_unless_unconfined") {
        return;
    }
    the_default_and_unconfined("").await;
    the_default_and_unconfined("runc").await;
}

async fn localhost(handler: &str) {
    let _turn = PROFILES.read().await;
    load_deny_write();
    let mut s = setup_on(handler, busybox_config(), |_| {}).await;
    let script = "touch /tmp/foo && echo write=ok || echo write=denied; \
                  echo label=$(cat /proc/self/attr/current); sleep 1000";
    for (name, sc) in [
        ("field", profile(ProfileType::Localhost, DENY_WRITE)),
        (
            "prefixed",
            profile(ProfileType::Localhost, &format!("localhost/{DENY_WRITE}")),
        ),
        ("legacy", legacy(&format!("localhost/{DENY_WRITE}"))),
        // The field wins over the deprecated string.
        ("both", {
            let mut sc = profile(ProfileType::Localhost, DENY_WRITE);
            #[allow(deprecated)]
            {
                sc.apparmor_profile = "localhost/berth-test-never-loaded".into();
            }
            sc
        }),
    ] {
        let id = s
            .run(with_sc(s.config(name, &["/bin/sh", "-c", script]), sc))
            .await;
        s.wait_log(name, &format!("label={DENY_WRITE} (enforce)"))
            .await;
        assert!(s.log(name).contains("write=denied"), "{}", s.log(name));
        // An exec'd process is under the same profile.
        let (code, _) = exec(&mut s, &id, "touch /tmp/bar").await;
        assert_ne!(code, 0, "{name}: exec wrote under {DENY_WRITE}");
        assert_eq!(
            exec_label(&mut s, &id).await,
            format!("{DENY_WRITE} (enforce)")
        );
    }
    // A profile that is not loaded: refused at create, saying so; nothing
    // is left of the container.
    for sc in [
        profile(ProfileType::Localhost, "berth-test-never-loaded"),
        legacy("localhost/berth-test-never-loaded"),
    ] {
        let e = s
            .create(with_sc(s.config("unloaded", &["true"]), sc))
            .await
            .expect_err("an unloaded profile");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("berth-test-never-loaded") && e.message().contains("not loaded"),
            "{e:?}"
        );
    }
    let names: Vec<String> =
        s.c.list_containers(ListContainersRequest::default())
            .await
            .expect("list")
            .into_inner()
            .containers
            .into_iter()
            .filter_map(|c| c.metadata.map(|m| m.name))
            .collect();
    assert!(!names.iter().any(|n| n == "unloaded"), "{names:?}");
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_localhost_profile_confines_and_an_unloaded_one_is_refused() {
    if skipped("a_localhost_profile_confines_and_an_unloaded_one_is_refused") {
        return;
    }
    localhost("").await;
    localhost("runc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_containers_run_unconfined() {
    if skipped("privileged_containers_run_unconfined") {
        return;
    }
    let _turn = PROFILES.read().await;
    let mut s = setup_on("", busybox_config(), |p| {
        p.linux.get_or_insert_default().security_context = Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        });
    })
    .await;
    let privileged = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    assert_eq!(
        observe(&mut s, "privileged", privileged).await,
        expect("unconfined", "ok")
    );
    // The pod being privileged changes nothing for its other containers.
    assert_eq!(
        observe(&mut s, "plain", Default::default()).await,
        expect(&format!("{DEFAULT} (enforce)"), "refused")
    );
    s.remove_all().await;
}

async fn apparmor_info(s: &mut Setup) -> serde_json::Value {
    let info =
        s.c.status(StatusRequest { verbose: true })
            .await
            .expect("status")
            .into_inner()
            .info;
    serde_json::from_str(info.get("apparmor").expect("apparmor in info")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_apparmor_and_the_default_profile_is_loaded_again_when_missing() {
    let _turn = PROFILES.write().await;
    let mut s = setup_on("", busybox_config(), |_| {}).await;
    let info = apparmor_info(&mut s).await;
    assert_eq!(info["enabled"], enabled(), "{info}");
    assert_eq!(info["kernel"], kernel(), "{info}");
    if skipped("the_default_profile_is_loaded_again_when_missing") {
        assert_eq!(info["defaultLoaded"], false, "{info}");
        s.remove_all().await;
        return;
    }
    assert_eq!(info["defaultProfile"], DEFAULT, "{info}");
    assert!(info["parser"].is_string(), "{info}");
    // berthd loads it at start, off the start's path: the first container
    // waits for it.
    assert_eq!(
        observe(&mut s, "first", Default::default()).await,
        expect(&format!("{DEFAULT} (enforce)"), "refused")
    );
    assert_eq!(apparmor_info(&mut s).await["defaultLoaded"], true);
    // An operator (or a package upgrade) unloads it: the next container
    // that needs it loads it again.
    std::fs::write("/sys/kernel/security/apparmor/.remove", DEFAULT).expect("unload");
    assert!(!loaded(DEFAULT));
    assert_eq!(apparmor_info(&mut s).await["defaultLoaded"], false);
    assert_eq!(
        observe(&mut s, "again", Default::default()).await,
        expect(&format!("{DEFAULT} (enforce)"), "refused")
    );
    assert!(loaded(DEFAULT));
    s.remove_all().await;
}
