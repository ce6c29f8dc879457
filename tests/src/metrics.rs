//! berthd's Prometheus endpoint as tests and benchmarks read it.

use std::collections::HashMap;
use std::io::{Read, Write};

use crate::Berthd;

/// The metrics address berthd logged (it was started with `[metrics]
/// address`); the endpoint may come up just after the CRI socket, so the
/// log is read again for up to 10 s.
pub fn address(b: &Berthd) -> String {
    let logged = || {
        b.log()
            .lines()
            .filter(|l| l.contains("metrics on /metrics"))
            .find_map(|l| {
                Some(
                    l.split("address=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .to_string(),
                )
            })
    };
    for _ in 0..200 {
        if let Some(a) = logged() {
            return a;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no metrics address in the log:\n{}", b.log())
}

/// `GET /metrics`: the exposition text.
pub fn get(addr: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// Each sample of the exposition text, by its name and labels as written
/// (`berth_start_stage_duration_seconds_sum{stage="monitor"}`).
pub fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The mean of each pod start step between two [`samples`] of berthd's
/// metrics, in ms: the three RPCs, berthd's stages, and each CNI plugin
/// execution by plugin and command (a plugin's delegates, such as
/// bridge's IPAM, within its time).
pub fn step_means(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> String {
    let mean = |series: &str| {
        let d = |suffix: &str| {
            let k = series.replacen('{', &format!("{suffix}{{"), 1);
            after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
        };
        let n = d("_count");
        (n > 0.0).then(|| d("_sum") / n * 1e3)
    };
    let mut out = Vec::new();
    for rpc in ["RunPodSandbox", "CreateContainer", "StartContainer"] {
        let s = format!(
            "berth_grpc_request_duration_seconds{{rpc=\"/runtime.v1.RuntimeService/{rpc}\",code=\"Ok\"}}"
        );
        if let Some(ms) = mean(&s) {
            out.push(format!("{rpc} {ms:.1} ms"));
        }
    }
    for stage in ["namespaces", "network", "rootfs", "monitor"] {
        let s = format!("berth_start_stage_duration_seconds{{stage=\"{stage}\"}}");
        if let Some(ms) = mean(&s) {
            out.push(format!("{stage} {ms:.1} ms"));
        }
    }
    let cni = "berth_cni_plugin_duration_seconds_count{";
    let mut plugins: Vec<&String> = after.keys().filter(|k| k.starts_with(cni)).collect();
    plugins.sort();
    for k in plugins {
        let labels = &k[cni.len()..k.len() - 1];
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let series = format!("berth_cni_plugin_duration_seconds{{{labels}}}");
        if let Some(ms) = mean(&series) {
            let failed = if label("outcome") == "ok" {
                ""
            } else {
                " (failed)"
            };
            out.push(format!(
                "cni {} {}{failed} {ms:.1} ms",
                label("plugin"),
                label("command")
            ));
        }
    }
    out.join(", ")
}
