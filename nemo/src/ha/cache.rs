//! The binding cache of a home agent (RFC 6275 §10.1, RFC 3963 §6): the
//! bindings by home address, their prefixes, expiry, the replay state,
//! and the changes that keep it (load, apply, revert, expire, remove).
//! The decision on a Binding Update is [`super::decide`].

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv6Net;

use super::care_of::{CareOf, Ipv4CareOfs};
use crate::auth::ReplayPolicy;
use crate::prefix_index::PrefixIndex;
use crate::wire::{Lifetime, NtpTimestamp, SequenceNumber};

/// The home agent's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAgentConfig {
    /// The home prefixes it serves: home addresses must lie in one
    /// (RFC 3963 §6.2 relaxes "on the home link" to this).
    pub home_prefixes: Vec<Ipv6Net>,
    /// The longest lifetime granted.
    pub max_lifetime: Duration,
    /// Timestamp replay protection (RFC 4285 §6).
    pub replay: ReplayPolicy,
    /// Send a Binding Refresh Request this long before a binding expires
    /// (RFC 6275 §9.5.5); `None` for never.
    pub refresh_request_before: Option<Duration>,
    /// IPv4 care-of addresses (RFC 5555): refused unless the data plane
    /// tunnels to them.
    pub ipv4_care_of: Ipv4CareOfs,
}

impl Default for HomeAgentConfig {
    fn default() -> HomeAgentConfig {
        HomeAgentConfig {
            home_prefixes: Vec::new(),
            max_lifetime: Duration::from_secs(600),
            replay: ReplayPolicy::default(),
            refresh_request_before: None,
            ipv4_care_of: Ipv4CareOfs::Refused,
        }
    }
}

/// A home registration in the binding cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The mobile router's home address, the key.
    pub home_address: Ipv6Addr,
    /// Where it is now, and the tunnel there.
    pub care_of: CareOf,
    /// The Mobile Network Prefixes forwarded to it (empty for a plain mobile
    /// node binding, R clear). A boxed slice, not a `Vec`: 8 octets less,
    /// which brings an `Arc<Binding>` to 128 octets, an allocator size
    /// class of its own instead of 160 (32 MB at a million).
    pub prefixes: Box<[Ipv6Net]>,
    /// R flag of the registration.
    pub mobile_router: bool,
    /// The last accepted sequence number.
    pub sequence: SequenceNumber,
    /// The SPI that authenticated it.
    pub spi: u32,
    /// The newest timestamp accepted from it (RFC 4285 §6), persisted with
    /// the binding so a restart does not reopen replays.
    pub timestamp: Option<NtpTimestamp>,
    /// The granted lifetime.
    pub lifetime: Lifetime,
    /// When it was (re)registered.
    pub registered_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
}

impl Binding {
    /// The lifetime left at `now`, rounded down to wire units.
    pub fn remaining(&self, now: SystemTime) -> Lifetime {
        Lifetime::from_duration_floor(self.expires_at.duration_since(now).unwrap_or_default())
    }
}

/// A change to the binding cache that the driver must persist and apply to
/// forwarding before acknowledging. The bindings are shared (`Arc`) with
/// the cache and with whatever keeps the durable state (the daemon's view):
/// one copy of each binding in memory, however many hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A binding created or updated; `previous` is what it replaced.
    Upsert {
        /// The binding now.
        binding: Arc<Binding>,
        /// The binding before, if any.
        previous: Option<Arc<Binding>>,
    },
    /// A binding removed (deregistration, expiry, or by an operator).
    Remove {
        /// The binding removed.
        binding: Arc<Binding>,
    },
}

impl Change {
    /// What the change does to the binding, for logs and watchers.
    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::Upsert { previous: None, .. } => ChangeKind::Created,
            Change::Upsert {
                binding,
                previous: Some(previous),
            } if previous.care_of == binding.care_of && previous.prefixes == binding.prefixes => {
                ChangeKind::Refreshed
            }
            Change::Upsert { .. } => ChangeKind::Moved,
            Change::Remove { .. } => ChangeKind::Removed,
        }
    }

    /// The binding as it is after the change (or as it was, removed).
    pub fn binding(&self) -> &Binding {
        match self {
            Change::Upsert { binding, .. } | Change::Remove { binding } => binding,
        }
    }
}

