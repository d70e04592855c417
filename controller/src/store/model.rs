//! The data model: what the controller keeps, the history's events, and
//! why a request is refused.

use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nemo::auth::Algorithm;
use nemo_daemon::disk::DiskError;
use serde::{Deserialize, Serialize};

/// A pool of addresses: IPv6 ones are carved into tenants' Mobile Network
/// Prefixes; IPv4 ones into addresses (or blocks) mapped to an IPv6 address
/// of the same size inside one of a tenant's prefixes (RFC 7757), which the
/// home site translates (RFC 7915).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// The prefix carved up (records written before IPv4 pools hold an
    /// IPv6 prefix in the same spelling).
    pub prefix: IpNet,
    /// Length of the blocks handed out.
    pub tenant_length: u8,
    /// An IPv4 pool's translation prefix: where IPv4 peers' addresses are
    /// written in IPv6 for its tenants (RFC 6052 §2.2, a /96). Absent for
    /// IPv6 pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation_prefix: Option<Ipv6Net>,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// Its name, as the API and errors write it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// Bits in an address of the family.
    fn width(self) -> u32 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }
}

impl Pool {
    /// The family of its addresses.
    pub fn family(&self) -> Family {
        match self.prefix {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }

    /// Tenant-length blocks in the pool.
    pub fn capacity(&self) -> u64 {
        1u64.checked_shl(u32::from(
            self.tenant_length.saturating_sub(self.prefix.prefix_len()),
        ))
        .unwrap_or(u64::MAX)
    }

    /// The block of `length` starting at tenant-length slot `slot`.
    pub(super) fn slot_block(&self, slot: u64, length: u8) -> IpNet {
        let shift = self.family().width() - u32::from(self.tenant_length);
        let address = network_bits(&self.prefix) + (u128::from(slot) << shift);
        let block = match self.prefix {
            IpNet::V4(_) => Ipv4Net::new((address as u32).into(), length).map(IpNet::V4),
            IpNet::V6(_) => Ipv6Net::new(address.into(), length).map(IpNet::V6),
        };
        block.unwrap_or(self.prefix)
    }

    /// The tenant-length slot a block of the pool starts at.
    pub(super) fn slot_of(&self, block: &IpNet) -> u64 {
        let offset = network_bits(block).saturating_sub(network_bits(&self.prefix));
        (offset >> (self.family().width() - u32::from(self.tenant_length))) as u64
    }

    /// The slots a block of the pool covers.
    pub(super) fn slots(&self, block: &IpNet) -> std::ops::Range<u64> {
        let first = self.slot_of(block);
        let count = 1u64
            .checked_shl(u32::from(
                self.tenant_length.saturating_sub(block.prefix_len()),
            ))
            .unwrap_or(u64::MAX);
        first..first.saturating_add(count)
    }
}

/// A prefix's network address as a number.
fn network_bits(prefix: &IpNet) -> u128 {
    match prefix {
        IpNet::V4(p) => u128::from(u32::from(p.network())),
        IpNet::V6(p) => u128::from(p.network()),
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// When it was created, ms since the Unix epoch.
    pub created_at_unix_ms: i64,
}

/// A prefix allocated to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The prefix.
    pub prefix: Ipv6Net,
    /// The tenant.
    pub tenant: String,
    /// The pool.
    pub pool: String,
    /// When, ms since the Unix epoch.
    pub allocated_at_unix_ms: i64,
    /// The revision that made it.
    pub revision: u64,
}

/// An IPv4 address (or block) of a tenant, mapped to an IPv6 address (or
/// prefix) of the same size inside one of its prefixes: an Explicit Address
/// Mapping (RFC 7757 §3.1) the home site's translator applies both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Mapping {
    /// The IPv4 side, from an IPv4 pool.
    pub ipv4: Ipv4Net,
    /// The IPv6 side: as many addresses, inside one of the tenant's
    /// prefixes.
    pub ipv6: Ipv6Net,
    /// The tenant.
    pub tenant: String,
    /// The IPv4 pool.
    pub pool: String,
    /// When, ms since the Unix epoch.
    pub allocated_at_unix_ms: i64,
    /// The revision that made it.
    pub revision: u64,
}

