//! The live KPI table of `cxpulse demo`: per channel and `all` (every segment), for the 1 h
//! and 24 h windows, redrawn in place with ANSI escapes.

use crate::duration::compact_seconds;
use cxpulse_core::kpi::KpiSnapshot;
use cxpulse_core::{Channel, KpiRow, Millis};
use cxpulse_metrics::LatestRows;
use std::fmt::Write as _;

/// Window kinds shown on the board.
pub const BOARD_WINDOWS: [&str; 2] = ["1h", "24h"];

/// The latest values of one (window, channel) on the board.
#[derive(Clone, Debug)]
pub struct BoardRow {
    pub start: Millis,
    pub end: Millis,
    pub version: u64,
    pub kpis: KpiSnapshot,
}

/// What the header and footer say.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub now: Millis,
    pub watermark: Option<Millis>,
    pub delivered: u64,
    /// Records per second over the last seconds (live).
    pub rate: f64,
    pub accepted: u64,
    pub late: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub rows_written: u64,
    pub responses_written: u64,
    pub metrics_url: String,
    pub kpi_file: String,
    pub responses_file: String,
    pub scenario: Option<String>,
    pub follow_up_deadline: String,
}

/// The rows behind the table.
#[derive(Debug, Default)]
pub struct Board {
    latest: LatestRows<BoardRow>,
}

impl Board {
    pub fn new() -> Board {
        Board::default()
    }

    /// Takes a batch of emitted rows (only (channel, all) and (all, all) of the board's
    /// windows are kept).
    pub fn apply(&mut self, rows: &[KpiRow]) {
        let wanted = rows
            .iter()
            .filter(|r| r.segment.is_none() && BOARD_WINDOWS.contains(&&*r.window));
        self.latest.apply(wanted, |r| BoardRow {
            start: r.start,
            end: r.end,
            version: r.version,
            kpis: r.kpis.clone(),
        });
    }

    /// The latest row of `window` for `channel` (`all` for every channel).
    pub fn get(&self, window: &str, channel: &str) -> Option<&BoardRow> {
        self.latest.get(window, channel, "all")
    }

