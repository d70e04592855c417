//! The controller's gRPC service (`nemo.v1.Controller`), the bearer-token
//! check, and the server with health and reflection.

mod arrivals;
mod callers;
mod convert;
mod ipv4;
mod requests;
mod watch;

use std::pin::Pin;
use std::sync::Arc;

use nemo::auth::Algorithm;
use nemo_daemon::serving::GrpcApi;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_server::{Controller, ControllerServer};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub use self::arrivals::Arrivals;
use self::callers::{Access, CallerCheck};
use self::convert::{
    allocation, bounded, credential_proto, event, home_agent_proto, ipv4_mapping_proto,
    mobile_router_proto, placement_proto,
};
pub use self::requests::REQUEST_ID;
use self::requests::{request_id, Made};
use self::watch::{
    authorization_updates, follow, missed, placement_update, placement_updates, resumable, Updates,
};
use crate::store;
use crate::store::{Store, StoreChange, StoreError};

/// The metadata key on an answer read from a replica that could not check
/// it was up to date; its value says why.
pub const MAY_BE_STALE: &str = "nemo-may-be-stale";

/// Whether a read is known to be as new as etcd.
enum Freshness {
    Fresh,
    /// Why it may not be.
    MayBeStale(String),
}

impl Freshness {
    /// The answer, marked [`MAY_BE_STALE`] when it may be.
    fn answer<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if let Freshness::MayBeStale(why) = self {
            let why: String = why
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
                .take(200)
                .collect();
            if let Ok(value) = why.parse() {
                response.metadata_mut().insert(MAY_BE_STALE, value);
            }
        }
        response
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<Store>,
    /// Daemons warned about for calling with the operator token.
    warned: Arc<callers::Warned>,
    /// Whether a hypervisor's report of a tenant's arrival places it.
    arrivals: Arrivals,
}

impl Service {
    /// A service over a store (arrivals refused).
    pub fn new(store: Arc<Store>) -> Service {
        Service {
            store,
            warned: Arc::default(),
            arrivals: Arrivals::Refuse,
        }
    }

    /// The same, following arrivals as `arrivals` says.
    pub fn with_arrivals(self, arrivals: Arrivals) -> Service {
        Service { arrivals, ..self }
    }

    /// Waits, before a read, until this replica holds what etcd held when
    /// the read came (`Store::read_barrier`). When etcd cannot say (no
    /// quorum), the read is answered from memory, marked as possibly stale.
    async fn freshness(&self) -> Freshness {
        match self.store.read_barrier().await {
            Ok(()) => Freshness::Fresh,
            Err(error) => Freshness::MayBeStale(error.to_string()),
        }
    }

    async fn pool(&self, name: &str) -> Result<pb::Pool, Status> {
        let (pool, allocated, quarantined) = self.store.pool(name).await?;
        Ok(pb::Pool {
            name: pool.name.clone(),
            prefix: pool.prefix.to_string(),
            tenant_length: u32::from(pool.tenant_length),
            allocated,
            quarantined,
            capacity: pool.capacity(),
            translation_prefix: pool
                .translation_prefix
                .map(|p| p.to_string())
                .unwrap_or_default(),
        })
    }

    async fn tenant(&self, name: &str) -> Result<pb::Tenant, Status> {
        let (tenant, prefixes) = self.store.tenant(name).await?;
        let mappings = self.store.ipv4_mappings(Some(name)).await?;
        Ok(pb::Tenant {
            name: tenant.name,
            prefixes: prefixes.iter().map(ToString::to_string).collect(),
            created_at_unix_ms: tenant.created_at_unix_ms,
            ipv4_mappings: mappings.iter().map(ipv4_mapping_proto).collect(),
        })
    }

