//! The home agent as one entry point: bytes and time in, actions out.
//!
//! [`HomeAgent::handle`] takes a received IPv6 packet carrying a Mobility
//! Header (as the native transport reads it, or as a UDP datagram carries
//! it), how it arrived (in UDP over IPv4 it has an IPv4 care-of address,
//! RFC 5555), the path its answer leaves by, and the time. It parses, checks the
//! checksum (RFC 6275 §6.1.1), decodes, decides through the
//! [`BindingCache`], frames the answer, and says what to do:
//! a [`Decision`]. A registration that changes the cache comes back as a
//! [`Forward`]: the driver sets up the forwarding of its [`Change`] and
//! reports the result to [`HomeAgent::forwarded`], which answers with the
//! acknowledgement, or with 141 after undoing the change when the
//! forwarding failed (RFC 3963 §6.2). The driver then makes the change
//! durable and only then sends the acknowledgement.
//!
//! The path type `P` is the driver's: whatever it needs to send an answer
//! back the way the message came (a socket and a peer, a raw socket). The
//! engine keeps the last one per binding for Binding Refresh Requests.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{
    merge::Merged, Accepted, Arrival, Authorization, AuthorizationError, AuthorizationTable,
    Binding, BindingCache, CareOf, Change, DropReason, HomeAgentConfig, Outcome, Processed,
    Received, Reply,
};
use crate::wire::{
    build_packet, parse_packet, BaStatus, BeStatus, DecodeError, MobilityHeader, PacketRepr,
    Type2RoutingHeader,
};

/// Hop limit of the packets a home agent sends.
const HOP_LIMIT: u8 = 64;

/// A packet to send and the path it leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    /// The whole IPv6 packet, checksum filled in.
    pub packet: Vec<u8>,
    /// Where it goes: the path of the message it answers.
    pub path: P,
}

/// Why a received packet is not a Mobility Header message at all; dropped
/// and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// It does not parse, or its Mobility Header does not decode.
    Decode(DecodeError),
    /// The Mobility Header checksum is wrong (RFC 6275 §6.1.1).
    Checksum,
}

impl Malformed {
    /// Every name [`Malformed::reason`] gives, for counters exported at
    /// zero from the start.
    pub const REASONS: [&'static str; 9] = [
        "truncated",
        "trailing_bytes",
        "length_mismatch",
        "message_too_short",
        "option_overrun",
        "bad_option_length",
        "not_mobility",
        "bad_extension_header",
        "checksum",
    ];

    /// A short name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::Decode(error) => error.reason(),
            Malformed::Checksum => "checksum",
        }
    }
}

/// An answer to a Binding Update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement<P> {
    /// The Binding Acknowledgement, framed.
    pub transmit: Transmit<P>,
    /// Its status.
    pub status: BaStatus,
    /// The home address it answers for.
    pub home_address: Ipv6Addr,
    /// The care-of address it goes to.
    pub care_of: CareOf,
    /// The cache change, already in memory and in forwarding: to make
    /// durable before `transmit` leaves.
    pub change: Option<Change>,
}

/// An accepted change waiting for its forwarding: set up
/// [`Forward::change`], then report to [`HomeAgent::forwarded`], which
/// builds the one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a Forward must be reported to HomeAgent::forwarded, or its change stays unanswered"]
pub struct Forward<P> {
    accepted: Accepted,
    /// The path the answer leaves by.
    path: P,
    /// The address the Binding Update was sent to.
    local: Ipv6Addr,
}

impl<P> Forward<P> {
    /// The change whose forwarding must be set up.
    pub fn change(&self) -> &Change {
        self.accepted.change()
    }
}

/// How setting up the forwarding of a change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// The kernel has it.
    Installed,
    /// It could not be set up, for this reason.
    Failed(ForwardingFailure),
}

/// Why forwarding could not be set up: each has its own answer, so that
/// the mobile router (and its operator) learn what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardingFailure {
    /// The kernel refused forwarding to one of the prefixes: RFC 3963 §6.2
    /// "fails to set up forwarding to all the prefixes ... 141 (Invalid
    /// Prefix)".
    PrefixRefused,
    /// The data plane has no room left (a map full, the kernel out of
    /// memory): RFC 6275 §6.1.8, 130 Insufficient resources.
    NoResources,
    /// The data plane does not work at all (its backend gone from under
    /// the daemon): nothing about this registration; RFC 6275 §6.1.8, 128
    /// Reason unspecified.
    Unavailable,
}

