//! The latest row of every (window, channel, segment) series.

use cxpulse_core::segments::ALL_LABEL;
use cxpulse_core::{Channel, KpiRow, Millis};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One exported series: a window kind and a grouping-set key (`all` stands for "every").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub window: Arc<str>,
    pub channel: &'static str,
    pub segment: Arc<str>,
}

#[derive(Clone, Debug)]
struct Entry<T> {
    end: Millis,
    version: u64,
    value: T,
}

/// Keeps, per (window, channel label, segment label), the value derived from the row with
/// the latest `end` (then the highest `version`), and forgets series that are absent from the
/// latest evaluation of their window kind.
///
/// "Latest evaluation" of a window kind = its greatest `end` seen so far. The engine emits a
/// row for every non-empty series at every end, so a series whose row for that end is
/// missing has become empty (its data slid out of the window): it is dropped, and with it
/// every gauge that was exported for it. A correction of an older end never replaces a newer
/// row; a correction of the same end (higher version) does.
///
/// Only rows merged over the engine's partitions (`partition == None`) are taken; a
/// partition's own part of a window (`Some(p)`) is skipped.
#[derive(Clone, Debug)]
pub struct LatestRows<T> {
    entries: BTreeMap<SeriesKey, Entry<T>>,
    latest_end: BTreeMap<Arc<str>, Millis>,
    all: Arc<str>,
}

impl<T> Default for LatestRows<T> {
    fn default() -> Self {
        LatestRows {
            entries: BTreeMap::new(),
            latest_end: BTreeMap::new(),
            all: Arc::from(ALL_LABEL),
        }
    }
}

impl<T> LatestRows<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The series key of a row.
    pub fn key_of(&self, row: &KpiRow) -> SeriesKey {
        SeriesKey {
            window: row.window.clone(),
            channel: row.channel.map_or(ALL_LABEL, Channel::as_str),
            segment: row.segment.clone().unwrap_or_else(|| self.all.clone()),
        }
    }

    /// Applies a batch of emitted rows (any order); `derive` is called only for rows that
    /// become the latest of their series. Returns how many series were dropped.
    pub fn apply<'a>(
        &mut self,
        rows: impl IntoIterator<Item = &'a KpiRow>,
        mut derive: impl FnMut(&KpiRow) -> T,
    ) -> usize {
        let mut touched: Vec<Arc<str>> = Vec::new();
        for row in rows {
            if row.partition.is_some() {
                continue;
            }
            let key = self.key_of(row);
            let newer = self
                .entries
                .get(&key)
                .is_none_or(|e| (row.end, row.version) > (e.end, e.version));
            let latest = self.latest_end.entry(row.window.clone()).or_insert(row.end);
            if row.end > *latest {
                *latest = row.end;
            }
            if newer && row.end >= *latest {
                if !touched.contains(&row.window) {
                    touched.push(row.window.clone());
                }
                self.entries.insert(
                    key,
                    Entry {
                        end: row.end,
                        version: row.version,
                        value: derive(row),
                    },
                );
            }
        }
        if touched.is_empty() {
            return 0;
        }
        let before = self.entries.len();
        let latest_end = &self.latest_end;
        self.entries.retain(|k, e| {
            !touched.contains(&k.window) || latest_end.get(&k.window).is_none_or(|l| e.end >= *l)
        });
        before - self.entries.len()
    }

    /// The value of one series.
    pub fn get(&self, window: &str, channel: &str, segment: &str) -> Option<&T> {
        self.entries
            .iter()
            .find(|(k, _)| &*k.window == window && k.channel == channel && &*k.segment == segment)
            .map(|(_, e)| &e.value)
    }

    /// Every series with its window end and version, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesKey, Millis, u64, &T)> {
        self.entries
            .iter()
            .map(|(k, e)| (k, e.end, e.version, &e.value))
    }

    /// The latest end seen for a window kind.
    pub fn latest_end(&self, window: &str) -> Option<Millis> {
        self.latest_end.get(window).copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
