//! Any `:authority` on the CRI socket. gRPC C-core clients (Python's
//! `grpcio`, the C++ clients monitoring agents use) send the unix socket's
//! path, percent-encoded, as `:authority` (`run%2Fberth%2Fberth.sock`).
//! That is no URI authority (a `%` belongs in userinfo only), and h2 resets
//! every such stream with PROTOCOL_ERROR before berthd sees it. Go's gRPC,
//! and so containerd and CRI-O, ignore the authority on a unix socket;
//! berthd must too.
//!
//! [`Rewriter`] sits between the socket and the HTTP/2 server on the
//! client-to-server bytes. It follows the frames; every other frame passes
//! through untouched, as it streams. It decodes each header block (HEADERS
//! and its CONTINUATIONs) with the connection's HPACK decoder, which
//! mirrors the client's compression state. As long as every authority is
//! valid, the original bytes go on. From the first invalid one, every
//! header block of the connection is sent re-encoded as literals that do
//! not touch the server's dynamic table (which no longer mirrors the
//! client's), with an invalid `:authority` replaced by `localhost`. A
//! block over [`MAX_HEADER_BLOCK`] ends the connection; a block the
//! decoder refuses is passed on as it came, for the server to refuse.

#[cfg(not(fuzzing))]
mod socket;
#[cfg(not(fuzzing))]
pub use socket::Fixed;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest header block (all its frames) taken; gRPC's own limit on
/// metadata is 8 KiB by default.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// What the server accepts per frame (HTTP/2's default
/// SETTINGS_MAX_FRAME_SIZE, which h2 keeps): re-encoded blocks are split
/// to fit.
const MAX_FRAME: usize = 16_384;
/// The dynamic table the server allows the client (HTTP/2's default
/// SETTINGS_HEADER_TABLE_SIZE, which h2 keeps).
const TABLE_SIZE: usize = 4096;
/// What an invalid authority becomes.
const REPLACEMENT: &[u8] = b"localhost";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not HTTP/2: the connection preface is wrong")]
    Preface,
    #[error("a header block over {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    #[error("a {0:#x} frame inside a header block")]
    Interleaved(u8),
    #[error("a malformed HEADERS frame")]
    Malformed,
}

enum State {
    /// Bytes of the preface still expected.
    Preface(usize),
    /// A frame header, partly read.
    Head([u8; 9], usize),
    /// Payload bytes of a frame passed through, still to come.
    Pass(usize),
    /// A HEADERS or CONTINUATION frame's payload, read whole.
    Block {
        kind: u8,
        flags: u8,
        stream: u32,
        len: usize,
    },
}