/// A home agent mobile routers register with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeAgentRecord {
    /// Its name.
    pub name: String,
    /// The address Binding Updates go to.
    pub address: Ipv6Addr,
    /// The home prefix home addresses come from.
    pub home_prefix: Ipv6Net,
    /// Its UDP transport, if any (`[address]:port`).
    pub udp_endpoint: String,
}

/// A hypervisor tenants are placed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hypervisor {
    /// Its name.
    pub name: String,
}

/// A tenant's mobile-router identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MobileRouter {
    /// The tenant.
    pub tenant: String,
    /// Its home agent.
    pub home_agent: String,
    /// Its home address.
    pub home_address: Ipv6Addr,
    /// Its SPI.
    pub spi: u32,
    /// The authentication algorithm, stored by its name.
    #[serde(with = "algorithm_name")]
    pub algorithm: Algorithm,
    /// The key, hex. Empty in the history (never logged).
    pub key: String,
    /// Explicit mode: prefixes in the Binding Updates.
    pub explicit_mode: bool,
}

/// An [`Algorithm`] on disk: its name (`hmac-sha256`, `hmac-sha1-96`), as
/// the API and the daemons' configs write it.
mod algorithm_name {
    use nemo::auth::Algorithm;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        algorithm: &Algorithm,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(algorithm.name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Algorithm, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl MobileRouter {
    pub(super) fn redacted(&self) -> MobileRouter {
        MobileRouter {
            key: String::new(),
            ..self.clone()
        }
    }
}

/// Where a tenant runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The tenant.
    pub tenant: String,
    /// The hypervisor.
    pub hypervisor: String,
    /// Since when, ms since the Unix epoch.
    pub since_unix_ms: i64,
    /// Why (the orchestrator's words).
    pub reason: String,
    /// When its traffic reaches the VM there (absent in records written
    /// before it existed: at once).
    #[serde(default)]
    pub delivery: Delivery,
    /// The hypervisor a placement on the VM's announcement moved it from,
    /// until the VM announces itself: where it goes back if the migration
    /// ends before that (absent otherwise, and in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub came_from: Option<String>,
}

/// When a placed tenant's traffic reaches its VM (the proto's `Delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// At once.
    #[default]
    Now,
    /// Once the VM announces itself on the hypervisor (a placement made as
    /// a live migration starts).
    OnAnnouncement,
}

