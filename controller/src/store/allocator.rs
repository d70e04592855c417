//! The free-block search of one pool, pure: which tenant-length slots are
//! used, which are held in quarantine and until when, and where the next
//! search starts. No storage and no clock: times come in as unix
//! milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// One pool's slots: slot `n` is the `n`-th tenant-length prefix of the
/// pool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Slots {
    used: BTreeSet<u64>,
    /// Slot -> until (unix ms): released, not yet reusable.
    quarantine: BTreeMap<u64, i64>,
    /// The same, ordered by until: the ones run out are a range, found
    /// without reading every quarantined slot on each allocation.
    quarantine_ends: BTreeSet<(i64, u64)>,
    /// Where the search for a free block starts: after the last allocation.
    cursor: u64,
    /// The revision of the allocation that set the cursor at load.
    cursor_revision: u64,
}

/// Why a block asked for by its place is not free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupied {
    /// This slot is allocated.
    Used(u64),
    /// This slot is held in quarantine until then (unix ms).
    Quarantined(u64, i64),
}

/// A free block found: its slots, and the quarantine entries that ran out
/// on the way (to forget with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The block's slots.
    pub slots: Range<u64>,
    /// Quarantined slots whose time is up.
    pub expired: Vec<u64>,
}

impl Slots {
    /// Marks an existing allocation's slots used at load; the cursor resumes
    /// after the newest allocation (by `revision`), as if the daemon had
    /// never stopped, not from slot 0, which would scan every used slot on
    /// the first allocation.
    pub fn load_allocation(&mut self, slots: Range<u64>, revision: u64, capacity: u64) {
        let end = slots.end;
        self.used.extend(slots);
        if revision >= self.cursor_revision {
            self.cursor_revision = revision;
            self.cursor = end % capacity.max(1);
        }
    }

    /// Holds a slot in quarantine until `until` (unix ms), at load.
    pub fn load_quarantine(&mut self, slot: u64, until: i64) {
        self.hold(slot, until);
    }

    /// Holds a slot until `until`, replacing an earlier hold.
    fn hold(&mut self, slot: u64, until: i64) {
        if let Some(earlier) = self.quarantine.insert(slot, until) {
            self.quarantine_ends.remove(&(earlier, slot));
        }
        self.quarantine_ends.insert((until, slot));
    }

    /// Ends a slot's hold, if it has one.
    fn unhold(&mut self, slot: u64) {
        if let Some(until) = self.quarantine.remove(&slot) {
            self.quarantine_ends.remove(&(until, slot));
        }
    }

    /// Forgets an allocation's slots (another replica released or deleted
    /// it; its quarantine comes as records of its own).
    pub fn forget_allocation(&mut self, slots: Range<u64>) {
        for slot in slots {
            self.used.remove(&slot);
        }
    }

    /// Ends a slot's quarantine (another replica reused or dropped it).
    pub fn forget_quarantine(&mut self, slot: u64) {
        self.unhold(slot);
    }

