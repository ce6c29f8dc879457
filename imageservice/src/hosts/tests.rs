//! hosts.toml resolution tests on scratch directories, including
//! containerd's documented examples.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

struct TempDir(PathBuf);
impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "berth-hosts-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, host_dir: &str, text: &str) -> PathBuf {
        let d = self.0.join(host_dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(HOSTS_FILE), text).unwrap();
        d
    }
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn urls(h: &[RegistryHost]) -> Vec<String> {
    h.iter().map(RegistryHost::base_url).collect()
}

const PULL_ONLY: Capabilities = Capabilities {
    pull: true,
    resolve: false,
    push: false,
    referrers: false,
};

#[test]
fn no_config_gives_default_upstream() {
    let t = TempDir::new();
    let h = hosts_for(t.path(), "quay.io").unwrap();
    assert_eq!(
        h,
        vec![RegistryHost {
            scheme: Scheme::Https,
            host: "quay.io".into(),
            path: "/v2".into(),
            capabilities: Capabilities::ALL,
            ca: vec![],
            client_certs: vec![],
            skip_verify: false,
            headers: vec![],
            is_upstream: true,
            loopback_default: false,
        }]
    );
    // Nonexistent config dir altogether.
    let h = hosts_for(&t.path().join("nope"), "example.com:5000").unwrap();
    assert_eq!(urls(&h), ["https://example.com:5000/v2"]);
    let h = hosts_for(t.path(), "docker.io").unwrap();
    assert_eq!(urls(&h), ["https://registry-1.docker.io/v2"]);
}

#[test]
fn loopback_defaults() {
    let t = TempDir::new();
    let one = |host: &str| hosts_for(t.path(), host).unwrap().remove(0);
    let h = one("localhost:5000");
    assert_eq!(h.base_url(), "http://localhost:5000/v2");
    assert!(h.skip_verify && h.tries_https_first());
    let h = one("127.0.0.254:5000");
    assert_eq!(h.scheme, Scheme::Http);
    assert!(h.tries_https_first());
    assert_eq!(one("[::1]:5000").base_url(), "http://[::1]:5000/v2");
    let h = one("localhost");
    assert_eq!((h.scheme, h.skip_verify), (Scheme::Https, true));
    assert_eq!(one("localhost:443").scheme, Scheme::Https);
    let h = one("localhost:80");
    assert_eq!(
        (h.scheme, h.skip_verify, h.tries_https_first()),
        (Scheme::Http, false, false)
    );
    assert_eq!(one("::1").scheme, Scheme::Https);
    let h = one("example.com:5000");
    assert_eq!((h.scheme, h.skip_verify), (Scheme::Https, false));

    assert_eq!(default_scheme_for("127.0.0.1:5000"), Scheme::Http);
    assert_eq!(default_scheme_for("localhost"), Scheme::Https);
    assert_eq!(default_scheme_for("10.0.0.1:5000"), Scheme::Https);
    assert!(
        is_localhost("[::1]")
            && is_localhost("::ffff:127.0.0.1")
            && !is_localhost("localhost.example")
    );
}

#[test]
fn default_dir_applies() {
    let t = TempDir::new();
    t.write(
        "_default",
        "[host.\"https://registry.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
    );
    let h = hosts_for(t.path(), "ghcr.io").unwrap();
    assert_eq!(
        urls(&h),
        ["https://registry.example.com/v2", "https://ghcr.io/v2"]
    );
    assert!(!h[0].is_upstream && h[1].is_upstream);
    assert!(h[0].capabilities.resolve && !h[0].capabilities.push);
    let h = hosts_for(t.path(), "docker.io").unwrap();
    assert_eq!(
        urls(&h),
        [
            "https://registry.example.com/v2",
            "https://registry-1.docker.io/v2"
        ]
    );
}

#[test]
fn host_dir_overrides_default() {
    let t = TempDir::new();
    t.write("_default", "[host.\"https://default-mirror\"]\n");
    t.write("ghcr.io", "[host.\"https://ghcr-mirror\"]\n");
    assert_eq!(
        urls(&hosts_for(t.path(), "ghcr.io").unwrap()),
        ["https://ghcr-mirror/v2", "https://ghcr.io/v2"]
    );
    // A host dir without hosts.toml still shadows _default (containerd).
    std::fs::create_dir_all(t.path().join("quay.io")).unwrap();
    assert_eq!(
        urls(&hosts_for(t.path(), "quay.io").unwrap()),
        ["https://quay.io/v2"]
    );
    // host:port and containerd's colon-free form, which wins.
    t.write("reg.example:5000", "[host.\"https://colon\"]\n");
    assert_eq!(
        hosts_for(t.path(), "reg.example:5000").unwrap()[0].host,
        "colon"
    );
    t.write("reg.example_5000_", "[host.\"https://underscore\"]\n");
    assert_eq!(
        hosts_for(t.path(), "reg.example:5000").unwrap()[0].host,
        "underscore"
    );
}

