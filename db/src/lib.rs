//! berth's metadata database (`<root>/berth.redb`): typed tables over redb.
//!
//! A [`Table<V>`] holds records of type `V` by a string key, each stored as
//! its JSON bytes (`TableDefinition<&str, &[u8]>`); [`Names`] maps strings
//! to keys (`TableDefinition<&str, &str>`). Those are the formats berth has
//! always written, so an existing database opens unchanged.
//!
//! Each method on a `Table` or `Names` taking a [`Database`] is one
//! transaction. Changes that must land together run in [`write()`], through
//! the tables' [`Table::open`] / [`Names::open`]. A [`Cached`] table also
//! holds its records in memory, decoded, so reading one costs no
//! transaction and no JSON.

pub mod crash;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use redb::Database;

/// What the database or the (de)serialisation of a record said. Callers
/// say which database it was ("pod metadata database: ...").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

fn err(e: impl std::fmt::Display) -> Error {
    Error(e.to_string())
}

pub type Result<T> = std::result::Result<T, Error>;

/// Runs `f` in one write transaction and commits it if `f` succeeds;
/// nothing of it is written if `f` fails.
pub fn write<T>(db: &Database, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
    let tx = db.begin_write().map_err(err)?;
    let out = f(&tx)?;
    tx.commit().map_err(err)?;
    Ok(out)
}

type Bytes = TableDefinition<'static, &'static str, &'static [u8]>;

/// Records of type `V` by string key, as JSON.
pub struct Table<V> {
    def: Bytes,
    record: PhantomData<fn() -> V>,
}

