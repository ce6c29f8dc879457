//! The client-to-server bytes of the CRI socket through berthd's
//! `:authority` rewriter (`shim/src/authority.rs`, included by path),
//! after a valid connection preface.
//!
//! First byte: the size of the pieces the rest is fed in. Asserts: no
//! panic; what it holds back never passes `MAX_HEADER_BLOCK`; and fed in
//! pieces or whole, it sends the server the same bytes and fails alike
//! (the state machine keeps its place across any split).
#![no_main]

#[allow(dead_code)]
#[path = "../../shim/src/authority.rs"]
mod authority;

use authority::{MAX_HEADER_BLOCK, Rewriter};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn run(input: &[u8], piece: usize) -> (Vec<u8>, bool) {
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    for chunk in input.chunks(piece.max(1)) {
        if r.feed(chunk, &mut out).is_err() {
            return (out, true);
        }
        assert!(r.buffered() <= MAX_HEADER_BLOCK);
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let input = [PREFACE, rest].concat();
    let whole = run(&input, input.len());
    let pieces = run(&input, usize::from(piece));
    // Split before the failing byte, pieces may send a prefix of what the
    // whole sends before failing; without a failure, the very same bytes.
    assert_eq!(whole.1, pieces.1);
    if !whole.1 {
        assert_eq!(whole.0, pieces.0);
    }
});
