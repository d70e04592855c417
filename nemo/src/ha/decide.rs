//! The decision on one Binding Update, and its one answer, sans-IO.
//!
//! [`BindingCache::process`] takes a decoded Mobility Header (checksum
//! already verified), the time and the authorization table, and returns
//! what to do: drop it silently (and count why), answer at once (a Binding
//! Error, or a Binding Acknowledgement that refuses it), or an accepted
//! change, unanswered ([`Processed::Accepted`]). It follows RFC 6275
//! §9.5.1 and §10.3, RFC 3963 §6 and RFC 4285. Drivers do not call it
//! directly: [`super::HomeAgent`] wraps it with the parsing, the framing
//! and the forwarding round trip.
//!
//! The cache applies an accepted change in memory at once, so the next
//! Binding Update sees it; once the forwarding is known,
//! [`BindingCache::conclude`] builds the acknowledgement (which leaves only
//! after the change is durable), or undoes the change and answers the
//! failure when the forwarding could not be set up.
//!
//! Order of checks, each with its RFC:
//! 1. home address unicast routable, care-of address unicast routable
//!    (RFC 6275 §9.5.1, §6.1.7; an IPv4 one from the IPv4 Care-of Address
//!    option of a Binding Update in UDP over IPv4, NAT detected there,
//!    RFC 5555 §4.2: [`super::dsmip`]): else drop;
//! 2. MN-HA authentication option present and SPI known (RFC 4285 §5,
//!    §5.1.1): else drop; authenticator valid: else 146; the SPI's home
//!    address is the one claimed: else 133;
//! 3. H set (RFC 3963 §6.2: R without H is 140; neither is a correspondent
//!    registration, which a home agent does not take: 131); P clear (a
//!    proxy registration, RFC 5213, is not served here: 131); an IPv4
//!    care-of address only where the home agent takes them (RFC 5555;
//!    else 129, Administratively prohibited);
//! 4. home address in a served home prefix (RFC 6275 §10.3.1): else 132;
//! 5. timestamp (RFC 4285 §6): 145 missing, 144 stale or replayed;
//! 6. sequence number newer than the cached one (RFC 6275 §9.5.1): else 135
//!    with the last accepted number;
//! 7. deregistration (lifetime 0 or care-of = home, RFC 3963 §6.2, §6.7);
//! 8. R changed against a live binding (RFC 3963 §6.2): 139;
//! 9. R set but not allowed for this home address (RFC 3963 §6.6): 140;
//! 10. prefixes: explicit mode checks each (141 invalid, 142 not
//!     authorized or bound to another home address), implicit mode takes
//!     the configured ones (143 when none) (RFC 3963 §6.2);
//! 11. lifetime clamped to the configured maximum (RFC 6275 §10.3.1).
//!
//! An answer to a Binding Update that came in UDP over IPv4 carries a NAT
//! Detection option, and one to a Binding Update with IPv4 Home Address
//! options an IPv4 Address Acknowledgement for each (RFC 5555 §4.2, §4.5).

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::Ipv6Net;

use super::cache::{Binding, BindingCache, Change, MAX_DELETE_BCE_TIMEOUT};
use super::care_of::{Arrival, CareOf, Ipv4CareOfs};
use super::dsmip;
use super::{overlaps, Authorization, AuthorizationTable};
use crate::auth::{self, ReplayError, SecurityAssociation};
use crate::wire::{
    BaFlags, BaStatus, BeStatus, BindingAck, BindingError, BindingRefreshRequest, BindingUpdate,
    Ipv4HomeAddress, Lifetime, Message, MobilityHeader, MobilityOption, NtpTimestamp,
    SequenceNumber,
};

/// Why a Binding Update was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a Binding Update; nothing to answer (a BA or BE sent to us).
    NotForHomeAgent,
    /// Payload Proto is not 59 (RFC 6275 §9.2).
    PayloadProto,
    /// The home address is not unicast routable (RFC 6275 §9.5.1).
    BadHomeAddress,
    /// The care-of address is not unicast routable (RFC 6275 §6.1.7).
    BadCareOfAddress,
    /// No MN-HA authentication option (RFC 4285 §5).
    NoAuthentication,
    /// An SPI with no security association here (RFC 4285 §5.1.1).
    UnknownSpi,
    /// The authentication option is malformed or not last.
    MalformedAuthentication,
}