#[test]
fn docker_io_server_default() {
    let t = TempDir::new();
    // No `server`: upstream defaults even though the file exists, and the
    // defaulted upstream ignores top-level capabilities/override_path.
    t.write(
        "docker.io",
        "capabilities = [\"pull\"]\noverride_path = true\nskip_verify = true\n[host.\"mirror.gcr.io\"]\n",
    );
    let h = hosts_for(t.path(), "docker.io").unwrap();
    assert_eq!(
        urls(&h),
        [
            "https://mirror.gcr.io/v2",
            "https://registry-1.docker.io/v2"
        ]
    );
    assert_eq!(h[1].capabilities, Capabilities::ALL);
    assert!(h[1].skip_verify);
    // Explicit server keeps its own settings.
    t.write(
        "docker.io",
        "server = \"https://docker.io\"\ncapabilities = [\"pull\"]\n",
    );
    let h = hosts_for(t.path(), "docker.io").unwrap();
    assert_eq!(urls(&h), ["https://docker.io/v2"]);
    assert_eq!(h[0].capabilities, PULL_ONLY);
}

#[test]
fn mirror_order_preserved() {
    let t = TempDir::new();
    t.write(
        "example.com",
        r#"
server = "https://example.com"
[host."https://zeta.mirror"]
[host."https://alpha.mirror"]
  capabilities = ["pull"]
[host."https://mid.mirror"]
[host."https://alpha.mirror".header]
  x-a = "1"
"#,
    );
    let h = hosts_for(t.path(), "example.com").unwrap();
    assert_eq!(
        urls(&h),
        [
            "https://zeta.mirror/v2",
            "https://alpha.mirror/v2",
            "https://mid.mirror/v2",
            "https://example.com/v2"
        ]
    );
    assert_eq!(h[1].headers, [("x-a".to_string(), "1".to_string())]);
    assert_eq!(h[1].capabilities, PULL_ONLY);
}

#[test]
fn capabilities_parsing() {
    let t = TempDir::new();
    t.write(
        "example.com",
        r#"
[host."https://a"]
  capabilities = ["pull"]
[host."https://b"]
  capabilities = ["PULL", "Resolve"]
[host."https://c"]
  capabilities = []
"#,
    );
    let h = hosts_for(t.path(), "example.com").unwrap();
    assert_eq!(h[0].capabilities, PULL_ONLY);
    assert!(!h[0].capabilities.resolve);
    assert!(h[1].capabilities.pull && h[1].capabilities.resolve && !h[1].capabilities.push);
    assert_eq!(h[2].capabilities, Capabilities::ALL);

    let d = t.write(
        "bad.example",
        "\n[host.\"https://a\"]\n  capabilities = [\"pull\", \"fetch\"]\n",
    );
    let err = hosts_for(t.path(), "bad.example").unwrap_err().to_string();
    assert!(
        err.contains(&d.join(HOSTS_FILE).display().to_string()),
        "{err}"
    );
    assert!(err.contains(":3") && err.contains("fetch"), "{err}");
}

