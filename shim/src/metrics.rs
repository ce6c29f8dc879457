//! berthd's own metrics, in the Prometheus text format, on
//! `[metrics] address` (off by default): CRI calls (latency histogram and
//! count by RPC and gRPC code), the pod and container start stages, image
//! pulls (count by outcome, bytes, duration, in progress), CNI plugin
//! executions (latency by plugin, command and outcome), OOM kills, running
//! containers and monitors, and the process's own figures. Names carry the
//! `berth_` prefix, as containerd's and CRI-O's carry theirs; process
//! figures use the standard `process_` names.
//!
//! Recording is a short lock on one table; nothing is kept per container,
//! so the series are bounded by the RPCs, codes, stages and plugins.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Label values, in the order of the metric's label names.
type Labels = Vec<String>;

#[derive(Default)]
struct Table {
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
    counters: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    gauges: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut t = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    f(t.get_or_insert_with(Table::default))
}

/// What each metric is: its help text and label names.
const METRICS: &[(&str, &str, &str, &[&str])] = &[
    (
        "berth_grpc_request_duration_seconds",
        "histogram",
        "Time from a CRI call's arrival to its answer's headers.",
        &["rpc", "code"],
    ),
    (
        "berth_grpc_requests_total",
        "counter",
        "CRI calls answered, by RPC and gRPC code.",
        &["rpc", "code"],
    ),
    (
        "berth_start_stage_duration_seconds",
        "histogram",
        "Time of one stage of starting a pod or container: namespaces, network, rootfs, monitor.",
        &["stage"],
    ),
    (
        "berth_cni_plugin_duration_seconds",
        "histogram",
        "Time of one CNI plugin execution.",
        &["plugin", "command", "outcome"],
    ),
    (
        "berth_image_pulls_total",
        "counter",
        "Image pulls finished, by outcome.",
        &["outcome"],
    ),
    (
        "berth_image_pull_duration_seconds",
        "histogram",
        "Time of one image pull.",
        &["outcome"],
    ),
    (
        "berth_image_pull_bytes_total",
        "counter",
        "Bytes of the images pulled (manifest, config and layers as the registry sent them).",
        &[],
    ),
    (
        "berth_image_pulls_in_progress",
        "gauge",
        "Image pulls under way.",
        &[],
    ),
    (
        "berth_container_oom_kills_total",
        "counter",
        "Containers that ended killed by the kernel's OOM killer.",
        &[],
    ),
];

/// A CRI call answered.
pub fn rpc(rpc: &str, code: &str, took: Duration) {
    let labels = vec![rpc.to_string(), code.to_string()];
    with(|t| {
        t.histograms
            .entry("berth_grpc_request_duration_seconds")
            .or_default()
            .entry(labels.clone())
            .or_default()
            .observe(took.as_secs_f64());
        *t.counters
            .entry("berth_grpc_requests_total")
            .or_default()
            .entry(labels)
            .or_default() += 1.0;
    });
}

/// One stage of a start: "namespaces", "network", "rootfs", "monitor".
pub fn stage(stage: &'static str, took: Duration) {
    with(|t| {
        t.histograms
            .entry("berth_start_stage_duration_seconds")
            .or_default()
            .entry(vec![stage.to_string()])
            .or_default()
            .observe(took.as_secs_f64());
    });
}

/// One CNI plugin execution.
pub fn cni(plugin: &str, command: &str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    with(|t| {
        t.histograms
            .entry("berth_cni_plugin_duration_seconds")
            .or_default()
            .entry(vec![
                plugin.to_string(),
                command.to_string(),
                outcome.into(),
            ])
            .or_default()
            .observe(took.as_secs_f64());
    });
}

/// A pull under way: counted in progress until dropped (also when the
/// caller gives up and the call is cancelled).
pub struct Pulling(());

impl Pulling {
    pub fn start() -> Pulling {
        gauge_add("berth_image_pulls_in_progress", 1.0);
        Pulling(())
    }
}

impl Drop for Pulling {
    fn drop(&mut self) {
        gauge_add("berth_image_pulls_in_progress", -1.0);
    }
}

