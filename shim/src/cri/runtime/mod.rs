//! CRI RuntimeService: the trait impl forwards each RPC to its own file.

mod checkpoint_container;
mod container_stats;
pub(super) mod container_status;
mod create_container;
mod exec_sync;
mod get_container_events;
mod list_containers;
mod list_pod_sandbox;
mod metrics;
mod pod_sandbox_stats;
pub(super) mod pod_sandbox_status;
mod remove_container;
mod remove_pod_sandbox;
mod reopen_container_log;
mod run_pod_sandbox;
mod runtime_config;
mod start_container;
mod status;
mod stop_container;
mod stop_pod_sandbox;
mod streaming_urls;
mod update_container_resources;
mod update_pod_sandbox_resources;
mod update_runtime_config;
mod version;

use std::sync::Arc;

use cri_api::v1::runtime_service_server::RuntimeService;
use cri_api::v1::*;
use tonic::codegen::BoxStream;
use tonic::{Request, Response};

use super::{CriResult, to_the_end};
use crate::daemon::Daemon;

/// A list sent as a stream of at most 500 items per message, every item
/// exactly once (the `Stream*` RPCs).
fn chunked<T: Clone + Send + 'static, R: Send + 'static>(
    items: Vec<T>,
    wrap: fn(Vec<T>) -> R,
) -> BoxStream<R> {
    let msgs: Vec<Result<R, tonic::Status>> =
        items.chunks(500).map(|c| Ok(wrap(c.to_vec()))).collect();
    Box::pin(futures_util::stream::iter(msgs))
}

pub struct RuntimeSvc {
    daemon: Arc<Daemon>,
}