/// The client-to-server half of a connection, rewritten as described above.
pub struct Rewriter {
    state: State,
    decoder: fluke_hpack::Decoder<'static>,
    /// Re-encoding (an invalid authority was seen on this connection).
    rewriting: bool,
    /// The decoder refused a block: from then on everything passes.
    broken: bool,
    /// The frames of the header block being read, as they came.
    raw: Vec<u8>,
    /// Its fragments, joined.
    block: Vec<u8>,
    /// The opening HEADERS frame: flags, stream and priority fields.
    opening: Option<(u8, u32, Option<[u8; 5]>)>,
    /// The frame payload being read.
    payload: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub fn new() -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Rewriter {
            state: State::Preface(PREFACE.len()),
            decoder,
            rewriting: false,
            broken: false,
            raw: Vec::new(),
            block: Vec::new(),
            opening: None,
            payload: Vec::new(),
        }
    }

    /// Bytes held back: the header block being read, whole frames of it.
    #[cfg(any(test, fuzzing))]
    pub fn buffered(&self) -> usize {
        self.raw.len() + self.payload.len()
    }

    /// Takes bytes from the client; appends what goes to the server.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        while !input.is_empty() {
            match &mut self.state {
                State::Preface(left) => {
                    let done = PREFACE.len() - *left;
                    let n = (*left).min(input.len());
                    if input[..n] != PREFACE[done..done + n] {
                        return Err(Error::Preface);
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Head([0; 9], 0);
                    }
                }
                State::Head(head, filled) => {
                    let n = (9 - *filled).min(input.len());
                    head[*filled..*filled + n].copy_from_slice(&input[..n]);
                    *filled += n;
                    input = &input[n..];
                    if *filled == 9 {
                        let head = *head;
                        self.frame_head(head, out)?;
                    }
                }
                State::Pass(left) => {
                    let n = (*left).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Head([0; 9], 0);
                    }
                }
                State::Block { len, .. } => {
                    let len = *len;
                    let n = (len - self.payload.len()).min(input.len());
                    self.payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.payload.len() == len {
                        self.block_frame(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn frame_head(&mut self, head: [u8; 9], out: &mut Vec<u8>) -> Result<(), Error> {
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let in_block = self.opening.is_some();
        if self.broken || !(kind == HEADERS || kind == CONTINUATION || in_block) {
            out.extend_from_slice(&head);
            self.state = if len == 0 {
                State::Head([0; 9], 0)
            } else {
                State::Pass(len)
            };
            return Ok(());
        }
        // Only CONTINUATIONs of the same stream may follow a HEADERS
        // without END_HEADERS; and none may come without one.
        if in_block != (kind == CONTINUATION) {
            return Err(Error::Interleaved(kind));
        }
        if self.raw.len() + 9 + len > MAX_HEADER_BLOCK {
            return Err(Error::TooLarge);
        }
        self.raw.extend_from_slice(&head);
        self.payload.clear();
        self.state = State::Block {
            kind,
            flags,
            stream,
            len,
        };
        if len == 0 {
            self.block_frame(out)?;
        }
        Ok(())
    }

    fn block_frame(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let State::Block {
            kind,
            flags,
            stream,
            ..
        } = self.state
        else {
            unreachable!("block_frame outside a block");
        };
        let payload = std::mem::take(&mut self.payload);
        self.raw.extend_from_slice(&payload);
        let mut p = &payload[..];
        if kind == HEADERS {
            let pad = if flags & PADDED != 0 {
                let (&n, rest) = p.split_first().ok_or(Error::Malformed)?;
                p = rest;
                usize::from(n)
            } else {
                0
            };
            let priority = if flags & PRIORITY != 0 {
                let fields: [u8; 5] = p
                    .get(..5)
                    .ok_or(Error::Malformed)?
                    .try_into()
                    .unwrap_or_default();
                p = &p[5..];
                Some(fields)
            } else {
                None
            };
            p = p
                .get(..p.len().checked_sub(pad).ok_or(Error::Malformed)?)
                .ok_or(Error::Malformed)?;
            self.opening = Some((flags, stream, priority));
        } else if self.opening.is_some_and(|(_, s, _)| s != stream) {
            return Err(Error::Interleaved(kind));
        }
        self.block.extend_from_slice(p);
        self.state = State::Head([0; 9], 0);
        self.payload = payload;
        self.payload.clear();
        if flags & END_HEADERS != 0 {
            self.end_block(out);
        }
        Ok(())
    }

    /// A whole header block: decoded, and sent on as it came or re-encoded.
    fn end_block(&mut self, out: &mut Vec<u8>) {
        let Some((flags, stream, priority)) = self.opening.take() else {
            return;
        };
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut bad = false;
        // The decoder panics on some malformed input (a truncated table
        // size update): a block is checked first, and a panic, should one
        // remain, ends the rewriting, not the process.
        let decoded = well_formed(&self.block)
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.decoder.decode_with_cb(&self.block, |name, value| {
                    if &*name == b":authority" && !valid_authority(&value) {
                        bad = true;
                        headers.push((name.into_owned(), REPLACEMENT.to_vec()));
                    } else {
                        headers.push((name.into_owned(), value.into_owned()));
                    }
                })
            }))
            .is_ok_and(|r| r.is_ok());
        if !decoded {
            self.broken = true;
        }
        self.rewriting |= bad;
        if self.broken || !self.rewriting {
            out.extend_from_slice(&self.raw);
        } else {
            let block = encode_literals(&headers);
            write_block(out, &block, flags & END_STREAM, stream, priority);
        }
        self.raw.clear();
        self.block.clear();
    }
}

