//! Property and known-answer tests for `DurationSketch`.

use cxpulse_sketch::quantile::{DENSE_MIN_BUCKETS, MAX_BUCKET_INDEX, RELATIVE_ACCURACY};
use cxpulse_sketch::{DurationSketch, SketchError};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Relative-error bound with slack for floating-point rounding of the
/// bucket boundaries (a few ulps, far below 1e-12).
const TOL: f64 = RELATIVE_ACCURACY + 1e-12;

fn value() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => -5i64..60,
        4 => 0i64..100_000,
        2 => 0i64..10_000_000_000,
        1 => (i64::MAX - 1000)..=i64::MAX,
        1 => i64::MIN..0,
    ]
}

/// Durations as a support queue sees them: most within a factor of a few hundred of
/// each other (a few hundred neighbouring buckets, the dense form), some far away.
fn clustered() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(prop_oneof![30 => near(), 1 => value()], 0..400)
}

/// 1 s to 16 s, log-uniform: about 140 neighbouring buckets.
fn near() -> impl Strategy<Value = i64> {
    (0.0f64..4.0).prop_map(|x| (1_000.0 * x.exp2()) as i64)
}

fn values() -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![prop::collection::vec(value(), 0..300), clustered()]
}

/// Reference model of a sketch: bucket index (of an independent table search) → count.
type Model = std::collections::BTreeMap<i32, u64>;

fn model_index(ms: i64) -> i32 {
    // The smallest i with ms <= γ^i, γ^i by repeated multiplication as the sketch does.
    let gamma = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
    let (mut i, mut g) = (0, 1.0f64);
    while g < ms as f64 {
        g *= gamma;
        i += 1;
    }
    i
}

/// One step of a random history of a sketch.
#[derive(Clone, Debug)]
enum Op {
    Add(i64, u64),
    Remove(i64),
    Merge(Vec<i64>),
    Subtract(Vec<i64>),
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly a cluster (the dense form), sometimes a neighbour that widens its range,
    // rarely anything (back to the sparse form).
    let ms = prop_oneof![60 => near(), 3 => 16_000i64..120_000, 1 => -5i64..10_000_000_000];
    let many = prop::collection::vec(prop_oneof![60 => near(), 1 => 16_000i64..120_000], 0..80);
    prop_oneof![
        6 => (ms.clone(), 1u64..4).prop_map(|(m, n)| Op::Add(m, n)),
        3 => ms.prop_map(Op::Remove),
        2 => many.clone().prop_map(Op::Merge),
        1 => many.prop_map(|mut v| { v.truncate(20); Op::Subtract(v) }),
    ]
}

fn sketch_of(vals: &[i64]) -> DurationSketch {
    let mut s = DurationSketch::new();
    for &v in vals {
        s.add(v);
    }
    s
}

