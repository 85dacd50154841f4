//! `decimal(18, 4)` ↔ [`cxpulse_core::Amount`] units, shared by every decode path so that all
//! of them accept and refuse exactly the same byte strings.

/// Largest magnitude a decimal of precision 18 can hold (18 nines).
pub const MAX_DECIMAL_18: i64 = 999_999_999_999_999_999;

/// Big-endian two's complement bytes (any length, as Avro `decimal` on `bytes` allows) → the
/// unscaled value, or `None` when it does not fit precision 18. Empty bytes are 0, as
/// apache-avro decodes them.
pub fn units_from_be_bytes(bytes: &[u8]) -> Option<i64> {
    let Some((&first, _)) = bytes.split_first() else {
        return Some(0);
    };
    let negative = first & 0x80 != 0;
    let sign_byte = if negative { 0xff } else { 0x00 };
    let split = bytes.len().saturating_sub(8);
    let (head, tail) = bytes.split_at(split);
    // Bytes beyond the last 8 must be pure sign extension of the remaining value.
    if head.iter().any(|&b| b != sign_byte) {
        return None;
    }
    let mut buf = [sign_byte; 8];
    let start = 8 - tail.len();
    buf.get_mut(start..)?.copy_from_slice(tail);
    let value = i64::from_be_bytes(buf);
    // The sign of the full byte string must survive the truncation to 8 bytes.
    if (value < 0) != negative {
        return None;
    }
    if value.unsigned_abs() > MAX_DECIMAL_18.unsigned_abs() {
        return None;
    }
    Some(value)
}

/// The shortest big-endian two's complement form of `units` (what Java's
/// `BigInteger.toByteArray()` writes). Returns the buffer and the used length at its end.
pub fn minimal_be_bytes(units: i64) -> ([u8; 8], usize) {
    let bytes = units.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (Some(&b), Some(&next)) = (bytes.get(start), bytes.get(start + 1)) else {
            break;
        };
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    (bytes, 8 - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(units: i64) -> Vec<u8> {
        let (buf, len) = minimal_be_bytes(units);
        buf[8 - len..].to_vec()
    }

    #[test]
    fn minimal_forms() {
        assert_eq!(minimal(0), vec![0]);
        assert_eq!(minimal(1), vec![1]);
        assert_eq!(minimal(-1), vec![0xff]);
        assert_eq!(minimal(127), vec![0x7f]);
        assert_eq!(minimal(128), vec![0x00, 0x80]);
        assert_eq!(minimal(-128), vec![0x80]);
        assert_eq!(minimal(-129), vec![0xff, 0x7f]);
        assert_eq!(minimal(125_000), vec![0x01, 0xe8, 0x48]);
    }

    #[test]
    fn round_trips_and_bounds() {
        for v in [
            0,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            125_000,
            MAX_DECIMAL_18,
            -MAX_DECIMAL_18,
            1 << 40,
        ] {
            assert_eq!(units_from_be_bytes(&minimal(v)), Some(v), "{v}");
            let mut long = vec![if v < 0 { 0xff } else { 0 }; 5];
            long.extend(v.to_be_bytes());
            assert_eq!(units_from_be_bytes(&long), Some(v), "sign-extended {v}");
        }
        assert_eq!(units_from_be_bytes(&[]), Some(0));
        assert_eq!(
            units_from_be_bytes(&(MAX_DECIMAL_18 + 1).to_be_bytes()),
            None
        );
        assert_eq!(
            units_from_be_bytes(&(-MAX_DECIMAL_18 - 1).to_be_bytes()),
            None
        );
        assert_eq!(units_from_be_bytes(&i64::MIN.to_be_bytes()), None);
        // 2^63 as 9 bytes: does not fit i64 at all.
        assert_eq!(units_from_be_bytes(&[0, 0x80, 0, 0, 0, 0, 0, 0, 0]), None);
        // A non-sign-extension head byte.
        assert_eq!(units_from_be_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }
}
