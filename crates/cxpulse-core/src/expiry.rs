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
use crate::events::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
    }
}