impl RuntimeSvc {
    pub fn new(daemon: Arc<Daemon>) -> RuntimeSvc {
        RuntimeSvc { daemon }
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeSvc {
    type StreamPodSandboxesStream = BoxStream<StreamPodSandboxesResponse>;
    type StreamContainersStream = BoxStream<StreamContainersResponse>;
    type StreamContainerStatsStream = BoxStream<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = BoxStream<StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = BoxStream<ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = BoxStream<StreamPodSandboxMetricsResponse>;

    async fn version(&self, r: Request<VersionRequest>) -> CriResult<VersionResponse> {
        Ok(Response::new(version::version(r.into_inner())))
    }
    async fn status(&self, r: Request<StatusRequest>) -> CriResult<StatusResponse> {
        Ok(Response::new(status::status(&self.daemon, r.into_inner())))
    }
    async fn runtime_config(
        &self,
        r: Request<RuntimeConfigRequest>,
    ) -> CriResult<RuntimeConfigResponse> {
        Ok(Response::new(runtime_config::runtime_config(
            &self.daemon,
            r.into_inner(),
        )))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<RunPodSandboxRequest>,
    ) -> CriResult<RunPodSandboxResponse> {
        let (d, req) = (self.daemon.clone(), r.into_inner());
        to_the_end("RunPodSandbox", async move {
            run_pod_sandbox::run_pod_sandbox(&d, req).await
        })
        .await
    }
    async fn stop_pod_sandbox(
        &self,
        r: Request<StopPodSandboxRequest>,
    ) -> CriResult<StopPodSandboxResponse> {
        stop_pod_sandbox::stop_pod_sandbox(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn remove_pod_sandbox(
        &self,
        r: Request<RemovePodSandboxRequest>,
    ) -> CriResult<RemovePodSandboxResponse> {
        remove_pod_sandbox::remove_pod_sandbox(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn pod_sandbox_status(
        &self,
        r: Request<PodSandboxStatusRequest>,
    ) -> CriResult<PodSandboxStatusResponse> {
        pod_sandbox_status::pod_sandbox_status(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn list_pod_sandbox(
        &self,
        r: Request<ListPodSandboxRequest>,
    ) -> CriResult<ListPodSandboxResponse> {
        list_pod_sandbox::list_pod_sandbox(&self.daemon, r.into_inner())
            .await
            .map(Response::new)
    }
    async fn update_runtime_config(
        &self,
        r: Request<UpdateRuntimeConfigRequest>,
    ) -> CriResult<UpdateRuntimeConfigResponse> {
        update_runtime_config::update_runtime_config(&self.daemon, r.into_inner())
            .await
            .map(Response::new)
    }
    async fn create_container(
        &self,
        r: Request<CreateContainerRequest>,
    ) -> CriResult<CreateContainerResponse> {
        let (d, req) = (self.daemon.clone(), crate::cri::take(r));
        to_the_end("CreateContainer", async move {
            create_container::create_container(&d, req).await
        })
        .await
    }
    async fn start_container(
        &self,
        r: Request<StartContainerRequest>,
    ) -> CriResult<StartContainerResponse> {
        start_container::start_container(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn stop_container(
        &self,
        r: Request<StopContainerRequest>,
    ) -> CriResult<StopContainerResponse> {
        stop_container::stop_container(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn remove_container(
        &self,
        r: Request<RemoveContainerRequest>,
    ) -> CriResult<RemoveContainerResponse> {
        remove_container::remove_container(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn container_status(
        &self,
        r: Request<ContainerStatusRequest>,
    ) -> CriResult<ContainerStatusResponse> {
        container_status::container_status(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn list_containers(
        &self,
        r: Request<ListContainersRequest>,
    ) -> CriResult<ListContainersResponse> {
        list_containers::list_containers(&self.daemon, r.into_inner())
            .await
            .map(Response::new)
    }
    async fn stream_pod_sandboxes(
        &self,
        r: Request<StreamPodSandboxesRequest>,
    ) -> CriResult<Self::StreamPodSandboxesStream> {
        let filter = r.into_inner().filter;
        let list =
            list_pod_sandbox::list_pod_sandbox(&self.daemon, ListPodSandboxRequest { filter })
                .await?;
        Ok(Response::new(chunked(list.items, |pod_sandboxes| {
            StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }
    async fn stream_containers(
        &self,
        r: Request<StreamContainersRequest>,
    ) -> CriResult<Self::StreamContainersStream> {
        let filter = r.into_inner().filter;
        let list = list_containers::list_containers(&self.daemon, ListContainersRequest { filter })
            .await?;
        Ok(Response::new(chunked(list.containers, |containers| {
            StreamContainersResponse { containers }
        })))
    }
    async fn update_container_resources(
        &self,
        r: Request<UpdateContainerResourcesRequest>,
    ) -> CriResult<UpdateContainerResourcesResponse> {
        update_container_resources::update_container_resources(&self.daemon, crate::cri::take(r))
            .await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }
    async fn reopen_container_log(
        &self,
        r: Request<ReopenContainerLogRequest>,
    ) -> CriResult<ReopenContainerLogResponse> {
        reopen_container_log::reopen_container_log(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn exec_sync(&self, r: Request<ExecSyncRequest>) -> CriResult<ExecSyncResponse> {
        exec_sync::exec_sync(&self.daemon, crate::cri::take(r))
            .await
            .map(Response::new)
    }
    async fn exec(&self, r: Request<ExecRequest>) -> CriResult<ExecResponse> {
        streaming_urls::exec(&self.daemon, crate::cri::take(r)).map(Response::new)
    }
    async fn attach(&self, r: Request<AttachRequest>) -> CriResult<AttachResponse> {
        streaming_urls::attach(&self.daemon, crate::cri::take(r)).map(Response::new)
    }
    async fn port_forward(&self, r: Request<PortForwardRequest>) -> CriResult<PortForwardResponse> {
        streaming_urls::port_forward(&self.daemon, crate::cri::take(r)).map(Response::new)
    }
    async fn container_stats(
        &self,
        r: Request<ContainerStatsRequest>,
    ) -> CriResult<ContainerStatsResponse> {
        let id = crate::cri::take(r).container_id;
        let stats = container_stats::container_stats(self.daemon.clone(), id).await?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }
    async fn list_container_stats(
        &self,
        r: Request<ListContainerStatsRequest>,
    ) -> CriResult<ListContainerStatsResponse> {
        let filter = r.into_inner().filter;
        let stats = container_stats::list_container_stats(self.daemon.clone(), filter).await?;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }
    async fn stream_container_stats(
        &self,
        r: Request<StreamContainerStatsRequest>,
    ) -> CriResult<Self::StreamContainerStatsStream> {
        let filter = r.into_inner().filter;
        let stats = container_stats::list_container_stats(self.daemon.clone(), filter).await?;
        Ok(Response::new(chunked(stats, |container_stats| {
            StreamContainerStatsResponse { container_stats }
        })))
    }
    async fn pod_sandbox_stats(
        &self,
        r: Request<PodSandboxStatsRequest>,
    ) -> CriResult<PodSandboxStatsResponse> {
        let id = crate::cri::take(r).pod_sandbox_id;
        let stats = pod_sandbox_stats::pod_sandbox_stats(self.daemon.clone(), id).await?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }
    async fn list_pod_sandbox_stats(
        &self,
        r: Request<ListPodSandboxStatsRequest>,
    ) -> CriResult<ListPodSandboxStatsResponse> {
        let filter = r.into_inner().filter;
        let stats = pod_sandbox_stats::list_pod_sandbox_stats(self.daemon.clone(), filter).await?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }
    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<StreamPodSandboxStatsRequest>,
    ) -> CriResult<Self::StreamPodSandboxStatsStream> {
        let filter = r.into_inner().filter;
        let stats = pod_sandbox_stats::list_pod_sandbox_stats(self.daemon.clone(), filter).await?;
        Ok(Response::new(chunked(stats, |pod_sandbox_stats| {
            StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }
    async fn checkpoint_container(
        &self,
        r: Request<CheckpointContainerRequest>,
    ) -> CriResult<CheckpointContainerResponse> {
        // The dump goes on to its end (or its own timeout) and cleans up
        // after itself when the caller gives up.
        let (d, req) = (self.daemon.clone(), crate::cri::take(r));
        to_the_end("CheckpointContainer", async move {
            checkpoint_container::checkpoint_container(&d, req).await?;
            Ok(CheckpointContainerResponse {})
        })
        .await
    }
    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> CriResult<Self::GetContainerEventsStream> {
        Ok(Response::new(get_container_events::get_container_events(
            &self.daemon,
        )))
    }
    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> CriResult<ListMetricDescriptorsResponse> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: metrics::descriptors(),
        }))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> CriResult<ListPodSandboxMetricsResponse> {
        let pod_metrics = metrics::list_pod_sandbox_metrics(self.daemon.clone()).await?;
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
    }
    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<StreamPodSandboxMetricsRequest>,
    ) -> CriResult<Self::StreamPodSandboxMetricsStream> {
        let all = metrics::list_pod_sandbox_metrics(self.daemon.clone()).await?;
        Ok(Response::new(chunked(all, |pod_sandbox_metrics| {
            StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })))
    }
    async fn update_pod_sandbox_resources(
        &self,
        r: Request<UpdatePodSandboxResourcesRequest>,
    ) -> CriResult<UpdatePodSandboxResourcesResponse> {
        update_pod_sandbox_resources::update_pod_sandbox_resources(
            &self.daemon,
            crate::cri::take(r),
        )
        .await
        .map(Response::new)
    }
}
