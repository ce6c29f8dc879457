//! Registry auth challenge parsing (the `WWW-Authenticate` header of a 401,
//! sent by whatever registry an image names).
//!
//! Asserts: no panic; a `Bearer` challenge is only accepted with a realm, and
//! the values come from the header (no invented text).
#![no_main]

use berth_imageservice::fuzzing::{ParsedChallenge, parse_challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match parse_challenge(s) {
        None | Some(ParsedChallenge::Basic) => {}
        Some(ParsedChallenge::Bearer { realm, service }) => {
            assert!(
                s.contains(&realm),
                "{s:?}: realm {realm:?} not in the header"
            );
            assert!(
                s.contains(&service),
                "{s:?}: service {service:?} not in the header"
            );
        }
    }
});
