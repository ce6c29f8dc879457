//! Test images built in memory and pushed to a [`Registry`] over the
//! distribution HTTP API.
//!
//! - [`Layer`]: a tar layer, entry by entry, including hostile entries with
//!   raw name bytes ([`Layer::raw`]); [`Layer::build`] compresses it into a
//!   [`Blob`] (digest, size, DiffID).
//! - [`busybox_rootfs`] / [`busybox_layer`]: a small rootfs around Debian's
//!   static busybox.
//! - [`ImageConfig`], [`Image`] (OCI or Docker schema 2 manifest) and
//!   [`Index`] (OCI index or Docker manifest list).
//! - [`RegistryClient`]: pushes them ([`RegistryClient::push_image`],
//!   [`RegistryClient::push_index`]), pushes raw manifests, and fetches
//!   manifests and blobs back.
//!
//! Everything is deterministic: the same fixture has the same digests in
//! every run.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use hyper::{HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};
use url::Url;

use crate::registry::{Registry, base64_encode};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Not in Docker's spec; containerd's name for it.
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// mtime of every entry unless set otherwise: 2024-01-01T00:00:00Z.
pub const DEFAULT_MTIME: u64 = 1_704_067_200;
/// `created` of every image config: the same instant.
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

// ---------------------------------------------------------------- layers

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                use std::io::Write as _;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(tar).expect("gzip");
                encoder.finish().expect("gzip")
            }
            Compression::Zstd => zstd::stream::encode_all(tar, 3).expect("zstd"),
        }
    }
}

/// Which family of media types a manifest uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    /// OCI image manifest / OCI image index.
    Oci,
    /// Docker image manifest v2 schema 2 / Docker manifest list.
    Docker,
}

impl ManifestKind {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestKind::Oci => OCI_MANIFEST,
            ManifestKind::Docker => DOCKER_MANIFEST,
        }
    }
    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestKind::Oci => OCI_INDEX,
            ManifestKind::Docker => DOCKER_MANIFEST_LIST,
        }
    }
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestKind::Oci => OCI_CONFIG,
            ManifestKind::Docker => DOCKER_CONFIG,
        }
    }
    pub fn layer_media_type(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (ManifestKind::Oci, Compression::None) => OCI_LAYER_TAR,
            (ManifestKind::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
            (ManifestKind::Oci, Compression::Zstd) => OCI_LAYER_ZSTD,
            (ManifestKind::Docker, Compression::None) => DOCKER_LAYER_TAR,
            (ManifestKind::Docker, Compression::Gzip) => DOCKER_LAYER_GZIP,
            (ManifestKind::Docker, Compression::Zstd) => DOCKER_LAYER_ZSTD,
        }
    }
}

/// One tar entry, exactly as it will be written.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Raw name bytes (no normalisation, no checks). Names over 100 bytes
    /// are written with a GNU long-name entry before the header.
    pub name: Vec<u8>,
    pub entry_type: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Link target of hard and symbolic links (raw bytes; GNU long-link
    /// entry when over 100 bytes).
    pub link: Option<Vec<u8>>,
    /// (major, minor) of a device node.
    pub device: Option<(u32, u32)>,
    pub data: Vec<u8>,
}

impl Entry {
    fn new(name: Vec<u8>, entry_type: EntryType, mode: u32) -> Entry {
        Entry {
            name,
            entry_type,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            link: None,
            device: None,
            data: Vec::new(),
        }
    }
}

/// A layer: an ordered list of tar entries.
///
/// The named helpers take archive paths: a leading `/` or `./` is dropped
/// and directories get a trailing `/`, as Docker writes them. Use
/// [`Layer::raw`] / [`Layer::entry`] to write any bytes as the name.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub entries: Vec<Entry>,
}

fn archive_path(path: &str) -> Vec<u8> {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else {
            break;
        }
    }
    p.as_bytes().to_vec()
}

fn dir_path(path: &str) -> Vec<u8> {
    let mut p = archive_path(path);
    if !p.is_empty() && !p.ends_with(b"/") {
        p.push(b'/');
    }
    p
}

/// `a/b/c` -> (`a/b/`, `c`); `c` -> (``, `c`).
fn split_parent(path: &str) -> (String, String) {
    let p = String::from_utf8(archive_path(path)).expect("utf-8 path");
    let p = p.trim_end_matches('/');
    match p.rsplit_once('/') {
        Some((parent, name)) => (format!("{parent}/"), name.to_string()),
        None => (String::new(), p.to_string()),
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    /// Append any entry as is.
    pub fn entry(mut self, entry: Entry) -> Layer {
        self.entries.push(entry);
        self
    }

    /// A directory owned by root.
    pub fn dir(self, path: &str, mode: u32) -> Layer {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> Layer {
        let mut e = Entry::new(dir_path(path), EntryType::Directory, mode);
        e.uid = uid;
        e.gid = gid;
        self.entry(e)
    }

    /// A regular file owned by root, mtime [`DEFAULT_MTIME`].
    pub fn file(self, path: &str, content: impl AsRef<[u8]>, mode: u32) -> Layer {
        self.file_full(path, content, mode, 0, 0, DEFAULT_MTIME)
    }

    pub fn file_full(
        self,
        path: &str,
        content: impl AsRef<[u8]>,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> Layer {
        let mut e = Entry::new(archive_path(path), EntryType::Regular, mode);
        e.uid = uid;
        e.gid = gid;
        e.mtime = mtime;
        e.data = content.as_ref().to_vec();
        self.entry(e)
    }

    /// A symlink `path -> target` (the target is written verbatim).
    pub fn symlink(self, path: &str, target: &str) -> Layer {
        let mut e = Entry::new(archive_path(path), EntryType::Symlink, 0o777);
        e.link = Some(target.as_bytes().to_vec());
        self.entry(e)
    }

    /// A hard link `path` to the earlier entry `target` (an archive path: a
    /// leading `/` is dropped).
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        let mut e = Entry::new(archive_path(path), EntryType::Link, 0o644);
        e.link = Some(archive_path(target));
        self.entry(e)
    }

    pub fn fifo(self, path: &str, mode: u32) -> Layer {
        self.entry(Entry::new(archive_path(path), EntryType::Fifo, mode))
    }

    pub fn char_device(self, path: &str, mode: u32, major: u32, minor: u32) -> Layer {
        let mut e = Entry::new(archive_path(path), EntryType::Char, mode);
        e.device = Some((major, minor));
        self.entry(e)
    }

    pub fn block_device(self, path: &str, mode: u32, major: u32, minor: u32) -> Layer {
        let mut e = Entry::new(archive_path(path), EntryType::Block, mode);
        e.device = Some((major, minor));
        self.entry(e)
    }

    /// Whiteout of `path` (deletes it from lower layers): `dir/.wh.name`.
    pub fn whiteout(self, path: &str) -> Layer {
        let (parent, name) = split_parent(path);
        assert!(!name.is_empty(), "whiteout of the root");
        let e = Entry::new(
            format!("{parent}.wh.{name}").into_bytes(),
            EntryType::Regular,
            0o644,
        );
        self.entry(e)
    }

    /// Opaque marker for directory `dir` (hides everything lower layers had
    /// in it): `dir/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Layer {
        let name = [dir_path(dir), b".wh..wh..opq".to_vec()].concat();
        self.entry(Entry::new(name, EntryType::Regular, 0o644))
    }

    /// An entry with these exact name bytes (`../evil`, `/abs`,
    /// `a/../../x`…), type and link target, mode 0644 for regular files
    /// and 0755 otherwise, owned by root.
    pub fn raw(
        self,
        name: impl AsRef<[u8]>,
        entry_type: EntryType,
        link: Option<&[u8]>,
        content: impl AsRef<[u8]>,
    ) -> Layer {
        let mode = if entry_type == EntryType::Regular {
            0o644
        } else {
            0o755
        };
        let mut e = Entry::new(name.as_ref().to_vec(), entry_type, mode);
        e.link = link.map(<[u8]>::to_vec);
        e.data = content.as_ref().to_vec();
        self.entry(e)
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append_entry(&mut builder, entry);
        }
        builder.into_inner().expect("finish tar")
    }

    /// The layer blob: the tar compressed with `compression`.
    pub fn build(&self, compression: Compression) -> Blob {
        Blob::layer_from_tar(&self.tar(), compression)
    }
}

