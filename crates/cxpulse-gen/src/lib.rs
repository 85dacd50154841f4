//! A deterministic generator of realistic customer-experience traffic.
//!
//! Customers (each with a stable segment and home channel) visit, buy, open support cases
//! that get replies and resolutions after channel-typical delays, answer NPS/CSAT/CES surveys
//! with channel-typical score distributions (comments in English, Persian, Thai and Romanian),
//! and detractors are often followed up by an outbound contact. Delivery is realistic too:
//! small jitter, a share of late events, a share of duplicates. An optional [`Scenario`]
//! shifts one KPI from a point in time, so alerts and dashboards can be exercised.
//!
//! The same seed always yields the same stream.

use cxpulse_core::{
    Amount, Channel, CxEvent, Millis, SurveyMetric, SurveyResponse, TouchpointEvent,
    TouchpointKind, HOUR_MS, MINUTE_MS,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use thiserror::Error;

/// A KPI shift starting at some point of the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Only responses on this channel (None = all channels).
    pub channel: Option<Channel>,
    /// Only responses of this segment (None = all segments).
    pub segment: Option<String>,
    /// From this event-time offset after the stream start.
    pub from_offset_ms: Millis,
    /// How many NPS points to take away (30 → NPS about 30 points lower).
    pub nps_drop_points: f64,
}

