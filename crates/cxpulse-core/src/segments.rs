//! The cardinality guard for customer segments.
//!
//! Segment names come from upstream systems and are unbounded; every distinct name becomes
//! a series in memory, a Prometheus label value and rows in ClickHouse. The guard admits at
//! most `max_segments` names (configured ones first, then first come, first served) and folds
//! every other name into `other`, counting each folded event.

use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Interned segment identifier.
pub type SegmentId = u32;

/// Label of the fold-in segment.
pub const OTHER_SEGMENT: &str = "other";
/// Label reserved for "all segments"; a segment with this name is folded into `other`.
pub const ALL_LABEL: &str = "all";

#[derive(Clone, Debug)]
pub struct SegmentGuard {
    max_segments: usize,
    ids: FxHashMap<Arc<str>, SegmentId>,
    names: Vec<Arc<str>>,
    folded_events: u64,
}

impl SegmentGuard {
    /// `OTHER_SEGMENT` is always present as id 0 and does not count toward `max_segments`.
    pub fn new(max_segments: usize, preset: &[String]) -> Self {
        let mut guard = SegmentGuard {
            max_segments,
            ids: FxHashMap::default(),
            names: Vec::new(),
            folded_events: 0,
        };
        guard.insert(OTHER_SEGMENT);
        for name in preset {
            guard.admit(name);
        }
        guard.folded_events = 0;
        guard
    }

    fn insert(&mut self, name: &str) -> SegmentId {
        let id = SegmentId::try_from(self.names.len()).unwrap_or(SegmentId::MAX);
        let name: Arc<str> = Arc::from(name);
        self.ids.insert(name.clone(), id);
        self.names.push(name);
        id
    }

    /// The id for `name`, admitting it if there is room, else `other` (counted).
    pub fn admit(&mut self, name: &str) -> SegmentId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        if name != ALL_LABEL && self.names.len() - 1 < self.max_segments {
            return self.insert(name);
        }
        self.folded_events += 1;
        0
    }

    pub fn name(&self, id: SegmentId) -> &Arc<str> {
        self.names.get(id as usize).unwrap_or(&self.names[0])
    }

    /// Admitted segment names (including `other`).
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Events whose segment was folded into `other`.
    pub fn folded_events(&self) -> u64 {
        self.folded_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_beyond_the_limit_and_counts() {
        let mut g = SegmentGuard::new(2, &["enterprise".to_string()]);
        let e = g.admit("enterprise");
        let s = g.admit("smb");
        assert_ne!(e, s);
        assert_eq!(g.admit("consumer"), 0);
        assert_eq!(g.admit("consumer"), 0);
        assert_eq!(g.admit("smb"), s);
        assert_eq!(g.folded_events(), 2);
        assert_eq!(&**g.name(0), OTHER_SEGMENT);
        assert_eq!(g.admit(ALL_LABEL), 0, "`all` is reserved");
        assert_eq!(g.admit(OTHER_SEGMENT), 0);
        assert_eq!(g.folded_events(), 3);
    }
}
