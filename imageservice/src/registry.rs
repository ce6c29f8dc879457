//! A client for the OCI distribution API: manifests and blobs, with
//! anonymous, basic, bearer-token and OAuth2 refresh-token auth, per-host
//! TLS settings from hosts.toml, and tokens cached per host and scope.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use crate::hosts::RegistryHost;

/// Manifests larger than this are refused: they are held in memory.
const MAX_MANIFEST: usize = 4 << 20;

/// Who we are to a registry, from the CRI `AuthConfig`.
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
    /// From the CRI's AuthConfig; `auth` is base64("user:password").
    pub fn from_cri(a: &cri_api::v1::AuthConfig) -> Result<Credentials, RegistryError> {
        if !a.registry_token.is_empty() {
            return Ok(Credentials::RegistryToken(a.registry_token.clone()));
        }
        if !a.identity_token.is_empty() {
            return Ok(Credentials::IdentityToken {
                username: a.username.clone(),
                token: a.identity_token.clone(),
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
                username: a.username.clone(),
                password: a.password.clone(),
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
    #[error("{url}: no data for {}s (registry.pull_progress_timeout)", .timeout.as_secs())]
    Stalled { url: String, timeout: Duration },
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
    progress_timeout: Duration,
}

impl Registry {
    pub fn new(progress_timeout: Duration) -> Registry {
        Registry {
            clients: Mutex::default(),
            challenges: Mutex::default(),
            tokens: Mutex::default(),
            progress_timeout,
        }
    }

    pub fn progress_timeout(&self) -> Duration {
        self.progress_timeout
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
        let mut resp = self
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
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk(&mut resp, &url).await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST {
                return Err(RegistryError::TooLarge { url });
            }
        }
        Ok((content_type, body))
    }

    /// Starts a blob download; read it with [`Registry::chunk`].
    pub async fn blob(
        &self,
        host: &RegistryHost,
        ns: &str,
        repo: &str,
        digest: &str,
        creds: &Credentials,
    ) -> Result<Response, RegistryError> {
        self.get(host, ns, repo, &format!("blobs/{digest}"), "*/*", creds)
            .await
    }

    /// The next piece of a response body; an error when nothing arrives
    /// within the progress timeout.
    pub async fn chunk(
        &self,
        resp: &mut Response,
        url: &str,
    ) -> Result<Option<bytes::Bytes>, RegistryError> {
        match tokio::time::timeout(self.progress_timeout, resp.chunk()).await {
            Err(_) => Err(RegistryError::Stalled {
                url: url.to_string(),
                timeout: self.progress_timeout,
            }),
            Ok(r) => r.map_err(|e| RegistryError::Transport {
                url: url.to_string(),
                reason: error_chain(&e),
            }),
        }
    }

    async fn get(
        &self,
        host: &RegistryHost,
        ns: &str,
        repo: &str,
        what: &str,
        accept: &str,
        creds: &Credentials,
    ) -> Result<Response, RegistryError> {
        let client = self.client(host)?;
        let mut url = format!("{}/{repo}/{what}", host.base_url());
        // A mirror learns which registry we mean, as containerd tells it.
        if !host.is_upstream {
            url.push_str(&format!("?ns={ns}"));
        }
        let scope = format!("repository:{repo}:pull");
        let mut retried = false;
        loop {
            let mut req = client.get(&url).header(ACCEPT, accept);
            for (k, v) in &host.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(auth) = self.authorization(host, &scope, creds).await? {
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = tokio::time::timeout(self.progress_timeout, req.send())
                .await
                .map_err(|_| RegistryError::Stalled {
                    url: url.clone(),
                    timeout: self.progress_timeout,
                })?
                .map_err(|e| RegistryError::Transport {
                    url: url.clone(),
                    reason: error_chain(&e),
                })?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
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
                    let body = resp.text().await.unwrap_or_default();
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
                    .fetch_token(host, &realm, &service, scope, creds)
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
    ) -> Result<String, RegistryError> {
        let client = self.client(host)?;
        let err = |reason: String| RegistryError::Token {
            realm: realm.to_string(),
            reason,
        };
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
        let resp = req.send().await.map_err(|e| err(error_chain(&e)))?;
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
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let body: TokenResponse = resp.json().await.map_err(|e| err(e.to_string()))?;
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
    fn credentials_from_cri() {
        use cri_api::v1::AuthConfig;
        let c = |a: AuthConfig| Credentials::from_cri(&a);
        assert_eq!(c(AuthConfig::default()).unwrap(), Credentials::Anonymous);
        assert_eq!(
            c(AuthConfig {
                auth: "YWxpY2U6czNjcjN0".into(),
                ..Default::default()
            })
            .unwrap(),
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cr3t".into()
            }
        );
        assert!(
            c(AuthConfig {
                auth: "!!".into(),
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(
            c(AuthConfig {
                username: "u".into(),
                registry_token: "t".into(),
                ..Default::default()
            })
            .unwrap(),
            Credentials::RegistryToken("t".into())
        );
        assert!(matches!(
            c(AuthConfig {
                identity_token: "r".into(),
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
