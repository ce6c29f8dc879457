//! WebSocket channel messages (`v4`/`v5.channel.k8s.io` and their
//! `base64.` variants) and resize messages, through berthd's codec
//! (`shim/src/streaming/codec.rs`, included by path).
//!
//! First byte: bit 0 = base64 protocol, bit 1 = text message; the rest is the
//! message. Asserts: no panic (a multi-byte first character panicked before
//! issue 14); binary framing hands back the channel byte and the rest
//! unchanged; a base64 message decodes only from a channel digit and
//! canonical base64 (re-encoding gives the message back); the resize stream,
//! fed the message in two pieces or whole, finds the same sizes when neither
//! way fails, and never keeps more than `MAX_RESIZE_PENDING` bytes.
#![no_main]

#[allow(dead_code)]
#[path = "../../shim/src/streaming/codec.rs"]
mod codec;

use base64::Engine;
use codec::ResizeStream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, m)) = data.split_first() else {
        return;
    };
    let (b64, text) = (flags & 1 != 0, flags & 2 != 0);
    match codec::decode_ws(b64, text, m) {
        Ok(None) => assert!(m.is_empty()),
        Ok(Some((ch, payload))) if b64 && text => {
            assert!(ch <= 9);
            assert_eq!(m[0], b'0' + ch);
            let again = base64::engine::general_purpose::STANDARD.encode(&payload);
            assert_eq!(again.as_bytes(), &m[1..]);
        }
        Ok(Some((ch, payload))) => {
            assert_eq!(ch, m[0]);
            assert_eq!(&payload[..], &m[1..]);
        }
        Err(_) => assert!(b64 && text),
    }

    let _ = codec::parse_resize(m);
    let cut = usize::from(flags >> 2).min(m.len());
    let mut whole = ResizeStream::default();
    let one = whole.push(m);
    assert!(whole.pending() <= codec::MAX_RESIZE_PENDING);
    let mut split = ResizeStream::default();
    let first = split.push(&m[..cut]);
    assert!(split.pending() <= codec::MAX_RESIZE_PENDING);
    let second = split.push(&m[cut..]);
    assert!(split.pending() <= codec::MAX_RESIZE_PENDING);
    if let (Ok(one), Ok(mut a), Ok(b)) = (one, first, second) {
        a.extend(b);
        assert_eq!(one, a);
    }
});
