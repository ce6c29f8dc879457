//! The crash matrix: berthd killed (SIGKILL, from inside, at a named crash
//! point of a debug build: `berth_db::crash`) between every two steps of
//! PullImage, RunPodSandbox, CreateContainer, StartContainer,
//! StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox,
//! RemoveImage and the image GC, in the middle of one pod's whole life.
//! Each time berthd is started again, and then:
//! - every object a call acknowledged before the crash is there, in the
//!   state it was left in (a started container still runs, a READY pod
//!   still has its IP);
//! - the kubelet's way on, retrying the call that died and the rest of the
//!   life, works (no "name is reserved" for ever, no stuck removal);
//! - nothing is left: mounts, namespace pins, cgroups, monitors and other
//!   processes, state files, IPs host-local holds, iptables rules, image
//!   store files (blobs, snapshots, leases, temp files).

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use berth_tests::net::TestNet;
use berth_tests::soak::{Census, census};
use berth_tests::{Berthd, Options};
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use tonic::transport::Channel;

/// Every crash point, in the order the life reaches them.
const POINTS: &[&str] = &[
    "pull:unpacked",
    "pull:recorded",
    "run_pod:network_added",
    "run_pod:made",
    "run_pod:saved",
    "create:leased",
    "create:rootfs",
    "create:monitor",
    "create:saved",
    "start:told",
    "stop:signalled",
    "remove_container:deleted",
    "remove_container:released",
    "stop_pod:containers_stopped",
    "pod:network_deleted",
    "remove_pod:containers_removed",
    "remove_pod:torn_down",
    "image_remove:unrecorded",
    "gc:blobs_removed",
];

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Step {
    Pull,
    RunPod,
    Create,
    Start,
    Stop,
    RemoveContainer,
    StopPod,
    RemovePod,
    RemoveImage,
}

const LIFE: [Step; 9] = [
    Step::Pull,
    Step::RunPod,
    Step::Create,
    Step::Start,
    Step::Stop,
    Step::RemoveContainer,
    Step::StopPod,
    Step::RemovePod,
    Step::RemoveImage,
];

/// One pod's life against one berthd.
struct Life {
    image: String,
    pod_config: PodSandboxConfig,
    pod: Option<String>,
    ctr: Option<String>,
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

impl Life {
    async fn step(&mut self, s: Step) -> Result<(), tonic::Status> {
        let pod = self.pod.clone().unwrap_or_default();
        let ctr = self.ctr.clone().unwrap_or_default();
        match s {
            Step::Pull => {
                self.img
                    .pull_image(PullImageRequest {
                        image: Some(self.spec()),
                        ..Default::default()
                    })
                    .await?;
            }
            Step::RunPod => {
                let id = self
                    .rt
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(self.pod_config.clone()),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                self.pod = Some(id);
            }
            Step::Create => {
                // Ends on SIGTERM at once (a shell as PID 1 only dies of
                // the signals it traps).
                let script = "trap 'exit 0' TERM; sleep 1000 & wait";
                let id = self
                    .rt
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: pod,
                        config: Some(ContainerConfig {
                            metadata: Some(ContainerMetadata {
                                name: "main".into(),
                                attempt: 0,
                            }),
                            image: Some(self.spec()),
                            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
                            log_path: "main.log".into(),
                            ..Default::default()
                        }),
                        sandbox_config: Some(self.pod_config.clone()),
                    })
                    .await?
                    .into_inner()
                    .container_id;
                self.ctr = Some(id);
            }
            Step::Start => {
                // As the kubelet: a container that already runs (a start
                // whose answer was lost) is not started again.
                if self.container_state().await == Some(ContainerState::ContainerCreated) {
                    self.rt
                        .start_container(StartContainerRequest { container_id: ctr })
                        .await?;
                }
            }
            Step::Stop => {
                self.rt
                    .stop_container(StopContainerRequest {
                        container_id: ctr,
                        timeout: 10,
                    })
                    .await?;
            }
            Step::RemoveContainer => {
                self.rt
                    .remove_container(RemoveContainerRequest { container_id: ctr })
                    .await?;
            }
            Step::StopPod => {
                self.rt
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod,
                    })
                    .await?;
            }
            Step::RemovePod => {
                self.rt
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod,
                    })
                    .await?;
            }
            Step::RemoveImage => {
                self.img
                    .remove_image(RemoveImageRequest {
                        image: Some(self.spec()),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    fn spec(&self) -> ImageSpec {
        ImageSpec {
            image: self.image.clone(),
            ..Default::default()
        }
    }

    async fn container_state(&mut self) -> Option<ContainerState> {
        let id = self.ctr.clone()?;
        let st = self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
            .ok()?
            .into_inner()
            .status?;
        ContainerState::try_from(st.state).ok()
    }

    async fn pod_status(&mut self) -> Option<PodSandboxStatus> {
        let id = self.pod.clone()?;
        self.rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: false,
            })
            .await
            .ok()?
            .into_inner()
            .status
    }

    async fn image_listed(&mut self) -> bool {
        let spec = self.spec();
        self.img
            .image_status(ImageStatusRequest {
                image: Some(spec),
                verbose: false,
            })
            .await
            .expect("image status")
            .into_inner()
            .image
            .is_some()
    }
}

