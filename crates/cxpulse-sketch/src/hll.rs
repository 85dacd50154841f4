//! [`Hll`]: a HyperLogLog distinct counter with precision `p = 14`
//! (`m = 16384` registers, standard error ≈ 1.04/√m ≈ 0.81 %), using Otmar
//! Ertl's improved raw estimator ("New cardinality estimation algorithms for
//! HyperLogLog sketches", 2017, algorithm 6) — no empirical bias tables, and
//! accurate from `n = 0` up to far beyond `10^9`.
//!
//! # Hashing
//!
//! [`Hll::insert`] hashes its key with `xxhash_rust::xxh3::xxh3_64` (XXH3,
//! 64-bit, seed 0). This is part of the contract: every instance of the job
//! and every persisted sketch must use the same hash, otherwise merges count
//! the same customer twice. [`Hll::hash`] exposes it so callers can hash a key
//! once and feed several sketches with [`Hll::insert_hash`].
//!
//! Register index = the top 14 bits of the hash; rank = 1 + the number of
//! leading zeros of the remaining 50 bits (capped at 51).
//!
//! # Representation
//!
//! Small sets are *sparse*: a sorted `Vec<u32>` holding one packed
//! `(index << 8) | rank` per non-zero register (4 bytes each). Once more than
//! [`SPARSE_MAX_ENTRIES`] registers are non-zero (a sparse list of 4 KiB, a
//! quarter of the dense size) the sketch switches to *dense*: 16384 one-byte
//! registers. The representation is invisible: equality, the estimate and
//! merging depend only on the register values.
//!
//! Dense registers carry their histogram (how many registers hold each value
//! `0..=51`), kept exact by inserts and sparse merges, so the estimate of such
//! a dense sketch is `O(1)` in the number of registers; a dense ← dense merge
//! that raises many registers leaves it stale, to be recounted when read.
//!
//! Dense registers are shared copy-on-write between clones. A merge that raises a few
//! of them (at most a 32nd of the non-zero ones) while they are shared does not copy them: the
//! sketch becomes *layered*, the shared registers plus a sorted list of the registers it
//! raises above them, with its own histogram. That is what a window row is: the head it
//! shares with the window's next end, plus its minutes. More raises, an insert, or a
//! decode into it make it dense again, with registers of its own.

use crate::compact::Reads;
use crate::varint::{put_u64, Reader};
use crate::{sorted, SketchError};
use std::sync::{Arc, OnceLock};

/// Precision `p`: the number of hash bits used as register index.
pub const PRECISION: u32 = 14;
/// Number of registers `m = 2^p`.
pub const REGISTERS: usize = 1 << PRECISION;
/// Remaining hash bits `q = 64 − p`.
const Q: usize = 64 - PRECISION as usize;
/// The largest possible register value, `q + 1 = 51`.
pub const MAX_RANK: u8 = (Q + 1) as u8;
/// Largest number of entries kept in the sparse representation
/// (`4 × 1024` bytes = a quarter of the dense registers).
pub const SPARSE_MAX_ENTRIES: usize = REGISTERS / 16;
/// Byte length of the 6-bit packed dense registers in the binary format.
const PACKED_DENSE_LEN: usize = REGISTERS * 6 / 8;

const TAG_SPARSE: u8 = 0;
const TAG_DENSE: u8 = 1;

#[inline]
fn pack(index: u32, rank: u8) -> u32 {
    (index << 8) | u32::from(rank)
}

#[inline]
fn unpack(e: u32) -> (u16, u8) {
    ((e >> 8) as u16, e as u8)
}

#[derive(Clone)]
enum Repr {
    /// Sorted by index (= sorted as `u32`), unique indices, ranks in `1..=51`,
    /// at most `SPARSE_MAX_ENTRIES` entries except transiently.
    Sparse(Vec<u32>),
    /// Exactly `REGISTERS` registers and their histogram. Shared copy-on-write:
    /// cloning a dense sketch (e.g. a window state handed out in a row) costs
    /// nothing, and a merge that changes no register copies nothing.
    Dense(Arc<DenseRegs>),
    /// Shared dense registers and the few registers raised above them: what a merge of a
    /// few registers into shared dense registers makes (a window row: a head shared with
    /// the next end, plus its minutes), instead of copying all of them.
    Layered(Box<Layered>),
}

/// Most registers a [`Layered`] sketch raises above `base`: a 32nd of the base's non-zero
/// registers (at most 512, a list of 2 KiB). Layers pay where a few registers are raised
/// above many (a long window's head); beyond, the sketch becomes dense.
fn layer_limit(base: &DenseRegs) -> usize {
    (REGISTERS - usize::from(base.hist[0])) / 32
}

/// Dense registers shared with other sketches, and the registers raised above them.
#[derive(Clone)]
struct Layered {
    /// Its histogram is never stale.
    base: Arc<DenseRegs>,
    /// Packed `(index, rank)` sorted by index, unique indices, each rank above the
    /// base's register; at most [`layer_limit`] entries.
    over: Vec<u32>,
    /// `hist[k]` = number of registers (base raised by `over`) equal to `k`.
    hist: [u16; HIST_LEN],
}

impl Layered {
    /// `base` (histogram not stale) raised by `cands`: packed entries sorted by index,
    /// unique indices, each rank above the base's register. `None` (keep `base` as it
    /// is) if `cands` is empty.
    fn over(base: &Arc<DenseRegs>, cands: &[u32]) -> Option<Box<Layered>> {
        debug_assert!(!base.stale);
        if cands.is_empty() {
            return None;
        }
        let mut layered = Box::new(Layered {
            base: Arc::clone(base),
            over: Vec::new(),
            hist: base.hist,
        });
        layered.raise_all(cands);
        Some(layered)
    }

    /// Raises the registers of `cands` (packed, sorted by index, unique indices, each
    /// rank above the base's register) that lie above the current ones.
    fn raise_all(&mut self, cands: &[u32]) {
        let key = |e: &u32| *e >> 8;
        // Moves each rising register in the histogram: from the overlay's value where
        // it has one, else from the base's.
        let mut j = 0;
        for &c in cands {
            let (i, r) = unpack(c);
            while j < self.over.len() && key(&self.over[j]) < u32::from(i) {
                j += 1;
            }
            let old = match self.over.get(j) {
                Some(&e) if key(&e) == u32::from(i) => e as u8,
                _ => self.base.regs[usize::from(i)],
            };
            if old < r {
                self.hist[usize::from(old)] -= 1;
                self.hist[usize::from(r)] += 1;
            }
        }
        let new = sorted::count_new(&self.over, cands, key);
        // Same index => the larger packed value has the larger rank.
        sorted::merge_into(&mut self.over, cands, new, key, u32::max);
    }

