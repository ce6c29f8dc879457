//! The pod networks' background care: after a start, DEL for stopped pods
//! that still hold a network (a failed DEL, or pods a node reboot left
//! NOTREADY) and CNI CHECK of every ready pod's attachment (a restart is
//! when state may have drifted); then, every `cni.del_retry_interval`,
//! DEL again for stopped pods whose DEL failed, until the plugins release
//! what ADD took.

use std::sync::Arc;

use crate::daemon::Daemon;
use crate::pod::PodState;

pub async fn run(d: Arc<Daemon>) {
    retry_deletes(&d).await;
    check_all(&d).await;
    let mut tick = tokio::time::interval(d.config.cni.del_retry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        retry_deletes(&d).await;
    }
}

async fn check_all(d: &Arc<Daemon>) {
    let Ok(all) = d.pods.all() else { return };
    for rec in all {
        if rec.state != PodState::Ready || rec.network.is_none() {
            continue;
        }
        let _turn = d.pod_locks.lock(&rec.id).await;
        // Still there and still ready, now that the turn is ours?
        let Ok(Some(mut rec)) = d.pods.find(&rec.id) else {
            continue;
        };
        if rec.state != PodState::Ready {
            continue;
        }
        let pods = d.pods.clone();
        match tokio::task::spawn_blocking(move || pods.check_network(&mut rec)).await {
            Ok(Ok(true)) => tracing::debug!("pod network checked"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("network check: {e}"),
        }
    }
}

async fn retry_deletes(d: &Arc<Daemon>) {
    let Ok(all) = d.pods.all() else { return };
    for rec in all {
        if rec.state != PodState::NotReady || rec.network.is_none() {
            continue;
        }
        let _turn = d.pod_locks.lock(&rec.id).await;
        let Ok(Some(mut rec)) = d.pods.find(&rec.id) else {
            continue;
        };
        if rec.network.is_none() {
            continue;
        }
        let id = rec.id.clone();
        let pods = d.pods.clone();
        match tokio::task::spawn_blocking(move || pods.detach_network(&mut rec)).await {
            Ok(Ok(())) => tracing::info!(pod = %id, "network released on retry"),
            Ok(Err(e)) => tracing::warn!("{e} (retrying)"),
            Err(e) => tracing::warn!(pod = %id, "network retry: {e}"),
        }
    }
}
