//! SPDY/3.1 frames from a streaming client (exec, attach, port-forward),
//! through berthd's codec (`shim/src/streaming/codec.rs`, included by path).
//!
//! The input is the client's byte stream: frames one after another, their
//! header blocks through the connection's one zlib stream (primed with the
//! SPDY/3 dictionary), every data frame also fed to a resize stream.
//! Asserts: no panic and no hang (libFuzzer's -timeout: the zlib loop of
//! issue 14 hung here); a decoded SYN_STREAM has at most `MAX_HEADERS`
//! headers and they re-encode and decode to the same headers; the resize
//! stream never keeps more than `MAX_RESIZE_PENDING` bytes.
#![no_main]

#[allow(dead_code)]
#[path = "../../shim/src/streaming/codec.rs"]
mod codec;

use bytes::Bytes;
use codec::{Frame, HeaderDecoder, HeaderEncoder, ResizeStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dict = cri_api::spdy_dictionary();
    let mut dec = HeaderDecoder::new(dict.clone());
    let mut resize = ResizeStream::default();
    let mut resize_ok = true;
    let mut rest = data;
    while let Some((head, after)) = rest.split_first_chunk::<8>() {
        let Ok(head) = codec::parse_head(head) else {
            return; // the session ends
        };
        assert!(head.len <= codec::MAX_FRAME);
        let body = &after[..head.len.min(after.len())];
        rest = &after[body.len()..];
        match codec::decode_frame(&head, Bytes::copy_from_slice(body), &mut dec) {
            Err(_) => return,
            Ok(Frame::SynStream { headers, .. }) => {
                assert!(
                    headers.len() <= codec::MAX_HEADERS,
                    "{} headers",
                    headers.len()
                );
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let block = HeaderEncoder::new(&dict).encode(&pairs);
                let again = HeaderDecoder::new(dict.clone())
                    .decode(&block)
                    .expect("re-encoded headers decode");
                assert_eq!(again, headers);
            }
            Ok(Frame::Data { data, .. }) if resize_ok => {
                resize_ok = resize.push(&data).is_ok();
                assert!(resize.pending() <= codec::MAX_RESIZE_PENDING);
            }
            Ok(_) => {}
        }
    }
});