    /// The same registers, dense and of their own.
    fn to_dense(&self) -> DenseRegs {
        let mut d = DenseRegs {
            regs: self.base.regs,
            hist: self.hist,
            stale: false,
        };
        for &e in &self.over {
            let (i, r) = unpack(e);
            d.regs[usize::from(i)] = r;
        }
        d
    }

    /// The base's registers that `o` raises, packed and sorted by index; `None` once
    /// there are more than [`layer_limit`].
    fn raised_by(base: &DenseRegs, o: &DenseRegs) -> Option<Vec<u32>> {
        let limit = layer_limit(base);
        let mut cands = Vec::new();
        let mut next = base.first_chunk_above(o, 0);
        while let Some(c) = next {
            for i in c * CHUNK..(c + 1) * CHUNK {
                if o.regs[i] > base.regs[i] {
                    cands.push(pack(i as u32, o.regs[i]));
                }
            }
            if cands.len() > limit {
                return None;
            }
            next = base.first_chunk_above(o, c + 1);
        }
        Some(cands)
    }
}

/// Length of a register-value histogram: values `0..=MAX_RANK`.
const HIST_LEN: usize = MAX_RANK as usize + 1;
/// Registers compared at a time by the dense ← dense merge.
const CHUNK: usize = 64;
/// Above this many rising registers, a dense ← dense merge no longer moves
/// each rising register in the histogram: it marks the histogram stale.
const STALE_ABOVE: usize = REGISTERS / 64;

/// Dense registers with their histogram, which every write keeps exact unless
/// it is stale.
///
/// A dense ← dense merge that raises many registers (a window accumulator
/// taking a large pane) would pay a full recount (`O(m)`, what the estimate
/// used to cost) for a histogram that may never be read before the next such
/// merge; it marks the histogram stale instead, and a stale histogram is
/// recounted when the estimate reads it. So no operation costs more than it
/// did without the histogram, and sketches built by inserts and sparse merges
/// (panes, most window states) estimate in `O(1)`.
#[derive(Clone)]
struct DenseRegs {
    /// Each in `0..=MAX_RANK`.
    regs: [u8; REGISTERS],
    /// `hist[k]` = number of registers equal to `k` (sums to `REGISTERS`, which
    /// fits a `u16`); meaningless while `stale`.
    hist: [u16; HIST_LEN],
    /// `hist` is out of date (set by merges that raise many registers).
    stale: bool,
}

impl PartialEq for DenseRegs {
    fn eq(&self, other: &Self) -> bool {
        self.regs == other.regs
    }
}

impl Eq for DenseRegs {}

impl DenseRegs {
    /// All registers zero.
    fn zero() -> Self {
        let mut hist = [0u16; HIST_LEN];
        hist[0] = REGISTERS as u16;
        DenseRegs {
            regs: [0u8; REGISTERS],
            hist,
            stale: false,
        }
    }

    /// Registers decoded elsewhere (each `<= MAX_RANK`); counts the histogram.
    fn from_regs(regs: [u8; REGISTERS]) -> Self {
        let hist = count_histogram(&regs);
        DenseRegs {
            regs,
            hist,
            stale: false,
        }
    }

    /// `true` if some register is non-zero.
    #[inline]
    fn nonzero(&self) -> bool {
        if self.stale {
            // Stops at the first non-zero register: at once for any sizeable sketch.
            self.regs.iter().any(|&r| r != 0)
        } else {
            usize::from(self.hist[0]) != REGISTERS
        }
    }

    /// Number of non-zero registers.
    fn nonzero_count(&self) -> usize {
        REGISTERS - self.histogram()[0] as usize
    }

    /// The registers, for writes that leave the histogram behind (it becomes stale:
    /// recounted when read). For merges that raise many registers.
    fn regs_leaving_histogram(&mut self) -> &mut [u8; REGISTERS] {
        self.stale = true;
        &mut self.regs
    }

    /// Raises register `i` to `r` if it is below.
    #[inline]
    fn raise(&mut self, i: usize, r: u8) {
        let reg = &mut self.regs[i];
        let old = *reg;
        if old < r {
            *reg = r;
            if !self.stale {
                self.hist[usize::from(old)] -= 1;
                self.hist[usize::from(r)] += 1;
            }
        }
    }

    /// The first chunk of [`CHUNK`] registers, from chunk `from` on, in which
    /// some register of `o` is above the same register of `self`.
    fn first_chunk_above(&self, o: &DenseRegs, from: usize) -> Option<usize> {
        // A branch-free fold over fixed-size chunks, so that it vectorizes.
        self.regs
            .chunks_exact(CHUNK)
            .zip(o.regs.chunks_exact(CHUNK))
            .skip(from)
            .position(|(a, b)| a.iter().zip(b).fold(false, |acc, (x, y)| acc | (y > x)))
            .map(|p| p + from)
    }

    /// Number of registers of `o` above the same register of `self`.
    fn count_above(&self, o: &DenseRegs) -> usize {
        // Per chunk a branch-free `u8` sum (at most 64), so that it vectorizes.
        self.regs
            .chunks_exact(CHUNK)
            .zip(o.regs.chunks_exact(CHUNK))
            .map(|(a, b)| {
                let n: u8 = a.iter().zip(b).map(|(x, y)| u8::from(y > x)).sum();
                usize::from(n)
            })
            .sum()
    }

    /// Register-wise maximum of `o` into `self`, where `rising` registers of
    /// `o` are above those of `self` (from [`count_above`](Self::count_above);
    /// not read, and not counted by the caller, while the histogram is stale;
    /// any number above [`STALE_ABOVE`] when the caller knows only that many rise).
    /// A few rising registers are moved in the histogram one by one, in the
    /// chunks that hold them; beyond [`STALE_ABOVE`] (or when the histogram is
    /// stale already) a vectorized maximum leaves the histogram stale.
    fn max_with(&mut self, o: &DenseRegs, rising: usize) {
        if self.stale || rising > STALE_ABOVE {
            for (a, &b) in self.regs_leaving_histogram().iter_mut().zip(&o.regs) {
                *a = (*a).max(b);
            }
            return;
        }
        let mut next = self.first_chunk_above(o, 0);
        while let Some(c) = next {
            let range = c * CHUNK..(c + 1) * CHUNK;
            for (a, &b) in self.regs[range.clone()].iter_mut().zip(&o.regs[range]) {
                let old = *a;
                if old < b {
                    *a = b;
                    self.hist[usize::from(old)] -= 1;
                    self.hist[usize::from(b)] += 1;
                }
            }
            next = self.first_chunk_above(o, c + 1);
        }
    }

