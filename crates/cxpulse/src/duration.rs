//! Human durations: `500ms`, `90s`, `15m`, `24h`, `7d`, `2w`, and sums such as `1h30m`.

use std::fmt::Write as _;

const UNITS: [(&str, i64); 6] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// What a bad duration is told (appended to `"<text>" is not a duration`).
pub const DURATION_HINT: &str = r#"expected a number and a unit (ms, s, m, h, d, w) such as "500ms", "90s", "15m", "24h", "7d" or "1h30m""#;

/// Parses a duration into milliseconds. `"0"` alone is zero; otherwise every number needs a
/// unit. Fractions are allowed when the result is a whole number of milliseconds (`"1.5h"`).
pub fn parse_millis(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a duration; {DURATION_HINT}");
    let s = text.trim();
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| *f)
            .ok_or_else(bad)?;
        let part = if number.contains('.') {
            let v: f64 = number.parse().map_err(|_| bad())?;
            let ms = v * scale as f64;
            if !ms.is_finite() || ms.fract() != 0.0 || ms > i64::MAX as f64 / 2.0 {
                return Err(bad());
            }
            ms as i64
        } else {
            let v: i64 = number.parse().map_err(|_| bad())?;
            v.checked_mul(scale).ok_or_else(bad)?
        };
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats milliseconds with the largest units that divide it exactly: `86400000` → `"1d"`,
/// `5400000` → `"1h30m"`, `0` → `"0s"`.
pub fn format_millis(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    let mut rest = ms.unsigned_abs();
    for (unit, scale) in UNITS.iter().rev() {
        let scale = scale.unsigned_abs();
        if rest >= scale {
            let _ = write!(out, "{}{unit}", rest / scale);
            rest %= scale;
        }
    }
    out
}

/// A compact display of a duration in seconds for tables: `45s`, `12m`, `1h05m`, `2d03h`.
pub fn compact_seconds(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "–".to_string();
    }
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..=86_399 => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("90s"), Ok(90_000));
        assert_eq!(parse_millis("24h"), Ok(86_400_000));
        assert_eq!(parse_millis("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_millis("1h30m"), Ok(5_400_000));
        assert_eq!(parse_millis("1.5h"), Ok(5_400_000));
        assert_eq!(parse_millis("0"), Ok(0));
        assert_eq!(parse_millis(" 2w "), Ok(2 * 604_800_000));
        for bad in [
            "24x",
            "",
            "h",
            "10",
            "1h 30m",
            "-5m",
            "1.0000001ms",
            "99999999999999999999d",
        ] {
            let err = parse_millis(bad).unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
        assert!(parse_millis("24x")
            .unwrap_err()
            .starts_with(r#""24x" is not a duration"#));
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0, 500, 90_000, 5_400_000, 86_400_000, 694_861_001] {
            assert_eq!(
                parse_millis(&format_millis(ms)),
                Ok(ms),
                "{}",
                format_millis(ms)
            );
        }
        assert_eq!(format_millis(5_400_000), "1h30m");
        assert_eq!(compact_seconds(3_900.0), "1h05m");
        assert_eq!(compact_seconds(42.4), "42s");
        assert_eq!(compact_seconds(200_000.0), "2d07h");
    }
}
