//! CRI ImageService: the trait impl forwards each RPC to its own file; the
//! image library (`berth-imageservice`) does the work and knows nothing of
//! gRPC. Its errors become gRPC codes in `error.rs`.

pub(crate) mod error;
mod image_fs_info;
mod image_status;
mod list_images;
mod pull_image;
mod remove_image;

use std::sync::Arc;

use berth_imageservice::ImageService;
use berth_imageservice::db::ImageRecord;
use cri_api::v1::image_service_server::ImageService as CriImageService;
use cri_api::v1::*;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{CriResult, to_the_end};

pub use error::status;

pub struct ImageSvc {
    images: Arc<ImageService>,
}

impl ImageSvc {
    pub fn new(images: Arc<ImageService>) -> ImageSvc {
        ImageSvc { images }
    }
}

/// The image an RPC must be given, or InvalidArgument.
fn required_image(spec: Option<ImageSpec>, rpc: &str) -> Result<String, Status> {
    match spec.map(|i| i.image) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(Status::invalid_argument(format!("{rpc}: no image given"))),
    }
}

/// The same answer however the image was asked for (critest checks that a
/// tag, a digest and the id give identical ones).
fn to_cri(svc: &ImageService, r: &ImageRecord) -> Image {
    Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.iter().cloned().collect(),
        repo_digests: r.repo_digests.iter().cloned().collect(),
        size: r.size,
        uid: r.uid.map(|value| Int64Value { value }),
        username: r.username.clone(),
        spec: Some(ImageSpec {
            image: r.id.clone(),
            // The CRI 1.36 field: what the image resolved to.
            image_ref: r.id.clone(),
            ..Default::default()
        }),
        pinned: svc.is_pinned(r),
    }
}

#[tonic::async_trait]
impl CriImageService for ImageSvc {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    async fn pull_image(&self, r: Request<PullImageRequest>) -> CriResult<PullImageResponse> {
        let (images, req) = (self.images.clone(), crate::cri::take(r));
        to_the_end("PullImage", async move {
            pull_image::pull_image(&images, req).await
        })
        .await
    }

    async fn list_images(&self, r: Request<ListImagesRequest>) -> CriResult<ListImagesResponse> {
        list_images::list_images(&self.images, r.into_inner()).map(Response::new)
    }

    async fn stream_images(
        &self,
        r: Request<StreamImagesRequest>,
    ) -> CriResult<Self::StreamImagesStream> {
        let filter = r.into_inner().filter;
        let list = list_images::list_images(&self.images, ListImagesRequest { filter })?;
        // Lists of at most 500 images each, every image exactly once.
        let chunks: Vec<Result<StreamImagesResponse, Status>> = list
            .images
            .chunks(500)
            .map(|c| Ok(StreamImagesResponse { images: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn image_status(&self, r: Request<ImageStatusRequest>) -> CriResult<ImageStatusResponse> {
        image_status::image_status(&self.images, crate::cri::take(r)).map(Response::new)
    }

    async fn remove_image(&self, r: Request<RemoveImageRequest>) -> CriResult<RemoveImageResponse> {
        remove_image::remove_image(&self.images, crate::cri::take(r))
            .await
            .map(Response::new)
    }

    async fn image_fs_info(
        &self,
        r: Request<ImageFsInfoRequest>,
    ) -> CriResult<ImageFsInfoResponse> {
        image_fs_info::image_fs_info(&self.images, r.into_inner())
            .await
            .map(Response::new)
    }
}