    /// Number of slots held in quarantine.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Every quarantined slot.
    pub fn quarantined_slots(&self) -> impl Iterator<Item = u64> + '_ {
        self.quarantine.keys().copied()
    }

    /// The first free, aligned block of `block` slots (a power of two) at
    /// or after the cursor, wrapping around a pool of `capacity` slots, at
    /// `now` (unix ms): no slot used, none in a quarantine still running.
    pub fn find_free(&self, block: u64, capacity: u64, now: i64) -> Option<Found> {
        if block == 0 || capacity < block {
            return None;
        }
        let start = (self.cursor / block) * block;
        let blocks = capacity / block;
        let first = (0..blocks)
            .map(|step| (start + step * block) % capacity)
            .find(|candidate| {
                let range = *candidate..*candidate + block;
                self.used.range(range.clone()).next().is_none()
                    && !self.quarantine.range(range).any(|(_, until)| *until > now)
            })?;
        Some(Found {
            slots: first..first + block,
            expired: self.expired(now),
        })
    }

    /// The block `slots` itself, if it is free at `now`; else the first
    /// of its slots in use, or held in quarantine and until when.
    pub fn exact(&self, slots: Range<u64>, now: i64) -> Result<Found, Occupied> {
        if let Some(slot) = self.used.range(slots.clone()).next() {
            return Err(Occupied::Used(*slot));
        }
        if let Some((slot, until)) = self
            .quarantine
            .range(slots.clone())
            .find(|(_, until)| **until > now)
        {
            return Err(Occupied::Quarantined(*slot, *until));
        }
        Ok(Found {
            slots,
            expired: self.expired(now),
        })
    }

    /// Quarantined slots whose time is up at `now`.
    fn expired(&self, now: i64) -> Vec<u64> {
        self.quarantine_ends
            .range(..=(now, u64::MAX))
            .map(|(_, slot)| *slot)
            .collect()
    }

    /// Takes a block [`Slots::find_free`] found.
    pub fn take(&mut self, found: &Found, capacity: u64) {
        for slot in &found.expired {
            self.unhold(*slot);
        }
        for slot in found.slots.clone() {
            self.unhold(slot);
            self.used.insert(slot);
        }
        self.cursor = found.slots.end % capacity.max(1);
    }

    /// Releases a block into quarantine until `until` (unix ms).
    pub fn release(&mut self, slots: Range<u64>, until: i64) {
        for slot in slots {
            self.used.remove(&slot);
            self.hold(slot, until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_ends_are_those_a_scan_finds_whatever_came_before() {
        let mut slots = Slots::default();
        // Held, held again later, forgotten, taken: a mix of every change.
        for slot in 0..1000u64 {
            slots.release(slot..slot + 1, (slot as i64 * 7919) % 500);
        }
        for slot in (0..1000u64).step_by(3) {
            slots.release(slot..slot + 1, 1000 + slot as i64);
        }
        for slot in (0..1000u64).step_by(5) {
            slots.forget_quarantine(slot);
        }
        let found = slots.exact(2000..2001, 250).unwrap();
        slots.take(&found, 4096);
        for now in [-1, 0, 100, 250, 499, 500, 1500, 2500] {
            let mut scanned: Vec<u64> = slots
                .quarantine
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(slot, _)| *slot)
                .collect();
            scanned.sort_unstable();
            let mut ended = slots.expired(now);
            ended.sort_unstable();
            assert_eq!(ended, scanned, "at {now}");
        }
        assert_eq!(slots.quarantine.len(), slots.quarantine_ends.len());
    }

    #[test]
    fn blocks_come_in_order_after_the_cursor_and_wrap() {
        let mut slots = Slots::default();
        let first = slots.find_free(1, 4, 0).unwrap();
        assert_eq!(first.slots, 0..1);
        slots.take(&first, 4);
        let second = slots.find_free(1, 4, 0).unwrap();
        assert_eq!(second.slots, 1..2);
        slots.take(&second, 4);
        slots.release(0..1, 100);
        slots.take(&slots.find_free(1, 4, 0).unwrap(), 4);
        slots.take(&slots.find_free(1, 4, 0).unwrap(), 4);
        // 0 is in quarantine until 100, 1..4 used: full until then.
        assert_eq!(slots.find_free(1, 4, 99), None);
        let reused = slots.find_free(1, 4, 100).unwrap();
        assert_eq!(reused.slots, 0..1);
        assert_eq!(reused.expired, vec![0]);
        slots.take(&reused, 4);
        assert_eq!(slots.quarantined(), 0);
    }

    #[test]
    fn larger_blocks_are_aligned_and_skip_partly_used_ones() {
        let mut slots = Slots::default();
        slots.take(&slots.find_free(1, 16, 0).unwrap(), 16);
        // Slot 0 is used: the first free aligned block of 4 is 4..8, and the
        // cursor (1) rounds down to 0, so 0..4 is looked at and refused.
        let block = slots.find_free(4, 16, 0).unwrap();
        assert_eq!(block.slots, 4..8);
        slots.take(&block, 16);
        assert_eq!(slots.find_free(8, 16, 0).unwrap().slots, 8..16);
        assert_eq!(slots.find_free(16, 16, 0), None);
        // A quarantined slot inside a block keeps the whole block.
        slots.release(4..8, 50);
        assert_eq!(slots.find_free(4, 16, 10).unwrap().slots, 8..12);
    }

    #[test]
    fn the_cursor_resumes_after_the_newest_allocation_at_load() {
        let mut slots = Slots::default();
        slots.load_allocation(5..6, 7, 16);
        slots.load_allocation(0..1, 3, 16);
        assert_eq!(slots.find_free(1, 16, 0).unwrap().slots, 6..7);
        let mut full = Slots::default();
        full.load_allocation(15..16, 1, 16);
        // After the last slot: wrap to the first.
        assert_eq!(full.find_free(1, 16, 0).unwrap().slots, 0..1);
    }

    #[test]
    fn degenerate_sizes_find_nothing() {
        let slots = Slots::default();
        assert_eq!(slots.find_free(0, 16, 0), None);
        assert_eq!(slots.find_free(32, 16, 0), None);
        assert_eq!(slots.find_free(1, 0, 0), None);
    }
}
