//! The CRI ImageService against a real registry (Debian's docker-registry on
//! loopback) and a real berthd: pull, list, inspect, remove, auth, mirrors,
//! hostile layers, corruption, concurrency, restarts.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_tests::fixtures::{
    self, Compression, ImageConfig, Layer, ManifestKind, Platform, RegistryClient,
};
use berth_tests::registry::{Registry, RegistryOptions};
use berth_tests::{Berthd, Options, TempDir};
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::*;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = ImageServiceClient<Channel>;

async fn pull(c: &mut Client, image: &str) -> Result<String, Status> {
    pull_with(c, image, None).await
}

async fn pull_with(
    c: &mut Client,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, Status> {
    c.pull_image(PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

async fn list(c: &mut Client) -> Vec<Image> {
    c.list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn status(c: &mut Client, image: &str) -> Option<Image> {
    c.image_status(ImageStatusRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        verbose: false,
    })
    .await
    .expect("ImageStatus")
    .into_inner()
    .image
}

async fn remove(c: &mut Client, image: &str) -> Result<(), Status> {
    c.remove_image(RemoveImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
    })
    .await
    .map(|_| ())
}

/// Files under the image store's blobs/ and snapshots/ (and ingest/).
fn store_entries(b: &Berthd) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["images/blobs/sha256", "images/snapshots", "images/ingest"] {
        if let Ok(rd) = std::fs::read_dir(b.root.join(sub)) {
            for e in rd.flatten() {
                out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

fn snapshot_dir(b: &Berthd, chain_hex: &str) -> PathBuf {
    b.root.join("images/snapshots").join(chain_hex)
}

/// The snapshot dirs of an image, bottom layer first, from its verbose
/// status.
async fn snapshots_of(b: &Berthd, c: &mut Client, image: &str) -> Vec<PathBuf> {
    let r = c
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).expect("info JSON");
    info["chainIds"]
        .as_array()
        .expect("chainIds")
        .iter()
        .map(|c| {
            let c = c.as_str().expect("chain id");
            snapshot_dir(b, c.trim_start_matches("sha256:"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_inspect_and_remove() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/busybox", "1.0", Compression::Gzip).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let name = reg.image("test/busybox:1.0");

    let id = pull(&mut c, &name).await.expect("pull");
    assert_eq!(id, pushed.config_digest, "image_ref is the config digest");

    let images = list(&mut c).await;
    assert_eq!(images.len(), 1);
    let img = &images[0];
    assert_eq!(img.id, pushed.config_digest);
    assert_eq!(img.repo_tags, [name.as_str()]);
    assert_eq!(img.repo_digests, [pushed.digest_ref.as_str()]);
    assert_eq!(
        img.size,
        pushed.manifest_size + pushed.blobs_size(),
        "manifest + config + compressed layers"
    );
    assert!(!img.pinned);

    // Every way of naming it finds it, with the same answer (critest).
    let short = &pushed.config_digest["sha256:".len().."sha256:".len() + 12];
    let first = status(&mut c, &name).await.expect("by name");
    for spelling in [
        name.as_str(),
        pushed.config_digest.as_str(),
        &pushed.config_digest["sha256:".len()..],
        short,
        pushed.digest_ref.as_str(),
    ] {
        let s = status(&mut c, spelling)
            .await
            .unwrap_or_else(|| panic!("{spelling} not found"));
        assert_eq!(s.id, pushed.config_digest, "{spelling}");
        assert_eq!(s, first, "{spelling}");
    }
    // ListImages with a filter.
    let filtered = c
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);

    // StreamImages: the same images, each once.
    let mut stream = c
        .stream_images(StreamImagesRequest::default())
        .await
        .expect("StreamImages")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(batch) = stream.message().await.expect("stream") {
        streamed.extend(batch.images.into_iter().map(|i| i.id));
    }
    assert_eq!(streamed, [pushed.config_digest.as_str()]);

    // An unknown image: no image, no error (what the kubelet expects).
    assert!(status(&mut c, &reg.image("test/nothing:1")).await.is_none());

    // The layer is unpacked: busybox and its hard-linked applets.
    let snaps = snapshots_of(&b, &mut c, &name).await;
    assert_eq!(snaps.len(), 1);
    let bb = std::fs::metadata(snaps[0].join("bin/busybox")).expect("bin/busybox");
    assert_eq!(
        bb.len(),
        std::fs::metadata("/bin/busybox")
            .expect("host busybox")
            .len()
    );
    let sh = std::fs::metadata(snaps[0].join("bin/sh")).expect("bin/sh");
    assert_eq!(sh.ino(), bb.ino(), "bin/sh is a hard link to busybox");

    // Remove by tag (its only name): the image and its content go.
    remove(&mut c, &name).await.expect("remove");
    assert!(list(&mut c).await.is_empty());
    assert!(store_entries(&b).is_empty(), "{:?}", store_entries(&b));
    // Idempotent.
    remove(&mut c, &name).await.expect("remove again");
    remove(&mut c, &pushed.config_digest)
        .await
        .expect("remove by id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_and_manifest_kind() {
    let reg = Registry::start();
    let b = Berthd::start().await;
    let mut c = b.image().await;
    for kind in [ManifestKind::Oci, ManifestKind::Docker] {
        for comp in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let image = fixtures::Image::new(
                kind,
                ImageConfig::for_platform(&Platform::linux_amd64())
                    .cmd(["/bin/sh"])
                    .label("variant", &format!("{kind:?}-{comp:?}")),
            )
            .layer(
                Layer::new()
                    .dir("etc", 0o755)
                    .file("etc/greeting", format!("{kind:?} {comp:?}"), 0o640)
                    .build(comp),
            );
            let tag = format!("{kind:?}-{comp:?}").to_lowercase();
            let pushed = fixtures::push_image(&reg, "test/kinds", &tag, &image).await;
            let name = reg.image(&format!("test/kinds:{tag}"));
            let id = pull(&mut c, &name)
                .await
                .unwrap_or_else(|e| panic!("{kind:?} {comp:?}: {e}"));
            assert_eq!(id, pushed.config_digest);
            let snaps = snapshots_of(&b, &mut c, &name).await;
            let f = snaps[0].join("etc/greeting");
            assert_eq!(
                std::fs::read_to_string(&f).expect("greeting"),
                format!("{kind:?} {comp:?}")
            );
            assert_eq!(std::fs::metadata(&f).expect("meta").mode() & 0o7777, 0o640);
        }
    }
    assert_eq!(list(&mut c).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_gives_this_nodes_platform() {
    let reg = Registry::start();
    let b = Berthd::start().await;
    let mut c = b.image().await;
    for kind in [ManifestKind::Oci, ManifestKind::Docker] {
        let repo = format!("test/multi-{kind:?}").to_lowercase();
        let pushed = fixtures::push_busybox_index(
            &reg,
            &repo,
            "1",
            kind,
            Compression::Gzip,
            &[Platform::linux_arm64(), Platform::linux_amd64()],
        )
        .await;
        let (_, amd64) = pushed
            .manifests
            .iter()
            .find(|(p, _)| p.architecture == "amd64")
            .expect("amd64 child");
        let name = reg.image(&format!("{repo}:1"));
        let id = pull(&mut c, &name).await.expect("pull index");
        assert_eq!(id, amd64.config_digest, "{kind:?}: the amd64 image");
        let img = status(&mut c, &name).await.expect("status");
        // The repo digest is what the tag points at: the index. (Both
        // indexes hold the same amd64 config, so after the second pull the
        // one image has both repo digests.)
        assert!(
            img.repo_digests.contains(&pushed.digest_ref),
            "{:?}",
            img.repo_digests
        );
        let snaps = snapshots_of(&b, &mut c, &name).await;
        let marker =
            std::fs::read_to_string(snaps.last().expect("layers").join("etc/berth-platform"))
                .expect("marker");
        assert_eq!(marker.trim(), "linux/amd64");
    }

    // An index without this platform: NotFound, nothing kept.
    fixtures::push_busybox_index(
        &reg,
        "test/armonly",
        "1",
        ManifestKind::Oci,
        Compression::Gzip,
        &[Platform::linux_arm64()],
    )
    .await;
    let before = store_entries(&b);
    let e = pull(&mut c, &reg.image("test/armonly:1"))
        .await
        .expect_err("no amd64");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("linux/amd64"), "{}", e.message());
    assert_eq!(store_entries(&b), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_by_digest_an_image_has_no_tag() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/bydigest", "1", Compression::Zstd).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let id = pull(&mut c, &pushed.digest_ref)
        .await
        .expect("pull by digest");
    assert_eq!(id, pushed.config_digest);
    let img = status(&mut c, &pushed.digest_ref).await.expect("status");
    assert!(img.repo_tags.is_empty(), "{:?}", img.repo_tags);
    assert_eq!(img.repo_digests, [pushed.digest_ref.as_str()]);

    // A digest that does not exist there.
    let missing = format!("{}@sha256:{}", reg.image("test/bydigest"), "0".repeat(64));
    let e = pull(&mut c, &missing).await.expect_err("no such manifest");
    assert_eq!(e.code(), Code::NotFound, "{e}");
}

fn mount_overlay(lowers_top_first: &[PathBuf], at: &Path) {
    let lower = lowers_top_first
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let st = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lower}"))
        .arg(at)
        .status()
        .expect("mount");
    assert!(st.success(), "mount overlay failed");
}

fn umount(at: &Path) {
    let _ = std::process::Command::new("umount").arg(at).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_opaque_dirs_and_hardlinks_merge_like_docker() {
    let reg = Registry::start();
    let bottom = Layer::new()
        .dir("data", 0o755)
        .file("data/keep", "keep", 0o644)
        .file("data/gone", "gone", 0o644)
        .dir("opq", 0o755)
        .file("opq/old", "old", 0o644)
        .file_full("bin/tool", "#!tool", 0o4755, 0, 0, 1_600_000_000)
        .fifo("run/fifo", 0o600)
        .char_device("dev/null", 0o666, 1, 3)
        .symlink("etc/link", "/data/keep")
        .build(Compression::Gzip);
    let top = Layer::new()
        .whiteout("data/gone")
        .opaque("opq")
        .file("opq/new", "new", 0o644)
        .hardlink("bin/alias", "bin/tool")
        .build(Compression::Zstd);
    let image = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()),
    )
    .layer(bottom)
    .layer(top);
    fixtures::push_image(&reg, "test/layers", "1", &image).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let name = reg.image("test/layers:1");
    pull(&mut c, &name).await.expect("pull");
    let snaps = snapshots_of(&b, &mut c, &name).await;
    assert_eq!(snaps.len(), 2);

    // In the top snapshot, overlayfs's own format.
    let wh = std::fs::symlink_metadata(snaps[1].join("data/gone")).expect("whiteout");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0:0 char device"
    );
    assert!(!snaps[1].join("data/.wh.gone").exists());
    // The hard link's target was copied up from the layer below.
    let alias = std::fs::metadata(snaps[1].join("bin/alias")).expect("alias");
    let tool = std::fs::metadata(snaps[1].join("bin/tool")).expect("tool copy");
    assert_eq!(alias.ino(), tool.ino());
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid kept");
    let st = std::fs::symlink_metadata(snaps[0].join("run/fifo")).expect("fifo");
    assert!(st.file_type().is_fifo());
    let st = std::fs::symlink_metadata(snaps[0].join("dev/null")).expect("dev");
    assert!(st.file_type().is_char_device());
    assert_eq!(
        std::fs::read_link(snaps[0].join("etc/link")).expect("link"),
        Path::new("/data/keep")
    );

    // Merged by the kernel: what a container will see.
    let mnt = TempDir::new("merged");
    let lowers: Vec<PathBuf> = snaps.iter().rev().cloned().collect();
    mount_overlay(&lowers, mnt.path());
    let seen = |p: &str| mnt.path().join(p).exists();
    let (keep, gone, old, new) = (
        seen("data/keep"),
        seen("data/gone"),
        seen("opq/old"),
        seen("opq/new"),
    );
    umount(mnt.path());
    assert!(keep, "data/keep");
    assert!(!gone, "data/gone is whited out");
    assert!(!old, "opq is opaque: opq/old hidden");
    assert!(new, "opq/new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_are_refused_and_touch_nothing_outside() {
    use tar::EntryType;
    let reg = Registry::start();
    let outside = TempDir::new("outside");
    let target = outside.path().display().to_string();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "untouched").expect("victim");
    let cases: Vec<(&str, Layer)> = vec![
        (
            "absolute",
            Layer::new().raw(format!("{target}/abs"), EntryType::Regular, None, "x"),
        ),
        (
            "dotdot",
            Layer::new().raw(
                "../../../../../../../tmp/berth-escape",
                EntryType::Regular,
                None,
                "x",
            ),
        ),
        (
            "nested dotdot",
            Layer::new()
                .dir("a", 0o755)
                .raw("a/../../escape", EntryType::Regular, None, "x"),
        ),
        (
            "symlinked parent",
            Layer::new()
                .symlink("evil", &target)
                .raw("evil/pwned", EntryType::Regular, None, "x"),
        ),
        (
            "symlink chain",
            Layer::new().symlink("a", "b").symlink("b", &target).raw(
                "a/pwned",
                EntryType::Regular,
                None,
                "x",
            ),
        ),
        (
            "hardlink out",
            Layer::new().raw("h", EntryType::Link, Some(b"../../../../etc/passwd"), ""),
        ),
        (
            "hardlink to an outside path through a symlink",
            Layer::new()
                .symlink("s", &target)
                .raw("h", EntryType::Link, Some(b"s/victim"), ""),
        ),
    ];
    let b = Berthd::start().await;
    let mut c = b.image().await;
    for (i, (what, layer)) in cases.into_iter().enumerate() {
        let image = fixtures::Image::new(
            ManifestKind::Oci,
            ImageConfig::for_platform(&Platform::linux_amd64()),
        )
        .layer(fixtures::busybox_layer(Compression::Gzip))
        .layer(layer.build(Compression::Gzip));
        let tag = format!("{i}");
        fixtures::push_image(&reg, "test/hostile", &tag, &image).await;
        let e = pull(&mut c, &reg.image(&format!("test/hostile:{tag}")))
            .await
            .expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e}");
        assert!(e.message().contains("layer"), "{what}: {}", e.message());
        assert!(list(&mut c).await.is_empty(), "{what}: an image was listed");
        assert!(
            store_entries(&b).is_empty(),
            "{what}: left {:?}",
            store_entries(&b)
        );
    }
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched"
    );
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .expect("outside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["victim"], "something was written outside");
    assert!(!Path::new("/tmp/berth-escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_every_credential_form() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret");
    fixtures::push_busybox(&reg, "private/bb", "1", Compression::Gzip).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let name = reg.image("private/bb:1");

    let e = pull(&mut c, &name).await.expect_err("anonymous");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = pull_with(
        &mut c,
        &name,
        Some(AuthConfig {
            username: "alice".into(),
            password: "wrong".into(),
            ..Default::default()
        }),
    )
    .await
    .expect_err("wrong password");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(!e.message().contains("wrong"), "the password leaked: {e}");

    pull_with(
        &mut c,
        &name,
        Some(AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("username/password");
    remove(&mut c, &name).await.expect("remove");
    pull_with(
        &mut c,
        &name,
        Some(AuthConfig {
            auth: berth_tests::registry::base64_encode(b"alice:s3cret"),
            ..Default::default()
        }),
    )
    .await
    .expect("auth");
    assert_eq!(list(&mut c).await.len(), 1);
    assert!(!b.log().contains("s3cret"), "a credential reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_from_hosts_toml_and_fallback_to_upstream() {
    let mirror = Registry::start();
    let upstream = Registry::start();
    let on_mirror = fixtures::push_busybox(&mirror, "team/app", "1", Compression::Gzip).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;

    // A registry name that does not resolve: only the mirror can serve it.
    let dir = b.dir.path().join("certs.d/registry.invalid:5000");
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://registry.invalid:5000\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.url()
        ),
    )
    .expect("hosts.toml");
    let id = pull(&mut c, "registry.invalid:5000/team/app:1")
        .await
        .expect("pull through the mirror");
    assert_eq!(id, on_mirror.config_digest);
    let img = status(&mut c, "registry.invalid:5000/team/app:1")
        .await
        .expect("status");
    assert_eq!(img.repo_tags, ["registry.invalid:5000/team/app:1"]);
    assert!(
        mirror.request_count("ns=registry.invalid:5000") > 0,
        "the mirror is told the upstream namespace"
    );

    // The upstream has an image the mirror lacks: the mirror's 404 falls
    // through to the upstream.
    let on_upstream = fixtures::push_busybox(&upstream, "team/other", "2", Compression::Zstd).await;
    let dir = b.dir.path().join(format!("certs.d/{}", upstream.addr()));
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"{}\"\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.url(),
            mirror.url()
        ),
    )
    .expect("hosts.toml");
    let id = pull(&mut c, &upstream.image("team/other:2"))
        .await
        .expect("fallback to upstream");
    assert_eq!(id, on_upstream.config_digest);
    assert!(
        mirror.request_count("/v2/team/other/manifests/2") > 0,
        "mirror tried first"
    );

    // The mirror has the manifest but lost a layer: that blob comes from
    // the upstream.
    let image = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()),
    )
    .layer(
        Layer::new()
            .file("split", "only this image has this layer", 0o644)
            .build(Compression::Gzip),
    );
    let split = fixtures::push_image(&mirror, "team/split", "1", &image).await;
    fixtures::push_image(&upstream, "team/split", "1", &image).await;
    let layer = &split.layers[0].digest;
    std::fs::remove_file(mirror.blob_data_path(layer)).expect("drop the mirror's copy");
    let id = pull(&mut c, &upstream.image("team/split:1"))
        .await
        .expect("blob from the upstream");
    assert_eq!(id, split.config_digest);
    assert!(mirror.request_count("/v2/team/split/manifests/1") > 0);
    assert_eq!(
        upstream.request_count_method("GET", &format!("/v2/team/split/blobs/{layer}")),
        1
    );

    // A broken hosts.toml is a precise error, not a silent default.
    std::fs::write(dir.join("hosts.toml"), "server = [\n").expect("hosts.toml");
    let e = pull(&mut c, &upstream.image("team/other:2"))
        .await
        .expect_err("bad hosts.toml");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("hosts.toml"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_is_rejected_and_nothing_kept() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/corrupt", "1", Compression::Gzip).await;
    reg.corrupt_blob(&pushed.layers[0].digest);
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let e = pull(&mut c, &reg.image("test/corrupt:1"))
        .await
        .expect_err("corrupt");
    assert_eq!(e.code(), Code::DataLoss, "{e}");
    assert!(
        e.message().contains(&pushed.layers[0].digest),
        "{}",
        e.message()
    );
    assert!(list(&mut c).await.is_empty());
    assert!(store_entries(&b).is_empty(), "{:?}", store_entries(&b));
}

/// A layer is unpacked while it downloads; served under its digest but
/// compressed anew, its files and DiffID are right and only the blob's
/// digest is wrong, which is known once the last byte has arrived. What
/// was unpacked from it is thrown away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_unpacked_as_it_arrives_is_not_kept_when_its_blob_is_wrong() {
    use std::io::{Read, Write};
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/recompressed", "1", Compression::Gzip).await;
    let layer = &pushed.layers[0].digest;
    let path = reg.blob_data_path(layer);
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).expect("blob"))
        .read_to_end(&mut tar)
        .expect("the layer inflates");
    // Compressed anew, then brought to the manifest's size with empty gzip
    // members carrying comments (a layer's gzip stream may have several
    // members): a valid stream of the same tar that only the blob's digest
    // can tell apart.
    let want = std::fs::metadata(&path).expect("blob").len() as usize;
    let member = |data: &[u8], comment: Option<usize>| {
        let mut b = flate2::GzBuilder::new();
        if let Some(n) = comment {
            b = b.comment(vec![b'x'; n]);
        }
        let mut gz = b.write(Vec::new(), flate2::Compression::best());
        gz.write_all(data).expect("deflate");
        gz.finish().expect("deflate")
    };
    let mut served = member(&tar, None);
    // An empty member with an empty comment; a comment of n bytes adds n.
    let empty = member(&[], Some(0)).len();
    assert!(
        served.len() + 2 * empty <= want,
        "recompressed {} bytes, the blob {want}",
        served.len()
    );
    while served.len() < want {
        // Each comment within what a gzip reader takes (64 KiB), the last
        // member left room for at least its bare self.
        let left = want - served.len();
        let take = if left > 60_000 + 2 * empty {
            60_000
        } else {
            left
        };
        served.extend(member(&[], Some(take - empty)));
    }
    assert_eq!(served.len(), want);
    assert_ne!(
        served,
        std::fs::read(&path).expect("blob"),
        "the same bytes"
    );
    reg.replace_blob(layer, &served);

    let b = Berthd::start().await;
    let mut c = b.image().await;
    let e = pull(&mut c, &reg.image("test/recompressed:1"))
        .await
        .expect_err("a blob that is not its digest");
    assert_eq!(e.code(), Code::DataLoss, "{e}");
    assert!(e.message().contains(layer.as_str()), "{}", e.message());
    assert!(list(&mut c).await.is_empty());
    assert!(store_entries(&b).is_empty(), "{:?}", store_entries(&b));
    // Thrown away by the unpack itself, not left for the failed pull's
    // garbage collection.
    assert!(!b.log().contains("layer unpacked"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_each_blob_once() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/conc", "1", Compression::Gzip).await;
    let b = Berthd::start().await;
    let name = reg.image("test/conc:1");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = b.image().await;
        let name = name.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &name).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("pull"), pushed.config_digest);
    }
    let layer = &pushed.layers[0].digest;
    assert_eq!(
        reg.request_count_method("GET", &format!("/blobs/{layer}")),
        1,
        "the layer was downloaded more than once"
    );
    // And unpacked once: the pulls that find it downloaded wait for the
    // unpack that read the download, and find its snapshot.
    assert_eq!(
        b.log().matches("layer unpacked").count(),
        pushed.layers.len(),
        "{}",
        b.log()
    );
    assert_eq!(list(&mut b.image().await).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema1_and_bad_references_are_refused() {
    let reg = Registry::start_with(RegistryOptions {
        schema1: true,
        ..Default::default()
    });
    RegistryClient::new(&reg)
        .try_push_schema1("test/old", "1")
        .await
        .expect("push schema 1");
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let e = pull(&mut c, &reg.image("test/old:1"))
        .await
        .expect_err("schema 1");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("schema 1"), "{}", e.message());

    for bad in ["Busybox", "a b", "busybox:-x", "busybox@sha256:abc", ""] {
        let e = pull(&mut c, bad).await.expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
    }
    assert!(list(&mut c).await.is_empty());
    assert!(store_entries(&b).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_move_and_tag_only_removal_keeps_the_image() {
    let reg = Registry::start();
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let one = fixtures::push_busybox(&reg, "test/moving", "latest", Compression::Gzip).await;
    let name = reg.image("test/moving:latest");
    pull(&mut c, &name).await.expect("pull one");

    // The tag moves to a different image.
    let other = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()).cmd(["/bin/true"]),
    )
    .layer(fixtures::busybox_layer(Compression::Gzip));
    let two = fixtures::push_image(&reg, "test/moving", "latest", &other).await;
    assert_ne!(one.config_digest, two.config_digest);
    pull(&mut c, &name).await.expect("pull two");
    let new = status(&mut c, &name).await.expect("tag");
    assert_eq!(new.id, two.config_digest);
    let old = status(&mut c, &one.config_digest)
        .await
        .expect("old image kept");
    assert!(old.repo_tags.is_empty());
    assert_eq!(old.repo_digests, [one.digest_ref.as_str()]);

    // A second tag on the new image; removing one tag keeps the image.
    fixtures::push_image(&reg, "test/moving", "v2", &other).await;
    let v2 = reg.image("test/moving:v2");
    pull(&mut c, &v2).await.expect("pull v2");
    let img = status(&mut c, &v2).await.expect("v2");
    assert_eq!(img.repo_tags, [name.clone(), v2.clone()]);
    remove(&mut c, &name).await.expect("untag");
    let img = status(&mut c, &v2).await.expect("still there");
    assert_eq!(img.repo_tags, [v2.as_str()]);
    assert!(status(&mut c, &name).await.is_none());

    // The shared layer stays while the other image uses it.
    remove(&mut c, &one.config_digest)
        .await
        .expect("remove old");
    let snaps = snapshots_of(&b, &mut c, &v2).await;
    assert!(snaps[0].join("bin/busybox").exists());
    remove(&mut c, &v2).await.expect("remove last tag");
    assert!(list(&mut c).await.is_empty());
    assert!(store_entries(&b).is_empty(), "{:?}", store_entries(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_images_are_reported_and_never_removed() {
    let reg = Registry::start();
    // Three different images (same layer, different configs).
    for (repo, tag) in [("pin/exact", "1"), ("pin/glob", "3.9"), ("free/bb", "1")] {
        let image = fixtures::Image::new(
            ManifestKind::Oci,
            ImageConfig::for_platform(&Platform::linux_amd64()).label("repo", repo),
        )
        .layer(fixtures::busybox_layer(Compression::Gzip));
        fixtures::push_image(&reg, repo, tag, &image).await;
    }
    let b = Berthd::start_with(Options {
        config: format!(
            "pinned_images = [\"{}\", \"*/pin/glob:3.*\"]",
            reg.image("pin/exact:1")
        ),
        ..Default::default()
    })
    .await;
    let mut c = b.image().await;
    for (image, pinned) in [
        (reg.image("pin/exact:1"), true),
        (reg.image("pin/glob:3.9"), true),
        (reg.image("free/bb:1"), false),
    ] {
        pull(&mut c, &image).await.expect("pull");
        let img = status(&mut c, &image).await.expect("status");
        assert_eq!(img.pinned, pinned, "{image}");
        let r = remove(&mut c, &image).await;
        if pinned {
            let e = r.expect_err("pinned");
            assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
            assert!(status(&mut c, &image).await.is_some());
        } else {
            r.expect("unpinned removes");
        }
    }
    assert_eq!(list(&mut c).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_survive_a_crash_and_leftovers_are_cleaned_at_start() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/persist", "1", Compression::Gzip).await;
    let mut b = Berthd::start().await;
    let name = reg.image("test/persist:1");
    pull(&mut b.image().await, &name).await.expect("pull");
    let kept = store_entries(&b);
    b.stop_with(nix::sys::signal::Signal::SIGKILL);

    // What a berthd killed mid-pull leaves behind.
    let images = b.root.join("images");
    std::fs::write(images.join("ingest/partial-download"), "half").expect("ingest");
    std::fs::create_dir_all(images.join("snapshots/.tmp-123-0/bin")).expect("tmp snapshot");
    std::fs::write(
        images.join(format!("blobs/sha256/{}", "ab".repeat(32))),
        "orphan",
    )
    .expect("blob");
    std::fs::create_dir_all(images.join(format!("snapshots/{}", "cd".repeat(32)))).expect("snap");

    b.restart().await;
    let mut c = b.image().await;
    let img = status(&mut c, &name).await.expect("image survived");
    assert_eq!(img.id, pushed.config_digest);
    assert_eq!(store_entries(&b), kept, "leftovers were not cleaned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_fs_info_counts_the_store() {
    let reg = Registry::start();
    fixtures::push_busybox(&reg, "test/fs", "1", Compression::Gzip).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let usage = |r: ImageFsInfoResponse| {
        let fs = &r.image_filesystems[0];
        (
            fs.used_bytes.as_ref().expect("bytes").value,
            fs.inodes_used.as_ref().expect("inodes").value,
            fs.fs_id.as_ref().expect("fs id").mountpoint.clone(),
        )
    };
    let (b0, i0, mnt) = usage(
        c.image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("fsinfo")
            .into_inner(),
    );
    assert!(
        Path::new(&mnt).is_absolute() && b.root.starts_with(&mnt),
        "{mnt}"
    );
    let id = pull(&mut c, &reg.image("test/fs:1")).await.expect("pull");
    let (b1, i1, _) = usage(
        c.image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("fsinfo")
            .into_inner(),
    );
    let busybox = std::fs::metadata("/bin/busybox").expect("busybox").len();
    // The unpacked busybox and its compressed blob, at least.
    assert!(b1 >= b0 + busybox, "{b0} -> {b1}");
    assert!(i1 > i0 + 10, "{i0} -> {i1}");
    // Asked again, nothing changed: the same figures (the snapshot,
    // measured once, is remembered).
    let again = usage(
        c.image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("fsinfo")
            .into_inner(),
    );
    assert_eq!((again.0, again.1), (b1, i1));
    // Removed and collected: back to what the empty store used.
    remove(&mut c, &id).await.expect("remove");
    let (b2, i2, _) = usage(
        c.image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("fsinfo")
            .into_inner(),
    );
    assert_eq!((b2, i2), (b0, i0), "after the removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_makes_no_progress_is_cancelled() {
    // A "registry" that accepts connections and never answers; it says
    // when the first connection arrived.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(4) {
            conns.push(c);
            let _ = accepted_tx.send(());
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/other", "1", Compression::Gzip).await;
    let b = Berthd::start_with(Options {
        registry: "request_timeout = \"5s\"".into(),
        ..Default::default()
    })
    .await;
    let dir = b.dir.path().join("certs.d/stalled.invalid");
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"http://127.0.0.1:{port}\"\n"),
    )
    .expect("hosts.toml");
    let mut c = b.image().await;
    pull(&mut c, &reg.image("test/other:1"))
        .await
        .expect("pull");

    let mut c2 = b.image().await;
    let stalled = tokio::spawn(async move { pull(&mut c2, "stalled.invalid/test/app:1").await });
    tokio::task::spawn_blocking(move || accepted_rx.recv())
        .await
        .expect("join")
        .expect("the stalled pull connected");

    // RemoveImage does not wait for the stalled pull...
    remove(&mut c, &pushed.config_digest).await.expect("remove");
    assert!(!stalled.is_finished(), "remove waited for the pull");
    assert!(list(&mut c).await.is_empty());
    assert!(
        !store_entries(&b).is_empty(),
        "collected under a running pull"
    );

    let e = stalled.await.expect("task").expect_err("stalled");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.message().contains("request_timeout"), "{}", e.message());
    // ...and the last pull to finish collected what the removal freed.
    assert!(list(&mut c).await.is_empty());
    assert!(store_entries(&b).is_empty(), "{:?}", store_entries(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registries_with_a_custom_ca_or_skip_verify() {
    let certs = TempDir::new("certs");
    let (ca, cert, key) = berth_tests::make_certs(certs.path());
    let plain = Registry::start();
    let pushed = fixtures::push_busybox(&plain, "test/tls", "1", Compression::Gzip).await;
    // The same storage, served over HTTPS.
    let secure = Registry::start_with(RegistryOptions {
        tls: Some((cert, key)),
        storage: Some(plain.storage_root()),
        ..Default::default()
    });
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let name = secure.image("test/tls:1");
    let hosts_dir = b.dir.path().join(format!("certs.d/{}", secure.addr()));
    std::fs::create_dir_all(&hosts_dir).expect("hosts dir");
    let hosts = |extra: &str| {
        std::fs::write(
            hosts_dir.join("hosts.toml"),
            format!("server = \"https://{}\"\n{extra}", secure.addr()),
        )
        .expect("hosts.toml")
    };

    // A certificate from an unknown CA is refused.
    hosts("");
    let e = pull(&mut c, &name).await.expect_err("unknown CA");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.message().to_lowercase().contains("certificate"),
        "{}",
        e.message()
    );

    // Trusted through hosts.toml's `ca`.
    hosts(&format!("ca = \"{}\"\n", ca.display()));
    assert_eq!(
        pull(&mut c, &name).await.expect("custom CA"),
        pushed.config_digest
    );
    remove(&mut c, &name).await.expect("remove");

    // Or not verified at all.
    hosts("skip_verify = true\n");
    assert_eq!(
        pull(&mut c, &name).await.expect("skip_verify"),
        pushed.config_digest
    );
}

// ------------------------------------------------- size limits ([images])

/// Bytes allocated under `dir` (files and directories), as `du` counts.
/// Measure it after a first CRI call: berthd answers once its store is open.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        total += m.blocks() * 512;
        if m.is_dir() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Nothing of a refused pull is left: no image, no blob, no snapshot, no
/// `.tmp-*` unpack dir, no download, and the store takes no more space.
async fn assert_nothing_left(b: &Berthd, c: &mut Client, usage_before: u64, what: &str) {
    assert!(list(c).await.is_empty(), "{what}: an image was listed");
    assert!(
        store_entries(b).is_empty(),
        "{what}: left {:?}",
        store_entries(b)
    );
    let tmp: Vec<_> = std::fs::read_dir(b.root.join("images/snapshots"))
        .expect("snapshots dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "{what}: left {tmp:?}");
    assert_eq!(
        disk_usage(&b.root.join("images")),
        usage_before,
        "{what}: the image store grew"
    );
}

fn with_images_config(toml: &str) -> Options {
    Options {
        config: format!("[images]\n{toml}\n"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_layer_fails_fast_and_leaves_nothing() {
    let reg = Registry::start();
    // 4 GiB of zeros in a file, a few MiB compressed.
    let bomb = fixtures::gzip_bomb_layer(4 << 30);
    assert!(bomb.size < 8 << 20, "{}", bomb.size);
    let image = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()),
    )
    .layer(fixtures::busybox_layer(Compression::Gzip))
    .layer(bomb.clone());
    fixtures::push_image(&reg, "test/bomb", "1", &image).await;
    let b = Berthd::start_with(with_images_config("max_layer_unpacked_size = \"64MiB\"")).await;
    let mut c = b.image().await;
    assert!(list(&mut c).await.is_empty());
    let before = disk_usage(&b.root.join("images"));
    assert!(before > 0, "no image store at {}", b.root.display());
    let e = pull(&mut c, &reg.image("test/bomb:1"))
        .await
        .expect_err("the bomb was pulled");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    for want in [
        format!("layer {}", bomb.digest),
        "[images] max_layer_unpacked_size = \"64MiB\"".to_string(),
    ] {
        assert!(
            e.message().contains(&want),
            "{want:?} not in {}",
            e.message()
        );
    }
    assert_nothing_left(&b, &mut c, before, "bomb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_manifest_or_layer_over_its_limit_is_refused_and_nothing_kept() {
    let reg = Registry::start();
    // A config of 2 MiB (a huge label), a manifest of 128 KiB (a huge
    // annotation), and a layer of more entries than allowed.
    let big_config = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()).label("pad", &"x".repeat(2 << 20)),
    )
    .layer(fixtures::busybox_layer(Compression::Gzip));
    let config_digest = fixtures::push_image(&reg, "test/limits", "config", &big_config)
        .await
        .config_digest;
    let mut big_manifest = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()).label("m", "1"),
    )
    .layer(fixtures::busybox_layer(Compression::Gzip));
    big_manifest
        .annotations
        .insert("pad".into(), "y".repeat(128 << 10));
    let manifest_digest = fixtures::push_image(&reg, "test/limits", "manifest", &big_manifest)
        .await
        .manifest_digest;
    let many = (0..20).fold(Layer::new(), |l, i| l.file(&format!("f{i}"), "x", 0o644));
    let many_entries = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()).label("e", "1"),
    )
    .layer(many.build(Compression::Gzip));
    let layer_digest = fixtures::push_image(&reg, "test/limits", "entries", &many_entries)
        .await
        .layers[0]
        .digest
        .clone();

    let b = Berthd::start_with(with_images_config(
        "max_config_size = \"1MiB\"\nmax_manifest_size = \"64KiB\"\nmax_layer_entries = 10",
    ))
    .await;
    let mut c = b.image().await;
    assert!(list(&mut c).await.is_empty());
    let before = disk_usage(&b.root.join("images"));
    assert!(before > 0, "no image store at {}", b.root.display());
    for (tag, object, limit) in [
        (
            "config",
            format!("config blob {config_digest}"),
            "[images] max_config_size = \"1MiB\"",
        ),
        (
            "manifest",
            format!("manifest {manifest_digest}"),
            "[images] max_manifest_size = \"64KiB\"",
        ),
        (
            "entries",
            format!("layer {layer_digest}"),
            "[images] max_layer_entries = 10",
        ),
    ] {
        let e = pull(&mut c, &reg.image(&format!("test/limits:{tag}")))
            .await
            .expect_err(tag);
        assert_eq!(e.code(), Code::ResourceExhausted, "{tag}: {e}");
        assert!(
            e.message().contains(&object) && e.message().contains(limit),
            "{tag}: {}",
            e.message()
        );
        assert_nothing_left(&b, &mut c, before, tag).await;
    }
    // The config was refused from the manifest's claim, never downloaded.
    assert_eq!(
        reg.request_count_method("GET", &format!("/blobs/{config_digest}")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_ten_thousand_layers_is_refused_before_any_is_fetched() {
    let reg = Registry::start();
    let layer = Layer::new().file("f", "x", 0o644).build(Compression::Gzip);
    let mut image = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()),
    );
    image.layers = vec![layer.clone(); 10_000];
    let pushed = fixtures::push_image(&reg, "test/layers", "many", &image).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;
    assert!(list(&mut c).await.is_empty());
    let before = disk_usage(&b.root.join("images"));
    let e = pull(&mut c, &reg.image("test/layers:many"))
        .await
        .expect_err("10,000 layers");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(
        e.message().contains(&pushed.manifest_digest)
            && e.message().contains("10000 layers")
            && e.message().contains("[images] max_layers = 128"),
        "{}",
        e.message()
    );
    assert_nothing_left(&b, &mut c, before, "layers").await;
    assert_eq!(
        reg.request_count_method("GET", &format!("/blobs/{}", layer.digest)),
        0
    );
    assert_eq!(
        reg.request_count_method("GET", &format!("/blobs/{}", pushed.config_digest)),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_layer_stays_sparse_on_disk() {
    use std::io::{Read, Seek, SeekFrom};
    let reg = Registry::start();
    let size: u64 = 2 << 30;
    let head = [b"head".as_slice(), &[1u8; 508]].concat();
    let image = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()),
    )
    .layer(fixtures::busybox_layer(Compression::Gzip))
    .layer(fixtures::sparse_layer(
        "disk.img",
        size,
        &[(0, &head), (size - 4, b"tail")],
        Compression::Gzip,
    ));
    fixtures::push_image(&reg, "test/sparse", "1", &image).await;
    let b = Berthd::start().await;
    let mut c = b.image().await;
    let name = reg.image("test/sparse:1");
    pull(&mut c, &name).await.expect("pull");
    let snaps = snapshots_of(&b, &mut c, &name).await;
    let file = snaps.last().expect("top snapshot").join("disk.img");
    let m = std::fs::metadata(&file).expect("disk.img");
    assert_eq!(m.len(), size);
    assert!(
        m.blocks() * 512 <= 1 << 20,
        "{} bytes allocated for a 2 GiB file with 516 bytes of data",
        m.blocks() * 512
    );
    let mut f = std::fs::File::open(&file).expect("open");
    let mut buf = [0u8; 4];
    for (at, want) in [(0, b"head"), (size / 2, &[0u8; 4]), (size - 4, b"tail")] {
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, want, "at {at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_layer_blob_is_not_downloaded_and_the_free_space_reserve_holds() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/reserve", "1", Compression::Gzip).await;
    let layer = &pushed.layers[0];
    assert!(layer.size > 64 << 10, "{}", layer.size);
    let name = reg.image("test/reserve:1");

    // The manifest says the compressed layer is larger than any layer may
    // unpack to: refused before its download starts.
    let b = Berthd::start_with(with_images_config("max_layer_unpacked_size = \"64KiB\"")).await;
    let mut c = b.image().await;
    assert!(list(&mut c).await.is_empty());
    let before = disk_usage(&b.root.join("images"));
    let e = pull(&mut c, &name).await.expect_err("oversized layer");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    for want in [
        format!("layer {}", layer.digest),
        format!("the manifest says {} bytes compressed", layer.size),
        "[images] max_layer_unpacked_size = \"64KiB\"".into(),
    ] {
        assert!(
            e.message().contains(&want),
            "{want:?} not in {}",
            e.message()
        );
    }
    assert_eq!(
        reg.request_count_method("GET", &format!("/blobs/{}", layer.digest)),
        0,
        "the layer was downloaded"
    );
    assert_nothing_left(&b, &mut c, before, "oversized layer").await;
    drop(c);
    drop(b);

    // A reserve of the whole filesystem: nothing may be written at all.
    let b = Berthd::start_with(with_images_config("min_free_space = \"100%\"")).await;
    let mut c = b.image().await;
    assert!(list(&mut c).await.is_empty());
    let before = disk_usage(&b.root.join("images"));
    let e = pull(&mut c, &name).await.expect_err("no free space");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(
        e.message().contains("[images] min_free_space = \"100%\""),
        "{}",
        e.message()
    );
    assert_nothing_left(&b, &mut c, before, "reserve").await;
}