/// A change, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its revision: 1, 2, 3, ...
    pub revision: u64,
    /// When, ms since the Unix epoch.
    pub at_unix_ms: i64,
    /// What happened.
    pub change: StoreChange,
    /// The request id of the call that made it, when it gave one
    /// (requests.rs): kept with the change, so one write holds both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<super::requests::RequestId>,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreChange {
    /// A pool was created.
    PoolCreated(Pool),
    /// A pool was deleted.
    PoolDeleted(Pool),
    /// A tenant was created.
    TenantCreated(Tenant),
    /// A tenant was deleted.
    TenantDeleted(Tenant),
    /// A prefix was allocated.
    PrefixAllocated(Allocation),
    /// A prefix was released (and quarantined until the time given).
    PrefixReleased {
        /// The allocation that ended.
        allocation: Allocation,
        /// Until when it is held back, ms since the Unix epoch.
        quarantined_until_unix_ms: i64,
    },
    /// An IPv4 address (or block) was mapped to a tenant's IPv6 one.
    Ipv4Mapped(Ipv4Mapping),
    /// An IPv4 mapping ended (its addresses quarantined until the time
    /// given).
    Ipv4Released {
        /// The mapping that ended.
        mapping: Ipv4Mapping,
        /// Until when its IPv4 addresses are held back, ms since the Unix
        /// epoch.
        quarantined_until_unix_ms: i64,
    },
    /// A home agent registered (or changed).
    HomeAgentRegistered(HomeAgentRecord),
    /// A hypervisor registered.
    HypervisorRegistered(Hypervisor),
    /// A mobile-router identity was created (key not logged).
    MobileRouterCreated(MobileRouter),
    /// Its key was rotated (key not logged).
    KeyRotated(MobileRouter),
    /// It was deleted.
    MobileRouterDeleted(MobileRouter),
    /// A tenant was placed (or moved: `from` says where it was).
    TenantPlaced {
        /// The placement now.
        placement: Placement,
        /// The hypervisor it left, if it moved.
        from: Option<String>,
    },
    /// A home agent reported a binding change.
    BindingReported {
        /// The home agent.
        home_agent: String,
        /// The home address.
        home_address: Ipv6Addr,
        /// The care-of address (IPv4 ones: RFC 5555).
        care_of: std::net::IpAddr,
        /// An IPv4 care-of address's tunnel in UDP: where it goes, the
        /// NAT's mapping behind a NAT (absent otherwise, and in reports of
        /// earlier versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outer: Option<std::net::SocketAddrV4>,
        /// The prefixes forwarded.
        prefixes: Vec<Ipv6Net>,
        /// The binding ended.
        removed: bool,
        /// Why.
        reason: String,
        /// The binding's last accepted sequence number (absent in reports
        /// of earlier versions).
        #[serde(default)]
        sequence: Option<u16>,
    },
    /// A credential was issued (its hash not logged).
    CredentialIssued(super::credentials::Credential),
    /// A credential was revoked.
    CredentialRevoked(super::credentials::Credential),
    /// A tenant was taken off its hypervisor.
    TenantUnplaced {
        /// The placement that ended.
        placement: Placement,
        /// Why.
        reason: String,
    },
}

impl StoreChange {
    /// The kind's name, as the API shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreChange::PoolCreated(_) => "pool_created",
            StoreChange::PoolDeleted(_) => "pool_deleted",
            StoreChange::TenantCreated(_) => "tenant_created",
            StoreChange::TenantDeleted(_) => "tenant_deleted",
            StoreChange::PrefixAllocated(_) => "prefix_allocated",
            StoreChange::PrefixReleased { .. } => "prefix_released",
            StoreChange::Ipv4Mapped(_) => "ipv4_mapped",
            StoreChange::Ipv4Released { .. } => "ipv4_released",
            StoreChange::HomeAgentRegistered(_) => "home_agent_registered",
            StoreChange::HypervisorRegistered(_) => "hypervisor_registered",
            StoreChange::MobileRouterCreated(_) => "mobile_router_created",
            StoreChange::KeyRotated(_) => "key_rotated",
            StoreChange::MobileRouterDeleted(_) => "mobile_router_deleted",
            StoreChange::TenantPlaced { .. } => "tenant_placed",
            StoreChange::TenantUnplaced { .. } => "tenant_unplaced",
            StoreChange::BindingReported { .. } => "binding_reported",
            StoreChange::CredentialIssued(_) => "credential_issued",
            StoreChange::CredentialRevoked(_) => "credential_revoked",
        }
    }

    /// The pool, tenant or prefix concerned.
    pub fn subject(&self) -> String {
        match self {
            StoreChange::PoolCreated(pool) | StoreChange::PoolDeleted(pool) => pool.name.clone(),
            StoreChange::TenantCreated(tenant) | StoreChange::TenantDeleted(tenant) => {
                tenant.name.clone()
            }
            StoreChange::PrefixAllocated(allocation) => allocation.prefix.to_string(),
            StoreChange::PrefixReleased { allocation, .. } => allocation.prefix.to_string(),
            StoreChange::Ipv4Mapped(mapping) | StoreChange::Ipv4Released { mapping, .. } => {
                mapping.ipv4.to_string()
            }
            StoreChange::HomeAgentRegistered(home_agent) => home_agent.name.clone(),
            StoreChange::HypervisorRegistered(hypervisor) => hypervisor.name.clone(),
            StoreChange::MobileRouterCreated(mr)
            | StoreChange::KeyRotated(mr)
            | StoreChange::MobileRouterDeleted(mr) => mr.tenant.clone(),
            StoreChange::TenantPlaced { placement, .. }
            | StoreChange::TenantUnplaced { placement, .. } => placement.tenant.clone(),
            StoreChange::BindingReported { home_address, .. } => home_address.to_string(),
            StoreChange::CredentialIssued(credential)
            | StoreChange::CredentialRevoked(credential) => credential.id.clone(),
        }
    }

    /// The tenant a change concerns, if one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            StoreChange::TenantCreated(t) | StoreChange::TenantDeleted(t) => Some(&t.name),
            StoreChange::PrefixAllocated(a) => Some(&a.tenant),
            StoreChange::PrefixReleased { allocation, .. } => Some(&allocation.tenant),
            StoreChange::Ipv4Mapped(mapping) | StoreChange::Ipv4Released { mapping, .. } => {
                Some(&mapping.tenant)
            }
            StoreChange::MobileRouterCreated(mr)
            | StoreChange::KeyRotated(mr)
            | StoreChange::MobileRouterDeleted(mr) => Some(&mr.tenant),
            StoreChange::TenantPlaced { placement, .. }
            | StoreChange::TenantUnplaced { placement, .. } => Some(&placement.tenant),
            _ => None,
        }
    }
}

