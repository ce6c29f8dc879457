//! Image records in the metadata database (redb): one table of records by
//! image id, one of names (repo tags and repo digests) pointing at ids. A
//! pull's record and names are committed in one transaction.

use std::collections::BTreeSet;

use berth_db::{Database, Names, Table};
use serde::{Deserialize, Serialize};

const IMAGES: Table<ImageRecord> = Table::new("images");
const NAMES: Names = Names::new("image_names");

/// One image: immutable content named by its config digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The config digest.
    pub id: String,
    /// `docker.io/library/busybox:latest`, sorted.
    pub repo_tags: BTreeSet<String>,
    /// `docker.io/library/busybox@sha256:...`, sorted.
    pub repo_digests: BTreeSet<String>,
    /// The platform manifest's digest.
    pub manifest: String,
    /// Every blob the image holds: index/manifests, config, layers.
    pub blobs: Vec<String>,
    /// Layer snapshots, bottom first.
    pub chain_ids: Vec<String>,
    /// Manifest + config + compressed layers, in bytes (as containerd counts).
    pub size: u64,
    /// From the config's User: a uid, or a user name.
    pub uid: Option<i64>,
    pub username: String,
    /// Unix nanoseconds of the pull that created it.
    pub created_ns: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("image metadata database: {0}")]
pub struct DbError(#[from] berth_db::Error);

pub struct ImageDb<'a> {
    db: &'a Database,
}

impl<'a> ImageDb<'a> {
    pub fn new(db: &'a Database) -> ImageDb<'a> {
        ImageDb { db }
    }

    /// Creates the tables if this is a new database.
    pub fn init(&self) -> Result<(), DbError> {
        IMAGES.init(self.db)?;
        Ok(NAMES.init(self.db)?)
    }

    pub fn all(&self) -> Result<Vec<ImageRecord>, DbError> {
        Ok(IMAGES.all(self.db)?)
    }

    pub fn get(&self, id: &str) -> Result<Option<ImageRecord>, DbError> {
        Ok(IMAGES.get(self.db, id)?)
    }

    /// The image id a repo tag or repo digest names.
    pub fn by_name(&self, name: &str) -> Result<Option<String>, DbError> {
        Ok(NAMES.get(self.db, name)?)
    }

    /// Records a pulled image under `names` (a tag and/or a repo digest).
    /// A name that pointed at another image moves here; that image keeps
    /// its other names. Returns the merged record.
    pub fn add(
        &self,
        mut rec: ImageRecord,
        tag: Option<&str>,
        digest_name: &str,
    ) -> Result<ImageRecord, DbError> {
        Ok(berth_db::write(self.db, |tx| {
            let mut images = IMAGES.open(tx)?;
            let mut names = NAMES.open(tx)?;
            if let Some(old) = images.get(&rec.id)? {
                rec.repo_tags.extend(old.repo_tags);
                rec.repo_digests.extend(old.repo_digests);
                rec.created_ns = old.created_ns;
                // Reached again through another manifest or index: it keeps
                // the ones it was reached by before, which its repo digests name.
                for b in old.blobs {
                    if !rec.blobs.contains(&b) {
                        rec.blobs.push(b);
                    }
                }
            }
            let mut new_names: Vec<&str> = vec![digest_name];
            new_names.extend(tag);
            for name in new_names {
                let previous = names.put(name, &rec.id)?;
                if let Some(prev) = previous.filter(|p| *p != rec.id) {
                    // Take the name off the image it used to name.
                    if let Some(mut old) = images.get(&prev)? {
                        old.repo_tags.remove(name);
                        old.repo_digests.remove(name);
                        images.put(&prev, &old)?;
                    }
                }
            }
            if let Some(t) = tag {
                rec.repo_tags.insert(t.to_string());
            }
            rec.repo_digests.insert(digest_name.to_string());
            images.put(&rec.id, &rec)?;
            Ok(rec)
        })?)
    }

    /// Removes one tag from an image, keeping the image.
    pub fn untag(&self, id: &str, tag: &str) -> Result<(), DbError> {
        Ok(berth_db::write(self.db, |tx| {
            let mut images = IMAGES.open(tx)?;
            if let Some(mut rec) = images.get(id)? {
                rec.repo_tags.remove(tag);
                images.put(id, &rec)?;
            }
            NAMES.open(tx)?.delete(tag)
        })?)
    }

    /// Removes an image and every name pointing at it.
    pub fn remove(&self, id: &str) -> Result<(), DbError> {
        Ok(berth_db::write(self.db, |tx| {
            IMAGES.open(tx)?.delete(id)?;
            NAMES.open(tx)?.delete_all_of(id)
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: BTreeSet::new(),
            repo_digests: BTreeSet::new(),
            manifest: "m".into(),
            blobs: vec![],
            chain_ids: vec![],
            size: 1,
            uid: None,
            username: String::new(),
            created_ns: 1,
        }
    }

    #[test]
    fn a_moved_tag_leaves_the_old_image_its_digest() {
        let path = std::env::temp_dir().join(format!("berth-db-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let db = Database::create(&path).unwrap();
        let db = ImageDb::new(&db);
        db.init().unwrap();
        db.add(rec("sha256:a"), Some("r:latest"), "r@sha256:ma")
            .unwrap();
        let b = db
            .add(rec("sha256:b"), Some("r:latest"), "r@sha256:mb")
            .unwrap();
        assert_eq!(b.repo_tags.iter().collect::<Vec<_>>(), ["r:latest"]);
        let a = db.get("sha256:a").unwrap().unwrap();
        assert!(a.repo_tags.is_empty());
        assert_eq!(a.repo_digests.iter().collect::<Vec<_>>(), ["r@sha256:ma"]);
        assert_eq!(db.by_name("r:latest").unwrap().as_deref(), Some("sha256:b"));

        // A second tag on b, then untag one: b stays with the other.
        db.add(rec("sha256:b"), Some("r:v2"), "r@sha256:mb")
            .unwrap();
        db.untag("sha256:b", "r:latest").unwrap();
        let b = db.get("sha256:b").unwrap().unwrap();
        assert_eq!(b.repo_tags.iter().collect::<Vec<_>>(), ["r:v2"]);
        assert_eq!(db.by_name("r:latest").unwrap(), None);

        db.remove("sha256:b").unwrap();
        assert_eq!(db.get("sha256:b").unwrap(), None);
        assert_eq!(db.by_name("r:v2").unwrap(), None);
        assert_eq!(db.by_name("r@sha256:mb").unwrap(), None);
        assert_eq!(db.all().unwrap().len(), 1);
        std::fs::remove_file(path).unwrap();
    }
}
