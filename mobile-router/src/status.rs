//! The status API (`nemo.v1.MobileRouterStatus`, with gRPC health and
//! reflection) and the Prometheus metrics of `nemo-mr`.

use std::sync::{Arc, RwLock};

use nemo_daemon::serving::GrpcApi;
use nemo_proto::v1 as pb;
use nemo_proto::v1::mobile_router_status_server::{MobileRouterStatus, MobileRouterStatusServer};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Labels naming an instance: `tenant`, its tenant's name (not
/// `instance`, which Prometheus reserves for the scrape target).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// The instance's tenant.
    pub tenant: String,
}

/// Labels naming a status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabel {
    /// The instance's tenant.
    pub tenant: String,
    /// The Binding Acknowledgement status.
    pub status: String,
}

/// The metrics of `nemo-mr`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Registrations acknowledged, per instance.
    pub registrations: Family<TenantLabel, Counter>,
    /// Retransmitted Binding Updates, per instance.
    pub retransmissions: Family<TenantLabel, Counter>,
    /// Rejections, per instance and status.
    pub rejections: Family<RejectionLabel, Counter>,
    /// Changes of the care-of address.
    pub care_of_changes: Counter,
    /// Time from the start of a registration (a care-of address change, a
    /// refresh, a trigger) to its acknowledgement.
    pub registration_seconds: Histogram,
    /// Tunnelled packets no decapsulation route took (the kernel's count,
    /// `nemo_dataplane::tunsrc::decapsulation_misses`).
    pub decapsulation_misses: Gauge,
    /// The data plane backend running: 1 for its name.
    pub dataplane_backend: Family<nemo_daemon::BackendLabel, Gauge>,
    /// The BPF programs' packet counters, by counter.
    pub dataplane_packets: Family<nemo_daemon::PacketCounterLabel, Gauge>,
}

impl Metrics {
    /// A fresh set.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nemo_mr");
        let registrations = Family::<TenantLabel, Counter>::default();
        let retransmissions = Family::<TenantLabel, Counter>::default();
        let rejections = Family::<RejectionLabel, Counter>::default();
        let care_of_changes = Counter::default();
        let registration_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 20));
        let decapsulation_misses = Gauge::default();
        registry.register(
            "decapsulation_misses",
            "Tunnelled packets to this host refused: not from the tenant's home agent or malformed (bpf: its programs' count; seg6: kernel Ip6InUnknownProtos)",
            decapsulation_misses.clone(),
        );
        let dataplane_packets = Family::default();
        registry.register(
            "dataplane_packets",
            "Packets the BPF data plane counted, by counter (held: a tenant's packets dropped until its VM announces itself here)",
            dataplane_packets.clone(),
        );
        let dataplane_backend = Family::default();
        registry.register(
            "dataplane_backend",
            "The data plane backend this daemon runs (1 for its name: bpf, seg6 or memory)",
            dataplane_backend.clone(),
        );
        registry.register(
            "registrations",
            "Registrations acknowledged",
            registrations.clone(),
        );
        registry.register(
            "retransmissions",
            "Binding Updates retransmitted",
            retransmissions.clone(),
        );
        registry.register(
            "rejections",
            "Registrations refused, by status",
            rejections.clone(),
        );
        registry.register(
            "care_of_changes",
            "Care-of address changes",
            care_of_changes.clone(),
        );
        registry.register(
            "registration_seconds",
            "Time from the start of a registration to its acknowledgement",
            registration_seconds.clone(),
        );
        Metrics {
            registry,
            registrations,
            retransmissions,
            rejections,
            care_of_changes,
            registration_seconds,
            decapsulation_misses,
            dataplane_backend,
            dataplane_packets,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// A request to register again: the instance's name (or all), and where
/// the count of instances told goes (`None`: no such instance).
pub type Trigger = (Option<String>, oneshot::Sender<Option<u32>>);

/// The service.
#[derive(Debug, Clone)]
pub struct StatusService {
    snapshot: Arc<RwLock<Vec<pb::InstanceStatus>>>,
    triggers: mpsc::Sender<Trigger>,
}

impl StatusService {
    /// A service over the daemon's snapshot and trigger channel.
    pub fn new(
        snapshot: Arc<RwLock<Vec<pb::InstanceStatus>>>,
        triggers: mpsc::Sender<Trigger>,
    ) -> StatusService {
        StatusService { snapshot, triggers }
    }
}

#[tonic::async_trait]
impl MobileRouterStatus for StatusService {
    async fn list_instances(
        &self,
        _request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let instances = self
            .snapshot
            .read()
            .map_err(|_| Status::internal("status unavailable"))?
            .clone();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }

    async fn reregister(
        &self,
        request: Request<pb::ReregisterRequest>,
    ) -> Result<Response<pb::ReregisterResponse>, Status> {
        let name = request.into_inner().name;
        let wanted = (!name.is_empty()).then(|| name.clone());
        let (respond, answer) = oneshot::channel();
        self.triggers
            .send((wanted, respond))
            .await
            .map_err(|_| Status::unavailable("mobile router is stopping"))?;
        match answer.await {
            Ok(Some(instances)) => Ok(Response::new(pb::ReregisterResponse { instances })),
            Ok(None) => Err(Status::not_found(format!("name: no instance {name:?}"))),
            Err(_) => Err(Status::unavailable("mobile router is stopping")),
        }
    }
}

/// The status API, for `nemo_daemon::serving::Servers::grpc` (which adds
/// health and reflection).
pub fn api(service: StatusService, token: Option<String>) -> GrpcApi {
    GrpcApi {
        routes: tonic::service::Routes::new(MobileRouterStatusServer::with_interceptor(
            service,
            nemo_daemon::bearer::TokenCheck::new(token),
        )),
        name: <MobileRouterStatusServer<StatusService> as tonic::server::NamedService>::NAME,
        server: tonic::transport::Server::builder(),
    }
}
