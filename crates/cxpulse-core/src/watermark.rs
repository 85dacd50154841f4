//! Event-time progress: per-partition watermarks and the job watermark.
//!
//! A partition's watermark is the highest event time it has delivered minus the allowed
//! lateness. The job watermark is the minimum over *active* partitions; a partition that has
//! delivered nothing for `idle_timeout` (processing time) stops holding it back. When every
//! partition is idle the job watermark is the maximum of their watermarks (the stream as a
//! whole went quiet; the last windows still close). The job watermark never moves backwards.

use crate::events::Millis;

/// Source partition number (a Kafka partition, or any shard of the input).
pub type PartitionId = i32;

#[derive(Clone, Debug)]
struct PartitionClock {
    partition: PartitionId,
    /// Highest accepted event time, if any.
    max_event_time: Option<Millis>,
    /// Processing time of the last record (or of the assignment).
    last_seen: Millis,
}

/// Tracks watermarks per partition and derives the job watermark.
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    allowed_lateness_ms: Millis,
    idle_timeout_ms: Millis,
    partitions: Vec<PartitionClock>,
    job_watermark: Option<Millis>,
}

impl WatermarkTracker {
    pub fn new(allowed_lateness_ms: Millis, idle_timeout_ms: Millis) -> Self {
        WatermarkTracker {
            allowed_lateness_ms,
            idle_timeout_ms,
            partitions: Vec::new(),
            job_watermark: None,
        }
    }

    fn clock_mut(&mut self, partition: PartitionId, now: Millis) -> &mut PartitionClock {
        let pos = match self
            .partitions
            .iter()
            .position(|c| c.partition == partition)
        {
            Some(pos) => pos,
            None => {
                self.partitions.push(PartitionClock {
                    partition,
                    max_event_time: None,
                    last_seen: now,
                });
                self.partitions.len() - 1
            }
        };
        &mut self.partitions[pos]
    }

    /// A partition was assigned: until it delivers an event or turns idle it holds the
    /// job watermark back (it may still deliver old data).
    pub fn assign(&mut self, partition: PartitionId, now: Millis) {
        let clock = self.clock_mut(partition, now);
        clock.last_seen = clock.last_seen.max(now);
    }

    /// A partition was revoked: it no longer takes part in the job watermark.
    pub fn revoke(&mut self, partition: PartitionId) {
        self.partitions.retain(|c| c.partition != partition);
    }

    /// A record arrived from `partition` (accepted or not): the partition is active.
    pub fn touch(&mut self, partition: PartitionId, now: Millis) {
        let clock = self.clock_mut(partition, now);
        clock.last_seen = clock.last_seen.max(now);
    }

    /// An accepted event with this event time arrived from `partition`.
    pub fn observe(&mut self, partition: PartitionId, event_time: Millis, now: Millis) {
        let clock = self.clock_mut(partition, now);
        clock.last_seen = clock.last_seen.max(now);
        clock.max_event_time = Some(
            clock
                .max_event_time
                .map_or(event_time, |m| m.max(event_time)),
        );
    }

    /// Recomputes the job watermark at processing time `now` and returns it.
    pub fn advance(&mut self, now: Millis) -> Option<Millis> {
        let mut blocked = false;
        let mut any_active = false;
        let mut active_min: Option<Millis> = None;
        let mut idle_max: Option<Millis> = None;
        for c in &self.partitions {
            let active = now.saturating_sub(c.last_seen) <= self.idle_timeout_ms;
            let wm = c
                .max_event_time
                .map(|m| m.saturating_sub(self.allowed_lateness_ms));
            match (active, wm) {
                // An active partition that has delivered nothing yet holds everything back.
                (true, None) => blocked = true,
                (true, Some(w)) => {
                    any_active = true;
                    active_min = Some(active_min.map_or(w, |m| m.min(w)));
                }
                (false, Some(w)) => idle_max = Some(idle_max.map_or(w, |m| m.max(w))),
                (false, None) => {}
            }
        }
        let candidate = if blocked {
            None
        } else if any_active {
            active_min
        } else {
            idle_max
        };
        if let Some(c) = candidate {
            self.job_watermark = Some(self.job_watermark.map_or(c, |w| w.max(c)));
        }
        self.job_watermark
    }

