//! Two members that were both active take one cache again.
//!
//! A partition of the home link makes both members of a pair active, each
//! acknowledging the mobile routers that reach it, each alone. When it
//! heals, one steps down and follows the other; before it takes the
//! other's cache, it offers its own, and the member that stays active
//! takes every binding the other acknowledged that is newer than its own:
//! a mobile router that registered on the other side keeps the binding it
//! was acknowledged, instead of being sent back to its old care-of address
//! until its next refresh.
//!
//! "Newer" is the mobile router's own order: its sequence numbers (RFC 6275
//! §9.5.1, modulo 2^16). A home address this member holds no binding for is
//! taken only when its registration came after this member was last in
//! step with a standby: anything registered before that reached this
//! member, so its absence here is a removal made here (a deregistration,
//! an expiry, an operator's delete), and it stays removed. The claim must
//! also pass what a Binding Update would: an authorization for the home
//! address here, its prefixes inside the authorized ones (RFC 3963 §6.1.2)
//! and bound to no other home address, under a security association it
//! has here, with times this member could have granted (not registered in
//! the future, not longer-lived than its maximum lifetime).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::authorization::AuthorizationTable;
use super::cache::{Binding, BindingCache, Change};

/// How far the other member's clock may be ahead of this one's.
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5);

/// What became of one binding another member offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Newer than this member's: taken.
    Taken,
    /// This member's binding is as new or newer: kept.
    Older,
    /// It had expired.
    Expired,
    /// Registered before this member was last in step with a standby, or
    /// not newer than the deregistration this member still remembers: this
    /// member removed it since, and it stays removed.
    RemovedHere,
    /// The home address is not authorized here for this binding (a mobile
    /// router flag or a prefix the authorization does not give).
    Unauthorized,
    /// One of its prefixes is bound to another home address here.
    PrefixBoundElsewhere,
    /// Its times are not those of a registration this member could have
    /// granted: registered in the future, or expiring later than the
    /// longest lifetime allows (RFC 6275 §10.3.1: the home agent grants at
    /// most its own maximum).
    Implausible,
}

impl Verdict {
    /// Every verdict (for counters that exist from the start).
    pub const ALL: [Verdict; 7] = [
        Verdict::Taken,
        Verdict::Older,
        Verdict::Expired,
        Verdict::RemovedHere,
        Verdict::Unauthorized,
        Verdict::PrefixBoundElsewhere,
        Verdict::Implausible,
    ];

    /// A short name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Taken => "taken",
            Verdict::Older => "older",
            Verdict::Expired => "expired",
            Verdict::RemovedHere => "removed_here",
            Verdict::Unauthorized => "unauthorized",
            Verdict::PrefixBoundElsewhere => "prefix_bound_elsewhere",
            Verdict::Implausible => "implausible",
        }
    }
}

/// The outcome of a merge: the changes to forward and make durable (each
/// an upsert, with what it replaced), and how many bindings got each
/// verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// The bindings taken, as changes to this member's cache (applied).
    pub changes: Vec<Change>,
    /// How many offered bindings got each verdict.
    pub verdicts: BTreeMap<Verdict, usize>,
}

impl BindingCache {
    /// Takes what another member offers (`offered`, its whole cache) where
    /// it is newer; `in_step_until` is when this member was last in step
    /// with a standby (or became active). The cache changes at once; the
    /// driver forwards each change, makes it durable, and reverts a change
    /// it could not forward.
    pub fn merge(
        &mut self,
        offered: Vec<Binding>,
        authorizations: &AuthorizationTable,
        in_step_until: SystemTime,
        now: SystemTime,
    ) -> Merged {
        let mut merged = Merged::default();
        for binding in offered {
            let verdict = self.judge(&binding, authorizations, in_step_until, now);
            *merged.verdicts.entry(verdict).or_default() += 1;
            if verdict == Verdict::Taken {
                let previous = self.shared_binding(binding.home_address);
                let change = Change::Upsert {
                    binding: Arc::new(binding),
                    previous,
                };
                self.apply(&change);
                merged.changes.push(change);
            }
        }
        merged
    }

