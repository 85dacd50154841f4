//! Property tests for `Hll`, checked against an independent register model.

use cxpulse_sketch::hll::{MAX_RANK, REGISTERS, SPARSE_MAX_ENTRIES};
use cxpulse_sketch::{Hll, Reads, SketchError};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Independent reference: 16384 registers, index = top 14 bits,
/// rank = 1 + leading zeros of the low 50 bits (51 if they are all zero).
fn model(hashes: &[u64]) -> Vec<u8> {
    let mut regs = vec![0u8; REGISTERS];
    for &h in hashes {
        let idx = (h >> 50) as usize;
        let w = h & ((1u64 << 50) - 1);
        let rank = if w == 0 {
            51
        } else {
            (w.leading_zeros() - 14 + 1) as u8
        };
        regs[idx] = regs[idx].max(rank);
    }
    regs
}

fn pairs_of(regs: &[u8]) -> Vec<(u16, u8)> {
    regs.iter()
        .enumerate()
        .filter(|(_, &r)| r != 0)
        .map(|(i, &r)| (i as u16, r))
        .collect()
}

fn sketch(hashes: &[u64]) -> Hll {
    let mut h = Hll::new();
    for &x in hashes {
        h.insert_hash(x);
    }
    h
}

/// Hash sets from a few to a few thousand entries (crossing the sparse/dense
/// threshold of 1024 non-zero registers), plus structured hashes that hit
/// the rank extremes.
fn hashes() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u64>(), 0..200),
        2 => prop::collection::vec(any::<u64>(), 900..1300),
        1 => prop::collection::vec(any::<u64>(), 2000..4000),
        // About a third of the registers set (the bitmap form, when read often).
        1 => prop::collection::vec(any::<u64>(), 5000..9000),
        1 => prop::collection::vec((0u64..16384, 0u32..64).prop_map(|(i, s)| (i << 50) | ((1u64 << 50) - 1) >> s), 0..100),
        // Most registers set (the compact encoding's nibble form).
        1 => prop::collection::vec(any::<u64>(), 40_000..80_000),
    ]
}

/// A sketch of `hs`, randomly forced to dense, so that every mix of
/// representations is exercised.
fn maybe_dense(hs: &[u64], dense: bool) -> Hll {
    let mut h = sketch(hs);
    if dense {
        h.densify();
    }
    h
}