impl Scenario {
    /// Parses `"nps-drop:<points>:<channel|all>:<segment|all>:<minute offset>"`,
    /// e.g. `nps-drop:30:phone:enterprise:10`.
    pub fn parse(text: &str) -> Result<Scenario, GenError> {
        let bad = || GenError::BadScenario(text.to_string());
        let parts: Vec<&str> = text.split(':').collect();
        let [kind, points, channel, segment, minute] = parts.as_slice() else {
            return Err(bad());
        };
        if *kind != "nps-drop" {
            return Err(bad());
        }
        let nps_drop_points: f64 = points.parse().map_err(|_| bad())?;
        if !(0.0..=200.0).contains(&nps_drop_points) {
            return Err(bad());
        }
        let channel = match *channel {
            "all" => None,
            c => {
                let parsed = Channel::from_symbol(c);
                if parsed == Channel::Unknown {
                    return Err(bad());
                }
                Some(parsed)
            }
        };
        let segment = (*segment != "all").then(|| segment.to_string());
        let minute: i64 = minute.parse().map_err(|_| bad())?;
        Ok(Scenario {
            channel,
            segment,
            from_offset_ms: minute * MINUTE_MS,
            nps_drop_points,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum GenError {
    #[error("scenario {0:?} is not of the form nps-drop:<points 0..200>:<channel|all>:<segment|all>:<minute>")]
    BadScenario(String),
    #[error("generator setting `{0}` is out of range")]
    OutOfRange(&'static str),
}

/// Generator settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Event time of the first event.
    pub start: Millis,
    /// Events per second of event time (touchpoints and responses together, on average).
    pub events_per_second: f64,
    pub customers: u64,
    pub segments: Vec<String>,
    /// Share of events delivered late (up to `late_max_ms` after their event time).
    pub late_share: f64,
    pub late_max_ms: Millis,
    /// Share of events delivered twice.
    pub duplicate_share: f64,
    pub scenario: Option<Scenario>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            start: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            events_per_second: 200.0,
            customers: 50_000,
            segments: ["enterprise", "smb", "consumer", "public_sector", "partner"]
                .map(String::from)
                .to_vec(),
            late_share: 0.01,
            late_max_ms: 10 * MINUTE_MS,
            duplicate_share: 0.005,
            scenario: None,
        }
    }
}

impl GeneratorConfig {
    pub fn validate(&self) -> Result<(), GenError> {
        if !(self.events_per_second > 0.0 && self.events_per_second <= 1e7) {
            return Err(GenError::OutOfRange("events_per_second"));
        }
        if self.customers == 0 {
            return Err(GenError::OutOfRange("customers"));
        }
        if self.segments.is_empty() {
            return Err(GenError::OutOfRange("segments"));
        }
        if !(0.0..=1.0).contains(&self.late_share) || !(0.0..=1.0).contains(&self.duplicate_share) {
            return Err(GenError::OutOfRange("late_share/duplicate_share"));
        }
        if self.late_max_ms < 0 {
            return Err(GenError::OutOfRange("late_max_ms"));
        }
        Ok(())
    }
}

/// Customer comments by sentiment; every language the board must show correctly.
const COMMENTS_POSITIVE: &[(&str, &str)] = &[
    ("en", "Quick and friendly help, thank you!"),
    ("en", "Checkout was smooth and delivery came early."),
    ("fa", "خدمات عالی بود، خیلی سریع پاسخ دادند."),
    ("fa", "از پشتیبانی بسیار راضی هستم."),
    ("th", "บริการดีมาก ตอบกลับเร็ว ขอบคุณครับ"),
    ("th", "สั่งซื้อง่าย ส่งของไว"),
    ("ro", "Mulțumesc, a fost rapid și politicos."),
    ("ro", "Aplicația funcționează foarte bine."),
];
const COMMENTS_NEUTRAL: &[(&str, &str)] = &[
    ("en", "It was okay, took a bit long."),
    ("fa", "بد نبود ولی کمی طول کشید."),
    ("th", "โอเค แต่รอนานไปหน่อย"),
    ("ro", "A fost în regulă, dar a durat cam mult."),
];
const COMMENTS_NEGATIVE: &[(&str, &str)] = &[
    ("en", "Waited two days for an answer. Very disappointed."),
    ("en", "The app crashed at checkout and nobody helped 😠"),
    ("fa", "هنوز جوابی نگرفتم، خیلی ناامید شدم."),
    ("fa", "سفارشم دیر رسید و کسی پاسخگو نبود."),
    ("th", "รอนานมาก ไม่มีใครช่วยเลย"),
    ("ro", "Am așteptat două zile un răspuns. Foarte dezamăgit."),
    ("ro", "Comanda a venit deteriorată și nimeni nu răspunde."),
];

/// Channel mix (weights) for where journeys happen.
const CHANNEL_WEIGHTS: [(Channel, u32); 7] = [
    (Channel::Web, 30),
    (Channel::MobileApp, 25),
    (Channel::Email, 10),
    (Channel::Phone, 10),
    (Channel::Chat, 12),
    (Channel::Social, 5),
    (Channel::Store, 8),
];

/// Typical first-response delay per channel (median, ms).
fn first_response_median(channel: Channel) -> f64 {
    match channel {
        Channel::Phone | Channel::Store => 2.0 * MINUTE_MS as f64,
        Channel::Chat => 4.0 * MINUTE_MS as f64,
        Channel::Web | Channel::MobileApp => 45.0 * MINUTE_MS as f64,
        Channel::Social => 2.0 * HOUR_MS as f64,
        Channel::Email | Channel::Unknown => 6.0 * HOUR_MS as f64,
    }
}

/// Mean NPS-ish quality per channel: shifts the score distribution.
fn channel_mood(channel: Channel) -> f64 {
    match channel {
        Channel::Store => 0.6,
        Channel::Chat | Channel::MobileApp => 0.4,
        Channel::Web => 0.3,
        Channel::Email => 0.1,
        Channel::Social => 0.0,
        Channel::Phone | Channel::Unknown => -0.1,
    }
}

/// One generated record with its delivery time.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Processing time at which the record is delivered (≥ event time).
    pub arrival: Millis,
    pub event: CxEvent,
    /// True for a second copy of an already delivered event.
    pub duplicate: bool,
}

/// The generator: an endless iterator of deliveries in arrival order.
pub struct Generator {
    cfg: GeneratorConfig,
    rng: ChaCha8Rng,
    clock: Millis,
    seq: u64,
    next_case: u64,
    /// Follow-ups scheduled in event time (replies, resolutions, outbound contacts).
    scheduled: BinaryHeap<Reverse<(Millis, u64)>>,
    scheduled_events: std::collections::HashMap<u64, CxEvent>,
    /// Deliveries waiting for their arrival time.
    outbox: BinaryHeap<Reverse<(Millis, u64)>>,
    outbox_items: std::collections::HashMap<u64, Delivery>,
    mean_gap_ms: f64,
    gap_carry: f64,
}

impl Generator {
    pub fn new(cfg: GeneratorConfig) -> Result<Self, GenError> {
        cfg.validate()?;
        Ok(Generator {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            clock: cfg.start,
            seq: 0,
            next_case: 0,
            scheduled: BinaryHeap::new(),
            scheduled_events: Default::default(),
            outbox: BinaryHeap::new(),
            outbox_items: Default::default(),
            mean_gap_ms: 1000.0 / cfg.events_per_second,
            gap_carry: 0.0,
            cfg,
        })
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// The event time reached so far.
    pub fn clock(&self) -> Millis {
        self.clock
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        // Box–Muller for a standard normal.
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (sigma * z).exp()
    }

    fn pick_channel(&mut self) -> Channel {
        let total: u32 = CHANNEL_WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.random_range(0..total);
        for (c, w) in CHANNEL_WEIGHTS {
            if x < w {
                return c;
            }
            x -= w;
        }
        Channel::Web
    }

    fn customer(&mut self) -> (String, String) {
        // A skewed pick: some customers are much more active than others.
        let r: f64 = self.rng.random();
        let n = ((r * r) * self.cfg.customers as f64) as u64;
        let id = format!("cust-{n:07}");
        // Stable segment per customer, skewed toward the first segments.
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
        let k = self.cfg.segments.len() as u64;
        let idx = ((h % (k * k)) as f64).sqrt() as usize;
        let segment =
            self.cfg.segments[(k as usize - 1).saturating_sub(idx).min(k as usize - 1)].clone();
        (id, segment)
    }

    fn score(&mut self, metric: SurveyMetric, channel: Channel, segment: &str, at: Millis) -> i32 {
        let mood = channel_mood(channel);
        match metric {
            SurveyMetric::Nps => {
                let mut promoter = 0.45 + 0.2 * mood;
                let mut detractor = 0.22 - 0.15 * mood;
                if let Some(s) = &self.cfg.scenario {
                    let applies = s.channel.is_none_or(|c| c == channel)
                        && s.segment.as_deref().is_none_or(|g| g == segment)
                        && at >= self.cfg.start + s.from_offset_ms;
                    if applies {
                        // Moving x/200 of the answers from promoters to detractors lowers
                        // NPS by x points in expectation.
                        let shift = (s.nps_drop_points / 200.0).min(promoter);
                        promoter -= shift;
                        detractor += shift;
                    }
                }
                let r: f64 = self.rng.random();
                if r < promoter {
                    self.rng.random_range(9..=10)
                } else if r < promoter + detractor {
                    // Detractors lean toward the upper part of 0–6.
                    let x: f64 = self.rng.random();
                    (6.0 - (x * x * 7.0).floor()).max(0.0) as i32
                } else {
                    self.rng.random_range(7..=8)
                }
            }
            SurveyMetric::Csat => {
                if self.rng.random::<f64>() < 0.78 + 0.1 * mood {
                    if self.rng.random::<f64>() < 0.55 {
                        5
                    } else {
                        4
                    }
                } else {
                    self.rng.random_range(1..=3)
                }
            }
            SurveyMetric::Ces => {
                if self.rng.random::<f64>() < 0.7 + 0.1 * mood {
                    self.rng.random_range(5..=7)
                } else {
                    self.rng.random_range(1..=4)
                }
            }
            SurveyMetric::Unknown => 0,
        }
    }

    fn comment(&mut self, metric: SurveyMetric, score: i32) -> (Option<String>, Option<String>) {
        if self.rng.random::<f64>() > 0.35 {
            return (None, None);
        }
        let (min, max) = metric.scale().unwrap_or((0, 10));
        let q = f64::from(score - min) / f64::from(max - min);
        let pool = if q >= 0.8 {
            COMMENTS_POSITIVE
        } else if q >= 0.55 {
            COMMENTS_NEUTRAL
        } else {
            COMMENTS_NEGATIVE
        };
        let (lang, text) = pool[self.rng.random_range(0..pool.len())];
        (Some(text.to_string()), Some(lang.to_string()))
    }

    fn touchpoint(
        &mut self,
        at: Millis,
        customer: &str,
        segment: &str,
        channel: Channel,
        kind: TouchpointKind,
        touchpoint: &str,
    ) -> TouchpointEvent {
        let seq = self.next_seq();
        TouchpointEvent {
            event_id: format!("ev-{:016x}-{seq}", self.cfg.seed),
            occurred_at: at,
            customer_id: customer.to_string(),
            segment: segment.to_string(),
            channel,
            touchpoint: touchpoint.to_string(),
            kind,
            case_id: None,
            amount: None,
            currency: None,
            attributes: Vec::new(),
        }
    }

    fn schedule(&mut self, event: CxEvent) {
        let id = self.next_seq();
        self.scheduled.push(Reverse((event.event_time(), id)));
        self.scheduled_events.insert(id, event);
    }

    /// Generates the next journey step at the current clock.
    fn step(&mut self) {
        let gap = self.lognormal(self.mean_gap_ms * 0.85, 0.5) + self.gap_carry;
        let whole = gap.floor();
        self.gap_carry = gap - whole;
        self.clock += whole as Millis;
        let at = self.clock;
        let (customer, segment) = self.customer();
        let channel = self.pick_channel();
        let roll: f64 = self.rng.random();
        if roll < 0.62 {
            let e = self.touchpoint(
                at,
                &customer,
                &segment,
                channel,
                TouchpointKind::Visit,
                "browse",
            );
            self.deliver(e.into());
        } else if roll < 0.72 {
            let mut e = self.touchpoint(
                at,
                &customer,
                &segment,
                channel,
                TouchpointKind::Purchase,
                "checkout",
            );
            let amount = self.lognormal(60.0, 0.8).min(50_000.0);
            e.amount = Some(Amount::from_units((amount * 10_000.0).round() as i64));
            e.currency = Some(
                if segment == "enterprise" {
                    "USD"
                } else {
                    "EUR"
                }
                .to_string(),
            );
            self.deliver(e.into());
        } else if roll < 0.78 {
            self.open_case(at, &customer, &segment, channel);
        } else {
            self.survey(at, &customer, &segment, channel);
        }
    }

    fn open_case(&mut self, at: Millis, customer: &str, segment: &str, channel: Channel) {
        self.next_case += 1;
        let case_id = format!("case-{:x}-{}", self.cfg.seed, self.next_case);
        let mut open = self.touchpoint(
            at,
            customer,
            segment,
            channel,
            TouchpointKind::ContactOpened,
            "support",
        );
        open.case_id = Some(case_id.clone());
        self.deliver(open.into());
        if self.rng.random::<f64>() < 0.97 {
            let frt = self
                .lognormal(first_response_median(channel), 1.0)
                .min(72.0 * HOUR_MS as f64) as Millis;
            let mut reply = self.touchpoint(
                at + frt.max(1_000),
                customer,
                segment,
                channel,
                TouchpointKind::AgentReplied,
                "support",
            );
            reply.case_id = Some(case_id.clone());
            let reply_at = reply.occurred_at;
            self.schedule(reply.into());
            if self.rng.random::<f64>() < 0.9 {
                let rt = self
                    .lognormal(3.0 * HOUR_MS as f64, 1.2)
                    .min(10.0 * 24.0 * HOUR_MS as f64) as Millis;
                let mut resolved = self.touchpoint(
                    reply_at + rt,
                    customer,
                    segment,
                    channel,
                    TouchpointKind::CaseResolved,
                    "support",
                );
                resolved.case_id = Some(case_id);
                self.schedule(resolved.into());
            }
        }
    }

    fn survey(&mut self, at: Millis, customer: &str, segment: &str, channel: Channel) {
        let r: f64 = self.rng.random();
        let metric = if r < 0.5 {
            SurveyMetric::Nps
        } else if r < 0.8 {
            SurveyMetric::Csat
        } else {
            SurveyMetric::Ces
        };
        let score = self.score(metric, channel, segment, at);
        let (comment, language) = self.comment(metric, score);
        let seq = self.next_seq();
        let response = SurveyResponse {
            response_id: format!("resp-{:016x}-{seq}", self.cfg.seed),
            submitted_at: at,
            customer_id: customer.to_string(),
            segment: segment.to_string(),
            channel,
            touchpoint: if channel == Channel::Store {
                "store_visit"
            } else {
                "post_purchase"
            }
            .to_string(),
            metric,
            score,
            comment,
            language,
            case_id: None,
        };
        self.deliver(response.into());
        // Close the loop with most detractors, mostly within a day.
        if metric == SurveyMetric::Nps && score <= 6 && self.rng.random::<f64>() < 0.75 {
            let delay = self.lognormal(6.0 * HOUR_MS as f64, 1.0) as Millis;
            let e = self.touchpoint(
                at + delay.max(1),
                customer,
                segment,
                Channel::Phone,
                TouchpointKind::OutboundContact,
                "follow_up",
            );
            self.schedule(e.into());
        }
    }

    fn deliver(&mut self, event: CxEvent) {
        let t = event.event_time();
        let late = self.rng.random::<f64>() < self.cfg.late_share;
        let delay = if late && self.cfg.late_max_ms > 0 {
            self.rng.random_range(0..=self.cfg.late_max_ms)
        } else {
            self.rng.random_range(0..=1_500)
        };
        if self.rng.random::<f64>() < self.cfg.duplicate_share {
            let again = self.rng.random_range(0..=2 * MINUTE_MS);
            self.push_delivery(Delivery {
                arrival: t + delay + again,
                event: event.clone(),
                duplicate: true,
            });
        }
        self.push_delivery(Delivery {
            arrival: t + delay,
            event,
            duplicate: false,
        });
    }

    fn push_delivery(&mut self, d: Delivery) {
        let id = self.next_seq();
        self.outbox.push(Reverse((d.arrival, id)));
        self.outbox_items.insert(id, d);
    }
}

impl Iterator for Generator {
    type Item = Delivery;

