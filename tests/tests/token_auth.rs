//! Bearer-token auth as Docker Hub and most registries do it: the registry
//! (docker-registry with `auth: token`) answers 401 with a Bearer
//! challenge; berthd gets a JWT from the token endpoint, with the CRI
//! credentials it was given, and retries. The token server here is a small
//! HTTP responder in the test; the JWT is RS256, signed with openssl.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_tests::fixtures::{self, Compression};
use berth_tests::registry::{Registry, RegistryOptions, base64_encode};
use berth_tests::{Berthd, TempDir, openssl};
use cri_api::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const SERVICE: &str = "berth-test-registry";
const ISSUER: &str = "berth-test-issuer";
const REFRESH: &str = "refresh-me";

fn b64url(data: &[u8]) -> String {
    base64_encode(data)
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string()
}

/// A signing certificate (also the registry's root bundle) and a JWT
/// granting pull on `repo`, valid for an hour.
fn make_token(dir: &Path, repo: &str) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "sign.key",
            "-out",
            "sign.pem",
            "-days",
            "2",
            "-subj",
            "/CN=berth-token-signer",
        ],
    );
    let der = openssl(dir, &["x509", "-in", "sign.pem", "-outform", "DER"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [base64_encode(&der)]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "alice", "aud": SERVICE,
        "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": "berth-test",
        "access": [{"type": "repository", "name": repo, "actions": ["pull"]}],
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    std::fs::write(dir.join("input"), &input).expect("input");
    let sig = openssl(dir, &["dgst", "-sha256", "-sign", "sign.key", "input"]);
    format!("{input}.{}", b64url(&sig))
}

/// The token endpoint: GET with basic auth alice:s3cret, or POST with the
/// refresh token, get the JWT; anything else 401. Counts what it served.
async fn token_server(token: String) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let realm = format!("http://{}/token", listener.local_addr().expect("addr"));
    let (gets, posts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (g, p) = (gets.clone(), posts.clone());
    tokio::spawn(async move {
        let good_basic = format!("Basic {}", base64_encode(b"alice:s3cret"));
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then a body of Content-Length bytes.
            loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let req = String::from_utf8_lossy(&buf).into_owned();
            let ok = if req.starts_with("GET ") {
                g.fetch_add(1, Ordering::SeqCst);
                req.lines()
                    .any(|l| {
                        l.to_ascii_lowercase().starts_with("authorization:")
                            && l.contains(&good_basic)
                    })
                    .then(|| serde_json::json!({ "token": token }))
            } else {
                p.fetch_add(1, Ordering::SeqCst);
                (req.contains("grant_type=refresh_token")
                    && req.contains(&format!("refresh_token={REFRESH}")))
                .then(|| serde_json::json!({ "access_token": token, "expires_in": 3600 }))
            };
            let resp = match ok {
                Some(body) => {
                    let body = body.to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                None => {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                }
            };
            let _ = conn.write_all(resp.as_bytes()).await;
        }
    });
    (realm, gets, posts)
}

async fn pull(b: &Berthd, image: &str, auth: Option<AuthConfig>) -> Result<String, tonic::Status> {
    b.pull(image, auth).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_the_challenge_with_every_credential_form() {
    let keys = TempDir::new("token");
    let token = make_token(keys.path(), "private/app");
    let (realm, gets, posts) = token_server(token.clone()).await;

    let plain = Registry::start();
    let pushed = fixtures::push_busybox(&plain, "private/app", "1", Compression::Gzip).await;
    let secured = Registry::start_with(RegistryOptions {
        token_auth: Some((
            realm,
            SERVICE.into(),
            ISSUER.into(),
            keys.path().join("sign.pem"),
        )),
        storage: Some(plain.storage_root()),
        ..Default::default()
    });
    let name = secured.image("private/app:1");

    // Anonymous: the token endpoint refuses, so does the pull.
    let b = Berthd::start().await;
    let e = pull(&b, &name, None).await.expect_err("anonymous");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // username/password: a token fetched once, used for every request.
    let before = gets.load(Ordering::SeqCst);
    let basic = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let id = pull(&b, &name, Some(basic.clone()))
        .await
        .expect("basic -> token");
    assert_eq!(id, pushed.config_digest);
    assert_eq!(gets.load(Ordering::SeqCst) - before, 1, "token not cached");
    assert!(!b.log().contains(&token), "the token reached the log");
    drop(b);

    // identity_token: the OAuth2 refresh-token grant (a POST).
    let b = Berthd::start().await;
    let refresh = AuthConfig {
        identity_token: REFRESH.into(),
        ..Default::default()
    };
    pull(&b, &name, Some(refresh))
        .await
        .expect("identity token");
    assert_eq!(posts.load(Ordering::SeqCst), 1);
    drop(b);

    // registry_token: used as the bearer token directly.
    let b = Berthd::start().await;
    let (g, p) = (gets.load(Ordering::SeqCst), posts.load(Ordering::SeqCst));
    let direct = AuthConfig {
        registry_token: token.clone(),
        ..Default::default()
    };
    pull(&b, &name, Some(direct)).await.expect("registry token");
    assert_eq!(
        (gets.load(Ordering::SeqCst), posts.load(Ordering::SeqCst)),
        (g, p),
        "a registry_token needs no token endpoint"
    );
}
