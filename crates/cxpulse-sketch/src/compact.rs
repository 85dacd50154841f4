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
//! Sketches with most registers non-zero take the *nibble form* instead, unless it is more
//! than a quarter larger: every register as 4 bits above a base rank, which a dense
//! accumulator takes with a plain register-wise maximum instead of decoding codes one by one
//! (Rice codes of a nearly full sketch take about 4 bits per register as well):
//!
//! ```text
//! varint k                      number of non-zero registers (> 0)
//! u8     0xff                   the nibble form (Rice parameters are never 0xff)
//! u8     base                   0 if some register is zero, else the smallest rank
//!                               (base + 15 <= 51)
//! varint e                      number of exceptions
//! e × 3 bytes                   u16 index (little-endian, increasing), u8 rank: registers
//!                               whose rank is base + 15 or more
//! 8192 bytes                    register 2i in the low nibble of byte i, 2i + 1 in the high
//!                               one: rank − base, or 15 for an exception
//! ```
//!
//! Sketches written for panes that are read often ([`Reads::Often`]) take the *bitmap
//! form* instead of the Rice codes when it is at most half as large again: which registers
//! are non-zero as a bitmap, then their ranks as 4-bit offsets in index order. Reading it
//! walks the set bits, with no chain of variable-length codes to follow (about four times
//! faster than the Rice codes of a sketch a third full, which take some 5 bits per register
//! against 2048 bytes plus 4 bits per register here):
//!
//! ```text
//! varint k                      number of non-zero registers (> 0)
//! u8     0xfe                   the bitmap form
//! u8     r_min                  smallest rank (1..=37)
//! varint e                      number of exceptions
//! e × 3 bytes                   u16 index (little-endian, increasing), u8 rank: registers
//!                               whose rank is r_min + 15 or more
//! 2048 bytes                    bit i % 8 of byte i / 8: register i is non-zero (k bits set)
//! ceil(k / 2) bytes             the j-th non-zero register in the low nibble of byte j / 2
//!                               (j even) or the high one: rank − r_min, or 15 for an
//!                               exception
//! ```
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
/// The marker of the nibble form, where the Rice parameters would be.
const NIBBLE_FORM: u8 = 0xff;
/// The nibble of a register listed among the exceptions.
const NIBBLE_ESC: u8 = 15;
const NIBBLE_BYTES: usize = REGISTERS / 2;
/// The marker of the bitmap form.
const BITMAP_FORM: u8 = 0xfe;
const BITMAP_BYTES: usize = REGISTERS / 8;

/// How often the panes a sketch is written for are read: it decides whether the bitmap
/// form may take more room than the Rice codes to be read faster (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Read now and then (the smallest form).
    Rarely,
    /// Read at every window end (the bitmap form when at most 1.5 times the Rice codes).
    Often,
}

#[inline]
fn mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

/// `Σ rice_cost(x, k, esc, raw)` over `xs` (at most [`REGISTERS`] values of at most 38 bits
/// each here, so the sum fits a `u32`), branch-free so that it vectorizes.
fn rice_cost_sum(xs: &[u32], k: u32, esc: u32, raw: u32) -> u64 {
    let sum: u32 = xs.iter().map(|&x| rice_bits(x, k, esc, raw)).sum();
    u64::from(sum)
}

fn rice_cost(x: u32, k: u32, esc: u32, raw: u32) -> u64 {
    u64::from(rice_bits(x, k, esc, raw))
}

