//! CRI `RemoveImage`: a tag, a digest or the id; pinned and leased images
//! are the library's to refuse.

use berth_imageservice::ImageService;
use cri_api::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use super::{required_image, status};

pub async fn remove_image(
    svc: &ImageService,
    r: RemoveImageRequest,
) -> Result<RemoveImageResponse, Status> {
    let image = required_image(r.image, "RemoveImage")?;
    svc.remove(&image).await.map_err(status)?;
    Ok(RemoveImageResponse {})
}