#[test]
fn relative_ca_and_client_paths() {
    let t = TempDir::new();
    let d = t.write(
        "example.com",
        r#"
ca = "upstream.crt"
[host."https://m1"]
  ca = ["a.pem", "/etc/certs/b.pem", "sub/c.pem"]
  client = [["client.cert", "client.key"], ["both.pem", ""]]
[host."https://m2"]
  client = "/abs/client.pem"
[host."https://m3"]
  client = ["one.pem", "two.pem"]
"#,
    );
    let h = hosts_for(t.path(), "example.com").unwrap();
    assert_eq!(
        h[0].ca,
        [
            d.join("a.pem"),
            "/etc/certs/b.pem".into(),
            d.join("sub/c.pem")
        ]
    );
    assert!(h[0].ca.iter().all(|p| p.is_absolute()));
    assert_eq!(
        h[0].client_certs,
        [
            (d.join("client.cert"), Some(d.join("client.key"))),
            (d.join("both.pem"), None)
        ]
    );
    assert_eq!(
        h[1].client_certs,
        [(PathBuf::from("/abs/client.pem"), None)]
    );
    assert_eq!(
        h[2].client_certs,
        [(d.join("one.pem"), None), (d.join("two.pem"), None)]
    );
    assert_eq!(h[3].ca, [d.join("upstream.crt")]);
    assert_eq!(h[3].base_url(), "https://example.com/v2");

    t.write("pair.example", "client = [[\"a\", \"b\", \"c\"]]\n");
    let err = hosts_for(t.path(), "pair.example").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn docker_cert_files_fallback() {
    let t = TempDir::new();
    let d = t.path().join("example.com");
    std::fs::create_dir_all(&d).unwrap();
    for f in [
        "ca.crt",
        "client.cert",
        "client.key",
        "other.cert",
        "README",
    ] {
        std::fs::write(d.join(f), "x").unwrap();
    }
    let h = hosts_for(t.path(), "example.com").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].ca, [d.join("ca.crt")]);
    assert_eq!(
        h[0].client_certs,
        [
            (d.join("client.cert"), Some(d.join("client.key"))),
            (d.join("other.cert"), None)
        ]
    );
    assert_eq!(h[0].base_url(), "https://example.com/v2");
}

#[test]
fn headers_single_and_list() {
    let t = TempDir::new();
    t.write(
        "example.com",
        r#"
[header]
  x-top = "t"
[host."https://m"]
  [host."https://m".header]
    x-zz = "single"
    x-custom = ["a", "b"]
"#,
    );
    let h = hosts_for(t.path(), "example.com").unwrap();
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        h[0].headers,
        [
            kv("x-zz", "single"),
            kv("x-custom", "a"),
            kv("x-custom", "b")
        ]
    );
    assert_eq!(h[1].headers, [kv("x-top", "t")]);

    t.write("bad.example", "[header]\nx = 1\n");
    let err = hosts_for(t.path(), "bad.example").unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("a string or an array of strings"),
        "{err}"
    );
}

#[test]
fn override_path_and_server_paths() {
    let t = TempDir::new();
    t.write(
        "example.com",
        r#"
server = "https://registry.example/some/path"
[host."https://noncompliant.mirror/v2/namespaceprefix"]
  override_path = true
[host."https://noprefix.mirror"]
  override_path = true
[host."https://bak.mirror/us/"]
[host."https://already.mirror/x/v2"]
[host."https://slash.mirror/"]
[host."https://dots.mirror/a/./b/../c//"]
"#,
    );
    let h = hosts_for(t.path(), "example.com").unwrap();
    assert_eq!(
        urls(&h),
        [
            "https://noncompliant.mirror/v2/namespaceprefix",
            "https://noprefix.mirror",
            "https://bak.mirror/us/v2",
            "https://already.mirror/x/v2",
            "https://slash.mirror/v2",
            "https://dots.mirror/a/c/v2",
            "https://registry.example/some/path/v2",
        ]
    );
    t.write(
        "o.example",
        "server = \"https://o.example/api\"\noverride_path = true\n",
    );
    assert_eq!(
        urls(&hosts_for(t.path(), "o.example").unwrap()),
        ["https://o.example/api"]
    );
}