/// Either kind of reads a compact encoding is written for.
fn reads(often: bool) -> Reads {
    if often {
        Reads::Often
    } else {
        Reads::Rarely
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::with_cases(128)
    })]

    #[test]
    fn registers_match_model(hs in hashes()) {
        let h = sketch(&hs);
        let expected = pairs_of(&model(&hs));
        prop_assert_eq!(h.register_pairs().collect::<Vec<_>>(), expected.clone());
        prop_assert_eq!(h.is_sparse(), expected.len() <= SPARSE_MAX_ENTRIES);
        prop_assert_eq!(h.is_empty(), hs.is_empty());
        prop_assert_eq!(Hll::from_register_pairs(expected), Ok(h));
    }

    #[test]
    fn merge_equals_sketch_of_union(a in hashes(), b in hashes(), da: bool, db: bool) {
        let mut m = maybe_dense(&a, da);
        m.merge(&maybe_dense(&b, db));
        let mut all = a.clone();
        all.extend_from_slice(&b);
        prop_assert_eq!(m.register_pairs().collect::<Vec<_>>(), pairs_of(&model(&all)));
        prop_assert_eq!(&m, &sketch(&all));
        prop_assert_eq!(m.estimate_f64().to_bits(), sketch(&all).estimate_f64().to_bits());
    }

    #[test]
    fn merge_is_associative_and_commutative(a in hashes(), b in hashes(), c in hashes(), d in any::<[bool; 3]>()) {
        let (sa, sb, sc) = (maybe_dense(&a, d[0]), maybe_dense(&b, d[1]), maybe_dense(&c, d[2]));
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
        prop_assert_eq!(&ab_c, &a_bc);
        // Idempotent as well.
        let mut aa = sa.clone();
        aa.merge(&sa);
        prop_assert_eq!(aa, sa);
    }

    #[test]
    fn representation_does_not_change_estimate(hs in hashes()) {
        let sparse = sketch(&hs);
        let mut dense = sparse.clone();
        dense.densify();
        prop_assert!(!dense.is_sparse());
        prop_assert_eq!(&sparse, &dense);
        prop_assert_eq!(&dense, &sparse);
        prop_assert_eq!(sparse.estimate_f64().to_bits(), dense.estimate_f64().to_bits());
        prop_assert_eq!(sparse.estimate(), dense.estimate());
        prop_assert_eq!(
            sparse.register_pairs().collect::<Vec<_>>(),
            dense.register_pairs().collect::<Vec<_>>()
        );
        prop_assert_eq!(sparse.is_empty(), dense.is_empty());
    }

    #[test]
    fn bytes_round_trip_keeps_representation(hs in hashes(), dense: bool) {
        let h = maybe_dense(&hs, dense);
        let bytes = h.to_bytes();
        prop_assert_eq!(bytes[0], Hll::FORMAT_VERSION);
        let back = Hll::from_bytes(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&h));
        let back = back.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.is_sparse(), h.is_sparse());
        prop_assert_eq!(back.estimate_f64().to_bits(), h.estimate_f64().to_bits());
        if h.is_sparse() {
            // Compact: at most 2 + 3 bytes per entry + header.
            prop_assert!(bytes.len() <= 5 + 4 * h.register_pairs().count());
        } else {
            prop_assert_eq!(bytes.len(), 2 + 12288);
        }
        for cut in [0, 1, 2, bytes.len() / 2, bytes.len() - 1] {
            if cut < bytes.len() {
                prop_assert!(Hll::from_bytes(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn from_bytes_arbitrary_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for prefix in [&[][..], &[1u8][..], &[1u8, 0][..]] {
            let mut v = prefix.to_vec();
            v.extend_from_slice(&bytes);
            if let Ok(h) = Hll::from_bytes(&v) {
                let pairs: Vec<_> = h.register_pairs().collect();
                prop_assert_eq!(Hll::from_register_pairs(pairs), Ok(h.clone()));
                let _ = h.estimate();
            }
        }
    }

    #[test]
    fn from_bytes_mutated_never_panics(hs in hashes(), dense: bool, pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = maybe_dense(&hs, dense).to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(h) = Hll::from_bytes(&bytes) {
            let pairs: Vec<_> = h.register_pairs().collect();
            prop_assert!(pairs.iter().all(|&(i, r)| (i as usize) < REGISTERS && (1..=MAX_RANK).contains(&r)));
            prop_assert_eq!(Hll::from_register_pairs(pairs), Ok(h.clone()));
        }
    }

    /// The compact in-memory encoding decodes to the same registers, whatever the
    /// representation written and the one merged into, and reports exactly its own length.
    #[test]
    fn compact_round_trip_and_merge(a in hashes(), b in hashes(), da: bool, db: bool, often: bool) {
        let sa = maybe_dense(&a, da);
        let mut bytes = Vec::new();
        sa.write_compact(reads(often), &mut bytes);
        let len = bytes.len();
        // Trailing bytes (the next part of a frozen pane) are not read.
        bytes.extend_from_slice(&[0xff, 0x00, 0x7f]);
        let (back, used) = Hll::from_compact(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(used, len);
        prop_assert_eq!(&back, &sketch(&a));
        prop_assert_eq!(back.is_empty(), a.is_empty());
        prop_assert_eq!(back.estimate_f64().to_bits(), sa.estimate_f64().to_bits());

        let mut all = a.clone();
        all.extend_from_slice(&b);
        let mut expected = maybe_dense(&b, db);
        expected.merge(&sa);
        let mut got = maybe_dense(&b, db);
        prop_assert_eq!(got.merge_compact(&bytes), Ok(len));
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(got.register_pairs().collect::<Vec<_>>(), pairs_of(&model(&all)));
        prop_assert_eq!(got.is_empty(), all.is_empty());
        prop_assert_eq!(got.estimate_f64().to_bits(), expected.estimate_f64().to_bits());
        // Merging the same encoding again changes nothing (idempotent).
        let before = got.clone();
        prop_assert_eq!(got.merge_compact(&bytes), Ok(len));
        prop_assert_eq!(got, before);
    }

    /// A sparse accumulator taking small sparse sketches one by one (buffered, sorted in
    /// together) holds the union after every merge, whether it is read in between or not.
    #[test]
    fn small_merges_into_a_sparse_accumulator(
        base in prop::collection::vec(any::<u64>(), 0..1000),
        parts in prop::collection::vec(prop::collection::vec(any::<u64>(), 0..40), 1..40),
        read_every in 1usize..8,
    ) {
        let mut acc = sketch(&base);
        let mut all = base.clone();
        for (n, part) in parts.iter().enumerate() {
            let mut small = Hll::new();
            for &x in part {
                small.insert_hash(x);
            }
            if n % 3 == 0 {
                small.flush_pending();
            }
            acc.merge(&small);
            all.extend_from_slice(part);
            if n % read_every == 0 {
                // Readers through `&self` see the buffered entries.
                prop_assert_eq!(acc.register_pairs().collect::<Vec<_>>(), pairs_of(&model(&all)));
                prop_assert_eq!(acc.is_empty(), all.is_empty());
                prop_assert_eq!(acc.estimate_f64().to_bits(), sketch(&all).estimate_f64().to_bits());
            }
        }
        prop_assert_eq!(&acc, &sketch(&all));
        acc.flush_pending();
        prop_assert_eq!(acc.register_pairs().collect::<Vec<_>>(), pairs_of(&model(&all)));
        prop_assert_eq!(acc.to_bytes(), sketch(&all).to_bytes());
    }

    /// `is_empty` of a dense sketch is a flag: it must follow every way content arrives.
    #[test]
    fn dense_is_empty_follows_content(a in hashes(), b in hashes(), da: bool) {
        let mut h = Hll::new();
        h.densify();
        prop_assert!(h.is_empty() && !h.is_sparse());
        let mut empty_dense = Hll::new();
        empty_dense.densify();
        h.merge(&empty_dense);
        h.merge(&Hll::new());
        prop_assert!(h.is_empty());
        let mut compact = Vec::new();
        Hll::new().write_compact(Reads::Rarely, &mut compact);
        prop_assert_eq!(h.merge_compact(&compact), Ok(compact.len()));
        prop_assert!(h.is_empty());
        h.merge(&maybe_dense(&a, da));
        prop_assert_eq!(h.is_empty(), a.is_empty());
        let mut via_compact = empty_dense.clone();
        compact.clear();
        sketch(&b).write_compact(Reads::Rarely, &mut compact);
        prop_assert_eq!(via_compact.merge_compact(&compact), Ok(compact.len()));
        prop_assert_eq!(via_compact.is_empty(), b.is_empty());
        let mut via_insert = empty_dense.clone();
        for &x in &b {
            via_insert.insert_hash(x);
        }
        prop_assert_eq!(via_insert.is_empty(), b.is_empty());
        prop_assert_eq!(&via_insert, &via_compact);
        let decoded = Hll::from_bytes(&via_insert.to_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded.is_empty(), b.is_empty());
    }

    /// Dense registers are shared between clones (copy-on-write): writing one never changes
    /// another, whichever path wrote it.
    #[test]
    fn dense_clones_are_independent(a in hashes(), b in hashes(), da: bool, db: bool) {
        let original = maybe_dense(&a, da);
        let original_pairs: Vec<_> = original.register_pairs().collect();
        let other = maybe_dense(&b, db);
        let mut compact = Vec::new();
        other.write_compact(Reads::Rarely, &mut compact);

        let mut by_insert = original.clone();
        for &x in &b {
            by_insert.insert_hash(x);
        }
        let mut by_merge = original.clone();
        by_merge.merge(&other);
        let mut by_compact = original.clone();
        prop_assert!(by_compact.merge_compact(&compact).is_ok());
        // An empty dense accumulator takes a merged dense sketch by sharing it; writing
        // the accumulator afterwards must not reach the sketch it shares with.
        let mut shared = Hll::new();
        shared.densify();
        shared.merge(&original);
        for &x in &b {
            shared.insert_hash(x);
        }
        let mut shared2 = Hll::new();
        shared2.densify();
        shared2.merge(&original);
        shared2.merge(&other);

        let mut all = a.clone();
        all.extend_from_slice(&b);
        let union = pairs_of(&model(&all));
        for h in [&by_insert, &by_merge, &by_compact, &shared, &shared2] {
            prop_assert_eq!(h.register_pairs().collect::<Vec<_>>(), union.clone());
        }
        prop_assert_eq!(original.register_pairs().collect::<Vec<_>>(), original_pairs);
        prop_assert_eq!(other.register_pairs().collect::<Vec<_>>(), pairs_of(&model(&b)));
    }

    #[test]
    fn compact_corrupt_never_panics(hs in hashes(), dense: bool, pos in any::<prop::sample::Index>(), byte in any::<u8>(), into_dense: bool, often: bool) {
        let mut bytes = Vec::new();
        maybe_dense(&hs, dense).write_compact(reads(often), &mut bytes);
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let mut h = maybe_dense(&[], into_dense);
        if let Ok(used) = h.merge_compact(&bytes) {
            prop_assert!(used <= bytes.len());
            let pairs: Vec<_> = h.register_pairs().collect();
            prop_assert!(pairs.iter().all(|&(i, r)| (i as usize) < REGISTERS && (1..=MAX_RANK).contains(&r)));
            prop_assert_eq!(h.is_empty(), pairs.is_empty());
        }
        for cut in 0..bytes.len().min(40) {
            let _ = Hll::from_compact(&bytes[..cut]);
        }
    }
}

/// Edge cases of the compact encoding: empty, one register at each end with the largest
/// and smallest rank, every register at the largest rank, every register non-zero.
#[test]
fn compact_edge_cases() {
    let check = |pairs: Vec<(u16, u8)>| {
        let h = Hll::from_register_pairs(pairs.clone()).expect("valid pairs");
        for dense in [false, true] {
            let mut h = h.clone();
            if dense {
                h.densify();
            }
            let mut bytes = Vec::new();
            h.write_compact(Reads::Rarely, &mut bytes);
            let (back, used) = Hll::from_compact(&bytes).expect("decodes");
            assert_eq!(used, bytes.len());
            assert_eq!(back.register_pairs().collect::<Vec<_>>(), pairs);
            assert_eq!(back.is_empty(), pairs.is_empty());
            for into_dense in [false, true] {
                let mut acc = Hll::from_register_pairs([(1, 3), (16382, 51)]).expect("valid");
                if into_dense {
                    acc.densify();
                }
                let mut expected = acc.clone();
                expected.merge(&h);
                assert_eq!(acc.merge_compact(&bytes), Ok(bytes.len()));
                assert_eq!(acc, expected);
            }
        }
        let mut bytes = Vec::new();
        h.write_compact(Reads::Rarely, &mut bytes);
        bytes
    };
    assert_eq!(check(vec![]), vec![0], "empty: one byte");
    check(vec![(0, MAX_RANK)]);
    check(vec![(16383, MAX_RANK)]);
    check(vec![(0, 1), (16383, 1)]);
    check(vec![(0, MAX_RANK), (1, 1), (16383, MAX_RANK)]);
    check((0..REGISTERS as u16).map(|i| (i, MAX_RANK)).collect());
    check((0..REGISTERS as u16).map(|i| (i, 1)).collect());
    check(
        (0..REGISTERS as u16)
            .map(|i| (i, (i % u16::from(MAX_RANK)) as u8 + 1))
            .collect(),
    );
    // Every register at the largest rank: the estimate saturates, but the registers survive.
    let full =
        Hll::from_register_pairs((0..REGISTERS as u16).map(|i| (i, MAX_RANK))).expect("valid");
    let mut bytes = Vec::new();
    full.write_compact(Reads::Rarely, &mut bytes);
    assert_eq!(Hll::from_compact(&bytes).expect("decodes").0, full);
}

#[test]
fn dense_decoder_rejects_rank_above_51() {
    let mut bytes = Hll::new().to_bytes();
    bytes[1] = 1; // dense tag
    bytes.truncate(2);
    bytes.extend(std::iter::repeat_n(0u8, 12288));
    assert_eq!(Hll::from_bytes(&bytes), Ok(Hll::new()));
    bytes[2] = 52; // register 0 = 52
    assert_eq!(
        Hll::from_bytes(&bytes),
        Err(SketchError::RankOutOfRange { index: 0, rank: 52 })
    );
    bytes[2] = 0;
    bytes.push(0);
    assert_eq!(Hll::from_bytes(&bytes), Err(SketchError::TrailingBytes(1)));
}

#[test]
fn typed_errors() {
    use SketchError::*;
    assert_eq!(Hll::from_bytes(&[]), Err(Truncated));
    assert_eq!(Hll::from_bytes(&[2, 0, 0]), Err(UnsupportedVersion(2)));
    assert_eq!(Hll::from_bytes(&[1, 7]), Err(UnknownEncoding(7)));
    assert_eq!(Hll::from_bytes(&[1, 0, 0]), Ok(Hll::new()));
    assert_eq!(
        Hll::from_bytes(&[1, 0, 1, 0, 0]),
        Err(RankOutOfRange { index: 0, rank: 0 })
    );
    assert_eq!(
        Hll::from_bytes(&[1, 0, 1, 0, 52]),
        Err(RankOutOfRange { index: 0, rank: 52 })
    );
    // index 16384 = varint [0x80, 0x80, 0x01]
    assert_eq!(
        Hll::from_bytes(&[1, 0, 1, 0x80, 0x80, 0x01, 3]),
        Err(RegisterIndexOutOfRange(16384))
    );
    assert_eq!(Hll::from_bytes(&[1, 0, 9, 0, 1]), Err(BadLength(9)));
    assert_eq!(
        Hll::from_register_pairs([(3, 1), (3, 2)]),
        Err(NotStrictlyIncreasing { index: 3 })
    );
    assert_eq!(
        Hll::from_register_pairs([(16384, 1)]),
        Err(RegisterIndexOutOfRange(16384))
    );
}

#[test]
fn known_sparse_encoding() {
    let h = Hll::from_register_pairs([(3, 5), (200, 1), (201, 51)]).expect("valid");
    // version, sparse tag, k=3, idx 3, rank 5, delta 196 = [0xc4, 0x01], rank 1, delta 0, rank 51
    assert_eq!(h.to_bytes(), vec![1, 0, 3, 3, 5, 0xc4, 0x01, 1, 0, 51]);
}

#[test]
fn insert_uses_xxh3_64_seed_0() {
    // Published XXH3-64 test vector: empty input, seed 0.
    assert_eq!(Hll::hash(b""), 0x2D06_8005_38D3_94C2);
    for key in ["customer-42", "", "a much longer key that crosses the 16-byte and 128-byte paths of xxh3 ........................................................................................"] {
        assert_eq!(Hll::hash(key.as_bytes()), xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
        let mut a = Hll::new();
        a.insert(key.as_bytes());
        let mut b = Hll::new();
        b.insert_hash(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
        assert_eq!(a, b);
    }
}

/// One step of [`estimate_follows_every_operation`]: `k` and `j` pick sketches of the pool.
#[derive(Debug, Clone)]
enum Op {
    Insert(usize, Vec<u64>),
    Densify(usize),
    /// Merge `j` into `k`: `j` itself (mode 0; the same sketch if `k == j`), a clone of it
    /// (mode 1; sharing its dense registers) or a densified clone (mode 2).
    Merge(usize, usize, u8),
    /// `k` becomes a clone of `j`: the two share dense registers until one is written.
    CloneFrom(usize, usize),
    /// `k` becomes a clone of `j` that then merges the sketch of `hs` (a window row: a
    /// head shared with the next end, plus its minutes; layered when `j` is dense).
    CloneAndMerge(usize, usize, Vec<u64>),
    /// `k` merges its own clone that merged the sketch of `hs` (a dense sketch taking a
    /// sketch layered over its own registers).
    MergeOwnRow(usize, Vec<u64>),
    /// `k` becomes the sketch of `hs` (sparse when small) that then merges `j`.
    FreshMerge(usize, usize, Vec<u64>),
    /// `k` becomes an empty dense sketch that then merges `j` (taking it by sharing).
    EmptyDenseMerge(usize, usize),
    /// `k` merges the compact encoding of `j`.
    MergeCompact(usize, usize),
    /// `k` becomes `from_compact` of `j`'s encoding.
    FromCompact(usize, usize),
    BytesRoundTrip(usize),
    PairsRoundTrip(usize),
    Reset(usize, bool),
}

const POOL: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let k = 0..POOL;
    prop_oneof![
        4 => (k.clone(), hashes()).prop_map(|(k, hs)| Op::Insert(k, hs)),
        3 => k.clone().prop_map(Op::Densify),
        8 => (k.clone(), k.clone(), 0u8..3).prop_map(|(k, j, m)| Op::Merge(k, j, m)),
        1 => (k.clone(), k.clone()).prop_map(|(k, j)| Op::CloneFrom(k, j)),
        3 => (k.clone(), k.clone(), hashes()).prop_map(|(k, j, hs)| Op::CloneAndMerge(k, j, hs)),
        1 => (k.clone(), hashes()).prop_map(|(k, hs)| Op::MergeOwnRow(k, hs)),
        2 => (k.clone(), k.clone(), hashes()).prop_map(|(k, j, hs)| Op::FreshMerge(k, j, hs)),
        1 => (k.clone(), k.clone()).prop_map(|(k, j)| Op::EmptyDenseMerge(k, j)),
        2 => (k.clone(), k.clone()).prop_map(|(k, j)| Op::MergeCompact(k, j)),
        1 => (k.clone(), k.clone()).prop_map(|(k, j)| Op::FromCompact(k, j)),
        1 => k.clone().prop_map(Op::BytesRoundTrip),
        1 => k.clone().prop_map(Op::PairsRoundTrip),
        1 => (k, any::<bool>()).prop_map(|(k, d)| Op::Reset(k, d)),
    ]
}

/// The estimate recomputed from scratch: the histogram of `register_pairs`.
fn estimate_from_pairs(h: &Hll) -> f64 {
    let mut hist = [0u32; MAX_RANK as usize + 1];
    hist[0] = REGISTERS as u32;
    for (_, r) in h.register_pairs() {
        hist[0] -= 1;
        hist[usize::from(r)] += 1;
    }
    cxpulse_sketch::hll::estimate_from_histogram(&hist)
}

fn max_regs(into: &mut [u8], from: &[u8]) {
    for (a, &b) in into.iter_mut().zip(from) {
        *a = (*a).max(b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::with_cases(256)
    })]

    /// Dense sketches keep their register histogram up to date instead of counting it per
    /// estimate: after every operation, on every sketch of the pool (clones share dense
    /// registers), the estimate equals the one recomputed from the register values, and the
    /// registers equal an independent model.
    #[test]
    fn estimate_follows_every_operation(
        start in prop::collection::vec((hashes(), any::<bool>()), POOL),
        ops in prop::collection::vec(op(), 1..16),
    ) {
        // Start from sketches of all sizes, half of them dense.
        let mut pool: Vec<Hll> = start.iter().map(|(hs, d)| maybe_dense(hs, *d)).collect();
        let mut models: Vec<Vec<u8>> = start.iter().map(|(hs, _)| model(hs)).collect();
        for op in &ops {
            match op.clone() {
                Op::Insert(k, hs) => {
                    for &x in &hs {
                        pool[k].insert_hash(x);
                    }
                    max_regs(&mut models[k], &model(&hs));
                }
                Op::Densify(k) => pool[k].densify(),
                Op::Merge(k, j, mode) => {
                    if mode == 0 && k != j {
                        let (lo, hi) = pool.split_at_mut(k.max(j));
                        let (target, other) = if k < j {
                            (&mut lo[k], &hi[0])
                        } else {
                            (&mut hi[0], &lo[j])
                        };
                        target.merge(other);
                    } else {
                        let mut other = pool[j].clone();
                        if mode == 2 {
                            other.densify();
                        }
                        pool[k].merge(&other);
                    }
                    let o = models[j].clone();
                    max_regs(&mut models[k], &o);
                }
                Op::CloneFrom(k, j) => {
                    pool[k] = pool[j].clone();
                    models[k] = models[j].clone();
                }
                Op::CloneAndMerge(k, j, hs) => {
                    pool[k] = pool[j].clone();
                    pool[k].merge(&sketch(&hs));
                    models[k] = models[j].clone();
                    max_regs(&mut models[k], &model(&hs));
                }
                Op::MergeOwnRow(k, hs) => {
                    let mut row = pool[k].clone();
                    row.merge(&sketch(&hs));
                    pool[k].merge(&row);
                    max_regs(&mut models[k], &model(&hs));
                }
                Op::FreshMerge(k, j, hs) => {
                    let mut fresh = sketch(&hs);
                    fresh.merge(&pool[j]);
                    pool[k] = fresh;
                    let mut m = model(&hs);
                    max_regs(&mut m, &models[j]);
                    models[k] = m;
                }
                Op::EmptyDenseMerge(k, j) => {
                    let mut h = Hll::new();
                    h.densify();
                    h.merge(&pool[j]);
                    pool[k] = h;
                    models[k] = models[j].clone();
                }
                Op::MergeCompact(k, j) => {
                    let mut bytes = Vec::new();
                    pool[j].write_compact(Reads::Rarely, &mut bytes);
                    prop_assert_eq!(pool[k].merge_compact(&bytes), Ok(bytes.len()));
                    let o = models[j].clone();
                    max_regs(&mut models[k], &o);
                }
                Op::FromCompact(k, j) => {
                    let mut bytes = Vec::new();
                    pool[j].write_compact(Reads::Rarely, &mut bytes);
                    let (h, used) = Hll::from_compact(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(used, bytes.len());
                    pool[k] = h;
                    models[k] = models[j].clone();
                }
                Op::BytesRoundTrip(k) => {
                    pool[k] = Hll::from_bytes(&pool[k].to_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Op::PairsRoundTrip(k) => {
                    let pairs: Vec<_> = pool[k].register_pairs().collect();
                    pool[k] = Hll::from_register_pairs(pairs).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Op::Reset(k, dense) => {
                    pool[k] = Hll::new();
                    if dense {
                        pool[k].densify();
                    }
                    models[k] = vec![0u8; REGISTERS];
                }
            }
            for (h, m) in pool.iter().zip(&models) {
                prop_assert_eq!(h.register_pairs().collect::<Vec<_>>(), pairs_of(m), "after {:?}", op);
                prop_assert_eq!(h.estimate_f64().to_bits(), estimate_from_pairs(h).to_bits(), "after {:?}", op);
                prop_assert_eq!(h.is_empty(), m.iter().all(|&r| r == 0), "after {:?}", op);
            }
        }
    }
}