/// What a [`Change`] does to a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A binding where there was none.
    Created,
    /// Same care-of address and prefixes, a new lifetime: routine.
    Refreshed,
    /// Another care-of address or other prefixes.
    Moved,
    /// The binding is gone.
    Removed,
}

/// The binding cache of a home agent and the decisions that change it.
#[derive(Debug)]
pub struct BindingCache {
    pub(super) config: HomeAgentConfig,
    pub(super) bindings: HashMap<Ipv6Addr, Arc<Binding>>,
    /// Which home address each bound prefix belongs to.
    pub(super) prefix_owner: PrefixIndex<Ipv6Addr>,
    /// Expiry order.
    pub(super) expiry: BTreeSet<(SystemTime, Ipv6Addr)>,
    /// Newest accepted timestamp per home address; kept past
    /// deregistration so an old Binding Update cannot be replayed.
    pub(super) replay: HashMap<Ipv6Addr, NtpTimestamp>,
    /// Bindings already sent a Binding Refresh Request this lifetime.
    pub(super) refresh_sent: BTreeSet<Ipv6Addr>,
    /// Home registrations just deregistered, marked invalid rather than
    /// forgotten (RFC 6275 §10.3.2): their sequence number and until when
    /// they still order Binding Updates, so that a delayed update sent
    /// before the deregistration gets 135 instead of re-creating the
    /// binding. Forwarding is removed at once; not kept across a restart.
    pub(super) deregistered: HashMap<Ipv6Addr, (SequenceNumber, SystemTime)>,
}

/// How long a deregistered entry stays, invalid, in the cache (RFC 6275
/// §12: MAX_DELETE_BCE_TIMEOUT).
pub const MAX_DELETE_BCE_TIMEOUT: Duration = Duration::from_secs(10);

