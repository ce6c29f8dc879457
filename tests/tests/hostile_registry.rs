//! Registries as an attacker would run them, against a real berthd: a token
//! endpoint that trickles its JSON, an error body without end, a blob
//! trickled a byte at a time while another pull wants the same blob from a
//! real registry, and an `http://` host with TLS settings that asks for
//! credentials in clear. Each "registry" here is a small HTTP/1.1 server
//! written on a tokio `TcpListener` on 127.0.0.1; the honest one is the real
//! `docker-registry` of [`berth_tests::registry`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::fixtures::{self, Compression};
use berth_tests::registry::{Registry, RegistryOptions};
use berth_tests::{Berthd, Options, TempDir};
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = ImageServiceClient<Channel>;

/// How long any one pull here may take before the test calls it stuck: a
/// liveness bound, far above the limits the berthds below are given.
const STUCK: Duration = Duration::from_secs(60);

async fn pull(c: &mut Client, image: &str, auth: Option<AuthConfig>) -> Result<String, Status> {
    let req = PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        auth,
        ..Default::default()
    };
    match tokio::time::timeout(STUCK, c.pull_image(req)).await {
        Ok(r) => r.map(|r| r.into_inner().image_ref),
        Err(_) => panic!("pulling {image} did not end within {STUCK:?}"),
    }
}

async fn listed(c: &mut Client) -> Vec<Image> {
    c.list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

fn basic_auth() -> Option<AuthConfig> {
    Some(AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    })
}

/// Files left in the image store's download area.
fn ingest_leftovers(b: &Berthd) -> Vec<String> {
    std::fs::read_dir(b.root.join("images/ingest"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Points `name` (a registry host that does not resolve) at `server` in
/// berthd's hosts.toml directory, with `extra` lines.
fn hosts_toml(b: &Berthd, name: &str, server: &str, extra: &str) {
    let dir = b.dir.path().join("certs.d").join(name);
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"{server}\"\n{extra}"),
    )
    .expect("hosts.toml");
}

/// One request as the fake registry saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// A TLS ClientHello instead of HTTP.
    tls: bool,
    path: String,
    authorization: bool,
}

