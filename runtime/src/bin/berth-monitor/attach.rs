//! The monitor's attach socket (`<state>/attach.sock`): berthd connects
//! for `Attach` and `ReopenContainerLog`. Frames both ways are
//! `[kind: u8][length: u32 BE][data]`:
//!
//! - monitor → berthd: 1 stdout, 2 stderr (the container's output, as it
//!   is logged), 5 the log was reopened;
//! - berthd → monitor: 0 stdin data, 3 end of this session's stdin, 4
//!   resize (`<cols> <rows>`), 5 reopen the log.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::poll::{PollFd, PollFlags};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STDIN_END: u8 = 3;
pub const RESIZE: u8 = 4;
pub const REOPEN: u8 = 5;

struct Client {
    sock: UnixStream,
    buf: Vec<u8>,
    /// It sent stdin: its end counts for `stdin_once`.
    wrote_stdin: bool,
}

pub struct Attach {
    listener: UnixListener,
    clients: Vec<Client>,
    /// The container's stdin (a pipe, or the terminal).
    input: Option<File>,
    /// Close stdin after the first session that used it ends.
    once: bool,
    /// The terminal, for resizes.
    tty: Option<File>,
}

/// What the pump must do after servicing the socket.
#[derive(Default)]
pub struct Requests {
    pub reopen: Vec<usize>,
}

impl Attach {
    pub fn bind(
        state: &Path,
        input: Option<File>,
        once: bool,
        tty: Option<File>,
    ) -> Result<Attach, String> {
        let _ = std::fs::remove_file(state.join("attach.sock"));
        // Through the directory's descriptor: the state dir's own path may
        // be too long for a socket address.
        let dir = File::open(state).map_err(|e| format!("{}: {e}", state.display()))?;
        let path = format!("/proc/self/fd/{}/attach.sock", dir.as_raw_fd());
        let listener = UnixListener::bind(&path).map_err(|e| format!("attach socket: {e}"))?;
        drop(dir);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("attach socket: {e}"))?;
        Ok(Attach {
            listener,
            clients: Vec::new(),
            input,
            once,
            tty,
        })
    }

    /// The descriptors to poll: the listener, then each client.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut v = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        v.extend(
            self.clients
                .iter()
                .map(|c| PollFd::new(c.sock.as_fd(), PollFlags::POLLIN)),
        );
        v
    }

    /// Accepts and reads what is ready (`ready` matches [`poll_fds`]).
    pub fn service(&mut self, ready: &[bool]) -> Requests {
        let mut req = Requests::default();
        if ready.first().copied().unwrap_or(false) {
            while let Ok((sock, _)) = self.listener.accept() {
                let _ = sock.set_nonblocking(true);
                self.clients.push(Client {
                    sock,
                    buf: Vec::new(),
                    wrote_stdin: false,
                });
            }
        }
        let mut gone = Vec::new();
        let mut chunk = [0u8; 32 * 1024];
        for (i, c) in self.clients.iter_mut().enumerate() {
            if !ready.get(i + 1).copied().unwrap_or(false) {
                continue;
            }
            match c.sock.read(&mut chunk) {
                Ok(0) => gone.push(i),
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => gone.push(i),
            }
            while c.buf.len() >= 5 {
                let len = u32::from_be_bytes([c.buf[1], c.buf[2], c.buf[3], c.buf[4]]) as usize;
                if c.buf.len() < 5 + len {
                    break;
                }
                let kind = c.buf[0];
                let data: Vec<u8> = c.buf[5..5 + len].to_vec();
                c.buf.drain(..5 + len);
                match kind {
                    STDIN => {
                        c.wrote_stdin = true;
                        if let Some(input) = self.input.as_mut()
                            && !data.is_empty()
                            && input.write_all(&data).is_err()
                        {
                            self.input = None;
                        }
                    }
                    STDIN_END if self.once && c.wrote_stdin => self.input = None,
                    RESIZE => {
                        if let (Some(t), Some((w, h))) =
                            (&self.tty, parse_size(&String::from_utf8_lossy(&data)))
                        {
                            resize(t, w, h);
                        }
                    }
                    REOPEN => req.reopen.push(i),
                    _ => {}
                }
            }
        }
        for i in gone.into_iter().rev() {
            let c = self.clients.remove(i);
            if self.once && c.wrote_stdin {
                self.input = None;
            }
        }
        req
    }

    /// Sends the container's output to every attached client; one that
    /// cannot take it now is dropped rather than stall the container.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let frame = frame(kind, data);
        self.clients
            .retain_mut(|c| write_frame(&mut c.sock, &frame));
    }

    pub fn ack(&mut self, i: usize, kind: u8, msg: &[u8]) {
        if let Some(c) = self.clients.get_mut(i) {
            let f = frame(kind, msg);
            let _ = write_frame(&mut c.sock, &f);
        }
    }
}

fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + data.len());
    f.push(kind);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

/// Writes all of `frame`, waiting a little for a client that is slow.
fn write_frame(sock: &mut UnixStream, frame: &[u8]) -> bool {
    let mut at = 0;
    let mut waits = 0;
    while at < frame.len() {
        match sock.write(&frame[at..]) {
            Ok(0) => return false,
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && waits < 200 => {
                waits += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
    true
}

pub fn parse_size(line: &str) -> Option<(u16, u16)> {
    let mut it = line.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

pub fn resize(tty: &File, cols: u16, rows: u16) {
    let ws = nix::libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    unsafe {
        nix::libc::ioctl(tty.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws);
    }
}