fn append_gnu_long(builder: &mut tar::Builder<Vec<u8>>, entry_type: EntryType, value: &[u8]) {
    let mut data = value.to_vec();
    data.push(0);
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(entry_type);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    builder.append(&h, &data[..]).expect("append GNU long name");
}

fn append_entry(builder: &mut tar::Builder<Vec<u8>>, e: &Entry) {
    if e.name.len() > 100 {
        append_gnu_long(builder, EntryType::GNULongName, &e.name);
    }
    if let Some(link) = &e.link
        && link.len() > 100
    {
        append_gnu_long(builder, EntryType::GNULongLink, link);
    }
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = e.name.len().min(100);
        old.name[..n].copy_from_slice(&e.name[..n]);
        if let Some(link) = &e.link {
            let n = link.len().min(100);
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
    }
    h.set_entry_type(e.entry_type);
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mtime(e.mtime);
    h.set_size(e.data.len() as u64);
    if let Some((major, minor)) = e.device {
        h.set_device_major(major).expect("device major");
        h.set_device_minor(minor).expect("device minor");
    }
    h.set_cksum();
    builder.append(&h, &e.data[..]).expect("append tar entry");
}

/// Bytes stored in a registry under their digest: a layer, a config.
#[derive(Clone, Debug)]
pub struct Blob {
    pub data: Vec<u8>,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
    /// `data.len()`.
    pub size: u64,
    pub compression: Compression,
    /// For layers: `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    pub uncompressed_size: u64,
    /// Media type to put in manifests; `None`: the one of `compression` in
    /// the manifest's family ([`ManifestKind::layer_media_type`]).
    pub media_type: Option<String>,
}

impl Blob {
    /// A layer blob from an uncompressed tar.
    pub fn layer_from_tar(tar: &[u8], compression: Compression) -> Blob {
        let data = compression.compress(tar);
        Blob {
            digest: sha256_digest(&data),
            size: data.len() as u64,
            diff_id: sha256_digest(tar),
            uncompressed_size: tar.len() as u64,
            compression,
            media_type: None,
            data,
        }
    }

    /// Any bytes, said to be uncompressed.
    pub fn from_bytes(data: impl Into<Vec<u8>>) -> Blob {
        let data = data.into();
        let digest = sha256_digest(&data);
        Blob {
            size: data.len() as u64,
            diff_id: digest.clone(),
            uncompressed_size: data.len() as u64,
            digest,
            compression: Compression::None,
            media_type: None,
            data,
        }
    }

    /// Use this media type in manifests whatever the compression.
    pub fn with_media_type(mut self, media_type: &str) -> Blob {
        self.media_type = Some(media_type.to_string());
        self
    }

    pub fn media_type_in(&self, kind: ManifestKind) -> String {
        self.media_type
            .clone()
            .unwrap_or_else(|| kind.layer_media_type(self.compression).to_string())
    }
}

// --------------------------------------------------------------- busybox

/// The applets linked to /bin/busybox in [`busybox_rootfs`].
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "env", "pwd", "touch", "mkdir",
    "rm", "wc", "grep", "head", "hostname", "ps", "top", "kill", "nc", "wget", "ip", "mount",
    "stat", "test", "printf", "tr", "seq", "yes", "dd", "du", "df",
];

/// The static busybox binary of Debian's busybox-static.
pub fn busybox_binary() -> &'static [u8] {
    static BINARY: OnceLock<Vec<u8>> = OnceLock::new();
    BINARY.get_or_init(|| {
        ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("read /bin/busybox: apt-get install busybox-static")
    })
}

/// A minimal rootfs: /bin/busybox with hard links for
/// [`BUSYBOX_APPLETS`], /etc/passwd (root, app 1000, nobody 65534),
/// /etc/group, /tmp (1777), /root (0700), /home/app (owned by 1000) and
/// empty /proc, /sys, /dev, /etc, /var.
pub fn busybox_rootfs() -> Layer {
    let mut layer = Layer::new()
        .dir("bin", 0o755)
        .dir("dev", 0o755)
        .dir("etc", 0o755)
        .dir("home", 0o755)
        .dir_owned("home/app", 0o755, 1000, 1000)
        .dir("proc", 0o555)
        .dir("root", 0o700)
        .dir("sys", 0o555)
        .dir("tmp", 0o1777)
        .dir("var", 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\n\
             app:x:1000:1000:app:/home/app:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        )
        .file(
            "etc/group",
            "root:x:0:\napp:x:1000:\nnobody:x:65534:\n",
            0o644,
        )
        .file("bin/busybox", busybox_binary(), 0o755);
    for applet in BUSYBOX_APPLETS {
        layer = layer.hardlink(&format!("bin/{applet}"), "bin/busybox");
    }
    layer
}

/// [`busybox_rootfs`] built with `compression`, computed once per process.
pub fn busybox_layer(compression: Compression) -> Blob {
    static CACHE: [OnceLock<Blob>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Zstd => 2,
    };
    CACHE[slot]
        .get_or_init(|| busybox_rootfs().build(compression))
        .clone()
}

/// A single-layer busybox image for `platform` with Cmd `["/bin/sh"]`.
pub fn busybox_image(kind: ManifestKind, compression: Compression, platform: &Platform) -> Image {
    Image::new(kind, ImageConfig::for_platform(platform).cmd(["/bin/sh"]))
        .layer(busybox_layer(compression))
}

// ---------------------------------------------------------------- config

