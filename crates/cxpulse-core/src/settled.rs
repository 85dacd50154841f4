//! Tombstones of settled cases: the set of case-id hashes whose events are ignored until
//! their open is older than the case TTL.
//!
//! A settled case is remembered only so that its later events do not start a new case, and
//! there are many of them (every case of the last TTL, 7 days by default), so they are kept
//! compact: recent ones in a small hash table, the rest in one sorted, exactly sized run of
//! 24-byte entries searched by bisection. The recent table is merged into the run once it
//! holds an eighth of it (each tombstone is copied a handful of times in all), and expired
//! entries leave the run at that merge; until then they are hidden by the expiry bound.
//!
//! Every new case looks its id up here, and a week of tombstones is millions of entries: a
//! bisection of the whole run is some twenty dependent cache misses. Hashes are uniform, so
//! the run carries a bucket index by the hash's top bits (half a byte per entry): a lookup
//! reads one index slot and bisects a bucket of about eight entries.
use crate::events::Millis;
use rustc_hash::FxHashMap;

/// A settled case: the 128-bit hash of its id (two words, so that the entry is not padded to
/// 16-byte alignment) and the event time of its open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tombstone {
    hash: [u64; 2],
    open_at: Millis,
}

pub(crate) fn words(hash: u128) -> [u64; 2] {
    [(hash >> 64) as u64, hash as u64]
}

pub(crate) fn join(words: [u64; 2]) -> u128 {
    (u128::from(words[0]) << 64) | u128::from(words[1])
}

/// Spare capacity the run may keep after a merge (beyond a quarter of its length).
const RUN_SLACK: usize = 4096;

/// The settled cases of one partition.
#[derive(Clone, Debug, Default)]
pub(crate) struct SettledCases {
    recent: FxHashMap<[u64; 2], Millis>,
    /// Sorted by hash, no hash twice nor one of `recent`; may hold expired entries (open before `min_open`).
    run: Vec<Tombstone>,
    /// Entries opened before this have expired (the expiry bound of the last [`Self::expire`]).
    min_open: Millis,
    /// `index[b]` is the position in `run` of the first hash whose top `index_bits` bits are
    /// at least `b` (`2^index_bits + 1` slots); empty while the run is small.
    index: Vec<u32>,
    index_bits: u32,
}

/// The index bucket of a hash: its top `bits` bits (`1 ≤ bits < 64`).
fn bucket(hash: &[u64; 2], bits: u32) -> usize {
    (hash[0] >> (64 - bits)) as usize
}

/// Runs shorter than this are bisected whole.
const INDEXED_FROM: usize = 64;
/// Entries per index bucket, on average.
const BUCKET: usize = 8;

impl SettledCases {
    pub(crate) fn new() -> Self {
        SettledCases {
            min_open: Millis::MIN,
            ..SettledCases::default()
        }
    }

    /// Remembers the case with id hash `hash`, opened at `open_at`.
    /// Remembered already, it keeps the later open (an expired entry takes the new one). A
    /// case opened before the expiry bound is expired already: it is not remembered.
    pub(crate) fn insert(&mut self, hash: u128, open_at: Millis) {
        if open_at < self.min_open {
            return;
        }
        let key = words(hash);
        if let Ok(i) = self.find(&key) {
            let t = &mut self.run[i];
            t.open_at = if t.open_at < self.min_open {
                open_at
            } else {
                t.open_at.max(open_at)
            };
            return;
        }
        let slot = self.recent.entry(key).or_insert(open_at);
        *slot = (*slot).max(open_at);
    }

    /// True when the case with id hash `hash` is settled and has not expired.
    pub(crate) fn contains(&self, hash: u128) -> bool {
        let key = words(hash);
        if self.recent.contains_key(&key) {
            return true;
        }
        self.find(&key)
            .is_ok_and(|i| self.run[i].open_at >= self.min_open)
    }

