//! The image service proper: pull, look up, list, remove, garbage-collect,
//! usage. berthd's CRI layer (`shim/src/cri/image/`) converts its types.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_db::Database;

use crate::Error;
use crate::db::{ImageDb, ImageRecord};
use crate::digest::Digest;
use crate::limits::Limits;
use crate::manifest::{self, ImageConfig, Platform};
use crate::reference::Reference;
use crate::registry::Registry;
use crate::store::Store;

mod fetch;
mod pull;
mod remove;
#[cfg(test)]
mod tests;
mod usage;

pub use usage::Usage;

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
    /// Normalised patterns; replaced whole on a config reload.
    pinned: std::sync::RwLock<Vec<String>>,
    platform: Platform,
    limits: Limits,
    /// Pulls hold it shared; garbage collection exclusively, so it never
    /// deletes what a pull in flight has just written.
    gc_lock: tokio::sync::RwLock<()>,
    /// Content became garbage while pulls ran: the last pull to finish
    /// collects it, so RemoveImage never waits for a pull.
    gc_pending: std::sync::atomic::AtomicBool,
    snapshots_usage: usage::Snapshots,
    /// Places for layers unpacked while they download: each keeps a
    /// blocking thread for as long as its download lasts, which a registry
    /// decides; a layer without a place is unpacked once stored.
    arriving: Arc<tokio::sync::Semaphore>,
}

/// How many layers berthd unpacks while they download, at once: twice the
/// cores (the unpacks are bound by the CPU), at least 8. A layer without a
/// place is unpacked once its blob is stored, alone at the pull's end if
/// it is the last to arrive (50-80 ms of one core for a 20 MB layer in the
/// pull benchmark); a place taken by a download that lasts costs a thread
/// waiting, no CPU.
fn arriving_unpacks() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .saturating_mul(2)
        .max(8)
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
            pinned: std::sync::RwLock::new(
                settings
                    .pinned
                    .iter()
                    .map(|p| normalize_pattern(p))
                    .collect(),
            ),
            platform: manifest::host_platform(),
            limits: settings.limits,
            gc_lock: tokio::sync::RwLock::new(()),
            gc_pending: std::sync::atomic::AtomicBool::new(false),
            snapshots_usage: Default::default(),
            arriving: Arc::new(tokio::sync::Semaphore::new(arriving_unpacks())),
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
        let pinned = self.pinned.read().unwrap_or_else(|e| e.into_inner());
        rec.repo_tags
            .iter()
            .chain(&rec.repo_digests)
            .chain(std::iter::once(&rec.id))
            .any(|name| pinned.iter().any(|p| glob_match(p, name)))
    }

    /// Replaces the pinned patterns (`pinned_images`, on a config reload).
    pub fn set_pinned(&self, patterns: &[String]) {
        let new = patterns.iter().map(|p| normalize_pattern(p)).collect();
        *self.pinned.write().unwrap_or_else(|e| e.into_inner()) = new;
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

    /// Bytes and inodes used by the image store, and its mountpoint
    /// (finished snapshots measured once: see `usage.rs`).
    pub fn usage(&self) -> Result<Usage, Error> {
        Ok(self.snapshots_usage.usage(self.store.root())?)
    }
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
