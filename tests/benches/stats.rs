//! Stats benchmark: ListContainerStats (and ListPodSandboxStats) latency
//! with 100 running containers (20 pods of 5 busybox `sleep` containers,
//! each with a small writable layer), as the kubelet's summary API calls
//! them every few seconds; and ImageFsInfo's.
//!
//! ```sh
//! cargo build --release -p berthd -p berth-runtime
//! BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench stats
//! ```

use std::time::Instant;

use berth_tests::proc_kb;
use cri_api::v1::*;

const PODS: usize = 20;
const PER_POD: usize = 5;
const CALLS: usize = 50;

fn main() {
    berth_tests::bench::runtime().block_on(async {
        let (_reg, b, image) = berth_tests::bench::berthd_with_busybox().await;
        let mut c = b.runtime().await;
        let mut pods = Vec::new();
        for i in 0..PODS {
            let pod_config = berth_tests::bench::pod_config(
                &b,
                &format!("stats-{i}"),
                &format!("/berth-bench-stats/pod{i}"),
            );
            let pod = berth_tests::bench::run_pod(&mut c, &pod_config).await;
            for j in 0..PER_POD {
                berth_tests::bench::start_container(
                    &mut c,
                    &pod,
                    &pod_config,
                    &image,
                    &format!("c{j}"),
                    &["/bin/sh", "-c", "echo data > /data; exec sleep 1000"],
                    format!("stats-{i}-{j}.log"),
                )
                .await;
            }
            pods.push(pod);
        }
        let mut list = Vec::new();
        let mut n = 0;
        for _ in 0..CALLS {
            let t = Instant::now();
            n = c
                .list_container_stats(ListContainerStatsRequest { filter: None })
                .await
                .expect("list stats")
                .into_inner()
                .stats
                .len();
            list.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut pod_list = Vec::new();
        for _ in 0..CALLS {
            let t = Instant::now();
            c.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
                .await
                .expect("list pod stats");
            pod_list.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("berthd: {}", berth_tests::berthd_binary().display());
        println!(
            "ListContainerStats, {n} running containers, {CALLS} calls: {}",
            berth_tests::bench::summary(list)
        );
        println!(
            "ListPodSandboxStats, {PODS} pods of {PER_POD}, {CALLS} calls: {}",
            berth_tests::bench::summary(pod_list)
        );
        // The first ImageFsInfo walks every snapshot (what each call cost
        // before the figure was kept); the next ones stat what is there.
        let mut img = b.image().await;
        let mut fs_info = Vec::new();
        for _ in 0..=CALLS {
            let t = Instant::now();
            img.image_fs_info(ImageFsInfoRequest {})
                .await
                .expect("image fs info");
            fs_info.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let rest = fs_info.split_off(1);
        println!(
            "ImageFsInfo, 1 image: first call {:.3} ms; then {}",
            fs_info[0],
            berth_tests::bench::summary(rest)
        );
        let pid = b.pid().as_raw();
        println!(
            "berthd after: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            proc_kb(&format!("/proc/{pid}/status"), "VmRSS:") as f64 / 1024.0,
            proc_kb(&format!("/proc/{pid}/status"), "VmHWM:") as f64 / 1024.0
        );
        for pod in pods {
            c.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .expect("remove");
        }
        berth_tests::bench::remove_shared_parent("berth-bench-stats");
    });
}
