//! The error type shared by every sketch in this crate.

use thiserror::Error;

/// Everything that can go wrong when building a sketch from external parts
/// (`from_parts`, `from_register_pairs`, `from_bytes`) or when subtracting.
///
/// Decoding never panics: corrupt or truncated input always maps to one of
/// these variants.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SketchError {
    /// The input ended before the encoded sketch was complete.
    #[error("truncated input: the encoded sketch ends early")]
    Truncated,
    /// The leading format-version byte is not one this build understands.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// An unknown encoding tag (e.g. HyperLogLog sparse/dense tag).
    #[error("unknown encoding tag {0}")]
    UnknownEncoding(u8),
    /// A varint was longer than 10 bytes or did not fit the target integer.
    #[error("malformed varint")]
    MalformedVarint,
    /// Bytes were left over after a complete sketch was decoded.
    #[error("{0} trailing byte(s) after the encoded sketch")]
    TrailingBytes(usize),
    /// A declared length is impossible (larger than the input could hold or
    /// than the sketch's index space).
    #[error("declared length {0} is impossible for this input")]
    BadLength(u64),
    /// Bucket (or register) indices are not strictly increasing.
    #[error("index {index} is not strictly greater than the previous index")]
    NotStrictlyIncreasing {
        /// The offending index.
        index: i64,
    },
    /// A DDSketch bucket index outside the range reachable from `i64` input.
    #[error("bucket index {0} is outside the valid range")]
    BucketIndexOutOfRange(i64),
    /// A bucket with a zero count (buckets must be non-empty).
    #[error("bucket {0} has a zero count")]
    ZeroCount(i32),
    /// The total count of a sketch would overflow `u64`.
    #[error("total count overflows u64")]
    CountOverflow,
    /// `subtract` was given a sketch that is not contained in `self`.
    #[error("cannot subtract: the other sketch is not contained in this one")]
    NotContained,
    /// A HyperLogLog register index `>= 16384`.
    #[error("register index {0} is out of range")]
    RegisterIndexOutOfRange(u32),
    /// A HyperLogLog rank outside `1..=51` (or `0..=51` for dense input).
    #[error("register rank {rank} at index {index} is out of range")]
    RankOutOfRange {
        /// Register index.
        index: u32,
        /// The invalid rank.
        rank: u8,
    },
}
