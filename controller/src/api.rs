//! The controller's gRPC service (`nemo.v1.Controller`), the bearer-token
//! check, and the server with health and reflection.

use std::pin::Pin;
use std::sync::Arc;

use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_server::{Controller, ControllerServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{BroadcastStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::store::{self, Change, Store, StoreError};

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        let message = error.to_string();
        match error {
            StoreError::Invalid { .. } => Status::invalid_argument(message),
            StoreError::NotFound { .. } => Status::not_found(message),
            StoreError::Exists { .. } => Status::already_exists(message),
            StoreError::Precondition(_) => Status::failed_precondition(message),
            StoreError::Exhausted { .. } => Status::resource_exhausted(message),
            StoreError::Storage(_) => Status::internal(message),
        }
    }
}

fn allocation(a: &store::Allocation) -> pb::Allocation {
    pb::Allocation {
        prefix: a.prefix.to_string(),
        tenant: a.tenant.clone(),
        pool: a.pool.clone(),
        allocated_at_unix_ms: a.allocated_at_unix_ms,
        revision: a.revision,
    }
}

fn event(e: &store::Event) -> pb::Event {
    let detail = match &e.change {
        Change::PoolCreated(pool) | Change::PoolDeleted(pool) => serde_json::to_string(pool),
        Change::TenantCreated(tenant) | Change::TenantDeleted(tenant) => {
            serde_json::to_string(tenant)
        }
        Change::PrefixAllocated(a) => serde_json::to_string(a),
        change @ Change::PrefixReleased { .. } => serde_json::to_string(change),
    };
    pb::Event {
        revision: e.revision,
        at_unix_ms: e.at_unix_ms,
        kind: e.change.kind().to_owned(),
        subject: e.change.subject(),
        detail_json: detail.unwrap_or_default(),
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Service {
    store: Arc<Store>,
}

impl Service {
    /// A service over a store.
    pub fn new(store: Arc<Store>) -> Service {
        Service { store }
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
        })
    }

    async fn tenant(&self, name: &str) -> Result<pb::Tenant, Status> {
        let (tenant, prefixes) = self.store.tenant(name).await?;
        Ok(pb::Tenant {
            name: tenant.name,
            prefixes: prefixes.iter().map(ToString::to_string).collect(),
            created_at_unix_ms: tenant.created_at_unix_ms,
        })
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Controller for Service {
    async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let r = request.into_inner();
        let pool = self
            .store
            .create_pool(&r.name, &r.prefix, r.tenant_length)
            .await?;
        tracing::info!(pool = %pool.name, prefix = %pool.prefix, tenant_length = pool.tenant_length, "pool created");
        Ok(Response::new(self.pool(&pool.name).await?))
    }

    async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        Ok(Response::new(self.pool(&request.into_inner().name).await?))
    }

    async fn list_pools(
        &self,
        _request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let mut pools = Vec::new();
        for name in self.store.pool_names().await {
            // A pool deleted meanwhile is simply not listed.
            if let Ok(pool) = self.pool(&name).await {
                pools.push(pool);
            }
        }
        Ok(Response::new(pb::ListPoolsResponse { pools }))
    }

    async fn delete_pool(
        &self,
        request: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolResponse>, Status> {
        let name = request.into_inner().name;
        self.store.delete_pool(&name).await?;
        tracing::info!(pool = %name, "pool deleted");
        Ok(Response::new(pb::DeletePoolResponse {}))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let tenant = self.store.create_tenant(&request.into_inner().name).await?;
        tracing::info!(tenant = %tenant.name, "tenant created");
        Ok(Response::new(self.tenant(&tenant.name).await?))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Ok(Response::new(
            self.tenant(&request.into_inner().name).await?,
        ))
    }

    async fn list_tenants(
        &self,
        _request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let mut tenants = Vec::new();
        for name in self.store.tenant_names().await {
            if let Ok(tenant) = self.tenant(&name).await {
                tenants.push(tenant);
            }
        }
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let r = request.into_inner();
        let released = self.store.delete_tenant(&r.name, r.cascade).await?;
        tracing::info!(tenant = %r.name, released = released.len(), "tenant deleted");
        Ok(Response::new(pb::DeleteTenantResponse {
            released: released.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn allocate_prefix(
        &self,
        request: Request<pb::AllocatePrefixRequest>,
    ) -> Result<Response<pb::Allocation>, Status> {
        let r = request.into_inner();
        let allocated = self.store.allocate(&r.tenant, &r.pool, r.length).await?;
        tracing::info!(tenant = %allocated.tenant, prefix = %allocated.prefix, "prefix allocated");
        Ok(Response::new(allocation(&allocated)))
    }

    async fn release_prefix(
        &self,
        request: Request<pb::ReleasePrefixRequest>,
    ) -> Result<Response<pb::ReleasePrefixResponse>, Status> {
        let released = self.store.release(&request.into_inner().prefix).await?;
        tracing::info!(tenant = %released.tenant, prefix = %released.prefix, "prefix released");
        Ok(Response::new(pb::ReleasePrefixResponse {
            released: Some(allocation(&released)),
        }))
    }

    async fn list_prefixes(
        &self,
        request: Request<pb::ListPrefixesRequest>,
    ) -> Result<Response<pb::ListPrefixesResponse>, Status> {
        let tenant = request.into_inner().tenant;
        let tenant = (!tenant.is_empty()).then_some(tenant);
        let allocations = self.store.allocations(tenant.as_deref()).await?;
        Ok(Response::new(pb::ListPrefixesResponse {
            allocations: allocations.iter().map(allocation).collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let from = request.into_inner().from_revision;
        let (history, live) = self.store.events_after(from).await?;
        let last = history.last().map_or(from, |e| e.revision);
        let history: Vec<Result<pb::Event, Status>> =
            history.iter().map(|e| Ok(event(e))).collect();
        // The live stream starts exactly after the history (the store held
        // its lock between the two); skip anything not newer, to be sure.
        let live = BroadcastStream::new(live).filter_map(move |item| match item {
            Ok(e) if e.revision > last => Some(Ok(event(&e))),
            Ok(_) => None,
            Err(_) => Some(Err(Status::resource_exhausted(
                "watcher fell behind and missed changes; watch again from the last revision seen",
            ))),
        });
        Ok(Response::new(Box::pin(
            tokio_stream::iter(history).chain(live),
        )))
    }
}

/// Checks the bearer token on every call (RFC 6750 form, in the
/// `authorization` metadata). `None` disables the check (lab use only).
#[derive(Debug, Clone)]
pub struct TokenCheck {
    expected: Option<Arc<String>>,
}

impl TokenCheck {
    /// A check for `token`, or none.
    pub fn new(token: Option<String>) -> TokenCheck {
        TokenCheck {
            expected: token.map(Arc::new),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("authorization: wrong token")),
            None => Err(Status::unauthenticated(
                "authorization: missing \"Bearer <token>\" metadata",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the controller API (behind the token check), health and
/// reflection on a bound listener.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ControllerServer<Service>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nemo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    tracing::info!(listen = %listener.local_addr()?, "controller gRPC listening");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(ControllerServer::with_interceptor(
            Service::new(store),
            TokenCheck::new(token),
        ))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
