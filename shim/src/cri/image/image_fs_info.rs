//! CRI `ImageFsInfo`: the bytes and inodes the image store uses.

use std::sync::Arc;

use berth_imageservice::ImageService;
use cri_api::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};
use tonic::Status;

use super::status;
use berth_runtime::now_ns;

pub async fn image_fs_info(
    svc: &Arc<ImageService>,
    _: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, Status> {
    let svc = svc.clone();
    // A walk of the store: off the async threads.
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
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![fs],
        container_filesystems: vec![],
    })
}
