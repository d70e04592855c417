//! A block of a pool's slots, taken for a new record (a tenant's prefix,
//! an IPv4 mapping) or given back into quarantine: the search in the
//! pool's slots (`super::allocator`), the quarantine keys the change
//! writes, and the slots updated once it is durable. One piece of code
//! for both kinds of record; the records themselves are their modules'.

use std::ops::Range;

use ipnet::IpNet;

use super::allocator::{Found, Occupied, Slots};
use super::model::Pool;
use super::{encode, State, StoreError};

/// What a block is for, in the words of a refusal.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlockUse {
    /// The request's field that names the block ("prefix", "ipv4").
    pub field: &'static str,
    /// What a used block is ("allocated", "mapped").
    pub taken: &'static str,
}

/// The free block of `length` for a new record: the first one from the
/// pool's cursor, or `exact` itself; at `now` (unix ms), quarantine
/// counted.
pub(super) fn find_block(
    state: &State,
    pool: &Pool,
    length: u8,
    exact: Option<IpNet>,
    now: i64,
    used_as: BlockUse,
) -> Result<Found, StoreError> {
    let empty = Slots::default();
    let slots = state.slots.get(&pool.name).unwrap_or(&empty);
    let block = 1u64 << (pool.tenant_length - length);
    let Some(exact) = exact else {
        return slots
            .find_free(block, pool.capacity(), now)
            .ok_or_else(|| StoreError::Exhausted {
                pool: pool.name.clone(),
                length,
            });
    };
    let first = pool.slot_of(&exact);
    slots.exact(first..first + block, now).map_err(|occupied| {
        let field = used_as.field;
        StoreError::Precondition(match occupied {
            Occupied::Used(slot) => format!(
                "{field}: {} is {}",
                pool.slot_block(slot, pool.tenant_length),
                used_as.taken
            ),
            Occupied::Quarantined(slot, until) => format!(
                "{field}: {} was released and is held back until {until} (unix ms)",
                pool.slot_block(slot, pool.tenant_length),
            ),
        })
    })
}

/// The quarantine keys a block taken ends: its own slots' and those whose
/// time ran out on the way.
pub(super) fn unheld_keys(pool: &str, found: &Found) -> Result<Vec<Vec<u8>>, StoreError> {
    found
        .expired
        .iter()
        .copied()
        .chain(found.slots.clone())
        .map(|slot| encode(&(pool, slot)))
        .collect()
}

/// A quarantine entry as the change writes it: its key (pool, slot) and
/// value (until), encoded.
pub(super) type QuarantineEntry = (Vec<u8>, Vec<u8>);

/// The quarantine entries a block given back writes.
pub(super) fn held_entries(
    pool: &str,
    slots: Range<u64>,
    until: i64,
) -> Result<Vec<QuarantineEntry>, StoreError> {
    slots
        .map(|slot| Ok((encode(&(pool, slot))?, encode(&until)?)))
        .collect()
}

impl State {
    /// Marks a block found taken, once its change is durable.
    pub(super) fn take_slots(&mut self, pool: &Pool, found: &Found) {
        self.slots
            .entry(pool.name.clone())
            .or_default()
            .take(found, pool.capacity());
    }

    /// Holds a block given back in quarantine until `until`, once its
    /// change is durable.
    pub(super) fn release_slots(&mut self, pool: &str, slots: Range<u64>, until: i64) {
        self.slots
            .entry(pool.to_owned())
            .or_default()
            .release(slots, until);
    }
}
