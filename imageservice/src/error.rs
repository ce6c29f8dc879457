//! The image library's one error type: what went wrong, in the words a
//! client sees. berthd maps each variant to a gRPC code
//! (`shim/src/cri/image/error.rs`).

use crate::db::DbError;
use crate::limits::Exceeded;
use crate::reference::ReferenceError;
use crate::registry::RegistryError;
use crate::store::IngestError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("image {image:?}: {source}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("image {image:?}: registry host configuration: {reason}")]
    Hosts { image: String, reason: String },
    #[error("image {image:?}: {reason}")]
    Invalid { image: String, reason: String },
    #[error("image {image:?}: no manifest for platform {platform} in its index")]
    NoPlatform { image: String, platform: String },
    #[error("image {image:?}: {source}")]
    Corrupt {
        image: String,
        #[source]
        source: IngestError,
    },
    /// `hostile`: the layer itself is at fault (an escape, a corrupt
    /// archive, a wrong DiffID), not the node.
    #[error("image {image:?}: layer {layer}: {reason}")]
    Layer {
        image: String,
        layer: String,
        reason: String,
        hostile: bool,
    },
    /// A limit of `[images]` would be crossed by `object` (a layer, the
    /// config blob, a manifest): nothing of it is kept.
    #[error("image {image:?}: {object}: {source}")]
    Limit {
        image: String,
        object: String,
        #[source]
        source: Exceeded,
    },
    #[error("image {0:?} is pinned (config `pinned_images`) and cannot be removed")]
    Pinned(String),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
}