impl<V> Table<V> {
    pub const fn new(name: &'static str) -> Table<V> {
        Table {
            def: TableDefinition::new(name),
            record: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Table<V> {
    /// Creates the table if this is a new database.
    pub fn init(&self, db: &Database) -> Result<()> {
        write(db, |tx| self.open(tx).map(drop))
    }

    /// Every record, in key order.
    pub fn all(&self, db: &Database) -> Result<Vec<V>> {
        Ok(self.entries(db)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every record with its key, in key order.
    pub fn entries(&self, db: &Database) -> Result<Vec<(String, V)>> {
        let tx = db.begin_read().map_err(err)?;
        let t = tx.open_table(self.def).map_err(err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            out.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(out)
    }

    pub fn get(&self, db: &Database, key: &str) -> Result<Option<V>> {
        let tx = db.begin_read().map_err(err)?;
        let t = tx.open_table(self.def).map_err(err)?;
        t.get(key)
            .map_err(err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// The record whose key is `prefix`, else the one record whose key
    /// starts with `prefix`. None for an empty prefix, and for a prefix of
    /// several keys none of which it equals (ambiguous).
    pub fn find(&self, db: &Database, prefix: &str) -> Result<Option<V>> {
        if prefix.is_empty() {
            return Ok(None);
        }
        let tx = db.begin_read().map_err(err)?;
        let t = tx.open_table(self.def).map_err(err)?;
        // Keys in order: an exact match comes first, a second key with the
        // prefix makes it ambiguous.
        let mut rows = t.range::<&str>(prefix..).map_err(err)?;
        let Some(first) = rows.next() else {
            return Ok(None);
        };
        let (k, v) = first.map_err(err)?;
        if !k.value().starts_with(prefix) {
            return Ok(None);
        }
        if k.value() != prefix
            && let Some(second) = rows.next()
            && second.map_err(err)?.0.value().starts_with(prefix)
        {
            return Ok(None);
        }
        decode(v.value()).map(Some)
    }

    /// Writes `rec` under `key`, replacing what was there.
    pub fn put(&self, db: &Database, key: &str, rec: &V) -> Result<()> {
        write(db, |tx| self.open(tx)?.put(key, rec))
    }

    /// Removes `key`'s record, if any.
    pub fn delete(&self, db: &Database, key: &str) -> Result<()> {
        write(db, |tx| self.open(tx)?.delete(key).map(drop))
    }

    /// The table inside a write transaction of [`write()`].
    pub fn open<'tx>(&self, tx: &'tx WriteTransaction) -> Result<Open<'tx, V>> {
        Ok(Open {
            t: tx.open_table(self.def).map_err(err)?,
            record: PhantomData,
        })
    }
}

/// A [`Table`] open in a write transaction.
pub struct Open<'tx, V> {
    t: redb::Table<'tx, &'static str, &'static [u8]>,
    record: PhantomData<fn() -> V>,
}

impl<V: Serialize + DeserializeOwned> Open<'_, V> {
    pub fn get(&self, key: &str) -> Result<Option<V>> {
        self.t
            .get(key)
            .map_err(err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    pub fn put(&mut self, key: &str, rec: &V) -> Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(err)?;
        self.t.insert(key, bytes.as_slice()).map_err(err)?;
        Ok(())
    }

    /// Removes `key`'s record; whether there was one.
    pub fn delete(&mut self, key: &str) -> Result<bool> {
        Ok(self.t.remove(key).map_err(err)?.is_some())
    }
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V> {
    serde_json::from_slice(bytes).map_err(err)
}

type Strs = TableDefinition<'static, &'static str, &'static str>;

/// Names pointing at keys of a [`Table`] (e.g. an image's tags at its id).
pub struct Names {
    def: Strs,
}

impl Names {
    pub const fn new(name: &'static str) -> Names {
        Names {
            def: TableDefinition::new(name),
        }
    }

    /// Creates the table if this is a new database.
    pub fn init(&self, db: &Database) -> Result<()> {
        write(db, |tx| self.open(tx).map(drop))
    }

    /// The key `name` points at.
    pub fn get(&self, db: &Database, name: &str) -> Result<Option<String>> {
        let tx = db.begin_read().map_err(err)?;
        let t = tx.open_table(self.def).map_err(err)?;
        Ok(t.get(name).map_err(err)?.map(|v| v.value().to_string()))
    }

    /// The table inside a write transaction of [`write()`].
    pub fn open<'tx>(&self, tx: &'tx WriteTransaction) -> Result<OpenNames<'tx>> {
        Ok(OpenNames {
            t: tx.open_table(self.def).map_err(err)?,
        })
    }
}

/// [`Names`] open in a write transaction.
pub struct OpenNames<'tx> {
    t: redb::Table<'tx, &'static str, &'static str>,
}

impl OpenNames<'_> {
    /// Points `name` at `key`; the key it pointed at before, if any.
    pub fn put(&mut self, name: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .t
            .insert(name, key)
            .map_err(err)?
            .map(|v| v.value().to_string()))
    }

    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.t.remove(name).map_err(err)?;
        Ok(())
    }

    /// Removes every name pointing at `key`.
    pub fn delete_all_of(&mut self, key: &str) -> Result<()> {
        self.t.retain(|_, v| v != key).map_err(err)
    }
}

/// A [`Table`] whose records are also held in memory, decoded, for a
/// database only this process writes: every write goes through here, to
/// the database first, then to memory; reads only take a read lock.
/// Writes are serialised among themselves, so memory and the database
/// always agree on the last write of a key. Records may also be grouped
/// by a key of their own ([`Cached::open_grouped`]; containers by pod),
/// so that a group's records are found without a scan.
pub struct Cached<V> {
    table: Table<V>,
    db: Arc<Database>,
    records: RwLock<Records<V>>,
    group: Option<fn(&V) -> String>,
    writing: Mutex<()>,
}

/// The records by key, and the keys of each group.
struct Records<V> {
    by_key: BTreeMap<String, Arc<V>>,
    groups: HashMap<String, BTreeSet<String>>,
}

impl<V: Serialize + DeserializeOwned + Clone> Cached<V> {
    /// Creates the table if this is a new database, and reads it whole.
    pub fn open(db: Arc<Database>, table: Table<V>) -> Result<Cached<V>> {
        Self::open_with(db, table, None)
    }

