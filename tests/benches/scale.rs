//! Node scale: pods brought up one after another to 250 (one busybox
//! `sleep` container each, each pod in its own cgroup, no CNI network),
//! and at 10, 50, 100, 150, 200 and 250 running pods: the start of the
//! next 5 pods (and the mean of each of its steps, from berthd's metrics),
//! the kubelet's list and stats calls and an exec probe (`ExecSync` of
//! `true`; 50 of each, one after another),
//! berthd's memory and the monitors', and the CPU berthd burns over 10 s
//! idle.
//!
//! ```sh
//! cargo build --release -p berthd -p berth-runtime
//! BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench scale
//! BERTH_BENCH_PODS=100 ...   # stop at 100
//! BERTH_BENCH_STRACE=/tmp/st ...   # strace -f -T each probe into /tmp/st/<pods>/
//! ```

use std::time::{Duration, Instant};

use berth_tests::bench::summary;
use berth_tests::{cpu_seconds, monitor_pids, proc_kb};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;

const CALLS: usize = 50;
const PROBE: usize = 5;

/// Pod `i` with its container started; its id and the time taken in ms.
async fn start(
    b: &berth_tests::Berthd,
    c: &mut RuntimeServiceClient<tonic::transport::Channel>,
    image: &str,
    i: usize,
) -> (String, f64) {
    // Each pod its own cgroup, as the kubelet gives it.
    let config =
        berth_tests::bench::pod_config(b, &format!("s-{i}"), &format!("/berth-bench/scale/pod{i}"));
    let t = Instant::now();
    let pod = berth_tests::bench::start_pod(c, config, image, format!("s-{i}.log")).await;
    (pod, t.elapsed().as_secs_f64() * 1e3)
}

/// The mean time of each start stage and start RPC between two scrapes.
fn main() {
    let max: usize = std::env::var("BERTH_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let checkpoints: Vec<usize> = [10, 50, 100, 150, 200, 250]
        .into_iter()
        .filter(|n| *n <= max)
        .collect();
    berth_tests::bench::runtime().block_on(async {
        let (_reg, b, image) = berth_tests::bench::berthd_with_busybox_and(berth_tests::Options {
            config: "[metrics]\naddress = \"127.0.0.1:0\"\n".into(),
            ..Default::default()
        })
        .await;
        let metrics = berth_tests::metrics::address(&b);
        let mut c = b.runtime().await;
        let pid = b.pid().as_raw();
        let rss0 = proc_kb(&format!("/proc/{pid}/status"), "VmRSS:");
        println!("berthd: {}", berth_tests::berthd_binary().display());
        let mut pods = Vec::new();
        for n in checkpoints {
            while pods.len() < n {
                let (pod, _) = start(&b, &mut c, &image, pods.len()).await;
                pods.push(pod);
            }
            println!("== {n} pods running");
            // The CPU berthd uses with nothing asked of it.
            let t0 = cpu_seconds(pid);
            tokio::time::sleep(Duration::from_secs(10)).await;
            let idle = (cpu_seconds(pid) - t0) / 10.0 * 100.0;
            println!("  berthd idle CPU: {idle:.1}% of a core (over 10 s)");
            macro_rules! calls {
                ($name:literal, $call:expr) => {{
                    let mut ms = Vec::new();
                    for _ in 0..CALLS {
                        let t = Instant::now();
                        $call.await.expect($name);
                        ms.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    println!("  {}: {}", $name, summary(ms));
                }};
            }
            calls!("ListPodSandbox", c.list_pod_sandbox(ListPodSandboxRequest::default()));
            calls!("ListContainers", c.list_containers(ListContainersRequest::default()));
            calls!(
                "ListContainerStats",
                c.list_container_stats(ListContainerStatsRequest::default())
            );
            calls!(
                "ListPodSandboxStats",
                c.list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
            );
            // An exec probe, as the kubelet runs one: `true` in the first
            // pod's container.
            let first = c
                .list_containers(ListContainersRequest::default())
                .await
                .expect("ListContainers")
                .into_inner()
                .containers
                .into_iter()
                .min_by_key(|k| k.created_at)
                .expect("a container")
                .id;
            let exec = || ExecSyncRequest {
                container_id: first.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            };
            calls!("ExecSync", c.exec_sync(exec()));
            let mons = monitor_pids(&b.state);
            let pss: u64 = mons
                .iter()
                .map(|p| proc_kb(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
                .sum();
            let rss = proc_kb(&format!("/proc/{pid}/status"), "VmRSS:");
            println!(
                "  berthd VmRSS {:.1} MiB; {} monitors, PSS {:.1} MiB in all; per pod {:.2} MiB (berthd's growth + monitor PSS)",
                rss as f64 / 1024.0,
                mons.len(),
                pss as f64 / 1024.0,
                (rss.saturating_sub(rss0) + pss) as f64 / 1024.0 / n as f64
            );
            // The next pods' start, at this many, and where its time goes
            // (berthd's own histograms, read before and after).
            let before = berth_tests::metrics::samples(&berth_tests::metrics::get(&metrics));
            // What libcontainer reads whole at every start (see
            // docs/benchmarks.md): the node's mount table.
            let table = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
            println!(
                "  node mount table: {} lines, {:.0} KiB",
                table.iter().filter(|b| **b == b'\n').count(),
                table.len() as f64 / 1024.0
            );
            // With BERTH_BENCH_STRACE=<dir>: the probe's starts traced,
            // berthd and every process it starts, one file per process.
            let trace = std::env::var("BERTH_BENCH_STRACE").ok().map(|dir| {
                let dir = format!("{dir}/{n}");
                std::fs::create_dir_all(&dir).expect("trace dir");
                let out = format!("{dir}/t");
                let child = std::process::Command::new("strace")
                    .args(["-f", "-ff", "-ttt", "-T", "-o", &out, "-p", &pid.to_string()])
                    .spawn()
                    .expect("strace");
                // strace attaches to each of berthd's threads.
                std::thread::sleep(Duration::from_secs(2));
                child
            });
            let mut ms = Vec::new();
            for _ in 0..PROBE {
                let (pod, t) = start(&b, &mut c, &image, pods.len()).await;
                pods.push(pod);
                ms.push(t);
            }
            println!("  pod start (pods {}..{}): {}", n + 1, n + PROBE, summary(ms));
            if let Some(mut t) = trace {
                let strace = nix::unistd::Pid::from_raw(t.id() as i32);
                let _ = nix::sys::signal::kill(strace, nix::sys::signal::Signal::SIGINT);
                let _ = t.wait();
            }
            let after = berth_tests::metrics::samples(&berth_tests::metrics::get(&metrics));
            println!(
                "    mean of each step: {}",
                berth_tests::metrics::step_means(&before, &after)
            );
            // Back to n, so the next checkpoint counts from a round number.
            for pod in pods.split_off(n) {
                c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                    .await
                    .expect("remove");
            }
        }
        for pod in pods {
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                .await
                .expect("remove");
        }
        berth_tests::bench::remove_shared_parent("berth-bench/scale");
    });
}