#[inline]
fn rice_bits(x: u32, k: u32, esc: u32, raw: u32) -> u32 {
    let q = x >> k;
    if q < esc {
        q + 1 + k
    } else {
        esc + raw
    }
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
pub(crate) fn write(pairs: &[(u16, u8)], reads: Reads, out: &mut Vec<u8>) {
    put_u64(out, pairs.len() as u64);
    if pairs.is_empty() {
        return;
    }
    let r_min = pairs.iter().map(|p| p.1).min().unwrap_or(1);
    // The gaps once, so that each parameter's cost is a plain (vectorized) pass over them.
    let mut gaps = Vec::with_capacity(pairs.len());
    let mut next = 0u32;
    for &(i, _) in pairs {
        gaps.push(u32::from(i) - next);
        next = u32::from(i) + 1;
    }
    // Rank offsets are below 64: their cost per parameter comes from their histogram.
    let mut ranks = [0u32; 64];
    for p in pairs {
        ranks[usize::from(p.1 - r_min) & 63] += 1;
    }
    // The cheapest parameter and its cost in bits (the smallest parameter among equals).
    let best = |max_k: u32, cost: &dyn Fn(u32) -> u64| {
        (0..=max_k)
            .map(|k| (cost(k), k))
            .min()
            .map_or((0, 0), |(bits, k)| (k, bits))
    };
    let (b, gap_bits) = best(MAX_GAP_K, &|k| rice_cost_sum(&gaps, k, GAP_ESC, GAP_BITS));
    let (c, rank_bits) = best(MAX_RANK_K, &|k| {
        (0u32..)
            .zip(&ranks)
            .map(|(x, &n)| u64::from(n) * rice_cost(x, k, RANK_ESC, RANK_BITS))
            .sum()
    });
    let rice_bytes = (gap_bits + rank_bits).div_ceil(8);
    if pairs.len() > REGISTERS / 2 && write_nibbles(pairs, r_min, rice_bytes, out) {
        return;
    }
    if reads == Reads::Often && write_bitmap(pairs, r_min, rice_bytes + rice_bytes / 2, out) {
        return;
    }
    let mut w = BitWriter {
        out: Vec::with_capacity(pairs.len()),
        acc: 0,
        bits: 0,
    };
    for (&gap, &(_, rank)) in gaps.iter().zip(pairs) {
        w.rice(gap, b, GAP_ESC, GAP_BITS);
        w.rice(u32::from(rank - r_min), c, RANK_ESC, RANK_BITS);
    }
    let bits = w.finish();
    out.push((b | c << 4) as u8);
    out.push(r_min);
    put_u64(out, bits.len() as u64);
    out.extend_from_slice(&bits);
}

/// Appends the nibble form of `pairs` (the count is written already) unless it takes more
/// than 1.25 × `rice_bytes` or the ranks do not allow it; returns whether it did.
fn write_nibbles(pairs: &[(u16, u8)], r_min: u8, rice_bytes: u64, out: &mut Vec<u8>) -> bool {
    let base = if pairs.len() == REGISTERS { r_min } else { 0 };
    if base > MAX_RANK - NIBBLE_ESC {
        return false;
    }
    let exceptions = pairs.iter().filter(|p| p.1 >= base + NIBBLE_ESC).count();
    if (NIBBLE_BYTES + 3 * exceptions) as u64 > rice_bytes + rice_bytes / 4 {
        return false;
    }
    out.push(NIBBLE_FORM);
    out.push(base);
    put_u64(out, exceptions as u64);
    let mut nibbles = vec![0u8; NIBBLE_BYTES];
    for &(i, rank) in pairs {
        let nibble = nibble_or_exception(i, rank, base, out);
        nibbles[usize::from(i) / 2] |= nibble << (4 * (i % 2));
    }
    out.extend_from_slice(&nibbles);
    true
}

/// The nibble of register `i`'s `rank` over `base`; a rank the nibble cannot hold is
/// appended to the exceptions in `out` (index, rank) and takes the escape nibble.
fn nibble_or_exception(i: u16, rank: u8, base: u8, out: &mut Vec<u8>) -> u8 {
    if rank >= base + NIBBLE_ESC {
        out.extend_from_slice(&i.to_le_bytes());
        out.push(rank);
        NIBBLE_ESC
    } else {
        rank - base
    }
}

/// Appends the bitmap form of `pairs` (the count is written already) unless it takes more
/// than `limit` bytes or the ranks do not allow it; returns whether it did.
fn write_bitmap(pairs: &[(u16, u8)], r_min: u8, limit: u64, out: &mut Vec<u8>) -> bool {
    if r_min > MAX_RANK - NIBBLE_ESC + 1 {
        return false;
    }
    let exceptions = pairs.iter().filter(|p| p.1 >= r_min + NIBBLE_ESC).count();
    if (BITMAP_BYTES + 3 * exceptions + pairs.len().div_ceil(2)) as u64 > limit {
        return false;
    }
    out.push(BITMAP_FORM);
    out.push(r_min);
    put_u64(out, exceptions as u64);
    let mut bitmap = [0u8; BITMAP_BYTES];
    let mut nibbles = vec![0u8; pairs.len().div_ceil(2)];
    for (j, &(i, rank)) in pairs.iter().enumerate() {
        let nibble = nibble_or_exception(i, rank, r_min, out);
        bitmap[usize::from(i) / 8] |= 1 << (i % 8);
        nibbles[j / 2] |= nibble << (4 * (j % 2));
    }
    out.extend_from_slice(&bitmap);
    out.extend_from_slice(&nibbles);
    true
}

/// One compact encoding, parsed (its counts and lengths checked, not its contents).
pub(crate) enum Compact<'a> {
    Empty,
    Rice {
        k: u64,
        b: u32,
        c: u32,
        r_min: u8,
        stream: &'a [u8],
    },
    Nibbles(Nibbles<'a>),
    Bitmap(Bitmap<'a>),
}

/// The bitmap form (see the module docs).
pub(crate) struct Bitmap<'a> {
    k: u64,
    r_min: u8,
    /// 3 bytes each.
    exceptions: &'a [u8],
    /// [`BITMAP_BYTES`] bytes.
    bitmap: &'a [u8],
    /// `ceil(k / 2)` bytes.
    nibbles: &'a [u8],
}

impl Bitmap<'_> {
    /// Calls `f(index, rank)` for every non-zero register, in increasing index order, after
    /// checking that the bitmap holds `k` registers.
    fn for_each(&self, mut f: impl FnMut(usize, u8)) -> Result<(), SketchError> {
        let set: u64 = self.bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
        if set != self.k {
            return Err(SketchError::BadLength(self.k));
        }
        let mut exceptions = self.exceptions.chunks_exact(3);
        let mut j = 0usize;
        for (w, word) in self.bitmap.chunks_exact(8).enumerate() {
            let mut bits = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            while bits != 0 {
                let index = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let byte = self.nibbles.get(j / 2).copied().unwrap_or(0);
                let x = (byte >> (4 * (j % 2))) & 0x0f;
                j += 1;
                let rank = if x == NIBBLE_ESC {
                    match exceptions.next() {
                        Some(e)
                            if usize::from(u16::from_le_bytes([e[0], e[1]])) == index
                                && e[2] >= self.r_min + NIBBLE_ESC
                                && e[2] <= MAX_RANK =>
                        {
                            e[2]
                        }
                        _ => {
                            return Err(SketchError::RankOutOfRange {
                                index: index as u32,
                                rank: NIBBLE_ESC,
                            })
                        }
                    }
                } else {
                    self.r_min + x
                };
                f(index, rank);
            }
        }
        if exceptions.next().is_some() {
            return Err(SketchError::BadLength(self.exceptions.len() as u64 / 3));
        }
        Ok(())
    }
}