/// os/architecture/variant, as in an index entry and an image config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
    pub fn with_variant(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            variant: Some(variant.into()),
            ..Platform::new(os, architecture)
        }
    }
    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64")
    }
    pub fn linux_arm64() -> Platform {
        Platform::with_variant("linux", "arm64", "v8")
    }
    /// `linux/arm64/v8`.
    pub fn to_path(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
    fn to_json(&self) -> Value {
        let mut p = json!({"architecture": self.architecture, "os": self.os});
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// The image config (OCI image config / Docker image JSON). `rootfs` and
/// `history` are filled in from the image's layers.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub platform: Platform,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `"80/tcp"`, `"53/udp"`…
    pub exposed_ports: Vec<String>,
    /// More keys of `config` (e.g. `Healthcheck`, `Volumes`), or overrides.
    pub extra: Map<String, Value>,
}

fn strings<S: Into<String>>(v: impl IntoIterator<Item = S>) -> Vec<String> {
    v.into_iter().map(Into::into).collect()
}

impl ImageConfig {
    /// Env is `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;
    /// nothing else is set.
    pub fn new(os: &str, architecture: &str) -> ImageConfig {
        ImageConfig::for_platform(&Platform::new(os, architecture))
    }

    pub fn for_platform(platform: &Platform) -> ImageConfig {
        ImageConfig {
            platform: platform.clone(),
            entrypoint: None,
            cmd: None,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            user: None,
            working_dir: None,
            stop_signal: None,
            labels: BTreeMap::new(),
            exposed_ports: Vec::new(),
            extra: Map::new(),
        }
    }

    pub fn entrypoint<S: Into<String>>(mut self, v: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = Some(strings(v));
        self
    }
    pub fn cmd<S: Into<String>>(mut self, v: impl IntoIterator<Item = S>) -> Self {
        self.cmd = Some(strings(v));
        self
    }
    /// Append `KEY=value` to Env.
    pub fn env(mut self, var: &str) -> Self {
        self.env.push(var.into());
        self
    }
    /// Replace Env.
    pub fn set_env<S: Into<String>>(mut self, v: impl IntoIterator<Item = S>) -> Self {
        self.env = strings(v);
        self
    }
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
    pub fn stop_signal(mut self, signal: &str) -> Self {
        self.stop_signal = Some(signal.into());
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.into());
        self
    }
    pub fn extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }

    /// The config JSON for these layers' DiffIDs.
    pub fn to_json(&self, diff_ids: &[String]) -> Value {
        let mut config = Map::new();
        if let Some(v) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(v));
        }
        if let Some(v) = &self.cmd {
            config.insert("Cmd".into(), json!(v));
        }
        if !self.env.is_empty() {
            config.insert("Env".into(), json!(self.env));
        }
        if let Some(v) = &self.user {
            config.insert("User".into(), json!(v));
        }
        if let Some(v) = &self.working_dir {
            config.insert("WorkingDir".into(), json!(v));
        }
        if let Some(v) = &self.stop_signal {
            config.insert("StopSignal".into(), json!(v));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        if !self.exposed_ports.is_empty() {
            let ports: Map<String, Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            config.insert("ExposedPorts".into(), Value::Object(ports));
        }
        for (k, v) in &self.extra {
            config.insert(k.clone(), v.clone());
        }
        let history: Vec<Value> = (0..diff_ids.len())
            .map(|i| json!({"created": CREATED, "created_by": format!("berth test fixture layer {i}")}))
            .collect();
        let mut doc = json!({
            "created": CREATED,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": Value::Object(config),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        if let Some(v) = &self.platform.variant {
            doc["variant"] = json!(v);
        }
        doc
    }
}

// ------------------------------------------------ size-hostile layers

/// A GNU sparse file layer (type 'S', what `tar --sparse` writes by
/// default): `path` is `size` bytes long, with `chunks` of (offset, data)
/// and holes elsewhere. Every chunk but the last must be a whole number of
/// 512-byte records (GNU tar's own rule, checked by the tar crate).
pub fn sparse_layer(
    path: &str,
    size: u64,
    chunks: &[(u64, &[u8])],
    compression: Compression,
) -> Blob {
    let data: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    assert!(
        chunks.len() <= 4,
        "only the header's four sparse slots are written"
    );
    let mut h = Header::new_gnu();
    h.set_path(path).expect("sparse path");
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(DEFAULT_MTIME);
    h.set_size(data.len() as u64);
    let g = h.as_gnu_mut().expect("GNU header");
    g.set_real_size(size);
    for (slot, (offset, d)) in g.sparse.iter_mut().zip(chunks) {
        slot.set_offset(*offset);
        slot.set_length(d.len() as u64);
    }
    h.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&h, &data[..]).expect("append sparse entry");
    Blob::layer_from_tar(&builder.into_inner().expect("finish tar"), compression)
}

/// A gzip "bomb" layer: one regular file `zeros` of `size` bytes (a
/// multiple of 4 MiB), all zeros, in a few KiB per GiB. The gzip stream is
/// built by flate2 as concatenated members (the tar header, then the same
/// 4 MiB of compressed zeros repeated, then the end of the archive), which
/// every gzip reader must accept: compressing gigabytes in a debug build
/// would take minutes. Its `diff_id` is NOT that of the content (hashing
/// gigabytes is as slow): a pull of it must fail before the DiffID is
/// checked.
pub fn gzip_bomb_layer(size: u64) -> Blob {
    use std::io::Write as _;
    const CHUNK: u64 = 4 << 20;
    assert!(
        size.is_multiple_of(CHUNK),
        "size must be a multiple of 4 MiB"
    );
    let gzip = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    };
    let mut h = Header::new_gnu();
    h.set_path("zeros").expect("bomb path");
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(DEFAULT_MTIME);
    h.set_size(size);
    h.set_cksum();
    let mut data = gzip(h.as_bytes());
    let zeros = gzip(&vec![0u8; CHUNK as usize]);
    for _ in 0..size / CHUNK {
        data.extend_from_slice(&zeros);
    }
    data.extend_from_slice(&gzip(&[0u8; 1024]));
    Blob {
        digest: sha256_digest(&data),
        size: data.len() as u64,
        diff_id: sha256_digest(b"not the DiffID of the bomb"),
        uncompressed_size: 512 + size + 1024,
        compression: Compression::Gzip,
        media_type: None,
        data,
    }
}

// ------------------------------------------------------ manifest / index

/// An image: config and layers, and the family of its manifest.
#[derive(Clone, Debug)]
pub struct Image {
    pub kind: ManifestKind,
    pub config: ImageConfig,
    pub layers: Vec<Blob>,
    /// Use these bytes as the config blob instead of `config.to_json`.
    pub raw_config: Option<Vec<u8>>,
    /// Manifest `annotations` (OCI only).
    pub annotations: BTreeMap<String, String>,
}

/// The blobs and manifest of an [`Image`], ready to push.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Blob,
    pub config_media_type: String,
    pub layers: Vec<Blob>,
}

impl Image {
    pub fn new(kind: ManifestKind, config: ImageConfig) -> Image {
        Image {
            kind,
            config,
            layers: Vec::new(),
            raw_config: None,
            annotations: BTreeMap::new(),
        }
    }

    pub fn layer(mut self, blob: Blob) -> Image {
        self.layers.push(blob);
        self
    }

    pub fn platform(&self) -> &Platform {
        &self.config.platform
    }