    fn judge(
        &self,
        offered: &Binding,
        authorizations: &AuthorizationTable,
        in_step_until: SystemTime,
        now: SystemTime,
    ) -> Verdict {
        if offered.expires_at <= now {
            return Verdict::Expired;
        }
        // The members' clocks may differ a little; a binding from further
        // ahead, or longer-lived than this member grants, was not granted
        // by a member of this pair.
        let latest_grant = now + CLOCK_SKEW;
        if offered.registered_at > latest_grant
            || offered.expires_at > latest_grant + self.config.max_lifetime
            || offered
                .registered_at
                .checked_add(self.config.max_lifetime + CLOCK_SKEW)
                .is_none_or(|longest| offered.expires_at > longest)
        {
            return Verdict::Implausible;
        }
        let authorized = authorizations
            .get(offered.home_address)
            .is_some_and(|authorization| {
                // Registered under a security association it has here (a
                // Binding Update's SPI is checked so: RFC 4285 §5).
                authorization
                    .security_associations
                    .iter()
                    .any(|sa| sa.spi() == offered.spi)
                    && (authorization.mobile_router || !offered.mobile_router)
                    && offered.prefixes.iter().all(|prefix| {
                        authorization
                            .prefixes
                            .iter()
                            .any(|allowed| allowed.contains(prefix))
                    })
            });
        if !authorized {
            return Verdict::Unauthorized;
        }
        match self.last_sequence(offered.home_address, now) {
            Some(last) if !offered.sequence.is_newer_than(last) => {
                return if self.binding(offered.home_address).is_some() {
                    Verdict::Older
                } else {
                    Verdict::RemovedHere
                };
            }
            Some(_) => {}
            None if offered.registered_at < in_step_until => return Verdict::RemovedHere,
            None => {}
        }
        if offered
            .prefixes
            .iter()
            .any(|prefix| self.bound_elsewhere(prefix, offered.home_address))
        {
            return Verdict::PrefixBoundElsewhere;
        }
        Verdict::Taken
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::time::Duration;

    use ipnet::Ipv6Net;

    use super::*;
    use crate::auth::{Algorithm, SecurityAssociation};
    use crate::ha::CareOf;
    use crate::ha::{Authorization, HomeAgentConfig};
    use crate::wire::{Lifetime, SequenceNumber};

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn home(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100 + n)
    }

