//! The pure parts of the streaming protocols: SPDY/3.1 frame heads and
//! bodies, the zlib header blocks, the WebSocket channel messages and the
//! terminal-resize stream. No I/O and no tokio, so that they are
//! unit-tested here and fuzzed (`fuzz/` includes this file by path; keep
//! its dependencies to std, `bytes`, `base64`, `flate2` and `serde_json`).
//!
//! Threat model: every byte comes from a streaming client (anyone allowed
//! to exec, attach or port-forward, relayed unchanged by the kubelet and
//! the API server). Every function here bounds what it keeps and what it
//! produces, makes progress on every step or fails, and never panics: a
//! malformed input is a [`ProtocolError`], which closes that one session.

use std::collections::HashMap;

use base64::Engine;
use bytes::Bytes;

/// Largest SPDY frame body accepted, control or data. spdystream (the
/// only SPDY client of the kubelet's protocols) writes what `io.Copy`
/// hands it, 32 KiB at a time.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest inflated header block. A stream's headers are a few short
/// names and values (`streamtype`, `port`, `requestid`).
pub const MAX_HEADER_BLOCK: usize = 64 << 10;
/// Most headers in one block.
pub const MAX_HEADERS: usize = 64;
/// Most bytes of an unfinished resize object kept between frames.
pub const MAX_RESIZE_PENDING: usize = 4 << 10;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const FLAG_FIN: u8 = 1;
/// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// A client broke the protocol; the session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn err<T>(m: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(m.into()))
}

/// A SPDY frame's eight-byte head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Control frame: `kind` is its type. Data frame: `id` its stream.
    pub control: bool,
    pub kind: u16,
    pub id: u32,
    pub flags: u8,
    pub len: usize,
}

pub fn parse_head(h: &[u8; 8]) -> Result<Head, ProtocolError> {
    let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME {
        return err(format!("frame of {len} bytes (at most {MAX_FRAME})"));
    }
    let control = h[0] & 0x80 != 0;
    Ok(Head {
        control,
        kind: if control {
            u16::from_be_bytes([h[2], h[3]])
        } else {
            0
        },
        id: if control {
            0
        } else {
            u32::from_be_bytes([h[0], h[1], h[2], h[3]])
        },
        flags: h[4],
        len,
    })
}

/// A decoded SPDY frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        headers: HashMap<String, String>,
    },
    Data {
        id: u32,
        data: Bytes,
        fin: bool,
    },
    RstStream {
        id: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, SYN_REPLY, HEADERS, unknown types: read
    /// and ignored (HEADERS still advances the zlib stream).
    Ignored,
}

/// Decodes one frame's body. Header blocks go through `dec`, the
/// connection's one zlib stream, so frames must come in order.
pub fn decode_frame(
    head: &Head,
    body: Bytes,
    dec: &mut HeaderDecoder,
) -> Result<Frame, ProtocolError> {
    if !head.control {
        return Ok(Frame::Data {
            id: head.id,
            data: body,
            fin: head.flags & FLAG_FIN != 0,
        });
    }
    let word = |at: usize| -> Result<u32, ProtocolError> {
        match body.get(at..at + 4) {
            Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff),
            None => err(format!("control frame {} too short", head.kind)),
        }
    };
    Ok(match head.kind {
        SYN_STREAM => {
            let id = word(0)?;
            let Some(block) = body.get(10..) else {
                return err("SYN_STREAM too short");
            };
            Frame::SynStream {
                id,
                headers: dec.decode(block)?,
            }
        }
        RST_STREAM => Frame::RstStream { id: word(0)? },
        PING => Frame::Ping(word(0)?),
        GOAWAY => Frame::GoAway,
        HEADERS => {
            if let Some(block) = body.get(4..) {
                dec.decode(block)?;
            }
            Frame::Ignored
        }
        _ => Frame::Ignored,
    })
}

/// The client's header compression: one zlib stream for the whole
/// connection, primed with the SPDY/3 dictionary.
pub struct HeaderDecoder {
    inflate: flate2::Decompress,
    dict: Vec<u8>,
}

impl HeaderDecoder {
    pub fn new(dict: Vec<u8>) -> HeaderDecoder {
        HeaderDecoder {
            inflate: flate2::Decompress::new(true),
            dict,
        }
    }