    pub fn build(&self) -> BuiltImage {
        let config_bytes = self.raw_config.clone().unwrap_or_else(|| {
            let diff_ids: Vec<String> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
            serde_json::to_vec(&self.config.to_json(&diff_ids)).expect("config JSON")
        });
        let config = Blob::from_bytes(config_bytes);
        let config_media_type = self.kind.config_media_type().to_string();
        let media_type = self.kind.manifest_media_type().to_string();
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type_in(self.kind), "digest": l.digest, "size": l.size}))
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_media_type, "digest": config.digest, "size": config.size},
            "layers": layers,
        });
        if !self.annotations.is_empty() {
            manifest["annotations"] = json!(self.annotations);
        }
        let manifest = serde_json::to_vec_pretty(&manifest).expect("manifest JSON");
        BuiltImage {
            media_type,
            manifest_digest: sha256_digest(&manifest),
            manifest,
            config,
            config_media_type,
            layers: self.layers.clone(),
        }
    }
}

/// A multi-platform index (OCI image index or Docker manifest list).
#[derive(Clone, Debug)]
pub struct Index {
    pub kind: ManifestKind,
    /// Each image with the platform written for it in the index.
    pub manifests: Vec<(Image, Platform)>,
}

impl Index {
    pub fn new(kind: ManifestKind) -> Index {
        Index {
            kind,
            manifests: Vec::new(),
        }
    }

    /// Add `image` under its config's platform.
    pub fn manifest(self, image: Image) -> Index {
        let platform = image.platform().clone();
        self.manifest_with_platform(image, platform)
    }

    /// Add `image` under any platform (which may contradict its config).
    pub fn manifest_with_platform(mut self, image: Image, platform: Platform) -> Index {
        self.manifests.push((image, platform));
        self
    }

    /// The index JSON for the children's built manifests.
    pub fn build(&self, children: &[BuiltImage]) -> Vec<u8> {
        assert_eq!(children.len(), self.manifests.len());
        let manifests: Vec<Value> = children
            .iter()
            .zip(&self.manifests)
            .map(|(child, (_, platform))| {
                json!({
                    "mediaType": child.media_type,
                    "digest": child.manifest_digest,
                    "size": child.manifest.len(),
                    "platform": platform.to_json(),
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": self.kind.index_media_type(),
            "manifests": manifests,
        });
        serde_json::to_vec_pretty(&index).expect("index JSON")
    }
}

// ------------------------------------------------------------------ push

/// A layer as pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedLayer {
    pub digest: String,
    pub media_type: String,
    /// Compressed size (the manifest's `size`).
    pub size: u64,
    pub uncompressed_size: u64,
    pub diff_id: String,
}

/// An image manifest as pushed.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub repo: String,
    /// The tag or digest it was pushed under.
    pub reference: String,
    /// `127.0.0.1:PORT/<repo>:<tag>` (or `@<digest>` if pushed by digest).
    pub image_ref: String,
    /// `127.0.0.1:PORT/<repo>@<manifest_digest>`.
    pub digest_ref: String,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub config_size: u64,
    pub layers: Vec<PushedLayer>,
}

impl Pushed {
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }
    /// Sum of the layers' compressed sizes.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
    /// Config plus compressed layers.
    pub fn blobs_size(&self) -> u64 {
        self.config_size + self.layers_size()
    }
    /// Sum of the layers' uncompressed sizes.
    pub fn uncompressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.uncompressed_size).sum()
    }
}

/// An index as pushed, with its children (pushed by digest).
#[derive(Clone, Debug)]
pub struct PushedIndex {
    pub repo: String,
    pub reference: String,
    pub image_ref: String,
    pub digest_ref: String,
    pub index_digest: String,
    pub index_media_type: String,
    pub index_size: u64,
    pub manifests: Vec<(Platform, Pushed)>,
}

/// A non-success answer from the registry.
#[derive(Clone, Debug)]
pub struct HttpError {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub body: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}: {}",
            self.method, self.url, self.status, self.body
        )
    }
}

impl std::error::Error for HttpError {}

/// A response read whole.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn content_type(&self) -> Option<String> {
        self.header("content-type")
    }
    /// The `Docker-Content-Digest` header.
    pub fn docker_content_digest(&self) -> Option<String> {
        self.header("docker-content-digest")
    }
    /// `sha256:<hex>` of the body.
    pub fn body_digest(&self) -> String {
        sha256_digest(&self.body)
    }
}

/// Every manifest media type, for Accept headers.
pub const ALL_MANIFEST_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
];

