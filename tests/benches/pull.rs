//! Pull benchmark: a ~100 MB, 5-layer image (incompressible content,
//! gzip layers) from a docker-registry on loopback into a fresh berthd.
//! Prints wall time per pull and berthd's memory.
//!
//! ```sh
//! cargo build --release -p berthd
//! BERTHD_BIN=$PWD/target/release/berthd cargo bench -p berth-tests --bench pull
//! ```
//! Set `BENCH_RUNS` for more runs (default 3). With `CONTAINERD_SOCKET`
//! (and `CONTAINERD_PID`) set, the same image is also pulled through that
//! containerd's CRI, removing it between runs, for a side-by-side figure.

use std::time::Instant;

use berth_tests::fixtures::{self, Compression, ImageConfig, Layer, ManifestKind, Platform};
use berth_tests::registry::Registry;
use berth_tests::{Berthd, connect, cpu_seconds, proc_kb};
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::{ImageSpec, PullImageRequest, RemoveImageRequest};

const LAYERS: usize = 5;
const FILES_PER_LAYER: usize = 4;
const FILE_SIZE: usize = 5 << 20;

/// Deterministic, incompressible bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Where the first pull's time went, from berthd's debug log: when each
/// blob was stored and each layer's unpack began and ended, in ms after
/// the first log line of the pull.
fn timeline(log: &str) {
    // `2026-12-05T08:40:01.123456Z ...`: seconds of the day.
    let at = |l: &str| -> Option<f64> {
        let t = l.split_whitespace().next()?.split('T').nth(1)?;
        let t = t.trim_end_matches('Z');
        let mut p = t.split(':');
        let (h, m, s): (f64, f64, f64) = (
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
        );
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("bench/big")).collect();
    let Some(t0) = lines.first().and_then(|l| at(l)) else {
        return;
    };
    let mut events = Vec::new();
    for l in &lines {
        let what = if l.contains("blob stored") {
            "stored"
        } else if l.contains("unpacking") {
            "unpack begins"
        } else if l.contains("layer unpacked") {
            "unpack ends"
        } else if l.contains("pulled") {
            "recorded"
        } else {
            continue;
        };
        let blob = l
            .split("blob=sha256:")
            .nth(1)
            .map_or("", |b| &b[..8.min(b.len())]);
        if let Some(t) = at(l) {
            events.push(format!("{:.0} ms {what} {blob}", (t - t0) * 1e3));
        }
    }
    println!("  run 1: {}", events.join("; "));
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    berth_tests::bench::runtime().block_on(async {
        let reg = Registry::start();
        let mut image = fixtures::Image::new(
            ManifestKind::Oci,
            ImageConfig::for_platform(&Platform::linux_amd64()),
        );
        let mut total = 0usize;
        for l in 0..LAYERS {
            let mut layer = Layer::new().dir(&format!("data{l}"), 0o755);
            for f in 0..FILES_PER_LAYER {
                let data = noise((l * 100 + f) as u64, FILE_SIZE);
                total += data.len();
                layer = layer.file(&format!("data{l}/blob{f}"), data, 0o644);
            }
            image = image.layer(layer.build(Compression::Gzip));
        }
        let pushed = fixtures::push_image(&reg, "bench/big", "1", &image).await;
        let name = reg.image("bench/big:1");
        println!(
            "image: {LAYERS} gzip layers, {:.1} MB compressed, {:.1} MB of files",
            pushed.layers_size() as f64 / 1e6,
            total as f64 / 1e6
        );
        println!("berthd: {}", berth_tests::berthd_binary().display());
        // CPU seconds berthd and the registry spent on the pull, and how
        // many of the machine's cores the two kept busy on average.
        println!(
            "run  pull_s  MB/s   rss_idle_MiB  peak_rss_MiB  second_pull_ms  berthd_cpu_s  registry_cpu_s  cores_busy"
        );
        let reg_pid = reg.pid().expect("registry runs");
        let req = || PullImageRequest {
            image: Some(ImageSpec {
                image: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        for run in 1..=runs {
            let b = Berthd::start().await;
            let pid = b.pid().as_raw();
            let idle = proc_kb(&format!("/proc/{}/status", pid), "VmRSS:");
            let mut c = b.image().await;
            let cpu0 = (cpu_seconds(pid), cpu_seconds(reg_pid));
            let t = Instant::now();
            c.pull_image(req()).await.expect("pull");
            let secs = t.elapsed().as_secs_f64();
            let cpu = (cpu_seconds(pid) - cpu0.0, cpu_seconds(reg_pid) - cpu0.1);
            let peak = proc_kb(&format!("/proc/{}/status", pid), "VmHWM:");
            if run == 1 {
                timeline(&b.log());
            }
            let t = Instant::now();
            c.pull_image(req()).await.expect("second pull");
            let again = t.elapsed().as_secs_f64() * 1e3;
            println!(
                "{run:>3}  {secs:>6.2}  {:>5.0}  {:>12.1}  {:>12.1}  {again:>14.1}  {:>12.2}  {:>14.2}  {:>10.2}",
                pushed.layers_size() as f64 / 1e6 / secs,
                idle as f64 / 1024.0,
                peak as f64 / 1024.0,
                cpu.0,
                cpu.1,
                (cpu.0 + cpu.1) / secs,
            );
        }

        let Some(socket) = std::env::var_os("CONTAINERD_SOCKET") else {
            return;
        };
        let pid: i32 = std::env::var("CONTAINERD_PID")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut c = ImageServiceClient::new(
            connect(std::path::Path::new(&socket))
                .await
                .expect("containerd socket"),
        );
        println!("containerd ({}):", socket.to_string_lossy());
        println!("run  pull_s  MB/s   peak_rss_MiB (containerd since its start)");
        for run in 1..=runs {
            let t = Instant::now();
            c.pull_image(req()).await.expect("containerd pull");
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{run:>3}  {secs:>6.2}  {:>5.0}  {:>12.1}",
                pushed.layers_size() as f64 / 1e6 / secs,
                proc_kb(&format!("/proc/{}/status", pid), "VmHWM:") as f64 / 1024.0
            );
            c.remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
            })
            .await
            .expect("containerd rmi");
        }
    });
}
