//! Per-object serialisation instead of one node-wide lock: calls on one
//! pod take turns, calls on different pods run side by side (each may
//! wait minutes on CNI plugins or a monitor). Calls making a pod of one
//! name take turns too, so a retried RunPodSandbox finds the pod the
//! first call made rather than making a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

type Slot = Arc<tokio::sync::Mutex<()>>;
type Map = Arc<Mutex<HashMap<String, Slot>>>;

/// One async lock per key, made on first use and dropped when no call
/// holds or waits for it.
#[derive(Default)]
pub struct Locks {
    map: Map,
}

/// A key's turn, until dropped. It owns its share of the locks, so the
/// blocking work that makes an object can hold the turn to the end even
/// when the call that started it is gone (a client's deadline).
pub struct Held {
    map: Map,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

fn map(m: &Mutex<HashMap<String, Slot>>) -> MutexGuard<'_, HashMap<String, Slot>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Locks {
    /// Waits for `key`'s turn.
    pub async fn lock(&self, key: &str) -> Held {
        let slot = map(&self.map).entry(key.to_string()).or_default().clone();
        let guard = slot.lock_owned().await;
        Held {
            map: self.map.clone(),
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// How many keys have a lock now (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        map(&self.map).len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = map(&self.map);
        // The map's reference and this guard's: nobody else waits. (A new
        // waiter clones the slot under the map's lock, so this cannot
        // race with one.)
        if m.get(&self.key).is_some_and(|s| Arc::strong_count(s) == 2) {
            m.remove(&self.key);
        }
        drop(m);
        self.guard.take();
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
        // A turn outlives a borrow of the locks: it can move to a thread.
        let moved = std::thread::spawn(move || drop(a2));
        moved.join().unwrap();
        drop(b);
        assert_eq!(locks.len(), 0, "idle locks are dropped");
    }
}