    fn prefix(n: u16) -> Ipv6Net {
        Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100 + n, 0, 0, 0, 0, 0), 64).unwrap()
    }

    fn binding(n: u16, sequence: u16, care_of: u16, registered: u64) -> Binding {
        Binding {
            home_address: home(n),
            care_of: CareOf::Ipv6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, care_of)),
            prefixes: vec![prefix(n)].into(),
            mobile_router: true,
            sequence: SequenceNumber(sequence),
            spi: 1000 + u32::from(n),
            timestamp: None,
            lifetime: Lifetime::from_duration_floor(Duration::from_secs(600)),
            registered_at: at(registered),
            expires_at: at(registered + 600),
        }
    }

    fn authorizations(homes: &[u16]) -> AuthorizationTable {
        AuthorizationTable::new(
            homes
                .iter()
                .map(|n| Authorization {
                    home_address: home(*n),
                    security_associations: vec![SecurityAssociation::new(
                        1000 + u32::from(*n),
                        Algorithm::HmacSha256,
                        vec![7; 32],
                    )
                    .unwrap()],
                    mobile_router: true,
                    prefixes: vec![prefix(*n)].into(),
                })
                .collect(),
        )
        .unwrap()
    }

    fn cache(bindings: Vec<Binding>) -> BindingCache {
        let mut cache = BindingCache::new(HomeAgentConfig::default());
        assert!(cache.load(bindings, at(0)).is_empty());
        cache
    }

    #[test]
    fn a_newer_registration_from_the_other_side_is_taken() {
        // Registered here at t=10 (sequence 5), then on the other side at
        // t=100 (sequence 6) during the split.
        let mut here = cache(vec![binding(1, 5, 0xa, 10)]);
        let merged = here.merge(
            vec![binding(1, 6, 0xb, 100)],
            &authorizations(&[1]),
            at(50),
            at(120),
        );
        assert_eq!(merged.verdicts, BTreeMap::from([(Verdict::Taken, 1)]));
        let held = here.binding(home(1)).unwrap();
        assert_eq!(
            (held.sequence, held.care_of.ipv6().unwrap().segments()[7]),
            (SequenceNumber(6), 0xb)
        );
        match &merged.changes[..] {
            [Change::Upsert {
                binding,
                previous: Some(previous),
            }] => {
                assert_eq!(binding.sequence, SequenceNumber(6));
                assert_eq!(previous.sequence, SequenceNumber(5));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 32: what a Binding Update would be refused for, an offer is
    /// too: another SPI than the home address's, a registration from the
    /// future, a lifetime longer than this member grants.
    #[test]
    fn an_offer_no_member_could_have_granted_is_refused() {
        let offered = |change: fn(&mut Binding)| {
            let mut binding = binding(1, 6, 0xb, 100);
            change(&mut binding);
            let mut here = cache(Vec::new());
            let merged = here.merge(vec![binding], &authorizations(&[1]), at(50), at(120));
            assert!(merged.changes.is_empty() || merged.verdicts.contains_key(&Verdict::Taken));
            merged.verdicts.into_keys().collect::<Vec<_>>()
        };
        assert_eq!(offered(|_| {}), [Verdict::Taken]);
        assert_eq!(offered(|b| b.spi = 4242), [Verdict::Unauthorized]);
        assert_eq!(
            offered(|b| b.expires_at = at(100 + 86_400)),
            [Verdict::Implausible]
        );
        assert_eq!(
            offered(|b| {
                b.registered_at = at(3_600);
                b.expires_at = at(3_600 + 600);
            }),
            [Verdict::Implausible]
        );
        // A few seconds of clock difference between the members is not.
        assert_eq!(
            offered(|b| {
                b.registered_at = at(122);
                b.expires_at = at(122 + 600);
            }),
            [Verdict::Taken]
        );
    }

    #[test]
    fn the_newer_side_keeps_its_binding_across_the_sequence_wrap() {
        // 2 is newer than 65534 (RFC 6275 §9.5.1): here wins.
        let mut here = cache(vec![binding(1, 2, 0xa, 100)]);
        let merged = here.merge(
            vec![binding(1, 65534, 0xb, 90)],
            &authorizations(&[1]),
            at(50),
            at(120),
        );
        assert_eq!(merged.verdicts, BTreeMap::from([(Verdict::Older, 1)]));
        assert!(merged.changes.is_empty());
        assert_eq!(here.binding(home(1)).unwrap().sequence, SequenceNumber(2));
        // And the other way round: 2 offered against 65534 held is taken.
        let mut here = cache(vec![binding(1, 65534, 0xa, 100)]);
        let merged = here.merge(
            vec![binding(1, 2, 0xb, 110)],
            &authorizations(&[1]),
            at(50),
            at(120),
        );
        assert_eq!(merged.verdicts, BTreeMap::from([(Verdict::Taken, 1)]));
    }

    #[test]
    fn an_absent_binding_is_taken_only_when_registered_after_the_split() {
        let mut here = cache(vec![]);
        let merged = here.merge(
            vec![
                // Registered while this member was in step: it reached this
                // member, which removed it since.
                binding(1, 5, 0xb, 40),
                // Registered on the other side after the split.
                binding(2, 9, 0xb, 60),
            ],
            &authorizations(&[1, 2]),
            at(50),
            at(120),
        );
        assert_eq!(
            merged.verdicts,
            BTreeMap::from([(Verdict::Taken, 1), (Verdict::RemovedHere, 1)])
        );
        assert!(here.binding(home(1)).is_none());
        assert!(here.binding(home(2)).is_some());
    }

    #[test]
    fn expired_unauthorized_and_conflicting_bindings_are_refused() {
        // Home 3 holds the prefix home 4's offered binding names (the
        // prefix was home 3's when it registered; it is home 4's now).
        let mut held = binding(3, 1, 0xa, 100);
        held.prefixes = vec![prefix(4)].into();
        let authorized = authorizations(&[1, 3, 4]);
        let mut here = cache(vec![held]);
        let mut foreign_prefix = binding(1, 5, 0xb, 100);
        foreign_prefix.prefixes = vec![prefix(9)].into();
        let merged = here.merge(
            vec![
                binding(1, 5, 0xb, 0),   // expired at 600
                foreign_prefix,          // prefix not authorized for home 1
                binding(2, 5, 0xb, 100), // home 2 not authorized at all
                binding(4, 5, 0xb, 100), // its prefix is home 3's here
            ],
            &authorized,
            at(50),
            at(650),
        );
        assert_eq!(
            merged.verdicts,
            BTreeMap::from([
                (Verdict::Expired, 1),
                (Verdict::Unauthorized, 2),
                (Verdict::PrefixBoundElsewhere, 1),
            ])
        );
        assert!(merged.changes.is_empty());
        assert_eq!(here.len(), 1);
    }
}
