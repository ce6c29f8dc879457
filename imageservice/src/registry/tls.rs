//! The HTTP client per TLS setting of hosts.toml (CA, client certificates,
//! skip_verify), and telling a plain-HTTP answer to a TLS handshake apart.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::hosts::RegistryHost;

use super::{Registry, RegistryError};

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct TlsKey {
    ca: Vec<PathBuf>,
    certs: Vec<(PathBuf, Option<PathBuf>)>,
    skip_verify: bool,
}

impl Registry {
    pub(super) fn client(&self, host: &RegistryHost) -> Result<reqwest::Client, RegistryError> {
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
}

/// Did a TLS handshake fail because the server answered in plain HTTP (its
/// first bytes are no TLS record)? containerd's test for falling back.
pub(super) fn speaks_plain_http(e: &(dyn std::error::Error + 'static)) -> bool {
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
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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
