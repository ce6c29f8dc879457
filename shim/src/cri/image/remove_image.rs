//! CRI `RemoveImage`: a tag, a digest or the id; pinned and leased images
//! are the library's to refuse.

use berth_imageservice::ImageService;
use cri_api::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use super::status;

pub async fn remove_image(
    svc: &ImageService,
    r: RemoveImageRequest,
) -> Result<RemoveImageResponse, Status> {
    let image = r.image.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(Status::invalid_argument("RemoveImage: no image given"));
    }
    svc.remove(&image).await.map_err(status)?;
    Ok(RemoveImageResponse {})
}