    /// The histogram as the estimator takes it (recounted if stale).
    fn histogram(&self) -> [u32; HIST_LEN] {
        if self.stale {
            count_histogram(&self.regs).map(u32::from)
        } else {
            self.hist.map(u32::from)
        }
    }
}

/// Counts the histogram of registers (each `<= MAX_RANK`), `O(m)`.
fn count_histogram(regs: &[u8; REGISTERS]) -> [u16; HIST_LEN] {
    // Nearly every register is below 16, so two of them make one index into a table of
    // 256 pairs: a word of eight registers gives four such indices with a shift and an
    // or, half the table updates of counting registers one by one. A word holding a
    // larger register is counted register by register. Interleaved tables avoid
    // store-to-load stalls on runs of equal pairs.
    const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    let mut pairs = [[0u32; 256]; 4];
    let mut h = [0u32; 64];
    for c in regs.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        if x & HIGH_NIBBLES != 0 {
            for &r in c {
                h[usize::from(r)] += 1;
            }
            continue;
        }
        // Byte 2i of `y`: register 2i in the low nibble, register 2i + 1 in the high one.
        let y = x | (x >> 4);
        pairs[0][(y & 0xff) as usize] += 1;
        pairs[1][((y >> 16) & 0xff) as usize] += 1;
        pairs[2][((y >> 32) & 0xff) as usize] += 1;
        pairs[3][((y >> 48) & 0xff) as usize] += 1;
    }
    for p in 0..256 {
        let n = pairs[0][p] + pairs[1][p] + pairs[2][p] + pairs[3][p];
        h[p & 15] += n;
        h[p >> 4] += n;
    }
    std::array::from_fn(|k| h[k] as u16)
}

/// The dense binary encoding of [`Hll::to_bytes`]: version, tag, the registers packed
/// 6 bits each.
fn dense_bytes(regs: &[u8; REGISTERS]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + PACKED_DENSE_LEN);
    out.push(Hll::FORMAT_VERSION);
    out.push(TAG_DENSE);
    for c in regs.chunks_exact(4) {
        let w =
            u32::from(c[0]) | u32::from(c[1]) << 6 | u32::from(c[2]) << 12 | u32::from(c[3]) << 18;
        out.extend_from_slice(&w.to_le_bytes()[..3]);
    }
    out
}

/// Shared all-zero dense registers (the start of every dense accumulator).
fn zero_registers() -> Arc<DenseRegs> {
    static ZEROS: OnceLock<Arc<DenseRegs>> = OnceLock::new();
    ZEROS.get_or_init(|| Arc::new(DenseRegs::zero())).clone()
}

/// A HyperLogLog sketch with `p = 14` (see the [module docs](self)).
///
/// Merging is exact (register-wise maximum), associative and commutative;
/// `estimate()` has a relative standard error of about 0.81 %.
#[derive(Clone)]
pub struct Hll {
    repr: Repr,
    /// Sparse mode only: recent inserts and the entries of small sparse sketches
    /// merged in, unsorted, possibly repeating an index. Folded into `repr` by
    /// [`Hll::flush_pending`] (automatically when [`PENDING_MAX`] are buffered, and by
    /// every other `&mut` operation); `&self` readers see them through a normalized
    /// copy, so they are never lost, only slower.
    pending: Vec<u32>,
}

/// How many sparse inserts (or entries merged in) are buffered before they are sorted
/// into the list.
pub const PENDING_MAX: usize = 256;

impl Default for Hll {
    fn default() -> Self {
        Self::new()
    }
}

impl Hll {
    /// The leading byte of [`to_bytes`](Self::to_bytes).
    pub const FORMAT_VERSION: u8 = 1;

    /// An empty (sparse) sketch. Does not allocate.
    pub const fn new() -> Self {
        Hll {
            repr: Repr::Sparse(Vec::new()),
            pending: Vec::new(),
        }
    }

