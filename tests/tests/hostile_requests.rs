//! CRI requests as hostile input: megabyte names and annotations, NUL
//! bytes, log and mount paths that climb out with `..` or start at `/`.
//! Each is refused with the field named, before anything is made: no pod,
//! no container, no file written outside where it belongs.

use std::collections::HashMap;

use berth_tests::setup::{busybox_config, setup};
use cri_api::v1::*;
use tonic::Code;

fn refused(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, field: &str) {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), code, "{field}: {e:?}");
    assert!(e.message().contains(field), "{field}: {}", e.message());
}

async fn pod_count(s: &mut berth_tests::setup::Setup) -> usize {
    s.c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .items
        .len()
}

type PodChange = Box<dyn Fn(&mut PodSandboxConfig)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pod_configs_are_refused_and_leave_nothing() {
    let mut s = setup(busybox_config()).await;
    let pods_before = pod_count(&mut s).await;
    let mut big_annotations = HashMap::new();
    big_annotations.insert("a".to_string(), "x".repeat(3 << 20));
    let cases: Vec<(PodChange, Code, &str)> = vec![
        (
            Box::new(|p| p.metadata.as_mut().expect("m").name = "n".repeat(2 << 20)),
            Code::InvalidArgument,
            "metadata.name",
        ),
        (
            Box::new(|p| p.metadata.as_mut().expect("m").uid = "u\0id".into()),
            Code::InvalidArgument,
            "metadata.uid",
        ),
        (
            Box::new(move |p| p.annotations = big_annotations.clone()),
            Code::ResourceExhausted,
            "annotations",
        ),
        (
            Box::new(|p| p.log_directory = "/var/log/pods/../../../etc".into()),
            Code::InvalidArgument,
            "log_directory",
        ),
    ];
    for (i, (change, code, field)) in cases.into_iter().enumerate() {
        let mut config = s.pod_config.clone();
        config.metadata.as_mut().expect("m").name = format!("hostile-{i}");
        change(&mut config);
        let r =
            s.c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await;
        refused(r, code, field);
    }
    let pods_after = pod_count(&mut s).await;
    assert_eq!(pods_before, pods_after, "no pod was made");
    // A megabyte id is not looked up: it is no id.
    refused(
        s.c.stop_container(StopContainerRequest {
            container_id: "f".repeat(1 << 20),
            timeout: 0,
        })
        .await,
        Code::InvalidArgument,
        "container_id",
    );
    s.remove_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_container_configs_are_refused_and_write_nothing_outside() {
    let mut s = setup(busybox_config()).await;
    // Where an escaping log path would land: beside the pod's log
    // directory and at an absolute path.
    let log_dir = std::path::PathBuf::from(&s.pod_config.log_directory);
    let escape = log_dir.parent().expect("parent").join("escaped.log");
    let absolute = s.b.dir.path().join("absolute.log");
    let cases: Vec<(ContainerConfig, Code, &str)> = vec![
        {
            let mut c = s.config("a", &["true"]);
            c.log_path = "../escaped.log".into();
            (c, Code::InvalidArgument, "log_path")
        },
        {
            let mut c = s.config("b", &["true"]);
            c.log_path = absolute.display().to_string();
            (c, Code::InvalidArgument, "log_path")
        },
        {
            let mut c = s.config("c", &["true"]);
            c.mounts.push(Mount {
                container_path: "/data/../../../etc".into(),
                host_path: s.b.dir.path().display().to_string(),
                ..Default::default()
            });
            (c, Code::InvalidArgument, "mounts.container_path")
        },
        {
            let mut c = s.config("d", &["true"]);
            c.mounts.push(Mount {
                container_path: "/data".into(),
                host_path: "relative/dir".into(),
                ..Default::default()
            });
            (c, Code::InvalidArgument, "mounts.host_path")
        },
        {
            let mut c = s.config("e", &["true"]);
            c.labels.insert("k".into(), "v\0".into());
            (c, Code::InvalidArgument, "labels")
        },
        {
            let mut c = s.config("f", &["true"]);
            c.envs.push(KeyValue {
                key: "BIG".into(),
                value: vec![b'x'; 5 << 20],
            });
            (c, Code::ResourceExhausted, "container config")
        },
        {
            let mut c = s.config("g", &["true"]);
            c.metadata.as_mut().expect("m").name = "g".repeat(1 << 20);
            (c, Code::InvalidArgument, "metadata.name")
        },
    ];
    for (config, code, field) in cases {
        let r =
            s.c.create_container(CreateContainerRequest {
                pod_sandbox_id: s.pod.clone(),
                config: Some(config),
                sandbox_config: Some(s.pod_config.clone()),
            })
            .await;
        refused(r, code, field);
    }
    let containers =
        s.c.list_containers(ListContainersRequest { filter: None })
            .await
            .expect("list")
            .into_inner()
            .containers;
    assert!(containers.is_empty(), "{containers:?}");
    assert!(!escape.exists(), "{} was written", escape.display());
    assert!(!absolute.exists(), "{} was written", absolute.display());
    s.remove_all().await;
}
