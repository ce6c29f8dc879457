//! CRI `ImageStatus`: the image, and with `verbose` its config and chain.

use berth_imageservice::ImageService;
use cri_api::v1::{ImageStatusRequest, ImageStatusResponse};
use tonic::Status;

use super::{status, to_cri};

pub fn image_status(
    svc: &ImageService,
    r: ImageStatusRequest,
) -> Result<ImageStatusResponse, Status> {
    let spec = r.image.unwrap_or_default();
    // Unknown image: an empty answer, not an error (the kubelet relies on it).
    let Some(rec) = svc.find(&spec.image).map_err(status)? else {
        return Ok(ImageStatusResponse::default());
    };
    let mut info = std::collections::HashMap::new();
    if r.verbose {
        let config = svc.config(&rec).map_err(status)?;
        let v = serde_json::json!({
            "imageId": rec.id,
            "manifestDigest": rec.manifest,
            "chainIds": rec.chain_ids,
            "pinned": svc.is_pinned(&rec),
            "imageSpec": config,
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(to_cri(svc, &rec)),
        info,
    })
}