#[test]
fn who_may_get_credentials_over_plain_http() {
    let t = TempDir::new();
    t.write(
        "example.com",
        r#"
server = "http://example.com:5000"
[host."http://ca.mirror:5000"]
  ca = "ca.pem"
[host."http://skip.mirror:5000"]
  skip_verify = true
[host."http://client.mirror:5000"]
  client = "c.pem"
[host."http://plain.mirror:5000"]
[host."http://port80.mirror:80"]
  skip_verify = true
[host."https://tls.mirror"]
"#,
    );
    let h = hosts_for(t.path(), "example.com").unwrap();
    let decide = |h: &RegistryHost| (h.tries_https_first(), h.plain_http_credentials());
    // TLS settings on an http:// host: HTTPS first, and no credentials
    // if it turns out to speak plain HTTP.
    assert_eq!(decide(&h[0]), (true, false), "{:?}", h[0]);
    assert_eq!(decide(&h[1]), (true, false), "{:?}", h[1]);
    assert_eq!(decide(&h[2]), (true, false), "{:?}", h[2]);
    // Plain HTTP, asked for in so many words.
    assert_eq!(decide(&h[3]), (false, true), "{:?}", h[3]);
    assert_eq!(decide(&h[4]), (false, true), "{:?}", h[4]);
    // HTTPS is HTTPS.
    assert_eq!(decide(&h[5]), (false, false), "{:?}", h[5]);
    // The top-level server without TLS settings.
    assert_eq!(decide(&h[6]), (false, true), "{:?}", h[6]);

    // A loopback registry without hosts.toml: HTTPS first (containerd's
    // default), credentials allowed over HTTP: they stay on the node.
    let lo = hosts_for(t.path(), "127.0.0.1:5000").unwrap().remove(0);
    assert!(lo.loopback_default);
    assert_eq!(decide(&lo), (true, true));
    // The same address written in hosts.toml with TLS settings is not
    // the default: no credentials over plain HTTP.
    t.write(
        "127.0.0.1:5000",
        "server = \"http://127.0.0.1:5000\"\nskip_verify = true\n",
    );
    let lo = hosts_for(t.path(), "127.0.0.1:5000").unwrap().remove(0);
    assert!(!lo.loopback_default);
    assert_eq!(decide(&lo), (true, false));
    // Loopback but HTTPS by default: nothing over plain HTTP to decide.
    let lo = hosts_for(t.path(), "localhost").unwrap().remove(0);
    assert!(!lo.loopback_default && !lo.plain_http_credentials());
}

#[test]
fn schemes() {
    let t = TempDir::new();
    t.write(
        "example.com",
        r#"
server = "registry.example:5000"
[host."mirror:5000"]
[host."http://192.168.31.250:5000"]
  skip_verify = true
[host."http://plain.mirror"]
[host."HTTPS://upper.mirror"]
[host."httpbin.local:5000"]
"#,
    );
    let h = hosts_for(t.path(), "example.com").unwrap();
    assert_eq!(
        urls(&h),
        [
            "https://mirror:5000/v2",
            "http://192.168.31.250:5000/v2",
            "http://plain.mirror/v2",
            "https://upper.mirror/v2",
            "https://httpbin.local:5000/v2",
            "https://registry.example:5000/v2",
        ]
    );
    assert!(h[1].skip_verify && h[1].tries_https_first());
    assert!(!h[2].tries_https_first());

    t.write("bad.example", "[host.\"ftp://x\"]\n");
    let err = hosts_for(t.path(), "bad.example").unwrap_err().to_string();
    assert!(
        err.contains(":1") && err.contains("unsupported scheme"),
        "{err}"
    );
}

