//! The idempotency set of usage event ids, sharded by hash so that a batch can be checked one
//! cache-sized shard at a time.
//!
//! Why not one big table (or a `HashSet`): with a million ids a single table is tens of
//! megabytes, and every insert is a cache and TLB miss into it, which was most of an ingest's
//! cost. Here the set is [`SHARDS`] independent tables, chosen by the top bits of an id's hash,
//! each growing on its own. [`IdSet::file`] + [`IdSet::insert_filed`] first scatter a batch's ids into one list
//! per shard (a sequential pass), then inserts shard by shard: the shard being worked on (a
//! million ids make 256 tables of ~4,000 ids, ~130 KB each) stays in L2 while its ids are
//! checked, instead of every id missing all the way to memory.
//!
//! Each shard keeps the full ids in insertion order (`ids`, written sequentially) and an
//! open-addressing index over them whose 8-byte slots hold a 24-bit tag of the hash and the
//! position of the id in `ids`. A probe compares tags and reads the full id only on a tag
//! match, so a new id (the common case) touches only the small index; the full comparison
//! keeps the set exact.

// Size, index and hash arithmetic on tables held in memory: sizes are bounded by what can be
// allocated (far below 2^40 entries), masks keep indices in range, and the 64 × 64-bit product
// fits in u128. No figure here comes from a caller except the ids, which are only hashed; the
// sums are of lengths of in-memory tables.
#![allow(clippy::arithmetic_side_effects, clippy::disallowed_methods)]

/// log2 of the number of shards: 256 lists are few enough for the scatter pass to write them
/// all from L1, and many enough that a shard of a million-event batch fits in L2.
const SHARD_BITS: u32 = 8;
/// How many shards the set has.
pub(crate) const SHARDS: usize = 1 << SHARD_BITS;
const MIN_SLOTS: usize = 16;
/// Slot layout: the tag in the top 24 bits, position in `ids` + 1 in the low 40 (zero: empty).
const POSITION_BITS: u32 = 40;
const POSITION_MASK: u64 = (1 << POSITION_BITS) - 1;
const TAG_MASK: u64 = !POSITION_MASK;

/// The per-process seeds of the id hash.
#[derive(Debug, Clone, Copy)]
struct Seeds {
    low: u64,
    high: u64,
}

impl Seeds {
    fn new() -> Self {
        use std::hash::BuildHasher;
        // Per process, so that nobody can choose ids that all land in one run of slots.
        let state = foldhash::fast::RandomState::default();
        Seeds {
            low: state.hash_one(0x5eed_u64),
            high: state.hash_one(0xfeed_u64) | 1,
        }
    }

    /// Mixes an id into 64 bits with a seeded folded multiply (the 128-bit product of the two
    /// halves, folded): every bit of the id reaches both the top bits (the shard) and the low
    /// bits (the slot).
    fn hash(self, id: u128) -> u64 {
        let low = (id as u64) ^ self.low;
        let high = ((id >> 64) as u64) ^ self.high;
        let product = u128::from(low) * u128::from(high);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARD_BITS)) as usize
}

/// The tag kept in a slot: 24 hash bits that are neither the shard's nor (below 2^32 slots)
/// the home slot's, so that they still tell ids of one shard and one run of slots apart.
fn tag_of(hash: u64) -> u64 {
    // Hash bits 32..56 move up to the slot's bits 40..64.
    (hash << SHARD_BITS) & TAG_MASK
}

