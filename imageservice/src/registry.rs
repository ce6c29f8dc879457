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

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use crate::hosts::{RegistryHost, Scheme};

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

/// What a client gave to authenticate with (the CRI `AuthConfig`'s fields,
/// borrowed): empty means not given.
#[derive(Clone, Copy, Default)]
pub struct Auth<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// base64("user:password").
    pub auth: &'a str,
    pub identity_token: &'a str,
    pub registry_token: &'a str,
}

/// Who we are to a registry, from the client's [`Auth`].
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the token endpoint.
    IdentityToken {
        username: String,
        token: String,
    },
    /// A bearer token used as is.
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Anonymous => "Anonymous",
            Credentials::Basic { .. } => "Basic(<redacted>)",
            Credentials::IdentityToken { .. } => "IdentityToken(<redacted>)",
            Credentials::RegistryToken(_) => "RegistryToken(<redacted>)",
        })
    }
}

impl Credentials {
    /// A registry token first, then an identity token, then `auth`, then
    /// username and password; none of them: anonymous.
    pub fn from_auth(a: &Auth<'_>) -> Result<Credentials, RegistryError> {
        if !a.registry_token.is_empty() {
            return Ok(Credentials::RegistryToken(a.registry_token.to_string()));
        }
        if !a.identity_token.is_empty() {
            return Ok(Credentials::IdentityToken {
                username: a.username.to_string(),
                token: a.identity_token.to_string(),
            });
        }
        if !a.auth.is_empty() {
            let bad = || RegistryError::BadCredentials("auth is not base64 of \"user:password\"");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|_| bad())?;
            let s = String::from_utf8(raw).map_err(|_| bad())?;
            let (u, p) = s.split_once(':').ok_or_else(bad)?;
            return Ok(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        if !a.username.is_empty() || !a.password.is_empty() {
            return Ok(Credentials::Basic {
                username: a.username.to_string(),
                password: a.password.to_string(),
            });
        }
        Ok(Credentials::Anonymous)
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

#[derive(Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    ca: Vec<PathBuf>,
    certs: Vec<(PathBuf, Option<PathBuf>)>,
    skip_verify: bool,
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

    /// The Authorization header for a request, if the host wants one.
    async fn authorization(
        &self,
        host: &RegistryHost,
        scope: &str,
        creds: &Credentials,
        deadline: Instant,
    ) -> Result<Option<String>, RegistryError> {
        if let Credentials::RegistryToken(t) = creds {
            return Ok(Some(format!("Bearer {t}")));
        }
        let challenge = self.lock_challenges().get(&host.host).cloned();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(match creds {
                Credentials::Basic { username, password } => Some(basic(username, password)),
                _ => None,
            }),
            Some(Challenge::Bearer { realm, service }) => {
                let key = (host.host.clone(), scope.to_string(), cred_key(creds));
                if let Some(t) = self.lock_tokens().get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let token = self
                    .fetch_token(host, &realm, &service, scope, creds, deadline)
                    .await?;
                self.lock_tokens().insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    async fn fetch_token(
        &self,
        host: &RegistryHost,
        realm: &str,
        service: &str,
        scope: &str,
        creds: &Credentials,
        deadline: Instant,
    ) -> Result<String, RegistryError> {
        let client = self.client(host)?;
        let err = |reason: String| RegistryError::Token {
            realm: realm.to_string(),
            reason,
        };
        let deadline_err = || RegistryError::Deadline {
            url: realm.to_string(),
            timeout: self.limits.request_timeout,
        };
        // The realm is the registry's word: credentials go to a plain-HTTP
        // realm only for a host that may get them in clear itself.
        let plain_realm = realm
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"));
        if plain_realm && *creds != Credentials::Anonymous {
            if !host.plain_http_credentials() {
                return Err(RegistryError::PlainHttpCredentials {
                    host: host.host.clone(),
                    url: realm.to_string(),
                });
            }
            self.warn_plain_http(host, realm);
        }
        let req = match creds {
            // OAuth2 refresh-token grant, as Docker and containerd send it.
            Credentials::IdentityToken { token, .. } => client.post(realm).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("service", service),
                ("scope", scope),
                ("client_id", "berth"),
            ]),
            _ => {
                let mut req = client
                    .get(realm)
                    .query(&[("service", service), ("scope", scope)]);
                if let Credentials::Basic { username, password } = creds {
                    req = req.header(AUTHORIZATION, basic(username, password));
                }
                req
            }
        };
        let mut resp = tokio::time::timeout_at(deadline, req.send())
            .await
            .map_err(|_| deadline_err())?
            .map_err(|e| err(error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    RegistryError::Denied {
                        url: realm.to_string(),
                        status,
                        hint: "",
                    }
                } else {
                    err(format!("answered {status}"))
                },
            );
        }
        let body = read_body(&mut resp, MAX_TOKEN_RESPONSE, deadline)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    err(format!("answer larger than {MAX_TOKEN_RESPONSE} bytes"))
                }
                BodyError::Deadline => deadline_err(),
                BodyError::Transport(reason) => err(reason),
            })?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let body: TokenResponse = serde_json::from_slice(&body).map_err(|e| err(e.to_string()))?;
        let token = if body.access_token.is_empty() {
            body.token
        } else {
            body.access_token
        };
        if token.is_empty() {
            return Err(err("answered without a token".into()));
        }
        Ok(token)
    }

    fn client(&self, host: &RegistryHost) -> Result<reqwest::Client, RegistryError> {
        let key = TlsKey {
            ca: host.ca.clone(),
            certs: host.client_certs.clone(),
            skip_verify: host.skip_verify,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let tls_err = |reason: String| RegistryError::Tls {
            host: host.host.clone(),
            reason,
        };
        let tls = tls_config(&key).map_err(tls_err)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| tls_err(e.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn lock_challenges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Challenge>> {
        self.challenges.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), String>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A blob's body as it downloads, under the minimum-rate rule.
pub struct BlobBody {
    resp: Response,
    url: String,
    rate: RateWindow,
    min_rate: u64,
}

impl BlobBody {
    /// Where the body comes from (after redirects).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next piece of the body, `None` at its end; an error as soon as
    /// a whole window has passed in which the body averaged less than the
    /// minimum rate (checked at least every [`RateWindow::tick`]).
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        loop {
            if let Err(got) = self.rate.check(Instant::now()) {
                return Err(RegistryError::TooSlow {
                    url: self.url.clone(),
                    got,
                    window: self.rate.window(),
                    min_rate: self.min_rate,
                });
            }
            match tokio::time::timeout(self.rate.tick(), self.resp.chunk()).await {
                Err(_) => continue,
                Ok(Ok(Some(b))) => {
                    self.rate.record(Instant::now(), b.len() as u64);
                    return Ok(Some(b));
                }
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => {
                    return Err(RegistryError::Transport {
                        url: self.url.clone(),
                        reason: error_chain(&e),
                    });
                }
            }
        }
    }
}

/// The minimum-rate rule for blob downloads: once the first `window` has
/// passed, every `window` that ends while the download runs must have
/// brought at least `min_rate * window` bytes (at least one). Bytes are
/// counted in slots of `window / 16`, so a slot that overlaps the window's
/// start counts whole: the rule errs towards a slow link, by at most one
/// slot's bytes. A trickle cannot beat it: it is cancelled about one
/// window after it starts, however it spaces its bytes; a link that stalls
/// for a while and then catches up is not.
#[derive(Debug)]
pub struct RateWindow {
    window: Duration,
    need: u64,
    start: Instant,
    slot: Duration,
    /// (slot start, bytes received in it), oldest first.
    slots: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    const SLOTS: u32 = 16;

    pub fn new(window: Duration, min_rate: u64, now: Instant) -> RateWindow {
        // Config refuses a zero window; a tiny one still must not spin.
        let window = window.max(Duration::from_millis(160));
        let need =
            (u128::from(min_rate) * window.as_millis() / 1000).clamp(1, u128::from(u64::MAX));
        RateWindow {
            window,
            need: need as u64,
            start: now,
            slot: window / Self::SLOTS,
            slots: VecDeque::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// How often the rule is checked while nothing arrives.
    pub fn tick(&self) -> Duration {
        self.slot
    }

    /// `n` bytes arrived at `now`.
    pub fn record(&mut self, now: Instant, n: u64) {
        match self.slots.back_mut() {
            Some((t, b)) if now < *t + self.slot => *b += n,
            _ => self.slots.push_back((now, n)),
        }
        while let Some(&(t, _)) = self.slots.front()
            && t + self.slot + self.window <= now
        {
            self.slots.pop_front();
        }
    }

    /// Bytes that arrived in the window ending at `now` (whole slots).
    fn in_window(&self, now: Instant) -> u64 {
        self.slots
            .iter()
            .filter(|(t, _)| *t + self.slot + self.window > now)
            .map(|(_, b)| b)
            .sum()
    }

    /// `Err(bytes in the last window)` when that is too few.
    pub fn check(&self, now: Instant) -> Result<(), u64> {
        if now < self.start + self.window {
            return Ok(());
        }
        let got = self.in_window(now);
        if got < self.need { Err(got) } else { Ok(()) }
    }
}

enum BodyError {
    TooLarge,
    Deadline,
    Transport(String),
}

/// A small body read whole: at most `max` bytes, by `deadline`.
async fn read_body(
    resp: &mut Response,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => return Err(BodyError::Deadline),
            Ok(Err(e)) => return Err(BodyError::Transport(error_chain(&e))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => {
                if body.len() + c.len() > max {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&c);
            }
        }
    }
}

/// The start of an error body, for the message: at most
/// [`MAX_ERROR_BODY`] bytes, whatever arrived by `deadline`.
async fn read_error_body(resp: &mut Response, deadline: Instant) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => {
                body.extend_from_slice(&c[..c.len().min(MAX_ERROR_BODY - body.len())])
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Did a TLS handshake fail because the server answered in plain HTTP (its
/// first bytes are no TLS record)? containerd's test for falling back.
fn speaks_plain_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return matches!(
                r,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            );
        }
        // io::Error's source() skips the error it wraps.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && speaks_plain_http(inner)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An error and its causes: reqwest's own message hides why a request
/// failed ("connection refused", "invalid certificate").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Tokens are cached per identity: one user's token never serves another.
fn cred_key(c: &Credentials) -> String {
    use sha2::Digest as _;
    let id = match c {
        Credentials::Anonymous => String::new(),
        Credentials::Basic { username, password } => format!("b:{username}:{password}"),
        Credentials::IdentityToken { token, .. } => format!("i:{token}"),
        Credentials::RegistryToken(t) => format!("r:{t}"),
    };
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm=...`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut map = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        map.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: map.remove("realm")?,
            service: map.remove("service").unwrap_or_default(),
        }),
        _ => None,
    }
}

fn native_roots() -> &'static Vec<rustls_pki_types::CertificateDer<'static>> {
    static ROOTS: OnceLock<Vec<rustls_pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

fn tls_config(key: &TlsKey) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if key.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(native_roots().iter().cloned());
        for ca in &key.ca {
            let certs: Vec<_> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("ca {}: {e}", ca.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ca {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("ca {}: no certificate in it", ca.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("ca {}: {e}", ca.display()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match key.certs.first() {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key_file)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("client cert {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client cert {}: {e}", cert.display()))?;
            let key_path = key_file.as_ref().unwrap_or(cert);
            let pk = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| format!("client key {}: {e}", key_path.display()))?;
            builder
                .with_client_auth_cert(chain, pk)
                .map_err(|e| e.to_string())
        }
    }
}

/// `skip_verify = true` in hosts.toml: accept any server certificate.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes_at(second)` bytes each second for `secs` seconds,
    /// checking the rule every second; the second it fails, if it does.
    fn run_rate(
        window: u64,
        min_rate: u64,
        secs: u64,
        bytes_at: impl Fn(u64) -> u64,
    ) -> (Option<u64>, usize) {
        let t0 = Instant::now();
        let mut r = RateWindow::new(Duration::from_secs(window), min_rate, t0);
        let mut most_slots = 0;
        for s in 0..secs {
            let now = t0 + Duration::from_secs(s);
            let n = bytes_at(s);
            if n > 0 {
                r.record(now, n);
            }
            most_slots = most_slots.max(r.slots.len());
            if r.check(now).is_err() {
                return (Some(s), most_slots);
            }
        }
        (None, most_slots)
    }

    #[test]
    fn a_trickle_is_cancelled_within_about_one_window() {
        // One byte a minute (and one every four minutes) against 1 KiB/s
        // over 5 minutes: cancelled when the first window closes.
        let per_minute = |s: u64| u64::from(s.is_multiple_of(60));
        assert_eq!(run_rate(300, 1024, 3600, per_minute).0, Some(300));
        let per_four = |s: u64| u64::from(s.is_multiple_of(240));
        assert_eq!(run_rate(300, 1024, 3600, per_four).0, Some(300));
        // Bursts that beat any per-chunk timeout but average 100 B/s.
        let bursts = |s: u64| if s.is_multiple_of(10) { 1000 } else { 0 };
        assert_eq!(run_rate(300, 1024, 3600, bursts).0, Some(300));
        // A link that turns to a trickle later is cancelled about one
        // window after it slowed down.
        let fades = |s: u64| if s < 1000 { 100_000 } else { 1 };
        let (at, _) = run_rate(300, 1024, 3600, fades);
        let at = at.expect("cancelled");
        assert!((1000..=1000 + 300 + 300 / 16 + 1).contains(&at), "{at}");
        // Nothing at all: one window.
        assert_eq!(run_rate(60, 0, 600, |_| 0).0, Some(60));
    }

    #[test]
    fn a_slow_but_real_link_is_not_cancelled() {
        // Just above the rate, for an hour.
        assert_eq!(run_rate(300, 1024, 3600, |_| 1100).0, None);
        // 4 KiB/s with a 200 s stall every 10 minutes: every window still
        // averages more than 1 KiB/s.
        let stalls = |s: u64| if s % 600 < 200 { 0 } else { 4096 };
        assert_eq!(run_rate(300, 1024, 3600, stalls).0, None);
        // With rate 0, one byte per window is enough.
        assert_eq!(
            run_rate(60, 0, 3600, |s| u64::from(s.is_multiple_of(59))).0,
            None
        );
    }

    #[test]
    fn the_rate_window_holds_a_bounded_number_of_slots() {
        // Every second for an hour: at most one window of slots (16) and
        // the one that overlaps its start.
        let (_, most) = run_rate(300, 1, 3600, |_| 1 << 20);
        assert!(most <= RateWindow::SLOTS as usize + 2, "{most}");
        // A zero window does not spin: it is raised to a usable tick.
        let r = RateWindow::new(Duration::ZERO, 1, Instant::now());
        assert!(r.tick() >= Duration::from_millis(10));
    }

    #[test]
    fn challenges() {
        match parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        ) {
            Some(Challenge::Bearer { realm, service }) => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(service, "registry.example");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        ));
        assert!(parse_challenge("Negotiate").is_none());
        assert!(
            parse_challenge("Bearer service=x").is_none(),
            "realm is required"
        );
    }

    #[test]
    fn credentials_from_auth() {
        let c = |a: Auth<'_>| Credentials::from_auth(&a);
        assert_eq!(c(Auth::default()).unwrap(), Credentials::Anonymous);
        assert_eq!(
            c(Auth {
                auth: "YWxpY2U6czNjcjN0",
                ..Default::default()
            })
            .unwrap(),
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cr3t".into()
            }
        );
        assert!(
            c(Auth {
                auth: "!!",
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(
            c(Auth {
                username: "u",
                registry_token: "t",
                ..Default::default()
            })
            .unwrap(),
            Credentials::RegistryToken("t".into())
        );
        assert!(matches!(
            c(Auth {
                identity_token: "r",
                ..Default::default()
            })
            .unwrap(),
            Credentials::IdentityToken { .. }
        ));
        let dbg = format!(
            "{:?}",
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cr3t".into()
            }
        );
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("alice"));
    }
}
