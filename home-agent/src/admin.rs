//! The admin gRPC API (`nemo.v1.HomeAgentAdmin`), with gRPC health and
//! reflection beside it.

use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nemo::ha::Binding;
use nemo_daemon::serving::GrpcApi;
use nemo_proto::v1 as pb;
use nemo_proto::v1::home_agent_admin_server::{HomeAgentAdmin, HomeAgentAdminServer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::election::{ElectionCommand, PairState};
use crate::messages::{BindingChange, BindingEvent, CoreEvent, Deleted, Role, Shared};

use nemo_daemon::clock::unix_ms;

/// A binding as the API shows it.
pub fn to_proto(binding: &Binding) -> pb::Binding {
    pb::Binding {
        home_address: binding.home_address.to_string(),
        care_of_address: binding.care_of.to_string(),
        prefixes: binding.prefixes.iter().map(ToString::to_string).collect(),
        mobile_router: binding.mobile_router,
        sequence: u32::from(binding.sequence.0),
        spi: binding.spi,
        lifetime_seconds: u32::try_from(binding.lifetime.as_secs()).unwrap_or(u32::MAX),
        registered_at_unix_ms: unix_ms(binding.registered_at),
        expires_at_unix_ms: unix_ms(binding.expires_at),
    }
}

fn event_to_proto(event: &BindingEvent) -> pb::BindingEvent {
    pb::BindingEvent {
        kind: match event.change {
            BindingChange::Upserted => pb::binding_event::Kind::Upsert,
            BindingChange::Removed => pb::binding_event::Kind::Remove,
        } as i32,
        binding: Some(to_proto(&event.binding)),
        reason: event.reason.to_owned(),
    }
}

fn home_address(field: &str, text: &str) -> Result<Ipv6Addr, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("{field}: {text:?} is not an IPv6 address")))
}

/// A pair member's election, as the admin API sees it.
#[derive(Debug, Clone)]
pub struct PairHandle {
    /// What the election reports.
    pub state: Arc<RwLock<PairState>>,
    /// Where a hand-over is asked.
    pub commands: mpsc::Sender<ElectionCommand>,
    /// The role now.
    pub role: watch::Receiver<Role>,
}

/// The service.
#[derive(Debug, Clone)]
pub struct Admin {
    shared: Arc<Shared>,
    core: mpsc::Sender<CoreEvent>,
    pair: Option<PairHandle>,
    dataplane_backend: &'static str,
}

