//! Pods started side by side: N pods (one busybox `sleep` container each,
//! no CNI network), at most P being started at once, for P = 1, 4 and 10;
//! the wall-clock time for all N and each pod's own time
//! (RunPodSandbox + CreateContainer + StartContainer as its client sees it).
//!
//! ```sh
//! cargo build --release -p berthd -p berth-runtime
//! BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench parallel_pods
//! ```

use std::time::Instant;

use cri_api::v1::RemovePodSandboxRequest;
use futures_util::StreamExt;

const PODS: usize = 40;

fn main() {
    berth_tests::bench::runtime().block_on(async {
        let (_reg, b, image) = berth_tests::bench::berthd_with_busybox().await;
        let c = b.runtime().await;
        println!("berthd: {}", berth_tests::berthd_binary().display());
        for p in [1, 4, 10] {
            let start = Instant::now();
            let runs = (0..PODS).map(|i| {
                let (mut c, image, b) = (c.clone(), image.clone(), &b);
                async move {
                    let name = format!("par{p}-{i}");
                    let config = berth_tests::bench::pod_config(b, &name, "/berth-bench/par");
                    let t = Instant::now();
                    let pod = berth_tests::bench::start_pod(&mut c, config, &image, format!("{name}.log")).await;
                    (pod, t.elapsed().as_secs_f64() * 1e3)
                }
            });
            let done: Vec<(String, f64)> = futures_util::stream::iter(runs)
                .buffer_unordered(p)
                .collect()
                .await;
            let wall = start.elapsed().as_secs_f64();
            let mut times: Vec<f64> = done.iter().map(|(_, t)| *t).collect();
            times.sort_by(|a, b| a.total_cmp(b));
            let pct = |q: f64| berth_tests::bench::percentile(&times, q);
            println!(
                "{PODS} pods, {p} at a time: all in {:.2} s ({:.1} pods/s); each: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
                wall,
                PODS as f64 / wall,
                pct(0.5),
                pct(0.9),
                times[times.len() - 1]
            );
            let mut c = c.clone();
            for (pod, _) in done {
                c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
                    .await
                    .expect("remove");
            }
        }
        berth_tests::bench::remove_shared_parent("berth-bench/par");
    });
}
