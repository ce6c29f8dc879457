//! Who we are to a registry: the client's credentials, the 401 challenge
//! (Basic or Bearer), and bearer tokens fetched and cached per host, scope
//! and identity.

use std::collections::HashMap;

use tokio::time::Instant;

use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;

use crate::hosts::RegistryHost;

use super::body::{BodyError, read_body};
use super::tls::error_chain;
use super::{Challenge, MAX_TOKEN_RESPONSE, Registry, RegistryError};

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

impl Registry {
    /// The Authorization header for a request, if the host wants one.
    pub(super) async fn authorization(
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
}

pub(super) fn basic(user: &str, pass: &str) -> String {
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
