//! RemoveImage, the leases that keep a running container's snapshots, and
//! the garbage collection of what no image or lease references.

use std::collections::HashSet;

use crate::Error;
use crate::db::ImageRecord;
use crate::digest::Digest;
use crate::reference::Reference;

use super::ImageService;

impl ImageService {
    /// Collects garbage now if some is pending and no pull is running;
    /// otherwise leaves it pending for the pull still running.
    ///
    /// Removing snapshot directories can take a while (a large image has
    /// many thousands of files): on tokio's multi-threaded runtime the
    /// removal runs with `block_in_place`, so the worker's other tasks (the
    /// node's other CRI calls) move to another worker meanwhile.
    pub(super) fn collect_garbage_if_pending(&self) {
        use std::sync::atomic::Ordering;
        if !self.gc_pending.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(_exclusive) = self.gc_lock.try_write() {
            self.gc_pending.store(false, Ordering::SeqCst);
            let collect = || self.collect_garbage_now();
            let multi_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let done = if multi_thread {
                tokio::task::block_in_place(collect)
            } else {
                collect()
            };
            if let Err(e) = done {
                tracing::warn!("collecting unused image content: {e}");
            }
        }
    }
}

impl ImageService {
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
                berth_db::crash::point("image_remove:unrecorded");
                self.gc_pending
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.collect_garbage_if_pending();
            }
        }
        Ok(())
    }

    /// Keeps `recs`' snapshots for `holder` (a container) even if the image
    /// is removed: a file under `images/leases/`, so it holds across
    /// restarts. Written before the snapshots are mounted. Garbage is not
    /// collected meanwhile, and an image removed since it was looked up is
    /// `NotFound` (its snapshots may be gone), so a lookup and its lease
    /// are one step as far as the collector can tell.
    pub async fn lease(&self, holder: &str, recs: &[&ImageRecord]) -> Result<(), Error> {
        let _shared = self.gc_lock.read().await;
        for r in recs {
            if self.db().get(&r.id)?.is_none() {
                return Err(Error::NotFound(r.id.clone()));
            }
        }
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
}

impl ImageService {
    /// Removes blobs and snapshots no image references. Callers hold the
    /// gc lock exclusively, or run before serving.
    pub(super) fn collect_garbage_now(&self) -> Result<(), Error> {
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
        if nb > 0 {
            berth_db::crash::point("gc:blobs_removed");
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
}
