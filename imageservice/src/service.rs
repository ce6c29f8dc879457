//! The image service proper: pull, look up, list, remove, garbage-collect,
//! usage. berthd's CRI layer (`shim/src/cri/image/`) converts its types.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_db::Database;
use futures_util::future::try_join_all;

use crate::Error;
use crate::db::{ImageDb, ImageRecord};
use crate::digest::Digest;
use crate::hosts::{self, RegistryHost};
use crate::limits::{Exceeded, Limits};
use crate::manifest::{self, Descriptor, ImageConfig, Parsed, Platform};
use crate::reference::Reference;
use crate::registry::{Credentials, Registry};
use crate::store::{IngestError, Store};
use crate::unpack::{self, Compression};

/// What the image service needs from berthd's config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `<root>/images`.
    pub dir: PathBuf,
    /// hosts.toml directory.
    pub hosts_dir: PathBuf,
    /// What berth waits for from registries (`[registry]` in the config).
    pub registry: crate::registry::Limits,
    /// Names or globs of images never removed or collected.
    pub pinned: Vec<String>,
    /// Size bounds of what a pull may fetch and unpack (`[images]`).
    pub limits: Limits,
}

pub struct ImageService {
    store: Store,
    db: Arc<Database>,
    registry: Registry,
    hosts_dir: PathBuf,
    pinned: Vec<String>,
    platform: Platform,
    limits: Limits,
    /// Pulls hold it shared; garbage collection exclusively, so it never
    /// deletes what a pull in flight has just written.
    gc_lock: tokio::sync::RwLock<()>,
    /// Content became garbage while pulls ran: the last pull to finish
    /// collects it, so RemoveImage never waits for a pull.
    gc_pending: std::sync::atomic::AtomicBool,
}

impl ImageService {
    /// Opens the store, removes what an interrupted pull left and collects
    /// content no image references.
    pub fn open(settings: Settings, db: Arc<Database>) -> Result<ImageService, Error> {
        ImageDb::new(&db).init()?;
        let svc = ImageService {
            store: Store::open(&settings.dir, settings.limits.min_free_space)?,
            db,
            registry: Registry::new(settings.registry),
            hosts_dir: settings.hosts_dir,
            pinned: settings
                .pinned
                .iter()
                .map(|p| normalize_pattern(p))
                .collect(),
            platform: manifest::host_platform(),
            limits: settings.limits,
            gc_lock: tokio::sync::RwLock::new(()),
            gc_pending: std::sync::atomic::AtomicBool::new(false),
        };
        svc.collect_garbage_now()?;
        Ok(svc)
    }

    pub fn images_dir(&self) -> &Path {
        self.store.root()
    }