impl DropReason {
    /// Every reason, for counters exported at zero from the start.
    pub const ALL: [DropReason; 7] = [
        DropReason::NotForHomeAgent,
        DropReason::PayloadProto,
        DropReason::BadHomeAddress,
        DropReason::BadCareOfAddress,
        DropReason::NoAuthentication,
        DropReason::UnknownSpi,
        DropReason::MalformedAuthentication,
    ];

    /// A short name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotForHomeAgent => "not_for_home_agent",
            DropReason::PayloadProto => "payload_proto",
            DropReason::BadHomeAddress => "bad_home_address",
            DropReason::BadCareOfAddress => "bad_care_of_address",
            DropReason::NoAuthentication => "no_authentication",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::MalformedAuthentication => "malformed_authentication",
        }
    }
}

/// A message for the driver to send: an encoded Mobility Header (checksum
/// zero; the transport fills it) and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The Mobility Header bytes, signed where an association exists.
    pub mh: Vec<u8>,
    /// The care-of address to send to: an IPv6 one is the packet's
    /// destination; to an IPv4 one the packet goes to the home address
    /// (RFC 5555 §4.5) in UDP over IPv4, by the path of the message.
    pub care_of: CareOf,
    /// The home address (type 2 routing header on the native transport).
    pub home_address: Ipv6Addr,
}

/// What to do with a received Mobility Header.
// Returned once per message and consumed at once, never stored: the size
// difference between variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Drop it, counting why.
    Drop(DropReason),
    /// Answer with a Binding Acknowledgement, after making `change` durable
    /// and applying it to forwarding when there is one.
    Acknowledge {
        /// The Binding Acknowledgement.
        reply: Reply,
        /// Its status.
        status: BaStatus,
        /// The cache change, applied in memory already.
        change: Option<Change>,
    },
    /// Answer with a Binding Error (RFC 6275 §9.2).
    BindingError {
        /// The Binding Error.
        reply: Reply,
        /// Its status.
        status: BeStatus,
    },
}

/// A received Mobility Header as the transport delivers it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The Mobility Header bytes (checksum already verified).
    pub mh: &'a [u8],
    /// The source address of the packet (the care-of address unless an
    /// Alternate Care-of Address option says otherwise).
    pub source: Ipv6Addr,
    /// The home address from the Home Address option, or, on the UDP
    /// transport, the inner packet's source; `None` takes `source`
    /// (RFC 6275 §9.5.1).
    pub home_address: Option<Ipv6Addr>,
    /// How it arrived: in UDP over IPv4 it has an IPv4 care-of address
    /// (RFC 5555 §4.2).
    pub arrival: Arrival,
}

/// An accepted Binding Update whose answer waits for its forwarding: the
/// change (applied in memory already) and what its one acknowledgement
/// needs, built by [`BindingCache::conclude`] once the outcome is known.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an accepted change must be concluded: forwarded and answered, or undone"]
pub struct Accepted {
    pub(super) change: Change,
    /// The R flag the acknowledgement echoes (RFC 3963 §6.2; clear for a
    /// deregistration).
    mobile_router: bool,
    sequence: SequenceNumber,
    /// Where the answer goes.
    pub(super) care_of: CareOf,
    home_address: Ipv6Addr,
    timestamp: Option<NtpTimestamp>,
    /// The IPv4 Home Address options, each acknowledged.
    ipv4_home_addresses: Vec<Ipv4HomeAddress>,
    /// Owned: the answer is signed after the forwarding is set up, when the
    /// table's borrow is long gone.
    sa: SecurityAssociation,
}

impl Accepted {
    /// The change whose forwarding must be set up.
    pub fn change(&self) -> &Change {
        &self.change
    }
}

/// What [`BindingCache::process`] made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Processed {
    /// Accepted, changing the cache: set up the change's forwarding, then
    /// [`BindingCache::conclude`] answers.
    Accepted(Accepted),
    /// Answered (or dropped) at once; nothing changed.
    Answered(Outcome),
}

/// True for an address a binding may use: unicast and routable, not
/// link-local, multicast, or in ::/8 (RFC 4291 §2.4: reserved; it holds
/// the unspecified and loopback addresses, IPv4-mapped ones, which never
/// appear on an IPv6 wire, and the form the BPF maps give IPv4 peers).
pub fn is_unicast_routable(address: Ipv6Addr) -> bool {
    !(address.octets()[0] == 0 || address.is_multicast() || address.is_unicast_link_local())
}