    /// Bisects the bucket of `key` in the run: `Ok` with its position, or `Err` with where
    /// it would go.
    fn find(&self, key: &[u64; 2]) -> Result<usize, usize> {
        let (lo, hi) = match self.index_bits {
            0 => (0, self.run.len()),
            bits => {
                let b = bucket(key, bits);
                (self.index[b] as usize, self.index[b + 1] as usize)
            }
        };
        self.run[lo..hi]
            .binary_search_by(|t| t.hash.cmp(key))
            .map(|i| lo + i)
            .map_err(|i| lo + i)
    }

    /// Rebuilds the bucket index after the run changed.
    fn index_run(&mut self) {
        self.index.clear();
        self.index_bits = 0;
        let n = self.run.len();
        if n < INDEXED_FROM {
            self.index.shrink_to_fit();
            return;
        }
        let bits = (n / BUCKET).ilog2();
        let buckets = 1usize << bits;
        self.index.reserve_exact(buckets + 1);
        let mut pos = 0;
        for b in 0..buckets {
            while pos < n && bucket(&self.run[pos].hash, bits) < b {
                pos += 1;
            }
            self.index.push(pos as u32);
        }
        self.index.push(n as u32);
        self.index_bits = bits;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.recent.is_empty() && self.run.is_empty()
    }

    /// Settled cases remembered (the run's count may include entries expired since the last
    /// merge).
    pub(crate) fn len(&self) -> usize {
        self.recent.len() + self.run.len()
    }

    /// Forgets the cases opened before `min_open` (a bound that only rises), and merges the
    /// recent table into the run when it has grown enough.
    pub(crate) fn expire(&mut self, min_open: Millis) {
        self.min_open = self.min_open.max(min_open);
        let min_open = self.min_open;
        self.recent.retain(|_, open_at| *open_at >= min_open);
        if !self.recent.is_empty() && self.recent.len() >= self.run.len() / 8 {
            self.merge();
        }
    }

    /// Moves the recent table into the run, dropping the run's expired entries, in place.
    fn merge(&mut self) {
        let min_open = self.min_open;
        self.run.retain(|t| t.open_at >= min_open);
        let mut recent: Vec<Tombstone> = self
            .recent
            .drain()
            .map(|(hash, open_at)| Tombstone { hash, open_at })
            .collect();
        recent.sort_unstable_by_key(|t| t.hash);
        // Merge from the back into the run's new tail, so that nothing else is allocated.
        let old = self.run.len();
        self.run.reserve_exact(recent.len());
        self.run.resize(
            old + recent.len(),
            Tombstone {
                hash: [0; 2],
                open_at: 0,
            },
        );
        // (`insert` keeps a hash of the run out of `recent`: no hash is in both.)
        let (mut i, mut k) = (old, old + recent.len());
        for t in recent.into_iter().rev() {
            while i > 0 && self.run[i - 1].hash > t.hash {
                k -= 1;
                i -= 1;
                self.run[k] = self.run[i];
            }
            k -= 1;
            self.run[k] = t;
        }
        debug_assert_eq!(k, i);
        if self.run.capacity() > self.run.len() + self.run.len() / 4 + RUN_SLACK {
            self.run.shrink_to_fit();
        }
        self.index_run();
    }

