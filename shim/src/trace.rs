//! OpenTelemetry traces over OTLP/gRPC, off unless configured.
//!
//! On when `[tracing] endpoint` is set, or else the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (and `OTEL_SDK_DISABLED` is not `true`, `OTEL_TRACES_EXPORTER` not
//! `none`). Each CRI call is a server span named by its method
//! (`/runtime.v1.RuntimeService/RunPodSandbox`), with `pod_id`,
//! `container_id` or `image` when the call names one, joined to the
//! caller's trace when the request carries a W3C `traceparent` (as the
//! kubelet sends with its tracing on). The expensive steps are child
//! spans: `namespaces`, `cni` (one per plugin execution), `rootfs`,
//! `monitor`, `pull`, `fetch_blob`, `unpack`.
//!
//! The child spans are at debug level and only the exporter's layer asks
//! for them, so with tracing off they are never built: off costs a
//! disabled callsite check (measured in docs/benchmarks.md).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;

use crate::config::TracingConfig;

/// The endpoint traces go to, if any: the config's, else the standard
/// environment's; `None` when tracing is off.
pub fn endpoint(config: &TracingConfig, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return None;
    }
    if !config.endpoint.is_empty() {
        return Some(config.endpoint.clone());
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// Exports spans until dropped; dropping flushes what is queued (for at
/// most two seconds: a collector that is down must not hold up a stop).
pub struct Exporter {
    provider: SdkTracerProvider,
    pub endpoint: String,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self
            .provider
            .shutdown_with_timeout(std::time::Duration::from_secs(2));
    }
}

/// A subscriber layer of any type.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The exporter and the subscriber layer that feeds it, when tracing is
/// on. Must run inside the tokio runtime (the gRPC channel's task).
pub fn init<S>(config: &TracingConfig) -> anyhow::Result<Option<(Exporter, BoxedLayer<S>)>>
where
    S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let Some(endpoint) = endpoint(config, |k| std::env::var(k).ok()) else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("berthd");
    }
    let mut provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    // The standard variable wins (the SDK reads it when no sampler is set).
    if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(config.sampling_ratio),
        )));
    }
    let provider = provider.build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("berthd"))
        .with_threads(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            let ours = ["berthd", "berth_imageservice", "berth_runtime"]
                .iter()
                .any(|c| {
                    m.target()
                        .strip_prefix(c)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
                });
            // Spans down to debug (the steps); events (span events in the
            // trace) from info up.
            let wanted = if m.is_span() {
                tracing::Level::DEBUG
            } else {
                tracing::Level::INFO
            };
            (ours || m.target().starts_with("tonic")) && *m.level() <= wanted
        }));
    ON.store(true, std::sync::atomic::Ordering::Relaxed);
    let exporter = Exporter { provider, endpoint };
    Ok(Some((exporter, Box::new(layer))))
}

/// Whether [`init`] turned tracing on.
static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The span of one CRI call (its fields also prefix the call's log lines):
/// with tracing on, named by its method and joined to the caller's trace
/// when its headers carry one.
pub fn call_span(req: &http::Request<()>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let rpc = req.uri().path();
    if !ON.load(std::sync::atomic::Ordering::Relaxed) {
        return tracing::info_span!(
            "cri",
            %rpc,
            pod_id = tracing::field::Empty,
            container_id = tracing::field::Empty,
            image = tracing::field::Empty,
        );
    }
    let span = tracing::info_span!(
        "cri",
        %rpc,
        pod_id = tracing::field::Empty,
        container_id = tracing::field::Empty,
        image = tracing::field::Empty,
        otel.name = rpc,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    if req.headers().contains_key("traceparent") {
        let parent =
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(req.headers())));
        let _ = span.set_parent(parent);
    }
    span
}

/// Names the pod, container or image a call is about on its span.
pub fn record(field: &'static str, value: &str) {
    if !value.is_empty() {
        tracing::Span::current().record(field, value);
    }
}

/// The gRPC outcome of a call, on its span (when tracing is on).
pub fn record_status(code: tonic::Code, message: &str) {
    let span = tracing::Span::current();
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", message);
    }
}

/// `spawn_blocking` whose closure runs inside the caller's span, so the
/// steps it takes are children of the CRI call.
pub fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

/// A step of a pod's or container's start, on this thread: a child span
/// while it runs; its duration goes to the metrics when it is [`done`]
/// (a failed step is in the trace, not in the metrics).
///
/// [`done`]: Stage::done
pub struct Stage {
    name: &'static str,
    started: std::time::Instant,
    _span: tracing::span::EnteredSpan,
}

impl Stage {
    pub fn start(name: &'static str) -> Stage {
        Stage {
            name,
            started: std::time::Instant::now(),
            _span: tracing::debug_span!("stage", otel.name = name).entered(),
        }
    }

    pub fn done(self) {
        crate::metrics::stage(self.name, self.started.elapsed());
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_configured() {
        let c = TracingConfig::default();
        assert_eq!(endpoint(&c, env(&[])), None);
        assert_eq!(
            endpoint(&c, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            None
        );
    }

    #[test]
    fn the_config_wins_then_the_signal_variable_then_the_generic_one() {
        let mut c = TracingConfig::default();
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(
            endpoint(&c, env(&both)).as_deref(),
            Some("http://traces:4317")
        );
        assert_eq!(
            endpoint(&c, env(&both[..1])).as_deref(),
            Some("http://generic:4317")
        );
        c.endpoint = "http://config:4317".into();
        assert_eq!(
            endpoint(&c, env(&both)).as_deref(),
            Some("http://config:4317")
        );
    }

    #[test]
    fn the_standard_switches_turn_it_off() {
        let c = TracingConfig {
            endpoint: "http://config:4317".into(),
            ..Default::default()
        };
        assert_eq!(endpoint(&c, env(&[("OTEL_SDK_DISABLED", "TRUE")])), None);
        assert_eq!(endpoint(&c, env(&[("OTEL_TRACES_EXPORTER", "none")])), None);
        assert!(endpoint(&c, env(&[("OTEL_SDK_DISABLED", "false")])).is_some());
    }
}
