//! Decode + validate + aggregate throughput with ~1,000 channel × segment series.
//!
//! `cargo bench -p cxpulse-bench --bench pipeline`
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use cxpulse_bench::{encoded_traffic, engine_config, run, Cadence, Profile};
use std::time::Duration;

// The allocator of the `cxpulse` binary, so that the figures are the job's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn pipeline(c: &mut Criterion) {
    cxpulse::allocator::configure();
    let profile = Profile::large();
    let records = encoded_traffic(&profile);
    let mut group = c.benchmark_group("decode_aggregate");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(records.len() as u64));
    for (name, windows) in [("default_4_windows", 4), ("1_window", 1), ("8_windows", 8)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || engine_config(windows),
                |cfg| run(&records, cfg, Cadence::JOB),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