/// What the fake registry answers.
enum Reply {
    Full {
        status: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Headers (with this Content-Length), then the body one byte per
    /// `every`.
    Trickle {
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        every: Duration,
    },
    /// A 500 whose body never ends: `chunk` bytes every `every`.
    EndlessError { chunk: usize, every: Duration },
    /// `then`, once the file `gate` exists.
    Gated { gate: PathBuf, then: Box<Reply> },
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A fake registry on 127.0.0.1: one request per connection. A TLS
/// ClientHello is answered the way Go's HTTP server answers one (with a
/// plain-HTTP 400), so a client can tell it speaks plain HTTP.
struct Fake {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(handler: Handler) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, handler, log).await;
                });
            }
        });
        Fake { port, seen }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn serve(
    mut conn: TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head[0] == 0x16 {
            log.lock().expect("lock").push(Seen {
                tls: true,
                path: String::new(),
                authorization: false,
            });
            conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            )
            .await?;
            return Ok(());
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > 64 << 10 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_string();
    let authorization = text
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("authorization:"));
    let seen = Seen {
        tls: false,
        path,
        authorization,
    };
    log.lock().expect("lock").push(seen.clone());
    let head = |status: &str, headers: &[(&str, String)], len: Option<u64>| {
        let mut h = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(n) = len {
            h.push_str(&format!("Content-Length: {n}\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    let mut reply = handler(&seen);
    while let Reply::Gated { gate, then } = reply {
        while !gate.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reply = *then;
    }
    match reply {
        Reply::Gated { .. } => unreachable!("opened above"),
        Reply::Full {
            status,
            headers,
            body,
        } => {
            conn.write_all(head(status, &headers, Some(body.len() as u64)).as_bytes())
                .await?;
            conn.write_all(&body).await?;
        }
        Reply::Trickle {
            headers,
            body,
            every,
        } => {
            conn.write_all(head("200 OK", &headers, Some(body.len() as u64)).as_bytes())
                .await?;
            for b in body {
                conn.write_all(&[b]).await?;
                tokio::time::sleep(every).await;
            }
        }
        Reply::EndlessError { chunk, every } => {
            // No length: the body ends when the connection does, i.e. never.
            conn.write_all(head("500 Internal Server Error", &[], None).as_bytes())
                .await?;
            let chunk = vec![b'x'; chunk];
            loop {
                conn.write_all(&chunk).await?;
                tokio::time::sleep(every).await;
            }
        }
    }
    conn.shutdown().await
}

/// A fake registry serving `pushed` (pushed to `reg`) as `test/app:1`:
/// its manifest and config whole, its layer as `layer` answers given the
/// layer's bytes; `reached` gets a message each time the layer is asked
/// for.
async fn serving(
    reg: &Registry,
    pushed: &fixtures::Pushed,
    reached: std::sync::mpsc::Sender<()>,
    layer: impl Fn(Vec<u8>) -> Reply + Send + Sync + 'static,
) -> Fake {
    let read = |d: &str| std::fs::read(reg.blob_data_path(d)).expect("blob from the registry");
    let manifest = read(&pushed.manifest_digest);
    let config = read(&pushed.config_digest);
    let layer_digest = pushed.layers[0].digest.clone();
    let layer_bytes = read(&layer_digest);
    let media_type = pushed.manifest_media_type.clone();
    let config_digest = pushed.config_digest.clone();
    let reached = Mutex::new(reached);
    Fake::start(Arc::new(move |r: &Seen| {
        if r.path == "/v2/test/app/manifests/1" {
            Reply::Full {
                status: "200 OK",
                headers: vec![("Content-Type", media_type.clone())],
                body: manifest.clone(),
            }
        } else if r.path == format!("/v2/test/app/blobs/{config_digest}") {
            Reply::Full {
                status: "200 OK",
                headers: vec![],
                body: config.clone(),
            }
        } else if r.path == format!("/v2/test/app/blobs/{layer_digest}") {
            let _ = reached.lock().expect("lock").send(());
            layer(layer_bytes.clone())
        } else {
            not_found()
        }
    }))
    .await
}

fn not_found() -> Reply {
    Reply::Full {
        status: "404 Not Found",
        headers: vec![],
        body: b"{\"errors\":[{\"code\":\"NOT_FOUND\"}]}".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_token_is_cut_off_by_the_request_timeout() {
    let port = Arc::new(Mutex::new(0u16));
    let realm_port = port.clone();
    let fake = Fake::start(Arc::new(move |r: &Seen| {
        if r.path.starts_with("/token") {
            // Headers at once, then the JSON a byte a second.
            let mut body = b"{\"token\":\"".to_vec();
            body.resize(10_000, b'a');
            return Reply::Trickle {
                headers: vec![("Content-Type", "application/json".into())],
                body,
                every: Duration::from_secs(1),
            };
        }
        if r.authorization {
            return not_found();
        }
        let realm = format!(
            "http://127.0.0.1:{}/token",
            realm_port.lock().expect("lock")
        );
        Reply::Full {
            status: "401 Unauthorized",
            headers: vec![(
                "WWW-Authenticate",
                format!("Bearer realm=\"{realm}\",service=\"hostile\""),
            )],
            body: vec![],
        }
    }))
    .await;
    *port.lock().expect("lock") = fake.port;
    let b = Berthd::start_with(Options {
        registry: "request_timeout = \"3s\"".into(),
        ..Default::default()
    })
    .await;
    hosts_toml(&b, "token.invalid", &format!("http://{}", fake.addr()), "");
    let mut c = b.image().await;

    let started = Instant::now();
    let e = pull(&mut c, "token.invalid/test/app:1", None)
        .await
        .expect_err("a token that never finishes");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.message().contains("request_timeout"), "{}", e.message());
    assert!(
        e.message().contains(&format!("{}/token", fake.addr())),
        "{}",
        e.message()
    );
    assert!(started.elapsed() < STUCK);
    assert!(
        fake.seen().iter().any(|s| s.path.starts_with("/token")),
        "{:?}",
        fake.seen()
    );
    assert!(listed(&mut c).await.is_empty());
    assert!(
        ingest_leftovers(&b).is_empty(),
        "{:?}",
        ingest_leftovers(&b)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_not_read_to_its_end() {
    // 20 KiB/s for ever; the request deadline is far away, so only a size
    // bound on the error body ends this pull in time.
    let fake = Fake::start(Arc::new(|_: &Seen| Reply::EndlessError {
        chunk: 1024,
        every: Duration::from_millis(50),
    }))
    .await;
    let b = Berthd::start_with(Options {
        registry: "request_timeout = \"10m\"".into(),
        ..Default::default()
    })
    .await;
    hosts_toml(&b, "errors.invalid", &format!("http://{}", fake.addr()), "");
    let mut c = b.image().await;

    let e = pull(&mut c, "errors.invalid/test/app:1", None)
        .await
        .expect_err("a 500");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("500"), "{}", e.message());
    assert!(e.message().contains(&fake.addr()), "{}", e.message());
    assert!(e.message().contains("xxxx"), "{}", e.message());
    assert!(listed(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_blob_is_cancelled_and_holds_up_no_pull_from_another_host() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/app", "1", Compression::Gzip).await;
    // The same image, but its layer comes two bytes a second: that beats
    // any timeout on a single read.
    let (layer_tx, layer_rx) = std::sync::mpsc::channel();
    let fake = serving(&reg, &pushed, layer_tx, |layer| Reply::Trickle {
        headers: vec![],
        body: layer,
        every: Duration::from_millis(500),
    })
    .await;
    let b = Berthd::start_with(Options {
        registry:
            "pull_progress_timeout = \"15s\"\npull_min_rate = 1024\nrequest_timeout = \"10s\""
                .into(),
        ..Default::default()
    })
    .await;
    hosts_toml(
        &b,
        "trickle.invalid",
        &format!("http://{}", fake.addr()),
        "",
    );

    let mut c = b.image().await;
    let hostile = tokio::spawn(async move {
        let started = Instant::now();
        let r = pull(&mut c, "trickle.invalid/test/app:1", None).await;
        (r, started.elapsed())
    });
    tokio::task::spawn_blocking(move || layer_rx.recv_timeout(STUCK))
        .await
        .expect("join")
        .expect("the hostile pull reached the layer");

    // The same layer from the real registry goes ahead while the hostile
    // one trickles (it is cancelled one 15 s window after it started).
    let mut c = b.image().await;
    let id = pull(&mut c, &reg.image("test/app:1"), None)
        .await
        .expect("the same blob from another host");
    assert_eq!(id, pushed.config_digest);
    assert!(
        !hostile.is_finished(),
        "the honest pull waited for the hostile one"
    );

    let (r, took) = hostile.await.expect("task");
    let e = r.expect_err("a trickled layer");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.message().contains("pull_min_rate"), "{}", e.message());
    assert!(e.message().contains(&fake.addr()), "{}", e.message());
    assert!(took < STUCK, "{took:?}");
    // Only the honest image, and no partial download.
    let images = listed(&mut c).await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].repo_tags, [reg.image("test/app:1")]);
    assert!(
        ingest_leftovers(&b).is_empty(),
        "{:?}",
        ingest_leftovers(&b)
    );
}

/// Layers are unpacked while they download, and each such unpack keeps a
/// blocking thread for as long as its download lasts. A registry that
/// trickles every layer of a many-layer image must get only a few of those
/// threads (twice the cores, at least 8); its other layers wait for their
/// blobs to be stored, which here never comes. An honest pull of the same
/// image from another registry meanwhile goes ahead, and is unpacked once
/// stored, since the places are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_many_layer_image_holds_only_a_few_threads() {
    const LAYERS: usize = 12;
    let reg = Registry::start();
    let mut image = fixtures::busybox_image(
        fixtures::ManifestKind::Oci,
        Compression::Gzip,
        &fixtures::Platform::linux_amd64(),
    );
    for i in 1..LAYERS {
        image = image.layer(
            fixtures::Layer::new()
                .dir("etc", 0o755)
                .file(&format!("etc/layer-{i}"), format!("{i}\n"), 0o644)
                .build(Compression::Gzip),
        );
    }
    let pushed = fixtures::push_image(&reg, "test/app", "1", &image).await;
    assert_eq!(pushed.layers.len(), LAYERS);
    let read = |d: &str| std::fs::read(reg.blob_data_path(d)).expect("blob from the registry");
    let manifest = read(&pushed.manifest_digest);
    let config = read(&pushed.config_digest);
    let layers: Vec<(String, Vec<u8>)> = pushed
        .layers
        .iter()
        .map(|l| (format!("/v2/test/app/blobs/{}", l.digest), read(&l.digest)))
        .collect();
    let (media_type, config_path) = (
        pushed.manifest_media_type.clone(),
        format!("/v2/test/app/blobs/{}", pushed.config_digest),
    );
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let reached_tx = Mutex::new(reached_tx);
    let fake = Fake::start(Arc::new(move |r: &Seen| {
        if r.path == "/v2/test/app/manifests/1" {
            return Reply::Full {
                status: "200 OK",
                headers: vec![("Content-Type", media_type.clone())],
                body: manifest.clone(),
            };
        }
        if r.path == config_path {
            return Reply::Full {
                status: "200 OK",
                headers: vec![],
                body: config.clone(),
            };
        }
        match layers.iter().find(|(p, _)| *p == r.path) {
            Some((_, body)) => {
                let _ = reached_tx.lock().expect("lock").send(());
                Reply::Trickle {
                    headers: vec![],
                    body: body.clone(),
                    every: Duration::from_millis(50),
                }
            }
            None => not_found(),
        }
    }))
    .await;
    // 20 bytes a second passes the progress check: the trickle goes on
    // for as long as the test.
    let b = Berthd::start_with(Options {
        registry: "pull_progress_timeout = \"10m\"\npull_min_rate = 1\nrequest_timeout = \"10m\""
            .into(),
        ..Default::default()
    })
    .await;
    hosts_toml(&b, "many.invalid", &format!("http://{}", fake.addr()), "");

    let mut c = b.image().await;
    let hostile = tokio::spawn(async move {
        c.pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "many.invalid/test/app:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
    });
    tokio::task::spawn_blocking(move || {
        for _ in 0..LAYERS {
            reached
                .recv_timeout(STUCK)
                .expect("the hostile pull asked for every layer");
        }
    })
    .await
    .expect("join");
    // Every download has begun: an unpack given a place begins at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let places = (2 * cores).max(8);
    let unpacking = || b.log().matches("unpacking").count();
    assert!(
        unpacking() <= places.min(LAYERS - 1),
        "{} layers unpacking from a trickled download (places: {places})",
        unpacking()
    );

    // The same image from the honest registry: its layers have no places
    // left, so they are unpacked once stored.
    let mut c = b.image().await;
    let id = pull(&mut c, &reg.image("test/app:1"), None)
        .await
        .expect("the same image from another host");
    assert_eq!(id, pushed.config_digest);
    assert!(
        !hostile.is_finished(),
        "the trickled pull ended: {:?}",
        hostile.await
    );
    hostile.abort();
}

/// Asks for basic auth over plain HTTP and notes who sends it.
async fn asks_for_basic_auth() -> Fake {
    Fake::start(Arc::new(|r: &Seen| {
        if r.authorization {
            not_found()
        } else {
            Reply::Full {
                status: "401 Unauthorized",
                headers: vec![("WWW-Authenticate", "Basic realm=\"fake\"".into())],
                body: vec![],
            }
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_go_in_clear_to_an_http_host_with_tls_settings() {
    let certs = TempDir::new("certs");
    let (ca, cert, key) = berth_tests::make_certs(certs.path());
    let b = Berthd::start().await;
    let mut c = b.image().await;

    for (i, tls) in [
        "skip_verify = true\n".to_string(),
        format!("ca = \"{}\"\n", ca.display()),
    ]
    .iter()
    .enumerate()
    {
        // A fresh one each time: berthd remembers who spoke plain HTTP.
        let fake = asks_for_basic_auth().await;
        let name = format!("tls{i}.invalid");
        hosts_toml(&b, &name, &format!("http://{}", fake.addr()), tls);
        let e = pull(&mut c, &format!("{name}/test/app:1"), basic_auth())
            .await
            .expect_err("no credentials over plain HTTP");
        let seen = fake.seen();
        assert!(seen.first().is_some_and(|s| s.tls), "HTTPS first: {seen:?}");
        assert!(
            seen.iter().any(|s| !s.tls),
            "then plain HTTP, without credentials: {seen:?}"
        );
        assert!(
            seen.iter().all(|s| !s.authorization),
            "credentials went over plain HTTP with {tls}: {seen:?}"
        );
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        assert!(e.message().contains("plain HTTP"), "{}", e.message());
        assert!(e.message().contains(&fake.addr()), "{}", e.message());
    }
    assert!(
        !b.log()
            .contains("sending registry credentials over plain HTTP")
    );

    // Written as plain HTTP and nothing else: credentials go, with a
    // warning, and HTTPS is not tried.
    let fake = asks_for_basic_auth().await;
    hosts_toml(&b, "plain.invalid", &format!("http://{}", fake.addr()), "");
    let e = pull(&mut c, "plain.invalid/test/app:1", basic_auth())
        .await
        .expect_err("the fake has no images");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let seen = fake.seen();
    assert!(seen.iter().all(|s| !s.tls), "{seen:?}");
    assert!(seen.iter().any(|s| s.authorization), "{seen:?}");
    assert!(
        b.log()
            .contains("sending registry credentials over plain HTTP"),
        "no warning"
    );
    assert!(!b.log().contains("s3cret"), "a credential reached the log");

    // An http:// host with a CA that does speak HTTPS: used over HTTPS,
    // credentials and all.
    let plain = Registry::start();
    let pushed = fixtures::push_busybox(&plain, "test/tls", "1", Compression::Gzip).await;
    let secure = Registry::start_with(RegistryOptions {
        tls: Some((cert, key)),
        basic_auth: Some(("alice".into(), "s3cret".into())),
        storage: Some(plain.storage_root()),
        ..Default::default()
    });
    let dir = b.dir.path().join(format!("certs.d/{}", secure.addr()));
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\nca = \"{}\"\n",
            secure.addr(),
            ca.display()
        ),
    )
    .expect("hosts.toml");
    let id = pull(&mut c, &secure.image("test/tls:1"), basic_auth())
        .await
        .expect("HTTPS first, with credentials");
    assert_eq!(id, pushed.config_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_whose_caller_gave_up_still_ends_and_its_retry_gets_the_image() {
    let reg = Registry::start();
    let pushed = fixtures::push_busybox(&reg, "test/app", "1", Compression::Gzip).await;
    let b = Berthd::start().await;
    // The layer comes once the test opens the gate.
    let gate = b.dir.path().join("gate");
    let (layer_tx, layer_rx) = std::sync::mpsc::channel();
    let g = gate.clone();
    let fake = serving(&reg, &pushed, layer_tx, move |layer| Reply::Gated {
        gate: g.clone(),
        then: Box::new(Reply::Full {
            status: "200 OK",
            headers: vec![],
            body: layer,
        }),
    })
    .await;
    hosts_toml(&b, "slow.invalid", &format!("http://{}", fake.addr()), "");

    // The kubelet's deadline ends while the layer is on its way.
    let mut c = b.image().await;
    let first = tokio::spawn(async move { pull(&mut c, "slow.invalid/test/app:1", None).await });
    tokio::task::spawn_blocking(move || layer_rx.recv_timeout(STUCK))
        .await
        .expect("join")
        .expect("the pull reached the layer");
    first.abort();
    let _ = first.await;
    std::fs::write(&gate, "").expect("open the gate");

    // The pull ends anyway: the image is there for the retry.
    let mut c = b.image().await;
    let mut images = Vec::new();
    for _ in 0..300 {
        images = listed(&mut c).await;
        if !images.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(images.len(), 1, "the abandoned pull never ended");
    assert_eq!(images[0].id, pushed.config_digest);
    let layers_fetched = fake
        .seen()
        .iter()
        .filter(|s| s.path.contains(&pushed.layers[0].digest))
        .count();
    let id = pull(&mut c, "slow.invalid/test/app:1", None)
        .await
        .expect("the retry");
    assert_eq!(id, pushed.config_digest);
    assert_eq!(
        fake.seen()
            .iter()
            .filter(|s| s.path.contains(&pushed.layers[0].digest))
            .count(),
        layers_fetched,
        "the retry fetched the layer again"
    );
    assert!(
        ingest_leftovers(&b).is_empty(),
        "{:?}",
        ingest_leftovers(&b)
    );
}
