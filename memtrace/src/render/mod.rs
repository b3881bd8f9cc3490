//! Renderers of a [`crate::model::Report`]: human text, JSON (stable schema) and folded stacks
//! (for flamegraph.pl / inferno).

pub mod folded;
pub mod json;
pub mod metrics;
pub mod pprof;
pub mod svg;
pub mod text;

pub use folded::render_folded;
pub use json::{render_json, to_string_pretty, JSON_SCHEMA_VERSION};
pub use pprof::render_pprof;
pub use svg::{render_svg, FlameBy, SvgOptions};
pub use text::render_text;

/// Options of the text renderer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Rows of the callers table and stacks listed in detail; 0 lists everything.
    pub top: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { top: 10 }
    }
}

/// Bytes in binary units with one decimal: `512 B`, `4.0 KiB`, `300.0 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Promote when the value would print as 1024.0 in the current unit.
    while unit + 1 < UNITS.len() && (value * 10.0).round() >= 10240.0 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in a compact human form: `850ms`, `4.2s`, `42s`, `4m12s`, `2h05m`, `3d04h`.
pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_string();
    }
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).round() as u64);
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Unix time (seconds) as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_unix_utc(unix_secs: f64) -> String {
    if !unix_secs.is_finite() {
        return "?".to_string();
    }
    let secs = unix_secs.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(4096), "4.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(300 << 20), "300.0 MiB");
        assert_eq!(format_bytes(5 << 30), "5.0 GiB");
        assert_eq!(format_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0.85), "850ms");
        assert_eq!(format_duration(4.23), "4.2s");
        assert_eq!(format_duration(42.0), "42s");
        assert_eq!(format_duration(252.0), "4m12s");
        assert_eq!(format_duration(7500.0), "2h05m");
        assert_eq!(format_duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d04h");
        assert_eq!(format_duration(f64::NAN), "?");
    }

    #[test]
    fn utc() {
        assert_eq!(format_unix_utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_utc(951_782_400.5), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_unix_utc(1_700_000_000.0), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_unix_utc(-1.0), "1969-12-31 23:59:59 UTC");
    }
}
