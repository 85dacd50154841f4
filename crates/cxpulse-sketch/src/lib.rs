//! Mergeable, serialisable sketches for the cxpulse KPI pipeline. Pure Rust,
//! no I/O, no `unsafe`.
//!
//! # [`DurationSketch`] — quantiles of durations (ms)
//!
//! A DDSketch-style log-bucket sketch with relative accuracy `α = 0.01`:
//!
//! * for every `q ∈ [0, 1]`, `quantile(q)` is within **1 % relative error** of
//!   the exact order statistic `x_(r)`, `r = floor(q·(n−1))` (0-based rank in
//!   sorted order); durations `≤ 0` (negative input is clamped to 0) live in a
//!   zero bucket and are returned as exactly `0`;
//! * `merge` is **exact**: merging equals the sketch of the concatenated data,
//!   bucket for bucket, so it is associative and commutative; `remove` and
//!   `subtract` invert `add` and `merge` (to retract contributions);
//! * bucket boundaries come from a compile-time table built with correctly
//!   rounded IEEE-754 multiplication, so every host buckets identically;
//! * sparse: `16` heap bytes per non-empty bucket, nothing when empty.
//!
//! # [`Hll`] — distinct counts
//!
//! HyperLogLog with `p = 14` (16384 registers, standard error ≈ 0.81 %,
//! designed for ≤ 2 % relative error) with Ertl's improved raw estimator (no
//! bias tables). Keys are hashed with XXH3-64, seed 0 — fixed, so every
//! instance of the job hashes identically. Sparse for small sets (4 bytes per
//! non-zero register), dense (16 KiB) beyond 1024 non-zero registers; the
//! estimate, equality and merge depend only on register values. Merging
//! (register-wise max) is exact, associative and commutative.
//!
//! # Binary formats
//!
//! Both sketches have `to_bytes`/`from_bytes` with a leading format-version
//! byte (currently `1`) and LEB128 varints; see
//! [`DurationSketch::to_bytes`] and [`Hll::to_bytes`]. Decoding validates
//! everything and returns a [`SketchError`] on corrupt or truncated input; it
//! never panics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compact;
mod error;
pub mod hll;
pub mod quantile;
mod sorted;
mod varint;

pub use compact::Reads;
pub use error::SketchError;
pub use hll::Hll;
pub use quantile::DurationSketch;
