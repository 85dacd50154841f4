use cxpulse_core::{EngineConfig, IngestOutcome, KpiEngine};
use cxpulse_gen::{Generator, GeneratorConfig};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let events: Vec<_> = Generator::new(GeneratorConfig {
        events_per_second: 500.0,
        ..Default::default()
    })
    .unwrap()
    .take(n)
    .collect();
    let mut engine = KpiEngine::new(EngineConfig::default()).unwrap();
    let t0 = Instant::now();
    let mut rows = 0usize;
    let mut outcomes = [0usize; 3];
    let mut last = None;
    let mut adv = std::time::Duration::ZERO;
    for (i, d) in events.iter().enumerate() {
        match engine.ingest(0, &d.event, d.arrival) {
            IngestOutcome::Accepted { .. } => outcomes[0] += 1,
            IngestOutcome::Duplicate => outcomes[1] += 1,
            IngestOutcome::Rejected(_) => outcomes[2] += 1,
        }
        if i % 100_000 == 99_999 {
            let ta = Instant::now();
            let r = engine.advance(d.arrival);
            adv += ta.elapsed();
            rows += r.len();
            if let Some(x) = r
                .into_iter()
                .rfind(|r| r.channel.is_none() && r.segment.is_none() && &*r.window == "1h")
            {
                last = Some(x);
            }
        }
    }
    let el = t0.elapsed();
    println!(
        "{n} events in {:?} = {:.0} ev/s (advance {:?}); rows {rows}; outcomes {outcomes:?}",
        el,
        n as f64 / el.as_secs_f64(),
        adv
    );
    println!("{:#?}", engine.stats());
    if let Some(r) = last {
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
    }
}
