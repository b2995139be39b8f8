//! The idempotency set of usage event ids: open addressing with linear probing over plain
//! `u128`s, built so that a batch can touch the slots of several events before inserting them.
//!
//! Why not a `HashSet`: with a million ids the table is tens of megabytes and every insert is
//! one or two cache misses, which is most of an ingest's cost. A std or hashbrown set gives no
//! way to start those misses early; here [`IdSet::touch`] reads an id's home slot so that a
//! batch can issue the loads of 16 events back to back and let the CPU overlap them.

/// A set of non-zero-able 128-bit ids (zero is kept in a flag, since it marks empty slots).
#[derive(Debug, Clone)]
pub(crate) struct IdSet {
    slots: Vec<u128>,
    len: usize,
    has_zero: bool,
    seed: u64,
}

const MIN_SLOTS: usize = 16;

impl IdSet {
    pub(crate) fn new() -> Self {
        use std::hash::BuildHasher;
        // A per-process seed, so that nobody can choose ids that all land in one run of slots.
        let seed = foldhash::fast::RandomState::default().hash_one(0x5eed_u64) | 1;
        IdSet {
            slots: vec![0; MIN_SLOTS],
            len: 0,
            has_zero: false,
            seed,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len + usize::from(self.has_zero)
    }

    fn home(&self, id: u128) -> usize {
        let folded = (id as u64) ^ ((id >> 64) as u64).rotate_left(23) ^ self.seed;
        let mixed = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mixed = mixed ^ (mixed >> 29);
        (mixed as usize) & (self.slots.len() - 1)
    }

    /// Reads the home slot of `id` (to start its cache miss early); the value is meaningless.
    pub(crate) fn touch(&self, id: u128) -> u128 {
        self.slots.get(self.home(id)).copied().unwrap_or(0)
    }

    /// Makes room for `additional` more ids without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let wanted = (self.len + additional)
            .saturating_mul(2)
            .next_power_of_two();
        if wanted > self.slots.len() {
            self.rehash(wanted);
        }
    }

    fn rehash(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; slots.max(MIN_SLOTS)]);
        self.len = 0;
        for id in old.into_iter().filter(|id| *id != 0) {
            self.insert_nonzero(id);
        }
    }

    /// Adds `id`; false when it was already there.
    pub(crate) fn insert(&mut self, id: u128) -> bool {
        if id == 0 {
            return !std::mem::replace(&mut self.has_zero, true);
        }
        // Keep the load at or below one half: probes stay short.
        if (self.len + 1) * 2 > self.slots.len() {
            self.rehash(self.slots.len() * 2);
        }
        self.insert_nonzero(id)
    }

    fn insert_nonzero(&mut self, id: u128) -> bool {
        let mask = self.slots.len() - 1;
        let mut index = self.home(id);
        // The load factor guarantees an empty slot, so this ends within `slots.len()` steps.
        for _ in 0..self.slots.len() {
            match self.slots.get_mut(index) {
                Some(slot) if *slot == id => return false,
                Some(slot) if *slot == 0 => {
                    *slot = id;
                    self.len += 1;
                    return true;
                }
                _ => index = (index + 1) & mask,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_once_and_survives_growth() {
        let mut set = IdSet::new();
        for id in 0..10_000u128 {
            assert!(set.insert(id * 7919));
        }
        for id in 0..10_000u128 {
            assert!(!set.insert(id * 7919));
        }
        assert_eq!(set.len(), 10_000);
        assert!(set.insert(u128::MAX));
        assert!(!set.insert(u128::MAX));
        assert_eq!(set.len(), 10_001);
    }
}
