//! CRI `Version`.

use cri_api::v1::{VersionRequest, VersionResponse};

pub fn version(_: VersionRequest) -> VersionResponse {
    VersionResponse {
        // The kubelet-facing API version string, as containerd and CRI-O send.
        version: "0.1.0".into(),
        runtime_name: "berth".into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: "v1".into(),
    }
}
