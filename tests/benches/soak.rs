//! The soak: 1,000 pod lives (RunPodSandbox with a CNI bridge network and
//! a host port, CreateContainer, StartContainer, ExecSync, StopContainer,
//! StopPodSandbox, RemovePodSandbox), four at a time, with a census of
//! what berthd holds before and after (see `berth_tests::soak::Census`).
//!
//! ```sh
//! cargo build --release -p berthd -p berth-runtime
//! BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench soak
//! ```

use std::time::{Duration, Instant};

use berth_tests::net::TestNet;
use berth_tests::soak::{census, cycles};

const CYCLES: usize = 1000;
const WORKERS: usize = 4;

fn main() {
    berth_tests::bench::runtime().block_on(async {
        let (_reg, b, image) = berth_tests::bench::berthd_with_busybox().await;
        println!("berthd: {}", berth_tests::berthd_binary().display());
        let net = TestNet::install(
            &b,
            9,
            &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
        );
        let parent = "/berth-bench/soak";
        let c = b.runtime().await;
        cycles(&c, &b, &image, parent, ("warm", 8, WORKERS, 20000)).await;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let before = census(&b, &net, parent);
        let start = Instant::now();
        cycles(&c, &b, &image, parent, ("soak", CYCLES, WORKERS, 21000)).await;
        let wall = start.elapsed().as_secs_f64();
        let right_after = census(&b, &net, parent);
        tokio::time::sleep(Duration::from_secs(12)).await;
        let after = census(&b, &net, parent);
        println!(
            "{CYCLES} pod lives, {WORKERS} at a time: {wall:.1} s ({:.1} lives/s)",
            CYCLES as f64 / wall
        );
        println!("before:            {before:?}");
        println!("right after:       {right_after:?}");
        println!("after 12 s idle:   {after:?}");
        println!(
            "leaked: {}",
            if after.counts() == before.counts() {
                "nothing"
            } else {
                "SEE ABOVE"
            }
        );
        drop(c);
        berth_tests::bench::remove_shared_parent("berth-bench/soak");
    });
}
