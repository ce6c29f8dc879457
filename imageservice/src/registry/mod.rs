//! A client for the OCI distribution API: manifests and blobs, with
//! anonymous, basic, bearer-token and OAuth2 refresh-token auth, per-host
//! TLS settings from hosts.toml, and tokens cached per host and scope.
//!
//! Registries are not trusted: every request has a deadline
//! ([`Limits::request_timeout`]) that covers connecting, the token
//! exchange, the answer's headers and any small body read whole (manifest,
//! token JSON, error text), and every such body has a size bound. Blob
//! bodies must keep up a minimum rate over a sliding window
//! ([`RateWindow`]), so a trickle cannot hold a download open.
//!
//! Credentials never go over plain HTTP to a host that was given TLS
//! settings: such an `http://` host is tried over HTTPS first (as
//! containerd does) and, if it answers in plain HTTP, is spoken to without
//! credentials ([`RegistryHost::plain_http_credentials`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use crate::hosts::{RegistryHost, Scheme};

mod auth;
mod body;
#[cfg(test)]
mod tests;
mod tls;

pub(crate) use auth::parse_challenge;
pub use auth::{Auth, Credentials};
pub use body::{BlobBody, RateWindow};
use body::{BodyError, read_body, read_error_body};
use tls::{TlsKey, error_chain, speaks_plain_http};

/// Manifests larger than this are refused: they are held in memory.
const MAX_MANIFEST: usize = 4 << 20;
/// Token endpoint answers larger than this are refused (real ones are a
/// few KiB).
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// At most this much of an error body is read; the rest is not waited for.
const MAX_ERROR_BODY: usize = 4 << 10;
/// How long a host that answered HTTPS in plain HTTP is spoken to in plain
/// HTTP before HTTPS is tried again.
const HTTP_FALLBACK_TTL: Duration = Duration::from_secs(10 * 60);

/// What berth will wait for from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of one request: connecting, the token exchange, the
    /// answer's headers and a small body read whole (`registry.request_timeout`).
    pub request_timeout: Duration,
    /// The sliding window over which a blob download must keep up
    /// `min_rate` (`registry.pull_progress_timeout`).
    pub rate_window: Duration,
    /// Bytes per second a blob download must average over every window
    /// (`registry.pull_min_rate`); with 0, one byte per window is enough.
    pub min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(60),
            rate_window: Duration::from_secs(5 * 60),
            min_rate: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: not found")]
    NotFound { url: String },
    #[error("{url}: access denied ({status}){hint}")]
    Denied {
        url: String,
        status: StatusCode,
        hint: &'static str,
    },
    #[error("{url}: registry answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("token endpoint {realm}: {reason}")]
    Token { realm: String, reason: String },
    #[error("invalid credentials: {0}")]
    BadCredentials(&'static str),
    #[error("TLS settings for {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("{url}: manifest larger than {MAX_MANIFEST} bytes")]
    TooLarge { url: String },
    #[error("{url}: no complete answer within {} (registry.request_timeout)", secs(.timeout))]
    Deadline { url: String, timeout: Duration },
    #[error(
        "{url}: {got} bytes in the last {}, less than registry.pull_min_rate = {min_rate} bytes/s \
         over registry.pull_progress_timeout = {}",
        secs(.window), secs(.window)
    )]
    TooSlow {
        url: String,
        got: u64,
        window: Duration,
        min_rate: u64,
    },
    #[error(
        "{host}: refusing to send credentials over plain HTTP to {url}: the host has TLS settings \
         (ca, client or skip_verify) in hosts.toml but does not speak HTTPS; serve HTTPS, or \
         write it as a plain `http://` host without TLS settings to allow credentials in clear"
    )]
    PlainHttpCredentials { host: String, url: String },
}

