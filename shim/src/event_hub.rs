//! The container event hub behind `GetContainerEvents`: a broadcast
//! channel (a subscriber that falls behind loses the oldest events and is
//! told so in berthd's log; it never slows the runtime down), and the set
//! of containers known to run, whose exits the watcher turns into
//! CONTAINER_STOPPED events.

use std::collections::HashSet;
use std::sync::Mutex;

use cri_api::v1::ContainerEventResponse;
use tokio::sync::{broadcast, mpsc};

/// Events a subscriber may lag behind before it loses some.
const BACKLOG: usize = 4096;

pub struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
    running: Mutex<HashSet<String>>,
    /// Each container that starts running, to the exit watcher.
    started: mpsc::UnboundedSender<String>,
    watcher: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Set at shutdown: every subscriber's stream ends.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Events {
    pub fn new() -> Events {
        let (tx, _) = broadcast::channel(BACKLOG);
        let (started, watcher) = mpsc::unbounded_channel();
        Events {
            tx,
            running: Mutex::new(HashSet::new()),
            started,
            watcher: Mutex::new(Some(watcher)),
            closed: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn subscribe(
        &self,
    ) -> (
        broadcast::Receiver<ContainerEventResponse>,
        tokio::sync::watch::Receiver<bool>,
    ) {
        (self.tx.subscribe(), self.closed.subscribe())
    }

    /// Ends every subscriber's stream (berthd is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Is anyone listening? (Building an event reads every container of
    /// the pod; without a subscriber that is skipped.)
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn send(&self, e: ContainerEventResponse) {
        // No subscriber is not an error.
        let _ = self.tx.send(e);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container runs: its exit is to be reported (the exit watcher
    /// is told).
    pub fn started(&self, id: &str) {
        if self.running().insert(id.to_string()) {
            let _ = self.started.send(id.to_string());
        }
    }

    /// What the exit watcher receives: each container that starts
    /// running. Given once.
    pub fn take_started(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The container is no longer running: true the first time only, so
    /// one exit gives one STOPPED event whoever notices it.
    pub fn exited(&self, id: &str) -> bool {
        self.running().remove(id)
    }
}
