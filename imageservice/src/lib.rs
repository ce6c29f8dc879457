//! berth's image service: image references, the registry client, the
//! content store and layer snapshots, image metadata, and the CRI
//! ImageService.

pub mod cri;
pub mod db;
pub mod digest;
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

pub use limits::{FreeSpace, Limits};
pub use service::{ImageService, Settings};
