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

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
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
        Metrics {
            registry,
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
        // "/nemo.v1.Controller/AllocatePrefix" -> "AllocatePrefix"; an
        // unknown path is counted as such, with a bounded name.
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
