//! The contract between berthd and `berth-monitor`, in one place both
//! sides use:
//!
//! - [`args`]: how berthd (and the monitor itself) invokes the monitor,
//!   as a typed [`Invocation`] with `to_args` and `parse`;
//! - [`control`]: the words berthd writes to a created container's start
//!   FIFO ([`Control::Start`], [`Control::Kill`]);
//! - [`frame`]: the frames on the monitor's attach socket, both ways;
//! - [`exec`]: the descriptors and report lines of `berth-monitor exec`;
//! - [`state`]: the files in a container's state directory, and the exit
//!   record.
//!
//! Nothing here knows CRI, gRPC or images.

pub mod args;
pub mod control;
pub mod exec;
pub mod frame;
pub mod state;

pub use args::{ArgsError, Checkpoint, Container, Invocation, Pump};
pub use control::Control;
pub use frame::{Channel, Decoder, Frame, FrameError, Resize};
pub use state::Exit;
