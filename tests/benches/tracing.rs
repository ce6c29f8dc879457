//! What OpenTelemetry tracing costs: the same work with tracing off (the
//! default) and on (exporting every span to a loopback OTLP receiver):
//! 20 pod starts (RunPodSandbox + CreateContainer + StartContainer, no CNI
//! network) and 2000 ContainerStatus calls, one after another.
//!
//! ```sh
//! cargo build --release -p berthd -p berth-runtime
//! BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench tracing
//! # only the off mode (e.g. for a berthd from before tracing existed):
//! BERTH_BENCH_TRACING=off BERTHD_BIN=... cargo bench -p berth-tests --bench tracing
//! ```

use std::time::Instant;

use berth_tests::otlp::Receiver;
use berth_tests::{Berthd, Options};
use cri_api::v1::*;

const PODS: usize = 20;
const CALLS: usize = 2000;

fn main() {
    berth_tests::bench::runtime().block_on(async {
        let (_reg, image) = berth_tests::bench::registry_with_busybox("bench").await;
        println!("berthd: {}", berth_tests::berthd_binary().display());
        let modes: &[bool] = match std::env::var("BERTH_BENCH_TRACING").as_deref() {
            Ok("off") => &[false],
            _ => &[false, true],
        };
        for &on in modes {
            let receiver = Receiver::start().await;
            let config = if on {
                format!("[tracing]\nendpoint = \"{}\"\n", receiver.endpoint)
            } else {
                String::new()
            };
            let b = Berthd::start_with(Options {
                config,
                ..Default::default()
            })
            .await;
            b.pull(&image, None).await.expect("pull");
            let mut c = b.runtime().await;
            let mut starts = Vec::new();
            let mut pods = Vec::new();
            for i in 0..PODS {
                let parent = format!("/berth-bench/trace{i}");
                let config = berth_tests::bench::pod_config(&b, &format!("bench-{i}"), &parent);
                let t = Instant::now();
                let pod =
                    berth_tests::bench::start_pod(&mut c, config, &image, format!("b-{i}.log"))
                        .await;
                starts.push(t.elapsed().as_secs_f64() * 1e3);
                pods.push(pod);
            }
            let ctr = c
                .list_containers(ListContainersRequest::default())
                .await
                .expect("list")
                .into_inner()
                .containers
                .remove(0)
                .id;
            let mut calls = Vec::new();
            for _ in 0..CALLS {
                let t = Instant::now();
                c.container_status(ContainerStatusRequest {
                    container_id: ctr.clone(),
                    verbose: false,
                })
                .await
                .expect("status");
                calls.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let mode = if on { "on " } else { "off" };
            println!(
                "tracing {mode}: pod start over {PODS} pods: {}",
                berth_tests::bench::summary(starts)
            );
            println!(
                "tracing {mode}: ContainerStatus x{CALLS}: {}",
                berth_tests::bench::summary(calls)
            );
            for pod in pods {
                c.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod,
                })
                .await
                .expect("remove");
            }
            let pid = b.pid().as_raw();
            println!(
                "tracing {mode}: berthd VmHWM {:.1} MiB",
                berth_tests::proc_kb(&format!("/proc/{pid}/status"), "VmHWM:") as f64 / 1024.0
            );
            drop(c);
            drop(b);
            if on {
                println!("tracing on : {} spans received", receiver.spans().len());
            }
        }
        berth_tests::bench::remove_shared_parent("berth-bench");
    });
}