/// One shard: the ids, and an open-addressing (linear probing) index over them.
#[derive(Debug, Clone)]
struct Shard {
    /// A power of two in length; at most 5/8 full, so probes stay short.
    slots: Vec<u64>,
    ids: Vec<u128>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            slots: vec![0; MIN_SLOTS],
            ids: Vec::new(),
        }
    }

    /// The number of slots that keeps `ids` ids at or below the maximum load.
    fn slots_for(ids: usize) -> Option<usize> {
        let slots = (ids.checked_mul(8)? / 5 + 1).checked_next_power_of_two()?;
        Some(slots.max(MIN_SLOTS))
    }

    /// Best effort: an amount that cannot be allocated reserves nothing (reserving is a hint).
    fn reserve(&mut self, seeds: Seeds, additional: usize) {
        if self.ids.try_reserve(additional).is_err() {
            return;
        }
        let Some(slots) = Self::slots_for(self.ids.len().saturating_add(additional)) else {
            return;
        };
        if slots > self.slots.len() {
            self.rebuild(seeds, slots);
        }
    }

    /// Re-indexes every id into `slots` slots. The ids are distinct, so each goes into the
    /// first empty slot of its run, without comparisons.
    fn rebuild(&mut self, seeds: Seeds, slots: usize) {
        self.slots.clear();
        self.slots.resize(slots, 0);
        let mask = slots - 1;
        for (position, id) in self.ids.iter().enumerate() {
            let hash = seeds.hash(*id);
            let entry = tag_of(hash) | ((position as u64 + 1) & POSITION_MASK);
            let mut index = hash as usize & mask;
            // The load limit guarantees an empty slot, so this ends within `slots` steps.
            for _ in 0..slots {
                match self.slots.get_mut(index) {
                    Some(slot) if *slot == 0 => {
                        *slot = entry;
                        break;
                    }
                    _ => index = (index + 1) & mask,
                }
            }
        }
    }

    /// Adds `id` (whose hash is `hash`); false when it was already there.
    fn insert(&mut self, seeds: Seeds, id: u128, hash: u64) -> bool {
        if (self.ids.len() + 1) * 8 > self.slots.len() * 5 {
            self.rebuild(seeds, self.slots.len() * 2);
        }
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let mut index = hash as usize & mask;
        for _ in 0..self.slots.len() {
            let Some(slot) = self.slots.get_mut(index) else {
                break;
            };
            if *slot == 0 {
                // `ids` cannot reach 2^40 entries (16 TiB), so the position fits its bits.
                *slot = tag | ((self.ids.len() as u64 + 1) & POSITION_MASK);
                self.ids.push(id);
                return true;
            }
            if *slot & TAG_MASK == tag {
                let position = ((*slot & POSITION_MASK) - 1) as usize;
                if self.ids.get(position) == Some(&id) {
                    return false;
                }
            }
            index = (index + 1) & mask;
        }
        false
    }
}

/// An id of a batch, filed under its shard by [`IdSet::file`]; `u32`s keep it at 20 bytes.
#[derive(Debug, Clone, Copy)]
struct Filed {
    id: [u32; 4],
    /// Its position in the batch.
    position: u32,
}

/// The scratch space of a batch of ids: each id filed under its shard, then which were new.
/// Kept between batches (and between the chunks of a large batch) so that its memory is
/// allocated, and faulted in, once.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdBatch {
    filed: Vec<Vec<Filed>>,
    len: u32,
    /// Bit `position`: the id was new.
    new: Vec<u64>,
}

impl IdBatch {
    /// The most ids one batch takes (positions are `u32`s).
    pub(crate) const CAPACITY: usize = u32::MAX as usize;

    /// How many ids were filed since the last [`IdSet::insert_filed`].
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// How many ids of the last [`IdSet::insert_filed`] were new.
    pub(crate) fn new_count(&self) -> usize {
        self.new.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// Whether the id at `position` of the last [`IdSet::insert_filed`] was not in the set
    /// (nor earlier in its batch).
    pub(crate) fn is_new(&self, position: usize) -> bool {
        self.new
            .get(position / 64)
            .is_some_and(|word| word & (1 << (position % 64)) != 0)
    }
}

/// A set of 128-bit ids (every value, zero included).
#[derive(Debug, Clone)]
pub(crate) struct IdSet {
    shards: Vec<Shard>,
    seeds: Seeds,
}

impl IdSet {
    pub(crate) fn new() -> Self {
        IdSet {
            shards: (0..SHARDS).map(|_| Shard::new()).collect(),
            seeds: Seeds::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.ids.len()).sum()
    }

    /// Makes room for `additional` more ids, spread evenly over the shards, so that a batch of
    /// that size rarely has to grow one.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let per_shard = additional.div_ceil(SHARDS);
        // A few standard deviations of the binomial spread: few shards get more than this.
        let per_shard = per_shard + per_shard / 16 + 8;
        let seeds = self.seeds;
        for shard in &mut self.shards {
            shard.reserve(seeds, per_shard);
        }
    }