    /// Sorts the buffered sparse inserts into the register list. Cheap when
    /// nothing is buffered; call it before reading a sketch many times.
    pub fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Sorting packed values groups equal indices with ascending ranks:
        // keep the last (largest) entry of each index.
        pending.sort_unstable();
        let mut w = 0;
        for r in 0..pending.len() {
            if r + 1 < pending.len() && pending[r] >> 8 == pending[r + 1] >> 8 {
                continue;
            }
            pending[w] = pending[r];
            w += 1;
        }
        pending.truncate(w);
        let incoming = Hll::from_repr(Repr::Sparse(pending));
        self.merge_normalized(&incoming);
    }

    /// Recounts the register histogram if a merge left it stale, so that this sketch and
    /// its clones estimate in `O(1)` instead of recounting at every estimate (copies the
    /// registers first if they are shared). Never changes registers or the estimate.
    pub fn refresh_histogram(&mut self) {
        if let Repr::Dense(d) = &mut self.repr {
            if d.stale {
                let d = Arc::make_mut(d);
                d.hist = count_histogram(&d.regs);
                d.stale = false;
            }
        }
    }

    /// `self` with its buffered inserts folded in (a copy only when needed).
    fn normalized(&self) -> std::borrow::Cow<'_, Hll> {
        if self.pending.is_empty() {
            std::borrow::Cow::Borrowed(self)
        } else {
            let mut copy = self.clone();
            copy.flush_pending();
            std::borrow::Cow::Owned(copy)
        }
    }

    /// The hash used by [`insert`](Self::insert): XXH3 64-bit, seed 0.
    #[inline]
    pub fn hash(bytes: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(bytes)
    }

    /// Inserts a key, hashed with [`Hll::hash`] (XXH3-64, seed 0).
    #[inline]
    pub fn insert(&mut self, bytes: &[u8]) {
        self.insert_hash(Self::hash(bytes));
    }

    /// Inserts an already hashed key. The hash must be a well-mixed 64-bit
    /// hash (such as [`Hll::hash`]); raw sequential ids would ruin accuracy.
    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        let index = (hash >> Q) as u32;
        // The guard bit caps the leading-zero count of the low q bits at q.
        let rank = (((hash << PRECISION) | (1 << (PRECISION - 1))).leading_zeros() + 1) as u8;
        match &mut self.repr {
            Repr::Dense(d) => {
                if d.regs[index as usize] < rank {
                    Arc::make_mut(d).raise(index as usize, rank);
                }
            }
            Repr::Layered(_) => {
                self.make_dense();
                self.insert_hash(hash);
            }
            Repr::Sparse(_) => {
                self.pending.push(pack(index, rank));
                if self.pending.len() >= PENDING_MAX {
                    self.flush_pending();
                }
            }
        }
    }

    #[inline]
    fn set_max(&mut self, index: u32, rank: u8) {
        match &mut self.repr {
            Repr::Dense(d) => {
                if d.regs[index as usize] < rank {
                    Arc::make_mut(d).raise(index as usize, rank);
                }
            }
            Repr::Layered(_) => {
                self.make_dense();
                self.set_max(index, rank);
            }
            Repr::Sparse(list) => {
                let key = index << 8;
                let p = list.partition_point(|&e| e < key);
                match list.get_mut(p) {
                    Some(e) if *e >> 8 == index => {
                        if (*e as u8) < rank {
                            *e = pack(index, rank);
                        }
                    }
                    _ => {
                        if list.len() >= SPARSE_MAX_ENTRIES {
                            self.densify();
                            self.set_max(index, rank);
                        } else {
                            list.insert(p, pack(index, rank));
                        }
                    }
                }
            }
        }
    }

    /// `true` while the sketch uses the sparse representation.
    pub fn is_sparse(&self) -> bool {
        matches!(self.normalized().repr, Repr::Sparse(_))
    }

    /// Switches to the dense representation (no-op if already dense). Never
    /// changes register values, equality or the estimate; exposed for tests
    /// and for callers that know a sketch will grow large.
    pub fn densify(&mut self) {
        self.flush_pending();
        self.make_dense();
        if let Repr::Sparse(list) = &self.repr {
            if list.is_empty() {
                self.repr = Repr::Dense(zero_registers());
                return;
            }
            let mut d = Arc::new(DenseRegs::zero());
            let regs = Arc::make_mut(&mut d);
            for &e in list {
                let (i, r) = unpack(e);
                regs.raise(usize::from(i), r);
            }
            self.repr = Repr::Dense(d);
        }
    }

    /// A layered sketch becomes dense, with registers of its own (no-op otherwise).
    fn make_dense(&mut self) {
        if let Repr::Layered(l) = &self.repr {
            self.repr = Repr::Dense(Arc::new(l.to_dense()));
        }
    }

    /// A layered sketch that raises too many registers becomes dense.
    fn bound_layers(&mut self) {
        if matches!(&self.repr, Repr::Layered(l) if l.over.len() > layer_limit(&l.base)) {
            self.make_dense();
        }
    }

    fn from_repr(repr: Repr) -> Hll {
        Hll {
            repr,
            pending: Vec::new(),
        }
    }

    /// Register-wise maximum: afterwards `self` is the sketch of the union.
    ///
    /// Cost: sparse ← sparse is a linear merge (switching to dense if the
    /// result is too big), dense ← sparse is `O(entries of other)`, anything
    /// ← dense is `O(m)`.
    pub fn merge(&mut self, other: &Hll) {
        if let (Repr::Sparse(list), Repr::Sparse(o)) = (&self.repr, &other.repr) {
            // A small sparse sketch into a larger sparse one (a window accumulator taking
            // minute panes one by one): buffered with the inserts, so that many of them
            // are sorted in with one list merge instead of one each.
            let incoming = o.len() + other.pending.len();
            if incoming * 4 <= list.len() && self.pending.len() + incoming <= PENDING_MAX {
                self.pending.extend_from_slice(o);
                self.pending.extend_from_slice(&other.pending);
                return;
            }
        }
        self.flush_pending();
        let other = other.normalized();
        self.merge_normalized(&other);
    }

    /// [`Hll::merge`] for sketches without buffered inserts.
    fn merge_normalized(&mut self, other: &Hll) {
        debug_assert!(other.pending.is_empty());
        match (&mut self.repr, &other.repr) {
            (_, Repr::Sparse(o)) if o.is_empty() => {}
            (Repr::Dense(d), Repr::Sparse(o)) => {
                let above = |e: &u32| {
                    let (i, r) = unpack(*e);
                    d.regs[usize::from(i)] < r
                };
                // Entries before the first raising one change nothing.
                if let Some(first) = o.iter().position(above) {
                    if Arc::strong_count(d) > 1 && !d.stale && o.len() - first <= layer_limit(d) {
                        // Shared registers: a few raised above them rather than a copy.
                        let cands: Vec<u32> = o[first..].iter().copied().filter(above).collect();
                        if let Some(l) = Layered::over(d, &cands) {
                            self.repr = Repr::Layered(l);
                        }
                        return;
                    }
                    let d = Arc::make_mut(d);
                    for &e in &o[first..] {
                        let (i, r) = unpack(e);
                        d.raise(usize::from(i), r);
                    }
                }
            }
            (Repr::Sparse(s), Repr::Sparse(o)) => {
                let key = |e: &u32| *e >> 8;
                let new = sorted::count_new(s, o, key);
                if s.len() + new > SPARSE_MAX_ENTRIES {
                    self.densify();
                    self.merge_normalized(other);
                } else {
                    // Same index => the larger packed value has the larger rank.
                    sorted::merge_into(s, o, new, key, u32::max);
                }
            }
            (Repr::Sparse(s), Repr::Dense(o)) => {
                let list = std::mem::take(s);
                self.repr = Repr::Dense(o.clone());
                if !list.is_empty() {
                    self.merge_normalized(&Hll::from_repr(Repr::Sparse(list)));
                }
            }
            (Repr::Dense(d), Repr::Dense(o)) => {
                if Arc::ptr_eq(d, o) || !o.nonzero() {
                    return;
                }
                if !d.nonzero() {
                    // Empty: the union is `other`, shared (registers and histogram).
                    *d = o.clone();
                } else if d.stale {
                    // The histogram is recounted when read: only whether some register
                    // rises matters (copy only if shared, and only when something changes).
                    if d.first_chunk_above(o, 0).is_some() {
                        Arc::make_mut(d).max_with(o, REGISTERS);
                    }
                } else if Arc::strong_count(d) > 1 {
                    // Shared registers: a few raised above them rather than a copy.
                    match Layered::raised_by(d, o) {
                        Some(cands) => {
                            if let Some(l) = Layered::over(d, &cands) {
                                self.repr = Repr::Layered(l);
                            }
                        }
                        None => {
                            // More than the layer limit rise: past the stale threshold,
                            // `max_with` needs no exact count (no second scan).
                            let rising = if layer_limit(d) >= STALE_ABOVE {
                                REGISTERS
                            } else {
                                d.count_above(o)
                            };
                            Arc::make_mut(d).max_with(o, rising);
                        }
                    }
                } else {
                    let rising = d.count_above(o);
                    if rising > 0 {
                        // Copies only if shared, and only when something changes.
                        Arc::make_mut(d).max_with(o, rising);
                    }
                }
            }
            (Repr::Layered(l), Repr::Sparse(o)) => {
                let base = &l.base.regs;
                let cands: Vec<u32> = o
                    .iter()
                    .copied()
                    .filter(|&e| {
                        let (i, r) = unpack(e);
                        base[usize::from(i)] < r
                    })
                    .collect();
                l.raise_all(&cands);
                self.bound_layers();
            }
            (Repr::Layered(l), Repr::Dense(o)) => {
                if Arc::ptr_eq(&l.base, o) || !o.nonzero() {
                    return;
                }
                match Layered::raised_by(&l.base, o) {
                    Some(cands) => {
                        l.raise_all(&cands);
                        self.bound_layers();
                    }
                    None => {
                        self.make_dense();
                        self.merge_normalized(other);
                    }
                }
            }
            (Repr::Layered(l), Repr::Layered(m)) if Arc::ptr_eq(&l.base, &m.base) => {
                l.raise_all(&m.over);
                self.bound_layers();
            }
            (Repr::Dense(d), Repr::Layered(m)) if Arc::ptr_eq(d, &m.base) => {
                // `other` holds every register of `self`.
                self.repr = Repr::Layered(m.clone());
            }
            (Repr::Sparse(s), Repr::Layered(m)) => {
                let list = std::mem::take(s);
                self.repr = Repr::Layered(m.clone());
                if !list.is_empty() {
                    self.merge_normalized(&Hll::from_repr(Repr::Sparse(list)));
                }
            }
            (_, Repr::Layered(m)) => {
                // Its base, then the registers it raises.
                self.merge_normalized(&Hll::from_repr(Repr::Dense(Arc::clone(&m.base))));
                self.merge_normalized(&Hll::from_repr(Repr::Sparse(m.over.clone())));
            }
        }
    }

    /// Histogram of register values: `hist[k]` = number of registers equal to
    /// `k`. `O(entries)` for sparse sketches; dense ones keep it up to date.
    fn histogram(&self) -> [u32; HIST_LEN] {
        match &self.repr {
            Repr::Sparse(list) => {
                let mut hist = [0u32; HIST_LEN];
                hist[0] = (REGISTERS - list.len()) as u32;
                for &e in list {
                    hist[usize::from(e as u8)] += 1;
                }
                hist
            }
            Repr::Dense(d) => d.histogram(),
            Repr::Layered(l) => l.hist.map(u32::from),
        }
    }

    /// Cardinality estimate as `f64` (Ertl's improved raw estimator).
    /// Depends only on the register values.
    pub fn estimate_f64(&self) -> f64 {
        ertl_estimate(&self.normalized().histogram())
    }

    /// Cardinality estimate, rounded to the nearest integer (`0` for an empty
    /// sketch; saturates at `u64::MAX` when every register is at its maximum).
    pub fn estimate(&self) -> u64 {
        self.estimate_f64().round() as u64
    }

    /// `true` if nothing was inserted (all registers are zero).
    pub fn is_empty(&self) -> bool {
        match &self.repr {
            Repr::Sparse(list) => list.is_empty() && self.pending.is_empty(),
            Repr::Dense(d) => !d.nonzero(),
            Repr::Layered(l) => usize::from(l.hist[0]) == REGISTERS,
        }
    }

    /// The non-zero registers as `(index, rank)`, in increasing index order.
    pub fn register_pairs(&self) -> impl Iterator<Item = (u16, u8)> + '_ {
        self.pairs().into_iter()
    }

    /// The non-zero registers as `(index, rank)`, in increasing index order.
    fn pairs(&self) -> Vec<(u16, u8)> {
        let this = self.normalized();
        match &this.repr {
            Repr::Sparse(list) => list.iter().map(|&e| unpack(e)).collect(),
            Repr::Dense(d) => d
                .regs
                .iter()
                .enumerate()
                .filter(|(_, &r)| r != 0)
                .map(|(i, &r)| (i as u16, r))
                .collect(),
            Repr::Layered(l) => {
                let mut over = l.over.iter().map(|&e| unpack(e)).peekable();
                let mut out = Vec::with_capacity(REGISTERS - usize::from(l.hist[0]));
                for (i, &b) in l.base.regs.iter().enumerate() {
                    let r = match over.next_if(|&(j, _)| usize::from(j) == i) {
                        Some((_, r)) => r,
                        None => b,
                    };
                    if r != 0 {
                        out.push((i as u16, r));
                    }
                }
                out
            }
        }
    }

    /// Rebuilds a sketch from [`register_pairs`](Self::register_pairs):
    /// indices strictly increasing and `< 16384`, ranks in `1..=51`.
    pub fn from_register_pairs(
        pairs: impl IntoIterator<Item = (u16, u8)>,
    ) -> Result<Self, SketchError> {
        let mut hll = Hll::new();
        let mut prev: Option<u16> = None;
        for (i, r) in pairs {
            if usize::from(i) >= REGISTERS {
                return Err(SketchError::RegisterIndexOutOfRange(u32::from(i)));
            }
            if prev.is_some_and(|p| i <= p) {
                return Err(SketchError::NotStrictlyIncreasing {
                    index: i64::from(i),
                });
            }
            if r == 0 || r > MAX_RANK {
                return Err(SketchError::RankOutOfRange {
                    index: u32::from(i),
                    rank: r,
                });
            }
            prev = Some(i);
            match &mut hll.repr {
                Repr::Sparse(list) if list.len() < SPARSE_MAX_ENTRIES => {
                    list.push(pack(u32::from(i), r))
                }
                Repr::Sparse(_) => {
                    hll.densify();
                    hll.set_max(u32::from(i), r);
                }
                Repr::Dense(_) | Repr::Layered(_) => hll.set_max(u32::from(i), r),
            }
        }
        Ok(hll)
    }

    /// Approximate heap usage in bytes.
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Sparse(list) => {
                (list.capacity() + self.pending.capacity()) * std::mem::size_of::<u32>()
            }
            // The registers and their histogram.
            Repr::Dense(_) => std::mem::size_of::<DenseRegs>(),
            // Its share of the base (so that the sketches sharing it sum to its size), and
            // the registers it raises.
            Repr::Layered(l) => {
                std::mem::size_of::<DenseRegs>() / Arc::strong_count(&l.base)
                    + std::mem::size_of::<Layered>()
                    + l.over.capacity() * std::mem::size_of::<u32>()
            }
        }
    }

    /// Appends the compact in-memory encoding of the registers to `out` (about 7 bits per
    /// non-zero register; see [`crate::compact`]). For sketches that are kept but no longer
    /// written, e.g. closed time panes: read them with [`merge_compact`](Self::merge_compact)
    /// or [`from_compact`](Self::from_compact). Not a wire format: persist
    /// [`to_bytes`](Self::to_bytes).
    ///
    /// `reads` says how often the sketch will be read: [`Reads::Often`] may take a larger
    /// form that reads faster (see [`crate::compact`]).
    pub fn write_compact(&self, reads: Reads, out: &mut Vec<u8>) {
        crate::compact::write(&self.pairs(), reads, out);
    }

    /// Register-wise maximum with the compact encoding at the front of `bytes` (written by
    /// [`write_compact`](Self::write_compact)); returns how many bytes it took. Decodes on
    /// the fly: `O(entries)` into a dense sketch, a linear list merge into a sparse one.
    pub fn merge_compact(&mut self, bytes: &[u8]) -> Result<usize, SketchError> {
        self.flush_pending();
        let (form, used) = crate::compact::parse(bytes)?;
        self.make_dense();
        if matches!(self.repr, Repr::Sparse(_)) && form.registers() > SPARSE_MAX_ENTRIES as u64 {
            // The union is dense (a window accumulator taking a large frozen pane first):
            // decode straight into registers rather than into a list to merge.
            self.densify();
        }
        if let Repr::Dense(d) = &mut self.repr {
            let d = Arc::make_mut(d);
            match form {
                // A register-wise maximum, vectorized.
                crate::compact::Compact::Nibbles(n) => n.max_into(d.regs_leaving_histogram())?,
                // Many registers (a window accumulator taking a large frozen pane): as a
                // dense <- dense merge, plain maxima.
                form if form.registers() > STALE_ABOVE as u64 => {
                    let regs = d.regs_leaving_histogram();
                    form.for_each(|i, r| regs[i] = regs[i].max(r))?;
                }
                form => form.for_each(|i, r| d.raise(i, r))?,
            }
            return Ok(used);
        }
        // `parse` checked the count against the number of registers.
        let mut list = Vec::with_capacity(form.registers() as usize);
        form.for_each(|i, r| list.push(pack(i as u32, r)))?;
        if !list.is_empty() {
            self.merge_normalized(&Hll::from_repr(Repr::Sparse(list)));
        }
        Ok(used)
    }

    /// The sketch encoded at the front of `bytes` by [`write_compact`](Self::write_compact),
    /// and how many bytes it took.
    pub fn from_compact(bytes: &[u8]) -> Result<(Hll, usize), SketchError> {
        let mut hll = Hll::new();
        let used = hll.merge_compact(bytes)?;
        Ok((hll, used))
    }

    /// Compact binary encoding, format version 1. Sparse sketches stay sparse:
    ///
    /// ```text
    /// u8 FORMAT_VERSION (= 1)
    /// u8 tag: 0 = sparse, 1 = dense
    /// sparse: varint k, then k × { varint index (first: absolute,
    ///         others: index − previous − 1), u8 rank }
    /// dense:  12288 bytes: the 16384 registers packed 6 bits each,
    ///         4 registers per 3 bytes, little-endian
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let this = self.normalized();
        match &this.repr {
            Repr::Sparse(list) => {
                let mut out = Vec::with_capacity(3 + list.len() * 3);
                out.push(Self::FORMAT_VERSION);
                out.push(TAG_SPARSE);
                put_u64(&mut out, list.len() as u64);
                let mut prev: Option<u32> = None;
                for &e in list {
                    let i = e >> 8;
                    let delta = match prev {
                        None => i,
                        Some(p) => i - p - 1,
                    };
                    put_u64(&mut out, u64::from(delta));
                    out.push(e as u8);
                    prev = Some(i);
                }
                out
            }
            Repr::Dense(d) => dense_bytes(&d.regs),
            Repr::Layered(l) => dense_bytes(&l.to_dense().regs),
        }
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output. Corrupt, truncated or
    /// over-long input yields a [`SketchError`]; this never panics. A sparse
    /// encoding decodes to a sparse sketch (unless it holds more entries than
    /// [`SPARSE_MAX_ENTRIES`]), a dense one to a dense sketch.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != Self::FORMAT_VERSION {
            return Err(SketchError::UnsupportedVersion(version));
        }
        match r.u8()? {
            TAG_SPARSE => {
                let k = r.u64()?;
                // Each entry takes at least 2 bytes; indices are unique.
                if k > (r.remaining() / 2) as u64 || k > REGISTERS as u64 {
                    return Err(SketchError::BadLength(k));
                }
                let mut pairs = Vec::with_capacity(k as usize);
                let mut prev: Option<u64> = None;
                for _ in 0..k {
                    let delta = r.u64()?;
                    let i = match prev {
                        None => delta,
                        Some(p) => p.saturating_add(1).saturating_add(delta),
                    };
                    let rank = r.u8()?;
                    let i16 = u16::try_from(i)
                        .ok()
                        .filter(|&v| usize::from(v) < REGISTERS)
                        .ok_or(SketchError::RegisterIndexOutOfRange(
                            u32::try_from(i).unwrap_or(u32::MAX),
                        ))?;
                    pairs.push((i16, rank));
                    prev = Some(i);
                }
                r.finish()?;
                Self::from_register_pairs(pairs)
            }
            TAG_DENSE => {
                let packed = r.bytes(PACKED_DENSE_LEN)?;
                r.finish()?;
                let mut regs = [0u8; REGISTERS];
                for (n, (src, dst)) in packed
                    .chunks_exact(3)
                    .zip(regs.chunks_exact_mut(4))
                    .enumerate()
                {
                    let w = u32::from(src[0]) | u32::from(src[1]) << 8 | u32::from(src[2]) << 16;
                    for (k, d) in dst.iter_mut().enumerate() {
                        let v = ((w >> (6 * k)) & 0x3f) as u8;
                        if v > MAX_RANK {
                            return Err(SketchError::RankOutOfRange {
                                index: (4 * n + k) as u32,
                                rank: v,
                            });
                        }
                        *d = v;
                    }
                }
                Ok(Hll::from_repr(Repr::Dense(Arc::new(DenseRegs::from_regs(
                    regs,
                )))))
            }
            tag => Err(SketchError::UnknownEncoding(tag)),
        }
    }
}