impl ForwardingFailure {
    /// The Binding Acknowledgement status that says so.
    pub fn status(self) -> BaStatus {
        match self {
            ForwardingFailure::PrefixRefused => BaStatus::INVALID_PREFIX,
            ForwardingFailure::NoResources => BaStatus::INSUFFICIENT_RESOURCES,
            ForwardingFailure::Unavailable => BaStatus::REASON_UNSPECIFIED,
        }
    }
}

/// What [`HomeAgent::handle`] decided.
// Returned once per packet and consumed at once, never stored.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision<P> {
    /// Set up forwarding for a change, then report to
    /// [`HomeAgent::forwarded`].
    Forward(Forward<P>),
    /// Nothing to set up: do this.
    Handled(Handled<P>),
}

/// What to do with a received packet, finally.
// Returned once per packet and consumed at once, never stored.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled<P> {
    /// Not a Mobility Header message: count the reason, drop it.
    Malformed(Malformed),
    /// A message dropped without an answer (RFC 6275 §9.5.1, RFC 4285
    /// §5.1.1): count the reason.
    Dropped {
        /// Why.
        reason: DropReason,
        /// The packet's source, for the log.
        source: Ipv6Addr,
    },
    /// Send a Binding Error; nothing changed.
    BindingError {
        /// The Binding Error, framed.
        transmit: Transmit<P>,
        /// Its status.
        status: BeStatus,
    },
    /// Make the change (if any) durable, then send the acknowledgement.
    Acknowledge(Acknowledgement<P>),
}

/// The work a timer brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts<P> {
    /// Binding Refresh Requests to send (RFC 6275 §9.5.5).
    pub refresh_requests: Vec<Transmit<P>>,
    /// Bindings expired (RFC 6275 §10.3.1): remove their forwarding and
    /// make the removal durable.
    pub expired: Vec<Change>,
}

/// A home agent: the binding cache, the authorizations it works from, and
/// the way back to each mobile router.
#[derive(Debug)]
pub struct HomeAgent<P> {
    cache: BindingCache,
    authorizations: AuthorizationTable,
    /// Where each binding was last acknowledged from and by which path, for
    /// its Binding Refresh Requests; kept only when they are configured (a
    /// path per binding is about 150 octets at a million).
    last_path: HashMap<Ipv6Addr, (P, Ipv6Addr)>,
}

impl<P: Clone> HomeAgent<P> {
    /// A home agent with an empty cache.
    pub fn new(config: HomeAgentConfig, authorizations: AuthorizationTable) -> HomeAgent<P> {
        HomeAgent {
            cache: BindingCache::new(config),
            authorizations,
            last_path: HashMap::new(),
        }
    }

    /// A home agent with a cache already loaded (a restart loads the
    /// cache and the authorizations side by side).
    pub fn with_cache(cache: BindingCache, authorizations: AuthorizationTable) -> HomeAgent<P> {
        HomeAgent {
            cache,
            authorizations,
            last_path: HashMap::new(),
        }
    }

    /// Loads stored bindings at start-up; returns those expired at `now`,
    /// whose removal must be made durable (and forwarding removed).
    pub fn load(
        &mut self,
        bindings: impl IntoIterator<Item = impl Into<Arc<Binding>>>,
        now: SystemTime,
    ) -> Vec<Arc<Binding>> {
        self.cache.load(bindings, now)
    }

    /// Applies a change the active member of a pair replicated to this
    /// standby.
    pub fn apply(&mut self, change: &Change) {
        if let Change::Remove { binding } = change {
            self.last_path.remove(&binding.home_address);
        }
        self.cache.apply(change);
    }

    /// Replaces the whole cache with the active member's (a standby's
    /// resynchronisation); returns the bindings already expired at `now`.
    pub fn replace(&mut self, bindings: Vec<Arc<Binding>>, now: SystemTime) -> Vec<Arc<Binding>> {
        self.cache = BindingCache::new(self.cache.config().clone());
        self.last_path.clear();
        self.cache.load(bindings, now)
    }

