//! CRI v1 API types, tonic servers and clients, generated from the vendored
//! `proto/runtime/v1/api.proto` (cri-api tag `kubernetes-1.36.3`).

#![allow(clippy::all, clippy::pedantic)]

/// The CRI `runtime.v1` package.
pub mod v1 {
    tonic::include_proto!("runtime.v1");

    impl std::fmt::Debug for AuthConfig {
        /// Never prints credentials: only which fields are set.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
            f.debug_struct("AuthConfig")
                .field("username", &set(&self.username))
                .field("password", &set(&self.password))
                .field("auth", &set(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &set(&self.identity_token))
                .field("registry_token", &set(&self.registry_token))
                .finish()
        }
    }
}

/// Largest gRPC message berth accepts or sends: the kubelet's own limit.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::v1::AuthConfig;

    #[test]
    fn auth_config_debug_redacts_secrets() {
        let a = AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            auth: "YWxpY2U6aHVudGVyMg==".into(),
            server_address: "registry.example".into(),
            identity_token: "idtok".into(),
            registry_token: "regtok".into(),
        };
        let s = format!("{a:?}");
        for secret in [
            "alice",
            "hunter2",
            "YWxpY2U6aHVudGVyMg==",
            "idtok",
            "regtok",
        ] {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
        assert!(s.contains("registry.example"));
    }
}