impl PartialEq for Hll {
    /// Compares register values, not representations.
    fn eq(&self, other: &Self) -> bool {
        let (this, other) = (self.normalized(), other.normalized());
        match (&this.repr, &other.repr) {
            (Repr::Sparse(a), Repr::Sparse(b)) => a == b,
            // `DenseRegs` equality compares the registers only (a histogram may be stale).
            (Repr::Dense(a), Repr::Dense(b)) => Arc::ptr_eq(a, b) || a == b,
            (Repr::Layered(_), _) | (_, Repr::Layered(_)) => this.pairs() == other.pairs(),
            (Repr::Sparse(s), Repr::Dense(d)) | (Repr::Dense(d), Repr::Sparse(s)) => {
                d.nonzero_count() == s.len()
                    && s.iter().all(|&e| {
                        let (i, r) = unpack(e);
                        d.regs[usize::from(i)] == r
                    })
            }
        }
    }
}

impl Eq for Hll {}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let this = self.normalized();
        let nonzero = match &this.repr {
            Repr::Sparse(list) => list.len(),
            Repr::Dense(d) => d.nonzero_count(),
            Repr::Layered(l) => REGISTERS - usize::from(l.hist[0]),
        };
        f.debug_struct("Hll")
            .field(
                "repr",
                &match this.repr {
                    Repr::Sparse(_) => "sparse",
                    Repr::Dense(_) => "dense",
                    Repr::Layered(_) => "layered",
                },
            )
            .field("nonzero_registers", &nonzero)
            .field("estimate", &self.estimate())
            .finish()
    }
}

