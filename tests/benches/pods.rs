//! Pod start benchmark: RunPodSandbox + CreateContainer + StartContainer
//! for 20 pods (one busybox `sleep` container each, no CNI network unless
//! asked), the mean of each step (from berthd's metrics), then berthd's
//! and the monitors' memory with the 20 running.
//!
//! ```sh
//! cargo build --release -p berthd -p berth-runtime
//! BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench pods
//! # on cgroup v2 with systemd, in the VM lane's guest, under each driver:
//! cargo bench -p berth-tests --bench pods --no-run   # then in the guest:
//! tests/vm/run.sh "BERTH_TEST_CGROUP_DRIVER=systemd BERTHD_BIN=$PWD/target/release/berthd target/release/deps/pods-<hash>"
//! # the same with every pod in its own user namespace:
//! BERTH_BENCH_USERNS=1 BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench pods
//! # every pod on the default network (manifests/10-berth.conflist's chain):
//! BERTH_BENCH_CNI=1 BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench pods
//! # where one monitor's memory lies, mapping by mapping:
//! BERTH_BENCH_MAPS=1 BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench pods
//! # the same with containers that write to their logs ten times a second:
//! BERTH_BENCH_CHATTY=1 BERTH_BENCH_MAPS=1 BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench pods
//! ```

use std::time::Instant;

use berth_tests::{monitor_pids, proc_kb};
use cri_api::v1::*;

const PODS: usize = 20;

fn main() {
    berth_tests::bench::runtime().block_on(async {
        let (_reg, b, image) = berth_tests::bench::berthd_with_busybox_and(berth_tests::Options {
            config: "[metrics]\naddress = \"127.0.0.1:0\"\n".into(),
            ..Default::default()
        })
        .await;
        // BERTH_BENCH_CNI=1: every pod on the default network (bridge,
        // host-local, portmap, bandwidth, loopback), on a bridge of its own.
        let cni = std::env::var_os("BERTH_BENCH_CNI").map(|_| berth_tests::net::TestNet::install_default(&b, 0, true));
        let metrics = berth_tests::metrics::address(&b);
        let before = berth_tests::metrics::samples(&berth_tests::metrics::get(&metrics));
        let mut c = b.runtime().await;
        // BERTH_BENCH_USERNS=1: every pod in a user namespace of its own.
        let userns = std::env::var_os("BERTH_BENCH_USERNS").is_some();
        let mut times = Vec::new();
        let mut pods = Vec::new();
        for i in 0..PODS {
            // BERTH_TEST_CGROUP_DRIVER=systemd (the VM lane): kubelet-style slices.
            let parent = if berth_tests::cgroup::systemd() {
                format!("berthbench-pod{i}.slice")
            } else {
                format!("/berth-bench/pod{i}")
            };
            let mut pod_config = berth_tests::bench::pod_config(&b, &format!("bench-{i}"), &parent);
            if userns {
                // Each pod its own 65536 IDs, as the kubelet allocates them.
                if let Some(l) = pod_config.linux.as_mut() {
                    l.security_context = Some(berth_tests::setup::userns_pod((i as u32 + 2) * 65536));
                }
            }
            let t = Instant::now();
            let pod = berth_tests::bench::start_pod(&mut c, pod_config, &image, format!("bench-{i}.log")).await;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            pods.push(pod);
        }
        let after = berth_tests::metrics::samples(&berth_tests::metrics::get(&metrics));
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| berth_tests::bench::percentile(&sorted, p);
        println!(
            "berthd: {}{}",
            berth_tests::berthd_binary().display(),
            if userns { " (pods in user namespaces)" } else { "" }
        );
        if let Some(net) = &cni {
            println!("network: the default conflist's chain on bridge {}", net.bridge);
        }
        println!(
            "RunPodSandbox+CreateContainer+StartContainer over {PODS} pods: median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
            pct(0.5),
            pct(0.9),
            sorted[0],
            sorted[sorted.len() - 1]
        );
        println!(
            "mean of each step: {}",
            berth_tests::metrics::step_means(&before, &after)
        );
        let pid = b.pid().as_raw();
        println!(
            "berthd with {PODS} pods running: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            proc_kb(&format!("/proc/{pid}/status"), "VmRSS:") as f64 / 1024.0,
            proc_kb(&format!("/proc/{pid}/status"), "VmHWM:") as f64 / 1024.0
        );
        let mons = monitor_pids(&b.state);
        let rss: Vec<u64> = mons
            .iter()
            .map(|p| proc_kb(&format!("/proc/{p}/status"), "VmRSS:"))
            .collect();
        let pss: Vec<u64> = mons
            .iter()
            .map(|p| proc_kb(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
            .collect();
        let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
        println!(
            "berth-monitor x{}: mean VmRSS {:.2} MiB, mean PSS {:.2} MiB",
            mons.len(),
            avg(&rss),
            avg(&pss)
        );
        // BERTH_BENCH_MAPS=1: where one monitor's memory lies, by mapping.
        if std::env::var_os("BERTH_BENCH_MAPS").is_some()
            && let Some(p) = mons.first()
        {
            print_maps(&std::fs::read_to_string(format!("/proc/{p}/smaps")).unwrap_or_default());
        }
        for pod in pods {
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                .await
                .expect("remove");
        }
        berth_tests::bench::remove_shared_parent("berth-bench");
        if berth_tests::cgroup::systemd() {
            let _ = std::process::Command::new("systemctl")
                .args(["stop", "berthbench.slice"])
                .status();
        }
    });
}

/// The mappings of an smaps file with resident pages: kB resident,
/// proportional and private, and what is mapped.
fn print_maps(smaps: &str) {
    println!("{:>6} {:>6} {:>6}  mapping", "Rss", "Pss", "Priv");
    let (mut name, mut rss, mut pss) = (String::new(), 0, 0);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let (Some(key), Some(value)) = (f.next(), f.next()) else {
            continue;
        };
        if key.contains('-') && !key.ends_with(':') {
            // A mapping's header: range perms offset dev inode [path].
            let perms = value;
            let path = line.split_whitespace().nth(5).unwrap_or("[anon]");
            name = format!("{path} {perms}");
            continue;
        }
        let kb: u64 = value.parse().unwrap_or(0);
        match key {
            "Rss:" => rss = kb,
            "Pss:" => pss = kb,
            "Private_Dirty:" if rss > 0 => println!("{rss:>6} {pss:>6} {kb:>6}  {name}"),
            _ => {}
        }
    }
}