    /// Inflates one header block and parses it. Every round either
    /// consumes input or produces output, or the block is refused: a
    /// zlib stream that ends (the connection's never does), input that
    /// stays unconsumed, or more than [`MAX_HEADER_BLOCK`] bytes.
    pub fn decode(&mut self, block: &[u8]) -> Result<HashMap<String, String>, ProtocolError> {
        let mut plain = Vec::new();
        let mut buf = [0u8; 4096];
        let mut input = block;
        loop {
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let status =
                match self
                    .inflate
                    .decompress(input, &mut buf, flate2::FlushDecompress::Sync)
                {
                    Ok(s) => Some(s),
                    Err(e) if e.needs_dictionary().is_some() => {
                        if in0 != 0 {
                            // Only the stream's start may ask for it.
                            return err("header block asks for a dictionary mid-stream");
                        }
                        self.inflate
                            .set_dictionary(&self.dict)
                            .map_err(|e| ProtocolError(format!("header dictionary: {e}")))?;
                        None
                    }
                    Err(e) => return err(format!("header block: {e}")),
                };
            let used = usize::try_from(self.inflate.total_in() - in0).unwrap_or(usize::MAX);
            let produced = usize::try_from(self.inflate.total_out() - out0).unwrap_or(usize::MAX);
            let (Some(rest), Some(out)) = (input.get(used..), buf.get(..produced)) else {
                return err("header block: inflater overran its buffers");
            };
            input = rest;
            if plain.len() + out.len() > MAX_HEADER_BLOCK {
                return err(format!(
                    "header block inflates past {MAX_HEADER_BLOCK} bytes"
                ));
            }
            plain.extend_from_slice(out);
            if status == Some(flate2::Status::StreamEnd) {
                return err("header block ends the connection's zlib stream");
            }
            if status.is_none() {
                continue;
            }
            if input.is_empty() && produced < buf.len() {
                break;
            }
            if used == 0 && produced == 0 {
                return err("header block makes no progress");
            }
        }
        parse_block(&plain)
    }
}