/// A plain-HTTP distribution API client for one registry, with optional
/// basic-auth credentials. HTTP/1.1 on loopback, one connection per request
/// (hyper; not reqwest, whose TLS features the workspace unifies with the
/// image service's `rustls-no-provider`, which panics on `Client::build`).
#[derive(Clone, Debug)]
pub struct RegistryClient {
    base: Url,
    host: String,
    auth: Option<(String, String)>,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl RegistryClient {
    /// With the registry's credentials, if it has any.
    pub fn new(registry: &Registry) -> RegistryClient {
        let auth = registry
            .credentials()
            .map(|(u, p)| (u.to_string(), p.to_string()));
        RegistryClient::for_url(&registry.url(), auth)
    }

    /// Without credentials.
    pub fn anonymous(registry: &Registry) -> RegistryClient {
        RegistryClient::for_url(&registry.url(), None)
    }

    /// With these credentials.
    pub fn with_credentials(registry: &Registry, user: &str, password: &str) -> RegistryClient {
        RegistryClient::for_url(&registry.url(), Some((user.into(), password.into())))
    }

    /// For `http://host:port`.
    pub fn for_url(url: &str, auth: Option<(String, String)>) -> RegistryClient {
        let base = Url::parse(url).expect("registry URL");
        assert_eq!(base.scheme(), "http", "plain HTTP only");
        let host = match base.port() {
            Some(port) => format!("{}:{port}", base.host_str().expect("registry host")),
            None => base.host_str().expect("registry host").to_string(),
        };
        RegistryClient { base, host, auth }
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("registry URL path")
    }

    /// Send one request on a new connection and read the whole response.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(hyper::header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> Fetched {
        let what = format!("{method} {url}");
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(method, url, headers, body))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer in {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    async fn send_inner(
        &self,
        method: Method,
        url: &Url,
        headers: &[(hyper::header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> Result<Fetched, Box<dyn std::error::Error + Send + Sync>> {
        let host = url.host_str().ok_or("URL without host")?;
        let port = url.port_or_known_default().ok_or("URL without port")?;
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut target = url.path().to_string();
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, format!("{host}:{port}"));
        if let Some((user, password)) = &self.auth {
            let token = base64_encode(format!("{user}:{password}").as_bytes());
            request = request.header(AUTHORIZATION, format!("Basic {token}"));
        }
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok(Fetched {
            status,
            headers,
            body,
        })
    }

    fn error(method: &str, url: &Url, fetched: &Fetched) -> HttpError {
        HttpError {
            method: method.into(),
            url: url.to_string(),
            status: fetched.status,
            body: String::from_utf8_lossy(&fetched.body).into_owned(),
        }
    }

    /// `GET` any path under the registry (`/v2/…`) with these Accept types.
    pub async fn get(&self, path: &str, accept: &[&str]) -> Fetched {
        let accept = accept.join(", ");
        let headers = if accept.is_empty() {
            vec![]
        } else {
            vec![(ACCEPT, &*accept)]
        };
        self.send(Method::GET, &self.url(path), &headers, Vec::new())
            .await
    }

    /// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Fetched {
        self.get(
            &format!("/v2/{repo}/manifests/{reference}"),
            ALL_MANIFEST_TYPES,
        )
        .await
    }

    /// `GET /v2/<repo>/blobs/<digest>`.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Fetched {
        self.get(&format!("/v2/{repo}/blobs/{digest}"), &[]).await
    }

    /// `HEAD /v2/<repo>/blobs/<digest>` answered 200.
    pub async fn try_blob_exists(&self, repo: &str, digest: &str) -> Result<bool, HttpError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let fetched = self.send(Method::HEAD, &url, &[], Vec::new()).await;
        match fetched.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(Self::error("HEAD", &url, &fetched)),
        }
    }

    /// Upload `data` to `repo` (monolithic: POST then PUT with the
    /// digest) unless the registry has it already; returns its digest.
    pub async fn try_push_blob(&self, repo: &str, data: &[u8]) -> Result<String, HttpError> {
        let digest = sha256_digest(data);
        if self.try_blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let fetched = self
            .send(Method::POST, &start, &[(CONTENT_LENGTH, "0")], Vec::new())
            .await;
        if fetched.status != 202 {
            return Err(Self::error("POST", &start, &fetched));
        }
        let location = fetched
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| HttpError {
                body: "202 without a Location".into(),
                ..Self::error("POST", &start, &fetched)
            })?;
        let upload = upload_url(&start, location, &digest);
        // Not a form type: Go would read the body as a form.
        let headers = [(CONTENT_TYPE, "application/octet-stream")];
        let fetched = self
            .send(Method::PUT, &upload, &headers, data.to_vec())
            .await;
        if fetched.status != 201 {
            return Err(Self::error("PUT", &upload, &fetched));
        }
        Ok(digest)
    }

    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        self.try_push_blob(repo, data)
            .await
            .unwrap_or_else(|e| panic!("push blob: {e}"))
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with this Content-Type;
    /// returns the registry's `Docker-Content-Digest`.
    pub async fn try_push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, HttpError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let headers = [(CONTENT_TYPE, media_type)];
        let fetched = self.send(Method::PUT, &url, &headers, body.to_vec()).await;
        if fetched.status != 201 {
            return Err(Self::error("PUT", &url, &fetched));
        }
        Ok(fetched
            .docker_content_digest()
            .unwrap_or_else(|| sha256_digest(body)))
    }

    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        self.try_push_manifest(repo, reference, media_type, body)
            .await
            .unwrap_or_else(|e| panic!("push manifest: {e}"))
    }

    fn image_ref(&self, repo: &str, reference: &str) -> String {
        if reference.contains(':') {
            format!("{}/{repo}@{reference}", self.host)
        } else {
            format!("{}/{repo}:{reference}", self.host)
        }
    }

    /// Push the config, the layers and the manifest of `image` as
    /// `repo:reference` (a tag or the manifest's digest).
    pub async fn try_push_image(
        &self,
        repo: &str,
        reference: &str,
        image: &Image,
    ) -> Result<Pushed, HttpError> {
        let built = image.build();
        self.try_push_built(repo, reference, image.kind, &built)
            .await
    }

    pub async fn push_image(&self, repo: &str, reference: &str, image: &Image) -> Pushed {
        self.try_push_image(repo, reference, image)
            .await
            .unwrap_or_else(|e| panic!("push image {repo}:{reference}: {e}"))
    }

    async fn try_push_built(
        &self,
        repo: &str,
        reference: &str,
        kind: ManifestKind,
        built: &BuiltImage,
    ) -> Result<Pushed, HttpError> {
        self.try_push_blob(repo, &built.config.data).await?;
        // A layer listed several times is pushed once.
        let mut pushed = std::collections::HashSet::new();
        for layer in &built.layers {
            if pushed.insert(&layer.digest) {
                self.try_push_blob(repo, &layer.data).await?;
            }
        }
        let digest = self
            .try_push_manifest(repo, reference, &built.media_type, &built.manifest)
            .await?;
        assert_eq!(digest, built.manifest_digest, "registry's manifest digest");
        Ok(Pushed {
            repo: repo.into(),
            reference: reference.into(),
            image_ref: self.image_ref(repo, reference),
            digest_ref: self.image_ref(repo, &digest),
            manifest_digest: digest,
            manifest_media_type: built.media_type.clone(),
            manifest_size: built.manifest.len() as u64,
            config_digest: built.config.digest.clone(),
            config_size: built.config.size,
            layers: built
                .layers
                .iter()
                .map(|l| PushedLayer {
                    digest: l.digest.clone(),
                    media_type: l.media_type_in(kind),
                    size: l.size,
                    uncompressed_size: l.uncompressed_size,
                    diff_id: l.diff_id.clone(),
                })
                .collect(),
        })
    }

    /// Push each image of `index` by digest, then the index as
    /// `repo:reference`.
    pub async fn try_push_index(
        &self,
        repo: &str,
        reference: &str,
        index: &Index,
    ) -> Result<PushedIndex, HttpError> {
        let mut built = Vec::new();
        let mut manifests = Vec::new();
        for (image, platform) in &index.manifests {
            let b = image.build();
            let pushed = self
                .try_push_built(repo, &b.manifest_digest, image.kind, &b)
                .await?;
            manifests.push((platform.clone(), pushed));
            built.push(b);
        }
        let body = index.build(&built);
        let media_type = index.kind.index_media_type();
        let digest = self
            .try_push_manifest(repo, reference, media_type, &body)
            .await?;
        assert_eq!(digest, sha256_digest(&body), "registry's index digest");
        Ok(PushedIndex {
            repo: repo.into(),
            reference: reference.into(),
            image_ref: self.image_ref(repo, reference),
            digest_ref: self.image_ref(repo, &digest),
            index_digest: digest,
            index_media_type: media_type.into(),
            index_size: body.len() as u64,
            manifests,
        })
    }

    pub async fn push_index(&self, repo: &str, reference: &str, index: &Index) -> PushedIndex {
        self.try_push_index(repo, reference, index)
            .await
            .unwrap_or_else(|e| panic!("push index {repo}:{reference}: {e}"))
    }

    /// Push [`SCHEMA1_MANIFEST`] (and its layer) as `repo:tag`. The
    /// registry refuses it unless started with `RegistryOptions { schema1:
    /// true, .. }`.
    pub async fn try_push_schema1(&self, repo: &str, tag: &str) -> Result<String, HttpError> {
        let layer = hex::decode(SCHEMA1_LAYER_HEX).expect("schema1 layer hex");
        self.try_push_blob(repo, &layer).await?;
        self.try_push_manifest(
            repo,
            tag,
            DOCKER_SCHEMA1_SIGNED,
            SCHEMA1_MANIFEST.as_bytes(),
        )
        .await
    }
}

