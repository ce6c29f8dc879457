//! CRI ImageService.

use std::sync::Arc;

use cri_api::v1::image_service_server::ImageService;
use cri_api::v1::*;
use tonic::Request;
use tonic::codegen::BoxStream;

use super::{CriResult, Daemon, unimplemented};

pub struct ImageSvc {
    #[allow(dead_code)]
    daemon: Arc<Daemon>,
}

impl ImageSvc {
    pub fn new(daemon: Arc<Daemon>) -> ImageSvc {
        ImageSvc { daemon }
    }
}

#[tonic::async_trait]
impl ImageService for ImageSvc {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    async fn list_images(&self, _: Request<ListImagesRequest>) -> CriResult<ListImagesResponse> {
        unimplemented("ListImages")
    }
    async fn stream_images(
        &self,
        _: Request<StreamImagesRequest>,
    ) -> CriResult<Self::StreamImagesStream> {
        unimplemented("StreamImages")
    }
    async fn image_status(&self, _: Request<ImageStatusRequest>) -> CriResult<ImageStatusResponse> {
        unimplemented("ImageStatus")
    }
    async fn pull_image(&self, _: Request<PullImageRequest>) -> CriResult<PullImageResponse> {
        unimplemented("PullImage")
    }
    async fn remove_image(&self, _: Request<RemoveImageRequest>) -> CriResult<RemoveImageResponse> {
        unimplemented("RemoveImage")
    }
    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> CriResult<ImageFsInfoResponse> {
        unimplemented("ImageFsInfo")
    }
}