    /// The job watermark as of the last [`WatermarkTracker::advance`].
    pub fn current(&self) -> Option<Millis> {
        self.job_watermark
    }

    /// The watermark of one partition (its max event time minus the lateness).
    pub fn partition_watermark(&self, partition: PartitionId) -> Option<Millis> {
        self.partitions
            .iter()
            .find(|c| c.partition == partition)
            .and_then(|c| c.max_event_time)
            .map(|m| m.saturating_sub(self.allowed_lateness_ms))
    }

    /// Partitions currently known, with their watermark and whether they count as idle at `now`.
    pub fn partitions(
        &self,
        now: Millis,
    ) -> impl Iterator<Item = (PartitionId, Option<Millis>, bool)> + '_ {
        self.partitions.iter().map(move |c| {
            (
                c.partition,
                c.max_event_time
                    .map(|m| m.saturating_sub(self.allowed_lateness_ms)),
                now.saturating_sub(c.last_seen) > self.idle_timeout_ms,
            )
        })
    }
}

/// What a [`WatermarkTracker`] must remember across a restart: the highest event time of
/// every source and the job watermark (processing-time idleness starts afresh).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkSnapshot {
    pub sources: Vec<(PartitionId, Option<Millis>)>,
    pub job_watermark: Option<Millis>,
}

impl WatermarkTracker {
    pub fn snapshot(&self) -> WatermarkSnapshot {
        WatermarkSnapshot {
            sources: self
                .partitions
                .iter()
                .map(|c| (c.partition, c.max_event_time))
                .collect(),
            job_watermark: self.job_watermark,
        }
    }

    /// Restores `snapshot` at processing time `now` (every source counts as just seen).
    pub fn restore(&mut self, snapshot: &WatermarkSnapshot, now: Millis) {
        for (partition, max) in &snapshot.sources {
            let clock = self.clock_mut(*partition, now);
            clock.max_event_time = clock.max_event_time.max(*max);
        }
        self.job_watermark = self.job_watermark.max(snapshot.job_watermark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_watermark_is_min_over_active_partitions() {
        let mut t = WatermarkTracker::new(1_000, 10_000);
        t.observe(0, 50_000, 0);
        t.observe(1, 20_000, 0);
        assert_eq!(t.advance(0), Some(19_000));
        t.observe(1, 70_000, 1);
        assert_eq!(t.advance(1), Some(49_000));
    }

    #[test]
    fn idle_partition_stops_holding_back_and_watermark_never_regresses() {
        let mut t = WatermarkTracker::new(0, 10_000);
        t.observe(0, 100_000, 0);
        t.observe(1, 5_000, 0);
        assert_eq!(t.advance(5_000), Some(5_000));
        // Partition 1 goes quiet; partition 0 keeps delivering.
        t.observe(0, 200_000, 20_000);
        assert_eq!(t.advance(20_000), Some(200_000));
        // Partition 1 wakes up with old data: the job watermark does not move back.
        t.observe(1, 6_000, 21_000);
        assert_eq!(t.advance(21_000), Some(200_000));
    }

    #[test]
    fn assigned_partition_without_data_holds_back_until_idle() {
        let mut t = WatermarkTracker::new(0, 10_000);
        t.observe(0, 100_000, 0);
        t.assign(1, 0);
        assert_eq!(t.advance(1_000), None);
        assert_eq!(t.advance(11_000), Some(100_000));
    }

    #[test]
    fn all_idle_releases_the_maximum() {
        let mut t = WatermarkTracker::new(0, 1_000);
        t.observe(0, 10_000, 0);
        t.observe(1, 30_000, 0);
        assert_eq!(t.advance(0), Some(10_000));
        assert_eq!(t.advance(5_000), Some(30_000));
    }

    #[test]
    fn revoked_partition_no_longer_counts() {
        let mut t = WatermarkTracker::new(0, 10_000);
        t.observe(0, 10_000, 0);
        t.observe(1, 30_000, 0);
        assert_eq!(t.advance(0), Some(10_000));
        t.revoke(0);
        assert_eq!(t.advance(0), Some(30_000));
    }
}