    /// Adds `id`; false when it was already there.
    pub(crate) fn insert(&mut self, id: u128) -> bool {
        let hash = self.seeds.hash(id);
        let seeds = self.seeds;
        self.shards
            .get_mut(shard_of(hash))
            .is_some_and(|shard| shard.insert(seeds, id, hash))
    }

    /// Files `id` as the next id of `batch` (without checking it yet).
    ///
    /// Batching is in two steps: ids are filed under their shard, in one sequential pass
    /// (stable, so each shard's list keeps batch order and the first occurrence of a repeated
    /// id is the one that counts); then [`IdSet::insert_filed`] inserts them shard by shard,
    /// while the shard's table is in cache. Past [`IdBatch::CAPACITY`] ids, the id is ignored:
    /// call [`IdSet::insert_filed`] before that.
    pub(crate) fn file(&self, batch: &mut IdBatch, id: u128) {
        if batch.len() >= IdBatch::CAPACITY {
            return;
        }
        if batch.filed.len() < SHARDS {
            batch.filed.resize_with(SHARDS, Vec::new);
        }
        if let Some(list) = batch.filed.get_mut(shard_of(self.seeds.hash(id))) {
            list.push(Filed {
                id: [
                    id as u32,
                    (id >> 32) as u32,
                    (id >> 64) as u32,
                    (id >> 96) as u32,
                ],
                position: batch.len,
            });
            batch.len += 1;
        }
    }

