//! berth's image service: image references, the registry client, the
//! content store and layer snapshots, image metadata. It knows nothing of
//! gRPC or CRI types: berthd's `shim/src/cri/image/` serves the CRI
//! ImageService on top of it.

pub mod db;
pub mod digest;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hosts;
pub mod limits;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod service;
pub mod store;
pub mod unpack;

pub use error::Error;
pub use limits::{FreeSpace, Limits};
pub use service::{ImageService, Settings};
