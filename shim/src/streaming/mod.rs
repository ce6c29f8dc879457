//! The streaming server: `Exec`, `Attach` and `PortForward` answer with a
//! URL here, carrying a single-use token that expires after a minute (as
//! the kubelet's own streaming server does). The client (kubelet, API
//! server, crictl) then connects with one of the protocols the kubelet's
//! streaming library serves:
//!
//! - WebSocket with `v5.channel.k8s.io`, `v4.channel.k8s.io`,
//!   `v4.base64.channel.k8s.io`, `base64.channel.k8s.io` or
//!   `channel.k8s.io` for exec and attach, and `v4.channel.k8s.io` (and
//!   `v4.base64...`) for port-forward ([`ws`]);
//! - an HTTP upgrade to SPDY/3.1 with the remotecommand subprotocols in
//!   `X-Stream-Protocol-Version`, and `portforward.k8s.io` ([`spdy`]).

pub mod codec;
mod portforward;
pub mod session;
pub mod spdy;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use http::StatusCode;

use crate::daemon::Daemon;

/// Tokens outstanding at most (more: the oldest go).
const MAX_TOKENS: usize = 1000;

/// What a token stands for.
#[derive(Clone, Debug)]
pub enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

pub struct Streaming {
    base: String,
    tokens: Mutex<HashMap<String, (Pending, Instant)>>,
    pub idle_timeout: Duration,
    /// How long a URL's token stays valid (the kubelet's: one minute).
    token_ttl: Duration,
}

impl Streaming {
    pub fn new(
        addr: SocketAddr,
        tls: bool,
        idle_timeout: Duration,
        token_ttl: Duration,
    ) -> Streaming {
        Streaming {
            base: format!("{}://{addr}", if tls { "https" } else { "http" }),
            tokens: Mutex::new(HashMap::new()),
            idle_timeout,
            token_ttl,
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Pending, Instant)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh URL for `p`: absolute, with a scheme, as clients need.
    pub fn url(&self, p: Pending) -> Result<String, String> {
        let token = crate::ids::random_id().map_err(|e| e.to_string())?[..22].to_string();
        let url = format!("{}/{}/{token}", self.base, p.kind());
        let mut tokens = self.tokens();
        let now = Instant::now();
        let ttl = self.token_ttl;
        tokens.retain(|_, (_, t)| now.duration_since(*t) < ttl);
        if tokens.len() >= MAX_TOKENS
            && let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
        {
            tokens.remove(&oldest);
        }
        tokens.insert(token, (p, now));
        Ok(url)
    }

    /// The request behind `token`, once: a token is used up by its first
    /// connection, and is void after the token TTL.
    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let (p, at) = self.tokens().remove(token)?;
        (at.elapsed() < self.token_ttl && p.kind() == kind).then_some(p)
    }
}

/// Serves the streaming endpoints on `listener` until the task is
/// dropped; over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    d: Arc<Daemon>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let app = axum::Router::new()
        .route("/{kind}/{token}", axum::routing::any(handle))
        .with_state(d);
    let Some(acceptor) = tls else {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("streaming server: {e}");
        }
        return;
    };
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!("streaming server: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!("streaming TLS handshake: {e}");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!("streaming connection: {e}");
            }
        });
    }
}

/// The TLS side of the streaming server, from PEM files.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("streaming TLS: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

async fn handle(
    State(d): State<Arc<Daemon>>,
    Path((kind, token)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(streaming) = d.streaming.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "streaming not ready").into_response();
    };
    let Some(pending) = streaming.take(&kind, &token) else {
        return (StatusCode::NOT_FOUND, "unknown or expired token").into_response();
    };
    tracing::info!(kind, "streaming session");
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
        .unwrap_or_default();
    if upgrade == "websocket" {
        ws::upgrade(d.clone(), pending, req).await
    } else if upgrade.starts_with("spdy/3.1") {
        spdy::upgrade(d.clone(), pending, req).await
    } else {
        (
            StatusCode::BAD_REQUEST,
            "expected an upgrade to WebSocket or SPDY/3.1",
        )
            .into_response()
    }
}
