//! A real OCI registry on loopback for the integration tests: Debian's
//! `docker-registry` (the CNCF distribution registry 2.8) with filesystem
//! storage in a private temp dir, started on a free port of 127.0.0.1 and
//! killed (and its dir removed) on drop.
//!
//! The registry's access log (one Apache "combined" line per request, written
//! to its stdout whatever the log level) goes to `access.log` in that dir and
//! its own log (level warn, stderr) to `registry.log`; [`Registry::requests`]
//! and [`Registry::request_count`] read the former.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The registry binary: `$BERTH_TEST_REGISTRY_BIN`, else Debian's.
pub fn registry_binary() -> PathBuf {
    std::env::var_os("BERTH_TEST_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

/// How to start a [`Registry`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// `compatibility: schema1: enabled: true`: lets the registry store and
    /// serve signed schema 1 manifests (it refuses them otherwise, with a 500
    /// "manifest schema v1 unsupported"). Beware: with it on, a GET of a
    /// schema 2 manifest whose Accept header lists no schema 2 type is
    /// answered with a schema 1 conversion signed by the registry.
    pub schema1: bool,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Token auth: `(realm, service, issuer, root cert bundle)`; the
    /// registry answers with a Bearer challenge and accepts JWTs signed by
    /// a key whose certificate chains to the bundle.
    pub token_auth: Option<(String, String, String, PathBuf)>,
    /// Use this storage root (another registry's `storage_root()`) instead
    /// of a private one: the same images, served a second way.
    pub storage: Option<PathBuf>,
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    /// The request URI as sent: path and query, e.g. `/v2/foo/blobs/sha256:…`.
    pub uri: String,
    pub status: u16,
}

/// A running `docker-registry serve`.
pub struct Registry {
    child: Option<Child>,
    dir: crate::TempDir,
    port: u16,
    auth: Option<(String, String)>,
    sync_seq: AtomicU32,
    tls: bool,
    storage: Option<PathBuf>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl Registry {
    /// An anonymous registry (anyone may push and pull).
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    /// A registry that answers 401 to any request without these credentials.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(RegistryOptions {
            basic_auth: Some((user.to_string(), password.to_string())),
            ..RegistryOptions::default()
        })
    }

    pub fn start_with(options: RegistryOptions) -> Registry {
        let dir = crate::TempDir::new("registry");
        std::fs::create_dir_all(dir.path().join("storage")).expect("create registry dir");

        let mut auth_yaml = String::new();
        if let Some((user, password)) = &options.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .stderr(Stdio::inherit())
                .output()
                .expect("run htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed: {:?}", out.status);
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: berth-test-registry\n    path: {}\n",
                htpasswd.display()
            );
        }
        if let Some((realm, service, issuer, bundle)) = &options.token_auth {
            auth_yaml = format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let compat_yaml = if options.schema1 {
            "compatibility:\n  schema1:\n    enabled: true\n"
        } else {
            ""
        };

        let mut registry = Registry {
            child: None,
            dir,
            port: 0,
            auth: options.basic_auth,
            sync_seq: AtomicU32::new(0),
            tls: options.tls.is_some(),
            storage: options.storage,
        };
        let tls_yaml = match &options.tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        // The port is picked by binding :0 and freed before the registry
        // binds it, so another process may take it meanwhile: retry then.
        for attempt in 0.. {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("pick a free port")
                .port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-registry-secret\n\
                 {tls_yaml}{auth_yaml}{compat_yaml}",
                root = registry.storage_root().display(),
            );
            let config_path = registry.dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let access_log = std::fs::File::create(registry.access_log_path()).expect("access.log");
            let log = std::fs::File::create(registry.log_path()).expect("registry.log");
            let child = Command::new(registry_binary())
                .arg("serve")
                .arg(&config_path)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(access_log)
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", registry_binary().display()));
            registry.child = Some(child);
            registry.port = port;
            match registry.wait_ready() {
                Ok(()) => return registry,
                Err(why) => {
                    registry.stop();
                    let log = registry.log();
                    if attempt < 3 && log.contains("address already in use") {
                        continue;
                    }
                    panic!("registry on port {port} did not start: {why}\n--- log ---\n{log}");
                }
            }
        }
        unreachable!()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("it exited: {status}"));
            }
            match self.raw_get("/v2/") {
                Ok(200 | 401) => return Ok(()),
                // A TLS port answers a plain-HTTP probe with 400: it is up.
                Ok(400) if self.tls => return Ok(()),
                Ok(status) => return Err(format!("GET /v2/ answered {status}")),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    return Err(format!(
                        "GET /v2/ still failing after {READY_TIMEOUT:?}: {e}"
                    ));
                }
            }
        }
    }

    /// A bare HTTP/1.0 GET on a fresh connection (with the credentials if
    /// any); returns the status code.
    fn raw_get(&self, path: &str) -> std::io::Result<u16> {
        raw_get(self.port, self.credentials(), path)
    }

    /// `127.0.0.1:PORT`: the registry host as it appears in image references.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry server's process, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// The basic-auth credentials the registry requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `"<repo>"` prefixed with [`Registry::addr`]: `127.0.0.1:PORT/<repo>`.
    pub fn image(&self, repo_and_ref: &str) -> String {
        format!("{}/{repo_and_ref}", self.addr())
    }

    /// The registry's private dir (config, htpasswd, logs, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The filesystem driver's root directory.
    pub fn storage_root(&self) -> PathBuf {
        self.storage
            .clone()
            .unwrap_or_else(|| self.dir.path().join("storage"))
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256: digest");
        assert!(hex.len() == 64, "bad digest {digest}");
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flip bits in the middle of stored blob `digest`, keeping its size, so
    /// that the registry serves bytes that do not match the digest (same
    /// Content-Length, same Docker-Content-Digest header).
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_data_path(digest);
        let mut data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()));
        assert!(!data.is_empty(), "blob {digest} is empty");
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Replace the stored bytes of blob `digest` by `data` (any size).
    pub fn replace_blob(&self, digest: &str, data: &[u8]) {
        let path = self.blob_data_path(digest);
        assert!(
            path.is_file(),
            "blob {digest} is not stored at {}",
            path.display()
        );
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's own log (warnings and errors) then its access log.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let access = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
        format!("{log}--- access log ---\n{access}")
    }

    /// Every request the registry has answered so far, in order of
    /// completion.
    ///
    /// The registry writes a request's line when its handler returns, which
    /// can be a hair after a client has read the last byte of a large body;
    /// so this first sends a marker request of its own and waits until that
    /// one is logged. Requests still in flight are not counted.
    pub fn requests(&self) -> Vec<AccessLogEntry> {
        if self.child.is_some() {
            std::thread::sleep(Duration::from_millis(20));
            let n = self.sync_seq.fetch_add(1, Ordering::Relaxed);
            let marker = format!("/v2/?berth-log-sync={n}");
            if self.raw_get(&marker).is_ok() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline
                    && !std::fs::read_to_string(self.access_log_path())
                        .unwrap_or_default()
                        .contains(&format!("{marker} "))
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        std::fs::read_to_string(self.access_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(parse_access_line)
            .filter(|e| !e.uri.starts_with("/v2/?berth-log-sync="))
            .collect()
    }

    /// How many requests (any method, any status) had a URI containing
    /// `path_substring`, e.g. `"/blobs/sha256:<hex>"`.
    pub fn request_count(&self, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|e| e.uri.contains(path_substring))
            .count()
    }

    /// Like [`Registry::request_count`], for one method (`"GET"`, `"HEAD"`…).
    pub fn request_count_method(&self, method: &str, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|e| e.method == method && e.uri.contains(path_substring))
            .count()
    }

    /// Kill the registry (SIGTERM, then SIGKILL after 5 s). Its dir, logs
    /// and storage stay until drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A bare HTTP/1.0 GET of `path` on 127.0.0.1:`port`; returns the status.