/// The nibble form (see the module docs).
pub(crate) struct Nibbles<'a> {
    k: u64,
    base: u8,
    /// 3 bytes each.
    exceptions: &'a [u8],
    nibbles: &'a [u8],
}

impl Nibbles<'_> {
    /// The listed exceptions, checked: increasing indices whose nibble is the escape, ranks
    /// from `base + 15` to `MAX_RANK`.
    fn exceptions(&self) -> impl Iterator<Item = Result<(usize, u8), SketchError>> + '_ {
        let mut next = 0usize;
        self.exceptions.chunks_exact(3).map(move |e| {
            let index = usize::from(u16::from_le_bytes([e[0], e[1]]));
            let rank = e[2];
            if index >= REGISTERS || index < next {
                return Err(SketchError::RegisterIndexOutOfRange(index as u32));
            }
            next = index + 1;
            if nibble(self.nibbles, index) != NIBBLE_ESC
                || rank < self.base + NIBBLE_ESC
                || rank > MAX_RANK
            {
                return Err(SketchError::RankOutOfRange {
                    index: index as u32,
                    rank,
                });
            }
            Ok((index, rank))
        })
    }

    /// Checks the counts: `k` non-zero registers (a nibble 0 is a zero register when the
    /// base is 0) and one escape nibble per exception, every exception valid.
    fn check(&self) -> Result<(), SketchError> {
        let count = |x: u8| -> usize {
            self.nibbles
                .iter()
                .map(|&b| usize::from(b & 0x0f == x) + usize::from(b >> 4 == x))
                .sum()
        };
        let zeros = if self.base == 0 { count(0) } else { 0 };
        if (REGISTERS - zeros) as u64 != self.k {
            return Err(SketchError::BadLength(self.k));
        }
        let escapes = count(NIBBLE_ESC);
        if escapes != self.exceptions.len() / 3 {
            return Err(SketchError::BadLength(escapes as u64));
        }
        self.exceptions().try_for_each(|e| e.map(|_| ()))
    }

    /// Register-wise maximum into dense registers, without a histogram (the caller marks
    /// its histogram stale). Nothing is written if the encoding is corrupt.
    pub(crate) fn max_into(&self, regs: &mut [u8; REGISTERS]) -> Result<(), SketchError> {
        self.check()?;
        let base = self.base;
        // An escape stands for at least base + 15; its exception raises it further below.
        for (pair, &byte) in regs.chunks_exact_mut(2).zip(self.nibbles) {
            pair[0] = pair[0].max(base + (byte & 0x0f));
            pair[1] = pair[1].max(base + (byte >> 4));
        }
        for (index, rank) in self.exceptions().flatten() {
            regs[index] = regs[index].max(rank);
        }
        Ok(())
    }
}

