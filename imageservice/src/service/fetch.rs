//! One pull's context: fetching a blob into the store under the size
//! limits and the registry's answers, and unpacking a layer into its
//! snapshot; the errors that name the image and the object.

use std::path::PathBuf;

use crate::Error;
use crate::digest::Digest;
use crate::hosts::RegistryHost;
use crate::limits::Exceeded;
use crate::manifest::Descriptor;
use crate::registry::Credentials;
use crate::store::IngestError;
use crate::unpack::{self, Compression};

use super::ImageService;

/// Where a layer's unpack reads its blob from.
pub(super) enum Source {
    /// The store, where it is complete and verified.
    Stored,
    /// The download, as it arrives ([`crate::store::BlobWriter::follow`]).
    Arriving(crate::store::BlobReader),
}

pub(super) struct PullCtx<'a> {
    pub(super) svc: &'a ImageService,
    pub(super) hosts: &'a [RegistryHost],
    pub(super) image: String,
    pub(super) repo: String,
    pub(super) ns: String,
    pub(super) creds: &'a Credentials,
}

impl PullCtx<'_> {
    pub(super) fn invalid(&self, reason: String) -> Error {
        Error::Invalid {
            image: self.image.clone(),
            reason,
        }
    }

    pub(super) fn corrupt(&self, source: IngestError) -> Error {
        match source {
            IngestError::Limit { digest, source } => self.limit(format!("blob {digest}"), source),
            source => Error::Corrupt {
                image: self.image.clone(),
                source,
            },
        }
    }

    pub(super) fn limit(&self, object: String, source: Exceeded) -> Error {
        Error::Limit {
            image: self.image.clone(),
            object,
            source,
        }
    }

    /// Refuses a manifest or index of `size` bytes over `max_manifest_size`.
    pub(super) fn check_manifest_size(&self, digest: &Digest, size: u64) -> Result<(), Error> {
        let max = self.svc.limits.max_manifest_size;
        if size <= max {
            return Ok(());
        }
        Err(self.limit(
            format!("manifest {digest}"),
            Exceeded::bytes(&format!("{size} bytes is"), "max_manifest_size", max),
        ))
    }

    pub(super) fn digest(&self, s: &str) -> Result<Digest, Error> {
        Digest::parse(s).map_err(|e| self.invalid(e.to_string()))
    }

    /// Downloads a blob into the store unless it is there; one download
    /// per digest and host however many pulls want it. Pulls of the same
    /// digest from another host do not wait for this one (a stalled
    /// registry must not hold up the others): each writes its own temp
    /// file, and committing a verified blob that is already there again
    /// is harmless.
    pub(super) async fn fetch_blob(
        &self,
        host: &RegistryHost,
        desc: &Descriptor,
    ) -> Result<(), Error> {
        self.fetch_blob_followed(host, desc, None).await
    }

    /// [`PullCtx::fetch_blob`], telling `follow` how to read the blob as
    /// soon as it can be read: a reader of the download once it begins, or
    /// the stored blob if it was there (nothing told if the fetch fails
    /// before either).
    pub(super) async fn fetch_blob_followed(
        &self,
        host: &RegistryHost,
        desc: &Descriptor,
        mut follow: Option<tokio::sync::oneshot::Sender<Source>>,
    ) -> Result<(), Error> {
        let r = self.fetch_blob_into(host, desc, &mut follow).await;
        if let (Some(f), Ok(())) = (follow, &r) {
            let _ = f.send(Source::Stored);
        }
        r
    }

    #[tracing::instrument(name = "fetch_blob", level = "debug", skip_all, fields(blob = %desc.digest, host = %host.host))]
    async fn fetch_blob_into(
        &self,
        host: &RegistryHost,
        desc: &Descriptor,
        follow: &mut Option<tokio::sync::oneshot::Sender<Source>>,
    ) -> Result<(), Error> {
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
        if let Some(f) = follow.take() {
            // Without a reader the layer is unpacked once stored.
            match w.follow() {
                Ok(r) => {
                    let _ = f.send(Source::Arriving(r));
                }
                Err(_) => *follow = Some(f),
            }
        }
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
    #[tracing::instrument(level = "debug", skip_all, fields(layer = %layer.digest))]
    pub(super) async fn unpack(
        &self,
        (source, compression, host): (Source, Compression, &str),
        layer: &Descriptor,
        diff_id: &Digest,
        chain: &Digest,
        lower_chain_ids: &[String],
        lowers_ready: std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    ) -> Result<(), Error> {
        let store = &self.svc.store;
        if store.has_snapshot(chain) {
            return Ok(());
        }
        // One unpack of a layer at a time per host: the pulls from that
        // host wait for it and find the snapshot made. A host's unpack
        // never waits for another host's (that registry may trickle the
        // blob for as long as it is let), and one reading a download never
        // waits at all: those go ahead side by side, and the first to
        // commit wins.
        let key = format!("unpack {chain} from {host}");
        let guard = match source {
            Source::Stored => Some(store.lock(&key).await),
            Source::Arriving(_) => store.try_lock(&key),
        };
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
        let started = std::time::Instant::now();
        tracing::debug!(image = %self.image, blob = %layer.digest, "unpacking");
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
            // Read to the blob's verified end, or failed: what is unpacked
            // from a blob that turns out wrong is never kept.
            let mut arriving = match source {
                Source::Stored => None,
                Source::Arriving(r) => Some(r),
            };
            unpack::unpack_layer_over(
                &blob,
                arriving.as_mut().map(|r| r as &mut dyn std::io::Read),
                compression,
                &dest,
                &lowers,
                &*lowers_ready,
                &limits,
            )
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
                let ours = store.commit_snapshot(&tmp, chain)?;
                drop(guard);
                tracing::debug!(
                    image = %self.image,
                    blob = %layer.digest,
                    ms = started.elapsed().as_millis() as u64,
                    "{}",
                    if ours {
                        "layer unpacked"
                    } else {
                        "layer unpacked by another pull first"
                    }
                );
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                tracing::debug!(image = %self.image, blob = %layer.digest, "layer not unpacked: {e}");
                Err(e)
            }
        }
    }
}
