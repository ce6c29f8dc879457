//! Pinned-image patterns and the config's user.

use super::pull::user_of;
use super::*;

#[test]
fn globs() {
    assert!(glob_match(
        "docker.io/library/*",
        "docker.io/library/busybox:latest"
    ));
    assert!(glob_match("*:v?", "x:v1"));
    assert!(!glob_match("*:v?", "x:v10"));
    assert!(glob_match("exact", "exact"));
    assert!(!glob_match("exact", "exactly"));
}

#[test]
fn pinned_patterns_are_normalised() {
    assert_eq!(
        normalize_pattern("busybox"),
        "docker.io/library/busybox:latest"
    );
    // Globs match full names as written.
    assert_eq!(normalize_pattern("*/pause:*"), "*/pause:*");
    assert_eq!(
        normalize_pattern("127.0.0.1:5000/a"),
        "127.0.0.1:5000/a:latest"
    );
    assert_eq!(
        normalize_pattern("registry.k8s.io/pause:3.*"),
        "registry.k8s.io/pause:3.*"
    );
    assert_eq!(normalize_pattern("*"), "*");
}

#[test]
fn users() {
    let cfg = |u: &str| ImageConfig {
        config: Some(manifest::ContainerConfig {
            user: Some(u.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(user_of(&cfg("1000")), (Some(1000), String::new()));
    assert_eq!(user_of(&cfg("1000:1000")), (Some(1000), String::new()));
    assert_eq!(user_of(&cfg("app:grp")), (None, "app".into()));
    assert_eq!(user_of(&cfg("")), (None, String::new()));
}