    /// As [`Cached::open`], with the records grouped by `group` (see
    /// [`Cached::of_group`]). A record's group must not change.
    pub fn open_grouped(
        db: Arc<Database>,
        table: Table<V>,
        group: fn(&V) -> String,
    ) -> Result<Cached<V>> {
        Self::open_with(db, table, Some(group))
    }

    fn open_with(
        db: Arc<Database>,
        table: Table<V>,
        group: Option<fn(&V) -> String>,
    ) -> Result<Cached<V>> {
        table.init(&db)?;
        let mut records = Records {
            by_key: BTreeMap::new(),
            groups: HashMap::new(),
        };
        for (k, v) in table.entries(&db)? {
            records.insert(group, k, Arc::new(v));
        }
        Ok(Cached {
            table,
            db,
            records: RwLock::new(records),
            group,
            writing: Mutex::new(()),
        })
    }

    fn records(&self) -> std::sync::RwLockReadGuard<'_, Records<V>> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Records<V>)) {
        f(&mut self.records.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// The records of group `g`, in key order (none when the records are
    /// not grouped).
    pub fn of_group(&self, g: &str) -> Vec<Arc<V>> {
        let records = self.records();
        records
            .groups
            .get(g)
            .into_iter()
            .flatten()
            .filter_map(|k| records.by_key.get(k).cloned())
            .collect()
    }

    /// The database it reads and writes.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Every record, in key order; shared, not copied.
    pub fn all(&self) -> Vec<Arc<V>> {
        self.records().by_key.values().cloned().collect()
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.records().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records().by_key.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        self.records().by_key.get(key).cloned()
    }

    /// The first record, in key order, that `pred` accepts.
    pub fn find_by(&self, pred: impl Fn(&V) -> bool) -> Option<Arc<V>> {
        self.records().by_key.values().find(|v| pred(v)).cloned()
    }

    /// As [`Table::find`]: the record whose key is `prefix`, else the one
    /// record whose key starts with it.
    pub fn find(&self, prefix: &str) -> Option<Arc<V>> {
        if prefix.is_empty() {
            return None;
        }
        let records = self.records();
        let mut rows = records.by_key.range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ));
        let (k, v) = rows.next()?;
        if !k.starts_with(prefix) {
            return None;
        }
        if k != prefix && rows.next().is_some_and(|(k2, _)| k2.starts_with(prefix)) {
            return None;
        }
        Some(v.clone())
    }

    /// Writes `rec` under `key`, replacing what was there.
    pub fn put(&self, key: &str, rec: &V) -> Result<()> {
        let _turn = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.table.put(&self.db, key, rec)?;
        let rec = Arc::new(rec.clone());
        self.update(|m| m.insert(self.group, key.to_string(), rec));
        Ok(())
    }

    /// Removes `key`'s record, if any.
    pub fn delete(&self, key: &str) -> Result<()> {
        let _turn = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.table.delete(&self.db, key)?;
        self.update(|m| m.remove(self.group, key));
        Ok(())
    }
}

impl<V> Records<V> {
    fn insert(&mut self, group: Option<fn(&V) -> String>, key: String, rec: Arc<V>) {
        if let Some(g) = group {
            self.groups.entry(g(&rec)).or_default().insert(key.clone());
        }
        if let Some(old) = self.by_key.insert(key.clone(), rec) {
            self.ungroup(group, &key, &old, true);
        }
    }

    fn remove(&mut self, group: Option<fn(&V) -> String>, key: &str) {
        if let Some(old) = self.by_key.remove(key) {
            self.ungroup(group, key, &old, false);
        }
    }

    /// Drops `key` from the group of `old`, its record that was; unless
    /// `replaced` by one in the same group.
    fn ungroup(&mut self, group: Option<fn(&V) -> String>, key: &str, old: &V, replaced: bool) {
        let Some(g) = group else { return };
        let was = g(old);
        if replaced && self.by_key.get(key).is_some_and(|new| g(new) == was) {
            return;
        }
        if let Some(keys) = self.groups.get_mut(&was) {
            keys.remove(key);
            if keys.is_empty() {
                self.groups.remove(&was);
            }
        }
    }
}

#[cfg(test)]
mod tests;