/// After the restart: what was acknowledged before the crash in `at` is
/// there, as it was left.
async fn check_acknowledged(point: &str, at: Step, life: &mut Life, net: &TestNet) {
    let done = |s: Step| s < at;
    // (A call that died may or may not have taken effect.)
    if at != Step::Pull && at != Step::RemoveImage {
        assert_eq!(
            life.image_listed().await,
            done(Step::Pull),
            "{point}: the image"
        );
    }
    if done(Step::RunPod) && !done(Step::RemovePod) {
        let st = life
            .pod_status()
            .await
            .unwrap_or_else(|| panic!("{point}: the acknowledged pod is gone"));
        let ready = st.state == PodSandboxState::SandboxReady as i32;
        match at {
            s if s < Step::StopPod => {
                assert!(ready, "{point}: the pod is not READY: {st:?}");
                let ip = st.network.map(|n| n.ip).unwrap_or_default();
                assert!(!ip.is_empty(), "{point}: a READY pod without its IP");
                assert!(
                    net.allocated().iter().any(|a| a == &ip),
                    "{point}: {ip} is not held by host-local: {:?}",
                    net.allocated()
                );
            }
            Step::StopPod => {}
            _ => assert!(!ready, "{point}: a stopped pod is READY again: {st:?}"),
        }
    }
    if done(Step::Create) && !done(Step::RemoveContainer) && !done(Step::RemovePod) {
        let state = life.container_state().await;
        let want: &[ContainerState] = match at {
            Step::Start => &[
                ContainerState::ContainerCreated,
                ContainerState::ContainerRunning,
            ],
            Step::Stop => &[
                ContainerState::ContainerRunning,
                ContainerState::ContainerExited,
            ],
            Step::RemoveContainer | Step::StopPod | Step::RemovePod => {
                &[ContainerState::ContainerExited]
            }
            _ if done(Step::Start) => &[ContainerState::ContainerRunning],
            _ => &[ContainerState::ContainerCreated],
        };
        assert!(
            state.is_some_and(|s| want.contains(&s)),
            "{point}: the container is {state:?}, not one of {want:?}"
        );
    }
}

/// Polls until the node census equals `want`, 30 s at most.
async fn settle(b: &Berthd, net: &TestNet, parent: &str, want: &Census) -> Census {
    let mut now = census(b, net, parent).node();
    for _ in 0..60 {
        if now == *want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = census(b, net, parent).node();
    }
    now
}

fn portmap() -> serde_json::Value {
    serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})
}

fn pod_config(b: &Berthd, parent: &str) -> PodSandboxConfig {
    let mut p = berth_tests::bench::pod_config(b, "crashpod", parent);
    p.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 20998,
        host_ip: String::new(),
    }];
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_loses_nothing_acknowledged_and_leaks_nothing() {
    let (_reg, image) = berth_tests::bench::registry_with_busybox("crash").await;
    let parent = berth_tests::cgroup::unique_parent("crash");
    // portmap's shared chains, made by the first pod ever, are not a leak.
    {
        let b = Berthd::start().await;
        let net = TestNet::install(&b, 10, &[portmap()]);
        let mut life = Life {
            image: image.clone(),
            pod_config: pod_config(&b, &parent),
            pod: None,
            ctr: None,
            rt: b.runtime().await,
            img: b.image().await,
        };
        for s in LIFE {
            life.step(s).await.expect("warm-up");
        }
        drop(net);
    }
    for (n, point) in POINTS.iter().enumerate() {
        let mut b = Berthd::start_with(Options {
            env: vec![("BERTH_CRASH_AT".into(), point.to_string())],
            ..Default::default()
        })
        .await;
        let net = TestNet::install(&b, 11 + n as u32, &[portmap()]);
        let base = census(&b, &net, &parent).node();
        let mut life = Life {
            image: image.clone(),
            pod_config: pod_config(&b, &parent),
            pod: None,
            ctr: None,
            rt: b.runtime().await,
            img: b.image().await,
        };
        let mut crashed = None;
        for s in LIFE {
            if let Err(e) = life.step(s).await {
                crashed = Some((s, e));
                break;
            }
        }
        let (at, e) = crashed.unwrap_or_else(|| panic!("{point}: never reached"));
        let status = b.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "{point}: {at:?} failed, but berthd did not die: {e:?}\n{}",
                b.log()
            )
        });
        assert_eq!(status.signal(), Some(9), "{point}: {status}");
        assert!(
            b.log().contains(&format!("crash point {point}")),
            "{point}: died elsewhere:\n{}",
            b.log()
        );
        b.restart().await;
        life.rt = b.runtime().await;
        life.img = b.image().await;
        check_acknowledged(point, at, &mut life, &net).await;
        // The kubelet goes on: the call that died again, then the rest.
        for s in LIFE.into_iter().filter(|s| *s >= at) {
            life.step(s).await.unwrap_or_else(|e| {
                panic!("{point}: after the restart, {s:?}: {e:?}\n{}", b.log())
            });
        }
        let after = settle(&b, &net, &parent, &base).await;
        assert_eq!(after, base, "{point}: left behind\n{}", b.log());
        eprintln!("{point}: crashed in {at:?}; acknowledged objects kept, nothing left");
    }
    berth_tests::bench::remove_shared_parent(&parent);
}
