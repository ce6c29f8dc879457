//! CRI `PullImage`: the credentials from the request's `AuthConfig`, then
//! the image library's pull.

use berth_imageservice::ImageService;
use berth_imageservice::registry::{Auth, Credentials};
use cri_api::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use tonic::Status;

use super::{required_image, status};

pub async fn pull_image(
    svc: &ImageService,
    r: PullImageRequest,
) -> Result<PullImageResponse, Status> {
    let image = required_image(r.image, "PullImage")?;
    let creds = match &r.auth {
        Some(a) => Credentials::from_auth(&auth(a))
            .map_err(|e| Status::invalid_argument(format!("PullImage {image:?}: {e}")))?,
        None => Credentials::Anonymous,
    };
    tracing::info!(image = %image, "pulling");
    let (_pulling, started) = (crate::metrics::Pulling::start(), std::time::Instant::now());
    let pulled = svc.pull(&image, &creds).await;
    let bytes = pulled.as_ref().map_or(0, |r| r.size);
    crate::metrics::pull_done(pulled.is_ok(), bytes, started.elapsed());
    let rec = pulled.map_err(|e| {
        tracing::warn!(image = %image, "pull failed: {e}");
        status(e)
    })?;
    Ok(PullImageResponse { image_ref: rec.id })
}

/// The CRI message's fields the registry client reads.
fn auth(a: &AuthConfig) -> Auth<'_> {
    Auth {
        username: &a.username,
        password: &a.password,
        auth: &a.auth,
        identity_token: &a.identity_token,
        registry_token: &a.registry_token,
    }
}