/// Why a Mobile Network Prefix is invalid (status 141), or `None`.
pub fn invalid_prefix_reason(net: &Ipv6Net, home_prefixes: &[Ipv6Net]) -> Option<&'static str> {
    let address = net.network();
    if net.prefix_len() == 0 {
        return Some("zero length");
    }
    if address.is_multicast() {
        return Some("multicast");
    }
    if address.is_unicast_link_local() {
        return Some("link-local");
    }
    if address.is_loopback() || address.is_unspecified() {
        return Some("loopback or unspecified");
    }
    if address.to_ipv4_mapped().is_some() {
        return Some("IPv4-mapped");
    }
    if home_prefixes.iter().any(|home| overlaps(home, net)) {
        return Some("overlaps a home prefix");
    }
    None
}

/// The NTP timestamp of a wall-clock time.
pub fn ntp_time(time: SystemTime) -> NtpTimestamp {
    NtpTimestamp::from_unix(time.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// The options of a Binding Update that the checks need.
struct BuOptions {
    prefixes: Vec<crate::wire::MobileNetworkPrefix>,
    alternate_care_of: Option<Ipv6Addr>,
    ipv4_care_of: Option<std::net::Ipv4Addr>,
    ipv4_home_addresses: Vec<Ipv4HomeAddress>,
    timestamp: Option<NtpTimestamp>,
}

impl BuOptions {
    fn of(bu: &BindingUpdate) -> BuOptions {
        let mut options = BuOptions {
            prefixes: Vec::new(),
            alternate_care_of: None,
            ipv4_care_of: None,
            ipv4_home_addresses: Vec::new(),
            timestamp: None,
        };
        for option in &bu.options {
            match option {
                MobilityOption::MobileNetworkPrefix(prefix) => options.prefixes.push(*prefix),
                MobilityOption::AlternateCareOfAddress(address) => {
                    options.alternate_care_of = Some(*address);
                }
                MobilityOption::Ipv4CareOfAddress(address) => {
                    options.ipv4_care_of = Some(*address);
                }
                MobilityOption::Ipv4HomeAddress(request) => {
                    options.ipv4_home_addresses.push(*request);
                }
                MobilityOption::ReplayProtection(timestamp) => options.timestamp = Some(*timestamp),
                _ => {}
            }
        }
        options
    }
}

/// What an answer needs besides the status.
struct AnswerContext<'a> {
    /// The Binding Update's sequence number, echoed by a rejection.
    sequence: SequenceNumber,
    care_of: CareOf,
    home_address: Ipv6Addr,
    sa: &'a SecurityAssociation,
    timestamp: Option<NtpTimestamp>,
    ipv4_home_addresses: Vec<Ipv4HomeAddress>,
}

impl AnswerContext<'_> {
    /// The change accepted, kept with what its answer will need.
    fn accepted(&self, change: Change, mobile_router: bool) -> Accepted {
        Accepted {
            change,
            mobile_router,
            sequence: self.sequence,
            care_of: self.care_of,
            home_address: self.home_address,
            timestamp: self.timestamp,
            ipv4_home_addresses: self.ipv4_home_addresses.clone(),
            sa: self.sa.clone(),
        }
    }
}

impl BindingCache {
    /// Binding Refresh Requests due at `now` (RFC 6275 §9.5.5), one per
    /// binding lifetime, authenticated with the binding's association.
    pub fn refresh_requests(
        &mut self,
        now: SystemTime,
        authorizations: &AuthorizationTable,
    ) -> Vec<Reply> {
        let Some(before) = self.config.refresh_request_before else {
            return Vec::new();
        };
        let due: Vec<Ipv6Addr> = self
            .expiry
            .iter()
            .take_while(|(at, _)| at.checked_sub(before).unwrap_or(UNIX_EPOCH) <= now)
            .map(|(_, home)| *home)
            .filter(|home| !self.refresh_sent.contains(home))
            .collect();
        let mut replies = Vec::new();
        for home in due {
            self.refresh_sent.insert(home);
            let Some(binding) = self.bindings.get(&home) else {
                continue;
            };
            let Some((_, sa)) = authorizations.by_spi(binding.spi) else {
                continue;
            };
            let message = Message::BindingRefreshRequest(BindingRefreshRequest {
                options: vec![sa.unsigned_option()],
            });
            if let Some(mh) = signed(message, binding.care_of.authenticated(), home, sa) {
                replies.push(Reply {
                    mh,
                    care_of: binding.care_of,
                    home_address: home,
                });
            }
        }
        replies
    }

