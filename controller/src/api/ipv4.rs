//! The API's IPv4 mappings: allocating, releasing and listing them (the
//! store's `mappings`), kept out of the service's main file.

use nemo_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::callers::Access;
use super::convert::ipv4_mapping_proto;
use super::requests::{request_id, Made};
use super::Service;
use crate::store::{Ipv4Wanted, StoreChange, MAX_ADDRESS_TEXT};

impl Service {
    pub(super) async fn allocate_ipv4_mapping(
        &self,
        request: Request<pb::AllocateIpv4Request>,
    ) -> Result<Response<pb::Ipv4Mapping>, Status> {
        self.allow(&request, "AllocateIpv4", Access::Operator)
            .await?;
        let id = request_id(&request, "AllocateIpv4")?;
        let r = request.into_inner();
        for (field, text) in [("ipv4", &r.ipv4), ("ipv6", &r.ipv6)] {
            if text.len() > MAX_ADDRESS_TEXT {
                return Err(Status::invalid_argument(format!(
                    "{field}: {} octets, longer than any address or prefix",
                    text.len()
                )));
            }
        }
        let wanted = Ipv4Wanted::parse(&r.ipv4, r.length)?;
        let made = self
            .once(
                id,
                self.store
                    .allocate_ipv4(&r.tenant, &r.pool, wanted, &r.ipv6),
            )
            .await?;
        if let Made::Now(mapping) = &made {
            tracing::info!(tenant = %mapping.tenant, ipv4 = %mapping.ipv4, ipv6 = %mapping.ipv6, "ipv4 mapped");
        }
        let mapping = made.answer(|change| match change {
            StoreChange::Ipv4Mapped(mapping) => Some(mapping),
            _ => None,
        })?;
        let translation_prefix = self.store.translation_prefix(&mapping).await;
        Ok(Response::new(ipv4_mapping_proto(&(
            mapping,
            translation_prefix,
        ))))
    }

    pub(super) async fn release_ipv4_mapping(
        &self,
        request: Request<pb::ReleaseIpv4Request>,
    ) -> Result<Response<pb::ReleaseIpv4Response>, Status> {
        self.allow(&request, "ReleaseIpv4", Access::Operator)
            .await?;
        let id = request_id(&request, "ReleaseIpv4")?;
        let ipv4 = request.into_inner().ipv4;
        if ipv4.len() > MAX_ADDRESS_TEXT {
            return Err(Status::invalid_argument(
                "ipv4: longer than any IPv4 address or prefix",
            ));
        }
        let made = self.once(id, self.store.release_ipv4(&ipv4)).await?;
        if let Made::Now(released) = &made {
            tracing::info!(tenant = %released.tenant, ipv4 = %released.ipv4, "ipv4 released");
        }
        let released = made.answer(|change| match change {
            StoreChange::Ipv4Released { mapping, .. } => Some(mapping),
            _ => None,
        })?;
        let translation_prefix = self.store.translation_prefix(&released).await;
        Ok(Response::new(pb::ReleaseIpv4Response {
            released: Some(ipv4_mapping_proto(&(released, translation_prefix))),
        }))
    }

    pub(super) async fn list_ipv4(
        &self,
        request: Request<pb::ListIpv4MappingsRequest>,
    ) -> Result<Response<pb::ListIpv4MappingsResponse>, Status> {
        self.allow(&request, "ListIpv4Mappings", Access::Operator)
            .await?;
        let freshness = self.freshness().await;
        let tenant = request.into_inner().tenant;
        let tenant = (!tenant.is_empty()).then_some(tenant);
        let mappings = self.store.ipv4_mappings(tenant.as_deref()).await?;
        Ok(freshness.answer(pb::ListIpv4MappingsResponse {
            mappings: mappings.iter().map(ipv4_mapping_proto).collect(),
        }))
    }
}
