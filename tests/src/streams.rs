//! Test clients for berth's streaming server, written to the published
//! protocol descriptions (not the server's code): WebSocket with the
//! `channel.k8s.io` family, and a minimal SPDY/3.1 client.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url` (http:// becomes ws://) offering
/// `protocols`; returns it and the protocol the server chose.
pub async fn ws_connect(url: &str, protocols: &str) -> Result<(Ws, String), String> {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocols.parse().map_err(|_| "bad protocols")?,
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ws, chosen))
}

/// A binary `channel.k8s.io` message.
pub fn ws_frame(channel: u8, data: &[u8]) -> Message {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Reads messages until the server closes; returns the data per channel.
pub async fn ws_collect(ws: &mut Ws) -> HashMap<u8, Vec<u8>> {
    use futures_util::StreamExt;
    let mut out: HashMap<u8, Vec<u8>> = HashMap::new();
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) if !b.is_empty() => {
                out.entry(b[0]).or_default().extend_from_slice(&b[1..])
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    out
}

/// What a SPDY client runs over: a TCP connection, or a WebSocket tunnel.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A SPDY/3.1 client connection.
pub struct Spdy {
    sock: Box<dyn Io>,
    deflate: flate2::Compress,
    next_id: u32,
}

impl Spdy {
    /// Upgrades `url` offering `protocol`; returns the connection and the
    /// protocol the server chose.
    pub async fn connect(url: &str, protocol: &str) -> Result<(Spdy, String), String> {
        let rest = url.strip_prefix("http://").ok_or("not http")?;
        let host = &rest[..rest.find('/').ok_or("no path")?];
        let sock = TcpStream::connect(host).await.map_err(|e| e.to_string())?;
        Spdy::upgrade(Box::new(sock), url, protocol).await
    }

    /// As [`Spdy::connect`], for an `https://` URL whose server presents a
    /// certificate signed by (or being) `ca` (PEM).
    pub async fn connect_tls(
        url: &str,
        protocol: &str,
        ca: &std::path::Path,
    ) -> Result<(Spdy, String), String> {
        use rustls_pki_types::pem::PemObject;
        let rest = url.strip_prefix("https://").ok_or("not https")?;
        let host = &rest[..rest.find('/').ok_or("no path")?];
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(
            host.rsplit_once(':').map_or(host, |(h, _)| h).to_string(),
        )
        .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(host).await.map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Spdy::upgrade(Box::new(tls), url, protocol).await
    }

    /// The HTTP/1.1 upgrade to SPDY/3.1 on `sock`.
    async fn upgrade(
        mut sock: Box<dyn Io>,
        url: &str,
        protocol: &str,
    ) -> Result<(Spdy, String), String> {
        let rest = url.split_once("://").ok_or("no scheme")?.1;
        let (host, path) = rest.split_at(rest.find('/').ok_or("no path")?);
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        );
        sock.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if sock.read(&mut b).await.map_err(|e| e.to_string())? == 0 {
                return Err(format!("closed: {}", String::from_utf8_lossy(&head)));
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        let chosen = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        Ok((Spdy::over(sock)?, chosen))
    }

    /// A SPDY client over an established byte stream.
    pub fn over(sock: Box<dyn Io>) -> Result<Spdy, String> {
        let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
        deflate
            .set_dictionary(&cri_api::spdy_dictionary())
            .map_err(|e| e.to_string())?;
        Ok(Spdy {
            sock,
            deflate,
            next_id: 1,
        })
    }

    /// SPDY through a WebSocket with the `SPDY/3.1+portforward.k8s.io`
    /// subprotocol: each binary message carries bytes of the connection.
    pub async fn tunnel(url: &str) -> Result<(Spdy, String), String> {
        use futures_util::{SinkExt, StreamExt};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ws, chosen) = ws_connect(url, "SPDY/3.1+portforward.k8s.io").await?;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let (mut sink, mut stream) = ws.split();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Binary(b) = m
                    && wr.write_all(&b).await.is_err()
                {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0
                    || sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok((Spdy::over(Box::new(ours))?, chosen))
    }

    /// SYN_STREAM with `headers`; returns the stream id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        let f = self.syn_stream_frame(headers);
        self.sock.write_all(&f).await.expect("SYN_STREAM");
        id
    }

    /// The bytes of the next SYN_STREAM with `headers` (its stream id
    /// taken, its header block through the connection's zlib stream), for
    /// the caller to write.
    pub fn syn_stream_frame(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let id = self.next_id;
        self.next_id += 2;
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s.as_bytes());
            }
        }
        let mut block = Vec::with_capacity(plain.len() + 64);
        self.deflate
            .compress_vec(&plain, &mut block, flate2::FlushCompress::Sync)
            .expect("deflate");
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&block);
        let mut f = vec![0x80, 3, 0, 1, 0];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(&body);
        f
    }

    /// A data frame on any stream id, opened or not; an error once the
    /// server has closed the connection.
    pub async fn send_raw_data(&mut self, id: u32, data: &[u8]) -> std::io::Result<()> {
        let mut f = id.to_be_bytes().to_vec();
        f.push(0);
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.sock.write_all(&f).await
    }

    pub async fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        let mut f = id.to_be_bytes().to_vec();
        f.push(u8::from(fin));
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.sock.write_all(&f).await.expect("DATA");
    }

    /// Writes `bytes` as they are: a hostile client's frames.
    pub async fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes).await
    }

    /// The next frame's head and body; None when the connection ends.
    async fn frame(&mut self) -> Option<([u8; 8], Vec<u8>)> {
        let mut head = [0u8; 8];
        self.sock.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut body = vec![0u8; len];
        self.sock.read_exact(&mut body).await.ok()?;
        Some((head, body))
    }

    /// Reads until the server's GOAWAY and returns its status code (0 OK,
    /// 1 PROTOCOL_ERROR); None if the connection ends without one.
    pub async fn goaway(&mut self) -> Option<u32> {
        loop {
            let (head, body) = self.frame().await?;
            if head[0] & 0x80 != 0 && u16::from_be_bytes([head[2], head[3]]) == 7 {
                let status = body.get(4..8)?;
                return Some(u32::from_be_bytes([
                    status[0], status[1], status[2], status[3],
                ]));
            }
        }
    }

    /// The next data frame (stream, data, fin), skipping control frames;
    /// None when the connection ends.
    pub async fn next_data(&mut self) -> Option<(u32, Vec<u8>, bool)> {
        loop {
            let (head, body) = self.frame().await?;
            if head[0] & 0x80 == 0 {
                let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                return Some((id, body, head[4] & 1 != 0));
            }
            // GOAWAY: the server is done.
            if u16::from_be_bytes([head[2], head[3]]) == 7 {
                return None;
            }
        }
    }
}
