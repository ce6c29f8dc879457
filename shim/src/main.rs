//! berthd: berth's CRI daemon.

mod apparmor;
mod attach;
mod authority;
mod cdi;
mod cgroups;
mod cni;
mod config;
mod container;
mod cri;
mod daemon;
mod dirs;
mod event_hub;
mod exec;
mod idmap;
mod ids;
mod lock;
mod metrics;
mod monitor;
mod netwatch;
mod par;
mod pod;
mod seccomp;
mod serial;
mod server;
mod spec;
mod stats;
mod stored;
mod streaming;
mod trace;
mod tree;
mod wait;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// A Kubernetes container runtime serving the CRI v1 API on a unix socket.
#[derive(Debug, Parser)]
#[command(name = "berthd", version)]
struct Args {
    /// Config file (TOML). Without this flag /etc/berth/config.toml is read
    /// if it exists. Then every *.toml in config.d beside it, in name order.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the effective config, each value with the file or flag it came
    /// from, and exit
    #[arg(long)]
    print_config: bool,
    /// CRI socket to listen on [config: socket]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory for persistent data: images, metadata [config: root]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directory for runtime state, lost on reboot [config: state]
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// error, warn, info, debug, trace, or a tracing filter [config: log_level]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

/// A bare level applies to berth's own crates; the libraries under them
/// (h2, hyper, tower) stay at `info` at most, or their frame-by-frame
/// debug output drowns berth's. A full filter is used as written.
fn log_filter(level: &str) -> String {
    match level {
        "debug" | "trace" => {
            format!("info,berthd={level},berth_imageservice={level},berth_runtime={level}")
        }
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = config::Overrides {
        socket: args.socket,
        root: args.root,
        state: args.state,
        log_level: args.log_level,
    };
    let config = match config::Config::load_with_origins(args.config.as_deref(), &overrides) {
        Ok((c, origins)) if args.print_config => {
            print!("{}", c.annotated(&origins));
            return ExitCode::SUCCESS;
        }
        Ok((c, _)) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = config.clone();
    // A driver this node cannot honour is refused now, not at the first pod.
    let mut config = config;
    config.cgroup_driver = cgroups::resolve_driver(config.cgroup_driver);
    if let Err(e) = cgroups::check_driver(config.cgroup_driver) {
        eprintln!("berthd: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The log filter can change while berthd runs (SIGHUP, `log_level`);
    // it filters the log alone, the trace exporter has its own.
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, filter_handle) = tracing_subscriber::reload::Layer::new(
        tracing_subscriber::EnvFilter::new(log_filter(&config.log_level)),
    );
    let traces = {
        let _in_runtime = runtime.enter();
        match trace::init(&config.tracing) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("berthd: cannot set up the OTLP trace exporter: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let (exporter, trace_layer) = traces.unzip();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter),
        )
        .with(trace_layer)
        .init();
    if let Some(e) = &exporter {
        tracing::info!(endpoint = %e.endpoint, "OpenTelemetry traces over OTLP/gRPC");
    }
    let reload = server::Reload {
        explicit: args.config,
        overrides,
        loaded,
        set_log_level: Box::new(move |level| {
            filter_handle
                .reload(tracing_subscriber::EnvFilter::new(log_filter(level)))
                .map_err(|e| e.to_string())
        }),
    };
    let served = runtime.block_on(server::run(config, reload));
    // The last spans out while the runtime (the gRPC channel) still runs.
    drop(exporter);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
