//! `ha-loadgen controller`: a stand-in for `nemo-controller` that serves
//! only what a home agent asks of it, at a million mobile routers: the
//! authorizations `ha-loadgen config` would write as `[[mobile_router]]`
//! tables (same home addresses, SPIs, keys and prefixes), streamed as
//! `WatchAuthorizations` (a snapshot from revision 0, then nothing new),
//! and every `ReportBinding` accepted. It measures the home agent's
//! controller path (start to serving, memory) without a controller that
//! holds a million tenants itself; every other call is UNIMPLEMENTED.

use std::net::SocketAddr;
use std::pin::Pin;

use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_server::{Controller, ControllerServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{hex, home, key, prefix, spi};

/// The stand-in's state: how many routers it authorizes.
struct StandIn {
    routers: u32,
}

type Updates = Pin<Box<dyn Stream<Item = Result<pb::AuthorizationUpdate, Status>> + Send>>;
type Never<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn update(n: u32) -> pb::AuthorizationUpdate {
    pb::AuthorizationUpdate {
        revision: u64::from(n) + 1,
        home_address: home(n).to_string(),
        mobile_router: Some(pb::MobileRouter {
            tenant: format!("t{n}"),
            home_agent: "ha1".into(),
            home_address: home(n).to_string(),
            spi: spi(n),
            algorithm: "hmac-sha256".into(),
            key: hex(&key(n)),
            explicit_mode: false,
            prefixes: vec![prefix(n).to_string()],
        }),
        snapshot_end: false,
        ipv4_mappings: Vec::new(),
    }
}

/// Serves until the process is stopped.
pub async fn serve(listen: SocketAddr, routers: u32) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // The ready line, as the daemons print theirs.
    println!(
        "ha-loadgen controller ready grpc={}",
        listener.local_addr()?
    );
    tonic::transport::Server::builder()
        .add_service(ControllerServer::new(StandIn { routers }).max_decoding_message_size(1 << 20))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// The `Controller` impl: the calls a home agent makes, written out; every
/// other call UNIMPLEMENTED (the attribute must see them expanded, so the
/// macro writes the whole impl).
macro_rules! stand_in {
    ({ $($written:tt)* } $($call:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl Controller for StandIn {
            $($written)*
            $(
                async fn $call(&self, _: Request<pb::$request>) -> Result<Response<pb::$response>, Status> {
                    Err(Status::unimplemented(concat!("the stand-in controller does not ", stringify!($call))))
                }
            )*
        }
    };
}

stand_in! {
    {
        type WatchEventsStream = Never<pb::Event>;
        type WatchAuthorizationsStream = Updates;
        type WatchPlacementsStream = Never<pb::PlacementUpdate>;

        async fn watch_authorizations(
            &self,
            request: Request<pb::WatchAuthorizationsRequest>,
        ) -> Result<Response<Updates>, Status> {
            let from = request.get_ref().from_revision;
            let routers = self.routers;
            // Revision n+1 authorizes router n; a watch from r gets what
            // follows r, a watch from 0 the snapshot and its end.
            let first = u32::try_from(from).unwrap_or(u32::MAX).min(routers);
            let updates = (first..routers).map(|n| Ok(update(n)));
            let end = (from == 0).then(|| {
                Ok(pb::AuthorizationUpdate {
                    revision: u64::from(routers),
                    snapshot_end: true,
                    ..Default::default()
                })
            });
            let stream = tokio_stream::StreamExt::chain(
                tokio_stream::iter(updates.chain(end)),
                tokio_stream::pending(),
            );
            Ok(Response::new(Box::pin(stream)))
        }

        async fn report_binding(
            &self,
            _: Request<pb::ReportBindingRequest>,
        ) -> Result<Response<pb::ReportBindingResponse>, Status> {
            Ok(Response::new(pb::ReportBindingResponse::default()))
        }

        async fn watch_events(
            &self,
            _: Request<pb::WatchEventsRequest>,
        ) -> Result<Response<Self::WatchEventsStream>, Status> {
            Err(Status::unimplemented("the stand-in controller does not watch_events"))
        }

        async fn watch_placements(
            &self,
            _: Request<pb::WatchPlacementsRequest>,
        ) -> Result<Response<Self::WatchPlacementsStream>, Status> {
            Err(Status::unimplemented("the stand-in controller does not watch_placements"))
        }
    }
    create_pool(CreatePoolRequest) -> Pool;
    allocate_ipv4(AllocateIpv4Request) -> Ipv4Mapping;
    release_ipv4(ReleaseIpv4Request) -> ReleaseIpv4Response;
    list_ipv4_mappings(ListIpv4MappingsRequest) -> ListIpv4MappingsResponse;
    get_pool(GetPoolRequest) -> Pool;
    list_pools(ListPoolsRequest) -> ListPoolsResponse;
    delete_pool(DeletePoolRequest) -> DeletePoolResponse;
    create_tenant(CreateTenantRequest) -> Tenant;
    get_tenant(GetTenantRequest) -> Tenant;
    list_tenants(ListTenantsRequest) -> ListTenantsResponse;
    delete_tenant(DeleteTenantRequest) -> DeleteTenantResponse;
    allocate_prefix(AllocatePrefixRequest) -> Allocation;
    release_prefix(ReleasePrefixRequest) -> ReleasePrefixResponse;
    list_prefixes(ListPrefixesRequest) -> ListPrefixesResponse;
    register_home_agent(RegisterHomeAgentRequest) -> HomeAgent;
    list_home_agents(ListHomeAgentsRequest) -> ListHomeAgentsResponse;
    register_hypervisor(RegisterHypervisorRequest) -> Hypervisor;
    list_hypervisors(ListHypervisorsRequest) -> ListHypervisorsResponse;
    create_mobile_router(CreateMobileRouterRequest) -> MobileRouter;
    get_mobile_router(GetMobileRouterRequest) -> MobileRouter;
    rotate_key(RotateKeyRequest) -> MobileRouter;
    delete_mobile_router(DeleteMobileRouterRequest) -> DeleteMobileRouterResponse;
    place_tenant(PlaceTenantRequest) -> Placement;
    report_arrival(ReportArrivalRequest) -> Placement;
    unplace_tenant(UnplaceTenantRequest) -> UnplaceTenantResponse;
    list_placements(ListPlacementsRequest) -> ListPlacementsResponse;
    issue_credential(IssueCredentialRequest) -> IssuedCredential;
    list_credentials(ListCredentialsRequest) -> ListCredentialsResponse;
    revoke_credential(RevokeCredentialRequest) -> Credential;
}