    fn db(&self) -> ImageDb<'_> {
        ImageDb::new(&self.db)
    }

    /// Pulls `image` and records it; returns the record. A failed pull
    /// removes what it downloaded, unless another pull is running (then the
    /// last one to finish does, at the latest the next start).
    pub async fn pull(&self, image: &str, creds: &Credentials) -> Result<ImageRecord, Error> {
        let result = self.pull_inner(image, creds).await;
        if result.is_err() {
            self.gc_pending
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.collect_garbage_if_pending();
        result
    }

    /// Collects garbage now if some is pending and no pull is running;
    /// otherwise leaves it pending for the pull still running.
    fn collect_garbage_if_pending(&self) {
        use std::sync::atomic::Ordering;
        if !self.gc_pending.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(_exclusive) = self.gc_lock.try_write() {
            self.gc_pending.store(false, Ordering::SeqCst);
            if let Err(e) = self.collect_garbage_now() {
                tracing::warn!("collecting unused image content: {e}");
            }
        }
    }

    async fn pull_inner(&self, image: &str, creds: &Credentials) -> Result<ImageRecord, Error> {
        let reference = Reference::parse_with_default_tag(image)?;
        let named = reference.to_string();
        let hosts =
            hosts::hosts_for(&self.hosts_dir, reference.domain()).map_err(|e| Error::Hosts {
                image: named.clone(),
                reason: e.to_string(),
            })?;
        let _shared = self.gc_lock.read().await;
        let started = std::time::Instant::now();
        let ctx = PullCtx {
            svc: self,
            hosts: &hosts,
            image: named.clone(),
            repo: reference.path().to_string(),
            ns: reference.domain().to_string(),
            creds,
        };

        // Resolve: the first host that answers for the tag or digest.
        let want = reference
            .digest()
            .map(str::to_string)
            .or_else(|| reference.tag().map(str::to_string))
            .unwrap_or_else(|| "latest".to_string());
        let mut last_err = None;
        let mut found = None;
        for host in &hosts {
            let allowed = if reference.digest().is_some() {
                host.capabilities.pull
            } else {
                host.capabilities.resolve
            };
            if !allowed {
                continue;
            }
            match self
                .registry
                .manifest(host, &ctx.ns, &ctx.repo, &want, creds)
                .await
            {
                Ok(m) => {
                    found = Some((host, m));
                    break;
                }
                Err(e) => {
                    tracing::debug!(image = %named, host = %host.host, "resolve failed: {e}");
                    let next = e.try_next_host();
                    last_err = Some(e);
                    if !next {
                        break;
                    }
                }
            }
        }
        let (host, (content_type, body)) = match found {
            Some(f) => f,
            None => {
                return Err(match last_err {
                    Some(source) => Error::Registry {
                        image: named,
                        source,
                    },
                    None => ctx.invalid("no host in hosts.toml may resolve it".into()),
                });
            }
        };
        let top = Digest::of(&body);
        ctx.check_manifest_size(&top, body.len() as u64)?;
        if let Some(d) = reference.digest()
            && d != top.as_str()
        {
            return Err(ctx.invalid(format!(
                "the registry's manifest has digest {top}, not the {d} asked for"
            )));
        }
        let mut blobs = vec![top.to_string()];
        self.store
            .put(&top, &body)
            .await
            .map_err(|e| ctx.corrupt(e))?;

        // An index: the manifest for this node's platform.
        let parsed =
            manifest::parse(&content_type, &body).map_err(|e| ctx.invalid(e.to_string()))?;
        let (manifest_digest, manifest_size, manifest) = match parsed {
            Parsed::Manifest(m) => (top.clone(), body.len() as u64, m),
            Parsed::Index(index) => {
                let d =
                    manifest::select(&index, &self.platform).ok_or_else(|| Error::NoPlatform {
                        image: named.clone(),
                        platform: platform_string(&self.platform),
                    })?;
                let digest = ctx.digest(&d.digest)?;
                // Refused before the download if the index claims too much.
                ctx.check_manifest_size(&digest, d.size.max(0) as u64)?;
                let (ct, mbody) = self
                    .registry
                    .manifest(host, &ctx.ns, &ctx.repo, digest.as_str(), creds)
                    .await
                    .map_err(|source| Error::Registry {
                        image: named.clone(),
                        source,
                    })?;
                ctx.check_manifest_size(&digest, mbody.len() as u64)?;
                if Digest::of(&mbody) != digest {
                    return Err(ctx.invalid(format!(
                        "manifest {digest} from the index does not match its digest"
                    )));
                }
                self.store
                    .put(&digest, &mbody)
                    .await
                    .map_err(|e| ctx.corrupt(e))?;
                blobs.push(digest.to_string());
                match manifest::parse(&ct, &mbody).map_err(|e| ctx.invalid(e.to_string()))? {
                    Parsed::Manifest(m) => (digest, mbody.len() as u64, m),
                    Parsed::Index(_) => {
                        return Err(ctx.invalid("an index inside an index is not supported".into()));
                    }
                }
            }
        };

        // Every layer is a snapshot and an overlay lower layer: their
        // number is bounded before anything of them is fetched.
        let max = self.limits.max_layers;
        if manifest.layers.len() as u64 > max {
            return Err(ctx.limit(
                format!("manifest {manifest_digest}"),
                Exceeded {
                    what: format!("{} layers is more than {max}", manifest.layers.len()),
                    key: "max_layers",
                    limit: max.to_string(),
                },
            ));
        }

        // The config: the image's id.
        let config_digest = ctx.digest(&manifest.config.digest)?;
        // The config is read into memory whole: its claimed size (which
        // the download may not exceed) is bounded before it is fetched.
        let max = self.limits.max_config_size;
        if manifest.config.size.max(0) as u64 > max {
            return Err(ctx.limit(
                format!("config blob {config_digest}"),
                Exceeded::bytes(
                    &format!("the manifest says {} bytes,", manifest.config.size),
                    "max_config_size",
                    max,
                ),
            ));
        }
        ctx.fetch_blob(host, &manifest.config).await?;
        blobs.push(config_digest.to_string());
        let config: ImageConfig =
            serde_json::from_slice(&std::fs::read(self.store.blob_path(&config_digest))?)
                .map_err(|e| ctx.invalid(format!("image config {config_digest}: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ctx.invalid(format!(
                "the manifest has {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }

        // Layers: fetched concurrently, unpacked in order.
        let mut compressions = Vec::new();
        let max = self.limits.max_layer_unpacked_size;
        for l in &manifest.layers {
            ctx.digest(&l.digest)?;
            // A compressed blob larger than the unpacked limit would cross
            // it: refused before anything is downloaded.
            if l.size.max(0) as u64 > max {
                return Err(ctx.limit(
                    format!("layer {}", l.digest),
                    Exceeded::bytes(
                        &format!("the manifest says {} bytes compressed,", l.size),
                        "max_layer_unpacked_size",
                        max,
                    ),
                ));
            }
            compressions.push(Compression::from_media_type(&l.media_type).ok_or_else(|| {
                ctx.invalid(format!(
                    "layer {}: unsupported media type {:?}",
                    l.digest, l.media_type
                ))
            })?);
        }
        try_join_all(manifest.layers.iter().map(|l| ctx.fetch_blob(host, l))).await?;
        let mut chain: Option<Digest> = None;
        let mut chain_ids = Vec::new();
        for ((layer, compression), diff_id) in manifest
            .layers
            .iter()
            .zip(compressions)
            .zip(&config.rootfs.diff_ids)
        {
            let diff_id = ctx.digest(diff_id)?;
            let id = Digest::chain(chain.as_ref(), &diff_id);
            ctx.unpack(layer, compression, &diff_id, &id, &chain_ids)
                .await?;
            blobs.push(layer.digest.clone());
            chain_ids.push(id.to_string());
            chain = Some(id);
        }

        let size = manifest_size
            + manifest.config.size.max(0) as u64
            + manifest
                .layers
                .iter()
                .map(|l| l.size.max(0) as u64)
                .sum::<u64>();
        let (uid, username) = user_of(&config);
        let rec = ImageRecord {
            id: config_digest.to_string(),
            repo_tags: BTreeSet::new(),
            repo_digests: BTreeSet::new(),
            manifest: manifest_digest.to_string(),
            blobs,
            chain_ids,
            size,
            uid,
            username,
            created_ns: now_ns(),
        };
        // Pulled by digest, an image gets no tag (as Docker and containerd).
        let tag = match reference.digest() {
            None => reference.tag().map(|t| reference.with_tag(t).to_string()),
            Some(_) => None,
        };
        let digest_name = reference.with_digest(top.as_str()).to_string();
        let rec = self.db().add(rec, tag.as_deref(), &digest_name)?;
        tracing::info!(
            image = %named,
            id = %rec.id,
            size = rec.size,
            ms = started.elapsed().as_millis() as u64,
            "pulled"
        );
        Ok(rec)
    }

    /// Finds an image by id (full or unique prefix, with or without
    /// `sha256:`), repo tag or repo digest, in any spelling Docker accepts.
    pub fn find(&self, s: &str) -> Result<Option<ImageRecord>, Error> {
        let db = self.db();
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if hex.len() == 64 {
                if let Some(r) = db.get(&format!("sha256:{hex}"))? {
                    return Ok(Some(r));
                }
            } else {
                let matches: Vec<ImageRecord> = db
                    .all()?
                    .into_iter()
                    .filter(|r| r.id["sha256:".len()..].starts_with(hex))
                    .collect();
                if matches.len() == 1 {
                    return Ok(matches.into_iter().next());
                }
            }
        }
        let Ok(r) = Reference::parse_with_default_tag(s) else {
            return Ok(None);
        };
        match db.by_name(&r.to_string())? {
            Some(id) => Ok(db.get(&id)?),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, Error> {
        Ok(self.db().all()?)
    }

    pub fn is_pinned(&self, rec: &ImageRecord) -> bool {
        rec.repo_tags
            .iter()
            .chain(&rec.repo_digests)
            .chain(std::iter::once(&rec.id))
            .any(|name| self.pinned.iter().any(|p| glob_match(p, name)))
    }

    /// Removes an image. By a tag the image has others of, only that tag
    /// goes; by id, digest or its last tag, the whole image. Idempotent.
    pub async fn remove(&self, s: &str) -> Result<(), Error> {
        let Some(rec) = self.find(s)? else {
            return Ok(());
        };
        if self.is_pinned(&rec) {
            return Err(Error::Pinned(s.to_string()));
        }
        let tag = Reference::parse_with_default_tag(s)
            .ok()
            .map(|r| r.to_string())
            .filter(|t| rec.repo_tags.contains(t));
        match tag {
            Some(t) if rec.repo_tags.len() > 1 => {
                self.db().untag(&rec.id, &t)?;
                tracing::info!(image = %rec.id, tag = %t, "untagged");
            }
            _ => {
                self.db().remove(&rec.id)?;
                tracing::info!(image = %rec.id, "removed");
                self.gc_pending
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.collect_garbage_if_pending();
            }
        }
        Ok(())
    }

    /// Keeps `recs`' snapshots for `holder` (a container) even if the image
    /// is removed: a file under `images/leases/`, so it holds across
    /// restarts. Written before the snapshots are mounted.
    pub fn lease(&self, holder: &str, recs: &[&ImageRecord]) -> Result<(), Error> {
        let dir = self.store.root().join("leases");
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{holder}.tmp"));
        let chains: Vec<&str> = recs
            .iter()
            .flat_map(|r| r.chain_ids.iter().map(String::as_str))
            .collect();
        std::fs::write(&tmp, chains.join("\n"))?;
        std::fs::rename(&tmp, dir.join(holder))?;
        Ok(())
    }

    /// Drops `holder`'s lease; what only it kept is collected. Idempotent.
    pub fn release(&self, holder: &str) -> Result<(), Error> {
        match std::fs::remove_file(self.store.root().join("leases").join(holder)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.gc_pending
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.collect_garbage_if_pending();
        Ok(())
    }

    /// Who holds leases (container ids).
    pub fn lease_holders(&self) -> Vec<String> {
        std::fs::read_dir(self.store.root().join("leases"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Chain ids held by leases.
    fn leased(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.store.root().join("leases")) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(e.path())?;
            out.extend(text.lines().map(str::to_string));
        }
        Ok(out)
    }

    /// The image's layer snapshots, topmost first (overlayfs lowerdir order).
    pub fn snapshot_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.chain_ids
            .iter()
            .rev()
            .filter_map(|c| Digest::parse(c).ok())
            .map(|c| self.store.snapshot_path(&c))
            .collect()
    }

    /// The image's config, from its blob.
    pub fn config(&self, rec: &ImageRecord) -> Result<ImageConfig, Error> {
        let d = Digest::parse(&rec.id).map_err(|e| Error::Invalid {
            image: rec.id.clone(),
            reason: e.to_string(),
        })?;
        let bytes = std::fs::read(self.store.blob_path(&d))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            image: rec.id.clone(),
            reason: e.to_string(),
        })
    }

    /// Removes blobs and snapshots no image references. Callers hold the
    /// gc lock exclusively, or run before serving.
    fn collect_garbage_now(&self) -> Result<(), Error> {
        let images = self.db().all()?;
        let blobs: HashSet<&str> = images
            .iter()
            .flat_map(|r| r.blobs.iter().map(String::as_str))
            .collect();
        let leased = self.leased()?;
        let snaps: HashSet<&str> = images
            .iter()
            .flat_map(|r| r.chain_ids.iter().map(String::as_str))
            .chain(leased.iter().map(String::as_str))
            .collect();
        let (on_disk_blobs, on_disk_snaps) = self.store.contents()?;
        let (mut nb, mut ns) = (0, 0);
        for b in on_disk_blobs.iter().filter(|b| !blobs.contains(b.as_str())) {
            if let Ok(d) = Digest::parse(b) {
                self.store.remove_blob(&d)?;
                nb += 1;
            }
        }
        for s in on_disk_snaps.iter().filter(|s| !snaps.contains(s.as_str())) {
            if let Ok(d) = Digest::parse(s) {
                self.store.remove_snapshot(&d)?;
                ns += 1;
            }
        }
        if nb + ns > 0 {
            tracing::info!(blobs = nb, snapshots = ns, "garbage collected");
        }
        Ok(())
    }

    /// Bytes and inodes used by the image store, and its mountpoint.
    pub fn usage(&self) -> Result<Usage, Error> {
        let root = self.store.root().to_path_buf();
        let mut u = Usage {
            mountpoint: mountpoint_of(&root),
            bytes: 0,
            inodes: 0,
        };
        walk(&root, &mut u)?;
        Ok(u)
    }
}

#[derive(Debug, Clone)]
pub struct Usage {
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

fn walk(dir: &Path, u: &mut Usage) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir)?;
    u.bytes += m.blocks() * 512;
    u.inodes += 1;
    if m.is_dir() {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => walk(&p, u)?,
                Ok(m) => {
                    u.bytes += m.blocks() * 512;
                    u.inodes += 1;
                }
                // Removed while we walked: not ours to count.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The mount point holding `p`, from /proc/self/mountinfo.
fn mountpoint_of(p: &Path) -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| canonical.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"))
}

struct PullCtx<'a> {
    svc: &'a ImageService,
    hosts: &'a [RegistryHost],
    image: String,
    repo: String,
    ns: String,
    creds: &'a Credentials,
}

impl PullCtx<'_> {
    fn invalid(&self, reason: String) -> Error {
        Error::Invalid {
            image: self.image.clone(),
            reason,
        }
    }

    fn corrupt(&self, source: IngestError) -> Error {
        match source {
            IngestError::Limit { digest, source } => self.limit(format!("blob {digest}"), source),
            source => Error::Corrupt {
                image: self.image.clone(),
                source,
            },
        }
    }

    fn limit(&self, object: String, source: Exceeded) -> Error {
        Error::Limit {
            image: self.image.clone(),
            object,
            source,
        }
    }

    /// Refuses a manifest or index of `size` bytes over `max_manifest_size`.
    fn check_manifest_size(&self, digest: &Digest, size: u64) -> Result<(), Error> {
        let max = self.svc.limits.max_manifest_size;
        if size <= max {
            return Ok(());
        }
        Err(self.limit(
            format!("manifest {digest}"),
            Exceeded::bytes(&format!("{size} bytes is"), "max_manifest_size", max),
        ))
    }

    fn digest(&self, s: &str) -> Result<Digest, Error> {
        Digest::parse(s).map_err(|e| self.invalid(e.to_string()))
    }

    /// Downloads a blob into the store unless it is there; one download
    /// per digest and host however many pulls want it. Pulls of the same
    /// digest from another host do not wait for this one (a stalled
    /// registry must not hold up the others): each writes its own temp
    /// file, and committing a verified blob that is already there again
    /// is harmless.
    async fn fetch_blob(&self, host: &RegistryHost, desc: &Descriptor) -> Result<(), Error> {
        let digest = self.digest(&desc.digest)?;
        let store = &self.svc.store;
        let _guard = store
            .lock(&format!("fetch {} {}", host.host, digest.as_str()))
            .await;
        if store.has_blob(&digest) {
            return Ok(());
        }
        let size = u64::try_from(desc.size)
            .map_err(|_| self.invalid(format!("blob {digest} has a negative size")))?;
        let registry = &self.svc.registry;
        let reg_err = |source| Error::Registry {
            image: self.image.clone(),
            source,
        };
        // The host that resolved the image first, then the other hosts
        // that may serve pulls (a mirror missing a blob falls through).
        let candidates = std::iter::once(host).chain(
            self.hosts
                .iter()
                .filter(|h| h.capabilities.pull && h.host != host.host),
        );
        let mut opened = None;
        let mut last = None;
        for h in candidates {
            match registry
                .blob(h, &self.ns, &self.repo, digest.as_str(), self.creds)
                .await
            {
                Ok(r) => {
                    opened = Some(r);
                    break;
                }
                Err(e) if e.try_next_host() => {
                    tracing::debug!(blob = %digest, host = %h.host, "blob fetch failed: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(reg_err(e)),
            }
        }
        let mut resp = match (opened, last) {
            (Some(r), _) => r,
            (None, Some(e)) => return Err(reg_err(e)),
            (None, None) => return Err(self.invalid(format!("no host may serve blob {digest}"))),
        };
        let mut w = store
            .writer(&digest, size)
            .await
            .map_err(|e| self.corrupt(e))?;
        let mut logged = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(reg_err)? {
            w.write(&chunk).await.map_err(|e| self.corrupt(e))?;
            if w.written() - logged >= 8 << 20 {
                logged = w.written();
                tracing::debug!(image = %self.image, blob = %digest, bytes = logged, total = size, "pulling");
            }
        }
        w.commit().await.map_err(|e| self.corrupt(e))?;
        tracing::debug!(image = %self.image, blob = %digest, bytes = size, "blob stored");
        Ok(())
    }

    /// Unpacks one layer into the snapshot `chain` unless it exists.
    async fn unpack(
        &self,
        layer: &Descriptor,
        compression: Compression,
        diff_id: &Digest,
        chain: &Digest,
        lower_chain_ids: &[String],
    ) -> Result<(), Error> {
        let store = &self.svc.store;
        let _guard = store.lock(chain.as_str()).await;
        if store.has_snapshot(chain) {
            return Ok(());
        }
        let layer_err = |reason: String, hostile: bool| Error::Layer {
            image: self.image.clone(),
            layer: layer.digest.clone(),
            reason,
            hostile,
        };
        let blob = store.blob_path(&self.digest(&layer.digest)?);
        let tmp = store.temp_snapshot()?;
        // Topmost first, as the unpacker wants them.
        let lowers: Vec<PathBuf> = lower_chain_ids
            .iter()
            .rev()
            .filter_map(|c| Digest::parse(c).ok())
            .map(|c| store.snapshot_path(&c))
            .collect();
        let dest = tmp.clone();
        let limits = self.svc.limits.clone();
        let result = tokio::task::spawn_blocking(move || {
            unpack::unpack_layer(&blob, compression, &dest, &lowers, &limits)
        })
        .await
        .map_err(|e| layer_err(format!("unpacking panicked: {e}"), false));
        let outcome = match result {
            Ok(Ok(u)) if u.diff_id == diff_id.as_str() => Ok(()),
            Ok(Ok(u)) => Err(layer_err(
                format!(
                    "uncompressed content has digest {}, the config says {diff_id}",
                    u.diff_id
                ),
                true,
            )),
            Ok(Err(unpack::UnpackError::Limit(source))) => Err(Error::Limit {
                image: self.image.clone(),
                object: format!("layer {}", layer.digest),
                source,
            }),
            Ok(Err(e)) => {
                let hostile = matches!(
                    e,
                    unpack::UnpackError::Refused { .. } | unpack::UnpackError::Archive(_)
                );
                Err(layer_err(e.to_string(), hostile))
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                store.commit_snapshot(&tmp, chain)?;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }
}

fn user_of(config: &ImageConfig) -> (Option<i64>, String) {
    let user = config
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let user = user.split(':').next().unwrap_or("");
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A pinned pattern as written by an operator: an exact name is
/// normalised (`busybox` -> `docker.io/library/busybox:latest`); a glob is
/// matched as written against the full normalised names
/// (`docker.io/library/*`, `*/pause:*`).
fn normalize_pattern(p: &str) -> String {
    if !p.contains(['*', '?'])
        && let Ok(r) = Reference::parse_with_default_tag(p)
    {
        return r.to_string();
    }
    p.to_string()
}

/// `*` matches any run of characters, `?` one character.
fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
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
}
