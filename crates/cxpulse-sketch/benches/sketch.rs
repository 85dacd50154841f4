//! Criterion benchmarks for the hot paths of `cxpulse-sketch`.
//!
//! Run briefly with `cargo bench -p cxpulse-sketch -- --quick`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use cxpulse_sketch::{DurationSketch, Hll, Reads};

/// splitmix64: deterministic, well-mixed 64-bit values for the benchmarks.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hll_with(n: u64, seed: u64) -> Hll {
    let mut h = Hll::new();
    for i in 0..n {
        h.insert_hash(mix(seed.wrapping_mul(1 << 40) + i));
    }
    h
}

fn bench_hll(c: &mut Criterion) {
    let mut g = c.benchmark_group("hll");

    // Insert 32 distinct hashes into a fresh (sparse) sketch: the typical
    // per-window cost for a small group.
    let hashes: Vec<u64> = (0..32).map(mix).collect();
    g.throughput(Throughput::Elements(hashes.len() as u64));
    g.bench_function("insert_hash/sparse_32_into_empty", |b| {
        b.iter(|| {
            let mut h = Hll::new();
            for &x in &hashes {
                h.insert_hash(black_box(x));
            }
            h
        })
    });

    // Insert into a sparse sketch that already holds ~500 registers.
    let base = hll_with(500, 7);
    assert!(base.is_sparse());
    g.bench_function("insert_hash/sparse_500_plus_32", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| {
                for &x in &hashes {
                    h.insert_hash(black_box(x));
                }
            },
            BatchSize::SmallInput,
        )
    });

    // Dense: 1024 inserts into a large sketch.
    let mut dense = hll_with(100_000, 3);
    assert!(!dense.is_sparse());
    let many: Vec<u64> = (0..1024).map(|i| mix(i + (1 << 50))).collect();
    g.throughput(Throughput::Elements(many.len() as u64));
    g.bench_function("insert_hash/dense_1024", |b| {
        b.iter(|| {
            for &x in &many {
                dense.insert_hash(black_box(x));
            }
        })
    });

    let keys: Vec<String> = (0..1024).map(|i| format!("customer-{i}")).collect();
    g.bench_function("insert_bytes_xxh3/dense_1024", |b| {
        b.iter(|| {
            for k in &keys {
                dense.insert(black_box(k.as_bytes()));
            }
        })
    });

    g.throughput(Throughput::Elements(1));
    let sparse50 = hll_with(50, 11);
    g.bench_function("estimate/sparse_50", |b| {
        b.iter(|| black_box(&sparse50).estimate())
    });
    let sparse1000 = hll_with(1000, 12);
    assert!(sparse1000.is_sparse());
    g.bench_function("estimate/sparse_1000", |b| {
        b.iter(|| black_box(&sparse1000).estimate())
    });
    g.bench_function("estimate/dense", |b| {
        b.iter(|| black_box(&dense).estimate())
    });

    // Merge small sparse sketches (e.g. per-partition partials) into a
    // long-lived dense one, rotating over 64 different sources.
    let smalls: Vec<Hll> = (0..64).map(|k| hll_with(50, 100 + k)).collect();
    let mut dense_target = hll_with(100_000, 14);
    let mut k = 0usize;
    g.bench_function("merge/sparse_50_into_dense", |b| {
        b.iter(|| {
            k = (k + 1) & 63;
            dense_target.merge(black_box(&smalls[k]));
        })
    });
    let small = hll_with(50, 13);
    let dense_base = hll_with(100_000, 14);
    let small2 = hll_with(50, 15);
    g.bench_function("merge/sparse_50_into_sparse_50", |b| {
        b.iter_batched_ref(
            || small2.clone(),
            |d| d.merge(black_box(&small)),
            BatchSize::SmallInput,
        )
    });
    let dense2 = hll_with(100_000, 16);
    g.bench_function("merge/dense_into_dense", |b| {
        b.iter_batched_ref(
            || dense_base.clone(),
            |d| d.merge(black_box(&dense2)),
            BatchSize::SmallInput,
        )
    });
    // The same merge into registers the target owns alone (no copy-on-write copy).
    let dense_base_bytes = dense_base.to_bytes();
    g.bench_function("merge/dense_into_owned_dense", |b| {
        b.iter_batched_ref(
            || Hll::from_bytes(&dense_base_bytes).expect("own encoding"),
            |d| d.merge(black_box(&dense2)),
            BatchSize::SmallInput,
        )
    });
    // A merge that changes no register (the target already holds the source).
    let mut union = dense_base.clone();
    union.merge(&dense2);
    // A dense <- dense merge that raised many registers left the histogram stale: the
    // estimate recounts it.
    g.bench_function("estimate/dense_stale", |b| {
        b.iter(|| black_box(&union).estimate())
    });
    // Freezing a pane: the compact encoding of a minute pane's sketch (a busy series, a
    // dense sketch with about 3,000 registers set) and of a sparse one.
    for (name, sketch) in [
        ("write_compact/dense_3500", hll_with(3_500, 21)),
        ("write_compact/sparse_600", hll_with(600, 22)),
    ] {
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(8192);
            b.iter(|| {
                out.clear();
                sketch.write_compact(Reads::Rarely, &mut out);
                out.len()
            })
        });
    }
    // Reading a frozen pane into a window's dense accumulator: an hour of a busy series
    // (about 5,000 registers set) and a nearly full sketch (the nibble form).
    // Written for panes read often: the bitmap form.
    for (name, keys, seed, reads) in [
        (
            "merge_compact/hour_6000_into_dense",
            6_000,
            23,
            Reads::Rarely,
        ),
        (
            "merge_compact/hour_6000_into_dense_often",
            6_000,
            23,
            Reads::Often,
        ),
        (
            "merge_compact/full_60000_into_dense",
            60_000,
            24,
            Reads::Rarely,
        ),
        ("merge_compact/one_into_dense", 1, 25, Reads::Rarely),
    ] {
        let mut frozen = Vec::new();
        hll_with(keys, seed).write_compact(reads, &mut frozen);
        let target = Hll::from_bytes(&dense_base_bytes).expect("own encoding");
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || target.clone(),
                |d| d.merge_compact(black_box(&frozen)),
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("merge/dense_into_dense_unchanged", |b| {
        b.iter_batched_ref(
            || union.clone(),
            |d| d.merge(black_box(&dense2)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Log-normal-ish latencies: mostly 5..2000 ms, some long tails.
fn durations(n: usize, seed: u64) -> Vec<i64> {
    (0..n as u64)
        .map(|i| {
            let r = mix(seed ^ i);
            let mag = (r % 6) as u32; // 10^0 .. 10^5 ms
            let base = 10i64.pow(mag);
            base + ((r >> 8) % (9 * base as u64)) as i64
        })
        .collect()
}

fn dd_with(n: usize, seed: u64) -> DurationSketch {
    let mut s = DurationSketch::new();
    for ms in durations(n, seed) {
        s.add(ms);
    }
    s
}

fn bench_dd(c: &mut Criterion) {
    let mut g = c.benchmark_group("ddsketch");
    let values = durations(1024, 1);
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("add/1024_into_empty", |b| {
        b.iter(|| {
            let mut s = DurationSketch::new();
            for &v in &values {
                s.add(black_box(v));
            }
            s
        })
    });
    let mut warm = dd_with(10_000, 2);
    g.bench_function("add/1024_into_warm", |b| {
        b.iter(|| {
            for &v in &values {
                warm.add(black_box(v));
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    let a = dd_with(50, 3);
    let bb = dd_with(50, 4);
    g.bench_function("merge/50_into_50", |b| {
        b.iter_batched_ref(
            || a.clone(),
            |s| s.merge(black_box(&bb)),
            BatchSize::SmallInput,
        )
    });
    let big = dd_with(100_000, 5);
    g.bench_function("merge/50_into_big", |b| {
        b.iter_batched_ref(
            || big.clone(),
            |s| s.merge(black_box(&bb)),
            BatchSize::SmallInput,
        )
    });
    // A window's response times taking another window's (both dense over ~580 buckets).
    let big2 = dd_with(100_000, 6);
    g.bench_function("merge/big_into_big", |b| {
        b.iter_batched_ref(
            || big.clone(),
            |s| s.merge(black_box(&big2)),
            BatchSize::SmallInput,
        )
    });
    // A frozen pane's sketch, read into a window's.
    let frozen = bb.to_bytes();
    g.bench_function("merge_bytes/50_into_big", |b| {
        b.iter_batched_ref(
            || big.clone(),
            |s| s.merge_bytes(black_box(&frozen)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("clone/big", |b| b.iter(|| black_box(&big).clone()));
    g.bench_function("quantile/p99_sketch_of_50", |b| {
        b.iter(|| black_box(&a).quantile(black_box(0.99)))
    });
    g.bench_function("quantile/p99_big", |b| {
        b.iter(|| black_box(&big).quantile(black_box(0.99)))
    });
    g.bench_function("to_bytes+from_bytes/sketch_of_50", |b| {
        b.iter(|| DurationSketch::from_bytes(&black_box(&a).to_bytes()))
    });
    g.finish();
}

criterion_group!(benches, bench_hll, bench_dd);
criterion_main!(benches);