/// `90s`, `1.5s`: a duration as the error messages give it.
fn secs(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

impl RegistryError {
    /// Worth trying the next host (mirror -> upstream)?
    pub fn try_next_host(&self) -> bool {
        !matches!(self, RegistryError::BadCredentials(_))
    }
}

/// How a host wants us to authenticate, learned from its 401 challenge.
#[derive(Debug, Clone)]
pub(crate) enum Challenge {
    Basic,
    Bearer { realm: String, service: String },
}

pub struct Registry {
    clients: Mutex<HashMap<TlsKey, reqwest::Client>>,
    challenges: Mutex<HashMap<String, Challenge>>,
    /// (host, scope, credentials) -> bearer token.
    tokens: Mutex<HashMap<(String, String, String), String>>,
    /// Hosts that try HTTPS first and answered it in plain HTTP, and when.
    plain_http: Mutex<HashMap<String, Instant>>,
    /// Hosts already warned about for getting credentials in clear.
    warned: Mutex<HashSet<String>>,
    limits: Limits,
}

impl Registry {
    pub fn new(limits: Limits) -> Registry {
        Registry {
            clients: Mutex::default(),
            challenges: Mutex::default(),
            tokens: Mutex::default(),
            plain_http: Mutex::default(),
            warned: Mutex::default(),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// GETs a manifest by tag or digest; returns its Content-Type and body.
    pub async fn manifest(
        &self,
        host: &RegistryHost,
        ns: &str,
        repo: &str,
        reference: &str,
        creds: &Credentials,
    ) -> Result<(String, Vec<u8>), RegistryError> {
        let accept = crate::manifest::ACCEPT.join(", ");
        let (mut resp, deadline) = self
            .get(
                host,
                ns,
                repo,
                &format!("manifests/{reference}"),
                &accept,
                creds,
            )
            .await?;
        let url = resp.url().to_string();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST as u64)
        {
            return Err(RegistryError::TooLarge { url });
        }
        let body = read_body(&mut resp, MAX_MANIFEST, deadline)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => RegistryError::TooLarge { url: url.clone() },
                BodyError::Deadline => RegistryError::Deadline {
                    url: url.clone(),
                    timeout: self.limits.request_timeout,
                },
                BodyError::Transport(reason) => RegistryError::Transport {
                    url: url.clone(),
                    reason,
                },
            })?;
        Ok((content_type, body))
    }

    /// Starts a blob download; read it with [`BlobBody::chunk`].
    pub async fn blob(
        &self,
        host: &RegistryHost,
        ns: &str,
        repo: &str,
        digest: &str,
        creds: &Credentials,
    ) -> Result<BlobBody, RegistryError> {
        let (resp, _) = self
            .get(host, ns, repo, &format!("blobs/{digest}"), "*/*", creds)
            .await?;
        Ok(BlobBody {
            url: resp.url().to_string(),
            resp,
            rate: RateWindow::new(
                self.limits.rate_window,
                self.limits.min_rate,
                Instant::now(),
            ),
            min_rate: self.limits.min_rate,
        })
    }

    /// The scheme to speak to `host` in now: HTTPS first for an `http://`
    /// host with TLS settings, until it has answered HTTPS in plain HTTP.
    fn scheme_now(&self, host: &RegistryHost) -> Scheme {
        if !host.tries_https_first() {
            return host.scheme;
        }
        let mut plain = self.plain_http.lock().unwrap_or_else(|e| e.into_inner());
        match plain.get(&host.host) {
            Some(t) if t.elapsed() < HTTP_FALLBACK_TTL => Scheme::Http,
            Some(_) => {
                plain.remove(&host.host);
                Scheme::Https
            }
            None => Scheme::Https,
        }
    }

    /// Credentials in clear, to a host that is plain-HTTP-only: allowed,
    /// said once per host.
    fn warn_plain_http(&self, host: &RegistryHost, url: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.insert(host.host.clone()) {
            tracing::warn!(
                host = %host.host,
                url = %url,
                "sending registry credentials over plain HTTP (the host is plain-HTTP-only); \
                 not repeated for this host"
            );
        }
    }

    /// Sends a GET, following one auth challenge and the HTTPS -> HTTP
    /// fallback; returns the response and the request's deadline, which
    /// also bounds reading a small body.
    async fn get(
        &self,
        host: &RegistryHost,
        ns: &str,
        repo: &str,
        what: &str,
        accept: &str,
        creds: &Credentials,
    ) -> Result<(Response, Instant), RegistryError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let client = self.client(host)?;
        let mut path = format!("{}/{repo}/{what}", host.path);
        // A mirror learns which registry we mean, as containerd tells it.
        if !host.is_upstream {
            path.push_str(&format!("?ns={ns}"));
        }
        let scope = format!("repository:{repo}:pull");
        let mut retried = false;
        loop {
            let scheme = self.scheme_now(host);
            let url = format!("{scheme}://{}{path}", host.host);
            let may_send_creds = scheme == Scheme::Https || host.plain_http_credentials();
            let sent = if may_send_creds {
                creds
            } else {
                &Credentials::Anonymous
            };
            let mut req = client.get(&url).header(ACCEPT, accept);
            for (k, v) in &host.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(auth) = self.authorization(host, &scope, sent, deadline).await? {
                if scheme == Scheme::Http && *sent != Credentials::Anonymous {
                    self.warn_plain_http(host, &url);
                }
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = match tokio::time::timeout_at(deadline, req.send()).await {
                Err(_) => {
                    return Err(RegistryError::Deadline {
                        url,
                        timeout: self.limits.request_timeout,
                    });
                }
                Ok(Err(e)) if scheme == Scheme::Https && speaks_plain_http(&e) => {
                    // containerd's fallback for http:// hosts with TLS
                    // settings: the server does not speak TLS.
                    tracing::info!(host = %host.host, "answers HTTPS in plain HTTP: using HTTP");
                    self.plain_http
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(host.host.clone(), Instant::now());
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(RegistryError::Transport {
                        url,
                        reason: error_chain(&e),
                    });
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if status.is_success() {
                return Ok((resp, deadline));
            }
            if status == StatusCode::UNAUTHORIZED
                && !retried
                && let Some(c) = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge)
            {
                self.lock_challenges().insert(host.host.clone(), c);
                // A token that was refused is stale: forget it.
                self.lock_tokens()
                    .retain(|(h, s, _), _| !(h == &host.host && s == &scope));
                retried = true;
                continue;
            }
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    if !may_send_creds && *creds != Credentials::Anonymous =>
                {
                    RegistryError::PlainHttpCredentials {
                        host: host.host.clone(),
                        url,
                    }
                }
                StatusCode::NOT_FOUND => RegistryError::NotFound { url },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied {
                    url,
                    status,
                    hint: if *creds == Credentials::Anonymous {
                        " without credentials: the image may be private"
                    } else {
                        ""
                    },
                },
                _ => {
                    let mut resp = resp;
                    let body = read_error_body(&mut resp, deadline).await;
                    RegistryError::Status {
                        url,
                        status,
                        body: body.chars().take(200).collect(),
                    }
                }
            });
        }
    }

    fn lock_challenges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Challenge>> {
        self.challenges.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), String>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}
