//! A pull: the reference's hosts in hosts.toml order, the manifest (through
//! an index to this node's platform), the config, the layers fetched
//! concurrently and each unpacked as soon as it has arrived, side by side
//! (a layer that must read the ones below waits for them; an existing
//! snapshot is kept), and the image's record.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::{join_all, try_join_all};

use crate::Error;
use crate::db::ImageRecord;
use crate::digest::Digest;
use crate::hosts;
use crate::limits::Exceeded;
use crate::manifest::{self, ImageConfig, Parsed, Platform};
use crate::reference::Reference;
use crate::registry::Credentials;
use crate::unpack::Compression;

use super::ImageService;
use super::fetch::{PullCtx, Source};

impl ImageService {
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
}

impl ImageService {
    #[tracing::instrument(level = "debug", name = "pull", skip_all, fields(image = %image))]
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

        // Layers: checked before anything is fetched.
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
        // Chain IDs, known before anything is unpacked.
        let mut chain_ids: Vec<Digest> = Vec::new();
        let mut diff_ids = Vec::new();
        for d in &config.rootfs.diff_ids {
            let diff_id = ctx.digest(d)?;
            chain_ids.push(Digest::chain(chain_ids.last(), &diff_id));
            diff_ids.push(diff_id);
        }
        // Each layer is unpacked as it arrives, side by side with the
        // others, reading its download as it is written (a stored blob from
        // the store); one that must read the layers below (a missing parent
        // directory, a hard link to a lower file) waits for them.
        let (arrived, arrivals): (Vec<_>, Vec<_>) = manifest
            .layers
            .iter()
            .map(|_| tokio::sync::oneshot::channel::<Source>())
            .unzip();
        let (stored, storeds): (Vec<_>, Vec<_>) = manifest
            .layers
            .iter()
            .map(|_| tokio::sync::oneshot::channel::<()>())
            .unzip();
        let fetch_all = try_join_all(manifest.layers.iter().zip(arrived).zip(stored).map(
            |((l, arrived), stored)| {
                let ctx = &ctx;
                async move {
                    ctx.fetch_blob_followed(host, l, Some(arrived)).await?;
                    let _ = stored.send(());
                    Ok::<(), Error>(())
                }
            },
        ));
        let done = LayersDone::new(manifest.layers.len());
        let unpack_all = join_all(
            manifest
                .layers
                .iter()
                .zip(compressions)
                .zip(arrivals.into_iter().zip(storeds))
                .enumerate()
                .map(|(i, ((layer, compression), (arrival, stored)))| {
                    let mark = Mark::new(&done, i);
                    let (diff_id, chain) = (&diff_ids[i], &chain_ids[i]);
                    let lowers: Vec<String> =
                        chain_ids[..i].iter().map(Digest::to_string).collect();
                    let ctx = &ctx;
                    async move {
                        // Not fetched: the download's error is the pull's.
                        let Ok(source) = arrival.await else {
                            mark.set(Err("it was not fetched".into()));
                            return Ok(());
                        };
                        // Read as it downloads only with a place (see
                        // `ImageService::arriving`); without one, once
                        // stored.
                        let (source, _place) = match source {
                            Source::Stored => (Source::Stored, None),
                            Source::Arriving(r) => tokio::select! {
                                biased;
                                p = ctx.svc.arriving.clone().acquire_owned() => {
                                    (Source::Arriving(r), p.ok())
                                }
                                s = stored => match s {
                                    Ok(()) => (Source::Stored, None),
                                    Err(_) => {
                                        mark.set(Err("it was not fetched".into()));
                                        return Ok(());
                                    }
                                },
                            },
                        };
                        let below = mark.below();
                        let r = ctx
                            .unpack(
                                (source, compression, &host.host),
                                layer,
                                diff_id,
                                chain,
                                &lowers,
                                below,
                            )
                            .await;
                        mark.set(r.as_ref().map(drop).map_err(|e| e.to_string()));
                        r
                    }
                }),
        );
        // Both run to their end: an unpack is never dropped half-way.
        let (fetched, unpacks) = tokio::join!(fetch_all, unpack_all);
        fetched?;
        // The lowest layer's error first: an upper one may only say that a
        // layer below failed.
        unpacks.into_iter().collect::<Result<Vec<()>, Error>>()?;
        blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        let chain_ids: Vec<String> = chain_ids.iter().map(Digest::to_string).collect();

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
        berth_db::crash::point("pull:unpacked");
        let rec = self.db().add(rec, tag.as_deref(), &digest_name)?;
        berth_db::crash::point("pull:recorded");
        tracing::info!(
            image = %named,
            id = %rec.id,
            size = rec.size,
            ms = started.elapsed().as_millis() as u64,
            "pulled"
        );
        Ok(rec)
    }
}

/// Which of a pull's layers are unpacked, for the layers above that must
/// read them (from blocking threads).
struct LayersDone {
    done: std::sync::Mutex<Vec<Option<Result<(), String>>>>,
    changed: std::sync::Condvar,
}

impl LayersDone {
    fn new(n: usize) -> std::sync::Arc<LayersDone> {
        std::sync::Arc::new(LayersDone {
            done: std::sync::Mutex::new(vec![None; n]),
            changed: std::sync::Condvar::new(),
        })
    }

    /// Blocks until every layer below `i` is unpacked; why not, if one
    /// failed.
    fn below(&self, i: usize) -> Result<(), String> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut all = true;
            for (j, d) in done[..i].iter().enumerate() {
                match d {
                    Some(Err(e)) => return Err(format!("layer {j} below failed: {e}")),
                    Some(Ok(())) => {}
                    None => all = false,
                }
            }
            if all {
                return Ok(());
            }
            done = self.changed.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Layer `i`'s outcome, to be told to the layers above: set once, or set
/// to a failure when dropped unset (so no waiter ever hangs).
struct Mark {
    unpacked: std::sync::Arc<LayersDone>,
    i: usize,
}

impl Mark {
    fn new(unpacked: &std::sync::Arc<LayersDone>, i: usize) -> Mark {
        Mark {
            unpacked: unpacked.clone(),
            i,
        }
    }

    /// What layer `i` waits on before reading the layers below.
    fn below(&self) -> std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync> {
        let (unpacked, i) = (self.unpacked.clone(), self.i);
        std::sync::Arc::new(move || unpacked.below(i))
    }

    fn set(&self, outcome: Result<(), String>) {
        let mut done = self.unpacked.done.lock().unwrap_or_else(|e| e.into_inner());
        if done[self.i].is_none() {
            done[self.i] = Some(outcome);
            self.unpacked.changed.notify_all();
        }
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        self.set(Err("the pull stopped".into()));
    }
}

pub(super) fn user_of(config: &ImageConfig) -> (Option<i64>, String) {
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