    /// Channels with a row in `window`, in the usual order, then `all`.
    fn channels(&self, window: &str) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Channel::ALL
            .iter()
            .map(|c| c.as_str())
            .filter(|c| self.get(window, c).is_some())
            .collect();
        out.push("all");
        out
    }

    /// The whole frame (lines end with `\n`; no cursor movement).
    pub fn render(&self, status: &Status, color: bool) -> String {
        let paint = |code: &str, text: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        let watermark = match status.watermark {
            Some(w) => format!(
                "watermark {} ({} behind)",
                utc_time(w),
                compact_seconds(((status.now - w) as f64 / 1000.0).max(0.0))
            ),
            None => "watermark –".to_string(),
        };
        let _ = writeln!(
            out,
            "{}  {}  ·  {watermark}{}",
            paint("1", "cxpulse demo"),
            utc_datetime(status.now),
            status
                .scenario
                .as_deref()
                .map(|s| format!("  ·  scenario {s}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "records {} ({:.1}/s)  ·  accepted {}  ·  late {}  ·  duplicates {}  ·  rejected {}  ·  rows {}",
            thousands(status.delivered),
            status.rate,
            thousands(status.accepted),
            thousands(status.late),
            thousands(status.duplicates),
            thousands(status.rejected),
            thousands(status.rows_written),
        );
        for window in BOARD_WINDOWS {
            out.push('\n');
            let span = self
                .get(window, "all")
                .map(|r| format!("ending {}", utc_time(r.end)))
                .unwrap_or_else(|| "(waiting for the first window)".to_string());
            let _ = writeln!(out, "{} {span}", paint("1", &format!("{window} window")));
            let header = format!(
                "{:<11} {:>21} {:>19} {:>5} {:>8} {:>8} {:>7} {:>9}  {}",
                "channel",
                "NPS ± MoE (n)",
                "CSAT % [Wilson]",
                "CES",
                "contacts",
                "FRT p90",
                "loop %",
                "purchases",
                "revenue"
            );
            let _ = writeln!(out, "{}", paint("2", &header));
            for channel in self.channels(window) {
                let Some(row) = self.get(window, channel) else {
                    if channel == "all" {
                        let _ = writeln!(out, "{:<11} {:>21}", "all", "–");
                    }
                    continue;
                };
                let k = &row.kpis;
                let nps = format!("{:>21}", nps_cell(k));
                let nps = match k.nps.score {
                    Some(s) if s >= 30.0 => paint("32", &nps),
                    Some(s) if s < 0.0 => paint("31", &nps),
                    Some(_) => paint("33", &nps),
                    None => nps,
                };
                let line = format!(
                    "{:<11} {nps} {:>19} {:>5} {:>8} {:>8} {:>7} {:>9}  {}",
                    channel,
                    csat_cell(k),
                    k.ces.mean.map_or("–".to_string(), |m| format!("{m:.2}")),
                    thousands(k.contacts),
                    k.first_response
                        .p90_ms
                        .map_or("–".to_string(), |ms| compact_seconds(ms / 1000.0)),
                    k.closed_loop
                        .rate
                        .map_or("–".to_string(), |r| format!("{:.0}%", r * 100.0)),
                    thousands(k.purchases),
                    revenue_cell(k),
                );
                if channel == "all" {
                    let _ = writeln!(out, "{}", paint("1", &line));
                } else {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out.push('\n');
        let footer = [
            format!("metrics    {}", status.metrics_url),
            format!(
                "rows       {} ({})",
                status.kpi_file,
                thousands(status.rows_written)
            ),
            format!(
                "responses  {} ({})",
                status.responses_file,
                thousands(status.responses_written)
            ),
            "NPS ±95 % margin · CSAT % of 4–5 [95 % Wilson] · CES mean of 1–7 · FRT p90 = first response".to_string(),
            format!(
                "loop % = detractors followed up within {0}, counted {0} after the answer · Ctrl-C stops",
                status.follow_up_deadline
            ),
        ];
        for line in footer {
            let _ = writeln!(out, "{}", paint("2", &line));
        }
        out
    }

    /// One log line per board window for the `all` row (for `--no-tui`).
    pub fn log_lines(&self) -> Vec<String> {
        BOARD_WINDOWS
            .iter()
            .filter_map(|w| {
                let r = self.get(w, "all")?;
                let k = &r.kpis;
                Some(format!(
                    "{w} window ending {} (from {}), all channels: NPS {} · CSAT {} · CES {} · contacts {} · FRT p90 {} · purchases {} · revenue {}",
                    utc_time(r.end),
                    utc_datetime(r.start),
                    nps_cell(k),
                    csat_cell(k),
                    k.ces.mean.map_or("–".to_string(), |m| format!("{m:.2}")),
                    thousands(k.contacts),
                    k.first_response
                        .p90_ms
                        .map_or("–".to_string(), |ms| compact_seconds(ms / 1000.0)),
                    thousands(k.purchases),
                    revenue_cell(k),
                ))
            })
            .collect()
    }
}

fn nps_cell(k: &KpiSnapshot) -> String {
    match (k.nps.score, k.nps.margin_of_error) {
        (Some(s), Some(m)) => format!("{s:+.1} ±{m:.1} ({})", thousands(k.nps.n)),
        _ => "–".to_string(),
    }
}

fn csat_cell(k: &KpiSnapshot) -> String {
    match (k.csat.share, k.csat.wilson_low, k.csat.wilson_high) {
        (Some(s), Some(lo), Some(hi)) => {
            format!("{:.1} [{:.1}–{:.1}]", s * 100.0, lo * 100.0, hi * 100.0)
        }
        _ => "–".to_string(),
    }
}

fn revenue_cell(k: &KpiSnapshot) -> String {
    if k.revenue.is_empty() {
        return "–".to_string();
    }
    k.revenue
        .iter()
        .map(|l| format!("{} {}", l.currency, compact_amount(l.value)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// `950`, `12.3k`, `4.56M`.
pub fn compact_amount(v: f64) -> String {
    let a = v.abs();
    if a < 1_000.0 {
        format!("{v:.0}")
    } else if a < 1_000_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else {
        format!("{:.2}M", v / 1_000_000.0)
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Days since the epoch → (year, month, day) (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2026-01-01 12:34:56Z`.
pub fn utc_datetime(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        s / 3600,
        (s % 3600) / 60,
        s % 60
    )
}

/// `12:34Z` (minute precision; windows are minute-aligned).
pub fn utc_time(ms: Millis) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}Z", s / 3600, (s % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(utc_datetime(1_767_225_600_000), "2026-01-01 00:00:00Z");
        assert_eq!(
            utc_datetime(951_782_400_000 + 3_723_000),
            "2000-02-29 01:02:03Z"
        );
        assert_eq!(utc_time(1_767_225_600_000 + 90 * 60_000), "01:30Z");
        assert_eq!(compact_amount(12_345.0), "12.3k");
    }
}
