//! The socket side of [`super::Rewriter`]: what the HTTP/2 server reads
//! and writes instead of the unix stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Rewriter;

/// A socket whose incoming bytes go through a [`Rewriter`].
pub struct Fixed<S> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet read by the server.
    out: Vec<u8>,
    at: usize,
}

impl<S> Fixed<S> {
    pub fn new(inner: S) -> Self {
        Fixed {
            inner,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            at: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Fixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.at < me.out.len() {
                let n = (me.out.len() - me.at).min(buf.remaining());
                buf.put_slice(&me.out[me.at..me.at + n]);
                me.at += n;
                return Poll::Ready(Ok(()));
            }
            me.out.clear();
            me.at = 0;
            let mut scratch = [0u8; 16_384];
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => me
                    .rewriter
                    .feed(rb.filled(), &mut me.out)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Fixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Fixed<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