/// A count, then length-prefixed names and values (names lowercase,
/// several values joined by NUL).
fn parse_block(b: &[u8]) -> Result<HashMap<String, String>, ProtocolError> {
    let mut at: usize = 0;
    let mut take = |n: usize| -> Result<&[u8], ProtocolError> {
        let Some(s) = at.checked_add(n).and_then(|end| b.get(at..end)) else {
            return err("header block too short");
        };
        at += n;
        Ok(s)
    };
    let word = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = word(take(4)?);
    if count > MAX_HEADERS {
        return err(format!("{count} headers (at most {MAX_HEADERS})"));
    }
    let mut h = HashMap::new();
    for _ in 0..count {
        let n = word(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = word(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        h.insert(name, value);
    }
    Ok(h)
}

/// The server's header compression.
pub struct HeaderEncoder {
    deflate: flate2::Compress,
}

impl HeaderEncoder {
    pub fn new(dict: &[u8]) -> HeaderEncoder {
        let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
        let _ = deflate.set_dictionary(dict);
        HeaderEncoder { deflate }
    }

    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
            plain.extend_from_slice(k.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let _ = self
            .deflate
            .compress_vec(&plain, &mut out, flate2::FlushCompress::Sync);
        out
    }
}

pub fn control_frame(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

pub fn data_frame(id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// The resize stream of SPDY remotecommand: Go's `json.Encoder` writes
/// `{"Width":W,"Height":H}` objects one after another, split across data
/// frames anywhere. Invalid JSON, or an object that grows past
/// [`MAX_RESIZE_PENDING`], ends resizing for the session (as the
/// kubelet's decoder gives up on its first error): later data is dropped.
#[derive(Default)]
pub struct ResizeStream {
    pending: Vec<u8>,
    broken: Option<String>,
}

impl ResizeStream {
    /// The sizes completed by `data`; an error the first time the stream
    /// breaks.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<(u16, u16)>, ProtocolError> {
        if self.broken.is_some() {
            return Ok(Vec::new());
        }
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut it =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<serde_json::Value>();
        let mut used = 0;
        let mut failure = None;
        loop {
            match it.next() {
                None => break,
                Some(Ok(v)) => {
                    used = it.byte_offset();
                    if let Some(s) = resize_of(&v) {
                        sizes.push(s);
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    failure = Some(format!("resize stream: {e}"));
                    break;
                }
            }
        }
        self.pending.drain(..used);
        if failure.is_none() && self.pending.len() > MAX_RESIZE_PENDING {
            failure = Some(format!(
                "resize stream: an object longer than {MAX_RESIZE_PENDING} bytes"
            ));
        }
        if let Some(f) = failure {
            self.pending = Vec::new();
            self.broken = Some(f.clone());
            return Err(ProtocolError(f));
        }
        Ok(sizes)
    }

    /// Bytes kept for an unfinished object (the tests and the fuzzer
    /// check the bound).
    #[allow(dead_code)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

fn resize_of(v: &serde_json::Value) -> Option<(u16, u16)> {
    Some((
        u16::try_from(v.get("Width")?.as_u64()?).ok()?,
        u16::try_from(v.get("Height")?.as_u64()?).ok()?,
    ))
}

/// `{"Width": 80, "Height": 24}` in one WebSocket message.
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    resize_of(&serde_json::from_slice(data).ok()?)
}

/// A WebSocket message of the channel protocols: a channel byte then
/// data (binary messages, and text messages on the binary protocols, as
/// the kubelet's wsstream takes them), or an ASCII channel digit then
/// base64 (text messages on `base64.` protocols). An empty message
/// carries nothing (`Ok(None)`).
pub fn decode_ws(base64: bool, text: bool, m: &[u8]) -> Result<Option<(u8, Bytes)>, ProtocolError> {
    let Some((&first, rest)) = m.split_first() else {
        return Ok(None);
    };
    if !base64 || !text {
        return Ok(Some((first, Bytes::copy_from_slice(rest))));
    }
    let Some(ch) = first.checked_sub(b'0').filter(|c| *c <= 9) else {
        return err("a base64 message without a channel digit");
    };
    match base64::engine::general_purpose::STANDARD.decode(rest) {
        Ok(data) => Ok(Some((ch, Bytes::from(data)))),
        Err(e) => err(format!("channel {ch}: bad base64: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict() -> Vec<u8> {
        cri_api::spdy_dictionary()
    }

    fn syn_stream(block: &[u8]) -> Vec<u8> {
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(block);
        control_frame(SYN_STREAM, 0, &body)
    }

    fn decode_all(mut bytes: &[u8], dec: &mut HeaderDecoder) -> Result<Vec<Frame>, ProtocolError> {
        let mut frames = Vec::new();
        while bytes.len() >= 8 {
            let head = parse_head(bytes[..8].try_into().unwrap())?;
            let body = bytes
                .get(8..8 + head.len)
                .ok_or(ProtocolError("short".into()))?;
            frames.push(decode_frame(&head, Bytes::copy_from_slice(body), dec)?);
            bytes = &bytes[8 + head.len..];
        }
        Ok(frames)
    }

    #[test]
    fn header_blocks_round_trip_through_the_shared_zlib_streams() {
        let mut enc = HeaderEncoder::new(&dict());
        let mut dec = HeaderDecoder::new(dict());
        for round in 0..3 {
            let v = format!("error-{round}");
            let block = enc.encode(&[("streamtype", &v), ("port", "80")]);
            let f = decode_all(&syn_stream(&block), &mut dec).unwrap();
            let Frame::SynStream { headers: h, .. } = &f[0] else {
                panic!("{f:?}")
            };
            assert_eq!(h["streamtype"], v);
            assert_eq!(h["port"], "80");
        }
    }

    /// The attack of issue 14: a finished zlib stream with a byte after
    /// it made the old decoder loop for ever.
    #[test]
    fn a_header_block_with_bytes_after_its_zlib_stream_is_refused() {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[0, 0, 0, 0]).unwrap();
        let mut block = z.finish().unwrap();
        block.push(0);
        let mut dec = HeaderDecoder::new(dict());
        let e = decode_all(&syn_stream(&block), &mut dec).unwrap_err();
        assert!(
            e.0.contains("zlib stream") || e.0.contains("progress"),
            "{e}"
        );
    }

    #[test]
    fn a_header_bomb_is_refused_at_the_bound() {
        // 1 MiB of one repeated byte inflates from about a kilobyte.
        let mut c = flate2::Compress::new(flate2::Compression::best(), true);
        c.set_dictionary(&dict()).unwrap();
        let mut block = Vec::with_capacity(1 << 16);
        c.compress_vec(
            &vec![b'a'; 1 << 20],
            &mut block,
            flate2::FlushCompress::Sync,
        )
        .unwrap();
        assert!(block.len() < MAX_FRAME);
        let mut dec = HeaderDecoder::new(dict());
        let e = decode_all(&syn_stream(&block), &mut dec).unwrap_err();
        assert!(e.0.contains("inflates past"), "{e}");
    }

    #[test]
    fn garbage_and_truncated_frames_are_errors_not_panics() {
        let mut dec = HeaderDecoder::new(dict());
        assert!(decode_all(&syn_stream(b"not zlib"), &mut dec).is_err());
        let mut dec = HeaderDecoder::new(dict());
        assert!(decode_all(&control_frame(SYN_STREAM, 0, &[0, 0]), &mut dec).is_err());
        assert!(decode_all(&control_frame(PING, 0, &[1]), &mut dec).is_err());
        let mut huge = control_frame(PING, 0, &[0; 4]);
        huge[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(parse_head(huge[..8].try_into().unwrap()).is_err());
        // A header count far beyond the block.
        let mut enc = HeaderEncoder::new(&dict());
        let mut block = enc.encode(&[]);
        block.clear();
        let mut c = flate2::Compress::new(flate2::Compression::default(), true);
        c.set_dictionary(&dict()).unwrap();
        c.compress_vec(
            &[0x7f, 0xff, 0xff, 0xff],
            &mut block,
            flate2::FlushCompress::Sync,
        )
        .unwrap();
        let mut dec = HeaderDecoder::new(dict());
        assert!(decode_all(&syn_stream(&block), &mut dec).is_err());
    }

    #[test]
    fn data_frames_carry_stream_and_fin() {
        let mut dec = HeaderDecoder::new(dict());
        let f = decode_all(&data_frame(5, true, b"hi"), &mut dec).unwrap();
        assert_eq!(
            f,
            vec![Frame::Data {
                id: 5,
                data: Bytes::from_static(b"hi"),
                fin: true
            }]
        );
    }

    #[test]
    fn resize_objects_split_anywhere_and_bad_json_stops_resizing() {
        let mut r = ResizeStream::default();
        assert_eq!(r.push(br#"{"Width":100,"Hei"#).unwrap(), vec![]);
        assert_eq!(
            r.push(br#"ght":40}{"Width":1,"Height":2}"#).unwrap(),
            vec![(100, 40), (1, 2)]
        );
        assert_eq!(r.pending(), 0);
        assert!(r.push(b"}garbage").is_err());
        assert_eq!(r.pending(), 0);
        // Broken for good: nothing kept, nothing parsed.
        assert_eq!(r.push(br#"{"Width":3,"Height":4}"#).unwrap(), vec![]);
        assert_eq!(r.pending(), 0);
        let mut r = ResizeStream::default();
        let long = format!(r#"{{"Width":1,"x":"{}"#, "a".repeat(MAX_RESIZE_PENDING));
        assert!(r.push(long.as_bytes()).is_err());
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn websocket_messages() {
        assert_eq!(
            decode_ws(false, false, &[1, b'h', b'i']).unwrap(),
            Some((1, Bytes::from_static(b"hi")))
        );
        assert_eq!(decode_ws(false, false, &[]).unwrap(), None);
        assert_eq!(
            decode_ws(true, true, b"2aGk=").unwrap(),
            Some((2, Bytes::from_static(b"hi")))
        );
        // A multi-byte first character panicked on `&t[1..]`.
        assert!(decode_ws(true, true, "é=".as_bytes()).is_err());
        assert!(decode_ws(true, true, b"0!!").is_err());
        assert_eq!(
            decode_ws(true, false, &[1, b'h']).unwrap(),
            Some((1, Bytes::from_static(b"h")))
        );
        assert_eq!(
            parse_resize(br#"{"Width":100,"Height":40}"#),
            Some((100, 40))
        );
        assert_eq!(parse_resize(br#"{"Width":100000,"Height":40}"#), None);
    }
}