fn check_quantile(sorted: &[i64], s: &DurationSketch, q: f64) -> Result<(), TestCaseError> {
    let n = sorted.len();
    let est = s.quantile(q);
    if n == 0 {
        prop_assert_eq!(est, None);
        return Ok(());
    }
    let qc = q.clamp(0.0, 1.0);
    let r = (qc * (n - 1) as f64).floor() as usize;
    let exact = sorted[r].max(0) as f64;
    let est = est.ok_or_else(|| TestCaseError::fail("None for non-empty sketch"))?;
    if exact == 0.0 {
        prop_assert_eq!(est, 0.0, "q={} r={}", q, r);
    } else {
        let rel = (est - exact).abs() / exact;
        prop_assert!(rel <= TOL, "q={q} r={r} exact={exact} est={est} rel={rel}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::with_cases(400)
    })]

    #[test]
    fn quantile_within_one_percent(vals in values(), qs in prop::collection::vec(0.0f64..=1.0, 1..20)) {
        let s = sketch_of(&vals);
        let mut sorted = vals.clone();
        sorted.sort_unstable();
        prop_assert_eq!(s.count(), vals.len() as u64);
        prop_assert_eq!(s.is_empty(), vals.is_empty());
        for q in qs.into_iter().chain([0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0, -3.0, 7.0]) {
            check_quantile(&sorted, &s, q)?;
        }
        if let (Some(lo), Some(hi)) = (sorted.first(), sorted.last()) {
            let (lo, hi) = ((*lo).max(0) as f64, (*hi).max(0) as f64);
            let min = s.min_estimate().unwrap_or(f64::NAN);
            let max = s.max_estimate().unwrap_or(f64::NAN);
            let ok_min = if lo == 0.0 { min == 0.0 } else { (min - lo).abs() <= TOL * lo };
            prop_assert!(ok_min, "min {} vs {}", min, lo);
            let ok_max = if hi == 0.0 { max == 0.0 } else { (max - hi).abs() <= TOL * hi };
            prop_assert!(ok_max, "max {} vs {}", max, hi);
        }
    }

    #[test]
    fn quantiles_equal_quantile_of_each(
        vals in values(),
        qs in prop::array::uniform5(prop_oneof![4 => 0.0f64..=1.0, 1 => -1.0f64..2.0, 1 => Just(f64::NAN)]),
    ) {
        let s = sketch_of(&vals);
        let each = qs.map(|q| s.quantile(q));
        prop_assert_eq!(s.quantiles(qs), each);
    }

    #[test]
    fn merge_equals_sketch_of_concatenation(a in values(), b in values()) {
        let mut m = sketch_of(&a);
        m.merge(&sketch_of(&b));
        let mut all = a.clone();
        all.extend_from_slice(&b);
        prop_assert_eq!(&m, &sketch_of(&all));
        // Straight from the encoding, too.
        let mut from_encoding = sketch_of(&a);
        prop_assert_eq!(from_encoding.merge_bytes(&sketch_of(&b).to_bytes()), Ok(()));
        prop_assert_eq!(&from_encoding, &m);
        // Order of insertion does not matter either.
        all.reverse();
        prop_assert_eq!(&m, &sketch_of(&all));
    }

    #[test]
    fn merge_is_associative_and_commutative(a in values(), b in values(), c in values()) {
        let (sa, sb, sc) = (sketch_of(&a), sketch_of(&b), sketch_of(&c));
        let mut ab = sa.clone();
        ab.merge(&sb);
        let mut ba = sb.clone();
        ba.merge(&sa);
        prop_assert_eq!(&ab, &ba);
        let mut ab_c = ab.clone();
        ab_c.merge(&sc);
        let mut bc = sb.clone();
        bc.merge(&sc);
        let mut a_bc = sa.clone();
        a_bc.merge(&bc);
        prop_assert_eq!(ab_c, a_bc);
    }

    #[test]
    fn add_then_remove_restores(vals in values(), x in value(), n in 1u64..5) {
        let before = sketch_of(&vals);
        let mut s = before.clone();
        s.add(x);
        prop_assert!(s.remove(x));
        prop_assert_eq!(&s, &before);
        s.add_n(x, n);
        for _ in 0..n {
            prop_assert!(s.remove(x));
        }
        prop_assert_eq!(&s, &before);
    }

    #[test]
    fn remove_from_empty_bucket_is_noop(vals in prop::collection::vec(1i64..1000, 0..50), x in 2000i64..1_000_000) {
        let before = sketch_of(&vals);
        let mut s = before.clone();
        prop_assert!(!s.remove(x));
        if before.zero_count() == 0 {
            prop_assert!(!s.remove(0));
            prop_assert!(!s.remove(-7));
        }
        prop_assert_eq!(s, before);
    }

    #[test]
    fn subtract_inverts_merge(a in values(), b in values()) {
        let sa = sketch_of(&a);
        let sb = sketch_of(&b);
        let mut m = sa.clone();
        m.merge(&sb);
        let mut back = m.clone();
        prop_assert_eq!(back.subtract(&sb), Ok(()));
        prop_assert_eq!(&back, &sa);
        // sb minus (sa + sb) is only possible if sa is empty.
        let mut sb2 = sb.clone();
        let res = sb2.subtract(&m);
        if sa.is_empty() {
            prop_assert_eq!(res, Ok(()));
            prop_assert!(sb2.is_empty());
        } else {
            prop_assert_eq!(res, Err(SketchError::NotContained));
            prop_assert_eq!(&sb2, &sb, "failed subtract must not modify");
        }
    }

    #[test]
    fn bytes_and_parts_round_trip(vals in values()) {
        let s = sketch_of(&vals);
        let bytes = s.to_bytes();
        prop_assert_eq!(bytes[0], DurationSketch::FORMAT_VERSION);
        prop_assert_eq!(DurationSketch::from_bytes(&bytes), Ok(s.clone()));
        prop_assert_eq!(DurationSketch::from_parts(s.zero_count(), s.buckets()), Ok(s.clone()));
        // Every strict prefix is rejected, and so is any trailing byte.
        for cut in 0..bytes.len() {
            prop_assert!(DurationSketch::from_bytes(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(DurationSketch::from_bytes(&longer), Err(SketchError::TrailingBytes(1)));
    }

    #[test]
    fn from_bytes_arbitrary_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(s) = DurationSketch::from_bytes(&bytes) {
            // Whatever decodes satisfies the invariants.
            prop_assert_eq!(DurationSketch::from_parts(s.zero_count(), s.buckets()), Ok(s.clone()));
            let _ = s.quantile(0.5);
        }
        // Also with a valid version byte in front, to get past the first check.
        let mut v = vec![DurationSketch::FORMAT_VERSION];
        v.extend_from_slice(&bytes);
        if let Ok(s) = DurationSketch::from_bytes(&v) {
            prop_assert_eq!(DurationSketch::from_parts(s.zero_count(), s.buckets()), Ok(s.clone()));
            let _ = s.quantile(0.99);
        }
    }

    #[test]
    fn from_bytes_mutated_never_panics(vals in values(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = sketch_of(&vals).to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let target = sketch_of(&vals);
        let mut merged = target.clone();
        match DurationSketch::from_bytes(&bytes) {
            Ok(s) => {
                prop_assert_eq!(DurationSketch::from_parts(s.zero_count(), s.buckets()), Ok(s.clone()));
                prop_assert_eq!(merged.merge_bytes(&bytes), Ok(()));
                let mut expected = target;
                expected.merge(&s);
                prop_assert_eq!(merged, expected);
            }
            Err(e) => {
                // The same error, and the target is left as it was.
                prop_assert_eq!(merged.merge_bytes(&bytes), Err(e));
                prop_assert_eq!(merged, target);
            }
        }
    }

    #[test]
    fn count_at_most_brackets_exact_count(vals in values(), probe in 0.0f64..2e10) {
        let s = sketch_of(&vals);
        let exact_le = |t: f64| vals.iter().filter(|&&v| (v.max(0) as f64) <= t).count() as u64;
        let c = s.count_at_most(probe);
        prop_assert!(c <= exact_le(probe));
        prop_assert!(c >= exact_le(probe / (1.01 / 0.99)) , "probe={probe}");
        // At bucket upper bounds the cumulative count is exact.
        for (idx, _) in s.buckets() {
            let (lo, hi) = DurationSketch::bucket_bounds(idx);
            prop_assert!(lo < hi);
            prop_assert_eq!(s.count_at_most(hi), exact_le(hi));
        }
        prop_assert_eq!(s.count_at_most(-1.0), 0);
        prop_assert_eq!(s.count_at_most(f64::INFINITY), s.count());
    }

    /// Whatever form the buckets take on the way (sparse, dense, back: about 60 % of the
    /// histories visit both), every operation
    /// leaves exactly the buckets of a plain map, and the encoding, count and equality
    /// follow the contents only.
    #[test]
    fn random_histories_match_a_bucket_map(ops in prop::collection::vec(op(), 0..120)) {
        let mut s = DurationSketch::new();
        let (mut model, mut zero) = (Model::new(), 0u64);
        for op in ops {
            match op {
                Op::Add(ms, n) => {
                    s.add_n(ms, n);
                    if ms <= 0 { zero += n } else { *model.entry(model_index(ms)).or_default() += n }
                }
                Op::Remove(ms) => {
                    let present = if ms <= 0 { zero > 0 } else { model.contains_key(&model_index(ms)) };
                    prop_assert_eq!(s.remove(ms), present);
                    if present && ms <= 0 {
                        zero -= 1;
                    } else if present {
                        let k = model_index(ms);
                        let c = model.get_mut(&k).map(|c| { *c -= 1; *c });
                        if c == Some(0) { model.remove(&k); }
                    }
                }
                Op::Merge(vals) => {
                    // Half the merges from the encoding.
                    if vals.len() % 2 == 0 {
                        s.merge(&sketch_of(&vals));
                    } else {
                        prop_assert_eq!(s.merge_bytes(&sketch_of(&vals).to_bytes()), Ok(()));
                    }
                    for ms in vals {
                        if ms <= 0 { zero += 1 } else { *model.entry(model_index(ms)).or_default() += 1 }
                    }
                }
                Op::Subtract(vals) => {
                    let mut part = Model::new();
                    let mut part_zero = 0;
                    for &ms in &vals {
                        if ms <= 0 { part_zero += 1 } else { *part.entry(model_index(ms)).or_default() += 1 }
                    }
                    let contained = part_zero <= zero
                        && part.iter().all(|(k, c)| model.get(k).is_some_and(|have| have >= c));
                    let before = s.clone();
                    let res = s.subtract(&sketch_of(&vals));
                    if contained {
                        prop_assert_eq!(res, Ok(()));
                        zero -= part_zero;
                        for (k, c) in part {
                            let left = model.get_mut(&k).map(|have| { *have -= c; *have });
                            if left == Some(0) { model.remove(&k); }
                        }
                    } else {
                        prop_assert_eq!(res, Err(SketchError::NotContained));
                        prop_assert_eq!(&s, &before);
                    }
                }
            }
            let expected: Vec<(i32, u64)> = model.iter().map(|(&k, &c)| (k, c)).collect();
            prop_assert_eq!(s.buckets().collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(s.zero_count(), zero);
            prop_assert_eq!(s.count(), zero + model.values().sum::<u64>());
            prop_assert_eq!(s.is_empty(), zero == 0 && model.is_empty());
            let rebuilt = DurationSketch::from_parts(zero, expected).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&rebuilt, &s);
            prop_assert_eq!(rebuilt.to_bytes(), s.to_bytes());
            prop_assert_eq!(DurationSketch::from_bytes(&s.to_bytes()), Ok(s.clone()));
            prop_assert_eq!(
                s.min_estimate(),
                if zero > 0 { Some(0.0) } else { model.keys().next().map(|&k| DurationSketch::bucket_representative(k)) }
            );
            prop_assert_eq!(
                s.max_estimate(),
                model.keys().last().map(|&k| DurationSketch::bucket_representative(k)).or((zero > 0).then_some(0.0))
            );
        }
    }

    #[test]
    fn buckets_contain_their_values(x in 1i64..=i64::MAX) {
        let mut s = DurationSketch::new();
        s.add(x);
        let b: Vec<_> = s.buckets().collect();
        prop_assert_eq!(b.len(), 1);
        let (lo, hi) = DurationSketch::bucket_bounds(b[0].0);
        prop_assert!(lo < x as f64 && x as f64 <= hi);
        prop_assert!((0..=MAX_BUCKET_INDEX).contains(&b[0].0));
    }
}

#[test]
fn known_bucket_indices() {
    // ceil(ln(x) / ln(1.01/0.99)), computed independently.
    for (x, idx) in [
        (1, 0),
        (2, 35),
        (3, 55),
        (100, 231),
        (1000, 346),
        (60_000, 551),
    ] {
        let mut s = DurationSketch::new();
        s.add(x);
        assert_eq!(s.buckets().collect::<Vec<_>>(), vec![(idx, 1)], "x={x}");
    }
}

#[test]
fn known_quantiles_of_1_to_1000() {
    let mut s = DurationSketch::new();
    for ms in 1..=1000 {
        s.add(ms);
    }
    // r = floor(q * 999); the exact value is r + 1.
    for (q, exact) in [
        (0.0, 1.0),
        (0.5, 500.0),
        (0.9, 900.0),
        (0.99, 990.0),
        (1.0, 1000.0),
    ] {
        let est = s.quantile(q).expect("non-empty");
        assert!((est - exact).abs() <= TOL * exact, "q={q} est={est}");
    }
    assert_eq!(s.count(), 1000);
    assert_eq!(s.quantile(f64::NAN), None);
}

#[test]
fn zero_and_negative_values() {
    let mut s = DurationSketch::new();
    s.add(0);
    s.add(-10);
    s.add(5);
    assert_eq!(s.zero_count(), 2);
    assert_eq!(s.quantile(0.0), Some(0.0));
    assert_eq!(s.quantile(0.5), Some(0.0));
    assert!(s.quantile(1.0).is_some_and(|v| (v - 5.0).abs() <= 0.05));
    assert!(s.remove(-3)); // clamped like add
    assert!(s.remove(0));
    assert!(!s.remove(0));
    assert_eq!(s.zero_count(), 0);
}

#[test]
fn empty_sketch() {
    let s = DurationSketch::default();
    assert!(s.is_empty());
    assert_eq!(s.count(), 0);
    assert_eq!(s.quantile(0.5), None);
    assert_eq!(s.min_estimate(), None);
    assert_eq!(s.max_estimate(), None);
    assert_eq!(s.heap_bytes(), 0);
    assert_eq!(s.to_bytes(), vec![1, 0, 0]);
    assert_eq!(s, DurationSketch::new());
}

#[test]
fn add_n_zero_is_noop() {
    let mut s = DurationSketch::new();
    s.add_n(42, 0);
    s.add_n(0, 0);
    assert!(s.is_empty());
    s.add_n(42, 3);
    assert_eq!(s.count(), 3);
}

#[test]
fn known_encoding() {
    let mut s = DurationSketch::new();
    s.add(0);
    s.add(100); // bucket 231
    s.add(100);
    s.add(1000); // bucket 346
                 // version 1, zero=1, k=2, zigzag(231)=462=[0xce,0x03], count 2,
                 // delta 346-231-1=114=[0x72], count 1
    assert_eq!(s.to_bytes(), vec![1, 1, 2, 0xce, 0x03, 2, 0x72, 1]);
}

#[test]
fn from_parts_validation() {
    use SketchError::*;
    assert_eq!(
        DurationSketch::from_parts(0, [(5, 1), (5, 1)]),
        Err(NotStrictlyIncreasing { index: 5 })
    );
    assert_eq!(
        DurationSketch::from_parts(0, [(6, 1), (5, 1)]),
        Err(NotStrictlyIncreasing { index: 5 })
    );
    assert_eq!(DurationSketch::from_parts(0, [(5, 0)]), Err(ZeroCount(5)));
    assert_eq!(
        DurationSketch::from_parts(0, [(-1, 1)]),
        Err(BucketIndexOutOfRange(-1))
    );
    assert_eq!(
        DurationSketch::from_parts(0, [(MAX_BUCKET_INDEX + 1, 1)]),
        Err(BucketIndexOutOfRange(i64::from(MAX_BUCKET_INDEX) + 1))
    );
    assert!(DurationSketch::from_parts(3, [(0, 1), (MAX_BUCKET_INDEX, 2)]).is_ok());
}

#[test]
fn from_bytes_errors_are_typed() {
    use SketchError::*;
    assert_eq!(DurationSketch::from_bytes(&[]), Err(Truncated));
    assert_eq!(
        DurationSketch::from_bytes(&[9, 0, 0]),
        Err(UnsupportedVersion(9))
    );
    assert_eq!(
        DurationSketch::from_bytes(&[1, 0, 200, 1]),
        Err(BadLength(200))
    );
    // index zigzag(-1) = 1
    assert_eq!(
        DurationSketch::from_bytes(&[1, 0, 1, 1, 1]),
        Err(BucketIndexOutOfRange(-1))
    );
    assert_eq!(
        DurationSketch::from_bytes(&[1, 0, 1, 2, 0]),
        Err(ZeroCount(1))
    );
    assert_eq!(
        DurationSketch::from_bytes(&[1, 0, 0, 0]),
        Err(TrailingBytes(1))
    );
    let overlong = [
        1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0,
    ];
    assert_eq!(DurationSketch::from_bytes(&overlong), Err(MalformedVarint));
}

#[test]
fn saturating_counts_do_not_panic() {
    let mut s = DurationSketch::new();
    s.add_n(10, u64::MAX);
    s.add(10);
    s.add_n(20, u64::MAX);
    s.add_n(0, u64::MAX);
    assert_eq!(s.count(), u64::MAX);
    let _ = s.quantile(0.5);
    let mut t = s.clone();
    t.merge(&s);
    assert_eq!(DurationSketch::from_bytes(&t.to_bytes()), Ok(t));
}

/// The dense form is taken once enough neighbouring buckets fill, costs no more heap
/// than the sparse form would when they are all used, and is left when an outlier
/// stretches the range too far.
#[test]
fn dense_form_is_taken_and_left_by_density() {
    let mut s = DurationSketch::new();
    // 1.0 s ... 1.5 s: about 20 buckets, every one used.
    let mut ms = 1_000;
    while s.buckets().count() < DENSE_MIN_BUCKETS - 1 {
        s.add(ms);
        ms += 17;
    }
    assert!(!s.is_dense());
    while s.buckets().count() < DENSE_MIN_BUCKETS {
        s.add(ms);
        ms += 17;
    }
    assert!(s.is_dense());
    let k = s.buckets().count();
    assert!(
        s.heap_bytes() <= 16 * k,
        "{} bytes for {k} buckets",
        s.heap_bytes()
    );
    let reference = DurationSketch::from_bytes(&s.to_bytes()).expect("round trip");
    assert_eq!(reference, s);
    // An outlier within 4k indices keeps the form, one far beyond leaves it.
    let near = s.buckets().map(|b| b.0).max().unwrap_or(0) + 3 * k as i32;
    let near_ms = DurationSketch::bucket_bounds(near).1.floor() as i64;
    s.add(near_ms);
    assert!(s.is_dense());
    s.add(3_000_000_000);
    assert!(!s.is_dense());
    assert!(s.remove(3_000_000_000));
    assert!(s.remove(near_ms));
    assert_eq!(s, reference);
    // Merging a dense sketch into an empty one, or a sparse one into a dense one.
    let mut e = DurationSketch::new();
    e.merge(&reference);
    assert!(e.is_dense());
    let mut one = DurationSketch::new();
    one.add(1_200);
    e.merge(&one);
    assert_eq!(e.count(), reference.count() + 1);
    assert!(e.subtract(&one).is_ok());
    assert_eq!(e, reference);
}

#[test]
fn heap_is_sparse() {
    let mut s = DurationSketch::new();
    for ms in [5, 50, 500, 5000] {
        s.add(ms);
    }
    assert!(s.heap_bytes() <= 4 * 16 * 2, "{}", s.heap_bytes());
    // Zero count, form tag, range start, vector (boxed inside a KPI state).
    assert!(std::mem::size_of::<DurationSketch>() <= 40);
}