    /// Processes a received Mobility Header: a Binding Update, or another
    /// type that gets a Binding Error. An accepted change comes back
    /// unanswered: its answer depends on its forwarding.
    pub fn process(
        &mut self,
        received: Received<'_>,
        header: &MobilityHeader,
        now: SystemTime,
        authorizations: &AuthorizationTable,
    ) -> Processed {
        Processed::Answered(match self.check(received, header, now, authorizations) {
            Ok(accepted) => return Processed::Accepted(accepted),
            Err(outcome) => outcome,
        })
    }

    /// The checks of a Binding Update in RFC order: the accepted change,
    /// or the answer that refuses it.
    fn check(
        &mut self,
        received: Received<'_>,
        header: &MobilityHeader,
        now: SystemTime,
        authorizations: &AuthorizationTable,
    ) -> Result<Accepted, Outcome> {
        let home_address = received.home_address.unwrap_or(received.source);
        let bu = match &header.message {
            Message::BindingUpdate(bu) => bu,
            Message::Other { .. } => {
                // RFC 6275 §9.2: an unrecognized MH Type gets a Binding
                // Error with status 2, to the source of the packet.
                return Err(self.binding_error(received.source, home_address));
            }
            _ => return Err(Outcome::Drop(DropReason::NotForHomeAgent)),
        };
        // RFC 6275 §9.2: Payload Proto must be IPPROTO_NONE.
        if header.payload_proto != crate::wire::IPPROTO_NONE {
            return Err(Outcome::Drop(DropReason::PayloadProto));
        }
        // The options read once, for every check below.
        let options = BuOptions::of(bu);
        let (context, authorization) = match prepare(
            received,
            bu,
            &options,
            authorizations,
            self.config.ipv4_care_of,
        ) {
            Ok(prepared) => prepared,
            Err(reason) => return Err(Outcome::Drop(reason)),
        };
        let (care_of, home_address, sa) = (context.care_of, context.home_address, context.sa);
        if auth::verify(received.mh, care_of.authenticated(), home_address, sa).is_err() {
            return Err(self.reject(&context, BaStatus::AUTH_FAIL, now));
        }
        // RFC 6275 §10.3.1: the home address identifies the association.
        if authorization.home_address != home_address {
            return Err(self.reject(&context, BaStatus::NOT_HOME_AGENT, now));
        }
        if !bu.flags.home_registration {
            let status = if bu.flags.mobile_router {
                BaStatus::MOBILE_ROUTER_NOT_PERMITTED
            } else {
                BaStatus::HOME_REGISTRATION_NOT_SUPPORTED
            };
            return Err(self.reject(&context, status, now));
        }
        if bu.flags.proxy_registration {
            return Err(self.reject(&context, BaStatus::HOME_REGISTRATION_NOT_SUPPORTED, now));
        }
        if care_of.ipv6().is_none() && self.config.ipv4_care_of == Ipv4CareOfs::Refused {
            return Err(self.reject(&context, BaStatus::ADMINISTRATIVELY_PROHIBITED, now));
        }
        if !self
            .config
            .home_prefixes
            .iter()
            .any(|prefix| prefix.contains(&home_address))
        {
            return Err(self.reject(&context, BaStatus::NOT_HOME_SUBNET, now));
        }
        match self.config.replay.check(
            options.timestamp,
            ntp_time(now),
            self.replay.get(&home_address).copied(),
        ) {
            Ok(()) => {}
            Err(ReplayError::Missing) => {
                return Err(self.reject(&context, BaStatus::MESG_ID_REQUIRED, now))
            }
            Err(ReplayError::Stale { .. } | ReplayError::Replayed) => {
                return Err(self.reject(&context, BaStatus::ID_MISMATCH, now))
            }
        }
        let existing = self.bindings.get(&home_address);
        if let Some(last) = self.last_sequence(home_address, now) {
            if !bu.sequence.is_newer_than(last) {
                return Err(self.answer(
                    &context,
                    BaStatus::SEQUENCE_OUT_OF_WINDOW,
                    last,
                    false,
                    None,
                    now,
                ));
            }
        }
        if let Some(timestamp) = options.timestamp {
            // Authenticated and fresh: no older message may follow it, even
            // one rejected below for another reason.
            self.replay.insert(home_address, timestamp);
        }

        // Deregistration (RFC 3963 §6.2, §6.7): R and prefixes are ignored.
        if bu.lifetime.is_zero() || care_of == CareOf::Ipv6(home_address) {
            // RFC 6275 §10.3.2: no home registration here, nothing to
            // deregister: 133.
            let Some(change) = self.remove(home_address) else {
                return Err(self.reject(&context, BaStatus::NOT_HOME_AGENT, now));
            };
            self.deregistered
                .insert(home_address, (bu.sequence, now + MAX_DELETE_BCE_TIMEOUT));
            return Ok(context.accepted(change, false));
        }
        if let Some(existing) = existing {
            if existing.mobile_router != bu.flags.mobile_router {
                return Err(self.reject(
                    &context,
                    BaStatus::REGISTRATION_TYPE_CHANGE_DISALLOWED,
                    now,
                ));
            }
        }
        if bu.flags.mobile_router && !authorization.mobile_router {
            return Err(self.reject(&context, BaStatus::MOBILE_ROUTER_NOT_PERMITTED, now));
        }
        let prefixes: Box<[Ipv6Net]> = if !bu.flags.mobile_router {
            // A mobile node registration: RFC 3963 §4.1 forbids forwarding
            // the mobile network to it.
            Box::default()
        } else if options.prefixes.is_empty() {
            // Implicit mode (RFC 3963 §5.2, §6.2).
            if authorization.prefixes.is_empty() {
                return Err(self.reject(&context, BaStatus::FORWARDING_SETUP_FAILED, now));
            }
            authorization.prefixes.clone()
        } else {
            // Explicit mode.
            let mut prefixes: Vec<Ipv6Net> = Vec::with_capacity(options.prefixes.len());
            for option in &options.prefixes {
                let Some(net) = option.to_net() else {
                    return Err(self.reject(&context, BaStatus::INVALID_PREFIX, now));
                };
                if invalid_prefix_reason(&net, &self.config.home_prefixes).is_some() {
                    return Err(self.reject(&context, BaStatus::INVALID_PREFIX, now));
                }
                if !authorization
                    .prefixes
                    .iter()
                    .any(|allowed| allowed.contains(&net))
                {
                    return Err(self.reject(&context, BaStatus::NOT_AUTHORIZED_FOR_PREFIX, now));
                }
                if !prefixes.contains(&net) {
                    prefixes.push(net);
                }
            }
            prefixes.into()
        };
        // A prefix is bound to at most one home address at a time.
        if prefixes
            .iter()
            .any(|net| self.bound_elsewhere(net, home_address))
        {
            return Err(self.reject(&context, BaStatus::NOT_AUTHORIZED_FOR_PREFIX, now));
        }
        let granted = bu
            .lifetime
            .min(Lifetime::from_duration_floor(self.config.max_lifetime))
            .max(Lifetime(1));
        let binding = Arc::new(Binding {
            home_address,
            care_of,
            prefixes,
            mobile_router: bu.flags.mobile_router,
            sequence: bu.sequence,
            spi: sa.spi(),
            timestamp: options.timestamp,
            lifetime: granted,
            registered_at: now,
            expires_at: now + granted.as_duration(),
        });
        self.deregistered.remove(&home_address);
        let previous = self.insert(binding.clone());
        let change = Change::Upsert { binding, previous };
        Ok(context.accepted(change, bu.flags.mobile_router))
    }

