//! Socket setup, the gRPC server, and orderly shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cri_api::MAX_MESSAGE_SIZE;
use cri_api::v1::image_service_server::ImageServiceServer;
use cri_api::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::cri::{image::ImageSvc, runtime::RuntimeSvc};
use crate::daemon::Daemon;
use crate::lock::PidLock;

/// How long in-flight calls get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(config: Config, mut reload: Reload) -> anyhow::Result<()> {
    // Handlers first: a SIGTERM that arrives while berthd starts must still
    // mean an orderly stop, not the default death that leaves the socket
    // (and a SIGHUP a reload, never a death).
    let mut signals = Signals::new()?;
    let socket_lock_path = {
        let mut p = config.socket.clone().into_os_string();
        p.push(".lock");
        std::path::PathBuf::from(p)
    };
    let _socket_lock = PidLock::acquire(
        &socket_lock_path,
        &format!("socket {}", config.socket.display()),
    )?;
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    }
    let _root_lock = PidLock::acquire(
        &config.root.join("berthd.lock"),
        &format!("root {}", config.root.display()),
    )?;
    let listener = bind(&config.socket)?;
    // Off the start's path: a container that needs the profile first waits
    // for this load (or loads it itself).
    tokio::task::spawn_blocking(crate::apparmor::init);

    let db = Arc::new(open_database(&config.root.join("berth.redb"))?);
    let images = Arc::new(
        berth_imageservice::ImageService::open(
            berth_imageservice::Settings {
                dir: config.root.join("images"),
                hosts_dir: config.registry.config_path.clone(),
                registry: berth_imageservice::registry::Limits {
                    request_timeout: config.registry.request_timeout,
                    rate_window: config.registry.pull_progress_timeout,
                    min_rate: config.registry.pull_min_rate,
                },
                pinned: config.pinned_images.clone(),
                limits: config.images.limits(),
            },
            db.clone(),
        )
        .context("cannot open the image store")?,
    );
    let mut pods = crate::pod::Pods::open(db.clone(), &config.state, config.cni.clone())
        .context("cannot open the pod store")?;
    pods.systemd_cgroup = config.cgroup_driver == crate::config::CgroupDriver::Systemd;
    let mut containers =
        crate::container::Containers::open(db.clone(), &config.root, &config.state)
            .map_err(|e| anyhow::anyhow!(e))
            .context("cannot open the container store")?;
    containers.aside = crate::tree::own(&config.state);
    // Leases of containers that no longer exist (berthd died between
    // leasing and recording, or between removing and releasing).
    for holder in images.lease_holders() {
        if containers
            .find(&holder)
            .map_err(|e| anyhow::anyhow!(e))?
            .is_none()
        {
            images
                .release(&holder)
                .context("releasing a stale image lease")?;
        }
    }
    let daemon = Arc::new(Daemon::new(
        config.clone(),
        pods,
        containers,
        images.clone(),
    ));
    let streaming_listener = tokio::net::TcpListener::bind((
        config
            .streaming
            .address
            .parse::<std::net::IpAddr>()
            .context("streaming.address")?,
        config.streaming.port,
    ))
    .await
    .with_context(|| {
        format!(
            "cannot listen for streaming on {}:{}",
            config.streaming.address, config.streaming.port
        )
    })?;
    let streaming_addr = streaming_listener.local_addr()?;
    let tls = match (
        &config.streaming.tls_cert_file,
        &config.streaming.tls_key_file,
    ) {
        (Some(cert), Some(key)) => Some(
            crate::streaming::tls_acceptor(cert, key)
                .map_err(|e| anyhow::anyhow!(e))
                .context("cannot set up the streaming server's TLS")?,
        ),
        _ => None,
    };
    let _ = daemon.streaming.set(crate::streaming::Streaming::new(
        streaming_addr,
        tls.is_some(),
        config.streaming.idle_timeout,
        config.streaming.token_ttl,
    ));
    let streaming = tokio::spawn(crate::streaming::serve(
        streaming_listener,
        daemon.clone(),
        tls,
    ));
    let metrics = match config.metrics.address.as_str() {
        "" => None,
        a => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} for metrics"))?;
            tracing::info!(address = %l.local_addr()?, "metrics on /metrics");
            Some(tokio::spawn(serve_metrics(l, daemon.clone())))
        }
    };
    let netwatch = tokio::spawn(crate::netwatch::run(daemon.clone()));
    let exits = tokio::spawn(crate::cri::events::watch_exits(daemon.clone()));
    let runtime = RuntimeServiceServer::new(RuntimeSvc::new(daemon.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let image = ImageServiceServer::new(ImageSvc::new(images))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .trace_fn(crate::trace::call_span)
            .layer(LogFailuresLayer)
            .add_service(runtime)
            .add_service(image)
            .serve_with_incoming_shutdown(
                // Any :authority, as Go's gRPC takes (see authority.rs).
                tokio_stream::StreamExt::map(UnixListenerStream::new(listener), |s| {
                    s.map(crate::authority::Fixed::new)
                }),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    tracing::info!(
        socket = %config.socket.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        version = env!("CARGO_PKG_VERSION"),
        streaming = %streaming_addr,
        "berthd serving CRI v1"
    );

    // systemd's Type=notify: ready once the socket answers.
    sd_notify("READY=1");
    let signal_name = loop {
        match signals.wait().await {
            "SIGHUP" => reload.reload(&daemon),
            other => break other,
        }
    };
    sd_notify("STOPPING=1");
    tracing::info!(signal = signal_name, "shutting down: no new calls accepted");
    let _ = stop_tx.send(());
    daemon.events.close();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!("server ended with an error: {e}"),
        Ok(Err(e)) => tracing::warn!("server task failed: {e}"),
        Err(_) => tracing::warn!(
            "calls still in flight after {}s, closing anyway",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    netwatch.abort();
    streaming.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    exits.abort();
    if let Err(e) = std::fs::remove_file(&config.socket) {
        tracing::warn!("cannot remove {}: {e}", config.socket.display());
    }
    tracing::info!("berthd stopped");
    Ok(())
}

/// Opens the metadata database, creating it whole first if it is new: a
/// berthd killed while redb wrote a fresh file's header would otherwise
/// leave a file no later start can open. The new file is made under a
/// temporary name and renamed into place once complete.
fn open_database(path: &Path) -> anyhow::Result<redb::Database> {
    if !path.exists() {
        let tmp = path.with_extension("redb.new");
        let _ = std::fs::remove_file(&tmp);
        drop(
            redb::Database::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?,
        );
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
    }
    // It holds every pod's and container's config, environments included:
    // root's alone (an older berth's 0644 file too).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    redb::Database::create(path).with_context(|| format!("cannot open {}", path.display()))
}

/// Binds the CRI socket with mode 0660. Only called while we hold the
/// socket's lock, so a socket file already there was left by a dead berthd.
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            tracing::info!("replacing stale socket {}", socket.display());
            std::fs::remove_file(socket)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", socket.display())),
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", socket.display()))?;
    Ok(listener)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Serves `GET /metrics` until the task is dropped.
async fn serve_metrics(listener: tokio::net::TcpListener, d: Arc<crate::daemon::Daemon>) {
    async fn metrics(
        axum::extract::State(d): axum::extract::State<Arc<crate::daemon::Daemon>>,
    ) -> impl axum::response::IntoResponse {
        let text = tokio::task::spawn_blocking(move || {
            let containers = d.containers.all().unwrap_or_default();
            let running = containers
                .iter()
                .filter(|c| {
                    matches!(
                        d.containers.observe(&c.id),
                        crate::container::Observed::Running { .. }
                    )
                })
                .count();
            let pods_ready = d
                .pods
                .all()
                .unwrap_or_default()
                .iter()
                .filter(|p| p.state == crate::pod::PodState::Ready)
                .count();
            crate::metrics::render(&crate::metrics::Now {
                containers_running: running,
                monitors: crate::monitor::running(&d.config.state),
                pods_ready,
            })
        })
        .await
        .unwrap_or_default();
        (
            [(
                http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
    }
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(d);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("metrics server: {e}");
    }
}

/// Sets the log filter of the running process (a `log_level` value).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// What a SIGHUP needs: how the config was found, and what it said.
pub struct Reload {
    pub explicit: Option<std::path::PathBuf>,
    pub overrides: crate::config::Overrides,
    /// The config as last loaded (before `cgroup_driver = "auto"` was
    /// resolved), to tell what a reload changes.
    pub loaded: Config,
    pub set_log_level: SetLogLevel,
}

impl Reload {
    /// Reads the config files again. What can change live does:
    /// `log_level` and `pinned_images` (the registry's hosts.toml files and
    /// credentials, and the CNI network files, are read at each use
    /// anyway); any other key that changed is logged as needing a restart.
    /// A config that does not load is logged, and the running one kept.
    fn reload(&mut self, daemon: &crate::daemon::Daemon) {
        let new = match Config::load_with_origins(self.explicit.as_deref(), &self.overrides) {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::error!("SIGHUP: the config was not reloaded, the running one stays: {e}");
                return;
            }
        };
        let changed = crate::config::changed_keys(&self.loaded, &new);
        if changed.is_empty() {
            tracing::info!("SIGHUP: config reloaded, nothing changed");
        }
        for key in changed {
            if key == "log_level" {
                match (self.set_log_level)(&new.log_level) {
                    Ok(()) => tracing::info!(key, value = %new.log_level, "SIGHUP: applied"),
                    Err(e) => tracing::error!(key, "SIGHUP: not applied: {e}"),
                }
            } else if key == "pinned_images" {
                daemon.images.set_pinned(&new.pinned_images);
                tracing::info!(key, value = ?new.pinned_images, "SIGHUP: applied");
            } else {
                tracing::warn!(
                    key,
                    "SIGHUP: changed in the config; takes effect when berthd restarts"
                );
            }
        }
        self.loaded = new;
    }
}

/// Tells systemd (when it started us with `Type=notify`) about our state:
/// one datagram to `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
/// namespace). Without the variable, nothing happens.
fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
        None => std::os::unix::net::SocketAddr::from_pathname(&path),
    };
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| addr.and_then(|a| s.send_to_addr(state.as_bytes(), &a)));
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

/// Logs every CRI call that fails, with its gRPC code and message (tonic
/// itself logs nothing): warn, or debug for NotFound, which the kubelet
/// meets routinely after a removal.
#[derive(Clone, Copy)]
struct LogFailuresLayer;

impl<S> tower::Layer<S> for LogFailuresLayer {
    type Service = LogFailures<S>;
    fn layer(&self, inner: S) -> LogFailures<S> {
        LogFailures(inner)
    }
}

#[derive(Clone)]
struct LogFailures<S>(S);

impl<S, B, RB> tower::Service<http::Request<B>> for LogFailures<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = req.uri().path().to_string();
        let started = std::time::Instant::now();
        let fut = self.0.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok());
            // A failure is a trailers-only answer: its code is in the
            // headers; success carries it in the trailers, after the body.
            let code = header("grpc-status")
                .map_or(tonic::Code::Ok, |c| tonic::Code::from_bytes(c.as_bytes()));
            crate::metrics::rpc(&rpc, &format!("{code:?}"), started.elapsed());
            let message = percent_decode(header("grpc-message").unwrap_or_default());
            crate::trace::record_status(code, &message);
            if code != tonic::Code::Ok {
                if code == tonic::Code::NotFound {
                    tracing::debug!(%rpc, ?code, "{message}");
                } else {
                    tracing::warn!(%rpc, ?code, "{message}");
                }
            }
            Ok(res)
        })
    }
}

/// gRPC's percent-encoded `grpc-message`, decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
