//! The typed tables on a temporary database file.

use std::path::PathBuf;

use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    id: String,
    n: u32,
}

fn rec(id: &str, n: u32) -> Rec {
    Rec { id: id.into(), n }
}

const RECS: Table<Rec> = Table::new("recs");
const NAMES: Names = Names::new("rec_names");

/// A fresh database file, removed when dropped.
struct TempDb {
    path: PathBuf,
    db: Option<Database>,
}

impl TempDb {
    fn new(name: &str) -> TempDb {
        let path =
            std::env::temp_dir().join(format!("berth-db-test-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let db = Database::create(&path).expect("create");
        TempDb { path, db: Some(db) }
    }
    fn db(&self) -> &Database {
        self.db.as_ref().expect("open")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.db = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn put_get_all_delete() {
    let t = TempDb::new("crud");
    let db = t.db();
    RECS.init(db).expect("init");
    assert!(RECS.all(db).expect("all").is_empty());
    RECS.put(db, "b", &rec("b", 2)).expect("put");
    RECS.put(db, "a", &rec("a", 1)).expect("put");
    RECS.put(db, "b", &rec("b", 3)).expect("replace");
    assert_eq!(RECS.get(db, "b").expect("get"), Some(rec("b", 3)));
    assert_eq!(RECS.get(db, "c").expect("get"), None);
    assert_eq!(RECS.all(db).expect("all"), [rec("a", 1), rec("b", 3)]);
    RECS.delete(db, "a").expect("delete");
    RECS.delete(db, "a").expect("deleting nothing is no error");
    assert_eq!(RECS.all(db).expect("all"), [rec("b", 3)]);
}

#[test]
fn find_by_exact_key_or_unique_prefix() {
    let t = TempDb::new("find");
    let db = t.db();
    RECS.init(db).expect("init");
    for id in ["abc", "abd", "b", "bcd"] {
        RECS.put(db, id, &rec(id, 0)).expect("put");
    }
    let found = |p: &str| RECS.find(db, p).expect("find").map(|r| r.id);
    assert_eq!(found("abc").as_deref(), Some("abc"));
    assert_eq!(found("abd").as_deref(), Some("abd"));
    assert_eq!(found("ab"), None, "ambiguous");
    assert_eq!(found("a"), None, "ambiguous");
    assert_eq!(
        found("b").as_deref(),
        Some("b"),
        "exact beats the prefix of bcd"
    );
    assert_eq!(found("bc").as_deref(), Some("bcd"));
    assert_eq!(found("c"), None);
    assert_eq!(found("zzz"), None, "past the last key");
    assert_eq!(found(""), None);
}

#[test]
fn a_failed_write_changes_nothing() {
    let t = TempDb::new("atomic");
    let db = t.db();
    RECS.init(db).expect("init");
    NAMES.init(db).expect("init");
    let r: Result<()> = write(db, |tx| {
        RECS.open(tx)?.put("a", &rec("a", 1))?;
        NAMES.open(tx)?.put("name", "a")?;
        Err(Error("stop".into()))
    });
    assert!(r.is_err());
    assert!(RECS.all(db).expect("all").is_empty());
    assert_eq!(NAMES.get(db, "name").expect("get"), None);
}

#[test]
fn names_point_at_keys() {
    let t = TempDb::new("names");
    let db = t.db();
    NAMES.init(db).expect("init");
    let prev = write(db, |tx| {
        let mut n = NAMES.open(tx)?;
        assert_eq!(n.put("x:1", "a")?, None);
        n.put("x:2", "a")?;
        n.put("y", "b")?;
        n.put("x:1", "b")
    })
    .expect("write");
    assert_eq!(prev.as_deref(), Some("a"));
    assert_eq!(NAMES.get(db, "x:1").expect("get").as_deref(), Some("b"));
    write(db, |tx| NAMES.open(tx)?.delete_all_of("b")).expect("write");
    assert_eq!(NAMES.get(db, "x:1").expect("get"), None);
    assert_eq!(NAMES.get(db, "y").expect("get"), None);
    assert_eq!(NAMES.get(db, "x:2").expect("get").as_deref(), Some("a"));
    write(db, |tx| NAMES.open(tx)?.delete("x:2")).expect("write");
    assert_eq!(NAMES.get(db, "x:2").expect("get"), None);
}

/// The format berth wrote before these tables existed (raw redb tables of
/// JSON bytes and of strings) reads back, and what they write reads the
/// old way: an existing berth.redb opens unchanged.
#[test]
fn the_on_disk_format_is_the_old_one() {
    const OLD: TableDefinition<&str, &[u8]> = TableDefinition::new("recs");
    const OLD_NAMES: TableDefinition<&str, &str> = TableDefinition::new("rec_names");
    let t = TempDb::new("format");
    let db = t.db();
    let tx = db.begin_write().expect("tx");
    {
        let mut old = tx.open_table(OLD).expect("table");
        let bytes = serde_json::to_vec(&rec("old", 7)).expect("json");
        old.insert("old", bytes.as_slice()).expect("insert");
        let mut names = tx.open_table(OLD_NAMES).expect("table");
        names.insert("n", "old").expect("insert");
    }
    tx.commit().expect("commit");

    assert_eq!(RECS.get(db, "old").expect("get"), Some(rec("old", 7)));
    assert_eq!(NAMES.get(db, "n").expect("get").as_deref(), Some("old"));
    RECS.put(db, "new", &rec("new", 8)).expect("put");

    let tx = db.begin_read().expect("tx");
    let old = tx.open_table(OLD).expect("table");
    let v = old.get("new").expect("get").expect("written");
    assert_eq!(v.value(), br#"{"id":"new","n":8}"#);
}

/// A fresh database file at the returned path (removed by the caller), to
/// be shared by several tables.
fn shared_db(name: &str) -> (PathBuf, Arc<Database>) {
    let path =
        std::env::temp_dir().join(format!("berth-db-test-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = Arc::new(Database::create(&path).expect("create"));
    (path, db)
}

/// A cached table reads what the database held, finds as `Table::find`
/// does, and writes through: a second one opened on the same database
/// reads what the first wrote.
#[test]
fn a_cached_table_agrees_with_the_database() {
    let (path, db) = shared_db("cached");
    RECS.init(&db).expect("init");
    RECS.put(&db, "abc", &rec("abc", 1)).expect("put");
    let cached = Cached::open(db.clone(), RECS).expect("open");
    assert_eq!(cached.get("abc").as_deref(), Some(&rec("abc", 1)));
    for id in ["abd", "b", "bcd"] {
        cached.put(id, &rec(id, 0)).expect("put");
    }
    cached.put("abc", &rec("abc", 2)).expect("replace");
    let found = |p: &str| cached.find(p).map(|r| r.id.clone());
    for p in ["abc", "abd", "ab", "a", "b", "bc", "c", "zzz", ""] {
        assert_eq!(
            found(p),
            RECS.find(&db, p).expect("find").map(|r| r.id),
            "prefix {p:?}"
        );
    }
    cached.delete("b").expect("delete");
    assert_eq!(found("b").as_deref(), Some("bcd"), "b gone, bcd unique");
    assert_eq!(
        cached
            .find_by(|r| r.n == 2)
            .map(|r| r.id.clone())
            .as_deref(),
        Some("abc")
    );
    let on_disk: Vec<Rec> = RECS.all(&db).expect("all");
    let in_memory: Vec<Rec> = cached.all().iter().map(|r| (**r).clone()).collect();
    assert_eq!(on_disk, in_memory);
    let again = Cached::open(db.clone(), RECS).expect("reopen");
    assert_eq!(again.len(), 3);
    drop((cached, again, db));
    let _ = std::fs::remove_file(&path);
}

/// A grouped table finds each group's records without a scan, and keeps
/// the groups right through puts, replacements (also into another group),
/// deletes and a reopen; an ungrouped one has no groups.
#[test]
fn a_grouped_table_keeps_its_groups() {
    let (path, db) = shared_db("grouped");
    // Grouped by n.
    let by_n = |r: &Rec| r.n.to_string();
    let g = Cached::open_grouped(db.clone(), RECS, by_n).expect("open");
    for (id, n) in [("a", 1), ("b", 2), ("c", 1), ("d", 1)] {
        g.put(id, &rec(id, n)).expect("put");
    }
    let ids = |g: &Cached<Rec>, n: &str| -> Vec<String> {
        g.of_group(n).iter().map(|r| r.id.clone()).collect()
    };
    assert_eq!(ids(&g, "1"), ["a", "c", "d"]);
    assert_eq!(ids(&g, "2"), ["b"]);
    g.put("c", &rec("c", 1)).expect("replace, same group");
    g.put("a", &rec("a", 2)).expect("replace, other group");
    g.delete("d").expect("delete");
    g.delete("nothing").expect("delete of nothing");
    assert_eq!(ids(&g, "1"), ["c"]);
    assert_eq!(ids(&g, "2"), ["a", "b"]);
    assert!(ids(&g, "3").is_empty());
    let again = Cached::open_grouped(db.clone(), RECS, by_n).expect("reopen");
    for n in ["1", "2", "3"] {
        assert_eq!(ids(&again, n), ids(&g, n), "group {n}");
        let scan: Vec<String> = g
            .all()
            .iter()
            .filter(|r| r.n.to_string() == n)
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(ids(&g, n), scan, "group {n} against a scan");
    }
    g.delete("c").expect("delete");
    assert!(!g.records().groups.contains_key("1"), "an empty group goes");
    let plain = Cached::open(db.clone(), RECS).expect("open");
    assert!(plain.of_group("2").is_empty());
    drop((g, again, plain, db));
    let _ = std::fs::remove_file(&path);
}