    /// The one answer to an accepted Binding Update, once its forwarding is
    /// known: the acknowledgement carrying its change, or, when the
    /// forwarding failed, the change undone and `failed` answered instead
    /// (RFC 3963 §6.2: "If the Home Agent fails to set up forwarding to all
    /// the prefixes ... reject ... 141"; a data plane out of room or out of
    /// order answers 130 or 128, RFC 6275 §6.1.8).
    pub fn conclude(
        &mut self,
        accepted: Accepted,
        forwarding: Result<(), BaStatus>,
        now: SystemTime,
    ) -> Outcome {
        let Accepted {
            change,
            mobile_router,
            sequence,
            care_of,
            home_address,
            timestamp,
            ipv4_home_addresses,
            sa,
        } = accepted;
        let context = AnswerContext {
            sequence,
            care_of,
            home_address,
            sa: &sa,
            timestamp,
            ipv4_home_addresses,
        };
        match forwarding {
            Ok(()) => self.answer(
                &context,
                BaStatus::ACCEPTED,
                sequence,
                mobile_router,
                Some(change),
                now,
            ),
            Err(failed) => {
                self.revert(&change);
                self.reject(&context, failed, now)
            }
        }
    }

    fn reject(&self, context: &AnswerContext<'_>, status: BaStatus, now: SystemTime) -> Outcome {
        self.answer(context, status, context.sequence, false, None, now)
    }