/// Why a request is refused: each maps to a gRPC status and names the
/// field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A field's value is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Something named does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Something of that name exists already.
    #[error("{what} {name:?} exists already")]
    Exists {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The state forbids it (not empty, overlapping, ...).
    #[error("{0}")]
    Precondition(String),
    /// The pool has no room.
    #[error("pool {pool:?} has no free /{length} left")]
    Exhausted {
        /// The pool.
        pool: String,
        /// The length asked for.
        length: u8,
    },
    /// The database failed.
    #[error("store: {0}")]
    Storage(String),
    /// Another controller replica changed the store first (it is at
    /// revision `at`): the change was not made, and may be made again on
    /// the newer state. The store does that itself a few times before it
    /// gives up with this.
    #[error(
        "another controller replica changed the store first (it is at revision {at}); try again"
    )]
    Conflict {
        /// The revision the store was at.
        at: u64,
    },
    /// The store's backend cannot be reached (etcd: no member answers, or
    /// no quorum), and the change was NOT made: it never will be, so it
    /// may be sent again as it is.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The call's request id is recorded: its change was made already, at
    /// `revision` (the API answers the retry as the first call).
    #[error("this request was made already, at revision {revision}")]
    AlreadyMade {
        /// The revision of the change the first call made.
        revision: u64,
    },
    /// The change was sent to etcd and no answer said whether it was
    /// committed, and etcd could not be asked since: it may or may not be
    /// made. Read before retrying a change that is not idempotent.
    #[error("outcome unknown: {0}; read the state before retrying")]
    OutcomeUnknown(String),
}

impl From<DiskError> for StoreError {
    fn from(error: DiskError) -> StoreError {
        StoreError::Storage(error.to_string())
    }
}

/// A lookup by name that answers [`StoreError::NotFound`] naming what was
/// looked for, so that every "does not exist" reads the same.
pub(crate) trait OrNotFound<T> {
    /// The value, or `what` `name` does not exist (`name` spelled only
    /// then).
    fn or_not_found(
        self,
        what: &'static str,
        name: impl std::fmt::Display,
    ) -> Result<T, StoreError>;
}

impl<T> OrNotFound<T> for Option<T> {
    fn or_not_found(
        self,
        what: &'static str,
        name: impl std::fmt::Display,
    ) -> Result<T, StoreError> {
        self.ok_or_else(|| StoreError::NotFound {
            what,
            name: name.to_string(),
        })
    }
}
