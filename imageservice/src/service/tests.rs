//! Pinned-image patterns, the config's user, and leases.

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

fn service(tag: &str) -> (ImageService, PathBuf) {
    let dir = std::env::temp_dir().join(format!("berth-images-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = Database::create(dir.join("berth.redb")).unwrap();
    let settings = Settings {
        dir: dir.join("images"),
        hosts_dir: dir.join("certs.d"),
        registry: Default::default(),
        pinned: Vec::new(),
        limits: Default::default(),
    };
    (ImageService::open(settings, Arc::new(db)).unwrap(), dir)
}

fn record(id: &str) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        repo_tags: Default::default(),
        repo_digests: Default::default(),
        manifest: String::new(),
        blobs: Vec::new(),
        chain_ids: vec![format!("sha256:{}", "c".repeat(64))],
        size: 0,
        uid: None,
        username: String::new(),
        created_ns: 0,
    }
}

#[tokio::test]
async fn an_image_removed_since_its_lookup_is_not_leased() {
    let (svc, dir) = service("lease");
    let id = format!("sha256:{}", "a".repeat(64));
    let add = || {
        svc.db()
            .add(
                record(&id),
                Some("example.com/app:1"),
                "example.com/app@sha256:x",
            )
            .unwrap()
    };
    let rec = add();
    // Looked up, then removed (and collected) before the lease.
    svc.remove(&id).await.unwrap();
    let e = svc.lease("c1", &[&rec]).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(ref i) if *i == id), "{e}");
    assert!(svc.lease_holders().is_empty());
    // An image still there is leased.
    let rec = add();
    svc.lease("c2", &[&rec]).await.unwrap();
    assert_eq!(svc.lease_holders(), ["c2"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