/// The estimate of registers with histogram `hist` (`hist[k]` = number of
/// registers equal to `k`, summing to [`REGISTERS`]), exactly as
/// [`Hll::estimate_f64`] computes it. For tests that recompute the estimate
/// from [`Hll::register_pairs`]; not a stable API.
#[doc(hidden)]
pub fn estimate_from_histogram(hist: &[u32; MAX_RANK as usize + 1]) -> f64 {
    ertl_estimate(hist)
}

/// Ertl (2017), algorithm 6: improved raw estimator from the register
/// histogram `c[0..=q+1]`.
fn ertl_estimate(c: &[u32; HIST_LEN]) -> f64 {
    let m = REGISTERS as f64;
    let mut z = m * tau((m - f64::from(c[Q + 1])) / m);
    for k in (1..=Q).rev() {
        z = 0.5 * (z + f64::from(c[k]));
    }
    z += m * sigma(f64::from(c[0]) / m);
    // alpha_inf = 1 / (2 ln 2)
    let alpha_inf = 0.5 / std::f64::consts::LN_2;
    alpha_inf * m * m / z
}

/// `σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k−1)`, `σ(1) = ∞`.
fn sigma(x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut x = x;
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let z_old = z;
        z += x * y;
        y += y;
        if z == z_old {
            return z;
        }
    }
}

