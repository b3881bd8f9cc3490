//! Formatting of bytes, durations and times for humans (text reports, progress, file names).
//! A leaf module: it depends on nothing in the crate.

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

/// Unix time (seconds) as `YYYY-MM-DD HH:MM:SS UTC` (`?` outside what humantime formats:
/// before 1970 or not finite).
pub fn format_unix_utc(unix_secs: f64) -> String {
    match rfc3339_seconds(unix_secs) {
        // "YYYY-MM-DDTHH:MM:SSZ"
        Some(s) => format!("{} {} UTC", &s[..10], &s[11..19]),
        None => "?".to_string(),
    }
}

/// Unix time as `YYYYMMDDTHHMMSSZ` (sorts as time; no characters shells or Windows mind).
pub fn compact_utc(unix_secs: f64) -> String {
    match rfc3339_seconds(unix_secs) {
        Some(s) => s.chars().filter(|c| *c != '-' && *c != ':').collect(),
        None => "unknown-time".into(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (whole seconds, rounded down).
fn rfc3339_seconds(unix_secs: f64) -> Option<String> {
    if !(0.0..253_402_300_800.0).contains(&unix_secs) {
        return None;
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs.floor() as u64);
    Some(humantime::format_rfc3339_seconds(t).to_string())
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
        assert_eq!(format_unix_utc(-1.0), "?");
        assert_eq!(format_unix_utc(f64::NAN), "?");
        assert_eq!(compact_utc(1_700_000_000.9), "20231114T221320Z");
        assert_eq!(compact_utc(f64::INFINITY), "unknown-time");
    }
}
