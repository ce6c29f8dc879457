//! The frames on a monitor's attach socket (`<state>/attach.sock`), both
//! ways: `[channel: u8][length: u32 BE][data]`. The channel numbers are
//! berth's own (not the Kubernetes streaming ones, where 3 is the error
//! channel):
//!
//! - monitor → berthd: [`Channel::Stdout`], [`Channel::Stderr`] (the
//!   container's output, as it is logged), [`Channel::Reopen`] (the log
//!   was reopened: empty, or why not);
//! - berthd → monitor: [`Channel::Stdin`] (data; an empty frame claims
//!   stdin for the session), [`Channel::StdinEnd`] (this session's stdin
//!   ends), [`Channel::Resize`] (`<cols> <rows>`), [`Channel::Reopen`]
//!   (reopen the log).

use std::fmt;

/// Bytes before a frame's data: its channel and its length.
pub const HEADER: usize = 5;

/// The most data one frame carries; [`encode`] splits longer data, and
/// [`Decoder`] refuses a frame that says it is longer.
pub const MAX_FRAME: usize = 1 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdin,
    Stdout,
    Stderr,
    StdinEnd,
    Resize,
    Reopen,
}

impl Channel {
    const ALL: [Channel; 6] = [
        Channel::Stdin,
        Channel::Stdout,
        Channel::Stderr,
        Channel::StdinEnd,
        Channel::Resize,
        Channel::Reopen,
    ];

    /// The channel's byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Channel::Stdin => 0,
            Channel::Stdout => 1,
            Channel::Stderr => 2,
            Channel::StdinEnd => 3,
            Channel::Resize => 4,
            Channel::Reopen => 5,
        }
    }

    pub fn from_byte(b: u8) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.byte() == b)
    }
}

/// `data` on `channel` as frames: one, or (for data over [`MAX_FRAME`])
/// several in a row; empty data is one empty frame.
pub fn encode(channel: Channel, data: &[u8]) -> Vec<u8> {
    let pieces = data.len().div_ceil(MAX_FRAME).max(1);
    let mut f = Vec::with_capacity(pieces * HEADER + data.len());
    let mut rest = data;
    loop {
        let (piece, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        f.push(channel.byte());
        // At most MAX_FRAME, which fits.
        f.extend_from_slice(&(piece.len() as u32).to_be_bytes());
        f.extend_from_slice(piece);
        rest = tail;
        if rest.is_empty() {
            return f;
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub channel: Channel,
    pub data: Vec<u8>,
}

/// Why a byte stream is not frames. Each ends the connection: what
/// follows cannot be trusted to be at a frame's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    UnknownChannel(u8),
    /// The header says more than [`MAX_FRAME`] bytes follow.
    TooLong(usize),
    /// The stream ended inside a frame, `n` bytes into it.
    Truncated(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownChannel(c) => write!(f, "attach frame on unknown channel {c}"),
            FrameError::TooLong(n) => {
                write!(f, "attach frame of {n} bytes (at most {MAX_FRAME})")
            }
            FrameError::Truncated(n) => {
                write!(f, "attach stream ended {n} bytes into a frame")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Reassembles frames from bytes as they arrive. It never holds more than
/// one frame's header and data beyond what was fed and not yet taken.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` until one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(head) = self.buf.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let channel = Channel::from_byte(head[0]).ok_or(FrameError::UnknownChannel(head[0]))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let data = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(Frame { channel, data }))
    }

    /// At the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

/// A terminal size, as a [`Channel::Resize`] frame's data and as a line
/// on `berth-monitor exec`'s control descriptor: `<cols> <rows>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    pub cols: u16,
    pub rows: u16,
}

impl Resize {
    /// `<cols> <rows>`, no newline.
    pub fn to_text(self) -> String {
        format!("{} {}", self.cols, self.rows)
    }

    /// Two numbers separated by white space (anything after them is
    /// ignored); None for anything else.
    pub fn parse(text: &[u8]) -> Option<Resize> {
        let text = std::str::from_utf8(text).ok()?;
        let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
        Some(Resize {
            cols: it.next()??,
            rows: it.next()??,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut d = Decoder::new();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
        d.finish().map(|()| out)
    }

    #[test]
    fn channels_round_trip_and_stdin_end_is_three() {
        for c in Channel::ALL {
            assert_eq!(Channel::from_byte(c.byte()), Some(c));
        }
        assert_eq!(Channel::StdinEnd.byte(), 3);
        assert_eq!(Channel::from_byte(6), None);
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let mut wire = encode(Channel::Stdout, b"hello");
        wire.extend(encode(Channel::StdinEnd, b""));
        wire.extend(encode(
            Channel::Resize,
            Resize { cols: 80, rows: 24 }.to_text().as_bytes(),
        ));
        assert_eq!(&wire[..HEADER], &[1, 0, 0, 0, 5]);
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.feed(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        d.finish().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].channel, Channel::Stdout);
        assert_eq!(got[0].data, b"hello");
        assert_eq!(got[1].channel, Channel::StdinEnd);
        assert!(got[1].data.is_empty());
        assert_eq!(
            Resize::parse(&got[2].data),
            Some(Resize { cols: 80, rows: 24 })
        );
    }

    #[test]
    fn long_data_is_split_into_frames_of_at_most_the_maximum() {
        let data = vec![7u8; 2 * MAX_FRAME + 3];
        let frames = decode_all(&encode(Channel::Stdin, &data)).unwrap();
        let lens: Vec<usize> = frames.iter().map(|f| f.data.len()).collect();
        assert_eq!(lens, [MAX_FRAME, MAX_FRAME, 3]);
        assert!(frames.iter().all(|f| f.channel == Channel::Stdin));
        assert_eq!(
            frames
                .iter()
                .flat_map(|f| f.data.clone())
                .collect::<Vec<u8>>(),
            data
        );
    }

    #[test]
    fn oversized_truncated_and_unknown_frames_are_errors() {
        // The length alone is refused, before any data arrives.
        let mut d = Decoder::new();
        d.feed(&[1, 0, 0x10, 0, 1]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(MAX_FRAME + 1)));
        d = Decoder::new();
        d.feed(&[2, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(u32::MAX as usize)));
        // Exactly the maximum is fine.
        let mut max = encode(Channel::Stdout, &vec![0; MAX_FRAME]);
        assert_eq!(decode_all(&max).unwrap().len(), 1);
        // Cut short: no frame, and an error at the end.
        max.pop();
        assert_eq!(
            decode_all(&max),
            Err(FrameError::Truncated(HEADER + MAX_FRAME - 1))
        );
        assert_eq!(decode_all(&[1, 0, 0]), Err(FrameError::Truncated(3)));
        assert_eq!(
            decode_all(&[9, 0, 0, 0, 0]),
            Err(FrameError::UnknownChannel(9))
        );
        assert!(FrameError::TooLong(5).to_string().contains("at most"));
    }

    #[test]
    fn resize_text() {
        assert_eq!(
            Resize::parse(b"120 40\n"),
            Some(Resize {
                cols: 120,
                rows: 40
            })
        );
        for bad in [&b""[..], b"80", b"80 x", b"-1 2", b"70000 2", b"\xff 2"] {
            assert_eq!(Resize::parse(bad), None, "{bad:?}");
        }
    }
}