fn raw_get(port: u16, auth: Option<(&str, &str)>, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some((user, password)) = auth {
        request.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64_encode(format!("{user}:{password}").as_bytes())
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {text:?}")))
}

/// Parse one Apache combined-format line:
/// `127.0.0.1 - user [date] "GET /v2/x HTTP/1.1" 200 123 "referer" "agent"`.
fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let uri = parts.next()?.to_string();
    let status = rest.split(' ').next()?.parse().ok()?;
    Some(AccessLogEntry {
        method,
        uri,
        status,
    })
}

/// Standard base64 with padding (for a Basic Authorization header).
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
    }

    #[test]
    fn parses_combined_log_lines() {
        let line = r#"127.0.0.1 - - [23/Nov/2026:10:20:44 +0000] "GET /v2/foo/blobs/sha256:aaaa HTTP/1.1" 400 110 "" "curl/7.88.1""#;
        assert_eq!(
            parse_access_line(line),
            Some(AccessLogEntry {
                method: "GET".into(),
                uri: "/v2/foo/blobs/sha256:aaaa".into(),
                status: 400
            })
        );
        assert_eq!(
            parse_access_line("time=\"x\" level=warning msg=\"y\""),
            None
        );
    }

    #[test]
    fn starts_answers_and_logs_requests() {
        let mut registry = Registry::start();
        assert_eq!(registry.raw_get("/v2/").expect("GET /v2/"), 200);
        assert_eq!(
            registry.raw_get("/v2/nope/manifests/latest").expect("GET"),
            404
        );
        let requests = registry.requests();
        assert!(
            requests.contains(&AccessLogEntry {
                method: "GET".into(),
                uri: "/v2/nope/manifests/latest".into(),
                status: 404
            }),
            "{requests:?}"
        );
        assert_eq!(registry.request_count("/v2/nope/"), 1);
        let dir = registry.dir().to_path_buf();
        registry.stop();
        assert!(
            registry.raw_get("/v2/").is_err(),
            "still answering after stop"
        );
        assert!(dir.is_dir(), "dir removed by stop");
        drop(registry);
        assert!(!dir.exists(), "dir not removed on drop");
    }

    #[test]
    fn basic_auth_registry_answers_401_without_credentials() {
        let registry = Registry::start_with_basic_auth("alice", "s3cret");
        assert_eq!(registry.credentials(), Some(("alice", "s3cret")));
        // raw_get sends the credentials.
        assert_eq!(registry.raw_get("/v2/").expect("GET /v2/"), 200);
        let port = registry.port();
        assert_eq!(raw_get(port, None, "/v2/").expect("GET /v2/"), 401);
        assert_eq!(
            raw_get(port, Some(("alice", "nope")), "/v2/").expect("GET /v2/"),
            401
        );
    }
}
