//! What the home agent's tests share.

use std::time::SystemTime;

use nemo::ha::{AuthorizationTable, BindingCache, Outcome, Processed, Received};
use nemo::wire::MobilityHeader;

/// A binding cache whose forwarding always works: processes a message and,
/// for an accepted change, concludes it as installed, as
/// `HomeAgent::forwarded` does once the data plane has it.
pub trait AnswerAtOnce {
    /// The one answer to `header`.
    fn answer_now(
        &mut self,
        received: Received<'_>,
        header: &MobilityHeader,
        now: SystemTime,
        authorizations: &AuthorizationTable,
    ) -> Outcome;
}

impl AnswerAtOnce for BindingCache {
    fn answer_now(
        &mut self,
        received: Received<'_>,
        header: &MobilityHeader,
        now: SystemTime,
        authorizations: &AuthorizationTable,
    ) -> Outcome {
        match self.process(received, header, now, authorizations) {
            Processed::Accepted(accepted) => self.conclude(accepted, Ok(()), now),
            Processed::Answered(outcome) => outcome,
        }
    }
}
