//! The Prometheus endpoint, scraped during real work (pulls, a pod on the
//! CNI bridge, a container, a failing call, an OOM kill) and parsed with
//! prometheus_client's own parser (PyPI), as a scraper would.

use std::io::Write;
use std::time::Duration;

use berth_tests::net::TestNet;
use berth_tests::{Berthd, Options};
use cri_api::v1::*;
use serde_json::Value;

use berth_tests::metrics::get;

/// `GET /metrics`, parsed: family name -> {type, samples}.
fn scrape(addr: &str) -> Value {
    let body = get(addr);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/pyclient/run.sh");
    let mut child = std::process::Command::new(script)
        .args(["--script", "metrics_parse.py"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed");
    let out = child.wait_with_output().expect("parse");
    assert!(
        out.status.success(),
        "the exposition does not parse: {out:?}\n{body}"
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn ooms(m: &Value) -> Option<f64> {
    value(
        m,
        "berth_container_oom_kills",
        "berth_container_oom_kills_total",
        &[],
    )
}

/// The value of the sample `name` whose labels include `labels`.
fn value(m: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m[family]["samples"].as_array()?.iter().find_map(|s| {
        let ok = s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v);
        ok.then(|| s[2].as_f64()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_real_work_in_prometheus_format() {
    let (reg, image) = berth_tests::bench::registry_with_busybox("m").await;
    let b = Berthd::start_with(Options {
        config: "[metrics]\naddress = \"127.0.0.1:0\"\n".into(),
        ..Default::default()
    })
    .await;
    let addr = berth_tests::metrics::address(&b);
    let _net = TestNet::install(&b, 30, &[]);
    b.pull(&image, None).await.expect("pull");
    b.pull(&reg.image("m/busybox:nope"), None)
        .await
        .expect_err("no such tag");
    let parent = berth_tests::cgroup::unique_parent("metrics");
    let mut c = b.runtime().await;
    let config = berth_tests::bench::pod_config(&b, "m", &parent);
    let pod = berth_tests::bench::run_pod(&mut c, &config).await;
    let sleep = ["/bin/sleep", "1000"];
    berth_tests::bench::start_container(&mut c, &pod, &config, &image, "s", &sleep, "s.log".into())
        .await;
    c.container_status(ContainerStatusRequest {
        container_id: "nosuchcontainer".into(),
        verbose: false,
    })
    .await
    .expect_err("unknown");

    let m = scrape(&addr);
    let rpc = |name: &str, code: &str| {
        value(
            &m,
            "berth_grpc_requests",
            "berth_grpc_requests_total",
            &[("rpc", &format!("/runtime.v1.{name}")), ("code", code)],
        )
    };
    assert_eq!(rpc("RuntimeService/RunPodSandbox", "Ok"), Some(1.0), "{m}");
    assert_eq!(rpc("ImageService/PullImage", "Ok"), Some(1.0), "{m}");
    assert_eq!(
        rpc("RuntimeService/ContainerStatus", "NotFound"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        m["berth_grpc_request_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(
        value(
            &m,
            "berth_grpc_request_duration_seconds",
            "berth_grpc_request_duration_seconds_count",
            &[
                ("rpc", "/runtime.v1.RuntimeService/CreateContainer"),
                ("code", "Ok")
            ]
        ),
        Some(1.0),
        "{m}"
    );
    let pulls = |outcome| {
        value(
            &m,
            "berth_image_pulls",
            "berth_image_pulls_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(pulls("ok"), Some(1.0), "{m}");
    assert_eq!(pulls("error"), Some(1.0), "{m}");
    assert!(
        value(
            &m,
            "berth_image_pull_bytes",
            "berth_image_pull_bytes_total",
            &[]
        ) > Some(100_000.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "berth_image_pulls_in_progress",
            "berth_image_pulls_in_progress",
            &[]
        ),
        Some(0.0)
    );
    for stage in ["namespaces", "network", "rootfs", "monitor"] {
        assert_eq!(
            value(
                &m,
                "berth_start_stage_duration_seconds",
                "berth_start_stage_duration_seconds_count",
                &[("stage", stage)]
            ),
            Some(1.0),
            "{stage}: {m}"
        );
    }
    assert_eq!(
        value(
            &m,
            "berth_cni_plugin_duration_seconds",
            "berth_cni_plugin_duration_seconds_count",
            &[("plugin", "bridge"), ("command", "ADD"), ("outcome", "ok")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "berth_containers_running",
            "berth_containers_running",
            &[]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "berth_pods_ready", "berth_pods_ready", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "berth_monitors", "berth_monitors", &[]),
        Some(1.0),
        "{m}"
    );
    assert!(
        value(
            &m,
            "process_resident_memory_bytes",
            "process_resident_memory_bytes",
            &[]
        ) > Some(1e6)
    );
    assert!(value(&m, "process_open_fds", "process_open_fds", &[]) > Some(3.0));
    assert_eq!(ooms(&m), Some(0.0));

    // An OOM kill is counted once it is noticed.
    let hog = [
        "/bin/sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' x)",
    ];
    let hog_config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "hog".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        command: hog.iter().map(|s| s.to_string()).collect(),
        log_path: "hog.log".into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = c
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(hog_config),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    c.start_container(StartContainerRequest { container_id: id })
        .await
        .expect("start");
    for _ in 0..150 {
        if get(&addr).contains("\nberth_container_oom_kills_total 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = scrape(&addr);
    assert_eq!(ooms(&m), Some(1.0), "{m}");
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove");
    berth_tests::bench::remove_shared_parent(&parent);
}