    fn answer(
        &self,
        context: &AnswerContext<'_>,
        status: BaStatus,
        sequence: SequenceNumber,
        mobile_router: bool,
        change: Option<Change>,
        now: SystemTime,
    ) -> Outcome {
        let lifetime = match &change {
            Some(Change::Upsert { binding, .. }) => binding.lifetime,
            _ => Lifetime::ZERO,
        };
        let mut options = Vec::new();
        if let Some(nat) = dsmip::nat_detection(context.care_of, self.config.ipv4_care_of) {
            options.push(MobilityOption::NatDetection(nat));
        }
        options.extend(dsmip::ipv4_address_acks(&context.ipv4_home_addresses));
        if let Some(timestamp) = context.timestamp {
            // RFC 4285 §6: echo a valid timestamp; for an invalid one, keep
            // its low 32 bits and give our own seconds.
            let echoed = if status == BaStatus::ID_MISMATCH {
                auth::rejection_timestamp(timestamp, ntp_time(now))
            } else {
                timestamp
            };
            options.push(MobilityOption::ReplayProtection(echoed));
        }
        options.push(context.sa.unsigned_option());
        let message = Message::BindingAck(BindingAck {
            status,
            flags: BaFlags {
                key_management: false,
                mobile_router,
            },
            sequence,
            lifetime,
            options,
        });
        match signed(
            message,
            context.care_of.authenticated(),
            context.home_address,
            context.sa,
        ) {
            Some(mh) => Outcome::Acknowledge {
                reply: Reply {
                    mh,
                    care_of: context.care_of,
                    home_address: context.home_address,
                },
                status,
                change,
            },
            // Cannot happen: a BA with two options always encodes.
            None => Outcome::Drop(DropReason::MalformedAuthentication),
        }
    }

    fn binding_error(&self, source: Ipv6Addr, home_address: Ipv6Addr) -> Outcome {
        let message = Message::BindingError(BindingError {
            status: BeStatus::UNRECOGNIZED_MH_TYPE,
            home_address,
            options: Vec::new(),
        });
        match MobilityHeader::new(message).encode() {
            Ok(mh) => Outcome::BindingError {
                reply: Reply {
                    mh,
                    care_of: CareOf::Ipv6(source),
                    home_address,
                },
                status: BeStatus::UNRECOGNIZED_MH_TYPE,
            },
            Err(_) => Outcome::Drop(DropReason::NotForHomeAgent),
        }
    }
}

/// The checks that come before any answer (RFC 6275 §9.5.1, §6.1.7,
/// RFC 4285 §5.1.1): routable addresses, an MN-HA option, a known SPI.
/// Failing them drops the message silently.
fn prepare<'a>(
    received: Received<'_>,
    bu: &'a BindingUpdate,
    options: &BuOptions,
    authorizations: &'a AuthorizationTable,
    ipv4_care_of: Ipv4CareOfs,
) -> Result<(AnswerContext<'a>, &'a Authorization), DropReason> {
    let home_address = received.home_address.unwrap_or(received.source);
    if !is_unicast_routable(home_address) {
        return Err(DropReason::BadHomeAddress);
    }
    let care_of = dsmip::care_of(
        received.arrival,
        dsmip::Claimed {
            source: received.source,
            alternate: options.alternate_care_of,
            ipv4: options.ipv4_care_of,
            force_udp: bu.flags.force_udp,
        },
        ipv4_care_of,
    )?;
    let location = match auth::find_mn_ha_option(received.mh) {
        Ok(Some(location)) => location,
        Ok(None) => return Err(DropReason::NoAuthentication),
        Err(_) => return Err(DropReason::MalformedAuthentication),
    };
    let (authorization, sa) = authorizations
        .by_spi(location.spi)
        .ok_or(DropReason::UnknownSpi)?;
    Ok((
        AnswerContext {
            sequence: bu.sequence,
            care_of,
            home_address,
            sa,
            timestamp: options.timestamp,
            ipv4_home_addresses: options.ipv4_home_addresses.clone(),
        },
        authorization,
    ))
}

/// Encodes and signs a message whose last option is `sa`'s unsigned option.
fn signed(
    message: Message,
    care_of: Ipv6Addr,
    home_address: Ipv6Addr,
    sa: &SecurityAssociation,
) -> Option<Vec<u8>> {
    let mut mh = MobilityHeader::new(message).encode().ok()?;
    auth::sign(&mut mh, care_of, home_address, sa).ok()?;
    Some(mh)
}