    /// Takes the bindings the other member of a pair offers where they are
    /// newer than this member's (both were active: see [`super::merge`]);
    /// `in_step_until` is when this member was last in step with a standby.
    pub fn merge(
        &mut self,
        offered: Vec<Binding>,
        in_step_until: SystemTime,
        now: SystemTime,
    ) -> Merged {
        self.cache
            .merge(offered, &self.authorizations, in_step_until, now)
    }

    /// Undoes a merged change whose forwarding could not be set up.
    pub fn revert(&mut self, change: &Change) {
        self.cache.revert(change);
    }

    /// The binding cache.
    pub fn cache(&self) -> &BindingCache {
        &self.cache
    }

    /// The authorization of a home address.
    pub fn authorization(&self, home_address: Ipv6Addr) -> Option<&Authorization> {
        self.authorizations.get(home_address)
    }

    /// Adds or replaces the authorization of a home address.
    pub fn authorize(&mut self, authorization: Authorization) -> Result<(), AuthorizationError> {
        self.authorizations.insert(authorization)
    }

    /// Withdraws the authorization of a home address. Its binding stays
    /// until it expires or deregisters (its next Binding Update is dropped
    /// for want of a security association); [`HomeAgent::remove`] ends it
    /// at once.
    pub fn revoke(&mut self, home_address: Ipv6Addr) -> Option<Authorization> {
        self.authorizations.remove(home_address)
    }

    /// Handles a received IPv6 packet carrying a Mobility Header, arrived
    /// as `arrival` says; its answer, if any, leaves by `path` from the
    /// address it was sent to.
    pub fn handle(
        &mut self,
        packet: &[u8],
        arrival: Arrival,
        path: P,
        now: SystemTime,
    ) -> Decision<P> {
        let malformed = |malformed| Decision::Handled(Handled::Malformed(malformed));
        let parsed = match parse_packet(packet) {
            Ok(parsed) => parsed,
            Err(error) => return malformed(Malformed::Decode(error)),
        };
        if !parsed.checksum_ok() {
            return malformed(Malformed::Checksum);
        }
        let header = match MobilityHeader::decode(parsed.mh) {
            Ok(header) => header,
            Err(error) => return malformed(Malformed::Decode(error)),
        };
        let received = Received {
            mh: parsed.mh,
            source: parsed.repr.source,
            home_address: parsed.repr.home_address_option.map(|hao| hao.home_address),
            arrival,
        };
        // The answer leaves from the address the message was sent to.
        let local = parsed.repr.destination;
        match self
            .cache
            .process(received, &header, now, &self.authorizations)
        {
            Processed::Accepted(accepted) => Decision::Forward(Forward {
                accepted,
                path,
                local,
            }),
            Processed::Answered(outcome) => {
                Decision::Handled(self.outcome(outcome, path, local, received.source))
            }
        }
    }

    /// Takes the result of setting up a [`Forward`]'s change: the
    /// acknowledgement to make durable and send, or, when the forwarding
    /// failed, the change undone and the failure's status to send instead
    /// ([`ForwardingFailure::status`]).
    pub fn forwarded(
        &mut self,
        forward: Forward<P>,
        forwarding: Forwarding,
        now: SystemTime,
    ) -> Handled<P> {
        let Forward {
            accepted,
            path,
            local,
        } = forward;
        let source = accepted.care_of.authenticated();
        let result = match forwarding {
            Forwarding::Installed => {
                let home_address = accepted.change().binding().home_address;
                match accepted.change() {
                    Change::Upsert { .. }
                        if self.cache.config().refresh_request_before.is_some() =>
                    {
                        self.last_path.insert(home_address, (path.clone(), local));
                    }
                    Change::Upsert { .. } => {}
                    Change::Remove { .. } => {
                        self.last_path.remove(&home_address);
                    }
                }
                Ok(())
            }
            Forwarding::Failed(failure) => Err(failure.status()),
        };
        let outcome = self.cache.conclude(accepted, result, now);
        self.outcome(outcome, path, local, source)
    }

