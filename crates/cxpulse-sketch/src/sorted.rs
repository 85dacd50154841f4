//! In-place merge of two sorted, key-unique vectors (shared by the DDSketch
//! bucket list and the sparse HyperLogLog list).

/// Number of keys of `src` that are absent from `dst`. Both slices must be
/// sorted by `key` with unique keys.
pub(crate) fn count_new<T, K: Ord>(dst: &[T], src: &[T], key: impl Fn(&T) -> K) -> usize {
    let (mut i, mut j, mut new) = (0, 0, 0);
    while i < dst.len() && j < src.len() {
        match key(&dst[i]).cmp(&key(&src[j])) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Greater => {
                new += 1;
                j += 1;
            }
        }
    }
    new + (src.len() - j)
}

/// Merges `src` into `dst` in place (both sorted by `key`, keys unique),
/// combining entries with equal keys with `combine(dst_entry, src_entry)`.
/// `new` must be `count_new(dst, src, key)`. Allocates at most once (to grow
/// `dst` by `new` entries) and never when `new == 0`.
pub(crate) fn merge_into<T: Copy, K: Ord>(
    dst: &mut Vec<T>,
    src: &[T],
    new: usize,
    key: impl Fn(&T) -> K,
    combine: impl Fn(T, T) -> T,
) {
    if src.is_empty() {
        return;
    }
    if new == 0 {
        // Every key of src already exists in dst: combine in place.
        let mut i = 0;
        for s in src {
            let k = key(s);
            while key(&dst[i]) < k {
                i += 1;
            }
            dst[i] = combine(dst[i], *s);
        }
        return;
    }
    let old_len = dst.len();
    let Some(&filler) = src.first() else { return };
    dst.resize(old_len + new, filler);
    // Merge from the back so that no element is overwritten before it is read.
    let (mut i, mut j, mut w) = (old_len, src.len(), old_len + new);
    while j > 0 {
        w -= 1;
        if i > 0 {
            match key(&dst[i - 1]).cmp(&key(&src[j - 1])) {
                std::cmp::Ordering::Greater => {
                    dst[w] = dst[i - 1];
                    i -= 1;
                    continue;
                }
                std::cmp::Ordering::Equal => {
                    dst[w] = combine(dst[i - 1], src[j - 1]);
                    i -= 1;
                    j -= 1;
                    continue;
                }
                std::cmp::Ordering::Less => {}
            }
        }
        dst[w] = src[j - 1];
        j -= 1;
    }
    debug_assert_eq!(w, i);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[(i32, u64)], b: &[(i32, u64)]) -> Vec<(i32, u64)> {
        let mut m = std::collections::BTreeMap::new();
        for &(k, v) in a.iter().chain(b) {
            *m.entry(k).or_insert(0u64) += v;
        }
        m.into_iter().collect()
    }

    #[test]
    fn merge_matches_naive_map() {
        type Buckets<'a> = &'a [(i32, u64)];
        let cases: &[(Buckets, Buckets)] = &[
            (&[], &[]),
            (&[], &[(1, 1)]),
            (&[(1, 1)], &[]),
            (&[(1, 1), (5, 2)], &[(0, 3), (5, 1), (9, 4)]),
            (&[(2, 1), (3, 1)], &[(2, 5), (3, 6)]),
            (&[(10, 1)], &[(1, 1), (2, 2), (3, 3)]),
            (&[(1, 1), (2, 2), (3, 3)], &[(10, 1)]),
        ];
        for (a, b) in cases {
            let mut dst = a.to_vec();
            let new = count_new(&dst, b, |e| e.0);
            merge_into(&mut dst, b, new, |e| e.0, |x, y| (x.0, x.1 + y.1));
            assert_eq!(dst, naive(a, b), "a={a:?} b={b:?}");
        }
    }
}
