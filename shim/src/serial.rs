//! Per-object serialisation instead of one node-wide lock: calls on one
//! pod take turns, calls on different pods run side by side (each may
//! wait minutes on CNI plugins or a monitor). A pod name being made is
//! reserved, so two RunPodSandbox calls of one name cannot both make it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

type Slot = Arc<tokio::sync::Mutex<()>>;

/// One async lock per key, made on first use and dropped when no call
/// holds or waits for it.
#[derive(Default)]
pub struct Locks {
    map: Mutex<HashMap<String, Slot>>,
}

pub struct Held<'a> {
    locks: &'a Locks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Locks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for `key`'s turn.
    pub async fn lock(&self, key: &str) -> Held<'_> {
        let slot = self.map().entry(key.to_string()).or_default().clone();
        let guard = slot.lock_owned().await;
        Held {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// How many keys have a lock now (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        // The map's reference and this guard's: nobody else waits. (A new
        // waiter clones the slot under the map's lock, so this cannot
        // race with one.)
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 2)
        {
            map.remove(&self.key);
        }
        drop(map);
        self.guard.take();
    }
}

/// Names being made right now.
#[derive(Default)]
pub struct Names {
    set: Arc<Mutex<HashSet<String>>>,
}

/// A reserved name, released when dropped. It owns its share of the set,
/// so the blocking work that makes the object can hold it to the end
/// even when the call that started it is gone (a client's deadline).
pub struct Reserved {
    set: Arc<Mutex<HashSet<String>>>,
    name: String,
}

fn set(s: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Names {
    /// Reserves `name`, or None if another call has it now.
    pub fn reserve(&self, name: &str) -> Option<Reserved> {
        set(&self.set).insert(name.to_string()).then(|| Reserved {
            set: self.set.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        set(&self.set).remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn one_key_takes_turns_other_keys_do_not_wait_and_idle_locks_go() {
        let locks = Locks::default();
        let a = locks.lock("a").await;
        // Another key is not held up by "a".
        let b = locks.lock("b").await;
        // "a" again waits until the first holder is done.
        let second = locks.lock("a");
        tokio::pin!(second);
        assert!(second.as_mut().now_or_never().is_none());
        drop(a);
        let a2 = second.await;
        assert_eq!(locks.len(), 2);
        drop(a2);
        drop(b);
        assert_eq!(locks.len(), 0, "idle locks are dropped");
    }

    #[test]
    fn a_reserved_name_is_refused_until_released() {
        let names = Names::default();
        let r = names.reserve("web_default_u1_0").unwrap();
        assert!(names.reserve("web_default_u1_0").is_none());
        assert!(names.reserve("web_default_u1_1").is_some());
        drop(r);
        assert!(names.reserve("web_default_u1_0").is_some());
    }
}
