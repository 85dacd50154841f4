//! The compact in-memory encoding of HyperLogLog registers (see [`Hll::write_compact`]):
//! Rice-coded index gaps and rank offsets in a little-endian bit stream. It is meant for
//! sketches that are kept for a long time but rarely read and never written (closed time
//! panes), where it takes about 7 bits per non-zero register (a sparse list takes 32, the
//! dense array 8 bits per register, zero or not).
//!
//! It is **not** a wire format (persisted sketches use [`Hll::to_bytes`]); it may change
//! between builds. Decoding is still fully checked and never panics.
//!
//! ```text
//! varint k                      number of non-zero registers; k = 0 ends the encoding
//! u8     b | c << 4             Rice parameters: index gaps (0..=13), rank offsets (0..=5)
//! u8     r_min                  smallest rank (1..=51)
//! varint n                      length of the bit stream in bytes
//! n bytes                       k × { Rice_b(gap), Rice_c(rank − r_min) }, LSB first
//! ```
//!
//! `gap` = index − previous index − 1 (the first: the index itself). `Rice_k(x)`: with
//! `q = x >> k`, `q` one-bits, a zero bit and the low `k` bits of `x`; when `q` reaches the
//! escape length (24 one-bits for gaps, 8 for ranks) the escape is followed by `x` in raw
//! bits (14 for gaps, 6 for ranks) instead.
//!
//! [`Hll::write_compact`]: crate::Hll::write_compact
//! [`Hll::to_bytes`]: crate::Hll::to_bytes

use crate::hll::{MAX_RANK, PRECISION, REGISTERS};
use crate::varint::{put_u64, Reader};
use crate::SketchError;

/// Escape length (one-bits) and raw width of index gaps.
const GAP_ESC: u32 = 24;
const GAP_BITS: u32 = PRECISION;
/// Escape length and raw width of rank offsets.
const RANK_ESC: u32 = 8;
const RANK_BITS: u32 = 6;
const MAX_GAP_K: u32 = 13;
const MAX_RANK_K: u32 = 5;

#[inline]
fn mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

fn rice_cost(x: u32, k: u32, esc: u32, raw: u32) -> u64 {
    let q = x >> k;
    u64::from(if q < esc { q + 1 + k } else { esc + raw })
}

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    #[inline]
    fn put(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 32);
        self.acc |= (v & mask(bits)) << self.bits;
        self.bits += bits;
        while self.bits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.bits -= 8;
        }
    }

    #[inline]
    fn rice(&mut self, x: u32, k: u32, esc: u32, raw: u32) {
        let q = x >> k;
        if q < esc {
            // q ones, then a zero, then the low k bits.
            self.put(mask(q), q + 1);
            self.put(u64::from(x), k);
        } else {
            self.put(mask(esc), esc);
            self.put(u64::from(x), raw);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.bits > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    avail: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            avail: 0,
        }
    }

    /// Afterwards at least 56 bits are buffered, unless the stream ends first.
    #[inline]
    fn refill(&mut self) {
        if let Some(chunk) = self.data.get(self.pos..self.pos + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.buf |= u64::from_le_bytes(w) << self.avail;
            let take = (63 - self.avail) >> 3;
            self.pos += take as usize;
            self.avail += take * 8;
        } else {
            while self.avail <= 56 {
                let Some(&b) = self.data.get(self.pos) else {
                    break;
                };
                self.buf |= u64::from(b) << self.avail;
                self.pos += 1;
                self.avail += 8;
            }
        }
    }

    #[inline]
    fn consume(&mut self, bits: u32) -> Result<(), SketchError> {
        if bits > self.avail {
            return Err(SketchError::Truncated);
        }
        self.buf >>= bits;
        self.avail -= bits;
        Ok(())
    }

    #[inline]
    fn rice(&mut self, k: u32, esc: u32, raw: u32) -> Result<u32, SketchError> {
        let ones = (!self.buf).trailing_zeros();
        if ones < esc {
            let x = (u64::from(ones) << k) | ((self.buf >> (ones + 1)) & mask(k));
            self.consume(ones + 1 + k)?;
            Ok(x as u32)
        } else {
            let x = (self.buf >> esc) & mask(raw);
            self.consume(esc + raw)?;
            Ok(x as u32)
        }
    }
}