fn nibble(nibbles: &[u8], index: usize) -> u8 {
    nibbles
        .get(index / 2)
        .map_or(0, |b| (b >> (4 * (index % 2))) & 0x0f)
}

/// Parses the encoding at the front of `bytes`; also returns how many bytes it takes.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Compact<'_>, usize), SketchError> {
    let mut r = Reader::new(bytes);
    let k = r.u64()?;
    if k == 0 {
        return Ok((Compact::Empty, bytes.len() - r.remaining()));
    }
    if k > REGISTERS as u64 {
        return Err(SketchError::BadLength(k));
    }
    let params = r.u8()?;
    if params == NIBBLE_FORM {
        let base = r.u8()?;
        if base > MAX_RANK - NIBBLE_ESC {
            return Err(SketchError::RankOutOfRange {
                index: 0,
                rank: base,
            });
        }
        let e = r.u64()?;
        if e > REGISTERS as u64 {
            return Err(SketchError::BadLength(e));
        }
        let exceptions = r.bytes(3 * e as usize)?;
        let nibbles = r.bytes(NIBBLE_BYTES)?;
        let used = bytes.len() - r.remaining();
        let form = Nibbles {
            k,
            base,
            exceptions,
            nibbles,
        };
        return Ok((Compact::Nibbles(form), used));
    }
    if params == BITMAP_FORM {
        let r_min = r.u8()?;
        if r_min == 0 || r_min > MAX_RANK - NIBBLE_ESC + 1 {
            return Err(SketchError::RankOutOfRange {
                index: 0,
                rank: r_min,
            });
        }
        let e = r.u64()?;
        if e > k {
            return Err(SketchError::BadLength(e));
        }
        let exceptions = r.bytes(3 * e as usize)?;
        let bitmap = r.bytes(BITMAP_BYTES)?;
        let nibbles = r.bytes(k.div_ceil(2) as usize)?;
        let used = bytes.len() - r.remaining();
        let form = Bitmap {
            k,
            r_min,
            exceptions,
            bitmap,
            nibbles,
        };
        return Ok((Compact::Bitmap(form), used));
    }
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
    let rice = Compact::Rice {
        k,
        b,
        c,
        r_min,
        stream,
    };
    Ok((rice, used))
}

/// Calls `f(index, rank)` for every register of the encoding at the front of `bytes`, in
/// increasing index order; returns how many bytes the encoding took.
#[cfg(test)]
fn for_each(bytes: &[u8], f: impl FnMut(usize, u8)) -> Result<usize, SketchError> {
    let (form, used) = parse(bytes)?;
    form.for_each(f)?;
    Ok(used)
}

