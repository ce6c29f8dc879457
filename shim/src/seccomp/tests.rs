//! Unit tests of `seccomp`.

use super::*;
use cri_api::v1::SecurityProfile;

fn sc(t: ProfileType, r: &str) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }),
        ..Default::default()
    }
}

#[test]
fn profile_kinds() {
    let none = LinuxContainerSecurityContext::default();
    assert_eq!(profile(&none, &[]).unwrap(), None);
    assert_eq!(
        profile(&sc(ProfileType::Unconfined, ""), &[]).unwrap(),
        None
    );
    let d = profile(&sc(ProfileType::RuntimeDefault, ""), &[])
        .unwrap()
        .unwrap();
    assert_eq!(d["defaultAction"], "SCMP_ACT_ERRNO");
    let text = d.to_string();
    assert!(text.contains("\"clone3\""));
    assert!(!text.contains("\"unshare\""), "unshare needs CAP_SYS_ADMIN");
    let admin = runtime_default(&["CAP_SYS_ADMIN".into()]).to_string();
    assert!(admin.contains("\"unshare\"") && admin.contains("\"mount\""));
    let e = profile(&sc(ProfileType::Localhost, "relative.json"), &[]).unwrap_err();
    assert!(e.contains("absolute"), "{e}");
    let e = profile(&sc(ProfileType::Localhost, "/no/such.json"), &[]).unwrap_err();
    assert!(e.contains("/no/such.json"), "{e}");
}

#[test]
fn the_typed_profile_is_the_json_one() {
    let sc = sc(ProfileType::RuntimeDefault, "");
    let caps = ["CAP_CHOWN".to_string()];
    let typed = for_container(&sc, &caps).unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        profile(&sc, &caps).unwrap().unwrap()
    );
}

#[test]
fn docker_profiles_become_oci() {
    let doc = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    let p = from_file(&doc).unwrap();
    assert_eq!(p["syscalls"][0]["names"], json!(["mkdir"]));
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
    }
    assert!(from_file(&json!({"syscalls": []})).is_err());
    assert!(from_file(&json!({"defaultAction": "KILL"})).is_err());
}

#[test]
fn deprecated_paths() {
    #[allow(deprecated)]
    let mut s = LinuxContainerSecurityContext {
        seccomp_profile_path: "runtime/default".into(),
        ..Default::default()
    };
    assert_eq!(ask(&s), Ok(Ask::Default));
    #[allow(deprecated)]
    {
        s.seccomp_profile_path = "localhost//etc/p.json".into();
    }
    assert_eq!(ask(&s), Ok(Ask::File("/etc/p.json".into())));
}
