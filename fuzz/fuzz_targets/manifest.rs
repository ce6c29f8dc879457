//! Manifest, index and image config parsing (registry responses).
//!
//! The first byte picks the Content-Type the registry claims, the rest is the
//! body. Asserts: no panic in `manifest::parse`, in the platform choice of an
//! index, or in parsing the body as an image config; every descriptor that
//! parsed survives a JSON round trip unchanged (what berth stores is what it
//! read).
#![no_main]

use berth_imageservice::manifest::{self, Descriptor, ImageConfig, Parsed};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[&str] = &[
    manifest::OCI_INDEX,
    manifest::DOCKER_LIST,
    manifest::OCI_MANIFEST,
    manifest::DOCKER_MANIFEST,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
    "application/json; charset=utf-8",
    "",
    "text/html",
];

fn round_trip(d: &Descriptor) {
    let json = serde_json::to_vec(d).expect("a descriptor serialises");
    let back: Descriptor = serde_json::from_slice(&json).expect("a serialised descriptor parses");
    assert_eq!(&back, d);
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    match manifest::parse(ct, body) {
        Ok(Parsed::Index(index)) => {
            index.manifests.iter().for_each(round_trip);
            let _ = manifest::select(&index, &manifest::host_platform());
        }
        Ok(Parsed::Manifest(m)) => {
            round_trip(&m.config);
            m.layers.iter().for_each(round_trip);
            for l in &m.layers {
                let _ = berth_imageservice::unpack::Compression::from_media_type(&l.media_type);
            }
        }
        Err(_) => {}
    }
    if let Ok(config) = serde_json::from_slice::<ImageConfig>(body) {
        let json = serde_json::to_vec(&config).expect("a config serialises");
        let _: ImageConfig = serde_json::from_slice(&json).expect("a serialised config parses");
    }
});