/// Whether `block` is a sequence of whole HPACK representations: every
/// integer ends within 4 continuation bytes and every string is all there
/// (RFC 7541 section 6; the table is not consulted).
fn well_formed(mut block: &[u8]) -> bool {
    fn integer(b: &mut &[u8], prefix: u32) -> Option<usize> {
        let (&first, rest) = b.split_first()?;
        *b = rest;
        let max = (1usize << prefix) - 1;
        let mut v = usize::from(first) & max;
        if v < max {
            return Some(v);
        }
        for shift in [0, 7, 14, 21] {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn string(b: &mut &[u8]) -> Option<()> {
        let len = integer(b, 7)?;
        *b = b.get(len..)?;
        Some(())
    }
    let one = |b: &mut &[u8]| -> Option<()> {
        let first = *b.first()?;
        let prefix = match first {
            f if f & 0x80 != 0 => return integer(b, 7).map(|_| ()),
            f if f & 0xc0 == 0x40 => 6,
            f if f & 0xe0 == 0x20 => return integer(b, 5).map(|_| ()),
            _ => 4,
        };
        if integer(b, prefix)? == 0 {
            string(b)?;
        }
        string(b)
    };
    while !block.is_empty() {
        if one(&mut block).is_none() {
            return false;
        }
    }
    true
}

/// Whether `value` is an authority the HTTP/2 server takes.
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// HPACK "literal header field without indexing, new name" for each
/// header, strings raw (no Huffman): the server's dynamic table is never
/// touched.
fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in headers {
        b.push(0);
        for s in [name, value] {
            integer(&mut b, s.len(), 7, 0);
            b.extend_from_slice(s);
        }
    }
    b
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `high`.
fn integer(b: &mut Vec<u8>, mut v: usize, n: u32, high: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        b.push(high | v as u8);
        return;
    }
    b.push(high | max as u8);
    v -= max;
    while v >= 128 {
        b.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    b.push(v as u8);
}

/// A HEADERS frame (and CONTINUATIONs) carrying `block`.
fn write_block(
    out: &mut Vec<u8>,
    block: &[u8],
    end_stream: u8,
    stream: u32,
    priority: Option<[u8; 5]>,
) {
    let prio = priority.map_or(0, |_| 5);
    let first = block.len().min(MAX_FRAME - prio);
    let mut chunks = vec![&block[..first]];
    chunks.extend(block[first..].chunks(MAX_FRAME));
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let (kind, mut flags, extra) = if i == 0 {
            let f = end_stream | priority.map_or(0, |_| PRIORITY);
            (HEADERS, f, priority)
        } else {
            (CONTINUATION, 0, None)
        };
        if i == last {
            flags |= END_HEADERS;
        }
        let len = chunk.len() + extra.map_or(0, |_| 5);
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        if let Some(p) = extra {
            out.extend_from_slice(&p);
        }
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Header blocks in the forms a client sends: `:authority` with
    /// incremental indexing (static name 1), the rest as literals.
    fn request(enc: &mut Vec<u8>, authority: &[u8]) {
        enc.push(0x41); // literal, incremental indexing, name index 1
        integer(enc, authority.len(), 7, 0);
        enc.extend_from_slice(authority);
        enc.push(0x83); // :method POST
        enc.push(0x86); // :scheme http
        enc.push(0x04); // :path, literal without indexing, name index 4
        integer(enc, 8, 7, 0);
        enc.extend_from_slice(b"/x.Y/Zz");
        enc.push(b'!');
    }

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut out).expect("feed");
        }
        out
    }

    fn decode_all(server_bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        // The frames after the preface, decoded as the server would.
        let mut d = fluke_hpack::Decoder::new();
        let mut p = &server_bytes[PREFACE.len()..];
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        while !p.is_empty() {
            let len = usize::from(p[0]) << 16 | usize::from(p[1]) << 8 | usize::from(p[2]);
            let (kind, flags) = (p[3], p[4]);
            let mut payload = &p[9..9 + len];
            if kind == HEADERS && flags & PRIORITY != 0 {
                payload = &payload[5..];
            }
            if kind == HEADERS || kind == CONTINUATION {
                block.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    blocks.push(d.decode(&block).expect("server decodes"));
                    block.clear();
                }
            }
            p = &p[9 + len..];
        }
        blocks
    }

    #[test]
    fn valid_authorities_pass_byte_for_byte() {
        let mut block = Vec::new();
        request(&mut block, b"localhost");
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        input.extend(frame(0x0, END_STREAM, 1, b"12345"));
        // Fed one byte at a time: the state machine keeps its place.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), input);
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_for_the_rest_of_the_connection() {
        let mut first = Vec::new();
        request(&mut first, b"run%2Fberth%2Fberth.sock");
        // The second request refers to the dynamic table entry (index 62).
        let second = [0xbe, 0x83, 0x86, 0x84];
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS | PRIORITY,
            1,
            &[&[0, 0, 0, 0, 7][..], &first].concat(),
        ));
        input.extend(frame(0x0, END_STREAM, 1, b"body"));
        // A padded HEADERS split over a CONTINUATION.
        let mut padded = vec![2];
        padded.extend_from_slice(&second[..2]);
        padded.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | END_STREAM, 3, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, &second[2..]));
        let out = run(&[&input]);
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            assert_eq!(b[0], (b":authority".to_vec(), b"localhost".to_vec()));
            assert_eq!(b[1], (b":method".to_vec(), b"POST".to_vec()));
        }
        assert_eq!(blocks[1][3], (b":path".to_vec(), b"/".to_vec()));
        // The DATA frame came through unchanged.
        assert!(out.windows(4).any(|w| w == b"body"));
    }

    #[test]
    fn a_huge_header_block_ends_the_connection() {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        r.feed(PREFACE, &mut out).expect("preface");
        r.feed(&frame(HEADERS, 0, 1, &[0x82]), &mut out)
            .expect("opening");
        let big = vec![0u8; MAX_FRAME];
        let mut err = None;
        for _ in 0..(MAX_HEADER_BLOCK / MAX_FRAME + 2) {
            if let Err(e) = r.feed(&frame(CONTINUATION, 0, 1, &big), &mut out) {
                err = Some(e);
                break;
            }
            assert!(r.buffered() <= MAX_HEADER_BLOCK);
        }
        assert!(matches!(err, Some(Error::TooLarge)), "{err:?}");
        // Nothing of the block reached the server.
        assert_eq!(out, PREFACE);
    }

    #[test]
    fn a_block_split_across_streams_or_without_its_headers_is_refused() {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        r.feed(PREFACE, &mut out).expect("preface");
        assert!(matches!(
            r.feed(&frame(CONTINUATION, END_HEADERS, 1, &[0x82]), &mut out),
            Err(Error::Interleaved(CONTINUATION))
        ));
        let mut r = Rewriter::new();
        r.feed(PREFACE, &mut out).expect("preface");
        r.feed(&frame(HEADERS, 0, 1, &[0x82]), &mut out)
            .expect("opening");
        assert!(
            r.feed(&frame(CONTINUATION, END_HEADERS, 3, &[0x84]), &mut out)
                .is_err()
        );
        assert!(matches!(
            Rewriter::new().feed(b"GET / HTTP/1.1\r\n", &mut out),
            Err(Error::Preface)
        ));
    }

    #[test]
    fn a_malformed_block_is_passed_on_for_the_server_to_refuse() {
        // A table size update whose integer never ends: the decoder
        // panicked on it (found by the h2_authority fuzz target).
        for block in [&[0x3f, 0xe1][..], &[0x41, 0x05, b'a'], &[0x00, 0x81]] {
            assert!(!well_formed(block), "{block:?}");
            let mut input = PREFACE.to_vec();
            input.extend(frame(HEADERS, END_HEADERS, 1, block));
            assert_eq!(run(&[&input]), input);
        }
        assert!(well_formed(&[0x3f, 0xe1, 0x1f, 0x82]));
    }

    #[test]
    fn long_blocks_are_split_into_frames_the_server_takes() {
        let long = vec![(b"x-long".to_vec(), vec![b'a'; 40_000])];
        let block = encode_literals(&long);
        let mut out = PREFACE.to_vec();
        write_block(&mut out, &block, END_STREAM, 5, None);
        let blocks = decode_all(&out);
        assert_eq!(blocks, vec![long]);
        let mut p = &out[PREFACE.len()..];
        while !p.is_empty() {
            let len = usize::from(p[0]) << 16 | usize::from(p[1]) << 8 | usize::from(p[2]);
            assert!(len <= MAX_FRAME);
            p = &p[9 + len..];
        }
    }
}