impl BindingCache {
    /// An empty binding cache.
    pub fn new(config: HomeAgentConfig) -> BindingCache {
        BindingCache {
            config,
            bindings: HashMap::new(),
            prefix_owner: PrefixIndex::new(),
            expiry: BTreeSet::new(),
            replay: HashMap::new(),
            refresh_sent: BTreeSet::new(),
            deregistered: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &HomeAgentConfig {
        &self.config
    }

    /// Loads bindings from storage at start-up, dropping those expired at
    /// `now`; returns the ones dropped so their forwarding can be removed.
    /// Replay state comes back with the bindings; that of deregistered home
    /// addresses does not survive a restart, which the timestamp window
    /// bounds.
    pub fn load(
        &mut self,
        bindings: impl IntoIterator<Item = impl Into<Arc<Binding>>>,
        now: SystemTime,
    ) -> Vec<Arc<Binding>> {
        let mut expired = Vec::new();
        for binding in bindings {
            let binding: Arc<Binding> = binding.into();
            if let Some(timestamp) = binding.timestamp {
                let newest = self.replay.entry(binding.home_address).or_insert(timestamp);
                *newest = (*newest).max(timestamp);
            }
            if binding.expires_at <= now {
                expired.push(binding);
            } else {
                self.insert(binding);
            }
        }
        expired
    }

    /// Makes room for `additional` more bindings at once (a load that
    /// knows its count).
    pub fn reserve(&mut self, additional: usize) {
        self.bindings.reserve(additional);
        self.replay.reserve(additional);
    }

    /// The binding for a home address.
    pub fn binding(&self, home_address: Ipv6Addr) -> Option<&Binding> {
        self.bindings.get(&home_address).map(|binding| &**binding)
    }

    /// The binding for a home address, shared.
    pub fn shared_binding(&self, home_address: Ipv6Addr) -> Option<Arc<Binding>> {
        self.bindings.get(&home_address).cloned()
    }

    /// Every binding, in no particular order.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values().map(|binding| &**binding)
    }

    /// Every binding, shared, in no particular order.
    pub fn shared_bindings(&self) -> impl Iterator<Item = &Arc<Binding>> {
        self.bindings.values()
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// True when the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The newest accepted timestamp of a home address.
    pub fn last_timestamp(&self, home_address: Ipv6Addr) -> Option<NtpTimestamp> {
        self.replay.get(&home_address).copied()
    }

    pub(super) fn insert(&mut self, binding: Arc<Binding>) -> Option<Arc<Binding>> {
        let previous = self.take(binding.home_address);
        for prefix in &binding.prefixes {
            self.prefix_owner.insert(*prefix, binding.home_address);
        }
        self.expiry
            .insert((binding.expires_at, binding.home_address));
        self.bindings.insert(binding.home_address, binding);
        previous
    }

    pub(super) fn take(&mut self, home_address: Ipv6Addr) -> Option<Arc<Binding>> {
        let binding = self.bindings.remove(&home_address)?;
        for prefix in &binding.prefixes {
            if self.prefix_owner.get(prefix) == Some(&home_address) {
                self.prefix_owner.remove(prefix);
            }
        }
        self.expiry.remove(&(binding.expires_at, home_address));
        self.refresh_sent.remove(&home_address);
        Some(binding)
    }

    /// Applies a change another member of a pair made and replicated: no
    /// checks, the cache and the replay state follow it.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Upsert { binding, .. } => {
                if let Some(timestamp) = binding.timestamp {
                    let newest = self.replay.entry(binding.home_address).or_insert(timestamp);
                    *newest = (*newest).max(timestamp);
                }
                self.deregistered.remove(&binding.home_address);
                self.insert(binding.clone());
            }
            Change::Remove { binding } => {
                self.take(binding.home_address);
            }
        }
    }

    /// Undoes a change the driver could not carry out (forwarding failed):
    /// the cache goes back to what it was.
    pub fn revert(&mut self, change: &Change) {
        match change {
            Change::Upsert { binding, previous } => {
                self.take(binding.home_address);
                if let Some(previous) = previous {
                    self.insert(previous.clone());
                }
            }
            Change::Remove { binding } => {
                self.deregistered.remove(&binding.home_address);
                self.insert(binding.clone());
            }
        }
    }

    /// Removes a binding (operator request). The change must be persisted
    /// and forwarding removed like any other.
    pub fn remove(&mut self, home_address: Ipv6Addr) -> Option<Change> {
        self.take(home_address)
            .map(|binding| Change::Remove { binding })
    }

    /// Removes the bindings expired at `now` (RFC 6275 §10.3.1: deleted
    /// after the lifetime).
    pub fn expire(&mut self, now: SystemTime) -> Vec<Change> {
        self.deregistered.retain(|_, (_, until)| *until > now);
        let due: Vec<Ipv6Addr> = self
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, home)| *home)
            .collect();
        due.into_iter()
            .filter_map(|home| self.remove(home))
            .collect()
    }

    /// The next time [`BindingCache::expire`] or
    /// [`BindingCache::refresh_requests`] has work.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        let next_expiry = self
            .expiry
            .iter()
            .next()
            .map(|(at, _)| *at)
            .into_iter()
            .chain(self.deregistered.values().map(|(_, until)| *until))
            .min();
        let next_refresh = self.config.refresh_request_before.and_then(|before| {
            self.expiry
                .iter()
                .find(|(_, home)| !self.refresh_sent.contains(home))
                .map(|(at, _)| at.checked_sub(before).unwrap_or(UNIX_EPOCH))
        });
        match (next_expiry, next_refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The sequence number that orders the next registration of a home
    /// address (RFC 6275 §9.5.1, §10.3.2): its live binding's, or that of
    /// its deregistration while still marked invalid.
    pub(super) fn last_sequence(
        &self,
        home_address: Ipv6Addr,
        now: SystemTime,
    ) -> Option<SequenceNumber> {
        self.bindings
            .get(&home_address)
            .map(|b| b.sequence)
            .or_else(|| {
                self.deregistered
                    .get(&home_address)
                    .filter(|(_, until)| *until > now)
                    .map(|(sequence, _)| *sequence)
            })
    }

    pub(super) fn bound_elsewhere(&self, net: &Ipv6Net, home_address: Ipv6Addr) -> bool {
        self.prefix_owner
            .overlapping(net)
            .any(|(_, owner)| *owner != home_address)
    }
}
