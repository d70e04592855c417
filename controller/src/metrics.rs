//! Prometheus metrics of the controller (`[metrics] listen`): every call by
//! method and status code, its latency, the revision, the watchers.
//!
//! Calls are counted by a layer around the gRPC service ([`Measured`]), at
//! the head of each answer: a refused call's status travels in the head
//! (a trailers-only answer), a call that succeeds has none there and is
//! counted `OK`; a stream (the Watch calls) counts once, when it starts.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::codegen::{http, Context, Poll, Service};

use crate::store::Store;

/// A call: its method and the gRPC status code it was answered with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    /// The method, e.g. `AllocatePrefix`.
    pub method: String,
    /// The status code's number as gRPC sends it (`0` is OK).
    pub code: String,
}

/// A method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The method.
    pub method: String,
}

/// The label a path that is none of the service's methods is counted
/// under: a client's made-up paths must not each become a series.
const UNKNOWN_METHOD: &str = "unknown";

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// The service's methods: counted by name, from zero.
    methods: std::collections::HashSet<String>,
    calls: Family<CallLabel, Counter>,
    call_seconds: Family<MethodLabel, Histogram>,
    revision: Gauge,
    stale: Gauge,
    maintainer: Gauge,
    watchers: Gauge,
    store: Arc<Store>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics of a controller serving `store`.
    pub fn new(store: Arc<Store>) -> Metrics {
        let mut registry = Registry::with_prefix("nemo_controller");
        let calls = Family::<CallLabel, Counter>::default();
        let call_seconds = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        });
        let revision = Gauge::default();
        let stale = Gauge::default();
        registry.register(
            "store_may_be_stale",
            "1 while this replica does not follow the others through etcd (its reads may miss their changes), else 0",
            stale.clone(),
        );
        let maintainer = Gauge::default();
        registry.register(
            "maintainer",
            "1 while this replica keeps the event history (trims it; with etcd, compacts etcd): one replica at a time, elected with an etcd lease",
            maintainer.clone(),
        );
        let watchers = Gauge::default();
        registry.register(
            "calls",
            "gRPC calls answered, by method and status code (0 is OK)",
            calls.clone(),
        );
        registry.register(
            "call_seconds",
            "Time from a call to the head of its answer (a stream: its start), by method",
            call_seconds.clone(),
        );
        registry.register(
            "revision",
            "The newest revision of the change history that is durable",
            revision.clone(),
        );
        registry.register(
            "watchers",
            "Watch streams following the change history now",
            watchers.clone(),
        );
        let methods: std::collections::HashSet<String> =
            nemo_proto::service_methods("nemo.v1.Controller")
                .into_iter()
                .collect();
        // Every method's OK count and latency exist from the start, at
        // zero: a rate or an alert on them needs the series there.
        for method in &methods {
            let _ = calls.get_or_create(&CallLabel {
                method: method.clone(),
                code: "0".to_owned(),
            });
            let _ = call_seconds.get_or_create(&MethodLabel {
                method: method.clone(),
            });
        }
        Metrics {
            registry,
            methods,
            calls,
            call_seconds,
            revision,
            stale,
            maintainer,
            watchers,
            store,
        }
    }

    /// The text exposition (OpenMetrics), with the gauges read now.
    pub fn render(&self) -> String {
        self.revision
            .set(i64::try_from(self.store.revision_now()).unwrap_or(i64::MAX));
        self.watchers
            .set(i64::try_from(self.store.watchers()).unwrap_or(i64::MAX));
        self.stale.set(i64::from(self.store.may_be_stale()));
        self.maintainer.set(i64::from(self.store.is_maintainer()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    fn answered(&self, method: &str, code: &str, started: Instant) {
        let method = if self.methods.contains(method) {
            method
        } else {
            UNKNOWN_METHOD
        };
        self.calls
            .get_or_create(&CallLabel {
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.call_seconds
            .get_or_create(&MethodLabel {
                method: method.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The gRPC service `S`, each call counted in [`Metrics`].
#[derive(Debug, Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Measured<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Measured<S> {
        Measured { inner, metrics }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Measured<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for Measured<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // "/nemo.v1.Controller/AllocatePrefix" -> "AllocatePrefix"; a
        // path that names no method is counted as "unknown".
        let method: String = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answered = answer.await;
            if let Ok(response) = &answered {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned();
                metrics.answered(&method, &code, started);
            }
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_method_starts_at_zero_and_made_up_paths_count_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(dir.path(), Duration::from_secs(60))
                .await
                .unwrap(),
        );
        let metrics = Metrics::new(store);
        let fresh = metrics.render();
        for method in ["AllocatePrefix", "WatchEvents", "PlaceTenant"] {
            assert!(
                fresh.contains(&format!(
                    "nemo_controller_calls_total{{method=\"{method}\",code=\"0\"}} 0"
                )),
                "{method} missing at zero:\n{fresh}"
            );
        }
        let started = Instant::now();
        metrics.answered("AllocatePrefix", "0", started);
        for path in ["NoSuchMethod", "AnotherOne", "x"] {
            metrics.answered(path, "12", started);
        }
        let counted = metrics.render();
        assert!(
            counted.contains("nemo_controller_calls_total{method=\"AllocatePrefix\",code=\"0\"} 1")
        );
        assert!(
            counted.contains("nemo_controller_calls_total{method=\"unknown\",code=\"12\"} 3"),
            "{counted}"
        );
        assert!(!counted.contains("NoSuchMethod"), "{counted}");
    }
}
