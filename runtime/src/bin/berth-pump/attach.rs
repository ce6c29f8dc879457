//! The monitor's attach socket (`<state>/attach.sock`): berthd connects
//! for `Attach` and `ReopenContainerLog`. The frames both ways are
//! [`berth_runtime::protocol::frame`]'s; a client that sends what is not
//! a frame is dropped.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use berth_runtime::protocol::frame::{self, Channel, Decoder, Frame, Resize};
use berth_runtime::protocol::state::{ATTACH_SOCKET, attach_socket_address};
use nix::poll::{PollFd, PollFlags};

struct Client {
    sock: UnixStream,
    frames: Decoder,
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
        let _ = std::fs::remove_file(state.join(ATTACH_SOCKET));
        let dir = File::open(state).map_err(|e| format!("{}: {e}", state.display()))?;
        let listener = UnixListener::bind(attach_socket_address(&dir))
            .map_err(|e| format!("attach socket: {e}"))?;
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
                    frames: Decoder::new(),
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
                Ok(n) => c.frames.feed(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => gone.push(i),
            }
            loop {
                let Frame { channel, data } = match c.frames.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("berth-monitor: attach client dropped: {e}");
                        if gone.last() != Some(&i) {
                            gone.push(i);
                        }
                        break;
                    }
                };
                match channel {
                    Channel::Stdin => {
                        c.wrote_stdin = true;
                        if let Some(input) = self.input.as_mut()
                            && !data.is_empty()
                            && input.write_all(&data).is_err()
                        {
                            self.input = None;
                        }
                    }
                    Channel::StdinEnd if self.once && c.wrote_stdin => self.input = None,
                    Channel::Resize => {
                        if let (Some(t), Some(r)) = (&self.tty, Resize::parse(&data)) {
                            berth_runtime::resize_terminal(t, r);
                        }
                    }
                    Channel::Reopen => req.reopen.push(i),
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
    pub fn broadcast(&mut self, channel: Channel, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let frame = frame::encode(channel, data);
        self.clients
            .retain_mut(|c| write_frame(&mut c.sock, &frame));
    }

    pub fn ack(&mut self, i: usize, channel: Channel, msg: &[u8]) {
        if let Some(c) = self.clients.get_mut(i) {
            let f = frame::encode(channel, msg);
            let _ = write_frame(&mut c.sock, &f);
        }
    }
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