    /// Adds the ids filed in `batch`: afterwards [`IdBatch::is_new`] tells, by position, the
    /// ids that were neither in the set nor earlier in the batch, exactly as if each had been
    /// [`IdSet::insert`]ed in turn. Empties the batch for the next one.
    pub(crate) fn insert_filed(&mut self, batch: &mut IdBatch) {
        batch.new.clear();
        batch.new.resize(batch.len().div_ceil(64), 0);
        let seeds = self.seeds;
        for (shard, list) in self.shards.iter_mut().zip(&mut batch.filed) {
            shard.reserve(seeds, list.len());
            // When the list probes a good part of the table's cache lines, read the table
            // first, sequentially: the prefetcher streams it into cache, where each probe
            // then hits, instead of each probe waiting for its own miss.
            if list.len() * 16 >= shard.slots.len() {
                std::hint::black_box(shard.slots.iter().fold(0, |acc, slot| acc | slot));
            }
            for entry in list.iter() {
                let [a, b, c, d] = entry.id.map(u128::from);
                let id = a | (b << 32) | (c << 64) | (d << 96);
                if shard.insert(seeds, id, seeds.hash(id))
                    && let Some(word) = batch.new.get_mut(entry.position as usize / 64)
                {
                    *word |= 1 << (entry.position % 64);
                }
            }
            list.clear();
        }
        batch.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Ids spread like UUIDs.
    fn spread(n: u128) -> u128 {
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
    }

    fn insert_batch(set: &mut IdSet, ids: &[u128]) -> IdBatch {
        let mut batch = IdBatch::default();
        for id in ids {
            set.file(&mut batch, *id);
        }
        assert_eq!(batch.len(), ids.len());
        set.insert_filed(&mut batch);
        assert_eq!(batch.len(), 0);
        batch
    }

    fn new_positions(set: &mut IdSet, ids: &[u128]) -> Vec<usize> {
        let new_ids = insert_batch(set, ids);
        (0..ids.len()).filter(|p| new_ids.is_new(*p)).collect()
    }

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

    #[test]
    fn zero_is_an_ordinary_id() {
        let mut set = IdSet::new();
        assert!(set.insert(0));
        assert!(!set.insert(0));
        assert_eq!(new_positions(&mut set, &[0, 1, 0]), vec![1]);
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn the_first_occurrence_in_a_batch_is_the_new_one() {
        let mut set = IdSet::new();
        let ids = [
            spread(1),
            spread(2),
            spread(1),
            spread(3),
            spread(2),
            spread(1),
        ];
        assert_eq!(new_positions(&mut set, &ids), vec![0, 1, 3]);
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn ids_seen_in_an_earlier_batch_or_alone_are_not_new() {
        let mut set = IdSet::new();
        assert!(set.insert(spread(7)));
        assert_eq!(new_positions(&mut set, &[spread(1), spread(2)]), vec![0, 1]);
        assert_eq!(
            new_positions(&mut set, &[spread(3), spread(2), spread(7), spread(3)]),
            vec![0]
        );
        assert!(!set.insert(spread(1)));
        assert!(!set.insert(spread(3)));
        assert!(set.insert(spread(4)));
        assert_eq!(set.len(), 5);
    }

    #[test]
    fn a_batch_spanning_every_shard_matches_one_by_one_inserts() {
        let ids: Vec<u128> = (0..20_000u128).map(|n| spread(n % 15_000)).collect();
        let mut batched = IdSet::new();
        let new_ids = insert_batch(&mut batched, &ids);
        let mut one_by_one = IdSet::new();
        for (position, id) in ids.iter().enumerate() {
            assert_eq!(new_ids.is_new(position), one_by_one.insert(*id));
        }
        let shards = ids.iter().map(|id| shard_of(batched.seeds.hash(*id)));
        assert_eq!(shards.collect::<HashSet<_>>().len(), SHARDS);
        assert_eq!(batched.len(), 15_000);
        // Every shard holds its ids and only those.
        for (index, shard) in batched.shards.iter().enumerate() {
            for id in &shard.ids {
                assert_eq!(shard_of(batched.seeds.hash(*id)), index);
            }
        }
    }

    #[test]
    fn a_shard_that_grows_past_its_reservation_keeps_every_id() {
        let mut set = IdSet::new();
        set.reserve(SHARDS * 4);
        // Many ids of one shard: its table grows (is rebuilt) several times.
        let target = shard_of(set.seeds.hash(spread(0)));
        let ids: Vec<u128> = (0..2_000_000u128)
            .map(spread)
            .filter(|id| shard_of(set.seeds.hash(*id)) == target)
            .take(2_000)
            .collect();
        let slots_before = set.shards[target].slots.len();
        let (first, second) = ids.split_at(700);
        assert_eq!(new_positions(&mut set, first).len(), 700);
        for id in first {
            assert!(!set.insert(*id));
        }
        let mut replay: Vec<u128> = second.to_vec();
        replay.extend_from_slice(first);
        replay.extend_from_slice(second);
        assert_eq!(
            new_positions(&mut set, &replay),
            (0..second.len()).collect::<Vec<_>>()
        );
        assert!(set.shards[target].slots.len() > slots_before);
        assert_eq!(set.len(), 2_000);
        for id in &ids {
            assert!(!set.insert(*id));
        }
    }

    #[test]
    fn ids_that_share_a_home_slot_or_a_tag_are_told_apart_by_the_full_id() {
        let mut set = IdSet::new();
        let seeds = set.seeds;
        let first = spread(1);
        let base = seeds.hash(first);
        // Ids with the same shard and home slot (in a fresh 16-slot table) as `first`.
        let colliding: Vec<u128> = (2..2_000_000u128)
            .map(spread)
            .filter(|id| {
                let hash = seeds.hash(*id);
                shard_of(hash) == shard_of(base) && (hash & 0xf) == (base & 0xf)
            })
            .take(5)
            .collect();
        assert_eq!(colliding.len(), 5);
        assert!(set.insert(first));
        // Give `first`'s slot the tag of the next id, as a tag collision would: the probe then
        // meets a matching tag whose full id differs, and must go on.
        let next = colliding[0];
        let shard = &mut set.shards[shard_of(base)];
        assert_eq!(shard.slots.len(), MIN_SLOTS);
        for slot in shard.slots.iter_mut().filter(|slot| **slot != 0) {
            *slot = tag_of(seeds.hash(next)) | (*slot & POSITION_MASK);
        }
        assert!(set.insert(next));
        assert!(!set.insert(next));
        for id in &colliding[1..] {
            assert!(set.insert(*id));
        }
        for id in &colliding[1..] {
            assert!(!set.insert(*id));
        }
        assert_eq!(set.len(), 6);
    }

    #[test]
    fn reserving_an_impossible_amount_changes_nothing() {
        let mut set = IdSet::new();
        set.reserve(usize::MAX);
        assert_eq!(set.len(), 0);
        assert!(set.insert(1));
    }
}
