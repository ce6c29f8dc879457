//! `hosts.toml` parsing (containerd's registry host configuration format).
//!
//! The first line of the input is a registry host name (as taken from an image
//! reference), the rest the file. Asserts: no panic in the host name checks or
//! in the file parser, and a parsed file yields at least the upstream.
#![no_main]

use std::path::Path;

use berth_imageservice::{fuzzing, hosts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (host, text) = s.split_once('\n').unwrap_or((s, ""));
    let _ = hosts::is_localhost(host);
    let _ = hosts::default_scheme_for(host);
    let dir = Path::new("/etc/containerd/certs.d/registry.example");
    if let Ok(entries) = fuzzing::parse_hosts_file(dir, text) {
        assert!(!entries.is_empty(), "{text:?}: no upstream");
    }
});
