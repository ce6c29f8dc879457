//! CRI `ListImages` (and the list `StreamImages` sends in chunks): all
//! images, or the one the filter names.

use berth_imageservice::ImageService;
use cri_api::v1::{ListImagesRequest, ListImagesResponse};
use tonic::Status;

use super::{status, to_cri};

pub fn list_images(svc: &ImageService, r: ListImagesRequest) -> Result<ListImagesResponse, Status> {
    let filter = r
        .filter
        .and_then(|f| f.image)
        .map(|i| i.image)
        .filter(|i| !i.is_empty());
    let records = match filter {
        Some(f) => svc.find(&f).map_err(status)?.into_iter().collect(),
        None => svc.list().map_err(status)?,
    };
    let images = records.iter().map(|r| to_cri(svc, r)).collect();
    Ok(ListImagesResponse { images })
}