    /// A watch stream from `from_revision` (0: a snapshot first, by
    /// `snapshot`), then every later change as `map` turns it into updates.
    async fn watch<U: Send + 'static>(
        &self,
        from_revision: u64,
        credential: Option<String>,
        map: impl Fn(Arc<Store>, u64, StoreChange) -> Updates<U> + Send + 'static,
        snapshot: impl Fn(Arc<Store>, u64) -> Updates<U> + Send + 'static,
    ) -> Result<Response<UpdateStream<U>>, Status> {
        let (history, live, through) = self.store.events_through(from_revision).await?;
        resumable(&history, from_revision, through)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        if let Some(id) = credential {
            callers::revoked_ends(&self.store, id, tx.clone()).await?;
        }
        tokio::spawn(follow(
            history,
            live,
            from_revision,
            tx,
            map,
            self.store.clone(),
            snapshot,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A stream of watch updates.
type UpdateStream<U> = Pin<Box<dyn Stream<Item = Result<U, Status>> + Send>>;
type EventStream = UpdateStream<pb::Event>;
type AuthorizationStream = UpdateStream<pb::AuthorizationUpdate>;
type PlacementStream = UpdateStream<pb::PlacementUpdate>;

fn field_address<T: std::str::FromStr>(field: &'static str, text: &str) -> Result<T, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(bounded(format!("{field}: {text:?} is not valid"))))
}

#[tonic::async_trait]
impl Controller for Service {
    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        self.allow(&request, "CreatePool", Access::Operator).await?;
        let id = request_id(&request, "CreatePool")?;
        let r = request.into_inner();
        let change = self.store.create_pool_translating(
            &r.name,
            &r.prefix,
            r.tenant_length,
            &r.translation_prefix,
        );
        if let Made::Now(pool) = self.once(id, change).await? {
            tracing::info!(pool = %pool.name, prefix = %pool.prefix, tenant_length = pool.tenant_length, "pool created");
        }
        Ok(Response::new(self.pool(&r.name).await?))
    }

    async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        self.allow(&request, "GetPool", Access::Operator).await?;
        let freshness = self.freshness().await;
        Ok(freshness.answer(self.pool(&request.into_inner().name).await?))
    }

    async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        self.allow(&request, "ListPools", Access::Operator).await?;
        let freshness = self.freshness().await;
        let mut pools = Vec::new();
        for name in self.store.pool_names().await {
            // A pool deleted meanwhile is simply not listed.
            if let Ok(pool) = self.pool(&name).await {
                pools.push(pool);
            }
        }
        Ok(freshness.answer(pb::ListPoolsResponse { pools }))
    }

    async fn delete_pool(
        &self,
        request: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolResponse>, Status> {
        self.allow(&request, "DeletePool", Access::Operator).await?;
        let id = request_id(&request, "DeletePool")?;
        let name = request.into_inner().name;
        if let Made::Now(()) = self.once(id, self.store.delete_pool(&name)).await? {
            tracing::info!(pool = %name, "pool deleted");
        }
        Ok(Response::new(pb::DeletePoolResponse {}))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.allow(&request, "CreateTenant", Access::Operator)
            .await?;
        let id = request_id(&request, "CreateTenant")?;
        let name = request.into_inner().name;
        if let Made::Now(tenant) = self.once(id, self.store.create_tenant(&name)).await? {
            tracing::info!(tenant = %tenant.name, "tenant created");
        }
        Ok(Response::new(self.tenant(&name).await?))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.allow(&request, "GetTenant", Access::Operator).await?;
        let freshness = self.freshness().await;
        Ok(freshness.answer(self.tenant(&request.into_inner().name).await?))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.allow(&request, "ListTenants", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        let mut tenants = Vec::new();
        for name in self.store.tenant_names().await {
            if let Ok(tenant) = self.tenant(&name).await {
                tenants.push(tenant);
            }
        }
        Ok(freshness.answer(pb::ListTenantsResponse { tenants }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        self.allow(&request, "DeleteTenant", Access::Operator)
            .await?;
        let id = request_id(&request, "DeleteTenant")?;
        let r = request.into_inner();
        match self
            .once(id, self.store.delete_tenant(&r.name, r.cascade))
            .await?
        {
            Made::Now(released) => {
                tracing::info!(tenant = %r.name, released = released.len(), "tenant deleted");
                Ok(Response::new(pb::DeleteTenantResponse {
                    released: released.iter().map(ToString::to_string).collect(),
                }))
            }
            // The change's event does not list what a cascade released.
            Made::Earlier(event) => Err(StoreError::AlreadyMade {
                revision: event.revision,
            }
            .into()),
        }
    }

    async fn allocate_prefix(
        &self,
        request: Request<pb::AllocatePrefixRequest>,
    ) -> Result<Response<pb::Allocation>, Status> {
        self.allow(&request, "AllocatePrefix", Access::Operator)
            .await?;
        let id = request_id(&request, "AllocatePrefix")?;
        let r = request.into_inner();
        let made = if r.prefix.is_empty() {
            self.once(id, self.store.allocate(&r.tenant, &r.pool, r.length))
                .await?
        } else {
            if r.prefix.len() > 64 {
                return Err(Status::invalid_argument(
                    "prefix: longer than any IPv6 prefix",
                ));
            }
            let wanted: Option<ipnet::Ipv6Net> = r.prefix.parse().ok();
            if r.length != 0 && wanted.is_some_and(|p| u32::from(p.prefix_len()) != r.length) {
                return Err(Status::invalid_argument(
                    "length: with prefix, 0 or the prefix's own length",
                ));
            }
            self.once(id, self.store.allocate_exact(&r.tenant, &r.pool, &r.prefix))
                .await?
        };
        if let Made::Now(allocated) = &made {
            tracing::info!(tenant = %allocated.tenant, prefix = %allocated.prefix, "prefix allocated");
        }
        let allocated = made.answer(|change| match change {
            StoreChange::PrefixAllocated(allocated) => Some(allocated),
            _ => None,
        })?;
        Ok(Response::new(allocation(&allocated)))
    }

    async fn release_prefix(
        &self,
        request: Request<pb::ReleasePrefixRequest>,
    ) -> Result<Response<pb::ReleasePrefixResponse>, Status> {
        self.allow(&request, "ReleasePrefix", Access::Operator)
            .await?;
        let id = request_id(&request, "ReleasePrefix")?;
        let prefix = request.into_inner().prefix;
        let made = self.once(id, self.store.release(&prefix)).await?;
        if let Made::Now(released) = &made {
            tracing::info!(tenant = %released.tenant, prefix = %released.prefix, "prefix released");
        }
        let released = made.answer(|change| match change {
            StoreChange::PrefixReleased { allocation, .. } => Some(allocation),
            _ => None,
        })?;
        Ok(Response::new(pb::ReleasePrefixResponse {
            released: Some(allocation(&released)),
        }))
    }

    async fn list_prefixes(
        &self,
        request: Request<pb::ListPrefixesRequest>,
    ) -> Result<Response<pb::ListPrefixesResponse>, Status> {
        self.allow(&request, "ListPrefixes", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        let tenant = request.into_inner().tenant;
        let tenant = (!tenant.is_empty()).then_some(tenant);
        let allocations = self.store.allocations(tenant.as_deref()).await?;
        Ok(freshness.answer(pb::ListPrefixesResponse {
            allocations: allocations.iter().map(allocation).collect(),
        }))
    }

    async fn allocate_ipv4(
        &self,
        request: Request<pb::AllocateIpv4Request>,
    ) -> Result<Response<pb::Ipv4Mapping>, Status> {
        self.allocate_ipv4_mapping(request).await
    }

    async fn release_ipv4(
        &self,
        request: Request<pb::ReleaseIpv4Request>,
    ) -> Result<Response<pb::ReleaseIpv4Response>, Status> {
        self.release_ipv4_mapping(request).await
    }

    async fn list_ipv4_mappings(
        &self,
        request: Request<pb::ListIpv4MappingsRequest>,
    ) -> Result<Response<pb::ListIpv4MappingsResponse>, Status> {
        self.list_ipv4(request).await
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let credential = self
            .allow(&request, "WatchEvents", Access::Operator)
            .await?;
        let request = request.into_inner();
        let from = request.from_revision;
        let (history, live, through) = self.store.events_through(from).await?;
        resumable(&history, from, through)?;
        // Revoked between the check and the subscription: the live stream
        // would not carry it.
        if let Some(id) = &credential {
            if !self.store.credential_exists(id).await {
                return Err(callers::revoked(id));
            }
        }
        let mut last = history.last().map_or(from, |e| e.revision);
        let history: Vec<Result<pb::Event, Status>> =
            history.iter().map(|e| Ok(event(e))).collect();
        if request.history_only {
            return Ok(Response::new(Box::pin(tokio_stream::iter(history))));
        }
        // The live stream starts exactly after the history (the store held
        // its lock between the two); skip anything not newer, to be sure.
        let live = BroadcastStream::new(live).filter_map(move |item| match item {
            // The watcher's credential revoked: the stream ends with that
            // (tonic ends a response stream at its first error).
            Ok(e) if callers::revokes(&e.change, credential.as_deref()) => Some(Err(
                callers::revoked(credential.as_deref().unwrap_or_default()),
            )),
            // The first live change follows the history, or the watcher's
            // revision when the history after it is empty.
            Ok(e) if last > 0 && e.revision > last + 1 => Some(Err(missed(last, e.revision))),
            Ok(e) if e.revision > last => {
                last = e.revision;
                Some(Ok(event(&e)))
            }
            Ok(_) => None,
            Err(_) => Some(Err(Status::resource_exhausted(
                "watcher fell behind and missed changes; watch again from the last revision seen",
            ))),
        });
        Ok(Response::new(Box::pin(
            tokio_stream::iter(history).chain(live),
        )))
    }
    async fn register_home_agent(
        &self,
        request: Request<pb::RegisterHomeAgentRequest>,
    ) -> Result<Response<pb::HomeAgent>, Status> {
        self.allow(&request, "RegisterHomeAgent", Access::Operator)
            .await?;
        let id = request_id(&request, "RegisterHomeAgent")?;
        let h = request
            .into_inner()
            .home_agent
            .ok_or_else(|| Status::invalid_argument("home_agent: missing"))?;
        let change = self.store.register_home_agent(store::HomeAgentRecord {
            name: h.name,
            address: field_address("home_agent.address", &h.address)?,
            home_prefix: field_address("home_agent.home_prefix", &h.home_prefix)?,
            udp_endpoint: h.udp_endpoint,
        });
        let made = self.once(id, change).await?;
        if let Made::Now(registered) = &made {
            tracing::info!(home_agent = %registered.name, "home agent registered");
        }
        let registered = made.answer(|change| match change {
            StoreChange::HomeAgentRegistered(registered) => Some(registered),
            _ => None,
        })?;
        Ok(Response::new(home_agent_proto(&registered)))
    }

    async fn list_home_agents(
        &self,
        request: Request<pb::ListHomeAgentsRequest>,
    ) -> Result<Response<pb::ListHomeAgentsResponse>, Status> {
        self.allow(&request, "ListHomeAgents", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        Ok(freshness.answer(pb::ListHomeAgentsResponse {
            home_agents: self
                .store
                .home_agents()
                .await
                .iter()
                .map(home_agent_proto)
                .collect(),
        }))
    }

    async fn register_hypervisor(
        &self,
        request: Request<pb::RegisterHypervisorRequest>,
    ) -> Result<Response<pb::Hypervisor>, Status> {
        self.allow(
            &request,
            "RegisterHypervisor",
            Access::Hypervisor(&request.get_ref().name),
        )
        .await?;
        let id = request_id(&request, "RegisterHypervisor")?;
        let name = request.into_inner().name;
        self.once(id, self.store.register_hypervisor(&name)).await?;
        Ok(Response::new(pb::Hypervisor { name }))
    }

    async fn list_hypervisors(
        &self,
        request: Request<pb::ListHypervisorsRequest>,
    ) -> Result<Response<pb::ListHypervisorsResponse>, Status> {
        self.allow(&request, "ListHypervisors", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        Ok(freshness.answer(pb::ListHypervisorsResponse {
            hypervisors: self
                .store
                .hypervisors()
                .await
                .into_iter()
                .map(|h| pb::Hypervisor { name: h.name })
                .collect(),
        }))
    }

    async fn create_mobile_router(
        &self,
        request: Request<pb::CreateMobileRouterRequest>,
    ) -> Result<Response<pb::MobileRouter>, Status> {
        self.allow(&request, "CreateMobileRouter", Access::Operator)
            .await?;
        let id = request_id(&request, "CreateMobileRouter")?;
        let r = request.into_inner();
        let algorithm = match r.algorithm.as_str() {
            "" => Algorithm::default(),
            name => name.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "algorithm: {name:?} is not hmac-sha256 or hmac-sha1-96"
                ))
            })?,
        };
        let change =
            self.store
                .create_mobile_router(&r.tenant, &r.home_agent, algorithm, r.explicit_mode);
        let mr = match self.once(id, change).await? {
            Made::Now(mr) => {
                tracing::info!(tenant = %mr.tenant, home_address = %mr.home_address, spi = mr.spi, "mobile router created");
                mr
            }
            // The identity as it is now, key included, as the first call
            // answered it.
            Made::Earlier(_) => self.store.mobile_router(&r.tenant, true).await?,
        };
        let prefixes = self.store.tenant_view(&mr.tenant).await.prefixes;
        Ok(Response::new(mobile_router_proto(&mr, &prefixes)))
    }

    async fn get_mobile_router(
        &self,
        request: Request<pb::GetMobileRouterRequest>,
    ) -> Result<Response<pb::MobileRouter>, Status> {
        self.allow(&request, "GetMobileRouter", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        let tenant = request.into_inner().tenant;
        let mr = self.store.mobile_router(&tenant, false).await?;
        let prefixes = self.store.tenant_view(&tenant).await.prefixes;
        Ok(freshness.answer(mobile_router_proto(&mr, &prefixes)))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::MobileRouter>, Status> {
        self.allow(&request, "RotateKey", Access::Operator).await?;
        let id = request_id(&request, "RotateKey")?;
        let tenant = request.into_inner().tenant;
        let mr = match self.once(id, self.store.rotate_key(&tenant)).await? {
            Made::Now(mr) => {
                tracing::info!(%tenant, "key rotated");
                mr
            }
            Made::Earlier(_) => self.store.mobile_router(&tenant, true).await?,
        };
        let prefixes = self.store.tenant_view(&tenant).await.prefixes;
        Ok(Response::new(mobile_router_proto(&mr, &prefixes)))
    }

    async fn delete_mobile_router(
        &self,
        request: Request<pb::DeleteMobileRouterRequest>,
    ) -> Result<Response<pb::DeleteMobileRouterResponse>, Status> {
        self.allow(&request, "DeleteMobileRouter", Access::Operator)
            .await?;
        let id = request_id(&request, "DeleteMobileRouter")?;
        let tenant = request.into_inner().tenant;
        self.once(id, self.store.delete_mobile_router(&tenant))
            .await?;
        Ok(Response::new(pb::DeleteMobileRouterResponse {}))
    }

    async fn place_tenant(
        &self,
        request: Request<pb::PlaceTenantRequest>,
    ) -> Result<Response<pb::Placement>, Status> {
        self.allow(&request, "PlaceTenant", Access::Operator)
            .await?;
        let id = request_id(&request, "PlaceTenant")?;
        let r = request.into_inner();
        let delivery = convert::delivery_from_proto(r.delivery)?;
        let made = self
            .once(
                id,
                self.store
                    .place(&r.tenant, &r.hypervisor, &r.reason, delivery),
            )
            .await?;
        if let Made::Now(placement) = &made {
            tracing::info!(tenant = %placement.tenant, hypervisor = %placement.hypervisor, reason = %placement.reason, "tenant placed");
        }
        let placement = made.answer(|change| match change {
            StoreChange::TenantPlaced { placement, .. } => Some(placement),
            _ => None,
        })?;
        Ok(Response::new(placement_proto(&placement)))
    }

    async fn report_arrival(
        &self,
        request: Request<pb::ReportArrivalRequest>,
    ) -> Result<Response<pb::Placement>, Status> {
        self.report_arrival_call(request).await
    }

    async fn unplace_tenant(
        &self,
        request: Request<pb::UnplaceTenantRequest>,
    ) -> Result<Response<pb::UnplaceTenantResponse>, Status> {
        self.allow(&request, "UnplaceTenant", Access::Operator)
            .await?;
        let id = request_id(&request, "UnplaceTenant")?;
        let r = request.into_inner();
        self.once(id, self.store.unplace(&r.tenant, &r.reason))
            .await?;
        Ok(Response::new(pb::UnplaceTenantResponse {}))
    }

    async fn list_placements(
        &self,
        request: Request<pb::ListPlacementsRequest>,
    ) -> Result<Response<pb::ListPlacementsResponse>, Status> {
        self.allow(&request, "ListPlacements", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        Ok(freshness.answer(pb::ListPlacementsResponse {
            placements: self
                .store
                .placements()
                .await
                .iter()
                .map(placement_proto)
                .collect(),
        }))
    }

    type WatchAuthorizationsStream = AuthorizationStream;

    async fn watch_authorizations(
        &self,
        request: Request<pb::WatchAuthorizationsRequest>,
    ) -> Result<Response<AuthorizationStream>, Status> {
        let credential = self
            .allow(
                &request,
                "WatchAuthorizations",
                Access::HomeAgent(&request.get_ref().home_agent),
            )
            .await?;
        // A stale replica still serves the daemons (they resume elsewhere
        // or catch up as it does).
        self.freshness().await;
        let r = request.into_inner();
        if !self
            .store
            .home_agents()
            .await
            .iter()
            .any(|h| h.name == r.home_agent)
        {
            return Err(StoreError::NotFound {
                what: "home agent",
                name: r.home_agent,
            }
            .into());
        }
        let home_agent = r.home_agent.clone();
        self.watch(
            r.from_revision,
            credential,
            move |store, revision, change| {
                let home_agent = home_agent.clone();
                Box::pin(async move {
                    authorization_updates(&store, &home_agent, revision, &change).await
                })
            },
            {
                let home_agent = r.home_agent.clone();
                move |store: Arc<Store>, revision: u64| {
                    let home_agent = home_agent.clone();
                    Box::pin(async move {
                        let mut updates = Vec::new();
                        for tenant in store.tenants_of(Some(&home_agent), None).await {
                            if let Ok(m) = store.mobile_router(&tenant, false).await {
                                updates.extend(
                                    authorization_updates(
                                        &store,
                                        &home_agent,
                                        revision,
                                        &StoreChange::MobileRouterCreated(m),
                                    )
                                    .await,
                                );
                            }
                        }
                        updates.push(pb::AuthorizationUpdate {
                            revision,
                            snapshot_end: true,
                            ..Default::default()
                        });
                        updates
                    })
                }
            },
        )
        .await
    }

    async fn report_binding(
        &self,
        request: Request<pb::ReportBindingRequest>,
    ) -> Result<Response<pb::ReportBindingResponse>, Status> {
        self.allow(
            &request,
            "ReportBinding",
            Access::HomeAgent(&request.get_ref().home_agent),
        )
        .await?;
        let id = request_id(&request, "ReportBinding")?;
        let r = request.into_inner();
        let change = StoreChange::BindingReported {
            home_agent: r.home_agent,
            home_address: field_address("home_address", &r.home_address)?,
            care_of: field_address("care_of_address", &r.care_of_address)?,
            outer: match r.outer_address.as_str() {
                "" => None,
                text => Some(field_address("outer_address", text)?),
            },
            prefixes: r
                .prefixes
                .iter()
                .map(|p| field_address("prefixes", p))
                .collect::<Result<_, _>>()?,
            removed: r.removed,
            reason: r.reason,
            sequence: Some(u16::try_from(r.sequence).map_err(|_| {
                Status::invalid_argument(format!(
                    "sequence: {} is not a sequence number (0-65535)",
                    r.sequence
                ))
            })?),
        };
        let revision = match self.once(id, self.store.report_binding(change)).await? {
            Made::Now(revision) => revision,
            Made::Earlier(event) => event.revision,
        };
        Ok(Response::new(pb::ReportBindingResponse { revision }))
    }

    async fn issue_credential(
        &self,
        request: Request<pb::IssueCredentialRequest>,
    ) -> Result<Response<pb::IssuedCredential>, Status> {
        self.allow(&request, "IssueCredential", Access::Operator)
            .await?;
        let id = request_id(&request, "IssueCredential")?;
        let r = request.into_inner();
        let principal = store::credentials::Principal::from_role(&r.role, &r.name)?;
        match self
            .once(id, self.store.issue_credential(principal))
            .await?
        {
            Made::Now((credential, token)) => {
                tracing::info!(id = %credential.id, principal = %credential.principal, "credential issued");
                Ok(Response::new(pb::IssuedCredential {
                    credential: Some(credential_proto(&credential)),
                    token,
                }))
            }
            // The token is kept nowhere: the first call's answer cannot be
            // given again (revoke that credential, issue another).
            Made::Earlier(event) => Err(StoreError::AlreadyMade {
                revision: event.revision,
            }
            .into()),
        }
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        self.allow(&request, "ListCredentials", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        Ok(freshness.answer(pb::ListCredentialsResponse {
            credentials: self
                .store
                .credentials()
                .await
                .iter()
                .map(credential_proto)
                .collect(),
        }))
    }

    async fn revoke_credential(
        &self,
        request: Request<pb::RevokeCredentialRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        self.allow(&request, "RevokeCredential", Access::Operator)
            .await?;
        let id = request_id(&request, "RevokeCredential")?;
        let r = request.into_inner();
        let revoked = self
            .once(id, self.store.revoke_credential(&r.id))
            .await?
            .answer(|change| match change {
                StoreChange::CredentialRevoked(credential) => Some(credential),
                _ => None,
            })?;
        tracing::info!(id = %revoked.id, principal = %revoked.principal, "credential revoked");
        Ok(Response::new(credential_proto(&revoked)))
    }

    type WatchPlacementsStream = PlacementStream;

    async fn watch_placements(
        &self,
        request: Request<pb::WatchPlacementsRequest>,
    ) -> Result<Response<PlacementStream>, Status> {
        let credential = self
            .allow(
                &request,
                "WatchPlacements",
                Access::Hypervisor(&request.get_ref().hypervisor),
            )
            .await?;
        // A stale replica still serves the daemons (they resume elsewhere
        // or catch up as it does).
        self.freshness().await;
        let r = request.into_inner();
        if !self
            .store
            .hypervisors()
            .await
            .iter()
            .any(|h| h.name == r.hypervisor)
        {
            return Err(StoreError::NotFound {
                what: "hypervisor",
                name: r.hypervisor,
            }
            .into());
        }
        let hypervisor = r.hypervisor.clone();
        self.watch(
            r.from_revision,
            credential,
            move |store, revision, change| {
                let hypervisor = hypervisor.clone();
                Box::pin(
                    async move { placement_updates(&store, &hypervisor, revision, &change).await },
                )
            },
            {
                let hypervisor = r.hypervisor.clone();
                move |store: Arc<Store>, revision: u64| {
                    let hypervisor = hypervisor.clone();
                    Box::pin(async move {
                        let mut updates = Vec::new();
                        for tenant in store.tenants_of(None, Some(&hypervisor)).await {
                            updates.push(
                                placement_update(&store, &hypervisor, revision, &tenant).await,
                            );
                        }
                        updates.push(pb::PlacementUpdate {
                            revision,
                            snapshot_end: true,
                            ..Default::default()
                        });
                        updates
                    })
                }
            },
        )
        .await
    }
}

/// A server over TLS with a PEM certificate chain and key (`pem`); fails
/// here, not at the first connection, when they do not parse or match.
pub fn tls(pem: (Vec<u8>, Vec<u8>)) -> Result<tonic::transport::Server, tonic::transport::Error> {
    tonic::transport::Server::builder().tls_config(
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(pem.0, pem.1)),
    )
}

/// Largest request a client may send (the biggest real one, a binding
/// report with its prefixes, is a few hundred octets).
pub const MAX_REQUEST: usize = 64 * 1024;

/// The controller's API behind its token check, for
/// `nemo_daemon::serving::Servers::grpc` (which adds health and
/// reflection); `tls`: a server configured for TLS.
pub fn api(
    store: Arc<Store>,
    token: Option<String>,
    tls: Option<tonic::transport::Server>,
    metrics: Arc<crate::metrics::Metrics>,
    arrivals: Arrivals,
) -> GrpcApi {
    GrpcApi {
        routes: tonic::service::Routes::new(crate::metrics::Measured::new(
            tonic::service::interceptor::InterceptedService::new(
                ControllerServer::new(Service::new(store).with_arrivals(arrivals))
                    .max_decoding_message_size(MAX_REQUEST),
                CallerCheck::new(token),
            ),
            metrics,
        )),
        name: <ControllerServer<Service> as tonic::server::NamedService>::NAME,
        server: tls.unwrap_or_else(tonic::transport::Server::builder),
    }
}
