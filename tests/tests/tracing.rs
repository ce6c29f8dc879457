//! OpenTelemetry traces: berthd exporting over OTLP/gRPC to a real
//! receiver (the collector's TraceService from the OpenTelemetry protos)
//! during real work: a pull, a pod on the CNI bridge, a container, a
//! failing call, and a call that carries the caller's traceparent.

use std::time::Duration;

use berth_tests::net::TestNet;
use berth_tests::otlp::{Receiver, Span, ancestry};
use berth_tests::{Berthd, Options};
use cri_api::v1::*;
use nix::sys::signal::Signal;

/// The span of the CRI call `rpc` (e.g. `RuntimeService/RunPodSandbox`).
fn call<'a>(spans: &'a [Span], rpc: &str) -> Vec<&'a Span> {
    let name = format!("/runtime.v1.{rpc}");
    spans.iter().filter(|s| s.name == name).collect()
}

/// The spans named `name` whose ancestry includes `root`.
fn under<'a>(spans: &'a [Span], root: &Span, name: &str) -> Vec<&'a Span> {
    descendants(spans, root)
        .into_iter()
        .filter(|s| s.name == name)
        .collect()
}

fn descendants<'a>(spans: &'a [Span], root: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| {
            s.trace_id == root.trace_id
                && s.span_id != root.span_id
                && ancestry(spans, &s.span_id)
                    .iter()
                    .any(|a| a.span_id == root.span_id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_calls_and_their_steps_arrive_as_otlp_spans() {
    let receiver = Receiver::start().await;
    let (_reg, image) = berth_tests::bench::registry_with_busybox("t").await;
    let b = Berthd::start_with(Options {
        config: format!(
            "[tracing]\nendpoint = \"{}\"\nsampling_ratio = 1.0\n",
            receiver.endpoint
        ),
        // Batches out every 100 ms instead of 5 s.
        env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())],
        ..Default::default()
    })
    .await;
    let _net = TestNet::install(&b, 31, &[]);
    b.pull(&image, None).await.expect("pull");
    let parent = berth_tests::cgroup::unique_parent("tracing");
    let mut c = b.runtime().await;
    let config = berth_tests::bench::pod_config(&b, "t", &parent);
    let pod = berth_tests::bench::run_pod(&mut c, &config).await;
    let sleep = ["/bin/sleep", "1000"];
    let ctr = berth_tests::bench::start_container(
        &mut c,
        &pod,
        &config,
        &image,
        "s",
        &sleep,
        "s.log".into(),
    )
    .await;
    c.container_status(ContainerStatusRequest {
        container_id: "nosuchcontainer".into(),
        verbose: false,
    })
    .await
    .expect_err("unknown");
    // The kubelet with its tracing on sends its span as the parent.
    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut version = tonic::Request::new(VersionRequest::default());
    version.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01")
            .parse()
            .expect("header"),
    );
    c.version(version).await.expect("version");

    let spans = receiver
        .wait_for(Duration::from_secs(30), |s| {
            ["RuntimeService/Version", "RuntimeService/StartContainer"]
                .iter()
                .all(|rpc| !call(s, rpc).is_empty())
        })
        .await;
    let dump = || format!("{spans:#?}\n{}", b.log());

    let run = call(&spans, "RuntimeService/RunPodSandbox");
    let [run] = run[..] else {
        panic!("one RunPodSandbox span: {}", dump())
    };
    assert_eq!(run.attr("pod_id"), Some(pod.as_str()), "{}", dump());
    assert_eq!(run.kind, 2, "a server span: {}", dump());
    assert_eq!(run.service, "berthd", "{}", dump());
    assert!(run.parent.is_empty(), "{}", dump());
    for step in ["namespaces", "network"] {
        assert_eq!(under(&spans, run, step).len(), 1, "{step}: {}", dump());
    }
    // The test network's chain: bridge (with host-local) and portmap, ADD.
    let cni: Vec<_> = descendants(&spans, run)
        .into_iter()
        .filter(|s| s.name.starts_with("cni "))
        .collect();
    assert!(
        cni.iter().any(|s| s.name == "cni bridge ADD")
            && cni.iter().all(|s| s.attr("command") == Some("ADD")),
        "{}",
        dump()
    );

    let [create] = call(&spans, "RuntimeService/CreateContainer")[..] else {
        panic!("one CreateContainer span: {}", dump())
    };
    assert_eq!(create.attr("pod_id"), Some(pod.as_str()), "{}", dump());
    assert_eq!(
        create.attr("container_id"),
        Some(ctr.as_str()),
        "{}",
        dump()
    );
    for step in ["rootfs", "monitor"] {
        assert_eq!(under(&spans, create, step).len(), 1, "{step}: {}", dump());
    }
    let [start] = call(&spans, "RuntimeService/StartContainer")[..] else {
        panic!("one StartContainer span: {}", dump())
    };
    assert_eq!(start.attr("container_id"), Some(ctr.as_str()), "{}", dump());

    let [pull] = call(&spans, "ImageService/PullImage")[..] else {
        panic!("one PullImage span: {}", dump())
    };
    assert_eq!(pull.attr("image"), Some(image.as_str()), "{}", dump());
    assert_eq!(under(&spans, pull, "pull").len(), 1, "{}", dump());
    // busybox: one layer and a config blob.
    assert_eq!(under(&spans, pull, "fetch_blob").len(), 2, "{}", dump());
    assert_eq!(under(&spans, pull, "unpack").len(), 1, "{}", dump());

    let [failed] = call(&spans, "RuntimeService/ContainerStatus")[..] else {
        panic!("one ContainerStatus span: {}", dump())
    };
    assert_eq!(failed.status, 2, "an error status: {}", dump());
    assert_eq!(failed.attr("rpc.grpc.status_code"), Some("5"), "{}", dump());
    assert_eq!(
        failed.attr("container_id"),
        Some("nosuchcontainer"),
        "{}",
        dump()
    );

    let [v] = call(&spans, "RuntimeService/Version")[..] else {
        panic!("one Version span: {}", dump())
    };
    assert_eq!(
        (v.trace_id.as_str(), v.parent.as_str()),
        (trace_id, parent_id),
        "{}",
        dump()
    );
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove");
    berth_tests::bench::remove_shared_parent(&parent);
}