/// Appends the compact encoding of `pairs` (non-zero registers as `(index, rank)`, indices
/// strictly increasing) to `out`.
pub(crate) fn write(pairs: &[(u16, u8)], out: &mut Vec<u8>) {
    put_u64(out, pairs.len() as u64);
    if pairs.is_empty() {
        return;
    }
    let r_min = pairs.iter().map(|p| p.1).min().unwrap_or(1);
    let gaps = || {
        let mut next = 0u32;
        pairs.iter().map(move |&(i, _)| {
            let gap = u32::from(i) - next;
            next = u32::from(i) + 1;
            gap
        })
    };
    let best = |max_k: u32, cost: &dyn Fn(u32) -> u64| {
        (0..=max_k).min_by_key(|&k| (cost(k), k)).unwrap_or(0)
    };
    let b = best(MAX_GAP_K, &|k| {
        gaps().map(|g| rice_cost(g, k, GAP_ESC, GAP_BITS)).sum()
    });
    let c = best(MAX_RANK_K, &|k| {
        pairs
            .iter()
            .map(|p| rice_cost(u32::from(p.1 - r_min), k, RANK_ESC, RANK_BITS))
            .sum()
    });
    let mut w = BitWriter {
        out: Vec::with_capacity(pairs.len()),
        acc: 0,
        bits: 0,
    };
    for (gap, &(_, rank)) in gaps().zip(pairs) {
        w.rice(gap, b, GAP_ESC, GAP_BITS);
        w.rice(u32::from(rank - r_min), c, RANK_ESC, RANK_BITS);
    }
    let bits = w.finish();
    out.push((b | c << 4) as u8);
    out.push(r_min);
    put_u64(out, bits.len() as u64);
    out.extend_from_slice(&bits);
}

/// Calls `f(index, rank)` for every register of the encoding at the front of `bytes`, in
/// increasing index order; returns how many bytes the encoding took.
#[inline]
pub(crate) fn for_each(bytes: &[u8], mut f: impl FnMut(usize, u8)) -> Result<usize, SketchError> {
    let mut r = Reader::new(bytes);
    let k = r.u64()?;
    if k == 0 {
        return Ok(bytes.len() - r.remaining());
    }
    if k > REGISTERS as u64 {
        return Err(SketchError::BadLength(k));
    }
    let params = r.u8()?;
    let (b, c) = (u32::from(params & 0x0f), u32::from(params >> 4));
    if b > MAX_GAP_K || c > MAX_RANK_K {
        return Err(SketchError::UnknownEncoding(params));
    }
    let r_min = r.u8()?;
    let n = r.u64()?;
    if n > r.remaining() as u64 {
        return Err(SketchError::BadLength(n));
    }
    let stream = r.bytes(n as usize)?;
    let used = bytes.len() - r.remaining();
    let mut bits = BitReader::new(stream);
    let mut next = 0usize;
    for _ in 0..k {
        bits.refill();
        let index = next + bits.rice(b, GAP_ESC, GAP_BITS)? as usize;
        let rank = u32::from(r_min) + bits.rice(c, RANK_ESC, RANK_BITS)?;
        if index >= REGISTERS {
            return Err(SketchError::RegisterIndexOutOfRange(index as u32));
        }
        if rank == 0 || rank > u32::from(MAX_RANK) {
            return Err(SketchError::RankOutOfRange {
                index: index as u32,
                rank: rank.min(255) as u8,
            });
        }
        f(index, rank as u8);
        next = index + 1;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(pairs: &[(u16, u8)]) -> Vec<u8> {
        let mut out = vec![0xAA];
        write(pairs, &mut out);
        let len = out.len() - 1;
        out.extend_from_slice(&[0x55; 3]);
        let mut got = Vec::new();
        let used = for_each(&out[1..], |i, r| got.push((i as u16, r))).expect("decodes");
        assert_eq!(used, len);
        assert_eq!(got, pairs);
        out[1..1 + len].to_vec()
    }

    #[test]
    fn empty_and_extremes() {
        assert_eq!(round_trip(&[]), vec![0]);
        round_trip(&[(0, 1)]);
        round_trip(&[(16383, 51)]);
        round_trip(&[(0, 51), (16383, 1)]);
        let full: Vec<(u16, u8)> = (0..16384u32)
            .map(|i| (i as u16, (i % 51 + 1) as u8))
            .collect();
        round_trip(&full);
    }

    #[test]
    fn small_for_typical_sparse_sets() {
        // ~1,600 registers spread over 16,384 with geometric ranks: about 7 bits each.
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut regs = vec![0u8; REGISTERS];
        for _ in 0..1700 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x >> 50) as usize;
            let r = ((x << 14) | (1 << 13)).leading_zeros() as u8 + 1;
            regs[i] = regs[i].max(r);
        }
        let pairs: Vec<(u16, u8)> = regs
            .iter()
            .enumerate()
            .filter(|(_, r)| **r != 0)
            .map(|(i, r)| (i as u16, *r))
            .collect();
        let bytes = round_trip(&pairs);
        assert!(
            bytes.len() * 8 < pairs.len() * 8,
            "{} bytes for {} registers",
            bytes.len(),
            pairs.len()
        );
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let pairs: Vec<(u16, u8)> = (0..300u16).map(|i| (i * 50, (i % 7 + 1) as u8)).collect();
        let mut bytes = Vec::new();
        write(&pairs, &mut bytes);
        for cut in 0..bytes.len() {
            let _ = for_each(&bytes[..cut], |_, _| {});
        }
        for i in 0..bytes.len() {
            for v in [0u8, 0xff, 0x0f, 0x80] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = for_each(&b, |i, r| {
                    assert!(i < REGISTERS && (1..=MAX_RANK).contains(&r));
                });
            }
        }
    }
}