/// Where to PUT the blob: the upload `Location` (absolute, absolute-path or
/// relative to the POST's URL, with or without a query) with
/// `digest=<digest>` added to its query.
fn upload_url(post_url: &Url, location: &str, digest: &str) -> Url {
    let mut url = post_url.join(location).expect("upload Location");
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// Push `image` as `repo:reference` with the registry's credentials.
pub async fn push_image(registry: &Registry, repo: &str, reference: &str, image: &Image) -> Pushed {
    RegistryClient::new(registry)
        .push_image(repo, reference, image)
        .await
}

/// Push `index` as `repo:reference` with the registry's credentials.
pub async fn push_index(
    registry: &Registry,
    repo: &str,
    reference: &str,
    index: &Index,
) -> PushedIndex {
    RegistryClient::new(registry)
        .push_index(repo, reference, index)
        .await
}

/// Push a single-layer linux/amd64 busybox image (OCI manifest, Cmd
/// `["/bin/sh"]`) as `repo:tag`.
pub async fn push_busybox(
    registry: &Registry,
    repo: &str,
    tag: &str,
    compression: Compression,
) -> Pushed {
    let image = busybox_image(ManifestKind::Oci, compression, &Platform::linux_amd64());
    push_image(registry, repo, tag, &image).await
}

/// The busybox image for `platform`, plus a second layer holding
/// `/etc/berth-platform` (e.g. `linux/arm64/v8\n`) to tell which child
/// was unpacked.
pub fn busybox_platform_image(
    kind: ManifestKind,
    compression: Compression,
    platform: &Platform,
) -> Image {
    let marker = Layer::new()
        .dir("etc", 0o755)
        .file(
            "etc/berth-platform",
            format!("{}\n", platform.to_path()),
            0o644,
        )
        .build(compression);
    busybox_image(kind, compression, platform).layer(marker)
}

/// Push an index (OCI index or Docker list, after `kind`) of
/// [`busybox_platform_image`]s, one per platform, as `repo:tag`.
pub async fn push_busybox_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    kind: ManifestKind,
    compression: Compression,
    platforms: &[Platform],
) -> PushedIndex {
    let mut index = Index::new(kind);
    for platform in platforms {
        index = index.manifest(busybox_platform_image(kind, compression, platform));
    }
    push_index(registry, repo, tag, &index).await
}

/// The gzipped layer of [`SCHEMA1_MANIFEST`]: one file, `hello.txt`.
pub const SCHEMA1_LAYER_HEX: &str = "1f8b0800000000000203edcd310ac2401404d05f7b8a9c40fe4288e70912481111cc06727c973482bd82f85e33c334334fcb723fd7bdc6e76433f4fd91cd7b6696f2eac77e19b24497f105db5ac747bb8cffb45ee7e93676e514000000000000000000fc9227872fcee500280000";
pub const SCHEMA1_LAYER_DIGEST: &str =
    "sha256:eff34a36dbbdc953979bf6b40ada84f44b314824a92f195215665d136d1433e4";
/// The registry's digest of [`SCHEMA1_MANIFEST`] (of its payload without
/// the signatures, as for any schema 1 manifest).
pub const SCHEMA1_MANIFEST_DIGEST: &str =
    "sha256:b2f8d7e25c81a6c19415bea441ac7e9aa02d093279145757a32c0223e796b224";