/// `τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))² 2^−k) / 3`, `τ(0) = τ(1) = 0`.
fn tau(x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut x = x;
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let z_old = z;
        y *= 0.5;
        let d = 1.0 - x;
        z -= d * d * y;
        if z == z_old {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_register_value() {
        let naive = |regs: &[u8; REGISTERS]| {
            let mut h = [0u16; HIST_LEN];
            for &r in regs {
                h[usize::from(r)] += 1;
            }
            h
        };
        // A deterministic mix (splitmix64): registers below 16, with a share of larger
        // ones (up to the maximum rank) at every position of a word, and runs.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for large_per_mille in [0u64, 1, 30, 500, 1000] {
            let mut regs = [0u8; REGISTERS];
            for r in regs.iter_mut() {
                let v = next();
                *r = if v % 1000 < large_per_mille {
                    16 + (v >> 32) as u8 % (MAX_RANK - 15)
                } else {
                    (v >> 40) as u8 % 16
                };
            }
            regs[100..200].fill(15);
            regs[300..400].fill(0);
            regs[REGISTERS - 1] = MAX_RANK;
            assert_eq!(count_histogram(&regs), naive(&regs), "{large_per_mille}");
        }
        let zeros = [0u8; REGISTERS];
        assert_eq!(count_histogram(&zeros)[0], REGISTERS as u16);
        assert_eq!(
            count_histogram(&[MAX_RANK; REGISTERS]),
            naive(&[MAX_RANK; REGISTERS])
        );
    }

    #[test]
    fn rank_and_index_extraction() {
        let mut h = Hll::new();
        // Index = top 14 bits, the next bit set => rank 1.
        h.insert_hash((5u64 << Q) | (1u64 << (Q - 1)));
        // All low bits zero => rank capped at 51.
        h.insert_hash(7u64 << Q);
        // Leading zeros 3 in the low 50 bits => rank 4.
        h.insert_hash((9u64 << Q) | (1u64 << (Q - 4)));
        let pairs: Vec<_> = h.register_pairs().collect();
        assert_eq!(pairs, vec![(5, 1), (7, 51), (9, 4)]);
        h.insert_hash(u64::MAX);
        assert_eq!(h.register_pairs().last(), Some((16383, 1)));
    }

    #[test]
    fn sigma_tau_reference_points() {
        assert_eq!(sigma(0.0), 0.0);
        assert!(sigma(1.0).is_infinite());
        // sigma(0.5) = 0.5 + 0.25 + 2*0.0625 + 4*0.00390625 + ... = 0.8907...
        let s: f64 = 0.5
            + (1..20)
                .map(|k| 0.5f64.powi(1 << k) * 2f64.powi(k - 1))
                .sum::<f64>();
        assert!((sigma(0.5) - s).abs() < 1e-15);
        assert_eq!(tau(0.0), 0.0);
        assert_eq!(tau(1.0), 0.0);
        let t = (1.0
            - 0.5
            - (1..60)
                .map(|k| (1.0 - 0.5f64.powf(2f64.powi(-k))).powi(2) * 2f64.powi(-k))
                .sum::<f64>())
            / 3.0;
        assert!((tau(0.5) - t).abs() < 1e-15);
    }

    #[test]
    fn empty_and_single() {
        let mut h = Hll::new();
        assert_eq!(h.estimate(), 0);
        assert!(h.is_empty());
        assert_eq!(h.heap_bytes(), 0);
        h.insert(b"x");
        assert_eq!(h.estimate(), 1);
        assert!(!h.is_empty());
    }

    #[test]
    fn sparse_switches_to_dense_after_limit() {
        let mut h = Hll::new();
        let mut i = 0u64;
        while h.register_pairs().count() < SPARSE_MAX_ENTRIES {
            h.insert(&i.to_le_bytes());
            i += 1;
        }
        assert!(h.is_sparse());
        // The sorted list (a quarter of dense) plus the insert buffer.
        assert!(
            h.heap_bytes() <= REGISTERS / 4 + PENDING_MAX * 4,
            "{}",
            h.heap_bytes()
        );
        while h.register_pairs().count() == SPARSE_MAX_ENTRIES {
            h.insert(&i.to_le_bytes());
            i += 1;
        }
        assert!(!h.is_sparse());
        h.flush_pending();
        // The registers, their histogram (52 two-byte counts) and its stale flag
        // (one byte, padded to the counts' alignment).
        assert_eq!(h.heap_bytes(), REGISTERS + 2 * HIST_LEN + 2);
    }

    #[test]
    fn refresh_histogram_recounts_a_stale_one_without_touching_clones() {
        let dense = |range: std::ops::Range<u64>| {
            let mut h = Hll::new();
            h.densify();
            for i in range {
                h.insert(&i.to_le_bytes());
            }
            h
        };
        // A large dense ← dense merge leaves the histogram stale.
        let mut h = dense(0..5_000);
        h.merge(&dense(5_000..40_000));
        let Repr::Dense(d) = &h.repr else {
            panic!("dense")
        };
        assert!(d.stale);
        let before = h.estimate_f64();
        let shared = h.clone();
        h.refresh_histogram();
        let Repr::Dense(d) = &h.repr else {
            panic!("dense")
        };
        assert!(!d.stale);
        assert_eq!(d.hist, count_histogram(&d.regs));
        assert_eq!(h.estimate_f64(), before);
        assert_eq!(h, shared);
        // The clone kept its own (stale) registers: refreshing copied them.
        let Repr::Dense(s) = &shared.repr else {
            panic!("dense")
        };
        assert!(s.stale);
        // Later sparse inserts keep the refreshed histogram exact.
        for i in 40_000..40_500u64 {
            h.insert(&i.to_le_bytes());
        }
        let Repr::Dense(d) = &h.repr else {
            panic!("dense")
        };
        assert!(!d.stale);
        assert_eq!(d.hist, count_histogram(&d.regs));
    }

    /// Independent of the representation: the registers as an array.
    fn regs_of(h: &Hll) -> Vec<u8> {
        let mut regs = vec![0u8; REGISTERS];
        for (i, r) in h.register_pairs() {
            regs[usize::from(i)] = r;
        }
        regs
    }

    fn keys(range: std::ops::Range<u64>) -> Hll {
        let mut h = Hll::new();
        for i in range {
            h.insert(&i.to_le_bytes());
        }
        h
    }

    #[test]
    fn merging_a_few_registers_into_shared_ones_layers_them() {
        // A window head shared with the next end (dense), and a minute's customers.
        let head = keys(0..60_000);
        let Repr::Dense(base) = &head.repr else {
            panic!("dense")
        };
        let base = Arc::clone(base);
        let minute = keys(60_000..60_400);
        let mut row = head.clone();
        row.merge(&minute);
        let Repr::Layered(l) = &row.repr else {
            panic!("layered, not a copy")
        };
        assert!(Arc::ptr_eq(&l.base, &base));
        assert!(!l.over.is_empty() && l.over.len() < 400);
        // The registers and the estimate of the union; the head is untouched.
        let mut expected = regs_of(&head);
        for (e, m) in expected.iter_mut().zip(regs_of(&minute)) {
            *e = (*e).max(m);
        }
        assert_eq!(regs_of(&row), expected);
        assert_eq!(regs_of(&head), regs_of(&keys(0..60_000)));
        assert_eq!(row.estimate_f64(), keys(0..60_400).estimate_f64());
        let mut hist = [0u16; HIST_LEN];
        for &r in &expected {
            hist[usize::from(r)] += 1;
        }
        assert_eq!(l.hist, hist);
        // Its clones extend it without a copy of the base; a dense ← layered merge over
        // the same base takes the layers; bytes and pairs round-trip.
        let mut next = row.clone();
        next.merge(&keys(60_400..60_800));
        assert!(matches!(&next.repr, Repr::Layered(n) if Arc::ptr_eq(&n.base, &base)));
        assert_eq!(next.estimate_f64(), keys(0..60_800).estimate_f64());
        let mut again = head.clone();
        again.merge(&next);
        assert!(matches!(again.repr, Repr::Layered(_)));
        assert_eq!(again, keys(0..60_800));
        assert_eq!(Hll::from_bytes(&next.to_bytes()), Ok(keys(0..60_800)));
        // Only its share of the base counts as its heap.
        assert!(next.heap_bytes() < REGISTERS / 2, "{}", next.heap_bytes());
        // Raising more than a 32nd of its base's registers makes it dense, with registers
        // of its own.
        let mut big = row.clone();
        big.merge(&keys(100_000..200_000));
        assert!(matches!(big.repr, Repr::Dense(_)));
        assert_eq!(big, {
            let mut u = keys(0..60_400);
            u.merge(&keys(100_000..200_000));
            u
        });
        // An insert makes it dense too.
        let mut written = row.clone();
        written.insert(b"late customer");
        assert!(matches!(written.repr, Repr::Dense(_)));
        let mut expected = keys(0..60_400);
        expected.insert(b"late customer");
        assert_eq!(written, expected);
        // Registers of its own (not shared) are raised in place, as before.
        let mut own = keys(0..60_000);
        own.merge(&minute);
        assert!(matches!(own.repr, Repr::Dense(_)));
    }

    #[test]
    fn full_sketch_estimate_does_not_panic() {
        let pairs = (0..REGISTERS as u16).map(|i| (i, MAX_RANK));
        let h = Hll::from_register_pairs(pairs).expect("valid");
        assert_eq!(h.estimate(), u64::MAX);
    }
}