impl Compact<'_> {
    /// Number of non-zero registers.
    pub(crate) fn registers(&self) -> u64 {
        match self {
            Compact::Empty => 0,
            Compact::Rice { k, .. } => *k,
            Compact::Nibbles(n) => n.k,
            Compact::Bitmap(m) => m.k,
        }
    }

    /// Calls `f(index, rank)` for every non-zero register, in increasing index order.
    pub(crate) fn for_each(self, mut f: impl FnMut(usize, u8)) -> Result<(), SketchError> {
        match self {
            Compact::Empty => Ok(()),
            Compact::Rice {
                k,
                b,
                c,
                r_min,
                stream,
            } => for_each_rice(k, b, c, r_min, stream, f),
            Compact::Bitmap(m) => m.for_each(f),
            Compact::Nibbles(n) => {
                // Checked first: every escape nibble has its exception, in index order.
                n.check()?;
                let mut exceptions = n.exceptions().flatten();
                for index in 0..REGISTERS {
                    let x = nibble(n.nibbles, index);
                    let rank = match x {
                        NIBBLE_ESC => exceptions.next().map_or(0, |e| e.1),
                        _ => n.base + x,
                    };
                    if rank != 0 {
                        f(index, rank);
                    }
                }
                Ok(())
            }
        }
    }
}