/// A Docker v2 schema 1 manifest, signed (libtrust JWS, ES256, throwaway
/// key) so that a registry with schema 1 enabled stores it. It may be
/// pushed under any repository and tag (the registry does not check the
/// `name` and `tag` fields). Do not reformat: the signature covers the
/// bytes.
pub const SCHEMA1_MANIFEST: &str = r#"{
   "schemaVersion": 1,
   "name": "berth/schema1",
   "tag": "latest",
   "architecture": "amd64",
   "fsLayers": [
      {
         "blobSum": "sha256:eff34a36dbbdc953979bf6b40ada84f44b314824a92f195215665d136d1433e4"
      }
   ],
   "history": [
      {
         "v1Compatibility": "{\"id\":\"5c2f64c7f21efd5fb5e3d6a499abe5eacb248ae6f6f0085387c9a056d10ef5fd\",\"created\":\"2020-01-01T00:00:00Z\",\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\"]}}"
      }
   ],
   "signatures": [
      {
         "header": {
            "jwk": {
               "crv": "P-256",
               "kty": "EC",
               "x": "ed6P-pCzm2qWh7Ab5HV9ADfhOdUsZuxcqL_xSKH5slg",
               "y": "hojPURkLzsPSf1R6lzj8n3I0ricSnNNbOw9FBZYVCuk"
            },
            "alg": "ES256"
         },
         "signature": "0xYK6X3Is5vDnRItVm8l4ywrLS2PFUmtzCdZ-b8KmHN_P_CKbHlQhU0LVYVIo2MAICJcQD7expFC4ooD2z9CPg",
         "protected": "eyJmb3JtYXRMZW5ndGgiOjQ5NCwiZm9ybWF0VGFpbCI6IkNuMCIsInRpbWUiOiIyMDIwLTAxLTAxVDAwOjAwOjAwWiJ9"
      }
   ]
}"#;

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::registry::RegistryOptions;

    fn decompress(blob: &Blob) -> Vec<u8> {
        let mut out = Vec::new();
        match blob.compression {
            Compression::None => out.clone_from(&blob.data),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&blob.data[..])
                    .read_to_end(&mut out)
                    .expect("gunzip");
            }
            Compression::Zstd => out = zstd::stream::decode_all(&blob.data[..]).expect("unzstd"),
        }
        out
    }

    /// (name bytes, type, link bytes, data) of an entry.
    type ReadEntry = (Vec<u8>, EntryType, Option<Vec<u8>>, Vec<u8>);

    /// Each entry as the tar crate reads it back.
    fn read_back(tar: &[u8]) -> Vec<ReadEntry> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let name = e.path_bytes().into_owned();
                let kind = e.header().entry_type();
                let link = e.link_name_bytes().map(|l| l.into_owned());
                let mut data = Vec::new();
                e.read_to_end(&mut data).expect("entry data");
                (name, kind, link, data)
            })
            .collect()
    }

    #[test]
    fn layer_entries_are_written_verbatim() {
        let long = format!("deep/{}/file", "d".repeat(120));
        let layer = Layer::new()
            .dir("/etc", 0o755)
            .file_full("./etc/motd", "hi\n", 0o600, 1000, 1001, 42)
            .symlink("etc/link", "/etc/motd")
            .hardlink("etc/hard", "/etc/motd")
            .fifo("etc/fifo", 0o644)
            .char_device("dev/null", 0o666, 1, 3)
            .whiteout("/usr/gone")
            .opaque("var/lib")
            .file(&long, "x", 0o644)
            .raw("../evil", EntryType::Regular, None, "evil")
            .raw("/abs", EntryType::Regular, None, "abs")
            .raw("a/../../x", EntryType::Regular, None, "x")
            .raw("passwd", EntryType::Link, Some(b"../../etc/passwd"), "")
            .raw("evil", EntryType::Symlink, Some(b"/tmp/x"), "")
            .raw("evil/pwned", EntryType::Regular, None, "pwned");
        let tar = layer.tar();
        let entries = read_back(&tar);
        let names: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.0).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/motd",
                "etc/link",
                "etc/hard",
                "etc/fifo",
                "dev/null",
                "usr/.wh.gone",
                "var/lib/.wh..wh..opq",
                &long,
                "../evil",
                "/abs",
                "a/../../x",
                "passwd",
                "evil",
                "evil/pwned",
            ]
        );
        assert_eq!(entries[1].3, b"hi\n");
        assert_eq!(entries[2].1, EntryType::Symlink);
        assert_eq!(entries[2].2.as_deref(), Some(&b"/etc/motd"[..]));
        assert_eq!(entries[3].1, EntryType::Link);
        assert_eq!(entries[3].2.as_deref(), Some(&b"etc/motd"[..]));
        assert_eq!(entries[4].1, EntryType::Fifo);
        assert_eq!(entries[5].1, EntryType::Char);
        assert_eq!(entries[12].2.as_deref(), Some(&b"../../etc/passwd"[..]));
        assert_eq!(entries[14].3, b"pwned");

        let mut archive = tar::Archive::new(&tar[..]);
        for (i, e) in archive.entries().expect("entries").enumerate() {
            let e = e.expect("entry");
            let h = e.header();
            if i == 1 {
                assert_eq!(h.mode().expect("mode"), 0o600);
                assert_eq!(h.uid().expect("uid"), 1000);
                assert_eq!(h.gid().expect("gid"), 1001);
                assert_eq!(h.mtime().expect("mtime"), 42);
            }
            if i == 5 {
                assert_eq!(h.device_major().expect("major"), Some(1));
                assert_eq!(h.device_minor().expect("minor"), Some(3));
            }
        }

        for compression in Compression::ALL {
            let blob = layer.build(compression);
            assert_eq!(blob.diff_id, sha256_digest(&tar));
            assert_eq!(blob.uncompressed_size, tar.len() as u64);
            assert_eq!(blob.digest, sha256_digest(&blob.data));
            assert_eq!(blob.size, blob.data.len() as u64);
            assert_eq!(decompress(&blob), tar);
            // Deterministic.
            assert_eq!(layer.build(compression).digest, blob.digest);
        }
    }

    #[test]
    fn busybox_rootfs_has_the_applets() {
        let blob = busybox_layer(Compression::Gzip);
        let entries = read_back(&decompress(&blob));
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.0 == name.as_bytes())
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(find("bin/busybox").3, busybox_binary());
        for applet in BUSYBOX_APPLETS {
            let e = find(&format!("bin/{applet}"));
            assert_eq!(e.1, EntryType::Link);
            assert_eq!(e.2.as_deref(), Some(&b"bin/busybox"[..]));
        }
        assert!(String::from_utf8_lossy(&find("etc/passwd").3).contains("app:x:1000:1000:"));
        find("tmp/");
        find("home/app/");
    }

    #[test]
    fn upload_location_forms() {
        let post = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").expect("url");
        let d = "sha256:00";
        for (location, want) in [
            (
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u1?_state=x%3D",
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u1?_state=x%3D&digest=sha256%3A00",
            ),
            (
                "/v2/a/b/blobs/uploads/u2",
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u2?digest=sha256%3A00",
            ),
            (
                "u3?s=1",
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u3?s=1&digest=sha256%3A00",
            ),
        ] {
            assert_eq!(upload_url(&post, location, d).as_str(), want);
        }
    }

    async fn check_image(client: &RegistryClient, pushed: &Pushed, kind: ManifestKind) {
        let m = client.get_manifest(&pushed.repo, &pushed.reference).await;
        assert_eq!(m.status, 200, "{}", String::from_utf8_lossy(&m.body));
        assert_eq!(
            m.content_type().as_deref(),
            Some(kind.manifest_media_type())
        );
        assert_eq!(
            m.docker_content_digest().as_deref(),
            Some(&*pushed.manifest_digest)
        );
        assert_eq!(m.body_digest(), pushed.manifest_digest);
        assert_eq!(m.body.len() as u64, pushed.manifest_size);
        let doc: Value = serde_json::from_slice(&m.body).expect("manifest JSON");
        assert_eq!(doc["config"]["mediaType"], kind.config_media_type());
        assert_eq!(doc["config"]["digest"], *pushed.config_digest);
        let config = client.get_blob(&pushed.repo, &pushed.config_digest).await;
        assert_eq!(config.status, 200);
        assert_eq!(
            config.docker_content_digest().as_deref(),
            Some(&*pushed.config_digest)
        );
        assert_eq!(config.body_digest(), pushed.config_digest);
        let config: Value = serde_json::from_slice(&config.body).expect("config JSON");
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .iter()
            .map(|v| v.as_str().expect("diff_id"))
            .collect();
        assert_eq!(
            diff_ids,
            pushed
                .layers
                .iter()
                .map(|l| &*l.diff_id)
                .collect::<Vec<_>>()
        );
        assert_eq!(config["config"]["Cmd"], json!(["/bin/sh"]));
        for (i, layer) in pushed.layers.iter().enumerate() {
            assert_eq!(doc["layers"][i]["mediaType"], *layer.media_type);
            assert_eq!(doc["layers"][i]["size"], layer.size);
            let blob = client.get_blob(&pushed.repo, &layer.digest).await;
            assert_eq!(blob.status, 200);
            assert_eq!(
                blob.docker_content_digest().as_deref(),
                Some(&*layer.digest)
            );
            assert_eq!(blob.body_digest(), layer.digest);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn push_busybox_every_compression_and_manifest_kind() {
        let registry = Registry::start();
        let client = RegistryClient::new(&registry);
        for compression in Compression::ALL {
            let repo = format!("busybox/{compression:?}").to_lowercase();
            let pushed = push_busybox(&registry, &repo, "latest", compression).await;
            assert_eq!(
                pushed.image_ref,
                format!("{}/{repo}:latest", registry.addr())
            );
            assert_eq!(
                pushed.layers[0].media_type,
                ManifestKind::Oci.layer_media_type(compression)
            );
            check_image(&client, &pushed, ManifestKind::Oci).await;

            let image = busybox_image(ManifestKind::Docker, compression, &Platform::linux_amd64());
            let pushed = push_image(&registry, &format!("{repo}-docker"), "v1", &image).await;
            assert_eq!(pushed.manifest_media_type, DOCKER_MANIFEST);
            check_image(&client, &pushed, ManifestKind::Docker).await;
            // By digest too.
            let by_digest = client
                .get_manifest(&pushed.repo, &pushed.manifest_digest)
                .await;
            assert_eq!(by_digest.status, 200);
            assert_eq!(by_digest.body_digest(), pushed.manifest_digest);
        }
        // The layer went up once per repository; the second push of the same
        // content skips it (HEAD 200).
        let again = push_busybox(&registry, "busybox/gzip", "again", Compression::Gzip).await;
        let blob_path = format!("/v2/busybox/gzip/blobs/{}", again.layers[0].digest);
        assert_eq!(registry.request_count_method("HEAD", &blob_path), 2);
        assert_eq!(registry.request_count_method("GET", &blob_path), 1);
        let uploads = registry
            .requests()
            .iter()
            .filter(|e| e.method == "PUT" && e.uri.contains("/v2/busybox/gzip/blobs/uploads/"))
            .count();
        assert_eq!(uploads, 2, "config and layer, once each");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn push_multi_platform_index() {
        let registry = Registry::start();
        let client = RegistryClient::new(&registry);
        let platforms = [Platform::linux_amd64(), Platform::linux_arm64()];
        for kind in [ManifestKind::Oci, ManifestKind::Docker] {
            let repo = format!("multi/{kind:?}").to_lowercase();
            let pushed = push_busybox_index(
                &registry,
                &repo,
                "latest",
                kind,
                Compression::Gzip,
                &platforms,
            )
            .await;
            let index = client.get_manifest(&repo, "latest").await;
            assert_eq!(index.status, 200);
            assert_eq!(
                index.content_type().as_deref(),
                Some(kind.index_media_type())
            );
            assert_eq!(
                index.docker_content_digest().as_deref(),
                Some(&*pushed.index_digest)
            );
            assert_eq!(index.body_digest(), pushed.index_digest);
            let doc: Value = serde_json::from_slice(&index.body).expect("index JSON");
            let entries = doc["manifests"].as_array().expect("manifests");
            assert_eq!(entries.len(), 2);
            assert_eq!(
                entries[0]["platform"],
                json!({"os": "linux", "architecture": "amd64"})
            );
            assert_eq!(
                entries[1]["platform"],
                json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
            );
            for (entry, (platform, child)) in entries.iter().zip(&pushed.manifests) {
                assert_eq!(entry["digest"], *child.manifest_digest);
                assert_eq!(entry["mediaType"], kind.manifest_media_type());
                assert_eq!(entry["size"], child.manifest_size);
                assert_eq!(child.reference, child.manifest_digest);
                assert_eq!(child.layers.len(), 2);
                let config = client.get_blob(&repo, &child.config_digest).await;
                let config: Value = serde_json::from_slice(&config.body).expect("config");
                assert_eq!(config["architecture"], *platform.architecture);
                let m = client.get_manifest(&repo, &child.manifest_digest).await;
                assert_eq!(m.status, 200);
                assert_eq!(
                    m.content_type().as_deref(),
                    Some(kind.manifest_media_type())
                );
                assert_eq!(m.body_digest(), child.manifest_digest);
            }
            // Same busybox layer, different marker layers.
            let (a, b) = (&pushed.manifests[0].1, &pushed.manifests[1].1);
            assert_eq!(a.layers[0].digest, b.layers[0].digest);
            assert_ne!(a.layers[1].digest, b.layers[1].digest);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn basic_auth_registry_requires_credentials() {
        let registry = Registry::start_with_basic_auth("berth", "hunter2");
        let anonymous = RegistryClient::anonymous(&registry);
        let wrong = RegistryClient::with_credentials(&registry, "berth", "wrong");
        let image = busybox_image(
            ManifestKind::Oci,
            Compression::Gzip,
            &Platform::linux_amd64(),
        );
        for client in [&anonymous, &wrong] {
            let err = client
                .try_push_image("private/bb", "latest", &image)
                .await
                .expect_err("push");
            assert_eq!(err.status, 401, "{err}");
            assert_eq!(client.get("/v2/", &[]).await.status, 401);
        }
        let pushed = push_image(&registry, "private/bb", "latest", &image).await;
        let authed = RegistryClient::new(&registry);
        check_image(&authed, &pushed, ManifestKind::Oci).await;
        let denied = anonymous.get_manifest("private/bb", "latest").await;
        assert_eq!(denied.status, 401);
        assert!(
            denied
                .header("www-authenticate")
                .expect("challenge")
                .starts_with("Basic ")
        );
        let denied = anonymous
            .get_blob("private/bb", &pushed.layers[0].digest)
            .await;
        assert_eq!(denied.status, 401);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn corrupted_blob_is_served_with_its_old_digest() {
        let registry = Registry::start();
        let client = RegistryClient::new(&registry);
        let pushed = push_busybox(&registry, "corrupt/bb", "latest", Compression::Gzip).await;
        let layer = &pushed.layers[0];
        let before = client.get_blob("corrupt/bb", &layer.digest).await;
        assert_eq!(before.body_digest(), layer.digest);
        registry.corrupt_blob(&layer.digest);
        let after = client.get_blob("corrupt/bb", &layer.digest).await;
        assert_eq!(after.status, 200);
        assert_eq!(after.body.len(), before.body.len());
        assert_ne!(after.body_digest(), layer.digest);
        assert_eq!(
            after.docker_content_digest().as_deref(),
            Some(&*layer.digest)
        );

        registry.replace_blob(&pushed.config_digest, b"{}");
        let config = client.get_blob("corrupt/bb", &pushed.config_digest).await;
        assert_eq!(config.status, 200);
        assert_eq!(config.body, b"{}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn schema1_needs_a_registry_with_schema1_enabled() {
        let registry = Registry::start();
        let client = RegistryClient::new(&registry);
        let err = client
            .try_push_schema1("old/image", "latest")
            .await
            .expect_err("schema1 push");
        assert_eq!(err.status, 500, "{err}");
        assert!(registry.log().contains("manifest schema v1 unsupported"));
        // Nor does it take an arbitrary type with a schema 2 body.
        let image = busybox_image(
            ManifestKind::Oci,
            Compression::Gzip,
            &Platform::linux_amd64(),
        );
        let built = image.build();
        client.push_blob("old/image", &built.config.data).await;
        client.push_blob("old/image", &built.layers[0].data).await;
        let err = client
            .try_push_manifest("old/image", "x", DOCKER_SCHEMA1_SIGNED, &built.manifest)
            .await
            .expect_err("schema 2 body as schema 1");
        assert_eq!(err.status, 400, "{err}");

        let registry = Registry::start_with(RegistryOptions {
            schema1: true,
            ..Default::default()
        });
        let client = RegistryClient::new(&registry);
        let digest = client
            .try_push_schema1("old/image", "latest")
            .await
            .expect("schema1 push");
        assert_eq!(digest, SCHEMA1_MANIFEST_DIGEST);
        let m = client.get_manifest("old/image", "latest").await;
        assert_eq!(m.status, 200);
        assert_eq!(m.content_type().as_deref(), Some(DOCKER_SCHEMA1_SIGNED));
        assert_eq!(
            m.docker_content_digest().as_deref(),
            Some(SCHEMA1_MANIFEST_DIGEST)
        );
        // Served re-signed with the registry's own key: same payload, same
        // digest, other signature.
        let payload = SCHEMA1_MANIFEST
            .split(",\n   \"signatures\"")
            .next()
            .expect("payload");
        assert!(m.body.starts_with(payload.as_bytes()));
        let layer = client.get_blob("old/image", SCHEMA1_LAYER_DIGEST).await;
        assert_eq!(layer.body_digest(), SCHEMA1_LAYER_DIGEST);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn access_log_counts_concurrent_blob_fetches() {
        let registry = Registry::start();
        let pushed = push_busybox(&registry, "count/bb", "latest", Compression::Zstd).await;
        let digest = pushed.layers[0].digest.clone();
        let path = format!("/v2/count/bb/blobs/{digest}");
        assert_eq!(registry.request_count_method("GET", &path), 0);
        let client = RegistryClient::new(&registry);
        let fetches: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                let digest = digest.clone();
                tokio::spawn(async move { client.get_blob("count/bb", &digest).await })
            })
            .collect();
        for fetch in fetches {
            let fetched = fetch.await.expect("join");
            assert_eq!(fetched.body_digest(), digest);
        }
        assert_eq!(registry.request_count_method("GET", &path), 4);
        assert_eq!(
            registry.request_count(&digest),
            5,
            "4 GETs and the push's HEAD"
        );
    }
}
