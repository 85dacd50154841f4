//! Keys by the event time at which a partition's state under them is to be looked at again.
//!
//! The engine forgets state once a floor passes it: an aged case once it settles or
//! expires, an outbound contact once no detractor it could close can still come, a
//! detractor once it is due and its deadline is behind the floor. Sweeping every entry at
//! every eviction costs the size of the state (a week of unsettled cases, a day of
//! detractors) at every advance; a queue of (time, key) costs only what leaves.
//!
//! Entries are hints, not the truth: whoever pops a key looks the state up again and
//! forgets only what the floor really passed. A key may be queued more than once (its time
//! moved earlier, or it has several items); the later entries then find nothing to do.
use crate::events::{Millis, MINUTE_MS};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// A min-queue of `(time, key)`.
#[derive(Clone, Debug)]
pub(crate) struct ExpiryQueue<K: Ord> {
    heap: BinaryHeap<Reverse<(Millis, K)>>,
}

impl<K: Ord> Default for ExpiryQueue<K> {
    fn default() -> Self {
        ExpiryQueue {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> ExpiryQueue<K> {
    /// Queues `key` to be looked at once the floor passes `at`.
    pub(crate) fn push(&mut self, at: Millis, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// Takes the earliest entry whose time lies before `limit`.
    pub(crate) fn pop_before(&mut self, limit: Millis) -> Option<(Millis, K)> {
        let Reverse((at, _)) = self.heap.peek()?;
        if *at >= limit {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Millis, K)> + '_ {
        self.heap.iter().map(|Reverse(entry)| *entry)
    }

    /// Bytes of its buffer.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<(Millis, K)>()
    }
}

impl<K: Ord + Copy> FromIterator<(Millis, K)> for ExpiryQueue<K> {
    fn from_iter<I: IntoIterator<Item = (Millis, K)>>(entries: I) -> Self {
        ExpiryQueue {
            heap: entries.into_iter().map(Reverse).collect(),
        }
    }
}

/// Keys by the minute at which their state is due, without the time itself: whoever
/// drains a key looks its state up and says when it is due now. A `[u64; 2]` key takes 16
/// bytes, where an [`ExpiryQueue`] entry takes 24 in a buffer that doubles; the aged cases
/// of a partition (a week of them) are the queue this is for.
#[derive(Clone, Debug, Default)]
pub(crate) struct MinuteBuckets<K> {
    buckets: BTreeMap<Millis, Vec<K>>,
}

impl<K: Copy> MinuteBuckets<K> {
    /// Queues `key` to be looked at once the floor passes `at`.
    pub(crate) fn push(&mut self, at: Millis, key: K) {
        self.buckets.entry(minute_of(at)).or_default().push(key);
    }

    /// Hands `look` every key queued at a time that may lie before `limit`: each key of
    /// the minutes before `limit`'s, and of `limit`'s own minute. `look` returns `None`
    /// when the key is done with, or the time its state is due now: a key of an earlier
    /// minute is queued again at that time (at `limit` if that is earlier: it is looked at
    /// again next time); a key of `limit`'s minute stays.
    pub(crate) fn drain_before(
        &mut self,
        limit: Millis,
        mut look: impl FnMut(K) -> Option<Millis>,
    ) {
        let current = minute_of(limit);
        let mut again = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= current {
                break;
            }
            for key in entry.remove() {
                if let Some(due) = look(key) {
                    again.push((due.max(limit), key));
                }
            }
        }
        if let Some(keys) = self.buckets.get_mut(&current) {
            keys.retain(|key| look(*key).is_some());
            if keys.is_empty() {
                self.buckets.remove(&current);
            }
        }
        for (due, key) in again {
            self.push(due, key);
        }
    }

    /// Bytes of its buffers (and about 48 per minute that holds keys).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets
            .values()
            .map(|keys| 48 + keys.capacity() * std::mem::size_of::<K>())
            .sum()
    }
}

/// The start of the (UTC) minute holding `t`: the bucket of [`MinuteBuckets`].
fn minute_of(t: Millis) -> Millis {
    t.div_euclid(MINUTE_MS) * MINUTE_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Popping before a limit yields exactly the entries before it, earliest first
        /// (ties by key), and leaves the others.
        #[test]
        fn pops_exactly_the_entries_before_the_limit(
            entries in proptest::collection::vec((-50i64..50, 0u8..8), 0..60),
            limit in -60i64..60,
        ) {
            let mut queue: ExpiryQueue<u8> = entries.iter().copied().collect();
            let mut popped = Vec::new();
            while let Some(entry) = queue.pop_before(limit) {
                popped.push(entry);
            }
            let mut expected: Vec<_> = entries.iter().copied().filter(|(t, _)| *t < limit).collect();
            expected.sort();
            prop_assert_eq!(popped, expected);
            let mut left: Vec<_> = queue.iter().collect();
            left.sort();
            let mut expected_left: Vec<_> =
                entries.iter().copied().filter(|(t, _)| *t >= limit).collect();
            expected_left.sort();
            prop_assert_eq!(left, expected_left);
        }

        /// Draining before a limit looks at every key due before it (and perhaps a few due
        /// later in the limit's minute), never loses a key that is not done with, and
        /// looks at it again once its time comes.
        #[test]
        fn buckets_hand_out_every_key_due_before_the_limit(
            entries in proptest::collection::vec(
                (-300_000i64..300_000, 0u8..16, prop_oneof![Just(0i64), 0i64..200_000]),
                0..60,
            ),
            limits in proptest::collection::vec(-300_000i64..400_000, 1..5),
        ) {
            // Key k is due at the time of its last entry plus that entry's delay (entries
            // are hints: the state may be due later than queued); done with once looked at
            // after that time.
            let mut due: std::collections::BTreeMap<u8, Millis> = Default::default();
            let mut buckets = MinuteBuckets::default();
            for &(t, k, delay) in &entries {
                buckets.push(t, k);
                due.insert(k, t + delay);
            }
            let mut limits = limits;
            limits.sort();
            for limit in limits {
                buckets.drain_before(limit, |k| {
                    match due.get(&k) {
                        Some(&t) if t < limit => {
                            due.remove(&k);
                            None
                        }
                        Some(&t) => Some(t),
                        None => None,
                    }
                });
                prop_assert!(due.values().all(|t| *t >= limit), "a key due before {} is left", limit);
            }
            // Every key left is still queued: a final drain far ahead looks at each.
            let mut seen = std::collections::BTreeSet::new();
            buckets.drain_before(Millis::MAX / 2, |k| {
                seen.insert(k);
                None
            });
            let left: std::collections::BTreeSet<u8> = due.keys().copied().collect();
            prop_assert!(left.is_subset(&seen));
        }
    }
}