fn for_each_rice(
    k: u64,
    b: u32,
    c: u32,
    r_min: u8,
    stream: &[u8],
    mut f: impl FnMut(usize, u8),
) -> Result<(), SketchError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `pairs` for both kinds of reads, checks that each decodes to `pairs` and
    /// reports its own length; returns the encoding for rare reads.
    fn round_trip(pairs: &[(u16, u8)]) -> Vec<u8> {
        let mut written = Vec::new();
        for reads in [Reads::Often, Reads::Rarely] {
            let mut out = vec![0xAA];
            write(pairs, reads, &mut out);
            let len = out.len() - 1;
            out.extend_from_slice(&[0x55; 3]);
            let mut got = Vec::new();
            let used = for_each(&out[1..], |i, r| got.push((i as u16, r))).expect("decodes");
            assert_eq!(used, len);
            assert_eq!(got, pairs);
            written = out[1..1 + len].to_vec();
        }
        written
    }

    /// The Rice parameters `write` picks are the cheapest, the smallest among equals, as a
    /// plain search over every parameter and register finds them.
    #[test]
    fn parameters_are_the_cheapest() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for &(n, spread) in &[
            (3usize, 1u32),
            (40, 3),
            (700, 9),
            (1600, 2),
            (5000, 1),
            (9000, 1),
        ] {
            let mut idx: Vec<u16> = (0..n).map(|_| (next() % 16384) as u16).collect();
            idx.sort_unstable();
            idx.dedup();
            let pairs: Vec<(u16, u8)> = idx
                .iter()
                .map(|&i| (i, (1 + (next() % 51) as u32 / spread).min(51) as u8))
                .collect();
            let r_min = pairs.iter().map(|p| p.1).min().unwrap_or(1);
            let mut gaps = Vec::new();
            let mut prev = 0u32;
            for &(i, _) in &pairs {
                gaps.push(u32::from(i) - prev);
                prev = u32::from(i) + 1;
            }
            let cheapest = |max_k: u32, cost: &dyn Fn(u32) -> u64| {
                let mut best = (u64::MAX, 0);
                for k in 0..=max_k {
                    if cost(k) < best.0 {
                        best = (cost(k), k);
                    }
                }
                best.1
            };
            let b = cheapest(MAX_GAP_K, &|k| {
                gaps.iter()
                    .map(|&g| rice_cost(g, k, GAP_ESC, GAP_BITS))
                    .sum()
            });
            let c = cheapest(MAX_RANK_K, &|k| {
                pairs
                    .iter()
                    .map(|p| rice_cost(u32::from(p.1 - r_min), k, RANK_ESC, RANK_BITS))
                    .sum()
            });
            let mut out = Vec::new();
            write(&pairs, Reads::Rarely, &mut out);
            let (form, _) = parse(&out).expect("parses");
            match form {
                Compact::Rice { b: wb, c: wc, .. } => assert_eq!((wb, wc), (b, c), "{n} pairs"),
                Compact::Nibbles(_) => assert!(pairs.len() > REGISTERS / 2, "{n} pairs"),
                Compact::Empty => panic!("{n} pairs written empty"),
                Compact::Bitmap(_) => panic!("{n} pairs: the bitmap form is for frequent reads"),
            }
            round_trip(&pairs);
        }
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
        let pairs = random_pairs(1700, 0x1234_5678_9abc_def0);
        let bytes = round_trip(&pairs);
        assert!(
            bytes.len() * 8 < pairs.len() * 8,
            "{} bytes for {} registers",
            bytes.len(),
            pairs.len()
        );
    }

    /// Registers of `n` pseudo-random keys, as (index, rank) pairs.
    fn random_pairs(n: usize, seed: u64) -> Vec<(u16, u8)> {
        let mut x = seed | 1;
        let mut regs = vec![0u8; REGISTERS];
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x >> 50) as usize;
            let r = ((x << 14) | (1 << 13)).leading_zeros() as u8 + 1;
            regs[i] = regs[i].max(r);
        }
        regs.iter()
            .enumerate()
            .filter(|(_, r)| **r != 0)
            .map(|(i, r)| (i as u16, *r))
            .collect()
    }

    fn nibble_form(bytes: &[u8]) -> bool {
        matches!(parse(bytes), Ok((Compact::Nibbles(_), _)))
    }

    #[test]
    fn nearly_full_sketches_take_the_nibble_form() {
        // Some zero registers (base 0); none (base = smallest rank); high ranks (exceptions).
        let mut full: Vec<(u16, u8)> = (0..REGISTERS as u16)
            .map(|i| (i, 3 + (i % 9) as u8))
            .collect();
        full[77].1 = 40;
        full[16383].1 = 51;
        for pairs in [random_pairs(60_000, 7), random_pairs(400_000, 9), full] {
            let bytes = round_trip(&pairs);
            assert!(nibble_form(&bytes), "{} registers", pairs.len());
            assert!(bytes.len() < NIBBLE_BYTES + 64);
            let mut regs = [0u8; REGISTERS];
            let Ok((Compact::Nibbles(n), _)) = parse(&bytes) else {
                panic!("nibble form");
            };
            n.max_into(&mut regs).expect("valid");
            let mut expected = [0u8; REGISTERS];
            for &(i, r) in &pairs {
                expected[usize::from(i)] = r;
            }
            assert_eq!(regs, expected);
            // A maximum: registers already higher stay.
            let mut high = [50u8; REGISTERS];
            n.max_into(&mut high).expect("valid");
            assert!(high.iter().zip(&expected).all(|(h, e)| *h == (*e).max(50)));
        }
        // Half-full sketches stay Rice-coded (smaller).
        let half = random_pairs(13_000, 11);
        assert!(half.len() > REGISTERS / 2 && !nibble_form(&round_trip(&half)));
    }

    #[test]
    fn corrupt_nibble_form_is_an_error_and_writes_nothing() {
        let mut pairs = random_pairs(60_000, 5);
        pairs[100].1 = 45;
        let mut bytes = Vec::new();
        write(&pairs, Reads::Rarely, &mut bytes);
        assert!(nibble_form(&bytes));
        for i in (0..bytes.len()).step_by(7).chain(0..16) {
            for v in [0u8, 0xff, 0x0f, 0xf0, 0x80] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = for_each(&b, |i, r| {
                    assert!(i < REGISTERS && (1..=MAX_RANK).contains(&r));
                });
                if let Ok((Compact::Nibbles(n), _)) = parse(&b) {
                    let mut regs = [0u8; REGISTERS];
                    match n.max_into(&mut regs) {
                        Ok(()) => assert!(regs.iter().all(|&r| r <= MAX_RANK)),
                        Err(_) => assert_eq!(regs, [0u8; REGISTERS]),
                    }
                }
            }
        }
        // An escape nibble without its exception is found, whichever way it is read.
        let last = bytes.len() - 1;
        assert!(bytes[last] & 0x0f != 0x0f, "pick a byte without an escape");
        let mut b = bytes.clone();
        b[last] |= 0x0f;
        assert!(for_each(&b, |_, _| {}).is_err());
        let Ok((Compact::Nibbles(n), _)) = parse(&b) else {
            panic!("still the nibble form");
        };
        assert!(n.max_into(&mut [0u8; REGISTERS]).is_err());
    }

    fn bitmap_form(bytes: &[u8]) -> bool {
        matches!(parse(bytes), Ok((Compact::Bitmap(_), _)))
    }

    #[test]
    fn sketches_read_often_take_the_bitmap_form_within_half_again_the_rice_codes() {
        let encode = |pairs: &[(u16, u8)], reads| {
            let mut out = Vec::new();
            write(pairs, reads, &mut out);
            out
        };
        // A third full, with a high rank (an exception); a third full over a high smallest
        // rank.
        let mut third = random_pairs(6_500, 3);
        third[10].1 = 45;
        let high: Vec<(u16, u8)> = (0..5_000u16).map(|i| (i * 3, 30 + (i % 5) as u8)).collect();
        for pairs in [third, high] {
            let (often, rarely) = (encode(&pairs, Reads::Often), encode(&pairs, Reads::Rarely));
            assert!(
                bitmap_form(&often) && !bitmap_form(&rarely),
                "{} pairs",
                pairs.len()
            );
            assert!(
                often.len() * 2 <= rarely.len() * 3,
                "{} vs {}",
                often.len(),
                rarely.len()
            );
            assert_eq!(round_trip(&pairs), rarely);
        }
        // Sparser sketches stay Rice-coded (the bitmap alone would be far larger), and so do
        // ranks too high for 4-bit offsets below the escape.
        let sparse = random_pairs(1_700, 5);
        let too_high: Vec<(u16, u8)> = (0..6_000u16).map(|i| (i * 2, 40)).collect();
        for pairs in [sparse, too_high] {
            assert!(
                !bitmap_form(&encode(&pairs, Reads::Often)),
                "{} pairs",
                pairs.len()
            );
        }
    }

    #[test]
    fn corrupt_bitmap_form_is_an_error() {
        let mut pairs = random_pairs(6_500, 4);
        pairs[3].1 = 44;
        let mut bytes = Vec::new();
        write(&pairs, Reads::Often, &mut bytes);
        let Ok((Compact::Bitmap(m), used)) = parse(&bytes) else {
            panic!("bitmap form");
        };
        assert_eq!(used, bytes.len());
        let nibbles_at = bytes.len() - m.nibbles.len();
        let bitmap_at = nibbles_at - BITMAP_BYTES;
        let exception_at = bitmap_at - 3;
        let checked = |b: &[u8]| {
            for_each(b, |i, r| {
                assert!(i < REGISTERS && (1..=MAX_RANK).contains(&r))
            })
        };
        assert_eq!(checked(&bytes), Ok(bytes.len()));
        // A register more in the bitmap than counted.
        let mut b = bytes.clone();
        let gap = (bitmap_at..nibbles_at)
            .find(|&i| b[i] != 0xff)
            .expect("a gap");
        b[gap] = 0xff;
        assert_eq!(checked(&b), Err(SketchError::BadLength(pairs.len() as u64)));
        // The exception at another index; an escape nibble without its exception; the
        // exception without its escape nibble.
        let mut b = bytes.clone();
        b[exception_at] ^= 1;
        assert!(matches!(
            checked(&b),
            Err(SketchError::RankOutOfRange { .. })
        ));
        let last = bytes.len() - 1;
        assert!(
            bytes[last] & 0x0f != 0x0f,
            "pick a nibble that is not an escape"
        );
        let mut b = bytes.clone();
        b[last] |= 0x0f;
        assert!(checked(&b).is_err());
        let mut b = bytes.clone();
        b[nibbles_at + 1] &= 0x0f; // pairs[3]: the high nibble of nibble byte 1
        assert!(checked(&b).is_err());
        // A smallest rank of 0, or too high for its offsets.
        let r_min_at = bytes
            .iter()
            .position(|&x| x == BITMAP_FORM)
            .expect("marker")
            + 1;
        for r_min in [0, MAX_RANK - NIBBLE_ESC + 2] {
            let mut b = bytes.clone();
            b[r_min_at] = r_min;
            assert!(matches!(
                checked(&b),
                Err(SketchError::RankOutOfRange { .. })
            ));
        }
        // Any byte changed or the encoding cut short: an error or valid registers.
        for i in (0..bytes.len()).step_by(5) {
            for v in [0u8, 0xff, 0x0f, 0xf0] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = checked(&b);
            }
            assert!(checked(&bytes[..i]).is_err());
        }
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let pairs: Vec<(u16, u8)> = (0..300u16).map(|i| (i * 50, (i % 7 + 1) as u8)).collect();
        let mut bytes = Vec::new();
        write(&pairs, Reads::Rarely, &mut bytes);
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
