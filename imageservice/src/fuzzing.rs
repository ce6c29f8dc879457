//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API).
//!
//! They reach the parsers that are private to their modules (`hosts.toml`
//! parsing, the registry's auth challenge) without making those public; the
//! public parsers (`Reference::parse`, `manifest::parse`, `unpack_layer`) are
//! called by the targets directly.

use std::path::Path;

use crate::hosts::{self, HostsError};
use crate::registry::{self, Challenge};

/// Parses `text` as the `hosts.toml` of `dir` (nothing is read from disk:
/// relative `ca`/`client` paths are only joined onto `dir`). On success,
/// the `Debug` form of the hosts in the order they would be tried.
pub fn parse_hosts_file(dir: &Path, text: &str) -> Result<Vec<String>, HostsError> {
    let file = dir.join(hosts::HOSTS_FILE);
    let entries = hosts::parse_hosts_file(&file, dir, text)?;
    Ok(entries.iter().map(|e| format!("{e:?}")).collect())
}

/// What a `WWW-Authenticate` header asks for, as the registry client
/// understands it.
#[derive(Debug, PartialEq, Eq)]
pub enum ParsedChallenge {
    Basic,
    Bearer { realm: String, service: String },
}

/// Parses a `WWW-Authenticate` header value; `None` if the registry client
/// would not know how to answer it.
pub fn parse_challenge(header: &str) -> Option<ParsedChallenge> {
    Some(match registry::parse_challenge(header)? {
        Challenge::Basic => ParsedChallenge::Basic,
        Challenge::Bearer { realm, service } => ParsedChallenge::Bearer { realm, service },
    })
}
