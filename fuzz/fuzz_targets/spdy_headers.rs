//! SPDY header blocks (`HeaderDecoder` in `shim/src/streaming/codec.rs`).
//!
//! First byte even: the rest is a plain header block, compressed here with
//! the SPDY/3 dictionary as a client would; the decoder must agree with a
//! straightforward reading of the format (a count, then length-prefixed
//! names and values; names lowercased), within the codec's limits. First
//! byte odd: the rest is raw compressed input, split at `0xff 0xff 0xff`
//! into successive blocks of one connection. Asserts: no panic, no hang
//! (every inflate round makes progress), no more than `MAX_HEADERS` headers.
#![no_main]

#[allow(dead_code)]
#[path = "../../shim/src/streaming/codec.rs"]
mod codec;

use std::collections::HashMap;

use codec::HeaderDecoder;
use libfuzzer_sys::fuzz_target;

/// The header block format, read the obvious way; `None` if malformed.
fn reference(b: &[u8]) -> Option<HashMap<String, String>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = b.split_at_checked(n)?;
        *b = tail;
        Some(head)
    }
    fn word(b: &mut &[u8]) -> Option<usize> {
        let w = take(b, 4)?;
        Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize)
    }
    let mut b = b;
    let count = word(&mut b)?;
    if count > codec::MAX_HEADERS {
        return None;
    }
    let mut h = HashMap::new();
    for _ in 0..count {
        let n = word(&mut b)?;
        let name = String::from_utf8_lossy(take(&mut b, n)?).to_ascii_lowercase();
        let n = word(&mut b)?;
        h.insert(name, String::from_utf8_lossy(take(&mut b, n)?).into_owned());
    }
    Some(h)
}

fn compress(dict: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut z = flate2::Compress::new(flate2::Compression::default(), true);
    z.set_dictionary(dict).expect("dictionary");
    let mut out = Vec::with_capacity(plain.len() + 1024);
    loop {
        let before = z.total_in() as usize;
        z.compress_vec(&plain[before..], &mut out, flate2::FlushCompress::Sync)
            .expect("compress");
        if z.total_in() as usize == plain.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity().max(1024));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dict = cri_api::spdy_dictionary();
    let mut dec = HeaderDecoder::new(dict.clone());
    if mode & 1 == 0 {
        let got = dec.decode(&compress(&dict, rest)).ok();
        if rest.len() <= codec::MAX_HEADER_BLOCK {
            assert_eq!(got, reference(rest));
        } else {
            assert!(got.is_none(), "a block past MAX_HEADER_BLOCK was accepted");
        }
    } else {
        let mut blocks = rest;
        loop {
            let (block, next) = match blocks.windows(3).position(|w| w == [0xff; 3]) {
                Some(i) => (&blocks[..i], Some(&blocks[i + 3..])),
                None => (blocks, None),
            };
            match dec.decode(block) {
                Ok(h) => assert!(h.len() <= codec::MAX_HEADERS),
                Err(_) => return,
            }
            match next {
                Some(n) => blocks = n,
                None => return,
            }
        }
    }
});