    fn next(&mut self) -> Option<Delivery> {
        loop {
            // Release scheduled follow-ups whose event time has come.
            while let Some(Reverse((t, id))) = self.scheduled.peek().copied() {
                if t > self.clock {
                    break;
                }
                self.scheduled.pop();
                if let Some(e) = self.scheduled_events.remove(&id) {
                    self.deliver(e);
                }
            }
            if let Some(Reverse((arrival, id))) = self.outbox.peek().copied() {
                if arrival <= self.clock {
                    self.outbox.pop();
                    if let Some(d) = self.outbox_items.remove(&id) {
                        return Some(d);
                    }
                    continue;
                }
            }
            self.step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxpulse_core::ValidationPolicy;

    #[test]
    fn same_seed_same_stream_and_all_valid() {
        let a: Vec<_> = Generator::new(GeneratorConfig::default())
            .unwrap()
            .take(5_000)
            .collect();
        let b: Vec<_> = Generator::new(GeneratorConfig::default())
            .unwrap()
            .take(5_000)
            .collect();
        assert_eq!(a, b);
        let policy = ValidationPolicy::default();
        for d in &a {
            d.event.validate(d.arrival, &policy).unwrap();
            assert!(d.arrival >= d.event.event_time());
        }
        // Arrival order.
        assert!(a.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    }

    #[test]
    fn mix_is_realistic() {
        // A slow stream (7 h of event time) so that most support replies arrive.
        let cfg = GeneratorConfig {
            duplicate_share: 0.02,
            events_per_second: 2.0,
            ..GeneratorConfig::default()
        };
        let events: Vec<_> = Generator::new(cfg).unwrap().take(50_000).collect();
        let count = |f: &dyn Fn(&CxEvent) -> bool| events.iter().filter(|d| f(&d.event)).count();
        let surveys = count(&|e| matches!(e, CxEvent::Survey(_)));
        let opened = count(
            &|e| matches!(e, CxEvent::Touchpoint(t) if t.kind == TouchpointKind::ContactOpened),
        );
        let replies = count(
            &|e| matches!(e, CxEvent::Touchpoint(t) if t.kind == TouchpointKind::AgentReplied),
        );
        let dups = events.iter().filter(|d| d.duplicate).count();
        let commented = count(&|e| matches!(e, CxEvent::Survey(r) if r.comment.is_some()));
        assert!((8_000..14_000).contains(&surveys), "{surveys}");
        assert!(opened > 2_000 && replies > opened / 2, "{opened} {replies}");
        assert!((500..1_500).contains(&dups), "{dups}");
        assert!(commented > surveys / 5, "{commented}");
        let langs: std::collections::BTreeSet<_> = events
            .iter()
            .filter_map(|d| match &d.event {
                CxEvent::Survey(r) => r.language.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(
            langs.into_iter().collect::<Vec<_>>(),
            ["en", "fa", "ro", "th"]
        );
    }

    #[test]
    fn scenario_lowers_nps_where_it_applies() {
        let scenario = Scenario::parse("nps-drop:30:phone:all:0").unwrap();
        let nps = |scenario: Option<Scenario>| {
            let cfg = GeneratorConfig {
                scenario,
                ..GeneratorConfig::default()
            };
            let (mut p, mut d, mut n) = (0i64, 0i64, 0i64);
            for del in Generator::new(cfg).unwrap().take(200_000) {
                if let CxEvent::Survey(r) = del.event {
                    if r.metric == SurveyMetric::Nps
                        && r.channel == Channel::Phone
                        && !del.duplicate
                    {
                        n += 1;
                        p += i64::from(r.score >= 9);
                        d += i64::from(r.score <= 6);
                    }
                }
            }
            100.0 * (p - d) as f64 / n as f64
        };
        let base = nps(None);
        let dropped = nps(Some(scenario));
        assert!((10.0..50.0).contains(&base), "baseline phone NPS {base}");
        assert!(
            base - dropped > 22.0 && base - dropped < 38.0,
            "base {base}, dropped {dropped}"
        );
    }

    #[test]
    fn scenario_parse_errors_are_clear() {
        assert!(Scenario::parse("nps-drop:30:phone:enterprise:10").is_ok());
        let err = Scenario::parse("nps-drop:30:fax:all:10").unwrap_err();
        assert!(err.to_string().contains("nps-drop:<points"));
        assert!(Scenario::parse("csat-drop:1:all:all:0").is_err());
    }
}
