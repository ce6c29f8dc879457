//! The CRI RuntimeService: one file per RPC under `runtime/`; the tonic
//! trait impl in its `mod.rs` only forwards. The ImageService lives in the
//! `berth-imageservice` crate.

pub mod runtime;

use tonic::{Response, Status};

use crate::config::Config;

/// What every CRI call shares.
#[derive(Debug)]
pub struct Daemon {
    pub config: Config,
}

impl Daemon {
    pub fn new(config: Config) -> Daemon {
        Daemon { config }
    }
}

pub type CriResult<T> = Result<Response<T>, Status>;

/// The honest answer of an RPC that berth does not implement yet.
pub fn unimplemented<T>(rpc: &str) -> CriResult<T> {
    tracing::debug!(rpc, "unimplemented");
    Err(Status::unimplemented(format!(
        "{rpc} is not implemented by berth {}",
        env!("CARGO_PKG_VERSION")
    )))
}
