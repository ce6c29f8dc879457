//! CRI ImageService on top of [`ImageService`]: type conversion and error
//! codes only.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cri_api::v1::image_service_server::ImageService as CriImageService;
use cri_api::v1::*;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::db::ImageRecord;
use crate::registry::{Credentials, RegistryError};
use crate::service::{ImageError, ImageService};

type CriResult<T> = Result<Response<T>, Status>;

pub struct ImageCri {
    svc: Arc<ImageService>,
}

impl ImageCri {
    pub fn new(svc: Arc<ImageService>) -> ImageCri {
        ImageCri { svc }
    }

    /// The same answer however the image was asked for (critest checks
    /// that a tag, a digest and the id give identical ones).
    fn to_cri(&self, r: &ImageRecord) -> Image {
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
            pinned: self.svc.is_pinned(r),
        }
    }
}

/// gRPC codes that say what happened.
pub fn status(e: ImageError) -> Status {
    let msg = e.to_string();
    match &e {
        ImageError::Reference(_)
        | ImageError::Invalid { .. }
        | ImageError::Layer { hostile: true, .. } => Status::invalid_argument(msg),
        // The node failed to write the snapshot (disk full, I/O error).
        ImageError::Layer { hostile: false, .. } => Status::internal(msg),
        ImageError::NoPlatform { .. } | ImageError::NotFound(_) => Status::not_found(msg),
        ImageError::Hosts { .. } | ImageError::Pinned(_) => Status::failed_precondition(msg),
        ImageError::Corrupt { .. } => Status::data_loss(msg),
        ImageError::Limit { .. } => Status::resource_exhausted(msg),
        ImageError::Registry { source, .. } => match source {
            RegistryError::NotFound { .. } => Status::not_found(msg),
            RegistryError::Denied { .. } | RegistryError::Token { .. } => {
                Status::permission_denied(msg)
            }
            RegistryError::BadCredentials(_) => Status::invalid_argument(msg),
            RegistryError::Tls { .. } => Status::failed_precondition(msg),
            RegistryError::TooLarge { .. } => Status::invalid_argument(msg),
            RegistryError::Deadline { .. } | RegistryError::TooSlow { .. } => {
                Status::deadline_exceeded(msg)
            }
            RegistryError::PlainHttpCredentials { .. } => Status::failed_precondition(msg),
            RegistryError::Status { .. } | RegistryError::Transport { .. } => {
                Status::unavailable(msg)
            }
        },
        ImageError::Db(_) | ImageError::Io(_) => Status::internal(msg),
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl CriImageService for ImageCri {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    async fn pull_image(&self, r: Request<PullImageRequest>) -> CriResult<PullImageResponse> {
        let r = r.into_inner();
        let image = r.image.map(|i| i.image).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("PullImage: no image given"));
        }
        let creds = match &r.auth {
            Some(a) => Credentials::from_cri(a)
                .map_err(|e| Status::invalid_argument(format!("PullImage {image:?}: {e}")))?,
            None => Credentials::Anonymous,
        };
        tracing::info!(image = %image, "pulling");
        let rec = self.svc.pull(&image, &creds).await.map_err(|e| {
            tracing::warn!(image = %image, "pull failed: {e}");
            status(e)
        })?;
        Ok(Response::new(PullImageResponse { image_ref: rec.id }))
    }

    async fn list_images(&self, r: Request<ListImagesRequest>) -> CriResult<ListImagesResponse> {
        let filter = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let records = match filter {
            Some(f) => self.svc.find(&f).map_err(status)?.into_iter().collect(),
            None => self.svc.list().map_err(status)?,
        };
        let images = records.iter().map(|r| self.to_cri(r)).collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn stream_images(
        &self,
        r: Request<StreamImagesRequest>,
    ) -> CriResult<Self::StreamImagesStream> {
        let filter = r.into_inner().filter;
        let list = self
            .list_images(Request::new(ListImagesRequest { filter }))
            .await?
            .into_inner();
        // Lists of at most 500 images each, every image exactly once.
        let chunks: Vec<Result<StreamImagesResponse, Status>> = list
            .images
            .chunks(500)
            .map(|c| Ok(StreamImagesResponse { images: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn image_status(&self, r: Request<ImageStatusRequest>) -> CriResult<ImageStatusResponse> {
        let r = r.into_inner();
        let spec = r.image.unwrap_or_default();
        // Unknown image: an empty answer, not an error (the kubelet relies on it).
        let Some(rec) = self.svc.find(&spec.image).map_err(status)? else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            let config = self.svc.config(&rec).map_err(status)?;
            let v = serde_json::json!({
                "imageId": rec.id,
                "manifestDigest": rec.manifest,
                "chainIds": rec.chain_ids,
                "pinned": self.svc.is_pinned(&rec),
                "imageSpec": config,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(self.to_cri(&rec)),
            info,
        }))
    }

    async fn remove_image(&self, r: Request<RemoveImageRequest>) -> CriResult<RemoveImageResponse> {
        let image = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("RemoveImage: no image given"));
        }
        self.svc.remove(&image).await.map_err(status)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> CriResult<ImageFsInfoResponse> {
        let svc = self.svc.clone();
        let u = tokio::task::spawn_blocking(move || svc.usage())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        let fs = FilesystemUsage {
            timestamp: now_ns(),
            fs_id: Some(FilesystemIdentifier {
                mountpoint: u.mountpoint.display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: u.bytes }),
            inodes_used: Some(UInt64Value { value: u.inodes }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: vec![],
        }))
    }
}