#[test]
fn malformed_toml_names_file_and_line() {
    let t = TempDir::new();
    let d = t.write(
        "example.com",
        "server = \"https://example.com\"\n[host.\"https://m\"\n  capabilities = [\"pull\"]\n",
    );
    let err = hosts_for(t.path(), "example.com").unwrap_err();
    assert!(matches!(err, HostsError::Parse { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&d.join(HOSTS_FILE).display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("line 2"), "{msg}");

    t.write(
        "type.example",
        "server = \"https://x\"\n\nskip_verify = \"yes\"\n",
    );
    let msg = hosts_for(t.path(), "type.example").unwrap_err().to_string();
    assert!(
        msg.contains("type.example") && msg.contains("line 3"),
        "{msg}"
    );
}

#[test]
fn unknown_keys_ignored() {
    let t = TempDir::new();
    t.write(
        "example.com",
        "server = \"https://example.com\"\nproxy = \"http://p:8080\"\nfuture = 1\n[host.\"https://m\"]\n  dial_timeout = \"1s\"\n  server = \"ignored\"\n",
    );
    assert_eq!(
        urls(&hosts_for(t.path(), "example.com").unwrap()),
        ["https://m/v2", "https://example.com/v2"]
    );
}

#[test]
fn rejects_path_like_registry_hosts() {
    let t = TempDir::new();
    for bad in ["", "..", "a/b", "_default", "a b"] {
        assert!(
            matches!(hosts_for(t.path(), bad), Err(HostsError::InvalidHost(_))),
            "{bad:?}"
        );
    }
}

/// The mirror example and the detailed example from containerd's docs/hosts.md.
#[test]
fn containerd_docs_examples() {
    let t = TempDir::new();
    let d = t.write(
            "docker.io",
            r#"
server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest from this host
[host."https://docker-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"                 # Or absolute path /etc/containerd/certs.d/docker.io/docker-mirror.crt
"#,
        );
    let h = hosts_for(t.path(), "docker.io").unwrap();
    assert_eq!(
        urls(&h),
        [
            "https://public-mirror.example.com/v2",
            "https://docker-mirror.internal/v2",
            "https://registry-1.docker.io/v2"
        ]
    );
    assert_eq!(h[0].capabilities, PULL_ONLY);
    assert_eq!(h[1].ca, [d.join("docker-mirror.crt")]);
    assert!(h[1].capabilities.resolve && !h[1].capabilities.push);
    assert_eq!(h[2].capabilities, Capabilities::ALL);
    assert!(h[2].is_upstream);

    // containerd's TestParseHostFile input, expectations from that test.
    t.write(
        "test.registry",
        r#"
server = "https://test-default.registry"
ca = "/etc/path/default"
[header]
  x-custom-1 = "custom header"

[host."https://mirror.registry"]
  capabilities = ["pull"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  [host."https://mirror.registry".header]
    x-custom-2 = ["value1", "value2"]

[host."https://mirror-bak.registry/us"]
  capabilities = ["pull"]
  skip_verify = true

[host."http://mirror.registry"]
  capabilities = ["pull"]

[host."https://test-1.registry"]
  capabilities = ["pull", "resolve", "push", "referrers"]
  ca = ["/etc/certs/test-1-ca.pem", "/etc/certs/special.pem"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"],["/etc/certs/client.pem", ""]]

[host."https://test-2.registry"]
  client = "/etc/certs/client.pem"

[host."https://test-3.registry"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://no-referrers.registry"]
  capabilities = ["pull", "resolve", "push"]
  client = ["/etc/certs/client-1.pem", "/etc/certs/client-2.pem"]

[host."https://noncompliantmirror.registry/v2/namespaceprefix"]
  capabilities = ["pull"]
  override_path = true

[host."https://noprefixnoncompliant.registry"]
  override_path = true

[host."https://onlyheader.registry".header]
  x-custom-1 = "justaheader"

[host."https://dial-timeout.registry"]
  dial_timeout = "3s"
"#,
    );
    let h = hosts_for(t.path(), "test.registry").unwrap();
    let got: Vec<_> = h
        .iter()
        .map(|h| (h.scheme, h.host.as_str(), h.path.as_str()))
        .collect();
    use Scheme::*;
    assert_eq!(
        got,
        [
            (Https, "mirror.registry", "/v2"),
            (Https, "mirror-bak.registry", "/us/v2"),
            (Http, "mirror.registry", "/v2"),
            (Https, "test-1.registry", "/v2"),
            (Https, "test-2.registry", "/v2"),
            (Https, "test-3.registry", "/v2"),
            (Https, "no-referrers.registry", "/v2"),
            (Https, "noncompliantmirror.registry", "/v2/namespaceprefix"),
            (Https, "noprefixnoncompliant.registry", ""),
            (Https, "onlyheader.registry", "/v2"),
            (Https, "dial-timeout.registry", "/v2"),
            (Https, "test-default.registry", "/v2"),
        ]
    );
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        h[0].headers,
        [kv("x-custom-2", "value1"), kv("x-custom-2", "value2")]
    );
    assert_eq!(h[0].ca, [PathBuf::from("/etc/certs/mirror.pem")]);
    assert!(!h[0].skip_verify && h[1].skip_verify);
    assert_eq!(h[3].capabilities, Capabilities::ALL);
    assert_eq!(
        h[3].client_certs,
        [
            (
                "/etc/certs/client.cert".into(),
                Some("/etc/certs/client.key".into())
            ),
            ("/etc/certs/client.pem".into(), None)
        ]
    );
    assert_eq!(
        h[6].capabilities,
        Capabilities {
            referrers: false,
            ..Capabilities::ALL
        }
    );
    assert_eq!(h[9].headers, [kv("x-custom-1", "justaheader")]);
    assert_eq!(h[11].ca, [PathBuf::from("/etc/path/default")]);
    assert_eq!(h[11].headers, [kv("x-custom-1", "custom header")]);
    assert!(h[11].is_upstream && h[..11].iter().all(|h| !h.is_upstream));
}