/// How long a hand-over waits for the answered registrations to reach the
/// standby's disk.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands the active role over: stops answering, waits until everything
/// answered is on the standby's disk and the standby confirms it is in
/// step, then resigns. Any failure before the resignation makes this
/// member answer again (if it is still master).
async fn hand_over(
    commands: mpsc::Sender<ElectionCommand>,
    core: mpsc::Sender<CoreEvent>,
) -> Result<(), Status> {
    let stopping = || Status::unavailable("the home agent is stopping");
    // 1. Stop answering.
    let (respond, answer) = oneshot::channel();
    commands
        .send(ElectionCommand::Quiesce(respond))
        .await
        .map_err(|_| stopping())?;
    if !answer.await.map_err(|_| stopping())? {
        return Err(Status::failed_precondition(
            "this member is not the active one",
        ));
    }
    // 2. Everything answered so far durable on both members, and the
    // standby answering.
    let confirmed = async {
        let (respond, confirmed) = oneshot::channel();
        core.send(CoreEvent::Confirm(respond))
            .await
            .map_err(|_| stopping())?;
        match tokio::time::timeout(DRAIN_TIMEOUT, confirmed).await {
            Err(_) => Err(Status::deadline_exceeded(
                "the writer did not drain in time",
            )),
            Ok(Err(_)) => Err(stopping()),
            Ok(Ok(Err(why))) => Err(Status::failed_precondition(format!(
                "the standby did not confirm it is in step ({}): not handed over",
                why.name()
            ))),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
    .await;
    if let Err(status) = confirmed {
        let (respond, resumed) = oneshot::channel();
        let _ = commands.send(ElectionCommand::Resume(respond)).await;
        let resumed = resumed.await.unwrap_or(false);
        tracing::warn!(%status, resumed, "hand-over failed; rolled back");
        return Err(status);
    }
    // 3. Resign: the standby takes over within its Skew_Time.
    let (respond, resigned) = oneshot::channel();
    commands
        .send(ElectionCommand::Resign(respond))
        .await
        .map_err(|_| stopping())?;
    resigned.await.map_err(|_| stopping())?;
    Ok(())
}

impl Admin {
    /// A service over the daemon's durable state; `pair` for a member of a
    /// pair; `dataplane_backend` the backend's name (`bpf`, `seg6`,
    /// `memory`).
    pub fn new(
        shared: Arc<Shared>,
        core: mpsc::Sender<CoreEvent>,
        pair: Option<PairHandle>,
        dataplane_backend: &'static str,
    ) -> Admin {
        Admin {
            shared,
            core,
            pair,
            dataplane_backend,
        }
    }

    fn snapshot(&self) -> Result<Vec<Arc<Binding>>, Status> {
        self.shared
            .view
            .read()
            .map(|view| view.values().cloned().collect())
            .map_err(|_| Status::internal("binding view unavailable"))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BindingEvent, Status>> + Send>>;

#[tonic::async_trait]
impl HomeAgentAdmin for Admin {
    async fn list_bindings(
        &self,
        _request: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsResponse>, Status> {
        Ok(Response::new(pb::ListBindingsResponse {
            bindings: self.snapshot()?.iter().map(|b| to_proto(b)).collect(),
            dataplane_backend: self.dataplane_backend.into(),
        }))
    }

    async fn get_binding(
        &self,
        request: Request<pb::GetBindingRequest>,
    ) -> Result<Response<pb::Binding>, Status> {
        let home = home_address("home_address", &request.get_ref().home_address)?;
        let view = self
            .shared
            .view
            .read()
            .map_err(|_| Status::internal("binding view unavailable"))?;
        view.get(&home)
            .map(|binding| Response::new(to_proto(binding)))
            .ok_or_else(|| Status::not_found(format!("no binding for home address {home}")))
    }

    async fn delete_binding(
        &self,
        request: Request<pb::DeleteBindingRequest>,
    ) -> Result<Response<pb::DeleteBindingResponse>, Status> {
        let home = home_address("home_address", &request.get_ref().home_address)?;
        let (respond, removed) = oneshot::channel();
        self.core
            .send(CoreEvent::Delete {
                home_address: home,
                respond,
            })
            .await
            .map_err(|_| Status::unavailable("home agent is stopping"))?;
        match removed.await {
            Ok(Deleted::Removed(binding)) => Ok(Response::new(pb::DeleteBindingResponse {
                binding: Some(to_proto(&binding)),
            })),
            Ok(Deleted::NoBinding) => Err(Status::not_found(format!(
                "no binding for home address {home}"
            ))),
            Ok(Deleted::NotActive) => Err(Status::failed_precondition(
                "this member is standby: delete on the active member (it replicates the removal here)",
            )),
            Err(_) => Err(Status::unavailable("home agent is stopping")),
        }
    }

    type WatchBindingsStream = EventStream;

    async fn get_pair_status(
        &self,
        _request: Request<pb::GetPairStatusRequest>,
    ) -> Result<Response<pb::PairStatus>, Status> {
        let metrics = &self.shared.metrics;
        let unreplicated = ["no_standby", "timed_out"]
            .iter()
            .map(|reason| {
                metrics
                    .unreplicated_batches
                    .get_or_create(&crate::metrics::ReasonLabel {
                        reason: (*reason).to_owned(),
                    })
                    .get()
            })
            .sum();
        let mut status = pb::PairStatus {
            role: "alone".into(),
            standby_attached: metrics.standby_attached.get() == 1,
            replicated_batches: metrics.replicated_batches.get(),
            unreplicated_batches: unreplicated,
            takeovers: metrics.takeovers.get(),
            ..Default::default()
        };
        if let Some(pair) = &self.pair {
            status.role = match *pair.role.borrow() {
                Role::Active => "active",
                Role::Standby => "standby",
            }
            .into();
            let state = pair
                .state
                .read()
                .map_err(|_| Status::internal("pair state unavailable"))?
                .clone();
            status.vrid = u32::from(state.vrid);
            status.priority = u32::from(state.priority);
            if let Some((at, why)) = state.last_takeover {
                status.last_takeover_unix_ms = unix_ms(at);
                status.last_takeover_reason = why;
            }
        }
        Ok(Response::new(status))
    }

    async fn hand_over(
        &self,
        _request: Request<pb::HandOverRequest>,
    ) -> Result<Response<pb::HandOverResponse>, Status> {
        let Some(pair) = &self.pair else {
            return Err(Status::failed_precondition(
                "this home agent is not a member of a pair",
            ));
        };
        if self.shared.metrics.standby_attached.get() == 0 {
            return Err(Status::failed_precondition(
                "no standby is attached: handing over would leave no active member",
            ));
        }
        // A task of its own: a client that goes away does not stop it
        // half-way (quiesced, not resigned); any failure rolls it back.
        let commands = pair.commands.clone();
        let core = self.core.clone();
        tokio::spawn(hand_over(commands, core))
            .await
            .map_err(|_| Status::internal("the hand-over task failed"))??;
        tracing::warn!("handed the active role over");
        Ok(Response::new(pb::HandOverResponse {}))
    }

    async fn watch_bindings(
        &self,
        _request: Request<pb::WatchBindingsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        // Subscribe first, then snapshot: a change in between shows twice,
        // never not at all, and applying an event twice is harmless.
        let live = BroadcastStream::new(self.shared.events.subscribe());
        let snapshot: Vec<Result<pb::BindingEvent, Status>> = self
            .snapshot()?
            .into_iter()
            .map(|binding| {
                Ok(event_to_proto(&BindingEvent {
                    change: BindingChange::Upserted,
                    binding,
                    reason: "snapshot",
                }))
            })
            .collect();
        let live = live.map(|item| match item {
            Ok(event) => Ok(event_to_proto(&event)),
            Err(_) => Err(Status::resource_exhausted(
                "watcher fell behind and missed changes; watch again",
            )),
        });
        let stream = tokio_stream::iter(snapshot).chain(live);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The admin API, for `nemo_daemon::serving::Servers::grpc` (which adds
/// health and reflection).
pub fn api(admin: Admin, token: Option<String>) -> GrpcApi {
    GrpcApi {
        routes: tonic::service::Routes::new(HomeAgentAdminServer::with_interceptor(
            admin,
            nemo_daemon::bearer::TokenCheck::new(token),
        )),
        name: <HomeAgentAdminServer<Admin> as tonic::server::NamedService>::NAME,
        server: tonic::transport::Server::builder(),
    }
}
