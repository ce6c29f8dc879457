//! berth-pump: a container's monitor once the container runs. The
//! `berth-monitor` that created the container (with libcontainer, an 8 MB
//! binary) executes this small one in its place, the same process, so the
//! container stays its child; what a running container costs the node is
//! this binary's pages, not libcontainer's.
//!
//! It copies the container's output into the CRI log and to attached
//! clients, serves the attach socket, reaps the init and records its exit
//! ([`pump`]); then it executes `berth-monitor delete` (left open for it
//! as a descriptor) to remove the container with the runtime that made it.
//!
//! Its command line is [`berth_runtime::protocol::Invocation::Pump`].

mod attach;
mod pump;
mod trim;

use std::ffi::OsString;
use std::process::ExitCode;

use berth_runtime::protocol::Invocation;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // What `ps -o comm` and `top` show (the binary is a memfd).
    let _ = nix::sys::prctl::set_name(c"berth-pump");
    let r = match Invocation::parse(&args) {
        Ok(Invocation::Pump(p)) => pump::pump_mode(&p),
        Ok(other) => Err(format!("not a pump: {:?}", other.to_args())),
        Err(e) => Err(e.to_string()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-pump: {e}");
            ExitCode::FAILURE
        }
    }
}