/// Only the standard environment: on with an endpoint, off again with
/// `OTEL_SDK_DISABLED=true`. The exporter flushes at stop, so no spans
/// after a stop means none were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_otel_environment_turns_it_on_and_off() {
    for (disabled, wanted) in [("false", true), ("true", false)] {
        let receiver = Receiver::start().await;
        let mut b = Berthd::start_with(Options {
            env: vec![
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
                    receiver.endpoint.clone(),
                ),
                ("OTEL_SERVICE_NAME".into(), "berth-node-7".into()),
                ("OTEL_SDK_DISABLED".into(), disabled.into()),
            ],
            ..Default::default()
        })
        .await;
        let mut c = b.runtime().await;
        c.version(VersionRequest::default()).await.expect("version");
        drop(c);
        b.stop_with(Signal::SIGTERM);
        let spans = receiver.spans();
        let versions = call(&spans, "RuntimeService/Version");
        if wanted {
            assert!(
                versions.iter().any(|s| s.service == "berth-node-7"),
                "{spans:#?}\n{}",
                b.log()
            );
        } else {
            assert!(spans.is_empty(), "{spans:#?}");
        }
    }
}

/// A collector that accepts connections and never answers: calls go on,
/// spans are dropped, and berthd still stops when told (the harness gives
/// it 30 s; berthd waits at most 2 s for its last batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_holds_up_no_call_and_no_stop() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("address"));
    // Accepted (by the kernel's backlog) and never read from.
    let mut b = Berthd::start_with(Options {
        config: format!("[tracing]\nendpoint = \"{endpoint}\"\n"),
        env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into())],
        ..Default::default()
    })
    .await;
    let mut c = b.runtime().await;
    for _ in 0..200 {
        c.version(VersionRequest::default()).await.expect("version");
        c.container_status(ContainerStatusRequest {
            container_id: "nosuchcontainer".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown");
    }
    drop(c);
    let status = b.stop_with(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", b.log());
    drop(silent);
}
