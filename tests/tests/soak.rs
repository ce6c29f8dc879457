//! The soak, short: 100 pod lives, four at a time, each with a CNI bridge
//! network, a host port, a container, an exec, a stop and a removal.
//! Afterwards berthd holds exactly what it held before: mounts, namespace
//! pins, cgroups, state files, descriptors, threads, monitors and
//! children, pod IPs, iptables rules. (Counts, never times; the 1,000-cycle
//! version with figures is `cargo bench --bench soak`.)

use std::time::Duration;

use berth_tests::net::TestNet;
use berth_tests::soak::{Census, census, cycles};

/// Polls until the census equals `want` (tokio's idle blocking threads
/// linger 10 s; a CNI DEL retry may still be running), 40 s at most.
async fn settle(get: impl Fn() -> Census, want: &Census) -> Census {
    let mut now = get();
    for _ in 0..80 {
        if now.counts() == want.counts() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = get();
    }
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pod_lives_leak_nothing() {
    let (_reg, b, image) = berth_tests::bench::berthd_with_busybox().await;
    let net = TestNet::install(
        &b,
        9,
        &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
    );
    let parent = berth_tests::cgroup::unique_parent("soak");
    let c = b.runtime().await;
    // Warm-up: the first pod makes the shared parent cgroup, portmap its
    // chains, berthd its pools.
    cycles(&c, &b, &image, &parent, ("warm", 8, 4, 21000)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let get = || census(&b, &net, &parent);
    let before = get();
    // The census sees each thing a live pod holds: one pod, held open.
    let mut held = c.clone();
    let config = {
        let mut p = berth_tests::bench::pod_config(&b, "held", &parent);
        p.port_mappings = vec![cri_api::v1::PortMapping {
            protocol: cri_api::v1::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 20999,
            host_ip: String::new(),
        }];
        p
    };
    let pod = berth_tests::bench::start_pod(&mut held, config, &image, "held.log".into()).await;
    let busy = get();
    eprintln!("soak: one pod {busy:?}");
    assert!(busy.mounts > before.mounts, "mounts: {busy:?}");
    assert!(busy.ns_pins > before.ns_pins, "ns pins: {busy:?}");
    assert!(busy.cgroups > before.cgroups, "cgroups: {busy:?}");
    assert!(busy.state_entries > before.state_entries, "state: {busy:?}");
    assert!(busy.processes > before.processes, "processes: {busy:?}");
    assert_eq!(busy.ips, before.ips + 1, "ips: {busy:?}");
    assert!(
        busy.iptables_rules > before.iptables_rules,
        "iptables: {busy:?}"
    );
    held.remove_pod_sandbox(cri_api::v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove");
    let before = settle(get, &before).await;
    cycles(&c, &b, &image, &parent, ("soak", 100, 4, 21100)).await;
    let after = settle(get, &before).await;
    eprintln!("soak: before {before:?}\nsoak: after  {after:?}");
    assert_eq!(after.counts(), before.counts(), "leaked over 100 pod lives");
    drop(c);
    berth_tests::bench::remove_shared_parent(&parent);
}