    /// The live settled cases: (id hash, open time).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, Millis)> + '_ {
        let min_open = self.min_open;
        self.recent
            .iter()
            .map(|(hash, open_at)| (join(*hash), *open_at))
            .chain(
                self.run
                    .iter()
                    .filter(move |t| t.open_at >= min_open)
                    .map(|t| (join(t.hash), t.open_at)),
            )
    }

    /// Approximate heap bytes (hash-table slots plus control bytes, and the run's capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.recent.capacity() * (std::mem::size_of::<([u64; 2], Millis)>() + 1)
            + self.run.capacity() * std::mem::size_of::<Tombstone>()
            + self.index.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn hash_words_round_trip() {
        for h in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(join(words(h)), h);
        }
        // Sorting by words sorts by the hash.
        assert!(words(1u128 << 64) > words(u64::MAX as u128));
    }

    /// Times are relative to a clock that ticks once per operation (as event time rises).
    #[derive(Clone, Debug)]
    enum Op {
        /// A case settles, opened this long before now.
        Insert(u8, i64),
        /// Cases opened more than this long before now expire.
        Expire(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), 0i64..300).prop_map(|(h, age)| Op::Insert(h, age)),
            1 => (100i64..400).prop_map(Op::Expire),
        ]
    }

    proptest! {
        /// Against a plain map with the same rules (an insert keeps the later open; expiry
        /// removes opens before the highest bound so far, and an insert below it is
        /// ignored), whatever the merges did.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 0..3000), spread in 0u32..3) {
            let mut set = SettledCases::new();
            let mut model: HashMap<u128, Millis> = HashMap::new();
            let mut bound = Millis::MIN;
            // Hashes far apart in both words, or only in the low word.
            let hash = |h: u8| -> u128 {
                match spread {
                    0 => u128::from(h),
                    1 => u128::from(h) << 64 | u128::from(h ^ 0x5a),
                    _ => u128::from(h).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                }
            };
            for (now, op) in (0i64..).zip(ops) {
                match op {
                    Op::Insert(h, age) => {
                        let t = now - age;
                        set.insert(hash(h), t);
                        if t < bound {
                            continue;
                        }
                        let e = model.entry(hash(h)).or_insert(t);
                        *e = (*e).max(t);
                    }
                    Op::Expire(ttl) => {
                        let b = now - ttl;
                        bound = bound.max(b);
                        set.expire(b);
                        model.retain(|_, t| *t >= bound);
                    }
                }
                // A small table merges often: exercise it by forcing merges now and then.
                if set.recent.len() > 40 {
                    set.merge();
                }
                if now % 97 == 0 {
                    for h in 0..=u8::MAX {
                        prop_assert_eq!(set.contains(hash(h)), model.contains_key(&hash(h)));
                    }
                }
            }
            for h in 0..=u8::MAX {
                prop_assert_eq!(set.contains(hash(h)), model.contains_key(&hash(h)), "hash {}", h);
            }
            let mut listed: Vec<(u128, Millis)> = set.iter().collect();
            listed.sort_unstable();
            let mut expected: Vec<(u128, Millis)> = model.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(listed, expected);
            prop_assert!(set.run.windows(2).all(|w| w[0].hash < w[1].hash));
        }
    }

    #[test]
    fn merge_keeps_the_run_exactly_sized() {
        let mut set = SettledCases::new();
        for i in 0..20_000u128 {
            set.insert(i * 7919, 100);
        }
        set.expire(0);
        assert!(set.recent.is_empty(), "the first expiry merges");
        assert_eq!(set.run.len(), 20_000);
        // A run this long is indexed: about eight entries per bucket.
        assert_eq!(set.index_bits, (20_000 / BUCKET).ilog2());
        assert!((1..=20_000u128).step_by(97).all(|i| set.contains(i * 7919)));
        assert!(set.run.capacity() <= 20_000 + 20_000 / 4 + RUN_SLACK);
        // Fewer than an eighth of the run: no merge yet.
        for i in 0..2_000u128 {
            set.insert(u128::MAX - i, 500);
        }
        set.expire(0);
        assert_eq!(set.recent.len(), 2_000);
        assert_eq!(set.len(), 22_000);
        // Everything of the run expires: the next merge leaves only the new cases.
        for i in 2_000..3_000u128 {
            set.insert(u128::MAX - i, 500);
        }
        set.expire(200);
        assert_eq!(set.run.len(), 3_000);
        assert_eq!(set.len(), 3_000);
        assert!(set.run.capacity() <= 3_000 + 3_000 / 4 + RUN_SLACK);
        assert!(!set.contains(7919));
        assert!(set.contains(u128::MAX));
    }
}
