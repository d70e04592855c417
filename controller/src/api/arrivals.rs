//! Arrivals: a hypervisor's mobile-router daemon saw a placed tenant's VM
//! announce itself on its port (QEMU's RARP after a live migration, or the
//! guest's first frame) and says so; with `arrivals = "follow"` the tenant
//! is placed there, so that a migration nobody reported (a plain `virsh
//! migrate`) still moves the tenant's network (issue 29).
//!
//! Three kinds of report (`ArrivalKind`): the VM announced itself there
//! (it runs there); QEMU attached its port there (a live migration to it
//! started: the tenant is placed there on the VM's announcement, so that
//! the home agent copies its traffic to both sites before the VM pauses,
//! with no orchestrator hook); the port lost its carrier before the VM
//! announced itself (the migration ended there: back where it came from).
//! While a tenant awaits its VM's announcement on one hypervisor, the VM's
//! frames on another (it still runs at its source) move nothing: the
//! answer is the placement as it is (elsewhere, awaiting the announcement
//! there), and the reporter reports again later.
//!
//! It is a trust decision: a hypervisor's credential can then move any
//! placed tenant to itself, which without it only an operator can. Off by
//! default.

use serde::Deserialize;
use tonic::{Request, Response, Status};

use super::callers::Access;
use super::{placement_proto, request_id, Made, Service};
use crate::store::{Placing, StoreChange};
use nemo_proto::v1 as pb;

/// Whether a hypervisor's report of an arrival places the tenant there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Refused: only an operator's placement moves a tenant.
    #[default]
    Refuse,
    /// A placed tenant moves to the hypervisor that saw its VM.
    Follow,
}

/// Most octets of a report's evidence (it goes into the history).
const MAX_EVIDENCE: usize = 200;

impl Service {
    /// `ReportArrival`.
    pub(super) async fn report_arrival_call(
        &self,
        request: Request<pb::ReportArrivalRequest>,
    ) -> Result<Response<pb::Placement>, Status> {
        let hypervisor = request.get_ref().hypervisor.clone();
        self.allow(&request, "ReportArrival", Access::Hypervisor(&hypervisor))
            .await?;
        let id = request_id(&request, "ReportArrival")?;
        let r = request.into_inner();
        if self.arrivals == Arrivals::Refuse {
            return Err(Status::failed_precondition(format!(
                "arrivals: this controller does not follow arrivals (arrivals = \"refuse\"); \
                 tenant {:?} stays where it is placed",
                r.tenant
            )));
        }
        if r.evidence.len() > MAX_EVIDENCE {
            return Err(Status::invalid_argument(format!(
                "evidence: {} octets; at most {MAX_EVIDENCE}",
                r.evidence.len()
            )));
        }
        if r.evidence.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "evidence: control characters are not allowed",
            ));
        }
        let (placing, what) = match pb::ArrivalKind::try_from(r.kind) {
            Ok(pb::ArrivalKind::ArrivalAnnounced) => (Placing::Announced, "arrival"),
            Ok(pb::ArrivalKind::ArrivalIncoming) => (Placing::Incoming, "incoming migration"),
            Ok(pb::ArrivalKind::ArrivalAbandoned) => (Placing::Abandoned, "migration abandoned"),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "kind: {} is no ArrivalKind",
                    r.kind
                )))
            }
        };
        let reason = format!("{what}: {}", r.evidence);
        let made = self
            .once(
                id,
                self.store
                    .place_as(&r.tenant, &hypervisor, &reason, placing),
            )
            .await?;
        if let Made::Now(placement) = &made {
            tracing::info!(tenant = %placement.tenant, %hypervisor, reason = %placement.reason, "tenant placed on its arrival");
        }
        let placement = made.answer(|change| match change {
            StoreChange::TenantPlaced { placement, .. } => Some(placement),
            _ => None,
        })?;
        Ok(Response::new(placement_proto(&placement)))
    }
}