/// A pull ended; `bytes` of a successful one.
pub fn pull_done(ok: bool, bytes: u64, took: Duration) {
    let outcome = if ok { "ok" } else { "error" }.to_string();
    with(|t| {
        *t.counters
            .entry("berth_image_pulls_total")
            .or_default()
            .entry(vec![outcome.clone()])
            .or_default() += 1.0;
        t.histograms
            .entry("berth_image_pull_duration_seconds")
            .or_default()
            .entry(vec![outcome])
            .or_default()
            .observe(took.as_secs_f64());
        if ok {
            *t.counters
                .entry("berth_image_pull_bytes_total")
                .or_default()
                .entry(Vec::new())
                .or_default() += bytes as f64;
        }
    });
}

/// A container's exit recorded as an OOM kill.
pub fn oom_kill() {
    with(|t| {
        *t.counters
            .entry("berth_container_oom_kills_total")
            .or_default()
            .entry(Vec::new())
            .or_default() += 1.0;
    });
}

fn gauge_add(name: &'static str, by: f64) {
    with(|t| {
        *t.gauges
            .entry(name)
            .or_default()
            .entry(Vec::new())
            .or_default() += by;
    });
}

/// Figures taken at each scrape.
pub struct Now {
    pub containers_running: usize,
    pub monitors: usize,
    pub pods_ready: usize,
}

/// The exposition: every metric with its HELP and TYPE, then `now`'s
/// gauges and the process's own figures.
pub fn render(now: &Now) -> String {
    let mut out = String::new();
    with(|t| {
        for (name, kind, help, label_names) in METRICS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let labels = |values: &[String], extra: Option<(&str, String)>| -> String {
                let mut parts: Vec<String> = label_names
                    .iter()
                    .zip(values)
                    .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                    .collect();
                if let Some((n, v)) = extra {
                    parts.push(format!("{n}=\"{v}\""));
                }
                if parts.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", parts.join(","))
                }
            };
            match *kind {
                "histogram" => {
                    for (values, h) in t.histograms.get(name).into_iter().flatten() {
                        for (b, c) in BUCKETS.iter().zip(&h.counts) {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {c}",
                                labels(values, Some(("le", b.to_string())))
                            );
                        }
                        let inf = labels(values, Some(("le", "+Inf".into())));
                        let _ = writeln!(out, "{name}_bucket{inf} {}", h.count);
                        let _ = writeln!(out, "{name}_sum{} {}", labels(values, None), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", labels(values, None), h.count);
                    }
                }
                _ => {
                    let series = if *kind == "counter" {
                        t.counters.get(name)
                    } else {
                        t.gauges.get(name)
                    };
                    let empty = BTreeMap::from([(Vec::new(), 0.0)]);
                    let series = match series {
                        Some(s) => s,
                        // A metric without labels is there from the start.
                        None if label_names.is_empty() => &empty,
                        None => continue,
                    };
                    for (values, v) in series {
                        let _ = writeln!(out, "{name}{} {v}", labels(values, None));
                    }
                }
            }
        }
    });
    for (name, help, v) in [
        (
            "berth_containers_running",
            "Containers running now.",
            now.containers_running as f64,
        ),
        (
            "berth_monitors",
            "berth-monitor processes alive now (one per container not yet removed).",
            now.monitors as f64,
        ),
        (
            "berth_pods_ready",
            "Pod sandboxes READY now.",
            now.pods_ready as f64,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    process(&mut out);
    out
}

/// The standard process metrics, from /proc/self.
fn process(out: &mut String) {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as f64;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0) as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Max open files")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    for (name, kind, help, v) in [
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            (field(14) + field(15)) / tick,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            field(24) * page,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            field(23),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            boot + field(22) / tick,
        ),
        ("process_open_fds", "gauge", "Open file descriptors.", fds),
        (
            "process_max_fds",
            "gauge",
            "The open file descriptor limit.",
            max_fds,
        ),
        ("process_threads", "gauge", "OS threads.", field(20)),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        rpc("/x.Y/\"Z\"", "OK", Duration::from_millis(3));
        rpc("/x.Y/\"Z\"", "OK", Duration::from_millis(30));
        let text = render(&Now {
            containers_running: 2,
            monitors: 3,
            pods_ready: 1,
        });
        let series = r#"rpc="/x.Y/\"Z\"",code="OK""#;
        assert!(
            text.contains(&format!("berth_grpc_requests_total{{{series}}} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "berth_grpc_request_duration_seconds_bucket{{{series},le=\"0.005\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "berth_grpc_request_duration_seconds_bucket{{{series},le=\"0.05\"}} 2"
            )),
            "{text}"
        );
        assert!(text.contains("berth_containers_running 2"), "{text}");
        assert!(text.contains("berth_container_oom_kills_total 0"), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
    }
}
