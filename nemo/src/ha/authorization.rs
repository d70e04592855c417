//! What a home agent may accept: the authorization of each home address
//! (its security associations, the R flag, its prefix table entries of
//! RFC 3963 §6.1.2), indexed by home address, SPI and prefix.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::auth::SecurityAssociation;
use crate::prefix_index::PrefixIndex;

/// What a home agent is allowed to accept for one home address: the mobile
/// router's identity as the controller or the config file issues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The mobile router's home address.
    pub home_address: Ipv6Addr,
    /// Its security associations; more than one while a key is rotated.
    pub security_associations: Vec<SecurityAssociation>,
    /// Whether it may register as a mobile router (R flag).
    pub mobile_router: bool,
    /// The prefix table entries of RFC 3963 §6.1.2: prefixes it may
    /// register (a registered prefix must lie inside one), and the prefixes
    /// implicit mode forwards. A boxed slice, as a binding's: no spare
    /// capacity, 8 octets less (a million are held).
    pub prefixes: Box<[Ipv6Net]>,
}

/// Why an authorization table cannot take an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    /// Two entries share an SPI.
    #[error("SPI {spi} is used by both {first} and {second}")]
    DuplicateSpi {
        /// The SPI.
        spi: u32,
        /// The home address that had it.
        first: Ipv6Addr,
        /// The home address that wanted it.
        second: Ipv6Addr,
    },
    /// Two home addresses are authorized for overlapping prefixes.
    #[error("prefix {prefix} of {second} overlaps {other} of {first}")]
    OverlappingPrefix {
        /// The prefix being added.
        prefix: Ipv6Net,
        /// The home address it belongs to.
        second: Ipv6Addr,
        /// The prefix it overlaps.
        other: Ipv6Net,
        /// The home address that has that one.
        first: Ipv6Addr,
    },
    /// An entry without any security association.
    #[error("{0} has no security association")]
    NoSecurityAssociation(Ipv6Addr),
    /// More prefixes than one binding holds.
    #[error("{home_address} has {count} prefixes, more than the {MAX_PREFIXES} a binding holds")]
    TooManyPrefixes {
        /// The home address.
        home_address: Ipv6Addr,
        /// How many it was given.
        count: usize,
    },
}

/// The most prefixes one mobile router's authorization (and so one
/// binding) holds: what a binding record stores (one octet counts them),
/// and what the controller allocates to one tenant.
pub const MAX_PREFIXES: usize = 255;

/// The authorizations a home agent works from, indexed by home address and
/// by SPI.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationTable {
    /// Boxed: a map's slots are half empty just past a power of two, and
    /// an empty slot of a box is 8 octets, not the entry's 72.
    by_home: HashMap<Ipv6Addr, Box<Authorization>>,
    by_spi: HashMap<u32, Ipv6Addr>,
    /// Authorized prefixes and their home address, for the overlap check.
    by_prefix: PrefixIndex<Ipv6Addr>,
}

impl AuthorizationTable {
    /// A table of these entries, refusing duplicate SPIs and overlapping
    /// prefixes between home addresses.
    pub fn new(entries: Vec<Authorization>) -> Result<AuthorizationTable, AuthorizationError> {
        let mut table = AuthorizationTable::default();
        for entry in entries {
            table.insert(entry)?;
        }
        Ok(table)
    }

    /// Makes room for `additional` more entries at once (a load that knows
    /// its count): the tables do not grow by doubling through a million,
    /// each step leaving the previous one's memory behind.
    pub fn reserve(&mut self, additional: usize) {
        self.by_home.reserve(additional);
        self.by_spi.reserve(additional);
    }

    /// Adds or replaces the entry for a home address.
    pub fn insert(&mut self, entry: Authorization) -> Result<(), AuthorizationError> {
        if entry.security_associations.is_empty() {
            return Err(AuthorizationError::NoSecurityAssociation(
                entry.home_address,
            ));
        }
        if entry.prefixes.len() > MAX_PREFIXES {
            return Err(AuthorizationError::TooManyPrefixes {
                home_address: entry.home_address,
                count: entry.prefixes.len(),
            });
        }
        for sa in &entry.security_associations {
            if let Some(&first) = self.by_spi.get(&sa.spi()) {
                if first != entry.home_address {
                    return Err(AuthorizationError::DuplicateSpi {
                        spi: sa.spi(),
                        first,
                        second: entry.home_address,
                    });
                }
            }
        }
        for prefix in &entry.prefixes {
            if let Some((other, first)) = self
                .by_prefix
                .overlapping(prefix)
                .find(|(_, owner)| **owner != entry.home_address)
            {
                return Err(AuthorizationError::OverlappingPrefix {
                    prefix: *prefix,
                    second: entry.home_address,
                    other,
                    first: *first,
                });
            }
        }
        self.remove(entry.home_address);
        for sa in &entry.security_associations {
            self.by_spi.insert(sa.spi(), entry.home_address);
        }
        for prefix in &entry.prefixes {
            self.by_prefix.insert(*prefix, entry.home_address);
        }
        self.by_home.insert(entry.home_address, Box::new(entry));
        Ok(())
    }

    /// Removes the entry for a home address, returning it.
    pub fn remove(&mut self, home_address: Ipv6Addr) -> Option<Authorization> {
        let entry = *self.by_home.remove(&home_address)?;
        for sa in &entry.security_associations {
            self.by_spi.remove(&sa.spi());
        }
        for prefix in &entry.prefixes {
            self.by_prefix.remove(prefix);
        }
        Some(entry)
    }

    /// The entry for a home address.
    pub fn get(&self, home_address: Ipv6Addr) -> Option<&Authorization> {
        self.by_home.get(&home_address).map(|entry| &**entry)
    }

    /// The entry and security association an SPI belongs to.
    pub fn by_spi(&self, spi: u32) -> Option<(&Authorization, &SecurityAssociation)> {
        let entry = self.by_home.get(self.by_spi.get(&spi)?)?;
        let sa = entry
            .security_associations
            .iter()
            .find(|sa| sa.spi() == spi)?;
        Some((entry, sa))
    }

    /// Number of home addresses.
    pub fn len(&self) -> usize {
        self.by_home.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_home.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Authorization> {
        self.by_home.values().map(|entry| &**entry)
    }
}

/// True when two prefixes share any address.
pub fn overlaps(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
