//! Times as the vault writes them: RFC 3339 UTC with milliseconds in TSV files, and the
//! colon-free ISO-8601 basic stamp `YYYYMMDDTHHMMSSZ` in version directory names (docs/format.md#vault-layout, docs/format.md#text-files).

use std::time::{Duration, SystemTime};

/// `2026-11-24T21:49:00.123Z`
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The current time as [`rfc3339_millis`].
pub fn now_rfc3339() -> String {
    rfc3339_millis(SystemTime::now())
}

/// `20261124T214900Z`: safe in a file name on every filesystem.
pub fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// Parses an RFC 3339 time as written by [`rfc3339_millis`] (or without fraction).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()
}

/// Parses a version stamp back into a time.
pub fn parse_stamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    humantime::parse_rfc3339(&iso).ok()
}

/// A short human age: `42s`, `5m`, `3h`, `2d`.
pub fn human_age(since: SystemTime, now: SystemTime) -> String {
    let secs = now
        .duration_since(since)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn formats_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let s = rfc3339_millis(t);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(t));
        let st = stamp(t);
        assert_eq!(st.len(), 16, "{st}");
        assert!(!st.contains(':'));
        assert_eq!(
            parse_stamp(&st),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_000_000))
        );
        assert_eq!(parse_stamp("2026-11-24"), None);
    }
}