    /// The next time [`HomeAgent::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.cache.poll_timeout()
    }

    /// Binding Refresh Requests due and bindings expired at `now`.
    pub fn handle_timeout(&mut self, now: SystemTime) -> Timeouts<P> {
        let refresh_requests = self
            .cache
            .refresh_requests(now, &self.authorizations)
            .into_iter()
            .filter_map(|reply| {
                let (path, local) = self.last_path.get(&reply.home_address)?.clone();
                Some(Transmit {
                    packet: frame(&reply, local, Addressing::ViaType2RoutingHeader),
                    path,
                })
            })
            .collect();
        let expired = self.cache.expire(now);
        for change in &expired {
            self.last_path.remove(&change.binding().home_address);
        }
        Timeouts {
            refresh_requests,
            expired,
        }
    }

    /// Removes a binding at an operator's request: remove its forwarding and
    /// make the removal durable.
    pub fn remove(&mut self, home_address: Ipv6Addr) -> Option<Change> {
        self.last_path.remove(&home_address);
        self.cache.remove(home_address)
    }

    fn answer(
        &self,
        reply: Reply,
        status: BaStatus,
        change: Option<Change>,
        path: P,
        local: Ipv6Addr,
    ) -> Acknowledgement<P> {
        Acknowledgement {
            transmit: Transmit {
                packet: frame(&reply, local, Addressing::ViaType2RoutingHeader),
                path,
            },
            status,
            home_address: reply.home_address,
            care_of: reply.care_of,
            change,
        }
    }

    fn outcome(&self, outcome: Outcome, path: P, local: Ipv6Addr, source: Ipv6Addr) -> Handled<P> {
        match outcome {
            Outcome::Drop(reason) => Handled::Dropped { reason, source },
            Outcome::BindingError { reply, status } => Handled::BindingError {
                transmit: Transmit {
                    packet: frame(&reply, local, Addressing::Plain),
                    path,
                },
                status,
            },
            Outcome::Acknowledge {
                reply,
                status,
                change,
            } => Handled::Acknowledge(self.answer(reply, status, change, path, local)),
        }
    }
}

/// Where a reply goes inside its packet (RFC 6275 §6.4, §9.5.4): a Binding
/// Acknowledgement or Refresh Request carries the home address in a type 2
/// routing header; a Binding Error goes plainly to the packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// To the care-of address, with the home address in a type 2 routing
    /// header.
    ViaType2RoutingHeader,
    /// To the source only.
    Plain,
}

/// Frames a reply as an IPv6 packet from `local`. To an IPv4 care-of
/// address it goes to the home address itself, with no routing header
/// (RFC 5555 §4.2, §4.5: "the home agent includes the mobile node's IPv6
/// home address in the destination address field"); the driver sends it
/// in UDP over IPv4 by the path of the message it answers.
fn frame(reply: &Reply, local: Ipv6Addr, addressing: Addressing) -> Vec<u8> {
    let (destination, type2_routing) = match reply.care_of.ipv6() {
        Some(care_of) => (
            care_of,
            (addressing == Addressing::ViaType2RoutingHeader).then_some(Type2RoutingHeader {
                home_address: reply.home_address,
            }),
        ),
        None => (reply.home_address, None),
    };
    let repr = PacketRepr {
        source: local,
        destination,
        hop_limit: HOP_LIMIT,
        type2_routing,
        home_address_option: None,
    };
    build_packet(&repr, &reply.mh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DecodeError;

    #[test]
    fn every_malformed_reason_is_listed() {
        let every = [
            Malformed::Checksum,
            Malformed::Decode(DecodeError::Truncated {
                what: "x",
                needed: 1,
                available: 0,
            }),
            Malformed::Decode(DecodeError::TrailingBytes {
                declared: 1,
                extra: 1,
            }),
            Malformed::Decode(DecodeError::LengthMismatch {
                declared: 1,
                available: 0,
            }),
            Malformed::Decode(DecodeError::MessageTooShort {
                message: "x",
                needed: 1,
                declared: 0,
            }),
            Malformed::Decode(DecodeError::OptionOverrun {
                option_type: 1,
                offset: 0,
            }),
            Malformed::Decode(DecodeError::BadOptionLength {
                option: "x",
                length: 0,
                expected: "1",
            }),
            Malformed::Decode(DecodeError::NotMobility("x")),
            Malformed::Decode(DecodeError::BadExtensionHeader {
                header: "x",
                reason: "y",
            }),
        ];
        let named: std::collections::BTreeSet<&str> = every.iter().map(Malformed::reason).collect();
        let listed: std::collections::BTreeSet<&str> = Malformed::REASONS.into_iter().collect();
        assert_eq!(named, listed);
    }
}
