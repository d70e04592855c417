//! The store's values as the API's messages, and its errors as gRPC
//! statuses whose messages are bounded.

use nemo_proto::v1 as pb;
use tonic::Status;

use crate::store;
use crate::store::StoreError;

/// Longest error message a client gets: messages quote the input they
/// refuse, and a client's 4 MiB field must not come back to it (or to a
/// log) whole.
pub(super) const MAX_MESSAGE: usize = 512;

/// `message`, cut to [`MAX_MESSAGE`] octets at a character boundary.
pub(super) fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        let message = bounded(error.to_string());
        match error {
            StoreError::Invalid { .. } => Status::invalid_argument(message),
            StoreError::NotFound { .. } => Status::not_found(message),
            StoreError::Exists { .. } => Status::already_exists(message),
            StoreError::Precondition(_) => Status::failed_precondition(message),
            StoreError::Exhausted { .. } => Status::resource_exhausted(message),
            StoreError::Storage(_) => Status::internal(message),
            StoreError::Unavailable(_) => Status::unavailable(message),
            // gRPC's UNKNOWN: not UNAVAILABLE, which a client may retry
            // blindly (gRPC's status code guide).
            StoreError::OutcomeUnknown(_) => Status::unknown(message),
            // Answered from the first call where the API knows how; a
            // call that does not is told plainly.
            StoreError::AlreadyMade { .. } => Status::already_exists(message),
            StoreError::Conflict { .. } => Status::aborted(message),
        }
    }
}

pub(super) fn allocation(a: &store::Allocation) -> pb::Allocation {
    pb::Allocation {
        prefix: a.prefix.to_string(),
        tenant: a.tenant.clone(),
        pool: a.pool.clone(),
        allocated_at_unix_ms: a.allocated_at_unix_ms,
        revision: a.revision,
    }
}

/// A mapping and its pool's translation prefix.
pub(super) fn ipv4_mapping_proto(
    (m, translation_prefix): &(store::Ipv4Mapping, ipnet::Ipv6Net),
) -> pb::Ipv4Mapping {
    pb::Ipv4Mapping {
        ipv4: m.ipv4.to_string(),
        ipv6: m.ipv6.to_string(),
        tenant: m.tenant.clone(),
        pool: m.pool.clone(),
        translation_prefix: translation_prefix.to_string(),
        allocated_at_unix_ms: m.allocated_at_unix_ms,
        revision: m.revision,
    }
}

pub(super) fn event(e: &store::Event) -> pb::Event {
    pb::Event {
        revision: e.revision,
        at_unix_ms: e.at_unix_ms,
        kind: e.change.kind().to_owned(),
        subject: e.change.subject(),
        // Keys never enter the history: mobile routers are logged redacted.
        detail_json: serde_json::to_string(&e.change).unwrap_or_default(),
        request_id: e
            .request
            .as_ref()
            .map(|r| r.id().to_owned())
            .unwrap_or_default(),
    }
}

pub(super) fn home_agent_proto(h: &store::HomeAgentRecord) -> pb::HomeAgent {
    pb::HomeAgent {
        name: h.name.clone(),
        address: h.address.to_string(),
        home_prefix: h.home_prefix.to_string(),
        udp_endpoint: h.udp_endpoint.clone(),
    }
}

pub(super) fn mobile_router_proto(
    m: &store::MobileRouter,
    prefixes: &[ipnet::Ipv6Net],
) -> pb::MobileRouter {
    pb::MobileRouter {
        tenant: m.tenant.clone(),
        home_agent: m.home_agent.clone(),
        home_address: m.home_address.to_string(),
        spi: m.spi,
        algorithm: m.algorithm.name().to_owned(),
        key: m.key.clone(),
        explicit_mode: m.explicit_mode,
        prefixes: prefixes.iter().map(ToString::to_string).collect(),
    }
}

pub(super) fn placement_proto(p: &store::Placement) -> pb::Placement {
    pb::Placement {
        tenant: p.tenant.clone(),
        hypervisor: p.hypervisor.clone(),
        since_unix_ms: p.since_unix_ms,
        reason: p.reason.clone(),
        delivery: delivery_proto(p.delivery).into(),
    }
}

pub(super) fn delivery_proto(delivery: store::Delivery) -> pb::Delivery {
    match delivery {
        store::Delivery::Now => pb::Delivery::Now,
        store::Delivery::OnAnnouncement => pb::Delivery::OnAnnouncement,
    }
}

/// A request's `delivery`; a value the enum does not hold is
/// INVALID_ARGUMENT naming the field.
pub(super) fn delivery_from_proto(value: i32) -> Result<store::Delivery, tonic::Status> {
    match pb::Delivery::try_from(value) {
        Ok(pb::Delivery::Now) => Ok(store::Delivery::Now),
        Ok(pb::Delivery::OnAnnouncement) => Ok(store::Delivery::OnAnnouncement),
        Err(_) => Err(tonic::Status::invalid_argument(format!(
            "delivery: {value} is not a Delivery (0 now, 1 on announcement)"
        ))),
    }
}

pub(super) fn credential_proto(c: &store::credentials::Credential) -> pb::Credential {
    pb::Credential {
        id: c.id.clone(),
        role: c.principal.role().to_owned(),
        name: c.principal.name().to_owned(),
        issued_unix_ms: c.issued_unix_ms,
    }
}
