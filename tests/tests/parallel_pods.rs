//! Pods are made side by side: a pod whose network setup is slow holds up
//! no other pod, and a RunPodSandbox retried while its pod is being made
//! gets that pod, not a second one or a "name reserved" error. The CNI plugin here is a rendezvous: its
//! ADD for one pod waits for another pod's ADD (or for a file the test
//! writes), which a runtime that makes one pod at a time never lets come.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_tests::{Berthd, mounts_under};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use tonic::transport::Channel;

type Client = RuntimeServiceClient<Channel>;

/// Installs the rendezvous plugin: ADD for pod `name` writes
/// `arrived-<name>`, then waits (20 s at most, then fails) until every
/// file its `wait-<name>` file lists exists in the same directory.
fn rendezvous(b: &Berthd) -> PathBuf {
    let dir = b.dir.path().join("cni-bin");
    let script = format!(
        r#"#!/bin/sh
d={dir}
name=$(echo "$CNI_ARGS" | tr ';' '\n' | sed -n 's/^K8S_POD_NAME=//p')
if [ "$CNI_COMMAND" = ADD ]; then
  touch "$d/arrived-$name"
  i=0
  for f in $(cat "$d/wait-$name" 2>/dev/null); do
    while [ ! -e "$d/$f" ]; do
      i=$((i+1))
      if [ $i -gt 200 ]; then
        echo '{{"cniVersion":"1.0.0","code":11,"msg":"'"$f"' never came"}}'
        exit 1
      fi
      sleep 0.1
    done
  done
  echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.250.0.9/24"}}]}}'
fi
exit 0
"#,
        dir = dir.display()
    );
    let path = dir.join("rendezvous");
    std::fs::write(&path, script).expect("plugin");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        b.dir.path().join("net.d/10-rv.conflist"),
        r#"{"cniVersion":"1.0.0","name":"rv","plugins":[{"type":"rendezvous"}]}"#,
    )
    .expect("conflist");
    dir
}

fn config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "parallel-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: HashMap::new(),
        ..Default::default()
    }
}

async fn run(mut c: Client, name: &str) -> Result<String, tonic::Status> {
    c.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config(name)),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn clean(c: &mut Client, ids: &[String]) {
    for id in ids {
        c.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("stop");
        c.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("remove");
    }
}

async fn wait_for(path: &Path) {
    for _ in 0..400 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waiting_on_its_network_holds_up_no_other_pod() {
    let b = Berthd::start().await;
    let dir = rendezvous(&b);
    // Each pod's ADD finishes only once the other's has begun.
    std::fs::write(dir.join("wait-alpha"), "arrived-beta\n").expect("wait");
    std::fs::write(dir.join("wait-beta"), "arrived-alpha\n").expect("wait");
    let c = b.runtime().await;
    let (a, z) = tokio::join!(run(c.clone(), "alpha"), run(c.clone(), "beta"));
    let (a, z) = (a.expect("alpha"), z.expect("beta"));
    assert_ne!(a, z);
    let mut c = c;
    clean(&mut c, &[a, z]).await;
    assert_eq!(mounts_under(&b.state).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_gets_the_pod_being_made_and_other_pods_go_on() {
    let b = Berthd::start().await;
    let dir = rendezvous(&b);
    // "same" is made only once the test says so.
    std::fs::write(dir.join("wait-same"), "go\n").expect("wait");
    let c = b.runtime().await;
    let first = tokio::spawn(run(c.clone(), "same"));
    wait_for(&dir.join("arrived-same")).await;

    // The kubelet retrying while the first call still runs: it waits for
    // that pod, it does not make a second one nor fail "name reserved".
    let retry = tokio::spawn(run(c.clone(), "same"));
    // Another pod is made meanwhile, and can be stopped and removed.
    let other = run(c.clone(), "other").await.expect("other pod");
    let mut c2 = c.clone();
    clean(&mut c2, &[other]).await;
    assert!(!retry.is_finished(), "the retry did not wait for the pod");

    std::fs::write(dir.join("go"), "").expect("go");
    let id = first.await.expect("join").expect("the first call makes it");
    let again = retry.await.expect("join").expect("the retry gets it");
    assert_eq!(again, id);
    let adds = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name() == "arrived-same")
        .count();
    assert_eq!(adds, 1);
    let pods = c2
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    clean(&mut c2, &[id]).await;
    assert_eq!(mounts_under(&b.state).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_caller_gave_up_is_made_and_is_its_retrys_pod() {
    let b = Berthd::start().await;
    let dir = rendezvous(&b);
    std::fs::write(dir.join("wait-late"), "go\n").expect("wait");
    let c = b.runtime().await;
    // The kubelet's deadline ends while the network is set up.
    let first = tokio::spawn(run(c.clone(), "late"));
    wait_for(&dir.join("arrived-late")).await;
    first.abort();
    let _ = first.await;
    let retry = tokio::spawn(run(c.clone(), "late"));
    std::fs::write(dir.join("go"), "").expect("go");
    let id = retry.await.expect("join").expect("the retry gets the pod");
    let mut c = c;
    let pods = c
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, id);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    clean(&mut c, &[id]).await;
    assert_eq!(mounts_under(&b.state).len(), 0);
}
